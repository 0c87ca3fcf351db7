"""Model-based test of the supervisor: random flags, children and fault sequences are run
against the real ``otp.Supervisor`` and against a small pure-Python model of OTP's rules
(``otp/_supervisor.py``'s module docstring, and OTP's ``supervisor.erl``), compared after every
step.

Hypothesis draws the flags (strategy, intensity 0..4, period 1..10 s, on_exhausted escalate or
continue_without, auto_shutdown), 2..6 children (permanent / transient / temporary, maybe
significant) and a list of operations (crash a child, make it exit with a reason, send it exit
signals, several at once, make its next init fail, let time pass); one ``trio.run`` under an
autojumping ``MockClock`` interprets them in order, so Hypothesis shrinks a failure to a short
sequence. Operations take no virtual time except ``Sleep``, so every restart happens at the
virtual time of the operation that caused it and the model uses the same timestamps as the
supervisor. After each operation we wait until every task is blocked (the supervisor has then
processed the exits and finished its restarts) and compare:

* whether the supervisor is alive, and when it gave up (intensity, auto_shutdown), that it
  exited with ``"shutdown"`` after stopping its children in reverse order;
* ``which_children`` and ``count_children``: ids in order, running or not, status, restarts;
* pids: a child the model (re)started has a pid never seen before, the others keep theirs;
* the event log the children write (init begun, init done, terminate with its reason), which
  pins down start order, stop order, that no start overlaps another, and that a crashed,
  stopped or killed child does (not) run ``terminate``.
"""

from __future__ import annotations

import copy
import itertools
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import attrs
import pytest
import trio
import trio.testing
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import otp

Event = tuple[Any, ...]

# --- the children ------------------------------------------------------------------------------


class Child(otp.GenServer):
    """Logs its init (begun and done, with checkpoints between, so overlapping starts would
    show) and its terminate; its init fails once if its label is in ``fail``; a ``"crash"``
    cast raises, a ``("stop", reason)`` cast stops."""

    async def init(self, label: str, log: list[Event], fail: set[str]) -> None:
        self.label = label
        self.log = log
        log.append(("init", label))
        for _ in range(3):
            await trio.lowlevel.checkpoint()
        if label in fail:
            fail.discard(label)
            raise RuntimeError("init fails")
        log.append(("up", label))

    async def handle_cast(self, msg: Any) -> Any:
        await trio.lowlevel.checkpoint()
        if msg == "crash":
            raise RuntimeError("crash requested")
        return otp.Stop(msg[1])

    async def terminate(self, reason: Any) -> None:
        await trio.lowlevel.checkpoint()
        shown = "crash" if isinstance(reason, Exception) else reason
        self.log.append(("terminate", self.label, shown))


# --- operations (child ``i`` is ``c{i % number of children}``) -----------------------------------


@dataclass(frozen=True)
class Crash:
    """Child ``i`` raises in ``handle_cast``: terminate(exception), an abnormal exit."""

    i: int


@dataclass(frozen=True)
class Stop:
    """Child ``i`` returns ``otp.Stop(reason)``: terminate(reason), exit with ``reason``."""

    i: int
    reason: Any


@dataclass(frozen=True)
class Signal:
    """``otp.exit(child, reason)`` from outside, for each (i, reason), all at once before the
    supervisor runs: ``"kill"`` ends the child as ``"killed"``, ``"normal"`` is ignored (it
    does not trap exits), anything else ends it with that reason; terminate does not run.

    Several children dying together reach the supervisor in an order Trio's scheduler picks,
    so the model accepts any order of their exits."""

    kills: tuple[tuple[int, Any], ...]


@dataclass(frozen=True)
class FailInit:
    """The next init of child ``i`` (when a restart starts it again) fails."""

    i: int


@dataclass(frozen=True)
class Sleep:
    """Let ``dt`` virtual seconds pass."""

    dt: float


Op = Crash | Stop | Signal | FailInit | Sleep

EXIT_REASONS = ["normal", "shutdown", ("shutdown", "x"), ("custom", "boom")]
SIGNALS = ["kill", "normal", "shutdown", ("shutdown", "x"), ("custom", "boom")]


# --- the model ---------------------------------------------------------------------------------

