"""Security defaults at the edge (issue 7, item 5), through the live proxy: no open proxy for
absolute-form targets, CONNECT refused, client x-envoy-* headers never reach an upstream, and no
client bytes reach a log line unescaped. (The admin listener's loopback-only default is tested in
tests/test_admin_live.py and tests/test_admin_server.py.)"""
from __future__ import annotations

from tests.harness import cluster, hcm, listener, raw_request


def config(upstream_port, access_log=None):
    vh = [{"name": "shop", "domains": ["shop.example"], "routes": [
        {"match": {"prefix": "/"}, "route": {"cluster": "backend"}}]}]
    fields = {}
    if access_log is not None:
        fields["access_log"] = [{"name": "envoy.access_loggers.file", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
            "path": str(access_log),
            "log_format": {"text_format": "%REQ(USER-AGENT)% %REQ(:AUTHORITY)%\n"}}}]
    return {"static_resources": {"listeners": [listener("main", 0, hcm(vh, **fields))],
                                 "clusters": [cluster("backend", [upstream_port])]}}


def status_of(response: bytes) -> int:
    return int(response.split(b" ", 2)[1])


def test_absolute_form_to_a_host_no_virtual_host_serves_gets_404(upstreams, proxy):
    (a,) = upstreams(1)
    p = proxy(config(a.port), workers=1)
    r = raw_request(p.port, b"GET http://evil.example/steal HTTP/1.1\r\nHost: evil.example\r\n\r\n")
    assert status_of(r) == 404
    assert a.requests == []


def test_absolute_form_authority_wins_over_a_matching_host_header(upstreams, proxy):
    # RFC 9112 3.2.2: the target's authority replaces Host, so Host cannot smuggle a route
    (a,) = upstreams(1)
    p = proxy(config(a.port), workers=1)
    r = raw_request(p.port, b"GET http://evil.example/steal HTTP/1.1\r\nHost: shop.example\r\n\r\n")
    assert status_of(r) == 404
    assert a.requests == []


def test_absolute_form_to_a_served_host_is_forwarded_in_origin_form(upstreams, proxy):
    (a,) = upstreams(1)
    p = proxy(config(a.port), workers=1)
    r = raw_request(p.port, b"GET http://shop.example/cart?x=1 HTTP/1.1\r\nHost: shop.example\r\n"
                            b"Connection: close\r\n\r\n")
    assert status_of(r) == 200
    assert a.requests[0]["path"] == "/cart?x=1"


def test_connect_is_refused_without_reaching_an_upstream(upstreams, proxy):
    (a,) = upstreams(1)
    p = proxy(config(a.port), workers=1)
    r = raw_request(p.port, b"CONNECT shop.example:443 HTTP/1.1\r\nHost: shop.example:443\r\n\r\n")
    assert status_of(r) == 404
    assert a.requests == []


def test_client_x_envoy_headers_never_reach_the_upstream(upstreams, proxy):
    (a,) = upstreams(1)
    p = proxy(config(a.port), workers=1)
    r = raw_request(p.port, b"GET / HTTP/1.1\r\nHost: shop.example\r\nX-Envoy-Internal: true\r\n"
                            b"x-envoy-upstream-rq-timeout-ms: 1\r\nx-envoy-retry-on: 5xx\r\n"
                            b"X-Envoy-Original-Path: /admin\r\nConnection: close\r\n\r\n")
    assert status_of(r) == 200
    names = {k.lower() for k, _ in a.requests[0]["headers"]}
    # only what cyvoy itself adds upstream (x-envoy-expected-rq-timeout-ms) may start with x-envoy-
    assert {n for n in names if n.startswith("x-envoy-")} == {"x-envoy-expected-rq-timeout-ms"}


def test_control_bytes_in_header_values_are_refused_before_any_log_sees_them(upstreams, proxy):
    # RFC 9110 5.5: field values carry no CTL but HTAB; ESC, DEL, CR and LF get 400
    (a,) = upstreams(1)
    p = proxy(config(a.port), workers=1)
    for bad in (b"x\x1b[31mred", b"x\x7f", b"x\rinjected", b"x\x00"):
        r = raw_request(p.port, b"GET / HTTP/1.1\r\nHost: shop.example\r\nUser-Agent: " + bad + b"\r\n\r\n")
        assert status_of(r) == 400, bad
    assert a.requests == []


def test_control_bytes_a_client_may_send_are_escaped_in_the_access_log(upstreams, proxy, tmp_path):
    (a,) = upstreams(1)
    log = tmp_path / "access.log"
    p = proxy(config(a.port, access_log=log), workers=1)
    # HTAB is the one control byte a field value may hold: it must not split the log line's fields
    raw_request(p.port, b"GET / HTTP/1.1\r\nHost: shop.example\r\nUser-Agent: x\tfake 200\r\n"
                        b"Connection: close\r\n\r\n")
    p.stop()
    assert log.read_bytes().splitlines() == [b"x\\x09fake 200 shop.example"]
