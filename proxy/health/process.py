"""The health-check process: `run(bootstrap, table)`, forked by the master.

It is the single writer of the host table's health flags (docs/host-table.md):
  * active health checking: one `HostChecker` per (cluster with health_checks, health_checks[]
    entry, host slot in use), all on one uvloop loop; their combined verdict sets and clears
    FAILED_ACTIVE_HC, PENDING_ACTIVE_HC and DEGRADED_ACTIVE_HC, and stamps healthy_since_ns when a
    host becomes usable again;
  * DNS: STRICT_DNS / LOGICAL_DNS clusters are re-resolved every dns_refresh_rate and their slot
    block rewritten (set_host / clear_host), keeping the last good set when resolution fails;
  * outlier detection: `proxy.health.outlier.OutlierDetector(cluster_cfg, table, slots)` for
    clusters with outlier_detection, `tick(now)` every outlier_detection.interval (plus
    `check_now()` every 100 ms between ticks, and `on_active_hc_success(slot)` after passes);
  * liveness: `table.heartbeat()` every second; exits 0 on SIGTERM, or when the master is gone.

Host state lives in the table; this process keeps only the per-checker counters of the state
machine, so a restarted health process picks hosts up from their flags (`_initial_state`).
"""
from __future__ import annotations

import asyncio
import logging
import os
import random
import signal
import socket
import time
from dataclasses import dataclass, field
from typing import Any, Optional

from proxy.cluster_manager import family_filter
from proxy.config.model import Bootstrap, Cluster, Endpoint
from proxy.health.checker import (Clock, HealthState, HostChecker, Result, make_probe,
                                  new_counters)

log = logging.getLogger("cyvoy.health")

# Health flags (docs/host-table.md)
FAILED_ACTIVE_HC = 0x01
FAILED_OUTLIER = 0x02
PENDING_ACTIVE_HC = 0x04
DEGRADED_ACTIVE_HC = 0x08
DRAINING = 0x10
DNS_REMOVED = 0x20
HC_BITS = FAILED_ACTIVE_HC | PENDING_ACTIVE_HC | DEGRADED_ACTIVE_HC

HEARTBEAT_PERIOD = 1.0
# How often the consecutive_* outlier detectors look at the workers' counts between interval
# ticks. Envoy ejects on the failure itself; every look here is a lag during which workers keep
# sending to a failing host, so look often, but less often in big clusters (the look is O(hosts)).
OUTLIER_CHECK_PERIOD = 0.02
OUTLIER_CHECK_PERIOD_LARGE = 0.1       # clusters of more than OUTLIER_LARGE_CLUSTER hosts
OUTLIER_LARGE_CLUSTER = 200

# Envoy's cluster.<name>.health_check.{attempt,success,failure,network_failure}, by cluster name,
# of the health process running in this process (for the stats issue). Reset by run().
counters: dict[str, dict[str, int]] = {}


def _monotonic_ns() -> int:
    return time.monotonic_ns()     # CLOCK_MONOTONIC on Linux, the table's clock


@dataclass
class _Slot:
    """A host slot of a cluster with health checks, and its checkers."""
    index: int
    address: str
    port: int
    endpoint: Optional[Endpoint]
    checkers: list[HostChecker] = field(default_factory=list)
    tasks: list[asyncio.Task] = field(default_factory=list)
    label: str = "pending"

    @property
    def name(self) -> str:
        return f"[{self.address}]:{self.port}" if ":" in self.address else \
            f"{self.address}:{self.port}"


@dataclass
class _Cluster:
    name: str
    index: int
    cfg: Cluster
    first: int
    n_slots: int
    initial_jitter_explicit: list[Optional[bool]]
    counters: dict[str, int]
    slots: dict[int, _Slot] = field(default_factory=dict)
    slot_endpoint: dict[int, Endpoint] = field(default_factory=dict)   # DNS clusters
    outlier: Any = None
    tls: Any = None            # (SSL context, SNI) of the cluster's transport socket, or None

    @property
    def dns(self) -> bool:
        return self.cfg.type in ("STRICT_DNS", "LOGICAL_DNS")

    def slot_range(self) -> range:
        return range(self.first, self.first + self.n_slots)


