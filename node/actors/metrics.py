"""MetricsActor: Prometheus ``/metrics``, ``/health``, ``/ready`` and the live tree on HTTP.

Serves, on 127.0.0.1:9001 by default: ``/metrics`` (the node's figures and otp's
per-process collector, read at scrape time), ``/health`` (200 while the node runs),
``/ready`` (200 once the chain actor has a head and is synced, else 503) and ``/tree``
(``otp.tree_snapshot()`` as JSON).
"""

from __future__ import annotations

import json
import logging
from typing import Any

import trio
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

import otp

from .. import metrics
from ..errors import CALL_FAILURES
from ..messages.chain import GetStatus
from ..rpc import lifespan, refuse_websocket, serve_app

logger = logging.getLogger("alys.metrics")


def _snapshot_json(node: otp.ProcessSnapshot) -> dict[str, Any]:
    return {
        "id": None if node.id is None else str(node.id),
        "name": None if node.name is None else str(node.name),
        "pid": None if node.pid is None else repr(node.pid),
        "kind": node.kind,
        "behaviour": node.behaviour,
        "status": node.status,
        "restarts": node.restarts,
        "mailbox_depth": node.mailbox_depth,
        "messages_handled": node.messages_handled,
        "children": [_snapshot_json(c) for c in node.children],
    }


class MetricsApp:
    def __init__(self, chain_name: str = "chain") -> None:
        self.chain_name = chain_name

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if await refuse_websocket(scope, receive, send):
            return
        if await lifespan(scope, receive, send) or scope["type"] != "http":
            return
        path = scope["path"]
        if scope["method"] != "GET":
            status, kind, body = 405, "text/plain", b"GET only\n"
        elif path == "/metrics":
            status, kind, body = 200, CONTENT_TYPE_LATEST, generate_latest(metrics.REGISTRY)
        elif path == "/health":
            status, kind, body = 200, "application/json", b'{"status":"ok"}'
        elif path == "/ready":
            ready, detail = await self._ready()
            status, kind = (200 if ready else 503), "application/json"
            body = json.dumps({"ready": ready, "detail": detail}).encode()
        elif path == "/tree":
            tree = [_snapshot_json(n) for n in otp.tree_snapshot()]
            status, kind, body = 200, "application/json", json.dumps(tree).encode()
        else:
            status, kind, body = 404, "text/plain", b"not found\n"
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", kind.encode()),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

    async def _ready(self) -> tuple[bool, str]:

        try:
            status = await otp.call(self.chain_name, GetStatus(), timeout=2.0)
        except CALL_FAILURES as exc:
            return False, f"chain actor unavailable: {exc}"
        if status.head is None:
            return False, "no head yet"
        if not status.synced:
            return False, "syncing"
        if status.waiting is not None:
            return False, status.waiting
        return True, f"head #{status.head.height}"


_registered: list[otp.OtpCollector] = []


def _use_collector(collector: otp.OtpCollector | None) -> None:
    """Make ``collector`` the registry's otp collector (a killed predecessor's included)."""
    while _registered:
        metrics.REGISTRY.unregister(_registered.pop())
    if collector is not None:
        metrics.REGISTRY.register(collector)
        _registered.append(collector)


class MetricsActor(otp.GenServer):
    owns_tasks = True

    async def init(self, host: str = "127.0.0.1", port: int = 9001) -> None:
        self.collector = otp.OtpCollector()
        _use_collector(self.collector)
        try:
            self.address = await otp.start_task(serve_app, MetricsApp(), host, port)
        except BaseException:
            _use_collector(None)
            raise
        logger.info("metrics on http://%s:%d/metrics", *self.address)

    async def handle_call(self, request: Any, from_: otp.From) -> Any:
        await trio.lowlevel.checkpoint()
        if request == "address":
            return self.address
        raise otp.UnexpectedMessage(self, "call", request)

    async def terminate(self, reason: Any) -> None:
        await trio.lowlevel.checkpoint()
        if self.collector in _registered:
            _use_collector(None)
