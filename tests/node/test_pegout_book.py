"""The peg-out book (node.workflows.pegout_book): requests read from blocks, proposals checked
against the open requests and the federation's coins, finalized peg-outs checked signature by
signature, signatures collected from hostile peers, replays and duplicates harmless, and the
records' round trip through the store."""

from __future__ import annotations

import hashlib
from functools import cache
from pathlib import Path

import attrs
import pytest
from coincurve import PrivateKey
from eth_bloom.bloom import BloomFilter
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from node.actors.storage import ChainStore
from node.messages.storage import PutPegOuts
from node.types.bitcoin import OutPoint, Transaction, TxIn, TxOut
from node.types.bridge import (
    BRIDGE_ADDRESS,
    REQUEST_PEGOUT_TOPIC,
    PegOutEvent,
    PegOutPayment,
    PegOutScreening,
)
from node.types.chain import BlockRef
from node.types.pegout import FederationUtxo, PegOutSignatures
from node.types.pegout_book import PegOutState
from node.workflows import pegout as rules
from node.workflows.federation import Federation
from node.workflows.pegout_book import (
    BlockPegOuts,
    PegOutBlockError,
    PegOutBook,
    apply_block,
    check_block,
    check_finalized,
    collect,
    decode_signatures,
    encode_signatures,
    make_proposal,
    mark_broadcast,
    mark_signed,
    may_have_requests,
    missing_inputs,
    observe_confirmations,
    open_requests,
    request_state,
    to_sign,
)

RATE = 2_000  # sat/kvB
MAX_RATE = 500_000
AUX = bytes(32)


@cache
def members(n: int) -> tuple[tuple[bytes, ...], Federation]:
    secrets = tuple(hashlib.sha256(b"book member %d" % i).digest() for i in range(n))
    return secrets, Federation(tuple(PrivateKey(s).public_key_xonly.format() for s in secrets))


def h(tag: str, i: int = 0) -> bytes:
    return hashlib.sha256(f"{tag} {i}".encode()).digest()


def destination(seed: int) -> bytes:
    return b"\x00\x14" + h("dest", seed)[:20]


def payment(seed: int, sats: int, height: int, log_index: int | None = None) -> PegOutPayment:
    event = PegOutEvent(h("evm tx", seed), seed if log_index is None else log_index, height,
                        h("block", height), bytes(19) + bytes([seed % 256]),
                        b"bcrt1qexample", sats * 10**10)
    return PegOutPayment(event, destination(seed), f"bcrt1q-dest-{seed}")


def coin(federation: Federation, seed: int, sats: int) -> FederationUtxo:
    return FederationUtxo(OutPoint(h("deposit", seed), seed % 3), sats,
                          federation.script_pubkey)


def block(height: int, payments: tuple[PegOutPayment, ...] = (), *,
          proposal: bytes | None = None, finalized: tuple[bytes, ...] = (),
          pegins: tuple[FederationUtxo, ...] = ()) -> BlockPegOuts:
    return BlockPegOuts(height, h("sidechain block", height), PegOutScreening(payments),
                        proposal, finalized, pegins)


def funded(n: int = 3, coins: tuple[int, ...] = (50_000_000, 30_000_000),
           requests: tuple[int, ...] = (2_000_000, 5_000_000)
           ) -> tuple[PegOutBook, Federation]:
    """A book after block 1 (peg-ins credit ``coins``) and block 2 (``requests``)."""
    _, federation = members(n)
    book, _ = apply_block(PegOutBook(), block(
        1, pegins=tuple(coin(federation, i, v) for i, v in enumerate(coins))), federation)
    book, _ = apply_block(book, block(2, tuple(payment(i, v, 2) for i, v in
                                               enumerate(requests))), federation)
    return book, federation


def proposed(n: int = 3) -> tuple[PegOutBook, Federation, bytes]:
    book, federation = funded(n)
    made = make_proposal(book, federation, RATE)
    assert not isinstance(made, str)
    raw = made.transaction.to_bytes()
    book, _ = apply_block(book, block(3, proposal=raw), federation)
    return book, federation, raw


