"""The admin interface (proxy/admin): a real admin process (forked, as the master does) over a real
host table from proxy.cluster_manager.build_table and a real stats store, spoken to over HTTP.

Formats checked against Envoy's admin documentation (docs/root/operations/admin.rst) and its
clusters handler's text/JSON shapes; /stats/prometheus is parsed with prometheus_client.
"""
from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from proxy import cluster_manager
from proxy._fastpath import hosttable as ht
from proxy.admin import control as control_mod
from proxy.admin import server as admin_server
from proxy.config.loader import build_bootstrap

HCM_TYPE = ("type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3."
            "HttpConnectionManager")
ROUTER_TYPE = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
TLS_TYPE = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext"
KEY_TEXT = "-----BEGIN PRIVATE KEY-----\nSECRETSECRET\n-----END PRIVATE KEY-----\n"

try:
    from proxy.stats import StatRegistry
except ImportError:     # the stats store not there yet: the admin runs without one
    StatRegistry = None


def _listener(name, port_value=0, tls=None):
    chain = {"filters": [{
        "name": "envoy.filters.network.http_connection_manager",
        "typed_config": {
            "@type": HCM_TYPE, "stat_prefix": name,
            "route_config": {"virtual_hosts": [{"name": "all", "domains": ["*"], "routes": [
                {"match": {"prefix": "/"}, "route": {"cluster": "backend"}}]}]},
            "http_filters": [{"name": "envoy.filters.http.router",
                              "typed_config": {"@type": ROUTER_TYPE}}],
        }}]}
    if tls:
        chain["transport_socket"] = {"name": "envoy.transport_sockets.tls", "typed_config": {
            "@type": TLS_TYPE, "common_tls_context": {"tls_certificates": [tls]}}}
    return {"name": name,
            "address": {"socket_address": {"address": "127.0.0.1", "port_value": port_value}},
            "filter_chains": [chain]}


def make_config(tmp_path, admin_address="127.0.0.1") -> dict:
    cert = _self_signed(tmp_path)
    tls = {"certificate_chain": {"filename": str(cert)} if cert else {"inline_string": "x"},
           "private_key": {"inline_string": KEY_TEXT}}
    ep = lambda a, p, **kw: {"endpoint": {"address": {"socket_address": {  # noqa: E731
        "address": a, "port_value": p}}, **kw.pop("extra", {})}, **kw}
    return {
        "node": {"id": "node-1", "cluster": "edge"},
        "admin": {"address": {"socket_address": {"address": admin_address, "port_value": 0}}},
        "static_resources": {
            "listeners": [_listener("ingress", 18080), _listener("secure", 18443, tls=tls)],
            "clusters": [
                {"name": "backend", "connect_timeout": "1s", "type": "STATIC",
                 "health_checks": [{"timeout": "1s", "interval": "5s", "unhealthy_threshold": 2,
                                    "healthy_threshold": 1,
                                    "http_health_check": {"path": "/health"}}],
                 "outlier_detection": {"consecutive_5xx": 5},
                 "circuit_breakers": {"thresholds": [{"max_connections": 100},
                                                     {"priority": "HIGH", "max_requests": 7}]},
                 "load_assignment": {"cluster_name": "backend", "endpoints": [
                     {"locality": {"region": "eu", "zone": "eu-1a", "sub_zone": "rack9"},
                      "lb_endpoints": [ep("127.0.0.1", 9001, extra={"hostname": "one.local"}),
                                       ep("127.0.0.2", 9002, load_balancing_weight=5)]},
                     {"priority": 1, "lb_endpoints": [ep("::1", 9003)]}]}},
                {"name": "other", "connect_timeout": "1s", "type": "STATIC",
                 "load_assignment": {"cluster_name": "other", "endpoints": [
                     {"lb_endpoints": [ep("127.0.0.3", 9004)]}]}},
            ],
        },
    }


def _self_signed(tmp_path):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    try:
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "30",
                        "-subj", "/CN=cyvoy.test", "-addext", "subjectAltName=DNS:cyvoy.test",
                        "-keyout", str(key), "-out", str(cert)],
                       check=True, capture_output=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return None
    return cert


