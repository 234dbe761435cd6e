"""proxy.config: clusters, endpoints, the fields validated now for features built later (health
checks, outlier detection, circuit breakers, load-balancer options), and the support gate that
refuses those until they are implemented.

Each test is one rule; refusals assert the exact path and the key words of the reason.
`build_bootstrap` is the loader without the support gate, to see what the schema accepts.
"""
import pytest

from proxy.config import ConfigError, load_dict
from proxy.config.loader import build_bootstrap
from proxy.config.model import Cluster
from proxy.config.support_gate import NOT_IMPLEMENTED_YET

CLUSTER = "static_resources.clusters[0]"
ENDPOINTS = CLUSTER + ".load_assignment.endpoints"
ENDPOINT = ENDPOINTS + "[0].lb_endpoints[0].endpoint"


def endpoint(address: str = "127.0.0.1", port: int = 9000, **extra) -> dict:
    return {"endpoint": {"address": {"socket_address": {"address": address,
                                                        "port_value": port}}}, **extra}


def config(**cluster_fields) -> dict:
    """A bootstrap with one cluster "backend" (one endpoint unless load_assignment is given)."""
    c = {"name": "backend",
         "load_assignment": {"cluster_name": "backend",
                             "endpoints": [{"lb_endpoints": [endpoint()]}]}}
    c.update(cluster_fields)
    return {"static_resources": {"clusters": [c]}}


def groups(*lb_endpoint_lists, **group_fields) -> dict:
    """A load_assignment with one LocalityLbEndpoints per argument."""
    return {"cluster_name": "backend", "endpoints": [
        {"lb_endpoints": list(eps), **group_fields} for eps in lb_endpoint_lists]}


def built(doc: dict) -> Cluster:
    return next(iter(build_bootstrap(doc).clusters.values()))


def refusal(doc, gate: bool = True) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        (load_dict if gate else build_bootstrap)(doc)
    return info.value


# --- cluster fields ----------------------------------------------------------------------------

@pytest.mark.parametrize("attribute, default", [
    ("type", "STATIC"),
    ("connect_timeout", 5.0),
    ("lb_policy", "ROUND_ROBIN"),
    ("per_connection_buffer_limit_bytes", 1024 * 1024),
    ("dns_refresh_rate", 5.0),
    ("dns_lookup_family", "AUTO"),
    ("respect_dns_ttl", False),
    ("health_checks", []),
    ("outlier_detection", None),
    ("circuit_breakers", None),
    ("common_lb_config", None),
    ("lb_config", None),
])
def test_cluster_defaults(attribute, default):
    assert getattr(load_dict(config()).clusters["backend"], attribute) == default


def test_cluster_settings_are_read():
    c = load_dict(config(type="STRICT_DNS", connect_timeout="0.25s",
                         per_connection_buffer_limit_bytes=32768, dns_refresh_rate="30s",
                         dns_lookup_family="V4_ONLY", respect_dns_ttl=True)).clusters["backend"]
    assert (c.type, c.connect_timeout, c.per_connection_buffer_limit_bytes, c.dns_refresh_rate,
            c.dns_lookup_family, c.respect_dns_ttl) == ("STRICT_DNS", 0.25, 32768, 30.0,
                                                        "V4_ONLY", True)


@pytest.mark.parametrize("family", ["AUTO", "V4_ONLY", "V6_ONLY", "V4_PREFERRED", "ALL"])
def test_dns_lookup_families(family):
    assert built(config(dns_lookup_family=family)).dns_lookup_family == family


def test_cluster_name_is_required():
    doc = config()
    del doc["static_resources"]["clusters"][0]["name"]
    assert str(refusal(doc)) == f"{CLUSTER}.name: missing required field"


def test_cluster_name_may_not_be_empty():
    e = refusal(config(name=""))
    assert e.path == CLUSTER + ".name" and "must not be empty" in e.reason


def test_duplicate_cluster_names_are_refused():
    doc = config()
    doc["static_resources"]["clusters"].append({"name": "backend"})
    e = refusal(doc)
    assert e.path == "static_resources.clusters[1].name"
    assert "duplicate cluster name 'backend'" in e.reason


