"""The SyncActor inside ``otp.testing.simulate`` (virtual time, the in-memory transport, each
seed run twice and required to give the same trace): node B — real storage, embedded
engine, chain, network and sync actors — catches up with one peer and with two, whatever
its peers do (leave mid-range, stall, sign badly, claim a head they cannot serve); the chain
produces only once B is synced; a crashed SyncActor is restarted and sync carries on."""

from __future__ import annotations

import random
import tomllib
from pathlib import Path
from typing import Any

import pytest
import trio
from hypothesis import Phase, given, settings
from hypothesis import strategies as st

import otp
from node.actors.sync import SyncActor
from node.messages import chain as c
from node.messages import network as n
from node.messages.sync import SYNC_TOPIC, GetSyncProgress, SyncProgress
from node.network.memory import LinkConditions, MemoryNetwork
from otp.testing import simulate
from otp.testing.plugin import Simulator

from ..scratch import scratch_dir
from .network_helpers import Collector, nid, wait_for
from .sync_helpers import (
    CHAIN_N,
    BadPeer,
    GatedVerifier,
    built_chain,
    start_b,
    start_source,
    stored,
)

N = CHAIN_N


async def head() -> c.BlockRef:
    status = await otp.call("chain", c.GetStatus())
    assert status.head is not None
    return status.head


async def synced_to(height: int, *, timeout: float = 600.0) -> None:
    """Wait (virtual time) until B's chain is at ``height`` and sync says it is synced."""
    async def done() -> bool:
        if (await head()).height < height:
            return False
        progress = await otp.call("sync", GetSyncProgress())
        return progress.synced
    await wait_for(done, timeout=timeout, step=0.5)


def tmpdir() -> Path:
    return scratch_dir("sync-")


def memory(seed: int, **conditions: Any) -> MemoryNetwork:
    return MemoryNetwork(random.Random(f"sync:{seed}"), default=LinkConditions(**conditions))


def run(sim: Simulator, main: Any, max_virtual_time: float = 1800.0) -> None:
    sim(main, max_virtual_time=max_virtual_time)


@pytest.fixture(scope="module", autouse=True)
def chain_built() -> None:
    stored(N)  # once, outside the simulations


# -- honest peers ---------------------------------------------------------------------------------


@pytest.mark.sim(seeds=2)
def test_b_syncs_from_one_peer_to_the_same_head(sim: Simulator, sim_seed: int) -> None:
    chain = built_chain(N)

    async def main() -> None:
        tmp, net = tmpdir(), memory(sim_seed, latency=0.005, jitter=0.002)
        progress = await otp.start(Collector, [SYNC_TOPIC])
        await start_source(tmp, "a", net)
        await start_b(tmp, net, ("a",))
        await synced_to(N)
        assert await head() == chain[N].ref()
        published = [e for e in await otp.call(progress, "events")
                     if isinstance(e, SyncProgress)]
        # Behind first (it learnt of the peer), synced at the end; never synced in between.
        flips = [p.synced for i, p in enumerate(published)
                 if i == 0 or p.synced != published[i - 1].synced]
        assert flips[-2:] == [False, True]
        assert published[-1] == SyncProgress(N, N, published[-1].blocks_per_second, 1, True)
        assert max(p.blocks_per_second for p in published) > 0
        # Its import calls (for the figures of the cost per block) cover 1..N in order.
        actor = await otp.get_state("sync")
        assert isinstance(actor, SyncActor)
        calls = [(first, count) for first, count, _ in actor.import_calls]
        assert [first for first, _ in calls] == [1] + [f + k for f, k in calls[:-1]]
        assert calls[-1][0] + calls[-1][1] - 1 == N

    run(sim, main)


@pytest.mark.sim(seeds=2)
def test_b_syncs_from_two_peers_asking_both(sim: Simulator, sim_seed: int) -> None:
    chain = built_chain(N)

    async def main() -> None:
        tmp, net = tmpdir(), memory(sim_seed, latency=0.01, jitter=0.01, reorder=0.05)
        await start_source(tmp, "a", net)
        await start_source(tmp, "c", net)
        await start_b(tmp, net, ("a", "c"))

        async def both() -> bool:
            return len(await otp.call("network", n.GetPeers())) == 2
        await wait_for(both)
        state = await otp.get_state("sync")
        await synced_to(N)
        assert await head() == chain[N].ref()
        assert isinstance(state, SyncActor)
        assert set(state.served) == {nid("aa"), nid("cc")} and sum(state.served.values()) >= N

    run(sim, main)


