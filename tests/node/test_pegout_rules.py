"""The peg-out rules (node.workflows.pegout) on their own: coin selection, the proposal, its
validation against hostile proposals, signing and finalization. btcd checks the transactions
themselves in tests/integration/test_pegout.py."""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Callable
from decimal import Decimal
from functools import cache
from typing import Any

import attrs
import pytest
from btclib.tx.tx import Tx
from coincurve import PrivateKey
from ecc.ecc import ssa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from node.types.bitcoin import OutPoint, TxIn, TxOut
from node.types.pegout import (
    MAX_MONEY,
    FederationUtxo,
    PegOutProposal,
    PegOutRequest,
    PegOutSignatures,
)
from node.workflows.federation import Federation
from node.workflows.pegout import (
    MAX_FEE_RATE,
    MIN_RELAY_FEE_RATE,
    SEQUENCE_RBF,
    InsufficientFunds,
    InvalidProposal,
    InvalidSignatures,
    NotEnoughSignatures,
    PegOutError,
    check_proposal,
    cost_of_change,
    dust_limit,
    fee_for,
    fee_rate_from_estimate,
    finalize,
    propose,
    select_coins,
    sign,
    signed_vsize,
    signing_hashes,
    split_fee,
    verify_signatures,
)

AUX = bytes(32)  # fixed BIP340 aux randomness: the tests' signatures are reproducible


@cache
def members(n: int) -> tuple[tuple[bytes, ...], Federation]:
    secrets = tuple(hashlib.sha256(b"pegout test member %d" % i).digest() for i in range(n))
    return secrets, Federation(tuple(PrivateKey(s).public_key_xonly.format() for s in secrets))


def outpoint(seed: int) -> OutPoint:
    return OutPoint(hashlib.sha256(b"utxo %d" % seed).digest(), seed % 7)


def utxos_of(federation: Federation, values: list[int]) -> list[FederationUtxo]:
    return [FederationUtxo(outpoint(i), v, federation.script_pubkey)
            for i, v in enumerate(values)]


def destination(kind: int, seed: int) -> bytes:
    payload = hashlib.sha256(b"destination %d" % seed).digest()
    return [b"\x00\x14" + payload[:20],                        # P2WPKH
            b"\x51\x20" + payload,                             # P2TR
            b"\x76\xa9\x14" + payload[:20] + b"\x88\xac",      # P2PKH
            b"\xa9\x14" + payload[:20] + b"\x87",              # P2SH
            b"\x00\x20" + payload][kind % 5]                   # P2WSH


def request(i: int, amount: int, kind: int = 0) -> PegOutRequest:
    return PegOutRequest(hashlib.sha256(b"burn %d" % i).digest(), i, destination(kind, i),
                         amount)


@attrs.frozen
class Scenario:
    secrets: tuple[bytes, ...]
    federation: Federation
    utxos: list[FederationUtxo]
    requests: list[PegOutRequest]
    fee_rate: int


@st.composite
def scenarios(draw: st.DrawFn, sizes: tuple[int, ...] = (1, 2, 3, 4, 5, 15)) -> Scenario:
    secrets, federation = members(draw(st.sampled_from(sizes)))
    amounts = draw(st.lists(st.integers(1_000_000, 10**9), min_size=1, max_size=6))
    kinds = draw(st.lists(st.integers(0, 4), min_size=len(amounts), max_size=len(amounts)))
    requests = [request(i, a, k) for i, (a, k) in enumerate(zip(amounts, kinds, strict=True))]
    values = draw(st.lists(st.integers(10_000, 3 * 10**9), min_size=1, max_size=10))
    if sum(values) < sum(amounts) + 10**6:
        values.append(sum(amounts) + draw(st.integers(10**6, 10**9)))
    fee_rate = draw(st.integers(MIN_RELAY_FEE_RATE, 50_000))
    return Scenario(secrets, federation, utxos_of(federation, values), requests, fee_rate)


