"""Outlier detection (passive health checking) for one cluster, run in the health-check process.

Workers count every upstream result into the shared host table (`HostTable.record`: rq_total,
rq_error and the three consecutive_* counters, summed over all workers). `OutlierDetector` is the
one place that turns those counters into ejections: it is the single writer of the table's
FAILED_OUTLIER flag, so every decision sees the traffic of every worker (Envoy decides per
process, on its main thread, from counters its workers charge).

Semantics follow Envoy's outlier detector (docs/root/intro/arch_overview/upstream/outlier.rst,
source/common/upstream/outlier_detection_impl.cc); the config is `Cluster.outlier_detection`, the
validated dict with Envoy's defaults (durations in float seconds, percentages 0-100).

Detectors
  consecutive_5xx, consecutive_gateway_failure and (only with split_external_local_origin_errors)
  consecutive_local_origin_failure: a host whose counter reached the threshold is an outlier.
  A threshold of 0 disables that detector (Envoy compares an incremented counter to it, so 0
  never fires). After a detection the triggering counter is reset, enforced or not, so the next
  detection needs a fresh streak. Hosts already ejected are not examined.
  success_rate and failure_percentage: per interval, from the rq_total / rq_error deltas since
  the previous `tick` (the detector keeps the snapshot). Hosts ejected at the start of the
  interval analysis are left out. success_rate: hosts with at least success_rate_request_volume
  requests in the interval; if there are at least success_rate_minimum_hosts of them,
  threshold = mean - success_rate_stdev_factor/1000 * stdev (population stdev) and hosts below it
  are outliers. failure_percentage: hosts with at least failure_percentage_request_volume
  requests, if at least failure_percentage_minimum_hosts of them; a host whose failure
  percentage is >= failure_percentage_threshold is an outlier.

Ejection (same order as Envoy)
  1. counted as ejections_detected_<kind>;
  2. max_ejection_percent: allowed when 100 * (ejections_active + 1) <= max_ejection_percent *
     hosts (Envoy since PR #27909, issue #26877), otherwise ejections_overflow and nothing else.
     *cyvoy rule*: the first ejection of a cluster (ejections_active == 0) is always allowed when
     max_ejection_percent > 0. With Envoy's strict rule the default 10% never ejects anything in
     a cluster of fewer than 10 hosts (100 * 1 / 3 = 33 > 10), and a 2-3 host cluster is exactly
     where taking one broken host out matters; Envoy's own answer is the opt-in
     always_eject_one_host (PR #34796), which cyvoy also honours (it allows the first ejection
     even with max_ejection_percent 0). max_ejection_percent: 0 without always_eject_one_host
     disables ejection. Like Envoy the limit is per cluster, not per priority.
  3. enforcing_<kind>: an independent random draw per detection (randrange(100) < percent);
     a detection that is not enforced is reported (event with enforced=False) and changes
     nothing else.
  4. enforced: FAILED_OUTLIER is set, the host's consecutive counters are reset, its ejection
     multiplier grows by one (only while multiplier * base_ejection_time < max_ejection_time +
     base_ejection_time, as Envoy) and the ejection lasts
     min(base_ejection_time * multiplier, max_ejection_time) + jitter, jitter drawn uniformly in
     [0, max_ejection_time_jitter] per ejection. So the first ejection lasts base_ejection_time,
     a second one before any decay twice that, and so on up to max_ejection_time.

Un-ejection
  When the ejection time has passed, at the next `tick` or `check_now` (Envoy only looks at
  interval ticks, so its ejections last up to one interval longer): FAILED_OUTLIER is cleared and
  the consecutive counters reset so a few new errors do not re-eject at once. A host whose
  FAILED_OUTLIER the active health checker cleared (`on_active_hc_success`, or the flag found
  cleared) is unejected the same way.
  Decay: at every tick, a host that is not ejected and was unejected at least one interval ago
  loses one from its multiplier (Envoy; getting from max back to base takes about
  max_ejection_time / base_ejection_time * interval).

Timing in cyvoy (the latency bound)
  Envoy ejects on a consecutive_* streak as soon as the response is counted. Here the health
  process must call `check_now()` (all hosts) or `check_now(slot)` frequently, e.g. every 100 ms:
  a host is then ejected at most one check period after the response that completed the streak
  (plus the scheduling delay of the health process); responses that arrive in between still go
  to that host and only make the counter larger. If only `tick` runs, the bound is `interval`.
  `tick(now)` must run every `interval`; it does everything `check_now` does plus the success-rate
  and failure-percentage analysis and the decay.

Not implemented (the table has one error counter per host): separate local-origin success rate
and failure percentage (enforcing_local_origin_success_rate,
enforcing_failure_percentage_local_origin). success_rate and failure_percentage count every
error the workers record, local-origin failures included, in both modes. Outlier monitors
(extensions) are refused by the config schema.

Table bookkeeping: on every change the detector writes the slot's (ejected_until_ns,
ejection multiplier) with `HostTable.set_ejection` (ejected_until_ns 0 when not ejected; clock
seconds * 1e9, i.e. CLOCK_MONOTONIC ns with the default clock). A new detector (after a reload,
which copies host state into the new table) reads them back with `HostTable.ejection`: a slot
found FAILED_OUTLIER stays ejected until the recorded end, and the multiplier keeps growing or
decaying from where it was. Un-ejection does not touch healthy_since_ns: as in Envoy, slow start
follows active health checks, not outlier ejections.

Counters (`stats`, Envoy's names): ejections_active (gauge), ejections_detected_<kind> and
ejections_detected_total (every detection), ejections_overflow (detections refused by
max_ejection_percent), ejections_total (detections that passed max_ejection_percent, enforced or
not: Envoy's documented meaning of this deprecated counter), ejections_enforced_<kind> and
ejections_enforced_total (real ejections).

Members: slots whose table entry is in use and not DNS_REMOVED. A slot that stops being a member
(or gets another address) forgets its outlier state; if it was ejected its FAILED_OUTLIER is
cleared (the detector only ever clears the flag it set itself) and an uneject event is returned.
"""
from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass
from typing import Any, Callable, Optional

