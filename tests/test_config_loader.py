"""proxy.config: loading, the generic schema rules, listeners, the HTTP connection manager, TLS,
admin, runtime and Envoy's own example configs.

Each test is one rule; refusals assert the exact path and the key words of the reason.
"""
import base64
import copy
import json
from pathlib import Path

import pytest

from proxy.config import ConfigError, load_dict, load_file, load_text
from proxy.config.model import Bootstrap

HCM_TYPE = ("type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3."
            "HttpConnectionManager")
ROUTER_TYPE = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
TLS_TYPE = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext"

LISTENER = "static_resources.listeners[0]"
CHAIN = LISTENER + ".filter_chains[0]"
FILTER = CHAIN + ".filters[0]"
HCM = FILTER + ".typed_config"
TLS = CHAIN + ".transport_socket.typed_config"
CLUSTER = "static_resources.clusters[0]"

CERT = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
KEY = "-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----\n"

EXAMPLES = Path("/work/shared/envoy-examples")
needs_examples = pytest.mark.skipif(not EXAMPLES.is_dir(),
                                    reason="Envoy's example configs are not available here")


def config() -> dict:
    """A small valid bootstrap: one listener routing / to cluster "backend"."""
    return {
        "static_resources": {
            "listeners": [{
                "name": "ingress",
                "address": {"socket_address": {"address": "127.0.0.1", "port_value": 8080}},
                "filter_chains": [{"filters": [{
                    "name": "envoy.filters.network.http_connection_manager",
                    "typed_config": {
                        "@type": HCM_TYPE,
                        "stat_prefix": "ingress_http",
                        "route_config": {"virtual_hosts": [{
                            "name": "all", "domains": ["*"],
                            "routes": [{"match": {"prefix": "/"},
                                        "route": {"cluster": "backend"}}],
                        }]},
                        "http_filters": [{"name": "envoy.filters.http.router",
                                          "typed_config": {"@type": ROUTER_TYPE}}],
                    },
                }]}],
            }],
            "clusters": [{
                "name": "backend",
                "load_assignment": {"cluster_name": "backend", "endpoints": [{"lb_endpoints": [
                    {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1",
                                                                 "port_value": 9000}}}}]}]},
            }],
        },
    }


def listener(doc: dict) -> dict:
    return doc["static_resources"]["listeners"][0]


def chain(doc: dict) -> dict:
    return listener(doc)["filter_chains"][0]


def hcm(doc: dict) -> dict:
    return chain(doc)["filters"][0]["typed_config"]


def cluster(doc: dict) -> dict:
    return doc["static_resources"]["clusters"][0]


def with_tls(doc: dict, **common) -> dict:
    common.setdefault("tls_certificates", [{"certificate_chain": {"inline_string": CERT},
                                            "private_key": {"inline_string": KEY}}])
    chain(doc)["transport_socket"] = {
        "name": "envoy.transport_sockets.tls",
        "typed_config": {"@type": TLS_TYPE, "common_tls_context": common},
    }
    return doc


def refusal(doc) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load_dict(doc)
    return info.value


# --- the public API ----------------------------------------------------------------------------

def test_config_error_message_is_path_colon_reason():
    e = ConfigError("static_resources.clusters[0].name", "missing required field")
    assert (e.path, e.reason) == ("static_resources.clusters[0].name", "missing required field")
    assert str(e) == "static_resources.clusters[0].name: missing required field"


def test_load_dict_builds_listener_route_and_cluster():
    b = load_dict(config())
    assert isinstance(b, Bootstrap)
    assert [(l.name, l.address, l.port) for l in b.listeners] == [("ingress", "127.0.0.1", 8080)]
    route = b.listeners[0].hcm.route_config.virtual_hosts[0].routes[0]
    assert (route.match.kind, route.match.value, route.action.cluster) == ("prefix", "/",
                                                                           "backend")
    assert [(e.address, e.port) for e in b.clusters["backend"].endpoints] == [("127.0.0.1", 9000)]


def test_load_text_reads_json_when_asked():
    assert load_text(json.dumps(config()), fmt="json").listeners[0].name == "ingress"


def test_load_text_reads_yaml_by_default():
    text = "static_resources:\n  clusters:\n  - name: a\n"
    assert list(load_text(text).clusters) == ["a"]


def test_load_file_reads_json_by_extension(tmp_path):
    path = tmp_path / "envoy.json"
    path.write_text(json.dumps(config()))
    assert load_file(str(path)).listeners[0].port == 8080


def test_load_file_reads_yml_as_yaml(tmp_path):
    path = tmp_path / "envoy.yml"
    path.write_text("static_resources: {clusters: [{name: a}]}\n")
    assert list(load_file(str(path)).clusters) == ["a"]


def test_load_file_reads_other_extensions_as_yaml(tmp_path):
    path = tmp_path / "envoy.conf"
    path.write_text("static_resources: {clusters: [{name: a}]}\n")
    assert list(load_file(str(path)).clusters) == ["a"]


