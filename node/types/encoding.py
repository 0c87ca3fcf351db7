"""The consensus encoding: explicit, versioned, positional bytes for blocks.

Every block hash and signing root the chain agrees on is computed from these bytes, and the
node stores blocks in them. Nothing here depends on a Python name: fields are written in the
fixed order listed below, without names or tags, so renaming a field or a class changes no
hash. Changing what is written (a field added, a width changed) is a new version of the
encoding: a new value of :data:`VERSION`, new golden vectors in the tests.

Primitives (integers are unsigned, big-endian, fixed width):

=============  ====================================================================
``u8 .. u256`` an integer of 1, 2, 4, 8 or 32 bytes
``[n]``        exactly ``n`` raw bytes (hashes, addresses, signatures)
``bytes``      ``u32`` length, then the bytes
``opt<T>``     ``0x00`` for none, or ``0x01`` followed by ``T``
``list<T>``    ``u32`` count, then each item
=============  ====================================================================

Values, each field in this order:

* ``Withdrawal``: ``index u64, validator_index u64, address [20], amount u64``.
* ``ExecutionPayload``: ``parent_hash [32], fee_recipient [20], state_root [32],
  receipts_root [32], logs_bloom [256], prev_randao [32], block_number u64, gas_limit u64,
  gas_used u64, timestamp u64, extra_data bytes, base_fee_per_gas u256, block_hash [32],
  transactions list<bytes>, withdrawals list<Withdrawal>``.
* ``AuxPowHeader``: ``range_start [32], range_end [32], bits u32, chain_id u32, height u64,
  auxpow opt<bytes>, fee_recipient [20]``.
* ``ConsensusBlock``: ``parent_hash [32], slot u64, execution_payload ExecutionPayload,
  auxpow_header opt<AuxPowHeader>, pegins list<[32] [32]>, pegout_payment_proposal
  opt<bytes>, finalized_pegouts list<bytes>``.
* ``AggregateApproval``: ``bitfield u16, signature [96]``.

Documents (what is hashed or stored) begin with two bytes: the kind, then :data:`VERSION`:

* ``0x01`` a ``ConsensusBlock``; the **block hash** is SHA-256 of this document.
* ``0x02`` a signed block: the ``ConsensusBlock`` fields, then the ``AggregateApproval``.
* ``0x03`` an ``AuxPowHeader`` on its own (the queued PoW in storage).

The **signing root** of a block, the message its producer and its approvers sign with BLS,
is SHA-256 of :data:`SIGNING_DOMAIN` followed by the block hash: a signature over a block can
never be taken for a signature over anything else the chain may sign later.

Decoding is strict: wrong lengths, an option flag other than 0 or 1, a count larger than
the bytes left, a value its type refuses, and trailing bytes all raise :class:`DecodeError`
naming the field (``block.execution_payload.withdrawals[2].address``).
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final, TypeVar

from .execution import ExecutionPayload, Withdrawal

if TYPE_CHECKING:
    from .chain import AggregateApproval, AuxPowHeader, ConsensusBlock, SignedConsensusBlock

__all__ = [
    "KIND_AUXPOW_HEADER",
    "KIND_BLOCK",
    "KIND_SIGNED_BLOCK",
    "SIGNING_DOMAIN",
    "VERSION",
    "DecodeError",
    "block_hash",
    "decode_auxpow_header",
    "decode_block",
    "decode_signed_block",
    "encode_auxpow_header",
    "encode_block",
    "encode_signed_block",
    "signing_root",
    "write_signed_block",
]

VERSION: Final = 1
KIND_BLOCK: Final = 0x01
KIND_SIGNED_BLOCK: Final = 0x02
KIND_AUXPOW_HEADER: Final = 0x03
#: The two bytes a kind-0x01 document (a block's hash preimage) begins with.
_BLOCK_DOCUMENT_HEAD: Final = bytes((KIND_BLOCK, VERSION))
#: Prefixed to a block hash to form what is signed (see the module docstring).
SIGNING_DOMAIN: Final = b"alys consensus block approval v1\x00"


class DecodeError(ValueError):
    """Bytes that are not a valid document of the consensus encoding; ``path`` names the
    field where decoding stopped."""

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = path
        self.problem = problem


# -- encoding ------------------------------------------------------------------------------------


class _Writer:
    __slots__ = ("out",)

    def __init__(self, kind: int) -> None:
        self.out = bytearray((kind, VERSION))

    def uint(self, value: int, size: int) -> None:
        self.out += value.to_bytes(size, "big")

    def fixed(self, value: bytes) -> None:
        self.out += value

    def var(self, value: bytes) -> None:
        self.out += len(value).to_bytes(4, "big")
        self.out += value

    def count(self, n: int) -> None:
        self.out += n.to_bytes(4, "big")

    def flag(self, present: bool) -> None:
        self.out.append(1 if present else 0)


def _write_withdrawal(w: _Writer, value: Withdrawal) -> None:
    w.uint(value.index, 8)
    w.uint(value.validator_index, 8)
    w.fixed(value.address)
    w.uint(value.amount, 8)


def _write_payload(w: _Writer, p: ExecutionPayload) -> None:
    w.fixed(p.parent_hash)
    w.fixed(p.fee_recipient)
    w.fixed(p.state_root)
    w.fixed(p.receipts_root)
    w.fixed(p.logs_bloom)
    w.fixed(p.prev_randao)
    w.uint(p.block_number, 8)
    w.uint(p.gas_limit, 8)
    w.uint(p.gas_used, 8)
    w.uint(p.timestamp, 8)
    w.var(p.extra_data)
    w.uint(p.base_fee_per_gas, 32)
    w.fixed(p.block_hash)
    w.count(len(p.transactions))
    for tx in p.transactions:
        w.var(tx)
    w.count(len(p.withdrawals))
    for withdrawal in p.withdrawals:
        _write_withdrawal(w, withdrawal)


def _write_header(w: _Writer, h: AuxPowHeader) -> None:
    w.fixed(h.range_start)
    w.fixed(h.range_end)
    w.uint(h.bits, 4)
    w.uint(h.chain_id, 4)
    w.uint(h.height, 8)
    w.flag(h.auxpow is not None)
    if h.auxpow is not None:
        w.var(h.auxpow)
    w.fixed(h.fee_recipient)


def _write_block(w: _Writer, b: ConsensusBlock) -> None:
    w.fixed(b.parent_hash)
    w.uint(b.slot, 8)
    _write_payload(w, b.execution_payload)
    w.flag(b.auxpow_header is not None)
    if b.auxpow_header is not None:
        _write_header(w, b.auxpow_header)
    w.count(len(b.pegins))
    for txid, block in b.pegins:
        w.fixed(txid)
        w.fixed(block)
    w.flag(b.pegout_payment_proposal is not None)
    if b.pegout_payment_proposal is not None:
        w.var(b.pegout_payment_proposal)
    w.count(len(b.finalized_pegouts))
    for tx in b.finalized_pegouts:
        w.var(tx)


def encode_block(block: ConsensusBlock) -> bytes:
    """The unsigned block as a kind-``0x01`` document: the block hash's preimage."""
    w = _Writer(KIND_BLOCK)
    _write_block(w, block)
    return bytes(w.out)


