"""Consensus value types: blocks, approvals, AuxPoW headers, block references.

A block's hash is SHA-256 of the unsigned :class:`ConsensusBlock` in the consensus encoding
(:mod:`node.types.encoding`: explicit, versioned, positional; no Python names), and what its
authorities sign is its signing root (:func:`node.types.encoding.signing_root`). The original
hashes rmp-serde MessagePack bytes instead; ALYS.md lists this as a deliberate change (nothing
outside the node sees these bytes: miners see the hashes, the execution layer sees its own
payloads). Golden vectors in ``tests/node/test_encoding.py`` pin both.

Every integer is validated against the width the encoding gives it, so a value that exists
can always be encoded.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from typing import Any

import attrs

from otp import codec

from . import encoding
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


def _uint(bits: int) -> Any:
    def check(_inst: Any, attribute: Any, value: Any) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 1 << bits:
            raise ValueError(f"{attribute.name} must be an integer in 0..2**{bits}-1, "
                             f"not {value!r:.80}")

    return check


def _optional_bytes(_inst: Any, attribute: Any, value: Any) -> None:
    if value is not None and not isinstance(value, bytes):
        raise ValueError(f"{attribute.name} must be bytes or None, not {value!r:.80}")


def _pairs(value: Iterable[tuple[bytes, bytes]]) -> tuple[tuple[bytes, bytes], ...]:
    return tuple(value)


def _strings(value: Iterable[bytes]) -> tuple[bytes, ...]:
    return tuple(value)


def _pegins(_inst: Any, attribute: Any, value: Any) -> None:
    for i, item in enumerate(value):
        if (not isinstance(item, tuple) or len(item) != 2
                or not all(isinstance(h, bytes) and len(h) == 32 for h in item)):
            raise ValueError(f"{attribute.name}[{i}] must be a (txid, block hash) pair of "
                             f"32-byte hashes, not {item!r:.80}")


def _byte_strings(_inst: Any, attribute: Any, value: Any) -> None:
    for i, item in enumerate(value):
        if not isinstance(item, bytes):
            raise ValueError(f"{attribute.name}[{i}] must be bytes, not {item!r:.80}")


@codec.register(tag="alys.BlockRef")
@attrs.frozen
class BlockRef:
    """A block's hash and height."""

    hash: bytes = attrs.field(validator=_length(32))
    height: int = attrs.field(validator=_uint(64))


@codec.register(tag="alys.AuxPowHeader")
@attrs.frozen
class AuxPowHeader:
    """The merged-mining proof a block carries for the range ``range_start..range_end``.

    ``auxpow`` is the namecoin-format proof in Bitcoin serialization
    (``node.workflows.auxpow.AuxPow.from_bytes``); None only in genesis.
    """

    range_start: bytes = attrs.field(validator=_length(32))
    range_end: bytes = attrs.field(validator=_length(32))
    bits: int = attrs.field(validator=_uint(32))
    chain_id: int = attrs.field(validator=_uint(32))
    #: As the original: the height of the block carrying the previous AuxPoW, plus one
    #: (informational; the original never validates it, nor do we).
    height: int = attrs.field(validator=_uint(64))
    auxpow: bytes | None = attrs.field(validator=_optional_bytes)
    fee_recipient: bytes = attrs.field(validator=_length(20))


