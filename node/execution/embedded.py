"""An in-process execution engine behind the Engine API interface, so the node runs alone.

:class:`EmbeddedEngine` implements :class:`node.types.execution.ExecutionEngine` — the same
calls, results and errors as an execution client reached over HTTP — for a chain whose only
state is account balances in wei and whose only state transition is the withdrawal (Alys
credits peg-ins and fees as withdrawals, ALYS.md "Execution layer"). It executes no
transactions: a payload carrying any is refused.

Behaviour, following the Engine API (``ethereum/execution-apis``: ``src/engine/paris.md``,
``src/engine/shanghai.md``, ``src/engine/common.md``):

* **Genesis** is block 0: parent hash zero, the configured chain id, gas limit (default
  ``0x1c9c380``), timestamp, base fee and balances (``alloc``).
* **forkchoiceUpdated** (paris.md, engine_forkchoiceUpdatedV1): an unknown head answers
  ``SYNCING``; a head known to be invalid answers ``INVALID``; a non-zero safe or finalized
  hash that is unknown or not an ancestor of the head raises ``-38002`` (and nothing
  changes); otherwise head, safe and finalized are applied. The specification lets an engine
  skip the update when the new head is an ancestor of the current one; this engine always
  applies it (so a rolled-back consensus layer can build on an older block). With payload
  attributes it then builds a payload on the head — ``-38003`` if the timestamp is not
  greater than the head's (the forkchoice update stays applied, as the spec requires).
* **Building** (paris.md, "Payload building"): ``block_number = parent + 1``, the parent's
  hash, the attributes' timestamp, ``prevRandao``, fee recipient and withdrawals, the
  configured gas limit and constant base fee, ``gas_used`` 0, no transactions, the empty
  receipts root and an all-zero logs bloom, empty extra data. Each withdrawal credits
  ``amount`` Gwei x 10**9 wei to its address. The payload id is the first 8 bytes of a
  SHA-256 over the parent hash and the attributes, so the same attributes give the same id
  (spec: "SHOULD NOT restart" a build process) and different ones a different id.
  ``blockValue`` is 0: no transactions, no fees.
* **newPayload** (paris.md engine_newPayloadV1 and shanghai.md engine_newPayloadV2): the block
  hash is checked first, in every case: a mismatch answers ``INVALID`` with
  ``latestValidHash: null`` (V2 replaces ``INVALID_BLOCK_HASH`` with ``INVALID``). A known
  block answers ``VALID`` again; an unknown parent ``SYNCING``; otherwise the payload is
  validated against its parent (number = parent + 1, a later timestamp, the configured gas
  limit and base fee, no transactions, zero gas, empty receipts root and bloom, the state
  root after its withdrawals) and answers ``VALID`` with its hash, or ``INVALID`` with the
  parent's hash as ``latestValidHash`` and a ``validationError`` saying which rule failed.
  Validation is idempotent: a payload found invalid stays invalid. Importing a payload does
  not move the head.

Hashes (keccak256 and RLP are not used, so these are *not* Ethereum block hashes; they are
deterministic, collision-resistant and chain every block to its parent). All integers are
big-endian and fixed-width; ``||`` is concatenation:

* ``block_hash = SHA-256("alys-embedded-el/header/v1" || chain_id u64 || parent_hash[32] ||
  fee_recipient[20] || state_root[32] || receipts_root[32] || logs_bloom[256] ||
  prev_randao[32] || block_number u64 || gas_limit u64 || gas_used u64 || timestamp u64 ||
  len(extra_data) u8 || extra_data || base_fee_per_gas u256 || transactions_root[32] ||
  withdrawals_root[32])`` — see :func:`block_hash_of`. The chain id is in every hash, so a
  payload of one chain never validates on another.
* ``transactions_root = SHA-256("alys-embedded-el/transactions/v1" || count u32 ||
  (len u32 || tx) for each transaction)``.
* ``withdrawals_root = SHA-256("alys-embedded-el/withdrawals/v1" || count u32 || (index u64 ||
  validator_index u64 || address[20] || amount u64) for each withdrawal)``.
* ``state_root = SHA-256("alys-embedded-el/state/v1" || count u64 || (address[20] ||
  balance u256) for each account with a non-zero balance, in ascending address order)`` —
  see :func:`state_root_of`. Accounts whose balance is zero are absent, so equal balances
  give equal roots whatever the history.

State: the balances at one block (the *state tip*, which follows the head) are kept; the
state at any other block is derived by walking from the tip to it through the common
ancestor, undoing and redoing withdrawals — cheap, since withdrawals are the only
transition.

Persistence — canonical CBOR (``cbor2``, ``canonical=True``), versioned, documented here:

* :meth:`EmbeddedEngine.snapshot` — the engine from its *anchor*: ``{"format":
  "alys.embedded-engine", "version": 2, "config": {...}, "anchor": block, "balances":
  [[address, wei], ...] (after the anchor, ascending address, no zeros), "blocks": [block,
  ...] (the anchor's descendants, ascending number, then hash), "forkchoice": [head, safe,
  finalized]}`` where a block is a byte string holding the canonical CBOR of the list of the
  ``ExecutionPayloadV2`` fields in specification order (withdrawals as ``[index,
  validator_index, address, amount]``). The anchor is genesis until
  :meth:`EmbeddedEngine.retain_from` moves it; the node moves it to its finalized block
  (the EngineActor, with every finalization), so a snapshot holds the few blocks after the
  last finalized one and the engine's memory and snapshot stay flat however long the chain.
  :meth:`restore` checks the anchor's hash and that the balances give its state root,
  replays the withdrawals of the later blocks, re-hashes each, checks every parent link,
  block number and the head's state root, and raises :class:`EngineStateError` naming what
  is wrong. It still reads version 1 snapshots (the whole chain from genesis, no balances).
  The blocks a restored engine lacks, the consensus layer sends again with ``newPayload``
  (:func:`node.integration.engine.resync`), as it would to Geth.
* The incremental form: :meth:`EmbeddedEngine.state_delta` — one block's record
  (``{"format": "alys.embedded-engine.block", "version": 1, "block": block}``, with
  ``block`` encoded as in a snapshot), about 550 bytes — and
  :meth:`EmbeddedEngine.apply_delta`, which imports such a record with the full
  ``newPayload`` validation. A store can thus keep an occasional snapshot plus one delta per
  imported block (in the same write batch as the block), and rebuild with ``restore`` +
  ``apply_delta`` for each later block in ascending order. Deltas do not move the forkchoice:
  the consensus layer's first ``forkchoiceUpdated`` after a restart does.

Payload builds in progress and the memory of invalid payloads are not persisted.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final

import attrs
import cbor2
import trio

from node.types.execution import (
    ADDRESS_SIZE,
    ENGINE_CAPABILITIES,
    ERROR_MESSAGES,
    HASH_SIZE,
    INVALID_FORKCHOICE_STATE,
    INVALID_PARAMS,
    INVALID_PAYLOAD_ATTRIBUTES,
    LOGS_BLOOM_SIZE,
    MAX_EXTRA_DATA_SIZE,
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

__all__ = [
    "DEFAULT_BASE_FEE_PER_GAS",
    "DEFAULT_CHAIN_ID",
    "DEFAULT_GAS_LIMIT",
    "EMPTY_LOGS_BLOOM",
    "EMPTY_RECEIPTS_ROOT",
    "GWEI",
    "EmbeddedEngine",
    "EmbeddedEngineConfig",
    "EngineStateError",
    "block_hash_of",
    "state_root_of",
    "transactions_root_of",
    "withdrawals_root_of",
]

#: Wei per Gwei: a withdrawal of ``amount`` credits ``amount * GWEI`` wei.
GWEI: Final = 10**9
#: The dev chain id of the original (ALYS.md); 727272 is its testnet.
DEFAULT_CHAIN_ID: Final = 121212
#: ALYS.md: "Genesis: Shanghai from time 0, gas limit 0x1c9c380".
DEFAULT_GAS_LIMIT: Final = 0x1C9C380
#: A constant base fee: 7 wei, the floor EIP-1559 base fees of empty blocks decay to (and the
#: value of the execution-apis examples).
DEFAULT_BASE_FEE_PER_GAS: Final = 7
#: keccak256(rlp(b"")), the root of an empty trie: the receipts root of a block without
#: transactions on every Ethereum client.
EMPTY_RECEIPTS_ROOT: Final = bytes.fromhex(
    "56e81f171bcc55a6ff8345e692c0f86e5b48e01b996cadc001622fb5e363b421"
)
EMPTY_LOGS_BLOOM: Final = bytes(LOGS_BLOOM_SIZE)

_SNAPSHOT_FORMAT: Final = "alys.embedded-engine"
_DELTA_FORMAT: Final = "alys.embedded-engine.block"
_VERSION: Final = 2
_DELTA_VERSION: Final = 1
_MAX_BUILDS: Final = 64
_MAX_INVALID: Final = 1024
_U64: Final = 1 << 64
_U256: Final = 1 << 256

_FCU: Final = "engine_forkchoiceUpdatedV2"
_GET: Final = "engine_getPayloadV2"
_NEW: Final = "engine_newPayloadV2"
_CAPS: Final = "engine_exchangeCapabilities"


class EngineStateError(ValueError):
    """Stored engine state (a snapshot or a delta) is unreadable or inconsistent; the message
    names the part (``blocks[3].timestamp``) and the problem."""


# --------------------------------------------------------------------------- configuration


def _check_u(bits: int) -> Any:
    def check(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        if type(value) is not int or not 0 <= value < (1 << bits):
            raise ValueError(
                f"EmbeddedEngineConfig.{attribute.name} must be an int in [0, 2**{bits}), "
                f"got {value!r}"
            )

    return check


def _normalize_alloc(value: Iterable[tuple[bytes, int]] | Mapping[bytes, int]) -> Any:
    items = list(value.items()) if isinstance(value, Mapping) else list(value)
    seen: set[bytes] = set()
    out: list[tuple[bytes, int]] = []
    for i, item in enumerate(items):
        if not isinstance(item, tuple | list) or len(item) != 2:
            raise ValueError(
                f"EmbeddedEngineConfig.alloc[{i}] must be an (address, wei) pair, got {item!r}"
            )
        address, wei = item
        if type(address) is not bytes or len(address) != ADDRESS_SIZE:
            raise ValueError(
                f"EmbeddedEngineConfig.alloc[{i}]: the address must be {ADDRESS_SIZE} bytes, "
                f"got {address!r}"
            )
        if type(wei) is not int or not 0 <= wei < _U256:
            raise ValueError(
                f"EmbeddedEngineConfig.alloc[{i}]: the balance must be an int in [0, 2**256), "
                f"got {wei!r}"
            )
        if address in seen:
            raise ValueError(
                f"EmbeddedEngineConfig.alloc[{i}]: address 0x{address.hex()} appears twice"
            )
        seen.add(address)
        if wei:
            out.append((address, wei))
    return tuple(sorted(out))


def _check_extra(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if type(value) is not bytes or len(value) > MAX_EXTRA_DATA_SIZE:
        raise ValueError(
            f"EmbeddedEngineConfig.extra_data must be at most {MAX_EXTRA_DATA_SIZE} bytes, "
            f"got {value!r}"
        )


@attrs.frozen
class EmbeddedEngineConfig:
    """The genesis and constants of an embedded chain.

    ``alloc`` is the genesis balances in wei, given as ``(address, wei)`` pairs or a mapping;
    it is stored sorted by address, without zero balances.
    """

    chain_id: int = attrs.field(default=DEFAULT_CHAIN_ID, validator=_check_u(64))
    gas_limit: int = attrs.field(default=DEFAULT_GAS_LIMIT, validator=_check_u(64))
    genesis_timestamp: int = attrs.field(default=0, validator=_check_u(64))
    base_fee_per_gas: int = attrs.field(default=DEFAULT_BASE_FEE_PER_GAS, validator=_check_u(256))
    extra_data: bytes = attrs.field(default=b"", validator=_check_extra)
    alloc: tuple[tuple[bytes, int], ...] = attrs.field(default=(), converter=_normalize_alloc)


# --------------------------------------------------------------------------- hashing


def _sha256(*parts: bytes) -> bytes:
    h = hashlib.sha256()
    for part in parts:
        h.update(part)
    return h.digest()


def _u(value: int, size: int) -> bytes:
    return value.to_bytes(size, "big")


def transactions_root_of(transactions: Sequence[bytes]) -> bytes:
    """SHA-256 over the length-prefixed transactions (see the module docstring)."""
    parts = [b"alys-embedded-el/transactions/v1", _u(len(transactions), 4)]
    for tx in transactions:
        parts += [_u(len(tx), 4), tx]
    return _sha256(*parts)


def withdrawals_root_of(withdrawals: Sequence[Withdrawal]) -> bytes:
    """SHA-256 over the fixed-width withdrawals (see the module docstring)."""
    parts = [b"alys-embedded-el/withdrawals/v1", _u(len(withdrawals), 4)]
    for w in withdrawals:
        parts += [_u(w.index, 8), _u(w.validator_index, 8), w.address, _u(w.amount, 8)]
    return _sha256(*parts)


def state_root_of(balances: Mapping[bytes, int]) -> bytes:
    """SHA-256 over the non-zero balances in ascending address order."""
    accounts = sorted((a, b) for a, b in balances.items() if b)
    parts = [b"alys-embedded-el/state/v1", _u(len(accounts), 8)]
    for address, balance in accounts:
        parts += [address, _u(balance, 32)]
    return _sha256(*parts)


def block_hash_of(payload: ExecutionPayload, chain_id: int) -> bytes:
    """The hash the embedded engine gives ``payload``'s header (its ``block_hash`` field is
    ignored): see the module docstring for the exact preimage."""
    return _sha256(
        b"alys-embedded-el/header/v1",
        _u(chain_id, 8),
        payload.parent_hash,
        payload.fee_recipient,
        payload.state_root,
        payload.receipts_root,
        payload.logs_bloom,
        payload.prev_randao,
        _u(payload.block_number, 8),
        _u(payload.gas_limit, 8),
        _u(payload.gas_used, 8),
        _u(payload.timestamp, 8),
        _u(len(payload.extra_data), 1),
        payload.extra_data,
        _u(payload.base_fee_per_gas, 32),
        transactions_root_of(payload.transactions),
        withdrawals_root_of(payload.withdrawals),
    )


def _credit(balances: dict[bytes, int], withdrawals: Sequence[Withdrawal], sign: int) -> None:
    """Apply (sign=1) or undo (sign=-1) withdrawals in place; zero balances are removed."""
    for w in withdrawals:
        if w.amount:
            new = balances.get(w.address, 0) + sign * w.amount * GWEI
            if new:
                balances[w.address] = new
            else:
                balances.pop(w.address, None)


def _hex(value: bytes) -> str:
    return "0x" + value.hex()


# --------------------------------------------------------------------------- the engine


class EmbeddedEngine:
    """An in-process execution engine implementing
    :class:`~node.types.execution.ExecutionEngine` (see the module docstring)."""

    def __init__(
        self,
        config: EmbeddedEngineConfig | None = None,
        *,
        chain_id: int | None = None,
        gas_limit: int | None = None,
        genesis_timestamp: int | None = None,
        alloc: Iterable[tuple[bytes, int]] | Mapping[bytes, int] | None = None,
    ) -> None:
        """``config`` (default: :class:`EmbeddedEngineConfig`'s defaults), with any of the
        keyword arguments replacing the field of the same name."""
        cfg = config if config is not None else EmbeddedEngineConfig()
        overrides: dict[str, Any] = {
            k: v
            for k, v in (
                ("chain_id", chain_id),
                ("gas_limit", gas_limit),
                ("genesis_timestamp", genesis_timestamp),
                ("alloc", alloc),
            )
            if v is not None
        }
        self._config = attrs.evolve(cfg, **overrides) if overrides else cfg
        balances = dict(self._config.alloc)
        genesis = _seal(
            ExecutionPayload(
                parent_hash=ZERO_HASH,
                fee_recipient=bytes(ADDRESS_SIZE),
                state_root=state_root_of(balances),
                receipts_root=EMPTY_RECEIPTS_ROOT,
                logs_bloom=EMPTY_LOGS_BLOOM,
                prev_randao=ZERO_HASH,
                block_number=0,
                gas_limit=self._config.gas_limit,
                gas_used=0,
                timestamp=self._config.genesis_timestamp,
                extra_data=self._config.extra_data,
                base_fee_per_gas=self._config.base_fee_per_gas,
                block_hash=ZERO_HASH,
                transactions=(),
                withdrawals=(),
            ),
            self._config.chain_id,
        )
        self._genesis = genesis
        self._blocks: dict[bytes, ExecutionPayload] = {genesis.block_hash: genesis}
        # The oldest block kept (see retain_from) and the canonical chain from it up to the
        # head: _canonical[i] is the hash at number _base + i.
        self._anchor = genesis.block_hash
        self._base = 0
        self._canonical: list[bytes] = [genesis.block_hash]
        self._head = genesis.block_hash
        self._safe = ZERO_HASH
        self._finalized = ZERO_HASH
        # The balances after block ``_tip`` (kept equal to the head after each forkchoice).
        self._tip = genesis.block_hash
        self._balances = balances
        # Build processes: payload id -> payload; and block hash -> payload for the fast path
        # of newPayload on a payload this engine built itself.
        self._builds: OrderedDict[bytes, ExecutionPayload] = OrderedDict()
        self._built: OrderedDict[bytes, ExecutionPayload] = OrderedDict()
        # Stored blocks' canonical CBOR, filled lazily by snapshot() and state_delta().
        self._encodings: dict[bytes, bytes] = {}
        # Payloads found invalid (with a correct hash): hash -> latest valid ancestor.
        self._invalid: OrderedDict[bytes, tuple[bytes | None, str]] = OrderedDict()

    # ------------------------------------------------------------------ inspection

    @property
    def config(self) -> EmbeddedEngineConfig:
        return self._config

    @property
    def genesis(self) -> ExecutionPayload:
        """Block 0."""
        return self._genesis

    def genesis_payload(self) -> ExecutionPayload:
        """Block 0 (the same as :attr:`genesis`)."""
        return self._genesis

    @property
    def head_number(self) -> int:
        """The number of the head block."""
        return self._blocks[self._head].block_number

    @property
    def forkchoice(self) -> ForkchoiceState:
        """The last applied forkchoice (safe and finalized are zero until set)."""
        return ForkchoiceState(self._head, self._safe, self._finalized)

    @property
    def head(self) -> ExecutionPayload:
        """The head block."""
        return self._blocks[self._head]

    def block_by_hash(self, block_hash: bytes) -> ExecutionPayload | None:
        """A known (valid) block, canonical or not; ``None`` if unknown."""
        return self._blocks.get(block_hash)

    def block_by_number(self, number: int) -> ExecutionPayload | None:
        """The block at ``number`` on the chain of the current head; ``None`` beyond it."""
        index = number - self._base if type(number) is int else -1
        if not 0 <= index < len(self._canonical):
            return None
        return self._blocks[self._canonical[index]]

    def balance_of(self, address: bytes, block_hash: bytes | None = None) -> int:
        """The balance in wei of ``address`` at the head, or after block ``block_hash``."""
        if type(address) is not bytes or len(address) != ADDRESS_SIZE:
            raise ValueError(f"address must be {ADDRESS_SIZE} bytes, got {address!r}")
        if block_hash is None or block_hash == self._tip:
            return self._balances.get(address, 0)
        if block_hash not in self._blocks:
            raise KeyError(f"unknown block {_hex(block_hash)}")
        return self._state_at(block_hash).get(address, 0)

    def balances(self, block_hash: bytes | None = None) -> dict[bytes, int]:
        """All non-zero balances (wei) at the head or after ``block_hash``: a copy."""
        if block_hash is None:
            return dict(self._balances)
        if block_hash not in self._blocks:
            raise KeyError(f"unknown block {_hex(block_hash)}")
        return self._state_at(block_hash)

    @property
    def anchor(self) -> ExecutionPayload:
        """The oldest block this engine keeps (genesis until :meth:`retain_from`)."""
        return self._blocks[self._anchor]

    def retain_from(self, block_hash: bytes) -> None:
        """Forget every block that is not ``block_hash`` or one of its descendants: the
        consensus layer calls this with its finalized block, below which it never goes back,
        so the engine's memory stays flat however long the chain grows. ``block_hash`` must
        be the head or one of its ancestors (``ValueError`` otherwise). Afterwards blocks
        below it are unknown (``SYNCING`` for a payload built on one)."""
        block = self._blocks.get(block_hash)
        if block is None or not self._is_ancestor(block_hash, self._head):
            raise ValueError(f"retain_from: {_hex(block_hash)} is not the head or an ancestor")
        if block_hash == self._anchor:
            return
        kept = {block_hash: block}
        for b in sorted(self._blocks.values(), key=lambda b: b.block_number):
            if b.block_number > block.block_number and b.parent_hash in kept:
                kept[b.block_hash] = b
        self._blocks = kept
        del self._canonical[: block.block_number - self._base]
        self._base = block.block_number
        self._anchor = block_hash
        self._encodings = {h: e for h, e in self._encodings.items() if h in kept}

    async def latest_block(self) -> tuple[int, bytes]:
        """The number and hash of the head (``eth_getBlockByNumber("latest")``)."""
        await trio.lowlevel.checkpoint()
        head = self._blocks[self._head]
        return head.block_number, head.block_hash

    async def block_number(self, block_hash: bytes) -> int | None:
        """The number of a block this engine has, or None (``eth_getBlockByHash``)."""
        await trio.lowlevel.checkpoint()
        block = self._blocks.get(block_hash)
        return None if block is None else block.block_number

    async def receipts(self, block_hash: bytes) -> list[Receipt]:
        """The receipts of a block this engine has (``eth_getBlockReceipts``): none, since
        this engine executes no transactions; ``KeyError`` for an unknown block."""
        await trio.lowlevel.checkpoint()
        block = self._blocks.get(block_hash)
        if block is None:
            raise KeyError(f"unknown block {_hex(block_hash)}")
        return []

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
            raise _error(
                INVALID_PARAMS, _FCU, f"expected PayloadAttributes or None, got {attributes!r}"
            )
        return self._forkchoice_updated(state, attributes)

    async def get_payload(self, payload_id: bytes) -> GetPayloadResult:
        """shanghai.md, engine_getPayloadV2: ``-38001`` for an unknown build process."""
        await trio.lowlevel.checkpoint()
        if type(payload_id) is not bytes or len(payload_id) != PAYLOAD_ID_SIZE:
            raise _error(
                INVALID_PARAMS, _GET, f"a payload id is {PAYLOAD_ID_SIZE} bytes, got {payload_id!r}"
            )
        payload = self._builds.get(payload_id)
        if payload is None:
            raise _error(UNKNOWN_PAYLOAD, _GET, f"no build process {_hex(payload_id)}")
        return GetPayloadResult(execution_payload=payload, block_value=0)

    async def new_payload(self, payload: ExecutionPayload) -> PayloadStatus:
        """shanghai.md, engine_newPayloadV2 (see the module docstring)."""
        await trio.lowlevel.checkpoint()
        if not isinstance(payload, ExecutionPayload):
            raise _error(INVALID_PARAMS, _NEW, f"expected an ExecutionPayload, got {payload!r}")
        return self._new_payload(payload)

    async def aclose(self) -> None:
        """Nothing to release."""
        await trio.lowlevel.checkpoint()

    # ------------------------------------------------------------------ internals

    def _forkchoice_updated(
        self, state: ForkchoiceState, attributes: PayloadAttributes | None
    ) -> ForkchoiceUpdatedResult:
        head_hash = state.head_block_hash
        if head_hash in self._invalid:
            lvh, reason = self._invalid[head_hash]
            return ForkchoiceUpdatedResult(PayloadStatus(PayloadStatusKind.INVALID, lvh, reason))
        head = self._blocks.get(head_hash)
        if head is None:
            return ForkchoiceUpdatedResult(PayloadStatus(PayloadStatusKind.SYNCING))
        for name, h in (("safe", state.safe_block_hash), ("finalized", state.finalized_block_hash)):
            if h == ZERO_HASH:
                continue
            if h not in self._blocks:
                raise _error(
                    INVALID_FORKCHOICE_STATE, _FCU, f"the {name} block {_hex(h)} is unknown"
                )
            if not self._is_ancestor(h, head_hash):
                raise _error(
                    INVALID_FORKCHOICE_STATE,
                    _FCU,
                    f"the {name} block {_hex(h)} is not an ancestor of the head {_hex(head_hash)}",
                )
        self._set_head(head_hash)
        self._safe = state.safe_block_hash
        self._finalized = state.finalized_block_hash
        valid = PayloadStatus(PayloadStatusKind.VALID, head_hash)
        if attributes is None:
            return ForkchoiceUpdatedResult(valid)
        if attributes.timestamp <= head.timestamp:
            raise _error(
                INVALID_PAYLOAD_ATTRIBUTES,
                _FCU,
                f"timestamp {attributes.timestamp} is not greater than the head's {head.timestamp}",
            )
        return ForkchoiceUpdatedResult(valid, self._build(head, attributes))

    def _build(self, parent: ExecutionPayload, attributes: PayloadAttributes) -> bytes:
        wroot = withdrawals_root_of(attributes.withdrawals)
        payload_id = _sha256(
            b"alys-embedded-el/payload-id/v1",
            parent.block_hash,
            _u(attributes.timestamp, 8),
            attributes.prev_randao,
            attributes.suggested_fee_recipient,
            wroot,
        )[:PAYLOAD_ID_SIZE]
        if payload_id in self._builds:
            self._builds.move_to_end(payload_id)
            return payload_id
        balances = self._state_at(parent.block_hash)
        _credit(balances, attributes.withdrawals, 1)
        if any(b >= _U256 for b in balances.values()):
            raise _error(
                INVALID_PAYLOAD_ATTRIBUTES, _FCU, "the withdrawals overflow a 256-bit balance"
            )
        payload = _seal(
            ExecutionPayload(
                parent_hash=parent.block_hash,
                fee_recipient=attributes.suggested_fee_recipient,
                state_root=state_root_of(balances),
                receipts_root=EMPTY_RECEIPTS_ROOT,
                logs_bloom=EMPTY_LOGS_BLOOM,
                prev_randao=attributes.prev_randao,
                block_number=parent.block_number + 1,
                gas_limit=self._config.gas_limit,
                gas_used=0,
                timestamp=attributes.timestamp,
                extra_data=self._config.extra_data,
                base_fee_per_gas=self._config.base_fee_per_gas,
                block_hash=ZERO_HASH,
                transactions=(),
                withdrawals=attributes.withdrawals,
            ),
            self._config.chain_id,
        )
        _bounded_put(self._builds, payload_id, payload, _MAX_BUILDS)
        _bounded_put(self._built, payload.block_hash, payload, _MAX_BUILDS)
        return payload_id

    def _new_payload(self, payload: ExecutionPayload) -> PayloadStatus:
        block_hash = payload.block_hash
        computed = block_hash_of(payload, self._config.chain_id)
        if computed != block_hash:
            return PayloadStatus(
                PayloadStatusKind.INVALID,
                None,
                f"block hash mismatch: the payload says {_hex(block_hash)}, "
                f"its header hashes to {_hex(computed)}",
            )
        if block_hash in self._blocks:
            return PayloadStatus(PayloadStatusKind.VALID, block_hash)
        if block_hash in self._invalid:
            lvh, reason = self._invalid[block_hash]
            return PayloadStatus(PayloadStatusKind.INVALID, lvh, reason)
        parent = self._blocks.get(payload.parent_hash)
        if parent is None:
            if payload.parent_hash in self._invalid:
                lvh, _ = self._invalid[payload.parent_hash]
                reason = f"the parent {_hex(payload.parent_hash)} is invalid"
                _bounded_put(self._invalid, block_hash, (lvh, reason), _MAX_INVALID)
                return PayloadStatus(PayloadStatusKind.INVALID, lvh, reason)
            return PayloadStatus(PayloadStatusKind.SYNCING)
        if self._built.get(block_hash) == payload:
            problem = None  # built here, from a known parent: valid by construction
        else:
            problem = self._check_against_parent(payload, parent)
        if problem is not None:
            _bounded_put(self._invalid, block_hash, (parent.block_hash, problem), _MAX_INVALID)
            return PayloadStatus(PayloadStatusKind.INVALID, parent.block_hash, problem)
        self._blocks[block_hash] = payload
        return PayloadStatus(PayloadStatusKind.VALID, block_hash)

    def _check_against_parent(
        self, payload: ExecutionPayload, parent: ExecutionPayload
    ) -> str | None:
        """The first rule ``payload`` breaks, in words, or None."""
        cfg = self._config
        if payload.block_number != parent.block_number + 1:
            return (
                f"block number {payload.block_number} does not follow the parent's "
                f"{parent.block_number}"
            )
        if payload.timestamp <= parent.timestamp:
            return f"timestamp {payload.timestamp} is not after the parent's {parent.timestamp}"
        if payload.gas_limit != cfg.gas_limit:
            return f"gas limit {payload.gas_limit} differs from the chain's {cfg.gas_limit}"
        if payload.base_fee_per_gas != cfg.base_fee_per_gas:
            return (
                f"base fee {payload.base_fee_per_gas} differs from the chain's "
                f"{cfg.base_fee_per_gas}"
            )
        if payload.transactions:
            return (
                f"the embedded engine executes no transactions, the payload has "
                f"{len(payload.transactions)}"
            )
        if payload.gas_used != 0:
            return f"gas used is {payload.gas_used} in a block without transactions"
        if payload.receipts_root != EMPTY_RECEIPTS_ROOT:
            return f"receipts root {_hex(payload.receipts_root)} is not the empty root"
        if payload.logs_bloom != EMPTY_LOGS_BLOOM:
            return "the logs bloom is not empty in a block without transactions"
        balances = self._state_at(parent.block_hash)
        _credit(balances, payload.withdrawals, 1)
        if any(b >= _U256 for b in balances.values()):
            return "the withdrawals overflow a 256-bit balance"
        root = state_root_of(balances)
        if root != payload.state_root:
            return (
                f"state root {_hex(payload.state_root)} differs from the state after the "
                f"withdrawals, {_hex(root)}"
            )
        return None

    def _is_canonical(self, block: ExecutionPayload) -> bool:
        index = block.block_number - self._base
        return 0 <= index < len(self._canonical) and self._canonical[index] == block.block_hash

    def _is_ancestor(self, ancestor_hash: bytes, descendant_hash: bytes) -> bool:
        """Is ``ancestor_hash`` the block ``descendant_hash`` or one of its ancestors?"""
        ancestor = self._blocks[ancestor_hash]
        cur = self._blocks[descendant_hash]
        while cur.block_number > ancestor.block_number:
            if self._is_canonical(cur):
                return self._is_canonical(ancestor)
            cur = self._blocks[cur.parent_hash]
        return cur.block_hash == ancestor_hash

    def _set_head(self, head_hash: bytes) -> None:
        """Make ``head_hash`` the head: re-index the canonical chain and move the state."""
        head = self._blocks[head_hash]
        fresh: list[bytes] = []
        cur = head
        while not self._is_canonical(cur):
            fresh.append(cur.block_hash)
            cur = self._blocks[cur.parent_hash]
        del self._canonical[cur.block_number - self._base + 1 :]
        self._canonical.extend(reversed(fresh))
        self._move_tip(head_hash)
        self._head = head_hash

    def _path(self, start: bytes, target: bytes) -> tuple[list[bytes], list[bytes]]:
        """Blocks to undo (from ``start`` back) and redo (up to ``target``) to get from the
        state after ``start`` to the state after ``target``."""
        a = self._blocks[start]
        b = self._blocks[target]
        undo: list[bytes] = []
        redo: list[bytes] = []
        while a.block_number > b.block_number:
            undo.append(a.block_hash)
            a = self._blocks[a.parent_hash]
        while b.block_number > a.block_number:
            redo.append(b.block_hash)
            b = self._blocks[b.parent_hash]
        while a.block_hash != b.block_hash:
            undo.append(a.block_hash)
            redo.append(b.block_hash)
            a = self._blocks[a.parent_hash]
            b = self._blocks[b.parent_hash]
        redo.reverse()
        return undo, redo

    def _apply_path(self, balances: dict[bytes, int], start: bytes, target: bytes) -> None:
        undo, redo = self._path(start, target)
        for h in undo:
            _credit(balances, self._blocks[h].withdrawals, -1)
        for h in redo:
            _credit(balances, self._blocks[h].withdrawals, 1)

    def _state_at(self, block_hash: bytes) -> dict[bytes, int]:
        """A copy of the balances after ``block_hash``."""
        balances = dict(self._balances)
        if block_hash != self._tip:
            self._apply_path(balances, self._tip, block_hash)
        return balances

    def _move_tip(self, block_hash: bytes) -> None:
        if block_hash != self._tip:
            self._apply_path(self._balances, self._tip, block_hash)
            self._tip = block_hash

    # ------------------------------------------------------------------ persistence

    def _encoded(self, block: ExecutionPayload) -> bytes:
        """The canonical CBOR of a stored block, encoded once."""
        data = self._encodings.get(block.block_hash)
        if data is None:
            data = cbor2.dumps(_block_to_cbor(block), canonical=True)
            self._encodings[block.block_hash] = data
        return data

    def snapshot(self) -> bytes:
        """The engine as canonical CBOR: its anchor, the balances after it, and the blocks
        kept after it (see the module docstring). After :meth:`retain_from` with the
        finalized block this is small whatever the length of the chain."""
        cfg = self._config
        anchor = self._blocks[self._anchor]
        blocks = sorted((b for b in self._blocks.values() if b.block_hash != self._anchor),
                        key=lambda b: (b.block_number, b.block_hash))
        balances = self._state_at(self._anchor)
        return cbor2.dumps(
            {
                "format": _SNAPSHOT_FORMAT,
                "version": _VERSION,
                "anchor": self._encoded(anchor),
                "balances": [[a, balances[a]] for a in sorted(balances)],
                "config": {
                    "chain_id": cfg.chain_id,
                    "gas_limit": cfg.gas_limit,
                    "genesis_timestamp": cfg.genesis_timestamp,
                    "base_fee_per_gas": cfg.base_fee_per_gas,
                    "extra_data": cfg.extra_data,
                    "alloc": [[a, b] for a, b in cfg.alloc],
                },
                "blocks": [self._encoded(b) for b in blocks],
                "forkchoice": [self._head, self._safe, self._finalized],
            },
            canonical=True,
        )

    @classmethod
    def restore(cls, data: bytes) -> EmbeddedEngine:
        """Rebuild an engine from :meth:`snapshot` bytes (or a version 1 snapshot, whose
        anchor is genesis), checking everything it can: :class:`EngineStateError` names the
        first inconsistency."""
        top = _decode_cbor(data, "snapshot")
        r = _Reader("snapshot")
        version = top.get("version") if isinstance(top, dict) else None
        keys = ["format", "version", "config", "blocks", "forkchoice"]
        if version != 1:
            keys += ["anchor", "balances"]
        doc = r.as_map(top, "", keys)
        r.expect(doc["format"], "format", _SNAPSHOT_FORMAT)
        if version != 1:
            r.expect(doc["version"], "version", _VERSION)
        c = r.as_map(
            doc["config"],
            "config",
            (
                "chain_id",
                "gas_limit",
                "genesis_timestamp",
                "base_fee_per_gas",
                "extra_data",
                "alloc",
            ),
        )
        alloc = []
        for i, pair in enumerate(r.as_list(c["alloc"], "config.alloc")):
            item = r.as_list(pair, f"config.alloc[{i}]", length=2)
            alloc.append(
                (
                    r.as_bytes(item[0], f"config.alloc[{i}][0]", ADDRESS_SIZE),
                    r.as_uint(item[1], f"config.alloc[{i}][1]", 256),
                )
            )
        try:
            config = EmbeddedEngineConfig(
                chain_id=r.as_uint(c["chain_id"], "config.chain_id", 64),
                gas_limit=r.as_uint(c["gas_limit"], "config.gas_limit", 64),
                genesis_timestamp=r.as_uint(c["genesis_timestamp"], "config.genesis_timestamp", 64),
                base_fee_per_gas=r.as_uint(c["base_fee_per_gas"], "config.base_fee_per_gas", 256),
                extra_data=r.as_bytes(c["extra_data"], "config.extra_data", max_size=32),
                alloc=alloc,
            )
        except ValueError as exc:
            raise EngineStateError(f"snapshot: config: {exc}") from exc
        if [list(p) for p in config.alloc] != [list(p) for p in alloc]:
            raise EngineStateError("snapshot: config.alloc is not sorted, unique and non-zero")
        engine = cls(config)
        blocks = r.as_list(doc["blocks"], "blocks")
        if version == 1:  # the whole chain from genesis
            if not blocks:
                raise EngineStateError("snapshot: blocks: the genesis block is missing")
            anchor, blocks, where = blocks[0], blocks[1:], "blocks[0]"
            balances = dict(config.alloc)
        else:
            anchor, where = doc["anchor"], "anchor"
            balances = {}
            for i, pair in enumerate(r.as_list(doc["balances"], "balances")):
                item = r.as_list(pair, f"balances[{i}]", length=2)
                address = r.as_bytes(item[0], f"balances[{i}][0]", ADDRESS_SIZE)
                if address in balances:
                    raise EngineStateError(f"snapshot: balances[{i}]: {_hex(address)} twice")
                balances[address] = r.as_uint(item[1], f"balances[{i}][1]", 256)
        first = _block_from_record(r, anchor, where)
        if first.block_number == 0 and first != engine._genesis:
            raise EngineStateError(
                f"snapshot: {where} is not the genesis of this config (stored hash "
                f"{_hex(first.block_hash)}, expected {_hex(engine._genesis.block_hash)})"
            )
        computed = block_hash_of(first, config.chain_id)
        if computed != first.block_hash:
            raise EngineStateError(f"snapshot: {where}: the stored hash "
                                   f"{_hex(first.block_hash)} does not match the header, which "
                                   f"hashes to {_hex(computed)}")
        if state_root_of(balances) != first.state_root:
            raise EngineStateError(f"snapshot: balances: their state root is not the anchor's "
                                   f"{_hex(first.state_root)}")
        engine._blocks = {first.block_hash: first}
        engine._anchor = engine._head = engine._tip = first.block_hash
        engine._base = first.block_number
        engine._canonical = [first.block_hash]
        engine._balances = {a: b for a, b in balances.items() if b}
        previous = (first.block_number, first.block_hash)
        first_index = 1 if version == 1 else 0  # version 1 listed the anchor as blocks[0]
        for i, record in enumerate(blocks, start=first_index):
            where = f"blocks[{i}]"
            block = _block_from_record(r, record, where)
            key = (block.block_number, block.block_hash)
            if key <= previous:
                raise EngineStateError(
                    f"snapshot: {where} is out of order (blocks are stored by ascending "
                    "number, then hash, without duplicates)"
                )
            previous = key
            engine._import_trusted_shape(block, f"snapshot: {where}")
        fc = r.as_list(doc["forkchoice"], "forkchoice", length=3)
        head, safe, finalized = (r.as_bytes(fc[i], f"forkchoice[{i}]", HASH_SIZE) for i in range(3))
        if head not in engine._blocks:
            raise EngineStateError(f"snapshot: forkchoice[0]: the head {_hex(head)} is unknown")
        for i, h in ((1, safe), (2, finalized)):
            if h != ZERO_HASH and (h not in engine._blocks or not engine._is_ancestor(h, head)):
                raise EngineStateError(
                    f"snapshot: forkchoice[{i}]: {_hex(h)} is not the head or an ancestor"
                )
        engine._set_head(head)
        engine._safe = safe
        engine._finalized = finalized
        root = state_root_of(engine._balances)
        if root != engine._blocks[head].state_root:
            raise EngineStateError(
                f"snapshot: the balances replayed up to the head {_hex(head)} give the state "
                f"root {_hex(root)}, the head says {_hex(engine._blocks[head].state_root)}"
            )
        return engine

    def _import_trusted_shape(self, block: ExecutionPayload, where: str) -> None:
        """Import a stored block: hash, parent link and number are checked; the state root
        is checked for the head at the end of :meth:`restore` (the blocks were validated
        when they were first imported, and the hashes chain them to that history)."""
        computed = block_hash_of(block, self._config.chain_id)
        if computed != block.block_hash:
            raise EngineStateError(
                f"{where}: the stored hash {_hex(block.block_hash)} does not match the "
                f"header, which hashes to {_hex(computed)}"
            )
        parent = self._blocks.get(block.parent_hash)
        if parent is None:
            raise EngineStateError(f"{where}: the parent {_hex(block.parent_hash)} is unknown")
        if block.block_number != parent.block_number + 1:
            raise EngineStateError(
                f"{where}: block number {block.block_number} does not follow the parent's "
                f"{parent.block_number}"
            )
        self._blocks[block.block_hash] = block

    def state_delta(self, block_hash: bytes) -> bytes:
        """The incremental form: one known block as canonical CBOR, for :meth:`apply_delta`."""
        block = self._blocks.get(block_hash)
        if block is None:
            raise KeyError(f"unknown block {_hex(block_hash)}")
        return cbor2.dumps(
            {"format": _DELTA_FORMAT, "version": _DELTA_VERSION, "block": self._encoded(block)},
            canonical=True,
        )

    def apply_delta(self, data: bytes) -> ExecutionPayload:
        """Import a :meth:`state_delta` record with full ``newPayload`` validation; its parent
        must be known. Returns the block. Importing a known block again is a no-op. The
        forkchoice does not move."""
        top = _decode_cbor(data, "delta")
        r = _Reader("delta")
        doc = r.as_map(top, "", ("format", "version", "block"))
        r.expect(doc["format"], "format", _DELTA_FORMAT)
        r.expect(doc["version"], "version", _DELTA_VERSION)
        block = _block_from_record(r, doc["block"], "block")
        status = self._new_payload(block)
        if status.status is not PayloadStatusKind.VALID:
            reason = status.validation_error or "its parent is unknown"
            raise EngineStateError(
                f"delta: block {block.block_number} ({_hex(block.block_hash)}) cannot be "
                f"imported: {status.status.value}: {reason}"
            )
        return block


# --------------------------------------------------------------------------- helpers


def _seal(payload: ExecutionPayload, chain_id: int) -> ExecutionPayload:
    return attrs.evolve(payload, block_hash=block_hash_of(payload, chain_id))


def _error(code: int, method: str, detail: str) -> EngineError:
    return EngineError(code, f"{ERROR_MESSAGES[code]}: {detail}", method)


def _bounded_put(store: OrderedDict[bytes, Any], key: bytes, value: Any, limit: int) -> None:
    store[key] = value
    store.move_to_end(key)
    while len(store) > limit:
        store.popitem(last=False)


def _block_to_cbor(b: ExecutionPayload) -> list[Any]:
    return [
        b.parent_hash,
        b.fee_recipient,
        b.state_root,
        b.receipts_root,
        b.logs_bloom,
        b.prev_randao,
        b.block_number,
        b.gas_limit,
        b.gas_used,
        b.timestamp,
        b.extra_data,
        b.base_fee_per_gas,
        b.block_hash,
        list(b.transactions),
        [[w.index, w.validator_index, w.address, w.amount] for w in b.withdrawals],
    ]


_BLOCK_FIELDS: Final = (
    ("parent_hash", HASH_SIZE),
    ("fee_recipient", ADDRESS_SIZE),
    ("state_root", HASH_SIZE),
    ("receipts_root", HASH_SIZE),
    ("logs_bloom", LOGS_BLOOM_SIZE),
    ("prev_randao", HASH_SIZE),
    ("block_number", 64),
    ("gas_limit", 64),
    ("gas_used", 64),
    ("timestamp", 64),
    ("extra_data", -MAX_EXTRA_DATA_SIZE),
    ("base_fee_per_gas", 256),
    ("block_hash", HASH_SIZE),
)
_INT_FIELDS: Final = frozenset(
    {"block_number", "gas_limit", "gas_used", "timestamp", "base_fee_per_gas"}
)


def _block_from_cbor(r: _Reader, value: Any, where: str) -> ExecutionPayload:
    items = r.as_list(value, where, length=len(_BLOCK_FIELDS) + 2)
    fields: dict[str, Any] = {}
    for i, (name, width) in enumerate(_BLOCK_FIELDS):
        path = f"{where}.{name}"
        if name in _INT_FIELDS:
            fields[name] = r.as_uint(items[i], path, width)
        elif width < 0:
            fields[name] = r.as_bytes(items[i], path, max_size=-width)
        else:
            fields[name] = r.as_bytes(items[i], path, width)
    n = len(_BLOCK_FIELDS)
    txs_path = f"{where}.transactions"
    fields["transactions"] = tuple(
        r.as_bytes(tx, f"{txs_path}[{i}]") for i, tx in enumerate(r.as_list(items[n], txs_path))
    )
    ws_path = f"{where}.withdrawals"
    withdrawals = []
    for i, w in enumerate(r.as_list(items[n + 1], ws_path)):
        p = f"{ws_path}[{i}]"
        wi = r.as_list(w, p, length=4)
        withdrawals.append(
            Withdrawal(
                index=r.as_uint(wi[0], f"{p}.index", 64),
                validator_index=r.as_uint(wi[1], f"{p}.validator_index", 64),
                address=r.as_bytes(wi[2], f"{p}.address", ADDRESS_SIZE),
                amount=r.as_uint(wi[3], f"{p}.amount", 64),
            )
        )
    fields["withdrawals"] = tuple(withdrawals)
    return ExecutionPayload(**fields)


def _block_from_record(r: _Reader, value: Any, where: str) -> ExecutionPayload:
    """A block stored as the bytes of its canonical CBOR."""
    raw = r.as_bytes(value, where)
    try:
        decoded = cbor2.loads(raw)
    except Exception as exc:  # cbor2 raises several types
        raise r.fail(where, f"not valid CBOR: {exc}") from exc
    return _block_from_cbor(r, decoded, where)


def _decode_cbor(data: bytes, what: str) -> Any:
    if not isinstance(data, bytes | bytearray | memoryview):
        raise EngineStateError(f"{what}: expected bytes, got {type(data).__name__}")
    try:
        return cbor2.loads(bytes(data))
    except Exception as exc:  # cbor2 raises several types (CBORDecodeError, ValueError, ...)
        raise EngineStateError(f"{what}: not valid CBOR: {exc}") from exc


class _Reader:
    """Typed access to decoded CBOR with errors that name the path."""

    def __init__(self, what: str) -> None:
        self.what = what

    def fail(self, path: str, problem: str) -> EngineStateError:
        return EngineStateError(f"{self.what}: {path or 'top level'}: {problem}")

    def as_map(self, value: Any, path: str, keys: Sequence[str]) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(path, f"expected a map, got {type(value).__name__}")
        missing = [k for k in keys if k not in value]
        if missing:
            raise self.fail(path, f"missing keys {missing}")
        extra = sorted(repr(k) for k in value if k not in keys)
        if extra:
            raise self.fail(path, f"unexpected keys [{', '.join(extra)}]")
        return value

    def as_list(self, value: Any, path: str, length: int | None = None) -> list[Any]:
        if not isinstance(value, list):
            raise self.fail(path, f"expected an array, got {type(value).__name__}")
        if length is not None and len(value) != length:
            raise self.fail(path, f"expected {length} items, got {len(value)}")
        return value

    def as_uint(self, value: Any, path: str, bits: int) -> int:
        if type(value) is not int or not 0 <= value < (1 << bits):
            raise self.fail(path, f"expected an unsigned {bits}-bit int, got {value!r:.60}")
        return value

    def as_bytes(
        self, value: Any, path: str, size: int | None = None, *, max_size: int | None = None
    ) -> bytes:
        if type(value) is not bytes:
            raise self.fail(path, f"expected a byte string, got {type(value).__name__}")
        if size is not None and len(value) != size:
            raise self.fail(path, f"expected {size} bytes, got {len(value)}")
        if max_size is not None and len(value) > max_size:
            raise self.fail(path, f"expected at most {max_size} bytes, got {len(value)}")
        return value

    def expect(self, value: Any, path: str, wanted: Any) -> None:
        if type(value) is not type(wanted) or value != wanted:
            raise self.fail(path, f"expected {wanted!r}, got {value!r:.60}")
