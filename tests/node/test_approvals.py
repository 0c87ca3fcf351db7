"""Several authorities: a produced block waits for ceil(2n/3) approvals before import; and the
RPC actor outlives a chain actor that is down."""

from __future__ import annotations

from pathlib import Path

import otp
from node.config import NodeConfig
from node.crypto import bls
from node.messages import chain as chain_msgs
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
        proposals = (await otp.get_state("chain")).proposals  # type: ignore[attr-defined]
        waiting = proposals.get(proposals.approved_hash)
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
