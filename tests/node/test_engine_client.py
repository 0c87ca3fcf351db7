"""The Engine API HTTP client: against the protocol-faithful test server on a real socket
(``real_clock``), against httpx mock transports for malformed answers, and the build/commit
flow helpers."""

from __future__ import annotations

import json
import os
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import attrs
import httpx
import jwt
import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from node.execution.embedded import GWEI, EmbeddedEngine
from node.integration.engine import (
    EngineClient,
    JwtSecretError,
    PayloadStatusError,
    build_block,
    commit_block,
    load_jwt_secret,
)
from node.types.execution import (
    DEFAULT_FEE_RECIPIENT,
    ENGINE_CAPABILITIES,
    ZERO_HASH,
    EngineError,
    ExecutionEngine,
    ExecutionPayload,
    ForkchoiceState,
    ForkchoiceUpdatedResult,
    GetPayloadResult,
    PayloadAttributes,
    PayloadStatus,
    PayloadStatusKind,
    Receipt,
    Withdrawal,
)

from .engine_server import EngineApp, RecordedCall, engine_server
from .test_execution_types import (
    FCU_V2_ATTRIBUTES,
    FCU_V2_STATE,
    GET_PAYLOAD_V2_EXAMPLE_ID,
    NEW_PAYLOAD_V2_EXAMPLE,
)

SECRET = bytes(range(32))
ALICE = bytes.fromhex("aa" * 20)
real_clock = pytest.mark.real_clock


# ----------------------------------------------------------------- the JWT secret file


def test_load_jwt_secret(tmp_path: Path) -> None:
    f = tmp_path / "jwt.hex"
    f.write_text(SECRET.hex())
    assert load_jwt_secret(f) == SECRET
    f.write_text("  0x" + SECRET.hex().upper() + "\n")
    assert load_jwt_secret(str(f)) == SECRET


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("", "found 0 characters"),
        ("ab" * 31, "found 62 characters"),
        ("0x" + "ab" * 33, "found 66 characters"),
        ("g" + "a" * 63, "'g' is not a hex digit"),
        ("ab" * 16 + " " + "ab" * 15 + "a", "' ' is not a hex digit"),
        ("é" * 64, "non-ASCII"),
    ],
)
def test_load_jwt_secret_refuses(tmp_path: Path, content: str, problem: str) -> None:
    f = tmp_path / "jwt.hex"
    f.write_text(content, encoding="utf-8")
    with pytest.raises(JwtSecretError, match=problem) as info:
        load_jwt_secret(f)
    assert str(f) in str(info.value)


def test_load_jwt_secret_missing_file(tmp_path: Path) -> None:
    with pytest.raises(JwtSecretError, match=r"nope\.hex: cannot read it: No such file"):
        load_jwt_secret(tmp_path / "nope.hex")


def test_client_arguments() -> None:
    with pytest.raises(ValueError, match="jwt_secret must be 32 bytes"):
        EngineClient("http://127.0.0.1:8551", b"short")
    with pytest.raises(ValueError, match="http"):
        EngineClient("127.0.0.1:8551", SECRET)
    with pytest.raises(ValueError, match="max_response_bytes"):
        EngineClient("http://127.0.0.1:8551", SECRET, max_response_bytes=0)


# ----------------------------------------------------------------- against the test server


@real_clock
async def test_capabilities_and_the_wire_format() -> None:
    record: list[RecordedCall] = []
    async with engine_server(SECRET, record=record) as url, EngineClient(url, SECRET) as client:
        assert isinstance(client, ExecutionEngine)
        assert await client.exchange_capabilities() == list(ENGINE_CAPABILITIES)
        assert await client.exchange_capabilities(["engine_newPayloadV1"]) == list(
            ENGINE_CAPABILITIES
        )
    assert [(r.method, r.params, r.error) for r in record] == [
        ("engine_exchangeCapabilities", [list(ENGINE_CAPABILITIES)], None),
        ("engine_exchangeCapabilities", [["engine_newPayloadV1"]], None),
    ]
    for r in record:
        assert set(r.claims) == {"iat"}
        assert abs(r.claims["iat"] - time.time()) < 10


