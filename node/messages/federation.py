"""Requests to the FederationActor (registered as ``federation``), and its answers.

The ChainActor asks it for the peg-out fields of the block it produces
(:class:`GetPegOutsForBlock`), to check those of a block it receives (:class:`VerifyPegOuts`),
and tells it when PoW is queued (:class:`SignPegOuts`, a cast: members sign then). Imported
blocks reach it on the chain's bus topic; peg-out signatures on the gossip topic
``pegout_signatures``.
"""

from __future__ import annotations

from typing import Any

import attrs

import otp

from ..types.chain import BlockRef


def _raw_txs(inst: Any, attribute: Any, value: Any) -> None:
    if not isinstance(value, tuple) or not all(type(t) is bytes for t in value):
        raise ValueError(f"{type(inst).__name__}.{attribute.name}: a tuple of raw "
                         f"transactions (bytes), not {value!r:.80}")


def _optional_raw(inst: Any, attribute: Any, value: Any) -> None:
    if value is not None and type(value) is not bytes:
        raise ValueError(f"{type(inst).__name__}.{attribute.name}: a raw transaction "
                         f"(bytes) or None, not {value!r:.80}")


@attrs.frozen
class GetPegOutsForBlock(otp.Request["PegOutsForBlock"]):
    """The peg-out fields of the block produced on ``parent``: a proposal paying the open
    requests (if any, and coins cover them), and, when the block carries AuxPoW
    (``auxpow``), the signed peg-outs no block carried yet."""

    parent: BlockRef = attrs.field(validator=attrs.validators.instance_of(BlockRef))
    auxpow: bool = attrs.field(validator=attrs.validators.instance_of(bool))


@attrs.frozen
class PegOutsForBlock:
    proposal: bytes | None = attrs.field(default=None, validator=_optional_raw)
    finalized: tuple[bytes, ...] = attrs.field(default=(), validator=_raw_txs)


@attrs.frozen
class VerifyPegOuts(otp.Request["PegOutVerdict"]):
    """Check the peg-out fields of a block on ``parent``
    (:func:`node.workflows.pegout_book.check_block`)."""

    parent: BlockRef = attrs.field(validator=attrs.validators.instance_of(BlockRef))
    proposal: bytes | None = attrs.field(validator=_optional_raw)
    finalized: tuple[bytes, ...] = attrs.field(validator=_raw_txs)
    auxpow: bool = attrs.field(validator=attrs.validators.instance_of(bool))


@attrs.frozen
class PegOutVerdict:
    #: Why the block is wrong, or None when it is right.
    problem: str | None = None
    #: True when this node could not tell (its book is not at the parent, Bitcoin is away):
    #: not the block's fault.
    unverifiable: bool = False


@attrs.frozen
class SignPegOuts:
    """Cast by the ChainActor when PoW is queued: a member signs every proposal waiting for
    signatures and gossips them."""


@attrs.frozen
class GetFederationStatus(otp.Request["FederationStatus"]):
    pass


@attrs.frozen
class FederationStatus:
    #: This node's member index, or None when it does not sign.
    member: int | None
    #: The last block the peg-out book applied.
    height: int
    #: Requests by state name.
    requests: dict[str, int]
    coins: int
    sats: int
    #: Why the last step failed, or None.
    problem: str | None
