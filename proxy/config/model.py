"""The validated configuration, as the rest of cyvoy sees it.

The loader (`proxy.config.loader`) turns Envoy v3 bootstrap YAML/JSON into these objects. Every
default here is Envoy's (see ../shared/reference/envoy-cluster-management.md) unless a comment
says otherwise. Durations are float seconds; 0 means "disabled" where Envoy says so.
Nothing here is used per request in its Python form: the worker compiles what it needs at start.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Optional, Union


@dataclass(slots=True)
class HeaderValueOption:
    """`request_headers_to_add` / `response_headers_to_add` entry (config.core.v3.HeaderValueOption)."""
    key: str            # lower-cased
    value: str
    # Envoy's append_action: APPEND_IF_EXISTS_OR_ADD (default), ADD_IF_ABSENT,
    # OVERWRITE_IF_EXISTS_OR_ADD, OVERWRITE_IF_EXISTS. The deprecated `append: bool` maps onto it.
    append_action: str = "APPEND_IF_EXISTS_OR_ADD"


@dataclass(slots=True)
class HeaderEdits:
    """Header additions and removals at one level (route_config, virtual host or route)."""
    request_headers_to_add: list[HeaderValueOption] = field(default_factory=list)
    request_headers_to_remove: list[str] = field(default_factory=list)   # lower-cased
    response_headers_to_add: list[HeaderValueOption] = field(default_factory=list)
    response_headers_to_remove: list[str] = field(default_factory=list)  # lower-cased


@dataclass(slots=True)
class HeaderMatcher:
    """route.v3.HeaderMatcher: exactly one of the match kinds is set."""
    name: str                           # lower-cased
    kind: str                           # "exact" | "prefix" | "suffix" | "contains" | "present" | "regex"
    value: Union[str, bool, None] = None  # str for string kinds, bool for present
    regex: Optional[re.Pattern] = None  # compiled, for kind == "regex" (full match, as RE2 in Envoy)
    invert_match: bool = False
    ignore_case: bool = False           # from string_match.ignore_case


@dataclass(slots=True)
class RouteMatch:
    kind: str                           # "prefix" | "path" | "safe_regex"
    value: str                          # the prefix / path / regex source
    regex: Optional[re.Pattern] = None  # compiled, kind == "safe_regex" (full match of the path without query)
    case_sensitive: bool = True
    headers: list[HeaderMatcher] = field(default_factory=list)
    # runtime_fraction: the route matches this share of requests, (numerator, denominator);
    # a runtime_key found in the static runtime layer overrides it
    fraction: Optional[tuple[int, int]] = None
    fraction_runtime_key: Optional[str] = None


@dataclass(slots=True)
class WeightedCluster:
    name: str
    weight: int
    edits: HeaderEdits = field(default_factory=HeaderEdits)


@dataclass(slots=True)
class HashPolicy:
    """route.v3.RouteAction.HashPolicy: what a request's hash (RING_HASH, MAGLEV) is made of."""
    kind: str                    # "header" | "cookie" | "source_ip" | "query_parameter"
    name: str = ""               # header name (lower-cased), cookie name or query parameter name
    terminal: bool = False


@dataclass(slots=True)
class RetryPolicy:
    """route.v3.RetryPolicy (the parts cyvoy runs)."""
    retry_on: frozenset[str] = frozenset()
    num_retries: int = 1
    per_try_timeout: float = 0.0             # 0: the route timeout bounds every try
    per_try_idle_timeout: float = 0.0        # 0: none; restarted by every byte from the upstream
    base_interval: float = 0.025             # retry_back_off, Envoy's defaults
    max_interval: float = 0.25               # default 10 x base_interval
    retriable_status_codes: frozenset[int] = frozenset()
    previous_hosts: bool = False             # retry_host_predicate envoy.retry_host_predicates.previous_hosts
    host_selection_retry_max_attempts: int = 1
    retriable_headers: list[HeaderMatcher] = field(default_factory=list)          # with retry_on retriable-headers
    retriable_request_headers: list[HeaderMatcher] = field(default_factory=list)  # the request must match one
    # rate_limited_retry_back_off: (lower-cased header name, "SECONDS" | "UNIX_TIMESTAMP"), in order
    reset_headers: list[tuple[str, str]] = field(default_factory=list)
    reset_max_interval: float = 300.0


@dataclass(slots=True)
class MirrorPolicy:
    """route.v3.RouteAction.RequestMirrorPolicy: shadow a share of requests to another cluster."""
    cluster: Optional[str] = None            # exactly one of cluster / cluster_header
    cluster_header: Optional[str] = None     # lower-cased request header naming the cluster
    fraction: Optional[tuple[int, int]] = None    # runtime_fraction default_value; None: all requests
    fraction_runtime_key: Optional[str] = None
    host_suffix: bool = True                 # not disable_shadow_host_suffix_append: Host gets "-shadow"