@real_clock
async def test_build_and_commit_blocks_over_http() -> None:
    engine = EmbeddedEngine()
    record: list[RecordedCall] = []
    async with engine_server(SECRET, engine=engine, record=record) as url:
        async with EngineClient(url, SECRET) as client:
            head = engine.genesis.block_hash
            hashes = [head]
            finalized: bytes | None = None
            for n in range(1, 6):
                if n >= 4:
                    finalized = hashes[n - 3]
                ws = [Withdrawal(0, 0, ALICE, 10 * n), Withdrawal(0, 0, DEFAULT_FEE_RECIPIENT, 1)]
                payload = await build_block(client, head, finalized, 1000 + n, ALICE, ws)
                assert (payload.block_number, payload.parent_hash) == (n, head)
                assert payload.fee_recipient == ALICE and payload.prev_randao == ZERO_HASH
                head = await commit_block(client, payload, finalized)
                assert head == payload.block_hash
                hashes.append(head)
    assert engine.head.block_hash == head and engine.head.block_number == 5
    assert engine.forkchoice == ForkchoiceState(head, hashes[2], hashes[2])
    assert engine.balance_of(ALICE) == 10 * (1 + 2 + 3 + 4 + 5) * GWEI
    assert engine.balance_of(DEFAULT_FEE_RECIPIENT) == 5 * GWEI
    methods = [r.method for r in record]
    per_block = [
        "engine_forkchoiceUpdatedV2",
        "engine_getPayloadV2",
        "engine_forkchoiceUpdatedV2",
        "engine_newPayloadV2",
        "engine_forkchoiceUpdatedV2",
    ]
    assert methods == per_block * 5
    assert all(r.error is None for r in record)
    # The build call carries the attributes the original sends.
    build = record[-5].params
    assert build[0]["safeBlockHash"] == build[0]["finalizedBlockHash"] == "0x" + hashes[2].hex()
    assert build[1]["prevRandao"] == "0x" + "00" * 32
    assert build[1]["timestamp"] == hex(1005)
    assert build[1]["withdrawals"][0] == {
        "index": "0x0",
        "validatorIndex": "0x0",
        "address": "0x" + ALICE.hex(),
        "amount": hex(50),
    }
    assert record[-3].params[1] is None  # commit's first forkchoiceUpdated has no attributes


@real_clock
async def test_jwt_is_checked() -> None:
    now = time.time()
    async with engine_server(SECRET) as url:
        async with EngineClient(url, os.urandom(32)) as wrong:
            with pytest.raises(EngineError) as info:
                await wrong.exchange_capabilities()
        assert (info.value.http_status, info.value.code) == (401, None)
        assert "Signature verification failed" in info.value.message
        for skew, ok in ((-120, False), (+120, False), (-30, True), (+30, True)):
            async with EngineClient(url, SECRET, clock=_skewed(now + skew)) as client:
                if ok:
                    await client.exchange_capabilities()
                else:
                    with pytest.raises(EngineError, match="stale token") as info:
                        await client.exchange_capabilities()
                    assert info.value.http_status == 401

        body = json.dumps(
            {"jsonrpc": "2.0", "id": 1, "method": "engine_exchangeCapabilities", "params": [[]]}
        )
        tokens = {
            "missing": None,
            "alg none": jwt.encode({"iat": int(now)}, None, algorithm="none"),
            "HS512": jwt.encode({"iat": int(now)}, SECRET * 2, algorithm="HS512"),
            "no iat": jwt.encode({"id": "x"}, SECRET, algorithm="HS256"),
            "iat text": jwt.encode({"iat": "now"}, SECRET, algorithm="HS256"),
        }
        async with httpx.AsyncClient() as raw:
            for name, token in tokens.items():
                headers = {"content-type": "application/json"}
                if token is not None:
                    headers["authorization"] = f"Bearer {token}"
                response = await raw.post(url, content=body, headers=headers)
                assert response.status_code == 401, name
            good = jwt.encode({"iat": int(now), "clv": "alys", "id": "n1"}, SECRET, "HS256")
            response = await raw.post(
                url,
                content=body,
                headers={"content-type": "application/json", "authorization": f"Bearer {good}"},
            )
            assert response.status_code == 200, "unknown claims are ignored"


def _skewed(at: float) -> Callable[[], float]:
    return lambda: at


async def _post(client: httpx.AsyncClient, url: str, body: Any, **headers: str) -> httpx.Response:
    token = jwt.encode({"iat": int(time.time())}, SECRET, algorithm="HS256")
    all_headers = {"content-type": "application/json", "authorization": f"Bearer {token}"}
    all_headers.update(headers)
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return await client.post(url, content=content, headers=all_headers)


