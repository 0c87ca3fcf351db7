"""The Ethereum JSON-RPC edge under hostile input: every body gets a JSON-RPC 2.0 answer in
strict JSON with one of the documented codes, nothing unchecked reaches the engine, and the
chain carries on. Hypothesis draws the hostile values (``hostile_*`` strategies below)."""

from __future__ import annotations

import json
from typing import Any

import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from node.execution.accounts import dev_accounts
from node.execution.embedded import EmbeddedEngine
from node.execution.eth_api import METHODS, EthApi
from node.execution.rpc_server import EthRpcApp, Session
from node.messages.eth import EthError
from node.rpc import Method

from .rpc_strategies import strict_loads

ENGINE = EmbeddedEngine()
API = EthApi(ENGINE)
CALLS: list[str] = []
#: What an answer's error code may be: parse, request, method, params; geth's server error,
#: a revert, a log query over its limit.
CODES = {-32700, -32600, -32601, -32602, -32000, 3, -32005}


async def handler(method: Method, args: list[Any], session: Session | None) -> bytes | EthError:
    await trio.lowlevel.checkpoint()
    CALLS.append(method.name)
    if method.name in ("eth_subscribe", "eth_unsubscribe", "eth_newFilter",
                       "eth_newBlockFilter", "eth_newPendingTransactionFilter",
                       "eth_getFilterChanges", "eth_getFilterLogs", "eth_uninstallFilter"):
        return EthError(-32000, "filter not found")
    return API.answer(method.name, args)


APP = EthRpcApp(METHODS, handler, max_body=64 * 1024, batch_limit=20)


def answer(body: bytes | str) -> Any:
    raw = trio.run(APP.process, body, None)
    return None if raw is None else strict_loads(raw)


# -- hostile values -------------------------------------------------------------------------------

hostile_quantities = st.one_of(
    st.integers(), st.floats(allow_nan=False), st.booleans(), st.none(),
    st.text(max_size=80),
    st.integers(min_value=0, max_value=2**300).map(hex),
    st.integers(min_value=0, max_value=2**64).map(lambda n: "0x0" + format(n, "x")),
    st.integers(min_value=0, max_value=2**64).map(lambda n: format(n, "x")),
    st.sampled_from(["0x", "0X1", "0x-1", "-0x1", "0x\uff11", "0xg", "0x 1", "1e3",
                     "0x" + "f" * 65]),
)
hostile_hex = st.one_of(
    st.binary(max_size=70).map(lambda b: "0x" + b.hex()),
    st.binary(max_size=40).map(lambda b: b.hex()),
    st.text(alphabet="0123456789abcdefxX-+ ", max_size=90),
    st.integers(), st.none(), st.lists(st.integers(), max_size=3),
)
hostile_tags = st.one_of(
    st.sampled_from(["latest", "pending", "safe", "finalized", "earliest", "Latest", "LATEST",
                     "", "head", "0x", "0x00"]),
    hostile_quantities,
    st.fixed_dictionaries({"blockHash": hostile_hex}, optional={"requireCanonical": st.one_of(
        st.booleans(), st.integers(), st.text(max_size=5))}),
    st.fixed_dictionaries({"blockNumber": hostile_quantities}),
    st.dictionaries(st.text(max_size=10), st.integers(), max_size=3),
)
hostile_call = st.one_of(
    st.dictionaries(st.sampled_from(["from", "to", "gas", "gasPrice", "maxFeePerGas",
                                     "maxPriorityFeePerGas", "value", "data", "input", "nonce",
                                     "type", "chainId", "accessList", "surprise"]),
                    st.one_of(hostile_hex, hostile_quantities), max_size=6),
    st.lists(st.integers(), max_size=2), st.text(max_size=10), st.none(),
)
hostile_filter = st.one_of(
    st.dictionaries(st.sampled_from(["fromBlock", "toBlock", "blockHash", "address", "topics",
                                     "limit"]),
                    st.one_of(hostile_tags, hostile_hex,
                              st.lists(st.one_of(hostile_hex, st.none(),
                                                 st.lists(hostile_hex, max_size=3)),
                                       max_size=6)), max_size=4),
    st.integers(), st.text(max_size=10),
)
hostile_param = st.one_of(hostile_quantities, hostile_hex, hostile_tags, hostile_call,
                          hostile_filter, st.binary(max_size=300).map(lambda b: "0x" + b.hex()))


@st.composite
def hostile_requests(draw: Any) -> Any:
    name = draw(st.one_of(st.sampled_from(sorted(METHODS)), st.text(max_size=30),
                          st.integers(), st.none()))
    request: dict[str, Any] = {"jsonrpc": draw(st.sampled_from(["2.0", "2.0", "2.0", "1.0", 2])),
                               "method": name}
    if draw(st.booleans()):
        request["params"] = draw(st.one_of(st.lists(hostile_param, max_size=4), hostile_param))
    if draw(st.integers(0, 9)):
        request["id"] = draw(st.one_of(st.integers(), st.text(max_size=10), st.none(),
                                       st.lists(st.integers(), max_size=1)))
    return request


