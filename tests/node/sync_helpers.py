"""Builders for the sync tests: a chain of real blocks (payloads from the embedded EVM, signed
by one authority), source nodes that serve it (storage + NetworkActor), hand-written peers
that misbehave, a node B made of the real actors (storage, engine, chain, network, sync),
and verifiers that run inline (no thread under ``otp.testing.simulate``) or wait for a gate."""

from __future__ import annotations

import contextlib
import functools
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar, TypeVarTuple, Unpack

import attrs
import trio

import otp
from node.actors.chain import EMPTY_SIGNATURE, ChainActor
from node.actors.engine import EngineActor
from node.actors.network import NetworkActor
from node.actors.storage import ChainStore, StorageActor
from node.actors.sync import SyncActor
from node.config import ChainConfig, structure_section
from node.crypto.verifier import SignatureVerifier
from node.execution.embedded import EmbeddedEngine
from node.integration.engine import build_block, commit_block
from node.messages.storage import PutBlock
from node.network import frames as f
from node.network.errors import ConnectionClosed
from node.network.handshake import auth_for
from node.network.memory import MemoryNetwork
from node.network.transport import Connection
from node.types import encoding
from node.types.chain import AggregateApproval, AuxPowHeader, ConsensusBlock, SignedConsensusBlock
from node.workflows import chain as rules
from otp.testing._sim import SIMULATED_EPOCH

from ..scratch import scratch_dir
from .factories import authority_keys
from .network_helpers import key, net_config

_T = TypeVar("_T")
_Ts = TypeVarTuple("_Ts")

KEY = authority_keys(1)[0]
DURATION_MS = 2000
CHAIN_CFG: dict[str, Any] = {
    "slot_duration_ms": DURATION_MS,
    "bits": 0x207FFFFF,
    "max_blocks_without_pow": 10**9,
    "authorities": ["0x" + KEY.public_key().to_bytes().hex()],
}
#: Slots well before the simulation's clock (blocks from the future are refused).
FIRST_SLOT = int(SIMULATED_EPOCH * 1000) // DURATION_MS - 100_000
#: Quick network settings for virtual time.
NET = {"ping_interval": 5.0, "request_timeout": 5.0, "handshake_timeout": 3.0}
SYNC = {"batch_size": 32, "window": 256, "request_timeout": 8.0, "import_batch": 16}


async def build(n: int, add_transactions: Callable[[EmbeddedEngine, int], None] | None = None
                ) -> list[SignedConsensusBlock]:
    """Genesis and ``n`` blocks signed by :data:`KEY`; ``add_transactions(engine, height)``
    puts the transactions of block ``height`` in the engine's pool (none by default)."""
    cfg: ChainConfig = structure_section(CHAIN_CFG, ChainConfig, "chain")
    engine = EmbeddedEngine()
    recipient = bytes.fromhex(cfg.fee_recipient.removeprefix("0x"))
    zero = bytes(32)
    genesis = SignedConsensusBlock(
        ConsensusBlock(zero, 0, engine.genesis_payload(),
                       AuxPowHeader(zero, zero, cfg.bits, cfg.chain_id, 0, None, recipient)),
        AggregateApproval(0, EMPTY_SIGNATURE))
    blocks = [genesis]
    finalized = genesis.message.execution_payload.block_hash
    for height in range(1, n + 1):
        if add_transactions is not None:
            add_transactions(engine, height)
        parent = blocks[-1]
        slot = FIRST_SLOT + height
        timestamp = rules.payload_timestamp(slot, DURATION_MS,
                                            parent.message.execution_payload.timestamp)
        assert timestamp is not None
        payload = await build_block(engine, parent.message.execution_payload.block_hash,
                                    finalized, timestamp, recipient, [])
        await commit_block(engine, payload, finalized)
        blocks.append(rules.sign_block(rules.new_block(parent, slot, payload, None), KEY, 0))
    engine.close()
    return blocks


