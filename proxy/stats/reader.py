"""StatsReader: one consistent view of every stat (stored + computed), for the admin endpoints.

    reader = StatsReader(registry, store, host_table=table, server=ServerInfo(concurrency=4))
    snap = reader.snapshot()          # Snapshot: counters, gauges, histograms (with quantiles)
    reader.reset_counters()           # /reset_counters: a reader-local baseline, no shared write

Computed stats (not stored; derived at read time):
  cluster.<name>.membership_total      slots of the cluster in use and not DNS-removed
  cluster.<name>.membership_healthy    members usable and not degraded
  cluster.<name>.membership_degraded   members usable and degraded (DEGRADED_ACTIVE_HC)
  cluster.<name>.membership_excluded   members draining
  cluster.<name>.max_host_weight       largest member weight
  cluster.<name>.lb_healthy_panic      the host table's per-cluster panic counter (counter)
  cluster.<name>.health_check.healthy  members without FAILED_ACTIVE_HC / PENDING_ACTIVE_HC
  cluster.<name>.health_check.degraded members with DEGRADED_ACTIVE_HC
  server.live / state / uptime / concurrency / hot_restart_epoch / parent_connections (0)
  server.memory_allocated / memory_heap_size / memory_physical_size (ServerInfo.memory())
  server.total_connections             sum of listener.*.downstream_cx_active (admin excluded)
  cluster_manager.active_clusters / warming_clusters (0)
  listener_manager.total_listeners_active / _warming (0) / _draining (0)
Without a host table the cluster ones read 0 (and are reported unused).

Histogram intervals: Envoy reports each histogram's quantiles over the last flush interval
(stats_flush_interval, 5 s) beside the cumulative ones. cyvoy has no flush timer: a snapshot
taken `flush_interval` or more after the previous flush closes the interval (the interval values
are the samples between the two flushes), `flush()` forces one. Before the second flush the
interval is empty and prints `nan` as in Envoy.
"""
from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

from proxy._fastpath import hosttable as _ht
from proxy._fastpath import stats as _st
from proxy.stats.registry import ADMIN, CODE_MAX, CODE_MIN, StatRegistry

SUPPORTED_QUANTILES = (0.0, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.995, 0.999, 1.0)
BUCKET_BOUNDS = _st.BUCKET_BOUNDS
NBUCKETS = _st.NBUCKETS
CODE_MAX_COUNT = CODE_MAX - CODE_MIN + 1

# Envoy's server.state values
SERVER_STATES = {"LIVE": 0, "DRAINING": 1, "PRE_INITIALIZING": 2, "INITIALIZING": 3}


def quantiles(buckets, qs=SUPPORTED_QUANTILES) -> list[float]:
    """Quantiles (ms) from disjoint bucket counts over BUCKET_BOUNDS, linear inside a bucket
    (bucket 0 spans [0, 0.5], the overflow bucket reports its lower bound). nan when empty."""
    total = sum(buckets)
    if total <= 0:
        return [math.nan] * len(qs)
    out = []
    nb = len(BUCKET_BOUNDS)
    for q in qs:
        rank = q * total
        cum = 0
        value = BUCKET_BOUNDS[-1]
        for b, c in enumerate(buckets):
            if c <= 0:
                continue
            if cum + c >= rank:
                lo = BUCKET_BOUNDS[b - 1] if b > 0 else 0.0
                if b >= nb:
                    value = lo
                else:
                    hi = BUCKET_BOUNDS[b]
                    value = lo + (hi - lo) * max(0.0, rank - cum) / c
                break
            cum += c
        out.append(value)
    return out


@dataclass
class ServerInfo:
    """What the server.* gauges report. `memory` returns (allocated, heap_size, physical_size)
    in bytes; the default sums RSS - shared (allocated) and RSS (heap, physical) over `pids()`
    (default: this process and its children, recursively) with psutil."""
    concurrency: int = 1
    start_time: float = field(default_factory=time.monotonic)   # time.monotonic() at start
    state: str = "LIVE"
    hot_restart_epoch: int = 0
    memory: Optional[Callable[[], tuple[int, int, int]]] = None
    pids: Optional[Callable[[], list[int]]] = None

    def memory_usage(self) -> tuple[int, int, int]:
        if self.memory is not None:
            return self.memory()
        try:
            import psutil
        except ImportError:
            return (0, 0, 0)
        procs = []
        try:
            if self.pids is not None:
                procs = [psutil.Process(p) for p in self.pids()]
            else:
                me = psutil.Process(os.getpid())
                procs = [me] + me.children(recursive=True)
        except psutil.Error:
            pass
        allocated = rss = 0
        for p in procs:
            try:
                mi = p.memory_info()
            except psutil.Error:
                continue
            rss += mi.rss
            allocated += max(0, mi.rss - getattr(mi, "shared", 0))
        return (allocated, rss, rss)


@dataclass
class Stat:
    name: str
    kind: str          # "counter" | "gauge"
    value: int
    used: bool


