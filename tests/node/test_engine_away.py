"""An execution engine that goes away, is slow, or must be given many blocks, under a running
chain: production pauses with one log line and resumes with another, the EngineActor never
crashes for it, a slow engine is the engine's error and never a CallTimeout of the chain's,
and re-sending stored blocks inside a request stops in time and goes on at the next one.

The faults come from :class:`Flaky`, which wraps the actor's engine; the clock is Trio's
MockClock, so backoffs and timeouts cost no real time. The same behaviour against real
Geth and ethereumjs processes is in ``tests/integration``; the boot errors over HTTP are
checked against the Engine API test server at the end."""

from __future__ import annotations

import logging
import secrets
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio

import otp
from node.actors.engine import EngineActor
from node.actors.storage import StorageActor
from node.config import NodeConfig
from node.errors import EngineSetupError
from node.execution.embedded import EmbeddedEngine
from node.execution.genesis import dev_genesis
from node.integration.engine import EngineUnreachable, ResyncIncomplete, resync
from node.messages import chain as c
from node.types.execution import (
    EngineError,
    ExecutionPayload,
    ForkchoiceState,
    ForkchoiceUpdatedResult,
    GetPayloadResult,
    PayloadAttributes,
    PayloadStatus,
)

from .engine_server import engine_server
from .factories import Clock, start_chain, stop_actors
from .test_engine_restart import Stored, config, make_chain

SECRET = bytes(range(32))


