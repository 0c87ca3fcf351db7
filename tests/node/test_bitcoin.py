"""Tests for node.types.bitcoin: Bitcoin's serialization against published vectors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from node.types.bitcoin import (
    MAX_COMPACT_SIZE,
    NULL_HASH,
    BlockHeader,
    ByteReader,
    DecodeError,
    MerkleBranch,
    OutPoint,
    Transaction,
    TxIn,
    TxOut,
    bits_to_target,
    compact_size_length,
    decode_compact,
    hash_from_hex,
    hash_meets_target,
    hash_to_hex,
    merkle_branch,
    merkle_root,
    read_compact_size,
    sha256d,
    target_to_bits,
    write_compact_size,
)

VECTORS: dict[str, Any] = json.loads(
    (Path(__file__).parent / "data" / "bitcoin_vectors.json").read_text()
)


def vector_bytes(name: str, key: str = "hex") -> bytes:
    return bytes.fromhex(VECTORS[name][key])


# ------------------------------------------------------------------ hashes


def test_sha256d_of_empty_input() -> None:
    expected = "5df6e0e2761359d30a8275058e299fcc0381534545f55cf43e41983f5d4c9456"
    assert sha256d(b"").hex() == expected


def test_display_hex_is_reversed() -> None:
    h = bytes(range(32))
    assert hash_to_hex(h) == h[::-1].hex()
    assert hash_from_hex(hash_to_hex(h)) == h


@pytest.mark.parametrize("text", ["zz" * 32, "00" * 31, "00" * 33, "0"])
def test_hash_from_hex_refuses_bad_text(text: str) -> None:
    with pytest.raises(ValueError, match="hash"):
        hash_from_hex(text)


def test_hash_meets_target_reads_little_endian() -> None:
    h = (5).to_bytes(32, "little")
    assert hash_meets_target(h, 5)
    assert not hash_meets_target(h, 4)
    assert not hash_meets_target(b"\x00" * 31 + b"\x01", 1 << 247)


# ------------------------------------------------------------------ CompactSize

COMPACT_SIZES = [
    (0, "00"),
    (0xFC, "fc"),
    (0xFD, "fdfd00"),
    (0xFFFF, "fdffff"),
    (0x10000, "fe00000100"),
    (0xFFFFFFFF, "feffffffff"),
    (0x100000000, "ff0000000001000000"),
    (2**64 - 1, "ffffffffffffffffff"),
]


@pytest.mark.parametrize(("value", "encoding"), COMPACT_SIZES)
def test_compact_size_round_trip(value: int, encoding: str) -> None:
    raw = bytes.fromhex(encoding)
    assert write_compact_size(value) == raw
    assert compact_size_length(value) == len(raw)
    assert read_compact_size(raw, limit=None) == (value, len(raw))


@pytest.mark.parametrize("encoding", ["fdfc00", "fd0000", "feffff0000", "ffffffffff00000000"])
def test_compact_size_must_be_canonical(encoding: str) -> None:
    raw = b"\x00\x00" + bytes.fromhex(encoding)
    with pytest.raises(DecodeError, match="non-canonical") as info:
        read_compact_size(raw, 2, limit=None)
    assert info.value.offset == 2
    assert info.value.field == "compact_size"


def test_compact_size_limit_and_truncation() -> None:
    big = write_compact_size(MAX_COMPACT_SIZE + 1)
    with pytest.raises(DecodeError, match="exceeds the limit"):
        read_compact_size(big)
    assert read_compact_size(big, limit=None)[0] == MAX_COMPACT_SIZE + 1
    with pytest.raises(DecodeError, match="needs 2 bytes but only 1 remain") as info:
        read_compact_size(b"\xfd\x00")
    assert info.value.offset == 1


@pytest.mark.parametrize("value", [-1, 2**64])
def test_write_compact_size_range(value: int) -> None:
    with pytest.raises(ValueError, match="CompactSize"):
        write_compact_size(value)


def test_reader_reports_offsets() -> None:
    r = ByteReader(b"\x01\x02\x03", 1)
    assert r.u8("a") == 2
    with pytest.raises(DecodeError) as info:
        r.u32("b")
    assert (info.value.field, info.value.offset) == ("b", 2)
    assert "b at byte 2" in str(info.value)
    with pytest.raises(ValueError, match="outside"):
        ByteReader(b"", 1)


# ------------------------------------------------------------------ genesis block


def test_genesis_header() -> None:
    raw = vector_bytes("genesis", "header")
    header = BlockHeader.from_bytes(raw)
    assert header.to_bytes() == raw
    assert hash_to_hex(header.hash()) == VECTORS["genesis"]["hash_display"]
    assert hash_to_hex(header.merkle_root) == VECTORS["genesis"]["merkle_root_display"]
    assert header.prev_hash == NULL_HASH
    assert (header.version, header.time, header.bits, header.nonce) == (
        1,
        1231006505,
        0x1D00FFFF,
        2083236893,
    )
    assert hash_meets_target(header.hash(), bits_to_target(header.bits))
    assert BlockHeader.parse(b"\xaa" + raw + b"\xbb", 1) == (header, 80)


def test_genesis_coinbase() -> None:
    raw = vector_bytes("genesis", "coinbase")
    tx, consumed = Transaction.parse(raw)
    assert consumed == len(raw)
    assert tx.to_bytes() == raw
    assert tx.is_coinbase and not tx.has_witness
    assert b"The Times 03/Jan/2009" in tx.inputs[0].script_sig
    assert tx.outputs[0].value == 50 * 100_000_000
    assert hash_to_hex(tx.txid()) == VECTORS["genesis"]["merkle_root_display"]
    assert tx.wtxid() == tx.txid()
    header = BlockHeader.from_bytes(vector_bytes("genesis", "header"))
    assert merkle_root([tx.txid()]) == header.merkle_root


def test_header_decode_errors_name_the_field() -> None:
    raw = vector_bytes("genesis", "header")
    with pytest.raises(DecodeError) as info:
        BlockHeader.from_bytes(raw[:79])
    assert (info.value.field, info.value.offset) == ("header.nonce", 76)
    with pytest.raises(DecodeError, match="1 trailing bytes") as info:
        BlockHeader.from_bytes(raw + b"\x00")
    assert info.value.offset == 80


# ------------------------------------------------------------------ transactions


def test_segwit_transaction_txid_and_wtxid() -> None:
    raw = vector_bytes("segwit_tx")
    tx = Transaction.from_bytes(raw)
    assert tx.has_witness and tx.uses_segwit_serialization
    assert tx.to_bytes() == raw
    assert hash_to_hex(tx.txid()) == VECTORS["segwit_tx"]["txid_display"]
    assert hash_to_hex(tx.wtxid()) == VECTORS["segwit_tx"]["wtxid_display"]
    assert sha256d(tx.to_bytes_legacy()) == tx.txid()
    assert len(tx.inputs) == 2 and all(len(txin.witness) == 5 for txin in tx.inputs)


def test_legacy_transaction_txid() -> None:
    raw = vector_bytes("legacy_tx")
    tx = Transaction.from_bytes(raw)
    assert tx.to_bytes() == tx.to_bytes_legacy() == raw
    assert hash_to_hex(tx.txid()) == VECTORS["legacy_tx"]["txid_display"]
    assert tx.wtxid() == tx.txid()


@pytest.mark.parametrize("name", ["marathon_coinbase", "coordinate_coinbase"])
def test_pool_coinbases_round_trip(name: str) -> None:
    raw = vector_bytes(name)
    tx = Transaction.from_bytes(raw)
    assert tx.to_bytes() == raw
    assert tx.is_coinbase
    assert len(tx.outputs) == 3


def test_zero_input_transaction_uses_segwit_form() -> None:
    tx = Transaction(version=0, inputs=(), outputs=(TxOut(0, b"\x51"),), lock_time=0)
    raw = tx.to_bytes()
    assert raw == bytes.fromhex("00000000" + "0001" + "00" + "01" + "0000000000000000015100000000")
    assert tx.to_bytes_legacy() == bytes.fromhex(
        "00000000" + "00" + "01000000000000000001510000" + "0000"
    )
    assert Transaction.from_bytes(raw) == tx
    assert tx.txid() == sha256d(tx.to_bytes_legacy())


def test_zero_inputs_need_the_segwit_flag() -> None:
    raw = bytes.fromhex("01000000" + "00" + "02")
    with pytest.raises(DecodeError, match="segwit flag 0x01, got 0x02") as info:
        Transaction.from_bytes(raw)
    assert (info.value.field, info.value.offset) == ("transaction.segwit_flag", 5)


def test_superfluous_witness_record_is_refused() -> None:
    legacy = Transaction.from_bytes(vector_bytes("legacy_tx"))
    body = legacy.to_bytes_legacy()
    witnesses = b"\x00" * len(legacy.inputs)
    raw = body[:4] + b"\x00\x01" + body[4:-4] + witnesses + body[-4:]
    with pytest.raises(DecodeError, match="superfluous witness record"):
        Transaction.from_bytes(raw)


def test_transaction_decode_errors_name_the_field() -> None:
    raw = vector_bytes("genesis", "coinbase")
    with pytest.raises(DecodeError) as info:
        Transaction.from_bytes(raw[:50])
    assert info.value.field == "transaction.vin[0].script_sig"
    assert info.value.offset == 42
    with pytest.raises(DecodeError, match="declares 65535 items") as info:
        Transaction.from_bytes(bytes.fromhex("01000000fdffff"))
    assert info.value.field == "transaction.vin_count"
    with pytest.raises(DecodeError, match="trailing"):
        Transaction.from_bytes(raw + b"\x00")


def test_value_validation() -> None:
    with pytest.raises(ValueError, match="txid"):
        OutPoint(b"\x00" * 31, 0)
    with pytest.raises(ValueError, match="vout"):
        OutPoint(NULL_HASH, 2**32)
    with pytest.raises(ValueError, match="version"):
        Transaction(version=2**31, inputs=(), outputs=())
    with pytest.raises(TypeError, match="outputs"):
        Transaction(version=1, inputs=(), outputs=(b"x",))
    with pytest.raises(ValueError, match="hashes"):
        MerkleBranch((b"short",), 0)


# ------------------------------------------------------------------ compact targets

# Bitcoin Core's arith_uint256 SetCompact/GetCompact cases: bits, target, negative, re-encoding.
CORE_COMPACT_CASES = [
    (0x00000000, 0, False, 0),
    (0x00123456, 0, False, 0),
    (0x01003456, 0, False, 0),
    (0x02000056, 0, False, 0),
    (0x03000000, 0, False, 0),
    (0x04000000, 0, False, 0),
    (0x00923456, 0, False, 0),
    (0x01803456, 0, False, 0),
    (0x02800056, 0, False, 0),
    (0x03800000, 0, False, 0),
    (0x04800000, 0, False, 0),
    (0x01123456, 0x12, False, 0x01120000),
    (0x01FEDCBA, 0x7E, True, None),
    (0x02123456, 0x1234, False, 0x02123400),
    (0x03123456, 0x123456, False, 0x03123456),
    (0x04123456, 0x12345600, False, 0x04123456),
    (0x04923456, 0x12345600, True, None),
    (0x05009234, 0x92340000, False, 0x05009234),
    (0x20123456, 0x123456 << 232, False, 0x20123456),
]


@pytest.mark.parametrize(("bits", "target", "negative", "compact"), CORE_COMPACT_CASES)
def test_core_compact_cases(bits: int, target: int, negative: bool, compact: int | None) -> None:
    assert decode_compact(bits) == (target, negative, False)
    if compact is not None:
        assert target_to_bits(target) == compact
    if negative:
        with pytest.raises(ValueError, match="negative"):
            bits_to_target(bits)


@pytest.mark.parametrize(
    ("bits", "overflow"),
    [
        (0x2100FFFF, False),
        (0x22000001, False),
        (0x22000100, True),
        (0x21010000, True),
        (0x23000001, True),
        (0xFF123456, True),
    ],
)
def test_compact_overflow(bits: int, overflow: bool) -> None:
    assert decode_compact(bits)[2] is overflow
    if overflow:
        with pytest.raises(ValueError, match="above 2\\*\\*256"):
            bits_to_target(bits)
    else:
        assert bits_to_target(bits) < 2**256


def test_well_known_targets() -> None:
    assert bits_to_target(0x1D00FFFF) == 0xFFFF << 208
    assert bits_to_target(0x1B0404CB) == 0x0404CB << 192
    assert bits_to_target(0x207FFFFF) == 0x7FFFFF << 232
    assert bits_to_target(0x1E25CDF2) == 0x25CDF2 << 216
    assert target_to_bits(0xFFFF << 208) == 0x1D00FFFF
    # A mantissa whose top bit is set moves one byte right.
    assert target_to_bits(0x80 << 208) == 0x1C008000
    with pytest.raises(ValueError, match="target"):
        target_to_bits(2**256)
    with pytest.raises(ValueError, match="bits"):
        decode_compact(2**32)


@given(st.integers(min_value=0, max_value=2**256 - 1))
def test_target_to_bits_is_canonical(target: int) -> None:
    bits = target_to_bits(target)
    decoded = bits_to_target(bits)
    assert decoded <= target
    assert target_to_bits(decoded) == bits
    # Only the bytes the mantissa holds survive; the rest are truncated, not rounded.
    drop = max(0, ((bits >> 24) - 3) * 8)
    assert decoded >> drop == target >> drop


# ------------------------------------------------------------------ merkle trees


def test_merkle_root_block_170() -> None:
    txids = [
        hash_from_hex("b1fea52486ce0c62bb442b530a3f0132b826c74e473d1f2c220bfa78111c5082"),
        hash_from_hex("f4184fc596403b9d638783cf57adfe4c75c605f6356fbc91338530e9831e9e16"),
    ]
    root = "7dac2c5666815c17a3b36427de37bb9d2e2c5ccec3f8633eb91a4205cb4c10ff"
    assert hash_to_hex(merkle_root(txids)) == root


def test_merkle_root_duplicates_the_last_of_an_odd_level() -> None:
    a, b, c = (bytes([i]) * 32 for i in range(3))
    assert merkle_root([]) == NULL_HASH
    assert merkle_root([a]) == a
    assert merkle_root([a, b, c]) == sha256d(sha256d(a + b) + sha256d(c + c))
    assert merkle_root([a, b, c]) == merkle_root([a, b, c, c])
    with pytest.raises(ValueError, match="txids"):
        merkle_root([a, b"short"])


def test_merkle_branch_fold_and_encoding() -> None:
    leaf, s0, s1 = (bytes([i]) * 32 for i in range(3))
    branch = MerkleBranch((s0, s1), 0b10)
    assert branch.fold(leaf) == sha256d(s1 + sha256d(leaf + s0))
    raw = branch.to_bytes()
    assert raw == b"\x02" + s0 + s1 + b"\x02\x00\x00\x00"
    assert MerkleBranch.from_bytes(raw) == branch
    assert MerkleBranch.parse(b"\xff" + raw, 1) == (branch, len(raw))
    assert MerkleBranch().fold(leaf) == leaf
    with pytest.raises(DecodeError) as info:
        MerkleBranch.from_bytes(raw[:-1])
    assert (info.value.field, info.value.offset) == ("merkle_branch.side_mask", 65)


@given(st.lists(st.binary(min_size=32, max_size=32), min_size=1, max_size=17), st.data())
def test_merkle_branch_reaches_the_root(leaves: list[bytes], data: st.DataObject) -> None:
    index = data.draw(st.integers(min_value=0, max_value=len(leaves) - 1))
    branch = merkle_branch(leaves, index)
    assert branch.side_mask == index
    assert branch.fold(leaves[index]) == merkle_root(leaves)


# ------------------------------------------------------------------ properties

hashes = st.binary(min_size=32, max_size=32)
u32 = st.integers(min_value=0, max_value=2**32 - 1)
scripts = st.binary(max_size=40)
txins = st.builds(
    TxIn,
    st.builds(OutPoint, hashes, u32),
    scripts,
    u32,
    st.lists(st.binary(max_size=20), max_size=3).map(tuple),
)
txouts = st.builds(TxOut, st.integers(min_value=0, max_value=2**64 - 1), scripts)
transactions = st.builds(
    Transaction,
    st.integers(min_value=-(2**31), max_value=2**31 - 1),
    st.lists(txins, max_size=3).map(tuple),
    st.lists(txouts, max_size=3).map(tuple),
    u32,
)


@given(transactions)
def test_transactions_round_trip(tx: Transaction) -> None:
    raw = tx.to_bytes()
    assert Transaction.from_bytes(raw) == tx
    assert Transaction.parse(raw + b"junk") == (tx, len(raw))


@settings(max_examples=300)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_only_raise_decode_error(data: bytes) -> None:
    for kind in (Transaction, BlockHeader, MerkleBranch):
        try:
            value, consumed = kind.parse(data)
        except DecodeError as exc:
            assert 0 <= exc.offset <= len(data)
            continue
        assert value.to_bytes() == data[:consumed]


@given(transactions, st.integers(min_value=0, max_value=10_000), st.binary(min_size=1, max_size=3))
def test_corrupted_transactions_only_raise_decode_error(
    tx: Transaction, position: int, garbage: bytes
) -> None:
    raw = bytearray(tx.to_bytes())
    at = position % len(raw)
    raw[at : at + len(garbage)] = garbage
    try:
        decoded, consumed = Transaction.parse(bytes(raw))
    except DecodeError:
        return
    assert decoded.to_bytes() == bytes(raw[:consumed])
