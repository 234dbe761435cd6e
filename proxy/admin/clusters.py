"""GET /clusters: Envoy's text lines and its admin.v3.Clusters JSON, read from the shared host table.

Text (one `name::value` fact a line, as Envoy's clusters handler writes them):

    version_info::static
    <cluster>::outlier::success_rate_average::-1               (clusters with outlier_detection)
    <cluster>::default_priority::max_connections::1024         (and max_pending_requests,
    <cluster>::high_priority::max_connections::1024             max_requests, max_retries)
    <cluster>::added_via_api::false
    <cluster>::<ip>:<port>::<stat>::<value>                    (the host's stats, sorted by name)
    <cluster>::<ip>:<port>::hostname|health_flags|weight|region|zone|sub_zone|canary|priority|
                            success_rate|local_origin_success_rate::<value>
    <cluster>::<ip>:<port>::ewma_ms::<float>                   (cyvoy: the latency peak-EWMA)

Per-host figures the table has: rq_active (requests in flight, all workers), rq_total, rq_error
(5xx and local-origin failures) and rq_success = rq_total - rq_error. Connection counts per host
(cx_*) are not kept in shared memory, so they are not shown rather than shown as 0. Success rates
are computed by the health-check process and not published: -1 ("not enough data"), as Envoy
prints when it has none.
"""
from __future__ import annotations

import ipaddress

import orjson

from proxy._fastpath import hosttable as ht

# table flag -> Envoy's health flag string, in Envoy's order (HostUtility::healthFlagsToString)
_FLAG_TEXT = (
    (ht.FAILED_ACTIVE_HC, "/failed_active_hc"),
    (ht.FAILED_OUTLIER, "/failed_outlier_check"),
    (ht.DEGRADED_ACTIVE_HC, "/degraded_active_hc"),
    (ht.DRAINING | ht.DNS_REMOVED, "/pending_dynamic_removal"),
    (ht.PENDING_ACTIVE_HC, "/pending_active_hc"),
)

_THRESHOLD_DEFAULTS = {"max_connections": 1024, "max_pending_requests": 1024,
                       "max_requests": 1024, "max_retries": 3}


def health_flags_text(flags: int) -> str:
    out = "".join(text for bit, text in _FLAG_TEXT if flags & bit)
    return out or "healthy"


def health_status_json(flags: int) -> dict:
    """admin.v3.HostHealthStatus: only the flags that are set, as proto3 JSON does."""
    st: dict = {}
    if flags & ht.FAILED_ACTIVE_HC:
        st["failed_active_health_check"] = True
    if flags & ht.FAILED_OUTLIER:
        st["failed_outlier_check"] = True
    if flags & ht.DEGRADED_ACTIVE_HC:
        st["failed_active_degraded_check"] = True
    if flags & (ht.DRAINING | ht.DNS_REMOVED):
        st["pending_dynamic_removal"] = True
    if flags & ht.PENDING_ACTIVE_HC:
        st["pending_active_hc"] = True
    st["eds_health_status"] = "HEALTHY"      # no EDS: never marked by it
    return st


def host_label(address: str, port: int) -> str:
    """Envoy's Address::asString: 1.2.3.4:80, [::1]:80."""
    try:
        if ipaddress.ip_address(address).version == 6:
            return f"[{address}]:{port}"
    except ValueError:
        pass
    return f"{address}:{port}"


def thresholds(cluster) -> dict[str, dict]:
    """Circuit-breaker thresholds by priority ("DEFAULT", "HIGH"), Envoy's defaults filled in."""
    out = {"DEFAULT": dict(_THRESHOLD_DEFAULTS), "HIGH": dict(_THRESHOLD_DEFAULTS)}
    cb = cluster.circuit_breakers or {}
    for t in cb.get("thresholds") or []:
        prio = t.get("priority") or "DEFAULT"
        for k in _THRESHOLD_DEFAULTS:
            if t.get(k) is not None:
                out[prio][k] = int(t[k])
    return out


def hosts(bootstrap, table, layout):
    """[(cluster name, cluster, [host dict])] in config order; a host dict per slot in use."""
    out = []
    for name, cl in layout.clusters.items():
        cluster = bootstrap.clusters.get(name)
        if cluster is None:
            continue
        hs = []
        for k in range(cl.n_slots):
            i = cl.first_slot + k
            addr = table.host_address(i)
            if addr is None:
                continue
            address, port = addr
            ep = _endpoint_for(cluster, cl, k, port, table, i)
            c = table.counters(i)
            rq_total = int(c["rq_total"])
            rq_error = int(c["rq_error"])
            hs.append({
                "slot": i,
                "address": address,
                "port": port,
                "label": host_label(address, port),
                "flags": table.flags(i),
                "weight": table.weight(i),
                "priority": table.priority(i),
                "hostname": (ep.hostname or (ep.address if cl.dns else "")) if ep else "",
                "locality": (ep.locality or {}) if ep else {},
                "counters": {"rq_error": rq_error, "rq_success": max(0, rq_total - rq_error),
                             "rq_total": rq_total},
                "gauges": {"rq_active": max(0, int(c["active"]))},
                "ewma_ms": float(c["ewma_ms"]),
            })
        out.append((name, cluster, hs))
    return out


