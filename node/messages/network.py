"""The NetworkActor's interface: what other actors send it and what it publishes.

The actor is registered as ``network`` (``node/supervision.toml``). Its peers are named by
their node id (lowercase hex), the ``peer`` of every message below.

Inbound gossip
    Each new (not seen before) gossip message that decodes is published once on the bus
    topic :func:`gossip_topic` of its topic (``"network.gossip.consensus_block"`` ...) as
    :class:`GossipReceived`: the topic, the decoded payload (``SignedConsensusBlock``,
    :class:`ApproveBlock`, ``AuxPowHeader`` or ``bytes``: see ``node.network.gossip``), the
    peer it came from and its message id. Messages of the topics in :data:`VALIDATED_TOPICS`
    (blocks and approvals) are forwarded to the other peers only once their validator (the
    ChainActor) found them valid and said so with :class:`Relay`, as gossipsub validates
    before it forwards: a node never passes on a block it would refuse, so its peers never
    blame it for one. Messages of other topics have been forwarded already. Whoever validates
    a message reports a bad one with :class:`ReportPeer`.

Outbound gossip
    ``await otp.cast("network", Publish(topic, payload))``: sent to every peer (and
    remembered as seen, so it is not delivered back). The actor also gossips, by itself,
    each block the ChainActor announces as *produced* on ``chain.blocks``.

Requests
    ``await otp.call("network", RequestBlocks(peer, start, count), timeout=...)`` returns the
    peer's canonical blocks ``start .. start + count - 1`` (fewer if it has fewer; checked to
    be in height order and chained) or a :class:`RequestFailed`; likewise
    :class:`RequestStatus`, and :class:`RequestStateNodes` (snap sync: trie nodes and code
    by hash, each value checked to hash to its hash).
    Give the call a timeout longer than ``network.request_timeout``:
    the actor answers a peer's silence with ``RequestFailed("timeout")`` itself.

Penalties
    ``await otp.cast("network", ReportPeer(peer, Offence.INVALID_BLOCK, "why"))``: the
    peer's score drops; at the threshold it is disconnected and banned for
    ``network.ban_seconds``.

Peer events
    On the bus topic :data:`PEERS_TOPIC`: :class:`PeerConnected` (with the peer's status
    from its hello), :class:`PeerDisconnected`, :class:`PeerBanned`.
"""

from __future__ import annotations

from typing import Any, Final, Literal

import attrs

import otp

from ..network.frames import MAX_BLOCKS_PER_REQUEST, TOPICS, Status, state_hashes
from ..network.gossip import ApproveBlock, Payload
from ..types.chain import SignedConsensusBlock
from ..workflows.peers import Offence

__all__ = [
    "PEERS_TOPIC",
    "TOPICS",
    "ApproveBlock",
    "GetNetworkInfo",
    "GetPeers",
    "GossipReceived",
    "NetworkInfo",
    "Offence",
    "PeerBanned",
    "PeerConnected",
    "PeerDisconnected",
    "PeerInfo",
    "Publish",
    "ReportPeer",
    "RequestBlocks",
    "RequestFailed",
    "RequestStateNodes",
    "RequestStatus",
    "Relay",
    "Status",
    "VALIDATED_TOPICS",
    "gossip_topic",
]

#: The bus topic of peer events.
PEERS_TOPIC: Final = "network.peers"
#: Gossip topics forwarded only after validation (:class:`Relay`).
VALIDATED_TOPICS: Final = frozenset({"consensus_block", "approve_block"})


def gossip_topic(topic: str) -> str:
    """The bus topic inbound gossip of ``topic`` is published on."""
    if topic not in TOPICS:
        raise ValueError(f"unknown gossip topic {topic!r}; topics: {', '.join(TOPICS)}")
    return f"network.gossip.{topic}"


def _topic(_inst: Any, attribute: Any, value: Any) -> None:
    if value not in TOPICS:
        raise ValueError(f"{attribute.name} must be one of {', '.join(TOPICS)}, not {value!r}")


