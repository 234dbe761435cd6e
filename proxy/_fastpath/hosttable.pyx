# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""The shared-memory host table: one anonymous MAP_SHARED mmap created by the master before fork,
inherited by every worker and the health-check process (contract: docs/host-table.md; layout and
offsets: hosttable.pxd).

Writers: the master (at build time) and the health process write line 0 of a host (membership,
flags, slow-start stamp, ejection); workers write line 1 (active, EWMA, counters) with atomics.
Nothing here takes a lock: every field is one naturally aligned word accessed with __atomic
builtins, so readers in other processes never see a torn value.
"""
import mmap as _mmap
import socket as _socket

from libc.math cimport exp
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t, int64_t, uintptr_t
from libc.string cimport memcpy, memset

FAILED_ACTIVE_HC = HT_FAILED_ACTIVE_HC
FAILED_OUTLIER = HT_FAILED_OUTLIER
PENDING_ACTIVE_HC = HT_PENDING_ACTIVE_HC
DEGRADED_ACTIVE_HC = HT_DEGRADED_ACTIVE_HC
DRAINING = HT_DRAINING
DNS_REMOVED = HT_DNS_REMOVED
UNUSABLE_MASK = HT_UNUSABLE_MASK

HEADER_SIZE = HT_HEADER_SIZE
CLUSTER_SIZE = HT_CLUSTER_SIZE
HOST_SIZE = HT_HOST_SIZE
MAGIC = b"CYVOYHT1"
VERSION = 1


def usable(flags):
    """usable(flags) per docs/host-table.md: none of the failed/pending/draining/removed bits."""
    return (int(flags) & HT_UNUSABLE_MASK) == 0


def table_size(n_hosts, n_clusters):
    """Bytes needed for a table of n_hosts host slots and n_clusters cluster records."""
    return HEADER_SIZE + CLUSTER_SIZE * int(n_clusters) + HOST_SIZE * int(n_hosts)


def layout():
    """{'header.<field>' / 'cluster.<field>' / 'host.<field>': byte offset} and the record sizes,
    straight from the C structs (what the tests check against the contract)."""
    cdef cyv_ht_header h
    cdef cyv_ht_cluster c
    cdef cyv_ht_host x
    cdef uintptr_t hb = <uintptr_t>&h, cb = <uintptr_t>&c, xb = <uintptr_t>&x
    return {
        "header.size": sizeof(cyv_ht_header),
        "cluster.size": sizeof(cyv_ht_cluster),
        "host.size": sizeof(cyv_ht_host),
        "header.magic": <uintptr_t>&h.magic - hb,
        "header.version": <uintptr_t>&h.version - hb,
        "header.n_hosts": <uintptr_t>&h.n_hosts - hb,
        "header.n_clusters": <uintptr_t>&h.n_clusters - hb,
        "header.health_generation": <uintptr_t>&h.health_generation - hb,
        "header.checker_heartbeat_ns": <uintptr_t>&h.checker_heartbeat_ns - hb,
        "cluster.rr_cursor": <uintptr_t>&c.rr_cursor - cb,
        "cluster.first_host": <uintptr_t>&c.first_host - cb,
        "cluster.n_slots": <uintptr_t>&c.n_slots - cb,
        "cluster.membership_generation": <uintptr_t>&c.membership_generation - cb,
        "cluster.lb_healthy_panic": <uintptr_t>&c.lb_healthy_panic - cb,
        "host.flags": <uintptr_t>&x.flags - xb,
        "host.weight": <uintptr_t>&x.weight - xb,
        "host.priority": <uintptr_t>&x.priority - xb,
        "host.cluster_index": <uintptr_t>&x.cluster_index - xb,
        "host.port": <uintptr_t>&x.port - xb,
        "host.family": <uintptr_t>&x.family - xb,
        "host.ip": <uintptr_t>&x.ip[0] - xb,
        "host.healthy_since_ns": <uintptr_t>&x.healthy_since_ns - xb,
        "host.ejected_until_ns": <uintptr_t>&x.ejected_until_ns - xb,
        "host.ejection_count": <uintptr_t>&x.ejection_count - xb,
        "host.active": <uintptr_t>&x.active - xb,
        "host.ewma_bits": <uintptr_t>&x.ewma_bits - xb,
        "host.ewma_stamp_ns": <uintptr_t>&x.ewma_stamp_ns - xb,
        "host.rq_total": <uintptr_t>&x.rq_total - xb,
        "host.rq_error": <uintptr_t>&x.rq_error - xb,
        "host.consecutive_5xx": <uintptr_t>&x.consecutive_5xx - xb,
        "host.consecutive_gateway_failure": <uintptr_t>&x.consecutive_gateway_failure - xb,
        "host.consecutive_local_origin_failure": <uintptr_t>&x.consecutive_local_origin_failure - xb,
        "host.rq_success_interval": <uintptr_t>&x.rq_success_interval - xb,
    }


def monotonic_ns():
    """CLOCK_MONOTONIC in ns, the clock of every *_ns field of the table."""
    return cyv_monotonic_ns()


cdef class HostTable:
    """HostTable(n_hosts, n_clusters): a new zeroed table in an anonymous shared mmap.

    Create it in the master before forking; children inherit the mapping (same physical pages).
    The object keeps the mmap alive; the base pointer is taken once here.
    """

    def __init__(self, n_hosts=0, n_clusters=0):
        n_hosts = int(n_hosts)
        n_clusters = int(n_clusters)
        if n_hosts < 0 or n_clusters < 0 or n_hosts > 0xFFFFFFFF or n_clusters > 0xFFFFFFFF:
            raise ValueError("n_hosts and n_clusters must be in [0, 2**32)")
        size = table_size(n_hosts, n_clusters)
        mm = _mmap.mmap(-1, size, flags=_mmap.MAP_SHARED,
                        prot=_mmap.PROT_READ | _mmap.PROT_WRITE)
        self._bind(mm)
        self.hdr.version = CYV_HT_VERSION
        self.hdr.n_hosts = <uint32_t>n_hosts
        self.hdr.n_clusters = <uint32_t>n_clusters
        self._bind(mm)   # again, now that the header says where the host records start
        cyv_st64(&self.hdr.magic, CYV_HT_MAGIC)
        self.n_hosts = <uint32_t>n_hosts
        self.n_clusters = <uint32_t>n_clusters

    @staticmethod
    def attach(buffer):
        """A HostTable over an existing writable buffer holding a table (e.g. the .buffer of
        another HostTable, or an mmap of a memfd). Not needed with fork; kept for tests."""
        cdef HostTable t = HostTable.__new__(HostTable)
        t._bind(buffer)
        if cyv_ld64(&t.hdr.magic) != CYV_HT_MAGIC or t.hdr.version != CYV_HT_VERSION:
            raise ValueError("not a cyvoy host table (bad magic or version)")
        if len(memoryview(buffer).cast("B")) < table_size(t.hdr.n_hosts, t.hdr.n_clusters):
            raise ValueError("buffer smaller than the table it describes")
        t.n_hosts = t.hdr.n_hosts
        t.n_clusters = t.hdr.n_clusters
        return t

    cdef int _bind(self, object buf) except -1:
        cdef unsigned char[::1] view = buf
        if view.shape[0] < HT_HEADER_SIZE:
            raise ValueError("buffer too small for a host table")
        self._mm = buf
        self._view = view
        self.base = &view[0]
        if (<uintptr_t>self.base) % 64 != 0:
            raise ValueError("host table buffer must be 64-byte aligned")
        self.hdr = <cyv_ht_header *>self.base
        self.clusters = <cyv_ht_cluster *>(self.base + HT_HEADER_SIZE)
        self.hosts = <cyv_ht_host *>(self.base + HT_HEADER_SIZE
                                     + HT_CLUSTER_SIZE * <size_t>self.hdr.n_clusters)
        return 0

    @property
    def buffer(self):
        """The mmap (or attached buffer) holding the table."""
        return self._mm

    cdef cyv_ht_host *_host(self, long i) except NULL:
        if i < 0 or i >= <long>self.n_hosts:
            raise IndexError(f"host slot {i} out of range [0, {self.n_hosts})")
        if self.hosts == NULL:
            raise ValueError("host table not initialised")
        return &self.hosts[i]

    cdef cyv_ht_cluster *_cluster(self, long c) except NULL:
        if c < 0 or c >= <long>self.n_clusters:
            raise IndexError(f"cluster index {c} out of range [0, {self.n_clusters})")
        return &self.clusters[c]

    cdef void _bump_generation(self) noexcept:
        cyv_add64_ar(&self.hdr.health_generation, 1)

    # ---- membership (master at build time, health process for DNS) -----------------------------

    def set_cluster(self, long c, long first_host, long n_slots):
        """The cluster's host slots are [first_host, first_host + n_slots)."""
        cdef cyv_ht_cluster *cl = self._cluster(c)
        if first_host < 0 or n_slots < 0 or first_host + n_slots > <long>self.n_hosts:
            raise IndexError("cluster slots outside the host table")
        cyv_st32(&cl.first_host, <uint32_t>first_host)
        cyv_st32(&cl.n_slots, <uint32_t>n_slots)
        self.bump_membership(c)

    def cluster_slots(self, long c):
        """(first_host, n_slots) of cluster c."""
        cdef cyv_ht_cluster *cl = self._cluster(c)
        return (cyv_ld32(&cl.first_host), cyv_ld32(&cl.n_slots))

    def set_host(self, long i, long cluster_index, str address, long port, long weight,
                 long priority, healthy_since_ns=None):
        """Fill slot i. The family comes from the address (IPv4 or IPv6 literal). When the slot held
        another (address, port) or was unused, its flags and traffic state are reset and
        healthy_since_ns is set to `healthy_since_ns` (default 0 = not in slow start); when it is the
        same endpoint only weight/priority/cluster change. Bumps the cluster's membership
        generation and the health generation."""
        cdef cyv_ht_host *h = self._host(i)
        cdef bytes packed
        cdef uint8_t fam
        cdef const unsigned char *src
        if cluster_index < 0 or cluster_index >= <long>self.n_clusters:
            raise IndexError(f"cluster index {cluster_index} out of range")
        if not (0 <= port <= 65535):
            raise ValueError(f"port {port} out of range")
        if weight < 1 or weight > 0xFFFFFFFF:
            raise ValueError("weight must be >= 1")
        if priority < 0 or priority > 0xFFFFFFFF:
            raise ValueError("priority must be >= 0")
        try:
            packed = _socket.inet_pton(_socket.AF_INET, address)
            fam = 4
        except OSError:
            try:
                packed = _socket.inet_pton(_socket.AF_INET6, address.split("%", 1)[0])
                fam = 6
            except OSError:
                raise ValueError(f"{address!r} is not an IPv4 or IPv6 address") from None
        src = packed
        same = (cyv_ld8(&h.family) == fam and h.port == <uint16_t>port
                and (<char *>&h.ip[0])[:len(packed)] == packed)
        if not same:
            # A different endpoint in this slot: its state starts afresh. Retire it first so a
            # concurrent reader never sees the new address with the old host's flags.
            cyv_st32(&h.flags, HT_DNS_REMOVED)
            h.family = 0
            memset(&h.ip[0], 0, 16)
            memcpy(&h.ip[0], src, len(packed))
            h.port = <uint16_t>port
            cyv_st64(&h.healthy_since_ns, <uint64_t>(healthy_since_ns or 0))
            cyv_st64(&h.ejected_until_ns, 0)
            cyv_st32(&h.ejection_count, 0)
            h.active = 0
            cyv_st64(&h.ewma_bits, 0)
            cyv_st64(&h.ewma_stamp_ns, 0)
            cyv_st64(&h.rq_total, 0)
            cyv_st64(&h.rq_error, 0)
            cyv_st32(&h.consecutive_5xx, 0)
            cyv_st32(&h.consecutive_gateway_failure, 0)
            cyv_st32(&h.consecutive_local_origin_failure, 0)
            cyv_st32(&h.rq_success_interval, 0)
        elif healthy_since_ns is not None:
            cyv_st64(&h.healthy_since_ns, <uint64_t>healthy_since_ns)
        cyv_st32(&h.weight, <uint32_t>weight)
        cyv_st32(&h.priority, <uint32_t>priority)
        cyv_st32(&h.cluster_index, <uint32_t>cluster_index)
        _family_store(h, fam)
        if not same:
            cyv_st32(&h.flags, 0)
        self.bump_membership(cluster_index)

    def clear_host(self, long i):
        """Mark slot i unused (family 0). Bumps membership and health generations."""
        cdef cyv_ht_host *h = self._host(i)
        _family_store(h, 0)
        self.bump_membership(cyv_ld32(&h.cluster_index))

    def host_address(self, long i):
        """(address str, port) of slot i, or None if the slot is unused."""
        cdef cyv_ht_host *h = self._host(i)
        cdef uint8_t fam = cyv_ld8(&h.family)
        if fam == 4:
            return (_socket.inet_ntop(_socket.AF_INET, (<char *>&h.ip[0])[:4]), h.port)
        if fam == 6:
            return (_socket.inet_ntop(_socket.AF_INET6, (<char *>&h.ip[0])[:16]), h.port)
        return None

    def in_use(self, long i):
        return cyv_ld8(&self._host(i).family) != 0

    def weight(self, long i):
        return cyv_ld32(&self._host(i).weight)

    def priority(self, long i):
        return cyv_ld32(&self._host(i).priority)

    def cluster_index(self, long i):
        return cyv_ld32(&self._host(i).cluster_index)

    def membership_generation(self, long c):
        return cyv_ld64(&self._cluster(c).membership_generation)

    def bump_membership(self, long c):
        """Bump cluster c's membership generation, and the health generation (the one counter load
        balancers watch)."""
        cyv_add64_ar(&self._cluster(c).membership_generation, 1)
        self._bump_generation()

    def circuit_breaker_counts(self, long c):
        """(requests, connections, pending, retries) open to cluster c across all workers."""
        cdef cyv_ht_cluster *k = self._cluster(c)
        return (cyv_ldi64(&k.cb_requests), cyv_ldi64(&k.cb_connections), cyv_ldi64(&k.cb_pending),
                cyv_ldi64(&k.cb_retries))

    def circuit_breaker_return(self, long c, long long requests, long long connections,
                               long long pending):
        """Give back units a process held when it died (the master, from the dead worker's
        upstream_rq_active, upstream_cx_active and upstream_rq_pending_active gauges)."""
        cdef cyv_ht_cluster *k = self._cluster(c)
        if requests > 0:
            cyv_addi64(&k.cb_requests, -requests)
        if connections > 0:
            cyv_addi64(&k.cb_connections, -connections)
        if pending > 0:
            cyv_addi64(&k.cb_pending, -pending)

    def host_connections(self, long i):
        """Connections open to host slot i across all workers (per_host_thresholds)."""
        return cyv_ldi64(&self._host(i).cb_connections)

    def lb_healthy_panic(self, long c):
        """Picks made while the chosen priority was in panic (counter, all workers)."""
        return cyv_ld64(&self._cluster(c).lb_healthy_panic)

    # ---- health (the health process is the single writer of flags) ----------------------------

    cpdef uint32_t flags(self, long i) except? 0xffffffff:
        return cyv_ld32(&self._host(i).flags)

    def set_flags(self, long i, uint32_t set_bits=0, uint32_t clear_bits=0):
        """flags |= set_bits, then flags &= ~clear_bits (each one atomic RMW); then bumps the
        health generation. Returns the new flags."""
        cdef cyv_ht_host *h = self._host(i)
        cdef uint32_t f = cyv_ld32(&h.flags)
        if set_bits:
            f = cyv_or32(&h.flags, set_bits)
        if clear_bits:
            f = cyv_and32(&h.flags, ~clear_bits)
        self._bump_generation()
        return f

    cpdef uint64_t health_generation(self):
        return cyv_ld64(&self.hdr.health_generation)

    def bump_health_generation(self):
        self._bump_generation()

    def healthy_since_ns(self, long i):
        return cyv_ld64(&self._host(i).healthy_since_ns)

    def set_healthy_since_ns(self, long i, uint64_t ns):
        """Time of the host's last transition to usable (slow start). Bumps the health generation
        so that load balancers recompute slow-start weights."""
        cyv_st64(&self._host(i).healthy_since_ns, ns)
        self._bump_generation()

    def ejection(self, long i):
        """(ejected_until_ns, ejection_count) of slot i (outlier detection bookkeeping)."""
        cdef cyv_ht_host *h = self._host(i)
        return (cyv_ld64(&h.ejected_until_ns), cyv_ld32(&h.ejection_count))

    def set_ejection(self, long i, uint64_t ejected_until_ns, uint32_t ejection_count):
        cdef cyv_ht_host *h = self._host(i)
        cyv_st64(&h.ejected_until_ns, ejected_until_ns)
        cyv_st32(&h.ejection_count, ejection_count)

    def heartbeat(self, now_ns=None):
        """Health process liveness: store now (CLOCK_MONOTONIC ns, or now_ns)."""
        cyv_st64(&self.hdr.checker_heartbeat_ns,
                 cyv_monotonic_ns() if now_ns is None else <uint64_t>now_ns)

    def heartbeat_ns(self):
        return cyv_ld64(&self.hdr.checker_heartbeat_ns)

    # ---- traffic (workers; atomic) --------------------------------------------------------------

    cpdef long long active(self, long i) except? -1:
        return cyv_ldi64(&self._host(i).active)

    cpdef long long inc_active(self, long i) except? -1:
        """active += 1; returns the new value."""
        return cyv_addi64(&self._host(i).active, 1) + 1

    cpdef long long dec_active(self, long i) except? -1:
        """active -= 1; returns the new value."""
        return cyv_addi64(&self._host(i).active, -1) - 1

    cpdef uint64_t rr_next(self, long c) except? 0xffffffffffffffff:
        """fetch_add(1) on cluster c's round-robin cursor: the value before the increment."""
        return cyv_add64(&self._cluster(c).rr_cursor, 1)

    cpdef int record(self, long i, int status, bint local_origin_failure, long long latency_ns,
                     long long now_ns, double decay_ns) except -1:
        """One completed request to host i (see docs/host-table.md):
        rq_total++; rq_error++ on status >= 500 or local-origin failure;
        consecutive_5xx: ++ on 5xx or local-origin failure, reset otherwise;
        consecutive_gateway_failure: ++ on 502/503/504 or local-origin failure, reset otherwise;
        consecutive_local_origin_failure: ++ on local-origin failure, reset on any upstream answer;
        peak-EWMA of latency (only when latency_ns >= 0): a sample above the average replaces it,
        otherwise ewma = ewma * w + latency * (1 - w) with w = exp(-(now - stamp) / decay_ns).
        """
        cdef cyv_ht_host *h = self._host(i)
        cdef bint is5xx = status >= 500
        cdef bint gw = status == 502 or status == 503 or status == 504
        cdef uint64_t old_bits, new_bits, stamp
        cdef double old, new, w, lat, dt
        cyv_add64(&h.rq_total, 1)
        if is5xx or local_origin_failure:
            cyv_add64(&h.rq_error, 1)
            cyv_add32(&h.consecutive_5xx, 1)
        else:
            cyv_st32(&h.consecutive_5xx, 0)
        if gw or local_origin_failure:
            cyv_add32(&h.consecutive_gateway_failure, 1)
        else:
            cyv_st32(&h.consecutive_gateway_failure, 0)
        if local_origin_failure:
            cyv_add32(&h.consecutive_local_origin_failure, 1)
        else:
            cyv_st32(&h.consecutive_local_origin_failure, 0)
        if latency_ns < 0:
            return 0
        lat = <double>latency_ns
        old_bits = cyv_ld64(&h.ewma_bits)
        while True:
            old = cyv_bits_to_double(old_bits)
            if lat > old:
                new = lat
            else:
                stamp = cyv_ld64(&h.ewma_stamp_ns)
                dt = <double>(now_ns - <long long>stamp) if now_ns > <long long>stamp else 0.0
                w = exp(-dt / decay_ns) if decay_ns > 0 else 0.0
                new = old * w + lat * (1.0 - w)
            new_bits = cyv_double_to_bits(new)
            if cyv_cas64(&h.ewma_bits, &old_bits, new_bits):
                break
            # old_bits now holds the current value: recompute from it
        cyv_st64(&h.ewma_stamp_ns, <uint64_t>now_ns)
        return 0

    def ewma_ns(self, long i):
        """The latency peak-EWMA of host i in ns (0.0: no sample yet)."""
        return cyv_bits_to_double(cyv_ld64(&self._host(i).ewma_bits))

    def counters(self, long i):
        """Traffic counters of host i (admin /clusters, outlier detection)."""
        cdef cyv_ht_host *h = self._host(i)
        return {
            "rq_total": cyv_ld64(&h.rq_total),
            "rq_error": cyv_ld64(&h.rq_error),
            "consecutive_5xx": cyv_ld32(&h.consecutive_5xx),
            "consecutive_gateway_failure": cyv_ld32(&h.consecutive_gateway_failure),
            "consecutive_local_origin_failure": cyv_ld32(&h.consecutive_local_origin_failure),
            "rq_success_interval": cyv_ld32(&h.rq_success_interval),
            "active": cyv_ldi64(&h.active),
            "ewma_ms": cyv_bits_to_double(cyv_ld64(&h.ewma_bits)) / 1e6,
        }

    def reset_consecutive(self, long i, which="all"):
        """Zero one consecutive-failure counter: '5xx', 'gateway_failure', 'local_origin_failure'
        (the 'consecutive_' prefix is accepted too) or 'all'."""
        cdef cyv_ht_host *h = self._host(i)
        w = str(which)
        if w.startswith("consecutive_"):
            w = w[len("consecutive_"):]
        if w not in ("5xx", "gateway_failure", "local_origin_failure", "all"):
            raise ValueError(f"unknown consecutive counter {which!r}")
        if w in ("5xx", "all"):
            cyv_st32(&h.consecutive_5xx, 0)
        if w in ("gateway_failure", "all"):
            cyv_st32(&h.consecutive_gateway_failure, 0)
        if w in ("local_origin_failure", "all"):
            cyv_st32(&h.consecutive_local_origin_failure, 0)

    def copy_state_from(self, long i, HostTable other, long j):
        """On reload: carry host j of `other` (same cluster name, address, port) into slot i of this
        table: flags, healthy_since, ejection and traffic state (not membership fields)."""
        cdef cyv_ht_host *d = self._host(i)
        cdef cyv_ht_host *s = other._host(j)
        cyv_st32(&d.flags, cyv_ld32(&s.flags))
        cyv_st64(&d.healthy_since_ns, cyv_ld64(&s.healthy_since_ns))
        cyv_st64(&d.ejected_until_ns, cyv_ld64(&s.ejected_until_ns))
        cyv_st32(&d.ejection_count, cyv_ld32(&s.ejection_count))
        cyv_addi64(&d.active, cyv_ldi64(&s.active) - cyv_ldi64(&d.active))
        cyv_st64(&d.ewma_bits, cyv_ld64(&s.ewma_bits))
        cyv_st64(&d.ewma_stamp_ns, cyv_ld64(&s.ewma_stamp_ns))
        cyv_st64(&d.rq_total, cyv_ld64(&s.rq_total))
        cyv_st64(&d.rq_error, cyv_ld64(&s.rq_error))
        cyv_st32(&d.consecutive_5xx, cyv_ld32(&s.consecutive_5xx))
        cyv_st32(&d.consecutive_gateway_failure, cyv_ld32(&s.consecutive_gateway_failure))
        cyv_st32(&d.consecutive_local_origin_failure, cyv_ld32(&s.consecutive_local_origin_failure))
        self._bump_generation()


cdef inline void _family_store(cyv_ht_host *h, uint8_t fam) noexcept nogil:
    # family is the slot's in-use marker; a release store of the byte publishes the fields above.
    cyv_st8(&h.family, fam)
