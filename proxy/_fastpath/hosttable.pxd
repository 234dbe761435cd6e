# The shared-memory host table (docs/host-table.md is the contract): C layout, atomics and the
# `cdef inline` accessors the load balancers use on the per-pick path. Everything Python-facing
# (and the documentation of each method) is in hosttable.pyx.
#
# Byte offsets (all fields naturally aligned; checked by _Static_assert below and by
# tests/test_hosttable.py):
#   header  (64 B): 0 magic u64 | 8 version u32 | 12 n_hosts u32 | 16 n_clusters u32 | 20 pad u32
#                   24 health_generation u64 | 32 checker_heartbeat_ns u64 | 40..63 pad
#   cluster (64 B): 0 rr_cursor u64 | 8 first_host u32 | 12 n_slots u32
#                   16 membership_generation u64 | 24 lb_healthy_panic u64
#                   32 cb_requests i64 | 40 cb_connections i64 | 48 cb_pending i64 | 56 cb_retries i64
#   host   (128 B): line 0 (master / health process write, workers read)
#                   0 flags u32 | 4 weight u32 | 8 priority u32 | 12 cluster_index u32
#                   16 port u16 | 18 family u8 | 19 pad u8 | 20 ip[16] | 36 pad u32
#                   40 healthy_since_ns u64 | 48 ejected_until_ns u64 | 56 ejection_count u32 | 60 pad
#                   line 1 (workers write with atomics)
#                   64 active i64 | 72 ewma_bits u64 (double ns) | 80 ewma_stamp_ns u64
#                   88 rq_total u64 | 96 rq_error u64 | 104 consecutive_5xx u32
#                   108 consecutive_gateway_failure u32 | 112 consecutive_local_origin_failure u32
#                   116 rq_success_interval u32 | 120 cb_connections i64
# The file region is header, then clusters[n_clusters], then hosts[n_hosts].

from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t, int64_t

