"""Looking inside a running process between two of its messages (Erlang's ``sys`` module).

:func:`sys_call` runs a function inside the target through the system lane, so it is never
stuck behind user traffic; :func:`get_state` and :func:`update_config` are built on it.
:func:`statistics` reads counters the process keeps anyway.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

import trio
from trio.lowlevel import current_task, wait_task_rescheduled

from ._envelope import Expired, From, Kind, _context
from ._errors import CallError, CallTimeout, NoProcess, OtpError
from ._genserver import GenServer
from ._names import resolve
from ._proc import ProcessStatistics, SysCall
from ._values import DEAD, EXITING, INFINITY


async def sys_call(target: Any, fn: Callable[[Any], Coroutine[Any, Any, Any]],
                   timeout: float = 5.0) -> Any:
    """Run ``await fn(server)`` inside the target between two messages, via the system lane,
    and return its result (Erlang's ``sys`` module). An exception ``fn`` raises is raised
    here; the server keeps running."""
    await trio.lowlevel.checkpoint_if_cancelled()
    proc = resolve(target)
    if proc.status >= EXITING:
        if proc.status == DEAD:
            raise NoProcess(target, proc.exit_reason)
        raise CallError(target, proc.exit_reason)
    if not timeout > 0:
        raise ValueError(f"a call timeout must be > 0 seconds, not {timeout!r}")
    if proc.task is current_task():
        raise OtpError(f"{proc.pid!r} called itself: that would deadlock")
    rt = proc.runtime
    ctx = _context.get()
    parent = None if ctx is None else ctx.current
    cid = rt.next_id()
    now = trio.current_time()
    env = From(
        fn,
        Kind.CALL,
        cid,
        cid if parent is None else parent.trace_id,
        None if parent is None else parent.correlation_id,
        None if ctx is None else ctx.pid,
        now,
        current_task(),
    )
    if timeout != INFINITY:
        rt.timers.add_call(env, timeout, now)
    proc.system(SysCall(fn, env))
    try:
        return await wait_task_rescheduled(env)
    except Expired:
        raise CallTimeout(target, timeout) from None


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
    return resolve(target).statistics()
