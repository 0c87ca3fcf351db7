"""The consensus encoding: golden vectors pin block hashes and signing roots; the bytes follow
the layout the module documents, field by field; nothing in them is a Python name; decoding
is strict and names the field where it stops."""

from __future__ import annotations

import hashlib
import struct

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from node.crypto import bls
from node.types import encoding
from node.types.chain import (
    AggregateApproval,
    AuxPowHeader,
    ConsensusBlock,
    SignedConsensusBlock,
)
from node.types.execution import ExecutionPayload, Withdrawal
from node.workflows import chain as rules

DEAD = bytes.fromhex("000000000000000000000000000000000000dEaD")
EMPTY_ROOT = bytes.fromhex("56e81f171bcc55a6ff8345e692c0f86e5b48e01b996cadc001622fb5e363b421")


def payload(n: int, parent: bytes, **changes: object) -> ExecutionPayload:
    fields: dict[str, object] = {
        "parent_hash": parent, "fee_recipient": DEAD, "state_root": bytes(range(32)),
        "receipts_root": EMPTY_ROOT, "logs_bloom": bytes(256), "prev_randao": bytes(32),
        "block_number": n, "gas_limit": 0x1C9C380, "gas_used": 0,
        "timestamp": 1_700_000_000 + n, "extra_data": b"", "base_fee_per_gas": 7,
        "block_hash": bytes([n]) * 32, "transactions": (), "withdrawals": (),
    }
    fields.update(changes)
    return ExecutionPayload(**fields)  # type: ignore[arg-type]


GENESIS = ConsensusBlock(
    bytes(32), 0, payload(0, bytes(32)),
    AuxPowHeader(bytes(32), bytes(32), 0x1E25CDF2, 121212, 0, None, DEAD),
)
FULL = ConsensusBlock(
    parent_hash=bytes([0xAB]) * 32,
    slot=851_000_123,
    execution_payload=payload(
        7, bytes([6]) * 32, gas_used=21000, extra_data=b"alys", base_fee_per_gas=2**200 + 5,
        transactions=(b"\x02\xf8tx-one", b""),
        withdrawals=(Withdrawal(0, 0, bytes([0x11]) * 20, 10**9),
                     Withdrawal(3, 4, bytes([0x22]) * 20, 2**64 - 1)),
    ),
    auxpow_header=AuxPowHeader(bytes([1]) * 32, bytes([2]) * 32, 0x207FFFFF, 121212, 6,
                               b"\x01\x02\x03proof", bytes([0x33]) * 20),
    pegins=((bytes([0x44]) * 32, bytes([0x55]) * 32),),
    pegout_payment_proposal=b"\x02\x00unsigned-tx",
    finalized_pegouts=(b"signed-1", b"signed-2"),
)
KEY = bls.SecretKey.from_seed(bytes([7]) * 32)

# Golden vectors. A change to any of these is a hard fork: a new encoding VERSION.
GENESIS_HASH = "113380a117883c54b831b1e1bee23a2c609abd3779f355c440c659075b1d8c04"
GENESIS_SIGNING_ROOT = "cbf39f725a00f06ce90f02914d36065251e38c5802b79512cbddc109e5fd53fd"
FULL_HASH = "c46eb7bce7b1886e2a043f415d3746ae122edb31a45a9f84e14aa0475d02897e"
FULL_SIGNING_ROOT = "80a9bfcddac71c4dbd93f2e85ed450538ef805f246f6a55b0a69981c9886111a"
FULL_SIGNATURE = (
    "8cc6ff3632cfe8abddc3dc2e4b215f94c49218f41cd304b8578c79e04c3e9b024ac93651dfeb8f2d87256ce745"
    "1079d916ade2eecdf9c1bfcad945b006b9e9a3c369768a0b48c4bd49b1cbba79725eb8cb58b13fedb0ac7d9222"
    "1f296cf59dcb"
)
FULL_SIGNED_DOCUMENT_SHA256 = "f24eaf226bda86044341b97510fc73469a6882bea748a10b7e2c6376f281ba96"


