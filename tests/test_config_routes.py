"""proxy.config: route_config, virtual hosts, route matching, route actions and header edits.

Each test is one rule; refusals assert the exact path and the key words of the reason.
"""
import copy

import pytest

from proxy.config import ConfigError, load_dict
from proxy.config.model import DirectResponse, Redirect, RouteAction

HCM_TYPE = ("type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3."
            "HttpConnectionManager")
RC = "static_resources.listeners[0].filter_chains[0].filters[0].typed_config.route_config"
VHOST = RC + ".virtual_hosts[0]"
ROUTE = VHOST + ".routes[0]"


def config(*routes, domains=("*",)) -> dict:
    """One listener whose single virtual host has `routes` (default: / -> backend); clusters
    "backend" and "canary"."""
    routes = list(routes) or [{"match": {"prefix": "/"}, "route": {"cluster": "backend"}}]
    endpoint = {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1",
                                                            "port_value": 9000}}}}
    return {"static_resources": {
        "listeners": [{
            "address": {"socket_address": {"address": "127.0.0.1", "port_value": 8080}},
            "filter_chains": [{"filters": [{
                "name": "envoy.filters.network.http_connection_manager",
                "typed_config": {
                    "@type": HCM_TYPE, "stat_prefix": "ingress",
                    "route_config": {"name": "local", "virtual_hosts": [
                        {"name": "all", "domains": list(domains), "routes": routes}]},
                    "http_filters": [{"name": "envoy.filters.http.router"}],
                }}]}],
        }],
        "clusters": [
            {"name": name, "load_assignment": {"cluster_name": name,
                                               "endpoints": [{"lb_endpoints": [endpoint]}]}}
            for name in ("backend", "canary")],
    }}


def route_config(doc: dict) -> dict:
    return doc["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0][
        "typed_config"]["route_config"]


def vhost(doc: dict) -> dict:
    return route_config(doc)["virtual_hosts"][0]


def route(doc: dict) -> dict:
    return vhost(doc)["routes"][0]


def built_route_config(doc: dict):
    return load_dict(doc).listeners[0].hcm.route_config


def built_route(doc: dict):
    return built_route_config(doc).virtual_hosts[0].routes[0]


def refusal(doc) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load_dict(doc)
    return info.value


def add_vhost(doc: dict, name: str, domains: list) -> None:
    route_config(doc)["virtual_hosts"].append(
        {"name": name, "domains": domains, "routes": copy.deepcopy(vhost(doc)["routes"])})


# --- virtual host domains ----------------------------------------------------------------------

@pytest.mark.parametrize("domain", ["*", "example.com", "*.example.com", "*-bar.example.com",
                                    "example.*", "foo-*", "example.com:8080"])
def test_envoy_domain_forms_are_accepted(domain):
    assert built_route_config(config(domains=[domain])).virtual_hosts[0].domains == [domain]


def test_domains_are_lower_cased():
    assert built_route_config(config(domains=["Example.COM"])).virtual_hosts[0].domains == [
        "example.com"]


def test_wildcard_in_the_middle_of_a_domain_is_refused():
    e = refusal(config(domains=["foo.*.com"]))
    assert e.path == VHOST + ".domains[0]" and "may only start" in e.reason


def test_domain_with_two_wildcards_is_refused():
    e = refusal(config(domains=["*.example.*"]))
    assert e.path == VHOST + ".domains[0]" and "at most one '*'" in e.reason


def test_domains_are_required():
    doc = config()
    del vhost(doc)["domains"]
    assert str(refusal(doc)) == f"{VHOST}.domains: missing required field"


def test_domains_may_not_be_empty():
    e = refusal(config(domains=[]))
    assert e.path == VHOST + ".domains" and "at least 1" in e.reason


def test_a_domain_may_appear_in_only_one_virtual_host():
    doc = config(domains=["example.com"])
    add_vhost(doc, "second", ["www.example.com", "EXAMPLE.com"])
    e = refusal(doc)
    assert e.path == RC + ".virtual_hosts[1].domains[1]"
    assert "duplicate domain 'EXAMPLE.com'" in e.reason and "'all'" in e.reason


