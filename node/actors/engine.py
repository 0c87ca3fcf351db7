"""EngineActor: the execution layer, through the Engine API or the embedded EVM.

``kind = "http"`` talks to Geth or Reth (``EngineClient``: JWT HS256 from a hex secret file);
``kind = "embedded"`` (the default) runs the in-process EVM (``EmbeddedEngine``, py-evm)
behind the same interface, its state in its own LevelDB directory, ``<data_dir>/evm``, from
the genesis file ``engine.genesis`` (default: the dev chain's, shipped with the node).

The original's flow: build = ``forkchoiceUpdated(head, safe = finalized = last finalized,
attributes)`` then ``getPayload``; commit = ``forkchoiceUpdated(parent)`` → ``newPayload`` →
``forkchoiceUpdated(latest valid hash)``.

**The restart path, the same for every engine.** At start, and whenever the engine answers
``SYNCING`` (or ``ACCEPTED``) to a build or a commit — it lacks blocks the node has, because it
restarted, lost its data or was never given them — or refuses a forkchoice naming a block it
lacks (``-38002``), the actor runs :func:`node.integration.engine.resync` over the stored
chain: every stored payload after the last one the engine has is sent again with
``newPayload``, and the forkchoice names the finalized block only once the engine has it.
Then the build or commit is tried once more.

**The embedded EVM and the node's two databases.** The EVM keeps its state in its own
database, as Geth keeps its own data directory, and for the same reasons: the StorageActor is
the only owner of the consensus database (LevelDB admits one opener), the EVM reads trie nodes
by the thousand per block (through another actor's mailbox they would cost a message each),
and the two restart independently. Each database writes atomically per operation; between
them, a kill leaves the EVM either behind the consensus store (it lost the tail of a power
cut, or the kill fell between the engine's commit and the block's write... in which case it
is ahead) or ahead of it; the restart path brings it to the stored head either way:
re-sending payloads it lacks, or moving its head back to the stored one. Nothing is replayed
from genesis: the EVM opens with its state.

**Snap sync** (embedded mode): :class:`~node.messages.engine.GetStateNodes` (trie nodes and
code by hash, for peers; the NetworkActor asks on their behalf),
:class:`~node.messages.engine.PutStateNodes`, :class:`~node.messages.engine.CheckState` and
:class:`~node.messages.engine.SetPivot` let the SyncActor download the state at a pivot block
and make that block the head without executing history
(:mod:`node.workflows.state_sync`). With an external client each is answered with an
``EngineError`` saying it is not served.

In embedded mode the actor also answers the Ethereum JSON-RPC server's requests
(:class:`~node.messages.eth.EthRequest`, through :class:`node.execution.eth_api.EthApi`)
and publishes :class:`~node.messages.eth.EthHead` for every block that joins the canonical
chain and :class:`~node.messages.eth.EthPendingTx` for every transaction its pool accepts
(on :data:`~node.messages.eth.ETH_TOPIC`), for subscriptions and filters.

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
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Final

import attrs
import trio
from eth_hash.auto import keccak

import otp

from ..config import ChainConfig, EngineConfig, structure_section
from ..errors import EngineSetupError, MissingBlock
from ..execution.embedded import EmbeddedEngine, EngineStateError, PivotError
from ..execution.eth_api import EthApi
from ..execution.eth_json import header_json, log_json, transaction_json
from ..execution.genesis import Genesis, GenesisError, dev_genesis, load_genesis
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
from ..messages.engine import (
    BuildPayload,
    CheckState,
    CommitPayload,
    Committed,
    GetGenesis,
    GetSnap,
    GetStateNodes,
    PutStateNodes,
    RecordSnap,
    SetPivot,
)
from ..messages.eth import ETH_TOPIC, EthHead, EthLog, EthPendingTx, EthRequest
from ..rpc import encode
from ..types.execution import (
    INVALID_FORKCHOICE_STATE,
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


def engine_genesis(cfg: EngineConfig) -> Genesis:
    """The embedded engine's genesis: ``engine.genesis``, or the shipped dev genesis."""
    return dev_genesis() if cfg.genesis is None else load_genesis(cfg.genesis)


def open_embedded(genesis: Genesis, data_dir: str | None) -> EmbeddedEngine:
    """The embedded engine on ``<data_dir>/evm`` (in memory without a data directory). An
    earlier instance of this actor that was killed (no ``terminate``) loses its handle on the
    directory to this one (:class:`node.execution.db.LevelStore`)."""
    if data_dir is None:
        return EmbeddedEngine(genesis)
    return EmbeddedEngine(genesis, path=Path(data_dir) / "evm")