def signed_form(book: PegOutBook, federation: Federation, n: int,
                signers: tuple[int, ...]) -> Transaction:
    secrets, _ = members(n)
    (proposal,) = to_sign(book)
    sets = {m: rules.sign(proposal, federation, m, secrets[m], aux_rand=AUX) for m in signers}
    return rules.finalize(proposal, federation, sets).transaction


# ---------------------------------------------------------------------------------- requests


def test_requests_are_read_in_chain_order_and_a_replay_adds_nothing() -> None:
    book, federation = funded()
    assert [r.request.amount for r in open_requests(book)] == [2_000_000, 5_000_000]
    assert all(request_state(r, None) is PegOutState.REQUESTED for r in open_requests(book))
    assert sum(u.value for u in book.utxos.values()) == 80_000_000
    again, change = apply_block(book, block(2, (payment(0, 2_000_000, 2),)), federation)
    assert again is book and not change
    # The same request seen again in a later block (a replayed receipt) is not added twice.
    later, change = apply_block(book, block(3, (payment(0, 2_000_000, 2),)), federation)
    assert len(later.requests) == 2 and not change.requests


def test_a_request_to_the_federation_itself_is_refused() -> None:
    book, federation = funded()
    own = attrs.evolve(payment(9, 3_000_000, 3), script_pubkey=federation.script_pubkey)
    book, change = apply_block(book, block(3, (own,)), federation)
    assert len(change.refused) == 1 and "federation's own" in change.refused[0].reason
    assert len(open_requests(book)) == 2


# ---------------------------------------------------------------------------------- proposals


def test_the_proposal_pays_the_open_requests_and_moves_the_coins() -> None:
    book, federation = funded()
    made = make_proposal(book, federation, RATE)
    assert not isinstance(made, str)
    raw = made.transaction.to_bytes()
    check_block(book, federation, proposal=raw, finalized=(), auxpow=False,
                max_fee_rate=MAX_RATE)
    after, change = apply_block(book, block(3, proposal=raw), federation)
    assert open_requests(after) == ()
    assert {r.proposal for r in after.requests.values()} == {made.txid}
    spent = {u.outpoint for u in made.spent}
    assert spent <= after.spent and not spent & set(after.utxos)
    assert set(change.spent) == spent
    # The change output is the federation's next coin.
    change_out = made.transaction.outputs[-1]
    assert change_out.script_pubkey == federation.script_pubkey
    assert after.utxos[OutPoint(made.txid, len(made.transaction.outputs) - 1)].value == \
        change_out.value
    # A second proposal of the same transaction, or of requests already paid, is refused.
    with pytest.raises(PegOutBlockError, match=r"proposed already|open"):
        check_block(after, federation, proposal=raw, finalized=(), auxpow=False,
                    max_fee_rate=MAX_RATE)
    assert make_proposal(after, federation, RATE) == "no open peg-out requests"


def test_coins_short_of_every_request_pay_the_oldest_that_fit() -> None:
    book, federation = funded(coins=(4_000_000,), requests=(3_000_000, 3_000_000))
    made = make_proposal(book, federation, RATE)
    assert not isinstance(made, str)
    assert len(made.transaction.outputs) == 2  # one request and the change
    after, _ = apply_block(book, block(3, proposal=made.transaction.to_bytes()), federation)
    assert [r.request.log_index for r in open_requests(after)] == [1]
    poor, _ = funded(coins=(1_000_000,), requests=(3_000_000,))
    assert "less than" in str(make_proposal(poor, federation, RATE))


def test_a_coin_spent_by_a_proposal_is_never_offered_again() -> None:
    book, federation, raw = proposed()
    tx = Transaction.from_bytes(raw)
    # A later block credits the same outpoint again (a replayed peg-in): it stays spent.
    again = FederationUtxo(tx.inputs[0].prevout, 50_000_000, federation.script_pubkey)
    after, change = apply_block(book, block(4, pegins=(again,)), federation)
    assert again.outpoint not in after.utxos and not change.utxos
    assert missing_inputs(after, raw) == ()