class AdminProc:
    """An admin process forked from the test, as the master forks it."""

    def __init__(self, doc, *, workers=(), master_pid=None, allow_remote=False):
        self.bootstrap = build_bootstrap(doc)   # no support gate: circuit breakers shown
        self.table, self.layout = cluster_manager.build_table(self.bootstrap)
        self.registry = self.store = self.slot = self.view = None
        if StatRegistry is not None:
            self.registry = StatRegistry.for_bootstrap(self.bootstrap)
            self.store = self.registry.make_store(8)
            self.view = self.store.view(self.store.alloc_slot())     # a worker's slot
            self.slot = self.store.alloc_slot()                      # the admin's
        self.control = control_mod.Control(
            {"concurrency": 2, "drain_time_s": 30, "log_level": "info"}, config_path="/etc/cyvoy.yaml",
            master_pid=master_pid)
        self.control.set_workers(workers)
        self.control.set_state("LIVE")
        self.sock = admin_server.bind(self.bootstrap, allow_remote)
        self.port = self.sock.getsockname()[1]
        self.pid = os.fork()
        if self.pid == 0:   # pragma: no cover - the child
            code = 1
            try:
                code = admin_server.run(self.bootstrap, self.table, self.layout, self.store,
                                        self.registry, self.control, sock=self.sock,
                                        stats_slot=self.slot, allow_remote=allow_remote)
            finally:
                os._exit(code)
        self.sock.close()
        deadline = time.monotonic() + 5
        while True:
            try:
                self.get("/ready")
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)

    def request(self, method, path, body=None, headers=None):
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
        try:
            c.request(method, path, body=body, headers=headers or {})
            r = c.getresponse()
            return r.status, dict((k.lower(), v) for k, v in r.getheaders()), r.read()
        finally:
            c.close()

    def get(self, path):
        return self.request("GET", path)

    def post(self, path):
        return self.request("POST", path)

    def stop(self):
        try:
            os.kill(self.pid, signal.SIGTERM)
        except ProcessLookupError:
            return None
        _, status = os.waitpid(self.pid, 0)
        return status


@pytest.fixture(scope="module")
def fake_workers():
    procs = [subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
             for _ in range(2)]
    yield procs
    for p in procs:
        p.kill()
        p.wait()


@pytest.fixture(scope="module")
def admin(tmp_path_factory, fake_workers):
    a = AdminProc(make_config(tmp_path_factory.mktemp("admin")),
                  workers=[p.pid for p in fake_workers])
    yield a
    status = a.stop()
    assert status is not None and os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0


# ---- index, 404, methods ----------------------------------------------------------------------------

ENDPOINTS = ["/", "/certs", "/clusters", "/config_dump", "/drain_listeners", "/healthcheck/fail",
             "/healthcheck/ok", "/help", "/hot_restart_version", "/listeners", "/logging",
             "/quitquitquit", "/ready", "/reset_counters", "/runtime", "/runtime_modify",
             "/server_info", "/stats", "/stats/prometheus"]
MUTATING = ["/drain_listeners", "/healthcheck/fail", "/healthcheck/ok", "/logging",
            "/quitquitquit", "/reset_counters", "/runtime_modify"]


def test_help_lists_every_endpoint_with_one_line_and_marks_post(admin):
    for path in ("/help", "/"):
        status, headers, body = admin.get(path)
        assert status == 200 and headers["content-type"].startswith("text/plain")
        text = body.decode()
        assert text.startswith("admin commands are:\n")
        listed = {line.split(":")[0].strip().replace(" (POST)", "")
                  for line in text.splitlines()[1:] if line.startswith("  /")}
        assert listed == set(ENDPOINTS)
        for p in MUTATING:
            assert f"  {p} (POST): " in text


def test_unknown_path_is_404_with_the_help(admin):
    status, _, body = admin.get("/no/such/thing")
    assert status == 404
    assert body.decode().startswith("invalid path. admin commands are:\n")


