"""Random-coefficient batch verification of BLS signatures: the only door to ``pyblst``.

A *signature set* is what one ``FastAggregateVerify`` checks: public keys (aggregated), one
message, one signature. Checking n sets one by one costs n hashes to G2, 2n Miller loops and n
final exponentiations. Adding them up unweighted (one ``AggregateVerify`` over the sum of the
signatures) is cheaper but unsound for blame: ``sigma1 + D`` and ``sigma2 - D`` are both
invalid and their sum is valid. So each set i gets a fresh random non-zero 64-bit coefficient
r_i from the OS's CSPRNG (:mod:`secrets`), drawn after the sets are fixed, and the batch holds
when

    e(g1, sum_i r_i * sigma_i) == prod_i e(PK_i, r_i * H(m_i))

where PK_i is the sum of set i's keys. A batch containing an invalid set passes with
probability at most 2^-64 (the attacker would have to guess the coefficients), as in
Lighthouse's use of blst's ``verify_multiple_aggregate_signatures``.

How the right-hand side is evaluated is ours, chosen by measurement (``python -m bench bls``):
the coefficient goes on the hash, ``e(PK_i, r_i H_i)``, and by bilinearity ``prod_i e(PK_i,
r_i H_i) = prod_k e(pk_k, sum_{i: k in set i} r_i H_i)``, so sets that share keys (every block
of a chain is signed by the same few authorities) cost one Miller loop per *distinct key*, not
per set: with 15 authorities a batch of 1,024 blocks needs 16 Miller loops and one final
exponentiation. (With more distinct keys than sets, one Miller loop per set is fewer, and is
what is done; a single set is checked unweighted, exactly as ``FastAggregateVerify``.)
The left-hand sum ``sum_i r_i sigma_i`` is a multi-scalar multiplication done with
Pippenger's bucket method over 64-bit scalars (a few point additions per signature instead of
a full scalar multiplication each). What remains per set is decoding its signature (with the
subgroup check), hashing its message to G2 and one scalar multiplication ``r_i * H_i``.

When a batch fails, bisection finds the bad sets: each half is checked again with the same
coefficients (they are still unknown to whoever chose the sets, so each sub-check is as sound
as the first), down to single sets; a half that passes is cleared whole. Every bad set is
found, so the answer -- which sets are bad -- is deterministic; only the coefficients are not.

Why ``pyblst``: ``blspy`` (behind :mod:`node.crypto.bls`) exposes no scalar multiplication on
arbitrary points and no Miller loop, only full pairings; ``py-arkworks-bls12381`` has every
operation but is about half as fast; ``milagro-bls-binding``'s batch call is four times
slower. ``pyblst`` (Python bindings of supranational's blst) has hash-to-G2 with our DST,
scalar multiplication, point addition, Miller loops and a final-exponentiation comparison. It
holds the GIL throughout (measured: two threads verify no faster than one).

Encodings are held to :mod:`node.crypto.bls`'s rules: a signature must be 96 bytes, a canonical
compressed G2 point, on the curve, in the subgroup, and not the point at infinity (which
verifies against no real key); any other signature makes its set bad, with the reason, and
never raises. Public keys are :class:`~node.crypto.bls.PublicKey` values, already validated.
"""

from __future__ import annotations

import functools
import secrets
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Final

import attrs
import pyblst

from . import bls

__all__ = ["BatchVerdict", "SignatureSet", "verify_batch", "verify_one_message"]

#: Bits of each random coefficient (Lighthouse and blst use 64).
COEFFICIENT_BITS: Final = 64
_P1: Any = pyblst.BlstP1Element
_P2: Any = pyblst.BlstP2Element
_G1_GENERATOR: Final[Any] = bls.G1_GENERATOR


def _public_keys(value: bls.PublicKey | Iterable[bls.PublicKey]) -> tuple[bls.PublicKey, ...]:
    if isinstance(value, bls.PublicKey):
        return (value,)
    return tuple(value)


def _check_keys(_inst: object, _attribute: object, value: tuple[object, ...]) -> None:
    if not value:
        raise bls.BLSError("a signature set needs at least one public key")
    for i, key in enumerate(value):
        if not isinstance(key, bls.PublicKey):
            raise TypeError(f"public_keys[{i}] must be a PublicKey, not {type(key).__name__}")


