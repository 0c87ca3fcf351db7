"""The transport interface: how a node reaches its peers, whatever carries the bytes.

Two implementations: :class:`node.network.websocket.WebSocketTransport` (production, real
sockets) and :class:`node.network.memory.MemoryTransport` (one process, virtual time, faults
under a seeded generator's control, for ``otp.testing.simulate``). The network actor sees
only this module's protocols.

A *connection* carries whole messages (one frame each) both ways:

* ``send(data)`` queues one message; it raises :class:`ConnectionClosed` once the connection
  is closed, and :class:`FrameTooLarge` for a message over the transport's limit (the
  connection stays usable: nothing was sent).
* ``send_nowait(data)`` queues one message at once if the transport can do so without
  waiting, and says whether it did; False means nothing was sent and ``send`` must be used
  (a WebSocket always answers False: its writes wait for the socket). It raises as
  ``send`` does.
* ``receive()`` waits for the next message; :class:`ConnectionClosed` once the connection is
  closed and nothing more will come. A received message over the limit closes the
  connection (the transport never hands it over).
* ``close(reason)`` closes it; idempotent.

``connect(address)`` is an async context manager yielding a connection, closed when the
block ends; it raises :class:`ConnectionClosed` when the address cannot be reached.
``listen(handler, task_status=...)`` serves inbound connections until cancelled: it calls
``task_status.started(address)`` with the address it is reachable at, then runs
``handler(connection)`` in a task of its own for each connection (closed when the handler
returns). The handler must not raise: an exception from it ends the listener.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import Protocol

import trio

from .errors import ConnectionClosed, FrameTooLarge

__all__ = ["Connection", "ConnectionClosed", "FrameTooLarge", "Handler", "Transport"]


class Connection(Protocol):
    """One connection to a peer (see the module docstring)."""

    #: Where the other end is (``ws://127.0.0.1:55444``, ``127.0.0.1:50312``, ``mem:b``).
    remote: str

    async def send(self, data: bytes) -> None: ...

    def send_nowait(self, data: bytes) -> bool: ...

    async def receive(self) -> bytes: ...

    async def close(self, reason: str = "closed") -> None: ...


Handler = Callable[[Connection], Awaitable[None]]


class Transport(Protocol):
    """Dials and serves connections (see the module docstring)."""

    def connect(self, address: str) -> AbstractAsyncContextManager[Connection]: ...

    async def listen(self, handler: Handler, *,
                     task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED) -> None: ...
