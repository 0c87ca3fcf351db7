"""Messaging: call, reply, cast, send, their ``_nowait`` twins, and timed sends.

Every message is queued by one synchronous core, :func:`_enqueue`; the async forms add the
checkpoints and the wait for room under ``Overflow.BLOCK``:

* ``cast`` and ``send`` are always a cancel point, and a schedule point when they wait for
  room and at least once every :data:`SEND_BURST` sends of the runtime otherwise. (A yield per
  message costs more than everything else a send does; a sender in a loop still yields
  regularly.)
* ``cast_nowait`` and ``send_nowait`` raise ``trio.WouldBlock`` where the async form would
  wait.
* A cast to a dead process or an unregistered name is lost silently, as in OTP; a send to
  an unregistered name raises :class:`otp.NoProcess` (Erlang's ``badarg``), to a dead pid it
  is lost. A target that is not a target at all raises ``TypeError`` at once.

A call parks its caller on a :class:`~otp._envelope.From` (the request's envelope and the
reply slot in one), with its deadline kept by the runtime's timer task: no cancel scope, no
channel, so a call costs little more than a bare Trio park/reschedule round trip.
"""

from __future__ import annotations

import logging
from collections.abc import Coroutine
from time import perf_counter
from typing import Any, Final, TypeVar, overload

import trio
from trio.lowlevel import Abort, current_task, reschedule, wait_task_rescheduled

from ._envelope import PENDING, WOKEN, Envelope, Expired, From, Kind, _context, current_envelope
from ._errors import CallError, CallTimeout, MailboxFull, NoProcess, OtpError
from ._mailbox import GAVE_UP
from ._names import check_target, lookup, resolve
from ._proc import _Process
from ._request import Request
from ._runtime import Runtime, current_runtime
from ._timers import TimerRef
from ._values import DEAD, EXITING, INFINITY, Pid

logger = logging.getLogger("otp")

_CALL, _CAST, _INFO = Kind.CALL, Kind.CAST, Kind.INFO
_new = object.__new__

#: A cast or send that finds room at once yields once per this many sends of the runtime.
SEND_BURST: Final = 16

R = TypeVar("R")


def new_envelope(message: Any, kind: Kind, rt: Runtime) -> Envelope:
    """An envelope sent now by the calling context, in the trace of what it is handling."""
    ctx = _context.get()
    parent = None if ctx is None else ctx.current
    cid = rt.next_id()
    return Envelope(
        message,
        kind,
        cid,
        cid if parent is None else parent.trace_id,
        None if parent is None else parent.correlation_id,
        None if ctx is None else ctx.pid,
        rt.now(),
    )


# --------------------------------------------------------------------------------------------
# call and reply


@overload
async def call(target: Any, request: Request[R], timeout: float = 5.0) -> R: ...
@overload
async def call(target: Any, request: Any, timeout: float = 5.0) -> Any: ...


async def call(target: Any, request: Any, timeout: float = 5.0) -> Any:
    """Send ``request`` to a server and wait for its reply.

    ``timeout`` (seconds, default 5, ``otp.INFINITY`` for none) covers waiting for room in the
    mailbox as well as the reply; :class:`CallTimeout` when it runs out. A server that is dead
    fails the call at once with :class:`NoProcess`; one that exits (or is exiting) before
    replying fails it with :class:`CallError` carrying the exit reason; an exception in its
    ``handle_call`` arrives as :class:`CallError` with that exception as ``reason``.

    A request that subclasses ``otp.Request[T]`` types the reply as ``T`` for the type
    checker (nothing is checked at run time).

    Cancelling the caller abandons the call: the request may still be handled, its reply is
    dropped (and the server stops holding it). A checkpoint.
    """
    await trio.lowlevel.checkpoint_if_cancelled()
    proc: _Process = target._proc if type(target) is Pid else resolve(target)
    status = proc.status
    if status >= EXITING:
        if status == DEAD:
            raise NoProcess(target, proc.exit_reason)
        raise CallError(target, proc.exit_reason)
    if not timeout > 0:
        raise ValueError(f"a call timeout must be > 0 seconds, not {timeout!r}")
    rt = proc.runtime
    task = current_task()
    if task is proc.task:
        raise OtpError(f"{proc.pid!r} called itself: that would deadlock")
    # From(...) without the call to __init__, as in _deliver.
    env = _new(From)
    env.message = request
    env.kind = _CALL
    env.correlation_id = cid = rt.next_id()
    ctx = _context.get()
    if ctx is None:
        env.trace_id = cid
        env.causation_id = env.sender = None
    else:
        env.sender = ctx.pid
        parent = ctx.current
        if parent is None:
            env.trace_id = cid
            env.causation_id = None
        else:
            env.trace_id = parent.trace_id
            env.causation_id = parent.correlation_id
    offset = rt.clock_offset
    env.sent_at = now = rt.now() if offset is None else offset + perf_counter()
    env.task = task
    env.state = PENDING
    env.bucket = env.held = None
    if timeout != INFINITY:
        rt.timers.add_call(env, timeout, now)
    try:
        if not proc.offer(env):
            proc.add_blocked(env, None)
    except MailboxFull:
        env._abort(None)
        raise
    try:
        return await wait_task_rescheduled(env)
    except Expired:
        raise CallTimeout(target, timeout) from None


