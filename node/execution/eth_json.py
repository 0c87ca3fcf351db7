"""Ethereum's JSON-RPC objects (execution-apis ``src/schemas``), as geth writes them.

Quantities are ``0x`` hex without leading zeros, data is ``0x`` hex; every object of a block
carries every Shanghai field. Pure functions over py-evm objects: the engine reads, these
shape.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import rlp
from eth_utils.address import to_checksum_address

from .embedded import Block, EvmReceipt, Header, Tx, contract_address, effective_gas_price

__all__ = [
    "block_json",
    "data",
    "header_json",
    "log_json",
    "quantity",
    "receipt_json",
    "transaction_json",
    "withdrawal_json",
]


def quantity(value: int) -> str:
    return hex(value)


def data(value: bytes) -> str:
    return "0x" + value.hex()


def address_json(value: bytes) -> str:
    return str(to_checksum_address(value))


def header_json(header: Header) -> dict[str, Any]:
    """A block header's fields (what ``newHeads`` notifications carry)."""
    return {
        "hash": data(header.hash),
        "parentHash": data(header.parent_hash),
        "sha3Uncles": data(header.uncles_hash),
        "miner": address_json(header.coinbase),
        "stateRoot": data(header.state_root),
        "transactionsRoot": data(header.transaction_root),
        "receiptsRoot": data(header.receipt_root),
        "logsBloom": data(header.bloom.to_bytes(256, "big")),
        "difficulty": quantity(header.difficulty),
        "number": quantity(header.block_number),
        "gasLimit": quantity(header.gas_limit),
        "gasUsed": quantity(header.gas_used),
        "timestamp": quantity(header.timestamp),
        "extraData": data(header.extra_data),
        "mixHash": data(header.mix_hash),
        "nonce": data(header.nonce),
        "baseFeePerGas": quantity(header.base_fee_per_gas),
        "withdrawalsRoot": data(header.withdrawals_root),
    }


def withdrawal_json(w: Any) -> dict[str, Any]:
    return {
        "index": quantity(w.index),
        "validatorIndex": quantity(w.validator_index),
        "address": address_json(w.address),
        "amount": quantity(w.amount),
    }


def block_json(block: Block, *, full: bool) -> dict[str, Any]:
    """``eth_getBlockBy*``: the header's fields, ``size``, ``totalDifficulty`` (0: the chain
    is post-merge from genesis), the transactions (hashes, or objects when ``full``), no
    uncles, and the withdrawals."""
    header = block.header
    out = header_json(header)
    out["size"] = quantity(len(rlp.encode(block)))
    out["totalDifficulty"] = "0x0"
    out["uncles"] = []
    if full:
        out["transactions"] = [transaction_json(tx, header, i)
                               for i, tx in enumerate(block.transactions)]
    else:
        out["transactions"] = [data(tx.hash) for tx in block.transactions]
    out["withdrawals"] = [withdrawal_json(w) for w in getattr(block, "withdrawals", ())]
    return out


def transaction_json(tx: Tx, header: Header | None,
                     index: int | None) -> dict[str, Any]:
    """A transaction, mined (``header`` and ``index``) or pending (both None)."""
    type_id = getattr(tx, "type_id", None)
    out: dict[str, Any] = {
        "blockHash": None if header is None else data(header.hash),
        "blockNumber": None if header is None else quantity(header.block_number),
        "from": address_json(tx.sender),
        "gas": quantity(tx.gas),
        "hash": data(tx.hash),
        "input": data(tx.data),
        "nonce": quantity(tx.nonce),
        "to": address_json(tx.to) if tx.to else None,
        "transactionIndex": None if index is None else quantity(index),
        "value": quantity(tx.value),
        "type": quantity(type_id or 0),
    }
    if type_id == 2:
        out["maxFeePerGas"] = quantity(tx.max_fee_per_gas)
        out["maxPriorityFeePerGas"] = quantity(tx.max_priority_fee_per_gas)
        price = (tx.max_fee_per_gas if header is None
                 else effective_gas_price(tx, header.base_fee_per_gas))
        out["gasPrice"] = quantity(price)
    else:
        out["gasPrice"] = quantity(tx.gas_price)
    if type_id is None:
        out["v"] = quantity(tx.v)
        if tx.chain_id is not None:
            out["chainId"] = quantity(tx.chain_id)
    else:
        out["chainId"] = quantity(tx.chain_id)
        out["accessList"] = [
            {"address": address_json(a), "storageKeys": [data(k.to_bytes(32, "big"))
                                                         for k in keys]}
            for a, keys in tx.access_list
        ]
        out["v"] = quantity(tx.y_parity)
        out["yParity"] = quantity(tx.y_parity)
    out["r"] = quantity(tx.r)
    out["s"] = quantity(tx.s)
    return out


def log_json(header: Header, tx_index: int, tx_hash: bytes, log_index: int,
             log: Any, *, removed: bool = False) -> dict[str, Any]:
    return {
        "address": address_json(log.address),
        "topics": [data(t.to_bytes(32, "big")) for t in log.topics],
        "data": data(log.data),
        "blockNumber": quantity(header.block_number),
        "transactionHash": data(tx_hash),
        "transactionIndex": quantity(tx_index),
        "blockHash": data(header.hash),
        "logIndex": quantity(log_index),
        "removed": removed,
    }


def receipt_json(header: Header, block: Block, receipts: Sequence[EvmReceipt],
                 index: int) -> dict[str, Any]:
    """The receipt of ``block``'s transaction ``index``: its own gas and its block's
    cumulative gas, its logs (log indexes counted over the block), status, the contract a
    creation made."""
    tx = block.transactions[index]
    receipt = receipts[index]
    previous = receipts[index - 1].gas_used if index else 0
    first_log = sum(len(r.logs) for r in receipts[:index])
    creates = not tx.to
    return {
        "transactionHash": data(tx.hash),
        "transactionIndex": quantity(index),
        "blockHash": data(header.hash),
        "blockNumber": quantity(header.block_number),
        "from": address_json(tx.sender),
        "to": None if creates else address_json(tx.to),
        "cumulativeGasUsed": quantity(receipt.gas_used),
        "gasUsed": quantity(receipt.gas_used - previous),
        "effectiveGasPrice": quantity(effective_gas_price(tx, header.base_fee_per_gas)),
        "contractAddress": address_json(contract_address(tx.sender, tx.nonce))
        if creates else None,
        "logs": [log_json(header, index, tx.hash, first_log + i, log)
                 for i, log in enumerate(receipt.logs)],
        "logsBloom": data(receipt.bloom.to_bytes(256, "big")),
        "type": quantity(getattr(tx, "type_id", None) or 0),
        "status": "0x1" if receipt.state_root == b"\x01" else "0x0",
    }
