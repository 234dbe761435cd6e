"""Envoy's v3 bootstrap messages as cyvoy reads them: one table per message.

Each row is a field: its kind, the default cyvoy applies when it is absent (Envoy's unless a
comment says otherwise), and whether cyvoy supports it. `no(reason)` rows are real Envoy fields
that cyvoy recognises and refuses with that reason, so users get "not supported" rather than
"unknown field"; a refused row that carries a kind and harmless values accepts exactly those
values, because writing them means the same as leaving the field out.

Field names, oneofs, defaults and limits follow Envoy's API protos (envoyproxy/envoy,
api/envoy/...); the proto file is named above each group. Health checks, outlier detection,
circuit breakers and load-balancer options are validated here in full although cyvoy does not
run them yet: the support gate (`proxy.config.support_gate`) refuses them after validation.
"""
from __future__ import annotations

from proxy.config.kinds import (
    BOOL, DURATION, HEADER_NAME, HEADER_VALUE, INT64, NONEMPTY, PERCENT, PORT, POSITIVE_DURATION,
    STRING, STRUCT, UINT32, UINT64, AnyMsg, Bytes, Double, Duration, Enum, Int, List,
    Message, Msg, Str, TypedConfig, TypedConfigMap, f, no,
)

# Reasons shared by many rows.
YET = "not supported yet"
XDS = "dynamic configuration (xDS) is not supported"
METADATA = "metadata is not supported"
PER_FILTER = ("per-filter configuration is supported on virtual hosts and routes only")
PER_FILTER_MAP = TypedConfigMap("http_filter")
RETRIES = "retries are not supported yet"
RATE_LIMITS = "rate limiting is not supported yet"
CORS = "CORS is not supported yet"
TRACING = "tracing is not supported"
LISTENER_ACCESS_LOG = ("listener access logs are not supported yet; configure access_log on the "
                       "http_connection_manager")
UPSTREAM_LOG = "upstream access logs are not supported yet"
PERIODIC_LOG = "periodic and on-new-request access logging is not supported yet"
BUFFER_LIMITS = "per-request buffer limits are not supported yet"
SDS = "secret discovery (SDS) is not supported; give certificates inline or by filename"
MTLS = "client certificate validation (mTLS) is not supported yet"
CERT_PROVIDERS = "certificate providers are not supported"
DNS_RESOLVER = "custom DNS resolvers are not supported; cyvoy uses the system resolver"
EXT_DISCOVERY = "extension config discovery is not supported"
FILTER_CHAIN_MATCH = ("filter chain matching is supported by server_names (SNI) only")
REGEX_REWRITE = "regex rewrites are not supported yet"
SUBSETS = "subset load balancing is not supported"

PCT_INT = Int("uint32", 0, 100)     # UInt32Value with lte: 100, e.g. enforcing_* percentages


def _header_edits() -> dict:
    """The four header edit rows shared by route_config, virtual hosts, routes and weighted
    clusters (route/v3/route.proto, route_components.proto)."""
    return {
        "request_headers_to_add": f(List(Msg("HeaderValueOption"), max_items=1000)),
        "request_headers_to_remove": f(List(HEADER_NAME)),
        "response_headers_to_add": f(List(Msg("HeaderValueOption"), max_items=1000)),
        "response_headers_to_remove": f(List(HEADER_NAME)),
    }


MESSAGES: dict[str, Message] = {}


def message(key: str, proto: str, fields: dict, required_oneofs: tuple[str, ...] = ()) -> None:
    MESSAGES[key] = Message(proto, fields, required_oneofs)


# --- config/bootstrap/v3/bootstrap.proto -------------------------------------------------------

message("Bootstrap", "envoy.config.bootstrap.v3.Bootstrap", {
    "node": f(Msg("Node")),
    "node_context_params": no(XDS),
    "static_resources": f(Msg("StaticResources")),
    "dynamic_resources": no(XDS),
    "cluster_manager": no("cluster_manager options are not supported"),
    "hds_config": no("health discovery service (HDS) is not supported"),
    "flags_path": no("flag files are not supported"),
    "stats_sinks": no("stats sinks are not supported; read stats from the admin endpoint"),
    "deferred_stat_options": no("stats options are not supported"),
    "stats_config": no("stats tag configuration is not supported"),
    "stats_flush_interval": no("stats sinks are not supported"),
    "stats_flush_on_admin": no("stats sinks are not supported", BOOL, False),
    "watchdog": no("watchdogs are not supported"),
    "watchdogs": no("watchdogs are not supported"),
    "tracing": no(TRACING),
    "layered_runtime": f(Msg("LayeredRuntime")),
    "admin": f(Msg("Admin")),
    "overload_manager": f(Msg("OverloadManager")),
    "enable_dispatcher_stats": no("dispatcher stats are not supported", BOOL, False),
    "header_prefix": no("a custom x-envoy header prefix is not supported"),
    "stats_server_version_override": no("stats options are not supported"),
    "use_tcp_for_dns_lookups": no(DNS_RESOLVER, BOOL, False),
    "dns_resolution_config": no(DNS_RESOLVER),
    "typed_dns_resolver_config": no(DNS_RESOLVER),
    "bootstrap_extensions": no("bootstrap extensions are not supported"),
    "fatal_actions": no("fatal actions are not supported"),
    "config_sources": no(XDS),
    "default_config_source": no(XDS),
    "default_socket_interface": no("custom socket interfaces are not supported"),
    "certificate_provider_instances": no(CERT_PROVIDERS),
    "inline_headers": no("inline header registration is not supported"),
    "perf_tracing_file_path": no("perf tracing is not supported"),
    "default_regex_engine": no("the regex engine is not configurable"),
    "xds_delegate_extension": no(XDS),
    "xds_config_tracker_extension": no(XDS),
    "listener_manager": no("custom listener managers are not supported"),
    "application_log_config": no("the log format is set on the command line"),
    "grpc_async_client_manager_config": no("gRPC clients are not supported"),
    "memory_allocator_manager": no("memory allocator options are not supported"),
})

message("StaticResources", "envoy.config.bootstrap.v3.Bootstrap.StaticResources", {
    "listeners": f(List(Msg("Listener"))),
    "clusters": f(List(Msg("Cluster"))),
    "secrets": no(SDS),
})

message("Admin", "envoy.config.bootstrap.v3.Admin", {
    # No address means no admin server, as in Envoy.
    "address": f(Msg("Address")),
    # "/dev/null" is what most Envoy configs write to mean "no admin access log".
    "access_log_path": no("admin access logging is not supported", STRING, "", "/dev/null"),
    "access_log": no("admin access logging is not supported", List(STRUCT), []),
    "profile_path": no("CPU profiling is not supported"),
    "socket_options": no("socket options are not supported"),
    # the admin interface is a process of its own and never counts toward the global limit
    "ignore_global_conn_limit": f(BOOL, False),
    "allow_paths": no("admin path allow-lists are not supported yet"),
})

# config/core/v3/base.proto
message("Node", "envoy.config.core.v3.Node", {
    "id": f(STRING, ""),
    "cluster": f(STRING, ""),
    "metadata": no(METADATA),
    "dynamic_parameters": no(XDS),
    "locality": no("node locality (zone-aware routing) is not supported"),
    "user_agent_name": no(XDS),
    "user_agent_version": no(XDS),
    "user_agent_build_version": no(XDS),
    "extensions": no(XDS),
    "client_features": no(XDS),
    "listening_addresses": no(XDS),
})

message("LayeredRuntime", "envoy.config.bootstrap.v3.LayeredRuntime", {
    "layers": f(List(Msg("RuntimeLayer"))),
})

message("RuntimeLayer", "envoy.config.bootstrap.v3.RuntimeLayer", {
    "name": f(NONEMPTY, required=True),
    "static_layer": f(STRUCT, oneof="layer_specifier"),
    "disk_layer": no("disk runtime layers are not supported; use a static_layer",
                     oneof="layer_specifier"),
    "admin_layer": no("runtime changes through the admin endpoint are not supported",
                      oneof="layer_specifier"),
    "rtds_layer": no(XDS, oneof="layer_specifier"),
}, required_oneofs=("layer_specifier",))

# --- config/listener/v3/listener.proto, listener_components.proto ------------------------------

message("Listener", "envoy.config.listener.v3.Listener", {
    "name": f(STRING),            # absent: cyvoy names it "listener_<index>"
    "address": f(Msg("Address"), required=True),
    "additional_addresses": no("additional listener addresses are not supported yet"),
    "stat_prefix": no("listener stat prefixes are not supported", STRING, ""),
    "filter_chains": f(List(Msg("FilterChain"))),
    "filter_chain_matcher": no(FILTER_CHAIN_MATCH),
    "use_original_dst": no("original-destination listeners are not supported", BOOL, False),
    "default_filter_chain": f(Msg("FilterChain")),
    "per_connection_buffer_limit_bytes": no("listener buffer limits are not supported yet"),
    "metadata": no(METADATA),
    "deprecated_v1": no("removed from Envoy's v3 API"),
    "drain_type": no("drain types are not supported", Enum(("DEFAULT", "MODIFY_ONLY")),
                     "DEFAULT"),
    "listener_filters": f(List(Msg("ListenerFilter"))),
    "listener_filters_timeout": no("listener filters are not supported yet"),
    "continue_on_listener_filters_timeout": no("listener filters are not supported yet",
                                               BOOL, False),
    "transparent": no("transparent listeners are not supported", BOOL, False),
    "freebind": no("IP_FREEBIND is not supported", BOOL, False),
    "socket_options": no("socket options are not supported"),
    "tcp_fast_open_queue_length": no("TCP Fast Open is not supported"),
    "traffic_direction": no("traffic direction is not supported",
                            Enum(("UNSPECIFIED", "INBOUND", "OUTBOUND")), "UNSPECIFIED"),
    "udp_listener_config": no("UDP listeners are not supported"),
    "api_listener": no("API listeners are not supported"),
    "connection_balance_config": no("connection balancing is not configurable"),
    "reuse_port": no("removed in favour of enable_reuse_port"),
    "enable_reuse_port": no("SO_REUSEPORT is not configurable", BOOL, True),
    "access_log": no(LISTENER_ACCESS_LOG),
    "tcp_backlog_size": no("the listen backlog is not configurable yet"),
    "max_connections_to_accept_per_socket_event": no("accept batching is not configurable"),
    "bind_to_port": no("listeners always bind their port", BOOL, True),
    "internal_listener": no("internal listeners are not supported"),
    "enable_mptcp": no("MPTCP is not supported", BOOL, False),
    "ignore_global_conn_limit": f(BOOL, False),
    "bypass_overload_manager": no("the overload manager is not supported", BOOL, False),
    "fcds_config": no(XDS),
})