def test_only_one_virtual_host_may_match_everything():
    doc = config()
    add_vhost(doc, "second", ["*"])
    e = refusal(doc)
    assert e.path == RC + ".virtual_hosts[1].domains[0]" and "duplicate domain '*'" in e.reason


def test_virtual_host_name_is_required():
    doc = config()
    del vhost(doc)["name"]
    assert str(refusal(doc)) == f"{VHOST}.name: missing required field"


@pytest.mark.parametrize("field, value", [("require_tls", "ALL"),
                                          ("cors", {}), ("rate_limits", [])])
def test_virtual_host_features_not_supported_yet(field, value):
    doc = config()
    vhost(doc)[field] = value
    e = refusal(doc)
    assert e.path == f"{VHOST}.{field}" and "not supported by cyvoy" in e.reason


def test_require_tls_none_is_accepted():
    doc = config()
    vhost(doc)["require_tls"] = "NONE"
    load_dict(doc)


# --- route actions: exactly one ----------------------------------------------------------------

def test_route_needs_an_action():
    doc = config({"match": {"prefix": "/"}})
    e = refusal(doc)
    assert e.path == ROUTE
    assert "exactly one of 'route', 'redirect', 'direct_response' is required" in e.reason


def test_route_may_not_have_two_actions():
    doc = config({"match": {"prefix": "/"}, "route": {"cluster": "backend"},
                  "direct_response": {"status": 200}})
    e = refusal(doc)
    assert e.path == ROUTE and "'route' and 'direct_response' cannot both be set" in e.reason


def test_route_match_is_required():
    doc = config({"route": {"cluster": "backend"}})
    assert str(refusal(doc)) == f"{ROUTE}.match: missing required field"


# --- route matching ----------------------------------------------------------------------------

def test_route_name_defaults_to_empty():
    assert built_route(config()).name == ""


def test_path_match_is_exact():
    match = built_route(config({"match": {"path": "/health"},
                                "route": {"cluster": "backend"}})).match
    assert (match.kind, match.value) == ("path", "/health")


def test_safe_regex_is_compiled_for_a_full_match():
    match = built_route(config({"match": {"safe_regex": {"google_re2": {}, "regex": "/v[0-9]+/.*"}},
                                "route": {"cluster": "backend"}})).match
    assert (match.kind, match.value) == ("safe_regex", "/v[0-9]+/.*")
    assert match.regex.fullmatch("/v2/users") and not match.regex.fullmatch("/x/v2/users")


def test_safe_regex_needs_no_google_re2_field():
    match = built_route(config({"match": {"safe_regex": {"regex": "/a.*"}},
                                "route": {"cluster": "backend"}})).match
    assert match.regex.fullmatch("/abc")


@pytest.mark.parametrize("regex, words", [("/(?=admin)", "lookahead"),
                                          ("/(?<!x)y", "negative lookbehind"),
                                          ("/(a)\\1", "backreference"),
                                          ("/a*+", "possessive")])
def test_regex_constructs_re2_lacks_are_refused(regex, words):
    doc = config({"match": {"safe_regex": {"regex": regex}}, "route": {"cluster": "backend"}})
    e = refusal(doc)
    assert e.path == ROUTE + ".match.safe_regex.regex"
    assert words in e.reason and "RE2" in e.reason


def test_re2_end_of_text_escape_is_understood():
    match = built_route(config({"match": {"safe_regex": {"regex": "/a\\z"}},
                                "route": {"cluster": "backend"}})).match
    assert match.regex.fullmatch("/a")


def test_re2_named_group_syntax_is_understood():
    match = built_route(config({"match": {"safe_regex": {"regex": "/(?<id>[0-9]+)"}},
                                "route": {"cluster": "backend"}})).match
    assert match.regex.fullmatch("/42").group("id") == "42"


def regex_match(regex: str):
    return built_route(config({"match": {"safe_regex": {"regex": regex}},
                               "route": {"cluster": "backend"}})).match.regex


def test_re2_posix_classes_are_understood():
    assert regex_match("/[[:alpha:]]+").fullmatch("/abc")
    assert not regex_match("/[[:alpha:]]+").fullmatch("/a:")


