"""Sync as plain rules: which ranges to ask which peer for, what a failure costs, when a peer
may be asked again, what to import next, and how far along the node is.

The SyncActor owns the I/O (requests over the network, signature verification, import); every
decision is made here, over frozen values, by functions that return the next state and what to
do. Time is passed in (``now``, seconds on the actor's clock): nothing here reads a clock.

**Ranges.** Heights after the node's head up to the best peer's head are cut into ranges of
``batch_size`` blocks (at most 1,024, the original's blocks-by-range limit), each downloaded
from one peer. Several ranges are in flight at once, from several peers, up to ``window``
blocks ahead of the head: downloads run ahead while earlier ranges are verified and imported,
and memory stays bounded whatever the distance to the target. Ranges are imported strictly in
order: :func:`next_to_import` hands out a downloaded range only when it starts right after the
head.

**Failures.** A range that fails — a timeout, a disconnect mid-range, an error answer, blocks
that do not chain, fewer blocks than the peer's head promises, or blocks whose signatures do
not verify — goes back to the front of the queue, to be asked of another peer (or the same one
later), and costs the peer:

* a retry delay, doubling from ``retry_initial`` up to ``retry_max`` seconds (the original:
  1 to 30 s), reset by a success;
* a count of consecutive failures in its *circuit breaker*: after ``breaker_failures`` (3) the
  breaker opens and the peer is asked nothing for ``breaker_reset`` (60 s); then it is
  half-open: one trial request, which closes it on success and opens it again on failure.
  While its breaker is not closed, a peer's head does not count towards the target (it
  cannot keep the node from being synced); yet a half-open peer ahead of the node gets its
  trial, for the heights above the node's head, even when no range is waiting for it.

A peer that *lies* (blocks that do not verify or do not chain) is also reported to the network
for scoring; that is the actor's business (:class:`Failure` says which kind it was).

**Nothing gets stuck.** Every height between the head and the target is, at all times, in
exactly one place: waiting in the queue, in flight at one peer, or downloaded and waiting for
import (checked by :func:`coverage_problem`, which the tests run after every step). A peer that
disconnects hands its ranges back; a peer that stalls is timed out (``request_timeout``); a
range is cut to what its peer claims to have, and a range no peer can serve waits until one
can.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence
from typing import Any

import attrs

from node.types.chain import SignedConsensusBlock

__all__ = [
    "MAX_BATCH",
    "Breaker",
    "Failure",
    "PeerSync",
    "Range",
    "Request",
    "SyncConfig",
    "SyncProgress",
    "SyncState",
    "assign",
    "breaker_state",
    "check_range",
    "coverage_problem",
    "expire",
    "head_moved",
    "imported",
    "is_synced",
    "next_to_import",
    "peer_gone",
    "peer_status",
    "progress",
    "range_done",
    "range_failed",
    "rejected",
    "start",
]

#: The most blocks one blocks-by-range request may ask for (the original's limit).
MAX_BATCH = 1024
#: The most state values one request may ask for (the wire's limit, node.network.frames).
MAX_STATE_BATCH = 384
#: The most verification workers ``sync.verify_workers`` may ask for.
MAX_WORKERS = 256
#: The most verification workers "one per core" (``sync.verify_workers = 0``) means.
DEFAULT_WORKERS_MAX = 4


def _positive(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ValueError(f"sync.{attribute.name} must be a positive number, got {value!r}")


def _count(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_WORKERS:
        raise ValueError(f"sync.{attribute.name} must be an integer from 0 to {MAX_WORKERS}, "
                         f"got {value!r}")


@attrs.frozen
class SyncConfig:
    """How sync spreads its requests (the ``[sync]`` configuration section)."""

    #: Blocks per blocks-by-range request (1..1024).
    batch_size: int = attrs.field(default=256, validator=_positive)
    #: The most blocks downloaded ahead of the head (in flight or waiting for import).
    window: int = attrs.field(default=4096, validator=_positive)
    #: Requests in flight to one peer at once.
    per_peer: int = attrs.field(default=2, validator=_positive)
    #: Seconds a request may take before it counts as a failure (a stalled peer).
    request_timeout: float = attrs.field(default=10.0, validator=_positive)
    #: A peer's retry delay after a failure: doubling from this, up to ``retry_max``.
    retry_initial: float = attrs.field(default=1.0, validator=_positive)
    retry_max: float = attrs.field(default=30.0, validator=_positive)
    #: Consecutive failures that open a peer's circuit breaker...
    breaker_failures: int = attrs.field(default=3, validator=_positive)
    #: ...for this many seconds, after which one trial request may go.
    breaker_reset: float = attrs.field(default=60.0, validator=_positive)
    #: Blocks handed to the ChainActor per import call (the SyncActor's; not a rule).
    import_batch: int = attrs.field(default=128, validator=_positive)
    #: Verify signatures in a worker process (a core of its own) rather than a thread that
    #: shares the GIL with the actors (the SyncActor's; not a rule).
    verify_in_process: bool = True
    #: Worker processes verifying (with ``verify_in_process``): 0 is one per core, at most
    #: :data:`DEFAULT_WORKERS_MAX` (past that the actors feeding them are the limit, and each
    #: worker holds its own copy of the bindings). The first runs at the node's priority; the
    #: others are spares at a lower one, using only the CPU the node leaves idle
    #: (:class:`~node.crypto.verifier.ProcessVerifier`).
    verify_workers: int = attrs.field(default=0, validator=_count)
    #: ``"full"``: every block executed from genesis. ``"snap"``: a node starting from
    #: genesis stores the blocks up to a pivot ``pivot_depth`` below the peers' head without
    #: executing them (every signature and consensus rule but their withdrawals checked),
    #: downloads the EVM state at the pivot from its peers (every value checked against its
    #: hash, the root against the pivot's signed header) and executes from there (the
    #: embedded engine only, and not with the bridge: the peg reads every block's receipts).
    mode: str = attrs.field(default="full", validator=attrs.validators.in_(("full", "snap")))
    #: Blocks below the peers' head the pivot is (snap), so that it is in the chain they all
    #: agree on by the time the download ends.
    pivot_depth: int = attrs.field(default=64, validator=_positive)
    #: The fewest blocks a snap sync must skip to be worth it (else: full).
    snap_min_blocks: int = attrs.field(default=1024, validator=_positive)
    #: State values asked per request (snap; the wire's limit is 384).
    state_batch: int = attrs.field(default=384, validator=_positive)

    def __attrs_post_init__(self) -> None:
        if self.state_batch > MAX_STATE_BATCH:
            raise ValueError(f"sync.state_batch must be at most {MAX_STATE_BATCH}, got "
                             f"{self.state_batch}")
        if self.batch_size > MAX_BATCH:
            raise ValueError(f"sync.batch_size must be at most {MAX_BATCH}, got "
                             f"{self.batch_size}")
        if self.window < self.batch_size:
            raise ValueError(f"sync.window ({self.window}) must hold at least one batch "
                             f"(sync.batch_size = {self.batch_size})")
        if self.retry_max < self.retry_initial:
            raise ValueError(f"sync.retry_max ({self.retry_max}) is below sync.retry_initial "
                             f"({self.retry_initial})")


@attrs.frozen
class Range:
    """Heights ``start .. start + count - 1``."""

    start: int
    count: int

    @property
    def end(self) -> int:
        """The last height of the range."""
        return self.start + self.count - 1

    def __str__(self) -> str:
        return f"#{self.start}..#{self.end}"


class Failure(enum.Enum):
    """Why a range failed: all cost the peer a retry; the last two also mean it lied."""

    TIMEOUT = "timeout"
    DISCONNECTED = "disconnected"
    ERROR = "error"  # an error answer, or an answer we could not read
    SHORT = "short"  # fewer blocks than its head promises
    INVALID = "invalid"  # blocks that do not chain, or whose signatures do not verify

    @property
    def lied(self) -> bool:
        return self in (Failure.SHORT, Failure.INVALID)


@attrs.frozen
class Breaker:
    """A peer's circuit breaker: closed (``opened_at`` None), open, or half-open."""

    failures: int = 0  # consecutive
    opened_at: float | None = None
    trial: bool = False  # a half-open trial request is in flight


