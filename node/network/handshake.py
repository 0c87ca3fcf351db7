"""The handshake: both sides send :class:`~node.network.frames.Hello` at once, then read the
other's, within ``handshake_timeout``.

A peer is refused, with a :class:`~node.network.frames.Refuse` frame naming the reason
(sent to it, and logged on both sides), when its hello says another protocol version,
another chain id or another genesis block (:func:`check_hello`), or when the node will not
take it on (itself, already connected, banned, too many peers:
:func:`node.workflows.peers.admit`). A first frame that is not a hello is a protocol
violation. Head and finalized block are not checked: they are what sync is for.
"""

from __future__ import annotations

from .frames import PROTOCOL_VERSION, Hello

__all__ = ["check_hello"]


def check_hello(ours: Hello, theirs: Hello) -> str | None:
    """Why a peer saying ``theirs`` cannot talk to a node saying ``ours``, or None."""
    if theirs.protocol_version != PROTOCOL_VERSION:
        return (f"protocol version {theirs.protocol_version}, this node speaks "
                f"{PROTOCOL_VERSION}")
    if theirs.chain_id != ours.chain_id:
        return f"chain id {theirs.chain_id}, this node's is {ours.chain_id}"
    if theirs.genesis_hash != ours.genesis_hash:
        return (f"genesis {theirs.genesis_hash.hex()[:16]}, this node's is "
                f"{ours.genesis_hash.hex()[:16]}")
    return None