def _rpc(method: str, *params: Any, rid: Any = 1) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": rid, "method": method, "params": list(params)}


@real_clock
async def test_server_answers_protocol_errors_with_the_spec_codes() -> None:
    engine = EmbeddedEngine()
    genesis = "0x" + engine.genesis.block_hash.hex()
    good_state = {"headBlockHash": genesis, "safeBlockHash": genesis, "finalizedBlockHash": genesis}
    v1_payload = {k: v for k, v in NEW_PAYLOAD_V2_EXAMPLE.items() if k != "withdrawals"}
    v3_payload = {**NEW_PAYLOAD_V2_EXAMPLE, "blobGasUsed": "0x0", "excessBlobGas": "0x0"}
    cases: list[tuple[Any, int, str]] = [
        (b"{not json", -32700, "Parse error"),
        (b"", -32700, "Parse error"),
        ([], -32600, "Invalid Request"),
        ("engine_getPayloadV2", -32600, "Invalid Request"),
        ({"jsonrpc": "1.0", "id": 1, "method": "engine_getPayloadV2", "params": []}, -32600, ""),
        ({"jsonrpc": "2.0", "method": "engine_getPayloadV2", "params": []}, -32600, ""),
        ({"jsonrpc": "2.0", "id": 1.5, "method": "engine_getPayloadV2", "params": []}, -32600, ""),
        ({"jsonrpc": "2.0", "id": 1, "method": 7, "params": []}, -32600, ""),
        ({**_rpc("engine_getPayloadV2"), "extra": 1}, -32600, ""),
        ({**_rpc("engine_getPayloadV2"), "params": "0x00"}, -32600, ""),
        (_rpc("engine_getPayloadV1", "0x0000000000000000"), -32601, "Method not found"),
        (_rpc("eth_blockNumber"), -32601, ""),
        (_rpc("engine_getPayloadV2"), -32602, "Invalid params"),
        (_rpc("engine_getPayloadV2", GET_PAYLOAD_V2_EXAMPLE_ID), -32602, ""),
        (_rpc("engine_getPayloadV2", "0x00000000000000000"), -32602, ""),
        (_rpc("engine_getPayloadV2", 5), -32602, ""),
        ({**_rpc("engine_getPayloadV2"), "params": {"payloadId": "0x00"}}, -32602, ""),
        (_rpc("engine_newPayloadV2", v1_payload), -32602, ""),
        (_rpc("engine_newPayloadV2", v3_payload), -32602, ""),
        (
            _rpc("engine_newPayloadV2", {**NEW_PAYLOAD_V2_EXAMPLE, "gasUsed": "0x0bad2e8"}),
            -32602,
            "",
        ),
        (_rpc("engine_newPayloadV2", NEW_PAYLOAD_V2_EXAMPLE, []), -32602, ""),
        (_rpc("engine_forkchoiceUpdatedV2"), -32602, ""),
        (_rpc("engine_forkchoiceUpdatedV2", good_state, None, None), -32602, ""),
        (_rpc("engine_forkchoiceUpdatedV2", good_state, {"timestamp": "0x1"}), -32602, ""),
        (_rpc("engine_exchangeCapabilities", ["a", 1]), -32602, ""),
        (_rpc("engine_getPayloadV2", "0x0000000000000001"), -38001, "Unknown payload"),
        (
            _rpc(
                "engine_forkchoiceUpdatedV2", {**good_state, "finalizedBlockHash": "0x" + "11" * 32}
            ),
            -38002,
            "Invalid forkchoice state",
        ),
        (
            _rpc(
                "engine_forkchoiceUpdatedV2", good_state, {**FCU_V2_ATTRIBUTES, "timestamp": "0x0"}
            ),
            -38003,
            "Invalid payload attributes",
        ),
    ]
    async with engine_server(SECRET, engine=engine) as url, httpx.AsyncClient() as client:
        for body, code, message in cases:
            response = await _post(client, url, body)
            assert response.status_code == 200, body
            answer = response.json()
            assert answer["jsonrpc"] == "2.0"
            assert answer["error"]["code"] == code, (body, answer)
            assert answer["error"]["data"] is None  # common.md: null data except -32000
            if message:
                assert answer["error"]["message"] == message
            if isinstance(body, dict) and type(body.get("id")) is int and code != -32600:
                assert answer["id"] == body["id"]
        # A batch is answered in order, with each request's id.
        batch = [
            _rpc("engine_exchangeCapabilities", [], rid="a"),
            _rpc("engine_getPayloadV2", "0x0000000000000001", rid=2),
            _rpc("engine_forkchoiceUpdatedV2", good_state, rid=None),
        ]
        answers = (await _post(client, url, batch)).json()
        assert [a["id"] for a in answers] == ["a", 2, None]
        assert answers[0]["result"] == list(ENGINE_CAPABILITIES)
        assert answers[1]["error"]["code"] == -38001
        assert answers[2]["result"]["payloadStatus"]["status"] == "VALID"
        # HTTP-level refusals.
        assert (
            await _post(client, url, _rpc("x"), **{"content-type": "text/plain"})
        ).status_code == 415
        token = jwt.encode({"iat": int(time.time())}, SECRET, algorithm="HS256")
        response = await client.get(url, headers={"authorization": f"Bearer {token}"})
        assert response.status_code == 405 and response.headers["allow"] == "POST"
        assert (await client.get(url)).status_code == 401
        big = b'{"pad": "' + b"x" * (6 * 1024 * 1024) + b'"}'
        assert (await _post(client, url, big)).status_code == 413


