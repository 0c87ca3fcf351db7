"""The whole node under ``otp.testing.simulate``: its real supervision tree (storage on a
LevelDB in a temporary directory, the embedded engine, the dev miner grinding inline, the
JSON-RPC and metrics actors), in virtual time, with crashes and kills of every actor.

Each seed runs the node for a few virtual minutes under random faults, twice (the two traces
must hash the same), and checks what an operator cares about:

* the head and the finalized block never go back (a watcher follows every import);
* nothing finalized is lost: after the run, the database's finalized block is at least the
  highest one ever announced, and every stored block chains to its parent;
* the supervisors kept their restart intensity (the harness checks it), and the node still
  produces and finalizes after the faults stop.

CI runs a few seeds; the full run is ``pytest tests/sim/test_node_sim.py --sim-seeds 200``.
A failing seed is printed with the command that replays it.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

import otp
from node.__main__ import DEFAULT_TREE
from node.actors.storage import ChainStore
from node.config import load_config
from node.messages import chain as chain_msgs
from otp.testing import FaultPlan

#: A fixed authority key: the same chain (block hashes, signatures) in both runs of a seed.
KEY_HEX = "2a" * 32
#: Virtual seconds of faults, then of calm in which the node must finalize again.
FAULTY, CALM = 120.0, 60.0

FAULTS = FaultPlan(rate=0.1, kinds=("crash", "kill"), spare=("watcher",), start_after=5.0,
                   stop_after=FAULTY)


class Watcher(otp.GenServer):
    """Follows every import and fails (crashing, which the run reports) if the head or the
    finalized block goes back."""

    async def init(self) -> None:
        await trio.lowlevel.checkpoint()
        otp.bus.subscribe(chain_msgs.BLOCKS_TOPIC)
        self.head = self.finalized = -1
        self.imports = 0

    async def handle_info(self, msg: Any) -> None:
        await trio.lowlevel.checkpoint()
        if isinstance(msg, chain_msgs.BlockImported):
            if msg.ref.height < self.head or msg.finalized.height < self.finalized:
                raise AssertionError(
                    f"went back: head #{self.head} -> #{msg.ref.height}, finalized "
                    f"#{self.finalized} -> #{msg.finalized.height}")
            self.head, self.finalized = msg.ref.height, msg.finalized.height
            self.imports += 1

    async def handle_call(self, request: Any, from_: otp.From) -> Any:
        await trio.lowlevel.checkpoint()
        return self.head, self.finalized, self.imports


def node_program(data_dir: Path) -> Callable[[], Awaitable[dict[str, int]]]:
    async def main() -> dict[str, int]:
        # Every run of a seed starts from the same empty directory and the same key.
        shutil.rmtree(data_dir, ignore_errors=True)
        (data_dir / "keys").mkdir(parents=True)
        (data_dir / "keys" / "authority.key").write_text(KEY_HEX)
        config = load_config(None, {}, [
            f'data_dir="{data_dir}"', "chain.slot_duration_ms=1000",
            "chain.bits=545259519",  # 0x207fffff: a proof takes a couple of hashes
            # One block a proof at most: the original's retarget never makes it harder.
            "chain.pow_target_spacing=1",
            "chain.max_blocks_without_pow=10", "miner.enabled=true", 'miner.grinder="inline"',
            "miner.interval=2.0", "rpc.port=0", "metrics.port=0", "eth_rpc.port=0",
            "eth_rpc.banner=false",
        ])
        spec = otp.load_tree(DEFAULT_TREE, config.as_mapping())
        watcher = await otp.start(Watcher, name="watcher")
        root = await otp.start_tree(spec)
        await trio.sleep(FAULTY)
        if not root.is_alive():  # a fault escalated to the root: boot again, as systemd would
            root = await otp.start_tree(spec)
        head, finalized, _ = await otp.call(watcher, "get")
        await trio.sleep(CALM)
        later_head, later_finalized, imports = await otp.call(watcher, "get")
        await otp.stop(root, "shutdown")
        store = ChainStore(str(data_dir / "chain"))
        try:
            info = store.verify_chain()  # every stored block chains to its parent
        finally:
            store.close()
        assert info.finalized is not None and info.head is not None
        # Nothing announced as finalized was lost, and the node went on after the faults.
        assert info.finalized.height >= later_finalized >= finalized
        assert later_head > head and later_finalized > finalized
        return {"head": info.head.height, "finalized": info.finalized.height,
                "imports": imports}

    return main


@pytest.fixture
def data_dir() -> Iterator[Path]:
    base = Path(tempfile.mkdtemp(prefix="alys-sim-"))
    try:
        yield base / "node"
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.mark.sim(seeds=3)
@pytest.mark.usefixtures("quiet_logs")
def test_the_node_keeps_its_chain_under_crashes_and_kills_of_every_actor(
    sim: Any, data_dir: Path
) -> None:
    result = sim(node_program(data_dir), faults=FAULTS, max_virtual_time=FAULTY + CALM + 600)
    assert result.result["finalized"] > 0
    faults = [e for e in result.trace if e.kind == "fault"]
    assert faults, "the plan injected no fault"
