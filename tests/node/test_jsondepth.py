"""JSON nesting is limited before parsing, whatever the interpreter's recursion limit:
``py_ecc`` (imported by eth-account, web3 and py-evm) raises it to 100,000, at which a
deeply nested body would overflow the C stack instead of raising RecursionError."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from node.integration.execution import ExecutionClient
from node.jsondepth import MAX_DEPTH, too_deep
from node.rpc import PARSE_ERROR, RpcError, parse_body
from node.types.execution import EngineError


@pytest.fixture
def high_recursion_limit() -> Iterator[None]:
    """As after ``import py_ecc``."""
    before = sys.getrecursionlimit()
    sys.setrecursionlimit(100_000)
    try:
        yield
    finally:
        sys.setrecursionlimit(before)


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def test_depth_is_counted_outside_strings_only() -> None:
    assert not too_deep(nested(MAX_DEPTH))
    assert too_deep(nested(MAX_DEPTH + 1))
    assert too_deep('{"a":' * 300 + "1" + "}" * 300)
    assert not too_deep(json.dumps(["[" * 1000, "{\\\"[" * 500]))
    assert not too_deep('"' + "[" * 1000)  # not JSON: the parser says so
    assert not too_deep("[]" * 100_000)  # wide, not deep


@given(st.recursive(st.none() | st.integers() | st.text(alphabet='[]{}"\\ab', max_size=6),
                    lambda inner: st.lists(inner, max_size=3)
                    | st.dictionaries(st.text(alphabet='[]{}"\\', max_size=3), inner, max_size=3),
                    max_leaves=40))
def test_the_depth_of_any_json_value_is_its_nesting(value: object) -> None:
    def depth(v: object) -> int:
        if isinstance(v, list):
            return 1 + max((depth(x) for x in v), default=0)
        if isinstance(v, dict):
            return 1 + max((depth(x) for x in v.values()), default=0)
        return 0

    text = json.dumps(value)
    for limit in range(0, 6):
        assert too_deep(text, limit) == (depth(value) > limit)


def test_a_long_adversarial_body_is_walked_in_linear_time() -> None:
    body = "[" * 300 + '"' + '\\"' * 400_000  # an unterminated string full of escapes
    started = time.perf_counter()
    assert too_deep(body)
    assert not too_deep("[]" * 300 + '"' + '\\"' * 400_000)
    assert time.perf_counter() - started < 5.0


def test_the_rpc_refuses_deep_bodies_even_with_a_high_recursion_limit(
        high_recursion_limit: None) -> None:
    with pytest.raises(RpcError) as info:
        parse_body(b'{"method":"status","params":' + nested(50_000).encode() + b"}")
    assert info.value.code == PARSE_ERROR
    assert "nested too deeply" in str(info.value)


async def test_a_deep_answer_from_an_execution_client_is_an_engine_error(
        high_recursion_limit: None) -> None:
    def deep(request: httpx.Request) -> httpx.Response:
        body = '{"jsonrpc":"2.0","id":1,"result":' + nested(50_000) + "}"
        return httpx.Response(200, content=body.encode())

    async with ExecutionClient("http://127.0.0.1:8545", transport=httpx.MockTransport(deep)
                               ) as eth:
        with pytest.raises(EngineError, match="malformed response: not JSON"):
            await eth.chain_id()
