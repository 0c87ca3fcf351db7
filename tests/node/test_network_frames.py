"""Frames: round trips, and every hostile byte string refused with a FrameError that says
what and where (never another exception)."""

from __future__ import annotations

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from node.network import frames as f
from node.network.errors import FrameError, FrameTooLarge
from node.network.gossip import (
    ApproveBlock,
    SeenCache,
    decode_payload,
    encode_payload,
    message_id,
)
from node.types.chain import IndividualApproval, Vote

from .factories import chain
from .network_strategies import frames, hostile, nested, truncated, wrong_field

#: The version byte that starts every frame of this protocol.
V = bytes((f.PROTOCOL_VERSION,))

@given(frames)
def test_every_frame_round_trips(frame: f.Frame) -> None:
    data = f.encode_frame(frame)
    assert data[0] == f.PROTOCOL_VERSION
    assert f.decode_frame(data) == frame


@settings(max_examples=400)
@given(hostile)
def test_hostile_bytes_are_refused_with_a_frame_error(data: bytes) -> None:
    try:
        frame = f.decode_frame(data)
    except FrameError as exc:
        assert exc.what and exc.where and str(exc).startswith(f"bad frame ({exc.what}) at ")
    else:  # random bytes may, very rarely, be a valid frame: then it is one
        assert isinstance(frame, f.FRAME_TYPES)


@given(truncated())
def test_a_truncated_frame_is_refused(data: bytes) -> None:
    with pytest.raises(FrameError):
        f.decode_frame(data)


@settings(max_examples=300)
@given(wrong_field())
def test_a_wrong_type_at_any_position_is_refused(data: bytes) -> None:
    with pytest.raises(FrameError) as info:
        f.decode_frame(data)
    assert info.value.what in ("field", "type")


def test_errors_name_the_field() -> None:
    tagged = ["alys.net.BlocksByRange", {"request_id": 1, "start": 1 << 64, "count": 1}]
    with pytest.raises(FrameError, match=r"start must be an integer in 0\.\.2\*\*64-1"):
        f.decode_frame(V + cbor2.dumps(tagged))
    tagged = ["alys.net.BlocksByRange", {"request_id": 1, "start": 0, "count": 1025}]
    with pytest.raises(FrameError, match=r"count must be in 1\.\.1024"):
        f.decode_frame(V + cbor2.dumps(tagged))
    tagged = ["alys.net.StatusResponse", {"request_id": 1, "status": {"head": 5}}]
    with pytest.raises(FrameError, match=r"\$\.status"):
        f.decode_frame(V + cbor2.dumps(tagged))
    with pytest.raises(FrameError, match=f"protocol version {f.PROTOCOL_VERSION + 1}"):
        f.decode_frame(bytes((f.PROTOCOL_VERSION + 1,)) + f.encode_frame(f.Ping(1))[1:])
    with pytest.raises(FrameError, match="empty"):
        f.decode_frame(b"")
    with pytest.raises(FrameError, match="not a frame message"):
        f.decode_frame(V + cbor2.dumps(["alys.BlockRef", {"hash": bytes(32),
                                                                "height": 1}]))


def test_deep_nesting_is_refused() -> None:
    with pytest.raises(FrameError, match="cbor"):
        f.decode_frame(nested(10_000))


def test_frames_over_the_limit_are_refused_both_ways() -> None:
    with pytest.raises(FrameTooLarge):
        f.decode_frame(V + bytes(f.MAX_FRAME_BYTES))
    with pytest.raises(FrameTooLarge):
        f.encode_frame(f.Gossip("pegout_signatures", bytes(f.MAX_FRAME_BYTES)))
    small = f.encode_frame(f.Ping(1))
    with pytest.raises(FrameTooLarge):
        f.decode_frame(small, max_bytes=len(small) - 1)


