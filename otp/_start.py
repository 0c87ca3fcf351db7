"""Starting and stopping: the ``otp.runtime()`` block, ``start``, ``start_link``, ``stop``.

Processes run in a nursery of the runtime that is shielded from cancellation outside the
``async with otp.runtime():`` block. However the block ends (its body returns or raises, the
scope around it is cancelled, a sibling task fails), every process still running is shut
down the same way, the most recently started first (as Erlang stops applications):
``terminate("shutdown")`` runs within the process's shutdown time (5 s for a worker, no
limit for a supervisor, whose children have their own), then anything left is killed. The
block's own outcome (its exception, or the cancellation) is raised after that.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import trio
from trio.lowlevel import current_task

from ._envelope import _context, current_envelope
from ._errors import CallError, CallTimeout, NoProcess, OtpError
from ._genserver import GenServer
from ._loop import run
from ._mailbox import DEFAULT_MAILBOX, Mailbox
from ._messaging import deliver_timer
from ._names import register_as, resolve
from ._park import park
from ._proc import StopRequest, _Process, flush_exits, link
from ._runtime import Runtime, _current_runtime, current_runtime
from ._values import DEAD, INFINITY, Pid

G = TypeVar("G", bound=GenServer)


@asynccontextmanager
async def runtime(*, seed: int | None = None) -> AsyncIterator[Runtime]:
    """Open a runtime; processes started inside run until the block exits (see the module
    docs for how they stop)."""
    rt = Runtime(seed)
    rt.use_clock(trio.lowlevel.current_clock())
    token = _current_runtime.set(rt)
    body_error: BaseException | None = None
    try:
        async with trio.open_nursery() as outer:
            host = await outer.start(_host_processes, rt)
            try:
                yield rt
            except BaseException as exc:
                # Re-raised below, outside the nursery, so the caller sees the body's own
                # exception (or cancellation) rather than an ExceptionGroup.
                body_error = exc
            finally:
                rt.closing = True
                with trio.CancelScope(shield=True):
                    for pid in reversed(list(rt.roots)):
                        proc: _Process = pid._proc
                        await proc.shutdown(proc.default_shutdown())
                host.cancel()
    finally:
        _current_runtime.reset(token)
    if body_error is not None:
        raise body_error


async def _host_processes(
    rt: Runtime, *, task_status: trio.TaskStatus[trio.CancelScope] = trio.TASK_STATUS_IGNORED
) -> None:
    """Hold the runtime's process nursery, shielded: cancelling the scope around the
    runtime block must not cancel processes before they are shut down in order."""
    with trio.CancelScope(shield=True) as scope:
        async with trio.open_nursery() as nursery:
            rt.nursery = nursery
            nursery.start_soon(rt.timers.run, lambda ref, now: deliver_timer(rt, ref, now),
                               name="otp.timers")
            task_status.started(scope)


def prepare(
    cls: type[GenServer],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    *,
    name: Any,
    mailbox: Mailbox | None,
    nursery: trio.Nursery | None = None,
    link_to: _Process | None = None,
    parent: _Process | None = None,
    sup_child: Any = None,
) -> _Process:
    """Create a process and start its task; the caller then waits for its ``init`` with
    ``park(proc)`` (see :func:`spawn`)."""
    if not (isinstance(cls, type) and issubclass(cls, GenServer)):
        raise TypeError(f"otp can start only GenServer subclasses, not {cls!r}")
    if mailbox is None:
        mailbox = DEFAULT_MAILBOX
    elif not isinstance(mailbox, Mailbox):
        raise TypeError(f"mailbox must be an otp.Mailbox, not {mailbox!r}")
    rt = current_runtime()
    if rt.closing:
        raise OtpError("the runtime is shutting down")
    proc = _Process(rt, cls, mailbox)
    if name is not None:
        register_as(proc, name)
    if parent is not None:
        proc.parent = parent
        proc.sup_child = sup_child
    pid = proc.pid
    rt.procs[pid.id] = pid
    if nursery is None:
        nursery = rt.nursery
        rt.roots[pid] = None
    if link_to is not None:
        # Linked before the process runs, as spawn_link does: no exit can slip between.
        link(link_to, proc)
        proc.link_parent = link_to.pid
        proc.starter_link = link_to
    proc.starter = current_task()
    proc.current = current_envelope()  # init runs in its starter's trace
    assert nursery is not None
    nursery.start_soon(run, proc, args, kwargs, name=cls.__qualname__)
    tracer = rt.tracer
    if tracer is not None:
        tracer.spawned(pid)
    return proc


async def spawn(
    cls: type[GenServer],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    *,
    name: Any,
    mailbox: Mailbox | None,
    nursery: trio.Nursery | None = None,
    link_to: _Process | None = None,
    parent: _Process | None = None,
    sup_child: Any = None,
) -> Pid | None:
    """Start a process and wait for its ``init``: its pid, or None if init returned Ignore."""
    proc = prepare(cls, args, kwargs, name=name, mailbox=mailbox, nursery=nursery,
                   link_to=link_to, parent=parent, sup_child=sup_child)
    if link_to is None:
        started: Pid | None = await park(proc)
        return started
    pid = proc.pid
    try:
        started = await park(proc)
    except BaseException:
        # init failed: the exit signal already crossed the link. A trapping caller gets the
        # failure as this exception, not also as an Exit message (proc_lib flushes it).
        flush_exits(link_to, pid)
        raise
    if started is None:
        flush_exits(link_to, pid)  # ignored: "normal" crossed the link; drop its Exit
    return started


async def start(
    cls: type[G], *args: Any, name: Any = None, mailbox: Mailbox | None = None, **kwargs: Any
) -> Pid | None:
    """Start an unlinked process running ``cls``; returns once its ``init`` has finished.

    Like ``gen_server:start``: an unlinked process that crashes is logged and harms nobody.
    Raises the exception ``init`` raised, :class:`otp.StartRefused` when ``init`` returned
    ``otp.Stop(reason)``, or :class:`AlreadyRegistered`; returns None when ``init`` returned
    ``otp.Ignore``. In every one of those cases nothing is left running or registered.
    """
    # spawn without its coroutine: this is the path otp.start's speed is measured on
    started: Pid | None = await park(
        prepare(cls, args, kwargs, name=name, mailbox=mailbox))
    return started


async def start_link(
    cls: type[G], *args: Any, name: Any = None, mailbox: Mailbox | None = None, **kwargs: Any
) -> Pid | None:
    """Like :func:`start`, and link the new process to the calling one.

    As with Erlang's ``proc_lib:start_link``, the link exists before the new process runs
    ``init``, so an exit right after ``init`` (in ``handle_continue``, say) reaches the
    caller like any linked exit. If ``init`` fails, this raises that exception, and the exit
    signal crosses the link as in Erlang: a caller that traps exits is not sent the
    :class:`Exit` message (the exception says it all, as OTP 26's ``proc_lib`` flushes it);
    one that does not trap exits is ended with that exception as reason at its next
    checkpoint (catch it in ``handle_call`` and the process still exits). Cancelling the
    caller while ``init`` runs unlinks, then kills the new process.

    The caller is the new server's *parent*: when it exits, a server that traps exits stops
    (``terminate`` with the parent's reason) instead of receiving an Exit message, as
    ``gen_server`` does. Outside a process there is nothing to link to and this is
    :func:`start`.
    """
    ctx = _context.get()
    return await spawn(cls, args, kwargs, name=name, mailbox=mailbox,
                       link_to=None if ctx is None else ctx.process)


async def stop(target: Any, reason: Any = "normal", timeout: float = INFINITY) -> None:
    """Stop a server synchronously: ``terminate(reason)`` runs and the process exits.

    Returns once it has exited. Raises :class:`NoProcess` if it is not alive,
    :class:`CallError` if it exited with another reason (its terminate crashed), and
    :class:`CallTimeout` if it did not exit within ``timeout`` (it is then left running).
    """
    proc = resolve(target)
    if proc.status == DEAD:
        raise NoProcess(target, proc.exit_reason)
    if proc.task is current_task():
        raise OtpError("a process cannot stop itself synchronously: return otp.Stop(...)")
    proc.system(StopRequest(reason))
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
    return await _await_exit(resolve(target), target, timeout)
