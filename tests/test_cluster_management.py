"""Cluster management through the live proxy (issue 3): shared rotation, active health checks,
outlier ejection, priorities and DNS, with real workers, a real health-check process and real
upstreams."""
from __future__ import annotations

import collections
import http.client
import os
import shutil
import subprocess
import time

import pytest

from tests.harness import simple_config, wait_for
from tests.upstreams import Upstream


def get(port, path="/", headers=None):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    c.request("GET", path, headers=headers or {"Connection": "close"})
    r = c.getresponse()
    body = r.read()
    c.close()
    return r.status, body



def served_by(port, n, path="/"):
    return collections.Counter(get(port, path)[1] for _ in range(n))


def health_check(interval="0.2s", unhealthy=2, healthy=2, **extra):
    hc = {"timeout": "0.5s", "interval": interval, "unhealthy_threshold": unhealthy,
          "healthy_threshold": healthy, "http_health_check": {"path": "/health"}}
    hc.update(extra)
    return [hc]


def test_round_robin_is_one_rotation_across_workers(upstreams, proxy):
    a, b, c = upstreams(3)
    p = proxy(simple_config([a.port, b.port, c.port]), workers=2)
    # each request on a new connection lands on either worker; the shared cursor still rotates
    seq = [get(p.port)[1] for _ in range(30)]
    assert all(seq[i] != seq[i + 1] for i in range(len(seq) - 1))
    assert collections.Counter(seq) == {b"ok from up0": 10, b"ok from up1": 10, b"ok from up2": 10}


def test_weighted_round_robin_gives_exact_proportions_across_workers(upstreams, proxy):
    a, b = upstreams(2)
    cfg = simple_config([a.port, b.port])
    eps = cfg["static_resources"]["clusters"][0]["load_assignment"]["endpoints"][0]["lb_endpoints"]
    eps[0]["load_balancing_weight"] = 3
    eps[1]["load_balancing_weight"] = 1
    p = proxy(cfg, workers=2)
    assert served_by(p.port, 40) == {b"ok from up0": 30, b"ok from up1": 10}


def test_failing_health_check_removes_a_host_and_passing_brings_it_back(upstreams, proxy):
    a, b = upstreams(2)
    p = proxy(simple_config([a.port, b.port], cluster_fields={"health_checks": health_check()}), workers=2)
    assert wait_for(lambda: set(served_by(p.port, 4)) == {b"ok from up0", b"ok from up1"})
    b.health_status = 503
    t0 = time.monotonic()
    assert wait_for(lambda: served_by(p.port, 6) == {b"ok from up0": 6}, timeout=5)
    # interval x unhealthy_threshold + one interval, plus scheduling slack
    assert time.monotonic() - t0 < 0.2 * 2 + 0.2 + 1.0
    b.health_status = 200
    assert wait_for(lambda: set(served_by(p.port, 6)) == {b"ok from up0", b"ok from up1"}, timeout=5)


def test_hosts_wait_for_a_first_passing_check(upstreams, proxy):
    # panic threshold 0: otherwise Envoy (and cyvoy) route to all hosts of a cluster in panic
    (a,) = upstreams(1, health_status=503)
    p = proxy(simple_config([a.port], cluster_fields={
        "health_checks": health_check(),
        "common_lb_config": {"healthy_panic_threshold": {"value": 0}}}), workers=1)
    assert get(p.port) == (503, b"no healthy upstream")
    a.health_status = 200
    assert wait_for(lambda: get(p.port) == (200, b"ok from up0"), timeout=5)


def test_consecutive_5xx_eject_a_host_for_base_ejection_time(upstreams, proxy):
    a, b = upstreams(2)
    b.fail_status = 500
    od = {"consecutive_5xx": 3, "interval": "0.2s", "base_ejection_time": "2s", "max_ejection_percent": 50}
    p = proxy(simple_config([a.port, b.port], cluster_fields={"outlier_detection": od}), workers=2)
    # round robin: every other request meets the broken host until it has failed 3 times in a row
    first = [get(p.port) for _ in range(6)]
    assert (500, b"fail from up1") in first
    assert wait_for(lambda: served_by(p.port, 1) == {b"ok from up0": 1} and
                    served_by(p.port, 8) == {b"ok from up0": 8}, timeout=1.5)
    ejected_at = time.monotonic()
    # base_ejection_time later it is back in the rotation (and fails again)
    assert wait_for(lambda: b"fail from up1" in served_by(p.port, 4), timeout=4)
    assert time.monotonic() - ejected_at > 1.0


def test_all_hosts_failing_is_panic_and_traffic_goes_to_all(upstreams, proxy):
    a, b = upstreams(2, health_status=503)
    p = proxy(simple_config([a.port, b.port], cluster_fields={"health_checks": health_check()}), workers=1)
    time.sleep(0.6)   # both fail their checks: below the 50% panic threshold
    assert set(served_by(p.port, 6)) == {b"ok from up0", b"ok from up1"}