def test_re2_quoted_literal_text_is_understood():
    assert regex_match("/\\Qa.b\\E").fullmatch("/a.b")
    assert not regex_match("/\\Qa.b\\E").fullmatch("/axb")


def test_perl_classes_are_ascii_only_as_in_re2():
    assert not regex_match("/\\d+").fullmatch("/\u0661\u0662")


def test_invalid_regex_is_refused():
    doc = config({"match": {"safe_regex": {"regex": "/(unclosed"}},
                  "route": {"cluster": "backend"}})
    e = refusal(doc)
    assert e.path == ROUTE + ".match.safe_regex.regex" and "invalid regex" in e.reason


def test_match_needs_a_path_specifier():
    doc = config({"match": {"headers": [{"name": "x"}]}, "route": {"cluster": "backend"}})
    e = refusal(doc)
    assert e.path == ROUTE + ".match"
    assert "exactly one of 'prefix', 'path', 'safe_regex' is required" in e.reason


def test_match_may_not_have_two_path_specifiers():
    doc = config({"match": {"prefix": "/", "path": "/x"}, "route": {"cluster": "backend"}})
    e = refusal(doc)
    assert e.path == ROUTE + ".match" and "'prefix' and 'path' cannot both be set" in e.reason


def test_case_sensitive_defaults_to_true():
    assert built_route(config()).match.case_sensitive is True


def test_case_sensitive_false_is_read():
    doc = config({"match": {"prefix": "/A", "case_sensitive": False},
                  "route": {"cluster": "backend"}})
    assert built_route(doc).match.case_sensitive is False


@pytest.mark.parametrize("field, value", [
    ("query_parameters", [{"name": "debug", "present_match": True}]),
    ("path_separated_prefix", "/api"),
    ("path_match_policy", {"name": "x"}),
])
def test_route_match_features_not_supported_yet(field, value):
    match = {"prefix": "/", field: value} if field not in ("path_separated_prefix",
                                                            "path_match_policy") else {field: value}
    e = refusal(config({"match": match, "route": {"cluster": "backend"}}))
    assert e.path == f"{ROUTE}.match.{field}" and "not supported by cyvoy" in e.reason


# --- header matchers ---------------------------------------------------------------------------

def header_matcher(matcher: dict):
    doc = config({"match": {"prefix": "/", "headers": [matcher]},
                  "route": {"cluster": "backend"}})
    return built_route(doc).match.headers[0]


@pytest.mark.parametrize("field, kind", [("exact_match", "exact"), ("prefix_match", "prefix"),
                                         ("suffix_match", "suffix"),
                                         ("contains_match", "contains")])
def test_legacy_header_matchers(field, kind):
    m = header_matcher({"name": "X-Env", field: "prod"})
    assert (m.name, m.kind, m.value, m.invert_match) == ("x-env", kind, "prod", False)


@pytest.mark.parametrize("field", ["exact", "prefix", "suffix", "contains"])
def test_string_match_header_matchers_with_ignore_case(field):
    m = header_matcher({"name": "x-env", "string_match": {field: "Prod", "ignore_case": True}})
    assert (m.kind, m.value, m.ignore_case) == (field, "Prod", True)


def test_header_regex_matcher_is_compiled():
    m = header_matcher({"name": "x-id", "safe_regex_match": {"regex": "[0-9]+"}})
    assert m.kind == "regex" and m.regex.fullmatch("123")


def test_string_match_regex_is_compiled():
    m = header_matcher({"name": "x-id", "string_match": {"safe_regex": {"regex": "[0-9]+"}}})
    assert m.kind == "regex" and m.regex.fullmatch("123")


def test_present_match_is_read():
    m = header_matcher({"name": "x-debug", "present_match": False})
    assert (m.kind, m.value) == ("present", False)


def test_header_matcher_without_a_specifier_means_present():
    m = header_matcher({"name": "x-debug"})
    assert (m.kind, m.value) == ("present", True)


def test_invert_match_is_read():
    assert header_matcher({"name": "x", "exact_match": "1", "invert_match": True}).invert_match


