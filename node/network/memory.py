"""An in-memory transport: many nodes in one process, in virtual time, with faults.

:class:`MemoryNetwork` connects the :class:`MemoryTransport` of each node (named by a string,
which is also its address). Messages take each link's latency (plus jitter) to arrive and may
be lost or reordered; groups of nodes may be partitioned from each other and healed. Every
random choice is drawn from the :class:`random.Random` the network is given, and timing uses
Trio's clock only, so under ``otp.testing.simulate`` (or any ``MockClock``) a seed replays
exactly. Nothing here starts a thread or a background task: a message waits in its
receiver's queue, ordered by arrival time, until the receiver reads it.

The semantics follow a WebSocket over TCP closely enough for the network layer:

* messages on one connection arrive in order, unless ``reorder`` holds one back;
* ``loss`` drops a message silently (the network layer's timeouts notice);
* during a partition, messages across it are dropped and connection attempts across it fail
  after a round trip; connections already open stay open, but silent (ping timeouts close
  them); :meth:`MemoryNetwork.heal` ends it;
* a message over ``max_message_bytes`` closes the connection at the receiver, as
  trio-websocket does (code 1009);
* ``close`` reaches the other end after the messages already sent.
"""

from __future__ import annotations

import heapq
import math
import random
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from typing import Final

import attrs
import trio

from .errors import ConnectionClosed, MessageTooBig
from .frames import MAX_FRAME_BYTES
from .transport import Connection, Handler

__all__ = ["LinkConditions", "MemoryConnection", "MemoryNetwork", "MemoryTransport"]

_CLOSE: Final = object()


