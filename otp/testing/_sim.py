"""Deterministic, seeded simulation of otp programs, with fault injection and exact replay.

:func:`simulate` runs ``main`` in one thread, in virtual time (``MockClock`` with autojump),
with Trio's scheduler made deterministic and seeded, and every random choice of otp and of
the fault injector drawn from the same seed. It records a trace (spawns, deliveries, drops,
delays, exits, restarts, injected faults, each with its virtual time) and hashes it: the same
seed gives the same trace hash, always, so a failing seed replays exactly.

What is deterministic: everything the program does through otp and Trio in virtual time.
What is not: real I/O (sockets, files, threads), wall-clock reads (``time.time``), and
``random`` used without a seed. Keep those out of simulated code.

The hash covers only text that is the same in every Python process: memory addresses in
reprs (``<Foo object at 0x7f...>``) are masked and sets (in names, child ids and exit
reasons) are written in sorted order, so a seed hashes the same in another process, on
another machine or under another ``PYTHONHASHSEED``. (A program whose own behaviour follows
set order or ``id()`` is another matter: keep those out of simulated code too.)
"""

from __future__ import annotations

import enum
import hashlib
import logging
import random
import re
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Final

import attrs
import trio
import trio.testing

from .._envelope import Envelope, Kind
from .._errors import CallError, OtpError
from .._messaging import new_envelope
from .._proc import _Process
from .._runtime import Runtime
from .._start import runtime
from .._values import DEAD, EXITING, RUNNING, Pid

logger = logging.getLogger("otp.testing")


#: What ``otp.system_time()`` reads at virtual time 0 of a simulation (2023-11-14 22:13:20 UTC).
SIMULATED_EPOCH: Final = 1_700_000_000.0


class FaultKind(enum.Enum):
    #: The process raises :class:`InjectedFault` in its next handler (a crash).
    CRASH = "crash"
    #: The process is killed at once (reason ``"killed"``).
    KILL = "kill"
    #: Messages to the process are delayed by up to ``max_delay`` for ``duration``.
    DELAY = "delay"
    #: Messages to the process are dropped for ``duration``.
    DROP = "drop"
    #: Messages between a group of processes and the rest are dropped (or held until the
    #: partition heals) for ``duration``.
    PARTITION = "partition"
    #: The process's next handler takes ``duration`` longer.
    SLOW = "slow"


class InjectedFault(Exception):
    """The exception an injected crash raises inside a handler."""


def _to_kind(value: Any) -> FaultKind:
    return value if isinstance(value, FaultKind) else FaultKind(value)


def _to_kinds(value: Iterable[Any]) -> tuple[FaultKind, ...]:
    return tuple(_to_kind(v) for v in value)


def _check_non_negative(_inst: Any, attribute: Any, value: Any) -> None:
    if value is not None and not value >= 0:
        raise ValueError(f"{attribute.name} must be >= 0, not {value!r}")


@attrs.frozen
class Fault:
    """One planned fault: ``kind`` at virtual time ``at`` on ``target``.

    ``target`` is a registered name, a pid, or None for a process chosen by the seed.
    ``duration`` is how long a delay, drop, partition or slow-down lasts; ``group`` names one
    side of a partition (chosen by the seed when empty); ``hold`` keeps partitioned messages
    and delivers them when the partition heals instead of dropping them.
    """

    at: float = attrs.field(validator=_check_non_negative)
    kind: FaultKind = attrs.field(converter=_to_kind)
    target: Any = None
    duration: float = attrs.field(default=0.1, validator=_check_non_negative)
    group: tuple[Any, ...] = ()
    hold: bool = False


ALL_KINDS: Final = tuple(FaultKind)


