"""Small GenServers for simulations and property tests (what random trees are made of)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import trio

import otp


class Echo(otp.GenServer):
    """Replies to every call with the request; counts casts and other messages."""

    async def init(self, *args: Any, **kwargs: Any) -> None:
        await trio.lowlevel.checkpoint()
        self.seen = 0

    async def handle_call(self, request: Any, from_: otp.From) -> Any:
        await trio.lowlevel.checkpoint()
        self.seen += 1
        return request

    async def handle_cast(self, msg: Any) -> None:
        await trio.lowlevel.checkpoint()
        self.seen += 1

    async def handle_info(self, msg: Any) -> None:
        await trio.lowlevel.checkpoint()
        self.seen += 1


class Chatter(Echo):
    """Every ``interval`` seconds, messages a peer chosen by the runtime's seeded generator.

    Each tick is a cast, or a call (``call_ratio`` of them) that tolerates a dead, busy or
    partitioned peer: the chatter survives its peers' faults.
    """

    async def init(
        self,
        peers: Sequence[str] = (),
        interval: float = 0.1,
        call_ratio: float = 0.25,
        call_timeout: float = 0.5,
    ) -> None:
        await super().init()
        self.peers = list(peers)
        self.interval = interval
        self.call_ratio = call_ratio
        self.call_timeout = call_timeout
        self.rng = otp.lowlevel.current_runtime().random
        otp.send_after(otp.self(), "tick", interval * self.rng.random())

    async def handle_info(self, msg: Any) -> None:
        if msg != "tick":
            await super().handle_info(msg)
            return
        otp.send_after(otp.self(), "tick", self.interval)
        if not self.peers:
            await trio.lowlevel.checkpoint()
            return
        peer = self.rng.choice(self.peers)
        if self.rng.random() < self.call_ratio:
            try:
                await otp.call(peer, ("ping", self.seen), timeout=self.call_timeout)
            except otp.OtpError:
                pass
        else:
            await otp.cast(peer, ("hello", self.seen))


def chatter_tree(
    groups: int = 7, per_group: int = 6, every: float = 0.01, call_ratio: float = 0.25
) -> list[otp.ChildSpec]:
    """Children for a root supervisor: ``groups`` supervisors of ``per_group`` chatters each
    (with the root, ``1 + groups * (1 + per_group)`` processes: 50 by default). Together the
    chatters send one message every ``every`` virtual seconds, ``call_ratio`` of them calls."""
    names = [f"c{g}.{i}" for g in range(groups) for i in range(per_group)]
    interval = every * len(names)
    return [
        otp.ChildSpec(
            f"g{g}",
            otp.Supervisor,
            kwargs={
                "children": [
                    otp.ChildSpec(
                        f"c{g}.{i}",
                        Chatter,
                        args=(names, interval, call_ratio),
                        name=f"c{g}.{i}",
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
