"""Several authorities: a produced block waits for ceil(2n/3) approvals before import; and the
RPC actor outlives a chain actor that is down."""

from __future__ import annotations

from pathlib import Path

import otp
from node.actors.chain import ChainActor
from node.config import NodeConfig
from node.crypto import bls
from node.messages import chain as chain_msgs
from node.messages import engine as engine_msgs
from node.messages import storage as storage_msgs
from node.messages.network import GossipReceived
from node.workflows import chain as rules

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
    stored, synced, before the vote leaves. In the next round it prevotes again."""
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

        await otp.stop("chain")  # the held block is lost with the actor; the lock is not
        await otp.start(ChainActor, cfg, str(tmp_path), produce=False, name="chain")
        actor = await otp.get_state("chain")
        actor.clock = Clock(slot=300)  # type: ignore[attr-defined]  # the same round
        assert actor.votes.lock == info.votes  # type: ignore[attr-defined]
        assert await otp.call("chain", chain_msgs.ProduceNow()) is None
        assert actor.proposals.blocks == ()  # type: ignore[attr-defined]  # nothing built
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
