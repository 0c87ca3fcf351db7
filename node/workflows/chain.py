"""Consensus rules as plain functions: slots, authors, approvals, validation, finalization.

Nothing here does I/O: the ChainActor holds a frozen :class:`ChainState` (its head, the last
finalized block, the latest AuxPoW block, the unfinalized range, the fees not minted yet),
gathers what else a rule needs, calls these functions, and replaces its state with the one
:func:`import_block` returns.

**Where we are deliberately stricter than the original** (each is marked "Stricter than the
original" where it is checked): the producer must be in the approval bitfield
(:func:`validate_block`); the bitfield may not name authorities beyond the configured ones;
an AuxPoW header's chain id and bits must be ours and the expected ones; the AuxPoW range
rule is checked at every height (the original skips it at hard-coded heights); the
future-slot check uses the local clock, not the block's own payload timestamp; a payload's
timestamp may not be later than its slot's start (so it never runs ahead of the clock); a
block may not claim peg-ins this node cannot verify.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Final, overload

import attrs

from ..crypto import bls
from ..errors import NodeError
from ..types.chain import (
    AggregateApproval,
    AuxPowHeader,
    BlockRef,
    ConsensusBlock,
    IndividualApproval,
    SignedConsensusBlock,
)
from ..types.encoding import signing_root
from ..types.execution import ExecutionPayload, Receipt, Withdrawal
from . import auxpow as auxpow_rules
from . import difficulty


class BlockError(NodeError, ValueError):
    """A block broke a consensus rule. ``rule`` is a short stable name of the rule."""

    def __init__(self, rule: str, message: str) -> None:
        super().__init__(f"{rule}: {message}")
        self.rule = rule
        self.message = message

    @property
    def ours(self) -> bool:
        """Whether the refusal says nothing against the block, only that this node cannot
        check it now (its bridge or federation cannot reach Bitcoin or its records)."""
        return self.rule in UNVERIFIABLE


#: Rules a block is refused under when this node cannot check it now: not the block's fault,
#: nor its sender's.
UNVERIFIABLE: Final = frozenset({"pegins-unverifiable", "pegouts-unverifiable"})


# -- slots and authors ---------------------------------------------------------------------------


def slot_at(unix_ms: int, slot_duration_ms: int) -> int:
    """Aura: the slot of a moment is ``unix_ms // slot_duration``."""
    return unix_ms // slot_duration_ms


def slot_start_ms(slot: int, slot_duration_ms: int) -> int:
    return slot * slot_duration_ms


def author_index(slot: int, authority_count: int) -> int:
    """Aura: the author of ``slot`` is ``authorities[slot % n]``."""
    return slot % authority_count


def required_approvals(authority_count: int) -> int:
    """A block is imported with at least ceil(2n/3) approvals: ``(2n + 2) // 3``."""
    return (2 * authority_count + 2) // 3


def is_future_slot(slot: int, now_ms: int, slot_duration_ms: int) -> bool:
    """The original's future tolerance: a slot is too far ahead when it is beyond the next
    slot *and* beyond the next 3-second step (``slot > now//duration + 1`` and
    ``slot > now//3000 + 1``). Stricter than the original: ``now_ms`` is the local clock
    (as Substrate's Aura does), not the block's own payload timestamp, which its producer
    chooses."""
    return slot > now_ms // slot_duration_ms + 1 and slot > now_ms // 3000 + 1


def payload_timestamp(slot: int, slot_duration_ms: int, parent_timestamp: int) -> int | None:
    """The payload timestamp of a block produced in ``slot``: the whole second the slot
    starts in, so it never runs ahead of the clock; None when that second is not after the
    parent's timestamp (the execution layer needs increasing timestamps), and the slot is
    skipped.

    Slots shorter than a second are handled this way rather than refused: with them a chain
    makes at most one block per second (only the first slot of each second can produce), and
    its timestamps stay on the clock. (Producing anyway with ``parent + 1``, as this node
    once did, ran the timestamps 1,633 s ahead after three minutes of 100 ms slots.) From
    1000 ms up every slot starts in a later second than the one before, so no slot is
    skipped."""
    timestamp = slot_start_ms(slot, slot_duration_ms) // 1000
    return timestamp if timestamp > parent_timestamp else None


# -- signing and approvals ------------------------------------------------------------------------


