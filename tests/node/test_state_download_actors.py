"""Snap sync's state download between two nodes over the in-memory transport, in virtual
time: node A (storage, embedded engine, network) has a chain with accounts, a contract with
storage and code; node B (genesis only) downloads the state at block P through its
NetworkActor (``RequestStateNodes``) following the rules of node.workflows.state_sync, stores
it (``PutStateNodes``), makes P its engine's head (``SetPivot``) and then executes P+1
through the normal path (``CommitPayload``) to A's state root. Also: a peer that answers
with values that do not hash right is refused and scored; a node without an embedded engine
answers with an error; the EngineActor refuses what it cannot do, clearly."""

from __future__ import annotations

import contextlib
import functools
import random
import shutil
from pathlib import Path

import pytest
import trio

import otp
from node.actors.chain import EMPTY_SIGNATURE
from node.actors.engine import EngineActor
from node.actors.network import NetworkActor
from node.actors.storage import ChainStore, StorageActor
from node.config import ChainConfig, structure_section
from node.execution.embedded import EmbeddedEngine
from node.messages import engine as e
from node.messages import network as n
from node.messages.storage import PutBlock
from node.network import frames as f
from node.network.errors import ConnectionClosed
from node.network.handshake import auth_for
from node.network.memory import LinkConditions, MemoryNetwork
from node.network.transport import Connection
from node.types.chain import AggregateApproval, AuxPowHeader, ConsensusBlock, SignedConsensusBlock
from node.types.execution import EngineError, ExecutionPayload
from node.workflows import chain as rules
from node.workflows import state_sync as ss
from otp.testing.plugin import Simulator

from ..scratch import scratch_dir
from .network_helpers import key, nid, wait_for
from .state_helpers import next_block, recipient, rich_state, slot_value
from .sync_helpers import CHAIN_CFG, FIRST_SLOT, KEY, NET

#: Blocks of A's chain: the pivot P, and P+1 which B executes after the download.
PIVOT = 8


async def _build() -> tuple[list[SignedConsensusBlock], bytes]:
    cfg: ChainConfig = structure_section(CHAIN_CFG, ChainConfig, "chain")
    engine = EmbeddedEngine()
    contract, _ = await rich_state(engine, accounts=90, slots=40, per_block=25)
    while engine.head_number < PIVOT + 1:
        await next_block(engine)
    recipient_ = bytes.fromhex(cfg.fee_recipient.removeprefix("0x"))
    zero = bytes(32)
    blocks = [SignedConsensusBlock(
        ConsensusBlock(zero, 0, engine.genesis_payload(),
                       AuxPowHeader(zero, zero, cfg.bits, cfg.chain_id, 0, None, recipient_)),
        AggregateApproval(0, EMPTY_SIGNATURE))]
    for height in range(1, PIVOT + 2):
        payload = engine.block_by_number(height)
        assert payload is not None
        blocks.append(rules.sign_block(rules.new_block(blocks[-1], FIRST_SLOT + height,
                                                       payload, None), KEY, 0))
    engine.close()
    return blocks, contract


@functools.cache
def chain() -> tuple[list[SignedConsensusBlock], bytes]:
    return trio.run(_build)


@functools.cache
def stored_chain(head: int) -> Path:
    path = scratch_dir(f"state-chain-{head}-") / "chain"
    store = ChainStore(str(path))
    for block in chain()[0][:head + 1]:
        store.put_block(PutBlock(block, head=True,
                                 finalized=block.ref() if block.height == 0 else None),
                        sync=False)
    store.close()
    return path


@pytest.fixture(scope="module", autouse=True)
def built() -> None:
    stored_chain(PIVOT)  # outside the simulations
    stored_chain(0)


def payload(height: int) -> ExecutionPayload:
    return chain()[0][height].message.execution_payload


async def start_node(tmp: Path, name: str, net: MemoryNetwork, head: int, *,
                     engine: bool = True, bootnodes: tuple[str, ...] = ()) -> None:
    """Storage (blocks 0..head), an embedded engine (it executes them at start) and a
    NetworkActor (node id of test peer ``name*2``), all named ``<kind>-<name>``."""
    path = tmp / name / "chain"
    shutil.copytree(stored_chain(head), path)
    await otp.start(StorageActor, str(path), name=f"storage-{name}")
    if engine:
        await otp.start(EngineActor, None, CHAIN_CFG, storage=f"storage-{name}",
                        data_dir=str(tmp / name), name=f"engine-{name}")
    cfg = {"enabled": True, "node_key": key(name * 2).hex(), "bootnodes": list(bootnodes),
           **NET}
    await otp.start(NetworkActor, cfg, CHAIN_CFG, data_dir=str(tmp / name),
                    storage=f"storage-{name}", transport=net.transport(name),
                    bus_prefix=f"{name}/", engine=f"engine-{name}", name=f"network-{name}")