def _to_bytes(value: bls.Bytes | bls.Signature) -> bytes:
    if isinstance(value, bls.Signature):
        return value.to_bytes()
    if not isinstance(value, bytes | bytearray | memoryview):
        raise TypeError(f"must be bytes or a Signature, not {type(value).__name__}")
    return bytes(value)


@attrs.frozen
class SignatureSet:
    """One ``FastAggregateVerify``: ``signature`` is the aggregate of the signatures of every
    key in ``public_keys`` over ``message``. A single key may be given for ``public_keys``.

    The signature is kept as bytes and judged by :func:`verify_batch`: bytes from a peer that do
    not decode make the set bad, they do not raise. Wrong *types*, or no key at all, are the
    caller's mistake and raise here."""

    public_keys: tuple[bls.PublicKey, ...] = attrs.field(
        converter=_public_keys, validator=_check_keys
    )
    message: bytes = attrs.field(converter=_to_bytes)
    signature: bytes = attrs.field(converter=_to_bytes)


@attrs.frozen
class BatchVerdict:
    """The answer for a batch: the indexes of the bad sets, ascending, and why each is bad."""

    bad: tuple[int, ...]
    reasons: Mapping[int, str]

    @property
    def ok(self) -> bool:
        """Every set verified."""
        return not self.bad


def verify_batch(sets: Sequence[SignatureSet]) -> BatchVerdict:
    """Verify every set at once; find the bad ones. An empty batch is trivially good.

    CPU-bound and holding the GIL (about 0.5 ms a set on the reference machine): call it from
    a worker thread (:class:`node.crypto.verifier.SignatureVerifier`), not from an actor."""
    return _verify(sets, _draw)


def verify_one_message(public_keys: Sequence[bls.PublicKey], message: bls.Bytes,
                       signatures: Sequence[bls.Bytes]) -> BatchVerdict:
    """Check that ``signatures[i]`` is key ``i``'s signature over ``message``, for every i at
    once; find the bad ones. Made for votes: the authorities that vote for one block in one
    round all sign one digest.

    One message allows a cheaper batch than :func:`verify_batch`: the message is hashed to G2
    once, and with coefficients r_i (r_0 = 1, the others random non-zero 64-bit integers drawn
    after the signatures are fixed) the check is

        e(g1, sum_i r_i * sigma_i) == e(sum_i r_i * PK_i, H(m))

    two Miller loops and one final exponentiation for any number of signatures, plus one
    scalar multiplication in G1 and one in G2 per signature after the first. The unweighted
    sum would not do: ``sigma_1 + D`` and ``sigma_2 - D`` are both invalid and add up to a
    valid sum, which would have this node hold, and pass on, votes that do not verify. Write
    ``sigma_i = sk_i H + D_i``: the weighted check holds iff ``sum_i r_i D_i = 0``. If only
    ``D_0`` is non-zero that sum is ``D_0``: refused. Otherwise some ``D_j``, j >= 1, is
    non-zero, and whatever the other terms, one value of ``r_j`` at most (G2 has prime order)
    makes the sum vanish: the batch passes with probability at most 1 / (2^64 - 1), as in
    :func:`verify_batch`. When it fails, each signature is checked alone (unweighted)
    against the same hash, so every bad one is found with its reason.

    Undecodable signatures are bad with their reason (never an exception); the verdict's
    indexes are positions in ``signatures``. Raises ValueError for unequal lengths, TypeError
    for a key that is not a :class:`~node.crypto.bls.PublicKey`."""
    if len(public_keys) != len(signatures):
        raise ValueError(f"{len(public_keys)} public keys for {len(signatures)} signatures")
    for i, key in enumerate(public_keys):
        if not isinstance(key, bls.PublicKey):
            raise TypeError(f"public_keys[{i}] must be a PublicKey, not {type(key).__name__}")
    data = bls._as_bytes(message, "message")
    reasons: dict[int, str] = {}
    decoded: list[tuple[int, Any, Any]] = []  # (index, key point, signature point)
    for index, raw in enumerate(signatures):
        try:
            point = _decode_signature(_to_bytes(raw))
        except bls.BLSError as exc:
            reasons[index] = str(exc)
            continue
        decoded.append((index, _key_point(public_keys[index].to_bytes()), point))
    if decoded:
        hashed = bls.hash_to_g2(data)  # the calling task's cache: it signed this digest too
        if len(decoded) == 1 or not _check_one_message(decoded, hashed, _draw):
            for index, key, point in decoded:
                if not _pairs_match(key, point, hashed):
                    reasons[index] = "signature does not verify"
    return BatchVerdict(tuple(sorted(reasons)), reasons)


