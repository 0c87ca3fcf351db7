"""``python -m node devnet N``: N authorities on loopback, each a ``python -m node boot``.

What it writes, in a directory (``./devnet`` unless ``--dir``):

* ``node<i>/`` — node *i*'s data directory, holding its BLS authority key
  (``keys/authority.key``): generated the first time, reused afterwards (``--dev-keys``
  uses fixed, publicly known keys instead: :func:`dev_key`);
* ``node<i>.toml`` — its configuration: ``chain.authorities`` lists the N public keys in
  order (node *i* is authority *i - 1*), the network on (``ws://127.0.0.1:<p2p>``, every
  other node a bootnode), the embedded EVM with the dev genesis, JSON-RPC, metrics and
  Ethereum JSON-RPC on 127.0.0.1; node 1 runs the dev miner, so blocks finalize. Paths in
  it are relative to the devnet directory, where the nodes run;
* ``node<i>.log`` — its output, appended to across runs;
* ``.gitignore`` — the chain data and logs (configs and keys stay visible).

Ports: node *i* listens on the first node's port + *i - 1* for each kind: JSON-RPC 3000,
metrics 9001, Ethereum JSON-RPC 8545 (HTTP and WebSocket), P2P 55444 by default;
``--base-port B`` moves all of them (P2P from B, JSON-RPC from B + 16, metrics from B + 32,
Ethereum JSON-RPC from B + 48), and ``--p2p-port`` and friends move one kind.

Then it runs the nodes as child processes until Ctrl-C or SIGTERM, like ``anvil`` or
``hardhat node``: one foreground command, the nodes' output in their log files, where each
one listens printed once. The supervisor is plain synchronous code (``subprocess`` and
signal handlers): it only starts processes, waits and forwards a stop, which needs no
concurrency, and it keeps working whatever state the nodes are in.

* **Stopping**: the nodes stop one at a time in reverse start order (node N first, node 1
  and its miner last), each with SIGTERM — the node's own ordered shutdown — and SIGKILL if
  it has not exited within ``--stop-timeout`` seconds. A second Ctrl-C kills what is left.
* **No orphans**: each node runs in a session of its own (so a Ctrl-C in the terminal
  reaches the devnet only, which stops the nodes in order) with ``--stop-on-stdin-eof``:
  its stdin is a pipe whose other end only this process holds. However this process ends —
  even by SIGKILL — the kernel closes that end, each node reads end-of-file and stops itself
  in order. A pipe works on every POSIX system (no ``prctl(PR_SET_PDEATHSIG)``, which is
  Linux's alone), and a node's grinding miner follows its node the same way.
* **A node that dies** (a crash, a ``kill -9``) is reported with its exit status and the
  command that starts it again; the others go on (a federation of three survives one
  authority down). The devnet does not restart it by itself: a devnet is for watching what
  the nodes do, and a restart behind your back would hide it.

Bad input (N outside 1..15, a taken port, a directory holding files a devnet does not
write, a key file that is not a key, data made with other authorities) is refused before
anything starts, with a message naming what and where; the exit code is 2.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
import tomllib
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType
from typing import Any

import attrs
import httpx
import tomli_w

import otp

from .config import ConfigError, load_config, structure
from .crypto import bls

#: The most authorities: the approval bitfield holds 15.
MAX_NODES = 15
HOST = "127.0.0.1"
#: Port kinds, in the order ``--base-port`` lays them out, with their defaults.
KINDS = ("p2p", "rpc", "metrics", "eth_rpc")
DEFAULT_PORTS = {"p2p": 55444, "rpc": 3000, "metrics": 9001, "eth_rpc": 8545}
#: ``--base-port B``: kind k's first port is B + k * BASE_STRIDE.
BASE_STRIDE = 16
LABELS = {"p2p": "P2P", "rpc": "JSON-RPC", "metrics": "metrics",
          "eth_rpc": "Ethereum JSON-RPC"}
#: Seconds the nodes have to answer on their JSON-RPC after they start.
READY_TIMEOUT = 180.0
EXIT_OK, EXIT_FAILED, EXIT_INVALID = 0, 1, 2

_OURS = re.compile(r"^node(\d+)(\.toml|\.log)?$")
GITIGNORE = "# written by python -m node devnet: chain data and logs\nnode*/chain/\n" \
            "node*/evm/\nnode*/keys/node_key\n*.log\n*.tmp\n"


class DevnetError(Exception):
    """Input the devnet refuses (exit code 2); the message says what and where."""


def dev_key(index: int) -> bls.SecretKey:
    """The fixed dev key of node ``index`` (1-based): EIP-2333 from the seed
    ``SHA-256("alys devnet authority <index>")``. Public knowledge, as anvil's mnemonic is:
    for a devnet on this machine only."""
    return bls.SecretKey.from_seed(hashlib.sha256(f"alys devnet authority {index}".encode())
                                   .digest())


@attrs.frozen
class NodePlan:
    """Node ``index`` (1-based) of a devnet in ``directory``."""

    index: int
    directory: Path
    public_key: str  # 0x-hex
    ports: dict[str, int]
    miner: bool

    @property
    def name(self) -> str:
        return f"node{self.index}"

    @property
    def config_path(self) -> Path:
        return self.directory / f"{self.name}.toml"

    @property
    def data_dir(self) -> Path:
        return self.directory / self.name

    @property
    def log_path(self) -> Path:
        return self.directory / f"{self.name}.log"

    def urls(self) -> dict[str, str]:
        return {"rpc": f"http://{HOST}:{self.ports['rpc']}",
                "eth_rpc": f"http://{HOST}:{self.ports['eth_rpc']}",
                "metrics": f"http://{HOST}:{self.ports['metrics']}/metrics",
                "p2p": f"ws://{HOST}:{self.ports['p2p']}"}

    def command(self) -> list[str]:
        """How the devnet starts it (from the devnet directory)."""
        return [sys.executable, "-m", "node", "boot", "--config", self.config_path.name,
                "--stop-on-stdin-eof"]

    def manual_command(self) -> str:
        return f"cd {self.directory} && python -m node boot --config {self.config_path.name}"


# ---------------------------------------------------------------------------- planning


def first_ports(base: int | None, overrides: dict[str, int | None]) -> dict[str, int]:
    """The first node's port of each kind."""
    ports = dict(DEFAULT_PORTS) if base is None else {
        kind: base + k * BASE_STRIDE for k, kind in enumerate(KINDS)}
    for kind, port in overrides.items():
        if port is not None:
            ports[kind] = port
    return ports