def full_finalize(s: Scenario, proposal: PegOutProposal) -> Tx:
    k = s.federation.threshold
    sigs = {m: sign(proposal, s.federation, m, s.secrets[m], aux_rand=AUX) for m in range(k)}
    return Tx.parse(finalize(proposal, s.federation, sigs).transaction.to_bytes())


# --------------------------------------------------------------------------------- selection


@settings(max_examples=300, deadline=None)
@given(values=st.lists(st.integers(1, 2 * 10**8), min_size=1, max_size=25),
       target=st.integers(1, 10**9), fee_rate=st.integers(MIN_RELAY_FEE_RATE, 100_000),
       n=st.sampled_from([1, 3, 5, 15]), seed=st.integers(0, 2**32))
def test_selection_covers_the_target_without_waste_beyond_its_strategy(
        values: list[int], target: int, fee_rate: int, n: int, seed: int) -> None:
    _, federation = members(n)
    utxos = utxos_of(federation, values)
    input_fee = fee_for(fee_rate, math.ceil(federation.input_weight / 4))
    spendable = sum(v for v in values if v > input_fee)
    if spendable < target:
        with pytest.raises(InsufficientFunds, match="insufficient funds: the requests need"):
            select_coins(utxos, target, federation, fee_rate)
        return
    chosen = select_coins(utxos, target, federation, fee_rate)
    shuffled = list(utxos)
    random.Random(seed).shuffle(shuffled)
    assert select_coins(shuffled, target, federation, fee_rate) == chosen  # order-free
    outpoints = [u.outpoint for u in chosen.utxos]
    assert len(set(outpoints)) == len(outpoints)  # nothing spent twice
    assert set(chosen.utxos) <= set(utxos)
    assert outpoints == sorted(outpoints, key=lambda o: (o.txid, o.vout))
    assert all(u.value > input_fee for u in chosen.utxos)
    total = chosen.total
    assert total >= target
    if chosen.method == "bnb":
        assert chosen.change == 0
        assert total - target <= cost_of_change(federation, fee_rate)
    else:
        assert chosen.method == "largest-first"
        # Minimal: without its smallest input it would not reach the target.
        assert total - min(u.value for u in chosen.utxos) < target
        dust = dust_limit(federation.script_pubkey)
        assert chosen.change == (total - target if total - target >= dust else 0)


def test_branch_and_bound_finds_the_exact_set_and_prefers_fewer_inputs() -> None:
    _, federation = members(3)
    utxos = utxos_of(federation, [30_000_000, 70_000_000, 110_000_000, 250_000_000, 5_000_000,
                                  105_000_000])
    chosen = select_coins(utxos, 105_000_000, federation, 2_000)
    assert chosen.method == "bnb" and [u.value for u in chosen.utxos] == [105_000_000]
    chosen = select_coins(utxos[:5], 105_000_000, federation, 2_000)
    assert chosen.method == "bnb"
    assert sorted(u.value for u in chosen.utxos) == [5_000_000, 30_000_000, 70_000_000]
    fallback = select_coins(utxos[:5], 104_000_000, federation, 2_000)
    assert fallback.method == "largest-first" and fallback.change == 146_000_000


def test_uneconomic_foreign_and_repeated_utxos() -> None:
    _, federation = members(3)
    dust = utxos_of(federation, [100, 200])
    with pytest.raises(InsufficientFunds, match=r"need 50 sats.* 0 spendable UTXOs hold 0"):
        select_coins(dust, 50, federation, 10_000)
    foreign = FederationUtxo(outpoint(9), 10**8, b"\x51\x20" + bytes(32))
    with pytest.raises(PegOutError, match=r"utxos\[2\] \(\w{64}:2\) pays 5120.*not the federation"):
        select_coins([*dust, foreign], 50, federation, 1_000)
    with pytest.raises(PegOutError, match="listed twice"):
        select_coins([dust[0], dust[0]], 50, federation, 1_000)