cdef extern from *:
    """
    #include <stdint.h>
    #include <stddef.h>
    #include <string.h>
    #include <time.h>

    typedef struct {
        uint64_t magic;
        uint32_t version;
        uint32_t n_hosts;
        uint32_t n_clusters;
        uint32_t pad0;
        uint64_t health_generation;
        uint64_t checker_heartbeat_ns;
        uint8_t  pad1[24];
    } cyv_ht_header;

    typedef struct {
        uint64_t rr_cursor;
        uint32_t first_host;
        uint32_t n_slots;
        uint64_t membership_generation;
        uint64_t lb_healthy_panic;
        /* circuit breakers: what the whole proxy has open to this cluster (all workers) */
        int64_t  cb_requests;
        int64_t  cb_connections;
        int64_t  cb_pending;
        int64_t  cb_retries;
    } cyv_ht_cluster;

    typedef struct {
        /* line 0 */
        uint32_t flags;
        uint32_t weight;
        uint32_t priority;
        uint32_t cluster_index;
        uint16_t port;
        uint8_t  family;
        uint8_t  pad0;
        uint8_t  ip[16];
        uint32_t pad1;
        uint64_t healthy_since_ns;
        uint64_t ejected_until_ns;
        uint32_t ejection_count;
        uint32_t pad2;
        /* line 1 */
        int64_t  active;
        uint64_t ewma_bits;
        uint64_t ewma_stamp_ns;
        uint64_t rq_total;
        uint64_t rq_error;
        uint32_t consecutive_5xx;
        uint32_t consecutive_gateway_failure;
        uint32_t consecutive_local_origin_failure;
        uint32_t rq_success_interval;
        /* connections open to this host across all workers (per_host_thresholds) */
        int64_t  cb_connections;
    } cyv_ht_host;

    _Static_assert(sizeof(cyv_ht_header) == 64, "host table header is 64 bytes");
    _Static_assert(sizeof(cyv_ht_cluster) == 64, "host table cluster record is 64 bytes");
    _Static_assert(sizeof(cyv_ht_host) == 128, "host table host record is 128 bytes");
    _Static_assert(offsetof(cyv_ht_host, active) == 64, "host line 1 starts at 64");
    _Static_assert(offsetof(cyv_ht_host, healthy_since_ns) == 40, "healthy_since_ns at 40");

    /* Atomics: acquire loads / release stores for published state, relaxed counters,
       acq_rel for `active` (docs/host-table.md). */
    static inline uint8_t cyv_ld8(const uint8_t *p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }
    static inline void cyv_st8(uint8_t *p, uint8_t v) { __atomic_store_n(p, v, __ATOMIC_RELEASE); }
    static inline uint32_t cyv_ld32(const uint32_t *p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }
    static inline uint64_t cyv_ld64(const uint64_t *p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }
    static inline int64_t  cyv_ldi64(const int64_t *p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }
    static inline void cyv_st32(uint32_t *p, uint32_t v) { __atomic_store_n(p, v, __ATOMIC_RELEASE); }
    static inline void cyv_st64(uint64_t *p, uint64_t v) { __atomic_store_n(p, v, __ATOMIC_RELEASE); }
    static inline uint32_t cyv_or32(uint32_t *p, uint32_t v) { return __atomic_or_fetch(p, v, __ATOMIC_ACQ_REL); }
    static inline uint32_t cyv_and32(uint32_t *p, uint32_t v) { return __atomic_and_fetch(p, v, __ATOMIC_ACQ_REL); }
    static inline uint32_t cyv_add32(uint32_t *p, uint32_t v) { return __atomic_fetch_add(p, v, __ATOMIC_RELAXED); }
    static inline uint64_t cyv_add64(uint64_t *p, uint64_t v) { return __atomic_fetch_add(p, v, __ATOMIC_RELAXED); }
    static inline uint64_t cyv_add64_ar(uint64_t *p, uint64_t v) { return __atomic_fetch_add(p, v, __ATOMIC_ACQ_REL); }
    static inline int64_t  cyv_addi64(int64_t *p, int64_t v) { return __atomic_fetch_add(p, v, __ATOMIC_ACQ_REL); }
    static inline int cyv_cas64(uint64_t *p, uint64_t *expected, uint64_t desired) {
        return __atomic_compare_exchange_n(p, expected, desired, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE);
    }
    static inline double cyv_bits_to_double(uint64_t b) { double d; memcpy(&d, &b, 8); return d; }
    static inline uint64_t cyv_double_to_bits(double d) { uint64_t b; memcpy(&b, &d, 8); return b; }
    static inline uint64_t cyv_monotonic_ns(void) {
        struct timespec ts; clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
    }
    #define CYV_HT_MAGIC 0x315448594F565943ull  /* bytes 'CYVOYHT1' little-endian */
    #define CYV_HT_VERSION 1
    """
    ctypedef struct cyv_ht_header:
        uint64_t magic
        uint32_t version
        uint32_t n_hosts
        uint32_t n_clusters
        uint64_t health_generation
        uint64_t checker_heartbeat_ns

    ctypedef struct cyv_ht_cluster:
        uint64_t rr_cursor
        uint32_t first_host
        uint32_t n_slots
        uint64_t membership_generation
        uint64_t lb_healthy_panic
        int64_t cb_requests
        int64_t cb_connections
        int64_t cb_pending
        int64_t cb_retries

    ctypedef struct cyv_ht_host:
        uint32_t flags
        uint32_t weight
        uint32_t priority
        uint32_t cluster_index
        uint16_t port
        uint8_t family
        uint8_t ip[16]
        uint64_t healthy_since_ns
        uint64_t ejected_until_ns
        uint32_t ejection_count
        int64_t active
        uint64_t ewma_bits
        uint64_t ewma_stamp_ns
        uint64_t rq_total
        uint64_t rq_error
        uint32_t consecutive_5xx
        uint32_t consecutive_gateway_failure
        uint32_t consecutive_local_origin_failure
        uint32_t rq_success_interval
        int64_t cb_connections

    uint8_t cyv_ld8(const uint8_t *p) nogil
    void cyv_st8(uint8_t *p, uint8_t v) nogil
    uint32_t cyv_ld32(const uint32_t *p) nogil
    uint64_t cyv_ld64(const uint64_t *p) nogil
    int64_t cyv_ldi64(const int64_t *p) nogil
    void cyv_st32(uint32_t *p, uint32_t v) nogil
    void cyv_st64(uint64_t *p, uint64_t v) nogil
    uint32_t cyv_or32(uint32_t *p, uint32_t v) nogil
    uint32_t cyv_and32(uint32_t *p, uint32_t v) nogil
    uint32_t cyv_add32(uint32_t *p, uint32_t v) nogil
    uint64_t cyv_add64(uint64_t *p, uint64_t v) nogil
    uint64_t cyv_add64_ar(uint64_t *p, uint64_t v) nogil
    int64_t cyv_addi64(int64_t *p, int64_t v) nogil
    bint cyv_cas64(uint64_t *p, uint64_t *expected, uint64_t desired) nogil
    double cyv_bits_to_double(uint64_t b) nogil
    uint64_t cyv_double_to_bits(double d) nogil
    uint64_t cyv_monotonic_ns() nogil
    uint64_t CYV_HT_MAGIC
    uint32_t CYV_HT_VERSION

