"""The node's JSON-RPC edge: JSON-RPC 1.0 style over HTTP POST, as the original serves miners
and users, on an ASGI app served by hypercorn's Trio worker.

A request is ``{"method": str, "params": [...], "id": ...}`` (``params`` may be omitted or
null); the answer is ``{"result": ..., "error": null, "id": ...}`` or ``{"result": null,
"error": {"code": int, "message": str}, "id": ...}``.

Everything a client sends is hostile until checked, and checked here, where it enters:

* **The body** must be at most ``max_body`` bytes (a larger ``Content-Length`` is refused
  before the body is read; HTTP 413), UTF-8 (no other encoding is guessed), and strict JSON:
  ``NaN``, ``Infinity`` and ``-Infinity`` are not JSON, a number outside a finite double
  (``1e400``) or an integer of more than :data:`MAX_INT_DIGITS` digits is refused, and a body
  nested more than 256 deep (:mod:`node.jsondepth`, checked before parsing: the parser's own
  limit is the interpreter's recursion limit, which some libraries raise) is a parse error
  like any other. All of
  these are answered with ``-32700`` and ``"id": null``: the id of a request we could not
  read is unknown.
* **The id** is echoed only if it is null, a string, a number or a boolean (a number is finite
  by the rule above). An array or object id is refused with ``-32600`` and ``"id": null``:
  JSON-RPC 2.0 allows only scalars, and nothing good comes of echoing a structure back.
* **The params** of each method are declared (:class:`Method`, :class:`Param`) and every value
  is checked by kind: heights are integers in ``0..2**64-1`` (a larger one would not fit the
  storage keys), hashes are exactly 32 bytes of hex, addresses exactly 20. A wrong value gets
  ``-32602`` with a message naming the method, the position, what was expected and what came.
  Methods that the original serves with a bare parameter (``"params": 1``) accept it as well
  as a list.
* **Every response is strict JSON** (``allow_nan=False``, ASCII-escaped so that lone
  surrogates in a client's id stay valid), and no request can make the server answer with an
  empty body: a handler's unexpected exception is logged and answered ``-32603`` with HTTP 500.

Handlers return their result already encoded as JSON bytes (:func:`encode`), so that callers
can cache the bytes of immutable replies and answer from the cache without re-encoding.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import attrs
import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve

from .jsondepth import too_deep

logger = logging.getLogger("alys.rpc")

# JSON-RPC error codes
PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
CHAIN_SYNCING = -32606  # the original's "Chain is syncing" for createauxblock without work

#: The largest height a client may ask for: heights are u64 in storage keys and on the wire.
MAX_HEIGHT = 2**64 - 1
#: Integer literals longer than this are refused while parsing (no legitimate request needs
#: one; Python would otherwise refuse past 4,300 digits with a message about its own limits).
MAX_INT_DIGITS = 100
#: The default body limit (the configuration's ``rpc.max_body_bytes``).
DEFAULT_MAX_BODY = 1 << 20

#: A request id we echo: JSON scalars only (see the module docs).
Id = str | int | float | bool | None


@attrs.frozen
class RpcError(Exception):
    """An error answer: JSON-RPC ``code`` and ``message``, and the HTTP status to send."""

    code: int
    message: str
    http_status: int = 200


# -- describing values in error messages ----------------------------------------------------------


def describe(value: Any) -> str:
    """A short description of a client's value for an error message: bounded in length, and
    never a recursive repr (a nested value is named by its type only)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"the boolean {'true' if value else 'false'}"
    if isinstance(value, int):
        if value.bit_length() > 128:
            return f"an integer of {value.bit_length()} bits"
        return f"the integer {value}"
    if isinstance(value, float):
        return f"the number {value!r}"
    if isinstance(value, str):
        if len(value) > 40:
            return f"a string of {len(value)} characters ({value[:24]!r}...)"
        return f"the string {value!r}"
    if isinstance(value, list):
        return f"an array of {len(value)} item(s)"
    if isinstance(value, dict):
        return "an object"
    return f"a {type(value).__name__}"


# -- parameter kinds ------------------------------------------------------------------------------

_HEX_DIGITS = re.compile(r"[0-9a-fA-F]*")


