"""StorageActor on LevelDB: batched imports, the indexes, reopening, corruption, kill -9."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import attrs
import plyvel
import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import otp
from node.actors import sibling
from node.actors import storage as store
from node.actors.storage import StorageActor
from node.errors import NodeError, StorageCorrupt, StorageRequestError
from node.messages import storage as s
from node.types.chain import BlockRef, SignedConsensusBlock

from .factories import chain

call = sibling.call_storage
ROOT = Path(__file__).resolve().parents[2]


async def test_blocks_heads_and_indexes(tmp_path: Path) -> None:
    blocks = chain(5, auxpow_at=(3,))
    async with otp.runtime():
        db = await otp.start(StorageActor, str(tmp_path / "db"))
        assert await otp.call(db, s.GetHead()) is None
        for i, block in enumerate(blocks):
            ref = await otp.call(db, s.PutBlock(
                block, head=True, finalized=block.ref() if i in (0, 3) else None,
                fees=i * 10))
            assert ref == block.ref()
        assert await otp.call(db, s.GetHead()) == blocks[4].ref()
        assert await otp.call(db, s.GetFinalized()) == blocks[3].ref()
        assert await otp.call(db, s.GetLatestAuxPow()) == blocks[3].ref()
        assert await otp.call(db, s.GetAuxPowBlock(3)) == blocks[3]
        assert await otp.call(db, s.GetAuxPowBlock(2)) is None
        assert await otp.call(db, s.GetBlockByHeight(2)) == blocks[2]
        assert await otp.call(db, s.GetBlock(blocks[1].hash())) == blocks[1]
        assert await otp.call(db, s.GetBlock(bytes(32))) is None
        assert await otp.call(db, s.GetFees(blocks[2].hash())) == 20
        await otp.stop(db)
        # reopened, everything is still there
        db = await otp.start(StorageActor, str(tmp_path / "db"))
        assert await otp.call(db, s.GetHead()) == blocks[4].ref()
        stats = await otp.call(db, s.GetStats())
        assert stats.head == blocks[4].ref() and stats.blocks_written == 0


async def test_a_block_off_the_head_is_stored_but_not_indexed(tmp_path: Path) -> None:
    blocks = chain(3)
    async with otp.runtime():
        db = await otp.start(StorageActor, str(tmp_path / "db"))
        await otp.call(db, s.PutBlock(blocks[0]))
        await otp.call(db, s.PutBlock(blocks[1], head=False))
        assert await otp.call(db, s.GetHead()) == blocks[0].ref()
        assert await otp.call(db, s.GetBlockByHeight(1)) is None
        assert await otp.call(db, s.GetBlock(blocks[1].hash())) == blocks[1]


async def test_an_auxpow_block_kept_aside_neither_moves_the_latest_pow_nor_clears_the_queue(
        tmp_path: Path) -> None:
    """A proposal the ChainActor keeps aside (``head=False``, not imported) may carry the
    queued AuxPoW: the latest AuxPoW block stays the canonical one and the PoW stays queued,
    until the block is imported."""
    blocks = chain(3, auxpow_at=(2,))
    async with otp.runtime():
        db = await otp.start(StorageActor, str(tmp_path / "db"))
        await otp.call(db, s.PutBlock(blocks[0]))
        await otp.call(db, s.PutBlock(blocks[1]))
        header = blocks[2].message.auxpow_header
        assert header is not None
        await otp.call(db, s.PutQueuedPow(header))
        await otp.call(db, s.PutBlock(blocks[2], head=False))
        info = await otp.call(db, s.GetChainInfo())
        assert info.last_pow == blocks[0].ref() and info.queued_pow == header
        assert await otp.call(db, s.GetAuxPowBlock(2)) is None
        await otp.call(db, s.PutBlock(blocks[2]))
        info = await otp.call(db, s.GetChainInfo())
        assert info.last_pow == blocks[2].ref() and info.queued_pow is None


@pytest.mark.parametrize(
    ("key", "value", "problem"),
    [
        (store.KEY_HEAD, b"\xff\x00garbage", "corrupt storage record b'm/head'"),
        (store.KEY_VERSION, b"\x07", "schema 7"),
        (store.KEY_FINALIZED, None, "points at block"),
        ("block", b"\x01\x02", "corrupt storage record b.b/"),
        ("height", b"short", "expected a 32-byte hash"),
    ],
)
async def test_corrupt_records_stop_the_start_and_name_the_key(
    tmp_path: Path, key: object, value: bytes | None, problem: str
) -> None:
    blocks = chain(2)
    path = str(tmp_path / "db")
    async with otp.runtime():
        db = await otp.start(StorageActor, path)
        for block in blocks:
            await otp.call(db, s.PutBlock(block, finalized=block.ref()))
        await otp.stop(db)
    raw = plyvel.DB(path)
    if key == "block":
        raw.put(store.block_key(blocks[1].hash()), value)
    elif key == "height":
        raw.put(store.height_key(1), value)
    elif key == store.KEY_FINALIZED:
        raw.put(key, store.encode_ref(BlockRef(bytes(range(32)), 1)))
    else:
        raw.put(key, value)  # type: ignore[arg-type]
    raw.close()
    async with otp.runtime():
        with pytest.raises(StorageCorrupt, match=problem.replace("(", r"\(")) as info:
            await otp.start(StorageActor, path)
        assert info.value.key


WRITER = textwrap.dedent("""
    import sys, trio, otp
    from node.actors import storage as store
    from node.messages import storage as s
    from tests.node.factories import chain

    async def main():
        blocks = chain(400)
        async with otp.runtime():
            db = await otp.start(store.StorageActor, sys.argv[1],
                                 fsync=sys.argv[2] == "fsync")
            for block in blocks:
                await otp.call(db, s.PutBlock(
                    block, finalized=block.ref() if block.height == 0 else None))
                print(block.height, flush=True)

    trio.run(main)
