"""The whole network in one simulation: four complete nodes (four authorities, a block needs
three approvals) under ``otp.testing.simulate`` for ten virtual minutes, each node the tree
that ships (``node/supervision.toml``, its real supervisors and policies) built by
:mod:`node.simnet`, on the in-memory transport.

What happens, by virtual time:

* 0 s — the nodes boot and mesh; node ``a`` runs the dev miner (AuxPoW every few blocks).
* 20 s to 280 s — random crashes and kills of every actor of every node (``FaultPlan``);
  links with latency, jitter and reordering throughout, and one link slowed to half a second
  each way for a minute; a byzantine peer dials nodes under fresh ids and sends garbage frames,
  blocks with bad signatures and blocks on unknown parents (answering range requests with
  blocks that do not link).
* 300 s to 360 s — one node (chosen by the seed) is cut off from the other three, which go on
  (three approvals of four); at 360 s the partition heals.
* to 600 s — calm.

Invariants, checked by a watcher on the bus while it runs and from each node's database at
the end:

* no two nodes import, or finalize, different blocks at one height;
* no node's head or finalized block goes back, and nothing finalized is lost: each
  database's finalized block is at least the last one announced, and every stored block
  chains to its parent;
* the node that was cut off reaches the head the others had at the heal within
  :data:`CATCH_UP_BOUND` virtual seconds;
* every byzantine id is banned by the node it attacked, no honest node is ever banned, and
  the byzantine blocks are in no database;
* the network produces and finalizes after the faults;
* no deadlock (``max_virtual_time``) and every supervisor kept its restart intensity (the
  harness checks both); the same seed gives the same trace hash twice.

CI runs one seed; the full count is ``pytest tests/sim/test_network_sim.py --sim-seeds 100``.
A failing seed prints the command that replays it.
"""

from __future__ import annotations

import random
import shutil
import tempfile
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import attrs
import pytest
import trio

import otp
from node.actors.storage import ChainStore
from node.messages.storage import GetBlockByHeight
from node.network.memory import LinkConditions
from node.simnet import (
    DEFAULT_TREE,
    FORGED,
    ByzantinePeer,
    ChainWatcher,
    SimNetwork,
    UnknownActor,
    WatchReport,
    node_tree,
)
from otp.testing import FaultPlan
from otp.testing.plugin import Simulator

NODES = 4
#: Virtual seconds: faults until FAULTY, the partition from PARTITION for PARTITION_FOR, the
#: whole run TOTAL.
FAULTY, PARTITION, PARTITION_FOR, TOTAL = 280.0, 300.0, 60.0, 600.0
#: How long (virtual seconds) a node cut off for a minute may take, after the heal, to reach
#: the head the others had at the heal: the dialler's backoff after a minute of failed
#: dials (at most 2^6 s) plus a ping timeout and the sync itself.
CATCH_UP_BOUND = 120.0
LINKS = LinkConditions(latency=0.02, jitter=0.02, reorder=0.01, reorder_delay=0.1)
SLOW_LINK = LinkConditions(latency=0.5, jitter=0.5)
WATCHERS = ("watcher", "watch-a", "watch-b", "watch-c", "watch-d")
FAULTS = FaultPlan(rate=0.05, kinds=("crash", "kill"), spare=WATCHERS, start_after=20.0,
                   stop_after=FAULTY)
ATTACKS = ("garbage", "bad_signature", "bad_parent")


@attrs.frozen
class Outcome:
    report: WatchReport
    isolated: str
    caught_up_after: float
    heads: dict[str, int]
    finalized: dict[str, int]
    restarted_roots: tuple[str, ...]
    byzantine: ByzantinePeer


async def _heads(net: SimNetwork) -> dict[str, int]:
    heads = {}
    for node in net.nodes:
        status = await net.status(node)
        if status is not None and status.head is not None:
            heads[node.name] = status.head.height
    return heads


async def _byzantine(net: SimNetwork, peer: ByzantinePeer, rng: random.Random) -> None:
    """An attack every 5 to 25 virtual seconds from 30 s until the faults stop."""
    await trio.sleep_until(30.0)
    while trio.current_time() < FAULTY:
        target = rng.choice(net.names)
        await peer.attack(net.net, "x", target, rng.choice(ATTACKS))
        await trio.sleep(rng.uniform(5.0, 25.0))


