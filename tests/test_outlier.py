"""proxy.health.outlier: Envoy's outlier detection over the shared host table.

Every test runs against the real shared-memory HostTable ("shm") and against a small in-memory
stand-in ("mem") with only the HostTable methods the detector and these tests use
(docs/host-table.md), so the detector is held to the contract rather than to one implementation. Traffic is produced with
`record()`, as workers do; time is an injected clock. Configs go through the real config loader.
"""
from __future__ import annotations

import os
import random

import pytest

from proxy.config.loader import build_bootstrap
from proxy.health.outlier import (CONSECUTIVE_5XX, CONSECUTIVE_GATEWAY_FAILURE,
                                  CONSECUTIVE_LOCAL_ORIGIN_FAILURE, EJECT, FAILED_ACTIVE_HC,
                                  FAILED_OUTLIER, FAILURE_PERCENTAGE, REASON_ACTIVE_HC,
                                  REASON_REMOVED, REASON_TIME, SUCCESS_RATE, UNEJECT,
                                  OutlierDetector)

try:
    from proxy._fastpath.hosttable import HostTable
except ImportError:     # not built yet
    HostTable = None

DNS_REMOVED = 0x20
MS = 1_000_000


class MemTable:
    """In-memory stand-in with the HostTable API the detector and these tests use."""
    _COUNTERS = ("rq_total", "rq_error", "consecutive_5xx", "consecutive_gateway_failure",
                 "consecutive_local_origin_failure")

    def __init__(self, n_hosts: int, n_clusters: int) -> None:
        self.n_hosts, self.n_clusters = n_hosts, n_clusters
        self._addr: list = [None] * n_hosts
        self._flags = [0] * n_hosts
        self._c = [dict.fromkeys(self._COUNTERS, 0) for _ in range(n_hosts)]
        self._ejection = [(0, 0)] * n_hosts

    def set_cluster(self, c, first_host, n_slots):
        pass

    def set_host(self, i, cluster_index, address, port, weight, priority):
        if self._addr[i] != (address, port):      # another endpoint: its state starts afresh
            self._flags[i], self._ejection[i] = 0, (0, 0)
            self._c[i] = dict.fromkeys(self._COUNTERS, 0)
        self._addr[i] = (address, port)

    def clear_host(self, i):
        self._addr[i] = None

    def host_address(self, i):
        return self._addr[i]

    def flags(self, i):
        return self._flags[i]

    def set_flags(self, i, set_bits, clear_bits):
        self._flags[i] = (self._flags[i] | set_bits) & ~clear_bits

    def record(self, i, status, local_origin_failure, latency_ns, now_ns, decay_ns):
        c = self._c[i]
        c["rq_total"] += 1
        error = status >= 500 or local_origin_failure
        c["rq_error"] += error
        c["consecutive_5xx"] = c["consecutive_5xx"] + 1 if error else 0
        gateway = status in (502, 503, 504) or local_origin_failure
        c["consecutive_gateway_failure"] = c["consecutive_gateway_failure"] + 1 if gateway else 0
        c["consecutive_local_origin_failure"] = (
            c["consecutive_local_origin_failure"] + 1 if local_origin_failure else 0)

    def counters(self, i):
        return {**self._c[i], "active": 0, "ewma_ms": 0.0}

    def reset_consecutive(self, i, which="all"):
        which = which.removeprefix("consecutive_")
        for name in ("5xx", "gateway_failure", "local_origin_failure"):
            if which in (name, "all"):
                self._c[i]["consecutive_" + name] = 0

    def copy_state_from(self, i, other, j):
        self._flags[i], self._ejection[i] = other._flags[j], other._ejection[j]
        self._c[i] = dict(other._c[j])

    def ejection(self, i):
        return self._ejection[i]

    def set_ejection(self, i, ejected_until_ns, ejection_count):
        self._ejection[i] = (ejected_until_ns, ejection_count)


TABLES = {"mem": MemTable, "shm": HostTable}


