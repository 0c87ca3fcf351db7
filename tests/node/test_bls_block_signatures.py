"""node.workflows.block_signatures agrees with validate_block: on generated blocks (valid,
wrongly signed, too few approvals, the author missing, unknown authorities, malformed
signatures) a block is in check_blocks' answer exactly when validate_block refuses it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from node.crypto import bls
from node.crypto.verifier import SignatureVerifier
from node.types.chain import AggregateApproval, ConsensusBlock, SignedConsensusBlock
from node.workflows import chain as rules
from node.workflows.block_signatures import block_signatures, check_blocks, verify_blocks
from node.workflows.chain import BlockError, ValidationContext

from .factories import authority_keys, chain, payload, sign_with

KEYS = authority_keys(7)
GENESIS = chain(1)[0]
DATA = Path(__file__).resolve().parent / "data" / "bls"
SIGNATURE_RULES = {"author", "approval-index", "signature", "approvals"}


def not_in_g2() -> bytes:
    cases = json.loads((DATA / "deserialization_G2.json").read_text())
    return bytes.fromhex(cases["deserialization_fails_not_in_G2"]["input"]["pubkey"]
                         .removeprefix("0x"))


MALFORMED = [bytes(96), bytes([0xC0]) + bytes(95), bytes([0xFF]) * 96, not_in_g2()]


def block_at(slot: int) -> ConsensusBlock:
    """A child of genesis at ``slot``: only its approvals can make it invalid."""
    return ConsensusBlock(GENESIS.hash(), slot,
                          payload(1, GENESIS.message.execution_payload.block_hash))


def context(n: int) -> ValidationContext:
    return ValidationContext(
        authorities=tuple(k.public_key() for k in KEYS[:n]),
        slot_duration_ms=2000,
        now_ms=10**12,
        chain_id=121212,
        max_blocks_without_pow=10,
        finalized=GENESIS.ref(),
        unfinalized=(),
        expected_bits=0x207FFFFF,
    )


def refused(signed: SignedConsensusBlock, ctx: ValidationContext, require: bool) -> bool:
    try:
        rules.validate_block(signed, GENESIS, ctx, require_approvals=require)
    except BlockError as exc:
        assert exc.rule in SIGNATURE_RULES, exc  # nothing else about these blocks is wrong
        return True
    return False


@st.composite
def signed_blocks(draw: st.DrawFn, n: int) -> SignedConsensusBlock:
    slot = draw(st.integers(1, 40), label="slot")
    author = slot % n
    kind = draw(st.sampled_from(["valid", "valid", "too few", "no author", "beyond n",
                                 "other signers", "other message", "malformed"]), label="kind")
    # Signers among the 7 keys; "beyond n" may name authorities that are not configured.
    pool = range(len(KEYS)) if kind == "beyond n" else range(n)
    signers = sorted(draw(st.sets(st.sampled_from(pool), min_size=1), label="signers"))
    if kind in ("valid", "other signers", "other message", "malformed"):
        signers = sorted({author, *signers})
        needed = rules.required_approvals(n)
        for i in range(n):
            if len(signers) >= needed:
                break
            signers = sorted({*signers, i})
    elif kind == "no author":
        signers = [i for i in signers if i != author] or [(author + 1) % n]
        if n == 1:
            signers = [author]  # the only authority is every slot's author
    elif kind == "too few":
        signers = [author]
    block = block_at(slot)
    signed = sign_with(block, KEYS, signers)
    approvals = signed.signature
    if kind == "other signers":
        others = [i for i in range(n) if i not in signers][:1] or [(signers[0] + 1) % n]
        signature = sign_with(block, KEYS, others).signature.signature
        if others == signers:
            signature = MALFORMED[0]
        approvals = AggregateApproval(approvals.bitfield, signature)
    elif kind == "other message":
        approvals = AggregateApproval(approvals.bitfield,
                                      sign_with(block_at(slot + 1), KEYS, signers).signature
                                      .signature)
    elif kind == "malformed":
        approvals = AggregateApproval(approvals.bitfield, draw(st.sampled_from(MALFORMED)))
    return SignedConsensusBlock(block, approvals)


@settings(max_examples=30, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data(), n=st.integers(1, 7), require=st.booleans())
def test_check_blocks_agrees_with_validate_block(
    data: st.DataObject, n: int, require: bool
) -> None:
    blocks = data.draw(st.lists(signed_blocks(n), min_size=0, max_size=6), label="blocks")
    ctx = context(n)
    expected = [i for i, b in enumerate(blocks) if refused(b, ctx, require)]
    event(f"{len(expected)} of {len(blocks)} refused")
    assert check_blocks(blocks, ctx.authorities, require_approvals=require) == expected


def test_the_plan_names_the_rule_of_a_plain_refusal() -> None:
    n = 4
    pubs = tuple(k.public_key() for k in KEYS[:n])
    good = sign_with(block_at(5), KEYS, [1, 2, 3])
    no_author = sign_with(block_at(5), KEYS, [0, 2, 3])
    beyond = sign_with(block_at(5), KEYS, [1, 2, 3, 6])
    too_few = sign_with(block_at(5), KEYS, [1])
    plan = block_signatures([good, no_author, beyond, too_few], pubs)
    assert plan.owners == [0]
    assert {i: rule for i, (rule, _) in plan.refused.items()} == {
        1: "author", 2: "approval-index", 3: "approvals"}
    assert plan.bad_blocks([]) == [1, 2, 3]
    assert plan.bad_blocks([0]) == [0, 1, 2, 3]


def test_no_authorities_is_an_error() -> None:
    with pytest.raises(ValueError, match="no authorities"):
        block_signatures([], [])


def _run_of(count: int) -> tuple[tuple[bls.PublicKey, ...], list[SignedConsensusBlock]]:
    """Four authorities' keys, and ``count`` blocks each approved by three of them."""
    n = 4
    pubs = tuple(k.public_key() for k in KEYS[:n])
    blocks = [sign_with(block_at(s), KEYS, sorted({s % n, (s + 1) % n, (s + 2) % n}))
              for s in range(1, count + 1)]
    return pubs, blocks


