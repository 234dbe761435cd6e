# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Stats in shared memory, summed over processes (contract: proxy/stats/README.md; layout: stats.pxd).

The master creates one StatsStore before forking. Every process that counts (workers, the
health-check process, the master itself) gets its own slot (`alloc_slot` in the master, then
`view(slot)` in the child) and is that slot's only writer. Readers (the admin server) sum the
slots with relaxed loads. When a process has exited the master calls `retire(slot)`: its
counters are folded into the extra "retired" slot (so totals never go down) and the slot is
zeroed for reuse; its gauges are dropped (a dead process holds no connections).

`reset_baseline` implements /reset_counters without writing into anyone's slot: the reader keeps
a snapshot of the totals (process-local, in this object) and subtracts it.

Names and indexes come from proxy.stats.StatRegistry, built identically in every process.
"""
import mmap as _mmap

from libc.stdint cimport uint8_t, uint32_t, uint64_t, int64_t, uintptr_t
from libc.stdlib cimport calloc, free
from libc.string cimport memset

HEADER_SIZE = sizeof(cyv_st_header)
MAGIC = b"CYVOYST1"
VERSION = 1
NBOUNDS = CYV_ST_NBOUNDS
NBUCKETS = CYV_ST_NBUCKETS
HIST_SUM = CYV_ST_HIST_SUM
HIST_COUNT = CYV_ST_HIST_COUNT
HIST_WIDTH = CYV_ST_HIST_WIDTH
BUCKET_BOUNDS = tuple(cyv_st_bounds[i] for i in range(CYV_ST_NBOUNDS))
MAX_SLOTS = 65535


def slot_stride(n_counters, n_gauges):
    """Bytes per slot: counters, gauges and gauge-used bytes, rounded up to a cache line."""
    raw = 8 * int(n_counters) + 8 * int(n_gauges) + int(n_gauges)
    return max(64, (raw + 63) // 64 * 64)


def store_size(n_counters, n_gauges, n_slots=64):
    """Bytes of a store: the header and n_slots + 1 slots (the last one is "retired")."""
    return HEADER_SIZE + slot_stride(n_counters, n_gauges) * (int(n_slots) + 1)


def layout():
    """{'header.<field>': byte offset, 'header.size': 64}, from the C struct (tests)."""
    cdef cyv_st_header h
    cdef uintptr_t b = <uintptr_t>&h
    return {
        "header.size": sizeof(cyv_st_header),
        "header.magic": <uintptr_t>&h.magic - b,
        "header.version": <uintptr_t>&h.version - b,
        "header.n_slots": <uintptr_t>&h.n_slots - b,
        "header.n_counters": <uintptr_t>&h.n_counters - b,
        "header.n_gauges": <uintptr_t>&h.n_gauges - b,
        "header.slot_stride": <uintptr_t>&h.slot_stride - b,
        "header.high_water": <uintptr_t>&h.high_water - b,
        "header.retire_seq": <uintptr_t>&h.retire_seq - b,
    }


def bucket_of(double ms):
    """The histogram bucket a value (ms) falls in: 0..NBOUNDS (NBOUNDS: above the last bound)."""
    return hist_bucket(ms)


cdef class StatsStore:
    """StatsStore(n_counters, n_gauges, n_slots=64): a new zeroed store in an anonymous shared
    mmap. Create it in the master before forking; children inherit the mapping.

    Slot indexes are 0..n_slots-1; `RETIRED` (== n_slots) is the slot retired processes are
    folded into (readable, written only by `retire` / `add_retired`)."""

    def __init__(self, n_counters, n_gauges, n_slots=64):
        n_counters = int(n_counters)
        n_gauges = int(n_gauges)
        n_slots = int(n_slots)
        if n_counters < 0 or n_gauges < 0 or n_counters > 0xFFFFFFFF or n_gauges > 0xFFFFFFFF:
            raise ValueError("n_counters and n_gauges must be in [0, 2**32)")
        if n_slots < 1 or n_slots > MAX_SLOTS:
            raise ValueError(f"n_slots must be in [1, {MAX_SLOTS}]")
        stride = slot_stride(n_counters, n_gauges)
        mm = _mmap.mmap(-1, store_size(n_counters, n_gauges, n_slots), flags=_mmap.MAP_SHARED,
                        prot=_mmap.PROT_READ | _mmap.PROT_WRITE)
        cdef unsigned char[::1] view = mm
        self._mm = mm
        self._view = view
        self.base = &view[0]
        if (<uintptr_t>self.base) % 64 != 0:
            raise ValueError("stats store must be 64-byte aligned")
        self.hdr = <cyv_st_header *>self.base
        self.hdr.version = CYV_ST_VERSION
        self.hdr.n_slots = <uint32_t>n_slots
        self.hdr.n_counters = <uint32_t>n_counters
        self.hdr.n_gauges = <uint32_t>n_gauges
        self.hdr.slot_stride = <uint64_t>stride
        cyv_st_st_u64_rel(&self.hdr.magic, CYV_ST_MAGIC)
        self.n_slots = n_slots
        self.n_counters = n_counters
        self.n_gauges = n_gauges
        self.slot_stride = stride
        self._baseline = None
        self._free = list(range(n_slots - 1, -1, -1))

    @property
    def RETIRED(self):
        """Index of the retired slot (== n_slots)."""
        return self.n_slots

    @property
    def buffer(self):
        """The mmap holding the store."""
        return self._mm

    @property
    def high_water(self):
        """1 + the highest slot ever viewed or allocated: readers sum slots [0, high_water) and
        the retired slot."""
        return cyv_st_ld_u32_acq(&self.hdr.high_water)

    cdef unsigned char *_slot(self, Py_ssize_t slot) noexcept nogil:
        return self.base + sizeof(cyv_st_header) + <size_t>self.slot_stride * <size_t>slot

    cdef int _check_slot(self, Py_ssize_t slot, bint allow_retired) except -1:
        if slot < 0 or slot > self.n_slots or (slot == self.n_slots and not allow_retired):
            raise IndexError(f"slot {slot} out of range [0, {self.n_slots}"
                             + ("]" if allow_retired else ")"))
        return 0

    cdef int _mark_high_water(self, Py_ssize_t slot) except -1:
        cdef uint32_t cur = cyv_st_ld_u32_acq(&self.hdr.high_water)
        cdef uint32_t want = <uint32_t>(slot + 1)
        while cur < want:
            if cyv_st_cas_u32(&self.hdr.high_water, &cur, want):
                break
        return 0

    # ---- slots (master) ------------------------------------------------------------------------

    def alloc_slot(self):
        """A free slot for a process about to be forked (master-local bookkeeping; lowest first).
        `retire(slot)` gives it back. Raises RuntimeError when all n_slots are in use."""
        if not self._free:
            raise RuntimeError(f"all {self.n_slots} stats slots are in use")
        slot = self._free.pop()
        self._mark_high_water(slot)
        return slot

    def free_slots(self):
        """Number of slots alloc_slot can still hand out."""
        return len(self._free)

    def view(self, Py_ssize_t slot):
        """The writer for `slot` (in the process that owns it). Cython code types it as
        `SlotStats` and calls the inline methods; Python code gets the same object with
        Python-visible inc / add / gauge_add / gauge_set / record_time."""
        self._check_slot(slot, False)
        self._mark_high_water(slot)
        cdef SlotStats s = SlotStatsPy.__new__(SlotStatsPy)
        cdef unsigned char *p = self._slot(slot)
        s.counters = <uint64_t *>p
        s.gauges = <int64_t *>(p + 8 * self.n_counters)
        s.gauge_used = <uint8_t *>(p + 8 * self.n_counters + 8 * self.n_gauges)
        s.slot = slot
        s.n_counters = self.n_counters
        s.n_gauges = self.n_gauges
        s.store = self
        return s

    def retire(self, Py_ssize_t slot):
        """The process using `slot` has exited (master only): add its counters into the retired
        slot, OR its gauge-used bits into the retired slot's, zero the slot (counters, gauges and
        used bits: gauges of a dead process are dropped, not folded), and make the slot
        allocatable again. Readers never see the counts twice or not at all (seqlock)."""
        self._check_slot(slot, False)
        cdef uint64_t *src = <uint64_t *>self._slot(slot)
        cdef uint64_t *dst = <uint64_t *>self._slot(self.n_slots)
        cdef uint8_t *su = <uint8_t *>(self._slot(slot) + 8 * self.n_counters + 8 * self.n_gauges)
        cdef uint8_t *du = <uint8_t *>(self._slot(self.n_slots) + 8 * self.n_counters
                                       + 8 * self.n_gauges)
        cdef int64_t *g = <int64_t *>(self._slot(slot) + 8 * self.n_counters)
        cdef Py_ssize_t i
        cdef uint64_t seq = cyv_st_ld_u64(&self.hdr.retire_seq)
        cdef uint64_t v
        cyv_st_set_u64(&self.hdr.retire_seq, seq + 1)
        cyv_st_fence_rel()
        for i in range(self.n_counters):
            v = cyv_st_ld_u64(&src[i])
            if v:
                cyv_st_add_u64(&dst[i], v)
                cyv_st_set_u64(&src[i], 0)
        for i in range(self.n_gauges):
            cyv_st_set_i64(&g[i], 0)
            if cyv_st_ld_u8(&su[i]):
                cyv_st_set_u8(&du[i], 1)
                cyv_st_set_u8(&su[i], 0)
        cyv_st_st_u64_rel(&self.hdr.retire_seq, seq + 2)
        if slot not in self._free:
            self._free.append(slot)
            self._free.sort(reverse=True)

    def add_retired(self, Py_ssize_t idx, uint64_t n):
        """counters[RETIRED][idx] += n (master only): carry totals over from an older store on
        reload. Under the same seqlock as retire."""
        if idx < 0 or idx >= self.n_counters:
            raise IndexError(f"counter {idx} out of range [0, {self.n_counters})")
        cdef uint64_t seq = cyv_st_ld_u64(&self.hdr.retire_seq)
        cyv_st_set_u64(&self.hdr.retire_seq, seq + 1)
        cyv_st_fence_rel()
        cyv_st_add_u64(&(<uint64_t *>self._slot(self.n_slots))[idx], n)
        cyv_st_st_u64_rel(&self.hdr.retire_seq, seq + 2)

    def mark_gauge_used_retired(self, Py_ssize_t idx):
        """Set the retired slot's used bit of gauge idx (master only; carry-over on reload)."""
        if idx < 0 or idx >= self.n_gauges:
            raise IndexError(f"gauge {idx} out of range [0, {self.n_gauges})")
        cyv_st_set_u8(<uint8_t *>(self._slot(self.n_slots) + 8 * self.n_counters
                                  + 8 * self.n_gauges) + idx, 1)

    # ---- reading (any process) -----------------------------------------------------------------

    cdef void _sum_counters(self, uint64_t *out, Py_ssize_t start, Py_ssize_t stop) noexcept nogil:
        """out[i - start] = sum over slots of counters[i], i in [start, stop), consistent with
        concurrent retires (seqlock retry)."""
        cdef uint64_t s1, s2
        cdef Py_ssize_t hw, k, i, n = stop - start
        cdef uint64_t *c
        cdef long tries = 0
        while True:
            tries += 1
            s1 = cyv_st_ld_u64_acq(&self.hdr.retire_seq)
            if s1 & 1 and tries < 10000000:
                continue     # a retire is in progress (the bound: a master killed mid-retire)
            memset(out, 0, 8 * n)
            hw = cyv_st_ld_u32_acq(&self.hdr.high_water)
            if hw > self.n_slots:
                hw = self.n_slots
            for k in range(hw):
                c = <uint64_t *>self._slot(k)
                for i in range(n):
                    out[i] += cyv_st_ld_u64(&c[start + i])
            c = <uint64_t *>self._slot(self.n_slots)
            for i in range(n):
                out[i] += cyv_st_ld_u64(&c[start + i])
            cyv_st_fence_acq()
            s2 = cyv_st_ld_u64(&self.hdr.retire_seq)
            if s1 == s2 or tries >= 10000000:
                return

    def counters(self, start=0, stop=None, raw=False):
        """Totals of counters [start, stop) over every slot and the retired slot, minus the
        baseline (unless raw; never below 0)."""
        cdef Py_ssize_t a = int(start)
        cdef Py_ssize_t b = self.n_counters if stop is None else int(stop)
        if a < 0 or b > self.n_counters or a > b:
            raise IndexError("counter range out of bounds")
        if a == b:
            return []
        cdef uint64_t *out = <uint64_t *>calloc(b - a, 8)
        if out == NULL:
            raise MemoryError()
        try:
            self._sum_counters(out, a, b)
            res = [out[i] for i in range(b - a)]
        finally:
            free(out)
        base = self._baseline
        if base is not None and not raw:
            for i in range(b - a):
                d = base[a + i]
                if d:
                    v = res[i] - d
                    res[i] = v if v > 0 else 0
        return res

    def counter_total(self, Py_ssize_t idx, raw=False):
        """Total of counter idx over all slots (and the retired one), minus the baseline."""
        if idx < 0 or idx >= self.n_counters:
            raise IndexError(f"counter {idx} out of range [0, {self.n_counters})")
        return self.counters(idx, idx + 1, raw)[0]

    def gauges(self):
        """Totals of every gauge over the live slots (the retired slot holds no gauges)."""
        cdef Py_ssize_t hw = min(<Py_ssize_t>cyv_st_ld_u32_acq(&self.hdr.high_water), self.n_slots)
        cdef Py_ssize_t k, i, n = self.n_gauges
        cdef int64_t *g
        if n == 0:
            return []
        cdef int64_t *out = <int64_t *>calloc(n, 8)
        if out == NULL:
            raise MemoryError()
        try:
            for k in range(hw):
                g = <int64_t *>(self._slot(k) + 8 * self.n_counters)
                for i in range(n):
                    out[i] += cyv_st_ld_i64(&g[i])
            res = [out[i] for i in range(n)]
        finally:
            free(out)
        return res

    def gauge_total(self, Py_ssize_t idx):
        """Sum of gauge idx over the live slots."""
        if idx < 0 or idx >= self.n_gauges:
            raise IndexError(f"gauge {idx} out of range [0, {self.n_gauges})")
        cdef Py_ssize_t hw = min(<Py_ssize_t>cyv_st_ld_u32_acq(&self.hdr.high_water), self.n_slots)
        cdef Py_ssize_t k
        cdef int64_t total = 0
        for k in range(hw):
            total += cyv_st_ld_i64(&(<int64_t *>(self._slot(k) + 8 * self.n_counters))[idx])
        return total

    def gauges_used(self):
        """bytes of n_gauges: 1 where any slot (or the retired one) ever set / added to the gauge."""
        cdef Py_ssize_t hw = min(<Py_ssize_t>cyv_st_ld_u32_acq(&self.hdr.high_water), self.n_slots)
        cdef Py_ssize_t k, i, n = self.n_gauges
        cdef uint8_t *u
        out = bytearray(n)
        cdef unsigned char[::1] o
        if n == 0:
            return bytes(out)
        o = out
        for k in list(range(hw)) + [self.n_slots]:
            u = <uint8_t *>(self._slot(k) + 8 * self.n_counters + 8 * self.n_gauges)
            for i in range(n):
                if cyv_st_ld_u8(&u[i]):
                    o[i] = 1
        return bytes(out)

    def gauge_used(self, Py_ssize_t idx):
        if idx < 0 or idx >= self.n_gauges:
            raise IndexError(f"gauge {idx} out of range [0, {self.n_gauges})")
        return self.gauges_used()[idx] == 1

    def slot_counter(self, Py_ssize_t slot, Py_ssize_t idx):
        """One slot's own value of counter idx (slot may be RETIRED)."""
        self._check_slot(slot, True)
        if idx < 0 or idx >= self.n_counters:
            raise IndexError(f"counter {idx} out of range [0, {self.n_counters})")
        return cyv_st_ld_u64(&(<uint64_t *>self._slot(slot))[idx])

    def slot_gauge(self, Py_ssize_t slot, Py_ssize_t idx):
        """One slot's own share of gauge idx."""
        self._check_slot(slot, True)
        if idx < 0 or idx >= self.n_gauges:
            raise IndexError(f"gauge {idx} out of range [0, {self.n_gauges})")
        return cyv_st_ld_i64(&(<int64_t *>(self._slot(slot) + 8 * self.n_counters))[idx])

    # ---- /reset_counters (reader-local) ----------------------------------------------------------

    def reset_baseline(self, start=0, stop=None):
        """Take the current raw totals of counters [start, stop) as this reader's zero: later
        `counters()` / `counter_total()` subtract them. Nothing in shared memory is written, so
        other readers (and the writers) are unaffected. Counters outside the range keep their
        previous baseline (none at first)."""
        cdef Py_ssize_t a = int(start)
        cdef Py_ssize_t b = self.n_counters if stop is None else int(stop)
        raw = self.counters(a, b, raw=True)
        if self._baseline is None:
            self._baseline = [0] * self.n_counters
        self._baseline[a:b] = raw

    def clear_baseline(self):
        self._baseline = None

    @property
    def baseline(self):
        """A copy of the baseline (list of n_counters ints), or None before any reset."""
        return None if self._baseline is None else list(self._baseline)

    # ---- benchmark ---------------------------------------------------------------------------------

    def bench_inc(self, Py_ssize_t slot, Py_ssize_t n, Py_ssize_t n_idx=8):
        """ns spent in n rounds of n_idx inline `inc` calls from C (the hot path's pattern: a few
        different counters per request); returns total ns. For bench/micro_stats.py."""
        import time
        cdef SlotStats s = self.view(slot)
        cdef Py_ssize_t r, j, m = min(n_idx, self.n_counters)
        if m <= 0:
            return 0
        t0 = time.perf_counter_ns()
        with nogil:
            for r in range(n):
                for j in range(m):
                    s.inc(j)
        return time.perf_counter_ns() - t0

    def bench_record_time(self, Py_ssize_t slot, Py_ssize_t hist, Py_ssize_t n):
        """ns spent in n inline record_time calls (values spread over the first buckets)."""
        import time
        cdef SlotStats s = self.view(slot)
        cdef Py_ssize_t r
        if hist < 0 or hist + CYV_ST_HIST_WIDTH > self.n_counters:
            raise IndexError("histogram block out of range")
        t0 = time.perf_counter_ns()
        with nogil:
            for r in range(n):
                record_time(s, hist, <double>(r & 31) * 0.125)
        return time.perf_counter_ns() - t0


