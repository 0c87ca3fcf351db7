"""Several authorities: a produced block waits for ceil(2n/3) approvals before import; the
vote lock outlives a restart; votes and approvals from peers are checked together, a liar is
reported and an equivocation caught."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio

import otp
from node.actors.chain import VOTE_CHECK_WAIT, ChainActor
from node.config import NodeConfig
from node.crypto import bls
from node.messages import chain as chain_msgs
from node.messages import engine as engine_msgs
from node.messages import storage as storage_msgs
from node.messages.network import GossipReceived, Publish, Relay, ReportPeer
from node.network.gossip import ApproveBlock
from node.types.chain import PRECOMMIT, PREVOTE, IndividualApproval, Vote
from node.workflows import chain as rules
from node.workflows import prevotes

from .factories import Clock, start_chain, stop_actors


async def test_own_block_waits_for_approvals_then_imports(tmp_path: Path) -> None:
    others = [bls.SecretKey.from_seed(bytes([i]) * 32) for i in (1, 2)]
    async with otp.runtime():
        # start once to learn this node's generated key, then configure three authorities
        clock = Clock()
        base = NodeConfig().as_mapping()["node"]["chain"]
        await start_chain(tmp_path, base, clock)
        mine = (await otp.get_state("chain")).key  # type: ignore[attr-defined]
        await stop_actors("chain", "engine", "storage")
        authorities = [mine.public_key(), others[0].public_key(), others[1].public_key()]
        cfg = {**base, "authorities": [pk.to_bytes().hex() for pk in authorities]}
        clock = Clock(slot=300)  # slot 300: 300 % 3 == 0, this node's slot
        await start_chain(tmp_path, cfg, clock)
        assert await otp.call("chain", chain_msgs.ProduceNow()) is None  # 1 of 2 approvals
        status = await otp.call("chain", chain_msgs.GetStatus())
        assert status.head.height == 0
        actor = await otp.get_state("chain")
        lock = actor.votes.lock  # type: ignore[attr-defined]
        assert lock.prevoted_round == 300 and lock.locked_hash is None  # our prevote, alone
        waiting = actor.proposals.get(lock.prevoted_hash)  # type: ignore[attr-defined]
        assert waiting is not None and rules.required_approvals(3) == 2
        bad = rules.approve(bytes(32), others[0], 1)  # signs the wrong hash
        assert isinstance(await otp.call("chain", chain_msgs.AddApproval(bad)),
                          rules.BlockError)
        good = rules.approve(waiting.hash(), others[0], 1)
        ref = await otp.call("chain", chain_msgs.AddApproval(good))
        assert ref is not None and ref.height == 1
        stored = await otp.call("chain", chain_msgs.GetStatus())
        assert stored.head == ref
        assert isinstance(await otp.call("chain", chain_msgs.AddApproval(good)),
                          rules.BlockError)  # nothing waits any more


async def test_the_vote_lock_outlives_a_restart(tmp_path: Path) -> None:
    """An authority that prevoted in a round (for its own block here) and restarts within
    that round neither builds another block nor prevotes again in it: the vote lock is
    stored, synced, before the vote leaves (with the block it prevoted, kept aside: held again
    after the restart). In the next round it prevotes again."""
    others = [bls.SecretKey.from_seed(bytes([i]) * 32) for i in (1, 2)]
    async with otp.runtime():
        clock = Clock()
        base = NodeConfig().as_mapping()["node"]["chain"]
        await start_chain(tmp_path, base, clock)
        mine = (await otp.get_state("chain")).key  # type: ignore[attr-defined]
        await stop_actors("chain", "engine", "storage")
        authorities = [mine.public_key(), others[0].public_key(), others[1].public_key()]
        cfg = {**base, "authorities": [pk.to_bytes().hex() for pk in authorities]}
        clock = Clock(slot=300)
        await start_chain(tmp_path, cfg, clock)
        assert await otp.call("chain", chain_msgs.ProduceNow()) is None  # waits for votes
        info = await otp.call("storage", storage_msgs.GetChainInfo())
        assert info.votes is not None and info.votes.height == 1
        assert info.votes.prevoted_round == 300
        first = info.votes.prevoted_hash

        # The lock outlives the actor, and so does the block it names (kept aside in
        # storage): the network would not bring it again.
        await otp.stop("chain")
        await otp.start(ChainActor, cfg, str(tmp_path), produce=False, name="chain")
        actor = await otp.get_state("chain")
        actor.clock = Clock(slot=300)  # type: ignore[attr-defined]  # the same round
        assert actor.votes.lock == info.votes  # type: ignore[attr-defined]
        assert await otp.call("chain", chain_msgs.ProduceNow()) is None
        held_again = actor.proposals.blocks  # type: ignore[attr-defined]
        assert [b.hash() for b in held_again] == [first]  # held again; nothing new built
        assert (await otp.call("storage", storage_msgs.GetChainInfo())).votes == info.votes

        # Another authority's block for the next round arrives: held and prevoted.
        genesis = await otp.call("storage", storage_msgs.GetBlockByHeight(0))
        assert genesis is not None
        payload = await otp.call("engine", engine_msgs.BuildPayload(
            head=genesis.message.execution_payload.block_hash,
            finalized=genesis.message.execution_payload.block_hash,
            timestamp=genesis.message.execution_payload.timestamp + 1,
            fee_recipient=bytes(20), withdrawals=()))
        other = rules.sign_block(rules.new_block(genesis, 301, payload, None), others[0], 1)
        actor.clock = Clock(slot=301)  # type: ignore[attr-defined]
        await otp.send("chain", GossipReceived("consensus_block", other, "peer", bytes(32)))
        # A call is served after the message sent before it (get_state, a system request,
        # is not: it may be answered while the gossip is still being handled).
        await otp.call("chain", chain_msgs.GetStatus())
        actor = await otp.get_state("chain")
        held = actor.proposals.get(other.hash())  # type: ignore[attr-defined]
        assert held is not None and held.signature.indexes() == [1]
        stored = (await otp.call("storage", storage_msgs.GetChainInfo())).votes
        assert stored.prevoted_round == 301 and stored.prevoted_hash == other.hash()
        assert first != other.hash() and actor.proposals.approved_hash is None  # type: ignore[attr-defined]


class Network(otp.GenServer):
    """Stands in for the NetworkActor: keeps what the ChainActor casts to it."""

    async def init(self) -> None:
        await trio.lowlevel.checkpoint()
        self.casts: list[Any] = []

    async def handle_cast(self, msg: Any) -> None:
        await trio.lowlevel.checkpoint()
        self.casts.append(msg)

    async def handle_call(self, request: Any, from_: otp.From) -> Any:
        await trio.lowlevel.checkpoint()
        casts, self.casts = self.casts, []
        return casts


async def test_votes_are_checked_together_a_liar_is_reported_an_equivocation_caught(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Four authorities (q = 3), this node one of them: prevotes for a block arrive from
    peers, one of them forged (a real signature of its authority, for another round). Held
    unchecked until three could make a polka, they are checked together; the batch fails,
    each is checked alone: the liar is reported, the two good votes are passed on, and no
    polka forms. The real vote completes it: this node locks, precommits (the lock stored
    first) and gossips its votes. A second prevote of one authority in the round, for
    another block, is dropped as equivocation, neither passed on nor counted."""
    others = [bls.SecretKey.from_seed(bytes([i]) * 32) for i in (1, 2, 3)]
    async with otp.runtime():
        clock = Clock()
        base = NodeConfig().as_mapping()["node"]["chain"]
        await start_chain(tmp_path, base, clock)
        mine = (await otp.get_state("chain")).key  # type: ignore[attr-defined]
        await stop_actors("chain", "engine", "storage")
        authorities = [mine.public_key(), *(k.public_key() for k in others)]
        cfg = {**base, "authorities": [pk.to_bytes().hex() for pk in authorities]}
        await otp.start(Network, name="network")
        await start_chain(tmp_path, cfg, Clock(slot=301))  # slot 301: authority 1's
        actor = await otp.get_state("chain")
        chain_id = actor.cfg.chain_id  # type: ignore[attr-defined]
        block = hashlib.sha256(b"the block of slot 301").digest()

        def prevote(index: int, round_: int = 301, target: bytes = block) -> Vote:
            return prevotes.sign_vote(others[index - 1], index, chain_id, PREVOTE, 1, round_,
                                      target)

        async def gossip(vote: Vote, peer: str) -> list[Any]:
            await otp.send("chain", GossipReceived("approve_block", vote, peer, bytes(32)))
            await otp.call("chain", chain_msgs.GetStatus())  # served after the gossip
            return await otp.call("network", "casts")  # type: ignore[no-any-return]

        forged = attrs.evolve(prevote(1), signature=prevote(1, round_=300).signature)
        assert await gossip(forged, "liar") == []  # waits: alone it makes no polka
        assert await gossip(prevote(2), "p2") == []
        casts = await gossip(prevote(3), "p3")  # three could make one: checked together
        assert sorted(c.source for c in casts if isinstance(c, Relay)) == ["p2", "p3"]
        [report] = [c for c in casts if isinstance(c, ReportPeer)]
        assert report.peer == "liar" and "does not verify" in report.detail
        actor = await otp.get_state("chain")
        assert prevotes.polka(actor.votes, 301, 4) is None  # type: ignore[attr-defined]

        casts = await gossip(prevote(1), "p1")  # the real one: a polka
        assert [c.source for c in casts if isinstance(c, Relay)] == ["p1"]
        ours = [c.payload for c in casts if isinstance(c, Publish)
                and isinstance(c.payload, Vote)]
        # Locked on it: our precommit, and our prevote in this round (for the lock).
        assert {(v.kind, v.round, v.block_hash, v.authority_index) for v in ours} == {
            (PRECOMMIT, 301, block, 0), (PREVOTE, 301, block, 0)}
        stored = (await otp.call("storage", storage_msgs.GetChainInfo())).votes
        assert stored is not None
        assert (stored.locked_hash, stored.locked_round, stored.precommitted_round) == (
            block, 301, 301)

        with caplog.at_level(logging.WARNING, logger="alys"):
            other = hashlib.sha256(b"another block").digest()
            assert await gossip(prevote(2, target=other), "p2") == []
        assert "authority 2 sent two prevotes in round 301" in caplog.text
        actor = await otp.get_state("chain")
        held = actor.votes.held  # type: ignore[attr-defined]
        assert other not in {v.block_hash for v in held}