def _signed_by(block: SignedConsensusBlock, signature: bytes) -> SignedConsensusBlock:
    """``block`` with its bitfield but ``signature`` (another block's, or garbage)."""
    return SignedConsensusBlock(block.message,
                                AggregateApproval(block.signature.bitfield, signature))


async def test_verify_blocks_runs_in_the_verifier_in_chunks() -> None:
    pubs, blocks = _run_of(11)
    blocks[4] = _signed_by(blocks[4], blocks[5].signature.signature)
    blocks[9] = _signed_by(blocks[9], bytes(96))
    verifier = SignatureVerifier(chunk=4)
    assert await verify_blocks(blocks, pubs, verifier) == [4, 9]
    stats = verifier.statistics()
    assert (stats.runs, stats.sets, stats.bad_sets) == (3, 11, 2)
    assert check_blocks(blocks, pubs) == [4, 9]


@pytest.mark.real_clock
async def test_a_process_verifier_finds_the_same_bad_blocks_in_its_worker_process() -> None:
    """The worker is a separate process (its pid is not ours); a run before the worker is up
    waits for it; the answer equals the thread's; ending ``serve`` shuts the worker down."""
    import os

    import trio

    from node.crypto.verifier import ProcessVerifier

    pubs, blocks = _run_of(11)
    blocks[2] = _signed_by(blocks[2], blocks[3].signature.signature)
    blocks[7] = _signed_by(blocks[7], MALFORMED[2])
    verifier = ProcessVerifier(chunk=4)
    async with trio.open_nursery() as nursery:
        # Asked before the worker exists: waits for serve to bring it up.
        answer: list[list[int]] = []

        async def ask() -> None:
            answer.append(await verify_blocks(blocks, pubs, verifier))

        nursery.start_soon(ask)
        await trio.sleep(0)
        await nursery.start(verifier.serve)
        pid = await verifier.run(os.getpid)
        assert pid != os.getpid()
        while not answer:
            await trio.sleep(0.01)
        assert answer == [[2, 7]] == [check_blocks(blocks, pubs)]
        stats = verifier.statistics()
        assert (stats.sets, stats.bad_sets) == (11, 2)
        nursery.cancel_scope.cancel()
    with pytest.raises(OSError):
        os.kill(pid, 0)  # the worker is gone with serve


@pytest.mark.real_clock
async def test_a_process_verifier_s_spares_take_runs_only_while_its_first_worker_is_busy(
) -> None:
    """With ``workers=2``: a run goes to the first worker when it is free; one that comes
    while it works goes to the spare, a process at a lower priority (``SPARE_NICE``); every
    worker is gone once ``serve`` ends; the verdicts are the thread's."""
    import os
    import time

    import trio

    from node.crypto.verifier import SPARE_NICE, ProcessVerifier

    pubs, blocks = _run_of(8)
    blocks[5] = _signed_by(blocks[5], blocks[1].signature.signature)
    with pytest.raises(ValueError, match="workers must be a positive integer"):
        ProcessVerifier(workers=0)
    verifier = ProcessVerifier(chunk=3, workers=2)
    async with trio.open_nursery() as nursery:
        await nursery.start(verifier.serve)
        first = await verifier.run(os.getpid)
        ours = os.nice(0)
        assert await verifier.run(os.nice, 0) == ours
        busy = trio.Event()

        async def hold_first() -> None:
            busy.set()
            await verifier.run(time.sleep, 1.0)

        nursery.start_soon(hold_first)
        await busy.wait()
        await trio.sleep(0.1)  # the sleep is in the first worker now
        assert verifier.statistics().busy
        spare = await verifier.run(os.getpid)
        assert spare not in (first, os.getpid())
        assert await verifier.run(os.nice, 0) == min(ours + SPARE_NICE, 19)
        assert await verify_blocks(blocks, pubs, verifier) == [5] == check_blocks(blocks, pubs)
        while verifier.statistics().busy:
            await trio.sleep(0.05)
        assert await verifier.run(os.getpid) == first  # free again: the first takes it
        nursery.cancel_scope.cancel()
    for pid in (first, spare):
        with pytest.raises(OSError):
            os.kill(pid, 0)
