"""The shared-memory host table (docs/host-table.md): layout, every field, atomic flags, and real
cross-process behaviour through os.fork()."""
import math
import os
import struct

import pytest

from proxy._fastpath import hosttable as ht
from proxy._fastpath.hosttable import HostTable


def _in_child(fn):
    """Run fn() in a forked child; return its exit status (0 = fn returned normally)."""
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            fn()
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def test_layout_matches_the_contract():
    lay = ht.layout()
    assert (lay["header.size"], lay["cluster.size"], lay["host.size"]) == (64, 64, 128)
    assert (ht.HEADER_SIZE, ht.CLUSTER_SIZE, ht.HOST_SIZE) == (64, 64, 128)
    assert [lay["header." + f] for f in ("magic", "version", "n_hosts", "n_clusters",
                                         "health_generation", "checker_heartbeat_ns")] == [0, 8, 12, 16, 24, 32]
    assert [lay["cluster." + f] for f in ("rr_cursor", "first_host", "n_slots",
                                          "membership_generation", "lb_healthy_panic")] == [0, 8, 12, 16, 24]
    # line 0: written by master / health process
    assert [lay["host." + f] for f in ("flags", "weight", "priority", "cluster_index", "port",
                                       "family", "ip")] == [0, 4, 8, 12, 16, 18, 20]
    assert lay["host.healthy_since_ns"] == 40 and lay["host.ejected_until_ns"] == 48
    assert lay["host.ejection_count"] == 56
    # line 1 (second cache line): written by workers
    assert [lay["host." + f] for f in ("active", "ewma_bits", "ewma_stamp_ns", "rq_total", "rq_error",
                                       "consecutive_5xx", "consecutive_gateway_failure",
                                       "consecutive_local_origin_failure",
                                       "rq_success_interval")] == [64, 72, 80, 88, 96, 104, 108, 112, 116]
    for k, off in lay.items():
        if k.endswith(("_ns", "_bits", "rq_total", "rq_error", "generation", "rr_cursor", "magic",
                       "active", "lb_healthy_panic")):
            assert off % 8 == 0, k


def test_header_and_size():
    t = HostTable(10, 3)
    assert (t.n_hosts, t.n_clusters) == (10, 3)
    assert len(t.buffer) == ht.table_size(10, 3) == 64 + 3 * 64 + 10 * 128
    raw = bytes(t.buffer[:24])
    assert raw[:8] == b"CYVOYHT1"
    assert struct.unpack_from("<IIII", raw, 8) == (1, 10, 3, 0)


def test_flag_constants():
    assert (ht.FAILED_ACTIVE_HC, ht.FAILED_OUTLIER, ht.PENDING_ACTIVE_HC, ht.DEGRADED_ACTIVE_HC,
            ht.DRAINING, ht.DNS_REMOVED) == (0x01, 0x02, 0x04, 0x08, 0x10, 0x20)
    assert ht.usable(0) and ht.usable(ht.DEGRADED_ACTIVE_HC)
    for f in (ht.FAILED_ACTIVE_HC, ht.FAILED_OUTLIER, ht.PENDING_ACTIVE_HC, ht.DRAINING, ht.DNS_REMOVED):
        assert not ht.usable(f)


