"""Snap sync inside ``otp.testing.simulate``: node B starts from genesis with
``sync.mode = "snap"``, stores the blocks up to the pivot without executing them, downloads
the EVM state at the pivot from its peers, has its engine take the pivot, and executes the
blocks after it — ending at the peers' head with their state root; the engine never ran a
payload before the pivot (no receipts there). A peer that lies about state values costs it
the request, never the download."""

from __future__ import annotations

import functools
import os
import random
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
import trio
from eth_account import Account
from eth_utils.address import to_checksum_address
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import otp
from node.actors.engine import EngineActor
from node.actors.network import NetworkActor
from node.actors.storage import ChainStore, StorageActor
from node.execution.accounts import dev_accounts
from node.execution.embedded import EmbeddedEngine
from node.integration.engine import commit_block
from node.messages import chain as c
from node.messages.storage import PutBlock
from node.messages.sync import GetSyncProgress
from node.network.memory import LinkConditions, MemoryNetwork
from node.types.chain import SignedConsensusBlock
from otp.testing import simulate
from otp.testing.plugin import Simulator

from ..scratch import scratch_dir
from .network_helpers import net_config, wait_for
from .sync_helpers import CHAIN_CFG, NET, build, start_b

#: Blocks in the chain; the snap tests use a pivot 16 below the head.
N = 120
SNAP = {"mode": "snap", "pivot_depth": 16, "snap_min_blocks": 32, "batch_size": 32,
        "window": 256, "request_timeout": 8.0, "import_batch": 16, "state_batch": 64}
SENDERS = dev_accounts()[:4]


def _transfer(sender: Any, nonce: int, to: bytes, value: int) -> bytes:
    tx = {"to": to_checksum_address(to), "value": value, "gas": 21_000, "chainId": 121212,
          "nonce": nonce, "maxFeePerGas": 10**10, "maxPriorityFeePerGas": 10**9, "type": 2}
    return bytes(Account.sign_transaction(tx, sender.private_key).raw_transaction)


def recipient(i: int) -> bytes:
    return (0x7000 + i).to_bytes(20, "big")


def add_transfers(engine: EmbeddedEngine, height: int) -> None:
    """Block ``height``'s three transfers to fresh accounts (a state of a few hundred)."""
    for k in range(3):
        sender = SENDERS[(height + k) % len(SENDERS)]
        nonce = engine.pending_nonce(sender.address)
        engine.add_transaction(_transfer(sender, nonce, recipient(3 * height + k),
                                         10**12 + height))


@functools.cache
def built() -> tuple[SignedConsensusBlock, ...]:
    blocks = tuple(trio.run(build, N, add_transfers))
    assert all(len(b.message.execution_payload.transactions) == 3 for b in blocks[1:])
    return blocks


@functools.cache
def stored() -> Path:
    """Blocks 0..N in a consensus store, and the EVM store of an engine that executed them
    (copied for each source, so that no source executes the chain inside a simulation)."""
    base = scratch_dir("snap-chain-")
    store = ChainStore(str(base / "chain"))
    for block in built():
        store.put_block(PutBlock(block, head=True,
                                 finalized=block.ref() if block.height == 0 else None),
                        sync=False)
    store.close()

    async def execute() -> None:
        engine = EmbeddedEngine(path=base / "evm")
        finalized = built()[0].message.execution_payload.block_hash
        for block in built()[1:]:
            await commit_block(engine, block.message.execution_payload, finalized)
        engine.close()

    trio.run(execute)
    return base


@pytest.fixture(scope="module", autouse=True)
def chain_built() -> None:
    stored()


async def start_source(tmp: Path, name: str, net: MemoryNetwork) -> None:
    """A node serving blocks and state: storage, an embedded engine that has executed the
    chain, a NetworkActor listening on ``name``."""
    shutil.copytree(stored() / "chain", tmp / name / "chain")
    shutil.copytree(stored() / "evm", tmp / name / "evm")
    await otp.start(StorageActor, str(tmp / name / "chain"), name=f"storage-{name}")
    await otp.start(EngineActor, None, CHAIN_CFG, storage=f"storage-{name}",
                    data_dir=str(tmp / name), name=f"engine-{name}")
    await otp.start(NetworkActor, net_config(name * 2, (), **NET), CHAIN_CFG,
                    data_dir=str(tmp / name), storage=f"storage-{name}",
                    transport=net.transport(name), bus_prefix=f"{name}/",
                    engine=f"engine-{name}", name=f"network-{name}")


