"""Builds model.RouteConfiguration from a validated route_config, with the rules Envoy checks
when it loads a route table (config_impl.cc): domain syntax and uniqueness, routed clusters
existing, weighted cluster sums, header edits that may be applied."""
from __future__ import annotations

import difflib
from collections.abc import Collection
from typing import Optional

from proxy.config import datasource
from proxy.config.errors import ConfigError, index, join
from proxy.config.filters import build_per_filter
from proxy.config.model import (
    DirectResponse, HashPolicy, HeaderEdits, HeaderMatcher, HeaderValueOption, MirrorPolicy, Redirect,
    RetryPolicy, Route,
    RouteAction,
    RouteConfiguration, RouteMatch, VirtualHost, WeightedCluster,
)
from proxy.config.regex import RegexError, compile_re2

REDIRECT_CODES = {"MOVED_PERMANENTLY": 301, "FOUND": 302, "SEE_OTHER": 303,
                  "TEMPORARY_REDIRECT": 307, "PERMANENT_REDIRECT": 308}
_APPEND_ACTIONS = {True: "APPEND_IF_EXISTS_OR_ADD", False: "OVERWRITE_IF_EXISTS_OR_ADD"}


def build_route_config(rc: dict, path: str, clusters: Collection[str],
                       filters: Optional[dict] = None) -> RouteConfiguration:
    """`filters`: the connection manager's HTTP filter configs by name (for per-route configs)."""
    seen_domains: dict[str, str] = {}       # lower-cased domain -> virtual host that has it
    vhosts = []
    for i, vh in enumerate(rc["virtual_hosts"]):
        vpath = index(join(path, "virtual_hosts"), i)
        vhosts.append(_virtual_host(vh, vpath, clusters, seen_domains,
                                    rc["max_direct_response_body_size_bytes"], filters or {}))
    return RouteConfiguration(name=rc["name"], virtual_hosts=vhosts, edits=build_edits(rc, path),
                              mirrors=_mirrors(rc, path, clusters))


# --- header edits ------------------------------------------------------------------------------

def build_edits(msg: dict, path: str) -> HeaderEdits:
    """The four *_headers_to_add/remove lists of a route_config, virtual host, route or weighted
    cluster."""
    def adds(key: str) -> list[HeaderValueOption]:
        return [header_option(o, index(join(path, key), i)) for i, o in enumerate(msg[key])]

    def removes(key: str) -> list[str]:
        return [_modifiable(h, index(join(path, key), i)) for i, h in enumerate(msg[key])]

    return HeaderEdits(
        request_headers_to_add=adds("request_headers_to_add"),
        request_headers_to_remove=removes("request_headers_to_remove"),
        response_headers_to_add=adds("response_headers_to_add"),
        response_headers_to_remove=removes("response_headers_to_remove"),
    )


def header_option(option: dict, path: str) -> HeaderValueOption:
    """model.HeaderValueOption from a validated config.core.v3.HeaderValueOption."""
    header = option["header"]
    key = _modifiable(header["key"], join(path, "header.key"))
    value = literal_header_value(header["value"], join(path, "header.value"))
    if option["append"] is not None and option["append_action"] is not None:
        raise ConfigError(path, "'append' and 'append_action' cannot both be set "
                                "('append' is deprecated; keep append_action)")
    if option["append_action"] is not None:
        action = option["append_action"]
    else:
        # The deprecated BoolValue `append` defaults to true.
        action = _APPEND_ACTIONS[option["append"] is not False]
    return HeaderValueOption(key=key, value=value, append_action=action)


def _modifiable(name: str, path: str) -> str:
    # Envoy refuses to add or remove pseudo-headers and Host (HeaderUtility::isModifiableHeader).
    lowered = name.lower()
    if lowered.startswith(":") or lowered == "host":
        raise ConfigError(path, f"{name!r} cannot be modified: ':'-prefixed and host headers "
                                "may not be added or removed")
    return lowered


