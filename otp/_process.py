"""Processes, the runtime they live in, and the GenServer behaviour.

A *process* is a Trio task with a pid, a bounded user queue, an unbounded system lane, links,
monitors and an optional registered name. Every process runs a :class:`GenServer`:

* ``init(*args, **kwargs)`` runs inside the new process before :func:`start` returns. If it
  raises, :func:`start` raises the same exception and nothing is left running. It may return
  ``None`` or :class:`Continue`.
* ``handle_call(request, from_)``: the return value is the reply. Return :data:`NoReply` and
  call :func:`reply` later for a deferred reply; :class:`Continue` (with ``reply=`` to reply
  now) to run ``handle_continue`` before the next message; :class:`Stop` to stop. An exception
  is raised in the caller as :class:`CallError` and crashes the server.
* ``handle_cast(msg)`` and ``handle_info(msg)`` (raw sends, :class:`Down`, trapped
  :class:`Exit`, bus events) may return ``None``, :class:`Continue` or :class:`Stop`.
* ``terminate(reason)`` runs when the server stops normally (:func:`stop` or :class:`Stop`),
  when its supervisor shuts it down, and after a crash (with the exception as reason). It does
  not run after ``init`` fails, after a kill, or when an untrapped exit signal from a link
  takes the process down: those end the process at once, as in Erlang.

Exit reasons are ``"normal"``, ``"shutdown"``, ``("shutdown", detail)``, ``"killed"`` (the
reason of a process that received the untrappable ``"kill"`` signal or was cancelled from
outside), ``"noproc"`` (monitor or link of a process that does not exist) or the exception
that crashed it.

Calls park the caller on a one-shot reply slot (the :class:`From` envelope). Timeouts are kept
by one timer task per runtime, not a cancel scope per call: that keeps a call within a few
microseconds of a bare Trio park/reschedule round trip. When a server exits, every caller still
waiting on it fails at once with :class:`CallError` carrying the exit reason.

Cancellation is cooperative: a kill or a shutdown timeout cancels the process's scope, which
takes effect at the handler's next checkpoint. A CPU-bound handler delays it.
"""

from __future__ import annotations

import contextvars
import heapq
import itertools
import logging
import math
import random
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import asynccontextmanager
from time import perf_counter_ns
from typing import TYPE_CHECKING, Any, ClassVar, Final, TypeVar

import attrs
import outcome
import trio
from trio.lowlevel import Abort, Task, current_task, reschedule, wait_task_rescheduled

from ._envelope import Envelope, Kind, _current_envelope
from ._errors import (
    AlreadyRegistered,
    CallError,
    CallTimeout,
    MailboxFull,
    NoProcess,
    OtpError,
)
from ._mailbox import DEFAULT_MAILBOX, Mailbox, MailboxStatistics, Overflow

if TYPE_CHECKING:
    pass

logger = logging.getLogger("otp")

INFINITY: Final = math.inf
"""A timeout or shutdown time that never runs out."""

_CALL, _CAST, _INFO = Kind.CALL, Kind.CAST, Kind.INFO

# Process states
STARTING, RUNNING, EXITING, DEAD = 0, 1, 2, 3
_STATUS_NAMES = ("starting", "running", "exiting", "dead")

# Reply slot states
_PENDING, _DONE, _TIMED_OUT, _ABANDONED = 0, 1, 2, 3

#: Number of histogram buckets: bucket k counts handler times below 1.024 µs * 2**k, the last
#: one everything slower (about 34 s and up).
HIST_BUCKETS: Final = 26
EMPTY_HISTOGRAM: Final = (0,) * HIST_BUCKETS

#: A server that always has mail yields to the scheduler once per this many messages.
BURST: Final = 16
#: A cast or send that finds room at once yields once per this many sends of the runtime.
SEND_BURST: Final = 16


# --------------------------------------------------------------------------------------------
# Public value types


class Pid:
    """A process identifier. Hashable and ordered by creation; ``repr`` is ``<0.N.0>``."""

    __slots__ = ("_proc", "id")

    def __init__(self, id: int, proc: _Process) -> None:
        self.id = id
        self._proc = proc

    def __repr__(self) -> str:
        return f"<0.{self.id}.0>"

    def __eq__(self, other: object) -> bool:
        return type(other) is Pid and other.id == self.id

    def __lt__(self, other: Pid) -> bool:
        return self.id < other.id

    def __hash__(self) -> int:
        return hash(self.id)

    def is_alive(self) -> bool:
        """True until the process has fully exited."""
        return self._proc.status != DEAD


@attrs.frozen
class Down:
    """Delivered to ``handle_info`` of a monitoring process when the monitored one exits."""

    ref: int
    pid: Any
    reason: Any


@attrs.frozen
class Exit:
    """Delivered to ``handle_info`` of a process that traps exits when a linked one exits."""

    pid: Pid | None
    reason: Any


class _Directive:
    __slots__ = ()


class _NoReplyType(_Directive):
    __slots__ = ()

    def __repr__(self) -> str:
        return "otp.NoReply"


NoReply: Final = _NoReplyType()
"""Return from ``handle_call`` to reply later with :func:`reply`."""

_NOTHING: Final[Any] = object()


@attrs.frozen
class Continue(_Directive):
    """Return from ``init`` or a handler: ``handle_continue(arg)`` runs before the next message.

    From ``handle_call``, ``reply=`` sends that reply first; without it the reply is deferred.
    """

    arg: Any = None
    reply: Any = attrs.field(default=_NOTHING, kw_only=True, repr=False)


@attrs.frozen
class Stop(_Directive):
    """Return from a handler to stop: ``terminate(reason)`` runs, then the process exits.

    From ``handle_call``, ``reply=`` sends that reply before terminating.
    """

    reason: Any = "normal"
    reply: Any = attrs.field(default=_NOTHING, kw_only=True, repr=False)


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


# --------------------------------------------------------------------------------------------
# Reply slots


