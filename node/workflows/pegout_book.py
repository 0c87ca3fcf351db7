"""The peg-out book: requests, proposals and the federation's coins, derived from the chain.

Plain synchronous rules over frozen values (the FederationActor is their thin shell). Every
node derives the same book from the same chain, block by block (:func:`apply_block`):

1. **The block's proposal** (``pegout_payment_proposal``, the raw unsigned transaction) pays
   the *open* requests as of its parent: the oldest requests not yet in a proposal, in chain
   order (block height, then log order), as many as the proposal has payment outputs. Its
   last output is change exactly when it pays the federation's own script (a request to the
   federation's own address is refused when read, so this is never ambiguous). The requests
   become ``proposed``; the coins it spends leave the federation's set for good (an outpoint
   spent by a proposal is never offered again, even if a later block credits it); its change
   output joins the set.

   ALYS.md says the producer of block n pays the requests of block n-1. We pay the open
   requests as of block n-1, which is the same in the normal case; a block without a
   proposal (its producer's FederationActor away, not enough coins yet) leaves them open for
   the next block instead of losing them. A block need not carry a proposal, so a block
   without peg-outs costs no extra work; a block that carries one is refused unless it is
   exactly right (:func:`check_block`).
2. **Its finalized peg-outs** (``finalized_pegouts``, only in a block carrying AuxPoW): each
   is the signed form of a proposal still waiting for one, with exactly ``k`` valid member
   signatures in every input's witness (:func:`check_finalized`). The proposal becomes
   ``signed``, carried by the block; every node broadcasts it (the actor), then it is
   ``broadcast``, and ``confirmed`` once Bitcoin shows the configured confirmations.
3. **Its peg-ins** (``pegins``, verified by the chain against Bitcoin) add the deposits'
   outputs to the federation's coins.
4. **Its receipts' requests**, screened (:func:`node.workflows.bridge_events.screen_all`),
   become ``requested`` (or are kept as refused, with the reason). A request already known is
   not added twice: re-applying a block after a crash changes nothing.

A peg-out that never confirms (a fee rate the market outgrew, a transaction evicted from the
mempools) is broadcast again by every node at every poll while it is ``broadcast`` and not
confirmed. Once its signed form has been carried for ``bump_after`` blocks, a producer that
still sees it unconfirmed may propose a **fee bump** (BIP125 replace-by-fee) in the
proposal field instead of a new payment (:func:`bump_candidates`, :func:`make_bump`): the
same inputs in the same order, the same requests and change, the recipients' fee shares at a
higher rate (at least the minimum relay rate more, as Bitcoin requires). Validators check it
from the chain alone (:func:`check_block`): it replaces the newest proposal spending those
inputs, whose signed form a block carried ``bump_after`` blocks ago or more, and whose change
no later proposal spent. It is signed like any proposal. The two spend the same coins, so at
most one is ever mined: no request is paid twice, whichever wins. The requests point to the
newest; once Bitcoin confirms one of them (:func:`settle`), the others are ``replaced`` and
the requests point to the one mined; a bump a block carries after that (its producer had not
seen the confirmation) is ``replaced`` at once (:func:`settle_group`). Validators also refuse
a bump once the chain shows a peg-out of the group mined (a later proposal spends its
change). Their change outputs are *unsettled* meanwhile (not in the coins: only one will
exist); a producer spends one only once Bitcoin shows it ``bridge.pegout_confirmations``
deep (:func:`unsettled_coins`, passed to :func:`make_proposal`), validators fetch it from
Bitcoin like any coin the book lacks, and no node sends a peg-out of a group again once it
saw one of them mined (:func:`group_mined`), so a short Bitcoin reorg cannot swap the mined
one for its conflict. A reorg deeper than that is the same risk as for peg-ins.

Limits: a peg-out whose change a later proposal already spends (a chain of unconfirmed
peg-outs, normal under load) cannot be bumped, and the bump does not pay for such
descendants (no CPFP); the next proposal then waits on its parent.

Signatures: when PoW is queued, each member signs every proposal still waiting for
signatures (:func:`to_sign`) and gossips them (:func:`encode_signatures`); a receiver
checks them (:func:`collect`: a bad set is refused with a reason, and the actor scores the
peer) and finalizes a proposal once ``k`` valid sets are in hand (its signed form is kept
until an AuxPoW block carries it).
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping, Sequence
from typing import Final

import attrs
from eth_bloom.bloom import BloomFilter

from node.errors import NodeError
from node.types.bitcoin import DecodeError, OutPoint, Transaction, TxOut
from node.types.bridge import BRIDGE_ADDRESS, REQUEST_PEGOUT_TOPIC, PegOutScreening
from node.types.pegout import (
    FederationUtxo,
    PegOutProposal,
    PegOutRequest,
    PegOutSignatures,
    RequestId,
)
from node.types.pegout_book import (
    PegOutRecord,
    PegOutState,
    ProposalRecord,
    RefusedPegOutRecord,
)
from node.workflows import pegout as rules
from node.workflows.federation import Federation

__all__ = [
    "BlockPegOuts",
    "BookChange",
    "PegOutBlockError",
    "PegOutBook",
    "SignaturePool",
    "apply_block",
    "bump_candidates",
    "check_block",
    "check_finalized",
    "collect",
    "decode_signatures",
    "encode_signatures",
    "group_mined",
    "make_bump",
    "make_proposal",
    "mark_broadcast",
    "mark_signed",
    "may_have_requests",
    "missing_inputs",
    "observe_confirmations",
    "open_requests",
    "replaced_by",
    "request_state",
    "settle",
    "settle_group",
    "superseded",
    "to_sign",
    "unsettled_coins",
]

#: Blocks after a peg-out's signed form was carried before a fee bump may replace it, by
#: default (``chain.pegout_bump_after``).
DEFAULT_BUMP_AFTER: Final = 1800
#: The most signature sets kept per proposal waiting for ``k`` (one per member at most).
MAX_MEMBERS: Final = 15
_SIGNATURES_HEADER: Final = struct.Struct(">32sB32sH")


class PegOutBlockError(NodeError, ValueError):
    """A block's peg-out fields are wrong; ``reason`` says what and where. ``unknown_coin``
    is the input the book (with the coins fetched) does not know, when that is why."""

    def __init__(self, reason: str, unknown_coin: OutPoint | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.unknown_coin = unknown_coin


@attrs.frozen
class PegOutBook:
    """What the chain up to block ``height`` (``block_hash``) says of peg-outs: the requests
    (by id), the refused burns, the proposals (by txid), the federation's coins, and every
    outpoint a proposal spent. ``height`` is -1 before the first block is applied."""

    height: int = -1
    block_hash: bytes = bytes(32)
    requests: Mapping[RequestId, PegOutRecord] = attrs.field(factory=dict)
    refused: Mapping[RequestId, RefusedPegOutRecord] = attrs.field(factory=dict)
    proposals: Mapping[bytes, ProposalRecord] = attrs.field(factory=dict)
    utxos: Mapping[OutPoint, FederationUtxo] = attrs.field(factory=dict)
    spent: frozenset[OutPoint] = frozenset()


@attrs.frozen
class BlockPegOuts:
    """What a block tells the book: its screened requests, its proposal, its finalized
    peg-outs, and the federation coins its peg-ins credit."""

    height: int
    block_hash: bytes
    screening: PegOutScreening = attrs.field(factory=PegOutScreening)
    proposal: bytes | None = None
    finalized: tuple[bytes, ...] = ()
    pegins: tuple[FederationUtxo, ...] = ()
    #: Outputs a proposal spends that the book does not hold (fetched from Bitcoin).
    fetched: tuple[FederationUtxo, ...] = ()


@attrs.frozen
class BookChange:
    """The records one change wrote (one WriteBatch): new or changed requests, refusals and
    proposals, coins added, outpoints spent (removed from the coins, kept as spent), coins
    dropped (removed, not spent: the change of a peg-out a fee bump replaces)."""

    requests: tuple[PegOutRecord, ...] = ()
    refused: tuple[RefusedPegOutRecord, ...] = ()
    proposals: tuple[ProposalRecord, ...] = ()
    utxos: tuple[FederationUtxo, ...] = ()
    spent: tuple[OutPoint, ...] = ()
    dropped: tuple[OutPoint, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.requests or self.refused or self.proposals or self.utxos
                    or self.spent or self.dropped)


# ---------------------------------------------------------------------------------- reading


def may_have_requests(logs_bloom: bytes) -> bool:
    """Whether a block whose header has ``logs_bloom`` may hold a ``RequestPegOut`` log of
    the bridge (both its address and the event's topic are in the bloom): when not, the
    block's receipts need not be read at all."""
    if type(logs_bloom) is not bytes or len(logs_bloom) != 256:
        raise ValueError(f"a logs bloom is 256 bytes, got {logs_bloom!r:.40}")
    bloom = BloomFilter(int.from_bytes(logs_bloom, "big"))
    return BRIDGE_ADDRESS in bloom and REQUEST_PEGOUT_TOPIC in bloom


def open_requests(book: PegOutBook) -> tuple[PegOutRecord, ...]:
    """The requests no proposal pays yet, oldest first (block height, then log order)."""
    return tuple(sorted((r for r in book.requests.values() if r.proposal is None),
                        key=lambda r: r.order))


def request_state(record: PegOutRecord, proposal: ProposalRecord | None) -> PegOutState:
    """A request's state: ``requested`` until a proposal pays it, then the proposal's."""
    if record.proposal is None or proposal is None:
        return PegOutState.REQUESTED
    return proposal.state


def _spendable(book: PegOutBook, extra: Iterable[FederationUtxo] = ()
               ) -> dict[OutPoint, FederationUtxo]:
    known = dict(book.utxos)
    for utxo in extra:
        if utxo.outpoint not in book.spent:
            known.setdefault(utxo.outpoint, utxo)
    return known


# ---------------------------------------------------------------------------------- proposing


def make_proposal(book: PegOutBook, federation: Federation, fee_rate: int,
                  extra: Iterable[FederationUtxo] = ()) -> PegOutProposal | str:
    """The proposal the next block carries: the open requests (at most
    :data:`~node.workflows.pegout.MAX_REQUESTS`, oldest first) paid from the federation's
    coins (and ``extra``: unsettled change Bitcoin shows confirmed) at ``fee_rate`` sat/kvB.
    When the coins do not cover them all, the longest prefix they cover. A string says why
    there is none."""
    pending = open_requests(book)[:rules.MAX_REQUESTS]
    if not pending:
        return "no open peg-out requests"
    coins = list(_spendable(book, extra).values())
    available = sum(u.value for u in coins)
    count = len(pending)
    while count and sum(r.request.amount for r in pending[:count]) > available:
        count -= 1
    problem = (f"the federation's {len(coins)} coins hold {available} sats, less than the "
               f"oldest request's {pending[0].request.amount}")
    while count:
        try:
            return rules.propose([r.request for r in pending[:count]], coins, federation,
                                 fee_rate)
        except rules.InsufficientFunds as exc:
            problem = str(exc)
            count -= 1
        except rules.PegOutError as exc:
            return f"the open requests cannot be paid: {exc}"
    return problem


def _parse(raw: object, what: str) -> Transaction:
    if type(raw) is not bytes:
        raise PegOutBlockError(f"{what} is not bytes")
    try:
        return Transaction.from_bytes(raw)
    except (DecodeError, ValueError) as exc:
        raise PegOutBlockError(f"{what} is not a Bitcoin transaction: {exc}") from None


def missing_inputs(book: PegOutBook, raw: bytes) -> tuple[OutPoint, ...]:
    """The outpoints the proposal ``raw`` spends that the book neither holds nor knows as
    spent (the actor fetches them from Bitcoin); () when ``raw`` does not parse."""
    try:
        tx = Transaction.from_bytes(raw)
    except (DecodeError, ValueError):
        return ()
    return tuple(i.prevout for i in tx.inputs
                 if i.prevout not in book.utxos and i.prevout not in book.spent)


# ---------------------------------------------------------------------------------- fee bumps


def _inputs_of(record: ProposalRecord) -> tuple[OutPoint, ...]:
    return tuple(u.outpoint for u in record.spent)


def _group(book: PegOutBook, inputs: tuple[OutPoint, ...]) -> list[ProposalRecord]:
    """The proposals spending exactly ``inputs`` (a peg-out and its fee bumps), oldest
    first."""
    return sorted((r for r in book.proposals.values() if _inputs_of(r) == inputs),
                  key=lambda r: (r.height, r.txid))


def replaced_by(book: PegOutBook, tx: Transaction) -> ProposalRecord | None:
    """The proposal ``tx`` would replace: the newest one spending exactly its inputs, in
    order (None: ``tx`` is no fee bump)."""
    group = _group(book, tuple(i.prevout for i in tx.inputs))
    return group[-1] if group else None


def superseded(book: PegOutBook, txid: bytes) -> bool:
    """Whether a fee bump replaced proposal ``txid`` (a newer proposal spends its inputs):
    it is then never sent to Bitcoin again, only watched in case it is mined."""
    record = book.proposals.get(txid)
    return record is not None and _group(book, _inputs_of(record))[-1].txid != txid


def _change_of(record: ProposalRecord) -> FederationUtxo | None:
    tx = Transaction.from_bytes(record.transaction)
    if len(tx.outputs) <= len(record.requests):
        return None
    last = tx.outputs[-1]
    return FederationUtxo(OutPoint(record.txid, len(tx.outputs) - 1), last.value,
                          last.script_pubkey)


def _bump_problem(book: PegOutBook, record: ProposalRecord, height: int,
                  bump_after: int) -> str | None:
    """Why block ``height`` may not replace ``record`` (None: it may), from the chain alone."""
    txid = record.txid[::-1].hex()
    if record.included_height is None:
        return f"peg-out {txid} has no signed form in a block yet: it is not bumped"
    if height - record.included_height < bump_after:
        return (f"peg-out {txid} was carried by block #{record.included_height}: a fee bump "
                f"may replace it from block #{record.included_height + bump_after}")
    for member in _group(book, _inputs_of(record)):
        change = _change_of(member)
        if change is not None and change.outpoint in book.spent:
            # A later proposal spends the change of this peg-out (or of one it bumped): the
            # chain says that one was mined, or a replacement would orphan that proposal.
            return (f"peg-out {member.txid[::-1].hex()}'s change is spent by a later "
                    f"proposal: {txid} cannot be replaced")
    return None


def bump_candidates(book: PegOutBook, height: int, bump_after: int
                    ) -> tuple[ProposalRecord, ...]:
    """The peg-outs block ``height`` may replace with a fee bump, as far as the chain says
    (oldest first); the producer bumps one only when Bitcoin has not mined it either."""
    newest: dict[tuple[OutPoint, ...], ProposalRecord] = {}
    mined: set[tuple[OutPoint, ...]] = set()
    for record in sorted(book.proposals.values(), key=lambda r: (r.height, r.txid)):
        key = _inputs_of(record)
        newest[key] = record
        if record.confirmations or record.state is PegOutState.CONFIRMED:
            mined.add(key)  # this node saw one of the group mined: nothing to bump
    return tuple(r for key, r in newest.items()
                 if key not in mined and r.state is not PegOutState.REPLACED
                 and _bump_problem(book, r, height, bump_after) is None)


def _requests_of(book: PegOutBook, record: ProposalRecord) -> list[PegOutRequest]:
    return [book.requests[rid].request for rid in record.requests]


def make_bump(book: PegOutBook, record: ProposalRecord, federation: Federation,
              fee_rate: int) -> PegOutProposal | str:
    """The fee bump of ``record`` at ``fee_rate`` sat/kvB or the least higher rate Bitcoin
    accepts as a replacement (:func:`node.workflows.pegout.bump`); a string says why none."""
    try:
        return rules.bump(_proposal_of(record), _requests_of(book, record), federation,
                          fee_rate)
    except rules.PegOutError as exc:
        return f"peg-out {record.txid[::-1].hex()} cannot be bumped: {exc}"


def unsettled_coins(book: PegOutBook) -> tuple[FederationUtxo, ...]:
    """The change outputs of peg-outs that have fee bumps: only the one Bitcoin mines will
    exist, so none is in the coins; a producer spends one Bitcoin shows confirmed."""
    groups: dict[tuple[OutPoint, ...], int] = {}
    for record in book.proposals.values():
        groups[_inputs_of(record)] = groups.get(_inputs_of(record), 0) + 1
    found = []
    for record in book.proposals.values():
        if groups[_inputs_of(record)] < 2 or record.state is PegOutState.REPLACED:
            continue
        change = _change_of(record)
        if change is not None and change.outpoint not in book.spent \
                and change.outpoint not in book.utxos:
            found.append(change)
    return tuple(sorted(found, key=lambda u: (u.outpoint.txid, u.outpoint.vout)))


def settle(book: PegOutBook, txid: bytes) -> tuple[PegOutBook, BookChange]:
    """Proposal ``txid`` is confirmed: every other proposal spending its inputs (its fee
    bumps, or the peg-out it bumped) is ``replaced`` (Bitcoin can never mine it now), and
    their requests point to ``txid``. Nothing changes when there is nothing to settle."""
    record = book.proposals.get(txid)
    if record is None or record.state is not PegOutState.CONFIRMED:
        return book, BookChange()
    proposals = dict(book.proposals)
    changed: list[ProposalRecord] = []
    for other in _group(book, _inputs_of(record)):
        if other.txid != txid and other.state is not PegOutState.REPLACED:
            proposals[other.txid] = attrs.evolve(other, state=PegOutState.REPLACED)
            changed.append(proposals[other.txid])
    requests = dict(book.requests)
    repointed: list[PegOutRecord] = []
    for rid in record.requests:
        request = requests.get(rid)
        if request is not None and request.proposal != txid:
            requests[rid] = attrs.evolve(request, proposal=txid)
            repointed.append(requests[rid])
    if not changed and not repointed:
        return book, BookChange()
    return (attrs.evolve(book, proposals=proposals, requests=requests),
            BookChange(requests=tuple(repointed), proposals=tuple(changed)))


def group_mined(book: PegOutBook, txid: bytes) -> bool:
    """Whether this node saw a peg-out spending the same coins as proposal ``txid`` (itself
    included) in a block: then none of the others is sent to Bitcoin again, as it could
    replace the mined one after a short Bitcoin reorg."""
    record = book.proposals.get(txid)
    return record is not None and any(
        m.confirmations or m.state is PegOutState.CONFIRMED
        for m in _group(book, _inputs_of(record)))


def settle_group(book: PegOutBook, txid: bytes) -> tuple[PegOutBook, BookChange]:
    """:func:`settle` the group of proposal ``txid`` if a member of it is confirmed already
    (a fee bump a block carried after Bitcoin mined the peg-out it bumps: it is
    ``replaced`` at once and the requests stay with the mined one)."""
    record = book.proposals.get(txid)
    if record is None:
        return book, BookChange()
    for member in _group(book, _inputs_of(record)):
        if member.state is PegOutState.CONFIRMED:
            return settle(book, member.txid)
    return book, BookChange()


def _check_bump(book: PegOutBook, tx: Transaction, target: ProposalRecord,
                federation: Federation, max_fee_rate: int, bump_after: int) -> None:
    problem = _bump_problem(book, target, book.height + 1, bump_after)
    if problem is not None:
        raise PegOutBlockError(f"the proposal is a fee bump, but {problem}")
    try:
        replacement = PegOutProposal(tx, target.spent)
        rules.check_bump(replacement, _proposal_of(target), _requests_of(book, target),
                         federation, max_fee_rate=max_fee_rate)
    except (rules.PegOutError, ValueError, TypeError) as exc:
        raise PegOutBlockError(f"the fee bump of {target.txid[::-1].hex()}: {exc}") from None


def _interpret(book: PegOutBook, tx: Transaction, federation: Federation,
               fetched: Iterable[FederationUtxo]
               ) -> tuple[PegOutProposal, tuple[PegOutRecord, ...]]:
    """The proposal ``tx`` as the book reads it: the coins it spends and the requests it
    pays (no policy checked: see :func:`check_block`)."""
    outputs = tx.outputs
    if not outputs:
        raise PegOutBlockError("the proposal has no outputs")
    payments = len(outputs) - (outputs[-1].script_pubkey == federation.script_pubkey)
    pending = open_requests(book)
    if payments < 1 or payments > len(pending):
        raise PegOutBlockError(f"the proposal pays {payments} requests; {len(pending)} are "
                               "open")
    known = _spendable(book, fetched)
    spent = []
    for i, txin in enumerate(tx.inputs):
        if txin.prevout in book.spent:
            raise PegOutBlockError(f"input {i} spends {txin.prevout.txid[::-1].hex()}:"
                                   f"{txin.prevout.vout}, which an earlier proposal spent")
        utxo = known.get(txin.prevout)
        if utxo is None:
            raise PegOutBlockError(f"input {i} spends {txin.prevout.txid[::-1].hex()}:"
                                   f"{txin.prevout.vout}, not a coin of the federation",
                                   txin.prevout)
        spent.append(utxo)
    try:
        proposal = PegOutProposal(tx, tuple(spent))
    except (ValueError, TypeError) as exc:
        raise PegOutBlockError(f"the proposal does not fit its inputs: {exc}") from None
    return proposal, pending[:payments]


def check_block(book: PegOutBook, federation: Federation, *, proposal: bytes | None,
                finalized: Sequence[bytes], auxpow: bool, max_fee_rate: int,
                fetched: Iterable[FederationUtxo] = (),
                bump_after: int = DEFAULT_BUMP_AFTER) -> None:
    """Refuse (:class:`PegOutBlockError`) a block whose peg-out fields are wrong, given the
    book as of its parent: the proposal must be exactly a valid payment of the oldest open
    requests (:func:`node.workflows.pegout.check_proposal`, at most ``max_fee_rate``
    sat/kvB) or a valid fee bump of a peg-out (see the module docstring; ``bump_after``
    blocks after its signed form was carried), the finalized peg-outs only in an AuxPoW
    block, each once, each the valid signed form of a proposal still waiting for one
    (:func:`check_finalized`)."""
    if proposal is not None:
        tx = _parse(proposal, "the peg-out proposal")
        if tx.to_bytes() != proposal:
            raise PegOutBlockError("the peg-out proposal is not in its canonical encoding")
        if tx.txid() in book.proposals:
            raise PegOutBlockError(f"proposal {tx.txid()[::-1].hex()} was proposed already")
        target = replaced_by(book, tx) if tx.inputs and tx.inputs[0].prevout in book.spent \
            else None
        if target is not None:
            _check_bump(book, tx, target, federation, max_fee_rate, bump_after)
        else:
            parsed, records = _interpret(book, tx, federation, fetched)
            try:
                rules.check_proposal(parsed, [r.request for r in records],
                                     _spendable(book, fetched).values(), federation,
                                     max_fee_rate=max_fee_rate)
            except rules.PegOutError as exc:
                raise PegOutBlockError(str(exc)) from None
    if finalized and not auxpow:
        raise PegOutBlockError("finalized peg-outs in a block without AuxPoW (they go in the "
                               "next AuxPoW block)")
    seen: set[bytes] = set()
    for i, raw in enumerate(finalized):
        tx = _parse(raw, f"finalized peg-out {i}")
        txid = tx.txid()
        if txid in seen:
            raise PegOutBlockError(f"finalized peg-out {i} ({txid[::-1].hex()}) appears twice")
        seen.add(txid)
        record = book.proposals.get(txid)
        if record is None:
            raise PegOutBlockError(f"finalized peg-out {i} ({txid[::-1].hex()}) is no "
                                   "proposal's")
        if record.included_height is not None:
            raise PegOutBlockError(f"finalized peg-out {i} ({txid[::-1].hex()}) was carried "
                                   f"already, by block #{record.included_height}")
        try:
            check_finalized(record, tx, federation)
        except PegOutBlockError as exc:
            raise PegOutBlockError(f"finalized peg-out {i}: {exc.reason}") from None


def _proposal_of(record: ProposalRecord) -> PegOutProposal:
    return PegOutProposal(Transaction.from_bytes(record.transaction), record.spent)


def check_finalized(record: ProposalRecord, tx: Transaction, federation: Federation
                    ) -> tuple[int, ...]:
    """The members whose signatures make ``tx`` the signed form of ``record``'s proposal:
    the same transaction (txid) with, in every input, a witness of exactly ``k`` valid
    BIP340 signatures in the script's order, the federation's script and control block,
    and the same signers throughout. Raises :class:`PegOutBlockError` otherwise."""
    proposal = _proposal_of(record)
    if tx.txid() != proposal.txid:
        raise PegOutBlockError(f"{tx.txid()[::-1].hex()} is not proposal "
                               f"{proposal.txid[::-1].hex()}")
    n, k = len(federation.keys), federation.threshold
    digests = rules.signing_hashes(proposal, federation)
    signers: tuple[int, ...] | None = None
    by_member: dict[int, list[bytes]] = {}
    for i, txin in enumerate(tx.inputs):
        witness = txin.witness
        if len(witness) != n + 2:
            raise PegOutBlockError(f"input {i}: {len(witness)} witness elements, not {n + 2}")
        if witness[n] != federation.script or witness[n + 1] != federation.control_block:
            raise PegOutBlockError(f"input {i}: the witness does not end with the "
                                   "federation's script and control block")
        signed_by = {n - 1 - j: sig for j, sig in enumerate(witness[:n]) if sig}
        if len(signed_by) != k:
            raise PegOutBlockError(f"input {i}: {len(signed_by)} signatures, exactly {k} "
                                   "needed")
        members = tuple(sorted(signed_by))
        if signers is not None and members != signers:
            raise PegOutBlockError(f"input {i} is signed by members {members}, input 0 by "
                                   f"{signers}")
        signers = members
        for member, sig in signed_by.items():
            by_member.setdefault(member, []).append(sig)
    assert signers is not None  # a proposal has inputs
    for member in signers:
        try:
            sets = PegOutSignatures(proposal.txid, member, federation.keys[member],
                                    tuple(by_member[member]))
            rules.verify_signatures(proposal, federation, sets, sighashes=digests)
        except (rules.PegOutError, ValueError) as exc:
            raise PegOutBlockError(f"member {member}'s signatures: {exc}") from None
    return signers


# ---------------------------------------------------------------------------------- applying


def _records(screening: PegOutScreening, height: int, federation: Federation,
             book: PegOutBook) -> tuple[list[PegOutRecord], list[RefusedPegOutRecord]]:
    fresh: list[PegOutRecord] = []
    refused: list[RefusedPegOutRecord] = []
    for position, payment in enumerate(screening.payments):
        event = payment.request
        rid = (event.tx_hash, event.log_index)
        if rid in book.requests or rid in book.refused:
            continue
        if payment.script_pubkey == federation.script_pubkey:
            refused.append(RefusedPegOutRecord(
                event.tx_hash, event.log_index, height, event.value_sats,
                "the address is the federation's own: it is no withdrawal"))
            continue
        fresh.append(PegOutRecord(payment.to_request(), event.evm_address, payment.address,
                                  height, position))
    for item in screening.refused:
        event = item.request
        rid = (event.tx_hash, event.log_index)
        if rid in book.requests or rid in book.refused:
            continue
        refused.append(RefusedPegOutRecord(event.tx_hash, event.log_index, height,
                                           min(event.value_sats, (1 << 64) - 1),
                                           f"{item.reason.value}: {item.detail}"[:1000]))
    return fresh, refused


def apply_block(book: PegOutBook, block: BlockPegOuts, federation: Federation
                ) -> tuple[PegOutBook, BookChange]:
    """The book after ``block`` (which the chain accepted: its proposal and finalized
    peg-outs were checked by :func:`check_block` on import), and the records that changed.
    Applying a block at or below the book's height changes nothing (a replay)."""
    if block.height <= book.height:
        return book, BookChange()
    requests = dict(book.requests)
    refused = dict(book.refused)
    proposals = dict(book.proposals)
    utxos = dict(book.utxos)
    spent = set(book.spent)
    changed_requests: dict[RequestId, PegOutRecord] = {}
    changed_proposals: dict[bytes, ProposalRecord] = {}
    added: dict[OutPoint, FederationUtxo] = {}
    removed: list[OutPoint] = []
    dropped: list[OutPoint] = []

    tx = None if block.proposal is None else _parse(block.proposal, "the peg-out proposal")
    target = None if tx is None or not tx.inputs or tx.inputs[0].prevout not in spent \
        else replaced_by(book, tx)
    if tx is not None and target is not None:
        # A fee bump: it takes over the requests; the replaced change leaves the coins
        # (only the change of the one Bitcoin mines will exist: see unsettled_coins).
        txid = tx.txid()
        for rid in target.requests:
            updated = attrs.evolve(requests[rid], proposal=txid)
            requests[rid] = changed_requests[rid] = updated
        old_change = _change_of(target)
        if old_change is not None and old_change.outpoint in utxos:
            utxos.pop(old_change.outpoint)
            dropped.append(old_change.outpoint)
        proposals[txid] = changed_proposals[txid] = ProposalRecord(
            txid, tx.to_bytes(), target.spent, target.requests, block.height)
    elif tx is not None:
        assert block.proposal is not None
        parsed, paid = _interpret(book, tx, federation, block.fetched)
        txid = parsed.txid
        for record in paid:
            updated = attrs.evolve(record, proposal=txid)
            requests[record.id] = changed_requests[record.id] = updated
        for utxo in parsed.spent:
            utxos.pop(utxo.outpoint, None)
            added.pop(utxo.outpoint, None)
            spent.add(utxo.outpoint)
            removed.append(utxo.outpoint)
        if len(tx.outputs) > len(paid):
            change = FederationUtxo(OutPoint(txid, len(tx.outputs) - 1),
                                    tx.outputs[-1].value, tx.outputs[-1].script_pubkey)
            utxos[change.outpoint] = added[change.outpoint] = change
        proposals[txid] = changed_proposals[txid] = ProposalRecord(
            txid, block.proposal, parsed.spent, tuple(r.id for r in paid), block.height)

    for raw in block.finalized:
        tx = _parse(raw, "a finalized peg-out")
        carried = proposals.get(tx.txid())
        if carried is None:
            raise PegOutBlockError(f"finalized peg-out {tx.txid()[::-1].hex()} is no "
                                   "proposal's")
        state = carried.state if carried.state in (
            PegOutState.BROADCAST, PegOutState.CONFIRMED, PegOutState.REPLACED) \
            else PegOutState.SIGNED
        proposals[carried.txid] = changed_proposals[carried.txid] = attrs.evolve(
            carried, signed=raw, included_height=block.height, state=state)

    for utxo in block.pegins:
        if utxo.outpoint not in spent and utxo.outpoint not in utxos:
            utxos[utxo.outpoint] = added[utxo.outpoint] = utxo

    fresh, refusals = _records(block.screening, block.height, federation, book)
    for record in fresh:
        requests[record.id] = changed_requests[record.id] = record
    for refusal in refusals:
        refused[(refusal.evm_tx_hash, refusal.log_index)] = refusal

    new = PegOutBook(block.height, block.block_hash, requests, refused, proposals, utxos,
                     frozenset(spent))
    return new, BookChange(tuple(changed_requests.values()), tuple(refusals),
                           tuple(changed_proposals.values()), tuple(added.values()),
                           tuple(removed), tuple(dropped))


def _with_proposal(book: PegOutBook, record: ProposalRecord) -> PegOutBook:
    proposals = dict(book.proposals)
    proposals[record.txid] = record
    return attrs.evolve(book, proposals=proposals)


def mark_signed(book: PegOutBook, txid: bytes, signed: bytes
                ) -> tuple[PegOutBook, ProposalRecord | None]:
    """Proposal ``txid`` finalized on this node (``signed``: its signed form); None when it
    has a signed form already or was ``replaced`` (Bitcoin mined another of its group)."""
    record = book.proposals.get(txid)
    if record is None or record.signed is not None or record.state is PegOutState.REPLACED:
        return book, None
    record = attrs.evolve(record, signed=signed, state=PegOutState.SIGNED)
    return _with_proposal(book, record), record


def mark_broadcast(book: PegOutBook, txid: bytes) -> tuple[PegOutBook, ProposalRecord | None]:
    """Bitcoin took proposal ``txid``'s signed form (carried by a block): ``broadcast``;
    None when nothing changes."""
    record = book.proposals.get(txid)
    if record is None or record.state is not PegOutState.SIGNED \
            or record.included_height is None:
        return book, None
    record = attrs.evolve(record, state=PegOutState.BROADCAST)
    return _with_proposal(book, record), record


def observe_confirmations(book: PegOutBook, txid: bytes, confirmations: int, required: int
                          ) -> tuple[PegOutBook, ProposalRecord | None]:
    """Bitcoin shows proposal ``txid`` with ``confirmations``: recorded, and ``confirmed``
    at ``required``; None when nothing changes (a confirmed one stays confirmed)."""
    record = book.proposals.get(txid)
    if record is None or record.state is not PegOutState.BROADCAST \
            or confirmations == record.confirmations:
        return book, None
    state = PegOutState.CONFIRMED if confirmations >= required else PegOutState.BROADCAST
    record = attrs.evolve(record, confirmations=max(confirmations, 0), state=state)
    return _with_proposal(book, record), record


# ---------------------------------------------------------------------------------- signing


def to_sign(book: PegOutBook) -> tuple[PegOutProposal, ...]:
    """The proposals members sign when PoW is queued: those no signed form exists for yet
    (and that Bitcoin has not made moot by confirming a conflicting one), oldest first."""
    return tuple(_proposal_of(r) for r in sorted(book.proposals.values(),
                                                  key=lambda r: (r.height, r.txid))
                 if r.signed is None and r.state is not PegOutState.REPLACED)


#: Signature sets held per proposal txid, by member, until ``k`` valid ones finalize it.
SignaturePool = Mapping[bytes, Mapping[int, PegOutSignatures]]


def collect(book: PegOutBook, pool: SignaturePool, federation: Federation,
            signatures: PegOutSignatures
            ) -> tuple[SignaturePool, bytes | None]:
    """Take one member's signature set: checked against the proposal it names (raises
    :class:`~node.workflows.pegout.InvalidSignatures`, or :class:`PegOutBlockError` for a
    proposal this node does not know or has signed already — not the sender's fault), kept,
    and once ``k`` valid sets are held, the signed transaction (else None)."""
    record = book.proposals.get(signatures.txid)
    if record is None:
        raise PegOutBlockError(f"signatures for {signatures.txid[::-1].hex()}, which is no "
                               "proposal this node knows")
    if record.signed is not None:
        raise PegOutBlockError(f"proposal {signatures.txid[::-1].hex()} is signed already")
    if record.state is PegOutState.REPLACED:
        raise PegOutBlockError(f"proposal {signatures.txid[::-1].hex()} was replaced: Bitcoin "
                               "mined another peg-out of the same coins")
    proposal = _proposal_of(record)
    rules.verify_signatures(proposal, federation, signatures)
    held = dict(pool.get(signatures.txid, {}))
    held[signatures.member] = signatures
    new_pool = dict(pool)
    new_pool[signatures.txid] = held
    if len(held) < federation.threshold:
        return new_pool, None
    finalized = rules.finalize(proposal, federation, held)
    new_pool.pop(signatures.txid)
    return new_pool, finalized.transaction.to_bytes()


def encode_signatures(signatures: PegOutSignatures) -> bytes:
    """A signature set on the wire (gossip topic ``pegout_signatures``): txid (32), member
    (u8), key (32), count (u16, big-endian), then the 64-byte signatures."""
    return _SIGNATURES_HEADER.pack(signatures.txid, signatures.member, signatures.key,
                                   len(signatures.signatures)) + b"".join(signatures.signatures)


def decode_signatures(data: bytes) -> PegOutSignatures:
    """The inverse of :func:`encode_signatures`; ``ValueError`` saying what is wrong."""
    if type(data) is not bytes:
        raise ValueError(f"peg-out signatures are bytes, got {type(data).__name__}")
    if len(data) < _SIGNATURES_HEADER.size:
        raise ValueError(f"peg-out signatures: {len(data)} bytes, shorter than the "
                         f"{_SIGNATURES_HEADER.size}-byte header")
    txid, member, key, count = _SIGNATURES_HEADER.unpack_from(data)
    body = data[_SIGNATURES_HEADER.size:]
    if len(body) != 64 * count:
        raise ValueError(f"peg-out signatures: {count} signatures need {64 * count} bytes, "
                         f"{len(body)} follow the header")
    return PegOutSignatures(txid, member, key,
                            tuple(body[i:i + 64] for i in range(0, len(body), 64)))


def pegin_utxo(txid: bytes, tx: Transaction, federation: Federation) -> FederationUtxo | None:
    """The federation's coin in a peg-in ``tx``: its first output paying the federation
    (the output the peg-in rules credit)."""
    for index, output in enumerate(tx.outputs):
        if output.script_pubkey == federation.script_pubkey and output.value > 0:
            return FederationUtxo(OutPoint(txid, index), output.value, output.script_pubkey)
    return None


def fetched_utxo(outpoint: OutPoint, output: TxOut, federation: Federation
                 ) -> FederationUtxo | None:
    """A coin fetched from Bitcoin for a proposal's input: only one paying the federation."""
    if output.script_pubkey != federation.script_pubkey or output.value <= 0:
        return None
    return FederationUtxo(outpoint, output.value, output.script_pubkey)
