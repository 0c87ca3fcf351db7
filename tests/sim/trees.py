"""The simulated trees the sim tests run."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import trio

import otp
from otp.testing.workers import Chatter


def chatter_tree(groups: int = 7, per_group: int = 6, every: float = 0.01) -> list[otp.ChildSpec]:
    """``1 + groups * (1 + per_group)`` processes (the root, the group supervisors and the
    chatters); the chatters together send one message every ``every`` virtual seconds."""
    names = [f"c{g}.{i}" for g in range(groups) for i in range(per_group)]
    interval = every * len(names)
    return [
        otp.ChildSpec(
            f"g{g}",
            otp.Supervisor,
            kwargs={
                "children": [
                    otp.ChildSpec(
                        f"c{g}.{i}", Chatter, args=(names, interval), name=f"c{g}.{i}"
                    )
                    for i in range(per_group)
                ],
                "strategy": ["one_for_one", "one_for_all", "rest_for_one"][g % 3],
                "intensity": 5,
                "period": 1.0,
            },
        )
        for g in range(groups)
    ]


def tree_program(seconds: float, **tree: Any) -> Callable[[], Awaitable[int]]:
    """Boot the chatter tree, let it run ``seconds`` virtual seconds, report the live count."""

    async def main() -> int:
        await otp.start(
            otp.Supervisor, children=chatter_tree(**tree), intensity=10, period=1.0, name="root"
        )
        await trio.sleep(seconds)
        return len(otp.current_runtime().procs)

    return main
