"""NetworkActors over the in-memory transport, in virtual time: handshake, gossip,
blocks_by_range and status from real StorageActors, bans."""

from __future__ import annotations

import contextlib
import random
from pathlib import Path

import otp
from node.messages import network as n
from node.network.gossip import ApproveBlock
from node.network.memory import LinkConditions, MemoryNetwork
from node.network.transport import Connection
from node.types.chain import IndividualApproval

from .network_helpers import CHAIN, collect, events, nid, peers_of, start_node, wait_for


async def test_two_nodes_connect_gossip_and_serve_blocks(tmp_path: Path) -> None:
    net = MemoryNetwork(random.Random(1))
    async with otp.runtime():
        a = await start_node(tmp_path, "a", net.transport("a"), blocks=12, label="aa")
        b_events = await collect("b", n.PEERS_TOPIC, n.gossip_topic("approve_block"))
        b = await start_node(tmp_path, "b", net.transport("b"), bootnodes=("a",), label="bb")

        async def connected() -> bool:
            return await peers_of(a) == {nid("bb")} and await peers_of(b) == {nid("aa")}
        await wait_for(connected)
        first = (await events(b_events))[0]
        assert isinstance(first, n.PeerConnected) and first.peer == nid("aa")
        assert first.status.head == CHAIN[11].ref()

        blocks = await otp.call(b, n.RequestBlocks(nid("aa"), 3, 5), timeout=30)
        assert blocks == CHAIN[3:8]
        assert await otp.call(b, n.RequestBlocks(nid("aa"), 10, 1024), timeout=30) == CHAIN[10:]
        status = await otp.call(b, n.RequestStatus(nid("aa")), timeout=30)
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
        assert received[0].payload == approval and received[0].peer == nid("aa")


async def test_blocks_and_approvals_are_forwarded_only_once_validated(tmp_path: Path) -> None:
    """A line a - b - c: b passes a block on to c only after its chain said ``Relay`` (a
    node never forwards a block it would refuse, so it is never banned for a liar's block);
    other topics (queued PoW) are forwarded on arrival."""
    import trio

    net = MemoryNetwork(random.Random(2))
    async with otp.runtime():
        a = await start_node(tmp_path, "a", net.transport("a"), label="aa")
        b = await start_node(tmp_path, "b", net.transport("b"), bootnodes=("a",), label="bb")
        b_got = await collect("b", n.gossip_topic("consensus_block"))
        c_got = await collect("c", n.gossip_topic("consensus_block"),
                              n.gossip_topic("queue_pow"))
        await start_node(tmp_path, "c", net.transport("c"), bootnodes=("b",), label="cc")

        async def line() -> bool:
            return await peers_of(a) == {nid("bb")} and await peers_of(b) == {nid("aa"), nid("cc")}
        await wait_for(line)
        await otp.cast(a, n.Publish("consensus_block", CHAIN[5]))
        await otp.cast(a, n.Publish("queue_pow", CHAIN[4].message.auxpow_header
                                    or CHAIN[0].message.auxpow_header))

        async def b_has_it() -> bool:
            return bool(await events(b_got))
        await wait_for(b_has_it)
        await trio.sleep(5)
        assert [e.topic for e in await events(c_got)] == ["queue_pow"]  # the block waits
        received = (await events(b_got))[0]
        await otp.cast(b, n.Relay(received.topic, received.payload, received.peer))

        async def c_has_it() -> bool:
            return any(e.topic == "consensus_block" for e in await events(c_got))
        await wait_for(c_has_it)
        block = [e for e in await events(c_got) if e.topic == "consensus_block"]
        assert len(block) == 1 and block[0].payload == CHAIN[5] and block[0].peer == nid("bb")


async def _pattern(seed: int, conditions: LinkConditions) -> list[tuple[float, bytes]]:
    """What ``y`` receives, and when, of 50 messages ``x`` sends 1 ms apart."""
    import trio

    net = MemoryNetwork(random.Random(seed), default=conditions)
    got: list[tuple[float, bytes]] = []
    async with trio.open_nursery() as nursery:
        async def serve(conn: Connection) -> None:
            with trio.move_on_after(5):
                while True:
                    data = await conn.receive()
                    got.append((trio.current_time(), data))

        await nursery.start(net.transport("y").listen, serve)
        async with net.transport("x").connect("y") as conn:
            for i in range(50):
                await conn.send(bytes([i]))
                await trio.sleep(0.001)
            await trio.sleep(6)
        nursery.cancel_scope.cancel()
    start = got[0][0] if got else 0.0
    return [(round(t - start, 9), d) for t, d in got]


async def test_the_memory_network_replays_its_faults_from_the_seed() -> None:
    lossy = LinkConditions(latency=0.01, jitter=0.01, loss=0.2, reorder=0.2)
    first, again, other = (await _pattern(7, lossy), await _pattern(7, lossy),
                           await _pattern(8, lossy))
    assert first == again and first != other
    assert 20 < len(first) < 50  # some lost
    order = [d[0] for _, d in first]
    assert order != sorted(order)  # some reordered
    clean = await _pattern(7, LinkConditions())
    assert [d for _, d in clean] == [bytes([i]) for i in range(50)]


async def test_a_partition_refuses_connections_until_healed() -> None:
    import pytest
    import trio

    from node.network.errors import ConnectionClosed, MessageTooBig

    net = MemoryNetwork(random.Random(0))

    async def echo(conn: Connection) -> None:
        with contextlib.suppress(ConnectionClosed):
            while True:
                await conn.send(await conn.receive())

    async with trio.open_nursery() as nursery:
        await nursery.start(net.transport("y").listen, echo)
        net.partition({"x"}, {"y"})
        with pytest.raises(ConnectionClosed, match="partitioned"):
            async with net.transport("x").connect("y"):
                pass
        net.heal()
        async with net.transport("x").connect("y") as conn:
            await conn.send(b"hi")
            assert await conn.receive() == b"hi"
            await conn.send(bytes(net.max_message_bytes + 1))
            with pytest.raises(ConnectionClosed):
                await conn.receive()
        with pytest.raises(ConnectionClosed, match="no listener"):
            async with net.transport("x").connect("z"):
                pass
        nursery.cancel_scope.cancel()
    assert MessageTooBig.__mro__[1] is ConnectionClosed
