"""The restart path, stored chain -> engine: ``resync`` re-sends the stored payloads from the
last block the engine has and names the finalized block only once the engine has it; the
EngineActor runs it at start and whenever the engine says it lacks blocks, for the embedded
engine and over the Engine API alike.

The regression: a node killed after its first finalization could never boot again, every
boot failing with "the safe block ... is unknown (-38002)" because the replay passed the
current finalized hash to blocks the engine did not have yet.

The embedded EVM keeps its state in ``<data_dir>/evm``: a restart replays nothing; an EVM
that lost its directory gets the stored chain again."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

import attrs
import pytest

import otp
from node.actors.chain import ChainActor
from node.actors.engine import EngineActor
from node.actors.storage import StorageActor
from node.config import NodeConfig
from node.errors import EngineSetupError
from node.execution.embedded import EmbeddedEngine
from node.execution.genesis import dev_genesis
from node.integration.engine import PayloadStatusError, build_block, commit_block, resync
from node.messages import chain as c
from node.messages import storage as s
from node.types.execution import (
    ZERO_HASH,
    EngineError,
    ExecutionPayload,
    ForkchoiceState,
    ForkchoiceUpdatedResult,
    PayloadAttributes,
)
from node.workflows import chain as rules
from node.workflows.auxpow import mine_auxpow

from .engine_server import engine_server
from .factories import Clock, start_chain, stop_actors

BITS = 0x207FFFFF
SECRET = bytes(range(32))


# -- resync on its own, over a chain of payloads --------------------------------------------------


class Recording(EmbeddedEngine):
    """An embedded engine that records every forkchoice update it is sent."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.forkchoices: list[ForkchoiceState] = []

    async def forkchoice_updated(
        self, state: ForkchoiceState, attributes: PayloadAttributes | None = None
    ) -> ForkchoiceUpdatedResult:
        self.forkchoices.append(state)
        return await super().forkchoice_updated(state, attributes)


@attrs.define
class Stored:
    """A stored chain of payloads (a StoredChain)."""

    payloads: list[ExecutionPayload]
    finalized: int
    reads: int = 0

    async def head_height(self) -> int | None:
        return len(self.payloads) - 1 if self.payloads else None

    async def finalized_height(self) -> int:
        return self.finalized

    async def payload_at(self, height: int) -> ExecutionPayload:
        self.reads += 1
        return self.payloads[height]


async def make_chain(length: int, finalized: int) -> list[ExecutionPayload]:
    engine = EmbeddedEngine()
    chain = [engine.genesis]
    for _ in range(length):
        head = chain[-1]
        fin = chain[min(finalized, len(chain) - 1)].block_hash
        payload = await build_block(engine, head.block_hash, fin, head.timestamp + 1)
        await commit_block(engine, payload, fin)
        chain.append(payload)
    return chain


async def test_a_fresh_engine_gets_every_block_and_the_finalized_hash_only_once_known() -> None:
    chain = await make_chain(300, finalized=200)
    engine = Recording()
    sent = await resync(engine, Stored(chain, 200))
    assert sent == 300
    assert engine.head == chain[-1]
    assert engine.forkchoice == ForkchoiceState(chain[-1].block_hash, chain[200].block_hash,
                                                chain[200].block_hash)
    for fc in engine.forkchoices:  # every update named a finalized block the engine had
        number = engine.block_by_hash(fc.head_block_hash).block_number  # type: ignore[union-attr]
        if fc.finalized_block_hash == ZERO_HASH:
            assert number < 200
        else:
            assert fc.finalized_block_hash == chain[200].block_hash and number >= 200
    assert len(engine.forkchoices) == 300  # one after each re-sent block, as the block flow


async def test_an_engine_at_the_head_gets_nothing_but_the_forkchoice() -> None:
    chain = await make_chain(5, finalized=3)
    engine = EmbeddedEngine()
    for payload in chain[1:]:
        await commit_block(engine, payload, None)
    stored = Stored(chain, 3)
    assert await resync(engine, stored) == 0
    assert stored.reads == 2  # the finalized block and the head: no walk through the chain
    assert engine.forkchoice.finalized_block_hash == chain[3].block_hash


