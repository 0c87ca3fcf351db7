"""Peg-in rules (node.workflows.pegin) without I/O: deposits found in real transaction bytes,
refusals with reasons, hostile answers of a Bitcoin node, and the state machine — including a
stateful test in which no deposit is credited twice and none is lost across restarts (a
reload from the persisted CBOR form)."""

from __future__ import annotations

import hashlib
from typing import Any

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from node.types.bitcoin import (
    BlockHeader,
    OutPoint,
    Transaction,
    TxIn,
    TxOut,
    merkle_root,
    write_compact_size,
)
from node.types.pegin import Deposit, PegInState, PegInTransitionError, Refusal
from node.workflows import pegin as rules
from node.workflows.chain import BlockError, pegin_withdrawals
from node.workflows.federation import Federation
from otp import codec

FEDERATION = Federation(tuple(hashlib.sha256(b"member %d" % i).digest() for i in range(3)))
SCRIPT = FEDERATION.script_pubkey
BLOCK = bytes([7]) * 32
ADDRESS = bytes.fromhex("1111111111111111111111111111111111111111")


def op_return(data: bytes) -> bytes:
    if len(data) <= 75:
        return b"\x6a" + bytes([len(data)]) + data
    return b"\x6a\x4c" + bytes([len(data)]) + data


def tx(outputs: list[TxOut], seed: int = 0) -> Transaction:
    return Transaction(2, [TxIn(OutPoint(hashlib.sha256(b"%d" % seed).digest(), 0))],
                       outputs, 0)


def block_hex(transactions: list[Transaction], merkle: bytes | None = None) -> tuple[str, bytes]:
    header = BlockHeader(4, bytes(32), merkle or merkle_root([t.txid() for t in transactions]),
                         1_700_000_000, 0x207FFFFF, 0)
    raw = header.to_bytes() + write_compact_size(len(transactions)) + b"".join(
        t.to_bytes() for t in transactions)
    return raw.hex(), header.hash()


# -- OP_RETURN and addresses ----------------------------------------------------------------------


@pytest.mark.parametrize("payload", [
    ADDRESS, ADDRESS.hex().encode(), b"0x" + ADDRESS.hex().encode(),
    ADDRESS.hex().upper().encode(), b"0X" + ADDRESS.hex().encode()])
def test_an_address_is_20_raw_bytes_or_40_hex_digits_with_or_without_0x(payload: bytes) -> None:
    found = rules.extract_deposit(tx([TxOut(10_000, SCRIPT), TxOut(0, op_return(payload))]),
                                  BLOCK, 5, SCRIPT)
    assert isinstance(found, Deposit)
    assert found.evm_address == ADDRESS and found.amount_sats == 10_000 and found.vout == 0
    assert found.state is PegInState.DETECTED


@pytest.mark.parametrize(("outputs", "reason"), [
    ([TxOut(10_000, SCRIPT)], "no OP_RETURN"),
    ([TxOut(10_000, SCRIPT), TxOut(0, op_return(ADDRESS[:19]))], "19 bytes"),
    ([TxOut(10_000, SCRIPT), TxOut(0, op_return(b"zz" * 20))], "not hex"),
    ([TxOut(10_000, SCRIPT), TxOut(0, b"\x6a")], "no data"),
    ([TxOut(10_000, SCRIPT), TxOut(0, b"\x6a\x14" + ADDRESS[:5])], "push says 20"),
    ([TxOut(10_000, SCRIPT), TxOut(0, b"\x6a\x00\x14" + ADDRESS)], "opcode 0x00"),
    ([TxOut(10_000, SCRIPT), TxOut(0, b"\x6a\x51")], "does not start with a data push"),
    ([TxOut(10_000, SCRIPT), TxOut(0, op_return(bytes(20)))], "zero address"),
    ([TxOut(545, SCRIPT), TxOut(0, op_return(ADDRESS))], "dust: 545 sats"),
])
def test_bad_deposits_are_refused_with_a_reason(outputs: list[TxOut], reason: str) -> None:
    found = rules.extract_deposit(tx(outputs), BLOCK, 5, SCRIPT)
    assert isinstance(found, Refusal) and reason in found.reason, found
    assert found.amount_sats == outputs[0].value


