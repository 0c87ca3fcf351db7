"""The approval rules (node.workflows.approvals) on their own: held proposals, approvals in
any order, one approval per height, bounds."""

from __future__ import annotations

from functools import cache
from typing import Any

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from node.crypto import bls
from node.types.chain import IndividualApproval, SignedConsensusBlock
from node.workflows import approvals
from node.workflows import chain as rules

from .factories import chain

KEYS = [bls.SecretKey.from_seed(bytes([i + 1]) * 32) for i in range(4)]
AUTHORITIES = [k.public_key() for k in KEYS]


@cache
def parent() -> SignedConsensusBlock:
    return chain(1)[0]


def proposal(slot: int = 4) -> SignedConsensusBlock:
    """A block on :func:`parent` signed by its slot's author (slot % 4)."""
    child = chain(2)[1].message
    block = attrs.evolve(child, slot=slot)
    return rules.sign_block(block, KEYS[slot % 4], slot % 4)


def test_a_block_gathers_approvals_until_it_is_ready() -> None:
    block = proposal()
    held = approvals.propose(approvals.Proposals(parent().hash()), block, AUTHORITIES)
    assert approvals.ready(held, 4) is None  # 1 of 3
    for index in (1, 2):
        held = approvals.add(held, block.hash(), rules.approve(block.hash(), KEYS[index], index),
                             AUTHORITIES)
    ready = approvals.ready(held, 4)
    assert ready is not None and ready.signature.indexes() == [0, 1, 2]


@settings(max_examples=30, deadline=None)
@given(order=st.permutations(["block", 1, 2, 3]))
def test_approvals_may_come_before_their_block(order: list[object]) -> None:
    block = proposal()
    held = approvals.Proposals(parent().hash())
    for item in order:
        if item == "block":
            held = approvals.propose(held, block, AUTHORITIES)
        else:
            assert isinstance(item, int)
            held = approvals.add(held, block.hash(),
                                 rules.approve(block.hash(), KEYS[item], item), AUTHORITIES)
    got = held.get(block.hash())
    assert got is not None and got.signature.indexes() == [0, 1, 2, 3]
    assert not held.early


def test_a_bad_approval_is_refused_and_a_bad_early_one_dropped() -> None:
    block = proposal()
    wrong = rules.approve(bytes(32), KEYS[1], 1)  # signs another hash
    held = approvals.propose(approvals.Proposals(parent().hash()), block, AUTHORITIES)
    with pytest.raises(rules.BlockError):
        approvals.add(held, block.hash(), wrong, AUTHORITIES)
    early = approvals.add(approvals.Proposals(parent().hash()), block.hash(), wrong, AUTHORITIES)
    held = approvals.propose(early, block, AUTHORITIES)
    got = held.get(block.hash())
    assert got is not None and got.signature.indexes() == [0] and not held.early


def test_one_approval_per_height() -> None:
    first, second = proposal(4), proposal(5)
    held = approvals.propose(approvals.Proposals(parent().hash()), first, AUTHORITIES)
    held = approvals.propose(held, second, AUTHORITIES)
    held = approvals.mark_approved(held, first.hash())
    assert approvals.approved(held)
    with pytest.raises(rules.BlockError, match="approved another block"):
        approvals.mark_approved(held, second.hash())
    assert approvals.mark_approved(held, first.hash()) == held


def test_only_blocks_on_the_head_and_only_so_many() -> None:
    with pytest.raises(rules.BlockError, match="does not build on"):
        approvals.propose(approvals.Proposals(bytes(32)), proposal(), AUTHORITIES)
    held = approvals.Proposals(parent().hash())
    for slot in range(4, 4 + approvals.MAX_PROPOSALS):
        held = approvals.propose(held, proposal(slot), AUTHORITIES)
    # Full: the oldest block no vote names goes for the new one.
    newest = proposal(4 + approvals.MAX_PROPOSALS)
    named = tuple(b.hash() for b in held.blocks)
    after = approvals.propose(held, newest, AUTHORITIES, keep=named[1:])
    assert len(after.blocks) == approvals.MAX_PROPOSALS
    assert after.get(named[0]) is None and after.get(newest.hash()) is not None
    with pytest.raises(rules.BlockError, match="proposed on this head already"):
        approvals.propose(held, newest, AUTHORITIES, keep=named)
    assert approvals.for_head(held, parent().hash()) is held
    assert approvals.for_head(held, bytes(32)) == approvals.Proposals(bytes(32))


def test_early_approvals_are_bounded() -> None:
    held = approvals.Proposals(parent().hash())
    approval = rules.approve(bytes(32), KEYS[1], 1)
    for i in range(approvals.MAX_EARLY + 10):
        held = approvals.add(held, i.to_bytes(32, "big"), approval, AUTHORITIES)
    assert len(held.early) == approvals.MAX_EARLY
    assert held.early[0][0] == (10).to_bytes(32, "big")  # the oldest went first


