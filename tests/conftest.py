"""Every async test runs under Trio's MockClock with autojump: virtual time, no real sleeps."""

from __future__ import annotations

import inspect
from typing import Any

import pytest
import trio
import trio.testing


def run_with_autojump(fn: Any, *args: Any, clock: Any = None, **kwargs: Any) -> Any:
    """trio.run with a fresh autojumping MockClock unless the test brought its own clock."""
    if clock is None:
        clock = trio.testing.MockClock(autojump_threshold=0)
    return trio.run(fn, *args, clock=clock, **kwargs)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if isinstance(item, pytest.Function) and inspect.iscoroutinefunction(item.obj):
            item.add_marker(pytest.mark.trio(run=run_with_autojump))
