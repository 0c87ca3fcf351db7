"""Supervisors: processes that start children, watch them and restart them by rule.

The rules, so a reader can predict every decision:

* **Start.** Children start in list order; each child's ``init`` finishes before the next
  child starts. If one fails, the ones already started are stopped in reverse order and the
  supervisor's own start fails with :class:`otp.StartError` naming the child.
* **Stop.** Children stop in reverse start order. Each gets ``terminate("shutdown")`` and
  ``shutdown`` seconds to exit (default 5 s for a worker, ``INFINITY`` for a supervisor) before
  it is killed; ``BRUTAL_KILL`` kills it at once.
* **Which exits restart.** ``PERMANENT``: every exit. ``TRANSIENT``: every exit except
  ``"normal"``, ``"shutdown"`` and ``("shutdown", detail)``. ``TEMPORARY``: never; its spec is
  forgotten when it exits, and also when a sibling's restart stops it.
* **What restarts.** ``ONE_FOR_ONE``: the child that exited. ``ONE_FOR_ALL``: every child: the
  others are stopped in reverse order, then all start again in order. ``REST_FOR_ONE``: the
  child and every child started after it, likewise.
* **Intensity.** Each restart is recorded with its time. When more than ``intensity``
  restarts fall within the last ``period`` seconds, ends included (OTP's default: 1 in 5 s;
  a restart exactly ``period`` seconds old still counts, as in ``supervisor.erl``), the
  supervisor
  gives up, as ``on_exhausted`` says:

  - ``ESCALATE`` (default): stop every child in reverse order and exit with ``"shutdown"``;
    the parent supervisor decides what that means for it.
  - ``CONTINUE_WITHOUT``: leave the failing child stopped (status ``"failed"``), keep the rest
    running, log it and publish a :class:`SupervisorReport` on the bus topic
    ``"otp.supervisor"``; the restart history starts afresh.
  - ``RESTART_TREE``: stop every child and start them all again once, counting one restart of
    this supervisor against its parent's intensity. A second exhaustion within ``period`` of
    that tree restart escalates.
* **Backoff.** Before a restart the supervisor may wait (:class:`Backoff`); it keeps answering
  calls while it waits. The delay grows with the number of restarts of that child within
  ``period``.
* **A restart whose init fails** counts as another exit of that child, with the exception as
  reason, and goes through the same rules; intensity bounds the retries.
* **Significant children** (transient or temporary only) shut the supervisor down when they
  exit on their own and are not restarted: with ``auto_shutdown=ANY_SIGNIFICANT`` when any
  does, with ``ALL_SIGNIFICANT`` when all have (one waiting out its restart backoff has not:
  it is coming back). The supervisor then exits with ``"shutdown"``.
* **Requests.** A bad request never crashes a supervisor: an unknown child, a duplicate id or
  a child whose ``init`` fails in ``start_child`` or ``restart_child`` (``StartError``; the
  spec stays, the child stopped) is an error raised in the caller, and a call the
  supervisor does not know is answered with a refusal.
"""

from __future__ import annotations

import enum
import math
from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any, Final

import attrs
import trio

from . import _process
from ._errors import OtpError, StartError, SupervisorError
from ._mailbox import Mailbox
from ._process import (
    INFINITY,
    GenServer,
    Pid,
    Stop,
    _ChildExited,
    _current_process,
    _Process,
    _spawn,
    logger,
)

BRUTAL_KILL: Final = "brutal_kill"
"""Shutdown value: kill the child at once, without ``terminate``."""


def _enum_converter(enum_cls: type[enum.Enum], what: str) -> Any:
    def convert(value: Any) -> Any:
        if isinstance(value, enum_cls):
            return value
        try:
            return enum_cls(value)
        except ValueError:
            allowed = ", ".join(repr(m.value) for m in enum_cls)
            raise ValueError(f"{what} must be one of {allowed}, not {value!r}") from None

    return convert


class Strategy(enum.Enum):
    ONE_FOR_ONE = "one_for_one"
    ONE_FOR_ALL = "one_for_all"
    REST_FOR_ONE = "rest_for_one"


class Restart(enum.Enum):
    PERMANENT = "permanent"
    TRANSIENT = "transient"
    TEMPORARY = "temporary"


class ChildType(enum.Enum):
    WORKER = "worker"
    SUPERVISOR = "supervisor"


class OnExhausted(enum.Enum):
    ESCALATE = "escalate"
    CONTINUE_WITHOUT = "continue_without"
    RESTART_TREE = "restart_tree"


