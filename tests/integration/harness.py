"""Real processes for the integration tests: execution clients (Geth, ethereumjs) and our
node, each started on 127.0.0.1 with fresh ports and data directories, logging to a file,
and stopped by the test that started it (a fixture's ``finally``), also when the test fails.

Nothing here uses threads: logs go to files that :meth:`Process.wait_for` re-reads.

The binaries come from ``scripts/install-tools`` (see :func:`tests.tools.tool`): a missing
tool fails the test with the command that installs it — the README's test command,
``scripts/test``, runs that installer first, so tests never skip for want of a tool.
"""

from __future__ import annotations

import functools
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx

from ..tools import tool

ROOT = Path(__file__).resolve().parents[2]
#: The dev chain: chain id 121212, Shanghai from genesis (ALYS.md).
CHAIN_ID = 121212
#: The genesis the node ships for the dev chain (also its embedded engine's default).
DEV_GENESIS = ROOT / "node" / "genesis" / "dev.json"
MNEMONIC = "test test test test test test test test test test test junk"
#: Seconds a process may take to come up on a loaded 2-core CI machine.
START_TIMEOUT = 90.0


# --------------------------------------------------------------------------- tools



# --------------------------------------------------------------------------- the dev chain


@functools.cache
def dev_accounts() -> tuple[tuple[str, str], ...]:
    """The ten accounts of the test mnemonic (m/44'/60'/0'/0/i): (address, private key)."""
    from eth_account import Account

    Account.enable_unaudited_hdwallet_features()
    out = []
    for i in range(10):
        account = Account.from_mnemonic(MNEMONIC, account_path=f"m/44'/60'/0'/0/{i}")
        out.append((account.address, "0x" + bytes(account.key).hex()))
    return tuple(out)


def write_dev_genesis(path: Path, chain_id: int = CHAIN_ID) -> Path:
    """The dev chain's genesis, the very file the node ships (``node/genesis/dev.json``:
    Shanghai from time 0, the ten test-mnemonic accounts holding 10,000 ETH each), written
    to ``path`` for ``geth init`` and ethereumjs's ``--gethGenesis``; with another
    ``chain_id`` (a client on the wrong chain), the same file with that chain id."""
    genesis = json.loads(DEV_GENESIS.read_text())
    genesis["config"]["chainId"] = chain_id
    path.write_text(json.dumps(genesis, indent=1))
    return path


def free_port() -> int:
    """A TCP port nothing listens on at 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def rpc(url: str, method: str, *params: Any, timeout: float = 10.0) -> Any:
    """One JSON-RPC 2.0 call; an error object fails with its text."""
    reply = httpx.post(url, json={"jsonrpc": "2.0", "id": 1, "method": method,
                                  "params": list(params)}, timeout=timeout).json()
    if reply.get("error") is not None:
        raise AssertionError(f"{method} failed: {reply['error']}")
    return reply["result"]


# --------------------------------------------------------------------------- processes


class Process:
    """A subprocess logging to ``log_path`` (appended to across restarts)."""

    name = "process"

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.log_path = workdir / f"{self.name}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_offset = 0  # where the current run's log starts

    def command(self) -> list[str]:
        raise NotImplementedError

    def environment(self) -> dict[str, str]:
        return dict(os.environ)

    @property
    def cwd(self) -> Path:
        return self.workdir

    def spawn(self) -> None:
        assert self.proc is None or self.proc.poll() is not None, f"{self.name} is running"
        self.log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        with open(self.log_path, "ab") as log:
            log.write(f"\n===== {' '.join(self.command())}\n".encode())
            self.proc = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, cwd=self.cwd,
                                         env=self.environment())

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log(self, since_start: bool = True) -> str:
        if not self.log_path.exists():
            return ""
        with open(self.log_path, "rb") as f:
            f.seek(self.log_offset if since_start else 0)
            return f.read().decode("utf-8", "replace")

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log(since_start=False).splitlines()[-lines:])

    def wait_for(self, pattern: str, timeout: float = 60.0, after: int = 0) -> re.Match[str]:
        """The first match of ``pattern`` in this run's log past character ``after``."""
        deadline = time.monotonic() + timeout
        regex = re.compile(pattern)
        while True:
            match = regex.search(self.log(), after)
            if match:
                return match
            if time.monotonic() > deadline or not self.running:
                raise AssertionError(f"{self.name}: {pattern!r} not seen "
                                     f"({'still running' if self.running else 'exited'}); "
                                     f"log:\n{self.tail(60)}")
            time.sleep(0.1)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int | None:
        """Signal the process and wait; SIGKILL if it does not exit in ``timeout``."""
        proc = self.proc
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(sig)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=30)
        return proc.returncode

    def kill(self) -> None:
        self.stop(signal.SIGKILL)


