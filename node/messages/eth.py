"""Ethereum JSON-RPC between the EthRpcActor and the EngineActor, and the engine's events.

The EthRpcActor checks every parameter where it enters (``node.execution.eth_api``) and asks
the EngineActor with :class:`EthRequest`, whose arguments are already converted values; the
answer is the result as encoded JSON bytes, or an :class:`EthError`. The EngineActor
publishes :class:`EthHead` for every block that joins the canonical chain and
:class:`EthPendingTx` for every transaction the pool accepts, on :data:`ETH_TOPIC`, for
subscriptions and filters.
"""

from __future__ import annotations

from typing import Any, Final

import attrs

import otp

#: The bus topic of the engine's events.
ETH_TOPIC: Final = "eth.events"

#: geth's generic server error code, and its code for a reverted call.
SERVER_ERROR: Final = -32000
EXECUTION_REVERTED: Final = 3


@attrs.frozen
class EthError:
    """A JSON-RPC error answer: code, message and the optional ``data`` member."""

    code: int
    message: str
    data: str | None = None


@attrs.frozen
class EthRequest(otp.Request["bytes | EthError"]):
    """An eth method with checked, converted arguments (see ``node.execution.eth_api``)."""

    method: str
    args: tuple[Any, ...] = ()


@attrs.frozen
class EthLog:
    """A log of a new canonical block, for matching against filters: its address and
    topics, and its JSON object, encoded."""

    address: bytes
    topics: tuple[bytes, ...]
    json: bytes


@attrs.frozen
class EthHead:
    """A block that joined the canonical chain: its number and hash, its header as
    ``newHeads`` sends it (encoded JSON), and its logs."""

    number: int
    hash: bytes
    header_json: bytes
    logs: tuple[EthLog, ...] = ()


@attrs.frozen
class EthPendingTx:
    """A transaction the pool accepted: its hash and its pending JSON object, encoded."""

    hash: bytes
    json: bytes