def breaker_state(breaker: Breaker, now: float, config: SyncConfig) -> str:
    """``"closed"``, ``"open"`` or ``"half-open"`` at ``now``."""
    if breaker.opened_at is None:
        return "closed"
    return "open" if now < breaker.opened_at + config.breaker_reset else "half-open"


@attrs.frozen
class PeerSync:
    """What sync knows of one peer."""

    peer: str
    head: int
    breaker: Breaker = Breaker()
    retry_at: float = 0.0
    retry_delay: float = 0.0  # the last delay; 0 after a success
    in_flight: int = 0
    #: The number (:attr:`SyncState.asks`) of its latest request; -1 before any. Of the peers
    #: with the fewest requests out, the one asked longest ago gets the next range.
    last_asked: int = -1
    #: False once it disconnected: a peer with failures on record is remembered until it
    #: comes back, so that reconnecting does not wipe its breaker.
    connected: bool = True

    @property
    def trusted_head(self) -> bool:
        """Whether its head counts towards the target: connected, and its breaker never
        opened since its last success (a peer that claims blocks it does not deliver cannot
        keep the node from being synced)."""
        return self.connected and self.breaker.opened_at is None


@attrs.frozen
class Request:
    """Ask ``peer`` for the blocks of ``range``; it counts as failed after ``deadline``."""

    peer: str
    range: Range
    deadline: float


