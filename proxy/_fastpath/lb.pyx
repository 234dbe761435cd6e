# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Endpoint selection (Envoy's `lb_policy` / `load_balancing_policy`) over the shared host table.

One LB object per (worker, cluster), built by `make_lb(table, cluster_index, cluster_cfg,
slots_by_priority)`. `pick(hash_key, has_hash)` returns a host slot index of the HostTable
(docs/host-table.md) or -1 when no host may be used.

Common to every policy (Envoy: source/extensions/load_balancing_policies/common/
load_balancer_impl.cc, LoadBalancerBase::recalculatePerPriorityState / distributeLoad /
recalculatePerPriorityPanic / recalculateLoadInTotalPanic / choosePriority / isHostSetInPanic):

* Per priority P the member hosts (slot in use, not DNS_REMOVED) are split into healthy (usable,
  not DEGRADED_ACTIVE_HC) and degraded (usable and DEGRADED_ACTIVE_HC); with
  common_lb_config.ignore_new_hosts_until_first_hc, PENDING_ACTIVE_HC hosts are excluded from the
  counts. health(P) = min(100, OPF * healthy / count), degraded(P) likewise, OPF = 140;
  NTA = min(100, sum of both); healthy loads are handed out first in priority order, then
  degraded loads from what remains, rounding leftovers to the first priority with healthy
  (else degraded) availability. Panic: NTA < 100 and 100*(healthy+degraded)/count < threshold
  (healthy_panic_threshold, default 50; 0 disables). All priorities in panic: loads by host counts.
  A pick draws h (the request hash for RING_HASH/MAGLEV, else a random number) and takes the
  first priority whose cumulative healthy load reaches h % 100 + 1, else degraded. In panic the
  source is every member host of the priority and `lb_healthy_panic` of the cluster record counts
  the pick (zone_aware_lb_config.fail_traffic_on_panic: no host instead).
* All this is recomputed only when the table's health_generation changed since the last pick (one
  atomic load per pick). The health process bumps it on any flag change and the master / DNS on
  membership changes, so a host that fails is out of the next pick of every worker.
  (While a host is in slow start the weights are also recomputed every window/32, min 10 ms.)
* Policy structures (weighted sequences, rings, Maglev tables, EDF heaps) are built lazily per
  (priority, source) on the first pick that needs them after a recompute.

Random numbers: one xoshiro256** state per process, seeded from os.urandom at import and again
in every forked child (os.register_at_fork); `reseed()` does it by hand.
"""
import os as _os

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE
from libc.math cimport pow, ceil, llround
from libc.stdint cimport uint8_t, uint32_t, uint64_t, int64_t
from libc.stdlib cimport malloc, calloc, free, qsort
from libc.string cimport memcpy, memset

from proxy._fastpath.hosttable cimport (
    HostTable, cyv_ht_host, cyv_ht_cluster, cyv_ht_header,
    cyv_ld8, cyv_ld32, cyv_ld64, cyv_monotonic_ns,
    ht_usable, ht_host_flags, ht_host_active, ht_host_ewma_ns, ht_generation,
    ht_cluster_rr_next, ht_cluster_count_panic,
    HT_DEGRADED_ACTIVE_HC, HT_PENDING_ACTIVE_HC, HT_DNS_REMOVED, HT_UNUSABLE_MASK,
)

cdef extern from *:
    """
    #include <stdint.h>
    #include <string.h>

    static inline uint64_t cyv_rotl64(uint64_t x, int r) { return (x << r) | (x >> (64 - r)); }
    /* little-endian loads (x86-64, arm64) */
    static inline uint64_t cyv_rd64(const unsigned char *p) { uint64_t v; memcpy(&v, p, 8); return v; }
    static inline uint32_t cyv_rd32(const unsigned char *p) { uint32_t v; memcpy(&v, p, 4); return v; }

    /* xxHash64, written from the published algorithm description (five 64-bit primes, four
       accumulator lanes over 32-byte stripes, then 8/4/1-byte tail steps and an avalanche). */
    #define CYV_XP1 0x9E3779B185EBCA87ULL
    #define CYV_XP2 0xC2B2AE3D27D4EB4FULL
    #define CYV_XP3 0x165667B19E3779F9ULL
    #define CYV_XP4 0x85EBCA77C2B2AE63ULL
    #define CYV_XP5 0x27D4EB2F165667C5ULL
    static inline uint64_t cyv_xx_round(uint64_t acc, uint64_t lane) {
        acc += lane * CYV_XP2;
        return cyv_rotl64(acc, 31) * CYV_XP1;
    }
    static inline uint64_t cyv_xx_merge(uint64_t h, uint64_t lane_acc) {
        h ^= cyv_xx_round(0, lane_acc);
        return h * CYV_XP1 + CYV_XP4;
    }
    static uint64_t cyv_xxh64(const void *data, size_t len, uint64_t seed) {
        const unsigned char *p = (const unsigned char *)data;
        const unsigned char *end = p + len;
        uint64_t h;
        if (len >= 32) {
            uint64_t a = seed + CYV_XP1 + CYV_XP2, b = seed + CYV_XP2, c = seed, d = seed - CYV_XP1;
            const unsigned char *last_stripe = end - 32;
            while (p <= last_stripe) {
                a = cyv_xx_round(a, cyv_rd64(p));
                b = cyv_xx_round(b, cyv_rd64(p + 8));
                c = cyv_xx_round(c, cyv_rd64(p + 16));
                d = cyv_xx_round(d, cyv_rd64(p + 24));
                p += 32;
            }
            h = cyv_rotl64(a, 1) + cyv_rotl64(b, 7) + cyv_rotl64(c, 12) + cyv_rotl64(d, 18);
            h = cyv_xx_merge(h, a);
            h = cyv_xx_merge(h, b);
            h = cyv_xx_merge(h, c);
            h = cyv_xx_merge(h, d);
        } else {
            h = seed + CYV_XP5;
        }
        h += (uint64_t)len;
        while (end - p >= 8) {
            h ^= cyv_xx_round(0, cyv_rd64(p));
            h = cyv_rotl64(h, 27) * CYV_XP1 + CYV_XP4;
            p += 8;
        }
        if (end - p >= 4) {
            h ^= (uint64_t)cyv_rd32(p) * CYV_XP1;
            h = cyv_rotl64(h, 23) * CYV_XP2 + CYV_XP3;
            p += 4;
        }
        while (p < end) {
            h ^= (uint64_t)(*p) * CYV_XP5;
            h = cyv_rotl64(h, 11) * CYV_XP1;
            p++;
        }
        h ^= h >> 33; h *= CYV_XP2;
        h ^= h >> 29; h *= CYV_XP3;
        h ^= h >> 32;
        return h;
    }

    /* Envoy's MURMUR_HASH_2 (source/common/common/hash.cc, MurmurHash::murmurHash2 with
       STD_HASH_SEED 0xc70f6907): the 64-bit MurmurHash2 variant that libstdc++ uses for
       std::hash<std::string>: 8-byte blocks, a little-endian tail, two final shift-mixes. */
    #define CYV_MM_MUL 0xc6a4a7935bd1e995ULL
    static inline uint64_t cyv_shift_mix(uint64_t v) { return v ^ (v >> 47); }
    static uint64_t cyv_murmur2_64(const void *data, size_t len, uint64_t seed) {
        const unsigned char *p = (const unsigned char *)data;
        size_t blocks = len & ~(size_t)7, i, rem = len & 7;
        uint64_t h = seed ^ ((uint64_t)len * CYV_MM_MUL);
        for (i = 0; i < blocks; i += 8) {
            h ^= cyv_shift_mix(cyv_rd64(p + i) * CYV_MM_MUL) * CYV_MM_MUL;
            h *= CYV_MM_MUL;
        }
        if (rem) {
            uint64_t t = 0;
            for (i = rem; i > 0; i--) t = (t << 8) | p[blocks + i - 1];
            h ^= t;
            h *= CYV_MM_MUL;
        }
        h = cyv_shift_mix(h) * CYV_MM_MUL;
        return cyv_shift_mix(h);
    }

    /* xoshiro256** (Blackman & Vigna), one state per process. */
    static uint64_t cyv_rng_s[4] = {1, 2, 3, 4};
    static inline uint64_t cyv_rand(void) {
        uint64_t *s = cyv_rng_s;
        uint64_t r = cyv_rotl64(s[1] * 5, 7) * 9, t = s[1] << 17;
        s[2] ^= s[0]; s[3] ^= s[1]; s[1] ^= s[2]; s[0] ^= s[3]; s[2] ^= t;
        s[3] = cyv_rotl64(s[3], 45);
        return r;
    }
    /* uniform in [0, n) by multiply-shift (bias < n / 2^64) */
    static inline uint32_t cyv_rand_below(uint32_t n) {
        return (uint32_t)(((unsigned __int128)cyv_rand() * n) >> 64);
    }
    /* uniform in (0, 1] */
    static inline double cyv_rand_unit(void) { return ((cyv_rand() >> 11) + 1) * (1.0 / 9007199254740992.0); }

    typedef struct { uint64_t h; uint32_t i; } cyv_ring_entry;
    static int cyv_ring_cmp(const void *a, const void *b) {
        const cyv_ring_entry *x = (const cyv_ring_entry *)a, *y = (const cyv_ring_entry *)b;
        if (x->h != y->h) return x->h < y->h ? -1 : 1;
        return x->i < y->i ? -1 : (x->i > y->i);
    }
    """
    uint64_t cyv_xxh64(const void *data, size_t len, uint64_t seed) nogil
    uint64_t cyv_murmur2_64(const void *data, size_t len, uint64_t seed) nogil
    uint64_t cyv_rng_s[4]
    uint64_t cyv_rand() nogil
    uint32_t cyv_rand_below(uint32_t n) nogil
    double cyv_rand_unit() nogil
    ctypedef struct cyv_ring_entry:
        uint64_t h
        uint32_t i
    int cyv_ring_cmp(const void *a, const void *b) nogil


DEFAULT_OVERPROVISIONING_FACTOR = 140
DEFAULT_PANIC_THRESHOLD = 50
MURMUR_STD_HASH_SEED = 0xc70f6907
# Weighted round robin: cycles longer than this are scaled down (proportions then approximate).
WRR_MAX_CYCLE = 1 << 20
# Above this many (hosts x cycle length) steps the WRR sequence is built with a heap (Webster /
# Sainte-Lague order) instead of the O(n) per step smooth weighted round robin.
WRR_NAIVE_LIMIT = 1 << 23

cdef uint64_t _WRR_MAX_CYCLE = 1 << 20
cdef uint64_t _WRR_NAIVE_LIMIT = 1 << 23


# ---- hashing ----------------------------------------------------------------------------------

def xxh64(const unsigned char[::1] data, uint64_t seed=0):
    """xxHash64 of bytes (Envoy's HashUtil::xxHash64)."""
    if data.shape[0] == 0:
        return cyv_xxh64(b"", 0, seed)
    return cyv_xxh64(&data[0], data.shape[0], seed)


def hash_key(bytes data):
    """The 64-bit request hash for RING_HASH / MAGLEV: xxh64(data, seed 0)."""
    return cyv_xxh64(PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data), 0)