@real_clock
async def test_published_examples_over_the_wire() -> None:
    async with engine_server(SECRET) as url, httpx.AsyncClient() as client:
        answer = (
            await _post(
                client, url, _rpc("engine_forkchoiceUpdatedV2", FCU_V2_STATE, FCU_V2_ATTRIBUTES)
            )
        ).json()
        # Unknown head (paris.md): SYNCING, no build process.
        assert answer["result"] == {
            "payloadStatus": {
                "status": "SYNCING",
                "latestValidHash": None,
                "validationError": None,
            },
            "payloadId": None,
        }
        answer = (
            await _post(client, url, _rpc("engine_newPayloadV2", NEW_PAYLOAD_V2_EXAMPLE))
        ).json()
        # The example's hash is a keccak of its RLP header; ours differs, so the hash check
        # (done first, in every case) fails: INVALID with a null latestValidHash (shanghai.md).
        result = PayloadStatus.from_json(answer["result"])
        assert (result.status, result.latest_valid_hash) == (PayloadStatusKind.INVALID, None)
        assert "block hash mismatch" in (result.validation_error or "")
        caps = ["engine_exchangeTransitionConfigurationV1", "engine_forkchoiceUpdatedV1"]
        answer = (await _post(client, url, _rpc("engine_exchangeCapabilities", caps))).json()
        assert answer["result"] == list(ENGINE_CAPABILITIES)


@real_clock
async def test_json_rpc_errors_surface_as_engine_errors() -> None:
    engine = EmbeddedEngine()
    g = engine.genesis.block_hash
    async with engine_server(SECRET, engine=engine) as url, EngineClient(url, SECRET) as client:
        with pytest.raises(EngineError) as info:
            await client.get_payload(b"\x00" * 8)
        assert (info.value.code, info.value.message) == (-38001, "Unknown payload")
        assert info.value.method == "engine_getPayloadV2" and info.value.data is None
        with pytest.raises(EngineError) as info:
            await client.forkchoice_updated(ForkchoiceState(g, b"\x01" * 32, g))
        assert info.value.code == -38002
        with pytest.raises(EngineError) as info:
            await build_block(client, g, None, 0)
        assert info.value.code == -38003
        with pytest.raises(EngineError) as info:
            await client.call("engine_getPayloadV1", ["0x" + "00" * 8])
        assert info.value.code == -32601
        # newPayload of a damaged payload: INVALID, which commit_block refuses.
        payload = await build_block(client, g, None, 1)
        bad = attrs.evolve(payload, state_root=b"\x00" * 32)
        with pytest.raises(PayloadStatusError) as status_info:
            await commit_block(client, bad, None)
        assert status_info.value.status.status is PayloadStatusKind.INVALID
        assert "block hash mismatch" in str(status_info.value)
        assert engine.head.block_number == 0