def test_gossip_payloads_round_trip_and_bad_ones_name_the_field() -> None:
    block = chain(3)[2]
    approval = ApproveBlock(block.hash(), IndividualApproval(bytes(96), 2))
    header = chain(1)[0].message.auxpow_header
    assert header is not None
    for topic, payload in (("consensus_block", block), ("approve_block", approval),
                           ("queue_pow", header), ("pegout_signatures", b"sigs")):
        assert decode_payload(topic, encode_payload(topic, payload)) == payload
    with pytest.raises(TypeError):
        encode_payload("consensus_block", approval)
    with pytest.raises(FrameError, match="consensus_block"):
        decode_payload("consensus_block", encode_payload("consensus_block", block)[:-5])
    with pytest.raises(FrameError, match="approve_block"):
        decode_payload("approve_block", b"\x00")
    # Votes share the approvals' topic; a tagged vote is decoded as a vote only, and a
    # damaged one is refused naming the topic.
    vote = Vote(1, 3, 7, block.hash(), 2, bytes(96))
    wire = encode_payload("approve_block", vote)
    assert decode_payload("approve_block", wire) == vote
    for bad in (wire[:-1], wire[:12], wire.replace(bytes(96), bytes(95) + b"\x01\x02")):
        with pytest.raises(FrameError, match="approve_block"):
            decode_payload("approve_block", bad)


@given(st.lists(st.binary(max_size=4), max_size=200), st.integers(1, 20))
def test_the_seen_cache_remembers_the_last_ids_only(items: list[bytes], capacity: int) -> None:
    cache = SeenCache(capacity)
    for item in items:
        fresh = cache.add(message_id("queue_pow", item))
        assert not fresh or len(cache) <= capacity
    assert len(cache) <= capacity
    if items:
        assert message_id("queue_pow", items[-1]) in cache
        assert not cache.add(message_id("queue_pow", items[-1]))


def _state_wire(kind: str, items: list[object]) -> bytes:
    field = "hashes" if kind == "GetStateNodes" else "values"
    return V + cbor2.dumps(["alys.net." + kind, {"request_id": 1, field: items}])


@settings(max_examples=150)
@given(st.sampled_from(["GetStateNodes", "StateNodes"]),
       st.lists(st.one_of(st.binary(max_size=40), st.integers(-(1 << 70), 1 << 70),
                          st.text(max_size=4), st.none(), st.lists(st.binary(max_size=4))),
                max_size=6),
       st.integers(0, 500))
def test_state_frames_refuse_what_is_not_hashes_or_values_by_field(
        kind: str, items: list[object], extra: int) -> None:
    padded = items + [b"\x00" * 32] * (extra if extra > 380 else 0)
    data = _state_wire(kind, padded)
    try:
        frame = f.decode_frame(data)
    except FrameError as exc:
        assert "hashes" in str(exc) or "values" in str(exc) or "frame" in str(exc)
        return
    if isinstance(frame, f.GetStateNodes):
        assert 1 <= len(frame.hashes) <= f.MAX_STATE_HASHES
        assert all(isinstance(h, bytes) and len(h) == 32 for h in frame.hashes)
    else:
        assert isinstance(frame, f.StateNodes) and len(frame.values) <= f.MAX_STATE_HASHES
        assert all(isinstance(v, bytes) for v in frame.values)


def test_state_frame_limits_name_the_field() -> None:
    h = b"\x01" * 32
    for items, match in (([], "1..384"), ([h] * 385, "1..384"), ([h[:31]], r"hashes\[0\]"),
                         ([h, "x"], r"hashes\[1\]")):
        with pytest.raises(FrameError, match=match):
            f.decode_frame(_state_wire("GetStateNodes", items))
    with pytest.raises(FrameError, match="at most 384"):
        f.decode_frame(_state_wire("StateNodes", [b""] * 385))
    with pytest.raises(FrameError, match=r"values\[2\]"):
        f.decode_frame(_state_wire("StateNodes", [b"", b"a", 5]))
    # The largest request, and an answer of the byte bound a server keeps to, fit a frame.
    assert len(f.encode_frame(f.GetStateNodes(2**32 - 1, (h,) * 384))) < 14_000
    values = (b"\x00" * 1365,) * 384  # 524,160 bytes of values
    assert len(f.encode_frame(f.StateNodes(1, values))) < f.MAX_FRAME_BYTES