@dataclass
class Histogram:
    name: str
    buckets: list[int]                  # disjoint counts, NBUCKETS (last: above the last bound)
    sum_ms: float
    count: int
    interval: Optional[list[int]]       # disjoint counts of the last closed interval, or None

    @property
    def used(self) -> bool:
        return self.count > 0

    def quantiles(self) -> list[float]:
        return quantiles(self.buckets)

    def interval_quantiles(self) -> list[float]:
        return quantiles(self.interval) if self.interval else [math.nan] * len(SUPPORTED_QUANTILES)


@dataclass
class Snapshot:
    stats: list[Stat]              # counters and gauges (stored, per-code, computed), unsorted
    histograms: list[Histogram]

    def value(self, name: str) -> int:
        for s in self.stats:
            if s.name == name:
                return s.value
        raise KeyError(name)

    def as_dict(self) -> dict[str, int]:
        return {s.name: s.value for s in self.stats}

    def histogram(self, name: str) -> Histogram:
        for h in self.histograms:
            if h.name == name:
                return h
        raise KeyError(name)


def _breaker_state(t: dict, counts) -> dict[str, int]:
    """Envoy's circuit_breakers.default.* gauges: *_open is 1 while the breaker is at its limit;
    remaining_* (track_remaining) is what is left before it opens."""
    rq, cx, pending, retries = (max(0, v) for v in counts)
    budget = t.get("retry_budget")
    if budget:
        retry_limit = max(budget["min_retry_concurrency"], int(budget["budget_percent"] / 100.0 * rq))
    else:
        retry_limit = t["max_retries"]
    pairs = (("cx", cx, t["max_connections"]), ("rq_pending", pending, t["max_pending_requests"]),
             ("rq", rq, t["max_requests"]), ("rq_retry", retries, retry_limit))
    out = {f"circuit_breakers.default.{k}_open": int(v >= limit) for k, v, limit in pairs}
    for k, v, limit in pairs:
        short = {"cx": "cx", "rq_pending": "pending", "rq": "rq", "rq_retry": "retries"}[k]
        out[f"circuit_breakers.default.remaining_{short}"] = max(0, limit - v)
    return out


