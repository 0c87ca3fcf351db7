"""What a process does: ``init``, the receive loop, the callbacks' directives, ``terminate``.

:func:`run` is the body of every process task:

1. ``init`` runs while the starter waits. Its outcome (started, refused with ``Stop``, declined
   with ``Ignore``, failed) is handed to the starter once, through the process; a start that
   does not finish leaves nothing behind.
2. The receive loop takes the system lane first, then the user queue, and calls the
   callback for each message. A server that always has mail yields once per :data:`BURST`
   messages, so it never starves the rest of the program and a kill can land. Each
   message's handler time goes into the process's histogram.
3. A callback's return value steers the process (``NoReply``, ``Continue``, ``Stop``); an
   exception crashes it (a call being handled fails with :class:`otp.CallError`).
4. ``terminate(reason)`` runs on a stop, a shutdown, the start_link parent's exit (trapped)
   or a crash; then the process dies (:meth:`otp._proc._Process._die`).

A kill (or a shutdown timeout) cancels the process's cancel scope. Supervisors and servers
that own tasks hold one scope, with their nursery inside it, for their whole life. A plain
server holds one only while its own code may be running, because a scope per process is a
large part of what a process costs (time to enter it, and four objects the garbage collector
tracks for as long as the process lives):

* ``init`` runs in a scope of its own, unless its code has no ``await``, ``async for`` or
  ``async with`` (:func:`init_can_suspend`): such an init cannot reach a checkpoint, so
  nothing could cancel it anyway.
* Between ``init`` and the first message, system item or kill, an idle server waits in
  otp's own wait, which a kill interrupts directly (:meth:`otp._proc._Process.kill`).
* From then on it serves inside a scope entered then (cancelled at once if the wake-up was
  a kill), so every callback runs where a kill can reach it, exactly as if the scope had
  been there from the start.
"""

from __future__ import annotations

import dis
import inspect
import logging
from collections import deque
from time import perf_counter_ns
from types import CodeType
from typing import Any, Final

import outcome
import trio
from trio.lowlevel import current_task

from ._envelope import PENDING, Envelope, From, Kind, Reply, _context
from ._errors import CallError, StartRefused
from ._genserver import GenServer
from ._park import park
from ._proc import HIST_BUCKETS, StopRequest, SysCall, _Process, unwrap_group
from ._values import EXITING, NOTHING, RUNNING, Continue, Ignore, NoReply, Stop, _Directive

logger = logging.getLogger("otp")

_CALL, _CAST, _INFO = Kind.CALL, Kind.CAST, Kind.INFO

#: A server that always has mail yields to the scheduler once per this many messages.
BURST: Final = 16


# --------------------------------------------------------------------------------------------
# Can init suspend?

#: The opcodes where a coroutine can suspend (``await``, ``async for``, ``async with`` all
#: compile to ``YIELD_VALUE`` from CPython 3.11 to 3.13; the rest are their companions).
_SUSPENDING_OPS: Final = frozenset({
    "YIELD_VALUE", "SEND", "YIELD_FROM", "GET_AWAITABLE", "GET_AITER", "GET_ANEXT",
    "BEFORE_ASYNC_WITH", "END_ASYNC_FOR", "CLEANUP_THROW",
})


def _opnames(code: CodeType) -> frozenset[str]:
    return frozenset(ins.opname for ins in dis.get_instructions(code))


def _suspension_is_visible() -> bool:
    """Whether this interpreter compiles every suspension point to an opcode of
    :data:`_SUSPENDING_OPS` (checked once, on examples of each; if not, every init is
    treated as one that may suspend)."""

    async def awaits(x: Any) -> None:
        await x

    async def iterates(x: Any) -> None:
        async for _ in x:
            pass

    async def enters(x: Any) -> None:
        async with x:
            pass

    async def plain(x: Any) -> None:
        x.y = x

    return (all(_opnames(f.__code__) & _SUSPENDING_OPS for f in (awaits, iterates, enters))
            and not _opnames(plain.__code__) & _SUSPENDING_OPS)


_CHECKABLE: Final = _suspension_is_visible()
#: Per code object of an init: whether it can suspend (the same ``def`` compiled once
#: serves every class created from it, so this stays as small as the source).
_can_suspend: dict[CodeType, bool] = {}


def init_can_suspend(cls: type[GenServer]) -> bool:
    """Whether ``cls.init`` may reach a checkpoint: False only for a coroutine function
    whose own code has no ``await``, ``async for`` or ``async with``. Such an init runs to
    its end without giving Trio a chance to run anything else, so nothing can cancel it
    and it needs no cancel scope."""
    code = getattr(cls.init, "__code__", None)
    if code is None:
        return True
    known = _can_suspend.get(code)
    if known is None:
        known = (not _CHECKABLE or not code.co_flags & inspect.CO_COROUTINE
                 or bool(_opnames(code) & _SUSPENDING_OPS))
        _can_suspend[code] = known
    return known