@dataclass(slots=True)
class RouteAction:
    cluster: Optional[str] = None                         # exactly one of cluster / weighted_clusters / cluster_header
    cluster_header: Optional[str] = None                  # lower-cased: the request header naming the cluster
    cluster_not_found_response_code: int = 503            # SERVICE_UNAVAILABLE (404 NOT_FOUND, 500 INTERNAL_SERVER_ERROR)
    runtime_key_prefix: str = ""                          # weighted_clusters.runtime_key_prefix: ignored with a warning
    mirrors: list[MirrorPolicy] = field(default_factory=list)   # request_mirror_policies
    upgrades: dict[str, bool] = field(default_factory=dict)     # upgrade_configs: overrides the HCM's, per type
    # max_stream_duration: a gRPC client's grpc-timeout becomes the route timeout, capped by
    # grpc_timeout_header_max (0: uncapped) and less grpc_timeout_header_offset
    grpc_timeout_header_max: Optional[float] = None
    grpc_timeout_header_offset: float = 0.0
    weighted_clusters: list[WeightedCluster] = field(default_factory=list)
    total_weight: int = 0                                 # 0: sum of weights (Envoy's default since v1.21)
    timeout: float = 15.0                                 # route timeout; 0 disables
    prefix_rewrite: Optional[str] = None
    host_rewrite_literal: Optional[str] = None
    auto_host_rewrite: bool = False
    hash_policy: list[HashPolicy] = field(default_factory=list)
    retry_policy: Optional[RetryPolicy] = None


@dataclass(slots=True)
class DirectResponse:
    status: int
    body: bytes = b""


@dataclass(slots=True)
class Redirect:
    """route.v3.RedirectAction. None means "keep the request's"."""
    host_redirect: Optional[str] = None
    port_redirect: Optional[int] = None
    scheme_redirect: Optional[str] = None    # https_redirect: true sets "https"
    path_redirect: Optional[str] = None
    prefix_rewrite: Optional[str] = None
    response_code: int = 301                 # MOVED_PERMANENTLY 301, FOUND 302, SEE_OTHER 303, TEMPORARY_REDIRECT 307, PERMANENT_REDIRECT 308
    strip_query: bool = False


@dataclass(slots=True)
class Route:
    name: str
    match: RouteMatch
    action: Union[RouteAction, DirectResponse, Redirect]
    edits: HeaderEdits = field(default_factory=HeaderEdits)
    # typed_per_filter_config: HTTP filter name -> FaultFilter / LocalRateLimitFilter
    per_filter: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class VirtualHost:
    name: str
    domains: list[str]                       # lower-cased, as written ("*", "*.x.com", "x.*", "x.com", "x.com:80")
    routes: list[Route]
    edits: HeaderEdits = field(default_factory=HeaderEdits)
    per_filter: dict[str, Any] = field(default_factory=dict)   # typed_per_filter_config, as on Route
    mirrors: list[MirrorPolicy] = field(default_factory=list)   # request_mirror_policies
    retry_policy: Optional[RetryPolicy] = None   # used by routes that have none of their own
    include_request_attempt_count: bool = False      # x-envoy-attempt-count on the upstream request
    include_attempt_count_in_response: bool = False  # ... and on the response


@dataclass(slots=True)
class RouteConfiguration:
    name: str
    virtual_hosts: list[VirtualHost]
    edits: HeaderEdits = field(default_factory=HeaderEdits)
    mirrors: list[MirrorPolicy] = field(default_factory=list)   # request_mirror_policies


@dataclass(slots=True)
class AccessLogConfig:
    """One http_connection_manager `access_log` entry (config.accesslog.v3.AccessLog) with the
    file, stdout or stderr logger. The format is kept as written; proxy.access_log compiles it
    (the loader already did once, to refuse bad ones)."""
    logger: str                              # envoy.access_loggers.file | .stdout | .stderr
    path: str                                # the file; "/dev/stdout" / "/dev/stderr" for the stream loggers
    text_format: Optional[str] = None        # a format string; None (and no json_format): Envoy's default format
    json_format: Optional[dict[str, Any]] = None   # a format dictionary (values: format strings, nested dicts)
    typed_json: bool = True                  # False only for FileAccessLog.json_format (deprecated: every value a string)
    omit_empty_values: bool = False          # log_format.omit_empty_values
    name: str = ""                           # the entry's name as written


