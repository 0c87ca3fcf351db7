"""Votes before approvals: prevotes and precommits with locks (Tendermint-style), so that a
split of authorities heals instead of deadlocking — as plain rules over frozen values.

The approval (a BLS signature over the block hash, aggregated into the stored block; a
block is imported at ``q = (2n + 2) // 3`` of them) stays exactly as it was. What changes
is *when an authority approves*: only a block that its authorities **decided** in rounds of
votes at that height. A round is a slot number; at each height an authority keeps a
:class:`~node.types.chain.VoteLock` (persisted, synced, before any vote leaves the node).

* **Prevote** (once per round ``r``, ``r`` the current slot, ``r > prevoted_round``): the
  locked block if locked, else the block of slot ``r`` (its author's block on this node's
  head, valid here) once it arrives. The author of slot ``r``, if locked, builds nothing
  new: it gossips its locked block again and prevotes it, and that prevote makes the block
  round ``r``'s proposal for the unlocked (:func:`round_proposal`).
* **Polka**: ``q`` prevotes for one block ``X`` in one round ``r`` (signatures checked, one
  per authority per round; a second, different vote of an authority in one round is
  equivocation: dropped and reported). Seen at any time with ``r > locked_round``: lock
  ``(X, r)``.
* **Precommit** ``X`` at ``r``: on a polka for ``X`` at ``r`` seen while the authority has
  not prevoted in a later round (``r >= prevoted_round``), once per round.
* **Decision**: ``q`` precommits for ``X`` in one round. Every authority that sees it (and
  holds ``X``, valid) approves ``X``; approvals gather as before and ``X`` is imported.

Why the round-bound precommit, and not an approval straight at the polka (the first design)?
An approval carries no round, so approvals given in different rounds add up. An honest
authority may see a polka for ``X`` (round 1), approve, then see a polka for ``Y`` at a
higher round and approve that too; with delays chosen by the network, four honest
authorities can give ``X`` approvals in rounds 1, 3, 5 and ``Y`` in rounds 2, 4, 6 (each
approver relocking on the newest polka it saw) and both reach 3 of 4. Precommits are bound
to their round and a decision needs ``q`` of them *in one round*; approvals follow decisions
only, and decisions are unique:

**Safety.** Any two sets of ``q`` authorities share ``2q - n >= f + 1`` (``f = (n-1)//3``),
so at least one honest authority, which votes once per round. (1) Two polkas in one round
are for one block. (2) Say ``X`` is decided in round ``r``: ``q`` precommits, so a set ``L``
of at least ``q - f`` honest authorities precommitted ``X`` in ``r``; each locked ``(X, r)``
at that moment, *before* prevoting in any round after ``r`` (a precommit is only given while
``r >= prevoted_round``). Take the first round ``r' > r`` with a polka for some ``Y != X``.
A member of ``L`` relocks only on a polka of a round above its lock round (``>= r``), and
between ``r`` and ``r'`` there are polkas only for ``X``: so in ``r'`` it is still locked
on ``X`` and prevotes ``X``. The polka for ``Y`` needs ``q - f`` honest prevotes, from
outside ``L``: ``(q - f) + (q - f) <= n - f`` honest authorities, i.e. ``2q - n <= f``,
impossible. So every polka after ``r`` is for ``X``, every precommit after ``r`` is for
``X`` (a precommit needs a polka), and by (1) no other block has a polka in ``r``: no block
but ``X`` is decided in any round ``>= r``; and symmetrically a decision in an earlier round
would have excluded ``X``. Decisions are unique. (3) An honest authority approves only the
decided block, its producer's own signature aside (the producer signs the block it
proposes, as before): a block not decided has at most its author's approval and those of
``f`` byzantine authorities, ``1 + f < q`` for every ``n >= 2``. So two different blocks at
one height never both reach ``q`` approvals while at most ``f`` authorities equivocate.
A crash changes none of this: the lock and the rounds voted in are written, synced, before
a vote leaves; approvals need no record (an authority only ever approves the one decided
block).

**Liveness (a split heals).** Votes are gossiped and each node gossips again, every slot,
the votes it holds for its current height (bounded), so once the network delivers, every
node sees every polka. An authority's lock only moves up to higher polka rounds, so all
honest authorities end up locked on the block of the highest polka (or all unlocked if there
was none). Then in the next slot they all prevote the same block — the locked one, or the
slot's fresh block (a locked author re-proposes its locked block) — a polka forms within the
slot (latency far below a slot), every honest authority precommits it in that round, it is
decided, every honest authority approves it (``n - f >= q``) and it is imported. A slot
whose author is down is simply a round without a proposal for the unlocked.

"Every node sees every polka" does not hold everywhere, though: a node's NetworkActor
forwards each gossip message once and drops it when it comes again, so an authority whose
ChainActor restarted (its held votes and blocks gone, its network's memory of them not) or
that was behind when the votes went round is never given them again, however often its
peers gossip them. It stays unlocked while the others stay locked, and with too few
unlocked left no block reaches ``q`` prevotes. Two rules close that gap: a locked author's
prevote in its own round is its proposal of that round (:func:`round_proposal`, Tendermint's
re-proposal of a locked value), which the unlocked prevote if they hold the block; and the
ChainActor keeps the block it prevotes aside in storage, so that it holds it again after a
restart.

With a single authority there are no votes (its own block is imported at once).

**Checking signatures together.** A vote counts only once its signature is checked, but the
check waits until it can matter: the votes received for one block in one kind and round
wait, unchecked, until with those already checked they could make ``q``, and are then
checked in one batch (one message: two Miller loops for all, with random coefficients so
that bad signatures cannot cancel out; each alone if the batch fails, so every bad one is
found and its sender reported). Waiting changes no rule above: a vote not checked yet is a
vote not received yet, and none of them can make a polka or decision before its batch is
checked. The rest (votes of blocks short of ``q`` here) are checked by
:func:`verify_pending`, which the ChainActor calls a moment after a vote began to wait
(``VOTE_CHECK_WAIT``, 200 ms) and each slot before it gossips its votes again. A vote is
passed on to peers only once checked: a node never relays a bad vote, at the price of
passing on later (by at most that moment) the votes it does not hold a quorum with. In a
four-authority network this halves the pairing checks spent on votes.

Bounds: votes of at most :data:`MAX_ROUNDS` rounds per height (the oldest round goes), at
most one checked vote per authority per kind and round (a second is equivocation) and one
waiting; votes for a round more than one slot ahead are refused; everything goes when the
head moves.
"""