def sign_block(block: ConsensusBlock, key: bls.SecretKey, index: int) -> SignedConsensusBlock:
    """The producer's signature over the block's signing root, as the first entry of the
    aggregate."""
    signature = bls.sign(key, block.signing_root())
    return SignedConsensusBlock(block, AggregateApproval(1 << index, signature.to_bytes()))


def approve(block_hash: bytes, key: bls.SecretKey, index: int) -> IndividualApproval:
    """Authority ``index``'s approval of the block with this hash (a signature over its
    signing root)."""
    return IndividualApproval(bls.sign(key, signing_root(block_hash)).to_bytes(), index)


def add_approval(
    signed: SignedConsensusBlock,
    approval: IndividualApproval,
    authorities: Sequence[bls.PublicKey],
    *,
    own: bool = False,
) -> SignedConsensusBlock:
    """Fold one valid approval into the block's aggregate (a duplicate changes nothing).
    ``own``: this node signed the approval just now (with the key of the authority it
    names), so its signature is not checked again."""
    index = approval.authority_index
    if not 0 <= index < len(authorities):
        raise BlockError("approval-index", f"no authority {index}")
    if signed.signature.bitfield >> index & 1:
        return signed
    signature = _signature(approval.signature, "approval-signature")
    if not own and not bls.verify(authorities[index], signed.signing_root(), signature):
        raise BlockError("approval-signature", f"approval of authority {index} does not verify")
    aggregate = bls.aggregate([_signature(signed.signature.signature, "signature"), signature])
    return attrs.evolve(
        signed,
        signature=AggregateApproval(signed.signature.bitfield | 1 << index, aggregate.to_bytes()),
    )


def _signature(raw: bytes, rule: str) -> bls.Signature:
    try:
        return bls.Signature.from_bytes(raw)
    except bls.BLSError as exc:
        raise BlockError(rule, str(exc)) from None


# -- AuxPoW ---------------------------------------------------------------------------------------


#: What miners commit to: SHA256d of the concatenated hashes of the unfinalized range.
aux_hash = auxpow_rules.aggregate_hash


@attrs.frozen
class PowWork:
    """Work handed to a miner by ``createauxblock``.

    ``height`` is the height of the block carrying the latest AuxPoW plus one, and
    ``last_pow_hash`` that block's hash: the original answers them as ``height`` and
    ``previousblockhash`` (its ``get_last_finalized_block`` returns that block, despite its
    name), and the header pushed on submit carries the same height."""

    hash: bytes
    range_start: bytes
    range_end: bytes
    height: int
    bits: int
    chain_id: int
    fee_recipient: bytes
    last_pow_hash: bytes | None = None


def make_work(range_refs: Sequence[BlockRef], bits: int, chain_id: int,
              fee_recipient: bytes, last_pow: BlockRef | None = None) -> PowWork:
    """Work for the unfinalized range (the blocks after the last finalized one, in order).

    ``last_pow`` is the block carrying the latest AuxPoW (``ChainStatus.last_pow``): the
    work's height is its height + 1, as the original's. Callers that do not pass it yet get
    the range end's height and no ``last_pow_hash`` (this node's behaviour before the rule
    was corrected; the height is informational and never validated)."""
    if not range_refs:
        raise BlockError("no-work", "no unfinalized blocks to mine")
    return PowWork(
        aux_hash([r.hash for r in range_refs]),
        range_refs[0].hash,
        range_refs[-1].hash,
        range_refs[-1].height if last_pow is None else last_pow.height + 1,
        bits,
        chain_id,
        fee_recipient,
        None if last_pow is None else last_pow.hash,
    )


def check_submission(work: PowWork, proof: bytes) -> AuxPowHeader:
    """Check a miner's AuxPoW for ``work`` (proof of work first, then the AuxPoW rules, as the
    original's ``submit_aux_block`` does); the header the next block will carry."""
    try:
        parsed = auxpow_rules.AuxPow.from_bytes(proof)
    except ValueError as exc:
        raise BlockError("auxpow-decode", str(exc)) from None
    if not parsed.check_proof_of_work(work.bits):
        raise BlockError("auxpow-pow", f"the parent block's hash does not meet bits {work.bits:#x}")
    try:
        parsed.check(work.hash, work.chain_id)
    except auxpow_rules.AuxPowError as exc:
        raise BlockError(f"auxpow-{exc.rule}", exc.message) from None
    return AuxPowHeader(work.range_start, work.range_end, work.bits, work.chain_id,
                        work.height, proof, work.fee_recipient)