@dataclass(slots=True)
class FaultFilter:
    """extensions.filters.http.fault.v3.HTTPFault. A percentage is (numerator, denominator)."""
    delay: Optional[float] = None            # fixed_delay, seconds
    delay_from_header: bool = False          # header_delay: x-envoy-fault-delay-request (ms)
    delay_percent: Optional[tuple[int, int]] = None   # None: no delay block
    abort_status: Optional[int] = None       # http_status
    abort_from_header: bool = False          # header_abort: x-envoy-fault-abort-request
    abort_percent: Optional[tuple[int, int]] = None   # None: no abort block
    upstream_cluster: str = ""               # only requests routed to this cluster
    headers: list[HeaderMatcher] = field(default_factory=list)   # only requests matching all
    max_active_faults: Optional[int] = None  # None: unlimited
    counter: int = -1                        # its shared active-faults counter (filters.assign_shared)


@dataclass(slots=True)
class LocalRateLimitFilter:
    """extensions.filters.http.local_ratelimit.v3.LocalRateLimit."""
    stat_prefix: str
    status: int = 429
    # (max_tokens, tokens_per_fill, fill_interval s); None: this config limits nothing
    token_bucket: Optional[tuple[int, int, float]] = None
    enabled: tuple[int, int] = (0, 100)      # filter_enabled, Envoy's default 0%
    enabled_key: Optional[str] = None
    enforced: tuple[int, int] = (0, 100)     # filter_enforced, Envoy's default 0%
    enforced_key: Optional[str] = None
    request_headers_when_not_enforced: list[HeaderValueOption] = field(default_factory=list)
    response_headers: list[HeaderValueOption] = field(default_factory=list)
    bucket: int = -1                         # index of its shared token bucket (filters.assign_shared)


@dataclass(slots=True)
class HttpFilter:
    """One entry of http_filters before the router: its name and its built config."""
    name: str
    config: Any                              # FaultFilter | LocalRateLimitFilter


@dataclass(slots=True)
class HttpConnectionManager:
    stat_prefix: str
    route_config: RouteConfiguration
    codec_type: str = "AUTO"                 # AUTO | HTTP1 | HTTP2 (HTTP3 is refused)
    add_user_agent: bool = False             # user-agent and x-envoy-downstream-service-cluster
    http2_protocol_options: Optional[dict] = None   # validated Http2ProtocolOptions
    http_filters: list[str] = field(default_factory=lambda: ["envoy.filters.http.router"])
    max_request_headers_kb: int = 60
    idle_timeout: float = 3600.0             # common_http_protocol_options.idle_timeout; 0 disables
    request_headers_timeout: float = 10.0    # cyvoy's default (Envoy has none); 0 disables
    stream_idle_timeout: float = 300.0
    request_timeout: float = 0.0             # Envoy default: disabled
    use_remote_address: bool = False
    xff_num_trusted_hops: int = 0
    generate_request_id: bool = True
    server_name: str = "cyvoy"               # Envoy says "envoy"; we are not Envoy
    access_logs: list[AccessLogConfig] = field(default_factory=list)
    filters: list[HttpFilter] = field(default_factory=list)   # http_filters before the router
    # upgrade_configs: lower-cased upgrade type -> enabled (e.g. {"websocket": True})
    upgrades: dict[str, bool] = field(default_factory=dict)
    # internal_address_config.cidr_ranges as "addr/len" (None: not configured, no client is
    # internal, so x-envoy-* request headers never steer retries or timeouts)
    internal_cidrs: Optional[list[str]] = None


@dataclass(slots=True)
class TlsCertificate:
    certificate_chain: bytes                 # PEM, read from filename or inline_string at load time
    private_key: bytes


@dataclass(slots=True)
class DownstreamTls:
    certificates: list[TlsCertificate]
    alpn_protocols: list[str] = field(default_factory=list)
    # tls_params, Envoy's downstream defaults: TLS_AUTO means TLSv1_2 .. TLSv1_3
    min_version: str = "TLSv1_2"
    max_version: str = "TLSv1_3"
    cipher_suites: list[str] = field(default_factory=list)   # empty: OpenSSL's default list
    # validation_context.trusted_ca: client certificates are asked for and must verify when sent;
    # require_client_certificate: and a client without one is refused (mTLS)
    client_ca: Optional[bytes] = None
    require_client_certificate: bool = False
    disable_stateless_session_resumption: bool = False    # no session tickets


@dataclass(slots=True)
class ConnectionLimit:
    """extensions.filters.network.connection_limit.v3.ConnectionLimit, before the HCM."""
    stat_prefix: str
    max_connections: int
    delay: float = 0.0                       # close an over-limit connection after this long
    counter: int = -1                        # its shared active-connections counter (filters.assign_shared)