#: otp bug (see test_continue_without_after_a_failed_restart_keeps_the_rest_running): when a
#: ONE_FOR_ALL / REST_FOR_ONE restart exhausts intensity because a child's init fails, and
#: on_exhausted is CONTINUE_WITHOUT, the group's children after the failed one are never started
#: again: they are left "stopped", though the rule says "keep the rest running". While True, the
#: model predicts that behaviour so the rest of the comparison stays useful; set it to False once
#: the bug is fixed (that xfail test then passes, strictly).
KNOWN_BUG_ABANDONED_GROUP = False


def is_normal(reason: Any) -> bool:
    """OTP: a transient child is not restarted after normal, shutdown or {shutdown, _}."""
    return reason in ("normal", "shutdown") or (
        isinstance(reason, tuple) and len(reason) == 2 and reason[0] == "shutdown"
    )


@dataclass
class ChildModel:
    id: str
    restart: str  # "permanent" | "transient" | "temporary"
    significant: bool = False
    running: bool = False  # has a pid in which_children
    dead: bool = False  # its process died; the supervisor has not handled the exit yet
    status: str = "stopped"  # "running" | "stopped" | "failed"
    generation: int = 0  # times started: a new generation must come with a new pid
    restarts: int = 0  # its own exits that called for a restart (counted against intensity)


@dataclass
class SupervisorModel:
    strategy: str
    intensity: int
    period: float
    on_exhausted: str
    auto_shutdown: str
    children: list[ChildModel]
    restart_times: list[float] = field(default_factory=list)
    alive: bool = True
    log: list[Event] = field(default_factory=list)
    fail: set[str] = field(default_factory=set)  # children whose next init fails

    def child(self, child_id: str) -> ChildModel | None:
        return next((c for c in self.children if c.id == child_id), None)

    def start(self, child: ChildModel) -> bool:
        """Start ``child``; False if its init failed."""
        # Start: each child's init finishes before the next child starts.
        self.log.append(("init", child.id))
        if child.id in self.fail:
            self.fail.discard(child.id)
            return False
        child.running, child.dead, child.status = True, False, "running"
        child.generation += 1
        self.log.append(("up", child.id))
        return True

    def stop(self, child: ChildModel) -> None:
        # Stop: terminate("shutdown"), which our children obey at once; a child whose
        # process is already dead has nothing left to run.
        if child.running:
            if not child.dead:
                self.log.append(("terminate", child.id, "shutdown"))
            child.running, child.dead, child.status = False, False, "stopped"

    def exits(self, exits: list[tuple[ChildModel, Any]], now: float) -> None:
        """These children's processes died together at virtual time ``now``; the supervisor
        handles their exits in this order."""
        pending = [(c, c.generation, reason) for c, reason in exits]
        for c, _, _ in pending:
            c.dead = True
        for c, generation, reason in pending:
            # An exit the supervisor no longer cares about: a restart of a sibling already
            # stopped this child (and started it again, or forgot it), or the supervisor
            # gave up. OTP likewise flushes the EXIT of a child it shuts down.
            if self.alive and c in self.children and c.generation == generation and c.dead:
                self.exited(c, reason, now)

    def give_up(self) -> None:
        # Stop every child in reverse order and exit with "shutdown".
        for other in reversed(self.children):
            self.stop(other)
        self.alive = False

    def exited(self, child: ChildModel, reason: Any, now: float) -> None:
        child.running, child.dead, child.status = False, False, "stopped"
        # Which exits restart: TEMPORARY never, and its spec is forgotten.
        if child.restart == "temporary":
            self.children.remove(child)
            self.not_restarted(child)
            return
        # TRANSIENT: every exit except normal, shutdown and (shutdown, detail).
        if child.restart == "transient" and is_normal(reason):
            self.not_restarted(child)
            return
        # PERMANENT (any exit) and TRANSIENT (abnormal exit): a restart, recorded with its
        # time. Intensity: more than `intensity` restarts within the last `period` seconds
        # and the supervisor gives up. (A restart exactly `period` seconds old still counts,
        # as in supervisor.erl.)
        child.restarts += 1
        self.restart_times = [t for t in self.restart_times if now - t <= self.period]
        self.restart_times.append(now)
        if len(self.restart_times) > self.intensity:
            if self.on_exhausted == "escalate":
                # ESCALATE: stop every child in reverse order and exit with "shutdown".
                self.give_up()
            else:
                # CONTINUE_WITHOUT: the failing child stays stopped ("failed"), the rest
                # keep running, and the restart history starts afresh.
                child.status = "failed"
                self.restart_times = []
            return
        # What restarts: ONE_FOR_ONE the child; ONE_FOR_ALL every child; REST_FOR_ONE the
        # child and every child after it. As in OTP, the group's children that were not
        # running (a transient child that exited normally, a "failed" one) start again too.
        i = self.children.index(child)
        group = {
            "one_for_one": [child],
            "one_for_all": list(self.children),
            "rest_for_one": self.children[i:],
        }[self.strategy]
        # The others are stopped in reverse order ...
        for other in reversed(group):
            if other is not child:
                self.stop(other)
        # ... a temporary child stopped by a sibling's restart is forgotten ...
        for other in group:
            if other.restart == "temporary":
                self.children.remove(other)
        # ... then the group starts again, in order.
        self.start_group([other for other in group if other.restart != "temporary"], now)

    def not_restarted(self, child: ChildModel) -> None:
        # Significant children shut the supervisor down when they exit on their own and are
        # not restarted: ANY_SIGNIFICANT when any does, ALL_SIGNIFICANT when all have (none
        # is running any more). Not when a sibling's restart stops them (as in OTP).
        if not child.significant or self.auto_shutdown == "never":
            return
        if self.auto_shutdown == "any_significant" or not any(
            c.significant and c.running for c in self.children
        ):
            self.give_up()

    def start_group(self, group: list[ChildModel], now: float) -> None:
        for k, child in enumerate(group):
            if child.running or child not in self.children:
                continue
            if not self.start(child):
                # A restart whose init fails counts as another exit of that child, with the
                # exception as reason, and goes through the same rules. The restart that
                # follows covers the rest of this group (ONE_FOR_ALL: everything; REST_FOR_ONE:
                # the failed child and after), unless intensity is exhausted ...
                self.exited(child, RuntimeError("init fails"), now)
                if self.alive and child.status == "failed" and not KNOWN_BUG_ABANDONED_GROUP:
                    # ... and CONTINUE_WITHOUT keeps "the rest running": the group's other
                    # children still start.
                    self.start_group(group[k + 1 :], now)
                return


