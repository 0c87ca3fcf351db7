"""Every consensus rule in node.workflows.chain, without Trio, on a real little chain: four BLS
authorities, blocks signed and approved by them, AuxPoW proofs mined at 0x207fffff."""

from __future__ import annotations

import itertools
import math
from typing import Any

import attrs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from node.crypto import bls
from node.types.bitcoin import TxOut
from node.types.chain import (
    AggregateApproval,
    AuxPowHeader,
    BlockRef,
    ConsensusBlock,
    IndividualApproval,
    SignedConsensusBlock,
)
from node.types.execution import Receipt
from node.workflows import chain as rules
from node.workflows.auxpow import AuxPow, MergedMiningCommitment, aggregate_hash, mine_auxpow
from node.workflows.chain import BlockError, PowWork, ValidationContext

from .factories import authority_keys, chain, payload, regrind, sign_with

KEYS = authority_keys(4)
PUBS = tuple(k.public_key() for k in KEYS)
N = len(KEYS)
DURATION = 2000
CHAIN_ID = 121212
BITS = 0x207FFFFF
HARD_BITS = 0x1D00FFFF
MINER = bytes.fromhex("11" * 20)
GENESIS = chain(1)[0]


def approvers(slot: int, count: int = 3) -> list[int]:
    """The slot's author first, then the next authorities round the ring."""
    return [(slot + i) % N for i in range(count)]


def child(
    parent: SignedConsensusBlock,
    slot: int | None = None,
    header: AuxPowHeader | None = None,
    signers: list[int] | None = None,
    number: int | None = None,
    payload_parent: bytes | None = None,
) -> SignedConsensusBlock:
    slot = parent.message.slot + 1 if slot is None else slot
    p = payload(
        parent.height + 1 if number is None else number,
        parent.message.execution_payload.block_hash if payload_parent is None else payload_parent,
    )
    block = ConsensusBlock(parent.hash(), slot, p, header)
    return sign_with(block, KEYS, approvers(slot) if signers is None else signers)


def build(length: int) -> list[SignedConsensusBlock]:
    """Genesis then ``length`` blocks at slots 1, 2, ..."""
    blocks = [GENESIS]
    for _ in range(length):
        blocks.append(child(blocks[-1]))
    return blocks


BLOCKS = build(4)  # genesis, b1..b4 (slots 1..4, authors 1, 2, 3, 0)
REFS = tuple(b.ref() for b in BLOCKS[1:])


def context(parent: SignedConsensusBlock, **overrides: Any) -> ValidationContext:
    """What the chain knows when ``parent`` is the head: nothing finalized after genesis."""
    values: dict[str, Any] = {
        "authorities": PUBS,
        "slot_duration_ms": DURATION,
        "now_ms": (parent.message.slot + 1) * DURATION,
        "chain_id": CHAIN_ID,
        "max_blocks_without_pow": 10,
        "finalized": GENESIS.ref(),
        "unfinalized": REFS[: parent.height],
        "expected_bits": BITS,
    }
    values.update(overrides)
    return ValidationContext(**values)


@pytest.fixture(scope="module")
def work() -> PowWork:
    return rules.make_work(REFS, BITS, CHAIN_ID, MINER)


@pytest.fixture(scope="module")
def proof(work: PowWork) -> AuxPow:
    return mine_auxpow(work.hash, CHAIN_ID, BITS)


@pytest.fixture(scope="module")
def pow_header(work: PowWork, proof: AuxPow) -> AuxPowHeader:
    return rules.check_submission(work, proof.to_bytes())


def rule(fn: Any, *args: Any, **kwargs: Any) -> str:
    with pytest.raises(BlockError) as info:
        fn(*args, **kwargs)
    assert str(info.value).startswith(info.value.rule + ": ")
    return info.value.rule


# -- slots and authors ----------------------------------------------------------------------------


def test_slot_is_unix_ms_over_the_slot_duration() -> None:
    assert rules.slot_at(0, 2000) == 0
    assert rules.slot_at(1999, 2000) == 0
    assert rules.slot_at(2000, 2000) == 1
    assert rules.slot_at(1_700_000_000_123, 5000) == 340_000_000
    assert rules.slot_start_ms(7, 2000) == 14_000
    assert rules.slot_at(rules.slot_start_ms(7, 2000), 2000) == 7


def test_author_is_slot_modulo_the_authorities() -> None:
    assert [rules.author_index(s, 3) for s in range(7)] == [0, 1, 2, 0, 1, 2, 0]
    assert rules.author_index(12345, 1) == 0


@pytest.mark.parametrize("n", range(1, 16))
def test_required_approvals_is_ceil_two_thirds(n: int) -> None:
    assert rules.required_approvals(n) == (2 * n + 2) // 3 == math.ceil(2 * n / 3)


def test_required_approvals_table() -> None:
    assert [rules.required_approvals(n) for n in range(1, 16)] == [
        1, 2, 2, 3, 4, 4, 5, 6, 6, 7, 8, 8, 9, 10, 10]


