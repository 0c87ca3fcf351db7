"""A whole network of Alys nodes in one runtime, for ``otp.testing.simulate`` and benchmarks.

:class:`SimNetwork` starts N complete nodes (N up to 15, the width of the approval bitfield)
side by side in the current otp runtime, connected by a
:class:`~node.network.memory.MemoryNetwork` whose latency, jitter, loss, reordering and
partitions come from one seeded generator. Each node is the tree that ships,
``node/supervision.toml``, loaded with the node's own configuration by ``otp.load_tree``, so a
simulation runs the real supervisors with their strategies, intensities, backoffs and
``on_exhausted`` policies. The tree is then adapted, and only in these ways:

* every registered name ``X`` becomes ``X-<node>`` (``chain-b``), every bus topic gets the
  prefix ``<node>/``, and each actor is told its siblings' names (``storage=``,
  ``engine=``, ``network_actor=``...), so N nodes share one registry and one bus;
* the NetworkActor gets the node's in-memory transport; the SyncActor verifies signatures in
  its own task (:class:`InlineVerifier`): a worker thread would take real time, which lets
  a simulation's virtual clock jump while it runs;
* the actors that serve sockets on 127.0.0.1 (JSON-RPC, Ethereum JSON-RPC, metrics) are left
  out: they take no part in what nodes say to each other, and real sockets are not
  deterministic. A worker of the shipped tree that this module does not know is an error
  (:class:`UnknownActor`), so a new actor is never left out silently.

This module lives in ``node`` rather than in the tests because the benchmark
(``python -m bench netsim``) runs the same network, and because it is typed and checked with
the node (mypy --strict). It uses otp's public API and the node's actors only.

Also here: :class:`ByzantinePeer`, a peer that speaks the wire protocol by hand to send
garbage frames, blocks with bad signatures and blocks on unknown parents (and answers
range requests with a chain that does not link); :class:`ChainWatcher`, which follows every
node's imports and bans on the bus and records what breaks an invariant.
"""

from __future__ import annotations

import contextlib
import random
import shutil
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Final, TypeVar, TypeVarTuple, Unpack

import attrs
import trio

import otp

from .config import NodeConfig, structure_section
from .crypto import bls
from .crypto.verifier import SignatureVerifier
from .errors import CALL_FAILURES
from .messages import chain as chain_msgs
from .messages.network import PEERS_TOPIC, PeerBanned
from .network import frames as f
from .network.errors import ConnectionClosed, FrameError, NetworkError
from .network.gossip import CONSENSUS_BLOCK, encode_payload
from .network.handshake import auth_for, hello_for
from .network.identity import NodeKey
from .network.memory import LinkConditions, MemoryNetwork
from .network.transport import Connection
from .types import encoding
from .types.chain import AggregateApproval, BlockRef, SignedConsensusBlock
from .workflows import chain as chain_rules

__all__ = [
    "DEFAULT_TREE",
    "FORGED",
    "MAX_NODES",
    "ByzantinePeer",
    "ChainWatcher",
    "InlineVerifier",
    "SimNetwork",
    "SimNode",
    "UnknownActor",
    "node_tree",
]

_T = TypeVar("_T")
_Ts = TypeVarTuple("_Ts")

#: The tree every simulated node runs: the one the node ships.
DEFAULT_TREE: Final = Path(__file__).resolve().parent / "supervision.toml"
#: The most authorities a block's approval bitfield can name (the original's limit).
MAX_NODES: Final = 15
#: Workers of the shipped tree left out of a simulated node (they serve sockets on
#: 127.0.0.1 and take no part in what nodes say to each other).
LEFT_OUT: Final = frozenset({
    "node.actors.rpc:RpcActor",
    "node.actors.eth_rpc:EthRpcActor",
    "node.actors.metrics:MetricsActor",
})
_NAMES: Final = "abcdefghijklmno"
#: The execution payload hash of every block :class:`ByzantinePeer` forges.
FORGED: Final = bytes([0xBD]) * 32


class UnknownActor(NetworkError):
    """The shipped tree has a worker this module does not know how to wire."""


class InlineVerifier(SignatureVerifier):
    """Verifies in the calling task: no thread, so nothing runs in real time behind the
    virtual clock's back (deterministic under ``otp.testing.simulate``)."""

    async def run(self, fn: Callable[[Unpack[_Ts]], _T], *args: *_Ts) -> _T:
        await trio.lowlevel.checkpoint()
        return fn(*args)


