"""Helpers shared by benchmarks: interleaved rounds, statistics, goals, printing, results."""

from __future__ import annotations

import datetime
import gc
import json
import math
import os
import platform
import statistics
import sys
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, TypeVar

RESULTS_PATH = Path(__file__).resolve().parent / "results.json"


# --------------------------------------------------------------------------------------------
# Environment and results file


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def environment() -> dict[str, Any]:
    """Date, interpreter, library versions and machine, for the results file."""
    return {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "trio": _version("trio"),
        "otp": _version("alys-otp"),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "cpu_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
    }


def merge_results(path: Path, name: str, entry: dict[str, Any]) -> None:
    """Replace ``name``'s entry in the JSON results file, keeping every other benchmark's."""
    data: dict[str, Any] = {}
    if path.exists():
        try:
            loaded = json.loads(path.read_text())
        except (OSError, ValueError):
            loaded = None
        if isinstance(loaded, dict):
            data = loaded
    data[name] = entry
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    tmp.replace(path)


# --------------------------------------------------------------------------------------------
# Statistics


def percentile(sorted_values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (``p`` in 0..100) of an already sorted sequence."""
    if not sorted_values:
        return math.nan
    k = max(0, math.ceil(p / 100 * len(sorted_values)) - 1)
    return float(sorted_values[min(k, len(sorted_values) - 1)])


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values)) if values else math.nan


# --------------------------------------------------------------------------------------------
# Interleaved rounds


T = TypeVar("T")


async def interleave(
    rounds: int, variants: Mapping[str, Callable[[], Awaitable[T]]]
) -> dict[str, list[T]]:
    """Run every variant once per round, in a rotating order, and collect their results.

    Alternating the contestants inside each round (and rotating who goes first) makes machine
    noise (frequency scaling, other processes, a GC pass) hit all of them alike; the caller
    takes the median over rounds. A full collection before each measurement keeps one
    variant's garbage from being collected on another's time.
    """
    names = list(variants)
    results: dict[str, list[T]] = {name: [] for name in names}
    for r in range(rounds):
        k = r % len(names)
        for name in names[k:] + names[:k]:
            gc.collect()
            results[name].append(await variants[name]())
    return results


# --------------------------------------------------------------------------------------------
# Goals and printing


@dataclass(frozen=True)
class Goal:
    """``value OP target``: op is ``">="`` (at least), ``"<"`` (below) or ``"<="`` (at most)."""

    op: str
    target: float
    text: str

    def check(self, value: float) -> bool:
        if math.isnan(value):
            return False
        if self.op == ">=":
            return value >= self.target
        return value <= self.target if self.op == "<=" else value < self.target


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def fmt_rate(value: float, unit: str) -> str:
    return f"{value:>12,.0f} {unit}"


def fmt_us(seconds: float) -> str:
    return f"{seconds * 1e6:,.1f} µs"


def fmt_bytes(n: float) -> str:
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if abs(n) >= size:
            return f"{n / size:,.1f} {unit}"
    return f"{n:,.0f} B"


def out(line: str = "") -> None:
    print(line, flush=True)
    sys.stdout.flush()
