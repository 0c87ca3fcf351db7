"""StorageActor on LevelDB: batched imports, the indexes, reopening, corruption, kill -9."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import plyvel
import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import otp
from node.actors import storage as s
from node.actors.storage import StorageActor, StorageCorrupt
from node.types.chain import BlockRef, SignedConsensusBlock

from .factories import chain

ROOT = Path(__file__).resolve().parents[2]


async def test_blocks_heads_and_indexes(tmp_path: Path) -> None:
    blocks = chain(5, auxpow_at=(3,))
    async with otp.runtime():
        db = await otp.start(StorageActor, str(tmp_path / "db"))
        assert await otp.call(db, s.GetHead()) is None
        for i, block in enumerate(blocks):
            ref = await otp.call(db, s.PutBlock(
                block, head=True, finalized=block.ref() if i in (0, 3) else None,
                engine_state=f"state{i}".encode(), fees=i * 10))
            assert ref == block.ref()
        assert await otp.call(db, s.GetHead()) == blocks[4].ref()
        assert await otp.call(db, s.GetFinalized()) == blocks[3].ref()
        assert await otp.call(db, s.GetLatestAuxPow()) == blocks[3].ref()
        assert await otp.call(db, s.GetAuxPowBlock(3)) == blocks[3]
        assert await otp.call(db, s.GetAuxPowBlock(2)) is None
        assert await otp.call(db, s.GetBlockByHeight(2)) == blocks[2]
        assert await otp.call(db, s.GetBlock(blocks[1].hash())) == blocks[1]
        assert await otp.call(db, s.GetBlock(bytes(32))) is None
        assert await otp.call(db, s.GetEngineState()) == b"state4"
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


@pytest.mark.parametrize(
    ("key", "value", "problem"),
    [
        (s.KEY_HEAD, b"\xff\x00garbage", "corrupt storage record b'm/head'"),
        (s.KEY_VERSION, b"\x07", "schema 7"),
        (s.KEY_FINALIZED, None, "points at block"),
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
        raw.put(s.block_key(blocks[1].hash()), value)
    elif key == "height":
        raw.put(s.height_key(1), value)
    elif key == s.KEY_FINALIZED:
        raw.put(key, s.encode_ref(BlockRef(bytes(range(32)), 1)))
    else:
        raw.put(key, value)  # type: ignore[arg-type]
    raw.close()
    async with otp.runtime():
        with pytest.raises(StorageCorrupt, match=problem.replace("(", r"\(")) as info:
            await otp.start(StorageActor, path)
        assert info.value.key


WRITER = textwrap.dedent("""
    import sys, trio, otp
    from node.actors import storage as s
    from tests.node.factories import chain

    async def main():
        blocks = chain(400)
        async with otp.runtime():
            db = await otp.start(s.StorageActor, sys.argv[1])
            for block in blocks:
                await otp.call(db, s.PutBlock(
                    block, engine_state=bytes(2048),
                    finalized=block.ref() if block.height == 0 else None))
                print(block.height, flush=True)

    trio.run(main)
""")


def test_database_left_by_a_killed_process_opens_consistent(tmp_path: Path) -> None:
    path = str(tmp_path / "db")
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, path], cwd=ROOT, stdout=subprocess.PIPE, text=True,
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
        "head": s.KEY_HEAD, "finalized": s.KEY_FINALIZED, "auxpow": s.KEY_AUXPOW,
        "version": s.KEY_VERSION, "block": s.block_key(blocks[2].hash()),
        "height": s.height_key(2),
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
