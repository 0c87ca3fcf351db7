"""A NetworkActor facing bad peers over the in-memory transport (virtual time): wrong chains
refused at the handshake, hostile frames, flooding, oversized frames, silence and lies; the
peer is penalised or banned and the actor carries on. Bans expire."""

from __future__ import annotations

import logging
import random
import tempfile
from pathlib import Path
from typing import Any

import pytest
import trio
from hypothesis import HealthCheck, given, settings

import otp
from node.actors.network import NetworkActor
from node.messages import network as n
from node.network import frames as f
from node.network.memory import MemoryNetwork
from otp.testing import simulate

from .network_helpers import (
    CHAIN,
    collect,
    drain,
    events,
    hello,
    net_config,
    nid,
    peers_of,
    raw_handshake,
    start_node,
    wait_for,
)
from .network_strategies import hostile

#: The version byte that starts every frame of this protocol.
V = bytes((f.PROTOCOL_VERSION,))

async def _node(tmp_path: Path, net: MemoryNetwork, **config: Any) -> str:
    return await start_node(tmp_path, "a", net.transport("a"), blocks=12, label="aa",
                            **config)


@pytest.mark.parametrize(("kwargs", "words"), [
    ({"chain_id": 7}, "chain id 7, this node's is 121212"),
    ({"genesis": b"\x11" * 32}, "genesis 1111111111111111"),
    ({"version": 9}, "protocol version 9"),
])
async def test_a_peer_on_another_chain_is_refused_with_the_reason(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, kwargs: dict[str, Any],
        words: str) -> None:
    net = MemoryNetwork(random.Random(0))
    async with otp.runtime():
        a = await _node(tmp_path, net)
        async with net.transport("evil").connect("a") as conn:
            first = await raw_handshake(conn, "ee", auth=False, **kwargs)
            assert isinstance(first, f.Hello)  # the node's own hello comes first
            frames, _reason = await drain(conn)
        assert frames == [f.Refuse(frames[0].reason)] and words in frames[0].reason  # type: ignore[union-attr]
        assert words in caplog.text and "refused" in caplog.text
        assert await peers_of(a) == set()


