"""The racy example: the harness finds the lost update within 100 seeds and replays it."""

from __future__ import annotations

from examples.racy_counter import LostUpdate, program
from otp.testing import find_failure, simulate


def test_harness_finds_the_race_and_replays_it_exactly() -> None:
    failing = find_failure(program(), range(100))
    assert failing is not None
    assert isinstance(failing.failure, LostUpdate)
    replay = simulate(program(), seed=failing.seed)
    assert isinstance(replay.failure, LostUpdate)
    assert replay.trace_hash == failing.trace_hash
    assert replay.trace == failing.trace


def test_the_race_depends_on_the_schedule() -> None:
    outcomes = {simulate(program(), seed=s).ok for s in range(100)}
    assert outcomes == {True, False}  # some seeds pass, some fail: a real race


def test_the_atomic_version_never_loses_a_deposit() -> None:
    assert find_failure(program(atomic=True), range(100)) is None
