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
    n = 2000
    got = collections.Counter(request(p.port) for _ in range(n))
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