def _hex_digits(value: Any, where: str, what: str) -> str:
    if not isinstance(value, str):
        raise RpcError(INVALID_PARAMS, f"{where} must be {what}, got {describe(value)}")
    text = value[2:] if value[:2] in ("0x", "0X") else value
    if len(text) % 2 or _HEX_DIGITS.fullmatch(text) is None:
        raise RpcError(INVALID_PARAMS, f"{where} must be {what}, got {describe(value)}, "
                       "which is not an even number of hex digits")
    return text


def u64(value: Any, where: str) -> int:
    """An integer in ``0..2**64-1`` (not a boolean, not a float, not a string)."""
    if type(value) is not int or not 0 <= value <= MAX_HEIGHT:
        raise RpcError(INVALID_PARAMS, f"{where} must be an integer in 0..2^64-1, "
                       f"got {describe(value)}")
    return value


def hash32(value: Any, where: str) -> bytes:
    """Exactly 32 bytes of hex, with or without ``0x``."""
    what = "a 32-byte hash (64 hex digits)"
    text = _hex_digits(value, where, what)
    if len(text) != 64:
        raise RpcError(INVALID_PARAMS, f"{where} must be {what}, got {len(text) // 2} bytes")
    return bytes.fromhex(text)


def address(value: Any, where: str) -> bytes:
    """Exactly 20 bytes of hex (an EVM address), with or without ``0x``."""
    what = "a 20-byte EVM address (40 hex digits)"
    text = _hex_digits(value, where, what)
    if len(text) != 40:
        raise RpcError(INVALID_PARAMS, f"{where} must be {what}, got {len(text) // 2} bytes")
    return bytes.fromhex(text)


def hex_bytes(value: Any, where: str) -> bytes:
    """Any number of bytes as hex (bounded by the body limit)."""
    return bytes.fromhex(_hex_digits(value, where, "a hex string"))


Kind = Callable[[Any, str], Any]


@attrs.frozen
class Param:
    """One positional parameter: its name (for messages), its kind (a checker that converts
    the value or raises :class:`RpcError`), and whether it may be left out (or null)."""

    name: str
    kind: Kind
    optional: bool = False


@attrs.frozen
class Method:
    """A method's parameters. ``bare``: the original also takes the single parameter bare,
    not in a list (``"params": 1``, ``"params": "<hex>"``)."""

    name: str
    params: tuple[Param, ...] = ()
    bare: bool = False
    doc: str = ""

    def bind(self, params: Any) -> list[Any]:
        """The checked, converted arguments for the request's ``params``."""
        if params is None:
            values: list[Any] = []
        elif type(params) is list:
            values = params
        elif self.bare and not isinstance(params, dict):
            values = [params]
        else:
            shape = "an array, or its one parameter bare" if self.bare else "an array"
            raise RpcError(INVALID_PARAMS, f"{self.name}: 'params' must be {shape}, got "
                           f"{describe(params)}")
        if len(values) > len(self.params):
            raise RpcError(INVALID_PARAMS, f"{self.name} takes at most {len(self.params)} "
                           f"parameter(s), got {len(values)}")
        args: list[Any] = []
        for i, param in enumerate(self.params):
            value = values[i] if i < len(values) else None
            if value is None:
                if param.optional:
                    args.append(None)
                    continue
                raise RpcError(INVALID_PARAMS, f"{self.name}: parameter {i} ({param.name}) is "
                               "missing")
            args.append(param.kind(value, f"{self.name} parameter {i} ({param.name})"))
        return args


# -- parsing and encoding -------------------------------------------------------------------------


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"the number {text[:40]} is out of range")
    return value


def _bounded_int(text: str) -> int:
    if len(text) <= MAX_INT_DIGITS:
        return int(text)
    digits = len(text) - text.startswith("-")
    if digits > MAX_INT_DIGITS:
        raise ValueError(f"an integer of {digits} digits (at most {MAX_INT_DIGITS})")
    return int(text)


_DECODER = json.JSONDecoder(
    parse_float=_finite_float, parse_int=_bounded_int, parse_constant=_no_constant
)