def check_count(n: int) -> None:
    if not 1 <= n <= MAX_NODES:
        raise DevnetError(f"devnet: N must be 1 to {MAX_NODES} (the approval bitfield holds "
                          f"{MAX_NODES} authorities), not {n}")


def check_port_layout(n: int, first: dict[str, int]) -> None:
    """Every port within 1..65535 and no port used twice."""
    seen: dict[int, str] = {}
    for i in range(n):
        for kind in KINDS:
            port = first[kind] + i
            where = f"node{i + 1}'s {LABELS[kind]}"
            if not 1 <= port <= 65535:
                raise DevnetError(f"devnet: {where} port would be {port}, outside 1..65535; "
                                  "choose lower ports (--base-port, --{}-port)"
                                  .format(kind.replace("_", "-")))
            if port in seen:
                raise DevnetError(f"devnet: port {port} would serve both {seen[port]} and "
                                  f"{where}; choose ports that do not overlap (each kind "
                                  f"takes {n} in a row)")
            seen[port] = where


def check_directory(directory: Path) -> None:
    """The directory is new, empty, or holds only what a devnet writes."""
    if directory.exists() and not directory.is_dir():
        raise DevnetError(f"devnet: {directory} exists and is not a directory; choose "
                          "another with --dir")
    if not directory.exists():
        return
    foreign = []
    for entry in sorted(directory.iterdir()):
        match = _OURS.match(entry.name)
        ours = entry.name == ".gitignore" and entry.is_file()
        if match and 1 <= int(match.group(1)) <= MAX_NODES:
            ours = entry.is_dir() if match.group(2) is None else entry.is_file()
        if not ours:
            foreign.append(entry.name + ("/" if entry.is_dir() else ""))
    if foreign:
        shown = ", ".join(foreign[:8]) + (f" and {len(foreign) - 8} more"
                                          if len(foreign) > 8 else "")
        raise DevnetError(f"devnet: {directory} holds files a devnet does not write ({shown}); "
                          "choose a new or empty directory with --dir, or remove them")