@real_clock
async def test_oversize_responses_are_refused() -> None:
    async with engine_server(SECRET) as url:
        async with EngineClient(url, SECRET) as roomy:
            payload = await build_block(roomy, EmbeddedEngine().genesis.block_hash, None, 1)
        size = len(json.dumps({"result": {"executionPayload": payload.to_json()}}))
        async with EngineClient(url, SECRET, max_response_bytes=size // 2) as tight:
            await tight.exchange_capabilities()  # small answers still fit
            with pytest.raises(EngineError, match="exceeds the limit") as info:
                await build_block(tight, payload.parent_hash, None, 1)
            assert info.value.method == "engine_getPayloadV2"


@real_clock
async def test_unreachable_engine() -> None:
    with trio.socket.socket() as sock:
        await sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    async with EngineClient(f"http://127.0.0.1:{port}", SECRET, timeout=2.0) as client:
        with pytest.raises(EngineError, match="cannot reach the engine"):
            await client.exchange_capabilities()


# ----------------------------------------------------------------- mock transports


def _mock(handler: Callable[[httpx.Request], Any], **kwargs: Any) -> EngineClient:
    return EngineClient(
        "http://engine.test:8551", SECRET, transport=httpx.MockTransport(handler), **kwargs
    )


def _reply(request: httpx.Request, result: Any, **extra: Any) -> httpx.Response:
    rid = json.loads(request.content)["id"]
    return httpx.Response(200, json={"jsonrpc": "2.0", "id": rid, "result": result, **extra})


async def test_requests_are_exact_json_rpc_with_a_fresh_jwt() -> None:
    seen: list[httpx.Request] = []
    clock = iter([1_700_000_000.9, 1_700_000_007.2])
    fcu = {
        "payloadStatus": {"status": "VALID", "latestValidHash": FCU_V2_STATE["headBlockHash"]},
        "payloadId": "0x0000000021f32cc1",
    }

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return _reply(request, fcu)

    async with _mock(handler, clock=lambda: next(clock)) as client:
        state = ForkchoiceState.from_json(FCU_V2_STATE)
        attributes = PayloadAttributes.from_json(FCU_V2_ATTRIBUTES)
        result = await client.forkchoice_updated(state, attributes)
        assert result.payload_id == bytes.fromhex("0000000021f32cc1")
        assert result.payload_status.validation_error is None
        await client.forkchoice_updated(state)
    first, second = seen
    assert first.method == "POST" and first.url == "http://engine.test:8551"
    assert first.headers["content-type"] == "application/json"
    assert json.loads(first.content) == {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "engine_forkchoiceUpdatedV2",
        "params": [FCU_V2_STATE, FCU_V2_ATTRIBUTES],
    }
    assert json.loads(second.content)["params"] == [FCU_V2_STATE, None]
    assert json.loads(second.content)["id"] == 2
    tokens = [r.headers["authorization"].removeprefix("Bearer ") for r in seen]
    assert jwt.get_unverified_header(tokens[0])["alg"] == "HS256"
    claims = [jwt.decode(t, SECRET, algorithms=["HS256"]) for t in tokens]
    assert claims == [{"iat": 1_700_000_000}, {"iat": 1_700_000_007}]


PAYLOAD = ExecutionPayload.from_json(NEW_PAYLOAD_V2_EXAMPLE)


@pytest.mark.parametrize(
    ("response", "problem"),
    [
        (httpx.Response(200, content=b"<html>"), "not JSON"),
        (httpx.Response(200, json=[1]), "expected a JSON-RPC object"),
        (httpx.Response(200, json={"jsonrpc": "1.0", "id": 1, "result": {}}), "'jsonrpc' must"),
        (httpx.Response(200, json={"jsonrpc": "2.0", "id": 99, "result": {}}), "does not match"),
        (httpx.Response(200, json={"jsonrpc": "2.0", "id": "1", "result": {}}), "does not match"),
        (httpx.Response(200, json={"jsonrpc": "2.0", "id": 1}), "neither 'result' nor 'error'"),
        (
            httpx.Response(200, json={"jsonrpc": "2.0", "id": 1, "error": "boom"}),
            "bad error object",
        ),
        (
            httpx.Response(200, json={"jsonrpc": "2.0", "id": 1, "result": {"status": "FINE"}}),
            "result.status",
        ),
        (httpx.Response(200, json={"jsonrpc": "2.0", "id": 1, "result": None}), "malformed result"),
        (httpx.Response(500, text="internal"), "HTTP error"),
        (httpx.Response(401, text="invalid token"), "invalid token"),
        (httpx.Response(200, headers={"content-length": "99999999"}, content=b"{}"), "exceeds"),
    ],
)
async def test_malformed_answers_raise_engine_error(response: httpx.Response, problem: str) -> None:
    async with _mock(lambda request: response) as client:
        with pytest.raises(EngineError, match=problem) as info:
            await client.new_payload(PAYLOAD)
    assert info.value.code is None
    assert info.value.method == "engine_newPayloadV2"
    if response.status_code != 200:
        assert info.value.http_status == response.status_code


async def test_error_objects_keep_code_message_and_data() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        error = {"code": -32000, "message": "Server error", "data": {"err": "Database corrupted"}}
        return httpx.Response(400, json={"jsonrpc": "2.0", "id": 1, "error": error})

    async with _mock(handler) as client:
        with pytest.raises(EngineError) as info:
            await client.get_payload(b"\x01" * 8)
    assert (info.value.code, info.value.message) == (-32000, "Server error")
    assert info.value.data == {"err": "Database corrupted"}
    assert info.value.http_status == 400
    assert "Database corrupted" in str(info.value)


async def test_results_with_members_of_later_forks_are_read() -> None:
    got = {
        "executionPayload": {**NEW_PAYLOAD_V2_EXAMPLE, "blobGasUsed": None, "excessBlobGas": None},
        "blockValue": "0x0",
        "blobsBundle": None,
        "shouldOverrideBuilder": False,
    }
    async with _mock(lambda request: _reply(request, got)) as client:
        result = await client.get_payload(b"\x01" * 8)
    assert result == GetPayloadResult(PAYLOAD, 0)


async def test_streamed_oversize_body_is_cut_off() -> None:
    async def endless() -> AsyncIterator[bytes]:
        while True:
            await trio.lowlevel.checkpoint()
            yield b" " * 4096

    async with _mock(
        lambda request: httpx.Response(200, content=endless()), max_response_bytes=10_000
    ) as client:
        with pytest.raises(EngineError, match="exceeds the limit of 10000 bytes"):
            await client.exchange_capabilities()


async def test_unsendable_params_and_bad_urls() -> None:
    async with _mock(lambda request: _reply(request, [])) as client:
        with pytest.raises(EngineError, match="cannot be sent as JSON") as info:
            await client.call("engine_getPayloadV2", [b"\x00"])
        assert info.value.code == -32602
    async with EngineClient("http://", SECRET) as client:
        with pytest.raises(EngineError, match="cannot reach the engine"):
            await client.exchange_capabilities()


async def test_timeout() -> None:
    async def slow(request: httpx.Request) -> httpx.Response:
        await trio.sleep(60)
        return _reply(request, [])

    async with _mock(slow, timeout=1.5) as client:
        with pytest.raises(EngineError, match=r"no answer within 1.5 s"):
            await client.exchange_capabilities()


@settings(max_examples=80, deadline=None)
@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=10),
        lambda inner: (
            st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
        ),
        max_leaves=8,
    ),
    st.sampled_from(["result", "error", "raw"]),
)
def test_any_answer_gives_a_result_or_an_engine_error(junk: Any, where: str) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        rid = json.loads(request.content)["id"]
        if where == "raw":
            return httpx.Response(200, json=junk)
        return httpx.Response(200, json={"jsonrpc": "2.0", "id": rid, where: junk})

    async def run() -> None:
        async with _mock(handler) as client:
            for call in (
                client.exchange_capabilities(),
                client.forkchoice_updated(ForkchoiceState(ZERO_HASH, ZERO_HASH, ZERO_HASH)),
                client.get_payload(b"\x00" * 8),
                client.new_payload(PAYLOAD),
            ):
                try:
                    result = await call
                except EngineError:
                    pass
                else:
                    assert isinstance(
                        result, list | ForkchoiceUpdatedResult | GetPayloadResult | PayloadStatus
                    )

    trio.run(run)