@attrs.frozen
class SimNode:
    """One node of a :class:`SimNetwork`: ``name`` (its address on the network, the suffix
    of its actors' names, its bus prefix), its network key (derived from its name, so a
    seed replays exactly), its authority key and its data directory."""

    index: int
    name: str
    node_key: NodeKey = attrs.field(eq=False, repr=False)
    key: bls.SecretKey = attrs.field(eq=False, repr=False)
    data_dir: Path

    @property
    def node_id(self) -> str:
        """Its node id on the network (from its network key)."""
        return self.node_key.node_id

    def actor(self, name: str) -> str:
        """The registered name of this node's actor ``name`` (``chain`` -> ``chain-b``)."""
        return f"{name}-{self.name}"

    @property
    def prefix(self) -> str:
        return f"{self.name}/"


def _wiring(node: SimNode, net: MemoryNetwork,
            verifier: Callable[[], SignatureVerifier]) -> dict[str, dict[str, Any]]:
    """The keyword arguments each known worker gets on top of those of the tree file."""
    a = node.actor
    return {
        # No fsync: the simulation has no power cut to lose an unsynced write to (a killed
        # actor, as a killed process, loses nothing LevelDB was handed), and four nodes'
        # waits for the disk would add up in its one thread.
        "node.actors.storage:StorageActor": {"fsync": False},
        "node.actors.engine:EngineActor": {"storage": a("storage")},
        "node.actors.chain:ChainActor": {
            "storage": a("storage"), "engine": a("engine"), "network": a("network"),
            "bridge": a("bridge"), "federation": a("federation"), "bus_prefix": node.prefix},
        "node.actors.auxpow:AuxPowActor": {"chain_actor": a("chain")},
        "node.actors.miner:DevMinerActor": {"auxpow": a("auxpow")},
        "node.actors.network:NetworkActor": {
            "storage": a("storage"), "transport": net.transport(node.name),
            "bus_prefix": node.prefix},
        # Disabled unless the settings enable it (it then needs a Bitcoin node to poll).
        "node.actors.bridge:BridgeActor": {"storage": a("storage")},
        "node.actors.federation:FederationActor": {
            "storage": a("storage"), "engine": a("engine"), "network": a("network"),
            "bus_prefix": node.prefix},
        "node.actors.sync:SyncActor": {
            "network_actor": a("network"), "chain_actor": a("chain"), "bus_prefix": node.prefix,
            "verifier": verifier()},
    }


def node_tree(spec: otp.TreeSpec, node: SimNode, net: MemoryNetwork, *,
              verifier: Callable[[], SignatureVerifier] = InlineVerifier) -> otp.TreeSpec:
    """``spec`` (a node's tree, loaded with its configuration) adapted to share a runtime with
    other nodes, as the module docstring says: names suffixed, bus topics prefixed, siblings
    named, the in-memory transport and an inline verifier given, socket servers left out."""
    wiring = _wiring(node, net, verifier)

    def adapt(item: Any, path: str) -> Any:
        name = None if item.name is None else node.actor(item.name)
        if isinstance(item, otp.SupervisorNode):
            children = tuple(c for c in (adapt(child, f"{path}.children[{i}]")
                                         for i, child in enumerate(item.children))
                             if c is not None)
            return attrs.evolve(item, name=name, children=children)
        if item.start in LEFT_OUT:
            return None
        extra = wiring.get(item.start)
        if extra is None:
            raise UnknownActor(f"{path} ({item.start}) is a worker node.simnet does not know "
                               "how to wire into a simulated network")
        if not isinstance(item.args, dict):
            raise UnknownActor(f"{path} ({item.start}) has positional args; node.simnet "
                               "adds keyword arguments")
        return attrs.evolve(item, name=name, args={**item.args, **extra})

    adapted: otp.TreeSpec = adapt(spec, "tree")
    return attrs.evolve(adapted, name=node.actor(spec.id))


def _merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


#: What every simulated node is configured with, before the caller's settings: blocks every
#: 2 s, regtest-easy PoW (a proof takes a couple of hashes), PoW at most every 10 blocks.
BASE_SETTINGS: Final[Mapping[str, Any]] = {
    "chain": {"slot_duration_ms": 2000, "bits": 0x207FFFFF, "pow_target_spacing": 1,
              "max_blocks_without_pow": 10},
    "miner": {"grinder": "inline", "interval": 2.0},
    "network": {"enabled": True},
}


