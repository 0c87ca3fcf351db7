"""GenServers shared by the otp tests."""

from __future__ import annotations

from typing import Any

import trio

import otp

#: Every terminate call, as (label, reason), in order, across all processes of a test.
TERMINATED: list[tuple[Any, Any]] = []


class Counter(otp.GenServer):
    async def init(self, start: int = 0, label: Any = None) -> None:
        await trio.lowlevel.checkpoint()
        self.n = start
        self.label = label
        self.infos: list[Any] = []

    async def handle_call(self, request: Any, from_: otp.From) -> Any:
        await trio.lowlevel.checkpoint()
        if request == "get":
            return self.n
        if request == "inc":
            self.n += 1
            return self.n
        if request == "crash":
            raise ValueError("crash requested")
        if request == "infos":
            return list(self.infos)
        if request == "envelope":
            return otp.current_envelope()
        if isinstance(request, tuple) and request[0] == "sleep":
            await trio.sleep(request[1])
            return "slept"
        if isinstance(request, tuple) and request[0] == "stop":
            return otp.Stop(request[1], reply="stopping")
        raise ValueError(f"unknown request {request!r}")

    async def handle_cast(self, msg: Any) -> Any:
        await trio.lowlevel.checkpoint()
        if msg == "crash":
            raise RuntimeError("cast crash")
        if isinstance(msg, tuple) and msg[0] == "exit":
            return otp.Stop(msg[1])
        if isinstance(msg, tuple) and msg[0] == "add":
            self.n += msg[1]
            return None
        self.n = 0
        return None

    async def handle_info(self, msg: Any) -> Any:
        await trio.lowlevel.checkpoint()
        self.infos.append(msg)

    async def terminate(self, reason: Any) -> None:
        await trio.lowlevel.checkpoint()
        TERMINATED.append((self.label, reason))


class FailingInit(otp.GenServer):
    async def init(self, *args: Any) -> None:
        await trio.lowlevel.checkpoint()
        raise KeyError("init failed")


class Trapper(Counter):
    async def init(self, start: int = 0, label: Any = None) -> None:
        await super().init(start, label)
        otp.trap_exit(True)


class Sleeper(otp.GenServer):
    """Takes ``delay`` virtual seconds in terminate."""

    async def init(self, delay: float, label: Any = None) -> None:
        await trio.lowlevel.checkpoint()
        self.delay = delay
        self.label = label

    async def handle_call(self, request: Any, from_: otp.From) -> Any:
        await trio.lowlevel.checkpoint()
        return request

    async def terminate(self, reason: Any) -> None:
        await trio.sleep(self.delay)
        TERMINATED.append((self.label, reason))


async def until(predicate: Any, limit: float = 60.0) -> None:
    """Wait (in virtual time) until ``predicate()`` is true."""
    with trio.fail_after(limit):
        while not predicate():
            await trio.sleep(0.001)
