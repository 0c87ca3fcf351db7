"""``eth_subscribe`` over WebSocket (trio-websocket), reconnecting when the connection drops.

A :class:`Subscription` runs as a task (``nursery.start_soon(sub.run, send_channel)``, or
``otp.start_task`` in an actor): it connects to the execution client's WebSocket JSON-RPC
(Geth ``--ws``, ethereumjs ``--ws``), sends ``eth_subscribe(kind, *params)``, and sends each
notification's ``result``, parsed by ``parse``, into the channel. Cancelling the task ends
the subscription.

* **Reconnecting.** A connection that cannot be made, fails, is closed, or stays silent
  past ``idle_timeout`` is made again after a backoff (``initial`` seconds, doubling up to
  ``max_delay``; reset once a subscription is confirmed), and the subscription is made again
  on it. ``reconnects`` counts the connections lost. Notifications sent while disconnected
  are lost: a consumer of ``newHeads`` that needs every block fills a gap by number with
  :class:`~node.integration.execution.ExecutionClient`.
* **Refusals** are not retried: an ``eth_subscribe`` answered with an error object (an
  unknown subscription kind, a client without WebSocket subscriptions) raises
  :class:`~node.types.execution.EngineError` from :meth:`Subscription.run`.
* **Hostile input.** Messages are limited to ``max_message_bytes`` (the connection is
  dropped and made again past it) and nested at most 256 deep (:mod:`node.jsondepth`); a
  notification that is not JSON-RPC, names another subscription, or whose result ``parse``
  refuses is dropped with a warning and counted in ``dropped``: one bad message does not end
  the stream.
"""

from __future__ import annotations

import itertools
import json
import logging
from collections.abc import Callable, Sequence
from typing import Any, Final, Generic, TypeVar

import attrs
import trio
import trio_websocket

from ..jsondepth import too_deep
from ..types.execution import HASH_SIZE, EngineError, SchemaError
from ..types.execution import data_from_json as _data
from ..types.execution import quantity_from_json as _quantity

__all__ = ["EthHead", "Subscription"]

logger = logging.getLogger("alys.execution")

T = TypeVar("T")
DEFAULT_MAX_MESSAGE_BYTES: Final = 4 * 1024 * 1024


@attrs.frozen
class EthHead:
    """A ``newHeads`` notification: the header of a new canonical head."""

    number: int
    hash: bytes
    parent_hash: bytes
    timestamp: int

    @classmethod
    def from_json(cls, obj: Any, path: str = "result") -> EthHead:
        if not isinstance(obj, dict):
            raise SchemaError(path, f"expected a header object, got {type(obj).__name__}")
        for key in ("number", "hash", "parentHash", "timestamp"):
            if key not in obj:
                raise SchemaError(path, f"the header is missing the member {key!r}")
        return cls(
            number=_quantity(obj["number"], f"{path}.number", bits=64),
            hash=_data(obj["hash"], f"{path}.hash", size=HASH_SIZE),
            parent_hash=_data(obj["parentHash"], f"{path}.parentHash", size=HASH_SIZE),
            timestamp=_quantity(obj["timestamp"], f"{path}.timestamp", bits=64),
        )


_RETRYABLE: Final = (OSError, trio_websocket.HandshakeError, trio_websocket.ConnectionClosed,
                     trio.TooSlowError, trio.BrokenResourceError)


def _leaves(group: BaseExceptionGroup[BaseException]) -> Any:
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            yield from _leaves(exc)
        else:
            yield exc


class _Oversized(Exception):
    """A message over the limit: the connection is dropped and made again."""


