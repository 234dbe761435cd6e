"""Route retry_policy (issue 4, item 1, in part): what is retried, what is not, and the access
log's URX flag when retries run out."""
from __future__ import annotations

import collections
import http.client
import time

from tests.harness import free_port, simple_config


def request(port, method="GET", path="/", body=None):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    c.request(method, path, body=body, headers={"Connection": "close"})
    r = c.getresponse()
    data = r.read()
    c.close()
    return r.status, data


def retry_config(ports, retry_policy, **kw):
    return simple_config(ports, route={"cluster": "backend", "retry_policy": retry_policy}, **kw)


PREVIOUS = [{"name": "envoy.retry_host_predicates.previous_hosts"}]


def test_5xx_is_retried_on_another_host(upstreams, proxy):
    a, b = upstreams(2)
    b.fail_status = 503
    p = proxy(retry_config([a.port, b.port], {"retry_on": "5xx", "num_retries": 2,
                                               "retry_host_predicate": PREVIOUS}), workers=2)
    results = collections.Counter(request(p.port) for _ in range(20))
    assert results == {(200, b"ok from up0"): 20}
    assert len(b.requests) > 0      # the broken host was tried, and its answers never reached a client


def test_connect_failure_is_retried(upstreams, proxy):
    (a,) = upstreams(1)
    p = proxy(retry_config([free_port(), a.port], {"retry_on": "connect-failure", "num_retries": 2,
                                                   "retry_host_predicate": PREVIOUS}), workers=1)
    assert collections.Counter(request(p.port) for _ in range(10)) == {(200, b"ok from up0"): 10}


def test_status_not_in_retry_on_is_not_retried(upstreams, proxy):
    a, b = upstreams(2)
    b.fail_status = 500
    p = proxy(retry_config([a.port, b.port], {"retry_on": "gateway-error", "num_retries": 2}), workers=1)
    statuses = collections.Counter(request(p.port)[0] for _ in range(10))
    assert statuses[500] == 5


def test_retriable_status_codes(upstreams, proxy):
    a, b = upstreams(2)
    b.fail_status = 429
    p = proxy(retry_config([a.port, b.port], {"retry_on": "retriable-status-codes", "retriable_status_codes": [429],
                                               "retry_host_predicate": PREVIOUS}), workers=1)
    assert collections.Counter(request(p.port)[0] for _ in range(10)) == {200: 10}


def test_post_is_not_retried_once_it_reached_an_upstream(upstreams, proxy):
    # RFC 9110 section 9.2.2: a non-idempotent request the upstream may have acted on is not repeated
    a, b = upstreams(2)
    b.fail_status = 503
    p = proxy(retry_config([a.port, b.port], {"retry_on": "5xx", "num_retries": 2}), workers=1)
    statuses = collections.Counter(request(p.port, "POST", "/", b"x")[0] for _ in range(10))
    assert statuses[503] == 5


def test_put_with_a_buffered_body_is_replayed(upstreams, proxy):
    a, b = upstreams(2)
    b.fail_status = 503
    p = proxy(retry_config([a.port, b.port], {"retry_on": "5xx", "retry_host_predicate": PREVIOUS}), workers=1)
    for _ in range(6):
        assert request(p.port, "PUT", "/sink", b"y" * 3000)[0] == 200
    assert all(r["body_len"] == 3000 for r in a.requests)


def test_body_over_the_buffer_limit_is_not_retried(upstreams, proxy):
    a, b = upstreams(2)
    b.fail_status = 503
    p = proxy(retry_config([a.port, b.port], {"retry_on": "5xx"},
                           cluster_fields={"per_connection_buffer_limit_bytes": 1024}), workers=1)
    statuses = collections.Counter(request(p.port, "PUT", "/sink", b"z" * 4096)[0] for _ in range(6))
    assert statuses[503] == 3


def test_per_try_timeout_moves_on_to_another_host(upstreams, proxy):
    a, b = upstreams(2)
    b.delay_s = 3.0
    p = proxy(retry_config([a.port, b.port], {"retry_on": "5xx", "per_try_timeout": "0.3s",
                                               "retry_host_predicate": PREVIOUS}), workers=1)
    t0 = time.monotonic()
    for _ in range(4):
        assert request(p.port) == (200, b"ok from up0")
    assert time.monotonic() - t0 < 2.5


def test_exhausted_retries_answer_the_last_failure_and_log_urx(tmp_path, upstreams, proxy):
    a, b = upstreams(2)
    a.fail_status = b.fail_status = 503
    log = tmp_path / "access.log"
    cfg = retry_config([a.port, b.port], {"retry_on": "5xx", "num_retries": 2})
    hcm = cfg["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    hcm["access_log"] = [{"name": "envoy.access_loggers.file", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog", "path": str(log),
        "log_format": {"text_format_source": {"inline_string": "%RESPONSE_CODE% %RESPONSE_FLAGS%\n"}}}}]
    p = proxy(cfg, workers=1)
    assert request(p.port)[0] == 503
    assert len(a.requests) + len(b.requests) == 3     # the first try and two retries
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not (log.exists() and log.read_text()):
        time.sleep(0.1)
    assert log.read_text().splitlines() == ["503 URX"]


def test_unknown_retry_on_token_is_refused_with_its_path(tmp_path):
    import subprocess
    import sys
    import yaml
    from tests.harness import ROOT
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(retry_config([9], {"retry_on": "5xxx"})))
    r = subprocess.run([sys.executable, "-m", "proxy", "--mode", "validate", "-c", str(cfg)],
                       capture_output=True, text=True, cwd=str(ROOT), timeout=30)
    assert r.returncode == 1
    assert "route.retry_policy.retry_on: unknown retry_on token '5xxx'; did you mean '5xx'?" in r.stderr
