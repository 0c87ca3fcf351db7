"""Approvals across authorities: three complete nodes (storage, embedded EVM, chain, network)
in one runtime, on the in-memory transport, in virtual time. Each authority produces in its
slots, the others approve over gossip, every node imports at ceil(2n/3) = 2 approvals; with
one authority down the other two go on; with two down production waits and says why."""

from __future__ import annotations

import logging
import random
from pathlib import Path

import pytest
import trio

import otp
from node.actors.chain import ChainActor
from node.actors.engine import EngineActor
from node.actors.network import NetworkActor
from node.actors.storage import StorageActor
from node.crypto import bls
from node.messages import chain as chain_msgs
from node.messages import storage as storage_msgs
from node.network.memory import LinkConditions, MemoryNetwork
from node.types.chain import BlockRef
from node.workflows import chain as rules
from otp.testing.plugin import Simulator

from ..scratch import scratch_dir
from .network_helpers import net_config, wait_for

NAMES = ("a", "b", "c")
KEYS = {name: bls.SecretKey.from_seed(bytes([i + 1]) * 32) for i, name in enumerate(NAMES)}
CHAIN_CFG = {"authorities": [KEYS[n].public_key().to_bytes().hex() for n in NAMES]}
NET_CFG = {"ping_interval": 5.0, "request_timeout": 5.0, "handshake_timeout": 3.0}


async def start_authority(tmp: Path, name: str, net: MemoryNetwork,
                          bootnodes: tuple[str, ...]) -> None:
    """Storage, engine (EVM in memory), chain and network of node ``name``, each registered
    as ``<actor>-<name>``, on bus prefix ``<name>/``; its key is ``KEYS[name]``."""
    data = tmp / name
    (data / "keys").mkdir(parents=True, exist_ok=True)
    (data / "keys" / "authority.key").write_text(KEYS[name].to_bytes().hex())
    storage = f"storage-{name}"
    await otp.start(StorageActor, str(data / "chain"), name=storage)
    await otp.start(EngineActor, None, CHAIN_CFG, storage=storage, name=f"engine-{name}")
    await otp.start(ChainActor, CHAIN_CFG, str(data), storage=storage, engine=f"engine-{name}",
                    network=f"network-{name}", bus_prefix=f"{name}/", name=f"chain-{name}")
    cfg = net_config(name * 2, bootnodes, **NET_CFG)
    await otp.start(NetworkActor, cfg, CHAIN_CFG, data_dir=str(data), storage=storage,
                    transport=net.transport(name), bus_prefix=f"{name}/",
                    name=f"network-{name}")


async def head(name: str) -> BlockRef:
    status = await otp.call(f"chain-{name}", chain_msgs.GetStatus())
    assert status.head is not None
    return status.head


async def block_at(name: str, height: int) -> bytes | None:
    block = await otp.call(f"storage-{name}", storage_msgs.GetBlockByHeight(height))
    return None if block is None else block.hash()


async def stop_node(name: str) -> None:
    for actor in ("network", "chain", "engine", "storage"):
        await otp.stop(f"{actor}-{name}")


def scenario(seed: int) -> object:
    async def main() -> None:
        tmp = scratch_dir("authorities-")
        net = MemoryNetwork(random.Random(f"authorities:{seed}"),
                            default=LinkConditions(latency=0.02, jitter=0.01))
        await start_authority(tmp, "a", net, ())
        await start_authority(tmp, "b", net, ("a",))
        await start_authority(tmp, "c", net, ("a", "b"))

        async def all_at(height: int, *names: str) -> bool:
            heights = [(await head(n)).height for n in names]
            return min(heights) >= height

        await wait_for(lambda: all_at(6, *NAMES), timeout=120)
        # Every node imported the same blocks, each approved by at least two authorities.
        for height in range(1, 7):
            hashes = {await block_at(n, height) for n in NAMES}
            assert len(hashes) == 1, f"the nodes disagree at #{height}"
            block = await otp.call("storage-a", storage_msgs.GetBlockByHeight(height))
            assert block is not None
            assert block.signature.count() >= rules.required_approvals(3)

        # One authority down: the other two still reach two approvals in their slots.
        await stop_node("c")
        reached = (await head("a")).height
        await wait_for(lambda: all_at(reached + 4, "a", "b"), timeout=120)
        assert await block_at("a", reached + 4) == await block_at("b", reached + 4)

        # Two down: below the threshold, a's blocks wait for approvals and nothing is imported.
        await stop_node("b")
        stuck = (await head("a")).height
        await trio.sleep(30)
        assert (await head("a")).height == stuck
        status = await otp.call("chain-a", chain_msgs.GetStatus())
        assert status.waiting is not None and "waits for 2 approvals" in status.waiting

    return main


@pytest.mark.sim(seeds=2)
def test_three_authorities_approve_each_others_blocks(sim: Simulator, sim_seed: int,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="alys.chain")
    sim(scenario(sim_seed), max_virtual_time=600)  # type: ignore[arg-type]
    assert "waits for 2 approvals of 3 authorities (has 1)" in caplog.text