def reply(from_: From, value: Any) -> None:
    """Answer a call whose handler returned :data:`NoReply`. Late or repeated replies are
    dropped (the caller has moved on)."""
    if type(from_) is not From:
        raise TypeError(f"reply takes the from_ of a handle_call, not {from_!r}")
    from_._reply(value)


# --------------------------------------------------------------------------------------------
# cast and send

def _target(target: Any, missing_ok: bool) -> _Process | None:
    """The process a cast or send goes to; None for an unregistered name with
    ``missing_ok`` (the message is lost), else NoProcess."""
    if type(target) is Pid:
        proc: _Process = target._proc
        return proc
    pid = lookup(current_runtime(), target)
    if pid is None:
        if missing_ok:
            return None
        raise NoProcess(target)
    found: _Process = pid._proc
    return found


async def _deliver(target: Any, message: Any, kind: Kind, missing_ok: bool) -> None:
    # The hot path of every cast and send: the envelope is built inline (not by
    # new_envelope), and only one send in SEND_BURST is a checkpoint.
    proc = target._proc if type(target) is Pid else _target(target, missing_ok)
    if proc is None:
        await trio.lowlevel.checkpoint()
        return
    rt = proc.runtime
    sends = rt.sends + 1
    if sends >= SEND_BURST:
        rt.sends = 0
        await trio.lowlevel.checkpoint_if_cancelled()
    else:
        rt.sends = sends
    if proc.status != DEAD:  # else lost, as in OTP
        # Envelope(...) without the call to __init__: a third of its cost.
        env = _new(Envelope)
        env.message = message
        env.kind = kind
        env.correlation_id = cid = rt.next_id()
        ctx = _context.get()
        if ctx is None:
            env.trace_id = cid
            env.causation_id = env.sender = None
        else:
            env.sender = ctx.pid
            parent = ctx.current
            if parent is None:
                env.trace_id = cid
                env.causation_id = None
            else:
                env.trace_id = parent.trace_id
                env.causation_id = parent.correlation_id
        offset = rt.clock_offset
        env.sent_at = rt.now() if offset is None else offset + perf_counter()
        queue = proc.queue
        if (proc.hook is None and queue is not None and len(queue) < proc.capacity
                and not proc.blocked):
            # Inbox.offer's fast path, inline: room, no tracer, nobody waiting before us.
            queue.append(env)
            if proc.waiting:
                proc.waiting = False
                reschedule(proc.task, WOKEN)  # type: ignore[arg-type]
        elif not proc.offer(env):
            await wait_for_room(proc, env)
            return
    if sends >= SEND_BURST:
        await trio.lowlevel.cancel_shielded_checkpoint()


async def put(proc: _Process, env: Envelope) -> None:
    """Queue ``env`` in ``proc``'s mailbox, waiting for room under ``BLOCK`` (the bus)."""
    if not proc.offer(env):
        await wait_for_room(proc, env)
        return
    rt = proc.runtime
    rt.sends += 1
    if rt.sends >= SEND_BURST:
        rt.sends = 0
        await trio.lowlevel.cancel_shielded_checkpoint()