@functools.cache
def built_chain(n: int) -> tuple[SignedConsensusBlock, ...]:
    """Genesis and ``n`` blocks after it, as node B's chain would accept them (built once per
    test session, outside any simulation)."""
    return tuple(trio.run(build, n))


#: The length of the chain the sync tests use.
CHAIN_N = 150


@functools.cache
def stored(head: int) -> Path:
    """A LevelDB directory holding blocks 0..``head`` of :func:`built_chain` (CHAIN_N),
    written once (outside any simulation) and copied for each node."""
    path = scratch_dir(f"sync-chain-{head}-") / "chain"
    store = ChainStore(str(path))
    for block in built_chain(CHAIN_N)[:head + 1]:
        store.put_block(PutBlock(block, head=True,
                                 finalized=block.ref() if block.height == 0 else None),
                        sync=False)
    store.close()
    return path


async def start_source(tmp: Path, name: str, net: MemoryNetwork, head: int = CHAIN_N, *,
                       bootnodes: tuple[str, ...] = (), **config: Any) -> str:
    """A node serving blocks 0..``head`` (of :func:`stored`): ``storage-<name>`` and
    ``network-<name>`` (bus prefix ``<name>/``, node id ``<name><name>``), listening on
    ``<name>``."""
    path = tmp / name / "chain"
    shutil.copytree(stored(head), path)
    await otp.start(StorageActor, str(path), name=f"storage-{name}")
    cfg = net_config(name * 2, bootnodes, **NET, **config)
    await otp.start(NetworkActor, cfg, CHAIN_CFG, data_dir=str(tmp / name),
                    storage=f"storage-{name}", transport=net.transport(name),
                    bus_prefix=f"{name}/", name=f"network-{name}")
    return f"network-{name}"


class InlineVerifier(SignatureVerifier):
    """Verifies in the calling task (no thread: deterministic under ``simulate``, where a
    thread's real time would let the virtual clock jump)."""

    async def run(self, fn: Callable[[Unpack[_Ts]], _T], *args: *_Ts) -> _T:
        await trio.lowlevel.checkpoint()
        return fn(*args)


class GatedVerifier(InlineVerifier):
    """Waits for :attr:`gate` before each run, counting the runs waiting."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = trio.Event()
        self.waiting = 0

    async def run(self, fn: Callable[[Unpack[_Ts]], _T], *args: *_Ts) -> _T:
        self.waiting += 1
        await self.gate.wait()
        self.waiting -= 1
        return await super().run(fn, *args)


def sync_child(tmp: Path, verifier: SignatureVerifier | None = None,
               **config: Any) -> otp.ChildSpec:
    return otp.ChildSpec("sync", SyncActor, name="sync", kwargs={
        "config": {**SYNC, **config}, "network": {"enabled": True}, "chain": CHAIN_CFG,
        "data_dir": str(tmp / "b"), "verifier": verifier or InlineVerifier()})


async def start_b(tmp: Path, net: MemoryNetwork, bootnodes: tuple[str, ...], *,
                  authority: bool = False, verifier: SignatureVerifier | None = None,
                  supervised: bool = False, **config: Any) -> None:
    """Node B: storage, engine, chain (not producing by itself: ``ProduceNow``), network
    (node id ``bb``, dialling ``bootnodes``) and sync, under their usual names. With
    ``authority``, B holds the chain's authority key (and produces once synced); with
    ``supervised``, the network actor and sync run under a supervisor with the network
    supervisor's policy (``network_sup``)."""
    data = tmp / "b"
    if authority:
        (data / "keys").mkdir(parents=True, exist_ok=True)
        (data / "keys" / "authority.key").write_text(KEY.to_bytes().hex() + "\n")
    await otp.start(StorageActor, str(data / "chain"), name="storage")
    await otp.start(EngineActor, None, CHAIN_CFG, data_dir=str(data), name="engine")
    await otp.start(ChainActor, CHAIN_CFG, str(data), produce=False, name="chain")
    network = otp.ChildSpec("network_actor", NetworkActor, name="network", kwargs={
        "config": net_config("bb", bootnodes, **NET),
        "chain": CHAIN_CFG, "data_dir": str(data), "transport": net.transport("b")})
    children = [network, sync_child(tmp, verifier, **config)]
    if supervised:
        await otp.start(otp.Supervisor, children=children, strategy="one_for_one",
                        intensity=20, period=600.0,
                        backoff=otp.Backoff("progressive", initial=1.0, max=60.0, factor=1.5),
                        on_exhausted="continue_without", name="network_sup")
        return
    for spec in children:
        await otp.start(spec.start, *spec.args, name=spec.name, **spec.kwargs)


