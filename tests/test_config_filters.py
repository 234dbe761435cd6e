"""proxy.config: the HTTP filters before the router and their per-route configs
(envoy.filters.http.fault, envoy.filters.http.local_ratelimit). One rule per test."""
from proxy.config import load_dict
from proxy.config.model import FaultFilter, LocalRateLimitFilter
from tests.test_config_routes import RC, ROUTE, config, refusal, route

HCM = RC.rsplit(".route_config", 1)[0]
LRL = "envoy.filters.http.local_ratelimit"
LRL_TYPE = "type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit"
FAULT_TYPE = "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault"


def with_filter(doc, name, typed):
    hcm = doc["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    hcm["http_filters"].insert(0, {"name": name, "typed_config": typed})
    return doc


def limiter(**fields):
    return {"@type": LRL_TYPE, "stat_prefix": "rl", **fields}


def test_local_ratelimit_defaults_are_envoys():
    doc = with_filter(config(), LRL, limiter(token_bucket={"max_tokens": 10, "fill_interval": "1s"}))
    f = load_dict(doc).listeners[0].hcm.filters[0].config
    assert isinstance(f, LocalRateLimitFilter)
    assert (f.status, f.enabled, f.enforced) == (429, (0, 100), (0, 100))
    assert f.token_bucket == (10, 1, 1.0)          # tokens_per_fill defaults to 1
    assert f.bucket == 0


def test_local_ratelimit_needs_a_stat_prefix():
    doc = with_filter(config(), LRL, {"@type": LRL_TYPE})
    e = refusal(doc)
    assert e.path == HCM + ".http_filters[0].typed_config.stat_prefix"


def test_fill_interval_under_50ms_is_refused():
    doc = with_filter(config(), LRL, limiter(token_bucket={"max_tokens": 1, "fill_interval": "0.01s"}))
    e = refusal(doc)
    assert e.path.endswith("token_bucket.fill_interval") and "0.05s" in e.reason


def test_per_route_local_ratelimit_needs_its_own_token_bucket():
    doc = with_filter(config(), LRL, limiter())
    route(doc)["typed_per_filter_config"] = {LRL: {"@type": LRL_TYPE}}
    e = refusal(doc)
    assert e.path == ROUTE + ".typed_per_filter_config['envoy.filters.http.local_ratelimit'].token_bucket"


def test_per_route_config_for_a_filter_not_in_the_chain_is_refused():
    doc = config()
    route(doc)["typed_per_filter_config"] = {"envoy.filters.http.fault": {"@type": FAULT_TYPE}}
    e = refusal(doc)
    assert e.path == ROUTE + ".typed_per_filter_config['envoy.filters.http.fault']"
    assert "not in this connection manager's http_filters" in e.reason


def test_per_route_local_ratelimit_inherits_the_filters_stat_prefix():
    doc = with_filter(config(), LRL, limiter())
    route(doc)["typed_per_filter_config"] = {LRL: {"@type": LRL_TYPE, "token_bucket": {
        "max_tokens": 1, "fill_interval": "1s"}}}
    built = load_dict(doc).listeners[0].hcm.route_config.virtual_hosts[0].routes[0]
    assert built.per_filter[LRL].stat_prefix == "rl"


def test_descriptors_are_refused_with_their_path():
    doc = with_filter(config(), LRL, limiter(descriptors=[{"entries": [{"key": "a", "value": "b"}]}]))
    e = refusal(doc)
    assert e.path == HCM + ".http_filters[0].typed_config.descriptors"
    assert e.reason.startswith("not supported by cyvoy")


def test_fault_abort_percentage_defaults_to_zero():
    doc = with_filter(config(), "envoy.filters.http.fault", {"@type": FAULT_TYPE, "abort": {"http_status": 503}})
    f = load_dict(doc).listeners[0].hcm.filters[0].config
    assert isinstance(f, FaultFilter) and f.abort_percent == (0, 100)


def test_fault_abort_needs_a_status_or_header_abort():
    doc = with_filter(config(), "envoy.filters.http.fault", {"@type": FAULT_TYPE, "abort": {
        "percentage": {"numerator": 5}}})
    e = refusal(doc)
    assert e.path.startswith(HCM + ".http_filters[0].typed_config.abort")


def test_fault_response_rate_limit_is_not_supported_yet():
    doc = with_filter(config(), "envoy.filters.http.fault", {"@type": FAULT_TYPE, "response_rate_limit": {
        "fixed_limit": {"limit_kbps": 1}}})
    e = refusal(doc)
    assert e.path == HCM + ".http_filters[0].typed_config.response_rate_limit"


def test_same_filter_twice_is_refused():
    doc = with_filter(with_filter(config(), LRL, limiter()), LRL, limiter())
    e = refusal(doc)
    assert e.path == HCM + ".http_filters[1]" and "appears twice" in e.reason