async def start_network(tmp: Path, net: MemoryNetwork) -> None:
    """Sources ``a`` and ``c``, and B snap-syncing from both."""
    await start_source(tmp, "a", net)
    await start_source(tmp, "c", net)
    await start_b(tmp, net, ("a", "c"), verifier=None, **SNAP)


async def stop_b() -> None:
    """B's actors stopped, as a node's shutdown stops them (its data left as it is)."""
    for name in ("sync", "network", "chain", "engine", "storage"):
        await otp.stop(name)


async def b_evm() -> EmbeddedEngine:
    """B's embedded engine."""
    engine = await otp.get_state("engine")
    assert isinstance(engine, EngineActor) and engine.embedded is not None
    return engine.embedded


async def b_head() -> c.BlockRef:
    status = await otp.call("chain", c.GetStatus())
    assert status.head is not None
    return status.head


async def synced_to(height: int) -> None:
    async def done() -> bool:
        if (await b_head()).height < height:
            return False
        return bool((await otp.call("sync", GetSyncProgress())).synced)
    await wait_for(done, timeout=1200.0, step=0.5)


def memory(seed: int) -> MemoryNetwork:
    return MemoryNetwork(random.Random(f"snap:{seed}"), default=LinkConditions(latency=0.005))


@pytest.mark.sim(seeds=1)
def test_b_snap_syncs_history_unexecuted_downloads_the_pivot_state_and_executes_after_it(
        sim: Simulator, sim_seed: int) -> None:
    blocks = built()
    pivot = N - SNAP["pivot_depth"]

    async def main() -> None:
        tmp = scratch_dir("snap-")
        net = memory(sim_seed)
        await start_network(tmp, net)
        await synced_to(N)
        assert await b_head() == blocks[N].ref()
        evm = await b_evm()
        # The engine took the pivot and executed every block after it, to the same state.
        assert evm.pivot is not None and evm.pivot[0] == pivot
        assert evm.head_number == N
        assert evm.head.state_root == blocks[N].message.execution_payload.state_root
        # History was never executed: no receipts before the pivot, receipts after it.
        with pytest.raises(KeyError):
            await evm.receipts(blocks[pivot - 1].message.execution_payload.block_hash)
        after = await evm.receipts(blocks[N].message.execution_payload.block_hash)
        assert len(after) == 3
        # A balance set before the pivot reads the same as at the source.
        source = await otp.get_state("engine-a")
        assert isinstance(source, EngineActor) and source.embedded is not None
        for i in (3, 3 * pivot, 3 * N + 2):
            assert evm.balance_of(recipient(i)) == source.embedded.balance_of(recipient(i))
        # The chain knows its fees only from the next AuxPoW block on.
        state = await otp.get_state("chain")
        assert state.state.fees is None
        progress = await otp.call("sync", GetSyncProgress())
        assert progress.synced and progress.current == N

    sim(main, max_virtual_time=1800.0)