@pytest.mark.parametrize("path", MUTATING)
def test_get_on_a_mutating_endpoint_is_405_and_does_nothing(admin, path):
    before = admin.control.healthcheck_failed(), admin.control.log_level()
    status, headers, body = admin.get(path + ("?level=debug" if path == "/logging" else ""))
    assert status == 405
    assert headers["allow"] == "POST"
    assert b"This endpoint requires POST" in body and b"Method GET not allowed" in body
    assert (admin.control.healthcheck_failed(), admin.control.log_level()) == before


def test_envoy_admin_headers(admin):
    _, headers, _ = admin.get("/ready")
    assert headers["cache-control"] == "no-cache, max-age=0"
    assert headers["x-content-type-options"] == "nosniff"


# ---- state ---------------------------------------------------------------------------------------

def test_ready_follows_the_state_and_healthcheck_fail(admin):
    assert admin.get("/ready")[0::2] == (200, b"LIVE\n")
    assert admin.post("/healthcheck/fail")[0] == 200
    assert admin.control.healthcheck_failed()
    assert admin.get("/ready")[0::2] == (503, b"DRAINING\n")
    assert json.loads(admin.get("/server_info")[2])["state"] == "DRAINING"
    assert admin.post("/healthcheck/ok")[0] == 200
    assert not admin.control.healthcheck_failed()
    assert admin.get("/ready")[0::2] == (200, b"LIVE\n")
    admin.control.set_state("PRE_INITIALIZING")
    try:
        assert admin.get("/ready")[0::2] == (503, b"PRE_INITIALIZING\n")
    finally:
        admin.control.set_state("LIVE")


def test_server_info(admin, fake_workers):
    admin.control.set_reload_error("static_resources.clusters[0]: nope")
    try:
        status, headers, body = admin.get("/server_info")
    finally:
        admin.control.set_reload_error(None)
    assert status == 200 and headers["content-type"] == "application/json"
    info = json.loads(body)
    assert info["state"] == "LIVE"
    assert info["hot_restart_version"] == "disabled"
    assert info["version"].startswith("cyvoy/")
    assert info["uptime_current_epoch"].endswith("s") and info["uptime_all_epochs"].endswith("s")
    opts = info["command_line_options"]
    assert opts["concurrency"] == 2 and opts["config_path"] == "/etc/cyvoy.yaml"
    assert opts["drain_time"] == "30s" and opts["log_level"] == "info"
    assert info["node"]["id"] == "node-1" and info["node"]["cluster"] == "edge"
    assert info["last_reload_error"] == "static_resources.clusters[0]: nope"
    workers = info["cyvoy"]["workers"]
    assert [w["pid"] for w in workers] == [p.pid for p in fake_workers]
    for w in workers:
        assert w["memory_rss"] > 0 and w["open_fds"] >= 3 and w["cpu_seconds"] >= 0
    assert json.loads(admin.get("/server_info")[2])["last_reload_error"] is None


def test_logging_lists_and_sets_the_shared_level(admin):
    status, _, body = admin.post("/logging")
    assert status == 200 and b"cyvoy: info" in body
    status, _, body = admin.post("/logging?level=debug")
    assert status == 200 and b"cyvoy: debug" in body
    assert admin.control.log_level() == "debug"      # what the workers read on their tick
    assert admin.post("/logging?level=loud")[0] == 400
    assert admin.post("/logging?upstream=debug")[0] == 400
    assert admin.post("/logging?level=info")[0] == 200
    assert admin.control.log_level() == "info"


def test_runtime_modify_is_501_and_says_why(admin):
    status, _, body = admin.post("/runtime_modify?a=b")
    assert status == 501 and b"not supported" in body


def test_drain_listeners_skip_exit_is_refused(admin):
    status, _, body = admin.post("/drain_listeners?graceful&skip_exit")
    assert status == 501 and b"skip_exit" in body


# ---- clusters ------------------------------------------------------------------------------------

def _slot(admin, cluster, port):
    cl = admin.layout.clusters[cluster]
    for i in range(cl.first_slot, cl.first_slot + cl.n_slots):
        addr = admin.table.host_address(i)
        if addr and addr[1] == port:
            return i
    raise KeyError(port)


def _split(line):
    """A /clusters line into its `::` fields; an IPv6 host ([::1]:80) is one field."""
    parts, rest = [], line
    while "::" in rest:
        if rest.startswith("["):
            end = rest.index("]") + 1
            head, rest = rest[:end] + rest[end:].split("::", 1)[0], rest[end:].split("::", 1)[1]
        else:
            head, rest = rest.split("::", 1)
        parts.append(head)
    return parts + [rest]


