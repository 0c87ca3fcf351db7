"""Which signature each block implies, checked for many blocks at once (sync's verification).

A block's aggregate approval is valid under exactly the rules :func:`node.workflows.chain.
validate_block` applies one block at a time, which this module must match (a test holds them
to it on generated blocks):

* the slot's author (``authorities[slot % n]``) is in the bitfield;
* the bitfield names no authority beyond the ``n`` configured;
* the signature decodes (canonical, on the curve, in G2) and is the aggregate of the
  bitfield's authorities' signatures over the block's signing root (``FastAggregateVerify``);
* with ``require_approvals`` (the default, as in ``validate_block``), the bitfield holds at
  least ``(2n + 2) // 3`` authorities.

The first two and the last are plain checks done here; the signatures of every block that
passes them go to :func:`node.crypto.batch.verify_batch` as one random-coefficient batch.
Only the signature rules are checked: parents, slots, PoW and payloads are ``validate_block``'s.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..crypto import bls
from ..crypto.batch import SignatureSet, verify_batch
from ..crypto.verifier import KeyedSet, SignatureVerifier, verify_keyed
from ..types.chain import SignedConsensusBlock
from .chain import author_index, required_approvals

__all__ = ["BlockSignatures", "block_signatures", "check_blocks", "verify_blocks"]


class BlockSignatures:
    """The plan for a list of blocks: the sets to verify, and the blocks already refused."""

    __slots__ = ("owners", "refused", "sets")

    def __init__(self) -> None:
        #: One signature set per block that passed the plain checks.
        self.sets: list[SignatureSet] = []
        #: ``owners[j]`` is the index of the block ``sets[j]`` belongs to.
        self.owners: list[int] = []
        #: Blocks refused by a plain check: index -> (rule, message), rules named as
        #: ``validate_block`` names them.
        self.refused: dict[int, tuple[str, str]] = {}

    def bad_blocks(self, bad_sets: Sequence[int]) -> list[int]:
        """The indexes of every bad block, ascending, given the indexes of the bad sets."""
        return sorted({*self.refused, *(self.owners[j] for j in bad_sets)})


def block_signatures(
    blocks: Sequence[SignedConsensusBlock],
    authorities: Sequence[bls.PublicKey],
    *,
    require_approvals: bool = True,
) -> BlockSignatures:
    """What verifying ``blocks``' approvals under ``authorities`` takes (pure; computes each
    block's signing root)."""
    plan = BlockSignatures()
    keyed = _plan(plan, blocks, len(authorities), require_approvals)
    plan.sets = [SignatureSet([authorities[i] for i in indexes], root, signature)
                 for indexes, root, signature in keyed]
    return plan


def _plan(plan: BlockSignatures, blocks: Sequence[SignedConsensusBlock], n: int,
          require_approvals: bool) -> list[KeyedSet]:
    """Fill ``plan.owners`` and ``plan.refused``; the sets to verify, keys by index."""
    if n == 0:
        raise ValueError("no authorities")
    needed = required_approvals(n)
    keyed: list[KeyedSet] = []
    for index, signed in enumerate(blocks):
        approvals = signed.signature
        producer = author_index(signed.message.slot, n)
        indexes = approvals.indexes()
        if not approvals.bitfield >> producer & 1:
            plan.refused[index] = ("author", f"slot {signed.message.slot} belongs to authority "
                                   f"{producer}")
        elif any(i >= n for i in indexes):
            plan.refused[index] = ("approval-index", f"bitfield names authorities beyond {n}")
        elif require_approvals and len(indexes) < needed:
            plan.refused[index] = ("approvals", f"{len(indexes)} approvals, {needed} needed")
        else:
            keyed.append((tuple(indexes), signed.signing_root(), approvals.signature))
            plan.owners.append(index)
    return keyed


def check_blocks(
    blocks: Sequence[SignedConsensusBlock],
    authorities: Sequence[bls.PublicKey],
    *,
    require_approvals: bool = True,
) -> list[int]:
    """The indexes of the blocks whose approvals are not valid, ascending (synchronous and
    CPU-bound: see :func:`verify_blocks`)."""
    plan = block_signatures(blocks, authorities, require_approvals=require_approvals)
    return plan.bad_blocks(verify_batch(plan.sets).bad)


async def verify_blocks(
    blocks: Sequence[SignedConsensusBlock],
    authorities: Sequence[bls.PublicKey],
    verifier: SignatureVerifier,
    *,
    require_approvals: bool = True,
) -> list[int]:
    """:func:`check_blocks` with the signature work in ``verifier``'s worker (a thread, or a
    process: :class:`~node.crypto.verifier.ProcessVerifier`), off the calling actor's path.
    The plain checks and the signing roots are computed here; the worker gets bytes only (the
    authorities' keys, and per block the indexes of its signers, its signing root and its
    signature: :func:`~node.crypto.verifier.verify_keyed`). Blocks are sent in chunks of the
    verifier's :attr:`~SignatureVerifier.chunk`, so cancellation waits for one chunk at
    most."""
    keys = tuple(key.to_bytes() for key in authorities)
    bad: list[int] = []
    for start in range(0, len(blocks), verifier.chunk):
        part = blocks[start:start + verifier.chunk]
        plan = BlockSignatures()
        keyed = _plan(plan, part, len(keys), require_approvals)
        verdict = await verifier.run(verify_keyed, keys, keyed) if keyed else None
        bad_sets = () if verdict is None else verdict.bad
        verifier.record(len(keyed), len(bad_sets))
        bad.extend(start + i for i in plan.bad_blocks(bad_sets))
    return bad
