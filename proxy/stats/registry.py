"""StatRegistry: the ordered Envoy stat names of a config and their indexes in the StatsStore.

Built from a Bootstrap by a pure function, so the master, every worker and the health process
compute the same indexes without talking to each other. Order: HTTP connection managers (by
stat_prefix, in listener order, each prefix once; then `admin` when the bootstrap has an admin),
listeners (in config order; then `admin`), clusters (in config order), then the server-wide
stats. Within the store's counter array the plain counters come first, then the per-code blocks
(`cluster.<name>.upstream_rq_<code>`), then the histogram blocks; /reset_counters resets the
first two regions only (as Envoy, histograms are not reset).

Kinds of stats:
  counter    stored, summed over slots (u64), reset by /reset_counters;
  gauge      stored, each process adds / sets its own share, readers sum the live shares;
  histogram  stored as bucket counters (proxy._fastpath.stats.BUCKET_BOUNDS, ms) + sum + count;
  computed   not stored: the reader derives them (membership from the host table, server.*,
             lb_healthy_panic from the host table's per-cluster counter, ...). See reader.py.
  code       cluster.<name>.upstream_rq_<100..599>: a dense block of counters shown only once
             non-zero (Envoy creates them on first use).

Hot path: get the indexes once (`http_indexes(prefix)`, `listener_indexes(prefix)`,
`cluster_indexes(name)`); every attribute is an int (a counter index, a gauge index or a
histogram block start, depending on the stat) or -1 when the stat does not exist for that
entity (ssl.* on a plaintext listener, health_check.* on a cluster without health checks...).
Attribute names are the stat names relative to the entity with '.' replaced by '_'.
`downstream_rq_1xx`..`5xx` and `upstream_rq_1xx`..`5xx` are consecutive:
`idx.downstream_rq_1xx + status // 100 - 1`; `idx.upstream_rq_code_base + status - 100` for
100 <= status <= 599.
"""
from __future__ import annotations

import ipaddress
from typing import Iterable, Optional

from proxy._fastpath import stats as _st
from proxy.config.clusters import default_thresholds

# ---- the stat sets -------------------------------------------------------------------------------

HTTP_COUNTERS = (
    "downstream_cx_total", "downstream_cx_ssl_total", "downstream_cx_http1_total",
    "downstream_cx_destroy", "downstream_cx_destroy_remote", "downstream_cx_destroy_local",
    "downstream_cx_destroy_active_rq", "downstream_cx_destroy_local_active_rq",
    "downstream_cx_destroy_remote_active_rq", "downstream_cx_protocol_error",
    "downstream_cx_rx_bytes_total", "downstream_cx_tx_bytes_total", "downstream_cx_drain_close",
    "downstream_cx_idle_timeout", "downstream_cx_max_requests_reached",
    "downstream_rq_total", "downstream_rq_http1_total", "downstream_rq_completed",
    "downstream_rq_1xx", "downstream_rq_2xx", "downstream_rq_3xx", "downstream_rq_4xx",
    "downstream_rq_5xx",
    "downstream_rq_rx_reset", "downstream_rq_tx_reset", "downstream_rq_non_relative_path",
    "downstream_rq_too_large", "downstream_rq_response_before_rq_complete",
    "downstream_rq_idle_timeout", "downstream_rq_timeout", "downstream_rq_header_timeout",
    "rs_too_large",
    # router filter (http.<stat_prefix>.)
    "no_route", "no_cluster", "rq_direct_response", "rq_redirect", "rq_total",
    "rq_reset_after_downstream_response_started",
)
HTTP_GAUGES = (
    "downstream_cx_active", "downstream_cx_ssl_active", "downstream_cx_http1_active",
    "downstream_rq_active", "downstream_cx_rx_bytes_buffered", "downstream_cx_tx_bytes_buffered",
)
HTTP_HISTOGRAMS = ("downstream_rq_time", "downstream_cx_length_ms")

FAULT_COUNTERS = ("delays_injected", "aborts_injected", "faults_overflow")
FAULT_GAUGES = ("active_faults",)
LOCAL_RATELIMIT_COUNTERS = ("enabled", "ok", "rate_limited", "enforced")

