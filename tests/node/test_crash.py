"""kill -9 for real: the node as a subprocess (``python -m node boot supervision.toml
--dev-miner``, 1 s slots, a temporary data directory), SIGKILLed at moments Hypothesis picks —
while it boots, right after it produced a block, right after a block finalized (the batch
that carries the engine's anchor), right after the dev miner's proof was accepted over RPC,
under a burst of RPC queries — several times in a row on the same data directory.

After every kill the database opens and every stored block chains to its parent; the
finalized height never goes backwards; the next boot reaches a new head and finalizes again;
the last boot stops cleanly. ``python -m bench crash --runs 100`` is the long run of the same
machinery (``bench/crash_bench.py``).

And sync's multi-block imports (``ImportBlocks``: every block executed, then all stored in one
batch) killed at moments Hypothesis picks: whole batches or nothing, and a node that resumes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import otp
from bench.crash_bench import EVENTS, Moment, crash_cycle, final_boot
from node.actors.chain import ChainActor
from node.actors.engine import EngineActor
from node.actors.storage import StorageActor
from node.messages import chain as chain_msgs
from node.messages import storage as storage_msgs

from .sync_helpers import CHAIN_CFG, CHAIN_N, built_chain

ROOT = Path(__file__).resolve().parents[2]

moments = st.builds(Moment, st.sampled_from(EVENTS), st.integers(0, 300))


# One plan of four kills per CI run (each boot of a subprocess node takes seconds); a
# different plan every run, and a failing one is printed for replay (@reproduce_failure).
@settings(max_examples=1, deadline=None, print_blob=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(plan=st.lists(moments, min_size=4, max_size=4)
       .filter(lambda plan: any(m.event == "finalize" for m in plan)))
def test_kill_9_at_any_moment_leaves_a_node_that_boots_and_finalizes(
    tmp_path_factory: pytest.TempPathFactory, plan: list[Moment]
) -> None:
    data = tmp_path_factory.mktemp("crash") / "alys"
    finalized = -1
    for moment in plan:
        cycle = crash_cycle(data, moment)
        if cycle.after.finalized is not None:
            assert cycle.after.finalized.height >= finalized
            finalized = cycle.after.finalized.height
        if moment.event != "boot" and cycle.before is not None:
            assert cycle.recover_s is not None and cycle.finalize_s is not None
    last = final_boot(data)
    assert last.before is not None and last.before.head is not None
    assert last.after.head is not None and last.after.finalized is not None
    assert last.after.head.height > last.before.head.height
    assert last.before.finalized is not None
    assert last.after.finalized.height > last.before.finalized.height


# -- kill -9 in the middle of sync's multi-block imports ------------------------------------------

#: Blocks per ImportBlocks call in the importer below (the blocks of a call are stored in one
#: batch, after the engine has executed every one of them).
BATCH = 16
IMPORTER = textwrap.dedent("""
    import sys, trio, otp
    from node.actors.chain import ChainActor
    from node.actors.engine import EngineActor
    from node.actors.storage import StorageActor
    from node.messages import chain as chain_msgs
    from tests.node.sync_helpers import CHAIN_CFG, CHAIN_N, built_chain

    async def main(data, batch, blocks):
        async with otp.runtime():
            await otp.start(StorageActor, data + "/chain", name="storage")
            await otp.start(EngineActor, None, CHAIN_CFG, data_dir=data, name="engine")
            await otp.start(ChainActor, CHAIN_CFG, data, produce=False, name="chain")
            print("ready", flush=True)
            for start in range(0, len(blocks), batch):
                answer = await otp.call("chain", chain_msgs.ImportBlocks(
                    tuple(blocks[start:start + batch]), signatures_verified=True), timeout=120)
                assert answer.error is None, answer.error
                print(answer.head.height, flush=True)

    trio.run(main, sys.argv[1], int(sys.argv[2]), built_chain(CHAIN_N)[1:])
""")


@settings(max_examples=2, deadline=None, print_blob=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(after=st.integers(0, 4), delay_ms=st.integers(0, 120))
def test_kill_9_during_a_multi_block_import_leaves_whole_batches_and_a_node_that_resumes(
    tmp_path_factory: pytest.TempPathFactory, after: int, delay_ms: int
) -> None:
    """The importer is killed ``delay_ms`` after its ``after``-th batch was stored: most
    often while the engine executes the next batch, before that batch is written. After the
    kill the consensus store holds whole batches only (the head at a batch boundary, nothing
    of the torn batch), the EVM (perhaps ahead of it) is brought back by the engine's
    restart path, and the chain imports the rest from the stored head to the source's."""
    blocks = built_chain(CHAIN_N)  # built here once, and in the child from the same seed
    data = tmp_path_factory.mktemp("batch") / "b"
    data.mkdir()
    proc = subprocess.Popen(
        [sys.executable, "-c", IMPORTER, str(data), str(BATCH)], cwd=ROOT,
        stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.stdout is not None
    seen = 0
    for line in proc.stdout:
        if line.strip() != "ready":
            seen += 1
        if seen > after:
            break
    assert seen > after, "the importer stopped before it was killed"
    time.sleep(delay_ms / 1000)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)

    async def resume() -> int:
        async with otp.runtime():
            await otp.start(StorageActor, str(data / "chain"), name="storage")
            stored = await otp.call("storage", storage_msgs.GetHead())
            # whole batches (the last one is short: the importer may have finished)
            assert stored is not None, "no head"
            assert stored.height % BATCH == 0 or stored.height == CHAIN_N, stored
            assert stored.height >= after * BATCH
            for height in range(stored.height + 1):
                block = await otp.call("storage", storage_msgs.GetBlockByHeight(height))
                assert block == blocks[height]
            # Nothing of a torn batch: no block above the head was stored.
            for block in blocks[stored.height + 1:stored.height + 1 + BATCH]:
                assert await otp.call("storage", storage_msgs.GetBlock(block.hash())) is None
            await otp.start(EngineActor, None, CHAIN_CFG, data_dir=str(data), name="engine")
            await otp.start(ChainActor, CHAIN_CFG, str(data), produce=False, name="chain")
            status = await otp.call("chain", chain_msgs.GetStatus())
            assert status.head == stored
            rest = blocks[stored.height + 1:]
            if rest:
                answer = await otp.call("chain", chain_msgs.ImportBlocks(
                    tuple(rest), signatures_verified=True), timeout=300)
                assert answer.error is None, answer.error
            status = await otp.call("chain", chain_msgs.GetStatus())
            assert status.head is not None
            return status.head.height

    assert trio.run(resume) == CHAIN_N
