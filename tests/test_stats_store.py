"""The shared-memory stats store (proxy/_fastpath/stats.pyx): per-slot writers, sums across
forked processes, retire, reader-local baseline, histogram blocks."""
import os
import struct

import pytest

from proxy._fastpath import stats as st
from proxy._fastpath.stats import SlotStats, StatsStore


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


def test_layout_and_sizes():
    lay = st.layout()
    assert lay["header.size"] == 64
    assert [lay["header." + f] for f in ("magic", "version", "n_slots", "n_counters", "n_gauges",
                                         "slot_stride", "high_water", "retire_seq")] == \
        [0, 8, 12, 16, 20, 24, 32, 40]
    assert st.slot_stride(3, 2) == 64
    assert st.slot_stride(10, 10) == 192          # 80 + 80 + 10 -> 170 -> 192
    assert st.store_size(10, 10, 4) == 64 + 5 * 192
    s = StatsStore(10, 10, n_slots=4)
    assert (s.n_counters, s.n_gauges, s.n_slots, s.RETIRED, s.slot_stride) == (10, 10, 4, 4, 192)
    hdr = bytes(s.buffer[:48])
    assert hdr[:8] == st.MAGIC
    assert struct.unpack_from("<IIII", hdr, 8) == (1, 4, 10, 10)
    assert st.HIST_WIDTH == st.NBUCKETS + 2 == len(st.BUCKET_BOUNDS) + 3
    assert st.BUCKET_BOUNDS[0] == 0.5 and st.BUCKET_BOUNDS[-1] == 3600000


def test_bad_arguments():
    with pytest.raises(ValueError):
        StatsStore(1, 1, n_slots=0)
    with pytest.raises(ValueError):
        StatsStore(-1, 1)
    s = StatsStore(2, 2, n_slots=2)
    with pytest.raises(IndexError):
        s.view(2)                      # the retired slot is not writable
    v = s.view(0)
    with pytest.raises(IndexError):
        v.inc(2)
    with pytest.raises(IndexError):
        v.gauge_add(-1, 1)
    with pytest.raises(TypeError):
        SlotStats()


def test_python_writers_and_totals():
    s = StatsStore(4, 3, n_slots=4)
    a, b = s.view(0), s.view(3)
    assert isinstance(a, SlotStats) and s.high_water == 4
    a.inc(0)
    a.inc(0, 4)
    b.add(0, 10)
    b.inc(3)
    a.gauge_add(1, 5)
    b.gauge_add(1, -2)
    b.gauge_set(2, 0)                    # set to 0: still "used"
    assert s.counters() == [15, 0, 0, 1]
    assert s.counter_total(0) == 15
    assert s.gauges() == [0, 3, 0]
    assert s.gauge_total(1) == 3
    assert s.gauges_used() == b"\x00\x01\x01"
    assert (a.counter(0), b.counter(0), s.slot_counter(3, 0)) == (5, 10, 10)
    assert (a.gauge(1), s.slot_gauge(3, 1)) == (5, -2)


def test_forked_children_write_their_own_slots_and_the_parent_sums():
    s = StatsStore(3, 2, n_slots=8)
    slots = [s.alloc_slot() for _ in range(4)]
    assert slots == [0, 1, 2, 3]

    def child(slot):
        def run():
            v = s.view(slot)
            for _ in range(1000 * (slot + 1)):
                v.inc(0)
            v.inc(2, slot)
            v.gauge_add(1, slot + 1)
        return run

    pids = []
    for slot in slots:
        pid = os.fork()
        if pid == 0:
            try:
                child(slot)()
            finally:
                os._exit(0)
        pids.append(pid)
    for pid in pids:
        assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0
    assert s.counters() == [1000 * (1 + 2 + 3 + 4), 0, 0 + 1 + 2 + 3]
    assert s.gauges() == [0, 1 + 2 + 3 + 4]
    assert [s.slot_counter(k, 0) for k in slots] == [1000, 2000, 3000, 4000]


