"""The ChainActor's ``ImportBlocks`` (sync's import): real storage, the embedded EVM, a chain
of real blocks. Every block is validated and executed on the one before it, then all of them
up to the first refused one are stored in one batch (``PutBlocks``) and only then adopted and
announced; a batch the storage does not take leaves the chain where it was, and the next
import carries on from the stored head."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import attrs
import pytest
import trio

import otp
from node.actors.chain import ChainActor
from node.actors.engine import EngineActor
from node.actors.storage import StorageActor
from node.errors import StorageRequestError
from node.messages import chain as c
from node.messages import storage as s
from node.types.chain import SignedConsensusBlock
from node.workflows.chain import BlockError

from .sync_helpers import CHAIN_CFG, CHAIN_N, built_chain

BLOCKS = 40
Chain = tuple[SignedConsensusBlock, ...]


@pytest.fixture(scope="module")
def blocks() -> Chain:
    """Genesis and BLOCKS blocks (built outside the tests' Trio run)."""
    return built_chain(CHAIN_N)[:BLOCKS + 1]


class RefusingStorage(StorageActor):
    """A StorageActor that refuses the first ``refuse`` PutBlocks it gets (fault
    injection: a write that fails after the engine executed the batch)."""

    async def init(self, path: str, refuse: int = 0) -> None:
        await super().init(path)
        self.refuse = refuse

    async def handle_call(self, request: Any, from_: otp.From) -> Any:
        if isinstance(request, s.PutBlocks) and self.refuse > 0:
            self.refuse -= 1
            return s.Refused(StorageRequestError("injected: the disk is full"))
        return await super().handle_call(request, from_)


class Watcher(otp.GenServer):
    """Records each BlockImported's height with the storage's head height when it came."""

    async def init(self) -> None:
        await trio.lowlevel.checkpoint()
        self.seen: list[tuple[int, int]] = []
        otp.bus.subscribe(c.BLOCKS_TOPIC)

    async def handle_info(self, msg: Any) -> None:
        assert isinstance(msg, c.BlockImported)
        stored = await otp.call("storage", s.GetHead())
        assert stored is not None
        self.seen.append((msg.ref.height, stored.height))

    async def handle_call(self, request: Any, from_: otp.From) -> Any:
        await trio.lowlevel.checkpoint()
        return list(self.seen)


async def start(data: Path, refuse: int = 0) -> None:
    await otp.start(RefusingStorage, str(data / "chain"), refuse, name="storage")
    await otp.start(EngineActor, None, CHAIN_CFG, data_dir=str(data), name="engine")
    await otp.start(ChainActor, CHAIN_CFG, str(data), produce=False, name="chain")


async def stats() -> s.StorageStats:
    answer: s.StorageStats = await otp.call("storage", s.GetStats())
    return answer


async def test_a_batch_is_stored_in_one_write_and_announced_after_it(
    tmp_path: Path, blocks: Chain
) -> None:
    async with otp.runtime():
        await start(tmp_path)
        watcher = await otp.start(Watcher)
        before = (await stats()).blocks_written
        answer = await otp.call("chain", c.ImportBlocks(blocks[1:25], signatures_verified=True))
        assert answer == c.ImportedBlocks(24, blocks[24].ref(), None)
        assert (await stats()).blocks_written == before + 1  # one batch
        assert await otp.call("storage", s.GetHead()) == blocks[24].ref()
        seen = await otp.call(watcher, "seen")
        assert [height for height, _ in seen] == list(range(1, 25))
        assert all(stored == 24 for _, stored in seen)  # announced once all were stored
        # signatures checked here this time: all good, the rest of the chain in one call
        answer = await otp.call("chain", c.ImportBlocks(blocks[25:], signatures_verified=False))
        assert answer.count == BLOCKS - 24 and answer.error is None
        assert (await otp.call("chain", c.GetStatus())).head == blocks[-1].ref()


async def test_a_refused_block_stops_the_batch_and_the_blocks_before_it_are_kept(
    tmp_path: Path, blocks: Chain
) -> None:
    bad = attrs.evolve(blocks[8], signature=blocks[9].signature)  # not its signature
    async with otp.runtime():
        await start(tmp_path)
        answer = await otp.call("chain", c.ImportBlocks(
            (*blocks[1:8], bad, *blocks[9:12]), signatures_verified=False))
        assert answer.count == 7 and answer.head == blocks[7].ref()
        assert isinstance(answer.error, BlockError) and answer.error.rule == "signature"
        assert await otp.call("storage", s.GetHead()) == blocks[7].ref()
        assert await otp.call("storage", s.GetBlock(bad.hash())) is None
        # a block that does not extend the head stops the batch before anything is run
        answer = await otp.call("chain", c.ImportBlocks(blocks[9:12],
                                                        signatures_verified=True))
        assert answer.count == 0 and isinstance(answer.error, BlockError)
        assert answer.error.rule == "fork"
        answer = await otp.call("chain", c.ImportBlocks(blocks[8:12],
                                                        signatures_verified=True))
        assert answer == c.ImportedBlocks(4, blocks[11].ref(), None)


async def test_a_batch_the_storage_refuses_leaves_the_chain_where_it_was(
    tmp_path: Path, blocks: Chain
) -> None:
    async with otp.runtime():
        await start(tmp_path, refuse=1)
        answer = await otp.call("chain", c.ImportBlocks(blocks[1:17], signatures_verified=True))
        assert answer.count == 0 and answer.head == blocks[0].ref()
        assert isinstance(answer.error, StorageRequestError)
        status = await otp.call("chain", c.GetStatus())
        assert status.head == blocks[0].ref()  # nothing adopted: nothing was stored
        assert await otp.call("storage", s.GetHead()) == blocks[0].ref()
        # The engine executed the 16 blocks (it is ahead of the store); the same blocks
        # again are imported from the stored head
        answer = await otp.call("chain", c.ImportBlocks(blocks[1:17], signatures_verified=True))
        assert answer == c.ImportedBlocks(16, blocks[16].ref(), None)
        answer = await otp.call("chain", c.ImportBlocks(blocks[17:], signatures_verified=True))
        assert answer.count == BLOCKS - 16 and answer.error is None
        assert await otp.call("storage", s.GetHead()) == blocks[-1].ref()
