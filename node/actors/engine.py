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

In embedded mode the actor also answers the Ethereum JSON-RPC server's requests
(:class:`~node.messages.eth.EthRequest`, through :class:`node.execution.eth_api.EthApi`)
and publishes :class:`~node.messages.eth.EthHead` for every block that joins the canonical
chain and :class:`~node.messages.eth.EthPendingTx` for every transaction its pool accepts
(on :data:`~node.messages.eth.ETH_TOPIC`), for subscriptions and filters.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import trio
from eth_hash.auto import keccak

import otp

from ..config import ChainConfig, EngineConfig, structure_section
from ..errors import EngineSetupError, MissingBlock
from ..execution.embedded import EmbeddedEngine, EngineStateError
from ..execution.eth_api import EthApi
from ..execution.eth_json import header_json, log_json, transaction_json
from ..execution.genesis import Genesis, GenesisError, dev_genesis, load_genesis
from ..integration.engine import (
    EngineClient,
    PayloadStatusError,
    build_block,
    commit_block,
    load_jwt_secret,
    resync,
)
from ..messages import storage
from ..messages.engine import BuildPayload, CommitPayload, Committed, GetGenesis
from ..messages.eth import ETH_TOPIC, EthHead, EthLog, EthPendingTx, EthRequest
from ..rpc import encode
from ..types.execution import (
    INVALID_FORKCHOICE_STATE,
    EngineError,
    ExecutionPayload,
    PayloadStatusKind,
    payload_from_eth_block,
)
from ..workflows import chain as rules
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
            secret = load_jwt_secret(self.cfg.jwt_secret_path)
            self.engine = EngineClient(self.cfg.url, secret, timeout=self.cfg.timeout)
            methods = await self.engine.exchange_capabilities(list(CAPABILITIES))
            missing = [m for m in CAPABILITIES[1:] if m not in methods]
            if missing:
                raise EngineSetupError(f"the execution client at {self.cfg.url} lacks {missing}")
        sent = await self._resync()
        if self.embedded is not None:
            self.embedded.drain_new_heads()  # what the restart re-sent is not news
            logger.info("embedded EVM (py-evm, Shanghai, chain id %d) at block #%d, %d "
                        "re-sent from storage", self.chain_id, self.embedded.head_number, sent)
        else:
            logger.info("execution client at %s (%d stored blocks re-sent)", self.cfg.url, sent)

    async def _resync(self) -> int:
        async def progress(done: int, total: int) -> None:
            await trio.lowlevel.checkpoint()
            logger.info("re-sending stored blocks to the execution engine: %d of %d", done,
                        total)

        return await resync(self.engine, self.stored, progress=progress)

    @staticmethod
    def _lacks_blocks(exc: EngineError) -> bool:
        """The engine lacks blocks the node has: it answered SYNCING or ACCEPTED, or refused
        a forkchoice that names a block it does not have."""
        if isinstance(exc, PayloadStatusError):
            return exc.status.status in (PayloadStatusKind.SYNCING, PayloadStatusKind.ACCEPTED)
        return exc.code == INVALID_FORKCHOICE_STATE

    async def _recover(self, exc: EngineError, doing: str) -> None:
        logger.warning("the engine cannot %s (%s): re-sending stored blocks", doing, exc)
        await self._resync()

    async def handle_call(self, request: Any, from_: otp.From) -> Any:
        match request:
            case EthRequest(method=method, args=args):
                await trio.lowlevel.checkpoint()
                if self.api is None:
                    raise otp.UnexpectedMessage(self, "call", request)
                answer = self.api.answer(method, args)
                if method == "eth_sendRawTransaction" and isinstance(answer, bytes):
                    self._publish_pending(keccak(args[0]))  # a transaction's hash
                return answer
            case BuildPayload():
                try:
                    return await self._build(request)
                except EngineError as exc:
                    if not self._lacks_blocks(exc):
                        raise
                    await self._recover(exc, "build")
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
                    await self._recover(exc, "commit")
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
                                 list(request.withdrawals))

    async def _commit(self, request: CommitPayload) -> bytes:
        return await commit_block(self.engine, request.payload, request.finalized)

    async def _fees(self, payload: ExecutionPayload) -> int:
        if not payload.transactions:
            await trio.lowlevel.checkpoint()
            return 0  # no transactions, no receipts, no fees: spare the round trip
        receipts = await self.engine.receipts(payload.block_hash)
        return rules.payload_fees(payload.base_fee_per_gas, receipts)

    # -- events for the Ethereum JSON-RPC server ----------------------------------------------

    def _publish_heads(self) -> None:
        engine = self.embedded
        if engine is None:
            return
        for block_hash in engine.drain_new_heads():
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
        await self.engine.aclose()