def test_clusters_are_kept_in_file_order():
    doc = {"static_resources": {"clusters": [{"name": n} for n in ("b", "a", "c")]}}
    assert list(load_dict(doc).clusters) == ["b", "a", "c"]


@pytest.mark.parametrize("kind", ["EDS", "ORIGINAL_DST"])
def test_eds_and_original_dst_clusters_are_not_supported(kind):
    e = refusal(config(type=kind))
    assert e.path == CLUSTER + ".type" and e.reason.startswith(f"not supported by cyvoy ({kind}")


def test_dns_refresh_rate_must_exceed_1ms():
    e = refusal(config(dns_refresh_rate="0.001s"))
    assert e.path == CLUSTER + ".dns_refresh_rate" and "greater than 0.001s" in e.reason


def test_hosts_from_the_v2_api_is_refused_with_a_hint():
    e = refusal(config(hosts=[{"socket_address": {"address": "127.0.0.1", "port_value": 80}}]))
    assert e.path == CLUSTER + ".hosts" and "load_assignment" in e.reason


@pytest.mark.parametrize("field, value, words", [
    ("lb_subset_config", {}, "subset"),
    ("eds_cluster_config", {}, "xDS"),
])
def test_cluster_features_not_supported_yet(field, value, words):
    e = refusal(config(**{field: value}))
    assert e.path == f"{CLUSTER}.{field}"
    assert e.reason.startswith("not supported by cyvoy") and words in e.reason


# --- endpoints ---------------------------------------------------------------------------------

def test_cluster_without_load_assignment_has_no_endpoints():
    assert load_dict({"static_resources": {"clusters": [{"name": "empty"}]}}).clusters[
        "empty"].endpoints == []


def test_load_assignment_cluster_name_is_required():
    e = refusal(config(load_assignment={"endpoints": []}))
    assert str(e) == f"{CLUSTER}.load_assignment.cluster_name: missing required field"


def test_endpoint_defaults():
    e = built(config()).endpoints[0]
    assert (e.address, e.port, e.weight, e.priority, e.health_check_port,
            e.health_check_address, e.hostname, e.locality) == (
        "127.0.0.1", 9000, 1, 0, 0, None, "", None)


def test_endpoint_fields_are_read():
    ep = endpoint(load_balancing_weight=3)
    ep["endpoint"].update(hostname="api.internal", health_check_config={
        "port_value": 9100, "address": {"socket_address": {"address": "127.0.0.2"}}})
    e = built(config(load_assignment=groups([ep]))).endpoints[0]
    assert (e.weight, e.hostname, e.health_check_port, e.health_check_address) == (
        3, "api.internal", 9100, "127.0.0.2")


def test_endpoint_weight_must_be_at_least_1():
    e = refusal(config(load_assignment=groups([endpoint(load_balancing_weight=0)])))
    assert e.path == ENDPOINTS + "[0].lb_endpoints[0].load_balancing_weight"
    assert "at least 1" in e.reason


def test_endpoint_needs_a_port():
    e = refusal(config(load_assignment=groups([endpoint(port=0)])))
    assert e.path == ENDPOINT + ".address.socket_address.port_value" and "port" in e.reason


def test_endpoint_address_is_required():
    e = refusal(config(load_assignment=groups([{"endpoint": {}}])))
    assert str(e) == f"{ENDPOINT}.address: missing required field"


def test_static_cluster_needs_ip_addresses_like_envoy():
    e = refusal(config(load_assignment=groups([endpoint("backend.internal")])))
    assert e.path == ENDPOINT + ".address.socket_address.address"
    assert "not an IP address" in e.reason and "STRICT_DNS" in e.reason


@pytest.mark.parametrize("kind", ["STRICT_DNS", "LOGICAL_DNS"])
def test_dns_clusters_accept_host_names(kind):
    c = built(config(type=kind, load_assignment=groups([endpoint("backend.internal")])))
    assert c.endpoints[0].address == "backend.internal"


def test_logical_dns_cluster_needs_exactly_one_endpoint():
    e = refusal(config(type="LOGICAL_DNS", load_assignment=groups([endpoint("a"), endpoint("b")])))
    assert e.path == ENDPOINTS and "exactly one endpoint" in e.reason


