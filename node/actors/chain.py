"""ChainActor: Aura slots, block production, validation, import and finalization.

Thin by design: the rules are in ``node.workflows.chain``; this actor keeps the chain state
(head, last finalized block, queued PoW), asks the EngineActor to build and execute payloads
and the StorageActor to persist blocks, and logs one line per block.

* Every slot (``unix_ms // slot_duration_ms``) the authority ``authorities[slot % n]``
  produces a block, only when synced. With no peers configured the node is synced.
* A block carries the queued AuxPoW header if a miner submitted one; importing it finalizes
  its range: the range end becomes the last finalized block, and the engine's safe and
  finalized hashes move there.
* Past ``max_blocks_without_pow`` blocks after the last finalized one, production pauses
  with a log line until PoW arrives.
* A PoW whose work the chain has outgrown (its range no longer starts after the last
  finalized block, or the target was retargeted since the work was handed out) is refused
  when queued and dropped, with a log line, if it goes stale while queued: a block carrying
  it would fail validation.
"""

from __future__ import annotations

import logging
import secrets
import time
from pathlib import Path
from typing import Any

import attrs
import trio

import otp

from .. import metrics
from ..config import ChainConfig, structure_section
from ..crypto import bls
from ..integration.engine import PayloadStatusError
from ..types.chain import (
    AggregateApproval,
    AuxPowHeader,
    BlockRef,
    ConsensusBlock,
    IndividualApproval,
    SignedConsensusBlock,
)
from ..workflows import chain as rules
from ..workflows import difficulty
from . import engine as engine_msgs
from . import storage as storage_msgs

logger = logging.getLogger("alys.chain")

#: The G2 point at infinity, compressed: the empty aggregate signature genesis carries.
EMPTY_SIGNATURE = bytes([0xC0]) + bytes(95)
ZERO_HASH = bytes(32)


@attrs.frozen
class GetStatus:
    pass


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


@attrs.frozen
class GetUnfinalized:
    """The canonical blocks after the last finalized one, up to the head, as BlockRefs."""


@attrs.frozen
class QueuePow:
    """A checked AuxPoW header for the next produced block (from the AuxPowActor)."""

    header: AuxPowHeader


@attrs.frozen
class ImportBlock:
    """A block received from elsewhere (the network, a test)."""

    block: SignedConsensusBlock


@attrs.frozen
class AddApproval:
    """Another authority's approval of the block this node produced and holds until it has
    ceil(2n/3) approvals; replies the imported block's BlockRef once it has them, else None
    (a BlockError for an approval that does not verify)."""

    approval: IndividualApproval


@attrs.frozen
class ProduceNow:
    """Produce a block for the current slot now, if this node is its author (tests, tools)."""


@attrs.frozen
class BlockImported:
    """Published on the bus topic ``"chain.blocks"`` after every import."""

    ref: BlockRef
    slot: int
    finalized: BlockRef
    produced: bool