# ListenerFilter: only tls_inspector, which cyvoy needs not (TLS reads the SNI itself)
message("ListenerFilter", "envoy.config.listener.v3.ListenerFilter", {
    "name": f(NONEMPTY, required=True),
    "typed_config": f(AnyMsg()),
    "config_discovery": no(EXT_DISCOVERY),
    "filter_disabled": no("listener filter predicates are not supported"),
})

# FilterChainMatch: cyvoy selects filter chains by SNI (server_names) only
message("FilterChainMatch", "envoy.config.listener.v3.FilterChainMatch", {
    "server_names": f(List(Str(min_len=1))),
    "transport_protocol": f(STRING, ""),      # "" or "tls" (checked in config/listeners.py)
    "destination_port": no(FILTER_CHAIN_MATCH),
    "prefix_ranges": no(FILTER_CHAIN_MATCH),
    "address_suffix": no(FILTER_CHAIN_MATCH),
    "suffix_len": no(FILTER_CHAIN_MATCH),
    "direct_source_prefix_ranges": no(FILTER_CHAIN_MATCH),
    "source_type": no(FILTER_CHAIN_MATCH, Enum(("ANY", "SAME_IP_OR_LOOPBACK", "EXTERNAL")), "ANY"),
    "source_prefix_ranges": no(FILTER_CHAIN_MATCH),
    "source_ports": no(FILTER_CHAIN_MATCH),
    "application_protocols": no(FILTER_CHAIN_MATCH),
})

message("FilterChain", "envoy.config.listener.v3.FilterChain", {
    "filter_chain_match": f(Msg("FilterChainMatch")),
    "filters": f(List(Msg("NetworkFilter"))),
    "use_proxy_proto": no("the PROXY protocol is not supported", BOOL, False),
    "metadata": no(METADATA),
    "transport_socket": f(Msg("DownstreamTransportSocket")),
    "transport_socket_connect_timeout": no("transport socket timeouts are not supported yet"),
    "name": f(STRING, ""),        # a label; only filter_chain_matcher (refused) refers to it
    "on_demand_configuration": no(XDS),
})

message("NetworkFilter", "envoy.config.listener.v3.Filter", {
    "name": f(NONEMPTY, required=True),
    "typed_config": f(TypedConfig("network_filter")),
    "config_discovery": no(EXT_DISCOVERY),
})

# config/core/v3/base.proto TransportSocket, on a listener
message("DownstreamTransportSocket", "envoy.config.core.v3.TransportSocket", {
    "name": f(NONEMPTY, required=True),
    "typed_config": f(TypedConfig("downstream_transport_socket")),
})

# --- config/core/v3/address.proto --------------------------------------------------------------

message("Address", "envoy.config.core.v3.Address", {
    "socket_address": f(Msg("SocketAddress"), oneof="address"),
    "pipe": no("unix domain sockets are not supported yet", oneof="address"),
    "envoy_internal_address": no("internal addresses are not supported", oneof="address"),
}, required_oneofs=("address",))

message("SocketAddress", "envoy.config.core.v3.SocketAddress", {
    "protocol": f(Enum(("TCP", "UDP"), refused={"UDP": "only TCP is supported"}), "TCP"),
    "address": f(NONEMPTY, required=True),
    "port_value": f(PORT, 0, oneof="port_specifier"),
    "named_port": no("named ports are not supported; use port_value", oneof="port_specifier"),
    "resolver_name": no(DNS_RESOLVER, STRING, ""),
    "ipv4_compat": no("IPv4-compatible IPv6 sockets are not supported", BOOL, False),
    "network_namespace_filepath": no("network namespaces are not supported", STRING, ""),
})

# --- extensions/filters/network/http_connection_manager/v3/http_connection_manager.proto -------

message("HttpConnectionManager",
        "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager", {
    "codec_type": f(Enum(("AUTO", "HTTP1", "HTTP2", "HTTP3"),
                         refused={"HTTP3": "HTTP/3 is not supported"}), "AUTO"),
    "stat_prefix": f(NONEMPTY, required=True),
    "rds": no("RDS (dynamic routes) is not supported; use an inline route_config",
              oneof="route_specifier"),
    "route_config": f(Msg("RouteConfiguration"), oneof="route_specifier"),
    "scoped_routes": no("scoped routes are not supported", oneof="route_specifier"),
    "http_filters": f(List(Msg("HttpFilter"))),
    "add_user_agent": f(BOOL, False),
    "tracing": no(TRACING),
    "common_http_protocol_options": f(Msg("HttpProtocolOptions")),
    "http_protocol_options": no("HTTP/1 protocol options are not supported yet", STRUCT, {}),
    "http2_protocol_options": f(Msg("Http2ProtocolOptions")),
    "http3_protocol_options": no("HTTP/3 is not supported"),
    "server_name": f(STRING, "cyvoy"),       # Envoy's default is "envoy"; we are not Envoy
    "server_header_transformation": no(
        "only overwriting the Server header is supported",
        Enum(("OVERWRITE", "APPEND_IF_ABSENT", "PASS_THROUGH")), "OVERWRITE"),
    "scheme_header_transformation": no("scheme header transformation is not supported"),
    "max_request_headers_kb": f(Int("uint32", 1, 8192), 60),
    "stream_idle_timeout": f(DURATION, 300.0),
    "request_timeout": f(DURATION, 0.0),
    # Envoy has no default (no timeout); cyvoy protects itself from slow-header clients.
    "request_headers_timeout": f(DURATION, 10.0),
    "drain_timeout": no("drain timeouts are not configurable yet", DURATION, 5.0),
    "delayed_close_timeout": no("delayed close is not configurable yet", DURATION, 1.0),
    "access_log": f(List(Msg("AccessLog"))),
    "access_log_flush_interval": no(PERIODIC_LOG),
    "flush_access_log_on_new_request": no(PERIODIC_LOG, BOOL, False),
    "access_log_options": no(PERIODIC_LOG, STRUCT, {}),
    "use_remote_address": f(BOOL, False),
    "xff_num_trusted_hops": f(UINT32, 0),
    "original_ip_detection_extensions": no("original IP detection extensions are not supported"),
    "early_header_mutation_extensions": no("early header mutations are not supported"),
    # which clients may steer retries and timeouts with x-envoy-* request headers
    "internal_address_config": f(Msg("InternalAddressConfig")),
    "skip_xff_append": no("skip_xff_append is not supported yet", BOOL, False),
    "via": no("the Via header is not supported yet", STRING, ""),
    "generate_request_id": f(BOOL, True),
    "preserve_external_request_id": no("request ID options are not supported yet", BOOL, False),
    "always_set_request_id_in_response": no("request ID options are not supported yet",
                                            BOOL, False),
    "forward_client_cert_details": no(
        "client certificate forwarding is not supported",
        Enum(("SANITIZE", "FORWARD_ONLY", "APPEND_FORWARD", "SANITIZE_SET",
              "ALWAYS_FORWARD_ONLY")), "SANITIZE"),
    "set_current_client_cert_details": no("client certificate forwarding is not supported"),
    "proxy_100_continue": no("proxying 100-continue is not supported yet", BOOL, False),
    "represent_ipv4_remote_address_as_ipv4_mapped_ipv6": no(
        "IPv4-mapped remote addresses are not supported", BOOL, False),
    "upgrade_configs": f(List(Msg("UpgradeConfig"))),
    "normalize_path": no("path normalisation is not supported yet", BOOL, False),
    "merge_slashes": no("slash merging is not supported yet", BOOL, False),
    "path_with_escaped_slashes_action": no(
        "escaped-slash handling is not configurable yet",
        Enum(("IMPLEMENTATION_SPECIFIC_DEFAULT", "KEEP_UNCHANGED", "REJECT_REQUEST",
              "UNESCAPE_AND_REDIRECT", "UNESCAPE_AND_FORWARD")),
        "IMPLEMENTATION_SPECIFIC_DEFAULT"),
    "request_id_extension": no("request ID extensions are not supported"),
    "local_reply_config": no("custom local replies are not supported yet"),
    "strip_matching_host_port": no("host port stripping is not supported yet", BOOL, False),
    "strip_any_host_port": no("host port stripping is not supported yet", BOOL, False),
    "stream_error_on_invalid_http_message": no("this option is not supported", BOOL, False),
    "path_normalization_options": no("path normalisation is not supported yet"),
    "strip_trailing_host_dot": no("host dot stripping is not supported yet", BOOL, False),
    "proxy_status_config": no("the Proxy-Status header is not supported"),
    "typed_header_validation_config": no("header validators are not supported"),
    "append_x_forwarded_port": no("x-forwarded-port is not supported yet", BOOL, False),
    "append_local_overload": no("the overload manager is not supported", BOOL, False),
    "add_proxy_protocol_connection_state": no("the PROXY protocol is not supported", BOOL,
                                              True),
    "http1_safe_max_connection_duration": no("connection durations are not supported yet",
                                             BOOL, False),
}, required_oneofs=("route_specifier",))

