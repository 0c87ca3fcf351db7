"""Every deadline of a runtime, kept by one task: call timeouts and ``send_after`` timers.

Call timeouts are grouped by timeout value, so each group is ordered by deadline: registering
and settling a call are dict operations (a cancel scope per call would cost most of a call's
budget). :func:`otp.send_after` timers sit in a heap ordered by (deadline, sequence number).
A cancelled timer stays in the heap (without its message) until its deadline, unless cancelled
entries come to outnumber live ones: then the heap is rebuilt without them, so cancelling
never holds memory for long. One task sleeps until the earliest deadline, fails the calls that
reached theirs and hands due timers to the delivery function it was given.

The timer task runs runtime code only: the delivery function must not raise (a timer whose
target is gone or refuses the message is dropped and counted by it), and the task guards
against one that does anyway, so no timer can end the runtime.
"""

from __future__ import annotations

import heapq
import itertools
import logging
from collections.abc import Callable
from typing import Any

import trio

from ._envelope import Envelope, From
from ._values import INFINITY, Pid

logger = logging.getLogger("otp")


class TimerRef:
    """A pending :func:`otp.send_after`; :func:`otp.cancel_timer` stops it."""

    __slots__ = ("cancelled", "fired", "message", "parent", "sender", "target", "timers")

    def __init__(self, target: Any, message: Any, sender: Pid | None,
                 parent: Envelope | None) -> None:
        self.target = target
        self.message = message
        self.sender = sender
        self.parent = parent
        self.cancelled = False
        self.fired = False
        self.timers: Timers | None = None

    def cancel(self) -> bool:
        """Stop the timer; True if that stopped it, False if it had fired or been cancelled.
        The message is released at once."""
        if self.cancelled or self.fired:
            return False
        self.cancelled = True
        self.message = self.parent = None
        if self.timers is not None:
            self.timers.count_cancelled()
        return True


Deliver = Callable[[TimerRef, float], None]


class Timers:
    """The deadlines of one runtime (see the module docs)."""

    __slots__ = ("buckets", "cancelled", "heap", "scope", "seq", "wake_at")

    def __init__(self) -> None:
        self.buckets: dict[float, dict[From, float]] = {}
        self.heap: list[tuple[float, int, TimerRef]] = []
        self.seq = itertools.count()
        self.scope: trio.CancelScope | None = None
        self.wake_at = INFINITY
        #: How many entries of ``heap`` are cancelled timers.
        self.cancelled = 0

    def add_call(self, env: From, timeout: float, now: float) -> None:
        """Fail ``env`` with a timeout ``timeout`` seconds after ``now`` unless settled."""
        bucket = self.buckets.get(timeout)
        if bucket is None:
            bucket = self.buckets[timeout] = {}
        deadline = now + timeout
        env.bucket = bucket
        bucket[env] = deadline
        if deadline < self.wake_at:
            self._wake_at(deadline)

    def add_timer(self, ref: TimerRef, deadline: float) -> None:
        ref.timers = self
        heapq.heappush(self.heap, (deadline, next(self.seq), ref))
        if deadline < self.wake_at:
            self._wake_at(deadline)

    def _wake_at(self, deadline: float) -> None:
        self.wake_at = deadline
        if self.scope is not None:
            self.scope.deadline = deadline

    def count_cancelled(self) -> None:
        """Count a newly cancelled timer; compact the heap once most entries are cancelled."""
        self.cancelled += 1
        if self.cancelled * 2 > len(self.heap):
            self.heap = [entry for entry in self.heap if not entry[2].cancelled]
            heapq.heapify(self.heap)
            self.cancelled = 0

    async def run(self, deliver: Deliver) -> None:
        """Keep every deadline until cancelled; ``deliver(ref, now)`` sends a due timer."""
        while True:
            with trio.CancelScope(deadline=self.wake_at) as scope:
                self.scope = scope
                await trio.sleep_forever()
            self.scope = None
            now = trio.current_time()
            wake_at = INFINITY
            for timeout, bucket in list(self.buckets.items()):
                while bucket:
                    env, deadline = next(iter(bucket.items()))
                    if deadline > now:
                        wake_at = min(wake_at, deadline)
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
                    continue
                ref.fired = True
                try:
                    deliver(ref, now)
                except Exception as exc:  # a bug in delivery must not end every timer
                    logger.error("timer for %r could not be delivered", ref.target,
                                 exc_info=exc)
                ref.message = ref.parent = None
            if heap:
                wake_at = min(wake_at, heap[0][0])
            self.wake_at = wake_at
