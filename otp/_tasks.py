"""Tasks owned by a process: background work that lives and dies with its server.

A server class that sets ``owns_tasks = True`` gets a nursery. :func:`start_task_soon` and
:func:`start_task` start tasks in it; they are cancelled when the process exits (after
``terminate``). A task that raises takes its process down as a linked process would: an exit
signal with the exception as reason (an :class:`otp.Exit` message, sender None, if the process
traps exits).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from ._envelope import Envelope, _context, current_envelope
from ._errors import OtpError
from ._proc import _Process, current_process
from ._values import Pid

logger = logging.getLogger("otp")


class TaskContext:
    """The execution context of a task a process owns: it acts for the process (sends come
    from its pid, ``otp.self()`` is its pid) in the trace of the message the process was
    handling when it started the task."""

    __slots__ = ("current", "pid", "process")

    def __init__(self, proc: _Process, current: Envelope | None) -> None:
        self.process = proc
        self.pid: Pid = proc.pid
        self.current = current


def _task_nursery() -> tuple[_Process, trio.Nursery]:
    proc = current_process()
    if proc.nursery is None or proc.cls._otp_supervisor:
        raise OtpError(
            f"{proc.cls.__qualname__} cannot start tasks: set owns_tasks = True on the class"
        )
    return proc, proc.nursery


def _failed(proc: _Process, fn: Any, exc: Exception) -> None:
    logger.error("task %r of %r failed", fn, proc.pid, exc_info=exc)
    proc.signal_exit(None, exc)


async def _guard_task(ctx: TaskContext, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
    _context.set(ctx)
    proc = ctx.process
    try:
        await fn(*args)
    except Exception as exc:
        _failed(proc, fn, exc)


def start_task_soon(fn: Callable[..., Awaitable[Any]], *args: Any) -> None:
    """Start ``fn(*args)`` as a task of the calling process (whose class sets
    ``owns_tasks = True``). It is cancelled when the process exits; if it raises, the
    process receives an exit signal with that exception as reason."""
    proc, nursery = _task_nursery()
    nursery.start_soon(_guard_task, TaskContext(proc, current_envelope()), fn, args)


async def start_task(fn: Callable[..., Awaitable[Any]], *args: Any) -> Any:
    """Like :func:`start_task_soon` for a task that takes ``task_status`` (as
    ``nursery.start`` does): returns once it calls ``task_status.started(value)``, with that
    value. An exception before that is raised here."""
    proc, nursery = _task_nursery()
    ctx = TaskContext(proc, current_envelope())

    async def run(*, task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED) -> None:
        _context.set(ctx)
        started = False

        class _Status:
            def started(self, value: Any = None) -> None:
                nonlocal started
                started = True
                task_status.started(value)

        try:
            await fn(*args, task_status=_Status())
        except Exception as exc:
            if not started:
                raise
            _failed(proc, fn, exc)

    return await nursery.start(run)
