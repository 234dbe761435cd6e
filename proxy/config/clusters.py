"""Builds model.Cluster: endpoints from load_assignment, plus the validated dicts of the
features later versions implement (health checks, outlier detection, circuit breakers,
load-balancer options) with Envoy's defaults filled in, including those that default to
another field."""
from __future__ import annotations

from typing import Any

from proxy.config.addresses import socket_address
from proxy.config.tls import upstream_tls
from proxy.config.errors import ConfigError, index, join
from proxy.config.model import Cluster, Endpoint
from proxy.config.routes import header_option

# Each *_lb_config only configures its own lb_policy (cluster.proto, `oneof lb_config`).
LB_CONFIG_POLICY = {
    "round_robin_lb_config": "ROUND_ROBIN",
    "least_request_lb_config": "LEAST_REQUEST",
    "ring_hash_lb_config": "RING_HASH",
    "maglev_lb_config": "MAGLEV",
}
# RuntimeDouble defaults for least_request.active_request_bias and slow_start.aggression.
_RUNTIME_ONE = {"default_value": 1.0, "runtime_key": None}


def build_clusters(clusters: list[dict], path: str) -> dict[str, Cluster]:
    out: dict[str, Cluster] = {}
    where: dict[str, str] = {}
    for i, raw in enumerate(clusters):
        cpath = index(path, i)
        name = raw["name"]
        if name in out:
            raise ConfigError(join(cpath, "name"),
                              f"duplicate cluster name {name!r} (also {where[name]})")
        where[name] = cpath
        out[name] = _cluster(raw, cpath)
    return out


def _cluster(c: dict, path: str) -> Cluster:
    protocol, h2_options = _upstream_protocol(c, path)
    return Cluster(
        upstream_protocol=protocol,
        http2_protocol_options=h2_options,
        name=c["name"],
        type=c["type"],
        connect_timeout=c["connect_timeout"],
        lb_policy=c["lb_policy"],
        endpoints=_endpoints(c, path),
        per_connection_buffer_limit_bytes=c["per_connection_buffer_limit_bytes"],
        dns_refresh_rate=c["dns_refresh_rate"],
        dns_lookup_family=c["dns_lookup_family"],
        respect_dns_ttl=c["respect_dns_ttl"],
        health_checks=[_health_check(hc, index(join(path, "health_checks"), i), c["name"])
                       for i, hc in enumerate(c["health_checks"])],
        outlier_detection=_outlier_detection(c["outlier_detection"]),
        circuit_breakers=c["circuit_breakers"],
        common_lb_config=c["common_lb_config"],
        lb_config=_lb_config(c, path),
        tls=_transport_socket(c["transport_socket"], join(path, "transport_socket")),
    )


HTTP_PROTOCOL_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"


def _upstream_protocol(c: dict, path: str) -> tuple[str, dict | None]:
    """(protocol, Http2ProtocolOptions) from typed_extension_protocol_options, or from the
    deprecated http2_protocol_options field (Envoy still honours it)."""
    typed = c["typed_extension_protocol_options"] or {}
    options = typed.get(HTTP_PROTOCOL_OPTIONS)
    if options is not None:
        if c["http2_protocol_options"] is not None:
            raise ConfigError(join(path, "http2_protocol_options"),
                              f"set the protocol in typed_extension_protocol_options "
                              f"{HTTP_PROTOCOL_OPTIONS} only, not in both places")
        o = options["config"]
        if o["use_downstream_protocol_config"] is not None:
            d = o["use_downstream_protocol_config"]
            return "DOWNSTREAM", d["http2_protocol_options"] or {}
        explicit = o["explicit_http_config"]
        if explicit is not None and explicit["http2_protocol_options"] is not None:
            return "HTTP2", explicit["http2_protocol_options"]
        if explicit is not None and explicit["http_protocol_options"]:
            raise ConfigError(join(join(join(join(path, "typed_extension_protocol_options"),
                                                 HTTP_PROTOCOL_OPTIONS), "typed_config"),
                                   "explicit_http_config.http_protocol_options"),
                              "not supported by cyvoy (HTTP/1 protocol options are not supported "
                              "yet; write {})")
        return "HTTP1", None
    if c["http2_protocol_options"] is not None:
        return "HTTP2", c["http2_protocol_options"]
    return "HTTP1", None


def _transport_socket(ts, path: str):
    """envoy.transport_sockets.tls: the cluster's UpstreamTlsContext; raw_buffer: plaintext."""
    if ts is None or ts["typed_config"]["extension"] != "envoy.transport_sockets.tls":
        return None
    return upstream_tls(ts["typed_config"]["config"], join(path, "typed_config"))


# --- endpoints ---------------------------------------------------------------------------------

