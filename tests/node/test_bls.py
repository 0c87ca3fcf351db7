"""node.crypto.bls: the official Ethereum BLS vectors, round trips, 15-approval aggregation, and
malformed bytes (only ever BLSError)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from node.crypto import bls
from node.crypto.bls import BLSError, PublicKey, SecretKey, Signature

DATA = Path(__file__).resolve().parent / "data" / "bls"
INFINITY_G1 = bytes([0xC0]) + bytes(47)
INFINITY_G2 = bytes([0xC0]) + bytes(95)


def vectors(handler: str) -> list[Any]:
    cases: dict[str, Any] = json.loads((DATA / f"{handler}.json").read_text())
    return [pytest.param(case, id=name) for name, case in cases.items()]


def vector(handler: str, fails: str) -> bytes:
    """The input of the official case ``deserialization_fails_<fails>``."""
    cases = json.loads((DATA / f"{handler}.json").read_text())
    return h(cases[f"deserialization_fails_{fails}"]["input"]["pubkey"])


def h(text: str) -> bytes:
    return bytes.fromhex(text.removeprefix("0x"))


def decoded_or_false(fn: Callable[[], bool]) -> bool:
    """A vector's verdict: input that does not decode (BLSError) counts as ``False``, as in
    every consensus client's runner."""
    try:
        return fn()
    except BLSError:
        return False


@cache
def keys(n: int = 15) -> list[SecretKey]:
    return [SecretKey.from_seed(hashlib.sha256(b"authority %d" % i).digest()) for i in range(n)]


BLOCK_HASH = hashlib.sha256(b"a consensus block").digest()


# -- the official vectors -----------------------------------------------------------------------


@pytest.mark.parametrize("case", vectors("sign"))
def test_sign_vectors(case: dict[str, Any]) -> None:
    sk_bytes, message = h(case["input"]["privkey"]), h(case["input"]["message"])
    if case["output"] is None:
        with pytest.raises(BLSError, match="zero"):
            SecretKey.from_bytes(sk_bytes)
        return
    sk = SecretKey.from_bytes(sk_bytes)
    signature = bls.sign(sk, message)
    assert signature.to_bytes() == h(case["output"])
    assert bls.verify(sk.public_key(), message, signature)


@pytest.mark.parametrize("case", vectors("verify"))
def test_verify_vectors(case: dict[str, Any]) -> None:
    i = case["input"]
    got = decoded_or_false(
        lambda: bls.verify(
            PublicKey.from_bytes(h(i["pubkey"])),
            h(i["message"]),
            Signature.from_bytes(h(i["signature"])),
        )
    )
    assert got is case["output"]


@pytest.mark.parametrize("case", vectors("aggregate"))
def test_aggregate_vectors(case: dict[str, Any]) -> None:
    signatures = [Signature.from_bytes(h(s)) for s in case["input"]]
    if case["output"] is None:
        with pytest.raises(BLSError, match="zero signatures"):
            bls.aggregate(signatures)
        return
    assert bls.aggregate(signatures).to_bytes() == h(case["output"])


@pytest.mark.parametrize("case", vectors("fast_aggregate_verify"))
def test_fast_aggregate_verify_vectors(case: dict[str, Any]) -> None:
    i = case["input"]
    got = decoded_or_false(
        lambda: bls.fast_aggregate_verify(
            [PublicKey.from_bytes(h(p)) for p in i["pubkeys"]],
            h(i["message"]),
            Signature.from_bytes(h(i["signature"])),
        )
    )
    assert got is case["output"]


@pytest.mark.parametrize("case", vectors("aggregate_verify"))
def test_aggregate_verify_vectors(case: dict[str, Any]) -> None:
    i = case["input"]
    got = decoded_or_false(
        lambda: bls.aggregate_verify(
            [PublicKey.from_bytes(h(p)) for p in i["pubkeys"]],
            [h(m) for m in i["messages"]],
            Signature.from_bytes(h(i["signature"])),
        )
    )
    assert got is case["output"]


@pytest.mark.parametrize("case", vectors("deserialization_G1"))
def test_deserialization_g1_vectors(case: dict[str, Any]) -> None:
    data = h(case["input"]["pubkey"])
    if data == INFINITY_G1:
        # A valid encoding, but PublicKey.from_bytes is KeyValidate: never an infinity key.
        assert case["output"] is True
        with pytest.raises(BLSError, match="infinity"):
            PublicKey.from_bytes(data)
    elif case["output"]:
        assert PublicKey.from_bytes(data).to_bytes() == data
    else:
        with pytest.raises(BLSError):
            PublicKey.from_bytes(data)


