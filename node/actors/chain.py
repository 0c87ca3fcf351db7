"""ChainActor: Aura slots, block production, validation, import and finalization.

Thin by design: the rules are in ``node.workflows.chain``, over the frozen
:class:`~node.workflows.chain.ChainState` this actor holds (head, last finalized block, latest
AuxPoW block, unfinalized range, fees not minted yet); the actor asks the EngineActor to
build and execute payloads and the StorageActor to persist blocks, and logs one line per
block.

* Every slot (``unix_ms // slot_duration_ms``) the authority ``authorities[slot % n]``
  produces a block, only when synced. With no peers configured the node is synced. The
  payload timestamp is the second the slot starts in; a slot that starts in the same second
  as the parent's timestamp is skipped (slots under a second give at most a block a second).
* A block carries the queued AuxPoW header if a miner submitted one; importing it finalizes
  its range: the range end becomes the last finalized block, and the engine's safe and
  finalized hashes move there. The queued header is persisted, so a restart of this actor
  (or of the node) does not lose it; the block that carries it clears it in the same batch.
* When the blocks since the latest AuxPoW block exceed ``max_blocks_without_pow``,
  production pauses with a log line until PoW arrives.
* A PoW whose work the chain has outgrown is refused when queued and dropped, with a log
  line, if it goes stale while queued: a block carrying it would fail validation.

One fault, one restart: calls to the storage and the engine go through
:func:`node.actors.sibling.call`, which waits (bounded) for a sibling its supervisor is
restarting. A slot that finds either sibling away is skipped with a log line; a call that
cannot be served gets the error as its answer. This actor does not crash for a sibling's
fault, and its in-memory state stays that of the stored chain: when the write of a block
fails because the storage died, whether the block made it is unknown until the storage is
back, so the next operation first reads the stored head and takes the block's state only if
it is there.
"""

from __future__ import annotations

import logging
import os
import secrets
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import attrs
import trio

import otp

from .. import metrics
from ..config import ChainConfig, EngineConfig, structure_section
from ..crypto import bls
from ..errors import CALL_FAILURES, KeyFileError, MissingBlock
from ..execution.embedded import PIVOT_ANCESTORS
from ..integration.engine import EngineUnavailable, PayloadStatusError
from ..messages import bridge as bridge_msgs
from ..messages import engine as engine_msgs
from ..messages import federation as federation_msgs
from ..messages import storage as storage_msgs
from ..messages.chain import (
    BLOCKS_TOPIC,
    AddApproval,
    BlockImported,
    ChainStatus,
    GetStatus,
    GetUnfinalized,
    ImportBlock,
    ImportBlocks,
    ImportedBlocks,
    PivotAtHead,
    ProduceNow,
    QueuePow,
)
from ..messages.network import (
    GossipReceived,
    Offence,
    Publish,
    Relay,
    ReportPeer,
    gossip_topic,
)
from ..messages.sync import SYNC_TOPIC, SyncProgress
from ..network.gossip import APPROVE_BLOCK, CONSENSUS_BLOCK, QUEUE_POW, ApproveBlock
from ..types.chain import (
    AggregateApproval,
    AuxPowHeader,
    BlockRef,
    ConsensusBlock,
    IndividualApproval,
    SignedConsensusBlock,
    Vote,
    VoteLock,
)
from ..types.execution import EngineError
from ..workflows import approvals, difficulty, prevotes
from ..workflows import chain as rules
from ..workflows.pegin import to_pegin
from . import sibling

logger = logging.getLogger("alys.chain")

R = TypeVar("R")

#: The G2 point at infinity, compressed: the empty aggregate signature genesis carries.
EMPTY_SIGNATURE = bytes([0xC0]) + bytes(95)
ZERO_HASH = bytes(32)
#: How long init waits for a restarting StorageActor (longer than its largest backoff).
INIT_WAIT = 90.0
#: How long a handler waits for a restarting sibling before answering with an error.
CALL_WAIT = 10.0
#: How long persisting a queued PoW may wait; past it the PoW stays queued in memory.
QUEUE_WAIT = 2.0
#: How long (seconds) a peer's vote may wait unchecked for the votes it could make a quorum
#: with (they are then checked together, node.workflows.prevotes): past it, it is checked
#: anyway and passed on. Votes for one block arrive within tens of milliseconds of each
#: other; a node that does not vote for the block itself (it has not seen it, it restarted)
#: holds them short of a quorum, and its peers may need them relayed.
VOTE_CHECK_WAIT = 0.2
#: How much longer than the EngineActor's own bound on a request (``engine.request_timeout``)
#: a call to it may take: a slow execution client shows up as the engine's error (which
#: names the call that was slow), never as a CallTimeout of ours first.
ENGINE_CALL_MARGIN = 10.0
#: How long production waits for the bridge's deposits before producing without peg-ins.
BRIDGE_WAIT = 1.0
#: How long verifying a block's peg-ins may take (the bridge may ask Bitcoin).
BRIDGE_VERIFY_WAIT = 15.0
#: How long production waits for the federation's peg-out fields before producing without.
FEDERATION_WAIT = 3.0
#: How long verifying a block's peg-out fields may take (the federation may ask Bitcoin and
#: read receipts of blocks it has not applied yet).
FEDERATION_VERIFY_WAIT = 30.0


