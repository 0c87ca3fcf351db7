"""The NetworkActor in the node: off by default (the dev chain boots as before), the network
supervisor's policy in node/supervision.toml, blocks the chain produces gossiped to peers,
and a crashed NetworkActor restarted by its supervisor without touching the chain."""

from __future__ import annotations

import random
import tomllib
from pathlib import Path
from typing import Any

import trio

import otp
from node.actors.network import NetworkActor
from node.actors.storage import StorageActor
from node.config import load_config
from node.messages import chain as c
from node.messages import network as n
from node.messages import storage as s
from node.network.memory import MemoryNetwork

from .factories import Clock, start_chain
from .network_helpers import collect, events, net_config, nid, peers_of, wait_for

TREE = Path(__file__).parents[2] / "node" / "supervision.toml"


def test_the_network_supervisor_has_design_section_3s_policy() -> None:
    tree = tomllib.loads(TREE.read_text())["tree"]
    network = next(child for child in tree["children"] if child["id"] == "network")
    assert (network["strategy"], network["intensity"], network["period"]) == (
        "one_for_one", 20, 600.0)
    assert network["backoff"] == {"kind": "progressive", "initial": 1.0, "max": 60.0,
                                  "factor": 1.5}
    assert network["on_exhausted"] == "continue_without"
    actor = network["children"][0]
    assert (actor["name"], actor["start"]) == ("network", "node.actors.network:NetworkActor")
    assert otp.load_tree(TREE, config=load_config(environ={}).as_mapping()) is not None


async def test_a_disabled_network_is_ignored() -> None:
    async with otp.runtime():
        assert await otp.start(NetworkActor, {}, {}, name="network") is None
        assert otp.whereis("network") is None


async def test_produced_blocks_are_gossiped_and_a_crash_leaves_the_chain_alone(
        tmp_path: Path) -> None:
    net = MemoryNetwork(random.Random(3))
    clock = Clock()
    chain_cfg: dict[str, Any] = {"slot_duration_ms": 2000, "bits": 0x207FFFFF}
    async with otp.runtime():
        await start_chain(tmp_path, chain_cfg, clock)
        spec = otp.ChildSpec(
            "network_actor", NetworkActor, name="network",
            kwargs={"config": net_config("aa", ping_interval=5.0),
                    "chain": chain_cfg, "data_dir": str(tmp_path),
                    "transport": net.transport("a")})
        await otp.start(otp.Supervisor, children=[spec], strategy="one_for_one",
                        intensity=20, period=600.0,
                        backoff=otp.Backoff("progressive", initial=1.0, max=60.0, factor=1.5),
                        on_exhausted="continue_without", name="network_sup")
        # A second node with the same genesis, dialling the first.
        genesis = await otp.call("storage", s.GetBlockByHeight(0))
        assert genesis is not None
        await otp.start(StorageActor,
                        str(tmp_path / "b"), name="storage-b")
        await otp.call("storage-b", s.PutBlock(genesis, finalized=genesis.ref()))
        got = await collect("b", n.gossip_topic("consensus_block"))
        await otp.start(NetworkActor, {**net_config("bb", ["a"]),
                                       "ping_interval": 5.0}, chain_cfg,
                        data_dir=str(tmp_path / "b"), storage="storage-b",
                        transport=net.transport("b"), bus_prefix="b/", name="network-b")

        async def connected() -> bool:
            return await peers_of("network-b") == {nid("aa")}
        await wait_for(connected)

        clock.next_slot()
        first = await otp.call("chain", c.ProduceNow())
        assert first is not None and first.height == 1

        async def gossiped(height: int) -> bool:
            return any(e.payload.height == height for e in await events(got))
        await wait_for(lambda: gossiped(1))
        block = next(e for e in await events(got) if e.payload.height == 1)
        assert block.payload.ref() == first and block.peer == nid("aa")

        chain_pid = otp.whereis("chain")
        network_pid = otp.whereis("network")
        assert network_pid is not None
        otp.exit(network_pid, "kill")

        async def restarted() -> bool:
            pid = otp.whereis("network")
            return pid is not None and pid != network_pid
        await wait_for(restarted)
        assert otp.whereis("chain") == chain_pid
        status = await otp.call("chain", c.GetStatus())
        assert status.head == first

        await wait_for(connected)  # B dials again after the dropped session
        clock.next_slot()
        second = await otp.call("chain", c.ProduceNow())
        assert second is not None and second.height == 2
        await wait_for(lambda: gossiped(2))
        await trio.sleep(1)
        heights = [e.payload.height for e in await events(got)]
        assert heights == [1, 2]
