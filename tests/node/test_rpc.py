"""The JSON-RPC edge (``node.rpc``): every body, however hostile, gets a strict-JSON answer
with the right error, and only checked, converted values reach a handler."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from node.rpc import (
    INTERNAL_ERROR,
    INVALID_PARAMS,
    INVALID_REQUEST,
    MAX_HEIGHT,
    METHOD_NOT_FOUND,
    PARSE_ERROR,
    Method,
    Param,
    RpcApp,
    RpcError,
    address,
    encode,
    hash32,
    hex_bytes,
    serve_app,
    u64,
)

from .rpc_strategies import bodies, expected, hostile_ints, json_values, strict_loads

SPECS: dict[str, tuple[list[tuple[str, bool]], bool]] = {
    "height": ([("u64", False)], True),
    "block": ([("hash32", False)], True),
    "work": ([("address", True)], False),
    "submit": ([("hash32", False), ("hex", False)], False),
    "status": ([], False),
}
KIND = {"u64": u64, "hash32": hash32, "address": address, "hex": hex_bytes}
METHODS = {
    name: Method(name, tuple(Param(f"p{i}", KIND[kind], optional)
                             for i, (kind, optional) in enumerate(spec)), bare=bare)
    for name, (spec, bare) in SPECS.items()
}
METHODS["boom"] = Method("boom")
METHODS["syncing"] = Method("syncing")
SEEN: list[tuple[str, list[Any]]] = []


async def handler(method: Method, args: list[Any]) -> bytes:
    await trio.lowlevel.checkpoint()
    SEEN.append((method.name, args))
    if method.name == "boom":
        raise RuntimeError("a handler bug")
    if method.name == "syncing":
        raise RpcError(-32606, "Chain is syncing", 503)
    return encode([a.hex() if isinstance(a, bytes) else a for a in args])


APP = RpcApp(METHODS, handler, max_body=1024)


async def answer(body: bytes) -> tuple[int, dict[str, Any]]:
    status, raw = await APP.answer(body)
    return status, strict_loads(raw)


@settings(max_examples=800, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(bodies(list(SPECS)))
def test_every_body_gets_the_answer_the_rules_give(body: bytes) -> None:
    SEEN.clear()
    status, reply = trio.run(answer, body)
    code, rid = expected(body, SPECS)
    assert set(reply) == {"result", "error", "id"}
    assert status == 200
    if code:
        assert reply["result"] is None
        assert reply["error"]["code"] == code, (body[:300], reply)
        assert 0 < len(reply["error"]["message"]) < 300
        assert not SEEN  # nothing unchecked reached the handler
    else:
        assert reply["error"] is None, (body[:300], reply)
        assert len(SEEN) == 1
    assert reply["id"] == rid and type(reply["id"]) is type(rid)


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(sorted(SPECS)), st.lists(json_values, max_size=3))
def test_handlers_get_only_checked_values(method: str, params: list[Any]) -> None:
    SEEN.clear()
    body = json.dumps({"method": method, "params": params, "id": 1}).encode()
    _status, reply = trio.run(answer, body)
    if reply["error"] is not None:
        assert not SEEN
        return
    [(name, args)] = SEEN
    spec, _bare = SPECS[name]
    for (kind, optional), value in zip(spec, args, strict=True):
        if value is None:
            assert optional
        elif kind == "u64":
            assert type(value) is int and 0 <= value <= MAX_HEIGHT
        else:
            assert isinstance(value, bytes)
            assert len(value) == {"hash32": 32, "address": 20, "hex": len(value)}[kind]


@given(hostile_ints)
def test_heights_are_u64_in_a_list_or_bare(height: int) -> None:
    for params in ([height], height):
        _status, reply = trio.run(answer, encode({"method": "height", "params": params,
                                                 "id": 5}))
        if 0 <= height <= MAX_HEIGHT:
            assert reply == {"result": [height], "error": None, "id": 5}
        else:
            assert reply["error"]["code"] == INVALID_PARAMS
            assert "height parameter 0 (p0) must be an integer in 0..2^64-1" in (
                reply["error"]["message"])


async def test_the_bug_reports_bodies_get_errors() -> None:
    for body in (b'{"method":"height","params":[18446744073709551616],"id":1}',
                 b'{"method":"height","params":18446744073709551616,"id":1}',
                 b'{"method":"height","params":[-1],"id":1}'):
        status, reply = await answer(body)
        assert status == 200 and reply["error"]["code"] == INVALID_PARAMS and reply["id"] == 1
    for rid in (b"NaN", b"Infinity", b"-Infinity", b"1e400", b"-1e400"):
        status, reply = await answer(b'{"method":"status","id":' + rid + b"}")
        assert reply["error"]["code"] == PARSE_ERROR and reply["id"] is None
        assert rid.lstrip(b"-").decode() in reply["error"]["message"]
    status, reply = await answer(b'{"method":"status","params":' + b"[" * 1000 + b"]" * 1000
                                 + b"}")
    assert reply["error"] == {"code": PARSE_ERROR,
                              "message": "the body is not JSON we accept: nested too deeply"}
    status, reply = await answer(b'{"method":"status","id":' + b"7" * 101 + b"}")
    assert reply["error"]["code"] == PARSE_ERROR and "an integer of 101 digits" in (
        reply["error"]["message"])
    status, reply = await answer(b'{"method":"status","id":"caf\xe9"}')
    assert reply["error"] == {"code": PARSE_ERROR, "message": "the body is not UTF-8 (invalid "
                              "byte at offset 28)"}


async def test_ids_are_echoed_when_scalar() -> None:
    for rid in (None, 0, -3, 2**80, 1.5, -0.0, 1e308, "x", "", "\udc80", True):
        status, raw = await APP.answer(encode({"method": "status", "id": rid}))
        reply = strict_loads(raw)
        assert status == 200
        assert reply == {"result": [], "error": None, "id": rid}
        assert raw.isascii()
    for rid in ([1], {"a": 1}, []):
        _status, reply = await answer(encode({"method": "status", "id": rid}))
        assert reply["error"]["code"] == INVALID_REQUEST and reply["id"] is None


@pytest.mark.parametrize(
    ("body", "code", "message"),
    [
        (b"not json", PARSE_ERROR, "the body is not JSON: Expecting value"),
        (b"", PARSE_ERROR, "the body is not JSON: Expecting value"),
        (b"[1,2]", INVALID_REQUEST, "the request must be a JSON object, got a batch"),
        (b'"status"', INVALID_REQUEST, "the request must be a JSON object, got the string"),
        (b'{"params":[]}', INVALID_REQUEST, "'method' must be a string, got null"),
        (b'{"method":5}', INVALID_REQUEST, "'method' must be a string, got the integer 5"),
        (b'{"method":"nope"}', METHOD_NOT_FOUND, "unknown method the string 'nope'"),
        (b'{"method":"status","params":{"a":1}}', INVALID_PARAMS,
         "status: 'params' must be an array, got an object"),
        (b'{"method":"status","params":[1]}', INVALID_PARAMS,
         "status takes at most 0 parameter(s), got 1"),
        (b'{"method":"height","params":[]}', INVALID_PARAMS,
         "height: parameter 0 (p0) is missing"),
        (b'{"method":"height","params":["1"]}', INVALID_PARAMS,
         "height parameter 0 (p0) must be an integer in 0..2^64-1, got the string '1'"),
        (b'{"method":"height","params":[1.0]}', INVALID_PARAMS, "got the number 1.0"),
        (b'{"method":"height","params":[true]}', INVALID_PARAMS, "got the boolean true"),
        (b'{"method":"block","params":"ab"}', INVALID_PARAMS,
         "block parameter 0 (p0) must be a 32-byte hash (64 hex digits), got 1 bytes"),
        (b'{"method":"block","params":["' + b"a" * 63 + b'"]}', INVALID_PARAMS,
         "which is not an even number of hex digits"),
        (b'{"method":"block","params":{"hash":"00"}}', INVALID_PARAMS,
         "block: 'params' must be an array, or its one parameter bare, got an object"),
        (b'{"method":"work","params":["0x' + b"ab" * 19 + b'"]}', INVALID_PARAMS,
         "must be a 20-byte EVM address (40 hex digits), got 19 bytes"),
        (b'{"method":"submit","params":["' + b"ab" * 32 + b'", "ab cd"]}', INVALID_PARAMS,
         "submit parameter 1 (p1) must be a hex string"),
    ],
)
async def test_malformed_requests_get_errors_that_say_what_and_where(
        body: bytes, code: int, message: str) -> None:
    status, reply = await answer(body)
    assert status == 200 and reply["result"] is None and reply["error"]["code"] == code
    assert message in reply["error"]["message"]


async def test_converted_values_reach_the_handler() -> None:
    SEEN.clear()
    h = "AB" * 32
    assert (await answer(encode({"method": "block", "params": "0x" + h, "id": 1})))[1][
        "result"] == ["ab" * 32]
    assert (await answer(encode({"method": "work", "params": [None]})))[1]["result"] == [None]
    assert (await answer(encode({"method": "work"})))[1]["result"] == [None]
    assert (await answer(encode({"method": "height", "params": [MAX_HEIGHT]})))[1][
        "result"] == [MAX_HEIGHT]
    assert SEEN[0] == ("block", [bytes([0xAB]) * 32])


async def test_handler_errors_keep_their_code_and_status() -> None:
    assert await answer(b'{"method":"syncing","id":1}') == (
        503, {"result": None, "error": {"code": -32606, "message": "Chain is syncing"}, "id": 1})
    status, reply = await answer(b'{"method":"boom","id":1}')
    assert status == 500 and reply["error"]["code"] == INTERNAL_ERROR and reply["id"] == 1
    assert "a handler bug" not in reply["error"]["message"]  # details go to the log


# -- over HTTP ------------------------------------------------------------------------------------


async def _raw_http(port: int, data: bytes, *, close_write: bool = False) -> bytes:
    """Send raw bytes on a new connection; everything the server answers until it closes
    (or until a complete response with a Content-Length arrived)."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(data)
        if close_write:
            await stream.send_eof()
        received = b""
        with trio.move_on_after(10):
            while True:
                chunk = await stream.receive_some(65536)
                if not chunk:
                    break
                received += chunk
                head, sep, body = received.partition(b"\r\n\r\n")
                if sep:
                    for line in head.split(b"\r\n")[1:]:
                        name, _, value = line.partition(b":")
                        if name.strip().lower() == b"content-length" and len(body) >= int(
                                value):
                            return received
        return received