async def _slow_link(net: SimNetwork, rng: random.Random) -> None:
    a, b = rng.sample(net.names, 2)
    await trio.sleep_until(rng.uniform(40.0, 200.0))
    net.net.set_link(a, b, SLOW_LINK)
    await trio.sleep(60.0)
    net.net.set_link(a, b, LINKS)


def network_program(base: Path, seed: int) -> Callable[[], Awaitable[Outcome]]:
    async def main() -> Outcome:
        rng = random.Random(f"netsim-scenario:{seed}")
        net = SimNetwork(base, NODES, rng=random.Random(f"netsim-links:{seed}"),
                         conditions=LINKS, miner=0)
        net.reset()
        watcher = await otp.start(ChainWatcher, net.names, net.node_ids, name="watcher")
        await net.start_all()
        chain = net.config(net.nodes[0]).chain
        peer = ByzantinePeer(chain.chain_id, await _genesis_hash(net), chain.slot_duration_ms)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_byzantine, net, peer, random.Random(f"byzantine:{seed}"))
            nursery.start_soon(_slow_link, net, random.Random(f"slow:{seed}"))
            await trio.sleep_until(FAULTY)
        restarted = []
        for node in net.nodes:
            if not net.is_running(node):  # a fault escalated to the root: boot it again
                restarted.append(node.name)
                await net.start(node)
        await trio.sleep_until(PARTITION)
        isolated = rng.choice(net.names)
        rest = [n for n in net.names if n != isolated]
        net.net.partition(rest, [isolated])
        await trio.sleep(PARTITION_FOR)
        net.net.heal()
        healed = trio.current_time()
        at_heal = await _heads(net)
        target = max(at_heal.get(n, 0) for n in rest)
        while (await _heads(net)).get(isolated, -1) < target:
            if trio.current_time() - healed > CATCH_UP_BOUND:
                raise AssertionError(
                    f"{isolated} did not reach #{target} within {CATCH_UP_BOUND} s of the heal "
                    f"(heads {await _heads(net)})")
            await trio.sleep(0.5)
        caught_up_after = trio.current_time() - healed
        await trio.sleep_until(TOTAL)
        report: WatchReport = await otp.call(watcher, "report")
        heads, finalized = await _heads(net), {}
        await net.stop_all()
        await otp.stop(watcher)
        for node in net.nodes:
            store = ChainStore(str(node.data_dir / "chain"))
            try:
                info = store.verify_chain()  # every stored block chains to its parent
                assert info.head is not None and info.finalized is not None
                finalized[node.name] = info.finalized.height
                heads[node.name] = info.head.height
                announced = report.finalized.get(node.name)
                assert announced is None or info.finalized.height >= announced.height, (
                    f"{node.name} lost finalized blocks: #{announced.height} announced, "
                    f"#{info.finalized.height} stored")
                for height in range(1, info.head.height + 1):
                    block_hash = store.hash_at(height)
                    block = None if block_hash is None else store.block(block_hash)
                    assert block is not None
                    assert block.message.execution_payload.block_hash != FORGED, (
                        f"{node.name} stored a byzantine block at #{height}")
                for height, block_hash in report.final.items():
                    if height <= info.head.height:
                        assert store.hash_at(height) == block_hash, (
                            f"{node.name} stores another block at finalized #{height}")
            finally:
                store.close()
        return Outcome(report, isolated, caught_up_after, heads, finalized, tuple(restarted),
                       peer)

    return main


async def _genesis_hash(net: SimNetwork) -> bytes:
    block = await otp.call(net.nodes[0].actor("storage"), GetBlockByHeight(0), timeout=30)
    assert block is not None
    return block.hash()


def check(outcome: Outcome) -> None:
    report = outcome.report
    assert not report.violations, "\n".join(report.violations)
    # The byzantine peer tried, and each of its ids that got as far as a lie was banned.
    assert outcome.byzantine.attacks > 0 and outcome.byzantine.sent > 0
    banned = {peer for _node, peer in report.banned}
    assert banned and banned <= set(outcome.byzantine.ids)
    # Every node went on after the faults: a common head well past the partition, finalized.
    assert min(outcome.heads.values()) > (TOTAL - 120.0) / 2 / 2, outcome.heads
    assert min(outcome.finalized.values()) > 0, outcome.finalized
    assert outcome.caught_up_after <= CATCH_UP_BOUND


