"""The sync rules (node.workflows.sync): bookkeeping that never loses or doubles a height,
circuit breakers and retry delays as documented, and sync that finishes whatever the peers
do, as long as one of them is honest."""

from __future__ import annotations

import random
from typing import Any

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from node.workflows import sync
from node.workflows.sync import Failure, Range, SyncConfig

CONFIG = SyncConfig(batch_size=8, window=40, per_peer=2, request_timeout=10.0,
                    retry_initial=1.0, retry_max=30.0, breaker_failures=3, breaker_reset=60.0)


def test_a_fresh_node_asks_several_peers_for_consecutive_ranges_in_order() -> None:
    state = sync.start(head=10)
    state = sync.peer_status(state, "a", 100)
    state = sync.peer_status(state, "b", 100)
    state, requests = sync.assign(state, 0.0, CONFIG)
    assert [(r.peer, r.range) for r in requests] == [
        ("a", Range(11, 8)), ("b", Range(19, 8)), ("a", Range(27, 8)), ("b", Range(35, 8)),
    ]  # two per peer; the window (40 blocks ahead of #10) stops at #50
    assert state.target == 100 and not sync.is_synced(state)
    assert sync.coverage_problem(state) is None


def test_ranges_are_imported_in_order_whatever_order_they_arrive_in() -> None:
    state = sync.peer_status(sync.start(0), "a", 16)
    state, (first, second) = sync.assign(state, 0.0, CONFIG)
    state = sync.range_done(state, second, 8, 1.0, CONFIG)
    assert sync.next_to_import(state) is None  # #9..#16 waits for #1..#8
    state = sync.range_done(state, first, 8, 1.0, CONFIG)
    assert sync.next_to_import(state) == Range(1, 8)
    state = sync.imported(state, Range(1, 8))
    assert sync.next_to_import(state) == Range(9, 8)
    state = sync.imported(state, Range(9, 8))
    assert sync.is_synced(state) and state.head == 16


def test_a_range_is_cut_to_what_its_peer_has() -> None:
    state = sync.peer_status(sync.peer_status(sync.start(0), "long", 30), "short", 5)
    state, requests = sync.assign(state, 0.0, CONFIG)
    assert [(r.peer, r.range) for r in requests] == [("long", Range(1, 8)),
                                                     ("long", Range(9, 8))]
    for request in requests:  # long fails and must wait: only short is askable
        state = sync.range_failed(state, request, Failure.TIMEOUT, 0.0, CONFIG)
    state, requests = sync.assign(state, 0.0, CONFIG)
    assert [(r.peer, r.range) for r in requests] == [("short", Range(1, 5))]
    assert state.queue == (Range(6, 3), Range(9, 8))  # the rest waits for a peer that has it
    assert sync.coverage_problem(state) is None


def test_three_failures_open_the_breaker_for_a_minute_then_one_trial() -> None:
    state = sync.peer_status(sync.start(0), "p", 1000)
    config = attrs.evolve(CONFIG, per_peer=1)  # a success in between would close it again
    now = 0.0
    for failure in (Failure.TIMEOUT, Failure.ERROR, Failure.INVALID):
        state, requests = sync.assign(state, now, config)
        assert requests, f"the peer is askable at {now}"
        state = sync.range_failed(state, requests[0], failure, now, config)
        for extra in requests[1:]:
            state = sync.range_done(state, extra, extra.range.count, now, config)
        peer = state.peer("p")
        assert peer is not None
        now = peer.retry_at
    peer = state.peer("p")
    assert peer is not None and sync.breaker_state(peer.breaker, now, config) == "open"
    opened = peer.breaker.opened_at
    assert opened is not None
    assert sync.assign(state, opened + 59.9, config)[1] == []
    state, trial = sync.assign(state, opened + 60.0, config)
    assert len(trial) == 1  # half-open: one trial request
    assert sync.assign(state, opened + 60.0, config)[1] == []
    state = sync.range_failed(state, trial[0], Failure.TIMEOUT, opened + 61.0, config)
    peer = state.peer("p")
    assert peer is not None and sync.breaker_state(peer.breaker, opened + 61.0, config) == "open"
    state, trial = sync.assign(state, opened + 121.0, config)
    state = sync.range_done(state, trial[0], trial[0].range.count, opened + 122.0, config)
    peer = state.peer("p")
    assert peer is not None and peer.breaker == sync.Breaker() and peer.retry_delay == 0.0