@pytest.mark.sim(seeds=1)
def test_a_sync_actor_killed_mid_history_resumes_the_snap_sync(
        sim: Simulator, sim_seed: int) -> None:
    """Killed while history is stored unexecuted: the restarted SyncActor finds the snap sync
    the engine recorded and goes on to the same pivot — the history stays unexecuted, the
    state is downloaded, the pivot taken — and B ends at the peers' head with their state."""
    blocks = built()
    pivot = N - SNAP["pivot_depth"]

    async def main() -> None:
        tmp = scratch_dir("snap-kill-")
        net = memory(sim_seed)
        await start_source(tmp, "a", net)
        await start_b(tmp, net, ("a",), verifier=None, supervised=True, **SNAP)
        await wait_for(lambda: _history_at(40), timeout=600.0, step=0.05)
        evm = await b_evm()
        assert evm.head_number == 0  # history, not executed
        assert evm.snap_target == pivot  # recorded before any history
        before = otp.whereis("sync")
        assert before is not None
        otp.exit(before, "kill")
        await synced_to(N)
        assert otp.whereis("sync") not in (None, before)
        assert await b_head() == blocks[N].ref()
        assert evm.head_number == N
        assert evm.head.state_root == blocks[N].message.execution_payload.state_root
        assert evm.pivot is not None and evm.pivot[0] == pivot
        assert evm.snap_target is None  # taking the pivot ended it
        with pytest.raises(KeyError):  # history before the pivot was never executed
            await evm.receipts(blocks[pivot - 1].message.execution_payload
                                           .block_hash)

    sim(main, max_virtual_time=3600.0)


async def _history_at(height: int) -> bool:
    return (await b_head()).height >= height


@pytest.mark.sim(seeds=1)
def test_b_restarted_mid_history_leaves_it_unexecuted_and_resumes_the_snap_sync(
        sim: Simulator, sim_seed: int) -> None:
    """B's whole tree stopped while history is stored unexecuted and started again on the
    same data: the engine's start does not execute the stored history (the snap sync is
    recorded as under way), the SyncActor resumes it, and B ends at the peers' head with the
    pivot taken."""
    blocks = built()
    pivot = N - SNAP["pivot_depth"]

    async def main() -> None:
        tmp = scratch_dir("snap-restart-")
        net = memory(sim_seed)
        await start_network(tmp, net)
        await wait_for(lambda: _history_at(50), timeout=600.0, step=0.05)
        await stop_b()
        stored_head = ChainStore(str(tmp / "b" / "chain"))
        try:
            height = stored_head.head()
            assert height is not None and 50 <= height.height <= pivot
        finally:
            stored_head.close()
        await start_b(tmp, net, ("a", "c"), verifier=None, **SNAP)  # on the same data
        evm = await b_evm()
        assert evm.head_number == 0  # the restart executed nothing
        await synced_to(N)
        assert await b_head() == blocks[N].ref()
        assert evm.pivot is not None and evm.pivot[0] == pivot
        assert evm.head.state_root == blocks[N].message.execution_payload.state_root
        assert evm.snap_target is None

    sim(main, max_virtual_time=3600.0)


@pytest.mark.sim(seeds=1)
def test_a_peer_lying_about_its_head_cannot_stall_a_snap_sync_or_make_it_skip_execution(
        sim: Simulator, sim_seed: int) -> None:
    """A peer claims a head of a million and serves nothing above #N. The pivot is chosen
    only after the peers' heads settle, and history is imported only once the pivot block has
    come with valid approvals — so the lie costs time, never correctness: B ends at the
    honest head with its state, every block after whatever pivot it took executed."""
    from .sync_helpers import BadPeer

    blocks = built()
    liar = BadPeer("x", "short", blocks, head=10**6, has=N)

    async def main() -> None:
        tmp = scratch_dir("snap-liar-")
        net = memory(sim_seed)
        async with trio.open_nursery() as nursery:
            await nursery.start(liar.serve, net)
            await start_source(tmp, "a", net)
            await start_b(tmp, net, ("x", "a"), verifier=None, **SNAP)
            await synced_to(N)
            assert await b_head() == blocks[N].ref()
            evm = await b_evm()
            assert evm.head_number == N
            assert (evm.head.state_root
                    == blocks[N].message.execution_payload.state_root)
            pivot = evm.pivot
            assert pivot is None or pivot[0] <= N
            nursery.cancel_scope.cancel()

    sim(main, max_virtual_time=3600.0)