def test_priority_zero_failing_spills_to_priority_one(upstreams, proxy):
    a, b = upstreams(2)
    cfg = simple_config([a.port], cluster_fields={"health_checks": health_check()})
    cfg["static_resources"]["clusters"][0]["load_assignment"]["endpoints"].append(
        {"priority": 1, "lb_endpoints": [{"endpoint": {"address": {"socket_address": {
            "address": "127.0.0.1", "port_value": b.port}}}}]})
    p = proxy(cfg, workers=1)
    assert wait_for(lambda: served_by(p.port, 6) == {b"ok from up0": 6}, timeout=5)
    a.health_status = 503
    assert wait_for(lambda: served_by(p.port, 6) == {b"ok from up1": 6}, timeout=5)


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("unshare") is None,
                    reason="needs root and unshare to give the proxy its own /etc/hosts")
def test_strict_dns_cluster_follows_a_name_whose_address_changes(tmp_path, proxy):
    # The proxy runs in a private mount namespace whose /etc/hosts is a file the test rewrites;
    # the machine's own resolver configuration is never touched.
    a = Upstream("dns-a", host="127.0.0.7")
    b = Upstream("dns-b", port=a.port, host="127.0.0.8")
    hosts = tmp_path / "hosts"
    hosts.write_text("127.0.0.7 cyvoy-dns-test.internal\n")
    try:
        cfg = simple_config([a.port], cluster_fields={"type": "STRICT_DNS", "dns_refresh_rate": "0.2s",
                                                      "dns_lookup_family": "V4_ONLY"})
        ep = cfg["static_resources"]["clusters"][0]["load_assignment"]["endpoints"][0]["lb_endpoints"][0]
        ep["endpoint"]["address"]["socket_address"]["address"] = "cyvoy-dns-test.internal"
        wrap = ("unshare", "-m", "sh", "-c", f'mount --bind {hosts} /etc/hosts && exec "$@"', "sh")
        p = proxy(cfg, workers=2, wrap=wrap)
        assert get(p.port) == (200, b"ok from dns-a")
        with open(hosts, "r+") as f:   # in place: the bind mount follows the inode
            f.truncate(0)
            f.write("127.0.0.8 cyvoy-dns-test.internal\n")
        assert wait_for(lambda: served_by(p.port, 4) == {b"ok from dns-b": 4}, timeout=5)
    finally:
        a.close()
        b.close()


def test_health_checker_process_is_respawned_and_routing_goes_on(upstreams, proxy):
    import re
    import signal
    a, b = upstreams(2)
    p = proxy(simple_config([a.port, b.port], cluster_fields={"health_checks": health_check()}), workers=1)
    assert wait_for(lambda: set(served_by(p.port, 4)) == {b"ok from up0", b"ok from up1"})
    pids = lambda: re.findall(r"started health-check process (\d+)", p.log())  # noqa: E731
    (first,) = pids()
    os.kill(int(first), signal.SIGKILL)
    # the table keeps its last state meanwhile: routing goes on
    assert all(body.startswith(b"ok from up") for body in served_by(p.port, 4))
    assert wait_for(lambda: len(pids()) == 2, timeout=10)
    assert "health-check process died: killed by SIGKILL" in p.log()
    assert wait_for(lambda: set(served_by(p.port, 4)) == {b"ok from up0", b"ok from up1"})


@pytest.mark.parametrize("policy", ["RING_HASH", "MAGLEV"])
def test_hash_policy_sends_one_key_to_one_host_from_every_worker(upstreams, proxy, policy):
    ups = upstreams(4)
    cfg = simple_config([u.port for u in ups], route={"cluster": "backend",
                                                       "hash_policy": [{"header": {"header_name": "x-user"}}]},
                        cluster_fields={"lb_policy": policy})
    p = proxy(cfg, workers=2)
    for user in ("alice", "bob", "carol"):
        # new connections land on both workers; the key alone decides the host
        hosts = {get(p.port, headers={"x-user": user, "Connection": "close"})[1] for _ in range(12)}
        assert len(hosts) == 1, (user, hosts)
    spread = {get(p.port, headers={"x-user": f"user{i}", "Connection": "close"})[1] for i in range(40)}
    assert len(spread) >= 3


def test_least_request_steers_away_from_a_host_holding_long_requests(upstreams, proxy):
    import threading
    a, b = upstreams(2)
    a.delay_s = 2.0      # up0 holds every request it gets for 2 s
    p = proxy(simple_config([a.port, b.port], cluster_fields={"lb_policy": "LEAST_REQUEST"}), workers=2)
    # ties between idle hosts are broken at random: send until up0 holds a request
    slow = []
    while not a.requests and len(slow) < 40:
        t = threading.Thread(target=lambda: get(p.port), daemon=True)
        t.start()
        slow.append(t)
        time.sleep(0.05)
    assert len(a.requests) == 1   # and once it holds one, nothing more goes there
    # up0 now has requests in flight (seen by both workers through the host table): quick ones avoid it
    t0 = time.monotonic()
    assert served_by(p.port, 10) == {b"ok from up1": 10}
    assert time.monotonic() - t0 < 1.5
    for t in slow:
        t.join(5)
