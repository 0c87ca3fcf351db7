"""Envelopes: the metadata every delivered message travels with, and the call envelope that
is also its reply slot.

Each message carries a ``correlation_id`` (a call's request and reply share it), a
``trace_id`` (inherited from the envelope being handled when the message was sent, so every
message caused by one request shares one trace), a ``causation_id`` (the correlation id of the
message whose handling sent this one), the sender's pid and the send time (``trio.current_time``,
so virtual under a MockClock). Ids are integers from the runtime's counter: cheap and, in a
seeded simulation, deterministic.

While a handler runs, :func:`current_envelope` returns its envelope: calls and sends it makes
carry the trace on, and tasks the process starts keep the envelope current when they started.

A call travels in a :class:`From`: the envelope of the request, and the slot its caller is
parked on. Settling it (a reply, a failure, the timeout, the caller giving up) happens once;
whatever comes later is dropped. On settling it leaves the timer's bucket and the set of
requests its server holds, so a held request never outlives its caller's interest.
"""

from __future__ import annotations

import contextvars
import enum
from typing import Any, Final, Protocol

import attrs
import outcome
from trio.lowlevel import Abort, Task, reschedule

from ._values import Pid


class Kind(enum.IntEnum):
    CALL = 0
    CAST = 1
    INFO = 2
    #: The exit of the process that started this one with start_link, to a server that
    #: traps exits: it stops the server instead of reaching handle_info.
    EXIT = 3


@attrs.define(slots=True, eq=False, repr=False, init=False)
class Envelope:
    """A message and its metadata. Treat it as read-only.

    (An attrs class with a hand-written ``__init__``: every message pays for its construction,
    and the generated one costs twice as much.)
    """

    message: Any
    kind: Kind
    correlation_id: int
    trace_id: int
    causation_id: int | None
    sender: Pid | None
    sent_at: float

    def __init__(
        self,
        message: Any,
        kind: Kind,
        correlation_id: int,
        trace_id: int,
        causation_id: int | None,
        sender: Pid | None,
        sent_at: float,
    ) -> None:
        self.message = message
        self.kind = kind
        self.correlation_id = correlation_id
        self.trace_id = trace_id
        self.causation_id = causation_id
        self.sender = sender
        self.sent_at = sent_at

    def __repr__(self) -> str:
        return (
            f"Envelope({self.kind.name.lower()} {self.message!r}, corr={self.correlation_id}, "
            f"trace={self.trace_id}, cause={self.causation_id}, from={self.sender!r})"
        )


class Reply(outcome.Outcome[Any]):
    """A value outcome that is cheap to make: Trio wakes a parked task with an Outcome, and
    ``outcome.Value`` (a frozen attrs class) spends most of a wake-up's Python time setting
    its attributes. One per reply; unwrapped by Trio's ``wait_task_rescheduled``. It does
    not guard against a second unwrap, so one instance can wake many tasks (:data:`WOKEN`).
    """

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value

    def __repr__(self) -> str:
        return f"Reply({self.value!r})"

    def unwrap(self) -> Any:
        return self.value

    def send(self, gen: Any) -> Any:
        return gen.send(self.value)

    async def asend(self, agen: Any) -> Any:
        return await agen.asend(self.value)


#: What a task parked on otp's own queues is woken with: one shared Reply(None), since a
#: Reply has no unwrap-once state.
WOKEN: Final = Reply(None)


# Reply slot states
PENDING, DONE, TIMED_OUT, ABANDONED = 0, 1, 2, 3


class Expired(Exception):
    """Thrown into a parked caller whose call ran out of time; the caller, which knows the
    target and the timeout, raises :class:`otp.CallTimeout` in its place."""



@attrs.define(slots=True, eq=False, repr=False, init=False)
class From(Envelope):  # type: ignore[override]
    """The envelope of a call, and the handle its server replies through (``from_``).

    Pass it to :func:`otp.reply` to answer a call whose handler returned :data:`otp.NoReply`.
    ``pending`` tells whether the caller still waits.
    """

    task: Task | None
    state: int
    #: The timer bucket the call's deadline sits in (None: no timeout, or settled).
    bucket: dict[From, float] | None
    #: The set of requests its server holds for a deferred reply (None: not held).
    held: dict[From, None] | None

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
    ) -> None:
        self.message = message
        self.kind = kind
        self.correlation_id = correlation_id
        self.trace_id = trace_id
        self.causation_id = causation_id
        self.sender = sender
        self.sent_at = sent_at
        self.task = task
        self.state = PENDING
        self.bucket = None
        self.held = None

    def _release(self) -> None:
        bucket = self.bucket
        if bucket is not None:
            del bucket[self]
            self.bucket = None
        held = self.held
        if held is not None:
            held.pop(self, None)
            self.held = None

    def _settle(self, result: outcome.Outcome[Any]) -> None:
        if self.state == PENDING:
            self.state = DONE
            if self.bucket is not None or self.held is not None:
                self._release()
            task = self.task
            if task is not None:
                reschedule(task, result)

    def _reply(self, value: Any) -> None:
        # _settle(Reply(value)), inline: every call's answer comes through here.
        if self.state == PENDING:
            self.state = DONE
            bucket = self.bucket
            if bucket is not None:
                del bucket[self]
                self.bucket = None
            if self.held is not None:
                self._release()
            task = self.task
            if task is not None:
                reschedule(task, Reply(value))

    def _fail(self, exc: BaseException) -> None:
        self._settle(outcome.Error(exc))

    def _expire(self) -> None:
        # Called by the timer after it has taken us out of the bucket.
        if self.state == PENDING:
            self.state = TIMED_OUT
            self.bucket = None
            if self.held is not None:
                self._release()
            if self.task is not None:
                reschedule(self.task, outcome.Error(Expired()))

    def _abort(self, _raise_cancel: Any) -> Abort:
        # The caller was cancelled while waiting: the request may still be handled, the reply
        # is dropped.
        if self.state == PENDING:
            self.state = ABANDONED
            self._release()
        return Abort.SUCCEEDED

    #: The envelope is its caller's abort function (no bound-method object per call).
    __call__ = _abort

    @property
    def pending(self) -> bool:
        """True while the caller is still waiting for a reply."""
        return self.state == PENDING


class Context(Protocol):
    """Who is running: a process (the process object itself) or a task it owns."""

    #: The process the code runs for.
    pid: Pid
    #: The envelope whose handling this code is part of (None: none).
    current: Envelope | None
    #: The process object (``otp._proc._Process``).
    process: Any


#: The running code's :class:`Context`: set once by each process task and each task a
#: process owns; None elsewhere. One variable, read once per send and never set per message:
#: a process tracks the message it handles in its own ``current`` slot.
_context: contextvars.ContextVar[Context | None] = contextvars.ContextVar(
    "otp_context", default=None
)


def current_envelope() -> Envelope | None:
    """The envelope of the message being handled, or None outside a handler.

    In a task the process started (``otp.start_task``), the envelope the process was
    handling when it started the task; in ``init``, that of the code that started the
    process.
    """
    ctx = _context.get()
    return None if ctx is None else ctx.current


def current_trace_id() -> int | None:
    """The trace id flowing through this context, or None."""
    env = current_envelope()
    return None if env is None else env.trace_id