def _parse_clusters(text):
    facts = {}
    for line in text.splitlines():
        parts = _split(line)
        facts[parts[0] if len(parts) == 2 else tuple(parts[:-1])] = parts[-1]
    return facts


def _set_health(admin):
    """9001 healthy (its first check passed), 9002 failed its checks and ejected, 9003 pending."""
    t = admin.table
    a, b, c = (_slot(admin, "backend", p) for p in (9001, 9002, 9003))
    t.set_flags(a, 0, ht.PENDING_ACTIVE_HC)
    t.set_flags(b, ht.FAILED_ACTIVE_HC | ht.FAILED_OUTLIER, ht.PENDING_ACTIVE_HC)
    assert t.flags(c) == ht.PENDING_ACTIVE_HC      # build_table: hosts of a checked cluster
    return a, b, c


def test_clusters_text(admin):
    t = admin.table
    a, _, _ = _set_health(admin)
    now = ht.monotonic_ns()
    for status in (200, 200, 503):
        t.record(a, status, False, 4_000_000, now, 1e9)
    t.inc_active(a)
    try:
        status, headers, body = admin.get("/clusters")
    finally:
        t.dec_active(a)
    assert status == 200 and headers["content-type"].startswith("text/plain")
    f = _parse_clusters(body.decode())
    assert f["version_info"] == "static"
    assert f[("backend", "default_priority", "max_connections")] == "100"
    assert f[("backend", "default_priority", "max_retries")] == "3"
    assert f[("backend", "high_priority", "max_requests")] == "7"
    assert f[("backend", "high_priority", "max_connections")] == "1024"
    assert f[("other", "default_priority", "max_pending_requests")] == "1024"
    assert f[("backend", "added_via_api")] == "false"
    assert f[("backend", "outlier", "success_rate_average")] == "-1"
    assert ("other", "outlier", "success_rate_average") not in f
    h = ("backend", "127.0.0.1:9001")
    assert f[h + ("rq_total",)] == "3" and f[h + ("rq_error",)] == "1"
    assert f[h + ("rq_success",)] == "2" and f[h + ("rq_active",)] == "1"
    assert f[h + ("health_flags",)] == "healthy"
    assert f[h + ("hostname",)] == "one.local"
    assert (f[h + ("region",)], f[h + ("zone",)], f[h + ("sub_zone",)]) == ("eu", "eu-1a", "rack9")
    assert f[h + ("weight",)] == "1" and f[h + ("priority",)] == "0"
    assert f[h + ("canary",)] == "false" and f[h + ("success_rate",)] == "-1"
    assert float(f[h + ("ewma_ms",)]) == pytest.approx(4.0, rel=0.01)
    assert f[("backend", "127.0.0.2:9002", "health_flags")] == "/failed_active_hc/failed_outlier_check"
    assert f[("backend", "127.0.0.2:9002", "weight")] == "5"
    assert f[("backend", "[::1]:9003", "health_flags")] == "/pending_active_hc"
    assert f[("backend", "[::1]:9003", "priority")] == "1"
    assert f[("other", "127.0.0.3:9004", "health_flags")] == "healthy"
    # per host: the stats sorted by name, then Envoy's fixed facts in Envoy's order
    keys = [_split(line)[2] for line in body.decode().splitlines()
            if line.startswith("backend::127.0.0.1:9001::")]
    assert keys == ["rq_active", "rq_error", "rq_success", "rq_total", "hostname", "health_flags",
                    "weight", "region", "zone", "sub_zone", "canary", "priority", "success_rate",
                    "local_origin_success_rate", "ewma_ms"]


