"""Calls to a sibling actor that ride out its restart: one fault, one restart, no cascade.

When an actor's supervisor is restarting it (after its backoff), its name is briefly not
registered, and a call made then fails with :class:`otp.NoProcess`; a call in flight when it
dies fails with :class:`otp.CallError`. An actor that let either crash it would be restarted
too, its supervisor would count two restarts for one fault, and in-memory state would be
lost. :func:`call` instead waits for the sibling to be back (polling the registry) and
retries, for at most ``wait`` seconds in all, then raises :class:`SiblingUnavailable` — a
clear error the calling actor turns into an answer to *its* caller (or a skipped slot),
without crashing.

Only idempotent requests may go through :func:`call`: a request whose server died while
handling it may have taken effect, and is sent again. A server that crashed *because of* the
request (its exception is the exit reason) is retried at most once, so a request that kills
its server every time costs one extra restart, not a crash loop. A server that is alive but
slow is not waited for beyond the call's own ``timeout`` (:class:`otp.CallTimeout`).

Waiting reads Trio's clock, so under ``trio.testing.MockClock`` it costs no real time.
"""

from __future__ import annotations

from typing import Any, Final, TypeVar, overload

import trio

import otp

from ..errors import SiblingUnavailable
from ..messages.storage import Refused

__all__ = ["DEFAULT_WAIT", "POLL_INTERVAL", "SiblingUnavailable", "call", "call_storage"]

R = TypeVar("R")

#: How long a call waits in all for a restarting sibling, by default (seconds).
DEFAULT_WAIT: Final = 10.0
#: How often the registry is looked at while waiting (seconds).
POLL_INTERVAL: Final = 0.02




@overload
async def call(target: str, request: otp.Request[R], *, timeout: float = 5.0,
               wait: float = DEFAULT_WAIT) -> R: ...
@overload
async def call(target: str, request: Any, *, timeout: float = 5.0,
               wait: float = DEFAULT_WAIT) -> Any: ...


async def call(target: str, request: Any, *, timeout: float = 5.0,
               wait: float = DEFAULT_WAIT) -> Any:
    """``otp.call(target, request, timeout)``, waiting up to ``wait`` seconds in all for
    ``target`` to be registered and alive again if it is not (see the module docstring)."""
    deadline = trio.current_time() + wait
    crashed_on_request = False
    while True:
        try:
            return await otp.call(target, request, timeout=timeout)
        except otp.NoProcess as exc:
            last: BaseException = exc
        except otp.CallError as exc:
            if isinstance(exc.reason, BaseException):
                if crashed_on_request:
                    raise
                crashed_on_request = True
            last = exc
        # Wait until a live process holds the name again (or give up).
        await trio.sleep(POLL_INTERVAL)
        while otp.whereis(target) is None:
            if trio.current_time() >= deadline:
                raise SiblingUnavailable(target, wait, last)
            await trio.sleep(POLL_INTERVAL)
        if trio.current_time() >= deadline:
            raise SiblingUnavailable(target, wait, last)


async def call_storage(request: otp.Request[R], *, storage: str = "storage",
                       wait: float = DEFAULT_WAIT) -> R:
    """Ask the StorageActor registered as ``storage``, riding out its restarts (:func:`call`);
    a :class:`node.messages.storage.Refused` answer raises its error here."""
    answer: Any = await call(storage, request, wait=wait)
    if isinstance(answer, Refused):
        raise answer.error
    result: R = answer
    return result