def test_range_match_is_not_supported_yet():
    doc = config({"match": {"prefix": "/", "headers": [{"name": "x", "range_match": {}}]},
                  "route": {"cluster": "backend"}})
    e = refusal(doc)
    assert e.path == ROUTE + ".match.headers[0].range_match" and "not supported" in e.reason


def test_header_matcher_allows_pseudo_headers():
    assert header_matcher({"name": ":method", "exact_match": "POST"}).name == ":method"


def test_header_matcher_name_must_be_a_header_name():
    doc = config({"match": {"prefix": "/", "headers": [{"name": "bad name"}]},
                  "route": {"cluster": "backend"}})
    e = refusal(doc)
    assert e.path == ROUTE + ".match.headers[0].name" and "invalid header name" in e.reason


# --- route action ------------------------------------------------------------------------------

def test_route_to_a_missing_cluster_is_refused_with_a_suggestion():
    e = refusal(config({"match": {"prefix": "/"}, "route": {"cluster": "backnd"}}))
    assert e.path == ROUTE + ".route.cluster"
    assert "cluster 'backnd' does not exist" in e.reason and "did you mean 'backend'?" in e.reason


def test_route_action_needs_a_cluster():
    e = refusal(config({"match": {"prefix": "/"}, "route": {"timeout": "1s"}}))
    assert e.path == ROUTE + ".route"
    assert "exactly one of 'cluster', 'cluster_header', 'weighted_clusters' is required" in e.reason


def test_cluster_and_weighted_clusters_are_exclusive():
    e = refusal(config({"match": {"prefix": "/"}, "route": {
        "cluster": "backend",
        "weighted_clusters": {"clusters": [{"name": "canary", "weight": 1}]}}}))
    assert e.path == ROUTE + ".route"
    assert "'cluster' and 'weighted_clusters' cannot both be set" in e.reason


def test_route_timeout_defaults_to_15s():
    assert built_route(config()).action.timeout == 15.0


def test_route_timeout_zero_disables_it():
    doc = config({"match": {"prefix": "/"}, "route": {"cluster": "backend", "timeout": "0s"}})
    assert built_route(doc).action.timeout == 0.0


def test_rewrites_are_read():
    action = built_route(config({"match": {"prefix": "/api/"}, "route": {
        "cluster": "backend", "prefix_rewrite": "/",
        "host_rewrite_literal": "api.internal"}})).action
    assert (action.prefix_rewrite, action.host_rewrite_literal, action.auto_host_rewrite) == (
        "/", "api.internal", False)


def test_auto_host_rewrite_is_read():
    action = built_route(config({"match": {"prefix": "/"}, "route": {
        "cluster": "backend", "auto_host_rewrite": True}})).action
    assert action.auto_host_rewrite is True and action.host_rewrite_literal is None


def test_host_rewrites_are_exclusive():
    e = refusal(config({"match": {"prefix": "/"}, "route": {
        "cluster": "backend", "auto_host_rewrite": True, "host_rewrite_literal": "x"}}))
    assert e.path == ROUTE + ".route" and "cannot both be set" in e.reason


@pytest.mark.parametrize("field, value", [
    ("regex_rewrite", {"pattern": {"regex": "x"}, "substitution": "y"}),
    ("idle_timeout", "5s"),
])
def test_route_action_features_not_supported_yet(field, value):
    e = refusal(config({"match": {"prefix": "/"}, "route": {"cluster": "backend", field: value}}))
    assert e.path == f"{ROUTE}.route.{field}" and "not supported by cyvoy" in e.reason


def test_cluster_header_is_lower_cased_and_not_found_defaults_to_503():
    a = built_route(config({"match": {"prefix": "/"}, "route": {"cluster_header": "X-Cluster"}})).action
    assert (a.cluster_header, a.cluster_not_found_response_code) == ("x-cluster", 503)


def test_mirror_policy_to_an_unknown_cluster_is_refused():
    e = refusal(config({"match": {"prefix": "/"}, "route": {
        "cluster": "backend", "request_mirror_policies": [{"cluster": "nowhere"}]}}))
    assert e.path == ROUTE + ".route.request_mirror_policies[0].cluster"
    assert "does not exist" in e.reason