# --------------------------------------------------------------------------------- proposal


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(s=scenarios(), seed=st.integers(0, 2**32))
def test_a_proposal_pays_each_request_less_an_equal_share_of_a_sufficient_fee(
        s: Scenario, seed: int) -> None:
    try:
        proposal = propose(s.requests, s.utxos, s.federation, s.fee_rate)
    except PegOutError as exc:  # only for want of money or of amounts that can pay a share
        assert isinstance(exc, InsufficientFunds) or "dust threshold" in str(exc)
        return
    tx = proposal.transaction
    assert tx.version == 2 and tx.lock_time == 0
    assert all(i.sequence == SEQUENCE_RBF and not i.script_sig for i in tx.inputs)
    shuffled = list(s.utxos)
    random.Random(seed).shuffle(shuffled)
    assert propose(s.requests, shuffled, s.federation, s.fee_rate).transaction.to_bytes() \
        == tx.to_bytes()

    signed = full_finalize(s, proposal)
    vsize = signed.vsize
    assert vsize == signed_vsize(s.federation, tx)  # the estimate is the real size
    fee = sum(u.value for u in proposal.spent) - sum(o.value for o in tx.outputs)
    assert fee >= fee_for(s.fee_rate, vsize)
    shares = [r.amount - o.value for r, o in zip(s.requests, tx.outputs, strict=False)]
    assert shares == list(split_fee(fee_for(s.fee_rate, vsize), len(s.requests)))
    assert [o.script_pubkey for o in tx.outputs[:len(s.requests)]] == \
        [r.script_pubkey for r in s.requests]
    if len(tx.outputs) > len(s.requests):
        assert tx.outputs[-1].script_pubkey == s.federation.script_pubkey
        assert tx.outputs[-1].value == sum(u.value for u in proposal.spent) - sum(
            r.amount for r in s.requests)
    check_proposal(proposal, s.requests, s.utxos, s.federation, max_fee_rate=s.fee_rate)


def test_the_fee_split_gives_the_remainder_to_the_first_outputs() -> None:
    assert split_fee(10, 3) == (4, 3, 3)
    assert split_fee(11, 3) == (4, 4, 3)
    assert split_fee(2, 5) == (1, 1, 0, 0, 0)
    _, federation = members(3)
    requests = [request(i, 2_000_000, i) for i in range(3)]
    proposal = propose(requests, utxos_of(federation, [6_000_000]), federation, 1_000)
    vsize = signed_vsize(federation, proposal.transaction)
    shares = [2_000_000 - o.value for o in proposal.transaction.outputs]
    assert shares == list(split_fee(vsize, 3)) and shares[0] >= shares[2]


def test_requests_that_cannot_pay_their_share_or_repeat_are_refused() -> None:
    _, federation = members(3)
    utxos = utxos_of(federation, [10**9])
    with pytest.raises(PegOutError, match=r"requests\[0\].*dust threshold"):
        propose([request(0, 400)], utxos, federation, 5_000)
    with pytest.raises(PegOutError, match="appears twice"):
        propose([request(0, 10**6), request(0, 10**6)], utxos, federation, 1_000)
    with pytest.raises(PegOutError, match=r"1\.\.1000 requests"):
        propose([], utxos, federation, 1_000)
    with pytest.raises(InsufficientFunds):
        propose([request(0, 2 * 10**9)], utxos, federation, 1_000)


@given(st.one_of(st.integers(), st.floats(allow_nan=True), st.text(), st.none(),
                 st.booleans(), st.decimals(allow_nan=True)))
def test_hostile_fee_rates_are_refused(rate: Any) -> None:
    _, federation = members(3)
    if type(rate) is int and MIN_RELAY_FEE_RATE <= rate <= MAX_FEE_RATE:
        propose([request(0, 10**7)], utxos_of(federation, [10**8]), federation, rate)
    else:
        with pytest.raises(PegOutError, match="fee_rate must be an integer of sat/kvB"):
            propose([request(0, 10**7)], utxos_of(federation, [10**8]), federation, rate)