class Subscription(Generic[T]):
    """One ``eth_subscribe`` kept alive across reconnections (see the module docstring)."""

    def __init__(
        self,
        url: str,
        kind: str,
        params: Sequence[Any] = (),
        *,
        parse: Callable[[Any], T],
        initial: float = 0.5,
        max_delay: float = 10.0,
        connect_timeout: float = 10.0,
        idle_timeout: float | None = None,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    ) -> None:
        if not url.startswith(("ws://", "wss://")):
            raise ValueError(f"Subscription url must be a ws(s) URL, got {url!r}")
        if not 0 < initial <= max_delay:
            raise ValueError(f"Subscription backoff must satisfy 0 < initial <= max_delay, "
                             f"got {initial!r}, {max_delay!r}")
        self.url = url
        self.kind = kind
        self.params = list(params)
        self.parse = parse
        self.initial = initial
        self.max_delay = max_delay
        self.connect_timeout = connect_timeout
        self.idle_timeout = idle_timeout
        self.max_message_bytes = max_message_bytes
        self.subscription_id: str | None = None
        self.reconnects = 0
        self.dropped = 0
        self._ids = itertools.count(1)

    @property
    def connected(self) -> bool:
        return self.subscription_id is not None

    async def run(self, send: trio.MemorySendChannel[T]) -> None:
        """Subscribe, and keep subscribing, until cancelled; raises :class:`EngineError`
        when the client refuses the subscription."""
        delay = self.initial
        while True:
            problem = await self._attempt(send)
            was_connected = self.subscription_id is not None
            self.subscription_id = None
            if was_connected:
                self.reconnects += 1
                delay = self.initial
                logger.warning("eth_subscribe(%s) at %s: connection lost (%r); subscribing "
                               "again in %.1f s", self.kind, self.url, problem, delay)
            else:
                logger.info("eth_subscribe(%s) at %s: cannot connect (%r); next try in %.1f s",
                            self.kind, self.url, problem, delay)
            await trio.sleep(delay)
            if not was_connected:
                delay = min(delay * 2, self.max_delay)

    async def _attempt(self, send: trio.MemorySendChannel[T]) -> BaseException:
        """One connection, until it fails: what made it fail, if that is worth another
        try; anything else (a refusal, a cancellation) is raised, unwrapped from the
        exception groups trio-websocket's nursery makes."""
        try:
            await self._connection(send)
        except (*_RETRYABLE, _Oversized) as exc:
            return exc
        except BaseExceptionGroup as group:
            retry, rest = group.split((*_RETRYABLE, _Oversized))
            if rest is None and retry is not None:
                return retry.exceptions[0]
            assert rest is not None
            leaves = list(_leaves(rest))
            if len(leaves) == 1 and isinstance(leaves[0], Exception):
                raise leaves[0] from None
            raise
        raise AssertionError("a subscription's connection ended without an exception")

    async def _connection(self, send: trio.MemorySendChannel[T]) -> None:
        async with trio_websocket.open_websocket_url(
                self.url, max_message_size=self.max_message_bytes,
                connect_timeout=self.connect_timeout, disconnect_timeout=1.0) as ws:
            request_id = next(self._ids)
            await ws.send_message(json.dumps({"jsonrpc": "2.0", "id": request_id,
                                              "method": "eth_subscribe",
                                              "params": [self.kind, *self.params]}))
            with trio.fail_after(self.connect_timeout):
                reply = self._load(await ws.get_message())
            self.subscription_id = self._subscription_id(reply, request_id)
            logger.info("eth_subscribe(%s) at %s: subscribed (%s)", self.kind, self.url,
                        self.subscription_id)
            while True:
                if self.idle_timeout is None:
                    message = await ws.get_message()
                else:
                    with trio.fail_after(self.idle_timeout):
                        message = await ws.get_message()
                value = self._notification(message)
                if value is not None:
                    await send.send(value[0])

    def _load(self, message: str | bytes) -> Any:
        if len(message) > self.max_message_bytes:
            raise _Oversized(f"a message of {len(message)} bytes")
        text = message.decode("utf-8", "replace") if isinstance(message, bytes) else message
        if too_deep(text):
            raise ValueError("nested too deeply")
        return json.loads(text)

    def _subscription_id(self, reply: Any, request_id: int) -> str:
        method = "eth_subscribe"
        if not isinstance(reply, dict) or reply.get("id") != request_id:
            raise EngineError(None, f"malformed response: expected the answer to request "
                              f"{request_id}, got {reply!r:.200}", method)
        error = reply.get("error")
        if isinstance(error, dict):
            code = error.get("code")
            raise EngineError(code if type(code) is int else None,
                              str(error.get("message", error))[:200], method)
        result = reply.get("result")
        if not isinstance(result, str) or not result:
            raise EngineError(None, f"malformed result: expected a subscription id, got "
                              f"{result!r:.100}", method)
        return result

    def _notification(self, message: str | bytes) -> tuple[T] | None:
        """The parsed result of a notification for our subscription, or None (dropped)."""
        try:
            doc = self._load(message)
        except (ValueError, RecursionError) as exc:
            self._drop(f"not JSON ({exc})")
            return None
        if not isinstance(doc, dict) or doc.get("method") != "eth_subscription":
            self._drop(f"not a notification: {doc!r:.100}")
            return None
        params = doc.get("params")
        if not isinstance(params, dict) or params.get("subscription") != self.subscription_id:
            self._drop(f"not for subscription {self.subscription_id}: {params!r:.100}")
            return None
        try:
            return (self.parse(params.get("result")),)
        except (SchemaError, ValueError, TypeError) as exc:
            self._drop(f"a result we cannot read: {exc}")
            return None

    def _drop(self, problem: str) -> None:
        self.dropped += 1
        logger.warning("eth_subscribe(%s) at %s: message dropped: %s", self.kind, self.url,
                       problem)
        return None
