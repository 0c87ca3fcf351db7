"""otp._park.park: Trio's wait_task_rescheduled without its coroutine frame, or Trio's own
function when Trio's internals no longer match."""

from __future__ import annotations

from typing import Any

import outcome
import pytest
import trio
from trio.lowlevel import Abort, current_task, reschedule

from otp import _park
from otp._park import park


def test_the_lighter_park_is_in_use_with_this_trio() -> None:
    # If this fails, Trio changed wait_task_rescheduled: otp still works (park is Trio's
    # function), but every idle process holds three more objects; see otp/_park.py.
    assert _park.LIGHTER, trio.__version__


def test_a_trio_whose_wait_is_not_the_single_yield_gets_its_own_function(
        monkeypatch: pytest.MonkeyPatch) -> None:
    async def other(abort: Any) -> Any:
        return await trio.lowlevel.wait_task_rescheduled(abort)

    monkeypatch.setattr(trio.lowlevel, "wait_task_rescheduled", other)
    assert _park._lighter_park() is None


async def test_park_returns_what_the_task_is_rescheduled_with() -> None:
    task = current_task()

    async def wake(value: outcome.Outcome[Any]) -> None:
        await trio.sleep(1.0)
        reschedule(task, value)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(wake, outcome.Value(42))
        assert await park(lambda _: Abort.SUCCEEDED) == 42
        nursery.start_soon(wake, outcome.Error(KeyError("x")))
        with pytest.raises(KeyError):
            await park(lambda _: Abort.SUCCEEDED)


async def test_cancelling_a_parked_task_calls_its_abort_function() -> None:
    aborted: list[bool] = []

    def abort(_raise_cancel: Any) -> Abort:
        aborted.append(True)
        return Abort.SUCCEEDED

    with trio.move_on_after(1.0) as scope:
        await park(abort)
    assert scope.cancelled_caught and aborted == [True]