@pytest.fixture(params=["mem", "shm"])
def table_cls(request):
    if TABLES[request.param] is None:
        pytest.skip("proxy._fastpath.hosttable is not built")
    return TABLES[request.param]


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Cluster:
    """A cluster of n hosts in a fresh table, its detector, and helpers to drive them."""

    def __init__(self, table_cls, n: int, rng=None, **outlier_detection) -> None:
        doc = {"static_resources": {"clusters": [{
            "name": "backend", "outlier_detection": outlier_detection,
            "load_assignment": {"cluster_name": "backend", "endpoints": [{"lb_endpoints": [
                {"endpoint": {"address": {"socket_address": {"address": f"10.0.0.{i + 1}",
                                                             "port_value": 80}}}}
                for i in range(n)]}]}}]}}
        self.config = build_bootstrap(doc).clusters["backend"]
        self.table = table_cls(n, 1)
        self.table.set_cluster(0, 0, n)
        for i in range(n):
            self.table.set_host(i, 0, f"10.0.0.{i + 1}", 80, 1, 0)
        self.slots = list(range(n))
        self.clock = Clock()
        self.od = OutlierDetector(self.config, self.table, self.slots, clock=self.clock, rng=rng)

    def send(self, slot: int, status: int, n: int = 1, local: bool = False) -> None:
        now_ns = int(self.clock.now * 1e9)
        for _ in range(n):
            self.table.record(slot, status, local, MS, now_ns, 1e9)

    def advance(self, seconds: float) -> None:
        self.clock.now += seconds

    def tick(self, after: float = 0.0):
        self.advance(after)
        return self.od.tick(self.clock.now)

    def ejected(self, slot: int) -> bool:
        flagged = bool(self.table.flags(slot) & FAILED_OUTLIER)
        assert flagged == self.od.is_ejected(slot)
        return flagged

    def ejected_slots(self) -> list[int]:
        return [s for s in self.slots if self.ejected(s)]

    def eject_by_5xx(self, slot: int):
        self.send(slot, 500, 5)
        return self.od.check_now(slot)

    def reload(self) -> OutlierDetector:
        """What a reload does: a new table with the host state copied, and a new detector."""
        old, n = self.table, len(self.slots)
        self.table = type(old)(n, 1)
        self.table.set_cluster(0, 0, n)
        for i in self.slots:
            self.table.set_host(i, 0, *old.host_address(i), 1, 0)
            self.table.copy_state_from(i, old, i)
        self.od = OutlierDetector(self.config, self.table, self.slots, clock=self.clock)
        return self.od


# --- consecutive 5xx ---------------------------------------------------------------------------

def test_five_consecutive_5xx_eject_for_base_ejection_time(table_cls):
    c = Cluster(table_cls, 3)
    events = c.eject_by_5xx(0)
    assert c.ejected(0)
    (e,) = events
    assert (e.slot, e.kind, e.action, e.enforced, e.ejection_time, e.address) == \
        (0, CONSECUTIVE_5XX, EJECT, True, 30.0, ("10.0.0.1", 80))
    assert c.od.ejected_until(0) == c.clock.now + 30.0


def test_four_consecutive_5xx_do_not_eject(table_cls):
    c = Cluster(table_cls, 3)
    c.send(0, 500, 4)
    assert c.od.check_now(0) == [] and not c.ejected(0)


def test_a_success_breaks_the_5xx_streak(table_cls):
    c = Cluster(table_cls, 3)
    c.send(0, 500, 4)
    c.send(0, 200)
    c.send(0, 500, 4)
    assert c.od.check_now() == [] and not c.ejected(0)


def test_ejection_resets_the_consecutive_counters(table_cls):
    c = Cluster(table_cls, 3)
    c.eject_by_5xx(0)
    counters = c.table.counters(0)
    assert (counters["consecutive_5xx"], counters["consecutive_gateway_failure"]) == (0, 0)