# Health flags of the host table (docs/host-table.md).
FAILED_ACTIVE_HC = 0x01
FAILED_OUTLIER = 0x02
DNS_REMOVED = 0x20

# Detection kinds: event.kind, and <kind> in ejections_detected_<kind> / ejections_enforced_<kind>.
CONSECUTIVE_5XX = "consecutive_5xx"
CONSECUTIVE_GATEWAY_FAILURE = "consecutive_gateway_failure"
CONSECUTIVE_LOCAL_ORIGIN_FAILURE = "consecutive_local_origin_failure"
SUCCESS_RATE = "success_rate"
FAILURE_PERCENTAGE = "failure_percentage"
KINDS = (CONSECUTIVE_5XX, CONSECUTIVE_GATEWAY_FAILURE, CONSECUTIVE_LOCAL_ORIGIN_FAILURE,
         SUCCESS_RATE, FAILURE_PERCENTAGE)

EJECT = "eject"
UNEJECT = "uneject"

# Why an uneject happened (event.reason).
REASON_TIME = "time"            # the ejection time has passed
REASON_ACTIVE_HC = "active_hc"  # a successful active health check (or the flag found cleared)
REASON_REMOVED = "removed"      # the slot is no longer a member of the cluster

# Envoy's defaults (outlier_detection.proto), for configs given as a partial dict.
DEFAULTS: dict[str, Any] = {
    "consecutive_5xx": 5,
    "interval": 10.0,
    "base_ejection_time": 30.0,
    "max_ejection_percent": 10,
    "enforcing_consecutive_5xx": 100,
    "enforcing_success_rate": 100,
    "success_rate_minimum_hosts": 5,
    "success_rate_request_volume": 100,
    "success_rate_stdev_factor": 1900,
    "consecutive_gateway_failure": 5,
    "enforcing_consecutive_gateway_failure": 0,
    "split_external_local_origin_errors": False,
    "consecutive_local_origin_failure": 5,
    "enforcing_consecutive_local_origin_failure": 100,
    "enforcing_local_origin_success_rate": 100,
    "failure_percentage_threshold": 85,
    "enforcing_failure_percentage": 0,
    "enforcing_failure_percentage_local_origin": 0,
    "failure_percentage_minimum_hosts": 5,
    "failure_percentage_request_volume": 50,
    "max_ejection_time": None,          # max(300s, base_ejection_time)
    "max_ejection_time_jitter": 0.0,
    "successful_active_health_check_uneject_host": True,
    "always_eject_one_host": False,
}

