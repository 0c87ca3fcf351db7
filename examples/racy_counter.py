"""A deliberately racy program, and how otp.testing finds and replays the race.

Two depositors each add 1 to an account, by reading the balance with a call and writing
``balance + 1`` with a cast: a read-modify-write across processes. When the second one's read
reaches the account before the first one's write, a deposit is lost. Whether that happens
depends on the order Trio runs tasks that are ready at the same moment, so an ordinary test
passes or fails by luck (about half the seeds fail).

    python examples/racy_counter.py          # searches seeds, then replays the failing one

The fix is to make the update atomic in the server: ``call(account, ("add", 1))``.
"""

from __future__ import annotations

from typing import Any

import trio

import otp
from otp.testing import find_failure, simulate


class LostUpdate(AssertionError):
    pass


class Account(otp.GenServer):
    async def init(self) -> None:
        await trio.lowlevel.checkpoint()
        self.balance = 0

    async def handle_call(self, request: Any, from_: otp.From) -> Any:
        await trio.lowlevel.checkpoint()
        if request == "get":
            return self.balance
        if request == ("add", 1):
            self.balance += 1
            return self.balance
        raise ValueError(request)

    async def handle_cast(self, msg: Any) -> None:
        await trio.lowlevel.checkpoint()
        _, value = msg
        self.balance = value


class Depositor(otp.GenServer):
    async def init(self, account: otp.Pid, atomic: bool = False) -> None:
        await trio.lowlevel.checkpoint()
        self.account, self.atomic = account, atomic
        otp.send_nowait(otp.self(), "go")

    async def handle_info(self, msg: Any) -> Any:
        if self.atomic:
            await otp.call(self.account, ("add", 1))
        else:
            balance = await otp.call(self.account, "get")
            await otp.cast(self.account, ("set", balance + 1))
        return otp.Stop("normal")


def program(atomic: bool = False) -> Any:
    async def main() -> int:
        account = await otp.start(Account, name="account")
        depositors = [await otp.start(Depositor, account, atomic) for _ in range(2)]
        for pid in depositors:
            await otp.wait_exit(pid)
        balance: int = await otp.call(account, "get")
        if balance != 2:
            raise LostUpdate(f"2 deposits made, balance is {balance}")
        return balance

    return main


def main() -> None:
    failing = find_failure(program(), range(100))
    if failing is None:
        print("no failing seed among 100")
        return
    print(f"seed {failing.seed} fails: {failing.failure!r}")
    replay = simulate(program(), seed=failing.seed)
    print(f"replay of seed {failing.seed}: {replay.failure!r}, same trace: "
          f"{replay.trace_hash == failing.trace_hash}")
    fixed = find_failure(program(atomic=True), range(100))
    print("with an atomic add, 100 seeds:", "all pass" if fixed is None else "still fails")


if __name__ == "__main__":
    main()
