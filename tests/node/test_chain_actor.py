"""The ChainActor in process, beside a real StorageActor (LevelDB in tmp_path) and the embedded
EngineActor: production driven by ProduceNow on a settable clock, pausing past
max_blocks_without_pow, finalization by a queued PoW, refused imports, and restarts."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio

import otp
from node.crypto import bls
from node.execution.embedded import EmbeddedEngine
from node.messages import chain as c
from node.messages import engine as e
from node.messages import storage as s
from node.types.chain import AggregateApproval, AuxPowHeader, BlockRef, SignedConsensusBlock
from node.workflows import chain as rules
from node.workflows.auxpow import mine_auxpow

from .factories import Clock, authority_keys, payload, start_chain, stop_actors

BITS = 0x207FFFFF
CHAIN_ID = 121212
FEE_RECIPIENT = bytes.fromhex("000000000000000000000000000000000000dEaD")


def config(**overrides: Any) -> dict[str, Any]:
    return {"slot_duration_ms": 2000, "bits": BITS, "max_blocks_without_pow": 20, **overrides}


async def status() -> c.ChainStatus:
    return await otp.call("chain", c.GetStatus())  # type: ignore[no-any-return]


async def produce(clock: Clock) -> BlockRef | None:
    clock.next_slot()
    return await otp.call("chain", c.ProduceNow())  # type: ignore[no-any-return]


async def engine() -> EmbeddedEngine:
    actor = await otp.get_state("engine")
    return actor.embedded  # type: ignore[attr-defined,no-any-return]


async def block(ref_or_hash: BlockRef | bytes) -> SignedConsensusBlock:
    h = ref_or_hash.hash if isinstance(ref_or_hash, BlockRef) else ref_or_hash
    found = await otp.call("storage", s.GetBlock(h))
    assert found is not None
    return found  # type: ignore[no-any-return]


async def mined_header() -> AuxPowHeader:
    """What a miner would submit for the current unfinalized range."""
    unfinalized = await otp.call("chain", c.GetUnfinalized())
    work = rules.make_work(unfinalized, (await status()).bits, CHAIN_ID, FEE_RECIPIENT)
    return rules.check_submission(work, mine_auxpow(work.hash, CHAIN_ID, work.bits).to_bytes())


async def test_genesis_then_blocks_extend_the_head_and_are_stored(tmp_path: Path) -> None:
    clock = Clock()
    async with otp.runtime():
        await start_chain(tmp_path, config(), clock)
        st = await status()
        genesis = await block(st.head)
        assert st.head.height == 0 and st.finalized == st.head
        assert (st.synced, st.paused, st.authority_index, st.authorities) == (True, False, 0, 1)
        assert genesis.message.auxpow_header is not None
        assert genesis.message.auxpow_header.bits == BITS
        assert genesis.message.auxpow_header.chain_id == CHAIN_ID
        assert genesis.message.execution_payload == (await engine()).genesis

        parent = genesis
        for height in (1, 2, 3):
            ref = await produce(clock)
            assert ref is not None and ref.height == height
            assert (await status()).head == ref
            assert await otp.call("storage", s.GetHead()) == ref
            stored = await otp.call("storage", s.GetBlockByHeight(height))
            assert stored.hash() == ref.hash
            assert stored.message.parent_hash == parent.hash()
            assert stored.message.slot == clock.ms // clock.duration
            assert stored.message.auxpow_header is None
            assert stored.signature.bitfield == 1
            payload_ = stored.message.execution_payload
            assert payload_.parent_hash == parent.message.execution_payload.block_hash
            assert (await engine()).forkchoice.head_block_hash == payload_.block_hash
            parent = stored
        # the same slot again: nothing new
        assert await otp.call("chain", c.ProduceNow()) is None
        assert (await status()).head.height == 3
        unfinalized = await otp.call("chain", c.GetUnfinalized())
        assert [r.height for r in unfinalized] == [1, 2, 3]
        assert (await status()).finalized.height == 0
        await stop_actors("chain", "engine", "storage")


async def test_only_the_slots_author_produces(tmp_path: Path) -> None:
    keys = authority_keys(2)
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "authority.key").write_text(keys[1].to_bytes().hex())
    authorities = [k.public_key().to_bytes().hex() for k in keys]
    clock = Clock(slot=101)  # the next slot, 102, is authority 0's
    async with otp.runtime():
        await start_chain(tmp_path, config(authorities=authorities), clock)
        st = await status()
        assert (st.authority_index, st.authorities) == (1, 2)
        assert await produce(clock) is None
        assert (await status()).head.height == 0
        await stop_actors("chain", "engine", "storage")


async def test_not_an_authority_never_produces(tmp_path: Path) -> None:
    others = [k.public_key().to_bytes().hex() for k in authority_keys(3)]
    clock = Clock()
    async with otp.runtime():
        await start_chain(tmp_path, config(authorities=others), clock)
        assert (await status()).authority_index is None
        for _ in range(3):
            assert await produce(clock) is None
        assert (await status()).head.height == 0
        await stop_actors("chain", "engine", "storage")


async def test_production_pauses_past_max_blocks_without_pow_and_resumes_with_pow(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="alys.chain")
    clock = Clock()
    async with otp.runtime():
        await start_chain(tmp_path, config(max_blocks_without_pow=3), clock)
        for _ in range(3):
            assert await produce(clock) is not None
        assert await produce(clock) is None
        assert await produce(clock) is None
        st = await status()
        assert st.paused and st.head.height == 3
        paused = [r for r in caplog.records if "production paused" in r.getMessage()]
        assert len(paused) == 1, "one log line for the pause, not one per slot"
        assert paused[0].levelno == logging.WARNING
        assert "#3" in paused[0].getMessage()
        assert "max_blocks_without_pow=3" in paused[0].getMessage()

        header = await mined_header()
        assert await otp.call("chain", c.QueuePow(header)) is None
        assert (await status()).queued_pow == header
        ref = await produce(clock)
        assert ref is not None and ref.height == 4
        assert any("production resumes" in r.getMessage() for r in caplog.records)
        st = await status()
        assert not st.paused and st.queued_pow is None
        await stop_actors("chain", "engine", "storage")


async def test_a_queued_pow_is_carried_by_the_next_block_and_finalizes_its_range(
    tmp_path: Path
) -> None:
    clock = Clock()
    async with otp.runtime():
        await start_chain(tmp_path, config(), clock)
        refs = [await produce(clock) for _ in range(3)]
        header = await mined_header()
        assert (header.range_start, header.range_end) == (refs[0].hash, refs[-1].hash)
        assert await otp.call("chain", c.QueuePow(header)) is None

        carrier_ref = await produce(clock)
        assert carrier_ref is not None and carrier_ref.height == 4
        carrier = await block(carrier_ref)
        assert carrier.message.auxpow_header == header
        st = await status()
        assert st.finalized == refs[-1]
        assert st.queued_pow is None
        assert await otp.call("storage", s.GetFinalized()) == refs[-1]
        assert await otp.call("storage", s.GetLatestAuxPow()) == carrier_ref
        assert await otp.call("storage", s.GetAuxPowBlock(4)) == carrier
        finalized_payload = (await block(refs[-1])).message.execution_payload.block_hash
        fc = (await engine()).forkchoice
        assert fc.finalized_block_hash == fc.safe_block_hash == finalized_payload
        assert fc.head_block_hash == carrier.message.execution_payload.block_hash
        # the unfinalized range now starts after #3
        assert [r.height for r in await otp.call("chain", c.GetUnfinalized())] == [4]

        # a PoW for a range that is already finalized is refused
        problem = await otp.call("chain", c.QueuePow(header))
        assert isinstance(problem, rules.BlockError) and problem.rule == "auxpow-range"
        # so is one whose range does not end at an unfinalized block
        stray = attrs.evolve(await mined_header(), range_end=bytes(32))
        problem = await otp.call("chain", c.QueuePow(stray))
        assert isinstance(problem, rules.BlockError) and problem.rule == "auxpow-range"
        # the next blocks build on, the following PoW finalizes #4..#5
        await produce(clock)
        second = await mined_header()
        assert await otp.call("chain", c.QueuePow(second)) is None
        await produce(clock)
        assert (await status()).finalized.height == 5
        await stop_actors("chain", "engine", "storage")


async def _node_block(clock: Clock, **changes: Any) -> SignedConsensusBlock:
    """A block on the head as this node would produce it (payload built by the engine,
    signed with the node's key), with ``changes`` applied to the unsigned block and
    re-signed."""
    actor = await otp.get_state("chain")
    head: SignedConsensusBlock = actor.state.head  # type: ignore[attr-defined]
    fin_payload = actor.state.finalized_payload  # type: ignore[attr-defined]
    slot = clock.ms // clock.duration
    built = await otp.call("engine", e.BuildPayload(
        head=head.message.execution_payload.block_hash,
        finalized=fin_payload,
        timestamp=head.message.execution_payload.timestamp + 1,
        fee_recipient=FEE_RECIPIENT,
    ))
    unsigned = attrs.evolve(rules.new_block(head, slot, built, None), **changes)
    return rules.sign_block(unsigned, actor.key, 0)  # type: ignore[attr-defined]


async def test_import_of_a_bad_block_returns_a_block_error_and_changes_nothing(
    tmp_path: Path
) -> None:
    clock = Clock()
    async with otp.runtime():
        await start_chain(tmp_path, config(), clock)
        await produce(clock)
        await produce(clock)
        clock.next_slot()
        before = await status()
        fc_before = (await engine()).forkchoice
        head = await block(before.head)
        genesis = await otp.call("storage", s.GetBlockByHeight(0))

        stranger = bls.SecretKey.from_seed(b"\x42" * 32)
        good = await _node_block(clock)
        bad: list[tuple[str, SignedConsensusBlock]] = [
            ("signature", rules.sign_block(good.message, stranger, 0)),
            ("author", attrs.evolve(good, signature=AggregateApproval(
                0, good.signature.signature))),
            ("fork", rules.sign_block(attrs.evolve(good.message, parent_hash=genesis.hash()),
                                      stranger, 0)),
            ("slot", await _node_block(clock, slot=head.message.slot)),
            ("future-slot", await _node_block(clock, slot=clock.ms // clock.duration + 5)),
            ("payload-parent", await _node_block(clock, execution_payload=payload(
                3, genesis.message.execution_payload.block_hash))),
            ("height", await _node_block(clock, execution_payload=attrs.evolve(
                good.message.execution_payload, block_number=7))),
        ]
        for rule, signed in bad:
            answer = await otp.call("chain", c.ImportBlock(signed))
            assert isinstance(answer, rules.BlockError), (rule, answer)
            assert answer.rule == rule
            assert await status() == before
            assert await otp.call("storage", s.GetHead()) == before.head
            assert await otp.call("storage", s.GetBlock(signed.hash())) is None
            assert (await engine()).forkchoice == fc_before

        # the good one imports (as a block from elsewhere would)
        ref = await otp.call("chain", c.ImportBlock(good))
        assert ref == good.ref()
        assert (await status()).head == ref
        await stop_actors("chain", "engine", "storage")


async def test_import_of_a_payload_the_engine_refuses_is_a_block_error(tmp_path: Path) -> None:
    clock = Clock()
    async with otp.runtime():
        await start_chain(tmp_path, config(), clock)
        await produce(clock)
        clock.next_slot()
        before = await status()
        good = await _node_block(clock)
        # consensus checks pass (number, parent hash), but the block hash is wrong
        forged = attrs.evolve(good.message.execution_payload, block_hash=bytes(range(32)))
        actor = await otp.get_state("chain")
        signed = rules.sign_block(attrs.evolve(good.message, execution_payload=forged),
                                  actor.key, 0)  # type: ignore[attr-defined]
        answer = await otp.call("chain", c.ImportBlock(signed))
        assert isinstance(answer, rules.BlockError) and answer.rule == "payload"
        assert "block hash mismatch" in answer.message
        assert await status() == before
        assert (await engine()).forkchoice.head_block_hash == (
            good.message.execution_payload.parent_hash)
        assert otp.whereis("engine") is not None and otp.whereis("chain") is not None
        assert await otp.call("storage", s.GetBlock(signed.hash())) is None
        # and the chain goes on
        assert await otp.call("chain", c.ImportBlock(good)) == good.ref()
        await stop_actors("chain", "engine", "storage")


async def test_restart_resumes_from_storage(tmp_path: Path) -> None:
    clock = Clock()
    async with otp.runtime():
        await start_chain(tmp_path, config(), clock)
        key = (await otp.get_state("chain")).key  # type: ignore[attr-defined]
        for _ in range(3):
            await produce(clock)
        assert await otp.call("chain", c.QueuePow(await mined_header())) is None
        await produce(clock)
        await produce(clock)
        before = await status()
        assert (before.head.height, before.finalized.height) == (5, 3)
        fc_before = (await engine()).forkchoice
        await stop_actors("chain", "engine", "storage")

        await start_chain(tmp_path, config(), clock)
        after = await status()
        assert after.head == before.head and after.finalized == before.finalized
        assert after.bits == before.bits
        assert (await otp.get_state("chain")).key == key  # type: ignore[attr-defined]
        restored = await engine()
        assert restored.head_number == 5
        assert restored.forkchoice.head_block_hash == fc_before.head_block_hash
        ref = await produce(clock)
        assert ref is not None and ref.height == 6
        assert (await block(ref)).message.parent_hash == before.head.hash
        # the engine killed (no snapshot at shutdown): its state is replayed from the blocks
        await stop_actors("chain")
        otp.exit("engine", "kill")
        while otp.whereis("engine") is not None:
            await trio.sleep(0.01)
        await stop_actors("storage")
        await start_chain(tmp_path, config(), clock)
        assert (await status()).head == ref
        assert (await engine()).head_number == 6
        assert (await produce(clock)).height == 7  # type: ignore[union-attr]
        await stop_actors("chain", "engine", "storage")


async def test_a_pow_for_a_target_that_changed_is_refused_or_dropped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # With the default retargeting (interval 60 / 5 = 12 blocks) the bits change at head 12:
    # work handed out at head 11 is stale once block 12 is in.
    caplog.set_level(logging.INFO, logger="alys.chain")
    clock = Clock()
    async with otp.runtime():
        await start_chain(tmp_path, config(), clock)
        for _ in range(11):
            await produce(clock)
        stale = await mined_header()
        assert await otp.call("chain", c.QueuePow(stale)) is None
        clock.next_slot()
        imported = await _node_block(clock)  # a block without the PoW, from elsewhere
        assert await otp.call("chain", c.ImportBlock(imported)) == imported.ref()
        st = await status()
        assert st.bits != stale.bits and st.queued_pow == stale
        # submitted again now, it is refused with the rule named...
        problem = await otp.call("chain", c.QueuePow(stale))
        assert isinstance(problem, rules.BlockError) and problem.rule == "auxpow-bits"
        assert "stale" in problem.message
        # ...and the queued copy is dropped by the next production, which goes on without it
        ref = await produce(clock)
        assert ref is not None and ref.height == 13
        assert (await block(ref)).message.auxpow_header is None
        assert any("queued AuxPoW for #11 dropped" in r.getMessage() for r in caplog.records)
        st = await status()
        assert st.queued_pow is None and st.finalized.height == 0
        # fresh work at the new target finalizes
        assert await otp.call("chain", c.QueuePow(await mined_header())) is None
        await produce(clock)
        assert (await status()).finalized.height == 13
        await stop_actors("chain", "engine", "storage")