@attrs.frozen
class FaultPlan:
    """Faults for a simulation: random ones at ``rate`` per virtual second, and/or a schedule.

    Random faults pick their kind from ``kinds`` and their target among live processes,
    workers only unless ``supervisors`` is true, never those named in ``spare``; they start
    after ``start_after`` and stop at ``stop_after`` (virtual seconds) if given.
    """

    rate: float = attrs.field(default=0.0, validator=_check_non_negative)
    kinds: tuple[FaultKind, ...] = attrs.field(default=ALL_KINDS, converter=_to_kinds)
    schedule: tuple[Fault, ...] = attrs.field(default=(), converter=tuple)
    max_delay: float = attrs.field(default=0.05, validator=_check_non_negative)
    duration: float = attrs.field(default=0.2, validator=_check_non_negative)
    spare: tuple[Any, ...] = attrs.field(default=(), converter=tuple)
    supervisors: bool = False
    start_after: float = attrs.field(default=0.0, validator=_check_non_negative)
    stop_after: float | None = attrs.field(default=None, validator=_check_non_negative)


@attrs.frozen
class TraceEvent:
    """One recorded event. ``pid``/``other`` are pid numbers (``<0.N.0>``), or None."""

    time: float
    kind: str
    pid: int | None
    other: int | None
    detail: str

    def line(self) -> str:
        return f"{self.time:.9f} {self.kind} {self.pid} {self.other} {self.detail}"


@attrs.frozen
class SimResult:
    """The outcome of one simulated run."""

    seed: int
    trace: tuple[TraceEvent, ...]
    trace_hash: str
    virtual_time: float
    failure: BaseException | None
    result: Any = None

    @property
    def ok(self) -> bool:
        return self.failure is None

    def raise_failure(self) -> None:
        """Re-raise the failure, annotated with the seed that replays it."""
        if self.failure is not None:
            raise SimulationFailure(self.seed, self.failure) from self.failure


class SimulationFailure(OtpError):
    """A simulated run failed; ``seed`` replays it exactly."""

    def __init__(self, seed: int, failure: BaseException) -> None:
        super().__init__(
            f"simulation failed with seed {seed} (replay: simulate(main, seed={seed}) or "
            f"pytest --sim-seed {seed}): {type(failure).__name__}: {failure}"
        )
        self.seed = seed
        self.failure = failure


class Deadlock(OtpError):
    """The simulated program did not finish within ``max_virtual_time``."""


class InvariantViolation(OtpError):
    """A simulated run broke one of otp's guarantees."""


_ADDRESS = re.compile(r"0x[0-9a-fA-F]{6,}")


def _stable(text: str) -> str:
    """``text`` without memory addresses (default reprs), which differ from run to run."""
    return _ADDRESS.sub("0x?", text) if "0x" in text else text


def _repr(value: Any, depth: int = 0) -> str:
    """A repr that is the same in every Python process: sets in sorted order (their order
    follows ``PYTHONHASHSEED``), memory addresses masked. Used for names, child ids and exit
    reasons in the trace, not for every delivery."""
    kind = type(value)
    if depth < 8:
        if kind is set or kind is frozenset:
            items = ", ".join(sorted(_repr(v, depth + 1) for v in value))
            return f"{kind.__name__}({{{items}}})"
        if kind is tuple or kind is list:
            items = ", ".join(_repr(v, depth + 1) for v in value)
            if kind is list:
                return f"[{items}]"
            return f"({items},)" if len(value) == 1 else f"({items})"
        if kind is dict:
            return "{" + ", ".join(
                f"{_repr(k, depth + 1)}: {_repr(v, depth + 1)}" for k, v in value.items()
            ) + "}"
    return _stable(repr(value))


def _reason(reason: Any) -> str:
    if isinstance(reason, BaseException):
        args = reason.args
        text = str(args[0]) if len(args) == 1 and isinstance(args[0], str) else ", ".join(
            _repr(a) for a in args
        )
        return _stable(f"{type(reason).__name__}({text})")
    return _repr(reason)


def _msg_type(message: Any) -> str:
    return type(message).__name__


