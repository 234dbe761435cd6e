# Envoy-style stats in shared memory (proxy/stats/README.md is the contract): the C layout, the atomics and
# the `cdef inline` writers the hot path cimports. Everything Python-facing (and the documentation
# of each method) is in stats.pyx.
#
# One anonymous MAP_SHARED mmap created by the master before fork:
#   header (64 B): 0 magic u64 'CYVOYST1' | 8 version u32 | 12 n_slots u32 | 16 n_counters u32
#                  20 n_gauges u32 | 24 slot_stride u64 (bytes) | 32 high_water u32 | 36 pad u32
#                  40 retire_seq u64 (seqlock: odd while the master folds a slot into "retired")
#                  48..63 pad
#   slots[n_slots + 1], each slot_stride bytes (a multiple of 64; the last one is "retired"):
#                  counters u64[n_counters] | gauges i64[n_gauges] | gauge_used u8[n_gauges] | pad
#
# Each process writes only its own slot (single writer), so a write is a relaxed load + relaxed
# store (no lock prefix: a plain `add` on x86-64, yet free of C data races); readers in other
# processes use relaxed loads and sum over slots.
#
# Histograms live in the counter array: a block of CYV_ST_HIST_WIDTH counters starting at the
# histogram's index: CYV_ST_NBUCKETS bucket counts (bucket b holds values in
# (bounds[b-1], bounds[b]], the last one values above the last bound), then the sum in
# microseconds, then the count.

from libc.stdint cimport uint8_t, uint32_t, uint64_t, int64_t

cdef extern from *:
    """
    #include <stdint.h>
    #include <stddef.h>

    typedef struct {
        uint64_t magic;
        uint32_t version;
        uint32_t n_slots;
        uint32_t n_counters;
        uint32_t n_gauges;
        uint64_t slot_stride;
        uint32_t high_water;
        uint32_t pad0;
        uint64_t retire_seq;
        uint8_t  pad1[16];
    } cyv_st_header;
    _Static_assert(sizeof(cyv_st_header) == 64, "stats header is 64 bytes");

    /* Single-writer updates: relaxed load + relaxed store (no RMW; the slot has one writer). */
    static inline void cyv_st_add_u64(uint64_t *p, uint64_t n) {
        __atomic_store_n(p, __atomic_load_n(p, __ATOMIC_RELAXED) + n, __ATOMIC_RELAXED);
    }
    static inline void cyv_st_add_i64(int64_t *p, int64_t n) {
        __atomic_store_n(p, __atomic_load_n(p, __ATOMIC_RELAXED) + n, __ATOMIC_RELAXED);
    }
    static inline void cyv_st_set_i64(int64_t *p, int64_t v) { __atomic_store_n(p, v, __ATOMIC_RELAXED); }
    static inline void cyv_st_set_u64(uint64_t *p, uint64_t v) { __atomic_store_n(p, v, __ATOMIC_RELAXED); }
    static inline void cyv_st_set_u8(uint8_t *p, uint8_t v) { __atomic_store_n(p, v, __ATOMIC_RELAXED); }
    /* Readers (other processes). */
    static inline uint64_t cyv_st_ld_u64(const uint64_t *p) { return __atomic_load_n(p, __ATOMIC_RELAXED); }
    static inline int64_t cyv_st_ld_i64(const int64_t *p) { return __atomic_load_n(p, __ATOMIC_RELAXED); }
    static inline uint8_t cyv_st_ld_u8(const uint8_t *p) { return __atomic_load_n(p, __ATOMIC_RELAXED); }
    static inline uint32_t cyv_st_ld_u32_acq(const uint32_t *p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }
    static inline uint64_t cyv_st_ld_u64_acq(const uint64_t *p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }
    static inline void cyv_st_st_u64_rel(uint64_t *p, uint64_t v) { __atomic_store_n(p, v, __ATOMIC_RELEASE); }
    static inline void cyv_st_fence_acq(void) { __atomic_thread_fence(__ATOMIC_ACQUIRE); }
    static inline void cyv_st_fence_rel(void) { __atomic_thread_fence(__ATOMIC_RELEASE); }
    static inline int cyv_st_cas_u32(uint32_t *p, uint32_t *expected, uint32_t desired) {
        return __atomic_compare_exchange_n(p, expected, desired, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE);
    }

    /* Envoy's default histogram bucket bounds (milliseconds). */
    #define CYV_ST_NBOUNDS 19
    #define CYV_ST_NBUCKETS 20
    #define CYV_ST_HIST_SUM 20
    #define CYV_ST_HIST_COUNT 21
    #define CYV_ST_HIST_WIDTH 22
    static const double cyv_st_bounds[CYV_ST_NBOUNDS] = {
        0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000,
        300000, 600000, 1800000, 3600000};

    #define CYV_ST_MAGIC 0x315453594F565943ull  /* bytes 'CYVOYST1' little-endian */
    #define CYV_ST_VERSION 1
    """
    ctypedef struct cyv_st_header:
        uint64_t magic
        uint32_t version
        uint32_t n_slots
        uint32_t n_counters
        uint32_t n_gauges
        uint64_t slot_stride
        uint32_t high_water
        uint64_t retire_seq

    void cyv_st_add_u64(uint64_t *p, uint64_t n) nogil
    void cyv_st_add_i64(int64_t *p, int64_t n) nogil
    void cyv_st_set_i64(int64_t *p, int64_t v) nogil
    void cyv_st_set_u64(uint64_t *p, uint64_t v) nogil
    void cyv_st_set_u8(uint8_t *p, uint8_t v) nogil
    uint64_t cyv_st_ld_u64(const uint64_t *p) nogil
    int64_t cyv_st_ld_i64(const int64_t *p) nogil
    uint8_t cyv_st_ld_u8(const uint8_t *p) nogil
    uint32_t cyv_st_ld_u32_acq(const uint32_t *p) nogil
    uint64_t cyv_st_ld_u64_acq(const uint64_t *p) nogil
    void cyv_st_st_u64_rel(uint64_t *p, uint64_t v) nogil
    void cyv_st_fence_acq() nogil
    void cyv_st_fence_rel() nogil
    bint cyv_st_cas_u32(uint32_t *p, uint32_t *expected, uint32_t desired) nogil

    const double cyv_st_bounds[]
    enum:
        CYV_ST_NBOUNDS
        CYV_ST_NBUCKETS
        CYV_ST_HIST_SUM
        CYV_ST_HIST_COUNT
        CYV_ST_HIST_WIDTH
    uint64_t CYV_ST_MAGIC
    uint32_t CYV_ST_VERSION


