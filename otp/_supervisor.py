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
    running and report it; the restart history starts afresh.
  - ``RESTART_TREE``: stop every child and start them all again once, counting one restart of
    this supervisor against its parent's intensity. A second exhaustion within ``period`` of
    that tree restart escalates.
* **Backoff.** Before a restart the supervisor may wait (:class:`Backoff`); it keeps answering
  calls while it waits. The delay grows with the number of restarts of that child within
  ``period``. Each pending restart keeps its own timer: a sibling's crash neither shortens
  nor lengthens it (a ``one_for_all`` or ``rest_for_one`` restart that takes in a child
  already waiting replaces that child's pending restart with its own). ``terminate_child``
  on a waiting child cancels its restart; ``which_children`` then reports it ``"stopped"``.
* **Ignore.** A child whose ``init`` returns ``otp.Ignore`` is recorded as not running
  (status ``"ignored"``, its spec kept for ``restart_child``; a temporary child's spec is
  dropped) without counting a restart. A DynamicSupervisor does not add it at all.
* **A restart whose init fails** counts as another exit of that child, with the exception as
  reason, and goes through the same rules; intensity bounds the retries.
* **Significant children** (transient or temporary only) shut the supervisor down when they
  exit on their own and are not restarted: with ``auto_shutdown=ANY_SIGNIFICANT`` when any
  does, with ``ALL_SIGNIFICANT`` when all have (one waiting out its restart backoff has not:
  it is coming back). The supervisor then exits with ``"shutdown"``.
* **Reports.** Every decision (a restart, a child that exited for good, an ignored start, a
  failed restart, giving up) is logged on the ``"otp.supervisor"`` logger as a structured
  event, Erlang's supervisor report: the record's ``otp_report`` attribute holds the
  supervisor, the child id, the event, the reason and the child's restart count (the JSON
  log format writes them as fields). The same :class:`SupervisorReport` is published on the
  bus topic ``"otp.supervisor"``.
* **Requests.** A bad request never crashes a supervisor: an unknown child, a duplicate id or
  a child whose ``init`` fails in ``start_child`` or ``restart_child`` (``StartError``; the
  spec stays, the child stopped) is an error raised in the caller, and a call the
  supervisor does not know is answered with a refusal.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Sequence
from typing import Any, Final

import attrs
import trio

from ._children import (
    CountChildren,
    DeleteChild,
    Refused,
    RestartChild,
    StartChild,
    TerminateChild,
    WhichChildren,
)
from ._errors import OtpError, StartError, SupervisorError
from ._genserver import GenServer
from ._proc import ChildExited, _Process, current_process
from ._specs import (
    BRUTAL_KILL,
    NO_BACKOFF,
    ONE_FOR_ALL,
    ONE_FOR_ONE,
    SUPERVISOR,
    TEMPORARY,
    TRANSIENT,
    AutoShutdown,
    Backoff,
    ChildCounts,
    ChildInfo,
    ChildSpec,
    OnExhausted,
    Strategy,
    SupervisorFlags,
    SupervisorReport,
    check_children,
)
from ._start import spawn
from ._values import Pid, Stop, is_normal_exit
from .bus import publish_nowait

logger = logging.getLogger("otp.supervisor")


# System items


@attrs.define(slots=True, eq=False)
class _RestartDue:
    token: int


@attrs.define(slots=True, eq=False)
class _CountRestart:
    proc: _Process


class _Child:
    __slots__ = ("args", "attempts", "pending", "proc", "restarts", "spec", "status")

    def __init__(self, spec: ChildSpec, args: tuple[Any, ...]) -> None:
        self.spec = spec
        self.args = args
        self.proc: _Process | None = None
        self.status = "stopped"
        self.restarts = 0
        self.attempts: deque[float] = deque()
        #: The token of the delayed restart this child waits for, if any.
        self.pending: int | None = None

    @property
    def pid(self) -> Pid | None:
        return None if self.proc is None else self.proc.pid


