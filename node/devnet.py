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

**With Bitcoin** (``--bitcoin``): the devnet also runs a regtest btcd
(:mod:`node.integration.btcd`, the same recipe as the tests': 127.0.0.1, ``--txindex``, no
peers, no wallet) and turns every node's bridge on against it:

* ``bitcoin/`` — btcd's data and logs, ``btcd.log`` its output, and ``bitcoin/devnet.json``:
  its RPC URL, user and password (a random password made the first time and kept), the
  federation's keys and deposit address, and the faucet key's file;
* ``bitcoin/faucet.key`` — the secret of the taproot key btcd mines to (``--miningaddr``):
  btcd has no wallet, so deposits are built and signed from this key
  (``python -m node deposit``, :func:`deposit_main`);
* ``node<i>/keys/bitcoin.key`` — node *i*'s Bitcoin key (a secp256k1 secret, 64 hex digits,
  next to its authority key; ``--dev-keys``: :func:`dev_bitcoin_key`). The x-only public
  keys, in node order, are every node's ``chain.federation_bitcoin_keys``: one shared
  federation, one deposit address;
* every ``node<i>.toml`` gets a ``[bridge]`` section pointing at the btcd (so all nodes scan
  the same chain), ``confirmations`` 2 unless ``--set bridge.confirmations=N``.

btcd's RPC port is 18443 (Bitcoin Core's regtest port, the bridge's default), or
``--base-port`` + 64, or ``--bitcoin-port``. Before the nodes start, taproot is checked
active and btcd mines to height 110, so ten coinbases are spendable; the devnet prints the
deposit address, the RPC URL and credentials and a ``btcctl`` command line. btcd starts
first and stops last, under a small guard process (``python -m node.devnet guard``) that
stops it when the devnet's pipe closes, so it is no orphan either; while it runs, the devnet
goes on even when every node it started has exited (nodes started again by hand need it).
Regtest mines only on demand: ``btcctl ... generate 1``, ``python -m node deposit ... --mine
N``, or ``--bitcoin-block-time S`` (a block every S seconds).

Bad input (N outside 1..15, a taken port, a directory holding files a devnet does not
write, a key file that is not a key, data made with other authorities) is refused before
anything starts, with a message naming what and where; the exit code is 2.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
import tomllib
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

import attrs
import httpx
import tomli_w

import otp

from .config import ConfigError, load_config, structure
from .crypto import bls

if TYPE_CHECKING:  # the Bitcoin parts (btclib) are imported where --bitcoin needs them
    from .integration.btcd import BtcdRpc

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
#: What --bitcoin adds to a devnet directory: btcd's directory and its output.
BITCOIN_DIR, BITCOIN_LOG = "bitcoin", "btcd.log"
#: btcd's RPC port by default (Bitcoin Core's regtest port, the bridge's default), and its
#: offset from --base-port (after the four kinds of node ports).
BITCOIN_PORT, BITCOIN_OFFSET = 18443, len(KINDS) * BASE_STRIDE
#: btcd mines up to this height before the nodes start: ten spendable coinbases.
BITCOIN_START_HEIGHT = 110
#: Seconds btcd has to answer after it starts.
BITCOIN_READY_TIMEOUT = 60.0
GITIGNORE = "# written by python -m node devnet: chain data and logs\nnode*/chain/\n" \
            "node*/evm/\nnode*/keys/node_key\n*.log\n*.tmp\n"
GITIGNORE_BITCOIN = "bitcoin/data/\nbitcoin/logs/\n"


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
        ours = (((entry.name == ".gitignore" or entry.name == BITCOIN_LOG) and entry.is_file())
                or (entry.name == BITCOIN_DIR and entry.is_dir()))
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


def dev_bitcoin_key(index: int) -> bytes:
    """The fixed dev Bitcoin key of node ``index`` (1-based): ``SHA-256("alys devnet bitcoin
    <index>")`` as a secp256k1 secret. Public knowledge, like :func:`dev_key`."""
    return hashlib.sha256(f"alys devnet bitcoin {index}".encode()).digest()