@pytest.mark.parametrize("case", vectors("deserialization_G2"))
def test_deserialization_g2_vectors(case: dict[str, Any]) -> None:
    data = h(case["input"]["pubkey"])  # the suite names the G2 field "pubkey" too
    if case["output"]:
        assert Signature.from_bytes(data).to_bytes() == data
    else:
        with pytest.raises(BLSError):
            Signature.from_bytes(data)


# -- keys ---------------------------------------------------------------------------------------

# EIP-2333's test cases 0-3: seed -> master_SK.
EIP2333 = [
    (
        "c55257c360c07c72029aebc1b53c05ed0362ada38ead3e3e9efa3708e5349553"
        "1f09a6987599d18264c1e1c92f2cf141630c7a3c4ab7c81b2f001698e7463b04",
        6083874454709270928345386274498605044986640685124978867557563392430687146096,
    ),
    (
        "3141592653589793238462643383279502884197169399375105820974944592",
        29757020647961307431480504535336562678282505419141012933316116377660817309383,
    ),
    (
        "0099FF991111002299DD7744EE3355BBDD8844115566CC55663355668888CC00",
        27580842291869792442942448775674722299803720648445448686099262467207037398656,
    ),
    (
        "d4e56740f876aef8c010b86a40d5f56745a118d0906a34e69aec8c0db1cb8fa3",
        19022158461524446591288038168518313374041767046816487870552872741050760015818,
    ),
]


@pytest.mark.parametrize(("seed", "master_sk"), EIP2333)
def test_from_seed_is_eip2333_derive_master_sk(seed: str, master_sk: int) -> None:
    sk = SecretKey.from_seed(bytes.fromhex(seed))
    assert sk.to_bytes() == master_sk.to_bytes(32, "big")
    assert SecretKey.from_bytes(sk.to_bytes()) == sk


def test_secret_key_validation() -> None:
    with pytest.raises(BLSError, match="at least 32 bytes"):
        SecretKey.from_seed(bytes(31))
    with pytest.raises(BLSError, match="32 bytes, got 31"):
        SecretKey.from_bytes(bytes(31))
    with pytest.raises(BLSError, match="zero"):
        SecretKey.from_bytes(bytes(32))
    with pytest.raises(BLSError, match="curve order"):
        SecretKey.from_bytes(bls.CURVE_ORDER.to_bytes(32, "big"))
    top = SecretKey.from_bytes((bls.CURVE_ORDER - 1).to_bytes(32, "big"))
    assert bls.verify(top.public_key(), b"m", bls.sign(top, b"m"))
    with pytest.raises(TypeError):
        SecretKey.from_bytes("00" * 32)  # type: ignore[arg-type]


def test_generate_and_repr_hide_the_secret() -> None:
    a, b = SecretKey.generate(), SecretKey.generate()
    assert a != b and a.public_key() != b.public_key()
    assert a.to_bytes().hex() not in repr(a)
    assert len(a.to_bytes()) == bls.SECRET_KEY_SIZE
    assert len(a.public_key().to_bytes()) == bls.PUBLIC_KEY_SIZE


# -- round trips --------------------------------------------------------------------------------


def test_sign_verify_round_trip() -> None:
    sk, other = keys()[0], keys()[1]
    pk = sk.public_key()
    signature = bls.sign(sk, BLOCK_HASH)
    assert len(signature.to_bytes()) == bls.SIGNATURE_SIZE
    assert bls.verify(pk, BLOCK_HASH, signature)
    assert bls.sign(sk, BLOCK_HASH) == signature  # deterministic
    assert not bls.verify(pk, BLOCK_HASH[:-1] + b"\x00", signature)
    assert not bls.verify(other.public_key(), BLOCK_HASH, signature)
    assert not bls.verify(pk, BLOCK_HASH, Signature.from_bytes(INFINITY_G2))
    assert bls.verify(pk, b"", bls.sign(sk, b""))
    # Through bytes, as keys and signatures travel.
    pk2, sig2 = PublicKey.from_bytes(pk.to_bytes()), Signature.from_bytes(signature.to_bytes())
    assert pk2 == pk and hash(pk2) == hash(pk) and sig2 == signature
    assert bls.verify(pk2, bytearray(BLOCK_HASH), sig2)
    with pytest.raises(TypeError, match="message must be bytes"):
        bls.sign(sk, 32)  # type: ignore[arg-type]  # bytes(32) would sign 32 zero bytes


