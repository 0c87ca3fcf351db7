"""Random trees and fault plans from otp.testing.strategies: every one boots, survives its
faults within otp's rules, shuts down cleanly, and replays exactly."""

from __future__ import annotations

import logging
from typing import Any

import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import otp
from otp.testing import FaultPlan, assert_deterministic
from otp.testing.strategies import fault_plans, supervision_trees


@pytest.fixture(autouse=True)
def _quiet(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.CRITICAL, logger="otp")


def booted(spec: otp.TreeSpec) -> Any:
    async def main() -> int:
        try:
            await otp.start_tree(spec)
        except otp.StartError:
            return -1
        await trio.sleep(2.0)
        return len(otp.lowlevel.current_runtime().procs)

    return main


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(supervision_trees(max_depth=3, max_children=3), fault_plans(max_rate=5.0),
       st.integers(0, 2**32))
def test_random_trees_under_random_faults(
    spec: otp.TreeSpec, plan: FaultPlan, seed: int
) -> None:
    result = assert_deterministic(booted(spec), seed=seed, faults=plan)
    assert result.ok, result.failure


@settings(max_examples=30, deadline=None)
@given(supervision_trees())
def test_generated_trees_are_valid_and_round_trip(spec: otp.TreeSpec) -> None:
    assert otp.load_tree(otp.dump_tree(spec)) == spec
    count = sum(1 for _ in spec.walk())
    assert count >= 1
