"""The vote rules (node.workflows.prevotes) over random deliveries, partitions and one
equivocating authority: never two blocks decided (so never two with ceil(2n/3) approvals)
at one height, and once delivery is complete for a few rounds, a block is decided."""

from __future__ import annotations

import hashlib

import attrs
import pytest
from hypothesis import HealthCheck, settings
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
            votes, problem = prevotes.add_vote(votes, vote, PKS, CHAIN_ID, self.round)
            assert problem is None
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
            votes, _problem = prevotes.add_vote(self.nodes[to], vote, PKS, CHAIN_ID,
                                                self.round)
        except prevotes.VoteError:
            return
        self.nodes[to] = votes
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
                    self.nodes[to], _ = prevotes.add_vote(self.nodes[to], vote, PKS, CHAIN_ID,
                                                          self.round)
                except prevotes.VoteError:
                    continue
                self._step(to)
            self.next_round([True] * len(HONEST))
        while self.queue:
            to, vote = self.queue.pop(0)
            try:
                self.nodes[to], _ = prevotes.add_vote(self.nodes[to], vote, PKS, CHAIN_ID,
                                                      self.round)
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
    with pytest.raises(prevotes.VoteError, match="signature"):
        prevotes.add_vote(votes, vote(authority_index=1), PKS, CHAIN_ID, 5)
    with pytest.raises(prevotes.VoteError, match="signature"):
        prevotes.add_vote(votes, signed(0, PREVOTE, 5, block(5)), PKS, CHAIN_ID + 1, 5)
    with pytest.raises(prevotes.VoteError, match="signature"):
        prevotes.add_vote(votes, vote(kind=PRECOMMIT), PKS, CHAIN_ID, 5)


def test_an_equivocation_is_dropped_and_named() -> None:
    votes = prevotes.for_head(None, HEAD, HEIGHT)
    votes, problem = prevotes.add_vote(votes, signed(1, PREVOTE, 5, block(5)), PKS, CHAIN_ID, 5)
    assert problem is None
    again, problem = prevotes.add_vote(votes, signed(1, PREVOTE, 5, block(6)), PKS, CHAIN_ID, 5)
    assert again is votes and problem is not None and "two prevotes in round 5" in problem


@pytest.mark.parametrize("bad", [-1, 1 << 64, True, 1.5, "1", None])
def test_a_digest_of_hostile_integers_is_refused(bad: object) -> None:
    with pytest.raises(prevotes.VoteError):
        prevotes.vote_digest(CHAIN_ID, PREVOTE, bad, 0, bytes(32))  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        Vote(PREVOTE, bad, 0, bytes(32), 0, bytes(96))  # type: ignore[arg-type]


def test_votes_held_are_bounded_by_rounds() -> None:
    votes = prevotes.for_head(None, HEAD, HEIGHT)
    for round_ in range(prevotes.MAX_ROUNDS + 5):
        votes, _ = prevotes.add_vote(votes, signed(1, PREVOTE, round_, block(round_)), PKS,
                                     CHAIN_ID, round_)
    assert len({v.round for v in votes.held}) == prevotes.MAX_ROUNDS
    assert min(v.round for v in votes.held) == 5


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
        votes, _ = prevotes.add_vote(votes, signed(index, PREVOTE, 5, block(5)), PKS,
                                     CHAIN_ID, 5)
    assert prevotes.polka(votes, 5, N) == block(5)
    # A late vote for the same block and round changes nothing: not held, not verified (a
    # forged one is not refused either: it could not change a polka or a decision).
    forged = attrs.evolve(signed(q, PREVOTE, 5, block(5)), signature=bytes(96))
    assert prevotes.add_vote(votes, forged, PKS, CHAIN_ID, 5) == (votes, None)
    # But an equivocating late vote is still caught (its signature is checked then).
    late = prevotes.add_vote(votes, signed(0, PREVOTE, 5, block(6)), PKS, CHAIN_ID, 5)
    assert late[1] is not None and "two prevotes" in late[1]
    # Our own vote, just signed, is held without a second check.
    fresh = prevotes.for_head(None, HEAD, HEIGHT)
    mine = attrs.evolve(signed(0, PRECOMMIT, 5, block(5)), signature=bytes(96))
    held, _ = prevotes.add_vote(fresh, mine, PKS, CHAIN_ID, 5, own=True)
    assert held.held == (mine,)
    with pytest.raises(prevotes.VoteError, match="signature"):
        prevotes.add_vote(fresh, mine, PKS, CHAIN_ID, 5)
