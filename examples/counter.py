"""A counter gen_server: the smallest useful otp program.

    python examples/counter.py
"""

from __future__ import annotations

import logging
from typing import Any

import trio

import otp


class Counter(otp.GenServer):
    async def init(self, start: int = 0) -> None:
        await trio.lowlevel.checkpoint()
        self.n = start

    async def handle_call(self, request: Any, from_: otp.From) -> Any:
        await trio.lowlevel.checkpoint()
        if request == "get":
            return self.n
        if request == "inc":
            self.n += 1
            return self.n
        raise ValueError(f"unknown request {request!r}")  # the caller gets otp.CallError

    async def handle_cast(self, msg: Any) -> None:
        await trio.lowlevel.checkpoint()
        if msg == "reset":
            self.n = 0


async def main() -> list[Any]:
    seen: list[Any] = []
    logging.getLogger("otp").setLevel(logging.CRITICAL)  # the crash below is on purpose
    async with otp.runtime():
        pid = await otp.start(Counter, 5, name="counter")
        seen.append(await otp.call("counter", "get", timeout=1.0))
        seen.append(await otp.call(pid, "inc"))
        await otp.cast(pid, "reset")
        seen.append(await otp.call(pid, "get"))
        try:
            await otp.call(pid, "explode")
        except otp.CallError as err:
            seen.append(f"CallError: {err.reason!r}")
        reason = await otp.wait_exit(pid)  # an unsupervised server stays dead
        seen.append(f"exited with: {reason!r}")
    return seen


if __name__ == "__main__":
    for line in trio.run(main):
        print(line)
