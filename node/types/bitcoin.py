"""Bitcoin's own consensus serialization, bit-exact: hashes, CompactSize, transactions, headers.

Everything here is plain synchronous code over frozen attrs values.

Byte order
    Every hash (txid, block hash, merkle node) is held as 32 ``bytes`` in *internal* (consensus)
    order: exactly the bytes that appear in serialized data and that SHA256d outputs. Block
    explorers and Bitcoin Core's RPC print hashes *reversed* ("display order");
    :func:`hash_to_hex` and :func:`hash_from_hex` convert between the two. Proof-of-work
    compares a hash as a little-endian 256-bit number (:func:`hash_meets_target`).

Decoding
    Every decoder reads through a :class:`ByteReader` and reports bad input as a
    :class:`DecodeError` naming the field (``transaction.vin[0].script_sig``) and the absolute
    byte offset where it went wrong; no decoder lets an ``IndexError`` or ``struct.error``
    escape. ``T.parse(data, offset)`` returns ``(value, bytes_consumed)``;
    ``T.from_bytes(data)`` additionally requires the value to span all of ``data``.

Transactions follow the rules of rust-bitcoin 0.30, the library the original Alys links (and
whose encoding is therefore the AuxPoW wire format): a transaction with at least one witness,
*or with no inputs at all*, is serialized in BIP144 (segwit) form; a decoder that reads a zero
input count requires the BIP144 flag byte ``0x01`` to follow; a segwit-form transaction with
inputs whose witnesses are all empty is refused ("superfluous witness record"). These match
Bitcoin Core except for zero-input transactions, which Core serializes in legacy form and whose
segwit form it refuses: such transactions never appear in a Bitcoin block, but the original's
built-in miner produced zero-input parent coinbases, so we read and write them as it does.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Callable, Iterable, Sequence
from typing import Any, ClassVar, TypeVar

import attrs

__all__ = [
    "HASH_SIZE",
    "MAX_COMPACT_SIZE",
    "NULL_HASH",
    "BlockHeader",
    "ByteReader",
    "DecodeError",
    "MerkleBranch",
    "OutPoint",
    "Transaction",
    "TxIn",
    "TxOut",
    "UINT32_MAX",
    "bits_to_target",
    "compact_size_length",
    "decode_compact",
    "hash_from_hex",
    "hash_meets_target",
    "hash_to_hex",
    "merkle_branch",
    "merkle_root",
    "read_compact_size",
    "sha256d",
    "target_to_bits",
    "write_compact_size",
]

HASH_SIZE = 32
"""Length in bytes of every SHA256d hash."""

NULL_HASH = bytes(HASH_SIZE)
"""32 zero bytes: the previous-output txid of a coinbase input, the genesis block's parent."""

MAX_COMPACT_SIZE = 0x02000000
"""Largest length or count a CompactSize may declare (Bitcoin Core's ``MAX_SIZE``, 32 MiB)."""

UINT32_MAX = 0xFFFFFFFF
UINT64_MAX = 0xFFFFFFFFFFFFFFFF
UINT256_LIMIT = 1 << 256

_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
_I32 = struct.Struct("<i")
_U64 = struct.Struct("<Q")

# Smallest serialized sizes, used to refuse counts that cannot fit in the remaining bytes
# before allocating anything for them.
_MIN_TXIN_SIZE = 32 + 4 + 1 + 4
_MIN_TXOUT_SIZE = 8 + 1


# --------------------------------------------------------------------------------- errors


class DecodeError(ValueError):
    """Bytes that are not a valid serialization of what was asked for.

    ``field`` names the value being read (a dotted path such as
    ``auxpow.coinbase_tx.vout[2].script_pubkey``), ``offset`` is the absolute byte offset in
    the decoded buffer where the problem was found, and ``reason`` says what was wrong.
    """

    def __init__(self, field: str, offset: int, reason: str) -> None:
        super().__init__(f"{field} at byte {offset}: {reason}")
        self.field = field
        self.offset = offset
        self.reason = reason


# --------------------------------------------------------------------------------- hashes