@dataclass(slots=True)
class UpstreamTls:
    """A cluster's UpstreamTlsContext. Without trusted_ca the server certificate is not verified,
    as in Envoy; with it the chain must verify (its names are not matched, as Envoy without
    match_typed_subject_alt_names)."""
    sni: str = ""                            # empty: no SNI sent
    alpn_protocols: list[str] = field(default_factory=list)
    trusted_ca: Optional[bytes] = None       # PEM
    certificates: list[TlsCertificate] = field(default_factory=list)   # client certificate
    min_version: str = "TLSv1_2"             # Envoy's client defaults
    max_version: str = "TLSv1_3"
    cipher_suites: list[str] = field(default_factory=list)


@dataclass(slots=True)
class Listener:
    name: str                                # absent in the config: "listener_<index>" (Envoy generates a UUID)
    address: str
    port: int                                # 0 is allowed (ephemeral) for tests
    hcm: HttpConnectionManager               # the first filter chain's (the only one, usually)
    tls: Optional[DownstreamTls] = None
    connection_limit: Optional[ConnectionLimit] = None
    ignore_global_conn_limit: bool = False   # not counted in the overload manager's global limit
    # every filter chain, the first one included; chosen by the client's SNI (server_names)
    chains: list["FilterChain"] = field(default_factory=list)


@dataclass(slots=True)
class FilterChain:
    """One of a listener's filter_chains (or its default_filter_chain)."""
    hcm: HttpConnectionManager
    tls: Optional[DownstreamTls] = None
    server_names: list[str] = field(default_factory=list)   # filter_chain_match.server_names
    is_default: bool = False                 # default_filter_chain: when no other chain matches


@dataclass(slots=True)
class Endpoint:
    address: str                             # IP or DNS name (for *_DNS clusters)
    port: int
    weight: int = 1                          # load_balancing_weight (>= 1)
    priority: int = 0                        # from the LocalityLbEndpoints it sits in
    health_check_port: int = 0               # endpoint.health_check_config.port_value; 0: use port
    health_check_address: Optional[str] = None
    hostname: str = ""                       # endpoint.hostname (used by auto_host_rewrite)
    # The LocalityLbEndpoints it sits in: locality {region, zone, sub_zone} and its
    # load_balancing_weight (Envoy uses that only with locality_weighted_lb_config).
    locality: Optional[dict[str, str]] = None
    locality_weight: Optional[int] = None


@dataclass(slots=True)
class Cluster:
    name: str
    type: str = "STATIC"                     # STATIC | STRICT_DNS | LOGICAL_DNS
    connect_timeout: float = 5.0
    lb_policy: str = "ROUND_ROBIN"
    endpoints: list[Endpoint] = field(default_factory=list)
    per_connection_buffer_limit_bytes: int = 1024 * 1024
    dns_refresh_rate: float = 5.0
    dns_lookup_family: str = "AUTO"          # AUTO | V4_ONLY | V6_ONLY | V4_PREFERRED | ALL
    respect_dns_ttl: bool = False
    # Validated by the schema now; implemented by later issues. Each is the validated dict with
    # Envoy's defaults filled in, or None/[] when absent.
    health_checks: list[dict[str, Any]] = field(default_factory=list)
    outlier_detection: Optional[dict[str, Any]] = None
    circuit_breakers: Optional[dict[str, Any]] = None
    common_lb_config: Optional[dict[str, Any]] = None
    tls: Optional[UpstreamTls] = None            # transport_socket envoy.transport_sockets.tls
    # typed_extension_protocol_options: "HTTP1", "HTTP2", or "DOWNSTREAM" (the client's protocol)
    upstream_protocol: str = "HTTP1"
    http2_protocol_options: Optional[dict[str, Any]] = None
    lb_config: Optional[dict[str, Any]] = None   # round_robin_lb_config / least_request_lb_config / ring_hash_lb_config / maglev_lb_config / load_balancing_policy


@dataclass(slots=True)
class Admin:
    address: str
    port: int


@dataclass(slots=True)
class Bootstrap:
    listeners: list[Listener]
    clusters: dict[str, Cluster]             # by name, in file order
    admin: Optional[Admin] = None
    runtime: dict[str, Any] = field(default_factory=dict)  # flattened layered_runtime static layers
    source: dict[str, Any] = field(default_factory=dict)   # the document as read, for /config_dump
    warnings: list[str] = field(default_factory=list)      # things accepted with a caveat, logged at start
    node_id: str = ""                                      # node.id, kept for /server_info
    node_cluster: str = ""                                 # node.cluster
    # overload_manager's envoy.resource_monitors.global_downstream_max_connections (None: no limit)
    max_downstream_connections: Optional[int] = None
