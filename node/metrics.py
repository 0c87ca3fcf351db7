"""The node's Prometheus figures, beside otp's own collector.

One registry for the whole node process (as prometheus_client's default one is): the chain
actor updates these as it goes; the MetricsActor serves them with otp's per-process figures.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

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
SYNC_CURRENT = Gauge("alys_sync_current_height", "Sync: the node's head height",
                     registry=REGISTRY)
SYNC_TARGET = Gauge("alys_sync_target_height",
                    "Sync: the best head among the peers sync trusts", registry=REGISTRY)
SYNC_BLOCKS_PER_SECOND = Gauge("alys_sync_blocks_per_second",
                               "Sync: blocks imported per second (last few seconds)",
                               registry=REGISTRY)
SYNC_PEERS = Gauge("alys_sync_peers", "Sync: connected peers", registry=REGISTRY)
SYNC_SYNCED = Gauge("alys_sync_synced", "Sync: 1 when the node has every block its peers "
                    "told it of, else 0", registry=REGISTRY)
SYNC_IN_FLIGHT = Gauge("alys_sync_requests_in_flight", "Sync: blocks-by-range requests out",
                       registry=REGISTRY)
SYNC_DOWNLOADED = Gauge("alys_sync_blocks_waiting",
                        "Sync: blocks downloaded and verified, waiting for import",
                        registry=REGISTRY)
SYNC_FAILURES = Counter("alys_sync_range_failures", "Sync: ranges that failed, by why",
                        ["failure"], registry=REGISTRY)
POW_SUBMITTED = Counter(
    "alys_auxpow_submitted", "AuxPoW proofs accepted from miners", registry=REGISTRY
)
POW_REJECTED = Counter(
    "alys_auxpow_rejected", "AuxPoW proofs rejected", ["rule"], registry=REGISTRY
)


class CacheFigures:
    """Hits and misses of a client's LRU caches (the execution client's blocks,
    transactions and receipts; the Bitcoin client's blocks and transactions), kept as plain
    ints by the caches and turned into Prometheus samples at scrape time:
    ``<prefix>_hits_total``, ``<prefix>_misses_total`` and ``<prefix>_hit_ratio`` (hits /
    lookups, 0 before the first lookup), each labelled with the cache."""

    def __init__(self, prefix: str = "alys_execution_cache",
                 owner: str = "the execution client") -> None:
        self.prefix = prefix
        self.owner = owner
        self.hits: dict[str, int] = {}
        self.misses: dict[str, int] = {}

    def hit(self, cache: str) -> None:
        self.hits[cache] = self.hits.get(cache, 0) + 1

    def miss(self, cache: str) -> None:
        self.misses[cache] = self.misses.get(cache, 0) + 1

    def ratio(self, cache: str) -> float:
        hits, misses = self.hits.get(cache, 0), self.misses.get(cache, 0)
        return hits / (hits + misses) if hits + misses else 0.0

    def collect(self) -> Iterator[Metric]:
        names = sorted(set(self.hits) | set(self.misses))
        hits = CounterMetricFamily(f"{self.prefix}_hits",
                                   f"Lookups answered from {self.owner}'s cache",
                                   labels=["cache"])
        misses = CounterMetricFamily(f"{self.prefix}_misses",
                                     f"Lookups {self.owner} had to fetch",
                                     labels=["cache"])
        ratio = GaugeMetricFamily(f"{self.prefix}_hit_ratio",
                                  f"Share of {self.owner}'s lookups answered from its "
                                  "cache", labels=["cache"])
        for name in names:
            hits.add_metric([name], self.hits.get(name, 0))
            misses.add_metric([name], self.misses.get(name, 0))
            ratio.add_metric([name], self.ratio(name))
        yield hits
        yield misses
        yield ratio


EXECUTION_CACHE = CacheFigures()
REGISTRY.register(EXECUTION_CACHE)
#: The Bitcoin client's caches (blocks and transactions by hash):
#: ``alys_bitcoin_cache_{hits,misses}_total`` and ``alys_bitcoin_cache_hit_ratio``.
BITCOIN_CACHE = CacheFigures("alys_bitcoin_cache", "the Bitcoin client")
REGISTRY.register(BITCOIN_CACHE)
#: Peg-ins (the BridgeActor): deposits by the state they reached, refusals, and credited
#: deposits whose Bitcoin block left the best chain (each one needs an operator).
PEGIN_DEPOSITS = Counter("alys_pegin_deposits", "Peg-in deposits that reached a state "
                         "(detected, confirmed, credited, dropped by a reorg)", ["state"],
                         registry=REGISTRY)
PEGIN_REFUSED = Counter("alys_pegin_refused", "Payments to the federation refused as peg-ins "
                        "(no or malformed OP_RETURN, dust, the zero address)", registry=REGISTRY)
PEGIN_REORGED_CREDITED = Counter("alys_pegin_reorged_credited",
                                 "Credited peg-ins whose Bitcoin block left the best chain",
                                 registry=REGISTRY)
PEGIN_SCAN_HEIGHT = Gauge("alys_pegin_scan_height", "The next Bitcoin height the bridge "
                          "scans with enough confirmations", registry=REGISTRY)
PEGIN_BITCOIN_TIP = Gauge("alys_pegin_bitcoin_tip", "Bitcoin's best height as the bridge "
                          "last saw it", registry=REGISTRY)
PEGIN_CREDITED_BLOCKS = Counter("alys_pegin_credited_in_blocks", "Peg-ins credited by "
                                "blocks this node imported", registry=REGISTRY)
#: Peg-outs (the FederationActor).
PEGOUT_REQUESTS = Counter("alys_pegout_requests", "Peg-out requests that reached a state "
                          "(requested, proposed, signed, broadcast, confirmed), by state",
                          ["state"], registry=REGISTRY)
PEGOUT_REFUSED = Counter("alys_pegout_refused", "Burns in the bridge contract the federation "
                         "does not pay (below the minimum, an address it cannot pay)",
                         registry=REGISTRY)
PEGOUT_PROPOSALS = Counter("alys_pegout_proposals", "Peg-out proposals by what became of "
                           "them on this node (proposed, signed, broadcast, confirmed, replaced)",
                           ["state"], registry=REGISTRY)
PEGOUT_BAD_SIGNATURES = Counter("alys_pegout_bad_signatures", "Peg-out signature sets from "
                                "peers that did not verify", registry=REGISTRY)
PEGOUT_REFUSED_BLOCKS = Counter("alys_pegout_refused_blocks", "Blocks refused for their "
                                "peg-out proposal or finalized peg-outs", registry=REGISTRY)
PEGOUT_OPEN = Gauge("alys_pegout_open_requests", "Peg-out requests no proposal pays yet",
                    registry=REGISTRY)
PEGOUT_COINS = Gauge("alys_pegout_federation_sats", "Satoshis in the federation's coins as "
                     "the peg-out book tracks them", registry=REGISTRY)
PEGOUT_SIGN_SECONDS = Histogram("alys_pegout_sign_seconds", "Time to sign the open proposals "
                                "when PoW is queued", registry=REGISTRY)
