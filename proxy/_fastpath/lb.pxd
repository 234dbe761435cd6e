# Load balancers over the shared host table: declarations so that other Cython modules can
# `cimport` LB and call `pick` at C speed. Documentation: lb.pyx.

from libc.stdint cimport uint32_t, uint64_t, int64_t
from proxy._fastpath.hosttable cimport HostTable, cyv_ht_header, cyv_ht_cluster, cyv_ht_host

cdef enum:
    LB_MAX_PRIORITIES = 129      # Envoy: priority <= 128
    SRC_HEALTHY = 0
    SRC_DEGRADED = 1
    SRC_ALL = 2                  # panic: every member host of the priority


cdef class _Source:
    """The hosts of one (priority, source) and the structures a policy builds over them."""
    cdef uint32_t n
    cdef uint32_t *slots          # host slot indices
    cdef uint32_t *iw             # configured load_balancing_weight
    cdef double *ew               # effective weight (slow start applied)
    cdef bint weighted            # weights differ, or a host is in slow start
    cdef bint built               # policy structure below built (lazily, on first use)
    # ROUND_ROBIN (weighted): one cycle of the smooth weighted sequence, indices into slots
    cdef uint32_t *seq
    cdef uint64_t seq_len
    # RANDOM (weighted): cumulative effective weights
    cdef double *cum
    cdef double total
    # LEAST_REQUEST (weighted): EDF scheduler, per process
    cdef double *dl
    cdef uint64_t *dord
    cdef uint32_t *heap
    cdef double edf_now
    cdef uint64_t edf_seq
    # RING_HASH: sorted hashes and the index (into slots) owning each
    cdef uint64_t *rh
    cdef uint32_t *rs
    cdef uint64_t rn
    # MAGLEV: lookup table of indices into slots
    cdef uint32_t *mt
    cdef uint64_t msize
    # every member host of the priority (the SRC_ALL source; None for that source itself)
    cdef _Source members

    cdef int _alloc(self, uint32_t n) except -1


cdef class LB:
    cdef readonly HostTable table
    cdef cyv_ht_header *hdr
    cdef cyv_ht_cluster *cl
    cdef cyv_ht_host *hosts
    cdef readonly int cluster_index
    cdef readonly str policy
    cdef uint64_t gen
    cdef uint64_t mgen
    cdef bint derive_slots
    cdef list prio_slots
    cdef list srcs
    cdef int n_prio
    cdef uint32_t hload[LB_MAX_PRIORITIES]
    cdef uint32_t dload[LB_MAX_PRIORITIES]
    cdef bint panic[LB_MAX_PRIORITIES]
    cdef int single                 # source index when one source takes 100% and no panic, else -1
    cdef readonly uint32_t overprovisioning_factor
    cdef readonly uint32_t panic_threshold
    cdef bint fail_on_panic
    cdef bint ignore_new_hosts
    cdef bint hash_based
    cdef uint32_t choice_count
    # slow start
    cdef bint ss_enabled
    cdef uint64_t ss_window_ns
    cdef double ss_aggression
    cdef double ss_min_weight
    cdef bint ss_active
    cdef uint64_t ss_deadline
    cdef object clock
    cdef readonly uint64_t refreshes
    cdef readonly double decay_ns   # latency EWMA decay for HostTable.record (LRT decay_time; 10 s)

    cpdef int pick(self, uint64_t hash_key=*, bint has_hash=*) except -2
    cdef int _pick_src(self, _Source s, uint64_t hash_key, bint has_hash) except -2
    cdef int _build_src(self, _Source s) except -1
    cdef int _refresh(self, uint64_t g) except -1
    cdef uint64_t _now(self) except? 0