def authority_key(plan_dir: Path, index: int, dev_keys: bool) -> bls.SecretKey:
    """Node ``index``'s key: the one in its data directory if there is one, else a new one
    (or the dev key, with ``dev_keys``), written there."""
    from .actors.chain import load_or_create_key
    from .errors import KeyFileError

    path = plan_dir / "keys" / "authority.key"
    if dev_keys:
        key = dev_key(index)
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(key.to_bytes().hex() + "\n", encoding="utf-8")
            os.chmod(path, 0o600)
    try:
        found = load_or_create_key(path)
    except KeyFileError as exc:
        raise DevnetError(f"devnet: {exc}; remove it to generate a new one") from None
    if dev_keys and found != dev_key(index):
        raise DevnetError(f"devnet: {path} holds another key than node{index}'s dev key; "
                          "remove it, or run without --dev-keys to keep it")
    return found


def plan(directory: Path, n: int, first: dict[str, int], dev_keys: bool) -> list[NodePlan]:
    """The devnet's nodes, their keys made or read; nothing else written."""
    check_count(n)
    check_port_layout(n, first)
    check_directory(directory)
    directory.mkdir(parents=True, exist_ok=True)
    plans = []
    for i in range(1, n + 1):
        key = authority_key(directory / f"node{i}", i, dev_keys)
        plans.append(NodePlan(i, directory, "0x" + key.public_key().to_bytes().hex(),
                              {kind: first[kind] + i - 1 for kind in KINDS}, miner=i == 1))
    return plans


def node_config(node: NodePlan, plans: Sequence[NodePlan],
                sets: Sequence[str] = ()) -> dict[str, Any]:
    """Node ``node``'s configuration as a TOML-ready mapping (``--set`` items on top)."""
    config: dict[str, Any] = {
        "data_dir": node.name,
        "chain": {"authorities": [p.public_key for p in plans]},
        "engine": {"kind": "embedded"},
        "rpc": {"host": HOST, "port": node.ports["rpc"]},
        "metrics": {"host": HOST, "port": node.ports["metrics"]},
        "eth_rpc": {"enabled": True, "host": HOST, "port": node.ports["eth_rpc"]},
        "network": {"enabled": True, "host": HOST, "port": node.ports["p2p"],
                    "bootnodes": [f"{HOST}:{p.ports['p2p']}" for p in plans if p is not node]},
        "miner": {"enabled": node.miner},
    }
    if sets:
        try:
            extra = otp.config.parse_set(sets)
        except ValueError as exc:
            raise DevnetError(f"devnet: --set: {exc}") from None
        config = otp.config.merge(config, extra)
    return config


def check_existing_chain(node: NodePlan, authorities: list[str]) -> None:
    """Refuse to point a data directory holding a chain at another set of authorities."""
    if not (node.data_dir / "chain").exists() or not node.config_path.is_file():
        return
    try:
        old = tomllib.loads(node.config_path.read_text(encoding="utf-8"))
        before = list(old.get("chain", {}).get("authorities", []))
    except (OSError, tomllib.TOMLDecodeError, AttributeError):
        return
    if before and before != authorities:
        raise DevnetError(
            f"devnet: {node.data_dir} holds a chain made by {len(before)} authorities "
            f"({node.config_path.name} lists them), and this devnet has {len(authorities)} "
            f"other ones; remove {node.directory} to start afresh, or run it with "
            f"N={len(before)}")