LISTENER_COUNTERS = (
    "downstream_cx_total", "downstream_cx_destroy", "downstream_cx_overflow",
    "downstream_cx_overload_reject", "downstream_global_cx_overflow", "downstream_pre_cx_timeout",
    "no_filter_chain_match",
)
LISTENER_TLS_COUNTERS = ("ssl.connection_error", "ssl.handshake", "ssl.session_reused",
                         "ssl.no_certificate")
LISTENER_GAUGES = ("downstream_cx_active", "downstream_pre_cx_active")
LISTENER_HISTOGRAMS = ("downstream_cx_length_ms",)

CLUSTER_COUNTERS = (
    "upstream_cx_total", "upstream_cx_http1_total", "upstream_cx_connect_fail",
    "upstream_cx_connect_timeout", "upstream_cx_idle_timeout", "upstream_cx_max_requests",
    "upstream_cx_overflow", "upstream_cx_none_healthy", "upstream_cx_pool_overflow",
    "upstream_cx_protocol_error",
    "upstream_cx_destroy", "upstream_cx_destroy_local", "upstream_cx_destroy_remote",
    "upstream_cx_destroy_with_active_rq", "upstream_cx_destroy_local_with_active_rq",
    "upstream_cx_destroy_remote_with_active_rq",
    "upstream_cx_rx_bytes_total", "upstream_cx_tx_bytes_total",
    "upstream_rq_total", "upstream_rq_completed",
    "upstream_rq_1xx", "upstream_rq_2xx", "upstream_rq_3xx", "upstream_rq_4xx", "upstream_rq_5xx",
    "upstream_rq_pending_total", "upstream_rq_pending_overflow",
    "upstream_rq_pending_failure_eject", "upstream_rq_cancelled", "upstream_rq_maintenance_mode",
    "upstream_rq_timeout", "upstream_rq_per_try_timeout", "upstream_rq_rx_reset",
    "upstream_rq_tx_reset", "upstream_rq_retry", "upstream_rq_retry_success",
    "upstream_rq_retry_overflow", "upstream_rq_retry_limit_exceeded",
    "retry_or_shadow_abandoned",
    "update_attempt", "update_success", "update_failure", "update_empty", "update_no_rebuild",
)
CLUSTER_GAUGES = (
    "upstream_cx_active", "upstream_rq_active", "upstream_rq_pending_active",
    "upstream_cx_rx_bytes_buffered", "upstream_cx_tx_bytes_buffered",
)
CLUSTER_HISTOGRAMS = ("upstream_rq_time", "upstream_cx_connect_ms", "upstream_cx_length_ms")
# computed from the host table by the reader
CLUSTER_COMPUTED_COUNTERS = ("lb_healthy_panic",)
CLUSTER_COMPUTED_GAUGES = ("membership_healthy", "membership_degraded", "membership_excluded",
                           "membership_total", "max_host_weight")

# circuit breakers (priority DEFAULT), computed from the host table's counts and the thresholds
BREAKER_OPEN_GAUGES = ("circuit_breakers.default.cx_open", "circuit_breakers.default.rq_pending_open",
                       "circuit_breakers.default.rq_open", "circuit_breakers.default.rq_retry_open")
BREAKER_REMAINING_GAUGES = ("circuit_breakers.default.remaining_cx",
                            "circuit_breakers.default.remaining_pending",
                            "circuit_breakers.default.remaining_rq",
                            "circuit_breakers.default.remaining_retries")

HEALTH_CHECK_COUNTERS = ("health_check.attempt", "health_check.success", "health_check.failure",
                         "health_check.passive_failure", "health_check.network_failure",
                         "health_check.verify_cluster")
HEALTH_CHECK_COMPUTED_GAUGES = ("health_check.healthy", "health_check.degraded")

OUTLIER_KINDS = ("consecutive_5xx", "success_rate", "consecutive_gateway_failure",
                 "consecutive_local_origin_failure", "local_origin_success_rate",
                 "failure_percentage", "failure_percentage_local_origin")