async def test_two_nodes_on_different_chains_both_log_why(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    net = MemoryNetwork(random.Random(0))
    async with otp.runtime():
        await _node(tmp_path, net)
        await otp.start(
            NetworkActor,
            net_config("bb", ["a"]), {"chain_id": 99},
            data_dir=str(tmp_path / "b"), storage="storage-a", transport=net.transport("b"),
            bus_prefix="b/", name="network-b")

        async def logged() -> bool:
            await otp.call("network-a", n.GetPeers())
            return caplog.text.count("chain id 99, this node's is 121212") >= 1 and (
                caplog.text.count("chain id 121212, this node's is 99") >= 1)
        await wait_for(logged)
        assert await peers_of("network-a") == set() and await peers_of("network-b") == set()


async def _hostile_session(tmp_path: Path, data: bytes) -> None:
    net = MemoryNetwork(random.Random(0))
    async with otp.runtime():
        a = await _node(tmp_path, net)
        pid = otp.whereis(a)
        watcher = await collect("a", n.PEERS_TOPIC)
        async with net.transport("evil").connect("a") as conn:
            assert isinstance(await raw_handshake(conn, "ee"), f.Hello)
            await conn.send(data)
            frames, _ = await drain(conn)
        assert any(isinstance(x, f.Goodbye) and "malformed" in x.reason for x in frames), frames
        seen = await events(watcher)
        assert [type(e) for e in seen] == [n.PeerConnected, n.PeerBanned, n.PeerDisconnected]
        assert seen[1].offence is n.Offence.MALFORMED_FRAME
        assert otp.whereis(a) == pid  # the actor carried on
        async with net.transport("evil").connect("a") as conn:
            refused = await raw_handshake(conn, "ee")
            if isinstance(refused, f.Hello):
                refused = f.decode_frame(await conn.receive())
            assert isinstance(refused, f.Refuse) and "banned" in refused.reason


@pytest.mark.parametrize("data", [
    b"", V, bytes((f.PROTOCOL_VERSION + 1, 0)), V + b"\xff\xff", V + b"\x81" * 500 + b"\x00",
    V + b"\x82\x6dalys.net.Ping\xa1\x65nonce\xc2\x49\x01" + bytes(9),  # nonce = 2^64
    f.encode_frame(f.Gossip("consensus_block", b"not a block")),
], ids=["empty", "version-only", "bad-version", "garbage", "deep", "u64-overflow",
        "bad-gossip-payload"])
async def test_a_hostile_frame_bans_the_peer_and_the_actor_carries_on(
        tmp_path: Path, data: bytes) -> None:
    await _hostile_session(tmp_path, data)


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(hostile)
def test_hostile_frames_over_a_live_connection_in_simulation(data: bytes) -> None:
    try:
        f.decode_frame(data)
    except f.FrameError:
        pass
    else:
        return  # a valid frame by chance
    with tempfile.TemporaryDirectory() as tmp:
        result = simulate(lambda: _hostile_session(Path(tmp), data), seed=1,
                          max_virtual_time=600)
        result.raise_failure()


async def test_an_oversized_frame_closes_the_connection_and_bans(tmp_path: Path) -> None:
    net = MemoryNetwork(random.Random(0))
    async with otp.runtime():
        a = await _node(tmp_path, net)
        watcher = await collect("a", n.PEERS_TOPIC)
        async with net.transport("evil").connect("a") as conn:
            await raw_handshake(conn, "ee")
            await conn.send(V + bytes(f.MAX_FRAME_BYTES))
            _, reason = await drain(conn)
        assert "too big" in reason
        banned = [e for e in await events(watcher) if isinstance(e, n.PeerBanned)]
        assert banned and banned[0].offence is n.Offence.MALFORMED_FRAME
        assert await peers_of(a) == set()


async def test_flooding_bans_the_peer(tmp_path: Path) -> None:
    net = MemoryNetwork(random.Random(0))
    async with otp.runtime():
        await _node(tmp_path, net, max_frames_per_second=50.0)
        watcher = await collect("a", n.PEERS_TOPIC)
        async with net.transport("evil").connect("a") as conn:
            await raw_handshake(conn, "ee")
            for i in range(200):
                await conn.send(f.encode_frame(f.Pong(i)))
            frames, _ = await drain(conn)
        assert f.Goodbye("banned: flooding") in frames
        banned = [e for e in await events(watcher) if isinstance(e, n.PeerBanned)]
        assert banned[0].offence is n.Offence.FLOODING


async def test_a_ban_expires_after_ban_seconds(tmp_path: Path) -> None:
    net = MemoryNetwork(random.Random(0))
    async with otp.runtime():
        a = await _node(tmp_path, net, ban_seconds=300.0)
        async with net.transport("evil").connect("a") as conn:
            await raw_handshake(conn, "ee")
            await otp.cast(a, n.ReportPeer(nid("ee"), n.Offence.INVALID_BLOCK, "bad signature"))
            frames, _ = await drain(conn)
            assert f.Goodbye("banned: invalid_block") in frames
        info = await otp.call(a, n.GetNetworkInfo())
        assert info.banned == (nid("ee"),)
        await trio.sleep(290.0)
        async with net.transport("evil").connect("a") as conn:
            await raw_handshake(conn, "ee")
            still = f.decode_frame(await conn.receive())
            assert isinstance(still, f.Refuse) and "banned" in still.reason
        await trio.sleep(10.0)
        async with net.transport("evil").connect("a") as conn:
            await raw_handshake(conn, "ee")
            assert await peers_of(a) == {nid("ee")}
        assert (await otp.call(a, n.GetNetworkInfo())).banned == ()


async def test_a_silent_peer_costs_a_timeout_and_a_lying_one_an_invalid_answer(
        tmp_path: Path) -> None:
    net = MemoryNetwork(random.Random(0))
    async with otp.runtime():
        a = await _node(tmp_path, net, request_timeout=5.0)
        async with net.transport("evil").connect("a") as conn:
            await raw_handshake(conn, "ee")
            await wait_for(lambda: _has_peer(a, nid("ee")))
            failed = await otp.call(a, n.RequestBlocks(nid("ee"), 1, 4), timeout=60)
            assert failed == n.RequestFailed(nid("ee"), "timeout", "no answer within 5 s")
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_lie, conn)
                lied = await otp.call(a, n.RequestBlocks(nid("ee"), 1, 4), timeout=60)
                nursery.cancel_scope.cancel()
            assert isinstance(lied, n.RequestFailed) and lied.kind == "invalid"
            assert "block 0 is at #5, not #1" in lied.detail
        info = await otp.call(a, n.GetNetworkInfo())
        assert info.banned == ()  # 20 + 50 points: not yet


