"""``python -m bench otp``: otp against raw Trio written carefully, and a bare ``trio.lowlevel``
floor.

Baselines, run in the same process and interleaved round by round with the otp measurement,
each the best a careful engineer would write with the raw tools:

* **(a) raw Trio**, for calls: a server task reading a ``trio.open_memory_channel(0)``; the
  caller sends ``(request, reply_send)`` and awaits the reply on a reply channel, either a
  fresh ``trio.open_memory_channel(1)`` per call or one reused for every call of that caller.
  For casts: a buffered ``trio.open_memory_channel(1024)`` filled with ``send_nowait`` (falling
  back to ``await send`` when full), a ``trio.lowlevel.checkpoint()`` every 16 sends, and a
  server that drains with ``receive_nowait`` whenever ``receive`` wakes it.
* **(b) the floor**: no framework at all. The caller does ``reschedule(server_task, Value(...))``
  and parks in ``wait_task_rescheduled``; the parked server wakes and reschedules the caller.
  For spawn: ``nursery.start_soon`` of a task that reschedules its parent (the handshake
  ``otp.start`` also makes: it returns once ``init`` ran) and parks.

Figures (goal beside each):

1. sequential ``otp.call`` throughput: >= 0.8x the floor (raw Trio beside it);
2. ``otp.cast`` throughput (ended by one call): >= 0.5x careful raw Trio; ``cast_nowait`` extra;
3. call latency, 100 concurrent callers on one server: p99 < 1 ms;
4. spawn rate of ``otp.start``: >= 0.5x the floor; under a DynamicSupervisor as extra;
5. RSS growth for 100,000 idle gen_servers (in a subprocess): < 1 GiB;
6. restart latency of a crashed supervised child until it answers a call: median < 1 ms.
"""

from __future__ import annotations

import gc
import json
import logging
import os
import subprocess
import sys
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from time import perf_counter, perf_counter_ns
from typing import Any

import outcome
import trio
import trio.testing
from trio.lowlevel import Abort, Task, current_task, reschedule, wait_task_rescheduled

import otp
from bench import Options
from bench._common import (
    Goal,
    fmt_bytes,
    fmt_us,
    interleave,
    median,
    out,
    percentile,
    verdict,
)

# --------------------------------------------------------------------------------------------
# Sizes


@dataclass(frozen=True)
class Sizes:
    rounds: int  # interleaved rounds for figures 1-3 and 6
    calls: int  # figure 1: sequential calls per variant per round
    casts: int  # figure 2: casts per variant per round
    callers: int  # figure 3: concurrent callers
    calls_per_caller: int  # figure 3: calls each caller makes per round
    spawns: int  # figure 4: processes started per variant per round
    spawn_rounds: int
    memory_procs: int  # figure 5
    crashes: int  # figure 6: crashes in total, spread over the rounds


FULL = Sizes(
    rounds=7,
    calls=20_000,
    casts=20_000,
    callers=100,
    calls_per_caller=100,
    spawns=20_000,
    spawn_rounds=3,
    memory_procs=100_000,
    crashes=2_000,
)
QUICK = Sizes(
    rounds=3,
    calls=5_000,
    casts=5_000,
    callers=100,
    calls_per_caller=20,
    spawns=5_000,
    spawn_rounds=2,
    memory_procs=20_000,
    crashes=300,
)
MEMORY_GOAL_PROCS = 100_000
#: The buffer of the raw-Trio cast channel (otp's default mailbox holds 1,024 too).
RAW_CAST_BUFFER = 1024


def _abort(_raise_cancel: Any) -> Abort:
    return Abort.SUCCEEDED


# --------------------------------------------------------------------------------------------
# The servers under test


class Echo(otp.GenServer):
    """Replies with the request; counts casts."""

    async def init(self) -> None:
        self.casts = 0

    async def handle_call(self, request: Any, from_: otp.From) -> Any:
        return request

    async def handle_cast(self, msg: Any) -> None:
        self.casts += 1


class Trivial(otp.GenServer):
    """Does nothing: what an idle gen_server costs."""

    async def init(self) -> None:
        pass


class Crash(Exception):
    pass


class Victim(otp.GenServer):
    """Answers calls; a cast crashes it."""

    async def init(self) -> None:
        pass

    async def handle_call(self, request: Any, from_: otp.From) -> Any:
        return request

    async def handle_cast(self, msg: Any) -> None:
        raise Crash(msg)


