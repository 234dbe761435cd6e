"""One worker process: a uvloop event loop serving its slot's listening sockets.

Built from the validated config after fork: clusters (hosts, load balancer, pools), one route
table per listener, then `create_server` on each inherited socket. A ticker does every timeout
(one clock read per tick instead of a timer per request) and idle sweeps.

SIGTERM drains: stop accepting, close idle keep-alive connections, let in-flight requests finish
(their responses carry `Connection: close`), exit when none is left.
"""
from __future__ import annotations

import asyncio
import logging
import os
import signal
import time

import uvloop

from proxy._fastpath.forward import seed_request_ids
from proxy._fastpath.lb import reseed as reseed_lb
from proxy.cluster import Cluster
from proxy.config.clusters import default_thresholds
from proxy.config.model import Bootstrap
from proxy._fastpath.connection import ClusterStats, HcmStats, wake_waiters
from proxy.connection_manager import Downstream, Hcm
from proxy.filters import FilterChain, SharedFilterState
from proxy.filters.connection_limit import ConnectionGuard
from proxy.filter_chains import ChainSelect, SniSelector
from proxy.router import RouteTable
from proxy.tls import server_context
from proxy.shadow import ShadowWriter

log = logging.getLogger("cyvoy.worker")

TICK_S = 0.05           # the ticker's period when no deadline is near
MIN_TICK_S = 0.002      # the closest two ticks may come
IDLE_CLOSE_DRAIN_S = 0.5  # while draining, a keep-alive connection idle this long is closed


