"""Requests to the ChainActor, and what it publishes."""

from __future__ import annotations

from typing import Any, Final

import attrs

import otp

from ..types.chain import AuxPowHeader, BlockRef, IndividualApproval, SignedConsensusBlock
from ..workflows.chain import BlockError

#: The bus topic of :class:`BlockImported` events.
BLOCKS_TOPIC: Final = "chain.blocks"


@attrs.frozen
class GetStatus(otp.Request["ChainStatus"]):
    """The chain's state, as :class:`ChainStatus`."""


@attrs.frozen
class ChainStatus:
    head: BlockRef | None
    finalized: BlockRef | None
    queued_pow: AuxPowHeader | None
    synced: bool
    paused: bool
    authority_index: int | None
    authorities: int
    #: The bits the next AuxPoW must meet.
    bits: int
    #: The block carrying the latest AuxPoW: ``createauxblock`` answers its hash as
    #: ``previousblockhash`` and its height + 1 as ``height`` (see ``rules.make_work``).
    last_pow: BlockRef | None = None
    #: Why production waits for other authorities, if it does ("block #5 ... waits for 2
    #: approvals of 3 authorities (has 1)").
    waiting: str | None = None


@attrs.frozen
class GetUnfinalized(otp.Request[list[BlockRef]]):
    """The canonical blocks after the last finalized one, up to the head, as BlockRefs."""


@attrs.frozen
class QueuePow(otp.Request[BlockError | None]):
    """A checked AuxPoW header for the next produced block (from the AuxPowActor); replies
    None, or the BlockError that makes it unusable."""

    header: AuxPowHeader


@attrs.frozen
class ImportBlock(otp.Request[BlockRef | Exception]):
    """A block received from elsewhere (the network, a test); replies its BlockRef, or the
    BlockError (or sibling error) that kept it out."""

    block: SignedConsensusBlock


@attrs.frozen
class ImportBlocks(otp.Request["ImportedBlocks"]):
    """Consecutive blocks from sync, each the child of the one before, the first a child of
    the head; imported in order until one fails. ``signatures_verified``: their aggregate
    signatures were checked already, in a batch (every other rule is still checked here)."""

    blocks: tuple[SignedConsensusBlock, ...]
    signatures_verified: bool = False
    #: False: history for snap sync — each block checked by every consensus rule but its
    #: withdrawals and stored without executing its payload (the engine takes the state at
    #: the last of them with :class:`PivotAtHead`).
    execute: bool = True


@attrs.frozen
class PivotAtHead(otp.Request["BlockRef | Exception"]):
    """Snap sync: the engine holds the whole state at the head's payload (downloaded; the
    blocks up to the head were imported with ``execute=False``): make the head's payload the
    engine's head, with its ancestors' headers, so that the next block executes on it.
    Replies the head's BlockRef, or the exception saying why not (nothing changed).
    ``state_whole``: the caller's download found the state whole (every value checked
    against its hash, every child fetched: :mod:`node.workflows.state_sync`), so the engine
    need not walk it again."""

    state_whole: bool = False


@attrs.frozen
class ImportedBlocks:
    """How many of an :class:`ImportBlocks` were imported, the head after them, and the
    error that stopped the rest (None when all were)."""

    count: int
    head: BlockRef
    error: Exception | None = None


@attrs.frozen
class AddApproval(otp.Request[BlockRef | BlockError | None]):
    """Another authority's approval of the block this node produced and holds until it has
    ceil(2n/3) approvals; replies the imported block's BlockRef once it has them, else None
    (a BlockError for an approval that does not verify)."""

    approval: IndividualApproval


@attrs.frozen
class ProduceNow(otp.Request[Any]):
    """Produce a block for the current slot now, if this node is its author (tests, tools)."""


@attrs.frozen
class BlockImported:
    """Published on the bus topic :data:`BLOCKS_TOPIC` after every import."""

    ref: BlockRef
    slot: int
    finalized: BlockRef
    produced: bool