def parse_json(body: bytes | str) -> Any:
    """A body as strict JSON (see the module docs), or :class:`RpcError` with
    ``-32700``."""
    if isinstance(body, str):
        text = body
    else:
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise RpcError(PARSE_ERROR, f"the body is not UTF-8 (invalid byte at offset "
                           f"{exc.start})") from None
    if too_deep(text):  # before the parser: see node.jsondepth
        raise RpcError(PARSE_ERROR, "the body is not JSON we accept: nested too deeply")
    try:
        return _DECODER.decode(text)
    except RecursionError:
        raise RpcError(PARSE_ERROR, "the body is not JSON we accept: nested too deeply") from None
    except ValueError as exc:
        raise RpcError(PARSE_ERROR, f"the body is not JSON: {exc}") from None


def parse_body(body: bytes) -> dict[str, Any]:
    """The request object of a body, or :class:`RpcError` (parse error, invalid request)."""
    request = parse_json(body)
    if type(request) is not dict:
        what = "a batch (an array)" if type(request) is list else describe(request)
        raise RpcError(INVALID_REQUEST, f"the request must be a JSON object, got {what}")
    return request


def request_id(request: Mapping[str, Any]) -> Id:
    """The request's id if it may be echoed (see the module docs), else :class:`RpcError`."""
    value = request.get("id")
    if value is None or type(value) in (str, int, float, bool):
        return value
    raise RpcError(INVALID_REQUEST, f"'id' must be a string, a number or null, got "
                   f"{describe(value)}")


def encode(value: Any) -> bytes:
    """``value`` as strict, compact JSON bytes (``allow_nan=False``, ASCII)."""
    return json.dumps(value, separators=(",", ":"), allow_nan=False).encode()


def _encode_id(value: Id) -> bytes:
    if type(value) is int:
        return str(value).encode()
    return encode(value)


def result_response(result: bytes, rid: Id) -> bytes:
    """The response for a result already encoded as JSON."""
    return b'{"result":' + result + b',"error":null,"id":' + _encode_id(rid) + b"}"


def error_response(error: RpcError, rid: Id) -> bytes:
    return encode({"result": None, "error": {"code": error.code, "message": error.message},
                   "id": rid})


#: The answer when even building an answer failed: fixed bytes that cannot fail.
_LAST_RESORT = error_response(RpcError(INTERNAL_ERROR, "internal error"), None)

#: ``handler(method, args) -> result as JSON bytes``; raises :class:`RpcError` for an error.
Handler = Callable[[Method, list[Any]], Awaitable[bytes]]


async def refuse_websocket(scope: dict[str, Any], receive: Any, send: Any) -> bool:
    """Refuse a WebSocket handshake (HTTP 403) if ``scope`` is one; True if it was. Our HTTP
    servers speak plain HTTP: an unanswered WebSocket scope would become an empty HTTP 500
    from hypercorn."""
    if scope["type"] != "websocket":
        return False
    await receive()
    await send({"type": "websocket.close", "code": 1008})
    return True


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


def _headers(length: int) -> list[tuple[bytes, bytes]]:
    return [(b"content-type", b"application/json"), (b"content-length", b"%d" % length)]


