"""Circuit breakers (issue 4, item 2, in part): max_requests and max_retries hold for the whole
proxy, across workers, because their counts live in the shared host table."""
from __future__ import annotations

import collections
import http.client
import os
import signal
import threading
import time

from tests.harness import simple_config, wait_for
from tests.test_admin_live import admin_port, call, stat, with_admin


def request(port, path="/"):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    c.request("GET", path, headers={"Connection": "close"})
    r = c.getresponse()
    body = r.read()
    c.close()
    return r.status, r.getheader("x-envoy-overloaded"), body


def test_max_requests_holds_exactly_across_workers(upstreams, proxy):
    (a,) = upstreams(1)
    a.delay_s = 1.0
    cfg = simple_config([a.port], cluster_fields={"circuit_breakers": {"thresholds": [{"max_requests": 3}]}})
    p = proxy(cfg, workers=2)
    results = []
    threads = [threading.Thread(target=lambda: results.append(request(p.port))) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    got = collections.Counter((status, overloaded) for status, overloaded, _ in results)
    assert got == {(200, None): 3, (503, "true"): 5}
    assert len(a.requests) == 3
    # the breaker is released: the next requests go through again
    assert request(p.port)[0] == 200


def test_max_retries_zero_lets_no_retry_through(upstreams, proxy):
    a, b = upstreams(2)
    b.fail_status = 503
    cfg = simple_config([a.port, b.port], route={"cluster": "backend", "retry_policy": {"retry_on": "5xx"}},
                        cluster_fields={"circuit_breakers": {"thresholds": [{"max_retries": 0}]}})
    p = proxy(cfg, workers=1)
    statuses = collections.Counter(request(p.port)[0] for _ in range(10))
    assert statuses == {200: 5, 503: 5}


# ---- max_connections, max_pending_requests, per_host_thresholds (pending requests) -------------

def burst(port, n, path="/"):
    results = []
    threads = [threading.Thread(target=lambda: results.append(request(port, path))) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    return collections.Counter((status, overloaded) for status, overloaded, _ in results)


def breakers(**thresholds):
    return {"circuit_breakers": {"thresholds": [thresholds]}}


def test_max_connections_queues_requests_on_the_open_connection(upstreams, proxy):
    (a,) = upstreams(1)
    a.delay_s = 0.3
    p = proxy(simple_config([a.port], cluster_fields=breakers(max_connections=1)), workers=1)
    assert burst(p.port, 4) == {(200, None): 4}     # none refused: they wait (pending)
    assert a.connections == 1


def test_max_connections_holds_across_workers_within_one_per_worker(upstreams, proxy):
    # Envoy's pool opens one connection even past the limit when it has none (conn_pool_base.cc),
    # so with 2 workers the overshoot is at most 1
    (a,) = upstreams(1)
    a.delay_s = 0.3
    p = proxy(simple_config([a.port], cluster_fields=breakers(max_connections=2)), workers=2)
    assert burst(p.port, 10) == {(200, None): 10}
    assert 2 <= a.connections <= 3


def test_max_pending_requests_overflow_gets_503_overloaded(upstreams, proxy):
    (a,) = upstreams(1)
    p = proxy(with_admin(simple_config([a.port], cluster_fields=breakers(max_connections=1,
                                                                         max_pending_requests=1))),
              workers=1)
    assert request(p.port)[0] == 200        # the pool now has its one (idle) connection
    a.delay_s = 0.5
    # one takes the connection, one waits for it (pending), two find the pending queue full
    assert burst(p.port, 4) == {(200, None): 2, (503, "true"): 2}
    text = call(admin_port(p), "/stats")[1]
    assert stat(text, "cluster.backend.upstream_rq_pending_overflow") == 2
    assert stat(text, "cluster.backend.upstream_cx_overflow") >= 1


def test_a_pending_request_times_out_with_the_route_timeout(upstreams, proxy):
    (a,) = upstreams(1)
    cfg = simple_config([a.port], route={"cluster": "backend", "timeout": "0.5s"},
                        cluster_fields=breakers(max_connections=1))
    vh = cfg["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"][
        "route_config"]["virtual_hosts"][0]
    vh["routes"].insert(0, {"match": {"prefix": "/delay"}, "route": {"cluster": "backend", "timeout": "5s"}})
    p = proxy(cfg, workers=1)
    assert request(p.port)[0] == 200
    hold = threading.Thread(target=lambda: request(p.port, "/delay/2"))
    hold.start()
    time.sleep(0.2)
    assert request(p.port)[0] == 504        # waited for the busy connection past the route timeout
    hold.join(10)


def test_per_host_max_connections_limits_each_host(upstreams, proxy):
    a, b = upstreams(2)
    a.delay_s = b.delay_s = 0.3
    cfg = simple_config([a.port, b.port], cluster_fields={"circuit_breakers": {
        "per_host_thresholds": [{"max_connections": 1}]}})
    p = proxy(cfg, workers=1)
    assert burst(p.port, 6) == {(200, None): 6}
    assert (a.connections, b.connections) == (1, 1)


def test_per_host_thresholds_other_than_max_connections_are_refused(upstreams, proxy, tmp_path):
    from proxy.config import ConfigError, load_dict
    cfg = simple_config([1], cluster_fields={"circuit_breakers": {"per_host_thresholds": [{"max_requests": 5}]}})
    try:
        load_dict(cfg)
    except ConfigError as e:
        assert e.path.endswith("per_host_thresholds[0].max_requests") and "max_connections only" in e.reason
    else:
        raise AssertionError("accepted")


def test_track_remaining_and_open_gauges(upstreams, proxy):
    (a,) = upstreams(1)
    a.delay_s = 1.0
    p = proxy(with_admin(simple_config([a.port], cluster_fields=breakers(max_requests=2, track_remaining=True))),
              workers=2)
    ap = admin_port(p)
    text = call(ap, "/stats")[1]
    assert stat(text, "cluster.backend.circuit_breakers.default.remaining_rq") == 2
    assert stat(text, "cluster.backend.circuit_breakers.default.rq_open") == 0
    threads = [threading.Thread(target=lambda: request(p.port)) for _ in range(2)]
    for t in threads:
        t.start()
    assert wait_for(lambda: "cluster.backend.circuit_breakers.default.rq_open: 1" in call(ap, "/stats")[1], 5)
    text = call(ap, "/stats")[1]
    assert stat(text, "cluster.backend.circuit_breakers.default.remaining_rq") == 0
    for t in threads:
        t.join(10)


def test_remaining_gauges_exist_only_with_track_remaining(upstreams, proxy):
    (a,) = upstreams(1)
    p = proxy(with_admin(simple_config([a.port])), workers=1)
    text = call(admin_port(p), "/stats")[1]
    assert "circuit_breakers.default.remaining_rq" not in text
    assert stat(text, "cluster.backend.circuit_breakers.default.cx_open") == 0


def test_units_of_a_killed_worker_are_given_back(upstreams, proxy):
    (a,) = upstreams(1)
    a.delay_s = 3.0
    p = proxy(simple_config([a.port], cluster_fields=breakers(max_requests=1)), workers=1)

    def held():
        try:
            request(p.port)
        except OSError:
            pass    # its worker is killed under it

    hold = threading.Thread(target=held)
    hold.start()
    assert wait_for(lambda: len(a.requests) == 1, 5)     # in flight, holding the max_requests unit
    (w,) = p.workers()
    os.kill(w.pid, signal.SIGKILL)
    hold.join(10)
    assert wait_for(lambda: [x.pid for x in p.workers()] not in ([], [w.pid]), 10)   # respawned
    a.delay_s = 0.0
    # without giving back the dead worker's max_requests unit, every request would now get 503
    assert wait_for(lambda: request(p.port)[0] == 200, 10)
