"""The vote rules (node.workflows.prevotes) over random deliveries, partitions and one
equivocating authority: never two blocks decided (so never two with ceil(2n/3) approvals)
at one height, and once delivery is complete for a few rounds, a block is decided."""

from __future__ import annotations

import hashlib

import attrs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from node.crypto import bls
from node.types.chain import PRECOMMIT, PREVOTE, Vote, VoteLock
from node.workflows import prevotes
from node.workflows.chain import required_approvals

N = 4
KEYS = [bls.SecretKey.from_seed(bytes([i + 1]) * 32) for i in range(N)]
PKS = [k.public_key() for k in KEYS]
CHAIN_ID, HEIGHT, HEAD = 7, 1, bytes(32)
#: Authority 3 is byzantine: it equivocates (votes for two blocks in every round).
BYZANTINE = 3
HONEST = [i for i in range(N) if i != BYZANTINE]


def block(round_: int) -> bytes:
    """The fresh block of slot ``round_`` (its author's)."""
    return hashlib.sha256(b"block" + round_.to_bytes(8, "big")).digest()


_signed: dict[tuple[int, int, int, bytes], Vote] = {}


def signed(index: int, kind: int, round_: int, block_hash: bytes) -> Vote:
    key = (index, kind, round_, block_hash)
    if key not in _signed:  # BLS signing is slow: each vote is signed once per run
        _signed[key] = prevotes.sign_vote(KEYS[index], index, CHAIN_ID, kind, HEIGHT, round_,
                                          block_hash)
    return _signed[key]


class Network(RuleBasedStateMachine):
    """Four authorities (one byzantine), rounds advanced by a rule, every vote queued for
    every other authority and delivered in any order; a partition holds deliveries across
    it; approvals follow decisions as the ChainActor does."""

    @initialize()
    def start(self) -> None:
        self.round = 0
        self.nodes = {i: prevotes.for_head(None, HEAD, HEIGHT) for i in HONEST}
        self.queue: list[tuple[int, Vote]] = []
        self.cut: frozenset[int] = frozenset()
        self.approvals: dict[bytes, set[int]] = {}
        self.calm = 0  # rounds since delivery became complete

    def _cast(self, sender: int, vote: Vote) -> None:
        for i in HONEST:
            if i != sender:
                self.queue.append((i, vote))

    def _step(self, i: int, proposal_seen: bool = True) -> None:
        votes = self.nodes[i]
        proposal = block(self.round) if proposal_seen else None
        votes, intents = prevotes.step(votes, N, self.round, proposal)
        for intent in intents:
            vote = signed(i, intent.kind, intent.round, intent.block_hash)
            added = prevotes.add_vote(votes, vote, PKS, CHAIN_ID, self.round, own=True)
            assert added.equivocation is None and not added.bad
            votes = added.votes
            self._cast(i, vote)
        if intents:
            votes, _ = prevotes.step(votes, N, self.round, proposal)
        self.nodes[i] = votes
        decision = prevotes.decided(votes, N)
        if decision is not None:
            self.approvals.setdefault(decision, set()).add(i)

    @rule(proposal_seen=st.lists(st.booleans(), min_size=len(HONEST), max_size=len(HONEST)))
    def next_round(self, proposal_seen: list[bool]) -> None:
        self.round += 1
        self.calm = self.calm + 1 if not self.cut else 0
        for vote_block in (block(self.round), block(self.round + 1000)):  # equivocation
            for kind in (PREVOTE, PRECOMMIT):
                self._cast(BYZANTINE, signed(BYZANTINE, kind, self.round, vote_block))
        for i, seen in zip(HONEST, proposal_seen, strict=True):
            self._step(i, seen or not self.cut)

    @precondition(lambda self: bool(self.queue))
    @rule(data=st.data())
    def deliver(self, data: st.DataObject) -> None:
        deliverable = [k for k, (to, vote) in enumerate(self.queue)
                       if not self.cut or (to in self.cut) == (vote.authority_index in self.cut)
                       or vote.authority_index == BYZANTINE]
        if not deliverable:
            return
        k = data.draw(st.sampled_from(deliverable))
        to, vote = self.queue.pop(k)
        try:
            added = prevotes.add_vote(self.nodes[to], vote, PKS, CHAIN_ID, self.round,
                                      source=f"node {vote.authority_index}")
        except prevotes.VoteError:
            return
        assert not added.bad  # every vote here is signed by its authority
        self.nodes[to] = added.votes
        self._step(to)

    @rule(side=st.sets(st.sampled_from(HONEST), min_size=1, max_size=2))
    def partition(self, side: set[int]) -> None:
        self.cut = frozenset(side)

    @rule()
    def heal(self) -> None:
        self.cut = frozenset()

    @rule()
    def calm_rounds(self) -> None:
        """Complete delivery for three rounds: everything queued arrives, round after round."""
        self.cut = frozenset()
        for _ in range(3):
            while self.queue:
                to, vote = self.queue.pop(0)
                try:
                    self.nodes[to] = prevotes.add_vote(self.nodes[to], vote, PKS, CHAIN_ID,
                                                       self.round).votes
                except prevotes.VoteError:
                    continue
                self._step(to)
            self.next_round([True] * len(HONEST))
        while self.queue:
            to, vote = self.queue.pop(0)
            try:
                self.nodes[to] = prevotes.add_vote(self.nodes[to], vote, PKS, CHAIN_ID,
                                                   self.round).votes
            except prevotes.VoteError:
                continue
            self._step(to)
        # Liveness: after complete delivery over rounds, every honest node decided.
        assert all(prevotes.decided(v, N) is not None for v in self.nodes.values()), (
            [v.lock for v in self.nodes.values()])

    @invariant()
    def one_block_decided_and_approved(self) -> None:
        decisions = {prevotes.decided(v, N) for v in getattr(self, "nodes", {}).values()}
        decisions.discard(None)
        assert len(decisions) <= 1, decisions
        # Approvals: honest ones for the decided block only; the byzantine approves all.
        reaching = [b for b, who in getattr(self, "approvals", {}).items()
                    if len(who | {BYZANTINE}) >= required_approvals(N)]
        assert len(reaching) <= 1