# Health flags (C names; the Python module constants drop the HT_ prefix).
cdef enum:
    HT_FAILED_ACTIVE_HC = 0x01
    HT_FAILED_OUTLIER = 0x02
    HT_PENDING_ACTIVE_HC = 0x04
    HT_DEGRADED_ACTIVE_HC = 0x08
    HT_DRAINING = 0x10
    HT_DNS_REMOVED = 0x20
    HT_UNUSABLE_MASK = 0x01 | 0x02 | 0x04 | 0x10 | 0x20
    HT_HEADER_SIZE = 64
    HT_CLUSTER_SIZE = 64
    HT_HOST_SIZE = 128


cdef class HostTable:
    cdef object _mm              # the mmap (or attached buffer) that owns the memory
    cdef unsigned char[::1] _view  # buffer export that keeps the base pointer valid
    cdef unsigned char *base
    cdef cyv_ht_header *hdr
    cdef cyv_ht_cluster *clusters
    cdef cyv_ht_host *hosts
    cdef readonly uint32_t n_hosts
    cdef readonly uint32_t n_clusters

    cdef int _bind(self, object buf) except -1
    cdef cyv_ht_host *_host(self, long i) except NULL
    cdef cyv_ht_cluster *_cluster(self, long c) except NULL
    cdef void _bump_generation(self) noexcept
    cpdef uint32_t flags(self, long i) except? 0xffffffff
    cpdef uint64_t health_generation(self)
    cpdef long long active(self, long i) except? -1
    cpdef long long inc_active(self, long i) except? -1
    cpdef long long dec_active(self, long i) except? -1
    cpdef uint64_t rr_next(self, long c) except? 0xffffffffffffffff
    cpdef int record(self, long i, int status, bint local_origin_failure, long long latency_ns,
                     long long now_ns, double decay_ns) except -1


# ---- per-pick accessors (no bounds checks: callers hold valid slot indices) ------------------

cdef inline bint ht_usable(uint32_t flags) noexcept nogil:
    return (flags & HT_UNUSABLE_MASK) == 0

cdef inline cyv_ht_host *ht_host(HostTable t, uint32_t i) noexcept:
    return &t.hosts[i]

cdef inline uint32_t ht_host_flags(cyv_ht_host *h) noexcept nogil:
    return cyv_ld32(&h.flags)

cdef inline int64_t ht_host_active(cyv_ht_host *h) noexcept nogil:
    return cyv_ldi64(&h.active)

cdef inline double ht_host_ewma_ns(cyv_ht_host *h) noexcept nogil:
    return cyv_bits_to_double(cyv_ld64(&h.ewma_bits))

cdef inline uint64_t ht_host_healthy_since(cyv_ht_host *h) noexcept nogil:
    return cyv_ld64(&h.healthy_since_ns)

cdef inline uint64_t ht_generation(cyv_ht_header *hdr) noexcept nogil:
    return cyv_ld64(&hdr.health_generation)

cdef inline uint64_t ht_cluster_rr_next(cyv_ht_cluster *c) noexcept nogil:
    return cyv_add64(&c.rr_cursor, 1)

cdef inline void ht_cluster_count_panic(cyv_ht_cluster *c) noexcept nogil:
    cyv_add64(&c.lb_healthy_panic, 1)


# Circuit breakers (Envoy's CircuitBreakers.Thresholds, counted across every worker): take one
# unit of a resource if fewer than `limit` are in use; give it back with ht_cb_release.
cdef inline bint ht_cb_acquire(int64_t *counter, int64_t limit) noexcept nogil:
    if cyv_addi64(counter, 1) >= limit:
        cyv_addi64(counter, -1)
        return False
    return True

cdef inline void ht_cb_release(int64_t *counter) noexcept nogil:
    cyv_addi64(counter, -1)