def test_priority_and_locality_come_from_the_endpoint_group():
    la = groups([endpoint()], [endpoint("127.0.0.2")], priority=0)
    la["endpoints"][1].update(priority=1, load_balancing_weight=5,
                              locality={"region": "eu", "zone": "eu-1a"})
    eps = built(config(load_assignment=la)).endpoints
    assert [(e.address, e.priority) for e in eps] == [("127.0.0.1", 0), ("127.0.0.2", 1)]
    assert eps[1].locality == {"region": "eu", "zone": "eu-1a", "sub_zone": ""}
    assert eps[1].locality_weight == 5


def test_priorities_must_be_contiguous_from_zero():
    la = groups([endpoint()], [endpoint("127.0.0.2")])
    la["endpoints"][1]["priority"] = 2
    e = refusal(config(load_assignment=la))
    assert e.path == ENDPOINTS and "contiguous from 0" in e.reason and "not 1" in e.reason


def test_priority_is_at_most_128():
    e = refusal(config(load_assignment=groups([endpoint()], priority=129)))
    assert e.path == ENDPOINTS + "[0].priority" and "at most 128" in e.reason


def test_non_default_health_status_is_not_supported():
    e = refusal(config(load_assignment=groups([endpoint(health_status="DRAINING")])))
    assert e.path == ENDPOINTS + "[0].lb_endpoints[0].health_status"
    assert "not supported by cyvoy" in e.reason


# --- health checks (validated now, gated) ------------------------------------------------------

def http_check(**fields) -> dict:
    hc = {"timeout": "1s", "interval": "5s", "unhealthy_threshold": 3, "healthy_threshold": 2,
          "http_health_check": {"path": "/healthz"}}
    hc.update(fields)
    return hc


def test_health_check_defaults_are_filled_in():
    hc = built(config(health_checks=[http_check()])).health_checks[0]
    assert (hc["timeout"], hc["interval"], hc["initial_jitter"], hc["interval_jitter"],
            hc["interval_jitter_percent"], hc["reuse_connection"], hc["no_traffic_interval"]) == (
        1.0, 5.0, 0.0, 0.0, 0, True, 60.0)


def test_health_check_intervals_default_to_other_intervals():
    hc = built(config(health_checks=[http_check(unhealthy_interval="10s",
                                                no_traffic_interval="30s")])).health_checks[0]
    assert (hc["unhealthy_edge_interval"], hc["healthy_edge_interval"],
            hc["no_traffic_healthy_interval"]) == (10.0, 5.0, 30.0)


def test_http_health_check_defaults_are_filled_in():
    http = built(config(health_checks=[http_check()])).health_checks[0]["http_health_check"]
    assert (http["host"], http["expected_statuses"], http["codec_client_type"],
            http["method"]) == ("backend", [{"start": 200, "end": 201}], "HTTP1", "GET")


@pytest.mark.parametrize("field", ["timeout", "interval", "unhealthy_threshold",
                                   "healthy_threshold"])
def test_health_check_required_fields(field):
    hc = http_check()
    del hc[field]
    e = refusal(config(health_checks=[hc]), gate=False)
    assert str(e) == f"{CLUSTER}.health_checks[0].{field}: missing required field"


def test_health_check_needs_a_checker():
    hc = http_check()
    del hc["http_health_check"]
    e = refusal(config(health_checks=[hc]), gate=False)
    assert e.path == CLUSTER + ".health_checks[0]"
    assert "exactly one of 'http_health_check', 'tcp_health_check', 'grpc_health_check'" \
        in e.reason


def test_health_check_interval_must_be_positive():
    e = refusal(config(health_checks=[http_check(interval="0s")]), gate=False)
    assert e.path == CLUSTER + ".health_checks[0].interval" and "greater than 0s" in e.reason


def test_http_health_check_path_is_required():
    e = refusal(config(health_checks=[http_check(http_health_check={})]), gate=False)
    assert str(e) == f"{CLUSTER}.health_checks[0].http_health_check.path: missing required field"


def test_expected_status_range_must_be_within_100_to_600():
    e = refusal(config(health_checks=[http_check(http_health_check={
        "path": "/", "expected_statuses": [{"start": 200, "end": 700}]})]), gate=False)
    assert e.path == CLUSTER + ".health_checks[0].http_health_check.expected_statuses[0]"
    assert "100 <= start < end <= 600" in e.reason