class ExecutionClientProcess(Process):
    """An execution client with its Engine API (JWT) and eth JSON-RPC on free ports of
    127.0.0.1, a fresh data directory, no discovery and no peers."""

    kind = "client"

    def __init__(self, workdir: Path, genesis: Path, jwt_path: Path) -> None:
        super().__init__(workdir)
        self.genesis = genesis
        self.jwt_path = jwt_path
        self.datadir = workdir / "data"
        self.engine_port = free_port()
        self.http_port = free_port()
        self.ws_port = free_port()

    @property
    def engine_url(self) -> str:
        return f"http://127.0.0.1:{self.engine_port}"

    @property
    def eth_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.ws_port}"

    def rpc(self, method: str, *params: Any) -> Any:
        return rpc(self.eth_url, method, *params)

    def start(self) -> None:
        self.spawn()
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                if int(self.rpc("eth_chainId"), 16) == CHAIN_ID:
                    with socket.create_connection(("127.0.0.1", self.engine_port), timeout=2):
                        return
            except (httpx.HTTPError, OSError, ValueError, AssertionError):
                pass
            if not self.running or time.monotonic() > deadline:
                raise AssertionError(f"{self.name} did not come up; log:\n{self.tail(60)}")
            time.sleep(0.2)

    def block(self, tag: str | int) -> dict[str, Any] | None:
        ref = hex(tag) if isinstance(tag, int) else tag
        block: dict[str, Any] | None = self.rpc("eth_getBlockByNumber", ref, False)
        return block

    def balance(self, address: str) -> int:
        return int(self.rpc("eth_getBalance", address, "latest"), 16)


class Geth(ExecutionClientProcess):
    """``geth`` from ``scripts/install-tools``. P2P goes through a config file (no flag
    binds it to 127.0.0.1): it listens on 127.0.0.1 only, with discovery off and no peers;
    ``--nat none`` keeps it from probing the network for a gateway."""

    name = kind = "geth"

    def __init__(self, workdir: Path, genesis: Path, jwt_path: Path) -> None:
        super().__init__(workdir, genesis, jwt_path)
        self.binary = tool("geth")
        self.config_path = workdir / "geth.toml"
        self.config_path.write_text(
            "[Node.P2P]\nMaxPeers = 0\nNoDiscovery = true\nDiscoveryV4 = false\n"
            "DiscoveryV5 = false\nBootstrapNodes = []\nBootstrapNodesV5 = []\n"
            'ListenAddr = "127.0.0.1:0"\n')
        self.initialised = False

    def command(self) -> list[str]:
        return [str(self.binary), "--config", str(self.config_path), "--nat", "none",
                "--datadir", str(self.datadir), "--networkid", str(CHAIN_ID),
                "--syncmode", "full", "--ipcdisable",
                "--authrpc.addr", "127.0.0.1", "--authrpc.port", str(self.engine_port),
                "--authrpc.jwtsecret", str(self.jwt_path),
                "--http", "--http.addr", "127.0.0.1", "--http.port", str(self.http_port),
                "--http.api", "eth,net,web3,txpool",
                "--ws", "--ws.addr", "127.0.0.1", "--ws.port", str(self.ws_port),
                "--ws.api", "eth,net,web3", "--verbosity", "3"]

    def start(self) -> None:
        if not self.initialised:
            init = subprocess.run([str(self.binary), "init", "--datadir", str(self.datadir),
                                   str(self.genesis)], capture_output=True, text=True,
                                  timeout=START_TIMEOUT)
            assert init.returncode == 0, init.stdout + init.stderr
            self.initialised = True
        super().start()