def test_fee_rates_from_the_clients_estimate() -> None:
    assert fee_rate_from_estimate(Decimal("2")) == 2_000
    assert fee_rate_from_estimate(Decimal("1.2341")) == 1_235
    assert fee_rate_from_estimate(Decimal("0.1")) == MIN_RELAY_FEE_RATE
    assert fee_rate_from_estimate(Decimal("1e30")) == MAX_FEE_RATE
    for bad in (Decimal("NaN"), Decimal("Infinity"), 2.0, "2"):
        with pytest.raises(PegOutError, match="finite Decimal"):
            fee_rate_from_estimate(bad)  # type: ignore[arg-type]


@given(st.fixed_dictionaries({
    "evm_tx_hash": st.one_of(st.binary(max_size=40), st.integers(), st.none()),
    "log_index": st.one_of(st.integers(min_value=-2, max_value=2**70), st.floats(), st.text()),
    "script_pubkey": st.one_of(st.binary(max_size=40), st.text(max_size=3), st.none()),
    "amount": st.one_of(st.integers(min_value=-2, max_value=2**80),
                        st.floats(allow_nan=True), st.booleans()),
}))
def test_hostile_requests_are_refused_naming_the_field(fields: dict[str, Any]) -> None:
    good = {
        "evm_tx_hash": type(fields["evm_tx_hash"]) is bytes and len(fields["evm_tx_hash"]) == 32,
        "log_index": type(fields["log_index"]) is int and 0 <= fields["log_index"] < 2**64,
        "script_pubkey": type(fields["script_pubkey"]) is bytes and fields["script_pubkey"] != b"",
        "amount": type(fields["amount"]) is int and 0 < fields["amount"] <= MAX_MONEY,
    }
    if all(good.values()):
        assert PegOutRequest(**fields).id == (fields["evm_tx_hash"], fields["log_index"])
    else:
        first_bad = next(name for name, ok in good.items() if not ok)
        with pytest.raises(ValueError, match=first_bad):
            PegOutRequest(**fields)


# --------------------------------------------------------------------------------- validation


def _replace_output(p: PegOutProposal, i: int, out: TxOut) -> PegOutProposal:
    outputs = list(p.transaction.outputs)
    outputs[i] = out
    return attrs.evolve(p, transaction=attrs.evolve(p.transaction, outputs=outputs))


def _with_inputs(p: PegOutProposal, inputs: list[TxIn],
                 spent: list[FederationUtxo]) -> PegOutProposal:
    return PegOutProposal(attrs.evolve(p.transaction, inputs=inputs), spent)


Mutation = Callable[[PegOutProposal, Scenario, st.DataObject], PegOutProposal]
FOREIGN = FederationUtxo(outpoint(1000), 10**9, b"\x51\x20" + bytes(range(32)))
UNKNOWN = outpoint(1001)


def swap_outputs(p: PegOutProposal, s: Scenario, data: st.DataObject) -> PegOutProposal:
    outs = list(p.transaction.outputs)
    outs[0], outs[1] = outs[1], outs[0]
    return attrs.evolve(p, transaction=attrs.evolve(p.transaction, outputs=outs))


def inflate(p: PegOutProposal, s: Scenario, data: st.DataObject) -> PegOutProposal:
    i = data.draw(st.integers(0, len(s.requests) - 1))
    out = p.transaction.outputs[i]
    value = data.draw(st.integers(s.requests[i].amount + 1, 2**64 - 1))
    return _replace_output(p, i, TxOut(value, out.script_pubkey))


def deflate(p: PegOutProposal, s: Scenario, data: st.DataObject) -> PegOutProposal:
    """One output cut by more than any fee share the checker allows (a smaller cut is a
    fee the checker cannot tell from a higher rate: it accepts any fee up to max_fee_rate)."""
    i = data.draw(st.integers(0, len(s.requests) - 1))
    out = p.transaction.outputs[i]
    most = fee_for(2 * s.fee_rate, signed_vsize(s.federation, p.transaction))
    cut = data.draw(st.integers(most + 1, max(out.value, most + 1)))
    return _replace_output(p, i, TxOut(max(out.value - cut, 0), out.script_pubkey))