def test_clusters_json(admin):
    _set_health(admin)
    status, headers, body = admin.get("/clusters?format=json")
    assert status == 200 and headers["content-type"] == "application/json"
    doc = json.loads(body)
    by_name = {c["name"]: c for c in doc["cluster_statuses"]}
    assert list(by_name) == ["backend", "other"]
    backend = by_name["backend"]
    assert backend["added_via_api"] is False
    th = {t["priority"]: t for t in backend["circuit_breakers"]["thresholds"]}
    assert th["DEFAULT"]["max_connections"] == 100 and th["HIGH"]["max_requests"] == 7
    hosts = {(h["address"]["socket_address"]["address"], h["address"]["socket_address"]["port_value"]): h
             for h in backend["host_statuses"]}
    assert set(hosts) == {("127.0.0.1", 9001), ("127.0.0.2", 9002), ("::1", 9003)}
    one = hosts[("127.0.0.1", 9001)]
    stats = {s["name"]: s for s in one["stats"]}
    assert set(stats) >= {"rq_total", "rq_error", "rq_success", "rq_active"}
    assert stats["rq_active"]["type"] == "GAUGE" and stats["rq_total"]["type"] == "COUNTER"
    assert int(stats["rq_total"]["value"]) == admin.table.counters(_slot(admin, "backend", 9001))["rq_total"]
    assert one["weight"] == 1 and one["priority"] == 0 and one["hostname"] == "one.local"
    assert one["locality"] == {"region": "eu", "zone": "eu-1a", "sub_zone": "rack9"}
    assert one["health_status"]["eds_health_status"] == "HEALTHY"
    assert "ewma_ms" in one["cyvoy"]
    two = hosts[("127.0.0.2", 9002)]["health_status"]
    assert two["failed_active_health_check"] is True and two["failed_outlier_check"] is True
    assert hosts[("::1", 9003)]["health_status"]["pending_active_hc"] is True
    assert hosts[("::1", 9003)]["priority"] == 1


# ---- config, listeners, certs ------------------------------------------------------------------------

def test_config_dump_is_the_source_with_secrets_redacted(admin):
    status, headers, body = admin.get("/config_dump")
    assert status == 200 and headers["content-type"] == "application/json"
    assert b"SECRETSECRET" not in body
    doc = json.loads(body)
    boot = doc["configs"][0]
    assert boot["@type"] == "type.googleapis.com/envoy.admin.v3.BootstrapConfigDump"
    b = boot["bootstrap"]
    assert b["node"]["id"] == "node-1"
    tls = (b["static_resources"]["listeners"][1]["filter_chains"][0]["transport_socket"]
           ["typed_config"]["common_tls_context"]["tls_certificates"][0])
    assert tls["private_key"] == {"inline_string": "[redacted]"}
    chain = tls["certificate_chain"]
    assert chain.get("inline_string", "[redacted]") == "[redacted]"     # filename stays visible
    types = [c["@type"] for c in doc["configs"]]
    assert "type.googleapis.com/envoy.admin.v3.ClustersConfigDump" in types
    clusters = next(c for c in doc["configs"] if c["@type"].endswith("ClustersConfigDump"))
    assert [c["cluster"]["name"] for c in clusters["static_clusters"]] == ["backend", "other"]


def test_listeners_text_and_json(admin):
    status, _, body = admin.get("/listeners")
    assert status == 200
    assert body.decode().splitlines() == ["ingress::127.0.0.1:18080", "secure::127.0.0.1:18443"]
    doc = json.loads(admin.get("/listeners?format=json")[2])
    assert [x["name"] for x in doc["listener_statuses"]] == ["ingress", "secure"]
    assert doc["listener_statuses"][0]["local_address"]["socket_address"] == {
        "address": "127.0.0.1", "port_value": 18080}


def test_certs(admin):
    status, headers, body = admin.get("/certs")
    assert status == 200 and headers["content-type"] == "application/json"
    certs = json.loads(body)["certificates"]
    assert len(certs) == 1
    detail = certs[0]["cert_chain"][0]
    if detail["path"] != "<inline>":     # openssl was there to make a real certificate
        assert detail["path"].endswith("cert.pem")
        assert detail["subject_alt_names"] == [{"dns": "cyvoy.test"}]
        assert 28 <= int(detail["days_until_expiration"]) <= 30
        assert detail["serial_number"]


# ---- stats ---------------------------------------------------------------------------------------