""")


@pytest.mark.parametrize("fsync", ["fsync", "no-fsync"])
def test_database_left_by_a_killed_process_opens_consistent(tmp_path: Path, fsync: str) -> None:
    """kill -9 of a process writing blocks: the database opens, every block up to the head
    there; without fsync too (what LevelDB was handed survives the process, not a power
    cut: how a simulated network's nodes write)."""
    path = str(tmp_path / "db")
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, path, fsync], cwd=ROOT, stdout=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert proc.stdout is not None
    for line in proc.stdout:
        if int(line) >= 50:
            break
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    async def check() -> int:
        async with otp.runtime():
            db = await otp.start(StorageActor, path)  # the start-up checks pass
            head = await otp.call(db, s.GetHead())
            assert head is not None and head.height >= 50
            for height in range(head.height + 1):
                block = await otp.call(db, s.GetBlockByHeight(height))
                assert block is not None and block.height == height
            return int(head.height)

    assert trio.run(check) >= 50


def _fresh_db(path: str, blocks: list[SignedConsensusBlock]) -> None:
    async def fill() -> None:
        async with otp.runtime():
            db = await otp.start(StorageActor, path)
            for block in blocks:
                await otp.call(db, s.PutBlock(block, finalized=block.ref()))
            await otp.stop(db)

    trio.run(fill)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(["head", "finalized", "auxpow", "version", "block", "height"]),
    st.binary(max_size=80),
)
def test_fuzz_a_damaged_record_is_refused_by_name_or_harmless(
    tmp_path_factory: pytest.TempPathFactory, which: str, garbage: bytes
) -> None:
    blocks = chain(3)
    path = str(tmp_path_factory.mktemp("db"))
    _fresh_db(path, blocks)
    key = {
        "head": store.KEY_HEAD, "finalized": store.KEY_FINALIZED, "auxpow": store.KEY_AUXPOW,
        "version": store.KEY_VERSION, "block": store.block_key(blocks[2].hash()),
        "height": store.height_key(2),
    }[which]
    raw = plyvel.DB(path)
    raw.put(key, garbage)
    raw.close()

    async def reopen() -> None:
        async with otp.runtime():
            try:
                db = await otp.start(StorageActor, path)
            except StorageCorrupt as exc:
                assert exc.key == key or exc.key.startswith((b"b/", b"h/", b"m/", b"v"))
                return
            # it started: then what it serves is whole
            head = await otp.call(db, s.GetHead())
            assert head is not None
            block = await otp.call(db, s.GetBlock(head.hash))
            assert block is not None and block.hash() == head.hash

    trio.run(reopen)