def test_load_file_names_a_missing_file(tmp_path):
    path = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError) as info:
        load_file(str(path))
    assert info.value.path == str(path)
    assert "cannot read" in info.value.reason


def test_invalid_yaml_reports_the_line():
    with pytest.raises(ConfigError) as info:
        load_text("static_resources:\n  clusters: [\n")
    assert info.value.path.startswith("line ")
    assert "invalid YAML" in info.value.reason


def test_duplicate_yaml_keys_are_refused():
    with pytest.raises(ConfigError) as info:
        load_text("admin: {}\nadmin: {}\n")
    assert info.value.path == "line 2"
    assert "duplicate key 'admin'" in info.value.reason


def test_yaml_merge_keys_may_override_merged_values():
    text = ("static_resources:\n  clusters:\n  - &base {name: a, connect_timeout: 1s}\n"
            "  - {<<: *base, name: b}\n")
    assert {n: c.connect_timeout for n, c in load_text(text).clusters.items()} == {"a": 1.0,
                                                                                  "b": 1.0}


def test_yaml_with_several_documents_is_refused():
    with pytest.raises(ConfigError) as info:
        load_text("admin: {}\n---\nadmin: {}\n")
    assert "single document" in info.value.reason


def test_duplicate_json_keys_are_refused():
    with pytest.raises(ConfigError) as info:
        load_text('{"admin": {}, "admin": {}}', fmt="json")
    assert "duplicate key 'admin'" in info.value.reason


def test_empty_document_is_refused():
    with pytest.raises(ConfigError) as info:
        load_text("")
    assert "empty" in info.value.reason


def test_source_keeps_the_document_as_read():
    doc = config()
    b = load_dict(doc)
    assert b.source == doc and b.source is not doc


# --- generic schema rules ----------------------------------------------------------------------

def test_misspelt_field_is_unknown_with_a_suggestion():
    doc = config()
    cluster(doc)["lb_polcy"] = "ROUND_ROBIN"
    assert str(refusal(doc)) == (
        "static_resources.clusters[0].lb_polcy: unknown field; did you mean 'lb_policy'?")


def test_unknown_field_without_a_close_name_has_no_suggestion():
    doc = config()
    cluster(doc)["frobnicate"] = 1
    assert str(refusal(doc)) == "static_resources.clusters[0].frobnicate: unknown field"


def test_real_envoy_field_cyvoy_does_not_support_is_refused_as_not_supported():
    doc = config()
    doc["dynamic_resources"] = {"ads_config": {}}
    e = refusal(doc)
    assert e.path == "dynamic_resources"
    assert e.reason.startswith("not supported by cyvoy (") and "xDS" in e.reason


@pytest.mark.parametrize("field", ["dynamic_resources", "cluster_manager", "stats_sinks",
                                   "tracing", "watchdog", "watchdogs"])
def test_top_level_features_cyvoy_lacks_are_refused(field):
    doc = config()
    doc[field] = {}
    e = refusal(doc)
    assert e.path == field and "not supported by cyvoy" in e.reason


def test_refused_field_written_with_its_default_is_accepted():
    doc = config()
    hcm(doc)["add_user_agent"] = False
    load_dict(doc)


def test_refused_field_with_a_non_default_value_is_refused():
    doc = config()
    hcm(doc)["normalize_path"] = True
    e = refusal(doc)
    assert e.path == HCM + ".normalize_path" and "not supported by cyvoy" in e.reason


def test_camel_case_json_names_are_accepted():
    doc = config()
    doc["staticResources"] = doc.pop("static_resources")
    doc["staticResources"]["clusters"][0]["connectTimeout"] = "0.5s"
    doc["staticResources"]["clusters"][0]["perConnectionBufferLimitBytes"] = 4096
    c = load_dict(doc).clusters["backend"]
    assert (c.connect_timeout, c.per_connection_buffer_limit_bytes) == (0.5, 4096)


def test_a_field_given_in_both_spellings_is_refused():
    doc = config()
    cluster(doc).update(connect_timeout="1s", connectTimeout="2s")
    e = refusal(doc)
    assert e.path == CLUSTER + ".connectTimeout" and "given twice" in e.reason


def test_null_means_not_set():
    doc = config()
    cluster(doc)["connect_timeout"] = None
    assert load_dict(doc).clusters["backend"].connect_timeout == 5.0


def test_missing_required_field_is_named():
    doc = config()
    del cluster(doc)["name"]
    assert str(refusal(doc)) == "static_resources.clusters[0].name: missing required field"


def test_string_field_given_a_number_is_refused():
    doc = config()
    hcm(doc)["stat_prefix"] = 5
    e = refusal(doc)
    assert e.path == HCM + ".stat_prefix" and "expected a string" in e.reason