class _Delayed:
    """A restart waiting out its backoff: the children it will start, and its timer."""

    __slots__ = ("children", "scope")

    def __init__(self, children: list[_Child]) -> None:
        self.children = children
        self.scope = trio.CancelScope()


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
        self._proc = current_process()
        # an ordered set: start order, O(1) membership and removal (DynamicSupervisor)
        self._children: dict[_Child, None] = {}
        self._by_proc: dict[_Process, _Child] = {}
        self._restarts: deque[float] = deque()
        self._tokens = 0
        #: Restarts waiting out their backoff, by token.
        self._delayed: dict[int, _Delayed] = {}
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

    async def _start(self, child: _Child) -> Pid | None:
        """Start ``child``; its pid, or None if its init returned Ignore (then it is recorded
        as not running, or forgotten if temporary)."""
        spec = child.spec
        pid = await spawn(
            spec.start,
            child.args,
            spec.kwargs,
            name=spec.name,
            mailbox=spec.mailbox,
            nursery=self._proc.nursery,
            parent=self._proc,
            sup_child=child,
        )
        if pid is None:
            child.status = "ignored"
            self._report(child, "ignored", "ignore")
            if spec.restart is TEMPORARY:
                self._forget(child)
            return None
        proc: _Process = pid._proc
        child.proc = proc
        child.status = "running"
        self._by_proc[proc] = child
        tracer = self._proc.runtime.tracer
        if tracer is not None:
            tracer.started_child(self._proc.pid, spec.id, pid)
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
        await proc.shutdown(0.0 if shutdown == BRUTAL_KILL else float(shutdown))

    async def _stop_all(self) -> None:
        self._stopping = True
        self._cancel_delayed()
        for child in reversed(self._children):
            await self._stop(child)

    async def terminate(self, reason: Any) -> None:
        await self._stop_all()

    # -- delayed restarts ----------------------------------------------------------------------

    def _delay(self, group: list[_Child], delay: float) -> None:
        """Restart ``group`` after ``delay`` seconds, on a timer of its own."""
        self._tokens += 1
        token = self._tokens
        entry = self._delayed[token] = _Delayed(group)
        for c in group:
            c.pending = token
            c.status = "restarting"
        proc = self._proc

        async def due() -> None:
            with entry.scope:
                await trio.sleep(delay)
                proc.system(_RestartDue(token))

        assert proc.nursery is not None
        proc.nursery.start_soon(due)

    def _undelay(self, child: _Child) -> None:
        """Take ``child`` out of the delayed restart it waits for (cancelling the timer if
        nobody else waits for it)."""
        token = child.pending
        if token is None:
            return
        child.pending = None
        entry = self._delayed.get(token)
        if entry is not None:
            if child in entry.children:
                entry.children.remove(child)
            if not entry.children:
                entry.scope.cancel()
                del self._delayed[token]

    def _cancel_delayed(self) -> None:
        for entry in self._delayed.values():
            entry.scope.cancel()
            for c in entry.children:
                c.pending = None
        self._delayed.clear()

    # -- exits and restarts --------------------------------------------------------------------

    async def _otp_system(self, item: Any) -> Any:
        kind = type(item)
        if kind is ChildExited:
            child = self._by_proc.pop(item.proc, None)
            if child is None or self._stopping:
                await trio.lowlevel.checkpoint()
                return None
            child.proc = None
            child.status = "stopped"
            return await self._child_exited(child, item.reason)
        if kind is _RestartDue:
            entry = self._delayed.pop(item.token, None)
            if entry is None:
                await trio.lowlevel.checkpoint()
                return None
            for c in entry.children:
                c.pending = None
            return await self._start_group(entry.children)
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
            self._report(child, "exited", reason)
            self._not_restarted(child)
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
        if mode is AutoShutdown.ALL_SIGNIFICANT and not any(
            # A significant child waiting out its restart backoff is still there.
            c.spec.significant and (c.proc is not None or c.pending is not None)
            for c in self._children
        ):
            return _STOP_SHUTDOWN
        return None

    def _forget(self, child: _Child) -> None:
        self._children.pop(child, None)
        self._undelay(child)

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

    def _report(self, child: _Child, event: str, reason: Any, level: int = logging.INFO) -> None:
        """Log a supervisor report (structured: see the module docs) and publish it."""
        report = SupervisorReport(self._proc.pid, child.spec.id, event, reason, child.restarts)
        logger.log(
            level,
            "supervisor %r: child %r %s (reason %r, restarts %d)",
            report.supervisor, report.child_id, event.replace("_", " "), reason,
            report.restarts,
            extra={"otp_report": report.fields()},
        )
        publish_nowait("otp.supervisor", report)

    async def _restart(self, child: _Child, reason: Any) -> Any:
        child.restarts += 1
        if not self._add_restart():
            return await self._exhausted(child, reason)
        tracer = self._proc.runtime.tracer
        if tracer is not None:
            tracer.restarting(self._proc.pid, child.spec.id, reason, self.flags.intensity,
                              self.flags.period)
        self._report(child, "restarting", reason)
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
            self._undelay(other)  # this restart takes over any restart it was waiting for
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
        self._delay(group, delay)
        return None

    async def _start_group(self, group: list[_Child]) -> Any:
        for c in group:
            if c.proc is not None or c not in self._children:
                continue
            try:
                await self._start(c)
            except Exception as exc:
                c.status = "stopped"
                self._report(c, "start_failed", exc, logging.ERROR)
                outcome = await self._restart(c, exc)
                if outcome is None and c.status == "failed":
                    continue  # continue_without gave up on c: the rest of the group still starts
                return outcome  # a new restart took over the group, or the supervisor stops
        return None

    async def _exhausted(self, child: _Child, reason: Any) -> Any:
        mode = self.flags.on_exhausted
        tracer = self._proc.runtime.tracer
        if tracer is not None:
            tracer.exhausted(self._proc.pid, child.spec.id, reason, mode.value)
        if mode is OnExhausted.CONTINUE_WITHOUT:
            child.status = "failed"
            self._undelay(child)
            if child.proc is None:
                self._not_restarted(child)
            self._restarts.clear()
            if tracer is not None:
                tracer.restarts_reset(self._proc.pid)
            self._report(child, "continue_without", reason, logging.ERROR)
            await trio.lowlevel.checkpoint()
            return None
        if mode is OnExhausted.RESTART_TREE:
            now = trio.current_time()
            last = self._tree_restarted_at
            if last is None or now - last >= self.flags.period:
                self._tree_restarted_at = now
                self._report(child, "restart_tree", reason, logging.ERROR)
                parent = self._proc.parent
                if parent is not None:
                    parent.system(_CountRestart(self._proc))
                self._cancel_delayed()
                for c in reversed(self._children):
                    await self._stop(c)
                self._children = {
                    c: None for c in self._children if c.spec.restart is not TEMPORARY
                }
                self._restarts.clear()
                if tracer is not None:
                    tracer.restarts_reset(self._proc.pid)
                return await self._start_group(list(self._children))
        self._report(child, "escalate", reason, logging.ERROR)
        return _STOP_SHUTDOWN

    # -- the API -----------------------------------------------------------------------------

    def _find(self, key: Any) -> _Child | None:
        if type(key) is Pid:
            return self._by_proc.get(key._proc)
        for c in self._children:
            if c.spec.id == key:
                return c
        return None

    async def handle_call(self, request: Any, from_: Any) -> Any:
        kind = type(request)
        try:
            if kind is WhichChildren:
                await trio.lowlevel.checkpoint()
                return [
                    ChildInfo(c.spec.id, c.pid, c.spec.type, c.spec.restart, c.status, c.restarts)
                    for c in self._children
                ]
            if kind is CountChildren:
                await trio.lowlevel.checkpoint()
                active = sum(1 for c in self._children if c.proc is not None)
                sups = sum(1 for c in self._children if c.spec.type is SUPERVISOR)
                return ChildCounts(
                    len(self._children), active, sups, len(self._children) - sups
                )
            if kind is StartChild:
                return await self._api_start_child(request.spec, request.extra)
            if kind is TerminateChild:
                return await self._api_terminate(request.key)
            if kind is RestartChild:
                return await self._api_restart(request.key)
            if kind is DeleteChild:
                child = self._existing(request.key)
                if child.proc is not None:
                    raise SupervisorError(f"child {request.key!r} is running")
                self._forget(child)
                await trio.lowlevel.checkpoint()
                return None
        except (OtpError, ValueError, TypeError) as exc:
            return Refused(exc)
        # A request this supervisor does not know is refused: a bad call never crashes it.
        await trio.lowlevel.checkpoint()
        return Refused(SupervisorError(f"unknown supervisor request {request!r}"))

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
        self._children[child] = None
        try:
            return await self._start(child)
        except Exception as exc:
            self._children.pop(child, None)
            raise StartError(spec.id, exc) from exc

    async def _api_restart(self, key: Any) -> Pid | None:
        child = self._existing(key)
        if child.proc is not None:
            raise SupervisorError(f"child {key!r} is running")
        self._undelay(child)
        try:
            return await self._start(child)
        except Exception as exc:
            # As start_child: the caller gets StartError, the child stays stopped (its spec
            # kept), and the supervisor carries on.
            child.status = "stopped"
            raise StartError(child.spec.id, exc) from exc

    async def _api_terminate(self, key: Any) -> None:
        child = self._existing(key)
        self._undelay(child)  # a restart waiting out its backoff is called off
        await self._stop(child)
        child.status = "stopped"
        if child.spec.restart is TEMPORARY:
            self._forget(child)