def _secret_file(path: Path, make: Callable[[], bytes], what: str) -> bytes:
    """A 32-byte secp256k1 secret kept as 64 hex digits in ``path`` (made by ``make()`` and
    written with mode 0600 the first time)."""
    from coincurve import PrivateKey

    if path.exists():
        text = path.read_text(encoding="utf-8").strip().removeprefix("0x")
        try:
            secret = bytes.fromhex(text)
            if len(secret) != 32:
                raise ValueError(f"{len(secret)} bytes, not 32")
            PrivateKey(secret)
        except ValueError as exc:
            raise DevnetError(f"devnet: {path} does not hold {what} (64 hex digits of a "
                              f"secp256k1 secret): {exc}; remove it to generate a new "
                              "one") from None
        return secret
    secret = make()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, (secret.hex() + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    return secret


def bitcoin_key(plan_dir: Path, index: int, dev_keys: bool) -> bytes:
    """Node ``index``'s Bitcoin (federation) secret, ``keys/bitcoin.key`` in its data
    directory: made the first time (the dev key with ``dev_keys``), reused afterwards."""
    path = plan_dir / "keys" / "bitcoin.key"
    secret = _secret_file(path, (lambda: dev_bitcoin_key(index)) if dev_keys
                          else (lambda: secrets.token_bytes(32)),
                          f"node{index}'s Bitcoin key")
    if dev_keys and secret != dev_bitcoin_key(index):
        raise DevnetError(f"devnet: {path} holds another key than node{index}'s dev Bitcoin "
                          "key; remove it, or run without --dev-keys to keep it")
    return secret


@attrs.frozen
class BitcoinPlan:
    """The devnet's btcd (``--bitcoin``) and the federation of its nodes' Bitcoin keys."""

    devnet: Path
    port: int
    user: str
    password: str
    faucet_secret: bytes = attrs.field(repr=False)
    federation_keys: tuple[bytes, ...]  # x-only, in node order
    block_time: float = 0.0

    @property
    def directory(self) -> Path:
        return self.devnet / BITCOIN_DIR

    @property
    def log_path(self) -> Path:
        return self.devnet / BITCOIN_LOG

    @property
    def info_path(self) -> Path:
        return self.directory / "devnet.json"

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def deposit_address(self) -> str:
        from .workflows.federation import Federation

        return Federation(self.federation_keys).address("regtest")

    def client(self) -> BtcdRpc:
        from .integration.btcd import BtcdRpc

        return BtcdRpc(self.url, self.user, self.password)

    def btcctl(self) -> str:
        # -C /dev/null: btcctl otherwise tries to write a config next to ~/.btcd's
        return (f"btcctl -C /dev/null --regtest --notls -s {HOST}:{self.port} -u {self.user} "
                f"-P {self.password}")

    def command(self, btcd: Path) -> list[str]:
        """btcd under the guard (see the module docs)."""
        from .integration.btcd import TaprootKey, btcd_command

        config = self.directory / "btcd.conf"
        if not config.exists():
            config.write_text("", encoding="utf-8")
        inner = btcd_command(btcd, self.directory / "data", self.directory / "logs", config,
                             self.user, self.password, self.port,
                             TaprootKey(self.faucet_secret).address,
                             self.directory / "rpc.cert", self.directory / "rpc.key")
        return [sys.executable, "-m", "node.devnet", "guard", *inner]

    def info(self) -> dict[str, Any]:
        return {"url": self.url, "user": self.user, "password": self.password,
                "network": "regtest", "federation_bitcoin_keys": [k.hex() for k in
                                                                   self.federation_keys],
                "deposit_address": self.deposit_address(),
                "faucet_key_file": "faucet.key", "btcctl": self.btcctl()}


def plan_bitcoin(directory: Path, port: int, plans: Sequence[NodePlan], dev_keys: bool,
                 block_time: float = 0.0) -> BitcoinPlan:
    """btcd's plan: the nodes' Bitcoin keys and the faucet key made or read, the RPC password
    made or read (``bitcoin/devnet.json``)."""
    from coincurve import PrivateKey

    if not 1 <= port <= 65535:
        raise DevnetError(f"devnet: btcd's RPC port would be {port}, outside 1..65535 "
                          "(--bitcoin-port)")
    taken = {p.ports[kind]: f"{p.name}'s {LABELS[kind]}" for p in plans for kind in KINDS}
    if port in taken:
        raise DevnetError(f"devnet: port {port} would serve both btcd's RPC and "
                          f"{taken[port]}; choose another with --bitcoin-port")
    keys = tuple(PrivateKey(bitcoin_key(p.data_dir, p.index, dev_keys)).public_key_xonly
                 .format() for p in plans)
    bitcoin = directory / BITCOIN_DIR
    bitcoin.mkdir(parents=True, exist_ok=True)
    faucet = _secret_file(bitcoin / "faucet.key",
                          (lambda: hashlib.sha256(b"alys devnet faucet").digest()) if dev_keys
                          else (lambda: secrets.token_bytes(32)), "the faucet key")
    password = ""
    info = bitcoin / "devnet.json"
    if info.is_file():
        try:
            password = str(json.loads(info.read_text(encoding="utf-8")).get("password") or "")
        except (OSError, ValueError, AttributeError):
            password = ""
    return BitcoinPlan(directory, port, "alys", password or secrets.token_urlsafe(18), faucet,
                       keys, block_time)


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
                sets: Sequence[str] = (), bitcoin: BitcoinPlan | None = None
                ) -> dict[str, Any]:
    """Node ``node``'s configuration as a TOML-ready mapping (``--set`` items on top); with
    ``bitcoin``, the federation and the bridge against its btcd."""
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
    if bitcoin is not None:
        config["chain"]["federation_bitcoin_keys"] = [k.hex() for k in bitcoin.federation_keys]
        config["chain"]["bitcoin_network"] = "regtest"
        config["bridge"] = {"enabled": True, "bitcoin_url": bitcoin.url,
                            "bitcoin_user": bitcoin.user,
                            "bitcoin_password": bitcoin.password,
                            "confirmations": 2, "poll_interval": 0.5,
                            # below it btcd holds only the coinbases it mined at start
                            "start_height": BITCOIN_START_HEIGHT}
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