# -- validation -----------------------------------------------------------------------------------


@attrs.frozen
class PegIn:
    """A peg-in this node has verified on Bitcoin: credited to ``evm_address``."""

    txid: bytes
    block_hash: bytes
    evm_address: bytes
    amount_sats: int


@attrs.frozen
class ValidationContext:
    """What validating one block needs to know about the chain."""

    authorities: tuple[bls.PublicKey, ...]
    slot_duration_ms: int
    now_ms: int
    chain_id: int
    max_blocks_without_pow: int
    #: The last finalized block.
    finalized: BlockRef
    #: The canonical blocks after ``finalized`` up to the parent, in order (the range an
    #: AuxPoW header in this block may cover).
    unfinalized: Sequence[BlockRef]
    #: The bits the next AuxPoW must meet.
    expected_bits: int
    #: The height of the block carrying the latest AuxPoW (genesis carries one).
    last_pow_height: int = 0
    #: Fees accumulated after the parent and not minted yet (wei); None: unknown (the node
    #: snap-synced the blocks they came from without executing them, see
    #: :func:`import_history`).
    fees: int | None = 0
    #: The federation's EVM addresses (they share 20% of minted fees).
    federation: tuple[bytes, ...] = ()
    #: Peg-ins this node has verified, by (bitcoin txid, bitcoin block hash).
    pegins: Mapping[tuple[bytes, bytes], PegIn] = attrs.field(factory=dict)


def validate_block(
    signed: SignedConsensusBlock,
    parent: SignedConsensusBlock | None,
    ctx: ValidationContext,
    *,
    require_approvals: bool = True,
    signature_checked: bool = False,
    history: bool = False,
) -> None:
    """Every consensus rule a received block must pass before import; raises BlockError.
    ``signature_checked``: the aggregate signature was verified already, in a batch
    (:func:`node.workflows.block_signatures.verify_blocks`, the same rule); every other
    check still runs. ``history``: the block is stored without executing its payload (snap
    sync, :func:`import_history`): its withdrawals (peg-in credits, the fee mint) are taken
    as its signers approved them, since checking them needs the peg-ins verified on Bitcoin
    and the fees of executed payloads; every other rule runs."""
    block = signed.message
    if parent is None:
        raise BlockError("unknown-parent", f"parent {block.parent_hash.hex()} is not known")
    if block.height != parent.height + 1:
        raise BlockError("height", f"height {block.height} after parent {parent.height}")
    parent_payload = parent.message.execution_payload
    if block.execution_payload.parent_hash != parent_payload.block_hash:
        raise BlockError("payload-parent", "the payload does not build on the parent's payload")
    if block.slot <= parent.message.slot:
        raise BlockError(
            "slot", f"slot {block.slot} is not after the parent's {parent.message.slot}"
        )
    if is_future_slot(block.slot, ctx.now_ms, ctx.slot_duration_ms):
        raise BlockError("future-slot", f"slot {block.slot} is in the future")
    timestamp = block.execution_payload.timestamp
    # Stricter than the original: the payload timestamp may not be later than the start of
    # the block's slot (which the future-slot check keeps near the local clock).
    if timestamp * 1000 > slot_start_ms(block.slot, ctx.slot_duration_ms):
        raise BlockError("timestamp", f"payload timestamp {timestamp} is after the start of "
                         f"slot {block.slot} ({slot_start_ms(block.slot, ctx.slot_duration_ms)} "
                         "ms)")
    n = len(ctx.authorities)
    producer = author_index(block.slot, n)
    approvals = signed.signature
    # Stricter than the original: the slot's author must be among the signers.
    if not approvals.bitfield >> producer & 1:
        raise BlockError("author", f"slot {block.slot} belongs to authority {producer}")
    indexes = approvals.indexes()
    # Stricter than the original: the bitfield may not name authorities that do not exist.
    if any(i >= n for i in indexes):
        raise BlockError("approval-index", f"bitfield names authorities beyond {n}")
    if not signature_checked:
        signature = _signature(approvals.signature, "signature")
        if not bls.fast_aggregate_verify([ctx.authorities[i] for i in indexes],
                                         signed.signing_root(), signature):
            raise BlockError("signature", "the aggregate signature does not verify")
    if require_approvals and len(indexes) < required_approvals(n):
        raise BlockError("approvals", f"{len(indexes)} approvals, {required_approvals(n)} needed")
    validate_pow(block, ctx)
    if not history:
        validate_withdrawals(block, ctx)


