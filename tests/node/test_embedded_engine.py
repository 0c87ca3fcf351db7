"""The embedded EVM behind the Engine API: genesis, building from the pool, receipts and
fees, newPayload's checks, forkchoice and reorgs, the pool's rules in geth's words, and a
database that survives a reopen."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import attrs
import pytest
from eth_account import Account
from eth_utils.address import to_checksum_address

from node.execution.accounts import dev_accounts
from node.execution.embedded import GWEI, EmbeddedEngine, EngineStateError, header_of_payload
from node.execution.genesis import dev_genesis
from node.execution.txpool import TxRejected
from node.integration.engine import build_block, commit_block
from node.types.execution import (
    INVALID_FORKCHOICE_STATE,
    INVALID_PAYLOAD_ATTRIBUTES,
    UNKNOWN_PAYLOAD,
    ZERO_HASH,
    EngineError,
    ExecutionEngine,
    ExecutionPayload,
    ForkchoiceState,
    PayloadAttributes,
    PayloadStatusKind,
    Withdrawal,
)

A, B, C = dev_accounts()[:3]
DEST = bytes.fromhex("42" * 20)


def transfer(account: Any, nonce: int, *, value: int = 1, tip: int = 10**9,
             cap: int = 10 * 10**9, gas: int = 21000, to: bytes = DEST,
             chain_id: int = 121212, **extra: Any) -> bytes:
    tx = {"to": to_checksum_address(to), "value": value, "gas": gas, "chainId": chain_id,
          "nonce": nonce, "maxFeePerGas": cap, "maxPriorityFeePerGas": tip, **extra}
    key = account.private_key if hasattr(account, "private_key") else account.key
    return bytes(Account.sign_transaction(tx, key).raw_transaction)


def reseal(payload: ExecutionPayload, **changes: Any) -> ExecutionPayload:
    changed = attrs.evolve(payload, **changes)
    return attrs.evolve(changed, block_hash=header_of_payload(changed).hash)


async def extend(engine: EmbeddedEngine, withdrawals: tuple[Withdrawal, ...] = (),
                 *, commit: bool = True, parent: ExecutionPayload | None = None
                 ) -> ExecutionPayload:
    parent = parent or engine.head
    payload = await build_block(engine, parent.block_hash, None, parent.timestamp + 2,
                                bytes(20), withdrawals)
    if commit:
        assert await commit_block(engine, payload, None) == payload.block_hash
    return payload


async def test_genesis_is_block_zero_of_the_genesis_file() -> None:
    engine = EmbeddedEngine()
    assert isinstance(engine, ExecutionEngine)
    g = engine.genesis
    assert (g.block_number, g.parent_hash, g.gas_limit, g.base_fee_per_gas) == (
        0, ZERO_HASH, 0x1C9C380, 10**9)
    assert header_of_payload(g).hash == g.block_hash  # a keccak of the RLP header
    assert engine.balance_of(A.address) == 10_000 * 10**18
    assert engine.block_by_number(0) == g and engine.block_by_number(1) is None
    assert await engine.latest_block() == (0, g.block_hash)


async def test_a_block_executes_pooled_transactions_in_tip_order_and_credits_withdrawals(
) -> None:
    engine = EmbeddedEngine()
    low = engine.add_transaction(transfer(A, 0, tip=1))
    high = engine.add_transaction(transfer(B, 0, tip=5 * 10**9, cap=20 * 10**9))
    follow = engine.add_transaction(transfer(B, 1, tip=1))
    assert engine.pending_nonce(B.address) == 2 and engine.nonce_of(B.address) == 0
    one = await extend(engine, (Withdrawal(0, 0, C.address, 7),))
    assert [tx for tx in one.transactions] == [high.raw, low.raw, follow.raw]
    assert one.gas_used == 3 * 21000 and len(engine.pool) == 0
    assert engine.balance_of(DEST) == 3
    assert engine.balance_of(C.address) == 10_000 * 10**18 + 7 * GWEI
    receipts = await engine.receipts(one.block_hash)
    base = one.base_fee_per_gas
    assert [r.gas_used for r in receipts] == [21000] * 3
    assert [r.effective_gas_price for r in receipts] == [base + 5 * 10**9, base + 1, base + 1]
    got = await engine.get_payload((await engine.forkchoice_updated(
        ForkchoiceState(one.block_hash, ZERO_HASH, ZERO_HASH),
        PayloadAttributes(one.timestamp + 1, ZERO_HASH, bytes(20), ()))).payload_id or b"")
    assert got.block_value == 0  # nothing pooled: nothing earned
    # The base fee follows EIP-1559: a block under half full lowers the next one's.
    two = await extend(engine)
    assert two.base_fee_per_gas < one.base_fee_per_gas


async def test_the_pool_refuses_in_geths_words() -> None:
    engine = EmbeddedEngine()
    engine.add_transaction(transfer(A, 0))
    await extend(engine)
    cases = {
        "nonce too low: next nonce 1, tx nonce 0": transfer(A, 0, value=2),
        "insufficient funds for gas * price + value: balance 0": transfer(
            Account.create(), 0),
        "invalid sender: invalid chain id for signer: have 1 want 121212": transfer(
            A, 1, chain_id=1),
        "intrinsic gas too low: gas 20000, minimum needed 21000": transfer(A, 1, gas=20000),
        "exceeds block gas limit": transfer(A, 1, gas=40_000_000),
        "max priority fee per gas higher than max fee per gas": transfer(A, 1, tip=5, cap=4),
        "transaction underpriced: gas tip cap 0, minimum needed 1": transfer(A, 1, tip=0),
        "rlp:": b"\x02\xc1\x80",
        "transaction type not supported": b"\x03\xc0",
        "only replay-protected (EIP-155) transactions allowed over RPC": bytes(
            Account.sign_transaction({"to": to_checksum_address(DEST), "value": 1, "gas": 21000,
                                      "gasPrice": 10**10, "nonce": 1}, A.private_key)
            .raw_transaction),
    }
    for message, raw in cases.items():
        with pytest.raises(TxRejected) as info:
            engine.add_transaction(raw)
        assert str(info.value).startswith(message), (message, str(info.value))
    first = engine.add_transaction(transfer(A, 1))
    with pytest.raises(TxRejected, match="already known"):
        engine.add_transaction(first.raw)
    with pytest.raises(TxRejected, match="replacement transaction underpriced"):
        engine.add_transaction(transfer(A, 1, value=9))
    bumped = engine.add_transaction(transfer(A, 1, value=9, tip=2 * 10**9, cap=11 * 10**9))
    assert engine.pool.get(first.hash) is None and engine.pool.get(bumped.hash) is bumped
    # Funds cover each pooled transaction's most it can cost, all together.
    rich = Account.create()
    engine.add_transaction(transfer(B, 0, to=bytes.fromhex(rich.address[2:]),
                                    value=3 * 21000 * 10**10))
    await extend(engine)
    engine.add_transaction(transfer(rich, 0, value=0))
    with pytest.raises(TxRejected, match="queued cost"):
        engine.add_transaction(transfer(rich, 1, value=2 * 21000 * 10**10))


async def test_new_payload_checks_hash_parent_header_and_execution() -> None:
    engine = EmbeddedEngine()
    other = EmbeddedEngine()
    engine.add_transaction(transfer(A, 0))
    built = await extend(engine, (Withdrawal(0, 0, B.address, 3),), commit=False)
    bad_hash = await other.new_payload(attrs.evolve(built, block_hash=b"\x01" * 32))
    assert (bad_hash.status, bad_hash.latest_valid_hash) == (PayloadStatusKind.INVALID, None)
    assert "block hash mismatch" in (bad_hash.validation_error or "")
    genesis = other.genesis.block_hash
    cases = {
        "block number": {"block_number": 2},
        "timestamp": {"timestamp": 0},
        "base fee": {"base_fee_per_gas": 8},
        "gas used": {"gas_used": 42000},
        "receipts root": {"receipts_root": bytes(32)},
        "logs bloom": {"logs_bloom": b"\x01" * 256},
        "state root": {"state_root": bytes(32)},
        "state root ": {"withdrawals": (Withdrawal(0, 0, B.address, 4),)},
        "does not decode": {"transactions": (b"\x02\xc0",)},
        "is invalid": {"transactions": (transfer(C, 5),)},
    }
    for reason, changes in cases.items():
        bad = reseal(built, **changes)
        status = await other.new_payload(bad)
        assert status.status is PayloadStatusKind.INVALID, reason
        assert status.latest_valid_hash == genesis, reason
        assert reason.strip() in (status.validation_error or ""), status.validation_error
        assert (await other.new_payload(bad)).status is PayloadStatusKind.INVALID
        assert (await other.forkchoice_updated(ForkchoiceState(
            bad.block_hash, ZERO_HASH, ZERO_HASH))).payload_status.status is \
            PayloadStatusKind.INVALID
    orphan = reseal(built, parent_hash=b"\x09" * 32)
    assert (await other.new_payload(orphan)).status is PayloadStatusKind.SYNCING
    status = await other.new_payload(built)  # executed again from scratch: the same block
    assert (status.status, status.latest_valid_hash) == (PayloadStatusKind.VALID,
                                                         built.block_hash)
    assert other.head_number == 0  # newPayload does not move the head
    await other.forkchoice_updated(ForkchoiceState(built.block_hash, ZERO_HASH, ZERO_HASH))
    assert other.balance_of(DEST) == 1 and other.head == built


async def test_forkchoice_errors_and_reorgs_move_state_and_the_indexes() -> None:
    engine = EmbeddedEngine()
    one = await extend(engine)
    engine.add_transaction(transfer(A, 0, value=5))
    two_a = await extend(engine)
    tx_hash = engine.block(two_a.block_hash).transactions[0].hash  # type: ignore[union-attr]
    assert engine.transaction_location(tx_hash) == (two_a.block_hash, 0)
    two_b = await extend(engine, (Withdrawal(0, 0, C.address, 1),), commit=False, parent=one)
    assert (await engine.new_payload(two_b)).status is PayloadStatusKind.VALID
    with pytest.raises(EngineError) as info:
        await engine.forkchoice_updated(ForkchoiceState(two_a.block_hash, two_b.block_hash,
                                                        ZERO_HASH))
    assert info.value.code == INVALID_FORKCHOICE_STATE and "not an ancestor" in str(info.value)
    with pytest.raises(EngineError) as info:
        await engine.forkchoice_updated(ForkchoiceState(two_a.block_hash, b"\x05" * 32,
                                                        ZERO_HASH))
    assert info.value.code == INVALID_FORKCHOICE_STATE
    unknown = await engine.forkchoice_updated(ForkchoiceState(b"\x06" * 32, ZERO_HASH,
                                                              ZERO_HASH))
    assert unknown.payload_status.status is PayloadStatusKind.SYNCING
    late = PayloadAttributes(two_a.timestamp, ZERO_HASH, bytes(20), ())
    with pytest.raises(EngineError) as info:
        await engine.forkchoice_updated(ForkchoiceState(two_a.block_hash, ZERO_HASH,
                                                        ZERO_HASH), late)
    assert info.value.code == INVALID_PAYLOAD_ATTRIBUTES
    with pytest.raises(EngineError) as info:
        await engine.get_payload(b"\x00" * 8)
    assert info.value.code == UNKNOWN_PAYLOAD
    # The reorg: two_b becomes the head; two_a's transaction leaves the canonical index and
    # its state; new heads are announced in order.
    engine.drain_new_heads()
    await engine.forkchoice_updated(ForkchoiceState(two_b.block_hash, one.block_hash,
                                                    one.block_hash))
    assert engine.drain_new_heads() == [two_b.block_hash]
    assert engine.block_by_number(2) == two_b
    # The forkchoice in force, sent again (as commit_block does before each newPayload), is
    # valid and changes nothing; the same head with a finalized block off its branch is
    # still refused.
    again = await engine.forkchoice_updated(ForkchoiceState(two_b.block_hash, one.block_hash,
                                                            one.block_hash))
    assert again.payload_status.status is PayloadStatusKind.VALID
    assert engine.drain_new_heads() == [] and engine.forkchoice == ForkchoiceState(
        two_b.block_hash, one.block_hash, one.block_hash)
    with pytest.raises(EngineError) as info:
        await engine.forkchoice_updated(ForkchoiceState(two_b.block_hash, one.block_hash,
                                                        two_a.block_hash))
    assert info.value.code == INVALID_FORKCHOICE_STATE and "not an ancestor" in str(info.value)
    assert engine.forkchoice.finalized_block_hash == one.block_hash
    assert engine.transaction_location(tx_hash) is None
    assert engine.balance_of(DEST) == 0 and engine.balance_of(DEST, two_a.block_hash) == 5
    # And back: the transaction is canonical again.
    await engine.forkchoice_updated(ForkchoiceState(two_a.block_hash, ZERO_HASH, ZERO_HASH))
    assert engine.transaction_location(tx_hash) == (two_a.block_hash, 0)
    assert engine.balance_of(DEST) == 5
    # A head moved back to an ancestor: blocks above it leave the canonical index.
    await engine.forkchoice_updated(ForkchoiceState(one.block_hash, ZERO_HASH, ZERO_HASH))
    assert engine.block_by_number(2) is None and engine.head == one


async def test_the_database_reopens_with_its_state_and_refuses_another_genesis(
        tmp_path: Path) -> None:
    engine = EmbeddedEngine(path=tmp_path / "evm")
    engine.add_transaction(transfer(A, 0, value=77))
    one = await extend(engine)
    abandoned = await extend(engine, commit=False)  # a build that never became a block
    engine.close()
    again = EmbeddedEngine(path=tmp_path / "evm")
    assert again.head == one and again.balance_of(DEST) == 77
    assert again.block_by_hash(abandoned.block_hash) is None
    assert again.forkchoice == ForkchoiceState(one.block_hash, ZERO_HASH, ZERO_HASH)
    again.close()
    with pytest.raises(EngineStateError, match="made from another genesis"):
        EmbeddedEngine(attrs.evolve(dev_genesis(), extra_data=b"other"), path=tmp_path / "evm")


async def test_calls_and_gas_estimates() -> None:
    from node.execution.embedded import CallArgs

    engine = EmbeddedEngine()
    # A contract whose code returns 32 bytes of 0x2a (PUSH1 0x2a PUSH1 0 MSTORE PUSH1 32
    # PUSH1 0 RETURN), deployed from init code that copies it into place.
    runtime = bytes.fromhex("602a60005260206000f3")
    init = bytes.fromhex("69") + runtime + bytes.fromhex("600052600a6016f3")
    create = {"value": 0, "gas": 100_000, "chainId": 121212, "nonce": 0,
              "maxFeePerGas": 10**10, "maxPriorityFeePerGas": 10**9, "data": init}
    engine.add_transaction(bytes(Account.sign_transaction(create, A.private_key)
                                 .raw_transaction))
    await extend(engine)
    from node.execution.embedded import contract_address

    address = contract_address(A.address, 0)
    assert engine.state_at(engine.head_header).get_code(address) == runtime
    result = engine.call(CallArgs(sender=B.address, to=address))
    assert result.success and result.output == (42).to_bytes(32, "big")
    assert engine.estimate_gas(CallArgs(sender=B.address, to=DEST, value=1)) == 21000
    assert 21000 < engine.estimate_gas(CallArgs(sender=B.address, to=address)) < 22000
    with pytest.raises(TxRejected, match="insufficient funds"):
        engine.call(CallArgs(sender=b"\x77" * 20, to=DEST, value=1))