# -- bad requests are refused, not crashes -------------------------------------------------------


def test_out_of_range_values_are_refused_where_the_message_is_made() -> None:
    with pytest.raises(StorageRequestError, match=r"GetBlockByHeight\.height: a height is an "
                       r"integer in 0\.\.2\*\*64-1, not 18446744073709551616"):
        s.GetBlockByHeight(2**64)
    for bad in (-1, True, "1", 1.0, None):
        with pytest.raises(StorageRequestError, match=r"GetBlockByHeight\.height"):
            s.GetBlockByHeight(bad)  # type: ignore[arg-type]
    with pytest.raises(StorageRequestError, match=r"GetBlock\.hash: a block hash is 32 bytes"):
        s.GetBlock(b"\x00" * 31)
    with pytest.raises(StorageRequestError, match=r"GetAuxPowBlock\.height"):
        s.GetAuxPowBlock(2**64)
    with pytest.raises(StorageRequestError, match=r"GetCanonicalRefs\.end"):
        s.GetCanonicalRefs(0, 2**70)
    with pytest.raises(StorageRequestError, match=r"PutBlock\.fees"):
        s.PutBlock(chain(1)[0], fees=-1)
    # the RPC actor treats otp errors as "not ready" answers: this one never crashes it
    assert issubclass(StorageRequestError, NodeError)


async def test_fsync_is_true_or_false(tmp_path: Path) -> None:
    async with otp.runtime():
        with pytest.raises(TypeError, match="fsync must be true or false, not 'no'"):
            await otp.start(StorageActor, str(tmp_path / "db"), fsync="no")


async def test_the_actor_answers_an_invalid_request_and_keeps_serving(tmp_path: Path) -> None:
    blocks = chain(2)
    async with otp.runtime():
        db = await otp.start(StorageActor, str(tmp_path / "db"), name="storage")
        for block in blocks:
            await call(s.PutBlock(block, finalized=block.ref() if block.height == 0 else None))
        forged = s.GetBlockByHeight(1)
        object.__setattr__(forged, "height", 2**64)  # past the constructor's check
        answer = await otp.call(db, forged)
        assert isinstance(answer, s.Refused)
        assert "GetBlockByHeight.height" in str(answer.error)
        with pytest.raises(StorageRequestError, match=r"GetBlockByHeight\.height"):
            await call(forged)
        assert otp.whereis("storage") == db  # alive, the same process
        assert await call(s.GetBlockByHeight(1)) == blocks[1]


async def test_writes_that_break_the_invariants_are_refused(tmp_path: Path) -> None:
    blocks = chain(4, auxpow_at=(3,))
    async with otp.runtime():
        await otp.start(StorageActor, str(tmp_path / "db"), name="storage")
        await call(s.PutBlock(blocks[0], finalized=blocks[0].ref()))
        # a block whose parent is not stored
        with pytest.raises(StorageRequestError, match=r"block #2 .*its parent .* not stored"):
            await call(s.PutBlock(blocks[2]))
        await call(s.PutBlock(blocks[1]))
        await call(s.PutBlock(blocks[2], finalized=blocks[2].ref()))
        # the finalized block never moves back
        with pytest.raises(StorageRequestError, match="would move back from #2 to #1"):
            await call(s.PutBlock(blocks[3], finalized=blocks[1].ref()))
        # nor to a block that is not stored
        with pytest.raises(StorageRequestError, match=r"new finalized block .* is not stored"):
            await call(s.PutBlock(blocks[3], finalized=chain(5)[4].ref()))
        assert await call(s.GetHead()) == blocks[2].ref()
        assert await call(s.GetBlock(blocks[3].hash())) is None
        # a genesis with a parent
        stray = attrs.evolve(blocks[0], message=attrs.evolve(blocks[0].message,
                                                             parent_hash=b"\x01" * 32))
        with pytest.raises(StorageRequestError, match="must have a zero parent hash"):
            await call(s.PutBlock(stray))
        # the same put twice is the same state (callers retry after a restart)
        ref = await call(s.PutBlock(blocks[3], finalized=blocks[2].ref(), fees=5))
        assert await call(s.PutBlock(blocks[3], finalized=blocks[2].ref(), fees=5)) == ref
        assert await call(s.GetFees(blocks[3].hash())) == 5


