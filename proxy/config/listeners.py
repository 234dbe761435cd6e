"""Builds model.Listener: its address, the HTTP connection manager and downstream TLS."""
from __future__ import annotations

import ipaddress
import os
from collections.abc import Collection

from proxy.config import datasource
from proxy.config.addresses import socket_address
from proxy.config.errors import ConfigError, index, join
from proxy.access_log.format import FormatError, formatter_for
from proxy.config.model import (AccessLogConfig, ConnectionLimit, FilterChain, HttpConnectionManager,
                                Listener)
from proxy.config.filters import build_http_filter
from proxy.config.tls import downstream_tls
from proxy.config.routes import build_route_config, upgrade_map
from proxy.config.validate import validate

ROUTER = "envoy.filters.http.router"
HCM = "envoy.filters.network.http_connection_manager"
CONNECTION_LIMIT = "envoy.filters.network.connection_limit"
TLS = "envoy.transport_sockets.tls"
TLS_INSPECTOR = "envoy.filters.listener.tls_inspector"
FILE_LOGGER = "envoy.access_loggers.file"
STREAM_LOGGERS = {"envoy.access_loggers.stdout": "/dev/stdout",
                  "envoy.access_loggers.stderr": "/dev/stderr"}


def build_listeners(listeners: list[dict], path: str, clusters: Collection[str]) -> list[Listener]:
    out: list[Listener] = []
    names: dict[str, str] = {}
    bound: dict[tuple[str, int], str] = {}
    for i, raw in enumerate(listeners):
        lpath = index(path, i)
        listener = _listener(raw, i, lpath, clusters)
        if listener.name in names:
            raise ConfigError(join(lpath, "name"), f"duplicate listener name {listener.name!r} "
                                                   f"(also {names[listener.name]})")
        names[listener.name] = lpath
        where = (ipaddress.ip_address(listener.address).compressed, listener.port)
        if listener.port and where in bound:
            raise ConfigError(join(lpath, "address"),
                              f"{listener.address}:{listener.port} is already the address of "
                              f"{bound[where]}")
        bound[where] = lpath
        out.append(listener)
    return out


def _listener(raw: dict, i: int, path: str, clusters: Collection[str]) -> Listener:
    # Envoy names an unnamed listener with a generated UUID; an index is easier to find.
    name = raw["name"] or f"listener_{i}"
    address, port = socket_address(raw["address"], join(path, "address"), need_ip=True)
    _listener_filters(raw["listener_filters"], join(path, "listener_filters"))
    raw_chains, cpath = raw["filter_chains"], join(path, "filter_chains")
    if not raw_chains and raw["default_filter_chain"] is None:
        raise ConfigError(cpath, "a listener needs a filter chain with the "
                                 "envoy.filters.network.http_connection_manager filter")
    chains, limits = [], []
    for k, chain in enumerate(raw_chains):
        built, limit = _chain(chain, index(cpath, k), clusters)
        chains.append(built)
        limits.append(limit)
    if raw["default_filter_chain"] is not None:
        built, limit = _chain(raw["default_filter_chain"], join(path, "default_filter_chain"), clusters)
        built.is_default = True
        chains.append(built)
        limits.append(limit)
    if len(chains) > 1:
        _check_sni_chains(chains, raw_chains, path)
        for k, limit in enumerate(limits):
            if limit is not None:
                raise ConfigError(index(cpath, k), f"not supported by cyvoy ({CONNECTION_LIMIT} on a "
                                                   "listener with several filter chains)")
    first = chains[0]
    return Listener(name=name, address=address, port=port, hcm=first.hcm, tls=first.tls,
                    connection_limit=limits[0], chains=chains,
                    ignore_global_conn_limit=raw["ignore_global_conn_limit"])


def _listener_filters(filters: list, path: str) -> None:
    """tls_inspector is accepted and needs nothing (the TLS handshake gives the SNI); others are
    refused."""
    for k, f in enumerate(filters):
        typed = f["typed_config"] or {}
        kind = typed.get("@type", "").rsplit("/", 1)[-1]
        if f["name"] != TLS_INSPECTOR and not kind.endswith(".tls_inspector.v3.TlsInspector"):
            raise ConfigError(index(path, k), f"not supported by cyvoy (listener filter "
                                              f"{f['name']!r}; only {TLS_INSPECTOR} is accepted)")