def foreign_input(p: PegOutProposal, s: Scenario, data: st.DataObject) -> PegOutProposal:
    inputs = [TxIn(FOREIGN.outpoint, b"", SEQUENCE_RBF), *p.transaction.inputs]
    return _with_inputs(p, inputs, [FOREIGN, *p.spent])


def unknown_input(p: PegOutProposal, s: Scenario, data: st.DataObject) -> PegOutProposal:
    ghost = FederationUtxo(UNKNOWN, 10**9, s.federation.script_pubkey)
    return _with_inputs(p, [*p.transaction.inputs, TxIn(ghost.outpoint, b"", SEQUENCE_RBF)],
                        [*p.spent, ghost])


def duplicate_input(p: PegOutProposal, s: Scenario, data: st.DataObject) -> PegOutProposal:
    return _with_inputs(p, [*p.transaction.inputs, p.transaction.inputs[0]],
                        [*p.spent, p.spent[0]])


def lie_about_spent(p: PegOutProposal, s: Scenario, data: st.DataObject) -> PegOutProposal:
    first = p.spent[0]
    value = data.draw(st.integers(1, MAX_MONEY).filter(lambda v: v != first.value))
    return attrs.evolve(p, spent=(attrs.evolve(first, value=value), *p.spent[1:]))