def load_or_create_key(path: Path) -> bls.SecretKey:
    """The node's authority key: read from ``path`` (hex), or generated once and written
    atomically (a temporary file, fsynced, renamed over ``path``, directory fsynced), so a
    process killed while writing it leaves no half-written key behind."""
    if path.exists():
        text = path.read_text(encoding="utf-8").strip()
        try:
            return bls.SecretKey.from_bytes(bytes.fromhex(text.removeprefix("0x")))
        except (ValueError, bls.BLSError) as exc:
            raise KeyFileError(f"the key file {path} is not a valid BLS secret key: {exc}") from exc
    path.parent.mkdir(parents=True, exist_ok=True)
    key = bls.SecretKey.from_seed(secrets.token_bytes(32))
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, (key.to_bytes().hex() + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
    logger.info("generated a new authority key in %s", path)
    return key


def now_ms() -> int:
    """Unix milliseconds from the runtime's wall clock (``otp.system_time``: virtual in a
    simulation, so the node's slots run in virtual time there)."""
    return int(otp.system_time() * 1000)


class ChainActor(otp.GenServer):
    async def init(
        self,
        config: dict[str, Any] | None = None,
        data_dir: str = ".alys",
        storage: str = "storage",
        engine: str = "engine",
        synced: bool = True,
        produce: bool = True,
        clock: Callable[[], int] | None = None,
        engine_config: dict[str, Any] | None = None,
        network: str = "network",
        bus_prefix: str = "",
        bridge: str = "bridge",
        federation: str = "federation",
    ) -> None:
        """``clock`` gives unix milliseconds (default: :func:`now_ms`, the runtime's wall
        clock); a test may pass its own. ``engine_config`` (the ``engine`` section) sets
        how long calls to the EngineActor may take. ``network`` names the NetworkActor
        (proposals and approvals are gossiped through it; without one, nothing is) and
        ``bus_prefix`` goes before every bus topic this actor publishes or follows (several
        nodes in one runtime, as the NetworkActor's)."""
        self.cfg: ChainConfig = structure_section(config or {}, ChainConfig, "chain")
        engine_cfg: EngineConfig = structure_section(engine_config or {}, EngineConfig,
                                                     "engine")
        self.engine_timeout = engine_cfg.request_timeout + ENGINE_CALL_MARGIN
        #: Set while production waits for the execution client (one log line each way).
        self.engine_away: str | None = None
        self.difficulty = difficulty.config_from(self.cfg)
        self.storage, self.engine, self.network = storage, engine, network
        #: The BridgeActor (peg-ins); production goes on without it.
        self.bridge = bridge
        #: Why the last block was produced without the bridge's peg-ins (one log line each way).
        self.pegins_away: str | None = None
        #: The FederationActor (peg-outs); production goes on without it.
        self.federation_actor = federation
        self.pegouts_away: str | None = None
        self.prefix = bus_prefix
        self.synced = synced
        self.clock = clock or now_ms
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
        self.federation = tuple(bytes.fromhex(a.removeprefix("0x"))
                                for a in self.cfg.federation_evm_addresses)
        self.fee_recipient = bytes.fromhex(self.cfg.fee_recipient.removeprefix("0x"))
        self.paused = False
        self.away: str | None = None  # the sibling a skipped slot was waiting for
        #: A block whose write failed with the storage: stored or not, we learn when it is back.
        self.unsure: tuple[BlockRef, rules.ChainState] | None = None
        info: storage_msgs.ChainInfo = await self._storage(storage_msgs.GetChainInfo(), INIT_WAIT)
        if info.head is None:
            await self._genesis()
            info = await self._storage(storage_msgs.GetChainInfo(), INIT_WAIT)
        self.state = await self._load(info)
        self.bits = rules.next_bits(self.state, self.difficulty)
        self.queued: AuxPowHeader | None = info.queued_pow
        if self.queued is not None:
            problem = rules.pow_problem(self.state, self.queued, self.bits)
            if problem is not None:
                logger.warning("stored queued AuxPoW dropped: %s", problem)
                await self._persist_queued(None)
            else:
                logger.info("queued AuxPoW for #%d recovered from storage", self.queued.height)
        head = self.state.head
        metrics.HEAD_HEIGHT.set(head.height)
        metrics.FINALIZED_HEIGHT.set(self.state.finalized.height)
        logger.info(
            "chain at #%d %s (finalized #%d); authority %s of %d",
            head.height, head.hash().hex()[:16], self.state.finalized.height,
            self.index, len(self.authorities),
        )
        #: Blocks proposed on our head and their approvals (node.workflows.approvals).
        self.proposals = approvals.Proposals(head.hash())
        #: Prevotes and precommits at the height above the head, and our vote lock.
        self.votes = prevotes.for_head(None, head.hash(), head.height + 1, info.votes)
        await self._restore_voted(info.votes)
        #: A "check-votes" message is on its way (VOTE_CHECK_WAIT after a vote waited).
        self.vote_check_due = False
        if self.votes.lock.prevoted_round >= 0:
            logger.info("vote lock at #%d kept from before the restart (locked %s, last "
                        "prevote in round %d)", self.votes.height,
                        "on " + self.votes.lock.locked_hash.hex()[:16]
                        if self.votes.lock.locked_hash else "on nothing",
                        self.votes.lock.prevoted_round)
        #: The held proposal production last said it waits for (one log line per block).
        self.waiting_for: bytes | None = None
        otp.bus.subscribe(self.prefix + SYNC_TOPIC)  # produce only while synced
        for topic in (CONSENSUS_BLOCK, APPROVE_BLOCK, QUEUE_POW):
            otp.bus.subscribe(self.prefix + gossip_topic(topic))
        if produce and self.index is not None:
            self._schedule_next_slot()

    # -- helpers ------------------------------------------------------------------------------

    async def _storage(self, request: otp.Request[R], wait: float = CALL_WAIT) -> R:
        return await sibling.call_storage(request, storage=self.storage, wait=wait)

    async def _engine(self, request: Any, wait: float = CALL_WAIT) -> Any:
        """Ask the EngineActor. It answers engine errors rather than crash on them: raised
        here, except a commit's refusal of its payload (:class:`PayloadStatusError`), which
        :meth:`_import` reads as the answer it is."""
        answer = await sibling.call(self.engine, request, timeout=self.engine_timeout,
                                    wait=wait)
        if isinstance(answer, EngineError) and not (
                isinstance(request, engine_msgs.CommitPayload)
                and isinstance(answer, PayloadStatusError)):
            raise answer
        return answer

    async def _block(self, block_hash: bytes, wait: float = CALL_WAIT) -> SignedConsensusBlock:
        state: rules.ChainState | None = getattr(self, "state", None)
        if state is not None and block_hash == state.head.hash():
            await trio.lowlevel.checkpoint()
            return state.head
        block = await self._storage(storage_msgs.GetBlock(block_hash), wait)
        if block is None:
            raise MissingBlock(f"block {block_hash.hex()} is missing from storage")
        return block

    async def _genesis(self) -> None:
        payload = await self._engine(engine_msgs.GetGenesis(), INIT_WAIT)
        header = AuxPowHeader(ZERO_HASH, ZERO_HASH, self.cfg.bits, self.cfg.chain_id, 0, None,
                              self.fee_recipient)
        genesis = SignedConsensusBlock(
            ConsensusBlock(ZERO_HASH, 0, payload, header), AggregateApproval(0, EMPTY_SIGNATURE)
        )
        ref = genesis.ref()
        await self._storage(storage_msgs.PutBlock(genesis, head=True, finalized=ref), INIT_WAIT)
        logger.info("genesis block %s", ref.hash.hex())

    async def _load(self, info: storage_msgs.ChainInfo) -> rules.ChainState:
        """The chain state from the stored meta records and indexes: a handful of reads,
        whatever the length of the chain."""
        assert info.head is not None and info.finalized is not None
        head = await self._block(info.head.hash, INIT_WAIT)
        finalized = await self._block(info.finalized.hash, INIT_WAIT)
        last_pow_ref = info.last_pow or info.head
        last_pow = await self._block(last_pow_ref.hash, INIT_WAIT)
        pow_header = last_pow.message.auxpow_header
        refs = await self._storage(storage_msgs.GetCanonicalRefs(
            info.finalized.height + 1, info.head.height), INIT_WAIT)
        if len(refs) != info.head.height - info.finalized.height:
            missing = info.finalized.height + 1 + len(refs)
            raise MissingBlock(f"canonical block #{missing} is missing from storage")
        return rules.ChainState(
            head=head,
            finalized=info.finalized,
            finalized_payload=finalized.message.execution_payload.block_hash,
            last_pow=last_pow_ref,
            last_pow_bits=pow_header.bits if pow_header is not None else self.cfg.bits,
            unfinalized=tuple(refs),
            fees=info.fees,
        )

    def _context(self, pegins: dict[tuple[bytes, bytes], rules.PegIn] | None = None
                 ) -> rules.ValidationContext:
        return rules.validation_context(
            self.state,
            authorities=self.authorities,
            slot_duration_ms=self.cfg.slot_duration_ms,
            now_ms=self.clock(),
            chain_id=self.cfg.chain_id,
            max_blocks_without_pow=self.cfg.max_blocks_without_pow,
            expected_bits=self.bits,
            federation=self.federation,
            pegins=pegins,
        )

    def _schedule_next_slot(self) -> None:
        duration = self.cfg.slot_duration_ms
        now = self.clock()
        next_start = (now // duration + 1) * duration
        otp.send_after(otp.self(), "slot", max(next_start - now, 0) / 1000)

    async def _persist_queued(self, header: AuxPowHeader | None) -> bool:
        try:
            await self._storage(storage_msgs.PutQueuedPow(header), QUEUE_WAIT)
        except CALL_FAILURES as exc:
            logger.warning("queued AuxPoW %s not persisted (storage unavailable): %s",
                           "clear" if header is None else f"for #{header.height}", exc)
            return False
        return True

    async def _reconcile(self) -> None:
        """After a failed block write: adopt the block if the storage has it as its head."""
        if self.unsure is None:
            await trio.lowlevel.checkpoint()
            return
        ref, state = self.unsure
        head = await self._storage(storage_msgs.GetHead())
        self.unsure = None
        if head == ref:
            logger.info("block #%d %s was stored before the storage went down", ref.height,
                        ref.hash.hex()[:16])
            self._adopt(state)
        else:
            logger.info("block #%d %s was not stored; the chain goes on from #%d", ref.height,
                        ref.hash.hex()[:16], self.state.head.height)

    def _adopt(self, new: rules.ChainState, *, retarget: bool = True) -> None:
        """``new`` as the head's state (``retarget=False``: the bits not recomputed yet, for
        a batch that recomputes them after its last block)."""
        header = new.head.message.auxpow_header
        self.state = new
        if header is not None and self.queued is not None and (
                self.queued.range_end == header.range_end):
            self.queued = None
        if retarget:
            self.bits = rules.next_bits(new, self.difficulty)

    # -- production ---------------------------------------------------------------------------

    async def handle_info(self, msg: Any) -> None:
        if isinstance(msg, GossipReceived):
            await self._on_gossip(msg)
            return
        if isinstance(msg, SyncProgress):
            await trio.lowlevel.checkpoint()
            if msg.synced != self.synced:
                logger.info("synced at #%d: block production goes on" if msg.synced else
                            "behind the network (#%d of #%d): block production waits for sync",
                            *((msg.current,) if msg.synced else (msg.current, msg.target)))
                self.synced = msg.synced
            return
        if msg == "check-votes":
            self.vote_check_due = False
            await self._check_votes()
            return
        if msg != "slot":
            await super().handle_info(msg)
            return
        self._schedule_next_slot()
        try:
            await self._produce()
        except EngineUnavailable:
            pass  # logged once by _produce; the EngineActor is on it
        except CALL_FAILURES as exc:
            # A sibling failed or stayed away mid-block: its supervisor is on it; this slot's
            # block is lost and the next slot tries again (first learning, if the block's
            # write failed, whether it was stored: see _reconcile).
            logger.warning("slot skipped: %s", exc)
        # The votes of the slot do not need the engine: a block we could not build (or a
        # sibling away) costs our block, never our votes on the others' blocks.
        try:
            await self._vote_slot()
        except CALL_FAILURES as exc:
            logger.warning("votes of the slot not cast: %s", exc)

    def _siblings_away(self) -> str | None:
        for name in (self.storage, self.engine):
            if otp.whereis(name) is None:
                return name
        return None

    async def _produce(self) -> BlockRef | None:
        """Produce the block of this slot if it is ours. While the execution client is away
        (stopped, restarting, hung) or still being given the stored blocks it lacks, the
        EngineActor answers :class:`EngineUnavailable`: production pauses with one log line
        and resumes, with another, at the first block made once it is back."""
        try:
            ref = await self._produce_block()
        except EngineUnavailable as exc:
            if self.engine_away is None:
                logger.warning("block production paused at #%d: %s; it resumes when the "
                               "execution client is back", self.state.head.height, exc)
            self.engine_away = str(exc)
            raise
        if ref is not None and self.engine_away is not None:
            logger.info("the execution client is back: block production resumed at #%d",
                        ref.height)
            self.engine_away = None
        return ref

    async def _produce_block(self) -> BlockRef | None:
        state = self.state
        slot = rules.slot_at(self.clock(), self.cfg.slot_duration_ms)
        if self.index is None or not self.synced or slot <= state.head.message.slot:
            await trio.lowlevel.checkpoint()
            return None
        if rules.author_index(slot, len(self.authorities)) != self.index:
            await trio.lowlevel.checkpoint()
            return None
        if len(self.authorities) > 1 and not self._may_build(slot):
            await trio.lowlevel.checkpoint()
            return None
        away = self._siblings_away()
        if away is not None:
            if self.away != away:
                logger.warning("slot %d skipped: %s is restarting; production waits for it",
                               slot, away)
            self.away = away
            await trio.lowlevel.checkpoint()
            return None
        if self.away is not None:
            logger.info("%s is back: production resumes", self.away)
            self.away = None
        await self._reconcile()
        state = self.state
        if slot <= state.head.message.slot:
            return None
        head_payload = state.head.message.execution_payload
        timestamp = rules.payload_timestamp(slot, self.cfg.slot_duration_ms,
                                            head_payload.timestamp)
        if timestamp is None:
            await trio.lowlevel.checkpoint()
            return None  # this slot starts in the second of the parent's timestamp
        pow_header = self.queued
        if pow_header is not None and (
                problem := rules.pow_problem(state, pow_header, self.bits)) is not None:
            # The chain moved on since it was queued (a retarget, another PoW block): the
            # block would fail validation with it, so it goes and a miner fetches new work.
            logger.warning("queued AuxPoW for #%d dropped: %s", pow_header.height, problem)
            self.queued = pow_header = None
            await self._persist_queued(None)
        if pow_header is not None and state.fees is None:
            # Snap sync stored the blocks since the latest AuxPoW block without executing
            # them: what the PoW block would mint is unknown here. Another authority's block
            # carries the PoW (the queued header stays for a later slot).
            logger.warning("block #%d carries no AuxPoW: the fees since block #%d are unknown "
                           "on this node (snap sync)", state.head.height + 1,
                           state.last_pow.height)
            pow_header = None
        if pow_header is None:
            paused = rules.max_blocks_problem(state.head.height, state.last_pow.height,
                                              self.cfg.max_blocks_without_pow)
            if paused is not None:
                if not self.paused:
                    logger.warning(
                        "production paused at #%d: %d blocks since the last AuxPoW block "
                        "(#%d) and no AuxPoW yet; waiting for a miner "
                        "(max_blocks_without_pow=%d)",
                        state.head.height, rules.blocks_since_pow(state), state.last_pow.height,
                        self.cfg.max_blocks_without_pow,
                    )
                    self.paused = True
                await trio.lowlevel.checkpoint()
                return None
        if self.paused:
            logger.info("PoW arrived: production resumes")
            self.paused = False
        pegins = await self._pegins_for_block(state.head.height + 1)
        withdrawals: list[Any] = rules.pegin_withdrawals(list(pegins), pegins)
        if pow_header is not None:
            assert state.fees is not None  # unknown fees carry no PoW (above)
            withdrawals += rules.fee_withdrawals(state.fees, pow_header.fee_recipient,
                                                 self.federation)
        payload = await self._engine(engine_msgs.BuildPayload(
            head=head_payload.block_hash,
            finalized=state.finalized_payload,
            timestamp=timestamp,
            fee_recipient=self.fee_recipient,
            withdrawals=tuple(withdrawals),
        ))
        block = rules.new_block(state.head, slot, payload, pow_header, list(pegins))
        block = await self._with_pegouts(block, state.head.ref())
        signed = rules.sign_block(block, self.key, self.index)
        needed = rules.required_approvals(len(self.authorities))
        if signed.signature.count() < needed:
            # Several authorities: the block is imported once ceil(2n/3) of them approved it.
            # Every rule but the signature, ours, made just now with our authority's key.
            rules.validate_block(signed, state.head, self._context(pegins),
                                 require_approvals=False, signature_checked=True)
            self.proposals = approvals.propose(self._proposals(), signed, self.authorities,
                                               self._named())
            self._gossip(CONSENSUS_BLOCK, signed)
            await self._advance()  # our prevote for it
            self._log_waiting()
            return None
        ref = await self._import(signed, produced=True, pegins=pegins, pegouts_checked=True)
        metrics.BLOCKS_PRODUCED.inc()
        return ref

    # -- import -------------------------------------------------------------------------------

    async def _import(self, signed: SignedConsensusBlock, produced: bool = False,
                      signature_checked: bool = False,
                      pegins: dict[tuple[bytes, bytes], rules.PegIn] | None = None,
                      pegouts_checked: bool = False) -> BlockRef:
        """``pegins``: the block's peg-ins as its producer (this node) verified them; None:
        verify them (:meth:`_verify_pegins`). ``pegouts_checked``: the block's peg-out fields
        came from this node's FederationActor (else :meth:`_verify_pegouts`)."""
        started = time.perf_counter()
        await self._reconcile()
        state = self.state
        new = await self._execute(signed, signature_checked, pegins=pegins,
                                  pegouts_checked=pegouts_checked)
        # The write that makes the block part of the chain: one synced batch. Until it
        # returns, this actor's state is still the stored chain's.
        try:
            ref: BlockRef = await self._storage(storage_msgs.PutBlock(
                signed, head=True,
                finalized=new.finalized if new.finalized != state.finalized else None,
                fees=new.fees,
            ))
        except CALL_FAILURES:
            self.unsure = (signed.ref(), new)
            raise
        self._adopt(new)
        self._imported(signed, new, produced, time.perf_counter() - started)
        return ref

    async def _execute(self, signed: SignedConsensusBlock, signature_checked: bool,
                       pending: dict[bytes, SignedConsensusBlock] | None = None,
                       pegins: dict[tuple[bytes, bytes], rules.PegIn] | None = None,
                       pegouts_checked: bool = False) -> rules.ChainState:
        """Validate ``signed`` on the head and have the engine execute and commit its
        payload; the chain state after it (not adopted, not stored). ``pending``: blocks
        imported before it but not stored yet (an AuxPoW header may end its range at one;
        a peg-in one of them credits is credited already). ``pegins``: the block's peg-ins
        as its producer (this node) verified them; None: verify them
        (:meth:`_verify_pegins`). ``pegouts_checked``: its peg-out fields came from this
        node's FederationActor (else :meth:`_verify_pegouts`)."""
        state = self.state
        block = signed.message
        if block.parent_hash != state.head.hash():
            raise rules.BlockError("fork", "the block does not extend the head (forks arrive "
                                   "with the network)")
        if pending and block.pegins:
            credited = {txid: b for b in pending.values() for txid, _ in b.message.pegins}
            for txid, _bitcoin_block in block.pegins:
                if txid in credited:
                    raise rules.BlockError(
                        "pegins", f"peg-in {txid[::-1].hex()} was credited already, by block "
                        f"#{credited[txid].height} {credited[txid].hash().hex()[:16]}")
        if pegins is None:
            pegins = await self._verify_pegins(block)
        rules.validate_block(signed, state.head, self._context(pegins),
                             signature_checked=signature_checked)
        if not pegouts_checked:
            await self._verify_pegouts(block, state.head.ref())
        range_end = None
        finalized_payload = state.finalized_payload
        if block.auxpow_header is not None:
            end_hash = block.auxpow_header.range_end
            range_end = (pending or {}).get(end_hash) or await self._block(end_hash)
            finalized_payload = range_end.message.execution_payload.block_hash
        committed = await self._engine(engine_msgs.CommitPayload(block.execution_payload,
                                                                 finalized_payload))
        if isinstance(committed, PayloadStatusError):
            raise rules.BlockError("payload", f"the execution engine refused the payload: "
                                   f"{committed}")
        if committed.head != block.execution_payload.block_hash:
            raise rules.BlockError("payload", "the engine did not accept the payload as head")
        return rules.import_block(state, signed, committed.fees, range_end)

    def _imported(self, signed: SignedConsensusBlock, new: rules.ChainState, produced: bool,
                  elapsed: float) -> None:
        """After ``signed`` was stored: the bridge told of its peg-ins, metrics, the log
        line, ``BlockImported``."""
        block = signed.message
        ref = signed.ref()
        self._announce(signed, ref, new, produced)
        metrics.BLOCKS_IMPORTED.inc()
        metrics.IMPORT_SECONDS.observe(elapsed)
        metrics.HEAD_HEIGHT.set(ref.height)
        metrics.FINALIZED_HEIGHT.set(new.finalized.height)
        logger.info(
            "%s block #%d %s slot %d, %d tx, finalized #%d%s (%.1f ms)",
            "produced" if produced else "imported", ref.height, ref.hash.hex()[:16],
            block.slot, len(block.execution_payload.transactions), new.finalized.height,
            f", AuxPoW for #{block.auxpow_header.height}" if block.auxpow_header else "",
            elapsed * 1000,
        )

    def _announce(self, signed: SignedConsensusBlock, ref: BlockRef, new: rules.ChainState,
                  produced: bool) -> None:
        """A stored block's peg-ins told to the bridge, and its ``BlockImported``."""
        self._tell_bridge_credited(signed.message, ref)
        otp.bus.publish_nowait(self.prefix + BLOCKS_TOPIC,
                               BlockImported(ref, signed.message.slot, new.finalized, produced))

    def _imported_many(self, done: Sequence[tuple[SignedConsensusBlock, rules.ChainState]],
                       elapsed: float) -> None:
        """After sync's batch ``done`` was stored: each block announced as :meth:`_imported`
        does, the metrics moved once, and one log line for the batch (``elapsed``: seconds
        per block)."""
        for signed, new in done:
            self._adopt(new, retarget=False)
            self._announce(signed, signed.ref(), new, False)
        first, (last, new) = done[0][0], done[-1]
        self.bits = rules.next_bits(new, self.difficulty)
        metrics.BLOCKS_IMPORTED.inc(len(done))
        for _ in done:
            metrics.IMPORT_SECONDS.observe(elapsed)
        metrics.HEAD_HEIGHT.set(last.height)
        metrics.FINALIZED_HEIGHT.set(new.finalized.height)
        pows = sum(1 for signed, _ in done if signed.message.auxpow_header is not None)
        logger.info("imported %d blocks #%d..#%d %s, %d tx, finalized #%d%s (%.1f ms a block)",
                    len(done), first.height, last.height, last.hash().hex()[:16],
                    sum(len(signed.message.execution_payload.transactions)
                        for signed, _ in done),
                    new.finalized.height, f", {pows} with AuxPoW" if pows else "",
                    elapsed * 1000)

    async def _record(self, signed: SignedConsensusBlock, signature_checked: bool,
                      pending: dict[bytes, SignedConsensusBlock]) -> rules.ChainState:
        """Snap sync's history: ``signed`` validated on the head by every consensus rule but
        its withdrawals (``history=True``), its payload not executed; the chain state after
        it, with its fees unknown (:func:`rules.import_history`)."""
        await trio.lowlevel.checkpoint()
        state = self.state
        block = signed.message
        if block.parent_hash != state.head.hash():
            raise rules.BlockError("fork", "the block does not extend the head")
        rules.validate_block(signed, state.head, self._context(),
                             signature_checked=signature_checked, history=True)
        range_end = None
        if block.auxpow_header is not None:
            end_hash = block.auxpow_header.range_end
            range_end = pending.get(end_hash) or await self._block(end_hash)
        return rules.import_history(state, signed, range_end)

    async def _pivot_at_head(self, state_whole: bool) -> BlockRef | Exception:
        """:class:`PivotAtHead`: the engine's ``SetPivot`` with the head's payload and its
        ancestors' (the last 256, and back to the finalized block when it is older, so that
        the forkchoice can name it; genesis the engine has)."""
        state = self.state
        height = state.head.height
        first = max(1, height - PIVOT_ANCESTORS + 1)
        if 0 < state.finalized.height < first:
            first = state.finalized.height
        refs = await self._storage(storage_msgs.GetCanonicalRefs(first, height))
        if len(refs) != height - first + 1:
            return MissingBlock(f"canonical blocks #{first}..#{height} are not all stored")
        payloads = []
        for ref in refs:
            payloads.append((await self._block(ref.hash)).message.execution_payload)
        answer = await self._engine(engine_msgs.SetPivot(
            tuple(payloads), safe=state.finalized_payload, finalized=state.finalized_payload,
            state_whole=state_whole))
        if isinstance(answer, Exception):
            return answer
        logger.info("snap sync: the engine executes from block #%d %s on (its state "
                    "downloaded; blocks #1..#%d stored without executing them)", height,
                    state.head.hash().hex()[:16], height)
        return state.head.ref()

    async def _import_many(self, blocks: tuple[SignedConsensusBlock, ...],
                           signature_checked: bool, execute: bool = True) -> ImportedBlocks:
        """Sync's import: each block validated and executed in turn, then every block up to
        the first refused one stored in one synced batch (``PutBlocks``: all or none), and
        only then adopted and announced. A kill before the write leaves the engine ahead of
        the stored head, which its restart path moves back. A block carrying peg-out fields
        is imported only first in a call (the federation checks them on the chain it has
        followed): the call stops before it, with no error, and the next one starts there."""
        started = time.perf_counter()
        await self._reconcile()
        saved = self.state, self.queued, self.bits
        done: list[tuple[SignedConsensusBlock, rules.ChainState]] = []
        pending: dict[bytes, SignedConsensusBlock] = {}
        puts: list[storage_msgs.PutBlock] = []
        error: Exception | None = None
        for signed in blocks:
            message = signed.message
            if execute and done and (message.pegout_payment_proposal is not None
                                     or message.finalized_pegouts):
                # The federation checks peg-outs against the chain it has followed: their
                # block waits for the next call, after this batch is stored and announced.
                break
            before = self.state
            try:
                if execute:
                    new = await self._execute(signed, signature_checked, pending)
                else:
                    new = await self._record(signed, signature_checked, pending)
            except (rules.BlockError, *CALL_FAILURES) as exc:
                error = exc
                break
            puts.append(storage_msgs.PutBlock(
                signed, head=True,
                finalized=new.finalized if new.finalized != before.finalized else None,
                fees=new.fees))
            pending[signed.hash()] = signed
            done.append((signed, new))
            self._adopt(new)  # the next block is validated on this one
        self.state, self.queued, self.bits = saved
        if done:
            try:
                await self._storage(storage_msgs.PutBlocks(tuple(puts)))
            except CALL_FAILURES as exc:
                self.unsure = (done[-1][0].ref(), done[-1][1])
                return ImportedBlocks(0, self.state.head.ref(), exc)
            self._imported_many(done, (time.perf_counter() - started) / len(done))
        return ImportedBlocks(len(done), self.state.head.ref(), error)

    # -- peg-ins (the BridgeActor; node.workflows.pegin) --------------------------------------

    async def _pegins_for_block(self, height: int) -> dict[tuple[bytes, bytes], rules.PegIn]:
        """The confirmed deposits block ``height`` credits, from the bridge, less any the
        credited-peg-in index names (a credit the bridge has not heard of yet: it is told).
        Without an answer from the bridge in :data:`BRIDGE_WAIT` the block has no peg-ins,
        with a log line (and one more when they are back)."""
        if otp.whereis(self.bridge) is None:
            await trio.lowlevel.checkpoint()
            return {}
        try:
            deposits = await otp.call(self.bridge, bridge_msgs.GetPegInsForBlock(),
                                      timeout=BRIDGE_WAIT)
            credited = await self._storage(storage_msgs.GetCreditedPegIns(
                tuple(d.txid for d in deposits))) if deposits else {}
        except CALL_FAILURES as exc:
            if self.pegins_away is None:
                logger.warning("block #%d and those after it are produced without peg-ins: "
                               "the bridge does not answer (%s)", height, exc)
            self.pegins_away = str(exc)
            return {}
        if self.pegins_away is not None:
            logger.info("the bridge answers again: block #%d credits peg-ins", height)
            self.pegins_away = None
        for deposit in deposits:
            ref = credited.get(deposit.txid)
            if ref is not None:
                self._cast_bridge(bridge_msgs.PegInsCredited((deposit.key,), ref.hash,
                                                             ref.height))
        return {d.key: to_pegin(d) for d in deposits if d.txid not in credited}

    async def _verify_pegins(self, block: ConsensusBlock
                             ) -> dict[tuple[bytes, bytes], rules.PegIn]:
        """The peg-ins ``block`` claims, verified: none credited by an earlier block (the
        credited-peg-in index), each confirmed by the bridge (its records, or Bitcoin).
        Raises BlockError otherwise (rule ``pegins``; ``pegins-unverifiable`` when the bridge
        cannot be asked: not the block's fault)."""
        if not block.pegins:
            await trio.lowlevel.checkpoint()
            return {}
        credited = await self._storage(storage_msgs.GetCreditedPegIns(
            tuple(txid for txid, _ in block.pegins)))
        for txid, ref in credited.items():
            raise rules.BlockError("pegins", f"peg-in {txid[::-1].hex()} was credited "
                                   f"already, by block #{ref.height} {ref.hash.hex()[:16]}")
        try:
            verdict: bridge_msgs.PegInVerdict = await sibling.call(
                self.bridge, bridge_msgs.VerifyPegIns(block.pegins),
                timeout=BRIDGE_VERIFY_WAIT, wait=0.0)
        except CALL_FAILURES as exc:
            raise rules.BlockError("pegins-unverifiable", f"the block claims {len(block.pegins)} "
                                   f"peg-ins and the bridge cannot verify them ({exc})") from None
        if verdict.problems:
            raise rules.BlockError("pegins", "; ".join(verdict.problems.values()))
        return verdict.verified

    def _tell_bridge_credited(self, block: ConsensusBlock, ref: BlockRef) -> None:
        if block.pegins:
            metrics.PEGIN_CREDITED_BLOCKS.inc(len(block.pegins))
            self._cast_bridge(bridge_msgs.PegInsCredited(block.pegins, ref.hash, ref.height))

    def _cast_bridge(self, msg: bridge_msgs.PegInsCredited) -> None:
        """Tell the bridge without waiting; lost if it is away (the credited index, written
        with the block, is what it reads at its next start)."""
        try:
            otp.cast_nowait(self.bridge, msg)
        except (trio.WouldBlock, *CALL_FAILURES):
            logger.info("the bridge did not hear of %d credited peg-ins (it reads them from "
                        "storage at its next start)", len(msg.claimed))

    # -- peg-outs (the FederationActor; node.workflows.pegout_book) ---------------------------

    async def _with_pegouts(self, block: ConsensusBlock, parent: BlockRef) -> ConsensusBlock:
        """``block`` with the peg-out fields the federation gives for it: a proposal of the
        open requests, and for an AuxPoW block the signed peg-outs no block carried yet.
        Without the federation (disabled, away, slower than :data:`FEDERATION_WAIT`) the
        block has none, with a log line (and one more when it answers again)."""
        if otp.whereis(self.federation_actor) is None:
            await trio.lowlevel.checkpoint()
            return block
        try:
            fields: federation_msgs.PegOutsForBlock = await otp.call(
                self.federation_actor, federation_msgs.GetPegOutsForBlock(
                    parent, block.auxpow_header is not None), timeout=FEDERATION_WAIT)
        except CALL_FAILURES as exc:
            if self.pegouts_away is None:
                logger.warning("block #%d and those after it are produced without peg-outs: "
                               "the federation does not answer (%s)", parent.height + 1, exc)
            self.pegouts_away = str(exc)
            return block
        if self.pegouts_away is not None:
            logger.info("the federation answers again: block #%d carries peg-outs",
                        parent.height + 1)
            self.pegouts_away = None
        if fields.proposal is None and not fields.finalized:
            return block
        return attrs.evolve(block, pegout_payment_proposal=fields.proposal,
                            finalized_pegouts=fields.finalized)

    async def _verify_pegouts(self, block: ConsensusBlock, parent: BlockRef) -> None:
        """Check the peg-out fields of ``block`` with the federation (rule ``pegouts``;
        ``pegouts-unverifiable`` when it cannot tell: not the block's fault). A block without
        them costs nothing."""
        if block.pegout_payment_proposal is None and not block.finalized_pegouts:
            return
        try:
            verdict: federation_msgs.PegOutVerdict = await sibling.call(
                self.federation_actor, federation_msgs.VerifyPegOuts(
                    parent, block.pegout_payment_proposal, block.finalized_pegouts,
                    block.auxpow_header is not None),
                timeout=FEDERATION_VERIFY_WAIT, wait=0.0)
        except CALL_FAILURES as exc:
            raise rules.BlockError("pegouts-unverifiable", f"the block carries peg-outs and "
                                   f"the federation cannot check them ({exc})") from None
        if verdict.problem is not None:
            rule = "pegouts-unverifiable" if verdict.unverifiable else "pegouts"
            logger.warning("block #%d on %s refused for its peg-outs: %s", parent.height + 1,
                           parent.hash.hex()[:16], verdict.problem)
            raise rules.BlockError(rule, verdict.problem)

    def _tell_federation_pow(self) -> None:
        """PoW is queued: federation members sign the open proposals now."""
        try:
            otp.cast_nowait(self.federation_actor, federation_msgs.SignPegOuts())
        except (trio.WouldBlock, *CALL_FAILURES):
            pass  # no federation here (disabled, restarting): the next PoW signs

    # -- calls --------------------------------------------------------------------------------

    async def handle_call(self, request: Any, from_: otp.From) -> Any:
        match request:
            case GetStatus():
                await trio.lowlevel.checkpoint()
                state = self.state
                return ChainStatus(state.head.ref(), state.finalized, self.queued, self.synced,
                                   self.paused, self.index, len(self.authorities), self.bits,
                                   state.last_pow, self._waiting(stale_only=True))
            case GetUnfinalized():
                await trio.lowlevel.checkpoint()
                return list(self.state.unfinalized)
            case QueuePow(header):
                problem = rules.pow_problem(self.state, header, self.bits)
                if problem is not None:
                    await trio.lowlevel.checkpoint()
                    return problem
                self.queued = header
                await self._persist_queued(header)
                self._gossip(QUEUE_POW, header)  # whoever produces next uses it
                self._tell_federation_pow()
                return None
            case ImportBlock(block):
                try:
                    return await self._import(block)
                except (rules.BlockError, *CALL_FAILURES) as exc:
                    return exc
            case PivotAtHead(whole):
                try:
                    return await self._pivot_at_head(whole)
                except CALL_FAILURES as exc:
                    return exc
            case ImportBlocks(blocks, verified, execute):
                try:
                    return await self._import_many(blocks, verified, execute)
                except CALL_FAILURES as exc:  # the reconcile's read
                    return ImportedBlocks(0, self.state.head.ref(), exc)
            case AddApproval(approval):
                await trio.lowlevel.checkpoint()
                return await self._add_approval(approval)
            case ProduceNow():
                try:
                    return await self._produce()
                except CALL_FAILURES as exc:
                    return exc
        raise otp.UnexpectedMessage(self, "call", request)

    async def _add_approval(self, approval: IndividualApproval) -> Any:
        """An approval of the block this node produced and holds (tests, tools; approvals
        from the network arrive as gossip, for any held block)."""
        held = self._held_proposal()
        if held is None or held.signature.bitfield >> (self.index or 0) & 1 == 0:
            await trio.lowlevel.checkpoint()
            return rules.BlockError("approval", "no block of ours awaits approvals")
        try:
            self.proposals = approvals.add(self.proposals, held.hash(), approval,
                                           self.authorities)
            return await self._import_if_ready()
        except (rules.BlockError, *CALL_FAILURES) as exc:
            return exc

    # -- approvals across authorities (node.workflows.approvals) --------------------------

    def _proposals(self) -> approvals.Proposals:
        """The proposals on the current head (dropped when it moved)."""
        self.proposals = approvals.for_head(self.proposals, self.state.head.hash())
        return self.proposals

    def _held_proposal(self) -> SignedConsensusBlock | None:
        """The block this node approved on its head, or else the one it is locked on, or
        else the one it last prevoted (if held)."""
        proposals = self._proposals()
        lock = self._votes().lock
        for block_hash in (proposals.approved_hash, lock.locked_hash, lock.prevoted_hash):
            block = None if block_hash is None else proposals.get(block_hash)
            if block is not None:
                return block
        return None

    def _waiting(self, stale_only: bool = False) -> str | None:
        """What production waits for, if a block this node approved lacks approvals
        (``stale_only``: only once its slot is over: within its slot, waiting is normal)."""
        held = self._held_proposal()
        if held is None:
            return None
        if stale_only and held.message.slot >= rules.slot_at(self.clock(),
                                                              self.cfg.slot_duration_ms):
            return None
        needed = rules.required_approvals(len(self.authorities))
        return (f"block #{held.height} {held.hash().hex()[:16]} slot {held.message.slot} "
                f"waits for {needed} approvals of {len(self.authorities)} authorities (has "
                f"{held.signature.count()})")

    def _log_waiting(self) -> None:
        held = self._held_proposal()
        if held is None or held.hash() == self.waiting_for:
            return
        self.waiting_for = held.hash()
        logger.info("%s", self._waiting())

    def _tell_network(self, msg: Publish | Relay | ReportPeer) -> None:
        """Cast ``msg`` to the NetworkActor without waiting (dropped without one); a full
        mailbox drops it with a log line, as a flooded network would."""
        try:
            otp.cast_nowait(self.network, msg)
        except trio.WouldBlock:
            logger.warning("the network's mailbox is full: a %s is dropped", type(msg).__name__)

    def _gossip(self, topic: str, payload: Any) -> None:
        """Hand ``payload`` to the NetworkActor for gossip."""
        self._tell_network(Publish(topic, payload))

    def _relay(self, topic: str, payload: Any, source: str) -> None:
        """Tell the NetworkActor that gossip from ``source`` is valid: it forwards blocks and
        approvals only then (``node.messages.network.VALIDATED_TOPICS``)."""
        self._tell_network(Relay(topic, payload, source))

    def _report(self, peer: str, offence: Offence, detail: str) -> None:
        self._tell_network(ReportPeer(peer, offence, detail))

    async def _import_if_ready(self) -> BlockRef | None:
        ready = approvals.ready(self._proposals(), len(self.authorities))
        if ready is None:
            await trio.lowlevel.checkpoint()
            return None
        mine = self.index is not None and ready.signature.bitfield >> self.index & 1 == 1 \
            and rules.author_index(ready.message.slot, len(self.authorities)) == self.index
        try:
            # A held block's aggregate is made of signatures each checked already (see
            # node.workflows.approvals): every other rule is checked again on import.
            ref = await self._import(ready, produced=mine, signature_checked=True)
        except rules.BlockError as exc:
            # Approved by enough authorities, yet it does not import (approvers check the
            # consensus rules, the import also executes the payload): drop it, and free our
            # approval for another block on this head.
            logger.warning("block #%d %s with %d approvals does not import: %s", ready.height,
                           ready.hash().hex()[:16], ready.signature.count(), exc)
            self.proposals = approvals.drop(self.proposals, ready.hash())
            return None
        if mine:
            metrics.BLOCKS_PRODUCED.inc()
        return ref

    async def _on_gossip(self, msg: GossipReceived) -> None:
        try:
            match msg.payload:
                case SignedConsensusBlock() as block if msg.topic == CONSENSUS_BLOCK:
                    await self._on_block(block, msg.peer)
                case ApproveBlock(block_hash, approval) if msg.topic == APPROVE_BLOCK:
                    await self._on_approval(block_hash, approval, msg.peer)
                case Vote() as vote if msg.topic == APPROVE_BLOCK:
                    await self._on_vote(vote, msg.peer)
                case AuxPowHeader() as header if msg.topic == QUEUE_POW:
                    await self._on_queued_pow(header, msg.peer)
                case _:
                    await trio.lowlevel.checkpoint()
        except CALL_FAILURES as exc:
            # A sibling went away mid-import: its supervisor is on it; the block comes again
            # (gossiped anew, or by sync).
            logger.warning("gossip from %s not handled: %s", msg.peer, exc)

    async def _on_block(self, block: SignedConsensusBlock, peer: str) -> None:
        state = self.state
        if block.height <= state.head.height or block.message.parent_hash != state.head.hash():
            await trio.lowlevel.checkpoint()
            return  # old, a duplicate, or not on our head (sync catches up on that)
        try:
            rules.validate_block(block, state.head,
                                 self._context(await self._verify_pegins(block.message)),
                                 require_approvals=False)
            await self._verify_pegouts(block.message, state.head.ref())
        except rules.BlockError as exc:
            await trio.lowlevel.checkpoint()
            # Our clock may lag, our bridge may be away: not the peer's fault.
            if exc.rule != "future-slot" and not exc.ours:
                self._report(peer, Offence.INVALID_BLOCK, f"block #{block.height}: {exc}")
            logger.info("block #%d %s from %s refused: %s", block.height,
                        block.hash().hex()[:16], peer, exc)
            return
        self._relay(CONSENSUS_BLOCK, block, peer)
        try:
            self.proposals = approvals.propose(self._proposals(), block, self.authorities,
                                               self._named())
        except rules.BlockError as exc:
            await trio.lowlevel.checkpoint()
            logger.info("block #%d from %s not held: %s", block.height, peer, exc)
            return
        await self._advance()  # a prevote for it in its slot, or the approval of a decision
        await self._import_if_ready()

    async def _on_approval(self, block_hash: bytes, approval: IndividualApproval,
                           peer: str) -> None:
        try:
            offered = approvals.offer(self._proposals(), block_hash, approval,
                                      self.authorities, source=peer)
        except rules.BlockError as exc:
            await trio.lowlevel.checkpoint()
            self._report(peer, Offence.INVALID_BLOCK, f"approval: {exc}")
            return
        self._took_approvals(offered)
        await self._import_if_ready()

    def _took_approvals(self, offered: approvals.Offered) -> None:
        """Keep the proposals ``offered`` leaves: pass on the approvals it checked (each to
        every peer but the one it came from), report the peers of those that do not verify,
        and have what still waits checked in VOTE_CHECK_WAIT (with the votes). An early
        approval (its block not seen yet) waits unchecked and is not passed on."""
        self.proposals = offered.proposals
        for checked in offered.checked:
            self._relay(APPROVE_BLOCK, ApproveBlock(checked.block_hash, checked.approval),
                        checked.source)
        for bad, problem in offered.bad:
            if bad.source:
                self._report(bad.source, Offence.INVALID_BLOCK, f"approval: {problem}")
        if self.proposals.unchecked and not self.vote_check_due:
            otp.send_after(otp.self(), "check-votes", VOTE_CHECK_WAIT)
            self.vote_check_due = True

    # -- prevotes and precommits (node.workflows.prevotes) ------------------------------------

    def _votes(self) -> prevotes.Votes:
        """The votes at the height above the head (dropped when the head moved)."""
        head = self.state.head
        self.votes = prevotes.for_head(self.votes, head.hash(), head.height + 1)
        return self.votes

    def _named(self) -> tuple[bytes, ...]:
        """The blocks our votes name (kept when proposals overflow)."""
        votes = self._votes()
        return tuple(h for h in (votes.lock.locked_hash, votes.decision,
                                 votes.lock.prevoted_hash) if h is not None)

    def _may_build(self, slot: int) -> bool:
        """Whether this authority, author of ``slot``, builds a fresh block: not when it
        prevoted in this slot already (a restart within it: one block per slot) nor when
        locked or a block is decided; then it gossips that block again (if held), and votes."""
        votes = self._votes()
        if votes.lock.prevoted_round >= slot:
            return False
        named = votes.decision or votes.lock.locked_hash
        if named is None:
            return True
        held = self._proposals().get(named)
        if held is not None:
            self._gossip(CONSENSUS_BLOCK, held)
        return False

    def _round_proposal(self, round_: int) -> bytes | None:
        """The block an unlocked authority prevotes in round ``round_``: the block of slot
        ``round_`` held on our head (validated: its author's), else the held block the
        slot's author prevoted in that round (a locked author proposes its locked block
        again: :func:`node.workflows.prevotes.round_proposal`)."""
        blocks = self._proposals().blocks
        fresh = next((b.hash() for b in blocks if b.message.slot == round_), None)
        author = rules.author_index(round_, len(self.authorities))
        return prevotes.round_proposal(self._votes(), round_, author, fresh,
                                       {b.hash() for b in blocks})

    async def _advance(self) -> None:
        """Apply the vote rules to what we hold, our own new votes included (they may
        complete a polka, then a decision), then persist the lock (synced) once if it
        changed, and only then gossip the votes cast; approve a decided block once held. A
        single authority does not vote (its block is imported at once)."""
        if self.index is None or len(self.authorities) == 1 or not self.synced:
            await trio.lowlevel.checkpoint()
            return
        votes = self._votes()
        now_round = rules.slot_at(self.clock(), self.cfg.slot_duration_ms)
        proposal = self._round_proposal(now_round)
        result = prevotes.Added(votes)
        cast: list[Vote] = []
        for _ in range(4):  # our own votes may complete a polka or a decision
            new, intents = prevotes.step(result.votes, len(self.authorities), now_round,
                                         proposal)
            result = attrs.evolve(result, votes=new)
            for intent in intents:
                vote = prevotes.sign_vote(self.key, self.index, self.cfg.chain_id, intent.kind,
                                          new.height, intent.round, intent.block_hash)
                # Our vote may complete a quorum with votes waiting: they are checked now.
                result = result.then(prevotes.add_vote(result.votes, vote, self.authorities,
                                                       self.cfg.chain_id, now_round, own=True))
                cast.append(vote)
            if not intents:
                break
        if result.votes.lock != votes.lock:
            # One synced write records every vote below: none leaves before it.
            try:
                await self._keep_prevoted(votes.lock, result.votes.lock)
                await self._storage(storage_msgs.PutVoteLock(result.votes.lock))
            except CALL_FAILURES as exc:
                logger.warning("no vote at #%d: the vote lock cannot be stored (%s)",
                               votes.height, exc)
                return
            if self.state.head.hash() != votes.head:
                return
        self._took(result)
        for vote in cast:
            self._gossip(APPROVE_BLOCK, vote)
        await self._approve_decided()

    async def _keep_prevoted(self, before: VoteLock, after: VoteLock) -> None:
        """Store (aside, not as the head) the block our new prevote names, once per block:
        a restart of this actor then finds it again (:meth:`_restore_voted`). Its peers'
        gossip would not bring it back: this node's NetworkActor, which lives on, has seen it
        already and forwards each message once."""
        named = after.prevoted_hash
        if named is None or named == before.prevoted_hash:
            await trio.lowlevel.checkpoint()
            return
        block = self._proposals().get(named)
        if block is None:
            await trio.lowlevel.checkpoint()
            return
        # Not fsynced: losing it to a power cut costs only the re-proposal after a restart
        # (:meth:`_restore_voted` skips a block it cannot find); the vote lock, written
        # next, is synced.
        await self._storage(storage_msgs.PutBlock(block, head=False, durable=False,
                                                  fees=None))

    async def _restore_voted(self, lock: VoteLock | None) -> None:
        """After a restart: hold again the blocks the stored vote lock names (locked on,
        last prevoted), kept aside by :meth:`_keep_prevoted`, so that this authority can
        prevote them again (a locked peer's re-proposal names them) and approve them."""
        if lock is None or lock.height != self.state.head.height + 1:
            await trio.lowlevel.checkpoint()
            return
        for block_hash in dict.fromkeys((lock.locked_hash, lock.prevoted_hash)):
            if block_hash is None or self.proposals.get(block_hash) is not None:
                continue
            block = await self._storage(storage_msgs.GetBlock(block_hash), INIT_WAIT)
            if block is None or block.message.parent_hash != self.state.head.hash():
                continue
            try:
                self.proposals = approvals.propose(self.proposals, block, self.authorities,
                                                   self._named())
            except rules.BlockError as exc:
                logger.info("voted block %s not held again: %s", block_hash.hex()[:16], exc)
                continue
            logger.info("voted block #%d %s held again after the restart", block.height,
                        block_hash.hex()[:16])

    async def _approve_decided(self) -> None:
        """Approve the decided block (once, if held: it comes again by gossip otherwise)."""
        decision = self._votes().decision
        proposals = self._proposals()
        if decision is None or self.index is None or proposals.approved_hash == decision:
            await trio.lowlevel.checkpoint()
            return
        block = proposals.get(decision)
        if block is None:
            await trio.lowlevel.checkpoint()
            return
        if block.signature.bitfield >> self.index & 1 == 0:
            approval = rules.approve(decision, self.key, self.index)
            proposals = approvals.add(proposals, decision, approval, self.authorities,
                                      own=True)
            self._gossip(APPROVE_BLOCK, ApproveBlock(decision, approval))
        self.proposals = approvals.mark_approved(proposals, decision)
        # Ours may complete a quorum with approvals waiting: they are checked now.
        self._took_approvals(approvals.check(self.proposals, self.authorities,
                                             block_hash=decision, force=False))
        await self._import_if_ready()

    async def _on_vote(self, vote: Vote, peer: str) -> None:
        votes = self._votes()
        if vote.height != votes.height or len(self.authorities) == 1:
            await trio.lowlevel.checkpoint()
            return  # another height (we are behind or ahead: sync deals with it)
        now_round = rules.slot_at(self.clock(), self.cfg.slot_duration_ms)
        try:
            added = prevotes.add_vote(votes, vote, self.authorities, self.cfg.chain_id,
                                      now_round, source=peer)
        except prevotes.VoteError as exc:
            await trio.lowlevel.checkpoint()
            if exc.what == "authority":
                self._report(peer, Offence.INVALID_BLOCK, f"vote: {exc}")
            return
        self._took(added, peer)
        if self.votes.unverified and not self.vote_check_due:
            otp.send_after(otp.self(), "check-votes", VOTE_CHECK_WAIT)
            self.vote_check_due = True
        if added.votes is not votes:
            # Even for a vote that only waits, as before votes were checked together: the
            # rules also follow the clock (a new round), and a slot whose tick was cut short
            # by a failing sibling leaves them to the next event.
            await self._advance()
            return
        await trio.lowlevel.checkpoint()

    async def _check_votes(self) -> None:
        """Check the votes and approvals still waiting (their blocks short of a quorum
        here), pass on the good ones and apply the rules: VOTE_CHECK_WAIT after a vote or an
        approval began to wait."""
        if self._proposals().unchecked:
            self._took_approvals(approvals.check(self.proposals, self.authorities))
            await self._import_if_ready()
        votes = self._votes()
        if not votes.unverified:
            await trio.lowlevel.checkpoint()
            return
        self._took(prevotes.verify_pending(votes, self.authorities, self.cfg.chain_id))
        await self._advance()

    def _took(self, added: prevotes.Added, peer: str = "") -> None:
        """Keep the votes ``added`` leaves: pass on the votes it checked (each to every peer
        but the one it came from), report the peers of votes that do not verify, log an
        equivocation (in a vote from ``peer``)."""
        self.votes = added.votes
        for checked in added.checked:
            self._relay(APPROVE_BLOCK, checked.vote, checked.source)
        for bad, problem in added.bad:
            self._report(bad.source, Offence.INVALID_BLOCK, f"vote: {problem}")
        if added.equivocation is not None:
            logger.warning("equivocation dropped: %s (from %s)", added.equivocation,
                           peer or "us")

    async def _vote_slot(self) -> None:
        """Each slot: check the votes and approvals still waiting (their blocks short of a
        quorum) and pass on the good ones, gossip again the votes held at our height
        (bounded), and vote in the new round (a locked authority prevotes its locked
        block)."""
        if self.index is None or len(self.authorities) == 1:
            await trio.lowlevel.checkpoint()
            return
        if self._proposals().unchecked:
            self._took_approvals(approvals.check(self.proposals, self.authorities))
        votes = self._votes()
        if votes.unverified:
            self._took(prevotes.verify_pending(votes, self.authorities, self.cfg.chain_id))
            votes = self.votes
        for vote in prevotes.to_regossip(votes, 4 * len(self.authorities)):
            self._gossip(APPROVE_BLOCK, vote)
        named = votes.decision or votes.lock.locked_hash
        held = None if named is None else self._proposals().get(named)
        if held is not None:
            self._gossip(CONSENSUS_BLOCK, held)
        await self._advance()

    async def _on_queued_pow(self, header: AuxPowHeader, peer: str) -> None:
        """AuxPoW a miner submitted to another node: the next producer (maybe us) puts it
        in its block."""
        if self.queued == header:
            await trio.lowlevel.checkpoint()
            return
        problem = rules.pow_problem(self.state, header, self.bits)
        if problem is not None:
            await trio.lowlevel.checkpoint()
            logger.info("queued AuxPoW from %s not used: %s", peer, problem)
            return
        self.queued = header
        await self._persist_queued(header)
        self._tell_federation_pow()