@pytest.mark.parametrize(
    ("slot", "now_ms", "duration", "future"),
    [
        # 2 s slots: the slot rule is the tighter one (now//2000 + 1 vs now//3000 + 1)
        (6, 10_000, 2000, False),   # the next slot: tolerated
        (7, 10_000, 2000, True),    # beyond the next slot and beyond the next 3 s step
        (5, 10_000, 2000, False),   # the current slot
        (3, 5_999, 2000, False),    # 5999//2000 + 1 = 3
        (4, 5_999, 2000, True),     # 4 > 3 and 4 > 5999//3000 + 1 = 2
        (4, 6_000, 2000, False),    # one ms later slot 4 is the next slot
        # 5 s slots: the 3 s step is looser and saves slots beyond the next one
        (8, 30_000, 5000, False),   # 8 > 7, but 8 <= 30000//3000 + 1 = 11
        (11, 30_000, 5000, False),  # 11 > 7, but not > 11
        (12, 30_000, 5000, True),   # 12 > 7 and 12 > 11: both conditions hold
        # 1 s slots: the 3 s step would tolerate little; the slot rule decides
        (31, 30_000, 1000, False),
        (32, 30_000, 1000, True),
        (0, 0, 2000, False),
        (1, 0, 2000, False),
        (2, 0, 2000, True),
    ],
)
def test_future_slot_needs_both_conditions(
    slot: int, now_ms: int, duration: int, future: bool
) -> None:
    assert rules.is_future_slot(slot, now_ms, duration) is future
    expected = slot > now_ms // duration + 1 and slot > now_ms // 3000 + 1
    assert expected is future


# -- signing and approvals ------------------------------------------------------------------------


def test_sign_block_is_the_producers_single_entry_aggregate() -> None:
    block = BLOCKS[2].message
    signed = rules.sign_block(block, KEYS[2], 2)
    assert signed.message == block
    assert signed.signature.bitfield == 0b100 and signed.signature.indexes() == [2]
    signature = bls.Signature.from_bytes(signed.signature.signature)
    assert bls.verify(PUBS[2], block.signing_root(), signature)
    assert not bls.verify(PUBS[1], block.signing_root(), signature)
    # the signing root, never the bare block hash, is what is signed
    assert not bls.verify(PUBS[2], block.hash(), signature)


def test_approve_signs_the_blocks_signing_root() -> None:
    approval = rules.approve(BLOCKS[1].hash(), KEYS[3], 3)
    assert approval.authority_index == 3
    assert bls.verify(PUBS[3], BLOCKS[1].signing_root(),
                      bls.Signature.from_bytes(approval.signature))
    assert not bls.verify(PUBS[3], BLOCKS[1].hash(),
                          bls.Signature.from_bytes(approval.signature))


def test_approvals_grow_the_aggregate_until_it_is_enough() -> None:
    block = BLOCKS[1].message  # slot 1: authority 1 produces
    signed = rules.sign_block(block, KEYS[1], 1)
    assert len(signed.signature.indexes()) < rules.required_approvals(N)
    for index in (3, 0):
        signed = rules.add_approval(signed, rules.approve(block.hash(), KEYS[index], index), PUBS)
    assert signed.signature.indexes() == [0, 1, 3]
    aggregate = bls.Signature.from_bytes(signed.signature.signature)
    assert bls.fast_aggregate_verify([PUBS[0], PUBS[1], PUBS[3]], block.signing_root(),
                                     aggregate)
    assert not bls.fast_aggregate_verify([PUBS[0], PUBS[1]], block.signing_root(), aggregate)
    rules.validate_block(signed, GENESIS, context(GENESIS))
    # a fourth approval still verifies
    signed = rules.add_approval(signed, rules.approve(block.hash(), KEYS[2], 2), PUBS)
    assert signed.signature.count() == 4
    rules.validate_block(signed, GENESIS, context(GENESIS))


def test_a_duplicate_approval_changes_nothing() -> None:
    signed = rules.sign_block(BLOCKS[1].message, KEYS[1], 1)
    again = rules.add_approval(signed, rules.approve(signed.hash(), KEYS[1], 1), PUBS)
    assert again is signed
    approved = rules.add_approval(signed, rules.approve(signed.hash(), KEYS[2], 2), PUBS)
    assert rules.add_approval(approved, rules.approve(signed.hash(), KEYS[2], 2), PUBS) is approved


def test_an_approval_of_an_unknown_authority_is_refused() -> None:
    signed = rules.sign_block(BLOCKS[1].message, KEYS[1], 1)
    extra = bls.SecretKey.from_seed(b"\x77" * 32)
    approval = rules.approve(signed.hash(), extra, N)
    assert rule(rules.add_approval, signed, approval, PUBS) == "approval-index"
    assert rule(rules.add_approval, signed, attrs.evolve(approval, authority_index=14),
                PUBS) == "approval-index"


def test_an_approval_with_a_bad_signature_is_refused() -> None:
    signed = rules.sign_block(BLOCKS[1].message, KEYS[1], 1)
    # authority 2's index with authority 3's signature
    forged = IndividualApproval(rules.approve(signed.hash(), KEYS[3], 3).signature, 2)
    assert rule(rules.add_approval, signed, forged, PUBS) == "approval-signature"
    # the right key over another block
    other = rules.approve(BLOCKS[2].hash(), KEYS[2], 2)
    assert rule(rules.add_approval, signed, other, PUBS) == "approval-signature"
    # bytes that are no signature at all
    garbage = IndividualApproval(bytes(96), 2)
    assert rule(rules.add_approval, signed, garbage, PUBS) == "approval-signature"
    assert signed.signature.indexes() == [1]


# -- validation: a valid chain passes -------------------------------------------------------------


def test_the_little_chain_is_valid() -> None:
    for parent, block in itertools.pairwise(BLOCKS):
        rules.validate_block(block, parent, context(parent))


def test_a_block_carrying_the_pow_of_the_whole_range_is_valid(pow_header: AuxPowHeader) -> None:
    head = BLOCKS[4]
    block = child(head, header=pow_header)
    rules.validate_block(block, head, context(head))
    assert pow_header.range_start == REFS[0].hash and pow_header.range_end == REFS[-1].hash