async def wait_for_room(proc: _Process, env: Envelope) -> None:
    """Wait behind a full ``BLOCK`` mailbox until ``env`` is in (or the process died)."""
    entry = proc.add_blocked(env, current_task())

    def abort(_raise_cancel: Any) -> Abort:
        entry[1] = GAVE_UP
        return Abort.SUCCEEDED

    await wait_task_rescheduled(abort)


def _enqueue_nowait(target: Any, message: Any, kind: Kind, missing_ok: bool) -> bool:
    proc = _target(target, missing_ok)
    if proc is None or proc.status == DEAD:
        return False
    if proc.offer(new_envelope(message, kind, proc.runtime)):
        return True
    raise trio.WouldBlock


def cast(target: Any, msg: Any) -> Coroutine[Any, Any, None]:
    """``await otp.cast(target, msg)``: send ``msg`` to ``handle_cast`` of the target without
    waiting for it to be handled.

    A cast to a dead process or an unknown name is silently lost, as in OTP. When the mailbox
    is full, the overflow policy decides (``BLOCK`` waits here). It waits, and is a
    checkpoint, when it must wait for room and once every :data:`SEND_BURST` sends of the
    runtime; otherwise it queues the message and returns at once, as ``send_nowait`` followed
    by a yield every 16 sends would. (A plain function returning the coroutine: one
    coroutine frame less per message.)
    """
    return _deliver(target, msg, _CAST, True)


def cast_nowait(target: Any, msg: Any) -> bool:
    """Synchronous :func:`cast`: raises ``trio.WouldBlock`` where :func:`cast` would wait.

    Returns whether the message was queued.
    """
    return _enqueue_nowait(target, msg, _CAST, True)


def send(target: Any, msg: Any) -> Coroutine[Any, Any, None]:
    """``await otp.send(target, msg)``: send a raw message to the target's ``handle_info``.

    Sending to an unregistered name raises :class:`NoProcess` (Erlang's ``badarg``); to a dead
    pid the message is silently lost. Checkpoints as :func:`cast` does.
    """
    return _deliver(target, msg, _INFO, False)


def send_nowait(target: Any, msg: Any) -> bool:
    """Synchronous :func:`send`: raises ``trio.WouldBlock`` where :func:`send` would wait."""
    return _enqueue_nowait(target, msg, _INFO, False)


# --------------------------------------------------------------------------------------------
# Timed sends


def send_after(target: Any, msg: Any, delay: float) -> TimerRef:
    """Send ``msg`` to ``target``'s ``handle_info`` after ``delay`` seconds (virtual under a
    MockClock), like Erlang's ``erlang:send_after``.

    The target is checked here (``TypeError`` if it is not a pid, a name or a via-name) but
    looked up when the timer fires: if no process has the name then, or the mailbox refuses
    the message, it is dropped, logged and counted (``Runtime.timers_dropped``). Timers live
    in the runtime (one task keeps all of them), not in the calling task; the message's
    sender and trace are the caller's. A negative delay fires at once.
    """
    check_target(target)
    if isinstance(delay, bool) or not isinstance(delay, int | float) or delay != delay:
        raise TypeError(f"send_after delay must be a number of seconds, not {delay!r}")
    rt = current_runtime()
    ctx = _context.get()
    ref = TimerRef(target, msg, None if ctx is None else ctx.pid, current_envelope())
    rt.timers.add_timer(ref, trio.current_time() + max(delay, 0.0))
    return ref


def cancel_timer(ref: TimerRef) -> bool:
    """Cancel a :func:`send_after`. True if that stopped it; False if it had already fired
    or been cancelled. The message is released at once."""
    return ref.cancel()


def deliver_timer(rt: Runtime, ref: TimerRef, now: float) -> None:
    """Deliver a due timer (run by the timer task: never raises)."""
    try:
        pid = lookup(rt, ref.target)
    except Exception as exc:  # a via-registry whose lookup fails
        rt.timers_dropped += 1
        logger.warning("timed message to %r dropped: looking up the name failed: %r",
                       ref.target, exc)
        return
    if pid is None or pid._proc.status == DEAD:
        rt.timers_dropped += 1
        logger.warning("timed message to %r dropped: no such process", ref.target)
        return
    proc: _Process = pid._proc
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
        queued = proc.offer(env)
    except MailboxFull:
        queued = False
    if not queued:
        rt.timers_dropped += 1
        logger.warning("timed message to %r dropped: its mailbox is full", ref.target)