# -- peers that misbehave -------------------------------------------------------------------------


def bad_peer_scenario(seed: int, behaviour: str, *, asked: bool = True,
                      **peer: Any) -> tuple[Any, BadPeer]:
    """B dials a bad peer ``x`` and an honest one ``a``; sync completes with ``a``'s chain."""
    chain = built_chain(N)
    bad = BadPeer("x", behaviour, chain, **{"head": N, **peer})

    async def main() -> None:
        tmp, net = tmpdir(), memory(seed, latency=0.005)
        peers = await otp.start(Collector, [n.PEERS_TOPIC])
        async with trio.open_nursery() as nursery:
            await nursery.start(bad.serve, net)
            await start_source(tmp, "a", net)
            await start_b(tmp, net, ("x", "a"))
            await synced_to(N)
            assert await head() == chain[N].ref()
            assert bad.requests >= asked  # it was asked, and failed
            main.events = await otp.call(peers, "events")  # type: ignore[attr-defined]
            nursery.cancel_scope.cancel()

    return main, bad


@pytest.mark.sim(seeds=2)
def test_a_peer_that_disconnects_mid_range_costs_a_retry_elsewhere(
        sim: Simulator, sim_seed: int) -> None:
    main, _ = bad_peer_scenario(sim_seed, "disconnect")
    run(sim, main)


@pytest.mark.sim(seeds=2)
def test_a_peer_that_stalls_is_timed_out_and_its_ranges_go_elsewhere(
        sim: Simulator, sim_seed: int) -> None:
    main, _ = bad_peer_scenario(sim_seed, "stall")
    run(sim, main)


@pytest.mark.sim(seeds=2)
def test_a_peer_sending_bad_signatures_is_reported_and_banned(
        sim: Simulator, sim_seed: int) -> None:
    main, _ = bad_peer_scenario(sim_seed, "bad_signature")
    run(sim, main)
    banned = [e for e in main.events if isinstance(e, n.PeerBanned)]  # type: ignore[attr-defined]
    # Each of its answers in flight is reported (and bans it again).
    assert banned and {(e.peer, e.offence) for e in banned} == {(nid("ee"),
                                                                n.Offence.INVALID_BLOCK)}
    assert "approvals do not verify" in banned[0].detail


@pytest.mark.sim(seeds=2)
def test_a_peer_claiming_a_head_it_cannot_serve_does_not_keep_b_syncing(
        sim: Simulator, sim_seed: int) -> None:
    # It claims #N + 50 and has #N - 40: once its breaker opens its claim stops counting.
    main, bad = bad_peer_scenario(sim_seed, "short", head=N + 50, has=N - 40)
    run(sim, main)
    assert bad.requests >= 3


@pytest.mark.sim(seeds=2)
def test_only_liars_then_an_honest_peer_arrives(sim: Simulator, sim_seed: int) -> None:
    """With only a stalling peer B gets nothing; after three timeouts its breaker opens and
    its claim stops counting (B is not held "behind" by a peer that serves nothing); B keeps
    trying it (half-open trials), and an honest peer arriving later finishes the sync."""
    chain = built_chain(N)
    bad = BadPeer("x", "stall", chain, head=N)

    async def main() -> None:
        tmp, net = tmpdir(), memory(sim_seed, latency=0.005)
        async with trio.open_nursery() as nursery:
            await nursery.start(bad.serve, net)
            await start_b(tmp, net, ("x", "a"))
            await trio.sleep(120)
            progress = await otp.call("sync", GetSyncProgress())
            assert progress.current == 0 and progress.target == 0 and progress.synced
            assert bad.requests >= 3  # asked again after its retry delays
            await start_source(tmp, "a", net)
            await synced_to(N)
            assert await head() == chain[N].ref()
            nursery.cancel_scope.cancel()

    run(sim, main)


# -- the chain, the verifier, a crash -------------------------------------------------------------


