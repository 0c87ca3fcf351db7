"""Envelopes: ids, sender, send time, and trace context flowing through calls."""

from __future__ import annotations

from typing import Any

import trio

import otp

from .servers import Counter


class Front(otp.GenServer):
    """Forwards a call to ``back`` and returns both envelopes."""

    async def init(self, back: otp.Pid) -> None:
        await trio.lowlevel.checkpoint()
        self.back = back

    async def handle_call(self, request: Any, from_: otp.From) -> Any:
        mine = otp.current_envelope()
        theirs = await otp.call(self.back, "envelope")
        seen_in_task: list[Any] = []

        async def helper() -> None:
            await trio.lowlevel.checkpoint()
            seen_in_task.append(otp.current_trace_id())

        async with trio.open_nursery() as nursery:
            nursery.start_soon(helper)
        return mine, theirs, seen_in_task[0]


async def test_envelope_metadata() -> None:
    async with otp.runtime():
        pid = await otp.start(Counter)
        await trio.sleep(3)
        env = await otp.call(pid, "envelope")
        assert isinstance(env, otp.Envelope)
        assert env.kind is otp.Kind.CALL
        assert env.sender is None  # sent from outside any process
        assert env.sent_at == trio.current_time() == 3.0
        assert env.causation_id is None
        assert env.trace_id == env.correlation_id  # a new trace starts here
        assert otp.current_envelope() is None  # outside a handler


async def test_trace_flows_from_caller_into_callee_and_its_tasks() -> None:
    async with otp.runtime():
        back = await otp.start(Counter)
        front = await otp.start(Front, back)
        mine, theirs, in_task = await otp.call(front, "go")
        assert theirs.trace_id == mine.trace_id == in_task
        assert theirs.causation_id == mine.correlation_id
        assert theirs.sender == front
        assert theirs.correlation_id != mine.correlation_id
        # a second request is a new trace
        mine2, _, _ = await otp.call(front, "go")
        assert mine2.trace_id != mine.trace_id


async def test_ids_are_unique_per_message() -> None:
    async with otp.runtime():
        pid = await otp.start(Counter)
        ids = {(await otp.call(pid, "envelope")).correlation_id for _ in range(50)}
        assert len(ids) == 50
