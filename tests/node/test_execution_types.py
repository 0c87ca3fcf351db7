"""Engine API V2 types: exact JSON against the published execution-apis examples, round trips,
and schema errors that name the JSON path (hypothesis over mutated JSON)."""

from __future__ import annotations

import copy
import json
import pickle
from collections.abc import Callable
from typing import Any

import attrs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import otp
from node.types.execution import (
    DEFAULT_FEE_RECIPIENT,
    ERROR_MESSAGES,
    EngineError,
    ExecutionPayload,
    ForkchoiceState,
    ForkchoiceUpdatedResult,
    GetPayloadResult,
    PayloadAttributes,
    PayloadStatus,
    PayloadStatusKind,
    SchemaError,
    Withdrawal,
    data_from_json,
    data_to_json,
    quantity_from_json,
    quantity_to_json,
)

# ----------------------------------------------------------------- published examples
# From ethereum/execution-apis, src/engine/openrpc/methods/payload.yaml and forkchoice.yaml.

ZERO_BLOOM = "0x" + "00" * 256
EXAMPLE_TXS = [
    "0x03f88f0780843b9aca008506fc23ac00830186a09400000000000000000000000000000000000001008080"
    "c001e1a0010657f37554c781402a22917dee2f75def7ab966d7b770905398eba3c44401401a0840650aa8f74"
    "d2b07f40067dc33b715078d73422f01da17abdbd11e02bbdfda9a04b2260f6022bf53eadb337b3e59514936f"
    "7317d872defb891a708ee279bdca90",
    "0x03f88f0701843b9aca008506fc23ac00830186a09400000000000000000000000000000000000001008080"
    "c001e1a001521d528ad0c760354a4f0496776cf14a92fe1fb5d50e959dcea1a489c7c83101a0a86c1fd8c2e7"
    "4820686937f5c1bfe836e2fb622ac9fcbebdc4ab4357f2dbbc61a05c3b2b44ff8252f78d70aeb33f8ba09bea"
    "eadad1b376a57d34fa720bbc4a18ee",
    "0x03f88f0702843b9aca008506fc23ac00830186a09400000000000000000000000000000000000001008080"
    "c001e1a001453362c360fdd8832e3539d463e6d64b2ee320ac6a08885df6083644a063e701a037a728aec08a"
    "efffa702a2ca620db89caf3e46ab7f25f7646fc951510991badca065d846f046357af39bb739b161233fce73"
    "ddfe0bb87f2d28ef60dfe6dbb0128d",
]
EXAMPLE_WITHDRAWALS = [
    {
        "index": "0xf0",
        "validatorIndex": "0xf0",
        "address": "0x00000000000000000000000000000000000010f0",
        "amount": "0x1",
    },
    {
        "index": "0xf1",
        "validatorIndex": "0xf1",
        "address": "0x00000000000000000000000000000000000010f1",
        "amount": "0x1",
    },
]
#: engine_newPayloadV2 example, params[0].
NEW_PAYLOAD_V2_EXAMPLE: dict[str, Any] = {
    "parentHash": "0x3b8fb240d288781d4aac94d3fd16809ee413bc99294a085798a589dae51ddd4a",
    "feeRecipient": "0xa94f5374fce5edbc8e2a8697c15331677e6ebf0b",
    "stateRoot": "0xca3149fa9e37db08d1cd49c9061db1002ef1cd58db2210f2115c8c989b2bdf45",
    "receiptsRoot": "0x56e81f171bcc55a6ff8345e692c0f86e5b48e01b996cadc001622fb5e363b421",
    "logsBloom": ZERO_BLOOM,
    "prevRandao": "0xc130d5e63c61c935f6089e61140ca9136172677cf6aa5800dcc1cf0a02152a14",
    "blockNumber": "0x112720f",
    "gasLimit": "0x1c9c380",
    "gasUsed": "0xbad2e8",
    "timestamp": "0x64e7785b",
    "extraData": "0x",
    "baseFeePerGas": "0x7",
    "blockHash": "0x3559e851470f6e7bbed1db474980683e8c315bfce99b2a6ef47c057c04de7858",
    "transactions": EXAMPLE_TXS,
    "withdrawals": EXAMPLE_WITHDRAWALS,
}
#: engine_newPayloadV2 example, result; and engine_newPayloadV1 "invalid example", result.
NEW_PAYLOAD_VALID_RESULT: dict[str, Any] = {
    "status": "VALID",
    "latestValidHash": "0x3559e851470f6e7bbed1db474980683e8c315bfce99b2a6ef47c057c04de7858",
    "validationError": None,
}
NEW_PAYLOAD_INVALID_RESULT: dict[str, Any] = {
    "status": "INVALID",
    "latestValidHash": "0x0000000000000000000000000000000000000000000000000000000000000000",
    "validationError": "New payload is invalid",
}
#: engine_forkchoiceUpdatedV2 example: params and result.
FCU_V2_STATE: dict[str, Any] = {
    "headBlockHash": "0x3559e851470f6e7bbed1db474980683e8c315bfce99b2a6ef47c057c04de7858",
    "safeBlockHash": "0x3559e851470f6e7bbed1db474980683e8c315bfce99b2a6ef47c057c04de7858",
    "finalizedBlockHash": "0x3b8fb240d288781d4aac94d3fd16809ee413bc99294a085798a589dae51ddd4a",
}
FCU_V2_ATTRIBUTES: dict[str, Any] = {
    "timestamp": "0x64e7785b",
    "prevRandao": "0xc130d5e63c61c935f6089e61140ca9136172677cf6aa5800dcc1cf0a02152a14",
    "suggestedFeeRecipient": "0xa94f5374fce5edbc8e2a8697c15331677e6ebf0b",
    "withdrawals": EXAMPLE_WITHDRAWALS,
}
FCU_V2_RESULT: dict[str, Any] = {
    "payloadStatus": {
        "status": "VALID",
        "latestValidHash": "0x3559e851470f6e7bbed1db474980683e8c315bfce99b2a6ef47c057c04de7858",
        "validationError": None,
    },
    "payloadId": "0x0000000021f32cc1",
}
#: engine_getPayloadV2 example: result (its param, "0x0000000038fa5dd", has 15 hex digits).
GET_PAYLOAD_V2_RESULT: dict[str, Any] = {
    "executionPayload": {
        **NEW_PAYLOAD_V2_EXAMPLE,
        "blockHash": "0x1256f99fb899c2de0aeac0c5aa6aad69de188b6a0f4ac29f2d075a53aa3ed0e4",
    },
    "blockValue": "0x10a741a46278014d",
}
GET_PAYLOAD_V2_EXAMPLE_ID = "0x0000000038fa5dd"