def validate_pow(block: ConsensusBlock, ctx: ValidationContext) -> None:
    """The PoW rules: blocks without PoW stop once the blocks since PoW exceed
    ``max_blocks_without_pow``; an AuxPoW header must cover exactly the range after the last
    finalized block and verify."""
    header = block.auxpow_header
    if header is None:
        problem = max_blocks_problem(block.height - 1, ctx.last_pow_height,
                                     ctx.max_blocks_without_pow)
        if problem is not None:
            raise problem
        return
    # Stricter than the original: the range rule holds at every height (the original skips
    # it at heights hard-coded as hot fixes).
    if not ctx.unfinalized:
        raise BlockError("auxpow-range", "no unfinalized blocks for the PoW to cover")
    if header.range_start != ctx.unfinalized[0].hash:
        raise BlockError("auxpow-range", "the range must start right after the last finalized "
                         "block")
    hashes = []
    for ref in ctx.unfinalized:
        hashes.append(ref.hash)
        if ref.hash == header.range_end:
            break
    else:
        raise BlockError("auxpow-range", "the range end is not an unfinalized ancestor")
    # header.height is not checked, as in the original (it is informational).
    # Stricter than the original: the header's chain id and bits must be ours and the
    # expected ones (the original checks the proof against them but not the header fields).
    if header.chain_id != ctx.chain_id:
        raise BlockError("auxpow-chain-id", f"chain id {header.chain_id}, ours {ctx.chain_id}")
    if header.bits != ctx.expected_bits:
        raise BlockError("auxpow-bits", f"bits {header.bits:#x}, expected {ctx.expected_bits:#x}")
    if header.auxpow is None:
        raise BlockError("auxpow", "the header carries no proof")
    work = PowWork(aux_hash(hashes), header.range_start, header.range_end, header.height,
                   header.bits, header.chain_id, header.fee_recipient)
    check_submission(work, header.auxpow)


def max_blocks_problem(head_height: int, last_pow_height: int,
                       max_blocks_without_pow: int) -> BlockError | None:
    """Why a block without PoW may not follow ``head_height``, or None: the blocks since PoW
    (head height + 1 - the height of the block carrying the latest AuxPoW) exceed
    ``max_blocks_without_pow``. Production pauses on it; validation refuses on it."""
    since = difficulty.blocks_since_pow(head_height, last_pow_height)
    if since > max_blocks_without_pow:
        return BlockError(
            "max-blocks-without-pow",
            f"{since} blocks since the last AuxPoW block (#{last_pow_height}); at most "
            f"{max_blocks_without_pow} without PoW",
        )
    return None


def validate_withdrawals(block: ConsensusBlock, ctx: ValidationContext) -> None:
    """The payload's withdrawals must be exactly what the block claims: its peg-ins, then
    (on an AuxPoW block) the mint of the fees accumulated since the previous AuxPoW block.
    With the fees unknown (``ctx.fees`` None, after a snap sync) the mint's amounts cannot
    be checked: it may only pay the miner and the federation, once each, after the
    peg-ins."""
    actual = block.execution_payload.withdrawals
    if ctx.fees is None and block.auxpow_header is not None:
        credits = pegin_withdrawals(block.pegins, ctx.pegins)
        if actual[:len(credits)] != tuple(credits):
            raise BlockError("withdrawals", f"the payload credits {_describe(actual)}, the "
                             f"block's peg-ins {_describe(credits)}")
        payees = [block.auxpow_header.fee_recipient, *ctx.federation]
        for w in actual[len(credits):]:
            if w.address not in payees or w.index or w.validator_index:
                raise BlockError("withdrawals", f"the fee mint pays {_describe((w,))}, not "
                                 "the miner or a federation member")
            payees.remove(w.address)
        return
    expected = expected_withdrawals(block, ctx.fees or 0, ctx.federation, ctx.pegins)
    if actual != tuple(expected):
        raise BlockError("withdrawals", f"the payload credits {_describe(actual)}, the block "
                         f"claims {_describe(expected)}")


def _describe(withdrawals: Sequence[Withdrawal]) -> str:
    if not withdrawals:
        return "nothing"
    return ", ".join(f"{w.amount} Gwei to 0x{w.address.hex()}" for w in withdrawals)