def _check_sni_chains(chains: list, raw_chains: list, path: str) -> None:
    """Several filter chains: told apart by the client's SNI, so all of them terminate TLS, and
    no two may match the same name (Envoy refuses such listeners too)."""
    seen: dict[str, int] = {}
    catch_all = None
    for k, c in enumerate(chains):
        cpath = index(join(path, "filter_chains"), k) if not c.is_default else join(path, "default_filter_chain")
        if c.tls is None:
            raise ConfigError(join(cpath, "transport_socket"),
                              "not supported by cyvoy (a listener with several filter chains picks "
                              "one by the TLS server name: each needs envoy.transport_sockets.tls)")
        if c.is_default:
            continue
        if not c.server_names:
            if catch_all is not None:
                raise ConfigError(join(cpath, "filter_chain_match"),
                                  f"matches every connection, as filter_chains[{catch_all}] does")
            catch_all = k
        for name in c.server_names:
            key = name.lower()
            if key in seen:
                raise ConfigError(join(join(cpath, "filter_chain_match"), "server_names"),
                                  f"{name!r} is already matched by filter_chains[{seen[key]}]")
            seen[key] = k


def _chain(chain: dict, cpath: str, clusters: Collection[str]):
    """(FilterChain, its connection limit) for one filter chain."""
    match = chain["filter_chain_match"] or {}
    mpath = join(cpath, "filter_chain_match")
    if match.get("transport_protocol") not in (None, "", "tls"):
        raise ConfigError(join(mpath, "transport_protocol"),
                          "not supported by cyvoy (only 'tls' or empty)")
    filters, fpath = chain["filters"], join(cpath, "filters")
    if not filters:
        raise ConfigError(fpath, "needs the envoy.filters.network.http_connection_manager "
                                 "filter")
    # Validation admits the connection limit and the HTTP connection manager, which is terminal.
    names = [f["typed_config"]["extension"] for f in filters]
    if names[-1] != HCM:
        raise ConfigError(index(fpath, len(names) - 1), f"the last network filter must be {HCM}")
    if names.count(HCM) > 1 or len(names) > 2 or (len(names) == 2 and names[0] != CONNECTION_LIMIT):
        raise ConfigError(fpath, f"not supported by cyvoy (at most {CONNECTION_LIMIT}, then {HCM})")
    limit = None
    if len(names) == 2:
        c = filters[0]["typed_config"]["config"]
        limit = ConnectionLimit(stat_prefix=c["stat_prefix"], max_connections=c["max_connections"],
                                delay=c["delay"] or 0.0)
    hcm = _hcm(filters[-1]["typed_config"]["config"],
               join(index(fpath, len(names) - 1), "typed_config"), clusters)
    tls = None
    socket = chain["transport_socket"]
    if socket is not None and socket["typed_config"]["extension"] == TLS:
        tls = downstream_tls(socket["typed_config"]["config"], join(join(cpath, "transport_socket"),
                                                          "typed_config"))
    if match.get("server_names") and tls is None:
        raise ConfigError(join(mpath, "server_names"),
                          "needs the chain's transport_socket envoy.transport_sockets.tls (the "
                          "server name comes from the TLS handshake)")
    return FilterChain(hcm=hcm, tls=tls, server_names=list(match.get("server_names") or [])), limit


