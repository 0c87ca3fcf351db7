"""otp.testing.simulate's clock and loop: virtual time read without the real clock, exactly;
I/O polled seldom while tasks are ready."""

from __future__ import annotations

import time

import trio

from otp.testing import simulate
from otp.testing._sim import POLL_EVERY


def test_virtual_time_reads_exactly_and_follows_a_changed_rate() -> None:
    readings: list[float] = []

    async def main() -> float:
        for delay in (0.25, 1.0, 1e-9, 600.0):
            before = trio.current_time()
            await trio.sleep(delay)
            readings.append(trio.current_time() - before)
        clock = trio.lowlevel.current_clock()
        assert isinstance(clock, trio.testing.MockClock)
        assert clock.current_time() == trio.current_time()
        # A program may still make its clock run: readings then follow the real clock.
        clock.rate = 1000.0
        start = trio.current_time()
        for _ in range(1_000_000):  # bounded: a clock that ignored the rate fails, not hangs
            if trio.current_time() != start:
                break
            await trio.lowlevel.checkpoint()
        assert trio.current_time() > start
        clock.rate = 0.0
        frozen = trio.current_time()
        assert trio.current_time() == frozen
        return frozen

    result = simulate(main, seed=3)
    result.raise_failure()
    assert readings[0] == 0.25 and readings[1] == 1.0 and readings[3] == 600.0
    assert 0 < readings[2] < 1e-6
    assert result.result > 601.25
    assert result.virtual_time == result.result


def test_io_from_outside_is_noticed_while_tasks_keep_the_loop_busy_and_when_it_idles() -> None:
    """Under simulate Trio's loop polls for I/O once in POLL_EVERY batches while tasks are
    ready (a simulated program does no real I/O), and always before the clock jumps: a
    thread's result still arrives, whether other tasks keep the loop busy or nothing else
    runs, and the poll is put back after the run."""
    polls: list[float] = []
    io_manager = trio._core._run.TheIOManager  # type: ignore[attr-defined]
    general = io_manager.get_events

    def counting(self: object, timeout: float) -> object:
        polls.append(timeout)
        return general(self, timeout)

    async def main() -> tuple[int, int]:
        batches = 0

        async def busy() -> None:
            nonlocal batches
            while True:  # a task always ready: the loop never idles
                batches += 1
                await trio.lowlevel.checkpoint()

        before = len(polls)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(busy)
            await trio.to_thread.run_sync(time.sleep, 0.05)
            nursery.cancel_scope.cancel()
        busy_polls = len(polls) - before
        await trio.to_thread.run_sync(time.sleep, 0.05)  # nothing else to run
        return batches, busy_polls

    io_manager.get_events = counting
    try:
        result = simulate(main, seed=1, max_virtual_time=10.0)
        assert io_manager.get_events is counting  # put back as it was
    finally:
        io_manager.get_events = general
    result.raise_failure()
    batches, busy_polls = result.result
    assert batches > POLL_EVERY  # busy while the thread slept, and its result got through
    assert busy_polls <= batches // POLL_EVERY + 2  # one poll in POLL_EVERY batches
