"""Same seed, same trace; different seeds, different traces; otp's guarantees hold after
every run (no deadlock, nothing left running, restart intensity obeyed)."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

import otp
from otp.testing import FaultKind, FaultPlan, assert_deterministic, simulate

from .trees import tree_program

FAULTS = FaultPlan(rate=4.0, kinds=(FaultKind.CRASH, FaultKind.KILL, FaultKind.DELAY))


@pytest.fixture(autouse=True)
def _quiet(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.CRITICAL, logger="otp")


def test_fifty_process_tree_under_200_seeds_replays_exactly() -> None:
    main = tree_program(1.0)
    hashes = set()
    kinds: set[str] = set()
    for seed in range(200):
        result = assert_deterministic(main, seed=seed, faults=FAULTS)
        assert result.ok, f"seed {seed}: {result.failure!r}"
        hashes.add(result.trace_hash)
        kinds.update(event.kind for event in result.trace)
    assert len(hashes) == 200  # every seed ran differently
    # the runs really injected and recorded what they claim to
    assert {"spawn", "send", "exit", "restart", "fault", "crash", "delay"} <= kinds


def test_same_seed_same_trace_across_faults_and_without() -> None:
    main = tree_program(0.5)
    plain = simulate(main, seed=3)
    assert plain.ok and plain.trace_hash == simulate(main, seed=3).trace_hash
    assert not any(e.kind == "fault" for e in plain.trace)
    faulty = simulate(main, seed=3, faults=FAULTS)
    assert faulty.trace_hash != plain.trace_hash


def test_trace_records_virtual_times_and_parties() -> None:
    result = simulate(tree_program(0.2), seed=1)
    spawns = [e for e in result.trace if e.kind == "spawn"]
    assert len(spawns) == 50
    assert spawns[0].detail == "Supervisor name='root'"
    sends = [e for e in result.trace if e.kind == "send"]
    assert sends and all(e.other is not None for e in sends)
    assert any(e.detail == "str" for e in sends)  # the "tick" timers
    times = [e.time for e in result.trace]
    assert times == sorted(times)
    assert result.virtual_time == pytest.approx(0.2, abs=0.01)


# -- the intensity check follows the supervisor's own history resets --------------------------


class Crasher(otp.GenServer):
    async def handle_cast(self, msg: Any) -> None:
        await trio.lowlevel.checkpoint()
        raise RuntimeError(msg)


def test_intensity_check_starts_afresh_after_continue_without() -> None:
    async def main() -> Any:
        sup = await otp.start(
            otp.Supervisor,
            children=[otp.ChildSpec("a", Crasher, name="a"), otp.ChildSpec("b", Crasher, name="b")],
            intensity=1, period=5.0, on_exhausted="continue_without",
        )
        await otp.cast("a", "x")
        await trio.sleep(0.1)  # restart 1 of a
        await otp.cast("a", "x")
        await trio.sleep(0.1)  # exhausted: continue without a, history cleared (documented)
        await otp.cast("b", "x")
        await trio.sleep(0.1)  # a restart of b is within the rules again
        return [(c.id, c.status) for c in await otp.which_children(sup)]

    result = simulate(main, seed=0)
    result.raise_failure()
    assert result.result == [("a", "failed"), ("b", "running")]
    assert [e.kind for e in result.trace if e.kind in ("restart", "restarts-reset")] == [
        "restart", "restarts-reset", "restart",
    ]


def test_intensity_check_starts_afresh_after_restart_tree() -> None:
    async def main() -> Any:
        await otp.start(
            otp.Supervisor, children=[otp.ChildSpec("a", Crasher, name="a")],
            intensity=1, period=5.0, on_exhausted="restart_tree",
        )
        for _ in range(2):
            await otp.cast("a", "x")
            await trio.sleep(0.1)
        await trio.sleep(6.0)  # past the tree-restart period: the next exhaustion may retry
        for _ in range(3):
            await otp.cast("a", "x")
            await trio.sleep(0.1)

    result = simulate(main, seed=0)
    result.raise_failure()
    assert sum(e.kind == "restarts-reset" for e in result.trace) == 2


def test_the_intensity_check_still_catches_a_real_violation() -> None:
    from otp.testing._sim import _Simulation

    sim = _Simulation(0, None, True)
    flags = otp.SupervisorFlags(intensity=1, period=5.0)

    async def main() -> None:
        async with otp.runtime():
            sup = await otp.start(otp.Supervisor)
            for _ in range(2):  # a supervisor that restarts twice in 5 s with intensity 1
                sim.restarting(sup, "a", "boom", flags.intensity, flags.period)
                await trio.sleep(1.0)

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))  # type: ignore[arg-type]
    assert sim.violation is not None and "restarted 2 times within 5.0 s" in sim.violation


# -- hashes are the same in every Python process ------------------------------------------------

PROGRAM = """
import sys
import otp, trio
from otp.testing import simulate

class Thing:  # default repr: <__main__.Thing object at 0x...>
    pass

class W(otp.GenServer):
    async def handle_cast(self, msg):
        await trio.lowlevel.checkpoint()
        raise RuntimeError(msg)

REG = otp.Registry()
ID = Thing()

async def main():
    await otp.start(otp.Supervisor, children=[
        otp.ChildSpec(ID, W, name=otp.via(REG, "w")),
        otp.ChildSpec(frozenset({"x", "y", "z"}), W, name="s"),
    ], intensity=5)
    await otp.cast(otp.via(REG, "w"), Thing())
    await otp.cast("s", {"k", "l", "m"})
    await trio.sleep(1)

result = simulate(main, seed=42)
assert result.ok, result.failure
print(result.trace_hash)
"""


def test_trace_hash_is_the_same_in_another_process_and_hash_seed(tmp_path: Path) -> None:
    script = tmp_path / "program.py"
    script.write_text(PROGRAM)
    root = Path(__file__).resolve().parents[2]
    hashes = set()
    for hash_seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed, "PYTHONPATH": str(root)}
        out = subprocess.run(
            [sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=60,
            check=True,
        )
        hashes.add(out.stdout.strip())
    assert len(hashes) == 1


def test_registry_repr_is_stable() -> None:
    assert repr(otp.Registry()) == "<Registry unnamed unique>"
    assert repr(otp.Registry("duplicate", name="peers")) == "<Registry peers duplicate>"


# -- simulate leaves the rest of the process as it found it -----------------------------------


def test_simulate_restores_trios_scheduling_flag_and_generator() -> None:
    import trio._core._run as trio_run

    flag = trio_run._ALLOW_DETERMINISTIC_SCHEDULING
    state = trio_run._r.getstate()

    async def fails() -> None:
        await trio.sleep(2.5)
        raise KeyError("boom")

    result = simulate(fails, seed=9)
    assert trio_run._ALLOW_DETERMINISTIC_SCHEDULING is flag
    assert trio_run._r.getstate() == state
    # and a failing run still reports how long it ran
    assert isinstance(result.failure, KeyError)
    assert result.virtual_time == pytest.approx(2.5)


def test_system_time_is_virtual_in_a_simulation_and_real_outside() -> None:
    import time

    async def main() -> tuple[float, float]:
        first = otp.system_time()
        await trio.sleep(90.0)
        return first, otp.system_time()

    result = simulate(main, seed=1)
    assert result.ok
    first, later = result.result
    assert first == otp.testing._sim.SIMULATED_EPOCH and later == first + 90.0

    async def real() -> float:
        async with otp.runtime():
            return otp.system_time()

    assert abs(trio.run(real) - time.time()) < 5.0
    assert abs(otp.system_time() - time.time()) < 5.0  # outside any runtime
