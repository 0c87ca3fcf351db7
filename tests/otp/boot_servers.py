"""GenServers booted from TOML in subprocess tests: they record init and terminate to a file."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import trio

import otp


class Recorder(otp.GenServer):
    async def init(
        self, log: str, label: str, fail: bool = False, crash: bool = False, linger: float = 0
    ) -> None:
        self.linger = linger
        self.log = Path(log)
        self.label = label
        self.write(f"init {label}")
        await trio.lowlevel.checkpoint()
        if fail:
            raise RuntimeError(f"{label} cannot start")
        if crash:
            otp.cast_nowait(otp.self(), "crash")

    def write(self, line: str) -> None:
        with self.log.open("a") as f:
            f.write(line + "\n")

    async def handle_cast(self, msg: Any) -> None:
        await trio.lowlevel.checkpoint()
        raise RuntimeError(f"{self.label} crashed on purpose")

    async def terminate(self, reason: Any) -> None:
        self.write(f"terminating {self.label}")
        await trio.sleep(self.linger)
        self.write(f"terminate {self.label} {reason!r}")


class RecordingSupervisor(otp.Supervisor):
    pass


class HangInInit(otp.GenServer):
    """Its init never returns (a dependency that never answers)."""

    async def init(self, log: str) -> None:
        with Path(log).open("a") as f:
            f.write("init hang\n")
        logging.getLogger("otp.test").info("hang: waiting forever in init")
        await trio.sleep_forever()
