"""Targets are checked where they are given; nothing a timer meets later can hurt the runtime."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import pytest
import trio

import otp

from .servers import Counter, until


def _test_id(value: object) -> str:
    """A test id that is the same in every process (a bare object's repr holds an address)."""
    return "object()" if type(value) is object else repr(value)


MALFORMED = [42, None, 3.5, b"counter", ("counter",), ["counter"], {"name": 1}, object()]


class Runs(Counter):
    """Runs the function it is called with inside the process and returns what it returned
    (or the exception it raised)."""

    async def handle_call(self, request: Any, from_: otp.From) -> Any:
        if callable(request):
            try:
                result = request()
                if hasattr(result, "__await__"):
                    result = await result
                return ("ok", result)
            except Exception as exc:
                return ("raised", exc)
        return await super().handle_call(request, from_)


def _as_process_calls(bad: Any) -> list[Callable[[], Any]]:
    return [
        lambda: otp.monitor(bad),
        lambda: otp.link(bad),
        lambda: otp.unlink(bad),
        lambda: otp.exit(bad, "boom"),
        lambda: otp.kill(bad),
        lambda: otp.send_after(bad, "tick", 1.0),
        lambda: otp.cast(bad, "x"),
        lambda: otp.send(bad, "x"),
        lambda: otp.call(bad, "get"),
        lambda: otp.cast_nowait(bad, "x"),
        lambda: otp.send_nowait(bad, "x"),
    ]


@pytest.mark.parametrize("bad", MALFORMED, ids=_test_id)
async def test_a_malformed_target_raises_type_error_at_the_call(bad: Any) -> None:
    async with otp.runtime():
        runner = await otp.start(Runs)
        for fn in _as_process_calls(bad):
            status, result = await otp.call(runner, fn)
            assert status == "raised" and isinstance(result, TypeError), (fn, result)
            assert "target" in str(result) or "name" in str(result)
        # Outside any process, the same.
        with pytest.raises(TypeError):
            otp.send_after(bad, "tick", 1.0)
        with pytest.raises(TypeError):
            await otp.cast(bad, "x")
        with pytest.raises(TypeError):
            await otp.call(bad, "get")
        with pytest.raises(TypeError):
            await otp.stop(bad)
        with pytest.raises(TypeError):
            otp.whereis(bad)
        assert runner is not None and runner.is_alive()


@pytest.mark.parametrize("delay", [float("nan"), "1", None, True])
async def test_a_malformed_send_after_delay_raises_at_the_call(delay: Any) -> None:
    async with otp.runtime():
        with pytest.raises(TypeError):
            otp.send_after("anyone", "tick", delay)


class BrokenRegistry:
    """A via-registry whose lookups fail (a bug in user code)."""

    def register_name(self, key: Any, pid: otp.Pid) -> None:
        raise RuntimeError("cannot register")

    def unregister_name(self, key: Any) -> None:
        raise RuntimeError("cannot unregister")

    def whereis_name(self, key: Any) -> otp.Pid | None:
        raise RuntimeError("lookup exploded")


async def test_undeliverable_timed_messages_are_dropped_counted_and_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with otp.runtime() as rt:
        counter = await otp.start(Counter, name="counter")
        full = await otp.start(Counter, mailbox=otp.Mailbox(1, otp.Overflow.FAIL))
        assert counter is not None and full is not None
        otp.send_after("nobody", "tick", 1.0)  # no such name when it fires
        otp.send_after(otp.via(BrokenRegistry(), "k"), "tick", 1.0)  # lookup raises
        # A mailbox that refuses: fill it while its server is busy in a long call.
        async with trio.open_nursery() as nursery:
            nursery.start_soon(otp.call, full, ("sleep", 5.0), 10.0)
            await trio.sleep(0.5)
            otp.cast_nowait(full, ("add", 1))
            otp.send_after(full, "tick", 0.5)
            with caplog.at_level(logging.WARNING, logger="otp"):
                await trio.sleep(1.0)
        # The timer task and the runtime carry on: later timers are still delivered.
        otp.send_after("counter", "late tick", 1.0)
        await until(lambda: rt.timers_dropped >= 3)
        await trio.sleep(1.5)
        assert await otp.call(counter, "infos") == ["late tick"]
        assert rt.timers_dropped == 3
        dropped = [r.getMessage() for r in caplog.records if "timed message" in r.getMessage()]
        assert any("no such process" in m for m in dropped)
        assert any("lookup exploded" in m for m in dropped)
        assert any("mailbox is full" in m for m in dropped)
        assert full.is_alive() and counter.is_alive()
        text = otp.OtpCollector(rt).collect()
        families = {f.name: f for f in text}
        assert families["otp_timer_messages_dropped"].samples[0].value == 3


async def test_a_timer_whose_name_comes_back_later_is_delivered_to_the_new_holder() -> None:
    async with otp.runtime():
        first = await otp.start(Counter, name="svc")
        otp.send_after("svc", "tick", 2.0)
        await otp.stop(first)
        second = await otp.start(Counter, name="svc")
        await trio.sleep(2.5)
        assert await otp.call(second, "infos") == ["tick"]
