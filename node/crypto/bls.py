"""BLS12-381 signatures in Ethereum's proof-of-possession scheme: the only door to the binding.

The scheme is the IETF BLS signature draft's ``BLS_SIG_BLS12381G2_XMD:SHA-256_SSWU_RO_POP_``
ciphersuite as Ethereum's consensus layer uses it: 32-byte secret keys, 48-byte public keys
(compressed G1), 96-byte signatures (compressed G2), and the functions ``sign``, ``verify``,
``aggregate``, ``fast_aggregate_verify`` and ``aggregate_verify``. It is conformance-tested
against the official Ethereum vectors (``tests/node/data/bls``).

The binding is ``blspy`` (Chia's Python binding of supranational's audited ``blst``): its
``PopSchemeMPL`` is this scheme, and it was the fastest candidate measured (``python -m bench
bls``) until ``pyblst`` was measured too: composed from blst's curve operations, ``pyblst``
passes every vector with the same checks and verifies about 10% faster. Keys are made and
validated, and messages signed, with blspy; signatures are decoded, aggregated and verified
with pyblst (see below); ``aggregate_verify``, which the node does not use, is still
blspy's. Nothing else in the node imports blspy. Where a binding is more lenient than the
Ethereum rules, this module adds the missing check:

* :meth:`SecretKey.from_bytes` rejects 0 (blspy accepts it and would sign with it:
  infinity);
* :meth:`PublicKey.from_bytes` is the IETF ``KeyValidate``: it rejects the point at infinity,
  so no infinity key can reach ``fast_aggregate_verify`` (which blspy would accept);
* :func:`aggregate` of nothing raises (blspy returns the infinity signature);
* :func:`fast_aggregate_verify` and :func:`aggregate_verify` with no keys are ``False``
  (blspy's ``aggregate_verify([], [], infinity)`` is ``True``);
* every decoded point must re-encode to the bytes it came from (canonical encodings only).

Maintenance caveat: blspy's last release is 2.0.3 (March 2024; Chia itself moved to
``chia_rs``, whose binding has no PoP scheme) and it ships no wheel for CPython 3.13. The
measured fallback is ``py-arkworks-bls12381`` (Ethereum Foundation, current wheels, about half
the speed): ``bench/bls_bench.py``'s ``Arkworks`` adapter builds this scheme from its curve
operations and passes the vectors except non-canonical infinity encodings, which
``_diagnose`` below already rejects. A switch touches this file only.

Verifying runs on ``pyblst`` (blst too): blspy hashes the message inside every call, and an
authority hashes the same few messages again and again (a block's signing root when it
validates the block and checks each approval; a vote digest when it checks the others'
votes). Here the message's hash to G2 is kept in a small
cache *per Trio task* (an actor is one task; outside Trio, per thread): the hash is a
deterministic function of the message, so a hit changes nothing but the time, and nothing is
shared between actors or threads (no lock; several nodes simulated in one process do not
share one another's work). Verifying is two Miller loops and a final exponentiation (blst's
``Verify``), each point decoded once with its subgroup check. Signing stays with blspy: the
secret key never leaves its object and blst signs in constant time (pyblst's scalar
multiplication reduces its scalar with a general-purpose big-integer library, and the key
would sit in a Python int). Batch verification (sync checks thousands of
blocks' approvals at once) lives in :mod:`node.crypto.batch`, over the same encodings, checks
and hash cache.

Malformed bytes raise :class:`BLSError` (a ``ValueError``) saying what was wrong; the verify
functions return ``False`` for a signature that does not verify and never raise for well-formed
(already decoded) inputs.

Keys from a seed follow EIP-2333's ``derive_master_SK`` (= ``HKDF_mod_r``, the KeyGen of the
IETF draft from version 4 on), written here over :mod:`hmac`: blspy's ``key_gen`` implements an
older draft's KeyGen and does not match the EIP-2333 vectors.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import weakref
from collections.abc import Sequence
from typing import Any, Final, final

import blspy
import pyblst
import trio

__all__ = [
    "CURVE_ORDER",
    "DST",
    "PUBLIC_KEY_SIZE",
    "SECRET_KEY_SIZE",
    "SIGNATURE_SIZE",
    "BLSError",
    "Bytes",
    "PublicKey",
    "SecretKey",
    "Signature",
    "aggregate",
    "aggregate_verify",
    "fast_aggregate_verify",
    "sign",
    "verify",
]

#: The ciphersuite's domain separation tag (hash-to-G2 of every signed message).
DST: Final = b"BLS_SIG_BLS12381G2_XMD:SHA-256_SSWU_RO_POP_"
SECRET_KEY_SIZE: Final = 32
PUBLIC_KEY_SIZE: Final = 48
SIGNATURE_SIZE: Final = 96
#: r, the order of G1 and G2: secret keys are integers in [1, r).
CURVE_ORDER: Final = 0x73EDA753299D7D483339D80809A1D80553BDA402FFFE5BFEFFFFFFFF00000001
#: p, the base field modulus: a coordinate must be below it.
_FIELD_MODULUS: Final = int(
    "1a0111ea397fe69a4b1ba7b6434bacd764774b84f38512bf6730d2a0f6b0f624"
    "1eabfffeb153ffffb9feffffffffaaab",
    16,
)
_COMPRESSED, _INFINITY, _SIGN = 0x80, 0x40, 0x20
_SCHEME = blspy.PopSchemeMPL
_P1: Any = pyblst.BlstP1Element
_P2: Any = pyblst.BlstP2Element
#: The generator of G1 (compressed, as the IETF draft gives it).
G1_GENERATOR: Final[Any] = _P1.uncompress(bytes.fromhex(
    "97f1d3a73197d7942695638c4fa9ac0fc3688c4f9774b905a14e3a3f171bac58"
    "6c55e83ff97a1aeffb3af00adb22c6bb"))
#: Messages whose hash each task keeps (a height's signing root and vote digests, a few
#: rounds of them); the oldest is forgotten first.
HASH_CACHE_SIZE: Final = 64


#: Byte strings the functions accept (keys, signatures, seeds and messages alike).
Bytes = bytes | bytearray | memoryview


class BLSError(ValueError):
    """Bytes that are not a valid key or signature, or an operation the scheme forbids."""


def _as_bytes(data: Bytes, what: str) -> bytes:
    if not isinstance(data, bytes | bytearray | memoryview):
        raise TypeError(f"{what} must be bytes, not {type(data).__name__}")
    return bytes(data)


def _diagnose(data: bytes, what: str, group: str, size: int) -> None:
    """Raise :class:`BLSError` for an encoding fault that needs no curve arithmetic."""
    if len(data) != size:
        raise BLSError(f"{what} must be {size} bytes, got {len(data)}")
    flags = data[0]
    if not flags & _COMPRESSED:
        raise BLSError(f"{what} is not a compressed {group} point (top bit not set)")
    if flags & _INFINITY:
        if flags & _SIGN or flags & 0x1F or any(data[1:]):
            raise BLSError(f"{what}: non-canonical encoding of the point at infinity")
        return
    # x (for G2: x's imaginary then real part, 48 bytes each), flags masked off.
    first = int.from_bytes(bytes([flags & 0x1F]) + data[1:48], "big")
    if first >= _FIELD_MODULUS or (
        size == SIGNATURE_SIZE and int.from_bytes(data[48:], "big") >= _FIELD_MODULUS
    ):
        raise BLSError(f"{what}: x coordinate is not below the field modulus")


def _decode_g1(data: bytes, what: str) -> blspy.G1Element:
    _diagnose(data, what, "G1", PUBLIC_KEY_SIZE)
    return _decode(data, what, "G1", blspy.G1Element)


def _decode(data: bytes, what: str, group: str, cls: Any) -> Any:
    try:
        point = cls.from_bytes(data)  # on the curve and in the prime-order subgroup (blst)
    except Exception as exc:
        try:
            cls.from_bytes_unchecked(data)  # decompression alone: is it on the curve?
        except Exception:
            raise BLSError(f"{what}: not a point on the curve") from exc
        raise BLSError(f"{what}: not in the {group} subgroup") from exc
    if bytes(point) != data:
        raise BLSError(f"{what}: non-canonical encoding")
    return point


class _Local(threading.local):
    hashes: dict[bytes, Any] | None = None


#: Each Trio task's cache of message hashes (weakly keyed: it goes with its task).
_TASK_HASHES: weakref.WeakKeyDictionary[Any, dict[bytes, Any]] = weakref.WeakKeyDictionary()
#: Outside Trio, each thread's.
_THREAD_HASHES = _Local()


def hash_to_g2(message: bytes) -> Any:
    """``H(message)``: the message hashed to G2 with :data:`DST` (a ``pyblst`` point), from
    the calling task's cache (see the module docstring) when it was hashed there lately."""
    try:
        task: Any = trio.lowlevel.current_task()
    except RuntimeError:  # not in Trio: a worker thread, or synchronous code
        cache = _THREAD_HASHES.hashes
        if cache is None:
            cache = _THREAD_HASHES.hashes = {}
    else:
        cache = _TASK_HASHES.get(task)
        if cache is None:
            cache = _TASK_HASHES[task] = {}
    point = cache.get(message)
    if point is None:
        point = _P2.hash_to_group(message, DST)
        if len(cache) >= HASH_CACHE_SIZE:
            del cache[next(iter(cache))]
        cache[message] = point
    return point


