"""Ethereum's JSON-RPC 2.0, over HTTP and WebSocket on one port (as anvil and geth serve it),
as an ASGI application for hypercorn's Trio worker.

* **HTTP**: ``POST`` (any path) with a request object or a batch (an array of them); the
  answer is the response object or the array of responses (none for notifications, requests
  without an ``id``: an empty body). Other methods get 405.
* **WebSocket**: each text (or binary) message is a request or a batch, answered on the same
  connection in order; ``eth_subscribe`` notifications (``eth_subscription``) arrive on it
  between answers. A connection whose client reads too slowly for its notifications
  (:data:`OUTBOX` messages queued) is closed (1008), as geth drops slow subscribers.

Hostile input, handled where it enters, with :mod:`node.rpc`'s pieces: bodies and messages
over ``max_body`` bytes are refused (HTTP 413; a WebSocket message over it closes the
connection, 1009); the JSON must be strict (``parse_json``: UTF-8, no NaN or Infinity, no
integer of more than 100 digits, nesting a parser survives) or the answer is ``-32700``; a
request that is not an object, has a ``jsonrpc`` other than ``"2.0"``, a non-string method,
or an id that is not a JSON scalar is ``-32600``; an empty batch is ``-32600``, one of more
than ``batch_limit`` requests is refused whole; an unknown method is ``-32601`` (``the method
X does not exist/is not available``, geth's words); parameters are checked by each method's
declaration (``Method.bind``) and a wrong one is ``-32602``. A batch's responses stop growing
at :data:`MAX_RESPONSE` bytes (the rest answer ``-32003``). Every response is strict JSON; a
handler's unexpected exception is logged and answered ``-32603``.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Final

import trio

from node.messages.eth import EthError
from node.rpc import (
    INTERNAL_ERROR,
    INVALID_REQUEST,
    METHOD_NOT_FOUND,
    Disconnected,
    Id,
    Method,
    RpcError,
    describe,
    encode,
    lifespan,
    parse_json,
    read_body,
    request_id,
)

__all__ = ["MAX_RESPONSE", "OUTBOX", "EthRpcApp", "Session"]

logger = logging.getLogger("alys.eth")

#: Notifications and answers queued for one WebSocket client before it is dropped.
OUTBOX: Final = 1024
#: A batch's answers stop at this size (geth's BatchResponseMaxSize).
MAX_RESPONSE: Final = 25 * 1000 * 1000
RESPONSE_TOO_LARGE: Final = -32003
_NO_ID: Final = object()


class Session:
    """One WebSocket connection: what subscriptions push notifications through."""

    def __init__(self, number: int) -> None:
        self.number = number
        self.outbox_send, self.outbox_receive = trio.open_memory_channel[bytes](OUTBOX)
        self.closed = False
        self.too_slow = False

    def push(self, message: bytes) -> bool:
        """Queue a notification; False (and the connection is to close) if the client has
        fallen :data:`OUTBOX` messages behind."""
        if self.closed:
            return False
        try:
            self.outbox_send.send_nowait(message)
        except trio.WouldBlock:
            self.too_slow = True
            self.close()
            return False
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return False
        return True

    def close(self) -> None:
        self.closed = True
        self.outbox_send.close()


#: ``handler(method, args, session) -> result as JSON bytes, or an error``; raises
#: :class:`RpcError` for an error without data.
Handler = Callable[[Method, list[Any], Session | None], Awaitable["bytes | EthError"]]


def _response(rid: Any, result: bytes) -> bytes:
    return b'{"jsonrpc":"2.0","id":' + encode(rid) + b',"result":' + result + b"}"


def _error(rid: Any, code: int, message: str, data: str | None = None) -> bytes:
    error: dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        error["data"] = data
    return encode({"jsonrpc": "2.0", "id": rid, "error": error})


class EthRpcApp:
    """The ASGI application (see the module docstring). ``on_close(session)`` runs when a
    WebSocket connection ends (its subscriptions go)."""

    def __init__(self, methods: Mapping[str, Method], handler: Handler, *, max_body: int,
                 batch_limit: int, on_close: Callable[[Session], None] | None = None) -> None:
        self.methods = methods
        self.handler = handler
        self.max_body = max_body
        self.batch_limit = batch_limit
        self.on_close = on_close
        self.sessions = 0

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        kind = scope["type"]
        if kind == "websocket":
            await self._websocket(receive, send)
        elif kind == "http":
            await self._http(scope, receive, send)
        else:
            await lifespan(scope, receive, send)

    # -- HTTP ---------------------------------------------------------------------------------

    async def _http(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        close = False
        try:
            if scope["method"] != "POST":
                status, payload = 405, _error(None, INVALID_REQUEST,
                                              "JSON-RPC requests are HTTP POST")
            else:
                body = await read_body(scope, receive, self.max_body)
                if body is None:
                    status, close = 413, True
                    payload = _error(None, INVALID_REQUEST,
                                     f"the request body is over {self.max_body} bytes")
                else:
                    status, payload = 200, await self.process(body, None) or b""
        except Disconnected:
            return
        except Exception:
            logger.exception("Ethereum JSON-RPC: answering a request failed")
            status, payload = 500, _error(None, INTERNAL_ERROR, "internal error")
        headers = [(b"content-type", b"application/json"),
                   (b"content-length", b"%d" % len(payload))]
        if close:
            headers.append((b"connection", b"close"))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": payload})

    # -- WebSocket ----------------------------------------------------------------------------

    async def _websocket(self, receive: Any, send: Any) -> None:
        message = await receive()
        if message["type"] != "websocket.connect":
            return
        await send({"type": "websocket.accept"})
        self.sessions += 1
        session = Session(self.sessions)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._writer, session, send)
                while True:
                    message = await receive()
                    if message["type"] != "websocket.receive":
                        break
                    text = message.get("text")
                    raw = text if text is not None else (message.get("bytes") or b"")
                    if len(raw) > self.max_body:
                        await send({"type": "websocket.close", "code": 1009})
                        break
                    answer = await self.process(raw, session)
                    if answer is not None and not session.push(answer):
                        break
                session.close()
        finally:
            session.close()
            if self.on_close is not None:
                self.on_close(session)

    @staticmethod
    async def _writer(session: Session, send: Any) -> None:
        async with session.outbox_receive:
            async for message in session.outbox_receive:
                await send({"type": "websocket.send", "text": message.decode()})
        if session.too_slow:
            await send({"type": "websocket.close", "code": 1008})

    # -- JSON-RPC -----------------------------------------------------------------------------

    async def process(self, body: bytes | str, session: Session | None) -> bytes | None:
        """The answer to one body (a request or a batch); None when there is nothing to
        answer (notifications only)."""
        try:
            doc = parse_json(body)
        except RpcError as err:
            return _error(None, err.code, err.message)
        if type(doc) is list:
            if not doc:
                return _error(None, INVALID_REQUEST, "empty batch")
            if len(doc) > self.batch_limit:
                return _error(None, INVALID_REQUEST, "batch too large")
            answers: list[bytes] = []
            size = 2
            for item in doc:
                if size > MAX_RESPONSE:
                    rid = item.get("id") if isinstance(item, dict) else None
                    answers.append(_error(rid if type(rid) in (str, int, float, bool)
                                          else None, RESPONSE_TOO_LARGE, "response too large"))
                    continue
                answer = await self._one(item, session)
                if answer is not None:
                    answers.append(answer)
                    size += len(answer) + 1
            return b"[" + b",".join(answers) + b"]" if answers else None
        return await self._one(doc, session)

    async def _one(self, request: Any, session: Session | None) -> bytes | None:
        rid: Id = None
        notification = False
        try:
            if type(request) is not dict:
                raise RpcError(INVALID_REQUEST, f"invalid request: expected an object, got "
                               f"{describe(request)}")
            rid = request_id(request)
            notification = "id" not in request
            version = request.get("jsonrpc", "2.0")
            if version != "2.0":
                raise RpcError(INVALID_REQUEST, f"invalid request: 'jsonrpc' must be \"2.0\", "
                               f"got {describe(version)}")
            name = request.get("method")
            if type(name) is not str:
                raise RpcError(INVALID_REQUEST, f"invalid request: 'method' must be a string, "
                               f"got {describe(name)}")
            method = self.methods.get(name)
            if method is None:
                raise RpcError(METHOD_NOT_FOUND, f"the method {name[:100]} does not "
                               "exist/is not available")
            result = await self.handler(method, method.bind(request.get("params")), session)
        except RpcError as err:
            return None if notification else _error(rid, err.code, err.message)
        except Exception:
            logger.exception("Ethereum JSON-RPC: a handler failed")
            return None if notification else _error(
                rid, INTERNAL_ERROR, "internal error (the node's log has the details)")
        if notification:
            return None
        if isinstance(result, EthError):
            return _error(rid, result.code, result.message, result.data)
        return _response(rid, result)