# (a) raw Trio

RawSend = trio.MemorySendChannel[Any]
RawRecv = trio.MemoryReceiveChannel[Any]


async def raw_call_server(recv: RawRecv) -> None:
    async for request, reply_send in recv:
        await reply_send.send(request)


async def raw_cast_server(recv: RawRecv) -> None:
    """Wakes on ``receive`` and drains everything queued with ``receive_nowait``."""
    count = 0
    receive_nowait = recv.receive_nowait
    async for msg in recv:
        while True:
            if type(msg) is tuple:  # ("sync", reply_send): all earlier casts are handled
                await msg[1].send(count)
            else:
                count += 1
            try:
                msg = receive_nowait()
            except trio.WouldBlock:
                break


async def raw_call(send: RawSend, request: Any) -> Any:
    reply_send, reply_recv = trio.open_memory_channel[Any](1)
    await send.send((request, reply_send))
    return await reply_recv.receive()


# (b) the floor


async def floor_server(*, task_status: trio.TaskStatus[Task] = trio.TASK_STATUS_IGNORED) -> None:
    """Parks; woken with ``(caller, request)``, reschedules the caller with the request."""
    task_status.started(current_task())
    while True:
        caller, request = await wait_task_rescheduled(_abort)
        reschedule(caller, outcome.Value(request))


class FloorMailbox:
    """The floor for many senders: a deque, and a reschedule when the server is parked."""

    def __init__(self) -> None:
        self.queue: deque[tuple[Task | None, Any]] = deque()
        self.task: Task | None = None
        self.parked = False
        self.casts = 0

    async def serve(self) -> None:
        self.task = current_task()
        queue = self.queue
        while True:
            while queue:
                caller, msg = queue.popleft()
                if caller is None:
                    self.casts += 1
                else:
                    reschedule(caller, outcome.Value(msg))
            self.parked = True
            await wait_task_rescheduled(_abort)

    def _wake(self) -> None:
        if self.parked:
            self.parked = False
            reschedule(self.task)  # type: ignore[arg-type]

    def cast(self, msg: Any) -> None:
        self.queue.append((None, msg))
        self._wake()

    async def call(self, request: Any) -> Any:
        self.queue.append((current_task(), request))
        self._wake()
        return await wait_task_rescheduled(_abort)


# --------------------------------------------------------------------------------------------
# Results


@dataclass
class Figure:
    key: str
    title: str
    lines: list[str]
    data: dict[str, Any]
    checks: list[tuple[str, bool]]


def _ratio_line(label: str, ratio: float, goal: Goal) -> tuple[str, bool]:
    ok = goal.check(ratio)
    return f"    {label:<34} {ratio:>6.2f}x   goal {goal.text:<10} {verdict(ok)}", ok


def _rate_line(label: str, rate: float, unit: str, note: str = "") -> str:
    return f"    {label:<34} {rate:>12,.0f} {unit}{note}"


# --------------------------------------------------------------------------------------------
# 1. call throughput