cdef class StatsStore:
    cdef object _mm                  # the mmap that owns the memory
    cdef unsigned char[::1] _view    # buffer export keeping the base pointer valid
    cdef unsigned char *base
    cdef cyv_st_header *hdr
    cdef readonly Py_ssize_t n_slots
    cdef readonly Py_ssize_t n_counters
    cdef readonly Py_ssize_t n_gauges
    cdef readonly Py_ssize_t slot_stride
    cdef object _baseline            # process-local: list of ints (or None), see reset_baseline
    cdef list _free                  # master-local slot allocator (alloc_slot / retire)

    cdef unsigned char *_slot(self, Py_ssize_t slot) noexcept nogil
    cdef int _check_slot(self, Py_ssize_t slot, bint allow_retired) except -1
    cdef int _mark_high_water(self, Py_ssize_t slot) except -1
    cdef void _sum_counters(self, uint64_t *out, Py_ssize_t start, Py_ssize_t stop) noexcept nogil


cdef class SlotStats:
    """One process's slot: the writer side. Hot-path code holds a typed `SlotStats` and calls the
    inline methods below (no bounds checks: indexes come from the StatRegistry)."""
    cdef uint64_t *counters
    cdef int64_t *gauges
    cdef uint8_t *gauge_used
    cdef readonly Py_ssize_t slot
    cdef readonly Py_ssize_t n_counters
    cdef readonly Py_ssize_t n_gauges
    cdef readonly StatsStore store   # keeps the mapping alive

    cdef inline void inc(self, Py_ssize_t idx, uint64_t n=1) noexcept nogil:
        """counters[idx] += n"""
        cyv_st_add_u64(&self.counters[idx], n)

    cdef inline void add(self, Py_ssize_t idx, uint64_t n) noexcept nogil:
        """counters[idx] += n (inc without the optional argument)"""
        cyv_st_add_u64(&self.counters[idx], n)

    cdef inline void gauge_add(self, Py_ssize_t idx, int64_t delta) noexcept nogil:
        """gauges[idx] += delta (this process's share; readers sum the shares)"""
        cyv_st_add_i64(&self.gauges[idx], delta)
        if self.gauge_used[idx] == 0:
            cyv_st_set_u8(&self.gauge_used[idx], 1)

    cdef inline void gauge_set(self, Py_ssize_t idx, int64_t value) noexcept nogil:
        """gauges[idx] = value (this process's share)"""
        cyv_st_set_i64(&self.gauges[idx], value)
        if self.gauge_used[idx] == 0:
            cyv_st_set_u8(&self.gauge_used[idx], 1)


cdef inline Py_ssize_t hist_bucket(double ms) noexcept nogil:
    """Bucket of a value: the first b with ms <= bounds[b], CYV_ST_NBOUNDS above the last bound.
    Linear from the bottom: proxy latencies sit in the first buckets."""
    cdef Py_ssize_t b = 0
    while b < CYV_ST_NBOUNDS and ms > cyv_st_bounds[b]:
        b += 1
    return b


cdef inline void record_time(SlotStats s, Py_ssize_t hist, double ms) noexcept nogil:
    """One sample (milliseconds, fractional) into the histogram whose block starts at counter
    index `hist`: its bucket, the sum (in microseconds) and the count."""
    if ms < 0.0 or ms != ms:
        ms = 0.0
    cyv_st_add_u64(&s.counters[hist + hist_bucket(ms)], 1)
    cyv_st_add_u64(&s.counters[hist + CYV_ST_HIST_SUM], <uint64_t>(ms * 1000.0 + 0.5))
    cyv_st_add_u64(&s.counters[hist + CYV_ST_HIST_COUNT], 1)
