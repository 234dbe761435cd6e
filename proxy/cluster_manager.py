"""Envoy's cluster manager, the part the master owns: which host sits in which slot of the
shared-memory host table (docs/host-table.md), built before the workers and the health-check
process are forked, and rebuilt on reload carrying over the state of hosts that stay.

Static clusters get one slot per endpoint. DNS clusters get a fixed block of slots (their
addresses come and go; the health-check process re-resolves and rewrites the block), filled
once here so workers can route before the first re-resolution.
"""
from __future__ import annotations

import logging
import socket
from dataclasses import dataclass, field

from proxy._fastpath import hosttable as ht
from proxy.config.model import Bootstrap, Cluster

log = logging.getLogger("cyvoy.cluster_manager")

DNS_SLOTS_PER_ENDPOINT = 8     # addresses one DNS name may bring (STRICT_DNS); extra ones are dropped


@dataclass
class ClusterLayout:
    index: int
    first_slot: int
    n_slots: int
    dns: bool
    # static clusters: the endpoint each slot holds (DNS clusters: filled from the table)
    endpoints: list = field(default_factory=list)


@dataclass
class Layout:
    clusters: dict[str, ClusterLayout]
    n_hosts: int


def plan(bootstrap: Bootstrap) -> Layout:
    clusters = {}
    slot = 0
    for index, (name, c) in enumerate(bootstrap.clusters.items()):
        dns = c.type in ("STRICT_DNS", "LOGICAL_DNS")
        n = len(c.endpoints) * (DNS_SLOTS_PER_ENDPOINT if c.type == "STRICT_DNS" else 1)
        clusters[name] = ClusterLayout(index, slot, n, dns, list(c.endpoints) if not dns else [])
        slot += n
    return Layout(clusters, slot)


def family_filter(infos, family: str) -> list[str]:
    """getaddrinfo answers -> addresses, by Envoy's dns_lookup_family."""
    v4 = [i[4][0] for i in infos if i[0] == socket.AF_INET]
    v6 = [i[4][0] for i in infos if i[0] == socket.AF_INET6]
    if family == "V4_ONLY":
        out = v4
    elif family == "V6_ONLY":
        out = v6
    elif family == "V4_PREFERRED":
        out = v4 or v6
    elif family == "ALL":
        out = v4 + v6
    else:  # AUTO: IPv6 first, IPv4 if there is no IPv6 answer (Envoy's meaning)
        out = v6 or v4
    return list(dict.fromkeys(out))


def dns_hosts(c: Cluster, resolve=socket.getaddrinfo) -> list[tuple[str, int, int, int, str]] | None:
    """(address, port, weight, priority, hostname) for a DNS cluster, or None if any name failed."""
    hosts = []
    for ep in c.endpoints:
        try:
            infos = resolve(ep.address, ep.port, type=socket.SOCK_STREAM)
        except OSError as e:
            log.warning("cluster %s: cannot resolve %s: %s", c.name, ep.address, e)
            return None
        addrs = family_filter(infos, c.dns_lookup_family)
        if c.type == "LOGICAL_DNS":
            addrs = addrs[:1]
        for a in addrs[:DNS_SLOTS_PER_ENDPOINT]:
            hosts.append((a, ep.port, ep.weight, ep.priority, ep.hostname or ep.address))
    return hosts


def write_dns_block(table, cl: ClusterLayout, hosts) -> None:
    """Rewrite a DNS cluster's slot block with `hosts`; unused slots are cleared."""
    for k in range(cl.n_slots):
        i = cl.first_slot + k
        if k < len(hosts):
            address, port, weight, priority, _ = hosts[k]
            old = table.host_address(i)
            if old != (address, port):
                table.set_host(i, cl.index, address, port, weight, priority)
        else:
            if table.host_address(i) is not None:
                table.clear_host(i)
    table.bump_membership(cl.index)


def build_table(bootstrap: Bootstrap, old_table=None, old_layout: Layout | None = None):
    """A new table for `bootstrap`; hosts that were in the old table keep their state."""
    layout = plan(bootstrap)
    table = ht.HostTable(max(1, layout.n_hosts), max(1, len(layout.clusters)))
    old = _old_slots(old_table, old_layout)
    for name, cl in layout.clusters.items():
        c = bootstrap.clusters[name]
        table.set_cluster(cl.index, cl.first_slot, cl.n_slots)
        if cl.dns:
            write_dns_block(table, cl, dns_hosts(c) or [])
        else:
            for k, ep in enumerate(cl.endpoints):
                table.set_host(cl.first_slot + k, cl.index, ep.address, ep.port, ep.weight, ep.priority)
        # health state only means something if the new config still checks it
        keep = ~0
        if not c.health_checks:
            keep &= ~(ht.FAILED_ACTIVE_HC | ht.PENDING_ACTIVE_HC | ht.DEGRADED_ACTIVE_HC)
        if not c.outlier_detection:
            keep &= ~ht.FAILED_OUTLIER
        for k in range(cl.n_slots):
            i = cl.first_slot + k
            addr = table.host_address(i)
            if addr is None:
                continue
            j = old.get((name, addr))
            if j is not None:
                table.copy_state_from(i, old_table, j)
                dropped = table.flags(i) & ~keep
                if dropped:
                    table.set_flags(i, 0, dropped)
            elif c.health_checks:
                # Envoy: with active health checking, a new host is not routable until a first pass.
                table.set_flags(i, ht.PENDING_ACTIVE_HC, 0)
    return table, layout


def _old_slots(old_table, old_layout: Layout | None) -> dict:
    """(cluster name, (address, port)) -> slot in the old table."""
    if old_table is None or old_layout is None:
        return {}
    slots = {}
    for name, cl in old_layout.clusters.items():
        for k in range(cl.n_slots):
            addr = old_table.host_address(cl.first_slot + k)
            if addr is not None:
                slots[(name, addr)] = cl.first_slot + k
    return slots