def write(plans: Sequence[NodePlan], sets: Sequence[str] = (), dev_keys: bool = False,
          bitcoin: BitcoinPlan | None = None) -> None:
    """Write every node's configuration (checked as ``boot`` will read it) and the
    ``.gitignore`` (and btcd's ``devnet.json``)."""
    authorities = [p.public_key for p in plans]
    configs = []
    for node in plans:
        check_existing_chain(node, authorities)
        config = node_config(node, plans, sets, bitcoin)
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
                     "this machine only.\n" if dev_keys else "")
                  + (f"# Its bridge scans the devnet's btcd ({bitcoin.url}); its Bitcoin key is "
                     f"{node.name}/keys/bitcoin.key.\n" if bitcoin is not None else "")
                  + "\n")
        tmp = node.config_path.with_name(node.config_path.name + ".tmp")
        tmp.write_text(header + tomli_w.dumps(config), encoding="utf-8")
        os.replace(tmp, node.config_path)
    (plans[0].directory / ".gitignore").write_text(
        GITIGNORE + (GITIGNORE_BITCOIN if bitcoin is not None else ""), encoding="utf-8")
    if bitcoin is not None:
        tmp = bitcoin.info_path.with_name(bitcoin.info_path.name + ".tmp")
        tmp.write_text(json.dumps(bitcoin.info(), indent=1) + "\n", encoding="utf-8")
        os.chmod(tmp, 0o600)
        os.replace(tmp, bitcoin.info_path)
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
                 stop_timeout: float, bitcoin: BitcoinPlan | None = None,
                 btcd: Path | None = None) -> None:
        self.plans = list(plans)
        self.out = out
        self.stop_timeout = stop_timeout
        self.procs: dict[int, subprocess.Popen[bytes]] = {}
        self.reported: set[int] = set()
        self.bitcoin = bitcoin
        self.btcd_binary = btcd
        self.btcd: subprocess.Popen[bytes] | None = None
        self.btcd_reported = False

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        source = str(Path(__file__).resolve().parents[1])
        env["PYTHONPATH"] = os.pathsep.join(p for p in (source, env.get("PYTHONPATH")) if p)
        return env

    def start_bitcoin(self, signals: _Signals) -> bool:
        """Start btcd (under its guard), check taproot, mine to
        :data:`BITCOIN_START_HEIGHT`; False (said why) if it fails."""
        from .integration.btcd import BtcdError

        bitcoin = self.bitcoin
        assert bitcoin is not None and self.btcd_binary is not None
        with open(bitcoin.log_path, "ab") as log:
            command = bitcoin.command(self.btcd_binary)
            log.write(f"\n===== {time.strftime('%Y-%m-%d %H:%M:%S')} "
                      f"{' '.join(command)}\n".encode())
            log.flush()
            self.btcd = subprocess.Popen(command, cwd=bitcoin.directory, env=self._env(),
                                         stdin=subprocess.PIPE, stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        client = bitcoin.client()
        try:
            client.wait_ready(BITCOIN_READY_TIMEOUT,
                              alive=lambda: self.btcd is not None and self.btcd.poll() is None
                              and not signals.count)
            client.ensure_taproot()
            height = client.rpc("getblockcount")
            if height < BITCOIN_START_HEIGHT:
                client.generate(BITCOIN_START_HEIGHT - height)
            height = client.rpc("getblockcount")
        except BtcdError as exc:
            self.out(f"devnet: {exc}; the end of {bitcoin.log_path}:\n"
                     f"{tail(bitcoin.log_path)}")
            return False
        self.out(f"bitcoin: btcd (its guard's pid {self.btcd.pid}), regtest at height "
                 f"{height} (taproot active), RPC {bitcoin.url} user {bitcoin.user} password "
                 f"{bitcoin.password}, log {bitcoin.log_path}")
        self.out(f"bitcoin: deposit address {bitcoin.deposit_address()} (the federation of "
                 f"{len(bitcoin.federation_keys)}; {bitcoin.info_path})")
        self.out(f"bitcoin: {bitcoin.btcctl()} generate 1")
        self.out(f"bitcoin: deposit with: python -m node deposit --dir {bitcoin.devnet} "
                 f"0x<EVM address> <BTC> --mine 2")
        return True

    def bitcoin_running(self) -> bool:
        return self.btcd is not None and self.btcd.poll() is None

    def stop_bitcoin(self) -> None:
        proc = self.btcd
        if proc is None or proc.poll() is not None:
            return
        self.out(f"devnet: stopping btcd (its guard's pid {proc.pid})")
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=self.stop_timeout)
        except subprocess.TimeoutExpired:
            self.out(f"devnet: btcd did not stop within {self.stop_timeout:g} s: SIGKILL")
            proc.kill()
            proc.wait()
        if proc.stdin is not None:
            proc.stdin.close()

    def start(self) -> None:
        env = self._env()
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
        """Report nodes (and btcd) that exited since the last look; the nodes still
        running."""
        if (self.btcd is not None and self.btcd.poll() is not None
                and not self.btcd_reported and self.bitcoin is not None):
            self.btcd_reported = True
            self.out(f"devnet: btcd (pid {self.btcd.pid}) exited, "
                     f"{describe_exit(self.btcd.returncode)}; the nodes go on without "
                     f"peg-ins. The end of {self.bitcoin.log_path}:\n"
                     f"{tail(self.bitcoin.log_path)}")
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
        self.stop_bitcoin()
        return clean

    def run(self) -> int:
        """Start, watch, stop; the exit code (0: stopped in order by a signal)."""
        with _Signals() as signals:
            try:
                if self.bitcoin is not None and not self.start_bitcoin(signals):
                    self.stop_bitcoin()
                    return EXIT_FAILED
                self.start()
                n = len(self.plans)
                self.out(f"devnet: waiting for the {n} node{'s' if n > 1 else ''} to answer")
                if not self.wait_ready(signals):
                    self.stop(signals)
                    return EXIT_FAILED
                self.out(f"devnet: {n} authorit{'ies' if n > 1 else 'y'} up; Ctrl-C stops "
                         f"them in order")
                next_block = (time.monotonic() + self.bitcoin.block_time
                              if self.bitcoin is not None and self.bitcoin.block_time else None)
                all_gone = False
                while not signals.count:
                    if not self.check_exits() and not all_gone:
                        if not self.bitcoin_running():
                            self.out("devnet: every node has exited")
                            return EXIT_FAILED
                        # Nodes started again by hand (as the devnet tells) need their btcd.
                        all_gone = True
                        self.out("devnet: every node it started has exited; btcd keeps "
                                 "running for nodes started by hand; Ctrl-C stops it")
                    if next_block is not None and time.monotonic() >= next_block:
                        next_block = self.mine_one(next_block)
                    time.sleep(0.2)
                self.out(f"devnet: {signals.last}: stopping the nodes in order")
                return EXIT_OK if self.stop(signals) else EXIT_FAILED
            finally:
                # Whatever went wrong above, no node outlives this process (and if this
                # process is killed outright, the nodes' stdin lifeline ends them, and
                # btcd's guard's).
                for proc in self.procs.values():
                    if proc.poll() is None:
                        proc.kill()
                        proc.wait()
                self.stop_bitcoin()

    def mine_one(self, due: float) -> float | None:
        """``--bitcoin-block-time``: one block now; when the next is due (None: btcd is
        gone)."""
        from .integration.btcd import BtcdError

        assert self.bitcoin is not None
        if self.btcd is None or self.btcd.poll() is not None:
            return None
        try:
            self.bitcoin.client().generate(1)
        except BtcdError as exc:
            self.out(f"devnet: mining a Bitcoin block failed: {exc}")
        return max(due + self.bitcoin.block_time, time.monotonic())


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
    p.add_argument("--bitcoin", action="store_true",
                   help="also run a regtest btcd, and every node's bridge (peg-ins) against "
                        "it with a federation of the nodes' Bitcoin keys")
    p.add_argument("--bitcoin-port", type=int, default=None, metavar="PORT",
                   help=f"btcd's RPC port (default {BITCOIN_PORT}, or --base-port + "
                        f"{BITCOIN_OFFSET})")
    p.add_argument("--bitcoin-block-time", type=float, default=0.0, metavar="SECONDS",
                   help="mine a Bitcoin block every SECONDS (default 0: only on demand)")
    p.add_argument("--btcd", default=None, metavar="PATH",
                   help="the btcd binary (default: $ALYS_BTCD, the one scripts/install-tools "
                        "installs, or btcd on PATH)")


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
        bitcoin: BitcoinPlan | None = None
        btcd: Path | None = None
        if getattr(args, "bitcoin", False):
            if args.bitcoin_block_time < 0 or args.bitcoin_block_time != args.bitcoin_block_time:
                raise DevnetError(f"devnet: --bitcoin-block-time must be 0 or more seconds, "
                                  f"not {args.bitcoin_block_time}")
            port = (args.bitcoin_port if args.bitcoin_port is not None else
                    BITCOIN_PORT if args.base_port is None else
                    args.base_port + BITCOIN_OFFSET)
            bitcoin = plan_bitcoin(directory, port, plans, args.dev_keys,
                                   args.bitcoin_block_time)
            if not args.write_only:
                btcd = _find_btcd(args.btcd)
                check_port_free(port, "btcd's RPC", "--bitcoin-port")
        write(plans, args.set, args.dev_keys, bitcoin)
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
    if bitcoin is not None:
        say(f"devnet: btcd RPC {bitcoin.url} (user {bitcoin.user}); deposit address "
            f"{bitcoin.deposit_address()}")
    return Devnet(plans, say, args.stop_timeout, bitcoin, btcd).run()


