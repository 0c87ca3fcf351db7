"""A node's identity on the network: a secp256k1 key it proves it holds in every handshake.

A node id used to be whatever a peer said it was, so a liar could take an honest node's id:
be refused as "already connected" in its place, or misbehave under it and get the honest
node banned. Now the id is derived from a key and proven:

* The **node key** is a secp256k1 secret (``<data_dir>/keys/node_key``, 64 hex digits,
  made once with the file readable by its owner only; or ``network.node_key``), as Geth
  keeps its ``nodekey``.
* The **node id** is the first 16 bytes of SHA-256 over a domain tag and the key's x-only
  public key (:func:`node_id_of`), in lowercase hex: 32 digits, the length ids had before.
* In the **handshake** each side sends its public key and a fresh 32-byte nonce in its
  hello, then a BIP340 Schnorr signature (coincurve, libsecp256k1) over
  :func:`handshake_digest`: the domain, the chain id, the genesis hash, the *other side's*
  nonce and its own public key. A signature that does not verify refuses the peer; a
  replayed one cannot verify, because the nonce it answers is new for every connection.

What this does not do: encrypt or bind the frames that follow to the key (a man in the
middle that relays a handshake can still inject frames afterwards). On loopback and in a
federation's private links that is an accepted limit; a noise-style channel is the step
after this one.
"""

from __future__ import annotations

import hashlib
import os
import secrets
from pathlib import Path
from typing import Final

import attrs
import coincurve

from .errors import NetworkError

__all__ = [
    "NODE_ID_BYTES",
    "NodeKey",
    "handshake_digest",
    "load_or_create_node_key",
    "node_id_of",
    "verify_handshake",
]

#: The bytes of a node id (hex: twice as many digits).
NODE_ID_BYTES: Final = 16
_ID_DOMAIN: Final = b"alys/node-id/v1"
_HANDSHAKE_DOMAIN: Final = b"alys/handshake/v2"
#: secp256k1's group order: a secret must be in 1..N-1.
_N: Final = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141


def node_id_of(public_key: bytes) -> str:
    """The node id of an x-only public key (32 bytes)."""
    return hashlib.sha256(_ID_DOMAIN + public_key).digest()[:NODE_ID_BYTES].hex()


def handshake_digest(chain_id: int, genesis_hash: bytes, nonce: bytes,
                     public_key: bytes) -> bytes:
    """What the owner of ``public_key`` signs to answer the ``nonce`` its peer sent."""
    return hashlib.sha256(_HANDSHAKE_DOMAIN + chain_id.to_bytes(4, "big") + genesis_hash
                          + nonce + public_key).digest()


def verify_handshake(public_key: bytes, signature: bytes, digest: bytes) -> bool:
    """Whether ``signature`` is ``public_key``'s BIP340 signature of ``digest``; False for
    a key that is not on the curve or a signature of the wrong length, never an exception."""
    if len(public_key) != 32 or len(signature) != 64 or len(digest) != 32:
        return False
    try:
        return bool(coincurve.PublicKeyXOnly(public_key).verify(signature, digest))
    except (ValueError, TypeError):
        return False


def _check_secret(_inst: object, attribute: attrs.Attribute[bytes], value: bytes) -> None:
    if not isinstance(value, bytes) or len(value) != 32:
        raise ValueError(f"{attribute.name} must be 32 bytes")
    if not 0 < int.from_bytes(value, "big") < _N:
        raise ValueError(f"{attribute.name} is not a valid secp256k1 secret (0 or >= the "
                         "group order)")


@attrs.frozen(repr=False)
class NodeKey:
    """A node's secret key (never printed: the repr shows the node id only)."""

    secret: bytes = attrs.field(validator=_check_secret)
    public_key: bytes = attrs.field(init=False)
    node_id: str = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        public = coincurve.PublicKeyXOnly.from_secret(self.secret).format()
        object.__setattr__(self, "public_key", public)
        object.__setattr__(self, "node_id", node_id_of(public))

    def __repr__(self) -> str:
        return f"NodeKey(node_id={self.node_id})"

    @classmethod
    def generate(cls) -> NodeKey:
        while True:
            secret = secrets.token_bytes(32)
            if 0 < int.from_bytes(secret, "big") < _N:
                return cls(secret)

    @classmethod
    def from_hex(cls, text: str, where: str) -> NodeKey:
        """Parse 64 hex digits; a :class:`ValueError` saying ``where`` otherwise."""
        text = text.strip()
        try:
            secret = bytes.fromhex(text)
            return cls(secret)
        except ValueError as exc:
            raise ValueError(f"{where}: a node key is 64 hex digits of a secp256k1 secret "
                             f"({exc})") from None

    @classmethod
    def derive(cls, label: str) -> NodeKey:
        """A key computed from ``label``: for simulations and tests, whose runs must replay
        exactly. Anyone who knows the label has the key; never use one for a real node."""
        counter = 0
        while True:
            secret = hashlib.sha256(f"alys/derived-node-key/{label}/{counter}".encode()).digest()
            if 0 < int.from_bytes(secret, "big") < _N:
                return cls(secret)
            counter += 1

    def sign(self, digest: bytes) -> bytes:
        """A BIP340 signature of a 32-byte digest."""
        return bytes(coincurve.PrivateKey(self.secret).sign_schnorr(digest))

    def hex(self) -> str:
        """The secret as 64 hex digits (for the key file and ``network.node_key``)."""
        return self.secret.hex()


def load_or_create_node_key(path: Path) -> NodeKey:
    """The node key kept in ``path``, made there (owner-only permissions) the first time."""
    if path.exists():
        try:
            return NodeKey.from_hex(path.read_text(encoding="utf-8"), str(path))
        except ValueError as exc:
            raise NetworkError(str(exc)) from None
    path.parent.mkdir(parents=True, exist_ok=True)
    key = NodeKey.generate()
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(key.hex() + "\n")
    os.replace(tmp, path)
    return key