Network.TestCase.settings = settings(max_examples=25, stateful_step_count=30, deadline=None,
                                     suppress_health_check=[HealthCheck.too_slow])
TestVoteNetwork = Network.TestCase


def vote(**changes: object) -> Vote:
    return attrs.evolve(signed(0, PREVOTE, 5, block(5)), **changes)  # type: ignore[arg-type]


def test_a_vote_of_another_height_round_or_authority_is_refused() -> None:
    votes = prevotes.for_head(None, HEAD, HEIGHT)
    with pytest.raises(prevotes.VoteError, match="height"):
        prevotes.add_vote(prevotes.for_head(None, HEAD, 2), signed(0, PREVOTE, 5, block(5)),
                          PKS, CHAIN_ID, 5)
    with pytest.raises(prevotes.VoteError, match="ahead"):
        prevotes.add_vote(votes, signed(0, PREVOTE, 5, block(5)), PKS, CHAIN_ID, 3)
    with pytest.raises(prevotes.VoteError, match="authority"):
        prevotes.add_vote(votes, vote(authority_index=9), PKS, CHAIN_ID, 5)
    with pytest.raises(prevotes.VoteError, match="vote"):
        prevotes.add_vote(votes, "a vote", PKS, CHAIN_ID, 5)  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", ["other signer", "other chain", "other kind", "zeros"])
def test_a_vote_with_a_bad_signature_waits_then_is_dropped_and_its_sender_named(
        bad: str) -> None:
    votes = prevotes.for_head(None, HEAD, HEIGHT)
    forged, chain_id = {
        "other signer": (vote(authority_index=1), CHAIN_ID),
        "other chain": (signed(0, PREVOTE, 5, block(5)), CHAIN_ID + 1),
        "other kind": (vote(kind=PRECOMMIT), CHAIN_ID),
        "zeros": (vote(signature=bytes(96)), CHAIN_ID),
    }[bad]
    added = prevotes.add_vote(votes, forged, PKS, chain_id, 5, source="liar")
    # Alone it cannot make a quorum: it waits, unchecked, counting for nothing.
    assert added == prevotes.Added(attrs.evolve(votes, unverified=(
        prevotes.Pending(forged, "liar"),)))
    settled = prevotes.verify_pending(added.votes, PKS, chain_id)
    assert settled.votes == votes and settled.checked == ()
    [(pending, problem)] = settled.bad
    assert pending == prevotes.Pending(forged, "liar") and "signature" in problem