def encode_signed_block(signed: SignedConsensusBlock) -> bytes:
    """A signed block as a kind-``0x02`` document (how the node stores blocks): written once
    per value (:meth:`~node.types.chain.SignedConsensusBlock.encoded`), and for a decoded
    block, the bytes it was decoded from."""
    return signed.encoded()


def write_signed_block(signed: SignedConsensusBlock) -> bytes:
    """:func:`encode_signed_block`, written afresh."""
    w = _Writer(KIND_SIGNED_BLOCK)
    _write_block(w, signed.message)
    w.uint(signed.signature.bitfield, 2)
    w.fixed(signed.signature.signature)
    return bytes(w.out)


def encode_auxpow_header(header: AuxPowHeader) -> bytes:
    """An AuxPoW header as a kind-``0x03`` document."""
    w = _Writer(KIND_AUXPOW_HEADER)
    _write_header(w, header)
    return bytes(w.out)


def block_hash(block: ConsensusBlock) -> bytes:
    """SHA-256 of :func:`encode_block`."""
    return hashlib.sha256(encode_block(block)).digest()


def signing_root(block_hash_: bytes) -> bytes:
    """What authorities sign for the block with this hash: SHA-256(SIGNING_DOMAIN || hash)."""
    return hashlib.sha256(SIGNING_DOMAIN + block_hash_).digest()


# -- decoding ------------------------------------------------------------------------------------

_T = TypeVar("_T")


