"""A publish/subscribe event bus between processes.

``await otp.bus.publish(topic, event)`` delivers ``event`` to ``handle_info`` of every process
subscribed to ``topic`` (as sent, with an envelope whose trace is the publisher's). A process
subscribes itself with ``otp.bus.subscribe(topic)`` and is unsubscribed automatically when it
exits. Each delivery honours the subscriber's mailbox overflow policy; ``publish_nowait`` never
waits and skips subscribers whose ``BLOCK`` mailbox is full (counted as dropped).
"""

from __future__ import annotations

from typing import Any

import trio

from ._envelope import Kind
from ._errors import MailboxFull
from ._messaging import new_envelope, put
from ._proc import _Process, current_process
from ._runtime import Runtime, current_runtime
from ._values import DEAD, Pid

__all__ = ["publish", "publish_nowait", "subscribe", "subscribers", "unsubscribe"]


def subscribe(topic: Any) -> None:
    """Subscribe the calling process to ``topic``. Subscribing twice is a no-op."""
    proc = current_process()
    rt, pid = proc.runtime, proc.pid
    subs = rt.topics.setdefault(topic, {})
    if pid in subs:
        return
    subs[pid] = None
    mine = rt.subscriptions.get(pid)
    if mine is None:
        # One cleanup per process, however often it subscribes and unsubscribes.
        mine = rt.subscriptions[pid] = {}
        proc.add_cleanup(_drop_subscriber)
    mine[topic] = None


def _drop_subscriber(proc: _Process) -> None:
    rt = proc.runtime
    for topic in rt.subscriptions.pop(proc.pid, ()):
        _leave(rt, proc.pid, topic)


def _leave(rt: Runtime, pid: Pid, topic: Any) -> None:
    subs = rt.topics.get(topic)
    if subs is not None:
        subs.pop(pid, None)
        if not subs:
            del rt.topics[topic]


def unsubscribe(topic: Any) -> None:
    """Stop receiving ``topic``."""
    proc = current_process()
    rt = proc.runtime
    mine = rt.subscriptions.get(proc.pid)
    if mine is not None:
        mine.pop(topic, None)
    _leave(rt, proc.pid, topic)


def subscribers(topic: Any) -> list[Pid]:
    """The pids subscribed to ``topic``."""
    rt = current_runtime()
    return list(rt.topics.get(topic, {}))


def _live(rt: Runtime, topic: Any) -> list[_Process]:
    return [p for p in (pid._proc for pid in rt.topics.get(topic, ())) if p.status != DEAD]


async def publish(topic: Any, event: Any) -> int:
    """Deliver ``event`` to every subscriber of ``topic``; returns how many got it.

    Waits where a subscriber's ``BLOCK`` mailbox is full. A subscriber whose policy refuses
    the event (``FAIL``) is skipped and counted as dropped; the others still get it.
    A checkpoint.
    """
    await trio.lowlevel.checkpoint_if_cancelled()
    rt = current_runtime()
    delivered = 0
    for proc in _live(rt, topic):
        if proc.status == DEAD:  # it may have died while an earlier delivery waited
            continue
        try:
            await put(proc, new_envelope(event, Kind.INFO, rt))
        except MailboxFull:
            continue
        delivered += 1
    await trio.lowlevel.cancel_shielded_checkpoint()
    return delivered


def publish_nowait(topic: Any, event: Any) -> int:
    """Synchronous :func:`publish` that never waits; returns how many subscribers got it."""
    rt = current_runtime()
    delivered = 0
    for proc in _live(rt, topic):
        try:
            if proc.offer(new_envelope(event, Kind.INFO, rt)):
                delivered += 1
            else:
                proc.dropped += 1
        except MailboxFull:
            continue
    return delivered
