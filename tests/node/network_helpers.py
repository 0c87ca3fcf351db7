"""Builders for the network tests: nodes made of a real StorageActor (LevelDB in a temporary
directory, holding a chain from ``factories.chain``) and a NetworkActor, several in one
runtime (each with its own names and bus prefix), and a collector of bus events."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

import trio

import otp
from node.actors.network import NetworkActor
from node.actors.storage import StorageActor
from node.messages import network as n
from node.messages.storage import PutBlock
from node.network import frames as f
from node.network.handshake import auth_for
from node.network.identity import NodeKey
from node.network.transport import Connection, Transport
from node.types.chain import SignedConsensusBlock

from .factories import chain

#: One chain for every node of a test (same genesis), built once.
CHAIN = chain(12)
GENESIS = CHAIN[0]


async def start_storage(path: Path, name: str, blocks: list[SignedConsensusBlock]) -> None:
    await otp.start(StorageActor, str(path), name=name)
    for block in blocks:
        await otp.call(name, PutBlock(block, head=True,
                                      finalized=block.ref() if block.height == 0 else None))


def key(label: str) -> NodeKey:
    """The network key of the test peer ``label`` (derived from it: runs replay exactly)."""
    return NodeKey.derive(f"test/{label}")


def nid(label: str) -> str:
    """The node id of the test peer ``label``."""
    return key(label).node_id


def net_config(label: str, bootnodes: tuple[str, ...] | list[str] = (),
               **config: Any) -> dict[str, Any]:
    """A ``network`` section for the test peer ``label``: enabled, its key, ``bootnodes``."""
    return {"enabled": True, "node_key": key(label).hex(), "bootnodes": list(bootnodes),
            **config}


async def start_node(tmp_path: Path, name: str, transport: Transport, *,
                     blocks: int = 1, bootnodes: tuple[str, ...] = (), label: str,
                     **config: Any) -> str:
    """Storage ``storage-<name>`` with the first ``blocks`` blocks of :data:`CHAIN`, and
    NetworkActor ``network-<name>`` (bus prefix ``<name>/``, the key of peer ``label``);
    returns the actor's name."""
    storage = f"storage-{name}"
    await start_storage(tmp_path / name / "chain", storage, CHAIN[:blocks])
    cfg = net_config(label, bootnodes, **config)
    actor = f"network-{name}"
    await otp.start(NetworkActor, cfg, {}, data_dir=str(tmp_path / name), storage=storage,
                    transport=transport, bus_prefix=f"{name}/", name=actor)
    return actor


class Collector(otp.GenServer):
    """Collects what is published on ``topics``; ``call(pid, "events")`` returns them."""

    async def init(self, topics: list[str]) -> None:
        self.events: list[Any] = []
        for topic in topics:
            otp.bus.subscribe(topic)

    async def handle_info(self, msg: Any) -> None:
        await trio.lowlevel.checkpoint()
        self.events.append(msg)

    async def handle_call(self, request: Any, from_: otp.From) -> Any:
        await trio.lowlevel.checkpoint()
        return list(self.events)


class Validator(otp.GenServer):
    """Stands in for node ``name``'s ChainActor: finds every gossiped block on ``name``'s bus
    valid and tells its NetworkActor to forward it (``Relay``)."""

    async def init(self, name: str) -> None:
        await trio.lowlevel.checkpoint()
        self.network = f"network-{name}"
        otp.bus.subscribe(f"{name}/{n.gossip_topic('consensus_block')}")

    async def handle_info(self, msg: Any) -> None:
        if isinstance(msg, n.GossipReceived):
            await otp.cast(self.network, n.Relay(msg.topic, msg.payload, msg.peer))
        else:
            await trio.lowlevel.checkpoint()


async def collect(name: str, *topics: str) -> otp.Pid:
    pid = await otp.start(Collector, [f"{name}/{t}" for t in topics])
    assert pid is not None
    return pid


async def events(pid: otp.Pid) -> list[Any]:
    return await otp.call(pid, "events")  # type: ignore[no-any-return]


async def wait_for(predicate: Any, *, timeout: float = 60.0, step: float = 0.05) -> None:
    """Poll ``await predicate()`` until true (virtual time in these tests)."""
    with trio.fail_after(timeout):
        while not await predicate():
            await trio.sleep(step)


async def peers_of(actor: str) -> set[str]:
    return {p.peer for p in await otp.call(actor, n.GetPeers())}


def hello(label: str, *, chain_id: int = 121212, genesis: bytes | None = None,
          version: int = f.PROTOCOL_VERSION) -> f.Hello:
    """The hello of test peer ``label`` (its key, a fresh nonce)."""
    ref = GENESIS.ref()
    return f.Hello(version, chain_id, genesis or GENESIS.hash(), f.Status(ref, ref),
                   key(label).public_key, secrets.token_bytes(32))


async def raw_handshake(conn: Connection, label: str, *, auth: bool = True,
                        **kwargs: Any) -> f.Frame:
    """Be peer ``label`` by hand: send a hello; return the node's first answer. With
    ``auth`` (and when that answer is a hello), also prove ``label``'s key and take the
    node's proof: returns the node's hello once the handshake is complete, or the frame the
    node sent instead of its proof (a refusal)."""
    ours = hello(label, **kwargs)
    await conn.send(f.encode_frame(ours))
    first = f.decode_frame(await conn.receive())
    if not auth or not isinstance(first, f.Hello):
        return first
    await conn.send(f.encode_frame(auth_for(key(label), ours, first)))
    second = f.decode_frame(await conn.receive())
    return first if isinstance(second, f.Auth) else second


async def drain(conn: Connection, *, timeout: float = 30.0) -> tuple[list[f.Frame], str]:
    """Every frame ``conn`` receives until it closes, and why it closed."""
    from node.network.errors import ConnectionClosed

    got: list[f.Frame] = []
    with trio.fail_after(timeout):
        while True:
            try:
                data = await conn.receive()
            except ConnectionClosed as exc:
                return got, exc.reason
            got.append(f.decode_frame(data))