class _Simulation:
    """The runtime's tracer in a simulation: records the trace and injects faults."""

    def __init__(self, seed: int, plan: FaultPlan | None, keep_trace: bool) -> None:
        self.rng = random.Random(f"otp.testing.faults:{seed}")
        self.plan = plan
        self.keep = keep_trace
        self.events: list[TraceEvent] = []
        self.hash = hashlib.sha256()
        #: Trace lines not hashed yet: hashed 1,024 at a time (the hash of the concatenation
        #: is the hash of the lines one by one), and when the hash is read.
        self.lines: list[bytes] = []
        #: The last event time and its text: most events share the time of the one before.
        self.last_now = -1.0
        self.now_text = b""
        #: Message type names as bytes, by type.
        self.type_names: dict[type, bytes] = {}
        self.count = 0
        self.crash_next: set[_Process] = set()
        self.slow_next: dict[_Process, float] = {}
        #: ``bool(crash_next or slow_next)``, kept up to date by _faults_changed.
        self.handler_faults = False
        self.delay_until: dict[_Process, float] = {}
        self.drop_until: dict[_Process, float] = {}
        self.partitions: list[tuple[frozenset[_Process], float, bool]] = []
        self.held: list[tuple[_Process, Envelope]] = []
        #: Calls a fault took out of the normal path (delayed, held or dropped), by target:
        #: failed at once when the target exits, as a call to it would be.
        self.inflight: dict[_Process, dict[Envelope, None]] = {}
        self.nursery: trio.Nursery | None = None
        self.runtime: Runtime | None = None
        #: Per supervisor: its restarts within the current intensity window; a reset of its
        #: restart history (continue_without, restart_tree) empties the window.
        self.restarts: dict[int, list[float]] = {}
        #: The first broken intensity limit, raised as InvariantViolation after the run.
        self.violation: str | None = None
        self.active = True

    # -- trace ---------------------------------------------------------------------------------

    def record(
        self, kind: str, pid: int | None, other: int | None, detail: str, now: float | None = None
    ) -> None:
        if now is None:
            now = trio.current_time()
        # The hashed text is TraceEvent.line() plus a newline, built without the event object
        # unless the trace is kept.
        self._line(f"{now:.9f} {kind} {pid} {other} {detail}\n".encode())
        if self.keep:
            self.events.append(TraceEvent(now, kind, pid, other, detail))

    def _line(self, line: bytes) -> None:
        lines = self.lines
        lines.append(line)
        self.count += 1
        if len(lines) >= 1024:
            self.flush()

    def flush(self) -> None:
        """Hash the lines not hashed yet."""
        if self.lines:
            self.hash.update(b"".join(self.lines))
            self.lines.clear()

    def hexdigest(self) -> str:
        self.flush()
        return self.hash.hexdigest()

    def _send(self, now: float, sid: int | None, target: int, message: Any) -> None:
        """``record("send", sid, target, type name, now)``, as fast as it can be: this runs
        for every message of a simulation."""
        if now != self.last_now:
            self.last_now = now
            self.now_text = b"%.9f" % now
        kind = type(message)
        name = self.type_names.get(kind)
        if name is None:
            name = self.type_names[kind] = kind.__name__.encode()
        lines = self.lines
        lines.append(b"%s send %r %d %s\n" % (self.now_text, sid, target, name))
        self.count += 1
        if len(lines) >= 1024:
            self.flush()
        if self.keep:
            self.events.append(TraceEvent(now, "send", sid, target, kind.__name__))

    def spawned(self, pid: Pid) -> None:
        proc: _Process = pid._proc
        self.record("spawn", pid.id, None, f"{proc.cls.__qualname__} name={_repr(proc.name)}")

    def started_child(self, sup: Pid, child_id: Any, child: Pid) -> None:
        self.record("child", sup.id, child.id, _repr(child_id))

    def exited(self, pid: Pid, reason: Any) -> None:
        proc: _Process = pid._proc
        self.crash_next.discard(proc)
        self.slow_next.pop(proc, None)
        self._faults_changed()
        self.record("exit", proc.pid.id, None, _reason(reason))
        inflight = self.inflight.pop(proc, None)
        if inflight:
            # Calls whose request a fault delayed, held or dropped fail now, as those queued
            # in the mailbox did: the caller does not wait out its timeout.
            for env in inflight:
                if env.state == 0:  # type: ignore[attr-defined]
                    env._fail(CallError(proc.pid, reason))  # type: ignore[attr-defined]

    def _track(self, proc: _Process, env: Envelope) -> None:
        if env.kind is not Kind.CALL:
            return
        calls = self.inflight.get(proc)
        if calls is None:
            calls = self.inflight[proc] = {}
        elif len(calls) >= 64 and len(calls) & (len(calls) - 1) == 0:
            # Now and then (at each power of two) forget calls that were settled otherwise
            # (replied to, timed out): a long-lived target does not accumulate them.
            for settled in [e for e in calls if e.state != 0]:  # type: ignore[attr-defined]
                del calls[settled]
        calls[env] = None

    def restarting(self, sup: Pid, child_id: Any, reason: Any, intensity: int,
                   period: float) -> None:
        now = trio.current_time()
        window = self.restarts.setdefault(sup.id, [])
        window.append(now)
        # The supervisor counts a restart exactly `period` old; this check is a little more
        # lenient (strictly within `period`), so rounding never makes a false alarm.
        window[:] = [t for t in window if now - t < period]
        if len(window) > intensity and self.violation is None:
            self.violation = (
                f"supervisor <0.{sup.id}.0> restarted {len(window)} times within {period} s "
                f"(intensity {intensity})"
            )
        self.record("restart", sup.id, None, f"{_repr(child_id)} after {_reason(reason)}")

    def exhausted(self, sup: Pid, child_id: Any, reason: Any, policy: str) -> None:
        self.record("give-up", sup.id, None, f"{_repr(child_id)} {policy}")

    def restarts_reset(self, sup: Pid) -> None:
        """The supervisor cleared its restart history (continue_without, restart_tree): the
        intensity check starts a fresh window, as the supervisor does."""
        self.restarts.pop(sup.id, None)
        self.record("restarts-reset", sup.id, None, "")

    # -- delivery hooks ------------------------------------------------------------------------

    def offer(self, pid: Pid, env: Envelope) -> bool:
        proc: _Process = pid._proc
        sender = env.sender
        sid = None if sender is None else sender.id
        now = env.sent_at  # the envelope was made just now: no second clock read
        if self.active:
            if self.drop_until and self.drop_until.get(proc, -1.0) > now:
                self.record("drop", sid, proc.pid.id, _msg_type(env.message))
                self._track(proc, env)
                return True
            for group, until, hold in self.partitions:
                if until > now and sender is not None and (
                    (sender._proc in group) != (proc in group)
                ):
                    if hold:
                        self.record("hold", sid, proc.pid.id, _msg_type(env.message))
                        self.held.append((proc, env))
                    else:
                        self.record("drop", sid, proc.pid.id, _msg_type(env.message))
                    self._track(proc, env)
                    return True
            if self.delay_until and self.delay_until.get(proc, -1.0) > now and self.nursery:
                delay = self.rng.uniform(0, self.plan.max_delay if self.plan else 0.05)
                self.record("delay", sid, proc.pid.id, f"{_msg_type(env.message)} {delay:.6f}")
                self._track(proc, env)
                self.nursery.start_soon(self._deliver_later, proc, env, delay)
                return True
        self._send(now, sid, pid.id, env.message)
        return proc.offer(env, False)

    async def _deliver_later(self, proc: _Process, env: Envelope, delay: float) -> None:
        await trio.sleep(delay)
        self._deliver_now(proc, env)

    def _deliver_now(self, proc: _Process, env: Envelope) -> None:
        calls = self.inflight.get(proc)
        if calls is not None:
            calls.pop(env, None)
        if env.kind is Kind.CALL and env.state != 0:  # type: ignore[attr-defined]
            return  # the caller gave up meanwhile, or the call already failed
        if proc.status >= EXITING:
            # As call() does for a server that is dead or dying: fail at once with its reason.
            if env.kind is Kind.CALL:
                env._fail(CallError(proc.pid, proc.exit_reason))  # type: ignore[attr-defined]
            return
        self._send(trio.current_time(), None if env.sender is None else env.sender.id,
                   proc.pid.id, env.message)
        try:
            if not proc.offer(env, False):
                proc.add_blocked(env, None)
        except OtpError as exc:
            if env.kind is Kind.CALL:
                env._fail(exc)  # type: ignore[attr-defined]

    def _faults_changed(self) -> None:
        """Whether some process has a crash or slow-down waiting for its next handler (the
        process loop awaits :meth:`before_handle` only then)."""
        self.handler_faults = bool(self.crash_next or self.slow_next)

    async def before_handle(self, pid: Pid, env: Envelope) -> None:
        proc: _Process = pid._proc
        if proc in self.slow_next:
            delay = self.slow_next.pop(proc)
            self._faults_changed()
            self.record("slow", proc.pid.id, None, f"{delay:.6f}")
            await trio.sleep(delay)
        if proc in self.crash_next:
            self.crash_next.discard(proc)
            self._faults_changed()
            self.record("crash", proc.pid.id, None, _msg_type(env.message))
            raise InjectedFault(f"injected crash of {proc.pid!r}")
        await trio.lowlevel.checkpoint_if_cancelled()

    # -- the injector --------------------------------------------------------------------------

    def _candidates(self) -> list[_Process]:
        assert self.runtime is not None
        plan = self.plan
        spare = set(plan.spare) if plan else set()
        out = []
        for pid in self.runtime.procs.values():
            proc: _Process = pid._proc
            if proc.status != RUNNING:
                continue
            if plan is not None and not plan.supervisors and proc.cls._otp_supervisor:
                continue
            if proc.name is not None and proc.name in spare:
                continue
            if proc.pid in spare:
                continue
            out.append(proc)
        out.sort(key=lambda p: p.pid.id)
        return out

    def _resolve(self, target: Any) -> _Process | None:
        assert self.runtime is not None
        if target is None:
            candidates = self._candidates()
            return self.rng.choice(candidates) if candidates else None
        if isinstance(target, Pid):
            found: _Process = target._proc
            return found
        pid = self.runtime.names.get(target)
        return None if pid is None else pid._proc

    def apply(self, fault: Fault) -> None:
        """Inject ``fault`` now. Never raises: a fault that cannot be applied is recorded as
        ``fault-error`` and logged, and the simulation goes on."""
        try:
            self._apply(fault)
        except Exception as exc:
            logger.error("fault %r could not be applied", fault, exc_info=exc)
            self.record("fault-error", None, None, f"{fault.kind.value} {_reason(exc)}")

    def _apply(self, fault: Fault) -> None:
        now = trio.current_time()
        if fault.kind is FaultKind.PARTITION:
            self._partition(fault, now)
            return
        proc = self._resolve(fault.target)
        if proc is None or proc.status == DEAD:
            self.record("fault-missed", None, None, f"{fault.kind.value} {_repr(fault.target)}")
            return
        self.record("fault", proc.pid.id, None, f"{fault.kind.value} {fault.duration:.6f}")
        if fault.kind is FaultKind.CRASH:
            self.crash_next.add(proc)
            self._faults_changed()
            # A crash lands in the next handler: make sure there is one. The poke bypasses the
            # overflow policy (a full FAIL mailbox must not refuse it, DROP_OLDEST must not
            # evict a real message for it), as a monitor notice does.
            proc.force(new_envelope(_Poke(), Kind.INFO, proc.runtime))
        elif fault.kind is FaultKind.KILL:
            proc.kill("killed")
        elif fault.kind is FaultKind.DELAY:
            self.delay_until[proc] = now + fault.duration
        elif fault.kind is FaultKind.DROP:
            self.drop_until[proc] = now + fault.duration
        elif fault.kind is FaultKind.SLOW:
            self.slow_next[proc] = fault.duration
            self._faults_changed()

    def _partition(self, fault: Fault, now: float) -> None:
        candidates = self._candidates()
        if fault.group:
            members = [p for p in (self._resolve(t) for t in fault.group) if p is not None]
        else:
            k = len(candidates) // 2
            members = self.rng.sample(candidates, k) if k else []
        group = frozenset(members)
        self.record("partition", None, None,
                    f"{sorted(p.pid.id for p in group)} {fault.duration:.6f} hold={fault.hold}")
        self.partitions.append((group, now + fault.duration, fault.hold))
        if fault.hold and self.nursery is not None:
            self.nursery.start_soon(self._heal, now + fault.duration)

    async def _heal(self, at: float) -> None:
        await trio.sleep_until(at)
        now = trio.current_time()
        self.partitions = [p for p in self.partitions if p[1] > now]
        held, self.held = self.held, []
        for proc, env in held:
            self._deliver_now(proc, env)

    async def run_plan(self) -> None:
        plan = self.plan
        if plan is None:
            await trio.sleep_forever()
            return
        async with trio.open_nursery() as nursery:
            for fault in sorted(plan.schedule, key=lambda f: f.at):
                nursery.start_soon(self._scheduled, fault)
            if plan.rate > 0 and plan.kinds:
                nursery.start_soon(self._random, plan)

    async def _scheduled(self, fault: Fault) -> None:
        await trio.sleep_until(fault.at)
        self.apply(fault)

    async def _random(self, plan: FaultPlan) -> None:
        await trio.sleep_until(plan.start_after)
        while True:
            await trio.sleep(self.rng.expovariate(plan.rate))
            if plan.stop_after is not None and trio.current_time() >= plan.stop_after:
                return
            kind = self.rng.choice(plan.kinds)
            duration = self.rng.uniform(0, plan.duration)
            self.apply(Fault(trio.current_time(), kind, None, duration))


