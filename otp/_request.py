"""Typed requests: a call request that declares the type of its reply.

``class GetBlock(otp.Request[Block | None]): ...`` makes ``await otp.call(pid, GetBlock(...))``
typed ``Block | None`` for the type checker. Nothing changes at run time: a request is any
value, and a server may answer anything.
"""

from __future__ import annotations

from typing import Generic, TypeVar

R_co = TypeVar("R_co", covariant=True)


class Request(Generic[R_co]):
    """Base class of a call request whose reply is an ``R_co`` (see the module docs)."""

    __slots__ = ()