def test_tick_alone_also_ejects_on_a_5xx_streak(table_cls):
    c = Cluster(table_cls, 3)
    c.send(1, 503, 5)
    assert [(e.slot, e.kind) for e in c.tick(10.0)] == [(1, CONSECUTIVE_5XX)]
    assert c.ejected(1)


def test_consecutive_5xx_threshold_is_configurable(table_cls):
    c = Cluster(table_cls, 3, consecutive_5xx=2)
    c.send(2, 500, 2)
    c.od.check_now(2)
    assert c.ejected(2)


def test_consecutive_5xx_zero_disables_the_detector(table_cls):
    c = Cluster(table_cls, 3, consecutive_5xx=0)
    c.send(0, 500, 50)
    assert c.od.check_now() == [] and not c.ejected(0)


# --- ejection time: growth, cap, un-ejection, decay --------------------------------------------

def test_host_is_unejected_when_the_ejection_time_has_passed(table_cls):
    c = Cluster(table_cls, 3)
    c.eject_by_5xx(0)
    assert c.tick(29.0) == [] and c.ejected(0)
    (e,) = c.tick(1.0)
    assert (e.slot, e.action, e.reason, e.kind) == (0, UNEJECT, REASON_TIME, CONSECUTIVE_5XX)
    assert not c.ejected(0) and c.od.stats["ejections_active"] == 0


def test_check_now_unejects_without_waiting_for_the_interval_tick(table_cls):
    c = Cluster(table_cls, 3)
    c.eject_by_5xx(0)
    c.advance(30.0)
    assert [e.action for e in c.od.check_now(0)] == [UNEJECT] and not c.ejected(0)


def test_unejection_resets_counters_charged_while_ejected(table_cls):
    c = Cluster(table_cls, 3)
    c.eject_by_5xx(0)
    c.send(0, 500, 4)       # panic-mode traffic while ejected
    c.tick(30.0)
    c.send(0, 500, 4)
    assert c.od.check_now(0) == [] and not c.ejected(0)


def test_second_ejection_lasts_twice_as_long(table_cls):
    c = Cluster(table_cls, 3)
    c.eject_by_5xx(0)
    c.tick(30.0)
    (e,) = c.eject_by_5xx(0)
    assert (e.ejection_time, e.num_ejections) == (60.0, 2)
    assert c.tick(59.0) == [] and c.ejected(0)
    c.tick(1.0)
    assert not c.ejected(0)


def test_ejection_time_is_capped_at_max_ejection_time(table_cls):
    c = Cluster(table_cls, 3, base_ejection_time="30s", max_ejection_time="100s")
    times = []
    for _ in range(6):
        (e,) = c.eject_by_5xx(0)
        times.append(e.ejection_time)
        c.tick(e.ejection_time)
    assert times == [30.0, 60.0, 90.0, 100.0, 100.0, 100.0]


def test_ejection_multiplier_decays_by_one_per_healthy_interval(table_cls):
    c = Cluster(table_cls, 3)           # interval 10s, base 30s
    for duration in (30.0, 60.0, 90.0):
        (e,) = c.eject_by_5xx(0)
        assert e.ejection_time == duration
        c.tick(duration)                # unejected at this tick
    assert c.od.ejection_multiplier(0) == 3
    c.tick(10.0)
    c.tick(10.0)
    assert c.od.ejection_multiplier(0) == 1
    (e,) = c.eject_by_5xx(0)
    assert e.ejection_time == 60.0


def test_no_decay_within_one_interval_of_the_unejection(table_cls):
    c = Cluster(table_cls, 3)
    c.eject_by_5xx(0)
    c.advance(30.0)
    c.od.check_now(0)                   # unejected between ticks
    c.tick(5.0)
    assert c.od.ejection_multiplier(0) == 1
    c.tick(10.0)
    assert c.od.ejection_multiplier(0) == 0


def test_jitter_is_added_to_the_ejection_time(table_cls):
    c = Cluster(table_cls, 3, rng=random.Random(7), max_ejection_time_jitter="5s")
    (e,) = c.eject_by_5xx(0)
    assert 30.0 <= e.ejection_time <= 35.0 and e.ejection_time != 30.0