def write(plans: Sequence[NodePlan], sets: Sequence[str] = (), dev_keys: bool = False) -> None:
    """Write every node's configuration (checked as ``boot`` will read it) and the
    ``.gitignore``."""
    authorities = [p.public_key for p in plans]
    configs = []
    for node in plans:
        check_existing_chain(node, authorities)
        config = node_config(node, plans, sets)
        try:
            structure(config)
        except ConfigError as exc:
            raise DevnetError(f"devnet: {node.name}'s configuration would be invalid:\n  "
                              + "\n  ".join(exc.problems)) from None
        configs.append(config)
    n = len(plans)
    for node, config in zip(plans, configs, strict=True):
        header = (f"# {node.name} of a devnet of {n} authorities, written by "
                  f"`python -m node devnet {n}`.\n"
                  f"# Paths are relative to this directory; to run this node alone: "
                  f"python -m node boot --config {node.config_path.name}\n"
                  f"# It is authority {node.index - 1} (chain.authorities[{node.index - 1}])"
                  f"{'; it runs the dev miner' if node.miner else ''}.\n"
                  + ("# Its key is the fixed dev key of --dev-keys: publicly known, for "
                     "this machine only.\n" if dev_keys else "") + "\n")
        tmp = node.config_path.with_name(node.config_path.name + ".tmp")
        tmp.write_text(header + tomli_w.dumps(config), encoding="utf-8")
        os.replace(tmp, node.config_path)
    (plans[0].directory / ".gitignore").write_text(GITIGNORE, encoding="utf-8")
    for node in plans:  # read back as boot reads it
        try:
            load_config(node.config_path, {})
        except ConfigError as exc:
            raise DevnetError(str(exc)) from None


def check_ports_free(plans: Sequence[NodePlan]) -> None:
    """Each port can be bound on 127.0.0.1 now (as the nodes' servers bind them)."""
    for node in plans:
        for kind in KINDS:
            port = node.ports[kind]
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    s.bind((HOST, port))
                except OSError as exc:
                    raise DevnetError(
                        f"devnet: port {port} on {HOST}, for {node.name}'s {LABELS[kind]}, is "
                        f"taken ({exc.strerror}); stop what uses it or choose other ports "
                        f"(--base-port, --{kind.replace('_', '-')}-port)") from None


# ---------------------------------------------------------------------------- running


class _Signals:
    """SIGINT, SIGTERM and SIGHUP counted, not raised: the loops below look at the count."""

    def __init__(self) -> None:
        self.count = 0
        self.last = ""
        self.previous: dict[int, Any] = {}

    def __enter__(self) -> _Signals:
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            self.previous[signum] = signal.signal(signum, self._handler)
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)

    def _handler(self, signum: int, _frame: FrameType | None) -> None:
        self.count += 1
        self.last = signal.Signals(signum).name


def describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


def tail(path: Path, lines: int = 20) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join("    " + line for line in text.splitlines()[-lines:])