def literal_header_value(value: str, path: str) -> str:
    """`value` with '%%' unescaped; refuses Envoy's %OPERATOR% substitutions."""
    out, i = [], 0
    while i < len(value):
        if value[i] == "%":
            if value.startswith("%%", i):
                out.append("%")
                i += 2
                continue
            raise ConfigError(path, f"not supported by cyvoy (header formatters such as "
                                    f"%REQ(...)% are not supported yet: {value!r}; write %% "
                                    "for a literal percent sign)")
        out.append(value[i])
        i += 1
    return "".join(out)


# --- virtual hosts -----------------------------------------------------------------------------

def _virtual_host(vh: dict, path: str, clusters: Collection[str], seen: dict[str, str],
                  max_body: int, filters: dict) -> VirtualHost:
    domains = []
    for i, domain in enumerate(vh["domains"]):
        dpath = index(join(path, "domains"), i)
        lowered = domain.lower()
        _check_domain(lowered, dpath)
        if lowered in seen:
            raise ConfigError(dpath, f"duplicate domain {domain!r}: virtual host {seen[lowered]!r}"
                                     " already has it; a domain may appear only once in a "
                                     "route_config")
        seen[lowered] = vh["name"]
        domains.append(lowered)
    routes = [_route(r, index(join(path, "routes"), i), clusters, max_body, filters)
              for i, r in enumerate(vh["routes"])]
    return VirtualHost(name=vh["name"], domains=domains, routes=routes,
                       edits=build_edits(vh, path),
                       retry_policy=_retry_policy(vh["retry_policy"], join(path, "retry_policy"))
                       if vh["retry_policy"] is not None else None,
                       include_request_attempt_count=vh["include_request_attempt_count"],
                       include_attempt_count_in_response=vh["include_attempt_count_in_response"],
                       per_filter=build_per_filter(vh["typed_per_filter_config"],
                                                   join(path, "typed_per_filter_config"), filters),
                       mirrors=_mirrors(vh, path, clusters))


def _check_domain(domain: str, path: str) -> None:
    """Envoy's wildcard forms: "*" alone, "*.x"/"*x" (suffix match) or "x.*"/"x*" (prefix)."""
    if not domain:
        raise ConfigError(path, "empty domain")
    stars = domain.count("*")
    if stars == 0 or domain == "*":
        return
    if stars > 1:
        raise ConfigError(path, f"invalid domain {domain!r}: at most one '*' wildcard is allowed")
    if not (domain.startswith("*") or domain.endswith("*")):
        raise ConfigError(path, f"invalid domain {domain!r}: the '*' wildcard may only start "
                                "('*.example.com') or end ('example.*') a domain")


# --- routes ------------------------------------------------------------------------------------

def _route(r: dict, path: str, clusters: Collection[str], max_body: int, filters: dict) -> Route:
    match = _match(r["match"], join(path, "match"))
    if r["route"] is not None:
        action = _route_action(r["route"], join(path, "route"), clusters)
    elif r["redirect"] is not None:
        action = _redirect(r["redirect"])
    else:
        action = _direct_response(r["direct_response"], join(path, "direct_response"), max_body)
    return Route(name=r["name"], match=match, action=action, edits=build_edits(r, path),
                 per_filter=build_per_filter(r["typed_per_filter_config"],
                                             join(path, "typed_per_filter_config"), filters))


def _regex(matcher: dict, path: str):
    try:
        return compile_re2(matcher["regex"])
    except RegexError as e:
        raise ConfigError(join(path, "regex"), str(e)) from None


DENOMINATORS = {"HUNDRED": 100, "TEN_THOUSAND": 10_000, "MILLION": 1_000_000}