def test_max_ejection_time_below_base_is_refused(table_cls):
    with pytest.raises(ValueError, match="max_ejection_time"):
        Cluster(table_cls, 3, base_ejection_time="60s", max_ejection_time="30s")


# --- max_ejection_percent ----------------------------------------------------------------------

def test_max_ejection_percent_holds_with_10_hosts(table_cls):
    c = Cluster(table_cls, 10)          # 10%: one host of 10
    for slot in (0, 1, 2):
        c.send(slot, 500, 5)
    c.od.check_now()
    assert c.ejected_slots() == [0]
    assert (c.od.stats["ejections_overflow"], c.od.stats["ejections_active"]) == (2, 1)


def test_max_ejection_percent_allows_its_share_with_20_hosts(table_cls):
    c = Cluster(table_cls, 20)
    for slot in range(5):
        c.send(slot, 500, 5)
    c.od.check_now()
    assert c.ejected_slots() == [0, 1]


def test_small_cluster_still_ejects_one_host(table_cls):
    """cyvoy rule: 10% of 3 hosts allows no ejection in Envoy since #27909; cyvoy allows one."""
    c = Cluster(table_cls, 3)
    c.send(0, 500, 5)
    c.send(1, 500, 5)
    c.od.check_now()
    assert c.ejected_slots() == [0] and c.od.stats["ejections_overflow"] == 1


def test_overflowed_host_is_ejected_once_the_other_returns(table_cls):
    c = Cluster(table_cls, 3)
    c.eject_by_5xx(0)
    c.eject_by_5xx(1)
    assert c.ejected_slots() == [0]
    c.tick(30.0)
    c.eject_by_5xx(1)
    assert c.ejected_slots() == [1]


def test_max_ejection_percent_zero_disables_ejection(table_cls):
    c = Cluster(table_cls, 3, max_ejection_percent=0)
    assert c.eject_by_5xx(0) == [] and c.ejected_slots() == []


def test_always_eject_one_host_ejects_even_at_zero_percent(table_cls):
    c = Cluster(table_cls, 3, max_ejection_percent=0, always_eject_one_host=True)
    c.eject_by_5xx(0)
    c.eject_by_5xx(1)
    assert c.ejected_slots() == [0]


# --- gateway failure and local-origin failure --------------------------------------------------

def test_gateway_failure_is_detected_but_not_enforced_by_default(table_cls):
    c = Cluster(table_cls, 3, consecutive_5xx=0)    # only the gateway detector
    c.send(0, 502, 5)
    (e,) = c.od.check_now(0)
    assert (e.kind, e.action, e.enforced) == (CONSECUTIVE_GATEWAY_FAILURE, EJECT, False)
    assert not c.ejected(0)
    stats = c.od.stats
    assert (stats["ejections_detected_consecutive_gateway_failure"],
            stats["ejections_enforced_consecutive_gateway_failure"]) == (1, 0)
    assert c.table.counters(0)["consecutive_gateway_failure"] == 0   # a new streak is needed


def test_gateway_failure_ejects_when_enforced(table_cls):
    c = Cluster(table_cls, 3, consecutive_5xx=0, enforcing_consecutive_gateway_failure=100)
    c.send(0, 504, 5)
    c.od.check_now(0)
    assert c.ejected(0) and c.od.stats["ejections_enforced_consecutive_gateway_failure"] == 1


def test_local_origin_failures_eject_only_in_split_mode(table_cls):
    plain = Cluster(table_cls, 3, consecutive_5xx=0, consecutive_gateway_failure=0)
    plain.send(0, 503, 5, local=True)
    assert plain.od.check_now(0) == []
    split = Cluster(table_cls, 3, consecutive_5xx=0, consecutive_gateway_failure=0,
                    split_external_local_origin_errors=True)
    split.send(0, 503, 5, local=True)
    assert [e.kind for e in split.od.check_now(0)] == [CONSECUTIVE_LOCAL_ORIGIN_FAILURE]
    assert split.ejected(0)


