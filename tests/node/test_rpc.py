"""The JSON-RPC 1.0 server: answers, errors, size limits; nothing malformed gets through."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from node.rpc import (
    INVALID_PARAMS,
    INVALID_REQUEST,
    METHOD_NOT_FOUND,
    PARSE_ERROR,
    RpcApp,
    RpcError,
    param,
    serve_app,
)


async def handler(method: str, params: list[Any]) -> Any:
    await trio.lowlevel.checkpoint()
    if method == "height":
        return param(params, 0, "int")
    if method == "syncing":
        raise RpcError(-32606, "Chain is syncing", 503)
    if method == "boom":
        raise RuntimeError("handler bug")
    return params


APP = RpcApp(handler, {"echo": "", "height": "", "syncing": "", "boom": ""}, 1024)


async def answer(body: bytes) -> tuple[int, dict[str, Any]]:
    status, raw = await APP.answer(body)
    return status, json.loads(raw)


async def test_answers_in_json_rpc_1_style() -> None:
    assert await answer(b'{"method":"echo","params":[1,"a"],"id":7}') == (
        200, {"result": [1, "a"], "error": None, "id": 7})
    assert await answer(b'{"method":"echo","id":"x"}') == (
        200, {"result": [], "error": None, "id": "x"})


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b"not json", PARSE_ERROR),
        (b"\xff\xfe", PARSE_ERROR),
        (b"[1,2]", INVALID_REQUEST),
        (b'{"params":[]}', INVALID_REQUEST),
        (b'{"method":5}', INVALID_REQUEST),
        (b'{"method":"echo","params":{"a":1}}', INVALID_PARAMS),
        (b'{"method":"nope"}', METHOD_NOT_FOUND),
        (b'{"method":"height","params":[]}', INVALID_PARAMS),
        (b'{"method":"height","params":[-1]}', INVALID_PARAMS),
        (b'{"method":"height","params":["1"]}', INVALID_PARAMS),
    ],
)
async def test_malformed_requests_get_specific_errors(body: bytes, code: int) -> None:
    status, reply = await answer(body)
    assert status == 200 and reply["result"] is None and reply["error"]["code"] == code


async def test_handler_errors_keep_their_code_and_status() -> None:
    assert await answer(b'{"method":"syncing","id":1}') == (
        503, {"result": None, "error": {"code": -32606, "message": "Chain is syncing"}, "id": 1})
    status, reply = await answer(b'{"method":"boom","id":1}')
    assert status == 500 and reply["error"]["code"] == -32603


def test_param_checks() -> None:
    assert param(["0x" + "ab" * 32], 0, "hex32") == bytes([0xAB]) * 32
    assert param(["ab" * 20], 0, "address") == bytes([0xAB]) * 20
    assert param([], 0, "int", optional=True) is None
    cases = [(["zz"], "hex"), (["ab"], "hex32"), (["ab" * 19], "address"), ([True], "int")]
    for bad, kind in cases:
        with pytest.raises(RpcError):
            param(bad, 0, kind)


@settings(max_examples=300, deadline=None)
@given(st.one_of(
    st.binary(max_size=200),
    st.recursive(st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=8)),
                 lambda i: st.one_of(st.lists(i, max_size=3),
                                     st.dictionaries(st.sampled_from(
                                         ["method", "params", "id", "x"]), i, max_size=4)),
                 max_leaves=8).map(lambda v: json.dumps(v).encode()),
))
def test_fuzz_every_body_gets_a_json_rpc_answer(body: bytes) -> None:
    status, reply = trio.run(answer, body)
    assert set(reply) == {"result", "error", "id"}
    assert status in (200, 503, 500)


@pytest.mark.real_clock
async def test_over_http_with_a_body_limit() -> None:
    async with trio.open_nursery() as nursery:
        host, port = await nursery.start(serve_app, APP, "127.0.0.1", 0, 1024)
        url = f"http://{host}:{port}/"
        async with httpx.AsyncClient() as client:
            r = await client.post(url, content=b'{"method":"echo","params":[1],"id":1}')
            assert r.json() == {"result": [1], "error": None, "id": 1}
            r = await client.post(url, content=b"x" * 5000)
            assert r.status_code == 413 and r.json()["error"]["code"] == INVALID_REQUEST
            r = await client.get(url)
            assert r.status_code == 405
            r = await client.post(url, content=b'{"method":"echo","params":[2],"id":2}')
            assert r.json()["result"] == [2]  # the server carried on
        nursery.cancel_scope.cancel()
