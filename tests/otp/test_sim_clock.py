"""otp.testing.simulate's clock: virtual time read without the real clock, exactly."""

from __future__ import annotations

import trio

from otp.testing import simulate


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
