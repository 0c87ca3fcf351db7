"""One fault, one restart: the ChainActor beside a StorageActor that its supervisor restarts.
The chain actor never crashes for the storage's fault, skips slots while the storage is away,
learns after a failed write whether the block made it, and keeps its queued AuxPoW across its
own restart (it is persisted)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, ClassVar

import pytest
import trio

import otp
from node.actors import sibling
from node.actors.chain import ChainActor
from node.actors.engine import EngineActor
from node.actors.storage import StorageActor
from node.messages import chain as c
from node.messages import storage as s
from node.workflows import chain as rules
from node.workflows.auxpow import mine_auxpow

from .factories import Clock, stop_actors

BITS = 0x207FFFFF
CONFIG = {"slot_duration_ms": 2000, "bits": BITS, "max_blocks_without_pow": 50}


class FlakyStorage(StorageActor):
    """A StorageActor that can be told to die the next times it handles a PutBlock: before
    the write, or right after it (the batch is on disk, the reply never leaves)."""

    deaths: ClassVar[list[str]] = []  # "before" / "after", one per death to come

    async def handle_call(self, request: Any, from_: otp.From) -> Any:
        if isinstance(request, s.PutBlock) and FlakyStorage.deaths:
            when = FlakyStorage.deaths.pop(0)
            if when == "after":
                await super().handle_call(request, from_)
            raise RuntimeError(f"storage died {when} the write")
        return await super().handle_call(request, from_)


async def start_node(tmp_path: Path, clock: Clock, storage_cls: type[StorageActor] = StorageActor,
                     backoff: float = 0.5) -> None:
    spec = otp.ChildSpec("storage", storage_cls, args=(str(tmp_path / "chain"),), name="storage")
    await otp.start(otp.Supervisor, children=[spec], strategy=otp.ONE_FOR_ONE, intensity=10,
                    period=300.0, backoff=otp.Backoff(otp.BackoffKind.FIXED, initial=backoff),
                    name="storage_sup")
    await otp.start(EngineActor, None, CONFIG, name="engine")
    await otp.start(ChainActor, CONFIG, str(tmp_path), produce=False, name="chain", clock=clock)


async def produce(clock: Clock) -> Any:
    clock.next_slot()
    return await otp.call("chain", c.ProduceNow(), timeout=30)


async def status() -> c.ChainStatus:
    return await otp.call("chain", c.GetStatus())  # type: ignore[no-any-return]


async def until_back(name: str) -> None:
    while otp.whereis(name) is None:
        await trio.sleep(0.05)


async def test_slots_are_skipped_while_the_storage_restarts(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="alys.chain")
    clock = Clock()
    async with otp.runtime():
        await start_node(tmp_path, clock, backoff=30.0)
        chain = otp.whereis("chain")
        assert (await produce(clock)).height == 1
        otp.kill("storage")
        await trio.sleep(1)  # the supervisor waits 30 s before restarting it
        assert otp.whereis("storage") is None
        for _ in range(3):
            assert await produce(clock) is None
        assert (await status()).head.height == 1  # the chain actor answers from memory
        skipped = [r for r in caplog.records if "skipped: storage is restarting" in r.message]
        assert len(skipped) == 1  # one line per outage, not one per slot
        await until_back("storage")
        assert (await produce(clock)).height == 2
        assert any("storage is back" in r.getMessage() for r in caplog.records)
        assert otp.whereis("chain") == chain  # never restarted
        await stop_actors("chain", "engine", "storage_sup")


@pytest.mark.parametrize("when", ["before", "after"])
async def test_a_block_whose_write_failed_is_adopted_only_if_stored(
    tmp_path: Path, when: str
) -> None:
    clock = Clock()
    FlakyStorage.deaths.clear()
    async with otp.runtime():
        await start_node(tmp_path, clock, FlakyStorage)
        chain = otp.whereis("chain")
        await produce(clock)
        # the storage dies twice on the next write (the chain actor retries once)
        FlakyStorage.deaths[:] = [when, when]
        answer = await produce(clock)
        assert isinstance(answer, otp.OtpError)  # the slot's error, not a crash
        assert (await status()).head.height == 1  # unknown yet: still the stored head
        await until_back("storage")
        stored = await sibling.call_storage(s.GetHead())
        assert stored.height == (2 if when == "after" else 1)
        ref = await produce(clock)
        assert ref.height == stored.height + 1
        assert (await sibling.call_storage(s.GetBlock(ref.hash))).message.parent_hash == stored.hash
        assert (await status()).head == ref
        assert otp.whereis("chain") == chain
        await stop_actors("chain", "engine", "storage_sup")


async def test_a_storage_crash_during_a_write_is_ridden_out_by_one_retry(tmp_path: Path) -> None:
    clock = Clock()
    FlakyStorage.deaths.clear()
    async with otp.runtime():
        await start_node(tmp_path, clock, FlakyStorage)
        await produce(clock)
        FlakyStorage.deaths[:] = ["after"]
        ref = await produce(clock)  # the retry writes the same batch again: one block
        assert ref.height == 2
        assert await sibling.call_storage(s.GetHead()) == ref == (await status()).head
        await stop_actors("chain", "engine", "storage_sup")


async def test_the_queued_pow_survives_a_restart_of_the_chain_actor(tmp_path: Path) -> None:
    clock = Clock()
    async with otp.runtime():
        await start_node(tmp_path, clock)
        for _ in range(3):
            await produce(clock)
        st = await status()
        assert st.last_pow is not None and st.last_pow.height == 0  # genesis carries one
        unfinalized = await otp.call("chain", c.GetUnfinalized())
        work = rules.make_work(unfinalized, st.bits, 121212, bytes(20), st.last_pow)
        header = rules.check_submission(work, mine_auxpow(work.hash, 121212, BITS).to_bytes())
        assert header.height == 1  # the carrying block (genesis) + 1
        assert await otp.call("chain", c.QueuePow(header)) is None
        otp.kill("chain")  # the chain actor dies with the PoW queued
        while otp.whereis("chain") is not None:
            await trio.sleep(0.01)
        await otp.start(ChainActor, CONFIG, str(tmp_path), produce=False, name="chain",
                        clock=clock)
        assert (await status()).queued_pow == header
        ref = await produce(clock)
        carrier = await sibling.call_storage(s.GetBlock(ref.hash))
        assert carrier.message.auxpow_header == header
        st = await status()
        assert st.finalized.height == 3 and st.queued_pow is None
        assert st.last_pow == ref
        assert (await sibling.call_storage(s.GetChainInfo())).queued_pow is None
        await stop_actors("chain", "engine", "storage_sup")