def test_a_pow_may_cover_a_prefix_of_the_unfinalized_range() -> None:
    work = rules.make_work(REFS[:2], BITS, CHAIN_ID, MINER)
    header = rules.check_submission(work, mine_auxpow(work.hash, CHAIN_ID, BITS).to_bytes())
    head = BLOCKS[4]
    rules.validate_block(child(head, header=header), head, context(head))


def test_the_next_slot_is_tolerated_and_approvals_may_be_skipped() -> None:
    parent = BLOCKS[2]
    ctx = context(parent, now_ms=parent.message.slot * DURATION)  # now is the parent's slot
    rules.validate_block(child(parent, slot=parent.message.slot + 1), parent, ctx)
    only_author = child(parent, signers=[(parent.message.slot + 1) % N])
    rules.validate_block(only_author, parent, context(parent), require_approvals=False)


# -- validation: each rule fails with its own name ------------------------------------------------


def test_unknown_parent() -> None:
    assert rule(rules.validate_block, BLOCKS[2], None, context(BLOCKS[1])) == "unknown-parent"


def test_height_must_follow_the_parent() -> None:
    parent = BLOCKS[2]
    for number in (parent.height, parent.height + 2):
        block = child(parent, number=number)
        assert rule(rules.validate_block, block, parent, context(parent)) == "height"


def test_payload_must_build_on_the_parents_payload() -> None:
    parent = BLOCKS[2]
    block = child(parent, payload_parent=BLOCKS[1].message.execution_payload.block_hash)
    assert rule(rules.validate_block, block, parent, context(parent)) == "payload-parent"


@pytest.mark.parametrize("delta", [0, -1])
def test_slot_must_be_after_the_parents(delta: int) -> None:
    parent = BLOCKS[3]
    block = child(parent, slot=parent.message.slot + delta)
    assert rule(rules.validate_block, block, parent, context(parent)) == "slot"


def test_a_slot_in_the_future_is_refused() -> None:
    parent = BLOCKS[4]  # slot 4; now = slot 5
    ctx = context(parent)
    rules.validate_block(child(parent, slot=6), parent, ctx)  # the next slot after now
    assert rule(rules.validate_block, child(parent, slot=7), parent, ctx) == "future-slot"
    later = context(parent, now_ms=6 * DURATION)  # time passes: slot 7 is now acceptable
    rules.validate_block(child(parent, slot=7), parent, later)


def test_the_slots_author_must_have_signed() -> None:
    parent = BLOCKS[1]
    slot = 2  # authority 2's slot, signed by the three others
    block = child(parent, slot=slot, signers=[0, 1, 3])
    assert rule(rules.validate_block, block, parent, context(parent)) == "author"


def test_approvals_must_name_known_authorities() -> None:
    parent = BLOCKS[1]
    block = child(parent)
    beyond = attrs.evolve(block, signature=AggregateApproval(
        block.signature.bitfield | 1 << N, block.signature.signature))
    assert rule(rules.validate_block, beyond, parent, context(parent)) == "approval-index"


def test_the_aggregate_signature_must_verify() -> None:
    parent = BLOCKS[1]
    slot = 2
    block = child(parent, slot=slot, signers=[2, 3, 0])
    # the bitfield claims authorities 2, 3, 0; authority 1 signed instead of 0
    wrong_signers = sign_with(block.message, KEYS, [2, 3, 1])
    claimed = attrs.evolve(wrong_signers, signature=AggregateApproval(
        block.signature.bitfield, wrong_signers.signature.signature))
    assert rule(rules.validate_block, claimed, parent, context(parent)) == "signature"
    # a signature over another block
    other = attrs.evolve(block, signature=sign_with(BLOCKS[3].message, KEYS, [2, 3, 0]).signature)
    assert rule(rules.validate_block, other, parent, context(parent)) == "signature"
    # bytes that do not decode
    garbage = attrs.evolve(block, signature=AggregateApproval(block.signature.bitfield,
                                                              b"\x00" * 96))
    assert rule(rules.validate_block, garbage, parent, context(parent)) == "signature"


def test_too_few_approvals_are_refused() -> None:
    parent = BLOCKS[1]
    block = child(parent, signers=approvers(2, count=2))
    assert rules.required_approvals(N) == 3
    assert rule(rules.validate_block, block, parent, context(parent)) == "approvals"


def test_no_block_without_pow_past_the_maximum() -> None:
    head = BLOCKS[4]
    block = child(head)  # height 5, finalized height 0
    rules.validate_block(block, head, context(head, max_blocks_without_pow=5))
    assert rule(rules.validate_block, block, head,
                context(head, max_blocks_without_pow=4)) == "max-blocks-without-pow"


def test_a_pow_block_is_allowed_past_the_maximum(pow_header: AuxPowHeader) -> None:
    head = BLOCKS[4]
    rules.validate_block(child(head, header=pow_header), head,
                         context(head, max_blocks_without_pow=1))


def test_pow_range_must_start_after_the_finalized_block(pow_header: AuxPowHeader) -> None:
    head = BLOCKS[4]
    late = attrs.evolve(pow_header, range_start=REFS[1].hash)
    assert rule(rules.validate_block, child(head, header=late), head,
                context(head)) == "auxpow-range"
    # a chain finalized up to b2 no longer has b1 in its range
    ctx = context(head, finalized=REFS[1], unfinalized=REFS[2:])
    assert rule(rules.validate_block, child(head, header=pow_header), head, ctx) == "auxpow-range"


