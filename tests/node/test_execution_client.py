"""ExecutionClient: eth JSON-RPC with LRU caches by hash, kept-alive connections, receipts
checked against their block, and hostile answers turned into engine errors."""

from __future__ import annotations

import functools
import json
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any, cast

import httpx
import hypercorn.config
import hypercorn.trio
import pytest
import trio
from hypercorn.typing import ASGIFramework
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import generate_latest

from node import metrics
from node.integration.execution import ExecutionClient, LruCache
from node.integration.jsonrpc import EngineUnreachable
from node.types.eth import EthBlock, EthReceipt
from node.types.execution import EngineError

from .test_execution_types import _locations, _set, junk


def h(n: int) -> str:
    return "0x" + f"{n:064x}"


def addr(n: int) -> str:
    return "0x" + f"{n:040x}"


def block_json(number: int, txs: list[int], block: int | None = None) -> dict[str, Any]:
    return {"number": hex(number), "hash": h(block if block is not None else 1000 + number),
            "parentHash": h(999 + number), "timestamp": hex(number), "gasLimit": "0x1c9c380",
            "gasUsed": hex(21000 * len(txs)), "baseFeePerGas": "0x3b9aca00",
            "miner": addr(0xDEAD), "transactions": [h(t) for t in txs], "withdrawals": [],
            "blobGasUsed": None}


def receipt_json(tx: int, index: int, block: int, number: int) -> dict[str, Any]:
    return {"transactionHash": h(tx), "transactionIndex": hex(index), "blockHash": h(block),
            "blockNumber": hex(number), "from": addr(1), "to": addr(2),
            "contractAddress": None, "status": "0x1", "gasUsed": "0x5208",
            "cumulativeGasUsed": hex(21000 * (index + 1)), "effectiveGasPrice": "0x77359400",
            "type": "0x2", "logsBloom": "0x" + "00" * 256,
            "logs": [{"address": addr(3), "topics": [h(7), h(8)], "data": "0x01",
                      "logIndex": hex(index), "transactionHash": h(tx),
                      "transactionIndex": hex(index), "blockHash": h(block),
                      "blockNumber": hex(number), "removed": False}]}


def tx_json(tx: int, block: int | None) -> dict[str, Any]:
    return {"hash": h(tx), "from": addr(1), "to": addr(2), "nonce": "0x0", "value": "0x1",
            "gas": "0x5208", "input": "0x", "type": "0x2",
            "blockHash": None if block is None else h(block),
            "blockNumber": None if block is None else "0x5",
            "transactionIndex": None if block is None else "0x0"}


