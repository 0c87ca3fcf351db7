"""Frames: what two peers send each other, versioned and encoded with ``otp.codec``.

A frame on the wire is one WebSocket (or in-memory) message:

* byte 0: the protocol version, :data:`PROTOCOL_VERSION`;
* the rest: one frame message in ``otp.codec``'s canonical CBOR, tagged (``alys.net.*``
  tags, fixed here, so renaming a class changes nothing on the wire).

A frame is at most ``max_bytes`` long (1 MiB by default, :data:`MAX_FRAME_BYTES`): a larger
one is refused with :class:`FrameTooLarge` and the connection is closed. Decoding is strict
and every problem raises :class:`FrameError` naming what was wrong and where: an empty
frame, another version, malformed or truncated CBOR, an unknown tag, a missing or extra
field, a value of the wrong type or out of range (heights are ``u64``, request ids ``u32``,
``count`` 1..1024, hashes 32 bytes, text at most 256 characters, 1..384 state hashes per
request), nesting deeper than the codec allows. Gossip payloads are checked separately, by
topic (:mod:`node.network.gossip`).

Frames, by purpose:

=================  ==============================================================
handshake          :class:`Hello`, then :class:`Auth` (proof of the hello's key:
                   :mod:`node.network.identity`); :class:`Refuse`
gossip             :class:`Gossip` (``topic``, payload bytes)
request/response   :class:`BlocksByRange` -> :class:`BlocksChunk` ... (``last``);
                   :class:`StatusRequest` -> :class:`StatusResponse`;
                   :class:`GetStateNodes` -> :class:`StateNodes` (snap sync);
                   :class:`ErrorResponse` for any request
liveness, leaving  :class:`Ping` -> :class:`Pong`; :class:`Goodbye`
=================  ==============================================================
"""

from __future__ import annotations

from typing import Any, Final

import attrs

from otp import codec

from ..types.chain import BlockRef
from .errors import FrameError, FrameTooLarge
from .identity import node_id_of

__all__ = [
    "MAX_BLOCKS_PER_REQUEST",
    "MAX_FRAME_BYTES",
    "PROTOCOL_VERSION",
    "TOPICS",
    "BlocksByRange",
    "BlocksChunk",
    "Auth",
    "ErrorResponse",
    "Frame",
    "GetStateNodes",
    "MAX_STATE_HASHES",
    "StateNodes",
    "Goodbye",
    "Gossip",
    "Hello",
    "Ping",
    "Pong",
    "Refuse",
    "Status",
    "StatusRequest",
    "StatusResponse",
    "decode_frame",
    "encode_frame",
    "state_hashes",
]

#: The version byte every frame starts with; a peer speaking another is refused. Version 2:
#: node ids are derived from a key the peer proves it holds (:class:`Auth`).
PROTOCOL_VERSION: Final = 2
#: The largest frame a node sends or accepts (the original's response chunk limit).
MAX_FRAME_BYTES: Final = 1 << 20
#: The most blocks one ``blocks_by_range`` request may ask for (as the original).
MAX_BLOCKS_PER_REQUEST: Final = 1024
#: The most hashes one ``GetStateNodes`` request may ask for (an answer of trie nodes, each
#: at most ~600 bytes, stays far under a frame; the server also bounds it in bytes).
MAX_STATE_HASHES: Final = 384
#: The gossip topics, the original's names.
TOPICS: Final = ("consensus_block", "approve_block", "queue_pow", "pegout_signatures")
#: The longest text field (reasons, node ids).
MAX_TEXT: Final = 256


def _uint(bits: int) -> Any:
    def check(_inst: Any, attribute: Any, value: Any) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 1 << bits:
            raise ValueError(f"{attribute.name} must be an integer in 0..2**{bits}-1, "
                             f"not {value!r:.40}")

    return check


def _count(_inst: Any, attribute: Any, value: Any) -> None:
    if (isinstance(value, bool) or not isinstance(value, int)
            or not 1 <= value <= MAX_BLOCKS_PER_REQUEST):
        raise ValueError(f"{attribute.name} must be in 1..{MAX_BLOCKS_PER_REQUEST}, "
                         f"not {value!r:.40}")


def _text(_inst: Any, attribute: Any, value: Any) -> None:
    if not isinstance(value, str) or len(value) > MAX_TEXT:
        raise ValueError(f"{attribute.name} must be text of at most {MAX_TEXT} characters")


def _hash32(_inst: Any, attribute: Any, value: Any) -> None:
    if not isinstance(value, bytes) or len(value) != 32:
        raise ValueError(f"{attribute.name} must be 32 bytes, not {value!r:.80}")