def test_list_field_given_a_mapping_is_refused():
    doc = config()
    doc["static_resources"]["clusters"] = cluster(doc)
    e = refusal(doc)
    assert e.path == "static_resources.clusters" and "expected a list" in e.reason


def test_integer_field_given_a_boolean_is_refused():
    doc = config()
    hcm(doc)["xff_num_trusted_hops"] = True
    e = refusal(doc)
    assert e.path == HCM + ".xff_num_trusted_hops" and "expected an integer" in e.reason


def test_unsigned_field_refuses_negative_numbers():
    doc = config()
    hcm(doc)["xff_num_trusted_hops"] = -1
    e = refusal(doc)
    assert e.path == HCM + ".xff_num_trusted_hops" and "at least 0" in e.reason


def test_integers_may_be_written_as_strings():
    doc = config()
    listener(doc)["address"]["socket_address"]["port_value"] = "8081"
    assert load_dict(doc).listeners[0].port == 8081


def test_port_above_65535_is_out_of_range():
    doc = config()
    listener(doc)["address"]["socket_address"]["port_value"] = 70000
    e = refusal(doc)
    assert e.path == LISTENER + ".address.socket_address.port_value"
    assert "at most 65535" in e.reason


def test_boolean_field_given_a_string_is_refused():
    doc = config()
    hcm(doc)["use_remote_address"] = "yes"
    e = refusal(doc)
    assert e.path == HCM + ".use_remote_address" and "expected true or false" in e.reason


def test_bad_enum_value_lists_the_values_and_suggests_one():
    doc = config()
    cluster(doc)["lb_policy"] = "ROUND_ROBBIN"
    e = refusal(doc)
    assert e.path == CLUSTER + ".lb_policy"
    assert "expected one of ROUND_ROBIN, LEAST_REQUEST" in e.reason
    assert "did you mean 'ROUND_ROBIN'?" in e.reason


# --- durations ---------------------------------------------------------------------------------

@pytest.mark.parametrize("text, seconds", [("5s", 5.0), ("0.25s", 0.25), ("1.5s", 1.5),
                                           ("0s", 0.0), ("0.000000001s", 1e-9)])
def test_duration_strings_are_seconds_with_an_s_suffix(text, seconds):
    doc = config()
    hcm(doc)["request_timeout"] = text
    assert load_dict(doc).listeners[0].hcm.request_timeout == pytest.approx(seconds)


def test_duration_mapping_of_seconds_and_nanos_is_accepted():
    doc = config()
    hcm(doc)["request_timeout"] = {"seconds": 2, "nanos": 500000000}
    assert load_dict(doc).listeners[0].hcm.request_timeout == 2.5


@pytest.mark.parametrize("text, hint", [("100ms", "'0.1s'"), ("5m", "'300s'"), ("1h", "'3600s'")])
def test_durations_in_other_units_are_refused_with_the_envoy_spelling(text, hint):
    doc = config()
    cluster(doc)["connect_timeout"] = text
    e = refusal(doc)
    assert e.path == CLUSTER + ".connect_timeout"
    assert f"invalid duration {text!r}" in e.reason
    assert "seconds with an 's' suffix" in e.reason and hint in e.reason


def test_duration_as_a_bare_number_is_refused():
    doc = config()
    cluster(doc)["connect_timeout"] = 5
    e = refusal(doc)
    assert e.path == CLUSTER + ".connect_timeout"
    assert "'s' suffix" in e.reason and "'5s'" in e.reason


def test_negative_duration_is_refused():
    doc = config()
    hcm(doc)["request_timeout"] = "-1s"
    e = refusal(doc)
    assert e.path == HCM + ".request_timeout" and "negative" in e.reason


def test_zero_connect_timeout_is_refused_as_envoy_requires_more_than_zero():
    doc = config()
    cluster(doc)["connect_timeout"] = "0s"
    e = refusal(doc)
    assert e.path == CLUSTER + ".connect_timeout" and "greater than 0s" in e.reason


# --- typed_config and extensions ---------------------------------------------------------------

def test_type_url_must_match_the_filter_name():
    doc = config()
    hcm(doc)["@type"] = ROUTER_TYPE
    e = refusal(doc)
    assert e.path == HCM + ".@type"
    assert "does not match envoy.filters.network.http_connection_manager" in e.reason
    assert HCM_TYPE in e.reason


def test_wrong_message_of_the_right_extension_is_refused():
    doc = config()
    hcm(doc)["@type"] = HCM_TYPE.replace("HttpConnectionManager", "Rds")
    e = refusal(doc)
    assert e.path == HCM + ".@type" and HCM_TYPE in e.reason


def test_extension_is_found_by_type_url_whatever_its_name():
    doc = config()
    chain(doc)["filters"][0]["name"] = "my_connection_manager"
    assert load_dict(doc).listeners[0].hcm.stat_prefix == "ingress_http"


