"""Zero-downtime reload (issue 5, item 4), against the live proxy."""
from __future__ import annotations

import http.client
import re
import shutil
import signal
import socket
import subprocess
import time

import pytest

from tests.harness import free_port, hcm, listener, simple_config, wait_for


def get(port, path="/"):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    c.request("GET", path, headers={"Connection": "close"})
    r = c.getresponse()
    return r.status, r.read()



@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk not installed (.ci/run installs it)")
def test_twenty_reloads_under_wrk_load_fail_no_request(upstreams, proxy):
    a, b = upstreams(2)
    p = proxy(simple_config([a.port, b.port]), workers=2, drain_time_s=3, log_level="info")
    wrk = subprocess.Popen(["wrk", "-t1", "-c16", "-d8s", f"http://127.0.0.1:{p.port}/"],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    time.sleep(1.0)
    for i in range(20):
        p.reload(timeout=20)
        time.sleep(0.1)
    out, _ = wrk.communicate(timeout=30)
    requests = int(re.search(r"(\d+) requests in", out).group(1))
    assert requests > 1000, out
    assert "Socket errors" not in out, out
    assert "Non-2xx or 3xx responses" not in out, out


def test_a_listener_added_by_reload_opens_and_one_removed_closes(upstreams, proxy):
    (up,) = upstreams(1)
    cfg = simple_config([up.port])
    p = proxy(cfg, workers=2)
    extra_port = free_port()
    vh = [{"name": "all", "domains": ["*"], "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "backend"}}]}]
    with_extra = simple_config([up.port], port=p.port)
    with_extra["static_resources"]["listeners"].append(listener("extra", extra_port, hcm(vh)))
    p.reload(with_extra)
    assert get(extra_port) == (200, b"ok from up0")
    p.reload(simple_config([up.port], port=p.port))
    def refused():
        try:
            socket.create_connection(("127.0.0.1", extra_port), timeout=1).close()
            return False
        except OSError:
            return True
    assert wait_for(refused, timeout=10)
    assert get(p.port) == (200, b"ok from up0")


def test_health_state_of_remaining_hosts_carries_over_a_reload(upstreams, proxy):
    a, b = upstreams(2)
    hc = [{"timeout": "0.5s", "interval": "0.3s", "unhealthy_threshold": 1, "healthy_threshold": 1,
           "http_health_check": {"path": "/health"}}]
    cfg = simple_config([a.port, b.port], cluster_fields={"health_checks": hc})
    p = proxy(cfg, workers=1)
    b.health_status = 503
    assert wait_for(lambda: {get(p.port)[1] for _ in range(4)} == {b"ok from up0"})
    # a reload must not bring the failed host back, not even for the first requests
    p.reload(simple_config([a.port, b.port], port=p.port, cluster_fields={"health_checks": hc}))
    assert {get(p.port)[1] for _ in range(8)} == {b"ok from up0"}