def _find_btcd(explicit: str | None) -> Path:
    from .integration.btcd import BtcdError, find_btcd

    try:
        return find_btcd(explicit)
    except BtcdError as exc:
        raise DevnetError(f"devnet: --bitcoin: {exc}") from None


def check_port_free(port: int, what: str, option: str) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((HOST, port))
        except OSError as exc:
            raise DevnetError(f"devnet: port {port} on {HOST}, for {what}, is taken "
                              f"({exc.strerror}); stop what uses it or choose another "
                              f"({option})") from None


# ---------------------------------------------------------------------------- btcd's guard


def guard(argv: Sequence[str], stop_timeout: float = 20.0) -> int:
    """``python -m node.devnet guard CMD...``: run CMD (btcd), stop it with SIGTERM (SIGKILL
    after ``stop_timeout`` s) when this process gets SIGTERM/SIGINT or its stdin reaches end
    of file — the devnet holds the other end of that pipe, so btcd ends with the devnet
    however the devnet ends. Its exit code is CMD's (128 + N for a signal N)."""
    import threading

    proc = subprocess.Popen(list(argv), stdin=subprocess.DEVNULL)
    stopping = threading.Event()

    def stop() -> None:
        if stopping.is_set():
            return
        stopping.set()
        if proc.poll() is None:
            proc.terminate()
            killer = threading.Timer(stop_timeout, proc.kill)
            killer.daemon = True
            killer.start()

    def watch_stdin() -> None:
        try:
            while os.read(sys.stdin.fileno(), 4096):
                pass
        except OSError:
            pass
        stop()

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, lambda _n, _f: stop())
    threading.Thread(target=watch_stdin, daemon=True).start()
    code = proc.wait()
    return code if code >= 0 else 128 - code


