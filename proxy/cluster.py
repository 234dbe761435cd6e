"""A cluster as a worker sees it: its hosts, its load balancer and one connection pool per host.

Envoy's `source/common/upstream/` keeps these apart behind one host set; so do we. The host set
is the cluster's block of slots in the shared-memory host table (docs/host-table.md): the
health-check process writes health and DNS membership there, every worker reads it. A worker
keeps, per slot, a `Host` with its own connection pool; `_fastpath.lb` picks a slot.
"""
from __future__ import annotations

import logging

from proxy._fastpath.cluster import ClusterBase, HostBase
from proxy._fastpath.lb import make_lb
from proxy.config import model
from proxy.http2 import Http2Options
from proxy.http2.upstream import H2Pool
from proxy.tls import client_context

log = logging.getLogger("cyvoy.cluster")


class Host(HostBase):
    """One upstream endpoint in this worker: where to connect, and the idle connections to it
    (the pool's fields, read per request, are C fields of HostBase: proxy/_fastpath/cluster.pyx)."""
    __slots__ = ("address", "port", "hostname", "label")

    def __init__(self, slot: int, address: str, port: int, hostname: str = ""):
        super().__init__(slot)
        self.address = address
        self.port = port
        self.hostname = hostname
        self.label = f"{address}:{port}"
        # what auto_host_rewrite puts in Host: the endpoint's hostname (DNS name for *_DNS clusters)
        self.host_header = hostname.encode() if hostname else None

    def close_idle(self) -> None:
        for conn in self.idle + self.idle_h2:
            conn.close()
        self.idle.clear()
        self.idle_h2.clear()

    def __repr__(self):
        return f"Host({self.label})"


class Cluster(ClusterBase):
    """A cluster in this worker; what a request reads of it (the load balancer, the hosts by
    slot, stats) are C fields of ClusterBase (proxy/_fastpath/cluster.pyx)."""
    __slots__ = ("cfg", "ssl", "sni", "_hostnames", "_dns_names", "membership")

    def __init__(self, cfg: model.Cluster, table, layout):
        self.cfg = cfg
        self.name = cfg.name
        self.table = table
        self.index = layout.index
        self.first = layout.first_slot
        self.n_slots = layout.n_slots
        self.connect_timeout = cfg.connect_timeout
        self.buffer_limit = cfg.per_connection_buffer_limit_bytes
        # transport_socket tls: (SSL context, SNI) for every connection to the cluster's hosts
        self.ssl, self.sni = client_context(cfg.tls) if cfg.tls is not None else (None, None)
        # HTTP/2 to the hosts (typed_extension_protocol_options): for every request, or only for
        # HTTP/2 clients' (use_downstream_protocol_config)
        self.h2 = None
        self.h2_always = cfg.upstream_protocol == "HTTP2"
        if cfg.upstream_protocol != "HTTP1":
            h2_ssl = client_context(cfg.tls, ["h2"])[0] if cfg.tls is not None else None
            self.h2 = H2Pool(self, Http2Options.from_config(cfg.http2_protocol_options), h2_ssl,
                             self.sni)
        # the endpoint's hostname (auto_host_rewrite), by address, for static clusters
        self._hostnames = {(e.address, e.port): e.hostname for e in cfg.endpoints}
        self._dns_names = {e.port: e.address for e in cfg.endpoints} if layout.dns else {}
        self.by_slot: list[Host | None] = [None] * self.n_slots
        self.lb = None
        self.membership = -1
        self.stats = None      # the worker sets its ClusterStats (indexes into its stats slot)
        self.refresh()

    def refresh(self) -> bool:
        """Re-read the cluster's slots if their membership changed (DNS); True if it did."""
        gen = self.table.membership_generation(self.index)
        if gen == self.membership:
            return False
        self.membership = gen
        by_priority: dict[int, list[int]] = {}
        for k in range(self.n_slots):
            i = self.first + k
            addr = self.table.host_address(i)
            old = self.by_slot[k]
            if addr is None:
                if old is not None:
                    old.close_idle()
                self.by_slot[k] = None
                continue
            if old is None or (old.address, old.port) != addr:
                if old is not None:
                    old.close_idle()
                hostname = self._hostnames.get(addr) or self._dns_names.get(addr[1], "")
                self.by_slot[k] = Host(i, addr[0], addr[1], hostname)
            by_priority.setdefault(self.table.priority(i), []).append(i)
        # one list per priority level 0..max (a level whose hosts all went away stays, empty)
        levels = [by_priority.get(p, []) for p in range(max(by_priority) + 1)] if by_priority else []
        self.lb = make_lb(self.table, self.index, self.cfg, levels)
        # latency EWMA decay for recorded responses (cyvoy.least_response_time's decay_time; 10s otherwise)
        self.ewma_decay_ns = self.lb.decay_ns
        return True

    @property
    def hosts(self) -> list[Host]:
        return [h for h in self.by_slot if h is not None]

    def stop(self) -> None:
        for h in self.hosts:
            h.close_idle()