def _probability(_inst: object, attribute: attrs.Attribute[float], value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{attribute.name} must be in 0..1, not {value}")


def _seconds(_inst: object, attribute: attrs.Attribute[float], value: float) -> None:
    if not (value >= 0.0 and math.isfinite(value)):
        raise ValueError(f"{attribute.name} must be finite seconds >= 0, not {value}")


@attrs.frozen
class LinkConditions:
    """How one direction of a link behaves: each message takes ``latency`` plus up to
    ``jitter`` seconds, is lost with probability ``loss``, and held back an extra
    ``reorder_delay`` (arriving after later ones) with probability ``reorder``."""

    latency: float = attrs.field(default=0.005, validator=_seconds)
    jitter: float = attrs.field(default=0.0, validator=_seconds)
    loss: float = attrs.field(default=0.0, validator=_probability)
    reorder: float = attrs.field(default=0.0, validator=_probability)
    reorder_delay: float = attrs.field(default=0.05, validator=_seconds)


@attrs.define
class NetworkStats:
    """Counters of what the network did with messages."""

    delivered: int = 0
    lost: int = 0
    partitioned: int = 0
    reordered: int = 0
    refused_connects: int = 0


class MemoryConnection:
    """One end of an in-memory connection (:class:`node.network.transport.Connection`)."""

    def __init__(self, network: MemoryNetwork, local: str, remote: str) -> None:
        self.network = network
        self.local = local
        self.remote = remote
        self.peer: MemoryConnection | None = None
        self._queue: list[tuple[float, int, object]] = []
        self._last_arrival = -math.inf
        #: The receiver's wait, while it waits: its deadline is the earliest arrival queued,
        #: moved earlier by a push that arrives sooner, cancelled by a close.
        self._waiting: trio.CancelScope | None = None
        self._closed: str | None = None  # set when this end is closed (no more sends)
        self._eof: str | None = None  # set when the other end's close has arrived

    def _push(self, at: float, item: object) -> None:
        heapq.heappush(self._queue, (at, self.network._next_seq(), item))
        waiting = self._waiting
        if waiting is not None and at < waiting.deadline:
            # The receiver wakes when this arrives, not now (no step of the scheduler to
            # find that nothing is due yet).
            waiting.deadline = at

    async def send(self, data: bytes) -> None:
        self.send_nowait(data)
        await trio.lowlevel.checkpoint()

    def send_nowait(self, data: bytes) -> bool:
        """Queue ``data`` for the other end (it never waits: always True)."""
        if self._closed is not None:
            raise ConnectionClosed(self._closed)
        peer = self.peer
        assert peer is not None
        arrival = self.network._arrival(self.local, self.remote, self)
        if arrival is not None:
            peer._push(arrival, bytes(data))
        return True

    async def receive(self) -> bytes:
        # A checkpoint, as Trio's channels are: one that finds a message waiting yields once
        # before returning it; one that waits has yielded (and seen cancellation) in the
        # wait, and returns what woke it without yielding again. The wait is one cancel
        # scope whose deadline is the earliest arrival queued: a push that arrives sooner
        # moves it, a close cancels it, so the receiver runs once per message that arrives
        # and never to find that nothing is due yet.
        waited = False
        while True:
            if self._closed is not None:
                raise ConnectionClosed(self._closed)
            queue = self._queue
            if queue and queue[0][0] <= trio.current_time():
                _at, _seq, item = heapq.heappop(queue)
                if item is _CLOSE:
                    self._eof = self._eof or "closed by the peer"
                    self._closed = self._eof
                    raise ConnectionClosed(self._eof)
                assert isinstance(item, bytes)
                limit = self.network.max_message_bytes
                if len(item) > limit:
                    reason = f"message too big ({len(item)} bytes, limit {limit})"
                    await self.close(reason)
                    raise MessageTooBig(reason)
                self.network.stats.delivered += 1
                if not waited:
                    await trio.lowlevel.checkpoint()
                return item
            waited = True
            with trio.CancelScope(deadline=queue[0][0] if queue else math.inf) as waiting:
                self._waiting = waiting
                try:
                    await trio.sleep_forever()
                finally:
                    self._waiting = None

    async def close(self, reason: str = "closed") -> None:
        if self._closed is None:
            self._closed = reason
            if self._waiting is not None:
                self._waiting.cancel()
            peer = self.peer
            if peer is not None and peer._closed is None:
                # The close travels like a message (after what was sent), but is never lost.
                at = max(trio.current_time() + self.network.link(self.local, self.remote).latency,
                         self._last_arrival)
                peer._eof = f"closed by the peer: {reason}"
                peer._push(at, _CLOSE)
        await trio.lowlevel.checkpoint()


class MemoryNetwork:
    """The nodes of one simulated network and the links between them (see the module
    docstring). ``rng`` draws every loss, jitter and reordering: a seeded generator replays."""

    def __init__(self, rng: random.Random, *, default: LinkConditions | None = None,
                 max_message_bytes: int = MAX_FRAME_BYTES) -> None:
        self.rng = rng
        self.default = default or LinkConditions()
        self.max_message_bytes = max_message_bytes
        self.links: dict[tuple[str, str], LinkConditions] = {}
        self.groups: list[frozenset[str]] = []
        self.listeners: dict[str, trio.MemorySendChannel[MemoryConnection]] = {}
        self.connections: list[MemoryConnection] = []
        self.stats = NetworkStats()
        self._seq = 0

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def transport(self, name: str) -> MemoryTransport:
        """The transport of node ``name`` (its address is its name)."""
        return MemoryTransport(self, name)

    # -- faults ----------------------------------------------------------------------------------

    def link(self, a: str, b: str) -> LinkConditions:
        """The conditions of messages from ``a`` to ``b``."""
        return self.links.get((a, b), self.default)

    def set_link(self, a: str, b: str, conditions: LinkConditions, *,
                 both_ways: bool = True) -> None:
        self.links[(a, b)] = conditions
        if both_ways:
            self.links[(b, a)] = conditions

    def partition(self, *groups: Iterable[str]) -> None:
        """Cut the network into ``groups``: nodes in different groups cannot reach each other
        (a node named in no group stays reachable from all) until :meth:`heal`."""
        self.groups = [frozenset(g) for g in groups]

    def heal(self) -> None:
        self.groups = []

    def reachable(self, a: str, b: str) -> bool:
        ga = next((g for g in self.groups if a in g), None)
        gb = next((g for g in self.groups if b in g), None)
        return ga is None or gb is None or ga == gb

    async def sever(self, a: str, b: str, reason: str = "link severed") -> None:
        """Close every open connection between ``a`` and ``b`` now (both ends)."""
        for conn in list(self.connections):
            if {conn.local, conn.remote} == {a, b}:
                await conn.close(reason)

    # -- delivery --------------------------------------------------------------------------------

    def _arrival(self, src: str, dst: str, conn: MemoryConnection) -> float | None:
        """When a message sent now from ``src`` to ``dst`` on ``conn`` arrives, or None if it
        never does. Draws the same number of random values for every message, so one fault
        changes nothing else in a seed's sequence."""
        cond = self.link(src, dst)
        lost, jitter, reorder = self.rng.random(), self.rng.random(), self.rng.random()
        if not self.reachable(src, dst):
            self.stats.partitioned += 1
            return None
        if lost < cond.loss:
            self.stats.lost += 1
            return None
        at = trio.current_time() + cond.latency + jitter * cond.jitter
        if reorder < cond.reorder:
            self.stats.reordered += 1
            return at + cond.reorder_delay
        at = max(at, conn._last_arrival)
        conn._last_arrival = at
        return at

    async def _connect(self, src: str, dst: str) -> MemoryConnection:
        rtt = self.link(src, dst).latency + self.link(dst, src).latency
        await trio.sleep(rtt)
        listener = self.listeners.get(dst)
        if listener is None or not self.reachable(src, dst):
            self.stats.refused_connects += 1
            raise ConnectionClosed(f"cannot reach {dst}: "
                                   f"{'no listener' if listener is None else 'partitioned'}")
        client = MemoryConnection(self, src, dst)
        server = MemoryConnection(self, dst, src)
        client.peer, server.peer = server, client
        try:
            listener.send_nowait(server)
        except (trio.BrokenResourceError, trio.ClosedResourceError, trio.WouldBlock):
            self.stats.refused_connects += 1
            raise ConnectionClosed(f"cannot reach {dst}: not listening") from None
        self.connections += [client, server]
        return client

    def _forget(self, conn: MemoryConnection) -> None:
        if conn in self.connections:
            self.connections.remove(conn)


class MemoryTransport:
    """Node ``name``'s side of a :class:`MemoryNetwork`
    (:class:`node.network.transport.Transport`)."""

    def __init__(self, network: MemoryNetwork, name: str) -> None:
        self.network = network
        self.name = name

    @asynccontextmanager
    async def connect(self, address: str) -> AsyncIterator[Connection]:
        conn = await self.network._connect(self.name, address)
        try:
            yield conn
        finally:
            with trio.CancelScope(shield=True):
                await conn.close()
            self.network._forget(conn)

    async def listen(self, handler: Handler, *,
                     task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED) -> None:
        net = self.network
        if self.name in net.listeners:
            raise OSError(f"{self.name} is already listening")
        send, receive = trio.open_memory_channel[MemoryConnection](math.inf)
        net.listeners[self.name] = send
        try:
            async with trio.open_nursery() as nursery:
                task_status.started(self.name)
                async with receive:
                    async for conn in receive:
                        nursery.start_soon(self._serve, handler, conn)
        finally:
            if net.listeners.get(self.name) is send:
                del net.listeners[self.name]
            send.close()

    async def _serve(self, handler: Handler, conn: MemoryConnection) -> None:
        try:
            await handler(conn)
        finally:
            with trio.CancelScope(shield=True):
                await conn.close()
            self.network._forget(conn)