# -- internals ------------------------------------------------------------------------------------


def _pairs_match(key: Any, signature: Any, hashed: Any) -> bool:
    """``e(g1, sigma) == e(PK, H(m))``: one signature, unweighted."""
    return bls.pairs_match(key, signature, hashed)


def _check_one_message(decoded: Sequence[tuple[int, Any, Any]], hashed: Any,
                       draw: Callable[[], int]) -> bool:
    """The weighted check of :func:`verify_one_message` (two signatures or more)."""
    _index, keys, signatures = decoded[0]
    for _index, key, signature in decoded[1:]:
        r = draw()
        keys = keys + key.scalar_mul(r)
        signatures = signatures + signature.scalar_mul(r)
    return _pairs_match(keys, signatures, hashed)



def _draw() -> int:
    """A uniformly random non-zero coefficient of :data:`COEFFICIENT_BITS` bits."""
    while True:
        value = secrets.randbits(COEFFICIENT_BITS)
        if value:
            return value


@functools.lru_cache(maxsize=4096)
def _key_point(data: bytes) -> Any:
    """A validated key's point (authority keys repeat from batch to batch: decode once)."""
    return _P1.uncompress(data)


def _decode_signature(data: bytes) -> Any:
    """The signature's G2 point; :class:`bls.BLSError` saying what is wrong with it."""
    bls._diagnose(data, "signature", "G2", bls.SIGNATURE_SIZE)
    if data[0] & 0x40:
        raise bls.BLSError("signature is the point at infinity")
    return bls.decode_signature_point(data)


@attrs.frozen
class _Prepared:
    """A decoded set with its coefficient: the parts every (sub-)check reuses."""

    index: int
    keys: tuple[bytes, ...]
    signature: Any
    coefficient: int
    hashed: Any  # H(message)

    @property
    def weighted_hash(self) -> Any:
        """``r * H(message)``."""
        if self.coefficient == 1:
            return self.hashed
        return self.hashed.scalar_mul(self.coefficient)


def _verify(sets: Sequence[SignatureSet], draw: Callable[[], int]) -> BatchVerdict:
    reasons: dict[int, str] = {}
    prepared: list[_Prepared] = []
    # One set alone is checked as FastAggregateVerify is, unweighted: nothing can cancel.
    alone = len(sets) == 1
    for index, item in enumerate(sets):
        if not isinstance(item, SignatureSet):
            raise TypeError(f"sets[{index}] must be a SignatureSet, not {type(item).__name__}")
        try:
            signature = _decode_signature(item.signature)
        except bls.BLSError as exc:
            reasons[index] = str(exc)
            continue
        r = 1 if alone else draw()
        hashed = _P2.hash_to_group(item.message, bls.DST)
        keys = tuple(key.to_bytes() for key in item.public_keys)
        prepared.append(_Prepared(index, keys, signature, r, hashed))
    for bad in _bisect(prepared):
        reasons[bad.index] = "signature does not verify"
    return BatchVerdict(tuple(sorted(reasons)), reasons)


def _bisect(prepared: list[_Prepared]) -> list[_Prepared]:
    """The sets of ``prepared`` that are bad: check all, then each failing half."""
    if not prepared or _check(prepared):
        return []
    if len(prepared) == 1:
        return prepared
    middle = len(prepared) // 2
    return _bisect(prepared[:middle]) + _bisect(prepared[middle:])