class HealthProcess:
    """Everything `run` does, as an object (tests drive it on their own loop)."""

    def __init__(self, bootstrap: Bootstrap, table, *, clock: Optional[Clock] = None,
                 rng: Optional[random.Random] = None, stats=None):
        self.bootstrap = bootstrap
        self.table = table
        self.clock = clock or Clock()
        self.rng = rng or random.Random()
        self.counters: dict[str, dict[str, int]] = {}
        self.clusters: list[_Cluster] = []
        self._tasks: list[asyncio.Task] = []
        self._stop: Optional[asyncio.Event] = None
        self._ppid = os.getppid()
        self.stats = stats              # (registry, this process's stats slot view) or None
        self._published: dict[str, int] = {}
        for index, (name, cfg) in enumerate(bootstrap.clusters.items()):
            if index >= table.n_clusters:
                break
            first, n = self._cluster_slots(index)
            c = _Cluster(name, index, cfg, first, n, _explicit_initial_jitter(bootstrap, name,
                                                                              len(cfg.health_checks)),
                         new_counters())
            if cfg.tls is not None:
                from proxy.tls import client_context
                c.tls = client_context(cfg.tls)
            self.clusters.append(c)
            if cfg.health_checks:
                self.counters[name] = c.counters

    def _cluster_slots(self, index: int) -> tuple[int, int]:
        # The master lays clusters out in bootstrap order (proxy/cluster_manager.py `plan`).
        return tuple(self.table.cluster_slots(index))

    # ---- lifecycle ---------------------------------------------------------------------------
    async def main(self) -> int:
        loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        try:
            loop.add_signal_handler(signal.SIGTERM, self._stop.set)
        except (NotImplementedError, RuntimeError, ValueError):   # not the main thread (tests)
            pass
        self.start()
        try:
            await self._stop.wait()
        finally:
            await self.stop()
        return 0

    def request_stop(self) -> None:
        if self._stop is not None:
            self._stop.set()

    def start(self) -> None:
        self.table.heartbeat()
        self._tasks.append(asyncio.ensure_future(self._heartbeat_loop()))
        for c in self.clusters:
            if c.cfg.health_checks:
                for i in c.slot_range():
                    addr = self.table.host_address(i)
                    if addr is not None:
                        self._start_slot(c, i, addr[0], addr[1], self._initial_state(i))
            if c.dns and c.cfg.endpoints:
                self._tasks.append(asyncio.ensure_future(self._dns_loop(c)))
            if c.cfg.outlier_detection is not None:
                self._tasks.append(asyncio.ensure_future(self._outlier_loop(c)))

    async def stop(self) -> None:
        tasks = list(self._tasks)
        probes = []
        for c in self.clusters:
            for s in c.slots.values():
                tasks.extend(s.tasks)
                probes.extend(ch.probe for ch in s.checkers)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for p in probes:
            try:
                await p.aclose()
            except Exception:      # closing is best effort
                pass
        self._tasks.clear()

    # ---- active health checking --------------------------------------------------------------
    def _initial_state(self, i: int) -> tuple[bool, bool, bool]:
        """(failed, pending, degraded) of slot i from the table: flags the master set (PENDING
        for a new host) or carried over a reload; a slot with neither a failure flag nor a
        healthy_since stamp is a new host (PENDING); one without failure flags but stamped was
        healthy before (a restarted health process, or a reload) and stays healthy."""
        f = self.table.flags(i)
        degraded = bool(f & DEGRADED_ACTIVE_HC)
        if f & (FAILED_ACTIVE_HC | PENDING_ACTIVE_HC):
            return True, bool(f & PENDING_ACTIVE_HC), degraded
        if self.table.healthy_since_ns(i):
            return False, False, degraded
        return True, True, False

    def _endpoint(self, c: _Cluster, i: int, address: str, port: int) -> Optional[Endpoint]:
        if c.dns:
            ep = c.slot_endpoint.get(i)
            if ep is None:
                ep = next((e for e in c.cfg.endpoints if e.port == port), None)
            return ep
        k = i - c.first
        eps = c.cfg.endpoints
        if 0 <= k < len(eps) and eps[k].address == address and eps[k].port == port:
            return eps[k]
        return next((e for e in eps if e.address == address and e.port == port), None)

    def _start_slot(self, c: _Cluster, i: int, address: str, port: int,
                    state: tuple[bool, bool, bool]) -> None:
        ep = self._endpoint(c, i, address, port)
        slot = _Slot(i, address, port, ep)
        failed, pending, degraded = state
        hc_address = (ep.health_check_address if ep is not None and ep.health_check_address
                      else address)
        hc_port = ep.health_check_port if ep is not None and ep.health_check_port else port
        for j, hc in enumerate(c.cfg.health_checks):
            try:
                probe = make_probe(hc, hc_address, hc_port, c.tls)
            except Exception as e:
                log.error("health: cluster %s: cannot check %s: %s", c.name, slot.name, e)
                continue
            st = HealthState(hc["unhealthy_threshold"], hc["healthy_threshold"],
                             failed=failed, pending=pending, degraded=degraded)
            checker = HostChecker(
                hc, probe, clock=self.clock, rng=self.rng, state=st,
                initial_jitter_explicit=c.initial_jitter_explicit[j],
                on_result=lambda ch, r, t, c=c, slot=slot: self._on_result(c, slot, r),
                counters=c.counters, label=f"{c.name} {slot.name}")
            slot.checkers.append(checker)
        c.slots[i] = slot
        slot.label = _label(slot)
        self._publish(c, slot, None)
        for checker in slot.checkers:
            slot.tasks.append(asyncio.ensure_future(checker.run()))

    def _stop_slot(self, c: _Cluster, i: int) -> None:
        slot = c.slots.pop(i, None)
        if slot is None:
            return
        for t in slot.tasks:
            t.cancel()
        for ch in slot.checkers:
            ch.probe.abort()

    def _on_result(self, c: _Cluster, slot: _Slot, r: Result) -> None:
        if c.slots.get(slot.index) is not slot:      # replaced by a DNS change meanwhile
            return
        self._publish(c, slot, r)
        if r.ok and c.outlier is not None:
            hook = getattr(c.outlier, "on_active_hc_success", None)
            if hook is not None:
                try:
                    for ev in hook(slot.index) or ():
                        _log_outlier(c.name, ev)
                except Exception:
                    log.exception("health: cluster %s: outlier detector failed", c.name)

    def _publish(self, c: _Cluster, slot: _Slot, r: Optional[Result]) -> None:
        """Write the slot's combined verdict to the table (only what changed) and log the
        transition. Several health_checks[] entries combine conservatively: the host is failed
        while any checker has it failed, pending while any has not checked it yet, degraded
        while any says degraded (Envoy lets each checker flip the same flag)."""
        want = 0
        for ch in slot.checkers:
            s = ch.state
            if s.pending:
                want |= PENDING_ACTIVE_HC
            if s.failed:
                want |= FAILED_ACTIVE_HC
            if s.degraded:
                want |= DEGRADED_ACTIVE_HC
        i = slot.index
        cur = self.table.flags(i) & HC_BITS
        if want != cur:
            unusable = FAILED_ACTIVE_HC | PENDING_ACTIVE_HC
            if cur & unusable and not want & unusable:
                # stamped before the flags clear, so a worker that sees the host usable sees
                # the new slow-start origin
                self.table.set_healthy_since_ns(i, _monotonic_ns())
            self.table.set_flags(i, want & ~cur, cur & ~want)
        label = _label(slot)
        if label != slot.label:
            reason = r.reason if r is not None else "state carried over"
            states = [ch.state for ch in slot.checkers]
            if r is not None and label == "unhealthy" and slot.label in ("healthy", "degraded") \
                    and (r.network or r.retriable):
                reason += f"; {max(s.num_unhealthy for s in states)} consecutive failures"
            elif r is not None and slot.label == "unhealthy" and label in ("healthy", "degraded"):
                n = max(s.num_healthy for s in states)
                if n > 1:
                    reason += f"; {n} consecutive passes"
            log.info("health: cluster %s host %s %s -> %s (%s)", c.name, slot.name, slot.label,
                     label, reason)
            slot.label = label
        elif r is not None and not r.ok and log.isEnabledFor(logging.DEBUG):
            log.debug("health: cluster %s host %s check failed (%s)", c.name, slot.name, r.reason)

    # ---- DNS ---------------------------------------------------------------------------------
    async def _dns_loop(self, c: _Cluster) -> None:
        # respect_dns_ttl: getaddrinfo() does not return TTLs, so cyvoy always re-resolves every
        # dns_refresh_rate (Envoy's c-ares resolver can use the answer's TTL).
        while True:
            hosts = await self._resolve(c)
            if hosts is not None:
                self._apply_dns(c, hosts)
            await asyncio.sleep(max(0.001, c.cfg.dns_refresh_rate))

    async def _resolve(self, c: _Cluster) -> Optional[list[tuple[str, int, Endpoint]]]:
        loop = asyncio.get_running_loop()
        hosts: list[tuple[str, int, Endpoint]] = []
        seen = set()
        for ep in c.cfg.endpoints:
            try:
                infos = await loop.getaddrinfo(ep.address, ep.port, type=socket.SOCK_STREAM)
            except (OSError, UnicodeError) as e:
                # Envoy keeps the last good host set when a resolution fails.
                log.warning("health: cluster %s: resolving %s failed (%s); keeping the last "
                            "good hosts", c.name, ep.address, e)
                return None
            addrs = family_filter(infos, c.cfg.dns_lookup_family)
            if c.cfg.type == "LOGICAL_DNS":
                addrs = addrs[:1]
            for a in addrs:
                if (a, ep.port) not in seen:
                    seen.add((a, ep.port))
                    hosts.append((a, ep.port, ep))
        return hosts

    def _apply_dns(self, c: _Cluster, hosts: list[tuple[str, int, Endpoint]]) -> bool:
        """Rewrite the cluster's slot block to hold `hosts`. Addresses that stay keep their slot
        (and so their health and traffic state); gone ones are cleared; new ones take free
        slots, PENDING when the cluster has health checks. Returns whether anything changed."""
        t = self.table
        want = {(a, p): ep for a, p, ep in hosts}
        current: dict[tuple[str, int], int] = {}
        for i in c.slot_range():
            addr = t.host_address(i)
            if addr is not None:
                current[tuple(addr)] = i
        changed = False
        for key, i in current.items():
            if key in want:
                c.slot_endpoint[i] = want[key]
                continue
            self._stop_slot(c, i)
            t.set_flags(i, DNS_REMOVED, 0)       # unusable by its flags before the slot empties
            t.clear_host(i)
            c.slot_endpoint.pop(i, None)
            changed = True
            log.info("health: cluster %s host %s:%d removed (no longer in DNS)", c.name, *key)
        free = [i for i in c.slot_range() if t.host_address(i) is None]
        dropped = 0
        for key, ep in want.items():
            if key in current:
                continue
            if not free:
                dropped += 1
                continue
            i = free.pop(0)
            address, port = key
            c.slot_endpoint[i] = ep
            t.set_host(i, c.index, address, port, ep.weight, ep.priority)
            if c.cfg.health_checks:
                # set_host gave the new endpoint clean flags; not routable until its first pass
                t.set_flags(i, FAILED_ACTIVE_HC | PENDING_ACTIVE_HC, DNS_REMOVED | FAILED_OUTLIER)
                self._start_slot(c, i, address, port, (True, True, False))
            else:
                t.set_flags(i, 0, DNS_REMOVED | FAILED_OUTLIER | HC_BITS)
                t.set_healthy_since_ns(i, _monotonic_ns())
            changed = True
            log.info("health: cluster %s host %s:%d added (DNS)", c.name, address, port)
        if dropped:
            log.warning("health: cluster %s: %d DNS addresses dropped: all %d slots in use",
                        c.name, dropped, c.n_slots)
        return changed

    # ---- outlier detection ---------------------------------------------------------------------
    async def _outlier_loop(self, c: _Cluster) -> None:
        try:
            from proxy.health.outlier import OutlierDetector
        except ImportError as e:
            log.warning("health: cluster %s: outlier detection unavailable (%s)", c.name, e)
            return
        try:
            det = OutlierDetector(c.cfg, self.table, list(c.slot_range()))
        except Exception:
            log.exception("health: cluster %s: cannot start outlier detection", c.name)
            return
        c.outlier = det
        interval = float(c.cfg.outlier_detection.get("interval") or 10.0)
        check_now = getattr(det, "check_now", None)
        period = (OUTLIER_CHECK_PERIOD if len(list(c.slot_range())) <= OUTLIER_LARGE_CLUSTER
                  else OUTLIER_CHECK_PERIOD_LARGE)
        next_tick = time.monotonic() + interval
        while True:
            now = time.monotonic()
            try:
                if now >= next_tick:
                    events = det.tick(now)
                    next_tick = max(next_tick + interval, now + period)
                elif check_now is not None:
                    events = check_now()
                else:
                    events = ()
                for ev in events or ():
                    _log_outlier(c.name, ev)
            except Exception:
                log.exception("health: cluster %s: outlier detector failed", c.name)
            wait = next_tick - time.monotonic()
            if check_now is not None:
                wait = min(wait, period)
            await asyncio.sleep(max(0.001, wait))

    # ---- liveness ------------------------------------------------------------------------------
    def publish_stats(self) -> None:
        """Envoy's cluster.<name>.health_check.* and outlier_detection.* stats, written into this
        process's stats slot as the deltas since the last call (the admin sums all slots)."""
        if self.stats is None:
            return
        registry, view = self.stats
        for c in self.clusters:
            values = {f"health_check.{k}": v for k, v in c.counters.items()} if c.cfg.health_checks else {}
            det = getattr(c, "outlier", None)
            if det is not None:
                values.update({f"outlier_detection.{k}": v for k, v in det.stats.items()})
            for key, value in values.items():
                name = f"cluster.{c.name}.{key}"
                if key == "outlier_detection.ejections_active":
                    idx = registry.gauge(name) if registry.kind(name) == "gauge" else -1
                    if idx >= 0:
                        view.gauge_set(idx, int(value))
                    continue
                if registry.kind(name) != "counter":
                    continue
                delta = int(value) - self._published.get(name, 0)
                if delta > 0:
                    view.add(registry.counter(name), delta)
                    self._published[name] = int(value)

    async def _heartbeat_loop(self) -> None:
        while True:
            self.table.heartbeat()
            self.publish_stats()
            if os.getppid() != self._ppid:
                log.warning("health: the master is gone; exiting")
                self.request_stop()
                return
            await asyncio.sleep(HEARTBEAT_PERIOD)


