"""node.crypto.batch and node.crypto.verifier: random-coefficient batch verification finds
exactly the bad sets, malformed signatures are bad sets (never a crash), two bad signatures
that cancel are caught, and the worker thread keeps the caller's task running."""

from __future__ import annotations

import hashlib
import json
import threading
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from node.crypto import batch, bls
from node.crypto.batch import BatchVerdict, SignatureSet, verify_batch
from node.crypto.verifier import SignatureVerifier

DATA = Path(__file__).resolve().parent / "data" / "bls"
INFINITY_G2 = bytes([0xC0]) + bytes(95)


@cache
def keys() -> list[bls.SecretKey]:
    return [bls.SecretKey.from_seed(hashlib.sha256(b"batch key %d" % i).digest())
            for i in range(6)]


def message(i: int) -> bytes:
    return hashlib.sha256(b"block %d" % i).digest()


@cache
def good_set(i: int, signers: tuple[int, ...] = (0, 1, 2)) -> SignatureSet:
    """Set ``i``: ``signers`` sign message ``i`` (cached: signing is the slow part)."""
    sks = keys()
    signature = bls.aggregate([bls.sign(sks[k], message(i)) for k in signers])
    return SignatureSet([sks[k].public_key() for k in signers], message(i), signature)


def spoiled(item: SignatureSet) -> SignatureSet:
    """``item`` with a well-formed signature over another message: it does not verify."""
    other = good_set(10_000 + len(item.message)).signature
    return SignatureSet(item.public_keys, item.message, other)


def vector(group: str, fails: str) -> bytes:
    cases = json.loads((DATA / f"deserialization_{group}.json").read_text())
    text: str = cases[f"deserialization_fails_{fails}"]["input"]["pubkey"]
    return bytes.fromhex(text.removeprefix("0x"))


# -- the verdict ----------------------------------------------------------------------------------


def test_an_empty_batch_is_good() -> None:
    assert verify_batch([]) == BatchVerdict((), {})
    assert verify_batch([]).ok


@pytest.mark.parametrize("n", [1, 2, 3, 17, 64])
def test_a_batch_of_valid_sets_is_good(n: int) -> None:
    verdict = verify_batch([good_set(i, (i % 6, (i + 1) % 6)) for i in range(n)])
    assert verdict.ok and verdict.bad == ()


def test_a_single_key_and_a_signature_value_are_accepted() -> None:
    sk = keys()[3]
    item = SignatureSet(sk.public_key(), message(1), bls.sign(sk, message(1)))
    assert item.public_keys == (sk.public_key(),)
    assert verify_batch([item, item]).ok


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    size=st.integers(1, 24),
    data=st.data(),
)
def test_the_bad_sets_are_found_wherever_they_are(size: int, data: st.DataObject) -> None:
    bad = data.draw(st.sets(st.integers(0, size - 1), max_size=min(2, size)), label="bad")
    duplicate = data.draw(st.booleans(), label="duplicate an item")
    items = [good_set(i % 8, (i % 6, (i + 2) % 6)) for i in range(size)]
    for i in bad:
        items[i] = spoiled(items[i])
    if duplicate:
        j = data.draw(st.integers(0, size - 1), label="duplicated")
        items.append(items[j])
        if j in bad:
            bad = bad | {size}
    verdict = verify_batch(items)
    assert verdict.bad == tuple(sorted(bad))
    assert all(verdict.reasons[i] == "signature does not verify" for i in bad)


def test_every_bad_set_is_found_when_all_are_bad() -> None:
    items = [spoiled(good_set(i)) for i in range(9)]
    assert verify_batch(items).bad == tuple(range(9))