# ----------------------------------------------------------------- the server's ASGI app


async def _call_app(app: EngineApp, body: bytes) -> tuple[int, bytes]:
    token = jwt.encode({"iat": int(time.time())}, SECRET, algorithm="HS256")
    scope = {
        "type": "http",
        "method": "POST",
        "path": "/",
        "headers": [
            (b"content-type", b"application/json"),
            (b"authorization", f"Bearer {token}".encode()),
        ],
    }
    sent: list[dict[str, Any]] = []
    delivered = False

    async def receive() -> dict[str, Any]:
        nonlocal delivered
        await trio.lowlevel.checkpoint()
        if delivered:
            return {"type": "http.disconnect"}
        delivered = True
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        await trio.lowlevel.checkpoint()
        sent.append(message)

    await app(scope, receive, send)
    return sent[0]["status"], sent[1]["body"]


@settings(max_examples=150, deadline=None)
@given(
    st.sampled_from(
        [
            ("engine_newPayloadV2", [NEW_PAYLOAD_V2_EXAMPLE]),
            ("engine_forkchoiceUpdatedV2", [FCU_V2_STATE, FCU_V2_ATTRIBUTES]),
            ("engine_getPayloadV2", ["0x0000000021f32cc1"]),
            ("engine_exchangeCapabilities", [["engine_newPayloadV2"]]),
        ]
    ),
    st.data(),
)
def test_server_answers_any_mutated_request_per_spec(
    call: tuple[str, list[Any]], data: st.DataObject
) -> None:
    """Whatever the params, the test server answers a JSON-RPC response: a result of the right
    shape or one of the spec's error codes, never an internal error."""
    from .test_execution_types import _locations, _set, junk

    method, params = call
    mutated = json.loads(json.dumps(params))
    path = data.draw(st.sampled_from(_locations(mutated)))
    mutated = _set(mutated, path, data.draw(junk))
    request = {"jsonrpc": "2.0", "id": 7, "method": method, "params": mutated}
    app = EngineApp(SECRET, EmbeddedEngine())
    status, body = trio.run(_call_app, app, json.dumps(request).encode())
    assert status == 200
    answer = json.loads(body)
    assert answer["id"] == 7 and answer["jsonrpc"] == "2.0"
    if "error" in answer:
        assert answer["error"]["code"] in (-32600, -32602, -38001, -38002, -38003), answer
    else:
        assert set(answer) == {"jsonrpc", "id", "result"}