def _u64(_inst: Any, attribute: Any, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 1 << 64:
        raise ValueError(f"{attribute.name} must be an integer in 0..2**64-1, not {value!r:.40}")


def _count(_inst: Any, attribute: Any, value: Any) -> None:
    if (isinstance(value, bool) or not isinstance(value, int)
            or not 1 <= value <= MAX_BLOCKS_PER_REQUEST):
        raise ValueError(f"{attribute.name} must be in 1..{MAX_BLOCKS_PER_REQUEST}, "
                         f"not {value!r:.40}")


@attrs.frozen
class RequestFailed:
    """Why a request to a peer got no answer. ``kind``: ``no_peer`` (not connected),
    ``timeout``, ``disconnected`` (the connection ended first), ``refused`` (the peer
    answered with an error), ``invalid`` (an answer that does not fit the request)."""

    peer: str
    kind: Literal["no_peer", "timeout", "disconnected", "refused", "invalid"]
    detail: str = ""


# -- in ------------------------------------------------------------------------------------------


@attrs.frozen
class Publish:
    """Cast: gossip ``payload`` on ``topic`` to every peer."""

    topic: str = attrs.field(validator=_topic)
    payload: Payload


@attrs.frozen
class Relay:
    """Cast: the gossip ``payload`` on ``topic`` received from ``source`` is valid: forward it
    to every peer but ``source`` (see :data:`VALIDATED_TOPICS`)."""

    topic: str = attrs.field(validator=_topic)
    payload: Payload
    source: str


@attrs.frozen
class RequestBlocks(otp.Request[list[SignedConsensusBlock] | RequestFailed]):
    """Call: ``count`` (1..1024) canonical blocks from ``start`` from ``peer``."""

    peer: str
    start: int = attrs.field(validator=_u64)
    count: int = attrs.field(validator=_count)


@attrs.frozen
class RequestStateNodes(otp.Request["tuple[bytes, ...] | RequestFailed"]):
    """Call: the values ``peer`` stores under ``hashes`` (1..384): state trie nodes and
    code. Replies a tuple, position i for hash i, empty when the peer lacks it (the peer
    may answer fewer than asked, to bound its answer in bytes: the tuple is padded with
    empty values). Every value returned hashes to its hash: an answer with one that does
    not, or with more values than hashes, costs the peer (``BAD_RESPONSE``) and is
    ``RequestFailed("invalid")``."""

    peer: str
    hashes: tuple[bytes, ...] = attrs.field(validator=state_hashes)


@attrs.frozen
class RequestStatus(otp.Request[Status | RequestFailed]):
    """Call: ``peer``'s head and finalized block, asked now."""

    peer: str


@attrs.frozen
class ReportPeer:
    """Cast: ``peer`` did wrong (an invalid block, ...); it loses points, and at the
    threshold it is disconnected and banned."""

    peer: str
    offence: Offence
    detail: str = ""


@attrs.frozen
class GetPeers(otp.Request["list[PeerInfo]"]):
    """Call: the connected peers."""


@attrs.frozen
class GetNetworkInfo(otp.Request["NetworkInfo"]):
    """Call: this node's id, listening address, peers and bans."""


# -- out -----------------------------------------------------------------------------------------


@attrs.frozen
class GossipReceived:
    """Published on :func:`gossip_topic` ``(topic)`` for each new gossip message."""

    topic: str
    payload: Payload
    peer: str
    message_id: bytes


@attrs.frozen
class PeerInfo:
    peer: str
    address: str
    inbound: bool
    status: Status
    score: float


@attrs.frozen
class NetworkInfo:
    node_id: str
    listening: str | None
    peers: tuple[PeerInfo, ...]
    banned: tuple[str, ...]


@attrs.frozen
class PeerConnected:
    """A peer passed the handshake; ``status`` is what its hello said."""

    peer: str
    address: str
    inbound: bool
    status: Status


@attrs.frozen
class PeerDisconnected:
    peer: str
    reason: str


@attrs.frozen
class PeerBanned:
    """``peer`` is banned until ``until`` (Trio clock seconds) for ``offence``."""

    peer: str
    offence: Offence
    until: float
    detail: str = ""
