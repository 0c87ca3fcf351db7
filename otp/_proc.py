"""The process: one Trio task running a GenServer, from ``init`` to its exit notices.

A process is an :class:`~otp._mailbox.Inbox` (its two queues) plus its lifecycle:

1. ``init`` runs in the new task while the starter waits (:class:`_Starter`). Its outcome
   (started, refused, ignored, failed) is handed to the starter once; a start that does not
   finish leaves nothing behind.
2. The receive loop takes the system lane first, then the user queue, and calls the
   callback for each message. A server that always has mail yields once per :data:`BURST`
   messages, so it never starves the rest of the program and a kill can land.
3. ``terminate(reason)`` runs on a stop, a shutdown, a parent's exit (trapped) or a crash.
4. Dying (:meth:`_Process._die`) fails every call still waiting on it with its exit reason,
   drops its names and subscriptions, and tells links, monitors, its supervisor and the
   tracer, in that order, all at once, so nobody waits out a timeout on a dead process.

Exit signals (:meth:`_Process.signal_exit`) follow Erlang: ``"kill"`` cannot be trapped and
ends the process at once with reason ``"killed"``; ``"normal"`` is ignored unless trapped;
any other reason ends a process that does not trap exits at once, and is queued as an
:class:`otp.Exit` message for one that does, after every message its sender sent before.
An exit signal from the process that started this one with :func:`otp.start_link` stops it
(``terminate`` with the parent's reason) when it traps exits, as ``gen_server`` does.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine
from time import perf_counter_ns
from typing import Any, Final

import attrs
import outcome
import trio
from trio.lowlevel import Abort, Task, current_task, reschedule, wait_task_rescheduled

from ._envelope import PENDING, Envelope, From, Kind, _context, current_envelope
from ._errors import CallError, NoProcess, OtpError, StartRefused
from ._genserver import GenServer
from ._mailbox import GAVE_UP, Inbox, Mailbox, MailboxStatistics
from ._runtime import Runtime
from ._values import (
    DEAD,
    EXITING,
    INFINITY,
    NOTHING,
    RUNNING,
    STARTING,
    STATUS_NAMES,
    Continue,
    Down,
    Exit,
    Ignore,
    NoReply,
    Pid,
    Stop,
    _Directive,
)

logger = logging.getLogger("otp")

_CALL, _CAST, _INFO, _EXIT = Kind.CALL, Kind.CAST, Kind.INFO, Kind.EXIT

#: Number of histogram buckets: bucket k counts handler times below 1.024 µs * 2**k, the last
#: one everything slower (about 34 s and up).
HIST_BUCKETS: Final = 26
EMPTY_HISTOGRAM: Final = (0,) * HIST_BUCKETS

#: A server that always has mail yields to the scheduler once per this many messages.
BURST: Final = 16


@attrs.frozen
class ProcessStatistics:
    """A snapshot of one process, cheap enough to take at scrape time."""

    pid: Pid
    name: Any
    behaviour: str
    status: str
    mailbox: MailboxStatistics
    messages_handled: int
    #: Handler-time histogram: ``histogram[k]`` counts messages handled in less than
    #: ``1.024e-6 * 2**k`` seconds (and at least the previous bound); the last entry is the rest.
    histogram: tuple[int, ...]
    handler_seconds_total: float
    links: int
    monitors: int
    trap_exit: bool
    #: Calls whose handler returned NoReply and whose callers still wait for otp.reply.
    held_calls: int = 0


# --------------------------------------------------------------------------------------------
# System-lane items


@attrs.define(slots=True, eq=False)
class StopRequest:
    """Stop with ``reason``: ``terminate`` runs (:func:`otp.stop`, a shutdown)."""

    reason: Any


@attrs.define(slots=True, eq=False)
class SysCall:
    """Run ``fn(server)`` between two messages and reply through ``env``."""

    fn: Callable[[Any], Coroutine[Any, Any, Any]]
    env: From


@attrs.define(slots=True, eq=False)
class ChildExited:
    """Told to the parent (a supervisor) when a child process has exited."""

    proc: _Process
    reason: Any


# --------------------------------------------------------------------------------------------
# Starting


class _Starter:
    """The task waiting in :func:`otp.start` for ``init`` to finish, and what it will be told."""

    __slots__ = ("link", "proc", "refusal", "state", "task")

    def __init__(self, task: Task, proc: _Process, link: _Process | None) -> None:
        self.task = task
        self.proc = proc
        self.link = link
        self.state = PENDING
        #: Set when init refused (Stop) or declined (Ignore): what the start returns.
        self.refusal: outcome.Outcome[Any] | None = None

    def done(self, result: outcome.Outcome[Any]) -> None:
        if self.state == PENDING:
            self.state = 1
            reschedule(self.task, result)

    def abort(self, _raise_cancel: Any) -> Abort:
        # The starter was cancelled: the half-started process must not outlive the call. As
        # proc_lib does on a start timeout, unlink first: the starter is not told of that kill.
        if self.state == PENDING:
            self.state = 2
            if self.link is not None:
                unlink(self.link, self.proc)
            self.proc.kill("killed")
        return Abort.SUCCEEDED


# --------------------------------------------------------------------------------------------
# The process


class _Process(Inbox):
    """Internal state of one process. Users see only its :class:`Pid`."""

    __slots__ = (
        "cleanups",
        "cls",
        "current",
        "deferred",
        "exit_event",
        "exit_reason",
        "hist",
        "hist_ns",
        "kill_reason",
        "link_parent",
        "links",
        "monitored_by",
        "monitors",
        "name",
        "nursery",
        "parent",
        "process",
        "runtime",
        "scope",
        "server",
        "starter",
        "sup_child",
        "trap_exit",
    )

    def __init__(self, rt: Runtime, cls: type[GenServer], mailbox: Mailbox) -> None:
        super().__init__(mailbox)
        self.runtime = rt
        self.cls = cls
        self.pid = Pid(next(rt.pid_numbers), self)
        #: A process is its own execution context (see ``otp._envelope.Context``).
        self.process = self
        self.name: Any = None
        self.scope: trio.CancelScope | None = None
        self.nursery: trio.Nursery | None = None
        self.server: GenServer | None = None
        self.exit_reason: Any = None
        self.kill_reason: Any = None
        # dicts, not sets: iteration follows insertion, so a seeded simulation replays exactly
        self.links: dict[_Process, None] | None = None
        self.monitored_by: dict[int, _Process] | None = None
        self.monitors: dict[int, _Process] | None = None
        self.trap_exit = False
        self.current: Envelope | None = None
        #: Calls whose handler returned NoReply and that still wait for otp.reply.
        self.deferred: dict[From, None] | None = None
        self.cleanups: dict[Callable[[_Process], None], None] | None = None
        self.exit_event: trio.Event | None = None
        self.starter: _Starter | None = None
        #: The supervisor that started this process (told of its exit), if any.
        self.parent: _Process | None = None
        #: The process that started this one with start_link: its exit stops a trapping
        #: server (gen_server's EXIT from the parent).
        self.link_parent: Pid | None = None
        self.sup_child: Any = None
        self.hist: list[int] | None = None  # created by the first handled message
        self.hist_ns = 0
        if rt.tracer is not None:
            self.hook = rt.tracer.offer

    def __repr__(self) -> str:
        return f"<process {self.pid!r} {self.cls.__name__} name={self.name!r}>"

    @property
    def handled(self) -> int:
        """Messages handled so far (each one counted in the histogram)."""
        return sum(self.hist) if self.hist else 0

    def __call__(self, _raise_cancel: Any) -> Abort:
        # The process is its own abort function while it waits for mail (no bound-method
        # object per process).
        self.waiting = False
        return Abort.SUCCEEDED

    # -- signals -----------------------------------------------------------------------------

    def kill(self, reason: Any) -> None:
        """End the process at its next checkpoint with ``reason``; terminate does not run."""
        if self.status == DEAD:
            return
        if self.kill_reason is None:
            self.kill_reason = reason
        if self.scope is not None:
            self.scope.cancel()

    def signal_exit(self, sender: Pid | None, reason: Any) -> None:
        """Deliver an exit signal from ``sender`` (see the module docs)."""
        if self.status == DEAD:
            return
        if reason == "kill":
            self.kill("killed")
        elif self.trap_exit:
            if sender is not None and sender == self.link_parent:
                self.force(self.info_env(Exit(sender, reason), _EXIT, sender))
            else:
                self.force(self.info_env(Exit(sender, reason), _INFO, sender))
        elif reason != "normal":
            self.kill(reason)

    def info_env(self, message: Any, kind: Kind = _INFO, sender: Pid | None = None) -> Envelope:
        """An envelope for a notice the runtime delivers (Down, Exit), in the trace of the
        message being handled where there is one."""
        rt = self.runtime
        parent = current_envelope()
        cid = rt.next_id()
        return Envelope(
            message,
            kind,
            cid,
            parent.trace_id if parent is not None else cid,
            parent.correlation_id if parent is not None else None,
            sender,
            trio.current_time(),
        )

    # -- waiting and stopping ----------------------------------------------------------------

    async def wait_dead(self) -> None:
        if self.status == DEAD:
            await trio.lowlevel.checkpoint()
            return
        if self.exit_event is None:
            self.exit_event = trio.Event()
        await self.exit_event.wait()

    def default_shutdown(self) -> float:
        return INFINITY if self.cls._otp_supervisor else 5.0

    async def shutdown(self, timeout: float) -> None:
        """Ask the process to shut down; after ``timeout`` seconds kill it. Returns once it is
        dead. (``timeout <= 0`` kills at once: ``BRUTAL_KILL``.)"""
        if self.status == DEAD:
            await trio.lowlevel.checkpoint()
            return
        if timeout <= 0:
            self.kill("killed")
        else:
            self.system(StopRequest("shutdown"))
            if timeout != INFINITY:
                with trio.move_on_after(timeout):
                    await self.wait_dead()
                if self.status != DEAD:
                    self.kill("killed")
        await self.wait_dead()

    def add_cleanup(self, fn: Callable[[_Process], None]) -> None:
        """Run ``fn(proc)`` when the process exits. Adding an equal ``fn`` again (the same
        function, or the same bound method of the same object) is a no-op, so a registry or a
        bus adds one cleanup per process however often the process joins and leaves."""
        if self.cleanups is None:
            self.cleanups = {}
        self.cleanups[fn] = None

    def statistics(self) -> ProcessStatistics:  # type: ignore[override]
        return ProcessStatistics(
            pid=self.pid,
            name=self.name,
            behaviour=self.cls.__qualname__,
            status=STATUS_NAMES[self.status],
            mailbox=Inbox.statistics(self),
            messages_handled=self.handled,
            histogram=tuple(self.hist) if self.hist else EMPTY_HISTOGRAM,
            handler_seconds_total=self.hist_ns / 1e9,
            links=len(self.links) if self.links else 0,
            monitors=len(self.monitored_by) if self.monitored_by else 0,
            trap_exit=self.trap_exit,
            held_calls=len(self.deferred) if self.deferred else 0,
        )

    # -- the task ----------------------------------------------------------------------------

    async def main(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        self.task = current_task()
        _context.set(self)
        reason: Any = "killed"
        try:
            try:
                with trio.CancelScope() as scope:
                    self.scope = scope
                    if self.kill_reason is not None:
                        scope.cancel()
                    if self.cls._otp_supervisor or self.cls.owns_tasks:
                        async with trio.open_nursery() as nursery:
                            self.nursery = nursery
                            reason = await self._lifecycle(args, kwargs)
                            nursery.cancel_scope.cancel()
                    else:
                        reason = await self._lifecycle(args, kwargs)
                if scope.cancelled_caught:
                    reason = self.kill_reason if self.kill_reason is not None else "killed"
            except Exception as exc:
                # Something escaped the process's own nursery (a task, a supervisor's timer):
                # it ends this process, with that exception as reason, and nothing else.
                reason = unwrap_group(exc)
                logger.error("process %r (%s) crashed", self.pid, self.cls.__qualname__,
                             exc_info=exc)
        finally:
            self._die(reason)

    async def _lifecycle(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        server = self.cls.__new__(self.cls)
        self.server = server
        try:
            result = await server.init(*args, **kwargs)
        except Exception as exc:
            # The starter is told in _die, once the process is gone: a failed start leaves
            # nothing behind.
            return exc
        if result is not None and not isinstance(result, Continue):
            return self._refuse(result)
        self.current = None  # init ran in its starter's trace; messages bring their own
        self.status = RUNNING
        if self.starter is not None:
            self.starter.done(outcome.Value(self.pid))
            self.starter = None
        try:
            if result is not None:
                stop = await self._continue(server, result)
                if stop is not None:
                    return await self._terminate(server, stop.reason)
            # The receive loop is inline, not a method: one coroutine frame less per process
            # (each is an object the garbage collector tracks, 100,000 processes over).
            queue = self.queue
            hist = self.hist
            top = HIST_BUCKETS - 1
            tracer = self.runtime.tracer
            burst = 0
            # When the handler time of a message is measured, its end is the start of the
            # next message handled in the same burst: one clock read per message. 0: unknown.
            t0 = 0
            while True:
                sysq = self.sysq
                if sysq:
                    item = sysq.popleft()
                    self.current = None
                    stop = await self._system(server, item)
                    if stop is not None:
                        return stop
                    t0 = 0
                    continue
                if not queue:
                    # ``current`` stays set from one message to the next (a store less per
                    # message): it is cleared here, and before system items.
                    self.current = None
                    self.waiting = True
                    await wait_task_rescheduled(self)
                    burst = t0 = 0
                    continue
                if burst >= BURST:
                    # Messages kept coming without the server ever parking: yield so a busy
                    # server never starves the rest of the program (and so a kill can land).
                    # Once per BURST messages, not per message: under load a yield per message
                    # halves throughput and doubles latency.
                    burst = t0 = 0
                    await trio.lowlevel.checkpoint()
                    continue
                if hist is None:  # the first message: idle processes keep no histogram
                    hist = self.hist = [0] * HIST_BUCKETS
                burst += 1
                env = queue.popleft()
                if self.blocked:
                    self.unblock()
                self.current = env
                if not t0:
                    t0 = perf_counter_ns()
                kind = env.kind
                try:
                    if tracer is not None and tracer.handler_faults:
                        await tracer.before_handle(self.pid, env)
                    if kind is _CALL:
                        result = await server.handle_call(env.message, env)
                        if not isinstance(result, _Directive):
                            env._reply(result)  # type: ignore[attr-defined]
                            result = None
                    elif kind is _CAST:
                        result = await server.handle_cast(env.message)
                    elif kind is _INFO:
                        result = await server.handle_info(env.message)
                    else:  # _EXIT: the parent that linked to this server exited
                        result = Stop(env.message.reason)
                finally:
                    t1 = perf_counter_ns()
                    dt = t1 - t0
                    t0 = t1
                    self.hist_ns += dt
                    b = (dt >> 10).bit_length()
                    hist[b if b < top else top] += 1
                if result is not None:
                    stop = await self._directive(server, env, result)
                    if stop is not None:
                        return stop
                    t0 = 0
        except Exception as exc:
            current = self.current
            if current is not None and current.kind is _CALL:
                current._fail(CallError(self.pid, exc))  # type: ignore[attr-defined]
            logger.error("process %r (%s) crashed", self.pid, self.cls.__qualname__, exc_info=exc)
            return await self._terminate(server, exc)

    def _refuse(self, result: Any) -> Any:
        """``init`` returned Stop or Ignore: the start fails (or returns None) and the process
        ends without running terminate. Returns the exit reason."""
        if result is Ignore:
            refusal: outcome.Outcome[Any] = outcome.Value(None)
            reason: Any = "normal"
        elif isinstance(result, Stop):
            reason = result.reason
            error = reason if isinstance(reason, BaseException) else StartRefused(
                self.cls, reason)
            refusal = outcome.Error(error)
        else:
            reason = TypeError(f"init of {self.cls.__qualname__} returned {result!r}: expected "
                               "None, otp.Continue, otp.Stop or otp.Ignore")
            refusal = outcome.Error(reason)
        if self.starter is not None:
            self.starter.refusal = refusal
        return reason

    async def _terminate(self, server: GenServer, reason: Any) -> Any:
        self.status = EXITING
        self.exit_reason = reason
        self._fail_pending(reason)
        try:
            await server.terminate(reason)
        except Exception as exc:
            logger.error("terminate of %r raised", self.pid, exc_info=exc)
            return exc
        return reason

    async def _continue(self, server: GenServer, directive: Any) -> Stop | None:
        result: Any = directive
        while isinstance(result, Continue):
            result = await server.handle_continue(result.arg)
        if isinstance(result, Stop):
            return result
        if result is not None:
            raise TypeError(f"handle_continue of {self.pid!r} returned {result!r}")
        return None

    def _hold(self, env: From) -> None:
        """Keep a call whose reply is deferred, unless it was already answered (reply then
        NoReply) or its caller gave up: the server holds only requests really pending."""
        if env.state == PENDING:
            deferred = self.deferred
            if deferred is None:
                deferred = self.deferred = {}
            deferred[env] = None
            env.held = deferred

    async def _directive(self, server: GenServer, env: Envelope, result: Any) -> Any:
        if result is NoReply:
            if env.kind is _CALL:
                self._hold(env)  # type: ignore[arg-type]
            return None
        if isinstance(result, Continue | Stop) and env.kind is _CALL:
            if result.reply is not NOTHING:
                env._reply(result.reply)  # type: ignore[attr-defined]
            else:
                self._hold(env)  # type: ignore[arg-type]
        if isinstance(result, Continue):
            stop = await self._continue(server, result)
            if stop is None:
                return None
            result = stop
        if isinstance(result, Stop):
            return await self._terminate(server, result.reason)
        raise TypeError(f"handler of {self.pid!r} returned {result!r}")

    async def _system(self, server: GenServer, item: Any) -> Any:
        kind = type(item)
        if kind is StopRequest:
            return await self._terminate(server, item.reason)
        if kind is SysCall:
            self.current = item.env
            try:
                value = await item.fn(server)
            except Exception as exc:
                item.env._fail(exc)
            else:
                item.env._reply(value)
            finally:
                self.current = None
            return None
        result = await server._otp_system(item)
        if isinstance(result, Stop):
            return await self._terminate(server, result.reason)
        return None

    # -- dying -------------------------------------------------------------------------------

    def _fail_pending(self, reason: Any) -> None:
        pid = self.pid
        for env in self.queue:
            if env.kind is _CALL:
                env._fail(CallError(pid, reason))  # type: ignore[attr-defined]
        for item in self.sysq or ():
            if type(item) is SysCall:
                item.env._fail(CallError(pid, reason))
        if self.blocked:
            for entry in self.blocked:
                env, task = entry
                if task is GAVE_UP:
                    continue
                if env.kind is _CALL:
                    env._fail(CallError(pid, reason))
                elif task is not None:
                    entry[1] = GAVE_UP
                    reschedule(task)  # the message is lost, as a send to a dead process is
            self.blocked.clear()
        if self.deferred:
            for env in list(self.deferred):
                env._fail(CallError(pid, reason))
            self.deferred = None

    def _die(self, reason: Any) -> None:
        rt = self.runtime
        # Until init returns, ``current`` is the starter's envelope (the trace init runs in),
        # not a message of this process's.
        started = self.status != STARTING
        self.status = DEAD
        self.exit_reason = reason
        pid = self.pid
        starter = self.starter
        if starter is not None:
            # init never finished: the start fails with the reason (or returns None: Ignore).
            self.starter = None
            if starter.refusal is not None:
                starter.done(starter.refusal)
            else:
                exc = reason if isinstance(reason, BaseException) else NoProcess(pid, reason)
                starter.done(outcome.Error(exc))
        current = self.current
        if started and current is not None and current.kind is _CALL:
            current._fail(CallError(pid, reason))  # type: ignore[attr-defined]
        self.current = None
        self._fail_pending(reason)
        self.queue.clear()
        self.sysq = None
        rt.procs.pop(pid.id, None)
        rt.roots.pop(pid, None)
        if isinstance(self.name, str) and rt.names.get(self.name) == pid:
            del rt.names[self.name]
        if self.cleanups:
            cleanups, self.cleanups = self.cleanups, None
            for fn in cleanups:
                try:
                    fn(self)
                except Exception as exc:
                    # A user registry's unregister_name, say: log it and finish dying, so
                    # links, monitors and the parent still hear of this exit.
                    logger.error("cleanup %r of %r raised", fn, pid, exc_info=exc)
        if self.monitors:
            for ref, target in self.monitors.items():
                if target.monitored_by:
                    target.monitored_by.pop(ref, None)
            self.monitors = None
        if self.links:
            links, self.links = self.links, None
            for other in links:
                if other.links:
                    other.links.pop(self, None)
                other.signal_exit(pid, reason)
        if self.monitored_by:
            watchers, self.monitored_by = self.monitored_by, None
            for ref, watcher in watchers.items():
                if watcher.monitors:
                    watcher.monitors.pop(ref, None)
                watcher.force(self.info_env(Down(ref, pid, reason), _INFO, pid))
        tracer = rt.tracer
        if tracer is not None:
            tracer.exited(pid, reason)
        if self.parent is not None:
            self.parent.system(ChildExited(self, reason))
        if self.exit_event is not None:
            self.exit_event.set()
        self.server = None


def unwrap_group(exc: BaseException) -> BaseException:
    """The one exception inside nested single-exception groups (as Trio nurseries raise)."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


def link(a: _Process, b: _Process) -> None:
    """Link two processes (``b`` must be alive, see :func:`otp.link`)."""
    if a.links is None:
        a.links = {}
    if b.links is None:
        b.links = {}
    a.links[b] = None
    b.links[a] = None


def unlink(a: _Process, b: _Process) -> None:
    if a.links:
        a.links.pop(b, None)
    if b.links:
        b.links.pop(a, None)


def flush_exits(proc: _Process, sender: Pid) -> None:
    """Drop the trapped Exit messages from ``sender`` queued in ``proc`` (proc_lib's flush
    after a failed start_link: the start's outcome already said it)."""
    queue = proc.queue
    if queue:
        for env in [e for e in queue if type(e.message) is Exit and e.message.pid == sender]:
            queue.remove(env)


# --------------------------------------------------------------------------------------------
# The calling process

def self_() -> Pid | None:
    """The pid of the calling process, or None outside any process (``otp.self()``)."""
    ctx = _context.get()
    return None if ctx is None else ctx.pid


def current_process() -> _Process:
    ctx = _context.get()
    if ctx is None:
        raise OtpError("this must be called from inside an otp process")
    proc: _Process = ctx.process
    return proc