@pytest.mark.parametrize(
    ("cls", "example"),
    [
        (ExecutionPayload, NEW_PAYLOAD_V2_EXAMPLE),
        (PayloadStatus, NEW_PAYLOAD_VALID_RESULT),
        (PayloadStatus, NEW_PAYLOAD_INVALID_RESULT),
        (ForkchoiceState, FCU_V2_STATE),
        (PayloadAttributes, FCU_V2_ATTRIBUTES),
        (ForkchoiceUpdatedResult, FCU_V2_RESULT),
        (GetPayloadResult, GET_PAYLOAD_V2_RESULT),
        (Withdrawal, EXAMPLE_WITHDRAWALS[0]),
    ],
)
def test_published_examples_round_trip_exactly(cls: Any, example: dict[str, Any]) -> None:
    value = cls.from_json(example)
    assert value.to_json() == example
    assert json.dumps(value.to_json(), sort_keys=True) == json.dumps(example, sort_keys=True)


def test_example_values_are_read_as_the_spec_means_them() -> None:
    payload = ExecutionPayload.from_json(NEW_PAYLOAD_V2_EXAMPLE)
    assert payload.block_number == 0x112720F
    assert payload.gas_limit == 30_000_000
    assert payload.extra_data == b""
    assert len(payload.transactions) == 3 and payload.transactions[0][:1] == b"\x03"
    assert payload.withdrawals[1] == Withdrawal(0xF1, 0xF1, bytes.fromhex("00" * 18 + "10f1"), 1)
    result = ForkchoiceUpdatedResult.from_json(FCU_V2_RESULT)
    assert result.payload_id == bytes.fromhex("0000000021f32cc1")
    assert result.payload_status.status is PayloadStatusKind.VALID
    assert GetPayloadResult.from_json(GET_PAYLOAD_V2_RESULT).block_value == 0x10A741A46278014D


def test_the_get_payload_v2_example_id_is_not_valid_data() -> None:
    # The spec's own example payload id has 15 hex digits: not DATA, and not 8 bytes.
    with pytest.raises(SchemaError, match=r"params\[0\]: expected DATA"):
        data_from_json(GET_PAYLOAD_V2_EXAMPLE_ID, "params[0]", size=8)