# -- peg-ins and fees -----------------------------------------------------------------------------

GWEI = 10**9
#: ALYS.md: peg-in amounts are credited in Gwei, sats x 10.
GWEI_PER_SAT = 10
#: ALYS.md: at most 16 distinct peg-in addresses per block.
MAX_PEGIN_ADDRESSES = 16


def pegin_withdrawals(
    claimed: Sequence[tuple[bytes, bytes]], known: Mapping[tuple[bytes, bytes], PegIn]
) -> list[Withdrawal]:
    """The withdrawals crediting a block's peg-ins: one per distinct EVM address, in the
    order of their first peg-in, summing its amounts (sats x 10 Gwei), index and validator
    index 0. Every claimed peg-in must be one this node verified (``known``: the BridgeActor
    checked it in its records or on Bitcoin, as the original does); a block claiming any
    other peg-in is refused, as is one this node cannot verify (no bridge, or Bitcoin
    unreachable)."""
    if len(set(claimed)) != len(claimed):
        raise BlockError("pegins", "a peg-in is claimed twice")
    totals: dict[bytes, int] = {}
    for txid, block_hash in claimed:
        pegin = known.get((txid, block_hash))
        if pegin is None:
            raise BlockError("pegins", f"peg-in {txid.hex()} (bitcoin block "
                             f"{block_hash.hex()}) is not one this node has verified")
        totals[pegin.evm_address] = totals.get(pegin.evm_address, 0) + pegin.amount_sats
    if len(totals) > MAX_PEGIN_ADDRESSES:
        raise BlockError("pegins", f"{len(totals)} peg-in addresses, at most "
                         f"{MAX_PEGIN_ADDRESSES} per block")
    return [Withdrawal(index=0, validator_index=0, address=a, amount=sats * GWEI_PER_SAT)
            for a, sats in totals.items()]


def expected_withdrawals(
    block: ConsensusBlock,
    fees: int,
    federation: Sequence[bytes],
    pegins: Mapping[tuple[bytes, bytes], PegIn],
) -> list[Withdrawal]:
    """What a block's payload must credit: its peg-ins, then, if it carries an AuxPoW
    header, the fees accumulated after its parent (``fees``) minted 80/20."""
    out = pegin_withdrawals(block.pegins, pegins)
    header = block.auxpow_header
    if header is not None:
        out += fee_withdrawals(fees, header.fee_recipient, federation)
    return out


