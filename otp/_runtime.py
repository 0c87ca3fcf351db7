"""The runtime: what every process of one ``async with otp.runtime():`` block shares.

Its tables hold pids: live processes by number (``procs``), the processes started outside
any supervisor in start order (``roots``, stopped newest first when the block exits),
registered names, bus topics. It hands out ids (pids, envelope ids, monitor refs) from
counters, so a seeded simulation replays them exactly, and keeps every deadline in one
:class:`~otp._timers.Timers`.

A :class:`Tracer` watches a runtime when one is set (the simulation harness is one): it sees
every delivery and may delay or drop it, and it hears of spawns, exits and restarts. Outside
a simulation the only cost is one ``is None`` check where a hook sits.
"""

from __future__ import annotations

import contextvars
import itertools
import random
import time
from collections.abc import Callable
from time import perf_counter
from typing import Any, Protocol

import trio

from ._envelope import Envelope
from ._errors import OtpError
from ._timers import Timers
from ._values import Pid


class Tracer(Protocol):
    """What the runtime tells an observer (the simulation harness), and asks it."""

    def offer(self, pid: Pid, env: Envelope) -> bool:
        """Deliver ``env`` to ``pid`` (``pid._proc.offer(env, False)``), or delay or drop
        it; the return value is the offer's (False: the sender must wait)."""
        ...

    #: True while some process has a fault waiting for its next handler (an attribute, read
    #: before every message of a simulation).
    handler_faults: bool

    async def before_handle(self, pid: Pid, env: Envelope) -> None:
        """Runs before ``pid`` handles ``env`` while :attr:`handler_faults` is true."""
        ...

    def spawned(self, pid: Pid) -> None: ...

    def exited(self, pid: Pid, reason: Any) -> None: ...

    def started_child(self, sup: Pid, child_id: Any, child: Pid) -> None: ...

    def restarting(self, sup: Pid, child_id: Any, reason: Any, intensity: int,
                   period: float) -> None: ...

    def exhausted(self, sup: Pid, child_id: Any, reason: Any, policy: str) -> None: ...

    def restarts_reset(self, sup: Pid) -> None: ...


class Runtime:
    """Everything processes share: names, topics, ids, timers, the nursery they run in.

    Create one with :func:`otp.runtime`; everything started inside the ``async with`` block
    belongs to it.
    """

    def __init__(self, seed: int | None = None) -> None:
        self.nursery: trio.Nursery | None = None
        self.procs: dict[int, Pid] = {}
        self.roots: dict[Pid, None] = {}
        self.names: dict[str, Pid] = {}
        self.topics: dict[Any, dict[Pid, None]] = {}
        #: The bus topics of each subscribed process (see :mod:`otp.bus`).
        self.subscriptions: dict[Pid, dict[Any, None]] = {}
        self.pid_numbers = itertools.count(1)
        self.next_id: Callable[[], int] = itertools.count(1).__next__
        self.random = random.Random(seed)
        self.timers = Timers()
        self.closing = False
        #: Timed messages (``send_after``) that found no process, or a mailbox that refused.
        self.timers_dropped = 0
        #: Set by the simulation harness (see :class:`Tracer`); None otherwise.
        self.tracer: Tracer | None = None
        #: Sends since the last yield (see :func:`otp.cast`).
        self.sends = 0
        #: ``trio.current_time`` without its lookups: the run's clock, bound once.
        self.now: Callable[[], float] = trio.current_time
        #: The wall clock processes read (``otp.system_time``): Unix time; a simulation
        #: replaces it with a fixed epoch plus virtual time.
        self.system_clock: Callable[[], float] = time.time
        #: For Trio's own SystemClock, whose time is ``offset + time.perf_counter()``: the
        #: offset, so the hottest paths read the time without a Python call (None: call now).
        self.clock_offset: float | None = None

    def use_clock(self, clock: trio.abc.Clock) -> None:
        """Read time from ``clock`` (the run's clock; see :attr:`clock_offset`)."""
        self.now = clock.current_time
        self.clock_offset = None
        kind = type(clock)
        if kind.__name__ == "SystemClock" and kind.__module__.startswith("trio"):
            offset: float = clock.offset  # type: ignore[attr-defined]
            # Only if SystemClock still keeps time as documented in its source.
            if abs(clock.current_time() - (offset + perf_counter())) < 1e-3:
                self.clock_offset = offset

    def processes(self) -> list[Pid]:
        """Pids of every live process, oldest first."""
        return list(self.procs.values())


_current_runtime: contextvars.ContextVar[Runtime | None] = contextvars.ContextVar(
    "otp_runtime", default=None
)


def system_time() -> float:
    """Seconds since the Unix epoch, from the runtime's wall clock (Erlang's
    ``erlang:system_time``): ``time.time()`` normally; in a simulation, a fixed epoch plus
    virtual time, so code that stamps or schedules by the wall clock replays exactly. Outside
    a runtime, ``time.time()``."""
    rt = _current_runtime.get()
    return time.time() if rt is None else rt.system_clock()


def current_runtime() -> Runtime:
    """The runtime of the calling context; raises :class:`OtpError` outside one."""
    rt = _current_runtime.get()
    if rt is None:
        raise OtpError("no otp runtime: call this inside 'async with otp.runtime():'")
    return rt
