"""Consensus rules as plain functions: slots, authors, approvals, validation, finalization.

Nothing here does I/O: the ChainActor gathers what a rule needs (the parent block, the last
finalized block, the hashes of the unfinalized range) and calls these functions.
"""

from __future__ import annotations

from collections.abc import Sequence

import attrs

from ..crypto import bls
from ..types.chain import (
    AggregateApproval,
    AuxPowHeader,
    BlockRef,
    ConsensusBlock,
    IndividualApproval,
    SignedConsensusBlock,
)
from ..types.execution import ExecutionPayload, Withdrawal
from . import auxpow as auxpow_rules


class BlockError(ValueError):
    """A block broke a consensus rule. ``rule`` is a short stable name of the rule."""

    def __init__(self, rule: str, message: str) -> None:
        super().__init__(f"{rule}: {message}")
        self.rule = rule
        self.message = message


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
    ``slot > now//3000 + 1``)."""
    return slot > now_ms // slot_duration_ms + 1 and slot > now_ms // 3000 + 1


# -- signing and approvals ------------------------------------------------------------------------


def sign_block(block: ConsensusBlock, key: bls.SecretKey, index: int) -> SignedConsensusBlock:
    """The producer's signature over the block hash, as the first entry of the aggregate."""
    signature = bls.sign(key, block.hash())
    return SignedConsensusBlock(block, AggregateApproval(1 << index, signature.to_bytes()))


def approve(block_hash: bytes, key: bls.SecretKey, index: int) -> IndividualApproval:
    return IndividualApproval(bls.sign(key, block_hash).to_bytes(), index)


def add_approval(
    signed: SignedConsensusBlock,
    approval: IndividualApproval,
    authorities: Sequence[bls.PublicKey],
) -> SignedConsensusBlock:
    """Fold one valid approval into the block's aggregate (a duplicate changes nothing)."""
    index = approval.authority_index
    if not 0 <= index < len(authorities):
        raise BlockError("approval-index", f"no authority {index}")
    if signed.signature.bitfield >> index & 1:
        return signed
    signature = _signature(approval.signature, "approval-signature")
    if not bls.verify(authorities[index], signed.hash(), signature):
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
    """Work handed to a miner by ``createauxblock``."""

    hash: bytes
    range_start: bytes
    range_end: bytes
    height: int
    bits: int
    chain_id: int
    fee_recipient: bytes


def make_work(range_refs: Sequence[BlockRef], bits: int, chain_id: int,
              fee_recipient: bytes) -> PowWork:
    """Work for the unfinalized range (the blocks after the last finalized one, in order)."""
    if not range_refs:
        raise BlockError("no-work", "no unfinalized blocks to mine")
    return PowWork(
        aux_hash([r.hash for r in range_refs]),
        range_refs[0].hash,
        range_refs[-1].hash,
        range_refs[-1].height,
        bits,
        chain_id,
        fee_recipient,
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
    unfinalized: tuple[BlockRef, ...]
    #: The bits the next AuxPoW must meet.
    expected_bits: int


def validate_block(
    signed: SignedConsensusBlock,
    parent: SignedConsensusBlock | None,
    ctx: ValidationContext,
    *,
    require_approvals: bool = True,
) -> None:
    """Every consensus rule a received block must pass before import; raises BlockError."""
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
    n = len(ctx.authorities)
    producer = author_index(block.slot, n)
    approvals = signed.signature
    if not approvals.bitfield >> producer & 1:
        raise BlockError("author", f"slot {block.slot} belongs to authority {producer}")
    indexes = approvals.indexes()
    if any(i >= n for i in indexes):
        raise BlockError("approval-index", f"bitfield names authorities beyond {n}")
    signature = _signature(approvals.signature, "signature")
    if not bls.fast_aggregate_verify([ctx.authorities[i] for i in indexes], signed.hash(),
                                     signature):
        raise BlockError("signature", "the aggregate signature does not verify")
    if require_approvals and len(indexes) < required_approvals(n):
        raise BlockError("approvals", f"{len(indexes)} approvals, {required_approvals(n)} needed")
    validate_pow(block, ctx)


def validate_pow(block: ConsensusBlock, ctx: ValidationContext) -> None:
    """The PoW rules: blocks without PoW stop past ``max_blocks_without_pow``; an AuxPoW
    header must cover exactly the range after the last finalized block and verify."""
    header = block.auxpow_header
    if header is None:
        if block.height - ctx.finalized.height > ctx.max_blocks_without_pow:
            raise BlockError(
                "max-blocks-without-pow",
                f"{block.height - ctx.finalized.height} blocks since the last finalized one "
                f"(at most {ctx.max_blocks_without_pow} without PoW)",
            )
        return
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
    end_ref = next(r for r in ctx.unfinalized if r.hash == header.range_end)
    if header.height != end_ref.height:
        raise BlockError("auxpow-height", f"height {header.height}, but the range ends at "
                         f"#{end_ref.height}")
    if header.chain_id != ctx.chain_id:
        raise BlockError("auxpow-chain-id", f"chain id {header.chain_id}, ours {ctx.chain_id}")
    if header.bits != ctx.expected_bits:
        raise BlockError("auxpow-bits", f"bits {header.bits:#x}, expected {ctx.expected_bits:#x}")
    if header.auxpow is None:
        raise BlockError("auxpow", "the header carries no proof")
    work = PowWork(aux_hash(hashes), header.range_start, header.range_end, header.height,
                   header.bits, header.chain_id, header.fee_recipient)
    check_submission(work, header.auxpow)


# -- fees -----------------------------------------------------------------------------------------

GWEI = 10**9


def fee_withdrawals(fees_wei: int, miner: bytes, federation: Sequence[bytes]) -> list[Withdrawal]:
    """What an AuxPoW block mints from the fees of its range: 80% to the miner, 20% split
    equally across the federation's EVM addresses, as withdrawals in Gwei (wei below a Gwei
    are not minted, as in the original)."""
    if fees_wei <= 0:
        return []
    miner_share = fees_wei * 80 // 100
    out = [Withdrawal(index=0, validator_index=0, address=miner, amount=miner_share // GWEI)]
    if federation:
        each = (fees_wei - miner_share) // len(federation)
        out += [Withdrawal(index=0, validator_index=0, address=a, amount=each // GWEI)
                for a in federation]
    return [w for w in out if w.amount > 0]


def new_block(
    parent: SignedConsensusBlock,
    slot: int,
    payload: ExecutionPayload,
    pow_header: AuxPowHeader | None,
) -> ConsensusBlock:
    return ConsensusBlock(parent.hash(), slot, payload, pow_header)
