"""Benchmarks: ``python -m bench`` lists them, ``python -m bench NAME`` runs one.

Every figure is measured beside baselines in the same process and run, in interleaved rounds,
and printed as a ratio against them; results go to ``bench/results.json`` (one entry per
benchmark, merged with the entries already there). Benchmarks are never part of the test suite.

A benchmark is a module with a ``run(options) -> dict`` function, registered below by name.
To add one (``python -m bench node``), write the module and add a :func:`register` line.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["BENCHMARKS", "Benchmark", "Options", "register"]


@dataclass(frozen=True)
class Options:
    """What the command line passes to every benchmark."""

    quick: bool = False
    #: Override the number of interleaved rounds (None: the benchmark's default).
    rounds: int | None = None
    #: How many runs a benchmark of repeated trials makes (``crash``; None: its default).
    runs: int | None = None


@dataclass(frozen=True)
class Benchmark:
    name: str
    module: str
    description: str

    def load(self) -> Callable[[Options], dict[str, Any]]:
        """Import the module lazily, so listing benchmarks costs nothing."""
        run: Callable[[Options], dict[str, Any]] = importlib.import_module(self.module).run
        return run


BENCHMARKS: dict[str, Benchmark] = {}


def register(name: str, module: str, description: str) -> None:
    """Make ``python -m bench NAME`` call ``MODULE.run(options)``."""
    if name in BENCHMARKS:
        raise ValueError(f"benchmark {name!r} is already registered")
    BENCHMARKS[name] = Benchmark(name, module, description)


register(
    "otp",
    "bench.otp_bench",
    "otp processes vs raw Trio channels and a bare trio.lowlevel floor: call and cast "
    "throughput, call latency under 100 callers, spawn rate, memory per process, restart "
    "latency",
)

register(
    "sim",
    "bench.sim_bench",
    "otp.testing.simulate speed: 1,000 virtual seconds of a 50-process tree, virtual seconds "
    "per real second, beside the same program under plain trio.run",
)

register(
    "bls",
    "bench.bls_bench",
    "BLS12-381 bindings for Ethereum's PoP scheme: official-vector conformance and ops/s of "
    "sign, verify, aggregate 15, fast_aggregate_verify 15, side by side",
)

register(
    "crash",
    "bench.crash_bench",
    "kill -9 the node (with --dev-miner) at random moments of boot, production, "
    "finalization, PoW submission and RPC; every next boot must recover, finalize, and leave "
    "a chain whose blocks all chain to their parents (--runs N, default 100)",
)

register(
    "node",
    "bench.node_bench",
    "the Alys node: produce + import latency with the embedded engine (beside direct calls "
    "and the seed's claim) and boot-to-ready time",
)

register(
    "rpc",
    "bench.rpc_bench",
    "the node's JSON-RPC (python -m node boot --dev-miner) beside a minimal hypercorn+Trio app "
    "serving the same bytes: requests/s and p50/p99 at 1, 10, 50 clients for getheadblock and "
    "getblockbyheight; the load generator's ceiling; block lateness with and without the miner",
)

register(
    "execution",
    "bench.execution_bench",
    "the embedded EVM (py-evm, LevelDB) beside anvil in the same run: transfers per second "
    "for blocks of 1, 100 and 1,000 transfers, submission rates, import of the same block by "
    "a second engine; produce + import latency through the actors and the engine's share of it",
)

register(
    "sync",
    "bench.sync_bench",
    "node B syncs 20,000 blocks (one transfer each) from two peers over loopback WebSockets, "
    "every signature verified: blocks/s beside the seed's 800, beside verify_blocks alone and "
    "ImportBlocks alone over the same blocks; where the time goes",
)

register(
    "netsim",
    "bench.netsim_bench",
    "the whole network in one simulation: 4 complete nodes for 10 virtual minutes under the "
    "test's crashes, kills, partition and byzantine peer; real seconds beside the goal of 20 s, "
    "the same network without faults, and where the time goes (cProfile)",
)

register(
    "peg",
    "bench.peg_bench",
    "the peg's rules: peg-out proposal + check + signing + finalization latency for 1, 10 "
    "and 100 requests per block, 3 and 15 members, beside raw BIP340 signing of the same "
    "sighashes (libsecp256k1 and btclib); peg-in crediting to come",
)
