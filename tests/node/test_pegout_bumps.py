"""Fee bumps of peg-outs that do not confirm (node.workflows.pegout_book and
node.workflows.pegout): after ``bump_after`` blocks a block may carry a BIP125 replacement of
a carried peg-out — the same inputs, requests and change, a higher fee — which validators
check from the chain alone; the requests follow the newest; whichever of the two Bitcoin
confirms settles them; the unsettled change is spendable only once Bitcoin shows it; hostile
bumps are refused with a reason; and no sequence of bumps pays a request twice."""

from __future__ import annotations

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from node.types.bitcoin import OutPoint, Transaction
from node.types.pegout import PegOutProposal
from node.types.pegout_book import PegOutState
from node.workflows import pegout as rules
from node.workflows.federation import Federation
from node.workflows.pegout_book import (
    PegOutBlockError,
    PegOutBook,
    apply_block,
    bump_candidates,
    check_block,
    collect,
    make_bump,
    make_proposal,
    mark_broadcast,
    mark_signed,
    observe_confirmations,
    open_requests,
    settle,
    settle_group,
    superseded,
    to_sign,
    unsettled_coins,
)

from .test_pegout_book import MAX_RATE, RATE, block, funded, members, payment, signed_form

AFTER = 5  # blocks after a peg-out's signed form was carried before a bump


def carried(n: int = 3) -> tuple[PegOutBook, Federation, bytes]:
    """A book where block 3 proposed a peg-out of the two requests and block 4 (AuxPoW)
    carried its signed form, then the chain went on to ``4 + AFTER - 1``: the next block may
    bump it."""
    book, federation = funded(n)
    made = make_proposal(book, federation, RATE)
    assert not isinstance(made, str)
    book, _ = apply_block(book, block(3, proposal=made.transaction.to_bytes()), federation)
    signed = signed_form(book, federation, n, (0, 1)).to_bytes()
    book, _ = apply_block(book, block(4, finalized=(signed,)), federation)
    book, _ = apply_block(book, block(3 + AFTER), federation)
    return book, federation, made.txid


def check(book: PegOutBook, federation: Federation, raw: bytes, **extra: object) -> None:
    check_block(book, federation, proposal=raw, finalized=(), auxpow=False,
                max_fee_rate=MAX_RATE, bump_after=AFTER, **extra)  # type: ignore[arg-type]


def bumped(book: PegOutBook, federation: Federation, txid: bytes,
           rate: int = RATE) -> PegOutProposal:
    made = make_bump(book, book.proposals[txid], federation, rate)
    assert not isinstance(made, str), made
    return made


def fee(proposal: PegOutProposal) -> int:
    return sum(u.value for u in proposal.spent) - sum(
        o.value for o in proposal.transaction.outputs)


def test_a_bump_is_allowed_after_bump_after_blocks_and_takes_over_the_requests() -> None:
    book, federation, old = carried()
    assert bump_candidates(book, book.height, AFTER) == ()  # one block too early
    (candidate,) = bump_candidates(book, book.height + 1, AFTER)
    assert candidate.txid == old
    original = book.proposals[old]
    replacement = bumped(book, federation, old)
    before = PegOutProposal(Transaction.from_bytes(original.transaction), original.spent)
    after = replacement.transaction

    # Same inputs, same change, the requests' outputs lower by the higher fee.
    assert [i.prevout for i in after.inputs] == [u.outpoint for u in original.spent]
    assert after.outputs[-1] == before.transaction.outputs[-1]
    vsize = rules.signed_vsize(federation, after)
    assert fee(replacement) >= fee(before) + rules.fee_for(rules.MIN_RELAY_FEE_RATE, vsize)
    check(book, federation, after.to_bytes())
    with pytest.raises(PegOutBlockError, match="may replace it from block"):
        check_block(book, federation, proposal=after.to_bytes(), finalized=(), auxpow=False,
                    max_fee_rate=MAX_RATE, bump_after=AFTER + 1)

    height = book.height + 1
    book, change = apply_block(book, block(height, proposal=after.to_bytes()), federation)
    assert {r.proposal for r in book.requests.values()} == {replacement.txid}
    assert open_requests(book) == ()
    old_change = OutPoint(old, len(before.transaction.outputs) - 1)
    assert change.dropped == (old_change,) and old_change not in book.utxos
    assert old_change not in book.spent  # it may still exist: not spent, only unsettled
    assert superseded(book, old) and not superseded(book, replacement.txid)
    assert [u.outpoint for u in unsettled_coins(book)] == sorted(
        [old_change, OutPoint(replacement.txid, old_change.vout)],
        key=lambda o: (o.txid, o.vout))
    # Only the bump waits for signatures; a replay of its block changes nothing.
    assert [p.txid for p in to_sign(book)] == [replacement.txid]
    assert apply_block(book, block(height, proposal=after.to_bytes()), federation)[0] is book
    # The same bump again, or any other bump before the new one is carried, is refused.
    with pytest.raises(PegOutBlockError, match="proposed already"):
        check(book, federation, after.to_bytes())
    higher = rules.bump(before, [book.requests[r].request for r in original.requests],
                        federation, 50_000).transaction.to_bytes()
    with pytest.raises(PegOutBlockError, match="no signed form in a block yet"):
        check(book, federation, higher)