def test_golden_block_hashes_and_signing_roots() -> None:
    assert GENESIS.hash().hex() == GENESIS_HASH
    assert GENESIS.signing_root().hex() == GENESIS_SIGNING_ROOT
    assert FULL.hash().hex() == FULL_HASH
    assert FULL.signing_root().hex() == FULL_SIGNING_ROOT


def test_golden_signed_block() -> None:
    signed = rules.sign_block(FULL, KEY, 2)
    assert signed.signature.bitfield == 0b100
    assert signed.signature.signature.hex() == FULL_SIGNATURE
    document = encoding.encode_signed_block(signed)
    assert hashlib.sha256(document).hexdigest() == FULL_SIGNED_DOCUMENT_SHA256
    assert encoding.decode_signed_block(document) == signed


def _spec_bytes(block: ConsensusBlock) -> bytes:
    """The block's kind-0x01 document written out by hand from the module's table."""

    def var(b: bytes) -> bytes:
        return struct.pack(">I", len(b)) + b

    p = block.execution_payload
    out = bytes([0x01, 0x01]) + block.parent_hash + struct.pack(">Q", block.slot)
    out += (p.parent_hash + p.fee_recipient + p.state_root + p.receipts_root + p.logs_bloom
            + p.prev_randao + struct.pack(">QQQQ", p.block_number, p.gas_limit, p.gas_used,
                                          p.timestamp)
            + var(p.extra_data) + p.base_fee_per_gas.to_bytes(32, "big") + p.block_hash)
    out += struct.pack(">I", len(p.transactions)) + b"".join(var(t) for t in p.transactions)
    out += struct.pack(">I", len(p.withdrawals)) + b"".join(
        struct.pack(">QQ", w.index, w.validator_index) + w.address + struct.pack(">Q", w.amount)
        for w in p.withdrawals)
    h = block.auxpow_header
    if h is None:
        out += b"\x00"
    else:
        out += (b"\x01" + h.range_start + h.range_end + struct.pack(">IIQ", h.bits, h.chain_id,
                                                                    h.height)
                + (b"\x00" if h.auxpow is None else b"\x01" + var(h.auxpow)) + h.fee_recipient)
    out += struct.pack(">I", len(block.pegins)) + b"".join(a + b for a, b in block.pegins)
    proposal = block.pegout_payment_proposal
    out += b"\x00" if proposal is None else b"\x01" + var(proposal)
    out += struct.pack(">I", len(block.finalized_pegouts)) + b"".join(
        var(t) for t in block.finalized_pegouts)
    return out


@pytest.mark.parametrize("block", [GENESIS, FULL, attrs.evolve(FULL, auxpow_header=None)])
def test_the_bytes_are_the_documented_layout(block: ConsensusBlock) -> None:
    assert encoding.encode_block(block) == _spec_bytes(block)
    assert block.hash() == hashlib.sha256(_spec_bytes(block)).digest()
    assert block.signing_root() == hashlib.sha256(encoding.SIGNING_DOMAIN + block.hash()).digest()


def test_no_python_name_is_in_the_bytes() -> None:
    document = encoding.encode_signed_block(rules.sign_block(FULL, KEY, 2))
    for name in ("parent_hash", "slot", "auxpow", "pegins", "ConsensusBlock", "alys.",
                 "execution_payload", "withdrawals", "signature", "bitfield"):
        assert name.encode() not in document


def test_every_field_counts() -> None:
    """Changing any one field of a block changes its hash."""
    header = FULL.auxpow_header
    assert header is not None
    variants = [
        attrs.evolve(FULL, parent_hash=bytes(32)), attrs.evolve(FULL, slot=FULL.slot + 1),
        attrs.evolve(FULL, auxpow_header=None),
        attrs.evolve(FULL, auxpow_header=attrs.evolve(header, height=7)),
        attrs.evolve(FULL, auxpow_header=attrs.evolve(header, auxpow=None)),
        attrs.evolve(FULL, auxpow_header=attrs.evolve(header, auxpow=b"")),
        attrs.evolve(FULL, pegins=()), attrs.evolve(FULL, pegout_payment_proposal=None),
        attrs.evolve(FULL, pegout_payment_proposal=b""),
        attrs.evolve(FULL, finalized_pegouts=(b"signed-1",)),
        attrs.evolve(FULL, execution_payload=attrs.evolve(FULL.execution_payload, gas_used=1)),
        attrs.evolve(FULL, execution_payload=attrs.evolve(FULL.execution_payload,
                                                          transactions=(b"\x02\xf8tx-one",))),
    ]
    hashes = {v.hash() for v in variants} | {FULL.hash()}
    assert len(hashes) == len(variants) + 1