def _check(prepared: Sequence[_Prepared]) -> bool:
    """``e(g1, sum r_i sigma_i) == prod e(PK_i, r_i H_i)``, with one final exponentiation.

    The right-hand side takes one Miller loop per distinct key when there are fewer distinct
    keys than sets (grouped: ``prod_k e(pk_k, sum_{i: k in i} r_i H_i)``, a G2 addition per key
    of each set), else one per set (each set's keys added up in G1 first): the same product,
    whichever is fewer Miller loops."""
    distinct = {key for item in prepared for key in item.keys}
    right: Any = None
    weighted_of: dict[int, Any] = {}
    if len(distinct) < len(prepared):
        members: dict[bytes, list[_Prepared]] = {}
        for item in prepared:
            for key in item.keys:
                members.setdefault(key, []).append(item)
        by_key: dict[bytes, Any] = {}
        if _msm_cheaper([len(group) for group in members.values()], len(prepared)):
            # Each key's sum of r_i H_i as one multi-scalar multiplication.
            for key, group in members.items():
                by_key[key] = _multi_scalar_mul([i.hashed for i in group],
                                                [i.coefficient for i in group])
        else:
            for key, group in members.items():
                for item in group:
                    current = by_key.get(key)
                    weighted = weighted_of.get(item.index)
                    if weighted is None:
                        weighted = weighted_of[item.index] = item.weighted_hash
                    by_key[key] = weighted if current is None else current + weighted
        for key, total in by_key.items():
            loop = pyblst.miller_loop(_key_point(key), total)
            right = loop if right is None else right * loop
    else:
        for item in prepared:
            aggregate = _key_point(item.keys[0])
            for key in item.keys[1:]:
                aggregate = aggregate + _key_point(key)
            loop = pyblst.miller_loop(aggregate, item.weighted_hash)
            right = loop if right is None else right * loop
    left_sum = _multi_scalar_mul([p.signature for p in prepared],
                                 [p.coefficient for p in prepared])
    if left_sum is None:  # no coefficient is zero, so never; kept for the type checker
        return False
    return bool(pyblst.final_verify(pyblst.miller_loop(_G1_GENERATOR, left_sum), right))


#: What one 64-bit scalar multiplication in G2 costs, in G2 additions (measured: ~76).
_SCALAR_MUL_ADDS: Final = 76


def _msm_cost(n: int) -> int:
    """G2 additions of :func:`_multi_scalar_mul` over ``n`` points (estimate)."""
    if n == 1:
        return _SCALAR_MUL_ADDS
    c = _window(n)
    return -(-COEFFICIENT_BITS // c) * (n + (1 << (c + 1)))


def _msm_cheaper(group_sizes: Sequence[int], sets: int) -> bool:
    """Whether a multi-scalar multiplication per key beats weighting each set once and
    adding it to each of its keys' sums: it does when the sets share few keys (sync's
    blocks of one authority set), not when every set names many of them."""
    by_key = sum(_msm_cost(n) for n in group_sizes)
    by_set = sets * _SCALAR_MUL_ADDS + sum(group_sizes)
    return by_key < by_set


def _window(n: int) -> int:
    """Pippenger's window width for n points (measured on 64-bit scalars)."""
    if n < 4:
        return 1
    if n < 32:
        return 3
    if n < 128:
        return 5
    if n < 512:
        return 6
    return 8


def _multi_scalar_mul(points: Sequence[Any], scalars: Sequence[int]) -> Any:
    """``sum scalars[i] * points[i]`` for scalars below 2^64, None for the identity.

    Pippenger's bucket method: for each window of c bits, from the top, double the running
    total c times, drop every point into the bucket of its digit, and add the buckets weighted
    by their digit (by running sums, two additions a bucket). About 64/c * (n + 2^(c+1))
    additions, against 64 doublings and 32 additions a point for one multiplication each."""
    if len(points) == 1:
        return points[0] if scalars[0] == 1 else points[0].scalar_mul(scalars[0])
    c = _window(len(points))
    mask = (1 << c) - 1
    total: Any = None
    for window in range((COEFFICIENT_BITS + c - 1) // c - 1, -1, -1):
        if total is not None:
            for _ in range(c):
                total = total + total
        shift = window * c
        buckets: list[Any] = [None] * (mask + 1)
        for point, scalar in zip(points, scalars, strict=True):
            digit = (scalar >> shift) & mask
            if digit:
                bucket = buckets[digit]
                buckets[digit] = point if bucket is None else bucket + point
        running: Any = None
        window_sum: Any = None
        for bucket in reversed(buckets[1:]):
            if bucket is not None:
                running = bucket if running is None else running + bucket
            if running is not None:
                window_sum = running if window_sum is None else window_sum + running
        if window_sum is not None:
            total = window_sum if total is None else total + window_sum
    return total