def test_mirror_policy_needs_a_cluster_or_cluster_header():
    e = refusal(config({"match": {"prefix": "/"}, "route": {
        "cluster": "backend", "request_mirror_policies": [{}]}}))
    assert e.path.startswith(ROUTE + ".route.request_mirror_policies[0]")


def test_mirror_policy_header_mutations_are_not_supported():
    e = refusal(config({"match": {"prefix": "/"}, "route": {
        "cluster": "backend", "request_mirror_policies": [
            {"cluster": "canary", "request_headers_mutations": [{"remove": "x"}]}]}}))
    assert e.path == ROUTE + ".route.request_mirror_policies[0].request_headers_mutations"


def test_runtime_key_prefix_is_ignored_with_a_warning():
    b = load_dict(config({"match": {"prefix": "/"}, "route": {"weighted_clusters": {
        "runtime_key_prefix": "routing.weights",
        "clusters": [{"name": "backend", "weight": 1}, {"name": "canary", "weight": 1}]}}}))
    assert any("runtime_key_prefix 'routing.weights' is ignored" in w for w in b.warnings)


# --- weighted clusters -------------------------------------------------------------------------

def weighted(*clusters, **extra) -> dict:
    return config({"match": {"prefix": "/"}, "route": {
        "weighted_clusters": {"clusters": list(clusters), **extra}}})


def test_weighted_clusters_are_read():
    action = built_route(weighted({"name": "backend", "weight": 90},
                                  {"name": "canary", "weight": 10})).action
    assert [(w.name, w.weight) for w in action.weighted_clusters] == [("backend", 90),
                                                                      ("canary", 10)]
    assert action.total_weight == 100 and action.cluster is None


def test_weights_summing_to_zero_are_refused():
    e = refusal(weighted({"name": "backend", "weight": 0}, {"name": "canary"}))
    assert e.path == ROUTE + ".route.weighted_clusters" and "add up to 0" in e.reason


def test_weights_must_add_up_to_total_weight_when_given():
    e = refusal(weighted({"name": "backend", "weight": 50}, {"name": "canary", "weight": 40},
                         total_weight=100))
    assert e.path == ROUTE + ".route.weighted_clusters.total_weight"
    assert "add up to 90, not total_weight 100" in e.reason


def test_matching_total_weight_is_accepted():
    action = built_route(weighted({"name": "backend", "weight": 60},
                                  {"name": "canary", "weight": 40}, total_weight=100)).action
    assert action.total_weight == 100


def test_weighted_cluster_must_exist():
    e = refusal(weighted({"name": "backend", "weight": 1}, {"name": "nope", "weight": 1}))
    assert e.path == ROUTE + ".route.weighted_clusters.clusters[1].name"
    assert "cluster 'nope' does not exist" in e.reason


def test_weighted_clusters_need_at_least_one_cluster():
    e = refusal(weighted())
    assert e.path == ROUTE + ".route.weighted_clusters.clusters" and "at least 1" in e.reason


def test_weighted_cluster_header_edits_are_read():
    action = built_route(weighted({"name": "backend", "weight": 1, "request_headers_to_add": [
        {"header": {"key": "x-split", "value": "a"}}], "response_headers_to_remove": ["x-b"]})
    ).action
    edits = action.weighted_clusters[0].edits
    assert [(h.key, h.value) for h in edits.request_headers_to_add] == [("x-split", "a")]
    assert edits.response_headers_to_remove == ["x-b"]


# --- redirects ---------------------------------------------------------------------------------

def redirect(**fields) -> Redirect:
    return built_route(config({"match": {"prefix": "/"}, "redirect": fields})).action


def test_redirect_defaults_to_301_keeping_everything():
    assert redirect() == Redirect(response_code=301)


def test_https_redirect_sets_the_scheme():
    assert redirect(https_redirect=True).scheme_redirect == "https"


@pytest.mark.parametrize("name, code", [("MOVED_PERMANENTLY", 301), ("FOUND", 302),
                                        ("SEE_OTHER", 303), ("TEMPORARY_REDIRECT", 307),
                                        ("PERMANENT_REDIRECT", 308)])
