"""Each kind of injected fault does what it says, at the virtual time it is scheduled."""

from __future__ import annotations

import logging
from typing import Any

import pytest
import trio

import otp
from otp.testing import Fault, FaultPlan, InjectedFault, simulate


@pytest.fixture(autouse=True)
def _quiet(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.CRITICAL, logger="otp")


class Recorder(otp.GenServer):
    """Records (virtual time, message) for everything it handles; relays on request."""

    async def init(self) -> None:
        await trio.lowlevel.checkpoint()
        self.log: list[tuple[float, Any]] = []

    async def handle_call(self, request: Any, from_: otp.From) -> Any:
        self.log.append((trio.current_time(), request))
        if isinstance(request, tuple) and request[0] == "relay":
            try:
                return await otp.call(request[1], request[2], timeout=0.5)
            except otp.CallTimeout:
                return "timeout"
        if request == "log":
            return [entry for entry in self.log if entry[1] != "log"]
        await trio.lowlevel.checkpoint()
        return "ok"

    async def handle_cast(self, msg: Any) -> None:
        await trio.lowlevel.checkpoint()
        self.log.append((trio.current_time(), msg))

    async def handle_info(self, msg: Any) -> None:
        await trio.lowlevel.checkpoint()
        self.log.append((trio.current_time(), msg))


def run(main: Any, *faults: Fault, max_delay: float = 0.05) -> Any:
    result = simulate(main, seed=1, faults=FaultPlan(schedule=faults, max_delay=max_delay))
    result.raise_failure()
    return result


def test_crash_raises_in_the_next_handler_and_the_supervisor_restarts() -> None:
    async def main() -> Any:
        await otp.start(
            otp.Supervisor, children=[otp.ChildSpec("w", Recorder, name="w")], name="sup"
        )
        first = otp.whereis("w")
        await trio.sleep(1.0)
        return first, otp.whereis("w")

    result = run(main, Fault(0.5, "crash", "w"))
    first, second = result.result
    assert first != second
    crash = next(e for e in result.trace if e.kind == "crash")
    assert crash.pid == first.id and crash.time == pytest.approx(0.5)
    exit_ = next(e for e in result.trace if e.kind == "exit" and e.pid == first.id)
    assert exit_.detail.startswith("InjectedFault(")
    assert any(e.kind == "restart" for e in result.trace)
    assert issubclass(InjectedFault, Exception)


def test_kill_ends_the_process_with_killed() -> None:
    async def main() -> Any:
        pid = await otp.start(Recorder, name="w")
        return await otp.wait_exit(pid)

    assert run(main, Fault(2.0, "kill", "w")).result == "killed"


def test_delay_holds_messages_back_by_up_to_max_delay() -> None:
    async def main() -> Any:
        pid = await otp.start(Recorder, name="w")
        await trio.sleep(0.1)
        await otp.cast(pid, "late")
        await trio.sleep(2.0)
        return await otp.call(pid, "log")

    ((t, msg),) = run(main, Fault(0.0, "delay", "w", duration=1.0), max_delay=0.5).result
    assert msg == "late" and 0.1 < t <= 0.6


def test_drop_loses_messages_for_its_duration() -> None:
    async def main() -> Any:
        pid = await otp.start(Recorder, name="w")
        await trio.sleep(0.1)
        with pytest.raises(otp.CallTimeout):
            await otp.call(pid, "lost", timeout=0.5)
        await trio.sleep(1.0)
        assert await otp.call(pid, "kept") == "ok"
        return await otp.call(pid, "log")

    result = run(main, Fault(0.0, "drop", "w", duration=1.0))
    assert [m for _, m in result.result] == ["kept"]
    assert any(e.kind == "drop" for e in result.trace)


def test_partition_drops_messages_between_the_sides() -> None:
    async def main() -> Any:
        a = await otp.start(Recorder, name="a")
        await otp.start(Recorder, name="b")
        await trio.sleep(0.1)
        during = await otp.call(a, ("relay", "b", "hi"))  # a -> b crosses the partition
        await trio.sleep(2.0)
        after = await otp.call(a, ("relay", "b", "hi"))
        return during, after

    assert run(main, Fault(0.0, "partition", group=("a",), duration=1.0)).result == (
        "timeout", "ok",
    )


def test_partition_with_hold_delivers_when_it_heals() -> None:
    class Sender(Recorder):
        async def handle_cast(self, msg: Any) -> None:
            await otp.cast("b", msg)

    async def main() -> Any:
        a = await otp.start(Sender, name="a")
        b = await otp.start(Recorder, name="b")
        await trio.sleep(0.1)
        await otp.cast(a, "held")
        await trio.sleep(2.0)
        return await otp.call(b, "log")

    result = run(main, Fault(0.0, "partition", group=("a",), duration=1.0, hold=True))
    ((t, msg),) = result.result
    assert msg == "held" and t == pytest.approx(1.0)


def test_slow_makes_the_next_handler_take_longer() -> None:
    async def main() -> Any:
        pid = await otp.start(Recorder, name="w")
        await trio.sleep(0.1)
        t0 = trio.current_time()
        await otp.call(pid, "x")
        return trio.current_time() - t0

    assert run(main, Fault(0.0, "slow", "w", duration=2.0)).result == pytest.approx(2.0)


