"""NetworkActors over the in-memory transport, in virtual time: handshake, gossip,
blocks_by_range and status from real StorageActors, bans."""

from __future__ import annotations

import random
from pathlib import Path

import otp
from node.messages import network as n
from node.network.gossip import ApproveBlock
from node.network.memory import MemoryNetwork
from node.types.chain import IndividualApproval

from .network_helpers import CHAIN, collect, events, peers_of, start_node, wait_for


async def test_two_nodes_connect_gossip_and_serve_blocks(tmp_path: Path) -> None:
    net = MemoryNetwork(random.Random(1))
    async with otp.runtime():
        a = await start_node(tmp_path, "a", net.transport("a"), blocks=12, node_id="aa")
        b_events = await collect("b", n.PEERS_TOPIC, n.gossip_topic("approve_block"))
        b = await start_node(tmp_path, "b", net.transport("b"), bootnodes=("a",), node_id="bb")

        async def connected() -> bool:
            return await peers_of(a) == {"bb"} and await peers_of(b) == {"aa"}
        await wait_for(connected)
        first = (await events(b_events))[0]
        assert isinstance(first, n.PeerConnected) and first.peer == "aa"
        assert first.status.head == CHAIN[11].ref()

        blocks = await otp.call(b, n.RequestBlocks("aa", 3, 5), timeout=30)
        assert blocks == CHAIN[3:8]
        assert await otp.call(b, n.RequestBlocks("aa", 10, 1024), timeout=30) == CHAIN[10:]
        status = await otp.call(b, n.RequestStatus("aa"), timeout=30)
        assert isinstance(status, n.Status) and status.head == CHAIN[11].ref()
        missing = await otp.call(b, n.RequestBlocks("zz", 0, 1))
        assert missing == n.RequestFailed("zz", "no_peer", "not connected")

        approval = ApproveBlock(CHAIN[3].hash(), IndividualApproval(bytes(96), 1))
        await otp.cast(a, n.Publish("approve_block", approval))
        await otp.cast(a, n.Publish("approve_block", approval))  # a duplicate: once only

        async def got() -> bool:
            return any(isinstance(e, n.GossipReceived) for e in await events(b_events))
        await wait_for(got)
        await otp.call(b, n.GetPeers())
        received = [e for e in await events(b_events) if isinstance(e, n.GossipReceived)]
        assert len(received) == 1
        assert received[0].payload == approval and received[0].peer == "aa"
