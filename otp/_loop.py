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

The process's cancel scope (a kill, a shutdown timeout) encloses all of it; supervisors and
servers that own tasks also get a nursery inside it.
"""

from __future__ import annotations

import logging
from time import perf_counter_ns
from typing import Any, Final

import outcome
import trio
from trio.lowlevel import current_task, wait_task_rescheduled

from ._envelope import PENDING, Envelope, From, Kind, Reply, _context
from ._errors import CallError, StartRefused
from ._genserver import GenServer
from ._proc import HIST_BUCKETS, StopRequest, SysCall, _Process, unwrap_group
from ._values import EXITING, NOTHING, RUNNING, Continue, Ignore, NoReply, Stop, _Directive

logger = logging.getLogger("otp")

_CALL, _CAST, _INFO = Kind.CALL, Kind.CAST, Kind.INFO

#: A server that always has mail yields to the scheduler once per this many messages.
BURST: Final = 16


async def run(proc: _Process, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    proc.task = current_task()
    _context.set(proc)
    reason: Any = "killed"
    try:
        try:
            with trio.CancelScope() as scope:
                proc.scope = scope
                if proc.kill_reason is not None:
                    scope.cancel()
                if proc.cls._otp_supervisor or proc.cls.owns_tasks:
                    async with trio.open_nursery() as nursery:
                        proc.nursery = nursery
                        reason = await _lifecycle(proc, args, kwargs)
                        nursery.cancel_scope.cancel()
                else:
                    reason = await _lifecycle(proc, args, kwargs)
            if scope.cancelled_caught:
                reason = proc.kill_reason if proc.kill_reason is not None else "killed"
        except Exception as exc:
            # Something escaped the process's own nursery (a task, a supervisor's timer):
            # it ends this process, with that exception as reason, and nothing else.
            reason = unwrap_group(exc)
            logger.error("process %r (%s) crashed", proc.pid, proc.cls.__qualname__,
                         exc_info=exc)
    finally:
        proc._die(reason)


async def _lifecycle(proc: _Process, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
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
    proc.current = None  # init ran in its starter's trace; messages bring their own
    proc.status = RUNNING
    proc._tell_starter(Reply(proc.pid))
    try:
        if result is not None:
            stop = await _continue(proc, server, result)
            if stop is not None:
                return await _terminate(proc, server, stop.reason)
        # The receive loop is inline, not a method: one coroutine frame less per process
        # (each is an object the garbage collector tracks, 100,000 processes over).
        queue = proc.queue
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
                await wait_task_rescheduled(proc)
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
