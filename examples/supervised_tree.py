"""A supervised tree that shows a crash being restarted.

    python examples/supervised_tree.py            # runs until Ctrl-C
    python examples/supervised_tree.py --seconds 5

A ``Ticker`` counts ticks and crashes on every 7th; its supervisor (one_for_one, 5 restarts
in 10 s, exponential backoff) restarts it, and a ``Reporter`` subscribed to the bus prints
each restart with a snapshot of the tree.
"""

from __future__ import annotations

import argparse
import logging
from typing import Any

import trio

import otp


class Ticker(otp.GenServer):
    async def init(self, every: float = 0.2) -> None:
        await trio.lowlevel.checkpoint()
        self.every = every
        self.ticks = 0
        otp.send_nowait(otp.self(), "tick")

    async def handle_info(self, msg: Any) -> None:
        await trio.sleep(self.every)
        self.ticks += 1
        if self.ticks % 7 == 0:
            raise RuntimeError(f"tick {self.ticks}: simulated fault")
        await otp.send(otp.self(), "tick")

    async def handle_call(self, request: Any, from_: otp.From) -> Any:
        await trio.lowlevel.checkpoint()
        return self.ticks


class LogLines(list[str]):
    """A list that logs what is appended instead of keeping it."""

    def append(self, line: str) -> None:
        logging.getLogger("example").info(line)


class Reporter(otp.GenServer):
    async def init(self, out: list[str] | str = "log") -> None:
        await trio.lowlevel.checkpoint()
        self.out = out if isinstance(out, list) else LogLines()
        self.t0 = trio.current_time()
        otp.bus.subscribe("otp.supervisor")

    async def handle_info(self, msg: Any) -> None:
        await trio.lowlevel.checkpoint()
        if isinstance(msg, otp.SupervisorReport):
            reason = msg.reason
            if isinstance(reason, BaseException):
                reason = f"{type(reason).__name__}: {reason}"
            elapsed = trio.current_time() - self.t0
            self.out.append(f"t={elapsed:6.2f}s {msg.event} {msg.child_id}: {reason}")
            for root in otp.tree_snapshot():
                for node in root.walk():
                    label = node.id or node.name or node.behaviour
                    self.out.append(
                        f"    {label!s:<10} {node.status:<10} pid={node.pid!r} "
                        f"restarts={node.restarts}"
                    )


def tree(out: list[str]) -> list[otp.ChildSpec]:
    return [
        otp.ChildSpec("reporter", Reporter, args=(out,)),
        otp.ChildSpec("ticker", Ticker, kwargs={"every": 0.2}, name="ticker"),
    ]


async def main(seconds: float | None = None, out: list[str] | None = None) -> list[str]:
    lines: list[str] = [] if out is None else out
    async with otp.runtime():
        await otp.start(
            otp.Supervisor,
            children=tree(lines),
            strategy="one_for_one",
            intensity=5,
            period=10.0,
            backoff=otp.Backoff("exponential", initial=0.1, max=2.0),
            name="example",
        )
        if seconds is None:
            await trio.sleep_forever()
        await trio.sleep(seconds)
    return lines


class _Printer(list[str]):
    def append(self, line: str) -> None:
        print(line, flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=None)
    ns = parser.parse_args()
    logging.basicConfig(level=logging.CRITICAL)
    try:
        trio.run(main, ns.seconds, _Printer())
    except KeyboardInterrupt:
        print("stopped")
