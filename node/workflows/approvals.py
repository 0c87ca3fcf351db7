"""Approvals across authorities, as plain rules: which proposed blocks a node holds, which
one it approves, and when one has enough approvals to be imported.

With several authorities, the slot's author signs its block and gossips it (topic
``consensus_block``) before it is part of any chain. Every authority that finds the block
valid on top of its own head signs an approval (:func:`node.workflows.chain.approve`) and
gossips it (``approve_block``). Every node — authority or not — folds the approvals it
receives into the block's aggregate (:func:`node.workflows.chain.add_approval`, which checks
each signature), and imports the block once the aggregate holds ``(2n + 2) // 3`` approvals
(ceil(2n/3), :func:`node.workflows.chain.required_approvals`).

Rules kept here (the ChainActor does the I/O):

* **Only blocks on the node's head.** A proposal is held only if its parent is the node's
  head; when the head moves, every held proposal and early approval is dropped
  (:func:`for_head`). A node that is behind catches up by sync, not by proposals.
* **One approval per height.** With several authorities, an authority approves only the
  block its authorities decided in rounds of prevotes and precommits
  (:mod:`node.workflows.prevotes`, which argues why two blocks cannot both reach
  ceil(2n/3)); the producer's own signature on its block counts as its approval.
* **Approvals may arrive before their block** (gossip does not keep order across topics):
  they wait, at most :data:`MAX_EARLY`, and are folded in when the block comes; those for a
  block that never comes go with the head.
* **Bounded.** At most :data:`MAX_PROPOSALS` blocks per head: beyond, the oldest that no
  vote names goes (rounds of votes bring a fresh block every slot until one is decided).
* **Every held aggregate verifies.** A block is held only once validated with its
  aggregate signature checked (:func:`node.workflows.chain.validate_block`), or signed by
  this node; a copy replaces it only if validated the same way; each approval folded in is
  checked first (this node's own, just signed, aside). So the aggregate of a held block is a
  sum of signatures each known good, and its import need not check it again (the ChainActor
  imports a ready block with ``signature_checked``: one pairing check less per block).

A proposal that has not gathered enough approvals stays held: its producer gossips it again
every slot (peers that saw it drop the copy; peers that were away get it), so authorities
coming back approve it and the chain goes on. While it waits, the ChainActor says so in the
log and ``/ready``.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Final

import attrs

from node.crypto import bls
from node.types.chain import IndividualApproval, SignedConsensusBlock
from node.workflows.chain import BlockError, add_approval, required_approvals

__all__ = [
    "MAX_EARLY",
    "MAX_PROPOSALS",
    "Proposals",
    "add",
    "approved",
    "drop",
    "for_head",
    "mark_approved",
    "propose",
    "ready",
]

#: Proposals held per head, at most.
MAX_PROPOSALS: Final = 8
#: Approvals held for blocks not seen yet, at most.
MAX_EARLY: Final = 64


@attrs.frozen
class Proposals:
    """The blocks proposed on top of ``head`` (a block hash) and what is known of them."""

    head: bytes
    #: Proposed blocks with the approvals gathered so far, in arrival order.
    blocks: tuple[SignedConsensusBlock, ...] = ()
    #: The block this node approved on this head (at most one), if any.
    approved_hash: bytes | None = None
    #: Approvals that came before their block: (block hash, approval).
    early: tuple[tuple[bytes, IndividualApproval], ...] = ()
    #: Blocks that failed their import (the execution engine refused the payload): never
    #: held again on this head.
    refused: tuple[bytes, ...] = ()

    def get(self, block_hash: bytes) -> SignedConsensusBlock | None:
        for block in self.blocks:
            if block.hash() == block_hash:
                return block
        return None


def for_head(proposals: Proposals, head: bytes) -> Proposals:
    """The proposals for a node whose head is ``head``: the same if it did not move, else
    none."""
    return proposals if proposals.head == head else Proposals(head)


def _replace(proposals: Proposals, block: SignedConsensusBlock) -> Proposals:
    block_hash = block.hash()
    return attrs.evolve(proposals, blocks=tuple(block if b.hash() == block_hash else b
                                                for b in proposals.blocks))


def propose(proposals: Proposals, block: SignedConsensusBlock,
            authorities: Sequence[bls.PublicKey], keep: Collection[bytes] = ()) -> Proposals:
    """Hold ``block`` (already validated on top of the head, approvals not required), with
    the approvals that came early for it. A block already held gains the approvals this copy
    carries. Beyond :data:`MAX_PROPOSALS` the oldest block held goes, unless it is approved
    here or named in ``keep`` (the blocks votes name: locked, decided); raises BlockError
    for a block that is not on the head, or when every held block is to be kept."""
    if block.message.parent_hash != proposals.head:
        raise BlockError("proposal", "the block does not build on this node's head")
    block_hash = block.hash()
    if block_hash in proposals.refused:
        raise BlockError("proposal", "the block failed its import here already")
    held = proposals.get(block_hash)
    if held is None:
        if len(proposals.blocks) >= MAX_PROPOSALS:
            # Rounds of votes bring a fresh block each slot while no block is decided: the
            # oldest that nothing names goes.
            kept = {*keep, proposals.approved_hash}
            oldest = next((b for b in proposals.blocks if b.hash() not in kept), None)
            if oldest is None:
                raise BlockError("proposal", f"{MAX_PROPOSALS} blocks are proposed on this "
                                 "head already, each of them named by a vote")
            proposals = attrs.evolve(proposals, blocks=tuple(
                b for b in proposals.blocks if b is not oldest))
        proposals = attrs.evolve(proposals, blocks=(*proposals.blocks, block))
        held = block
    else:
        mine, theirs = held.signature.bitfield, block.signature.bitfield
        if theirs != mine and theirs | mine == theirs:
            # Another copy carrying every approval ours has, and more (its aggregate was
            # checked with the block): take it.
            proposals = _replace(proposals, block)
            held = block
    early = [e for e in proposals.early if e[0] == block_hash]
    proposals = attrs.evolve(proposals, early=tuple(e for e in proposals.early
                                                    if e[0] != block_hash))
    for _, approval in early:
        try:
            held = add_approval(held, approval, authorities)
        except BlockError:
            continue  # a bad early approval is dropped; its sender was not known then
    return _replace(proposals, held)


def add(proposals: Proposals, block_hash: bytes, approval: IndividualApproval,
        authorities: Sequence[bls.PublicKey], *, own: bool = False) -> Proposals:
    """Fold ``approval`` into the held block ``block_hash`` (its signature checked: a
    BlockError if it does not verify or names no authority), or keep it for a block not seen
    yet (the oldest early approval goes beyond :data:`MAX_EARLY`). ``own``: this node signed
    it just now, so its signature is not checked again."""
    held = proposals.get(block_hash)
    if held is None:
        early = (*proposals.early, (block_hash, approval))[-MAX_EARLY:]
        return attrs.evolve(proposals, early=early)
    return _replace(proposals, add_approval(held, approval, authorities, own=own))


def approved(proposals: Proposals) -> bool:
    """Whether this node approved a block on this head already."""
    return proposals.approved_hash is not None


def mark_approved(proposals: Proposals, block_hash: bytes) -> Proposals:
    """This node approved ``block_hash`` (held); a second approval on one head is refused."""
    if proposals.approved_hash not in (None, block_hash):
        raise BlockError("approval", "this node approved another block on this head")
    if proposals.get(block_hash) is None:
        raise BlockError("approval", "the block is not held")
    return attrs.evolve(proposals, approved_hash=block_hash)


def drop(proposals: Proposals, block_hash: bytes) -> Proposals:
    """``block_hash`` failed its import (its payload does not execute): forget it, refuse it
    from now on, and if this node had approved it, free its approval for another block on
    this head (no honest node can import the refused one, so no two blocks can be)."""
    return attrs.evolve(
        proposals,
        blocks=tuple(b for b in proposals.blocks if b.hash() != block_hash),
        approved_hash=None if proposals.approved_hash == block_hash
        else proposals.approved_hash,
        refused=(*proposals.refused, block_hash)[-MAX_PROPOSALS:])


def ready(proposals: Proposals, authority_count: int) -> SignedConsensusBlock | None:
    """A held block with enough approvals to be imported (the first, if several)."""
    needed = required_approvals(authority_count)
    for block in proposals.blocks:
        if block.signature.count() >= needed:
            return block
    return None