_STATS = ("ejections_active", "ejections_total", "ejections_overflow",
          "ejections_enforced_total", "ejections_detected_total",
          *(f"ejections_enforced_{k}" for k in KINDS), *(f"ejections_detected_{k}" for k in KINDS))


@dataclass(frozen=True, slots=True)
class OutlierEvent:
    """One detection or state change, for the outlier event log and stats."""
    cluster: str
    slot: int
    address: Optional[tuple[str, int]]
    kind: str                    # one of KINDS; uneject: the kind of the ejection it ends ("" if
                                 # that predates this detector, e.g. across a reload)
    action: str                  # EJECT | UNEJECT
    enforced: bool               # eject: the host was really ejected; uneject: always True
    time: float                  # the detector's clock (monotonic seconds)
    num_ejections: int           # enforced ejections of this host so far
    ejection_time: float = 0.0   # eject, enforced: how long the ejection lasts (seconds)
    reason: str = ""             # uneject: REASON_*
    host_success_rate: Optional[float] = None       # success_rate / failure_percentage (percent)
    cluster_success_rate_average: Optional[float] = None   # success_rate
    success_rate_ejection_threshold: Optional[float] = None  # success_rate


class _Host:
    __slots__ = ("address", "ejected", "kind", "ejected_at", "ejected_until", "multiplier",
                 "num_ejections", "unejected_at", "prev_total", "prev_error", "success_rate")

    def __init__(self, address, total: int, error: int) -> None:
        self.address = address
        self.ejected = False
        self.kind = ""
        self.ejected_at = 0.0
        self.ejected_until = 0.0
        self.multiplier = 0          # Envoy's eject time backoff
        self.num_ejections = 0
        self.unejected_at: Optional[float] = None
        self.prev_total = total      # rq_total / rq_error at the last tick
        self.prev_error = error
        self.success_rate = -1.0     # last interval's success rate (percent), -1: not computed


def _config(cluster_cfg: Any) -> tuple[str, Optional[dict[str, Any]]]:
    if isinstance(cluster_cfg, dict):
        return "", cluster_cfg
    return getattr(cluster_cfg, "name", ""), getattr(cluster_cfg, "outlier_detection", None)