@attrs.define(slots=True, eq=False, repr=False, init=False)
class From(Envelope):  # type: ignore[override]
    """The envelope of a call, and the handle its server replies through (``from_``).

    Pass it to :func:`reply` to answer a call whose handler returned :data:`NoReply`.
    """

    task: Task | None
    server: _Process | None
    target: Any
    timeout: float
    state: int
    deadline: float
    bucket: dict[From, None] | None

    def __init__(
        self,
        message: Any,
        kind: Kind,
        correlation_id: int,
        trace_id: int,
        causation_id: int | None,
        sender: Pid | None,
        sent_at: float,
        task: Task | None = None,
        server: _Process | None = None,
        target: Any = None,
        timeout: float = INFINITY,
    ) -> None:
        self.message = message
        self.kind = kind
        self.correlation_id = correlation_id
        self.trace_id = trace_id
        self.causation_id = causation_id
        self.sender = sender
        self.sent_at = sent_at
        self.task = task
        self.server = server
        self.target = target
        self.timeout = timeout
        self.state = _PENDING
        self.deadline = INFINITY
        self.bucket = None

    def _settle(self, result: outcome.Outcome[Any]) -> None:
        if self.state == _PENDING:
            self.state = _DONE
            bucket = self.bucket
            if bucket is not None:
                del bucket[self]
                self.bucket = None
            task = self.task
            if task is not None:
                reschedule(task, result)

    def _reply(self, value: Any) -> None:
        self._settle(outcome.Value(value))

    def _fail(self, exc: BaseException) -> None:
        self._settle(outcome.Error(exc))

    def _expire(self) -> None:
        # Called by the timer after it has removed us from the bucket.
        if self.state == _PENDING:
            self.state = _TIMED_OUT
            self.bucket = None
            if self.task is not None:
                reschedule(self.task, outcome.Error(CallTimeout(self.target, self.timeout)))

    def _abort(self, _raise_cancel: Any) -> Abort:
        # The caller was cancelled while waiting: the request may still be handled, the reply
        # is dropped.
        if self.state == _PENDING:
            self.state = _ABANDONED
            bucket = self.bucket
            if bucket is not None:
                del bucket[self]
                self.bucket = None
        return Abort.SUCCEEDED

    @property
    def pending(self) -> bool:
        """True while the caller is still waiting for a reply."""
        return self.state == _PENDING


class TimerRef:
    """A pending :func:`send_after`; :func:`cancel_timer` stops it."""

    __slots__ = ("cancelled", "fired", "message", "parent", "sender", "target", "timers")

    def __init__(self, target: Any, message: Any, sender: Pid | None,
                 parent: Envelope | None) -> None:
        self.target = target
        self.message = message
        self.sender = sender
        self.parent = parent
        self.cancelled = False
        self.fired = False
        self.timers: _Timers | None = None


class _Timers:
    """Every deadline of a runtime, kept by one task.

    Call timeouts are grouped by timeout value, so each group is ordered by deadline:
    registering and settling a call are dict operations. :func:`send_after` timers sit in a
    heap ordered by (deadline, sequence number). A cancelled timer stays in the heap (without
    its message) until its deadline, unless cancelled entries come to outnumber live ones:
    then the heap is rebuilt without them, so cancelling never holds memory for long. One
    task sleeps until the earliest deadline, fails the calls that reached theirs and delivers
    due timers.
    """

    __slots__ = ("buckets", "cancelled", "heap", "scope", "seq", "wake_at")

    def __init__(self) -> None:
        self.buckets: dict[float, dict[From, None]] = {}
        self.heap: list[tuple[float, int, TimerRef]] = []
        self.seq = itertools.count()
        self.scope: trio.CancelScope | None = None
        self.wake_at = INFINITY
        #: How many entries of ``heap`` are cancelled timers.
        self.cancelled = 0

    def _wake_by(self, deadline: float) -> None:
        if deadline < self.wake_at:
            self.wake_at = deadline
            if self.scope is not None:
                self.scope.deadline = deadline

    def add(self, env: From, timeout: float, now: float) -> None:
        bucket = self.buckets.get(timeout)
        if bucket is None:
            bucket = self.buckets[timeout] = {}
        deadline = now + timeout
        env.deadline = deadline
        env.bucket = bucket
        bucket[env] = None
        self._wake_by(deadline)

    def add_timer(self, ref: TimerRef, deadline: float) -> None:
        ref.timers = self
        heapq.heappush(self.heap, (deadline, next(self.seq), ref))
        self._wake_by(deadline)

    def cancel(self, ref: TimerRef) -> None:
        """Count a newly cancelled timer; compact the heap once most entries are cancelled."""
        self.cancelled += 1
        if self.cancelled * 2 > len(self.heap):
            self.heap = [entry for entry in self.heap if not entry[2].cancelled]
            heapq.heapify(self.heap)
            self.cancelled = 0

    async def run(self, rt: Runtime) -> None:
        while True:
            with trio.CancelScope(deadline=self.wake_at) as scope:
                self.scope = scope
                await trio.sleep_forever()
            self.scope = None
            now = trio.current_time()
            wake_at = INFINITY
            for timeout, bucket in list(self.buckets.items()):
                while bucket:
                    env = next(iter(bucket))
                    if env.deadline > now:
                        wake_at = min(wake_at, env.deadline)
                        break
                    del bucket[env]
                    env._expire()
                if not bucket:
                    del self.buckets[timeout]
            heap = self.heap
            while heap and heap[0][0] <= now:
                _, _, ref = heapq.heappop(heap)
                if ref.cancelled:
                    self.cancelled -= 1
                else:
                    ref.fired = True
                    _fire(rt, ref, now)
                    ref.message = ref.parent = None
            if heap:
                wake_at = min(wake_at, heap[0][0])
            self.wake_at = wake_at


def _fire(rt: Runtime, ref: TimerRef, now: float) -> None:
    try:
        proc = _resolve(ref.target)
    except NoProcess:
        return
    if proc.status == DEAD:
        return
    parent = ref.parent
    cid = rt.next_id()
    env = Envelope(
        ref.message,
        _INFO,
        cid,
        cid if parent is None else parent.trace_id,
        None if parent is None else parent.correlation_id,
        ref.sender,
        now,
    )
    try:
        proc.offer(env)  # lost when the mailbox refuses it, like a send to a full mailbox
    except MailboxFull:
        pass


# --------------------------------------------------------------------------------------------
# System-lane items


@attrs.define(slots=True, eq=False)
class _StopRequest:
    reason: Any


@attrs.define(slots=True, eq=False)
class _ExitSignal:
    sender: Pid | None
    reason: Any


@attrs.define(slots=True, eq=False)
class _SysCall:
    fn: Callable[[Any], Coroutine[Any, Any, Any]]
    env: From


# --------------------------------------------------------------------------------------------
# The runtime


class Runtime:
    """Everything processes share: the nursery they run in, names, the bus, ids, timers.

    Create one with :func:`runtime`; everything started inside the ``async with`` block belongs
    to it.
    """

    def __init__(self, seed: int | None = None) -> None:
        self.nursery: trio.Nursery | None = None
        self.procs: dict[int, _Process] = {}
        self.roots: dict[_Process, None] = {}
        self.names: dict[Any, _Process] = {}
        self.topics: dict[Any, dict[_Process, None]] = {}
        #: The bus topics of each subscribed process (see :mod:`otp.bus`).
        self.subscriptions: dict[_Process, dict[Any, None]] = {}
        self._pids = itertools.count(1)
        self._ids = itertools.count(1)
        self.next_id: Callable[[], int] = self._ids.__next__
        self.random = random.Random(seed)
        self.timers = _Timers()
        self.closing = False
        #: Hook for tracing/fault injection; None outside a simulation (costs one check).
        self.tracer: Any = None
        self.sends = 0

    def processes(self) -> list[Pid]:
        """Pids of every live process, oldest first."""
        return [p.pid for p in self.procs.values()]


_current_runtime: contextvars.ContextVar[Runtime | None] = contextvars.ContextVar(
    "otp_runtime", default=None
)
_current_proc: contextvars.ContextVar[_Process | None] = contextvars.ContextVar(
    "otp_process", default=None
)