def test_v1_shapes_are_refused_after_shanghai() -> None:
    v1 = {k: v for k, v in NEW_PAYLOAD_V2_EXAMPLE.items() if k != "withdrawals"}
    with pytest.raises(
        SchemaError, match=r"^\$: ExecutionPayloadV2 is missing the member 'withdrawals'"
    ):
        ExecutionPayload.from_json(v1)
    attrs_v1 = {k: v for k, v in FCU_V2_ATTRIBUTES.items() if k != "withdrawals"}
    with pytest.raises(SchemaError, match="withdrawals"):
        PayloadAttributes.from_json(attrs_v1)


def test_unknown_members_strict_and_lenient() -> None:
    geth_style = {**NEW_PAYLOAD_V2_EXAMPLE, "blobGasUsed": None, "excessBlobGas": None}
    with pytest.raises(SchemaError) as info:
        ExecutionPayload.from_json(geth_style, "params[0]")
    assert info.value.path in ("params[0].blobGasUsed", "params[0].excessBlobGas")
    lenient = ExecutionPayload.from_json(geth_style, strict=False)
    assert lenient == ExecutionPayload.from_json(NEW_PAYLOAD_V2_EXAMPLE)


def test_optional_status_members_may_be_absent() -> None:
    assert PayloadStatus.from_json({"status": "SYNCING"}) == PayloadStatus(
        PayloadStatusKind.SYNCING
    )
    out = ForkchoiceUpdatedResult.from_json({"payloadStatus": {"status": "SYNCING"}}).to_json()
    assert out == {
        "payloadStatus": {"status": "SYNCING", "latestValidHash": None, "validationError": None},
        "payloadId": None,
    }


def test_forkchoice_result_restricts_the_status() -> None:
    bad = copy.deepcopy(FCU_V2_RESULT)
    bad["payloadStatus"]["status"] = "ACCEPTED"
    with pytest.raises(SchemaError) as info:
        ForkchoiceUpdatedResult.from_json(bad)
    assert info.value.path == "$.payloadStatus.status"
    with pytest.raises(ValueError, match="VALID, INVALID or SYNCING"):
        ForkchoiceUpdatedResult(PayloadStatus(PayloadStatusKind.ACCEPTED))


# ----------------------------------------------------------------- hex encodings


@pytest.mark.parametrize(
    ("text", "value"), [("0x0", 0), ("0x1", 1), ("0x1c9c380", 0x1C9C380), ("0xABCdef", 0xABCDEF)]
)
def test_quantity_accepts(text: str, value: int) -> None:
    assert quantity_from_json(text) == value


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("0x", "QUANTITY"),
        ("0x00", "no leading zeros"),
        ("0x01", "no leading zeros"),
        ("1", "QUANTITY"),
        ("0X1", "QUANTITY"),
        ("0x1g", "QUANTITY"),
        (" 0x1", "QUANTITY"),
        ("0x1" + "0" * 16, "exceeds 64 bits"),
        (1, "hex string, got int"),
        (None, "got NoneType"),
        (True, "got bool"),
    ],
)
def test_quantity_refuses(text: Any, problem: str) -> None:
    with pytest.raises(SchemaError, match=problem) as info:
        quantity_from_json(text, "$.gasLimit", bits=64)
    assert info.value.path == "$.gasLimit"


def test_quantity_bit_widths() -> None:
    assert quantity_from_json(hex(2**64 - 1), bits=64) == 2**64 - 1
    assert quantity_from_json(hex(2**256 - 1), bits=256) == 2**256 - 1
    with pytest.raises(SchemaError, match="exceeds 256 bits"):
        quantity_from_json(hex(2**256), bits=256)
    with pytest.raises(SchemaError, match="exceeds 256 bits"):
        quantity_from_json("0x" + "f" * 10_000, bits=256)