def absurd_fee(p: PegOutProposal, s: Scenario, data: st.DataObject) -> PegOutProposal:
    """Change cut or dropped (the federation pays the miners), or every output cut alike."""
    n = len(s.requests)
    if len(p.transaction.outputs) > n and data.draw(st.booleans()):
        outs = list(p.transaction.outputs)
        change = outs.pop()
        if data.draw(st.booleans()) and change.value > 10**6:
            outs.append(TxOut(change.value // 2, change.script_pubkey))
        return attrs.evolve(p, transaction=attrs.evolve(p.transaction, outputs=outs))
    cut = data.draw(st.integers(10**5, 10**6))
    outs = [TxOut(max(o.value - cut, 0), o.script_pubkey) if i < n else o
            for i, o in enumerate(p.transaction.outputs)]
    return attrs.evolve(p, transaction=attrs.evolve(p.transaction, outputs=outs))


def change_elsewhere(p: PegOutProposal, s: Scenario, data: st.DataObject) -> PegOutProposal:
    outs = [*p.transaction.outputs, TxOut(10**5, b"\x51\x20" + bytes(32))]
    return attrs.evolve(p, transaction=attrs.evolve(p.transaction, outputs=outs))


def change_takes_shares(p: PegOutProposal, s: Scenario, data: st.DataObject) -> PegOutProposal:
    change = p.transaction.outputs[-1]
    extra = data.draw(st.integers(1, 10**5))
    return _replace_output(p, len(p.transaction.outputs) - 1,
                           TxOut(change.value + extra, change.script_pubkey))


def drop_output(p: PegOutProposal, s: Scenario, data: st.DataObject) -> PegOutProposal:
    outs = list(p.transaction.outputs[: len(s.requests) - 1])
    return attrs.evolve(p, transaction=attrs.evolve(p.transaction, outputs=outs))


def bad_header(p: PegOutProposal, s: Scenario, data: st.DataObject) -> PegOutProposal:
    field = data.draw(st.sampled_from(["version", "lock_time", "sequence", "witness"]))
    tx = p.transaction
    if field == "version":
        return attrs.evolve(p, transaction=attrs.evolve(tx, version=data.draw(
            st.integers(-(2**31), 2**31 - 1).filter(lambda v: v != 2))))
    if field == "lock_time":
        return attrs.evolve(p, transaction=attrs.evolve(tx, lock_time=data.draw(
            st.integers(1, 2**32 - 1))))
    first = tx.inputs[0]
    if field == "sequence":
        first = attrs.evolve(first, sequence=data.draw(
            st.integers(0, 2**32 - 1).filter(lambda v: v != SEQUENCE_RBF)))
    else:
        first = attrs.evolve(first, witness=(bytes(64),))
    return attrs.evolve(p, transaction=attrs.evolve(tx, inputs=(first, *tx.inputs[1:])))


MUTATIONS: dict[str, tuple[Mutation, str]] = {
    "swap_outputs": (swap_outputs, r"output 0 pays .*, but request 0 asks"),
    "inflate": (inflate, r"more than the \d+ requested"),
    "deflate": (deflate, r"fees, more than \d+ \(|dust"),
    "foreign_input": (foreign_input, r"input 0 spends .* not the federation"),
    "unknown_input": (unknown_input, r"not a known unspent output"),
    "duplicate_input": (duplicate_input, r"a second time"),
    "lie_about_spent": (lie_about_spent, r"the proposal says"),
    "absurd_fee": (absurd_fee, r"overpays|more than \d+ \(|split equally|dust"),
    "change_elsewhere": (change_elsewhere, r"outputs for|not the federation"),
    "change_takes_shares": (change_takes_shares, r"keeps \d+ sats of the recipients"),
    "drop_output": (drop_output, r"outputs for \d+ requests"),
    "bad_header": (bad_header, r"version|lock time|sequence|not unsigned"),
}


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(s=scenarios(sizes=(1, 3, 5)), name=st.sampled_from(sorted(MUTATIONS)),
       data=st.data())
def test_hostile_proposals_are_refused_with_a_reason(s: Scenario, name: str,
                                                     data: st.DataObject) -> None:
    utxos = [*s.utxos, FOREIGN]
    try:
        honest = propose(s.requests, s.utxos, s.federation, s.fee_rate)
    except PegOutError:
        return
    mutate, reason = MUTATIONS[name]
    n = len(s.requests)
    if name == "swap_outputs" and (n < 2 or s.requests[0].script_pubkey
                                   == s.requests[1].script_pubkey):
        return
    if name == "change_takes_shares" and len(honest.transaction.outputs) == n:
        return
    hostile = mutate(honest, s, data)
    with pytest.raises(InvalidProposal, match=reason):
        check_proposal(hostile, s.requests, utxos, s.federation, max_fee_rate=s.fee_rate * 2)


def test_a_proposal_for_other_requests_or_at_a_higher_rate_is_refused() -> None:
    _, federation = members(3)
    utxos = utxos_of(federation, [10**8, 3 * 10**8])
    requests = [request(0, 5 * 10**7, 0), request(1, 6 * 10**7, 1)]
    proposal = propose(requests, utxos, federation, 20_000)
    check_proposal(proposal, requests, utxos, federation, max_fee_rate=20_000)
    with pytest.raises(InvalidProposal, match="more than"):
        check_proposal(proposal, requests, utxos, federation, max_fee_rate=10_000)
    with pytest.raises(InvalidProposal, match="output 0 pays"):
        check_proposal(proposal, requests[::-1], utxos, federation, max_fee_rate=20_000)
    with pytest.raises(InvalidProposal, match="below"):
        check_proposal(proposal, requests, utxos, federation, max_fee_rate=50_000,
                       min_fee_rate=30_000)


# --------------------------------------------------------------------------------- signatures


def signed_scenario(n: int = 3) -> tuple[Scenario, PegOutProposal]:
    secrets, federation = members(n)
    s = Scenario(secrets, federation, utxos_of(federation, [4 * 10**7, 3 * 10**7, 10**7]),
                 [request(0, 5 * 10**7, 1), request(1, 2 * 10**7, 2)], 2_000)
    return s, propose(s.requests, s.utxos, federation, s.fee_rate)


def test_signatures_are_bip340_over_each_inputs_script_path_sighash() -> None:
    s, proposal = signed_scenario()
    assert len(proposal.transaction.inputs) >= 2
    digests = signing_hashes(proposal, s.federation)
    assert digests == tuple(s.federation.sighash(proposal.transaction, i,
                                                 [u.txout for u in proposal.spent])
                            for i in range(len(digests)))
    sigs = sign(proposal, s.federation, 1, s.secrets[1], aux_rand=AUX)
    assert sigs.txid == proposal.txid and sigs.key == s.federation.keys[1]
    for digest, signature in zip(digests, sigs.signatures, strict=True):
        assert ssa.verify_(digest, s.federation.keys[1], signature)  # btclib agrees
    verify_signatures(proposal, s.federation, sigs)
    with pytest.raises(PegOutError, match="not member 0's key"):
        sign(proposal, s.federation, 0, s.secrets[1])
    with pytest.raises(PegOutError, match="no member 3"):
        sign(proposal, s.federation, 3, s.secrets[1])


def test_bad_signature_sets_are_refused_with_a_reason() -> None:
    s, proposal = signed_scenario()
    good = sign(proposal, s.federation, 1, s.secrets[1], aux_rand=AUX)
    other, _ = signed_scenario()
    other_proposal = propose(other.requests[:1], other.utxos, other.federation, 3_000)
    cases = {
        "is not the member's": attrs.evolve(good, key=s.federation.keys[0]),
        "no such member": attrs.evolve(good, member=7),
        "they sign": sign(other_proposal, s.federation, 1, s.secrets[1]),
        "signatures for": attrs.evolve(good, signatures=good.signatures[:1]),
        "input 1 does not verify": attrs.evolve(
            good, signatures=(good.signatures[0], good.signatures[0], *good.signatures[2:])),
    }
    for reason, bad in cases.items():
        with pytest.raises(InvalidSignatures, match=reason):
            verify_signatures(proposal, s.federation, bad)


@settings(max_examples=40, deadline=None)
@given(n=st.sampled_from([1, 3, 4, 5, 7]), data=st.data())
def test_finalize_uses_the_k_lowest_valid_sets_and_ignores_bad_ones(
        n: int, data: st.DataObject) -> None:
    secrets, federation = members(n)
    s = Scenario(secrets, federation, utxos_of(federation, [3 * 10**7, 2 * 10**7]),
                 [request(0, 4 * 10**7, 0)], 1_000)
    proposal = propose(s.requests, s.utxos, federation, s.fee_rate)
    honest = data.draw(st.sets(st.integers(0, n - 1)))
    forged = data.draw(st.sets(st.integers(0, n - 1)).map(lambda f: f - honest))
    given_sets: dict[int, PegOutSignatures] = {
        m: sign(proposal, federation, m, secrets[m], aux_rand=AUX) for m in honest}
    for m in forged:
        real = sign(proposal, federation, m, secrets[m], aux_rand=AUX)
        given_sets[m] = attrs.evolve(real, signatures=tuple(
            bytes([sig[0] ^ 1]) + sig[1:] for sig in real.signatures))
    k = federation.threshold
    if len(honest) < k:
        with pytest.raises(NotEnoughSignatures, match=f"{len(honest)} valid signature sets"):
            finalize(proposal, federation, given_sets)
        return
    done = finalize(proposal, federation, given_sets)
    assert done.signers == tuple(sorted(honest)[:k])
    assert sorted(m for m, _ in done.refused) == sorted(forged)
    assert done.transaction.txid() == proposal.txid
    for i, txin in enumerate(done.transaction.inputs):
        elements = txin.witness[:n]
        assert txin.witness[n:] == (federation.script, federation.control_block)
        for position, element in enumerate(elements):
            member = n - 1 - position  # reverse key order
            assert element == (given_sets[member].signatures[i]
                               if member in done.signers else b"")


def test_signatures_filed_under_another_member_are_refused() -> None:
    s, proposal = signed_scenario()
    sets = {m: sign(proposal, s.federation, m, s.secrets[m]) for m in range(3)}
    done = finalize(proposal, s.federation, {0: sets[0], 1: sets[2], 2: sets[2]})
    assert done.signers == (0, 2) and done.refused[0][0] == 1
    with pytest.raises(NotEnoughSignatures, match="filed under member 1"):
        finalize(proposal, s.federation, {0: sets[0], 1: sets[2]})
