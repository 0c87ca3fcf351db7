"""``python -m bench sim``: how fast otp.testing simulates, in virtual seconds per real second.

The program: the 50-process chatter tree of ``otp.testing.workers`` (a root, 7 supervisors,
42 chatters) exchanging one message (a cast to a random peer, driven by a ``send_after`` tick)
every virtual 10 ms, for 1,000 virtual seconds. Measured
three ways in interleaved rounds: under ``simulate`` (deterministic scheduling, trace, hash),
under ``simulate`` with random faults (crash, kill, delay at 1 per virtual second), and the
baseline: the same program under plain ``trio.run`` with an autojumping MockClock and no
simulation at all. Goal: the simulated run takes under 5 s of real time.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import trio
import trio.testing

import otp
from bench import Options
from bench._common import Goal, median, out, verdict
from otp.testing import FaultPlan, simulate
from otp.testing.workers import chatter_tree

GOAL = Goal("<", 5.0, "< 5 s real for 1,000 virtual s")
FAULTS = FaultPlan(rate=1.0, kinds=("crash", "kill", "delay"))


def program(seconds: float) -> Any:
    async def main() -> int:
        await otp.start(
            otp.Supervisor, children=chatter_tree(call_ratio=0.0), intensity=10, period=1.0
        )
        await trio.sleep(seconds)
        return len(otp.lowlevel.current_runtime().procs)

    return main


def _plain(seconds: float) -> float:
    async def run() -> None:
        async with otp.runtime():
            await program(seconds)()

    t0 = time.perf_counter()
    trio.run(run, clock=trio.testing.MockClock(autojump_threshold=0))
    return time.perf_counter() - t0


def _simulated(seconds: float, faults: FaultPlan | None, stats: dict[str, Any]) -> float:
    t0 = time.perf_counter()
    result = simulate(program(seconds), seed=len(stats), faults=faults, keep_trace=False)
    elapsed = time.perf_counter() - t0
    result.raise_failure()
    stats["virtual"] = result.virtual_time
    return elapsed


def run(options: Options) -> dict[str, Any]:
    logging.getLogger("otp").setLevel(logging.CRITICAL)
    seconds = 100.0 if options.quick else 1000.0
    rounds = options.rounds or (1 if options.quick else 3)
    out(f"sim benchmark: {seconds:,.0f} virtual seconds of a 50-process tree, one message every "
        f"virtual 10 ms; {rounds} interleaved round(s), medians")
    times: dict[str, list[float]] = {"simulate": [], "simulate+faults": [], "plain trio": []}
    stats: dict[str, Any] = {}
    for r in range(rounds):
        order = ["simulate", "simulate+faults", "plain trio"]
        order = order[r % 3:] + order[: r % 3]
        for name in order:
            if name == "simulate":
                times[name].append(_simulated(seconds, None, stats))
            elif name == "simulate+faults":
                times[name].append(_simulated(seconds, FAULTS, stats))
            else:
                times[name].append(_plain(seconds))
    figures: dict[str, Any] = {}
    scale = 1000.0 / seconds
    for name, values in times.items():
        real = median(values)
        figures[name] = {"real_seconds": real, "virtual_per_real": seconds / real,
                         "rounds": values}
        out(f"    {name:<18} {real:8.2f} s real   {seconds / real:10,.0f} virtual s per real s")
    sim_real = figures["simulate"]["real_seconds"] * scale
    ok = GOAL.check(sim_real)
    overhead = figures["simulate"]["real_seconds"] / figures["plain trio"]["real_seconds"]
    out(f"    simulate, 1,000 virtual s  {sim_real:8.2f} s   goal {GOAL.text}   {verdict(ok)}"
        f"   ({overhead:.2f}x the plain run)")
    return {"virtual_seconds": seconds, "figures": figures,
            "goals": {"simulate_1000s_real_seconds": {"value": sim_real, "pass": ok}}}
