"""SyncActor: catches the node up with its peers — ranges from several peers at once,
signatures verified in batches off the actor's path, blocks imported in order.

Thin by design: every decision (which range to ask which peer for, what a failure costs,
when a peer may be asked again, what to import next, whether the node is synced) is a rule of
:mod:`node.workflows.sync`, over the frozen :class:`~node.workflows.sync.SyncState` this actor
holds. The actor follows events, runs the work as owned tasks, and feeds the results back to
the rules. Its interface (what it publishes and answers) is :mod:`node.messages.sync`.

It follows

* peers, on the network's bus topic ``network.peers``: a :class:`PeerConnected` brings the
  head of its hello, a :class:`PeerDisconnected` or :class:`PeerBanned` hands the peer's
  ranges to the others; at start (and after a NetworkActor restart) the connected peers are
  asked of the NetworkActor, so a restarted SyncActor carries on where the network is;
* gossiped blocks (``network.gossip.consensus_block``): the peer that sent one has at least
  that height;
* the chain's own head, from its ``BlockImported`` events (``chain.blocks``): whoever
  imported the blocks (this actor, or the chain from gossip), the heights at or below the
  head are no longer needed.

The pipeline, each stage running while the others do:

1. **download** — :func:`~node.workflows.sync.assign` hands out requests; each goes to the
   NetworkActor (``RequestBlocks``) in a task of its own, its answer coming back to the
   mailbox. A request still out at its deadline (a stalled peer) is failed by
   :func:`~node.workflows.sync.expire` on a timer (twice a second) and its task cancelled.
2. **check and verify** — an answer is checked with :func:`~node.workflows.sync.check_range`
   (heights asked for, each the child of the one before, the first a child of the block
   before the range when that one is known) and its aggregate signatures verified as one
   random-coefficient batch by :func:`~node.workflows.block_signatures.verify_blocks` in the
   verifier's worker — a process of its own (:class:`~node.crypto.verifier.ProcessVerifier`,
   ``sync.verify_in_process``, the default: a core the actors do not share) or a thread —
   in a task: the actor keeps answering meanwhile. The request stays in flight until its
   blocks are verified; blocks up to the first bad one are kept, and a peer that sent a bad
   signature or blocks that do not chain is reported to the network
   (``ReportPeer(INVALID_BLOCK)``) and pays a failure, its range going to another peer.
3. **import** — verified blocks are kept by height; when the next range starts right after
   the head, its blocks go to the ChainActor in calls of ``sync.import_batch`` blocks
   (``ImportBlocks(blocks, signatures_verified=True)``: every other rule is checked there),
   one call at a time, in a task. A block the chain refuses sends what is left of its
   range back to the queue and costs the peer that sent it
   (:func:`~node.workflows.sync.rejected`); a chain that is restarting is waited for.

**Snap sync** (``sync.mode = "snap"``, :func:`~node.workflows.sync.snap_pivot`): a node at
genesis with peers far enough ahead picks a pivot ``sync.pivot_depth`` below their head. The
blocks up to it are imported with ``execute=False`` (every consensus rule but their
withdrawals; not executed), and never in one call with the blocks after it
(:func:`~node.workflows.sync.import_span`). Meanwhile a task fetches the pivot block from a
peer, verifies its approvals and downloads the state under its state root
(:mod:`node.workflows.state_sync`: the engine's own store first, then peers by
``RequestStateNodes``, every value checked, stored with ``PutStateNodes``). With the head at
the pivot and that state whole, the ChainActor is asked to make the pivot the engine's head
(``PivotAtHead``); the blocks after it are then imported as in a full sync. If the imported
block at the pivot is not the one a peer sent, the state of the imported one is downloaded.
Before any history is stored the engine records the snap sync as under way (``RecordSnap``;
taking the pivot ends it): a restart mid-way, of this actor or of the node, finds the record
and resumes to the same pivot, the engine executing none of the stored history. Giving snap
up removes the record (the engine then executes the stored history when the chain needs it).

Progress: :class:`~node.workflows.sync.SyncProgress` on the bus topic ``sync.progress`` at
every change of ``synced``, and at most once a second otherwise while syncing (the
ChainActor produces only while synced); a log line every few seconds while syncing
(``sync: #current of #target, N blocks/s, P peers``); ``alys_sync_*`` gauges in
``/metrics``; ``GetSyncProgress`` for the node's RPC (``getsyncstatus``).

Faults: a crash of this actor loses only downloaded blocks not yet imported; its supervisor
restarts it (``node/supervision.toml``, network supervisor) and it starts again from the
chain's head and the network's connected peers. A NetworkActor that dies takes its peers
with it (its requests fail as disconnections) and is looked for again on the timer.
"""

from __future__ import annotations

import collections
import logging
import os
import time
from pathlib import Path
from typing import Any, Final

import attrs
import trio

import otp

