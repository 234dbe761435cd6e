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


def test_post_over_the_buffer_limit_is_not_retried_and_is_counted(upstreams, proxy):
    from tests.test_admin_live import admin_port, call, stat, with_admin
    a, b = upstreams(2)
    b.fail_status = 503
    p = proxy(with_admin(retry_config([a.port, b.port], {"retry_on": "5xx,reset", "retry_host_predicate": PREVIOUS},
                                      cluster_fields={"per_connection_buffer_limit_bytes": 1024})), workers=1)
    statuses = collections.Counter(request(p.port, "POST", "/sink", b"z" * 4096)[0] for _ in range(4))
    assert statuses == {200: 2, 503: 2}
    text = call(admin_port(p), "/stats")[1]
    assert stat(text, "cluster.backend.retry_or_shadow_abandoned") == 4
    assert stat(text, "cluster.backend.upstream_rq_retry") == 0


def test_per_try_timeouts_are_counted(upstreams, proxy):
    from tests.test_admin_live import admin_port, call, stat, with_admin
    a, b = upstreams(2)
    b.delay_s = 3.0
    p = proxy(with_admin(retry_config([a.port, b.port], {"retry_on": "5xx", "per_try_timeout": "0.2s",
                                                         "retry_host_predicate": PREVIOUS})), workers=1)
    assert [request(p.port)[0] for _ in range(4)] == [200] * 4
    assert stat(call(admin_port(p), "/stats")[1], "cluster.backend.upstream_rq_per_try_timeout") == len(b.requests)


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


# ---- retry_on tokens that read the response's headers, retriable_request_headers ---------------

def test_envoy_ratelimited_retries_a_response_carrying_x_envoy_ratelimited(upstreams, proxy):
    a, b = upstreams(2)
    b.fail_status = 429
    b.fail_headers = [("x-envoy-ratelimited", "true")]
    p = proxy(retry_config([a.port, b.port], {"retry_on": "envoy-ratelimited",
                                               "retry_host_predicate": PREVIOUS}), workers=1)
    assert collections.Counter(request(p.port)[0] for _ in range(10)) == {200: 10}
    assert len(b.requests) > 0      # b's 429s were met and retried, never passed on


def test_envoy_ratelimited_leaves_a_plain_429_alone(upstreams, proxy):
    a, b = upstreams(2)
    b.fail_status = 429
    p = proxy(retry_config([a.port, b.port], {"retry_on": "envoy-ratelimited"}), workers=1)
    assert collections.Counter(request(p.port)[0] for _ in range(10)) == {200: 5, 429: 5}


def test_retriable_headers_retry_a_response_that_matches_one(upstreams, proxy):
    a, b = upstreams(2)
    b.fail_status = 500
    b.fail_headers = [("x-upstream-retry", "yes")]
    p = proxy(retry_config([a.port, b.port], {
        "retry_on": "retriable-headers", "retry_host_predicate": PREVIOUS,
        "retriable_headers": [{"name": "x-other", "present_match": True},
                              {"name": "x-upstream-retry", "exact_match": "yes"}]}), workers=1)
    assert collections.Counter(request(p.port)[0] for _ in range(10)) == {200: 10}


def test_retriable_request_headers_limit_retries_to_matching_requests(upstreams, proxy):
    a, b = upstreams(2)
    b.fail_status = 503
    p = proxy(retry_config([a.port, b.port], {
        "retry_on": "5xx", "retry_host_predicate": PREVIOUS,
        "retriable_request_headers": [{"name": "x-retry-me", "exact_match": "1"}]}), workers=1)
    c = http.client.HTTPConnection("127.0.0.1", p.port, timeout=10)
    plain, marked = collections.Counter(), collections.Counter()
    for i in range(20):
        marked_request = i % 4 < 2      # round robin alternates hosts: both kinds meet both hosts
        c.request("GET", "/", headers={"x-retry-me": "1"} if marked_request else {})
        r = c.getresponse()
        r.read()
        (marked if marked_request else plain)[r.status] += 1
    assert marked == {200: 10}
    assert plain[503] > 0