async def figure_calls(sizes: Sizes, rounds: int) -> Figure:
    n = sizes.calls
    call = otp.call
    async with trio.open_nursery() as nursery:
        pid = await otp.start(Echo)
        raw_send, raw_recv = trio.open_memory_channel[Any](0)
        nursery.start_soon(raw_call_server, raw_recv)
        server = await nursery.start(floor_server)

        async def v_otp() -> float:
            t0 = perf_counter()
            for i in range(n):
                await call(pid, i)
            return n / (perf_counter() - t0)

        async def v_raw() -> float:
            t0 = perf_counter()
            for i in range(n):
                reply_send, reply_recv = trio.open_memory_channel[Any](1)
                await raw_send.send((i, reply_send))
                await reply_recv.receive()
            return n / (perf_counter() - t0)

        async def v_reused() -> float:
            reply_send, reply_recv = trio.open_memory_channel[Any](1)
            t0 = perf_counter()
            for i in range(n):
                await raw_send.send((i, reply_send))
                await reply_recv.receive()
            return n / (perf_counter() - t0)

        async def v_floor() -> float:
            me = current_task()
            t0 = perf_counter()
            for i in range(n):
                reschedule(server, outcome.Value((me, i)))
                await wait_task_rescheduled(_abort)
            return n / (perf_counter() - t0)

        # Sanity: every contestant echoes.
        assert await call(pid, "x") == "x"
        assert await raw_call(raw_send, "x") == "x"
        reschedule(server, outcome.Value((current_task(), "x")))
        assert await wait_task_rescheduled(_abort) == "x"

        variants = {"otp": v_otp, "raw": v_raw, "reused": v_reused, "floor": v_floor}
        await interleave(1, variants)  # warm-up
        res = await interleave(rounds, variants)
        await otp.stop(pid)
        nursery.cancel_scope.cancel()

    m = {k: median(v) for k, v in res.items()}
    vs_floor = m["otp"] / m["floor"]
    g_floor = Goal(">=", 0.8, ">= 0.8x")
    line, ok = _ratio_line("otp / floor", vs_floor, g_floor)

    def per_call(k: str) -> str:
        return f"   ({1e6 / m[k]:.2f} µs/call, {m[k] / m['floor']:.2f}x floor)"

    lines = [
        _rate_line("otp.call", m["otp"], "calls/s", per_call("otp")),
        _rate_line("(a) raw trio, fresh reply chan", m["raw"], "calls/s", per_call("raw")),
        _rate_line("(a) raw trio, reused reply chan", m["reused"], "calls/s",
                   per_call("reused")),
        _rate_line("(b) floor", m["floor"], "calls/s", per_call("floor")),
        line,
    ]
    data = {
        "unit": "calls/s",
        "calls_per_round": n,
        "rounds": rounds,
        "otp": m["otp"],
        "raw_trio_fresh_reply_channel": m["raw"],
        "raw_trio_reused_reply_channel": m["reused"],
        "floor": m["floor"],
        "ratio_vs_raw_trio_fresh": m["otp"] / m["raw"],
        "ratio_vs_raw_trio_reused": m["otp"] / m["reused"],
        "ratio_vs_floor": vs_floor,
        "goal_vs_floor": g_floor.text,
        "pass": ok,
        "per_round": res,
    }
    return Figure(
        "call_throughput", "1. call throughput: sequential await otp.call(pid, i)", lines, data,
        [("call vs floor", ok)],
    )


# --------------------------------------------------------------------------------------------
# 2. cast throughput


async def figure_casts(sizes: Sizes, rounds: int) -> Figure:
    n = sizes.casts
    call, cast, cast_nowait = otp.call, otp.cast, otp.cast_nowait
    async with trio.open_nursery() as nursery:
        pid = await otp.start(Echo)
        raw_send, raw_recv = trio.open_memory_channel[Any](RAW_CAST_BUFFER)
        nursery.start_soon(raw_cast_server, raw_recv)
        floor_box = FloorMailbox()
        nursery.start_soon(floor_box.serve)
        blocked = 0

        async def v_otp() -> float:
            t0 = perf_counter()
            for i in range(n):
                await cast(pid, i)
            await call(pid, "sync")
            return n / (perf_counter() - t0)

        async def v_nowait() -> float:
            nonlocal blocked
            t0 = perf_counter()
            for i in range(n):
                try:
                    cast_nowait(pid, i)
                except trio.WouldBlock:  # mailbox full: wait for room like cast does
                    blocked += 1
                    await cast(pid, i)
            await call(pid, "sync")
            return n / (perf_counter() - t0)

        async def v_raw() -> float:
            send_nowait, send, checkpoint = raw_send.send_nowait, raw_send.send, (
                trio.lowlevel.checkpoint)
            t0 = perf_counter()
            since_yield = 0
            for i in range(n):
                try:
                    send_nowait(i)
                except trio.WouldBlock:
                    await send(i)
                since_yield += 1
                if since_yield == 16:
                    since_yield = 0
                    await checkpoint()
            reply_send, reply_recv = trio.open_memory_channel[Any](1)
            await raw_send.send(("sync", reply_send))
            await reply_recv.receive()
            return n / (perf_counter() - t0)

        async def v_floor() -> float:
            box_cast, yield_ = floor_box.cast, trio.lowlevel.cancel_shielded_checkpoint
            t0 = perf_counter()
            for i in range(n):
                box_cast(i)
                await yield_()  # as cast does: let the server run
            await floor_box.call("sync")
            return n / (perf_counter() - t0)

        variants = {"otp": v_otp, "nowait": v_nowait, "raw": v_raw, "floor": v_floor}
        await interleave(1, variants)
        res = await interleave(rounds, variants)
        state = await otp.get_state(pid)
        expected = n * (rounds + 1) * 2
        handled = state.casts  # type: ignore[attr-defined]
        await otp.stop(pid)
        nursery.cancel_scope.cancel()
    assert handled == expected, (handled, expected)

    m = {k: median(v) for k, v in res.items()}
    vs_raw = m["otp"] / m["raw"]
    goal = Goal(">=", 0.5, ">= 0.5x")
    line, ok = _ratio_line("otp.cast / careful raw trio", vs_raw, goal)
    lines = [
        _rate_line("otp.cast", m["otp"], "casts/s"),
        _rate_line("(a) raw trio send_nowait, buffered", m["raw"], "casts/s"),
        _rate_line("(b) floor deque+reschedule+yield", m["floor"], "casts/s", "   (context)"),
        line,
        _rate_line(
            "extra: otp.cast_nowait", m["nowait"], "casts/s",
            f"   ({m['nowait'] / m['raw']:.2f}x raw trio, no goal)",
        ),
        f"    {'':<34} (cast_nowait found the mailbox full and fell back to await cast "
        f"{blocked / ((rounds + 1) * n):.0%} of the time)",
    ]
    data = {
        "unit": "casts/s",
        "casts_per_round": n,
        "rounds": rounds,
        "otp": m["otp"],
        "cast_nowait": m["nowait"],
        "cast_nowait_fallbacks_fraction": blocked / ((rounds + 1) * n),
        "raw_trio": m["raw"],
        "floor": m["floor"],
        "ratio_vs_raw_trio": vs_raw,
        "goal_vs_raw_trio": goal.text,
        "pass": ok,
        "per_round": res,
    }
    return Figure(
        "cast_throughput", "2. cast throughput: await otp.cast(pid, msg) x N, then one call",
        lines, data, [("cast vs raw trio", ok)],
    )


