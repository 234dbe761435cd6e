"""The admin interface and stats of the live proxy (issue 5, items 1, 2 and 6): real workers write
their own stats slots; the admin process sums them and speaks Envoy's formats."""
from __future__ import annotations

import http.client
import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest
import yaml

from tests.harness import ROOT, simple_config


def with_admin(cfg, address="127.0.0.1"):
    cfg["admin"] = {"address": {"socket_address": {"address": address, "port_value": 0}}}
    return cfg


def admin_port(p) -> int:
    p.wait_log("admin address:")
    return int(re.search(r"admin address: \S+:(\d+)", p.log()).group(1))


def call(port, path, method="GET"):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    c.request(method, path)
    r = c.getresponse()
    body = r.read().decode()
    c.close()
    return r.status, body


def proxied(port, n, path="/"):
    for _ in range(n):
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        c.request("GET", path)
        c.getresponse().read()
        c.close()


def stat(text: str, name: str) -> int:
    m = re.search(rf"^{re.escape(name)}: (\d+)$", text, re.M)
    assert m, f"{name} not in /stats"
    return int(m.group(1))


@pytest.fixture
def live(upstreams, proxy):
    a, b = upstreams(2)
    p = proxy(with_admin(simple_config([a.port, b.port])), workers=2)
    return p, admin_port(p)


def test_ready_is_live(live):
    p, ap = live
    assert call(ap, "/ready") == (200, "LIVE\n")


def test_stats_sum_requests_from_every_worker(live):
    p, ap = live
    proxied(p.port, 20)
    time.sleep(0.2)
    _, text = call(ap, "/stats")
    assert stat(text, "http.ingress_http.downstream_rq_total") == 20
    assert stat(text, "http.ingress_http.downstream_rq_2xx") == 20
    assert stat(text, "cluster.backend.upstream_rq_total") == 20
    assert stat(text, "cluster.backend.upstream_rq_200") == 20
    assert stat(text, "http.ingress_http.downstream_cx_total") == 20
    assert stat(text, "server.concurrency") == 2


def test_stats_filter_and_json(live):
    p, ap = live
    proxied(p.port, 3)
    _, text = call(ap, "/stats?filter=upstream_rq_total")
    assert all("upstream_rq_total" in line for line in text.splitlines() if line)
    status, body = call(ap, "/stats?format=json")
    names = {s["name"]: s.get("value") for s in json.loads(body)["stats"] if "name" in s}
    assert names["cluster.backend.upstream_rq_total"] == 3


def test_prometheus_output_parses_with_envoy_labels(live):
    from prometheus_client.parser import text_string_to_metric_families
    p, ap = live
    proxied(p.port, 5)
    _, text = call(ap, "/stats/prometheus")
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for fam in text_string_to_metric_families(text) for s in fam.samples}
    assert samples[("envoy_cluster_upstream_rq_total", (("envoy_cluster_name", "backend"),))] == 5


def test_clusters_lists_hosts_with_envoys_fields(live):
    p, ap = live
    proxied(p.port, 4)
    _, text = call(ap, "/clusters")
    rq = {}
    for line in text.splitlines():
        parts = line.split("::")
        if len(parts) == 4 and parts[2] == "rq_total":
            rq[parts[1]] = int(parts[3])
        if len(parts) == 4 and parts[2] == "health_flags":
            assert parts[3] == "healthy"
    assert sum(rq.values()) == 4 and len(rq) == 2


def test_healthcheck_fail_turns_ready_503_and_ok_restores_it(live):
    p, ap = live
    assert call(ap, "/healthcheck/fail", "POST")[0] == 200
    assert call(ap, "/ready")[0] == 503
    assert call(ap, "/healthcheck/ok", "POST")[0] == 200
    assert call(ap, "/ready") == (200, "LIVE\n")


def test_mutating_endpoints_refuse_get(live):
    p, ap = live
    assert call(ap, "/quitquitquit")[0] == 405
    assert call(ap, "/healthcheck/fail")[0] == 405


def test_server_info_reports_concurrency_and_a_refused_reload(live):
    p, ap = live
    info = json.loads(call(ap, "/server_info")[1])
    assert info["state"] == "LIVE"
    assert int(info["command_line_options"]["concurrency"]) == 2
    p.config_path.write_text("static_resources: {clusters: [{name: a, lb_polcy: x}]}\n")
    p.signal(signal.SIGHUP)
    p.wait_log("reload refused")
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        info = json.loads(call(ap, "/server_info")[1])
        if info.get("last_reload_error"):
            break
        time.sleep(0.1)
    assert "lb_polcy" in info["last_reload_error"]


def test_counters_of_a_killed_worker_are_kept(live):
    p, ap = live
    proxied(p.port, 10)
    before = stat(call(ap, "/stats")[1], "http.ingress_http.downstream_rq_total")
    os.kill(p.workers()[0].pid, signal.SIGKILL)
    time.sleep(1.0)
    after = stat(call(ap, "/stats")[1], "http.ingress_http.downstream_rq_total")
    assert after == before == 10


def test_quitquitquit_stops_the_proxy(live):
    p, ap = live
    assert call(ap, "/quitquitquit", "POST")[0] == 200
    assert p.proc.wait(15) == 0


def test_admin_on_a_public_address_is_refused_without_the_flag(tmp_path, upstreams):
    (up,) = upstreams(1)
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(with_admin(simple_config([up.port]), "0.0.0.0")))
    r = subprocess.run([sys.executable, "-m", "proxy", "-c", str(cfg), "--workers", "1"],
                       capture_output=True, text=True, cwd=str(ROOT), timeout=30)
    assert r.returncode == 1
    assert "loopback-only unless --admin-allow-remote" in r.stderr