def _endpoints(c: dict, path: str) -> list[Endpoint]:
    assignment = c["load_assignment"]
    if assignment is None:
        return []
    apath = join(path, "load_assignment")
    static = c["type"] == "STATIC"
    endpoints: list[Endpoint] = []
    for i, group in enumerate(assignment["endpoints"]):
        gpath = index(join(apath, "endpoints"), i)
        locality = group["locality"]
        for j, lb_endpoint in enumerate(group["lb_endpoints"]):
            epath = join(index(join(gpath, "lb_endpoints"), j), "endpoint")
            endpoints.append(_endpoint(lb_endpoint, epath, static, group["priority"], locality,
                                       group["load_balancing_weight"]))
    _check_priorities([g["priority"] for g in assignment["endpoints"]], join(apath, "endpoints"))
    if c["type"] == "LOGICAL_DNS" and len(endpoints) != 1:
        raise ConfigError(join(apath, "endpoints"),
                          f"a LOGICAL_DNS cluster needs exactly one endpoint (found "
                          f"{len(endpoints)})")
    return endpoints


def _endpoint(lb_endpoint: dict, path: str, static: bool, priority: int,
              locality: Any, locality_weight: Any) -> Endpoint:
    e = lb_endpoint["endpoint"]
    apath = join(path, "address")
    try:
        host, port = socket_address(e["address"], apath, need_ip=static)
    except ConfigError as err:
        if static:
            raise ConfigError(err.path, f"{err.reason}: a STATIC cluster needs IP addresses "
                                        "(use type STRICT_DNS or LOGICAL_DNS for host names)"
                              ) from None
        raise
    if port == 0:
        raise ConfigError(join(apath, "socket_address.port_value"),
                          "an upstream endpoint needs a port (1-65535)")
    hc_port, hc_address = 0, None
    hc = e["health_check_config"]
    if hc is not None:
        hc_port = hc["port_value"]
        if hc["address"] is not None:
            hc_address, address_port = socket_address(
                hc["address"], join(join(path, "health_check_config"), "address"), need_ip=static)
            hc_port = hc_port or address_port
    return Endpoint(address=host, port=port, weight=lb_endpoint["load_balancing_weight"],
                    priority=priority, health_check_port=hc_port,
                    health_check_address=hc_address, hostname=e["hostname"],
                    locality=locality, locality_weight=locality_weight)


def _check_priorities(priorities: list[int], path: str) -> None:
    # Envoy's priority levels must run 0, 1, 2... without gaps.
    present = sorted(set(priorities))
    if present and present != list(range(present[-1] + 1)):
        missing = sorted(set(range(present[-1] + 1)) - set(present))
        raise ConfigError(path, f"priorities must be contiguous from 0; found "
                                f"{', '.join(map(str, present))} but not "
                                f"{', '.join(map(str, missing))}")


# --- features validated now, implemented later -------------------------------------------------

def _health_check(hc: dict, path: str, cluster: str) -> dict:
    hc = dict(hc)
    # Defaults that are other fields (health_check.proto).
    hc["no_traffic_healthy_interval"] = _or(hc["no_traffic_healthy_interval"],
                                            hc["no_traffic_interval"])
    hc["unhealthy_interval"] = _or(hc["unhealthy_interval"], hc["interval"])
    hc["unhealthy_edge_interval"] = _or(hc["unhealthy_edge_interval"], hc["unhealthy_interval"])
    hc["healthy_edge_interval"] = _or(hc["healthy_edge_interval"], hc["interval"])
    if hc["http_health_check"] is not None:
        hc["http_health_check"] = _http_check(hc["http_health_check"],
                                              join(path, "http_health_check"), cluster)
    if hc["tcp_health_check"] is not None:
        hc["tcp_health_check"] = _tcp_check(hc["tcp_health_check"],
                                            join(path, "tcp_health_check"))
    if hc["grpc_health_check"] is not None:
        grpc = dict(hc["grpc_health_check"])
        gpath = join(path, "grpc_health_check")
        grpc["authority"] = grpc["authority"] or cluster
        grpc["initial_metadata"] = [header_option(o, index(join(gpath, "initial_metadata"), i))
                                    for i, o in enumerate(grpc["initial_metadata"])]
        hc["grpc_health_check"] = grpc
    return hc


def _or(value: Any, default: Any) -> Any:
    return default if value is None else value


