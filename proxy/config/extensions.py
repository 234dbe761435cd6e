"""Which extension a `typed_config` names, and which schema message validates it.

Envoy finds an extension by the "@type" of its typed_config (the `name` beside it is then only a
label) and falls back to the name when there is no "@type". Each category below lists the
extensions cyvoy supports, with their exact proto type, and the other real Envoy extensions of
that category, which are refused as not supported rather than reported as unknown.

Envoy's naming convention ties the two together: extension "envoy.filters.http.<x>" is
configured by a message in proto package "envoy.extensions.filters.http.<x>.v3".
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any, Optional

from proxy.config.errors import ConfigError, join

TYPE_URL_PREFIX = "type.googleapis.com/"
# Generic wrappers that carry a config as a Struct; cyvoy validates real messages only.
_TYPED_STRUCTS = {"udpa.type.v1.TypedStruct", "xds.type.v3.TypedStruct"}


@dataclass(frozen=True)
class Supported:
    type_name: str      # full proto message name of its typed_config
    message: str        # key of the schema message that validates it


@dataclass(frozen=True)
class Category:
    what: str                           # for messages: "HTTP filter"
    name_prefix: str                    # "envoy.filters.http."
    package_prefix: str                 # "envoy.extensions.filters.http."
    supported: dict[str, Supported]     # by extension name
    refused: frozenset[str]             # other real Envoy extensions (name suffixes)
    refusal: str                        # completes "<what> <name> ..." for the refused ones

    def name_of_type(self, type_name: str) -> Optional[str]:
        """The extension name a proto type belongs to: a supported extension's own type, else
        by Envoy's package convention (which one package of several extensions, like the
        stdout/stderr access loggers' "stream", does not follow)."""
        for name, supported in self.supported.items():
            if supported.type_name == type_name:
                return name
        if not type_name.startswith(self.package_prefix):
            return None
        suffix = type_name[len(self.package_prefix):].split(".")[0]
        return self.name_prefix + suffix

    def is_known(self, name: str) -> bool:
        return name in self.supported or (
            name.startswith(self.name_prefix) and name[len(self.name_prefix):] in self.refused)

    def known_names(self) -> list[str]:
        return list(self.supported) + [self.name_prefix + s for s in sorted(self.refused)]


def _transport_sockets(tls_message: str) -> Category:
    """A listener's or a cluster's transport socket: TLS (with the side's TLS context message)
    or raw_buffer, which is the same as no transport socket."""
    return Category(
        what="transport socket",
        name_prefix="envoy.transport_sockets.",
        package_prefix="envoy.extensions.transport_sockets.",
        supported={
            "envoy.transport_sockets.tls": Supported(
                f"envoy.extensions.transport_sockets.tls.v3.{tls_message}", tls_message),
            "envoy.transport_sockets.raw_buffer": Supported(
                "envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer", "RawBuffer"),
        },
        refused=frozenset({
            "alts", "http_11_proxy", "internal_upstream", "proxy_protocol", "quic", "s2a",
            "starttls", "tap", "tcp_stats", "upstream_proxy_protocol",
        }),
        refusal="is not supported; only envoy.transport_sockets.tls and raw_buffer are",
    )