def test_redirect_response_codes(name, code):
    assert redirect(response_code=name).response_code == code


def test_redirect_fields_are_read():
    r = redirect(host_redirect="example.com", port_redirect=8443, path_redirect="/new",
                 strip_query=True, scheme_redirect="https")
    assert (r.host_redirect, r.port_redirect, r.path_redirect, r.strip_query,
            r.scheme_redirect) == ("example.com", 8443, "/new", True, "https")


def test_redirect_prefix_rewrite_is_read():
    assert redirect(prefix_rewrite="/v2/").prefix_rewrite == "/v2/"


def test_path_redirect_and_prefix_rewrite_are_exclusive():
    e = refusal(config({"match": {"prefix": "/"},
                        "redirect": {"path_redirect": "/a", "prefix_rewrite": "/b"}}))
    assert e.path == ROUTE + ".redirect" and "cannot both be set" in e.reason


def test_https_redirect_and_scheme_redirect_are_exclusive():
    e = refusal(config({"match": {"prefix": "/"},
                        "redirect": {"https_redirect": True, "scheme_redirect": "http"}}))
    assert e.path == ROUTE + ".redirect" and "cannot both be set" in e.reason


# --- direct responses --------------------------------------------------------------------------

def direct(**fields):
    return config({"match": {"prefix": "/"}, "direct_response": fields})


def test_direct_response_with_inline_body():
    assert built_route(direct(status=403, body={"inline_string": "denied\n"})).action == \
        DirectResponse(status=403, body=b"denied\n")


def test_direct_response_without_body_is_empty():
    assert built_route(direct(status=204)).action == DirectResponse(status=204, body=b"")


def test_direct_response_body_is_read_from_a_file(tmp_path):
    (tmp_path / "body.html").write_bytes(b"<h1>hi</h1>")
    doc = direct(status=200, body={"filename": str(tmp_path / "body.html")})
    assert built_route(doc).action.body == b"<h1>hi</h1>"


def test_direct_response_status_is_required():
    assert str(refusal(direct())) == f"{ROUTE}.direct_response.status: missing required field"


@pytest.mark.parametrize("status", [99, 600])
def test_direct_response_status_must_be_100_to_599(status):
    e = refusal(direct(status=status))
    assert e.path == ROUTE + ".direct_response.status" and "out of range" in e.reason


def test_direct_response_body_is_limited_to_4096_bytes_by_default():
    e = refusal(direct(status=200, body={"inline_string": "x" * 4097}))
    assert e.path == ROUTE + ".direct_response.body"
    assert "4097 bytes" in e.reason and "max_direct_response_body_size_bytes (4096)" in e.reason


def test_direct_response_body_limit_is_configurable():
    doc = direct(status=200, body={"inline_string": "x" * 5000})
    route_config(doc)["max_direct_response_body_size_bytes"] = 8192
    assert len(built_route(doc).action.body) == 5000


# --- header edits ------------------------------------------------------------------------------

def edits_of_route(**fields):
    doc = config({"match": {"prefix": "/"}, "route": {"cluster": "backend"}, **fields})
    return built_route(doc).edits


def added(option: dict):
    return edits_of_route(request_headers_to_add=[option]).request_headers_to_add[0]


def test_header_addition_defaults_to_append():
    h = added({"header": {"key": "X-Env", "value": "prod"}})
    assert (h.key, h.value, h.append_action) == ("x-env", "prod", "APPEND_IF_EXISTS_OR_ADD")


def test_deprecated_append_false_means_overwrite():
    assert added({"header": {"key": "x", "value": "1"}, "append": False}).append_action == \
        "OVERWRITE_IF_EXISTS_OR_ADD"


@pytest.mark.parametrize("action", ["APPEND_IF_EXISTS_OR_ADD", "ADD_IF_ABSENT",
                                    "OVERWRITE_IF_EXISTS_OR_ADD", "OVERWRITE_IF_EXISTS"])
def test_append_action_is_read(action):
    assert added({"header": {"key": "x", "value": "1"}, "append_action": action}).append_action \
        == action