def _stats_text(admin, query=""):
    status, headers, body = admin.get("/stats" + query)
    assert status == 200 and headers["content-type"].startswith("text/plain")
    out = {}
    for line in body.decode().splitlines():
        name, _, value = line.partition(": ")
        out[name] = value
    return out


def test_stats_text_has_server_and_worker_gauges(admin, fake_workers):
    s = _stats_text(admin)
    assert s["server.live"] == "1" and s["server.state"] == "0"
    assert s["server.concurrency"] == "2"
    for i in range(len(fake_workers)):
        assert int(s[f"server.worker_{i}.memory_rss"]) > 0
        assert int(s[f"server.worker_{i}.open_fds"]) >= 3
        assert float(s[f"server.worker_{i}.cpu_seconds"]) >= 0
    assert list(s) == sorted(s) or StatRegistry is not None   # histograms follow the sorted lines


def test_stats_filter_and_bad_filter(admin):
    s = _stats_text(admin, "?filter=^server%5C.worker_1%5C.")
    assert set(s) == {"server.worker_1.memory_rss", "server.worker_1.cpu_seconds",
                      "server.worker_1.open_fds"}
    assert admin.get("/stats?filter=(")[0] == 400


def test_stats_json(admin):
    status, headers, body = admin.get("/stats?format=json&filter=server")
    assert status == 200 and headers["content-type"] == "application/json"
    stats = {s["name"]: s["value"] for s in json.loads(body)["stats"] if "name" in s}
    assert stats["server.live"] == 1 and "server.worker_0.memory_rss" in stats


@pytest.mark.skipif(StatRegistry is None, reason="no stats store yet")
def test_stats_from_the_store_usedonly_and_reset_counters(admin):
    idx = admin.registry.cluster_indexes("backend")
    admin.view.inc(idx.upstream_rq_total, 5)
    s = _stats_text(admin)
    assert s["cluster.backend.upstream_rq_total"] == "5"
    assert s["cluster.backend.membership_total"] == "3"
    assert "cluster.other.upstream_rq_total" in s
    used = _stats_text(admin, "?usedonly")
    assert "cluster.backend.upstream_rq_total" in used
    assert "cluster.other.upstream_rq_total" not in used
    assert admin.post("/reset_counters")[0::2] == (200, b"OK\n")
    assert _stats_text(admin)["cluster.backend.upstream_rq_total"] == "0"
    admin.view.inc(idx.upstream_rq_total, 2)
    assert _stats_text(admin)["cluster.backend.upstream_rq_total"] == "2"
    assert admin.store.counter_total(idx.upstream_rq_total) == 7     # nothing shared was reset


@pytest.mark.skipif(StatRegistry is None, reason="no stats store yet")
def test_admin_counts_its_own_requests(admin):
    before = int(_stats_text(admin)["http.admin.downstream_rq_total"])
    for _ in range(3):
        admin.get("/ready")
    s = _stats_text(admin)
    assert int(s["http.admin.downstream_rq_total"]) == before + 4     # + this /stats
    assert int(s["http.admin.downstream_rq_2xx"]) >= 3
    assert int(s["listener.admin.downstream_cx_total"]) >= 4


def test_stats_prometheus_parses(admin):
    from prometheus_client.parser import text_string_to_metric_families
    for path in ("/stats/prometheus", "/stats?format=prometheus"):
        status, headers, body = admin.get(path)
        assert status == 200 and "version=0.0.4" in headers["content-type"]
        families = {f.name: f for f in text_string_to_metric_families(body.decode())}
        assert families["envoy_server_live"].type == "gauge"
        assert families["envoy_server_live"].samples[0].value == 1
        assert families["envoy_server_worker_0_memory_rss"].samples[0].value > 0
        if StatRegistry is not None:
            # prometheus_client names a counter family without its _total suffix
            fam = families["envoy_cluster_upstream_rq"]
            assert fam.type == "counter"
            assert {s.name for s in fam.samples} == {"envoy_cluster_upstream_rq_total"}
            assert {s.labels["envoy_cluster_name"] for s in fam.samples} == {"backend", "other"}


# ---- HTTP details --------------------------------------------------------------------------------

