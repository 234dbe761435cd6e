"""Envoy v3 bootstrap YAML/JSON -> model.Bootstrap.

    parse (parse.py) -> validate against the schema (validate.py, schema.py)
      -> build the model (listeners.py, routes.py, clusters.py, runtime.py)
      -> refuse what is valid but not implemented yet (support_gate.py)

Every refusal is a ConfigError naming the place in the document and the reason. Schema errors
come first, in document order; then the builders' checks (domains, cluster references, weights,
addresses...), whose paths use the snake_case field names even where the document used
camelCase.
"""
from __future__ import annotations

import copy
import os
from typing import Any, Optional, Union

from proxy.config.addresses import socket_address
from proxy.config.clusters import build_clusters
from proxy.config import filters
from proxy.config.errors import ConfigError, join
from proxy.config.listeners import build_listeners
from proxy.config.model import Admin, Bootstrap
from proxy.config.parse import parse_text, read_file
from proxy.config.runtime import build_runtime
from proxy.config.support_gate import refuse_unimplemented
from proxy.config.validate import validate


def load_file(path: Union[str, os.PathLike]) -> Bootstrap:
    """Load a config file; .json is JSON, .yaml/.yml and anything else YAML (as Envoy does)."""
    return load_dict(read_file(path))


def load_text(text: str, fmt: str = "yaml") -> Bootstrap:
    """Load config text; `fmt` is "yaml" or "json"."""
    return load_dict(parse_text(text, fmt))


def load_dict(document: Any) -> Bootstrap:
    """Load an already parsed document (dicts, lists and scalars, as from YAML or JSON)."""
    bootstrap = build_bootstrap(document)
    refuse_unimplemented(bootstrap)
    return bootstrap


def build_bootstrap(document: Any) -> Bootstrap:
    """Validate and build, without the support gate: the model of everything the schema
    accepts, including features cyvoy does not run yet."""
    if document is None:
        raise ConfigError("(document)", "the configuration is empty")
    doc = validate(document)
    static = doc["static_resources"] or {"listeners": [], "clusters": []}
    cluster_names = {c["name"] for c in static["clusters"]}
    listeners = build_listeners(static["listeners"], "static_resources.listeners", cluster_names)
    clusters = build_clusters(static["clusters"], "static_resources.clusters")
    fraction_keys = {r.match.fraction_runtime_key for lst in listeners
                     for vh in lst.hcm.route_config.virtual_hosts for r in vh.routes
                     if r.match.fraction_runtime_key} | filters.runtime_keys(listeners)
    filters.assign_shared(listeners)
    fraction_keys |= {m.fraction_runtime_key for m in _mirror_policies(listeners) if m.fraction_runtime_key}
    runtime, warnings = build_runtime(doc["layered_runtime"], "layered_runtime",
                                      [listener.name for listener in listeners], fraction_keys)
    warnings += _ignored_weight_overrides(listeners)
    node = doc["node"] or {"id": "", "cluster": ""}
    return Bootstrap(
        listeners=listeners,
        clusters=clusters,
        admin=_admin(doc["admin"]),
        runtime=runtime,
        source=copy.deepcopy(document),
        warnings=warnings,
        node_id=node["id"],
        node_cluster=node["cluster"],
        max_downstream_connections=_global_connection_limit(doc["overload_manager"]),
    )


def _global_connection_limit(om: Optional[dict]) -> Optional[int]:
    """overload_manager: the global_downstream_max_connections monitor's limit, if configured."""
    limit = None
    for m in (om or {}).get("resource_monitors") or []:
        limit = m["typed_config"]["config"]["max_active_downstream_connections"]
    return limit


def _routes(listeners):
    for lst in listeners:
        for vh in lst.hcm.route_config.virtual_hosts:
            for r in vh.routes:
                yield lst, vh, r


def _mirror_policies(listeners):
    for lst in listeners:
        rc = lst.hcm.route_config
        yield from rc.mirrors
        for vh in rc.virtual_hosts:
            yield from vh.mirrors
            for r in vh.routes:
                yield from getattr(r.action, "mirrors", ())


def _ignored_weight_overrides(listeners) -> list[str]:
    return [f"listener {lst.name!r}, virtual host {vh.name!r}, route {r.name or r.match.value!r}: "
            f"weighted_clusters.runtime_key_prefix {r.action.runtime_key_prefix!r} is ignored "
            "(cyvoy has no runtime weight overrides; the configured weights apply)"
            for lst, vh, r in _routes(listeners) if getattr(r.action, "runtime_key_prefix", "")]


def _admin(admin: Optional[dict]) -> Optional[Admin]:
    # Envoy starts no admin server when admin has no address.
    if admin is None or admin["address"] is None:
        return None
    address, port = socket_address(admin["address"], join("admin", "address"), need_ip=True)
    return Admin(address=address, port=port)