def test_aggregate_15_approvals() -> None:
    sks = keys()
    pks = [sk.public_key() for sk in sks]
    approvals = [bls.sign(sk, BLOCK_HASH) for sk in sks]
    one_shot = bls.aggregate(approvals)
    assert bls.fast_aggregate_verify(pks, BLOCK_HASH, one_shot)
    # The chain folds approvals in one at a time: the same point, in any order.
    folded = approvals[0]
    for approval in reversed(approvals[1:]):
        folded = bls.aggregate([folded, approval])
    assert folded == one_shot
    assert bls.aggregate(approvals[:1]) == approvals[0]
    # A bitfield naming one key too many or too few does not verify.
    assert not bls.fast_aggregate_verify(pks[:14], BLOCK_HASH, one_shot)
    assert not bls.fast_aggregate_verify([*pks, pks[0]], BLOCK_HASH, one_shot)
    assert not bls.fast_aggregate_verify(pks, BLOCK_HASH[::-1], one_shot)
    assert not bls.fast_aggregate_verify([], BLOCK_HASH, one_shot)
    # One approval over another block spoils the aggregate.
    forged = bls.aggregate([*approvals[:14], bls.sign(sks[14], b"another block")])
    assert not bls.fast_aggregate_verify(pks, BLOCK_HASH, forged)
    # The same 15 through aggregate_verify (repeated messages are fine in the PoP scheme).
    assert bls.aggregate_verify(pks, [BLOCK_HASH] * 15, one_shot)
    messages = [hashlib.sha256(b"%d" % i).digest() for i in range(15)]
    distinct = bls.aggregate([bls.sign(sk, m) for sk, m in zip(sks, messages, strict=True)])
    assert bls.aggregate_verify(pks, messages, distinct)
    assert not bls.aggregate_verify(pks, messages[::-1], distinct)
    assert not bls.aggregate_verify(pks, messages[:14], distinct)
    assert not bls.aggregate_verify([], [], Signature.from_bytes(INFINITY_G2))


# -- malformed bytes ----------------------------------------------------------------------------

P = int(
    "1a0111ea397fe69a4b1ba7b6434bacd764774b84f38512bf6730d2a0f6b0f624"
    "1eabfffeb153ffffb9feffffffffaaab",
    16,
)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "48 bytes, got 0"),
        (bytes(47), "48 bytes, got 47"),
        (bytes(48), "top bit not set"),
        (bytes([0xE0]) + bytes(47), "non-canonical encoding of the point at infinity"),
        (bytes([0xC0]) + bytes(46) + b"\x01", "non-canonical encoding of the point at infinity"),
        ((P | 1 << 383).to_bytes(48, "big"), "not below the field modulus"),
        (INFINITY_G1, "point at infinity"),
        # From the official deserialization vectors:
        (vector("deserialization_G1", "not_in_curve"), "not a point on the curve"),
        (vector("deserialization_G1", "not_in_G1"), "not in the G1 subgroup"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_public_key_errors_say_what_is_wrong(data: bytes, message: str) -> None:
    with pytest.raises(BLSError, match=message) as info:
        PublicKey.from_bytes(data)
    assert isinstance(info.value, ValueError)
    assert str(info.value).startswith("public key")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (bytes(95), "96 bytes, got 95"),
        (bytes(96), "top bit not set"),
        (bytes([0xC0]) + bytes(94) + b"\x01", "non-canonical encoding of the point at infinity"),
        (bytes([0x80]) + bytes(47) + P.to_bytes(48, "big"), "not below the field modulus"),
        (vector("deserialization_G2", "not_in_curve"), "not a point on the curve"),
        (vector("deserialization_G2", "not_in_G2"), "not in the G2 subgroup"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_signature_errors_say_what_is_wrong(data: bytes, message: str) -> None:
    with pytest.raises(BLSError, match=message) as info:
        Signature.from_bytes(data)
    assert str(info.value).startswith("signature")


VALID_PK = keys()[0].public_key().to_bytes()
VALID_SIG = bls.sign(keys()[0], BLOCK_HASH).to_bytes()


def mutated(valid: bytes) -> st.SearchStrategy[bytes]:
    """Near misses: one byte of a valid encoding replaced, or its flag bits rewritten."""
    return st.tuples(st.integers(0, len(valid) - 1), st.integers(0, 255), st.integers(0, 7)).map(
        lambda t: (
            valid[: t[0]] + bytes([t[1]]) + valid[t[0] + 1 :]
            if t[0]
            else bytes([t[2] << 5 | valid[0] & 0x1F]) + valid[1:]
        )
    )


def well_sized(size: int) -> st.SearchStrategy[bytes]:
    flagged = st.tuples(st.integers(0, 7), st.binary(min_size=size, max_size=size)).map(
        lambda t: bytes([t[0] << 5 | t[1][0] & 0x1F]) + t[1][1:]
    )
    return st.binary(min_size=size, max_size=size) | flagged


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=120) | well_sized(48) | mutated(VALID_PK))
def test_public_key_from_arbitrary_bytes_raises_only_blserror(data: bytes) -> None:
    try:
        pk = PublicKey.from_bytes(data)
    except BLSError:
        return
    assert pk.to_bytes() == data
    assert not bls.verify(pk, b"arbitrary", Signature.from_bytes(VALID_SIG))


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=200) | well_sized(96) | mutated(VALID_SIG))
def test_signature_from_arbitrary_bytes_raises_only_blserror(data: bytes) -> None:
    try:
        signature = Signature.from_bytes(data)
    except BLSError:
        return
    assert signature.to_bytes() == data
    expected = data == VALID_SIG
    assert bls.verify(keys()[0].public_key(), BLOCK_HASH, signature) is expected


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=40))
def test_secret_key_from_arbitrary_bytes_raises_only_blserror(data: bytes) -> None:
    try:
        sk = SecretKey.from_bytes(data)
    except BLSError:
        return
    assert sk.to_bytes() == data


