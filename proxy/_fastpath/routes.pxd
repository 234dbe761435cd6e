# The compiled route configuration as C structs, so that the connection manager reads a route
# without Python attribute lookups. Documented in routes.pyx; compiled by proxy/router.py.

cdef class Target:
    cdef public object cluster      # proxy.cluster.Cluster (None for direct responses, redirects)
    cdef public object req          # router.HeaderPlan of the request, None when it edits nothing
    cdef public object resp         # the same for the response


cdef class RouteEntry:
    cdef public int kind            # router.DIRECT, REDIRECT or FORWARD
    cdef public object name
    cdef public object match        # config model.RouteMatch
    cdef public list targets        # [Target] (weighted clusters: several)
    cdef public list weights        # cumulative weights of targets
    cdef public long long total_weight
    cdef public bint single         # one target: no draw
    cdef public double timeout      # route timeout in seconds; 0: none
    cdef public bytes timeout_line  # x-envoy-expected-rq-timeout-ms line, or b""
    cdef public double grpc_timeout_max      # max_stream_duration.grpc_timeout_header_max; < 0: unset
    cdef public double grpc_timeout_offset
    cdef public object prefix_rewrite        # bytes or None
    cdef public Py_ssize_t match_prefix_len  # the prefix match's length; -1: not a prefix match
    cdef public object host_rewrite          # bytes or None
    cdef public bint auto_host_rewrite
    cdef public object hash_fn      # (head, peer) -> 64-bit key or None; None: no hash policy
    cdef public object retry        # router.RetryPlan or None
    cdef public object extras       # router.RouteExtras or None
    cdef public object cluster_header        # bytes or None
    cdef public object not_found_code
    cdef public object header_targets        # {cluster name bytes: Target} for cluster_header
    cdef public object upgrades     # {upgrade type: enabled}
    cdef public object per_filter   # typed_per_filter_config, merged
    cdef public object status       # direct_response
    cdef public object body
    cdef public object redirect     # config model.Redirect


cdef class VirtualHostTable:
    cdef public object name
    cdef public list routes         # [(plain prefix bytes or None, matcher, RouteEntry)]

    cdef RouteEntry first_match(self, bytes path, object head)


cdef class RouteMatcher:
    cdef public dict exact          # domain -> VirtualHostTable
    cdef public list suffix         # [(b".example.com", table)], longest first
    cdef public list prefix         # [(b"example.", table)], longest first
    cdef public VirtualHostTable default
    cdef dict cache                 # Host header as sent -> VirtualHostTable or None

    cdef VirtualHostTable virtual_host_of(self, bytes host)
    cdef RouteEntry route(self, bytes host, bytes path, object head)
