"""An EVM execution engine in process, behind the Engine API interface, so the node runs alone.

:class:`EmbeddedEngine` implements :class:`node.types.execution.ExecutionEngine` — the calls,
results and errors of an execution client reached over HTTP — on `py-evm
<https://github.com/ethereum/py-evm>`_ (the Ethereum Foundation's Python EVM) with Shanghai's
rules from block 0: real RLP headers and keccak block hashes, the state, transactions,
receipts and withdrawals tries, logs and their blooms, gas, EIP-1559 base fees, withdrawals
crediting Gwei x 10^9 wei. A block built here hashes as Geth would hash it, given the same
genesis file (:mod:`node.execution.genesis`).

Behaviour, following the Engine API (``ethereum/execution-apis``: ``src/engine/paris.md``,
``src/engine/shanghai.md``):

* **forkchoiceUpdated**: an unknown head answers ``SYNCING``; a head known to be invalid
  answers ``INVALID``; a non-zero safe or finalized hash that is unknown or not an ancestor of
  the head raises ``-38002`` (nothing changes); otherwise head, safe and finalized are applied
  (also when the new head is an ancestor of the current one, so a rolled-back consensus layer
  can build on an older block) and the canonical chain follows the head. With payload
  attributes it builds on the head — ``-38003`` if the timestamp is not after the head's.
* **Building**: a child of the head with the attributes' timestamp, ``prevRandao`` (the
  header's mix hash), fee recipient (coinbase) and withdrawals, the chain's gas limit (the
  genesis one) and the EIP-1559 base fee; transactions come from the pool (:mod:`.txpool`),
  highest effective tip first, each sender's in nonce order, while gas remains. The payload id
  is the first 8 bytes of a keccak over the parent and the attributes, so the same attributes
  give the same build. ``blockValue`` is the tips the fee recipient receives.
* **newPayload**: the block hash is checked first (the keccak of the RLP header rebuilt from
  the payload, with its transactions and withdrawals roots): a mismatch is ``INVALID`` with
  ``latestValidHash: null``. A known block is ``VALID`` again; an unknown parent ``SYNCING``;
  otherwise the header is checked against its parent (number, timestamp, gas limit, base fee,
  extra data) and the block executed on the parent's state: every transaction must apply, and
  gas used, state root, receipts root and logs bloom must be the payload's, else ``INVALID``
  with the parent as ``latestValidHash`` and a ``validationError`` naming the rule. A payload
  this engine built is imported without executing it again. Importing does not move the
  head. Payloads found invalid are remembered (bounded), so they stay invalid.

Storage (:mod:`.db`): one LevelDB directory, py-evm's layout for what py-evm reads (trie
nodes and code under their keccak hash, headers under their block hash) and these keys of
ours, whose lengths (never 32) keep them apart from py-evm's:

==========================  =================================================================
``alys:meta``               format ``alys-evm/1`` and the genesis block hash
``alys:fc``                 head, safe and finalized hashes (96 bytes)
``alys:pivot``              u64 number + hash of the block whose state was downloaded
``alys:snap``               u64: the pivot of a snap sync under way (until the pivot is taken)
``alys:n/`` + u64           the canonical block hash at that number
``alys:b/`` + hash          the block (RLP: header, transactions, uncles, withdrawals)
``alys:r/`` + hash          its receipts (RLP list of each receipt's encoding)
``alys:t/`` + tx hash       block hash and index (u32) of a canonical transaction
==========================  =================================================================

Every operation that changes the database writes in one batch: a ``newPayload`` (state nodes,
header, block, receipts), a forkchoice change (``alys:fc``, the canonical index and the
transaction index of the blocks that join or leave the canonical chain). A build executes in
a scratch overlay that is dropped unless the block is imported. So a process killed at any
moment leaves a database at the end of some operation: the state of every stored block is
complete, and the head is a stored block. The state survives restarts as it is; nothing is
replayed. A database made from another genesis is refused.

**Snap sync** (:mod:`node.workflows.state_sync`): instead of executing history, a new
node downloads the state at a recent block P from peers — :meth:`EmbeddedEngine.state_values`
serves trie nodes and code by hash, :meth:`EmbeddedEngine.put_state_values` stores what was
downloaded and verified, :meth:`EmbeddedEngine.set_pivot` makes P the head once its whole
state is present (with P's ancestors' headers and blocks, given by the caller), after which
P+1 and later blocks are executed as usual. Blocks before P have no receipts and no state
here (see :meth:`EmbeddedEngine.set_pivot`).

Not reentrant: one caller at a time (the EngineActor serializes every call). Execution is
CPU-bound and runs in the caller's task, yielding to Trio every few transactions.
"""

from __future__ import annotations

import atexit
import itertools
import logging
import struct
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Final

import attrs
import rlp
import trio
from eth._utils import address as _address
from eth.consensus.context import ConsensusContext
from eth.constants import BLANK_ROOT_HASH, EMPTY_UNCLE_HASH
from eth.db.chain import ChainDB
from eth.exceptions import PyEVMError
from eth.rlp.headers import BlockHeader
from eth.vm.chain_context import ChainContext
from eth.vm.forks.london.headers import calculate_expected_base_fee_per_gas
from eth.vm.forks.shanghai import ShanghaiVM
from eth.vm.forks.shanghai import blocks as _blocks
from eth.vm.forks.shanghai import withdrawals as _withdrawals
from eth.vm.spoof import SpoofTransaction
from eth_hash.auto import keccak
from eth_utils.exceptions import ValidationError
from trie.hexary import HexaryTrie

from node.types.execution import (
    ENGINE_CAPABILITIES,
    ERROR_MESSAGES,
    INVALID_FORKCHOICE_STATE,
    INVALID_PARAMS,
    INVALID_PAYLOAD_ATTRIBUTES,
    PAYLOAD_ID_SIZE,
    UNKNOWN_PAYLOAD,
    ZERO_HASH,
    EngineError,
    ExecutionPayload,
    ForkchoiceState,
    ForkchoiceUpdatedResult,
    GetPayloadResult,
    PayloadAttributes,
    PayloadStatus,
    PayloadStatusKind,
    Receipt,
    Withdrawal,
)
from node.workflows import state_sync

from .db import LevelStore, MemoryStore, Overlay, Store
from .genesis import Genesis, dev_genesis
from .trie import ordered_trie_root
from .txpool import PooledTx, TxPool, TxRejected, check_static, decode_transaction

#: py-evm's interfaces are typed for every fork at once (a header's base fee is Optional,
#: addresses a NewType); this engine runs Shanghai only, so its objects go by these names.
Header = Any
Block = Any
#: py-evm's classes and functions, called with plain bytes and ints.
ShanghaiBlock: Any = _blocks.ShanghaiBlock
ShanghaiBlockHeader: Any = _blocks.ShanghaiBlockHeader
EvmWithdrawal: Any = _withdrawals.Withdrawal
generate_contract_address: Any = _address.generate_contract_address
EvmReceipt = Any
Tx = Any
State = Any

__all__ = [
    "GWEI",
    "AlysVM",
    "CallArgs",
    "CallResult",
    "EmbeddedEngine",
    "EngineStateError",
    "PivotError",
    "header_of_payload",
]



class _ChainDB(ChainDB):
    """py-evm's ChainDB without its memo caches. It memoizes two methods with
    ``functools.lru_cache`` on the class, keyed by ``self``: up to 32 ChainDBs — each holding
    a block's overlay and, through it, the engine's LevelDB handle — stayed alive for the life
    of the process, past :meth:`EmbeddedEngine.close`, and the handle was freed only at
    interpreter teardown, where plyvel's destructor failed ("Error in sys.excepthook"). The
    engine reads each block's transactions and withdrawals once: nothing to memoize."""

    _get_block_transactions = ChainDB._get_block_transactions.__wrapped__  # type: ignore[assignment]
    _get_block_withdrawals = ChainDB._get_block_withdrawals.__wrapped__  # type: ignore[assignment]



def _release_memo_caches() -> None:
    """Empty py-trie's memo cache of tries (``functools.lru_cache`` on a method, keyed by
    ``self``, on the class): it keeps up to 128 tries — each holding an engine's overlay and,
    through it, its LevelDB handle — alive after the engine is closed, until interpreter
    teardown, where plyvel's destructor then fails ("Error in sys.excepthook"). Run when an
    engine closes and at exit (for engines never closed); the cache refills as it is used."""
    HexaryTrie._cached_create_node_to_db_mapping.cache_clear()