# --------------------------------------------------------------------------------------------
# 3. call latency under concurrency


async def figure_latency(sizes: Sizes, rounds: int) -> Figure:
    callers, k = sizes.callers, sizes.calls_per_caller
    call = otp.call
    async with trio.open_nursery() as nursery:
        pid = await otp.start(Echo)
        raw_send, raw_recv = trio.open_memory_channel[Any](0)
        nursery.start_soon(raw_call_server, raw_recv)
        box = FloorMailbox()
        nursery.start_soon(box.serve)
        await trio.testing.wait_all_tasks_blocked()

        def variant(one_call: Callable[[int], Any]) -> Callable[[], Any]:
            async def run() -> tuple[list[int], float]:
                samples: list[int] = []

                async def caller() -> None:
                    append = samples.append
                    for i in range(k):
                        t0 = perf_counter_ns()
                        await one_call(i)
                        append(perf_counter_ns() - t0)

                t0 = perf_counter()
                async with trio.open_nursery() as inner:
                    for _ in range(callers):
                        inner.start_soon(caller)
                elapsed = perf_counter() - t0
                return samples, callers * k / elapsed

            return run

        variants = {
            "otp": variant(lambda i: call(pid, i)),
            "raw": variant(lambda i: raw_call(raw_send, i)),
            "floor": variant(box.call),
        }
        await interleave(1, variants)
        res = await interleave(rounds, variants)
        await otp.stop(pid)
        nursery.cancel_scope.cancel()

    stats: dict[str, dict[str, float]] = {}
    for name, runs in res.items():
        pooled = sorted(s for samples, _ in runs for s in samples)
        stats[name] = {
            "p50_s": percentile(pooled, 50) / 1e9,
            "p99_s": percentile(pooled, 99) / 1e9,
            "max_s": pooled[-1] / 1e9,
            "calls_per_s": median([rate for _, rate in runs]),
            "samples": len(pooled),
        }
    goal = Goal("<", 1e-3, "< 1 ms")
    ok = goal.check(stats["otp"]["p99_s"])
    labels = {"otp": "otp.call", "raw": "(a) raw trio", "floor": "(b) floor"}
    lines = [f"    {'':<34} {'p50':>10} {'p99':>10} {'max':>10} {'calls/s':>10}"]
    for name, label in labels.items():
        s = stats[name]
        lines.append(
            f"    {label:<34} {fmt_us(s['p50_s']):>10} {fmt_us(s['p99_s']):>10} "
            f"{fmt_us(s['max_s']):>10} {s['calls_per_s']:>10,.0f}"
        )
    lines.append(
        f"    {'otp p99':<34} {fmt_us(stats['otp']['p99_s']):>10}   goal {goal.text:<10} "
        f"{verdict(ok)}   (p99 {stats['otp']['p99_s'] / stats['raw']['p99_s']:.2f}x raw trio's)"
    )
    data = {
        "callers": callers,
        "calls_per_caller_per_round": k,
        "rounds": rounds,
        "percentiles": "nearest rank over the samples of all rounds",
        **{name: s for name, s in stats.items()},
        "goal_p99": goal.text,
        "pass": ok,
    }
    return Figure(
        "call_latency",
        f"3. call latency: {callers} concurrent callers x {k} calls on one server, per round",
        lines, data, [("p99 latency", ok)],
    )


