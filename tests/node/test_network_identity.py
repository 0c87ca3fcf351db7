"""Node identities: a node id is derived from a key the peer proves it holds in the handshake,
so nobody can take another node's id — neither to be connected in its place nor to get it
banned by misbehaving under its name."""

from __future__ import annotations

import random
import stat
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

import otp
from node.actors.network import NetworkActor
from node.config import ConfigError, NodeConfig, structure_section
from node.messages import network as n
from node.network import frames as f
from node.network.errors import NetworkError
from node.network.handshake import auth_for, check_auth
from node.network.identity import (
    NodeKey,
    handshake_digest,
    load_or_create_node_key,
    node_id_of,
    verify_handshake,
)
from node.network.memory import MemoryNetwork

from .network_helpers import (
    CHAIN,
    drain,
    hello,
    key,
    nid,
    peers_of,
    start_node,
    start_storage,
    wait_for,
)


def test_the_node_id_is_derived_from_the_key() -> None:
    k = NodeKey.derive("x")
    assert k.node_id == node_id_of(k.public_key) and len(k.node_id) == 32
    assert NodeKey.from_hex(k.hex(), "here") == k
    assert NodeKey.derive("y").node_id != k.node_id
    assert k.hex() not in repr(k) and k.node_id in repr(k)


def test_the_key_file_is_made_once_for_its_owner_only(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "node_key"
    first = load_or_create_node_key(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_or_create_node_key(path) == first


@pytest.mark.parametrize("text", ["", "zz", "00" * 32, "ff" * 32, "ab" * 31, "ab" * 33])
def test_a_bad_key_file_says_where_and_what(tmp_path: Path, text: str) -> None:
    path = tmp_path / "node_key"
    path.write_text(text)
    with pytest.raises(NetworkError, match=f"{path}: a node key is 64 hex digits"):
        load_or_create_node_key(path)


@pytest.mark.parametrize("text", ["nothex", "00" * 32, "ff" * 32, "ab" * 16])
def test_a_bad_configured_key_is_a_config_error(text: str) -> None:
    with pytest.raises(ConfigError, match="node_key"):
        structure_section({"network": {"node_key": text}}, NodeConfig, "config")


@given(st.binary(max_size=40), st.binary(max_size=70), st.binary(max_size=40))
def test_verification_of_any_bytes_answers_and_never_raises(
        public: bytes, signature: bytes, digest: bytes) -> None:
    assert verify_handshake(public, signature, digest) in (True, False)


def test_a_proof_answers_one_nonce_only() -> None:
    a, b = key("aa"), key("bb")
    ours, theirs = hello("aa"), hello("bb")
    proof = auth_for(b, theirs, ours)
    assert check_auth(ours, theirs, proof) is None
    # The same proof replayed against a new hello (a new nonce) proves nothing.
    again = hello("aa")
    assert check_auth(again, theirs, proof) is not None
    # A hello naming b's key with a proof made by another key proves nothing either.
    assert check_auth(ours, theirs, auth_for(a, theirs, ours)) is not None
    digest = handshake_digest(121212, ours.genesis_hash, ours.nonce, b.public_key)
    assert verify_handshake(b.public_key, proof.signature, digest)


async def test_a_peer_cannot_take_another_nodes_id(tmp_path: Path) -> None:
    """An impostor says hello with b's public key but cannot sign with it: it is refused, is
    never connected under b's id, and b — connecting after it — is not banned or refused."""
    net = MemoryNetwork(random.Random(0))
    async with otp.runtime():
        a = await start_node(tmp_path, "a", net.transport("a"), blocks=3, label="aa")
        async with net.transport("evil").connect("a") as conn:
            ours = hello("bb")  # b's key, not ours
            await conn.send(f.encode_frame(ours))
            theirs = f.decode_frame(await conn.receive())
            assert isinstance(theirs, f.Hello)
            await conn.send(f.encode_frame(auth_for(key("evil"), ours, theirs)))
            frames, _ = await drain(conn)
        refusals = [x for x in frames if isinstance(x, f.Refuse)]
        assert refusals and "does not prove the key" in refusals[0].reason, frames
        assert await peers_of(a) == set()
        info = await otp.call(a, n.GetNetworkInfo())
        assert info.banned == ()
        # The real b connects and is known by its id.
        await start_node(tmp_path, "b", net.transport("b"), bootnodes=("a",), label="bb")

        async def connected() -> bool:
            return await peers_of(a) == {nid("bb")}
        await wait_for(connected)


async def test_a_nodes_id_survives_a_restart(tmp_path: Path) -> None:
    """Without ``network.node_key`` the key is made in the data directory once, so the node
    keeps its id (and its peers' scores and bans of it) across restarts."""
    net = MemoryNetwork(random.Random(1))
    async with otp.runtime():
        await start_storage(tmp_path / "chain", "storage", CHAIN[:1])
        ids = []
        for _ in range(2):
            await otp.start(NetworkActor, {"enabled": True}, {}, data_dir=str(tmp_path),
                            transport=net.transport("a"), name="network")
            ids.append((await otp.call("network", n.GetNetworkInfo())).node_id)
            await otp.stop("network")
        assert ids[0] == ids[1]
        assert (tmp_path / "keys" / "node_key").exists()
