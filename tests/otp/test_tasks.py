"""Background tasks owned by a process (owns_tasks = True)."""

from __future__ import annotations

from typing import Any

import pytest
import trio

import otp


class Poller(otp.GenServer):
    owns_tasks = True

    async def init(self, fail_at: int | None = None, fail_early: bool = False) -> None:
        self.ticks = 0
        self.fail_at = fail_at
        self.port = await otp.start_task(self.serve, fail_early)
        otp.start_task_soon(self.tick)

    async def serve(self, fail_early: bool, *, task_status: Any) -> None:
        if fail_early:
            raise OSError("address in use")
        task_status.started(8080)
        await trio.sleep_forever()

    async def tick(self) -> None:
        while True:
            await trio.sleep(1)
            self.ticks += 1
            if self.ticks == self.fail_at:
                raise RuntimeError("poll failed")

    async def handle_call(self, request: Any, from_: otp.From) -> Any:
        await trio.lowlevel.checkpoint()
        return (self.port, self.ticks)


async def test_tasks_run_beside_the_server_and_stop_with_it() -> None:
    async with otp.runtime():
        pid = await otp.start(Poller)
        await trio.sleep(3.5)
        assert await otp.call(pid, "x") == (8080, 3)
        await otp.stop(pid)
    # leaving the runtime would hang if a task had outlived its process


async def test_a_failing_task_takes_its_process_down() -> None:
    async with otp.runtime():
        pid = await otp.start(Poller, 2)
        reason = await otp.wait_exit(pid)
        assert isinstance(reason, RuntimeError) and str(reason) == "poll failed"


async def test_a_task_failing_before_started_fails_init() -> None:
    async with otp.runtime():
        with pytest.raises(OSError, match="address in use"):
            await otp.start(Poller, None, True)


async def test_only_servers_that_own_tasks_may_start_them() -> None:
    class Plain(otp.GenServer):
        async def init(self) -> None:
            otp.start_task_soon(trio.sleep_forever)

    async with otp.runtime():
        with pytest.raises(otp.OtpError, match="owns_tasks"):
            await otp.start(Plain)


async def test_an_exception_escaping_the_process_nursery_ends_only_that_process() -> None:
    from otp._proc import current_process as _current_process

    class Leaky(otp.GenServer):
        owns_tasks = True

        async def handle_call(self, request: Any, from_: otp.From) -> Any:
            async def boom() -> None:
                await trio.lowlevel.checkpoint()
                raise KeyError("escaped")

            # Straight into the nursery, past the task guard: as a bug in otp itself would.
            nursery = _current_process().nursery
            assert nursery is not None
            nursery.start_soon(boom)
            await trio.sleep_forever()

    async with otp.runtime():
        bystander = await otp.start(Poller)
        pid = await otp.start(Leaky)
        with pytest.raises(otp.CallError) as info:
            await otp.call(pid, "go")
        assert isinstance(info.value.reason, KeyError)
        reason = await otp.wait_exit(pid)
        assert isinstance(reason, KeyError)  # unwrapped from the nursery's ExceptionGroup
        assert bystander.is_alive()
        assert await otp.call(bystander, "x") == (8080, 0)