def current_runtime() -> Runtime:
    """The runtime of the calling context; raises :class:`OtpError` outside one."""
    rt = _current_runtime.get()
    if rt is None:
        raise OtpError("no otp runtime: call this inside 'async with otp.runtime():'")
    return rt


@asynccontextmanager
async def runtime(*, seed: int | None = None) -> AsyncIterator[Runtime]:
    """Open a runtime; processes started inside run until the block exits.

    On exit every process still running is shut down, the most recently started first (as
    Erlang stops applications): ``terminate("shutdown")`` runs, with 5 s for a worker and no
    limit for a supervisor, then anything left is killed.
    """
    rt = Runtime(seed)
    token = _current_runtime.set(rt)
    body_error: BaseException | None = None
    try:
        async with trio.open_nursery() as nursery:
            rt.nursery = nursery
            nursery.start_soon(rt.timers.run, rt, name="otp.timers")
            try:
                yield rt
            except BaseException as exc:
                # Re-raised below, outside the nursery, so the caller sees the body's own
                # exception rather than an ExceptionGroup.
                body_error = exc
            finally:
                rt.closing = True
                with trio.CancelScope(shield=True):
                    for proc in reversed(list(rt.roots)):
                        await _shutdown_process(proc, proc.default_shutdown())
                nursery.cancel_scope.cancel()
    finally:
        _current_runtime.reset(token)
    if body_error is not None:
        raise body_error


async def _shutdown_process(proc: _Process, timeout: float) -> None:
    """Ask ``proc`` to shut down; after ``timeout`` seconds kill it. Returns once it is dead."""
    if proc.status == DEAD:
        await trio.lowlevel.checkpoint()
        return
    if timeout <= 0:
        proc.kill("killed")
    else:
        proc.system(_StopRequest("shutdown"))
        if timeout != INFINITY:
            with trio.move_on_after(timeout):
                await proc.wait_dead()
            if proc.status != DEAD:
                proc.kill("killed")
    await proc.wait_dead()


# --------------------------------------------------------------------------------------------
# The process


class _Starter:
    __slots__ = ("link", "proc", "state", "task")

    def __init__(self, task: Task, proc: _Process, link: _Process | None) -> None:
        self.task = task
        self.proc = proc
        self.link = link
        self.state = _PENDING

    def done(self, result: outcome.Outcome[Any]) -> None:
        if self.state == _PENDING:
            self.state = _DONE
            reschedule(self.task, result)

    def abort(self, _raise_cancel: Any) -> Abort:
        # The starter was cancelled: the half-started process must not outlive the call. As
        # proc_lib does on a start timeout, unlink first: the starter is not told of that kill.
        if self.state == _PENDING:
            self.state = _ABANDONED
            if self.link is not None:
                _unlink(self.link, self.proc)
            self.proc.kill("killed")
        return Abort.SUCCEEDED