async def test_the_queued_pow_is_persisted_and_cleared_by_the_block_carrying_it(
    tmp_path: Path
) -> None:
    blocks = chain(4, auxpow_at=(3,))
    carried = blocks[3].message.auxpow_header
    assert carried is not None
    other = attrs.evolve(carried, range_end=b"\x07" * 32)
    path = str(tmp_path / "db")
    async with otp.runtime():
        db = await otp.start(StorageActor, path, name="storage")
        for block in blocks[:3]:
            await call(s.PutBlock(block, finalized=block.ref() if block.height == 0 else None))
        await call(s.PutQueuedPow(carried))
        await otp.stop(db)
        db = await otp.start(StorageActor, path, name="storage")  # survives a restart
        assert (await call(s.GetChainInfo())).queued_pow == carried
        await call(s.PutQueuedPow(other))
        await call(s.PutBlock(blocks[3]))  # carries a different range: the queue stays
        assert (await call(s.GetChainInfo())).queued_pow == other
        await call(s.PutQueuedPow(carried))
        await call(s.PutBlock(blocks[3]))  # carries it: cleared in the same batch
        info = await call(s.GetChainInfo())
        assert info.queued_pow is None
        assert info.head == info.last_pow == blocks[3].ref()
        await call(s.PutQueuedPow(other))
        await call(s.PutQueuedPow(None))
        assert (await call(s.GetChainInfo())).queued_pow is None


async def test_put_blocks_stores_a_batch_whole_or_not_at_all(tmp_path: Path) -> None:
    longer = chain(10, auxpow_at=(5,))
    blocks = longer[:8]
    carried = blocks[5].message.auxpow_header
    assert carried is not None
    async with otp.runtime():
        await otp.start(StorageActor, str(tmp_path / "db"), name="storage")
        await call(s.PutBlock(blocks[0], finalized=blocks[0].ref()))
        await call(s.PutBlock(blocks[1]))
        await call(s.PutQueuedPow(carried))
        writes = (await call(s.GetStats())).blocks_written
        # 2..7 in one batch: #5 carries the queued PoW and finalizes #4, a block of the same
        # batch; fees per block
        puts = tuple(s.PutBlock(b, finalized=blocks[4].ref() if b.height == 5 else None,
                                fees=b.height) for b in blocks[2:])
        assert await call(s.PutBlocks(puts)) == blocks[7].ref()
        info = await call(s.GetChainInfo())
        assert info.head == blocks[7].ref() and info.finalized == blocks[4].ref()
        assert info.last_pow == blocks[5].ref() and info.queued_pow is None
        assert info.fees == 7
        assert (await call(s.GetStats())).blocks_written == writes + 1  # one batch
        for block in blocks:
            assert await call(s.GetBlockByHeight(block.height)) == block
        assert await call(s.GetCanonicalRefs(0, 7)) == [b.ref() for b in blocks]
        # A batch with one bad put stores none of it: the last one finalizes a block that
        # is nowhere
        more = chain(12)
        good = tuple(s.PutBlock(b) for b in more[8:11])
        with pytest.raises(StorageRequestError, match=r"block #8 .*its parent .* not stored"):
            await call(s.PutBlocks(good))  # chain(12) is another chain than chain(8, ...)
        batch = (s.PutBlock(longer[8]), s.PutBlock(longer[9], finalized=more[11].ref()))
        with pytest.raises(StorageRequestError, match=r"block #9: the new finalized block"):
            await call(s.PutBlocks(batch))
        batch = (batch[0], s.PutBlock(batch[1].block, finalized=blocks[2].ref()))
        with pytest.raises(StorageRequestError, match=r"would move back from #4 to #2"):
            await call(s.PutBlocks(batch))
        assert await call(s.GetHead()) == blocks[7].ref()
        assert await call(s.GetBlock(batch[0].block.hash())) is None
        # the finalized block may move within the batch, and stays put after it
        batch = (s.PutBlock(batch[0].block, finalized=batch[0].block.ref()), batch[1])
        with pytest.raises(StorageRequestError, match=r"would move back from #8 to #2"):
            await call(s.PutBlocks(batch))
        assert await call(s.GetBlock(batch[0].block.hash())) is None


