"""Hypothesis strategies for frames: valid ones, and hostile bytes of every kind."""

from __future__ import annotations

from typing import Any

import attrs
import cbor2
from hypothesis import strategies as st

from node.network import frames as f
from node.network.gossip import TOPICS
from node.types.chain import BlockRef

u64 = st.integers(0, (1 << 64) - 1)
u32 = st.integers(0, (1 << 32) - 1)
hashes = st.binary(min_size=32, max_size=32)
refs = st.builds(BlockRef, hashes, u64)
statuses = st.builds(f.Status, refs, refs)
texts = st.text(max_size=40)
signatures = st.binary(min_size=64, max_size=64)

frames: st.SearchStrategy[f.Frame] = st.one_of(
    st.builds(f.Hello, st.integers(0, 65535), u32, hashes, statuses, hashes, hashes),
    st.builds(f.Auth, signatures),
    st.builds(f.Refuse, texts),
    st.builds(f.Gossip, st.sampled_from(TOPICS), st.binary(max_size=200)),
    st.builds(f.BlocksByRange, u32, u64, st.integers(1, f.MAX_BLOCKS_PER_REQUEST)),
    st.builds(f.BlocksChunk, u32, st.lists(st.binary(max_size=50), max_size=5).map(tuple),
              st.booleans()),
    st.builds(f.StatusRequest, u32),
    st.builds(f.StatusResponse, u32, statuses),
    st.builds(f.GetStateNodes, u32, st.lists(hashes, min_size=1, max_size=8).map(tuple)),
    st.builds(f.StateNodes, u32, st.lists(st.binary(max_size=60), max_size=8).map(tuple)),
    st.builds(f.ErrorResponse, u32, texts),
    st.builds(f.Ping, u64),
    st.builds(f.Pong, u64),
    st.builds(f.Goodbye, texts),
)

#: Any CBOR-able value, a little nested.
cbor_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(1 << 70), 1 << 70) | st.floats()
    | st.text(max_size=8) | st.binary(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner,
                                                               max_size=3),
    max_leaves=8,
)


def wire_of(frame: f.Frame) -> list[Any]:
    """The ``[tag, fields]`` form of ``frame`` as plain CBOR data."""
    return cbor2.loads(f.encode_frame(frame)[1:])  # type: ignore[no-any-return]


def fields_of(frame: f.Frame) -> list[str]:
    return [a.name for a in attrs.fields(type(frame))]


def _same_kind(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b)
    if isinstance(a, int) and isinstance(b, int):
        return True
    return type(a) is type(b)


@st.composite
def wrong_field(draw: st.DrawFn) -> bytes:
    """A valid frame with one field (chosen anywhere, nested fields included) replaced by a
    value of another CBOR type, or an integer past 2^64, or a negative one."""
    frame = draw(frames)
    tag, body = wire_of(frame)
    path: list[Any] = []
    node: Any = body
    while True:
        key = draw(st.sampled_from(sorted(node)))
        path.append(key)
        child = node[key]
        if isinstance(child, dict) and draw(st.booleans()):
            node = child
            continue
        break
    original = node[path[-1]]
    if isinstance(original, int) and not isinstance(original, bool) and draw(st.booleans()):
        replacement = draw(st.sampled_from([1 << 64, (1 << 64) + 1, 1 << 100, -1]))
    else:
        replacement = draw(cbor_values.filter(lambda v: not _same_kind(v, original)))
    node[path[-1]] = replacement
    return bytes((f.PROTOCOL_VERSION,)) + cbor2.dumps([tag, body])


@st.composite
def truncated(draw: st.DrawFn) -> bytes:
    data = f.encode_frame(draw(frames))
    return data[:draw(st.integers(0, len(data) - 1))]


def nested(depth: int) -> bytes:
    return bytes((f.PROTOCOL_VERSION,)) + b"\x81" * depth + b"\x00"


hostile = st.one_of(
    truncated(),
    wrong_field(),
    st.binary(max_size=300),
    st.binary(max_size=300).map(lambda b: bytes((f.PROTOCOL_VERSION,)) + b),
    st.integers(129, 2000).map(nested),
    st.builds(lambda fr, v: bytes((v,)) + f.encode_frame(fr)[1:], frames,
              st.integers(0, 255).filter(lambda v: v != f.PROTOCOL_VERSION)),
    cbor_values.map(lambda v: bytes((f.PROTOCOL_VERSION,)) + cbor2.dumps(v)),
)