from .. import metrics
from ..config import BridgeConfig, ChainConfig, EngineConfig, NetworkConfig, structure_section
from ..crypto import bls
from ..crypto.verifier import ProcessVerifier, SignatureVerifier
from ..errors import CALL_FAILURES, KeyFileError
from ..messages.chain import (
    BLOCKS_TOPIC,
    BlockImported,
    GetStatus,
    ImportBlocks,
    ImportedBlocks,
    PivotAtHead,
)
from ..messages.engine import GetSnap, GetStateNodes, PutStateNodes, RecordSnap
from ..messages.network import (
    PEERS_TOPIC,
    GetPeers,
    GossipReceived,
    Offence,
    PeerBanned,
    PeerConnected,
    PeerDisconnected,
    ReportPeer,
    RequestBlocks,
    RequestFailed,
    RequestStateNodes,
    gossip_topic,
)
from ..messages.sync import SYNC_TOPIC, GetSyncProgress
from ..network.gossip import CONSENSUS_BLOCK
from ..types.chain import BlockRef, SignedConsensusBlock
from ..types.execution import EngineError
from ..workflows import state_sync
from ..workflows import sync as rules
from ..workflows.block_signatures import verify_blocks
from ..workflows.chain import BlockError
from . import sibling

logger = logging.getLogger("alys.sync")

#: Seconds between timer ticks (stalled requests, retry delays, progress, the network).
TICK: Final = 0.5
#: The most often progress is published while syncing (seconds).
PUBLISH_INTERVAL: Final = 1.0
#: Seconds between progress lines in the log while syncing.
LOG_INTERVAL: Final = 5.0
#: Seconds of imports the blocks/s figure is measured over.
RATE_WINDOW: Final = 5.0
#: How long init waits for a restarting ChainActor.
INIT_WAIT: Final = 30.0
#: How much longer than ``sync.request_timeout`` a call to the NetworkActor may take (it
#: answers a silent peer with ``RequestFailed("timeout")`` itself).
CALL_MARGIN: Final = 5.0
#: How long one import call may take, per block (the chain executes every payload).
IMPORT_SECONDS_PER_BLOCK: Final = 1.0
#: Seconds before an import the chain could not take (restarting) is tried again.
IMPORT_RETRY: Final = 1.0
#: Import calls remembered (:attr:`SyncActor.import_calls`).
IMPORT_CALLS_KEPT: Final = 4096
#: Snap: seconds after the first peer ahead before the pivot is chosen, unless a second peer
#: is known sooner: one peer behind, or one lying high, does not decide alone.
SNAP_SETTLE: Final = 5.0
#: Snap: seconds the verified pivot block may take to come before the node syncs in full.
PIVOT_BLOCK_WAIT: Final = 60.0
#: Snap: refusals of the pivot by the engine before the node syncs in full.
PIVOT_TRIES: Final = 10

_FAILURES: Final = {
    "timeout": rules.Failure.TIMEOUT,
    "disconnected": rules.Failure.DISCONNECTED,
    "no_peer": rules.Failure.DISCONNECTED,
    "refused": rules.Failure.ERROR,
    # The network checked the answer already and penalised the peer for it.
    "invalid": rules.Failure.INVALID,
}


# -- what the actor's tasks send it -----------------------------------------------------------


@attrs.frozen
class _Downloaded:
    serial: int
    answer: list[SignedConsensusBlock] | RequestFailed | Exception


@attrs.frozen
class _Verified:
    serial: int
    blocks: tuple[SignedConsensusBlock, ...]
    bad: tuple[int, ...]
    #: What :func:`rules.check_range` found wrong after these blocks, if anything.
    problem: str | None


@attrs.frozen
class _Imported:
    answer: ImportedBlocks | Exception
    blocks: tuple[SignedConsensusBlock, ...] = ()


@attrs.frozen
class _PivotBlock:
    """Snap: the block at the pivot height, from a peer, its signatures verified."""

    block: SignedConsensusBlock


@attrs.frozen
class _StateWhole:
    """Snap: the whole state under ``root`` is in the engine's store."""

    root: bytes
    download: state_sync.StateDownload


@attrs.frozen
class _StateFailed:
    """Snap: the state under ``root`` cannot be had (a malformed node under a signed root)."""

    root: bytes
    reason: str


@attrs.frozen
class _Pivoted:
    answer: BlockRef | Exception


class _StateRefused(Exception):
    """The engine would not store downloaded state values."""


@attrs.define
class _Snap:
    """A snap sync under way (see :func:`rules.snap_pivot`)."""

    #: The pivot height: blocks up to it are stored without executing them.
    pivot: int
    #: The block at the pivot from a peer (signatures verified), once it is here.
    block: SignedConsensusBlock | None = None
    #: The last block imported as history (the pivot, once the head is there).
    last: SignedConsensusBlock | None = None
    #: The state root being downloaded, and the one found whole.
    root: bytes | None = None
    whole: bytes | None = None
    #: The download's task, and whether the engine is being asked to take the pivot.
    scope: trio.CancelScope = attrs.field(factory=trio.CancelScope)
    pivoting: bool = False
    started: float = 0.0
    #: The engine's refusals of the pivot so far.
    refusals: int = 0