# --- observing the real supervisor -------------------------------------------------------------


@attrs.frozen
class Observation:
    alive: bool
    exit_reason: Any
    log: list[Event]
    fail: set[str]
    rows: list[otp.ChildInfo]
    counts: otp.ChildCounts | None


class Harness:
    def __init__(
        self, model: SupervisorModel, sup: otp.Pid, log: list[Event], fail: set[str]
    ) -> None:
        self.model = model
        self.sup = sup
        self.log = log
        self.fail = fail
        self.size = len(model.children)
        self.pids: dict[str, otp.Pid] = {}  # the last pid seen for each running child
        self.generations: dict[str, int] = {}  # the model's generation when it was seen
        self.seen: set[otp.Pid] = set()  # every child pid ever seen

    async def observe(self) -> Observation:
        log, fail = list(self.log), set(self.fail)
        if not self.sup.is_alive():
            return Observation(False, self.sup._proc.exit_reason, log, fail, [], None)
        rows = await otp.which_children(self.sup)
        counts = await otp.count_children(self.sup)
        return Observation(True, None, log, fail, rows, counts)

    def differences(self, model: SupervisorModel, obs: Observation) -> str | None:
        """What the observation gets wrong by the model, or None."""
        if obs.log != model.log:
            return f"event log:\n  got  {obs.log}\n  want {model.log}"
        if obs.fail != model.fail:
            return f"inits still to fail: got {obs.fail}, want {model.fail}"
        if obs.alive != model.alive:
            return f"supervisor alive: got {obs.alive}, want {model.alive}"
        if not model.alive:
            # It gave up: it exits with "shutdown" and no child of it is left.
            if obs.exit_reason != "shutdown":
                return f"supervisor exit reason: got {obs.exit_reason!r}, want 'shutdown'"
            left = [pid for pid in self.pids.values() if pid.is_alive()]
            return f"children outlive their supervisor: {left}" if left else None
        got_ids, want_ids = [r.id for r in obs.rows], [c.id for c in model.children]
        if got_ids != want_ids:
            return f"which_children ids: got {got_ids}, want {want_ids}"
        for row, c in zip(obs.rows, model.children, strict=True):
            got = (row.pid is not None, row.status, row.restarts, row.restart.value)
            want = (c.running, c.status, c.restarts, c.restart)
            if got != want:
                return f"child {c.id} (has pid, status, restarts, type): got {got}, want {want}"
            if row.pid is None:
                continue
            if not row.pid.is_alive():
                return f"child {c.id}: which_children gives a dead pid"
            kept = self.generations.get(c.id) == c.generation
            if kept and row.pid != self.pids[c.id]:
                return f"child {c.id} was not restarted but its pid changed"
            if not kept and row.pid in self.seen:
                return f"child {c.id} was (re)started but has an old pid"
        assert obs.counts is not None
        got_counts = (obs.counts.specs, obs.counts.active)
        want_counts = (len(model.children), sum(c.running for c in model.children))
        if got_counts != want_counts:
            return f"count_children (specs, active): got {got_counts}, want {want_counts}"
        return None

    def accept(self, model: SupervisorModel, obs: Observation) -> None:
        self.model = model
        for row in obs.rows:
            if row.pid is not None:
                c = model.child(row.id)
                assert c is not None
                self.pids[c.id] = row.pid
                self.generations[c.id] = c.generation
                self.seen.add(row.pid)

    async def check(self, step: str, candidates: list[SupervisorModel]) -> None:
        """The observation must match one of the candidate models, which becomes the model."""
        obs = await self.observe()
        problems = []
        for model in candidates:
            problem = self.differences(model, obs)
            if problem is None:
                self.accept(model, obs)
                return
            problems.append(problem)
        raise AssertionError(f"{step}: {problems[0]}")

    async def apply(self, n: int, op: Op) -> None:
        """Run ``op`` on the supervisor and on (copies of) the model, then compare."""
        now = trio.current_time()
        model = copy.deepcopy(self.model)
        candidates = [model]
        if isinstance(op, Sleep):
            await trio.sleep(op.dt)
        elif isinstance(op, FailInit):
            self.fail.add(f"c{op.i % self.size}")
            model.fail.add(f"c{op.i % self.size}")
        elif isinstance(op, Crash | Stop):
            c = model.child(f"c{op.i % self.size}")
            if c is not None and c.running:  # else: nothing to crash or stop
                if isinstance(op, Crash):
                    await otp.cast(self.pids[c.id], "crash")
                    model.log.append(("terminate", c.id, "crash"))
                    model.exits([(c, RuntimeError("crash requested"))], now)
                else:
                    await otp.cast(self.pids[c.id], ("stop", op.reason))
                    model.log.append(("terminate", c.id, op.reason))
                    model.exits([(c, op.reason)], now)
        else:
            kills: dict[str, Any] = {}
            for i, reason in op.kills:
                c = model.child(f"c{i % self.size}")
                if c is not None and c.running and c.id not in kills:
                    otp.exit(self.pids[c.id], reason)
                    if reason != "normal":
                        kills[c.id] = "killed" if reason == "kill" else reason
            candidates = []
            for order in itertools.permutations(kills.items()):
                candidate = copy.deepcopy(model)
                exits = []
                for cid, reason in order:
                    child = candidate.child(cid)
                    assert child is not None
                    exits.append((child, reason))
                candidate.exits(exits, now)
                candidates.append(candidate)
        # Nothing but Sleep waits on the clock: once every task is blocked, the supervisor
        # has handled the exits and finished its restarts, and no virtual time has passed.
        await trio.testing.wait_all_tasks_blocked()
        if not isinstance(op, Sleep):
            assert trio.current_time() == now, f"step {n}: {op}: handling exits took time"
        await self.check(f"step {n}: {op}", candidates)