def test_a_copy_with_more_approvals_replaces_the_held_one() -> None:
    block = proposal()
    held = approvals.propose(approvals.Proposals(parent().hash()), block, AUTHORITIES)
    fuller = rules.add_approval(block, rules.approve(block.hash(), KEYS[1], 1), AUTHORITIES)
    held = approvals.propose(held, fuller, AUTHORITIES)
    got = held.get(block.hash())
    assert got is not None and got.signature.indexes() == [0, 1]
    held = approvals.propose(held, block, AUTHORITIES)  # a poorer copy changes nothing
    got = held.get(block.hash())
    assert got is not None and got.signature.indexes() == [0, 1]


def test_a_block_that_does_not_import_is_dropped_and_frees_the_approval() -> None:
    first, second = proposal(4), proposal(5)
    held = approvals.mark_approved(
        approvals.propose(approvals.Proposals(parent().hash()), first, AUTHORITIES),
        first.hash())
    held = approvals.drop(held, first.hash())
    assert held.get(first.hash()) is None and not approvals.approved(held)
    with pytest.raises(rules.BlockError, match="failed its import"):
        approvals.propose(held, first, AUTHORITIES)
    held = approvals.mark_approved(approvals.propose(held, second, AUTHORITIES), second.hash())
    assert held.approved_hash == second.hash()


# -- approvals checked together (approvals.offer / approvals.check) ---------------------------


def test_approvals_wait_until_they_could_complete_the_aggregate_then_are_checked_together(
) -> None:
    block = proposal()  # slot 4: authority 0's, its signature the first of 3 needed
    held = approvals.propose(approvals.Proposals(parent().hash()), block, AUTHORITIES)
    offered = approvals.offer(held, block.hash(), rules.approve(block.hash(), KEYS[1], 1),
                              AUTHORITIES, source="p1")
    assert offered.checked == () and offered.bad == ()  # 2 of 3 at most: it waits
    got = offered.proposals.get(block.hash())
    assert got is not None and got.signature.indexes() == [0]
    assert len(offered.proposals.unchecked) == 1
    assert approvals.ready(offered.proposals, 4) is None
    offered = approvals.offer(offered.proposals, block.hash(),
                              rules.approve(block.hash(), KEYS[2], 2), AUTHORITIES, source="p2")
    assert [c.source for c in offered.checked] == ["p1", "p2"] and offered.bad == ()
    ready = approvals.ready(offered.proposals, 4)
    assert ready is not None and ready.signature.indexes() == [0, 1, 2]
    assert offered.proposals.unchecked == ()
    assert _aggregate_verifies(ready)  # a real aggregate, as the import would check


def _aggregate_verifies(block: SignedConsensusBlock) -> bool:
    return bls.fast_aggregate_verify([AUTHORITIES[i] for i in block.signature.indexes()],
                                     block.signing_root(),
                                     bls.Signature.from_bytes(block.signature.signature))


def test_a_bad_approval_in_the_batch_is_found_and_named_and_never_counted() -> None:
    block = proposal()
    held = approvals.propose(approvals.Proposals(parent().hash()), block, AUTHORITIES)
    forged = rules.approve(bytes(32), KEYS[2], 2)  # authority 2's real key, another hash
    offered = approvals.offer(held, block.hash(), forged, AUTHORITIES, source="liar")
    offered = approvals.offer(offered.proposals, block.hash(),
                              rules.approve(block.hash(), KEYS[1], 1), AUTHORITIES, source="p1")
    assert [c.source for c in offered.checked] == ["p1"]
    [(bad, why)] = offered.bad
    assert bad.source == "liar" and "authority 2" in why and "does not verify" in why
    got = offered.proposals.get(block.hash())
    assert got is not None and got.signature.indexes() == [0, 1]
    assert approvals.ready(offered.proposals, 4) is None and not offered.proposals.unchecked


def test_a_forged_approval_sent_first_does_not_shut_out_the_real_one() -> None:
    block = proposal()
    held = approvals.propose(approvals.Proposals(parent().hash()), block, AUTHORITIES)
    forged = approvals.Unchecked(block.hash(), rules.approve(bytes(32), KEYS[1], 1), "liar")
    offered = approvals.offer(held, block.hash(), forged.approval, AUTHORITIES, source="liar")
    assert offered.proposals.unchecked == (forged,)
    again = approvals.offer(offered.proposals, block.hash(), forged.approval, AUTHORITIES,
                            source="other")
    assert again.proposals == offered.proposals  # the same copy: nothing new
    real = rules.approve(block.hash(), KEYS[1], 1)
    offered = approvals.offer(offered.proposals, block.hash(), real, AUTHORITIES, source="p1")
    # Two different approvals naming authority 1: both checked at once, short of a quorum.
    assert [(c.approval, c.source) for c in offered.checked] == [(real, "p1")]
    assert [b.source for b, _why in offered.bad] == ["liar"]
    got = offered.proposals.get(block.hash())
    assert got is not None and got.signature.indexes() == [0, 1]
    # Counted now: another copy of authority 1's approval changes nothing.
    assert approvals.offer(offered.proposals, block.hash(), real, AUTHORITIES).proposals \
        == offered.proposals


