"""``python -m node boot|check|tree|key|status [supervision.toml] [--config FILE]
[--set key=value] [--dev-miner]``, ``python -m node devnet [N]``,
``python -m node deposit 0xADDRESS BTC``, ``python -m node received BITCOIN_ADDRESS`` and
``python -m node --version``.

Loads the layered configuration (defaults < TOML file < ``ALYS_*`` environment < ``--set``),
fills the tree's ``${node.*}`` references from it and boots the tree until SIGINT/SIGTERM.
With no other configuration this is a single-authority dev chain in ``./.alys``.

* ``key`` prints the node's BLS public key (creating the key in the data directory if there
  is none yet): the value to list in ``chain.authorities``.
* ``status`` asks a running node (its RPC and metrics ports, from the same configuration)
  for its head, finalized block, sync state and the restarts of each actor.
* ``devnet N`` writes the configs of N authorities on loopback and runs them as child
  processes until Ctrl-C (:mod:`node.devnet`); ``--bitcoin`` adds a regtest btcd and the
  peg-in bridge.
* ``deposit 0xADDRESS BTC`` sends a peg-in deposit on such a devnet's btcd.
* ``received BITCOIN_ADDRESS`` lists what that btcd shows paid to an address (a peg-out
  arriving), as btcd has no wallet to ask.
* ``boot --stop-on-stdin-eof`` stops the node in order when its stdin reaches end of file:
  a parent that holds the other end of a pipe (the devnet) takes its nodes with it when it
  ends, however it ends.
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import platform
import signal
import sys
import threading
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import httpx

import otp

from .config import ConfigError, NodeConfig, load_config

logger = logging.getLogger("alys")

#: The node's own supervision tree, installed with the package.
DEFAULT_TREE = Path(__file__).resolve().parent / "supervision.toml"


def version() -> str:
    """``alys node X (otp Y, python Z)``."""
    try:
        dist = metadata.version("alys-otp")
    except metadata.PackageNotFoundError:
        dist = "unknown"
    return f"alys node {dist} (otp {dist}, python {platform.python_version()})"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m node", description="an Alys node")
    parser.add_argument("--version", action="version", version=version())
    sub = parser.add_subparsers(dest="command", required=True)
    for name, text in (("boot", "run the node until SIGINT/SIGTERM"),
                       ("check", "validate the configuration and the tree"),
                       ("tree", "draw the supervision tree with this configuration"),
                       ("key", "print the node's BLS public key (for chain.authorities)"),
                       ("status", "ask a running node for its head, finalized block and "
                                  "restarts")):
        p = sub.add_parser(name, help=text, description=text)
        p.add_argument("tree", nargs="?", default=None,
                       help="the supervision tree (default: the node's own, "
                            "node/supervision.toml)")
        p.add_argument("--config", help="a TOML configuration file (default: ./alys.toml if "
                       "present)")
        p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="override one configuration value (repeatable)")
        p.add_argument("--dev-miner", action="store_true",
                       help="run a CPU merged miner against this node's RPC")
        if name == "boot":
            p.add_argument("--stop-on-stdin-eof", action="store_true",
                           help="stop in order when stdin reaches end of file (for a "
                                "parent process that holds the other end of a pipe)")
    from . import devnet

    text = "run N authorities on 127.0.0.1 as child processes until Ctrl-C"
    devnet.add_arguments(sub.add_parser("devnet", help=text, description=text))
    text = "send a peg-in deposit on a devnet's btcd (python -m node devnet --bitcoin)"
    devnet.add_deposit_arguments(sub.add_parser("deposit", help=text, description=text))
    text = ("what a devnet's btcd shows paid to a Bitcoin address, mined or in the mempool "
            "(a peg-out arriving)")
    devnet.add_received_arguments(sub.add_parser("received", help=text, description=text))
    args = parser.parse_args(argv)
    if args.command == "devnet":
        return devnet.run(args)
    if args.command == "deposit":
        return devnet.deposit_main(args)
    if args.command == "received":
        return devnet.received_main(args)
    sets = list(args.set) + (["miner.enabled=true"] if args.dev_miner else [])
    try:
        config = load_config(args.config, os.environ, sets)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    otp.configure_logging(config.log_level, config.log_format)
    logging.getLogger("hypercorn").setLevel(logging.WARNING)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    if args.command == "key":
        return _key(config)
    if args.command == "status":
        return _status(config)
    tree = Path(args.tree) if args.tree is not None else DEFAULT_TREE
    try:
        spec = otp.load_tree(tree, config.as_mapping())
    except otp.TreeError as exc:
        print(exc, file=sys.stderr)
        return 2
    if args.command == "check":
        print(f"{tree}: ok ({sum(1 for _ in spec.walk())} nodes); data in {config.data_dir}")
        return 0
    if args.command == "tree":
        print(otp.render_tree(spec))
        return 0
    os.makedirs(config.data_dir, exist_ok=True)
    if getattr(args, "stop_on_stdin_eof", False):
        _stop_on_stdin_eof()
    # Everything imported so far (py-evm, BLS, hypercorn, the actors' modules: ~45,000 objects)
    # lives as long as the process. Moved out of the collector's sight, it no longer makes
    # every full collection scan it: under RPC load those ran every second or so and stopped
    # the whole node for tens of milliseconds each (python -m bench rpc, p99).
    gc.freeze()
    code = otp.boot(spec)
    if code == 0:
        logger.info("alys node stopped in order")
    else:
        logger.error("alys node stopped with exit code %d", code)
    return code


def _stop_on_stdin_eof() -> None:
    """Send this process SIGTERM (the ordered shutdown of :func:`otp.boot`) once stdin ends:
    a daemon thread blocks reading it, as nothing is ever written there."""

    def watch() -> None:
        try:
            while os.read(sys.stdin.fileno(), 4096):
                pass
        except OSError:
            pass
        logger.info("stdin closed (the parent process ended): stopping")
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="stdin-eof", daemon=True).start()


def _key(config: NodeConfig) -> int:
    from .actors.chain import load_or_create_key

    path = Path(config.data_dir) / "keys" / "authority.key"
    key = load_or_create_key(path)
    print(f"0x{key.public_key().to_bytes().hex()}")
    print(f"(key file: {path})", file=sys.stderr)
    return 0


def _status(config: NodeConfig) -> int:
    rpc = f"http://{config.rpc.host}:{config.rpc.port}/"
    metrics = f"http://{config.metrics.host}:{config.metrics.port}/tree"
    try:
        with httpx.Client(timeout=5.0) as client:
            answer = client.post(rpc, json={"method": "getchainstatus", "params": [], "id": 1})
            status = answer.json()["result"]
            tree = client.get(metrics).json()
    except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
        print(f"no node answers at {rpc} and {metrics}: {exc}", file=sys.stderr)
        return 1

    def ref(block: dict[str, Any] | None) -> str:
        return "none" if not block else f"#{block['height']} {str(block['hash'])[:16]}"

    print(f"head       {ref(status.get('head'))}")
    print(f"finalized  {ref(status.get('finalized'))}")
    print(f"synced     {status.get('synced')}   paused {status.get('paused')}")
    print("restarts")

    def walk(node: dict[str, Any], depth: int) -> None:
        print(f"  {'  ' * depth}{node.get('id') or node.get('name')}: "
              f"{node.get('restarts')} ({node.get('status')})")
        for child in node.get("children") or []:
            walk(child, depth + 1)

    for root in tree:
        walk(root, 0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