def test_retire_folds_counters_and_drops_gauges():
    s = StatsStore(3, 2, n_slots=4)
    slot = s.alloc_slot()
    other = s.alloc_slot()
    assert _in_child(lambda: (s.view(slot).inc(0, 7), s.view(slot).gauge_add(0, 3),
                              s.view(slot).gauge_add(1, 0))) == 0
    s.view(other).inc(0, 1)
    s.view(other).gauge_add(0, 2)
    assert s.counter_total(0) == 8 and s.gauge_total(0) == 5
    s.retire(slot)
    assert s.counter_total(0) == 8                       # never goes down
    assert s.slot_counter(slot, 0) == 0 and s.slot_counter(s.RETIRED, 0) == 7
    assert s.gauge_total(0) == 2                         # the dead process's share is gone
    assert s.slot_gauge(slot, 0) == 0
    assert s.gauges_used() == b"\x01\x01"                # but the gauges stay "used"
    # the slot is reusable, and starts from zero
    assert s.alloc_slot() == slot
    s.view(slot).inc(0, 1)
    assert s.counter_total(0) == 9 and s.slot_counter(slot, 0) == 1
    s.retire(slot)
    assert s.slot_counter(s.RETIRED, 0) == 8


def test_alloc_slot_runs_out_and_retire_frees():
    s = StatsStore(1, 0, n_slots=2)
    assert (s.alloc_slot(), s.alloc_slot()) == (0, 1)
    assert s.free_slots() == 0
    with pytest.raises(RuntimeError):
        s.alloc_slot()
    s.retire(1)
    assert s.alloc_slot() == 1


def test_baseline_is_reader_local():
    s = StatsStore(3, 1, n_slots=2)
    v = s.view(0)
    v.inc(0, 5)
    v.inc(1, 2)
    v.inc(2, 9)
    assert s.baseline is None
    s.reset_baseline(0, 2)           # counters 0 and 1; 2 (say, a histogram) untouched
    assert s.counters() == [0, 0, 9]
    assert s.counters(raw=True) == [5, 2, 9]
    assert s.baseline == [5, 2, 0]
    v.inc(0, 3)
    assert s.counter_total(0) == 3 and s.counter_total(0, raw=True) == 8
    # a process that did not reset (its own object over the same memory) sees the raw totals
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        s.clear_baseline()
        os.write(w, str(s.counter_total(0)).encode())
        os._exit(0)
    os.waitpid(pid, 0)
    assert os.read(r, 64) == b"8"
    os.close(r)
    os.close(w)
    # retire does not disturb the baseline arithmetic
    s.retire(0)
    assert s.counter_total(0) == 3
    s.clear_baseline()
    assert s.counter_total(0) == 8


def test_histogram_blocks():
    s = StatsStore(2 + st.HIST_WIDTH, 0, n_slots=1)
    v = s.view(0)
    h = 2
    for ms in (0.1, 0.5, 0.51, 1, 3, 7, 99, 5000, 4_000_000, -1, float("nan")):
        v.record_time(h, ms)
    c = s.counters()
    buckets = c[h:h + st.NBUCKETS]
    assert buckets[0] == 4        # 0.1, 0.5, -1 -> 0, nan -> 0
    assert buckets[1] == 2        # 0.51, 1
    assert buckets[2] == 1        # 3
    assert buckets[3] == 1        # 7
    assert buckets[6] == 1        # 99 in (50, 100]
    assert buckets[11] == 1       # 5000 in (2500, 5000]
    assert buckets[19] == 1       # above 3600000
    assert c[h + st.HIST_COUNT] == 11
    assert c[h + st.HIST_SUM] == round(1000 * (0.1 + 0.5 + 0.51 + 1 + 3 + 7 + 99 + 5000 + 4_000_000))
    assert [st.bucket_of(x) for x in (0, 0.5, 0.50001, 3600000, 3600001)] == [0, 0, 1, 18, 19]
    with pytest.raises(IndexError):
        v.record_time(3, 1.0)     # the block would run past the counters


def test_readers_never_see_a_retire_half_done():
    """A reader process sums while the master retires again and again: the total it sees must
    never go down (a fold seen twice, then once, would)."""
    s = StatsStore(64, 0, n_slots=4)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        ok = 1
        try:
            os.close(r)
            last = 0
            seen = 0
            while True:
                t = s.counter_total(63)
                if t < last:
                    ok = 0
                    break
                last = t
                seen += 1
                if t >= 3000:
                    break
            os.write(w, b"ok" if ok else b"bad")
        finally:
            os._exit(0)
    os.close(w)
    v = s.view(1)
    for _ in range(3000):
        v.inc(63)
        s.retire(1)
    os.waitpid(pid, 0)
    assert os.read(r, 8) == b"ok"
    os.close(r)
    assert s.counter_total(63) == 3000


def test_c_benchmark_hooks():
    s = StatsStore(8 + st.HIST_WIDTH, 0, n_slots=1)
    assert s.bench_inc(0, 1000) > 0
    assert s.counters()[:8] == [1000] * 8
    assert s.bench_record_time(0, 8, 100) > 0
    assert s.counter_total(8 + st.HIST_COUNT) == 100