class _Reader:
    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, n: int, path: str) -> bytes:
        end = self.pos + n
        if end > len(self.data):
            raise DecodeError(path, f"needs {n} bytes, {len(self.data) - self.pos} left")
        chunk = self.data[self.pos:end]
        self.pos = end
        return chunk

    def uint(self, size: int, path: str) -> int:
        return int.from_bytes(self.take(size, path), "big")

    def var(self, path: str) -> bytes:
        return self.take(self.uint(4, f"{path} (length)"), path)

    def strings(self, n: int, path: str) -> tuple[bytes, ...]:
        """``n`` values of type ``bytes`` in a row: :meth:`var` at ``path[0]``, ``path[1]``..
        (the path is formatted only for an error)."""
        data, pos, size = self.data, self.pos, len(self.data)
        out = []
        for i in range(n):
            if pos + 4 > size:
                raise DecodeError(f"{path}[{i}] (length)", f"needs 4 bytes, {size - pos} left")
            length = int.from_bytes(data[pos:pos + 4], "big")
            end = pos + 4 + length
            if end > size:
                raise DecodeError(f"{path}[{i}]", f"needs {length} bytes, {size - pos - 4} left")
            out.append(data[pos + 4:end])
            pos = end
        self.pos = pos
        return tuple(out)

    def count(self, path: str, item_size: int) -> int:
        n = self.uint(4, f"{path} (count)")
        if n * item_size > len(self.data) - self.pos:
            raise DecodeError(path, f"{n} items cannot fit in the {len(self.data) - self.pos} "
                              "bytes left")
        return n

    def flag(self, path: str) -> bool:
        value = self.take(1, f"{path} (presence)")[0]
        if value > 1:
            raise DecodeError(path, f"presence flag {value}, expected 0 or 1")
        return value == 1

    def start(self, kind: int, what: str) -> None:
        head = self.take(2, what)
        if head[0] != kind:
            raise DecodeError(what, f"document kind {head[0]:#04x}, expected {kind:#04x}")
        if head[1] != VERSION:
            raise DecodeError(what, f"encoding version {head[1]}, this node reads {VERSION}")

    def end(self, what: str) -> None:
        if self.pos != len(self.data):
            raise DecodeError(what, f"{len(self.data) - self.pos} trailing bytes")


def _build(path: str, make: Callable[[], _T]) -> _T:
    """Construct a value; its validators' complaints become a DecodeError at ``path``."""
    try:
        return make()
    except (ValueError, TypeError) as exc:
        raise DecodeError(path, str(exc)) from None


def _read_withdrawal(r: _Reader, path: str) -> Withdrawal:
    index = r.uint(8, f"{path}.index")
    validator_index = r.uint(8, f"{path}.validator_index")
    address = r.take(20, f"{path}.address")
    amount = r.uint(8, f"{path}.amount")
    return _build(path, lambda: Withdrawal(index, validator_index, address, amount))


#: A block's fixed-width fields before anything of variable length: ``parent_hash, slot``,
#: then the execution payload's up to its ``timestamp``; read in one step when the bytes
#: are there (:func:`_read_block`), field by field otherwise (to name the short one).
_BLOCK_HEAD: Final = struct.Struct(">32sQ32s20s32s32s256s32sQQQQ")


def _read_payload(r: _Reader, path: str) -> ExecutionPayload:
    head = (
        r.take(32, f"{path}.parent_hash"),
        r.take(20, f"{path}.fee_recipient"),
        r.take(32, f"{path}.state_root"),
        r.take(32, f"{path}.receipts_root"),
        r.take(256, f"{path}.logs_bloom"),
        r.take(32, f"{path}.prev_randao"),
        r.uint(8, f"{path}.block_number"),
        r.uint(8, f"{path}.gas_limit"),
        r.uint(8, f"{path}.gas_used"),
        r.uint(8, f"{path}.timestamp"),
    )
    return _read_payload_tail(r, path, head)


def _read_payload_tail(r: _Reader, path: str, head: tuple[Any, ...]) -> ExecutionPayload:
    """The payload's fields after ``timestamp``; ``head`` holds those up to it."""
    (parent_hash, fee_recipient, state_root, receipts_root, logs_bloom, prev_randao,
     block_number, gas_limit, gas_used, timestamp) = head
    extra_data = r.var(f"{path}.extra_data")
    base_fee = r.uint(32, f"{path}.base_fee_per_gas")
    hash_ = r.take(32, f"{path}.block_hash")
    txs_path = f"{path}.transactions"
    transactions = r.strings(r.count(txs_path, 4), txs_path)
    ws_path = f"{path}.withdrawals"
    withdrawals = tuple(_read_withdrawal(r, f"{ws_path}[{i}]")
                        for i in range(r.count(ws_path, 44)))
    return _build(path, lambda: ExecutionPayload(
        parent_hash=parent_hash, fee_recipient=fee_recipient, state_root=state_root,
        receipts_root=receipts_root, logs_bloom=logs_bloom, prev_randao=prev_randao,
        block_number=block_number, gas_limit=gas_limit, gas_used=gas_used,
        timestamp=timestamp, extra_data=extra_data, base_fee_per_gas=base_fee,
        block_hash=hash_, transactions=transactions, withdrawals=withdrawals,
    ))