class Flaky:
    """An engine wrapping another: ``down`` makes every call fail as an unreachable client
    does, ``delay`` makes every call that long; ``calls`` counts the calls made."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.down = False
        self.delay = 0.0
        self.calls = 0

    async def _enter(self, method: str) -> None:
        self.calls += 1
        await trio.sleep(self.delay)
        if self.down:
            raise EngineUnreachable(None, "cannot reach the engine: connection refused", method)

    async def exchange_capabilities(self, methods: Any) -> list[str]:
        await self._enter("engine_exchangeCapabilities")
        result: list[str] = await self.inner.exchange_capabilities(methods)
        return result

    async def forkchoice_updated(self, state: ForkchoiceState,
                                 attributes: PayloadAttributes | None = None
                                 ) -> ForkchoiceUpdatedResult:
        await self._enter("engine_forkchoiceUpdatedV2")
        result: ForkchoiceUpdatedResult = await self.inner.forkchoice_updated(state, attributes)
        return result

    async def get_payload(self, payload_id: bytes) -> GetPayloadResult:
        await self._enter("engine_getPayloadV2")
        result: GetPayloadResult = await self.inner.get_payload(payload_id)
        return result

    async def new_payload(self, payload: ExecutionPayload) -> PayloadStatus:
        await self._enter("engine_newPayloadV2")
        result: PayloadStatus = await self.inner.new_payload(payload)
        return result

    async def latest_block(self) -> tuple[int, bytes]:
        await self._enter("eth_getBlockByNumber")
        result: tuple[int, bytes] = await self.inner.latest_block()
        return result

    async def block_number(self, block_hash: bytes) -> int | None:
        await self._enter("eth_getBlockByHash")
        result: int | None = await self.inner.block_number(block_hash)
        return result

    async def receipts(self, block_hash: bytes) -> Any:
        await self._enter("eth_getBlockReceipts")
        return await self.inner.receipts(block_hash)

    async def aclose(self) -> None:
        await self.inner.aclose()


async def produce(clock: Clock) -> Any:
    """ProduceNow in the next slot, waiting as long as the engine may take (virtual time)."""
    clock.next_slot()
    return await otp.call("chain", c.ProduceNow(), timeout=600)


async def flaky_engine() -> Flaky:
    actor: Any = await otp.get_state("engine")
    flaky = Flaky(actor.engine)
    actor.engine = flaky
    return flaky


async def test_production_pauses_while_the_engine_is_away_and_resumes_when_it_is_back(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    clock = Clock()
    async with otp.runtime():
        await start_chain(tmp_path, config(), clock)
        await produce(clock)
        flaky = await flaky_engine()
        flaky.down = True
        head = (await otp.call("chain", c.GetStatus())).head
        answers = [await produce(clock) for _ in range(3)]
        assert all(isinstance(a, EngineUnreachable) for a in answers), answers
        assert flaky.calls >= 1
        # While the engine is away, requests are answered at once, without calling it:
        # only the actor's probes (with backoff) reach it.
        probes_before = flaky.calls
        await trio.sleep(0.1)
        assert isinstance(await produce(clock), EngineUnreachable)
        assert flaky.calls - probes_before <= 1
        status = await otp.call("chain", c.GetStatus())
        assert status.head == head  # nothing produced, nothing lost
        paused = [r for r in caplog.records if "block production paused" in r.getMessage()]
        assert len(paused) == 1, [r.getMessage() for r in paused]
        assert "resumes when the execution client is back" in paused[0].getMessage()
        away = [r for r in caplog.records if "is unreachable" in r.getMessage()]
        assert len(away) == 1
        # The actor waits longer between probes the longer the engine stays away (0.5 s,
        # 1 s, 2 s, ... 10 s): a minute away costs about a dozen probes, not thousands.
        before = flaky.calls
        await trio.sleep(60)
        assert 4 <= flaky.calls - before <= 12
        assert otp.whereis("engine") is not None  # it never crashed

        flaky.down = False
        await trio.sleep(11)  # the next probe finds it back
        ref = await produce(clock)
        assert ref.height == head.height + 1
        messages = [r.getMessage() for r in caplog.records]
        assert any("is back (0 stored blocks re-sent)" in m for m in messages), messages
        assert any(f"block production resumed at #{ref.height}" in m for m in messages)
        await stop_actors("chain", "engine", "storage")


async def test_an_engine_that_lost_blocks_while_away_is_given_them_when_back(
        tmp_path: Path) -> None:
    clock = Clock()
    async with otp.runtime():
        await start_chain(tmp_path, config(), clock)
        for _ in range(3):
            await produce(clock)
        actor: Any = await otp.get_state("engine")
        flaky = await flaky_engine()
        flaky.down = True
        assert isinstance(await produce(clock), EngineUnreachable)
        # It comes back from an empty data directory: genesis only.
        fresh = EmbeddedEngine()
        flaky.inner = actor.embedded = fresh
        flaky.down = False
        await trio.sleep(11)
        assert fresh.head_number == 3  # the stored chain was re-sent by the probe
        ref = await produce(clock)
        assert ref.height == 4 and fresh.head_number == 4
        await stop_actors("chain", "engine", "storage")


async def test_a_slow_engine_is_the_engines_error_never_a_call_timeout(tmp_path: Path) -> None:
    clock = Clock()
    engine_cfg = {"request_timeout": 20.0, "timeout": 8.0}
    async with otp.runtime():
        await otp.start(StorageActor, str(tmp_path / "chain"), name="storage")
        await otp.start(EngineActor, engine_cfg, config(), name="engine")
        from node.actors.chain import ENGINE_CALL_MARGIN, ChainActor

        await otp.start(ChainActor, config(), str(tmp_path), produce=False, name="chain",
                        clock=clock, engine_config=engine_cfg)
        chain: Any = await otp.get_state("chain")
        assert chain.engine_timeout == 20.0 + ENGINE_CALL_MARGIN
        flaky = await flaky_engine()
        flaky.delay = 15.0  # each call: a request makes several, more than 20 s in all
        started = trio.current_time()
        answer = await produce(clock)
        assert isinstance(answer, EngineError) and not isinstance(answer, otp.CallTimeout)
        assert "no complete answer within 20 s (engine.request_timeout)" in str(answer)
        assert trio.current_time() - started == pytest.approx(20.0)
        flaky.delay = 0.0
        assert (await produce(clock)).height == 1  # and the next slot works
        await stop_actors("chain", "engine", "storage")


async def test_resync_stops_at_its_deadline_and_the_next_call_goes_on() -> None:
    chain = await make_chain(40, finalized=30)
    engine = EmbeddedEngine()
    slow = Flaky(engine)
    slow.delay = 0.1  # two calls a block: 0.2 s a block
    stored = Stored(chain, 30)
    with pytest.raises(ResyncIncomplete) as info:
        await resync(slow, stored, deadline=trio.current_time() + 2.0)
    done = info.value.done
    assert 5 <= done <= 15 and info.value.total == 40
    assert engine.head_number == done  # the forkchoice names the last block re-sent
    assert "still being given the stored blocks it lacks" in str(info.value)
    assert await resync(slow, stored) == 40 - done
    assert engine.head == chain[-1]
    assert engine.forkchoice.finalized_block_hash == chain[30].block_hash


async def test_an_engine_request_resyncing_too_long_answers_in_time(tmp_path: Path) -> None:
    clock = Clock()
    engine_cfg = {"request_timeout": 20.0, "timeout": 1.0}
    async with otp.runtime():
        await otp.start(StorageActor, str(tmp_path / "chain"), name="storage")
        await otp.start(EngineActor, engine_cfg, config(), name="engine")
        from node.actors.chain import ChainActor

        await otp.start(ChainActor, config(), str(tmp_path), produce=False, name="chain",
                        clock=clock, engine_config=engine_cfg)
        for _ in range(40):
            await produce(clock)
        actor: Any = await otp.get_state("engine")
        fresh = EmbeddedEngine()  # lost everything: the next build answers SYNCING
        flaky = await flaky_engine()
        flaky.inner = fresh
        actor.embedded = None  # as over HTTP: the client is not restored from storage
        flaky.delay = 0.5
        answers = []
        for _ in range(6):
            answer = await produce(clock)
            answers.append(answer)
            if not isinstance(answer, EngineError):
                break
        assert isinstance(answers[0], ResyncIncomplete), answers[0]
        assert answers[-1].height == 41, answers  # caught up over a few requests, then built
        assert fresh.head_number == 41
        await stop_actors("chain", "engine", "storage")


# -- boot errors over HTTP ------------------------------------------------------------------


def http_config(tmp_path: Path, url: str, secret: bytes, **extra: Any) -> dict[str, Any]:
    path = tmp_path / f"jwt-{secrets.token_hex(4)}.hex"
    path.write_text(secret.hex())
    node = NodeConfig(data_dir=str(tmp_path)).as_mapping()["node"]
    return {**node["engine"], "kind": "http", "url": url, "jwt_secret_path": str(path),
            **extra}


async def start_engine(tmp_path: Path, engine_cfg: dict[str, Any],
                       chain: dict[str, Any] | None = None) -> None:
    await otp.start(StorageActor, str(tmp_path / "chain"), name="storage")
    try:
        await otp.start(EngineActor, engine_cfg, chain or {}, name="engine")
    finally:
        await stop_actors("engine", "storage")


@pytest.mark.real_clock
async def test_a_wrong_jwt_secret_is_a_clear_boot_error(tmp_path: Path) -> None:
    async with engine_server(SECRET) as url, otp.runtime():
        with pytest.raises(EngineSetupError) as info:
            await start_engine(tmp_path, http_config(tmp_path, url, bytes(32)))
        reason = info.value
        assert f"the execution client at {url} refused our JWT (HTTP 401)" in str(reason)
        assert "is not the one the client was started with" in str(reason)


@pytest.mark.real_clock
async def test_another_chain_id_is_a_clear_boot_error(tmp_path: Path) -> None:
    other_chain = EmbeddedEngine(attrs.evolve(dev_genesis(), chain_id=5))
    async with engine_server(SECRET, engine=other_chain) as url, otp.runtime():
        with pytest.raises(EngineSetupError) as info:
            await start_engine(tmp_path, http_config(tmp_path, url, SECRET))
        assert "runs chain id 5, but chain.execution_chain_id is 121212" in str(info.value)


@pytest.mark.real_clock
async def test_no_client_at_boot_is_a_clear_error_after_connect_timeout(tmp_path: Path) -> None:
    async with engine_server(SECRET) as url:
        pass  # the port is free again: nothing answers there
    async with otp.runtime():
        with pytest.raises(EngineSetupError) as info:
            await start_engine(tmp_path, http_config(tmp_path, url, SECRET,
                                                     connect_timeout=1.5))
        assert f"the execution client at {url} did not answer within 1.5 s" in str(info.value)
