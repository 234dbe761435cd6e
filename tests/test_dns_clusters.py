"""STRICT_DNS / LOGICAL_DNS clusters resolve their endpoints' names (issue 2: the cluster types it accepts)."""
from __future__ import annotations

import http.client

from tests.harness import simple_config


def get(port, path="/"):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    c.request("GET", path)
    r = c.getresponse()
    return r.status, r.read()


def dns_config(port: int, name: str, type_: str) -> dict:
    cfg = simple_config([port], cluster_fields={"type": type_, "dns_lookup_family": "V4_ONLY"})
    ep = cfg["static_resources"]["clusters"][0]["load_assignment"]["endpoints"][0]["lb_endpoints"][0]
    ep["endpoint"]["address"]["socket_address"]["address"] = name
    return cfg


def test_strict_dns_cluster_proxies_to_the_resolved_address(upstreams, proxy):
    (up,) = upstreams(1)
    p = proxy(dns_config(up.port, "localhost", "STRICT_DNS"), workers=1)
    assert get(p.port) == (200, b"ok from up0")


def test_logical_dns_cluster_proxies_to_the_first_address(upstreams, proxy):
    (up,) = upstreams(1)
    p = proxy(dns_config(up.port, "localhost", "LOGICAL_DNS"), workers=1)
    assert get(p.port) == (200, b"ok from up0")


def test_unresolvable_dns_cluster_answers_503_no_healthy_upstream(upstreams, proxy):
    (up,) = upstreams(1)
    p = proxy(dns_config(up.port, "cyvoy-test.invalid", "STRICT_DNS"), workers=1)
    assert get(p.port) == (503, b"no healthy upstream")


def test_auto_host_rewrite_uses_the_dns_name(upstreams, proxy):
    import json
    (up,) = upstreams(1)
    cfg = dns_config(up.port, "localhost", "STRICT_DNS")
    cfg["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]["route_config"][
        "virtual_hosts"][0]["routes"][0]["route"]["auto_host_rewrite"] = True
    p = proxy(cfg, workers=1)
    status, body = get(p.port, "/echo")
    assert dict(json.loads(body)["headers"])["Host"] == "localhost"