def test_votes_for_one_block_are_checked_when_they_can_make_a_quorum() -> None:
    q = required_approvals(N)
    votes = prevotes.for_head(None, HEAD, HEIGHT)
    for index in range(q - 1):
        added = prevotes.add_vote(votes, signed(index, PREVOTE, 5, block(5)), PKS, CHAIN_ID, 5,
                                  source=f"peer {index}")
        assert added.checked == () and added.votes.held == ()
        votes = added.votes
    assert prevotes.polka(votes, 5, N) is None  # waiting votes count for nothing
    # A vote for another block does not complete them.
    votes = prevotes.add_vote(votes, signed(q - 1, PREVOTE, 5, block(6)), PKS, CHAIN_ID,
                              5).votes
    assert votes.held == ()
    last = prevotes.add_vote(votes, signed(q - 1, PRECOMMIT, 5, block(5)), PKS, CHAIN_ID, 5)
    assert last.votes.held == ()  # another kind: another group
    done = prevotes.add_vote(last.votes, signed(q, PREVOTE, 5, block(5)), PKS, CHAIN_ID, 5,
                             source="peer q")
    assert [p.source for p in done.checked] == [*(f"peer {i}" for i in range(q - 1)), "peer q"]
    assert done.bad == () and prevotes.polka(done.votes, 5, N) == block(5)
    assert len(done.votes.unverified) == 2  # the other block's and the precommit wait on
    # Our own vote counts at once and completes a group as well.
    mine = prevotes.add_vote(done.votes, signed(q, PRECOMMIT, 5, block(5)), PKS, CHAIN_ID, 5,
                             own=True)
    assert mine.checked == () and len(mine.votes.unverified) == 2
    for index in (0, 1):
        mine = prevotes.add_vote(mine.votes, signed(index, PRECOMMIT, 5, block(5)), PKS,
                                 CHAIN_ID, 5)
    assert prevotes.decided(mine.votes, N) == block(5)


def test_a_bad_vote_in_a_quorum_is_found_and_the_good_ones_are_kept() -> None:
    q = required_approvals(N)
    votes = prevotes.for_head(None, HEAD, HEIGHT)
    forged = attrs.evolve(signed(1, PREVOTE, 5, block(5)), signature=signed(
        1, PREVOTE, 6, block(5)).signature)  # a real signature of authority 1, another round
    for index in range(q):
        item = forged if index == 1 else signed(index, PREVOTE, 5, block(5))
        added = prevotes.add_vote(votes, item, PKS, CHAIN_ID, 5, source=f"peer {index}")
        votes = added.votes
    assert [p.vote.authority_index for p in added.checked] == [i for i in range(q) if i != 1]
    [(pending, problem)] = added.bad
    assert pending.source == "peer 1" and "does not verify" in problem
    assert prevotes.polka(votes, 5, N) is None and votes.unverified == ()
    # The real vote of authority 1, when it comes, completes the polka.
    real = prevotes.add_vote(votes, signed(1, PREVOTE, 5, block(5)), PKS, CHAIN_ID, 5)
    assert prevotes.polka(real.votes, 5, N) == block(5) and real.bad == ()


def test_a_forged_copy_that_comes_first_does_not_shut_out_the_real_vote() -> None:
    votes = prevotes.for_head(None, HEAD, HEIGHT)
    real = signed(2, PREVOTE, 5, block(5))
    forged = attrs.evolve(real, signature=signed(3, PREVOTE, 5, block(5)).signature)
    votes = prevotes.add_vote(votes, forged, PKS, CHAIN_ID, 5, source="liar").votes
    added = prevotes.add_vote(votes, real, PKS, CHAIN_ID, 5, source="honest")
    assert [p.source for p, _ in added.bad] == ["liar"]
    assert added.votes.unverified == (prevotes.Pending(real, "honest"),)
    assert added.equivocation is None


@pytest.mark.parametrize("first_checked", [False, True])
def test_an_equivocation_is_dropped_and_named(first_checked: bool) -> None:
    votes = prevotes.for_head(None, HEAD, HEIGHT)
    votes = prevotes.add_vote(votes, signed(1, PREVOTE, 5, block(5)), PKS, CHAIN_ID, 5,
                              source="a").votes
    if first_checked:
        votes = prevotes.verify_pending(votes, PKS, CHAIN_ID).votes
    again = prevotes.add_vote(votes, signed(1, PREVOTE, 5, block(6)), PKS, CHAIN_ID, 5,
                              source="b")
    assert again.equivocation is not None and "two prevotes in round 5" in again.equivocation
    assert again.votes.held == (signed(1, PREVOTE, 5, block(5)),)
    assert again.votes.unverified == () and again.bad == ()
    assert [p.source for p in again.checked] == ([] if first_checked else ["a"])
    # A second vote whose signature is bad is no equivocation: its sender is named.
    forged = attrs.evolve(signed(1, PREVOTE, 5, block(7)), signature=bytes(96))
    liar = prevotes.add_vote(again.votes, forged, PKS, CHAIN_ID, 5, source="liar")
    assert liar.equivocation is None and [p.source for p, _ in liar.bad] == ["liar"]
    assert liar.votes == again.votes