from __future__ import annotations

import hashlib
from collections.abc import Container, Iterable, Sequence
from typing import Final

import attrs

from node.crypto import batch, bls
from node.types.chain import PRECOMMIT, PREVOTE, Vote, VoteLock
from node.workflows.chain import required_approvals

__all__ = [
    "MAX_ROUNDS",
    "Added",
    "Intent",
    "Pending",
    "VoteError",
    "Votes",
    "add_vote",
    "decided",
    "polka",
    "round_proposal",
    "sign_vote",
    "step",
    "verify_pending",
    "vote_digest",
]

#: Rounds whose votes are held per height, at most (the oldest goes first).
MAX_ROUNDS: Final = 16
#: The domain of a vote's digest (no other signature of the node signs these bytes).
DOMAIN: Final = b"alys/vote/v1\x00"


class VoteError(ValueError):
    """A vote that is not acceptable: ``what`` says which part and why."""

    def __init__(self, what: str, problem: str) -> None:
        super().__init__(f"{what}: {problem}")
        self.what, self.problem = what, problem


def vote_digest(chain_id: int, kind: int, height: int, round_: int, block_hash: bytes) -> bytes:
    """SHA-256 of the domain, the chain id, the kind, height, round (8 bytes each, big
    endian) and the block hash: what a vote's signature signs."""
    if kind not in (PREVOTE, PRECOMMIT):
        raise VoteError("kind", f"not a vote kind: {kind!r}")
    for name, value in (("chain id", chain_id), ("height", height), ("round", round_)):
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 1 << 64:
            raise VoteError(name, f"must be an integer in 0..2**64-1, not {value!r:.40}")
    if not isinstance(block_hash, bytes) or len(block_hash) != 32:
        raise VoteError("block hash", "must be 32 bytes")
    return hashlib.sha256(DOMAIN + chain_id.to_bytes(8, "big") + bytes([kind])
                          + height.to_bytes(8, "big") + round_.to_bytes(8, "big")
                          + block_hash).digest()


def sign_vote(key: bls.SecretKey, index: int, chain_id: int, kind: int, height: int,
              round_: int, block_hash: bytes) -> Vote:
    digest = vote_digest(chain_id, kind, height, round_, block_hash)
    return Vote(kind, height, round_, block_hash, index, bls.sign(key, digest).to_bytes())


@attrs.frozen
class Intent:
    """A vote the rules want this authority to cast (the lock already records it)."""

    kind: int
    round: int
    block_hash: bytes