# config/core/v3/protocol.proto HttpProtocolOptions (downstream side)
message("HttpProtocolOptions", "envoy.config.core.v3.HttpProtocolOptions", {
    "idle_timeout": f(DURATION, 3600.0),
    "max_connection_duration": no("connection durations are not supported yet"),
    "max_headers_count": no("header count limits are not supported yet",
                            Int("uint32", 1, 2**32 - 1), 100),
    "max_response_headers_kb": no("response header size limits are not supported yet"),
    "max_stream_duration": no("stream durations are not supported yet"),
    "headers_with_underscores_action": no(
        "only allowing headers with underscores is supported",
        Enum(("ALLOW", "REJECT_REQUEST", "DROP_HEADER")), "ALLOW"),
    "max_requests_per_connection": no("per-connection request limits are not supported yet"),
})

# config/core/v3/protocol.proto Http2ProtocolOptions; defaults and limits are Envoy's
# (source/common/http/utility.h, Http2::Utility::OptionsLimits)
WINDOW = Int("uint32", 65535, 2**31 - 1)
message("Http2ProtocolOptions", "envoy.config.core.v3.Http2ProtocolOptions", {
    "hpack_table_size": f(UINT32, 4096),
    "max_concurrent_streams": f(Int("uint32", 1, 2**31 - 1), 2**31 - 1),
    "initial_stream_window_size": f(WINDOW, 268435456),
    "initial_connection_window_size": f(WINDOW, 268435456),
    "allow_connect": no("CONNECT over HTTP/2 is not supported", BOOL, False),
    "allow_metadata": no("HTTP/2 METADATA frames are not supported", BOOL, False),
    "max_outbound_frames": f(Int("uint32", 1, 2**32 - 1), 10000),
    "max_outbound_control_frames": f(Int("uint32", 1, 2**32 - 1), 1000),
    "max_consecutive_inbound_frames_with_empty_payload": f(UINT32, 1),
    "max_inbound_priority_frames_per_stream": f(UINT32, 100),
    "max_inbound_window_update_frames_per_data_frame_sent": f(Int("uint32", 1, 2**32 - 1), 10),
    # cyvoy answers a malformed request with RST_STREAM and keeps the connection (RFC 9113 8.1.1)
    "stream_error_on_invalid_http_messaging": no(
        "cyvoy always resets only the stream of a malformed request", BOOL, True, False),
    "override_stream_error_on_invalid_http_message": no(
        "cyvoy always resets only the stream of a malformed request"),
    "custom_settings_parameters": no("custom SETTINGS parameters are not supported"),
    "connection_keepalive": no("HTTP/2 PING keepalives are not supported yet"),
    "use_oghttp2_codec": no("the HTTP/2 codec is not selectable", BOOL, False, True),
    "max_metadata_size": no("HTTP/2 METADATA frames are not supported"),
    "enable_huffman_encoding": no("HPACK Huffman options are not supported", BOOL, True),
})

# extensions/upstreams/http/v3/http_protocol_options.proto: which protocol a cluster speaks
UPSTREAM_PROTOCOL = "upstream_protocol_options"
message("UpstreamHttpProtocolOptions", "envoy.extensions.upstreams.http.v3.HttpProtocolOptions", {
    "common_http_protocol_options": no("upstream common_http_protocol_options are not supported "
                                       "yet (upstream idle connections use the listeners' "
                                       "idle_timeout)"),
    "upstream_http_protocol_options": no("upstream HTTP options are not supported yet"),
    "explicit_http_config": f(Msg("ExplicitHttpConfig"), oneof=UPSTREAM_PROTOCOL),
    "use_downstream_protocol_config": f(Msg("UseDownstreamHttpConfig"), oneof=UPSTREAM_PROTOCOL),
    "auto_config": no("ALPN-chosen upstream protocols (auto_config) are not supported yet; use "
                      "explicit_http_config", oneof=UPSTREAM_PROTOCOL),
    "http_filters": no("upstream HTTP filters are not supported"),
    "header_validation_config": no("header validators are not supported"),
})
message("ExplicitHttpConfig",
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions.ExplicitHttpConfig", {
    # only {}: cyvoy's HTTP/1 options are fixed (checked in config/clusters.py)
    "http_protocol_options": f(STRUCT, oneof="protocol_config"),
    "http2_protocol_options": f(Msg("Http2ProtocolOptions"), oneof="protocol_config"),
    "http3_protocol_options": no("HTTP/3 is not supported", oneof="protocol_config"),
}, required_oneofs=("protocol_config",))
message("UseDownstreamHttpConfig",
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions.UseDownstreamHttpConfig", {
    "http_protocol_options": no("HTTP/1 protocol options are not supported yet", STRUCT, {}),
    "http2_protocol_options": f(Msg("Http2ProtocolOptions")),
    "http3_protocol_options": no("HTTP/3 is not supported"),
})

message("HttpFilter",
        "envoy.extensions.filters.network.http_connection_manager.v3.HttpFilter", {
    "name": f(NONEMPTY, required=True),
    "typed_config": f(TypedConfig("http_filter")),
    "config_discovery": no(EXT_DISCOVERY),
    "is_optional": no("optional filters are not supported", BOOL, False),
    "disabled": no("disabled filters are not supported", BOOL, False),
})

# HttpConnectionManager.UpgradeConfig and RouteAction.UpgradeConfig: HTTP/1.1 upgrades
message("UpgradeConfig",
        "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager.UpgradeConfig", {
            "upgrade_type": f(NONEMPTY, required=True),
            "filters": no("upgrade-specific filter chains are not supported"),
            "enabled": f(BOOL, True),
        })

message("RouteUpgradeConfig", "envoy.config.route.v3.RouteAction.UpgradeConfig", {
    "upgrade_type": f(NONEMPTY, required=True),
    "enabled": f(BOOL, True),
    "connect_config": no("CONNECT is not supported"),
})

# extensions/filters/network/connection_limit/v3/connection_limit.proto
message("ConnectionLimit", "envoy.extensions.filters.network.connection_limit.v3.ConnectionLimit", {
    "stat_prefix": f(NONEMPTY, required=True),
    "max_connections": f(Int("uint64", 1, 2**63 - 1), required=True),
    "delay": f(DURATION),
    "runtime_enabled": no("runtime feature flags are not supported"),
})

# config/overload/v3/overload.proto: only the proactive global connection limit
message("OverloadManager", "envoy.config.overload.v3.OverloadManager", {
    # the one monitor cyvoy runs is proactive (checked on every accept): nothing to refresh
    "refresh_interval": f(DURATION),
    "resource_monitors": f(List(Msg("ResourceMonitor"))),
    "actions": no("overload actions are not supported (only the global connection limit is)"),
    "buffer_factory_config": no("buffer factory options are not supported"),
    "loadshed_points": no("load shed points are not supported"),
})

message("ResourceMonitor", "envoy.config.overload.v3.ResourceMonitor", {
    "name": f(NONEMPTY, required=True),
    "typed_config": f(TypedConfig("resource_monitor")),
})

message("DownstreamConnectionsConfig",
        "envoy.extensions.resource_monitors.downstream_connections.v3.DownstreamConnectionsConfig", {
            "max_active_downstream_connections": f(Int("int64", 1, 2**63 - 1), required=True),
        })

# extensions/filters/http/fault/v3/fault.proto, extensions/filters/common/fault/v3/fault.proto
FAULT_RUNTIME = "fault runtime keys are read under their default names only"
# extensions/filters/http/grpc_http1_bridge/v3/config.proto
message("GrpcHttp1Bridge", "envoy.extensions.filters.http.grpc_http1_bridge.v3.Config", {
    "upgrade_protobuf_to_grpc": no("protobuf-to-gRPC upgrades are not supported", BOOL, False),
    "ignore_query_parameters": no("ignoring query parameters is not supported", BOOL, False),
})

message("HTTPFault", "envoy.extensions.filters.http.fault.v3.HTTPFault", {
    "delay": f(Msg("FaultDelay")),
    "abort": f(Msg("FaultAbort")),
    "upstream_cluster": f(STRING, ""),
    "headers": f(List(Msg("HeaderMatcher"))),
    "downstream_nodes": no("downstream node matching is not supported"),
    "max_active_faults": f(UINT32),
    "response_rate_limit": no("response rate limit faults are not supported yet"),
    "delay_percent_runtime": no(FAULT_RUNTIME, STRING, "fault.http.delay.fixed_delay_percent"),
    "abort_percent_runtime": no(FAULT_RUNTIME, STRING, "fault.http.abort.abort_percent"),
    "delay_duration_runtime": no(FAULT_RUNTIME, STRING, "fault.http.delay.fixed_duration_ms"),
    "abort_http_status_runtime": no(FAULT_RUNTIME, STRING, "fault.http.abort.http_status"),
    "max_active_faults_runtime": no(FAULT_RUNTIME, STRING, "fault.http.max_active_faults"),
    "response_rate_limit_percent_runtime": no(FAULT_RUNTIME, STRING,
                                              "fault.http.rate_limit.response_percent"),
    "abort_grpc_status_runtime": no("gRPC aborts are not supported yet"),
    # cyvoy keeps no per-downstream-cluster fault stats, so turning them off changes nothing
    "disable_downstream_cluster_stats": f(BOOL, False),
    "filter_metadata": no(METADATA),
})

message("FaultDelay", "envoy.extensions.filters.common.fault.v3.FaultDelay", {
    "fixed_delay": f(POSITIVE_DURATION, oneof="fault_delay_secifier"),
    "header_delay": f(Msg("FaultHeaderDelay"), oneof="fault_delay_secifier"),
    "percentage": f(Msg("FractionalPercent")),
}, required_oneofs=("fault_delay_secifier",))

message("FaultHeaderDelay", "envoy.extensions.filters.common.fault.v3.FaultDelay.HeaderDelay", {})

message("FaultAbort", "envoy.extensions.filters.http.fault.v3.FaultAbort", {
    "http_status": f(Int("uint32", 200, 599), oneof="error_type"),
    "grpc_status": no("gRPC aborts are not supported yet", oneof="error_type"),
    "header_abort": f(Msg("FaultHeaderAbort"), oneof="error_type"),
    "percentage": f(Msg("FractionalPercent")),
}, required_oneofs=("error_type",))

