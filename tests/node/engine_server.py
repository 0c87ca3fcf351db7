"""A protocol-faithful Engine API server for tests: the wire format of an execution client's
authenticated port, backed by an :class:`~node.execution.embedded.EmbeddedEngine`.

Geth and Reth cannot be installed here, so the HTTP client is tested against this server. It
speaks HTTP/1.1 on a real socket on 127.0.0.1 (hypercorn's Trio worker serving the small ASGI
app below) and checks what the execution-apis specification (``ethereum/execution-apis``)
requires:

* ``src/engine/authentication.md`` — every request carries ``Authorization: Bearer <JWT>``,
  HS256 with the shared secret (``alg: none`` and other algorithms are refused), with an
  ``iat`` claim within ±60 s of now; unknown claims are ignored. A request that fails this is
  answered with HTTP 401 and a plain-text reason. (The document says to reject, without naming
  a status; 401 Unauthorized is what Geth and Reth answer.)
* ``src/engine/common.md`` — JSON-RPC 2.0 over HTTP POST with ``Content-Type:
  application/json`` (else HTTP 415); bodies over ``max_body_bytes`` get HTTP 413. Errors use
  the specification's codes and messages: ``-32700`` Parse error (the body is not JSON),
  ``-32600`` Invalid Request (not a JSON-RPC 2.0 request object: ``jsonrpc`` must be
  ``"2.0"``, ``method`` a string, ``params`` an array, ``id`` a string, integer or null, and
  no other members), ``-32601`` Method not found, ``-32602`` Invalid params, ``-32603``
  Internal error, ``-38001`` Unknown payload, ``-38002`` Invalid forkchoice state, ``-38003``
  Invalid payload attributes. The error's ``data`` is ``null`` ("Each error returns a null
  data value, except -32000"); the detail of what was wrong is kept in :class:`RecordedCall`.
  Batches (JSON arrays of requests) are answered with arrays, as JSON-RPC 2.0 says. The
  Engine API has no notifications, so a request without ``id`` is an Invalid Request.
* ``engine_exchangeCapabilities`` (common.md): one param, an array of strings.
  ``engine_forkchoiceUpdatedV2`` (shanghai.md): ``ForkchoiceStateV1`` and an optional
  ``PayloadAttributesV2`` or ``null``. ``engine_getPayloadV2``: one ``DATA`` of 8 bytes.
  ``engine_newPayloadV2``: one ``ExecutionPayloadV2``. Param objects are parsed strictly with
  :mod:`node.types.execution` (exact hex formats and widths, required members, no unknown
  members), so a V1 payload or V1 attributes (no ``withdrawals``) get ``-32602``, as
  shanghai.md requires after the Shanghai timestamp (genesis, here).
* Every result is re-read strictly with the same types before it is sent, so a response of
  the wrong shape fails the test instead of reaching the client.

Use::

    async with engine_server(secret) as url:      # "http://127.0.0.1:PORT"
        client = EngineClient(url, secret)
"""

from __future__ import annotations

import functools
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, cast

import attrs
import hypercorn.config
import hypercorn.trio
import jwt
import trio
from hypercorn.typing import ASGIFramework

from node.execution.embedded import EmbeddedEngine
from node.types.execution import (
    ERROR_MESSAGES,
    INTERNAL_ERROR,
    INVALID_PARAMS,
    INVALID_REQUEST,
    METHOD_NOT_FOUND,
    PARSE_ERROR,
    PAYLOAD_ID_SIZE,
    SERVER_ERROR,
    EngineError,
    ExecutionPayload,
    ForkchoiceState,
    ForkchoiceUpdatedResult,
    GetPayloadResult,
    PayloadAttributes,
    PayloadStatus,
    SchemaError,
    data_from_json,
    eth_block_json,
    quantity_from_json,
)

__all__ = ["DEFAULT_MAX_BODY_BYTES", "EngineApp", "RecordedCall", "engine_server"]

log = logging.getLogger("tests.engine_server")

#: Geth's limit for a JSON-RPC request body on the authenticated port is of this order.
DEFAULT_MAX_BODY_BYTES = 5 * 1024 * 1024
_REQUEST_KEYS = frozenset({"jsonrpc", "id", "method", "params"})

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