@attrs.frozen
class Pending:
    """A vote whose signature is not checked yet, and the peer it came from."""

    vote: Vote
    source: str


@attrs.frozen
class Votes:
    """The votes at ``lock.height`` (the height above the head ``head``) and this
    authority's lock."""

    head: bytes
    lock: VoteLock
    #: Verified votes, one per (kind, round, authority), of at most MAX_ROUNDS rounds.
    held: tuple[Vote, ...] = ()
    #: Votes received whose signatures are not checked yet (they count for nothing until
    #: they are: see :func:`add_vote`), at most one per (kind, round, authority) and of the
    #: same MAX_ROUNDS rounds as ``held``.
    unverified: tuple[Pending, ...] = ()
    #: The decided block at this height, once seen.
    decision: bytes | None = None

    @property
    def height(self) -> int:
        return self.lock.height


def for_head(votes: Votes | None, head: bytes, height: int,
             stored: VoteLock | None = None) -> Votes:
    """The votes for a node whose head is ``head`` at ``height - 1``: the same if it did not
    move, else none (with the stored lock if it is for ``height``)."""
    if votes is not None and votes.head == head and votes.height == height:
        return votes
    lock = stored if stored is not None and stored.height == height else VoteLock(height)
    return Votes(head, lock)


def _rounds(held: Iterable[Vote]) -> list[int]:
    return sorted({v.round for v in held})


def _slot(vote: Vote) -> tuple[int, int, int]:
    """What an authority votes once: one kind, one round."""
    return vote.kind, vote.round, vote.authority_index


def _group(vote: Vote) -> tuple[int, int, bytes]:
    """The votes that count together (and share one digest): one kind, round and block."""
    return vote.kind, vote.round, vote.block_hash


@attrs.frozen
class Added:
    """What :func:`add_vote` or :func:`verify_pending` did."""

    votes: Votes
    #: A second, different vote of one authority in one kind and round, described (the
    #: second vote is dropped; both signatures were checked).
    equivocation: str | None = None
    #: Votes whose signatures were checked just now and that are held from now on, with
    #: the peer each came from: the ones to pass on (an own vote is not among them).
    checked: tuple[Pending, ...] = ()
    #: Votes whose signatures do not verify, with the peer each came from and why: the
    #: peers to report (the votes are dropped).
    bad: tuple[tuple[Pending, str], ...] = ()

    def then(self, later: Added) -> Added:
        """This, followed by ``later`` (which started from this one's votes)."""
        return Added(later.votes, later.equivocation or self.equivocation,
                     self.checked + later.checked, self.bad + later.bad)