async def connected(network: str, peer: str) -> None:
    async def up() -> bool:
        return peer in {p.peer for p in await otp.call(network, n.GetPeers())}
    await wait_for(up, timeout=30.0)


async def download_state(root: bytes, peer: str, *, batch: int = 128) -> ss.StateDownload:
    """What the SyncActor will do: the rules, B's own store first, the peer for the rest."""
    d = ss.start(root)
    while not d.done:
        d, wants = ss.next_batch(d, batch)
        hashes = tuple(w.hash for w in wants)
        local = await otp.call("engine-b", e.GetStateNodes(hashes))
        assert isinstance(local, tuple)
        values = list(local) + [b""] * (len(hashes) - len(local))
        lacking = [i for i, v in enumerate(values) if not v]
        if lacking:
            got = await otp.call("network-b", n.RequestStateNodes(
                peer, tuple(hashes[i] for i in lacking)), timeout=30.0)
            assert isinstance(got, tuple), got
            for i, value in zip(lacking, got, strict=True):
                values[i] = value
        answer = ss.answered(d, wants, values)
        assert not answer.wrong
        fresh = tuple((h, v) for h, v in answer.store)
        assert await otp.call("engine-b", e.PutStateNodes(fresh)) == len(set(fresh))
        d = answer.download
    return d


@pytest.mark.sim(seeds=1)
def test_b_downloads_the_state_at_p_sets_the_pivot_and_executes_p_plus_1(
        sim: Simulator, sim_seed: int) -> None:
    contract = chain()[1]
    pivot = payload(PIVOT)

    async def main() -> None:
        tmp = scratch_dir("state-actors-")
        net = MemoryNetwork(random.Random(sim_seed), default=LinkConditions(latency=0.005))
        await start_node(tmp, "a", net, PIVOT)
        await start_node(tmp, "b", net, 0, bootnodes=("a",))
        await connected("network-b", nid("aa"))
        # Not whole yet: B's engine refuses the pivot and says what is missing.
        problem = await otp.call("engine-b", e.CheckState(pivot.state_root))
        assert isinstance(problem, str) and "incomplete" in problem
        refused = await otp.call("engine-b", e.SetPivot(tuple(
            payload(h) for h in range(1, PIVOT + 1))))
        assert isinstance(refused, EngineError) and "cannot be the pivot" in str(refused)
        d = await download_state(pivot.state_root, nid("aa"))
        assert d.done and d.accounts > 90 and d.codes == 2
        assert await otp.call("engine-b", e.CheckState(pivot.state_root)) is None
        head = await otp.call("engine-b", e.SetPivot(tuple(
            payload(h) for h in range(1, PIVOT + 1))))
        assert head == pivot.block_hash
        # P+1 through the normal path: forkchoice, newPayload, forkchoice.
        child = payload(PIVOT + 1)
        done = await otp.call("engine-b", e.CommitPayload(child, payload(0).block_hash),
                              timeout=30.0)
        assert isinstance(done, e.Committed) and done.head == child.block_hash
        actor = await otp.get_state("engine-b")
        assert isinstance(actor, EngineActor) and actor.embedded is not None
        engine = actor.embedded
        assert engine.head_header.state_root == child.state_root
        assert engine.balance_of(recipient(33)) == 10**15 + 33
        state = engine.state_at(engine.head_header)
        assert state.get_storage(contract, 1000 + 17) == slot_value(17)

    sim(main, max_virtual_time=600.0)