@pytest.mark.parametrize("bad", [-1, 1 << 64, True, 1.5, "1", None])
def test_a_digest_of_hostile_integers_is_refused(bad: object) -> None:
    with pytest.raises(prevotes.VoteError):
        prevotes.vote_digest(CHAIN_ID, PREVOTE, bad, 0, bytes(32))  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        Vote(PREVOTE, bad, 0, bytes(32), 0, bytes(96))  # type: ignore[arg-type]


def test_votes_held_are_bounded_by_rounds() -> None:
    votes = prevotes.for_head(None, HEAD, HEIGHT)
    for round_ in range(prevotes.MAX_ROUNDS + 5):
        votes = prevotes.add_vote(votes, signed(1, PREVOTE, round_, block(round_)), PKS,
                                  CHAIN_ID, round_).votes
        if round_ % 2:
            votes = prevotes.verify_pending(votes, PKS, CHAIN_ID).votes
    rounds = {v.round for v in votes.held} | {p.vote.round for p in votes.unverified}
    assert len(rounds) == prevotes.MAX_ROUNDS and min(rounds) == 5
    # A vote older than every round held is of no use: dropped unchecked.
    old = prevotes.add_vote(votes, signed(2, PREVOTE, 4, block(4)), PKS, CHAIN_ID, 20)
    assert old.votes == votes


def test_a_locked_authority_prevotes_its_lock_and_never_twice_in_a_round() -> None:
    votes = prevotes.for_head(None, HEAD, HEIGHT, VoteLock(HEIGHT, block(2), 2, 3, 2, block(2)))
    same, intents = prevotes.step(votes, N, 3, block(3))
    assert intents == () and same.lock == votes.lock
    after, intents = prevotes.step(votes, N, 4, block(4))
    assert intents == (prevotes.Intent(PREVOTE, 4, block(2)),)
    assert after.lock.prevoted_round == 4


def test_a_vote_past_its_quorum_is_dropped_unverified_and_an_own_vote_is_not_checked_again(
) -> None:
    votes = prevotes.for_head(None, HEAD, HEIGHT)
    q = required_approvals(N)
    for index in range(q):
        votes = prevotes.add_vote(votes, signed(index, PREVOTE, 5, block(5)), PKS,
                                  CHAIN_ID, 5).votes
    assert prevotes.polka(votes, 5, N) == block(5)
    # A late vote for the same block and round changes nothing: not held, not verified (a
    # forged one is not refused either: it could not change a polka or a decision).
    forged = attrs.evolve(signed(q, PREVOTE, 5, block(5)), signature=bytes(96))
    assert prevotes.add_vote(votes, forged, PKS, CHAIN_ID, 5) == prevotes.Added(votes)
    # But an equivocating late vote is still caught (its signature is checked then).
    late = prevotes.add_vote(votes, signed(0, PREVOTE, 5, block(6)), PKS, CHAIN_ID, 5)
    assert late.equivocation is not None and "two prevotes" in late.equivocation
    # Our own vote, just signed, is held without a second check.
    fresh = prevotes.for_head(None, HEAD, HEIGHT)
    mine = attrs.evolve(signed(0, PRECOMMIT, 5, block(5)), signature=bytes(96))
    held = prevotes.add_vote(fresh, mine, PKS, CHAIN_ID, 5, own=True)
    assert held.votes.held == (mine,) and held.bad == ()
    theirs = prevotes.verify_pending(prevotes.add_vote(fresh, mine, PKS, CHAIN_ID, 5).votes,
                                     PKS, CHAIN_ID)
    assert theirs.votes == fresh and "signature" in theirs.bad[0][1]


@settings(max_examples=30, deadline=None)
@given(signatures=st.lists(st.binary(min_size=96, max_size=96), min_size=N, max_size=N),
       sources=st.lists(st.text(max_size=8), min_size=N, max_size=N))
def test_votes_with_arbitrary_signature_bytes_are_named_never_counted_never_raise(
        signatures: list[bytes], sources: list[str]) -> None:
    """Hostile signature bytes (not points, not in the subgroup, infinity, other points):
    every vote waits, then is found bad with its sender when a quorum could form or when
    the rest is checked; none is ever held, whatever mix arrives."""
    votes = prevotes.for_head(None, HEAD, HEIGHT)
    named: list[str] = []
    for index, (signature, source) in enumerate(zip(signatures, sources, strict=True)):
        forged = attrs.evolve(signed(index, PREVOTE, 5, block(5)), signature=signature)
        added = prevotes.add_vote(votes, forged, PKS, CHAIN_ID, 5, source=source)
        votes = added.votes
        named += [p.source for p, _ in added.bad]
        assert added.checked == () and votes.held == ()
    rest = prevotes.verify_pending(votes, PKS, CHAIN_ID)
    named += [p.source for p, _ in rest.bad]
    assert sorted(named) == sorted(sources)
    assert rest.votes.held == () and rest.votes.unverified == ()
    assert prevotes.polka(rest.votes, 5, N) is None