def fee_withdrawals(fees_wei: int, miner: bytes, federation: Sequence[bytes]) -> list[Withdrawal]:
    """What an AuxPoW block mints from the fees of its range: 80% to the miner, 20% split
    equally across the federation's EVM addresses, as withdrawals in Gwei (wei below a Gwei
    are not minted, as in the original). With no federation addresses the 20% is not
    minted."""
    if fees_wei <= 0:
        return []
    miner_share = fees_wei * 80 // 100
    out = [Withdrawal(index=0, validator_index=0, address=miner, amount=miner_share // GWEI)]
    if federation:
        each = (fees_wei - miner_share) // len(federation)
        out += [Withdrawal(index=0, validator_index=0, address=a, amount=each // GWEI)
                for a in federation]
    return [w for w in out if w.amount > 0]


def payload_fees(base_fee_per_gas: int, receipts: Sequence[Receipt]) -> int:
    """A block's fees in wei: the sum over its receipts of the effective tip (effective gas
    price - base fee) times the gas used, as the original accumulates them."""
    total = 0
    for i, receipt in enumerate(receipts):
        tip = receipt.effective_gas_price - base_fee_per_gas
        if tip < 0:
            raise ValueError(f"receipt {i}: effective gas price {receipt.effective_gas_price} "
                             f"is below the base fee {base_fee_per_gas}")
        total += tip * receipt.gas_used
    return total


def accumulate_fees(parent_fees: int | None, block_fees: int | None,
                    carries_pow: bool) -> int | None:
    """Fees not minted yet after a block: an AuxPoW block mints what had accumulated after
    its parent, so it starts afresh with its own fees; any other block adds its own. None is
    unknown (a block stored without executing it, or a sum that includes one)."""
    if carries_pow:
        return block_fees
    if parent_fees is None or block_fees is None:
        return None
    return parent_fees + block_fees


def new_block(
    parent: SignedConsensusBlock,
    slot: int,
    payload: ExecutionPayload,
    pow_header: AuxPowHeader | None,
    pegins: Sequence[tuple[bytes, bytes]] = (),
) -> ConsensusBlock:
    """A block on ``parent``; ``pegins`` are the (bitcoin txid, bitcoin block hash) pairs
    whose withdrawals ``payload`` carries (:func:`pegin_withdrawals`)."""
    return ConsensusBlock(parent.hash(), slot, payload, pow_header, tuple(pegins))


class RefRun(Sequence[BlockRef]):
    """An immutable run of block refs that is extended in O(1): the unfinalized range, which
    grows by one at every import and, on a chain that goes long without PoW, would cost a
    copy of thousands of refs per block as a tuple.

    Runs made from one another share one list: extending the run that ends at the list's end
    appends to it (no other run sees the new ref, each knows where it stops); extending any
    other run copies its refs first. Slices are views. Equal to any sequence of the same refs
    (a tuple too)."""

    __slots__ = ("_items", "_start", "_stop")

    def __init__(self, refs: Iterable[BlockRef] = ()) -> None:
        self._items: list[BlockRef] = list(refs)
        self._start = 0
        self._stop = len(self._items)

    @classmethod
    def _view(cls, items: list[BlockRef], start: int, stop: int) -> RefRun:
        run = cls.__new__(cls)
        run._items, run._start, run._stop = items, start, stop
        return run

    def appended(self, ref: BlockRef) -> RefRun:
        """This run and then ``ref``. The shared list is copied (its live part only) when a
        run starts past half of it, so refs finalized long ago do not pile up in it."""
        if self._stop == len(self._items) and self._start <= max(len(self._items) // 2, 64):
            self._items.append(ref)
            return RefRun._view(self._items, self._start, self._stop + 1)
        return RefRun([*self, ref])

    def __len__(self) -> int:
        return self._stop - self._start

    @overload
    def __getitem__(self, index: int) -> BlockRef: ...

    @overload
    def __getitem__(self, index: slice) -> RefRun: ...

    def __getitem__(self, index: int | slice) -> BlockRef | RefRun:
        if isinstance(index, slice):
            start, stop, step = index.indices(len(self))
            if step != 1:
                return RefRun(self[i] for i in range(start, stop, step))
            return RefRun._view(self._items, self._start + start,
                                self._start + max(start, stop))
        n = len(self)
        if not -n <= index < n:
            raise IndexError("RefRun index out of range")
        return self._items[self._start + (index if index >= 0 else n + index)]

    def __iter__(self) -> Iterator[BlockRef]:
        return itertools.islice(self._items, self._start, self._stop)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Sequence) or isinstance(other, str | bytes):
            return NotImplemented
        return len(self) == len(other) and all(a == b for a, b in zip(self, other,
                                                                          strict=True))

    def __hash__(self) -> int:
        return hash(tuple(self))

    def __repr__(self) -> str:
        return f"RefRun({list(self)!r})"


# -- the chain's state and how an import changes it ------------------------------------------


@attrs.frozen
class ChainState:
    """The chain as the rules see it at its head. The ChainActor holds one and replaces it
    with the one :func:`import_block` returns."""

    head: SignedConsensusBlock
    #: The last finalized block and its execution payload's hash.
    finalized: BlockRef
    finalized_payload: bytes
    #: The latest block carrying an AuxPoW header (genesis carries one) and its bits.
    last_pow: BlockRef
    last_pow_bits: int
    #: The canonical blocks after ``finalized`` up to the head, in order.
    unfinalized: Sequence[BlockRef]
    #: Fees accumulated after the head and not minted yet (wei); None: unknown, since the
    #: chain after the latest AuxPoW block includes blocks stored without executing them
    #: (snap sync, :func:`import_history`) — until the next AuxPoW block starts afresh.
    fees: int | None


def blocks_since_pow(state: ChainState) -> int:
    """Head height + 1 - the height of the block carrying the latest AuxPoW (ALYS.md): the
    count both the retarget and the max-blocks-without-PoW rule use."""
    return difficulty.blocks_since_pow(state.head.height, state.last_pow.height)


def next_bits(state: ChainState, config: difficulty.DifficultyConfig) -> int:
    """The bits the next AuxPoW must meet: the latest AuxPoW header's, retargeted."""
    return difficulty.next_bits(config, state.last_pow_bits, state.head.height,
                                blocks_since_pow(state))


def pow_problem(state: ChainState, header: AuxPowHeader, bits: int) -> BlockError | None:
    """Why an AuxPoW header could not go into the next block, or None if it can: its range
    must start right after the last finalized block and end at an unfinalized one, and it
    must meet the current target ``bits`` (a retarget since the work was handed out makes it
    stale). Checked when a PoW is queued and again before a block carries it."""
    unfinalized = state.unfinalized
    if not unfinalized or header.range_start != unfinalized[0].hash:
        return BlockError("auxpow-range", "the PoW's range no longer starts after the last "
                          "finalized block")
    if all(r.hash != header.range_end for r in unfinalized):
        return BlockError("auxpow-range", "the PoW's range end is not an unfinalized block")
    if header.bits != bits:
        return BlockError("auxpow-bits", f"the PoW meets bits {header.bits:#x}, but the target "
                          f"has changed to {bits:#x}: the work is stale, fetch new work")
    return None


def import_block(
    state: ChainState,
    signed: SignedConsensusBlock,
    block_fees: int | None,
    range_end: SignedConsensusBlock | None = None,
) -> ChainState:
    """The state after importing ``signed`` (already validated) on the head.

    A block carrying an AuxPoW header finalizes its range: ``range_end`` (the block its header
    names, which the caller looked up) becomes the last finalized block, the unfinalized
    range drops everything up to it, and the block becomes the latest AuxPoW block. Fees
    accumulate as :func:`accumulate_fees` says. The finalized block never moves back."""
    block = signed.message
    if block.parent_hash != state.head.hash():
        raise BlockError("fork", "the block does not extend the head")
    ref = signed.ref()
    run = (state.unfinalized if isinstance(state.unfinalized, RefRun)
           else RefRun(state.unfinalized))
    unfinalized = run.appended(ref)
    header = block.auxpow_header
    finalized, finalized_payload = state.finalized, state.finalized_payload
    last_pow, last_pow_bits = state.last_pow, state.last_pow_bits
    if header is not None:
        if range_end is None or range_end.hash() != header.range_end:
            raise ValueError("import_block: an AuxPoW block needs the block its range ends at")
        finalized = range_end.ref()
        if finalized.height < state.finalized.height:
            raise BlockError("auxpow-range", f"the finalized block would move back to "
                             f"#{finalized.height}")
        finalized_payload = range_end.message.execution_payload.block_hash
        position = [r.hash for r in unfinalized].index(header.range_end)
        unfinalized = unfinalized[position + 1:]
        last_pow, last_pow_bits = ref, header.bits
    return ChainState(
        head=signed,
        finalized=finalized,
        finalized_payload=finalized_payload,
        last_pow=last_pow,
        last_pow_bits=last_pow_bits,
        unfinalized=unfinalized,
        fees=accumulate_fees(state.fees, block_fees, header is not None),
    )


def import_history(
    state: ChainState,
    signed: SignedConsensusBlock,
    range_end: SignedConsensusBlock | None = None,
) -> ChainState:
    """:func:`import_block` for a block stored without executing its payload (snap sync:
    the blocks up to the pivot, validated with ``history=True``). Its fees are unknown, and
    so are the chain's until the next AuxPoW block starts them afresh; that block's fee mint
    is checked for its payees only (:func:`validate_withdrawals`). What the node trusts
    here is what its signers approved: the payload's execution, its withdrawals."""
    return import_block(state, signed, None, range_end)


def validation_context(
    state: ChainState,
    *,
    authorities: tuple[bls.PublicKey, ...],
    slot_duration_ms: int,
    now_ms: int,
    chain_id: int,
    max_blocks_without_pow: int,
    expected_bits: int,
    federation: tuple[bytes, ...] = (),
    pegins: Mapping[tuple[bytes, bytes], PegIn] | None = None,
) -> ValidationContext:
    """The context to validate a block on ``state``'s head."""
    return ValidationContext(
        authorities=authorities,
        slot_duration_ms=slot_duration_ms,
        now_ms=now_ms,
        chain_id=chain_id,
        max_blocks_without_pow=max_blocks_without_pow,
        finalized=state.finalized,
        unfinalized=state.unfinalized,
        expected_bits=expected_bits,
        last_pow_height=state.last_pow.height,
        fees=state.fees,
        federation=federation,
        pegins={} if pegins is None else pegins,
    )
