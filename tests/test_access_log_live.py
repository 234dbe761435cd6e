"""Access logs written by the live proxy (issue 5, items 3 and 6): Envoy's default format,
field by field, for normal, timed-out, no-route and upstream-failure requests."""
from __future__ import annotations

import http.client
import json
import os
import re
import signal
import time

from tests.harness import free_port, simple_config

# Envoy's default format, parsed back
DEFAULT = re.compile(
    r'^\[(?P<start>[^\]]+)\] "(?P<method>\S+) (?P<path>\S+) (?P<protocol>\S+)" (?P<code>\d+) (?P<flags>\S+) '
    r'(?P<rx>\d+) (?P<tx>\d+) (?P<duration>\d+) (?P<svc>\S+) "(?P<xff>[^"]*)" "(?P<ua>[^"]*)" '
    r'"(?P<rid>[^"]*)" "(?P<authority>[^"]*)" "(?P<upstream>[^"]*)"$')


def logged_config(ports, path, **kw):
    cfg = simple_config(ports, **kw)
    hcm = cfg["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    hcm["access_log"] = [{"name": "envoy.access_loggers.file", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog", "path": str(path)}}]
    return cfg, hcm


def request(port, method="GET", path="/", body=None, headers=None):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    c.request(method, path, body=body, headers={"User-Agent": "test-agent", **(headers or {})})
    r = c.getresponse()
    r.read()
    c.close()
    return r.status


