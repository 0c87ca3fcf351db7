"""The otp.runtime() block: however it ends, its processes stop in order, with terminate."""

from __future__ import annotations

from typing import Any

import pytest
import trio

import otp

from .servers import TERMINATED, Counter, Sleeper


@pytest.fixture(autouse=True)
def _clear() -> None:
    TERMINATED.clear()


class CallsOnExit(Counter):
    """Its terminate calls another process: it must still be there (stopped newest first)."""

    async def init(self, other: Any = None, label: Any = None) -> None:  # type: ignore[override]
        await super().init(0, label)
        self.other = other

    async def terminate(self, reason: Any) -> None:
        answer = await otp.call(self.other, "get")
        TERMINATED.append((self.label, reason, answer))


async def _start_three() -> list[otp.Pid]:
    pids = []
    for label in "abc":
        pid = await otp.start(Sleeper, 0.1, label)
        assert pid is not None
        pids.append(pid)
    return pids


def _assert_clean(rt: otp.lowlevel.Runtime, pids: list[otp.Pid]) -> None:
    assert TERMINATED == [("c", "shutdown"), ("b", "shutdown"), ("a", "shutdown")]
    assert not any(pid.is_alive() for pid in pids)
    assert rt.procs == {} and rt.roots == {} and rt.names == {}


async def test_cancelling_the_scope_around_the_runtime_runs_terminate_newest_first() -> None:
    with trio.move_on_after(5.0) as scope:
        async with otp.runtime() as rt:
            pids = await _start_three()
            await trio.sleep_forever()
    assert scope.cancelled_caught
    _assert_clean(rt, pids)
    # Each terminate took its 0.1 s, one after the other: nobody was cancelled at once.
    assert trio.current_time() == pytest.approx(5.3)


async def test_a_failing_sibling_task_shuts_the_runtime_down_in_order() -> None:
    async def boom() -> None:
        await trio.sleep(1.0)
        raise RuntimeError("sibling failed")

    holder: dict[str, Any] = {}
    with pytest.RaisesGroup(pytest.RaisesExc(RuntimeError, match="sibling failed")):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(boom)
            async with otp.runtime() as rt:
                holder["rt"] = rt
                holder["pids"] = await _start_three()
                await trio.sleep_forever()
    _assert_clean(holder["rt"], holder["pids"])


async def test_cancel_scope_cancel_inside_the_block_shuts_down_in_order() -> None:
    with trio.CancelScope() as scope:
        async with otp.runtime() as rt:
            pids = await _start_three()
            scope.cancel()
            await trio.lowlevel.checkpoint()
    _assert_clean(rt, pids)


async def test_terminate_may_call_older_processes_while_the_cancelled_runtime_stops() -> None:
    with trio.move_on_after(1.0):
        async with otp.runtime():
            first = await otp.start(Counter, 7, "first")
            await otp.start(CallsOnExit, first, "second")
            await trio.sleep_forever()
    assert TERMINATED == [("second", "shutdown", 7), ("first", "shutdown")]


async def test_a_terminate_past_its_shutdown_time_is_killed_when_the_scope_is_cancelled() -> None:
    with trio.move_on_after(1.0):
        async with otp.runtime() as rt:
            slow = await otp.start(Sleeper, 60.0, "slow")
            quick = await otp.start(Sleeper, 0.5, "quick")
            await trio.sleep_forever()
    # quick is newest: its terminate finishes; slow is killed after the worker's 5 s.
    assert TERMINATED == [("quick", "shutdown")]
    assert slow is not None and quick is not None
    assert slow._proc.exit_reason == "killed"
    assert trio.current_time() == pytest.approx(1.0 + 0.5 + 5.0)
    assert rt.procs == {}


async def test_a_supervision_tree_stops_in_order_when_the_scope_is_cancelled() -> None:
    children = [otp.ChildSpec(label, Sleeper, args=(0.1, label)) for label in "xyz"]
    with trio.move_on_after(1.0):
        async with otp.runtime() as rt:
            await otp.start(otp.Supervisor, children=children)
            await trio.sleep_forever()
    assert TERMINATED == [("z", "shutdown"), ("y", "shutdown"), ("x", "shutdown")]
    assert rt.procs == {}