def test_encoders() -> None:
    assert quantity_to_json(0) == "0x0"
    assert quantity_to_json(255) == "0xff"
    assert data_to_json(b"") == "0x"
    assert data_to_json(b"\xde\xad") == "0xdead"
    assert data_from_json("0xDEAD") == b"\xde\xad"  # common.md allows either case
    assert data_to_json(DEFAULT_FEE_RECIPIENT) == "0x000000000000000000000000000000000000dead"
    with pytest.raises(ValueError, match="non-negative int"):
        quantity_to_json(-1)
    with pytest.raises(ValueError, match="DATA must be bytes"):
        data_to_json("00")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "size", "max_size", "problem"),
    [
        ("0x0", None, None, "two digits per byte"),
        ("dead", None, None, "0x-prefixed"),
        ("0x" + "00" * 31, 32, None, "expected 32 bytes of DATA, got 31"),
        ("0x" + "00" * 33, None, 32, "at most 32 bytes of DATA, got 33"),
        ([], None, None, "hex string, got list"),
    ],
)
def test_data_refuses(text: Any, size: int | None, max_size: int | None, problem: str) -> None:
    with pytest.raises(SchemaError, match=problem):
        data_from_json(text, "$.x", size=size, max_size=max_size)


# ----------------------------------------------------------------- constructors


def test_constructors_name_the_field() -> None:
    with pytest.raises(ValueError, match=r"Withdrawal\.address must be 20 bytes, got 19"):
        Withdrawal(0, 0, b"\x00" * 19, 1)
    with pytest.raises(ValueError, match=r"Withdrawal\.amount must be in \[0, 2\*\*64\)"):
        Withdrawal(0, 0, b"\x00" * 20, 2**64)
    with pytest.raises(TypeError, match=r"Withdrawal\.index must be an int, got bool"):
        Withdrawal(True, 0, b"\x00" * 20, 1)
    payload = ExecutionPayload.from_json(NEW_PAYLOAD_V2_EXAMPLE)
    with pytest.raises(ValueError, match=r"ExecutionPayload\.extra_data must be at most 32"):
        attrs.evolve(payload, extra_data=b"x" * 33)
    with pytest.raises(ValueError, match=r"ExecutionPayload\.logs_bloom must be 256 bytes"):
        attrs.evolve(payload, logs_bloom=b"")
    with pytest.raises(TypeError, match=r"ExecutionPayload\.transactions\[1\] must be bytes"):
        attrs.evolve(payload, transactions=[b"", "0x00"])  # type: ignore[list-item]
    with pytest.raises(TypeError, match=r"PayloadStatus\.status must be PayloadStatusKind"):
        PayloadStatus("VALID")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"ForkchoiceUpdatedResult\.payload_id must be 8 bytes"):
        ForkchoiceUpdatedResult(PayloadStatus(PayloadStatusKind.SYNCING), b"\x00" * 7)


def test_engine_error() -> None:
    err = EngineError(-38001, ERROR_MESSAGES[-38001], "engine_getPayloadV2", data={"x": 1})
    assert str(err) == "engine_getPayloadV2: Unknown payload (JSON-RPC error -38001) data={'x': 1}"
    copied = pickle.loads(pickle.dumps(err))
    assert (copied.code, copied.message, copied.method, copied.data) == (
        -38001,
        "Unknown payload",
        "engine_getPayloadV2",
        {"x": 1},
    )
    http = EngineError(None, "HTTP error", "engine_newPayloadV2", http_status=401)
    assert "(HTTP 401)" in str(http) and "JSON-RPC" not in str(http)


# ----------------------------------------------------------------- hypothesis

hash32 = st.binary(min_size=32, max_size=32)
address = st.binary(min_size=20, max_size=20)
u64 = st.integers(0, 2**64 - 1)
u256 = st.integers(0, 2**256 - 1)
withdrawals = st.builds(Withdrawal, u64, u64, address, u64)
payloads = st.builds(
    ExecutionPayload,
    parent_hash=hash32,
    fee_recipient=address,
    state_root=hash32,
    receipts_root=hash32,
    logs_bloom=st.binary(min_size=256, max_size=256),
    prev_randao=hash32,
    block_number=u64,
    gas_limit=u64,
    gas_used=u64,
    timestamp=u64,
    extra_data=st.binary(max_size=32),
    base_fee_per_gas=u256,
    block_hash=hash32,
    transactions=st.lists(st.binary(max_size=40), max_size=3),
    withdrawals=st.lists(withdrawals, max_size=3),
)
attributes = st.builds(PayloadAttributes, u64, hash32, address, st.lists(withdrawals, max_size=3))
states = st.builds(ForkchoiceState, hash32, hash32, hash32)
statuses = st.builds(
    PayloadStatus,
    st.sampled_from(PayloadStatusKind),
    st.none() | hash32,
    st.none() | st.text(max_size=20),
)
fcu_results = st.builds(
    ForkchoiceUpdatedResult,
    st.builds(
        PayloadStatus,
        st.sampled_from(
            [PayloadStatusKind.VALID, PayloadStatusKind.INVALID, PayloadStatusKind.SYNCING]
        ),
        st.none() | hash32,
        st.none() | st.text(max_size=20),
    ),
    st.none() | st.binary(min_size=8, max_size=8),
)
get_results = st.builds(GetPayloadResult, payloads, u256)
any_value = st.one_of(withdrawals, payloads, attributes, states, statuses, fcu_results, get_results)


