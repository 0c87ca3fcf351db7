"""JSON-RPC 2.0 over HTTP, as execution clients serve it: the transport under
:class:`~node.integration.engine.EngineClient` (the authenticated Engine API port) and
:class:`~node.integration.execution.ExecutionClient` (the public ``eth`` port).

One ``httpx.AsyncClient`` per client object, so connections are kept alive and reused
across calls (HTTP/1.1 keep-alive; Geth and ethereumjs both keep them open). Everything that
can go wrong in a call raises :class:`~node.types.execution.EngineError` naming the method:

* the server answered, but with a JSON-RPC error object: ``code``, ``message`` and ``data``
  are the server's;
* the server answered something that is not a JSON-RPC 2.0 response to *this* request (not
  JSON, another ``id``, no ``result``), an HTTP status other than 200, or a body larger than
  ``max_response_bytes`` (refused from ``Content-Length`` before reading, or cut off while
  streaming);
* the server could not be reached, or did not answer within ``timeout`` seconds:
  :class:`EngineUnreachable`, the one failure that says nothing about the request and
  everything about the server (it is down, restarting or hung), so callers can wait for it
  to come back instead of treating the request as refused.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any, Final, Self

import httpx
import jwt
import trio

from node.jsondepth import too_deep
from node.types.execution import INVALID_PARAMS, EngineError

__all__ = [
    "DEFAULT_MAX_RESPONSE_BYTES",
    "DEFAULT_TIMEOUT",
    "EngineUnavailable",
    "EngineUnreachable",
    "JWT_SECRET_SIZE",
    "JsonRpcClient",
]

DEFAULT_TIMEOUT: Final = 8.0
#: Engine API authentication.md: "the hex-encoded 256 bit secret key".
JWT_SECRET_SIZE: Final = 32
#: Large enough for a full block of calldata (30M gas / 16 gas per byte, hex-encoded).
DEFAULT_MAX_RESPONSE_BYTES: Final = 16 * 1024 * 1024


class EngineUnavailable(EngineError):
    """The engine cannot serve requests for now — it is away, or still being given the
    blocks it lacks — and will again: callers wait for it rather than treat the request as
    refused. Block production pauses on it."""


class EngineUnreachable(EngineUnavailable):
    """The server could not be reached (connection refused or reset, DNS, TLS) or did not
    answer within the timeout: nothing is known about the request, the server is away."""

    def __reduce__(self) -> Any:
        return (_rebuild_unreachable, (self.message, self.method))


def _rebuild_unreachable(message: str, method: str) -> EngineUnreachable:
    return EngineUnreachable(None, message, method)


def _snippet(raw: bytes) -> str:
    text = raw[:200].decode("utf-8", "replace")
    return text + ("..." if len(raw) > 200 else "")


class JsonRpcClient:
    """JSON-RPC 2.0 calls to one URL over a kept-alive ``httpx.AsyncClient``.

    ``what`` names the server in errors ("engine", "execution client"). With a
    ``jwt_secret`` every request carries a fresh JWT (``clock`` gives its ``iat``), as the
    authenticated Engine API port requires. ``transport`` replaces httpx's network transport (tests
    pass ``httpx.MockTransport``). Use as ``async with`` or call :meth:`aclose`.
    """

    what = "server"

    def __init__(
        self,
        url: str,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        jwt_secret: bytes | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        name = type(self).__name__
        if jwt_secret is not None and (type(jwt_secret) is not bytes
                                       or len(jwt_secret) != JWT_SECRET_SIZE):
            raise ValueError(
                f"{name} jwt_secret must be {JWT_SECRET_SIZE} bytes (a 256-bit secret), "
                f"got {len(jwt_secret) if isinstance(jwt_secret, bytes) else jwt_secret!r}"
            )
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise ValueError(f"{name} url must be an http(s) URL, got {url!r}")
        if not timeout > 0:
            raise ValueError(f"{name} timeout must be positive, got {timeout!r}")
        if type(max_response_bytes) is not int or max_response_bytes <= 0:
            raise ValueError(
                f"{name} max_response_bytes must be a positive int, got {max_response_bytes!r}"
            )
        self.url = url
        self.timeout = float(timeout)
        self.max_response_bytes = max_response_bytes
        self._secret = jwt_secret
        self._clock = clock
        self._ids = itertools.count(1)
        self._http = httpx.AsyncClient(
            transport=transport, timeout=httpx.Timeout(self.timeout), follow_redirects=False
        )

    async def aclose(self) -> None:
        """Close the HTTP connections."""
        await trio.lowlevel.checkpoint()
        await self._http.aclose()

    async def __aenter__(self) -> Self:
        await trio.lowlevel.checkpoint()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.aclose()

    def _token(self) -> str:
        """A fresh JWT for one request (Engine API authentication.md, "JWT Claims"): HS256,
        the claim ``iat`` = now."""
        assert self._secret is not None
        return jwt.encode({"iat": int(self._clock())}, self._secret, algorithm="HS256")

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self._secret is not None:
            headers["Authorization"] = f"Bearer {self._token()}"
        return headers

    async def call(self, method: str, params: list[Any]) -> Any:
        """One JSON-RPC 2.0 call; returns the ``result`` member or raises
        :class:`~node.types.execution.EngineError` (see the module docstring)."""
        request_id = next(self._ids)
        try:
            body = json.dumps(
                {"jsonrpc": "2.0", "id": request_id, "method": method, "params": params},
                separators=(",", ":"),
                allow_nan=False,
            ).encode()
        except (TypeError, ValueError) as exc:
            raise EngineError(
                INVALID_PARAMS, f"the params cannot be sent as JSON: {exc}", method
            ) from exc
        raw, status = await self._post(body, method)
        return self._unwrap(raw, status, request_id, method)

    async def _post(self, body: bytes, method: str) -> tuple[bytes, int]:
        """POST ``body`` (one request or a batch) and return the answer's bytes and HTTP
        status, whatever the status; transport failures, timeouts and oversized bodies raise
        as the module docstring says. ``method`` names the call in errors."""
        headers = self._headers()
        try:
            with trio.fail_after(self.timeout):
                async with self._http.stream(
                    "POST", self.url, content=body, headers=headers
                ) as response:
                    raw = await self._read_body(response, method)
                    status = response.status_code
        except trio.TooSlowError:
            raise EngineUnreachable(None, f"no answer within {self.timeout:g} s",
                                    method) from None
        except httpx.TimeoutException as exc:
            raise EngineUnreachable(None, f"no answer within {self.timeout:g} s",
                                    method) from exc
        except httpx.InvalidURL as exc:
            raise EngineError(
                None, f"cannot reach the {self.what} at {self.url}: {exc!r}", method
            ) from exc
        except httpx.HTTPError as exc:
            raise EngineUnreachable(
                None, f"cannot reach the {self.what} at {self.url}: {exc!r}", method
            ) from exc
        return raw, status

    async def _read_body(self, response: httpx.Response, method: str) -> bytes:
        limit = self.max_response_bytes
        length = response.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            raise EngineError(
                None,
                f"response of {length} bytes exceeds the limit of {limit} bytes",
                method,
                http_status=response.status_code,
            )
        chunks: list[bytes] = []
        total = 0
        async for chunk in response.aiter_bytes():
            total += len(chunk)
            if total > limit:
                raise EngineError(
                    None,
                    f"response exceeds the limit of {limit} bytes",
                    method,
                    http_status=response.status_code,
                )
            chunks.append(chunk)
        return b"".join(chunks)

    def _unwrap(self, raw: bytes, status: int, request_id: int, method: str) -> Any:
        http_status = None if status == 200 else status
        try:
            text = raw.decode("utf-8")
            if too_deep(text):  # before the parser: see node.jsondepth
                raise ValueError("nested too deeply")
            doc = json.loads(text)
        except (ValueError, RecursionError):
            if http_status is not None:
                raise EngineError(
                    None, f"HTTP error: {_snippet(raw)!r}", method, http_status=status
                ) from None
            raise EngineError(
                None, f"malformed response: not JSON: {_snippet(raw)!r}", method
            ) from None
        if isinstance(doc, dict) and isinstance(doc.get("error"), dict):
            error = doc["error"]
            code = error.get("code")
            message = error.get("message")
            if type(code) is int and isinstance(message, str):
                raise EngineError(
                    code, message, method, data=error.get("data"), http_status=http_status
                )
        if http_status is not None:
            raise EngineError(None, f"HTTP error: {_snippet(raw)!r}", method, http_status=status)
        if not isinstance(doc, dict):
            raise EngineError(
                None, f"malformed response: expected a JSON-RPC object, got {doc!r:.100}", method
            )
        if doc.get("jsonrpc") != "2.0":
            raise EngineError(
                None,
                f"malformed response: 'jsonrpc' must be \"2.0\", got {doc.get('jsonrpc')!r:.40}",
                method,
            )
        if doc.get("id") != request_id or type(doc.get("id")) is not int:
            raise EngineError(
                None,
                f"malformed response: id {doc.get('id')!r:.40} does not match the request's "
                f"{request_id}",
                method,
            )
        if "error" in doc:
            raise EngineError(
                None, f"malformed response: bad error object {doc['error']!r:.200}", method
            )
        if "result" not in doc:
            raise EngineError(None, "malformed response: neither 'result' nor 'error'", method)
        return doc["result"]
