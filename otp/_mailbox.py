"""Mailbox settings: a bounded queue of ordinary messages plus an unbounded system lane.

A process owns two queues. Ordinary messages (calls, casts, sends) go to the *user queue*,
bounded by :attr:`Mailbox.capacity`; what happens when it is full is the :class:`Overflow`
policy. Monitor ``Down`` notices and trapped ``Exit`` messages also go to the user queue,
whatever its capacity, so each arrives after every message its process sent before exiting.
Shutdown and stop requests, configuration updates and ``sys`` requests go to the *system
lane*, which is unbounded and always read first, so they are never stuck behind user traffic.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Callable
from typing import Any, Final

import attrs
from trio.lowlevel import Task, reschedule

from ._envelope import PENDING, WOKEN, Envelope, Kind
from ._errors import MailboxFull
from ._values import DEAD, STARTING, Pid

DEFAULT_CAPACITY = 1024


class Overflow(enum.Enum):
    """What a full user queue does with one more message."""

    #: The sender waits until there is room (a call's wait counts against its timeout).
    BLOCK = "block"
    #: The oldest queued message is dropped to make room; a dropped call fails with MailboxFull.
    DROP_OLDEST = "drop_oldest"
    #: The new message is dropped; a cast or send is lost silently (counted), a call fails.
    DROP_NEWEST = "drop_newest"
    #: The sender gets :class:`otp.MailboxFull` at once.
    FAIL = "fail"


def _to_overflow(value: object) -> Overflow:
    if isinstance(value, Overflow):
        return value
    try:
        return Overflow(value)
    except ValueError:
        allowed = ", ".join(repr(o.value) for o in Overflow)
        raise ValueError(f"mailbox overflow must be one of {allowed}, not {value!r}") from None


def _check_capacity(_inst: object, _attr: object, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"mailbox capacity must be an int, not {type(value).__name__}")
    if value < 1:
        raise ValueError(f"mailbox capacity must be at least 1, not {value}")


@attrs.frozen
class Mailbox:
    """Settings of a process's user queue: ``capacity`` messages, then ``overflow``.

    Validated at construction: a bad capacity or policy raises here, not when the first message
    arrives.
    """

    capacity: int = attrs.field(default=DEFAULT_CAPACITY, validator=_check_capacity)
    overflow: Overflow = attrs.field(default=Overflow.BLOCK, converter=_to_overflow)


DEFAULT_MAILBOX = Mailbox()


@attrs.frozen
class MailboxStatistics:
    """A snapshot of one mailbox, like Trio's ``MemoryChannelStatistics``."""

    capacity: int
    overflow: Overflow
    depth: int
    system_depth: int
    blocked_senders: int
    dropped: int


# --------------------------------------------------------------------------------------------
# The queues themselves

#: Marks a blocked sender that gave up (cancelled) or whose message was lost.
GAVE_UP: Final[Any] = object()


class Inbox:
    """A process's two queues and the rules for putting messages in them.

    The base of the process object: delivery reads and writes these slots directly, so a
    send costs a few attribute reads. ``waiting`` is True while the owning task is parked for
    mail; whoever queues a message then reschedules it. Senders that must wait for room
    (``BLOCK``) queue their message in ``blocked``, each with the task to wake once it is in.
    """

    __slots__ = (
        "blocked",
        "capacity",
        "dropped",
        "hook",
        "overflow",
        "pid",
        "queue",
        "status",
        "sysq",
        "task",
        "waiting",
    )

    pid: Pid

    def __init__(self, mailbox: Mailbox) -> None:
        self.capacity = mailbox.capacity
        self.overflow = mailbox.overflow
        #: Created by the first message: an idle process keeps none (one object less for
        #: the garbage collector to track per process).
        self.queue: deque[Envelope] | None = None
        self.sysq: deque[Any] | None = None  # created by the first system message
        self.blocked: deque[list[Any]] | None = None
        self.waiting = False
        self.task: Task | None = None
        self.status = STARTING
        self.dropped = 0
        #: In a simulation, the tracer's ``offer(pid, env)``: every delivery goes through it
        #: (fault injection). None otherwise.
        self.hook: Callable[[Pid, Envelope], bool] | None = None

    def _wake(self) -> None:
        if self.waiting:
            self.waiting = False
            reschedule(self.task, WOKEN)  # type: ignore[arg-type]

    def offer(self, env: Envelope, traced: bool = True) -> bool:
        """Put ``env`` in the user queue if the overflow policy allows it without waiting.

        In a simulation the tracer sees the message first (``traced=False``: the tracer
        itself delivering it).

        Returns False when the sender must wait (``BLOCK`` and full); raises MailboxFull under
        ``FAIL`` (and for a call under ``DROP_NEWEST``).
        """
        if traced and self.hook is not None:
            return self.hook(self.pid, env)
        queue = self.queue
        if queue is None:
            queue = self.queue = deque()
        if len(queue) < self.capacity and not self.blocked:
            queue.append(env)
            if self.waiting:
                self.waiting = False
                reschedule(self.task, WOKEN)  # type: ignore[arg-type]
            return True
        overflow = self.overflow
        if overflow is Overflow.BLOCK:
            return False
        self.dropped += 1
        if overflow is Overflow.DROP_OLDEST:
            old = queue.popleft()
            if old.kind is Kind.CALL:
                old._fail(MailboxFull(self.pid, self.capacity))  # type: ignore[attr-defined]
            queue.append(env)
            return True
        if overflow is Overflow.DROP_NEWEST and env.kind is not Kind.CALL:
            return True
        raise MailboxFull(self.pid, self.capacity)

    def force(self, env: Envelope) -> None:
        """Append to the user queue regardless of capacity (monitor and exit notices)."""
        if self.status == DEAD:
            return
        queue = self.queue
        if queue is None:
            queue = self.queue = deque()
        queue.append(env)
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
        """Queue ``env`` behind the full mailbox; ``task`` (if any) is woken once it is in."""
        entry = [env, task]
        if self.blocked is None:
            self.blocked = deque()
        self.blocked.append(entry)
        return entry

    def unblock(self) -> None:
        """Move the first blocked message that is still wanted into the user queue."""
        blocked = self.blocked
        queue = self.queue
        assert blocked is not None and queue is not None  # senders block only on a full queue
        while blocked:
            env, task = blocked.popleft()
            if task is GAVE_UP:
                continue
            if env.kind is Kind.CALL and env.state != PENDING:
                continue
            queue.append(env)
            if task is not None:
                reschedule(task, WOKEN)
            return

    def statistics(self) -> MailboxStatistics:
        return MailboxStatistics(
            capacity=self.capacity,
            overflow=self.overflow,
            depth=len(self.queue) if self.queue else 0,
            system_depth=len(self.sysq) if self.sysq else 0,
            blocked_senders=len(self.blocked) if self.blocked else 0,
            dropped=self.dropped,
        )