message("FaultHeaderAbort", "envoy.extensions.filters.http.fault.v3.FaultAbort.HeaderAbort", {})

# extensions/filters/http/local_ratelimit/v3/local_rate_limit.proto, type/v3/token_bucket.proto
message("LocalRateLimit", "envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit", {
    # min_len 1 in the proto; a per-route config without one uses the filter's (see the loader)
    "stat_prefix": f(STRING, ""),
    "status": f(Msg("HttpStatus")),
    "token_bucket": f(Msg("TokenBucket")),
    "filter_enabled": f(Msg("RuntimeFractionalPercent")),
    "filter_enforced": f(Msg("RuntimeFractionalPercent")),
    "request_headers_to_add_when_not_enforced": f(List(Msg("HeaderValueOption"), max_items=10)),
    "response_headers_to_add": f(List(Msg("HeaderValueOption"), max_items=10)),
    "descriptors": no("rate limit descriptors are not supported; one token bucket per filter or "
                      "per route"),
    "stage": no("rate limit stages are not supported", UINT32, 0),
    "local_rate_limit_per_downstream_connection": no(
        "per-connection token buckets are not supported (the bucket is shared by all workers)",
        BOOL, False),
    "local_cluster_rate_limit": no("cluster-wide rate limits are not supported"),
    "enable_x_ratelimit_headers": no("x-ratelimit-* headers are not supported",
                                     Enum(("OFF", "DRAFT_VERSION_03")), "OFF"),
    "vh_rate_limits": no("rate limit actions are not supported",
                         Enum(("OVERRIDE", "INCLUDE", "IGNORE")), "OVERRIDE"),
    "always_consume_default_token_bucket": no(
        "descriptors are not supported, so the default bucket is always consumed", BOOL, True),
    "rate_limited_as_resource_exhausted": no("gRPC replies are not supported yet", BOOL, False),
    "rate_limits": no("rate limit actions are not supported"),
    "max_dynamic_descriptors": no("rate limit descriptors are not supported"),
})

message("HttpStatus", "envoy.type.v3.HttpStatus", {
    "code": f(Int("uint32", 100, 599), required=True),
})

message("TokenBucket", "envoy.type.v3.TokenBucket", {
    "max_tokens": f(Int("uint32", 1, 2**32 - 1), required=True),
    "tokens_per_fill": f(Int("uint32", 1, 2**32 - 1), 1),
    "fill_interval": f(POSITIVE_DURATION, required=True),
})

# extensions/filters/http/router/v3/router.proto
message("Router", "envoy.extensions.filters.http.router.v3.Router", {
    "dynamic_stats": no("router stats options are not supported", BOOL, True),
    "start_child_span": no(TRACING, BOOL, False),
    "upstream_log": no(UPSTREAM_LOG),
    "upstream_log_options": no(UPSTREAM_LOG),
    "suppress_envoy_headers": no("suppressing x-envoy headers is not supported yet", BOOL,
                                 False),
    "strict_check_headers": no("strict header checks are not supported yet"),
    "respect_expected_rq_timeout": no("this option is not supported", BOOL, False),
    "suppress_grpc_request_failure_code_stats": no("gRPC stats are not supported", BOOL, False),
    "upstream_http_filters": no("upstream HTTP filters are not supported"),
})

# --- config/accesslog/v3/accesslog.proto, extensions/access_loggers/{file,stream}/v3/*.proto,
# --- config/core/v3/substitution_format_string.proto -------------------------------------------

message("AccessLog", "envoy.config.accesslog.v3.AccessLog", {
    "name": f(STRING, ""),
    "filter": no("access log filters are not supported yet"),
    "typed_config": f(TypedConfig("access_logger")),
})

message("FileAccessLog", "envoy.extensions.access_loggers.file.v3.FileAccessLog", {
    "path": f(NONEMPTY, required=True),
    # absent: Envoy's default format
    "format": f(STRING, oneof="access_log_format"),                 # deprecated
    "json_format": f(STRUCT, oneof="access_log_format"),            # deprecated: all strings
    "typed_json_format": f(STRUCT, oneof="access_log_format"),      # deprecated
    "log_format": f(Msg("SubstitutionFormatString"), oneof="access_log_format"),
    "udp_proxy": no("UDP access logging is not supported", BOOL, False),
})

message("StdoutAccessLog", "envoy.extensions.access_loggers.stream.v3.StdoutAccessLog", {
    "log_format": f(Msg("SubstitutionFormatString"), oneof="access_log_format"),
})

message("StderrAccessLog", "envoy.extensions.access_loggers.stream.v3.StderrAccessLog", {
    "log_format": f(Msg("SubstitutionFormatString"), oneof="access_log_format"),
})

message("SubstitutionFormatString", "envoy.config.core.v3.SubstitutionFormatString", {
    "text_format": f(STRING, oneof="format"),                       # deprecated
    "json_format": f(STRUCT, oneof="format"),
    "text_format_source": f(Msg("DataSource"), oneof="format"),
    "omit_empty_values": f(BOOL, False),
    "content_type": f(STRING, ""),          # for local replies; access logs ignore it, as Envoy
    "formatters": no("formatter extensions are not supported"),
}, required_oneofs=("format",))

# extensions/transport_sockets/raw_buffer/v3/raw_buffer.proto: plaintext, no options.
message("RawBuffer", "envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer", {})

# --- extensions/transport_sockets/tls/v3/tls.proto, common.proto -------------------------------

message("DownstreamTlsContext", "envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext", {
    "common_tls_context": f(Msg("CommonTlsContext"), required=True),
    "require_client_certificate": f(BOOL, False),
    "require_sni": no("require_sni is not supported yet", BOOL, False),
    # one ticket key per listener, made by the master and shared by its workers (proxy/tls.py)
    "session_ticket_keys": no("session ticket keys are not configurable: cyvoy makes one per "
                              "listener at start and shares it among its workers"),
    "session_ticket_keys_sds_secret_config": no(SDS),
    "disable_stateless_session_resumption": f(BOOL, False),
    "disable_stateful_session_resumption": no("session resumption options are not supported",
                                              BOOL, False),
    "session_timeout": no("TLS session timeouts are not supported yet"),
    "ocsp_staple_policy": no("OCSP stapling is not supported",
                             Enum(("LENIENT_STAPLING", "STRICT_STAPLING", "MUST_STAPLE")),
                             "LENIENT_STAPLING"),
    "full_scan_certs_on_sni_mismatch": no("certificates are selected by filter chain "
                                          "server_names only", BOOL, False),
    "prefer_client_ciphers": no("cipher preference is not configurable yet", BOOL, False),
})

message("CommonTlsContext", "envoy.extensions.transport_sockets.tls.v3.CommonTlsContext", {
    "tls_params": f(Msg("TlsParameters")),
    "tls_certificates": f(List(Msg("TlsCertificate"))),
    "tls_certificate_sds_secret_configs": no(SDS),
    "tls_certificate_provider_instance": no(CERT_PROVIDERS),
    "tls_certificate_certificate_provider": no(CERT_PROVIDERS),
    "tls_certificate_certificate_provider_instance": no(CERT_PROVIDERS),
    "custom_tls_certificate_selector": no(CERT_PROVIDERS),
    # upstream: the server certificate's trust anchors; downstream (mTLS) refused by the loader
    "validation_context": f(Msg("CertificateValidationContext"), oneof="validation_context_type"),
    "validation_context_sds_secret_config": no(MTLS, oneof="validation_context_type"),
    "combined_validation_context": no(MTLS, oneof="validation_context_type"),
    "validation_context_certificate_provider": no(MTLS, oneof="validation_context_type"),
    "validation_context_certificate_provider_instance": no(MTLS,
                                                           oneof="validation_context_type"),
    "alpn_protocols": f(List(STRING)),
    "custom_handshaker": no("custom TLS handshakers are not supported"),
    "key_log": no("TLS key logging is not supported"),
})

message("CertificateValidationContext",
        "envoy.extensions.transport_sockets.tls.v3.CertificateValidationContext", {
            "trusted_ca": f(Msg("DataSource")),
            "match_typed_subject_alt_names": no("subject alt name matching is not supported yet"),
            "match_subject_alt_names": no("subject alt name matching is not supported yet"),
            "verify_certificate_spki": no("certificate pinning is not supported"),
            "verify_certificate_hash": no("certificate pinning is not supported"),
            "crl": no("certificate revocation lists are not supported"),
            "allow_expired_certificate": no("expired certificates are never allowed", BOOL, False),
            "trust_chain_verification": no("the trust chain is always verified",
                                           Enum(("VERIFY_TRUST_CHAIN", "ACCEPT_UNTRUSTED")),
                                           "VERIFY_TRUST_CHAIN"),
            "custom_validator_config": no("custom certificate validators are not supported"),
            "only_verify_leaf_cert_crl": no("certificate revocation lists are not supported", BOOL, False),
            "max_verify_depth": no("the verification depth is not configurable"),
            "system_root_certs": no("system root certificates are not supported; give trusted_ca"),
            "trusted_ca_sds_secret_config": no(SDS),
            "ca_certificate_provider_instance": no(CERT_PROVIDERS),
            "watched_directory": no("certificate reloading is not supported"),
        })

# cluster transport_socket: envoy.transport_sockets.tls with an UpstreamTlsContext
message("UpstreamTransportSocket", "envoy.config.core.v3.TransportSocket", {
    "name": f(NONEMPTY, required=True),
    "typed_config": f(TypedConfig("upstream_transport_socket")),
})