# --- success rate and failure percentage -------------------------------------------------------

def interval(c: Cluster, errors: dict[int, tuple[int, int]], ok: int = 100) -> None:
    """One interval of traffic: `ok` successes per host, or (successes, errors) for the hosts
    in `errors`, errors spread evenly among the successes."""
    for slot in c.slots:
        good, bad = errors.get(slot, (ok, 0))
        n = good + bad
        for i in range(n):
            c.send(slot, 500 if (i + 1) * bad // n != i * bad // n else 200)


def test_success_rate_outlier_is_ejected(table_cls):
    c = Cluster(table_cls, 5)
    interval(c, {3: (100, 50)})
    (e,) = c.tick(10.0)
    assert (e.slot, e.kind, e.enforced) == (3, SUCCESS_RATE, True) and c.ejected(3)
    assert e.host_success_rate == pytest.approx(100 * 100 / 150)
    assert e.cluster_success_rate_average == pytest.approx((400 + 100 * 100 / 150) / 5)
    assert e.host_success_rate < e.success_rate_ejection_threshold < e.cluster_success_rate_average
    assert c.od.stats["ejections_enforced_success_rate"] == 1


def test_success_rate_ignores_hosts_below_request_volume(table_cls):
    c = Cluster(table_cls, 5)
    interval(c, {3: (100, 50)}, ok=99)  # only host 3 reaches success_rate_request_volume 100
    assert c.tick(10.0) == [] and not c.ejected(3)
    assert c.od.success_rate_ejection_threshold == -1.0


def test_success_rate_needs_minimum_hosts(table_cls):
    c = Cluster(table_cls, 4)
    interval(c, {3: (100, 50)})
    assert c.tick(10.0) == [] and c.ejected_slots() == []


def test_success_rate_uses_only_the_last_interval(table_cls):
    c = Cluster(table_cls, 5, enforcing_success_rate=0)
    interval(c, {3: (100, 50)})
    assert [(e.slot, e.kind, e.enforced) for e in c.tick(10.0)] == [(3, SUCCESS_RATE, False)]
    interval(c, {})
    assert c.tick(10.0) == [] and c.od.host_success_rate(3) == 100.0


def test_failure_percentage_ejects_when_enforcing_set(table_cls):
    c = Cluster(table_cls, 5, consecutive_5xx=0, enforcing_failure_percentage=100)
    interval(c, {2: (10, 50)})          # 83% errors, below failure_percentage_threshold 85
    assert c.tick(10.0) == []
    interval(c, {2: (10, 60)})          # 86%
    (e,) = c.tick(10.0)
    assert (e.slot, e.kind, e.enforced) == (2, FAILURE_PERCENTAGE, True) and c.ejected(2)


def test_failure_percentage_is_detected_but_not_enforced_by_default(table_cls):
    c = Cluster(table_cls, 5, consecutive_5xx=0)
    interval(c, {2: (10, 60)})
    (e,) = c.tick(10.0)
    assert (e.slot, e.kind, e.enforced) == (2, FAILURE_PERCENTAGE, False) and not c.ejected(2)


def test_failure_percentage_ignores_hosts_below_request_volume(table_cls):
    c = Cluster(table_cls, 5, consecutive_5xx=0, enforcing_failure_percentage=100)
    interval(c, {2: (5, 40)})           # 45 < failure_percentage_request_volume 50
    assert c.tick(10.0) == [] and not c.ejected(2)


# --- enforcement draws, events, counters -------------------------------------------------------

class Draws:
    """rng stand-in: randrange returns the given values in turn."""

    def __init__(self, *values: int) -> None:
        self.values = list(values)

    def randrange(self, n: int) -> int:
        return self.values.pop(0)

    def uniform(self, a: float, b: float) -> float:
        return a


def test_enforcing_percentage_is_a_random_draw_per_detection(table_cls):
    c = Cluster(table_cls, 3, rng=Draws(60, 40), enforcing_consecutive_5xx=50)
    (first,) = c.eject_by_5xx(0)        # draw 60: not below 50
    (second,) = c.eject_by_5xx(0)       # draw 40: enforced
    assert (first.enforced, second.enforced) == (False, True) and c.ejected(0)


def test_counters_count_detections_overflows_and_ejections(table_cls):
    c = Cluster(table_cls, 10, consecutive_5xx=0, enforcing_consecutive_gateway_failure=100)
    c.send(0, 503, 5)
    c.send(1, 503, 5)
    c.od.check_now()
    s = c.od.stats
    assert (s["ejections_detected_consecutive_gateway_failure"],
            s["ejections_enforced_consecutive_gateway_failure"], s["ejections_overflow"],
            s["ejections_total"], s["ejections_enforced_total"], s["ejections_active"]) == \
        (2, 1, 1, 1, 1, 1)


# --- cooperation with the active health checker and membership ---------------------------------

def test_successful_active_health_check_unejects(table_cls):
    c = Cluster(table_cls, 3)
    c.eject_by_5xx(0)
    (e,) = c.od.on_active_hc_success(0)
    assert (e.action, e.reason) == (UNEJECT, REASON_ACTIVE_HC) and not c.ejected(0)


def test_active_health_check_does_not_uneject_a_host_failing_it(table_cls):
    c = Cluster(table_cls, 3)
    c.eject_by_5xx(0)
    c.table.set_flags(0, FAILED_ACTIVE_HC, 0)
    assert c.od.on_active_hc_success(0) == [] and c.ejected(0)


def test_flag_cleared_by_the_health_checker_is_noticed(table_cls):
    c = Cluster(table_cls, 3)
    c.eject_by_5xx(0)
    c.table.set_flags(0, 0, FAILED_OUTLIER)
    (e,) = c.tick(1.0)
    assert (e.action, e.reason) == (UNEJECT, REASON_ACTIVE_HC)
    assert c.od.stats["ejections_active"] == 0


def test_removed_host_gives_back_its_ejection(table_cls):
    c = Cluster(table_cls, 3)
    c.eject_by_5xx(0)
    c.table.set_flags(0, DNS_REMOVED, 0)
    (e,) = c.tick(1.0)
    assert (e.action, e.reason) == (UNEJECT, REASON_REMOVED)
    assert not c.table.flags(0) & FAILED_OUTLIER and c.od.stats["ejections_active"] == 0
    c.eject_by_5xx(1)
    assert c.od.is_ejected(1)


def test_reload_keeps_an_ejection_and_its_end(table_cls):
    c = Cluster(table_cls, 3)
    c.eject_by_5xx(0)
    c.advance(20.0)
    c.reload()
    assert c.ejected(0) and c.od.stats["ejections_active"] == 1
    assert c.tick(9.0) == [] and c.ejected(0)
    assert [e.action for e in c.tick(1.0)] == [UNEJECT]


def test_reload_keeps_the_ejection_multiplier(table_cls):
    c = Cluster(table_cls, 3)
    for duration in (30.0, 60.0):
        c.eject_by_5xx(0)
        c.tick(duration)
    c.reload()
    assert c.od.ejection_multiplier(0) == 2
    (e,) = c.eject_by_5xx(0)
    assert e.ejection_time == 90.0


def test_disabled_without_outlier_detection(table_cls):
    c = Cluster(table_cls, 3)
    od = OutlierDetector(type(c.config)(name="plain"), c.table, c.slots, clock=c.clock)
    c.send(0, 500, 10)
    assert od.check_now() == [] and od.tick() == [] and c.ejected_slots() == []


@pytest.mark.skipif(HostTable is None, reason="proxy._fastpath.hosttable is not built")
def test_detector_counts_the_streak_across_worker_processes():
    """Three 5xx from a forked worker and two from this one make one streak of five."""
    c = Cluster(HostTable, 3)
    pid = os.fork()
    if pid == 0:
        try:
            c.send(0, 500, 3)
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    c.send(0, 500, 2)
    c.od.check_now()
    assert c.ejected(0)