def test_set_and_get_every_field():
    t = HostTable(4, 2)
    g0 = t.health_generation()
    t.set_cluster(1, 1, 3)
    assert t.cluster_slots(1) == (1, 3)
    assert t.membership_generation(1) == 1
    t.set_host(1, 1, "10.1.2.3", 8080, 5, 2, healthy_since_ns=123)
    t.set_host(2, 1, "2001:db8::7", 443, 1, 0)
    assert t.membership_generation(1) == 3
    assert t.health_generation() > g0
    assert t.host_address(1) == ("10.1.2.3", 8080)
    assert t.host_address(2) == ("2001:db8::7", 443)
    assert t.host_address(3) is None and not t.in_use(3) and t.in_use(1)
    assert (t.weight(1), t.priority(1), t.cluster_index(1)) == (5, 2, 1)
    assert t.healthy_since_ns(1) == 123
    t.set_healthy_since_ns(1, 456)
    assert t.healthy_since_ns(1) == 456
    t.set_ejection(1, 999, 3)
    assert t.ejection(1) == (999, 3)
    t.heartbeat(777)
    assert t.heartbeat_ns() == 777
    t.heartbeat()
    assert abs(t.heartbeat_ns() - ht.monotonic_ns()) < 10**9
    # same endpoint again: weight changes, state stays
    t.inc_active(1)
    t.set_host(1, 1, "10.1.2.3", 8080, 7, 2)
    assert t.weight(1) == 7 and t.active(1) == 1 and t.healthy_since_ns(1) == 456
    # another endpoint in the slot: state starts afresh
    t.set_flags(1, ht.FAILED_OUTLIER)
    t.set_host(1, 1, "10.1.2.4", 8080, 7, 2)
    assert t.active(1) == 0 and t.flags(1) == 0 and t.ejection(1) == (0, 0)
    gen = t.membership_generation(1)
    t.clear_host(2)
    assert t.host_address(2) is None and t.membership_generation(1) == gen + 1
    # traffic fields
    assert t.inc_active(0) == 1 and t.inc_active(0) == 2 and t.dec_active(0) == 1 and t.active(0) == 1
    assert [t.rr_next(0) for _ in range(3)] == [0, 1, 2]
    assert t.rr_next(1) == 0
    assert t.lb_healthy_panic(0) == 0
    with pytest.raises(IndexError):
        t.flags(4)
    with pytest.raises(IndexError):
        t.rr_next(2)
    with pytest.raises(ValueError):
        t.set_host(0, 0, "not-an-ip", 1, 1, 0)


def test_counters_and_record():
    t = HostTable(1, 1)
    t.record(0, 200, False, -1, 0, 1e9)
    t.record(0, 503, False, -1, 0, 1e9)
    t.record(0, 0, True, -1, 0, 1e9)
    c = t.counters(0)
    assert (c["rq_total"], c["rq_error"]) == (3, 2)
    assert (c["consecutive_5xx"], c["consecutive_gateway_failure"],
            c["consecutive_local_origin_failure"]) == (2, 2, 1)
    t.record(0, 500, False, -1, 0, 1e9)   # an upstream answer: not a gateway failure, not local
    c = t.counters(0)
    assert (c["consecutive_5xx"], c["consecutive_gateway_failure"],
            c["consecutive_local_origin_failure"]) == (3, 0, 0)
    t.reset_consecutive(0, "5xx")
    assert t.counters(0)["consecutive_5xx"] == 0
    t.record(0, 502, True, -1, 0, 1e9)
    t.reset_consecutive(0, "all")
    c = t.counters(0)
    assert (c["consecutive_5xx"], c["consecutive_gateway_failure"],
            c["consecutive_local_origin_failure"]) == (0, 0, 0)
    t.record(0, 404, False, -1, 0, 1e9)
    assert t.counters(0)["consecutive_5xx"] == 0 and t.counters(0)["rq_error"] == 4


def test_flags_atomic_or_and_bump_generation():
    t = HostTable(2, 1)
    g = t.health_generation()
    assert t.set_flags(0, ht.FAILED_ACTIVE_HC | ht.DEGRADED_ACTIVE_HC) == 0x09
    assert t.health_generation() == g + 1
    assert t.set_flags(0, ht.FAILED_OUTLIER, ht.FAILED_ACTIVE_HC) == 0x0A
    assert t.flags(0) == 0x0A and t.flags(1) == 0
    assert t.set_flags(0, 0, 0xFFFFFFFF) == 0
    assert t.health_generation() == g + 3


