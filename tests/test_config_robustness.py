"""proxy.config never fails with anything but ConfigError, whatever the document holds."""
import copy

from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.config import ConfigError, load_dict
from proxy.config.loader import build_bootstrap

HCM_TYPE = ("type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3."
            "HttpConnectionManager")

# A config that touches most builders: TLS, every route action, header edits and matchers,
# weighted clusters, DNS and static clusters, later-feature cluster fields, admin and runtime.
RICH = {
    "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 9901}}},
    "layered_runtime": {"layers": [{"name": "l", "static_layer": {"a": {"b": 1}}}]},
    "static_resources": {
        "listeners": [{
            "address": {"socket_address": {"address": "0.0.0.0", "port_value": 8443}},
            "filter_chains": [{
                "transport_socket": {"name": "envoy.transport_sockets.tls", "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3."
                             "DownstreamTlsContext",
                    "common_tls_context": {"alpn_protocols": ["http/1.1"], "tls_certificates": [{
                        "certificate_chain": {"inline_string": "-----BEGIN CERTIFICATE-----"},
                        "private_key": {"inline_string": "-----BEGIN PRIVATE KEY-----"}}]}}},
                "filters": [{"name": "envoy.filters.network.http_connection_manager",
                             "typed_config": {
                                 "@type": HCM_TYPE, "stat_prefix": "s",
                                 "common_http_protocol_options": {"idle_timeout": "1s"},
                                 "route_config": {
                                     "response_headers_to_add": [
                                         {"header": {"key": "x", "value": "1"}, "append": False}],
                                     "virtual_hosts": [{
                                         "name": "v", "domains": ["*.example.com", "*"],
                                         "routes": [
                                             {"match": {"prefix": "/", "headers": [
                                                 {"name": "x", "string_match": {"exact": "a"}}]},
                                              "route": {"weighted_clusters": {"clusters": [
                                                  {"name": "a", "weight": 1},
                                                  {"name": "b", "weight": 2}]}}},
                                             {"match": {"safe_regex": {"regex": "/r.*"}},
                                              "redirect": {"https_redirect": True}},
                                             {"match": {"path": "/d"}, "direct_response": {
                                                 "status": 200, "body": {"inline_string": "ok"}}},
                                         ]}]},
                                 "http_filters": [{"name": "envoy.filters.http.router"}]}}]}],
        }],
        "clusters": [
            {"name": "a", "type": "STRICT_DNS", "load_assignment": {
                "cluster_name": "a", "endpoints": [{"lb_endpoints": [{"endpoint": {
                    "hostname": "h",
                    "address": {"socket_address": {"address": "a.internal", "port_value": 80}},
                    "health_check_config": {"port_value": 81}}}]}]}},
            {"name": "b", "lb_policy": "MAGLEV", "maglev_lb_config": {},
             "health_checks": [{"timeout": "1s", "interval": "1s", "unhealthy_threshold": 1,
                                "healthy_threshold": 1, "tcp_health_check": {}}],
             "outlier_detection": {}, "circuit_breakers": {"thresholds": [{}]},
             "load_assignment": {"cluster_name": "b", "endpoints": [{"lb_endpoints": [
                 {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1",
                                                              "port_value": 80}}}}]}]}},
        ],
    },
}

scalars = (st.none() | st.booleans() | st.integers(-2**65, 2**65) | st.floats(allow_nan=False)
           | st.text(max_size=6)
           | st.sampled_from(["5s", "0s", "-1s", "*", "/", "ROUND_ROBIN", "%A%", "h2", "::1"]))
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3)
    | st.dictionaries(st.sampled_from(["name", "value", "@type", "regex", "cluster", "weight"])
                      | st.text(max_size=6), inner, max_size=3),
    max_leaves=6)


def _places(node, trail=()):
    """Every (container, key) in the document."""
    if isinstance(node, dict):
        for key, child in node.items():
            yield trail + (key,)
            yield from _places(child, trail + (key,))
    elif isinstance(node, list):
        for i, child in enumerate(node):
            yield trail + (i,)
            yield from _places(child, trail + (i,))


PLACES = list(_places(RICH))


def test_the_rich_config_itself_is_valid_apart_from_the_support_gate():
    build_bootstrap(copy.deepcopy(RICH))


@settings(max_examples=300, deadline=None)
@given(place=st.sampled_from(PLACES), value=values)
def test_any_value_anywhere_loads_or_raises_config_error(place, value):
    doc = copy.deepcopy(RICH)
    node = doc
    for key in place[:-1]:
        node = node[key]
    node[place[-1]] = value
    try:
        load_dict(doc)
    except ConfigError as e:
        assert e.reason and str(e) == f"{e.path}: {e.reason}"