class Devnet:
    """The running nodes (see the module docs)."""

    def __init__(self, plans: Sequence[NodePlan], out: Callable[[str], None],
                 stop_timeout: float) -> None:
        self.plans = list(plans)
        self.out = out
        self.stop_timeout = stop_timeout
        self.procs: dict[int, subprocess.Popen[bytes]] = {}
        self.reported: set[int] = set()

    def start(self) -> None:
        env = dict(os.environ)
        source = str(Path(__file__).resolve().parents[1])
        env["PYTHONPATH"] = os.pathsep.join(p for p in (source, env.get("PYTHONPATH")) if p)
        for node in self.plans:
            with open(node.log_path, "ab") as log:
                log.write(f"\n===== {time.strftime('%Y-%m-%d %H:%M:%S')} "
                          f"{' '.join(node.command())}\n".encode())
                log.flush()
                self.procs[node.index] = subprocess.Popen(
                    node.command(), cwd=node.directory, env=env, stdin=subprocess.PIPE,
                    stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
            urls = node.urls()
            self.out(f"{node.name}: pid {self.procs[node.index].pid}, "
                     f"JSON-RPC {urls['rpc']}, Ethereum JSON-RPC {urls['eth_rpc']} "
                     f"(WebSocket on the same port), metrics {urls['metrics']}, "
                     f"P2P {urls['p2p']}, log {node.log_path}"
                     f"{', dev miner' if node.miner else ''}")

    def running(self, node: NodePlan) -> bool:
        proc = self.procs.get(node.index)
        return proc is not None and proc.poll() is None

    def check_exits(self) -> list[NodePlan]:
        """Report nodes that exited since the last look; the ones still running."""
        alive = []
        for node in self.plans:
            proc = self.procs[node.index]
            code = proc.poll()
            if code is None:
                alive.append(node)
            elif node.index not in self.reported:
                self.reported.add(node.index)
                self.out(f"devnet: {node.name} (pid {proc.pid}) exited, {describe_exit(code)}; "
                         f"the others go on. The end of {node.log_path}:\n"
                         f"{tail(node.log_path)}\n"
                         f"devnet: to start it again: {node.manual_command()}")
        return alive

    def wait_ready(self, signals: _Signals, timeout: float = READY_TIMEOUT) -> bool:
        """Until every node answers ``getchainstatus`` as its authority; False if a node
        exited first, a signal came, or the time ran out (said why)."""
        waiting = {node.index: node for node in self.plans}
        deadline = time.monotonic() + timeout
        with httpx.Client(timeout=2.0) as client:
            while waiting:
                if signals.count:
                    self.out(f"devnet: {signals.last} while the nodes start: stopping them")
                    return False
                for index, node in list(waiting.items()):
                    if not self.running(node):
                        self.check_exits()
                        self.out(f"devnet: {node.name} exited while starting")
                        return False
                    try:
                        status = client.post(node.urls()["rpc"], json={
                            "method": "getchainstatus", "params": [], "id": 1}).json()["result"]
                    except (httpx.HTTPError, ValueError, KeyError, TypeError):
                        continue
                    if status.get("authority_index") != node.index - 1:
                        self.out(f"devnet: {node.name} answers as authority "
                                 f"{status.get('authority_index')}, not {node.index - 1}: "
                                 f"its key does not match its configuration")
                        return False
                    del waiting[index]
                if waiting and time.monotonic() > deadline:
                    self.out(f"devnet: {', '.join(f'node{i}' for i in waiting)} did not answer "
                             f"within {timeout:g} s; see their logs")
                    return False
                time.sleep(0.25)
        return True

    def stop(self, signals: _Signals) -> bool:
        """Stop the nodes in reverse order; True if every one stopped by itself with exit
        code 0 (a node that had died before is not counted here)."""
        clean = True
        forced_at = signals.count
        for node in reversed(self.plans):
            proc = self.procs.get(node.index)
            if proc is None or proc.poll() is not None:
                continue
            self.out(f"devnet: stopping {node.name} (pid {proc.pid})")
            proc.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + self.stop_timeout
            while proc.poll() is None:
                if signals.count > forced_at:
                    self.out(f"devnet: {signals.last} again: killing what is left")
                    for other in self.procs.values():
                        if other.poll() is None:
                            other.kill()
                    break
                if time.monotonic() > deadline:
                    self.out(f"devnet: {node.name} did not stop within "
                             f"{self.stop_timeout:g} s: SIGKILL")
                    proc.kill()
                    break
                time.sleep(0.05)
            code = proc.wait()
            self.reported.add(node.index)
            if code != 0:
                clean = False
                self.out(f"devnet: {node.name} stopped, {describe_exit(code)}; see "
                         f"{node.log_path}")
        for proc in self.procs.values():
            if proc.stdin is not None:
                proc.stdin.close()
        return clean

    def run(self) -> int:
        """Start, watch, stop; the exit code (0: stopped in order by a signal)."""
        with _Signals() as signals:
            try:
                self.start()
                n = len(self.plans)
                self.out(f"devnet: waiting for the {n} node{'s' if n > 1 else ''} to answer")
                if not self.wait_ready(signals):
                    self.stop(signals)
                    return EXIT_FAILED
                self.out(f"devnet: {n} authorit{'ies' if n > 1 else 'y'} up; Ctrl-C stops "
                         f"them in order")
                while not signals.count:
                    if not self.check_exits():
                        self.out("devnet: every node has exited")
                        return EXIT_FAILED
                    time.sleep(0.2)
                self.out(f"devnet: {signals.last}: stopping the nodes in order")
                return EXIT_OK if self.stop(signals) else EXIT_FAILED
            finally:
                # Whatever went wrong above, no node outlives this process (and if this
                # process is killed outright, the nodes' stdin lifeline ends them).
                for proc in self.procs.values():
                    if proc.poll() is None:
                        proc.kill()
                        proc.wait()


# ---------------------------------------------------------------------------- the command


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("n", nargs="?", type=int, default=3, metavar="N",
                   help=f"how many authorities (1 to {MAX_NODES}; default 3)")
    p.add_argument("--dir", default="devnet", type=Path,
                   help="where the configs, data directories and logs go (default ./devnet)")
    p.add_argument("--write-only", action="store_true",
                   help="write the configs and keys, start nothing")
    p.add_argument("--dev-keys", action="store_true",
                   help="fixed, publicly known authority keys (local use only)")
    p.add_argument("--base-port", type=int, default=None, metavar="B",
                   help=f"P2P from B, JSON-RPC from B+{BASE_STRIDE}, metrics from "
                        f"B+{2 * BASE_STRIDE}, Ethereum JSON-RPC from B+{3 * BASE_STRIDE}")
    for kind in KINDS:
        p.add_argument(f"--{kind.replace('_', '-')}-port", type=int, default=None,
                       dest=f"{kind}_port", metavar="PORT",
                       help=f"node 1's {LABELS[kind]} port, the next nodes' following "
                            f"(default {DEFAULT_PORTS[kind]})")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="a configuration value written into every node's config "
                        "(repeatable), e.g. chain.slot_duration_ms=1000")
    p.add_argument("--stop-timeout", type=float, default=30.0, metavar="SECONDS",
                   help="how long each node has to stop before it is killed (default 30)")


