"""pytest plugin for otp: virtual-time runtimes and seeded simulations.

Loaded automatically (entry point ``pytest11``), or with ``pytest_plugins =
["otp.testing.plugin"]``.

* ``otp_runtime`` — an async fixture: an :func:`otp.runtime` under an autojumping MockClock.
* ``sim`` — a :class:`Simulator` bound to the test's seed: ``result = sim(main, faults=...)``
  runs the simulation twice, fails the test if the two traces differ, and raises
  :class:`~otp.testing.SimulationFailure` (naming the seed) if the run failed.
* ``sim_seed`` — the seed; a test that uses it (directly or through ``sim``) runs once per
  seed: ``--sim-seeds N`` (default: the marker's ``seeds``, else the ini value ``sim_seeds``,
  else 10), or exactly one with ``--sim-seed S``, which replays a failure.
* On failure the report prints the command that replays that run.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Generator
from typing import Any

import pytest
import trio
import trio.testing

import otp

from ._sim import FaultPlan, SimResult, assert_deterministic, simulate

DEFAULT_SEEDS = 10


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("otp", "otp simulations")
    group.addoption(
        "--sim-seeds", type=int, default=None, metavar="N",
        help="run each simulation test under seeds 0..N-1",
    )
    group.addoption(
        "--sim-seed", type=int, default=None, metavar="S",
        help="run simulation tests under seed S only (replays a failure exactly)",
    )
    parser.addini("sim_seeds", "default number of seeds per simulation test", default="")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "sim(seeds=N): a simulation test, run once per seed (see --sim-seeds)"
    )


def _seeds(config: pytest.Config, marker: pytest.Mark | None) -> list[int]:
    replay = config.getoption("--sim-seed")
    if replay is not None:
        return [int(replay)]
    count = config.getoption("--sim-seeds")
    if count is None and marker is not None:
        count = marker.kwargs.get("seeds")
    if count is None:
        ini = config.getini("sim_seeds")
        count = int(ini) if ini else DEFAULT_SEEDS
    return list(range(int(count)))


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "sim_seed" in metafunc.fixturenames:
        seeds = _seeds(metafunc.config, metafunc.definition.get_closest_marker("sim"))
        metafunc.parametrize("sim_seed", seeds, ids=[f"seed{s}" for s in seeds])


def run_with_autojump(fn: Any, *args: Any, clock: Any = None, **kwargs: Any) -> Any:
    """``trio.run`` with an autojumping MockClock unless one is given."""
    if clock is None:
        clock = trio.testing.MockClock(autojump_threshold=0)
    return trio.run(fn, *args, clock=clock, **kwargs)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "otp_runtime" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.trio(run=run_with_autojump))


@pytest.fixture
async def otp_runtime() -> AsyncIterator[otp.lowlevel.Runtime]:
    """An otp runtime under virtual time (the test's clock autojumps)."""
    async with otp.runtime() as rt:
        yield rt


class Simulator:
    """Runs simulations under one seed; see the module docs."""

    def __init__(self, seed: int, check_determinism: bool = True) -> None:
        self.seed = seed
        self.check_determinism = check_determinism
        self.results: list[SimResult] = []

    def __call__(
        self,
        main: Callable[[], Awaitable[Any]],
        *,
        faults: FaultPlan | None = None,
        max_virtual_time: float = 3600.0,
        raise_failure: bool = True,
    ) -> SimResult:
        run = assert_deterministic if self.check_determinism else simulate
        result = run(main, seed=self.seed, faults=faults, max_virtual_time=max_virtual_time)
        self.results.append(result)
        if raise_failure:
            result.raise_failure()
        return result


@pytest.fixture
def sim(sim_seed: int) -> Simulator:
    """A :class:`Simulator` for this test's seed."""
    return Simulator(sim_seed)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, Any, None]:
    outcome = yield
    report = outcome.get_result()
    if report.failed and call.when == "call":
        callspec = getattr(item, "callspec", None)
        seed = callspec.params.get("sim_seed") if callspec is not None else None
        if seed is not None:
            node = item.nodeid.split("[")[0]
            report.sections.append(
                ("otp simulation", f"replay this run exactly with:\n  pytest '{node}' "
                 f"--sim-seed {seed}")
            )