class _Poke:
    """A message the injector sends so that an injected crash has a handler to land in."""


async def _run(
    main: Callable[[], Awaitable[Any]],
    sim: _Simulation,
    seed: int,
    max_virtual_time: float,
    box: dict[str, Any],
) -> None:
    box["t0"] = trio.current_time()
    try:
        async with runtime(seed=seed) as rt:
            rt.tracer = sim
            sim.runtime = rt
            rt.system_clock = lambda: SIMULATED_EPOCH + trio.current_time()
            async with trio.open_nursery() as nursery:
                sim.nursery = nursery
                nursery.start_soon(sim.run_plan)
                with trio.move_on_after(max_virtual_time) as scope:
                    box["result"] = await main()
                if scope.cancelled_caught:
                    raise Deadlock(
                        f"the program did not finish within {max_virtual_time} virtual seconds "
                        "(deadlock or livelock)"
                    )
                sim.active = False
                nursery.cancel_scope.cancel()
            sim.record("shutdown", None, None, "")
    finally:
        box["t1"] = trio.current_time()
    left = [p for p in rt.procs.values() if p._proc.status != DEAD]
    if left:
        raise InvariantViolation(f"processes left running after shutdown: {left}")
    if sim.violation is not None:
        raise InvariantViolation(sim.violation)


