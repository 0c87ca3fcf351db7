"""EngineActor: the execution layer, through the Engine API or the embedded engine.

``kind = "http"`` talks to Geth or Reth (``EngineClient``: JWT HS256 from a hex secret file);
``kind = "embedded"`` (the default) runs the in-process ``EmbeddedEngine`` behind the same
interface. Its state is the chain of payloads, which the consensus blocks in storage already
hold: a snapshot is stored with every :data:`SNAPSHOT_EVERY`-th block and at shutdown, and at
start the engine is restored from it and the stored blocks after it are replayed.

The original's flow: build = ``forkchoiceUpdated(head, safe = finalized = last finalized,
attributes)`` then ``getPayload``; commit = ``forkchoiceUpdated(parent)`` → ``newPayload`` →
``forkchoiceUpdated(latest valid hash)``.
"""

from __future__ import annotations

import logging
from typing import Any

import attrs
import trio

import otp

from ..config import ChainConfig, EngineConfig, structure_section
from ..execution.embedded import EmbeddedEngine
from ..integration.engine import (
    EngineClient,
    PayloadStatusError,
    build_block,
    commit_block,
    load_jwt_secret,
)
from ..types.execution import ExecutionPayload, Withdrawal, payload_from_eth_block
from . import storage as storage_msgs

logger = logging.getLogger("alys.engine")

#: The embedded engine's state is stored with every this many blocks (and at shutdown).
SNAPSHOT_EVERY = 128

CAPABILITIES = (
    "engine_exchangeCapabilities",
    "engine_forkchoiceUpdatedV2",
    "engine_getPayloadV2",
    "engine_newPayloadV2",
)


@attrs.frozen
class GetGenesis:
    """The execution layer's block 0 as a payload (the consensus genesis wraps it)."""


@attrs.frozen
class BuildPayload:
    head: bytes
    finalized: bytes
    timestamp: int
    fee_recipient: bytes
    withdrawals: tuple[Withdrawal, ...] = ()


@attrs.frozen
class CommitPayload:
    """Execute ``payload`` and make it the head; replies ``(head hash, engine state)`` where
    the state is the embedded engine's snapshot to store with the block, every
    :data:`SNAPSHOT_EVERY` blocks (None otherwise, and over HTTP), or the
    :class:`PayloadStatusError` when the engine refuses the payload (the actor carries on)."""

    payload: ExecutionPayload
    finalized: bytes


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
        self.storage = storage
        if self.cfg.kind == "embedded":
            state = await otp.call(storage, storage_msgs.GetEngineState())
            if state is not None:
                self.embedded = EmbeddedEngine.restore(state)
            else:
                self.embedded = EmbeddedEngine(chain_id=chain_cfg.execution_chain_id)
            self.engine: Any = self.embedded
            replayed = await self._replay()
            logger.info("embedded execution engine at block #%d (%d replayed from storage)",
                        self.embedded.head_number, replayed)
        else:
            if self.cfg.jwt_secret_path is None:
                raise otp.OtpError("engine.kind = 'http' needs engine.jwt_secret_path")
            secret = load_jwt_secret(self.cfg.jwt_secret_path)
            self.engine = EngineClient(self.cfg.url, secret, timeout=self.cfg.timeout)
            methods = await self.engine.exchange_capabilities(list(CAPABILITIES))
            missing = [m for m in CAPABILITIES[1:] if m not in methods]
            if missing:
                raise otp.OtpError(f"the execution client at {self.cfg.url} lacks {missing}")
            logger.info("execution client at %s", self.cfg.url)

    async def _replay(self) -> int:
        """Re-execute the stored blocks after the restored snapshot's head."""
        assert self.embedded is not None
        head = await otp.call(self.storage, storage_msgs.GetHead())
        if head is None:
            return 0
        finalized_ref = await otp.call(self.storage, storage_msgs.GetFinalized())
        finalized = await otp.call(self.storage, storage_msgs.GetBlock(finalized_ref.hash))
        finalized_hash = finalized.message.execution_payload.block_hash
        count = 0
        for height in range(self.embedded.head_number + 1, head.height + 1):
            block = await otp.call(self.storage, storage_msgs.GetBlockByHeight(height))
            if block is None:
                raise otp.OtpError(f"block #{height} is missing: cannot rebuild the engine")
            await commit_block(self.engine, block.message.execution_payload, finalized_hash)
            count += 1
        return count

    async def handle_call(self, request: Any, from_: otp.From) -> Any:
        kind = type(request)
        if kind is BuildPayload:
            return await build_block(
                self.engine, request.head, request.finalized, request.timestamp,
                request.fee_recipient, list(request.withdrawals),
            )
        if kind is CommitPayload:
            try:
                head = await commit_block(self.engine, request.payload, request.finalized)
            except PayloadStatusError as exc:
                return exc  # the engine refused this payload: an answer, not an engine fault
            state = None
            if self.embedded is not None and request.payload.block_number % SNAPSHOT_EVERY == 0:
                state = self.embedded.snapshot()
            return head, state
        if kind is GetGenesis:
            await trio.lowlevel.checkpoint()
            if self.embedded is not None:
                return self.embedded.genesis_payload()
            # As the original: the execution layer's block 0 is the genesis payload.
            block = await self.engine.call("eth_getBlockByNumber", ["0x0", False])
            return payload_from_eth_block(block, "eth_getBlockByNumber(0)")
        raise otp.UnexpectedMessage(self, "call", request)

    async def terminate(self, reason: Any) -> None:
        if self.embedded is not None and otp.whereis(self.storage) is not None:
            try:
                await otp.call(self.storage, storage_msgs.PutEngineState(self.embedded.snapshot()))
            except otp.OtpError as exc:
                logger.warning("engine state not saved at shutdown (replayed next start): %s", exc)
        await self.engine.aclose()