def sha256d(data: bytes | bytearray | memoryview) -> bytes:
    """SHA-256 applied twice: Bitcoin's hash for txids, block hashes and merkle nodes."""
    return hashlib.sha256(hashlib.sha256(data).digest()).digest()


def hash_to_hex(h: bytes) -> str:
    """Display hex of an internal-order hash: the bytes reversed, as explorers print them."""
    return h[::-1].hex()


def hash_from_hex(text: str) -> bytes:
    """The internal-order hash whose display hex (reversed, 64 hex digits) is ``text``."""
    try:
        raw = bytes.fromhex(text)
    except ValueError as exc:
        raise ValueError(f"hash {text!r} is not hex: {exc}") from None
    if len(raw) != HASH_SIZE:
        raise ValueError(f"hash {text!r} has {len(raw)} bytes, expected {HASH_SIZE}")
    return raw[::-1]


def hash_meets_target(h: bytes, target: int) -> bool:
    """Whether hash ``h`` (internal order), read as a little-endian number, is ``<= target``."""
    return int.from_bytes(h, "little") <= target


# --------------------------------------------------------------------------------- reader


class ByteReader:
    """A cursor over a byte buffer whose every read names its field.

    A read past the end, or a malformed value, raises :class:`DecodeError` with the field and
    the absolute offset of the read that failed.
    """

    __slots__ = ("_data", "_pos")

    def __init__(self, data: bytes | bytearray | memoryview, offset: int = 0) -> None:
        self._data = bytes(data)
        if not 0 <= offset <= len(self._data):
            raise ValueError(f"offset {offset} is outside a buffer of {len(self._data)} bytes")
        self._pos = offset

    @property
    def pos(self) -> int:
        """Absolute offset of the next byte to be read."""
        return self._pos

    @property
    def remaining(self) -> int:
        """Bytes left after :attr:`pos`."""
        return len(self._data) - self._pos

    def read(self, n: int, field: str) -> bytes:
        """The next ``n`` bytes of ``field``."""
        if n > self.remaining:
            raise DecodeError(field, self._pos, f"needs {n} bytes but only {self.remaining} remain")
        start = self._pos
        self._pos = start + n
        return self._data[start : self._pos]

    def u8(self, field: str) -> int:
        """An unsigned byte."""
        return self.read(1, field)[0]

    def u16(self, field: str) -> int:
        """A little-endian unsigned 16-bit integer."""
        return int(_U16.unpack(self.read(2, field))[0])

    def u32(self, field: str) -> int:
        """A little-endian unsigned 32-bit integer."""
        return int(_U32.unpack(self.read(4, field))[0])

    def i32(self, field: str) -> int:
        """A little-endian signed (two's complement) 32-bit integer."""
        return int(_I32.unpack(self.read(4, field))[0])

    def u64(self, field: str) -> int:
        """A little-endian unsigned 64-bit integer."""
        return int(_U64.unpack(self.read(8, field))[0])

    def hash32(self, field: str) -> bytes:
        """A 32-byte hash, kept in internal (serialized) order."""
        return self.read(HASH_SIZE, field)

    def compact_size(self, field: str, *, limit: int | None = MAX_COMPACT_SIZE) -> int:
        """A CompactSize (Bitcoin's varint), which must be canonically encoded.

        ``0..0xfc`` is one byte; ``0xfd``/``0xfe``/``0xff`` prefix a 2/4/8-byte little-endian
        value, which must not fit the shorter form. Values above ``limit`` (Core's
        ``MAX_SIZE`` unless ``None``) are refused.
        """
        start = self._pos
        first = self.u8(field)
        if first < 0xFD:
            value = first
        elif first == 0xFD:
            value = self.u16(field)
            if value < 0xFD:
                raise DecodeError(field, start, f"non-canonical CompactSize 0xfd {value:#x}")
        elif first == 0xFE:
            value = self.u32(field)
            if value <= 0xFFFF:
                raise DecodeError(field, start, f"non-canonical CompactSize 0xfe {value:#x}")
        else:
            value = self.u64(field)
            if value <= UINT32_MAX:
                raise DecodeError(field, start, f"non-canonical CompactSize 0xff {value:#x}")
        if limit is not None and value > limit:
            raise DecodeError(field, start, f"size {value} exceeds the limit {limit}")
        return value

    def count(self, field: str, min_item_size: int) -> int:
        """A CompactSize element count, refused if that many items cannot fit in what remains."""
        start = self._pos
        n = self.compact_size(field)
        if n * min_item_size > self.remaining:
            raise DecodeError(
                field,
                start,
                f"declares {n} items of at least {min_item_size} bytes "
                f"but only {self.remaining} bytes remain",
            )
        return n

    def var_bytes(self, field: str) -> bytes:
        """A CompactSize length followed by that many bytes."""
        n = self.compact_size(field)
        return self.read(n, field)


