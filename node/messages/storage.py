"""Requests to the StorageActor, and its answers.

Each request checks its fields when it is made: a height beyond ``u64``, a hash that is not
32 bytes or a value of the wrong type raises :class:`node.errors.StorageRequestError` in the
caller, so nothing malformed reaches the database. Each request declares its reply type
(``otp.Request``); a request the actor refuses anyway is answered with :class:`Refused`,
which ``node.actors.storage.call`` raises.
"""

from __future__ import annotations

import itertools
from typing import Any, Final

import attrs

import otp

from ..errors import StorageRequestError
from ..types.bitcoin import OutPoint
from ..types.chain import AuxPowHeader, BlockRef, SignedConsensusBlock, VoteLock
from ..types.pegin import Deposit, Refusal
from ..types.pegout import FederationUtxo
from ..types.pegout_book import PegOutRecord, ProposalRecord, RefusedPegOutRecord

U64_MAX: Final = (1 << 64) - 1


@attrs.frozen
class Refused:
    """The StorageActor's answer to a request it refuses; :func:`call` raises ``error``."""

    error: StorageRequestError


# Field validators: a bad value fails where the message is made, in the caller. --------------


def _height(inst: Any, attribute: Any, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= U64_MAX:
        raise StorageRequestError(
            f"{type(inst).__name__}.{attribute.name}: a height is an integer in 0..2**64-1, "
            f"not {value!r:.40}")


def _hash32(inst: Any, attribute: Any, value: Any) -> None:
    if not isinstance(value, bytes) or len(value) != 32:
        raise StorageRequestError(
            f"{type(inst).__name__}.{attribute.name}: a block hash is 32 bytes, "
            f"not {value!r:.80}")


def _fees(inst: Any, attribute: Any, value: Any) -> None:
    if value is None:
        return  # unknown: the block was stored without executing it (snap sync)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 1 << 256:
        raise StorageRequestError(
            f"{type(inst).__name__}.{attribute.name}: fees are None or an integer in "
            f"0..2**256-1 wei, not {value!r:.40}")


def _instance(kind: type[Any], optional: bool = False) -> Any:
    def check(inst: Any, attribute: Any, value: Any) -> None:
        if value is None and optional:
            return
        if not isinstance(value, kind):
            raise StorageRequestError(
                f"{type(inst).__name__}.{attribute.name}: expected {kind.__name__}"
                f"{' or None' if optional else ''}, not {type(value).__name__}")

    return check


# Messages --------------------------------------------------------------------------------------


@attrs.frozen
class PutBlock(otp.Request["BlockRef"]):
    """Store a block in one synced batch. ``head``: it becomes the head (and the canonical
    block at its height, the latest AuxPoW block if it carries a header); without it the
    block is only kept by its hash (a proposal the ChainActor voted for). ``finalized``:
    the new last finalized block, if it changed (never lower than the stored one).
    ``fees``: fees accumulated after this block and not minted yet. A block carrying the
    queued AuxPoW clears the queued record in the same batch (as the head only). Its
    parent must be stored (genesis: height 0 and a zero parent hash). Idempotent: the same
    put twice stores the same records. ``durable=False``: the batch is not fsynced (a kill
    loses nothing, the operating system has it; a power cut may lose it) — for a write that
    a synced one follows before anything depends on it (LevelDB's log is one file: the
    later fsync flushes it too), or that the network can give again."""

    block: SignedConsensusBlock = attrs.field(validator=_instance(SignedConsensusBlock))
    head: bool = True
    finalized: BlockRef | None = attrs.field(default=None,
                                             validator=_instance(BlockRef, optional=True))
    fees: int | None = attrs.field(default=0, validator=_fees)
    durable: bool = attrs.field(default=True, validator=attrs.validators.instance_of(bool))


def _puts(inst: Any, attribute: Any, value: Any) -> None:
    if not isinstance(value, tuple) or not value or not all(
            isinstance(p, PutBlock) for p in value):
        raise StorageRequestError(
            f"{type(inst).__name__}.{attribute.name}: a non-empty tuple of PutBlock, "
            f"not {value!r:.80}")
    for i, (before, after) in enumerate(itertools.pairwise(value)):
        if after.block.message.parent_hash != before.block.hash():
            raise StorageRequestError(
                f"{type(inst).__name__}.{attribute.name}[{i + 1}]: block "
                f"#{after.block.height} is not the child of the block before it in the batch")


@attrs.frozen
class PutBlocks(otp.Request["BlockRef"]):
    """Store consecutive blocks, each as :class:`PutBlock` says, in one synced batch: a
    process killed at any moment leaves all of them stored or none. Each block is the child
    of the one before it; the first one's parent must be stored. Answers the last block's
    ref. (Sync imports many blocks per call: one fsync for all of them.)"""

    puts: tuple[PutBlock, ...] = attrs.field(validator=_puts)


@attrs.frozen
class GetBlock(otp.Request["SignedConsensusBlock | None"]):
    hash: bytes = attrs.field(validator=_hash32)


@attrs.frozen
class GetBlockByHeight(otp.Request["SignedConsensusBlock | None"]):
    height: int = attrs.field(validator=_height)


@attrs.frozen
class GetCanonicalRefs(otp.Request["list[BlockRef]"]):
    """The canonical blocks at heights ``start..end`` (both included) as BlockRefs, read from
    the height index (no block is decoded); stops at the first missing height."""

    start: int = attrs.field(validator=_height)
    end: int = attrs.field(validator=_height)


def _range_count(inst: Any, attribute: Any, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 1 << 16:
        raise StorageRequestError(
            f"{type(inst).__name__}.{attribute.name}: a count is an integer in 1..65536, "
            f"not {value!r:.40}")


@attrs.frozen
class GetEncodedRange(otp.Request["list[bytes]"]):
    """The canonical blocks at heights ``start .. start + count - 1`` as stored (signed
    blocks in the consensus encoding, not decoded: what the network sends), stopping at the
    first missing height."""

    start: int = attrs.field(validator=_height)
    count: int = attrs.field(validator=_range_count)


@attrs.frozen
class GetHead(otp.Request["BlockRef | None"]):
    pass


@attrs.frozen
class GetFinalized(otp.Request["BlockRef | None"]):
    pass


@attrs.frozen
class GetLatestAuxPow(otp.Request["BlockRef | None"]):
    pass


@attrs.frozen
class GetAuxPowBlock(otp.Request["SignedConsensusBlock | None"]):
    height: int = attrs.field(validator=_height)


@attrs.frozen
class GetFees(otp.Request["int"]):
    hash: bytes = attrs.field(validator=_hash32)


@attrs.frozen
class PutQueuedPow(otp.Request["None"]):
    """Persist the AuxPoW header queued for the next block (None: clear it), synced."""

    header: AuxPowHeader | None = attrs.field(validator=_instance(AuxPowHeader, optional=True))


@attrs.frozen
class PutVoteLock(otp.Request["None"]):
    """Persist this authority's vote lock (``node.workflows.prevotes``: the block it is
    locked on and the rounds it voted in at that height), synced, before a vote is sent: a
    restarted node never votes twice in one round (as a validator's slashing-protection
    record)."""

    lock: VoteLock = attrs.field(validator=_instance(VoteLock))


@attrs.frozen
class GetChainInfo(otp.Request["ChainInfo"]):
    """Everything the ChainActor needs at start, from the meta records, in one call."""


@attrs.frozen
class ChainInfo:
    head: BlockRef | None
    finalized: BlockRef | None
    last_pow: BlockRef | None
    queued_pow: AuxPowHeader | None
    #: Fees accumulated after the head and not minted yet (None: unknown, snap sync).
    fees: int | None
    #: This authority's vote lock (node.workflows.prevotes), if any.
    votes: VoteLock | None = None


@attrs.frozen
class GetStats(otp.Request["StorageStats"]):
    pass


@attrs.frozen
class StorageStats:
    path: str
    head: BlockRef | None
    finalized: BlockRef | None
    blocks_written: int


# Peg-ins ---------------------------------------------------------------------------------------


def _txids(inst: Any, attribute: Any, value: Any) -> None:
    if not isinstance(value, tuple) or not all(type(t) is bytes and len(t) == 32
                                               for t in value):
        raise StorageRequestError(
            f"{type(inst).__name__}.{attribute.name}: a tuple of 32-byte txids, "
            f"not {value!r:.80}")


def _tuple_of(kind: type[Any]) -> Any:
    def check(inst: Any, attribute: Any, value: Any) -> None:
        if not isinstance(value, tuple) or not all(isinstance(v, kind) for v in value):
            raise StorageRequestError(
                f"{type(inst).__name__}.{attribute.name}: a tuple of {kind.__name__}, "
                f"not {value!r:.80}")

    return check


def _optional_height(inst: Any, attribute: Any, value: Any) -> None:
    if value is not None:
        _height(inst, attribute, value)


@attrs.frozen
class PutPegIns(otp.Request["None"]):
    """The BridgeActor's change to its peg-in records, in one synced batch: deposits new or
    changed, deposits dropped (by txid: their Bitcoin block left the best chain), refusals
    seen, and the new rescan height (None: unchanged). A crash leaves all of it or none."""

    deposits: tuple[Deposit, ...] = attrs.field(default=(), validator=_tuple_of(Deposit))
    removed: tuple[bytes, ...] = attrs.field(default=(), validator=_txids)
    refusals: tuple[Refusal, ...] = attrs.field(default=(), validator=_tuple_of(Refusal))
    scan_height: int | None = attrs.field(default=None, validator=_optional_height)


@attrs.frozen
class GetPegIns(otp.Request["PegInRecords"]):
    """Every stored deposit, the rescan height, and which of them the chain's credited
    index names (the BridgeActor's state at start)."""


@attrs.frozen
class PegInRecords:
    deposits: tuple[Deposit, ...]
    scan_height: int | None
    #: The deposits above that a stored block credited: txid -> that block.
    credited: dict[bytes, BlockRef]


@attrs.frozen
class GetCreditedPegIns(otp.Request["dict[bytes, BlockRef]"]):
    """Which of ``txids`` a canonical block already credited (the index written with the
    block): txid -> the block."""

    txids: tuple[bytes, ...] = attrs.field(validator=_txids)


@attrs.frozen
class GetPegStatus(otp.Request["PegStatus"]):
    """What this node knows of the peg-in ``txid`` (``getpegstatus``)."""

    txid: bytes = attrs.field(validator=_hash32)


@attrs.frozen
class PegStatus:
    deposit: Deposit | None
    refusal: Refusal | None
    #: The canonical block that credited it, if one did.
    credited: BlockRef | None


# -- peg-outs (the FederationActor) ---------------------------------------------------------------


@attrs.frozen
class PutPegOuts(otp.Request["None"]):
    """The FederationActor's change to its peg-out book, in one synced batch: requests,
    refusals and proposals new or changed, the federation's coins added, outpoints spent
    (removed from the coins and remembered as spent), the block the book is now at (None:
    unchanged), and coins dropped (removed, not spent). A crash leaves all of it or none."""

    requests: tuple[PegOutRecord, ...] = attrs.field(default=(),
                                                    validator=_tuple_of(PegOutRecord))
    refused: tuple[RefusedPegOutRecord, ...] = attrs.field(
        default=(), validator=_tuple_of(RefusedPegOutRecord))
    proposals: tuple[ProposalRecord, ...] = attrs.field(default=(),
                                                       validator=_tuple_of(ProposalRecord))
    utxos: tuple[FederationUtxo, ...] = attrs.field(default=(),
                                                   validator=_tuple_of(FederationUtxo))
    spent: tuple[OutPoint, ...] = attrs.field(default=(), validator=_tuple_of(OutPoint))
    cursor: BlockRef | None = attrs.field(default=None,
                                          validator=_instance(BlockRef, optional=True))
    #: Coins removed without being spent (the change of a peg-out a fee bump replaces).
    dropped: tuple[OutPoint, ...] = attrs.field(default=(), validator=_tuple_of(OutPoint))


@attrs.frozen
class GetPegOuts(otp.Request["PegOutRecords"]):
    """The whole stored peg-out book (the FederationActor's state at start)."""


@attrs.frozen
class PegOutRecords:
    requests: tuple[PegOutRecord, ...]
    refused: tuple[RefusedPegOutRecord, ...]
    proposals: tuple[ProposalRecord, ...]
    utxos: tuple[FederationUtxo, ...]
    spent: tuple[OutPoint, ...]
    #: The last block the book applied, or None.
    cursor: BlockRef | None


@attrs.frozen
class GetPegOutStatus(otp.Request["PegOutStatus"]):
    """What this node knows of the burns in the EVM transaction ``tx_hash``
    (``getpegstatus`` with a 0x-prefixed hash)."""

    tx_hash: bytes = attrs.field(validator=_hash32)


@attrs.frozen
class PegOutStatus:
    #: The transaction's requests with the proposal paying each (None before one does).
    requests: tuple[tuple[PegOutRecord, ProposalRecord | None], ...]
    refused: tuple[RefusedPegOutRecord, ...]
