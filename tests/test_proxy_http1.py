"""HTTP/1.1 proxying through the real master and workers, against real upstreams (issue: core data plane, item 5)."""
from __future__ import annotations

import http.client
import json
import socket
import time

import pytest

from tests.harness import raw_request, simple_config


def get(port, path="/", headers=None, method="GET", body=None, version11=True):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    c.request(method, path, body=body, headers=headers or {})
    r = c.getresponse()
    data = r.read()
    c.close()
    return r, data


def echo(port, path="/echo", headers=None, method="GET", body=None):
    r, data = get(port, path, headers, method, body)
    assert r.status == 200, data
    return json.loads(data)


def split_responses(data: bytes) -> list[tuple[bytes, bytes]]:
    """Content-Length framed responses one after another -> [(head, body)]."""
    out = []
    while data:
        head, _, rest = data.partition(b"\r\n\r\n")
        n = 0
        for line in head.split(b"\r\n")[1:]:
            k, _, v = line.partition(b":")
            if k.strip().lower() == b"content-length":
                n = int(v)
        out.append((head, rest[:n]))
        data = rest[n:]
    return out


def hdr(req, name):
    vals = [v for k, v in req["headers"] if k.lower() == name]
    return vals[0] if len(vals) == 1 else (vals or None)


@pytest.fixture
def one(upstreams, proxy):
    (up,) = upstreams(1)
    p = proxy(simple_config([up.port]), workers=1)
    return up, p


def test_get_is_forwarded_and_answered(one):
    up, p = one
    r, data = get(p.port, "/hello")
    assert r.status == 200
    assert data == b"ok from up0"
    assert up.requests[-1]["path"] == "/hello"


def test_round_robin_alternates_between_two_hosts(upstreams, proxy):
    a, b = upstreams(2)
    p = proxy(simple_config([a.port, b.port]), workers=1)
    bodies = [get(p.port, "/")[1] for _ in range(6)]
    assert bodies.count(b"ok from up0") == 3 and bodies.count(b"ok from up1") == 3
    assert bodies[0] != bodies[1]


def test_keep_alive_reuses_downstream_and_upstream_connections(one):
    up, p = one
    c = http.client.HTTPConnection("127.0.0.1", p.port, timeout=5)
    for _ in range(5):
        c.request("GET", "/x")
        r = c.getresponse()
        assert r.read() == b"ok from up0"
        assert r.getheader("connection") is None
    c.close()
    assert up.connections == 1


def test_pipelined_requests_are_answered_in_order(one):
    up, p = one
    reqs = b"".join(b"GET /echo/%d HTTP/1.1\r\nHost: x\r\n\r\n" % i for i in range(5))
    reqs += b"GET /echo/last HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    out = raw_request(p.port, reqs)
    paths = [json.loads(body)["path"] for _, body in split_responses(out)]
    assert paths == [f"/echo/{i}" for i in range(5)] + ["/echo/last"]