def test_pow_range_must_end_at_an_unfinalized_block(pow_header: AuxPowHeader) -> None:
    head = BLOCKS[4]
    unknown = attrs.evolve(pow_header, range_end=bytes(range(32)))
    assert rule(rules.validate_block, child(head, header=unknown), head,
                context(head)) == "auxpow-range"


def test_pow_needs_unfinalized_blocks(pow_header: AuxPowHeader) -> None:
    head = BLOCKS[4]
    ctx = context(head, finalized=REFS[-1], unfinalized=())
    with pytest.raises(BlockError, match="no unfinalized blocks") as info:
        rules.validate_block(child(head, header=pow_header), head, ctx)
    assert info.value.rule == "auxpow-range"


def test_pow_chain_id_must_be_ours(pow_header: AuxPowHeader) -> None:
    head = BLOCKS[4]
    other = attrs.evolve(pow_header, chain_id=CHAIN_ID + 1)
    assert rule(rules.validate_block, child(head, header=other), head,
                context(head)) == "auxpow-chain-id"


def test_pow_bits_must_be_the_expected_ones(pow_header: AuxPowHeader) -> None:
    head = BLOCKS[4]
    ctx = context(head, expected_bits=0x207FFFFE)
    assert rule(rules.validate_block, child(head, header=pow_header), head,
                ctx) == "auxpow-bits"


def test_pow_header_must_carry_a_proof(pow_header: AuxPowHeader) -> None:
    head = BLOCKS[4]
    empty = attrs.evolve(pow_header, auxpow=None)
    assert rule(rules.validate_block, child(head, header=empty), head, context(head)) == "auxpow"


def test_pow_proof_must_meet_the_bits(pow_header: AuxPowHeader) -> None:
    head = BLOCKS[4]
    hard = attrs.evolve(pow_header, bits=HARD_BITS)
    assert rule(rules.validate_block, child(head, header=hard), head,
                context(head, expected_bits=HARD_BITS)) == "auxpow-pow"


def test_pow_proof_must_commit_to_the_range(pow_header: AuxPowHeader) -> None:
    head = BLOCKS[4]
    # the proof commits to b1..b4; the header claims b1..b3
    short = attrs.evolve(pow_header, range_end=REFS[2].hash, height=REFS[2].height)
    assert rule(rules.validate_block, child(head, header=short), head,
                context(head)) == "auxpow-commitment-root"


def test_pow_header_height_is_not_validated_as_in_the_original(pow_header: AuxPowHeader) -> None:
    # ALYS.md: the header carries the height of the latest AuxPoW block + 1, and "the
    # original never validates it"; nor do we (the proof does not commit to it).
    head = BLOCKS[4]
    for height in (0, 1, pow_header.height + 1, 2**64 - 1):
        rules.validate_block(child(head, header=attrs.evolve(pow_header, height=height)), head,
                             context(head))


def test_pow_proof_must_decode(pow_header: AuxPowHeader) -> None:
    head = BLOCKS[4]
    garbage = attrs.evolve(pow_header, auxpow=b"\x01\x02\x03")
    assert rule(rules.validate_block, child(head, header=garbage), head,
                context(head)) == "auxpow-decode"


def test_validate_pow_alone() -> None:
    block = child(BLOCKS[4]).message
    rules.validate_pow(block, context(BLOCKS[4]))
    assert rule(rules.validate_pow, block,
                context(BLOCKS[4], max_blocks_without_pow=4)) == "max-blocks-without-pow"


# -- work for miners and their submissions --------------------------------------------------------


def test_make_work_covers_the_unfinalized_range(work: PowWork) -> None:
    assert work.hash == aggregate_hash([r.hash for r in REFS]) == rules.aux_hash(
        [r.hash for r in REFS])
    assert (work.range_start, work.range_end, work.height) == (REFS[0].hash, REFS[-1].hash, 4)
    assert (work.bits, work.chain_id, work.fee_recipient) == (BITS, CHAIN_ID, MINER)
    single = rules.make_work(REFS[:1], BITS, CHAIN_ID, MINER)
    assert single.range_start == single.range_end == REFS[0].hash and single.height == 1


def test_no_work_without_unfinalized_blocks() -> None:
    assert rule(rules.make_work, [], BITS, CHAIN_ID, MINER) == "no-work"


def test_a_good_submission_gives_the_header_to_carry(work: PowWork, proof: AuxPow) -> None:
    header = rules.check_submission(work, proof.to_bytes())
    assert header == AuxPowHeader(work.range_start, work.range_end, BITS, CHAIN_ID, 4,
                                  proof.to_bytes(), MINER)


def test_a_proof_for_another_hash_fails_the_commitment(work: PowWork) -> None:
    other = mine_auxpow(aggregate_hash([r.hash for r in REFS[:3]]), CHAIN_ID, BITS)
    assert rule(rules.check_submission, work, other.to_bytes()).startswith("auxpow-commitment-")
    assert rule(rules.check_submission, work, other.to_bytes()) == "auxpow-commitment-root"


def test_pow_is_checked_before_the_auxpow_rules(work: PowWork, proof: AuxPow) -> None:
    hard = attrs.evolve(work, bits=HARD_BITS)
    assert rule(rules.check_submission, hard, proof.to_bytes()) == "auxpow-pow"
    # a proof for another hash that also misses the target is a PoW failure first
    other = mine_auxpow(bytes(32), CHAIN_ID, BITS)
    assert rule(rules.check_submission, hard, other.to_bytes()) == "auxpow-pow"


@pytest.mark.parametrize("data", [b"", b"\x00", b"garbage" * 10, bytes(200)])
def test_garbage_does_not_decode(work: PowWork, data: bytes) -> None:
    assert rule(rules.check_submission, work, data) == "auxpow-decode"


