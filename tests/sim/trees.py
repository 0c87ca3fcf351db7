"""The simulated trees the sim tests run."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import trio

import otp
from otp.testing.workers import chatter_tree


def tree_program(seconds: float, **tree: Any) -> Callable[[], Awaitable[int]]:
    """Boot the chatter tree, let it run ``seconds`` virtual seconds, report the live count."""

    async def main() -> int:
        await otp.start(
            otp.Supervisor, children=chatter_tree(**tree), intensity=10, period=1.0, name="root"
        )
        await trio.sleep(seconds)
        return len(otp.lowlevel.current_runtime().procs)

    return main
