"""Exceptions raised by :mod:`otp`. All of them derive from :class:`OtpError`."""

from __future__ import annotations

from typing import Any


class OtpError(Exception):
    """Base class of every error :mod:`otp` raises on its own account."""


class NoProcess(OtpError, LookupError):
    """The target is not a live process: an unregistered name or a pid that has exited.

    ``reason`` is the exit reason when the target is a pid that has exited, else ``"noproc"``.
    Raised at once, never after a timeout.
    """

    def __init__(self, target: Any, reason: Any = "noproc") -> None:
        super().__init__(f"no process {target!r} (reason: {reason!r})")
        self.target = target
        self.reason = reason


class CallError(OtpError):
    """A call failed because the server crashed or exited before replying.

    ``reason`` is the server's exit reason: the exception raised in its handler (also set as
    ``__cause__``), or ``"normal"``, ``"shutdown"``, ``("shutdown", detail)``, ``"killed"``.
    """

    def __init__(self, target: Any, reason: Any) -> None:
        super().__init__(f"call to {target!r} failed: {describe_reason(reason)}")
        self.target = target
        self.reason = reason
        if isinstance(reason, BaseException):
            self.__cause__ = reason


class CallTimeout(OtpError, TimeoutError):
    """No reply arrived within the call's timeout (enqueueing included)."""

    def __init__(self, target: Any, timeout: float) -> None:
        super().__init__(f"call to {target!r} timed out after {timeout} s")
        self.target = target
        self.timeout = timeout


class MailboxFull(OtpError):
    """The target's mailbox is full and its overflow policy refuses the message.

    Raised in the sender under ``Overflow.FAIL``, and in a caller whose request can never be
    answered because ``DROP_NEWEST`` dropped it or ``DROP_OLDEST`` evicted it.
    """

    def __init__(self, target: Any, capacity: int) -> None:
        super().__init__(f"mailbox of {target!r} is full (capacity {capacity})")
        self.target = target
        self.capacity = capacity


class AlreadyRegistered(OtpError):
    """A name is already held by a live process."""

    def __init__(self, name: Any, pid: Any) -> None:
        super().__init__(f"name {name!r} is already registered to {pid!r}")
        self.name = name
        self.pid = pid


class StartRefused(OtpError):
    """A process's ``init`` returned ``otp.Stop(reason)``: it refused to start.

    ``reason`` is that reason. (An ``init`` that raises makes the start raise the exception
    itself, as does a ``Stop`` whose reason is an exception.)
    """

    def __init__(self, cls: Any, reason: Any) -> None:
        super().__init__(f"{getattr(cls, '__qualname__', cls)} refused to start: "
                         f"{describe_reason(reason)}")
        self.cls = cls
        self.reason = reason


class StartError(OtpError):
    """A supervisor could not start one of its children."""

    def __init__(self, child_id: Any, reason: Any) -> None:
        super().__init__(f"failed to start child {child_id!r}: {describe_reason(reason)}")
        self.child_id = child_id
        self.reason = reason
        if isinstance(reason, BaseException):
            self.__cause__ = reason


class SupervisorError(OtpError):
    """A supervisor refused a request (unknown child id, child running, max children...)."""


def describe_reason(reason: Any) -> str:
    """A reason as text: an exception as ``Type: message``, anything else as its repr."""
    if isinstance(reason, BaseException):
        return f"{type(reason).__name__}: {reason}"
    return repr(reason)
