"""The node's Prometheus figures, beside otp's own collector.

One registry for the whole node process (as prometheus_client's default one is): the chain
actor updates these as it goes; the MetricsActor serves them with otp's per-process figures.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REGISTRY = CollectorRegistry(auto_describe=True)

HEAD_HEIGHT = Gauge("alys_chain_head_height", "Height of the head block", registry=REGISTRY)
FINALIZED_HEIGHT = Gauge(
    "alys_chain_finalized_height", "Height of the last finalized block", registry=REGISTRY
)
BLOCKS_PRODUCED = Counter(
    "alys_chain_blocks_produced", "Blocks this node produced", registry=REGISTRY
)
BLOCKS_IMPORTED = Counter(
    "alys_chain_blocks_imported", "Blocks imported (own and received)", registry=REGISTRY
)
IMPORT_SECONDS = Histogram(
    "alys_chain_import_seconds",
    "Time to validate, execute and store one block",
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
    registry=REGISTRY,
)
POW_SUBMITTED = Counter(
    "alys_auxpow_submitted", "AuxPoW proofs accepted from miners", registry=REGISTRY
)
POW_REJECTED = Counter(
    "alys_auxpow_rejected", "AuxPoW proofs rejected", ["rule"], registry=REGISTRY
)
