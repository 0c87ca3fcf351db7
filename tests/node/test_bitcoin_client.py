"""BitcoinClient without a server: hostile answers through an httpx MockTransport (wrong
types at every position, integers past 2^64, NaN, deep nesting, truncations) give a value or
a BitcoinError naming the method, nothing else; batches, Core's answer shapes, retries and
the circuit breaker in virtual time, authentication failures."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Coroutine
from decimal import Decimal
from typing import Any

import httpx
import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from node.integration.bitcoin import (
    BitcoinAuthError,
    BitcoinCircuitOpen,
    BitcoinClient,
    BitcoinError,
    BitcoinUnreachable,
)
from node.jsondepth import MAX_DEPTH
from node.types.bitcoin import OutPoint, Transaction, TxIn, TxOut, hash_to_hex

TX = Transaction(2, [TxIn(OutPoint(b"\x11" * 32, 0), sequence=0xFFFFFFFD)],
                 [TxOut(49_999_980_000, b"\x51\x20" + b"\x22" * 32)], 0)
TXID = hash_to_hex(TX.txid())
BLOCK = "33" * 32
PREV = "44" * 32

#: Valid answers, shaped as btcd v0.26.2 (and Bitcoin Core) write them.
ANSWERS: dict[str, Any] = {
    "getblockchaininfo": {"chain": "regtest", "blocks": 101, "headers": 101,
                          "bestblockhash": BLOCK, "difficulty": 1, "mediantime": 1296688602,
                          "pruned": False, "bip9_softforks": {
                              "taproot": {"status": "active", "bit": 2, "since": 0}}},
    "getblockcount": 101,
    "getblockhash": BLOCK,
    "getblock": {"hash": BLOCK, "confirmations": 3, "size": 197, "weight": 788, "height": 1,
                 "version": 536870912, "merkleroot": TXID, "tx": [TXID],
                 "time": 1795932919, "nonce": 0, "bits": "207fffff",
                 "previousblockhash": PREV},
    "getblockheader": {"hash": BLOCK, "confirmations": 3, "height": 1, "version": 536870912,
                       "merkleroot": TXID, "time": 1795932919, "nonce": 0,
                       "bits": "207fffff", "previousblockhash": PREV},
    "getrawtransaction": {"hex": TX.to_bytes().hex(), "txid": TXID, "blockhash": BLOCK,
                          "confirmations": 3},
    "gettxout": {"bestblock": BLOCK, "confirmations": 3, "value": Decimal("499.9998"),
                 "scriptPubKey": {"hex": "5120" + "22" * 32}, "coinbase": False},
    "estimatesmartfee": {"feerate": Decimal("0.00012345"), "blocks": 1},
    "sendrawtransaction": TXID,
    "testmempoolaccept": [{"txid": TXID, "allowed": True, "vsize": 111}],
}

Call = Callable[[BitcoinClient], Coroutine[Any, Any, Any]]
CALLS: dict[str, Call] = {
    "getblockchaininfo": lambda c: c.getblockchaininfo(),
    "getblockcount": lambda c: c.getblockcount(),
    "getblockhash": lambda c: c.getblockhash(1),
    "getblock": lambda c: c.getblock(bytes.fromhex(BLOCK)),
    "getblockheader": lambda c: c.getblockheader(bytes.fromhex(BLOCK)),
    "getrawtransaction": lambda c: c.getrawtransaction(TX.txid()),
    "gettxout": lambda c: c.gettxout(TX.txid(), 0),
    "estimatesmartfee": lambda c: c.estimatesmartfee(1),
    "sendrawtransaction": lambda c: c.sendrawtransaction(TX.to_bytes()),
    "testmempoolaccept": lambda c: c.testmempoolaccept([TX.to_bytes()]),
}


def _dumps(value: Any) -> str:
    return json.dumps(value, default=lambda d: float(d) if isinstance(d, Decimal) else str(d))


def server(answer: Callable[[dict[str, Any]], str | bytes],
           status: int = 200) -> httpx.MockTransport:
    """A transport whose body for each request is ``answer(request)``."""

    def handle(request: httpx.Request) -> httpx.Response:
        body = answer(json.loads(request.content))
        return httpx.Response(status, content=body if isinstance(body, bytes)
                              else body.encode())

    return httpx.MockTransport(handle)


def ok(result: Any) -> Callable[[dict[str, Any]], str]:
    return lambda req: _dumps({"result": result, "error": None, "id": req["id"]})


def client(transport: httpx.AsyncBaseTransport, **kwargs: Any) -> BitcoinClient:
    return BitcoinClient("http://127.0.0.1:18443", user="u", password="p",
                         transport=transport, **kwargs)


async def test_every_method_reads_a_valid_answer() -> None:
    for method, call in CALLS.items():
        async with client(server(ok(ANSWERS[method]))) as btc:
            assert await call(btc) is not None, method


# --------------------------------------------------------------------------- hostile answers

junk = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70)
    | st.decimals(allow_nan=False, allow_infinity=False) | st.text(max_size=8)
    | st.sampled_from(["", "00", "zz", "33" * 32, "207fffff", "active", TXID[:63]]),
    lambda inner: st.lists(inner, max_size=3)
    | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=6,
)


def _locations(obj: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [path]
    if isinstance(obj, dict):
        for key, child in obj.items():
            found += _locations(child, (*path, key))
    elif isinstance(obj, list):
        for i, child in enumerate(obj):
            found += _locations(child, (*path, i))
    return found


def _replace(obj: Any, path: tuple[Any, ...], value: Any) -> Any:
    if not path:
        return value
    target = obj
    for part in path[:-1]:
        target = target[part]
    target[path[-1]] = value
    return obj


async def _value_or_bitcoin_error(method: str, body: str | bytes) -> None:
    async with client(server(lambda req: body if isinstance(body, bytes)
                             else body.replace('"id": 1', f'"id": {req["id"]}')),
                      retries=0) as btc:
        try:
            await CALLS[method](btc)
        except BitcoinError as exc:
            assert method in str(exc) or "auth" in str(exc), exc


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
async def test_a_wrong_value_anywhere_is_a_value_or_a_bitcoin_error(data: st.DataObject
                                                                   ) -> None:
    method = data.draw(st.sampled_from(sorted(CALLS)))
    answer = copy.deepcopy(ANSWERS[method])
    where = data.draw(st.sampled_from(_locations(answer)))
    hostile = _replace(answer, where, data.draw(junk))
    await _value_or_bitcoin_error(method, _dumps({"result": hostile, "error": None, "id": 1}))


@settings(max_examples=300, deadline=None)
@given(st.data())
async def test_a_mangled_body_is_a_value_or_a_bitcoin_error(data: st.DataObject) -> None:
    method = data.draw(st.sampled_from(sorted(CALLS)))
    text = _dumps({"result": ANSWERS[method], "error": None, "id": 1})
    how = data.draw(st.sampled_from(["truncate", "nan", "huge", "deep", "bytes"]))
    if how == "truncate":
        text = text[:data.draw(st.integers(0, len(text) - 1))]
    elif how == "nan":
        text = text.replace("1", data.draw(st.sampled_from(["NaN", "Infinity", "-Infinity"])),
                            1)
    elif how == "huge":
        text = text.replace("101", str(data.draw(st.integers(2**64, 2**200))))
        text = text.replace('"confirmations": 3', f'"confirmations": {2**64 + 3}')
    elif how == "deep":
        depth = data.draw(st.integers(MAX_DEPTH - 2, MAX_DEPTH * 40))
        text = text.replace('"result": ', '"result": ' + "[" * depth, 1)
    else:
        raw = bytearray(text.encode())
        raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0x80, 0xFF))
        await _value_or_bitcoin_error(method, bytes(raw))
        return
    await _value_or_bitcoin_error(method, text)


async def test_hostile_answers_name_the_method_and_the_field() -> None:
    answer = copy.deepcopy(ANSWERS["getblock"])
    answer["tx"][0] = 7
    async with client(server(ok(answer))) as btc:
        with pytest.raises(BitcoinError, match=r"getblock: malformed result: result\.tx\[0\]: "
                           "expected a 64-digit hex hash, got int 7"):
            await btc.getblock(bytes.fromhex(BLOCK))
    async with client(server(ok(2**64))) as btc:
        with pytest.raises(BitcoinError, match=r"getblockcount: .*result: integer \d+ is "
                           "outside"):
            await btc.getblockcount()
    out = copy.deepcopy(ANSWERS["gettxout"])
    out["value"] = Decimal("0.000000001")
    async with client(server(ok(out))) as btc:
        with pytest.raises(BitcoinError, match=r"result\.value: .*whole number of satoshis"):
            await btc.gettxout(TX.txid(), 0)
    async with client(server(lambda req: '{"result": NaN, "error": null, "id": 1}')) as btc:
        with pytest.raises(BitcoinError, match="getblockcount: malformed response: not JSON"):
            await btc.getblockcount()
    deep = '{"result": ' + "[" * 100_000 + "]" * 100_000 + ', "error": null, "id": 1}'
    async with client(server(lambda req: deep)) as btc:
        with pytest.raises(BitcoinError, match="not JSON"):
            await btc.getblockcount()
    async with client(server(lambda req: "x" * 2000), max_response_bytes=1000) as btc:
        with pytest.raises(BitcoinError, match="exceeds the limit of 1000 bytes"):
            await btc.getblockcount()
    tampered = copy.deepcopy(ANSWERS["getrawtransaction"])
    tampered["txid"] = "55" * 32
    async with client(server(ok(tampered))) as btc:
        with pytest.raises(BitcoinError, match=r"result\.hex: the transaction's txid is"):
            await btc.getrawtransaction(bytes.fromhex("55" * 32))


# --------------------------------------------------------------------------- shapes


async def test_core_answer_shapes() -> None:
    """Bitcoin Core 23+: deployments from getdeploymentinfo; errors with HTTP 500 (1.0
    mode); estimatesmartfee without an estimate; allowed: false in testmempoolaccept."""
    core_info = {k: v for k, v in ANSWERS["getblockchaininfo"].items() if k != "bip9_softforks"}

    def core(req: dict[str, Any]) -> str:
        method = req["method"]
        if method == "getblockchaininfo":
            result: Any = core_info
        elif method == "getdeploymentinfo":
            result = {"hash": BLOCK, "height": 101, "deployments": {
                "segwit": {"type": "buried", "active": True, "height": 0},
                "taproot": {"type": "bip9", "active": True, "height": 0,
                            "bip9": {"status": "active", "since": 0}}}}
        elif method == "estimatesmartfee":
            result = {"errors": ["Insufficient data or no feerate found"], "blocks": 2}
        else:
            return _dumps({"result": None, "error": {"code": -5, "message": "not found"},
                           "id": req["id"]})
        return _dumps({"result": result, "error": None, "id": req["id"]})

    async with client(server(core)) as btc:
        assert await btc.taproot_active()
        fee = await btc.estimatesmartfee(2)
        assert (fee.source, fee.sat_per_vbyte) == ("fallback", Decimal(2))
        assert await btc.getblock(bytes(32)) is None
    async with client(server(ok(ANSWERS["estimatesmartfee"]))) as btc:
        fee = await btc.estimatesmartfee(1)
        assert (fee.source, fee.sat_per_vbyte) == ("estimatesmartfee", Decimal("12.345"))
    refused = [{"txid": TXID, "allowed": False, "reject-reason": "mempool-min-fee-not-met"}]
    async with client(server(ok(refused))) as btc:
        (verdict,) = await btc.testmempoolaccept([TX.to_bytes()]) or []
        assert not verdict.allowed and verdict.reject_reason == "mempool-min-fee-not-met"
    error_500 = server(lambda req: _dumps({"result": None, "id": req["id"], "error": {
        "code": -8, "message": "Block height out of range"}}), status=500)
    async with client(error_500) as btc:
        with pytest.raises(BitcoinError, match="out of range") as info:
            await btc.getblockhash(5)
        assert info.value.code == -8 and info.value.http_status == 500


async def test_btcd_without_estimatesmartfee_falls_back_to_estimatefee() -> None:
    def btcd(req: dict[str, Any]) -> str:
        if req["method"] == "estimatesmartfee":
            return _dumps({"result": None, "id": req["id"],
                           "error": {"code": -32601, "message": "Method not found"}})
        return _dumps({"result": Decimal("0.00003"), "error": None, "id": req["id"]})

    async with client(server(btcd)) as btc:
        fee = await btc.estimatesmartfee(1)
        assert (fee.source, fee.sat_per_vbyte) == ("estimatefee", Decimal(3))
        assert btc.fee_method == "estimatefee"


async def test_a_batch_is_answered_in_order_whatever_order_the_server_uses() -> None:
    def reversed_batch(req: Any) -> str:
        return _dumps([{"result": f"{item['params'][0]:064x}", "error": None,
                        "id": item["id"]} for item in reversed(req)])

    async with client(server(reversed_batch)) as btc:
        hashes = await btc.getblockhashes([1, 2, 3])
        assert hashes == [bytes.fromhex(f"{h:064x}")[::-1] for h in (1, 2, 3)]
    async with client(server(lambda req: _dumps([]))) as btc:
        with pytest.raises(BitcoinError, match="0 answers to a batch of 2"):
            await btc.getblockhashes([1, 2])


# --------------------------------------------------------------------------- failures


async def test_unreachable_retries_then_the_breaker_opens_then_half_opens() -> None:
    attempts = 0
    up = False

    def handle(request: httpx.Request) -> httpx.Response:
        nonlocal attempts
        attempts += 1
        if not up:
            raise httpx.ConnectError("connection refused", request=request)
        return httpx.Response(200, json={"result": 7, "error": None,
                                         "id": json.loads(request.content)["id"]})

    btc = client(httpx.MockTransport(handle), retries=2, backoff=0.5, max_backoff=1.0,
                 breaker_threshold=3, breaker_reset=30.0)
    start = trio.current_time()
    with pytest.raises(BitcoinUnreachable, match="getblockcount: cannot reach"):
        await btc.getblockcount()
    assert attempts == 3 and trio.current_time() - start == pytest.approx(1.5)
    assert btc.breaker.state == "open"
    with pytest.raises(BitcoinCircuitOpen, match="unreachable 3 times"):
        await btc.getblockcount()
    assert attempts == 3  # not tried
    await trio.sleep(30)
    assert btc.breaker.state == "half-open"
    with pytest.raises(BitcoinUnreachable):
        await btc.getblockcount()  # the trial fails: open again at once
    assert attempts == 4 and btc.breaker.state == "open"
    up = True
    await trio.sleep(30)
    assert await btc.getblockcount() == 7
    assert btc.breaker.state == "closed"
    await btc.aclose()


async def test_auth_failures_are_clear(tmp_path: Any) -> None:
    refuse = server(lambda req: "401 Unauthorized.", status=401)
    async with client(refuse) as btc:
        with pytest.raises(BitcoinAuthError, match="refused the credentials"):
            await btc.getblockcount()
    async with BitcoinClient(cookie_file=tmp_path / "missing", transport=refuse) as btc:
        with pytest.raises(BitcoinAuthError, match="cannot read the cookie file"):
            await btc.getblockcount()
    with pytest.raises(ValueError, match="user and password, or cookie_file"):
        BitcoinClient(user="u")
