"""Envelopes: the metadata every delivered message travels with.

Each message carries a ``correlation_id`` (a call's request and reply share it), a
``trace_id`` (inherited from the envelope being handled when the message was sent, so every
message caused by one request shares one trace), a ``causation_id`` (the correlation id of the
message whose handling sent this one), the sender's pid and the send time (``trio.current_time``,
so virtual under a MockClock). Ids are integers from the runtime's counter: cheap and, in a
seeded simulation, deterministic.

While a handler runs, :func:`current_envelope` returns its envelope; the value lives in a
context variable, so tasks the handler starts inherit it and calls it makes carry the trace on.
"""

from __future__ import annotations

import contextvars
import enum
from typing import TYPE_CHECKING, Any

import attrs

if TYPE_CHECKING:
    from ._process import Pid


class Kind(enum.IntEnum):
    CALL = 0
    CAST = 1
    INFO = 2


@attrs.define(slots=True, eq=False, repr=False, init=False)
class Envelope:
    """A message and its metadata. Treat it as read-only.

    (An attrs class with a hand-written ``__init__``: every message pays for its construction,
    and the generated one costs twice as much.)
    """

    message: Any
    kind: Kind
    correlation_id: int
    trace_id: int
    causation_id: int | None
    sender: Pid | None
    sent_at: float

    def __init__(
        self,
        message: Any,
        kind: Kind,
        correlation_id: int,
        trace_id: int,
        causation_id: int | None,
        sender: Pid | None,
        sent_at: float,
    ) -> None:
        self.message = message
        self.kind = kind
        self.correlation_id = correlation_id
        self.trace_id = trace_id
        self.causation_id = causation_id
        self.sender = sender
        self.sent_at = sent_at

    def __repr__(self) -> str:
        return (
            f"Envelope({self.kind.name.lower()} {self.message!r}, corr={self.correlation_id}, "
            f"trace={self.trace_id}, cause={self.causation_id}, from={self.sender!r})"
        )


_current_envelope: contextvars.ContextVar[Envelope | None] = contextvars.ContextVar(
    "otp_current_envelope", default=None
)


def current_envelope() -> Envelope | None:
    """The envelope of the message being handled, or None outside a handler."""
    return _current_envelope.get()


def current_trace_id() -> int | None:
    """The trace id flowing through this context, or None."""
    env = _current_envelope.get()
    return None if env is None else env.trace_id
