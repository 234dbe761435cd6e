"""A cluster as a worker sees it: its hosts, its load balancer and one connection pool per host.

Envoy's `source/common/upstream/` keeps these apart behind one host set; so do we: `Host` holds
the per-host pool, `_fastpath.lb` picks, DNS resolution replaces the host set in place.
"""
from __future__ import annotations

import asyncio
import logging
import socket

from proxy._fastpath.lb import RoundRobin
from proxy.config import model

log = logging.getLogger("cyvoy.cluster")


class Host:
    __slots__ = ("address", "port", "hostname", "weight", "priority", "idle", "label", "host_header")

    def __init__(self, address: str, port: int, hostname: str = "", weight: int = 1, priority: int = 0):
        self.address = address
        self.port = port
        self.hostname = hostname
        self.weight = weight
        self.priority = priority
        self.idle: list = []   # idle upstream connections, most recently used last
        self.label = f"{address}:{port}"
        # what auto_host_rewrite puts in Host: the endpoint's hostname (DNS name for *_DNS clusters)
        self.host_header = hostname.encode() if hostname else None

    def __repr__(self):
        return f"Host({self.label})"


class Cluster:
    def __init__(self, cfg: model.Cluster):
        self.cfg = cfg
        self.name = cfg.name
        self.connect_timeout = cfg.connect_timeout
        self.buffer_limit = cfg.per_connection_buffer_limit_bytes
        self.hosts: list[Host] = []
        self.picker = RoundRobin(())
        self._dns_task = None
        if cfg.type == "STATIC":
            self._set_hosts([Host(e.address, e.port, e.hostname, e.weight, e.priority) for e in cfg.endpoints])

    def pick(self) -> Host | None:
        return self.picker.pick()

    def _set_hosts(self, hosts: list[Host]) -> None:
        # Keep the Host objects (and their pools) of endpoints that stay.
        old = {(h.address, h.port, h.priority): h for h in self.hosts}
        merged = []
        for h in hosts:
            prev = old.pop((h.address, h.port, h.priority), None)
            if prev is not None:
                prev.weight = h.weight
                merged.append(prev)
            else:
                merged.append(h)
        for h in old.values():
            for conn in h.idle:
                conn.close()
            h.idle.clear()
        self.hosts = merged
        # With every host usable (no health checks yet), Envoy sends all traffic to the lowest
        # priority present: P0 keeps 100% while it is 100% healthy (overprovisioning factor 1.4).
        if merged:
            top = min(h.priority for h in merged)
            usable = [h for h in merged if h.priority == top]
        else:
            usable = []
        self.picker = RoundRobin(usable, [h.weight for h in usable])

    # ---- DNS (STRICT_DNS / LOGICAL_DNS) --------------------------------------------------------
    def start_dns(self, loop: asyncio.AbstractEventLoop) -> None:
        if self.cfg.type in ("STRICT_DNS", "LOGICAL_DNS"):
            self._resolve_blocking()
            self._dns_task = loop.create_task(self._refresh_loop(loop))

    def stop(self) -> None:
        if self._dns_task is not None:
            self._dns_task.cancel()
        for h in self.hosts:
            for conn in list(h.idle):
                conn.close()
            h.idle.clear()

    def _family_filter(self, infos) -> list[str]:
        v4 = [i[4][0] for i in infos if i[0] == socket.AF_INET]
        v6 = [i[4][0] for i in infos if i[0] == socket.AF_INET6]
        fam = self.cfg.dns_lookup_family
        if fam == "V4_ONLY":
            out = v4
        elif fam == "V6_ONLY":
            out = v6
        elif fam == "V4_PREFERRED":
            out = v4 or v6
        elif fam == "ALL":
            out = v4 + v6
        else:  # AUTO: IPv6 first, IPv4 if there is no IPv6 answer (Envoy's meaning)
            out = v6 or v4
        seen, uniq = set(), []
        for a in out:
            if a not in seen:
                seen.add(a)
                uniq.append(a)
        return uniq

    def _hosts_from(self, answers: list[tuple[model.Endpoint, list[str]]]) -> list[Host]:
        hosts = []
        for ep, addrs in answers:
            if self.cfg.type == "LOGICAL_DNS":
                addrs = addrs[:1]
            for a in addrs:
                hosts.append(Host(a, ep.port, ep.hostname or ep.address, ep.weight, ep.priority))
        return hosts

    def _resolve_blocking(self) -> None:
        answers = []
        for ep in self.cfg.endpoints:
            try:
                infos = socket.getaddrinfo(ep.address, ep.port, type=socket.SOCK_STREAM)
                answers.append((ep, self._family_filter(infos)))
            except OSError as e:
                log.warning("cluster %s: cannot resolve %s: %s", self.name, ep.address, e)
                answers.append((ep, []))
        self._set_hosts(self._hosts_from(answers))

    async def _refresh_loop(self, loop) -> None:
        while True:
            await asyncio.sleep(self.cfg.dns_refresh_rate)
            answers = []
            failed = False
            for ep in self.cfg.endpoints:
                try:
                    infos = await loop.getaddrinfo(ep.address, ep.port, type=socket.SOCK_STREAM)
                    answers.append((ep, self._family_filter(infos)))
                except OSError as e:
                    # Envoy keeps the last good host set when resolution fails.
                    log.debug("cluster %s: re-resolving %s failed: %s", self.name, ep.address, e)
                    failed = True
            if not failed:
                new = self._hosts_from(answers)
                if [(h.address, h.port) for h in new] != [(h.address, h.port) for h in self.hosts]:
                    log.info("cluster %s: hosts now %s", self.name, [h.label for h in new])
                self._set_hosts(new)