def test_http10_client_gets_close_unless_keep_alive(one):
    up, p = one
    out = raw_request(p.port, b"GET / HTTP/1.0\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 200")
    assert b"connection: close" in out.lower()
    with socket.create_connection(("127.0.0.1", p.port), timeout=5) as s:
        s.sendall(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        data = s.recv(65536)
        assert b"ok from up0" in data and b"connection: close" not in data.lower()
        s.sendall(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        assert b"ok from up0" in s.recv(65536)


def test_connection_close_from_client_closes_after_response(one):
    up, p = one
    out = raw_request(p.port, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert out.endswith(b"ok from up0")


def test_hop_by_hop_headers_are_not_forwarded(one):
    up, p = one
    req = echo(p.port, headers={"Connection": "keep-alive, X-Private", "X-Private": "1", "Keep-Alive": "timeout=5",
                                "Proxy-Connection": "x", "TE": "trailers", "Upgrade": "websocket", "X-Kept": "yes"})
    names = {k.lower() for k, _ in req["headers"]}
    assert not names & {"x-private", "keep-alive", "proxy-connection", "te", "upgrade"}
    assert hdr(req, "x-kept") == "yes"


def test_client_x_envoy_headers_are_stripped(one):
    up, p = one
    req = echo(p.port, headers={"x-envoy-retry-on": "5xx", "x-envoy-upstream-rq-timeout-ms": "1"})
    names = {k.lower() for k, _ in req["headers"]}
    assert "x-envoy-retry-on" not in names and "x-envoy-upstream-rq-timeout-ms" not in names


def test_request_id_is_generated_when_absent_and_kept_when_present(one):
    up, p = one
    rid = hdr(echo(p.port), "x-request-id")
    assert len(rid) == 36 and rid[14] == "4"
    assert hdr(echo(p.port, headers={"x-request-id": "abc"}), "x-request-id") == "abc"


def test_no_request_id_when_generate_request_id_is_false(upstreams, proxy):
    (up,) = upstreams(1)
    p = proxy(simple_config([up.port], hcm_fields={"generate_request_id": False}), workers=1)
    assert hdr(echo(p.port), "x-request-id") is None


def test_forwarded_proto_and_expected_timeout_are_set(one):
    up, p = one
    req = echo(p.port)
    assert hdr(req, "x-forwarded-proto") == "http"
    assert hdr(req, "x-envoy-expected-rq-timeout-ms") == "15000"


def test_xff_passes_through_unchanged_without_use_remote_address(one):
    # Envoy: only with use_remote_address does the connection manager append the peer (headers doc).
    up, p = one
    assert hdr(echo(p.port), "x-forwarded-for") is None
    assert hdr(echo(p.port, headers={"X-Forwarded-For": "1.2.3.4"}), "x-forwarded-for") == "1.2.3.4"


def test_xff_gets_the_peer_appended_with_use_remote_address(upstreams, proxy):
    (up,) = upstreams(1)
    p = proxy(simple_config([up.port], hcm_fields={"use_remote_address": True}), workers=1)
    assert hdr(echo(p.port), "x-forwarded-for") == "127.0.0.1"
    assert hdr(echo(p.port, headers={"X-Forwarded-For": "1.2.3.4"}), "x-forwarded-for") == "1.2.3.4,127.0.0.1"


def test_response_carries_server_and_upstream_service_time(one):
    up, p = one
    r, _ = get(p.port)
    assert r.getheader("server") == "cyvoy"
    assert int(r.getheader("x-envoy-upstream-service-time")) >= 0


# Envoy (configuration/http/http_conn_man/headers.rst): x-envoy-upstream-service-time is the time
# in ms the upstream took, network included. cyvoy reads the clock once per event-loop callback:
# these two check that the reading is this request's, on the way in and on the way back.
def test_upstream_service_time_counts_a_slow_upstream(one):
    up, p = one
    r, data = get(p.port, "/delay/0.3")
    assert data == b"delayed 0.3"
    assert 300 <= int(r.getheader("x-envoy-upstream-service-time")) < 3000


def test_upstream_service_time_after_an_idle_second_is_this_requests_own(one):
    up, p = one
    get(p.port)
    time.sleep(1.2)     # no event reaches the connection code meanwhile
    r, _ = get(p.port)
    assert int(r.getheader("x-envoy-upstream-service-time")) < 1000


def test_server_name_overrides_server_header(upstreams, proxy):
    (up,) = upstreams(1)
    p = proxy(simple_config([up.port], hcm_fields={"server_name": "edge"}), workers=1)
    assert get(p.port)[0].getheader("server") == "edge"


def test_head_response_has_no_body(one):
    up, p = one
    out = raw_request(p.port, b"HEAD /bytes/1000 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    head, _, body = out.partition(b"\r\n\r\n")
    assert b"content-length: 1000" in head.lower()
    assert body == b""


@pytest.mark.parametrize("status", [204, 304])
def test_no_body_statuses_are_forwarded_without_body(one, status):
    up, p = one
    with socket.create_connection(("127.0.0.1", p.port), timeout=5) as s:
        s.sendall(b"GET /status/%d HTTP/1.1\r\nHost: x\r\n\r\nGET /x HTTP/1.1\r\nHost: x\r\n\r\n" % status)
        data = b""
        while data.count(b"HTTP/1.1") < 2 or not data.endswith(b"ok from up0"):
            chunk = s.recv(65536)
            assert chunk
            data += chunk
    assert data.startswith(b"HTTP/1.1 %d" % status)


def test_expect_100_continue_is_answered_by_the_proxy(one):
    up, p = one
    with socket.create_connection(("127.0.0.1", p.port), timeout=5) as s:
        s.sendall(b"POST /sink HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
        assert s.recv(1024).startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
        s.sendall(b"hello")
        data = s.recv(65536)
    assert b'"body_len": 5' in data
    names = {k.lower() for k, _ in up.requests[-1]["headers"]}
    assert "expect" not in names


def test_chunked_request_body_is_reencoded(one):
    up, p = one
    body = b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\n\r\n"
    out = raw_request(p.port, b"POST /sink HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n" + body)
    assert b'"body_len": 11' in out
    assert hdr(up.requests[-1], "transfer-encoding") == "chunked"


def test_chunked_response_is_reencoded_for_http11_clients(one):
    up, p = one
    r, data = get(p.port, "/chunked/200000")
    assert r.status == 200 and len(data) == 200000
    assert r.getheader("transfer-encoding") == "chunked"


def test_close_delimited_response_becomes_chunked_for_http11(one):
    up, p = one
    r, data = get(p.port, "/eof/100000")
    assert len(data) == 100000
    assert r.getheader("transfer-encoding") == "chunked"


def test_close_delimited_response_to_http10_client_ends_with_close(one):
    up, p = one
    out = raw_request(p.port, b"GET /eof/5000 HTTP/1.0\r\n\r\n")
    assert out.split(b"\r\n\r\n", 1)[1] == b"x" * 5000


def test_post_body_with_content_length_is_streamed(one):
    up, p = one
    r, data = get(p.port, "/sink", method="POST", body=b"a" * 300000)
    assert json.loads(data)["body_len"] == 300000


# ---- local replies (Envoy's wording) ---------------------------------------------------------

def test_no_route_is_404(upstreams, proxy):
    (up,) = upstreams(1)
    cfg = simple_config([up.port])
    cfg["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]["route_config"][
        "virtual_hosts"][0]["domains"] = ["only.example.com"]
    p = proxy(cfg, workers=1)
    r, body = get(p.port, headers={"Host": "other.example.com"})
    assert r.status == 404


def test_connect_refused_is_503_with_envoy_reason(upstreams, proxy):
    from tests.harness import free_port
    p = proxy(simple_config([free_port()]), workers=1)
    r, body = get(p.port)
    assert r.status == 503
    assert body.startswith(b"upstream connect error or disconnect/reset before headers. reset reason: "
                           b"remote connection failure")


def test_upstream_reset_before_headers_is_503(one):
    up, p = one
    r, body = get(p.port, "/close")
    assert r.status == 503
    assert b"reset reason: connection termination" in body


def test_route_timeout_is_504_upstream_request_timeout(upstreams, proxy):
    (up,) = upstreams(1)
    p = proxy(simple_config([up.port], route={"cluster": "backend", "timeout": "0.5s"}), workers=1)
    t0 = time.monotonic()
    r, body = get(p.port, "/delay/3")
    assert r.status == 504 and body == b"upstream request timeout"
    assert time.monotonic() - t0 < 2.5


def test_invalid_upstream_response_is_502(upstreams, proxy):
    # a raw upstream that answers garbage
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    import threading

    def serve():
        c, _ = srv.accept()
        c.recv(65536)
        c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\nhello")
        c.close()
    threading.Thread(target=serve, daemon=True).start()
    p = proxy(simple_config([srv.getsockname()[1]]), workers=1)
    r, body = get(p.port)
    assert r.status == 502
    srv.close()


def test_malformed_request_gets_400_and_close(one):
    up, p = one
    out = raw_request(p.port, b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 400")
    assert b"connection: close" in out.lower()
    assert up.requests == []


def test_direct_response_and_redirect_routes(upstreams, proxy):
    (up,) = upstreams(1)
    cfg = simple_config([up.port])
    vh = cfg["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]["route_config"][
        "virtual_hosts"][0]
    vh["routes"] = [
        {"match": {"path": "/direct"}, "direct_response": {"status": 418, "body": {"inline_string": "teapot"}}},
        {"match": {"prefix": "/old/"}, "redirect": {"prefix_rewrite": "/new/", "host_redirect": "example.com"}},
        {"match": {"prefix": "/"}, "route": {"cluster": "backend"}},
    ]
    p = proxy(cfg, workers=1)
    r, body = get(p.port, "/direct")
    assert (r.status, body) == (418, b"teapot")
    r, _ = get(p.port, "/old/page?q=1")
    assert r.status == 301
    assert r.getheader("location") == "http://example.com/new/page?q=1"


def test_route_header_edits_apply(upstreams, proxy):
    (up,) = upstreams(1)
    route = {"cluster": "backend", "prefix_rewrite": "/echo/", "host_rewrite_literal": "internal.svc"}
    cfg = simple_config([up.port], route=route)
    vh = cfg["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]["route_config"][
        "virtual_hosts"][0]
    vh["routes"][0]["match"] = {"prefix": "/api/"}
    vh["request_headers_to_add"] = [{"header": {"key": "x-added", "value": "v"}}]
    vh["request_headers_to_remove"] = ["x-secret"]
    vh["response_headers_to_add"] = [{"header": {"key": "x-resp", "value": "r"}}]
    p = proxy(cfg, workers=1)
    r, data = get(p.port, "/api/thing", headers={"x-secret": "s"})
    req = json.loads(data)
    assert req["path"] == "/echo/thing"
    assert hdr(req, "host") == "internal.svc"
    assert hdr(req, "x-added") == "v"
    assert hdr(req, "x-secret") is None
    assert r.getheader("x-resp") == "r"


def test_trailers_of_a_chunked_response_reach_an_http11_client(one):
    up, p = one
    out = raw_request(p.port, b"GET /trailers HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    head, _, body = out.partition(b"\r\n\r\n")
    assert b"transfer-encoding: chunked" in head.lower()
    assert body.endswith(b"0\r\nx-checksum: abc123\r\n\r\n")
    assert b"hello" in body


def test_trailers_are_dropped_for_an_http10_client(one):
    up, p = one
    out = raw_request(p.port, b"GET /trailers HTTP/1.0\r\n\r\n")
    assert out.split(b"\r\n\r\n", 1)[1] == b"hello"