def test_a_half_open_peer_ahead_gets_its_trial_though_nothing_is_queued() -> None:
    """Found by tests/sim/test_network_sim.py: a node whose peers' breakers opened (timeouts
    while they restarted) and that then kept up by gossip alone had nothing queued; its
    peers' heads did not count (breakers not closed), so no trial was ever asked and a node
    left behind stayed behind for good."""
    state = sync.peer_status(sync.start(0), "p", 8)
    config = attrs.evolve(CONFIG, per_peer=1)
    now = 0.0
    for _ in range(3):
        state, (request,) = sync.assign(state, now, config)
        state = sync.range_failed(state, request, Failure.TIMEOUT, now, config)
        peer = state.peer("p")
        assert peer is not None
        now = peer.retry_at
    state = sync.head_moved(state, 8)  # gossip brought the node to #8: nothing is queued
    state = sync.peer_status(state, "p", 20)  # the peer moved on; the node did not
    assert state.queue == () and state.target == 8  # the peer's head is not trusted
    peer = state.peer("p")
    assert peer is not None and peer.breaker.opened_at is not None
    assert sync.assign(state, peer.breaker.opened_at + 59.0, config)[1] == []
    state, (trial,) = sync.assign(state, peer.breaker.opened_at + 60.0, config)
    assert trial.range == Range(9, 8) and sync.coverage_problem(state) is None
    state = sync.range_done(state, trial, 8, peer.breaker.opened_at + 61.0, config)
    assert state.target == 20 and not sync.is_synced(state)  # trusted again: sync goes on


def test_the_retry_delay_doubles_from_1_s_to_30_s() -> None:
    state = sync.peer_status(sync.start(0), "p", 10_000)
    config = attrs.evolve(CONFIG, breaker_failures=100, per_peer=1)
    delays = []
    now = 0.0
    for _ in range(8):
        state, (request,) = sync.assign(state, now, config)
        state = sync.range_failed(state, request, Failure.ERROR, now, config)
        peer = state.peer("p")
        assert peer is not None
        delays.append(peer.retry_delay)
        assert sync.assign(state, peer.retry_at - 0.001, config)[1] == []
        now = peer.retry_at
    assert delays == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]


def test_a_peer_that_leaves_mid_range_hands_its_ranges_to_another() -> None:
    state = sync.peer_status(sync.peer_status(sync.start(0), "a", 16), "b", 16)
    state, requests = sync.assign(state, 0.0, CONFIG)
    at_a = [r for r in requests if r.peer == "a"]
    state = sync.peer_gone(state, "a", 1.0, CONFIG)
    gone = state.peer("a")  # remembered: it failed (the disconnection)
    assert gone is not None and not gone.connected and sync.coverage_problem(state) is None
    assert {r.range for r in at_a} <= set(state.queue)
    state, again = sync.assign(state, 1.0, CONFIG)
    assert state.peer("b") is not None
    assert all(r.peer == "b" for r in again)


def test_a_stalled_request_expires_at_its_deadline() -> None:
    state = sync.peer_status(sync.start(0), "slow", 8)
    state, (request,) = sync.assign(state, 0.0, CONFIG)
    assert sync.expire(state, 9.99, CONFIG)[1] == []
    state, late = sync.expire(state, 10.0, CONFIG)
    assert late == [request] and state.queue == (Range(1, 8),) and not state.flight


def test_a_short_answer_keeps_what_came_and_asks_again_for_the_rest() -> None:
    state = sync.peer_status(sync.start(0), "p", 8)
    state, (request,) = sync.assign(state, 0.0, CONFIG)
    state = sync.range_done(state, request, 3, 0.5, CONFIG)
    assert state.downloaded == (Range(1, 3),) and state.queue == (Range(4, 5),)
    peer = state.peer("p")
    assert peer is not None and peer.breaker.failures == 1


def test_an_import_that_stops_early_hands_the_rest_back() -> None:
    state = sync.peer_status(sync.start(0), "p", 8)
    state, (request,) = sync.assign(state, 0.0, CONFIG)
    state = sync.range_done(state, request, 8, 0.5, CONFIG)
    state = sync.imported(state, Range(1, 8), height=4)
    assert state.head == 4 and state.queue == (Range(5, 4),)
    assert sync.coverage_problem(state) is None


