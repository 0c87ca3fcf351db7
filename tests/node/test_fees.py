"""Fees from a payload's transactions (EIP-1559's effective tip) and its receipts' gas used;
transactions signed by eth-account, a library nobody here wrote."""

from __future__ import annotations

import pytest
from eth_account import Account
from hypothesis import given, settings
from hypothesis import strategies as st

from node.types.execution import ExecutionPayload, Receipt
from node.workflows import fees

KEY = "0x" + "11" * 32
GWEI = 10**9
TO = "0x000000000000000000000000000000000000bEEF"


def signed(**fields: object) -> bytes:
    tx = {"to": TO, "value": 1, "gas": 21_000, "nonce": 0, "chainId": 121212, **fields}
    return bytes(Account.sign_transaction(tx, KEY).raw_transaction)


LEGACY = signed(gasPrice=7 * GWEI)
ACCESS_LIST = signed(gasPrice=9 * GWEI, accessList=[], type=1)
DYNAMIC = signed(maxFeePerGas=30 * GWEI, maxPriorityFeePerGas=2 * GWEI, type=2)


def payload(transactions: tuple[bytes, ...], base_fee: int) -> ExecutionPayload:
    return ExecutionPayload(
        parent_hash=bytes(32), fee_recipient=bytes(20), state_root=bytes(32),
        receipts_root=bytes(32), logs_bloom=bytes(256), prev_randao=bytes(32),
        block_number=1, gas_limit=30_000_000, gas_used=21_000 * len(transactions),
        timestamp=1, extra_data=b"", base_fee_per_gas=base_fee, block_hash=bytes(32),
        transactions=transactions, withdrawals=())


def test_fee_caps_of_each_transaction_type() -> None:
    assert fees.fee_caps(LEGACY) == (7 * GWEI, 7 * GWEI)
    assert fees.fee_caps(ACCESS_LIST) == (9 * GWEI, 9 * GWEI)
    assert fees.fee_caps(DYNAMIC) == (30 * GWEI, 2 * GWEI)


def test_the_effective_tip_is_eip_1559s() -> None:
    assert fees.effective_tip(LEGACY, 1 * GWEI) == 6 * GWEI
    assert fees.effective_tip(DYNAMIC, 1 * GWEI) == 2 * GWEI  # capped by the priority fee
    assert fees.effective_tip(DYNAMIC, 29 * GWEI) == 1 * GWEI  # capped by max fee - base
    with pytest.raises(fees.FeeError, match="below the base fee"):
        fees.effective_tip(DYNAMIC, 31 * GWEI)


def test_block_fees_are_tips_times_gas_used() -> None:
    block = payload((LEGACY, DYNAMIC, ACCESS_LIST), base_fee=GWEI)
    receipts = [Receipt(21_000, 7 * GWEI), Receipt(30_000, 3 * GWEI), Receipt(1, 9 * GWEI)]
    assert fees.block_fees(block, receipts) == 21_000 * 6 * GWEI + 30_000 * 2 * GWEI + 8 * GWEI
    assert fees.receipt_price_problems(block, receipts) == []
    # ethereumjs 0.10.5 reports the tip alone as effectiveGasPrice: noticed, not used.
    wrong = [Receipt(21_000, 6 * GWEI), *receipts[1:]]
    assert fees.block_fees(block, wrong) == fees.block_fees(block, receipts)
    assert fees.receipt_price_problems(block, wrong) == [
        f"transaction 0: effectiveGasPrice {6 * GWEI}, EIP-1559 gives {7 * GWEI}"]
    with pytest.raises(fees.FeeError, match="3 transactions but 2 receipts"):
        fees.block_fees(block, receipts[:2])
    assert fees.block_fees(payload((), GWEI), []) == 0


@pytest.mark.parametrize(("raw", "problem"), [
    (b"", "empty"),
    (b"\x03" + DYNAMIC[1:], r"type 0x3 is not one"),
    (b"\x02\xc0", "12 fields, this one 0"),
    (b"\xc1\x80", "9 fields, this one 1"),
    (DYNAMIC + b"\x00", "nothing after it"),
    (DYNAMIC[:-1], "runs past"),
    (b"\x02\xf8\x00", "leading zeros"),
    (b"\x02\xf8\x01\x00", "long form for a short length"),
    (b"\x02\xc2\x81\x05", "must encode itself"),
])
def test_unreadable_transactions_are_fee_errors(raw: bytes, problem: str) -> None:
    with pytest.raises(fees.FeeError, match=problem):
        fees.fee_caps(raw)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from([LEGACY, ACCESS_LIST, DYNAMIC]), st.data())
def test_any_mangled_transaction_gives_caps_or_a_fee_error(raw: bytes, data: st.DataObject
                                                            ) -> None:
    cut = data.draw(st.integers(0, len(raw)))
    junk = data.draw(st.binary(max_size=8))
    mangled = raw[:cut] + junk + raw[cut + data.draw(st.integers(0, 4)):]
    try:
        max_fee, priority = fees.fee_caps(mangled)
    except fees.FeeError:
        return
    assert 0 <= priority < 2**256 and 0 <= max_fee < 2**256