def load_or_create_key(path: Path) -> bls.SecretKey:
    """The node's authority key: read from ``path`` (hex), or generated once and written."""
    if path.exists():
        text = path.read_text(encoding="utf-8").strip()
        try:
            return bls.SecretKey.from_bytes(bytes.fromhex(text.removeprefix("0x")))
        except (ValueError, bls.BLSError) as exc:
            raise otp.OtpError(f"the key file {path} is not a valid BLS secret key: {exc}") from exc
    path.parent.mkdir(parents=True, exist_ok=True)
    key = bls.SecretKey.from_seed(secrets.token_bytes(32))
    path.write_text(key.to_bytes().hex() + "\n", encoding="utf-8")
    path.chmod(0o600)
    logger.info("generated a new authority key in %s", path)
    return key


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class ChainActor(otp.GenServer):
    async def init(
        self,
        config: dict[str, Any] | None = None,
        data_dir: str = ".alys",
        storage: str = "storage",
        engine: str = "engine",
        synced: bool = True,
        produce: bool = True,
    ) -> None:
        self.cfg: ChainConfig = structure_section(config or {}, ChainConfig, "chain")
        self.storage, self.engine = storage, engine
        self.synced = synced
        self.key = load_or_create_key(Path(data_dir) / "keys" / "authority.key")
        mine = self.key.public_key()
        if self.cfg.authorities:
            self.authorities = tuple(
                bls.PublicKey.from_bytes(bytes.fromhex(a.removeprefix("0x")))
                for a in self.cfg.authorities
            )
        else:
            self.authorities = (mine,)
        self.index = next(
            (i for i, pk in enumerate(self.authorities) if pk.to_bytes() == mine.to_bytes()),
            None,
        )
        self.queued: AuxPowHeader | None = None
        self.paused = False
        self.clock = now_ms
        #: Our block waiting for the other authorities' approvals (they arrive with the network).
        self.awaiting: SignedConsensusBlock | None = None
        head = await otp.call(storage, storage_msgs.GetHead())
        if head is None:
            await self._genesis()
            head = await otp.call(storage, storage_msgs.GetHead())
        self.head: SignedConsensusBlock = await self._block(head.hash)
        self.finalized: BlockRef = await otp.call(storage, storage_msgs.GetFinalized())
        self.finalized_block = await self._block(self.finalized.hash)
        # The unfinalized range and the last PoW's bits are kept in memory: read once here,
        # then updated by every import (an import never scans storage).
        self.unfinalized = await self._load_unfinalized()
        latest = await otp.call(storage, storage_msgs.GetLatestAuxPow())
        pow_block = await self._block(latest.hash) if latest is not None else self.head
        header = pow_block.message.auxpow_header
        self.last_pow_bits = header.bits if header is not None else self.cfg.bits
        self.bits = self._next_bits()
        metrics.HEAD_HEIGHT.set(self.head.height)
        metrics.FINALIZED_HEIGHT.set(self.finalized.height)
        logger.info(
            "chain at #%d %s (finalized #%d); authority %s of %d",
            self.head.height, self.head.hash().hex()[:16], self.finalized.height,
            self.index, len(self.authorities),
        )
        if produce and self.index is not None:
            self._schedule_next_slot()

    # -- helpers ------------------------------------------------------------------------------

    async def _block(self, block_hash: bytes) -> SignedConsensusBlock:
        block = await otp.call(self.storage, storage_msgs.GetBlock(block_hash))
        if block is None:
            raise otp.OtpError(f"block {block_hash.hex()} is missing from storage")
        return block  # type: ignore[no-any-return]

    async def _genesis(self) -> None:
        payload = await otp.call(self.engine, engine_msgs.GetGenesis())
        header = AuxPowHeader(ZERO_HASH, ZERO_HASH, self.cfg.bits, self.cfg.chain_id, 0, None,
                              bytes.fromhex(self.cfg.fee_recipient[2:]))
        genesis = SignedConsensusBlock(
            ConsensusBlock(ZERO_HASH, 0, payload, header), AggregateApproval(0, EMPTY_SIGNATURE)
        )
        ref = genesis.ref()
        await otp.call(self.storage, storage_msgs.PutBlock(genesis, head=True, finalized=ref))
        logger.info("genesis block %s", ref.hash.hex())

    def _next_bits(self) -> int:
        """The bits the next AuxPoW must meet: the latest AuxPoW header's, retargeted."""
        return difficulty.next_bits(
            difficulty.config_from(self.cfg), self.last_pow_bits, self.head.height,
            difficulty.blocks_since_pow(self.head.height, self.finalized.height),
        )

    async def _load_unfinalized(self) -> list[BlockRef]:
        refs = []
        for height in range(self.finalized.height + 1, self.head.height + 1):
            block = await otp.call(self.storage, storage_msgs.GetBlockByHeight(height))
            if block is None:
                raise otp.OtpError(f"canonical block #{height} is missing from storage")
            refs.append(block.ref())
        return refs

    def _context(self, unfinalized: list[BlockRef]) -> rules.ValidationContext:
        return rules.ValidationContext(
            authorities=self.authorities,
            slot_duration_ms=self.cfg.slot_duration_ms,
            now_ms=self.clock(),
            chain_id=self.cfg.chain_id,
            max_blocks_without_pow=self.cfg.max_blocks_without_pow,
            finalized=self.finalized,
            unfinalized=tuple(unfinalized),
            expected_bits=self.bits,
        )

    def _schedule_next_slot(self) -> None:
        duration = self.cfg.slot_duration_ms
        now = self.clock()
        next_start = (now // duration + 1) * duration
        otp.send_after(otp.self(), "slot", max(next_start - now, 0) / 1000)

    # -- production ---------------------------------------------------------------------------

    async def handle_info(self, msg: Any) -> None:
        if msg != "slot":
            await super().handle_info(msg)
            return
        self._schedule_next_slot()
        await self._produce()

    async def _produce(self) -> BlockRef | None:
        slot = rules.slot_at(self.clock(), self.cfg.slot_duration_ms)
        if self.index is None or not self.synced or slot <= self.head.message.slot:
            await trio.lowlevel.checkpoint()
            return None
        if rules.author_index(slot, len(self.authorities)) != self.index:
            await trio.lowlevel.checkpoint()
            return None
        pow_header = self.queued
        if pow_header is not None and (problem := self._stale(pow_header)) is not None:
            # The chain moved on since it was queued (a retarget, another PoW block): the
            # block would fail validation with it, so it goes and a miner fetches new work.
            logger.warning("queued AuxPoW for #%d dropped: %s", pow_header.height, problem)
            self.queued = pow_header = None
        height = self.head.height + 1
        if pow_header is None and height - self.finalized.height > self.cfg.max_blocks_without_pow:
            if not self.paused:
                logger.warning(
                    "production paused at #%d: %d blocks since the last finalized block "
                    "(#%d) and no AuxPoW yet; waiting for a miner (max_blocks_without_pow=%d)",
                    self.head.height, self.head.height - self.finalized.height,
                    self.finalized.height, self.cfg.max_blocks_without_pow,
                )
                self.paused = True
            return None
        if self.paused:
            logger.info("PoW arrived: production resumes")
            self.paused = False
        withdrawals: list[Any] = []
        if pow_header is not None:
            fees = await otp.call(self.storage, storage_msgs.GetFees(self.head.hash()))
            federation = [bytes.fromhex(a[2:]) for a in self.cfg.federation_evm_addresses]
            withdrawals = rules.fee_withdrawals(fees, pow_header.fee_recipient, federation)
        payload = await otp.call(self.engine, engine_msgs.BuildPayload(
            head=self.head.message.execution_payload.block_hash,
            finalized=self.finalized_block.message.execution_payload.block_hash,
            timestamp=max(rules.slot_start_ms(slot, self.cfg.slot_duration_ms) // 1000,
                          self.head.message.execution_payload.timestamp + 1),
            fee_recipient=bytes.fromhex(self.cfg.fee_recipient[2:]),
            withdrawals=tuple(withdrawals),
        ))
        block = rules.new_block(self.head, slot, payload, pow_header)
        signed = rules.sign_block(block, self.key, self.index)
        needed = rules.required_approvals(len(self.authorities))
        if signed.signature.count() < needed:
            # Several authorities: the block is imported once ceil(2n/3) of them approved it.
            rules.validate_block(signed, self.head, self._context(self.unfinalized),
                                 require_approvals=False)
            self.awaiting = signed
            logger.info("block #%d %s slot %d waits for %d approvals (has %d)", block.height,
                        signed.hash().hex()[:16], slot, needed, signed.signature.count())
            return None
        ref = await self._import(signed, produced=True)
        metrics.BLOCKS_PRODUCED.inc()
        return ref

    def _stale(self, header: AuxPowHeader) -> rules.BlockError | None:
        """Why a PoW header could not go into the next block, or None if it can."""
        unfinalized = self.unfinalized
        if not unfinalized or header.range_start != unfinalized[0].hash:
            return rules.BlockError("auxpow-range", "the PoW's range no longer starts "
                                    "after the last finalized block")
        if all(r.hash != header.range_end for r in unfinalized):
            return rules.BlockError("auxpow-range", "the PoW's range end is not an "
                                    "unfinalized block")
        if header.bits != self.bits:
            return rules.BlockError("auxpow-bits", f"the PoW meets bits {header.bits:#x}, but "
                                    f"the target has changed to {self.bits:#x}: the work is "
                                    f"stale, fetch new work")
        return None

    # -- import -------------------------------------------------------------------------------

    async def _import(self, signed: SignedConsensusBlock, produced: bool = False) -> BlockRef:
        started = time.perf_counter()
        block = signed.message
        if block.parent_hash != self.head.hash():
            raise rules.BlockError("fork", "the block does not extend the head (forks arrive "
                                   "with the network)")
        rules.validate_block(signed, self.head, self._context(self.unfinalized))
        new_finalized = self.finalized
        finalized_block = self.finalized_block
        if block.auxpow_header is not None:
            end = block.auxpow_header.range_end
            finalized_block = await self._block(end)
            new_finalized = finalized_block.ref()
        committed = await otp.call(self.engine, engine_msgs.CommitPayload(
            block.execution_payload, finalized_block.message.execution_payload.block_hash,
        ))
        if isinstance(committed, PayloadStatusError):
            raise rules.BlockError("payload", f"the execution engine refused the payload: "
                                   f"{committed}")
        head_hash, engine_state = committed
        if head_hash != block.execution_payload.block_hash:
            raise rules.BlockError("payload", "the engine did not accept the payload as head")
        fees = 0 if block.auxpow_header is not None else await otp.call(
            self.storage, storage_msgs.GetFees(self.head.hash()))
        ref: BlockRef = await otp.call(self.storage, storage_msgs.PutBlock(
            signed, head=True,
            finalized=new_finalized if new_finalized != self.finalized else None,
            engine_state=engine_state, fees=fees,
        ))
        self.head = signed
        self.unfinalized.append(ref)
        if block.auxpow_header is not None:
            self.finalized, self.finalized_block = new_finalized, finalized_block
            last = [r.hash for r in self.unfinalized].index(new_finalized.hash)
            del self.unfinalized[: last + 1]
            self.last_pow_bits = block.auxpow_header.bits
            if self.queued is not None and self.queued.range_end == block.auxpow_header.range_end:
                self.queued = None
        self.bits = self._next_bits()
        elapsed = time.perf_counter() - started
        metrics.BLOCKS_IMPORTED.inc()
        metrics.IMPORT_SECONDS.observe(elapsed)
        metrics.HEAD_HEIGHT.set(ref.height)
        metrics.FINALIZED_HEIGHT.set(self.finalized.height)
        logger.info(
            "%s block #%d %s slot %d, %d tx, finalized #%d%s (%.1f ms)",
            "produced" if produced else "imported", ref.height, ref.hash.hex()[:16],
            block.slot, len(block.execution_payload.transactions), self.finalized.height,
            f", AuxPoW for #{block.auxpow_header.height}" if block.auxpow_header else "",
            elapsed * 1000,
        )
        otp.bus.publish_nowait("chain.blocks",
                               BlockImported(ref, block.slot, self.finalized, produced))
        return ref

    # -- calls --------------------------------------------------------------------------------

    async def handle_call(self, request: Any, from_: otp.From) -> Any:
        kind = type(request)
        if kind is GetStatus:
            await trio.lowlevel.checkpoint()
            return ChainStatus(self.head.ref(), self.finalized, self.queued, self.synced,
                               self.paused, self.index, len(self.authorities), self.bits)
        if kind is GetUnfinalized:
            await trio.lowlevel.checkpoint()
            return list(self.unfinalized)
        if kind is QueuePow:
            await trio.lowlevel.checkpoint()
            problem = self._stale(request.header)
            if problem is not None:
                return problem
            self.queued = request.header
            return None
        if kind is ImportBlock:
            try:
                return await self._import(request.block)
            except rules.BlockError as exc:
                return exc
        if kind is AddApproval:
            await trio.lowlevel.checkpoint()
            if self.awaiting is None or self.awaiting.message.parent_hash != self.head.hash():
                self.awaiting = None
                return rules.BlockError("approval", "no block of ours awaits approvals")
            try:
                self.awaiting = rules.add_approval(self.awaiting, request.approval,
                                                   self.authorities)
                if self.awaiting.signature.count() < rules.required_approvals(
                        len(self.authorities)):
                    return None
                signed, self.awaiting = self.awaiting, None
                return await self._import(signed, produced=True)
            except rules.BlockError as exc:
                return exc
        if kind is ProduceNow:
            return await self._produce()
        raise otp.UnexpectedMessage(self, "call", request)
