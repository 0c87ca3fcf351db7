"""Engine API value types for Capella/Shanghai ("V2"), with exact JSON (de)serialization.

The shapes follow the Ethereum execution-apis specification (``ethereum/execution-apis``):

* ``src/engine/common.md`` — *Encoding*: ``DATA`` is ``0x`` + an even number of hex digits
  (``^0x(?:[a-fA-F0-9]{2})*$``); ``QUANTITY`` is ``0x`` + big-endian hex without leading
  zeros (``^0x(?:0|(?:[a-fA-F1-9][a-fA-F0-9]*))$``). *Errors*: the JSON-RPC error codes
  collected below in :data:`ERROR_MESSAGES`.
* ``src/engine/paris.md`` — ``ExecutionPayloadV1``, ``ForkchoiceStateV1``,
  ``PayloadAttributesV1``, ``PayloadStatusV1`` and the ``engine_forkchoiceUpdatedV1`` response
  object (``payloadStatus`` + ``payloadId``: ``DATA|null``, 8 bytes).
* ``src/engine/shanghai.md`` — ``WithdrawalV1``, ``ExecutionPayloadV2``,
  ``PayloadAttributesV2`` and the ``engine_getPayloadV2`` response object
  (``executionPayload`` + ``blockValue``).
* ``src/engine/openrpc/schemas/payload.yaml``, ``.../forkchoice.yaml`` and
  ``src/schemas/base-types.yaml`` — which fields are required, and the byte widths
  (``hash32``, ``address``, ``bytes8``, ``bytes256``, ``bytesMax32``, ``uint64``, ``uint256``).

Inside the node every byte string is ``bytes`` and every quantity an ``int``; ``to_json()``
produces the wire form (lower-case hex, as execution clients emit it) and ``from_json(obj)``
parses it. ``from_json`` accepts upper-case hex digits too, as ``common.md`` allows, and
rejects everything else with a :class:`SchemaError` that names the JSON path
(``$.withdrawals[2].amount: ...``). By default unknown object members are an error
(``strict=True``, what a validating server wants); ``strict=False`` ignores them, which is how
a client should read responses from execution clients that add members of later forks (Geth,
for example, sends ``"blobGasUsed": null`` beside a V2 payload).

Interpretations of the specification, all deliberate:

* ``PayloadStatusV1.latestValidHash`` and ``validationError``, and the ``payloadId`` of the
  forkchoiceUpdated response, are "``DATA|null``" in the prose but optional in the OpenRPC
  schema: on input a missing member is read as ``null``; on output the member is always
  written (``null`` when absent), as in the specification's examples.
* ``base-types.yaml`` has ``uint256`` as ``^0x([1-9a-f]+[0-9a-f]{0,31})|0$`` (a pattern with
  an alternation slip that would also cap the width at 128 bits); we follow ``common.md``'s
  ``QUANTITY`` rule and check the declared bit width (64 or 256) instead.
* The ``engine_getPayloadV2`` example in ``openrpc/methods/payload.yaml`` uses the payload id
  ``0x0000000038fa5dd`` (15 hex digits). That is not valid ``DATA`` of 8 bytes, and we
  reject it; the other published examples parse and re-serialize to exactly the same JSON
  (see ``tests/node/test_execution_types.py``).
* Status values are restricted where the specification restricts them: the forkchoiceUpdated
  response carries only ``VALID``, ``INVALID`` or ``SYNCING`` (``RestrictedPayloadStatusV1``).
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final, Protocol, runtime_checkable

import attrs

import otp

from ..errors import NodeError

__all__ = [
    "ADDRESS_SIZE",
    "DEFAULT_FEE_RECIPIENT",
    "ENGINE_CAPABILITIES",
    "ERROR_MESSAGES",
    "HASH_SIZE",
    "INTERNAL_ERROR",
    "INVALID_FORKCHOICE_STATE",
    "INVALID_PARAMS",
    "INVALID_PAYLOAD_ATTRIBUTES",
    "INVALID_REQUEST",
    "LOGS_BLOOM_SIZE",
    "MAX_EXTRA_DATA_SIZE",
    "METHOD_NOT_FOUND",
    "PARSE_ERROR",
    "PAYLOAD_ID_SIZE",
    "SERVER_ERROR",
    "TOO_LARGE_REQUEST",
    "UNKNOWN_PAYLOAD",
    "UNSUPPORTED_FORK",
    "ZERO_HASH",
    "EngineError",
    "ExecutionEngine",
    "ExecutionPayload",
    "ForkchoiceState",
    "ForkchoiceUpdatedResult",
    "GetPayloadResult",
    "PayloadAttributes",
    "PayloadStatus",
    "PayloadStatusKind",
    "Receipt",
    "SchemaError",
    "Withdrawal",
    "data_from_json",
    "data_to_json",
    "quantity_from_json",
    "quantity_to_json",
]

# --------------------------------------------------------------------------- constants

HASH_SIZE: Final = 32
ADDRESS_SIZE: Final = 20
LOGS_BLOOM_SIZE: Final = 256
PAYLOAD_ID_SIZE: Final = 8
MAX_EXTRA_DATA_SIZE: Final = 32

ZERO_HASH: Final = bytes(HASH_SIZE)

#: The original Alys's ``suggestedFeeRecipient`` (ALYS.md, "Execution layer").
DEFAULT_FEE_RECIPIENT: Final = bytes.fromhex("000000000000000000000000000000000000dEaD")

#: The Engine API methods of this fork (Capella/Shanghai), as named in
#: ``engine_exchangeCapabilities`` (common.md: versions suffixed, and never the
#: ``engine_exchangeCapabilities`` method itself).
ENGINE_CAPABILITIES: Final = (
    "engine_forkchoiceUpdatedV2",
    "engine_getPayloadV2",
    "engine_newPayloadV2",
)

# JSON-RPC error codes (common.md, "Errors").
PARSE_ERROR: Final = -32700
INVALID_REQUEST: Final = -32600
METHOD_NOT_FOUND: Final = -32601
INVALID_PARAMS: Final = -32602
INTERNAL_ERROR: Final = -32603
SERVER_ERROR: Final = -32000
UNKNOWN_PAYLOAD: Final = -38001
INVALID_FORKCHOICE_STATE: Final = -38002
INVALID_PAYLOAD_ATTRIBUTES: Final = -38003
TOO_LARGE_REQUEST: Final = -38004
UNSUPPORTED_FORK: Final = -38005

#: The message the specification gives each error code (common.md, "Errors").
ERROR_MESSAGES: Final[Mapping[int, str]] = {
    PARSE_ERROR: "Parse error",
    INVALID_REQUEST: "Invalid Request",
    METHOD_NOT_FOUND: "Method not found",
    INVALID_PARAMS: "Invalid params",
    INTERNAL_ERROR: "Internal error",
    SERVER_ERROR: "Server error",
    UNKNOWN_PAYLOAD: "Unknown payload",
    INVALID_FORKCHOICE_STATE: "Invalid forkchoice state",
    INVALID_PAYLOAD_ATTRIBUTES: "Invalid payload attributes",
    TOO_LARGE_REQUEST: "Too large request",
    UNSUPPORTED_FORK: "Unsupported fork",
}

_U64: Final = 64
_U256: Final = 256

# --------------------------------------------------------------------------- errors


class SchemaError(ValueError):
    """A JSON value does not have the shape the Engine API specification requires.

    ``path`` is where (``$`` is the value handed to ``from_json``, ``$.withdrawals[2].amount``
    a member inside it) and ``problem`` what is wrong; ``str()`` gives both.
    """

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = path
        self.problem = problem


class EngineError(NodeError):
    """An Engine API call failed.

    * ``code`` — the JSON-RPC error code (see :data:`ERROR_MESSAGES`) when the execution
      engine answered with an error object, or when the embedded engine raises the error the
      specification prescribes; ``None`` for failures below JSON-RPC (HTTP status, transport,
      timeout, a malformed or oversized response) and for unacceptable payload statuses.
    * ``message`` — what went wrong, in words.
    * ``method`` — the Engine API method, e.g. ``"engine_forkchoiceUpdatedV2"``.
    * ``data`` — the error object's ``data`` member, if any.
    * ``http_status`` — the HTTP status when the failure was an HTTP error.
    """

    def __init__(
        self,
        code: int | None,
        message: str,
        method: str,
        *,
        data: Any = None,
        http_status: int | None = None,
    ) -> None:
        self.code = code
        self.message = message
        self.method = method
        self.data = data
        self.http_status = http_status
        super().__init__(str(self))

    def __str__(self) -> str:
        where = f"{self.method}: {self.message}"
        if self.code is not None:
            where += f" (JSON-RPC error {self.code})"
        if self.http_status is not None:
            where += f" (HTTP {self.http_status})"
        if self.data is not None:
            where += f" data={self.data!r}"
        return where

    def __reduce__(self) -> Any:  # keeps the keyword arguments when pickled/copied
        return (
            _rebuild_engine_error,
            (self.code, self.message, self.method, self.data, self.http_status),
        )


def _rebuild_engine_error(
    code: int | None, message: str, method: str, data: Any, http_status: int | None
) -> EngineError:
    return EngineError(code, message, method, data=data, http_status=http_status)


# --------------------------------------------------------------------------- hex encodings

_DATA_RE: Final = re.compile(r"0x(?:[0-9a-fA-F]{2})*")
_QUANTITY_RE: Final = re.compile(r"0x(?:0|[1-9a-fA-F][0-9a-fA-F]*)")


def _describe(value: Any) -> str:
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{type(value).__name__} {text}"


def quantity_to_json(value: int) -> str:
    """A non-negative int as ``QUANTITY``: ``0x0``, ``0x1c9c380`` (common.md, "Encoding")."""
    if type(value) is not int or value < 0:
        raise ValueError(f"QUANTITY must be a non-negative int, got {_describe(value)}")
    return hex(value)


def quantity_from_json(value: Any, path: str = "$", *, bits: int = _U256) -> int:
    """Parse ``QUANTITY`` of at most ``bits`` bits; :class:`SchemaError` names ``path``."""
    if not isinstance(value, str):
        raise SchemaError(path, f"expected a QUANTITY hex string, got {_describe(value)}")
    if _QUANTITY_RE.fullmatch(value) is None:
        raise SchemaError(
            path,
            f"expected a QUANTITY (0x-prefixed hex, no leading zeros), got {_describe(value)}",
        )
    if len(value) - 2 > (bits + 3) // 4:
        raise SchemaError(path, f"QUANTITY {value[:20]}... exceeds {bits} bits")
    number = int(value, 16)
    if number.bit_length() > bits:
        raise SchemaError(path, f"QUANTITY {value} exceeds {bits} bits")
    return number


def data_to_json(value: bytes) -> str:
    """Bytes as ``DATA``: ``0x`` + lower-case hex, two digits a byte (common.md)."""
    if not isinstance(value, bytes):
        raise ValueError(f"DATA must be bytes, got {_describe(value)}")
    return "0x" + value.hex()


def data_from_json(
    value: Any, path: str = "$", *, size: int | None = None, max_size: int | None = None
) -> bytes:
    """Parse ``DATA`` of exactly ``size`` or at most ``max_size`` bytes."""
    if not isinstance(value, str):
        raise SchemaError(path, f"expected a DATA hex string, got {_describe(value)}")
    if _DATA_RE.fullmatch(value) is None:
        raise SchemaError(
            path,
            f"expected DATA (0x-prefixed hex, two digits per byte), got {_describe(value)}",
        )
    n = (len(value) - 2) // 2
    if size is not None and n != size:
        raise SchemaError(path, f"expected {size} bytes of DATA, got {n}")
    if max_size is not None and n > max_size:
        raise SchemaError(path, f"expected at most {max_size} bytes of DATA, got {n}")
    return bytes.fromhex(value[2:])


# --------------------------------------------------------------------------- JSON helpers


def _member(path: str, key: str) -> str:
    return f"{path}.{key}"


def _object(
    value: Any,
    path: str,
    what: str,
    required: Sequence[str],
    optional: Sequence[str] = (),
    *,
    strict: bool,
) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise SchemaError(path, f"expected a {what} object, got {_describe(value)}")
    for key in required:
        if key not in value:
            raise SchemaError(path, f"{what} is missing the member {key!r}")
    if strict:
        known = set(required) | set(optional)
        for key in value:
            if key not in known:
                raise SchemaError(_member(path, str(key)), f"unknown member of {what}")
    return value


def _array(value: Any, path: str, what: str) -> list[Any]:
    if not isinstance(value, list):
        raise SchemaError(path, f"expected an array of {what}, got {_describe(value)}")
    return value


# --------------------------------------------------------------------------- validators


def _check_uint(bits: int) -> Any:
    limit = 1 << bits

    def check(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        if type(value) is not int:
            raise TypeError(
                f"{type(instance).__name__}.{attribute.name} must be an int, got {_describe(value)}"
            )
        if not 0 <= value < limit:
            raise ValueError(
                f"{type(instance).__name__}.{attribute.name} must be in [0, 2**{bits}), got {value}"
            )

    return check


def _check_bytes(size: int | None = None, max_size: int | None = None) -> Any:
    def check(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        name = f"{type(instance).__name__}.{attribute.name}"
        if type(value) is not bytes:
            raise TypeError(f"{name} must be bytes, got {_describe(value)}")
        if size is not None and len(value) != size:
            raise ValueError(f"{name} must be {size} bytes, got {len(value)}")
        if max_size is not None and len(value) > max_size:
            raise ValueError(f"{name} must be at most {max_size} bytes, got {len(value)}")

    return check


def _check_optional_bytes(size: int) -> Any:
    inner = _check_bytes(size)

    def check(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        if value is not None:
            inner(instance, attribute, value)

    return check


def _check_items(kind: type) -> Any:
    def check(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        for i, item in enumerate(value):
            if type(item) is not kind:
                raise TypeError(
                    f"{type(instance).__name__}.{attribute.name}[{i}] must be "
                    f"{kind.__name__}, got {_describe(item)}"
                )

    return check


def _check_instance(kind: type) -> Any:
    def check(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        if not isinstance(value, kind):
            raise TypeError(
                f"{type(instance).__name__}.{attribute.name} must be {kind.__name__}, "
                f"got {_describe(value)}"
            )

    return check


def _bytes_tuple(value: Iterable[bytes]) -> tuple[bytes, ...]:
    return tuple(value)


def _withdrawal_tuple(value: Iterable[Withdrawal]) -> tuple[Withdrawal, ...]:
    return tuple(value)


# --------------------------------------------------------------------------- types


@otp.codec.register(tag="alys.execution.Withdrawal")
@attrs.frozen
class Withdrawal:
    """``WithdrawalV1`` (shanghai.md): a credit of ``amount`` **Gwei** to ``address``.

    Alys uses withdrawals for peg-ins and fees, with ``index`` and ``validator_index`` 0.
    """

    index: int
    validator_index: int
    address: bytes
    amount: int

    def __attrs_post_init__(self) -> None:
        # Validated here rather than with field validators: attrs names the validator of
        # ``index`` ``__attr_validator_index``, which collides with the field
        # ``validator_index`` in the generated ``__init__``.
        fields = attrs.fields(Withdrawal)
        _check_uint(_U64)(self, fields.index, self.index)
        _check_uint(_U64)(self, fields.validator_index, self.validator_index)
        _check_bytes(ADDRESS_SIZE)(self, fields.address, self.address)
        _check_uint(_U64)(self, fields.amount, self.amount)

    def to_json(self) -> dict[str, Any]:
        return {
            "index": quantity_to_json(self.index),
            "validatorIndex": quantity_to_json(self.validator_index),
            "address": data_to_json(self.address),
            "amount": quantity_to_json(self.amount),
        }

    @classmethod
    def from_json(cls, obj: Any, path: str = "$", *, strict: bool = True) -> Withdrawal:
        o = _object(obj, path, "WithdrawalV1", _WITHDRAWAL_KEYS, strict=strict)
        return cls(
            index=quantity_from_json(o["index"], _member(path, "index"), bits=_U64),
            validator_index=quantity_from_json(
                o["validatorIndex"], _member(path, "validatorIndex"), bits=_U64
            ),
            address=data_from_json(o["address"], _member(path, "address"), size=ADDRESS_SIZE),
            amount=quantity_from_json(o["amount"], _member(path, "amount"), bits=_U64),
        )


_WITHDRAWAL_KEYS: Final = ("index", "validatorIndex", "address", "amount")


def _withdrawals_from_json(value: Any, path: str, strict: bool) -> tuple[Withdrawal, ...]:
    items = _array(value, path, "WithdrawalV1")
    return tuple(
        Withdrawal.from_json(item, f"{path}[{i}]", strict=strict) for i, item in enumerate(items)
    )


@otp.codec.register(tag="alys.execution.ExecutionPayload")
@attrs.frozen
class ExecutionPayload:
    """``ExecutionPayloadV2`` (shanghai.md; V1 fields from paris.md)."""

    parent_hash: bytes = attrs.field(validator=_check_bytes(HASH_SIZE))
    fee_recipient: bytes = attrs.field(validator=_check_bytes(ADDRESS_SIZE))
    state_root: bytes = attrs.field(validator=_check_bytes(HASH_SIZE))
    receipts_root: bytes = attrs.field(validator=_check_bytes(HASH_SIZE))
    logs_bloom: bytes = attrs.field(validator=_check_bytes(LOGS_BLOOM_SIZE))
    prev_randao: bytes = attrs.field(validator=_check_bytes(HASH_SIZE))
    block_number: int = attrs.field(validator=_check_uint(_U64))
    gas_limit: int = attrs.field(validator=_check_uint(_U64))
    gas_used: int = attrs.field(validator=_check_uint(_U64))
    timestamp: int = attrs.field(validator=_check_uint(_U64))
    extra_data: bytes = attrs.field(validator=_check_bytes(max_size=MAX_EXTRA_DATA_SIZE))
    base_fee_per_gas: int = attrs.field(validator=_check_uint(_U256))
    block_hash: bytes = attrs.field(validator=_check_bytes(HASH_SIZE))
    transactions: tuple[bytes, ...] = attrs.field(
        converter=_bytes_tuple, validator=_check_items(bytes)
    )
    withdrawals: tuple[Withdrawal, ...] = attrs.field(
        converter=_withdrawal_tuple, validator=_check_items(Withdrawal)
    )

    def to_json(self) -> dict[str, Any]:
        return {
            "parentHash": data_to_json(self.parent_hash),
            "feeRecipient": data_to_json(self.fee_recipient),
            "stateRoot": data_to_json(self.state_root),
            "receiptsRoot": data_to_json(self.receipts_root),
            "logsBloom": data_to_json(self.logs_bloom),
            "prevRandao": data_to_json(self.prev_randao),
            "blockNumber": quantity_to_json(self.block_number),
            "gasLimit": quantity_to_json(self.gas_limit),
            "gasUsed": quantity_to_json(self.gas_used),
            "timestamp": quantity_to_json(self.timestamp),
            "extraData": data_to_json(self.extra_data),
            "baseFeePerGas": quantity_to_json(self.base_fee_per_gas),
            "blockHash": data_to_json(self.block_hash),
            "transactions": [data_to_json(tx) for tx in self.transactions],
            "withdrawals": [w.to_json() for w in self.withdrawals],
        }

    @classmethod
    def from_json(cls, obj: Any, path: str = "$", *, strict: bool = True) -> ExecutionPayload:
        """Parse ``ExecutionPayloadV2``. A V1 payload (no ``withdrawals``) is an error: Alys
        activates Shanghai at genesis, so shanghai.md requires V2 for every payload."""
        o = _object(obj, path, "ExecutionPayloadV2", _PAYLOAD_KEYS, strict=strict)

        def data(key: str, size: int | None = None, max_size: int | None = None) -> bytes:
            return data_from_json(o[key], _member(path, key), size=size, max_size=max_size)

        def quantity(key: str, bits: int = _U64) -> int:
            return quantity_from_json(o[key], _member(path, key), bits=bits)

        txs_path = _member(path, "transactions")
        txs = _array(o["transactions"], txs_path, "transactions (DATA)")
        return cls(
            parent_hash=data("parentHash", HASH_SIZE),
            fee_recipient=data("feeRecipient", ADDRESS_SIZE),
            state_root=data("stateRoot", HASH_SIZE),
            receipts_root=data("receiptsRoot", HASH_SIZE),
            logs_bloom=data("logsBloom", LOGS_BLOOM_SIZE),
            prev_randao=data("prevRandao", HASH_SIZE),
            block_number=quantity("blockNumber"),
            gas_limit=quantity("gasLimit"),
            gas_used=quantity("gasUsed"),
            timestamp=quantity("timestamp"),
            extra_data=data("extraData", max_size=MAX_EXTRA_DATA_SIZE),
            base_fee_per_gas=quantity("baseFeePerGas", _U256),
            block_hash=data("blockHash", HASH_SIZE),
            transactions=tuple(data_from_json(tx, f"{txs_path}[{i}]") for i, tx in enumerate(txs)),
            withdrawals=_withdrawals_from_json(
                o["withdrawals"], _member(path, "withdrawals"), strict
            ),
        )


_PAYLOAD_KEYS: Final = (
    "parentHash",
    "feeRecipient",
    "stateRoot",
    "receiptsRoot",
    "logsBloom",
    "prevRandao",
    "blockNumber",
    "gasLimit",
    "gasUsed",
    "timestamp",
    "extraData",
    "baseFeePerGas",
    "blockHash",
    "transactions",
    "withdrawals",
)


@otp.codec.register(tag="alys.execution.PayloadAttributes")
@attrs.frozen
class PayloadAttributes:
    """``PayloadAttributesV2`` (shanghai.md): what to build on top of the forkchoice head."""

    timestamp: int = attrs.field(validator=_check_uint(_U64))
    prev_randao: bytes = attrs.field(validator=_check_bytes(HASH_SIZE))
    suggested_fee_recipient: bytes = attrs.field(validator=_check_bytes(ADDRESS_SIZE))
    withdrawals: tuple[Withdrawal, ...] = attrs.field(
        converter=_withdrawal_tuple, validator=_check_items(Withdrawal)
    )

    def to_json(self) -> dict[str, Any]:
        return {
            "timestamp": quantity_to_json(self.timestamp),
            "prevRandao": data_to_json(self.prev_randao),
            "suggestedFeeRecipient": data_to_json(self.suggested_fee_recipient),
            "withdrawals": [w.to_json() for w in self.withdrawals],
        }

    @classmethod
    def from_json(cls, obj: Any, path: str = "$", *, strict: bool = True) -> PayloadAttributes:
        """Parse ``PayloadAttributesV2``; V1 attributes (no ``withdrawals``) are an error, as
        shanghai.md requires V2 at and after the Shanghai timestamp (genesis, for Alys)."""
        keys = ("timestamp", "prevRandao", "suggestedFeeRecipient", "withdrawals")
        o = _object(obj, path, "PayloadAttributesV2", keys, strict=strict)
        return cls(
            timestamp=quantity_from_json(o["timestamp"], _member(path, "timestamp"), bits=_U64),
            prev_randao=data_from_json(
                o["prevRandao"], _member(path, "prevRandao"), size=HASH_SIZE
            ),
            suggested_fee_recipient=data_from_json(
                o["suggestedFeeRecipient"],
                _member(path, "suggestedFeeRecipient"),
                size=ADDRESS_SIZE,
            ),
            withdrawals=_withdrawals_from_json(
                o["withdrawals"], _member(path, "withdrawals"), strict
            ),
        )


@otp.codec.register(tag="alys.execution.ForkchoiceState")
@attrs.frozen
class ForkchoiceState:
    """``ForkchoiceStateV1`` (paris.md). ``safe`` and ``finalized`` may be :data:`ZERO_HASH`
    ("none yet")."""

    head_block_hash: bytes = attrs.field(validator=_check_bytes(HASH_SIZE))
    safe_block_hash: bytes = attrs.field(validator=_check_bytes(HASH_SIZE))
    finalized_block_hash: bytes = attrs.field(validator=_check_bytes(HASH_SIZE))

    def to_json(self) -> dict[str, Any]:
        return {
            "headBlockHash": data_to_json(self.head_block_hash),
            "safeBlockHash": data_to_json(self.safe_block_hash),
            "finalizedBlockHash": data_to_json(self.finalized_block_hash),
        }

    @classmethod
    def from_json(cls, obj: Any, path: str = "$", *, strict: bool = True) -> ForkchoiceState:
        keys = ("headBlockHash", "safeBlockHash", "finalizedBlockHash")
        o = _object(obj, path, "ForkchoiceStateV1", keys, strict=strict)
        h = [data_from_json(o[k], _member(path, k), size=HASH_SIZE) for k in keys]
        return cls(head_block_hash=h[0], safe_block_hash=h[1], finalized_block_hash=h[2])


class PayloadStatusKind(enum.Enum):
    """``PayloadStatusV1.status`` (paris.md)."""

    VALID = "VALID"
    INVALID = "INVALID"
    SYNCING = "SYNCING"
    ACCEPTED = "ACCEPTED"
    INVALID_BLOCK_HASH = "INVALID_BLOCK_HASH"


def _check_optional_str(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is not None and type(value) is not str:
        raise TypeError(
            f"{type(instance).__name__}.{attribute.name} must be str or None, "
            f"got {_describe(value)}"
        )


@otp.codec.register(tag="alys.execution.PayloadStatus")
@attrs.frozen
class PayloadStatus:
    """``PayloadStatusV1`` (paris.md): the verdict on a payload or forkchoice head."""

    status: PayloadStatusKind = attrs.field(validator=_check_instance(PayloadStatusKind))
    latest_valid_hash: bytes | None = attrs.field(
        default=None, validator=_check_optional_bytes(HASH_SIZE)
    )
    validation_error: str | None = attrs.field(default=None, validator=_check_optional_str)

    def to_json(self) -> dict[str, Any]:
        return {
            "status": self.status.value,
            "latestValidHash": (
                None if self.latest_valid_hash is None else data_to_json(self.latest_valid_hash)
            ),
            "validationError": self.validation_error,
        }

    @classmethod
    def from_json(cls, obj: Any, path: str = "$", *, strict: bool = True) -> PayloadStatus:
        o = _object(
            obj,
            path,
            "PayloadStatusV1",
            ("status",),
            ("latestValidHash", "validationError"),
            strict=strict,
        )
        status = o["status"]
        if not isinstance(status, str) or status not in PayloadStatusKind.__members__:
            allowed = ", ".join(PayloadStatusKind.__members__)
            raise SchemaError(
                _member(path, "status"), f"expected one of {allowed}, got {_describe(status)}"
            )
        lvh = o.get("latestValidHash")
        error = o.get("validationError")
        if error is not None and not isinstance(error, str):
            raise SchemaError(
                _member(path, "validationError"),
                f"expected a string or null, got {_describe(error)}",
            )
        return cls(
            status=PayloadStatusKind(status),
            latest_valid_hash=(
                None
                if lvh is None
                else data_from_json(lvh, _member(path, "latestValidHash"), size=HASH_SIZE)
            ),
            validation_error=error,
        )


_FORKCHOICE_STATUSES: Final = frozenset(
    {PayloadStatusKind.VALID, PayloadStatusKind.INVALID, PayloadStatusKind.SYNCING}
)


def _check_forkchoice_status(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if not isinstance(value, PayloadStatus):
        raise TypeError(
            f"ForkchoiceUpdatedResult.payload_status must be PayloadStatus, got {_describe(value)}"
        )
    if value.status not in _FORKCHOICE_STATUSES:
        raise ValueError(
            "ForkchoiceUpdatedResult.payload_status.status must be VALID, INVALID or SYNCING "
            f"(paris.md, engine_forkchoiceUpdatedV1 response), got {value.status.value}"
        )


@otp.codec.register(tag="alys.execution.ForkchoiceUpdatedResult")
@attrs.frozen
class ForkchoiceUpdatedResult:
    """The ``engine_forkchoiceUpdatedV2`` result (paris.md, engine_forkchoiceUpdatedV1
    response; ``ForkchoiceUpdatedResponseV1`` in openrpc/schemas/forkchoice.yaml)."""

    payload_status: PayloadStatus = attrs.field(validator=_check_forkchoice_status)
    payload_id: bytes | None = attrs.field(
        default=None, validator=_check_optional_bytes(PAYLOAD_ID_SIZE)
    )

    def to_json(self) -> dict[str, Any]:
        return {
            "payloadStatus": self.payload_status.to_json(),
            "payloadId": None if self.payload_id is None else data_to_json(self.payload_id),
        }

    @classmethod
    def from_json(
        cls, obj: Any, path: str = "$", *, strict: bool = True
    ) -> ForkchoiceUpdatedResult:
        o = _object(
            obj,
            path,
            "forkchoiceUpdated response",
            ("payloadStatus",),
            ("payloadId",),
            strict=strict,
        )
        status_path = _member(path, "payloadStatus")
        status = PayloadStatus.from_json(o["payloadStatus"], status_path, strict=strict)
        if status.status not in _FORKCHOICE_STATUSES:
            raise SchemaError(
                _member(status_path, "status"),
                f"forkchoiceUpdated allows only VALID, INVALID or SYNCING, "
                f"got {status.status.value}",
            )
        pid = o.get("payloadId")
        return cls(
            payload_status=status,
            payload_id=(
                None
                if pid is None
                else data_from_json(pid, _member(path, "payloadId"), size=PAYLOAD_ID_SIZE)
            ),
        )


@otp.codec.register(tag="alys.execution.GetPayloadResult")
@attrs.frozen
class GetPayloadResult:
    """The ``engine_getPayloadV2`` result (shanghai.md): the payload and ``blockValue``, the
    wei the fee recipient is expected to receive."""

    execution_payload: ExecutionPayload = attrs.field(validator=_check_instance(ExecutionPayload))
    block_value: int = attrs.field(validator=_check_uint(_U256))

    def to_json(self) -> dict[str, Any]:
        return {
            "executionPayload": self.execution_payload.to_json(),
            "blockValue": quantity_to_json(self.block_value),
        }

    @classmethod
    def from_json(cls, obj: Any, path: str = "$", *, strict: bool = True) -> GetPayloadResult:
        o = _object(
            obj,
            path,
            "getPayloadV2 response",
            ("executionPayload", "blockValue"),
            strict=strict,
        )
        return cls(
            execution_payload=ExecutionPayload.from_json(
                o["executionPayload"], _member(path, "executionPayload"), strict=strict
            ),
            block_value=quantity_from_json(
                o["blockValue"], _member(path, "blockValue"), bits=_U256
            ),
        )


@attrs.frozen
class Receipt:
    """What the node reads of a transaction receipt (execution-apis ``ReceiptInfo``): the gas
    it used and the price per gas its sender paid, base fee included."""

    gas_used: int = attrs.field(validator=_check_uint(_U64))
    effective_gas_price: int = attrs.field(validator=_check_uint(_U256))

    @classmethod
    def from_json(cls, obj: Any, path: str = "$") -> Receipt:
        """From an ``eth_getBlockReceipts`` item; other members are ignored."""
        o = _object(obj, path, "ReceiptInfo", ("gasUsed", "effectiveGasPrice"), strict=False)
        return cls(
            gas_used=quantity_from_json(o["gasUsed"], _member(path, "gasUsed"), bits=_U64),
            effective_gas_price=quantity_from_json(
                o["effectiveGasPrice"], _member(path, "effectiveGasPrice"), bits=_U256),
        )


# --------------------------------------------------------------------------- the interface


@runtime_checkable
class ExecutionEngine(Protocol):
    """What the node needs from an execution engine: the Engine API calls of Capella.

    Implemented by :class:`node.integration.engine.EngineClient` (HTTP + JWT, for Geth or
    Reth) and :class:`node.execution.embedded.EmbeddedEngine` (in process). Both raise
    :class:`EngineError` with the specification's error codes (``-38001`` unknown payload,
    ``-38002`` invalid forkchoice state, ``-38003`` invalid payload attributes, ...).
    """

    async def exchange_capabilities(self, methods: Sequence[str]) -> list[str]:
        """``engine_exchangeCapabilities``: our methods in, the engine's methods out."""
        ...

    async def forkchoice_updated(
        self, state: ForkchoiceState, attributes: PayloadAttributes | None = None
    ) -> ForkchoiceUpdatedResult:
        """``engine_forkchoiceUpdatedV2``: set head/safe/finalized; build if attributes."""
        ...

    async def get_payload(self, payload_id: bytes) -> GetPayloadResult:
        """``engine_getPayloadV2``: the payload of a build process."""
        ...

    async def new_payload(self, payload: ExecutionPayload) -> PayloadStatus:
        """``engine_newPayloadV2``: validate and import a payload (does not move the head)."""
        ...

    async def latest_block(self) -> tuple[int, bytes]:
        """The number and hash of the engine's head (``eth_getBlockByNumber("latest")``):
        where the restart path starts looking for the last stored block the engine has."""
        ...

    async def block_number(self, block_hash: bytes) -> int | None:
        """The number of a block the engine has, None if it lacks it
        (``eth_getBlockByHash``)."""
        ...

    async def receipts(self, block_hash: bytes) -> list[Receipt]:
        """The receipts of a block the engine has, in order (``eth_getBlockReceipts``): the
        fees of a block are computed from them."""
        ...

    async def aclose(self) -> None:
        """Release connections or other resources."""
        ...