def test_random_plan_avoids_spared_processes() -> None:
    async def main() -> Any:
        await otp.start(Recorder, name="precious")
        await otp.start(Recorder, name="other")
        await trio.sleep(5.0)
        return otp.whereis("precious") is not None

    result = simulate(
        main, seed=5, faults=FaultPlan(rate=20.0, kinds=("kill",), spare=("precious",))
    )
    assert result.ok and result.result is True
    assert any(e.kind == "fault" for e in result.trace)


def test_fault_plans_are_checked_when_built() -> None:
    with pytest.raises(ValueError):
        FaultPlan(kinds=("explode",))
    with pytest.raises(ValueError):
        FaultPlan(rate=-1.0)
    with pytest.raises(ValueError):
        Fault(-1.0, "crash")


def test_deadlock_is_reported_with_its_seed() -> None:
    async def main() -> None:
        await trio.sleep_forever()

    result = simulate(main, seed=42, max_virtual_time=10.0)
    assert not result.ok
    assert "did not finish within 10.0 virtual seconds" in str(result.failure)
    with pytest.raises(otp.testing.SimulationFailure, match="seed 42"):
        result.raise_failure()


def test_a_process_that_will_not_stop_is_killed_at_shutdown() -> None:
    class Stubborn(otp.GenServer):
        async def terminate(self, reason: Any) -> None:
            with trio.CancelScope(shield=True):
                await trio.sleep(10)

    async def main() -> None:
        await otp.start(Stubborn)

    result = simulate(main, seed=0)
    assert result.ok  # the runtime kills it after its 5 s shutdown: nothing is left


class Echo(otp.GenServer):
    async def handle_call(self, request: Any, from_: otp.From) -> Any:
        await trio.lowlevel.checkpoint()
        return request


class Caller(otp.GenServer):
    """Calls a target for the test and reports how the call ended and how long it took."""

    async def handle_call(self, request: Any, from_: otp.From) -> Any:
        _, target, timeout = request
        t0 = trio.current_time()
        try:
            outcome: Any = ("replied", await otp.call(target, "hi", timeout=timeout))
        except otp.OtpError as exc:
            outcome = (type(exc).__name__, getattr(exc, "reason", None))
        return (*outcome, trio.current_time() - t0)


@pytest.mark.parametrize("timeout", [otp.INFINITY, 5.0])
@pytest.mark.parametrize(
    "fault",
    [
        Fault(0.5, "delay", "srv", duration=1.0),
        Fault(0.5, "drop", "srv", duration=1.0),
        Fault(0.5, "partition", group=("srv",), duration=1.0, hold=True),
        Fault(0.5, "partition", group=("srv",), duration=1.0),
    ],
    ids=["delay", "drop", "partition-hold", "partition-drop"],
)
def test_a_call_held_back_by_a_fault_fails_at_once_when_its_target_dies(
    fault: Fault, timeout: float
) -> None:
    async def main() -> Any:
        srv = await otp.start(Echo, name="srv")
        caller = await otp.start(Caller)
        await trio.sleep(1.0)  # the fault is on from 0.5 to 1.5

        async def killer() -> None:
            await trio.sleep(0.001)
            otp.kill(srv)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(killer)
            return await otp.call(caller, ("call", srv, timeout), timeout=otp.INFINITY)

    result = simulate(main, seed=1, faults=FaultPlan(schedule=(fault,), max_delay=0.05))
    result.raise_failure()
    kind, reason, took = result.result
    assert (kind, reason) == ("CallError", "killed")
    assert took == pytest.approx(0.001, abs=1e-6)  # not the timeout, not forever
    assert any(e.kind in ("delay", "drop", "hold") for e in result.trace)


def test_an_injected_crash_reaches_a_process_with_a_full_fail_mailbox() -> None:
    class Slow(otp.GenServer):
        async def handle_cast(self, msg: Any) -> None:
            await trio.sleep(1.0)

    async def main() -> Any:
        pid = await otp.start(Slow, name="slow", mailbox=otp.Mailbox(1, "fail"))
        await otp.cast(pid, 1)  # being handled
        await trio.sleep(0.01)
        await otp.cast(pid, 2)  # fills the mailbox
        return await otp.wait_exit(pid)

    result = run(main, Fault(0.5, "crash", "slow"))
    assert isinstance(result.result, InjectedFault)
    assert not any(e.kind == "fault-error" for e in result.trace)


def test_an_injected_crash_does_not_evict_a_message_from_a_drop_oldest_mailbox() -> None:
    class Slow(Recorder):
        async def handle_cast(self, msg: Any) -> None:
            await super().handle_cast(msg)
            await trio.sleep(1.0)

        async def handle_info(self, msg: Any) -> None:
            await super().handle_info(msg)

    async def main() -> Any:
        pid = await otp.start(Slow, name="slow", mailbox=otp.Mailbox(1, "drop_oldest"))
        await otp.cast(pid, "first")
        await trio.sleep(0.01)
        await otp.cast(pid, "second")  # waits in the single slot
        await trio.sleep(0.6)  # the crash is armed at 0.5 and lands on "second"
        return await otp.wait_exit(pid), otp.statistics(pid).mailbox.dropped

    reason, dropped = run(main, Fault(0.5, "crash", "slow")).result
    assert isinstance(reason, InjectedFault) and dropped == 0


def test_a_fault_that_cannot_be_applied_is_recorded_not_raised() -> None:
    async def main() -> None:
        await otp.start(Recorder, name="w")
        await trio.sleep(1.0)

    result = run(main, Fault(0.5, "kill", ["unhashable", "target"]))
    assert any(e.kind == "fault-error" for e in result.trace)
