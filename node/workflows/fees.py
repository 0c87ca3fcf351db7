"""A block's fees, from its payload and its receipts: plain functions, no I/O.

ALYS.md: fees = effective tip x gas used, summed over a block's transactions, accumulated
over the unfinalized range and minted on the AuxPoW block (80% to the miner, 20% to the
federation: :func:`node.workflows.chain.fee_withdrawals`).

The **effective tip** is EIP-1559's, read from the transaction itself — the raw bytes the
payload carries — and the block's base fee:

* legacy (untyped) and EIP-2930 (type 1) transactions: ``gasPrice - baseFee``;
* EIP-1559 (type 2): ``min(maxPriorityFeePerGas, maxFeePerGas - baseFee)``.

A Shanghai block holds no other types (blob transactions came with Cancun). The **gas used**
of each transaction comes from its receipt. A receipt's ``effectiveGasPrice`` is not used:
it is the client's report of the same figure (``baseFee + tip``), and not every client
reports it right — ethereumjs 0.10.5 answers the tip alone — so
:func:`receipt_price_problems` only compares it, for a warning.

Transactions are read with a small RLP reader of our own (only what the fee fields need:
the top-level list of a transaction and its byte strings), strict about canonical lengths.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from ..errors import NodeError
from ..types.execution import ExecutionPayload, Receipt

__all__ = ["FeeError", "block_fees", "effective_tip", "fee_caps", "receipt_price_problems"]

#: RLP: one byte below this is its own encoding; 0x80-0xb7 a short string, 0xb8-0xbf a
#: long one, 0xc0-0xf7 a short list, 0xf8-0xff a long one.
_SHORT_STRING: Final = 0x80
_LONG_STRING: Final = 0xB8
_SHORT_LIST: Final = 0xC0
_LONG_LIST: Final = 0xF8


class FeeError(NodeError, ValueError):
    """A transaction or receipt the fee rule cannot read: not RLP, an unknown type, fee caps
    below the base fee (such a block is invalid), receipts that do not match the
    transactions."""


def _length(data: bytes, at: int, size: int) -> int:
    if size > 8 or at + size > len(data):
        raise FeeError("RLP: truncated length")
    if data[at] == 0:
        raise FeeError("RLP: a length with leading zeros")
    value = int.from_bytes(data[at:at + size], "big")
    if value < 56:
        raise FeeError("RLP: a long form for a short length")
    return value


def _item(data: bytes, at: int) -> tuple[bool, int, int]:
    """(is a list, start of the payload, end of the item) of the RLP item at ``at``."""
    if at >= len(data):
        raise FeeError("RLP: truncated item")
    first = data[at]
    if first < _SHORT_STRING:
        return False, at, at + 1
    if first < _LONG_STRING:
        start, end = at + 1, at + 1 + first - _SHORT_STRING
        if end - start == 1 and end <= len(data) and data[start] < _SHORT_STRING:
            raise FeeError("RLP: a single byte below 0x80 must encode itself")
    elif first < _SHORT_LIST:
        size = first - _LONG_STRING + 1
        start = at + 1 + size
        end = start + _length(data, at + 1, size)
    elif first < _LONG_LIST:
        start, end = at + 1, at + 1 + first - _SHORT_LIST
    else:
        size = first - _LONG_LIST + 1
        start = at + 1 + size
        end = start + _length(data, at + 1, size)
    if end > len(data):
        raise FeeError("RLP: an item runs past the end")
    return first >= _SHORT_LIST, start, end


def _list_items(data: bytes) -> list[tuple[bool, bytes]]:
    """The items of the RLP list that is all of ``data``: (is a list, payload)."""
    is_list, start, end = _item(data, 0)
    if not is_list or end != len(data):
        raise FeeError("RLP: a transaction is one list and nothing after it")
    items = []
    at = start
    while at < end:
        nested, payload_start, item_end = _item(data, at)
        if item_end > end:
            raise FeeError("RLP: an item runs past its list")
        items.append((nested, data[payload_start:item_end]))
        at = item_end
    return items


def _uint(item: tuple[bool, bytes], field: str) -> int:
    nested, payload = item
    if nested or len(payload) > 32 or payload[:1] == b"\x00":
        raise FeeError(f"{field}: not a canonical 256-bit integer")
    return int.from_bytes(payload, "big")


def fee_caps(raw: bytes) -> tuple[int, int]:
    """``(max fee per gas, max priority fee per gas)`` of a transaction in its consensus
    encoding; for legacy and type-1 transactions both are the gas price."""
    if not raw:
        raise FeeError("an empty transaction")
    kind = raw[0]
    if kind >= _SHORT_LIST:  # legacy: rlp([nonce, gasPrice, gas, to, value, data, v, r, s])
        items = _list_items(raw)
        if len(items) != 9:
            raise FeeError(f"a legacy transaction has 9 fields, this one {len(items)}")
        price = _uint(items[1], "gasPrice")
        return price, price
    body = _list_items(raw[1:])
    if kind == 1:  # 0x01 || rlp([chainId, nonce, gasPrice, gas, to, value, data, list, y, r, s])
        if len(body) != 11:
            raise FeeError(f"an EIP-2930 transaction has 11 fields, this one {len(body)}")
        price = _uint(body[2], "gasPrice")
        return price, price
    if kind == 2:  # 0x02 || rlp([chainId, nonce, maxPriority, maxFee, gas, to, ...; 12])
        if len(body) != 12:
            raise FeeError(f"an EIP-1559 transaction has 12 fields, this one {len(body)}")
        return _uint(body[3], "maxFeePerGas"), _uint(body[2], "maxPriorityFeePerGas")
    raise FeeError(f"transaction type {kind:#x} is not one a Shanghai block holds")


def effective_tip(raw: bytes, base_fee_per_gas: int) -> int:
    """EIP-1559's effective tip per gas of a transaction in a block with this base fee."""
    max_fee, max_priority = fee_caps(raw)
    if max_fee < base_fee_per_gas:
        raise FeeError(f"max fee per gas {max_fee} is below the base fee {base_fee_per_gas}")
    return min(max_priority, max_fee - base_fee_per_gas)


def _check_count(payload: ExecutionPayload, receipts: Sequence[Receipt]) -> None:
    if len(receipts) != len(payload.transactions):
        raise FeeError(f"block {payload.block_number} has {len(payload.transactions)} "
                       f"transactions but {len(receipts)} receipts")


def block_fees(payload: ExecutionPayload, receipts: Sequence[Receipt]) -> int:
    """A block's fees in wei: the sum over its transactions of the effective tip times the
    gas its receipt says it used. ``receipts`` are the block's, in order."""
    _check_count(payload, receipts)
    base = payload.base_fee_per_gas
    return sum(effective_tip(raw, base) * receipt.gas_used
               for raw, receipt in zip(payload.transactions, receipts, strict=True))


def receipt_price_problems(payload: ExecutionPayload, receipts: Sequence[Receipt]
                           ) -> list[str]:
    """Where a receipt's ``effectiveGasPrice`` is not ``baseFee + effective tip``: one line
    each (empty when the client reports them right)."""
    _check_count(payload, receipts)
    base = payload.base_fee_per_gas
    problems = []
    for i, (raw, receipt) in enumerate(zip(payload.transactions, receipts, strict=True)):
        expected = base + effective_tip(raw, base)
        if receipt.effective_gas_price != expected:
            problems.append(f"transaction {i}: effectiveGasPrice {receipt.effective_gas_price}"
                            f", EIP-1559 gives {expected}")
    return problems
