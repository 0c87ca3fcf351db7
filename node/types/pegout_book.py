"""The persisted records of peg-outs: each request, each proposal, the federation's coins.

Frozen attrs values, validated at construction; stored as CBOR (``otp.codec``) by the
StorageActor and kept in a :class:`~node.workflows.pegout_book.PegOutBook` by the
FederationActor. The state machine they encode is written in
:mod:`node.workflows.pegout_book`.

* :class:`PegOutRecord` — a screened ``RequestPegOut`` event the federation pays: the
  request, who burned it, the address as sent, which block carried it, and (once a block
  proposed its payment) the proposal's txid. Its state is ``requested`` until then, and the
  proposal's state after.
* :class:`RefusedPegOutRecord` — a burn the federation does not pay, and why (``getpegstatus``
  tells the user).
* :class:`ProposalRecord` — an unsigned transaction a block proposed: what it spends, whom it
  pays, and how far it got (``proposed → signed → broadcast → confirmed``).
"""

from __future__ import annotations

import enum
from typing import Any

import attrs

from .pegout import FederationUtxo, PegOutRequest, RequestId

__all__ = ["PegOutRecord", "PegOutState", "ProposalRecord", "RefusedPegOutRecord"]

_U64 = 1 << 64


class PegOutState(enum.Enum):
    """Where a peg-out is. ``requested``: read from a block's receipts, not yet in a
    proposal. ``proposed``: a block carries the unsigned transaction paying it. ``signed``:
    ``k`` members' signatures make it whole (on this node, or in a block's
    ``finalized_pegouts``). ``broadcast``: an AuxPoW block carried it and this node handed it
    to Bitcoin. ``confirmed``: Bitcoin shows it with the configured confirmations.
    ``replaced`` (a proposal only): a fee bump spending the same coins, or the peg-out it
    bumped, is confirmed instead, so Bitcoin can never mine this one."""

    REQUESTED = "requested"
    PROPOSED = "proposed"
    SIGNED = "signed"
    BROADCAST = "broadcast"
    CONFIRMED = "confirmed"
    REPLACED = "replaced"


def _sized(size: int) -> Any:
    def check(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        if type(value) is not bytes or len(value) != size:
            raise ValueError(f"{attribute.name} must be {size} bytes, got {value!r:.80}")
    return check


def _optional_sized(size: int) -> Any:
    inner = _sized(size)

    def check(inst: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        if value is not None:
            inner(inst, attribute, value)
    return check


def _u64(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if type(value) is not int or not 0 <= value < _U64:
        raise ValueError(f"{attribute.name} must be an integer in 0..2**64-1, got {value!r:.80}")


def _optional_u64(inst: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is not None:
        _u64(inst, attribute, value)


def _text(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if type(value) is not str or not 0 < len(value) <= 1000:
        raise ValueError(f"{attribute.name} must be a text of 1..1000 characters, "
                         f"got {value!r:.80}")


def _ids(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if type(value) is not tuple or not value:
        raise ValueError(f"{attribute.name} must be a non-empty tuple of request ids")
    for i, item in enumerate(value):
        if (type(item) is not tuple or len(item) != 2 or type(item[0]) is not bytes
                or len(item[0]) != 32 or type(item[1]) is not int
                or not 0 <= item[1] < _U64):
            raise ValueError(f"{attribute.name}[{i}] must be (32-byte hash, u64), "
                             f"got {item!r:.80}")


def _to_ids(value: Any) -> Any:
    """CBOR gives lists back: the ids as (hash, index) tuples again."""
    if isinstance(value, list | tuple):
        return tuple(tuple(v) if isinstance(v, list) else v for v in value)
    return value


def _to_tuple(value: Any) -> tuple[Any, ...]:
    return tuple(value)


def _utxos(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if type(value) is not tuple or not value:
        raise ValueError(f"{attribute.name} must be a non-empty tuple of FederationUtxo")
    for i, item in enumerate(value):
        if type(item) is not FederationUtxo:
            raise ValueError(f"{attribute.name}[{i}] must be a FederationUtxo, "
                             f"got {type(item).__name__}")


@attrs.frozen
class PegOutRecord:
    """A request the federation pays. ``height``/``position`` place it in the chain (the
    block whose receipts carried it, and its place among that block's requests): open
    requests are paid in that order. ``proposal`` is the txid (internal order) of the
    proposal paying it, once a block carries one."""

    request: PegOutRequest = attrs.field(validator=attrs.validators.instance_of(PegOutRequest))
    evm_address: bytes = attrs.field(validator=_sized(20))
    address: str = attrs.field(validator=_text)
    height: int = attrs.field(validator=_u64)
    position: int = attrs.field(validator=_u64)
    proposal: bytes | None = attrs.field(default=None, validator=_optional_sized(32))

    @property
    def id(self) -> RequestId:
        return self.request.id

    @property
    def order(self) -> tuple[int, int]:
        return (self.height, self.position)


@attrs.frozen
class RefusedPegOutRecord:
    """A burn the federation does not pay (below the minimum, an address it cannot pay):
    the value stays burned; ``reason`` says why."""

    evm_tx_hash: bytes = attrs.field(validator=_sized(32))
    log_index: int = attrs.field(validator=_u64)
    height: int = attrs.field(validator=_u64)
    value_sats: int = attrs.field(validator=_u64)
    reason: str = attrs.field(validator=_text)


@attrs.frozen
class ProposalRecord:
    """A proposal a block carried: ``transaction`` is the unsigned transaction (raw bytes),
    ``spent`` the federation's coins its inputs spend (in input order), ``requests`` the ids
    of the requests its outputs pay (in output order), ``height`` the block that carried it.
    ``signed`` is the signed transaction once ``k`` signatures are known;
    ``included_height`` the AuxPoW block whose ``finalized_pegouts`` carried it;
    ``confirmations`` how many Bitcoin shows (updated until ``confirmed``)."""

    txid: bytes = attrs.field(validator=_sized(32))
    transaction: bytes = attrs.field(validator=attrs.validators.instance_of(bytes))
    spent: tuple[FederationUtxo, ...] = attrs.field(converter=_to_tuple, validator=_utxos)
    requests: tuple[RequestId, ...] = attrs.field(converter=_to_ids, validator=_ids)
    height: int = attrs.field(validator=_u64)
    state: PegOutState = attrs.field(default=PegOutState.PROPOSED,
                                     validator=attrs.validators.instance_of(PegOutState))
    signed: bytes | None = attrs.field(default=None)
    included_height: int | None = attrs.field(default=None, validator=_optional_u64)
    confirmations: int = attrs.field(default=0, validator=_u64)

    def __attrs_post_init__(self) -> None:
        if self.state is PegOutState.REQUESTED:
            raise ValueError(f"proposal {self.txid[::-1].hex()}: a proposal is at least "
                             "proposed")
        if self.state in (PegOutState.BROADCAST, PegOutState.CONFIRMED) and (
                self.signed is None or self.included_height is None):
            raise ValueError(f"proposal {self.txid[::-1].hex()}: {self.state.value} but not "
                             "signed and carried by a block")
        if self.signed is not None and type(self.signed) is not bytes:
            raise ValueError("signed must be the raw signed transaction (bytes) or None")