class OutlierDetector:
    """Outlier detection for one cluster over its host-table `slots`.

    `cluster_cfg` is a `model.Cluster` (its `outlier_detection` dict is used; None disables the
    detector) or the outlier_detection dict itself. `table` is the `HostTable`
    (docs/host-table.md, plus its ejection / set_ejection accessors). `clock` gives monotonic
    seconds when `now` is not passed; `rng` (a `random.Random`-like object with `randrange` and
    `uniform`) draws enforcement and jitter.
    """

    def __init__(self, cluster_cfg: Any, table: Any, slots: list[int],
                 clock: Callable[[], float] = time.monotonic, *,
                 rng: Optional[random.Random] = None) -> None:
        self.cluster_name, od = _config(cluster_cfg)
        self.enabled = od is not None
        cfg = dict(DEFAULTS)
        cfg.update(od or {})
        if cfg["max_ejection_time"] is None:
            cfg["max_ejection_time"] = max(300.0, cfg["base_ejection_time"])
        if cfg["max_ejection_time"] < cfg["base_ejection_time"]:
            # Envoy refuses the cluster with the same message.
            raise ValueError("outlier detector's max_ejection_time cannot be smaller than "
                             "base_ejection_time")
        self.config = cfg
        self.interval = float(cfg["interval"])
        self._base = float(cfg["base_ejection_time"])
        self._max = float(cfg["max_ejection_time"])
        self._jitter = float(cfg["max_ejection_time_jitter"])
        self._table = table
        self._slots = list(slots)
        self._slot_set = frozenset(self._slots)
        self._clock = clock
        self._rng = rng if rng is not None else random.Random()
        self.stats: dict[str, int] = dict.fromkeys(_STATS, 0)
        # Last success-rate analysis, for /clusters (-1: not computed in the last interval).
        self.success_rate_average = -1.0
        self.success_rate_ejection_threshold = -1.0
        consecutive = [(CONSECUTIVE_5XX, "consecutive_5xx"),
                       (CONSECUTIVE_GATEWAY_FAILURE, "consecutive_gateway_failure")]
        if cfg["split_external_local_origin_errors"]:
            consecutive.append((CONSECUTIVE_LOCAL_ORIGIN_FAILURE,
                                "consecutive_local_origin_failure"))
        # (kind, counter name in HostTable.counters(), threshold, enforcing %), enabled ones only.
        self._consecutive = [(kind, counter, cfg[kind], cfg["enforcing_" + kind])
                             for kind, counter in consecutive if cfg[kind] > 0]
        self._hosts: dict[int, _Host] = {}
        if self.enabled:
            self._refresh(self._clock(), [])

    # --- public API ---------------------------------------------------------------------------

    def tick(self, now: Optional[float] = None) -> list[OutlierEvent]:
        """The interval analysis; call every `interval` seconds."""
        if not self.enabled:
            return []
        now = self._clock() if now is None else now
        events: list[OutlierEvent] = []
        self._refresh(now, events)
        for slot, h in self._hosts.items():
            self._check_host(slot, h, now, events)
        self._interval_analysis(now, events)
        # Decay: a host that stayed out of ejection for an interval since its last uneject.
        for slot, h in self._hosts.items():
            if (not h.ejected and h.multiplier > 0 and h.unejected_at is not None
                    and now - h.unejected_at >= self.interval):
                h.multiplier -= 1
                self._table.set_ejection(slot, 0, h.multiplier)
        return events

    def check_now(self, slot: Optional[int] = None,
                  now: Optional[float] = None) -> list[OutlierEvent]:
        """The consecutive_* detectors and due un-ejections, for one slot or (None) all; cheap
        enough to call every ~100 ms between ticks (see the module docstring for the bound)."""
        if not self.enabled:
            return []
        now = self._clock() if now is None else now
        events: list[OutlierEvent] = []
        if slot is not None and slot not in self._slot_set:
            return events
        for s in (self._slots if slot is None else (slot,)):
            h = self._member(s, now, events)
            if h is not None:
                self._check_host(s, h, now, events)
        return events

    def on_active_hc_success(self, slot: int, now: Optional[float] = None) -> list[OutlierEvent]:
        """The active health checker saw `slot` pass. With
        successful_active_health_check_uneject_host (default true) an ejected host that is not
        FAILED_ACTIVE_HC is unejected (Envoy)."""
        h = self._hosts.get(slot)
        if (not self.enabled or h is None or not h.ejected
                or not self.config["successful_active_health_check_uneject_host"]
                or self._table.flags(slot) & FAILED_ACTIVE_HC):
            return []
        now = self._clock() if now is None else now
        events: list[OutlierEvent] = []
        self._uneject(slot, h, now, REASON_ACTIVE_HC, events)
        return events

    def is_ejected(self, slot: int) -> bool:
        h = self._hosts.get(slot)
        return h is not None and h.ejected

    def ejected_until(self, slot: int) -> Optional[float]:
        """End of the slot's current ejection (clock seconds), None when not ejected."""
        h = self._hosts.get(slot)
        return h.ejected_until if h is not None and h.ejected else None

    def ejection_multiplier(self, slot: int) -> int:
        """The slot's ejection time multiplier (Envoy's backoff); the next ejection lasts
        min(base * (multiplier + 1), max)."""
        h = self._hosts.get(slot)
        return h.multiplier if h is not None else 0

    def num_ejections(self, slot: int) -> int:
        h = self._hosts.get(slot)
        return h.num_ejections if h is not None else 0

    def host_success_rate(self, slot: int) -> float:
        """The slot's success rate (percent) over the last interval, -1 if not computed."""
        h = self._hosts.get(slot)
        return h.success_rate if h is not None else -1.0

    # --- membership -----------------------------------------------------------------------------

    def _refresh(self, now: float, events: list[OutlierEvent]) -> None:
        for slot in self._slots:
            self._member(slot, now, events)

    def _member(self, slot: int, now: float, events: list[OutlierEvent]) -> Optional[_Host]:
        """The slot's state, (re)created or dropped as its table entry dictates."""
        t = self._table
        address = t.host_address(slot)
        flags = t.flags(slot)
        h = self._hosts.get(slot)
        if address is None or flags & DNS_REMOVED:
            if h is not None:
                self._drop(slot, h, now, events)
            return None
        if h is not None and h.address != tuple(address):
            self._drop(slot, h, now, events)
            h = None
        if h is None:
            c = t.counters(slot)
            h = self._hosts[slot] = _Host(tuple(address), c["rq_total"], c["rq_error"])
            self._adopt(slot, h, flags, now)
        elif h.ejected and not flags & FAILED_OUTLIER:
            # Someone else (the active health checker) cleared the flag.
            self._uneject(slot, h, now, REASON_ACTIVE_HC, events, clear_flag=False)
        return h

    def _adopt(self, slot: int, h: _Host, flags: int, now: float) -> None:
        """Take over the ejection state the table kept for the slot (it outlives a detector: a
        reload copies host state into the new table): the multiplier, and the ejection itself
        with its end time if the slot is FAILED_OUTLIER."""
        until_ns, count = self._table.ejection(slot)
        h.multiplier = count
        if flags & FAILED_OUTLIER:
            h.multiplier = max(count, 1)
            h.ejected = True
            h.ejected_at = now
            h.ejected_until = (until_ns / 1e9 if until_ns
                               else now + min(self._base * h.multiplier, self._max))
            self.stats["ejections_active"] += 1
        elif count:
            h.unejected_at = now        # decays from here on

    def _drop(self, slot: int, h: _Host, now: float, events: list[OutlierEvent]) -> None:
        if h.ejected:
            self._uneject(slot, h, now, REASON_REMOVED, events)
        del self._hosts[slot]

    # --- detection ------------------------------------------------------------------------------

    def _check_host(self, slot: int, h: _Host, now: float, events: list[OutlierEvent]) -> None:
        if h.ejected:
            if now >= h.ejected_until:
                self._uneject(slot, h, now, REASON_TIME, events)
            return
        if not self._consecutive:
            return
        counters = self._table.counters(slot)
        for kind, counter, threshold, enforcing in self._consecutive:
            if counters[counter] >= threshold:
                # Reset the streak whatever happens next, so the next detection needs a new one.
                self._table.reset_consecutive(slot, counter)
                self._detected(slot, h, kind, enforcing, now, events)
                if h.ejected:
                    return

    def _interval_analysis(self, now: float, events: list[OutlierEvent]) -> None:
        cfg = self.config
        self.success_rate_average = self.success_rate_ejection_threshold = -1.0
        rates: list[tuple[int, _Host, float, int]] = []   # (slot, host, success %, volume)
        for slot, h in self._hosts.items():
            c = self._table.counters(slot)
            total, error = c["rq_total"] - h.prev_total, c["rq_error"] - h.prev_error
            h.prev_total, h.prev_error = c["rq_total"], c["rq_error"]
            h.success_rate = -1.0
            if total <= 0 or error < 0 or h.ejected:
                continue        # no traffic, counters restarted, or already out
            rate = 100.0 * (total - min(error, total)) / total
            rates.append((slot, h, rate, total))
        n_hosts = len(self._hosts)
        if (n_hosts < cfg["success_rate_minimum_hosts"]
                and n_hosts < cfg["failure_percentage_minimum_hosts"]):
            return
        for slot, h, rate, volume in rates:
            if volume >= min(cfg["success_rate_request_volume"],
                             cfg["failure_percentage_request_volume"]):
                h.success_rate = rate

        valid = [r for r in rates if r[3] >= cfg["success_rate_request_volume"]]
        if valid and len(valid) >= cfg["success_rate_minimum_hosts"]:
            mean = sum(r[2] for r in valid) / len(valid)
            stdev = math.sqrt(sum((r[2] - mean) ** 2 for r in valid) / len(valid))
            threshold = mean - cfg["success_rate_stdev_factor"] / 1000.0 * stdev
            self.success_rate_average, self.success_rate_ejection_threshold = mean, threshold
            for slot, h, rate, _ in valid:
                if rate < threshold and not h.ejected:
                    self._detected(slot, h, SUCCESS_RATE, cfg["enforcing_success_rate"], now,
                                   events, rate, mean, threshold)

        valid = [r for r in rates if r[3] >= cfg["failure_percentage_request_volume"]]
        if valid and len(valid) >= cfg["failure_percentage_minimum_hosts"]:
            for slot, h, rate, _ in valid:
                if 100.0 - rate >= cfg["failure_percentage_threshold"] and not h.ejected:
                    self._detected(slot, h, FAILURE_PERCENTAGE,
                                   cfg["enforcing_failure_percentage"], now, events, rate)

    # --- ejection -------------------------------------------------------------------------------

    def _may_eject(self) -> bool:
        active = self.stats["ejections_active"]
        percent = min(100, self.config["max_ejection_percent"])
        if 100 * (active + 1) <= percent * len(self._hosts):
            return True
        # The first ejection of the cluster (see the module docstring: the cyvoy rule).
        return active == 0 and (percent > 0 or self.config["always_eject_one_host"])

    def _detected(self, slot: int, h: _Host, kind: str, enforcing: int, now: float,
                  events: list[OutlierEvent], rate: Optional[float] = None,
                  mean: Optional[float] = None, threshold: Optional[float] = None) -> None:
        stats = self.stats
        stats["ejections_detected_" + kind] += 1
        stats["ejections_detected_total"] += 1
        if not self._may_eject():
            stats["ejections_overflow"] += 1
            return
        stats["ejections_total"] += 1
        enforced = self._rng.randrange(100) < enforcing
        duration = 0.0
        if enforced:
            stats["ejections_enforced_" + kind] += 1
            stats["ejections_enforced_total"] += 1
            stats["ejections_active"] += 1
            if h.multiplier * self._base < self._max + self._base:
                h.multiplier += 1
            jitter = self._rng.uniform(0.0, self._jitter) if self._jitter > 0 else 0.0
            duration = min(self._base * h.multiplier, self._max) + jitter
            h.ejected, h.kind = True, kind
            h.ejected_at, h.ejected_until = now, now + duration
            h.num_ejections += 1
            self._table.set_ejection(slot, int(h.ejected_until * 1e9), h.multiplier)
            self._table.set_flags(slot, FAILED_OUTLIER, 0)
            self._table.reset_consecutive(slot, "all")
        events.append(OutlierEvent(self.cluster_name, slot, h.address, kind, EJECT, enforced, now,
                                   h.num_ejections, duration, "", rate, mean, threshold))

    def _uneject(self, slot: int, h: _Host, now: float, reason: str,
                 events: list[OutlierEvent], clear_flag: bool = True) -> None:
        h.ejected = False
        h.unejected_at = now
        self.stats["ejections_active"] -= 1
        if reason == REASON_REMOVED:
            self._table.set_ejection(slot, 0, 0)
        else:
            self._table.set_ejection(slot, 0, h.multiplier)
            self._table.reset_consecutive(slot, "all")
        if clear_flag:
            self._table.set_flags(slot, 0, FAILED_OUTLIER)
        events.append(OutlierEvent(self.cluster_name, slot, h.address, h.kind, UNEJECT, True, now,
                                   h.num_ejections, 0.0, reason))