# --------------------------------------------------------------------------------------------
# 4. spawn rate


async def raw_idle_server(*, task_status: trio.TaskStatus[RawSend] = trio.TASK_STATUS_IGNORED
                          ) -> None:
    send, recv = trio.open_memory_channel[Any](0)
    task_status.started(send)
    async for request, reply_send in recv:
        await reply_send.send(request)


async def floor_idle(parent: Task) -> None:
    reschedule(parent)
    await wait_task_rescheduled(_abort)


async def figure_spawn(sizes: Sizes, rounds: int) -> Figure:
    n = sizes.spawns
    start, start_child = otp.start, otp.start_child
    spec = otp.ChildSpec(id="trivial", start=Trivial, restart=otp.TEMPORARY)

    async def v_otp() -> tuple[float, float]:
        async with otp.runtime():
            t0 = perf_counter()
            for _ in range(n):
                await start(Trivial)
            t1 = perf_counter()
        t2 = perf_counter()
        return n / (t1 - t0), n / (t2 - t1)

    async def v_nogc() -> tuple[float, float]:
        async with otp.runtime():
            gc.disable()
            try:
                t0 = perf_counter()
                for _ in range(n):
                    await start(Trivial)
                t1 = perf_counter()
            finally:
                gc.enable()
        t2 = perf_counter()
        return n / (t1 - t0), n / (t2 - t1)

    async def v_dyn() -> tuple[float, float]:
        async with otp.runtime():
            sup = await start(otp.DynamicSupervisor)
            t0 = perf_counter()
            for _ in range(n):
                await start_child(sup, spec)
            t1 = perf_counter()
        t2 = perf_counter()
        return n / (t1 - t0), n / (t2 - t1)

    async def v_raw() -> tuple[float, float]:
        async with trio.open_nursery() as nursery:
            t0 = perf_counter()
            for _ in range(n):
                await nursery.start(raw_idle_server)
            t1 = perf_counter()
            nursery.cancel_scope.cancel()
        t2 = perf_counter()
        return n / (t1 - t0), n / (t2 - t1)

    async def v_floor() -> tuple[float, float]:
        me = current_task()
        async with trio.open_nursery() as nursery:
            t0 = perf_counter()
            for _ in range(n):
                nursery.start_soon(floor_idle, me)
                await wait_task_rescheduled(_abort)
            t1 = perf_counter()
            nursery.cancel_scope.cancel()
        t2 = perf_counter()
        return n / (t1 - t0), n / (t2 - t1)

    variants = {"otp": v_otp, "nogc": v_nogc, "dyn": v_dyn, "raw": v_raw, "floor": v_floor}
    res = await interleave(rounds, variants)
    spawn = {k: median([r[0] for r in v]) for k, v in res.items()}
    teardown = {k: median([r[1] for r in v]) for k, v in res.items()}
    goal = Goal(">=", 0.5, ">= 0.5x floor")
    ok = goal.check(spawn["otp"] / spawn["floor"])
    lines = [
        f"    {'':<34} {'spawn/s':>12} {'teardown/s':>12}",
        *(
            f"    {label:<34} {spawn[k]:>12,.0f} {teardown[k]:>12,.0f}"
            for k, label in (
                ("otp", "await otp.start(Trivial)"),
                ("nogc", "extra: otp.start, gc disabled"),
                ("dyn", "extra: otp.start_child(dynsup)"),
                ("raw", "(a) raw trio nursery.start"),
                ("floor", "(b) floor start_soon+handshake"),
            )
        ),
        f"    {'otp.start / floor':<34} {spawn['otp'] / spawn['floor']:>12.2f}x  goal "
        f"{goal.text:<14} {verdict(ok)}   ({spawn['otp'] / spawn['raw']:.2f}x raw trio)",
        "    (teardown: leaving otp.runtime() / cancelling the nursery, processes per second)",
    ]
    data = {
        "unit": "processes/s",
        "processes_per_round": n,
        "rounds": rounds,
        "spawn": spawn,
        "teardown": teardown,
        "ratio_vs_floor": spawn["otp"] / spawn["floor"],
        "ratio_vs_raw_trio": spawn["otp"] / spawn["raw"],
        "goal": goal.text,
        "pass": ok,
        "per_round": res,
    }
    return Figure(
        "spawn_rate", f"4. spawn rate: {n:,} processes per round", lines, data,
        [("spawn rate", ok)],
    )


