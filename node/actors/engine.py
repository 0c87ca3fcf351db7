"""EngineActor: the execution layer, through the Engine API or the embedded engine.

``kind = "http"`` talks to Geth or Reth (``EngineClient``: JWT HS256 from a hex secret file);
``kind = "embedded"`` (the default) runs the in-process ``EmbeddedEngine`` behind the same
interface.

The original's flow: build = ``forkchoiceUpdated(head, safe = finalized = last finalized,
attributes)`` then ``getPayload``; commit = ``forkchoiceUpdated(parent)`` → ``newPayload`` →
``forkchoiceUpdated(latest valid hash)``.

**The restart path, the same for every engine.** At start, and whenever the engine answers
``SYNCING`` (or ``ACCEPTED``) to a build or a commit — it lacks blocks the node has, because it
restarted, lost its data or was never given them — or refuses a forkchoice naming a block it
lacks (``-38002``), the actor runs :func:`node.integration.engine.resync` over the stored
chain: every stored payload after the last one the engine has is sent again with
``newPayload``, and the forkchoice names the finalized block only once the engine has it.
Then the build or commit is tried once more. (The embedded engine is first restored from the
stored anchor: it may have moved its anchor for a block that never reached storage.)

**An execution client that goes away** (``kind = "http"``: Geth or ethereumjs stopped,
restarting or hung) is not a fault of this actor: a call that cannot reach it, or gets no
answer within ``engine.timeout``, marks the client *away* and answers the request with
:class:`~node.integration.jsonrpc.EngineUnreachable` (the ChainActor pauses production on
it, with one log line). While it is away every request is answered at once with the same
error, and the actor probes the client (``engine_exchangeCapabilities``) with backoff, from
0.5 s up to 10 s between tries; once it answers, the stored blocks it lacks are sent again
(the restart path below) and requests are served again, with a log line. Nothing the node
stored is touched meanwhile. Every other engine error — a refusal, a malformed answer — is
the request's answer too: the actor never crashes for what the client says.

**Every request is answered within** ``engine.request_timeout`` (the ChainActor waits a
little longer): re-sending stored blocks inside a request stops in time, leaving the
forkchoice at the last block sent, and the request is answered with
:class:`~node.integration.engine.ResyncIncomplete`; the next request goes on from there.

**At boot** over HTTP, the actor waits up to ``engine.connect_timeout`` for the client,
logging each failed try; a client that refuses the JWT (HTTP 401/403), lacks a V2 method, or
runs another chain id on ``engine.eth_url`` is a clear boot error (:class:`EngineSetupError`).
Receipts (a block's fees) are read over the client's eth JSON-RPC with
:class:`~node.integration.execution.ExecutionClient` (at ``engine.eth_url``, or on the
Engine API port with the JWT when that is empty), whose caches' hit rates are in
``/metrics``.

**The embedded engine's state** is its *anchor*: when a commit moves the finalized block,
the engine forgets everything before it (``retain_from``) and the commit's answer carries
the engine's snapshot (the anchor, the balances after it, the few blocks after it), which the
ChainActor stores in the same batch as the block. A node killed at any moment restarts from
that anchor, consistent with the stored chain by construction, and the restart path re-sends
the blocks after it (at most the unfinalized range, so a boot costs the same at block 10 and
block 100,000). A stored anchor that does not restore is only a cache: the engine starts
from genesis and the stored chain is sent again, with a warning.
"""

from __future__ import annotations

import logging
from typing import Any, Final

import attrs
import trio

import otp

from ..config import ChainConfig, EngineConfig, structure_section
from ..errors import EngineSetupError, MissingBlock
from ..execution.embedded import EmbeddedEngine, EngineStateError
from ..integration.engine import (
    EngineClient,
    EngineUnreachable,
    JwtSecretError,
    PayloadStatusError,
    ResyncIncomplete,
    build_block,
    commit_block,
    load_jwt_secret,
    resync,
)
from ..integration.execution import ExecutionClient
from ..messages import storage
from ..messages.engine import BuildPayload, CommitPayload, Committed, GetGenesis
from ..types.execution import (
    INVALID_FORKCHOICE_STATE,
    ZERO_HASH,
    EngineError,
    ExecutionPayload,
    PayloadStatusKind,
    payload_from_eth_block,
)
from ..workflows import fees
from . import sibling

logger = logging.getLogger("alys.engine")