async def _has_peer(actor: str, peer: str) -> bool:
    return peer in await peers_of(actor)


async def _lie(conn: Any) -> None:
    """Answer every blocks_by_range (the one that timed out too) with the wrong blocks."""
    from node.types import encoding

    while True:
        frame = f.decode_frame(await conn.receive())
        if isinstance(frame, f.BlocksByRange):
            blocks = tuple(encoding.encode_signed_block(b) for b in CHAIN[5:7])
            await conn.send(f.encode_frame(f.BlocksChunk(frame.request_id, blocks, True)))


async def test_a_busy_or_short_range_is_answered_not_hung(tmp_path: Path) -> None:
    net = MemoryNetwork(random.Random(0))
    async with otp.runtime():
        await _node(tmp_path, net)
        async with net.transport("evil").connect("a") as conn:
            await raw_handshake(conn, "ee")
            await conn.send(f.encode_frame(f.BlocksByRange(7, 10, 1024)))
            await conn.send(f.encode_frame(f.BlocksByRange(8, 100, 5)))
            answers: dict[int, f.BlocksChunk] = {}
            while len(answers) < 2:
                frame = f.decode_frame(await conn.receive())
                if isinstance(frame, f.BlocksChunk):
                    answers[frame.request_id] = frame
        assert len(answers[7].blocks) == 2 and answers[7].last  # heights 10 and 11
        assert answers[8].blocks == () and answers[8].last


async def test_reported_peers_are_banned_and_told(tmp_path: Path) -> None:
    net = MemoryNetwork(random.Random(0))
    async with otp.runtime():
        a = await _node(tmp_path, net)
        b = await start_node(tmp_path, "b", net.transport("b"), bootnodes=("a",),
                             label="bb")
        await wait_for(lambda: _has_peer(a, nid("bb")))
        await otp.cast(a, n.ReportPeer(nid("bb"), n.Offence.INVALID_BLOCK, "bad parent"))
        await wait_for(lambda: _no_peers(b))
        assert (await otp.call(a, n.GetNetworkInfo())).banned == (nid("bb"),)


async def _no_peers(actor: str) -> bool:
    return not await peers_of(actor)


def test_hello_helper_matches_the_chain() -> None:
    assert hello("ee").genesis_hash == CHAIN[0].hash()


async def test_copies_of_gossip_are_dropped_but_a_bad_one_costs_each_sender(
        tmp_path: Path) -> None:
    """A gossip frame seen already is dropped before it is decoded (every node encodes a
    message into the same bytes) — but only once it was handled: copies of a frame whose
    payload does not decode are decoded and judged each time, so two peers sending the same
    bad frame are both banned; copies of a good one reach the bus once."""
    net = MemoryNetwork(random.Random(0))
    bad = f.encode_frame(f.Gossip("queue_pow", b"not a header"))
    good = f.encode_frame(f.Gossip("pegout_signatures", b"opaque bytes of the bridge"))
    async with otp.runtime():
        a = await _node(tmp_path, net)
        watcher = await collect("a", n.PEERS_TOPIC)
        gossip = await collect("a", n.gossip_topic("pegout_signatures"))
        for label in ("e1", "e2"):
            async with net.transport(label).connect("a") as conn:
                assert isinstance(await raw_handshake(conn, label), f.Hello)
                await conn.send(good)
                await conn.send(good)
                await conn.send(bad)
                frames, _ = await drain(conn)
            assert any(isinstance(x, f.Goodbye) and "malformed" in x.reason for x in frames)
        banned = [e.peer for e in await events(watcher) if isinstance(e, n.PeerBanned)]
        assert banned == [nid("e1"), nid("e2")]
        got = [e for e in await events(gossip) if isinstance(e, n.GossipReceived)]
        assert [(e.payload, e.peer) for e in got] == [(b"opaque bytes of the bridge", nid("e1"))]
        assert otp.whereis(a) is not None