@attrs.define
class RecordedCall:
    """One JSON-RPC request as the server saw it (authenticated requests only), and how it was
    answered: ``error`` is ``(code, detail)`` or None."""

    method: Any
    params: Any
    claims: dict[str, Any]
    error: tuple[int, str] | None = None


class _RpcError(Exception):
    def __init__(self, code: int, detail: str) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail


def _error_object(code: int, detail: str) -> dict[str, Any]:
    message = ERROR_MESSAGES.get(code, "Server error")
    data = {"err": detail} if code == SERVER_ERROR else None
    return {"code": code, "message": message, "data": data}


class EngineApp:
    """The ASGI application (see the module docstring)."""

    def __init__(
        self,
        secret: bytes,
        engine: EmbeddedEngine,
        *,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        iat_tolerance: float = 60.0,
        clock: Callable[[], float] = time.time,
        record: list[RecordedCall] | None = None,
    ) -> None:
        self.secret = secret
        self.engine = engine
        self.max_body_bytes = max_body_bytes
        self.iat_tolerance = iat_tolerance
        self.clock = clock
        self.record = record
        self._methods: dict[str, Callable[[list[Any]], Awaitable[Any]]] = {
            "engine_exchangeCapabilities": self._exchange_capabilities,
            "engine_forkchoiceUpdatedV2": self._forkchoice_updated,
            "engine_getPayloadV2": self._get_payload,
            "engine_newPayloadV2": self._new_payload,
            # Execution clients serve the eth namespace on the authenticated port too; the
            # node reads block 0 with it to build its genesis.
            "eth_getBlockByNumber": self._get_block_by_number,
            # ...and the restart path asks which stored blocks the client has, and the
            # fees of a block come from its receipts.
            "eth_getBlockByHash": self._get_block_by_hash,
            "eth_getBlockReceipts": self._get_block_receipts,
            # The node checks the client runs the configured chain.
            "eth_chainId": self._chain_id,
        }

    # ------------------------------------------------------------------ ASGI

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            await trio.lowlevel.checkpoint()
            return
        status, content_type, body, extra = await self._http(scope, receive)
        headers = [
            (b"content-type", content_type),
            (b"content-length", str(len(body)).encode()),
            *extra,
        ]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def _http(
        self, scope: Scope, receive: Receive
    ) -> tuple[int, bytes, bytes, list[tuple[bytes, bytes]]]:
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        claims, problem = self._authenticate(headers.get("authorization"))
        if claims is None:
            await trio.lowlevel.checkpoint()
            return 401, b"text/plain; charset=utf-8", problem.encode(), []
        if scope["method"] != "POST":
            await trio.lowlevel.checkpoint()
            return 405, b"text/plain; charset=utf-8", b"method not allowed", [(b"allow", b"POST")]
        if scope["path"] != "/":
            await trio.lowlevel.checkpoint()
            return 404, b"text/plain; charset=utf-8", b"not found", []
        media = headers.get("content-type", "").split(";")[0].strip().lower()
        if media != "application/json":
            await trio.lowlevel.checkpoint()
            return (
                415,
                b"text/plain; charset=utf-8",
                b"invalid content type, only application/json is supported",
                [],
            )
        body = await self._read_body(receive)
        if body is None:
            return 413, b"text/plain; charset=utf-8", b"request body too large", []
        answer = await self._rpc(body, claims)
        return 200, b"application/json", json.dumps(answer, separators=(",", ":")).encode(), []

    async def _read_body(self, receive: Receive) -> bytes | None:
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return b"".join(chunks)
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    def _authenticate(self, header: str | None) -> tuple[dict[str, Any] | None, str]:
        if header is None:
            return None, "missing token"
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token:
            return None, "missing token: expected 'Authorization: Bearer <JWT>'"
        try:
            claims = jwt.decode(
                token,
                self.secret,
                algorithms=["HS256"],
                options={"require": ["iat"], "verify_iat": False},
            )
        except jwt.InvalidTokenError as exc:
            return None, f"invalid token: {exc}"
        iat = claims.get("iat")
        if isinstance(iat, bool) or not isinstance(iat, int | float):
            return None, "invalid token: the iat claim is not a number"
        skew = abs(self.clock() - iat)
        if skew > self.iat_tolerance:
            return None, f"stale token: iat is {skew:.0f} s away from now"
        return claims, ""

    # ------------------------------------------------------------------ JSON-RPC

    async def _rpc(self, body: bytes, claims: dict[str, Any]) -> Any:
        try:
            doc = json.loads(body)
        except (ValueError, RecursionError) as exc:
            await trio.lowlevel.checkpoint()
            return {
                "jsonrpc": "2.0",
                "id": None,
                "error": _error_object(PARSE_ERROR, f"invalid JSON: {exc}"),
            }
        if isinstance(doc, list):
            if not doc:
                await trio.lowlevel.checkpoint()
                return {
                    "jsonrpc": "2.0",
                    "id": None,
                    "error": _error_object(INVALID_REQUEST, "empty batch"),
                }
            return [await self._one(item, claims) for item in doc]
        return await self._one(doc, claims)

    async def _one(self, request: Any, claims: dict[str, Any]) -> dict[str, Any]:
        await trio.lowlevel.checkpoint()
        request_id = None
        entry: RecordedCall | None = None
        try:
            if not isinstance(request, dict):
                raise _RpcError(INVALID_REQUEST, "a request must be a JSON object")
            rid = request.get("id")
            if "id" not in request or not (rid is None or type(rid) is int or isinstance(rid, str)):
                raise _RpcError(
                    INVALID_REQUEST, "'id' must be a string, an integer or null (no notifications)"
                )
            request_id = rid
            entry = RecordedCall(request.get("method"), request.get("params"), claims)
            if self.record is not None:
                self.record.append(entry)
            unknown = set(request) - _REQUEST_KEYS
            if unknown:
                raise _RpcError(INVALID_REQUEST, f"unknown members {sorted(unknown)}")
            if request.get("jsonrpc") != "2.0":
                raise _RpcError(INVALID_REQUEST, "'jsonrpc' must be \"2.0\"")
            method = request.get("method")
            if not isinstance(method, str):
                raise _RpcError(INVALID_REQUEST, "'method' must be a string")
            params = request.get("params", [])
            if isinstance(params, dict):
                raise _RpcError(INVALID_PARAMS, "Engine API methods take positional params")
            if not isinstance(params, list):
                raise _RpcError(INVALID_REQUEST, "'params' must be an array")
            handler = self._methods.get(method)
            if handler is None:
                raise _RpcError(METHOD_NOT_FOUND, f"the method {method!r} does not exist")
            result = await handler(params)
        except _RpcError as exc:
            return self._fail(request_id, entry, exc.code, exc.detail)
        except SchemaError as exc:
            return self._fail(request_id, entry, INVALID_PARAMS, str(exc))
        except EngineError as exc:
            code = exc.code if exc.code is not None else SERVER_ERROR
            return self._fail(request_id, entry, code, exc.message)
        except Exception as exc:  # a bug in the server or the engine: answer, and log it
            log.exception("engine server: internal error")
            return self._fail(request_id, entry, INTERNAL_ERROR, repr(exc))
        return {"jsonrpc": "2.0", "id": request_id, "result": result}

    def _fail(
        self, request_id: Any, entry: RecordedCall | None, code: int, detail: str
    ) -> dict[str, Any]:
        if entry is not None:
            entry.error = (code, detail)
        return {"jsonrpc": "2.0", "id": request_id, "error": _error_object(code, detail)}

    # ------------------------------------------------------------------ methods

    @staticmethod
    def _count(params: list[Any], low: int, high: int) -> None:
        if not low <= len(params) <= high:
            wanted = str(low) if low == high else f"{low} to {high}"
            raise _RpcError(INVALID_PARAMS, f"expected {wanted} params, got {len(params)}")

    async def _exchange_capabilities(self, params: list[Any]) -> Any:
        await trio.lowlevel.checkpoint()
        self._count(params, 1, 1)
        methods = params[0]
        if not isinstance(methods, list) or not all(isinstance(m, str) for m in methods):
            raise _RpcError(INVALID_PARAMS, "params[0]: expected an array of strings")
        result = await self.engine.exchange_capabilities(methods)
        if "engine_exchangeCapabilities" in result:
            raise AssertionError("common.md: exchangeCapabilities must not list itself")
        return list(result)

    async def _forkchoice_updated(self, params: list[Any]) -> Any:
        await trio.lowlevel.checkpoint()
        self._count(params, 1, 2)
        state = ForkchoiceState.from_json(params[0], "params[0]")
        attributes = None
        if len(params) == 2 and params[1] is not None:
            attributes = PayloadAttributes.from_json(params[1], "params[1]")
        result = await self.engine.forkchoice_updated(state, attributes)
        out = result.to_json()
        ForkchoiceUpdatedResult.from_json(out, "result")
        return out

    async def _get_payload(self, params: list[Any]) -> Any:
        await trio.lowlevel.checkpoint()
        self._count(params, 1, 1)
        payload_id = data_from_json(params[0], "params[0]", size=PAYLOAD_ID_SIZE)
        result = await self.engine.get_payload(payload_id)
        out = result.to_json()
        GetPayloadResult.from_json(out, "result")
        return out

    async def _get_block_by_number(self, params: list[Any]) -> Any:
        await trio.lowlevel.checkpoint()
        self._count(params, 2, 2)
        tag, full = params
        if not isinstance(full, bool):
            raise _RpcError(INVALID_PARAMS, "params[1]: expected a boolean")
        number = self.engine.head_number if tag == "latest" else quantity_from_json(
            tag, "params[0]")
        payload = self.engine.block_by_number(number)
        return None if payload is None else eth_block_json(payload)

    async def _get_block_by_hash(self, params: list[Any]) -> Any:
        await trio.lowlevel.checkpoint()
        self._count(params, 2, 2)
        block_hash = data_from_json(params[0], "params[0]", size=32)
        if not isinstance(params[1], bool):
            raise _RpcError(INVALID_PARAMS, "params[1]: expected a boolean")
        payload = self.engine.block_by_hash(block_hash)
        return None if payload is None else eth_block_json(payload)

    async def _chain_id(self, params: list[Any]) -> Any:
        await trio.lowlevel.checkpoint()
        self._count(params, 0, 0)
        return hex(self.engine.config.chain_id)

    async def _get_block_receipts(self, params: list[Any]) -> Any:
        await trio.lowlevel.checkpoint()
        self._count(params, 1, 1)
        block_hash = data_from_json(params[0], "params[0]", size=32)
        if self.engine.block_by_hash(block_hash) is None:
            return None
        return [{"gasUsed": hex(r.gas_used), "effectiveGasPrice": hex(r.effective_gas_price)}
                for r in await self.engine.receipts(block_hash)]

    async def _new_payload(self, params: list[Any]) -> Any:
        await trio.lowlevel.checkpoint()
        self._count(params, 1, 1)
        payload = ExecutionPayload.from_json(params[0], "params[0]")
        result = await self.engine.new_payload(payload)
        if result.status.value == "INVALID_BLOCK_HASH":
            raise AssertionError(
                "shanghai.md: newPayloadV2 answers INVALID, not INVALID_BLOCK_HASH"
            )
        out = result.to_json()
        PayloadStatus.from_json(out, "result")
        return out