def test_ewma_peak_then_decay_with_injected_clock():
    t = HostTable(1, 1)
    decay = 10e9
    assert t.ewma_ns(0) == 0.0
    t.record(0, 200, False, 5_000_000, 1_000_000_000, decay)      # first sample: taken as is
    assert t.ewma_ns(0) == 5_000_000
    t.record(0, 200, False, 20_000_000, 1_500_000_000, decay)     # a peak replaces the average
    assert t.ewma_ns(0) == 20_000_000
    # below the average: decays toward the sample by exp(-dt/decay)
    t.record(0, 200, False, 10_000_000, 11_500_000_000, decay)    # dt = 10 s = one decay time
    w = math.exp(-1.0)
    assert t.ewma_ns(0) == pytest.approx(20e6 * w + 10e6 * (1 - w))
    prev = t.ewma_ns(0)
    t.record(0, 200, False, 10_000_000, 11_500_000_000, decay)    # dt = 0: no movement
    assert t.ewma_ns(0) == pytest.approx(prev)
    assert t.counters(0)["ewma_ms"] == pytest.approx(prev / 1e6)


def test_attach_sees_the_same_memory():
    t = HostTable(3, 1)
    u = HostTable.attach(t.buffer)
    assert (u.n_hosts, u.n_clusters) == (3, 1)
    t.set_host(2, 0, "127.0.0.1", 9, 1, 0)
    assert u.host_address(2) == ("127.0.0.1", 9)
    u.inc_active(2)
    assert t.active(2) == 1
    with pytest.raises(ValueError):
        HostTable.attach(bytearray(4096))


def test_copy_state_from_on_reload():
    old = HostTable(2, 1)
    old.set_host(1, 0, "10.0.0.1", 80, 1, 0)
    old.set_flags(1, ht.FAILED_OUTLIER)
    old.inc_active(1)
    old.record(1, 503, False, 3_000_000, 5, 1e9)
    new = HostTable(1, 1)
    new.set_host(0, 0, "10.0.0.1", 80, 1, 0)
    new.copy_state_from(0, old, 1)
    assert new.flags(0) == ht.FAILED_OUTLIER and new.active(0) == 1
    assert new.counters(0)["consecutive_5xx"] == 1 and new.ewma_ns(0) == 3_000_000


N = 100_000


def test_cross_process_active_and_cursor_totals_are_exact():
    t = HostTable(2, 1)

    def work():
        for _ in range(N):
            t.inc_active(1)
            t.rr_next(0)

    pid = os.fork()
    if pid == 0:
        try:
            work()
        finally:
            os._exit(0)
    work()
    os.waitpid(pid, 0)
    assert t.active(1) == 2 * N
    assert t.rr_next(0) == 2 * N

    def down():
        for _ in range(N):
            t.dec_active(1)

    pid = os.fork()
    if pid == 0:
        try:
            down()
        finally:
            os._exit(0)
    down()
    os.waitpid(pid, 0)
    assert t.active(1) == 0


def test_cross_process_flag_set_by_child_is_seen_by_parent():
    t = HostTable(3, 1)
    g = t.health_generation()
    assert _in_child(lambda: t.set_flags(2, ht.FAILED_ACTIVE_HC)) == 0
    assert t.flags(2) == ht.FAILED_ACTIVE_HC and t.flags(1) == 0
    assert t.health_generation() == g + 1
    assert _in_child(lambda: t.set_host(0, 0, "192.0.2.1", 80, 4, 1)) == 0
    assert t.host_address(0) == ("192.0.2.1", 80) and t.weight(0) == 4


def test_cross_process_ewma_cas_updates_do_not_lose_peaks():
    t = HostTable(1, 1)

    def peaks(base):
        for k in range(20_000):
            t.record(0, 200, False, base + k, 0, 1e9)

    pid = os.fork()
    if pid == 0:
        try:
            peaks(1_000_000)
        finally:
            os._exit(0)
    peaks(2_000_000)
    os.waitpid(pid, 0)
    # dt = 0 every time, so the EWMA only ever moves up to a peak: the max of all samples
    assert t.ewma_ns(0) == 2_000_000 + 19_999
    assert t.counters(0)["rq_total"] == 40_000