def test_rate_limited_retry_back_off_waits_what_retry_after_says(upstreams, proxy):
    a, b = upstreams(2)
    b.fail_status = 503
    b.fail_headers = [("retry-after", "1")]
    p = proxy(retry_config([a.port, b.port], {
        "retry_on": "5xx", "retry_host_predicate": PREVIOUS,
        "retry_back_off": {"base_interval": "0.001s"},
        "rate_limited_retry_back_off": {"reset_headers": [{"name": "Retry-After", "format": "SECONDS"}]}}),
        workers=1)
    took = []
    for _ in range(4):
        t0 = time.monotonic()
        assert request(p.port)[0] == 200
        took.append(time.monotonic() - t0)
    slow = sorted(took)[-2:]       # the two that met host b first: Envoy waits U[1 s, 1.5 s)
    assert all(t >= 1.0 for t in slow), took
    assert sorted(took)[0] < 1.0, took


def test_reset_header_over_max_interval_falls_back_to_the_exponential_back_off(upstreams, proxy):
    a, b = upstreams(2)
    b.fail_status = 503
    b.fail_headers = [("retry-after", "30")]
    p = proxy(retry_config([a.port, b.port], {
        "retry_on": "5xx", "retry_host_predicate": PREVIOUS,
        "rate_limited_retry_back_off": {"reset_headers": [{"name": "retry-after"}], "max_interval": "2s"}}),
        workers=1)
    t0 = time.monotonic()
    assert [request(p.port)[0] for _ in range(4)] == [200] * 4
    assert time.monotonic() - t0 < 10    # not 30 s per retry


# ---- x-envoy-attempt-count, virtual host retry_policy ------------------------------------------

def attempt_config(ports, **vhost_fields):
    cfg = retry_config(ports, {"retry_on": "5xx", "retry_host_predicate": PREVIOUS})
    vh = cfg["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"][
        "route_config"]["virtual_hosts"][0]
    vh.update(vhost_fields)
    return cfg


def test_attempt_count_reaches_the_upstream_and_the_client_when_enabled(upstreams, proxy):
    a, b = upstreams(2)
    b.fail_status = 503
    p = proxy(attempt_config([a.port, b.port], include_request_attempt_count=True,
                             include_attempt_count_in_response=True), workers=1)
    seen = []
    for _ in range(4):
        c = http.client.HTTPConnection("127.0.0.1", p.port, timeout=10)
        c.request("GET", "/")
        r = c.getresponse()
        r.read()
        seen.append(r.getheader("x-envoy-attempt-count"))
        c.close()
    assert set(seen) <= {"1", "2"} and "2" in seen     # b fails, so some requests took two tries
    # every answer came from a, which saw the same counts the clients were told
    sent = sorted({k.lower(): v for k, v in req["headers"]}["x-envoy-attempt-count"] for req in a.requests)
    assert sent == sorted(seen)
    assert all({k.lower(): v for k, v in req["headers"]}["x-envoy-attempt-count"] == "1" for req in b.requests)


def test_attempt_count_is_absent_by_default(upstreams, proxy):
    (a,) = upstreams(1)
    p = proxy(attempt_config([a.port]), workers=1)
    c = http.client.HTTPConnection("127.0.0.1", p.port, timeout=10)
    c.request("GET", "/")
    r = c.getresponse()
    r.read()
    assert r.getheader("x-envoy-attempt-count") is None
    assert "x-envoy-attempt-count" not in {k.lower() for k, _ in a.requests[0]["headers"]}


def test_virtual_host_retry_policy_applies_to_routes_without_one(upstreams, proxy):
    a, b = upstreams(2)
    b.fail_status = 503
    cfg = simple_config([a.port, b.port])
    vh = cfg["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"][
        "route_config"]["virtual_hosts"][0]
    vh["retry_policy"] = {"retry_on": "5xx", "retry_host_predicate": PREVIOUS}
    p = proxy(cfg, workers=1)
    assert collections.Counter(request(p.port)[0] for _ in range(10)) == {200: 10}


# ---- x-envoy-* request headers from internal clients (internal_address_config) -------------------

def internal_config(ports, internal=True, route=None):
    hcm = {"use_remote_address": True}
    if internal:
        hcm["internal_address_config"] = {"cidr_ranges": [{"address_prefix": "127.0.0.0", "prefix_len": 8}]}
    return simple_config(ports, route=route, hcm_fields=hcm)


def send(port, headers, path="/"):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    c.request("GET", path, headers=headers)
    r = c.getresponse()
    r.read()
    c.close()
    return r.status


def test_x_envoy_retry_on_from_an_internal_client_enables_retries(upstreams, proxy):
    a, b = upstreams(2)
    b.fail_status = 503
    p = proxy(internal_config([a.port, b.port]), workers=1)
    assert collections.Counter(send(p.port, {"x-envoy-retry-on": "5xx"}) for _ in range(10)) == {200: 10}
    assert all("x-envoy-retry-on" not in {k.lower() for k, _ in r["headers"]} for r in a.requests)