CATEGORIES: dict[str, Category] = {
    "network_filter": Category(
        what="network filter",
        name_prefix="envoy.filters.network.",
        package_prefix="envoy.extensions.filters.network.",
        supported={
            "envoy.filters.network.http_connection_manager": Supported(
                "envoy.extensions.filters.network.http_connection_manager.v3."
                "HttpConnectionManager", "HttpConnectionManager"),
            "envoy.filters.network.connection_limit": Supported(
                "envoy.extensions.filters.network.connection_limit.v3.ConnectionLimit",
                "ConnectionLimit"),
        },
        refused=frozenset({
            "client_ssl_auth", "direct_response", "dubbo_proxy", "echo",
            "ext_authz", "ext_proc", "generic_proxy", "golang", "kafka_broker", "kafka_mesh",
            "local_ratelimit", "mongo_proxy", "mysql_proxy", "postgres_proxy", "ratelimit",
            "rbac", "redis_proxy", "rocketmq_proxy", "set_filter_state", "sni_cluster",
            "sni_dynamic_forward_proxy", "tcp_proxy", "thrift_proxy", "wasm", "zookeeper_proxy",
        }),
        refusal="is not supported: cyvoy is an HTTP proxy and runs only "
                "envoy.filters.network.connection_limit and "
                "envoy.filters.network.http_connection_manager",
    ),
    "http_filter": Category(
        what="HTTP filter",
        name_prefix="envoy.filters.http.",
        package_prefix="envoy.extensions.filters.http.",
        supported={
            "envoy.filters.http.router": Supported(
                "envoy.extensions.filters.http.router.v3.Router", "Router"),
            "envoy.filters.http.fault": Supported(
                "envoy.extensions.filters.http.fault.v3.HTTPFault", "HTTPFault"),
            "envoy.filters.http.local_ratelimit": Supported(
                "envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit", "LocalRateLimit"),
            "envoy.filters.http.grpc_http1_bridge": Supported(
                "envoy.extensions.filters.http.grpc_http1_bridge.v3.Config", "GrpcHttp1Bridge"),
        },
        refused=frozenset({
            "adaptive_concurrency", "admission_control", "alternate_protocols_cache",
            "api_key_auth", "aws_lambda", "aws_request_signing", "bandwidth_limit", "basic_auth",
            "buffer", "cache", "cdn_loop", "composite", "compressor", "connect_grpc_bridge",
            "cors", "credential_injector", "csrf", "custom_response", "decompressor",
            "dynamic_forward_proxy", "ext_authz", "ext_proc", "file_system_buffer",
            "gcp_authn", "geoip", "golang", "grpc_field_extraction",
            "grpc_http1_reverse_bridge", "grpc_json_reverse_transcoder", "grpc_json_transcoder",
            "grpc_stats", "grpc_web", "gzip", "header_mutation", "header_to_metadata",
            "health_check", "ip_tagging", "json_to_metadata", "jwt_authn", "kill_request",
            "lua", "oauth2", "on_demand", "original_src",
            "proto_message_extraction", "rate_limit_quota", "ratelimit", "rbac",
            "set_filter_state", "set_metadata", "stateful_session", "tap", "thrift_to_metadata",
            "upstream_codec", "wasm",
        }),
        refusal="is not supported yet; cyvoy runs envoy.filters.http.fault, "
                "envoy.filters.http.local_ratelimit, envoy.filters.http.grpc_http1_bridge and "
                "envoy.filters.http.router",
    ),
    "upstream_transport_socket": _transport_sockets("UpstreamTlsContext"),
    "resource_monitor": Category(
        what="resource monitor",
        name_prefix="envoy.resource_monitors.",
        package_prefix="envoy.extensions.resource_monitors.",
        supported={
            "envoy.resource_monitors.global_downstream_max_connections": Supported(
                "envoy.extensions.resource_monitors.downstream_connections.v3."
                "DownstreamConnectionsConfig", "DownstreamConnectionsConfig"),
        },
        refused=frozenset({"fixed_heap", "injected_resource", "cgroup_memory", "cpu_utilization"}),
        refusal="is not supported; the overload manager of cyvoy runs only "
                "envoy.resource_monitors.global_downstream_max_connections",
    ),
    "access_logger": Category(
        what="access logger",
        name_prefix="envoy.access_loggers.",
        package_prefix="envoy.extensions.access_loggers.",
        supported={
            "envoy.access_loggers.file": Supported(
                "envoy.extensions.access_loggers.file.v3.FileAccessLog", "FileAccessLog"),
            "envoy.access_loggers.stdout": Supported(
                "envoy.extensions.access_loggers.stream.v3.StdoutAccessLog", "StdoutAccessLog"),
            "envoy.access_loggers.stderr": Supported(
                "envoy.extensions.access_loggers.stream.v3.StderrAccessLog", "StderrAccessLog"),
        },
        refused=frozenset({
            "http_grpc", "tcp_grpc", "open_telemetry", "fluentd", "wasm", "dynamic_modules",
        }),
        refusal="is not supported yet; cyvoy writes access logs with envoy.access_loggers.file, "
                "envoy.access_loggers.stdout and envoy.access_loggers.stderr",
    ),
    "downstream_transport_socket": _transport_sockets("DownstreamTlsContext"),
    # a cluster's typed_extension_protocol_options, keyed by the options' full type name
    "upstream_protocol_options": Category(
        what="protocol options",
        name_prefix="envoy.extensions.upstreams.",
        package_prefix="envoy.extensions.upstreams.",
        supported={
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": Supported(
                "envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "UpstreamHttpProtocolOptions"),
        },
        refused=frozenset({"tcp"}),
        refusal="are not supported; cyvoy reads only "
                "envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
    ),
}