class _SchedulerRandom(random.Random):
    """The generator Trio's deterministic scheduler shuffles each batch of runnable tasks
    with: the same uniform permutations as ``random.shuffle``, without its per-call cost for
    the batches of one or two tasks that make up most of a simulation."""

    def shuffle(self, x: Any) -> None:
        n = len(x)
        if n < 2:
            return
        if n == 2:
            if self.getrandbits(1):
                x.reverse()
            return
        super().shuffle(x)


def _virtual_clock() -> trio.testing.MockClock:
    """A ``MockClock`` with autojump whose reading, while its rate is 0 (always, unless the
    program changes it), is the virtual time itself rather than the real clock read and
    multiplied by 0: the same value, without the real clock's cost, for the half a million
    reads of a long simulation. (``MockClock`` is final; its reader is replaced on the
    instance, over Trio's private fields, as the scheduler switch above is.)"""
    clock = trio.testing.MockClock(autojump_threshold=0)
    general = clock.current_time

    def current_time() -> float:
        if clock._rate == 0.0:
            return clock._virtual_base
        return general()

    clock.current_time = current_time  # type: ignore[method-assign]
    return clock


#: While tasks are ready to run, Trio's loop still asks the OS for I/O events (a system call)
#: before each batch; a simulated program does no real I/O, so under :func:`simulate` only
#: one such poll in this many is made. An idle loop always polls (before the clock jumps),
#: so I/O from outside (a thread, a signal) is noticed before virtual time moves.
POLL_EVERY: Final = 64