def test_x_envoy_retry_on_from_a_client_outside_internal_address_config_is_ignored(upstreams, proxy):
    a, b = upstreams(2)
    b.fail_status = 503
    p = proxy(internal_config([a.port, b.port], internal=False), workers=1)
    assert collections.Counter(send(p.port, {"x-envoy-retry-on": "5xx"}) for _ in range(10)) == {200: 5, 503: 5}


def test_x_envoy_max_retries_zero_turns_the_routes_retries_off(upstreams, proxy):
    a, b = upstreams(2)
    b.fail_status = 503
    p = proxy(internal_config([a.port, b.port], route={"cluster": "backend", "retry_policy": {
        "retry_on": "5xx", "retry_host_predicate": PREVIOUS}}), workers=1)
    assert collections.Counter(send(p.port, {"x-envoy-max-retries": "0"}) for _ in range(10)) == {200: 5, 503: 5}


def test_x_envoy_upstream_rq_timeout_ms_from_an_internal_client_sets_the_route_timeout(upstreams, proxy):
    (a,) = upstreams(1)
    p = proxy(internal_config([a.port]), workers=1)
    assert send(p.port, {"x-envoy-upstream-rq-timeout-ms": "300"}, "/delay/3") == 504
    got = {k.lower(): v for k, v in a.requests[0]["headers"]}
    assert got["x-envoy-expected-rq-timeout-ms"] == "300"


# ---- back-off windows ----------------------------------------------------------------------------

def test_backoff_window_doubles_per_retry_up_to_max_interval():
    from proxy._fastpath.connection import backoff_delay
    # retry k waits U[0, min(base * 2^(k-1), max)): the top of each window, u -> 1
    tops = [backoff_delay(k, 0.025, 0.25, 0.999999) for k in range(1, 7)]
    assert [round(t, 4) for t in tops] == [0.025, 0.05, 0.1, 0.2, 0.25, 0.25]
    assert backoff_delay(3, 0.025, 0.25, 0.0) == 0.0
    assert backoff_delay(2, 0.025, 0.25, 0.5) == 0.025


def test_live_back_off_waits_stay_inside_their_windows(upstreams, proxy):
    # an always failing host, 2 retries, base 0.2 s: the waits are U[0, 0.2) + U[0, 0.4), so a
    # request takes at most 0.6 s plus the exchanges, and on average about 0.3 s
    (b,) = upstreams(1)
    b.fail_status = 503
    p = proxy(retry_config([b.port], {"retry_on": "5xx", "num_retries": 2,
                                       "retry_back_off": {"base_interval": "0.2s", "max_interval": "1s"}}),
              workers=1)
    took = []
    for _ in range(12):
        t0 = time.monotonic()
        assert request(p.port)[0] == 503
        took.append(time.monotonic() - t0)
    assert len(b.requests) == 36                     # 1 try + 2 retries each
    assert max(took) < 0.6 + 0.4                     # wide: the windows' sum plus slack
    assert sum(took) / len(took) > 0.1               # the waits happen (mean wait 0.3 s)


# ---- per_try_idle_timeout -------------------------------------------------------------------------

def test_per_try_idle_timeout_abandons_a_silent_host_and_retries(upstreams, proxy):
    a, b = upstreams(2)
    b.delay_s = 5.0            # accepts the request, then says nothing
    p = proxy(retry_config([a.port, b.port], {"retry_on": "5xx", "per_try_idle_timeout": "0.3s",
                                               "retry_host_predicate": PREVIOUS}), workers=1)
    t0 = time.monotonic()
    assert collections.Counter(request(p.port) for _ in range(4)) == {(200, b"ok from up0"): 4}
    assert time.monotonic() - t0 < 4.0       # never waited out b's 5 s
    assert len(b.requests) >= 1


def test_per_try_idle_timeout_restarts_with_every_byte_from_the_upstream(upstreams, proxy):
    (a,) = upstreams(1)
    p = proxy(retry_config([a.port], {"retry_on": "5xx", "per_try_idle_timeout": "0.5s"}), workers=1)
    t0 = time.monotonic()
    status, body = request(p.port, path="/slowbody/65536")
    took = time.monotonic() - t0
    assert (status, len(body)) == (200, 65536)
    assert took > 0.5      # 64 pieces 10 ms apart: the whole body outlasted one idle timeout
