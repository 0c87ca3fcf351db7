"""Parking a task: ``trio.lowlevel.wait_task_rescheduled``, one object lighter.

Trio's public ``wait_task_rescheduled(abort)`` is an async function around a single yield of
a ``WaitTaskRescheduled(abort)`` message to the scheduler, whose answer (an Outcome) it
unwraps. Calling it makes a coroutine object, and a parked task keeps it: an idle process
would hold one more object for the garbage collector to track, for as long as it idles (a
process costs about a dozen such objects, and full collections walk all of them).
:func:`park` yields the same message from a generator-based coroutine, without that frame.

The message's class is Trio's own, taken from the module of the public function. This leans
on a Trio internal, so :func:`park` is used only while Trio's function is still exactly that
yield (its code names ``_async_yield``, ``WaitTaskRescheduled`` and ``unwrap`` and nothing
else); otherwise :data:`park` *is* the public function, and everything works as before.
"""

from __future__ import annotations

import types
from collections.abc import Awaitable, Callable, Generator
from typing import Any, Final

import trio
from trio.lowlevel import Abort

Park = Callable[[Callable[[Any], Abort]], Awaitable[Any]]

_EXPECTED_NAMES: Final = frozenset({"_async_yield", "WaitTaskRescheduled", "unwrap"})


def _lighter_park() -> Park | None:
    public = trio.lowlevel.wait_task_rescheduled
    code = getattr(public, "__code__", None)
    message = getattr(public, "__globals__", {}).get("WaitTaskRescheduled")
    if code is None or frozenset(code.co_names) != _EXPECTED_NAMES or message is None:
        return None

    @types.coroutine
    def park(abort: Callable[[Any], Abort]) -> Generator[Any, Any, Any]:
        return (yield message(abort_func=abort)).unwrap()

    return park


#: ``await park(abort)``: as ``trio.lowlevel.wait_task_rescheduled(abort)``.
park: Final[Park] = _lighter_park() or trio.lowlevel.wait_task_rescheduled
#: Whether :data:`park` is the lighter form (False: Trio's function itself).
LIGHTER: Final = park is not trio.lowlevel.wait_task_rescheduled