message("UpstreamTlsContext", "envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext", {
    "common_tls_context": f(Msg("CommonTlsContext")),
    "sni": f(STRING, ""),
    "auto_host_sni": no("automatic SNI is not supported yet", BOOL, False),
    "auto_sni_san_validation": no("automatic SNI is not supported yet", BOOL, False),
    "allow_renegotiation": no("TLS renegotiation is never allowed", BOOL, False),
    "max_session_keys": no("TLS session resumption is not configurable", UINT32, 1),
    "enforce_rsa_key_usage": no("this option is not supported"),
})

TLS_VERSIONS = Enum(("TLS_AUTO", "TLSv1_0", "TLSv1_1", "TLSv1_2", "TLSv1_3"))

message("TlsParameters", "envoy.extensions.transport_sockets.tls.v3.TlsParameters", {
    "tls_minimum_protocol_version": f(TLS_VERSIONS, "TLS_AUTO"),
    "tls_maximum_protocol_version": f(TLS_VERSIONS, "TLS_AUTO"),
    "cipher_suites": f(List(NONEMPTY)),
    "ecdh_curves": no("ECDH curve lists are not configurable (OpenSSL's defaults apply)"),
    "signature_algorithms": no("signature algorithm lists are not configurable"),
    "compliance_policies": no("TLS compliance policies are not supported"),
})

message("TlsCertificate", "envoy.extensions.transport_sockets.tls.v3.TlsCertificate", {
    "certificate_chain": f(Msg("DataSource"), required=True),
    "private_key": f(Msg("DataSource"), required=True),
    "pkcs12": no("PKCS#12 bundles are not supported; use PEM"),
    "watched_directory": no("certificate reloading is not supported"),
    "private_key_provider": no("private key providers are not supported"),
    "password": no("encrypted private keys are not supported"),
    "ocsp_staple": no("OCSP stapling is not supported"),
    "signed_certificate_timestamp": no("signed certificate timestamps are not supported"),
})

# config/core/v3/base.proto
message("DataSource", "envoy.config.core.v3.DataSource", {
    "filename": f(NONEMPTY, oneof="specifier"),
    "inline_bytes": f(Bytes(), oneof="specifier"),
    "inline_string": f(STRING, oneof="specifier"),
    "environment_variable": f(NONEMPTY, oneof="specifier"),
    "watched_directory": no("file watching is not supported"),
}, required_oneofs=("specifier",))

# --- config/route/v3/route.proto, route_components.proto ---------------------------------------

message("RouteConfiguration", "envoy.config.route.v3.RouteConfiguration", {
    "name": f(STRING, ""),
    "virtual_hosts": f(List(Msg("VirtualHost"))),
    "vhds": no(XDS),
    "internal_only_headers": no("internal-only headers are not supported yet"),
    **_header_edits(),
    "most_specific_header_mutations_wins": no("header mutation order is not configurable",
                                              BOOL, False),
    # Envoy checks inline routes against the static clusters by default; so does cyvoy, always.
    "validate_clusters": no("cyvoy always checks that routed clusters exist", BOOL, True),
    "max_direct_response_body_size_bytes": f(UINT32, 4096),
    "cluster_specifier_plugins": no("cluster specifier plugins are not supported"),
    "request_mirror_policies": f(List(Msg("RequestMirrorPolicy"))),
    "ignore_port_in_host_matching": no("host matching options are not supported yet",
                                       BOOL, False),
    "ignore_path_parameters_in_path_matching": no("path matching options are not supported",
                                                  BOOL, False),
    "typed_per_filter_config": no(PER_FILTER),
    "metadata": no(METADATA),
})

message("VirtualHost", "envoy.config.route.v3.VirtualHost", {
    "name": f(NONEMPTY, required=True),
    "domains": f(List(Str(well_known="header_value"), min_items=1), required=True),
    "routes": f(List(Msg("Route"))),
    "matcher": no("generic matchers are not supported"),
    "require_tls": no("require_tls is not supported yet",
                      Enum(("NONE", "EXTERNAL_ONLY", "ALL")), "NONE"),
    "virtual_clusters": no("virtual clusters are not supported"),
    "rate_limits": no(RATE_LIMITS),
    **_header_edits(),
    "cors": no(CORS),
    "typed_per_filter_config": f(PER_FILTER_MAP, {}),
    "include_request_attempt_count": f(BOOL, False),
    "include_attempt_count_in_response": f(BOOL, False),
    "retry_policy": f(Msg("RetryPolicy")),
    "retry_policy_typed_config": no(RETRIES),
    "hedge_policy": no("request hedging is not supported"),
    "include_is_timeout_retry_header": no("x-envoy-is-timeout-retry is not supported", BOOL, False),
    "per_request_buffer_limit_bytes": no(BUFFER_LIMITS),
    "request_body_buffer_limit": no(BUFFER_LIMITS),
    "request_mirror_policies": f(List(Msg("RequestMirrorPolicy"))),
    "metadata": no(METADATA),
})

message("Route", "envoy.config.route.v3.Route", {
    "name": f(STRING, ""),
    "match": f(Msg("RouteMatch"), required=True),
    "route": f(Msg("RouteAction"), oneof="action"),
    "redirect": f(Msg("RedirectAction"), oneof="action"),
    "direct_response": f(Msg("DirectResponseAction"), oneof="action"),
    "filter_action": no("filter actions are not supported", oneof="action"),
    "non_forwarding_action": no("non-forwarding actions are not supported", oneof="action"),
    "metadata": no(METADATA),
    "decorator": no(TRACING),
    "typed_per_filter_config": f(PER_FILTER_MAP, {}),
    **_header_edits(),
    "tracing": no(TRACING),
    "per_request_buffer_limit_bytes": no(BUFFER_LIMITS),
    "request_body_buffer_limit": no(BUFFER_LIMITS),
    "stat_prefix": no("per-route stats are not supported"),
}, required_oneofs=("action",))

message("RouteMatch", "envoy.config.route.v3.RouteMatch", {
    "prefix": f(STRING, oneof="path_specifier"),
    "path": f(STRING, oneof="path_specifier"),
    "safe_regex": f(Msg("RegexMatcher"), oneof="path_specifier"),
    "connect_matcher": no("CONNECT is not supported", oneof="path_specifier"),
    "path_separated_prefix": no("path_separated_prefix is not supported yet",
                                oneof="path_specifier"),
    "path_match_policy": no("path match policies are not supported", oneof="path_specifier"),
    "case_sensitive": f(BOOL, True),
    "runtime_fraction": f(Msg("RuntimeFractionalPercent")),
    "headers": f(List(Msg("HeaderMatcher"))),
    "query_parameters": no("query parameter matching is not supported yet"),
    "grpc": f(STRUCT),      # GrpcRouteMatchOptions: an empty message
    "tls_context": no("TLS context matching is not supported yet"),
    "dynamic_metadata": no(METADATA),
    "filter_state": no("filter state matching is not supported"),
}, required_oneofs=("path_specifier",))

# type/matcher/v3/regex.proto
message("RegexMatcher", "envoy.type.matcher.v3.RegexMatcher", {
    "google_re2": f(Msg("GoogleRE2")),
    "regex": f(NONEMPTY, required=True),
})

message("GoogleRE2", "envoy.type.matcher.v3.RegexMatcher.GoogleRE2", {
    "max_program_size": no("RE2 program size limits are not supported"),
})

message("HeaderMatcher", "envoy.config.route.v3.HeaderMatcher", {
    "name": f(HEADER_NAME, required=True),
    "exact_match": f(STRING, oneof="header_match_specifier"),
    "safe_regex_match": f(Msg("RegexMatcher"), oneof="header_match_specifier"),
    "range_match": no("range header matching is not supported yet",
                      oneof="header_match_specifier"),
    "present_match": f(BOOL, oneof="header_match_specifier"),
    "prefix_match": f(NONEMPTY, oneof="header_match_specifier"),
    "suffix_match": f(NONEMPTY, oneof="header_match_specifier"),
    "contains_match": f(NONEMPTY, oneof="header_match_specifier"),
    "string_match": f(Msg("StringMatcher"), oneof="header_match_specifier"),
    "invert_match": f(BOOL, False),
    "treat_missing_header_as_empty": no("treat_missing_header_as_empty is not supported yet",
                                        BOOL, False),
})

# type/matcher/v3/string.proto
message("StringMatcher", "envoy.type.matcher.v3.StringMatcher", {
    "exact": f(STRING, oneof="match_pattern"),
    "prefix": f(NONEMPTY, oneof="match_pattern"),
    "suffix": f(NONEMPTY, oneof="match_pattern"),
    "safe_regex": f(Msg("RegexMatcher"), oneof="match_pattern"),
    "contains": f(NONEMPTY, oneof="match_pattern"),
    "custom": no("custom string matchers are not supported", oneof="match_pattern"),
    "ignore_case": f(BOOL, False),
}, required_oneofs=("match_pattern",))

