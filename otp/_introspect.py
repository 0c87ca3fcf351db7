"""Introspection: the live supervision tree as values, and a Prometheus collector.

Both read counters the processes keep anyway (messages handled, handler-time histogram,
mailbox depth, restarts); nothing is added to the message path. The collector reads them at
scrape time.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import attrs
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)
from prometheus_client.registry import REGISTRY, CollectorRegistry

from ._proc import HIST_BUCKETS, _Process
from ._runtime import Runtime, current_runtime
from ._values import DEAD, STATUS_NAMES, Pid


@attrs.frozen
class ProcessSnapshot:
    """One node of :func:`tree_snapshot`: a process, or a supervisor's stopped child."""

    pid: Pid | None
    id: Any
    name: Any
    kind: str
    behaviour: str
    status: str
    restarts: int
    mailbox_depth: int
    messages_handled: int
    histogram: tuple[int, ...]
    strategy: str | None = None
    intensity: int | None = None
    period: float | None = None
    children: tuple[ProcessSnapshot, ...] = ()

    def walk(self) -> Iterator[ProcessSnapshot]:
        """This node and every node below it, depth first."""
        yield self
        for child in self.children:
            yield from child.walk()

    def find(self, key: Any) -> ProcessSnapshot | None:
        """The first node whose id or name is ``key``."""
        for node in self.walk():
            if node.id == key or node.name == key:
                return node
        return None


_EMPTY_HIST = (0,) * HIST_BUCKETS


def _snapshot(proc: _Process, child: Any = None) -> ProcessSnapshot:
    server: Any = proc.server
    kids: tuple[ProcessSnapshot, ...] = ()
    strategy = intensity = period = None
    if proc.cls._otp_supervisor and server is not None and hasattr(server, "_children"):
        flags = server.flags
        strategy = flags.strategy.value
        intensity = flags.intensity
        period = flags.period
        kids = tuple(_child_snapshot(c) for c in server._children)
    return ProcessSnapshot(
        pid=proc.pid,
        id=child.spec.id if child is not None else None,
        name=proc.name,
        kind="supervisor" if proc.cls._otp_supervisor else "worker",
        behaviour=proc.cls.__qualname__,
        status=STATUS_NAMES[proc.status],
        restarts=child.restarts if child is not None else 0,
        mailbox_depth=len(proc.queue) if proc.queue else 0,
        messages_handled=proc.handled,
        histogram=tuple(proc.hist) if proc.hist else _EMPTY_HIST,
        strategy=strategy,
        intensity=intensity,
        period=period,
        children=kids,
    )


def _child_snapshot(child: Any) -> ProcessSnapshot:
    if child.proc is not None:
        return _snapshot(child.proc, child)
    spec = child.spec
    return ProcessSnapshot(
        pid=None,
        id=spec.id,
        name=spec.name,
        kind=spec.type.value,
        behaviour=spec.start.__qualname__,
        status=child.status,
        restarts=child.restarts,
        mailbox_depth=0,
        messages_handled=0,
        histogram=_EMPTY_HIST,
    )


def tree_snapshot(rt: Runtime | None = None) -> tuple[ProcessSnapshot, ...]:
    """Every top-level process of the runtime (those not started by a supervisor), each with
    its supervised subtree: pid, name, status, restarts, mailbox depth, messages handled and
    handler-time histogram. Stopped children appear with ``pid=None``."""
    if rt is None:
        rt = current_runtime()
    return tuple(_snapshot(p._proc) for p in rt.roots if p._proc.status != DEAD)


#: Upper bounds (seconds) of the handler-time histogram buckets.
HIST_BOUNDS: tuple[float, ...] = tuple(1.024e-6 * 2**k for k in range(HIST_BUCKETS - 1))


class OtpCollector:
    """A ``prometheus_client`` collector for one runtime's processes.

    Reads each process's counters when scraped: ``otp_processes``,
    ``otp_process_messages_total``, ``otp_process_mailbox_depth``,
    ``otp_process_mailbox_dropped_total``, ``otp_process_handler_seconds`` (histogram),
    ``otp_supervisor_child_restarts_total`` and ``otp_timer_messages_dropped_total``.
    Labels: ``pid``, ``name``, ``behaviour``.
    """

    def __init__(self, rt: Runtime | None = None) -> None:
        self.runtime = current_runtime() if rt is None else rt

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Iterator[Any]:
        procs: list[_Process] = [pid._proc for pid in self.runtime.procs.values()]
        total = GaugeMetricFamily("otp_processes", "Live otp processes")
        total.add_metric([], len(procs))
        yield total
        labels = ["pid", "name", "behaviour"]
        handled = CounterMetricFamily(
            "otp_process_messages", "Messages handled by the process", labels=labels
        )
        depth = GaugeMetricFamily(
            "otp_process_mailbox_depth", "Messages waiting in the user queue", labels=labels
        )
        dropped = CounterMetricFamily(
            "otp_process_mailbox_dropped", "Messages dropped by the overflow policy",
            labels=labels,
        )
        hist = HistogramMetricFamily(
            "otp_process_handler_seconds", "Time spent in handlers per message", labels=labels
        )
        restarts = CounterMetricFamily(
            "otp_supervisor_child_restarts", "Restarts of a supervised child",
            labels=["supervisor", "child"],
        )
        for proc in procs:
            values = [repr(proc.pid), "" if proc.name is None else str(proc.name),
                      proc.cls.__qualname__]
            handled.add_metric(values, proc.handled)
            depth.add_metric(values, len(proc.queue) if proc.queue else 0)
            dropped.add_metric(values, proc.dropped)
            cumulative = 0
            buckets: list[tuple[str, float]] = []
            counts = proc.hist or _EMPTY_HIST
            for bound, count in zip(HIST_BOUNDS, counts, strict=False):
                cumulative += count
                buckets.append((repr(bound), cumulative))
            cumulative += counts[-1]
            buckets.append(("+Inf", cumulative))
            hist.add_metric(values, buckets, proc.hist_ns / 1e9)
            server: Any = proc.server
            if proc.cls._otp_supervisor and server is not None and hasattr(server, "_children"):
                for child in server._children:
                    restarts.add_metric([repr(proc.pid), str(child.spec.id)], child.restarts)
        timers = CounterMetricFamily(
            "otp_timer_messages_dropped", "Timed messages (send_after) that found no process "
            "or a mailbox that refused them",
        )
        timers.add_metric([], self.runtime.timers_dropped)
        yield timers
        yield handled
        yield depth
        yield dropped
        yield hist
        yield restarts


def register_collector(
    rt: Runtime | None = None, registry: CollectorRegistry = REGISTRY
) -> OtpCollector:
    """Register an :class:`OtpCollector` for ``rt`` (default: the current runtime)."""
    if rt is None:
        rt = current_runtime()
    collector = OtpCollector(rt)
    registry.register(collector)
    return collector