async def test_an_engine_ahead_on_a_block_never_stored_moves_back_to_the_stored_head() -> None:
    chain = await make_chain(4, finalized=0)
    engine = EmbeddedEngine()
    for payload in chain[1:]:
        await commit_block(engine, payload, None)
    orphan = await build_block(engine, chain[-1].block_hash, None, chain[-1].timestamp + 1)
    await commit_block(engine, orphan, None)  # committed, then the node died before storing
    assert engine.head_number == 5
    assert await resync(engine, Stored(chain, 0)) == 0
    assert engine.head == chain[-1]


async def test_an_engine_that_has_part_of_the_chain_gets_the_rest(tmp_path: Path) -> None:
    chain = await make_chain(20, finalized=0)
    engine = EmbeddedEngine(path=tmp_path / "evm")
    for payload in chain[1:13]:
        await commit_block(engine, payload,
                           chain[10].block_hash if payload.block_number > 10 else None)
    engine.close()
    reopened = EmbeddedEngine(path=tmp_path / "evm")  # its state, as it was
    assert reopened.head == chain[12]
    assert await resync(reopened, Stored(chain, 10)) == 8
    assert reopened.head == chain[-1]
    assert reopened.forkchoice.finalized_block_hash == chain[10].block_hash
    reopened.close()


async def test_an_engine_on_another_chain_is_a_clear_error() -> None:
    chain = await make_chain(3, finalized=0)
    other = EmbeddedEngine(attrs.evolve(dev_genesis(), timestamp=7))
    with pytest.raises(EngineError, match=r"lacks the stored genesis .* another chain"):
        await resync(other, Stored(chain, 0))


async def test_a_stored_block_the_engine_refuses_is_a_clear_error() -> None:
    chain = await make_chain(3, finalized=0)
    forged = attrs.evolve(chain[2], block_hash=bytes(range(32)))
    with pytest.raises(PayloadStatusError, match="refuses stored block 2"):
        await resync(EmbeddedEngine(), Stored([*chain[:2], forged], 0))


# -- the EngineActor over a stored chain ----------------------------------------------------------


def config(**overrides: Any) -> dict[str, Any]:
    return {"slot_duration_ms": 2000, "bits": BITS, "max_blocks_without_pow": 50, **overrides}


async def produce(clock: Clock) -> Any:
    clock.next_slot()
    return await otp.call("chain", c.ProduceNow())


async def finalize(clock: Clock) -> Any:
    """Mine the unfinalized range, queue it, produce the block that carries it."""
    st = await otp.call("chain", c.GetStatus())
    unfinalized = await otp.call("chain", c.GetUnfinalized())
    work = rules.make_work(unfinalized, st.bits, 121212, bytes(20), st.last_pow)
    header = rules.check_submission(work, mine_auxpow(work.hash, 121212, work.bits).to_bytes())
    assert await otp.call("chain", c.QueuePow(header)) is None
    return await produce(clock)


async def embedded() -> EmbeddedEngine:
    return (await otp.get_state("engine")).embedded  # type: ignore[attr-defined,no-any-return]


async def test_boot_after_finalization_without_the_engine_state_regression(
    tmp_path: Path
) -> None:
    """The EVM's database gone (as an execution client that lost its data directory): the
    boot re-sends the whole stored chain and names the finalized block only once the engine
    has it, instead of failing every boot with -38002."""
    clock = Clock()
    async with otp.runtime():
        await start_chain(tmp_path, config(), clock)
        for _ in range(4):
            await produce(clock)
        await finalize(clock)
        for _ in range(3):
            await produce(clock)
        before = await otp.call("chain", c.GetStatus())
        assert (before.head.height, before.finalized.height) == (8, 4)
        await stop_actors("chain", "engine", "storage")
    shutil.rmtree(tmp_path / "evm")
    async with otp.runtime():
        await start_chain(tmp_path, config(), clock)
        engine = await embedded()
        assert engine.head_number == 8
        finalized = await otp.call("storage", s.GetBlock(before.finalized.hash))
        assert engine.forkchoice.finalized_block_hash == (
            finalized.message.execution_payload.block_hash)
        assert (await produce(clock)).height == 9
        await stop_actors("chain", "engine", "storage")


