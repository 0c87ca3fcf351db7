"""The process: its state, and everything others do to it.

A process is an :class:`~otp._mailbox.Inbox` (its two queues) plus what the rest of the
runtime sees of it: its pid and name, links and monitors, its supervisor, its status and exit
reason, the calls it holds for a deferred reply, its counters. What it does itself (``init``,
the receive loop, ``terminate``) is in :mod:`otp._loop`.

Others may deliver to it (the inbox), signal it, kill it, wait for its death and shut it down.
Dying (:meth:`_Process._die`) fails every call still waiting on it with its exit reason, drops
its names and subscriptions, and tells its starter, links, monitors, the tracer and its
supervisor, all at once, so nobody waits out a timeout on a dead process.

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
from typing import Any, Final

import attrs
import outcome
import trio
from trio.lowlevel import Abort, Task, current_task, reschedule, wait_task_rescheduled

from ._envelope import Envelope, Expired, From, Kind, _context, current_envelope
from ._errors import CallError, NoProcess, OtpError
from ._genserver import GenServer
from ._mailbox import GAVE_UP, Inbox, Mailbox, MailboxStatistics
from ._runtime import Runtime
from ._values import (
    DEAD,
    INFINITY,
    STARTING,
    STATUS_NAMES,
    Down,
    Exit,
    Pid,
)

logger = logging.getLogger("otp")

_CALL, _CAST, _INFO, _EXIT = Kind.CALL, Kind.CAST, Kind.INFO, Kind.EXIT

#: Number of histogram buckets: bucket k counts handler times below 1.024 µs * 2**k, the last
#: one everything slower (about 34 s and up).
HIST_BUCKETS: Final = 26
EMPTY_HISTOGRAM: Final = (0,) * HIST_BUCKETS


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
# The process


class _Process(Inbox):
    """Internal state of one process. Users see only its :class:`Pid`."""

    __slots__ = (
        "cleanups",
        "cls",
        "current",
        "deferred",
        "exit_reason",
        "exit_waiters",
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
        "refusal",
        "runtime",
        "scope",
        "server",
        "starter",
        "starter_link",
        "sup_child",
        "trap_exit",
    )

    def __init__(self, rt: Runtime, cls: type[GenServer], mailbox: Mailbox) -> None:
        Inbox.__init__(self, mailbox)
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
        #: Tasks waiting for the exit (wait_dead), each parked on a From that _die answers.
        self.exit_waiters: dict[From, None] | None = None
        #: The task waiting in otp.start for init to finish (None once it was told).
        self.starter: Task | None = None
        #: The process the starter links the new one to (start_link): unlinked if the start
        #: is cancelled.
        self.starter_link: _Process | None = None
        #: Set when init refused (Stop) or declined (Ignore): what the start returns.
        self.refusal: outcome.Outcome[Any] | None = None
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
        # The process is the abort function of the two waits that involve it (no bound-method
        # object per process): its own wait for mail, and, while it starts, its starter's.
        if self.status != STARTING:
            self.waiting = False
            return Abort.SUCCEEDED
        # The starter was cancelled: the half-started process must not outlive the call. As
        # proc_lib does on a start timeout, unlink first: the starter is not told of that kill.
        if self.starter is not None:
            self.starter = None
            if self.starter_link is not None:
                unlink(self.starter_link, self)
            self.kill("killed")
        return Abort.SUCCEEDED

    def _tell_starter(self, result: outcome.Outcome[Any]) -> None:
        task = self.starter
        if task is not None:
            self.starter = None
            reschedule(task, result)

    # -- signals -----------------------------------------------------------------------------

    def kill(self, reason: Any) -> None:
        """End the process at its next checkpoint with ``reason``; terminate does not run."""
        if self.status == DEAD:
            return
        if self.kill_reason is None:
            self.kill_reason = reason
        scope = self.scope
        if scope is not None:
            scope.cancel()
        elif self.waiting:
            # Idle without a scope (otp._loop.run): only otp's own wait can be interrupted,
            # and the process reads kill_reason when it wakes. (Busy without a scope, it is
            # running an init that cannot suspend, and reads it when that returns.)
            self._wake()

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

    async def wait_dead(self, timeout: float = INFINITY) -> bool:
        """Wait until the process has exited, for at most ``timeout`` seconds (> 0); whether
        it has.

        The wait is a call envelope the runtime's timer task fails after ``timeout``, as a
        call's deadline is kept: no cancel scope per wait (a shutdown waits on every process
        it stops)."""
        if self.status == DEAD:
            await trio.lowlevel.checkpoint()
            return True
        rt = self.runtime
        now = rt.now()
        waiter = From(None, _CALL, 0, 0, None, None, now, current_task())
        if timeout != INFINITY:
            rt.timers.add_call(waiter, timeout, now)
        waiters = self.exit_waiters
        if waiters is None:
            waiters = self.exit_waiters = {}
        waiters[waiter] = None
        try:
            await wait_task_rescheduled(waiter)
        except Expired:
            return False
        finally:
            waiters.pop(waiter, None)
        return True

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
            if timeout != INFINITY and not await self.wait_dead(timeout):
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

    # -- dying -------------------------------------------------------------------------------

    def _fail_pending(self, reason: Any) -> None:
        pid = self.pid
        for env in self.queue or ():
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
        if self.starter is not None:
            # init never finished: the start fails with the reason (or returns None: Ignore).
            if self.refusal is not None:
                self._tell_starter(self.refusal)
            else:
                exc = reason if isinstance(reason, BaseException) else NoProcess(pid, reason)
                self._tell_starter(outcome.Error(exc))
        current = self.current
        if started and current is not None and current.kind is _CALL:
            current._fail(CallError(pid, reason))  # type: ignore[attr-defined]
        self.current = None
        self._fail_pending(reason)
        self.queue = None
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
        if self.exit_waiters:
            waiters, self.exit_waiters = self.exit_waiters, None
            for waiter in waiters:
                waiter._reply(None)
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
