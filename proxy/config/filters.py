"""Builds the HTTP filters that run before the router (http_filters) and their per-route
configs (typed_per_filter_config on a virtual host or route).

envoy.filters.http.fault (docs/root/configuration/http/http_filters/fault_filter.rst) and
envoy.filters.http.local_ratelimit (local_rate_limit_filter.rst). Percentages are kept as
(numerator, denominator) pairs, Envoy's FractionalPercent; a missing `percentage` is 0%, as in
Envoy (the proto default), not 100%.
"""
from __future__ import annotations

from typing import Any

from proxy.config.errors import ConfigError, index, join
from proxy.config.model import FaultFilter, HttpFilter, LocalRateLimitFilter

FAULT = "envoy.filters.http.fault"
LOCAL_RATELIMIT = "envoy.filters.http.local_ratelimit"
GRPC_HTTP1_BRIDGE = "envoy.filters.http.grpc_http1_bridge"
DENOMINATORS = {"HUNDRED": 100, "TEN_THOUSAND": 10_000, "MILLION": 1_000_000}
# local_rate_limit.proto: "fill_interval must be >= 50ms to avoid too aggressive refills"
MIN_FILL_INTERVAL = 0.05


def fraction(fp: dict | None) -> tuple[int, int]:
    """A FractionalPercent as (numerator, denominator); the numerator is capped at the
    denominator, as Envoy does."""
    if fp is None:
        return (0, 100)
    den = DENOMINATORS[fp["denominator"]]
    return (min(fp["numerator"], den), den)


def build_http_filter(name: str, config: dict, path: str) -> HttpFilter:
    """One http_filters entry (not the router) at `path`."""
    cpath = join(path, "typed_config")
    if name == FAULT:
        return HttpFilter(name, fault(config, cpath))
    if name == GRPC_HTTP1_BRIDGE:
        return HttpFilter(name, None)     # its options are all refused or default
    if config["stat_prefix"] == "":
        raise ConfigError(join(cpath, "stat_prefix"), "missing required field (the filter's "
                                                      "stats are named by it)")
    return HttpFilter(name, local_ratelimit(config, cpath, config["stat_prefix"], per_route=False))


def build_per_filter(raw: dict, path: str, filters: dict[str, Any]) -> dict[str, Any]:
    """typed_per_filter_config of a virtual host or route. `filters` are the connection
    manager's filters by name: a per-route config for a filter not in the chain is refused
    (Envoy would never run it)."""
    out: dict[str, Any] = {}
    for name, typed in raw.items():
        fpath = f"{path}[{name!r}]"
        extension = typed["extension"]
        if extension == "envoy.filters.http.router":
            raise ConfigError(fpath, "not supported by cyvoy (the router has no per-route config)")
        if extension not in filters:
            raise ConfigError(fpath, f"{extension} is not in this connection manager's "
                                     "http_filters, so this config would never apply")
        if extension == GRPC_HTTP1_BRIDGE:
            raise ConfigError(fpath, f"not supported by cyvoy ({extension} has no per-route config)")
        if extension == FAULT:
            out[extension] = fault(typed["config"], fpath)
        else:
            base = filters[extension]
            out[extension] = local_ratelimit(typed["config"], fpath,
                                             typed["config"]["stat_prefix"] or base.stat_prefix,
                                             per_route=True)
    return out


def fault(c: dict, path: str) -> FaultFilter:
    f = FaultFilter(upstream_cluster=c["upstream_cluster"], max_active_faults=c["max_active_faults"])
    from proxy.config.routes import header_matcher   # routes imports this module
    f.headers = [header_matcher(h, index(join(path, "headers"), i)) for i, h in enumerate(c["headers"])]
    d = c["delay"]
    if d is not None:
        f.delay = d["fixed_delay"]
        f.delay_from_header = d["header_delay"] is not None
        f.delay_percent = fraction(d["percentage"])
    a = c["abort"]
    if a is not None:
        f.abort_status = a["http_status"]
        f.abort_from_header = a["header_abort"] is not None
        f.abort_percent = fraction(a["percentage"])
    return f


def local_ratelimit(c: dict, path: str, stat_prefix: str, per_route: bool) -> LocalRateLimitFilter:
    status = c["status"]["code"] if c["status"] is not None else 429
    f = LocalRateLimitFilter(stat_prefix=stat_prefix,
                             status=status if status >= 400 else 429)   # proto: "< 400: 429"
    tb = c["token_bucket"]
    if tb is not None:
        if tb["fill_interval"] < MIN_FILL_INTERVAL:
            raise ConfigError(join(join(path, "token_bucket"), "fill_interval"),
                              "must be at least 0.05s (Envoy refuses faster refills)")
        f.token_bucket = (tb["max_tokens"], tb["tokens_per_fill"], tb["fill_interval"])
    elif per_route:
        raise ConfigError(join(path, "token_bucket"), "missing required field (a per-route local "
                                                      "rate limit needs its own token bucket)")
    for key in ("filter_enabled", "filter_enforced"):
        rf = c[key]
        if rf is not None:
            attr = "enabled" if key == "filter_enabled" else "enforced"
            setattr(f, attr, fraction(rf["default_value"]))
            setattr(f, attr + "_key", rf["runtime_key"] or None)
    from proxy.config.routes import header_option
    f.response_headers = [header_option(o, index(join(path, "response_headers_to_add"), i))
                          for i, o in enumerate(c["response_headers_to_add"])]
    f.request_headers_when_not_enforced = [
        header_option(o, index(join(path, "request_headers_to_add_when_not_enforced"), i))
        for i, o in enumerate(c["request_headers_to_add_when_not_enforced"])]
    return f


def runtime_keys(listeners) -> set[str]:
    """The runtime keys the filters read (integer percents in the static runtime layer)."""
    keys = set()
    for cfg in all_filter_configs(listeners):
        if isinstance(cfg, LocalRateLimitFilter):
            keys.update(k for k in (cfg.enabled_key, cfg.enforced_key) if k)
    return keys


def all_filter_configs(listeners):
    """Every filter config of the listeners: the chains' and the per-route ones, in order."""
    for lst in listeners:
        for hf in lst.hcm.filters:
            yield hf.config
        for vh in lst.hcm.route_config.virtual_hosts:
            yield from vh.per_filter.values()
            for r in vh.routes:
                yield from r.per_filter.values()


def assign_shared(listeners) -> tuple[list[LocalRateLimitFilter], list[FaultFilter]]:
    """Give every local rate limit config with a token bucket its bucket index, and every fault
    config with max_active_faults its counter index: the master allocates both in shared memory
    before fork (proxy.filters.SharedFilterState)."""
    buckets, counters = [], []
    for cfg in all_filter_configs(listeners):
        if isinstance(cfg, LocalRateLimitFilter) and cfg.token_bucket is not None:
            cfg.bucket = len(buckets)
            buckets.append(cfg)
        elif isinstance(cfg, FaultFilter) and cfg.max_active_faults is not None:
            cfg.counter = len(counters)
            counters.append(cfg)
    return buckets, counters
