"""Three NetworkActors on the in-memory transport inside ``otp.testing.simulate``: a jittery,
reordering network, a partition that isolates one node and heals. (No loss here: gossip has
no repair, a lost gossip message is lost, and catching up is the SyncActor's job.) Each seed runs
twice and must give the same trace (the network's faults come from a generator seeded with
the simulation's seed)."""

from __future__ import annotations

import random

import pytest
import trio

import otp
from node.messages import network as n
from node.network.memory import LinkConditions, MemoryNetwork
from otp.testing.plugin import Simulator

from ..scratch import scratch_dir
from .network_helpers import CHAIN, collect, events, nid, peers_of, start_node, wait_for

FAST = {"ping_interval": 5.0, "request_timeout": 5.0, "handshake_timeout": 3.0}


async def _received(pid: otp.Pid) -> list[bytes]:
    return [e.payload.hash() for e in await events(pid) if isinstance(e, n.GossipReceived)]


def scenario(seed: int) -> object:
    async def main() -> None:
        tmp = scratch_dir("net-sim-")
        net = MemoryNetwork(random.Random(f"net:{seed}"), default=LinkConditions(
            latency=0.01, jitter=0.005, reorder=0.01))
        b_got = await collect("b", n.gossip_topic("consensus_block"))
        c_got = await collect("c", n.gossip_topic("consensus_block"))
        a = await start_node(tmp, "a", net.transport("a"), blocks=12, label="aa", **FAST)
        b = await start_node(tmp, "b", net.transport("b"), bootnodes=("a",), label="bb",
                             **FAST)
        c = await start_node(tmp, "c", net.transport("c"), bootnodes=("a", "b"),
                             label="cc", **FAST)

        async def meshed() -> bool:
            return (await peers_of(a) == {nid("bb"), nid("cc")}
                    and await peers_of(b) == {nid("aa"), nid("cc")}
                    and await peers_of(c) == {nid("aa"), nid("bb")})
        await wait_for(meshed, timeout=120)

        await otp.cast(a, n.Publish("consensus_block", CHAIN[5]))

        async def everyone_has(block_hash: bytes, *pids: otp.Pid) -> bool:
            for pid in pids:
                if block_hash not in await _received(pid):
                    return False
            return True
        await wait_for(lambda: everyone_has(CHAIN[5].hash(), b_got, c_got))

        # C is cut off: its links go silent, pings time out, it is disconnected.
        net.partition({"a", "b"}, {"c"})

        async def c_alone() -> bool:
            return not await peers_of(c)
        await wait_for(c_alone, timeout=120)
        await otp.cast(a, n.Publish("consensus_block", CHAIN[6]))
        await wait_for(lambda: everyone_has(CHAIN[6].hash(), b_got))
        await trio.sleep(20)
        assert CHAIN[6].hash() not in await _received(c_got)

        net.heal()
        healed_at = trio.current_time()
        await wait_for(meshed, timeout=300)
        # Redialled within the backoff of the failures during the partition (< 2^5 s).
        assert trio.current_time() - healed_at < 64
        await otp.cast(b, n.Publish("consensus_block", CHAIN[7]))
        await wait_for(lambda: everyone_has(CHAIN[7].hash(), c_got))
        # A ping lost to reordering's delay can end a connection: retry, as a syncing node would.
        for _attempt in range(5):
            answer = await otp.call(c, n.RequestBlocks(nid("aa"), 0, 12), timeout=60)
            if not isinstance(answer, n.RequestFailed):
                break
            assert answer.kind in ("timeout", "disconnected"), answer
            await wait_for(meshed, timeout=300)
        assert answer == CHAIN
        # Every message arrived once, duplicates (over the triangle's two routes) dropped.
        for pid in (b_got, c_got):
            got = await _received(pid)
            assert len(got) == len(set(got))

    return main


@pytest.mark.sim(seeds=3)
def test_a_partition_heals_and_the_network_meshes_again(sim: Simulator, sim_seed: int) -> None:
    result = sim(scenario(sim_seed), max_virtual_time=1200)  # type: ignore[arg-type]
    assert result.virtual_time > 20
