"""Small builders of node values for tests."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import attrs

import otp
from node.actors.chain import ChainActor
from node.actors.engine import EngineActor
from node.actors.storage import StorageActor
from node.crypto import bls
from node.types.chain import (
    AggregateApproval,
    AuxPowHeader,
    ConsensusBlock,
    SignedConsensusBlock,
)
from node.types.execution import ExecutionPayload
from node.workflows.auxpow import AuxPow

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


# -- signed chains for the consensus rules -------------------------------------------------------


def authority_keys(n: int) -> list[bls.SecretKey]:
    """``n`` fixed BLS keys (the same on every run)."""
    return [bls.SecretKey.from_seed(bytes([i + 1]) * 32) for i in range(n)]


def sign_with(block: ConsensusBlock, keys: list[bls.SecretKey],
              signers: list[int]) -> SignedConsensusBlock:
    """``block`` with the aggregate signature of ``keys[i]`` for each ``i`` in ``signers``."""
    signatures = [bls.sign(keys[i], block.signing_root()) for i in signers]
    bitfield = sum(1 << i for i in set(signers))
    return SignedConsensusBlock(block, AggregateApproval(bitfield,
                                                         bls.aggregate(signatures).to_bytes()))


def regrind(proof: AuxPow, bits: int) -> AuxPow:
    """``proof`` with a parent-header nonce that meets ``bits`` (after a change to it)."""
    for nonce in range(1 << 20):
        candidate = attrs.evolve(proof, parent_header=attrs.evolve(proof.parent_header,
                                                                   nonce=nonce))
        if candidate.check_proof_of_work(bits):
            return candidate
    raise AssertionError(f"no nonce meets {bits:#x}")


# -- the node's actors in one process --------------------------------------------------------------


class Clock:
    """A settable ``unix_ms`` clock for the ChainActor (its ``clock`` attribute)."""

    def __init__(self, slot: int = 100, slot_duration_ms: int = 2000) -> None:
        self.duration = slot_duration_ms
        self.ms = slot * slot_duration_ms

    def __call__(self) -> int:
        return self.ms

    def next_slot(self) -> int:
        """Move to the start of the next slot; its number."""
        self.ms = (self.ms // self.duration + 1) * self.duration
        return self.ms // self.duration


async def start_chain(data_dir: Path, chain_cfg: dict[str, Any], clock: Clock,
                      *, engine: bool = True) -> None:
    """StorageActor, EngineActor (embedded, its EVM in ``data_dir/evm``) and ChainActor
    (``produce=False``), registered as ``storage``, ``engine`` and ``chain``, with the chain
    driven by ``clock``."""
    await otp.start(StorageActor, str(data_dir / "chain"), name="storage")
    if engine:
        await otp.start(EngineActor, None, chain_cfg, data_dir=str(data_dir), name="engine")
    await otp.start(ChainActor, chain_cfg, str(data_dir), produce=False, name="chain")
    actor = await otp.get_state("chain")
    actor.clock = clock  # type: ignore[attr-defined]


async def stop_actors(*names: str) -> None:
    """Stop the named actors that are running, in the order given."""
    for name in names:
        if otp.whereis(name) is not None:
            await otp.stop(name)