def test_keep_alive_pipelining_and_head(admin):
    with socket.create_connection(("127.0.0.1", admin.port), timeout=5) as s:
        s.sendall(b"GET /ready HTTP/1.1\r\nHost: x\r\n\r\n"
                  b"HEAD /ready HTTP/1.1\r\nHost: x\r\n\r\n"
                  b"GET /hot_restart_version HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    assert data.count(b"HTTP/1.1 200 ") == 3
    assert data.count(b"LIVE\n") == 1      # HEAD has no body
    assert data.endswith(b"disabled\n")


def test_garbage_is_400_and_closed(admin):
    with socket.create_connection(("127.0.0.1", admin.port), timeout=5) as s:
        s.sendall(b"NOT HTTP AT ALL\r\n\r\n")
        data = s.recv(65536)
    assert data.startswith(b"HTTP/1.1 400")


def test_big_body_is_413(admin):
    assert admin.request("POST", "/healthcheck/ok", body=b"x" * (70 * 1024))[0] == 413


# ---- the process: stop, quit, refusal --------------------------------------------------------------

def _master_with_admin(doc):
    """Fork a stand-in master that makes the Control, forks the admin process (the real
    topology) and reports the SIGTERM it gets. Returns (master pid, admin port, signal pipe)."""
    b = build_bootstrap(doc)
    table, layout = cluster_manager.build_table(b)
    sock = admin_server.bind(b)
    port = sock.getsockname()[1]
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:   # pragma: no cover - the stand-in master
        os.close(r)
        got = []
        signal.signal(signal.SIGTERM, lambda *a: got.append(1))
        c = control_mod.Control()
        c.set_state("LIVE")
        child = os.fork()
        if child == 0:
            os.close(w)
            code = 1
            try:
                code = admin_server.run(b, table, layout, None, None, c, sock=sock)
            finally:
                os._exit(code)
        sock.close()
        deadline = time.monotonic() + 10
        while not got and time.monotonic() < deadline:
            time.sleep(0.02)
        os.write(w, b"T" if got else b"-")
        os.kill(child, signal.SIGTERM)
        os.waitpid(child, 0)
        os._exit(0)
    os.close(w)
    sock.close()
    return pid, port, r


@pytest.mark.parametrize("path", ["/quitquitquit", "/drain_listeners?graceful"])
def test_quit_and_drain_answer_ok_then_sigterm_the_master(tmp_path, path):
    pid, port, r = _master_with_admin(make_config(tmp_path))
    try:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        for _ in range(100):
            try:
                c.request("POST", path)
                break
            except OSError:
                time.sleep(0.02)
        resp = c.getresponse()
        assert (resp.status, resp.read()) == (200, b"OK\n")
        c.close()
        assert os.read(r, 1) == b"T"
    finally:
        os.close(r)
        os.waitpid(pid, 0)


def test_non_loopback_admin_is_refused_unless_allowed(tmp_path):
    doc = make_config(tmp_path, admin_address="0.0.0.0")
    doc["admin"]["address"]["socket_address"]["port_value"] = 8001
    b = build_bootstrap(doc)
    with pytest.raises(admin_server.AdminAddressError) as e:
        admin_server.bind(b)
    assert str(e.value).startswith("admin: refusing to listen on 0.0.0.0:8001")
    assert "loopback-only unless --admin-allow-remote" in str(e.value)
    with pytest.raises(admin_server.AdminAddressError):      # run() binds the same way
        admin_server.run(b, None, None, None, None, control_mod.Control())
    admin_server.check_address(b, allow_remote=True)
    for address, ok in (("127.0.0.2", True), ("::1", True), ("::ffff:127.0.0.1", True),
                        ("::", False), ("10.1.2.3", False)):
        doc["admin"]["address"]["socket_address"]["address"] = address
        b = build_bootstrap(doc)
        if ok:
            admin_server.check_address(b)
        else:
            with pytest.raises(admin_server.AdminAddressError, match=r"refusing to listen on "):
                admin_server.check_address(b)


def test_allow_remote_binds_a_non_loopback_address(tmp_path):
    doc = make_config(tmp_path, admin_address="0.0.0.0")
    a = AdminProc(doc, allow_remote=True)
    try:
        assert a.get("/ready")[0] == 200
    finally:
        a.stop()


def test_busy_port_is_a_clear_error(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        doc = make_config(tmp_path)
        doc["admin"]["address"]["socket_address"]["port_value"] = s.getsockname()[1]
        with pytest.raises(admin_server.AdminAddressError, match="admin: cannot listen on 127.0.0.1:"):
            admin_server.bind(build_bootstrap(doc))


def test_no_admin_address_means_no_admin():
    doc = make_config_no_admin()
    b = build_bootstrap(doc)
    assert admin_server.bind(b) is None
    assert admin_server.run(b, None, None, None, None, control_mod.Control()) == 0


def make_config_no_admin():
    return {"static_resources": {"listeners": [_listener("ingress", 18080)], "clusters": [
        {"name": "backend", "connect_timeout": "1s", "load_assignment": {
            "cluster_name": "backend", "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {
                "socket_address": {"address": "127.0.0.1", "port_value": 9001}}}}]}]}}]}}