class StatsReader:
    """Reads a StatsStore through a StatRegistry. Keep one per admin server: it holds the
    /reset_counters baseline and the histogram flush state.

    host_table: a HostTable, or a zero-argument callable returning the current one (the master
    rebuilds it on reload), or None. cluster_index: name -> host-table cluster index; default:
    config order, which is what proxy.cluster_manager.plan uses.
    """

    def __init__(self, registry: StatRegistry, store, *, host_table=None,
                 cluster_index: Optional[dict[str, int]] = None,
                 server: Optional[ServerInfo] = None, flush_interval: float = 5.0,
                 clock: Callable[[], float] = time.monotonic):
        if store.n_counters != registry.n_counters or store.n_gauges != registry.n_gauges:
            raise ValueError("the store was not made for this registry")
        self.registry = registry
        self.store = store
        self._host_table = host_table
        self.cluster_index = (dict(cluster_index) if cluster_index is not None
                              else {n: i for i, n in enumerate(registry.clusters)})
        self.server = server if server is not None else ServerInfo()
        self.flush_interval = flush_interval
        self.clock = clock
        self._baseline: Optional[list[int]] = None     # /reset_counters, this reader only
        self._computed_baseline: dict[str, int] = {}
        self._hist_prev: Optional[list[int]] = None
        self._hist_interval: Optional[list[int]] = None
        self._last_flush = 0.0

    # -- host table --

    def host_table(self):
        t = self._host_table
        if callable(t):
            t = t()
        return t

    def _cluster_state(self, table, c: int) -> dict[str, int]:
        first, n = table.cluster_slots(c)
        total = healthy = degraded = excluded = hc_healthy = hc_degraded = 0
        max_w = 0
        for i in range(first, first + n):
            if not table.in_use(i):
                continue
            f = table.flags(i)
            if f & _ht.DNS_REMOVED:
                continue
            total += 1
            max_w = max(max_w, table.weight(i))
            if f & _ht.DRAINING:
                excluded += 1
            if _ht.usable(f):
                if f & _ht.DEGRADED_ACTIVE_HC:
                    degraded += 1
                else:
                    healthy += 1
            if not f & (_ht.FAILED_ACTIVE_HC | _ht.PENDING_ACTIVE_HC):
                hc_healthy += 1
            if f & _ht.DEGRADED_ACTIVE_HC:
                hc_degraded += 1
        state = {"membership_total": total, "membership_healthy": healthy,
                 "membership_degraded": degraded, "membership_excluded": excluded,
                 "max_host_weight": max_w, "lb_healthy_panic": table.lb_healthy_panic(c),
                 "health_check.healthy": hc_healthy, "health_check.degraded": hc_degraded}
        name = self.registry.clusters[c] if c < len(self.registry.clusters) else None
        t = self.registry.breakers.get(name) if name is not None else None
        if t is not None:
            state.update(_breaker_state(t, table.circuit_breaker_counts(c)))
        return state

    # -- flush / reset --

    def flush(self, now: Optional[float] = None) -> None:
        """Close the current histogram interval now."""
        self._flush(self.store.counters(self.registry.hist_start, raw=True),
                    self.clock() if now is None else now)

    def _flush(self, cur: list[int], now: float) -> None:
        if self._hist_prev is not None:
            self._hist_interval = [a - b for a, b in zip(cur, self._hist_prev)]
        self._hist_prev = cur
        self._last_flush = now

    def reset_counters(self) -> None:
        """/reset_counters: every counter (stored, per-code, computed) reads 0 from now on for
        this reader. Gauges and histograms are untouched (as Envoy). Nothing shared is written."""
        self._baseline = self.store.counters(0, self.registry.n_resettable, raw=True)
        table = self.host_table()
        for name, kind, key in self.registry.computed:
            if kind == "counter" and key[0] == "cluster" and table is not None:
                c = self.cluster_index.get(key[2])
                if c is not None and c < table.n_clusters:
                    self._computed_baseline[name] = table.lb_healthy_panic(c)

    # -- reading --

    def snapshot(self) -> Snapshot:
        reg = self.registry
        st = self.store
        raw = st.counters(raw=True)
        now = self.clock()
        hist_raw = raw[reg.hist_start:]
        if self._hist_prev is None or now - self._last_flush >= self.flush_interval:
            self._flush(hist_raw, now)
        base = self._baseline
        stats: list[Stat] = []
        names = reg.counter_names
        n_plain = len(reg.counter_index)
        for i in range(n_plain):
            v = raw[i]
            stats.append(Stat(names[i], "counter", max(0, v - base[i]) if base else v, v != 0))
        for prefix, b0 in reg.code_blocks:
            for k in range(CODE_MAX_COUNT):
                v = raw[b0 + k]
                if v:     # Envoy creates upstream_rq_<code> on first use
                    stats.append(Stat(f"{prefix}{CODE_MIN + k}", "counter",
                                      max(0, v - base[b0 + k]) if base else v, True))
        gauges = st.gauges()
        used = st.gauges_used()
        for i, name in enumerate(reg.gauge_names):
            stats.append(Stat(name, "gauge", gauges[i], used[i] == 1))
        stats.extend(self._computed(gauges))
        hists = []
        interval = self._hist_interval
        for name, b in reg.histograms:
            off = b - reg.hist_start
            block = raw[b:b + _st.HIST_WIDTH]
            iv = interval[off:off + NBUCKETS] if interval is not None else None
            hists.append(Histogram(name, block[:NBUCKETS], block[_st.HIST_SUM] / 1000.0,
                                   block[_st.HIST_COUNT], iv))
        return Snapshot(stats, hists)

    def _computed(self, gauges: list[int]) -> list[Stat]:
        reg = self.registry
        table = self.host_table()
        per_cluster: dict[str, dict[str, int]] = {}
        srv = self.server
        mem = None
        out = []
        for name, kind, key in reg.computed:
            if key[0] == "cluster":
                short, cname = key[1], key[2]
                state = per_cluster.get(cname)
                if state is None:
                    c = self.cluster_index.get(cname)
                    state = ({} if table is None or c is None or c >= table.n_clusters
                             else self._cluster_state(table, c))
                    per_cluster[cname] = state
                if not state:
                    out.append(Stat(name, kind, 0, False))
                    continue
                v = state[short]
                if kind == "counter":
                    out.append(Stat(name, kind, max(0, v - self._computed_baseline.get(name, 0)),
                                    v != 0))
                else:
                    out.append(Stat(name, kind, v, True))
                continue
            short = key[1]
            if short == "server.live":
                v = 1 if srv.state == "LIVE" else 0
            elif short == "server.state":
                v = SERVER_STATES.get(srv.state, 0)
            elif short == "server.uptime":
                v = int(max(0.0, time.monotonic() - srv.start_time))
            elif short == "server.concurrency":
                v = srv.concurrency
            elif short == "server.hot_restart_epoch":
                v = srv.hot_restart_epoch
            elif short in ("server.memory_allocated", "server.memory_heap_size",
                           "server.memory_physical_size"):
                if mem is None:
                    mem = srv.memory_usage()
                v = mem[("server.memory_allocated", "server.memory_heap_size",
                         "server.memory_physical_size").index(short)]
            elif short == "server.total_connections":
                v = 0
                for p in reg.listener_prefixes:
                    if p != ADMIN:
                        v += gauges[reg.gauge_index[f"listener.{p}.downstream_cx_active"]]
            elif short == "cluster_manager.active_clusters":
                v = len(reg.clusters)
            elif short == "listener_manager.total_listeners_active":
                v = sum(1 for p in reg.listener_prefixes if p != ADMIN)
            else:       # parent_connections, warming / draining counts: nothing of the kind
                v = 0
            out.append(Stat(name, kind, v, True))
        return out