def add_vote(votes: Votes, vote: Vote, authorities: Sequence[bls.PublicKey], chain_id: int,
             now_round: int, *, own: bool = False, source: str = "") -> Added:
    """Take ``vote`` (from the peer ``source``). Its signature is checked before the vote
    counts, and as late as possible, so that the votes for one block in one round are
    checked together (:func:`node.crypto.batch.verify_one_message`: two Miller loops for
    all of them, against two each): the vote waits, unchecked and uncounted, in
    ``unverified`` until the votes held and waiting for its block in its round reach ``q``,
    and then they are all checked at once (each alone if that fails, so that every bad one
    is found and its sender reported). Votes that do not reach ``q`` are checked by
    :func:`verify_pending` (the ChainActor calls it a moment after a vote began to wait):
    a vote is passed on only once checked, so never a bad one.

    A second vote of one authority in one kind and round settles the first at once: if the
    two name different blocks and both verify, that is equivocation (described in the
    result; the second vote is dropped). A duplicate changes nothing, nor does a vote for a
    block that already has ``q`` checked votes of its kind in its round (it could change no
    polka or decision: it is dropped unverified, which saves a pairing check per late vote).
    A vote whose signature does not verify, whenever that is found, is in the result's
    ``bad`` with the peer it came from. Raises VoteError for a vote of another height, of a
    round more than one slot ahead of ``now_round`` or of no authority. ``own``: this node
    signed the vote just now, so it is held unchecked."""
    if not isinstance(vote, Vote):
        raise VoteError("vote", f"not a vote: {type(vote).__name__}")
    if vote.height != votes.height:
        raise VoteError("height", f"vote for #{vote.height}, this node votes at "
                        f"#{votes.height}")
    if vote.round > now_round + 1:
        raise VoteError("round", f"round {vote.round} is ahead of slot {now_round}")
    if not 0 <= vote.authority_index < len(authorities):
        raise VoteError("authority", f"no authority {vote.authority_index}")
    slot = _slot(vote)
    for other in votes.held:
        if _slot(other) == slot:
            if other.block_hash == vote.block_hash:
                return Added(votes)
            problem = _signature_problem(vote, authorities, chain_id)
            if problem is not None:
                return Added(votes, bad=((Pending(vote, source), problem),))
            kind = "prevote" if vote.kind == PREVOTE else "precommit"
            return Added(votes, (f"authority {vote.authority_index} sent two {kind}s in round "
                                 f"{vote.round} at #{vote.height}: {other.block_hash.hex()[:16]} "
                                 f"and {vote.block_hash.hex()[:16]}"))
    for waiting in votes.unverified:
        if _slot(waiting.vote) == slot:
            if waiting.vote == vote:
                return Added(votes)
            # Two votes of one authority in one kind and round (another block, or the same
            # with other signature bytes: at most one of those verifies): settle the first
            # now, then take this one against the outcome.
            first = _settle(votes, [waiting], authorities, chain_id)
            return first.then(add_vote(first.votes, vote, authorities, chain_id, now_round,
                                       own=own, source=source))
    rounds = _rounds((*votes.held, *(w.vote for w in votes.unverified)))
    if len(rounds) >= MAX_ROUNDS and vote.round < rounds[0]:
        return Added(votes)  # older than every round held: of no use any more
    group = _group(vote)
    needed = required_approvals(len(authorities))
    if sum(1 for v in votes.held if _group(v) == group) >= needed:
        return Added(votes)  # its quorum is held already
    if own:
        votes = _bounded(attrs.evolve(votes, held=(*votes.held, vote)))
    else:
        votes = _bounded(attrs.evolve(
            votes, unverified=(*votes.unverified, Pending(vote, source))))
    same = [w for w in votes.unverified if _group(w.vote) == group]
    if same and len(same) + sum(1 for v in votes.held if _group(v) == group) >= needed:
        return _settle(votes, same, authorities, chain_id)
    return Added(votes)


def verify_pending(votes: Votes, authorities: Sequence[bls.PublicKey],
                   chain_id: int) -> Added:
    """Check every vote still waiting (those of blocks short of ``q`` votes), the votes of
    one block in one round together, so that these votes too are counted and passed on
    once found valid (the ChainActor calls it a moment after a vote began to wait, and each
    slot before it gossips its votes again)."""
    result = Added(votes)
    groups: dict[tuple[int, int, bytes], list[Pending]] = {}
    for waiting in votes.unverified:
        groups.setdefault(_group(waiting.vote), []).append(waiting)
    for members in groups.values():
        result = result.then(_settle(result.votes, members, authorities, chain_id))
    return result


def _bounded(votes: Votes) -> Votes:
    """At most :data:`MAX_ROUNDS` rounds, held and waiting together: the oldest goes."""
    rounds = _rounds((*votes.held, *(w.vote for w in votes.unverified)))
    if len(rounds) <= MAX_ROUNDS:
        return votes
    oldest = rounds[0]
    return attrs.evolve(votes, held=tuple(v for v in votes.held if v.round != oldest),
                        unverified=tuple(w for w in votes.unverified
                                         if w.vote.round != oldest))


def _settle(votes: Votes, waiting: Sequence[Pending], authorities: Sequence[bls.PublicKey],
            chain_id: int) -> Added:
    """Check ``waiting`` (votes of one block in one kind and round, from ``unverified``) at
    once: the good ones are held, the bad ones dropped and returned."""
    first = waiting[0].vote
    digest = vote_digest(chain_id, first.kind, first.height, first.round, first.block_hash)
    verdict = batch.verify_one_message([authorities[w.vote.authority_index] for w in waiting],
                                       digest, [w.vote.signature for w in waiting])
    good = tuple(w for i, w in enumerate(waiting) if i not in verdict.reasons)
    bad = tuple((waiting[i], f"signature {verdict.reasons[i]}") for i in verdict.bad)
    settled = set(waiting)
    return Added(attrs.evolve(votes,
                              held=(*votes.held, *(w.vote for w in good)),
                              unverified=tuple(w for w in votes.unverified
                                               if w not in settled)),
                 checked=good, bad=bad)