@pytest.mark.sim(seeds=2)
def test_the_chain_produces_only_once_b_is_synced(sim: Simulator, sim_seed: int) -> None:
    """B holds the authority key: behind, it does not produce (a block of its own would fork
    the chain it is catching up with); synced, it produces on the synced head."""

    async def main() -> None:
        tmp, net = tmpdir(), memory(sim_seed, latency=0.05)  # slow links: B is behind long
        await start_source(tmp, "a", net)
        await start_b(tmp, net, ("a",), authority=True)

        async def behind() -> bool:
            status = await otp.call("chain", c.GetStatus())
            return not status.synced
        await wait_for(behind)
        assert await otp.call("chain", c.ProduceNow()) is None
        assert (await head()).height < N
        await synced_to(N)
        produced = await otp.call("chain", c.ProduceNow())
        assert isinstance(produced, c.BlockRef) and produced.height == N + 1
        status = await otp.call("chain", c.GetStatus())
        assert status.synced and status.head == produced

    run(sim, main)


@pytest.mark.sim(seeds=1)
def test_the_actor_answers_while_a_batch_verifies(sim: Simulator, sim_seed: int) -> None:
    async def main() -> None:
        verifier = GatedVerifier()
        tmp, net = tmpdir(), memory(sim_seed)
        await start_source(tmp, "a", net)
        await start_b(tmp, net, ("a",), verifier=verifier)

        async def verifying() -> bool:
            return verifier.waiting > 0
        await wait_for(verifying)
        with trio.fail_after(1):
            progress = await otp.call("sync", GetSyncProgress())
        assert not progress.synced and progress.target == N and progress.current == 0
        verifier.gate.set()
        await synced_to(N)

    run(sim, main)


@pytest.mark.sim(seeds=2)
def test_a_crashed_sync_actor_is_restarted_and_sync_resumes(sim: Simulator,
                                                            sim_seed: int) -> None:
    chain = built_chain(N)

    async def main() -> None:
        tmp, net = tmpdir(), memory(sim_seed, latency=0.02)
        await start_source(tmp, "a", net)
        await start_b(tmp, net, ("a",), supervised=True)
        chain_pid = otp.whereis("chain")

        async def halfway() -> bool:
            return (await head()).height >= N // 3
        await wait_for(halfway)
        before = otp.whereis("sync")
        assert before is not None
        otp.exit(before, "kill")

        async def restarted() -> bool:
            pid = otp.whereis("sync")
            return pid is not None and pid != before
        await wait_for(restarted)
        kept = await head()
        assert kept.height >= N // 3  # nothing of the chain lost
        await synced_to(N)
        assert await head() == chain[N].ref()
        assert otp.whereis("chain") == chain_pid

    run(sim, main)


def test_a_disabled_network_means_no_sync_actor() -> None:
    async def main() -> None:
        assert await otp.start(SyncActor, {}, {"enabled": False}, name="sync") is None
        assert otp.whereis("sync") is None

    simulate(main, seed=0).raise_failure()


def test_sync_is_the_network_supervisors_second_child() -> None:
    tree = tomllib.loads((Path(__file__).parents[2] / "node" / "supervision.toml")
                         .read_text())["tree"]
    network = next(child for child in tree["children"] if child["id"] == "network")
    assert [(a["name"], a["start"]) for a in network["children"]] == [
        ("network", "node.actors.network:NetworkActor"), ("sync", "node.actors.sync:SyncActor")]
    assert network["children"][1]["args"]["config"] == "${node.sync}"


@settings(max_examples=6, deadline=None, phases=[Phase.explicit, Phase.generate])
@given(behaviour=st.sampled_from(["stall", "disconnect", "bad_signature", "short"]),
       claimed=st.integers(0, 3 * N), has=st.integers(0, N), seed=st.integers(0, 2**16))
def test_whatever_a_bad_peer_claims_sync_completes(behaviour: str, claimed: int, has: int,
                                                   seed: int) -> None:
    """The head a bad peer claims in its hello and what it has come from outside: drawn."""
    main, _ = bad_peer_scenario(seed, behaviour, asked=False, head=claimed, has=has)
    simulate(main, seed=seed, max_virtual_time=1800).raise_failure()
