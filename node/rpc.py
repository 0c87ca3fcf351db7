"""The node's JSON-RPC server: JSON-RPC 1.0 style over HTTP POST, as the original serves
miners and users, on an ASGI app served by hypercorn's Trio worker.

A request is ``{"method": str, "params": [...], "id": any}`` (``params`` may be omitted); the
answer is ``{"result": ..., "error": null, "id": ...}`` or ``{"result": null, "error":
{"code": int, "message": str}, "id": ...}``. Malformed requests never reach a handler: a body
over the size limit, a body that is not JSON, a request that is not an object, an unknown
method and wrong params each get their own JSON-RPC error, and the server carries on.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import attrs
import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve

logger = logging.getLogger("alys.rpc")

# JSON-RPC error codes
PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
CHAIN_SYNCING = -32606  # the original's "Chain is syncing" for createauxblock without work


@attrs.frozen
class RpcError(Exception):
    """An error answer: JSON-RPC ``code`` and ``message``, and the HTTP status to send."""

    code: int
    message: str
    http_status: int = 200


Handler = Callable[[str, list[Any]], Awaitable[Any]]


def _response(result: Any, error: RpcError | None, request_id: Any) -> bytes:
    body = {
        "result": None if error is not None else result,
        "error": None if error is None else {"code": error.code, "message": error.message},
        "id": request_id,
    }
    return json.dumps(body, separators=(",", ":")).encode()


async def lifespan(scope: dict[str, Any], receive: Any, send: Any) -> bool:
    """Answer ASGI lifespan messages (nothing to set up); True if ``scope`` was one."""
    if scope["type"] != "lifespan":
        return False
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return True


class RpcApp:
    """The ASGI application: POST / with a JSON-RPC body; ``handler(method, params)`` answers
    known methods (``methods``) and raises :class:`RpcError` for a specific failure."""

    def __init__(self, handler: Handler, methods: Mapping[str, str], max_body: int) -> None:
        self.handler = handler
        self.methods = methods
        self.max_body = max_body

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if await lifespan(scope, receive, send) or scope["type"] != "http":
            return
        if scope["method"] != "POST":
            await self._send(send, 405, _response(None, RpcError(
                INVALID_REQUEST, "JSON-RPC requests are HTTP POST"), None))
            return
        body = bytearray()
        while True:
            message = await receive()
            body += message.get("body", b"")
            if len(body) > self.max_body:
                await self._send(send, 413, _response(None, RpcError(
                    INVALID_REQUEST, f"request body over {self.max_body} bytes"), None))
                return
            if not message.get("more_body"):
                break
        status, payload = await self.answer(bytes(body))
        await self._send(send, status, payload)

    async def answer(self, body: bytes) -> tuple[int, bytes]:
        """The HTTP status and body for one request body."""
        try:
            request = json.loads(body)
        except (ValueError, UnicodeDecodeError) as exc:
            return 200, _response(None, RpcError(PARSE_ERROR, f"not JSON: {exc}"), None)
        if not isinstance(request, dict):
            return 200, _response(None, RpcError(INVALID_REQUEST, "the request must be a JSON "
                                                 "object"), None)
        request_id = request.get("id")
        method = request.get("method")
        params = request.get("params", [])
        if not isinstance(method, str):
            return 200, _response(None, RpcError(INVALID_REQUEST, "'method' must be a string"),
                                  request_id)
        if params is None:
            params = []
        if not isinstance(params, list):
            return 200, _response(None, RpcError(INVALID_PARAMS, "'params' must be an array"),
                                  request_id)
        if method not in self.methods:
            return 200, _response(None, RpcError(METHOD_NOT_FOUND, f"unknown method {method!r}"),
                                  request_id)
        try:
            result = await self.handler(method, params)
        except RpcError as err:
            return err.http_status, _response(None, err, request_id)
        except Exception as exc:
            logger.exception("rpc %s failed", method)
            return 500, _response(None, RpcError(INTERNAL_ERROR, f"internal error: {exc}"),
                                  request_id)
        return 200, _response(result, None, request_id)

    async def _send(self, send: Any, status: int, body: bytes) -> None:
        await send({
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"),
                        (b"content-length", str(len(body)).encode())],
        })
        await send({"type": "http.response.body", "body": body})


def hypercorn_config(host: str, port: int, max_body: int) -> HypercornConfig:
    config = HypercornConfig()
    config.bind = [f"{host}:{port}"]
    config.accesslog = None
    config.errorlog = logging.getLogger("alys.http")
    config.h11_max_incomplete_size = 64 * 1024
    config.wsgi_max_body_size = max_body
    config.graceful_timeout = 1.0
    return config


async def serve_app(
    app: Any, host: str, port: int, max_body: int = 1 << 20, *,
    task_status: trio.TaskStatus[tuple[str, int]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve an ASGI app on ``host:port`` (port 0 picks one); reports the bound address."""

    class _Status:
        def started(self, binds: list[str] | None = None) -> None:
            address = (binds or [f"http://{host}:{port}"])[0]
            hostport = address.split("://", 1)[-1]
            bound_host, _, bound_port = hostport.rpartition(":")
            task_status.started((bound_host.strip("[]"), int(bound_port)))

    status: Any = _Status()
    await serve(app, hypercorn_config(host, port, max_body), task_status=status)


# -- parameter checking helpers -------------------------------------------------------------------


def param(params: list[Any], index: int, kind: str, *, optional: bool = False) -> Any:
    """Parameter ``index`` checked as ``kind`` ("int", "hex32", "hex", "address"); an
    :class:`RpcError` (invalid params) naming the position otherwise."""
    if index >= len(params):
        if optional:
            return None
        raise RpcError(INVALID_PARAMS, f"missing parameter {index}")
    value = params[index]
    where = f"parameter {index}"
    if kind == "int":
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise RpcError(INVALID_PARAMS, f"{where} must be a non-negative integer")
        return value
    if not isinstance(value, str):
        raise RpcError(INVALID_PARAMS, f"{where} must be a hex string")
    text = value[2:] if value.startswith("0x") else value
    try:
        raw = bytes.fromhex(text)
    except ValueError:
        raise RpcError(INVALID_PARAMS, f"{where} is not valid hex") from None
    if kind == "hex32" and len(raw) != 32:
        raise RpcError(INVALID_PARAMS, f"{where} must be 32 bytes of hex")
    if kind == "address" and len(raw) != 20:
        raise RpcError(INVALID_PARAMS, f"{where} must be a 20-byte EVM address")
    return raw