@pytest.fixture
def base_dir() -> Iterator[Path]:
    base = Path(tempfile.mkdtemp(prefix="alys-netsim-"))
    try:
        yield base / "net"
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.mark.sim(seeds=1)
@pytest.mark.usefixtures("quiet_logs")
def test_four_authorities_keep_one_chain_through_faults_partitions_and_a_liar(
    sim: Simulator, sim_seed: int, base_dir: Path
) -> None:
    result = sim(network_program(base_dir, sim_seed), faults=FAULTS,
                 max_virtual_time=TOTAL + 600.0)
    check(result.result)
    assert any(e.kind == "fault" for e in result.trace), "the plan injected no fault"


def test_each_simulated_node_runs_the_shipped_tree_renamed(tmp_path: Path) -> None:
    """The supervisors keep the shipped strategies, intensities, backoffs and on_exhausted;
    workers are renamed per node and told their siblings; socket servers are left out."""
    net = SimNetwork(tmp_path, 2, rng=random.Random(0))
    shipped = otp.load_tree(DEFAULT_TREE, net.config(net.nodes[1]).as_mapping())
    spec = net.spec(net.nodes[1])
    assert spec.name == "alys-b"
    for ours, theirs in zip(spec.children, shipped.children, strict=True):
        assert isinstance(ours, otp.SupervisorNode) and isinstance(theirs, otp.SupervisorNode)
        assert (ours.id, ours.strategy, ours.intensity, ours.period, ours.backoff,
                ours.on_exhausted) == (theirs.id, theirs.strategy, theirs.intensity,
                                       theirs.period, theirs.backoff, theirs.on_exhausted)
    workers = {n.id: n for _path, n in spec.walk() if isinstance(n, otp.WorkerNode)}
    assert set(workers) == {"storage_actor", "engine", "chain_actor", "auxpow", "dev_miner",
                            "network_actor", "sync", "bridge_actor", "federation_actor"}
    assert workers["chain_actor"].name == "chain-b"
    assert isinstance(workers["chain_actor"].args, dict)
    assert workers["chain_actor"].args["storage"] == "storage-b"
    assert workers["chain_actor"].args["bus_prefix"] == "b/"
    network = workers["network_actor"].args
    assert isinstance(network, dict) and network["config"]["bootnodes"] == ["a"]


def test_a_worker_the_builder_does_not_know_is_an_error(tmp_path: Path) -> None:
    net = SimNetwork(tmp_path, 1, rng=random.Random(0))
    spec = otp.load_tree('[tree]\nid = "x"\n[[tree.children]]\nid = "w"\n'
                         'start = "otp.testing.workers:Chatter"\n')
    with pytest.raises(UnknownActor, match="w"):
        node_tree(spec, net.nodes[0], net.net)


def split_vote_program(base: Path, seed: int) -> Callable[[], Awaitable[tuple[int, int]]]:
    async def main() -> tuple[int, int]:
        net = SimNetwork(base, NODES, rng=random.Random(f"split:{seed}"), conditions=LINKS)
        net.reset()
        await net.start_all()
        await trio.sleep(30.0)
        net.net.partition(["a", "b"], ["c", "d"])
        await trio.sleep(30.0)
        net.net.heal()
        before = min((await _heads(net)).values())
        await trio.sleep(150.0)
        after = min((await _heads(net)).values())
        await net.stop_all()
        return before, after

    return main


@pytest.mark.sim(seeds=1)
@pytest.mark.usefixtures("quiet_logs")
def test_a_two_two_split_heals_and_the_chain_goes_on(sim: Simulator, sim_seed: int,
                                                     base_dir: Path) -> None:
    result = sim(split_vote_program(base_dir, sim_seed), max_virtual_time=600.0)
    before, after = result.result
    assert after > before + 10, f"stuck at #{after} after the heal"