def _match(m: dict, path: str) -> RouteMatch:
    headers = [header_matcher(h, index(join(path, "headers"), i))
               for i, h in enumerate(m["headers"])]
    if m["grpc"] is not None:
        # Envoy's gRPC match: a content-type of application/grpc (Grpc::Common::isGrpcRequestHeaders)
        headers.append(HeaderMatcher(name="content-type", kind="prefix", value="application/grpc"))
    if m["safe_regex"] is not None:
        match = RouteMatch(kind="safe_regex", value=m["safe_regex"]["regex"],
                           regex=_regex(m["safe_regex"], join(path, "safe_regex")),
                           case_sensitive=m["case_sensitive"], headers=headers)
    else:
        kind = "prefix" if m["prefix"] is not None else "path"
        match = RouteMatch(kind=kind, value=m[kind], case_sensitive=m["case_sensitive"], headers=headers)
    rf = m["runtime_fraction"]
    if rf is not None:
        dv = rf["default_value"]
        den = DENOMINATORS[dv["denominator"]]
        match.fraction = (min(dv["numerator"], den), den)   # Envoy caps the numerator at the denominator
        match.fraction_runtime_key = rf["runtime_key"] or None
    return match


_LEGACY_HEADER_MATCHES = (("exact_match", "exact"), ("prefix_match", "prefix"),
                          ("suffix_match", "suffix"), ("contains_match", "contains"))
_STRING_MATCHES = ("exact", "prefix", "suffix", "contains")


def header_matcher(h: dict, path: str) -> HeaderMatcher:
    name, invert = h["name"].lower(), h["invert_match"]
    for key, kind in _LEGACY_HEADER_MATCHES:
        if h[key] is not None:
            return HeaderMatcher(name=name, kind=kind, value=h[key], invert_match=invert)
    if h["safe_regex_match"] is not None:
        regex = _regex(h["safe_regex_match"], join(path, "safe_regex_match"))
        return HeaderMatcher(name=name, kind="regex", value=regex.pattern, regex=regex,
                             invert_match=invert)
    if h["string_match"] is not None:
        sm, spath = h["string_match"], join(path, "string_match")
        if sm["safe_regex"] is not None:
            # Envoy ignores ignore_case for regexes; (?i) in the pattern does that job.
            regex = _regex(sm["safe_regex"], join(spath, "safe_regex"))
            return HeaderMatcher(name=name, kind="regex", value=regex.pattern, regex=regex,
                                 invert_match=invert)
        kind = next(k for k in _STRING_MATCHES if sm[k] is not None)
        return HeaderMatcher(name=name, kind=kind, value=sm[kind], invert_match=invert,
                             ignore_case=sm["ignore_case"])
    # present_match, or no specifier at all, which Envoy treats as present_match: true.
    present = True if h["present_match"] is None else h["present_match"]
    return HeaderMatcher(name=name, kind="present", value=present, invert_match=invert)


def _cluster_ref(name: str, path: str, clusters: Collection[str]) -> str:
    if name not in clusters:
        reason = f"cluster {name!r} does not exist in static_resources.clusters"
        close = difflib.get_close_matches(name, list(clusters), n=1, cutoff=0.6)
        if close:
            reason += f"; did you mean {close[0]!r}?"
        raise ConfigError(path, reason)
    return name