def lines(path, n, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            got = path.read_text().splitlines()
            if len(got) >= n:
                return got
        time.sleep(0.1)
    raise AssertionError(f"fewer than {n} access log lines in {path}: {path.read_text() if path.exists() else '-'}")


def test_normal_request_is_logged_in_envoys_default_format(tmp_path, upstreams, proxy):
    (up,) = upstreams(1)
    log = tmp_path / "access.log"
    cfg, _ = logged_config([up.port], log)
    p = proxy(cfg, workers=1)
    assert request(p.port, "POST", "/sink?x=1", body=b"hello") == 200
    m = DEFAULT.match(lines(log, 1)[0])
    assert m, lines(log, 1)[0]
    assert (m["method"], m["path"], m["protocol"], m["code"], m["flags"]) == ("POST", "/sink?x=1", "HTTP/1.1", "200", "-")
    assert m["rx"] == "5" and int(m["tx"]) > 0
    assert m["ua"] == "test-agent"
    assert re.fullmatch(r"[0-9a-f-]{36}", m["rid"])
    assert m["rid"] == dict(up.requests[-1]["headers"])["x-request-id"]
    assert m["authority"].startswith("127.0.0.1:")
    assert m["upstream"] == f"127.0.0.1:{up.port}"
    assert m["svc"].isdigit()
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", m["start"])


def test_no_route_is_logged_with_nr(tmp_path, upstreams, proxy):
    (up,) = upstreams(1)
    log = tmp_path / "access.log"
    cfg, hcm = logged_config([up.port], log)
    hcm["route_config"]["virtual_hosts"][0]["domains"] = ["only.example"]
    p = proxy(cfg, workers=1)
    assert request(p.port) == 404
    m = DEFAULT.match(lines(log, 1)[0])
    assert (m["code"], m["flags"], m["upstream"]) == ("404", "NR", "-")


def test_upstream_connect_failure_is_logged_with_uf(tmp_path, proxy):
    log = tmp_path / "access.log"
    cfg, _ = logged_config([free_port()], log)
    p = proxy(cfg, workers=1)
    assert request(p.port) == 503
    m = DEFAULT.match(lines(log, 1)[0])
    assert (m["code"], m["flags"]) == ("503", "UF")


def test_route_timeout_is_logged_with_ut(tmp_path, upstreams, proxy):
    (up,) = upstreams(1)
    log = tmp_path / "access.log"
    cfg, _ = logged_config([up.port], log, route={"cluster": "backend", "timeout": "0.3s"})
    p = proxy(cfg, workers=1)
    assert request(p.port, path="/delay/2") == 504
    m = DEFAULT.match(lines(log, 1)[0])
    assert (m["code"], m["flags"]) == ("504", "UT")
    assert int(m["duration"]) >= 300


def test_no_healthy_upstream_is_logged_with_uh(tmp_path, upstreams, proxy):
    (up,) = upstreams(1)
    log = tmp_path / "access.log"
    cfg, _ = logged_config([up.port], log, cluster_fields={
        "type": "STRICT_DNS", "dns_lookup_family": "V4_ONLY"})
    ep = cfg["static_resources"]["clusters"][0]["load_assignment"]["endpoints"][0]["lb_endpoints"][0]
    ep["endpoint"]["address"]["socket_address"]["address"] = "cyvoy-test.invalid"
    p = proxy(cfg, workers=1)
    assert request(p.port) == 503
    m = DEFAULT.match(lines(log, 1)[0])
    assert (m["code"], m["flags"]) == ("503", "UH")


def test_json_format_and_header_values_cannot_inject_lines(tmp_path, upstreams, proxy):
    (up,) = upstreams(1)
    log = tmp_path / "access.log"
    cfg, hcm = logged_config([up.port], log)
    hcm["access_log"][0]["typed_config"]["log_format"] = {"json_format": {
        "code": "%RESPONSE_CODE%", "agent": "%REQ(USER-AGENT)%", "host": "%UPSTREAM_HOST%"}}
    p = proxy(cfg, workers=1)
    assert request(p.port) == 200
    entry = json.loads(lines(log, 1)[0])
    assert entry == {"code": 200, "agent": "test-agent", "host": f"127.0.0.1:{up.port}"}


def test_sigusr1_reopens_the_log_after_logrotate_moved_it(tmp_path, upstreams, proxy):
    (up,) = upstreams(1)
    log = tmp_path / "access.log"
    cfg, _ = logged_config([up.port], log)
    p = proxy(cfg, workers=2)
    request(p.port)
    lines(log, 1)
    os.rename(log, tmp_path / "access.log.1")
    p.signal(signal.SIGUSR1)
    time.sleep(0.5)
    request(p.port)
    assert len(lines(log, 1)) == 1
    assert len((tmp_path / "access.log.1").read_text().splitlines()) == 1


def test_default_format_lines_equal_the_general_formatters(tmp_path, upstreams, proxy):
    """Envoy's default format is formatted in C (proxy/_fastpath/accesslog.pyx); the same format
    written out as a text_format goes through the general formatter. Both logs of the same
    requests must be the same bytes."""
    from proxy.access_log.format import DEFAULT_FORMAT
    from tests.harness import raw_request
    (up,) = upstreams(1)
    fast, general = tmp_path / "fast.log", tmp_path / "general.log"
    cfg, hcm = logged_config([up.port], fast)
    hcm["access_log"].append({"name": "envoy.access_loggers.file", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
        "path": str(general), "log_format": {"text_format_source": {"inline_string": DEFAULT_FORMAT}}}})
    hcm["route_config"]["virtual_hosts"][0]["routes"][0]["match"] = {"prefix": "/a"}
    p = proxy(cfg, workers=1)
    sent = [
        b"POST /a/sink?x=1 HTTP/1.1\r\nHost: h1\r\nUser-Agent: ua\tone\r\nContent-Length: 5\r\n"
        b"Connection: close\r\n\r\nhello",
        b"GET /a HTTP/1.1\r\nHost: h2\r\nX-Forwarded-For: 1.2.3.4, 5.6.7.8\r\nX-Request-Id: given-id\r\n"
        b"x-envoy-original-path: /orig\r\nConnection: close\r\n\r\n",
        b"HEAD /a/bytes/100 HTTP/1.1\r\nHost: h3\r\nConnection: close\r\n\r\n",
        b"GET /a HTTP/1.0\r\n\r\n",
        # proxied (an x-request-id generated), then no route on the same connection: the second
        # line must not show the first request's generated id
        b"GET /a HTTP/1.1\r\nHost: h4\r\n\r\nGET /nowhere HTTP/1.1\r\nHost: h4\r\nConnection: close\r\n\r\n",
        b"GARBAGE\r\n\r\n",
    ]
    for data in sent:
        raw_request(p.port, data)
    n = 7
    got_fast, got_general = lines(fast, n), lines(general, n)
    assert got_fast == got_general
    assert len(got_fast) == n
    nowhere = DEFAULT.match(got_fast[5])
    assert (nowhere["path"], nowhere["code"], nowhere["flags"], nowhere["rid"]) == ("/nowhere", "404", "NR", "-")
    assert DEFAULT.match(got_fast[1])["path"] == "/orig"
    assert DEFAULT.match(got_fast[1])["xff"] == "1.2.3.4, 5.6.7.8"
    assert DEFAULT.match(got_fast[0])["ua"] == "ua\\x09one"     # control bytes escaped