class Worker:
    def __init__(self, bootstrap: Bootstrap, slot: int, generation: int, table, layout, stats=None,
                 filter_state=None):
        self.bootstrap = bootstrap
        self.table = table          # the shared-memory host table (docs/host-table.md)
        self.layout = layout
        # (registry, store, slot): Envoy's stats, written into this process's own slot
        self.registry, self.store, self.stats_slot = stats
        self.slot_stats = self.store.view(self.stats_slot)
        # the HTTP filters' shared memory (token buckets, fault counters), made by the master
        self.filter_state = filter_state if filter_state is not None else SharedFilterState(bootstrap)
        self.shadows = ShadowWriter(self)    # request_mirror_policies
        self.control = None
        self.slot = slot
        self.generation = generation
        self.loop: asyncio.AbstractEventLoop | None = None
        self.loop_time = None
        self.now = 0.0
        self.conns: set[Downstream] = set()
        self.active: set[Downstream] = set()    # connections with a deadline
        self.clusters: dict[str, Cluster] = {}
        # Upstream connections idle this long are closed: the shortest listener idle_timeout
        # (Envoy has a per-cluster idle_timeout too, 1h by default; cyvoy uses the listeners').
        idle = [c.hcm.idle_timeout for lc in bootstrap.listeners for c in lc.chains if c.hcm.idle_timeout]
        self.upstream_idle_timeout = min(idle) if idle else 3600.0
        self.servers = []
        self.hcms = []
        self.draining = False
        self.counters: dict[str, int] = {}
        self._ticks = 0
        self._next_second = 0.0
        self._next_dns = 0.0
        self._done = None

    def count(self, name: str) -> None:
        self.counters[name] = self.counters.get(name, 0) + 1

    def setup(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.loop_time = self.loop.time
        self.now = self.loop_time()
        # loop time + wall_offset = wall-clock time (access log START_TIME), refreshed each second
        self.wall_offset = time.time() - self.now
        for name, cfg in self.bootstrap.clusters.items():
            c = Cluster(cfg, self.table, self.layout.clusters[name])
            c.stats = ClusterStats(self.slot_stats, self.registry.cluster_indexes(name))
            c.stats.set_breakers(self.table, self.layout.clusters[name].index, default_thresholds(cfg),
                                 _per_host_thresholds(cfg))
            self.clusters[name] = c

    async def serve(self, socks: dict, ready_fd: int) -> int:
        self.setup()
        for lc in self.bootstrap.listeners:
            entries = []
            for chain in lc.chains:
                tls = server_context(chain.tls) if chain.tls else None
                entries.append((chain, tls, self._hcm(lc, chain, tls)))
            if len(entries) == 1:
                _, tls, hcm = entries[0]
                factory = lambda hcm=hcm: Downstream(self, hcm)
            else:   # filter chains chosen by SNI (proxy/filter_chains.py)
                selector = SniSelector(entries)
                tls = entries[0][1]
                tls.sni_callback = selector.sni_callback
                factory = lambda selector=selector: ChainSelect(self, selector)
            server = await self.loop.create_server(factory, sock=socks[lc.name], ssl=tls, backlog=4096)
            self.servers.append(server)
        self._done = self.loop.create_future()
        self.loop.add_signal_handler(signal.SIGTERM, self.drain)
        self.loop.add_signal_handler(signal.SIGQUIT, self._quit)
        # logrotate: reopen access log files (the master forwards SIGUSR1 to every worker)
        self.loop.add_signal_handler(signal.SIGUSR1, self.reopen_logs)
        self.loop.call_later(TICK_S, self._tick)
        try:
            os.write(ready_fd, b"R")
        except OSError:
            pass
        return await self._done

    def _hcm(self, lc, chain, tls) -> Hcm:
        """The connection manager of one filter chain, with its stats, filters and limits."""
        cfg = chain.hcm
        hcm = Hcm(cfg, RouteTable(cfg.route_config, self.clusters, self.bootstrap.runtime, cfg.upgrades),
                  tls is not None, tls is not None and "h2" in chain.tls.alpn_protocols)
        listener_stats = self.registry.listener_indexes_for(lc)
        hcm.stats = HcmStats(self.slot_stats, self.registry.http_indexes(cfg.stat_prefix), listener_stats)
        hcm.filters = FilterChain.for_hcm(cfg, self, self.filter_state)
        hcm.guard = ConnectionGuard.for_listener(lc, self, self.filter_state, listener_stats)
        if cfg.add_user_agent and self.bootstrap.node_cluster:
            # with no service cluster Envoy adds nothing either
            hcm.user_agent = self.bootstrap.node_cluster.encode()
        self.hcms.append(hcm)
        limit = self.bootstrap.runtime.get(f"envoy.resource_limits.listener.{lc.name}.connection_limit")
        if limit is not None:
            hcm.conn_limit = int(limit)
        return hcm

    # ---- timeouts and sweeps -------------------------------------------------------------------
    def _tick(self) -> None:
        now = self.now = self.loop_time()
        soonest = now + TICK_S
        if self.active:
            # connections stay in `active` while busy; those with no deadline any more leave here
            due = []
            for c in list(self.active):
                if not c.deadline_kind:
                    self.active.discard(c)
                elif c.deadline <= now:
                    due.append(c)
                elif c.deadline < soonest:
                    soonest = c.deadline
            for c in due:
                c.on_deadline()
        self._ticks += 1
        if now >= self._next_second:   # once a second
            self._next_second = now + 1.0
            self._sweep_idle(now)
            self.wall_offset = time.time() - now
            if self.control is not None:
                self.control.apply_log_level()   # POST /logging on the admin interface
            for hcm in self.hcms:
                if hcm.access_logs is not None:
                    hcm.access_logs.flush()
        # requests waiting for a connection: another worker may have freed a slot
        for c in self.clusters.values():
            for h in c.by_slot:
                if h is not None and h.waiting:
                    wake_waiters(h)
        if now >= self._next_dns:    # DNS answers the health-check process wrote into the table
            self._next_dns = now + 0.2
            for c in self.clusters.values():
                if c.refresh():
                    log.debug("cluster %s: hosts now %s", c.name, [h.label for h in c.hosts])
        if self.draining and not self.conns:
            if not self._done.done():
                self._done.set_result(0)
            return
        # the next tick comes early when a deadline falls before it (a per-try timeout of 250 ms
        # then fires at 250 ms, not up to one tick later), but never sooner than MIN_TICK_S
        self.loop.call_later(max(MIN_TICK_S, soonest - self.loop_time()), self._tick)

    def _sweep_idle(self, now: float) -> None:
        for lc_conn in [c for c in self.conns if not c.in_req]:
            t = lc_conn.hcm.idle_timeout
            idle = now - lc_conn.last_io
            if (t and idle >= t) or (self.draining and idle >= IDLE_CLOSE_DRAIN_S):
                lc_conn.close_if_idle()
        for c in self.clusters.values():
            for h in c.hosts:
                for idle in (h.idle, h.idle_h2):
                    if idle:
                        # the same idle timeout for upstream connections (common_http_protocol_options)
                        keep = []
                        for up in idle:
                            if up.closed:
                                continue
                            if now - up.idle_since >= self.upstream_idle_timeout or self.draining:
                                up.close()
                            else:
                                keep.append(up)
                        idle[:] = keep

    # ---- stop ----------------------------------------------------------------------------------
    def drain(self) -> None:
        if self.draining:
            return
        self.draining = True
        log.debug("worker %d draining %d connections", os.getpid(), len(self.conns))
        for s in self.servers:
            s.close()   # stops accepting; the master keeps the socket, the next generation accepts
        for c in list(self.conns):
            c.draining = True

    def reopen_logs(self) -> None:
        for hcm in self.hcms:
            if hcm.access_logs is not None:
                hcm.access_logs.reopen()

    def close_logs(self) -> None:
        for hcm in self.hcms:
            if hcm.access_logs is not None:
                hcm.access_logs.close()

    def _quit(self) -> None:
        for c in list(self.conns):
            if c.transport is not None:
                c.transport.abort()
        if not self._done.done():
            self._done.set_result(0)


def _per_host_thresholds(cfg):
    """per_host_thresholds (Envoy honours only its max_connections), or None."""
    per_host = (cfg.circuit_breakers or {}).get("per_host_thresholds") or []
    return per_host[0] if per_host else None


def run(bootstrap: Bootstrap, slot: int, generation: int, socks: dict, ready_fd: int, table, layout,
        stats, control=None, filter_state=None) -> int:
    """Entry point in the forked child; returns the exit code."""
    seed_request_ids()   # never share the master's (or a sibling's) random sequence
    reseed_lb()
    w = Worker(bootstrap, slot, generation, table, layout, stats, filter_state)
    w.control = control
    loop = uvloop.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        return loop.run_until_complete(w.serve(socks, ready_fd))
    finally:
        w.close_logs()
        for c in w.clusters.values():
            c.stop()
        try:
            os.close(ready_fd)
        except OSError:
            pass
