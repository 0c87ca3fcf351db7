"""``python -m node boot|check|tree [supervision.toml] [--config FILE] [--set key=value]
[--dev-miner]``.

Loads the layered configuration (defaults < TOML file < ``ALYS_*`` environment < ``--set``),
fills the tree's ``${node.*}`` references from it and boots the tree until SIGINT/SIGTERM.
With no other configuration this is a single-authority dev chain in ``./.alys``.
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import sys
from collections.abc import Sequence

import otp

from .config import ConfigError, load_config


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m node", description="an Alys node")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, text in (("boot", "run the node until SIGINT/SIGTERM"),
                       ("check", "validate the configuration and the tree"),
                       ("tree", "draw the supervision tree with this configuration")):
        p = sub.add_parser(name, help=text, description=text)
        p.add_argument("tree", nargs="?", default="supervision.toml",
                       help="the supervision tree (default: supervision.toml)")
        p.add_argument("--config", help="a TOML configuration file (default: ./alys.toml if "
                       "present)")
        p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="override one configuration value (repeatable)")
        p.add_argument("--dev-miner", action="store_true",
                       help="run a CPU merged miner against this node's RPC")
    args = parser.parse_args(argv)
    sets = list(args.set) + (["miner.enabled=true"] if args.dev_miner else [])
    try:
        config = load_config(args.config, os.environ, sets)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    logging.basicConfig(
        level=getattr(logging, config.log_level),
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
    )
    logging.getLogger("hypercorn").setLevel(logging.WARNING)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    try:
        spec = otp.load_tree(args.tree, config.as_mapping())
    except otp.TreeError as exc:
        print(exc, file=sys.stderr)
        return 2
    if args.command == "check":
        print(f"{args.tree}: ok ({sum(1 for _ in spec.walk())} nodes); data in {config.data_dir}")
        return 0
    if args.command == "tree":
        print(otp.render_tree(spec))
        return 0
    os.makedirs(config.data_dir, exist_ok=True)
    # Everything imported so far (py-evm, BLS, hypercorn, the actors' modules: ~45,000 objects)
    # lives as long as the process. Moved out of the collector's sight, it no longer makes
    # every full collection scan it: under RPC load those ran every second or so and stopped
    # the whole node for tens of milliseconds each (python -m bench rpc, p99).
    gc.freeze()
    return otp.boot(spec)


if __name__ == "__main__":
    sys.exit(main())
