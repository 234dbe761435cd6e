"""HTTP filters before the router (issue 4, item 5): envoy.filters.http.local_ratelimit with a token
bucket shared by every worker, and envoy.filters.http.fault (aborts, delays, header control,
percentages, max_active_faults), through the live proxy against real upstreams.

Envoy's docs: docs/root/configuration/http/http_filters/local_rate_limit_filter.rst and
fault_filter.rst."""
from __future__ import annotations

import collections
import http.client
import threading
import time

import yaml

from tests.harness import SHARED, simple_config
from tests.test_admin_live import admin_port, call, stat, with_admin
from tests.test_envoy_examples import _to_loopback

ROUTER = {"name": "envoy.filters.http.router",
          "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}
LRL_TYPE = "type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit"
FAULT_TYPE = "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault"
ALL = {"default_value": {"numerator": 100, "denominator": "HUNDRED"}}


def ratelimit(**fields) -> dict:
    cfg = {"@type": LRL_TYPE, "stat_prefix": "rl"}
    cfg.update(fields)
    return {"name": "envoy.filters.http.local_ratelimit", "typed_config": cfg}


def fault(**fields) -> dict:
    cfg = {"@type": FAULT_TYPE}
    cfg.update(fields)
    return {"name": "envoy.filters.http.fault", "typed_config": cfg}


def with_filters(cfg: dict, *filters) -> dict:
    hcm = cfg["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    hcm["http_filters"] = [*filters, ROUTER]
    return cfg


def get(port, path="/", headers=None):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    c.request("GET", path, headers={"Connection": "close", **(headers or {})})
    r = c.getresponse()
    body = r.read()
    c.close()
    return r.status, dict((k.lower(), v) for k, v in r.getheaders()), body


def bucket(max_tokens, per_fill=None, interval="60s"):
    return {"max_tokens": max_tokens, "tokens_per_fill": per_fill or max_tokens, "fill_interval": interval}


# ---- local rate limit -----------------------------------------------------------------------------

def test_local_rate_limit_bucket_is_shared_by_all_workers(upstreams, proxy):
    (a,) = upstreams(1)
    cfg = with_filters(with_admin(simple_config([a.port])),
                       ratelimit(token_bucket=bucket(5), filter_enabled=ALL, filter_enforced=ALL))
    p = proxy(cfg, workers=2)
    got = collections.Counter(get(p.port)[0] for _ in range(16))
    # a bucket per worker would let up to 10 through
    assert got == {200: 5, 429: 11}
    assert len(a.requests) == 5
    _, text = call(admin_port(p), "/stats")
    assert stat(text, "rl.http_local_rate_limit.enabled") == 16
    assert stat(text, "rl.http_local_rate_limit.ok") == 5
    assert stat(text, "rl.http_local_rate_limit.rate_limited") == 11
    assert stat(text, "rl.http_local_rate_limit.enforced") == 11


def test_rate_limited_reply_is_429_with_x_envoy_ratelimited_and_configured_headers(upstreams, proxy):
    (a,) = upstreams(1)
    cfg = with_filters(simple_config([a.port]), ratelimit(
        token_bucket=bucket(1), filter_enabled=ALL, filter_enforced=ALL,
        response_headers_to_add=[{"header": {"key": "x-local-rate-limit", "value": "true"},
                                  "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}]))
    p = proxy(cfg, workers=1)
    assert get(p.port)[0] == 200
    status, headers, body = get(p.port)
    assert (status, body) == (429, b"local_rate_limited")
    assert headers["x-envoy-ratelimited"] == "true"
    assert headers["x-local-rate-limit"] == "true"


def test_rate_limit_status_can_be_configured_and_below_400_means_429(upstreams, proxy):
    (a,) = upstreams(1)
    for code, want in ((503, 503), (302, 429)):
        cfg = with_filters(simple_config([a.port]), ratelimit(
            token_bucket=bucket(1), filter_enabled=ALL, filter_enforced=ALL, status={"code": code}))
        p = proxy(cfg, workers=1)
        get(p.port)
        assert get(p.port)[0] == want
        p.stop()


def test_bucket_refills_tokens_per_fill_each_fill_interval(upstreams, proxy):
    (a,) = upstreams(1)
    cfg = with_filters(simple_config([a.port]), ratelimit(
        token_bucket=bucket(2, 1, "1s"), filter_enabled=ALL, filter_enforced=ALL))
    p = proxy(cfg, workers=2)
    first = [get(p.port)[0] for _ in range(3)]
    assert first == [200, 200, 429]
    time.sleep(1.3)   # one fill interval: one token back (tokens_per_fill 1), not two
    assert [get(p.port)[0] for _ in range(2)] == [200, 429]


def test_filter_enabled_defaults_to_zero_percent(upstreams, proxy):
    (a,) = upstreams(1)
    # Envoy: filter_enabled and filter_enforced default to 0% "for safety"
    cfg = with_filters(simple_config([a.port]), ratelimit(token_bucket=bucket(1)))
    p = proxy(cfg, workers=1)
    assert [get(p.port)[0] for _ in range(4)] == [200] * 4


def test_enabled_but_not_enforced_forwards_with_request_headers_and_counts(upstreams, proxy):
    (a,) = upstreams(1)
    cfg = with_filters(with_admin(simple_config([a.port])), ratelimit(
        token_bucket=bucket(1), filter_enabled=ALL,
        request_headers_to_add_when_not_enforced=[{"header": {"key": "x-would-be-limited",
                                                              "value": "yes"}}]))
    p = proxy(cfg, workers=1)
    assert [get(p.port)[0] for _ in range(3)] == [200] * 3
    added = [{k.lower(): v for k, v in r["headers"]}.get("x-would-be-limited") for r in a.requests]
    assert added == [None, "yes", "yes"]
    _, text = call(admin_port(p), "/stats")
    assert stat(text, "rl.http_local_rate_limit.rate_limited") == 2
    assert stat(text, "rl.http_local_rate_limit.enforced") == 0


def test_runtime_key_overrides_filter_enforced(upstreams, proxy):
    (a,) = upstreams(1)
    cfg = with_filters(simple_config([a.port]), ratelimit(
        token_bucket=bucket(1), filter_enabled=ALL,
        filter_enforced={"runtime_key": "rl_enforced", "default_value": {"numerator": 0}}))
    cfg["layered_runtime"] = {"layers": [{"name": "static", "static_layer": {"rl_enforced": 100}}]}
    p = proxy(cfg, workers=1)
    assert [get(p.port)[0] for _ in range(2)] == [200, 429]


def test_per_route_config_has_its_own_bucket_and_other_routes_are_free(upstreams, proxy):
    (a,) = upstreams(1)
    cfg = with_filters(simple_config([a.port]), ratelimit())   # no bucket at the filter level
    vh = cfg["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"][
        "route_config"]["virtual_hosts"][0]
    vh["routes"].insert(0, {"match": {"prefix": "/limited"}, "route": {"cluster": "backend"},
                            "typed_per_filter_config": {"envoy.filters.http.local_ratelimit": {
                                "@type": LRL_TYPE, "stat_prefix": "limited",
                                "token_bucket": bucket(2), "filter_enabled": ALL, "filter_enforced": ALL}}})
    p = proxy(cfg, workers=2)
    assert [get(p.port, "/limited")[0] for _ in range(3)] == [200, 200, 429]
    assert [get(p.port, "/other")[0] for _ in range(5)] == [200] * 5


def test_local_ratelimit_example_limits_to_two_requests_per_five_seconds(upstreams, proxy):
    (svc, stats_up) = upstreams(2)
    doc = yaml.safe_load((SHARED / "envoy-examples/local_ratelimit/envoy.yaml").read_text())
    p = proxy(_to_loopback(doc, {"service": svc.port, "envoy-stat": stats_up.port}), workers=2)
    service_port = list(p.listener_ports.values())[1]
    results = [get(service_port) for _ in range(4)]
    assert [r[0] for r in results] == [200, 200, 429, 429]
    assert results[2][1]["x-local-rate-limit"] == "true"
    assert results[2][2] == b"local_rate_limited"


# ---- fault injection ------------------------------------------------------------------------------

def test_fault_abort_answers_with_its_status_and_never_reaches_the_upstream(upstreams, proxy):
    (a,) = upstreams(1)
    cfg = with_filters(with_admin(simple_config([a.port])),
                       fault(abort={"http_status": 503, "percentage": {"numerator": 100}}))
    p = proxy(cfg, workers=1)
    status, _, body = get(p.port)
    assert (status, body) == (503, b"fault filter abort")
    assert a.requests == []
    _, text = call(admin_port(p), "/stats")
    assert stat(text, "http.ingress_http.fault.aborts_injected") == 1


def test_fault_abort_without_percentage_never_fires(upstreams, proxy):
    # the proto default of FaultAbort.percentage is 0%
    (a,) = upstreams(1)
    p = proxy(with_filters(simple_config([a.port]), fault(abort={"http_status": 503})), workers=1)
    assert [get(p.port)[0] for _ in range(5)] == [200] * 5


def test_header_abort_takes_the_status_from_the_request(upstreams, proxy):
    (a,) = upstreams(1)
    cfg = with_filters(simple_config([a.port]),
                       fault(abort={"header_abort": {}, "percentage": {"numerator": 100}}))
    p = proxy(cfg, workers=1)
    assert get(p.port, headers={"x-envoy-fault-abort-request": "418"})[0] == 418
    assert get(p.port, headers={"x-envoy-fault-abort-request": "700"})[0] == 200   # out of [200, 600)
    assert get(p.port)[0] == 200
    assert all("x-envoy-fault-abort-request" not in {k.lower(): v for k, v in r["headers"]} for r in a.requests)


def test_fault_abort_percentage_holds_statistically(upstreams, proxy):
    (a,) = upstreams(1)
    cfg = with_filters(simple_config([a.port]),
                       fault(abort={"http_status": 500, "percentage": {"numerator": 30}}))
    p = proxy(cfg, workers=2)
    c = http.client.HTTPConnection("127.0.0.1", p.port, timeout=10)
    aborted = 0
    for _ in range(400):
        c.request("GET", "/")
        r = c.getresponse()
        r.read()
        aborted += r.status == 500
    c.close()
    # binomial(400, 0.3): mean 120, sd 9.2; +-4.5 sd
    assert 79 <= aborted <= 161


def test_header_percentage_lowers_but_never_raises_the_configured_one(upstreams, proxy):
    (a,) = upstreams(1)
    cfg = with_filters(simple_config([a.port]),
                       fault(abort={"header_abort": {}, "percentage": {"numerator": 100}}))
    p = proxy(cfg, workers=1)
    h = {"x-envoy-fault-abort-request": "503", "x-envoy-fault-abort-request-percentage": "0"}
    assert [get(p.port, headers=h)[0] for _ in range(5)] == [200] * 5


def test_fixed_delay_holds_the_request_before_it_goes_upstream(upstreams, proxy):
    (a,) = upstreams(1)
    cfg = with_filters(with_admin(simple_config([a.port])),
                       fault(delay={"fixed_delay": "0.4s", "percentage": {"numerator": 100}}))
    p = proxy(cfg, workers=1)
    t0 = time.monotonic()
    assert get(p.port)[0] == 200
    assert time.monotonic() - t0 >= 0.4
    _, text = call(admin_port(p), "/stats")
    assert stat(text, "http.ingress_http.fault.delays_injected") == 1
    assert stat(text, "http.ingress_http.fault.active_faults") == 0


def test_header_delay_then_abort(upstreams, proxy):
    (a,) = upstreams(1)
    cfg = with_filters(simple_config([a.port]), fault(
        delay={"header_delay": {}, "percentage": {"numerator": 100}},
        abort={"header_abort": {}, "percentage": {"numerator": 100}}))
    p = proxy(cfg, workers=1)
    t0 = time.monotonic()
    status = get(p.port, headers={"x-envoy-fault-delay-request": "300",
                                  "x-envoy-fault-abort-request": "504"})[0]
    assert status == 504 and time.monotonic() - t0 >= 0.3
    assert a.requests == []


def test_max_active_faults_holds_across_workers(upstreams, proxy):
    (a,) = upstreams(1)
    cfg = with_filters(with_admin(simple_config([a.port])), fault(
        max_active_faults=1, delay={"fixed_delay": "1.5s", "percentage": {"numerator": 100}}))
    p = proxy(cfg, workers=2)
    results = []
    threads = [threading.Thread(target=lambda: results.append(get(p.port)[0])) for _ in range(4)]
    for t in threads:
        t.start()
        time.sleep(0.1)
    for t in threads:
        t.join(10)
    assert results == [200] * 4
    _, text = call(admin_port(p), "/stats")
    assert stat(text, "http.ingress_http.fault.delays_injected") == 1
    assert stat(text, "http.ingress_http.fault.faults_overflow") == 3


def test_fault_applies_only_to_its_upstream_cluster_and_matching_headers(upstreams, proxy):
    (a,) = upstreams(1)
    cfg = with_filters(simple_config([a.port]), fault(
        upstream_cluster="backend", headers=[{"name": "x-chaos", "exact_match": "on"}],
        abort={"http_status": 503, "percentage": {"numerator": 100}}))
    p = proxy(cfg, workers=1)
    assert get(p.port)[0] == 200
    assert get(p.port, headers={"x-chaos": "on"})[0] == 503
    cfg2 = with_filters(simple_config([a.port]), fault(
        upstream_cluster="elsewhere", abort={"http_status": 503, "percentage": {"numerator": 100}}))
    p.stop()
    p2 = proxy(cfg2, workers=1)
    assert get(p2.port)[0] == 200


def test_per_route_fault_config_overrides_the_filters(upstreams, proxy):
    (a,) = upstreams(1)
    cfg = with_filters(simple_config([a.port]), fault())   # no fault at the filter level
    vh = cfg["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"][
        "route_config"]["virtual_hosts"][0]
    vh["routes"].insert(0, {"match": {"prefix": "/flaky"}, "route": {"cluster": "backend"},
                            "typed_per_filter_config": {"envoy.filters.http.fault": {
                                "@type": FAULT_TYPE,
                                "abort": {"http_status": 502, "percentage": {"numerator": 100}}}}})
    p = proxy(cfg, workers=1)
    assert get(p.port, "/flaky")[0] == 502
    assert get(p.port, "/steady")[0] == 200


def test_fault_and_rate_limit_flags_reach_the_access_log(upstreams, proxy, tmp_path):
    (a,) = upstreams(1)
    log_path = tmp_path / "access.log"
    cfg = with_filters(simple_config([a.port], hcm_fields={"access_log": [{
        "name": "envoy.access_loggers.file", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
            "path": str(log_path), "log_format": {"text_format": "%RESPONSE_CODE% %RESPONSE_FLAGS%\n"}}}]}),
        fault(abort={"header_abort": {}, "percentage": {"numerator": 100}}),
        ratelimit(token_bucket=bucket(1), filter_enabled=ALL, filter_enforced=ALL))
    p = proxy(cfg, workers=1)
    get(p.port, headers={"x-envoy-fault-abort-request": "503"})
    get(p.port)
    get(p.port)
    p.stop()
    assert log_path.read_text().splitlines() == ["503 FI", "200 -", "429 RL"]
