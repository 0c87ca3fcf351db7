"""otp.testing: deterministic simulation, fault injection, a pytest plugin and strategies.

``result = otp.testing.simulate(main, seed=7, faults=FaultPlan(rate=2.0))`` runs ``main``
in virtual time with Trio's scheduling and every random choice seeded; ``result.trace_hash``
is the same on every run with that seed, and a failure carries the seed that replays it.
"""

from __future__ import annotations

from ._sim import (
    ALL_KINDS,
    Deadlock,
    Fault,
    FaultKind,
    FaultPlan,
    InjectedFault,
    InvariantViolation,
    SimResult,
    SimulationFailure,
    TraceEvent,
    assert_deterministic,
    find_failure,
    simulate,
)

__all__ = [
    "ALL_KINDS",
    "Deadlock",
    "Fault",
    "FaultKind",
    "FaultPlan",
    "InjectedFault",
    "InvariantViolation",
    "SimResult",
    "SimulationFailure",
    "TraceEvent",
    "assert_deterministic",
    "find_failure",
    "simulate",
]