class SimNetwork:
    """N complete nodes in the current runtime (see the module docstring).

    ``base_dir`` holds one data directory per node (``<base_dir>/<name>``); :meth:`reset`
    empties it, so every run of a seed starts alike. ``rng`` draws the network's faults;
    ``conditions`` are every link's defaults; the dev miner runs on node ``miner`` (None: no
    miner); ``settings`` is a nested mapping of configuration applied to every node over
    :data:`BASE_SETTINGS`. Every node is an authority; node ``i`` dials nodes ``0..i-1``.
    """

    def __init__(self, base_dir: Path, count: int, *, rng: random.Random,
                 conditions: LinkConditions | None = None, miner: int | None = 0,
                 settings: Mapping[str, Any] | None = None, tree: Path = DEFAULT_TREE) -> None:
        if not 1 <= count <= MAX_NODES:
            raise ValueError(f"a simulated network has 1 to {MAX_NODES} nodes, not {count}")
        self.base_dir = base_dir
        self.tree = tree
        self.net = MemoryNetwork(rng, default=conditions or LinkConditions())
        self.nodes = tuple(
            SimNode(i, _NAMES[i], NodeKey.derive(f"simnet/{_NAMES[i]}"),
                    bls.SecretKey.from_seed(bytes([i + 1]) * 32), base_dir / _NAMES[i])
            for i in range(count))
        self.authorities = tuple(n.key.public_key().to_bytes().hex() for n in self.nodes)
        self.miner = miner
        self.settings = _merge(dict(BASE_SETTINGS), settings or {})
        #: The root supervisor of each running node, by name.
        self.roots: dict[str, otp.Pid] = {}

    def __getitem__(self, name: str) -> SimNode:
        return next(n for n in self.nodes if n.name == name)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(n.name for n in self.nodes)

    @property
    def node_ids(self) -> tuple[str, ...]:
        """The network's own nodes' ids (each derived from its network key)."""
        return tuple(n.node_id for n in self.nodes)

    def reset(self) -> None:
        """Empty ``base_dir`` and write each node's authority key."""
        shutil.rmtree(self.base_dir, ignore_errors=True)
        for node in self.nodes:
            keys = node.data_dir / "keys"
            keys.mkdir(parents=True)
            (keys / "authority.key").write_text(node.key.to_bytes().hex() + "\n")

    def config(self, node: SimNode) -> NodeConfig:
        """Node ``node``'s configuration."""
        data = _merge(self.settings, {
            "data_dir": str(node.data_dir),
            "chain": {"authorities": list(self.authorities)},
            "miner": {"enabled": node.index == self.miner},
            "network": {"node_key": node.node_key.hex(),
                        "bootnodes": [n.name for n in self.nodes[:node.index]]},
        })
        config: NodeConfig = structure_section(data, NodeConfig, "config")
        return config

    def spec(self, node: SimNode) -> otp.TreeSpec:
        """Node ``node``'s tree: the shipped tree with its configuration, adapted."""
        spec = otp.load_tree(self.tree, self.config(node).as_mapping())
        return node_tree(spec, node, self.net)

    async def start(self, node: SimNode) -> otp.Pid:
        """Start ``node``'s tree; returns its root supervisor."""
        root = await otp.start_tree(self.spec(node))
        self.roots[node.name] = root
        return root

    async def start_all(self) -> None:
        for node in self.nodes:
            await self.start(node)

    def is_running(self, node: SimNode) -> bool:
        root = self.roots.get(node.name)
        return root is not None and root.is_alive()

    async def stop(self, node: SimNode) -> None:
        """Stop ``node``'s tree (in reverse start order, as a shutdown does)."""
        root = self.roots.pop(node.name, None)
        if root is not None and root.is_alive():
            with contextlib.suppress(*CALL_FAILURES):
                await otp.stop(root, "shutdown")

    async def stop_all(self) -> None:
        for node in reversed(self.nodes):
            await self.stop(node)

    async def status(self, node: SimNode, timeout: float = 5.0) -> chain_msgs.ChainStatus | None:
        """``node``'s chain status, or None while its ChainActor is away."""
        try:
            status: chain_msgs.ChainStatus = await otp.call(
                node.actor("chain"), chain_msgs.GetStatus(), timeout=timeout)
        except CALL_FAILURES:
            return None
        return status


# -- a byzantine peer ---------------------------------------------------------------------------


