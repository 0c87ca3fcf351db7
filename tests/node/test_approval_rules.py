"""The approval rules (node.workflows.approvals) on their own: held proposals, approvals in
any order, one approval per height, bounds."""

from __future__ import annotations

from functools import cache

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from node.crypto import bls
from node.types.chain import SignedConsensusBlock
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
