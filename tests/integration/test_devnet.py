"""``python -m node devnet`` as a user runs it: three authorities as real processes on
127.0.0.1 (free ports through ``--base-port``), the embedded EVM, node 1 merge-mining.

They agree on head and finalization; an ETH transfer sent to node 1 is executed on all three;
node 3 killed with SIGKILL, nodes 1 and 2 go on with 2 approvals of 3; the devnet stops in
order on SIGTERM; a devnet killed outright leaves no node behind; and a restarted node 3
catches up with the others (that one waits for the SyncActor).

Every process a test starts is in the ``processes`` fixture, which stops it whatever
happens; every wait is a poll with a deadline.
"""

from __future__ import annotations

import os
import random
import re
import secrets
import signal
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import attrs
import httpx
from eth_account import Account

from .harness import CHAIN_ID, ROOT, Process, dev_accounts, rpc

T = TypeVar("T")

#: Seconds for three nodes to boot and answer on a loaded 2-core machine.
UP_TIMEOUT = 180.0
#: Seconds for the chain to make a few blocks of 2 s slots (and finalize them).
PROGRESS_TIMEOUT = 120.0
#: Seconds a restarted node has to download the few blocks it missed.
CATCH_UP_TIMEOUT = 60.0
#: Each --base-port devnet uses ports base .. base + 63, and btcd's RPC at base + 64
#: (``--bitcoin``).
PORT_SPAN = 65


def free_base_port() -> int:
    """A base port whose 65 ports are free on 127.0.0.1 now (below Linux's ephemeral range,
    where the OS does not hand out ports by itself)."""
    rng = random.Random()
    for _ in range(200):
        base = rng.randrange(20000, 32000 - PORT_SPAN)
        try:
            for port in range(base, base + PORT_SPAN):
                with socket.socket() as s:
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                    s.bind(("127.0.0.1", port))
        except OSError:
            continue
        return base
    raise AssertionError(f"no {PORT_SPAN} free ports in a row on 127.0.0.1")


def poll(predicate: Callable[[], T | None], what: str, timeout: float,
         logs: Callable[[], str] = lambda: "") -> T:
    """``predicate()`` until it returns something true; its last error or value on
    failure, with ``logs()``."""
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            value = predicate()
        except (httpx.HTTPError, OSError, ValueError, KeyError, TypeError,
                AssertionError) as exc:
            value, last = None, exc
        else:
            last = value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:g} s (last: {last!r})\n{logs()}")
        time.sleep(0.25)


