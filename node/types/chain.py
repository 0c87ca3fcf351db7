"""Consensus value types: blocks, approvals, AuxPoW headers, block references.

A block's hash is SHA-256 of the canonical CBOR (``otp.codec``) of the unsigned
:class:`ConsensusBlock`. The original hashes rmp-serde MessagePack bytes instead; ALYS.md lists
this as a deliberate change (nothing outside the node sees these bytes: miners see the hashes,
the execution layer sees its own payloads).
"""

from __future__ import annotations

import hashlib
from typing import Any

import attrs

from otp import codec

from .execution import ExecutionPayload

#: At most this many authorities fit an approval bitfield (as in the original).
MAX_AUTHORITIES = 15


def _length(n: int) -> Any:
    def check(_inst: Any, attribute: Any, value: Any) -> None:
        if not isinstance(value, bytes) or len(value) != n:
            raise ValueError(f"{attribute.name} must be {n} bytes, not {value!r:.80}")

    return check


def _optional_length(n: int) -> Any:
    inner = _length(n)

    def check(inst: Any, attribute: Any, value: Any) -> None:
        if value is not None:
            inner(inst, attribute, value)

    return check


def _non_negative(_inst: Any, attribute: Any, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{attribute.name} must be a non-negative integer, not {value!r}")


@codec.register(tag="alys.BlockRef")
@attrs.frozen
class BlockRef:
    """A block's hash and height."""

    hash: bytes = attrs.field(validator=_length(32))
    height: int = attrs.field(validator=_non_negative)


@codec.register(tag="alys.AuxPowHeader")
@attrs.frozen
class AuxPowHeader:
    """The merged-mining proof a block carries for the range ``range_start..range_end``.

    ``auxpow`` is the namecoin-format proof in Bitcoin serialization
    (``node.workflows.auxpow.AuxPow.from_bytes``); None only in genesis.
    """

    range_start: bytes = attrs.field(validator=_length(32))
    range_end: bytes = attrs.field(validator=_length(32))
    bits: int = attrs.field(validator=_non_negative)
    chain_id: int = attrs.field(validator=_non_negative)
    height: int = attrs.field(validator=_non_negative)
    auxpow: bytes | None
    fee_recipient: bytes = attrs.field(validator=_length(20))


@codec.register(tag="alys.ConsensusBlock")
@attrs.frozen
class ConsensusBlock:
    """An unsigned block. Its height is the execution payload's block number."""

    parent_hash: bytes = attrs.field(validator=_length(32))
    slot: int = attrs.field(validator=_non_negative)
    execution_payload: ExecutionPayload
    auxpow_header: AuxPowHeader | None = None
    #: Peg-ins credited in this block: (bitcoin txid, bitcoin block hash).
    pegins: tuple[tuple[bytes, bytes], ...] = ()
    #: An unsigned Bitcoin transaction paying out the previous block's peg-outs.
    pegout_payment_proposal: bytes | None = None
    #: Fully signed peg-out transactions finalized by this (AuxPoW) block.
    finalized_pegouts: tuple[bytes, ...] = ()

    @property
    def height(self) -> int:
        return self.execution_payload.block_number

    def hash(self) -> bytes:
        """SHA-256 of the canonical CBOR encoding of this unsigned block."""
        return hashlib.sha256(codec.encode(self)).digest()


@codec.register(tag="alys.IndividualApproval")
@attrs.frozen
class IndividualApproval:
    """One authority's BLS signature over a block hash."""

    signature: bytes = attrs.field(validator=_length(96))
    authority_index: int = attrs.field(validator=_non_negative)


def _bitfield(_inst: Any, attribute: Any, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 1 << 15:
        raise ValueError(f"{attribute.name} must fit {MAX_AUTHORITIES} bits, not {value!r}")


@codec.register(tag="alys.AggregateApproval")
@attrs.frozen
class AggregateApproval:
    """Approvals of a block: a bitfield of authority indexes and their aggregate signature."""

    bitfield: int = attrs.field(validator=_bitfield)
    signature: bytes = attrs.field(validator=_length(96))

    def indexes(self) -> list[int]:
        return [i for i in range(MAX_AUTHORITIES) if self.bitfield >> i & 1]

    def count(self) -> int:
        return self.bitfield.bit_count()


@codec.register(tag="alys.SignedConsensusBlock")
@attrs.frozen
class SignedConsensusBlock:
    """A block with the aggregate of its producer's signature and the approvals so far."""

    message: ConsensusBlock
    signature: AggregateApproval

    @property
    def height(self) -> int:
        return self.message.height

    def hash(self) -> bytes:
        return self.message.hash()

    def ref(self) -> BlockRef:
        return BlockRef(self.hash(), self.height)