def read_compact_size(
    data: bytes | bytearray | memoryview, offset: int = 0, *, limit: int | None = MAX_COMPACT_SIZE
) -> tuple[int, int]:
    """Decode the CompactSize at ``offset``: ``(value, bytes_consumed)``; see ByteReader."""
    r = ByteReader(data, offset)
    value = r.compact_size("compact_size", limit=limit)
    return value, r.pos - offset


def write_compact_size(n: int) -> bytes:
    """The canonical (shortest) CompactSize encoding of ``0 <= n < 2**64``."""
    if n < 0 or n > UINT64_MAX:
        raise ValueError(f"CompactSize value {n} is outside 0..2**64-1")
    if n < 0xFD:
        return bytes((n,))
    if n <= 0xFFFF:
        return b"\xfd" + _U16.pack(n)
    if n <= UINT32_MAX:
        return b"\xfe" + _U32.pack(n)
    return b"\xff" + _U64.pack(n)


def compact_size_length(n: int) -> int:
    """Length in bytes of the canonical CompactSize encoding of ``n``."""
    return len(write_compact_size(n))


def _var_bytes(data: bytes) -> bytes:
    return write_compact_size(len(data)) + data


T = TypeVar("T")


def _parse(
    read: Callable[[ByteReader, str], T],
    data: bytes | bytearray | memoryview,
    offset: int,
    field: str,
) -> tuple[T, int]:
    r = ByteReader(data, offset)
    value = read(r, field)
    return value, r.pos - offset


def _from_bytes(
    read: Callable[[ByteReader, str], T], data: bytes | bytearray | memoryview, field: str
) -> T:
    r = ByteReader(data)
    value = read(r, field)
    if r.remaining:
        raise DecodeError(field, r.pos, f"{r.remaining} trailing bytes after the {field}")
    return value


# --------------------------------------------------------------------------------- validators