def test_admin_exits_when_its_master_goes_away(tmp_path):
    """Fork a stand-in master that forks the admin and dies: the admin notices and exits."""
    doc = make_config(tmp_path)
    b = build_bootstrap(doc)
    table, layout = cluster_manager.build_table(b)
    sock = admin_server.bind(b)
    port = sock.getsockname()[1]
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:   # pragma: no cover - the stand-in master
        c = control_mod.Control()
        c.set_state("LIVE")
        child = os.fork()
        if child == 0:
            os.close(r)
            os.close(w)
            code = 1
            try:
                code = admin_server.run(b, table, layout, None, None, c, sock=sock)
            finally:
                os._exit(code)
        os.write(w, str(child).encode())
        os._exit(0)
    sock.close()
    os.close(w)
    admin_pid = int(os.read(r, 32))
    os.close(r)
    os.waitpid(pid, 0)
    deadline = time.monotonic() + 5
    gone = False
    while time.monotonic() < deadline:
        try:
            os.kill(admin_pid, 0)
        except ProcessLookupError:
            gone = True
            break
        time.sleep(0.05)
    assert gone, "the admin process outlived its master"
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()


def test_sigterm_lets_a_response_in_progress_finish(tmp_path):
    a = AdminProc(make_config(tmp_path))
    with socket.create_connection(("127.0.0.1", a.port), timeout=5) as s:
        s.sendall(b"GET /ready HTTP/1.1\r\nHost: x\r\n")     # head not finished yet
        time.sleep(0.1)
        os.kill(a.pid, signal.SIGTERM)
        time.sleep(0.1)
        s.sendall(b"\r\n")
        data = s.recv(65536)
    status = os.waitpid(a.pid, 0)[1]
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    assert data.startswith(b"HTTP/1.1 200") and data.endswith(b"LIVE\n")


# ---- without a stats store ---------------------------------------------------------------------------

def test_without_a_stats_store_stats_show_the_server_gauges(tmp_path):
    from prometheus_client.parser import text_string_to_metric_families
    from proxy.admin.http import Request, parse_target
    b = build_bootstrap(make_config(tmp_path))
    table, layout = cluster_manager.build_table(b)
    c = control_mod.Control({"concurrency": 4})
    c.set_state("LIVE")
    c.set_workers([os.getpid()])
    adm = admin_server.Admin(b, table, layout, None, None, c)

    def get(target):
        path, query, pairs = parse_target(target)
        return adm.handle(Request("GET", target, path, query, pairs, []))

    text = get("/stats").body.decode()
    assert "server.concurrency: 4\n" in text and "server.live: 1\n" in text
    assert "server.worker_0.memory_rss: " in text
    assert get("/stats?filter=uptime").body.decode().startswith("server.uptime: ")
    assert get("/stats?filter=(").status == 400
    doc = json.loads(get("/stats?format=json").body)
    assert {"name": "server.concurrency", "value": 4} in doc["stats"]
    fams = {f.name: f for f in text_string_to_metric_families(get("/stats/prometheus").body.decode())}
    assert fams["envoy_server_concurrency"].samples[0].value == 4
    assert get("/reset_counters").status == 405
    assert adm.handle(Request("POST", "/reset_counters", "/reset_counters", {}, [], [])).status == 200