def test_the_answer_is_deterministic_the_coefficients_are_not(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    drawn: list[int] = []
    draw = batch._draw

    def recording() -> int:
        drawn.append(draw())
        return drawn[-1]

    monkeypatch.setattr(batch, "_draw", recording)
    items = [good_set(i) for i in range(8)]
    items[2], items[5] = spoiled(items[2]), spoiled(items[5])
    expected = BatchVerdict((2, 5), {2: "signature does not verify",
                                     5: "signature does not verify"})
    assert [verify_batch(items) for _ in range(3)] == [expected] * 3
    runs = [tuple(drawn[k * 8:(k + 1) * 8]) for k in range(3)]
    assert len(set(runs)) == 3  # fresh coefficients every time
    assert all(0 < r < 2**64 for r in drawn)


# -- the cancelling pair --------------------------------------------------------------------------


def cancelling_pair() -> list[SignatureSet]:
    """Two valid sets whose signatures are moved by +D and -D: each is invalid, their sum is
    the sum of the valid ones. D = d * H(x) and -D = (r - d) * H(x), built with the scheme's
    own API."""
    first, second = good_set(1), good_set(2)
    d = 0x1234567890ABCDEF
    shift = bls.sign(bls.SecretKey.from_bytes(d.to_bytes(32, "big")), b"x")
    unshift = bls.sign(bls.SecretKey.from_bytes((bls.CURVE_ORDER - d).to_bytes(32, "big")), b"x")
    sig1 = bls.aggregate([bls.Signature.from_bytes(first.signature), shift])
    sig2 = bls.aggregate([bls.Signature.from_bytes(second.signature), unshift])
    return [SignatureSet(first.public_keys, first.message, sig1),
            SignatureSet(second.public_keys, second.message, sig2)]


def test_the_naive_unweighted_check_accepts_a_cancelling_pair() -> None:
    pair = cancelling_pair()
    for item in pair:  # each one alone is invalid
        signature = bls.Signature.from_bytes(item.signature)
        assert not bls.fast_aggregate_verify(list(item.public_keys), item.message, signature)
    total = bls.aggregate([bls.Signature.from_bytes(item.signature) for item in pair])
    # AggregateVerify over the sum (each key of each set with its set's message): accepted.
    pks = [pk for item in pair for pk in item.public_keys]
    msgs = [item.message for item in pair for _ in item.public_keys]
    assert bls.aggregate_verify(pks, msgs, total)
    # So does our own check with every coefficient 1 (what random coefficients prevent).
    assert batch._verify(pair, lambda: 1).ok


def test_random_coefficients_reject_the_cancelling_pair_and_blame_both() -> None:
    pair = cancelling_pair()
    assert verify_batch(pair).bad == (0, 1)
    assert verify_batch([good_set(7), *pair, good_set(8)]).bad == (1, 2)


# -- malformed input ------------------------------------------------------------------------------

MALFORMED = {
    "empty": (b"", "signature must be 96 bytes, got 0"),
    "short": (bytes(95), "signature must be 96 bytes, got 95"),
    "long": (bytes([0x80]) + bytes(96), "signature must be 96 bytes, got 97"),
    "uncompressed flag": (bytes(96), "top bit not set"),
    "infinity": (INFINITY_G2, "point at infinity"),
    "infinity with x": (vector("G2", "with_b_flag_and_x_nonzero"), "non-canonical"),
    "x >= p": (vector("G2", "xre_greater_than_modulus"), "field modulus"),
    "not on the curve": (vector("G2", "not_in_curve"), "not a point on the curve"),
    "not in G2": (vector("G2", "not_in_G2"), "not in the G2 subgroup"),
}


@pytest.mark.parametrize("case", MALFORMED, ids=list(MALFORMED))
def test_a_malformed_signature_is_a_bad_set_with_its_reason(case: str) -> None:
    data, reason = MALFORMED[case]
    items = [good_set(1), SignatureSet(good_set(2).public_keys, message(2), data), good_set(3)]
    verdict = verify_batch(items)
    assert verdict.bad == (1,)
    assert reason in verdict.reasons[1]


def test_only_malformed_sets_make_a_batch_of_nothing_to_check() -> None:
    items = [SignatureSet(good_set(i).public_keys, message(i), b"junk") for i in range(3)]
    assert verify_batch(items).bad == (0, 1, 2)


def test_wrong_types_and_no_keys_are_the_callers_mistake() -> None:
    pk = keys()[0].public_key()
    with pytest.raises(bls.BLSError, match="at least one public key"):
        SignatureSet([], message(0), bytes(96))
    with pytest.raises(TypeError, match="PublicKey"):
        SignatureSet([pk.to_bytes()], message(0), bytes(96))  # type: ignore[list-item]
    with pytest.raises(TypeError, match="bytes"):
        SignatureSet(pk, "text", bytes(96))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="SignatureSet"):
        verify_batch([(pk, message(0), bytes(96))])  # type: ignore[list-item]


