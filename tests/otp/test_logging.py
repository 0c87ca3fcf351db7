"""Log records carry the process that wrote them; supervisor reports are structured events."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
import trio

import otp

from .servers import Counter, until

log = logging.getLogger("tests.app")


class Chatty(otp.GenServer):
    """Logs from its handler and from a task it owns."""

    owns_tasks = True

    async def handle_call(self, request: Any, from_: otp.From) -> Any:
        log.info("handling %s", request)
        if request == "spawn":
            otp.start_task_soon(self.later)
        await trio.lowlevel.checkpoint()
        return otp.current_trace_id()

    async def later(self) -> None:
        await trio.sleep(1.0)
        log.info("task still in the trace")


@pytest.fixture
def handler() -> Iterator[tuple[logging.Handler, io.StringIO]]:
    stream = io.StringIO()
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    installed = otp.configure_logging("debug", "json", stream)
    try:
        yield installed, stream
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])


def _records(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]


async def test_records_written_in_a_process_carry_its_pid_name_and_trace(
    handler: tuple[logging.Handler, io.StringIO],
) -> None:
    _, stream = handler
    async with otp.runtime():
        pid = await otp.start(Chatty, name="chatty")
        trace = await otp.call("chatty", "spawn")
        await trio.sleep(2.0)
        log.info("outside any process")
    records = [r for r in _records(stream) if r["logger"] == "tests.app"]
    inside, task, outside = records
    assert inside["message"] == "handling spawn" and inside["level"] == "INFO"
    assert (inside["otp_pid"], inside["otp_name"], inside["otp_trace_id"]) == (
        repr(pid), "chatty", trace)
    # A task the process owns writes as the process, in the trace it was started in.
    assert (task["otp_pid"], task["otp_trace_id"]) == (repr(pid), trace)
    assert (outside["otp_pid"], outside["otp_name"], outside["otp_trace_id"]) == (
        None, None, None)
    assert "time" in inside and "otp_context" not in inside


async def test_the_text_format_puts_the_process_in_brackets() -> None:
    stream = io.StringIO()
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    otp.configure_logging("INFO", "text", stream)
    try:
        async with otp.runtime():
            await otp.start(Chatty, name="chatty")
            await otp.call("chatty", "hello")
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
    line = next(x for x in stream.getvalue().splitlines() if "handling hello" in x)
    assert " tests.app [<0.1.0> chatty trace=" in line


def test_configure_logging_refuses_an_unknown_format_or_level() -> None:
    with pytest.raises(ValueError, match="log format"):
        otp.configure_logging("info", "xml")
    with pytest.raises(ValueError, match="unknown log level"):
        otp.configure_logging("loud", "text")


async def test_a_supervisor_restart_is_logged_as_a_structured_report(
    handler: tuple[logging.Handler, io.StringIO],
) -> None:
    _, stream = handler
    spec = otp.ChildSpec("worker", Counter, name="worker")
    async with otp.runtime():
        sup = await otp.start(otp.Supervisor, children=[spec], intensity=5)
        pid = otp.whereis("worker")
        await otp.cast("worker", "crash")
        await until(lambda: otp.whereis("worker") not in (None, pid))
    reports = [r for r in _records(stream) if "otp_report" in r]
    restart = next(r for r in reports if r["otp_report"]["event"] == "restarting")
    assert restart["logger"] == "otp.supervisor"
    assert restart["otp_report"] == {
        "supervisor": repr(sup),
        "child_id": "worker",
        "event": "restarting",
        "reason": "RuntimeError: cast crash",
        "restarts": 1,
    }
    assert restart["otp_pid"] == repr(sup)  # written inside the supervisor process
