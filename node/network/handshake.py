"""The handshake: both sides send :class:`~node.network.frames.Hello` at once, then read the
other's; then both send :class:`~node.network.frames.Auth`, a signature of the other's nonce
by the key their hello names (:mod:`node.network.identity`), and check the other's; all
within ``handshake_timeout``. The node id a peer is known by is derived from that key.

A peer is refused, with a :class:`~node.network.frames.Refuse` frame naming the reason
(sent to it, and logged on both sides), when its hello says another protocol version,
another chain id or another genesis block (:func:`check_hello`), or when the node will not
take it on (itself, already connected, banned, too many peers:
:func:`node.workflows.peers.admit`). A first frame that is not a hello is a protocol
violation. Head and finalized block are not checked: they are what sync is for.
"""

from __future__ import annotations

import secrets

from .frames import PROTOCOL_VERSION, Auth, Hello, Status
from .identity import NodeKey, handshake_digest, verify_handshake

__all__ = ["auth_for", "check_auth", "check_hello", "hello_for"]


def hello_for(key: NodeKey, chain_id: int, genesis_hash: bytes, status: Status) -> Hello:
    """This node's hello, with a fresh nonce."""
    return Hello(PROTOCOL_VERSION, chain_id, genesis_hash, status, key.public_key,
                 secrets.token_bytes(32))


def auth_for(key: NodeKey, ours: Hello, theirs: Hello) -> Auth:
    """The :class:`Auth` answering the peer's hello ``theirs``: ``key`` signs its nonce."""
    return Auth(key.sign(handshake_digest(ours.chain_id, ours.genesis_hash, theirs.nonce,
                                          key.public_key)))


def check_auth(ours: Hello, theirs: Hello, auth: Auth) -> str | None:
    """Why ``auth`` does not prove the key of the peer's hello ``theirs``, or None."""
    digest = handshake_digest(ours.chain_id, ours.genesis_hash, ours.nonce, theirs.node_key)
    if verify_handshake(theirs.node_key, auth.signature, digest):
        return None
    return "its handshake signature does not prove the key its hello names"


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