@pytest.mark.sim(seeds=1)
def test_b_restarted_mid_history_in_full_mode_executes_the_stored_history(
        sim: Simulator, sim_seed: int) -> None:
    """The operator restarts a node part-way through a snap sync with ``sync.mode = "full"``:
    the SyncActor removes the engine's record, and the engine executes the stored history
    when the chain next needs it; B ends at the peers' head with their state, no pivot."""
    blocks = built()

    async def main() -> None:
        tmp = scratch_dir("snap-to-full-")
        net = memory(sim_seed)
        await start_network(tmp, net)
        await wait_for(lambda: _history_at(50), timeout=600.0, step=0.05)
        await stop_b()
        await start_b(tmp, net, ("a", "c"), verifier=None, **{**SNAP, "mode": "full"})
        evm = await b_evm()
        await synced_to(N)
        assert await b_head() == blocks[N].ref()
        assert evm.snap_target is None
        assert evm.pivot is None and evm.head_number == N
        assert evm.head.state_root == blocks[N].message.execution_payload.state_root
        assert len(await evm.receipts(
            blocks[10].message.execution_payload.block_hash)) == 3  # history executed

    sim(main, max_virtual_time=3600.0)


# -- kill -9 of a snap-syncing node, for real -----------------------------------------------------

#: A node B snap-syncing from two sources (all in one process, on the in-memory transport, in
#: real time), printing its head at every change: the process the test below SIGKILLs.
SNAPPER = textwrap.dedent("""
    import sys, trio, otp
    from pathlib import Path
    from node.messages.sync import GetSyncProgress
    from tests.node import test_snap_sync as t

    async def main(tmp, source):
        t.stored = lambda: Path(source)  # the test's chain, not one built again here
        async with otp.runtime():
            net = t.memory(0)
            await t.start_network(Path(tmp), net)
            print("head 0", flush=True)
            last = 0
            while True:
                head = (await t.b_head()).height
                if head != last:
                    print(f"head {head}", flush=True)
                    last = head
                if head == t.N and (await otp.call("sync", GetSyncProgress())).synced:
                    print("done", flush=True)
                    return
                await trio.sleep(0.005)

    trio.run(main, sys.argv[1], sys.argv[2])
""")
ROOT = Path(__file__).resolve().parents[2]


@settings(max_examples=2, deadline=None, print_blob=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(at=st.integers(0, N), delay_ms=st.integers(0, 60))
def test_kill_9_during_a_snap_sync_leaves_a_node_that_resumes_it_to_the_same_pivot(
        tmp_path_factory: pytest.TempPathFactory, at: int, delay_ms: int) -> None:
    """B is SIGKILLed ``delay_ms`` after its head reached ``at`` (history stored unexecuted,
    the state half downloaded, the pivot just taken, the blocks after it executing). On disk
    every stored block is the chain's; started again on the same data, B resumes: it ends at
    the peers' head with their state, the engine's pivot is the snap sync's, and no block
    before it was ever executed (no receipts), whatever the moment."""
    blocks = built()
    pivot = N - SNAP["pivot_depth"]
    source = stored()
    tmp = tmp_path_factory.mktemp("snap-kill9")
    proc = subprocess.Popen([sys.executable, "-c", SNAPPER, str(tmp), str(source)], cwd=ROOT,
                            stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.stdout is not None
    reached = None
    for line in proc.stdout:
        if line.startswith("head ") and int(line.split()[1]) >= at:
            reached = int(line.split()[1])
            break
    assert reached is not None, "the snapping node stopped before it was killed"
    time.sleep(delay_ms / 1000)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    proc.stdout.close()
    store = ChainStore(str(tmp / "b" / "chain"))
    try:
        head = store.head()
        assert head is not None and head.height >= reached
        assert [store.block_at(h) for h in range(head.height + 1)] == list(
            blocks[:head.height + 1])
    finally:
        store.close()
    for name in ("a", "c"):
        shutil.rmtree(tmp / name)

    async def resume() -> None:
        net = memory(0)
        await start_network(tmp, net)
        await synced_to(N)
        assert await b_head() == blocks[N].ref()
        evm = await b_evm()
        assert evm.head.state_root == blocks[N].message.execution_payload.state_root
        assert evm.pivot is not None and evm.pivot[0] == pivot and evm.snap_target is None
        with pytest.raises(KeyError):
            await evm.receipts(blocks[pivot - 1].message.execution_payload.block_hash)

    simulate(resume, seed=at, max_virtual_time=3600.0, keep_trace=False).raise_failure()