@attrs.frozen
class SyncState:
    """Where sync stands. ``queue``: ranges waiting for a peer, in height order; ``flight``:
    requests out; ``downloaded``: ranges received and checked, waiting for import."""

    head: int
    peers: tuple[PeerSync, ...] = ()
    queue: tuple[Range, ...] = ()
    flight: tuple[Request, ...] = ()
    downloaded: tuple[Range, ...] = ()
    #: The first height not yet in the queue, in flight or downloaded.
    frontier: int = 0
    #: Requests handed out so far (numbers them for :attr:`PeerSync.last_asked`).
    asks: int = 0

    @property
    def target(self) -> int:
        """The best head among the peers whose head is trusted (:attr:`PeerSync.trusted_head`),
        or the node's own head when it knows better."""
        return max([self.head, *(p.head for p in self.peers if p.trusted_head)])

    @property
    def connected(self) -> int:
        """How many peers are connected."""
        return sum(p.connected for p in self.peers)

    def peer(self, peer: str) -> PeerSync | None:
        for known in self.peers:
            if known.peer == peer:
                return known
        return None


def start(head: int) -> SyncState:
    """Sync's state for a node whose head is at ``head``."""
    return SyncState(head=head, frontier=head + 1)


def _with_peer(state: SyncState, updated: PeerSync) -> SyncState:
    others = tuple(p for p in state.peers if p.peer != updated.peer)
    return attrs.evolve(state, peers=tuple(sorted((*others, updated), key=lambda p: p.peer)))


def peer_status(state: SyncState, peer: str, head: int) -> SyncState:
    """A peer connected or told us its head (a status answer, a gossiped block)."""
    known = state.peer(peer)
    return _with_peer(state, PeerSync(peer, head) if known is None
                      else attrs.evolve(known, head=head, connected=True))


def _requeue(queue: Iterable[Range], ranges: Iterable[Range]) -> tuple[Range, ...]:
    return tuple(sorted((*queue, *ranges), key=lambda r: r.start))


def _above(ranges: Iterable[Range], head: int) -> tuple[Range, ...]:
    """The parts of ``ranges`` above ``head`` (a request may have gone out before the head
    moved past some of its heights)."""
    kept = []
    for r in ranges:
        if r.end > head:
            kept.append(r if r.start > head else Range(head + 1, r.end - head))
    return tuple(kept)


def peer_gone(state: SyncState, peer: str, now: float, config: SyncConfig) -> SyncState:
    """A peer disconnected (or was banned): its requests fail; it is forgotten unless it has
    failures on record, which it finds again if it reconnects."""
    for request in [r for r in state.flight if r.peer == peer]:
        state = range_failed(state, request, Failure.DISCONNECTED, now, config)
    known = state.peer(peer)
    if known is None:
        return state
    if known.breaker.failures == 0:
        return attrs.evolve(state, peers=tuple(p for p in state.peers if p.peer != peer))
    return _with_peer(state, attrs.evolve(known, connected=False))


