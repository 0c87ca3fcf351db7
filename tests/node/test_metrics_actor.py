"""The MetricsActor over a real socket: /metrics, /health, /ready (before and after the chain
actor exists) and /tree."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

import otp
from node.actors.metrics import MetricsActor
from node.messages import chain as c

from .factories import Clock, start_chain, stop_actors

pytestmark = pytest.mark.real_clock


def names(nodes: list[dict[str, Any]]) -> set[str]:
    found: set[str] = set()
    for n in nodes:
        if n["name"] is not None:
            found.add(n["name"])
        found |= names(n["children"])
    return found


async def test_metrics_health_ready_and_tree(tmp_path: Path) -> None:
    clock = Clock()
    async with otp.runtime():
        await otp.start(MetricsActor, port=0, name="metrics")
        host, port = await otp.call("metrics", "address")
        async with httpx.AsyncClient(base_url=f"http://{host}:{port}", timeout=10) as http:
            health = await http.get("/health")
            assert health.status_code == 200 and health.json() == {"status": "ok"}
            ready = await http.get("/ready")
            assert ready.status_code == 503
            assert ready.json()["ready"] is False
            assert "chain actor unavailable" in ready.json()["detail"]

            await start_chain(tmp_path, {"slot_duration_ms": 2000}, clock)
            clock.next_slot()
            ref = await otp.call("chain", c.ProduceNow())
            assert ref is not None and ref.height == 1

            ready = await http.get("/ready")
            assert ready.status_code == 200
            assert ready.json() == {"ready": True, "detail": "head #1"}

            scrape = await http.get("/metrics")
            assert scrape.status_code == 200
            assert scrape.headers["content-type"].startswith("text/plain")
            text = scrape.text
            assert "alys_chain_head_height 1.0" in text
            assert "alys_chain_blocks_produced_total" in text
            assert "alys_chain_finalized_height 0.0" in text
            assert "alys_chain_import_seconds_bucket" in text
            assert "otp_process_messages_total" in text
            assert 'name="chain"' in text and 'name="storage"' in text

            tree = await http.get("/tree")
            assert tree.status_code == 200
            nodes = tree.json()
            assert isinstance(nodes, list)
            assert {"metrics", "storage", "engine", "chain"} <= names(nodes)
            chain = next(n for n in nodes if n["name"] == "chain")
            assert chain["status"] and chain["messages_handled"] >= 1
            assert set(chain) == {"id", "name", "pid", "kind", "behaviour", "status",
                                  "restarts", "mailbox_depth", "messages_handled", "children"}

            assert (await http.get("/nope")).status_code == 404
            assert (await http.post("/metrics")).status_code == 405
            # still serving after the odd requests
            assert (await http.get("/health")).status_code == 200

            await stop_actors("chain")
            assert (await http.get("/ready")).status_code == 503
        await stop_actors("engine", "storage", "metrics")


async def test_a_websocket_handshake_gets_403_and_the_server_carries_on() -> None:
    async with otp.runtime():
        await otp.start(MetricsActor, port=0, name="metrics")
        host, port = await otp.call("metrics", "address")
        stream = await trio.open_tcp_stream(host, port)
        async with stream:
            await stream.send_all(
                b"GET /metrics HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                b"Sec-WebSocket-Version: 13\r\n\r\n")
            with trio.fail_after(10):
                reply = await stream.receive_some(4096)
        assert reply.startswith(b"HTTP/1.1 403 "), reply
        async with httpx.AsyncClient(base_url=f"http://{host}:{port}", timeout=10) as http:
            assert (await http.get("/health")).status_code == 200