def authorities_from(chain: ChainConfig, data_dir: str) -> tuple[bls.PublicKey, ...]:
    """The authorities whose signatures blocks carry: ``chain.authorities``, or, when none
    are configured (a single-authority dev chain), this node's own key, as the ChainActor
    takes it (``<data_dir>/keys/authority.key``, written by the ChainActor, which starts
    first)."""
    if chain.authorities:
        return tuple(bls.PublicKey.from_bytes(bytes.fromhex(a.removeprefix("0x")))
                     for a in chain.authorities)
    path = Path(data_dir) / "keys" / "authority.key"
    try:
        text = path.read_text(encoding="utf-8").strip()
        return (bls.SecretKey.from_bytes(bytes.fromhex(text.removeprefix("0x"))).public_key(),)
    except (OSError, ValueError, bls.BLSError) as exc:
        raise KeyFileError(f"no chain.authorities configured and no usable authority key in "
                           f"{path}: {exc}") from exc


class SyncActor(otp.GenServer):
    owns_tasks = True

    async def init(
        self,
        config: Any = None,
        network: Any = None,
        chain: Any = None,
        data_dir: str = ".alys",
        network_actor: str = "network",
        chain_actor: str = "chain",
        bus_prefix: str = "",
        verifier: SignatureVerifier | None = None,
        engine: Any = None,
        bridge: Any = None,
        engine_actor: str = "engine",
    ) -> Any:
        """``config`` is the ``sync`` section, ``network`` the ``network`` section (sync runs
        only when it is enabled: otherwise ``otp.Ignore``), ``chain`` the ``chain`` section
        (its authorities verify signatures). ``bus_prefix`` goes before every bus topic, as
        the NetworkActor's does (several nodes in one runtime). ``verifier`` replaces the
        actor's own :class:`SignatureVerifier` (tests)."""
        network_cfg: NetworkConfig = structure_section(network or {}, NetworkConfig, "network")
        if not network_cfg.enabled:
            logger.info("sync disabled with the network (network.enabled = false)")
            return otp.Ignore
        self.cfg: rules.SyncConfig = structure_section(config or {}, rules.SyncConfig, "sync")
        chain_cfg: ChainConfig = structure_section(chain or {}, ChainConfig, "chain")
        self.authorities = authorities_from(chain_cfg, data_dir)
        self.network, self.chain, self.prefix = network_actor, chain_actor, bus_prefix
        self.engine = engine_actor
        #: None until decided; then the snap sync under way, or False (full sync).
        self.snap: _Snap | bool | None = None
        #: When the pivot is chosen (snap: :data:`SNAP_SETTLE` after the first peer ahead).
        self.snap_settle: float | None = None
        if self.cfg.mode == "snap":
            engine_cfg: EngineConfig = structure_section(engine or {}, EngineConfig, "engine")
            bridge_cfg: BridgeConfig = structure_section(bridge or {}, BridgeConfig, "bridge")
            if engine_cfg.kind != "embedded":
                logger.warning("sync.mode = \"snap\" needs the embedded engine (an external "
                               "one syncs its own state): syncing in full")
                self.snap = False
            elif bridge_cfg.enabled:
                logger.warning("sync.mode = \"snap\" is not possible with the bridge (the "
                               "peg reads the receipts of every block): syncing in full")
                self.snap = False
        else:
            self.snap = False
        if verifier is None:
            workers = self.cfg.verify_workers or min(os.cpu_count() or 1,
                                                     rules.DEFAULT_WORKERS_MAX)
            verifier = (ProcessVerifier(workers=workers) if self.cfg.verify_in_process
                        else SignatureVerifier())
        self.verifier = verifier
        otp.start_task_soon(self.verifier.serve)
        for topic in (PEERS_TOPIC, gossip_topic(CONSENSUS_BLOCK), BLOCKS_TOPIC):
            otp.bus.subscribe(self.prefix + topic)
        status = await sibling.call(self.chain, GetStatus(), wait=INIT_WAIT)
        assert status.head is not None
        self.head_hash: bytes = status.head.hash
        self.state = rules.start(status.head.height)
        await self._resume_snap(status.head.height)
        #: Downloaded, checked and verified blocks waiting for import, by height, and the peer
        #: each came from.
        self.blocks: dict[int, SignedConsensusBlock] = {}
        self.source: dict[int, str] = {}
        #: Blocks kept from each peer (verified), since start.
        self.served: collections.Counter[str] = collections.Counter()
        #: Real seconds spent waiting for answers (summed over concurrent requests), for
        #: verification batches (in the worker) and with an import call out (for figures).
        self.seconds: dict[str, float] = {"download": 0.0, "verify": 0.0, "import": 0.0}
        #: The latest import calls: (first height, blocks, real seconds), for figures (how
        #: the cost per block grows with the height).
        self.import_calls: collections.deque[tuple[int, int, float]] = collections.deque(
            maxlen=IMPORT_CALLS_KEPT)
        #: Requests out (downloading or verifying), by serial, with the scope of their task.
        self.tasks: dict[int, tuple[rules.Request, trio.CancelScope]] = {}
        self.serial = 0
        self.importing = False
        #: The last height of the import call out.
        self.importing_to = 0
        #: The latest block of the call out the chain announced (BlockImported).
        self.imported_ref: BlockRef | None = None
        self.import_after = 0.0
        self.network_ref: int | None = None
        now = trio.current_time()
        #: (time, head) at each move of the head, over the last RATE_WINDOW seconds.
        self.rate: collections.deque[tuple[float, int]] = collections.deque(
            [(now, self.state.head)])
        self.published: rules.SyncProgress | None = None
        self.published_at = -PUBLISH_INTERVAL
        self.logged_at = now
        await self._watch_network()
        otp.send_after(otp.self(), "tick", TICK)
        logger.info("sync: from #%d, %d peer(s)", self.state.head, self.state.connected)
        self._step()
        return None

    # -- the interface ------------------------------------------------------------------------

    async def handle_call(self, request: Any, from_: otp.From) -> Any:
        await trio.lowlevel.checkpoint()
        if isinstance(request, GetSyncProgress):
            return self._progress()
        raise otp.UnexpectedMessage(self, "call", request)

    async def handle_info(self, msg: Any) -> None:
        now = trio.current_time()
        match msg:
            case "tick":
                otp.send_after(otp.self(), "tick", TICK)
                self.state, late = rules.expire(self.state, now, self.cfg)
                for request in late:
                    logger.info("sync: %s from %s timed out", request.range, request.peer)
                    metrics.SYNC_FAILURES.labels(rules.Failure.TIMEOUT.value).inc()
                if self.network_ref is None and otp.whereis(self.network) is not None:
                    await self._watch_network()
            case PeerConnected(peer=peer, status=status):
                self.state = rules.peer_status(self.state, peer, status.head.height)
            case PeerDisconnected(peer=peer) | PeerBanned(peer=peer):
                self.state = rules.peer_gone(self.state, peer, now, self.cfg)
            case GossipReceived(payload=SignedConsensusBlock() as block, peer=peer):
                known = self.state.peer(peer)
                if known is None or block.height > known.head:
                    self.state = rules.peer_status(self.state, peer, block.height)
            case BlockImported(ref=ref):
                if self.importing and ref.height <= self.importing_to:
                    # One of the blocks of this actor's own import call: its answer moves
                    # the head once for them all (not a step per block); kept in case the
                    # call fails after the chain stored some of them.
                    self.imported_ref = ref
                    await trio.lowlevel.checkpoint()
                    return
                self._head_at(ref)
            case otp.Down(ref=ref) if ref == self.network_ref:
                logger.warning("sync: the network actor exited; its peers are gone")
                self.network_ref = None
                for known in self.state.peers:
                    self.state = rules.peer_gone(self.state, known.peer, now, self.cfg)
            case _Downloaded(serial, answer):
                self._downloaded(serial, answer, now)
            case _Verified():
                self._verified(msg, now)
            case _Imported(answer, blocks):
                self._imported(answer, now, blocks)
            case _PivotBlock() | _StateWhole() | _StateFailed() | _Pivoted():
                self._snap_event(msg, now)
            case _:
                await super().handle_info(msg)
                return
        await trio.lowlevel.checkpoint()
        self._step()

    async def terminate(self, reason: Any) -> None:
        await trio.lowlevel.checkpoint()
        metrics.SYNC_IN_FLIGHT.set(0)
        metrics.SYNC_DOWNLOADED.set(0)

    # -- the network ---------------------------------------------------------------------------

    async def _watch_network(self) -> None:
        """Monitor the NetworkActor and learn the peers it has (at start, and when it is back
        after a restart: its PeerConnected events were published before we looked)."""
        pid = otp.whereis(self.network)
        if pid is None:
            return
        self.network_ref = otp.monitor(pid)
        try:
            peers = await otp.call(pid, GetPeers(), timeout=5.0)
        except CALL_FAILURES as exc:
            logger.warning("sync: the network actor did not list its peers: %s", exc)
            return
        for info in peers:
            self.state = rules.peer_status(self.state, info.peer, info.status.head.height)

    # -- the pipeline --------------------------------------------------------------------------

    def _step(self) -> None:
        """After every event: forget requests the rules failed, send what can be asked now,
        import what is next, publish progress."""
        for serial, (request, scope) in list(self.tasks.items()):
            if request not in self.state.flight:
                scope.cancel()
                del self.tasks[serial]
        now = trio.current_time()
        self.state, requests = rules.assign(self.state, now, self.cfg)
        for request in requests:
            self.serial += 1
            scope = trio.CancelScope()
            self.tasks[self.serial] = (request, scope)
            otp.start_task_soon(self._download, self.serial, request, scope)
        if self.snap is None:
            self._decide_snap(now)
        self._pivot_if_ready(now)
        self._import_next(now)
        self._report(now)

    async def _download(self, serial: int, request: rules.Request,
                        scope: trio.CancelScope) -> None:
        with scope:
            answer: list[SignedConsensusBlock] | RequestFailed | Exception
            started = time.perf_counter()
            try:
                answer = await otp.call(self.network, RequestBlocks(
                    request.peer, request.range.start, request.range.count),
                    timeout=self.cfg.request_timeout + CALL_MARGIN)
            except CALL_FAILURES as exc:
                answer = exc
            self.seconds["download"] += time.perf_counter() - started
            await otp.send(otp.self(), _Downloaded(serial, answer))

    def _hash_at(self, height: int) -> bytes | None:
        if height == self.state.head:
            return self.head_hash
        block = self.blocks.get(height)
        return None if block is None else block.hash()

    def _downloaded(self, serial: int, answer: Any, now: float) -> None:
        task = self.tasks.get(serial)
        if task is None:
            return  # failed meanwhile (timed out, its peer left)
        request = task[0]
        if not isinstance(answer, list):
            failure = (_FAILURES.get(answer.kind, rules.Failure.ERROR)
                       if isinstance(answer, RequestFailed) else rules.Failure.ERROR)
            self._fail(serial, request, failure, now, str(answer))
            return
        asked = request.range
        count, problem = rules.check_range(asked, answer, self._hash_at(asked.start - 1))
        if count == 0 and problem is not None:
            # A first block that does not chain to ours may be a fork of ours, not a lie:
            # it costs a retry, and is reported only when the answer is wrong in itself.
            first = answer[0] if answer else None
            fork = (len(answer) <= asked.count and first is not None
                    and first.height == asked.start)
            self._fail(serial, request, rules.Failure.ERROR if fork else rules.Failure.INVALID,
                       now, problem, report=not fork)
            return
        if count == 0:
            self.tasks.pop(serial)
            self.state = rules.range_done(self.state, request, 0, now, self.cfg)
            metrics.SYNC_FAILURES.labels(rules.Failure.SHORT.value).inc()
            return
        # Verified in a task of its own; the request stays in flight until then.
        scope = trio.CancelScope()
        self.tasks[serial] = (request, scope)
        otp.start_task_soon(self._verify, serial, tuple(answer[:count]), problem, scope)

    async def _verify(self, serial: int, blocks: tuple[SignedConsensusBlock, ...],
                      problem: str | None, scope: trio.CancelScope) -> None:
        with scope:
            started = time.perf_counter()
            bad = await verify_blocks(blocks, self.authorities, self.verifier)
            self.seconds["verify"] += time.perf_counter() - started
            await otp.send(otp.self(), _Verified(serial, blocks, tuple(bad), problem))

    def _verified(self, msg: _Verified, now: float) -> None:
        task = self.tasks.pop(msg.serial, None)
        if task is None:
            return
        request = task[0]
        good = msg.bad[0] if msg.bad else len(msg.blocks)
        self.state = rules.range_done(self.state, request, good, now, self.cfg)
        for block in msg.blocks[:good]:
            if block.height > self.state.head:
                self.blocks[block.height] = block
                self.source[block.height] = request.peer
                self.served[request.peer] += 1
        if msg.bad:
            detail = f"block #{msg.blocks[good].height}: its approvals do not verify"
        else:
            detail = msg.problem or ""
        if detail:
            logger.warning("sync: %s from %s: %s", request.range, request.peer, detail)
            metrics.SYNC_FAILURES.labels(rules.Failure.INVALID.value).inc()
            self._report_peer(request.peer, detail)
        elif good < request.range.count:
            metrics.SYNC_FAILURES.labels(rules.Failure.SHORT.value).inc()

    def _fail(self, serial: int, request: rules.Request, failure: rules.Failure, now: float,
              detail: str, *, report: bool = False) -> None:
        self.tasks.pop(serial, None)
        self.state = rules.range_failed(self.state, request, failure, now, self.cfg)
        metrics.SYNC_FAILURES.labels(failure.value).inc()
        logger.info("sync: %s from %s failed (%s): %s", request.range, request.peer,
                    failure.value, detail)
        if report:
            self._report_peer(request.peer, detail)

    def _report_peer(self, peer: str, detail: str) -> None:
        """Tell the network ``peer`` sent invalid blocks (it scores and bans)."""
        try:
            otp.cast_nowait(self.network, ReportPeer(peer, Offence.INVALID_BLOCK, detail))
        except (otp.OtpError, trio.WouldBlock) as exc:
            logger.warning("sync: peer %s not reported (%s): %s", peer, exc, detail)

    def _import_next(self, now: float) -> None:
        if self.importing or now < self.import_after:
            return
        ready = rules.next_to_import(self.state)
        if ready is None:
            return
        if self.snap is None:
            return  # snap: the pivot is not chosen yet
        snap = self.snap if isinstance(self.snap, _Snap) else None
        if snap is not None and snap.block is None:
            return  # history waits for the pivot block, verified (a lie stops nothing)
        planned = rules.import_span(ready, self.cfg.import_batch,
                                    None if snap is None else snap.pivot)
        if planned is None:
            return  # after the pivot: the engine takes the pivot's state first
        span, execute = planned
        blocks = tuple(self.blocks[h] for h in range(span.start, span.end + 1))
        self.importing, self.importing_to, self.imported_ref = True, span.end, None
        otp.start_task_soon(self._import, blocks, execute)

    async def _import(self, blocks: tuple[SignedConsensusBlock, ...], execute: bool) -> None:
        answer: ImportedBlocks | Exception
        started = time.perf_counter()
        try:
            answer = await otp.call(self.chain, ImportBlocks(blocks, signatures_verified=True,
                                                             execute=execute),
                                    timeout=60.0 + IMPORT_SECONDS_PER_BLOCK * len(blocks))
        except CALL_FAILURES as exc:
            answer = exc
        elapsed = time.perf_counter() - started
        self.seconds["import"] += elapsed
        if isinstance(answer, ImportedBlocks) and answer.count:
            self.import_calls.append((blocks[0].height, answer.count, elapsed))
        await otp.send(otp.self(), _Imported(answer, blocks))

    def _imported(self, answer: ImportedBlocks | Exception, now: float,
                  blocks: tuple[SignedConsensusBlock, ...] = ()) -> None:
        self.importing = False
        error = answer.error if isinstance(answer, ImportedBlocks) else answer
        if isinstance(answer, ImportedBlocks):
            if answer.count and isinstance(self.snap, _Snap):
                self.snap.last = blocks[answer.count - 1]
            self._head_at(answer.head)
        elif self.imported_ref is not None:
            self._head_at(self.imported_ref)  # the call failed after some were stored
        if error is None:
            return
        if not isinstance(error, BlockError):
            # The chain (or its storage, its engine) is away: its supervisor is on it.
            logger.warning("sync: import waits for the chain: %s", error)
            self.import_after = now + IMPORT_RETRY
            return
        if error.ours:
            # Our bridge or federation cannot check the blocks' peg operations now: the
            # blocks are not at fault and stay; the import is tried again later.
            logger.warning("sync: import waits: %s", error)
            self.import_after = now + IMPORT_RETRY
            return
        height = self.state.head + 1
        peer = self.source.get(height)
        ready = rules.next_to_import(self.state)
        if ready is None:
            return
        logger.warning("sync: block #%d from %s refused by the chain: %s", height, peer, error)
        metrics.SYNC_FAILURES.labels(rules.Failure.INVALID.value).inc()
        self.state = rules.rejected(self.state, ready, peer, now, self.cfg)
        for h in range(ready.start, ready.end + 1):
            self.blocks.pop(h, None)
            self.source.pop(h, None)
        if peer is not None and error.rule != "fork":
            self._report_peer(peer, str(error))

    def _head_at(self, ref: BlockRef) -> None:
        if ref.height < self.state.head:
            return
        self.head_hash = ref.hash
        if ref.height == self.state.head:
            return
        old = self.state.head
        self.state = rules.head_moved(self.state, ref.height)
        # Every kept block is above the old head: walk the heights passed, or the kept
        # blocks when fewer (not every kept block at every import: that was quadratic).
        passed = (range(old + 1, ref.height + 1) if ref.height - old <= len(self.blocks)
                  else [h for h in self.blocks if h <= ref.height])
        for height in passed:
            self.blocks.pop(height, None)
            self.source.pop(height, None)
        self.rate.append((trio.current_time(), ref.height))

    # -- snap sync -----------------------------------------------------------------------------

    def _decide_snap(self, now: float) -> None:
        """Once peers are known: snap (a pivot, and its state downloaded meanwhile) or full
        (:func:`rules.snap_pivot`)."""
        if self.state.target <= self.state.head:
            return  # no peer ahead yet
        if self.snap_settle is None:
            self.snap_settle = now + SNAP_SETTLE
        if now < self.snap_settle and self.state.connected < 2:
            return  # more peers' heads first (imports wait meanwhile)
        pivot = rules.snap_pivot(self.state.head, self.state.target, self.cfg)
        if pivot is None:
            self.snap = False
            return
        snap = self.snap = _Snap(pivot, started=now)
        logger.info("sync: snap sync to #%d: blocks #1..#%d stored without executing them, "
                    "the EVM state at #%d downloaded from the peers", self.state.target,
                    pivot, pivot)
        otp.start_task_soon(self._fetch_state, snap, None)

    def _snap_peers(self, height: int) -> list[str]:
        """The peers that have ``height``, the least failing first; those whose breaker
        opened (a claim they did not serve) only when there are no others."""
        usable = [p for p in self.state.peers if p.connected and p.head >= height]
        trusted = [p for p in usable if p.trusted_head]  # no open breaker: not a known liar
        return [p.peer for p in sorted(trusted or usable, key=lambda p: p.breaker.failures)]

    async def _fetch_state(self, snap: _Snap, root: bytes | None) -> None:
        """The pivot block (when ``root`` is not given: its state root is the one to
        download), then the state under the root, into the engine's store."""
        with snap.scope:
            if root is None:
                block = None
                with trio.move_on_after(PIVOT_BLOCK_WAIT):
                    block = await self._pivot_block(snap.pivot)
                if block is None:
                    await otp.send(otp.self(), _StateFailed(
                        b"", f"no peer sent block #{snap.pivot} with valid approvals in "
                        f"{PIVOT_BLOCK_WAIT:.0f} s"))
                    return
                problem = await self._record_snap(snap.pivot)
                if problem is not None:
                    await otp.send(otp.self(), _StateFailed(b"", problem))
                    return
                await otp.send(otp.self(), _PivotBlock(block))
                root = block.message.execution_payload.state_root
            try:
                download = await self._download_state(snap, root)
            except (state_sync.BadNode, _StateRefused) as exc:
                await otp.send(otp.self(), _StateFailed(root, str(exc)))
                return
            await otp.send(otp.self(), _StateWhole(root, download))

    async def _pivot_block(self, height: int) -> SignedConsensusBlock:
        """The block at ``height`` from a peer, its approvals verified (a peer that sends a
        bad one is reported)."""
        while True:
            for peer in self._snap_peers(height):
                try:
                    answer = await otp.call(self.network, RequestBlocks(peer, height, 1),
                                            timeout=self.cfg.request_timeout + CALL_MARGIN)
                except CALL_FAILURES:
                    continue
                if not isinstance(answer, list) or len(answer) != 1:
                    continue
                if answer[0].height != height:
                    self._report_peer(peer, f"asked for block #{height}, sent "
                                      f"#{answer[0].height}")
                    continue
                if await verify_blocks(answer, self.authorities, self.verifier):
                    self._report_peer(peer, f"block #{height}: its approvals do not verify")
                    continue
                return answer[0]
            await trio.sleep(TICK)

    async def _download_state(self, snap: _Snap, root: bytes) -> state_sync.StateDownload:
        """The state under ``root``: what the engine's store has already (a download cut
        short before), the rest from peers, every value checked against its hash
        (:mod:`node.workflows.state_sync`) and stored in the engine."""
        snap.root = root
        download = state_sync.start(root)
        turn = 0
        while not download.done:
            download, wants = state_sync.next_batch(download, self.cfg.state_batch)
            hashes = tuple(w.hash for w in wants)
            try:
                local = await otp.call(self.engine, GetStateNodes(hashes), timeout=INIT_WAIT)
            except CALL_FAILURES as exc:  # the engine is restarting: wait for it
                logger.info("sync: the engine did not answer (%s); the state download waits",
                            exc)
                download = state_sync.failed(download, wants)
                await trio.sleep(IMPORT_RETRY)
                continue
            values = list(local) if isinstance(local, tuple) else []
            values += [b""] * (len(hashes) - len(values))
            lacking = [i for i, value in enumerate(values) if not value]
            if lacking:
                peers = self._snap_peers(snap.pivot)
                if not peers:
                    download = state_sync.failed(download, wants)
                    await trio.sleep(TICK)
                    continue
                peer = peers[turn % len(peers)]
                turn += 1
                try:
                    got = await otp.call(self.network, RequestStateNodes(
                        peer, tuple(hashes[i] for i in lacking)),
                        timeout=self.cfg.request_timeout + CALL_MARGIN)
                except CALL_FAILURES as exc:
                    got = RequestFailed(peer, "disconnected", str(exc))
                if isinstance(got, RequestFailed):
                    logger.info("sync: state values from %s failed (%s)", peer, got)
                    download = state_sync.failed(download, wants)
                    continue
                for i, value in zip(lacking, got, strict=True):
                    values[i] = value
            answer = state_sync.answered(download, wants, values)
            if answer.store:
                try:
                    stored = await otp.call(self.engine, PutStateNodes(answer.store),
                                            timeout=INIT_WAIT)
                except CALL_FAILURES as exc:
                    logger.info("sync: the engine did not store state values (%s); asked "
                                "again", exc)
                    download = state_sync.failed(answer.download, wants)
                    await trio.sleep(IMPORT_RETRY)
                    continue
                if isinstance(stored, EngineError):
                    raise _StateRefused(f"the engine refused the values: {stored}")
            download = answer.download
            if answer.missing == len(wants):
                await trio.sleep(TICK)  # nobody had any of them: not a busy loop
        return download

    def _snap_event(self, msg: Any, now: float) -> None:
        snap = self.snap
        if not isinstance(snap, _Snap):
            return
        match msg:
            case _PivotBlock(block):
                snap.block = block
                if snap.last is None and self.state.head == snap.pivot:
                    # Resumed with the history whole: the pivot is the stored head.
                    if block.hash() != self.head_hash:
                        logger.error("sync: snap sync gives up: the peers' block #%d is not "
                                     "the one stored; syncing in full", snap.pivot)
                        snap.scope.cancel()
                        self.snap = False
                        otp.start_task_soon(self._end_snap)
                        return
                    snap.last = block
            case _StateWhole(root, download):
                if root == snap.root:
                    snap.whole = root
                    logger.info("sync: the state at #%d is here: %d accounts, %d trie nodes, "
                                "%d codes, %.1f MB in %.1f s", snap.pivot, download.accounts,
                                download.nodes, download.codes, download.bytes / 1e6,
                                now - snap.started)
            case _StateFailed(root, reason):
                logger.error("sync: snap sync gives up (%s%s): syncing in full (the engine "
                             "executes whatever history is stored)", reason,
                             f"; state root 0x{root.hex()}" if root else "")
                snap.scope.cancel()
                self.snap = False
                otp.start_task_soon(self._end_snap)
            case _Pivoted(answer):
                snap.pivoting = False
                if isinstance(answer, BlockRef):
                    logger.info("sync: snap sync's pivot #%d taken in %.1f s; executing the "
                                "blocks after it", answer.height, now - snap.started)
                    self.snap = False
                else:
                    snap.refusals += 1
                    logger.warning("sync: the chain did not take the pivot (%d of %d): %s",
                                   snap.refusals, PIVOT_TRIES, answer)
                    self.import_after = now + IMPORT_RETRY
                    if snap.refusals >= PIVOT_TRIES:
                        logger.error("sync: snap sync gives up: syncing in full (the engine "
                                     "executes the stored history)")
                        snap.scope.cancel()
                        self.snap = False
                        otp.start_task_soon(self._end_snap)
        self._pivot_if_ready(now)

    def _pivot_if_ready(self, now: float) -> None:
        """With the head at the pivot: if the state downloaded is that block's, have the
        chain make it the engine's head; if it is another block's (the peer's pivot block
        was not on the chain imported), download the right one (what is stored is kept)."""
        snap = self.snap
        if not isinstance(snap, _Snap) or snap.pivoting or self.state.head != snap.pivot:
            return
        last = snap.last
        if last is None or last.height != snap.pivot:
            return
        root = last.message.execution_payload.state_root
        if snap.root is not None and snap.root != root:
            logger.warning("sync: the pivot block a peer sent is not the one imported: "
                           "downloading the state of #%d %s", snap.pivot, last.hash().hex()[:16])
            snap.scope.cancel()
            snap.scope = trio.CancelScope()
            snap.root = root
            otp.start_task_soon(self._fetch_state, snap, root)
            return
        if snap.whole != root or now < self.import_after:
            return
        snap.pivoting = True
        otp.start_task_soon(self._take_pivot)

    async def _record_snap(self, pivot: int | None) -> str | None:
        """Have the engine record the snap sync under way (None: that none is) before any
        history is stored, so that a restart leaves that history unexecuted and resumes;
        waits for an engine that is restarting. Returns why the engine refused, or None."""
        while True:
            try:
                answer = await otp.call(self.engine, RecordSnap(pivot), timeout=INIT_WAIT)
            except CALL_FAILURES as exc:
                logger.info("sync: the engine did not record the snap sync (%s); asked again",
                            exc)
                await trio.sleep(IMPORT_RETRY)
                continue
            return None if answer is None else f"the engine refused the snap sync: {answer}"

    async def _end_snap(self) -> None:
        """Snap sync given up: the engine's record of it removed (a restart then executes
        the stored history, as a full sync does)."""
        problem = await self._record_snap(None)
        if problem is not None:
            logger.warning("sync: %s", problem)

    async def _resume_snap(self, head: int) -> None:
        """At start: a snap sync the engine recorded as under way (the node restarted part
        way) goes on to the same pivot, its history kept unexecuted and what is stored of
        the pivot's state kept. A record whose pivot is below the head is over, and one left
        while this node syncs in full (``sync.mode`` changed) is removed: the engine then
        executes the stored history when the chain next needs it."""
        try:
            pivot = await otp.call(self.engine, GetSnap(), timeout=INIT_WAIT)
        except CALL_FAILURES as exc:
            logger.warning("sync: the engine did not say whether a snap sync is under way "
                           "(%s)", exc)
            return
        if not isinstance(pivot, int):
            return  # none (or an external engine, which has no such record)
        if self.snap is False or head > pivot:
            logger.info("sync: the snap sync to #%d recorded by the engine is over (head "
                        "#%d%s)", pivot, head, ", sync.mode is full" if self.snap is False
                        else "")
            self.snap = False
            otp.start_task_soon(self._end_snap)
            return
        snap = self.snap = _Snap(pivot, started=trio.current_time())
        logger.info("sync: resuming the snap sync to #%d (history stored up to #%d, "
                    "unexecuted)", pivot, head)
        otp.start_task_soon(self._fetch_state, snap, None)

    async def _take_pivot(self) -> None:
        answer: BlockRef | Exception
        try:
            answer = await otp.call(self.chain, PivotAtHead(state_whole=True), timeout=600.0)
        except CALL_FAILURES as exc:
            answer = exc
        await otp.send(otp.self(), _Pivoted(answer))

    # -- progress ------------------------------------------------------------------------------

    def _blocks_per_second(self, now: float) -> float:
        while len(self.rate) > 2 and self.rate[1][0] <= now - RATE_WINDOW:
            self.rate.popleft()
        since, head = self.rate[0]
        if now - since <= 0 or self.state.head <= head:
            return 0.0
        return (self.state.head - head) / (now - since)

    def _progress(self) -> rules.SyncProgress:
        return rules.progress(self.state, self._blocks_per_second(trio.current_time()))

    def _report(self, now: float) -> None:
        progress = rules.progress(self.state, self._blocks_per_second(now))
        metrics.SYNC_CURRENT.set(progress.current)
        metrics.SYNC_TARGET.set(progress.target)
        metrics.SYNC_BLOCKS_PER_SECOND.set(progress.blocks_per_second)
        metrics.SYNC_PEERS.set(progress.peers)
        metrics.SYNC_SYNCED.set(int(progress.synced))
        metrics.SYNC_IN_FLIGHT.set(len(self.state.flight))
        metrics.SYNC_DOWNLOADED.set(len(self.blocks))
        last = self.published
        changed = last is None or last.synced != progress.synced
        if changed:
            if progress.synced:
                logger.info("sync: synced at #%d, %d peer(s)", progress.current, progress.peers)
            else:
                logger.info("sync: behind: #%d of #%d, %d peer(s)", progress.current,
                            progress.target, progress.peers)
            self.logged_at = now
        elif not progress.synced and now - self.logged_at >= LOG_INTERVAL:
            logger.info("sync: #%d of #%d, %.0f blocks/s, %d peers", progress.current,
                        progress.target, progress.blocks_per_second, progress.peers)
            self.logged_at = now
        if changed or (not progress.synced and progress != last
                       and now - self.published_at >= PUBLISH_INTERVAL):
            otp.bus.publish_nowait(self.prefix + SYNC_TOPIC, progress)
            self.published, self.published_at = progress, now