def _bytes_of(size: int) -> Any:
    def check(_inst: Any, attribute: Any, value: Any) -> None:
        if not isinstance(value, bytes) or len(value) != size:
            raise ValueError(f"{attribute.name} must be {size} bytes, not {value!r:.80}")

    return check


def _topic(_inst: Any, attribute: Any, value: Any) -> None:
    if value not in TOPICS:
        raise ValueError(f"{attribute.name} must be one of {', '.join(TOPICS)}, "
                         f"not {value!r:.80}")


def _blocks(_inst: Any, attribute: Any, value: Any) -> None:
    if not isinstance(value, tuple) or len(value) > MAX_BLOCKS_PER_REQUEST:
        raise ValueError(f"{attribute.name} must hold at most {MAX_BLOCKS_PER_REQUEST} blocks")
    for i, item in enumerate(value):
        if not isinstance(item, bytes):
            raise ValueError(f"{attribute.name}[{i}] must be bytes, not "
                             f"{type(item).__name__}")


def state_hashes(_inst: Any, attribute: Any, value: Any) -> None:
    """Validator: a tuple of 1..MAX_STATE_HASHES hashes of 32 bytes (the frames' and the
    NetworkActor's ``RequestStateNodes``)."""
    if not isinstance(value, tuple) or not 1 <= len(value) <= MAX_STATE_HASHES:
        raise ValueError(f"{attribute.name} must hold 1..{MAX_STATE_HASHES} hashes")
    for i, item in enumerate(value):
        if not isinstance(item, bytes) or len(item) != 32:
            raise ValueError(f"{attribute.name}[{i}] must be 32 bytes, not {item!r:.80}")


def _values(_inst: Any, attribute: Any, value: Any) -> None:
    if not isinstance(value, tuple) or len(value) > MAX_STATE_HASHES:
        raise ValueError(f"{attribute.name} must hold at most {MAX_STATE_HASHES} values")
    for i, item in enumerate(value):
        if not isinstance(item, bytes):
            raise ValueError(f"{attribute.name}[{i}] must be bytes, not "
                             f"{type(item).__name__}")


@codec.register(tag="alys.net.Status")
@attrs.frozen
class Status:
    """A node's chain as it tells its peers: its head and its last finalized block."""

    head: BlockRef = attrs.field(validator=attrs.validators.instance_of(BlockRef))
    finalized: BlockRef = attrs.field(validator=attrs.validators.instance_of(BlockRef))


@codec.register(tag="alys.net.Hello")
@attrs.frozen
class Hello:
    """The first frame each side sends. Peers on another chain id, genesis or protocol
    version are refused (:func:`node.network.handshake.check_hello`). ``node_key`` is the
    sender's x-only public key (its node id is derived from it), ``nonce`` 32 fresh random
    bytes the other side must sign in its :class:`Auth`."""

    protocol_version: int = attrs.field(validator=_uint(16))
    chain_id: int = attrs.field(validator=_uint(32))
    genesis_hash: bytes = attrs.field(validator=_hash32)
    status: Status = attrs.field(validator=attrs.validators.instance_of(Status))
    node_key: bytes = attrs.field(validator=_bytes_of(32))
    nonce: bytes = attrs.field(validator=_bytes_of(32))

    @property
    def node_id(self) -> str:
        """The sender's node id, derived from its key (proven only once :class:`Auth`
        verifies)."""
        return node_id_of(self.node_key)


@codec.register(tag="alys.net.Auth")
@attrs.frozen
class Auth:
    """The second handshake frame: the sender's BIP340 signature over
    :func:`~node.network.identity.handshake_digest` of the receiver's nonce, proving it holds
    the key its hello named."""

    signature: bytes = attrs.field(validator=_bytes_of(64))


@codec.register(tag="alys.net.Refuse")
@attrs.frozen
class Refuse:
    """The handshake is refused, for ``reason``; the sender closes the connection."""

    reason: str = attrs.field(validator=_text)


@codec.register(tag="alys.net.Gossip")
@attrs.frozen
class Gossip:
    """A gossiped message: its topic and its payload in that topic's encoding. Its message
    id is computed by each receiver (:func:`node.network.gossip.message_id`), never trusted."""

    topic: str = attrs.field(validator=_topic)
    data: bytes = attrs.field(validator=attrs.validators.instance_of(bytes))


@codec.register(tag="alys.net.BlocksByRange")
@attrs.frozen
class BlocksByRange:
    """Ask for the canonical blocks at heights ``start .. start + count - 1``."""

    request_id: int = attrs.field(validator=_uint(32))
    start: int = attrs.field(validator=_uint(64))
    count: int = attrs.field(validator=_count)