class LyingPeer:
    """A hand-written peer at ``address`` that answers every GetStateNodes with values that
    do not hash to what was asked (``wrong``), with more values than hashes (``long``), or
    with an error (``refuse``)."""

    def __init__(self, address: str, behaviour: str) -> None:
        self.address, self.behaviour = address, behaviour

    async def serve(self, net: MemoryNetwork, *,
                    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED) -> None:
        await net.transport(self.address).listen(self._session, task_status=task_status)

    async def _session(self, conn: Connection) -> None:
        genesis = chain()[0][0]
        with contextlib.suppress(ConnectionClosed):
            theirs = f.decode_frame(await conn.receive())
            ours = f.Hello(f.PROTOCOL_VERSION, 121212, genesis.hash(),
                           f.Status(genesis.ref(), genesis.ref()), key("ee").public_key,
                           bytes(32))
            await conn.send(f.encode_frame(ours))
            assert isinstance(theirs, f.Hello)
            await conn.receive()
            await conn.send(f.encode_frame(auth_for(key("ee"), ours, theirs)))
            while True:
                frame = f.decode_frame(await conn.receive())
                match frame:
                    case f.Ping(nonce):
                        await conn.send(f.encode_frame(f.Pong(nonce)))
                    case f.GetStateNodes(request_id, hashes):
                        if self.behaviour == "wrong":
                            answer: f.Frame = f.StateNodes(request_id, (b"", b"\xc0"))
                        elif self.behaviour == "long":
                            answer = f.StateNodes(request_id, (b"",) * (len(hashes) + 1))
                        else:
                            answer = f.ErrorResponse(request_id, "no")
                        await conn.send(f.encode_frame(answer))


@pytest.mark.sim(seeds=1)
@pytest.mark.parametrize("behaviour", ["wrong", "long", "refuse"])
def test_a_peer_whose_answer_does_not_fit_is_refused_and_scored(
        sim: Simulator, sim_seed: int, behaviour: str) -> None:
    async def main() -> None:
        tmp = scratch_dir("state-liar-")
        net = MemoryNetwork(random.Random(sim_seed), default=LinkConditions(latency=0.005))
        liar = LyingPeer("e", behaviour)
        async with trio.open_nursery() as nursery:
            await nursery.start(liar.serve, net)
            await start_node(tmp, "b", net, 0, bootnodes=("e",))
            await connected("network-b", nid("ee"))
            got = await otp.call("network-b", n.RequestStateNodes(
                nid("ee"), (payload(PIVOT).state_root, b"\x01" * 32)), timeout=30.0)
            assert isinstance(got, n.RequestFailed)
            peers = {p.peer: p for p in await otp.call("network-b", n.GetPeers())}
            if behaviour == "refuse":
                assert got.kind == "refused" and got.detail == "no"
                assert peers[nid("ee")].score == 0
            else:
                assert got.kind == "invalid"
                assert ("does not hash" in got.detail if behaviour == "wrong"
                        else "3 values for 2 hashes" in got.detail)
                assert peers[nid("ee")].score < 0
            nursery.cancel_scope.cancel()

    sim(main, max_virtual_time=120.0)


@pytest.mark.sim(seeds=1)
def test_a_node_without_an_embedded_engine_answers_state_requests_with_an_error(
        sim: Simulator, sim_seed: int) -> None:
    async def main() -> None:
        tmp = scratch_dir("state-noengine-")
        net = MemoryNetwork(random.Random(sim_seed), default=LinkConditions(latency=0.005))
        await start_node(tmp, "a", net, 0, engine=False)
        await start_node(tmp, "b", net, 0, bootnodes=("a",))
        await connected("network-b", nid("aa"))
        got = await otp.call("network-b", n.RequestStateNodes(nid("aa"), (b"\x01" * 32,)),
                             timeout=30.0)
        assert got == n.RequestFailed(nid("aa"), "refused", "execution engine unavailable")
        # B's own engine serves: a hash it lacks is an empty value, its genesis root is not.
        root = payload(0).state_root
        values = await otp.call("network-a", n.RequestStateNodes(nid("bb"),
                                                                 (b"\x01" * 32, root)),
                                timeout=30.0)
        assert isinstance(values, tuple) and values[0] == b"" and values[1] != b""
        # Bad requests to the engine are refused with a reason, the actor carries on.
        bad = await otp.call("engine-b", e.PutStateNodes(((b"\x02" * 32, b"x"),)))
        assert isinstance(bad, EngineError) and "does not hash to its key" in str(bad)
        bad = await otp.call("engine-b", e.CheckState(b"short"))
        assert isinstance(bad, EngineError) and "32 bytes" in str(bad)

    sim(main, max_virtual_time=120.0)
