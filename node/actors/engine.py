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
from typing import Any

import trio

import otp

from ..config import ChainConfig, EngineConfig, structure_section
from ..errors import EngineSetupError, MissingBlock
from ..execution.embedded import EmbeddedEngine, EngineStateError
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
from ..types.execution import (
    INVALID_FORKCHOICE_STATE,
    ZERO_HASH,
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
        self.stored = _StoredChain(storage)
        self.storage_name = storage
        self.chain_id = chain_cfg.execution_chain_id
        if self.cfg.kind == "embedded":
            self.embedded = await self._restore()
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
            logger.info("embedded execution engine at block #%d (anchor #%d, %d re-sent from "
                        "storage)", self.embedded.head_number,
                        self.embedded.anchor.block_number, sent)
        else:
            logger.info("execution client at %s (%d stored blocks re-sent)", self.cfg.url, sent)

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
        if self.embedded is not None:
            self.embedded = self.engine = await self._restore()
        await self._resync()

    async def handle_call(self, request: Any, from_: otp.From) -> Any:
        match request:
            case BuildPayload():
                try:
                    return await self._build(request)
                except EngineError as exc:
                    if not self._lacks_blocks(exc):
                        raise
                    await self._recover(exc, "build")
                    return await self._build(request)
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
                                 list(request.withdrawals))

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
        if not payload.transactions:
            await trio.lowlevel.checkpoint()
            return 0  # no transactions, no receipts, no fees: spare the round trip
        receipts = await self.engine.receipts(payload.block_hash)
        return rules.payload_fees(payload.base_fee_per_gas, receipts)

    async def terminate(self, reason: Any) -> None:
        await self.engine.aclose()