def murmur2_64(const unsigned char[::1] data, uint64_t seed=MURMUR_STD_HASH_SEED):
    """Envoy's MurmurHash::murmurHash2 (ring hash MURMUR_HASH_2), default seed 0xc70f6907."""
    if data.shape[0] == 0:
        return cyv_murmur2_64(b"", 0, seed)
    return cyv_murmur2_64(&data[0], data.shape[0], seed)


# ---- random numbers ---------------------------------------------------------------------------

def reseed(seed=None):
    """Reseed this process's generator from os.urandom (or from an int, for tests). Done
    automatically after fork; call it by hand if a child is made some other way."""
    cdef int k
    if seed is None:
        raw = _os.urandom(32)
        for k in range(4):
            cyv_rng_s[k] = int.from_bytes(raw[8 * k:8 * k + 8], "little")
    else:
        x = int(seed) & 0xFFFFFFFFFFFFFFFF
        for k in range(4):   # splitmix64 expansion of the seed
            x = (x + 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF
            z = x
            z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
            z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
            cyv_rng_s[k] = z ^ (z >> 31)
    if cyv_rng_s[0] == 0 and cyv_rng_s[1] == 0 and cyv_rng_s[2] == 0 and cyv_rng_s[3] == 0:
        cyv_rng_s[0] = 1


def random_u64():
    return cyv_rand()


reseed()
if hasattr(_os, "register_at_fork"):
    _os.register_at_fork(after_in_child=reseed)


# ---- priority load (pure function, also used by the tests) ------------------------------------

def priority_loads(healthy, degraded, counts, uint32_t overprovisioning_factor=140,
                   uint32_t panic_threshold=50, members=None):
    """Envoy's per-priority load for host counts per priority.

    healthy[P], degraded[P]: usable host counts; counts[P]: hosts counted for health (members minus
    excluded); members[P]: all hosts (total-panic shares; default counts).
    Returns (healthy_load, degraded_load, panic) lists, loads in percent summing to 100.
    """
    cdef int n = len(counts), p
    if members is None:
        members = counts
    hl = [0] * n
    dl = [0] * n
    pn = [False] * n
    if n == 0:
        return hl, dl, pn
    health = [0] * n
    dhealth = [0] * n
    for p in range(n):
        if counts[p] > 0:
            health[p] = min(100, overprovisioning_factor * healthy[p] // counts[p])
            dhealth[p] = min(100, overprovisioning_factor * degraded[p] // counts[p])
    nta = min(100, sum(health) + sum(dhealth))
    threshold = min(100, panic_threshold)
    if nta > 0:
        remaining = 100
        first_h = -1
        for p in range(n):
            if first_h < 0 and health[p] > 0:
                first_h = p
            hl[p] = min(remaining, health[p] * 100 // nta)
            remaining -= hl[p]
        first_d = -1
        for p in range(n):
            if first_d < 0 and dhealth[p] > 0:
                first_d = p
            dl[p] = min(remaining, dhealth[p] * 100 // nta)
            remaining -= dl[p]
        if remaining:
            if first_h >= 0:
                hl[first_h] += remaining
            else:
                dl[first_d] += remaining
    if threshold == 0 and nta == 0:
        hl = [0] * n
        dl = [0] * n
        hl[0] = 100
        return hl, dl, pn
    total_panic = True
    for p in range(n):
        if nta == 100:
            pn[p] = False
        else:
            hp = 100.0 * healthy[p] / counts[p] if counts[p] else 0.0
            dp = 100.0 * degraded[p] / counts[p] if counts[p] else 0.0
            pn[p] = (hp + dp) < threshold
        total_panic = total_panic and pn[p]
    if total_panic:
        total = sum(members)
        hl = [0] * n
        dl = [0] * n
        if total == 0:
            hl[0] = 100
        else:
            left = 100
            first = -1
            for p in range(n):
                if first < 0 and members[p]:
                    first = p
                hl[p] = 100 * members[p] // total
                left -= hl[p]
            hl[first] += left
    return hl, dl, pn


# ---- per-source structures --------------------------------------------------------------------

cdef class _Source:

    def __cinit__(self):
        self.n = 0

    cdef int _alloc(self, uint32_t n) except -1:
        self.n = n
        if n:
            self.slots = <uint32_t *>malloc(n * sizeof(uint32_t))
            self.iw = <uint32_t *>malloc(n * sizeof(uint32_t))
            self.ew = <double *>malloc(n * sizeof(double))
            if self.slots == NULL or self.iw == NULL or self.ew == NULL:
                raise MemoryError()
        return 0

    def __dealloc__(self):
        free(self.slots); free(self.iw); free(self.ew)
        free(self.seq); free(self.cum)
        free(self.dl); free(self.dord); free(self.heap)
        free(self.rh); free(self.rs); free(self.mt)

    @property
    def hosts(self):
        return [self.slots[i] for i in range(self.n)]

    @property
    def sequence(self):
        """The weighted round-robin cycle (slot indices), once built."""
        return [self.slots[self.seq[i]] for i in range(self.seq_len)]


cdef uint64_t _gcd(uint64_t a, uint64_t b) noexcept nogil:
    cdef uint64_t t
    while b:
        t = a % b
        a = b
        b = t
    return a


cdef int _build_wrr(_Source s) except -1:
    """One cycle of weighted round robin over s (integer weights derived from s.ew).

    Exact: host i appears exactly w_i times per cycle of W = sum(w) (weights divided by their gcd;
    cycles above WRR_MAX_CYCLE are scaled down). Order: nginx's smooth weighted round robin (each
    step every host gains its weight, the richest is picked and pays W) when n*W is small,
    otherwise Webster order (the k-th copy of host i at (k + 1/2) / w_i, ties to the lower index),
    built with a heap. Both are integer-only, so every process builds the same sequence.
    """
    cdef uint32_t n = s.n, i, best, j, c, top
    cdef uint64_t *w
    cdef uint64_t *k
    cdef int64_t *credit
    cdef uint64_t g = 0, W = 0, t, maxw = 0
    cdef double maxe = 0.0
    cdef bint slow
    cdef int64_t bc
    cdef uint32_t *heap
    w = <uint64_t *>malloc(n * sizeof(uint64_t))
    if w == NULL:
        raise MemoryError()
    try:
        slow = False
        for i in range(n):
            if s.ew[i] > maxe:
                maxe = s.ew[i]
            if s.ew[i] != <double>s.iw[i]:
                slow = True
        for i in range(n):
            if not slow:
                w[i] = s.iw[i]
            else:   # slow start: relative weights at 1/10000 of the largest
                w[i] = <uint64_t>llround(s.ew[i] * 10000.0 / maxe)
                if w[i] < 1:
                    w[i] = 1
        for i in range(n):
            g = _gcd(w[i], g)
        for i in range(n):
            w[i] //= g
            W += w[i]
        if W > _WRR_MAX_CYCLE:
            t = W
            W = 0
            for i in range(n):
                w[i] = <uint64_t>((<double>w[i]) * _WRR_MAX_CYCLE / t)
                if w[i] < 1:
                    w[i] = 1
                W += w[i]
        free(s.seq)
        s.seq = <uint32_t *>malloc(W * sizeof(uint32_t))
        if s.seq == NULL:
            raise MemoryError()
        s.seq_len = W
        if <uint64_t>n * W <= _WRR_NAIVE_LIMIT:
            credit = <int64_t *>calloc(n, sizeof(int64_t))
            if credit == NULL:
                raise MemoryError()
            for t in range(W):
                best = 0
                bc = -(1LL << 62)
                for i in range(n):
                    credit[i] += <int64_t>w[i]
                    if credit[i] > bc:
                        bc = credit[i]
                        best = i
                credit[best] -= <int64_t>W
                s.seq[t] = best
            free(credit)
        else:
            k = <uint64_t *>calloc(n, sizeof(uint64_t))
            heap = <uint32_t *>malloc(n * sizeof(uint32_t))
            if k == NULL or heap == NULL:
                free(k); free(heap)
                raise MemoryError()
            for i in range(n):
                heap[i] = i
            # heapify (all k = 0: key 1/(2 w_i))
            for j in range(n // 2, 0, -1):
                _wb_sift(heap, n, j - 1, w, k)
            for t in range(W):
                top = heap[0]
                s.seq[t] = top
                k[top] += 1
                _wb_sift(heap, n, 0, w, k)
            free(k); free(heap)
    finally:
        free(w)
    return 0


cdef inline bint _wb_less(uint32_t a, uint32_t b, uint64_t *w, uint64_t *k) noexcept nogil:
    # (2k_a + 1) / (2 w_a) < (2k_b + 1) / (2 w_b), exactly; ties: lower index first
    cdef uint64_t l = (2 * k[a] + 1) * w[b], r = (2 * k[b] + 1) * w[a]
    if l != r:
        return l < r
    return a < b


cdef void _wb_sift(uint32_t *heap, uint32_t n, uint32_t pos, uint64_t *w, uint64_t *k) noexcept nogil:
    cdef uint32_t c, x = heap[pos]
    while True:
        c = 2 * pos + 1
        if c >= n:
            break
        if c + 1 < n and _wb_less(heap[c + 1], heap[c], w, k):
            c += 1
        if not _wb_less(heap[c], x, w, k):
            break
        heap[pos] = heap[c]
        pos = c
    heap[pos] = x


# ---- the load balancers -----------------------------------------------------------------------

cdef class LB:
    """Base: priority / health / panic bookkeeping; subclasses implement _pick_src / _build_src.

    LB(table, cluster_index, slots_by_priority, opts): slots_by_priority is a list indexed by
    priority (or a {priority: [slots]} dict) of host slot indices, or None to take the cluster's
    slot range from the table and group in-use slots by their priority field (re-derived when the
    cluster's membership generation changes: what STRICT_DNS needs). opts: see make_lb.
    """

    def __init__(self, HostTable table, int cluster_index, slots_by_priority=None, opts=None):
        opts = dict(opts or {})
        if cluster_index < 0 or cluster_index >= <int>table.n_clusters:
            raise IndexError(f"cluster index {cluster_index} out of range")
        self.table = table
        self.hdr = table.hdr
        self.cl = &table.clusters[cluster_index]
        self.hosts = table.hosts
        self.cluster_index = cluster_index
        self.policy = opts.get("policy", type(self).__name__)
        self.overprovisioning_factor = int(opts.get("overprovisioning_factor", 140))
        self.panic_threshold = min(100, int(opts.get("panic_threshold", 50)))
        self.fail_on_panic = bool(opts.get("fail_traffic_on_panic", False))
        self.ignore_new_hosts = bool(opts.get("ignore_new_hosts_until_first_hc", False))
        self.choice_count = int(opts.get("choice_count", 2))
        if self.choice_count < 1:
            raise ValueError("choice_count must be >= 1")
        window = float(opts.get("slow_start_window", 0.0) or 0.0)
        self.ss_enabled = window > 0
        self.ss_window_ns = <uint64_t>(window * 1e9)
        self.ss_aggression = float(opts.get("slow_start_aggression", 1.0))
        if self.ss_aggression <= 0:
            self.ss_aggression = 1.0   # Envoy logs and uses 1.0
        self.ss_min_weight = float(opts.get("slow_start_min_weight_percent", 10.0)) / 100.0
        self.clock = opts.get("clock")
        self.decay_ns = float(opts.get("decay_time", 10.0)) * 1e9
        self.srcs = []
        self.n_prio = 0
        self.single = -1
        self.derive_slots = slots_by_priority is None
        if not self.derive_slots:
            self.prio_slots = self._normalize_slots(slots_by_priority)
        else:
            self.prio_slots = []
            self.mgen = 0xFFFFFFFFFFFFFFFF
        self._refresh(ht_generation(self.hdr))

    def _normalize_slots(self, slots_by_priority):
        if isinstance(slots_by_priority, dict):
            n = (max(slots_by_priority) + 1) if slots_by_priority else 0
            out = [[] for _ in range(n)]
            for p, lst in slots_by_priority.items():
                out[int(p)] = [int(x) for x in lst]
        else:
            out = [[int(x) for x in lst] for lst in slots_by_priority]
        if len(out) > LB_MAX_PRIORITIES:
            raise ValueError(f"at most {LB_MAX_PRIORITIES} priorities")
        for lst in out:
            for x in lst:
                if x < 0 or x >= <long>self.table.n_hosts:
                    raise IndexError(f"host slot {x} out of range")
        return out

    def _derive_slots(self):
        cdef uint32_t first = cyv_ld32(&self.cl.first_host), n = cyv_ld32(&self.cl.n_slots), i
        cdef cyv_ht_host *h
        by = {}
        for i in range(first, first + n):
            h = &self.hosts[i]
            if cyv_ld8(&h.family) == 0:
                continue
            by.setdefault(cyv_ld32(&h.priority), []).append(i)
        return self._normalize_slots(by)

    def set_clock(self, clock):
        """Use clock() (ns, CLOCK_MONOTONIC-like) instead of the monotonic clock (tests)."""
        self.clock = clock
        self._refresh(ht_generation(self.hdr))

    cdef uint64_t _now(self) except? 0:
        if self.clock is not None:
            return <uint64_t>self.clock()
        return cyv_monotonic_ns()

    cdef int _refresh(self, uint64_t g) except -1:
        cdef int p, s
        cdef uint32_t slot, flags, i
        cdef cyv_ht_host *h
        cdef _Source src
        cdef uint64_t now = 0, since, dt, next_tick
        cdef double f
        cdef bint any_ss = False
        self.gen = g
        self.refreshes += 1
        if self.derive_slots:
            mg = cyv_ld64(&self.cl.membership_generation)
            if mg != self.mgen:
                self.mgen = mg
                self.prio_slots = self._derive_slots()
        if self.ss_enabled:
            now = self._now()
        n_prio = len(self.prio_slots)
        healthy_n, degraded_n, counts, members_n = [], [], [], []
        srcs = []
        for p in range(n_prio):
            lists = ([], [], [])
            by_src = [None, None, None]
            excluded = 0
            for slot in self.prio_slots[p]:
                h = &self.hosts[slot]
                flags = ht_host_flags(h)
                if cyv_ld8(&h.family) == 0 or (flags & HT_DNS_REMOVED):
                    continue
                lists[SRC_ALL].append(slot)
                if self.ignore_new_hosts and (flags & HT_PENDING_ACTIVE_HC):
                    excluded += 1
                    continue
                if ht_usable(flags):
                    lists[SRC_DEGRADED if flags & HT_DEGRADED_ACTIVE_HC else SRC_HEALTHY].append(slot)
            healthy_n.append(len(lists[SRC_HEALTHY]))
            degraded_n.append(len(lists[SRC_DEGRADED]))
            counts.append(len(lists[SRC_ALL]) - excluded)
            members_n.append(len(lists[SRC_ALL]))
            members_src = None
            for s in (SRC_ALL, SRC_HEALTHY, SRC_DEGRADED):
                src = _Source()
                src.members = members_src
                src._alloc(len(lists[s]))
                weights_differ = False
                for i in range(src.n):
                    slot = lists[s][i]
                    h = &self.hosts[slot]
                    src.slots[i] = slot
                    src.iw[i] = cyv_ld32(&h.weight)
                    if src.iw[i] == 0:
                        src.iw[i] = 1
                    src.ew[i] = src.iw[i]
                    if i and src.iw[i] != src.iw[0]:
                        weights_differ = True
                    if self.ss_enabled:
                        since = cyv_ld64(&h.healthy_since_ns)
                        if since and now >= since and now - since < self.ss_window_ns:
                            # Envoy applySlowStartFactor: time factor at least 1 ms.
                            dt = now - since
                            if dt < 1000000:
                                dt = 1000000
                            f = (<double>dt) / self.ss_window_ns
                            if self.ss_aggression != 1.0:
                                f = pow(f, 1.0 / self.ss_aggression)
                            if f < self.ss_min_weight:
                                f = self.ss_min_weight
                            if f < 1.0:
                                src.ew[i] = src.iw[i] * f
                                weights_differ = True
                                any_ss = True
                src.weighted = weights_differ and src.n > 1
                if s == SRC_ALL:
                    members_src = src
                by_src[s] = src
            srcs.extend(by_src)
        hl, dl, pn = priority_loads(healthy_n, degraded_n, counts, self.overprovisioning_factor,
                                    self.panic_threshold, members_n)
        self.n_prio = n_prio
        self.srcs = srcs
        self.single = -1
        for p in range(n_prio):
            self.hload[p] = hl[p]
            self.dload[p] = dl[p]
            self.panic[p] = pn[p]
            if not pn[p]:
                if hl[p] == 100:
                    self.single = p * 3 + SRC_HEALTHY
                elif dl[p] == 100:
                    self.single = p * 3 + SRC_DEGRADED
        self.ss_active = any_ss
        if any_ss:
            next_tick = self.ss_window_ns // 32
            if next_tick < 10000000:
                next_tick = 10000000
            self.ss_deadline = now + next_tick
        return 0

    cpdef int pick(self, uint64_t hash_key=0, bint has_hash=False) except -2:
        """A host slot index, or -1 when no host may be used. hash_key/has_hash: the request hash
        (RING_HASH, MAGLEV; ignored by the others)."""
        cdef uint64_t g = ht_generation(self.hdr)
        cdef uint64_t h
        cdef uint32_t r, acc
        cdef int p, idx
        if g != self.gen:
            self._refresh(g)
        elif self.ss_active and self._now() >= self.ss_deadline:
            self._refresh(g)
        if self.n_prio == 0:
            return -1
        idx = self.single
        if idx < 0:
            h = hash_key if (has_hash and self.hash_based) else cyv_rand()
            r = <uint32_t>(h % 100) + 1
            acc = 0
            idx = -1
            for p in range(self.n_prio):
                acc += self.hload[p]
                if r <= acc:
                    idx = p * 3 + SRC_HEALTHY
                    break
            if idx < 0:
                for p in range(self.n_prio):
                    acc += self.dload[p]
                    if r <= acc:
                        idx = p * 3 + SRC_DEGRADED
                        break
            if idx < 0:
                idx = SRC_HEALTHY
            p = idx // 3
            if self.panic[p]:
                ht_cluster_count_panic(self.cl)
                if self.fail_on_panic:
                    return -1
                idx = p * 3 + SRC_ALL
        return self._pick_src(<_Source>self.srcs[idx], hash_key, has_hash)

    cdef int _pick_src(self, _Source s, uint64_t hash_key, bint has_hash) except -2:
        raise NotImplementedError

    cdef int _build_src(self, _Source s) except -1:
        s.built = True
        return 0

    # ---- introspection (admin, tests) ---------------------------------------------------------

    def priority_state(self):
        """{'healthy_load': [...], 'degraded_load': [...], 'panic': [...]} as last computed."""
        self.pick_check()
        return {
            "healthy_load": [self.hload[p] for p in range(self.n_prio)],
            "degraded_load": [self.dload[p] for p in range(self.n_prio)],
            "panic": [bool(self.panic[p]) for p in range(self.n_prio)],
        }

    def pick_check(self):
        """Recompute now if the health generation moved (what the next pick would do)."""
        cdef uint64_t g = ht_generation(self.hdr)
        if g != self.gen:
            self._refresh(g)

    def source(self, int priority, int which=SRC_HEALTHY):
        """The _Source of (priority, healthy=0 / degraded=1 / all=2), built."""
        self.pick_check()
        cdef _Source s = self.srcs[priority * 3 + which]
        if not s.built:
            self._build_src(s)
        return s

    def bench(self, long n, uint64_t hash_key=0, bint has_hash=False, bint vary_hash=False):
        """n picks in a C loop; returns elapsed ns (micro benchmark)."""
        cdef long i
        cdef uint64_t t0 = cyv_monotonic_ns(), k = hash_key
        cdef int r
        for i in range(n):
            if vary_hash:
                k = k * 6364136223846793005ULL + 1442695040888963407ULL
            r = self.pick(k, has_hash)
        return cyv_monotonic_ns() - t0


cdef class RoundRobinLB(LB):
    """ROUND_ROBIN with one rotation shared by every process.

    Unweighted: slots[c % n] where c = fetch_add on the cluster's shared cursor, so the picks of
    all workers together walk the hosts in order (Envoy's RR is per worker, see
    concurrency_lb.rst; ours is global). Weighted (weights differ, or slow start): a precomputed
    cycle (see _build_wrr) of length W indexed by the same shared cursor, so N processes together
    produce exact proportions over every W consecutive cursor values. It is rebuilt when the
    health generation moves (membership, health, weights) and, during slow start, periodically.
    """

    cdef int _pick_src(self, _Source s, uint64_t hash_key, bint has_hash) except -2:
        cdef uint64_t c
        if s.n <= 1:
            return <int>s.slots[0] if s.n else -1
        c = ht_cluster_rr_next(self.cl)
        if not s.weighted:
            return <int>s.slots[c % s.n]
        if not s.built:
            self._build_src(s)
        return <int>s.slots[s.seq[c % s.seq_len]]

    cdef int _build_src(self, _Source s) except -1:
        if s.weighted and s.n > 1:
            _build_wrr(s)
        s.built = True
        return 0


cdef class RandomLB(LB):
    """RANDOM: uniform (Envoy random_lb.cc); weighted by effective weight when weights differ."""

    cdef int _pick_src(self, _Source s, uint64_t hash_key, bint has_hash) except -2:
        cdef double r
        cdef uint32_t lo, hi, mid
        if s.n <= 1:
            return <int>s.slots[0] if s.n else -1
        if not s.weighted:
            return <int>s.slots[cyv_rand_below(s.n)]
        if not s.built:
            self._build_src(s)
        r = (1.0 - cyv_rand_unit()) * s.total      # [0, total)
        lo = 0
        hi = s.n - 1
        while lo < hi:
            mid = (lo + hi) >> 1
            if s.cum[mid] > r:
                hi = mid
            else:
                lo = mid + 1
        return <int>s.slots[lo]

    cdef int _build_src(self, _Source s) except -1:
        cdef uint32_t i
        cdef double acc = 0.0
        free(s.cum)
        s.cum = <double *>malloc(max(s.n, 1) * sizeof(double))
        if s.cum == NULL:
            raise MemoryError()
        for i in range(s.n):
            acc += s.ew[i]
            s.cum[i] = acc
        s.total = acc
        s.built = True
        return 0


cdef inline int _full_scan_min_active(_Source s, cyv_ht_host *hosts) noexcept nogil:
    """Fewest active requests over all hosts of s; ties broken uniformly (reservoir sampling)."""
    cdef uint32_t i, ties = 0
    cdef int best = 0
    cdef int64_t a, besta = 0x7FFFFFFFFFFFFFFF
    for i in range(s.n):
        a = ht_host_active(&hosts[s.slots[i]])
        if a < besta:
            besta = a
            best = i
            ties = 1
        elif a == besta:
            ties += 1
            if cyv_rand_below(ties) == 0:
                best = i
    return best


cdef class LeastRequestLB(LB):
    """LEAST_REQUEST (Envoy least_request_lb.cc) over the shared `active` gauge.

    Equal weights, no slow start: choice_count random draws with replacement, strictly fewer
    active wins (first drawn wins ties). If the source has fewer than 2 * choice_count hosts, all
    are scanned instead (fewest active, uniform tie-break): with few hosts random draws often miss
    the least loaded one entirely (Envoy issue #11004), and a scan of < 2k hosts costs about the
    same as k draws. Weights differ or slow start: Envoy's EDF scheduler (per process) where a host
    re-enters with deadline now + 1/w, w = weight * slow_start_factor / (active + 1)^bias
    (bias = active_request_bias, default 1.0; 0 gives weighted round robin); initial deadlines
    have a random phase per process.
    """
    cdef double bias

    def __init__(self, HostTable table, int cluster_index, slots_by_priority=None, opts=None):
        self.bias = float((opts or {}).get("active_request_bias", 1.0))
        LB.__init__(self, table, cluster_index, slots_by_priority, opts)

    cdef inline double _dyn_weight(self, _Source s, uint32_t i) noexcept:
        cdef int64_t a = ht_host_active(&self.hosts[s.slots[i]])
        if a < 0:
            a = 0
        if self.bias == 0.0:
            return s.ew[i]
        if self.bias == 1.0:
            return s.ew[i] / (a + 1)
        return s.ew[i] / pow(<double>(a + 1), self.bias)

    cdef int _pick_src(self, _Source s, uint64_t hash_key, bint has_hash) except -2:
        cdef uint32_t best, cand, k, top
        cdef int64_t ba, ca
        if s.n <= 1:
            return <int>s.slots[0] if s.n else -1
        if not s.weighted:
            if s.n < 2 * self.choice_count:
                return <int>s.slots[_full_scan_min_active(s, self.hosts)]
            best = cyv_rand_below(s.n)
            ba = ht_host_active(&self.hosts[s.slots[best]])
            for k in range(1, self.choice_count):
                cand = cyv_rand_below(s.n)
                ca = ht_host_active(&self.hosts[s.slots[cand]])
                if ca < ba:
                    best = cand
                    ba = ca
            return <int>s.slots[best]
        if not s.built:
            self._build_src(s)
        top = s.heap[0]
        s.edf_now = s.dl[top]
        s.dl[top] = s.edf_now + 1.0 / self._dyn_weight(s, top)
        s.edf_seq += 1
        s.dord[top] = s.edf_seq
        _edf_sift(s, 0)
        return <int>s.slots[top]

    cdef int _build_src(self, _Source s) except -1:
        cdef uint32_t i, j
        if s.weighted and s.n > 1:
            free(s.dl); free(s.dord); free(s.heap)
            s.dl = <double *>malloc(s.n * sizeof(double))
            s.dord = <uint64_t *>malloc(s.n * sizeof(uint64_t))
            s.heap = <uint32_t *>malloc(s.n * sizeof(uint32_t))
            if s.dl == NULL or s.dord == NULL or s.heap == NULL:
                raise MemoryError()
            s.edf_now = 0.0
            for i in range(s.n):
                s.dl[i] = cyv_rand_unit() / self._dyn_weight(s, i)
                s.dord[i] = i
                s.heap[i] = i
            s.edf_seq = s.n
            for j in range(s.n // 2, 0, -1):
                _edf_sift(s, j - 1)
        s.built = True
        return 0


cdef inline bint _edf_less(_Source s, uint32_t a, uint32_t b) noexcept nogil:
    if s.dl[a] != s.dl[b]:
        return s.dl[a] < s.dl[b]
    return s.dord[a] < s.dord[b]


cdef void _edf_sift(_Source s, uint32_t pos) noexcept:
    cdef uint32_t c, n = s.n, x = s.heap[pos]
    while True:
        c = 2 * pos + 1
        if c >= n:
            break
        if c + 1 < n and _edf_less(s, s.heap[c + 1], s.heap[c]):
            c += 1
        if not _edf_less(s, s.heap[c], x):
            break
        s.heap[pos] = s.heap[c]
        pos = c
    s.heap[pos] = x


cdef class LeastResponseTimeLB(LB):
    """cyvoy.least_response_time: power of `choice_count` choices on ewma * (active + 1).

    ewma is the peak-EWMA latency the workers record in the table (HostTable.record with
    decay_ns = this LB's decay_ns, from typed_config decay_time; every LB has decay_ns, 10 s
    unless configured here); a host with no sample yet scores 0, so new hosts get probed.
    Fewer than 2 * choice_count hosts: full scan (same reason as LEAST_REQUEST); ties at the same
    score are broken uniformly in a scan, by draw order in P2C. Weights are not used.
    """

    cdef inline double _score(self, uint32_t slot) noexcept:
        cdef cyv_ht_host *h = &self.hosts[slot]
        cdef int64_t a = ht_host_active(h)
        if a < 0:
            a = 0
        return ht_host_ewma_ns(h) * (a + 1)

    cdef int _pick_src(self, _Source s, uint64_t hash_key, bint has_hash) except -2:
        cdef uint32_t i, best, cand, k, ties
        cdef double sc, bs
        if s.n <= 1:
            return <int>s.slots[0] if s.n else -1
        if s.n < 2 * self.choice_count:
            best = 0
            bs = 1e308
            ties = 0
            for i in range(s.n):
                sc = self._score(s.slots[i])
                if sc < bs:
                    bs = sc
                    best = i
                    ties = 1
                elif sc == bs:
                    ties += 1
                    if cyv_rand_below(ties) == 0:
                        best = i
            return <int>s.slots[best]
        best = cyv_rand_below(s.n)
        bs = self._score(s.slots[best])
        for k in range(1, self.choice_count):
            cand = cyv_rand_below(s.n)
            sc = self._score(s.slots[cand])
            if sc < bs:
                best = cand
                bs = sc
        return <int>s.slots[best]


cdef class _HashLB(LB):
    """Shared by RING_HASH and MAGLEV: without a hash, a uniformly random host of the source."""

    def _host_keys(self, _Source s):
        """Envoy's hash key per host: address()->asString(), "ip:port" or "[ip6]:port"."""
        keys = []
        for i in range(s.n):
            addr = self.table.host_address(s.slots[i])
            if addr is None:
                keys.append(b"")
                continue
            ip, port = addr
            keys.append((f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}").encode())
        return keys


cdef class RingHashLB(_HashLB):
    """RING_HASH (Envoy ring_hash_lb.cc): per host "<key>_<i>" hashed (xxHash64, or MURMUR_HASH_2)
    scale * w_i times, where w_i is the normalized weight and
    scale = min(ceil(min_w * minimum_ring_size) / min_w, maximum_ring_size); sorted; a request
    hash goes to the first entry >= it (wrapping to the first). Weights and scale come from every
    member host of the priority, and unusable hosts' points are left out (see _build_src), so a
    host going unhealthy moves only its own keys."""
    cdef uint64_t min_ring
    cdef uint64_t max_ring
    cdef bint murmur

    def __init__(self, HostTable table, int cluster_index, slots_by_priority=None, opts=None):
        o = opts or {}
        self.min_ring = int(o.get("minimum_ring_size", 1024))
        self.max_ring = int(o.get("maximum_ring_size", 8388608))
        self.murmur = o.get("hash_function", "XX_HASH") == "MURMUR_HASH_2"
        if self.min_ring > self.max_ring:
            raise ValueError("minimum_ring_size is larger than maximum_ring_size")
        self.hash_based = True
        LB.__init__(self, table, cluster_index, slots_by_priority, opts)
        self.hash_based = True

    cdef int _pick_src(self, _Source s, uint64_t hash_key, bint has_hash) except -2:
        cdef uint64_t lo, hi, mid
        if s.n <= 1:
            return <int>s.slots[0] if s.n else -1
        if not has_hash:
            return <int>s.slots[cyv_rand_below(s.n)]
        if not s.built:
            self._build_src(s)
        if s.rn == 0:
            return -1
        lo = 0
        hi = s.rn
        while lo < hi:          # first entry with hash >= hash_key
            mid = (lo + hi) >> 1
            if s.rh[mid] < hash_key:
                lo = mid + 1
            else:
                hi = mid
        if lo == s.rn:
            lo = 0
        return <int>s.slots[s.rs[lo]]

    cdef int _build_src(self, _Source s) except -1:
        # Envoy's ring over every member host of the priority, keeping only the points of the
        # hosts in this source: identical to Envoy's ring while all members are usable; when some
        # are not, their points are dropped instead of re-scaling the ring (Envoy rebuilds with the
        # usable hosts only, which gives survivors extra points and moves ~9% more keys between
        # them when 1 host of 10 leaves).
        cdef _Source m = s.members if s.members is not None else s
        cdef uint32_t i, n = m.n
        cdef double total = 0.0, min_w = 1.0, scale, current = 0.0, target = 0.0
        cdef uint64_t ring_size, count = 0, k
        cdef cyv_ring_entry *ring
        cdef char buf[96]
        cdef bytes key
        cdef Py_ssize_t klen
        cdef int m_len, own
        if s.n == 0 or n == 0:
            s.built = True
            return 0
        keys = self._host_keys(m)
        index_in_s = {s.slots[i]: i for i in range(s.n)}
        for i in range(n):
            total += m.iw[i]
        for i in range(n):
            if m.iw[i] / total < min_w:
                min_w = m.iw[i] / total
        scale = ceil(min_w * self.min_ring) / min_w
        if scale > self.max_ring:
            scale = self.max_ring
        ring_size = <uint64_t>ceil(scale)
        ring = <cyv_ring_entry *>malloc((ring_size + n + 1) * sizeof(cyv_ring_entry))
        if ring == NULL:
            raise MemoryError()
        try:
            for i in range(n):
                target += scale * (m.iw[i] / total)
                own = index_in_s.get(m.slots[i], -1)
                if own < 0:          # not in this source: advance the running sum only
                    while current < target:
                        current += 1.0
                    continue
                key = keys[i]
                klen = len(key)
                if klen > 60:
                    raise ValueError("host key too long")
                memcpy(buf, <char *>key, klen)
                buf[klen] = b'_'
                k = 0
                while current < target:
                    m_len = _write_uint(buf + klen + 1, k)
                    ring[count].h = (cyv_murmur2_64(buf, klen + 1 + m_len, 0xc70f6907ULL) if self.murmur
                                     else cyv_xxh64(buf, klen + 1 + m_len, 0))
                    ring[count].i = own
                    count += 1
                    k += 1
                    current += 1.0
            qsort(ring, count, sizeof(cyv_ring_entry), cyv_ring_cmp)
            free(s.rh); free(s.rs)
            s.rh = <uint64_t *>malloc(max(count, 1) * sizeof(uint64_t))
            s.rs = <uint32_t *>malloc(max(count, 1) * sizeof(uint32_t))
            if s.rh == NULL or s.rs == NULL:
                raise MemoryError()
            for k in range(count):
                s.rh[k] = ring[k].h
                s.rs[k] = ring[k].i
            s.rn = count
        finally:
            free(ring)
        s.built = True
        return 0

    def ring(self, int priority=0, int which=SRC_HEALTHY):
        """[(hash, slot)] of a built ring (tests, admin)."""
        cdef _Source s = self.source(priority, which)
        return [(s.rh[k], s.slots[s.rs[k]]) for k in range(s.rn)]


cdef int _write_uint(char *out, uint64_t v) noexcept nogil:
    """Decimal digits of v at out; returns their count."""
    cdef char tmp[24]
    cdef int n = 0, j
    if v == 0:
        out[0] = b'0'
        return 1
    while v:
        tmp[n] = <char>(48 + v % 10)
        v //= 10
        n += 1
    for j in range(n):
        out[j] = tmp[n - 1 - j]
    return n


cdef class MaglevLB(_HashLB):
    """MAGLEV (Envoy maglev_lb.cc, the Maglev paper's listing 1): hosts sorted by key; per host
    offset = xxh64(key) % M and skip = xxh64(key, seed 1) % (M - 1) + 1; the table (M = table_size,
    prime, default 65537) is filled round by round, a host taking its next free preferred entry
    each time iteration * w >= its target (target += max normalized weight), so entry counts follow
    the weights. A request hash goes to table[hash % M]."""
    cdef uint64_t table_size

    def __init__(self, HostTable table, int cluster_index, slots_by_priority=None, opts=None):
        self.table_size = int((opts or {}).get("table_size", 65537))
        if self.table_size < 2:
            raise ValueError("maglev table_size must be a prime >= 2")
        self.hash_based = True
        LB.__init__(self, table, cluster_index, slots_by_priority, opts)
        self.hash_based = True

    cdef int _pick_src(self, _Source s, uint64_t hash_key, bint has_hash) except -2:
        if s.n <= 1:
            return <int>s.slots[0] if s.n else -1
        if not has_hash:
            return <int>s.slots[cyv_rand_below(s.n)]
        if not s.built:
            self._build_src(s)
        return <int>s.slots[s.mt[hash_key % s.msize]]

    cdef int _build_src(self, _Source s) except -1:
        cdef uint32_t n = s.n, j, e
        cdef uint64_t M = self.table_size, filled = 0, c, iteration
        cdef uint64_t *offset
        cdef uint64_t *skip
        cdef uint64_t *nxt
        cdef double *weight
        cdef double *target
        cdef uint32_t *order
        cdef double total = 0.0, maxw = 0.0
        cdef bytes key
        if n == 0:
            s.built = True
            return 0
        keys = self._host_keys(s)
        sorted_idx = sorted(range(n), key=lambda i: keys[i])
        offset = <uint64_t *>malloc(n * sizeof(uint64_t))
        skip = <uint64_t *>malloc(n * sizeof(uint64_t))
        nxt = <uint64_t *>calloc(n, sizeof(uint64_t))
        weight = <double *>malloc(n * sizeof(double))
        target = <double *>calloc(n, sizeof(double))
        order = <uint32_t *>malloc(n * sizeof(uint32_t))
        free(s.mt)
        s.mt = <uint32_t *>malloc(M * sizeof(uint32_t))
        s.msize = M
        try:
            if (offset == NULL or skip == NULL or nxt == NULL or weight == NULL or target == NULL
                    or order == NULL or s.mt == NULL):
                raise MemoryError()
            for j in range(n):
                total += s.iw[j]
            for j in range(n):
                e = sorted_idx[j]
                order[j] = e
                key = keys[e]
                offset[j] = cyv_xxh64(<char *>key, len(key), 0) % M
                skip[j] = cyv_xxh64(<char *>key, len(key), 1) % (M - 1) + 1
                weight[j] = s.iw[e] / total
                if weight[j] > maxw:
                    maxw = weight[j]
            memset(s.mt, 0xFF, M * sizeof(uint32_t))
            iteration = 1
            while filled < M:
                for j in range(n):
                    if filled >= M:
                        break
                    if iteration * weight[j] < target[j]:
                        continue
                    target[j] += maxw
                    c = (offset[j] + skip[j] * nxt[j]) % M
                    while s.mt[c] != 0xFFFFFFFF:
                        nxt[j] += 1
                        c = (offset[j] + skip[j] * nxt[j]) % M
                    s.mt[c] = order[j]
                    nxt[j] += 1
                    filled += 1
                iteration += 1
        finally:
            free(offset); free(skip); free(nxt); free(weight); free(target); free(order)
        s.built = True
        return 0

    def entries(self, int priority=0, int which=SRC_HEALTHY):
        """{slot: number of table entries} of a built table (tests, admin)."""
        cdef _Source s = self.source(priority, which)
        out = {}
        for c in range(s.msize):
            slot = s.slots[s.mt[c]]
            out[slot] = out.get(slot, 0) + 1
        return out


# ---- factory ----------------------------------------------------------------------------------

_POLICY_CLASSES = {
    "ROUND_ROBIN": RoundRobinLB,
    "LEAST_REQUEST": LeastRequestLB,
    "RANDOM": RandomLB,
    "RING_HASH": RingHashLB,
    "MAGLEV": MaglevLB,
    "cyvoy.least_response_time": LeastResponseTimeLB,
}

# typed_extension_config names and type URLs of load_balancing_policy entries
_EXTENSIONS = {
    "cyvoy.least_response_time": "cyvoy.least_response_time",
    "envoy.load_balancing_policies.round_robin": "ROUND_ROBIN",
    "envoy.load_balancing_policies.least_request": "LEAST_REQUEST",
    "envoy.load_balancing_policies.random": "RANDOM",
    "envoy.load_balancing_policies.ring_hash": "RING_HASH",
    "envoy.load_balancing_policies.maglev": "MAGLEV",
}
_TYPE_URLS = {
    "envoy.extensions.load_balancing_policies.round_robin.v3.RoundRobin": "ROUND_ROBIN",
    "envoy.extensions.load_balancing_policies.least_request.v3.LeastRequest": "LEAST_REQUEST",
    "envoy.extensions.load_balancing_policies.random.v3.Random": "RANDOM",
    "envoy.extensions.load_balancing_policies.ring_hash.v3.RingHash": "RING_HASH",
    "envoy.extensions.load_balancing_policies.maglev.v3.Maglev": "MAGLEV",
}


def _get(obj, name, default=None):
    if obj is None:
        return default
    if isinstance(obj, dict):
        v = obj.get(name, default)
    else:
        v = getattr(obj, name, default)
    return default if v is None else v


def _seconds(v, default):
    """Duration as the loader stores it (float seconds) or raw ("5s", {seconds, nanos}, number)."""
    if v is None:
        return default
    if isinstance(v, (int, float)):
        return float(v)
    from proxy.config.durations import parse_duration
    return parse_duration(v)


def _percent(v, default):
    """Percent as the loader stores it (float) or raw ({value: x})."""
    if v is None:
        return default
    if isinstance(v, dict):
        return float(v.get("value", default))
    return float(v)


def _number(v, default):
    """A wrapper (UInt32Value/UInt64Value) raw or unwrapped; RuntimeDouble {default_value}."""
    if v is None:
        return default
    if isinstance(v, dict):
        if "default_value" in v:
            return v["default_value"] if v["default_value"] is not None else default
        if "value" in v:
            return v["value"]
    return v


def _slow_start(cfg, opts):
    ss = _get(cfg, "slow_start_config")
    if not ss:
        return
    opts["slow_start_window"] = _seconds(ss.get("slow_start_window"), 0.0)
    opts["slow_start_aggression"] = float(_number(ss.get("aggression"), 1.0))
    opts["slow_start_min_weight_percent"] = _percent(ss.get("min_weight_percent"), 10.0)


def lb_options(cluster_cfg):
    """(policy name, opts) from a model.Cluster (or a dict of the same fields): the common load
    balancer options and the policy's own config with Envoy's defaults."""
    common = _get(cluster_cfg, "common_lb_config") or {}
    lb_config = _get(cluster_cfg, "lb_config") or {}
    opts = {
        "panic_threshold": int(round(_percent(common.get("healthy_panic_threshold"), 50.0))),
        "ignore_new_hosts_until_first_hc": bool(common.get("ignore_new_hosts_until_first_hc", False)),
        "fail_traffic_on_panic": bool(_get(common.get("zone_aware_lb_config"), "fail_traffic_on_panic", False)),
        "overprovisioning_factor": int(_get(cluster_cfg, "overprovisioning_factor", 140)),
    }
    lbp = lb_config.get("load_balancing_policy")
    if lbp:
        for entry in lbp.get("policies") or []:
            tec = entry.get("typed_extension_config") or {}
            name = tec.get("name", "")
            tc = dict(tec.get("typed_config") or {})
            type_url = str(tc.pop("@type", ""))
            if type_url.rpartition("/")[2] in ("xds.type.v3.TypedStruct", "udpa.type.v1.TypedStruct"):
                type_url = str(tc.get("type_url", ""))
                tc = dict(tc.get("value") or {})
            policy = _EXTENSIONS.get(name) or _TYPE_URLS.get(type_url.rpartition("/")[2])
            if policy is None:
                continue   # Envoy takes the first policy it supports
            opts["policy"] = policy
            _policy_opts(policy, tc, opts)
            return policy, opts
        raise ValueError("load_balancing_policy: no supported policy (cyvoy supports "
                         + ", ".join(sorted(_EXTENSIONS)) + ")")
    policy = _get(cluster_cfg, "lb_policy", "ROUND_ROBIN")
    if policy not in _POLICY_CLASSES or policy.startswith("cyvoy."):
        raise ValueError(f"lb_policy {policy} is not supported")
    key = {"ROUND_ROBIN": "round_robin_lb_config", "LEAST_REQUEST": "least_request_lb_config",
           "RING_HASH": "ring_hash_lb_config", "MAGLEV": "maglev_lb_config"}.get(policy)
    opts["policy"] = policy
    _policy_opts(policy, (lb_config.get(key) if key else None) or {}, opts)
    return policy, opts


def _policy_opts(policy, cfg, opts):
    if policy in ("ROUND_ROBIN", "LEAST_REQUEST"):
        _slow_start(cfg, opts)
    if policy == "LEAST_REQUEST":
        opts["choice_count"] = int(_number(cfg.get("choice_count"), 2))
        opts["active_request_bias"] = float(_number(cfg.get("active_request_bias"), 1.0))
    elif policy == "RING_HASH":
        opts["minimum_ring_size"] = int(_number(cfg.get("minimum_ring_size"), 1024))
        opts["maximum_ring_size"] = int(_number(cfg.get("maximum_ring_size"), 8388608))
        opts["hash_function"] = cfg.get("hash_function") or "XX_HASH"
    elif policy == "MAGLEV":
        opts["table_size"] = int(_number(cfg.get("table_size"), 65537))
    elif policy == "cyvoy.least_response_time":
        opts["decay_time"] = _seconds(cfg.get("decay_time"), 10.0)
        opts["choice_count"] = int(_number(cfg.get("choice_count"), 2))


def make_lb(HostTable table, int cluster_index, cluster_cfg, slots_by_priority=None, **overrides):
    """The load balancer for one cluster of `table` (policy and options from cluster_cfg: a
    model.Cluster or a dict with lb_policy / lb_config / common_lb_config). slots_by_priority:
    list (index = priority) or dict of host slot lists; None derives them from the table.
    overrides: extra opts (e.g. clock=callable for tests, overprovisioning_factor)."""
    policy, opts = lb_options(cluster_cfg)
    opts.update(overrides)
    return _POLICY_CLASSES[opts.get("policy", policy)](table, cluster_index, slots_by_priority, opts)
