"""``python -m bench sim``: how fast otp.testing simulates, in virtual seconds per CPU second.

The program: the 50-process chatter tree of ``otp.testing.workers`` (a root, 7 supervisors,
42 chatters) exchanging one message (a cast to a random peer, driven by a ``send_after`` tick)
every virtual 10 ms, for 1,000 virtual seconds. Measured
three ways in interleaved rounds: under ``simulate`` (deterministic scheduling, trace, hash),
under ``simulate`` with random faults (crash, kill, delay at 1 per virtual second), and the
baseline: the same program under plain ``trio.run`` with an autojumping MockClock and no
simulation at all. Goal: the simulated run takes at most 1.1x the plain run's time (the
harness's deterministic scheduling, tracing and hashing cost at most 10%). Times are the
process's CPU seconds (the program is single-threaded and CPU-bound; CPU time is what other
load on the machine disturbs least).
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

GOAL = Goal("<=", 1.1, "<= 1.1x the plain run")
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

    t0 = time.process_time()
    trio.run(run, clock=trio.testing.MockClock(autojump_threshold=0))
    return time.process_time() - t0


def _simulated(seconds: float, faults: FaultPlan | None, stats: dict[str, Any]) -> float:
    t0 = time.process_time()
    result = simulate(program(seconds), seed=len(stats), faults=faults, keep_trace=False)
    elapsed = time.process_time() - t0
    result.raise_failure()
    stats["virtual"] = result.virtual_time
    return elapsed


def run(options: Options) -> dict[str, Any]:
    logging.getLogger("otp").setLevel(logging.CRITICAL)
    seconds = 100.0 if options.quick else 1000.0
    rounds = options.rounds or (1 if options.quick else 5)
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
        cpu = median(values)
        figures[name] = {"cpu_seconds": cpu, "virtual_per_cpu_second": seconds / cpu,
                         "rounds": values}
        out(f"    {name:<18} {cpu:8.2f} s CPU   {seconds / cpu:10,.0f} virtual s per CPU s")
    sim_cpu = figures["simulate"]["cpu_seconds"] * scale
    overhead = figures["simulate"]["cpu_seconds"] / figures["plain trio"]["cpu_seconds"]
    ok = GOAL.check(overhead)
    out(f"    simulate / plain trio  {overhead:8.2f}x   goal {GOAL.text}   {verdict(ok)}"
        f"   ({sim_cpu:.2f} CPU s per 1,000 virtual s)")
    return {"virtual_seconds": seconds, "figures": figures,
            "goals": {"simulate_vs_plain": {"value": overhead, "goal": GOAL.text, "pass": ok},
                      "simulate_1000s_cpu_seconds": sim_cpu}}