def test_trailing_bytes_do_not_decode(work: PowWork, proof: AuxPow) -> None:
    assert rule(rules.check_submission, work, proof.to_bytes() + b"\x00") == "auxpow-decode"


def test_auxpow_rules_keep_their_names(work: PowWork, proof: AuxPow) -> None:
    # the parent claims our chain id
    small = attrs.evolve(work, chain_id=7)
    ours = mine_auxpow(work.hash, 8, BITS, parent_chain_id=7)
    assert rule(rules.check_submission, small, ours.to_bytes()) == "auxpow-chain-id"
    # a side mask that is not the namecoin index (0 for an empty branch)
    masked = attrs.evolve(proof, blockchain_branch=attrs.evolve(proof.blockchain_branch,
                                                                side_mask=1))
    assert rule(rules.check_submission, work, masked.to_bytes()) == "auxpow-side-mask"
    # a commitment claiming a merkle size of 2 for an empty branch
    script = MergedMiningCommitment(work.hash, 2, 0).to_script()
    sized = _with_outputs(proof, (TxOut(0, b""), TxOut(0, b""), TxOut(0, script)))
    assert rule(rules.check_submission, work, sized.to_bytes()) == "auxpow-merkle-size"
    # no commitment at all
    bare = _with_outputs(proof, (TxOut(0, b""), TxOut(0, b"")))
    assert rule(rules.check_submission, work, bare.to_bytes()) == "auxpow-commitment-missing"


def _with_outputs(proof: AuxPow, outputs: tuple[TxOut, ...]) -> AuxPow:
    coinbase = attrs.evolve(proof.coinbase_tx, outputs=outputs)
    header = attrs.evolve(proof.parent_header, merkle_root=coinbase.txid())
    return regrind(attrs.evolve(proof, coinbase_tx=coinbase, parent_header=header), BITS)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.binary(max_size=400))
def test_arbitrary_bytes_only_raise_block_error(data: bytes) -> None:
    work = rules.make_work(REFS, BITS, CHAIN_ID, MINER)
    try:
        rules.check_submission(work, data)
    except BlockError as exc:
        assert exc.rule.startswith("auxpow-")


_PROOF = mine_auxpow(aggregate_hash([r.hash for r in REFS]), CHAIN_ID, BITS).to_bytes()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    edits=st.lists(st.tuples(st.integers(0, len(_PROOF) - 1), st.integers(0, 255)),
                   min_size=1, max_size=4),
    cut=st.integers(0, len(_PROOF)),
)
def test_mutated_proofs_only_raise_block_error(edits: list[tuple[int, int]], cut: int) -> None:
    work = rules.make_work(REFS, BITS, CHAIN_ID, MINER)
    data = bytearray(_PROOF)
    for at, value in edits:
        data[at] = value
    for candidate in (bytes(data), bytes(data[:cut])):
        try:
            header = rules.check_submission(work, candidate)
        except BlockError as exc:
            assert exc.rule.startswith("auxpow-")
        else:
            assert header.auxpow == candidate


# -- fees -----------------------------------------------------------------------------------------

GWEI = 10**9
FED = [bytes([0xA0 + i]) * 20 for i in range(3)]


