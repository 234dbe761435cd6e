"""Traffic splitting (issue 4, item 3, in part): weighted_clusters and runtime_fraction, live."""
from __future__ import annotations

import collections
import http.client

from tests.harness import cluster, hcm, listener


def request(port):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    c.request("GET", "/")
    r = c.getresponse()
    body = r.read()
    c.close()
    return body


def config(routes, ports, runtime=None):
    vh = [{"name": "all", "domains": ["*"], "routes": routes}]
    cfg = {"static_resources": {"listeners": [listener("main", 0, hcm(vh))],
                                "clusters": [cluster("stable", [ports[0]]), cluster("canary", [ports[1]])]}}
    if runtime is not None:
        cfg["layered_runtime"] = {"layers": [{"name": "static", "static_layer": runtime}]}
    return cfg


def test_weighted_clusters_split_90_10_within_2_percent(upstreams, proxy):
    a, b = upstreams(2)
    routes = [{"match": {"prefix": "/"}, "route": {"weighted_clusters": {"clusters": [
        {"name": "stable", "weight": 90}, {"name": "canary", "weight": 10}]}}}]
    p = proxy(config(routes, [a.port, b.port]), workers=2)
    n = 10_000
    # kept-alive connections (several, so both workers pick): Envoy picks per request
    conns = [http.client.HTTPConnection("127.0.0.1", p.port, timeout=10) for _ in range(8)]
    got = collections.Counter()
    for i in range(n):
        c = conns[i % len(conns)]
        c.request("GET", "/")
        got[c.getresponse().read()] += 1
    for c in conns:
        c.close()
    assert abs(got[b"ok from up1"] / n - 0.10) < 0.02, got


def test_runtime_fraction_routes_its_share_and_the_rest_falls_through(upstreams, proxy):
    a, b = upstreams(2)
    routes = [
        {"match": {"prefix": "/", "runtime_fraction": {"default_value": {"numerator": 20}}},
         "route": {"cluster": "canary"}},
        {"match": {"prefix": "/"}, "route": {"cluster": "stable"}},
    ]
    p = proxy(config(routes, [a.port, b.port]), workers=1)
    n = 1000
    got = collections.Counter(request(p.port) for _ in range(n))
    assert abs(got[b"ok from up1"] / n - 0.20) < 0.05, got


def test_runtime_key_in_the_static_layer_overrides_the_default(upstreams, proxy):
    a, b = upstreams(2)
    routes = [
        {"match": {"prefix": "/", "runtime_fraction": {"default_value": {"numerator": 0},
                                                       "runtime_key": "routing.canary"}},
         "route": {"cluster": "canary"}},
        {"match": {"prefix": "/"}, "route": {"cluster": "stable"}},
    ]
    p = proxy(config(routes, [a.port, b.port], runtime={"routing": {"canary": 100}}), workers=1)
    assert {request(p.port) for _ in range(10)} == {b"ok from up1"}


def header_routes(**action):
    return [{"match": {"prefix": "/"}, "route": {"cluster_header": "x-cluster", **action}}]


def status_of(port, headers):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    c.request("GET", "/", headers=headers)
    r = c.getresponse()
    body = r.read()
    c.close()
    return r.status, body


def test_cluster_header_routes_to_the_cluster_the_request_names(upstreams, proxy):
    a, b = upstreams(2)
    p = proxy(config(header_routes(), [a.port, b.port]), workers=1)
    assert status_of(p.port, {"x-cluster": "canary"}) == (200, b"ok from up1")
    assert status_of(p.port, {"x-cluster": "stable"}) == (200, b"ok from up0")


def test_cluster_header_missing_or_unknown_gets_503_by_default(upstreams, proxy):
    # RouteAction.cluster_not_found_response_code defaults to SERVICE_UNAVAILABLE
    a, b = upstreams(2)
    p = proxy(config(header_routes(), [a.port, b.port]), workers=1)
    assert status_of(p.port, {})[0] == 503
    assert status_of(p.port, {"x-cluster": "nope"})[0] == 503
    assert a.requests == [] and b.requests == []


def test_cluster_not_found_response_code_not_found_gives_404(upstreams, proxy):
    a, b = upstreams(2)
    p = proxy(config(header_routes(cluster_not_found_response_code="NOT_FOUND"), [a.port, b.port]), workers=1)
    assert status_of(p.port, {"x-cluster": "nope"})[0] == 404
