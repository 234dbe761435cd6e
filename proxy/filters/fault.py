"""envoy.filters.http.fault: inject delays and aborts so users can test their own resilience.

Envoy's behaviour (docs/root/configuration/http/http_filters/fault_filter.rst,
source/extensions/filters/http/fault/fault_filter.cc): only requests to `upstream_cluster` (if
set) that match every matcher in `headers`; the delay is decided first and the abort after the
delay has run; `header_delay` / `header_abort` take the duration (ms) / status from the request
headers x-envoy-fault-delay-request / x-envoy-fault-abort-request, and the
x-envoy-fault-*-percentage headers may lower (never raise) the configured percentage. An abort is
a local reply "fault filter abort" with response flag FI; a delay sets flag DI.

max_active_faults holds across all workers (a shared counter). A fault is active from its
injection until its delay ends (an abort: until its reply is written); Envoy counts it until the
stream ends, so cyvoy's count can only be lower.
"""
from __future__ import annotations

from proxy.config.filters import FAULT
from proxy.filters import Delay, Reply, hit
from proxy.router import compile_headers

ABORT_BODY = b"fault filter abort"
H_DELAY = b"x-envoy-fault-delay-request"
H_DELAY_PCT = b"x-envoy-fault-delay-request-percentage"
H_ABORT = b"x-envoy-fault-abort-request"
H_ABORT_PCT = b"x-envoy-fault-abort-request-percentage"


def _header_int(head, name: bytes):
    v = head.get(name)
    if v is None:
        return None
    try:
        return int(v.strip())
    except ValueError:
        return None


def _share(configured: tuple[int, int], head, header: bytes) -> tuple[int, int]:
    """The header percentage, capped at the configured numerator (same denominator)."""
    num, den = configured
    v = _header_int(head, header)
    if v is not None and v >= 0:
        num = min(num, v)
    return (num, den)


class FaultInjection:
    def __init__(self, cfg, hcm_stat_prefix: str, worker, shared):
        self.cfg = cfg
        self.counters = shared.counters
        reg, s = worker.registry, worker.slot_stats
        root = f"http.{hcm_stat_prefix}.fault."
        self.stats = s
        self.i_delays = reg.counter(root + "delays_injected")
        self.i_aborts = reg.counter(root + "aborts_injected")
        self.i_overflow = reg.counter(root + "faults_overflow")
        self.i_active = reg.gauge(root + "active_faults")
        self._matchers: dict[int, object] = {}

    def decode_headers(self, ds, head, entry, cluster_name):
        cfg = self.cfg
        if entry is not None:
            cfg = entry.per_filter.get(FAULT, cfg)
        if cfg.upstream_cluster and cfg.upstream_cluster != cluster_name:
            return None
        if cfg.headers:
            match = self._matchers.get(id(cfg))
            if match is None:
                match = self._matchers[id(cfg)] = compile_headers(cfg.headers)
            if not match(head):
                return None
        delay = self._delay(cfg, head)
        if delay is not None:
            if not self._acquire(cfg):
                return None
            self.stats.inc(self.i_delays)

            def then():
                self._release(cfg)
                return self._abort(cfg, head)

            return Delay(delay, then, lambda: self._release(cfg), "DI")
        return self._abort(cfg, head)

    def _delay(self, cfg, head):
        if cfg.delay_percent is None:
            return None
        if cfg.delay_from_header:
            ms = _header_int(head, H_DELAY)
            if ms is None or ms <= 0:
                return None
            seconds = ms / 1000.0
        else:
            seconds = cfg.delay
        return seconds if hit(_share(cfg.delay_percent, head, H_DELAY_PCT)) else None

    def _abort(self, cfg, head):
        if cfg.abort_percent is None:
            return None
        if cfg.abort_from_header:
            status = _header_int(head, H_ABORT)
            if status is None or not 200 <= status < 600:   # Envoy's documented range
                return None
        else:
            status = cfg.abort_status
        if not hit(_share(cfg.abort_percent, head, H_ABORT_PCT)):
            return None
        if not self._acquire(cfg):
            return None
        self.stats.inc(self.i_aborts)
        self._release(cfg)
        return Reply(status, ABORT_BODY, b"", "FI")

    def _acquire(self, cfg) -> bool:
        if cfg.counter >= 0 and not self.counters.acquire(cfg.counter, cfg.max_active_faults):
            self.stats.inc(self.i_overflow)
            return False
        self.stats.gauge_add(self.i_active, 1)
        return True

    def _release(self, cfg) -> None:
        if cfg.counter >= 0:
            self.counters.release(cfg.counter)
        self.stats.gauge_add(self.i_active, -1)