class _Process:
    """Internal state of one process. Users see only its :class:`Pid`."""

    __slots__ = (
        "blocked",
        "capacity",
        "cleanups",
        "cls",
        "current",
        "deferred",
        "dropped",
        "exit_event",
        "exit_reason",
        "handled",
        "hist",
        "hist_ns",
        "hooked",
        "kill_reason",
        "links",
        "monitored_by",
        "monitors",
        "name",
        "nursery",
        "overflow",
        "parent",
        "pid",
        "queue",
        "runtime",
        "scope",
        "server",
        "starter",
        "status",
        "sup_child",
        "sysq",
        "task",
        "trap_exit",
        "waiting",
    )

    def __init__(self, rt: Runtime, cls: type[GenServer], name: Any, mailbox: Mailbox) -> None:
        self.runtime = rt
        self.cls = cls
        self.pid = Pid(next(rt._pids), self)
        self.name = name
        self.capacity = mailbox.capacity
        self.overflow = mailbox.overflow
        self.queue: deque[Envelope] = deque()
        self.sysq: deque[Any] | None = None  # created by the first system message
        self.blocked: deque[list[Any]] | None = None
        self.waiting = False
        self.task: Task | None = None
        self.scope: trio.CancelScope | None = None
        self.nursery: trio.Nursery | None = None
        self.server: GenServer | None = None
        self.status = STARTING
        self.exit_reason: Any = None
        self.kill_reason: Any = None
        # dicts, not sets: iteration follows insertion, so a seeded simulation replays exactly
        self.links: dict[_Process, None] | None = None
        self.monitored_by: dict[int, _Process] | None = None
        self.monitors: dict[int, _Process] | None = None
        self.trap_exit = False
        self.current: Envelope | None = None
        self.deferred: dict[From, None] | None = None
        self.cleanups: dict[Callable[[_Process], None], None] | None = None
        self.exit_event: trio.Event | None = None
        self.starter: _Starter | None = None
        self.parent: _Process | None = None
        self.sup_child: Any = None
        self.handled = 0
        self.dropped = 0
        self.hist: list[int] | None = None  # created by the first handled message
        self.hist_ns = 0
        #: Set in a simulation: deliveries go through the runtime's tracer (fault injection).
        self.hooked = rt.tracer is not None

    def __repr__(self) -> str:
        return f"<process {self.pid!r} {self.cls.__name__} name={self.name!r}>"

    # -- delivery ----------------------------------------------------------------------------

    def _wake(self) -> None:
        if self.waiting:
            self.waiting = False
            reschedule(self.task)  # type: ignore[arg-type]

    def __call__(self, _raise_cancel: Any) -> Abort:
        # The process is its own abort function while it waits for mail (no bound-method
        # object per process).
        self.waiting = False
        return Abort.SUCCEEDED

    def offer(self, env: Envelope, hook: bool = True) -> bool:
        """Put ``env`` in the user queue if the overflow policy allows it without waiting.

        In a simulation the runtime's tracer sees the message first (``hook=False`` skips it).

        Returns False when the sender must wait (``BLOCK`` and full); raises MailboxFull under
        ``FAIL`` (and for a call under ``DROP_NEWEST``).
        """
        if self.hooked and hook:
            return bool(self.runtime.tracer.offer(self, env))
        queue = self.queue
        if len(queue) < self.capacity and not self.blocked:
            queue.append(env)
            if self.waiting:
                self.waiting = False
                reschedule(self.task)  # type: ignore[arg-type]
            return True
        overflow = self.overflow
        if overflow is Overflow.BLOCK:
            return False
        self.dropped += 1
        if overflow is Overflow.DROP_OLDEST:
            old = queue.popleft()
            if old.kind is _CALL:
                old._fail(MailboxFull(self.pid, self.capacity))  # type: ignore[attr-defined]
            queue.append(env)
            return True
        if overflow is Overflow.DROP_NEWEST and env.kind is not _CALL:
            return True
        raise MailboxFull(self.pid, self.capacity)

    def force(self, env: Envelope) -> None:
        """Append to the user queue regardless of capacity (monitor notices)."""
        if self.status == DEAD:
            return
        self.queue.append(env)
        self._wake()

    def system(self, item: Any) -> None:
        """Put ``item`` on the system lane, which is read before the user queue."""
        if self.status == DEAD:
            return
        if self.sysq is None:
            self.sysq = deque()
        self.sysq.append(item)
        self._wake()

    def add_blocked(self, env: Envelope, task: Task | None) -> list[Any]:
        entry = [env, task]
        if self.blocked is None:
            self.blocked = deque()
        self.blocked.append(entry)
        return entry

    def _unblock(self) -> None:
        blocked = self.blocked
        assert blocked is not None
        while blocked:
            env, task = blocked.popleft()
            if task is _CANCELLED:
                continue
            if env.kind is _CALL and env.state != _PENDING:
                continue
            self.queue.append(env)
            if task is not None:
                reschedule(task)
            return

    # -- lifecycle ---------------------------------------------------------------------------

    def kill(self, reason: Any) -> None:
        """End the process at its next checkpoint with ``reason``; terminate does not run."""
        if self.status == DEAD:
            return
        if self.kill_reason is None:
            self.kill_reason = reason
        if self.scope is not None:
            self.scope.cancel()

    async def wait_dead(self) -> None:
        if self.status == DEAD:
            await trio.lowlevel.checkpoint()
            return
        if self.exit_event is None:
            self.exit_event = trio.Event()
        await self.exit_event.wait()

    def default_shutdown(self) -> float:
        return INFINITY if self.cls._otp_supervisor else 5.0

    def add_cleanup(self, fn: Callable[[_Process], None]) -> None:
        """Run ``fn(proc)`` when the process exits. Adding an equal ``fn`` again (the same
        function, or the same bound method of the same object) is a no-op, so a registry or a
        bus adds one cleanup per process however often the process joins and leaves."""
        if self.cleanups is None:
            self.cleanups = {}
        self.cleanups[fn] = None

    def statistics(self) -> ProcessStatistics:
        return ProcessStatistics(
            pid=self.pid,
            name=self.name,
            behaviour=self.cls.__qualname__,
            status=_STATUS_NAMES[self.status],
            mailbox=MailboxStatistics(
                capacity=self.capacity,
                overflow=self.overflow,
                depth=len(self.queue),
                system_depth=len(self.sysq) if self.sysq else 0,
                blocked_senders=len(self.blocked) if self.blocked else 0,
                dropped=self.dropped,
            ),
            messages_handled=self.handled,
            histogram=tuple(self.hist) if self.hist else EMPTY_HISTOGRAM,
            handler_seconds_total=self.hist_ns / 1e9,
            links=len(self.links) if self.links else 0,
            monitors=len(self.monitored_by) if self.monitored_by else 0,
            trap_exit=self.trap_exit,
        )

    async def main(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        self.task = current_task()
        _current_proc.set(self)
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
                reason = _unwrap_group(exc)
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
        _current_envelope.set(None)
        self.status = RUNNING
        if self.starter is not None:
            self.starter.done(outcome.Value(self.pid))
            self.starter = None
        try:
            if isinstance(result, Continue):
                stop = await self._continue(server, result)
                if stop is not None:
                    return await self._terminate(server, stop.reason)
            # The receive loop is inline, not a method: one coroutine frame less per process
            # (each is an object the garbage collector tracks, 100,000 processes over).
            queue = self.queue
            hist = self.hist
            env_var = _current_envelope
            tracer = self.runtime.tracer
            burst = 0
            while True:
                sysq = self.sysq
                if sysq:
                    item = sysq.popleft()
                    stop = await self._system(server, item)
                    if stop is not None:
                        return stop
                    continue
                if not queue:
                    self.waiting = True
                    await wait_task_rescheduled(self)
                    burst = 0
                    continue
                if burst >= BURST:
                    # Messages kept coming without the server ever parking: yield so a busy
                    # server never starves the rest of the program (and so a kill can land).
                    # Once per BURST messages, not per message: under load a yield per message
                    # halves throughput and doubles latency.
                    burst = 0
                    await trio.lowlevel.checkpoint()
                    continue
                burst += 1
                env = queue.popleft()
                if self.blocked:
                    self._unblock()
                self.current = env
                token = env_var.set(env)
                t0 = perf_counter_ns()
                kind = env.kind
                try:
                    if tracer is not None and tracer.handler_faults:
                        await tracer.before_handle(self, env)
                    if kind is _CALL:
                        result = await server.handle_call(env.message, env)  # type: ignore[arg-type]
                        if not isinstance(result, _Directive):
                            env._reply(result)  # type: ignore[attr-defined]
                            result = None
                    elif kind is _CAST:
                        result = await server.handle_cast(env.message)
                    else:
                        result = await server.handle_info(env.message)
                finally:
                    env_var.reset(token)
                    dt = perf_counter_ns() - t0
                    self.hist_ns += dt
                    b = (dt >> 10).bit_length()
                    if hist is None:
                        hist = self.hist = [0] * HIST_BUCKETS
                    hist[b if b < HIST_BUCKETS else HIST_BUCKETS - 1] += 1
                    self.handled += 1
                self.current = None
                if result is not None:
                    stop = await self._directive(server, env, result)
                    if stop is not None:
                        return stop
        except Exception as exc:
            current = self.current
            if current is not None and current.kind is _CALL:
                current._fail(CallError(self.pid, exc))  # type: ignore[attr-defined]
            logger.error("process %r (%s) crashed", self.pid, self.cls.__qualname__, exc_info=exc)
            return await self._terminate(server, exc)

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

    async def _continue(self, server: GenServer, directive: Continue) -> Stop | None:
        result: Any = directive
        while isinstance(result, Continue):
            result = await server.handle_continue(result.arg)
        if isinstance(result, Stop):
            return result
        return None

    async def _directive(self, server: GenServer, env: Envelope, result: Any) -> Any:
        if result is NoReply:
            if env.kind is _CALL:
                if self.deferred is None:
                    self.deferred = {}
                self.deferred[env] = None  # type: ignore[index]
            return None
        if isinstance(result, Continue | Stop) and env.kind is _CALL:
            if result.reply is not _NOTHING:
                env._reply(result.reply)  # type: ignore[attr-defined]
            else:
                if self.deferred is None:
                    self.deferred = {}
                self.deferred[env] = None  # type: ignore[index]
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
        if kind is _StopRequest:
            return await self._terminate(server, item.reason)
        if kind is _ExitSignal:
            env = Envelope(
                Exit(item.sender, item.reason),
                _INFO,
                self.runtime.next_id(),
                self.runtime.next_id(),
                None,
                item.sender,
                trio.current_time(),
            )
            token = _current_envelope.set(env)
            try:
                result = await server.handle_info(env.message)
            finally:
                _current_envelope.reset(token)
            if result is not None:
                return await self._directive(server, env, result)
            return None
        if kind is _SysCall:
            token = _current_envelope.set(item.env)
            try:
                value = await item.fn(server)
            except Exception as exc:
                item.env._fail(exc)
            else:
                item.env._reply(value)
            finally:
                _current_envelope.reset(token)
            return None
        result = await server._otp_system(item)
        if isinstance(result, Stop):
            return await self._terminate(server, result.reason)
        return None

    def _fail_pending(self, reason: Any) -> None:
        pid = self.pid
        for env in self.queue:
            if env.kind is _CALL:
                env._fail(CallError(pid, reason))  # type: ignore[attr-defined]
        for item in self.sysq or ():
            if type(item) is _SysCall:
                item.env._fail(CallError(pid, reason))
        if self.blocked:
            for entry in self.blocked:
                env, task = entry
                if task is _CANCELLED:
                    continue
                if env.kind is _CALL:
                    env._fail(CallError(pid, reason))
                elif task is not None:
                    entry[1] = _CANCELLED
                    reschedule(task)  # the message is lost, as a send to a dead process is
            self.blocked.clear()
        if self.deferred:
            for env in self.deferred:
                env._fail(CallError(pid, reason))
            self.deferred = None

    def _die(self, reason: Any) -> None:
        rt = self.runtime
        self.status = DEAD
        self.exit_reason = reason
        if self.starter is not None:
            # init never finished: the start call fails with the reason.
            exc = reason if isinstance(reason, BaseException) else NoProcess(self.pid, reason)
            self.starter.done(outcome.Error(exc))
            self.starter = None
        current = self.current
        if current is not None and current.kind is _CALL:
            current._fail(CallError(self.pid, reason))  # type: ignore[attr-defined]
            self.current = None
        self._fail_pending(reason)
        self.queue.clear()
        self.sysq = None
        rt.procs.pop(self.pid.id, None)
        rt.roots.pop(self, None)
        if self.name is not None and rt.names.get(self.name) is self:
            del rt.names[self.name]
        if self.cleanups:
            cleanups, self.cleanups = self.cleanups, None
            for fn in cleanups:
                try:
                    fn(self)
                except Exception as exc:
                    # A user registry's unregister_name, say: log it and finish dying, so
                    # links, monitors and the parent still hear of this exit.
                    logger.error("cleanup %r of %r raised", fn, self.pid, exc_info=exc)
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
                _exit_signal(other, self.pid, reason)
        if self.monitored_by:
            watchers, self.monitored_by = self.monitored_by, None
            for ref, watcher in watchers.items():
                if watcher.monitors:
                    watcher.monitors.pop(ref, None)
                watcher.force(self._info_env(Down(ref, self.pid, reason)))
        tracer = rt.tracer
        if tracer is not None:
            tracer.exited(self, reason)
        if self.parent is not None:
            self.parent.system(_ChildExited(self, reason))
        if self.exit_event is not None:
            self.exit_event.set()
        self.server = None

    def _info_env(self, message: Any) -> Envelope:
        rt = self.runtime
        parent = _current_envelope.get()
        cid = rt.next_id()
        return Envelope(
            message,
            _INFO,
            cid,
            parent.trace_id if parent is not None else cid,
            parent.correlation_id if parent is not None else None,
            self.pid,
            trio.current_time(),
        )


_CANCELLED: Final[Any] = object()


def _unwrap_group(exc: BaseException) -> BaseException:
    """The one exception inside nested single-exception groups (as Trio nurseries raise)."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


@attrs.define(slots=True, eq=False)
class _ChildExited:
    proc: _Process
    reason: Any


def _exit_signal(target: _Process, sender: Pid | None, reason: Any) -> None:
    """Deliver an exit signal, as Erlang does: kill is untrappable, normal is ignored unless
    trapped, anything else ends an untrapping process at once or is delivered as Exit."""
    if target.status == DEAD:
        return
    if reason == "kill":
        target.kill("killed")
    elif target.trap_exit:
        target.system(_ExitSignal(sender, reason))
    elif reason != "normal":
        target.kill(reason)


# --------------------------------------------------------------------------------------------
# GenServer


class GenServer:
    """Base class of a server process. Override the callbacks you need; all are async.

    The instance is created by the runtime inside the new process (``__init__`` is not called
    with arguments: put set-up in :meth:`init`).
    """

    #: Supervisors set this: the process gets a nursery for its children.
    _otp_supervisor: ClassVar[bool] = False
    #: Set to True for a server that runs background tasks (an HTTP listener, a poller): the
    #: process gets a nursery, :func:`start_task` / :func:`start_task_soon` start tasks in it,
    #: and they are cancelled when the process exits (after ``terminate``).
    owns_tasks: ClassVar[bool] = False

    async def init(self, *args: Any, **kwargs: Any) -> Any:
        """Runs before :func:`start` returns. Return None or :class:`Continue`."""
        await trio.lowlevel.checkpoint()

    async def handle_call(self, request: Any, from_: From) -> Any:
        """Answer a call: the return value is the reply. See the module docs for directives."""
        await trio.lowlevel.checkpoint()
        raise UnexpectedMessage(self, "call", request)

    async def handle_cast(self, msg: Any) -> Any:
        """Handle a cast. Return None, :class:`Continue` or :class:`Stop`."""
        await trio.lowlevel.checkpoint()
        raise UnexpectedMessage(self, "cast", msg)

    async def handle_info(self, msg: Any) -> Any:
        """Handle any other message: sends, :class:`Down`, :class:`Exit`, bus events.

        The default logs the message and carries on, as Elixir's does.
        """
        await trio.lowlevel.checkpoint()
        logger.warning("%s %r received unexpected message %r", type(self).__name__, self_(), msg)

    async def handle_continue(self, arg: Any) -> Any:
        """Runs after a callback returned ``Continue(arg)``, before the next message."""
        await trio.lowlevel.checkpoint()
        raise UnexpectedMessage(self, "continue", arg)

    async def terminate(self, reason: Any) -> None:
        """Runs on a normal stop, a shutdown by the supervisor and after a crash."""
        await trio.lowlevel.checkpoint()

    async def _otp_system(self, item: Any) -> Any:
        await trio.lowlevel.checkpoint()
        if isinstance(item, _ChildExited):
            return None  # a process that is not a supervisor ignores its children's exits
        raise OtpError(f"unknown system message {item!r}")


class UnexpectedMessage(OtpError):
    """A GenServer received a call, cast or continue it has no handler for."""

    def __init__(self, server: GenServer, kind: str, msg: Any) -> None:
        super().__init__(
            f"{type(server).__name__} received {kind} {msg!r} but does not implement "
            f"handle_{kind}"
        )


G = TypeVar("G", bound=GenServer)


# --------------------------------------------------------------------------------------------
# The API


def self_() -> Pid | None:
    """The pid of the calling process, or None outside any process (``otp.self()``)."""
    proc = _current_proc.get()
    return None if proc is None else proc.pid


def _current_process() -> _Process:
    proc = _current_proc.get()
    if proc is None:
        raise OtpError("this must be called from inside an otp process")
    return proc


def _resolve(target: Any) -> _Process:
    """The live-or-dead process behind a target; NoProcess for an unknown name."""
    if type(target) is Pid:
        return target._proc
    rt = current_runtime()
    if isinstance(target, str):
        proc = rt.names.get(target)
    else:
        lookup = getattr(target, "_otp_lookup", None)
        if lookup is None:
            raise TypeError(f"a target is a Pid, a registered name or otp.via(...), not {target!r}")
        proc = lookup()
    if proc is None:
        raise NoProcess(target)
    return proc


def _task_nursery() -> tuple[_Process, trio.Nursery]:
    proc = _current_process()
    if proc.nursery is None or proc.cls._otp_supervisor:
        raise OtpError(
            f"{proc.cls.__qualname__} cannot start tasks: set owns_tasks = True on the class"
        )
    return proc, proc.nursery


async def _guard_task(proc: _Process, fn: Callable[..., Any], args: tuple[Any, ...],
                      task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED) -> None:
    try:
        if task_status is trio.TASK_STATUS_IGNORED:
            await fn(*args)
        else:
            await fn(*args, task_status=task_status)
    except Exception as exc:
        # A failing task takes its process down like a linked process would: as an exit
        # signal with the exception as reason (an Exit message if the process traps exits).
        logger.error("task %r of %r failed", fn, proc.pid, exc_info=exc)
        _exit_signal(proc, None, exc)


def start_task_soon(fn: Callable[..., Awaitable[Any]], *args: Any) -> None:
    """Start ``fn(*args)`` as a task of the calling process (whose class sets
    ``owns_tasks = True``). It is cancelled when the process exits; if it raises, the
    process receives an exit signal with that exception as reason."""
    proc, nursery = _task_nursery()
    nursery.start_soon(_guard_task, proc, fn, args)


async def start_task(fn: Callable[..., Awaitable[Any]], *args: Any) -> Any:
    """Like :func:`start_task_soon` for a task that takes ``task_status`` (as
    ``nursery.start`` does): returns once it calls ``task_status.started(value)``, with that
    value. An exception before that is raised here."""
    proc, nursery = _task_nursery()

    async def run(*, task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED) -> None:
        started = False

        def report(value: Any = None) -> None:
            nonlocal started
            started = True
            task_status.started(value)

        class _Status:
            def started(self, value: Any = None) -> None:
                report(value)

        try:
            await fn(*args, task_status=_Status())
        except Exception as exc:
            if not started:
                raise
            logger.error("task %r of %r failed", fn, proc.pid, exc_info=exc)
            _exit_signal(proc, None, exc)

    return await nursery.start(run)


def whereis(name: Any) -> Pid | None:
    """The pid registered under ``name`` (a string or ``otp.via(...)``), or None."""
    try:
        proc = _resolve(name)
    except NoProcess:
        return None
    return proc.pid if proc.status != DEAD else None


async def _spawn(
    cls: type[GenServer],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    *,
    name: Any,
    mailbox: Mailbox | None,
    nursery: trio.Nursery | None = None,
    link: _Process | None = None,
    parent: _Process | None = None,
    sup_child: Any = None,
) -> Pid:
    if not (isinstance(cls, type) and issubclass(cls, GenServer)):
        raise TypeError(f"otp can start only GenServer subclasses, not {cls!r}")
    if mailbox is None:
        mailbox = DEFAULT_MAILBOX
    elif not isinstance(mailbox, Mailbox):
        raise TypeError(f"mailbox must be an otp.Mailbox, not {mailbox!r}")
    rt = current_runtime()
    if rt.closing:
        raise OtpError("the runtime is shutting down")
    proc = _Process(rt, cls, None, mailbox)
    if name is not None:
        _register(rt, name, proc)
    proc.parent = parent
    proc.sup_child = sup_child
    rt.procs[proc.pid.id] = proc
    if nursery is None:
        nursery = rt.nursery
        rt.roots[proc] = None
    if link is not None:
        # Linked before the process runs, as spawn_link does: no exit can slip between.
        _link(link, proc)
    starter = proc.starter = _Starter(current_task(), proc, link)
    assert nursery is not None
    nursery.start_soon(proc.main, args, kwargs, name=proc)
    tracer = rt.tracer
    if tracer is not None:
        tracer.spawned(proc)
    if link is None:
        pid: Pid = await wait_task_rescheduled(starter.abort)
        return pid
    try:
        pid = await wait_task_rescheduled(starter.abort)
    except BaseException:
        # init failed: the exit signal already crossed the link. A trapping caller gets the
        # failure as this exception, not also as an Exit message (proc_lib flushes it).
        sysq = link.sysq
        if sysq:
            for item in [i for i in sysq if type(i) is _ExitSignal and i.sender == proc.pid]:
                sysq.remove(item)
        raise
    return pid


def _register(rt: Runtime, name: Any, proc: _Process) -> None:
    if isinstance(name, str):
        holder = rt.names.get(name)
        if holder is not None and holder.status != DEAD:
            raise AlreadyRegistered(name, holder.pid)
        rt.names[name] = proc
        proc.name = name
    else:
        register = getattr(name, "_otp_register", None)
        if register is None:
            raise TypeError(f"a process name is a str or otp.via(...), not {name!r}")
        register(proc)
        proc.name = name


def register(name: Any, pid: Pid | None = None) -> None:
    """Register ``pid`` (default: the calling process) under ``name``; unregistered on exit."""
    proc = _current_process() if pid is None else pid._proc
    if proc.status == DEAD:
        raise NoProcess(pid, proc.exit_reason)
    if proc.name is not None:
        raise OtpError(f"{proc.pid!r} is already registered as {proc.name!r}")
    _register(proc.runtime, name, proc)


def unregister(name: str) -> None:
    """Remove a registered name."""
    rt = current_runtime()
    proc = rt.names.pop(name, None)
    if proc is None:
        raise NoProcess(name)
    proc.name = None


def registered() -> list[str]:
    """Every registered name."""
    rt = current_runtime()
    return [n for n, p in rt.names.items() if p.status != DEAD]


async def start(
    cls: type[G], *args: Any, name: Any = None, mailbox: Mailbox | None = None, **kwargs: Any
) -> Pid:
    """Start an unlinked process running ``cls``; returns once its ``init`` has finished.

    Like ``gen_server:start``: an unlinked process that crashes is logged and harms nobody.
    Raises the exception ``init`` raised, or :class:`AlreadyRegistered`.
    """
    return await _spawn(cls, args, kwargs, name=name, mailbox=mailbox)


async def start_link(
    cls: type[G], *args: Any, name: Any = None, mailbox: Mailbox | None = None, **kwargs: Any
) -> Pid:
    """Like :func:`start`, and link the new process to the calling one.

    As with Erlang's ``proc_lib:start_link``, the link exists before the new process runs
    ``init``, so an exit right after ``init`` (in ``handle_continue``, say) reaches the
    caller like any linked exit. If ``init`` fails, this raises that exception, and the exit
    signal crosses the link as in Erlang: a caller that traps exits is not sent the
    :class:`Exit` message (the exception says it all, as OTP 26's ``proc_lib`` flushes it);
    one that does not trap exits is ended with that exception as reason at its next
    checkpoint (catch it in ``handle_call`` and the process still exits). Cancelling the
    caller while ``init`` runs unlinks, then kills the new process.

    Outside a process there is nothing to link to and this is :func:`start`.
    """
    return await _spawn(cls, args, kwargs, name=name, mailbox=mailbox, link=_current_proc.get())


def _new_env(cls: type[Envelope], message: Any, kind: Kind, rt: Runtime) -> Any:
    parent = _current_envelope.get()
    cid = rt.next_id()
    proc = _current_proc.get()
    if parent is None:
        return cls(message, kind, cid, cid, None, proc.pid if proc else None, trio.current_time())
    return cls(
        message,
        kind,
        cid,
        parent.trace_id,
        parent.correlation_id,
        proc.pid if proc else None,
        trio.current_time(),
    )


async def call(target: Any, request: Any, timeout: float = 5.0) -> Any:
    """Send ``request`` to a server and wait for its reply.

    ``timeout`` (seconds, default 5, ``otp.INFINITY`` for none) covers waiting for room in the
    mailbox as well as the reply; :class:`CallTimeout` when it runs out. A server that is dead
    fails the call at once with :class:`NoProcess`; one that exits (or is exiting) before
    replying fails it with :class:`CallError` carrying the exit reason; an exception in its
    ``handle_call`` arrives as :class:`CallError` with that exception as ``reason``.

    Cancelling the caller abandons the call: the request may still be handled, its reply is
    dropped. A checkpoint.
    """
    await trio.lowlevel.checkpoint_if_cancelled()
    proc = target._proc if type(target) is Pid else _resolve(target)
    status = proc.status
    if status >= EXITING:
        if status == DEAD:
            raise NoProcess(target, proc.exit_reason)
        raise CallError(target, proc.exit_reason)
    rt = proc.runtime
    task = current_task()
    if task is proc.task:
        raise OtpError(f"{proc.pid!r} called itself: that would deadlock")
    # The hot path: one envelope that is also the reply slot, no cancel scope, no channel.
    parent = _current_envelope.get()
    me = _current_proc.get()
    cid = rt.next_id()
    now = trio.current_time()
    env = From(
        request,
        _CALL,
        cid,
        cid if parent is None else parent.trace_id,
        None if parent is None else parent.correlation_id,
        None if me is None else me.pid,
        now,
        task,
        proc,
        target,
        timeout,
    )
    if timeout != INFINITY:
        rt.timers.add(env, timeout, now)
    try:
        if not proc.offer(env):
            proc.add_blocked(env, None)
    except MailboxFull:
        env._abort(None)
        raise
    return await wait_task_rescheduled(env._abort)


async def _deliver(target: Any, message: Any, kind: Kind, missing_ok: bool) -> None:
    await trio.lowlevel.checkpoint_if_cancelled()
    try:
        proc = _resolve(target)
    except NoProcess:
        if missing_ok:
            await trio.lowlevel.cancel_shielded_checkpoint()
            return
        raise
    if proc.status == DEAD:
        await trio.lowlevel.cancel_shielded_checkpoint()
        return
    await _put(proc, _new_env(Envelope, message, kind, proc.runtime))


async def _put(proc: _Process, env: Envelope) -> None:
    """Queue ``env``, waiting for room under ``BLOCK``.

    When the message is queued at once this is a schedule point only once per
    :data:`SEND_BURST` sends of the runtime (a cancel point the caller already passed): a
    yield per message costs more than everything else a send does, and a sender in a loop
    still yields regularly. Waiting for room is always a full checkpoint.
    """
    if proc.offer(env):
        rt = proc.runtime
        rt.sends += 1
        if rt.sends >= SEND_BURST:
            rt.sends = 0
            await trio.lowlevel.cancel_shielded_checkpoint()
        return
    entry = proc.add_blocked(env, current_task())

    def abort(_raise_cancel: Any) -> Abort:
        entry[1] = _CANCELLED
        return Abort.SUCCEEDED

    await wait_task_rescheduled(abort)


def _deliver_nowait(target: Any, message: Any, kind: Kind, missing_ok: bool) -> bool:
    try:
        proc = _resolve(target)
    except NoProcess:
        if missing_ok:
            return False
        raise
    if proc.status == DEAD:
        return False
    env = _new_env(Envelope, message, kind, proc.runtime)
    if proc.offer(env):
        return True
    raise trio.WouldBlock


async def cast(target: Any, msg: Any) -> None:
    """Send ``msg`` to ``handle_cast`` of the target without waiting for it to be handled.

    A cast to a dead process or an unknown name is silently lost, as in OTP. When the mailbox
    is full, the overflow policy decides (``BLOCK`` waits here). Always a cancel point; a
    schedule point when it waits, and at least once every 16 sends otherwise (see ``_put``).
    """
    await _deliver(target, msg, _CAST, True)


def cast_nowait(target: Any, msg: Any) -> bool:
    """Synchronous :func:`cast`: raises ``trio.WouldBlock`` where :func:`cast` would wait.

    Returns whether the message was queued.
    """
    return _deliver_nowait(target, msg, _CAST, True)


async def send(target: Any, msg: Any) -> None:
    """Send a raw message to the target's ``handle_info``.

    Sending to an unregistered name raises :class:`NoProcess` (Erlang's ``badarg``); to a dead
    pid the message is silently lost. Checkpoints as :func:`cast` does.
    """
    await _deliver(target, msg, _INFO, False)


def send_nowait(target: Any, msg: Any) -> bool:
    """Synchronous :func:`send`: raises ``trio.WouldBlock`` where :func:`send` would wait."""
    return _deliver_nowait(target, msg, _INFO, False)


def send_after(target: Any, msg: Any, delay: float) -> TimerRef:
    """Send ``msg`` to ``target``'s ``handle_info`` after ``delay`` seconds (virtual under a
    MockClock), like Erlang's ``erlang:send_after``. Lost if the target is gone or its
    mailbox refuses it then. Timers live in the runtime (one task keeps all of them), not in
    the calling task; the message's sender and trace are the caller's.
    """
    rt = current_runtime()
    me = _current_proc.get()
    ref = TimerRef(target, msg, None if me is None else me.pid, _current_envelope.get())
    rt.timers.add_timer(ref, trio.current_time() + max(delay, 0.0))
    return ref


def cancel_timer(ref: TimerRef) -> bool:
    """Cancel a :func:`send_after`. True if that stopped it; False if it had already fired
    or been cancelled. The message is released at once."""
    if ref.cancelled or ref.fired:
        return False
    ref.cancelled = True
    ref.message = ref.parent = None
    if ref.timers is not None:
        ref.timers.cancel(ref)
    return True


def reply(from_: From, value: Any) -> None:
    """Answer a call whose handler returned :data:`NoReply`. Late or repeated replies are
    dropped (the caller has moved on)."""
    server = from_.server
    if server is not None and server.deferred:
        server.deferred.pop(from_, None)
    from_._reply(value)


async def stop(target: Any, reason: Any = "normal", timeout: float = INFINITY) -> None:
    """Stop a server synchronously: ``terminate(reason)`` runs and the process exits.

    Returns once it has exited. Raises :class:`NoProcess` if it is not alive,
    :class:`CallError` if it exited with another reason (its terminate crashed), and
    :class:`CallTimeout` if it did not exit within ``timeout`` (it is then left running).
    """
    proc = _resolve(target)
    if proc.status == DEAD:
        raise NoProcess(target, proc.exit_reason)
    if proc.task is current_task():
        raise OtpError("a process cannot stop itself synchronously: return otp.Stop(...)")
    proc.system(_StopRequest(reason))
    if await _await_exit(proc, target, timeout) != reason:
        raise CallError(target, proc.exit_reason)


async def _await_exit(proc: _Process, target: Any, timeout: float) -> Any:
    """Wait until ``proc`` has exited (CallTimeout after ``timeout``); its exit reason."""
    if timeout == INFINITY:
        await proc.wait_dead()
    else:
        with trio.move_on_after(timeout):
            await proc.wait_dead()
        if proc.status != DEAD:
            raise CallTimeout(target, timeout)
    return proc.exit_reason


async def wait_exit(target: Any, timeout: float = INFINITY) -> Any:
    """Wait until ``target`` has exited and return its exit reason.

    Usable from anywhere, also outside a process (where :func:`monitor` is not). Raises
    :class:`NoProcess` for an unknown name and :class:`CallTimeout` when ``timeout`` runs out.
    A pid that has already exited returns its reason at once.
    """
    return await _await_exit(_resolve(target), target, timeout)


def exit(target: Any, reason: Any) -> None:
    """Send an exit signal to ``target`` from the calling process (Erlang's ``exit/2``).

    ``"kill"`` ends it unconditionally with reason ``"killed"``; ``"normal"`` is ignored unless
    it traps exits; anything else ends it at once, or arrives as :class:`Exit` if it traps.
    """
    proc = _resolve(target)
    if proc.status == DEAD:
        return
    _exit_signal(proc, self_(), reason)


def kill(target: Any) -> None:
    """``exit(target, "kill")``."""
    exit(target, "kill")


def trap_exit(flag: bool = True) -> bool:
    """Make the calling process receive linked exits as :class:`Exit` messages instead of
    dying with them. Returns the previous setting."""
    proc = _current_process()
    old = proc.trap_exit
    proc.trap_exit = flag
    return old


def _link(a: _Process, b: _Process) -> None:
    if b.status == DEAD:
        if a.trap_exit:
            a.system(_ExitSignal(b.pid, "noproc"))
            return
        raise NoProcess(b.pid, b.exit_reason)
    if a.links is None:
        a.links = {}
    if b.links is None:
        b.links = {}
    a.links[b] = None
    b.links[a] = None


def link(target: Any) -> None:
    """Link the calling process and ``target``: an abnormal exit of either reaches the other.

    Linking a dead process raises :class:`NoProcess`, or delivers ``Exit(pid, "noproc")`` when
    the caller traps exits.
    """
    _link(_current_process(), _resolve(target))


def _unlink(a: _Process, b: _Process) -> None:
    if a.links:
        a.links.pop(b, None)
    if b.links:
        b.links.pop(a, None)


def unlink(target: Any) -> None:
    """Remove a link; no exit signal crosses it afterwards."""
    _unlink(_current_process(), _resolve(target))


def monitor(target: Any) -> int:
    """Watch ``target``: when it exits, ``Down(ref, pid, reason)`` arrives in ``handle_info``.

    Returns the monitor reference. Monitoring a process that does not exist delivers
    ``Down(ref, target, "noproc")`` at once. The notice is queued after any message the target
    sent before exiting.
    """
    watcher = _current_process()
    rt = watcher.runtime
    ref = rt.next_id()
    try:
        proc = _resolve(target)
    except NoProcess:
        watcher.force(watcher._info_env(Down(ref, target, "noproc")))
        return ref
    if proc.status == DEAD:
        watcher.force(watcher._info_env(Down(ref, proc.pid, "noproc")))
        return ref
    if proc.monitored_by is None:
        proc.monitored_by = {}
    proc.monitored_by[ref] = watcher
    if watcher.monitors is None:
        watcher.monitors = {}
    watcher.monitors[ref] = proc
    return ref


def demonitor(ref: int, flush: bool = False) -> bool:
    """Stop a monitor. With ``flush``, remove its Down notice if already queued.

    Returns True if the monitor was active.
    """
    watcher = _current_process()
    proc = watcher.monitors.pop(ref, None) if watcher.monitors else None
    if proc is not None and proc.monitored_by:
        proc.monitored_by.pop(ref, None)
    if flush:
        for env in list(watcher.queue):
            msg = env.message
            if type(msg) is Down and msg.ref == ref:
                watcher.queue.remove(env)
    return proc is not None


async def sys_call(target: Any, fn: Callable[[Any], Coroutine[Any, Any, Any]],
                   timeout: float = 5.0) -> Any:
    """Run ``await fn(server)`` inside the target between two messages, via the system lane,
    and return its result (Erlang's ``sys`` module). Used by :func:`get_state` and
    :func:`update_config`."""
    await trio.lowlevel.checkpoint_if_cancelled()
    proc = _resolve(target)
    if proc.status >= EXITING:
        if proc.status == DEAD:
            raise NoProcess(target, proc.exit_reason)
        raise CallError(target, proc.exit_reason)
    rt = proc.runtime
    env: From = _new_env(From, fn, _CALL, rt)
    env.task = current_task()
    env.server = proc
    env.target = target
    env.timeout = timeout
    if timeout != INFINITY:
        rt.timers.add(env, timeout, env.sent_at)
    proc.system(_SysCall(fn, env))
    return await wait_task_rescheduled(env._abort)


async def get_state(target: Any, timeout: float = 5.0) -> GenServer:
    """The server object of a process (``sys:get_state``), for debugging and tests."""

    async def fn(server: GenServer) -> GenServer:
        await trio.lowlevel.checkpoint()
        return server

    result: GenServer = await sys_call(target, fn, timeout)
    return result


async def update_config(target: Any, config: Any, timeout: float = 5.0) -> Any:
    """Deliver a configuration change through the system lane to ``handle_config(config)``.

    The server must define ``async def handle_config(self, config)``; its return value is
    returned here, and an exception it raises is raised here (the server keeps running).
    """

    async def fn(server: GenServer) -> Any:
        handler = getattr(server, "handle_config", None)
        if handler is None:
            raise OtpError(f"{type(server).__name__} does not implement handle_config")
        return await handler(config)

    return await sys_call(target, fn, timeout)


def statistics(target: Any) -> ProcessStatistics:
    """A snapshot of one process's counters."""
    return _resolve(target).statistics()
