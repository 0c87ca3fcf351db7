"""Requests to the EngineActor, and its answers."""

from __future__ import annotations

import attrs

import otp

from ..execution.embedded import STATE_ANSWER_BYTES
from ..integration.engine import PayloadStatusError
from ..types.execution import ZERO_HASH, EngineError, ExecutionPayload, Withdrawal


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


# -- snap sync: the state at a pivot block (embedded engine only) --------------------------------
#
# An external execution client (Geth) downloads its own state: each of these is answered with
# an EngineError saying so. See node.workflows.state_sync for the download's rules and
# node.execution.embedded.EmbeddedEngine for what each does.


@attrs.frozen
class GetStateNodes(otp.Request[tuple[bytes, ...] | EngineError]):
    """The values stored under ``hashes`` (trie nodes, code), position by position, empty
    for a hash the engine lacks; at most ``max_bytes`` of values in all (the answer stops
    early beyond that: the rest count as missing). Only values that hash to their key."""

    hashes: tuple[bytes, ...]
    max_bytes: int = STATE_ANSWER_BYTES


@attrs.frozen
class PutStateNodes(otp.Request[int | EngineError]):
    """Store downloaded ``(hash, value)`` pairs in one batch; replies how many. A value that
    does not hash to its key is refused (EngineError, nothing stored)."""

    nodes: tuple[tuple[bytes, bytes], ...]


@attrs.frozen
class CheckState(otp.Request[str | None | EngineError]):
    """Is the whole state under ``root`` stored? None if so, else what is missing, in words
    (a walk of every node: as long as the state is large)."""

    root: bytes


@attrs.frozen
class SetPivot(otp.Request[bytes | EngineError]):
    """Make ``payloads[-1]`` the head without executing history: its state must be whole
    (:class:`CheckState`); ``payloads`` are it and its ancestors, oldest first (at least 256
    of them unless the first one's parent is a block the engine has). Replies the head's
    hash, or the EngineError saying why not (nothing changed)."""

    payloads: tuple[ExecutionPayload, ...]
    safe: bytes = ZERO_HASH
    finalized: bytes = ZERO_HASH
    #: The caller's download found the state whole (:mod:`node.workflows.state_sync`): the
    #: engine checks the root's node is stored instead of walking the whole state again.
    state_whole: bool = False


@attrs.frozen
class RecordSnap(otp.Request[None | EngineError]):
    """Record that a snap sync to the pivot height ``pivot`` is under way (None: that none
    is), durably: the engine's restart then leaves the history stored up to the pivot
    unexecuted instead of executing it all again. Taking the pivot (:class:`SetPivot`)
    ends it. An EngineError for a height that is not a u64 above 0."""

    pivot: int | None


@attrs.frozen
class GetSnap(otp.Request[int | None | EngineError]):
    """The pivot height of the snap sync under way (:class:`RecordSnap`), or None."""
