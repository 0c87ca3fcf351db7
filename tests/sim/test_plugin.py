"""The pytest plugin: --sim-seeds, --sim-seed replay, the determinism check, otp_runtime."""

from __future__ import annotations

import pytest

pytest_plugins = ["pytester"]

RACY = '''
import trio
import otp
import pytest
from examples.racy_counter import program


@pytest.mark.sim(seeds=3)
def test_racy(sim):
    sim(program())


def test_seed_fixture(sim_seed):
    assert isinstance(sim_seed, int)
'''


def test_sim_seeds_option_and_failure_prints_the_replay_command(
    pytester: pytest.Pytester,
) -> None:
    pytester.syspathinsert(str(pytester.path.parent))
    pytester.makepyfile(test_racy=RACY)
    result = pytester.runpytest("-p", "no:cacheprovider", "--sim-seeds", "20",
                                "--rootdir", str(pytester.path))
    outcomes = result.parseoutcomes()
    assert outcomes["failed"] > 0 and outcomes["passed"] > 20  # racy fails on some seeds
    result.stdout.fnmatch_lines([
        "*replay this run exactly with:*",
        "*pytest 'test_racy.py::test_racy' --sim-seed *",
        "*simulation failed with seed *",
    ])


def test_marker_sets_the_default_seed_count(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_count='''
import pytest

@pytest.mark.sim(seeds=4)
def test_counted(sim_seed):
    pass
''')
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=4)


def test_sim_seed_replays_exactly_one_seed(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_one='''
def test_one(sim_seed):
    assert sim_seed == 17
''')
    result = pytester.runpytest("-p", "no:cacheprovider", "--sim-seed", "17")
    result.assert_outcomes(passed=1)


def test_nondeterministic_program_is_caught(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_nondet='''
import itertools
import trio
import otp

COUNTER = itertools.count()


class Leaky(otp.GenServer):
    async def init(self):
        await trio.lowlevel.checkpoint()
        # state that survives between runs: the second run differs from the first
        for _ in range(next(COUNTER)):
            otp.send_nowait(otp.self(), "extra")

    async def handle_info(self, msg):
        await trio.lowlevel.checkpoint()


def test_leaky(sim_seed, sim):
    async def main():
        await otp.start(Leaky)
        await trio.sleep(1)

    sim(main)
''')
    result = pytester.runpytest("-p", "no:cacheprovider", "--sim-seeds", "1")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*is not deterministic: traces differ*"])


def test_otp_runtime_fixture_runs_in_virtual_time(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_rt='''
import trio
import otp


class Sleepy(otp.GenServer):
    async def handle_call(self, request, from_):
        await trio.sleep(3600)
        return "done"


async def test_hour_long_call(otp_runtime):
    pid = await otp.start(Sleepy)
    assert await otp.call(pid, "x", timeout=otp.INFINITY) == "done"
''')
    result = pytester.runpytest("-p", "no:cacheprovider", "-p", "trio",
                                "-o", "trio_mode=true")
    result.assert_outcomes(passed=1)