CAPABILITIES = (
    "engine_exchangeCapabilities",
    "engine_forkchoiceUpdatedV2",
    "engine_getPayloadV2",
    "engine_newPayloadV2",
)

#: How long the engine waits for a restarting StorageActor while reading the stored chain.
STORAGE_WAIT = 90.0
#: Backoff between probes of an execution client that went away (seconds).
RETRY_INITIAL: Final = 0.5
RETRY_MAX: Final = 10.0


@attrs.frozen
class _Probe:
    """Time to try the execution client that went away again."""


class _StoredChain:
    """The stored canonical chain, read through the StorageActor (``StoredChain``)."""

    def __init__(self, name: str) -> None:
        self.name = name

    async def head_height(self) -> int | None:
        head = await sibling.call_storage(storage.GetHead(), storage=self.name, wait=STORAGE_WAIT)
        return None if head is None else int(head.height)

    async def finalized_height(self) -> int:
        ref = await sibling.call_storage(storage.GetFinalized(), storage=self.name,
                                         wait=STORAGE_WAIT)
        return 0 if ref is None else int(ref.height)  # nothing finalized yet: genesis

    async def payload_at(self, height: int) -> ExecutionPayload:
        block = await sibling.call_storage(storage.GetBlockByHeight(height), storage=self.name,
                                   wait=STORAGE_WAIT)
        if block is None:
            raise MissingBlock(f"stored block #{height} is missing: cannot bring the engine "
                               "to the stored head")
        payload: ExecutionPayload = block.message.execution_payload
        return payload