def _carry_bump(book: PegOutBook, federation: Federation, old: bytes
                ) -> tuple[PegOutBook, bytes]:
    replacement = bumped(book, federation, old)
    book, _ = apply_block(book, block(book.height + 1,
                                      proposal=replacement.transaction.to_bytes()), federation)
    signed = signed_form(book, federation, 3, (1, 2)).to_bytes()
    check_block(book, federation, proposal=None, finalized=(signed,), auxpow=True,
                max_fee_rate=MAX_RATE)
    book, _ = apply_block(book, block(book.height + 1, finalized=(signed,)), federation)
    return book, replacement.txid


def _confirm(book: PegOutBook, txid: bytes) -> PegOutBook:
    book, _ = mark_broadcast(book, txid)
    book, record = observe_confirmations(book, txid, 2, 2)
    assert record is not None and record.state is PegOutState.CONFIRMED
    return book


@pytest.mark.parametrize("winner", ["bump", "original"])
def test_whichever_bitcoin_confirms_settles_the_requests_and_its_change(winner: str) -> None:
    book, federation, old = carried()
    book, new = _carry_bump(book, federation, old)
    for txid in (old, new):
        book, _ = mark_broadcast(book, txid)
    mined, lost = (new, old) if winner == "bump" else (old, new)
    book = _confirm(book, mined)
    book, change = settle(book, mined)
    assert [p.txid for p in change.proposals] == [lost]
    assert book.proposals[lost].state is PegOutState.REPLACED
    assert {r.proposal for r in book.requests.values()} == {mined}
    assert settle(book, mined) == (book, type(change)())  # settled once
    # The mined one's change is the only unsettled coin left; a proposal may spend it once
    # Bitcoin shows it (the actor passes it as extra, validators fetch it).
    (left,) = unsettled_coins(book)
    assert left.outpoint.txid == mined
    book, _ = apply_block(book, block(book.height + 1, (payment(40, 45_000_000,
                                                                 book.height + 1),)),
                          federation)
    assert isinstance(make_proposal(book, federation, RATE), str)  # 45M > the other coin
    made = make_proposal(book, federation, RATE, extra=(left,))
    assert not isinstance(made, str)
    assert left.outpoint in [u.outpoint for u in made.spent]
    raw = made.transaction.to_bytes()
    with pytest.raises(PegOutBlockError, match="not a coin of the federation"):
        check(book, federation, raw)
    check(book, federation, raw, fetched=(left,))
    book, _ = apply_block(attrs.evolve(book), attrs.evolve(
        block(book.height + 1, proposal=raw), fetched=(left,)), federation)
    assert left.outpoint in book.spent and unsettled_coins(book) == ()