class AutoShutdown(enum.Enum):
    NEVER = "never"
    ANY_SIGNIFICANT = "any_significant"
    ALL_SIGNIFICANT = "all_significant"


class BackoffKind(enum.Enum):
    NONE = "none"
    FIXED = "fixed"
    EXPONENTIAL = "exponential"
    PROGRESSIVE = "progressive"


_strategy = _enum_converter(Strategy, "strategy")
_restart = _enum_converter(Restart, "restart")
_child_type = _enum_converter(ChildType, "type")
_on_exhausted = _enum_converter(OnExhausted, "on_exhausted")
_auto_shutdown = _enum_converter(AutoShutdown, "auto_shutdown")
_backoff_kind = _enum_converter(BackoffKind, "backoff kind")


def _to_strategy(value: Any) -> Strategy:
    return _strategy(value)  # type: ignore[no-any-return]


def _to_restart(value: Any) -> Restart:
    return _restart(value)  # type: ignore[no-any-return]


def _to_child_type(value: Any) -> ChildType | None:
    return None if value is None else _child_type(value)


def _to_on_exhausted(value: Any) -> OnExhausted:
    return _on_exhausted(value)  # type: ignore[no-any-return]


def _to_auto_shutdown(value: Any) -> AutoShutdown:
    return _auto_shutdown(value)  # type: ignore[no-any-return]


def _to_backoff_kind(value: Any) -> BackoffKind:
    return _backoff_kind(value)  # type: ignore[no-any-return]


PERMANENT, TRANSIENT, TEMPORARY = Restart.PERMANENT, Restart.TRANSIENT, Restart.TEMPORARY
WORKER, SUPERVISOR = ChildType.WORKER, ChildType.SUPERVISOR
ONE_FOR_ONE, ONE_FOR_ALL, REST_FOR_ONE = (
    Strategy.ONE_FOR_ONE,
    Strategy.ONE_FOR_ALL,
    Strategy.REST_FOR_ONE,
)


def _non_negative(what: str, finite: bool = True) -> Any:
    def check(_inst: Any, _attr: Any, value: Any) -> None:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise TypeError(f"{what} must be a number, not {type(value).__name__}")
        if not value >= 0:
            raise ValueError(f"{what} must be >= 0, not {value}")
        if finite and value == math.inf:
            raise ValueError(f"{what} must be finite, not {value}")

    return check


@attrs.frozen
class Backoff:
    """Delay before restarting a child, by the number ``n`` of its restarts within ``period``.

    * ``NONE``: restart at once (default).
    * ``FIXED``: ``initial`` every time.
    * ``EXPONENTIAL``: ``initial * factor ** (n - 1)``, at most ``max``.
    * ``PROGRESSIVE``: a linear ramp, ``initial * (1 + (n - 1) * (factor - 1))``, at most
      ``max`` (1 s, x1.5 gives 1, 1.5, 2, 2.5 ... s).

    ``jitter`` (0 to 1) spreads each delay uniformly over ``delay * (1 ± jitter)``, drawn from
    the runtime's seeded random generator.

    ``initial``, ``factor`` and ``jitter`` must be finite numbers; ``max`` may be
    ``INFINITY`` (the default: no cap). A delay that would grow past ``max`` (or past what a
    float can hold) is ``max``: growth stops there, it never overflows or turns into NaN.
    """

    kind: BackoffKind = attrs.field(
        default=BackoffKind.NONE, converter=_to_backoff_kind
    )
    initial: float = attrs.field(default=0.0, validator=_non_negative("backoff initial"))
    max: float = attrs.field(
        default=INFINITY, validator=_non_negative("backoff max", finite=False)
    )
    factor: float = attrs.field(default=2.0, validator=_non_negative("backoff factor"))
    jitter: float = attrs.field(default=0.0, validator=_non_negative("backoff jitter"))

    def __attrs_post_init__(self) -> None:
        if self.jitter > 1:
            raise ValueError(f"backoff jitter must be between 0 and 1, not {self.jitter}")
        if self.kind in (BackoffKind.EXPONENTIAL, BackoffKind.PROGRESSIVE) and self.factor < 1:
            raise ValueError(f"backoff factor must be >= 1, not {self.factor}")
        if self.kind is not BackoffKind.NONE and self.max < self.initial:
            raise ValueError(f"backoff max ({self.max}) is below initial ({self.initial})")

    def delay(self, n: int, rng: Any = None) -> float:
        """Seconds to wait before the ``n``-th restart (``n >= 1``): never negative, never NaN,
        at most ``max`` before jitter."""
        kind = self.kind
        if kind is BackoffKind.NONE:
            return 0.0
        initial = float(self.initial)
        steps = max(n - 1, 0)
        if kind is BackoffKind.FIXED or initial == 0.0 or steps == 0:
            d = initial
        else:
            try:
                if kind is BackoffKind.EXPONENTIAL:
                    d = initial * float(self.factor) ** steps
                else:
                    d = initial * (1.0 + steps * (float(self.factor) - 1.0))
            except OverflowError:
                d = math.inf
        # initial and factor are finite and >= 0, so d is a number in [0, inf]: the cap holds.
        d = min(d, self.max)
        if self.jitter and rng is not None and 0.0 < d < math.inf:
            d *= 1 + self.jitter * (2 * rng.random() - 1)
        return d