def test_check_settles_what_waits_short_of_a_quorum() -> None:
    block, other = proposal(4), proposal(5)
    held = approvals.propose(approvals.Proposals(parent().hash()), block, AUTHORITIES)
    held = approvals.propose(held, other, AUTHORITIES)
    offered = approvals.offer(held, block.hash(), rules.approve(block.hash(), KEYS[1], 1),
                              AUTHORITIES, source="p1")
    offered = approvals.offer(offered.proposals, other.hash(),
                              rules.approve(block.hash(), KEYS[2], 2), AUTHORITIES,
                              source="liar")  # authority 2 approved the other block
    assert len(offered.proposals.unchecked) == 2
    only = approvals.check(offered.proposals, AUTHORITIES, block_hash=block.hash(),
                           force=False)
    assert only.checked == () and only.proposals == offered.proposals  # 2 of 3: waits
    settled = approvals.check(offered.proposals, AUTHORITIES)
    assert [c.source for c in settled.checked] == ["p1"]
    assert [b.source for b, _why in settled.bad] == ["liar"]
    assert settled.proposals.unchecked == ()
    got = settled.proposals.get(block.hash())
    assert got is not None and got.signature.indexes() == [0, 1]
    other_held = settled.proposals.get(other.hash())
    assert other_held is not None and other_held.signature.indexes() == [1]


def test_an_offered_approval_out_of_range_is_refused_and_dropped_blocks_take_theirs() -> None:
    block = proposal()
    held = approvals.propose(approvals.Proposals(parent().hash()), block, AUTHORITIES)
    with pytest.raises(rules.BlockError, match="no authority 4"):
        approvals.offer(held, block.hash(), rules.approve(block.hash(), KEYS[1], 4),
                        AUTHORITIES)
    offered = approvals.offer(held, block.hash(), rules.approve(block.hash(), KEYS[1], 1),
                              AUTHORITIES)
    assert approvals.drop(offered.proposals, block.hash()).unchecked == ()
    # A block not seen yet: the approval waits with the early ones, as with add.
    early = approvals.offer(held, bytes(32), rules.approve(bytes(32), KEYS[1], 1), AUTHORITIES)
    assert early.proposals.early and not early.proposals.unchecked


@settings(max_examples=25, deadline=None)
@given(hostile=st.lists(st.tuples(st.integers(0, 3), st.binary(min_size=96, max_size=96),
                                  st.booleans()), max_size=6),
       order=st.randoms(use_true_random=False))
def test_hostile_approvals_are_found_bad_and_only_real_ones_counted(
        hostile: list[tuple[int, bytes, bool]], order: Any) -> None:
    """Garbage signatures (undecodable or not in the group), real signatures of the wrong
    block, mixed in any order with the three real approvals: every hostile one is reported
    (or ignored as naming an authority counted already), and the block ends with exactly
    its real approvals, its aggregate valid."""
    block = proposal()
    held = approvals.propose(approvals.Proposals(parent().hash()), block, AUTHORITIES)
    items: list[tuple[IndividualApproval, str]] = []
    for index, raw, wrong_block in hostile:
        approval = (rules.approve(bytes(32), KEYS[index], index) if wrong_block
                    else IndividualApproval(raw, index))
        items.append((approval, "liar"))
    items += [(rules.approve(block.hash(), KEYS[i], i), f"p{i}") for i in (1, 2, 3)]
    order.shuffle(items)
    proposals, checked, bad = held, [], []
    for approval, source in items:
        offered = approvals.offer(proposals, block.hash(), approval, AUTHORITIES,
                                  source=source)
        proposals, checked, bad = (offered.proposals, checked + list(offered.checked),
                                   bad + list(offered.bad))
    settled = approvals.check(proposals, AUTHORITIES)
    checked += settled.checked
    bad += settled.bad
    assert all(b.source == "liar" for b, _why in bad)
    assert all(c.source != "liar" for c in checked)
    got = settled.proposals.get(block.hash())
    assert got is not None and got.signature.indexes() == [0, 1, 2, 3]
    assert _aggregate_verifies(got)
