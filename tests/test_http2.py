"""HTTP/2 through the proxy (RFC 9113): h2c with prior knowledge and h2 over TLS from clients,
HTTP/2 to upstreams, and the conversion between the two protocols in both directions."""
from __future__ import annotations

import hashlib
import json
import shutil
import signal
import subprocess
import time

import pytest

from tests.h2peers import H2Client, H2Upstream
from tests.harness import raw_request, simple_config
from tests.test_tls import DOWNSTREAM_TLS, pki  # noqa: F401  (the certificates fixture)

needs_curl = pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
HPO = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"


def h2_cluster(**h2_options) -> dict:
    return {"typed_extension_protocol_options": {HPO: {
        "@type": "type.googleapis.com/" + HPO,
        "explicit_http_config": {"http2_protocol_options": h2_options}}}}


def tls_listener(cfg: dict, pki, alpn: list) -> dict:
    cfg["static_resources"]["listeners"][0]["filter_chains"][0]["transport_socket"] = {
        "name": "envoy.transport_sockets.tls", "typed_config": {
            "@type": DOWNSTREAM_TLS, "common_tls_context": {
                "alpn_protocols": alpn,
                "tls_certificates": [{"certificate_chain": {"filename": str(pki["server"][0])},
                                      "private_key": {"filename": str(pki["server"][1])}}]}}}
    return cfg


@pytest.fixture
def h2_upstream():
    up = H2Upstream()
    yield up
    up.close()


def echo(resp) -> dict:
    return json.loads(bytes(resp.body))


# ---- HTTP/2 clients ----------------------------------------------------------------------------

@needs_curl
def test_curl_with_prior_knowledge_is_served_over_h2c(upstreams, proxy):
    up, = upstreams(1)
    p = proxy(simple_config([up.port]), workers=1)
    r = subprocess.run(["curl", "-sS", "--http2-prior-knowledge", "-o", "/dev/null", "-w",
                        "%{http_version} %{http_code}", f"http://127.0.0.1:{p.port}/"],
                       capture_output=True, text=True, timeout=10)
    assert r.stdout == "2 200", r.stderr


def test_the_upstream_gets_an_http11_request_with_host_from_authority(upstreams, proxy):
    up, = upstreams(1)
    p = proxy(simple_config([up.port]), workers=1)
    c = H2Client(p.port)
    r = c.get("/echo", authority="example.com", headers=[("x-a", "1")])
    req = echo(r)
    assert r.status == 200 and req["version"] == "1.1"
    headers = {k.lower(): v for k, v in req["headers"]}
    assert headers["host"] == "example.com" and headers["x-a"] == "1"
    assert "connection" not in headers    # the internal "connection: close" is not forwarded


def test_cookie_fields_are_joined_into_one_for_http11(upstreams, proxy):
    # RFC 9113 8.2.3: split cookie fields are concatenated with "; " for HTTP/1.1
    up, = upstreams(1)
    p = proxy(simple_config([up.port]), workers=1)
    r = H2Client(p.port).get("/echo", headers=[("cookie", "a=1"), ("cookie", "b=2")])
    assert [v for k, v in echo(r)["headers"] if k.lower() == "cookie"] == ["a=1; b=2"]


def test_response_has_no_connection_specific_fields(upstreams, proxy):
    up, = upstreams(1)
    p = proxy(simple_config([up.port]), workers=1)
    r = H2Client(p.port).get("/echo")
    names = [k for k, _ in r.headers]
    assert all(k == k.lower() for k in names)
    assert not {b"connection", b"keep-alive", b"transfer-encoding"} & set(names)


def test_a_body_without_content_length_is_sent_chunked_upstream(upstreams, proxy):
    up, = upstreams(1)
    p = proxy(simple_config([up.port]), workers=1)
    c = H2Client(p.port)
    body = b"x" * 100_000
    sid = c.request("POST", "/sink", body=body)
    r, = c.wait(sid)
    assert r.status == 200 and echo(r) == {"body_len": len(body), "sha256": hashlib.sha256(body).hexdigest()}


def test_head_gets_headers_only(upstreams, proxy):
    up, = upstreams(1)
    p = proxy(simple_config([up.port]), workers=1)
    c = H2Client(p.port)
    r, = c.wait(c.request("HEAD", "/bytes/1000"))
    assert r.status == 200 and r.header(b"content-length") == b"1000" and r.body == b""