NO_BACKOFF: Final = Backoff()


def _to_shutdown(value: Any) -> float | str | None:
    if value is None or value == BRUTAL_KILL:
        return value  # type: ignore[no-any-return]
    if value == "infinity":
        return INFINITY
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(
            f"shutdown must be seconds (a number), otp.BRUTAL_KILL or otp.INFINITY, not {value!r}"
        )
    if not value > 0:
        raise ValueError(
            f"shutdown must be a positive number of seconds, otp.BRUTAL_KILL or otp.INFINITY, "
            f"not {value!r}"
        )
    return float(value)


def _check_start(_inst: Any, _attr: Any, value: Any) -> None:
    if not (isinstance(value, type) and issubclass(value, GenServer)):
        raise TypeError(f"child start must be a GenServer subclass, not {value!r}")


def _check_id(_inst: Any, _attr: Any, value: Any) -> None:
    try:
        hash(value)
    except TypeError:
        raise TypeError(f"child id must be hashable, not {value!r}") from None


def _to_tuple(value: Any) -> tuple[Any, ...]:
    if isinstance(value, str | bytes) or not isinstance(value, Sequence):
        raise TypeError(f"child args must be a list or tuple, not {value!r}")
    return tuple(value)


def _to_kwargs(value: Any) -> dict[str, Any]:
    if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
        raise TypeError(f"child kwargs must be a mapping of str keys, not {value!r}")
    return dict(value)


def _check_mailbox(_inst: Any, _attr: Any, value: Any) -> None:
    if value is not None and not isinstance(value, Mailbox):
        raise TypeError(f"child mailbox must be an otp.Mailbox, not {value!r}")


@attrs.frozen
class ChildSpec:
    """How to start, restart and stop one child. Checked when it is built.

    ``shutdown`` defaults to 5 s for a worker and ``INFINITY`` for a supervisor; ``type``
    defaults to ``SUPERVISOR`` when ``start`` is a supervisor class. ``name``: the child
    registers under it on every (re)start. ``significant``: see the module docs.
    """

    id: Any = attrs.field(validator=_check_id)
    start: type[GenServer] = attrs.field(validator=_check_start)
    args: tuple[Any, ...] = attrs.field(default=(), converter=_to_tuple)
    kwargs: dict[str, Any] = attrs.field(factory=dict, converter=_to_kwargs)
    restart: Restart = attrs.field(default=PERMANENT, converter=_to_restart)
    shutdown: float | str = attrs.field(default=None, converter=_to_shutdown)
    type: ChildType = attrs.field(default=None, converter=_to_child_type)
    name: Any = None
    significant: bool = attrs.field(default=False, validator=attrs.validators.instance_of(bool))
    mailbox: Mailbox | None = attrs.field(default=None, validator=_check_mailbox)

    def __attrs_post_init__(self) -> None:
        is_sup = self.start._otp_supervisor
        if self.type is None:
            object.__setattr__(self, "type", SUPERVISOR if is_sup else WORKER)
        if self.shutdown is None:
            object.__setattr__(self, "shutdown", INFINITY if self.type is SUPERVISOR else 5.0)
        if self.significant and self.restart is PERMANENT:
            raise ValueError(
                f"child {self.id!r}: a significant child must be transient or temporary"
            )
        if self.name is not None and not isinstance(self.name, str) and not hasattr(
            self.name, "_otp_register"
        ):
            raise TypeError(f"child {self.id!r}: name must be a str or otp.via(...)")


