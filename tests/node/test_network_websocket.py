"""NetworkActors over real WebSockets on 127.0.0.1 (free ports): three nodes connect, gossip
travels A -> B -> C once, blocks_by_range is served from a real StorageActor, and a frame
over the limit closes the connection (trio-websocket's own limit, code 1009)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import trio

import otp
from node.messages import network as n
from node.network import frames as f
from node.network.errors import ConnectionClosed
from node.network.websocket import WebSocketTransport
from node.types import encoding

from .network_helpers import (
    CHAIN,
    Validator,
    collect,
    events,
    nid,
    peers_of,
    raw_handshake,
    start_node,
    wait_for,
)

#: The version byte that starts every frame of this protocol.
V = bytes((f.PROTOCOL_VERSION,))

pytestmark = pytest.mark.real_clock


def ws() -> WebSocketTransport:
    return WebSocketTransport("127.0.0.1", 0, connect_timeout=2.0)


async def test_a_failed_dial_raises_connection_closed_itself() -> None:
    # Not inside an ExceptionGroup: the NetworkActor's dialler catches ConnectionClosed, and
    # a group escaping it crashed the actor whenever a bootnode was not listening yet.
    port = free_port()
    with trio.fail_after(10):
        with pytest.raises(ConnectionClosed, match=f"cannot connect to ws://127.0.0.1:{port}/"):
            async with ws().connect(f"127.0.0.1:{port}"):
                pass  # pragma: no cover


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def test_three_nodes_over_websockets_gossip_and_serve_blocks(tmp_path: Path) -> None:
    with trio.fail_after(20):
        async with otp.runtime():
            a = await start_node(tmp_path, "a", ws(), blocks=12, label="aa")
            address = (await otp.call(a, n.GetNetworkInfo())).listening
            assert address is not None and address.startswith("ws://127.0.0.1:")
            b = await start_node(tmp_path, "b", ws(), bootnodes=(address,), label="bb")
            b_address = (await otp.call(b, n.GetNetworkInfo())).listening
            assert b_address is not None
            c_events = await collect("c", n.gossip_topic("consensus_block"))
            c = await start_node(tmp_path, "c", ws(), bootnodes=(b_address,), label="cc")

            async def line() -> bool:
                return (await peers_of(a) == {nid("bb")}
                        and await peers_of(b) == {nid("aa"), nid("cc")}
                        and await peers_of(c) == {nid("bb")})
            await wait_for(line, timeout=10, step=0.02)

            # A gossips a block; B forwards it once its validator (standing in for its chain)
            # found it valid; C, two hops away, gets it once, from B.
            await otp.start(Validator, "b")
            await otp.cast(a, n.Publish("consensus_block", CHAIN[11]))

            async def arrived() -> bool:
                return bool(await events(c_events))
            await wait_for(arrived, timeout=10, step=0.02)
            await trio.sleep(0.2)
            got = await events(c_events)
            assert len(got) == 1 and got[0].payload == CHAIN[11] and got[0].peer == nid("bb")

            # Each node serves what its own storage holds: B has genesis only, A all 12.
            assert await otp.call(c, n.RequestBlocks(nid("bb"), 0, 5), timeout=10) == CHAIN[:1]
            assert await otp.call(b, n.RequestBlocks(nid("aa"), 0, 1024), timeout=10) == CHAIN


async def test_a_large_range_is_chunked_under_the_frame_limit(tmp_path: Path) -> None:
    """With a 4 KiB frame limit, 12 blocks (~700 bytes each) need several chunks."""
    with trio.fail_after(20):
        async with otp.runtime():
            small = {"max_frame_bytes": 4096}
            a = await start_node(tmp_path, "a", WebSocketTransport(
                "127.0.0.1", 0, max_message_bytes=4096), blocks=12, label="aa", **small)
            address = (await otp.call(a, n.GetNetworkInfo())).listening
            assert address is not None
            async with WebSocketTransport("127.0.0.1", 0).connect(address) as conn:
                await raw_handshake(conn, "ee")
                await conn.send(f.encode_frame(f.BlocksByRange(1, 0, 12)))
                chunks = []
                while not chunks or not chunks[-1].last:
                    frame = f.decode_frame(await conn.receive())
                    if isinstance(frame, f.BlocksChunk):
                        chunks.append(frame)
            assert len(chunks) > 1
            assert all(len(f.encode_frame(c)) <= 4096 for c in chunks)
            blocks = [encoding.decode_signed_block(b) for c in chunks for b in c.blocks]
            assert blocks == CHAIN


async def test_an_oversized_websocket_message_closes_the_connection(tmp_path: Path) -> None:
    with trio.fail_after(20):
        async with otp.runtime():
            a = await start_node(tmp_path, "a", ws(), label="aa")
            watcher = await collect("a", n.PEERS_TOPIC)
            address = (await otp.call(a, n.GetNetworkInfo())).listening
            assert address is not None
            big = WebSocketTransport("127.0.0.1", 0, max_message_bytes=4 << 20)
            async with big.connect(address) as conn:
                await raw_handshake(conn, "ee")
                await conn.send(V + bytes(f.MAX_FRAME_BYTES + 10))
                with pytest.raises(ConnectionClosed):
                    while True:
                        await conn.receive()

            async def banned() -> bool:
                return any(isinstance(e, n.PeerBanned) for e in await events(watcher))
            await wait_for(banned, timeout=5, step=0.02)
            assert otp.whereis(a) is not None
