"""``python -m bench netsim``: the whole network in one simulation, virtual time against real.

The program is the test ``tests/sim/test_network_sim.py`` exactly (four complete nodes, each
the shipped supervision tree, on the in-memory transport: ten virtual minutes with crashes
and kills of actors, a slow link, a partition, a byzantine peer, and the invariant checks),
run once per seed under ``otp.testing.simulate`` without keeping the trace (the hash is still
computed). Printed: real seconds per ten virtual minutes, beside the goal of issue 11 (under
20 s), and the same network without faults, partition or liar (its floor). Then one run
under ``cProfile``, its time split by where it goes: the embedded EVM (py-evm, trie, rlp),
BLS (blspy, pyblst), LevelDB (plyvel), encoding, the simulation harness, and otp/Trio/the
node's own Python.
"""

from __future__ import annotations

import cProfile
import logging
import pstats
import random
import shutil
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import trio

import otp
from bench import Options
from bench._common import Goal, median, out, verdict
from node.simnet import ChainWatcher, SimNetwork
from otp.testing import simulate
from tests.sim.test_network_sim import FAULTS, LINKS, TOTAL, check, network_program

GOAL = Goal("<", 20.0, "< 20 s real per 10 virtual minutes")

#: Where profiled time goes, by the file a function is defined in (first match wins).
BUCKETS = (
    ("embedded EVM (py-evm, trie, rlp, eth-*)", ("/eth/", "/trie/", "/rlp/", "/eth_", "/evm/",
                                                 "/hexbytes/", "/eth_utils/", "/cytoolz/")),
    ("BLS signatures (blspy, pyblst)", ("blspy", "pyblst", "node/crypto/")),
    ("LevelDB (plyvel) and storage", ("plyvel", "node/actors/storage.py")),
    ("consensus encoding, codec, hashing", ("node/types/", "otp/codec.py", "cbor2", "cattrs",
                                            "hashlib", "_sha")),
    ("simulation harness (trace, hash)", ("otp/testing/",)),
    ("otp runtime", ("otp/",)),
    ("Trio", ("/trio/",)),
    ("node actors and workflows", ("node/",)),
)


def quiet_network(base: Path, seed: int) -> Callable[[], Awaitable[int]]:
    """The same four nodes for ten virtual minutes with nothing going wrong."""
    async def main() -> int:
        net = SimNetwork(base, 4, rng=random.Random(f"netsim-links:{seed}"), conditions=LINKS)
        net.reset()
        watcher = await otp.start(ChainWatcher, net.names, net.node_ids, name="watcher")
        await net.start_all()
        await trio.sleep(TOTAL)
        report = await otp.call(watcher, "report")
        await net.stop_all()
        await otp.stop(watcher)
        assert not report.violations
        heads: list[int] = [r.height for r in report.head.values()]
        return min(heads)

    return main


def _timed(program: Callable[[], Awaitable[Any]], seed: int, faults: Any) -> tuple[float, Any]:
    t0 = time.perf_counter()
    result = simulate(program, seed=seed, faults=faults, keep_trace=False,
                      max_virtual_time=TOTAL + 600.0)
    elapsed = time.perf_counter() - t0
    result.raise_failure()
    return elapsed * 600.0 / result.virtual_time, result.result


#: Built-in functions (no file: cProfile names them ``~``) that belong to a bucket, by the
#: text of their name: pyblst's pairing, hashing and point operations are built-ins.
BUILTIN_BUCKETS = (
    ("BLS signatures (blspy, pyblst)", ("pyblst", "Blst", "hash_to_group")),
    ("consensus encoding, codec, hashing", ("cbor2", "_hashlib", "CBORDecoder")),
    ("LevelDB (plyvel) and storage", ("plyvel",)),
)


def _bucket(filename: str, name: str) -> str:
    if filename == "~":
        return next((label for label, parts in BUILTIN_BUCKETS
                     if any(p in name for p in parts)), "other (builtins, stdlib)")
    return next((label for label, parts in BUCKETS if any(p in filename for p in parts)),
                "other (builtins, stdlib)")


def _where(profile: cProfile.Profile) -> list[tuple[str, float]]:
    stats = pstats.Stats(profile)
    totals: dict[str, float] = {}
    raw: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    for (filename, _line, name), (_cc, _nc, tottime, _ct, _callers) in raw.items():
        bucket = _bucket(filename, name)
        totals[bucket] = totals.get(bucket, 0.0) + tottime
    return sorted(totals.items(), key=lambda kv: -kv[1])


def run(options: Options) -> dict[str, Any]:
    for name in ("alys", "otp"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    seeds = list(range(options.runs or (1 if options.quick else 3)))
    out(f"netsim benchmark: 4 complete nodes, {TOTAL:.0f} virtual seconds, the test's faults, "
        f"partition and byzantine peer; seeds {seeds}; real seconds per 10 virtual minutes")
    base = Path(tempfile.mkdtemp(prefix="alys-netsim-bench-"))
    try:
        faulty, quiet = [], []
        for seed in seeds:
            seconds, outcome = _timed(network_program(base / "net", seed), seed, FAULTS)
            check(outcome)
            faulty.append(seconds)
            out(f"    seed {seed}: {seconds:6.2f} s real  (common head #"
                f"{min(outcome.heads.values())}, {outcome.report.imports} imports, caught up "
                f"{outcome.caught_up_after:.1f} s after the heal)")
            seconds, head = _timed(quiet_network(base / "quiet", seed), seed, None)
            quiet.append(seconds)
            out(f"    seed {seed}, no faults: {seconds:6.2f} s real  (head #{head})")
        figure = median(faulty)
        ok = GOAL.check(figure)
        out(f"    median {figure:6.2f} s real per 10 virtual minutes   goal {GOAL.text}   "
            f"{verdict(ok)}   (no faults: {median(quiet):.2f} s)")
        profile = cProfile.Profile()
        profile.enable()
        _timed(network_program(base / "prof", 0), 0, FAULTS)
        profile.disable()
        where = _where(profile)
        total = sum(v for _k, v in where)
        out("    where the time goes (one profiled run, seed 0):")
        for label, value in where:
            out(f"      {label:<42} {value:7.2f} s  {100 * value / total:5.1f}%")
    finally:
        shutil.rmtree(base, ignore_errors=True)
    return {"seeds": seeds, "virtual_seconds": TOTAL,
            "real_seconds_per_10_virtual_minutes": {"median": figure, "runs": faulty},
            "no_faults": {"median": median(quiet), "runs": quiet},
            "profile_seconds": dict(where),
            "goals": {"netsim_10_min_real_seconds": {"value": figure, "goal": GOAL.text,
                                                      "pass": ok}}}
