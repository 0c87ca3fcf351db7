"""The values processes exchange with the runtime: pids, exit notices and handler directives.

* :class:`Pid` names a process. It is hashable, ordered by creation and printed ``<0.N.0>``.
* :class:`Down` and :class:`Exit` are the messages a monitor and a trapped link deliver when a
  process exits.
* :data:`NoReply`, :class:`Continue`, :class:`Stop` and :class:`Ignore` are what callbacks may
  return to steer their process (see :class:`otp.GenServer` for which callback may return
  which).

Exit reasons are ``"normal"``, ``"shutdown"``, ``("shutdown", detail)``, ``"killed"`` (a process
that received the untrappable ``"kill"`` signal), ``"noproc"`` (a monitor or link of a process
that does not exist) or the exception that crashed the process. :func:`is_normal_exit` tells
the first three apart from the rest.
"""

from __future__ import annotations

import math
from typing import Any, Final

import attrs

INFINITY: Final = math.inf
"""A timeout or shutdown time that never runs out."""

# The states of a process, in the order it passes through them.
STARTING, RUNNING, EXITING, DEAD = 0, 1, 2, 3
STATUS_NAMES: Final = ("starting", "running", "exiting", "dead")


class Pid:
    """A process identifier. Hashable and ordered by creation; ``repr`` is ``<0.N.0>``."""

    __slots__ = ("_proc", "id")

    def __init__(self, id: int, proc: Any) -> None:
        self.id = id
        #: The process itself (an ``otp._proc._Process``). Typed ``Any`` so that this, the
        #: bottom module, imports nothing above it; internal code reads it into a typed local.
        self._proc = proc

    def __repr__(self) -> str:
        return f"<0.{self.id}.0>"

    def __eq__(self, other: object) -> bool:
        return type(other) is Pid and other.id == self.id

    def __lt__(self, other: Pid) -> bool:
        return self.id < other.id

    def __hash__(self) -> int:
        return hash(self.id)

    def is_alive(self) -> bool:
        """True until the process has fully exited."""
        return bool(self._proc.status != DEAD)


@attrs.frozen
class Down:
    """Delivered to ``handle_info`` of a monitoring process when the monitored one exits.

    It is queued after every message the monitored process sent to the watcher before it
    exited.
    """

    ref: int
    pid: Any
    reason: Any


@attrs.frozen
class Exit:
    """Delivered to ``handle_info`` of a process that traps exits when a linked one exits.

    It is queued after every message the linked process sent before it exited (an exit
    signal from a task of the process itself, or from :func:`otp.exit`, has ``pid`` of the
    sender or None).
    """

    pid: Pid | None
    reason: Any


def is_normal_exit(reason: Any) -> bool:
    """True for ``"normal"``, ``"shutdown"`` and ``("shutdown", detail)``."""
    if reason == "normal" or reason == "shutdown":
        return True
    return isinstance(reason, tuple) and len(reason) == 2 and reason[0] == "shutdown"


# --------------------------------------------------------------------------------------------
# Directives: what a callback returns to steer its process


class _Directive:
    __slots__ = ()


class _NoReplyType(_Directive):
    __slots__ = ()

    def __repr__(self) -> str:
        return "otp.NoReply"


NoReply: Final = _NoReplyType()
"""Return from ``handle_call`` to reply later with :func:`otp.reply` (or not at all)."""

#: "No value given" for the ``reply=`` of Continue and Stop (None is a valid reply).
NOTHING: Final[Any] = object()


@attrs.frozen
class Continue(_Directive):
    """Return from ``init`` or a handler: ``handle_continue(arg)`` runs before the next message.

    From ``handle_call``, ``reply=`` sends that reply first; without it the reply is deferred.
    """

    arg: Any = None
    reply: Any = attrs.field(default=NOTHING, kw_only=True, repr=False)


@attrs.frozen
class Stop(_Directive):
    """Return from a handler to stop: ``terminate(reason)`` runs, then the process exits.

    From ``handle_call``, ``reply=`` sends that reply before terminating. From ``init`` it
    refuses to start (Erlang's ``{stop, Reason}``): the start fails with ``reason``,
    ``terminate`` does not run and nothing is left running or registered.
    """

    reason: Any = "normal"
    reply: Any = attrs.field(default=NOTHING, kw_only=True, repr=False)


class _IgnoreType(_Directive):
    __slots__ = ()

    def __repr__(self) -> str:
        return "otp.Ignore"


Ignore: Final = _IgnoreType()
"""Return from ``init`` to decline to start without an error (Erlang's ``ignore``).

:func:`otp.start` then returns None and nothing is left running or registered; a supervisor
records the child as not running (status ``"ignored"``) without counting a restart.
"""