# ---------------------------------------------------------------------------- deposits


def add_deposit_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("to", metavar="EVM_ADDRESS", help="who is credited: 0x and 40 hex digits")
    p.add_argument("amount", metavar="BTC", help="how much, in BTC (up to 8 decimals), "
                   "e.g. 0.5")
    p.add_argument("--dir", default="devnet", type=Path,
                   help="the devnet's directory (default ./devnet), started with --bitcoin")
    p.add_argument("--mine", type=int, default=0, metavar="N",
                   help="then mine N Bitcoin blocks (the deposit's confirmations; default 0)")


def parse_btc(text: str) -> int:
    """``"0.5"`` -> 50,000,000 sats: a decimal amount of BTC, at most 8 decimals, more than
    zero and at most 21 million."""
    from decimal import Decimal, InvalidOperation

    try:
        value = Decimal(text)
    except InvalidOperation:
        raise DevnetError(f"deposit: the amount {text!r} is not a number of BTC") from None
    if not value.is_finite() or value <= 0 or value > 21_000_000:
        raise DevnetError(f"deposit: the amount {text!r} must be more than 0 and at most "
                          "21,000,000 BTC")
    sats = value * 10**8
    if sats != sats.to_integral_value():
        raise DevnetError(f"deposit: the amount {text!r} has more than 8 decimals (1 sat is "
                          "0.00000001 BTC)")
    return int(sats)