@pytest.mark.real_clock
async def test_over_http_limits_methods_and_broken_clients() -> None:
    async with trio.open_nursery() as nursery:
        host, port = await nursery.start(serve_app, APP, "127.0.0.1", 0)
        url = f"http://{host}:{port}/"
        async with httpx.AsyncClient() as client:
            r = await client.post(url, content=b'{"method":"height","params":[1],"id":1}')
            assert r.json() == {"result": [1], "error": None, "id": 1}
            assert r.headers["content-type"] == "application/json"
            # over the limit by its declared length: refused before the body is read
            r = await client.post(url, content=b"x" * 5000)
            assert r.status_code == 413 and r.json()["error"]["code"] == INVALID_REQUEST
            assert "over 1024 bytes" in r.json()["error"]["message"]
            # the unread rest of the body makes the connection unusable: the client is told
            assert r.headers["connection"] == "close"

            # over the limit in chunks (no declared length)
            async def chunks() -> Any:
                for _ in range(10):
                    yield b"y" * 200

            r = await client.post(url, content=chunks())
            assert r.status_code == 413
            r = await client.get(url)
            assert r.status_code == 405 and r.json()["error"]["code"] == INVALID_REQUEST
            r = await client.post(url, content=b"\xff\xfe{}")
            assert r.json()["error"]["code"] == PARSE_ERROR
        # Broken HTTP framing never reaches the app: hypercorn answers 400 and closes. A body
        # cut short by a client that stops sending; a declared length that cannot be; TLS
        # bytes on the plain port.
        for data in (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"method\":",
                     b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999999"
                     b"\r\n\r\n{}",
                     b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" * 20):
            reply = await _raw_http(port, data, close_write=True)
            assert reply.startswith(b"HTTP/1.1 400 "), reply
        # a WebSocket handshake is refused
        reply = await _raw_http(port, b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                                b"Connection: Upgrade\r\nSec-WebSocket-Key: "
                                b"dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
        assert reply.startswith(b"HTTP/1.1 403 "), reply
        async with httpx.AsyncClient() as client:
            r = await client.post(url, content=b'{"method":"height","params":[2],"id":2}')
            assert r.json()["result"] == [2]  # the server carried on
        nursery.cancel_scope.cancel()
