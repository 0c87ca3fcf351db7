"""The bug report's requests against a booted node (``python -m node boot`` in a subprocess,
0.2 s slots, ``--dev-miner``): five heights past u64, bodies that used to crash the server or
come back as invalid JSON. Each gets a JSON-RPC error; the node keeps answering, producing and
finalizing, and no actor restarts."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx

from .rpc_strategies import strict_loads
from .test_e2e import Node, rpc


def restarts(tree: list[dict[str, Any]]) -> dict[str, int]:
    """Every process of ``/tree`` with its restart count."""
    out: dict[str, int] = {}
    stack = list(tree)
    while stack:
        node = stack.pop()
        out[str(node["id"])] = node["restarts"]
        stack.extend(node["children"])
    return out


def post(url: str, body: bytes) -> tuple[int, dict[str, Any]]:
    response = httpx.post(url, content=body, timeout=30)
    assert response.headers["content-type"] == "application/json"
    return response.status_code, strict_loads(response.content)


def test_the_bug_reports_requests_leave_the_node_running(tmp_path: Path) -> None:
    node = Node(tmp_path / "alys", "--dev-miner", "--set", "miner.interval=0.1")
    try:
        url = node.rpc_url()
        metrics = node.wait_for(r"metrics on (http://[\d.]+:\d+)/metrics").group(1)
        node.wait_for(r"produced block #2 ")
        for height in (2**64, 2**64 + 1, 2**65, 10**20, 2**256):
            status, reply = post(url, json.dumps({"method": "getblockbyheight",
                                                  "params": [height], "id": 1}).encode())
            assert status == 200 and reply["id"] == 1
            assert reply["error"]["code"] == -32602
            assert "must be an integer in 0..2^64-1" in reply["error"]["message"]
        hostile = [
            b'{"method":"getheadblock","params":' + b"[" * 1000 + b"]" * 1000 + b',"id":1}',
            b'{"method":"getheadblock","id":NaN}',
            b'{"method":"getheadblock","id":Infinity}',
            b'{"method":"getheadblock","id":1e400}',
            b'{"method":"getheadblock","id":"\xff"}',
            b'{"method":"getblockbyhash","params":"' + b"ab" * 31 + b'","id":1}',
            b'{"method":"createauxblock","params":["0x1234"],"id":1}',
            b'{"method":"submitauxblock","params":[18446744073709551616, null],"id":1}',
        ]
        for body in hostile:
            status, reply = post(url, body)
            assert status == 200 and reply["result"] is None
            assert reply["error"]["code"] in (-32700, -32602), (body[:60], reply)
        status, reply = post(url, b"{" + b" " * (2 << 20) + b"}")
        assert status == 413 and reply["error"]["code"] == -32600
        # still answering, still producing and finalizing; nothing restarted
        head = rpc(url, "getchainstatus")["head"]["height"]
        node.wait_for(rf"produced block #{head + 2} ")
        status, reply = post(url, b'{"method":"getblockbyheight","params":1,"id":7}')
        assert reply["result"]["height"] == 1 and reply["id"] == 7
        finalized = rpc(url, "getchainstatus")["finalized"]["height"]
        deadline = time.monotonic() + 60
        while rpc(url, "getchainstatus")["finalized"]["height"] <= finalized:
            assert time.monotonic() < deadline, "finalization stopped"
            time.sleep(0.05)
        tree = httpx.get(f"{metrics}/tree", timeout=30).json()
        counts = restarts(tree)
        assert {"storage_actor", "chain_actor", "auxpow", "rpc", "dev_miner"} <= set(counts)
        assert all(n == 0 for n in counts.values()), counts
        assert node.proc.poll() is None
    finally:
        assert node.stop() == 0