async def test_a_vote_short_of_a_quorum_is_checked_and_passed_on_after_a_moment(
        tmp_path: Path) -> None:
    """A vote that cannot make a quorum here (this node has not voted for its block) is not
    left unchecked until the next slot: VOTE_CHECK_WAIT later it is checked, and passed on
    if good (peers may need it relayed), its sender reported if not."""
    others = [bls.SecretKey.from_seed(bytes([i]) * 32) for i in (1, 2, 3)]
    async with otp.runtime():
        base = NodeConfig().as_mapping()["node"]["chain"]
        await start_chain(tmp_path, base, Clock())
        mine = (await otp.get_state("chain")).key  # type: ignore[attr-defined]
        await stop_actors("chain", "engine", "storage")
        authorities = [mine.public_key(), *(k.public_key() for k in others)]
        cfg = {**base, "authorities": [pk.to_bytes().hex() for pk in authorities]}
        await otp.start(Network, name="network")
        await start_chain(tmp_path, cfg, Clock(slot=301))
        chain_id = (await otp.get_state("chain")).cfg.chain_id  # type: ignore[attr-defined]
        block = hashlib.sha256(b"a block this node has not seen").digest()
        good = prevotes.sign_vote(others[1], 2, chain_id, PREVOTE, 1, 301, block)
        forged = attrs.evolve(prevotes.sign_vote(others[2], 3, chain_id, PREVOTE, 1, 301,
                                                 block), signature=good.signature)
        await otp.send("chain", GossipReceived("approve_block", good, "p2", bytes(32)))
        await otp.send("chain", GossipReceived("approve_block", forged, "liar", bytes(32)))
        await otp.call("chain", chain_msgs.GetStatus())
        assert await otp.call("network", "casts") == []  # both wait
        await trio.sleep(VOTE_CHECK_WAIT * 0.9)
        await otp.call("chain", chain_msgs.GetStatus())
        assert await otp.call("network", "casts") == []  # still waiting
        await trio.sleep(VOTE_CHECK_WAIT * 0.2)
        await otp.call("chain", chain_msgs.GetStatus())
        casts = await otp.call("network", "casts")
        assert [(c.payload, c.source) for c in casts if isinstance(c, Relay)] == [(good, "p2")]
        assert [c.peer for c in casts if isinstance(c, ReportPeer)] == ["liar"]
        actor = await otp.get_state("chain")
        assert actor.votes.held == (good,) and actor.votes.unverified == ()  # type: ignore[attr-defined]