def _http_check(http: dict, path: str, cluster: str) -> dict:
    """host defaults to the cluster name, expected_statuses to [200, 201); header additions
    become model.HeaderValueOption like route ones."""
    http = dict(http)
    http["host"] = http["host"] or cluster
    if http["method"] == "METHOD_UNSPECIFIED":
        http["method"] = "GET"
    for key in ("expected_statuses", "retriable_statuses"):
        for i, r in enumerate(http[key]):
            _check_status_range(r, index(join(path, key), i))
    if not http["expected_statuses"]:
        http["expected_statuses"] = [{"start": 200, "end": 201}]
    http["request_headers_to_add"] = [
        header_option(o, index(join(path, "request_headers_to_add"), i))
        for i, o in enumerate(http["request_headers_to_add"])]
    http["request_headers_to_remove"] = [h.lower() for h in http["request_headers_to_remove"]]
    return http


def _check_status_range(r: dict, path: str) -> None:
    # Half-open [start, end) inside 100..600, as Envoy's HTTP health checker requires.
    if not 100 <= r["start"] < r["end"] <= 600:
        raise ConfigError(path, f"invalid status range [{r['start']}, {r['end']}): need "
                                "100 <= start < end <= 600")


def _tcp_check(tcp: dict, path: str) -> dict:
    """Payloads become bytes: `send` is bytes or None, `receive` a list of bytes."""
    def payload(p: dict, ppath: str) -> bytes:
        if p["binary"] is not None:
            return p["binary"]
        try:
            return bytes.fromhex(p["text"])
        except ValueError:
            raise ConfigError(join(ppath, "text"), f"{p['text']!r} is not hex") from None
    return {
        "send": payload(tcp["send"], join(path, "send")) if tcp["send"] is not None else None,
        "receive": [payload(p, index(join(path, "receive"), i))
                    for i, p in enumerate(tcp["receive"])],
    }


def _outlier_detection(od: Any) -> Any:
    if od is None:
        return None
    od = dict(od)
    # outlier_detection.proto: 300s, or base_ejection_time if that is larger.
    if od["max_ejection_time"] is None:
        od["max_ejection_time"] = max(300.0, od["base_ejection_time"])
    return od


def _is_prime(n: int) -> bool:
    if n < 2:
        return False
    i = 2
    while i * i <= n:
        if n % i == 0:
            return False
        i += 1
    return True


def _lb_config(c: dict, path: str) -> Any:
    """{field name: validated config} for whichever *_lb_config / load_balancing_policy is set,
    or None."""
    configs: dict[str, Any] = {}
    for key, policy in LB_CONFIG_POLICY.items():
        cfg = c[key]
        if cfg is None:
            continue
        kpath = join(path, key)
        if c["lb_policy"] != policy:
            raise ConfigError(kpath, f"{key} configures lb_policy {policy}, but lb_policy is "
                                     f"{c['lb_policy']}")
        cfg = dict(cfg)
        if key == "ring_hash_lb_config" and cfg["minimum_ring_size"] > cfg["maximum_ring_size"]:
            raise ConfigError(join(kpath, "minimum_ring_size"),
                              f"{cfg['minimum_ring_size']} is larger than maximum_ring_size "
                              f"{cfg['maximum_ring_size']}")
        if key == "maglev_lb_config" and not _is_prime(cfg["table_size"]):
            raise ConfigError(join(kpath, "table_size"),
                              f"{cfg['table_size']} is not a prime number (Envoy's default is "
                              "65537)")
        if key == "least_request_lb_config":
            cfg["active_request_bias"] = cfg["active_request_bias"] or dict(_RUNTIME_ONE)
            if cfg["active_request_bias"]["default_value"] < 0:
                raise ConfigError(join(kpath, "active_request_bias.default_value"),
                                  "must be at least 0")
        if cfg.get("slow_start_config") is not None:
            slow = dict(cfg["slow_start_config"])
            slow["aggression"] = slow["aggression"] or dict(_RUNTIME_ONE)
            if slow["aggression"]["default_value"] <= 0:
                raise ConfigError(join(kpath, "slow_start_config.aggression.default_value"),
                                  "must be greater than 0")
            cfg["slow_start_config"] = slow
        configs[key] = cfg
    if c["load_balancing_policy"] is not None:
        configs["load_balancing_policy"] = c["load_balancing_policy"]
    elif c["lb_policy"] == "LOAD_BALANCING_POLICY_CONFIG":
        raise ConfigError(join(path, "lb_policy"),
                          "LOAD_BALANCING_POLICY_CONFIG needs a load_balancing_policy")
    return configs or None


def default_thresholds(cluster) -> dict:
    """A cluster's DEFAULT-priority circuit breaker thresholds, Envoy's defaults filled in."""
    t = {"max_connections": 1024, "max_pending_requests": 1024, "max_requests": 1024,
         "max_retries": 3, "retry_budget": None, "track_remaining": False}
    for th in ((getattr(cluster, "circuit_breakers", None) or {}).get("thresholds") or []):
        if th.get("priority", "DEFAULT") == "DEFAULT":
            t.update({k: v for k, v in th.items() if k in t and v is not None})
    return t