# -- peers that misbehave ------------------------------------------------------------------------


@attrs.define
class BadPeer:
    """A hand-written peer listening on ``address``: it says hello with ``head`` and answers
    blocks-by-range as ``behaviour`` says: ``stall`` (never), ``disconnect`` (a first chunk,
    then it hangs up), ``bad_signature`` (its blocks carry other blocks' signatures),
    ``short`` (the blocks it has, up to ``has``, whatever its hello claimed). Answers pings
    and status requests."""

    address: str
    behaviour: str
    blocks: tuple[SignedConsensusBlock, ...]
    head: int
    has: int = 0
    label: str = "ee"
    requests: int = 0
    connections: int = 0

    async def serve(self, net: MemoryNetwork, *,
                    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED) -> None:
        await net.transport(self.address).listen(self._session, task_status=task_status)

    def _hello(self) -> f.Hello:
        head = self.blocks[min(self.head, len(self.blocks) - 1)].ref()
        if self.head >= len(self.blocks):
            head = attrs.evolve(head, height=self.head)
        status = f.Status(head, self.blocks[0].ref())
        return f.Hello(f.PROTOCOL_VERSION, 121212, self.blocks[0].hash(), status,
                       key(self.label).public_key, bytes(32))

    async def _session(self, conn: Connection) -> None:
        self.connections += 1
        with contextlib.suppress(ConnectionClosed):
            theirs = f.decode_frame(await conn.receive())  # its hello
            ours = self._hello()
            await conn.send(f.encode_frame(ours))
            if not isinstance(theirs, f.Hello):
                return
            await conn.receive()  # its proof (not checked: this peer trusts everyone)
            await conn.send(f.encode_frame(auth_for(key(self.label), ours, theirs)))
            while True:
                frame = f.decode_frame(await conn.receive())
                match frame:
                    case f.Ping(nonce):
                        await conn.send(f.encode_frame(f.Pong(nonce)))
                    case f.StatusRequest(request_id):
                        await conn.send(f.encode_frame(f.StatusResponse(
                            request_id, self._hello().status)))
                    case f.BlocksByRange(request_id, start, count):
                        self.requests += 1
                        if not await self._answer(conn, request_id, start, count):
                            return

    async def _answer(self, conn: Connection, request_id: int, start: int, count: int) -> bool:
        wanted = list(self.blocks[start:start + count])
        match self.behaviour:
            case "stall":
                return True
            case "disconnect":
                raw = tuple(encoding.encode_signed_block(b) for b in wanted[:count // 2])
                await conn.send(f.encode_frame(f.BlocksChunk(request_id, raw, False)))
                return False
            case "bad_signature":
                others = self.blocks[start + 1:start + count + 1]
                wanted = [attrs.evolve(b, signature=o.signature)
                          for b, o in zip(wanted, others, strict=False)]
            case "short":
                wanted = [b for b in wanted if b.height <= self.has]
        raw = tuple(encoding.encode_signed_block(b) for b in wanted)
        await conn.send(f.encode_frame(f.BlocksChunk(request_id, raw, True)))
        return True