@contextmanager
def quiet_otp_logger() -> Iterator[None]:
    """Crashes are expected here: keep their tracebacks out of the log."""
    log = logging.getLogger("otp")
    old = log.disabled
    log.disabled = True
    try:
        yield
    finally:
        log.disabled = old


@dataclass(frozen=True)
class Flags:
    strategy: str
    intensity: int
    period: int
    on_exhausted: str
    auto_shutdown: str


async def run_model(flags: Flags, children: list[tuple[str, bool]], ops: list[Op]) -> None:
    log: list[Event] = []
    fail: set[str] = set()
    model = SupervisorModel(
        flags.strategy,
        flags.intensity,
        float(flags.period),
        flags.on_exhausted,
        flags.auto_shutdown,
        [
            # Only a transient or temporary child may be significant, and only with an
            # auto_shutdown other than "never".
            ChildModel(
                f"c{i}",
                restart,
                significant and restart != "permanent" and flags.auto_shutdown != "never",
            )
            for i, (restart, significant) in enumerate(children)
        ],
    )
    specs = [
        otp.ChildSpec(
            c.id,
            Child,
            kwargs={"label": c.id, "log": log, "fail": fail},
            restart=c.restart,
            significant=c.significant,
        )
        for c in model.children
    ]
    async with otp.runtime():
        sup = await otp.start(
            otp.Supervisor,
            children=specs,
            strategy=flags.strategy,
            intensity=flags.intensity,
            period=flags.period,
            on_exhausted=flags.on_exhausted,
            auto_shutdown=flags.auto_shutdown,
        )
        # Start: children start in list order.
        for c in model.children:
            model.start(c)
        harness = Harness(model, sup, log, fail)
        await harness.check("start", [model])
        for n, op in enumerate(ops):
            await harness.apply(n, op)
            if not harness.model.alive:
                break
        model = harness.model
        started = sum(c.generation for c in model.children) - len(model.children)
        event("gave up" if not model.alive else "still running")
        event(f"children restarted: {'10+' if started >= 10 else started}")


