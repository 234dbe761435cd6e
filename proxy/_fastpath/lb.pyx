# cython: language_level=3, boundscheck=False, wraparound=False
"""Endpoint selection (Envoy's `lb_policy`) for one priority set of hosts.

This issue ships ROUND_ROBIN; the cluster-management issue adds the other policies, the shared
cursor and the health table. Hosts are opaque Python objects; the picker only returns one of them.
"""

cdef class RoundRobin:
    """ROUND_ROBIN over hosts; weighted when `load_balancing_weight`s differ.

    Unweighted: a plain cursor. Weighted: the "smooth" weighted round robin (each pick adds every
    host's weight to its credit and takes the host with the most credit, which then pays the total),
    so a host of weight 3 among weights 3,1 is picked A A B A, never in one burst of its whole
    weight. Envoy uses an EDF scheduler with the same long-run proportions
    (source/common/upstream/load_balancer_impl.cc); both give exact proportions over a cycle.
    """

    def __cinit__(self, hosts, weights=None):
        self.hosts = tuple(hosts)
        self.n = len(self.hosts)
        self.cursor = 0
        self.weighted = False
        self.total = 0
        self.weights = []
        self.credits = []
        if weights is not None:
            ws = [int(w) for w in weights]
            if len(ws) != self.n:
                raise ValueError("one weight per host")
            if self.n and min(ws) != max(ws):
                self.weighted = True
                self.weights = ws
                self.credits = [0] * self.n
                self.total = sum(ws)

    cpdef object pick(self):
        cdef Py_ssize_t i, best
        cdef long c, bestc
        if self.n == 0:
            return None
        if not self.weighted:
            i = self.cursor
            self.cursor = i + 1 if i + 1 < self.n else 0
            return self.hosts[i]
        best = 0
        bestc = -(1 << 62)
        for i in range(self.n):
            c = <long>self.credits[i] + <long>self.weights[i]
            self.credits[i] = c
            if c > bestc:
                bestc = c
                best = i
        self.credits[best] = bestc - self.total
        return self.hosts[best]

    def __len__(self):
        return self.n