def decode_signature_point(data: bytes, what: str = "signature") -> Any:
    """The G2 point of a signature encoding (a ``pyblst`` point): on the curve, in the
    subgroup, canonical; :class:`BLSError` saying what is wrong otherwise. The point at
    infinity is a valid encoding here (it verifies against no real key)."""
    _diagnose(data, what, "G2", SIGNATURE_SIZE)
    try:
        point = _P2.uncompress(data)  # on the curve and in the prime-order subgroup (blst)
    except ValueError as exc:
        detail = ("not in the G2 subgroup" if "NOT_IN_GROUP" in str(exc)
                  else "not a point on the curve")
        raise BLSError(f"{what}: {detail}") from None
    if point.compress() != data:
        raise BLSError(f"{what}: non-canonical encoding")
    return point


def pairs_match(key: Any, signature: Any, hashed: Any) -> bool:
    """``e(g1, signature) == e(key, hashed)`` (``pyblst`` points): two Miller loops and one
    final exponentiation."""
    return bool(pyblst.final_verify(pyblst.miller_loop(G1_GENERATOR, signature),
                                    pyblst.miller_loop(key, hashed)))


@final
class SecretKey:
    """A secret scalar in [1, r). ``repr`` never shows it."""

    __slots__ = ("_key",)

    def __init__(self, key: blspy.PrivateKey) -> None:
        """Internal: use :meth:`from_bytes`, :meth:`from_seed` or :meth:`generate`."""
        self._key = key

    @classmethod
    def from_bytes(cls, data: Bytes) -> SecretKey:
        """The 32-byte big-endian encoding, validated: not 0, below the curve order."""
        raw = _as_bytes(data, "secret key")
        if len(raw) != SECRET_KEY_SIZE:
            raise BLSError(f"secret key must be {SECRET_KEY_SIZE} bytes, got {len(raw)}")
        value = int.from_bytes(raw, "big")
        if value == 0:
            raise BLSError("secret key is zero")
        if value >= CURVE_ORDER:
            raise BLSError("secret key is not below the curve order")
        return cls(blspy.PrivateKey.from_bytes(raw))

    @classmethod
    def from_seed(cls, seed: Bytes) -> SecretKey:
        """EIP-2333 ``derive_master_SK(seed)``: ``HKDF_mod_r`` with SHA-256 over a seed of at
        least 32 bytes (the IETF draft's KeyGen with an empty ``key_info``):

        salt = "BLS-SIG-KEYGEN-SALT-"; SK = 0; while SK == 0: salt = SHA256(salt);
        PRK = HKDF-Extract(salt, seed || 0x00); OKM = HKDF-Expand(PRK, I2OSP(48, 2), 48);
        SK = OS2IP(OKM) mod r.
        """
        ikm = _as_bytes(seed, "seed")
        if len(ikm) < 32:
            raise BLSError(f"seed must be at least 32 bytes, got {len(ikm)}")
        salt = b"BLS-SIG-KEYGEN-SALT-"
        value = 0
        while value == 0:
            salt = hashlib.sha256(salt).digest()
            prk = hmac.digest(salt, ikm + b"\x00", "sha256")
            t1 = hmac.digest(prk, b"\x00\x30\x01", "sha256")  # info = I2OSP(48, 2), then T(1)
            t2 = hmac.digest(prk, t1 + b"\x00\x30\x02", "sha256")
            value = int.from_bytes((t1 + t2)[:48], "big") % CURVE_ORDER
        return cls(blspy.PrivateKey.from_bytes(value.to_bytes(SECRET_KEY_SIZE, "big")))

    @classmethod
    def generate(cls) -> SecretKey:
        """A fresh key from 32 bytes of the OS's randomness (through :meth:`from_seed`)."""
        return cls.from_seed(secrets.token_bytes(32))

    def to_bytes(self) -> bytes:
        return bytes(self._key)

    def public_key(self) -> PublicKey:
        return PublicKey(self._key.get_g1())

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SecretKey):
            return NotImplemented
        return hmac.compare_digest(self.to_bytes(), other.to_bytes())

    def __hash__(self) -> int:
        return hash(self.public_key())

    def __repr__(self) -> str:
        return f"SecretKey(<hidden>, public_key={self.public_key().to_bytes().hex()[:16]}…)"