@attrs.define
class ByzantinePeer:
    """A peer that speaks the protocol by hand and lies. Each attack dials ``target`` under a
    fresh node id (the id of an attack that got banned stays banned), says a correct hello,
    then:

    * ``garbage`` — sends bytes that are no frame;
    * ``bad_signature`` — gossips a block on the target's head signed with a key that is no
      authority's;
    * ``bad_parent`` — gossips a block on a parent nobody has, claiming to be ahead, and
      answers the range requests that follow with blocks that do not link.

    Honest nodes must ban every one of these ids and change nothing of their chains.
    ``ids`` lists every node id used, ``banned_by`` who banned whom (from the bus).
    """

    chain_id: int
    genesis: bytes
    slot_duration_ms: int
    ids: list[str] = attrs.field(factory=list)
    attacks: int = 0
    sent: int = 0

    def _next_key(self) -> NodeKey:
        """A new identity for each attack (keys are free to make: bans cannot stop a liar
        from coming back as someone else, only from coming back as itself)."""
        self.attacks += 1
        key = NodeKey.derive(f"simnet/byzantine/{self.attacks}")
        self.ids.append(key.node_id)
        return key

    async def attack(self, net: MemoryNetwork, source: str, target: str, kind: str, *,
                     linger: float = 30.0) -> None:
        """One attack of ``kind`` on node ``target``, from address ``source``. Returns when
        the target closes the connection or after ``linger`` seconds; never raises for the
        network's sake (a refused dial is the attack's end)."""
        key = self._next_key()
        with contextlib.suppress(ConnectionClosed, FrameError, trio.TooSlowError):
            async with net.transport(source).connect(target) as conn:
                with trio.fail_after(linger):
                    await self._session(conn, key, kind)

    async def _session(self, conn: Connection, key: NodeKey, kind: str) -> None:
        zero = BlockRef(self.genesis, 0)
        ours = hello_for(key, self.chain_id, self.genesis, f.Status(zero, zero))
        await conn.send(f.encode_frame(ours))
        hello = f.decode_frame(await conn.receive())
        if not isinstance(hello, f.Hello):
            return
        await conn.send(f.encode_frame(auth_for(key, ours, hello)))
        if not isinstance(f.decode_frame(await conn.receive()), f.Auth):
            return
        if kind == "garbage":
            await conn.send(bytes((f.PROTOCOL_VERSION,)) + b"\xff\x00garbage, not a frame")
            self.sent += 1
            await self._drain(conn, None)
            return
        head = await self._block(conn, hello.status.head.height)
        if head is None:
            return
        forged = self._forge(head, kind)
        await conn.send(f.encode_frame(f.Gossip(
            CONSENSUS_BLOCK, encode_payload(CONSENSUS_BLOCK, forged))))
        self.sent += 1
        await self._drain(conn, forged)

    async def _block(self, conn: Connection, height: int) -> SignedConsensusBlock | None:
        await conn.send(f.encode_frame(f.BlocksByRange(1, height, 1)))
        while True:
            frame = f.decode_frame(await conn.receive())
            if isinstance(frame, f.BlocksChunk) and frame.request_id == 1:
                return encoding.decode_signed_block(frame.blocks[0]) if frame.blocks else None
            if isinstance(frame, f.ErrorResponse):
                return None
            await self._answer(conn, frame, None)

    def _forge(self, head: SignedConsensusBlock, kind: str) -> SignedConsensusBlock:
        """A block after ``head`` (or, for ``bad_parent``, after a block nobody has), in the
        current slot, signed by a key that is no authority's."""
        slot = int(otp.system_time() * 1000) // self.slot_duration_ms
        if slot <= head.message.slot:
            slot = head.message.slot + 1
        payload = attrs.evolve(
            head.message.execution_payload,
            parent_hash=head.message.execution_payload.block_hash,
            block_number=head.height + 1,
            timestamp=slot * self.slot_duration_ms // 1000,
            block_hash=FORGED)
        parent = head.hash() if kind == "bad_signature" else bytes([0xEE]) * 32
        block = attrs.evolve(head.message, parent_hash=parent, slot=slot,
                             execution_payload=payload, auxpow_header=None)
        liar = bls.SecretKey.from_seed(bytes([0xBD]) * 32)
        signed = chain_rules.sign_block(block, liar, 0)
        # Name the slot's author as the signer, so the signature is what fails.
        return SignedConsensusBlock(block, AggregateApproval(
            0b1111, signed.signature.signature))

    async def _drain(self, conn: Connection, forged: SignedConsensusBlock | None) -> None:
        """Answer what the target asks (with lies) until it hangs up."""
        while True:
            frame = f.decode_frame(await conn.receive())
            await self._answer(conn, frame, forged)

    async def _answer(self, conn: Connection, frame: f.Frame,
                      forged: SignedConsensusBlock | None) -> None:
        match frame:
            case f.Ping(nonce):
                await conn.send(f.encode_frame(f.Pong(nonce)))
            case f.StatusRequest(request_id):
                ref = BlockRef(self.genesis, 0) if forged is None else forged.ref()
                await conn.send(f.encode_frame(f.StatusResponse(
                    request_id, f.Status(ref, BlockRef(self.genesis, 0)))))
            case f.BlocksByRange(request_id, _start, _count):
                blocks = () if forged is None else (encoding.encode_signed_block(forged),) * 2
                await conn.send(f.encode_frame(f.BlocksChunk(request_id, blocks, True)))
                self.sent += 1
            case _:
                await trio.lowlevel.checkpoint()


