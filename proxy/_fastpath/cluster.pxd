# What the connection manager reads of a cluster and of its hosts on every request, as C
# fields. Documented in cluster.pyx; the Python face is proxy/cluster.py.
from proxy._fastpath.hosttable cimport HostTable
from proxy._fastpath.lb cimport LB


cdef class HostBase:
    cdef public long slot           # the host's slot in the shared host table
    cdef public list idle           # idle upstream connections, most recently used last
    cdef public list idle_h2        # idle stream slots on HTTP/2 connections
    cdef public object waiting      # deque of (Downstream, token) waiting for a connection, FIFO
    cdef public long n_conns        # this worker's connections to the host: connecting, busy or idle
    cdef public object host_header  # what auto_host_rewrite puts in Host (bytes), or None


cdef class ClusterBase:
    cdef public str name
    cdef public HostTable table
    cdef public int index           # the cluster's record in the host table
    cdef public long first          # its first host slot
    cdef public long n_slots
    cdef public LB lb
    cdef public list by_slot        # HostBase (or None) per slot, from `first`
    cdef public object stats        # connection.ClusterStats of this worker
    cdef public double ewma_decay_ns
    cdef public object h2           # http2.upstream.H2Pool, or None: HTTP/1.1 to the hosts
    cdef public bint h2_always      # HTTP/2 for every request, not only for HTTP/2 clients'
    cdef public double connect_timeout
    cdef public long long buffer_limit

    cdef HostBase pick_host(self, object hash_key)