# --- the test ----------------------------------------------------------------------------------

MAX_CHILDREN = 6
child_index = st.integers(0, MAX_CHILDREN - 1)
signals = st.lists(st.tuples(child_index, st.sampled_from(SIGNALS)), min_size=1, max_size=3)

all_flags = st.builds(
    Flags,
    strategy=st.sampled_from(["one_for_one", "one_for_all", "rest_for_one"]),
    intensity=st.integers(0, 4),
    period=st.integers(1, 10),
    on_exhausted=st.sampled_from(["escalate", "continue_without"]),
    auto_shutdown=st.sampled_from(["never", "any_significant", "all_significant"]),
)
# (restart type, significant if allowed)
child_specs = st.lists(
    st.tuples(st.sampled_from(["permanent", "transient", "temporary"]), st.booleans()),
    min_size=2,
    max_size=MAX_CHILDREN,
)
operations = st.lists(
    st.one_of(
        st.builds(Crash, child_index),
        st.builds(Stop, child_index, st.sampled_from(EXIT_REASONS)),
        st.builds(Signal, signals.map(tuple)),
        st.builds(FailInit, child_index),
        # Half seconds, so restarts exactly `period` seconds apart happen too.
        st.builds(Sleep, st.integers(1, 24).map(lambda n: n / 2)),
    ),
    min_size=1,
    max_size=40,
)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(flags=all_flags, children=child_specs, ops=operations)
def test_supervisor_matches_model(
    flags: Flags, children: list[tuple[str, bool]], ops: list[Op]
) -> None:
    with quiet_otp_logger():
        trio.run(
            run_model, flags, children, ops, clock=trio.testing.MockClock(autojump_threshold=0)
        )


@pytest.mark.parametrize("strategy", ["one_for_all", "rest_for_one"])
async def test_continue_without_after_a_failed_restart_keeps_the_rest_running(
    strategy: str,
) -> None:
    """CONTINUE_WITHOUT: "leave the failing child stopped, keep the rest running". Here the
    restart after a's crash stops b, a's init then fails, which exhausts intensity 1: a is
    left "failed", and b must run again. otp leaves b stopped (no pid, status "stopped")."""
    log: list[Event] = []
    fail: set[str] = set()
    async with otp.runtime():
        specs = [
            otp.ChildSpec(label, Child, kwargs={"label": label, "log": log, "fail": fail})
            for label in ("a", "b")
        ]
        sup = await otp.start(
            otp.Supervisor,
            children=specs,
            strategy=strategy,
            intensity=1,
            on_exhausted="continue_without",
        )
        a = (await otp.which_children(sup))[0].pid
        assert a is not None
        fail.add("a")  # a's next init fails
        with quiet_otp_logger():
            await otp.cast(a, "crash")  # restart 1: stop b, start a: fails, restart 2 > 1
            await trio.testing.wait_all_tasks_blocked()
        rows = await otp.which_children(sup)
        assert [(r.id, r.status) for r in rows] == [("a", "failed"), ("b", "running")]