def _endpoint_for(cluster, cl, k, port, table, i):
    if not cl.dns:
        return cl.endpoints[k] if k < len(cl.endpoints) else None
    # DNS slots are filled in answer order, endpoint after endpoint: the endpoint is the one of
    # this port/priority/weight when that is unambiguous
    eps = cluster.endpoints
    if len(eps) == 1:
        return eps[0]
    match = [e for e in eps if e.port == port and e.priority == table.priority(i)
             and e.weight == table.weight(i)]
    return match[0] if len(match) == 1 else None


def render_text(bootstrap, table, layout) -> str:
    lines = ["version_info::static"]
    for name, cluster, hs in hosts(bootstrap, table, layout):
        if cluster.outlier_detection:
            for k in ("success_rate_average", "success_rate_ejection_threshold",
                      "local_origin_success_rate_average",
                      "local_origin_success_rate_ejection_threshold"):
                lines.append(f"{name}::outlier::{k}::-1")
        th = thresholds(cluster)
        for prio, label in (("DEFAULT", "default"), ("HIGH", "high")):
            for k in ("max_connections", "max_pending_requests", "max_requests", "max_retries"):
                lines.append(f"{name}::{label}_priority::{k}::{th[prio][k]}")
        lines.append(f"{name}::added_via_api::false")
        for h in hs:
            p = f"{name}::{h['label']}::"
            stats = dict(h["counters"])
            stats.update(h["gauges"])
            for k in sorted(stats):
                lines.append(f"{p}{k}::{stats[k]}")
            loc = h["locality"]
            lines.append(f"{p}hostname::{h['hostname']}")
            lines.append(f"{p}health_flags::{health_flags_text(h['flags'])}")
            lines.append(f"{p}weight::{h['weight']}")
            lines.append(f"{p}region::{loc.get('region') or ''}")
            lines.append(f"{p}zone::{loc.get('zone') or ''}")
            lines.append(f"{p}sub_zone::{loc.get('sub_zone') or ''}")
            lines.append(f"{p}canary::false")
            lines.append(f"{p}priority::{h['priority']}")
            lines.append(f"{p}success_rate::-1")
            lines.append(f"{p}local_origin_success_rate::-1")
            lines.append(f"{p}ewma_ms::{round(h['ewma_ms'], 3):g}")
    return "\n".join(lines) + "\n"


def render_json(bootstrap, table, layout) -> bytes:
    """admin.v3.Clusters. uint64 stat values are JSON strings, as proto3 JSON (and Envoy) write
    them; defaults are printed rather than left out. cyvoy's extras sit under "cyvoy"."""
    statuses = []
    for name, cluster, hs in hosts(bootstrap, table, layout):
        th = thresholds(cluster)
        cb = []
        for prio in ("DEFAULT", "HIGH"):
            t = {"priority": prio}
            t.update(th[prio])
            cb.append(t)
        host_statuses = []
        for h in hs:
            stats = [{"name": k, "value": str(v), "type": "COUNTER"}
                     for k, v in sorted(h["counters"].items())]
            stats += [{"name": k, "value": str(v), "type": "GAUGE"}
                      for k, v in sorted(h["gauges"].items())]
            hsj = {
                "address": {"socket_address": {"address": h["address"], "port_value": h["port"]}},
                "stats": stats,
                "health_status": health_status_json(h["flags"]),
                "weight": h["weight"],
                "priority": h["priority"],
                "hostname": h["hostname"],
                "cyvoy": {"ewma_ms": round(h["ewma_ms"], 3)},
            }
            loc = {k: h["locality"][k] for k in ("region", "zone", "sub_zone")
                   if h["locality"].get(k)}
            if loc:
                hsj["locality"] = loc
            host_statuses.append(hsj)
        statuses.append({
            "name": name,
            "observability_name": name,
            "added_via_api": False,
            "circuit_breakers": {"thresholds": cb},
            "host_statuses": host_statuses,
        })
    return orjson.dumps({"cluster_statuses": statuses}, option=orjson.OPT_INDENT_2) + b"\n"