def test_http11_upstream_trailers_reach_the_h2_client(upstreams, proxy):
    up, = upstreams(1)
    p = proxy(simple_config([up.port]), workers=1)
    r = H2Client(p.port).get("/trailers")
    assert bytes(r.body) == b"hello" and (b"x-checksum", b"abc123") in r.trailers


def test_streams_are_multiplexed_and_a_slow_one_does_not_hold_the_others(upstreams, proxy):
    up, = upstreams(1)
    p = proxy(simple_config([up.port]), workers=1)
    c = H2Client(p.port)
    slow = c.request("GET", "/delay/1.5")
    fast = [c.request("GET", f"/status/{200 + i}") for i in range(20)]
    t0 = time.monotonic()
    done = c.wait(*fast, timeout=5)
    assert [r.status for r in done] == [200 + i for i in range(20)]
    assert time.monotonic() - t0 < 1.2 and not c.responses[slow].ended
    assert c.wait(slow)[0].status == 200


def test_a_reset_stream_leaves_the_others_running(upstreams, proxy):
    up, = upstreams(1)
    p = proxy(simple_config([up.port]), workers=1)
    c = H2Client(p.port)
    doomed = c.request("GET", "/delay/0.5")
    other = c.request("GET", "/delay/0.3")
    c.reset(doomed)
    r, = c.wait(other)
    assert r.status == 200 and bytes(r.body) == b"delayed 0.3"
    assert c.get("/").status == 200     # the connection is still good


def test_a_malformed_request_resets_only_its_stream(upstreams, proxy):
    # RFC 9113 8.1.1: malformed requests are stream errors
    up, = upstreams(1)
    p = proxy(simple_config([up.port]), workers=1)
    c = H2Client(p.port)
    c.conn.config.validate_outbound_headers = False
    bad = c.request("GET", "/echo", headers=[("x-a", "v\r\nx-injected: 1")])
    good = c.request("GET", "/echo")
    rb, rg = c.wait(bad, good)
    assert rb.reset is not None and rg.status == 200
    assert all("x-injected" not in json.dumps(r) for r in up.requests)


def test_large_download_with_a_small_client_window(upstreams, proxy):
    up, = upstreams(1)
    p = proxy(simple_config([up.port]), workers=1)
    c = H2Client(p.port, window=65535)
    r = c.get("/bytes/4000000")
    assert r.status == 200 and len(r.body) == 4_000_000


def test_upload_larger_than_the_proxys_stream_window(upstreams, proxy):
    up, = upstreams(1)
    p = proxy(simple_config([up.port], hcm_fields={"http2_protocol_options": {
        "initial_stream_window_size": 65535, "initial_connection_window_size": 65535}}), workers=1)
    c = H2Client(p.port)
    body = bytes(range(256)) * 4096     # 1 MiB, 16 windows' worth
    sid = c.request("POST", "/sink", body=body, headers=[("content-length", str(len(body)))])
    r, = c.wait(sid)
    assert echo(r) == {"body_len": len(body), "sha256": hashlib.sha256(body).hexdigest()}