OUTLIER_COUNTERS = (
    "outlier_detection.ejections_enforced_total", "outlier_detection.ejections_overflow",
    *(f"outlier_detection.ejections_enforced_{k}" for k in OUTLIER_KINDS),
    *(f"outlier_detection.ejections_detected_{k}" for k in OUTLIER_KINDS),
    # deprecated in Envoy, still emitted
    "outlier_detection.ejections_total", "outlier_detection.ejections_consecutive_5xx",
)
OUTLIER_GAUGES = ("outlier_detection.ejections_active",)

CODE_MIN, CODE_MAX = 100, 599

SERVER_COMPUTED_GAUGES = (
    "server.live", "server.state", "server.uptime", "server.concurrency",
    "server.memory_allocated", "server.memory_heap_size", "server.memory_physical_size",
    "server.total_connections", "server.parent_connections", "server.hot_restart_epoch",
    "cluster_manager.active_clusters", "cluster_manager.warming_clusters",
    "listener_manager.total_listeners_active", "listener_manager.total_listeners_warming",
    "listener_manager.total_listeners_draining",
)

ADMIN = "admin"


def _attr(short: str) -> str:
    return short.replace(".", "_")


def listener_stat_prefix(address: str, port: int) -> str:
    """Envoy's listener stat prefix: the address as Envoy prints it with ':' made '_':
    0.0.0.0:10000 -> "0.0.0.0_10000", [::1]:10000 -> "[__1]_10000"."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    text = f"[{ip.compressed}]:{port}" if ip.version == 6 else f"{ip.compressed}:{port}"
    return text.replace(":", "_")


# ---- index objects -------------------------------------------------------------------------------

class _Indexes:
    """Plain attributes of ints (see the module docstring). `as_dict()` for logging / tests."""
    __slots__ = ()
    _fields: tuple[str, ...] = ()

    def __init__(self, **values: int):
        for f in self._fields:
            object.__setattr__(self, f, values.get(f, -1))

    def __setattr__(self, name, value):
        raise AttributeError(f"{type(self).__name__} is read-only")

    def as_dict(self) -> dict[str, int]:
        return {f: getattr(self, f) for f in self._fields}

    def __repr__(self):
        return f"{type(self).__name__}({self.prefix_name!r})"


def _indexes_class(name: str, shorts: Iterable[str], extra: tuple[str, ...] = ()):
    fields = tuple(_attr(s) for s in shorts) + extra + ("prefix_name",)
    return type(name, (_Indexes,), {"__slots__": fields, "_fields": fields})


HttpStatIndexes = _indexes_class(
    "HttpStatIndexes", HTTP_COUNTERS + HTTP_GAUGES + HTTP_HISTOGRAMS)
ListenerStatIndexes = _indexes_class(
    "ListenerStatIndexes", LISTENER_COUNTERS + LISTENER_TLS_COUNTERS + LISTENER_GAUGES
    + LISTENER_HISTOGRAMS)
ClusterStatIndexes = _indexes_class(
    "ClusterStatIndexes", CLUSTER_COUNTERS + CLUSTER_GAUGES + CLUSTER_HISTOGRAMS
    + HEALTH_CHECK_COUNTERS + OUTLIER_COUNTERS + OUTLIER_GAUGES, ("upstream_rq_code_base",))


# ---- the registry --------------------------------------------------------------------------------

class StatRegistry:
    """Names and indexes of every stat of a config. Use `for_bootstrap`.

    Attributes (all read-only by convention):
      counter_names     names of counter indexes [0, n_resettable) (code blocks included, one
                        name per index)
      gauge_names       names of gauge indexes [0, n_gauges)
      histograms        [(name, block start)], blocks of HIST_WIDTH counters
      code_blocks       [(name prefix, block start)] e.g. ("cluster.x.upstream_rq_", 212)
      computed          [(name, kind, key)] derived by the reader; kind "counter" | "gauge";
                        key: ("cluster", <stat>, <cluster name>) | ("server", <stat>)
      n_counters        counter array length (plain + code blocks + histogram blocks)
      n_gauges
      n_resettable      counters [0, n_resettable) are reset by /reset_counters
      hist_start        first histogram counter index (== n_resettable)
      clusters          cluster names, config order (== host table cluster order)
      http_prefixes, listener_prefixes
    """

    def __init__(self):
        self._plain: list[str] = []
        self._gauges: list[str] = []
        self._hists: list[str] = []
        self._code_prefixes: list[str] = []
        self.computed: list[tuple[str, str, tuple]] = []
        self.clusters: list[str] = []
        self.http_prefixes: list[str] = []
        self.listener_prefixes: list[str] = []
        self._http: dict[str, HttpStatIndexes] = {}
        self._listeners: dict[str, ListenerStatIndexes] = {}
        self._clusters: dict[str, ClusterStatIndexes] = {}
        self._entity_shorts: dict[tuple[str, str], list[str]] = {}
        self.breakers: dict[str, dict] = {}   # cluster -> DEFAULT thresholds (for the computed gauges)

    # -- building --

    @classmethod
    def for_bootstrap(cls, bootstrap) -> "StatRegistry":
        """The registry of a proxy.config.model.Bootstrap (pure: same config, same indexes)."""
        r = cls()
        for listener in bootstrap.listeners:
            for chain in listener.chains or [listener]:
                if chain.hcm.stat_prefix not in r.http_prefixes:
                    r._add_http(chain.hcm.stat_prefix)
        if getattr(bootstrap, "admin", None) is not None and ADMIN not in r.http_prefixes:
            r._add_http(ADMIN)
        for listener in bootstrap.listeners:
            r._add_listener(listener_stat_prefix(listener.address, listener.port),
                            tls=listener.tls is not None)
        if getattr(bootstrap, "admin", None) is not None:
            r._add_listener(ADMIN, tls=False)
        for name, c in bootstrap.clusters.items():
            r._add_cluster(name, health_checks=bool(c.health_checks),
                           outlier=c.outlier_detection is not None,
                           breakers=default_thresholds(c))
        r._add_filters(bootstrap.listeners)
        for name in SERVER_COMPUTED_GAUGES:
            r.computed.append((name, "gauge", ("server", name)))
        r._finish()
        return r

    @classmethod
    def build(cls, http_prefixes=(), listeners=(), clusters=()) -> "StatRegistry":
        """A registry without a Bootstrap (tests, tools): listeners are (stat prefix, tls) pairs,
        clusters (name, has_health_checks, has_outlier_detection) triples or plain names."""
        r = cls()
        for p in http_prefixes:
            if p not in r.http_prefixes:
                r._add_http(p)
        for item in listeners:
            prefix, tls = (item, False) if isinstance(item, str) else item
            r._add_listener(prefix, tls=tls)
        for item in clusters:
            name, hc, od = (item, False, False) if isinstance(item, str) else item
            r._add_cluster(name, health_checks=hc, outlier=od)
        for name in SERVER_COMPUTED_GAUGES:
            r.computed.append((name, "gauge", ("server", name)))
        r._finish()
        return r

    def _entity(self, kind, key, root, counters, gauges, hists, computed_c=(), computed_g=(),
                code=False):
        self._entity_shorts[(kind, key)] = [*counters, *gauges, *hists]
        self._plain.extend(root + s for s in counters)
        self._gauges.extend(root + s for s in gauges)
        self._hists.extend(root + s for s in hists)
        for s in computed_c:
            self.computed.append((root + s, "counter", (kind, s, key)))
        for s in computed_g:
            self.computed.append((root + s, "gauge", (kind, s, key)))
        if code:
            self._code_prefixes.append(root + "upstream_rq_")

    def _add_http(self, prefix):
        self.http_prefixes.append(prefix)
        self._entity("http", prefix, f"http.{prefix}.", HTTP_COUNTERS, HTTP_GAUGES, HTTP_HISTOGRAMS)

    def _add_listener(self, prefix, tls):
        if prefix in self.listener_prefixes:
            raise ValueError(f"duplicate listener stat prefix {prefix!r}")
        self.listener_prefixes.append(prefix)
        self._entity("listener", prefix, f"listener.{prefix}.",
                     LISTENER_COUNTERS + (LISTENER_TLS_COUNTERS if tls else ()),
                     LISTENER_GAUGES, LISTENER_HISTOGRAMS)

    def _add_cluster(self, name, health_checks, outlier, breakers=None):
        if name in self.clusters:
            raise ValueError(f"duplicate cluster {name!r}")
        self.clusters.append(name)
        self.breakers[name] = breakers or default_thresholds(None)
        track = self.breakers[name].get("track_remaining", False)
        self._entity("cluster", name, f"cluster.{name}.",
                     CLUSTER_COUNTERS + (HEALTH_CHECK_COUNTERS if health_checks else ())
                     + (OUTLIER_COUNTERS if outlier else ()),
                     CLUSTER_GAUGES + (OUTLIER_GAUGES if outlier else ()),
                     CLUSTER_HISTOGRAMS,
                     CLUSTER_COMPUTED_COUNTERS,
                     CLUSTER_COMPUTED_GAUGES + (HEALTH_CHECK_COMPUTED_GAUGES if health_checks else ())
                     + BREAKER_OPEN_GAUGES + (BREAKER_REMAINING_GAUGES if track else ()),
                     code=True)

    def _add_filters(self, listeners):
        """The HTTP filters' stats: http.<stat_prefix>.fault.* (fault_filter.rst) and
        <stat_prefix>.http_local_rate_limit.* (local_rate_limit_filter.rst), each name once."""
        from proxy.config.filters import FAULT, all_filter_configs
        from proxy.config.model import LocalRateLimitFilter
        counters, gauges = [], []
        for lst in listeners:
            if any(hf.name == FAULT for hf in lst.hcm.filters):
                root = f"http.{lst.hcm.stat_prefix}.fault."
                counters += [root + s for s in FAULT_COUNTERS]
                gauges += [root + s for s in FAULT_GAUGES]
        for lst in listeners:
            if lst.connection_limit is not None:
                root = f"connection_limit.{lst.connection_limit.stat_prefix}."
                counters.append(root + "limited_connections")
                gauges.append(root + "active_connections")
        for cfg in all_filter_configs(listeners):
            if isinstance(cfg, LocalRateLimitFilter):
                counters += [f"{cfg.stat_prefix}.http_local_rate_limit.{s}" for s in LOCAL_RATELIMIT_COUNTERS]
        self._plain.extend(n for n in dict.fromkeys(counters) if n not in self._plain)
        self._gauges.extend(n for n in dict.fromkeys(gauges) if n not in self._gauges)

    def _finish(self):
        n_plain = len(self._plain)
        self.counter_index: dict[str, int] = {n: i for i, n in enumerate(self._plain)}
        if len(self.counter_index) != n_plain:
            raise ValueError("duplicate counter names")
        n_codes = CODE_MAX - CODE_MIN + 1
        self.code_blocks: list[tuple[str, int]] = []
        names = list(self._plain)
        for i, prefix in enumerate(self._code_prefixes):
            base = n_plain + i * n_codes
            self.code_blocks.append((prefix, base))
            names.extend(f"{prefix}{code}" for code in range(CODE_MIN, CODE_MAX + 1))
        self.counter_names: list[str] = names
        self.n_resettable = len(names)
        self.hist_start = self.n_resettable
        self.histograms: list[tuple[str, int]] = [
            (n, self.hist_start + i * _st.HIST_WIDTH) for i, n in enumerate(self._hists)]
        self.histogram_index: dict[str, int] = dict(self.histograms)
        self.n_counters = self.hist_start + len(self._hists) * _st.HIST_WIDTH
        self.gauge_names: list[str] = list(self._gauges)
        self.gauge_index: dict[str, int] = {n: i for i, n in enumerate(self.gauge_names)}
        self.n_gauges = len(self.gauge_names)
        self.computed_index: dict[str, tuple[str, tuple]] = {
            n: (kind, key) for n, kind, key in self.computed}
        code_base = {p: b for p, b in self.code_blocks}
        for (kind, key), shorts in self._entity_shorts.items():
            root = f"{kind}.{key}."
            values = {}
            for s in shorts:
                full = root + s
                idx = self.counter_index.get(full)
                if idx is None:
                    idx = self.gauge_index.get(full)
                if idx is None:
                    idx = self.histogram_index[full]
                values[_attr(s)] = idx
            if kind == "http":
                self._http[key] = HttpStatIndexes(prefix_name=root[:-1], **values)
            elif kind == "listener":
                self._listeners[key] = ListenerStatIndexes(prefix_name=root[:-1], **values)
            else:
                self._clusters[key] = ClusterStatIndexes(
                    prefix_name=root[:-1], upstream_rq_code_base=code_base[root + "upstream_rq_"],
                    **values)

    # -- lookups --

    def http_indexes(self, stat_prefix: str) -> HttpStatIndexes:
        """Indexes of http.<stat_prefix>.* (KeyError if the config has no such prefix)."""
        return self._http[stat_prefix]

    def listener_indexes(self, prefix: str) -> ListenerStatIndexes:
        """Indexes of listener.<prefix>.*; prefix from listener_stat_prefix(address, port), or
        "admin"."""
        return self._listeners[prefix]

    def listener_indexes_for(self, listener) -> ListenerStatIndexes:
        """Indexes for a proxy.config.model.Listener (its configured address and port)."""
        return self._listeners[listener_stat_prefix(listener.address, listener.port)]

    def cluster_indexes(self, name: str) -> ClusterStatIndexes:
        return self._clusters[name]

    def counter(self, name: str) -> int:
        """Counter index of a plain or per-code counter name."""
        idx = self.counter_index.get(name)
        if idx is not None:
            return idx
        for prefix, base in self.code_blocks:
            if name.startswith(prefix):
                code = name[len(prefix):]
                if code.isdigit() and CODE_MIN <= int(code) <= CODE_MAX:
                    return base + int(code) - CODE_MIN
        raise KeyError(name)

    def gauge(self, name: str) -> int:
        return self.gauge_index[name]

    def histogram(self, name: str) -> int:
        return self.histogram_index[name]

    def kind(self, name: str) -> Optional[str]:
        """"counter" | "gauge" | "histogram" (stored or computed), None if unknown."""
        if name in self.counter_index:
            return "counter"
        if name in self.gauge_index:
            return "gauge"
        if name in self.histogram_index:
            return "histogram"
        if name in self.computed_index:
            return self.computed_index[name][0]
        try:
            self.counter(name)
            return "counter"
        except KeyError:
            return None

    def names(self) -> list[str]:
        """Every stat name (per-code counters excluded), sorted."""
        out = list(self._plain) + self.gauge_names + [n for n, _ in self.histograms]
        out += [n for n, _, _ in self.computed]
        return sorted(out)

    @property
    def signature(self) -> tuple:
        """Equal signatures: same names at the same indexes (a reload may keep the store)."""
        return (tuple(self.counter_names), tuple(self.gauge_names), tuple(self.histograms))

    def make_store(self, n_slots: int = 64):
        """A StatsStore sized for this registry (master, before fork)."""
        return _st.StatsStore(self.n_counters, self.n_gauges, n_slots)


def carry_over(old_registry: StatRegistry, old_store, new_registry: StatRegistry, new_store) -> int:
    """On reload with a changed stat set: add the old store's raw counter totals (plain, per-code
    and histogram blocks) into the new store's retired slot for every name both registries have,
    and carry the gauges' used bits. Call it in the master once the old generation has exited
    (after retiring its slots in the old store): later writes to the old store are not seen.
    Returns the number of counters carried."""
    old = old_store.counters(raw=True)
    n = 0
    for i, name in enumerate(old_registry.counter_names):
        v = old[i]
        if v:
            j = new_registry.counter_index.get(name)
            if j is None:
                try:
                    j = new_registry.counter(name)
                except KeyError:
                    continue
            new_store.add_retired(j, v)
            n += 1
    for name, base in old_registry.histograms:
        nb = new_registry.histogram_index.get(name)
        if nb is None:
            continue
        for k in range(_st.HIST_WIDTH):
            v = old[base + k]
            if v:
                new_store.add_retired(nb + k, v)
                n += 1
    used = old_store.gauges_used()
    for i, name in enumerate(old_registry.gauge_names):
        j = new_registry.gauge_index.get(name)
        if used[i] and j is not None:
            new_store.mark_gauge_used_retired(j)
    return n
