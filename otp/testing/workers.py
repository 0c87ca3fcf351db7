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
        self.rng = otp.current_runtime().random
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