def _mutations(federation: Federation, tx: Transaction, book: PegOutBook
               ) -> list[tuple[str, Transaction]]:
    out = tx.outputs
    spent = next(iter(book.spent), None)
    stranger = OutPoint(h("stranger"), 0)
    found = [
        ("overpays", attrs.evolve(tx, outputs=(attrs.evolve(out[0], value=out[0].value + 1),
                                               *out[1:]))),
        ("swapped", attrs.evolve(tx, outputs=(out[1], out[0], *out[2:]))),
        ("extra output", attrs.evolve(tx, outputs=(*out[:-1], TxOut(1_000, destination(77)),
                                                   out[-1]))),
        ("version", attrs.evolve(tx, version=1)),
        ("lock time", attrs.evolve(tx, lock_time=5)),
        ("no RBF", attrs.evolve(tx, inputs=tuple(attrs.evolve(i, sequence=0xFFFFFFFF)
                                                 for i in tx.inputs))),
        ("stranger's coin", attrs.evolve(tx, inputs=(TxIn(stranger, b"", rules.SEQUENCE_RBF),
                                                     *tx.inputs[1:]))),
        ("twice", attrs.evolve(tx, inputs=(tx.inputs[0], tx.inputs[0]))),
        ("change keeps the fee", attrs.evolve(tx, outputs=(
            *out[:-1], attrs.evolve(out[-1], value=out[-1].value + 5_000)))),
        ("change to a stranger", attrs.evolve(tx, outputs=(
            *out[:-1], attrs.evolve(out[-1], script_pubkey=destination(99))))),
    ]
    if spent is not None:
        found.append(("spent coin", attrs.evolve(tx, inputs=(TxIn(spent, b"",
                                                                  rules.SEQUENCE_RBF),))))
    return found


def test_hostile_proposals_are_refused_with_a_reason() -> None:
    book, federation = funded()
    made = make_proposal(book, federation, RATE)
    assert not isinstance(made, str)
    for name, tx in _mutations(federation, made.transaction, book):
        with pytest.raises(PegOutBlockError) as caught:
            check_block(book, federation, proposal=tx.to_bytes(), finalized=(),
                        auxpow=False, max_fee_rate=MAX_RATE)
        assert caught.value.reason, name
    # A fee rate above the node's ceiling is refused, one below the relay minimum too.
    greedy = make_proposal(book, federation, 400_000)
    assert not isinstance(greedy, str)
    with pytest.raises(PegOutBlockError, match="fees"):
        check_block(book, federation, proposal=greedy.transaction.to_bytes(), finalized=(),
                    auxpow=False, max_fee_rate=10_000)


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(data=st.data())
def test_mangled_proposal_bytes_never_pass_unless_they_are_the_proposal(
        data: st.DataObject) -> None:
    book, federation = funded()
    made = make_proposal(book, federation, RATE)
    assert not isinstance(made, str)
    raw = made.transaction.to_bytes()
    kind = data.draw(st.sampled_from(["truncate", "flip", "append", "random"]))
    if kind == "truncate":
        mangled = raw[:data.draw(st.integers(0, len(raw) - 1))]
    elif kind == "flip":
        i = data.draw(st.integers(0, len(raw) - 1))
        mangled = raw[:i] + bytes([raw[i] ^ data.draw(st.integers(1, 255))]) + raw[i + 1:]
    elif kind == "append":
        mangled = raw + data.draw(st.binary(min_size=1, max_size=40))
    else:
        mangled = data.draw(st.binary(max_size=400))
    try:
        check_block(book, federation, proposal=mangled, finalized=(), auxpow=False,
                    max_fee_rate=MAX_RATE)
    except PegOutBlockError as exc:
        assert exc.reason
    else:  # only a flip that leaves a valid payment may pass, and it must be a payment
        assert Transaction.from_bytes(mangled).outputs[0].value <= 2_000_000


@given(value=st.one_of(st.integers(), st.floats(allow_nan=True), st.text(), st.booleans(),
                       st.lists(st.integers(), max_size=3)))