class Chain:
    """Canned answers for block 5 (hash h(1005)) with transactions 1 and 2."""

    def __init__(self, block_receipts: str = "served") -> None:
        #: "served", "not found", "null" (to every block), "by number" (null to a hash, as
        #: ethereumjs 0.10.5 answers).
        self.block_receipts = block_receipts
        self.calls: Counter[str] = Counter()
        self.override: dict[str, Any] = {}

    def answer(self, method: str, params: list[Any]) -> Any:
        self.calls[method] += 1
        if method in self.override:
            return self.override[method]
        if method == "eth_getBlockByHash":
            return block_json(5, [1, 2]) if params[0] == h(1005) else None
        if method == "eth_getBlockByNumber":
            return block_json(5, [1, 2])
        if method == "eth_getBlockReceipts":
            if self.block_receipts == "not found":
                raise LookupError
            if self.block_receipts == "null":
                return None
            if self.block_receipts == "by number" and params[0] != "0x5":
                return None
            return [receipt_json(1, 0, 1005, 5), receipt_json(2, 1, 1005, 5)]
        if method == "eth_getTransactionReceipt":
            tx = int(params[0], 16)
            return receipt_json(tx, tx - 1, 1005, 5) if tx in (1, 2) else None
        if method == "eth_getTransactionByHash":
            tx = int(params[0], 16)
            return tx_json(tx, 1005 if tx in (1, 2) else None)
        if method == "eth_chainId":
            return "0x1d97c"
        raise LookupError

    def handler(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        try:
            result = self.answer(body["method"], body["params"])
        except LookupError:
            return httpx.Response(200, json={"jsonrpc": "2.0", "id": body["id"], "error": {
                "code": -32601, "message": "the method does not exist/is not available"}})
        # allow_nan: a hostile client's Infinity and NaN reach the client's parser.
        return httpx.Response(200, content=json.dumps(
            {"jsonrpc": "2.0", "id": body["id"], "result": result}, allow_nan=True),
            headers={"content-type": "application/json"})


def client(chain: Chain, **kwargs: Any) -> ExecutionClient:
    return ExecutionClient("http://127.0.0.1:8545",
                           transport=httpx.MockTransport(chain.handler), **kwargs)


async def test_blocks_transactions_and_receipts_are_cached_by_hash() -> None:
    chain = Chain()
    async with client(chain) as eth:
        block = await eth.block(bytes.fromhex(h(1005)[2:]))
        assert isinstance(block, EthBlock) and block.number == 5 and len(block.transactions) == 2
        assert await eth.block(bytes.fromhex(h(1005)[2:])) == block
        assert chain.calls["eth_getBlockByHash"] == 1
        assert await eth.block(bytes.fromhex(h(77)[2:])) is None  # unknown: not cached
        assert await eth.block(bytes.fromhex(h(77)[2:])) is None
        assert chain.calls["eth_getBlockByHash"] == 3

        receipts = await eth.block_receipts(block.hash)
        assert receipts is not None and [r.transaction_index for r in receipts] == [0, 1]
        assert receipts[0].logs[0].topics[1] == bytes.fromhex(h(8)[2:])
        assert await eth.block_receipts(block.hash) == receipts
        assert chain.calls["eth_getBlockReceipts"] == 1
        # the block's receipts are filed by transaction too
        assert await eth.receipt(receipts[1].transaction_hash) == receipts[1]
        assert chain.calls["eth_getTransactionReceipt"] == 0

        tx = await eth.transaction(bytes.fromhex(h(1)[2:]))
        assert tx is not None and tx.block_number == 5
        await eth.transaction(bytes.fromhex(h(1)[2:]))
        assert chain.calls["eth_getTransactionByHash"] == 1
        pending = await eth.transaction(bytes.fromhex(h(9)[2:]))
        assert pending is not None and pending.block_hash is None
        await eth.transaction(bytes.fromhex(h(9)[2:]))  # pending: asked again
        assert chain.calls["eth_getTransactionByHash"] == 3

        figures = eth.cache_statistics()
        assert figures["blocks"].hits == 2 and figures["blocks"].misses == 3
        assert figures["block_receipts"].hit_ratio == 0.5
        text = generate_latest(metrics.REGISTRY).decode()
        assert 'alys_execution_cache_hit_ratio{cache="blocks"}' in text
        assert 'alys_execution_cache_hits_total{cache="receipts"}' in text


def test_an_lru_cache_forgets_the_least_recently_used_first() -> None:
    cache: LruCache[int, str] = LruCache("blocks", 2)
    cache.put(1, "a")
    cache.put(2, "b")
    assert cache.get(1) == "a"  # 1 is now the most recent
    cache.put(3, "c")
    assert 2 not in cache and cache.get(1) == "a" and cache.get(3) == "c"
    assert cache.get(2) is None
    assert cache.statistics().size == 2 and cache.statistics().misses == 1
    with pytest.raises(ValueError, match="capacity"):
        LruCache("blocks", 0)


@pytest.mark.parametrize("served", ["not found", "null"])
async def test_block_receipts_from_transactions_where_the_client_does_not_serve_them(
        served: str) -> None:
    chain = Chain(served)
    async with client(chain) as eth:
        block_hash = bytes.fromhex(h(1005)[2:])
        receipts = await eth.block_receipts(block_hash)
        assert receipts is not None and len(receipts) == 2
        assert chain.calls["eth_getTransactionReceipt"] == 2
        assert eth.block_receipts_by is None
        asked = chain.calls["eth_getBlockReceipts"]  # 1, or 2 for "null": by hash, by number
        eth.block_receipt_lists = LruCache("block_receipts", 4)  # forget the list
        assert await eth.block_receipts(block_hash) == receipts
        assert chain.calls["eth_getBlockReceipts"] == asked  # not asked again
        assert chain.calls["eth_getTransactionReceipt"] == 2  # the receipts were cached


async def test_block_receipts_by_number_where_the_client_answers_null_to_a_hash() -> None:
    chain = Chain("by number")
    async with client(chain) as eth:
        block_hash = bytes.fromhex(h(1005)[2:])
        receipts = await eth.block_receipts(block_hash)
        assert receipts is not None and [r.transaction_hash for r in receipts] == [
            bytes.fromhex(h(1)[2:]), bytes.fromhex(h(2)[2:])]
        assert eth.block_receipts_by == "number"
        assert chain.calls["eth_getBlockReceipts"] == 2  # by hash (null), then by number
        assert chain.calls["eth_getTransactionReceipt"] == 0
        eth.block_receipt_lists.clear()
        await eth.block_receipts(block_hash)
        assert chain.calls["eth_getBlockReceipts"] == 3  # by number at once


@pytest.mark.parametrize(("receipts", "problem"), [
    ([], "has 2 transactions but 0 receipts"),
    (lambda: [receipt_json(2, 0, 1005, 5), receipt_json(1, 1, 1005, 5)], "receipt 0 is for"),
    (lambda: [receipt_json(1, 0, 1005, 5), receipt_json(2, 1, 1006, 5)], "of block 0x"),
    (lambda: [receipt_json(1, 0, 1005, 5), receipt_json(2, 2, 1005, 5)], r"\(index 2\)"),
    ({"not": "a list"}, "expected an array of receipts"),
    (lambda: [{**receipt_json(1, 0, 1005, 5), "status": "0x2"}, receipt_json(2, 1, 1005, 5)],
     r"result\[0\]\.status: expected 0x0 or 0x1"),
])
async def test_receipts_that_do_not_match_their_block_are_refused(receipts: Any,
                                                                 problem: str) -> None:
    chain = Chain()
    chain.override["eth_getBlockReceipts"] = receipts() if callable(receipts) else receipts
    async with client(chain) as eth:
        with pytest.raises(EngineError, match=problem):
            await eth.block_receipts(bytes.fromhex(h(1005)[2:]))
        assert eth.block_receipt_lists.statistics().size == 0


async def test_a_receipt_from_a_block_that_lost_a_reorg_is_fetched_again() -> None:
    chain = Chain("not found")
    async with client(chain) as eth:
        stale = EthReceipt.from_json(receipt_json(1, 0, 999, 5))
        eth.receipts.put(stale.transaction_hash, stale)
        receipts = await eth.block_receipts(bytes.fromhex(h(1005)[2:]))
        assert receipts is not None and receipts[0].block_hash == bytes.fromhex(h(1005)[2:])
        assert chain.calls["eth_getTransactionReceipt"] == 2


async def test_answers_for_something_else_than_asked_are_refused() -> None:
    chain = Chain()
    chain.override["eth_getBlockByHash"] = block_json(5, [1], block=1006)
    async with client(chain) as eth:
        with pytest.raises(EngineError, match=r"asked for block 0x0*3ed, got 0x0*3ee"):
            await eth.block(bytes.fromhex(h(1005)[2:]))
    chain = Chain()
    chain.override["eth_getBlockByNumber"] = block_json(6, [])
    async with client(chain) as eth:
        with pytest.raises(EngineError, match="asked for block 5, got block 6"):
            await eth.block_by_number(5)
        with pytest.raises(ValueError, match="a block tag is one of"):
            await eth.block_by_number("newest")


async def test_an_unreachable_client_is_engine_unreachable() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    async with ExecutionClient("http://127.0.0.1:9", transport=httpx.MockTransport(refuse)
                               ) as eth:
        with pytest.raises(EngineUnreachable, match="cannot reach the execution client"):
            await eth.chain_id()


# -- hostile answers --------------------------------------------------------------------------

CALLS: list[tuple[str, Callable[[ExecutionClient], Any]]] = [
    ("eth_getBlockByHash", lambda eth: eth.block(bytes.fromhex(h(1005)[2:]))),
    ("eth_getBlockByNumber", lambda eth: eth.block_by_number("latest")),
    ("eth_getTransactionByHash", lambda eth: eth.transaction(bytes.fromhex(h(1)[2:]))),
    ("eth_getTransactionReceipt", lambda eth: eth.receipt(bytes.fromhex(h(1)[2:]))),
    ("eth_getBlockReceipts", lambda eth: eth.block_receipts(bytes.fromhex(h(1005)[2:]))),
    ("eth_chainId", lambda eth: eth.chain_id()),
    ("eth_getBalance", lambda eth: eth.balance(bytes(20))),
    ("eth_sendRawTransaction", lambda eth: eth.send_raw_transaction(b"\x02")),
]
GOOD: dict[str, Any] = {
    "eth_getBlockByHash": block_json(5, [1, 2]),
    "eth_getBlockByNumber": block_json(5, [1, 2]),
    "eth_getTransactionByHash": tx_json(1, 1005),
    "eth_getTransactionReceipt": receipt_json(1, 0, 1005, 5),
    "eth_getBlockReceipts": [receipt_json(1, 0, 1005, 5), receipt_json(2, 1, 1005, 5)],
    "eth_chainId": "0x1d97c",
    "eth_getBalance": "0x10",
    "eth_sendRawTransaction": h(3),
}


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(CALLS), st.data())
def test_any_mutated_answer_gives_a_value_or_an_engine_error(
        call: tuple[str, Callable[[ExecutionClient], Any]], data: st.DataObject) -> None:
    """Each answer of the right shape with one member replaced by junk (a wrong type, an
    overlong hex string, a nested object...): a parsed value or an EngineError, nothing
    else, whatever the member."""
    method, invoke = call
    answer = json.loads(json.dumps(GOOD[method]))
    if data.draw(st.booleans(), label="mutate a member"):
        locations = _locations(answer)
        if locations:
            path = data.draw(st.sampled_from(locations))
            answer = _set(answer, path, data.draw(junk))
    else:
        answer = data.draw(junk, label="the whole result")
    chain = Chain()
    chain.override[method] = answer

    async def run() -> None:
        async with client(chain) as eth:
            try:
                await invoke(eth)
            except EngineError:
                pass

    trio.run(run)


# -- kept-alive connections, on a real socket ---------------------------------------------------


@asynccontextmanager
async def serve(chain: Chain, peers: list[tuple[str, int]]) -> AsyncIterator[str]:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                await send({"type": message["type"] + ".complete"})
                if message["type"] == "lifespan.shutdown":
                    return
        peers.append(scope["client"])
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        response = chain.handler(httpx.Request("POST", "http://x/", content=body))
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(response.content)).encode())]})
        await send({"type": "http.response.body", "body": response.content})

    config = hypercorn.config.Config()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = None
    config.graceful_timeout = 0.0
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(functools.partial(
            hypercorn.trio.serve, cast(ASGIFramework, app), config, mode="asgi"))
        try:
            yield binds[0]
        finally:
            nursery.cancel_scope.cancel()


@pytest.mark.real_clock
async def test_connections_are_kept_alive_and_reused() -> None:
    chain = Chain()
    peers: list[tuple[str, int]] = []
    async with serve(chain, peers) as url, ExecutionClient(url) as eth:
        for _ in range(20):
            assert await eth.chain_id() == 121212
            await eth.block_by_number("latest")
    assert len(peers) == 40
    assert len(set(peers)) == 1, f"{len(set(peers))} connections for 40 calls"