def _hcm(h: dict, path: str, clusters: Collection[str]) -> HttpConnectionManager:
    filters = [f["typed_config"]["extension"] for f in h["http_filters"]]
    fpath = join(path, "http_filters")
    if not filters:
        raise ConfigError(fpath, f"needs the {ROUTER} filter (Envoy sends no request upstream "
                                 "without it)")
    for i, name in enumerate(filters):
        last = i == len(filters) - 1
        if (name == ROUTER) != last:
            raise ConfigError(index(fpath, i), f"{ROUTER} must be the last HTTP filter, and "
                                               "appear only there")
    built = []
    for i, f in enumerate(h["http_filters"][:-1]):
        name = f["typed_config"]["extension"]
        if any(b.name == name for b in built):
            raise ConfigError(index(fpath, i), f"{name} appears twice; cyvoy runs each filter "
                                               "once per connection manager")
        built.append(build_http_filter(name, f["typed_config"]["config"], index(fpath, i)))
    # Absent common_http_protocol_options still means its defaults (idle_timeout 1h).
    protocol = h["common_http_protocol_options"] or validate({}, "HttpProtocolOptions")
    return HttpConnectionManager(
        stat_prefix=h["stat_prefix"],
        route_config=build_route_config(h["route_config"], join(path, "route_config"), clusters,
                                        {b.name: b.config for b in built}),
        codec_type=h["codec_type"],
        add_user_agent=h["add_user_agent"],
        http2_protocol_options=h["http2_protocol_options"],
        http_filters=filters,
        max_request_headers_kb=h["max_request_headers_kb"],
        idle_timeout=protocol["idle_timeout"],
        request_headers_timeout=h["request_headers_timeout"],
        stream_idle_timeout=h["stream_idle_timeout"],
        request_timeout=h["request_timeout"],
        use_remote_address=h["use_remote_address"],
        xff_num_trusted_hops=h["xff_num_trusted_hops"],
        generate_request_id=h["generate_request_id"],
        server_name=h["server_name"],
        access_logs=[_access_log(entry, index(join(path, "access_log"), i))
                     for i, entry in enumerate(h["access_log"])],
        filters=built,
        internal_cidrs=_internal_cidrs(h["internal_address_config"], join(path, "internal_address_config")),
        upgrades=upgrade_map(h["upgrade_configs"], join(path, "upgrade_configs")),
    )


def _internal_cidrs(cfg, path: str):
    if cfg is None:
        return None
    out = []
    for i, r in enumerate(cfg["cidr_ranges"]):
        text = f"{r['address_prefix']}/{r['prefix_len']}"
        try:
            out.append(str(ipaddress.ip_network(text, strict=False)))
        except ValueError as e:
            raise ConfigError(index(join(path, "cidr_ranges"), i), f"invalid CIDR range {text!r}: {e}")
    return out


def _access_log(entry: dict, path: str) -> AccessLogConfig:
    """One access_log entry; its format is compiled once here so that a bad one is refused with
    its path."""
    typed = entry["typed_config"]
    logger, c, cpath = typed["extension"], typed["config"], join(path, "typed_config")
    cfg = AccessLogConfig(logger=logger, path=STREAM_LOGGERS.get(logger, ""), name=entry["name"])
    fpath = cpath
    if logger == FILE_LOGGER:
        cfg.path = c["path"]
        folder = os.path.dirname(os.path.abspath(cfg.path))
        if cfg.path not in ("/dev/stdout", "/dev/stderr") and not os.path.isdir(folder):
            raise ConfigError(join(cpath, "path"), f"cannot write {cfg.path!r}: the directory "
                                                   f"{folder!r} does not exist")
        if c["format"] is not None:
            # Envoy uses the default format when `format` is empty
            cfg.text_format, fpath = c["format"] or None, join(cpath, "format")
        elif c["json_format"] is not None:
            cfg.json_format, cfg.typed_json = c["json_format"], False
            fpath = join(cpath, "json_format")
        elif c["typed_json_format"] is not None:
            cfg.json_format, fpath = c["typed_json_format"], join(cpath, "typed_json_format")
    if c["log_format"] is not None:
        fpath = _substitution_format(cfg, c["log_format"], join(cpath, "log_format"))
    try:
        formatter_for(cfg)
    except FormatError as e:
        raise ConfigError(join(fpath, e.where) if e.where else fpath, e.reason) from None
    return cfg


def _substitution_format(cfg: AccessLogConfig, sfs: dict, path: str) -> str:
    """Fills `cfg` from a SubstitutionFormatString; returns the path of the format in it."""
    cfg.omit_empty_values = sfs["omit_empty_values"]
    if sfs["json_format"] is not None:
        cfg.json_format = sfs["json_format"]
        return join(path, "json_format")
    if sfs["text_format"] is not None:
        text, fpath = sfs["text_format"], join(path, "text_format")
    else:
        fpath = join(path, "text_format_source")
        raw = datasource.read(sfs["text_format_source"], fpath)
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise ConfigError(fpath, "the format is not valid UTF-8") from None
    if not text:
        raise ConfigError(fpath, "an empty format writes nothing; leave log_format out for "
                                 "Envoy's default format")
    cfg.text_format = text
    return fpath