def test_the_first_federation_output_is_the_amount_and_the_first_op_return_the_address() -> None:
    other = bytes.fromhex("22" * 20)
    found = rules.extract_deposit(tx([
        TxOut(1_000, b"\x51\x20" + bytes(32)), TxOut(7_000, SCRIPT), TxOut(0, op_return(ADDRESS)),
        TxOut(9_000, SCRIPT), TxOut(0, op_return(other))]), BLOCK, 5, SCRIPT)
    assert isinstance(found, Deposit) and found.amount_sats == 7_000 and found.vout == 1
    assert found.evm_address == ADDRESS


def test_transactions_not_paying_the_federation_and_coinbases_are_not_deposits() -> None:
    assert rules.extract_deposit(tx([TxOut(10_000, b"\x51\x20" + bytes(32)),
                                     TxOut(0, op_return(ADDRESS))]), BLOCK, 5, SCRIPT) is None
    coinbase = Transaction(2, [TxIn(OutPoint.null(), b"\x01\x05")],
                           [TxOut(10_000, SCRIPT), TxOut(0, op_return(ADDRESS))], 0)
    assert rules.extract_deposit(coinbase, BLOCK, 5, SCRIPT) is None


@given(st.binary(max_size=120))
def test_any_op_return_script_gives_an_address_or_a_reason_never_an_exception(
        data: bytes) -> None:
    found = rules.extract_deposit(tx([TxOut(10_000, SCRIPT), TxOut(0, b"\x6a" + data)]),
                                  BLOCK, 1, SCRIPT)
    assert isinstance(found, Deposit | Refusal)
    if isinstance(found, Deposit):
        assert len(found.evm_address) == 20 and found.evm_address != bytes(20)


@given(st.binary(min_size=20, max_size=20).filter(any), st.integers(546, 21 * 10**14),
       st.sampled_from(["raw", "hex", "0x"]))
def test_every_valid_deposit_is_found_with_its_address_and_amount(
        address: bytes, amount: int, form: str) -> None:
    payload = {"raw": address, "hex": address.hex().encode(),
               "0x": b"0x" + address.hex().encode()}[form]
    found = rules.extract_deposit(tx([TxOut(amount, SCRIPT), TxOut(0, op_return(payload))]),
                                  BLOCK, 9, SCRIPT)
    assert isinstance(found, Deposit)
    assert (found.evm_address, found.amount_sats) == (address, amount)
    # What a block credits for it: sats x 10 Gwei, to that address.
    (withdrawal,) = pegin_withdrawals([found.key], {found.key: rules.to_pegin(found)})
    assert withdrawal.address == address and withdrawal.amount == amount * 10


# -- hostile answers from a Bitcoin node ----------------------------------------------------------


def test_a_raw_block_gives_its_transactions() -> None:
    deposit = tx([TxOut(10_000, SCRIPT), TxOut(0, op_return(ADDRESS))], seed=1)
    coinbase = Transaction(2, [TxIn(OutPoint.null(), b"\x01\x05")], [TxOut(1, b"\x51")], 0)
    text, block_hash = block_hex([coinbase, deposit])
    transactions = rules.parse_raw_block(text, block_hash)
    deposits, refusals = rules.find_deposits(transactions, block_hash, 3, SCRIPT)
    assert [d.txid for d in deposits] == [deposit.txid()] and refusals == []


@given(st.one_of(st.none(), st.booleans(), st.integers(min_value=-(2**80), max_value=2**80),
                 st.floats(allow_nan=True), st.lists(st.integers(), max_size=3),
                 st.dictionaries(st.text(max_size=4), st.integers(), max_size=2),
                 st.recursive(st.just([]), lambda inner: st.lists(inner, max_size=1),
                              max_leaves=40)))
def test_an_answer_that_is_not_a_string_is_refused_with_its_type(value: Any) -> None:
    with pytest.raises(rules.PegInDataError, match="expected the block as a hex string"):
        rules.parse_raw_block(value, BLOCK)


