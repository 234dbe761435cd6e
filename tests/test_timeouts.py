"""Timeouts (issue: core data plane, item 7), each against the live proxy."""
from __future__ import annotations

import http.client
import socket
import time

from tests.harness import raw_request, simple_config


def test_request_headers_timeout_is_408_and_close_and_does_not_restart_per_byte(upstreams, proxy):
    (up,) = upstreams(1)
    p = proxy(simple_config([up.port], hcm_fields={"request_headers_timeout": "1s"}), workers=1)
    s = socket.create_connection(("127.0.0.1", p.port), timeout=5)
    t0 = time.monotonic()
    data = b""
    # one header byte every 0.2 s: a timer that restarted per byte would never fire
    for b in b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa":
        try:
            s.sendall(bytes([b]))
        except OSError:
            break
        s.settimeout(0.2)
        try:
            data = s.recv(4096)
            if data:
                break
        except socket.timeout:
            pass
    elapsed = time.monotonic() - t0
    s.close()
    assert data.startswith(b"HTTP/1.1 408")
    assert b"connection: close" in data.lower()
    assert 0.9 < elapsed < 3.0
    assert up.requests == []


def test_default_request_headers_timeout_is_10s_per_model():
    from proxy.config.model import HttpConnectionManager
    assert HttpConnectionManager.__dataclass_fields__["request_headers_timeout"].default == 10.0


def test_connect_timeout_gives_503_connection_timeout(proxy):
    # 10.255.255.1 would leave the machine; instead fill a listener's backlog on loopback so the
    # SYN is not answered. A socket that never listens... is refused; use a full backlog instead.
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(0)
    port = srv.getsockname()[1]
    fillers = []
    for _ in range(8):   # fill the accept queue so further SYNs are dropped
        c = socket.socket()
        c.setblocking(False)
        try:
            c.connect(("127.0.0.1", port))
        except BlockingIOError:
            pass
        fillers.append(c)
    time.sleep(0.2)
    p = proxy(simple_config([port], cluster_fields={"connect_timeout": "0.5s"}), workers=1)
    t0 = time.monotonic()
    c = http.client.HTTPConnection("127.0.0.1", p.port, timeout=10)
    c.request("GET", "/")
    r = c.getresponse()
    body = r.read()
    assert r.status == 503
    assert body.endswith(b"reset reason: connection timeout")
    assert time.monotonic() - t0 < 3
    for f in fillers:
        f.close()
    srv.close()


def test_downstream_idle_timeout_closes_an_idle_keep_alive_connection(upstreams, proxy):
    (up,) = upstreams(1)
    p = proxy(simple_config([up.port], hcm_fields={"common_http_protocol_options": {"idle_timeout": "1s"}}),
              workers=1)
    s = socket.create_connection(("127.0.0.1", p.port), timeout=5)
    s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    data = b""
    while not data.endswith(b"ok from up0"):
        data += s.recv(4096)
    t0 = time.monotonic()
    s.settimeout(5)
    assert s.recv(4096) == b""   # closed by the proxy
    assert 0.8 < time.monotonic() - t0 < 3.5
    s.close()


def test_stream_idle_timeout_applies_when_route_timeout_is_disabled(upstreams, proxy):
    (up,) = upstreams(1)
    p = proxy(simple_config([up.port], route={"cluster": "backend", "timeout": "0s"},
                            hcm_fields={"stream_idle_timeout": "1s"}), workers=1)
    out = raw_request(p.port, b"GET /hang HTTP/1.1\r\nHost: x\r\n\r\n", timeout=5)
    assert out.startswith(b"HTTP/1.1 408")


def test_request_timeout_covers_a_slow_request_body(upstreams, proxy):
    (up,) = upstreams(1)
    p = proxy(simple_config([up.port], hcm_fields={"request_timeout": "1s"}), workers=1)
    s = socket.create_connection(("127.0.0.1", p.port), timeout=5)
    s.sendall(b"POST /sink HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nabc")
    s.settimeout(4)
    data = s.recv(4096)
    assert data.startswith(b"HTTP/1.1 408")
    s.close()


def test_idle_upstream_connections_are_closed_after_the_idle_timeout(upstreams, proxy):
    (up,) = upstreams(1)
    p = proxy(simple_config([up.port], hcm_fields={"common_http_protocol_options": {"idle_timeout": "1s"}}),
              workers=1)
    assert raw_request(p.port, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").endswith(b"ok from up0")
    assert up.open_connections == 1
    deadline = time.monotonic() + 4
    while up.open_connections and time.monotonic() < deadline:
        time.sleep(0.05)
    assert up.open_connections == 0