@codec.register(tag="alys.net.BlocksChunk")
@attrs.frozen
class BlocksChunk:
    """Part of the answer to a :class:`BlocksByRange`: signed blocks in the consensus
    encoding, in height order; ``last`` ends the answer (a range the peer does not have in
    full ends early)."""

    request_id: int = attrs.field(validator=_uint(32))
    blocks: tuple[bytes, ...] = attrs.field(validator=_blocks)
    last: bool = attrs.field(validator=attrs.validators.instance_of(bool))


@codec.register(tag="alys.net.GetStateNodes")
@attrs.frozen
class GetStateNodes:
    """Ask for the values stored under ``hashes`` (1..384): state trie nodes and contract
    code, for snap sync (:mod:`node.workflows.state_sync`)."""

    request_id: int = attrs.field(validator=_uint(32))
    hashes: tuple[bytes, ...] = attrs.field(validator=state_hashes)


@codec.register(tag="alys.net.StateNodes")
@attrs.frozen
class StateNodes:
    """The answer to a :class:`GetStateNodes`: position i holds the value of hash i, empty
    when the peer does not have it; the answer may stop early (the rest are missing), to
    stay within the peer's byte bound."""

    request_id: int = attrs.field(validator=_uint(32))
    values: tuple[bytes, ...] = attrs.field(validator=_values)


@codec.register(tag="alys.net.StatusRequest")
@attrs.frozen
class StatusRequest:
    request_id: int = attrs.field(validator=_uint(32))


@codec.register(tag="alys.net.StatusResponse")
@attrs.frozen
class StatusResponse:
    request_id: int = attrs.field(validator=_uint(32))
    status: Status = attrs.field(validator=attrs.validators.instance_of(Status))


@codec.register(tag="alys.net.ErrorResponse")
@attrs.frozen
class ErrorResponse:
    """A request the peer will not answer (busy, bad range), and why."""

    request_id: int = attrs.field(validator=_uint(32))
    reason: str = attrs.field(validator=_text)


@codec.register(tag="alys.net.Ping")
@attrs.frozen
class Ping:
    nonce: int = attrs.field(validator=_uint(64))


@codec.register(tag="alys.net.Pong")
@attrs.frozen
class Pong:
    nonce: int = attrs.field(validator=_uint(64))


@codec.register(tag="alys.net.Goodbye")
@attrs.frozen
class Goodbye:
    """The sender is closing the connection, for ``reason``."""

    reason: str = attrs.field(validator=_text)


Frame = (Hello | Auth | Refuse | Gossip | BlocksByRange | BlocksChunk | StatusRequest
         | StatusResponse | GetStateNodes | StateNodes | ErrorResponse | Ping | Pong | Goodbye)

FRAME_TYPES: Final = (Hello, Auth, Refuse, Gossip, BlocksByRange, BlocksChunk, StatusRequest,
                      StatusResponse, GetStateNodes, StateNodes, ErrorResponse, Ping, Pong,
                      Goodbye)

#: Frames that answer a request, by their ``request_id``.
RESPONSES: Final = (BlocksChunk, StatusResponse, StateNodes, ErrorResponse)


def encode_frame(frame: Frame, max_bytes: int = MAX_FRAME_BYTES) -> bytes:
    """The wire bytes of ``frame``; :class:`FrameTooLarge` past ``max_bytes``."""
    data = bytes((PROTOCOL_VERSION,)) + codec.encode(frame)
    if len(data) > max_bytes:
        raise FrameTooLarge(len(data), max_bytes)
    return data


def decode_frame(data: bytes, max_bytes: int = MAX_FRAME_BYTES) -> Frame:
    """The frame in ``data``, or :class:`FrameError` saying what is wrong and where (see
    the module docstring); :class:`FrameTooLarge` past ``max_bytes``."""
    if not isinstance(data, bytes | bytearray):
        raise FrameError("type", "frame", f"expected binary data, got {type(data).__name__}")
    if len(data) > max_bytes:
        raise FrameTooLarge(len(data), max_bytes)
    if not data:
        raise FrameError("size", "frame", "empty")
    if data[0] != PROTOCOL_VERSION:
        raise FrameError("version", "frame[0]", f"protocol version {data[0]}; this node "
                         f"speaks version {PROTOCOL_VERSION}")
    try:
        frame = codec.decode(bytes(data[1:]))
    except codec.CodecError as exc:
        text = str(exc)
        what = "cbor" if "malformed CBOR" in text or "truncated" in text or (
            "trailing" in text) else "field"
        raise FrameError(what, "frame.body", text) from None
    if not isinstance(frame, FRAME_TYPES):
        raise FrameError("type", "frame.body", f"not a frame message: {frame!r:.80}")
    return frame