def test_a_proposal_that_is_not_bytes_is_refused(value: object) -> None:
    book, federation = funded()
    with pytest.raises(PegOutBlockError, match=r"not bytes|not a Bitcoin"):
        check_block(book, federation, proposal=value,  # type: ignore[arg-type]
                    finalized=(), auxpow=False, max_fee_rate=MAX_RATE)


# ---------------------------------------------------------------------------------- signing


def test_signatures_finalize_at_k_and_the_block_carrying_them_is_checked() -> None:
    secrets, federation = members(3)
    book, _, raw = proposed(3)
    (proposal,) = to_sign(book)
    pool: dict[bytes, dict[int, PegOutSignatures]] = {}
    sets = [rules.sign(proposal, federation, m, secrets[m], aux_rand=AUX) for m in (2, 0)]
    pool1, signed = collect(book, pool, federation, sets[0])
    assert signed is None
    pool1, signed = collect(book, pool1, federation, sets[0])  # a duplicate changes nothing
    assert signed is None and len(pool1[proposal.txid]) == 1
    pool2, signed = collect(book, pool1, federation, sets[1])
    assert signed is not None and proposal.txid not in pool2
    tx = Transaction.from_bytes(signed)
    assert check_finalized(book.proposals[proposal.txid], tx, federation) == (0, 2)
    check_block(book, federation, proposal=None, finalized=(signed,), auxpow=True,
                max_fee_rate=MAX_RATE)
    with pytest.raises(PegOutBlockError, match="without AuxPoW"):
        check_block(book, federation, proposal=None, finalized=(signed,), auxpow=False,
                    max_fee_rate=MAX_RATE)
    with pytest.raises(PegOutBlockError, match="twice"):
        check_block(book, federation, proposal=None, finalized=(signed, signed), auxpow=True,
                    max_fee_rate=MAX_RATE)
    book2, _ = mark_signed(book, proposal.txid, signed)
    assert to_sign(book2) == ()
    with pytest.raises(PegOutBlockError, match="signed already"):
        collect(book2, pool, federation, sets[0])
    # The block carrying it: signed, then broadcast, then confirmed; carried only once.
    book3, change = apply_block(book2, block(4, finalized=(signed,)), federation)
    record = book3.proposals[proposal.txid]
    assert record.state is PegOutState.SIGNED and record.included_height == 4
    assert change.proposals == (record,)
    with pytest.raises(PegOutBlockError, match="carried already"):
        check_block(book3, federation, proposal=None, finalized=(signed,), auxpow=True,
                    max_fee_rate=MAX_RATE)
    book4, changed = mark_broadcast(book3, proposal.txid)
    assert changed is not None and changed.state is PegOutState.BROADCAST
    assert mark_broadcast(book4, proposal.txid)[1] is None
    book5, changed = observe_confirmations(book4, proposal.txid, 1, 2)
    assert changed is not None and changed.state is PegOutState.BROADCAST
    book6, changed = observe_confirmations(book5, proposal.txid, 2, 2)
    assert changed is not None and changed.state is PegOutState.CONFIRMED
    assert all(request_state(r, book6.proposals[proposal.txid]) is PegOutState.CONFIRMED
               for r in book6.requests.values())
    assert raw == book6.proposals[proposal.txid].transaction


def test_hostile_signatures_are_refused() -> None:
    secrets, federation = members(3)
    book, _, _ = proposed(3)
    (proposal,) = to_sign(book)
    good = rules.sign(proposal, federation, 1, secrets[1], aux_rand=AUX)
    stranger = PrivateKey(h("stranger key"))
    forged = [
        attrs.evolve(good, signatures=(bytes(64),) * len(good.signatures)),
        attrs.evolve(good, member=0),                              # member 1's, filed as 0
        attrs.evolve(good, key=stranger.public_key_xonly.format()),
        attrs.evolve(good, signatures=(*good.signatures, bytes(64))),
    ]
    for sets in forged:
        with pytest.raises(rules.InvalidSignatures):
            collect(book, {}, federation, sets)
    with pytest.raises(PegOutBlockError, match="no proposal"):
        collect(book, {}, federation, attrs.evolve(good, txid=h("unknown")))


