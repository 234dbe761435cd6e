# cython: language_level=3
"""Token buckets shared by every process of the proxy (the local_ratelimit filter's).

Envoy's local rate limit bucket is "shared across all workers, thus the rate limits are applied
per Envoy process" (docs/root/configuration/http/http_filters/local_rate_limit_filter.rst). cyvoy's
workers are processes, so the buckets live in one anonymous MAP_SHARED mmap the master creates
before fork, one 64-byte record (a cache line) per bucket:

    word      uint64: high 32 bits = the fill interval last credited (counted from `base_ns`),
                      low 32 bits = tokens left
    base_ns, interval_ns, max_tokens, tokens_per_fill: written once before fork, read-only after

A consume is one compare-and-swap loop on `word`, lock-free: credit `tokens_per_fill` for every
fill interval that has begun since the one last credited (capped at `max_tokens`), then take one
token. That is Envoy's timer-driven refill (tokens_per_fill every fill_interval, starting full)
computed lazily by whoever asks first, so no process needs a timer.
"""
import mmap as _mmap

from libc.stdint cimport int64_t, uint64_t
from proxy._fastpath.hosttable cimport (cyv_addi64, cyv_cas64, cyv_ld64, cyv_ldi64, cyv_monotonic_ns, cyv_st64,
                                        ht_cb_acquire, ht_cb_release)

DEF RECORD = 64
cdef uint64_t LOW32 = (<uint64_t>1 << 32) - 1

cdef struct Bucket:
    uint64_t word
    uint64_t base_ns
    uint64_t interval_ns
    uint64_t max_tokens
    uint64_t tokens_per_fill


cdef class _SharedRecords:
    """n records of RECORD bytes (a cache line each) in one anonymous MAP_SHARED mmap, made
    before fork so that every process maps the same pages."""
    cdef object _mm
    cdef unsigned char[::1] _view
    cdef unsigned char *base
    cdef readonly Py_ssize_t n

    def __init__(self, Py_ssize_t n):
        if n < 0:
            raise ValueError("n must be >= 0")
        self.n = n
        self._mm = _mmap.mmap(-1, max(1, n) * RECORD, flags=_mmap.MAP_SHARED,
                              prot=_mmap.PROT_READ | _mmap.PROT_WRITE)
        self._view = self._mm
        self.base = &self._view[0]

    cdef inline unsigned char *_rec(self, Py_ssize_t i) except NULL:
        if i < 0 or i >= self.n:
            raise IndexError(i)
        return self.base + i * RECORD


cdef class SharedTokenBuckets(_SharedRecords):
    """SharedTokenBuckets(n): n buckets, unconfigured (a consume on one never succeeds)."""

    cdef inline Bucket *_at(self, Py_ssize_t i) except NULL:
        return <Bucket *>self._rec(i)

    def configure(self, Py_ssize_t i, uint64_t max_tokens, uint64_t tokens_per_fill,
                  double fill_interval_s):
        """Set bucket i up, full (Envoy starts a bucket with max_tokens). Before fork only."""
        if not 0 < max_tokens < 2 ** 32 or tokens_per_fill < 1 or fill_interval_s <= 0:
            raise ValueError("max_tokens in [1, 2**32), tokens_per_fill >= 1, fill_interval > 0")
        cdef Bucket *b = self._at(i)
        b.base_ns = cyv_monotonic_ns()
        b.interval_ns = <uint64_t>(fill_interval_s * 1e9)
        b.max_tokens = max_tokens
        b.tokens_per_fill = tokens_per_fill
        cyv_st64(&b.word, max_tokens)

    cpdef bint consume(self, Py_ssize_t i):
        """Take one token from bucket i; False when it is empty."""
        cdef Bucket *b = self._at(i)
        if b.interval_ns == 0:
            return False
        return _consume(b, cyv_monotonic_ns())

    def consume_at(self, Py_ssize_t i, uint64_t now_ns):
        """consume() with an explicit clock (CLOCK_MONOTONIC ns), for tests."""
        return _consume(self._at(i), now_ns)

    def base_ns(self, Py_ssize_t i):
        """The clock reading fill intervals are counted from (for tests)."""
        return self._at(i).base_ns

    def tokens(self, Py_ssize_t i):
        """Tokens left as last written (without crediting elapsed intervals)."""
        return cyv_ld64(&self._at(i).word) & LOW32


cdef bint _consume(Bucket *b, uint64_t now_ns) noexcept nogil:
    cdef uint64_t old = cyv_ld64(&b.word)
    cdef uint64_t fill, last, tokens, nxt
    fill = (now_ns - b.base_ns) // b.interval_ns if now_ns > b.base_ns else 0
    while True:
        last = old >> 32
        tokens = old & LOW32
        if fill > last:
            # at most max_tokens, so the multiplication cannot overflow for any real interval count
            if fill - last >= b.max_tokens:
                tokens = b.max_tokens
            else:
                tokens = tokens + (fill - last) * b.tokens_per_fill
                if tokens > b.max_tokens:
                    tokens = b.max_tokens
            last = fill
        if tokens == 0:
            return False
        nxt = ((last & LOW32) << 32) | (tokens - 1)
        if cyv_cas64(&b.word, &old, nxt):   # on failure `old` is reloaded with the current word
            return True


cdef class SharedCounters(_SharedRecords):
    """SharedCounters(n): n int64 counters in shared memory, for limits that hold across all
    workers (the fault filter's max_active_faults)."""

    cdef inline int64_t *_at(self, Py_ssize_t i) except NULL:
        return <int64_t *>self._rec(i)

    def acquire(self, Py_ssize_t i, int64_t limit):
        """Raise counter i if it is below limit; False (unchanged) when it is not."""
        return ht_cb_acquire(self._at(i), limit)

    def release(self, Py_ssize_t i):
        ht_cb_release(self._at(i))

    def add(self, Py_ssize_t i, int64_t delta):
        cyv_addi64(self._at(i), delta)

    def value(self, Py_ssize_t i):
        return cyv_ldi64(self._at(i))