def parse_evm_address(text: str) -> bytes:
    raw = text.removeprefix("0x").removeprefix("0X")
    if len(raw) != 40 or any(c not in "0123456789abcdefABCDEF" for c in raw):
        raise DevnetError(f"deposit: {text!r} is not an EVM address (0x and 40 hex digits)")
    address = bytes.fromhex(raw)
    if address == bytes(20):
        raise DevnetError("deposit: the zero address would be refused (no one holds its key)")
    return address


def deposit_main(args: argparse.Namespace, out: Callable[[str], None] | None = None) -> int:
    """``python -m node deposit 0xADDRESS BTC [--dir devnet] [--mine N]``: a peg-in deposit
    on the devnet's btcd, built and signed from the devnet's faucet key (btcd has no
    wallet): the amount to the federation's deposit address, an OP_RETURN with the 20-byte
    EVM address, the change back to the faucet. The exit code."""
    from .integration.btcd import (
        BtcdError,
        BtcdRpc,
        TaprootKey,
        deposit_transaction,
        spendable_coinbases,
    )
    from .workflows.federation import Federation

    say = out or (lambda line: print(line, flush=True))
    info_path = args.dir.absolute() / BITCOIN_DIR / "devnet.json"
    try:
        to = parse_evm_address(args.to)
        sats = parse_btc(args.amount)
        if args.mine < 0:
            raise DevnetError(f"deposit: --mine must be 0 or more, not {args.mine}")
        try:
            info = json.loads(info_path.read_text(encoding="utf-8"))
            faucet = bytes.fromhex((info_path.parent / info["faucet_key_file"])
                                   .read_text(encoding="utf-8").strip())
            federation = Federation(tuple(bytes.fromhex(k)
                                          for k in info["federation_bitcoin_keys"]))
            client = BtcdRpc(str(info["url"]), str(info["user"]), str(info["password"]))
            key = TaprootKey(faucet)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise DevnetError(f"deposit: {info_path} does not describe a devnet's btcd ({exc}); "
                              "start one with python -m node devnet --bitcoin") from None
    except DevnetError as exc:
        print(exc, file=sys.stderr)
        return EXIT_INVALID
    try:
        found = next(((o, v) for o, v in spendable_coinbases(client, key)
                      if v >= sats + 10_000), None)
        if found is None:
            print(f"deposit: no spendable coinbase of the faucet holds {sats} sats; mine more "
                  "blocks (btcctl ... generate 101) or deposit less", file=sys.stderr)
            return EXIT_FAILED
        tx = deposit_transaction(key, found[0], found[1], federation.script_pubkey, sats, to)
        txid = client.send(tx)
        say(f"deposit {txid}: {sats} sats to {federation.address('regtest')} for 0x{to.hex()}")
        if args.mine:
            hashes = client.generate(args.mine)
            say(f"mined {len(hashes)} block(s), the last {hashes[-1]}")
    except BtcdError as exc:
        print(f"deposit: {exc}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


# ---------------------------------------------------------------------------- received


def add_received_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("address", metavar="BITCOIN_ADDRESS",
                   help="a regtest address (bcrt1..., or a base58 one), e.g. a peg-out's "
                        "destination")
    p.add_argument("--dir", default="devnet", type=Path,
                   help="the devnet's directory (default ./devnet), started with --bitcoin")


def address_script(text: str) -> bytes:
    """The output script ``text`` (a Bitcoin address of regtest) is paid with."""
    from btclib.exceptions import BTClibTypeError, BTClibValueError
    from btclib.script import ScriptPubKey

    try:
        script = ScriptPubKey.from_address(text)
    except (BTClibValueError, BTClibTypeError, ValueError, TypeError) as exc:
        raise DevnetError(f"received: {text!r:.100} is not a Bitcoin address: {exc}") from None
    if text.lower().startswith(("bc1", "tb1")) or script.network == "mainnet":
        raise DevnetError(f"received: {text} is a {script.network} address, not one of the "
                          "devnet's regtest chain (bcrt1...)")
    return bytes(script.script)


@attrs.frozen
class Payment:
    """An output paying the address: where, how much, and its confirmations (0: in the
    mempool)."""

    txid: str  # display hex
    vout: int
    sats: int
    confirmations: int


def payments_to(client: BtcdRpc, script: bytes) -> list[Payment]:
    """Every output paying ``script`` in btcd's best chain (oldest first) and then its
    mempool. btcd has no wallet and the devnet runs it without ``--addrindex``, so this
    walks the chain's raw blocks (cheap on a devnet's regtest chain of a few hundred
    blocks)."""
    from .types.bitcoin import BlockHeader, ByteReader, Transaction

    found: list[Payment] = []

    def scan(tx: Transaction, confirmations: int) -> None:
        for vout, out in enumerate(tx.outputs):
            if out.script_pubkey == script:
                found.append(Payment(tx.txid()[::-1].hex(), vout, out.value, confirmations))

    tip = int(client.rpc("getblockcount"))
    for height in range(1, tip + 1):
        raw = bytes.fromhex(client.rpc("getblock", client.rpc("getblockhash", height), 0))
        reader = ByteReader(raw)
        BlockHeader.read(reader, "block header")
        for i in range(reader.compact_size("transaction count")):
            scan(Transaction.read(reader, f"block {height} transaction {i}"), tip - height + 1)
    for txid in client.rpc("getrawmempool") or []:
        scan(client.transaction(txid), 0)
    return found


def format_btc(sats: int) -> str:
    return f"{sats // 10**8}.{sats % 10**8:08d}"


def received_main(args: argparse.Namespace, out: Callable[[str], None] | None = None) -> int:
    """``python -m node received BITCOIN_ADDRESS [--dir devnet]``: what the devnet's btcd
    shows paid to the address — each payment with its confirmations (a peg-out's arrival,
    say: btcd has no wallet to ask), then the total. The exit code."""
    from .integration.btcd import BtcdError

    say = out or (lambda line: print(line, flush=True))
    try:
        script = address_script(args.address)
        client = _devnet_btcd(args.dir, "received")
    except DevnetError as exc:
        print(exc, file=sys.stderr)
        return EXIT_INVALID
    try:
        payments = payments_to(client, script)
    except BtcdError as exc:
        print(f"received: {exc}", file=sys.stderr)
        return EXIT_FAILED
    for p in payments:
        where = (f"{p.confirmations} confirmation{'s' if p.confirmations != 1 else ''}"
                 if p.confirmations else "in the mempool")
        say(f"{p.txid}:{p.vout} {format_btc(p.sats)} BTC ({p.sats} sats), {where}")
    total = sum(p.sats for p in payments)
    mined = sum(p.sats for p in payments if p.confirmations)
    say(f"{args.address}: {format_btc(total)} BTC ({total} sats) in {len(payments)} "
        f"payment{'s' if len(payments) != 1 else ''}, {format_btc(mined)} BTC of it mined")
    return EXIT_OK


def _devnet_btcd(directory: Path, command: str) -> BtcdRpc:
    """The devnet's btcd client from ``<directory>/bitcoin/devnet.json``."""
    from .integration.btcd import BtcdRpc

    info_path = directory.absolute() / BITCOIN_DIR / "devnet.json"
    try:
        info = json.loads(info_path.read_text(encoding="utf-8"))
        return BtcdRpc(str(info["url"]), str(info["user"]), str(info["password"]))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DevnetError(f"{command}: {info_path} does not describe a devnet's btcd ({exc}); "
                          "start one with python -m node devnet --bitcoin") from None


if __name__ == "__main__":
    if sys.argv[1:2] == ["guard"] and len(sys.argv) > 2:
        sys.exit(guard(sys.argv[2:]))
    print("usage: python -m node.devnet guard CMD...", file=sys.stderr)
    sys.exit(EXIT_INVALID)