def test_blocks_refused_at_import_are_asked_again_and_cost_their_peer() -> None:
    state = sync.peer_status(sync.peer_status(sync.start(0), "a", 16), "b", 16)
    state, (first, second) = sync.assign(state, 0.0, CONFIG)
    state = sync.range_done(state, first, 8, 0.0, CONFIG)
    state = sync.range_done(state, second, 8, 0.0, CONFIG)
    state = sync.head_moved(state, 3)  # #1..#3 imported, then #4 refused
    ready = sync.next_to_import(state)
    assert ready == Range(4, 5)
    state = sync.rejected(state, ready, first.peer, 2.0, CONFIG)
    assert state.queue == (Range(4, 5),) and state.downloaded == (Range(9, 8),)
    peer = state.peer(first.peer)
    assert peer is not None and peer.breaker.failures == 1 and peer.retry_at == 3.0
    assert sync.coverage_problem(state) is None
    state, requests = sync.assign(state, 2.0, CONFIG)  # only the other peer may be asked now
    assert [(r.peer, r.range) for r in requests] == [(second.peer, Range(4, 5))]
    with pytest.raises(ValueError, match="not downloaded"):
        sync.rejected(state, Range(4, 5), None, 2.0, CONFIG)


def test_a_head_moved_by_gossip_drops_what_sync_no_longer_needs() -> None:
    state = sync.peer_status(sync.start(0), "p", 40)
    state, _ = sync.assign(state, 0.0, CONFIG)
    state = sync.head_moved(state, 20)
    assert state.head == 20
    assert all(r.start > 20 for r in state.queue + state.downloaded)


def test_configuration_is_checked() -> None:
    with pytest.raises(ValueError, match="batch_size must be at most 1024"):
        SyncConfig(batch_size=1025)
    with pytest.raises(ValueError, match="must hold at least one batch"):
        SyncConfig(batch_size=512, window=100)
    with pytest.raises(ValueError, match="positive"):
        SyncConfig(request_timeout=float("nan"))
    with pytest.raises(ValueError, match="positive"):
        SyncConfig(per_peer=True)  # type: ignore[arg-type]


def test_snap_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="mode"):
        SyncConfig(mode="fast")
    with pytest.raises(ValueError, match="state_batch must be at most 384"):
        SyncConfig(state_batch=385)
    with pytest.raises(ValueError, match="positive"):
        SyncConfig(pivot_depth=0)
    with pytest.raises(ValueError, match="positive"):
        SyncConfig(snap_min_blocks=2**64 * -1)


@settings(max_examples=150, deadline=None)
@given(st.one_of(st.integers(), st.floats(allow_nan=True), st.booleans(), st.text(max_size=4),
                 st.none(), st.lists(st.integers(), max_size=2)))
def test_verify_workers_is_an_integer_from_0_to_256(value: Any) -> None:
    if type(value) is int and 0 <= value <= 256:
        assert SyncConfig(verify_workers=value).verify_workers == value
        return
    with pytest.raises(ValueError, match=r"sync\.verify_workers must be an integer from 0 to "
                                         r"256, got"):
        SyncConfig(verify_workers=value)


def test_snap_pivots_below_the_target_only_from_genesis_and_only_when_worth_it() -> None:
    snap = SyncConfig(mode="snap", pivot_depth=64, snap_min_blocks=1024)
    assert sync.snap_pivot(0, 20_000, snap) == 20_000 - 64
    assert sync.snap_pivot(0, 1024 + 64, snap) == 1024
    assert sync.snap_pivot(0, 1023 + 64, snap) is None  # too few blocks skipped: full
    assert sync.snap_pivot(1, 20_000, snap) is None  # a node with blocks syncs in full
    assert sync.snap_pivot(0, 20_000, CONFIG) is None  # full is the default


def test_imports_never_cross_the_pivot_and_wait_after_it() -> None:
    ready = Range(90, 40)  # 90..129
    assert sync.import_span(ready, 16, None) == (Range(90, 16), True)
    assert sync.import_span(ready, 16, 100) == (Range(90, 11), False)  # 90..100, history
    # History goes a whole downloaded range a call, whatever the batch (up to the pivot).
    assert sync.import_span(Range(1, 256), 16, 1000) == (Range(1, 256), False)
    assert sync.import_span(Range(1, 256), 16, 200) == (Range(1, 200), False)
    assert sync.import_span(Range(100, 5), 16, 100) == (Range(100, 1), False)
    assert sync.import_span(Range(101, 5), 16, 100) is None  # waits for the pivot
    assert sync.import_span(Range(101, 5), 16, None) == (Range(101, 5), True)


