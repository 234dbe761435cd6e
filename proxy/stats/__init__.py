"""Envoy-compatible stats, aggregated over every process through shared memory (proxy/stats/README.md).

    registry = StatRegistry.for_bootstrap(bootstrap)    # every process, same result
    store = registry.make_store(n_slots=64)              # master, before fork
    slot = store.alloc_slot()                            # master, per process it forks
    stats = store.view(slot)                             # in that process: its writer
    stats.inc(registry.cluster_indexes("backend").upstream_rq_total)
    store.retire(slot)                                   # master, once that process exited

    reader = StatsReader(registry, store, host_table=table, server=ServerInfo(concurrency=4))
    status, content_type, body = handle(reader, "/stats/prometheus", "usedonly")

Modules: registry (names and indexes), reader (snapshot, computed stats, reset), format (text,
json, prometheus), tags (Envoy's tag extraction). The store itself is
proxy._fastpath.stats (StatsStore, SlotStats; cimport-able).
"""
from proxy._fastpath.stats import (BUCKET_BOUNDS, HIST_COUNT, HIST_SUM, HIST_WIDTH, NBUCKETS,
                                   SlotStats, StatsStore)
from proxy.stats.format import Options, handle, render, render_json, render_prometheus, render_text
from proxy.stats.reader import (SUPPORTED_QUANTILES, Histogram, ServerInfo, Snapshot, Stat,
                                StatsReader, quantiles)
from proxy.stats.registry import (ClusterStatIndexes, HttpStatIndexes, ListenerStatIndexes,
                                  StatRegistry, carry_over, listener_stat_prefix)
from proxy.stats.tags import extract_tags, prometheus_name

__all__ = [
    "BUCKET_BOUNDS", "HIST_COUNT", "HIST_SUM", "HIST_WIDTH", "NBUCKETS", "SlotStats", "StatsStore",
    "Options", "handle", "render", "render_json", "render_prometheus", "render_text",
    "SUPPORTED_QUANTILES", "Histogram", "ServerInfo", "Snapshot", "Stat", "StatsReader",
    "quantiles", "ClusterStatIndexes", "HttpStatIndexes", "ListenerStatIndexes", "StatRegistry",
    "carry_over", "listener_stat_prefix", "extract_tags", "prometheus_name",
]
