"""Every async test runs under Trio's MockClock with autojump: virtual time, no real sleeps."""

from __future__ import annotations

import inspect

import pytest

from otp.testing.plugin import run_with_autojump


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if isinstance(item, pytest.Function) and inspect.iscoroutinefunction(item.obj):
            item.add_marker(pytest.mark.trio(run=run_with_autojump))