# ----------------------------------------------------------------- the flow helpers


@attrs.define
class ScriptedEngine:
    """An ExecutionEngine whose answers are given in advance."""

    fcu: list[ForkchoiceUpdatedResult]
    new: PayloadStatus | None = None
    built: ExecutionPayload | None = None
    calls: list[str] = attrs.field(factory=list)

    async def exchange_capabilities(self, methods: Any) -> list[str]:
        await trio.lowlevel.checkpoint()
        return []

    async def forkchoice_updated(
        self, state: ForkchoiceState, attributes: PayloadAttributes | None = None
    ) -> ForkchoiceUpdatedResult:
        await trio.lowlevel.checkpoint()
        self.calls.append("fcu")
        return self.fcu.pop(0)

    async def get_payload(self, payload_id: bytes) -> GetPayloadResult:
        await trio.lowlevel.checkpoint()
        self.calls.append("get")
        assert self.built is not None
        return GetPayloadResult(self.built, 0)

    async def new_payload(self, payload: ExecutionPayload) -> PayloadStatus:
        await trio.lowlevel.checkpoint()
        self.calls.append("new")
        assert self.new is not None
        return self.new

    async def latest_block(self) -> tuple[int, bytes]:
        await trio.lowlevel.checkpoint()
        raise AssertionError("the block flow never asks for the latest block")

    async def block_number(self, block_hash: bytes) -> int | None:
        await trio.lowlevel.checkpoint()
        raise AssertionError("the block flow never asks for a block number")

    async def receipts(self, block_hash: bytes) -> list[Receipt]:
        await trio.lowlevel.checkpoint()
        raise AssertionError("the block flow never asks for receipts")

    async def aclose(self) -> None:
        await trio.lowlevel.checkpoint()


def _fcu(kind: PayloadStatusKind, pid: bytes | None = None) -> ForkchoiceUpdatedResult:
    return ForkchoiceUpdatedResult(PayloadStatus(kind, None), pid)


VALID = PayloadStatusKind.VALID
SYNCING = PayloadStatusKind.SYNCING
INVALID = PayloadStatusKind.INVALID


async def test_build_block_refusals() -> None:
    head = PAYLOAD.parent_hash
    engine = ScriptedEngine([_fcu(SYNCING)])
    assert isinstance(engine, ExecutionEngine)
    with pytest.raises(PayloadStatusError, match=r"cannot build on the head 0x3b8f.*: SYNCING"):
        await build_block(engine, head, None, 5)
    with pytest.raises(PayloadStatusError, match="started no build process"):
        await build_block(ScriptedEngine([_fcu(VALID)]), head, None, 5)
    elsewhere = ScriptedEngine(
        [_fcu(VALID, b"\x01" * 8)], built=attrs.evolve(PAYLOAD, parent_hash=b"\x02" * 32)
    )
    with pytest.raises(EngineError, match="built on 0x0202"):
        await build_block(elsewhere, head, None, 5)
    fine = ScriptedEngine([_fcu(VALID, b"\x01" * 8)], built=PAYLOAD)
    assert await build_block(fine, head, None, 5) == PAYLOAD
    with pytest.raises(ValueError, match="finalized must be a 32-byte hash"):
        await build_block(fine, head, b"\x00", 5)