def test_a_signature_for_other_keys_is_bad() -> None:
    item = good_set(4, (0, 1))
    wrong_keys = SignatureSet([keys()[2].public_key(), keys()[3].public_key()], item.message,
                              item.signature)
    assert verify_batch([good_set(5), wrong_keys]).bad == (1,)


def test_the_pippenger_sum_matches_scalar_multiplication() -> None:
    points = [bls_point(i) for i in range(40)]
    scalars = [(i * 0x9E3779B97F4A7C15 + 1) % 2**64 for i in range(40)]
    for n in (1, 2, 5, 40):
        got = batch._multi_scalar_mul(points[:n], scalars[:n])
        want = None
        for p, s in zip(points[:n], scalars[:n], strict=True):
            term = p.scalar_mul(s)
            want = term if want is None else want + term
        assert got.compress() == want.compress()


def bls_point(i: int) -> Any:
    return batch._P2.hash_to_group(message(i), bls.DST)


# -- one message, many signers (votes) ------------------------------------------------------------


@cache
def one_message_signatures(n: int = 6) -> tuple[bytes, ...]:
    """Key i's signature over message 77, for every key (cached: signing is slow)."""
    return tuple(bls.sign(k, message(77)).to_bytes() for k in keys()[:n])


def spoiled_signature(i: int) -> bytes:
    """Key i's signature over another message: well-formed, does not verify for 77."""
    return bls.sign(keys()[i], message(78)).to_bytes()


@pytest.mark.parametrize("n", [1, 2, 3, 6])
def test_signatures_of_one_message_verify_together(n: int) -> None:
    pks = [k.public_key() for k in keys()[:n]]
    verdict = batch.verify_one_message(pks, message(77), one_message_signatures()[:n])
    assert verdict.ok and verdict.reasons == {}


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_every_bad_signature_of_one_message_is_found(data: st.DataObject) -> None:
    n = data.draw(st.integers(1, 6), label="signers")
    bad = data.draw(st.sets(st.integers(0, n - 1)), label="bad")
    junk = data.draw(st.sets(st.sampled_from(sorted(bad)) if bad else st.nothing()),
                     label="undecodable")
    signatures = [b"\x00" * 96 if i in junk else spoiled_signature(i) if i in bad
                  else one_message_signatures()[i] for i in range(n)]
    verdict = batch.verify_one_message([k.public_key() for k in keys()[:n]], message(77),
                                       signatures)
    assert verdict.bad == tuple(sorted(bad))
    for i in bad:
        assert ("does not verify" in verdict.reasons[i]) == (i not in junk)


def test_a_signature_under_another_signers_key_is_bad() -> None:
    pks = [keys()[1].public_key(), keys()[0].public_key()]  # swapped
    verdict = batch.verify_one_message(pks, message(77), one_message_signatures()[:2])
    assert verdict.bad == (0, 1)


def cancelling_votes() -> list[bytes]:
    """Key 0's and key 1's signatures over message 77, moved by +D and -D: each is invalid,
    their sum is the sum of the valid ones."""
    d = 0x0FEDCBA987654321
    shift = bls.sign(bls.SecretKey.from_bytes(d.to_bytes(32, "big")), b"x")
    unshift = bls.sign(bls.SecretKey.from_bytes((bls.CURVE_ORDER - d).to_bytes(32, "big")), b"x")
    good = one_message_signatures()
    return [bls.aggregate([bls.Signature.from_bytes(good[0]), shift]).to_bytes(),
            bls.aggregate([bls.Signature.from_bytes(good[1]), unshift]).to_bytes()]


def test_two_signatures_that_cancel_are_both_found_in_one_message() -> None:
    pks = [keys()[0].public_key(), keys()[1].public_key()]
    pair = cancelling_votes()
    # The unweighted sum accepts them (what the coefficients are for) ...
    assert bls.fast_aggregate_verify(pks, message(77), bls.aggregate(
        [bls.Signature.from_bytes(s) for s in pair]))
    hashed = batch._P2.hash_to_group(message(77), bls.DST)
    decoded = [(i, batch._key_point(pks[i].to_bytes()), batch._decode_signature(pair[i]))
               for i in range(2)]
    assert batch._check_one_message(decoded, hashed, lambda: 1)
    # ... the weighted check does not, and each is then blamed alone.
    assert not batch._check_one_message(decoded, hashed, batch._draw)
    verdict = batch.verify_one_message(pks, message(77), pair)
    assert verdict.bad == (0, 1)
    assert all("does not verify" in r for r in verdict.reasons.values())