def _askable(peer: PeerSync, now: float, config: SyncConfig) -> bool:
    if not peer.connected or peer.in_flight >= config.per_peer or now < peer.retry_at:
        return False
    match breaker_state(peer.breaker, now, config):
        case "closed":
            return True
        case "half-open":
            return not peer.breaker.trial and peer.in_flight == 0
    return False


def assign(state: SyncState, now: float, config: SyncConfig
           ) -> tuple[SyncState, list[Request]]:
    """Hand out what can be asked now: queued ranges first (lowest height first), then new
    ranges from the frontier, while the window allows, each to the askable peer that has it
    with the fewest requests out and, among those, the one asked longest ago (round-robin).
    A peer that answers faster is free again sooner and so gets more: ranges spread over
    the peers in proportion to what they deliver. (Ties broken by name alone sent nearly
    every range to one peer whenever import was the bottleneck: each time import freed
    part of the window, every peer was idle.) Returns the state with the requests in
    flight."""
    requests: list[Request] = []
    limit = state.head + config.window  # the highest height that may be downloaded ahead
    while True:
        candidates = [p for p in state.peers if _askable(p, now, config)]
        if not candidates:
            break
        # New ranges reach the best head among the peers that may be asked now: a half-open
        # peer's head is not trusted for the target (it cannot keep the node from being
        # synced), but its trial request is what closes its breaker again.
        reach = max(state.target, *(p.head for p in candidates))
        if state.queue:
            wanted, rest = state.queue[0], state.queue[1:]
        elif state.frontier <= min(reach, limit):
            end = min(state.frontier + config.batch_size - 1, reach, limit)
            wanted, rest = Range(state.frontier, end - state.frontier + 1), state.queue
        else:
            break
        having = [p for p in candidates if p.head >= wanted.start]
        if not having:
            break  # the lowest range waits for a peer that has it (ranges go in order)
        chosen = min(having, key=lambda p: (p.in_flight, p.last_asked, -p.head, p.peer))
        if chosen.head < wanted.end:  # ask only what it has; the rest waits
            asked = Range(wanted.start, chosen.head - wanted.start + 1)
            rest = _requeue(rest, [Range(chosen.head + 1, wanted.end - chosen.head)])
        else:
            asked = wanted
        frontier = max(state.frontier, wanted.end + 1)
        request = Request(chosen.peer, asked, now + config.request_timeout)
        breaker = chosen.breaker
        if breaker_state(breaker, now, config) == "half-open":
            breaker = attrs.evolve(breaker, trial=True)
        state = _with_peer(
            attrs.evolve(state, queue=rest, frontier=frontier,
                         flight=(*state.flight, request), asks=state.asks + 1),
            attrs.evolve(chosen, in_flight=chosen.in_flight + 1, breaker=breaker,
                         last_asked=state.asks))
        requests.append(request)
    return state, requests


def _finish(state: SyncState, request: Request) -> tuple[SyncState, PeerSync | None]:
    """Take ``request`` out of flight; the peer it went to, if still known."""
    if request not in state.flight:
        raise ValueError(f"no request {request.range} to {request.peer} is in flight")
    state = attrs.evolve(state, flight=tuple(r for r in state.flight if r != request))
    peer = state.peer(request.peer)
    if peer is not None:
        peer = attrs.evolve(peer, in_flight=peer.in_flight - 1)
    return state, peer


def range_done(state: SyncState, request: Request, received: int, now: float,
               config: SyncConfig) -> SyncState:
    """``received`` checked blocks (from ``request.range.start`` on, chaining) arrived for
    ``request``. Fewer than asked is a failure of the rest (the peer promised them: a
    :data:`Failure.SHORT`); the blocks that came are kept."""
    if not 0 <= received <= request.range.count:
        raise ValueError(f"received {received} blocks for {request.range}")
    state, peer = _finish(state, request)
    asked = request.range
    got = [Range(asked.start, received)] if received else []
    missing = [] if received == asked.count else [Range(asked.start + received,
                                                        asked.count - received)]
    state = attrs.evolve(state, downloaded=_requeue(state.downloaded, _above(got, state.head)),
                         queue=_requeue(state.queue, _above(missing, state.head)))
    if peer is None:
        return state
    if missing:
        return _penalise(state, peer, now, config)
    return _with_peer(state, attrs.evolve(peer, breaker=Breaker(), retry_delay=0.0,
                                          retry_at=now))


