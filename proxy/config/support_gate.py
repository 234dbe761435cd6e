"""The support gate: cluster features the schema validates in full but this version of cyvoy does
not run yet. Refused at load time, after validation, so a config that would be valid later is
told exactly what is missing. Remove a row when its feature lands.
"""
from __future__ import annotations

from proxy.config.errors import ConfigError, index, join
from proxy.config.model import Bootstrap, Cluster

# (Cluster attribute, what it needs)
NOT_IMPLEMENTED_YET: tuple[tuple[str, str], ...] = ()

# circuit breaker threshold fields cyvoy does not run yet, with their harmless value
THRESHOLDS_NOT_YET: dict[str, object] = {
    "max_connection_pools": None,
}
# per_host_thresholds: Envoy honours only max_connections there; cyvoy refuses the rest rather
# than ignore them
PER_HOST_IGNORED: dict[str, object] = {
    "max_pending_requests": 1024, "max_requests": 1024, "max_retries": 3, "retry_budget": None,
    "track_remaining": False, "max_connection_pools": None,
}

# common_lb_config fields cyvoy does not run yet, with the value that means "not used"
COMMON_LB_NOT_YET: dict[str, object] = {
    "zone_aware_lb_config": None,
    "locality_weighted_lb_config": None,
    "ignore_new_hosts_until_first_hc": False,
    "close_connections_on_host_set_change": False,
    "consistent_hashing_lb_config": None,
}


def _in_use(cluster: Cluster, attribute: str) -> str | None:
    """The config field (relative to the cluster) that uses `attribute`, if any."""
    return attribute if getattr(cluster, attribute) else None


def refuse_unimplemented(bootstrap: Bootstrap, path: str = "static_resources.clusters") -> None:
    for i, cluster in enumerate(bootstrap.clusters.values()):
        cpath = index(path, i)
        for attribute, what in NOT_IMPLEMENTED_YET:
            field = _in_use(cluster, attribute)
            if field is not None:
                raise ConfigError(join(cpath, field),
                                  f"valid, but not implemented yet in this version of cyvoy ({what})")
        for name, unused in COMMON_LB_NOT_YET.items():
            if (cluster.common_lb_config or {}).get(name, unused) != unused:
                raise ConfigError(join(join(cpath, "common_lb_config"), name),
                                  "valid, but not implemented yet in this version of cyvoy")
        _check_lb(cluster, cpath)
        _check_breakers(cluster, join(cpath, "circuit_breakers"))
        od = cluster.outlier_detection
        if od and od["max_ejection_time"] < od["base_ejection_time"]:
            # Envoy refuses such a cluster (outlier_detection_impl.cc)
            raise ConfigError(join(join(cpath, "outlier_detection"), "max_ejection_time"),
                              "must be at least base_ejection_time")


def _check_lb(cluster: Cluster, cpath: str) -> None:
    """The load balancer the worker will build must exist: ask the fast path's factory."""
    from proxy._fastpath.lb import lb_options
    try:
        lb_options(cluster)
    except ValueError as e:
        field = "load_balancing_policy" if (cluster.lb_config or {}).get("load_balancing_policy") else "lb_policy"
        raise ConfigError(join(cpath, field), str(e)) from None


def _check_breakers(cluster: Cluster, path: str) -> None:
    cb = cluster.circuit_breakers or {}
    per_host = cb.get("per_host_thresholds") or []
    if len(per_host) > 1:
        raise ConfigError(index(join(path, "per_host_thresholds"), 1),
                          "cyvoy has no route priorities: one per_host_thresholds entry (DEFAULT) only")
    for t in per_host:
        tpath = index(join(path, "per_host_thresholds"), 0)
        _refuse_high(t, tpath)
        for name, unused in PER_HOST_IGNORED.items():
            if t.get(name, unused) != unused:
                raise ConfigError(join(tpath, name), "not supported by cyvoy (per_host_thresholds honours "
                                  "max_connections only, as Envoy's)")
    for i, t in enumerate(cb.get("thresholds") or []):
        tpath = index(join(path, "thresholds"), i)
        _refuse_high(t, tpath)
        for name, unused in THRESHOLDS_NOT_YET.items():
            if t.get(name, unused) != unused:
                raise ConfigError(join(tpath, name), "valid, but not implemented yet in this version of cyvoy "
                                  "(cyvoy enforces max_connections, max_pending_requests, max_requests, "
                                  "max_retries and retry_budget)")


def _refuse_high(t: dict, tpath: str) -> None:
    if t.get("priority") == "HIGH":
        raise ConfigError(join(tpath, "priority"), "cyvoy has no route priorities, so HIGH thresholds "
                          "would never apply")