def test_the_hash_is_computed_once() -> None:
    block = attrs.evolve(FULL, slot=5)
    assert block.hash() is block.hash()
    assert attrs.evolve(block, slot=6).hash() != block.hash()


# -- decoding ---------------------------------------------------------------------------------


def _signed(block: ConsensusBlock) -> SignedConsensusBlock:
    return SignedConsensusBlock(block, AggregateApproval(0b101, bytes([0xC0]) + bytes(95)))


hashes = st.binary(min_size=32, max_size=32)
blobs = st.binary(max_size=40)
u64 = st.integers(0, 2**64 - 1)
withdrawals = st.builds(Withdrawal, u64, u64, st.binary(min_size=20, max_size=20), u64)
payloads = st.builds(
    ExecutionPayload, hashes, st.binary(min_size=20, max_size=20), hashes, hashes,
    st.binary(min_size=256, max_size=256), hashes, u64, u64, u64, u64,
    st.binary(max_size=32), st.integers(0, 2**256 - 1), hashes,
    st.lists(blobs, max_size=3).map(tuple), st.lists(withdrawals, max_size=3).map(tuple),
)
headers = st.builds(AuxPowHeader, hashes, hashes, st.integers(0, 2**32 - 1),
                    st.integers(0, 2**32 - 1), u64, st.none() | blobs,
                    st.binary(min_size=20, max_size=20))
blocks = st.builds(ConsensusBlock, hashes, u64, payloads, st.none() | headers,
                   st.lists(st.tuples(hashes, hashes), max_size=2).map(tuple),
                   st.none() | blobs, st.lists(blobs, max_size=2).map(tuple))


@settings(max_examples=150, deadline=None)
@given(blocks, st.integers(0, 2**15 - 1))
def test_round_trip(block: ConsensusBlock, bitfield: int) -> None:
    signed = SignedConsensusBlock(block, AggregateApproval(bitfield, bytes(range(96))))
    raw = encoding.encode_signed_block(signed)
    assert raw == encoding.write_signed_block(signed)
    decoded = encoding.decode_signed_block(raw)
    assert decoded == signed
    _check_remembered(decoded, raw)
    assert encoding.decode_signed_block(bytearray(raw)).hash() == block.hash()
    assert encoding.decode_block(encoding.encode_block(block)) == block
    assert block.auxpow_header is None or encoding.decode_auxpow_header(
        encoding.encode_auxpow_header(block.auxpow_header)) == block.auxpow_header
    assert encoding.encode_block(block) == _spec_bytes(block)


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_damaged_documents_fail_cleanly_or_decode_to_something_valid(data: st.DataObject) -> None:
    document = bytearray(encoding.encode_signed_block(_signed(FULL)))
    position = data.draw(st.integers(0, len(document) - 1))
    document[position] ^= data.draw(st.integers(1, 255))
    cut = data.draw(st.integers(0, len(document)))
    for raw in (bytes(document), bytes(document[:cut])):
        try:
            decoded = encoding.decode_signed_block(raw)
        except encoding.DecodeError as exc:
            assert exc.path and exc.problem
        else:  # what decodes re-encodes to the same bytes (there is one encoding per value)
            _check_remembered(decoded, raw)


def _check_remembered(decoded: SignedConsensusBlock, raw: bytes) -> None:
    """A decoded block keeps the bytes it came from as its encoding and their hash as its
    hash: both must be what writing the value afresh gives (else a peer's bytes could give a
    block a hash other nodes do not compute)."""
    assert encoding.write_signed_block(decoded) == raw
    assert decoded.encoded() is not None and decoded.encoded() == raw
    fresh = attrs.evolve(decoded.message)  # a copy, its hash not yet computed
    assert decoded.hash() == encoding.block_hash(fresh) == fresh.hash()
    assert decoded.signing_root() == encoding.signing_root(encoding.block_hash(fresh))