# -- spreading ranges over peers ----------------------------------------------------------------


def _pipeline(peers: dict[str, int], *, latency: dict[str, int] | None = None,
              import_per_step: int | None = 4, config: SyncConfig = CONFIG,
              steps: int = 1000) -> dict[str, int]:
    """Sync to the peers' heads (a dict peer -> head), step by step: a request to a peer is
    answered ``latency[peer]`` steps after it went out (1 by default); each step imports up
    to ``import_per_step`` blocks (None: all that are ready). Blocks downloaded from each
    peer."""
    latency = latency or {}
    state = sync.start(0)
    for peer, head in peers.items():
        state = sync.peer_status(state, peer, head)
    served = dict.fromkeys(peers, 0)
    sent: dict[sync.Request, int] = {}
    for step in range(steps):
        now = step * 0.01
        state, requests = sync.assign(state, now, config)
        sent.update((request, step) for request in requests)
        for request in state.flight:
            if step - sent[request] + 1 >= latency.get(request.peer, 1):
                state = sync.range_done(state, request, request.range.count, now, config)
                served[request.peer] += request.range.count
        while (ready := sync.next_to_import(state)) is not None:
            if import_per_step is None:
                state = sync.imported(state, ready)
                continue
            through = min(ready.end, ready.start + import_per_step - 1)
            state = sync.imported(state, ready, through)
            if through < ready.end:  # the rest of the range stays downloaded
                rest = Range(through + 1, ready.end - through)
                assert rest in state.queue
                state = attrs.evolve(
                    state, queue=tuple(r for r in state.queue if r != rest),
                    downloaded=tuple(sorted((*state.downloaded, rest), key=lambda r: r.start)))
            break
        assert sync.coverage_problem(state) is None
        if sync.is_synced(state):
            break
    assert sync.is_synced(state), state
    return served


def test_ranges_are_spread_over_equal_peers_when_import_is_the_bottleneck() -> None:
    # Both peers are idle whenever import frees part of the window: the new ranges must not
    # all go to the same one (the first by name).
    served = _pipeline({"a": 2000, "b": 2000})
    assert sum(served.values()) == 2000
    assert min(served.values()) >= 0.4 * 2000, served


def test_ranges_go_to_peers_in_proportion_to_how_fast_they_answer() -> None:
    # Downloads are the bottleneck, with a window wide enough for the fast peers to run
    # ahead of the slow one: "slow" takes four steps per answer, the others one.
    served = _pipeline({"slow": 2000, "b": 2000, "c": 2000}, latency={"slow": 4},
                       import_per_step=None, config=attrs.evolve(CONFIG, window=400))
    assert sum(served.values()) == 2000
    assert 0 < served["slow"] < 0.5 * served["b"] and 0 < served["slow"] < 0.5 * served["c"], \
        served
    assert abs(served["b"] - served["c"]) <= 0.1 * 2000, served

# -- any sequence of events ---------------------------------------------------------------------