def test_tcp_health_check_payloads_become_bytes():
    tcp = built(config(health_checks=[http_check(http_health_check=None, tcp_health_check={
        "send": {"text": "50494e47"}, "receive": [{"text": "504f4e47"}]})])).health_checks[0][
        "tcp_health_check"]
    assert tcp == {"send": b"PING", "receive": [b"PONG"]}


def test_tcp_health_check_text_must_be_hex():
    e = refusal(config(health_checks=[http_check(http_health_check=None, tcp_health_check={
        "send": {"text": "PING"}})]), gate=False)
    assert e.path == CLUSTER + ".health_checks[0].tcp_health_check.send.text"
    assert "not hex" in e.reason


def test_grpc_health_check_authority_defaults_to_the_cluster_name():
    grpc = built(config(health_checks=[http_check(http_health_check=None,
                                                  grpc_health_check={})])).health_checks[0][
        "grpc_health_check"]
    assert (grpc["authority"], grpc["service_name"]) == ("backend", "")


# --- outlier detection, circuit breakers, load balancer options (validated now, gated) ---------

@pytest.mark.parametrize("field, default", [
    ("consecutive_5xx", 5), ("interval", 10.0), ("base_ejection_time", 30.0),
    ("max_ejection_time", 300.0), ("max_ejection_percent", 10), ("enforcing_consecutive_5xx", 100),
    ("consecutive_gateway_failure", 5), ("enforcing_consecutive_gateway_failure", 0),
    ("split_external_local_origin_errors", False), ("consecutive_local_origin_failure", 5),
    ("enforcing_consecutive_local_origin_failure", 100), ("success_rate_minimum_hosts", 5),
    ("success_rate_request_volume", 100), ("success_rate_stdev_factor", 1900),
    ("enforcing_success_rate", 100), ("failure_percentage_threshold", 85),
    ("enforcing_failure_percentage", 0), ("failure_percentage_minimum_hosts", 5),
    ("failure_percentage_request_volume", 50), ("max_ejection_time_jitter", 0.0),
    ("successful_active_health_check_uneject_host", True), ("always_eject_one_host", False),
])
def test_outlier_detection_defaults_are_filled_in(field, default):
    assert built(config(outlier_detection={})).outlier_detection[field] == default


def test_max_ejection_time_defaults_to_base_ejection_time_when_larger():
    od = built(config(outlier_detection={"base_ejection_time": "600s"})).outlier_detection
    assert od["max_ejection_time"] == 600.0


def test_outlier_percentages_are_at_most_100():
    e = refusal(config(outlier_detection={"max_ejection_percent": 101}), gate=False)
    assert e.path == CLUSTER + ".outlier_detection.max_ejection_percent" and "at most 100" in \
        e.reason


def test_circuit_breaker_defaults_are_filled_in():
    t = built(config(circuit_breakers={"thresholds": [{}]})).circuit_breakers["thresholds"][0]
    assert t == {"priority": "DEFAULT", "max_connections": 1024, "max_pending_requests": 1024,
                 "max_requests": 1024, "max_retries": 3, "retry_budget": None,
                 "track_remaining": False, "max_connection_pools": None}


def test_retry_budget_defaults_are_filled_in():
    t = built(config(circuit_breakers={"thresholds": [{"priority": "HIGH", "retry_budget": {}}]})
              ).circuit_breakers["thresholds"][0]
    assert (t["priority"], t["retry_budget"]) == (
        "HIGH", {"budget_percent": 20.0, "min_retry_concurrency": 3})


def test_circuit_breaker_priority_must_be_default_or_high():
    e = refusal(config(circuit_breakers={"thresholds": [{"priority": "LOW"}]}), gate=False)
    assert e.path == CLUSTER + ".circuit_breakers.thresholds[0].priority"
    assert "expected one of DEFAULT, HIGH" in e.reason


def test_panic_threshold_defaults_to_50_percent():
    assert built(config(common_lb_config={})).common_lb_config["healthy_panic_threshold"] == 50.0


def test_percent_must_be_a_value_mapping_within_0_to_100():
    e = refusal(config(common_lb_config={"healthy_panic_threshold": {"value": 150}}), gate=False)
    assert e.path == CLUSTER + ".common_lb_config.healthy_panic_threshold.value"
    assert "at most 100" in e.reason


