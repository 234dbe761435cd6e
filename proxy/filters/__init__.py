"""HTTP filters that run before the router (Envoy's decoder filters), in http_filters order.

A connection manager with only the router has no `FilterChain` at all (hcm.filters is None), so
the hot path pays one attribute test. Otherwise the downstream connection calls
`FilterChain.run(ds, head, entry, cluster_name)` once the route is known and before an upstream
host is picked. A filter answers None (go on), a `Reply` (a local reply: the request goes no
further) or a `Delay` (hold the request, then ask `Delay.then()`, then go on with the next filter).

Each filter finds its per-route config in `entry.per_filter` (typed_per_filter_config, route over
virtual host) and falls back to its own.
"""
from __future__ import annotations

import random

from proxy._fastpath.tokenbucket import SharedCounters, SharedTokenBuckets
from proxy.config.filters import FAULT, GRPC_HTTP1_BRIDGE, LOCAL_RATELIMIT, assign_shared

_randrange = random.randrange


class Reply:
    """A local reply from a filter."""
    __slots__ = ("status", "body", "headers", "flag")

    def __init__(self, status: int, body: bytes, headers: bytes, flag: str):
        self.status, self.body, self.headers, self.flag = status, body, headers, flag


class Delay:
    """Hold the request `seconds`, then call `then()` (None or a Reply), then run the filters
    from `next` on. `cancel()` when the request is gone before the delay ends."""
    __slots__ = ("seconds", "then", "cancel", "flag", "next")

    def __init__(self, seconds: float, then, cancel, flag: str):
        self.seconds, self.then, self.cancel, self.flag = seconds, then, cancel, flag
        self.next = 0


def hit(share: tuple[int, int]) -> bool:
    """One draw of a FractionalPercent (Envoy: random % denominator < numerator)."""
    num, den = share
    return num >= den or (num > 0 and _randrange(den) < num)


def runtime_share(default: tuple[int, int], key, runtime: dict) -> tuple[int, int]:
    """A runtime key in the static layer (an integer percent, checked by the loader) overrides
    the configured default_value."""
    if key:
        value = runtime.get(key)
        if value is not None:
            return (int(value), 100)
    return default


class SharedFilterState:
    """What the filters share across workers, allocated by the master before fork: a token
    bucket per local rate limit config, an active-faults counter per fault config with
    max_active_faults, an active-connections counter per connection_limit network filter, and
    one for the overload manager's global downstream connection limit."""

    def __init__(self, bootstrap):
        buckets, counters = assign_shared(bootstrap.listeners)
        self.buckets = SharedTokenBuckets(len(buckets))
        for cfg in buckets:
            max_tokens, per_fill, interval = cfg.token_bucket
            self.buckets.configure(cfg.bucket, max_tokens, per_fill, interval)
        self.counters = SharedCounters(len(counters))
        limited = [lst for lst in bootstrap.listeners if lst.connection_limit is not None]
        for i, lst in enumerate(limited):
            lst.connection_limit.counter = i
        self.connections = SharedCounters(len(limited))
        self.global_connections = SharedCounters(1)
        self.global_limit = bootstrap.max_downstream_connections
        self._listeners = list(bootstrap.listeners)

    def give_back(self, registry, store, slot) -> None:
        """A worker died with connections open: return its share of the connection counts
        (from its own gauges) so the limits do not shrink."""
        from proxy.stats.registry import listener_stat_prefix
        for lst in self._listeners:
            try:
                active = store.slot_gauge(slot, registry.gauge(
                    f"listener.{listener_stat_prefix(lst.address, lst.port)}.downstream_cx_active"))
            except KeyError:
                continue
            if active <= 0:
                continue
            if self.global_limit is not None and not lst.ignore_global_conn_limit:
                self.global_connections.add(0, -active)
            if lst.connection_limit is not None:
                self.connections.add(lst.connection_limit.counter, -active)


class FilterChain:
    __slots__ = ("filters",)

    def __init__(self, filters: list):
        self.filters = filters

    @classmethod
    def for_hcm(cls, hcm_cfg, worker, shared: SharedFilterState):
        """The chain of one connection manager, or None when it has only the router."""
        if not hcm_cfg.filters:
            return None
        from proxy.filters.fault import FaultInjection
        from proxy.filters.local_ratelimit import LocalRateLimit
        from proxy.filters.grpc_http1_bridge import GrpcHttp1Bridge
        made = []
        for hf in hcm_cfg.filters:
            if hf.name == FAULT:
                made.append(FaultInjection(hf.config, hcm_cfg.stat_prefix, worker, shared))
            elif hf.name == LOCAL_RATELIMIT:
                made.append(LocalRateLimit(hf.config, worker, shared))
            elif hf.name == GRPC_HTTP1_BRIDGE:
                made.append(GrpcHttp1Bridge())
            else:   # the loader admits no other filter
                raise AssertionError(hf.name)
        return cls(made)

    def run(self, ds, head, entry, cluster_name, start: int = 0):
        filters = self.filters
        for i in range(start, len(filters)):
            verdict = filters[i].decode_headers(ds, head, entry, cluster_name)
            if verdict is not None:
                if type(verdict) is Delay:
                    verdict.next = i + 1
                return verdict
        return None