def test_hostile_bumps_are_refused_with_a_reason() -> None:
    book, federation, old = carried()
    good = bumped(book, federation, old).transaction
    original = book.proposals[old]
    before = Transaction.from_bytes(original.transaction)

    def refused(tx: Transaction, reason: str) -> None:
        with pytest.raises(PegOutBlockError, match=reason):
            check(book, federation, tx.to_bytes())

    # The original fee again (no bump) or a fee raised by less than the relay rate.
    refused(attrs.evolve(before, outputs=before.outputs), "proposed already")
    cheap = attrs.evolve(good, outputs=(attrs.evolve(good.outputs[0],
                                                     value=before.outputs[0].value),
                                        attrs.evolve(good.outputs[1],
                                                     value=before.outputs[1].value + 1),
                                        *good.outputs[2:]))
    refused(cheap, "fee")
    # The change taken for fees, or moved.
    smaller = attrs.evolve(good, outputs=(*good.outputs[:-1], attrs.evolve(
        good.outputs[-1], value=good.outputs[-1].value - 1_000)))
    refused(smaller, "change")
    # A recipient swapped for another address.
    other = attrs.evolve(good, outputs=(attrs.evolve(good.outputs[0],
                                                     script_pubkey=b"\x00\x14" + bytes(20)),
                                        *good.outputs[1:]))
    refused(other, "asks for")
    # Overpaying fees past the cap.
    greedy = bumped(book, federation, old, rate=MAX_RATE * 4).transaction
    refused(greedy, "more than")
    # A change output that a later proposal spent: the peg-out can no longer be replaced.
    book2, _ = apply_block(book, block(book.height + 1, (payment(50, 55_000_000,
                                                                  book.height + 1),)),
                           federation)
    made = make_proposal(book2, federation, RATE)
    assert not isinstance(made, str)
    change = OutPoint(old, len(before.outputs) - 1)
    assert change in [u.outpoint for u in made.spent]
    book2, _ = apply_block(book2, block(book2.height + 1,
                                        proposal=made.transaction.to_bytes()), federation)
    assert bump_candidates(book2, book2.height + 1 + AFTER, AFTER) == ()
    with pytest.raises(PegOutBlockError, match="change is spent by a later proposal"):
        check(book2, federation, good.to_bytes())


@settings(max_examples=60, deadline=None)
@given(rates=st.lists(st.integers(rules.MIN_RELAY_FEE_RATE, 60_000), min_size=1,
                      max_size=4))
def test_bumps_always_pay_more_and_never_pay_a_request_twice(rates: list[int]) -> None:
    book, federation, old = carried()
    requested = {rid: r.request.amount for rid, r in book.requests.items()}
    chain = [old]
    for rate in rates:
        newest = book.proposals[chain[-1]]
        if newest.included_height is None:
            break
        made = make_bump(book, newest, federation, rate)
        if isinstance(made, str):  # past the dust or rate limits
            assert "cannot be bumped" in made
            break
        before = PegOutProposal(Transaction.from_bytes(newest.transaction), newest.spent)
        vsize = rules.signed_vsize(federation, made.transaction)
        assert fee(made) >= fee(before) + rules.fee_for(rules.MIN_RELAY_FEE_RATE, vsize)
        try:
            check(book, federation, made.transaction.to_bytes())
        except PegOutBlockError as exc:
            assert "more than" in exc.reason  # over the cap: refused, never applied
            break
        book, _ = apply_block(book, block(book.height + 1,
                                          proposal=made.transaction.to_bytes()), federation)
        signed = signed_form(book, federation, 3, (0, 2)).to_bytes()
        book, _ = apply_block(book, block(book.height + 1, finalized=(signed,)), federation)
        book, _ = apply_block(book, block(book.height + AFTER - 1), federation)
        chain.append(made.txid)
    # Every proposal of the chain spends the same coins: at most one can be mined; each
    # pays every request once, no more than requested.
    spends = {tuple(u.outpoint for u in book.proposals[t].spent) for t in chain}
    assert len(spends) == 1
    for txid in chain:
        record = book.proposals[txid]
        tx = Transaction.from_bytes(record.transaction)
        for rid, output in zip(record.requests, tx.outputs, strict=False):
            assert output.value <= requested[rid]
    assert {r.proposal for r in book.requests.values()} == {chain[-1]}
    assert all(superseded(book, t) for t in chain[:-1])
    # While unsettled, no change of the chain is among the coins.
    assert not {o.txid for o in book.utxos} & set(chain[1:] if len(chain) > 1 else ())


def test_a_peg_out_this_node_saw_mined_is_not_bumped() -> None:
    book, _, old = carried()
    book, _ = mark_broadcast(book, old)
    assert [r.txid for r in bump_candidates(book, book.height + 1, AFTER)] == [old]
    book, record = observe_confirmations(book, old, 1, 2)  # mined, not yet confirmed
    assert record is not None and record.state is PegOutState.BROADCAST
    assert bump_candidates(book, book.height + 1, AFTER) == ()