class EngineActor(otp.GenServer):
    async def init(
        self,
        config: dict[str, Any] | None = None,
        chain: dict[str, Any] | None = None,
        storage: str = "storage",
        data_dir: str | None = None,
    ) -> None:
        """``data_dir``: where the embedded engine keeps its database (``<data_dir>/evm``);
        None keeps it in memory (tests)."""
        self.cfg: EngineConfig = structure_section(config or {}, EngineConfig, "engine")
        chain_cfg: ChainConfig = structure_section(chain or {}, ChainConfig, "chain")
        self.embedded: EmbeddedEngine | None = None
        self.api: EthApi | None = None
        self.eth: ExecutionClient | None = None
        #: Set while the execution client is away: the answer every request gets meanwhile.
        self.away: EngineUnreachable | None = None
        self.retry_delay = RETRY_INITIAL
        self.warned_prices = False
        self.stored = _StoredChain(storage)
        self.storage_name = storage
        self.chain_id = chain_cfg.execution_chain_id
        if self.cfg.kind == "embedded":
            try:
                genesis = engine_genesis(self.cfg)
            except GenesisError as exc:
                raise EngineSetupError(str(exc)) from None
            if genesis.chain_id != self.chain_id:
                raise EngineSetupError(
                    f"the genesis {genesis.source} has chain id {genesis.chain_id}, the "
                    f"configuration's chain.execution_chain_id is {self.chain_id}")
            await trio.lowlevel.checkpoint()
            try:
                self.embedded = open_embedded(genesis, data_dir)
            except EngineStateError as exc:
                raise EngineSetupError(f"the embedded engine's database at {data_dir}/evm: "
                                       f"{exc}") from None
            self.api = EthApi(self.embedded)
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
        snap = self.embedded.snap_target if self.embedded is not None else None
        if snap is not None and self.embedded is not None and (
                self.embedded.head_number < snap):
            # A snap sync was under way: the stored blocks up to its pivot are history the
            # engine never executes (the SyncActor goes on downloading the pivot's state).
            logger.info("embedded EVM at block #%d: a snap sync to #%d is under way, so the "
                        "stored blocks up to it are not executed", self.embedded.head_number,
                        snap)
            self.embedded.drain_new_heads()
            return
        if snap is not None and self.embedded is not None:
            self.embedded.record_snap(None)  # the pivot was taken: nothing is under way
        sent = await self._resync()
        if self.embedded is not None:
            self.embedded.drain_new_heads()  # what the restart re-sent is not news
            logger.info("embedded EVM (py-evm, Shanghai, chain id %d) at block #%d, %d "
                        "re-sent from storage", self.chain_id, self.embedded.head_number, sent)
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
        if isinstance(request, EthRequest):
            return await self._answer_eth(request)
        if isinstance(request, GetStateNodes | PutStateNodes | CheckState | SetPivot
                      | RecordSnap | GetSnap):
            return await self._state(request)
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

    async def _state(self, request: GetStateNodes | PutStateNodes | CheckState | SetPivot
                     | RecordSnap | GetSnap) -> Any:
        """Snap sync's requests (:mod:`node.messages.engine`): served by the embedded engine;
        an external client downloads its own state, so they are refused with an EngineError
        saying so. A refusal of the engine (a value that does not hash to its key, a pivot
        whose state is incomplete) is the answer too: the actor carries on."""
        await trio.lowlevel.checkpoint()
        method = type(request).__name__
        engine = self.embedded
        if engine is None:
            return EngineError(None, "state download needs the embedded engine "
                               "(engine.kind = 'embedded'): an external execution client "
                               "downloads its own state", method)
        try:
            match request:
                case GetStateNodes(hashes, max_bytes):
                    return tuple(engine.state_values(hashes, max_bytes))
                case PutStateNodes(nodes):
                    return engine.put_state_values(nodes)
                case CheckState(root):
                    return await engine.missing_state(root)
                case RecordSnap(pivot):
                    engine.record_snap(pivot)
                    return None
                case GetSnap():
                    return engine.snap_target
                case SetPivot(payloads, safe, finalized, whole):
                    try:
                        return await engine.set_pivot(payloads, safe, finalized,
                                                      state_whole=whole)
                    finally:
                        self._publish_heads()
        except (PivotError, ValueError) as exc:
            return EngineError(None, str(exc), method)
        raise otp.UnexpectedMessage(self, "call", request)

    async def _answer_eth(self, request: EthRequest) -> Any:
        """A request of the Ethereum JSON-RPC server (embedded mode), answered from the
        EVM's state at once."""
        await trio.lowlevel.checkpoint()
        if self.api is None:
            raise otp.UnexpectedMessage(self, "call", request)
        answer = self.api.answer(request.method, request.args)
        if request.method == "eth_sendRawTransaction" and isinstance(answer, bytes):
            self._publish_pending(keccak(request.args[0]))  # a transaction's hash
        return answer

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
                finally:
                    self._publish_heads()
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
                finally:
                    self._publish_heads()
                return Committed(head, await self._fees(request.payload))
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

    # -- events for the Ethereum JSON-RPC server ----------------------------------------------

    def _publish_heads(self) -> None:
        engine = self.embedded
        if engine is None:
            return
        heads = engine.drain_new_heads()
        if not otp.bus.subscribers(ETH_TOPIC):
            return  # no Ethereum JSON-RPC server listens: spare the JSON (every block in sync)
        for block_hash in heads:
            header = engine.header(block_hash)
            if header is None:
                continue
            logs = tuple(
                EthLog(log.address, tuple(t.to_bytes(32, "big") for t in log.topics),
                       encode(log_json(h, index, tx_hash, position, log)))
                for h, index, tx_hash, position, log in engine.block_logs(header, (), ()))
            otp.bus.publish_nowait(ETH_TOPIC, EthHead(int(header.block_number), block_hash,
                                                      encode(header_json(header)), logs))

    def _publish_pending(self, tx_hash: bytes) -> None:
        engine = self.embedded
        pooled = None if engine is None else engine.pool.get(tx_hash)
        if pooled is not None:
            otp.bus.publish_nowait(ETH_TOPIC, EthPendingTx(
                tx_hash, encode(transaction_json(pooled.tx, None, None))))

    async def terminate(self, reason: Any) -> None:
        await self._close()

    async def _close(self) -> None:
        await self.engine.aclose()
        if self.eth is not None:
            await self.eth.aclose()