atexit.register(_release_memo_caches)

logger = logging.getLogger("alys.engine.evm")

#: Wei per Gwei: a withdrawal of ``amount`` credits ``amount * GWEI`` wei.
GWEI: Final = 10**9
FORMAT: Final = b"alys-evm/1"
_META: Final = b"alys:meta"
_FC: Final = b"alys:fc"
#: The block whose state was downloaded (u64 number + hash), if any.
_PIVOT: Final = b"alys:pivot"
#: The pivot height of a snap sync under way (u64), if any: :meth:`EmbeddedEngine.record_snap`.
_SNAP: Final = b"alys:snap"
#: Hashes looked up per step of a walk of the stored state.
_WALK_BATCH: Final = 1024
#: At most this many bytes of values in one answer to a state download.
STATE_ANSWER_BYTES: Final = 1 << 19
#: Blocks a pivot needs at least (itself and 255 ancestors) unless they reach a known block.
PIVOT_ANCESTORS: Final = 256
_MAX_BUILDS: Final = 16
_MAX_INVALID: Final = 1024
_HEADER_CACHE: Final = 4096
#: Blocks (with their receipts) imported last, kept decoded: the forkchoice that makes a
#: block the head and the fees the node reads next ask for them again at once.
_RECENT_BLOCKS: Final = 64
#: Yield to Trio after this many transactions executed in a row.
_YIELD_EVERY: Final = 16
#: eth_call and eth_estimateGas never run with more gas than this (geth's RPCGasCap).
RPC_GAS_CAP: Final = 50_000_000

_FCU: Final = "engine_forkchoiceUpdatedV2"
_GET: Final = "engine_getPayloadV2"
_NEW: Final = "engine_newPayloadV2"
_CAPS: Final = "engine_exchangeCapabilities"


def _number_key(number: int) -> bytes:
    return b"alys:n/" + struct.pack(">Q", number)


def _block_key(block_hash: bytes) -> bytes:
    return b"alys:b/" + block_hash


def _receipts_key(block_hash: bytes) -> bytes:
    return b"alys:r/" + block_hash


def _tx_key(tx_hash: bytes) -> bytes:
    return b"alys:t/" + tx_hash


class AlysVM(ShanghaiVM):
    """Shanghai, as py-evm runs it, with the block's ordered tries computed in one pass
    (:func:`node.execution.trie.ordered_trie_root`) and not stored: the engine keeps each
    block's transactions and receipts under its own keys and needs only the roots."""

    fork = "shanghai"

    def set_block_transactions_and_withdrawals(
        self, base_block: Block, new_header: Header, transactions: Sequence[Tx],
        receipts: Sequence[EvmReceipt], withdrawals: Sequence[Any] | None = None,
    ) -> Block:
        fields: dict[str, Any] = {"transactions": transactions, "withdrawals": ()}
        header_fields = {
            "transaction_root": ordered_trie_root([tx.encode() for tx in transactions]),
            "receipt_root": ordered_trie_root([r.encode() for r in receipts]),
        }
        if withdrawals:
            fields["withdrawals"] = withdrawals
            header_fields["withdrawals_root"] = ordered_trie_root(
                [w.encode() for w in withdrawals])
        fields["header"] = new_header.copy(**header_fields)
        return base_block.copy(**fields)

    def validate_block(self, block: Block) -> None:
        """What py-evm checks of a block it mined, with the fast transactions root; the
        engine checks the rest of a block it imports against its parent itself."""
        root = ordered_trie_root([tx.encode() for tx in block.transactions])
        if root != block.header.transaction_root:
            raise ValidationError(f"transactions root {_hex(block.header.transaction_root)} "
                                  f"does not match the transactions, {_hex(root)}")
        if block.uncles:
            raise ValidationError("a post-merge block has no uncles")
        parent = self.chaindb.get_block_header_by_hash(block.header.parent_hash)
        self.validate_header(block.header, parent)


_VM: Any = AlysVM


class PivotError(ValueError):
    """:meth:`EmbeddedEngine.set_pivot` refused: the state is incomplete or the payloads do
    not fit; the message says which. Nothing changed."""


class EngineStateError(ValueError):
    """The engine's database cannot be used: another genesis, another format, or damage;
    the message says which."""


@attrs.frozen
class CallArgs:
    """An ``eth_call`` / ``eth_estimateGas`` transaction object, checked at the RPC edge."""

    sender: bytes = bytes(20)
    to: bytes | None = None
    gas: int | None = None
    gas_price: int | None = None
    max_fee_per_gas: int | None = None
    max_priority_fee_per_gas: int | None = None
    value: int = 0
    data: bytes = b""
    nonce: int | None = None


@attrs.frozen
class CallResult:
    """What a call did: success, its output (return or revert data), the gas it used, and
    the error's name when it failed (``revert`` for a REVERT)."""

    success: bool
    output: bytes
    gas_used: int
    error: str | None = None


@attrs.frozen
class _Built:
    payload: ExecutionPayload
    block: Block
    receipts: tuple[EvmReceipt, ...]
    layer: Overlay
    value: int


def header_of_payload(payload: ExecutionPayload) -> Header:
    """The RLP header a payload describes (its ``block_hash`` is not read): the keccak of
    its encoding is the block hash. The transactions root is over their encodings as they
    are: a payload whose transactions do not decode still has a hash."""
    tx_root = ordered_trie_root(payload.transactions)
    w_root = ordered_trie_root([_evm_withdrawal(w).encode() for w in payload.withdrawals])
    return ShanghaiBlockHeader(
        parent_hash=payload.parent_hash,
        uncles_hash=EMPTY_UNCLE_HASH,
        coinbase=payload.fee_recipient,
        state_root=payload.state_root,
        transaction_root=tx_root,
        receipt_root=payload.receipts_root,
        bloom=int.from_bytes(payload.logs_bloom, "big"),
        difficulty=0,
        block_number=payload.block_number,
        gas_limit=payload.gas_limit,
        gas_used=payload.gas_used,
        timestamp=payload.timestamp,
        extra_data=payload.extra_data,
        mix_hash=payload.prev_randao,
        nonce=bytes(8),
        base_fee_per_gas=payload.base_fee_per_gas,
        withdrawals_root=w_root,
    )


def _evm_withdrawal(w: Withdrawal) -> Any:
    return EvmWithdrawal(w.index, w.validator_index, w.address, w.amount)


def payload_of_block(block: Block) -> ExecutionPayload:
    """The ExecutionPayloadV2 of a py-evm Shanghai block."""
    h = block.header
    return ExecutionPayload(
        parent_hash=h.parent_hash,
        fee_recipient=h.coinbase,
        state_root=h.state_root,
        receipts_root=h.receipt_root,
        logs_bloom=h.bloom.to_bytes(256, "big"),
        prev_randao=h.mix_hash,
        block_number=h.block_number,
        gas_limit=h.gas_limit,
        gas_used=h.gas_used,
        timestamp=h.timestamp,
        extra_data=h.extra_data,
        base_fee_per_gas=h.base_fee_per_gas,
        block_hash=h.hash,
        transactions=tuple(tx.encode() for tx in block.transactions),
        withdrawals=tuple(Withdrawal(w.index, w.validator_index, w.address, w.amount)
                          for w in getattr(block, "withdrawals", ())),
    )


def effective_gas_price(tx: Tx, base_fee: int) -> int:
    """What a transaction pays per gas in a block with ``base_fee`` (EIP-1559)."""
    return int(min(tx.max_fee_per_gas, base_fee + tx.max_priority_fee_per_gas))


def _error(code: int, method: str, detail: str) -> EngineError:
    return EngineError(code, f"{ERROR_MESSAGES[code]}: {detail}", method)


def _bounded_put(store: OrderedDict[bytes, Any], key: bytes, value: Any, limit: int) -> None:
    store[key] = value
    store.move_to_end(key)
    while len(store) > limit:
        store.popitem(last=False)


def _hex(value: bytes) -> str:
    return "0x" + value.hex()


