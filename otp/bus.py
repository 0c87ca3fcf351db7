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

from . import _process
from ._envelope import Envelope, Kind
from ._errors import MailboxFull

__all__ = ["publish", "publish_nowait", "subscribe", "subscribers", "unsubscribe"]


def subscribe(topic: Any) -> None:
    """Subscribe the calling process to ``topic``. Subscribing twice is a no-op."""
    proc = _process._current_process()
    rt = proc.runtime
    subs = rt.topics.setdefault(topic, {})
    if proc in subs:
        return
    subs[proc] = None
    mine = rt.subscriptions.get(proc)
    if mine is None:
        # One cleanup per process, however often it subscribes and unsubscribes.
        mine = rt.subscriptions[proc] = {}
        proc.add_cleanup(_drop_subscriber)
    mine[topic] = None


def _drop_subscriber(proc: _process._Process) -> None:
    rt = proc.runtime
    for topic in rt.subscriptions.pop(proc, ()):
        _leave(rt, proc, topic)


def _leave(rt: _process.Runtime, proc: _process._Process, topic: Any) -> None:
    subs = rt.topics.get(topic)
    if subs is not None:
        subs.pop(proc, None)
        if not subs:
            del rt.topics[topic]


def unsubscribe(topic: Any) -> None:
    """Stop receiving ``topic``."""
    proc = _process._current_process()
    rt = proc.runtime
    mine = rt.subscriptions.get(proc)
    if mine is not None:
        mine.pop(topic, None)
    _leave(rt, proc, topic)


def subscribers(topic: Any) -> list[_process.Pid]:
    """The pids subscribed to ``topic``."""
    rt = _process.current_runtime()
    return [p.pid for p in rt.topics.get(topic, {})]


async def publish(topic: Any, event: Any) -> int:
    """Deliver ``event`` to every subscriber of ``topic``; returns how many got it.

    Waits where a subscriber's ``BLOCK`` mailbox is full. A subscriber whose policy refuses
    the event (``FAIL``) is skipped and counted as dropped; the others still get it.
    A checkpoint.
    """
    await trio.lowlevel.checkpoint_if_cancelled()
    rt = _process.current_runtime()
    delivered = 0
    for proc in list(rt.topics.get(topic, ())):
        if proc.status == _process.DEAD:
            continue
        env = _process._new_env(Envelope, event, Kind.INFO, rt)
        try:
            await _process._put(proc, env)
        except MailboxFull:
            continue
        delivered += 1
    await trio.lowlevel.cancel_shielded_checkpoint()
    return delivered


def publish_nowait(topic: Any, event: Any) -> int:
    """Synchronous :func:`publish` that never waits; returns how many subscribers got it."""
    rt = _process.current_runtime()
    delivered = 0
    for proc in list(rt.topics.get(topic, ())):
        if proc.status == _process.DEAD:
            continue
        env = _process._new_env(Envelope, event, Kind.INFO, rt)
        try:
            if proc.offer(env):
                delivered += 1
            else:
                proc.dropped += 1
        except MailboxFull:
            continue
    return delivered