# -- watching the network -----------------------------------------------------------------------


class _Tap(otp.GenServer):
    """Forwards node ``name``'s imports and bans to the watcher, tagged with the node (bus
    events do not say which node published them)."""

    async def init(self, name: str, sink: otp.Pid) -> None:
        await trio.lowlevel.checkpoint()
        self.name, self.sink = name, sink
        for topic in (chain_msgs.BLOCKS_TOPIC, PEERS_TOPIC):
            otp.bus.subscribe(f"{name}/{topic}")

    async def handle_info(self, msg: Any) -> None:
        if isinstance(msg, chain_msgs.BlockImported | PeerBanned):
            await otp.cast(self.sink, (self.name, msg))
        else:
            await trio.lowlevel.checkpoint()


class ChainWatcher(otp.GenServer):
    """Follows every node's imports (``<node>/chain.blocks``) and bans
    (``<node>/network.peers``), and records each break of an invariant in ``violations``:

    * a node's head or finalized block goes back;
    * two nodes import different blocks at one height, or finalize different blocks at one
      height (no fork choice: an imported block is never undone, so either is final);
    * an honest node is banned: one whose node id is in ``honest`` (the network's own
      nodes, :attr:`SimNetwork.node_ids`; ids are proven in the handshake, so a liar
      cannot be banned under one of them).

    It starts one linked tap per node, registered as ``watch-<node>``.
    ``call(watcher, "report")`` returns a :class:`WatchReport`.
    """

    async def init(self, names: Sequence[str], honest: Sequence[str] = ()) -> None:
        self.honest = frozenset(honest)
        self.head: dict[str, BlockRef] = {}
        self.finalized: dict[str, BlockRef] = {}
        self.imported: dict[int, tuple[bytes, str]] = {}
        self.final: dict[int, tuple[bytes, str]] = {}
        self.banned: list[tuple[str, str]] = []
        self.imports = 0
        self.violations: list[str] = []
        for name in names:
            await otp.start_link(_Tap, name, otp.self(), name=f"watch-{name}")

    async def handle_cast(self, msg: Any) -> None:
        await trio.lowlevel.checkpoint()
        match msg:
            case (str() as node, chain_msgs.BlockImported() as event):
                self._imported(node, event)
            case (str() as node, PeerBanned() as event):
                self.banned.append((node, event.peer))
                if event.peer in self.honest:
                    self.violations.append(f"{node} banned the honest peer {event.peer}: "
                                           f"{event.offence.value} {event.detail}")

    def _imported(self, node: str, event: chain_msgs.BlockImported) -> None:
        self.imports += 1
        head, fin = event.ref, event.finalized
        old_head, old_fin = self.head.get(node), self.finalized.get(node)
        if old_head is not None and head.height < old_head.height:
            self.violations.append(f"{node}: head went back #{old_head.height} -> "
                                   f"#{head.height}")
        if old_fin is not None and fin.height < old_fin.height:
            self.violations.append(f"{node}: finalized went back #{old_fin.height} -> "
                                   f"#{fin.height}")
        self.head[node] = head
        self.finalized[node] = fin
        for table, ref, what in ((self.imported, head, "imported"),
                                 (self.final, fin, "finalized")):
            seen = table.setdefault(ref.height, (ref.hash, node))
            if seen[0] != ref.hash:
                self.violations.append(
                    f"{node} {what} {ref.hash.hex()[:16]} at #{ref.height}, {seen[1]} "
                    f"{what} {seen[0].hex()[:16]}")

    async def handle_call(self, request: Any, from_: otp.From) -> Any:
        await trio.lowlevel.checkpoint()
        if request == "report":
            return WatchReport(dict(self.head), dict(self.finalized), tuple(self.banned),
                               self.imports, tuple(self.violations),
                               {h: v[0] for h, v in self.final.items()})
        raise otp.UnexpectedMessage(self, "call", request)


@attrs.frozen
class WatchReport:
    """What a :class:`ChainWatcher` saw: each node's last head and finalized block, the bans
    (banning node, banned peer), the number of imports, the invariant breaks, and the
    finalized block of each height finalized anywhere."""

    head: dict[str, BlockRef]
    finalized: dict[str, BlockRef]
    banned: tuple[tuple[str, str], ...]
    imports: int
    violations: tuple[str, ...]
    final: dict[int, bytes]
