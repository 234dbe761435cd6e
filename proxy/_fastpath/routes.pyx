# cython: language_level=3, boundscheck=False, wraparound=False
"""Route selection at C speed: Envoy's RouteConfiguration once compiled.

proxy/router.py decides everything it can at config load (domains in Envoy's search order,
header edits pre-rendered, timeouts as header lines) and stores the result in these classes.
Per request the connection manager calls `RouteMatcher.route(host, path, head)`: a dict lookup
for the virtual host (cached per Host header), then the first route whose match holds.
"""
import random


cdef class Target:
    """One upstream cluster a route (or one of its weighted clusters) sends to."""

    def __init__(self, cluster, req, resp):
        self.cluster = cluster
        self.req = None if req.empty else req
        self.resp = None if resp.empty else resp


cdef class RouteEntry:
    """One route, compiled (router.RouteTable._entry fills it)."""

    def __init__(self):
        self.single = True
        self.timeout_line = b""
        self.grpc_timeout_max = -1.0
        self.match_prefix_len = -1

    def header_target(self, head):
        """cluster_header: the Target of the cluster the request header names, None when the
        header is missing or names no cluster (-> cluster_not_found_response_code)."""
        name = head.get(self.cluster_header)
        return self.header_targets.get(name) if name is not None else None

    def pick_target(self):
        # Envoy: random value modulo total_weight, walk the cumulative weights (router/config_impl.cc).
        r = random.randrange(self.total_weight)
        for t, upto in zip(self.targets, self.weights):
            if r < upto:
                return t
        return self.targets[-1]


cdef class VirtualHostTable:
    def __init__(self, name, list routes):
        self.name = name
        self.routes = routes

    cdef RouteEntry first_match(self, bytes path, object head):
        cdef tuple r
        for r in self.routes:
            prefix = r[0]
            # a plain case-sensitive prefix without header matchers needs no call
            if prefix is not None:
                if path.startswith(<bytes>prefix):
                    return <RouteEntry>r[2]
            elif r[1](path, head):
                return <RouteEntry>r[2]
        return None

    def match(self, bytes path, head):
        return self.first_match(path, head)


cdef class RouteMatcher:
    """The virtual hosts of one route configuration, by domain (Envoy's search order)."""

    def __init__(self):
        self.exact = {}
        self.suffix = []
        self.prefix = []
        self.default = None
        self.cache = {}

    cdef VirtualHostTable virtual_host_of(self, bytes host):
        cached = self.cache.get(host, False)
        if cached is not False:
            return <VirtualHostTable>cached
        cdef bytes h = host.lower()
        cdef VirtualHostTable vh = self.exact.get(h)
        cdef bytes s
        if vh is None:
            for s, t in self.suffix:
                # "*.foo.com" must not match "foo.com" itself: the wildcard stands for at least one character
                if h.endswith(s) and len(h) > len(s):
                    vh = t
                    break
        if vh is None:
            for s, t in self.prefix:
                if h.startswith(s) and len(h) > len(s):
                    vh = t
                    break
        if vh is None:
            vh = self.default
        if len(self.cache) > 4096:   # Host is client-chosen: bound the cache
            self.cache.clear()
        self.cache[host] = vh
        return vh

    cdef RouteEntry route(self, bytes host, bytes path, object head):
        cdef VirtualHostTable vh = self.virtual_host_of(host)
        if vh is None:
            return None
        return vh.first_match(path, head)

    def virtual_host(self, bytes host):
        return self.virtual_host_of(host)

    def match(self, bytes host, bytes path, head):
        return self.route(host, path, head)
