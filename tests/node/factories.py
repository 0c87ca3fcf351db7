"""Small builders of node values for tests."""

from __future__ import annotations

import hashlib

from node.types.chain import (
    AggregateApproval,
    AuxPowHeader,
    ConsensusBlock,
    SignedConsensusBlock,
)
from node.types.execution import ExecutionPayload

EMPTY_SIG = bytes([0xC0]) + bytes(95)


def payload(number: int, parent: bytes = bytes(32), timestamp: int = 0) -> ExecutionPayload:
    block_hash = hashlib.sha256(b"payload" + number.to_bytes(8, "big") + parent).digest()
    return ExecutionPayload(
        parent_hash=parent,
        fee_recipient=bytes(20),
        state_root=bytes(32),
        receipts_root=bytes(32),
        logs_bloom=bytes(256),
        prev_randao=bytes(32),
        block_number=number,
        gas_limit=30_000_000,
        gas_used=0,
        timestamp=timestamp or number,
        extra_data=b"",
        base_fee_per_gas=7,
        block_hash=block_hash,
        transactions=(),
        withdrawals=(),
    )


def chain(length: int, auxpow_at: tuple[int, ...] = ()) -> list[SignedConsensusBlock]:
    """``length`` blocks from genesis (height 0), each on the previous one."""
    blocks: list[SignedConsensusBlock] = []
    parent_hash = bytes(32)
    parent_payload = bytes(32)
    for height in range(length):
        p = payload(height, parent_payload)
        header = None
        if height in auxpow_at or height == 0:
            start = blocks[1].hash() if height and len(blocks) > 1 else bytes(32)
            end = blocks[-1].hash() if blocks else bytes(32)
            header = AuxPowHeader(start, end, 0x207FFFFF, 121212, height, None, bytes(20))
        block = SignedConsensusBlock(
            ConsensusBlock(parent_hash, height, p, header), AggregateApproval(0, EMPTY_SIG)
        )
        blocks.append(block)
        parent_hash = block.hash()
        parent_payload = p.block_hash
    return blocks