@final
class PublicKey:
    """A validated public key: on the curve, in G1, not the point at infinity."""

    __slots__ = ("_blst", "_bytes", "_point")

    def __init__(self, point: blspy.G1Element, data: bytes | None = None) -> None:
        """Internal: use :meth:`from_bytes` or :meth:`SecretKey.public_key`."""
        self._point = point
        self._bytes = bytes(point) if data is None else data
        self._blst: Any = None

    def blst_point(self) -> Any:
        """The key as a ``pyblst`` point (decoded at the first use, then kept)."""
        point = self._blst
        if point is None:
            point = self._blst = _P1.uncompress(self._bytes)
        return point

    @classmethod
    def from_bytes(cls, data: Bytes) -> PublicKey:
        """Decode 48 bytes and run the IETF ``KeyValidate``; :class:`BLSError` if invalid."""
        raw = _as_bytes(data, "public key")
        point = _decode_g1(raw, "public key")
        if raw[0] & _INFINITY:
            raise BLSError("public key is the point at infinity")
        return cls(point, raw)

    def to_bytes(self) -> bytes:
        return self._bytes

    def __bytes__(self) -> bytes:
        return self._bytes

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, PublicKey):
            return NotImplemented
        return self._bytes == other._bytes

    def __hash__(self) -> int:
        return hash(self._bytes)

    def __repr__(self) -> str:
        return f"PublicKey({self._bytes.hex()})"