async def test_approvals_are_checked_together_a_forged_one_is_reported(
        tmp_path: Path) -> None:
    """Four authorities (three approvals needed), this node's own block held with its own
    signature: approvals from peers wait, unchecked, until they could complete the aggregate,
    then are checked together. A forged approval (authority 2's real signature of another
    block) and a good one: the batch fails, each is checked alone, the liar is reported, the
    good one counted and passed on, nothing imported. Authority 2's real approval (a second,
    different one naming it) completes the aggregate: the block is imported."""
    others = [bls.SecretKey.from_seed(bytes([i]) * 32) for i in (1, 2, 3)]
    async with otp.runtime():
        base = NodeConfig().as_mapping()["node"]["chain"]
        await start_chain(tmp_path, base, Clock())
        mine = (await otp.get_state("chain")).key  # type: ignore[attr-defined]
        await stop_actors("chain", "engine", "storage")
        authorities = [mine.public_key(), *(k.public_key() for k in others)]
        cfg = {**base, "authorities": [pk.to_bytes().hex() for pk in authorities]}
        await otp.start(Network, name="network")
        await start_chain(tmp_path, cfg, Clock(slot=300))  # slot 300: this node's
        assert await otp.call("chain", chain_msgs.ProduceNow()) is None
        actor = await otp.get_state("chain")
        block = actor.proposals.get(actor.votes.lock.prevoted_hash)  # type: ignore[attr-defined]
        assert block is not None and block.signature.indexes() == [0]
        await otp.call("network", "casts")  # our block and prevote: not looked at here

        async def gossip(approval: IndividualApproval, peer: str) -> list[Any]:
            await otp.send("chain", GossipReceived(
                "approve_block", ApproveBlock(block.hash(), approval), peer, bytes(32)))
            await otp.call("chain", chain_msgs.GetStatus())  # served after the gossip
            return await otp.call("network", "casts")  # type: ignore[no-any-return]

        def relayed(casts: list[Any]) -> list[tuple[int, str]]:
            return [(c.payload.approval.authority_index, c.source) for c in casts
                    if isinstance(c, Relay)]

        forged = rules.approve(bytes(32), others[1], 2)
        assert await gossip(forged, "liar") == []  # 2 of 3 at most: it waits
        casts = await gossip(rules.approve(block.hash(), others[0], 1), "p1")
        assert relayed(casts) == [(1, "p1")]
        [report] = [c for c in casts if isinstance(c, ReportPeer)]
        assert report.peer == "liar" and "does not verify" in report.detail
        status = await otp.call("chain", chain_msgs.GetStatus())
        assert status.head.height == 0  # 2 of 3: the forged one is not counted

        casts = await gossip(rules.approve(block.hash(), others[1], 2), "p2")
        assert relayed(casts) == [(2, "p2")]
        status = await otp.call("chain", chain_msgs.GetStatus())
        assert status.head.height == 1 and status.head.hash == block.hash()
        stored = await otp.call("storage", storage_msgs.GetBlock(block.hash()))
        assert stored is not None and stored.signature.indexes() == [0, 1, 2]
        assert bls.fast_aggregate_verify(authorities[:3], stored.signing_root(),
                                         bls.Signature.from_bytes(stored.signature.signature))