async def test_the_evm_state_survives_a_restart_and_nothing_is_replayed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    clock = Clock()
    async with otp.runtime():
        await start_chain(tmp_path, config(), clock)
        for _ in range(5):
            await produce(clock)
        await finalize(clock)  # #6 finalizes #1..#5
        for _ in range(4):
            await produce(clock)
        head = (await embedded()).head
        await stop_actors("chain", "engine", "storage")
        caplog.set_level(logging.INFO, logger="alys.engine")
        await start_chain(tmp_path, config(), clock)
        engine = await embedded()
        assert engine.head == head and engine.head_number == 10
        assert any("at block #10, 0 re-sent" in r.getMessage() for r in caplog.records)
        assert (await produce(clock)).height == 11
        await stop_actors("chain", "engine", "storage")


async def test_an_evm_database_of_another_genesis_is_a_clear_boot_error(tmp_path: Path) -> None:
    other = EmbeddedEngine(attrs.evolve(dev_genesis(), timestamp=5), path=tmp_path / "evm")
    other.close()
    async with otp.runtime():
        await otp.start(StorageActor, str(tmp_path / "chain"), name="storage")
        with pytest.raises(EngineSetupError, match="made from another genesis"):
            await otp.start(EngineActor, None, config(), data_dir=str(tmp_path),
                            name="engine")
        await stop_actors("storage")


async def test_an_engine_that_lost_its_blocks_gets_them_again_and_production_goes_on(
    tmp_path: Path
) -> None:
    clock = Clock()
    async with otp.runtime():
        await start_chain(tmp_path, config(), clock)
        for _ in range(3):
            await produce(clock)
        actor = await otp.get_state("engine")
        fresh = EmbeddedEngine()  # as if the execution client restarted with no data
        actor.engine = actor.embedded = fresh  # type: ignore[attr-defined]
        ref = await produce(clock)  # the build answers SYNCING: re-send, then build
        assert ref.height == 4
        assert (await embedded()).head_number == 4
        await stop_actors("chain", "engine", "storage")


@pytest.mark.real_clock
async def test_over_the_engine_api_a_restarted_client_is_brought_back(tmp_path: Path) -> None:
    secret_file = tmp_path / "jwt.hex"
    secret_file.write_text(SECRET.hex())
    el = EmbeddedEngine()
    node = NodeConfig(data_dir=str(tmp_path)).as_mapping()["node"]
    chain_cfg = {**node["chain"], "bits": BITS}
    async with engine_server(SECRET, engine=el) as url:
        engine_cfg = {**node["engine"], "kind": "http", "url": url,
                      "jwt_secret_path": str(secret_file)}
        clock = Clock()
        async with otp.runtime():
            await otp.start(StorageActor, str(tmp_path / "chain"), name="storage")
            await otp.start(EngineActor, engine_cfg, chain_cfg, name="engine")
            await otp.start(ChainActor, chain_cfg, str(tmp_path), produce=False, name="chain",
                            clock=clock)
            for _ in range(3):
                await produce(clock)
            await finalize(clock)
            assert el.head_number == 4
            # the execution client restarts with an empty data directory
            el.__init__(el.config)  # type: ignore[misc]
            assert el.head_number == 0
            ref = await produce(clock)
            assert ref.height == 5 and el.head_number == 5
            assert el.forkchoice.finalized_block_hash != ZERO_HASH
            # and a node restarted against it finds it where it is
            await stop_actors("chain", "engine")
            el.__init__(el.config)  # type: ignore[misc]
            await otp.start(EngineActor, engine_cfg, chain_cfg, name="engine")
            assert el.head_number == 5
            await stop_actors("engine", "storage")
