"""Bounded mailboxes, overflow policies and the system lane."""

from __future__ import annotations

from typing import Any

import pytest
import trio

import otp

from .servers import Counter


class Gate(otp.GenServer):
    """Blocks in its first handler until released, so its mailbox fills up."""

    async def init(self) -> None:
        await trio.lowlevel.checkpoint()
        self.release = trio.Event()
        self.seen: list[Any] = []

    async def handle_cast(self, msg: Any) -> None:
        if msg == "block":
            await self.release.wait()
        self.seen.append(msg)

    async def handle_info(self, msg: Any) -> None:
        await trio.lowlevel.checkpoint()
        self.seen.append(msg)

    async def handle_call(self, request: Any, from_: otp.From) -> Any:
        await trio.lowlevel.checkpoint()
        if request == "seen":
            return list(self.seen)
        return request


async def blocked_gate(capacity: int, overflow: str) -> tuple[otp.Pid, Gate]:
    pid = await otp.start(Gate, mailbox=otp.Mailbox(capacity, overflow))  # type: ignore[arg-type]
    state = await otp.get_state(pid)
    assert isinstance(state, Gate)
    await otp.cast(pid, "block")
    await trio.sleep(0.01)  # the gate is now inside its first handler
    return pid, state


def test_mailbox_defaults() -> None:
    m = otp.Mailbox()
    assert (m.capacity, m.overflow) == (1024, otp.Overflow.BLOCK)
    assert otp.Mailbox(8, "drop_oldest").overflow is otp.Overflow.DROP_OLDEST


async def test_block_makes_sender_wait_for_room() -> None:
    async with otp.runtime():
        pid, gate = await blocked_gate(2, "block")
        await otp.cast(pid, 1)
        await otp.cast(pid, 2)
        done = trio.Event()

        async def third() -> None:
            await otp.cast(pid, 3)
            done.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(third)
            await trio.sleep(1)
            assert not done.is_set()
            assert otp.statistics(pid).mailbox.blocked_senders == 1
            with pytest.raises(trio.WouldBlock):
                otp.cast_nowait(pid, 99)
            gate.release.set()
        assert await otp.call(pid, "seen") == ["block", 1, 2, 3]


async def test_drop_oldest_keeps_the_newest() -> None:
    async with otp.runtime():
        pid, gate = await blocked_gate(2, "drop_oldest")
        for i in range(5):
            await otp.cast(pid, i)
        assert otp.statistics(pid).mailbox.dropped == 3
        gate.release.set()
        await trio.sleep(0.01)  # drained: the call below must not evict anything itself
        assert await otp.call(pid, "seen") == ["block", 3, 4]


async def test_drop_newest_keeps_the_oldest() -> None:
    async with otp.runtime():
        pid, gate = await blocked_gate(2, "drop_newest")
        for i in range(5):
            await otp.send(pid, i)
        gate.release.set()
        await trio.sleep(0.01)
        assert await otp.call(pid, "seen") == ["block", 0, 1]
        assert otp.statistics(pid).mailbox.dropped == 3


async def test_fail_raises_mailboxfull_in_the_sender() -> None:
    async with otp.runtime():
        pid, gate = await blocked_gate(1, "fail")
        await otp.cast(pid, 1)
        with pytest.raises(otp.MailboxFull) as info:
            await otp.cast(pid, 2)
        assert info.value.capacity == 1
        with pytest.raises(otp.MailboxFull):
            await otp.call(pid, "x")
        gate.release.set()
        await trio.sleep(0.01)
        assert await otp.call(pid, "seen") == ["block", 1]


async def test_dropped_call_fails_its_caller_at_once() -> None:
    async with otp.runtime():
        pid, gate = await blocked_gate(1, "drop_oldest")
        async with trio.open_nursery() as nursery:
            failures: list[Any] = []

            async def caller() -> None:
                try:
                    await otp.call(pid, "x", timeout=100)
                except otp.MailboxFull as e:
                    failures.append(e)

            nursery.start_soon(caller)
            await trio.sleep(0.01)
            await otp.cast(pid, "evicts the call")
            await trio.sleep(0.01)
            assert len(failures) == 1
            gate.release.set()
        with pytest.raises(otp.MailboxFull):
            pid2, _gate2 = await blocked_gate(1, "drop_newest")
            await otp.cast(pid2, 1)
            await otp.call(pid2, "x")


async def test_system_lane_is_never_stuck_behind_user_traffic() -> None:
    async with otp.runtime():
        pid, gate = await blocked_gate(3, "block")
        for i in range(3):
            await otp.cast(pid, i)
        # The user queue is full and a sender is blocked; a stop still gets through at once
        # after the current handler, ahead of the queued messages.
        async with trio.open_nursery() as nursery:
            nursery.start_soon(otp.cast, pid, "late")
            await trio.sleep(0.01)
            stopping = trio.Event()

            async def stopper() -> None:
                await otp.stop(pid, "shutdown")
                stopping.set()

            nursery.start_soon(stopper)
            await trio.sleep(0.01)
            gate.release.set()
        assert stopping.is_set()
        assert gate.seen == ["block"]  # the queued casts were never handled


async def test_monitor_notices_bypass_capacity() -> None:
    async with otp.runtime():
        target = await otp.start(Counter)

        class W(Gate):
            async def handle_call(self, request: Any, from_: otp.From) -> Any:
                if request == "watch":
                    return otp.monitor(target)
                return await super().handle_call(request, from_)

        pid = await otp.start(W, mailbox=otp.Mailbox(1, "fail"))
        state = await otp.get_state(pid)
        assert isinstance(state, W)
        ref = await otp.call(pid, "watch")
        await otp.cast(pid, "block")
        await trio.sleep(0.01)
        await otp.cast(pid, "fills")
        await otp.stop(target)
        assert otp.statistics(pid).mailbox.depth == 2
        state.release.set()
        await trio.sleep(0.01)
        seen = await otp.call(pid, "seen")
        assert seen == ["block", "fills", otp.Down(ref, target, "normal")]


async def test_busy_server_yields_to_other_tasks() -> None:
    # A server that always has mail must still let other tasks run between messages.
    async with otp.runtime():
        pid = await otp.start(Counter)
        for _ in range(100):
            otp.cast_nowait(pid, ("add", 1))
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await trio.lowlevel.checkpoint()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(ticker)
            assert await otp.call(pid, "get") == 100
            nursery.cancel_scope.cancel()
        assert ticks >= 50