def range_failed(state: SyncState, request: Request, failure: Failure, now: float,
                 config: SyncConfig) -> SyncState:
    """``request`` failed (see :class:`Failure`): its range goes back to the queue, the peer
    waits its retry delay and its breaker counts the failure."""
    state, peer = _finish(state, request)
    state = attrs.evolve(state, queue=_requeue(state.queue, _above([request.range], state.head)))
    return state if peer is None else _penalise(state, peer, now, config)


def _penalise(state: SyncState, peer: PeerSync, now: float, config: SyncConfig) -> SyncState:
    """One failure: the retry delay doubles (from ``retry_initial``, up to ``retry_max``); the
    breaker opens at ``breaker_failures`` in a row, or at once when a half-open trial fails."""
    delay = min(config.retry_max, max(config.retry_initial, peer.retry_delay * 2))
    failures = peer.breaker.failures + 1
    half_open = breaker_state(peer.breaker, now, config) == "half-open"
    opened_at = now if half_open or failures >= config.breaker_failures \
        else peer.breaker.opened_at
    breaker = Breaker(failures, opened_at, trial=False)
    return _with_peer(state, attrs.evolve(peer, breaker=breaker, retry_delay=delay,
                                          retry_at=now + delay))


def expire(state: SyncState, now: float, config: SyncConfig
           ) -> tuple[SyncState, list[Request]]:
    """Fail every request past its deadline (a stalled peer); returns them."""
    late = [r for r in state.flight if r.deadline <= now]
    for request in late:
        state = range_failed(state, request, Failure.TIMEOUT, now, config)
    return state, late


def snap_pivot(head: int, target: int, cfg: SyncConfig) -> int | None:
    """The pivot height of a snap sync from ``head`` to the peers' ``target``, or None to
    sync in full: snap is for a node that has nothing but genesis, ``sync.pivot_depth``
    below the target, and only when it skips at least ``sync.snap_min_blocks`` blocks."""
    if cfg.mode != "snap" or head != 0:
        return None
    pivot = target - cfg.pivot_depth
    return pivot if pivot >= cfg.snap_min_blocks else None


def import_span(ready: Range, batch: int, pivot: int | None) -> tuple[Range, bool] | None:
    """What of ``ready`` (which starts right after the head) to import in one call, and
    whether to execute it: up to ``batch`` blocks, never across a snap sync's ``pivot``
    (history up to it is stored without executing; None when there is no pivot, or the
    engine executes from it already). History goes a whole downloaded range a call: without
    execution a block costs the chain microseconds, and one synced write per range costs
    less than one per ``batch``. None: wait (the blocks after the pivot wait for the engine
    to take the pivot's state)."""
    if pivot is None:
        end = min(ready.end, ready.start + batch - 1)
        return Range(ready.start, end - ready.start + 1), True
    if ready.start > pivot:
        return None
    end = min(ready.end, pivot)
    return Range(ready.start, end - ready.start + 1), False


def next_to_import(state: SyncState) -> Range | None:
    """The downloaded range that starts right after the head, if any: import it next."""
    for ready in state.downloaded:
        if ready.start == state.head + 1:
            return ready
    return None


def imported(state: SyncState, ready: Range, height: int | None = None) -> SyncState:
    """The blocks of ``ready`` were imported, through ``height`` (all of them by default).
    An import that stopped early (a block that did not verify) hands the rest back to the
    queue: the caller reports the peer with :func:`range_failed`'s ``INVALID`` separately."""
    if ready not in state.downloaded:
        raise ValueError(f"{ready} was not downloaded")
    through = ready.end if height is None else height
    if not ready.start - 1 <= through <= ready.end:
        raise ValueError(f"imported through #{through}, outside {ready}")
    rest = () if through == ready.end else (Range(through + 1, ready.end - through),)
    return attrs.evolve(state, head=max(state.head, through),
                        downloaded=tuple(r for r in state.downloaded if r != ready),
                        queue=_requeue(state.queue, rest))


