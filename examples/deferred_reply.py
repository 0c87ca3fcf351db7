"""A deferred reply: the server parks callers with otp.NoReply and answers them later.

A tiny job queue: ``("wait", job)`` returns only when a worker reports the job done; the
server keeps serving other requests meanwhile.

    python examples/deferred_reply.py
"""

from __future__ import annotations

from typing import Any

import trio

import otp


class Jobs(otp.GenServer):
    async def init(self) -> None:
        await trio.lowlevel.checkpoint()
        self.waiting: dict[str, list[otp.From]] = {}

    async def handle_call(self, request: Any, from_: otp.From) -> Any:
        await trio.lowlevel.checkpoint()
        match request:
            case ("wait", job):
                self.waiting.setdefault(job, []).append(from_)
                return otp.NoReply  # the caller keeps waiting; we reply in handle_cast
            case "pending":
                return sorted(self.waiting)
        raise ValueError(request)

    async def handle_cast(self, msg: Any) -> None:
        await trio.lowlevel.checkpoint()
        match msg:
            case ("done", job, result):
                for waiter in self.waiting.pop(job, []):
                    otp.reply(waiter, result)


async def main() -> list[str]:
    log: list[str] = []
    t0 = trio.current_time()
    async with otp.runtime():
        jobs = await otp.start(Jobs, name="jobs")

        async def client(job: str) -> None:
            result = await otp.call("jobs", ("wait", job), timeout=10)
            log.append(f"{job} -> {result} at t={trio.current_time() - t0:.1f}s")

        async with trio.open_nursery() as nursery:
            nursery.start_soon(client, "build")
            nursery.start_soon(client, "test")
            await trio.sleep(1)
            log.append(f"pending: {await otp.call(jobs, 'pending')}")
            await otp.cast(jobs, ("done", "test", "ok"))
            await trio.sleep(1)
            await otp.cast(jobs, ("done", "build", "artifact.whl"))
    return log


if __name__ == "__main__":
    for line in trio.run(main):
        print(line)