@final
class Signature:
    """A decoded signature: a G2 point (the point at infinity is a valid encoding; it verifies
    against nothing)."""

    __slots__ = ("_bytes", "_point")

    def __init__(self, point: Any, data: bytes | None = None) -> None:
        """Internal: use :meth:`from_bytes`, :func:`sign` or :func:`aggregate` (``point`` is
        a ``pyblst`` G2 point, or None with ``data`` a valid encoding, decoded when first
        used: a signature this node made is mostly only sent)."""
        self._point = point
        self._bytes = point.compress() if data is None else data

    def _g2(self) -> Any:
        """The ``pyblst`` point."""
        point = self._point
        if point is None:
            point = self._point = _P2.uncompress(self._bytes)
        return point

    @classmethod
    def from_bytes(cls, data: Bytes) -> Signature:
        """Decode 96 bytes: on the curve, in G2, canonical; :class:`BLSError` if not."""
        raw = _as_bytes(data, "signature")
        return cls(decode_signature_point(raw), raw)

    def to_bytes(self) -> bytes:
        return self._bytes

    def __bytes__(self) -> bytes:
        return self._bytes

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Signature):
            return NotImplemented
        return self._bytes == other._bytes

    def __hash__(self) -> int:
        return hash(self._bytes)

    def __repr__(self) -> str:
        return f"Signature({self._bytes.hex()})"