def test_put_blocks_refuses_bad_batches_where_it_is_made() -> None:
    blocks = chain(4)
    with pytest.raises(StorageRequestError, match=r"PutBlocks\.puts: a non-empty tuple"):
        s.PutBlocks(())
    with pytest.raises(StorageRequestError, match=r"PutBlocks\.puts\[1\]: block #3 is not "
                       "the child of the block before it"):
        s.PutBlocks((s.PutBlock(blocks[1]), s.PutBlock(blocks[3])))


@settings(max_examples=80, deadline=None)
@given(st.one_of(
    st.none(), st.integers(), st.floats(allow_nan=True), st.text(max_size=5),
    st.lists(st.integers(-(2**70), 2**70), max_size=3),
    st.lists(st.one_of(st.none(), st.binary(max_size=4), st.integers()), max_size=3)
    .map(tuple),
    st.recursive(st.just(()), lambda inner: st.tuples(inner), max_leaves=30),
))
def test_put_blocks_refuses_anything_but_a_chain_of_puts(value: object) -> None:
    with pytest.raises(StorageRequestError, match=r"PutBlocks\.puts"):
        s.PutBlocks(value)  # type: ignore[arg-type]


async def test_canonical_refs_come_from_the_height_index(tmp_path: Path) -> None:
    blocks = chain(6)
    async with otp.runtime():
        await otp.start(StorageActor, str(tmp_path / "db"), name="storage")
        for block in blocks:
            await call(s.PutBlock(block, finalized=block.ref() if block.height == 0 else None))
        assert await call(s.GetCanonicalRefs(2, 4)) == [b.ref() for b in blocks[2:5]]
        assert await call(s.GetCanonicalRefs(0, 99)) == [b.ref() for b in blocks]
        assert await call(s.GetCanonicalRefs(4, 3)) == []
        assert await call(s.GetCanonicalRefs(7, 9)) == []


def test_a_schema_1_database_is_refused_with_what_to_do(tmp_path: Path) -> None:
    path = str(tmp_path / "db")
    raw = plyvel.DB(path, create_if_missing=True)
    raw.put(store.KEY_VERSION, otp.codec.encode(1))
    raw.put(store.KEY_HEAD, b"anything")
    raw.close()
    with pytest.raises(StorageCorrupt, match=r"schema 1 .* move the data directory away"):
        store.ChainStore(path)


async def test_unknown_fees_are_stored_as_unknown_and_survive_a_reopen(tmp_path: Path) -> None:
    """Snap sync stores blocks without executing them: their fees are unknown (None), which is
    not 0 — the next AuxPoW block's mint cannot be checked against them."""
    blocks = chain(3)
    async with otp.runtime():
        await otp.start(StorageActor, str(tmp_path / "db"), name="storage")
        await call(s.PutBlock(blocks[0], finalized=blocks[0].ref()))
        await call(s.PutBlocks((s.PutBlock(blocks[1], fees=None),
                                s.PutBlock(blocks[2], fees=None))))
        assert (await call(s.GetChainInfo())).fees is None
    async with otp.runtime():
        await otp.start(StorageActor, str(tmp_path / "db"), name="storage")
        assert (await call(s.GetChainInfo())).fees is None
        await call(s.PutBlock(chain(4)[3], fees=12))
        assert (await call(s.GetChainInfo())).fees == 12