# --------------------------------------------------------------------------- eth blocks

#: Keccak-256 of the RLP of an empty list: the uncle hash of every post-merge block.
EMPTY_UNCLES_HASH: Final = bytes.fromhex(
    "1dcc4de8dec75d7aab85b567b6ccd41ad312451b948a7413f0a142fd40d49347"
)
_ETH_BLOCK_KEYS: Final = (
    "parentHash", "miner", "stateRoot", "receiptsRoot", "logsBloom", "mixHash", "number",
    "gasLimit", "gasUsed", "timestamp", "extraData", "baseFeePerGas", "hash", "transactions",
    "withdrawals",
)


def payload_from_eth_block(obj: Any, path: str = "$") -> ExecutionPayload:
    """An ``ExecutionPayload`` from an ``eth_getBlockByNumber(n, false)`` result (the
    execution-apis ``Block`` object): how the original takes the execution layer's block 0
    as its genesis payload. Only genesis-like blocks (no transactions) are supported, since a
    block fetched without full transactions carries only their hashes."""
    o = _object(obj, path, "Block", _ETH_BLOCK_KEYS, strict=False)

    def data(key: str, size: int | None = None, max_size: int | None = None) -> bytes:
        return data_from_json(o[key], _member(path, key), size=size, max_size=max_size)

    def quantity(key: str, bits: int = _U64) -> int:
        return quantity_from_json(o[key], _member(path, key), bits=bits)

    if _array(o["transactions"], _member(path, "transactions"), "transactions"):
        raise SchemaError(_member(path, "transactions"), "a block with transactions cannot be "
                          "rebuilt from transaction hashes")
    return ExecutionPayload(
        parent_hash=data("parentHash", HASH_SIZE),
        fee_recipient=data("miner", ADDRESS_SIZE),
        state_root=data("stateRoot", HASH_SIZE),
        receipts_root=data("receiptsRoot", HASH_SIZE),
        logs_bloom=data("logsBloom", LOGS_BLOOM_SIZE),
        prev_randao=data("mixHash", HASH_SIZE),
        block_number=quantity("number"),
        gas_limit=quantity("gasLimit"),
        gas_used=quantity("gasUsed"),
        timestamp=quantity("timestamp"),
        extra_data=data("extraData", max_size=MAX_EXTRA_DATA_SIZE),
        base_fee_per_gas=quantity("baseFeePerGas", _U256),
        block_hash=data("hash", HASH_SIZE),
        transactions=(),
        withdrawals=_withdrawals_from_json(o["withdrawals"], _member(path, "withdrawals"), True),
    )