def _route_action(a: dict, path: str, clusters: Collection[str]) -> RouteAction:
    action = RouteAction(timeout=a["timeout"], prefix_rewrite=a["prefix_rewrite"],
                         host_rewrite_literal=a["host_rewrite_literal"],
                         auto_host_rewrite=bool(a["auto_host_rewrite"]),
                         hash_policy=[_hash_policy(h) for h in a["hash_policy"]],
                         retry_policy=_retry_policy(a["retry_policy"], join(path, "retry_policy"))
                         if a["retry_policy"] is not None else None,
                         cluster_not_found_response_code=NOT_FOUND_CODES[a["cluster_not_found_response_code"]],
                         upgrades=upgrade_map(a["upgrade_configs"], join(path, "upgrade_configs")),
                         mirrors=_mirrors(a, path, clusters))
    msd = a["max_stream_duration"]
    if msd is not None:
        action.grpc_timeout_header_max = msd["grpc_timeout_header_max"]
        action.grpc_timeout_header_offset = msd["grpc_timeout_header_offset"] or 0.0
    if a["cluster"] is not None:
        action.cluster = _cluster_ref(a["cluster"], join(path, "cluster"), clusters)
        return action
    if a["cluster_header"] is not None:
        action.cluster_header = a["cluster_header"].lower()
        return action
    wpath = join(path, "weighted_clusters")
    wc = a["weighted_clusters"]
    for i, c in enumerate(wc["clusters"]):
        cpath = index(join(wpath, "clusters"), i)
        action.weighted_clusters.append(WeightedCluster(
            name=_cluster_ref(c["name"], join(cpath, "name"), clusters),
            weight=c["weight"], edits=build_edits(c, cpath)))
    total = sum(c.weight for c in action.weighted_clusters)
    if total == 0:
        raise ConfigError(wpath, "the weights add up to 0; at least one cluster needs a weight")
    if total > 2**32 - 1:
        raise ConfigError(wpath, f"the weights add up to {total}, more than a uint32 can hold")
    if wc["total_weight"] is not None and wc["total_weight"] != total:
        raise ConfigError(join(wpath, "total_weight"),
                          f"the weights add up to {total}, not total_weight "
                          f"{wc['total_weight']} (total_weight is deprecated; it may be left out)")
    action.total_weight = total
    action.runtime_key_prefix = wc["runtime_key_prefix"]
    return action


def upgrade_map(configs: list, path: str) -> dict[str, bool]:
    """upgrade_configs as {lower-cased upgrade type: enabled}; CONNECT is refused (cyvoy has no
    CONNECT support)."""
    out: dict[str, bool] = {}
    for i, u in enumerate(configs):
        kind = u["upgrade_type"].lower()
        if kind == "connect":
            raise ConfigError(join(index(path, i), "upgrade_type"), "not supported by cyvoy (CONNECT "
                                                                  "is not supported)")
        out[kind] = u["enabled"]
    return out


NOT_FOUND_CODES = {"SERVICE_UNAVAILABLE": 503, "NOT_FOUND": 404, "INTERNAL_SERVER_ERROR": 500}


def _mirrors(msg: dict, path: str, clusters: Collection[str]) -> list[MirrorPolicy]:
    """request_mirror_policies of a route action, virtual host or route configuration."""
    out = []
    for i, m in enumerate(msg["request_mirror_policies"]):
        mpath = index(join(path, "request_mirror_policies"), i)
        policy = MirrorPolicy(host_suffix=not m["disable_shadow_host_suffix_append"])
        if m["cluster"] is not None:
            policy.cluster = _cluster_ref(m["cluster"], join(mpath, "cluster"), clusters)
        else:
            policy.cluster_header = m["cluster_header"].lower()
        rf = m["runtime_fraction"]
        if rf is not None:
            dv = rf["default_value"]
            den = DENOMINATORS[dv["denominator"]]
            policy.fraction = (min(dv["numerator"], den), den)
            policy.fraction_runtime_key = rf["runtime_key"] or None
        out.append(policy)
    return out


# retry_on tokens (Envoy's router_filter.rst, retry_state_impl.cc parseRetryOn)
# refused-stream is an HTTP/2 reset: accepted, and served by "reset" (cyvoy does not tell the reset
# codes of an HTTP/2 upstream apart).
# gRPC tokens (x-envoy-retry-grpc-on's, also accepted in retry_on) retry a response whose headers
# carry that grpc-status: a trailers-only answer, before anything went to the client
GRPC_RETRY_ON = {"cancelled": 1, "deadline-exceeded": 4, "resource-exhausted": 8, "internal": 13,
                 "unavailable": 14}
RETRY_ON_SUPPORTED = frozenset({"5xx", "gateway-error", "reset", "reset-before-request", "connect-failure",
                                "retriable-4xx", "retriable-status-codes", "envoy-ratelimited",
                                "retriable-headers", "refused-stream", *GRPC_RETRY_ON})
RETRY_ON_NOT_YET = frozenset({"http3-post-connect-failure"})


