"""End to end: boot the node as a subprocess (0.2 s slots), mine with --dev-miner, see
finalization over RPC, SIGTERM it, boot it again and see it resume from the stored head."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[2]


class Node:
    """``python -m node boot supervision.toml`` in a subprocess, its log lines collected."""

    def __init__(self, data_dir: Path, *extra: str) -> None:
        self.lines: list[str] = []
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "node", "boot", "supervision.toml",
             "--set", f'data_dir="{data_dir}"', "--set", "chain.slot_duration_ms=200",
             "--set", "rpc.port=0", "--set", "metrics.port=0", "--set", "eth_rpc.port=0", *extra],
            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line)

    def wait_for(self, pattern: str, timeout: float = 60.0) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        seen = 0
        while time.monotonic() < deadline:
            for line in self.lines[seen:]:
                match = re.search(pattern, line)
                if match:
                    return match
            seen = max(seen, len(self.lines) - 1)
            if self.proc.poll() is not None and not self.reader.is_alive():
                break
            time.sleep(0.05)
        raise AssertionError(f"{pattern!r} not seen; log:\n{''.join(self.lines[-60:])}")

    def rpc_url(self) -> str:
        match = self.wait_for(r"JSON-RPC on (http://[\d.]+:\d+)")
        return match.group(1)

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=30)
        self.reader.join(timeout=5)
        return code


def rpc(url: str, method: str, *params: Any) -> Any:
    body = httpx.post(url, json={"method": method, "params": list(params), "id": 1}, timeout=10)
    reply = body.json()
    assert reply["error"] is None, reply
    return reply["result"]


def test_boot_mine_finalize_stop_and_resume(tmp_path: Path) -> None:
    data = tmp_path / "alys"
    node = Node(data, "--dev-miner", "--set", "miner.interval=0.1")
    try:
        url = node.rpc_url()
        node.wait_for(r"produced block #3 ")
        deadline = time.monotonic() + 60
        status = rpc(url, "getchainstatus")
        while status["finalized"]["height"] < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
            status = rpc(url, "getchainstatus")
        assert status["finalized"]["height"] >= 2, node.lines[-20:]
        head = rpc(url, "getheadblock")
        assert head["height"] >= status["finalized"]["height"]
        by_height = rpc(url, "getblockbyheight", head["height"])
        assert by_height["hash"] == head["hash"]
        assert rpc(url, "getblockbyhash", head["hash"])["height"] == head["height"]
        mined = [b for b in (rpc(url, "getblockbyheight", h) for h in range(1, head["height"] + 1))
                 if b["auxpow_header"] is not None]
        assert mined, "no block carried an AuxPoW header"
        # bad input gets an error and the node carries on
        bad = httpx.post(url, content=b"{nope", timeout=10).json()
        assert bad["error"]["code"] == -32700
        assert rpc(url, "getchainstatus")["head"]["height"] >= head["height"]
        # python -m node status, against this node
        metrics = node.wait_for(r"metrics on http://[\d.]+:(\d+)/metrics").group(1)
        rpc_port = url.rsplit(":", 1)[1].rstrip("/")
        status_cmd = subprocess.run(
            [sys.executable, "-m", "node", "status", "--set", f"rpc.port={rpc_port}",
             "--set", f"metrics.port={metrics}", "--set", f'data_dir="{data}"'],
            cwd=ROOT, capture_output=True, text=True, timeout=60,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        assert status_cmd.returncode == 0, status_cmd.stderr
        assert re.search(r"^head\s+#\d+ ", status_cmd.stdout, re.M), status_cmd.stdout
        assert re.search(r"^\s+storage_actor: 0 \(running\)$", status_cmd.stdout, re.M)
    finally:
        code = node.stop()
    assert code == 0, "".join(node.lines[-30:])
    assert "alys node stopped in order" in node.lines[-1], node.lines[-5:]
    stopped_at = head["height"]

    node = Node(data)
    try:
        match = node.wait_for(r"chain at #(\d+)")
        assert int(match.group(1)) >= stopped_at
        url = node.rpc_url()
        node.wait_for(rf"produced block #{int(match.group(1)) + 1} ")
        again = rpc(url, "getblockbyheight", stopped_at)
        assert again["hash"] == head["hash"]
    finally:
        assert node.stop() == 0


def test_refuses_to_start_on_a_corrupt_database(tmp_path: Path) -> None:
    import plyvel

    data = tmp_path / "alys"
    (data / "chain").mkdir(parents=True)
    db = plyvel.DB(str(data / "chain"), create_if_missing=True)
    db.put(b"v", b"\x02")  # schema 2
    db.put(b"m/head", b"\xde\xad")
    db.close()
    node = Node(data)
    code = node.proc.wait(timeout=60)
    node.reader.join(timeout=5)
    assert code == 1
    log = "".join(node.lines)
    assert "corrupt storage record b'm/head'" in log
