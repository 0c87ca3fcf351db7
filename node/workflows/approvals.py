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

* **Approvals are checked together** (:func:`offer`): a peer's approval of a held block
  waits, unchecked and uncounted, until with the approvals already counted it could make
  the quorum; then every waiting approval of that block is checked in one batch
  (:func:`node.crypto.batch.verify_one_message`: they all sign the block's signing root, so
  one hash and two Miller loops, with random coefficients so that invalid signatures cannot
  cancel out; each one alone if the batch fails, so every bad approval is found and its
  sender named). :func:`check` checks what still waits (the ChainActor calls it a moment
  after an approval began to wait, and each slot), so approvals that cannot make a quorum
  here are checked and passed on all the same. A second, different approval naming the same
  authority for one block has both checked at once: a forged copy sent first cannot shut
  out the real one. Only checked approvals are counted, folded into the aggregate or passed
  on.

A proposal that has not gathered enough approvals stays held: its producer gossips it again
every slot (peers that saw it drop the copy; peers that were away get it), so authorities
coming back approve it and the chain goes on. While it waits, the ChainActor says so in the
log and ``/ready``.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Final

import attrs

from node.crypto import batch, bls
from node.types.chain import AggregateApproval, IndividualApproval, SignedConsensusBlock
from node.workflows.chain import BlockError, add_approval, required_approvals

__all__ = [
    "MAX_EARLY",
    "MAX_PROPOSALS",
    "Offered",
    "Proposals",
    "Unchecked",
    "add",
    "approved",
    "check",
    "drop",
    "for_head",
    "mark_approved",
    "offer",
    "propose",
    "ready",
]

#: Proposals held per head, at most.
MAX_PROPOSALS: Final = 8
#: Approvals held for blocks not seen yet, at most.
MAX_EARLY: Final = 64


@attrs.frozen
class Unchecked:
    """A peer's approval of a held block, not checked yet; ``source`` is the peer it came
    from (empty if not known)."""

    block_hash: bytes
    approval: IndividualApproval
    source: str = ""


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
    #: Approvals of held blocks waiting to be checked (:func:`offer`), in arrival order: at
    #: most one per block and authority, except two that differ, which are checked at once.
    unchecked: tuple[Unchecked, ...] = ()

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
            gone = oldest.hash()
            proposals = attrs.evolve(
                proposals, blocks=tuple(b for b in proposals.blocks if b is not oldest),
                unchecked=tuple(u for u in proposals.unchecked if u.block_hash != gone))
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
    index = approval.authority_index
    if own and 0 <= index < len(authorities) and not held.signature.bitfield >> index & 1:
        # Signed here just now, the held aggregate checked: summed without decoding either.
        aggregate = bls.aggregate_valid([held.signature.signature, approval.signature])
        return _replace(proposals, attrs.evolve(held, signature=AggregateApproval(
            held.signature.bitfield | 1 << index, aggregate)))
    return _replace(proposals, add_approval(held, approval, authorities, own=own))


@attrs.frozen
class Offered:
    """What :func:`offer` or :func:`check` leaves: the proposals, the approvals found good
    (counted now: to be passed on to the peers but their source) and those found bad, with
    why (their sources to be reported)."""

    proposals: Proposals
    checked: tuple[Unchecked, ...] = ()
    bad: tuple[tuple[Unchecked, str], ...] = ()


def offer(proposals: Proposals, block_hash: bytes, approval: IndividualApproval,
          authorities: Sequence[bls.PublicKey], *, source: str = "") -> Offered:
    """A peer's approval: kept for a block not seen yet (as :func:`add`), nothing for an
    authority the held block counts already, else waiting unchecked until it could complete
    the quorum, then checked with every approval waiting for that block (see the module
    docstring). BlockError for an authority index out of range."""
    held = proposals.get(block_hash)
    if held is None:
        early = (*proposals.early, (block_hash, approval))[-MAX_EARLY:]
        return Offered(attrs.evolve(proposals, early=early))
    index = approval.authority_index
    if not 0 <= index < len(authorities):
        raise BlockError("approval-index", f"no authority {index}")
    if held.signature.bitfield >> index & 1:
        return Offered(proposals)
    same = [u for u in proposals.unchecked
            if u.block_hash == block_hash and u.approval.authority_index == index]
    if any(u.approval.signature == approval.signature for u in same):
        return Offered(proposals)  # a copy of one waiting already
    proposals = attrs.evolve(proposals, unchecked=(*proposals.unchecked,
                                                   Unchecked(block_hash, approval, source)))
    # Two different approvals naming one authority: at most one is real; check both now.
    return _check(proposals, authorities, block_hash, force=bool(same))


def check(proposals: Proposals, authorities: Sequence[bls.PublicKey], *,
          block_hash: bytes | None = None, force: bool = True) -> Offered:
    """Check the approvals waiting for each held block (or for ``block_hash`` only): all of
    them (``force``), or only those of a block that, with them, could reach its quorum."""
    blocks = [block_hash] if block_hash is not None else \
        list(dict.fromkeys(u.block_hash for u in proposals.unchecked))
    checked: list[Unchecked] = []
    bad: list[tuple[Unchecked, str]] = []
    for block in blocks:
        got = _check(proposals, authorities, block, force=force)
        proposals = got.proposals
        checked += got.checked
        bad += got.bad
    return Offered(proposals, tuple(checked), tuple(bad))


def _check(proposals: Proposals, authorities: Sequence[bls.PublicKey], block_hash: bytes, *,
           force: bool) -> Offered:
    held = proposals.get(block_hash)
    waiting = [u for u in proposals.unchecked if u.block_hash == block_hash]
    if held is None or not waiting:
        return Offered(proposals)
    bitfield = held.signature.bitfield
    # Those naming an authority the block counts already (a fuller copy came) go unchecked.
    waiting = [u for u in waiting if not bitfield >> u.approval.authority_index & 1]
    named = {u.approval.authority_index for u in waiting}
    if not force and bitfield.bit_count() + len(named) < required_approvals(len(authorities)):
        return Offered(proposals)
    rest = tuple(u for u in proposals.unchecked if u.block_hash != block_hash)
    verdict = batch.verify_one_message(
        [authorities[u.approval.authority_index] for u in waiting], held.signing_root(),
        [u.approval.signature for u in waiting])
    good = [u for i, u in enumerate(waiting) if i not in verdict.reasons]
    bad = tuple((u, f"approval of authority {u.approval.authority_index}: {verdict.reasons[i]}")
                for i, u in enumerate(waiting) if i in verdict.reasons)
    proposals = attrs.evolve(proposals, unchecked=rest)
    if good:
        # A valid BLS signature is the only one of its key and message: one per authority.
        # The held aggregate and these were all checked: summed without decoding them again.
        aggregate = bls.aggregate_valid([held.signature.signature,
                                         *(u.approval.signature for u in good)])
        for u in good:
            bitfield |= 1 << u.approval.authority_index
        proposals = _replace(proposals, attrs.evolve(
            held, signature=AggregateApproval(bitfield, aggregate)))
    return Offered(proposals, tuple(good), bad)


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
        unchecked=tuple(u for u in proposals.unchecked if u.block_hash != block_hash),
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