def _check_intensity(_inst: Any, _attr: Any, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"intensity must be an int, not {value!r}")
    if value < 0:
        raise ValueError(f"intensity must be >= 0, not {value}")


def _check_period(_inst: Any, _attr: Any, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"period must be a number of seconds, not {value!r}")
    if not value > 0:
        raise ValueError(f"period must be > 0 seconds, not {value}")


def _check_backoff(_inst: Any, _attr: Any, value: Any) -> None:
    if not isinstance(value, Backoff):
        raise TypeError(f"backoff must be an otp.Backoff, not {value!r}")


@attrs.frozen
class SupervisorFlags:
    """A supervisor's policy. Checked when it is built."""

    strategy: Strategy = attrs.field(default=ONE_FOR_ONE, converter=_to_strategy)
    intensity: int = attrs.field(default=1, validator=_check_intensity)
    period: float = attrs.field(default=5.0, validator=_check_period)
    backoff: Backoff = attrs.field(default=NO_BACKOFF, validator=_check_backoff)
    on_exhausted: OnExhausted = attrs.field(
        default=OnExhausted.ESCALATE, converter=_to_on_exhausted
    )
    auto_shutdown: AutoShutdown = attrs.field(
        default=AutoShutdown.NEVER, converter=_to_auto_shutdown
    )


def check_children(children: Any, flags: SupervisorFlags) -> list[ChildSpec]:
    """Check a list of child specs as a whole; raise one ValueError listing every problem."""
    if isinstance(children, str | bytes) or not isinstance(children, Sequence):
        raise TypeError(f"children must be a list of otp.ChildSpec, not {children!r}")
    problems: list[str] = []
    seen: set[Any] = set()
    for i, spec in enumerate(children):
        if not isinstance(spec, ChildSpec):
            problems.append(f"children[{i}] is not an otp.ChildSpec: {spec!r}")
            continue
        if spec.id in seen:
            problems.append(f"children[{i}]: duplicate child id {spec.id!r}")
        seen.add(spec.id)
        if spec.significant and flags.auto_shutdown is AutoShutdown.NEVER:
            problems.append(
                f"children[{i}] ({spec.id!r}) is significant but auto_shutdown is 'never'"
            )
    if problems:
        raise ValueError("invalid children: " + "; ".join(problems))
    return list(children)


def is_normal_exit(reason: Any) -> bool:
    """True for ``"normal"``, ``"shutdown"`` and ``("shutdown", detail)``."""
    if reason == "normal" or reason == "shutdown":
        return True
    return isinstance(reason, tuple) and len(reason) == 2 and reason[0] == "shutdown"


@attrs.frozen
class ChildInfo:
    """One row of :func:`which_children`."""

    id: Any
    pid: Pid | None
    type: ChildType
    restart: Restart
    status: str
    restarts: int


@attrs.frozen
class ChildCounts:
    """:func:`count_children`: specs, running children, supervisors and workers."""

    specs: int
    active: int
    supervisors: int
    workers: int


@attrs.frozen
class SupervisorReport:
    """Published on the bus topic ``"otp.supervisor"`` whenever a supervisor acts."""

    supervisor: Pid
    child_id: Any
    event: str
    reason: Any


# Calls a supervisor answers


@attrs.frozen
class _StartChild:
    spec: ChildSpec
    extra: tuple[Any, ...] = ()


@attrs.frozen
class _TerminateChild:
    key: Any


@attrs.frozen
class _RestartChild:
    key: Any


@attrs.frozen
class _DeleteChild:
    key: Any


class _WhichChildren:
    pass


class _CountChildren:
    pass


@attrs.frozen
class _Refused:
    error: BaseException


# System items


@attrs.define(slots=True, eq=False)
class _RestartDue:
    token: int


@attrs.define(slots=True, eq=False)
class _CountRestart:
    proc: _Process


class _Child:
    __slots__ = ("args", "attempts", "proc", "restarts", "spec", "status")

    def __init__(self, spec: ChildSpec, args: tuple[Any, ...]) -> None:
        self.spec = spec
        self.args = args
        self.proc: _Process | None = None
        self.status = "stopped"
        self.restarts = 0
        self.attempts: deque[float] = deque()

    @property
    def pid(self) -> Pid | None:
        return None if self.proc is None else self.proc.pid


_STOP_SHUTDOWN: Final = Stop("shutdown")