def test_one_message_refuses_mismatched_inputs_and_wrong_types() -> None:
    pk = keys()[0].public_key()
    with pytest.raises(ValueError, match="1 public keys for 2 signatures"):
        batch.verify_one_message([pk], message(0), [bytes(96), bytes(96)])
    with pytest.raises(TypeError, match="PublicKey"):
        batch.verify_one_message([pk.to_bytes()], message(0), [bytes(96)])  # type: ignore[list-item]
    with pytest.raises(TypeError, match="message must be bytes"):
        batch.verify_one_message([pk], "text", [bytes(96)])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="bytes or a Signature"):
        batch.verify_one_message([pk], message(0), [96])  # type: ignore[list-item]
    assert batch.verify_one_message([], message(0), []).ok
    infinity = batch.verify_one_message([pk], message(0), [INFINITY_G2])
    assert "point at infinity" in infinity.reasons[0]


# -- the worker -----------------------------------------------------------------------------------


async def test_the_verifier_runs_off_the_callers_task_one_run_at_a_time() -> None:
    verifier = SignatureVerifier(chunk=8)
    items = [good_set(i % 8) for i in range(40)]
    items[13] = spoiled(items[13])
    items[31] = spoiled(items[31])
    running = 0
    most = 0
    threads: set[int] = set()
    original = batch.verify_batch

    def watched(sets: list[SignatureSet]) -> BatchVerdict:
        nonlocal running, most
        running += 1
        most = max(most, running)
        threads.add(threading.get_ident())
        try:
            return original(sets)
        finally:
            running -= 1

    ticks = 0

    async def ticker(done: trio.Event) -> None:
        nonlocal ticks
        while not done.is_set():
            ticks += 1
            await trio.sleep(0.001)

    import node.crypto.verifier as module

    results: list[BatchVerdict] = []
    saved = module.verify_batch
    module.verify_batch = watched  # type: ignore[assignment]
    try:
        done = trio.Event()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(ticker, done)

            async def one() -> None:
                results.append(await verifier.verify(items))

            async with trio.open_nursery() as inner:
                inner.start_soon(one)
                inner.start_soon(one)
            done.set()
    finally:
        module.verify_batch = saved
    assert [r.bad for r in results] == [(13, 31), (13, 31)]
    assert most == 1  # the limiter: never two runs at once
    assert threading.get_ident() not in threads  # the work ran in a worker thread
    assert ticks > 5  # the caller's other tasks kept running meanwhile
    stats = verifier.statistics()
    assert (stats.runs, stats.sets, stats.bad_sets) == (10, 80, 4)
    assert stats.busy_seconds > 0 and stats.longest_run_seconds <= stats.busy_seconds
    assert not stats.busy and stats.waiting == 0


async def test_an_exception_in_the_worker_reaches_the_caller() -> None:
    verifier = SignatureVerifier()
    with pytest.raises(TypeError, match="SignatureSet"):
        await verifier.verify([("not", "a", "set")])  # type: ignore[list-item]
    assert verifier.statistics().busy is False


def test_a_chunk_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="chunk"):
        SignatureVerifier(chunk=0)


def test_one_authoritys_sets_are_summed_by_multi_scalar_multiplication_many_keys_are_not() -> None:
    """Which way the right-hand side is summed (a cost estimate picks it) never changes the
    verdict: a bad set among 64 of one key (multi-scalar path), and among sets naming many
    keys each (per-set weighting), is found either way."""
    assert batch._msm_cheaper([64], 64)  # sync: every block signed by the same key
    assert not batch._msm_cheaper([60] * 12, 64)  # every set names 12 of 12 keys
    one_key = [good_set(i, (0,)) for i in range(64)]
    one_key[37] = spoiled(one_key[37])
    assert verify_batch(one_key).bad == (37,)
    many = [good_set(i, tuple(range(len(keys())))) for i in range(24)]
    many[5] = spoiled(many[5])
    assert verify_batch(many).bad == (5,)