def test_a_finalized_peg_out_with_a_bad_witness_is_refused() -> None:
    n = 3
    _, federation = members(n)
    book, _, _ = proposed(n)
    tx = signed_form(book, federation, n, (0, 1))
    record = next(iter(book.proposals.values()))
    witness = tx.inputs[0].witness

    def with_witness(new: tuple[bytes, ...]) -> Transaction:
        return attrs.evolve(tx, inputs=(attrs.evolve(tx.inputs[0], witness=new),
                                        *tx.inputs[1:]))

    bad_sig = bytes([witness[1][0] ^ 1]) + witness[1][1:]
    cases = {
        "signature": with_witness((witness[0], bad_sig, *witness[2:])),
        "too few": with_witness((b"", b"", witness[2], *witness[3:])),
        "too many": with_witness((witness[1], *witness[1:])),
        "script": with_witness((*witness[:n], b"\x51", witness[-1])),
        "short": with_witness(witness[:-1]),
        "other tx": attrs.evolve(tx, lock_time=1),
    }
    for name, bad in cases.items():
        with pytest.raises(PegOutBlockError):
            check_finalized(record, bad, federation)
        with pytest.raises(PegOutBlockError):
            check_block(book, federation, proposal=None, finalized=(bad.to_bytes(),),
                        auxpow=True, max_fee_rate=MAX_RATE)
        assert name


@given(st.binary(max_size=300))
def test_signature_bytes_from_the_wire_decode_or_say_why(data: bytes) -> None:
    try:
        decoded = decode_signatures(data)
    except ValueError as exc:
        assert "peg-out signatures" in str(exc) or "must be" in str(exc)
    else:
        assert encode_signatures(decoded) == data


def test_signatures_round_trip_on_the_wire_and_truncations_fail() -> None:
    secrets, federation = members(3)
    book, _, _ = proposed(3)
    (proposal,) = to_sign(book)
    sets = rules.sign(proposal, federation, 2, secrets[2], aux_rand=AUX)
    wire = encode_signatures(sets)
    assert decode_signatures(wire) == sets
    for cut in range(len(wire)):
        with pytest.raises(ValueError):
            decode_signatures(wire[:cut])
    with pytest.raises(ValueError):
        decode_signatures(wire + b"\x00")


# ---------------------------------------------------------------------------------- the bloom


def test_the_logs_bloom_tells_blocks_without_requests_apart() -> None:
    bloom = BloomFilter()
    assert not may_have_requests(int(bloom).to_bytes(256, "big"))
    bloom.add(BRIDGE_ADDRESS)
    assert not may_have_requests(int(bloom).to_bytes(256, "big"))
    bloom.add(REQUEST_PEGOUT_TOPIC)
    assert may_have_requests(int(bloom).to_bytes(256, "big"))
    assert may_have_requests(b"\xff" * 256)
    for bad in (b"", bytes(255), bytes(257), "00" * 256, None):
        with pytest.raises(ValueError):
            may_have_requests(bad)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------- storage


def test_the_book_round_trips_through_the_store(tmp_path: Path) -> None:
    from node.actors.federation import book_from

    book, federation, _ = proposed()
    tx = signed_form(book, federation, 3, (0, 1))
    book, _ = mark_signed(book, tx.txid(), tx.to_bytes())
    refusal_book, change = apply_block(book, block(4, (attrs.evolve(
        payment(5, 2_000_000, 4), script_pubkey=federation.script_pubkey),)), federation)
    store = ChainStore(str(tmp_path / "db"))
    try:
        store.put_pegouts(PutPegOuts(
            tuple(book.requests.values()), change.refused, tuple(book.proposals.values()),
            tuple(book.utxos.values()), tuple(book.spent), BlockRef(h("b", 4), 4)))
        loaded = book_from(store.pegouts())
        assert loaded.requests == book.requests and loaded.proposals == book.proposals
        assert loaded.utxos == book.utxos and loaded.spent == book.spent
        assert loaded.height == 4 and len(loaded.refused) == 1
        first = next(iter(book.requests.values()))
        status = store.pegout_status(first.request.evm_tx_hash)
        assert status.requests == ((first, book.proposals[first.proposal or b""]),)
        refused = change.refused[0]
        assert store.pegout_status(refused.evm_tx_hash).refused == (refused,)
        assert store.pegout_status(h("nothing")).requests == ()
    finally:
        store.close()
    assert refusal_book.height == 4