message("RouteAction", "envoy.config.route.v3.RouteAction", {
    "cluster": f(NONEMPTY, oneof="cluster_specifier"),
    "cluster_header": f(HEADER_NAME, oneof="cluster_specifier"),
    "weighted_clusters": f(Msg("WeightedCluster"), oneof="cluster_specifier"),
    "cluster_specifier_plugin": no("cluster specifier plugins are not supported",
                                   oneof="cluster_specifier"),
    "inline_cluster_specifier_plugin": no("cluster specifier plugins are not supported",
                                          oneof="cluster_specifier"),
    "cluster_not_found_response_code": f(
        Enum(("SERVICE_UNAVAILABLE", "NOT_FOUND", "INTERNAL_SERVER_ERROR")), "SERVICE_UNAVAILABLE"),
    "metadata_match": no(SUBSETS),
    "prefix_rewrite": f(HEADER_VALUE),
    "regex_rewrite": no(REGEX_REWRITE),
    "path_rewrite_policy": no("path rewrite policies are not supported"),
    "path_rewrite": no("path rewrite formatters are not supported"),
    "host_rewrite_literal": f(HEADER_VALUE, oneof="host_rewrite_specifier"),
    "auto_host_rewrite": f(BOOL, oneof="host_rewrite_specifier"),
    "host_rewrite_header": no("host rewrites from a header are not supported yet",
                              oneof="host_rewrite_specifier"),
    "host_rewrite_path_regex": no("host rewrites from a regex are not supported yet",
                                  oneof="host_rewrite_specifier"),
    "append_x_forwarded_host": no("x-forwarded-host is not supported yet", BOOL, False),
    "timeout": f(DURATION, 15.0),
    "idle_timeout": no("per-route idle timeouts are not supported yet"),
    "early_data_policy": no("TLS early data is not supported"),
    "retry_policy": f(Msg("RetryPolicy")),
    "retry_policy_typed_config": no(RETRIES),
    "request_mirror_policies": f(List(Msg("RequestMirrorPolicy"))),
    "priority": no("routing priorities are not supported yet",
                   Enum(("DEFAULT", "HIGH")), "DEFAULT"),
    "rate_limits": no(RATE_LIMITS),
    "include_vh_rate_limits": no(RATE_LIMITS, BOOL, False),
    "hash_policy": f(List(Msg("HashPolicy")), []),
    "cors": no(CORS),
    "max_grpc_timeout": no("gRPC timeouts are not supported"),
    "grpc_timeout_offset": no("gRPC timeouts are not supported"),
    "upgrade_configs": f(List(Msg("RouteUpgradeConfig"))),
    "internal_redirect_policy": no("internal redirects are not supported"),
    "internal_redirect_action": no(
        "internal redirects are not supported",
        Enum(("PASS_THROUGH_INTERNAL_REDIRECT", "HANDLE_INTERNAL_REDIRECT")),
        "PASS_THROUGH_INTERNAL_REDIRECT"),
    "max_internal_redirects": no("internal redirects are not supported"),
    "hedge_policy": no("request hedging is not supported"),
    "max_stream_duration": f(Msg("MaxStreamDuration")),
}, required_oneofs=("cluster_specifier",))

# route/v3/route_components.proto: RouteAction.MaxStreamDuration (gRPC deadlines as route timeouts)
message("MaxStreamDuration", "envoy.config.route.v3.RouteAction.MaxStreamDuration", {
    "max_stream_duration": no("max_stream_duration is not supported yet; use the route timeout"),
    "grpc_timeout_header_max": f(DURATION),
    "grpc_timeout_header_offset": f(DURATION),
})

# route/v3/route_components.proto: RouteAction.RequestMirrorPolicy
message("RequestMirrorPolicy", "envoy.config.route.v3.RouteAction.RequestMirrorPolicy", {
    "cluster": f(NONEMPTY, oneof="cluster_specifier"),
    "cluster_header": f(HEADER_NAME, oneof="cluster_specifier"),
    "runtime_fraction": f(Msg("RuntimeFractionalPercent")),
    "trace_sampled": no(TRACING),
    "disable_shadow_host_suffix_append": f(BOOL, False),
    "request_headers_mutations": no("header mutations of mirrored requests are not supported"),
    "host_rewrite_literal": no("host rewrites of mirrored requests are not supported"),
}, required_oneofs=("cluster_specifier",))

# config/core/v3/base.proto, type/v3/percent.proto: a share of requests (route runtime_fraction)
message("RuntimeFractionalPercent", "envoy.config.core.v3.RuntimeFractionalPercent", {
    "default_value": f(Msg("FractionalPercent"), required=True),
    "runtime_key": f(STRING),
})

message("FractionalPercent", "envoy.type.v3.FractionalPercent", {
    "numerator": f(UINT32, 0),
    "denominator": f(Enum(("HUNDRED", "TEN_THOUSAND", "MILLION")), "HUNDRED"),
})

# route/v3/route_components.proto: RetryPolicy (route level; the virtual host level is refused)
message("RetryPolicy", "envoy.config.route.v3.RetryPolicy", {
    "retry_on": f(STRING, ""),
    "num_retries": f(UINT32, 1),
    "per_try_timeout": f(DURATION),
    "per_try_idle_timeout": f(DURATION),
    "retry_priority": no("retry priorities are not supported"),
    "retry_host_predicate": f(List(Msg("RetryHostPredicate")), []),
    "retry_options_predicates": no("retry options predicates are not supported"),
    "host_selection_retry_max_attempts": f(INT64, 1),
    "retriable_status_codes": f(List(UINT32), []),
    "retry_back_off": f(Msg("RetryBackOff")),
    "rate_limited_retry_back_off": f(Msg("RateLimitedRetryBackOff")),
    "retriable_headers": f(List(Msg("HeaderMatcher"))),
    "retriable_request_headers": f(List(Msg("HeaderMatcher"))),
})

message("RateLimitedRetryBackOff", "envoy.config.route.v3.RetryPolicy.RateLimitedRetryBackOff", {
    "reset_headers": f(List(Msg("ResetHeader"), min_items=1), required=True),
    "max_interval": f(POSITIVE_DURATION, 300.0),
})

message("ResetHeader", "envoy.config.route.v3.RetryPolicy.ResetHeader", {
    "name": f(HEADER_NAME, required=True),
    "format": f(Enum(("SECONDS", "UNIX_TIMESTAMP")), "SECONDS"),
})

message("CidrRange", "envoy.config.core.v3.CidrRange", {
    "address_prefix": f(NONEMPTY, required=True),
    "prefix_len": f(Int("uint32", 0, 128), 0),
})

# extensions/filters/network/http_connection_manager/v3: InternalAddressConfig
message("InternalAddressConfig",
        "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager."
        "InternalAddressConfig", {
            "unix_sockets": no("cyvoy listens on TCP only", BOOL, False),
            "cidr_ranges": f(List(Msg("CidrRange"))),
        })

message("RetryBackOff", "envoy.config.route.v3.RetryPolicy.RetryBackOff", {
    "base_interval": f(POSITIVE_DURATION, required=True),
    "max_interval": f(POSITIVE_DURATION),
})

message("RetryHostPredicate", "envoy.config.route.v3.RetryPolicy.RetryHostPredicate", {
    "name": f(NONEMPTY, required=True),
    "typed_config": f(STRUCT),
})

# route/v3/route_components.proto: RouteAction.HashPolicy (keys for RING_HASH / MAGLEV)
message("HashPolicy", "envoy.config.route.v3.RouteAction.HashPolicy", {
    "header": f(Msg("HashPolicyHeader"), oneof="policy_specifier"),
    "cookie": f(Msg("HashPolicyCookie"), oneof="policy_specifier"),
    "connection_properties": f(Msg("HashPolicyConnectionProperties"), oneof="policy_specifier"),
    "query_parameter": f(Msg("HashPolicyQueryParameter"), oneof="policy_specifier"),
    "filter_state": no("filter state is not supported", oneof="policy_specifier"),
    "terminal": f(BOOL, False),
}, required_oneofs=("policy_specifier",))

message("HashPolicyHeader", "envoy.config.route.v3.RouteAction.HashPolicy.Header", {
    "header_name": f(HEADER_NAME, required=True),
    "regex_rewrite": no(REGEX_REWRITE),
})

message("HashPolicyCookie", "envoy.config.route.v3.RouteAction.HashPolicy.Cookie", {
    "name": f(NONEMPTY, required=True),
    # With a ttl Envoy generates the cookie when it is absent; cyvoy hashes existing cookies only.
    "ttl": no("generated cookies are not supported; cyvoy hashes an existing cookie only"),
    "path": no("generated cookies are not supported; cyvoy hashes an existing cookie only"),
    "attributes": no("generated cookies are not supported; cyvoy hashes an existing cookie only"),
})

message("HashPolicyConnectionProperties",
        "envoy.config.route.v3.RouteAction.HashPolicy.ConnectionProperties", {
            "source_ip": f(BOOL, False),
        })

message("HashPolicyQueryParameter", "envoy.config.route.v3.RouteAction.HashPolicy.QueryParameter", {
    "name": f(NONEMPTY, required=True),
})

message("WeightedCluster", "envoy.config.route.v3.WeightedCluster", {
    "clusters": f(List(Msg("ClusterWeight"), min_items=1), required=True),
    # Deprecated in Envoy; when given, the weights must add up to it.
    "total_weight": f(Int("uint32", 1, 2**32 - 1)),
    # Accepted and ignored with a warning at start (issue 4): the configured weights apply.
    "runtime_key_prefix": f(STRING, ""),
    "header_name": no("header-driven cluster choice is not supported",
                      oneof="random_value_specifier"),
    "use_hash_policy": no("hash policies are not supported yet", BOOL, False),
})

message("ClusterWeight", "envoy.config.route.v3.WeightedCluster.ClusterWeight", {
    "name": f(NONEMPTY, required=True),
    "cluster_header": no("choosing the cluster from a request header is not supported yet"),
    "weight": f(UINT32, 0),
    "metadata_match": no(SUBSETS),
    **_header_edits(),
    "typed_per_filter_config": no(PER_FILTER),
    "host_rewrite_literal": no("per-cluster host rewrites are not supported yet"),
})

message("RedirectAction", "envoy.config.route.v3.RedirectAction", {
    "https_redirect": f(BOOL, oneof="scheme_rewrite_specifier"),
    "scheme_redirect": f(NONEMPTY, oneof="scheme_rewrite_specifier"),
    "host_redirect": f(HEADER_VALUE),
    "port_redirect": f(PORT, 0),
    "path_redirect": f(HEADER_VALUE, oneof="path_rewrite_specifier"),
    "prefix_rewrite": f(HEADER_VALUE, oneof="path_rewrite_specifier"),
    "regex_rewrite": no(REGEX_REWRITE, oneof="path_rewrite_specifier"),
    "response_code": f(Enum(("MOVED_PERMANENTLY", "FOUND", "SEE_OTHER", "TEMPORARY_REDIRECT",
                             "PERMANENT_REDIRECT")), "MOVED_PERMANENTLY"),
    "strip_query": f(BOOL, False),
})

