"""The examples run and do what their docstrings say (under virtual time)."""

from __future__ import annotations

import logging

import pytest

from examples import counter, deferred_reply, supervised_tree


async def test_counter_example() -> None:
    lines = await counter.main()
    assert lines[:3] == [5, 6, 0]
    assert lines[3].startswith("CallError: ValueError")
    assert lines[4] == "exited with: ValueError(\"unknown request 'explode'\")"


async def test_deferred_reply_example() -> None:
    lines = await deferred_reply.main()
    assert lines == [
        "pending: ['build', 'test']",
        "test -> ok at t=1.0s",
        "build -> artifact.whl at t=2.0s",
    ]


async def test_supervised_tree_example_restarts_the_crashing_ticker(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.CRITICAL)
    lines = await supervised_tree.main(seconds=5.0)
    restarts = [line for line in lines if "restarting ticker" in line]
    # crashes at ticks 7 (t=1.4 s) and 14 (t≈2.9 s) and 21 (t≈4.6 s)
    assert len(restarts) == 3
    assert "RuntimeError: tick 7: simulated fault" in restarts[0]
    assert any("restarts=3" in line for line in lines)
