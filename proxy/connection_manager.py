"""Envoy's HTTP connection manager, the Python face.

`Hcm` is what one listener's http_connection_manager needs per request, computed once from the
config. The per-request state machine itself, `Downstream` (one client connection: parse ->
route -> pick -> forward -> respond), runs for every request and so lives in Cython:
proxy/_fastpath/connection.pyx.
"""
from __future__ import annotations

import ipaddress

from proxy._fastpath.connection import Downstream, HcmBase  # noqa: F401  (Downstream: the worker's protocol)
from proxy.access_log.writer import AccessLogs
from proxy.http2 import Http2Options
from proxy.http2.downstream import Http2Server


class Hcm(HcmBase):
    """What one listener's http_connection_manager needs per request, computed once (the fields
    read on every request are C fields of HcmBase, proxy/_fastpath/connection.pxd)."""
    __slots__ = ("cfg", "trusted_hops", "stat_prefix", "conn_limit", "conn_count", "access_logs",
                 "stats", "filters", "internal", "guard")

    def __init__(self, cfg, routes, tls: bool, tls_h2: bool = False):
        self.cfg = cfg
        self.routes = routes
        self.stat_prefix = cfg.stat_prefix
        self.max_head = cfg.max_request_headers_kb * 1024
        self.server_line = b"server: " + cfg.server_name.encode("latin-1") + b"\r\n"
        # x-envoy-upstream-service-time + server, pre-rendered for the common 0..999 ms
        self.svc_lines = [b"x-envoy-upstream-service-time: %d\r\n" % ms + self.server_line for ms in range(1000)]
        self.scheme = b"https" if tls else b"http"
        self.use_remote_address = cfg.use_remote_address
        self.trusted_hops = cfg.xff_num_trusted_hops
        self.gen_request_id = cfg.generate_request_id
        self.idle_timeout = cfg.idle_timeout
        self.headers_timeout = cfg.request_headers_timeout
        self.stream_idle_timeout = cfg.stream_idle_timeout
        self.request_timeout = cfg.request_timeout
        self.conn_limit = 0      # runtime envoy.resource_limits.listener.<name>.connection_limit (per worker)
        self.conn_count = 0
        # the listener's access logs (opened in the worker, after fork), None when not configured
        self.access_logs = AccessLogs.for_hcm(cfg)
        self.stats = None        # the worker sets its HcmStats (indexes into its stats slot)
        self.filters = None      # proxy.filters.FilterChain when http_filters has more than the router
        self.guard = None        # proxy.filters.connection_limit.ConnectionGuard when a limit applies
        # internal_address_config (None: no client is internal; x-envoy-* never steers routing)
        # add_user_agent: the worker sets node.cluster here (None: nothing is added)
        self.user_agent = None
        # HTTP/2 from clients (codec_type AUTO or HTTP2): proxy/http2/downstream.py
        self.h2 = None
        if cfg.codec_type != "HTTP1":
            self.h2 = Http2Server(cfg.codec_type, Http2Options.from_config(cfg.http2_protocol_options),
                                  tls_h2, self.max_head)
        self.internal = ([ipaddress.ip_network(c) for c in cfg.internal_cidrs]
                         if cfg.internal_cidrs is not None else None)