@settings(max_examples=200)
@given(st.data())
def test_damaged_blocks_are_refused_saying_what_is_wrong(data: st.DataObject) -> None:
    deposit = tx([TxOut(10_000, SCRIPT), TxOut(0, op_return(ADDRESS))], seed=2)
    coinbase = Transaction(2, [TxIn(OutPoint.null(), b"\x01\x05")], [TxOut(1, b"\x51")], 0)
    text, block_hash = block_hex([coinbase, deposit])
    damage = data.draw(st.sampled_from(["truncate", "odd", "nonhex", "extra", "hash",
                                        "merkle", "huge"]))
    if damage == "truncate":
        cut = data.draw(st.integers(0, len(text) // 2 - 1)) * 2
        bad, expect = text[:cut], "getblock"
    elif damage == "odd":
        bad, expect = text[:-1], "odd number"
    elif damage == "nonhex":
        at = data.draw(st.integers(0, len(text) - 2)) & ~1
        bad, expect = text[:at] + "zz" + text[at + 2:], "not hex"
    elif damage == "extra":
        bad, expect = text + "00", "after the last transaction"
    elif damage == "hash":
        bad, expect = text, "hashes to"
        block_hash = bytes(32)
    elif damage == "merkle":
        bad, block_hash = block_hex([coinbase, deposit], merkle=bytes([1]) * 32)
        expect = "merkle root"
    else:
        bad, expect = "00" * (rules.MAX_BLOCK_HEX // 2 + 1), "more than a 4 MB block"
    with pytest.raises(rules.PegInDataError, match=expect):
        rules.parse_raw_block(bad, block_hash)


# -- the state machine ----------------------------------------------------------------------------


def make_deposit(i: int, height: int = 1, address: bytes = ADDRESS,
                 block: bytes = BLOCK) -> Deposit:
    return Deposit(hashlib.sha256(b"tx%d" % i).digest(), 0, block, height, 1_000 + i, address)


def test_transitions_go_one_way_only() -> None:
    d = make_deposit(1)
    with pytest.raises(PegInTransitionError):
        rules.credit(d, BLOCK, 3)  # detected: not yet
    c = rules.confirm(d)
    with pytest.raises(PegInTransitionError):
        rules.confirm(c)
    done = rules.credit(c, bytes([9]) * 32, 3)
    assert done.state is PegInState.CREDITED and done.credited_height == 3
    for move in (rules.confirm, lambda x: rules.credit(x, BLOCK, 4)):
        with pytest.raises(PegInTransitionError):
            move(done)
    with pytest.raises(ValueError, match="names the block that credited it"):
        attrs.evolve(d, state=PegInState.CREDITED)


@pytest.mark.parametrize("field", [
    {"txid": b"x" * 31}, {"amount_sats": 0}, {"amount_sats": 21 * 10**14 + 1},
    {"block_height": 2**64}, {"block_height": True}, {"evm_address": "0x" + "11" * 20},
    {"vout": -1}])
def test_a_deposit_checks_its_fields(field: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        attrs.evolve(make_deposit(1), **field)


def test_a_reorg_drops_uncredited_deposits_and_reports_credited_ones() -> None:
    other = bytes([8]) * 32
    a, b = make_deposit(1, height=5), rules.confirm(make_deposit(2, height=5))
    c = rules.credit(rules.confirm(make_deposit(3, height=5)), bytes(32), 9)
    keep = make_deposit(4, height=6)
    book = rules.PegInBook().with_deposits([a, b, c, keep])
    outcome = rules.reorg(book, {5: other, 6: BLOCK})
    assert {d.txid for d in outcome.dropped} == {a.txid, b.txid}
    assert outcome.reorged_credited == (c,)
    assert set(outcome.book.deposits) == {c.txid, keep.txid}


def test_a_block_takes_at_most_16_addresses_oldest_first() -> None:
    deposits = [rules.confirm(make_deposit(i, height=i, address=bytes([i % 20 + 1]) * 20))
                for i in range(40)]
    book = rules.PegInBook().with_deposits(deposits)
    chosen = rules.select_for_block(book)
    assert len({d.evm_address for d in chosen}) == 16
    assert len(chosen) == 32  # two deposits to each of the 16 oldest addresses
    assert [d.block_height for d in chosen] == sorted(d.block_height for d in chosen)
    assert rules.select_for_block(book, exclude=[deposits[0].txid])[0] == deposits[1]
    # more than 16 addresses in a block is a consensus error
    claims = {d.key: rules.to_pegin(d) for d in deposits[:17]}
    with pytest.raises(BlockError, match="17 peg-in addresses"):
        pegin_withdrawals(list(claims), claims)


class PegInMachine(RuleBasedStateMachine):
    """The bridge's book driven by scans, reorgs, credits and restarts; the model is the set
    of deposits ever credited and where. A restart reloads the book from its persisted CBOR
    records, as the StorageActor holds them."""

    def __init__(self) -> None:
        super().__init__()
        self.book = rules.PegInBook()
        self.tip = 0
        self.chain: dict[int, bytes] = {}  # height -> block hash on the "best chain"
        self.credits: dict[bytes, tuple[bytes, int]] = {}  # txid -> the block that credited
        self.sidechain = 0
        self.next_tx = 0

    def _block(self, height: int) -> bytes:
        return self.chain.setdefault(height, hashlib.sha256(b"b%d" % height).digest())

    @rule(count=st.integers(0, 3), address=st.integers(1, 20))
    def mine(self, count: int, address: int) -> None:
        self.tip += 1
        block = self._block(self.tip)
        found = []
        for _ in range(count):
            self.next_tx += 1
            found.append(make_deposit(self.next_tx, self.tip, bytes([address]) * 20, block))
        self.book, _ = self.book.observe(found, self.tip, 2)

    @rule(depth=st.integers(1, 4))
    def reorg(self, depth: int) -> None:
        for height in range(max(self.tip - depth + 1, 1), self.tip + 1):
            self.chain[height] = hashlib.sha256(self.chain[height]).digest()
        outcome = rules.reorg(self.book, self.chain)
        self.book = outcome.book
        for d in outcome.dropped:
            assert d.txid not in self.credits, "a credited deposit was dropped"
        for d in outcome.reorged_credited:
            assert d.txid in self.credits

    @rule()
    def produce(self) -> None:
        chosen = rules.select_for_block(self.book, exclude=self.credits)
        self.sidechain += 1
        ref = hashlib.sha256(b"s%d" % self.sidechain).digest()
        for d in chosen:
            assert d.txid not in self.credits, "credited twice"
            self.credits[d.txid] = (ref, self.sidechain)
        self.book, changed, problems = self.book.credit([d.key for d in chosen], ref,
                                                        self.sidechain)
        assert problems == [] and len(changed) == len(chosen)
        # The same notification again (a retried cast) changes nothing.
        again, changed, problems = self.book.credit([d.key for d in chosen], ref,
                                                    self.sidechain)
        assert changed == [] and problems == [] and again == self.book

    @rule()
    def restart(self) -> None:
        stored = [codec.encode(d) for d in self.book.deposits.values()]
        self.book = rules.PegInBook(scan_height=self.book.scan_height).with_deposits(
            codec.decode(raw, Deposit) for raw in stored)

    @invariant()
    def every_credit_is_kept(self) -> None:
        for txid, (ref, height) in self.credits.items():
            deposit = self.book.get(txid)
            assert deposit is not None, "a credited deposit was lost"
            assert deposit.state is PegInState.CREDITED
            assert (deposit.credited_block, deposit.credited_height) == (ref, height)

    @invariant()
    def deposits_on_the_best_chain_are_confirmed_when_deep_enough(self) -> None:
        for deposit in self.book.deposits.values():
            if deposit.state is PegInState.DETECTED:
                assert rules.confirmations(deposit.block_height, self.tip) < 2


TestPegInMachine = PegInMachine.TestCase
TestPegInMachine.settings = settings(max_examples=60, stateful_step_count=40, deadline=None)