@asynccontextmanager
async def engine_server(
    secret: bytes,
    *,
    engine: EmbeddedEngine | None = None,
    record: list[RecordedCall] | None = None,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    iat_tolerance: float = 60.0,
    clock: Callable[[], float] = time.time,
) -> AsyncIterator[str]:
    """Serve the Engine API on 127.0.0.1 (a free port) while the block runs; yields the URL.

    ``engine`` is the backing engine (a fresh :class:`EmbeddedEngine` by default; pass one to
    inspect it); ``record`` collects a :class:`RecordedCall` per request; ``clock`` is the
    server's idea of now for the ``iat`` check.
    """
    app = EngineApp(
        secret,
        engine if engine is not None else EmbeddedEngine(),
        max_body_bytes=max_body_bytes,
        iat_tolerance=iat_tolerance,
        clock=clock,
        record=record,
    )
    config = hypercorn.config.Config()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = None
    config.errorlog = log
    config.graceful_timeout = 0.0
    try:
        async with trio.open_nursery() as nursery:
            binds = await nursery.start(
                functools.partial(
                    hypercorn.trio.serve, cast(ASGIFramework, app), config, mode="asgi"
                )
            )
            try:
                yield binds[0]
            finally:
                nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        # The body's own exception comes back wrapped by the nursery: hand it back as it was.
        if len(group.exceptions) == 1:
            raise group.exceptions[0] from None
        raise