def test_extension_is_found_by_name_without_a_typed_config():
    doc = config()
    del hcm(doc)["http_filters"][0]["typed_config"]
    assert load_dict(doc).listeners[0].hcm.http_filters == ["envoy.filters.http.router"]


def test_typed_config_without_a_type_url_is_refused():
    doc = config()
    del hcm(doc)["@type"]
    e = refusal(doc)
    assert e.path == HCM and "missing '@type'" in e.reason


def test_unknown_filter_is_refused():
    doc = config()
    chain(doc)["filters"][0] = {"name": "acme.filters.magic"}
    e = refusal(doc)
    assert e.path == FILTER + ".name" and "unknown network filter 'acme.filters.magic'" in e.reason


def test_unknown_type_url_is_refused():
    doc = config()
    chain(doc)["filters"][0] = {"name": "magic",
                                "typed_config": {"@type": "type.googleapis.com/acme.Magic"}}
    e = refusal(doc)
    assert e.path == FILTER and "unknown network filter 'magic'" in e.reason


def test_misspelt_envoy_filter_name_gets_a_suggestion():
    doc = config()
    hcm(doc)["http_filters"] = [{"name": "envoy.filters.http.routr"}]
    e = refusal(doc)
    assert e.path == HCM + ".http_filters[0].name"
    assert "did you mean 'envoy.filters.http.router'?" in e.reason


def test_envoy_http_filter_other_than_the_router_is_not_supported_yet():
    doc = config()
    hcm(doc)["http_filters"].insert(0, {"name": "envoy.filters.http.cors"})
    e = refusal(doc)
    assert e.path == HCM + ".http_filters[0]"
    assert "not supported by cyvoy (HTTP filter envoy.filters.http.cors is not supported yet" \
        in e.reason