def test_append_and_append_action_are_exclusive():
    doc = config({"match": {"prefix": "/"}, "route": {"cluster": "backend"},
                  "request_headers_to_add": [{"header": {"key": "x", "value": "1"},
                                              "append": True, "append_action": "ADD_IF_ABSENT"}]})
    e = refusal(doc)
    assert e.path == ROUTE + ".request_headers_to_add[0]" and "cannot both be set" in e.reason


def test_header_formatters_are_not_supported_yet():
    doc = config({"match": {"prefix": "/"}, "route": {"cluster": "backend"},
                  "request_headers_to_add": [{"header": {"key": "x-client",
                                                         "value": "%DOWNSTREAM_REMOTE_ADDRESS%"}}]})
    e = refusal(doc)
    assert e.path == ROUTE + ".request_headers_to_add[0].header.value"
    assert "not supported by cyvoy" in e.reason and "header formatters" in e.reason


def test_double_percent_is_a_literal_percent_sign():
    assert added({"header": {"key": "x-discount", "value": "50%%"}}).value == "50%"


def test_pseudo_headers_cannot_be_added():
    doc = config({"match": {"prefix": "/"}, "route": {"cluster": "backend"},
                  "request_headers_to_add": [{"header": {"key": ":path", "value": "/x"}}]})
    e = refusal(doc)
    assert e.path == ROUTE + ".request_headers_to_add[0].header.key"
    assert "may not be added or removed" in e.reason


def test_host_header_cannot_be_removed():
    e = refusal(config({"match": {"prefix": "/"}, "route": {"cluster": "backend"},
                        "request_headers_to_remove": ["Host"]}))
    assert e.path == ROUTE + ".request_headers_to_remove[0]"
    assert "may not be added or removed" in e.reason


def test_header_removals_are_lower_cased():
    assert edits_of_route(response_headers_to_remove=["X-Powered-By"]).response_headers_to_remove \
        == ["x-powered-by"]


def test_keep_empty_value_is_not_supported_yet():
    doc = config({"match": {"prefix": "/"}, "route": {"cluster": "backend"},
                  "response_headers_to_add": [{"header": {"key": "x", "value": ""},
                                               "keep_empty_value": True}]})
    e = refusal(doc)
    assert e.path == ROUTE + ".response_headers_to_add[0].keep_empty_value"
    assert "not supported by cyvoy" in e.reason


def test_header_edits_are_read_at_every_level():
    doc = config()
    route_config(doc)["response_headers_to_add"] = [{"header": {"key": "x-level", "value": "rc"}}]
    vhost(doc)["request_headers_to_remove"] = ["x-internal"]
    route(doc)["response_headers_to_add"] = [{"header": {"key": "x-level", "value": "route"}}]
    rc = built_route_config(doc)
    assert rc.edits.response_headers_to_add[0].value == "rc"
    assert rc.virtual_hosts[0].edits.request_headers_to_remove == ["x-internal"]
    assert rc.virtual_hosts[0].routes[0].edits.response_headers_to_add[0].value == "route"


def test_header_value_may_not_contain_a_newline():
    doc = config({"match": {"prefix": "/"}, "route": {"cluster": "backend"},
                  "request_headers_to_add": [{"header": {"key": "x", "value": "a\r\nb"}}]})
    e = refusal(doc)
    assert e.path == ROUTE + ".request_headers_to_add[0].header.value" and "CR" in e.reason


def test_route_action_types():
    rc = built_route_config(config(
        {"match": {"prefix": "/a"}, "route": {"cluster": "backend"}},
        {"match": {"prefix": "/b"}, "redirect": {}},
        {"match": {"prefix": "/c"}, "direct_response": {"status": 200}}))
    assert [type(r.action) for r in rc.virtual_hosts[0].routes] == [RouteAction, Redirect,
                                                                     DirectResponse]