def _signature_problem(vote: Vote, authorities: Sequence[bls.PublicKey],
                       chain_id: int) -> str | None:
    """Why ``vote``'s signature is bad, or None if it verifies."""
    digest = vote_digest(chain_id, vote.kind, vote.height, vote.round, vote.block_hash)
    verdict = batch.verify_one_message([authorities[vote.authority_index]], digest,
                                       [vote.signature])
    return None if verdict.ok else f"signature {verdict.reasons[0]}"


def _quorum(votes: Votes, kind: int, round_: int, needed: int) -> bytes | None:
    counts: dict[bytes, int] = {}
    for v in votes.held:
        if v.kind == kind and v.round == round_:
            counts[v.block_hash] = counts.get(v.block_hash, 0) + 1
            if counts[v.block_hash] >= needed:
                return v.block_hash
    return None


def polka(votes: Votes, round_: int, authority_count: int) -> bytes | None:
    """The block with ``q`` prevotes in ``round_``, if any."""
    return _quorum(votes, PREVOTE, round_, required_approvals(authority_count))


def decided(votes: Votes, authority_count: int) -> bytes | None:
    """The block with ``q`` precommits in one round, if any (unique: see the docstring)."""
    if votes.decision is not None:
        return votes.decision
    needed = required_approvals(authority_count)
    for round_ in _rounds(votes.held):
        block = _quorum(votes, PRECOMMIT, round_, needed)
        if block is not None:
            return block
    return None


def round_proposal(votes: Votes, round_: int, author: int, fresh: bytes | None,
                   held: Container[bytes]) -> bytes | None:
    """The block of round ``round_`` that an unlocked authority prevotes: ``fresh`` (the
    author's block of slot ``round_``, held and valid here) if there is one, else the block
    the round's ``author`` prevoted in ``round_`` (checked), if it is in ``held``: a locked
    author builds nothing new and proposes its locked block again, and its prevote names it.

    This is Tendermint's re-proposal of a locked value, and what keeps a lock from starving:
    authorities locked on ``X`` prevote ``X`` round after round, and an authority that never
    saw their polka (its ChainActor restarted and lost the votes it held, or it was behind
    when they went round) is never sent those votes again by a network that forwards each
    message once. Without the re-proposal it prevotes only fresh blocks, which the locked
    ones never prevote, and with too few unlocked authorities left no block gets ``q``
    prevotes again at this height. With it, in the next round a locked authority authors,
    the unlocked ones prevote ``X`` too. Safety is untouched: the proof above constrains only
    what *locked* honest authorities prevote; an unlocked honest one may prevote any block
    it holds and found valid."""
    if fresh is not None:
        return fresh
    for vote in votes.held:
        if vote.kind == PREVOTE and vote.round == round_ and vote.authority_index == author \
                and vote.block_hash in held:
            return vote.block_hash
    return None


def step(votes: Votes, authority_count: int, now_round: int,
         proposal: bytes | None) -> tuple[Votes, tuple[Intent, ...]]:
    """Apply the rules to what is held: relock on the highest polka above the lock round,
    precommit a polka of a round not yet left, prevote in ``now_round`` (``proposal``: the
    hash of slot ``now_round``'s block, held and valid here, if any). Returns the new votes
    (their lock records every intent: persist it before casting them) and the votes to
    cast."""
    lock = votes.lock
    intents: list[Intent] = []
    for round_ in reversed(_rounds(votes.held)):
        if round_ <= lock.locked_round:
            break
        block = polka(votes, round_, authority_count)
        if block is not None:
            lock = attrs.evolve(lock, locked_hash=block, locked_round=round_)
            break
    if lock.locked_hash is not None and lock.locked_round >= lock.prevoted_round \
            and lock.locked_round > lock.precommitted_round:
        intents.append(Intent(PRECOMMIT, lock.locked_round, lock.locked_hash))
        lock = attrs.evolve(lock, precommitted_round=lock.locked_round)
    if now_round > lock.prevoted_round:
        choice = lock.locked_hash if lock.locked_hash is not None else proposal
        if choice is not None:
            intents.append(Intent(PREVOTE, now_round, choice))
            lock = attrs.evolve(lock, prevoted_round=now_round, prevoted_hash=choice)
    decision = decided(votes, authority_count)
    return attrs.evolve(votes, lock=lock, decision=decision), tuple(intents)


def to_regossip(votes: Votes, limit: int = 4 * 15) -> tuple[Vote, ...]:
    """The votes to gossip again this slot: those of the newest rounds held, at most
    ``limit``."""
    newest = sorted(votes.held, key=lambda v: v.round, reverse=True)
    return tuple(newest[:limit])