def _lazy_poll(io_manager: type[Any]) -> Callable[[Any, float], Any]:
    """``io_manager.get_events`` polling once in :data:`POLL_EVERY` calls while tasks are
    ready (an empty answer otherwise: as a poll that found nothing)."""
    general = io_manager.get_events
    context = trio._core._run.GLOBAL_RUN_CONTEXT
    skipped = 0

    def get_events(self: Any, timeout: float) -> Any:
        nonlocal skipped
        if timeout == 0 and context.runner.runq and skipped < POLL_EVERY - 1:
            skipped += 1
            return []
        skipped = 0
        return general(self, timeout)

    return get_events


def simulate(
    main: Callable[[], Awaitable[Any]],
    *,
    seed: int,
    faults: FaultPlan | None = None,
    max_virtual_time: float = 3600.0,
    keep_trace: bool = True,
) -> SimResult:
    """Run ``main()`` deterministically under ``seed`` and return what happened.

    ``main`` runs inside a fresh :func:`otp.runtime` (seeded with ``seed``) under
    ``trio.testing.MockClock(autojump_threshold=0)`` with Trio's scheduler shuffled by a
    random generator seeded with ``seed``; ``faults`` injects seeded faults. The run fails
    (``SimResult.failure``) when ``main`` raises, when it does not finish within
    ``max_virtual_time`` virtual seconds, when a process is left running after the runtime
    shut down, or when a supervisor restarted more often than its intensity allows. Failures
    are returned, not raised: call :meth:`SimResult.raise_failure`.
    """
    trio_run = trio._core._run
    # Trio's private switch and scheduler generator: set for this run only, then put back as
    # they were, so the rest of the process (other tests) keeps Trio's usual scheduling.
    saved_flag = trio_run._ALLOW_DETERMINISTIC_SCHEDULING
    saved_random = trio_run._r
    io_manager: Any = trio_run.TheIOManager  # type: ignore[attr-defined]
    saved_poll = io_manager.get_events
    sim = _Simulation(seed, faults, keep_trace)
    clock = _virtual_clock()
    box: dict[str, Any] = {}
    failure: BaseException | None = None
    try:
        trio_run._ALLOW_DETERMINISTIC_SCHEDULING = True  # type: ignore[misc]
        trio_run._r = _SchedulerRandom(f"otp.testing.scheduler:{seed}")
        io_manager.get_events = _lazy_poll(io_manager)
        trio.run(_run, main, sim, seed, max_virtual_time, box, clock=clock)
    except BaseException as exc:  # the run's failure is data, returned to the caller
        if isinstance(exc, KeyboardInterrupt | SystemExit):
            raise
        failure = _unwrap(exc)
    finally:
        trio_run._ALLOW_DETERMINISTIC_SCHEDULING = saved_flag  # type: ignore[misc]
        trio_run._r = saved_random
        io_manager.get_events = saved_poll
    return SimResult(
        seed=seed,
        trace=tuple(sim.events),
        trace_hash=sim.hexdigest(),
        virtual_time=box.get("t1", box.get("t0", 0.0)) - box.get("t0", 0.0),
        failure=failure,
        result=box.get("result"),
    )


def _unwrap(exc: BaseException) -> BaseException:
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


def find_failure(
    main: Callable[[], Awaitable[Any]],
    seeds: Iterable[int],
    **kwargs: Any,
) -> SimResult | None:
    """Run ``main`` under each seed until one fails; return that result (or None)."""
    for seed in seeds:
        result = simulate(main, seed=seed, **kwargs)
        if not result.ok:
            return result
    return None


def assert_deterministic(
    main: Callable[[], Awaitable[Any]], *, seed: int, **kwargs: Any
) -> SimResult:
    """Run ``main`` twice under ``seed``; raise :class:`InvariantViolation` if the traces
    differ (as madsim does). Returns the first result."""
    first = simulate(main, seed=seed, **kwargs)
    second = simulate(main, seed=seed, **kwargs)
    if first.trace_hash != second.trace_hash:
        diverged = next(
            (
                (a, b)
                for a, b in zip(first.trace, second.trace, strict=False)
                if a != b
            ),
            None,
        )
        raise InvariantViolation(
            f"seed {seed} is not deterministic: traces differ (first divergence: {diverged})"
        )
    return first

