"""eth_subscribe over WebSocket against a scripted server on 127.0.0.1: notifications parsed
and delivered, bad messages dropped without ending the stream, a dropped connection made
again and the subscription renewed, a refusal raised. The same against real Geth and
ethereumjs (killed and restarted under the subscription) is in tests/integration."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import trio
import trio_websocket

from node.integration.subscriptions import EthHead, Subscription
from node.types.execution import EngineError


def head(n: int) -> dict[str, Any]:
    return {"number": hex(n), "hash": "0x" + f"{n:064x}", "parentHash": "0x" + f"{n - 1:064x}",
            "timestamp": hex(1000 + n), "miner": "0x" + "00" * 20}


def note(sub: str, result: Any) -> str:
    return json.dumps({"jsonrpc": "2.0", "method": "eth_subscription",
                       "params": {"subscription": sub, "result": result}})


Script = Callable[[trio_websocket.WebSocketConnection, int], Awaitable[None]]


async def serve(nursery: trio.Nursery, script: Script) -> tuple[str, list[Any]]:
    """A WebSocket server running ``script(ws, connection_number)`` per connection; returns
    its URL and the subscribe requests it received."""
    requests: list[Any] = []
    count = 0

    async def handler(request: trio_websocket.WebSocketRequest) -> None:
        nonlocal count
        ws = await request.accept()
        count += 1
        requests.append(json.loads(await ws.get_message()))
        try:
            await script(ws, count)
        except trio_websocket.ConnectionClosed:
            pass

    server = await nursery.start(trio_websocket.serve_websocket, handler, "127.0.0.1", 0,
                                 None)
    return f"ws://127.0.0.1:{server.port}", requests


@pytest.mark.real_clock
async def test_heads_arrive_bad_messages_are_dropped_and_a_lost_connection_is_made_again(
        ) -> None:
    async def script(ws: trio_websocket.WebSocketConnection, n: int) -> None:
        sub = f"0xsub{n}"
        await ws.send_message(json.dumps({"jsonrpc": "2.0", "id": n, "result": sub}))
        if n == 1:
            await ws.send_message(note(sub, head(1)))
            await ws.send_message("{not json")
            await ws.send_message(note("0xother", head(99)))
            await ws.send_message(note(sub, {"number": "0x02"}))  # no hash, leading zero
            await ws.send_message("[" * 10_000 + "]" * 10_000)
            await ws.send_message(note(sub, head(2)))
            await ws.aclose()  # the client died
        else:
            await ws.send_message(note(sub, head(3)))
            await trio.sleep_forever()

    async with trio.open_nursery() as nursery:
        url, requests = await serve(nursery, script)
        sub = Subscription(url, "newHeads", parse=EthHead.from_json, initial=0.05)
        send, receive = trio.open_memory_channel[EthHead](10)
        nursery.start_soon(sub.run, send)
        with trio.fail_after(20):
            got = [await receive.receive() for _ in range(3)]
        assert [h.number for h in got] == [1, 2, 3]
        assert got[2].hash == bytes.fromhex(f"{3:064x}")
        assert sub.reconnects == 1 and sub.dropped == 4 and sub.subscription_id == "0xsub2"
        assert [r["method"] for r in requests] == ["eth_subscribe", "eth_subscribe"]
        assert requests[0]["params"] == ["newHeads"]
        nursery.cancel_scope.cancel()


@pytest.mark.real_clock
async def test_a_server_that_is_not_there_yet_is_tried_with_backoff() -> None:
    async with trio.open_nursery() as probe:
        url, _ = await serve(probe, lambda ws, n: trio.sleep(0))
        probe.cancel_scope.cancel()  # nothing listens at url any more
    sub = Subscription(url, "newHeads", parse=EthHead.from_json, initial=0.05, max_delay=0.2)
    send, _receive = trio.open_memory_channel[EthHead](1)
    with trio.move_on_after(1.0):
        await sub.run(send)
    assert not sub.connected and sub.reconnects == 0


@pytest.mark.real_clock
async def test_a_refused_subscription_is_an_engine_error() -> None:
    async def script(ws: trio_websocket.WebSocketConnection, n: int) -> None:
        await ws.send_message(json.dumps({"jsonrpc": "2.0", "id": 1, "error": {
            "code": -32601, "message": "no nonsense subscription in eth namespace"}}))
        await trio.sleep_forever()

    async with trio.open_nursery() as nursery:
        url, _ = await serve(nursery, script)
        sub = Subscription(url, "nonsense", parse=EthHead.from_json)
        send, _receive = trio.open_memory_channel[EthHead](1)
        with pytest.raises(EngineError, match=r"eth_subscribe: no .*subscription.*-32601"):
            with trio.fail_after(20):
                await sub.run(send)
        nursery.cancel_scope.cancel()


def test_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="ws"):
        Subscription("http://127.0.0.1:8546", "newHeads", parse=EthHead.from_json)
    with pytest.raises(ValueError, match="backoff"):
        Subscription("ws://127.0.0.1:8546", "newHeads", parse=EthHead.from_json, initial=0)
