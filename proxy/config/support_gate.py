"""The support gate: cluster features the schema validates in full but this version of cyvoy does
not run yet. Refused at load time, after validation, so a config that would be valid later is
told exactly what is missing. Remove a row when its feature lands.
"""
from __future__ import annotations

from proxy.config.errors import ConfigError, index, join
from proxy.config.model import Bootstrap, Cluster

# (Cluster attribute, what it needs)
NOT_IMPLEMENTED_YET: tuple[tuple[str, str], ...] = (
    ("health_checks", "active health checking"),
    ("outlier_detection", "outlier detection"),
    ("circuit_breakers", "circuit breakers"),
    ("common_lb_config", "common load balancer options such as the panic threshold"),
    ("lb_config", "load balancer options"),
    ("lb_policy", "load balancing policies other than ROUND_ROBIN"),
)


def _in_use(cluster: Cluster, attribute: str) -> str | None:
    """The config field (relative to the cluster) that uses `attribute`, if any."""
    value = getattr(cluster, attribute)
    if attribute == "lb_policy":
        return "lb_policy" if value != "ROUND_ROBIN" else None
    if attribute == "lb_config":
        return next(iter(value)) if value else None
    return attribute if value else None


def refuse_unimplemented(bootstrap: Bootstrap, path: str = "static_resources.clusters") -> None:
    for i, cluster in enumerate(bootstrap.clusters.values()):
        for attribute, what in NOT_IMPLEMENTED_YET:
            field = _in_use(cluster, attribute)
            if field is not None:
                detail = f"{what}: {cluster.lb_policy}" if attribute == "lb_policy" else what
                raise ConfigError(join(index(path, i), field),
                                  "valid, but not implemented yet in this version of cyvoy "
                                  f"({detail})")