def _check(reply: Any) -> None:
    assert reply["jsonrpc"] == "2.0"
    if "error" in reply:
        assert set(reply) == {"jsonrpc", "id", "error"}
        assert reply["error"]["code"] in CODES, reply
        assert 0 < len(reply["error"]["message"]) < 400
    else:
        assert set(reply) == {"jsonrpc", "id", "result"}


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(hostile_requests(), st.lists(hostile_requests(), max_size=25)))
def test_hostile_requests_get_documented_answers_and_change_nothing(request: Any) -> None:
    head, pooled = ENGINE.head_number, len(ENGINE.pool)
    CALLS.clear()
    reply = answer(json.dumps(request))
    requests = request if isinstance(request, list) else [request]
    if isinstance(request, list) and not request:
        assert reply["error"]["code"] == -32600
    elif isinstance(request, list) and len(request) > 20:
        assert reply["error"] == {"code": -32600, "message": "batch too large"}
    elif reply is None:
        assert all(isinstance(r, dict) and "id" not in r for r in requests)
    else:
        for item in reply if isinstance(reply, list) else [reply]:
            _check(item)
    assert ENGINE.head_number == head
    # Random bytes are never a signed transaction from a funded account.
    assert len(ENGINE.pool) == pooled


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_any_bytes_get_an_answer(body: bytes) -> None:
    reply = answer(body)
    for item in reply if isinstance(reply, list) else [reply] if reply is not None else []:
        _check(item)


def test_the_rules_at_the_edges() -> None:
    assert answer(b"[" * 100_000 + b"]" * 100_000)["error"] == {
        "code": -32700, "message": "the body is not JSON we accept: nested too deeply"}
    assert answer(b'{"jsonrpc":"2.0","id":1,"method":"eth_chainId","x":NaN}')["error"][
        "code"] == -32700
    assert answer(b"[]")["error"] == {"code": -32600, "message": "empty batch"}
    assert answer(b'{"jsonrpc":"2.0","method":"eth_blockNumber"}') is None  # a notification
    batch = answer(b'[{"jsonrpc":"2.0","id":1,"method":"eth_blockNumber"},'
                   b'{"jsonrpc":"2.0","method":"eth_blockNumber"},'
                   b'{"jsonrpc":"2.0","id":"b","method":"nope"}, 5]')
    assert [r["id"] for r in batch] == [1, "b", None]
    assert batch[0]["result"] == "0x0"
    assert batch[1]["error"] == {"code": -32601,
                                 "message": "the method nope does not exist/is not available"}
    assert batch[2]["error"]["code"] == -32600
    bad_id = answer(b'{"jsonrpc":"2.0","id":{"a":1},"method":"eth_chainId"}')
    assert bad_id["id"] is None and bad_id["error"]["code"] == -32600
    who = "0x" + dev_accounts()[0].address.hex()
    ok = answer(json.dumps({"jsonrpc": "2.0", "id": 2, "method": "eth_getBalance",
                            "params": [who, {"blockNumber": "0x0"}]}))
    assert ok["result"] == hex(10_000 * 10**18)
    future = answer(json.dumps({"jsonrpc": "2.0", "id": 3, "method": "eth_getBalance",
                                "params": [who, "0x99"]}))
    assert future["error"] == {"code": -32000, "message": "header not found"}
    assert answer(json.dumps({"jsonrpc": "2.0", "id": 4, "method": "eth_getBlockByNumber",
                              "params": ["0x99", False]}))["result"] is None
    unset = answer(json.dumps({"jsonrpc": "2.0", "id": 5, "method": "eth_getBlockByNumber",
                               "params": ["safe", False]}))
    assert unset["error"] == {"code": -32000, "message": "safe block not found"}
    blob = answer(json.dumps({"jsonrpc": "2.0", "id": 6, "method": "eth_sendRawTransaction",
                              "params": ["0x03c0"]}))
    assert blob["error"]["code"] == -32000
    assert blob["error"]["message"].startswith("transaction type not supported")
    logs = answer(json.dumps({"jsonrpc": "2.0", "id": 7, "method": "eth_getLogs",
                              "params": [{"fromBlock": "0x5", "toBlock": "0x1"}]}))
    assert logs["error"] == {"code": -32000, "message": "invalid block range params"}
    both = answer(json.dumps({"jsonrpc": "2.0", "id": 8, "method": "eth_getLogs",
                              "params": [{"fromBlock": "0x0", "blockHash": "0x" + "00" * 32}]}))
    assert both["error"]["code"] == -32602


async def test_http_refuses_other_methods_and_oversized_bodies() -> None:
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        await trio.lowlevel.checkpoint()
        sent.append(message)

    def receiver(*messages: dict[str, Any]) -> Any:
        queue = list(messages)

        async def receive() -> dict[str, Any]:
            await trio.lowlevel.checkpoint()
            return queue.pop(0)

        return receive

    await APP({"type": "http", "method": "GET", "headers": []}, receiver(), send)
    assert sent[0]["status"] == 405
    sent.clear()
    big = b" " * (64 * 1024 + 1)
    await APP({"type": "http", "method": "POST", "headers": []},
              receiver({"type": "http.request", "body": big}), send)
    assert sent[0]["status"] == 413 and (b"connection", b"close") in sent[0]["headers"]
    sent.clear()
    await APP({"type": "http", "method": "POST", "headers": [(b"content-length", b"99999999")]},
              receiver({"type": "http.request", "body": b"{", "more_body": True}), send)
    assert sent[0]["status"] == 413
    sent.clear()
    body = b'{"jsonrpc":"2.0","id":1,"method":"eth_chainId"}'
    await APP({"type": "http", "method": "POST", "headers": []},
              receiver({"type": "http.request", "body": body}), send)
    assert sent[0]["status"] == 200 and json.loads(sent[1]["body"])["result"] == hex(121212)