@pytest.mark.parametrize("members", [0, 1, 2, 3])
def test_fees_split_80_20_in_gwei(members: int) -> None:
    fees = 1000 * GWEI
    out = rules.fee_withdrawals(fees, MINER, FED[:members])
    assert out[0].address == MINER and out[0].amount == 800
    assert all(w.index == 0 and w.validator_index == 0 for w in out)
    if members == 0:
        assert len(out) == 1
    else:
        assert [w.address for w in out[1:]] == FED[:members]
        assert {w.amount for w in out[1:]} == {200 // members}  # 200, 100, 66 Gwei
    assert sum(w.amount for w in out) * GWEI <= fees


def test_no_fees_no_withdrawals() -> None:
    assert rules.fee_withdrawals(0, MINER, FED) == []
    assert rules.fee_withdrawals(-5, MINER, FED) == []


def test_dust_below_a_gwei_is_not_minted() -> None:
    # 1 Gwei of fees: 0.8 Gwei to the miner, 0.2 to the federation: nothing whole
    assert rules.fee_withdrawals(GWEI, MINER, FED) == []
    # 2 Gwei: the miner gets 1 (1.6 rounded down), each of three members 0.133: dropped
    out = rules.fee_withdrawals(2 * GWEI, MINER, FED)
    assert [(w.address, w.amount) for w in out] == [(MINER, 1)]
    # wei below a Gwei are dropped, not rounded
    out = rules.fee_withdrawals(10 * GWEI + GWEI - 1, MINER, FED[:1])
    assert [(w.address, w.amount) for w in out] == [(MINER, 8), (FED[0], 2)]


def test_new_block_links_to_the_parent() -> None:
    parent = BLOCKS[2]
    p = payload(3, parent.message.execution_payload.block_hash)
    block = rules.new_block(parent, 9, p, None)
    assert block == ConsensusBlock(parent.hash(), 9, p, None)
    assert block.height == 3
    assert BlockRef(block.hash(), 3) == SignedConsensusBlock(block, parent.signature).ref()


# -- blocks since PoW count from the block that *carries* the latest AuxPoW -----------------------


def test_max_blocks_without_pow_counts_from_the_carrying_block(pow_header: AuxPowHeader) -> None:
    # b1..b4 are unfinalized; b5 carries a PoW for b1..b4 (so b4 is finalized, b5 is the
    # latest AuxPoW block). A block at height h without PoW has h - 5 blocks since PoW, not
    # h - 4 (the range end's height, which this node used to count from).
    head = BLOCKS[4]
    carrier = child(head, header=pow_header)
    rules.validate_block(carrier, head, context(head))
    tail = [carrier]
    for _ in range(3):
        tail.append(child(tail[-1]))
    block = child(tail[-1])  # height 9: 4 blocks since the carrier at 5 (5 since the range end)
    ctx = context(tail[-1], finalized=REFS[3], unfinalized=tuple(b.ref() for b in tail),
                  last_pow_height=5, max_blocks_without_pow=4)
    rules.validate_block(block, tail[-1], ctx)
    assert rule(rules.validate_block, block, tail[-1],
                attrs.evolve(ctx, max_blocks_without_pow=3)) == "max-blocks-without-pow"
    assert rules.max_blocks_problem(8, 5, 4) is None
    problem = rules.max_blocks_problem(8, 5, 3)
    assert problem is not None and "4 blocks since the last AuxPoW block (#5)" in problem.message


def _state(head: SignedConsensusBlock, finalized: int, last_pow: int, fees: int = 0,
           bits: int = BITS) -> rules.ChainState:
    return rules.ChainState(
        head=head,
        finalized=BLOCKS[finalized].ref(),
        finalized_payload=BLOCKS[finalized].message.execution_payload.block_hash,
        last_pow=BlockRef(bytes([last_pow]) * 32, last_pow),
        last_pow_bits=bits,
        unfinalized=tuple(b.ref() for b in BLOCKS[finalized + 1: head.height + 1]),
        fees=fees,
    )


def test_the_retarget_counts_from_the_carrying_block() -> None:
    cfg = rules.difficulty.DifficultyConfig(pow_target_timespan=60, pow_target_spacing=5,
                                            max_pow_adjustment=20, pow_limit=BITS,
                                            pow_lower_limit=BITS, bits=0x1D00FFFF)
    # head #4; the latest AuxPoW block is #3 (it finalized up to #2): 2 blocks since PoW
    state = _state(BLOCKS[4], finalized=2, last_pow=3, bits=0x1D00FFFF)
    assert rules.blocks_since_pow(state) == 4 + 1 - 3
    # the interval is 12: no retarget at head 4 with 2 blocks since PoW...
    assert rules.next_bits(state, cfg) == 0x1D00FFFF
    # ...but at head 12 (12 % 12 == 0) the ratio uses blocks since the carrier
    head12 = attrs.evolve(BLOCKS[4], message=attrs.evolve(
        BLOCKS[4].message, execution_payload=payload(12)))
    state = attrs.evolve(state, head=head12, last_pow=BlockRef(bytes(32), 10))
    assert rules.blocks_since_pow(state) == 3
    assert rules.next_bits(state, cfg) == rules.difficulty.next_bits(cfg, 0x1D00FFFF, 12, 3)
    assert rules.next_bits(state, cfg) != rules.difficulty.next_bits(cfg, 0x1D00FFFF, 12, 11)


def test_work_answers_the_carrying_block_and_its_height_plus_one() -> None:
    carrier = BlockRef(b"\x09" * 32, 2)
    work = rules.make_work(REFS[2:], BITS, CHAIN_ID, MINER, carrier)
    assert (work.height, work.last_pow_hash) == (3, carrier.hash)
    header = rules.check_submission(work, mine_auxpow(work.hash, CHAIN_ID, BITS).to_bytes())
    assert header.height == 3  # the header pushed on submit carries the same height


# -- withdrawals: what the block claims is what the payload credits -------------------------------


def _with_withdrawals(block: SignedConsensusBlock, withdrawals: tuple[Any, ...],
                      **changes: Any) -> SignedConsensusBlock:
    p = attrs.evolve(block.message.execution_payload, withdrawals=withdrawals)
    message = attrs.evolve(block.message, execution_payload=p, **changes)
    return sign_with(message, KEYS, approvers(message.slot))


def test_an_auxpow_block_must_mint_exactly_the_accumulated_fees(pow_header: AuxPowHeader) -> None:
    head = BLOCKS[4]
    fees = 1000 * GWEI
    ctx = context(head, fees=fees, federation=tuple(FED[:2]))
    minted = tuple(rules.fee_withdrawals(fees, pow_header.fee_recipient, FED[:2]))
    assert [w.amount for w in minted] == [800, 100, 100]
    good = _with_withdrawals(child(head, header=pow_header), minted)
    rules.validate_block(good, head, ctx)
    for wrong in (
        (),  # nothing minted
        minted[:1],  # the federation's share missing
        (attrs.evolve(minted[0], amount=801), *minted[1:]),  # the miner takes more
        (attrs.evolve(minted[0], address=bytes(20)), *minted[1:]),  # to someone else
        (*minted, minted[0]),  # twice
    ):
        bad = _with_withdrawals(child(head, header=pow_header), wrong)
        assert rule(rules.validate_block, bad, head, ctx) == "withdrawals"
    # a block without PoW mints nothing, whatever has accumulated
    plain = _with_withdrawals(child(head), minted)
    assert rule(rules.validate_block, plain, head, ctx) == "withdrawals"
    rules.validate_block(child(head), head, ctx)


def test_with_the_fees_unknown_the_mint_may_pay_only_the_miner_and_the_federation(
        pow_header: AuxPowHeader) -> None:
    """After a snap sync the fees since the latest AuxPoW block are unknown: the next AuxPoW
    block's mint is checked for its payees (each once, after the peg-ins), not amounts."""
    head = BLOCKS[4]
    ctx = context(head, fees=None, federation=tuple(FED[:2]))
    minted = tuple(rules.fee_withdrawals(1000 * GWEI, pow_header.fee_recipient, FED[:2]))
    for fine in ((), minted, minted[:1], (attrs.evolve(minted[0], amount=10**9), *minted[1:])):
        rules.validate_block(_with_withdrawals(child(head, header=pow_header), fine), head, ctx)
    for wrong in (
        (attrs.evolve(minted[0], address=bytes(20)), *minted[1:]),  # to someone else
        (*minted, minted[0]),  # the miner twice
        (attrs.evolve(minted[1], index=1), *minted[2:]),  # not a plain credit
    ):
        bad = _with_withdrawals(child(head, header=pow_header), wrong)
        assert rule(rules.validate_block, bad, head, ctx) == "withdrawals"
    # a block without PoW still mints nothing
    plain = _with_withdrawals(child(head), minted)
    assert rule(rules.validate_block, plain, head, ctx) == "withdrawals"
    # history (snap sync) takes a block's withdrawals as signed
    rules.validate_block(plain, head, ctx, history=True)


def test_unknown_fees_stay_unknown_until_an_auxpow_block_starts_afresh() -> None:
    assert rules.accumulate_fees(None, 5, carries_pow=False) is None
    assert rules.accumulate_fees(7, None, carries_pow=False) is None
    assert rules.accumulate_fees(None, 5, carries_pow=True) == 5
    assert rules.accumulate_fees(7, 5, carries_pow=False) == 12
    after = child(BLOCKS[4])
    state = rules.import_history(_state(BLOCKS[4], finalized=0, last_pow=0, fees=9), after)
    assert state.fees is None and state.head == after
    assert rules.import_block(state, child(after), 4).fees is None


def test_peg_ins_must_be_verified_and_credited() -> None:
    head = BLOCKS[4]
    claim = (b"\x01" * 32, b"\x02" * 32)
    block = _with_withdrawals(child(head), (), pegins=(claim,))
    # this node has no bridge yet: a peg-in it has not verified is refused
    assert rule(rules.validate_block, block, head, context(head)) == "pegins"
    alice, bob = b"\xaa" * 20, b"\xbb" * 20
    known = {
        claim: rules.PegIn(*claim, alice, 1_500),
        (b"\x03" * 32, b"\x02" * 32): rules.PegIn(b"\x03" * 32, b"\x02" * 32, bob, 7),
        (b"\x04" * 32, b"\x02" * 32): rules.PegIn(b"\x04" * 32, b"\x02" * 32, alice, 500),
    }
    claims = tuple(known)
    credited = rules.pegin_withdrawals(claims, known)
    # one withdrawal per address, in first-claim order, sats x 10 Gwei
    assert [(w.address, w.amount) for w in credited] == [(alice, 20_000), (bob, 70)]
    good = _with_withdrawals(child(head), tuple(credited), pegins=claims)
    rules.validate_block(good, head, context(head, pegins=known))
    short = _with_withdrawals(child(head), tuple(credited[:1]), pegins=claims)
    assert rule(rules.validate_block, short, head, context(head, pegins=known)) == "withdrawals"
    assert rule(rules.pegin_withdrawals, (claim, claim), known) == "pegins"
    many = {(bytes([i]) * 32, b"\x02" * 32): rules.PegIn(bytes([i]) * 32, b"\x02" * 32,
                                                          bytes([i]) * 20, 1)
            for i in range(17)}
    assert rule(rules.pegin_withdrawals, tuple(many), many) == "pegins"
    assert len(rules.pegin_withdrawals(tuple(many)[:16], many)) == 16


def test_fees_come_from_receipts_as_effective_tip_times_gas() -> None:
    receipts = [Receipt(21_000, 7 + 2 * GWEI), Receipt(50_000, 7), Receipt(1, 10)]
    assert rules.payload_fees(7, receipts) == 21_000 * 2 * GWEI + 0 + 3
    assert rules.payload_fees(7, []) == 0
    with pytest.raises(ValueError, match="receipt 0: effective gas price 6 is below"):
        rules.payload_fees(7, [Receipt(1, 6)])


def test_fees_accumulate_until_an_auxpow_block_mints_them() -> None:
    assert rules.accumulate_fees(100, 5, carries_pow=False) == 105
    assert rules.accumulate_fees(100, 5, carries_pow=True) == 5  # 100 minted by this block


# -- payload timestamps never run ahead of the clock ----------------------------------------------


@settings(max_examples=200, deadline=None)
@given(duration=st.integers(1, 5000), start=st.integers(0, 10**13), slots=st.integers(1, 400))
def test_payload_timestamps_stay_on_the_clock_whatever_the_slot(duration: int, start: int,
                                                               slots: int) -> None:
    first = start // duration
    parent = first * duration // 1000 - 1
    produced = 0
    for slot in range(first, first + slots):
        ts = rules.payload_timestamp(slot, duration, parent)
        if ts is None:
            assert duration < 1000  # from a second up, every slot can produce
            continue
        assert ts > parent  # increasing, as the execution layer needs
        assert ts * 1000 <= slot * duration  # never after the slot's start: never ahead
        parent = ts
        produced += 1
    span_seconds = (first + slots) * duration // 1000 - first * duration // 1000 + 1
    assert produced <= span_seconds  # at most one block a second


def test_a_100ms_slot_chain_for_three_minutes_stays_on_the_clock() -> None:
    # what used to run 1,633 s ahead: 1800 slots of 100 ms
    parent, produced = 1_700_000_000 - 1, 0
    for slot in range(17_000_000_000, 17_000_001_800):
        ts = rules.payload_timestamp(slot, 100, parent)
        if ts is not None:
            parent, produced = ts, produced + 1
    assert parent == 17_000_001_799 * 100 // 1000 and produced == 180


def test_a_payload_timestamp_after_its_slot_start_is_refused() -> None:
    parent = BLOCKS[2]
    block = child(parent)  # slot 3 starts at 6 s
    late = attrs.evolve(block.message.execution_payload, timestamp=7)
    bad = sign_with(attrs.evolve(block.message, execution_payload=late), KEYS,
                    approvers(block.message.slot))
    assert rule(rules.validate_block, bad, parent, context(parent)) == "timestamp"
    on_time = attrs.evolve(block.message.execution_payload, timestamp=6)
    rules.validate_block(sign_with(attrs.evolve(block.message, execution_payload=on_time),
                                   KEYS, approvers(block.message.slot)), parent, context(parent))


# -- how an import changes the chain state --------------------------------------------------------


def test_import_finalizes_the_range_and_moves_the_latest_pow(pow_header: AuxPowHeader) -> None:
    state = _state(BLOCKS[4], finalized=0, last_pow=0, fees=70)
    carrier = child(BLOCKS[4], header=pow_header)
    new = rules.import_block(state, carrier, block_fees=5, range_end=BLOCKS[4])
    assert new.head == carrier
    assert new.finalized == BLOCKS[4].ref()
    assert new.finalized_payload == BLOCKS[4].message.execution_payload.block_hash
    assert new.unfinalized == (carrier.ref(),)  # the carrier itself is not finalized
    assert (new.last_pow, new.last_pow_bits) == (carrier.ref(), pow_header.bits)
    assert new.fees == 5  # the 70 were minted by the carrier
    after = rules.import_block(new, child(carrier), block_fees=3)
    assert after.fees == 8 and after.finalized == new.finalized
    assert after.unfinalized == (carrier.ref(), child(carrier).ref())
    assert rules.blocks_since_pow(after) == 2


def test_import_refuses_what_would_break_the_chain(pow_header: AuxPowHeader) -> None:
    state = _state(BLOCKS[4], finalized=0, last_pow=0)
    assert rule(rules.import_block, state, child(BLOCKS[3]), 0) == "fork"
    carrier = child(BLOCKS[4], header=pow_header)
    with pytest.raises(ValueError, match="needs the block its range ends at"):
        rules.import_block(state, carrier, 0, range_end=BLOCKS[2])


def test_pow_problems_name_why_a_queued_pow_cannot_be_carried(pow_header: AuxPowHeader) -> None:
    state = _state(BLOCKS[4], finalized=0, last_pow=0)
    assert rules.pow_problem(state, pow_header, BITS) is None
    stale = rules.pow_problem(state, pow_header, HARD_BITS)
    assert stale is not None and stale.rule == "auxpow-bits" and "stale" in stale.message
    moved = _state(BLOCKS[4], finalized=2, last_pow=3)
    problem = rules.pow_problem(moved, pow_header, BITS)
    assert problem is not None and problem.rule == "auxpow-range"
    stray = attrs.evolve(pow_header, range_end=bytes(32))
    problem = rules.pow_problem(state, stray, BITS)
    assert problem is not None and "not an unfinalized block" in problem.message


def test_only_an_unverifiable_refusal_is_ours_not_the_blocks() -> None:
    """The chain and sync actors do not blame a peer for a refusal that only says this node
    cannot check the block now (its bridge or federation is away)."""
    assert rules.BlockError("pegins-unverifiable", "the bridge is away").ours
    assert rules.BlockError("pegouts-unverifiable", "the federation is away").ours
    for rule in ("pegins", "pegouts", "signature", "future-slot", "fork", "withdrawals"):
        assert not rules.BlockError(rule, "x").ours


@given(st.lists(st.tuples(st.integers(0, 30), st.integers(0, 30), st.booleans()), max_size=40))
def test_a_ref_run_behaves_as_the_tuple_it_stands_for(steps: list[tuple[int, int, bool]]) -> None:
    """Extending any earlier version, slicing any version: every run stays equal to the tuple
    built the slow way (versions that share a list never see each other's refs)."""
    refs = [BlockRef(bytes([i]) * 32, i) for i in range(64)]
    runs = [rules.RefRun()]
    tuples: list[tuple[BlockRef, ...]] = [()]
    for pick, cut, extend in steps:
        k = pick % len(runs)
        if extend:
            ref = refs[len(runs) % 64]
            runs.append(runs[k].appended(ref))
            tuples.append((*tuples[k], ref))
        else:
            runs.append(runs[k][cut:])
            tuples.append(tuples[k][cut:])
        for run, expected in zip(runs, tuples, strict=True):
            assert run == expected and tuple(run) == expected and len(run) == len(expected)
            if expected:
                assert run[0] == expected[0] and run[-1] == expected[-1]


def test_a_ref_run_does_not_keep_refs_finalized_long_ago() -> None:
    """A range finalized every few blocks, over many blocks: the list behind it stays about
    the size of the range, not of the chain (found by review: it grew without end)."""
    refs = [BlockRef(bytes([i % 256]) * 32, i) for i in range(10_000)]
    run = rules.RefRun()
    for i, ref in enumerate(refs):
        run = run.appended(ref)
        if i % 10 == 9:
            run = run[8:]  # finalized up to two blocks before the head
        assert len(run._items) <= 4 * 64 + 2 * len(run)
    assert tuple(run) == tuple(refs[-len(run):])