def run(args: argparse.Namespace, out: Callable[[str], None] | None = None) -> int:
    """``python -m node devnet`` with parsed ``args``; the exit code."""
    say = out or (lambda line: print(line, flush=True))
    directory: Path = args.dir.absolute()
    try:
        first = first_ports(args.base_port,
                            {kind: getattr(args, f"{kind}_port") for kind in KINDS})
        check_count(args.n)
        check_port_layout(args.n, first)
        check_directory(directory)
        if not args.write_only:
            plans_ports = [{kind: first[kind] + i for kind in KINDS} for i in range(args.n)]
            check_ports_free([NodePlan(i + 1, directory, "", ports, False)
                              for i, ports in enumerate(plans_ports)])
        plans = plan(directory, args.n, first, args.dev_keys)
        write(plans, args.set, args.dev_keys)
    except DevnetError as exc:
        print(exc, file=sys.stderr)
        return EXIT_INVALID
    say(f"devnet: {args.n} authorit{'ies' if args.n > 1 else 'y'} in {directory} "
        f"({', '.join(p.config_path.name for p in plans)})")
    if args.write_only:
        for node in plans:
            say(f"{node.name}: {node.config_path} (authority {node.public_key[:18]}...), "
                f"run with: {node.manual_command()}")
        return EXIT_OK
    return Devnet(plans, say, args.stop_timeout).run()
