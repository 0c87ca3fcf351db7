"""Mailbox settings: a bounded queue of ordinary messages plus an unbounded system lane.

A process owns two queues. Ordinary messages (calls, casts, sends, monitor ``Down`` notices)
go to the *user queue*, bounded by :attr:`Mailbox.capacity`; what happens when it is full is
the :class:`Overflow` policy. Exit signals, shutdown and stop requests, configuration updates
and ``sys`` requests go to the *system lane*, which is unbounded and always read first, so they
are never stuck behind user traffic.
"""

from __future__ import annotations

import enum

import attrs

DEFAULT_CAPACITY = 1024


class Overflow(enum.Enum):
    """What a full user queue does with one more message."""

    #: The sender waits until there is room (a call's wait counts against its timeout).
    BLOCK = "block"
    #: The oldest queued message is dropped to make room; a dropped call fails with MailboxFull.
    DROP_OLDEST = "drop_oldest"
    #: The new message is dropped; a cast or send is lost silently (counted), a call fails.
    DROP_NEWEST = "drop_newest"
    #: The sender gets :class:`otp.MailboxFull` at once.
    FAIL = "fail"


def _to_overflow(value: object) -> Overflow:
    if isinstance(value, Overflow):
        return value
    try:
        return Overflow(value)
    except ValueError:
        allowed = ", ".join(repr(o.value) for o in Overflow)
        raise ValueError(f"mailbox overflow must be one of {allowed}, not {value!r}") from None


def _check_capacity(_inst: object, _attr: object, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"mailbox capacity must be an int, not {type(value).__name__}")
    if value < 1:
        raise ValueError(f"mailbox capacity must be at least 1, not {value}")


@attrs.frozen
class Mailbox:
    """Settings of a process's user queue: ``capacity`` messages, then ``overflow``.

    Validated at construction: a bad capacity or policy raises here, not when the first message
    arrives.
    """

    capacity: int = attrs.field(default=DEFAULT_CAPACITY, validator=_check_capacity)
    overflow: Overflow = attrs.field(default=Overflow.BLOCK, converter=_to_overflow)


DEFAULT_MAILBOX = Mailbox()


@attrs.frozen
class MailboxStatistics:
    """A snapshot of one mailbox, like Trio's ``MemoryChannelStatistics``."""

    capacity: int
    overflow: Overflow
    depth: int
    system_depth: int
    blocked_senders: int
    dropped: int
