"""Request mirroring (issue 4, item 4): route request_mirror_policies shadow requests to another
cluster, fire and forget, with the Host suffixed "-shadow"; the shadow never delays or fails the
primary request. Envoy: api/envoy/config/route/v3/route_components.proto RequestMirrorPolicy."""
from __future__ import annotations

import http.client
import time

import yaml

from tests.harness import SHARED, cluster, free_port, hcm, listener, wait_for
from tests.test_admin_live import admin_port, call, stat, with_admin
from tests.test_envoy_examples import _to_loopback


def config(primary_port, mirror_port, **route_fields):
    route = {"cluster": "primary", "request_mirror_policies": [{"cluster": "mirror"}], **route_fields}
    vh = [{"name": "all", "domains": ["*"], "routes": [{"match": {"prefix": "/"}, "route": route}]}]
    return {"static_resources": {"listeners": [listener("main", 0, hcm(vh))],
                                 "clusters": [cluster("primary", [primary_port]),
                                              cluster("mirror", [mirror_port])]}}


def headers(req) -> dict:
    return {k.lower(): v for k, v in req["headers"]}


def send(port, method="GET", path="/", body=None, headers=None):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    c.request(method, path, body=body, headers={"Host": "shop.example:8080", **(headers or {})})
    r = c.getresponse()
    data = r.read()
    c.close()
    return r.status, data


def test_mirror_gets_a_copy_with_the_host_suffixed_shadow(upstreams, proxy):
    a, m = upstreams(2)
    p = proxy(config(a.port, m.port), workers=1)
    assert send(p.port, path="/item/7") == (200, b"ok from up0")
    assert wait_for(lambda: len(m.requests) == 1, 5)
    shadow = m.requests[0]
    assert shadow["path"] == "/item/7"
    assert headers(shadow)["host"] == "shop.example-shadow:8080"
    assert headers(a.requests[0])["host"] == "shop.example:8080"


def test_disable_shadow_host_suffix_append_keeps_the_host(upstreams, proxy):
    a, m = upstreams(2)
    cfg = config(a.port, m.port, request_mirror_policies=[
        {"cluster": "mirror", "disable_shadow_host_suffix_append": True}])
    p = proxy(cfg, workers=1)
    send(p.port)
    assert wait_for(lambda: len(m.requests) == 1, 5)
    assert headers(m.requests[0])["host"] == "shop.example:8080"


def test_a_slow_mirror_never_delays_the_primary_response(upstreams, proxy):
    a, m = upstreams(2)
    m.delay_s = 5.0
    p = proxy(config(a.port, m.port), workers=1)
    t0 = time.monotonic()
    assert send(p.port) == (200, b"ok from up0")
    assert time.monotonic() - t0 < 2.5


def test_a_failing_or_absent_mirror_never_fails_the_primary(upstreams, proxy):
    (a, m) = upstreams(2)
    m.fail_status = 500
    p = proxy(config(a.port, m.port), workers=1)
    assert [send(p.port)[0] for _ in range(5)] == [200] * 5
    closed = free_port()   # nothing listens here
    p.stop()
    p2 = proxy(config(a.port, closed), workers=1)
    assert [send(p2.port)[0] for _ in range(5)] == [200] * 5


def test_a_buffered_post_body_is_mirrored(upstreams, proxy):
    a, m = upstreams(2)
    p = proxy(config(a.port, m.port), workers=1)
    status, _ = send(p.port, "POST", "/sink", body=b"x" * 5000)
    assert status == 200
    assert wait_for(lambda: len(m.requests) == 1, 5)
    assert m.requests[0]["body_len"] == 5000


def test_a_body_over_the_buffer_limit_is_not_mirrored_and_is_counted(upstreams, proxy):
    a, m = upstreams(2)
    cfg = with_admin(config(a.port, m.port))
    cfg["static_resources"]["clusters"][0]["per_connection_buffer_limit_bytes"] = 1024
    p = proxy(cfg, workers=1)
    status, _ = send(p.port, "POST", "/sink", body=b"x" * 100_000)
    assert status == 200
    time.sleep(0.5)
    assert m.requests == []
    _, text = call(admin_port(p), "/stats")
    assert stat(text, "cluster.primary.retry_or_shadow_abandoned") == 1


def test_runtime_fraction_mirrors_its_share(upstreams, proxy):
    a, m = upstreams(2)
    cfg = config(a.port, m.port, request_mirror_policies=[
        {"cluster": "mirror", "runtime_fraction": {"default_value": {"numerator": 50}}}])
    p = proxy(cfg, workers=1)
    c = http.client.HTTPConnection("127.0.0.1", p.port, timeout=10)
    for _ in range(200):
        c.request("GET", "/")
        c.getresponse().read()
    c.close()
    time.sleep(0.5)
    # binomial(200, 0.5): mean 100, sd 7.1; +-5 sd
    assert 64 <= len(m.requests) <= 136


def test_mirror_cluster_counts_the_shadow_responses(upstreams, proxy):
    a, m = upstreams(2)
    m.fail_status = 503
    p = proxy(with_admin(config(a.port, m.port)), workers=1)
    for _ in range(3):
        send(p.port)
    assert wait_for(lambda: len(m.requests) == 3, 5)
    ap = admin_port(p)
    assert wait_for(lambda: "cluster.mirror.upstream_rq_503: 3" in call(ap, "/stats")[1], 5)


def test_route_mirror_example_mirrors_by_cluster_and_by_header(upstreams, proxy):
    s1, s1m, s2, s2m = upstreams(4)
    doc = yaml.safe_load((SHARED / "envoy-examples/route-mirror/envoy.yaml").read_text())
    doc["admin"] = {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}}}
    p = proxy(_to_loopback(doc, {"service1": s1.port, "service1-mirror": s1m.port,
                                 "service2": s2.port, "service2-mirror": s2m.port}), workers=2)
    assert send(p.port, path="/service/1")[0] == 200
    assert send(p.port, path="/service/2")[0] == 200            # no x-mirror-cluster: no shadow
    assert send(p.port, path="/service/2", headers={"x-mirror-cluster": "service2-mirror"})[0] == 200
    assert wait_for(lambda: len(s1m.requests) == 1 and len(s2m.requests) == 1, 5)
    time.sleep(0.3)
    assert len(s2m.requests) == 1 and len(s1.requests) == 1 and len(s2.requests) == 2
