"""What the node reads of Ethereum's JSON-RPC objects (execution-apis ``Block``,
``TransactionInfo``, ``ReceiptInfo``, ``Log``): frozen values parsed strictly from what an
execution client answers.

Each ``from_json`` checks the members it reads — exact hex formats, sizes and widths, arrays
where arrays belong, ``null`` only where the specification allows it — and ignores the
others (clients add members: Geth's ``blobGasUsed``, ethereumjs's ``totalDifficulty``). A
member of the wrong shape raises :class:`~node.types.execution.SchemaError` naming its path
(``result.logs[2].topics[0]``), which the clients turn into an engine error naming the
method.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

import attrs

from .execution import (
    ADDRESS_SIZE,
    HASH_SIZE,
    Receipt,
    SchemaError,
    Withdrawal,
    data_from_json,
    quantity_from_json,
)

__all__ = ["EthBlock", "EthLog", "EthReceipt", "EthTransaction"]

_U64: Final = 64
_U256: Final = 256
#: Ethereum's LOG0..LOG4: at most four topics a log.
MAX_TOPICS: Final = 4


class _Reader:
    """Members of one JSON object, read at ``path`` (``result.logs[0]``)."""

    def __init__(self, value: Any, path: str, what: str) -> None:
        if not isinstance(value, dict):
            shown = repr(value)
            shown = shown if len(shown) <= 60 else shown[:57] + "..."
            raise SchemaError(path, f"expected a {what} object, got {type(value).__name__} "
                              f"{shown}")
        self.obj: Mapping[str, Any] = value
        self.path = path
        self.what = what

    def _get(self, key: str, optional: bool) -> Any:
        if key not in self.obj:
            if optional:
                return None
            raise SchemaError(self.path, f"{self.what} is missing the member {key!r}")
        value = self.obj[key]
        if value is None and not optional:
            raise SchemaError(f"{self.path}.{key}", f"{self.what}.{key} may not be null")
        return value

    def quantity(self, key: str, bits: int = _U64) -> int:
        value = self._get(key, False)
        return quantity_from_json(value, f"{self.path}.{key}", bits=bits)

    def maybe_quantity(self, key: str, bits: int = _U64) -> int | None:
        value = self._get(key, True)
        return None if value is None else quantity_from_json(value, f"{self.path}.{key}",
                                                             bits=bits)

    def data(self, key: str, size: int | None = None, max_size: int | None = None) -> bytes:
        value = self._get(key, False)
        return data_from_json(value, f"{self.path}.{key}", size=size, max_size=max_size)

    def maybe_data(self, key: str, size: int | None = None) -> bytes | None:
        value = self._get(key, True)
        return None if value is None else data_from_json(value, f"{self.path}.{key}", size=size)

    def array(self, key: str, optional: bool = False) -> list[Any]:
        value = self._get(key, optional)
        if value is None:
            return []
        if not isinstance(value, list):
            raise SchemaError(f"{self.path}.{key}", f"expected an array, got "
                              f"{type(value).__name__}")
        return value

    def boolean(self, key: str, default: bool) -> bool:
        value = self._get(key, True)
        if value is None:
            return default
        if type(value) is not bool:
            raise SchemaError(f"{self.path}.{key}", f"expected true or false, got {value!r:.40}")
        return value


def _hashes(values: list[Any], path: str) -> tuple[bytes, ...]:
    out = []
    for i, item in enumerate(values):
        if isinstance(item, dict):  # a full transaction object: its hash
            item = _Reader(item, f"{path}[{i}]", "TransactionInfo").obj.get("hash")
        out.append(data_from_json(item, f"{path}[{i}]", size=HASH_SIZE))
    return tuple(out)


@attrs.frozen
class EthBlock:
    """A block as ``eth_getBlockByHash`` / ``eth_getBlockByNumber`` answer it (transactions
    as hashes; full transaction objects are read down to their hashes)."""

    number: int
    hash: bytes
    parent_hash: bytes
    timestamp: int
    gas_limit: int
    gas_used: int
    base_fee_per_gas: int
    fee_recipient: bytes
    transactions: tuple[bytes, ...]
    withdrawals: tuple[Withdrawal, ...]

    @classmethod
    def from_json(cls, obj: Any, path: str = "$") -> EthBlock:
        r = _Reader(obj, path, "Block")
        withdrawals = tuple(
            Withdrawal.from_json(w, f"{path}.withdrawals[{i}]", strict=False)
            for i, w in enumerate(r.array("withdrawals", optional=True)))
        return cls(
            number=r.quantity("number"),
            hash=r.data("hash", HASH_SIZE),
            parent_hash=r.data("parentHash", HASH_SIZE),
            timestamp=r.quantity("timestamp"),
            gas_limit=r.quantity("gasLimit"),
            gas_used=r.quantity("gasUsed"),
            base_fee_per_gas=r.quantity("baseFeePerGas", _U256),
            fee_recipient=r.data("miner", ADDRESS_SIZE),
            transactions=_hashes(r.array("transactions"), f"{path}.transactions"),
            withdrawals=withdrawals,
        )


@attrs.frozen
class EthTransaction:
    """A transaction as ``eth_getTransactionByHash`` answers it. ``block_hash``,
    ``block_number`` and ``index`` are None while it is pending."""

    hash: bytes
    sender: bytes
    to: bytes | None
    nonce: int
    value: int
    gas: int
    input: bytes
    type: int
    block_hash: bytes | None
    block_number: int | None
    index: int | None

    @classmethod
    def from_json(cls, obj: Any, path: str = "$") -> EthTransaction:
        r = _Reader(obj, path, "TransactionInfo")
        block_hash = r.maybe_data("blockHash", HASH_SIZE)
        block_number = r.maybe_quantity("blockNumber")
        index = r.maybe_quantity("transactionIndex")
        if (block_hash is None) != (block_number is None):
            raise SchemaError(path, "blockHash and blockNumber must both be set or both null")
        return cls(
            hash=r.data("hash", HASH_SIZE),
            sender=r.data("from", ADDRESS_SIZE),
            to=r.maybe_data("to", ADDRESS_SIZE),
            nonce=r.quantity("nonce"),
            value=r.quantity("value", _U256),
            gas=r.quantity("gas"),
            input=r.data("input"),
            type=r.maybe_quantity("type", 8) or 0,
            block_hash=block_hash,
            block_number=block_number,
            index=index,
        )


@attrs.frozen
class EthLog:
    """One log of a receipt (``Log``)."""

    address: bytes
    topics: tuple[bytes, ...]
    data: bytes
    log_index: int
    transaction_hash: bytes
    block_hash: bytes
    block_number: int
    removed: bool

    @classmethod
    def from_json(cls, obj: Any, path: str = "$") -> EthLog:
        r = _Reader(obj, path, "Log")
        topics = r.array("topics")
        if len(topics) > MAX_TOPICS:
            raise SchemaError(f"{path}.topics", f"a log has at most {MAX_TOPICS} topics, "
                              f"got {len(topics)}")
        return cls(
            address=r.data("address", ADDRESS_SIZE),
            topics=tuple(data_from_json(t, f"{path}.topics[{i}]", size=HASH_SIZE)
                         for i, t in enumerate(topics)),
            data=r.data("data"),
            log_index=r.quantity("logIndex"),
            transaction_hash=r.data("transactionHash", HASH_SIZE),
            block_hash=r.data("blockHash", HASH_SIZE),
            block_number=r.quantity("blockNumber"),
            removed=r.boolean("removed", False),
        )


@attrs.frozen
class EthReceipt:
    """A transaction receipt (``ReceiptInfo``) of a Shanghai block: ``status`` 1 for
    success, 0 for a revert."""

    transaction_hash: bytes
    transaction_index: int
    block_hash: bytes
    block_number: int
    sender: bytes
    to: bytes | None
    contract_address: bytes | None
    status: int
    gas_used: int
    cumulative_gas_used: int
    effective_gas_price: int
    logs: tuple[EthLog, ...]

    @classmethod
    def from_json(cls, obj: Any, path: str = "$") -> EthReceipt:
        r = _Reader(obj, path, "ReceiptInfo")
        status = r.quantity("status", 8)
        if status not in (0, 1):
            raise SchemaError(f"{path}.status", f"expected 0x0 or 0x1, got {hex(status)}")
        return cls(
            transaction_hash=r.data("transactionHash", HASH_SIZE),
            transaction_index=r.quantity("transactionIndex"),
            block_hash=r.data("blockHash", HASH_SIZE),
            block_number=r.quantity("blockNumber"),
            sender=r.data("from", ADDRESS_SIZE),
            to=r.maybe_data("to", ADDRESS_SIZE),
            contract_address=r.maybe_data("contractAddress", ADDRESS_SIZE),
            status=status,
            gas_used=r.quantity("gasUsed"),
            cumulative_gas_used=r.quantity("cumulativeGasUsed"),
            effective_gas_price=r.quantity("effectiveGasPrice", _U256),
            logs=tuple(EthLog.from_json(item, f"{path}.logs[{i}]")
                       for i, item in enumerate(r.array("logs"))),
        )

    def fee_receipt(self) -> Receipt:
        """What the fee rule reads: gas used and the effective gas price."""
        return Receipt(self.gas_used, self.effective_gas_price)