# --------------------------------------------------------------------------------------------
# 5. memory (each contestant in a fresh subprocess)


def memory_probe(kind: str, n: int) -> None:
    """Run in a subprocess: start ``n`` idle processes of ``kind``, print RSS growth as JSON."""
    import psutil  # type: ignore[import-untyped]

    me = psutil.Process()

    async def main() -> None:
        keep: list[Any] = []
        async with otp.runtime(), trio.open_nursery() as nursery:
            # Warm up every path once so code objects and caches are not counted.
            if kind == "otp":
                keep.append(await otp.start(Trivial))
            elif kind == "raw":
                keep.append(await nursery.start(raw_idle_server))
            else:
                nursery.start_soon(floor_idle, current_task())
                await wait_task_rescheduled(_abort)
            gc.collect()
            before = me.memory_info().rss
            # Young collections every 1,000 spawns free cyclic garbage as the automatic GC
            # would; skipping its (ever longer) full collections only saves time. RSS is read
            # after a full collection below.
            gc.disable()
            task = current_task()
            t0 = perf_counter()
            for i in range(n):
                if kind == "otp":
                    keep.append(await otp.start(Trivial))
                elif kind == "raw":
                    keep.append(await nursery.start(raw_idle_server))
                else:
                    nursery.start_soon(floor_idle, task)
                    await wait_task_rescheduled(_abort)
                if i % 1000 == 999:
                    gc.collect(1)
            elapsed = perf_counter() - t0
            gc.collect()
            after = me.memory_info().rss
            print(json.dumps({"kind": kind, "n": n, "before": before, "after": after,
                              "seconds": elapsed}), flush=True)
            os._exit(0)  # skip tearing down n processes: the parent has what it needs

    trio.run(main)


def _run_probe(kind: str, n: int) -> dict[str, Any]:
    code = f"from bench.otp_bench import memory_probe; memory_probe({kind!r}, {n})"
    root = Path(__file__).resolve().parent.parent
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=600,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"memory probe {kind} failed:\n{proc.stderr}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def figure_memory(sizes: Sizes) -> Figure:
    n = sizes.memory_procs
    probes = {kind: _run_probe(kind, n) for kind in ("otp", "raw", "floor")}
    per = {k: (p["after"] - p["before"]) / n for k, p in probes.items()}
    projected = per["otp"] * MEMORY_GOAL_PROCS
    goal = Goal("<", 1 << 30, "< 1 GiB")
    ok = goal.check(projected)
    note = "" if n == MEMORY_GOAL_PROCS else f" (projected from {n:,})"
    lines = [f"    {'':<34} {'RSS growth':>12} {'per process':>12}"]
    for k, label in (("otp", "otp.start(Trivial)"), ("raw", "(a) raw trio idle server"),
                     ("floor", "(b) floor parked task")):
        p = probes[k]
        lines.append(
            f"    {label:<34} {fmt_bytes(p['after'] - p['before']):>12} "
            f"{fmt_bytes(per[k]):>12}"
        )
    lines.append(
        f"    {f'otp, {MEMORY_GOAL_PROCS:,} processes':<34} {fmt_bytes(projected):>12}"
        f"   goal {goal.text:<10} {verdict(ok)}{note}   ({per['otp'] / per['raw']:.2f}x raw trio"
        " per process)"
    )
    data = {
        "processes": n,
        "bytes_per_process": per,
        "rss_growth": {k: p["after"] - p["before"] for k, p in probes.items()},
        "otp_projected_for_100k": projected,
        "goal": goal.text,
        "pass": ok,
    }
    return Figure(
        "memory", f"5. memory: RSS growth for {n:,} idle processes (fresh subprocess each)",
        lines, data, [("memory", ok)],
    )


