"""Engine API client (JSON-RPC 2.0 over HTTP, JWT HS256) and the original Alys's block flow.

:class:`EngineClient` talks to an execution client (Geth, Reth) on its authenticated Engine
API port (8551 by default). It follows the execution-apis specification
(``ethereum/execution-apis``):

* ``src/engine/authentication.md`` — every HTTP request carries its own JWT in
  ``Authorization: Bearer <token>``: algorithm HS256 (``none`` is never used), the claim
  ``iat`` = the current unix time, signed with the 256-bit secret that both sides read from a
  hex file (:func:`load_jwt_secret`). The execution client accepts ``iat`` within ±60 s.
* ``src/engine/common.md`` — JSON-RPC 2.0 envelopes; the error codes (``-38001`` unknown
  payload, ...) surface as :class:`EngineError` with ``code`` set; ``engine_exchangeCapabilities``
  takes and returns method names with version suffixes; timeouts (8 s for forkchoiceUpdated
  and newPayload, 1 s for getPayload and exchangeCapabilities, which a consensus client MAY
  exceed — we wait ``timeout`` seconds, 8 by default, for every call).
* ``src/engine/shanghai.md`` — ``engine_forkchoiceUpdatedV2``, ``engine_getPayloadV2``,
  ``engine_newPayloadV2``, with the V2 structures of :mod:`node.types.execution`.

Everything that can go wrong in a call — a JSON-RPC error object, an HTTP status other than
200, a connection failure, no answer within ``timeout``, a body that is not a JSON-RPC 2.0
response to *this* request, a result of the wrong shape, a body larger than
``max_response_bytes`` — raises :class:`EngineError` naming the method. Responses are read
leniently with respect to unknown members (execution clients add members of later forks,
e.g. Geth's ``blobGasUsed: null``); everything the V2 shapes define is checked strictly.

The flow of the original (ALYS.md, "Execution layer"), usable with any
:class:`~node.types.execution.ExecutionEngine` (this client or the embedded engine):

* :func:`build_block` — ``forkchoiceUpdated(head, safe = finalized = finalized, attributes
  {timestamp, prevRandao 0, suggestedFeeRecipient, withdrawals})`` then ``getPayload``.
* :func:`commit_block` — ``forkchoiceUpdated(parent)`` → ``newPayload`` →
  ``forkchoiceUpdated(latestValidHash)``; returns the new head hash.

And the restart path, for every engine alike (the embedded one, the EVM of the execution
issue, Geth): :func:`resync` brings an engine that lacks some of the node's stored blocks
(restarted from an older state, a fresh data directory, a crash between the engine's commit
and the node's write) to the stored head. It finds the last stored block the engine has,
re-sends every later stored payload with ``newPayload``, and moves the forkchoice with a
safe/finalized hash only once the engine has that block (sending the finalized hash of a
block the engine lacks is what made a node killed after its first finalization fail every
boot with ``-38002``).
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Final, Protocol, TypeVar

import httpx
import trio

from node.integration.jsonrpc import (
    DEFAULT_MAX_RESPONSE_BYTES,
    DEFAULT_TIMEOUT,
    JWT_SECRET_SIZE,
    EngineUnavailable,
    EngineUnreachable,
    JsonRpcClient,
)
from node.types.execution import (
    DEFAULT_FEE_RECIPIENT,
    ENGINE_CAPABILITIES,
    HASH_SIZE,
    INVALID_PARAMS,
    PAYLOAD_ID_SIZE,
    ZERO_HASH,
    EngineError,
    ExecutionEngine,
    ExecutionPayload,
    ForkchoiceState,
    ForkchoiceUpdatedResult,
    GetPayloadResult,
    PayloadAttributes,
    PayloadStatus,
    PayloadStatusKind,
    Receipt,
    SchemaError,
    Withdrawal,
    data_from_json,
    data_to_json,
    quantity_from_json,
)

__all__ = [
    "DEFAULT_ENGINE_URL",
    "DEFAULT_MAX_RESPONSE_BYTES",
    "DEFAULT_TIMEOUT",
    "JWT_SECRET_SIZE",
    "EngineClient",
    "EngineError",
    "EngineUnavailable",
    "EngineUnreachable",
    "ExecutionEngine",
    "JwtSecretError",
    "PayloadStatusError",
    "RESYNC_PROGRESS_EVERY",
    "ResyncIncomplete",
    "StoredChain",
    "build_block",
    "commit_block",
    "load_jwt_secret",
    "resync",
]

DEFAULT_ENGINE_URL: Final = "http://127.0.0.1:8551"

_FCU: Final = "engine_forkchoiceUpdatedV2"
_GET: Final = "engine_getPayloadV2"
_NEW: Final = "engine_newPayloadV2"
_CAPS: Final = "engine_exchangeCapabilities"
_HEX64: Final = re.compile(r"[0-9a-fA-F]{64}")


class JwtSecretError(ValueError):
    """The JWT secret file is missing, unreadable or not 32 bytes of hex."""


def load_jwt_secret(path: str | os.PathLike[str]) -> bytes:
    """Read a JWT secret file: 64 hex digits (32 bytes), an optional ``0x`` prefix, and
    surrounding whitespace, as execution clients write ``jwt.hex`` (authentication.md, "Key
    distribution"). Raises :class:`JwtSecretError` naming the file and the problem."""
    where = os.fspath(path)
    try:
        with open(where, "rb") as f:
            raw = f.read(4096)
    except OSError as exc:
        raise JwtSecretError(
            f"JWT secret file {where}: cannot read it: {exc.strerror or exc}"
        ) from exc
    try:
        text = raw.decode("ascii").strip()
    except UnicodeDecodeError as exc:
        raise JwtSecretError(
            f"JWT secret file {where}: expected 64 hex digits, found non-ASCII bytes"
        ) from exc
    if text[:2] in ("0x", "0X"):
        text = text[2:]
    if len(text) != 2 * JWT_SECRET_SIZE:
        raise JwtSecretError(
            f"JWT secret file {where}: expected 64 hex digits (a 256-bit secret), "
            f"found {len(text)} characters"
        )
    if _HEX64.fullmatch(text) is None:
        bad = next(c for c in text if c not in "0123456789abcdefABCDEF")
        raise JwtSecretError(f"JWT secret file {where}: {bad!r} is not a hex digit")
    return bytes.fromhex(text)


class PayloadStatusError(EngineError):
    """The engine answered, but with a payload status the block flow cannot go on with
    (``INVALID``, ``SYNCING``, ``ACCEPTED``, or ``VALID`` without what ``VALID`` promises).
    ``status`` is the engine's :class:`~node.types.execution.PayloadStatus`."""

    def __init__(self, method: str, status: PayloadStatus, problem: str) -> None:
        self.status = status
        detail = f"{problem}: {status.status.value}"
        if status.latest_valid_hash is not None:
            detail += f", latest valid hash 0x{status.latest_valid_hash.hex()}"
        if status.validation_error:
            detail += f", {status.validation_error}"
        super().__init__(None, detail, method)

    def __reduce__(self) -> Any:
        return (_rebuild_status_error, (self.method, self.status, self.message))


def _rebuild_status_error(method: str, status: PayloadStatus, message: str) -> PayloadStatusError:
    err = PayloadStatusError(method, status, "")
    err.message = message
    err.args = (str(err),)
    return err


class EngineClient(JsonRpcClient):
    """An :class:`~node.types.execution.ExecutionEngine` over HTTP: see the module docstring.

    ``transport`` replaces httpx's network transport (tests pass ``httpx.MockTransport``);
    ``clock`` gives the ``iat`` claim (unix seconds). Use as ``async with EngineClient(...)``
    or call :meth:`aclose`. A server that cannot be reached or does not answer in time
    raises :class:`~node.integration.jsonrpc.EngineUnreachable`.
    """

    what = "engine"

    def __init__(
        self,
        url: str,
        jwt_secret: bytes,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if jwt_secret is None:
            raise ValueError("EngineClient jwt_secret must be 32 bytes (a 256-bit secret), "
                             "got None")
        super().__init__(url, transport=transport, timeout=timeout,
                         max_response_bytes=max_response_bytes, jwt_secret=jwt_secret,
                         clock=clock)

    # ------------------------------------------------------------------ Engine API

    async def exchange_capabilities(
        self, methods: Sequence[str] = ENGINE_CAPABILITIES
    ) -> list[str]:
        """``engine_exchangeCapabilities`` (common.md)."""
        await trio.lowlevel.checkpoint()
        if isinstance(methods, str | bytes) or not all(isinstance(m, str) for m in methods):
            raise EngineError(INVALID_PARAMS, "expected a list of method names", _CAPS)
        result = await self.call(_CAPS, [list(methods)])
        if not isinstance(result, list) or not all(isinstance(m, str) for m in result):
            raise EngineError(
                None, f"malformed result: expected an array of strings, got {result!r:.200}", _CAPS
            )
        return result

    async def forkchoice_updated(
        self, state: ForkchoiceState, attributes: PayloadAttributes | None = None
    ) -> ForkchoiceUpdatedResult:
        """``engine_forkchoiceUpdatedV2`` (shanghai.md)."""
        await trio.lowlevel.checkpoint()
        if not isinstance(state, ForkchoiceState):
            raise EngineError(INVALID_PARAMS, f"expected a ForkchoiceState, got {state!r}", _FCU)
        if attributes is not None and not isinstance(attributes, PayloadAttributes):
            raise EngineError(
                INVALID_PARAMS, f"expected PayloadAttributes or None, got {attributes!r}", _FCU
            )
        params = [state.to_json(), None if attributes is None else attributes.to_json()]
        result = await self.call(_FCU, params)
        return _parse(
            lambda r: ForkchoiceUpdatedResult.from_json(r, "result", strict=False), result, _FCU
        )

    async def get_payload(self, payload_id: bytes) -> GetPayloadResult:
        """``engine_getPayloadV2`` (shanghai.md)."""
        await trio.lowlevel.checkpoint()
        if type(payload_id) is not bytes or len(payload_id) != PAYLOAD_ID_SIZE:
            raise EngineError(
                INVALID_PARAMS, f"a payload id is {PAYLOAD_ID_SIZE} bytes, got {payload_id!r}", _GET
            )
        result = await self.call(_GET, [data_to_json(payload_id)])
        return _parse(lambda r: GetPayloadResult.from_json(r, "result", strict=False), result, _GET)

    async def new_payload(self, payload: ExecutionPayload) -> PayloadStatus:
        """``engine_newPayloadV2`` (shanghai.md)."""
        await trio.lowlevel.checkpoint()
        if not isinstance(payload, ExecutionPayload):
            raise EngineError(
                INVALID_PARAMS, f"expected an ExecutionPayload, got {payload!r}", _NEW
            )
        result = await self.call(_NEW, [payload.to_json()])
        return _parse(lambda r: PayloadStatus.from_json(r, "result", strict=False), result, _NEW)

    # ------------------------------------------------------------------ eth (same port)

    async def latest_block(self) -> tuple[int, bytes]:
        """``eth_getBlockByNumber("latest", false)`` on the authenticated port (execution
        clients serve the ``eth`` namespace there too): the head's number and hash."""
        result = await self.call("eth_getBlockByNumber", ["latest", False])
        found = self._block_ref(result, "eth_getBlockByNumber")
        if found is None:
            raise EngineError(None, "malformed result: no latest block", "eth_getBlockByNumber")
        return found

    async def block_number(self, block_hash: bytes) -> int | None:
        """``eth_getBlockByHash(hash, false)``: the block's number, None when it is unknown."""
        result = await self.call("eth_getBlockByHash", [data_to_json(block_hash), False])
        found = self._block_ref(result, "eth_getBlockByHash")
        return None if found is None else found[0]

    async def receipts(self, block_hash: bytes) -> list[Receipt]:
        """``eth_getBlockReceipts(hash)``: the block's receipts, in order."""
        method = "eth_getBlockReceipts"
        result = await self.call(method, [data_to_json(block_hash)])
        if result is None:
            raise EngineError(None, f"the engine does not have block 0x{block_hash.hex()}",
                              method)
        if not isinstance(result, list):
            raise EngineError(None, f"malformed result: expected an array of receipts, got "
                              f"{result!r:.100}", method)
        receipts = []
        for i, item in enumerate(result):
            try:
                receipts.append(Receipt.from_json(item, f"result[{i}]"))
            except SchemaError as exc:
                raise EngineError(None, f"malformed result: {exc}", method) from exc
        return receipts

    @staticmethod
    def _block_ref(result: Any, method: str) -> tuple[int, bytes] | None:
        if result is None:
            return None
        if not isinstance(result, dict):
            raise EngineError(None, f"malformed result: expected a block, got {result!r:.100}",
                              method)
        try:
            number = quantity_from_json(result.get("number"), "result.number", bits=64)
            hash_ = data_from_json(result.get("hash"), "result.hash", size=HASH_SIZE)
        except SchemaError as exc:
            raise EngineError(None, f"malformed result: {exc}", method) from exc
        return number, hash_

_T = TypeVar("_T")


def _parse(parser: Callable[[Any], _T], result: Any, method: str) -> _T:
    """Read a result leniently (unknown members ignored) at the path ``result``."""
    try:
        return parser(result)
    except SchemaError as exc:
        raise EngineError(None, f"malformed result: {exc}", method) from exc


# --------------------------------------------------------------------------- the block flow


def _checked_hash(value: bytes | None, name: str) -> bytes:
    if value is None:
        return ZERO_HASH
    if type(value) is not bytes or len(value) != HASH_SIZE:
        raise ValueError(f"{name} must be a {HASH_SIZE}-byte hash, got {value!r}")
    return value


async def build_block(
    engine: ExecutionEngine,
    head: bytes,
    finalized: bytes | None,
    timestamp: int,
    fee_recipient: bytes = DEFAULT_FEE_RECIPIENT,
    withdrawals: Sequence[Withdrawal] = (),
    build_time: float = 0.0,
) -> ExecutionPayload:
    """Build a payload on ``head`` as the original does: ``forkchoiceUpdated(head, safe =
    finalized = finalized (zero when None), {timestamp, prevRandao 0, fee_recipient,
    withdrawals})``, then, ``build_time`` seconds later, ``getPayload`` (Geth answers
    ``getPayload`` with the empty payload until its first full build is done). Raises
    :class:`PayloadStatusError` when the engine will not build (head ``INVALID`` or
    ``SYNCING``, or no payload id) and :class:`EngineError` for failed calls."""
    await trio.lowlevel.checkpoint()
    head = _checked_hash(head, "head")
    fin = _checked_hash(finalized, "finalized")
    attributes = PayloadAttributes(
        timestamp=timestamp,
        prev_randao=ZERO_HASH,
        suggested_fee_recipient=fee_recipient,
        withdrawals=tuple(withdrawals),
    )
    result = await engine.forkchoice_updated(ForkchoiceState(head, fin, fin), attributes)
    status = result.payload_status
    if status.status is not PayloadStatusKind.VALID:
        raise PayloadStatusError(_FCU, status, f"cannot build on the head 0x{head.hex()}")
    if result.payload_id is None:
        raise PayloadStatusError(
            _FCU, status, f"the engine started no build process on 0x{head.hex()}"
        )
    if build_time > 0:
        await trio.sleep(build_time)
    built = await engine.get_payload(result.payload_id)
    payload = built.execution_payload
    if payload.parent_hash != head:
        raise EngineError(
            None,
            f"the engine built on 0x{payload.parent_hash.hex()}, not on the head 0x{head.hex()}",
            _GET,
        )
    return payload


async def commit_block(
    engine: ExecutionEngine, payload: ExecutionPayload, finalized: bytes | None
) -> bytes:
    """Import ``payload`` and make it the head as the original does:
    ``forkchoiceUpdated(parent)`` → ``newPayload`` → ``forkchoiceUpdated(latestValidHash)``,
    with safe = finalized = ``finalized`` (zero when None). Returns the new head hash.

    Raises :class:`PayloadStatusError` when the parent is ``INVALID``, when ``newPayload``
    does not answer ``VALID`` with the payload's hash (``INVALID``; ``SYNCING`` or ``ACCEPTED``
    give no latest valid hash to move to), or when the final forkchoice is not ``VALID``;
    :class:`EngineError` for failed calls. A ``SYNCING`` answer to the first forkchoiceUpdated
    is tolerated: ``newPayload`` then decides."""
    await trio.lowlevel.checkpoint()
    fin = _checked_hash(finalized, "finalized")
    first = await engine.forkchoice_updated(ForkchoiceState(payload.parent_hash, fin, fin))
    if first.payload_status.status is PayloadStatusKind.INVALID:
        raise PayloadStatusError(
            _FCU, first.payload_status, f"the parent 0x{payload.parent_hash.hex()} is invalid"
        )
    status = await engine.new_payload(payload)
    if status.status is not PayloadStatusKind.VALID or status.latest_valid_hash is None:
        raise PayloadStatusError(
            _NEW,
            status,
            f"block {payload.block_number} (0x{payload.block_hash.hex()}) was not accepted",
        )
    head = status.latest_valid_hash
    if head != payload.block_hash:
        raise PayloadStatusError(
            _NEW,
            status,
            f"VALID must name the payload's own hash 0x{payload.block_hash.hex()}",
        )
    last = await engine.forkchoice_updated(ForkchoiceState(head, fin, fin))
    if last.payload_status.status is not PayloadStatusKind.VALID:
        raise PayloadStatusError(_FCU, last.payload_status, f"cannot make 0x{head.hex()} the head")
    return head


# --------------------------------------------------------------------------- the restart path

#: While re-sending stored payloads, progress is reported every this many blocks.
RESYNC_PROGRESS_EVERY: Final = 128


class StoredChain(Protocol):
    """The node's stored canonical chain, as :func:`resync` reads it."""

    async def head_height(self) -> int | None:
        """The height of the stored head; None for an empty store."""
        ...

    async def finalized_height(self) -> int:
        """The height of the last finalized block."""
        ...

    async def payload_at(self, height: int) -> ExecutionPayload:
        """The execution payload of the canonical block at ``height`` (0..head)."""
        ...


class ResyncIncomplete(EngineUnavailable):
    """:func:`resync` ran out of time: ``done`` of ``total`` stored blocks were re-sent and
    the engine's forkchoice names the last of them, so the next call goes on from there."""

    def __init__(self, done: int, total: int, height: int) -> None:
        self.done, self.total, self.height = done, total, height
        super().__init__(None, f"the execution engine is still being given the stored "
                         f"blocks it lacks: {done} of {total} re-sent (at #{height})", "resync")

    def __reduce__(self) -> Any:
        return (ResyncIncomplete, (self.done, self.total, self.height))


async def resync(
    engine: ExecutionEngine,
    chain: StoredChain,
    *,
    progress: Callable[[int, int], Awaitable[None]] | None = None,
    deadline: float | None = None,
) -> int:
    """Bring ``engine`` to the stored head; returns how many payloads were re-sent.

    1. Start at the engine's head height (capped at the stored head) and walk down the
       stored chain until a block the engine has (``block_number``): the engine has every
       block below it. Reaching genesis, the engine must have the stored genesis payload,
       else it runs another chain and :class:`EngineError` says so.
    2. ``newPayload`` each later stored payload in order; each must be ``VALID``
       (:class:`PayloadStatusError` otherwise: the engine refuses a block the node stored).
    3. ``forkchoiceUpdated(block, safe, finalized)`` after each, as the block flow does,
       with the stored finalized payload as safe and finalized once the engine has it (its
       height is at most the re-sent block's), zero before. Following every block, not
       only the last, matters: ethereumjs (0.10.5) indexes a block's transactions and
       receipts only when a forkchoice names it, so a jump over re-sent blocks left their
       receipts unreadable there. The last one names the stored head (also when nothing was
       re-sent), so an engine that was ahead on a block the node never stored moves back
       to the node's head.

    ``progress(done, total)`` is awaited every :data:`RESYNC_PROGRESS_EVERY` blocks of a
    long catch-up.
    With a ``deadline`` (``trio.current_time()`` seconds), a catch-up still going when it
    passes leaves the forkchoice at the last re-sent block and raises
    :class:`ResyncIncomplete`: a caller that must answer in time (the EngineActor serving a
    build) answers that, and the next call starts where this one stopped.
    Works for any :class:`~node.types.execution.ExecutionEngine`.
    """
    await trio.lowlevel.checkpoint()
    head_height = await chain.head_height()
    if head_height is None:
        return 0
    finalized_height = await chain.finalized_height()
    finalized = (await chain.payload_at(finalized_height)).block_hash
    engine_height, _ = await engine.latest_block()
    known = min(engine_height, head_height)
    while True:
        payload = await chain.payload_at(known)
        if await engine.block_number(payload.block_hash) is not None:
            break
        if known == 0:
            raise EngineError(
                None, f"the execution engine lacks the stored genesis payload "
                f"0x{payload.block_hash.hex()}: it runs another chain (or another data "
                "directory) than this node's", "resync")
        known -= 1
    total = head_height - known
    last = payload
    for height in range(known + 1, head_height + 1):
        last = await chain.payload_at(height)
        status = await engine.new_payload(last)
        if status.status is not PayloadStatusKind.VALID:
            raise PayloadStatusError(
                _NEW, status, f"the engine refuses stored block {height} "
                f"(0x{last.block_hash.hex()})")
        await _forkchoice(engine, last.block_hash,
                          finalized if finalized_height <= height else ZERO_HASH)
        done = height - known
        if height < head_height:
            if deadline is not None and trio.current_time() >= deadline:
                raise ResyncIncomplete(done, total, height)
            if progress is not None and done % RESYNC_PROGRESS_EVERY == 0:
                await progress(done, total)
    if total == 0:
        await _forkchoice(engine, last.block_hash, finalized)
    return total


async def _forkchoice(engine: ExecutionEngine, head: bytes, finalized: bytes) -> None:
    result = await engine.forkchoice_updated(ForkchoiceState(head, finalized, finalized))
    if result.payload_status.status is not PayloadStatusKind.VALID:
        raise PayloadStatusError(_FCU, result.payload_status,
                                 f"cannot make stored block 0x{head.hex()} the head")
