"""envoy.filters.http.local_ratelimit: a token bucket in front of the router.

Envoy's behaviour (docs/root/configuration/http/http_filters/local_rate_limit_filter.rst and
api/envoy/extensions/filters/http/local_ratelimit/v3/local_rate_limit.proto): the bucket is
shared by all workers, so the configured rate is the proxy's rate (cyvoy: one bucket per config
in shared memory, proxy/_fastpath/tokenbucket.pyx). filter_enabled and filter_enforced default to
0% "for safety". A request that finds no token gets `status` (429) with body
"local_rate_limited", `x-envoy-ratelimited: true` and response_headers_to_add, flag RL; when
enabled but not enforced it goes on upstream with request_headers_to_add_when_not_enforced.
A per-route config (typed_per_filter_config) has its own bucket.
"""
from __future__ import annotations

from proxy.config.filters import LOCAL_RATELIMIT
from proxy.filters import Reply, hit, runtime_share

BODY = b"local_rate_limited"


def _lines(options) -> bytes:
    return b"".join(f"{o.key}: {o.value}\r\n".encode("latin-1") for o in options)


class _Compiled:
    """One config's per-request needs, computed once."""
    __slots__ = ("bucket", "enabled", "enforced", "reply_headers", "request_lines", "status",
                 "i_enabled", "i_ok", "i_limited", "i_enforced")

    def __init__(self, cfg, registry, runtime):
        self.bucket = cfg.bucket
        self.enabled = runtime_share(cfg.enabled, cfg.enabled_key, runtime)
        self.enforced = runtime_share(cfg.enforced, cfg.enforced_key, runtime)
        self.status = cfg.status
        self.reply_headers = b"x-envoy-ratelimited: true\r\n" + _lines(cfg.response_headers)
        self.request_lines = _lines(cfg.request_headers_when_not_enforced)
        root = f"{cfg.stat_prefix}.http_local_rate_limit."
        self.i_enabled = registry.counter(root + "enabled")
        self.i_ok = registry.counter(root + "ok")
        self.i_limited = registry.counter(root + "rate_limited")
        self.i_enforced = registry.counter(root + "enforced")


class LocalRateLimit:
    def __init__(self, cfg, worker, shared):
        self.cfg = cfg
        self.buckets = shared.buckets
        self.stats = worker.slot_stats
        self.registry = worker.registry
        self.runtime = worker.bootstrap.runtime
        self._compiled: dict[int, _Compiled] = {}

    def decode_headers(self, ds, head, entry, cluster_name):
        cfg = self.cfg
        if entry is not None:
            cfg = entry.per_filter.get(LOCAL_RATELIMIT, cfg)
        if cfg.token_bucket is None:
            return None
        c = self._compiled.get(id(cfg))
        if c is None:
            c = self._compiled[id(cfg)] = _Compiled(cfg, self.registry, self.runtime)
        if not hit(c.enabled):
            return None
        s = self.stats
        s.inc(c.i_enabled)
        if self.buckets.consume(c.bucket):
            s.inc(c.i_ok)
            return None
        s.inc(c.i_limited)
        if not hit(c.enforced):
            if c.request_lines:
                ds.filter_extra += c.request_lines
            return None
        s.inc(c.i_enforced)
        return Reply(c.status, BODY, c.reply_headers, "RL")