@codec.register(tag="alys.ConsensusBlock")
@attrs.frozen
class ConsensusBlock:
    """An unsigned block. Its height is the execution payload's block number."""

    parent_hash: bytes = attrs.field(validator=_length(32))
    slot: int = attrs.field(validator=_uint(64))
    execution_payload: ExecutionPayload = attrs.field(
        validator=attrs.validators.instance_of(ExecutionPayload))
    auxpow_header: AuxPowHeader | None = attrs.field(
        default=None, validator=attrs.validators.optional(
            attrs.validators.instance_of(AuxPowHeader)))
    #: Peg-ins credited in this block: (bitcoin txid, bitcoin block hash).
    pegins: tuple[tuple[bytes, bytes], ...] = attrs.field(
        default=(), converter=_pairs, validator=_pegins)
    #: An unsigned Bitcoin transaction paying out the previous block's peg-outs.
    pegout_payment_proposal: bytes | None = attrs.field(default=None,
                                                        validator=_optional_bytes)
    #: Fully signed peg-out transactions finalized by this (AuxPoW) block.
    finalized_pegouts: tuple[bytes, ...] = attrs.field(
        default=(), converter=_strings, validator=_byte_strings)

    @property
    def height(self) -> int:
        return self.execution_payload.block_number

    @functools.cached_property
    def _hash(self) -> bytes:
        return encoding.block_hash(self)

    def hash(self) -> bytes:
        """SHA-256 of this unsigned block in the consensus encoding (computed once)."""
        return self._hash

    def remember(self, block_hash: bytes) -> None:
        """Take ``block_hash`` as this block's hash without computing it: only for the hash of
        the very bytes this block was decoded from (:func:`encoding.decode_signed_block`)."""
        object.__setattr__(self, "_hash", block_hash)

    def signing_root(self) -> bytes:
        """What the producer and the approvers sign: :func:`encoding.signing_root`."""
        return encoding.signing_root(self._hash)


@codec.register(tag="alys.IndividualApproval")
@attrs.frozen
class IndividualApproval:
    """One authority's BLS signature over a block hash."""

    signature: bytes = attrs.field(validator=_length(96))
    authority_index: int = attrs.field(validator=_uint(16))


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

    def signing_root(self) -> bytes:
        return self.message.signing_root()

    @functools.cached_property
    def _ref(self) -> BlockRef:
        return BlockRef(self.hash(), self.height)

    def ref(self) -> BlockRef:
        """Its hash and height (made once)."""
        return self._ref

    @functools.cached_property
    def _encoding(self) -> bytes:
        return encoding.write_signed_block(self)

    def encoded(self) -> bytes:
        """This block as a kind-0x02 document of the consensus encoding (written once)."""
        return self._encoding

    def remember(self, data: bytes) -> None:
        """Take ``data`` as this block's encoding without writing it: only for the very bytes
        this block was decoded from (:func:`encoding.decode_signed_block`)."""
        object.__setattr__(self, "_encoding", data)


#: :attr:`Vote.kind`: a prevote (first phase) or a precommit (second phase, bound to a round).
PREVOTE, PRECOMMIT = 0, 1


def _kind(_inst: Any, attribute: Any, value: Any) -> None:
    if isinstance(value, bool) or value not in (PREVOTE, PRECOMMIT):
        raise ValueError(f"{attribute.name} must be {PREVOTE} (prevote) or {PRECOMMIT} "
                         f"(precommit), not {value!r:.80}")


@codec.register(tag="alys.Vote")
@attrs.frozen
class Vote:
    """An authority's prevote or precommit for the block ``block_hash`` at ``height`` in
    ``round`` (a slot number): a BLS signature over a domain-separated digest of the chain
    id, kind, height, round and block hash (``node.workflows.prevotes.vote_digest``)."""

    kind: int = attrs.field(validator=_kind)
    height: int = attrs.field(validator=_uint(64))
    round: int = attrs.field(validator=_uint(64))
    block_hash: bytes = attrs.field(validator=_length(32))
    authority_index: int = attrs.field(validator=_uint(16))
    signature: bytes = attrs.field(validator=_length(96))


def _round_or_none(_inst: Any, attribute: Any, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not -1 <= value < 1 << 64:
        raise ValueError(f"{attribute.name} must be -1 (none) or a round in 0..2**64-1, "
                         f"not {value!r:.80}")


@codec.register(tag="alys.VoteLock")
@attrs.frozen
class VoteLock:
    """What an authority must remember across a crash about its votes at ``height``: the
    block it is locked on and the round of that lock, and the last rounds it prevoted and
    precommitted in (-1: none), so that it never votes twice in one round."""

    height: int = attrs.field(validator=_uint(64))
    locked_hash: bytes | None = attrs.field(default=None, validator=_optional_length(32))
    locked_round: int = attrs.field(default=-1, validator=_round_or_none)
    prevoted_round: int = attrs.field(default=-1, validator=_round_or_none)
    precommitted_round: int = attrs.field(default=-1, validator=_round_or_none)
    #: The block of this authority's last prevote (what production says it waits for).
    prevoted_hash: bytes | None = attrs.field(default=None, validator=_optional_length(32))