class EngineActor(otp.GenServer):
    async def init(
        self,
        config: dict[str, Any] | None = None,
        chain: dict[str, Any] | None = None,
        storage: str = "storage",
    ) -> None:
        self.cfg: EngineConfig = structure_section(config or {}, EngineConfig, "engine")
        chain_cfg: ChainConfig = structure_section(chain or {}, ChainConfig, "chain")
        self.embedded: EmbeddedEngine | None = None
        self.eth: ExecutionClient | None = None
        #: Set while the execution client is away: the answer every request gets meanwhile.
        self.away: EngineUnreachable | None = None
        self.retry_delay = RETRY_INITIAL
        self.warned_prices = False
        self.stored = _StoredChain(storage)
        self.storage_name = storage
        self.chain_id = chain_cfg.execution_chain_id
        if self.cfg.kind == "embedded":
            self.embedded = await self._restore()
            self.engine: Any = self.embedded
        else:
            if self.cfg.jwt_secret_path is None:
                raise EngineSetupError("engine.kind = 'http' needs engine.jwt_secret_path")
            try:
                secret = load_jwt_secret(self.cfg.jwt_secret_path)
            except JwtSecretError as exc:
                raise EngineSetupError(f"engine.jwt_secret_path: {exc}") from exc
            self.engine = EngineClient(self.cfg.url, secret, timeout=self.cfg.timeout)
            self.eth_url = self.cfg.eth_url or self.cfg.url
            self.eth = ExecutionClient(self.eth_url, timeout=self.cfg.timeout,
                                       jwt_secret=None if self.cfg.eth_url else secret)
            try:
                await self._connect()
            except BaseException:
                with trio.CancelScope(shield=True):  # terminate is not called for init
                    await self._close()
                raise
        sent = await self._resync()
        if self.embedded is not None:
            logger.info("embedded execution engine at block #%d (anchor #%d, %d re-sent from "
                        "storage)", self.embedded.head_number,
                        self.embedded.anchor.block_number, sent)
        else:
            logger.info("execution client at %s (%d stored blocks re-sent)", self.cfg.url, sent)

    async def _connect(self) -> None:
        """Wait (up to ``engine.connect_timeout``) for the execution client; check it is
        ours to use. Raises :class:`EngineSetupError` saying what is wrong."""
        cfg = self.cfg
        deadline = trio.current_time() + cfg.connect_timeout
        delay = RETRY_INITIAL
        while True:
            try:
                methods = await self.engine.exchange_capabilities(list(CAPABILITIES))
                break
            except EngineUnreachable as exc:
                if trio.current_time() + delay > deadline:
                    raise EngineSetupError(
                        f"the execution client at {cfg.url} did not answer within "
                        f"{cfg.connect_timeout:g} s (engine.connect_timeout): {exc}") from exc
                logger.warning("waiting for the execution client at %s: %s (next try in "
                               "%.1f s)", cfg.url, exc, delay)
                await trio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX)
            except EngineError as exc:
                if exc.http_status in (401, 403):
                    raise EngineSetupError(
                        f"the execution client at {cfg.url} refused our JWT (HTTP "
                        f"{exc.http_status}): the secret in engine.jwt_secret_path "
                        f"({cfg.jwt_secret_path}) is not the one the client was started with "
                        "(geth --authrpc.jwtsecret, ethereumjs --jwtSecret)") from exc
                raise EngineSetupError(
                    f"the execution client at {cfg.url} cannot be used: {exc}") from exc
        missing = [m for m in CAPABILITIES[1:] if m not in methods]
        if missing:
            raise EngineSetupError(f"the execution client at {cfg.url} lacks {missing}")
        assert self.eth is not None
        try:
            chain_id = await self.eth.chain_id()
        except EngineError as exc:
            raise EngineSetupError(
                f"the execution client's eth JSON-RPC at {self.eth_url} (engine.eth_url) "
                f"cannot be used: {exc}") from exc
        if chain_id != self.chain_id:
            raise EngineSetupError(
                f"the execution client at {self.eth_url} runs chain id {chain_id}, but "
                f"chain.execution_chain_id is {self.chain_id}")

    async def _restore(self) -> EmbeddedEngine:
        chain_id = self.chain_id
        state = await sibling.call_storage(storage.GetEngineState(), storage=self.storage_name,
                                   wait=STORAGE_WAIT)
        if state is not None:
            try:
                engine = EmbeddedEngine.restore(state)
                if engine.config.chain_id == chain_id:
                    return engine
                problem = f"chain id {engine.config.chain_id}, configured {chain_id}"
            except EngineStateError as exc:
                problem = str(exc)
            logger.warning("the stored engine anchor is unusable (%s): starting from genesis "
                           "and re-sending the stored chain", problem)
        return EmbeddedEngine(chain_id=chain_id)

    async def _resync(self, deadline: float | None = None) -> int:
        async def progress(done: int, total: int) -> None:
            await trio.lowlevel.checkpoint()
            logger.info("re-sending stored blocks to the execution engine: %d of %d", done,
                        total)

        return await resync(self.engine, self.stored, progress=progress, deadline=deadline)

    @staticmethod
    def _lacks_blocks(exc: EngineError) -> bool:
        """The engine lacks blocks the node has: it answered SYNCING or ACCEPTED, or refused
        a forkchoice that names a block it does not have."""
        if isinstance(exc, PayloadStatusError):
            return exc.status.status in (PayloadStatusKind.SYNCING, PayloadStatusKind.ACCEPTED)
        return exc.code == INVALID_FORKCHOICE_STATE

    async def _recover(self, exc: EngineError, doing: str, deadline: float) -> None:
        logger.warning("the engine cannot %s (%s): re-sending stored blocks", doing, exc)
        if self.embedded is not None:
            self.embedded = self.engine = await self._restore()
        # Leave room for the build or commit that follows.
        await self._resync(deadline - 2 * self.cfg.timeout)

    # -- the client going away and coming back ----------------------------------------------

    def _went_away(self, exc: EngineUnreachable) -> EngineUnreachable:
        if self.away is None:
            logger.warning("the execution client at %s is unreachable (%s): block production "
                           "waits for it; trying again with backoff", self.cfg.url, exc)
            self.away = exc
            self.retry_delay = RETRY_INITIAL
            otp.send_after(otp.self(), _Probe(), self.retry_delay)
        return self.away

    async def _probe(self) -> None:
        try:
            await self.engine.exchange_capabilities(list(CAPABILITIES))
            sent = await self._resync(trio.current_time() + self.cfg.request_timeout)
        except EngineError as exc:
            if isinstance(exc, ResyncIncomplete):
                logger.info("the execution client at %s is back; %s", self.cfg.url, exc)
                otp.send_after(otp.self(), _Probe(), 0)
                return
            self.retry_delay = min(self.retry_delay * 2, RETRY_MAX)
            logger.info("the execution client at %s is still away (%s); next try in %.1f s",
                        self.cfg.url, exc, self.retry_delay)
            otp.send_after(otp.self(), _Probe(), self.retry_delay)
            return
        self.away = None
        logger.info("the execution client at %s is back (%d stored blocks re-sent): block "
                    "production goes on", self.cfg.url, sent)

    async def handle_info(self, msg: Any) -> None:
        if isinstance(msg, _Probe):
            if self.away is not None:
                await self._probe()
            return
        await super().handle_info(msg)

    # -- requests -----------------------------------------------------------------------------

    async def handle_call(self, request: Any, from_: otp.From) -> Any:
        if not isinstance(request, BuildPayload | CommitPayload | GetGenesis):
            raise otp.UnexpectedMessage(self, "call", request)
        if self.away is not None:
            await trio.lowlevel.checkpoint()
            return self.away
        budget = self.cfg.request_timeout
        deadline = trio.current_time() + budget
        with trio.move_on_after(budget):
            try:
                return await self._serve(request, deadline)
            except EngineUnreachable as exc:
                return self._went_away(exc)
            except EngineError as exc:
                return exc  # the engine's answer to this request: the actor carries on
        return EngineError(None, f"no complete answer within {budget:g} s "
                           "(engine.request_timeout)", type(request).__name__)

    async def _serve(self, request: Any, deadline: float) -> Any:
        match request:
            case BuildPayload():
                try:
                    return await self._build(request)
                except EngineError as exc:
                    if not self._lacks_blocks(exc):
                        raise
                    await self._recover(exc, "build", deadline)
                    return await self._build(request)
            case CommitPayload():
                try:
                    head = await self._commit(request)
                except EngineError as exc:
                    if not self._lacks_blocks(exc):
                        if isinstance(exc, PayloadStatusError):
                            return exc  # the engine refused this payload: an answer
                        raise
                    await self._recover(exc, "commit", deadline)
                    try:
                        head = await self._commit(request)
                    except PayloadStatusError as again:
                        return again
                return Committed(head, self._anchor_snapshot(request.finalized),
                                 await self._fees(request.payload))
            case GetGenesis():
                await trio.lowlevel.checkpoint()
                if self.embedded is not None:
                    return self.embedded.genesis_payload()
                # As the original: the execution layer's block 0 is the genesis payload.
                block = await self.engine.call("eth_getBlockByNumber", ["0x0", False])
                return payload_from_eth_block(block, "eth_getBlockByNumber(0)")
        raise otp.UnexpectedMessage(self, "call", request)

    async def _build(self, request: BuildPayload) -> ExecutionPayload:
        return await build_block(self.engine, request.head, request.finalized,
                                 request.timestamp, request.fee_recipient,
                                 list(request.withdrawals),
                                 build_time=0.0 if self.embedded is not None
                                 else self.cfg.build_time)

    async def _commit(self, request: CommitPayload) -> bytes:
        return await commit_block(self.engine, request.payload, request.finalized)

    def _anchor_snapshot(self, finalized: bytes) -> bytes | None:
        """After a commit that moved the finalized block: the embedded engine forgets the
        blocks before it and its snapshot goes into storage with the block."""
        engine = self.embedded
        if engine is None or finalized in (ZERO_HASH, engine.anchor.block_hash):
            return None
        engine.retain_from(finalized)
        return engine.snapshot()

    async def _fees(self, payload: ExecutionPayload) -> int:
        """The block's fees (:func:`node.workflows.fees.block_fees`): effective tips from the
        payload's transactions, gas used from the receipts, read from the embedded engine or,
        over HTTP, from the client's eth JSON-RPC (cached)."""
        if not payload.transactions:
            await trio.lowlevel.checkpoint()
            return 0  # no transactions, no receipts, no fees: spare the round trip
        if self.eth is None:
            receipts = await self.engine.receipts(payload.block_hash)
        else:
            found = await self.eth.block_receipts(payload.block_hash)
            if found is None:
                raise EngineError(None, f"the execution client at {self.eth_url} does not "
                                  f"have block 0x{payload.block_hash.hex()} it just imported",
                                  "eth_getBlockReceipts")
            receipts = [r.fee_receipt() for r in found]
        try:
            total = fees.block_fees(payload, receipts)
            problems = fees.receipt_price_problems(payload, receipts)
        except fees.FeeError as exc:
            raise EngineError(None, f"the fees of block {payload.block_number} "
                              f"(0x{payload.block_hash.hex()}) cannot be read: {exc}",
                              "eth_getBlockReceipts") from exc
        if problems and not self.warned_prices:
            self.warned_prices = True
            logger.warning("the execution client's receipts misreport effectiveGasPrice (%s); "
                           "fees are computed from the transactions' own fee caps, as EIP-1559 "
                           "defines them (this warning is not repeated)", problems[0])
        return total

    async def terminate(self, reason: Any) -> None:
        await self._close()

    async def _close(self) -> None:
        await self.engine.aclose()
        if self.eth is not None:
            await self.eth.aclose()