def test_a_coin_the_book_lacks_counts_only_when_fetched_and_stays_spent() -> None:
    book, federation = funded(coins=(1_000_000,), requests=(3_000_000,))
    outside = coin(federation, 42, 20_000_000)  # e.g. fetched with gettxout by the actor
    rich, _ = apply_block(book, block(3, pegins=(outside,)), federation)
    made = make_proposal(rich, federation, RATE)
    assert not isinstance(made, str) and made.spent == (outside,)
    raw = made.transaction.to_bytes()
    assert missing_inputs(book, raw) == (outside.outpoint,)
    with pytest.raises(PegOutBlockError, match="not a coin of the federation"):
        check_block(book, federation, proposal=raw, finalized=(), auxpow=False,
                    max_fee_rate=MAX_RATE)
    check_block(book, federation, proposal=raw, finalized=(), auxpow=False,
                max_fee_rate=MAX_RATE, fetched=(outside,))
    stranger = FederationUtxo(outside.outpoint, outside.value, destination(3))
    with pytest.raises(PegOutBlockError, match="not the federation"):
        check_block(book, federation, proposal=raw, finalized=(), auxpow=False,
                    max_fee_rate=MAX_RATE, fetched=(stranger,))
    after, change = apply_block(book, attrs.evolve(block(3, proposal=raw),
                                                   fetched=(outside,)), federation)
    assert outside.outpoint in after.spent and outside.outpoint in change.spent
    assert missing_inputs(after, raw) == ()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(blocks=st.lists(st.tuples(
    st.lists(st.integers(1_000_000, 40_000_000), max_size=4),      # burns in the block
    st.lists(st.integers(1_000, 60_000_000), max_size=2),          # peg-ins it credits
    st.booleans(),                                                # its producer proposes
    st.integers(1_000, 50_000)),                                  # at this fee rate
    min_size=1, max_size=12))
def test_any_chain_pays_each_request_at_most_once_and_keeps_the_coins_straight(
        blocks: list[tuple[list[int], list[int], bool, int]]) -> None:
    _, federation = members(3)
    book = PegOutBook()
    history = []
    deposits = paid = fees = 0
    seed = 0
    for height, (burns, pegins, proposes, rate) in enumerate(blocks, start=1):
        proposal = None
        if proposes:
            made = make_proposal(book, federation, rate)
            if not isinstance(made, str):
                proposal = made.transaction.to_bytes()
                check_block(book, federation, proposal=proposal, finalized=(), auxpow=False,
                            max_fee_rate=MAX_RATE)
                outs = made.transaction.outputs
                change = outs[-1].value if outs[-1].script_pubkey == \
                    federation.script_pubkey else 0
                spent = sum(u.value for u in made.spent)
                paid += sum(o.value for o in outs) - change
                fees += spent - sum(o.value for o in outs)
        payments = []
        for amount in burns:
            seed += 1
            payments.append(payment(seed, amount, height, log_index=seed))
        coins = []
        for value in pegins:
            seed += 1
            coins.append(coin(federation, seed, value))
            deposits += value
        current = block(height, tuple(payments), proposal=proposal, pegins=tuple(coins))
        history.append(current)
        book, _ = apply_block(book, current, federation)
        # A replay of any block already applied changes nothing.
        for old in history:
            assert apply_block(book, old, federation)[0] is book
    proposed = [rid for p in book.proposals.values() for rid in p.requests]
    assert len(proposed) == len(set(proposed))
    assert all(book.requests[rid].proposal is not None for rid in proposed)
    assert not set(book.utxos) & book.spent
    assert sum(u.value for u in book.utxos.values()) == deposits - paid - fees