def _read_header(r: _Reader, path: str) -> AuxPowHeader:
    from .chain import AuxPowHeader

    range_start = r.take(32, f"{path}.range_start")
    range_end = r.take(32, f"{path}.range_end")
    bits = r.uint(4, f"{path}.bits")
    chain_id = r.uint(4, f"{path}.chain_id")
    height = r.uint(8, f"{path}.height")
    auxpow = r.var(f"{path}.auxpow") if r.flag(f"{path}.auxpow") else None
    fee_recipient = r.take(20, f"{path}.fee_recipient")
    return _build(path, lambda: AuxPowHeader(range_start, range_end, bits, chain_id, height,
                                             auxpow, fee_recipient))


def _read_block(r: _Reader, path: str) -> ConsensusBlock:
    from .chain import ConsensusBlock

    if len(r.data) - r.pos >= _BLOCK_HEAD.size:
        parent_hash, slot, *head = _BLOCK_HEAD.unpack_from(r.data, r.pos)
        r.pos += _BLOCK_HEAD.size
        payload = _read_payload_tail(r, f"{path}.execution_payload", tuple(head))
    else:
        parent_hash = r.take(32, f"{path}.parent_hash")
        slot = r.uint(8, f"{path}.slot")
        payload = _read_payload(r, f"{path}.execution_payload")
    header = (_read_header(r, f"{path}.auxpow_header")
              if r.flag(f"{path}.auxpow_header") else None)
    pegins_path = f"{path}.pegins"
    pegins = tuple(
        (r.take(32, f"{pegins_path}[{i}].txid"), r.take(32, f"{pegins_path}[{i}].block_hash"))
        for i in range(r.count(pegins_path, 64))
    )
    proposal_path = f"{path}.pegout_payment_proposal"
    proposal = r.var(proposal_path) if r.flag(proposal_path) else None
    pegouts_path = f"{path}.finalized_pegouts"
    pegouts = r.strings(r.count(pegouts_path, 4), pegouts_path)
    return _build(path, lambda: ConsensusBlock(parent_hash, slot, payload, header, pegins,
                                               proposal, pegouts))


def _read_approval(r: _Reader, path: str) -> AggregateApproval:
    from .chain import AggregateApproval

    bitfield = r.uint(2, f"{path}.bitfield")
    signature = r.take(96, f"{path}.signature")
    return _build(path, lambda: AggregateApproval(bitfield, signature))


def decode_signed_block(data: bytes) -> SignedConsensusBlock:
    """The signed block of a kind-``0x02`` document; :class:`DecodeError` if it is not one."""
    from .chain import SignedConsensusBlock

    data = bytes(data)
    r = _Reader(data)
    r.start(KIND_SIGNED_BLOCK, "signed block")
    block = _read_block(r, "block")
    block_end = r.pos
    approval = _read_approval(r, "signature")
    r.end("signed block")
    signed = SignedConsensusBlock(block, approval)
    # Decoding is strict and every value has exactly one encoding, so these bytes are the
    # ones encoding the value would write: the block's own fields are its kind-0x01 document
    # after the two leading bytes, and the whole is its kind-0x02 one. Neither is written again.
    digest = hashlib.sha256(_BLOCK_DOCUMENT_HEAD)
    digest.update(memoryview(data)[2:block_end])
    block.remember(digest.digest())
    signed.remember(data)
    return signed


def decode_block(data: bytes) -> ConsensusBlock:
    """The unsigned block of a kind-``0x01`` document."""
    r = _Reader(bytes(data))
    r.start(KIND_BLOCK, "block")
    block = _read_block(r, "block")
    r.end("block")
    return block


def decode_auxpow_header(data: bytes) -> AuxPowHeader:
    """The AuxPoW header of a kind-``0x03`` document."""
    r = _Reader(bytes(data))
    r.start(KIND_AUXPOW_HEADER, "auxpow header")
    header = _read_header(r, "auxpow_header")
    r.end("auxpow header")
    return header