async def test_commit_block_refusals() -> None:
    good = PayloadStatus(VALID, PAYLOAD.block_hash)
    cases = [
        (ScriptedEngine([_fcu(INVALID)]), "the parent 0x3b8f.* is invalid", ["fcu"]),
        (
            ScriptedEngine([_fcu(SYNCING)], new=PayloadStatus(SYNCING)),
            "was not accepted: SYNCING",
            ["fcu", "new"],
        ),
        (
            ScriptedEngine([_fcu(VALID)], new=PayloadStatus(INVALID, ZERO_HASH, "bad state root")),
            "was not accepted: INVALID, latest valid hash 0x0000.*, bad state root",
            ["fcu", "new"],
        ),
        (
            ScriptedEngine([_fcu(VALID)], new=PayloadStatus(VALID, b"\x05" * 32)),
            "VALID must name the payload's own hash",
            ["fcu", "new"],
        ),
        (
            ScriptedEngine([_fcu(VALID), _fcu(SYNCING)], new=good),
            "cannot make 0x3559.* the head",
            ["fcu", "new", "fcu"],
        ),
    ]
    for engine, problem, calls in cases:
        with pytest.raises(PayloadStatusError, match=problem):
            await commit_block(engine, PAYLOAD, None)
        assert engine.calls == calls
    ok = ScriptedEngine([_fcu(SYNCING), _fcu(VALID)], new=good)
    assert await commit_block(ok, PAYLOAD, ZERO_HASH) == PAYLOAD.block_hash


# ----------------------------------------------------------------- eth calls of the restart path


async def test_the_restart_path_and_fees_read_blocks_and_receipts_over_eth() -> None:
    known = "0x" + "ab" * 32
    calls: list[tuple[str, list[Any]]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        calls.append((body["method"], body["params"]))
        method, params = body["method"], body["params"]
        if method == "eth_getBlockByNumber":
            return _reply(request, {"number": "0x2a", "hash": known, "extra": 1})
        if method == "eth_getBlockByHash":
            return _reply(request, {"number": "0x7", "hash": known} if params[0] == known
                          else None)
        assert method == "eth_getBlockReceipts"
        if params[0] != known:
            return _reply(request, None)
        return _reply(request, [
            {"gasUsed": "0x5208", "effectiveGasPrice": "0x3b9aca07", "status": "0x1"},
            {"gasUsed": "0x1", "effectiveGasPrice": "0x7"},
        ])

    async with _mock(handler) as client:
        assert await client.latest_block() == (42, bytes.fromhex("ab" * 32))
        assert await client.block_number(bytes.fromhex("ab" * 32)) == 7
        assert await client.block_number(bytes(32)) is None
        receipts = await client.receipts(bytes.fromhex("ab" * 32))
        assert receipts == [Receipt(21000, 10**9 + 7), Receipt(1, 7)]
        with pytest.raises(EngineError, match="does not have block 0x00"):
            await client.receipts(bytes(32))
    assert calls[0] == ("eth_getBlockByNumber", ["latest", False])
    assert calls[1] == ("eth_getBlockByHash", [known, False])
    assert calls[3] == ("eth_getBlockReceipts", [known])


@pytest.mark.parametrize("result", [[{"gasUsed": "0x1"}], {"not": "a list"},
                                    [{"gasUsed": "1", "effectiveGasPrice": "0x7"}]])
async def test_malformed_receipts_are_an_engine_error(result: Any) -> None:
    async with _mock(lambda request: _reply(request, result)) as client:
        with pytest.raises(EngineError, match=r"eth_getBlockReceipts.*malformed result"):
            await client.receipts(bytes(32))


async def test_a_malformed_block_is_an_engine_error() -> None:
    async with _mock(lambda request: _reply(request, {"number": "seven"})) as client:
        with pytest.raises(EngineError, match="malformed result"):
            await client.latest_block()
