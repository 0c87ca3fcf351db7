"""``python -m bench [NAME ...] [--quick] [--rounds N] [--output PATH]``."""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

from bench import BENCHMARKS, Options
from bench._common import RESULTS_PATH, environment, merge_results


def _list() -> None:
    print("benchmarks (run one with: python -m bench NAME [--quick]):")
    width = max(len(name) for name in BENCHMARKS)
    for name, bench in BENCHMARKS.items():
        print(f"  {name:<{width}}  {bench.description}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench", description="Benchmarks, as ratios against same-run baselines."
    )
    parser.add_argument("names", nargs="*", metavar="NAME", help="benchmarks to run")
    parser.add_argument("--quick", action="store_true", help="a short smoke run (~10 s)")
    parser.add_argument("--rounds", type=int, default=None, help="interleaved rounds per figure")
    parser.add_argument("--runs", type=int, default=None,
                        help="runs of a benchmark of repeated trials (crash)")
    parser.add_argument(
        "--output", type=Path, default=RESULTS_PATH, help=f"results file (default {RESULTS_PATH})"
    )
    args = parser.parse_args(argv)
    if not args.names:
        _list()
        return 0
    unknown = [n for n in args.names if n not in BENCHMARKS]
    if unknown:
        print(f"unknown benchmark(s): {', '.join(unknown)}", file=sys.stderr)
        _list()
        return 2
    if args.rounds is not None and args.rounds < 1:
        parser.error("--rounds must be at least 1")
    if args.runs is not None and args.runs < 1:
        parser.error("--runs must be at least 1")
    options = Options(quick=args.quick, rounds=args.rounds, runs=args.runs)
    command = shlex.join(["python", "-m", "bench", *(argv if argv is not None else sys.argv[1:])])
    for name in args.names:
        run = BENCHMARKS[name].load()
        t0 = time.perf_counter()
        result = run(options)
        elapsed = time.perf_counter() - t0
        entry = {
            "command": command,
            **environment(),
            "quick": options.quick,
            "wall_seconds": round(elapsed, 2),
            **result,
        }
        merge_results(args.output, name, entry)
        print(f"\n{name}: {elapsed:.1f} s; results written to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
