"""Every async test runs under Trio's MockClock with autojump (virtual time, no real sleeps),
except those marked ``real_clock``: tests that talk to real servers over real sockets, where
an autojumping clock would fire timeouts while the other side is still answering. Those still
assert nothing about elapsed time."""

from __future__ import annotations

import inspect

import pytest
import trio

from otp.testing.plugin import run_with_autojump


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "real_clock: run this async test under Trio's real clock (real sockets)"
    )
    config.addinivalue_line(
        "markers", "integration: starts real external programs (Geth, ethereumjs, our node) "
        "on 127.0.0.1; the tools come from scripts/install-tools"
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if isinstance(item, pytest.Function) and inspect.iscoroutinefunction(item.obj):
            if item.get_closest_marker("real_clock") is not None:
                item.add_marker(pytest.mark.trio(run=trio.run))
            else:
                item.add_marker(pytest.mark.trio(run=run_with_autojump))


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Remove the session's scratch directories (:mod:`tests.scratch`)."""
    from tests.scratch import remove_all
    remove_all()