cdef class SlotStats:
    """The writer for one slot (see stats.pxd for the inline C methods). Get it from
    StatsStore.view(slot)."""

    def __init__(self):
        raise TypeError("use StatsStore.view(slot)")

    def __repr__(self):
        return f"<SlotStats slot={self.slot} counters={self.n_counters} gauges={self.n_gauges}>"

    def counter(self, Py_ssize_t idx):
        """This slot's own value of counter idx."""
        if idx < 0 or idx >= self.n_counters:
            raise IndexError(f"counter {idx} out of range [0, {self.n_counters})")
        return cyv_st_ld_u64(&self.counters[idx])

    def gauge(self, Py_ssize_t idx):
        """This slot's own share of gauge idx."""
        if idx < 0 or idx >= self.n_gauges:
            raise IndexError(f"gauge {idx} out of range [0, {self.n_gauges})")
        return cyv_st_ld_i64(&self.gauges[idx])


class SlotStatsPy(SlotStats):
    """What StatsStore.view returns: a SlotStats with Python-visible writers (bounds-checked).
    Cython code should type the object as SlotStats and use the inline methods instead."""
    __slots__ = ()

    def inc(self, Py_ssize_t idx, uint64_t n=1):
        cdef SlotStats s = <SlotStats>self
        if idx < 0 or idx >= s.n_counters:
            raise IndexError(f"counter {idx} out of range [0, {s.n_counters})")
        s.inc(idx, n)

    def add(self, Py_ssize_t idx, uint64_t n):
        cdef SlotStats s = <SlotStats>self
        if idx < 0 or idx >= s.n_counters:
            raise IndexError(f"counter {idx} out of range [0, {s.n_counters})")
        s.add(idx, n)

    def gauge_add(self, Py_ssize_t idx, int64_t delta):
        cdef SlotStats s = <SlotStats>self
        if idx < 0 or idx >= s.n_gauges:
            raise IndexError(f"gauge {idx} out of range [0, {s.n_gauges})")
        s.gauge_add(idx, delta)

    def gauge_set(self, Py_ssize_t idx, int64_t value):
        cdef SlotStats s = <SlotStats>self
        if idx < 0 or idx >= s.n_gauges:
            raise IndexError(f"gauge {idx} out of range [0, {s.n_gauges})")
        s.gauge_set(idx, value)

    def record_time(self, Py_ssize_t hist, double ms):
        """One sample (ms) into the histogram block starting at counter index hist."""
        cdef SlotStats s = <SlotStats>self
        if hist < 0 or hist + CYV_ST_HIST_WIDTH > s.n_counters:
            raise IndexError(f"histogram block at {hist} out of range")
        record_time(s, hist, ms)