def sign(sk: SecretKey, message: Bytes) -> Signature:
    """``Sign(SK, message)``: SK times the message hashed to G2 with :data:`DST`, by blspy
    (blst's constant-time signing, the key never leaving blspy's object). Not through
    pyblst's ``scalar_mul``: that reduces its scalar with a general-purpose big-integer
    library, not in constant time, and the key would live in a Python int."""
    raw = bytes(blspy.PopSchemeMPL.sign(sk._key, _as_bytes(message, "message")))
    return Signature(None, raw)  # blst's own encoding: decoded only if it is verified


def verify(pk: PublicKey, message: Bytes, signature: Signature) -> bool:
    """``Verify(PK, message, signature)``."""
    return pairs_match(pk.blst_point(), signature._g2(),
                       hash_to_g2(_as_bytes(message, "message")))


def aggregate(signatures: Sequence[Signature]) -> Signature:
    """``Aggregate``: the sum of the signatures; :class:`BLSError` for none."""
    if not signatures:
        raise BLSError("cannot aggregate zero signatures")
    total = signatures[0]._g2()
    for signature in signatures[1:]:
        total = total + signature._g2()
    return Signature(total)


def aggregate_valid(encodings: Sequence[bytes]) -> bytes:
    """The encoding of the sum of signatures each already known valid (checked when it came
    in, or made here): decoded without the subgroup check, a third of a checked decode's
    cost. Never for bytes from a peer not checked yet: the sum would not be checked either.
    :class:`BLSError` for none, or for bytes that are not a point at all."""
    if not encodings:
        raise BLSError("cannot aggregate zero signatures")
    try:
        total = blspy.G2Element.from_bytes_unchecked(encodings[0])
        for data in encodings[1:]:
            total = total + blspy.G2Element.from_bytes_unchecked(data)
    except (ValueError, RuntimeError) as exc:
        raise BLSError(f"not a signature: {exc}") from None
    return bytes(total)


def fast_aggregate_verify(
    public_keys: Sequence[PublicKey], message: Bytes, signature: Signature
) -> bool:
    """``FastAggregateVerify``: every key signed the same message (``False`` for no keys)."""
    if not public_keys:
        return False
    key = public_keys[0].blst_point()
    for pk in public_keys[1:]:
        key = key + pk.blst_point()
    if key.compress()[0] & 0x40 or signature.to_bytes()[0] & 0x40:
        # Keys that add up to the point at infinity (A and -A) would "verify" the infinity
        # signature over any message: CoreVerify's KeyValidate refuses the aggregate, as
        # blspy did. An infinity signature verifies against no real key either.
        return False
    return pairs_match(key, signature._g2(), hash_to_g2(_as_bytes(message, "message")))


def aggregate_verify(
    public_keys: Sequence[PublicKey], messages: Sequence[Bytes], signature: Signature
) -> bool:
    """``AggregateVerify``: key i signed message i (``False`` for no keys or unequal lengths;
    repeated messages are allowed, as in the PoP scheme)."""
    if not public_keys or len(public_keys) != len(messages):
        return False
    return bool(
        _SCHEME.aggregate_verify(
            [pk._point for pk in public_keys],
            [_as_bytes(m, "message") for m in messages],
            blspy.G2Element.from_bytes_unchecked(signature._bytes),  # checked when decoded
        )
    )