class RpcApp:
    """The ASGI application: POST (any path) with a JSON-RPC body. ``methods`` declares the
    methods and their parameters; ``handler`` answers a request whose parameters passed."""

    def __init__(self, methods: Mapping[str, Method], handler: Handler, *,
                 max_body: int = DEFAULT_MAX_BODY) -> None:
        self.methods = methods
        self.handler = handler
        self.max_body = max_body

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if await refuse_websocket(scope, receive, send):
            return
        if scope["type"] != "http":
            await lifespan(scope, receive, send)
            return
        try:
            if scope["method"] != "POST":
                status, payload = 405, error_response(RpcError(
                    INVALID_REQUEST, "JSON-RPC requests are HTTP POST"), None)
            else:
                body = await self._body(scope, receive)
                if body is None:
                    status, payload = 413, error_response(RpcError(
                        INVALID_REQUEST, f"the request body is over {self.max_body} bytes"), None)
                else:
                    status, payload = await self.answer(body)
        except _Disconnected:
            return
        except Exception:
            logger.exception("JSON-RPC: answering a request failed")
            status, payload = 500, _LAST_RESORT
        headers = _headers(len(payload))
        if status == 413:
            # The rest of the body was never read: this connection cannot carry another request.
            headers.append((b"connection", b"close"))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": payload})

    async def _body(self, scope: dict[str, Any], receive: Any) -> bytes | None:
        return await read_body(scope, receive, self.max_body)

    async def answer(self, body: bytes) -> tuple[int, bytes]:
        """The HTTP status and response body for one request body. Not a checkpoint when the
        handler answers without waiting (a cached reply): the ASGI send that follows is one,
        and a yield per request here would cost every request a trip through the scheduler."""
        rid: Id = None
        try:
            request = parse_body(body)
            rid = request_id(request)
            name = request.get("method")
            if type(name) is not str:
                raise RpcError(INVALID_REQUEST, f"'method' must be a string, got "
                               f"{describe(name)}")
            method = self.methods.get(name)
            if method is None:
                raise RpcError(METHOD_NOT_FOUND, f"unknown method {describe(name)}")
            result = await self.handler(method, method.bind(request.get("params")))
        except RpcError as err:
            return err.http_status, error_response(err, rid)
        except Exception:
            logger.exception("JSON-RPC: a handler failed")
            return 500, error_response(RpcError(INTERNAL_ERROR, "internal error (the node's "
                                                "log has the details)"), rid)
        return 200, result_response(result, rid)


class _Disconnected(Exception):
    """The client went away before its body was complete: there is nobody to answer."""


Disconnected = _Disconnected


async def read_body(scope: dict[str, Any], receive: Any, max_body: int) -> bytes | None:
    """An ASGI HTTP request's whole body, or None if it is over ``max_body`` (by its declared
    length, before reading more of it, or while reading it). A client gone mid-body raises
    :class:`Disconnected`."""
    message = await receive()
    if message["type"] != "http.request":
        raise _Disconnected
    body: bytes = message.get("body", b"")
    if not message.get("more_body", False):
        return body if len(body) <= max_body else None
    # More is coming (a body that did not arrive whole): refuse it by its declared length
    # before reading the rest.
    for name, value in scope["headers"]:
        if name == b"content-length":
            if not value.isdigit() or len(value) > 19 or int(value) > max_body:
                return None
            break
    parts = bytearray(body)
    while True:
        message = await receive()
        if message["type"] != "http.request":
            raise _Disconnected
        parts += message.get("body", b"")
        if len(parts) > max_body:
            return None
        if not message.get("more_body", False):
            return bytes(parts)


# -- serving --------------------------------------------------------------------------------------


class _NoBanner(logging.Filter):
    """Drops hypercorn's "Running on ... (CTRL + C to quit)": the actor that owns the server
    logs its own start line, which says which server it is."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Running on ")


def http_logger(name: str) -> logging.Logger:
    """The logger of one HTTP server (``alys.http.<name>``): hypercorn's errors, no banner."""
    log = logging.getLogger(f"alys.http.{name}")
    if not any(isinstance(f, _NoBanner) for f in log.filters):
        log.addFilter(_NoBanner())
    return log


def hypercorn_config(host: str, port: int, name: str = "http") -> HypercornConfig:
    config = HypercornConfig()
    config.bind = [f"{host}:{port}"]
    config.accesslog = None
    config.errorlog = http_logger(name)
    config.h11_max_incomplete_size = 64 * 1024
    config.graceful_timeout = 1.0
    return config


async def serve_app(
    app: Any, host: str, port: int, *, name: str = "http",
    task_status: trio.TaskStatus[tuple[str, int]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve an ASGI app on ``host:port`` (port 0 picks one); reports the bound address.
    ``name`` names the server's logger (``alys.http.<name>``)."""

    class _Status:
        def started(self, binds: list[str] | None = None) -> None:
            address = (binds or [f"http://{host}:{port}"])[0]
            hostport = address.split("://", 1)[-1]
            bound_host, _, bound_port = hostport.rpartition(":")
            task_status.started((bound_host.strip("[]"), int(bound_port)))

    status: Any = _Status()
    await serve(app, hypercorn_config(host, port, name), task_status=status)