def _refuse(path: str, category: Category, name: str) -> ConfigError:
    return ConfigError(path, f"not supported by cyvoy ({category.what} {name} "
                             f"{category.refusal})")


def resolve(category_key: str, name: Any, typed_config: Any, path: str) -> tuple[str, str]:
    """(canonical extension name, schema message) for the extension at `path`.

    `name` and `typed_config` are the raw values of the {name, typed_config} pair; raises
    ConfigError for type-URL mismatches, refused and unknown extensions.
    """
    category = CATEGORIES[category_key]
    name = name if isinstance(name, str) else ""
    tc_path = join(path, "typed_config")
    type_url = typed_config.get("@type") if isinstance(typed_config, dict) else None

    if type_url is None:
        if isinstance(typed_config, dict) and typed_config:
            raise ConfigError(tc_path, "missing '@type' (e.g. '@type: type.googleapis.com/...')")
        return _by_name(category, name, path)

    at_path = join(tc_path, "@type")
    if not isinstance(type_url, str) or "/" not in type_url:
        raise ConfigError(at_path, f"invalid type URL {type_url!r}: expected "
                                   f"'{TYPE_URL_PREFIX}<proto message name>'")
    type_name = type_url.rsplit("/", 1)[1]
    if type_name in _TYPED_STRUCTS:
        raise ConfigError(at_path, f"not supported by cyvoy ({type_name} wrappers are not "
                                   "supported; use the extension's own message)")
    by_type = category.name_of_type(type_name)
    if by_type in category.supported:
        expected = category.supported[by_type].type_name
        if type_name != expected:
            raise ConfigError(at_path, f"type {type_name!r} cannot configure {by_type}; "
                                       f"expected '{TYPE_URL_PREFIX}{expected}'")
        return by_type, category.supported[by_type].message
    if by_type is not None and category.is_known(by_type):
        raise _refuse(path, category, by_type)
    # The type is foreign to this category: say what the name would have needed.
    if name in category.supported:
        expected = category.supported[name].type_name
        raise ConfigError(at_path, f"type URL {type_url!r} does not match {name}; expected "
                                   f"'{TYPE_URL_PREFIX}{expected}'")
    if category.is_known(name):
        raise _refuse(path, category, name)
    raise ConfigError(path, f"unknown {category.what} {name!r} (type URL {type_url!r})")


def _by_name(category: Category, name: str, path: str) -> tuple[str, str]:
    if name in category.supported:
        return name, category.supported[name].message
    if category.is_known(name):
        raise _refuse(path, category, name)
    reason = f"unknown {category.what} {name!r}"
    close = difflib.get_close_matches(name, category.known_names(), n=1, cutoff=0.8)
    if close:
        reason += f"; did you mean {close[0]!r}?"
    raise ConfigError(join(path, "name"), reason)