def test_decode_errors_name_the_field() -> None:
    good = encoding.encode_signed_block(_signed(FULL))
    with pytest.raises(encoding.DecodeError, match="trailing bytes"):
        encoding.decode_signed_block(good + b"\x00")
    with pytest.raises(encoding.DecodeError, match=r"signature\.signature: needs 96 bytes"):
        encoding.decode_signed_block(good[:-1])
    with pytest.raises(encoding.DecodeError, match="document kind 0x01, expected 0x02"):
        encoding.decode_signed_block(encoding.encode_block(FULL))
    with pytest.raises(encoding.DecodeError, match="encoding version 9, this node reads 1"):
        encoding.decode_signed_block(bytes([0x02, 9]) + good[2:])
    # the auxpow header's presence flag sits right after the payload
    payload_end = 2 + 32 + 8 + len(encoding.encode_block(
        attrs.evolve(FULL, auxpow_header=None, pegins=(), pegout_payment_proposal=None,
                     finalized_pegouts=()))) - 2 - 32 - 8 - 1 - 4 - 1 - 4
    damaged = bytearray(good)
    damaged[payload_end] = 7
    with pytest.raises(encoding.DecodeError, match=r"block\.auxpow_header: presence flag 7"):
        encoding.decode_signed_block(bytes(damaged))
    # a withdrawal count far larger than the bytes left
    at = good.index(struct.pack(">I", 2) + struct.pack(">QQ", 0, 0))
    damaged = bytearray(good)
    damaged[at:at + 4] = struct.pack(">I", 10**6)
    with pytest.raises(encoding.DecodeError, match=r"withdrawals: 1000000 items cannot fit"):
        encoding.decode_signed_block(bytes(damaged))
    # truncated inside the fixed-width head (read field by field: the short one is named),
    # inside the transactions' lengths, and inside a transaction's bytes
    with pytest.raises(encoding.DecodeError,
                       match=r"block\.execution_payload\.logs_bloom: needs 256 bytes"):
        encoding.decode_signed_block(good[:2 + 32 + 8 + 32 + 20 + 32 + 32 + 10])
    txs = FULL.execution_payload.transactions
    assert len(txs) >= 2 and len(txs[0]) > 1
    first = good.index(struct.pack(">I", len(txs[0])) + txs[0])
    with pytest.raises(encoding.DecodeError,
                       match=rf"transactions\[0\]: needs {len(txs[0])} bytes, 4 left"):
        encoding.decode_signed_block(good[:first + 8])
    second = first + 4 + len(txs[0])
    with pytest.raises(encoding.DecodeError,
                       match=r"transactions\[1\] \(length\): needs 4 bytes, 2 left"):
        encoding.decode_signed_block(good[:second + 2])
    # a bitfield the type refuses (16 bits on the wire, 15 authorities at most)
    damaged = bytearray(good)
    damaged[-98:-96] = b"\xff\xff"
    with pytest.raises(encoding.DecodeError, match="signature: bitfield must fit 15 bits"):
        encoding.decode_signed_block(bytes(damaged))


def test_values_that_cannot_be_encoded_cannot_be_made() -> None:
    header = FULL.auxpow_header
    assert header is not None
    with pytest.raises(ValueError, match=r"bits must be an integer in 0\.\.2\*\*32-1"):
        attrs.evolve(header, bits=2**32)
    with pytest.raises(ValueError, match="chain_id"):
        attrs.evolve(header, chain_id=-1)
    with pytest.raises(ValueError, match=r"slot must be an integer in 0\.\.2\*\*64-1"):
        attrs.evolve(FULL, slot=2**64)
    with pytest.raises(ValueError, match=r"pegins\[0\]"):
        attrs.evolve(FULL, pegins=((b"short", bytes(32)),))