class SyncMachine(RuleBasedStateMachine):
    """Peers come, go, answer, fail, stall and lie in any order; the bookkeeping holds."""

    def __init__(self) -> None:
        super().__init__()
        self.state = sync.start(0)
        self.now = 0.0

    @rule(peer=st.sampled_from("abcd"), head=st.integers(0, 200))
    def status(self, peer: str, head: int) -> None:
        self.state = sync.peer_status(self.state, peer, head)

    @rule(peer=st.sampled_from("abcd"))
    def gone(self, peer: str) -> None:
        self.state = sync.peer_gone(self.state, peer, self.now, CONFIG)

    @rule()
    def assign(self) -> None:
        before = self.state
        self.state, requests = sync.assign(self.state, self.now, CONFIG)
        for request in requests:
            peer = before.peer(request.peer)
            assert peer is not None
            assert sync.breaker_state(peer.breaker, self.now, CONFIG) != "open"
            assert peer.retry_at <= self.now
            assert peer.head >= request.range.end
            assert 1 <= request.range.count <= CONFIG.batch_size

    @precondition(lambda self: bool(self.state.flight))
    @rule(data=st.data())
    def answer(self, data: st.DataObject) -> None:
        request = data.draw(st.sampled_from(self.state.flight))
        received = data.draw(st.integers(0, request.range.count))
        self.state = sync.range_done(self.state, request, received, self.now, CONFIG)

    @precondition(lambda self: bool(self.state.flight))
    @rule(data=st.data(), failure=st.sampled_from(Failure))
    def fail(self, data: st.DataObject, failure: Failure) -> None:
        request = data.draw(st.sampled_from(self.state.flight))
        self.state = sync.range_failed(self.state, request, failure, self.now, CONFIG)

    @rule(seconds=st.sampled_from([0.5, 5.0, 30.0, 61.0]))
    def wait(self, seconds: float) -> None:
        self.now += seconds
        self.state, _ = sync.expire(self.state, self.now, CONFIG)

    @rule(data=st.data())
    def import_next(self, data: st.DataObject) -> None:
        ready = sync.next_to_import(self.state)
        if ready is not None:
            through = data.draw(st.integers(ready.start - 1, ready.end))
            self.state = sync.imported(self.state, ready, through)

    @rule(peer=st.sampled_from("abcdz"))
    def reject_next(self, peer: str) -> None:
        ready = sync.next_to_import(self.state)
        if ready is not None:
            self.state = sync.rejected(self.state, ready, peer, self.now, CONFIG)

    @rule(by=st.integers(1, 20))
    def gossip(self, by: int) -> None:
        # Blocks arrive by gossip and are imported, past what sync has in flight or not.
        self.state = sync.head_moved(self.state, min(self.state.head + by,
                                                     self.state.frontier - 1))

    @invariant()
    def every_height_in_exactly_one_place(self) -> None:
        assert sync.coverage_problem(self.state) is None

    @invariant()
    def peers_count_their_requests(self) -> None:
        for peer in self.state.peers:
            assert peer.in_flight == sum(r.peer == peer.peer for r in self.state.flight)
            assert 0 <= peer.in_flight <= CONFIG.per_peer

    @invariant()
    def requests_go_only_to_connected_peers(self) -> None:
        assert {r.peer for r in self.state.flight} <= {p.peer for p in self.state.peers
                                                        if p.connected}


TestSyncMachine = SyncMachine.TestCase
TestSyncMachine.settings = settings(max_examples=150, stateful_step_count=60, deadline=None)


# -- it always finishes -------------------------------------------------------------------------


@settings(max_examples=100, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), liars=st.integers(0, 3),
       target=st.integers(1, 500))
def test_sync_finishes_with_one_honest_peer_whatever_the_others_do(
        seed: int, liars: int, target: int) -> None:
    """One honest peer and up to three that claim more blocks than exist and time out,
    disconnect and come back, answer short or lie at random: the node imports the honest
    chain, each height once, in order, and is synced (the liars' claims stop counting once
    their breakers open)."""
    rng = random.Random(seed)
    state = sync.peer_status(sync.start(0), "honest", target)
    bad = [f"bad{i}" for i in range(liars)]
    for name in bad:
        state = sync.peer_status(state, name, target + rng.randrange(0, 50))
    now = 0.0
    imported_heights: list[int] = []
    for _ in range(10_000):
        if sync.is_synced(state):
            break
        state, requests = sync.assign(state, now, CONFIG)
        for request in requests:
            if request not in state.flight:
                continue  # failed with its peer's disconnection just before
            if request.peer == "honest":
                state = sync.range_done(state, request, request.range.count, now, CONFIG)
            else:
                match rng.randrange(4):
                    case 0:
                        pass  # stalls: expires later
                    case 1:
                        state = sync.range_failed(state, request, Failure.INVALID, now,
                                                  CONFIG)
                    case 2:  # short: only real blocks (beyond the target they would not verify)
                        real = max(0, min(request.range.count - 1,
                                          target - request.range.start + 1))
                        state = sync.range_done(state, request, rng.randint(0, real), now,
                                                CONFIG)
                    case _:
                        state = sync.peer_gone(state, request.peer, now, CONFIG)
                        state = sync.peer_status(state, request.peer, target + 10)
        while (ready := sync.next_to_import(state)) is not None:
            imported_heights.extend(range(ready.start, ready.end + 1))
            state = sync.imported(state, ready)
        assert sync.coverage_problem(state) is None
        now += 1.0
        state, _ = sync.expire(state, now, CONFIG)
    else:
        pytest.fail(f"not synced after 10,000 steps: {state}")
    assert imported_heights == list(range(1, state.head + 1))
    assert state.head == target