class Supervisor(GenServer):
    """A supervisor process: ``await otp.start(otp.Supervisor, children=[...], ...)``.

    Keyword arguments: ``children`` (list of :class:`ChildSpec`), ``strategy``, ``intensity``
    (default 1), ``period`` (default 5.0 s), ``backoff``, ``on_exhausted``,
    ``auto_shutdown``. Subclasses may override ``init`` and call ``super().init(...)``.
    """

    _otp_supervisor = True

    async def init(
        self,
        children: Sequence[ChildSpec] = (),
        *,
        strategy: Strategy | str = ONE_FOR_ONE,
        intensity: int = 1,
        period: float = 5.0,
        backoff: Backoff = NO_BACKOFF,
        on_exhausted: OnExhausted | str = OnExhausted.ESCALATE,
        auto_shutdown: AutoShutdown | str = AutoShutdown.NEVER,
    ) -> None:
        self.flags = SupervisorFlags(
            strategy=strategy,
            intensity=intensity,
            period=period,
            backoff=backoff,
            on_exhausted=on_exhausted,
            auto_shutdown=auto_shutdown,
        )
        specs = check_children(children, self.flags)
        self._proc = _current_process()
        # an ordered set: start order, O(1) membership and removal (DynamicSupervisor)
        self._children: dict[_Child, None] = {}
        self._by_proc: dict[_Process, _Child] = {}
        self._restarts: deque[float] = deque()
        self._token = 0
        self._pending: list[_Child] = []
        self._tree_restarted_at: float | None = None
        self._stopping = False
        for spec in specs:
            child = _Child(spec, spec.args)
            self._children[child] = None
            try:
                await self._start(child)
            except Exception as exc:
                await self._stop_all()
                raise StartError(spec.id, exc) from exc

    # -- starting and stopping ---------------------------------------------------------------

    async def _start(self, child: _Child) -> Pid:
        spec = child.spec
        pid = await _spawn(
            spec.start,
            child.args,
            spec.kwargs,
            name=spec.name,
            mailbox=spec.mailbox,
            nursery=self._proc.nursery,
            parent=self._proc,
            sup_child=child,
        )
        proc = pid._proc
        child.proc = proc
        child.status = "running"
        self._by_proc[proc] = child
        tracer = self._proc.runtime.tracer
        if tracer is not None:
            tracer.started_child(self._proc, spec.id, proc)
        return pid

    async def _stop(self, child: _Child) -> None:
        proc = child.proc
        if proc is None:
            await trio.lowlevel.checkpoint()
            return
        self._by_proc.pop(proc, None)
        child.proc = None
        child.status = "stopped"
        shutdown = child.spec.shutdown
        timeout = 0.0 if shutdown == BRUTAL_KILL else float(shutdown)
        await _process._shutdown_process(proc, timeout)

    async def _stop_all(self) -> None:
        self._stopping = True
        self._pending = []
        for child in reversed(self._children):
            await self._stop(child)

    async def terminate(self, reason: Any) -> None:
        await self._stop_all()

    # -- exits and restarts --------------------------------------------------------------------

    async def _otp_system(self, item: Any) -> Any:
        kind = type(item)
        if kind is _ChildExited:
            child = self._by_proc.pop(item.proc, None)
            if child is None or self._stopping:
                await trio.lowlevel.checkpoint()
                return None
            child.proc = None
            child.status = "stopped"
            return await self._child_exited(child, item.reason)
        if kind is _RestartDue:
            if item.token != self._token or not self._pending:
                await trio.lowlevel.checkpoint()
                return None
            group, self._pending = self._pending, []
            return await self._start_group(group)
        if kind is _CountRestart:
            child = self._by_proc.get(item.proc)
            if child is None:
                await trio.lowlevel.checkpoint()
                return None
            child.restarts += 1
            if not self._add_restart():
                return await self._exhausted(child, "restart_tree")
            await trio.lowlevel.checkpoint()
            return None
        return await super()._otp_system(item)

    async def _child_exited(self, child: _Child, reason: Any) -> Any:
        spec = child.spec
        if spec.restart is TEMPORARY or (spec.restart is TRANSIENT and is_normal_exit(reason)):
            self._not_restarted(child)
            self._report(spec.id, "exited", reason)
            return await self._auto_shutdown(child)
        return await self._restart(child, reason)

    def _not_restarted(self, child: _Child) -> None:
        """``child`` exited and will not be restarted (it ended as its restart type allows,
        or ``continue_without`` gave up on it): a temporary child's spec is forgotten, any
        other stays for :func:`restart_child`."""
        if child.spec.restart is TEMPORARY:
            self._forget(child)

    async def _auto_shutdown(self, child: _Child) -> Any:
        await trio.lowlevel.checkpoint()
        if not child.spec.significant:
            return None
        mode = self.flags.auto_shutdown
        if mode is AutoShutdown.ANY_SIGNIFICANT:
            return _STOP_SHUTDOWN
        if mode is AutoShutdown.ALL_SIGNIFICANT:
            # A significant child waiting out its restart backoff is still there.
            pending = self._pending
            if not any(
                c.spec.significant and (c.proc is not None or c in pending)
                for c in self._children
            ):
                return _STOP_SHUTDOWN
        return None

    def _forget(self, child: _Child) -> None:
        self._children.pop(child, None)
        if child in self._pending:
            self._pending.remove(child)

    def _add_restart(self) -> bool:
        """Record a restart now; False when that exceeds the intensity."""
        now = trio.current_time()
        period = self.flags.period
        restarts = self._restarts
        restarts.append(now)
        # As supervisor.erl: a restart exactly `period` seconds old still counts.
        while restarts and now - restarts[0] > period:
            restarts.popleft()
        return len(restarts) <= self.flags.intensity

    def _report(self, child_id: Any, event: str, reason: Any) -> None:
        from . import bus

        bus.publish_nowait(
            "otp.supervisor", SupervisorReport(self._proc.pid, child_id, event, reason)
        )

    async def _restart(self, child: _Child, reason: Any) -> Any:
        child.restarts += 1
        if not self._add_restart():
            return await self._exhausted(child, reason)
        tracer = self._proc.runtime.tracer
        if tracer is not None:
            tracer.restarting(self._proc, child.spec.id, reason, self.flags)
        logger.info(
            "supervisor %r restarting child %r after exit: %r", self._proc.pid, child.spec.id,
            reason,
        )
        self._report(child.spec.id, "restarting", reason)
        strategy = self.flags.strategy
        if strategy is ONE_FOR_ONE:
            group = [child]
        else:
            children = list(self._children)
            group = children if strategy is ONE_FOR_ALL else children[children.index(child):]
        for other in reversed(group):
            if other is not child and other.proc is not None:
                await self._stop(other)
        for other in list(group):
            if other is not child and other.spec.restart is TEMPORARY:
                self._forget(other)
                group.remove(other)
        # How many times this child restarted within the period sets the backoff delay.
        now = trio.current_time()
        child.attempts.append(now)
        while child.attempts and now - child.attempts[0] > self.flags.period:
            child.attempts.popleft()
        delay = self.flags.backoff.delay(len(child.attempts), self._proc.runtime.random)
        if delay <= 0:
            return await self._start_group(group)
        for c in group:
            c.status = "restarting"
        self._token += 1
        self._pending = [c for c in self._pending if c not in group] + group
        self._schedule(delay, self._token)
        return None

    def _schedule(self, delay: float, token: int) -> None:
        proc = self._proc

        async def due() -> None:
            await trio.sleep(delay)
            proc.system(_RestartDue(token))

        assert proc.nursery is not None
        proc.nursery.start_soon(due)

    async def _start_group(self, group: list[_Child]) -> Any:
        for c in group:
            if c.proc is not None or c not in self._children:
                continue
            try:
                await self._start(c)
            except Exception as exc:
                c.status = "stopped"
                logger.error("supervisor %r: restart of %r failed", self._proc.pid, c.spec.id,
                             exc_info=exc)
                outcome = await self._restart(c, exc)
                if outcome is None and c.status == "failed":
                    continue  # continue_without gave up on c: the rest of the group still starts
                return outcome  # a new restart took over the group, or the supervisor stops
        return None

    async def _exhausted(self, child: _Child, reason: Any) -> Any:
        mode = self.flags.on_exhausted
        tracer = self._proc.runtime.tracer
        if tracer is not None:
            tracer.exhausted(self._proc, child.spec.id, reason, self.flags)
        sup = self._proc.pid
        if mode is OnExhausted.CONTINUE_WITHOUT:
            child.status = "failed"
            if child.proc is None:
                self._not_restarted(child)
            self._restarts.clear()
            if tracer is not None:
                tracer.restarts_reset(self._proc)
            logger.error(
                "supervisor %r: child %r exceeded %d restarts in %s s; continuing without it",
                sup, child.spec.id, self.flags.intensity, self.flags.period,
            )
            self._report(child.spec.id, "continue_without", reason)
            await trio.lowlevel.checkpoint()
            return None
        if mode is OnExhausted.RESTART_TREE:
            now = trio.current_time()
            last = self._tree_restarted_at
            if last is None or now - last >= self.flags.period:
                self._tree_restarted_at = now
                logger.error("supervisor %r: restart intensity reached; restarting the tree", sup)
                self._report(child.spec.id, "restart_tree", reason)
                parent = self._proc.parent
                if parent is not None:
                    parent.system(_CountRestart(self._proc))
                for c in reversed(self._children):
                    await self._stop(c)
                self._children = {
                    c: None for c in self._children if c.spec.restart is not TEMPORARY
                }
                self._pending = []
                self._restarts.clear()
                if tracer is not None:
                    tracer.restarts_reset(self._proc)
                return await self._start_group(list(self._children))
        logger.error(
            "supervisor %r: child %r exceeded %d restarts in %s s; shutting down",
            sup, child.spec.id, self.flags.intensity, self.flags.period,
        )
        self._report(child.spec.id, "escalate", reason)
        return _STOP_SHUTDOWN

    # -- the API -----------------------------------------------------------------------------

    def _find(self, key: Any) -> _Child | None:
        if type(key) is Pid:
            return self._by_proc.get(key._proc)
        for c in self._children:
            if c.spec.id == key:
                return c
        return None

    async def handle_call(self, request: Any, from_: _process.From) -> Any:
        kind = type(request)
        try:
            if kind is _WhichChildren:
                await trio.lowlevel.checkpoint()
                return [
                    ChildInfo(c.spec.id, c.pid, c.spec.type, c.spec.restart, c.status, c.restarts)
                    for c in self._children
                ]
            if kind is _CountChildren:
                await trio.lowlevel.checkpoint()
                active = sum(1 for c in self._children if c.proc is not None)
                sups = sum(1 for c in self._children if c.spec.type is SUPERVISOR)
                return ChildCounts(
                    len(self._children), active, sups, len(self._children) - sups
                )
            if kind is _StartChild:
                return await self._api_start_child(request.spec, request.extra)
            if kind is _TerminateChild:
                return await self._api_terminate(request.key)
            if kind is _RestartChild:
                return await self._api_restart(request.key)
            if kind is _DeleteChild:
                child = self._existing(request.key)
                if child.proc is not None:
                    raise SupervisorError(f"child {request.key!r} is running")
                self._forget(child)
                await trio.lowlevel.checkpoint()
                return None
        except (OtpError, ValueError, TypeError) as exc:
            return _Refused(exc)
        # A request this supervisor does not know is refused: a bad call never crashes it.
        await trio.lowlevel.checkpoint()
        return _Refused(SupervisorError(f"unknown supervisor request {request!r}"))

    def _existing(self, key: Any) -> _Child:
        child = self._find(key)
        if child is None:
            raise SupervisorError(f"no child {key!r}")
        return child

    async def _api_start_child(self, spec: ChildSpec, extra: tuple[Any, ...]) -> Any:
        if not isinstance(spec, ChildSpec):
            raise TypeError(f"start_child needs an otp.ChildSpec, not {spec!r}")
        if spec.significant and self.flags.auto_shutdown is AutoShutdown.NEVER:
            raise ValueError(f"child {spec.id!r} is significant but auto_shutdown is 'never'")
        if self._find(spec.id) is not None:
            raise SupervisorError(f"a child with id {spec.id!r} already exists")
        child = _Child(spec, spec.args + extra)
        try:
            pid = await self._start(child)
        except Exception as exc:
            raise StartError(spec.id, exc) from exc
        self._children[child] = None
        return pid

    async def _api_restart(self, key: Any) -> Pid:
        child = self._existing(key)
        if child.proc is not None:
            raise SupervisorError(f"child {key!r} is running")
        if child in self._pending:
            self._pending.remove(child)
        try:
            return await self._start(child)
        except Exception as exc:
            # As start_child: the caller gets StartError, the child stays stopped (its spec
            # kept), and the supervisor carries on.
            child.status = "stopped"
            raise StartError(child.spec.id, exc) from exc

    async def _api_terminate(self, key: Any) -> None:
        child = self._existing(key)
        if child in self._pending:
            self._pending.remove(child)
        await self._stop(child)
        if child.spec.restart is TEMPORARY:
            self._forget(child)