def _uint(bits: int) -> Callable[[Any, attrs.Attribute[Any], Any], None]:
    limit = 1 << bits

    def check(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        if type(value) is not int or not 0 <= value < limit:
            raise ValueError(
                f"{attribute.name} must be an integer in 0..2**{bits}-1, got {value!r}"
            )

    return check


def _int32(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if type(value) is not int or not -(1 << 31) <= value < (1 << 31):
        raise ValueError(f"{attribute.name} must be a signed 32-bit integer, got {value!r}")


def _hash(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if type(value) is not bytes or len(value) != HASH_SIZE:
        raise ValueError(f"{attribute.name} must be {HASH_SIZE} bytes, got {value!r}")


def _bytes(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if type(value) is not bytes:
        raise TypeError(f"{attribute.name} must be bytes, got {type(value).__name__}")


def _tuple_of(kind: type) -> Callable[[Any, attrs.Attribute[Any], Any], None]:
    def check(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        for i, item in enumerate(value):
            if not isinstance(item, kind):
                raise TypeError(
                    f"{attribute.name}[{i}] must be {kind.__name__}, got {type(item).__name__}"
                )

    return check


def _to_tuple(value: Iterable[Any]) -> tuple[Any, ...]:
    return tuple(value)


# --------------------------------------------------------------------------------- transactions


@attrs.frozen
class OutPoint:
    """A reference to a transaction output: the txid (internal order) and output index."""

    txid: bytes = attrs.field(validator=_hash)
    vout: int = attrs.field(validator=_uint(32))

    SIZE: ClassVar[int] = 36

    @classmethod
    def null(cls) -> OutPoint:
        """The previous output of a coinbase input: zero txid, index ``0xffffffff``."""
        return cls(NULL_HASH, UINT32_MAX)

    @property
    def is_null(self) -> bool:
        """Whether this is the coinbase's null previous output."""
        return self.txid == NULL_HASH and self.vout == UINT32_MAX

    def to_bytes(self) -> bytes:
        """The 36-byte serialization: txid then index (u32 LE)."""
        return self.txid + _U32.pack(self.vout)

    @classmethod
    def read(cls, r: ByteReader, field: str = "outpoint") -> OutPoint:
        """Read an outpoint from ``r``."""
        return cls(r.hash32(f"{field}.txid"), r.u32(f"{field}.vout"))


@attrs.frozen
class TxIn:
    """A transaction input: previous output, scriptSig, sequence and (segwit) witness stack."""

    prevout: OutPoint
    script_sig: bytes = attrs.field(default=b"", validator=_bytes)
    sequence: int = attrs.field(default=UINT32_MAX, validator=_uint(32))
    witness: tuple[bytes, ...] = attrs.field(
        default=(), converter=_to_tuple, validator=_tuple_of(bytes)
    )

    def to_bytes(self) -> bytes:
        """The input's serialization, without its witness (which travels separately)."""
        return self.prevout.to_bytes() + _var_bytes(self.script_sig) + _U32.pack(self.sequence)

    def witness_bytes(self) -> bytes:
        """The witness stack's serialization: item count, then each item with its length."""
        return write_compact_size(len(self.witness)) + b"".join(
            _var_bytes(item) for item in self.witness
        )

    @classmethod
    def read(cls, r: ByteReader, field: str = "txin") -> TxIn:
        """Read an input (without witness) from ``r``."""
        prevout = OutPoint.read(r, f"{field}.prevout")
        script_sig = r.var_bytes(f"{field}.script_sig")
        sequence = r.u32(f"{field}.sequence")
        return cls(prevout, script_sig, sequence)


@attrs.frozen
class TxOut:
    """A transaction output: value in satoshis (8 bytes LE, read unsigned) and scriptPubKey.

    The value is kept as the unsigned 64-bit integer rust-bitcoin 0.30 uses, so any 8 bytes
    round-trip; Bitcoin Core reads the same bytes as a signed amount.
    """

    value: int = attrs.field(validator=_uint(64))
    script_pubkey: bytes = attrs.field(default=b"", validator=_bytes)

    def to_bytes(self) -> bytes:
        """The output's serialization."""
        return _U64.pack(self.value) + _var_bytes(self.script_pubkey)

    @classmethod
    def read(cls, r: ByteReader, field: str = "txout") -> TxOut:
        """Read an output from ``r``."""
        value = r.u64(f"{field}.value")
        return cls(value, r.var_bytes(f"{field}.script_pubkey"))


@attrs.frozen
class Transaction:
    """A Bitcoin transaction (legacy or segwit).

    ``version`` is the signed 32-bit field (as rust-bitcoin 0.30 and older Bitcoin Core);
    witnesses live on the inputs. See the module docstring for when the segwit form is used.
    """

    version: int = attrs.field(validator=_int32)
    inputs: tuple[TxIn, ...] = attrs.field(converter=_to_tuple, validator=_tuple_of(TxIn))
    outputs: tuple[TxOut, ...] = attrs.field(converter=_to_tuple, validator=_tuple_of(TxOut))
    lock_time: int = attrs.field(default=0, validator=_uint(32))

    @property
    def has_witness(self) -> bool:
        """Whether any input carries a non-empty witness stack."""
        return any(txin.witness for txin in self.inputs)

    @property
    def uses_segwit_serialization(self) -> bool:
        """Whether :meth:`to_bytes` writes the BIP144 form: any witness, or no inputs at all."""
        return self.has_witness or not self.inputs

    @property
    def is_coinbase(self) -> bool:
        """Whether this is shaped as a coinbase: exactly one input, spending the null outpoint."""
        return len(self.inputs) == 1 and self.inputs[0].prevout.is_null

    def _body(self) -> bytes:
        return (
            write_compact_size(len(self.inputs))
            + b"".join(txin.to_bytes() for txin in self.inputs)
            + write_compact_size(len(self.outputs))
            + b"".join(txout.to_bytes() for txout in self.outputs)
        )

    def to_bytes_legacy(self) -> bytes:
        """The serialization without witness data (what the txid hashes)."""
        return _I32.pack(self.version) + self._body() + _U32.pack(self.lock_time)

    def to_bytes(self) -> bytes:
        """The full serialization, in segwit form when :attr:`uses_segwit_serialization`."""
        if not self.uses_segwit_serialization:
            return self.to_bytes_legacy()
        return (
            _I32.pack(self.version)
            + b"\x00\x01"
            + self._body()
            + b"".join(txin.witness_bytes() for txin in self.inputs)
            + _U32.pack(self.lock_time)
        )

    def txid(self) -> bytes:
        """SHA256d of the serialization without witnesses (internal order)."""
        return sha256d(self.to_bytes_legacy())

    def wtxid(self) -> bytes:
        """SHA256d of the full serialization (equals the txid without witnesses)."""
        return sha256d(self.to_bytes())

    @classmethod
    def read(cls, r: ByteReader, field: str = "transaction") -> Transaction:
        """Read a transaction (either form) from ``r``."""
        version = r.i32(f"{field}.version")
        n_inputs = r.count(f"{field}.vin_count", _MIN_TXIN_SIZE)
        segwit = n_inputs == 0
        if segwit:
            flag_at = r.pos
            flag = r.u8(f"{field}.segwit_flag")
            if flag != 1:
                raise DecodeError(
                    f"{field}.segwit_flag",
                    flag_at,
                    f"a zero input count must be followed by the segwit flag 0x01, got {flag:#04x}",
                )
            n_inputs = r.count(f"{field}.vin_count", _MIN_TXIN_SIZE)
        inputs = [TxIn.read(r, f"{field}.vin[{i}]") for i in range(n_inputs)]
        n_outputs = r.count(f"{field}.vout_count", _MIN_TXOUT_SIZE)
        outputs = [TxOut.read(r, f"{field}.vout[{i}]") for i in range(n_outputs)]
        if segwit:
            witness_at = r.pos
            for i, txin in enumerate(inputs):
                name = f"{field}.vin[{i}].witness"
                n_items = r.count(name, 1)
                items = tuple(r.var_bytes(f"{name}[{j}]") for j in range(n_items))
                inputs[i] = attrs.evolve(txin, witness=items)
            if inputs and not any(txin.witness for txin in inputs):
                raise DecodeError(
                    f"{field}.witness",
                    witness_at,
                    "superfluous witness record: the segwit flag is set but every witness is empty",
                )
        lock_time = r.u32(f"{field}.lock_time")
        return cls(version, tuple(inputs), tuple(outputs), lock_time)

    @classmethod
    def parse(
        cls, data: bytes | bytearray | memoryview, offset: int = 0
    ) -> tuple[Transaction, int]:
        """Decode the transaction at ``offset``: ``(transaction, bytes_consumed)``."""
        return _parse(cls.read, data, offset, "transaction")

    @classmethod
    def from_bytes(cls, data: bytes | bytearray | memoryview) -> Transaction:
        """Decode a transaction that spans exactly ``data``."""
        return _from_bytes(cls.read, data, "transaction")


# --------------------------------------------------------------------------------- headers


@attrs.frozen
class BlockHeader:
    """An 80-byte Bitcoin block header.

    ``version`` is signed 32-bit (``int32_t nVersion``); ``prev_hash`` and ``merkle_root`` are
    internal-order hashes; ``time``, ``bits`` and ``nonce`` are unsigned 32-bit.
    """

    version: int = attrs.field(validator=_int32)
    prev_hash: bytes = attrs.field(validator=_hash)
    merkle_root: bytes = attrs.field(validator=_hash)
    time: int = attrs.field(validator=_uint(32))
    bits: int = attrs.field(validator=_uint(32))
    nonce: int = attrs.field(validator=_uint(32))

    SIZE: ClassVar[int] = 80

    def to_bytes(self) -> bytes:
        """The 80-byte serialization."""
        return (
            _I32.pack(self.version)
            + self.prev_hash
            + self.merkle_root
            + _U32.pack(self.time)
            + _U32.pack(self.bits)
            + _U32.pack(self.nonce)
        )

    def hash(self) -> bytes:
        """The block hash: SHA256d of the 80 bytes, internal order."""
        return sha256d(self.to_bytes())

    @classmethod
    def read(cls, r: ByteReader, field: str = "header") -> BlockHeader:
        """Read a header from ``r``."""
        return cls(
            r.i32(f"{field}.version"),
            r.hash32(f"{field}.prev_hash"),
            r.hash32(f"{field}.merkle_root"),
            r.u32(f"{field}.time"),
            r.u32(f"{field}.bits"),
            r.u32(f"{field}.nonce"),
        )

    @classmethod
    def parse(
        cls, data: bytes | bytearray | memoryview, offset: int = 0
    ) -> tuple[BlockHeader, int]:
        """Decode the header at ``offset``: ``(header, 80)``."""
        return _parse(cls.read, data, offset, "header")

    @classmethod
    def from_bytes(cls, data: bytes | bytearray | memoryview) -> BlockHeader:
        """Decode a header from exactly 80 bytes."""
        return _from_bytes(cls.read, data, "header")


# --------------------------------------------------------------------------------- compact targets


def decode_compact(bits: int) -> tuple[int, bool, bool]:
    """Bitcoin Core's ``arith_uint256::SetCompact``: ``(target, negative, overflow)``.

    ``bits`` is ``size << 24 | word``: the 23-bit ``word`` shifted left by ``8 * (size - 3)``
    bytes (right, when ``size < 3``). Bit ``0x00800000`` is a sign bit: ``negative`` is set when
    it is on and the word is not zero. ``overflow`` is set when a non-zero word would be
    shifted past 256 bits; the returned target is then truncated to 256 bits, as Core's is.
    """
    if not 0 <= bits <= UINT32_MAX:
        raise ValueError(f"compact bits {bits!r} is not an unsigned 32-bit integer")
    size = bits >> 24
    word = bits & 0x007FFFFF
    if size <= 3:
        word >>= 8 * (3 - size)
        target = word
    else:
        target = (word << (8 * (size - 3))) % UINT256_LIMIT
    negative = word != 0 and (bits & 0x00800000) != 0
    overflow = word != 0 and (
        size > 34 or (word > 0xFF and size > 33) or (word > 0xFFFF and size > 32)
    )
    return target, negative, overflow


def bits_to_target(bits: int) -> int:
    """The target encoded by compact ``bits``, refusing what Core's PoW check refuses.

    Raises ``ValueError`` when the encoding is negative or overflows 256 bits (Bitcoin Core's
    ``CheckProofOfWork`` rejects both); a zero target is returned as 0.
    """
    target, negative, overflow = decode_compact(bits)
    if negative:
        raise ValueError(f"compact bits {bits:#010x} encode a negative target")
    if overflow:
        raise ValueError(f"compact bits {bits:#010x} encode a target above 2**256")
    return target


def target_to_bits(target: int) -> int:
    """Bitcoin Core's ``arith_uint256::GetCompact`` for ``0 <= target < 2**256`` (lossy).

    Keeps the top three significant bytes; if their top bit would read as the sign bit, the
    mantissa is shifted one byte right and the size grows by one.
    """
    if not 0 <= target < UINT256_LIMIT:
        raise ValueError(f"target {target!r} is outside 0..2**256-1")
    size = (target.bit_length() + 7) // 8
    if size <= 3:
        compact = (target << (8 * (3 - size))) & UINT32_MAX
    else:
        compact = (target >> (8 * (size - 3))) & UINT32_MAX
    if compact & 0x00800000:
        compact >>= 8
        size += 1
    return compact | (size << 24)


# --------------------------------------------------------------------------------- merkle trees


def _pair(left: bytes, right: bytes) -> bytes:
    return sha256d(left + right)


def merkle_root(txids: Sequence[bytes]) -> bytes:
    """Bitcoin's merkle root over internal-order txids, duplicating the last of an odd level.

    An empty list gives 32 zero bytes, as Bitcoin Core's ``ComputeMerkleRoot`` does.
    """
    if not txids:
        return NULL_HASH
    level = list(txids)
    for i, h in enumerate(level):
        if len(h) != HASH_SIZE:
            raise ValueError(f"txids[{i}] has {len(h)} bytes, expected {HASH_SIZE}")
    while len(level) > 1:
        if len(level) % 2:
            level.append(level[-1])
        level = [_pair(level[i], level[i + 1]) for i in range(0, len(level), 2)]
    return level[0]


@attrs.frozen
class MerkleBranch:
    """A merkle path from a leaf up to a root, in the namecoin AuxPoW serialization.

    ``hashes[i]`` is the sibling at level ``i`` (leaf level first). Bit ``i`` of ``side_mask``
    says on which side that sibling goes: 0 puts it on the right (``H(node || sibling)``), 1 on
    the left (``H(sibling || node)``); the mask is therefore the leaf's index in its level.
    Mask bits beyond ``len(hashes)`` are ignored by :meth:`fold`, as in the original.
    Serialized as a CompactSize count, the hashes, then the mask as u32 LE.
    """

    hashes: tuple[bytes, ...] = attrs.field(default=(), converter=_to_tuple)
    side_mask: int = attrs.field(default=0, validator=_uint(32))

    @hashes.validator
    def _check_hashes(self, attribute: attrs.Attribute[Any], value: tuple[Any, ...]) -> None:
        for i, h in enumerate(value):
            if type(h) is not bytes or len(h) != HASH_SIZE:
                raise ValueError(f"hashes[{i}] must be {HASH_SIZE} bytes, got {h!r}")

    def fold(self, leaf: bytes) -> bytes:
        """The root reached from ``leaf`` (internal order) along this branch."""
        node = leaf
        for i, sibling in enumerate(self.hashes):
            if (self.side_mask >> i) & 1:
                node = _pair(sibling, node)
            else:
                node = _pair(node, sibling)
        return node

    def to_bytes(self) -> bytes:
        """The serialization: count, hashes, side mask (u32 LE)."""
        return (
            write_compact_size(len(self.hashes)) + b"".join(self.hashes) + _U32.pack(self.side_mask)
        )

    @classmethod
    def read(cls, r: ByteReader, field: str = "merkle_branch") -> MerkleBranch:
        """Read a branch from ``r``."""
        n = r.count(f"{field}.count", HASH_SIZE)
        hashes = tuple(r.hash32(f"{field}.hashes[{i}]") for i in range(n))
        return cls(hashes, r.u32(f"{field}.side_mask"))

    @classmethod
    def parse(
        cls, data: bytes | bytearray | memoryview, offset: int = 0
    ) -> tuple[MerkleBranch, int]:
        """Decode the branch at ``offset``: ``(branch, bytes_consumed)``."""
        return _parse(cls.read, data, offset, "merkle_branch")

    @classmethod
    def from_bytes(cls, data: bytes | bytearray | memoryview) -> MerkleBranch:
        """Decode a branch that spans exactly ``data``."""
        return _from_bytes(cls.read, data, "merkle_branch")


def merkle_branch(txids: Sequence[bytes], index: int) -> MerkleBranch:
    """The branch proving ``txids[index]`` under :func:`merkle_root` of ``txids``.

    Folding ``txids[index]`` along the result gives ``merkle_root(txids)``; at an odd level's
    last node the sibling is the node itself (the duplicate-last rule).
    """
    if not 0 <= index < len(txids):
        raise ValueError(f"index {index} is outside 0..{len(txids) - 1}")
    if index > UINT32_MAX:
        raise ValueError(f"index {index} does not fit the 32-bit side mask")
    level = list(txids)
    hashes: list[bytes] = []
    i = index
    while len(level) > 1:
        if len(level) % 2:
            level.append(level[-1])
        hashes.append(level[i ^ 1])
        level = [_pair(level[j], level[j + 1]) for j in range(0, len(level), 2)]
        i >>= 1
    return MerkleBranch(tuple(hashes), index)