def _retry_policy(r: dict, path: str) -> RetryPolicy:
    tokens = [t.strip() for t in r["retry_on"].split(",") if t.strip()]
    for t in tokens:
        if t in RETRY_ON_NOT_YET:
            raise ConfigError(join(path, "retry_on"), f"retry_on {t!r} is not supported yet")
        if t not in RETRY_ON_SUPPORTED:
            close = difflib.get_close_matches(t, sorted(RETRY_ON_SUPPORTED), n=1)
            raise ConfigError(join(path, "retry_on"), f"unknown retry_on token {t!r}"
                              + (f"; did you mean {close[0]!r}?" if close else ""))
    previous = False
    for i, pred in enumerate(r["retry_host_predicate"]):
        if pred["name"] != "envoy.retry_host_predicates.previous_hosts":
            raise ConfigError(join(index(join(path, "retry_host_predicate"), i), "name"),
                              "only envoy.retry_host_predicates.previous_hosts is supported")
        previous = True
    base, top = 0.025, None
    if r["retry_back_off"] is not None:
        base = r["retry_back_off"]["base_interval"]
        top = r["retry_back_off"]["max_interval"]
        if top is not None and top < base:
            raise ConfigError(join(join(path, "retry_back_off"), "max_interval"),
                              "must be at least base_interval")
    return RetryPolicy(retry_on=frozenset(tokens), num_retries=r["num_retries"],
                       per_try_timeout=r["per_try_timeout"] or 0.0,
                       per_try_idle_timeout=r["per_try_idle_timeout"] or 0.0,
                       base_interval=max(base, 0.001),    # Envoy: under 1 ms counts as 1 ms
                       max_interval=top if top is not None else 10 * base,
                       retriable_status_codes=frozenset(r["retriable_status_codes"]),
                       previous_hosts=previous,
                       host_selection_retry_max_attempts=max(0, r["host_selection_retry_max_attempts"]),
                       retriable_headers=[header_matcher(h, index(join(path, "retriable_headers"), i))
                                          for i, h in enumerate(r["retriable_headers"])],
                       retriable_request_headers=[
                           header_matcher(h, index(join(path, "retriable_request_headers"), i))
                           for i, h in enumerate(r["retriable_request_headers"])],
                       reset_headers=[(h["name"].lower(), h["format"]) for h in
                                      (r["rate_limited_retry_back_off"] or {}).get("reset_headers", [])],
                       reset_max_interval=(r["rate_limited_retry_back_off"] or {}).get("max_interval", 300.0))


def _hash_policy(h: dict) -> HashPolicy:
    terminal = bool(h["terminal"])
    if h["header"] is not None:
        return HashPolicy("header", h["header"]["header_name"].lower(), terminal)
    if h["cookie"] is not None:
        return HashPolicy("cookie", h["cookie"]["name"], terminal)
    if h["query_parameter"] is not None:
        return HashPolicy("query_parameter", h["query_parameter"]["name"], terminal)
    # connection_properties: source_ip false hashes nothing (Envoy's behaviour)
    return HashPolicy("source_ip" if h["connection_properties"]["source_ip"] else "none", "", terminal)


def _redirect(r: dict) -> Redirect:
    scheme: Optional[str] = "https" if r["https_redirect"] else r["scheme_redirect"]
    return Redirect(
        host_redirect=r["host_redirect"] or None,
        port_redirect=r["port_redirect"] or None,     # proto3: 0 means "keep the request's"
        scheme_redirect=scheme,
        path_redirect=r["path_redirect"],
        prefix_rewrite=r["prefix_rewrite"],
        response_code=REDIRECT_CODES[r["response_code"]],
        strip_query=r["strip_query"],
    )


def _direct_response(d: dict, path: str, max_body: int) -> DirectResponse:
    body = b""
    if d["body"] is not None:
        body = datasource.read(d["body"], join(path, "body"))
        if len(body) > max_body:
            raise ConfigError(join(path, "body"),
                              f"the body is {len(body)} bytes, more than "
                              f"route_config.max_direct_response_body_size_bytes ({max_body})")
    return DirectResponse(status=d["status"], body=body)