class DynamicSupervisor(Supervisor):
    """A one_for_one supervisor of children started on demand (Elixir's DynamicSupervisor).

    ``await otp.start(otp.DynamicSupervisor, max_children=..., extra_args=(...))``;
    ``otp.start_child(sup, spec)`` starts a child with ``extra_args + spec.args``; children
    are addressed by pid; ids need not be unique. Intensity, period, backoff and
    ``on_exhausted`` work as for :class:`Supervisor`. A child that is not going to be
    restarted (temporary, transient after a normal exit, terminated, or given up on by
    ``continue_without``) is forgotten at once: it no longer counts against
    ``max_children``.
    """

    async def init(  # type: ignore[override]
        self,
        *,
        max_children: float = INFINITY,
        extra_args: Sequence[Any] = (),
        intensity: int = 1,
        period: float = 5.0,
        backoff: Backoff = NO_BACKOFF,
        on_exhausted: OnExhausted | str = OnExhausted.ESCALATE,
    ) -> None:
        if isinstance(max_children, bool) or not isinstance(max_children, int | float):
            raise TypeError(f"max_children must be a number, not {max_children!r}")
        if max_children < 0:
            raise ValueError(f"max_children must be >= 0, not {max_children}")
        self.max_children = max_children
        self.extra_args = _to_tuple(extra_args)
        await super().init(
            (),
            strategy=ONE_FOR_ONE,
            intensity=intensity,
            period=period,
            backoff=backoff,
            on_exhausted=on_exhausted,
        )

    async def _api_start_child(self, spec: ChildSpec, extra: tuple[Any, ...]) -> Any:
        if not isinstance(spec, ChildSpec):
            raise TypeError(f"start_child needs an otp.ChildSpec, not {spec!r}")
        if len(self._children) >= self.max_children:
            raise SupervisorError(f"max_children ({self.max_children}) reached")
        child = _Child(spec, self.extra_args + spec.args + extra)
        try:
            pid = await self._start(child)
        except Exception as exc:
            raise StartError(spec.id, exc) from exc
        self._children[child] = None
        return pid

    def _find(self, key: Any) -> _Child | None:
        return self._by_proc.get(key._proc) if type(key) is Pid else None

    async def _api_terminate(self, key: Any) -> None:
        child = self._existing(key)
        await self._stop(child)
        self._forget(child)

    def _not_restarted(self, child: _Child) -> None:
        # Children are addressed by pid: one that is not coming back can never be restarted
        # or deleted, so it is forgotten (and no longer counts against max_children).
        self._forget(child)


