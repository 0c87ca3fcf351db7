"""Requests to the AuxPowActor (merged-mining work and proofs), and its answers."""

from __future__ import annotations

from typing import Any

import attrs

import otp

from ..types.bitcoin import bits_to_target


def _optional_bytes(n: int) -> Any:
    def check(_inst: Any, attribute: Any, value: Any) -> None:
        if value is not None and (not isinstance(value, bytes) or len(value) != n):
            raise ValueError(f"{attribute.name} must be {n} bytes or None, not {value!r:.80}")

    return check


def _bytes(n: int | None) -> Any:
    def check(_inst: Any, attribute: Any, value: Any) -> None:
        if not isinstance(value, bytes) or (n is not None and len(value) != n):
            raise ValueError(f"{attribute.name} must be {n or 'some'} bytes, not {value!r:.80}")

    return check


@attrs.frozen
class CreateAuxBlock(otp.Request["AuxBlock | NoWork | Unavailable"]):
    """Work for a merged miner whose fee share goes to ``fee_recipient`` (20 bytes; None: the
    chain's configured recipient). Replies :class:`AuxBlock`, :class:`NoWork` or
    :class:`Unavailable`."""

    fee_recipient: bytes | None = attrs.field(default=None, validator=_optional_bytes(20))


@attrs.frozen
class AuxBlock:
    """Work, as ``createauxblock`` describes it to miners.

    ``hash`` is what the miner commits to (SHA256d of the unfinalized range's hashes).
    ``previous_block_hash`` is the block that carries the latest AuxPoW and ``height`` that
    block's height + 1, as the original answers (its ``get_last_finalized_block`` returns the
    carrier, despite its name; ALYS.md)."""

    hash: bytes
    chain_id: int
    previous_block_hash: bytes
    bits: int
    height: int

    @property
    def target(self) -> int:
        return bits_to_target(self.bits)


@attrs.frozen
class NoWork:
    """No work to hand out: the chain is syncing, or there is no unfinalized block yet."""

    reason: str


@attrs.frozen
class SubmitAuxBlock(otp.Request["AuxPowRefused | Unavailable | None"]):
    """A miner's proof for the work whose hash is ``hash``. Replies None when it is queued for
    the next block, else :class:`AuxPowRefused` or :class:`Unavailable`."""

    hash: bytes = attrs.field(validator=_bytes(32))
    auxpow: bytes = attrs.field(validator=_bytes(None))


@attrs.frozen
class AuxPowRefused:
    """A refused proof. ``rule``: ``"unknown-work"`` (no work was handed out for the hash, or
    it is too old), else the consensus rule that failed (``auxpow-pow``, ``auxpow-bits``...)."""

    rule: str
    message: str


@attrs.frozen
class Unavailable:
    """The chain actor did not answer within the wait: it is down or restarting, and its
    supervisor is on it. Ask again shortly."""

    reason: str