def alive(pid: int) -> bool:
    """Whether process ``pid`` still runs (a zombie nobody reaped yet counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            return f.read().rpartition(")")[2].split()[0] != "Z"
    except FileNotFoundError:
        return False
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True


@attrs.frozen
class DevNode:
    """One node as the devnet announced it."""

    name: str
    pid: int
    rpc_url: str
    eth_url: str
    log_path: Path

    def call(self, method: str, *params: Any) -> Any:
        body = httpx.post(self.rpc_url, json={"method": method, "params": list(params),
                                              "id": 1}, timeout=10).json()
        assert body["error"] is None, body
        return body["result"]

    def status(self) -> dict[str, Any]:
        status: dict[str, Any] = self.call("getchainstatus")
        return status

    def hash_at(self, height: int) -> str | None:
        block = self.call("getblockbyheight", height)
        return None if block is None else str(block["hash"])

    def eth(self, method: str, *params: Any) -> Any:
        return rpc(self.eth_url, method, *params)

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return f"----- {self.name} ({self.log_path}):\n" + "\n".join(
            text.splitlines()[-lines:])


_ANNOUNCED = re.compile(r"^(node\d+): pid (\d+), JSON-RPC (\S+), Ethereum JSON-RPC (\S+) "
                        r".*, log (\S+?)(?:, dev miner)?$", re.MULTILINE)


class Devnet(Process):
    """``python -m node devnet N --dir <workdir>/net --base-port B``, its output in
    ``devnet.log``."""

    name = "devnet"

    def __init__(self, workdir: Path, n: int, base_port: int) -> None:
        super().__init__(workdir)
        self.n = n
        self.base_port = base_port
        self.directory = workdir / "net"

    def command(self) -> list[str]:
        return [sys.executable, "-m", "node", "devnet", str(self.n), "--dir",
                str(self.directory), "--base-port", str(self.base_port)]

    def environment(self) -> dict[str, str]:
        return {**os.environ, "PYTHONPATH": str(ROOT)}

    def up(self) -> list[DevNode]:
        self.wait_for(r"devnet: \d+ authorit(y|ies) up", timeout=UP_TIMEOUT)
        nodes = [DevNode(m.group(1), int(m.group(2)), m.group(3), m.group(4), Path(m.group(5)))
                 for m in _ANNOUNCED.finditer(self.log())]
        assert [node.name for node in nodes] == [f"node{i}" for i in range(1, self.n + 1)]
        return nodes


class ManualNode(Process):
    """A devnet node started by hand, as the devnet tells a user to:
    ``python -m node boot --config nodeK.toml`` in the devnet directory."""

    def __init__(self, directory: Path, name: str) -> None:
        self.name = f"{name}-manual"
        super().__init__(directory.parent / self.name)
        self.directory = directory
        self.node_name = name

    def command(self) -> list[str]:
        return [sys.executable, "-m", "node", "boot", "--config", f"{self.node_name}.toml"]

    def environment(self) -> dict[str, str]:
        return {**os.environ, "PYTHONPATH": str(ROOT)}

    @property
    def cwd(self) -> Path:
        return self.directory


def logs_of(*nodes: DevNode) -> Callable[[], str]:
    return lambda: "\n".join(node.log_tail() for node in nodes)


def agreement(nodes: list[DevNode], min_head: int = 0,
              min_finalized: int = 0) -> tuple[int, int] | None:
    """(h, f) when every node is at or past ``min_head`` and has finalized at or past
    ``min_finalized``, and all hold the same block at h (the lowest head) and the same
    finalized block at f (the lowest finalized height); else None."""
    statuses = [node.status() for node in nodes]
    head = min(s["head"]["height"] for s in statuses)
    final = min(s["finalized"]["height"] for s in statuses)
    if head < min_head or final < min_finalized:
        return None
    if len({node.hash_at(head) for node in nodes}) != 1:
        return None
    if len({node.hash_at(final) for node in nodes}) != 1:
        return None
    for status in statuses:  # each one's finalized block is on the same chain
        if nodes[0].hash_at(status["finalized"]["height"]) != status["finalized"]["hash"]:
            return None
    return head, final


def start_devnet(tmp_path: Path, processes: list[Process], n: int) -> tuple[Devnet, list[DevNode]]:
    devnet = Devnet(tmp_path, n, free_base_port())
    processes.append(devnet)
    devnet.spawn()
    return devnet, devnet.up()


def test_devnet_of_three_agrees_executes_a_transfer_everywhere_and_survives_a_kill(
    tmp_path: Path, processes: list[Process]
) -> None:
    devnet, nodes = start_devnet(tmp_path, processes, 3)
    node1, node2, node3 = nodes
    logs = logs_of(*nodes)
    for i, node in enumerate(nodes):
        status = node.status()
        assert status["authority_index"] == i and status["authorities"] == 3

    # Same head and finalization everywhere: the dev miner on node 1 finalizes.
    poll(lambda: agreement(nodes, min_head=3, min_finalized=1),
         "the three nodes agree on head and finalization", PROGRESS_TIMEOUT, logs)

    # An ETH transfer sent to node 1 is executed on all three.
    sender, key = dev_accounts()[0]
    recipient = Account.create(secrets.token_hex(16)).address
    value = 10**18 + random.randrange(10**9)
    assert int(node1.eth("eth_chainId"), 16) == CHAIN_ID
    tx = Account.sign_transaction({
        "chainId": CHAIN_ID, "type": 2, "to": recipient, "value": value, "gas": 21000,
        "nonce": int(node1.eth("eth_getTransactionCount", sender, "pending"), 16),
        "maxFeePerGas": 2 * int(node1.eth("eth_gasPrice"), 16) + 10**9,
        "maxPriorityFeePerGas": 10**9,
    }, key)
    tx_hash = node1.eth("eth_sendRawTransaction", "0x" + bytes(tx.raw_transaction).hex())

    def receipt(node: DevNode) -> Callable[[], dict[str, Any] | None]:
        return lambda: node.eth("eth_getTransactionReceipt", tx_hash)

    receipts = [poll(receipt(node), f"the transfer's receipt on {node.name}", PROGRESS_TIMEOUT,
                     logs) for node in nodes]
    assert {r["status"] for r in receipts} == {"0x1"}
    assert len({(r["blockHash"], r["blockNumber"]) for r in receipts}) == 1
    for node in nodes:
        assert int(node.eth("eth_getBalance", recipient, "latest"), 16) == value, node.name

    # SIGKILL node 3: the devnet says so, nodes 1 and 2 go on with 2 approvals of 3 and
    # keep finalizing.
    os.kill(node3.pid, signal.SIGKILL)
    devnet.wait_for(rf"node3 \(pid {node3.pid}\) exited, killed by SIGKILL", timeout=30)
    assert "to start it again: cd " in devnet.log()
    head, final = poll(lambda: agreement([node1, node2]), "nodes 1 and 2 agree", 30, logs)
    poll(lambda: agreement([node1, node2], min_head=head + 4, min_finalized=final + 1),
         "nodes 1 and 2 go on without node 3", PROGRESS_TIMEOUT, logs)
    assert node1.status()["authorities"] == 3

    # SIGTERM: the devnet stops node 2, then node 1, each in order, and exits 0.
    assert devnet.stop(signal.SIGTERM, timeout=90) == 0, devnet.tail(40)
    out = devnet.log()
    assert out.index("stopping node2") < out.index("stopping node1")
    assert "stopping node3" not in out  # it was dead already
    for node in nodes:
        assert not alive(node.pid), node.name
    assert "alys node stopped in order" in node1.log_path.read_text()
    assert "alys node stopped in order" in node2.log_path.read_text()


def test_a_killed_devnet_leaves_no_node_behind(tmp_path: Path,
                                               processes: list[Process]) -> None:
    devnet, [node] = start_devnet(tmp_path, processes, 1)
    poll(lambda: node.status()["head"]["height"] >= 1, "the lone authority produces",
         PROGRESS_TIMEOUT, logs_of(node))
    assert devnet.proc is not None
    os.kill(devnet.proc.pid, signal.SIGKILL)
    devnet.proc.wait(timeout=10)
    # Its stdin pipe closed with the devnet: the node stops itself, in order.
    poll(lambda: not alive(node.pid), "the node exits after its devnet was killed", 60,
         logs_of(node))
    log = node.log_path.read_text()
    assert "stdin closed (the parent process ended): stopping" in log
    assert "alys node stopped in order" in log


def test_a_restarted_node_catches_up_with_the_others(tmp_path: Path,
                                                     processes: list[Process]) -> None:
    devnet, nodes = start_devnet(tmp_path, processes, 3)
    node1, node2, node3 = nodes
    logs = logs_of(*nodes)
    poll(lambda: agreement(nodes, min_head=2), "the three nodes agree", PROGRESS_TIMEOUT, logs)
    behind = node3.status()["head"]["height"]
    os.kill(node3.pid, signal.SIGKILL)
    devnet.wait_for(rf"node3 \(pid {node3.pid}\) exited, killed by SIGKILL", timeout=30)
    head, _ = poll(lambda: agreement([node1, node2], min_head=behind + 6),
                   "nodes 1 and 2 go on without node 3", PROGRESS_TIMEOUT, logs)

    # Started again by hand, as the devnet tells a user to, it catches up.
    again = ManualNode(devnet.directory, "node3")
    processes.append(again)
    again.spawn()
    restarted = attrs.evolve(node3, pid=-1, log_path=again.log_path)
    poll(lambda: restarted.status()["head"]["height"] >= head and
         restarted.hash_at(head) == node1.hash_at(head),
         f"node 3 catches up to #{head}", CATCH_UP_TIMEOUT,
         logs_of(node1, node2, restarted))
    poll(lambda: agreement([node1, node2, restarted], min_head=head + 3),
         "all three go on together", PROGRESS_TIMEOUT, logs_of(node1, node2, restarted))
