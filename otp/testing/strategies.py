"""Hypothesis strategies for supervision trees and fault plans, for property tests.

``supervision_trees()`` draws :class:`otp.TreeSpec` values (boot them with
``await otp.start_tree(spec)``); ``fault_plans()`` draws :class:`FaultPlan` values for
:func:`otp.testing.simulate`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from hypothesis import strategies as st

import otp

from ._sim import ALL_KINDS, FaultKind, FaultPlan

__all__ = ["fault_plans", "supervision_trees"]

_WORKER: Any = "otp.testing.workers:Echo"


def _unique_ids(children: list[Any]) -> tuple[Any, ...]:
    seen: dict[str, Any] = {}
    for child in children:
        seen.setdefault(child.id, child)
    return tuple(seen.values())


def supervision_trees(
    *,
    max_depth: int = 3,
    max_children: int = 4,
    workers: Sequence[str] = (_WORKER,),
    worker_args: st.SearchStrategy[Any] | None = None,
    strategies: Sequence[otp.Strategy] = tuple(otp.Strategy),
    restarts: Sequence[otp.Restart] = tuple(otp.Restart),
    intensity: st.SearchStrategy[int] | None = None,
    period: st.SearchStrategy[float] | None = None,
    on_exhausted: Sequence[otp.OnExhausted] = (otp.OnExhausted.ESCALATE,),
) -> st.SearchStrategy[otp.TreeSpec]:
    """Random trees: depth up to ``max_depth`` supervisors, up to ``max_children`` children
    each, workers started from ``workers`` (``"module:Class"``) with ``worker_args`` (a
    strategy for their ``args``; default none), random strategies, restart types and
    intensities. Ids are unique among siblings."""
    ids = st.text(alphabet="abcdefghijklmnopqrstuvwxyz", min_size=1, max_size=8)
    args = worker_args if worker_args is not None else st.just(())
    intensities = intensity if intensity is not None else st.integers(0, 10)
    periods = period if period is not None else st.sampled_from([0.5, 1.0, 5.0, 30.0])

    def worker() -> st.SearchStrategy[otp.WorkerNode]:
        return st.builds(
            otp.WorkerNode,
            id=ids,
            start=st.sampled_from(list(workers)),
            args=args,
            restart=st.sampled_from(list(restarts)),
        )

    def supervisor(children: st.SearchStrategy[Any]) -> st.SearchStrategy[otp.SupervisorNode]:
        return st.builds(
            otp.SupervisorNode,
            id=ids,
            strategy=st.sampled_from(list(strategies)),
            intensity=intensities,
            period=periods,
            on_exhausted=st.sampled_from(list(on_exhausted)),
            children=st.lists(children, max_size=max_children).map(_unique_ids),
            restart=st.sampled_from(list(restarts)),
        )

    def level(depth: int) -> st.SearchStrategy[Any]:
        if depth <= 1:
            return worker()
        return st.one_of(worker(), supervisor(level(depth - 1)))

    return supervisor(level(max_depth))


def fault_plans(
    *,
    kinds: Sequence[FaultKind] = ALL_KINDS,
    max_rate: float = 10.0,
    max_duration: float = 1.0,
    spare: Sequence[Any] = (),
) -> st.SearchStrategy[FaultPlan]:
    """Random fault plans: a rate up to ``max_rate`` faults per virtual second, a non-empty
    subset of ``kinds``, durations up to ``max_duration``."""
    return st.builds(
        FaultPlan,
        rate=st.floats(0.0, max_rate),
        kinds=st.lists(st.sampled_from(list(kinds)), min_size=1, unique=True).map(tuple),
        max_delay=st.floats(0.0, 0.2),
        duration=st.floats(0.0, max_duration),
        spare=st.just(tuple(spare)),
    )