def eth_block_json(payload: ExecutionPayload) -> dict[str, Any]:
    """The ``Block`` object an execution client returns for a payload (no transactions),
    as ``eth_getBlockByNumber(n, false)`` does; used by the test server."""
    return {
        "hash": data_to_json(payload.block_hash),
        "parentHash": data_to_json(payload.parent_hash),
        "sha3Uncles": data_to_json(EMPTY_UNCLES_HASH),
        "miner": data_to_json(payload.fee_recipient),
        "stateRoot": data_to_json(payload.state_root),
        "transactionsRoot": data_to_json(ZERO_HASH),
        "receiptsRoot": data_to_json(payload.receipts_root),
        "logsBloom": data_to_json(payload.logs_bloom),
        "difficulty": "0x0",
        "number": quantity_to_json(payload.block_number),
        "gasLimit": quantity_to_json(payload.gas_limit),
        "gasUsed": quantity_to_json(payload.gas_used),
        "timestamp": quantity_to_json(payload.timestamp),
        "extraData": data_to_json(payload.extra_data),
        "mixHash": data_to_json(payload.prev_randao),
        "nonce": "0x0000000000000000",
        "baseFeePerGas": quantity_to_json(payload.base_fee_per_gas),
        "withdrawalsRoot": data_to_json(ZERO_HASH),
        "size": "0x0",
        "transactions": [],
        "uncles": [],
        "withdrawals": [w.to_json() for w in payload.withdrawals],
    }
