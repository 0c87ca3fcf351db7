"""Gossip: the original's topics, their payloads, message ids and the seen-cache.

========================  ===============================================================
topic                     payload (bytes on the wire -> value published on the bus)
========================  ===============================================================
``consensus_block``       a signed block in the consensus encoding -> SignedConsensusBlock
``approve_block``         :class:`ApproveBlock` or a ``Vote`` (prevote, precommit) in
                          ``otp.codec`` -> ApproveBlock | Vote
``queue_pow``             an AuxPoW header document (``encoding``) -> AuxPowHeader
``pegout_signatures``     opaque bytes, defined by the bridge -> bytes
========================  ===============================================================

A message's id is SHA-256 of its topic, a zero byte and its payload bytes, computed by each
node from what it received (a peer cannot make two messages look alike or one look new).
Each node forwards a message it has not seen to its other peers and publishes it on the
bus once; :class:`SeenCache` remembers the last ``capacity`` ids (oldest forgotten first),
so a replay of something older than that is delivered again, and the chain's own checks
(a block already stored, an approval already counted) absorb it.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from typing import Any, Final

import attrs
import cbor2

from otp import codec

from ..types import encoding
from ..types.chain import AuxPowHeader, IndividualApproval, SignedConsensusBlock, Vote
from .errors import FrameError
from .frames import TOPICS

__all__ = [
    "APPROVE_BLOCK",
    "CONSENSUS_BLOCK",
    "PEGOUT_SIGNATURES",
    "QUEUE_POW",
    "TOPICS",
    "ApproveBlock",
    "SeenCache",
    "decode_payload",
    "encode_payload",
    "message_id",
]

CONSENSUS_BLOCK: Final = "consensus_block"
APPROVE_BLOCK: Final = "approve_block"
QUEUE_POW: Final = "queue_pow"
PEGOUT_SIGNATURES: Final = "pegout_signatures"


def _hash32(_inst: Any, attribute: Any, value: Any) -> None:
    if not isinstance(value, bytes) or len(value) != 32:
        raise ValueError(f"{attribute.name} must be 32 bytes, not {value!r:.80}")


@codec.register(tag="alys.net.ApproveBlock")
@attrs.frozen
class ApproveBlock:
    """An authority's approval of the block whose hash is ``block_hash``."""

    block_hash: bytes = attrs.field(validator=_hash32)
    approval: IndividualApproval = attrs.field(
        validator=attrs.validators.instance_of(IndividualApproval))


Payload = SignedConsensusBlock | ApproveBlock | Vote | AuxPowHeader | bytes


def encode_payload(topic: str, payload: Payload) -> bytes:
    """The wire bytes of ``payload`` on ``topic``; TypeError if it is not that topic's type."""
    if topic == CONSENSUS_BLOCK and isinstance(payload, SignedConsensusBlock):
        return encoding.encode_signed_block(payload)
    if topic == APPROVE_BLOCK and isinstance(payload, ApproveBlock | Vote):
        return codec.encode(payload)
    if topic == QUEUE_POW and isinstance(payload, AuxPowHeader):
        return encoding.encode_auxpow_header(payload)
    if topic == PEGOUT_SIGNATURES and isinstance(payload, bytes):
        return payload
    raise TypeError(f"{type(payload).__name__} is not a payload of topic {topic!r}")


def decode_payload(topic: str, data: bytes) -> Payload:
    """The value of a gossiped payload, or :class:`FrameError` naming the topic and where
    decoding stopped."""
    try:
        if topic == CONSENSUS_BLOCK:
            return encoding.decode_signed_block(data)
        if topic == APPROVE_BLOCK:
            return _decode_approve_topic(data)
        if topic == QUEUE_POW:
            return encoding.decode_auxpow_header(data)
        if topic == PEGOUT_SIGNATURES:
            return bytes(data)
    except encoding.DecodeError as exc:
        raise FrameError("payload", f"{topic}.{exc.path}", exc.problem) from None
    except codec.CodecError as exc:
        raise FrameError("payload", topic, str(exc)) from None
    raise FrameError("payload", "frame.body.topic", f"unknown topic {topic!r}")


#: How a tagged vote starts on the wire (``otp.codec``: a CBOR array of the tag and the
#: fields): votes are most of the topic's traffic, decoded as votes at once.
_VOTE_PREFIX: Final = b"\x82" + cbor2.dumps("alys.Vote")


def _decode_approve_topic(data: bytes) -> ApproveBlock | Vote:
    """An approval or a vote: each type is tried strictly (every field validated); the
    error of the first is raised when neither fits. A tagged vote is decoded as a vote
    only (trying an approval first would fail on its tag, at the cost of a full error)."""
    if data.startswith(_VOTE_PREFIX):
        vote: Vote = codec.decode(data, Vote)
        return vote
    try:
        approve: ApproveBlock = codec.decode(data, ApproveBlock)
        return approve
    except codec.CodecError as first:
        try:
            return codec.decode(data, Vote)
        except codec.CodecError:
            raise first from None


def message_id(topic: str, data: bytes) -> bytes:
    return hashlib.sha256(topic.encode() + b"\x00" + data).digest()


class SeenCache:
    """The ids of the last ``capacity`` gossip messages (see the module docstring)."""

    def __init__(self, capacity: int = 16384) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, not {capacity}")
        self.capacity = capacity
        self._ids: OrderedDict[bytes, None] = OrderedDict()

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, message: bytes) -> bool:
        return message in self._ids

    def add(self, message: bytes) -> bool:
        """Remember ``message``; True if it is new, False if it was seen already."""
        if message in self._ids:
            self._ids.move_to_end(message)
            return False
        self._ids[message] = None
        if len(self._ids) > self.capacity:
            self._ids.popitem(last=False)
        return True


assert set(TOPICS) == {CONSENSUS_BLOCK, APPROVE_BLOCK, QUEUE_POW, PEGOUT_SIGNATURES}