def test_least_request_config_defaults():
    cfg = built(config(lb_policy="LEAST_REQUEST", least_request_lb_config={})).lb_config
    assert cfg == {"least_request_lb_config": {
        "choice_count": 2, "active_request_bias": {"default_value": 1.0, "runtime_key": None},
        "slow_start_config": None}}


def test_least_request_choice_count_is_at_least_2():
    e = refusal(config(lb_policy="LEAST_REQUEST", least_request_lb_config={"choice_count": 1}),
                gate=False)
    assert e.path == CLUSTER + ".least_request_lb_config.choice_count" and "at least 2" in e.reason


def test_ring_hash_config_defaults():
    cfg = built(config(lb_policy="RING_HASH", ring_hash_lb_config={})).lb_config
    assert cfg == {"ring_hash_lb_config": {"minimum_ring_size": 1024,
                                           "maximum_ring_size": 8388608,
                                           "hash_function": "XX_HASH"}}


def test_ring_hash_minimum_may_not_exceed_maximum():
    e = refusal(config(lb_policy="RING_HASH", ring_hash_lb_config={
        "minimum_ring_size": 4096, "maximum_ring_size": 2048}), gate=False)
    assert e.path == CLUSTER + ".ring_hash_lb_config.minimum_ring_size"
    assert "larger than maximum_ring_size" in e.reason


def test_maglev_table_size_defaults_to_65537():
    cfg = built(config(lb_policy="MAGLEV", maglev_lb_config={})).lb_config
    assert cfg == {"maglev_lb_config": {"table_size": 65537}}


def test_maglev_table_size_must_be_prime():
    e = refusal(config(lb_policy="MAGLEV", maglev_lb_config={"table_size": 65536}), gate=False)
    assert e.path == CLUSTER + ".maglev_lb_config.table_size" and "prime" in e.reason


def test_lb_config_must_match_the_lb_policy():
    e = refusal(config(ring_hash_lb_config={}), gate=False)
    assert e.path == CLUSTER + ".ring_hash_lb_config"
    assert "configures lb_policy RING_HASH, but lb_policy is ROUND_ROBIN" in e.reason


def test_only_one_lb_config_may_be_set():
    e = refusal(config(lb_policy="RING_HASH", ring_hash_lb_config={}, maglev_lb_config={}),
                gate=False)
    assert e.path == CLUSTER and "cannot both be set" in e.reason


def test_slow_start_defaults():
    cfg = built(config(round_robin_lb_config={"slow_start_config": {
        "slow_start_window": "30s"}})).lb_config["round_robin_lb_config"]["slow_start_config"]
    assert cfg == {"slow_start_window": 30.0, "min_weight_percent": 10.0,
                   "aggression": {"default_value": 1.0, "runtime_key": None}}


def test_load_balancing_policy_is_kept():
    policy = {"policies": [{"typed_extension_config": {
        "name": "envoy.load_balancing_policies.round_robin",
        "typed_config": {"@type": "type.googleapis.com/envoy.extensions.load_balancing_policies."
                                  "round_robin.v3.RoundRobin"}}}]}
    assert built(config(load_balancing_policy=policy)).lb_config["load_balancing_policy"] == \
        policy


# --- the support gate --------------------------------------------------------------------------

def test_support_gate_has_no_whole_feature_left_to_refuse():
    assert NOT_IMPLEMENTED_YET == ()


@pytest.mark.parametrize("threshold, field", [
    ({"max_connection_pools": 10}, "max_connection_pools"),
    ({"priority": "HIGH"}, "priority"),
])
def test_circuit_breaker_fields_not_run_yet_are_refused_with_their_path(threshold, field):
    e = refusal(config(circuit_breakers={"thresholds": [threshold]}))
    assert e.path == f"{CLUSTER}.circuit_breakers.thresholds[0].{field}"


def test_request_and_retry_breakers_pass_the_support_gate():
    load_dict(config(circuit_breakers={"thresholds": [
        {"max_requests": 10, "max_retries": 2, "retry_budget": {"budget_percent": {"value": 25}}}]}))


def test_connection_and_pending_breakers_pass_the_support_gate():
    load_dict(config(circuit_breakers={"thresholds": [
        {"max_connections": 10, "max_pending_requests": 5, "track_remaining": True}],
        "per_host_thresholds": [{"max_connections": 2}]}))