# -- signing and verifying on pyblst, with each task's cache of message hashes ------------------


@settings(max_examples=40, deadline=None)
@given(st.binary(min_size=32, max_size=32).filter(any), st.binary(max_size=300))
def test_signatures_are_blspy_s_bit_for_bit(seed_bytes: bytes, message: bytes) -> None:
    """Signing by SK * H(m) on pyblst gives exactly the bytes blspy's PopSchemeMPL gives, and
    blspy verifies what this module verifies (twice: the second time from the hash cache)."""
    sk = SecretKey.from_seed(seed_bytes + b"-netsim-speed2")
    expected = bytes(bls._SCHEME.sign(sk._key, message))
    for _ in range(2):
        signature = bls.sign(sk, message)
        assert signature.to_bytes() == expected
        assert bls.verify(sk.public_key(), message, signature)
    assert bls._SCHEME.verify(sk.public_key()._point, message,
                              bls.blspy.G2Element.from_bytes(expected))
    assert not bls.verify(sk.public_key(), message + b"!", signature)


class _CountingP2:
    """Stands in for pyblst's G2 class in ``bls``: counts hashes to G2."""

    def __init__(self, real: Any) -> None:
        self.real = real
        self.hashed: list[bytes] = []

    def hash_to_group(self, message: bytes, dst: bytes) -> Any:
        self.hashed.append(message)
        return self.real.hash_to_group(message, dst)

    def uncompress(self, data: bytes) -> Any:
        return self.real.uncompress(data)


@pytest.fixture
def counting(monkeypatch: pytest.MonkeyPatch) -> _CountingP2:
    p2 = _CountingP2(bls._P2)
    monkeypatch.setattr(bls, "_P2", p2)
    monkeypatch.setattr(bls, "_THREAD_HASHES", bls._Local())
    return p2


def test_a_message_is_hashed_once_per_task_for_sign_and_every_verify(
        counting: _CountingP2) -> None:
    sk, other = keys()[0], keys()[1]
    message = b"a vote digest"
    mine = bls.sign(sk, message)
    theirs = bls.sign(other, message)
    assert bls.verify(other.public_key(), message, theirs)
    assert bls.fast_aggregate_verify([sk.public_key(), other.public_key()], message,
                                     bls.aggregate([mine, theirs]))
    assert not bls.verify(sk.public_key(), message, theirs)
    assert counting.hashed == [message]