# --------------------------------------------------------------------------------------------
# 6. restart latency


async def figure_restart(sizes: Sizes, rounds: int) -> Figure:
    per_round = max(1, sizes.crashes // rounds)
    call, cast, whereis = otp.call, otp.cast, otp.whereis
    checkpoint = trio.lowlevel.checkpoint
    otp_logger = logging.getLogger("otp")
    old_level = otp_logger.level
    otp_logger.setLevel(logging.CRITICAL)
    try:
        async with trio.open_nursery() as nursery:
            spec = otp.ChildSpec(id="victim", start=Victim, name="victim")
            sup = await otp.start(
                otp.Supervisor, children=[spec], strategy=otp.ONE_FOR_ONE,
                intensity=1_000_000, period=1.0,
            )

            async def v_otp() -> list[int]:
                samples = []
                for _ in range(per_round):
                    old = whereis("victim")
                    t0 = perf_counter_ns()
                    await cast("victim", "crash")
                    while True:
                        pid = whereis("victim")
                        if pid is not None and pid != old:
                            break
                        await checkpoint()
                    await call("victim", "ping")
                    samples.append(perf_counter_ns() - t0)
                return samples

            # (a) raw trio: a supervisor task restarts a child that registers its channel.
            registry: dict[str, RawSend] = {}
            exits_send, exits_recv = trio.open_memory_channel[BaseException](1)

            async def raw_child(
                *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
            ) -> None:
                try:
                    send, recv = trio.open_memory_channel[Any](0)
                    registry["victim"] = send
                    task_status.started()
                    async for request, reply_send in recv:
                        if request == "crash":
                            raise Crash(request)
                        await reply_send.send(request)
                except Exception as exc:
                    exits_send.send_nowait(exc)

            async def raw_supervisor() -> None:
                async with trio.open_nursery() as children:
                    await children.start(raw_child)
                    async for _exc in exits_recv:
                        await children.start(raw_child)

            nursery.start_soon(raw_supervisor)
            await trio.testing.wait_all_tasks_blocked()

            async def v_raw() -> list[int]:
                samples = []
                for _ in range(per_round):
                    old = registry["victim"]
                    t0 = perf_counter_ns()
                    await old.send(("crash", None))
                    while registry["victim"] is old:
                        await checkpoint()
                    await raw_call(registry["victim"], "ping")
                    samples.append(perf_counter_ns() - t0)
                return samples

            # (b) floor: parked tasks rescheduling each other, no channels, no nursery.start.
            floor_reg: dict[str, Task] = {}
            floor_sup: list[Task] = []

            async def floor_child() -> None:
                try:
                    while True:
                        floor_reg["victim"] = current_task()
                        caller, request = await wait_task_rescheduled(_abort)
                        if request == "crash":
                            raise Crash(request)
                        reschedule(caller, outcome.Value(request))
                except Exception as exc:
                    reschedule(floor_sup[0], outcome.Value(exc))

            async def floor_supervisor() -> None:
                floor_sup.append(current_task())
                async with trio.open_nursery() as children:
                    children.start_soon(floor_child)
                    while True:
                        await wait_task_rescheduled(_abort)
                        children.start_soon(floor_child)

            nursery.start_soon(floor_supervisor)
            await trio.testing.wait_all_tasks_blocked()

            async def v_floor() -> list[int]:
                me = current_task()
                samples = []
                for _ in range(per_round):
                    old = floor_reg["victim"]
                    t0 = perf_counter_ns()
                    reschedule(old, outcome.Value((me, "crash")))
                    while floor_reg["victim"] is old:
                        await checkpoint()
                    reschedule(floor_reg["victim"], outcome.Value((me, "ping")))
                    await wait_task_rescheduled(_abort)
                    samples.append(perf_counter_ns() - t0)
                return samples

            variants = {"otp": v_otp, "raw": v_raw, "floor": v_floor}
            await interleave(1, variants)
            res = await interleave(rounds, variants)
            children = await otp.which_children(sup)
            await otp.stop(sup)
            nursery.cancel_scope.cancel()
    finally:
        otp_logger.setLevel(old_level)

    restarts = children[0].restarts
    stats: dict[str, dict[str, float]] = {}
    for name, runs in res.items():
        pooled = sorted(s for samples in runs for s in samples)
        stats[name] = {
            "p50_s": percentile(pooled, 50) / 1e9,
            "p99_s": percentile(pooled, 99) / 1e9,
            "max_s": pooled[-1] / 1e9,
            "samples": len(pooled),
        }
    goal = Goal("<", 1e-3, "< 1 ms")
    ok = goal.check(stats["otp"]["p50_s"])
    lines = [f"    {'':<34} {'median':>10} {'p99':>10} {'max':>10}"]
    for name, label in (("otp", "otp.Supervisor one_for_one"), ("raw", "(a) raw trio supervisor"),
                        ("floor", "(b) floor")):
        s = stats[name]
        lines.append(
            f"    {label:<34} {fmt_us(s['p50_s']):>10} {fmt_us(s['p99_s']):>10} "
            f"{fmt_us(s['max_s']):>10}"
        )
    lines.append(
        f"    {'otp median':<34} {fmt_us(stats['otp']['p50_s']):>10}   goal {goal.text:<10} "
        f"{verdict(ok)}   ({stats['otp']['p50_s'] / stats['raw']['p50_s']:.2f}x raw trio's; "
        f"{restarts:,} restarts counted by the supervisor)"
    )
    data = {
        "crashes_per_round": per_round,
        "rounds": rounds,
        "supervisor_restarts": restarts,
        "percentiles": "nearest rank over the samples of all rounds",
        **{name: s for name, s in stats.items()},
        "goal_median": goal.text,
        "pass": ok,
    }
    return Figure(
        "restart_latency",
        "6. restart latency: crash cast -> whereis changes -> call answered by the new pid",
        lines, data, [("restart median", ok)],
    )


# --------------------------------------------------------------------------------------------
# Driver


def _print(fig: Figure, seconds: float) -> None:
    out()
    out(f"{fig.title}   [{seconds:.1f} s]")
    for line in fig.lines:
        out(line)


def run(options: Options) -> dict[str, Any]:
    sizes = QUICK if options.quick else FULL
    rounds = options.rounds or sizes.rounds
    spawn_rounds = options.rounds or sizes.spawn_rounds
    out(
        f"otp benchmark{' (--quick)' if options.quick else ''}: python "
        f"{sys.version.split()[0]}, trio {trio.__version__}, {os.cpu_count()} CPUs; "
        f"{rounds} interleaved rounds per figure (spawn: {spawn_rounds}), medians over rounds"
    )
    out("baselines: (a) raw trio memory channels, used carefully; (b) floor = bare "
        "trio.lowlevel reschedule")
    figures: list[Figure] = []

    def timed(fig_fn: Callable[[], Figure]) -> None:
        t0 = perf_counter()
        fig = fig_fn()
        _print(fig, perf_counter() - t0)
        figures.append(fig)

    async def in_runtime(coro_fn: Callable[..., Any], *args: Any) -> Figure:
        async with otp.runtime():
            fig: Figure = await coro_fn(*args)
        return fig

    timed(lambda: trio.run(in_runtime, figure_calls, sizes, rounds))
    timed(lambda: trio.run(in_runtime, figure_casts, sizes, rounds))
    timed(lambda: trio.run(in_runtime, figure_latency, sizes, rounds))
    timed(lambda: trio.run(figure_spawn, sizes, spawn_rounds))
    timed(lambda: figure_memory(sizes))
    timed(lambda: trio.run(in_runtime, figure_restart, sizes, rounds))

    checks = [(label, ok) for fig in figures for label, ok in fig.checks]
    out()
    out("summary: " + ", ".join(f"{label} {verdict(ok)}" for label, ok in checks))
    return {
        "sizes": sizes.__dict__,
        "rounds": rounds,
        "figures": {fig.key: fig.data for fig in figures},
        "checks": {label: ok for label, ok in checks},
        "all_pass": all(ok for _, ok in checks),
    }