def test_round_proposal_is_the_fresh_block_else_the_authors_prevote_of_a_held_block() -> None:
    votes = prevotes.for_head(None, HEAD, HEIGHT)
    for index, round_ in ((0, 8), (1, 8), (1, 9)):  # authority 0 is the author of round 8
        votes = prevotes.add_vote(votes, signed(index, PREVOTE, round_, block(5)), PKS,
                                  CHAIN_ID, 9, own=True).votes
    held = {block(5), block(8)}
    assert prevotes.round_proposal(votes, 8, 0, block(8), held) == block(8)
    assert prevotes.round_proposal(votes, 8, 0, None, held) == block(5)
    assert prevotes.round_proposal(votes, 8, 0, None, {block(8)}) is None  # not held here
    assert prevotes.round_proposal(votes, 9, 1, None, held) == block(5)
    assert prevotes.round_proposal(votes, 9, 0, None, held) is None  # 0 is not 9's author
    assert prevotes.round_proposal(votes, 10, 2, None, held) is None
    pending = prevotes.add_vote(prevotes.for_head(None, HEAD, HEIGHT),
                                signed(0, PREVOTE, 8, block(5)), PKS, CHAIN_ID, 8).votes
    assert pending.unverified and prevotes.round_proposal(pending, 8, 0, None, held) is None


def test_an_authority_that_lost_the_polka_follows_the_locked_authors_reproposal() -> None:
    """Seed 99 of the network simulation, as rules. Round 5 (author 1): authorities 0, 1 and
    2 prevote block X; 0 and 1 see the polka and lock, 2 restarts before it sees the others'
    prevotes and keeps only its lock (prevoted X, not locked). Its network forwards each
    message once, so it never gets those prevotes again. The locked ones prevote X round
    after round; 2 prevotes only the block of each round, so no block reaches three prevotes
    again, unless a locked author's prevote in its own round counts as its proposal."""
    x = block(5)
    nodes = {i: prevotes.for_head(None, HEAD, HEIGHT) for i in (0, 1, 2)}
    cast: list[Vote] = []

    def step(i: int, round_: int, held: set[bytes], fresh: bytes | None = None) -> None:
        votes = nodes[i]
        author = round_ % N
        for _ in range(3):
            proposal = prevotes.round_proposal(votes, round_, author, fresh, held)
            votes, intents = prevotes.step(votes, N, round_, proposal)
            for intent in intents:
                vote = signed(i, intent.kind, intent.round, intent.block_hash)
                votes = prevotes.add_vote(votes, vote, PKS, CHAIN_ID, round_, own=True).votes
                cast.append(vote)
        nodes[i] = votes

    def deliver(to: int, round_: int) -> None:
        for vote in cast:
            if vote.authority_index != to:
                nodes[to] = prevotes.add_vote(nodes[to], vote, PKS, CHAIN_ID, round_).votes
        nodes[to] = prevotes.verify_pending(nodes[to], PKS, CHAIN_ID).votes

    for i in (0, 1, 2):
        step(i, 5, {x}, fresh=x)
    for i in (0, 1):
        deliver(i, 5)
        step(i, 5, {x})
        assert nodes[i].lock.locked_hash == x
    # Node 2 restarts: the lock (and, kept aside in storage, block X) survive; votes do not.
    nodes[2] = prevotes.for_head(None, HEAD, HEIGHT, nodes[2].lock)
    assert nodes[2].lock.locked_hash is None and nodes[2].lock.prevoted_hash == x
    seen = len(cast)  # what the network delivered once is never delivered again
    # Round 6 (author 2, unlocked): a fresh block; the locked ones prevote X. No polka.
    for i in (0, 1):
        step(i, 6, {x})
    step(2, 6, {x, block(6)}, fresh=block(6))
    # Round 8 (author 0, locked): it builds nothing and prevotes X again.
    for i in (0, 1):
        step(i, 8, {x})
    del cast[:seen]
    deliver(2, 8)
    step(2, 8, {x})
    assert nodes[2].lock.prevoted_round == 8 and nodes[2].lock.prevoted_hash == x
    for i in (0, 1, 2):
        deliver(i, 8)
        step(i, 8, {x})
    for i in (0, 1, 2):
        deliver(i, 8)
        assert prevotes.decided(nodes[i], N) == x, i