def test_hash_policies_are_read_in_order_with_terminal():
    rc = built_route_config(config({"match": {"prefix": "/"}, "route": {"cluster": "backend", "hash_policy": [
        {"header": {"header_name": "X-User"}},
        {"cookie": {"name": "sid"}, "terminal": True},
        {"connection_properties": {"source_ip": True}},
        {"query_parameter": {"name": "u"}}]}}))
    hp = rc.virtual_hosts[0].routes[0].action.hash_policy
    assert [(h.kind, h.name, h.terminal) for h in hp] == [
        ("header", "x-user", False), ("cookie", "sid", True), ("source_ip", "", False),
        ("query_parameter", "u", False)]


def test_hash_policy_cookie_with_ttl_is_refused():
    with pytest.raises(ConfigError) as e:
        load_dict(config({"match": {"prefix": "/"}, "route": {
            "cluster": "backend", "hash_policy": [{"cookie": {"name": "sid", "ttl": "10s"}}]}}))
    assert e.value.path == ROUTE + ".route.hash_policy[0].cookie.ttl"
    assert "existing cookie only" in e.value.reason


def test_runtime_fraction_is_read_with_envoys_denominators():
    route = {"match": {"prefix": "/", "runtime_fraction": {
        "default_value": {"numerator": 25, "denominator": "TEN_THOUSAND"}, "runtime_key": "routing.canary"}},
        "route": {"cluster": "backend"}}
    m = built_route_config(config(route)).virtual_hosts[0].routes[0].match
    assert (m.fraction, m.fraction_runtime_key) == ((25, 10_000), "routing.canary")


def test_retry_policy_reads_retriable_headers_and_rate_limited_back_off():
    r = built_route(config({"match": {"prefix": "/"}, "route": {"cluster": "backend", "retry_policy": {
        "retry_on": "retriable-headers,envoy-ratelimited",
        "retriable_headers": [{"name": "X-Retry", "present_match": True}],
        "rate_limited_retry_back_off": {"reset_headers": [{"name": "Retry-After"},
                                                          {"name": "X-RateLimit-Reset",
                                                           "format": "UNIX_TIMESTAMP"}]}}}}))
    p = r.action.retry_policy
    assert p.retriable_headers[0].name == "x-retry"
    assert p.reset_headers == [("retry-after", "SECONDS"), ("x-ratelimit-reset", "UNIX_TIMESTAMP")]
    assert p.reset_max_interval == 300.0     # Envoy's default


def test_grpc_retry_tokens_are_read():
    r = built_route(config({"match": {"prefix": "/"}, "route": {"cluster": "backend", "retry_policy": {
        "retry_on": "5xx,unavailable,cancelled,deadline-exceeded,internal,resource-exhausted"}}}))
    assert {"unavailable", "cancelled", "deadline-exceeded", "internal",
            "resource-exhausted"} <= r.action.retry_policy.retry_on


def test_max_stream_duration_grpc_timeout_fields_are_read():
    r = built_route(config({"match": {"prefix": "/"}, "route": {"cluster": "backend", "max_stream_duration": {
        "grpc_timeout_header_max": "2s", "grpc_timeout_header_offset": "0.1s"}}}))
    assert (r.action.grpc_timeout_header_max, r.action.grpc_timeout_header_offset) == (2.0, 0.1)


def test_max_stream_duration_itself_is_not_supported_yet():
    e = refusal(config({"match": {"prefix": "/"}, "route": {"cluster": "backend", "max_stream_duration": {
        "max_stream_duration": "5s"}}}))
    assert e.path == ROUTE + ".route.max_stream_duration.max_stream_duration"


def test_internal_address_config_with_a_bad_cidr_is_refused():
    doc = config()
    doc["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"][
        "internal_address_config"] = {"cidr_ranges": [{"address_prefix": "10.0.0.300", "prefix_len": 8}]}
    e = refusal(doc)
    assert e.path.endswith("internal_address_config.cidr_ranges[0]") and "invalid CIDR" in e.reason


def test_grpc_match_is_a_content_type_prefix_match():
    # Envoy's RouteMatch.grpc: the request's content-type starts with application/grpc
    m = built_route(config({"match": {"prefix": "/", "grpc": {}}, "route": {"cluster": "backend"}})).match
    assert [(h.name, h.kind, h.value) for h in m.headers] == [("content-type", "prefix", "application/grpc")]