def test_the_hash_cache_is_bounded_oldest_first(counting: _CountingP2) -> None:
    messages = [b"message %d" % i for i in range(bls.HASH_CACHE_SIZE + 1)]
    for message in messages:
        bls.hash_to_g2(message)
    cache = bls._THREAD_HASHES.hashes
    assert cache is not None and len(cache) == bls.HASH_CACHE_SIZE
    assert messages[0] not in cache and messages[-1] in cache
    bls.hash_to_g2(messages[1])  # still cached
    bls.hash_to_g2(messages[0])  # forgotten: hashed again
    assert counting.hashed == [*messages, messages[0]]


def test_trio_tasks_do_not_share_hashes(counting: _CountingP2) -> None:
    """Each task (an actor) keeps its own cache: two tasks hash one message twice, a task
    that hashes it again does not, and a task's cache goes with it."""
    import gc

    import trio

    message = b"one signing root"

    async def hash_twice() -> None:
        bls.hash_to_g2(message)
        await trio.sleep(0)
        bls.hash_to_g2(message)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(hash_twice)
            nursery.start_soon(hash_twice)

    trio.run(main)
    assert counting.hashed == [message, message]
    gc.collect()
    assert len(bls._TASK_HASHES) == 0
    assert bls._THREAD_HASHES.hashes is None  # nothing hashed outside Trio


def test_the_point_at_infinity_verifies_against_nothing() -> None:
    infinity = Signature.from_bytes(INFINITY_G2)
    assert infinity.to_bytes() == INFINITY_G2
    sk = keys()[0]
    assert not bls.verify(sk.public_key(), BLOCK_HASH, infinity)
    assert not bls.fast_aggregate_verify([sk.public_key()], BLOCK_HASH, infinity)
    # Adding it changes no signature.
    signature = bls.sign(sk, BLOCK_HASH)
    assert bls.aggregate([signature, infinity]) == signature


def test_keys_that_add_up_to_infinity_verify_nothing() -> None:
    """A and -A are both valid keys, but their aggregate is the point at infinity: with the
    infinity signature, FastAggregateVerify would hold for any message (a forged approval
    of two authorities) unless the aggregate key is refused, as CoreVerify's KeyValidate
    does (found by review: the pyblst rewrite had dropped it)."""
    a = bls.SecretKey.from_seed(b"\x07" * 32).public_key()
    minus_a = bls.PublicKey.from_bytes((-a.blst_point()).compress())
    infinity = bls.Signature.from_bytes(bytes([0xC0]) + bytes(95))
    for message in (b"m", b"any block's signing root"):
        assert not bls.fast_aggregate_verify([a, minus_a], message, infinity)
        assert not bls.fast_aggregate_verify([minus_a, a, a, minus_a], message, infinity)
    signed = bls.sign(bls.SecretKey.from_seed(b"\x07" * 32), b"m")
    assert bls.fast_aggregate_verify([a], b"m", signed)
    assert not bls.fast_aggregate_verify([a], b"m", infinity)


@settings(max_examples=20, deadline=None)
@given(seeds=st.lists(st.binary(min_size=32, max_size=32), min_size=1, max_size=5),
       message=st.binary(max_size=64))
def test_aggregate_valid_is_aggregate(seeds: list[bytes], message: bytes) -> None:
    """The sum of known-valid signatures without the subgroup check on decoding is the
    same sum, and it verifies."""
    keys = [bls.SecretKey.from_seed(seed) for seed in seeds]
    signatures = [bls.sign(key, message) for key in keys]
    summed = bls.aggregate_valid([s.to_bytes() for s in signatures])
    assert summed == bls.aggregate(signatures).to_bytes()
    assert bls.fast_aggregate_verify([k.public_key() for k in keys], message,
                                     bls.Signature.from_bytes(summed))


@pytest.mark.parametrize("case", vectors("aggregate"))
def test_aggregate_valid_vectors(case: dict[str, Any]) -> None:
    if case["output"] is None:
        with pytest.raises(BLSError, match="zero signatures"):
            bls.aggregate_valid([h(s) for s in case["input"]])
        return
    assert bls.aggregate_valid([h(s) for s in case["input"]]) == h(case["output"])


@pytest.mark.parametrize("bad", [[], [b"\xff" * 96], [bytes(95)]])
def test_aggregate_valid_refuses_nothing_and_non_points(bad: list[bytes]) -> None:
    with pytest.raises(bls.BLSError):
        bls.aggregate_valid(bad)