def _label(slot: _Slot) -> str:
    states = [ch.state for ch in slot.checkers]
    if any(s.pending for s in states):
        return "pending"
    if any(s.failed for s in states):
        return "unhealthy"
    if any(s.degraded for s in states):
        return "degraded"
    return "healthy"


def _log_outlier(cluster: str, ev: Any) -> None:
    addr = getattr(ev, "address", None)
    host = f"{addr[0]}:{addr[1]}" if addr else f"slot {getattr(ev, 'slot', '?')}"
    action = getattr(ev, "action", "")
    if action == "eject":
        if getattr(ev, "enforced", True):
            log.info("outlier: cluster %s host %s ejected (%s, for %.3gs)", cluster, host,
                     getattr(ev, "kind", ""), getattr(ev, "ejection_time", 0.0))
        else:
            log.info("outlier: cluster %s host %s detected as outlier (%s, not enforced)",
                     cluster, host, getattr(ev, "kind", ""))
    elif action == "uneject":
        log.info("outlier: cluster %s host %s unejected (%s)", cluster, host,
                 getattr(ev, "reason", ""))


def _explicit_initial_jitter(bootstrap: Bootstrap, cluster: str, n: int) -> list[Optional[bool]]:
    """Whether each health_checks[] entry of `cluster` wrote initial_jitter, from the document as
    read (the validated dict fills in 0 when it is absent). None when unknown."""
    out: list[Optional[bool]] = [None] * n
    try:
        for raw in bootstrap.source["static_resources"]["clusters"]:
            if raw.get("name") == cluster:
                for j, hc in enumerate(raw.get("health_checks") or []):
                    if j < n:
                        out[j] = "initial_jitter" in hc or "initialJitter" in hc
                break
    except (KeyError, TypeError, AttributeError):
        pass
    return out


def run(bootstrap: Bootstrap, table, stats=None) -> int:
    """Entry point of the health-check process (the master forks, then calls this). Returns the
    exit code: 0 after SIGTERM or when the master is gone."""
    global counters
    # Until the loop's handler is installed: a SIGTERM right after the fork still exits 0.
    signal.signal(signal.SIGTERM, lambda signum, frame: os._exit(0))
    try:
        import uvloop
        loop = uvloop.new_event_loop()
    except ImportError:       # pragma: no cover - uvloop is a dependency
        loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    hp = HealthProcess(bootstrap, table, stats=stats)
    counters = hp.counters
    try:
        return loop.run_until_complete(hp.main())
    finally:
        try:
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            asyncio.set_event_loop(None)
            loop.close()
