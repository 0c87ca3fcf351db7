"""Requests to the EngineActor, and its answers."""

from __future__ import annotations

import attrs

import otp

from ..integration.engine import PayloadStatusError
from ..types.execution import ExecutionPayload, Withdrawal


@attrs.frozen
class GetGenesis(otp.Request[ExecutionPayload]):
    """The execution layer's block 0 as a payload (the consensus genesis wraps it)."""


@attrs.frozen
class BuildPayload(otp.Request[ExecutionPayload]):
    head: bytes
    finalized: bytes
    timestamp: int
    fee_recipient: bytes
    withdrawals: tuple[Withdrawal, ...] = ()


@attrs.frozen
class Committed:
    """A committed payload: the engine's new head and the block's fees in wei (effective
    tip x gas used, summed over its receipts)."""

    head: bytes
    fees: int


@attrs.frozen
class CommitPayload(otp.Request[Committed | PayloadStatusError]):
    """Execute ``payload`` and make it the head, with ``finalized`` as safe and finalized.
    Replies :class:`Committed`, or the :class:`PayloadStatusError` when the engine refuses
    the payload (an answer, not an engine fault: the actor carries on)."""

    payload: ExecutionPayload
    finalized: bytes