def test_envoy_filter_known_only_by_its_type_url_is_not_supported_rather_than_unknown():
    doc = config()
    hcm(doc)["http_filters"].insert(0, {"name": "allow-cors", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.cors.v3.Cors"}})
    e = refusal(doc)
    assert e.path == HCM + ".http_filters[0]"
    assert "envoy.filters.http.cors is not supported yet" in e.reason


def test_tcp_proxy_is_not_supported():
    doc = config()
    chain(doc)["filters"][0] = {"name": "envoy.filters.network.tcp_proxy"}
    e = refusal(doc)
    assert e.path == FILTER and "cyvoy is an HTTP proxy" in e.reason


def test_typed_struct_wrappers_are_not_supported():
    doc = config()
    hcm(doc)["http_filters"][0]["typed_config"] = {
        "@type": "type.googleapis.com/udpa.type.v1.TypedStruct"}
    e = refusal(doc)
    assert e.path == HCM + ".http_filters[0].typed_config.@type"
    assert "not supported by cyvoy" in e.reason


def test_router_options_other_than_defaults_are_not_supported():
    doc = config()
    hcm(doc)["http_filters"][0]["typed_config"]["suppress_envoy_headers"] = True
    e = refusal(doc)
    assert e.path == HCM + ".http_filters[0].typed_config.suppress_envoy_headers"
    assert "not supported by cyvoy" in e.reason


# --- listeners ---------------------------------------------------------------------------------

def test_unnamed_listener_is_named_by_its_index():
    doc = config()
    del listener(doc)["name"]
    assert load_dict(doc).listeners[0].name == "listener_0"


def test_listener_address_is_required():
    doc = config()
    del listener(doc)["address"]
    assert str(refusal(doc)) == f"{LISTENER}.address: missing required field"


def test_listener_address_needs_a_socket_address():
    doc = config()
    listener(doc)["address"] = {}
    assert str(refusal(doc)) == f"{LISTENER}.address.socket_address: missing required field"


def test_unix_socket_listener_is_not_supported_yet():
    doc = config()
    listener(doc)["address"] = {"pipe": {"path": "/tmp/envoy.sock"}}
    e = refusal(doc)
    assert e.path == LISTENER + ".address.pipe" and "not supported by cyvoy" in e.reason


def test_listener_address_must_be_an_ip():
    doc = config()
    listener(doc)["address"]["socket_address"]["address"] = "localhost"
    e = refusal(doc)
    assert e.path == LISTENER + ".address.socket_address.address"
    assert "not an IP address" in e.reason


def test_ipv6_listener_address_is_accepted():
    doc = config()
    listener(doc)["address"]["socket_address"]["address"] = "::"
    assert load_dict(doc).listeners[0].address == "::"


def test_udp_listener_is_not_supported():
    doc = config()
    listener(doc)["address"]["socket_address"]["protocol"] = "UDP"
    e = refusal(doc)
    assert e.path == LISTENER + ".address.socket_address.protocol"
    assert "not supported by cyvoy (UDP" in e.reason


def test_duplicate_listener_names_are_refused():
    doc = config()
    second = copy.deepcopy(listener(doc))
    second["address"]["socket_address"]["port_value"] = 8081
    doc["static_resources"]["listeners"].append(second)
    e = refusal(doc)
    assert e.path == "static_resources.listeners[1].name"
    assert "duplicate listener name 'ingress'" in e.reason


def test_two_listeners_on_one_address_are_refused():
    doc = config()
    second = copy.deepcopy(listener(doc))
    second["name"] = "other"
    doc["static_resources"]["listeners"].append(second)
    e = refusal(doc)
    assert e.path == "static_resources.listeners[1].address"
    assert "127.0.0.1:8080 is already the address of" in e.reason


def test_listener_needs_a_filter_chain():
    doc = config()
    listener(doc)["filter_chains"] = []
    e = refusal(doc)
    assert e.path == LISTENER + ".filter_chains" and "needs a filter chain" in e.reason


def test_a_second_plaintext_filter_chain_is_refused():
    # chains are told apart by SNI only, which needs TLS
    doc = config()
    listener(doc)["filter_chains"].append(copy.deepcopy(chain(doc)))
    e = refusal(doc)
    assert e.path == CHAIN + ".transport_socket" and "server name" in e.reason


def test_server_names_without_tls_are_refused():
    doc = config()
    chain(doc)["filter_chain_match"] = {"server_names": ["example.com"]}
    e = refusal(doc)
    assert e.path == CHAIN + ".filter_chain_match.server_names" and "TLS" in e.reason


def test_other_filter_chain_match_fields_are_refused():
    doc = config()
    chain(doc)["filter_chain_match"] = {"destination_port": 443}
    e = refusal(doc)
    assert e.path == CHAIN + ".filter_chain_match.destination_port" and "server_names" in e.reason


def test_second_connection_manager_is_not_supported():
    doc = config()
    chain(doc)["filters"].append(copy.deepcopy(chain(doc)["filters"][0]))
    e = refusal(doc)
    assert e.path == CHAIN + ".filters" and "at most envoy.filters.network.connection_limit" in e.reason


def test_overload_manager_actions_are_not_supported():
    doc = config()
    doc["overload_manager"] = {"actions": [{"name": "envoy.overload_actions.stop_accepting_requests"}]}
    e = refusal(doc)
    assert e.path == "overload_manager.actions" and e.reason.startswith("not supported by cyvoy")


def test_fixed_heap_resource_monitor_is_not_supported():
    doc = config()
    doc["overload_manager"] = {"resource_monitors": [{"name": "envoy.resource_monitors.fixed_heap"}]}
    e = refusal(doc)
    assert e.path == "overload_manager.resource_monitors[0]" and "global_downstream_max_connections" in e.reason


def test_listener_buffer_limit_is_not_supported_yet():
    doc = config()
    listener(doc)["per_connection_buffer_limit_bytes"] = 32768
    e = refusal(doc)
    assert e.path == LISTENER + ".per_connection_buffer_limit_bytes"
    assert "not supported by cyvoy" in e.reason


def test_tls_inspector_listener_filter_is_accepted():
    doc = config()
    listener(doc)["listener_filters"] = [{"name": "envoy.filters.listener.tls_inspector"}]
    assert load_dict(doc).listeners[0].name


def test_other_listener_filters_are_refused():
    doc = config()
    listener(doc)["listener_filters"] = [{"name": "envoy.filters.listener.proxy_protocol"}]
    e = refusal(doc)
    assert e.path == LISTENER + ".listener_filters[0]" and "tls_inspector" in e.reason


# --- HTTP connection manager -------------------------------------------------------------------

@pytest.mark.parametrize("attribute, default", [
    ("codec_type", "AUTO"),
    ("http_filters", ["envoy.filters.http.router"]),
    ("max_request_headers_kb", 60),
    ("idle_timeout", 3600.0),
    ("request_headers_timeout", 10.0),       # cyvoy's own; Envoy has none
    ("stream_idle_timeout", 300.0),
    ("request_timeout", 0.0),
    ("use_remote_address", False),
    ("xff_num_trusted_hops", 0),
    ("generate_request_id", True),
    ("server_name", "cyvoy"),
])
def test_connection_manager_defaults(attribute, default):
    assert getattr(load_dict(config()).listeners[0].hcm, attribute) == default


def test_connection_manager_settings_are_read():
    doc = config()
    hcm(doc).update(codec_type="HTTP1", max_request_headers_kb=96, request_headers_timeout="0s",
                    stream_idle_timeout="30s", request_timeout="60s", use_remote_address=True,
                    xff_num_trusted_hops=2, generate_request_id=False, server_name="edge",
                    common_http_protocol_options={"idle_timeout": "0.840s"})
    got = load_dict(doc).listeners[0].hcm
    assert (got.codec_type, got.max_request_headers_kb, got.request_headers_timeout,
            got.stream_idle_timeout, got.request_timeout, got.use_remote_address,
            got.xff_num_trusted_hops, got.generate_request_id, got.server_name,
            got.idle_timeout) == ("HTTP1", 96, 0.0, 30.0, 60.0, True, 2, False, "edge", 0.84)


def test_stat_prefix_is_required():
    doc = config()
    del hcm(doc)["stat_prefix"]
    assert str(refusal(doc)) == f"{HCM}.stat_prefix: missing required field"


def test_max_request_headers_kb_is_at_most_8192():
    doc = config()
    hcm(doc)["max_request_headers_kb"] = 8193
    e = refusal(doc)
    assert e.path == HCM + ".max_request_headers_kb" and "at most 8192" in e.reason


def test_http2_codec_is_read():
    doc = config()
    hcm(doc)["codec_type"] = "HTTP2"
    hcm(doc)["http2_protocol_options"] = {"max_concurrent_streams": 10}
    h = load_dict(doc).listeners[0].hcm
    assert h.codec_type == "HTTP2" and h.http2_protocol_options["max_concurrent_streams"] == 10


@pytest.mark.parametrize("codec, words", [("HTTP3", "HTTP/3 is not supported")])
def test_http3_codec_is_not_supported(codec, words):
    doc = config()
    hcm(doc)["codec_type"] = codec
    e = refusal(doc)
    assert e.path == HCM + ".codec_type"
    assert e.reason.startswith("not supported by cyvoy") and words in e.reason


def test_rds_is_not_supported():
    doc = config()
    del hcm(doc)["route_config"]
    hcm(doc)["rds"] = {"route_config_name": "r"}
    e = refusal(doc)
    assert e.path == HCM + ".rds" and "RDS" in e.reason


def test_route_config_is_required():
    doc = config()
    del hcm(doc)["route_config"]
    assert str(refusal(doc)) == f"{HCM}.route_config: missing required field"


def test_router_must_be_the_last_http_filter():
    doc = config()
    hcm(doc)["http_filters"].append({"name": "envoy.filters.http.router"})
    e = refusal(doc)
    assert e.path == HCM + ".http_filters[0]" and "must be the last HTTP filter" in e.reason


def test_http_filters_must_include_the_router():
    doc = config()
    hcm(doc)["http_filters"] = []
    e = refusal(doc)
    assert e.path == HCM + ".http_filters" and "envoy.filters.http.router" in e.reason


def test_connect_upgrade_type_is_refused():
    doc = config()
    hcm(doc)["upgrade_configs"] = [{"upgrade_type": "websocket"}, {"upgrade_type": "CONNECT"}]
    e = refusal(doc)
    assert e.path == HCM + ".upgrade_configs[1].upgrade_type" and "CONNECT" in e.reason


def test_upgrade_configs_are_read_by_type():
    doc = config()
    hcm(doc)["upgrade_configs"] = [{"upgrade_type": "WebSocket"}, {"upgrade_type": "foo", "enabled": False}]
    assert load_dict(doc).listeners[0].hcm.upgrades == {"websocket": True, "foo": False}


@pytest.mark.parametrize("field, value", [("access_log_options",
                                           {"flush_access_log_on_new_request": True})])
def test_connection_manager_features_not_supported_yet(field, value):
    doc = config()
    hcm(doc)[field] = value
    e = refusal(doc)
    assert e.path == f"{HCM}.{field}" and "not supported" in e.reason


def test_max_headers_count_other_than_envoys_default_is_not_supported_yet():
    doc = config()
    hcm(doc)["common_http_protocol_options"] = {"max_headers_count": 50}
    e = refusal(doc)
    assert e.path == HCM + ".common_http_protocol_options.max_headers_count"
    assert "not supported by cyvoy" in e.reason


# --- downstream TLS ----------------------------------------------------------------------------

def test_tls_certificate_given_inline_is_read_into_bytes():
    tls = load_dict(with_tls(config())).listeners[0].tls
    assert tls.certificates[0].certificate_chain == CERT.encode()
    assert tls.certificates[0].private_key == KEY.encode()


def test_tls_certificate_is_read_from_a_file_at_load_time(tmp_path):
    (tmp_path / "cert.pem").write_text(CERT)
    (tmp_path / "key.pem").write_text(KEY)
    doc = with_tls(config(), tls_certificates=[
        {"certificate_chain": {"filename": str(tmp_path / "cert.pem")},
         "private_key": {"filename": str(tmp_path / "key.pem")}}])
    assert load_dict(doc).listeners[0].tls.certificates[0].private_key == KEY.encode()


def test_tls_certificate_may_be_inline_base64_bytes():
    doc = with_tls(config(), tls_certificates=[
        {"certificate_chain": {"inline_bytes": base64.b64encode(CERT.encode()).decode()},
         "private_key": {"inline_string": KEY}}])
    assert load_dict(doc).listeners[0].tls.certificates[0].certificate_chain == CERT.encode()


def test_unreadable_certificate_file_is_refused(tmp_path):
    doc = with_tls(config(), tls_certificates=[
        {"certificate_chain": {"filename": str(tmp_path / "missing.pem")},
         "private_key": {"inline_string": KEY}}])
    e = refusal(doc)
    assert e.path == TLS + ".common_tls_context.tls_certificates[0].certificate_chain.filename"
    assert "cannot read" in e.reason


def test_certificate_must_be_pem():
    doc = with_tls(config(), tls_certificates=[
        {"certificate_chain": {"inline_string": "garbage"}, "private_key": {"inline_string": KEY}}])
    e = refusal(doc)
    assert e.path == TLS + ".common_tls_context.tls_certificates[0].certificate_chain"
    assert "PEM certificate" in e.reason


def test_tls_listener_needs_a_certificate():
    e = refusal(with_tls(config(), tls_certificates=[]))
    assert e.path == TLS + ".common_tls_context.tls_certificates"
    assert "at least one certificate" in e.reason


def test_alpn_http11_is_accepted():
    tls = load_dict(with_tls(config(), alpn_protocols=["http/1.1"])).listeners[0].tls
    assert tls.alpn_protocols == ["http/1.1"]


def test_alpn_h2_is_read():
    b = load_dict(with_tls(config(), alpn_protocols=["h2", "http/1.1"]))
    assert b.listeners[0].tls.alpn_protocols == ["h2", "http/1.1"]


def test_alpn_as_one_comma_separated_entry_is_split_as_envoy_does():
    b = load_dict(with_tls(config(), alpn_protocols=["h2,http/1.1"]))
    assert b.listeners[0].tls.alpn_protocols == ["h2", "http/1.1"]


def test_alpn_other_than_h2_and_http11_is_refused():
    e = refusal(with_tls(config(), alpn_protocols=["h3"]))
    assert e.path == TLS + ".common_tls_context.alpn_protocols[0]" and "not supported by cyvoy" in e.reason


def test_client_certificate_subject_alt_name_matching_is_not_supported_yet():
    e = refusal(with_tls(config(), validation_context={"match_typed_subject_alt_names": []}))
    assert e.path == TLS + ".common_tls_context.validation_context.match_typed_subject_alt_names"


def test_tls_ecdh_curves_are_not_supported():
    e = refusal(with_tls(config(), tls_params={"ecdh_curves": ["X25519"]}))
    assert e.path == TLS + ".common_tls_context.tls_params.ecdh_curves" and "not supported" in e.reason


def test_upstream_tls_context_cannot_configure_a_listener():
    doc = with_tls(config())
    chain(doc)["transport_socket"]["typed_config"]["@type"] = TLS_TYPE.replace("Downstream",
                                                                               "Upstream")
    e = refusal(doc)
    assert e.path == TLS + ".@type" and "DownstreamTlsContext" in e.reason


def test_raw_buffer_transport_socket_is_plaintext():
    doc = config()
    chain(doc)["transport_socket"] = {"name": "envoy.transport_sockets.raw_buffer"}
    assert load_dict(doc).listeners[0].tls is None


# --- admin -------------------------------------------------------------------------------------

def test_admin_address_is_read():
    doc = config()
    doc["admin"] = {"address": {"socket_address": {"address": "0.0.0.0", "port_value": 9901}}}
    admin = load_dict(doc).admin
    assert (admin.address, admin.port) == ("0.0.0.0", 9901)


def test_admin_without_an_address_starts_no_admin_server():
    doc = config()
    doc["admin"] = {}
    assert load_dict(doc).admin is None


def test_admin_access_log_to_dev_null_is_accepted():
    doc = config()
    doc["admin"] = {"access_log_path": "/dev/null",
                    "address": {"socket_address": {"address": "127.0.0.1", "port_value": 9901}}}
    assert load_dict(doc).admin.port == 9901


def test_admin_access_log_to_a_file_is_not_supported():
    doc = config()
    doc["admin"] = {"access_log_path": "/tmp/admin.log"}
    e = refusal(doc)
    assert e.path == "admin.access_log_path" and "not supported by cyvoy" in e.reason


def test_admin_profile_path_is_not_supported():
    doc = config()
    doc["admin"] = {"profile_path": "/tmp/envoy.prof"}
    e = refusal(doc)
    assert e.path == "admin.profile_path" and "not supported by cyvoy" in e.reason


# --- node and runtime --------------------------------------------------------------------------

def test_node_id_and_cluster_are_kept():
    doc = config()
    doc["node"] = {"id": "front-1", "cluster": "front"}
    b = load_dict(doc)
    assert (b.node_id, b.node_cluster) == ("front-1", "front")


def test_node_metadata_is_not_supported():
    doc = config()
    doc["node"] = {"id": "x", "metadata": {"k": "v"}}
    e = refusal(doc)
    assert e.path == "node.metadata" and "not supported by cyvoy" in e.reason


def runtime_doc(*layers) -> dict:
    doc = config()
    doc["layered_runtime"] = {"layers": list(layers)}
    return doc


def test_static_runtime_layer_is_flattened_with_dots():
    b = load_dict(runtime_doc({"name": "l0", "static_layer": {
        "envoy": {"resource_limits": {"listener": {"ingress": {"connection_limit": 100}}}}}}))
    assert b.runtime == {"envoy.resource_limits.listener.ingress.connection_limit": 100}


def test_listener_connection_limit_key_raises_no_warning():
    b = load_dict(runtime_doc({"name": "l0", "static_layer": {
        "envoy.resource_limits.listener.ingress.connection_limit": 100}}))
    assert b.warnings == []


def test_connection_limit_for_a_listener_that_does_not_exist_is_kept_with_a_warning():
    b = load_dict(runtime_doc({"name": "l0", "static_layer": {
        "envoy.resource_limits.listener.nosuch.connection_limit": 100}}))
    assert b.runtime == {"envoy.resource_limits.listener.nosuch.connection_limit": 100}
    assert len(b.warnings) == 1 and "no listener named 'nosuch'" in b.warnings[0]


def test_other_runtime_keys_are_kept_with_a_warning():
    b = load_dict(runtime_doc({"name": "l0",
                               "static_layer": {"health_check": {"min_interval": 5}}}))
    assert b.runtime == {"health_check.min_interval": 5}
    assert len(b.warnings) == 1
    assert "health_check.min_interval" in b.warnings[0] and "no effect" in b.warnings[0]


def test_later_runtime_layers_override_earlier_ones():
    b = load_dict(runtime_doc({"name": "a", "static_layer": {"x": {"y": 1}}},
                              {"name": "b", "static_layer": {"x.y": 2}}))
    assert b.runtime == {"x.y": 2}


def test_connection_limit_must_be_a_non_negative_integer():
    e = refusal(runtime_doc({"name": "l0", "static_layer": {
        "envoy.resource_limits.listener.ingress.connection_limit": "many"}}))
    assert e.path == "layered_runtime.envoy.resource_limits.listener.ingress.connection_limit"
    assert "non-negative integer" in e.reason


@pytest.mark.parametrize("kind", ["admin_layer", "disk_layer", "rtds_layer"])
def test_runtime_layers_other_than_static_are_not_supported(kind):
    e = refusal(runtime_doc({"name": "l0", kind: {}}))
    assert e.path == f"layered_runtime.layers[0].{kind}" and "not supported by cyvoy" in e.reason


# --- Envoy's example configurations ------------------------------------------------------------

@needs_examples
def test_front_proxy_example_loads_unchanged():
    b = load_file(str(EXAMPLES / "front-proxy/envoy.yaml"))
    assert [(l.name, l.port, l.tls is not None) for l in b.listeners] == [
        ("listener_0", 8080, False), ("listener_1", 8443, True)]
    assert {n: c.type for n, c in b.clusters.items()} == {"service1-envoy": "STRICT_DNS",
                                                          "service2-envoy": "STRICT_DNS"}
    assert b.clusters["service1-envoy"].endpoints[0].address == "service-envoy-1"
    assert b.listeners[1].tls.certificates[0].certificate_chain.startswith(
        b"-----BEGIN CERTIFICATE-----")
    assert (b.admin.address, b.admin.port) == ("0.0.0.0", 8001)
    assert b.runtime == {
        "envoy.resource_limits.listener.example_listener_name.connection_limit": 10000}
    assert ["no listener named 'example_listener_name'" in w for w in b.warnings] == [True]


@needs_examples
def test_service_envoy_example_loads_unchanged():
    b = load_file(str(EXAMPLES / "front-proxy/service-envoy.yaml"))
    route = b.listeners[0].hcm.route_config.virtual_hosts[0].routes[0]
    assert (route.match.value, route.action.cluster) == ("/service/1", "service1")


@needs_examples
def test_tls_termination_example_loads_unchanged():
    b = load_file(str(EXAMPLES / "tls/envoy-https-http.yaml"))
    assert b.listeners[0].tls is not None


@needs_examples
def test_grpc_bridge_client_example_loads_unchanged():
    b = load_file(str(EXAMPLES / "grpc-bridge/client/envoy-proxy.yaml"))
    h = b.listeners[0].hcm
    assert h.add_user_agent and [f.name for f in h.filters] == ["envoy.filters.http.grpc_http1_bridge"]


@needs_examples
def test_grpc_bridge_server_example_loads_unchanged():
    # its route matches gRPC requests (match.grpc) and its cluster speaks HTTP/2
    b = load_file(str(EXAMPLES / "grpc-bridge/server/envoy-proxy.yaml"))
    assert b.clusters["backend_grpc_service"].upstream_protocol == "HTTP2"