@settings(max_examples=150, deadline=None)
@given(any_value)
def test_round_trip(value: Any) -> None:
    wire = json.loads(json.dumps(value.to_json()))
    parsed = type(value).from_json(wire)
    assert parsed == value
    assert parsed.to_json() == wire
    assert type(value).from_json(wire, strict=False) == value
    assert otp.codec.decode(otp.codec.encode(value)) == value


Path = tuple[str | int, ...]


def _locations(obj: Any, path: Path = ()) -> list[Path]:
    found = [path]
    if isinstance(obj, dict):
        for key, child in obj.items():
            found += _locations(child, (*path, key))
    elif isinstance(obj, list):
        for i, child in enumerate(obj):
            found += _locations(child, (*path, i))
    return found


def _render(path: Path) -> str:
    out = "$"
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out


def _get(obj: Any, path: Path) -> Any:
    for part in path:
        obj = obj[part]
    return obj


def _set(obj: Any, path: Path, value: Any) -> Any:
    if not path:
        return value
    _get(obj, path[:-1])[path[-1]] = value
    return obj


junk = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=8)
    | st.sampled_from(["0x", "0x0", "0x00", "0x1", "0xzz", "0x" + "ab" * 20, "VALID", "0x0a"]),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=6,
)


def _hex_tweaks(text: str) -> list[str]:
    return [text[2:], text + "0", "0x0" + text[2:], text.upper(), text[:-1], text + " ", ""]


OPTIONAL = {"latestValidHash", "validationError", "payloadId"}


def _check_error(exc: SchemaError, path: Path) -> None:
    where = _render(path)
    assert exc.path == where or exc.path.startswith((where + ".", where + "[")), (
        f"the error names {exc.path!r}, the mutation was at {where!r}: {exc}"
    )
    assert str(exc).startswith(exc.path + ": ")


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(any_value, st.data())
def test_mutated_json_raises_schema_error_naming_the_path(value: Any, data: st.DataObject) -> None:
    cls: Callable[..., Any] = type(value).from_json
    wire = value.to_json()
    locations = _locations(wire)
    path = data.draw(st.sampled_from(locations), label="path")
    target = _get(wire, path)
    kind = data.draw(st.sampled_from(["replace", "delete", "add", "hex"]), label="kind")
    mutated = copy.deepcopy(wire)
    expect_error_at: Path | None = path  # where an error must point, if one is raised
    must_fail = False
    last = path[-1] if path else None
    if kind == "delete" and isinstance(target, dict) and target:
        key = data.draw(st.sampled_from(sorted(target)), label="key")
        del _get(mutated, path)[key]
        must_fail = key not in OPTIONAL
    elif kind == "add" and isinstance(target, dict):
        key = data.draw(st.text(min_size=1, max_size=6).filter(lambda k: k not in target))
        _get(mutated, path)[key] = data.draw(junk)
        expect_error_at = (*path, key)
        must_fail = True
    elif kind == "hex" and isinstance(target, str):
        mutated = _set(mutated, path, data.draw(st.sampled_from(_hex_tweaks(target))))
    else:
        replacement = data.draw(junk, label="junk")
        mutated = _set(mutated, path, replacement)
        nullable = last in OPTIONAL
        must_fail = type(replacement) is not type(target) and not (
            nullable and (replacement is None or (target is None and isinstance(replacement, str)))
        )
    try:
        parsed = cls(mutated)
    except SchemaError as exc:
        _check_error(exc, expect_error_at if expect_error_at is not None else ())
    else:
        assert not must_fail, f"accepted a {kind} mutation at {_render(path)}: {mutated!r:.300}"
        # Accepted: then it is a well-formed value that its own JSON reproduces.
        assert type(value).from_json(parsed.to_json()) == parsed