message("DirectResponseAction", "envoy.config.route.v3.DirectResponseAction", {
    "status": f(Int("uint32", 100, 599), required=True),
    "body": f(Msg("DataSource")),
    "body_format": no("body formatting is not supported yet"),
})

# config/core/v3/base.proto
message("HeaderValueOption", "envoy.config.core.v3.HeaderValueOption", {
    "header": f(Msg("HeaderValue"), required=True),
    "append": f(BOOL),            # deprecated in favour of append_action
    "append_action": f(Enum(("APPEND_IF_EXISTS_OR_ADD", "ADD_IF_ABSENT",
                             "OVERWRITE_IF_EXISTS_OR_ADD", "OVERWRITE_IF_EXISTS"))),
    "keep_empty_value": no("keep_empty_value is not supported yet", BOOL, False),
})

message("HeaderValue", "envoy.config.core.v3.HeaderValue", {
    "key": f(HEADER_NAME, required=True),
    "value": f(HEADER_VALUE, ""),
    "raw_value": no("raw header values are not supported; use value"),
})

# --- config/cluster/v3/cluster.proto -----------------------------------------------------------

message("Cluster", "envoy.config.cluster.v3.Cluster", {
    "transport_socket_matches": no("upstream TLS is not supported yet"),
    "name": f(NONEMPTY, required=True),
    "alt_stat_name": no("alternative stat names are not supported"),
    "type": f(Enum(("STATIC", "STRICT_DNS", "LOGICAL_DNS", "EDS", "ORIGINAL_DST"),
                   refused={"EDS": "EDS needs xDS, which is not supported",
                            "ORIGINAL_DST": "original-destination clusters are not supported"}),
              "STATIC", oneof="cluster_discovery_type"),
    "cluster_type": no("custom cluster types are not supported",
                       oneof="cluster_discovery_type"),
    "eds_cluster_config": no(XDS),
    "connect_timeout": f(POSITIVE_DURATION, 5.0),
    "per_connection_buffer_limit_bytes": f(UINT32, 1024 * 1024),
    "lb_policy": f(Enum(("ROUND_ROBIN", "LEAST_REQUEST", "RING_HASH", "RANDOM", "MAGLEV",
                         "CLUSTER_PROVIDED", "LOAD_BALANCING_POLICY_CONFIG")), "ROUND_ROBIN"),
    "load_assignment": f(Msg("ClusterLoadAssignment")),
    "health_checks": f(List(Msg("HealthCheck"))),
    "max_requests_per_connection": no("per-connection request limits are not supported yet"),
    "circuit_breakers": f(Msg("CircuitBreakers")),
    "upstream_http_protocol_options": no("upstream HTTP options are not supported yet"),
    "common_http_protocol_options": no("upstream HTTP options are not supported yet"),
    "http_protocol_options": no("upstream HTTP/1 options are not supported yet", STRUCT, {}),
    # deprecated: typed_extension_protocol_options' explicit_http_config says the same
    "http2_protocol_options": f(Msg("Http2ProtocolOptions")),
    "typed_extension_protocol_options": f(TypedConfigMap("upstream_protocol_options")),
    "dns_refresh_rate": f(Duration(gt=0.001), 5.0),     # proto: gt 1ms
    "dns_jitter": no("DNS refresh jitter is not supported yet"),
    "dns_failure_refresh_rate": no("DNS failure back-off is not configurable yet"),
    "respect_dns_ttl": f(BOOL, False),
    "dns_lookup_family": f(Enum(("AUTO", "V4_ONLY", "V6_ONLY", "V4_PREFERRED", "ALL")), "AUTO"),
    "dns_resolvers": no(DNS_RESOLVER),
    "use_tcp_for_dns_lookups": no(DNS_RESOLVER, BOOL, False),
    "dns_resolution_config": no(DNS_RESOLVER),
    "typed_dns_resolver_config": no(DNS_RESOLVER),
    "wait_for_warm_on_init": no("cluster warm-up options are not supported", BOOL, True),
    "outlier_detection": f(Msg("OutlierDetection")),
    "cleanup_interval": no("original-destination clusters are not supported"),
    "upstream_bind_config": no("binding upstream connections is not supported"),
    "lb_subset_config": no(SUBSETS),
    "ring_hash_lb_config": f(Msg("RingHashLbConfig"), oneof="lb_config"),
    "maglev_lb_config": f(Msg("MaglevLbConfig"), oneof="lb_config"),
    "original_dst_lb_config": no("original-destination clusters are not supported",
                                 oneof="lb_config"),
    "least_request_lb_config": f(Msg("LeastRequestLbConfig"), oneof="lb_config"),
    "round_robin_lb_config": f(Msg("RoundRobinLbConfig"), oneof="lb_config"),
    "common_lb_config": f(Msg("CommonLbConfig")),
    "transport_socket": f(Msg("UpstreamTransportSocket")),
    "metadata": no(METADATA),
    "protocol_selection": no("upstream protocol selection is not supported yet",
                             Enum(("USE_CONFIGURED_PROTOCOL", "USE_DOWNSTREAM_PROTOCOL")),
                             "USE_CONFIGURED_PROTOCOL"),
    "upstream_connection_options": no("upstream socket options are not supported yet"),
    "close_connections_on_host_health_failure": no("this option is not supported yet",
                                                   BOOL, False),
    "ignore_health_on_host_removal": no("this option is not supported yet", BOOL, False),
    "filters": no("upstream network filters are not supported"),
    "load_balancing_policy": f(Msg("LoadBalancingPolicy")),
    "lrs_server": no("load reporting is not supported"),
    "lrs_report_endpoint_metrics": no("load reporting is not supported"),
    "track_timeout_budgets": no("timeout budget stats are not supported", BOOL, False),
    "upstream_config": no("custom upstreams are not supported"),
    "track_cluster_stats": no("optional cluster stats are not supported yet"),
    "preconnect_policy": no("preconnecting is not supported yet"),
    "connection_pool_per_downstream_connection": no("per-connection pools are not supported",
                                                    BOOL, False),
    # Removed from the v3 API, but still in many configs on the web: point at the replacement.
    "hosts": no("'hosts' was removed in Envoy's v3 API; list endpoints under load_assignment"),
    "tls_context": no("'tls_context' was removed in Envoy's v3 API (upstream TLS goes in "
                      "transport_socket, which cyvoy does not support yet)"),
})

# config/endpoint/v3/endpoint.proto, endpoint_components.proto
message("ClusterLoadAssignment", "envoy.config.endpoint.v3.ClusterLoadAssignment", {
    "cluster_name": f(NONEMPTY, required=True),
    "endpoints": f(List(Msg("LocalityLbEndpoints"))),
    "named_endpoints": no("named endpoints are not supported"),
    "policy": no("load assignment policies (overprovisioning, drops) are not supported yet"),
})

message("LocalityLbEndpoints", "envoy.config.endpoint.v3.LocalityLbEndpoints", {
    "locality": f(Msg("Locality")),
    "metadata": no(METADATA),
    "lb_endpoints": f(List(Msg("LbEndpoint"))),
    "leds_cluster_locality_config": no(XDS),
    # Envoy uses it only with common_lb_config.locality_weighted_lb_config.
    "load_balancing_weight": f(Int("uint32", 1, 2**32 - 1)),
    "priority": f(Int("uint32", 0, 128), 0),
    "proximity": no("locality proximity is not supported"),
})

message("Locality", "envoy.config.core.v3.Locality", {
    "region": f(STRING, ""),
    "zone": f(STRING, ""),
    "sub_zone": f(STRING, ""),
})

message("LbEndpoint", "envoy.config.endpoint.v3.LbEndpoint", {
    "endpoint": f(Msg("Endpoint"), oneof="host_identifier"),
    "endpoint_name": no("named endpoints are not supported", oneof="host_identifier"),
    "health_status": no("static endpoint health status is not supported",
                        Enum(("UNKNOWN", "HEALTHY", "UNHEALTHY", "DRAINING", "TIMEOUT",
                              "DEGRADED")), "UNKNOWN"),
    "metadata": no(METADATA),
    "load_balancing_weight": f(Int("uint32", 1, 2**32 - 1), 1),
}, required_oneofs=("host_identifier",))

message("Endpoint", "envoy.config.endpoint.v3.Endpoint", {
    "address": f(Msg("Address"), required=True),
    "health_check_config": f(Msg("HealthCheckConfig")),
    "hostname": f(STRING, ""),
    "additional_addresses": no("additional endpoint addresses are not supported"),
})

message("HealthCheckConfig", "envoy.config.endpoint.v3.Endpoint.HealthCheckConfig", {
    "port_value": f(PORT, 0),
    "hostname": no("health check host names per endpoint are not supported yet", STRING, ""),
    "address": f(Msg("Address")),
    "disable_active_health_check": no("disabling health checks per endpoint is not supported "
                                      "yet", BOOL, False),
})

# config/core/v3/health_check.proto
message("HealthCheck", "envoy.config.core.v3.HealthCheck", {
    "timeout": f(POSITIVE_DURATION, required=True),
    "interval": f(POSITIVE_DURATION, required=True),
    "initial_jitter": f(DURATION, 0.0),
    "interval_jitter": f(DURATION, 0.0),
    "interval_jitter_percent": f(UINT32, 0),
    "unhealthy_threshold": f(UINT32, required=True),
    "healthy_threshold": f(UINT32, required=True),
    "alt_port": no("alt_port was removed; use endpoint health_check_config.port_value"),
    "reuse_connection": f(BOOL, True),
    "http_health_check": f(Msg("HttpHealthCheck"), oneof="health_checker"),
    "tcp_health_check": f(Msg("TcpHealthCheck"), oneof="health_checker"),
    "grpc_health_check": f(Msg("GrpcHealthCheck"), oneof="health_checker"),
    "custom_health_check": no("custom health checkers are not supported",
                              oneof="health_checker"),
    "no_traffic_interval": f(POSITIVE_DURATION, 60.0),
    # The next four default to other fields; the cluster builder fills them in.
    "no_traffic_healthy_interval": f(POSITIVE_DURATION),
    "unhealthy_interval": f(POSITIVE_DURATION),
    "unhealthy_edge_interval": f(POSITIVE_DURATION),
    "healthy_edge_interval": f(POSITIVE_DURATION),
    "event_log_path": no("health check event logs are not supported"),
    "event_logger": no("health check event logs are not supported"),
    "event_service": no("health check event logs are not supported"),
    "always_log_health_check_failures": f(BOOL, False),
    "always_log_health_check_success": f(BOOL, False),
    "tls_options": no("upstream TLS is not supported yet"),
    "transport_socket_match_criteria": no("upstream TLS is not supported yet"),
}, required_oneofs=("health_checker",))