class EthereumJS(ExecutionClientProcess):
    """``ethereumjs`` (@ethereumjs/client) from ``scripts/install-tools``: ``--sync none``,
    no peers, no DNS or v4 discovery (with them off it opens no P2P listener), and
    ``--isSingleNode`` (else it refuses transactions for want of peers to relay them to)."""

    name = kind = "ethereumjs"

    def __init__(self, workdir: Path, genesis: Path, jwt_path: Path) -> None:
        super().__init__(workdir, genesis, jwt_path)
        self.binary = tool("ethereumjs")

    def command(self) -> list[str]:
        return [str(self.binary), "--gethGenesis", str(self.genesis),
                "--dataDir", str(self.datadir), "--sync", "none",
                "--rpc", "--rpcAddr", "127.0.0.1", "--rpcPort", str(self.http_port),
                "--ws", "--wsAddr", "127.0.0.1", "--wsPort", str(self.ws_port),
                "--rpcEngine", "--rpcEngineAddr", "127.0.0.1",
                "--rpcEnginePort", str(self.engine_port), "--jwtSecret", str(self.jwt_path),
                "--isSingleNode", "--maxPeers", "0", "--discDns", "false",
                "--discV4", "false",
                "--port", "0", "--extIP", "127.0.0.1", "--logFile", "false",
                "--logLevel", "info"]


CLIENTS: dict[str, type[ExecutionClientProcess]] = {"geth": Geth, "ethereumjs": EthereumJS}


class Node(Process):
    """``python -m node boot`` with the given ``--set`` settings (and ``--dev-miner`` when
    asked), its JSON-RPC and metrics on free ports."""

    name = "node"

    def __init__(self, workdir: Path, settings: Sequence[str], dev_miner: bool = True) -> None:
        super().__init__(workdir)
        self.data_dir = workdir / "alys"
        self.settings = list(settings)
        self.dev_miner = dev_miner

    def command(self) -> list[str]:
        sets = [f'data_dir="{self.data_dir}"', "rpc.port=0", "metrics.port=0",
                *self.settings]
        args = [sys.executable, "-m", "node", "boot", "supervision.toml"]
        for item in sets:
            args += ["--set", item]
        if self.dev_miner:
            args.append("--dev-miner")
        return args

    def environment(self) -> dict[str, str]:
        return {**os.environ, "PYTHONPATH": str(ROOT)}

    @property
    def cwd(self) -> Path:
        return ROOT  # supervision.toml is relative to the repository

    def start(self) -> None:
        self.spawn()

    @property
    def rpc_url(self) -> str:
        return self.wait_for(r"JSON-RPC on (http://[\d.]+:\d+)").group(1)

    @property
    def metrics_url(self) -> str:
        return self.wait_for(r"metrics on (http://[\d.]+:\d+)/metrics").group(1)

    def rpc(self, method: str, *params: Any) -> Any:
        body = httpx.post(self.rpc_url, json={"method": method, "params": list(params),
                                              "id": 1}, timeout=30).json()
        assert body["error"] is None, body
        return body["result"]

    def status(self) -> dict[str, Any]:
        status: dict[str, Any] = self.rpc("getchainstatus")
        return status

    def wait_until(self, predicate: Any, what: str, timeout: float = 60.0,
                   every: float = 0.2) -> Any:
        """Poll ``predicate()`` until it returns something true."""
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            if time.monotonic() > deadline or not self.running:
                raise AssertionError(f"{what}: not within {timeout:g} s; node log:\n"
                                     f"{self.tail(60)}")
            time.sleep(every)
