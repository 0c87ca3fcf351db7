"""The production transport: WebSockets over TCP with trio-websocket.

A node listens on ``ws://<host>:<port>/`` (127.0.0.1:55444 by default: reachable from this
machine only unless configured otherwise) and dials its peers' ``ws://`` URLs. Frames are
binary messages. trio-websocket enforces the message size limit itself
(``max_message_size``): a peer sending a larger message gets its connection closed with code
1009 before the message is buffered in full; a text message is refused as a malformed frame.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio
import trio_websocket

from .errors import ConnectionClosed, FrameError, MessageTooBig
from .frames import MAX_FRAME_BYTES
from .transport import Connection, Handler

__all__ = ["WebSocketConnection", "WebSocketTransport", "ws_url"]

#: The close code a receiver sends for a message over its limit (RFC 6455).
MESSAGE_TOO_BIG = 1009


def ws_url(address: str) -> str:
    """``host:port`` or a ``ws://`` URL, as a ``ws://`` URL."""
    return address if address.startswith(("ws://", "wss://")) else f"ws://{address}/"


def _reason(exc: trio_websocket.ConnectionClosed) -> str:
    reason = exc.reason
    if reason is None:
        return "connection lost"
    text = f"closed ({reason.code} {reason.name})"
    return f"{text}: {reason.reason}" if reason.reason else text


class WebSocketConnection:
    """A trio-websocket connection as a :class:`node.network.transport.Connection`."""

    def __init__(self, ws: trio_websocket.WebSocketConnection, remote: str) -> None:
        self.ws = ws
        self.remote = remote

    async def send(self, data: bytes) -> None:
        try:
            await self.ws.send_message(data)
        except trio_websocket.ConnectionClosed as exc:
            raise ConnectionClosed(_reason(exc)) from None

    def send_nowait(self, data: bytes) -> bool:
        """Always False: a WebSocket write waits for the socket (use :meth:`send`)."""
        return False

    async def receive(self) -> bytes:
        try:
            message = await self.ws.get_message()
        except trio_websocket.ConnectionClosed as exc:
            if exc.reason is not None and exc.reason.code == MESSAGE_TOO_BIG:
                raise MessageTooBig(_reason(exc)) from None
            raise ConnectionClosed(_reason(exc)) from None
        if isinstance(message, str):
            raise FrameError("type", "frame", "a text message; frames are binary")
        return message

    async def close(self, reason: str = "closed") -> None:
        """Close with the WebSocket closing handshake, waiting up to 2 s for the peer's
        answer; when the caller is being cancelled (the node stopping), 0.1 s: the task
        that would read the answer is being cancelled too."""
        # A close reason is at most 123 bytes of UTF-8 in a WebSocket close frame.
        text = reason.encode()[:120].decode(errors="ignore")
        wait = 0.1 if trio.current_effective_deadline() == -math.inf else 2.0
        with trio.move_on_after(wait) as scope:
            scope.shield = True
            await self.ws.aclose(code=1000, reason=text)


class WebSocketTransport:
    """Serves ``ws://host:port/`` and dials peers (:class:`node.network.transport.Transport`).
    ``port = 0`` picks a free port (the address :meth:`listen` reports names it)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 55444, *,
                 max_message_bytes: int = MAX_FRAME_BYTES, connect_timeout: float = 5.0) -> None:
        self.host = host
        self.port = port
        self.max_message_bytes = max_message_bytes
        self.connect_timeout = connect_timeout

    @asynccontextmanager
    async def connect(self, address: str) -> AsyncIterator[Connection]:
        """A connection to ``address``; a failed dial raises :class:`ConnectionClosed`
        itself, never inside an ``ExceptionGroup`` (it is raised once the connection's
        nursery is closed), so a caller's ``except ConnectionClosed`` sees it. An error
        in the caller's block leaves the same way, unwrapped."""
        url = ws_url(address)
        failure: str | None = None
        raised: Exception | None = None
        async with trio.open_nursery() as nursery:
            try:
                with trio.fail_after(self.connect_timeout):
                    ws = await trio_websocket.connect_websocket_url(
                        nursery, url, max_message_size=self.max_message_bytes)
            except (trio.TooSlowError, OSError, trio_websocket.HandshakeError,
                    trio_websocket.ConnectionTimeout, trio_websocket.ConnectionRejected,
                    trio_websocket.ConnectionClosed, ValueError) as exc:
                failure = str(exc) or type(exc).__name__
                nursery.cancel_scope.cancel()
            else:
                conn = WebSocketConnection(ws, url)
                try:
                    yield conn
                except Exception as exc:
                    raised = exc
                finally:
                    await conn.close()
                    nursery.cancel_scope.cancel()
        if failure is not None:
            raise ConnectionClosed(f"cannot connect to {url}: {failure}")
        if raised is not None:
            raise raised

    async def listen(self, handler: Handler, *,
                     task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED) -> None:
        async def serve(request: trio_websocket.WebSocketRequest) -> None:
            ws = await request.accept()
            remote = request.remote
            name = (f"{remote.address}:{remote.port}"
                    if isinstance(remote, trio_websocket.Endpoint) else str(remote))
            conn = WebSocketConnection(ws, name)
            try:
                await handler(conn)
            finally:
                await conn.close()

        async with trio.open_nursery() as nursery:
            server: trio_websocket.WebSocketServer = await nursery.start(
                lambda task_status: trio_websocket.serve_websocket(
                    serve, self.host, self.port, None,
                    max_message_size=self.max_message_bytes,
                    connect_timeout=self.connect_timeout,
                    disconnect_timeout=self.connect_timeout,
                    task_status=task_status))
            task_status.started(f"ws://{self.host}:{server.port}/")
