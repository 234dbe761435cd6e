# cython: language_level=3, boundscheck=False, wraparound=False
"""The per-request part of a cluster: its load balancer's pick, and a host's connection pool.

proxy/cluster.py builds these (hosts from the shared host table, the load balancer from the
config) and keeps them current; the connection manager reads their fields as C struct members.
"""
import collections


cdef class HostBase:
    def __init__(self, long slot):
        self.slot = slot
        self.idle = []
        self.idle_h2 = []
        self.waiting = collections.deque()
        self.n_conns = 0
        self.host_header = None


cdef class ClusterBase:
    cdef HostBase pick_host(self, object hash_key):
        """The host for a request (hash_key: the route's hash, or None), None when no host is
        available (Envoy: no healthy upstream)."""
        cdef int s
        if hash_key is None:
            s = self.lb.pick(0, False)
        else:
            s = self.lb.pick(hash_key, True)
        if s < 0:
            return None
        return <HostBase>self.by_slot[s - self.first]

    def pick(self, hash_key=0, bint has_hash=False):
        return self.pick_host(hash_key if has_hash else None)
