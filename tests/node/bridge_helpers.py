"""Calling the predeployed bridge from outside clients and checking a peg-out on any
execution client's JSON-RPC (the embedded node's, Geth's): the receipt read back through
``node.workflows.bridge_events``, the burn and the sender's balance accounted to the wei."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
from eth_account import Account
from web3 import Web3

from node.types.bridge import BRIDGE_ADDRESS, BURN_ADDRESS, PegOutEvent
from node.types.eth import EthBlock, EthReceipt
from node.workflows.bridge_events import requests_from_receipts

ABI_FILE = Path(__file__).resolve().parents[2] / "contracts" / "Bridge.abi.json"
BRIDGE = Web3.to_checksum_address(BRIDGE_ADDRESS)
BURN = Web3.to_checksum_address(BURN_ADDRESS)
GWEI = 10**9
TIMEOUT = 60
#: The fee caps of the peg-outs request_peg_out signs.
MAX_FEE = 100 * GWEI
TIP = 2 * GWEI


def rpc(url: str, method: str, *params: Any) -> Any:
    reply = httpx.post(url, json={"jsonrpc": "2.0", "id": 1, "method": method,
                                  "params": list(params)}, timeout=TIMEOUT).json()
    assert reply.get("error") is None, f"{method}: {reply['error']}"
    return reply["result"]


def bridge(w3: Web3) -> Any:
    return w3.eth.contract(address=BRIDGE, abi=json.loads(ABI_FILE.read_text()))


def request_peg_out(w3: Web3, private_key: bytes, address: bytes, value: int,
                    nonce: int | None = None) -> bytes:
    """``requestPegOut(address)`` with ``value`` wei, signed with ``private_key`` and sent
    with web3.py; the transaction's hash."""
    account = Account.from_key(private_key)
    if nonce is None:
        nonce = w3.eth.get_transaction_count(account.address, "latest")
    built = bridge(w3).functions.requestPegOut(address).build_transaction({
        "from": account.address, "value": value, "nonce": nonce, "chainId": w3.eth.chain_id,
        "maxFeePerGas": MAX_FEE, "maxPriorityFeePerGas": TIP, "gas": 100_000})
    return bytes(w3.eth.send_raw_transaction(account.sign_transaction(built).raw_transaction))


def check_peg_out(url: str, tx_hash: bytes, sender: str, address: bytes,
                  value: int, *, trust_gas_price: bool = True) -> PegOutEvent:
    """The mined peg-out ``tx_hash`` on the client at ``url``: its receipt's one log reads
    back (alone and among its block's receipts) as the request sent; 0x...dEaD gained the
    value (and, being the blocks' default fee recipient here, the block's tips and any
    withdrawal to it, counted from the block itself); the sender lost the value and the fee.
    Without ``trust_gas_price`` (ethereumjs 0.10.5 reports the tip alone as
    ``effectiveGasPrice``) the price is worked out from the caps ``request_peg_out`` signs,
    and the block's tips must not go to 0x...dEaD."""
    raw = rpc(url, "eth_getTransactionReceipt", "0x" + tx_hash.hex())
    assert raw is not None, f"no receipt for 0x{tx_hash.hex()}"
    receipt = EthReceipt.from_json(raw, "receipt")
    assert receipt.status == 1, raw
    [found] = requests_from_receipts([receipt])
    expected = PegOutEvent(
        tx_hash=tx_hash, log_index=found.log_index, block_number=receipt.block_number,
        block_hash=receipt.block_hash, evm_address=bytes.fromhex(sender[2:]),
        bitcoin_address=address, value_wei=value)
    assert found == expected
    assert found.log_index == receipt.logs[0].log_index and len(receipt.logs) == 1
    # The same request among the whole block's receipts.
    number = hex(receipt.block_number)
    block_receipts = [EthReceipt.from_json(r, f"receipts[{i}]")
                      for i, r in enumerate(rpc(url, "eth_getBlockReceipts", number))]
    requests = requests_from_receipts(block_receipts)
    assert found in requests
    # The money: 0x...dEaD's balance across the block, every source of it counted.
    block = EthBlock.from_json(rpc(url, "eth_getBlockByNumber", number, False), "block")
    if trust_gas_price:
        price = receipt.effective_gas_price
        tips = sum((r.effective_gas_price - block.base_fee_per_gas) * r.gas_used
                   for r in block_receipts) if block.fee_recipient == BURN_ADDRESS else 0
    else:
        assert block.fee_recipient != BURN_ADDRESS, "tips cannot be counted: move them"
        price = min(MAX_FEE, block.base_fee_per_gas + TIP)
        tips = 0
    withdrawn = sum(w.amount * GWEI for w in block.withdrawals if w.address == BURN_ADDRESS)
    burned = sum(r.value_wei for r in requests)

    def balance(who: str, at: int) -> int:
        return int(rpc(url, "eth_getBalance", who, hex(at)), 16)

    before, after = receipt.block_number - 1, receipt.block_number
    assert balance(BURN, after) - balance(BURN, before) == burned + tips + withdrawn
    assert balance(BRIDGE, after) == 0
    fee = receipt.gas_used * price
    assert balance(sender, before) - balance(sender, after) == value + fee
    return found