message("HttpHealthCheck", "envoy.config.core.v3.HealthCheck.HttpHealthCheck", {
    "host": f(HEADER_VALUE, ""),        # empty: the cluster name (filled in by the builder)
    "path": f(Str(min_len=1, well_known="header_value"), required=True),
    "send": no("health check request bodies are not supported"),
    "receive": no("health check response matching is not supported"),
    "response_buffer_size": no("health check response matching is not supported"),
    "request_headers_to_add": f(List(Msg("HeaderValueOption"), max_items=1000)),
    "request_headers_to_remove": f(List(HEADER_NAME)),
    "expected_statuses": f(List(Msg("Int64Range"))),    # empty: [200, 201)
    "retriable_statuses": f(List(Msg("Int64Range"))),
    "codec_client_type": f(Enum(("HTTP1", "HTTP2", "HTTP3"), refused={
        "HTTP2": "HTTP/2 HTTP health checks are not supported yet (grpc_health_check speaks HTTP/2)",
        "HTTP3": "HTTP/3 is not supported"}), "HTTP1"),
    "service_name_matcher": no("service name matching is not supported"),
    # CONNECT is excluded by Envoy's proto; METHOD_UNSPECIFIED means GET.
    "method": f(Enum(("METHOD_UNSPECIFIED", "GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS",
                      "TRACE", "PATCH")), "GET"),
})

message("TcpHealthCheck", "envoy.config.core.v3.HealthCheck.TcpHealthCheck", {
    "send": f(Msg("Payload")),
    "receive": f(List(Msg("Payload"))),
    "proxy_protocol_config": no("the PROXY protocol is not supported"),
})

message("Payload", "envoy.config.core.v3.HealthCheck.Payload", {
    "text": f(NONEMPTY, oneof="payload"),       # hex
    "binary": f(Bytes(), oneof="payload"),
}, required_oneofs=("payload",))

message("GrpcHealthCheck", "envoy.config.core.v3.HealthCheck.GrpcHealthCheck", {
    "service_name": f(STRING, ""),
    "authority": f(HEADER_VALUE, ""),   # empty: the cluster name (filled in by the builder)
    "initial_metadata": f(List(Msg("HeaderValueOption"), max_items=1000)),
})

# type/v3/range.proto
message("Int64Range", "envoy.type.v3.Int64Range", {
    "start": f(INT64, 0),
    "end": f(INT64, 0),
})

# config/cluster/v3/outlier_detection.proto
message("OutlierDetection", "envoy.config.cluster.v3.OutlierDetection", {
    "consecutive_5xx": f(UINT32, 5),
    "interval": f(POSITIVE_DURATION, 10.0),
    "base_ejection_time": f(POSITIVE_DURATION, 30.0),
    "max_ejection_percent": f(PCT_INT, 10),
    "enforcing_consecutive_5xx": f(PCT_INT, 100),
    "enforcing_success_rate": f(PCT_INT, 100),
    "success_rate_minimum_hosts": f(UINT32, 5),
    "success_rate_request_volume": f(UINT32, 100),
    "success_rate_stdev_factor": f(UINT32, 1900),
    "consecutive_gateway_failure": f(UINT32, 5),
    "enforcing_consecutive_gateway_failure": f(PCT_INT, 0),
    "split_external_local_origin_errors": f(BOOL, False),
    "consecutive_local_origin_failure": f(UINT32, 5),
    "enforcing_consecutive_local_origin_failure": f(PCT_INT, 100),
    "enforcing_local_origin_success_rate": f(PCT_INT, 100),
    "failure_percentage_threshold": f(PCT_INT, 85),
    "enforcing_failure_percentage": f(PCT_INT, 0),
    "enforcing_failure_percentage_local_origin": f(PCT_INT, 0),
    "failure_percentage_minimum_hosts": f(UINT32, 5),
    "failure_percentage_request_volume": f(UINT32, 50),
    "max_ejection_time": f(POSITIVE_DURATION),  # default max(300s, base_ejection_time): builder
    "max_ejection_time_jitter": f(DURATION, 0.0),
    "successful_active_health_check_uneject_host": f(BOOL, True),
    "monitors": no("outlier detection monitors are not supported"),
    "always_eject_one_host": f(BOOL, False),
})

# config/cluster/v3/circuit_breaker.proto
message("CircuitBreakers", "envoy.config.cluster.v3.CircuitBreakers", {
    "thresholds": f(List(Msg("Thresholds"))),
    "per_host_thresholds": f(List(Msg("Thresholds"))),
})

message("Thresholds", "envoy.config.cluster.v3.CircuitBreakers.Thresholds", {
    "priority": f(Enum(("DEFAULT", "HIGH")), "DEFAULT"),
    "max_connections": f(UINT32, 1024),
    "max_pending_requests": f(UINT32, 1024),
    "max_requests": f(UINT32, 1024),
    "max_retries": f(UINT32, 3),
    "retry_budget": f(Msg("RetryBudget")),       # absent: max_retries applies
    "track_remaining": f(BOOL, False),
    "max_connection_pools": f(UINT32),           # absent: unlimited
})

message("RetryBudget", "envoy.config.cluster.v3.CircuitBreakers.Thresholds.RetryBudget", {
    "budget_percent": f(PERCENT, 20.0),
    "min_retry_concurrency": f(UINT32, 3),
})

# config/cluster/v3/cluster.proto (nested load-balancer messages)
message("CommonLbConfig", "envoy.config.cluster.v3.Cluster.CommonLbConfig", {
    "healthy_panic_threshold": f(PERCENT, 50.0),
    "zone_aware_lb_config": f(Msg("ZoneAwareLbConfig"), oneof="locality_config_specifier"),
    "locality_weighted_lb_config": f(Msg("LocalityWeightedLbConfig"),
                                     oneof="locality_config_specifier"),
    "update_merge_window": f(DURATION, 1.0),
    "ignore_new_hosts_until_first_hc": f(BOOL, False),
    "close_connections_on_host_set_change": f(BOOL, False),
    "consistent_hashing_lb_config": f(Msg("ConsistentHashingLbConfig")),
    "override_host_status": no("host overrides are not supported"),
})

message("ZoneAwareLbConfig", "envoy.config.cluster.v3.Cluster.CommonLbConfig.ZoneAwareLbConfig", {
    "routing_enabled": f(PERCENT, 100.0),
    "min_cluster_size": f(UINT64, 6),
    "fail_traffic_on_panic": f(BOOL, False),
})

message("LocalityWeightedLbConfig",
        "envoy.config.cluster.v3.Cluster.CommonLbConfig.LocalityWeightedLbConfig", {})

message("ConsistentHashingLbConfig",
        "envoy.config.cluster.v3.Cluster.CommonLbConfig.ConsistentHashingLbConfig", {
    "use_hostname_for_hashing": f(BOOL, False),
    "hash_balance_factor": f(Int("uint32", 100, 2**32 - 1)),   # absent: unbounded
})

message("RoundRobinLbConfig", "envoy.config.cluster.v3.Cluster.RoundRobinLbConfig", {
    "slow_start_config": f(Msg("SlowStartConfig")),
})

message("LeastRequestLbConfig", "envoy.config.cluster.v3.Cluster.LeastRequestLbConfig", {
    "choice_count": f(Int("uint32", 2, 2**32 - 1), 2),
    "active_request_bias": f(Msg("RuntimeDouble")),   # absent: 1.0 (filled in by the builder)
    "slow_start_config": f(Msg("SlowStartConfig")),
})

message("RingHashLbConfig", "envoy.config.cluster.v3.Cluster.RingHashLbConfig", {
    "minimum_ring_size": f(Int("uint64", 0, 8388608), 1024),
    "hash_function": f(Enum(("XX_HASH", "MURMUR_HASH_2")), "XX_HASH"),
    "maximum_ring_size": f(Int("uint64", 0, 8388608), 8388608),
})

message("MaglevLbConfig", "envoy.config.cluster.v3.Cluster.MaglevLbConfig", {
    "table_size": f(Int("uint64", 0, 5000011), 65537),     # must also be prime: builder
})

message("SlowStartConfig", "envoy.config.cluster.v3.Cluster.SlowStartConfig", {
    "slow_start_window": f(DURATION),
    "aggression": f(Msg("RuntimeDouble")),     # absent: 1.0 (filled in by the builder)
    "min_weight_percent": f(PERCENT, 10.0),
})

# config/core/v3/base.proto
message("RuntimeDouble", "envoy.config.core.v3.RuntimeDouble", {
    "default_value": f(Double(), 0.0),
    "runtime_key": f(NONEMPTY, required=True),
})

message("LoadBalancingPolicy", "envoy.config.cluster.v3.LoadBalancingPolicy", {
    "policies": f(List(Msg("LoadBalancingPolicyEntry"))),
})

message("LoadBalancingPolicyEntry", "envoy.config.cluster.v3.LoadBalancingPolicy.Policy", {
    "typed_extension_config": f(Msg("TypedExtensionConfig"), required=True),
})

# config/core/v3/extension.proto; the policy's own config is kept, not interpreted.
message("TypedExtensionConfig", "envoy.config.core.v3.TypedExtensionConfig", {
    "name": f(NONEMPTY, required=True),
    "typed_config": f(AnyMsg(), required=True),
})