class EmbeddedEngine:
    """An EVM execution engine implementing
    :class:`~node.types.execution.ExecutionEngine` (see the module docstring).

    ``genesis`` defaults to the dev chain's; ``path`` is a LevelDB directory (created, or
    reopened with its state), or ``store`` any :class:`~node.execution.db.Store`; with
    neither, the state lives in memory.
    """

    def __init__(self, genesis: Genesis | None = None, *, path: str | Path | None = None,
                 store: Store | None = None) -> None:
        #: The genesis this engine's chain starts from.
        self.config: Genesis = genesis if genesis is not None else dev_genesis()
        self.chain_id = self.config.chain_id
        if store is None:
            store = LevelStore(path) if path is not None else MemoryStore()
        self._store = store
        self._db = Overlay(store)
        self._context = ChainContext(self.chain_id)
        self._headers: OrderedDict[bytes, Header] = OrderedDict()
        #: Stored blocks and their receipts, decoded (:data:`_RECENT_BLOCKS` of them).
        self._recent: OrderedDict[bytes, tuple[Block, tuple[EvmReceipt, ...]]] = OrderedDict()
        self._builds: OrderedDict[bytes, _Built] = OrderedDict()
        self._built: OrderedDict[bytes, _Built] = OrderedDict()
        self._invalid: OrderedDict[bytes, tuple[bytes | None, str]] = OrderedDict()
        self._busy = False
        #: Blocks that joined the canonical chain since :meth:`drain_new_heads`, in order.
        self._new_heads: list[bytes] = []
        self.pool = TxPool()
        try:
            self._open()
        except BaseException:
            store.close()
            raise

    # ------------------------------------------------------------------ opening

    def _open(self) -> None:
        genesis_header = self._genesis_header()
        meta = self._db.get(_META)
        if meta is None:
            # A new database: block 0 and its state in one batch.
            self._put_block(self._db, ShanghaiBlock(genesis_header, transactions=(),
                                                    uncles=(), withdrawals=()), ())
            self._db[_number_key(0)] = genesis_header.hash
            self._db[_FC] = genesis_header.hash + ZERO_HASH + ZERO_HASH
            self._db[_META] = rlp.encode([FORMAT, genesis_header.hash])
            self._db.commit()
        else:
            try:
                fmt, stored = rlp.decode(meta)
            except (rlp.DecodingError, ValueError) as exc:
                raise EngineStateError(f"the EVM database's meta record is damaged: {exc}") \
                    from None
            if fmt != FORMAT:
                raise EngineStateError(f"the EVM database is in format {fmt!r}, this node "
                                       f"reads {FORMAT!r}")
            if stored != genesis_header.hash:
                raise EngineStateError(
                    f"the EVM database was made from another genesis (block 0 "
                    f"{_hex(stored)}; {self.config.source} gives {_hex(genesis_header.hash)}): "
                    "move its directory away to start this chain")
        self._genesis_hash: bytes = genesis_header.hash
        fc = self._db.get(_FC)
        if fc is None or len(fc) != 96:
            raise EngineStateError("the EVM database's forkchoice record is missing or damaged")
        self._head, self._safe, self._finalized = fc[:32], fc[32:64], fc[64:]
        head = self.header(self._head)
        if head is None or self._db.get(_number_key(head.block_number)) != self._head:
            raise EngineStateError(f"the EVM database's head {_hex(self._head)} is not a "
                                   "stored canonical block")

    def _genesis_header(self) -> Header:
        """Block 0 of :attr:`genesis`; its state is written into the overlay."""
        g = self.config
        pre = BlockHeader(difficulty=0, block_number=0, gas_limit=g.gas_limit,
                          timestamp=g.timestamp, state_root=BLANK_ROOT_HASH)
        state = _VM.build_state(self._db, pre, self._context)
        for address, account in g.alloc:
            state.set_balance(address, account.balance)
            if account.nonce:
                state.set_nonce(address, account.nonce)
            if account.code:
                state.set_code(address, account.code)
            for slot, value in account.storage:
                state.set_storage(address, slot, value)
        state.persist()
        return ShanghaiBlockHeader(
            difficulty=g.difficulty, block_number=0, gas_limit=g.gas_limit,
            timestamp=g.timestamp, coinbase=g.coinbase, state_root=state.state_root,
            extra_data=g.extra_data, mix_hash=g.mix_hash, nonce=g.nonce,
            base_fee_per_gas=g.base_fee_per_gas,
        )

    def close(self) -> None:
        """Close the database (the engine cannot be used afterwards)."""
        _release_memo_caches()
        self._db.discard()
        for built in self._builds.values():
            built.layer.discard()
        self._builds.clear()
        self._built.clear()
        self._store.close()

    async def aclose(self) -> None:
        """Close the database (:meth:`close`)."""
        await trio.lowlevel.checkpoint()
        self.close()

    # ------------------------------------------------------------------ reading the chain

    def header(self, block_hash: bytes) -> Header | None:
        """The header of a stored block (canonical or not), or None."""
        header = self._headers.get(block_hash)
        if header is not None:
            return header
        raw = self._db.get(block_hash) if len(block_hash) == 32 else None
        if raw is None or self._db.get(_block_key(block_hash)) is None:
            return None
        header = rlp.decode(raw, sedes=ShanghaiBlockHeader)
        _bounded_put(self._headers, block_hash, header, _HEADER_CACHE)
        return header

    def _header(self, block_hash: bytes) -> Header:
        header = self.header(block_hash)
        if header is None:
            raise KeyError(f"unknown block {_hex(block_hash)}")
        return header

    def canonical_hash(self, number: int) -> bytes | None:
        """The hash of the canonical block at ``number`` (None beyond the head)."""
        if not 0 <= number < 1 << 64:
            return None
        value: bytes | None = self._db.get(_number_key(number))
        return value

    def header_by_number(self, number: int) -> Header | None:
        block_hash = self.canonical_hash(number)
        return None if block_hash is None else self.header(block_hash)

    def block(self, block_hash: bytes) -> Block | None:
        """A stored block with its transactions and withdrawals, or None."""
        recent = self._recent.get(block_hash)
        if recent is not None:
            return recent[0]
        raw = self._db.get(_block_key(block_hash))
        if raw is None:
            return None
        block: Block = rlp.decode(raw, sedes=ShanghaiBlock)
        return block

    def block_receipts(self, block_hash: bytes) -> tuple[EvmReceipt, ...] | None:
        """A stored block's receipts (py-evm objects, cumulative gas), or None."""
        recent = self._recent.get(block_hash)
        if recent is not None:
            return recent[1]
        raw = self._db.get(_receipts_key(block_hash))
        if raw is None:
            return None
        builder = AlysVM.get_receipt_builder()
        return tuple(builder.decode(item) for item in rlp.decode(raw))

    def transaction_location(self, tx_hash: bytes) -> tuple[bytes, int] | None:
        """(block hash, index) of a transaction in the canonical chain, or None."""
        raw = self._db.get(_tx_key(tx_hash))
        if raw is None or len(raw) != 36:
            return None
        return raw[:32], struct.unpack(">I", raw[32:])[0]

    @property
    def genesis_hash(self) -> bytes:
        return self._genesis_hash

    def genesis_payload(self) -> ExecutionPayload:
        """Block 0 as an ExecutionPayloadV2 (the consensus genesis wraps it)."""
        block = self.block(self._genesis_hash)
        assert block is not None
        return payload_of_block(block)

    def payload(self, block_hash: bytes) -> ExecutionPayload | None:
        """A stored block as an ExecutionPayloadV2, or None."""
        block = self.block(block_hash)
        return None if block is None else payload_of_block(block)

    @property
    def head_header(self) -> Header:
        """The head block's header."""
        return self._header(self._head)

    @property
    def head(self) -> ExecutionPayload:
        """The head block as an ExecutionPayloadV2."""
        payload = self.payload(self._head)
        assert payload is not None
        return payload

    @property
    def genesis(self) -> ExecutionPayload:
        """Block 0 as an ExecutionPayloadV2 (the same as :meth:`genesis_payload`)."""
        return self.genesis_payload()

    def block_by_hash(self, block_hash: bytes) -> ExecutionPayload | None:
        """A stored block (canonical or not) as an ExecutionPayloadV2, or None."""
        return self.payload(block_hash)

    def block_by_number(self, number: int) -> ExecutionPayload | None:
        """The canonical block at ``number`` as an ExecutionPayloadV2 (None beyond the
        head)."""
        block_hash = self.canonical_hash(number)
        return None if block_hash is None else self.payload(block_hash)

    @property
    def head_number(self) -> int:
        return int(self.head_header.block_number)

    @property
    def forkchoice(self) -> ForkchoiceState:
        """The last applied forkchoice (safe and finalized are zero until set)."""
        return ForkchoiceState(self._head, self._safe, self._finalized)

    def drain_new_heads(self) -> list[bytes]:
        """The blocks that became canonical since the last call, in order (a reorg lists the
        new branch from the fork point)."""
        heads, self._new_heads = self._new_heads, []
        return heads

    # ------------------------------------------------------------------ state

    def state_at(self, header: Header, *, free: bool = False) -> State:
        """The state after block ``header``, to read (or to execute calls on: throw it away
        afterwards). ``free``: the execution context has a zero base fee (for calls that
        name no gas price, as geth's ``eth_call``)."""
        context_header = header.copy(base_fee_per_gas=0) if free else header
        return _VM.build_state(self._db, context_header, self._context,
                                  self._ancestor_hashes(header))

    def _ancestor_hashes(self, header: Header) -> Iterator[bytes]:
        """BLOCKHASH's view from a child of ``header``: ``header`` and its ancestors, up to
        256, read lazily."""
        current: Header | None = header
        for _ in range(256):
            if current is None:
                return
            yield current.hash
            if current.block_number == 0:
                return
            current = self.header(current.parent_hash)

    def balance_of(self, address: bytes, block_hash: bytes | None = None) -> int:
        """The balance in wei of ``address`` after ``block_hash`` (default: the head)."""
        header = self._header(block_hash if block_hash is not None else self._head)
        return int(self.state_at(header).get_balance(address))

    def nonce_of(self, address: bytes, block_hash: bytes | None = None) -> int:
        header = self._header(block_hash if block_hash is not None else self._head)
        return int(self.state_at(header).get_nonce(address))

    # ------------------------------------------------------------------ state download

    def state_values(self, hashes: Sequence[bytes], max_bytes: int = STATE_ANSWER_BYTES
                     ) -> list[bytes]:
        """The values stored under ``hashes`` — trie nodes and contract code, for a peer
        downloading the state (:mod:`node.workflows.state_sync`) — position by position, an
        empty value for a hash this engine does not have. Only values that hash to their key
        are answered: the store's other records (blocks, receipts, indexes under keys of
        ours) never leave it. Block headers are stored under their hash too and are answered
        like nodes: public data, as content-addressed as a node. The answer stops (it is
        shorter than ``hashes``: the rest count as missing) before its values would pass
        ``max_bytes`` in all; the first value is always answered whatever its size."""
        out: list[bytes] = []
        total = 0
        for key in hashes:
            value = self._db.get(key) if isinstance(key, bytes) and len(key) == 32 else None
            if value is None or keccak(value) != key:
                value = b""
            if out and total + len(value) > max_bytes:
                break
            total += len(value)
            out.append(value)
        return out

    def put_state_values(self, pairs: Sequence[tuple[bytes, bytes]]) -> int:
        """Store downloaded trie nodes and code, each under its hash, in one batch; returns
        how many. ``ValueError`` (nothing written) for a pair whose value does not hash to
        its key. Values outside any complete state are harmless: nothing reads a node its
        head's state does not reach, and :meth:`set_pivot` checks the whole tree first."""
        layer = Overlay(self._db)
        for i, pair in enumerate(pairs):
            key, value = pair
            if not isinstance(key, bytes) or not isinstance(value, bytes) or not value \
                    or keccak(value) != key:
                raise ValueError(f"state value {i} does not hash to its key "
                                 f"{key!r:.80}: nothing stored")
            layer[key] = value
        count = len(layer.changes)
        layer.commit()
        self._db.commit()
        return count

    def state_problem(self, root: bytes) -> str | None:
        """None if the whole state under ``root`` (account trie, storage tries, code) is in
        this engine's store, else what is missing or malformed, in words. Walks every node
        under the root (:mod:`node.workflows.state_sync` over the store alone): as long as
        the state has nodes. :meth:`missing_state` is the same, yielding to Trio."""
        walk = self._state_walk(root)
        for problem in walk:
            if problem is not None:
                return problem
        return None

    async def missing_state(self, root: bytes) -> str | None:
        """:meth:`state_problem`, yielding to Trio between batches."""
        for problem in self._state_walk(root):
            if problem is not None:
                return problem
            await trio.lowlevel.checkpoint()
        return None

    def _state_walk(self, root: bytes) -> Iterator[str | None]:
        """Walk the state under ``root`` in the store: yields None after each batch, and a
        problem (then stops) at the first value missing or malformed."""
        download = state_sync.start(root)
        while not download.done:
            download, batch = state_sync.next_batch(download, _WALK_BATCH)
            values = [self._db.get(want.hash) or b"" for want in batch]
            try:
                answer = state_sync.answered(download, batch, values)
            except state_sync.BadNode as exc:
                yield f"the state under 0x{root.hex()} holds a malformed {exc}"
                return
            if answer.missing or answer.wrong:
                gone = next(want for want, value in zip(batch, values, strict=True)
                            if not value or keccak(value) != want.hash)
                yield (f"the state under 0x{root.hex()} is incomplete: {gone.kind.value} "
                       f"0x{gone.hash.hex()} is missing")
                return
            download = answer.download
            yield None

    @property
    def pivot(self) -> tuple[int, bytes] | None:
        """The number and hash of the block whose state was downloaded rather than computed
        (:meth:`set_pivot`), or None: the engine executed every block from genesis."""
        raw = self._db.get(_PIVOT)
        if raw is None or len(raw) != 40:
            return None
        return struct.unpack(">Q", raw[:8])[0], raw[8:]

    @property
    def snap_target(self) -> int | None:
        """The pivot height of a snap sync under way (:meth:`record_snap`), or None."""
        raw = self._db.get(_SNAP)
        if raw is None or len(raw) != 8:
            return None
        height: int = struct.unpack(">Q", raw)[0]
        return height

    def record_snap(self, pivot: int | None) -> None:
        """Record that a snap sync to the pivot height ``pivot`` is under way (None: that
        none is). The node stores the blocks up to the pivot without this engine executing
        them; a restart reads this record to leave them unexecuted (the state at the pivot
        comes from peers) rather than execute the whole history again. :meth:`set_pivot`
        removes it in its own batch. ``ValueError`` for a height that is not a u64 above 0."""
        if pivot is not None and (isinstance(pivot, bool) or not isinstance(pivot, int)
                                  or not 0 < pivot < 2**64):
            raise ValueError(f"a snap sync's pivot is a height from 1 to 2**64-1, not "
                             f"{pivot!r:.40}")
        with self._exclusive():
            layer = Overlay(self._db)
            if pivot is None:
                layer.drop(_SNAP)
            else:
                layer[_SNAP] = struct.pack(">Q", pivot)
            layer.commit()
            self._db.commit()

    async def set_pivot(self, payloads: Sequence[ExecutionPayload],
                        safe: bytes = ZERO_HASH, finalized: bytes = ZERO_HASH, *,
                        state_whole: bool = False) -> bytes:
        """Make ``payloads[-1]`` (block P) the head without executing anything: its state
        must already be whole in the store (downloaded with :meth:`put_state_values`).
        Returns P's hash.

        ``payloads`` are P and its ancestors, oldest first, hash-linked (each the parent of
        the next, each hashing to its ``block_hash``); the first one's parent must be a
        block this engine has, or there must be at least :data:`PIVOT_ANCESTORS` of them
        (P and 255 ancestors: what BLOCKHASH reads while executing P+1 and later blocks).
        ``safe`` and ``finalized`` are zero or among them (forkchoice needs a block the
        engine has). Written in one batch — headers and blocks, the canonical and
        transaction indexes, the forkchoice (head P) and the pivot record — so a process
        killed before it leaves the engine where it was and one killed after has the pivot
        whole. Raises :class:`PivotError` (nothing changes) when the state under P's state
        root is incomplete or the payloads do not fit these rules. ``state_whole``: the
        caller's download found that state whole (:mod:`node.workflows.state_sync` checked
        every value and fetched every child), so only the root's presence is checked here,
        not every node again (a walk as long as the state).

        What the engine can and cannot answer afterwards: the blocks given here are whole
        (headers, transactions; ``eth_getBlockByNumber/Hash``, BLOCKHASH); older blocks it
        has never seen (null, as a node that pruned them); no block before P has receipts
        (``eth_getTransactionReceipt``, ``eth_getLogs`` return nothing for them) and no
        state but P's is present (``eth_getBalance`` and ``eth_call`` at a block before P
        fail: missing trie node). Every block after P is executed and whole, as usual.
        """
        await trio.lowlevel.checkpoint()
        with self._exclusive():
            blocks = self._pivot_blocks(payloads)
            head = blocks[-1].header
            hashes = {b.header.hash for b in blocks}
            for name, h in (("safe", safe), ("finalized", finalized)):
                if h != ZERO_HASH and h not in hashes and not (
                        self.header(h) is not None and self._is_ancestor_of_blocks(h, blocks)):
                    raise PivotError(f"the {name} block 0x{h.hex()} is neither zero nor "
                                     "among the pivot's blocks")
            if state_whole:
                # The caller's download checked every value and fetched every child: the
                # root being stored is what is left to check.
                problem = (None if self._db.get(head.state_root) else
                           f"the state root 0x{head.state_root.hex()} is not stored")
            else:
                problem = await self.missing_state(head.state_root)
            if problem is not None:
                raise PivotError(f"block {head.block_number} (0x{head.hash.hex()}) cannot be "
                                 f"the pivot: {problem}")
            layer = Overlay(self._db)
            for block in blocks:
                h = block.header
                layer[h.hash] = rlp.encode(h)
                layer[_block_key(h.hash)] = rlp.encode(block)
                layer[_number_key(h.block_number)] = h.hash
                for index, tx in enumerate(block.transactions):
                    layer[_tx_key(tx.hash)] = h.hash + struct.pack(">I", index)
            # A head the engine had above the pivot leaves the canonical chain.
            number = head.block_number + 1
            while (old := self.canonical_hash(number)) is not None:
                old_block = self.block(old)
                for tx in old_block.transactions if old_block is not None else ():
                    layer.drop(_tx_key(tx.hash))
                layer.drop(_number_key(number))
                number += 1
            layer[_FC] = head.hash + safe + finalized
            layer[_PIVOT] = struct.pack(">Q", head.block_number) + head.hash
            layer.drop(_SNAP)  # the snap sync under way, if any, has its pivot
            layer.commit()
            self._db.commit()
            self._head, self._safe, self._finalized = head.hash, safe, finalized
            for block in blocks:
                _bounded_put(self._headers, block.header.hash, block.header, _HEADER_CACHE)
            self._new_heads.append(head.hash)
            self._after_head_change()
            logger.info("embedded EVM: block #%d (0x%s) is the head, its state downloaded "
                        "(%d blocks before it stored without execution)", head.block_number,
                        head.hash.hex(), len(blocks) - 1)
            return bytes(head.hash)

    def _is_ancestor_of_blocks(self, block_hash: bytes, blocks: Sequence[Block]) -> bool:
        """Is ``block_hash`` a block this engine has and an ancestor of ``blocks``? Genesis
        is everyone's (a chain whose safe or finalized block is still genesis names it)."""
        header = self.header(block_hash)
        first = blocks[0].header
        if block_hash == self.genesis_hash:
            return True
        return header is not None and (first.parent_hash == block_hash or (
            header.block_number < first.block_number
            and self.header(first.parent_hash) is not None
            and self._is_ancestor(block_hash, first.parent_hash)))

    def _pivot_blocks(self, payloads: Sequence[ExecutionPayload]) -> list[Block]:
        """``payloads`` as py-evm blocks, checked (see :meth:`set_pivot`)."""
        if not payloads:
            raise PivotError("no payloads: the pivot is the last of them")
        blocks: list[Block] = []
        for i, payload in enumerate(payloads):
            if not isinstance(payload, ExecutionPayload):
                raise PivotError(f"payload {i} is a {type(payload).__name__}")
            header = header_of_payload(payload)
            if header.hash != payload.block_hash:
                raise PivotError(f"payload {i} (block {payload.block_number}) hashes to "
                                 f"0x{header.hash.hex()}, not its block hash "
                                 f"0x{payload.block_hash.hex()}")
            if blocks and (payload.parent_hash != blocks[-1].header.hash
                           or payload.block_number != blocks[-1].header.block_number + 1):
                raise PivotError(f"payload {i} (block {payload.block_number}) is not the child "
                                 f"of payload {i - 1}")
            try:
                transactions = [decode_transaction(raw) for raw in payload.transactions]
            except TxRejected as exc:
                raise PivotError(f"payload {i} (block {payload.block_number}): a transaction "
                                 f"does not decode: {exc}") from None
            blocks.append(ShanghaiBlock(header, transactions=transactions, uncles=(),
                                        withdrawals=[_evm_withdrawal(w)
                                                     for w in payload.withdrawals]))
        first = blocks[0].header
        if first.block_number == 0:
            if first.hash != self._genesis_hash:
                raise PivotError(f"payload 0 is block 0 0x{first.hash.hex()}, not this "
                                 f"chain's genesis 0x{self._genesis_hash.hex()}")
        elif self.header(first.parent_hash) is None and len(blocks) < PIVOT_ANCESTORS:
            raise PivotError(
                f"{len(blocks)} payloads whose first's parent (block {first.block_number - 1}) "
                f"this engine does not have: give P and at least {PIVOT_ANCESTORS - 1} "
                "ancestors (BLOCKHASH reads 256 blocks back)")
        return blocks

    # ------------------------------------------------------------------ the pool

    def add_transaction(self, raw: bytes) -> PooledTx:
        """Check a signed transaction (the ``eth_sendRawTransaction`` bytes) against the
        rules and the head's state and add it to the pool; :class:`TxRejected` (in geth's
        words) when it is refused. Refused here or never: an accepted transaction is
        executable once its nonce comes (see :mod:`.txpool`)."""
        head = self.head_header
        candidate = check_static(raw, chain_id=self.chain_id, gas_limit=head.gas_limit)
        state = self.state_at(head)
        return self.pool.add(candidate, state_nonce=int(state.get_nonce(candidate.sender)),
                             balance=int(state.get_balance(candidate.sender)))

    def pending_nonce(self, address: bytes) -> int:
        """The next nonce of ``address`` counting its pooled transactions."""
        return self.pool.next_nonce(address, self.nonce_of(address))

    # ------------------------------------------------------------------ Engine API

    async def exchange_capabilities(self, methods: Sequence[str]) -> list[str]:
        """common.md, engine_exchangeCapabilities: the V2 methods this engine serves."""
        await trio.lowlevel.checkpoint()
        if isinstance(methods, str | bytes) or not all(isinstance(m, str) for m in methods):
            raise _error(INVALID_PARAMS, _CAPS, "expected a list of method names")
        return list(ENGINE_CAPABILITIES)

    async def forkchoice_updated(
        self, state: ForkchoiceState, attributes: PayloadAttributes | None = None
    ) -> ForkchoiceUpdatedResult:
        """shanghai.md, engine_forkchoiceUpdatedV2 (see the module docstring)."""
        await trio.lowlevel.checkpoint()
        if not isinstance(state, ForkchoiceState):
            raise _error(INVALID_PARAMS, _FCU, f"expected a ForkchoiceState, got {state!r}")
        if attributes is not None and not isinstance(attributes, PayloadAttributes):
            raise _error(INVALID_PARAMS, _FCU,
                         f"expected PayloadAttributes or None, got {attributes!r}")
        with self._exclusive():
            head_hash = state.head_block_hash
            if head_hash in self._invalid:
                lvh, reason = self._invalid[head_hash]
                return ForkchoiceUpdatedResult(PayloadStatus(PayloadStatusKind.INVALID, lvh,
                                                             reason))
            head = self.header(head_hash)
            if head is None:
                return ForkchoiceUpdatedResult(PayloadStatus(PayloadStatusKind.SYNCING))
            unchanged = (head_hash, state.safe_block_hash, state.finalized_block_hash) == (
                self._head, self._safe, self._finalized)
            for name, h in (("safe", state.safe_block_hash),
                            ("finalized", state.finalized_block_hash)):
                if h == ZERO_HASH or unchanged:
                    # The forkchoice in force was checked when it was applied (blocks are
                    # never deleted: its safe and finalized blocks are still ancestors of
                    # its head); commit_block sends it again before every newPayload.
                    continue
                if self.header(h) is None:
                    raise _error(INVALID_FORKCHOICE_STATE, _FCU,
                                 f"the {name} block {_hex(h)} is unknown")
                if not self._is_ancestor(h, head_hash):
                    raise _error(INVALID_FORKCHOICE_STATE, _FCU,
                                 f"the {name} block {_hex(h)} is not an ancestor of the head "
                                 f"{_hex(head_hash)}")
            self._apply_forkchoice(head, state.safe_block_hash, state.finalized_block_hash)
            valid = PayloadStatus(PayloadStatusKind.VALID, head_hash)
            if attributes is None:
                return ForkchoiceUpdatedResult(valid)
            if attributes.timestamp <= head.timestamp:
                raise _error(INVALID_PAYLOAD_ATTRIBUTES, _FCU,
                             f"timestamp {attributes.timestamp} is not greater than the "
                             f"head's {head.timestamp}")
        payload_id = await self._build(head, attributes)
        return ForkchoiceUpdatedResult(valid, payload_id)

    async def get_payload(self, payload_id: bytes) -> GetPayloadResult:
        """shanghai.md, engine_getPayloadV2: ``-38001`` for an unknown build process."""
        await trio.lowlevel.checkpoint()
        if type(payload_id) is not bytes or len(payload_id) != PAYLOAD_ID_SIZE:
            raise _error(INVALID_PARAMS, _GET,
                         f"a payload id is {PAYLOAD_ID_SIZE} bytes, got {payload_id!r}")
        built = self._builds.get(payload_id)
        if built is None:
            raise _error(UNKNOWN_PAYLOAD, _GET, f"no build process {_hex(payload_id)}")
        return GetPayloadResult(execution_payload=built.payload, block_value=built.value)

    async def new_payload(self, payload: ExecutionPayload) -> PayloadStatus:
        """shanghai.md, engine_newPayloadV2 (see the module docstring)."""
        await trio.lowlevel.checkpoint()
        if not isinstance(payload, ExecutionPayload):
            raise _error(INVALID_PARAMS, _NEW, f"expected an ExecutionPayload, got {payload!r}")
        with self._exclusive():
            return await self._new_payload(payload)

    async def latest_block(self) -> tuple[int, bytes]:
        """The number and hash of the head (``eth_getBlockByNumber("latest")``)."""
        await trio.lowlevel.checkpoint()
        return self.head_number, self._head

    async def block_number(self, block_hash: bytes) -> int | None:
        """The number of a stored block, or None (``eth_getBlockByHash``)."""
        await trio.lowlevel.checkpoint()
        header = self.header(block_hash)
        return None if header is None else int(header.block_number)

    async def receipts(self, block_hash: bytes) -> list[Receipt]:
        """A stored block's receipts as the node reads them (``eth_getBlockReceipts``): each
        transaction's own gas and effective gas price. ``KeyError`` for an unknown block."""
        await trio.lowlevel.checkpoint()
        header = self._header(block_hash)
        block = self.block(block_hash)
        receipts = self.block_receipts(block_hash)
        if block is None or receipts is None:
            raise KeyError(f"block {_hex(block_hash)} has no receipts here: it is before the "
                           "block whose state was downloaded (snap sync), never executed")
        out = []
        previous = 0
        for tx, receipt in zip(block.transactions, receipts, strict=True):
            out.append(Receipt(receipt.gas_used - previous,
                               effective_gas_price(tx, header.base_fee_per_gas)))
            previous = receipt.gas_used
        return out

    # ------------------------------------------------------------------ internals

    class _Reentered(RuntimeError):
        pass

    def _exclusive(self) -> Any:
        engine = self

        class _Guard:
            def __enter__(self) -> None:
                if engine._busy:
                    raise EmbeddedEngine._Reentered("the embedded engine is not reentrant: "
                                                    "one call at a time")
                engine._busy = True

            def __exit__(self, *exc: object) -> None:
                engine._busy = False

        return _Guard()

    def _is_ancestor(self, ancestor: bytes, descendant: bytes) -> bool:
        """Is ``ancestor`` the block ``descendant`` or one of its ancestors?"""
        a = self._header(ancestor)
        d = self._header(descendant)
        while d.block_number > a.block_number:
            if self.canonical_hash(d.block_number) == d.hash:
                return self.canonical_hash(a.block_number) == ancestor
            d = self._header(d.parent_hash)
        return bool(d.hash == ancestor)

    def _apply_forkchoice(self, head: Header, safe: bytes, finalized: bytes) -> None:
        """Make ``head`` the head, moving the canonical index and the transaction index, in
        one batch with the forkchoice record."""
        db = self._db
        record = head.hash + safe + finalized
        if record == db.get(_FC):
            return
        joining: list[Header] = []
        current = head
        while self.canonical_hash(current.block_number) != current.hash:
            joining.append(current)
            current = self._header(current.parent_hash)
        fork_point = current.block_number
        # Canonical blocks above the fork point leave (those above the new head's number
        # lose their index entry; the others are overwritten below).
        number = fork_point + 1
        while (old := self.canonical_hash(number)) is not None:
            old_block = self.block(old)
            if old_block is not None:
                for tx in old_block.transactions:
                    db.drop(_tx_key(tx.hash))
            if number > head.block_number:
                db.drop(_number_key(number))
            number += 1
        for header in reversed(joining):
            db[_number_key(header.block_number)] = header.hash
            block = self.block(header.hash)
            assert block is not None
            for index, tx in enumerate(block.transactions):
                db[_tx_key(tx.hash)] = header.hash + struct.pack(">I", index)
            self._new_heads.append(header.hash)
        db[_FC] = record
        db.commit()
        self._head, self._safe, self._finalized = head.hash, safe, finalized
        if joining:
            self._after_head_change()

    def _after_head_change(self) -> None:
        """The pool forgets transactions the new head's state has made stale."""
        if not len(self.pool):
            return  # nothing to forget: spare building the head's state (every block, in sync)
        state = self.state_at(self.head_header)
        self.pool.reset(lambda sender: int(state.get_nonce(sender)))

    def _child_header(self, parent: Header, *, timestamp: int, coinbase: bytes,
                      mix_hash: bytes, gas_limit: int, extra_data: bytes
                      ) -> Header:
        return ShanghaiBlockHeader(
            difficulty=0, block_number=parent.block_number + 1, gas_limit=gas_limit,
            timestamp=timestamp, coinbase=coinbase, parent_hash=parent.hash,
            state_root=parent.state_root, extra_data=extra_data, mix_hash=mix_hash,
            nonce=bytes(8), base_fee_per_gas=calculate_expected_base_fee_per_gas(parent),
        )

    def _vm(self, header: Header, layer: Overlay) -> AlysVM:
        return AlysVM(header=header, chaindb=_ChainDB(layer), chain_context=self._context,
                      consensus_context=ConsensusContext(layer))

    async def _execute(
        self, parent: Header, header: Header,
        transactions: Iterable[Tx], withdrawals: Sequence[Withdrawal],
        layer: Overlay, *, strict: bool,
        rejected: Callable[[Tx, str], None] | None = None,
    ) -> tuple[Block, tuple[EvmReceipt, ...]]:
        """Execute a block on ``parent``'s state in ``layer``. ``strict`` (import): every
        transaction must apply, else ValidationError. Otherwise (build): one that does not
        apply or does not fit the remaining gas is skipped and reported to ``rejected``."""
        vm = self._vm(header, layer)
        applied: list[Tx] = []
        receipts: list[EvmReceipt] = []
        for count, tx in enumerate(transactions, start=1):
            if count % _YIELD_EVERY == 0:
                await trio.lowlevel.checkpoint()
            if not strict and header.gas_used + tx.gas > header.gas_limit:
                continue  # it may fit the next block
            # What VM.apply_transaction does, with a snapshot taken after it locks the
            # state's changes (locking drops earlier snapshots), so a refused transaction
            # leaves nothing behind.
            try:
                vm.validate_transaction_against_header(header, tx)
                vm.state.lock_changes()
                snapshot = vm.state.snapshot()
                try:
                    computation = vm.state.apply_transaction(tx)
                except BaseException:
                    vm.state.revert(snapshot)
                    raise
                receipt = vm.make_receipt(header, tx, computation, vm.state)
                vm.validate_receipt(receipt)
            except (ValidationError, PyEVMError) as exc:
                if strict:
                    raise ValidationError(f"transaction {len(applied)} "
                                          f"({_hex(tx.hash)}) is invalid: {exc}") from None
                if rejected is not None:
                    rejected(tx, str(exc))
                continue
            header = vm.add_receipt_to_header(header, receipt)
            applied.append(tx)
            receipts.append(receipt)
        evm_withdrawals = [_evm_withdrawal(w) for w in withdrawals]
        if evm_withdrawals:
            vm.apply_all_withdrawals(evm_withdrawals)
        block = vm.set_block_transactions_and_withdrawals(
            vm.get_block(), header, applied, receipts, withdrawals=evm_withdrawals)
        if strict:
            # Import: what mine_block does less its validate_block, which would check again
            # what the caller checks of the claimed header before executing
            # (:meth:`_header_problem`: the header against its parent) and, field by field
            # and by hash, of the executed one after (:meth:`_result_problem`), and a
            # transactions root just computed from these same transactions. (pack_block
            # without arguments only copies the block.)
            result = vm.finalize_block(block)
        else:
            result = vm.mine_block(block)
        return result.block, tuple(receipts)

    def _put_block(self, layer: Overlay, block: Block, receipts: Sequence[EvmReceipt]) -> None:
        header = block.header
        layer[header.hash] = rlp.encode(header)
        layer[_block_key(header.hash)] = rlp.encode(block)
        layer[_receipts_key(header.hash)] = rlp.encode([r.encode() for r in receipts])

    async def _build(self, parent: Header, attributes: PayloadAttributes) -> bytes:
        payload_id = keccak(b"".join([
            b"alys-evm/payload-id/v1", parent.hash, attributes.timestamp.to_bytes(8, "big"),
            attributes.prev_randao, attributes.suggested_fee_recipient,
            rlp.encode([_evm_withdrawal(w) for w in attributes.withdrawals]),
        ]))[:PAYLOAD_ID_SIZE]
        if payload_id in self._builds:
            self._builds.move_to_end(payload_id)
            return payload_id
        header = self._child_header(
            parent, timestamp=attributes.timestamp,
            coinbase=attributes.suggested_fee_recipient, mix_hash=attributes.prev_randao,
            gas_limit=self.config.gas_limit, extra_data=self.config.extra_data)
        state = self.state_at(parent)
        candidates = self.pool.ordered(lambda sender: int(state.get_nonce(sender)),
                                       header.base_fee_per_gas)
        dropped: list[tuple[bytes, str]] = []

        def rejected(tx: Tx, why: str) -> None:
            dropped.append((tx.hash, why))

        layer = Overlay(self._db)
        with self._exclusive():
            block, receipts = await self._execute(
                parent, header, (p.tx for p in candidates), attributes.withdrawals, layer,
                strict=False, rejected=rejected)
        for tx_hash, why in dropped:
            logger.warning("pooled transaction %s dropped: it no longer applies (%s)",
                           _hex(tx_hash), why)
            self.pool.remove(tx_hash)
        self._put_block(layer, block, receipts)
        payload = payload_of_block(block)
        base_fee = block.header.base_fee_per_gas
        value = 0
        previous = 0
        for tx, receipt in zip(block.transactions, receipts, strict=True):
            value += (effective_gas_price(tx, base_fee) - base_fee) * (receipt.gas_used - previous)
            previous = receipt.gas_used
        built = _Built(payload, block, receipts, layer, value)
        _bounded_put(self._builds, payload_id, built, _MAX_BUILDS)
        _bounded_put(self._built, payload.block_hash, built, _MAX_BUILDS)
        return payload_id

    async def _new_payload(self, payload: ExecutionPayload) -> PayloadStatus:
        block_hash = payload.block_hash
        built = self._built.get(block_hash)
        if built is not None and built.payload == payload:
            if self.header(block_hash) is None and self.header(payload.parent_hash) is not None:
                built.layer.commit()  # its writes reach the engine's overlay...
                self._db.commit()     # ...and the disk, in one batch
            if self.header(block_hash) is not None:
                return PayloadStatus(PayloadStatusKind.VALID, block_hash)
        header = header_of_payload(payload)
        if header.hash != block_hash:
            return PayloadStatus(
                PayloadStatusKind.INVALID, None,
                f"block hash mismatch: the payload says {_hex(block_hash)}, its header hashes "
                f"to {_hex(header.hash)}")
        if self.header(block_hash) is not None:
            return PayloadStatus(PayloadStatusKind.VALID, block_hash)
        if block_hash in self._invalid:
            lvh, reason = self._invalid[block_hash]
            return PayloadStatus(PayloadStatusKind.INVALID, lvh, reason)
        parent = self.header(payload.parent_hash)
        if parent is None:
            if payload.parent_hash in self._invalid:
                lvh, _ = self._invalid[payload.parent_hash]
                reason = f"the parent {_hex(payload.parent_hash)} is invalid"
                _bounded_put(self._invalid, block_hash, (lvh, reason), _MAX_INVALID)
                return PayloadStatus(PayloadStatusKind.INVALID, lvh, reason)
            return PayloadStatus(PayloadStatusKind.SYNCING)
        layer = Overlay(self._db)
        problem = self._header_problem(header, parent)
        transactions: list[Tx] = []
        for i, raw in enumerate(payload.transactions):
            if problem is not None:
                break
            try:
                transactions.append(decode_transaction(raw))
            except TxRejected as exc:
                problem = f"transaction {i} does not decode: {exc}"
        if problem is None:
            try:
                block, receipts = await self._execute(
                    parent, self._child_header(
                        parent, timestamp=header.timestamp, coinbase=header.coinbase,
                        mix_hash=header.mix_hash, gas_limit=header.gas_limit,
                        extra_data=header.extra_data),
                    transactions, payload.withdrawals, layer, strict=True)
            except ValidationError as exc:
                problem = str(exc)
            else:
                problem = self._result_problem(block.header, header)
        if problem is not None:
            layer.discard()
            _bounded_put(self._invalid, block_hash, (parent.hash, problem), _MAX_INVALID)
            return PayloadStatus(PayloadStatusKind.INVALID, parent.hash, problem)
        self._put_block(layer, block, receipts)
        layer.commit()
        self._db.commit()
        # Stored now (and never deleted): kept decoded for the forkchoice and fees to come
        # (the forkchoice that follows reads the header at once: not decoded back from disk).
        _bounded_put(self._recent, block_hash, (block, receipts), _RECENT_BLOCKS)
        _bounded_put(self._headers, block_hash, block.header, _HEADER_CACHE)
        return PayloadStatus(PayloadStatusKind.VALID, block_hash)

    @staticmethod
    def _header_problem(header: Header, parent: Header) -> str | None:
        """The first header rule ``header`` breaks against ``parent``, in words, or None."""
        if header.block_number != parent.block_number + 1:
            return (f"block number {header.block_number} does not follow the parent's "
                    f"{parent.block_number}")
        if header.timestamp <= parent.timestamp:
            return f"timestamp {header.timestamp} is not after the parent's {parent.timestamp}"
        expected_fee = calculate_expected_base_fee_per_gas(parent)
        if header.base_fee_per_gas != expected_fee:
            return (f"base fee {header.base_fee_per_gas} is not the EIP-1559 base fee "
                    f"{expected_fee}")
        try:
            AlysVM.validate_header(header, parent)
        except ValidationError as exc:
            return str(exc)
        if header.gas_used > header.gas_limit:
            return f"gas used {header.gas_used} is above the gas limit {header.gas_limit}"
        return None

    @staticmethod
    def _result_problem(computed: Header, claimed: Header) -> str | None:
        for name, what in (("gas_used", "gas used"), ("receipt_root", "receipts root"),
                           ("bloom", "logs bloom"), ("state_root", "state root"),
                           ("transaction_root", "transactions root"),
                           ("withdrawals_root", "withdrawals root")):
            mine, theirs = getattr(computed, name), getattr(claimed, name)
            if mine != theirs:
                shown = (f"{theirs}, executing gives {mine}" if isinstance(mine, int)
                         and name != "bloom" else "differs from the executed block's")
                if isinstance(mine, bytes):
                    shown = f"{_hex(theirs)}, executing gives {_hex(mine)}"
                return f"{what} {shown}"
        if computed.hash != claimed.hash:
            return f"the executed block hashes to {_hex(computed.hash)}"
        return None

    # ------------------------------------------------------------------ calls

    def call(self, args: CallArgs, header: Header | None = None) -> CallResult:
        """Execute ``args`` on the state after ``header`` (default: the head) and throw the
        changes away (``eth_call``). Raises :class:`TxRejected` when the transaction could
        not even start (insufficient funds for value and gas, a gas limit below its
        intrinsic gas)."""
        header = header if header is not None else self.head_header
        state, tx = self._call_setup(args, header, args.gas)
        have = int(state.get_balance(args.sender))
        want = args.value + tx.gas * tx.gas_price
        if have < want:
            raise TxRejected(f"insufficient funds for gas * price + value: address "
                             f"{_hex(args.sender)} have {have} want {want}")
        return self._run_call(state, tx)

    def _call_setup(self, args: CallArgs, header: Header, gas: int | None
                    ) -> tuple[State, Any]:
        priced = any(p is not None for p in (args.gas_price, args.max_fee_per_gas,
                                             args.max_priority_fee_per_gas))
        state = self.state_at(header, free=not priced)
        if args.gas_price is not None:
            price = args.gas_price
        elif args.max_fee_per_gas is not None or args.max_priority_fee_per_gas is not None:
            fee_cap = args.max_fee_per_gas if args.max_fee_per_gas is not None else \
                header.base_fee_per_gas + (args.max_priority_fee_per_gas or 0)
            tip = args.max_priority_fee_per_gas or 0
            if tip > fee_cap:
                raise TxRejected("max priority fee per gas higher than max fee per gas")
            price = min(fee_cap, header.base_fee_per_gas + tip)
        else:
            price = 0
        limit = min(gas if gas is not None else header.gas_limit, RPC_GAS_CAP)
        nonce = args.nonce if args.nonce is not None else int(state.get_nonce(args.sender))
        unsigned = _VM.create_unsigned_transaction(
            nonce=nonce, gas_price=price, gas=limit, to=args.to if args.to is not None else b"",
            value=args.value, data=args.data)
        return state, SpoofTransaction(unsigned, from_=args.sender)

    def _run_call(self, state: State, tx: Any) -> CallResult:
        snapshot = state.snapshot()
        try:
            computation = state.apply_transaction(tx)
        except ValidationError as exc:
            raise TxRejected(_call_rejection(str(exc))) from None
        finally:
            state.revert(snapshot)
        if computation.is_success:
            return CallResult(True, bytes(computation.output), computation.get_gas_used())
        error = computation.error
        name = type(error).__name__
        if name == "Revert":
            return CallResult(False, bytes(computation.output), computation.get_gas_used(),
                              "revert")
        return CallResult(False, b"", computation.get_gas_used(), _vm_error(name, error))

    def estimate_gas(self, args: CallArgs, header: Header | None = None) -> int:
        """The least gas with which ``args`` succeeds on the state after ``header``
        (binary search, as geth's ``eth_estimateGas``). Raises :class:`TxRejected` when it
        cannot start, :class:`CallFailed` when it fails even with all the gas allowed."""
        header = header if header is not None else self.head_header
        cap = min(args.gas if args.gas is not None else header.gas_limit, RPC_GAS_CAP)
        state, probe = self._call_setup(args, header, cap)
        if args.value or probe.gas_price:
            balance = int(state.get_balance(args.sender))
            available = balance - args.value
            if available < 0:
                raise TxRejected("insufficient funds for transfer")
            if probe.gas_price:
                cap = min(cap, available // probe.gas_price)
        intrinsic = int(probe.intrinsic_gas)
        if cap < intrinsic:
            raise TxRejected(f"gas required exceeds allowance ({cap})")
        top = self._run_call(*self._call_setup(args, header, cap))
        if not top.success:
            raise CallFailed(top, cap)
        low, high = intrinsic - 1, cap
        first = self._run_call(*self._call_setup(args, header, max(intrinsic, top.gas_used)))
        if first.success:
            high = max(intrinsic, top.gas_used)
            low = max(low, intrinsic - 1)
            if high == intrinsic:
                return high
        while high - low > 1:
            middle = (low + high) // 2
            if self._run_call(*self._call_setup(args, header, middle)).success:
                high = middle
            else:
                low = middle
        return high

    # ------------------------------------------------------------------ logs

    def logs(self, first: int, last: int, addresses: Sequence[bytes],
             topics: Sequence[Sequence[bytes] | None], limit: int
             ) -> list[tuple[Header, int, bytes, int, Any]]:
        """The logs of canonical blocks ``first..last`` that match (see
        :func:`log_matches`), as (header, tx index, tx hash, log index in block, log); at
        most ``limit`` (:class:`TooManyLogs` beyond)."""
        out: list[tuple[Header, int, bytes, int, Any]] = []
        for number in range(first, last + 1):
            header = self.header_by_number(number)
            if header is None:
                break
            out.extend(self.block_logs(header, addresses, topics))
            if len(out) > limit:
                raise TooManyLogs(limit)
        return out

    def block_logs(self, header: Header, addresses: Sequence[bytes],
                   topics: Sequence[Sequence[bytes] | None]
                   ) -> list[tuple[Header, int, bytes, int, Any]]:
        """The matching logs of one stored block (its bloom is looked at first)."""
        if not header.bloom or not _bloom_may_match(header.bloom, addresses, topics):
            return []
        block = self.block(header.hash)
        receipts = self.block_receipts(header.hash)
        if block is None or receipts is None:
            return []
        out = []
        log_index = itertools.count()
        for index, (tx, receipt) in enumerate(zip(block.transactions, receipts, strict=True)):
            for log in receipt.logs:
                position = next(log_index)
                if log_matches(log.address, [t.to_bytes(32, "big") for t in log.topics],
                               addresses, topics):
                    out.append((header, index, tx.hash, position, log))
        return out


class TooManyLogs(Exception):
    """A log query would return more than ``limit`` logs."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"query returned more than {limit} results")
        self.limit = limit


class CallFailed(Exception):
    """``eth_estimateGas``: the transaction fails even with all the gas allowed."""

    def __init__(self, result: CallResult, cap: int) -> None:
        if result.error == "revert":
            message = "execution reverted"
        else:
            message = result.error or "execution failed"
            if "out of gas" in message:
                message = f"gas required exceeds allowance ({cap})"
        super().__init__(message)
        self.result = result


def _vm_error(name: str, error: Any) -> str:
    """geth's words for an EVM error."""
    words = {
        "OutOfGas": "out of gas",
        "InsufficientStack": "stack underflow",
        "FullStack": "stack limit reached 1024 (1023)",
        "InvalidJumpDestination": "invalid jump destination",
        "InvalidInstruction": "invalid opcode",
        "StackDepthLimit": "max call depth exceeded",
        "ContractCreationCollision": "contract address collision",
        "IncorrectContractCreationAddress": "contract address collision",
        "InsufficientFunds": "insufficient balance for transfer",
        "WriteProtection": "write protection",
        "ReservedBytesInCode": "invalid code: must not begin with 0xef",
    }
    return words.get(name, f"{name}: {error}" if str(error) else name)


def _call_rejection(message: str) -> str:
    """geth's words for a call that cannot start (py-evm's validation messages)."""
    lowered = message.lower()
    if "insufficient" in lowered or "balance" in lowered:
        return "insufficient funds for gas * price + value"
    if "intrinsic" in lowered:
        return f"intrinsic gas too low ({message})"
    if "nonce" in lowered:
        return f"nonce mismatch ({message})"
    return message


def log_matches(address: bytes, log_topics: Sequence[bytes], addresses: Sequence[bytes],
                topics: Sequence[Sequence[bytes] | None]) -> bool:
    """eth_getLogs's filter: the address is one of ``addresses`` (any when empty); position
    i of ``topics`` is None (anything) or a list of alternatives (any when empty)."""
    if addresses and address not in addresses:
        return False
    if len(topics) > len(log_topics):
        return False
    for wanted, actual in zip(topics, log_topics, strict=False):
        if wanted and actual not in wanted:
            return False
    return True


def _bloom_may_match(bloom: int, addresses: Sequence[bytes],
                     topics: Sequence[Sequence[bytes] | None]) -> bool:
    from eth_bloom.bloom import BloomFilter

    flt = BloomFilter(bloom)
    if addresses and not any(a in flt for a in addresses):
        return False
    return all(not alternatives or any(t in flt for t in alternatives)
               for alternatives in topics)


def contract_address(sender: bytes, nonce: int) -> bytes:
    """The address of a contract created by ``sender``'s transaction with ``nonce``."""
    return bytes(generate_contract_address(sender, nonce))


def ancestors(engine: EmbeddedEngine, block_hash: bytes, count: int) -> list[Header]:
    """``block_hash``'s header and up to ``count - 1`` of its ancestors, newest first."""
    out: list[Header] = []
    header = engine.header(block_hash)
    while header is not None and len(out) < count:
        out.append(header)
        if header.block_number == 0:
            break
        header = engine.header(header.parent_hash)
    return out