async def _sup_call(sup: Any, request: Any) -> Any:
    result = await _process.call(sup, request, timeout=INFINITY)
    if type(result) is _Refused:
        raise result.error
    return result


async def start_child(sup: Any, spec: ChildSpec, *extra_args: Any) -> Pid:
    """Start a new child under ``sup`` (appended last) and return its pid.

    For a :class:`DynamicSupervisor`, ``extra_args`` are appended to the child's args.
    Raises :class:`SupervisorError` for a duplicate id, :class:`StartError` if its init fails.
    """
    pid: Pid = await _sup_call(sup, _StartChild(spec, tuple(extra_args)))
    return pid


async def terminate_child(sup: Any, child: Any) -> None:
    """Stop a child (by id, or by pid for a DynamicSupervisor); its spec stays unless it is
    temporary or dynamic."""
    await _sup_call(sup, _TerminateChild(child))


async def restart_child(sup: Any, child_id: Any) -> Pid:
    """Start again a stopped child whose spec the supervisor still holds.

    Raises :class:`SupervisorError` if there is no such child or it is running, and
    :class:`StartError` if its init fails (the child then stays stopped, its spec kept).
    """
    pid: Pid = await _sup_call(sup, _RestartChild(child_id))
    return pid


async def delete_child(sup: Any, child_id: Any) -> None:
    """Forget the spec of a stopped child."""
    await _sup_call(sup, _DeleteChild(child_id))


async def which_children(sup: Any) -> list[ChildInfo]:
    """Every child with its pid (None when stopped), type, restart type, status, restarts."""
    result: list[ChildInfo] = await _sup_call(sup, _WhichChildren())
    return result


async def count_children(sup: Any) -> ChildCounts:
    """Counts of specs, running children, supervisors and workers."""
    result: ChildCounts = await _sup_call(sup, _CountChildren())
    return result