# --------------------------------------------------------------------------------------------
# The process task


async def run(proc: _Process, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    proc.task = current_task()
    _context.set(proc)
    reason: Any = "killed"
    try:
        try:
            cls = proc.cls
            if cls._otp_supervisor or cls.owns_tasks:
                # Its tasks (children, for a supervisor) live from init on: one scope and
                # one nursery for the whole life.
                with trio.CancelScope() as scope:
                    proc.scope = scope
                    if proc.kill_reason is not None:
                        scope.cancel()
                    async with trio.open_nursery() as nursery:
                        proc.nursery = nursery
                        reason = await _lifecycle(proc, args, kwargs)
                        nursery.cancel_scope.cancel()
                if scope.cancelled_caught:
                    reason = _kill_reason(proc)
                return
            # A plain server holds a cancel scope only while it can be inside its own code
            # (see the module docs): none for an init that cannot suspend, none while idle.
            server = proc.server = cls.__new__(cls)
            result: Any = _KILLED
            try:
                if init_can_suspend(cls):
                    with trio.CancelScope() as scope:
                        proc.scope = scope
                        if proc.kill_reason is not None:
                            scope.cancel()
                        result = await server.init(*args, **kwargs)
                    proc.scope = None
                else:
                    result = await server.init(*args, **kwargs)
            except Exception as exc:
                # The starter is told in _die, once the process is gone: a failed start
                # leaves nothing behind.
                reason = exc
                return
            if result is _KILLED:
                reason = _kill_reason(proc)
                return
            if result is not None and not isinstance(result, Continue):
                reason = _refuse(proc, result)
                return
            _started(proc)
            # Idle until the first message, system item or kill, without a scope: a kill
            # wakes the process here (see _Process.kill). Whatever woke it, it then serves
            # in its scope, cancelled if it was killed, as if the scope had been there all
            # along: a message that came first is handled up to its first checkpoint.
            while (result is None and proc.kill_reason is None and not proc.queue
                   and not proc.sysq):
                proc.waiting = True
                await park(proc)
            with trio.CancelScope() as scope:
                proc.scope = scope
                if proc.kill_reason is not None:
                    scope.cancel()
                reason = await _serve(proc, server, result)
            if scope.cancelled_caught:
                reason = _kill_reason(proc)
        except Exception as exc:
            # Something escaped the process's own nursery (a task, a supervisor's timer):
            # it ends this process, with that exception as reason, and nothing else.
            reason = unwrap_group(exc)
            logger.error("process %r (%s) crashed", proc.pid, proc.cls.__qualname__,
                         exc_info=exc)
    finally:
        proc._die(reason)


#: What ``result`` holds when init was cancelled (a kill) before it returned.
_KILLED: Final[Any] = object()


def _kill_reason(proc: _Process) -> Any:
    return proc.kill_reason if proc.kill_reason is not None else "killed"


def _started(proc: _Process) -> None:
    """init succeeded: the process runs, and its starter hears so."""
    proc.current = None  # init ran in its starter's trace; messages bring their own
    proc.status = RUNNING
    proc._tell_starter(Reply(proc.pid))


async def _lifecycle(proc: _Process, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """init, then serve: a process with a nursery, inside its scope for its whole life."""
    server = proc.cls.__new__(proc.cls)
    proc.server = server
    try:
        result = await server.init(*args, **kwargs)
    except Exception as exc:
        # The starter is told in _die, once the process is gone: a failed start leaves
        # nothing behind.
        return exc
    if result is not None and not isinstance(result, Continue):
        return _refuse(proc, result)
    _started(proc)
    return await _serve(proc, server, result)


async def _serve(proc: _Process, server: GenServer, result: Any) -> Any:
    """``handle_continue`` if init asked for it, then the receive loop until the process
    stops; returns the exit reason."""
    try:
        if result is not None:
            stop = await _continue(proc, server, result)
            if stop is not None:
                return await _terminate(proc, server, stop.reason)
        # The receive loop is inline, not a method: one coroutine frame less per process
        # (each is an object the garbage collector tracks, 100,000 processes over).
        queue = proc.queue
        if queue is None:
            queue = proc.queue = deque()
        hist = proc.hist
        top = HIST_BUCKETS - 1
        tracer = proc.runtime.tracer
        burst = 0
        # When the handler time of a message is measured, its end is the start of the
        # next message handled in the same burst: one clock read per message. 0: unknown.
        t0 = 0
        while True:
            sysq = proc.sysq
            if sysq:
                item = sysq.popleft()
                proc.current = None
                stop = await _system(proc, server, item)
                if stop is not None:
                    return stop
                t0 = 0
                continue
            if not queue:
                # ``current`` stays set from one message to the next (a store less per
                # message): it is cleared here, and before system items.
                proc.current = None
                proc.waiting = True
                await park(proc)
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
                hist = proc.hist = [0] * HIST_BUCKETS
            burst += 1
            env = queue.popleft()
            if proc.blocked:
                proc.unblock()
            proc.current = env
            if not t0:
                t0 = perf_counter_ns()
            kind = env.kind
            try:
                if tracer is not None and tracer.handler_faults:
                    await tracer.before_handle(proc.pid, env)
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
                proc.hist_ns += dt
                b = (dt >> 10).bit_length()
                hist[b if b < top else top] += 1
            if result is not None:
                stop = await _directive(proc, server, env, result)
                if stop is not None:
                    return stop
                t0 = 0
    except Exception as exc:
        current = proc.current
        if current is not None and current.kind is _CALL:
            current._fail(CallError(proc.pid, exc))  # type: ignore[attr-defined]
        logger.error("process %r (%s) crashed", proc.pid, proc.cls.__qualname__, exc_info=exc)
        return await _terminate(proc, server, exc)


def _refuse(proc: _Process, result: Any) -> Any:
    """``init`` returned Stop or Ignore: the start fails (or returns None) and the process
    ends without running terminate. Returns the exit reason."""
    if result is Ignore:
        refusal: outcome.Outcome[Any] = outcome.Value(None)
        reason: Any = "normal"
    elif isinstance(result, Stop):
        reason = result.reason
        error = reason if isinstance(reason, BaseException) else StartRefused(
            proc.cls, reason)
        refusal = outcome.Error(error)
    else:
        reason = TypeError(f"init of {proc.cls.__qualname__} returned {result!r}: expected "
                           "None, otp.Continue, otp.Stop or otp.Ignore")
        refusal = outcome.Error(reason)
    proc.refusal = refusal
    return reason


async def _terminate(proc: _Process, server: GenServer, reason: Any) -> Any:
    proc.status = EXITING
    proc.exit_reason = reason
    proc._fail_pending(reason)
    try:
        await server.terminate(reason)
    except Exception as exc:
        logger.error("terminate of %r raised", proc.pid, exc_info=exc)
        return exc
    return reason


async def _continue(proc: _Process, server: GenServer, directive: Any) -> Stop | None:
    result: Any = directive
    while isinstance(result, Continue):
        result = await server.handle_continue(result.arg)
    if isinstance(result, Stop):
        return result
    if result is not None:
        raise TypeError(f"handle_continue of {proc.pid!r} returned {result!r}")
    return None


def _hold(proc: _Process, env: From) -> None:
    """Keep a call whose reply is deferred, unless it was already answered (reply then
    NoReply) or its caller gave up: the server holds only requests really pending."""
    if env.state == PENDING:
        deferred = proc.deferred
        if deferred is None:
            deferred = proc.deferred = {}
        deferred[env] = None
        env.held = deferred


async def _directive(proc: _Process, server: GenServer, env: Envelope, result: Any) -> Any:
    if result is NoReply:
        if env.kind is _CALL:
            _hold(proc, env)  # type: ignore[arg-type]
        return None
    if isinstance(result, Continue | Stop) and env.kind is _CALL:
        if result.reply is not NOTHING:
            env._reply(result.reply)  # type: ignore[attr-defined]
        else:
            _hold(proc, env)  # type: ignore[arg-type]
    if isinstance(result, Continue):
        stop = await _continue(proc, server, result)
        if stop is None:
            return None
        result = stop
    if isinstance(result, Stop):
        return await _terminate(proc, server, result.reason)
    raise TypeError(f"handler of {proc.pid!r} returned {result!r}")


async def _system(proc: _Process, server: GenServer, item: Any) -> Any:
    kind = type(item)
    if kind is StopRequest:
        return await _terminate(proc, server, item.reason)
    if kind is SysCall:
        proc.current = item.env
        try:
            value = await item.fn(server)
        except Exception as exc:
            item.env._fail(exc)
        else:
            item.env._reply(value)
        finally:
            proc.current = None
        return None
    result = await server._otp_system(item)
    if isinstance(result, Stop):
        return await _terminate(proc, server, result.reason)
    return None