@pytest.mark.parametrize("fields", [
    {"health_checks": [http_check()]},
    {"outlier_detection": {}},
    {"common_lb_config": {"healthy_panic_threshold": {"value": 0}}},
    {"round_robin_lb_config": {}},
    {"lb_policy": "LEAST_REQUEST"},
    {"lb_policy": "RANDOM"},
    {"lb_policy": "RING_HASH"},
    {"lb_policy": "MAGLEV"},
    {"circuit_breakers": {"thresholds": [{"max_requests": 10}]}},
])
def test_cluster_management_features_pass_the_support_gate(fields):
    load_dict(config(**fields))


def test_common_lb_options_not_run_yet_are_refused_with_their_path():
    e = refusal(config(common_lb_config={"zone_aware_lb_config": {}}))
    assert e.path == f"{CLUSTER}.common_lb_config.zone_aware_lb_config"
    assert e.reason.startswith("valid, but not implemented yet")


def test_max_ejection_time_below_base_ejection_time_is_refused():
    e = refusal(config(outlier_detection={"base_ejection_time": "30s", "max_ejection_time": "10s"}))
    assert e.path == f"{CLUSTER}.outlier_detection.max_ejection_time"


def test_round_robin_passes_the_support_gate():
    assert load_dict(config(lb_policy="ROUND_ROBIN")).clusters["backend"].lb_policy == \
        "ROUND_ROBIN"


def test_upstream_tls_context_is_read():
    c = load_dict(config(transport_socket={"name": "envoy.transport_sockets.tls", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
        "sni": "backend.internal"}})).clusters["backend"]
    assert c.tls is not None and c.tls.sni == "backend.internal" and c.tls.trusted_ca is None


def test_upstream_subject_alt_name_matching_is_not_supported_yet():
    e = refusal(config(transport_socket={"name": "envoy.transport_sockets.tls", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
        "common_tls_context": {"validation_context": {"match_typed_subject_alt_names": []}}}}))
    assert e.path.endswith("validation_context.match_typed_subject_alt_names")


HPO = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"


def _hpo(**fields):
    return {"typed_extension_protocol_options": {HPO: {"@type": "type.googleapis.com/" + HPO, **fields}}}


def test_explicit_http2_config_makes_an_http2_cluster():
    c = load_dict(config(**_hpo(explicit_http_config={"http2_protocol_options": {"max_concurrent_streams": 50}})))
    cl = c.clusters["backend"]
    assert cl.upstream_protocol == "HTTP2" and cl.http2_protocol_options["max_concurrent_streams"] == 50


def test_explicit_http1_config_is_http1():
    c = load_dict(config(**_hpo(explicit_http_config={"http_protocol_options": {}})))
    assert c.clusters["backend"].upstream_protocol == "HTTP1"


def test_use_downstream_protocol_config_follows_the_client():
    c = load_dict(config(**_hpo(use_downstream_protocol_config={"http2_protocol_options": {}})))
    assert c.clusters["backend"].upstream_protocol == "DOWNSTREAM"


def test_deprecated_cluster_http2_protocol_options_still_mean_http2():
    c = load_dict(config(http2_protocol_options={}))
    assert c.clusters["backend"].upstream_protocol == "HTTP2"


def test_auto_config_is_refused_with_its_path():
    e = refusal(config(**_hpo(auto_config={})))
    assert e.path == f"{CLUSTER}.typed_extension_protocol_options.{HPO}.typed_config.auto_config"


def test_http2_window_below_the_minimum_is_refused():
    e = refusal(config(**_hpo(explicit_http_config={"http2_protocol_options": {"initial_stream_window_size": 100}})))
    assert e.path.endswith("http2_protocol_options.initial_stream_window_size")


def test_http2_http_health_checks_are_refused_at_load():
    e = refusal(config(health_checks=[{"timeout": "1s", "interval": "1s", "unhealthy_threshold": 1,
                                       "healthy_threshold": 1, "http_health_check": {
                                           "path": "/h", "codec_client_type": "HTTP2"}}]))
    assert e.path.endswith("http_health_check.codec_client_type") and "not supported" in e.reason
