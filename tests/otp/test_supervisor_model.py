"""Model-based test of the supervisor: random flags, children and fault sequences are run
against the real ``otp.Supervisor`` and against a small pure-Python model of OTP's rules
(``otp/_supervisor.py``'s module docstring, and OTP's ``supervisor.erl``), compared after every
step.

Hypothesis draws the flags, the children and a list of operations; one ``trio.run`` under an
autojumping ``MockClock`` interprets them in order. Operations take no virtual time except
``Sleep``, so every restart happens at the virtual time of the operation that caused it, and the
model can use the same timestamps as the supervisor. After each operation we wait until every
task is blocked (``wait_all_tasks_blocked``: the supervisor has processed the exit and finished
its restarts) and compare:

* whether the supervisor is alive, and when it gave up, that it exited with ``"shutdown"``;
* ``which_children``: ids in order, running or not (pid), status, restart counts;
* pids: a child the model restarted has a pid never seen before, the others keep theirs;
* the event log every child writes (init begun, init done, terminate with its reason), which
  pins down start order, stop order and that no start overlaps another.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import trio
import trio.testing
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import otp

Event = tuple[Any, ...]


# --- the children ------------------------------------------------------------------------------


class Child(otp.GenServer):
    """Logs its init (begun and done, with checkpoints between so overlapping starts would
    show) and its terminate; a ``"crash"`` cast raises, a ``("stop", reason)`` cast stops."""

    async def init(self, label: str, log: list[Event]) -> None:
        self.label = label
        self.log = log
        log.append(("init", label))
        for _ in range(3):
            await trio.lowlevel.checkpoint()
        log.append(("up", label))

    async def handle_cast(self, msg: Any) -> Any:
        await trio.lowlevel.checkpoint()
        if msg == "crash":
            raise RuntimeError("crash requested")
        return otp.Stop(msg[1])

    async def terminate(self, reason: Any) -> None:
        await trio.lowlevel.checkpoint()
        self.log.append(("terminate", self.label, "crash" if isinstance(reason, Exception) else reason))


# --- operations --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Crash:
    """Child ``i`` raises in ``handle_cast``: terminate(exception), abnormal exit."""

    i: int


@dataclass(frozen=True)
class Stop:
    """Child ``i`` returns ``otp.Stop(reason)``: terminate(reason), exits with ``reason``."""

    i: int
    reason: Any


@dataclass(frozen=True)
class Signal:
    """``otp.exit(child i, reason)`` from outside: ``"kill"`` ends it as ``"killed"``,
    ``"normal"`` is ignored (it does not trap exits), anything else ends it with that reason;
    terminate does not run."""

    i: int
    reason: Any


@dataclass(frozen=True)
class Sleep:
    """Let ``dt`` virtual seconds pass."""

    dt: float


Op = Crash | Stop | Signal | Sleep

EXIT_REASONS = ["normal", "shutdown", ("shutdown", "x"), ("custom", "boom")]
SIGNALS = ["kill", "normal", "shutdown", ("shutdown", "x"), ("custom", "boom")]


# --- the model ---------------------------------------------------------------------------------


def is_normal(reason: Any) -> bool:
    """OTP: a transient child is not restarted after normal, shutdown or {shutdown, _}."""
    return reason in ("normal", "shutdown") or (
        isinstance(reason, tuple) and len(reason) == 2 and reason[0] == "shutdown"
    )


@dataclass
class ChildModel:
    id: str
    restart: str  # "permanent" | "transient" | "temporary"
    running: bool = False
    status: str = "stopped"  # "running" | "stopped" | "failed"
    generation: int = 0  # times started: a new generation must come with a new pid
    restarts: int = 0  # its own exits that asked for a restart (counted against intensity)


@dataclass
class SupervisorModel:
    strategy: str
    intensity: int
    period: float
    on_exhausted: str
    children: list[ChildModel]
    restart_times: list[float] = field(default_factory=list)
    alive: bool = True
    log: list[Event] = field(default_factory=list)

    def start(self, child: ChildModel) -> None:
        # Start: each child's init finishes before the next child starts.
        child.running, child.status = True, "running"
        child.generation += 1
        self.log += [("init", child.id), ("up", child.id)]

    def stop(self, child: ChildModel) -> None:
        # Stop: terminate("shutdown"), promptly obeyed by our children.
        if child.running:
            child.running, child.status = False, "stopped"
            self.log.append(("terminate", child.id, "shutdown"))

    def start_all(self) -> None:
        # Start: children start in list order.
        for child in self.children:
            self.start(child)

    def exited(self, child: ChildModel, reason: Any, now: float) -> None:
        """``child`` exited on its own with ``reason`` at virtual time ``now``."""
        child.running, child.status = False, "stopped"
        # Which exits restart: TEMPORARY never, and its spec is forgotten.
        if child.restart == "temporary":
            self.children.remove(child)
            return
        # TRANSIENT: every exit except normal, shutdown and (shutdown, detail).
        if child.restart == "transient" and is_normal(reason):
            return
        # PERMANENT (any exit) and TRANSIENT (abnormal exit): a restart, recorded with its
        # time. Intensity: more than `intensity` restarts within the last `period` seconds
        # (restarts exactly `period` seconds old have left the window) and the supervisor
        # gives up.
        child.restarts += 1
        self.restart_times = [t for t in self.restart_times if now - t < self.period]
        self.restart_times.append(now)
        if len(self.restart_times) > self.intensity:
            if self.on_exhausted == "escalate":
                # ESCALATE: stop every child in reverse order and exit with "shutdown".
                for other in reversed(self.children):
                    self.stop(other)
                self.alive = False
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
        for other in group:
            if other.restart != "temporary":
                self.start(other)

    def child(self, child_id: str) -> ChildModel | None:
        for c in self.children:
            if c.id == child_id:
                return c
        return None


# --- driving the real supervisor ---------------------------------------------------------------


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


async def settle() -> None:
    """Wait until the supervisor has processed every exit and finished every restart.

    Nothing but ``Sleep`` waits on the clock, so once every task is blocked the work caused by
    the last operation is done, and no virtual time has passed.
    """
    await trio.testing.wait_all_tasks_blocked()


class Harness:
    def __init__(self, model: SupervisorModel, sup: otp.Pid, log: list[Event]) -> None:
        self.model = model
        self.sup = sup
        self.log = log
        self.size = len(model.children)
        self.pids: dict[str, otp.Pid] = {}  # the last pid seen for each running child
        self.generations: dict[str, int] = {}  # the model's generation when it was seen
        self.seen: set[otp.Pid] = set()  # every child pid ever seen

    async def check(self, step: str) -> None:
        model = self.model
        assert self.log == model.log, f"{step}: event log differs from the model"
        assert self.sup.is_alive() == model.alive, f"{step}: supervisor alive?"
        if not model.alive:
            # Escalate: the supervisor exits with "shutdown", no child of it is left.
            assert self.sup._proc.exit_reason == "shutdown", step
            assert not any(pid.is_alive() for pid in self.pids.values()), step
            return
        rows = await otp.which_children(self.sup)
        assert [r.id for r in rows] == [c.id for c in model.children], f"{step}: child ids"
        for row, c in zip(rows, model.children, strict=True):
            got = (row.pid is not None, row.status, row.restarts, row.restart.value)
            want = (c.running, c.status, c.restarts, c.restart)
            assert got == want, f"{step}: child {c.id} (running, status, restarts, type)"
            if row.pid is None:
                continue
            assert row.pid.is_alive(), f"{step}: child {c.id} has a dead pid"
            if self.generations.get(c.id) == c.generation:
                assert row.pid == self.pids[c.id], f"{step}: {c.id} should keep its pid"
            else:
                assert row.pid not in self.seen, f"{step}: restarted {c.id} needs a new pid"
            self.pids[c.id] = row.pid
            self.generations[c.id] = c.generation
            self.seen.add(row.pid)
        counts = await otp.count_children(self.sup)
        assert (counts.specs, counts.active) == (
            len(model.children),
            sum(c.running for c in model.children),
        ), f"{step}: count_children"

    async def apply(self, op: Op) -> None:
        model = self.model
        now = trio.current_time()
        if isinstance(op, Sleep):
            await trio.sleep(op.dt)
            await settle()
            return
        c = model.child(f"c{op.i % self.size}")  # children are c0 .. c{size-1}
        if c is None or not c.running:
            return  # the target is not running: nothing to do
        pid = self.pids[c.id]
        if isinstance(op, Crash):
            await otp.cast(pid, "crash")
            model.log.append(("terminate", c.id, "crash"))
            model.exited(c, RuntimeError("crash requested"), now)
        elif isinstance(op, Stop):
            await otp.cast(pid, ("stop", op.reason))
            model.log.append(("terminate", c.id, op.reason))
            model.exited(c, op.reason, now)
        else:
            otp.exit(pid, op.reason)
            if op.reason != "normal":
                model.exited(c, "killed" if op.reason == "kill" else op.reason, now)
        await settle()
        assert trio.current_time() == now, "an exit or restart took virtual time"


async def run_model(
    strategy: str, intensity: int, period: float, on_exhausted: str,
    restarts: list[str], ops: list[Op],
) -> None:
    log: list[Event] = []
    model = SupervisorModel(
        strategy,
        intensity,
        period,
        on_exhausted,
        [ChildModel(f"c{i}", r) for i, r in enumerate(restarts)],
    )
    specs = [
        otp.ChildSpec(c.id, Child, kwargs={"label": c.id, "log": log}, restart=c.restart)
        for c in model.children
    ]
    async with otp.runtime():
        sup = await otp.start(
            otp.Supervisor,
            children=specs,
            strategy=strategy,
            intensity=intensity,
            period=period,
            on_exhausted=on_exhausted,
        )
        model.start_all()
        harness = Harness(model, sup, log)
        await harness.check("start")
        for n, op in enumerate(ops):
            await harness.apply(op)
            await harness.check(f"step {n}: {op}")
            if not model.alive:
                break
        applied = sum(c.generation for c in model.children) - len(model.children)
        event("gave up" if not model.alive else "still running")
        event(f"restarted children: {min(applied, 10)}{'+' if applied >= 10 else ''}")


# --- the test ----------------------------------------------------------------------------------

MAX_CHILDREN = 6

ops_strategy = st.lists(
    st.one_of(
        st.builds(Crash, st.integers(0, MAX_CHILDREN - 1)),
        st.builds(Stop, st.integers(0, MAX_CHILDREN - 1), st.sampled_from(EXIT_REASONS)),
        st.builds(Signal, st.integers(0, MAX_CHILDREN - 1), st.sampled_from(SIGNALS)),
        # Half seconds, so restarts exactly `period` seconds apart happen too.
        st.builds(Sleep, st.integers(1, 24).map(lambda n: n / 2)),
    ),
    min_size=1,
    max_size=40,
)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    strategy=st.sampled_from(["one_for_one", "one_for_all", "rest_for_one"]),
    intensity=st.integers(0, 4),
    period=st.integers(1, 10),
    on_exhausted=st.sampled_from(["escalate", "continue_without"]),
    restarts=st.lists(
        st.sampled_from(["permanent", "transient", "temporary"]), min_size=2, max_size=6
    ),
    ops=ops_strategy,
)
def test_supervisor_matches_model(
    strategy: str, intensity: int, period: int, on_exhausted: str,
    restarts: list[str], ops: list[Op],
) -> None:
    with quiet_otp_logger():
        trio.run(
            run_model, strategy, intensity, float(period), on_exhausted, restarts, ops,
            clock=trio.testing.MockClock(autojump_threshold=0),
        )
