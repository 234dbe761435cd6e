"""Circuit breakers (issue 4, item 2, in part): max_requests and max_retries hold for the whole
proxy, across workers, because their counts live in the shared host table."""
from __future__ import annotations

import collections
import http.client
import threading

from tests.harness import simple_config


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