def test_codec_type_http1_answers_the_preface_with_400(upstreams, proxy):
    up, = upstreams(1)
    p = proxy(simple_config([up.port], hcm_fields={"codec_type": "HTTP1"}), workers=1)
    out = raw_request(p.port, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", timeout=3)
    assert out.startswith(b"HTTP/1.1 400")


def test_codec_type_http2_serves_http2_only(upstreams, proxy):
    up, = upstreams(1)
    p = proxy(simple_config([up.port], hcm_fields={"codec_type": "HTTP2"}), workers=1)
    assert H2Client(p.port).get("/").status == 200
    out = raw_request(p.port, b"GET / HTTP/1.1\r\nhost: a\r\n\r\n", timeout=3)
    assert not out.startswith(b"HTTP/1.1 200")     # an HTTP/1.1 client gets a GOAWAY


def test_max_concurrent_streams_is_announced_in_settings(upstreams, proxy):
    up, = upstreams(1)
    p = proxy(simple_config([up.port], hcm_fields={"http2_protocol_options": {"max_concurrent_streams": 7}}),
              workers=1)
    c = H2Client(p.port)
    c.get("/")
    assert c.conn.remote_settings.max_concurrent_streams == 7


@needs_curl
def test_drain_sends_goaway_and_finishes_streams_in_flight(upstreams, proxy):
    up, = upstreams(1)
    p = proxy(simple_config([up.port]), workers=1, drain_time_s=5)
    idle = H2Client(p.port)
    idle.get("/")
    # curl's stream is in flight when the drain starts (the h2 package cannot read a stream's
    # frames after a GOAWAY, so the in-flight client is curl)
    busy = subprocess.Popen(["curl", "-sS", "--http2-prior-knowledge", f"http://127.0.0.1:{p.port}/delay/0.7"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    time.sleep(0.3)
    p.signal(signal.SIGTERM)
    out, err = busy.communicate(timeout=10)
    assert out == b"delayed 0.7", err
    deadline = time.monotonic() + 5
    while idle.goaway is None and not idle.closed and time.monotonic() < deadline:
        idle.pump(0.05)
    assert idle.goaway is not None and idle.goaway.error_code == 0


def test_access_log_says_http2(upstreams, proxy, tmp_path):
    up, = upstreams(1)
    log = tmp_path / "access.log"
    p = proxy(simple_config([up.port], hcm_fields={"access_log": [{
        "name": "envoy.access_loggers.file", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
            "path": str(log)}}]}), workers=1)
    H2Client(p.port).get("/")
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and "HTTP/2" not in (log.read_text() if log.exists() else ""):
        time.sleep(0.1)
    assert '"GET / HTTP/2" 200' in log.read_text()


# ---- TLS and ALPN ------------------------------------------------------------------------------

def test_alpn_h2_over_tls(upstreams, proxy, pki):
    up, = upstreams(1)
    p = proxy(tls_listener(simple_config([up.port]), pki, ["h2", "http/1.1"]), workers=1)
    r = H2Client(p.port, tls=True).get("/echo")
    assert r.status == 200 and dict(map(tuple, echo(r)["headers"]))["x-forwarded-proto"] == "https"


@needs_curl
def test_curl_negotiates_h2_by_alpn_and_http11_without_it(upstreams, proxy, pki):
    up, = upstreams(1)
    for alpn, want in ((["h2", "http/1.1"], "2"), (["http/1.1"], "1.1")):
        p = proxy(tls_listener(simple_config([up.port]), pki, alpn), workers=1)
        r = subprocess.run(["curl", "-sS", "--http2", "--cacert", str(pki["ca"][0]), "-k", "-o", "/dev/null",
                            "-w", "%{http_version} %{http_code}", f"https://127.0.0.1:{p.port}/"],
                           capture_output=True, text=True, timeout=10)
        assert r.stdout == f"{want} 200", (alpn, r.stderr)
        p.stop()


# ---- HTTP/2 upstreams --------------------------------------------------------------------------

def test_http11_client_to_h2_upstream_follows_rfc9113_header_rules(h2_upstream, proxy):
    p = proxy(simple_config([h2_upstream.port], cluster_fields=h2_cluster()), workers=1)
    out = raw_request(p.port, b"GET /echo HTTP/1.1\r\nHost: svc.example\r\nConnection: keep-alive\r\n"
                               b"Keep-Alive: timeout=5\r\nX-Mixed-Case: v\r\ncookie: a=1\r\n\r\n",
                      read_until_close=False)
    assert out.startswith(b"HTTP/1.1 200")
    req = h2_upstream.requests[-1]
    names = [k for k, _ in req["headers"]]
    hs = dict(req["headers"])
    assert hs[":authority"] == "svc.example" and hs[":method"] == "GET" and hs[":path"] == "/echo"
    assert "host" not in names and "connection" not in names and "keep-alive" not in names
    assert all(k == k.lower() for k in names) and hs["x-mixed-case"] == "v"


def test_h2_upstream_trailers_reach_an_http11_client_in_the_last_chunk(h2_upstream, proxy):
    p = proxy(simple_config([h2_upstream.port], cluster_fields=h2_cluster()), workers=1)
    out = raw_request(p.port, b"GET /trailers HTTP/1.1\r\nHost: a\r\nTE: trailers\r\nConnection: close\r\n\r\n")
    assert b"transfer-encoding: chunked" in out.lower()
    assert out.endswith(b"0\r\nx-checksum: abc123\r\n\r\n")


def test_h2_client_to_h2_upstream(h2_upstream, proxy):
    p = proxy(simple_config([h2_upstream.port], cluster_fields=h2_cluster()), workers=1)
    c = H2Client(p.port)
    sids = [c.request("POST", "/echo", body=b"x" * 1000) for _ in range(10)]
    rs = c.wait(*sids)
    assert all(r.status == 200 and echo(r)["body_len"] == 1000 for r in rs)
    r = c.get("/trailers")
    assert (b"x-checksum", b"abc123") in r.trailers


def test_requests_share_one_upstream_connection(h2_upstream, proxy):
    p = proxy(simple_config([h2_upstream.port], cluster_fields=h2_cluster()), workers=1)
    c = H2Client(p.port)
    rs = c.wait(*[c.request("GET", "/") for _ in range(30)])
    assert all(r.status == 200 for r in rs)
    assert h2_upstream.connections == 1


def test_streams_beyond_max_concurrent_streams_open_another_connection(h2_upstream, proxy):
    p = proxy(simple_config([h2_upstream.port], cluster_fields=h2_cluster(max_concurrent_streams=1)), workers=1)
    c = H2Client(p.port)
    rs = c.wait(*[c.request("GET", "/") for _ in range(4)])
    assert all(r.status == 200 for r in rs)
    assert h2_upstream.connections >= 2


def test_use_downstream_protocol_config_sends_http2_only_for_http2_clients(h2_upstream, upstreams, proxy):
    cfg = simple_config([h2_upstream.port], cluster_fields={"typed_extension_protocol_options": {HPO: {
        "@type": "type.googleapis.com/" + HPO,
        "use_downstream_protocol_config": {"http2_protocol_options": {}}}}})
    p = proxy(cfg, workers=1)
    assert H2Client(p.port).get("/").status == 200
    assert h2_upstream.connections == 1
    # an HTTP/1.1 client's request goes as HTTP/1.1, which this HTTP/2-only server cannot read
    out = raw_request(p.port, b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
    assert not out.startswith(b"HTTP/1.1 200")


@pytest.mark.skipif(shutil.which("h2load") is None, reason="h2load (nghttp2-client) is not installed")
def test_h2load_through_the_proxy_completes_every_request(upstreams, proxy):
    up, = upstreams(1)
    p = proxy(simple_config([up.port]), workers=2)
    r = subprocess.run(["h2load", "-n", "2000", "-c", "8", "-m", "10", f"http://127.0.0.1:{p.port}/"],
                       capture_output=True, text=True, timeout=60)
    assert "2000 succeeded, 0 failed, 0 errored" in r.stdout, r.stdout + r.stderr
    assert "status codes: 2000 2xx" in r.stdout


def test_a_stalled_upstream_holds_back_only_its_own_streams_request_body(upstreams, proxy):
    """Per-stream flow control tied to the upstream's backpressure: a request body to an upstream
    that does not read is acknowledged to the client only as far as the upstream connection takes
    it, while another stream on the same connection is served."""
    import socket
    import threading
    fast, = upstreams(1)
    stalled = socket.socket()
    stalled.bind(("127.0.0.1", 0))
    stalled.listen(8)
    held = []

    def accept():
        c, _ = stalled.accept()
        c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        held.append(c)      # never read
    threading.Thread(target=accept, daemon=True).start()
    cfg = simple_config([fast.port], route={"cluster": "backend"}, hcm_fields={"http2_protocol_options": {
        "initial_stream_window_size": 65535}})
    from tests.harness import cluster
    cfg["static_resources"]["clusters"].append(cluster("stalled", [stalled.getsockname()[1]]))
    routes = cfg["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"][
        "route_config"]["virtual_hosts"][0]["routes"]
    routes.insert(0, {"match": {"prefix": "/stall"}, "route": {"cluster": "stalled", "timeout": "0s"}})
    p = proxy(cfg, workers=1)
    c = H2Client(p.port)
    sid = c.request("POST", "/stall", end=False, headers=[("content-length", str(64 << 20))])
    sent = 0
    chunk = b"s" * 16384
    deadline = time.monotonic() + 4
    while time.monotonic() < deadline:
        window = min(c.conn.local_flow_control_window(sid), c.conn.max_outbound_frame_size)
        if window >= 16384:
            c.conn.send_data(sid, chunk)
            c._send()
            sent += len(chunk)
        else:
            c.pump(0.05)
    # the windows stopped opening: what went is bounded by socket buffers, not the 64 MiB body
    assert 65535 <= sent < 24 << 20, sent
    other = c.request("GET", "/")
    r, = c.wait(other, timeout=5)
    assert r.status == 200 and bytes(r.body) == b"ok from up0"
    stalled.close()
