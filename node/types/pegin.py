"""Peg-in values: a deposit to the federation seen on Bitcoin, and its life as a state machine.

A :class:`Deposit` is frozen; its state moves only through the transitions of
:mod:`node.workflows.pegin` (``detected -> confirmed -> credited``), each of which returns a new
value or raises :class:`PegInTransitionError` for an illegal move. A deposit the rules refuse
(no or malformed OP_RETURN, dust, an unusable EVM address) never becomes a Deposit: it is a
:class:`Refusal`, kept for ``getpegstatus`` and the logs, and never credited.

Hashes are in Bitcoin's internal byte order (what ``sha256d`` gives), as everywhere in the
node; only the RPC shows them reversed, as Bitcoin tools do.

Both are persisted by the StorageActor as canonical CBOR (``otp.codec``) and checked again on
the way back: a stored record that does not decode to a valid value is corruption, not a
deposit.
"""

from __future__ import annotations

import enum
from typing import Any, Final

import attrs

from ..errors import NodeError

#: Bitcoin's total supply in satoshis: no output is worth more.
MAX_SATS: Final = 21_000_000 * 100_000_000
U64_MAX: Final = (1 << 64) - 1


class PegInTransitionError(NodeError, ValueError):
    """A deposit was asked to move where its state machine does not go."""


class PegInState(enum.Enum):
    """``detected``: seen in a block on Bitcoin's best chain, not yet deep enough.
    ``confirmed``: its block has the configured confirmations; it waits to be credited.
    ``credited``: a sidechain block credited it (its withdrawal is in that block's payload)."""

    DETECTED = "detected"
    CONFIRMED = "confirmed"
    CREDITED = "credited"


def _bytes_of(n: int) -> Any:
    def check(inst: Any, attribute: Any, value: Any) -> None:
        if type(value) is not bytes or len(value) != n:
            raise ValueError(f"{type(inst).__name__}.{attribute.name} must be {n} bytes, "
                             f"not {value!r:.80}")

    return check


def _optional_bytes_of(n: int) -> Any:
    inner = _bytes_of(n)

    def check(inst: Any, attribute: Any, value: Any) -> None:
        if value is not None:
            inner(inst, attribute, value)

    return check


def _int_in(lo: int, hi: int) -> Any:
    def check(inst: Any, attribute: Any, value: Any) -> None:
        if type(value) is not int or not lo <= value <= hi:
            raise ValueError(f"{type(inst).__name__}.{attribute.name} must be an integer in "
                             f"{lo}..{hi}, not {value!r:.40}")

    return check


def _optional_int_in(lo: int, hi: int) -> Any:
    inner = _int_in(lo, hi)

    def check(inst: Any, attribute: Any, value: Any) -> None:
        if value is not None:
            inner(inst, attribute, value)

    return check


@attrs.frozen
class Deposit:
    """A peg-in: ``amount_sats`` paid to the federation by output ``vout`` of ``txid`` in
    the Bitcoin block ``block_hash`` at ``block_height``, to be credited to
    ``evm_address``. ``credited_block``/``credited_height`` name the sidechain block that
    credited it (set exactly when ``state`` is ``credited``)."""

    txid: bytes = attrs.field(validator=_bytes_of(32))
    vout: int = attrs.field(validator=_int_in(0, 0xFFFF_FFFF))
    block_hash: bytes = attrs.field(validator=_bytes_of(32))
    block_height: int = attrs.field(validator=_int_in(0, U64_MAX))
    amount_sats: int = attrs.field(validator=_int_in(1, MAX_SATS))
    evm_address: bytes = attrs.field(validator=_bytes_of(20))
    state: PegInState = attrs.field(default=PegInState.DETECTED,
                                    validator=attrs.validators.instance_of(PegInState))
    credited_block: bytes | None = attrs.field(default=None, validator=_optional_bytes_of(32))
    credited_height: int | None = attrs.field(default=None,
                                              validator=_optional_int_in(0, U64_MAX))

    def __attrs_post_init__(self) -> None:
        credited = self.state is PegInState.CREDITED
        if credited != (self.credited_block is not None) or credited != (
                self.credited_height is not None):
            raise ValueError(f"deposit {self.txid[::-1].hex()}: a credited deposit names the "
                             "block that credited it, and only a credited one")

    @property
    def key(self) -> tuple[bytes, bytes]:
        """What a sidechain block claims: (bitcoin txid, bitcoin block hash)."""
        return (self.txid, self.block_hash)


@attrs.frozen
class Refusal:
    """A payment to the federation that is not a valid peg-in, and why (never credited)."""

    txid: bytes = attrs.field(validator=_bytes_of(32))
    block_hash: bytes = attrs.field(validator=_bytes_of(32))
    block_height: int = attrs.field(validator=_int_in(0, U64_MAX))
    amount_sats: int = attrs.field(validator=_int_in(0, MAX_SATS))
    reason: str = attrs.field(validator=attrs.validators.instance_of(str))