def _settled(book: PegOutBook, winner: bytes) -> PegOutBook:
    book = _confirm(book, winner)
    book, _ = settle(book, winner)
    return book


def test_a_bump_landing_after_its_group_settled_is_replaced_at_once() -> None:
    # (A) X bumped by B1, X mined and settled; a producer that had not seen it bumps B1.
    book, federation, old = carried()
    book, b1 = _carry_bump(book, federation, old)
    book = _settled(book, old)
    book, _ = apply_block(book, block(book.height + AFTER), federation)
    assert bump_candidates(book, book.height + 1, AFTER) == ()  # an honest node does not
    late = make_bump(book, book.proposals[b1], federation, RATE)
    assert not isinstance(late, str)
    check(book, federation, late.transaction.to_bytes())  # the chain alone cannot tell
    book, _ = apply_block(book, block(book.height + 1, proposal=late.transaction.to_bytes()),
                          federation)
    book, change = settle_group(book, late.txid)
    assert [p.txid for p in change.proposals] == [late.txid]
    assert book.proposals[late.txid].state is PegOutState.REPLACED
    assert {r.proposal for r in book.requests.values()} == {old}
    assert to_sign(book) == () and bump_candidates(book, book.height + AFTER + 5, AFTER) == ()
    # (E) Even a bump of a long-confirmed peg-out with no bump before.
    book, federation, old = carried()
    book = _settled(book, old)
    coins = dict(book.utxos)
    book, _ = apply_block(book, block(book.height + 500), federation)
    hostile = make_bump(book, book.proposals[old], federation, RATE)
    assert not isinstance(hostile, str)
    book, _ = apply_block(book, block(book.height + 1,
                                      proposal=hostile.transaction.to_bytes()), federation)
    book, _ = settle_group(book, hostile.txid)
    assert book.proposals[hostile.txid].state is PegOutState.REPLACED
    assert {r.proposal for r in book.requests.values()} == {old}
    # The mined peg-out's change left the coins, but stays reachable as unsettled change.
    assert [u.outpoint for u in unsettled_coins(book)] == \
        [o for o in coins if o.txid == old]


def test_signatures_for_a_replaced_bump_change_nothing() -> None:
    # (B) B1 proposed, X confirmed before B1 had k signatures here.
    book, federation, old = carried()
    made = make_bump(book, book.proposals[old], federation, RATE)
    assert not isinstance(made, str)
    book, _ = apply_block(book, block(book.height + 1, proposal=made.transaction.to_bytes()),
                          federation)
    secrets, _ = members(3)
    sets = rules.sign(made, federation, 0, secrets[0], aux_rand=bytes(32))
    book = _settled(book, old)
    assert book.proposals[made.txid].state is PegOutState.REPLACED
    assert mark_signed(book, made.txid, b"signed")[1] is None
    with pytest.raises(PegOutBlockError, match="replaced"):
        collect(book, {}, federation, sets)
    assert to_sign(book) == ()


def test_no_bump_once_the_chain_shows_an_earlier_peg_out_of_the_group_mined() -> None:
    # (C) X bumped by B1; a later proposal spends X's change (Bitcoin showed it mined).
    book, federation, old = carried()
    xtx = Transaction.from_bytes(book.proposals[old].transaction)
    change_x = OutPoint(old, len(xtx.outputs) - 1)
    book, b1 = _carry_bump(book, federation, old)
    (coin_x,) = [u for u in unsettled_coins(book) if u.outpoint == change_x]
    height = book.height + 1
    book, _ = apply_block(book, block(height, (payment(40, 45_000_000, height),)), federation)
    spender = make_proposal(book, federation, RATE, extra=(coin_x,))
    assert not isinstance(spender, str) and change_x in [u.outpoint for u in spender.spent]
    book, _ = apply_block(book, attrs.evolve(block(
        book.height + 1, proposal=spender.transaction.to_bytes()), fetched=(coin_x,)),
        federation)
    book, _ = apply_block(book, block(book.height + AFTER), federation)
    assert bump_candidates(book, book.height + 1, AFTER) == ()
    b2 = make_bump(book, book.proposals[b1], federation, RATE)
    assert not isinstance(b2, str)
    with pytest.raises(PegOutBlockError, match="change is spent by a later proposal"):
        check(book, federation, b2.transaction.to_bytes())
