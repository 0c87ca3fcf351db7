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
from node.config import ChainConfig, structure_section
from node.errors import StorageRequestError
from node.execution.embedded import EmbeddedEngine
from node.integration.engine import build_block, commit_block
from node.messages import bridge as bridge_msgs
from node.messages import chain as c
from node.messages import storage as s
from node.types.chain import SignedConsensusBlock
from node.types.execution import Withdrawal
from node.workflows import chain as rules
from node.workflows.chain import GWEI_PER_SAT, BlockError, PegIn

from .sync_helpers import CHAIN_CFG, CHAIN_N, DURATION_MS, FIRST_SLOT, KEY, built_chain

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


# -- peg-ins inside one batch --------------------------------------------------------------------

PEGIN = PegIn(txid=b"\x11" * 32, block_hash=b"\x22" * 32, evm_address=b"\x33" * 20,
              amount_sats=50_000)
CLAIM = (PEGIN.txid, PEGIN.block_hash)


class StandInBridge(otp.GenServer):
    """Stands in for the BridgeActor (which needs Bitcoin): it has seen PEGIN confirmed and
    nothing else, and records what the chain tells it was credited."""

    async def init(self) -> None:
        await trio.lowlevel.checkpoint()
        self.credited: list[bridge_msgs.PegInsCredited] = []

    async def handle_call(self, request: Any, from_: otp.From) -> Any:
        await trio.lowlevel.checkpoint()
        if isinstance(request, bridge_msgs.VerifyPegIns):
            return bridge_msgs.PegInVerdict(
                {c: PEGIN for c in request.claimed if c == CLAIM},
                {c: "not confirmed" for c in request.claimed if c != CLAIM})
        if request == "credited":
            return list(self.credited)
        raise otp.UnexpectedMessage(self, "call", request)

    async def handle_cast(self, msg: Any) -> None:
        await trio.lowlevel.checkpoint()
        self.credited.append(msg)


async def _pegin_chain(genesis: SignedConsensusBlock) -> list[SignedConsensusBlock]:
    """Blocks 1 and 2 on ``genesis``, each crediting PEGIN (the second a double credit)."""
    cfg: ChainConfig = structure_section(CHAIN_CFG, ChainConfig, "chain")
    engine = EmbeddedEngine()
    assert engine.genesis_hash == genesis.message.execution_payload.block_hash
    credit = Withdrawal(0, 0, PEGIN.evm_address, PEGIN.amount_sats * GWEI_PER_SAT)
    recipient = bytes.fromhex(cfg.fee_recipient.removeprefix("0x"))
    finalized = engine.genesis_hash
    blocks = [genesis]
    for height in (1, 2):
        parent = blocks[-1]
        slot = FIRST_SLOT + height
        timestamp = rules.payload_timestamp(slot, DURATION_MS,
                                            parent.message.execution_payload.timestamp)
        assert timestamp is not None
        payload = await build_block(engine, parent.message.execution_payload.block_hash,
                                    finalized, timestamp, recipient, [credit])
        await commit_block(engine, payload, finalized)
        blocks.append(rules.sign_block(rules.new_block(parent, slot, payload, None, [CLAIM]),
                                       KEY, 0))
    engine.close()
    return blocks


async def test_a_peg_in_credited_twice_within_one_batch_is_refused(
    tmp_path: Path, blocks: Chain
) -> None:
    """The credited-peg-in index lives in storage, which a batch reaches only at its end: a
    block crediting a peg-in an earlier block of the same batch credited is refused all the
    same, and the blocks before it are kept."""
    pegged = await _pegin_chain(blocks[0])
    async with otp.runtime():
        bridge = await otp.start(StandInBridge, name="bridge")
        await start(tmp_path)
        answer = await otp.call("chain", c.ImportBlocks(tuple(pegged[1:]),
                                                        signatures_verified=False))
        assert answer.count == 1 and answer.head == pegged[1].ref()
        assert isinstance(answer.error, BlockError) and answer.error.rule == "pegins"
        assert "credited already, by block #1" in str(answer.error)
        assert await otp.call("storage", s.GetHead()) == pegged[1].ref()
        credited = await otp.call(bridge, "credited")
        assert [(m.claimed, m.height) for m in credited] == [((CLAIM,), 1)]
        # alone, it is refused by the stored index, as before
        answer = await otp.call("chain", c.ImportBlocks(tuple(pegged[2:]),
                                                        signatures_verified=False))
        assert answer.count == 0 and isinstance(answer.error, BlockError)
        assert answer.error.rule == "pegins"


async def test_a_block_with_peg_outs_is_imported_only_first_in_a_call(
    tmp_path: Path, blocks: Chain
) -> None:
    """The federation checks peg-out fields against the chain it has followed, so the batch
    stops (without an error) before a block carrying them; the next call starts with it and
    checks it (here no federation runs: it cannot be checked)."""
    carrier = rules.sign_block(attrs.evolve(blocks[3].message,
                                            pegout_payment_proposal=b"\x01\x02"), KEY, 0)
    async with otp.runtime():
        await start(tmp_path)
        answer = await otp.call("chain", c.ImportBlocks(
            (blocks[1], blocks[2], carrier, blocks[4]), signatures_verified=False))
        assert answer == c.ImportedBlocks(2, blocks[2].ref(), None)
        answer = await otp.call("chain", c.ImportBlocks((carrier,), signatures_verified=False))
        assert answer.count == 0 and isinstance(answer.error, BlockError)
        assert answer.error.rule == "pegouts-unverifiable"
        answer = await otp.call("chain", c.ImportBlocks(blocks[3:6], signatures_verified=True))
        assert answer == c.ImportedBlocks(3, blocks[5].ref(), None)