def rejected(state: SyncState, ready: Range, peer: str | None, now: float,
             config: SyncConfig) -> SyncState:
    """Downloaded blocks ``ready`` (the range :func:`next_to_import` handed out, or what is
    left of it) were refused at import, or their first block does not chain to the head:
    they go back to the queue, to be asked again, and ``peer``, the one that sent them (when
    known), pays a failure as for a failed request (its request was done already, so
    :func:`range_failed` no longer applies)."""
    if ready not in state.downloaded:
        raise ValueError(f"{ready} was not downloaded")
    state = attrs.evolve(state, downloaded=tuple(r for r in state.downloaded if r != ready),
                         queue=_requeue(state.queue, [ready]))
    known = None if peer is None else state.peer(peer)
    return state if known is None else _penalise(state, known, now, config)


def head_moved(state: SyncState, head: int) -> SyncState:
    """The node's head moved outside sync (a gossiped block imported): heights at or below it
    are no longer needed. Downloaded ranges are cut too, so the caller keeps downloaded blocks
    by height, not by range; requests in flight keep their range, and only what their answer
    brings above the head is kept."""
    if head <= state.head:
        return state
    return attrs.evolve(state, head=head, queue=_above(state.queue, head),
                        downloaded=_above(state.downloaded, head),
                        frontier=max(state.frontier, head + 1))


def is_synced(state: SyncState) -> bool:
    """The node has every block its peers have told it of."""
    return state.head >= state.target


def coverage_problem(state: SyncState) -> str | None:
    """What is wrong with the bookkeeping, or None: every height after the head and before
    the frontier must be in exactly one of the queue, the flight and the downloaded ranges
    (only a request in flight may reach at or below the head: it went out before the head
    moved)."""
    below = [r for r in (*state.queue, *state.downloaded) if r.start <= state.head]
    if below:
        return f"{below[0]} is queued or downloaded, but the head is #{state.head}"
    flight = _above((r.range for r in state.flight), state.head)
    ranges = sorted([*state.queue, *flight, *state.downloaded], key=lambda r: r.start)
    expected = state.head + 1
    for r in ranges:
        if r.count <= 0:
            return f"an empty range {r}"
        if r.start != expected:
            return (f"heights #{expected}..#{r.start - 1} are nowhere" if r.start > expected
                    else f"{r} overlaps another range (or lies below the head)")
        expected = r.end + 1
    if expected != max(state.frontier, state.head + 1):
        return f"the ranges end at #{expected - 1}, the frontier is #{state.frontier}"
    return None


def check_range(asked: Range, blocks: Sequence[SignedConsensusBlock],
                parent_hash: bytes | None) -> tuple[int, str | None]:
    """How many of ``blocks`` (a peer's answer to ``asked``) are the heights asked for, in
    order, each the child of the one before (the first the child of ``parent_hash`` when it
    is known: the block at ``asked.start - 1``); and the problem that stopped the count, if
    any. Signatures are not checked here."""
    if len(blocks) > asked.count:
        return 0, f"{len(blocks)} blocks for a request of {asked.count}"
    previous = parent_hash
    for i, block in enumerate(blocks):
        height = asked.start + i
        if block.height != height:
            return i, f"block {i} of the answer is #{block.height}, expected #{height}"
        if previous is not None and block.message.parent_hash != previous:
            return i, f"block #{height} does not chain to the block before it"
        previous = block.hash()
    return len(blocks), None


@attrs.frozen
class SyncProgress:
    """Published on the bus, served over RPC and in ``/metrics``."""

    current: int
    target: int
    blocks_per_second: float
    peers: int
    synced: bool


def progress(state: SyncState, blocks_per_second: float) -> SyncProgress:
    return SyncProgress(state.head, state.target, blocks_per_second, state.connected,
                        is_synced(state))
