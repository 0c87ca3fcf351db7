"""The SyncActor's interface: what it publishes and answers.

The actor is registered as ``sync`` (``node/supervision.toml``, under the network supervisor).

Progress
    :class:`~node.workflows.sync.SyncProgress` (current height, target, blocks per second,
    connected peers, synced) on the bus topic :data:`SYNC_TOPIC` whenever it changes, and at
    least once a second while syncing. The ChainActor follows ``synced``: it produces blocks
    and hands out AuxPoW work only while synced. A node with no peers, or whose peers are not
    ahead, is synced.

Requests
    ``await otp.call("sync", GetSyncProgress())`` returns the current progress (the node's
    RPC and ``/metrics`` serve it).
"""

from __future__ import annotations

from typing import Final

import attrs

import otp

from ..workflows.sync import SyncProgress

__all__ = ["SYNC_TOPIC", "GetSyncProgress", "SyncProgress"]

#: The bus topic of :class:`SyncProgress` events.
SYNC_TOPIC: Final = "sync.progress"


@attrs.frozen
class GetSyncProgress(otp.Request[SyncProgress]):
    """Call: where sync stands now."""
