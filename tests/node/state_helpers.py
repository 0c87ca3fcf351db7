"""Builders for the state download tests: an embedded engine whose state has many accounts,
a contract with storage (many slots, so its storage trie has branches, extensions and inline
leaves) and code, made by executing real transactions; and a download driven to the end
against a source of values."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from eth_account import Account
from eth_utils.address import to_checksum_address

from node.execution.accounts import dev_accounts
from node.execution.embedded import EmbeddedEngine, contract_address
from node.integration.engine import build_block, commit_block
from node.types.execution import ExecutionPayload
from node.workflows import state_sync

CHAIN_ID = 121212
SENDERS = dev_accounts()[:4]
#: Runtime code: SSTORE(slot = calldata[32:64], value = calldata[0:32]); STOP.
STORE_CODE = bytes.fromhex("600035602035" "55" "00")
#: Init code: store 7 at slot 1 and 9 at slot 2, then return STORE_CODE.
STORE_INIT = (bytes.fromhex("6007600155" "6009600255") + bytes([0x67]) + STORE_CODE
              + bytes.fromhex("600052" "6008" "6018" "f3"))


def _signed(sender: Any, nonce: int, **fields: Any) -> bytes:
    tx = {"value": 0, "gas": 100_000, "chainId": CHAIN_ID, "nonce": nonce,
          "maxFeePerGas": 10**10, "maxPriorityFeePerGas": 10**9, **fields}
    return bytes(Account.sign_transaction(tx, sender.private_key).raw_transaction)


def recipient(i: int) -> bytes:
    return (0x5000 + i).to_bytes(20, "big")


async def next_block(engine: EmbeddedEngine) -> ExecutionPayload:
    parent = engine.head
    payload = await build_block(engine, parent.block_hash, None, parent.timestamp + 2,
                                bytes(20), [])
    assert await commit_block(engine, payload, None) == payload.block_hash
    return payload


async def rich_state(engine: EmbeddedEngine, *, accounts: int = 120, slots: int = 60,
                     per_block: int = 40) -> tuple[bytes, list[ExecutionPayload]]:
    """Give ``engine`` (at genesis) a contract (the returned address) with ``slots`` storage
    slots set besides its two own, and ``accounts`` funded accounts (:func:`recipient`);
    returns the contract's address and the payloads executed."""
    deployer = SENDERS[0]
    txs = [_signed(deployer, 0, data=STORE_INIT, gas=200_000)]
    contract = contract_address(deployer.address, 0)
    nonces = {s.address: 0 for s in SENDERS}
    nonces[deployer.address] = 1
    for i in range(accounts):
        s = SENDERS[1 + i % 3]
        txs.append(_signed(s, nonces[s.address], to=to_checksum_address(recipient(i)),
                           value=10**15 + i, gas=21_000))
        nonces[s.address] += 1
    for i in range(slots):
        data = slot_value(i).to_bytes(32, "big") + (1000 + i).to_bytes(32, "big")
        txs.append(_signed(deployer, nonces[deployer.address],
                           to=to_checksum_address(contract), data=data))
        nonces[deployer.address] += 1
    payloads = []
    for first in range(0, len(txs), per_block):
        for raw in txs[first:first + per_block]:
            engine.add_transaction(raw)
        payloads.append(await next_block(engine))
    return contract, payloads


def download(root: bytes, source: Callable[[Sequence[bytes]], Sequence[bytes]], *,
             batch: int = 64) -> tuple[state_sync.StateDownload, dict[bytes, bytes]]:
    """Drive a download of ``root`` to the end, asking ``source`` (hashes -> values) for
    each batch; returns the finished download and what it stored. Stops (AssertionError)
    if a round makes no progress."""
    d = state_sync.start(root)
    stored: dict[bytes, bytes] = {}
    while not d.done:
        d, wants = state_sync.next_batch(d, batch)
        answer = state_sync.answered(d, wants, source([w.hash for w in wants]))
        assert answer.missing < len(wants) or not wants, "no progress"
        stored.update(answer.store)
        d = answer.download
    return d, stored


def slot_value(i: int) -> int:
    """What :func:`rich_state` stores in the contract's slot ``1000 + i``."""
    return 0xABC000 + i * 7919
