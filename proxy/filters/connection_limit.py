"""Connection limits at accept: the envoy.filters.network.connection_limit network filter
(docs/root/configuration/listeners/network_filters/connection_limit_filter.rst) and the overload
manager's envoy.resource_monitors.global_downstream_max_connections.

Both count open client connections across all workers in shared memory (the master's
SharedFilterState), so a limit is the proxy's, not a worker's. Over the global limit a new
connection is closed at once and counted in listener.<address>.downstream_global_cx_overflow
(Envoy's listener rejects it). Over a filter's max_connections the connection is not read and is
closed after the filter's `delay` (at once without one), counted in
connection_limit.<stat_prefix>.limited_connections. Connections already open are never touched.
"""
from __future__ import annotations

GLOBAL, FILTER = 1, 2      # what a connection holds (Downstream.held bits)


def _pause(transport) -> None:
    if not transport.is_closing():
        transport.pause_reading()


class ConnectionGuard:
    """The limits one listener's accepted connections go through; None when it has none."""
    __slots__ = ("shared", "global_limit", "limit", "stats", "i_global_overflow", "i_limited",
                 "i_active", "loop")

    @classmethod
    def for_listener(cls, lst, worker, shared, listener_indexes):
        global_limit = shared.global_limit if not lst.ignore_global_conn_limit else None
        if global_limit is None and lst.connection_limit is None:
            return None
        g = cls()
        g.shared, g.global_limit, g.limit = shared, global_limit, lst.connection_limit
        g.stats, g.loop = worker.slot_stats, worker.loop
        g.i_global_overflow = listener_indexes.downstream_global_cx_overflow
        if g.limit is not None:
            root = f"connection_limit.{g.limit.stat_prefix}."
            g.i_limited = worker.registry.counter(root + "limited_connections")
            g.i_active = worker.registry.gauge(root + "active_connections")
        return g

    def admit(self, transport) -> int:
        """The units the new connection holds (GLOBAL | FILTER), or -1 when it is refused (its
        close is already arranged)."""
        held = 0
        if self.global_limit is not None:
            if not self.shared.global_connections.acquire(0, self.global_limit):
                self.stats.inc(self.i_global_overflow)
                transport.abort()
                return -1
            held = GLOBAL
        limit = self.limit
        if limit is not None:
            if not self.shared.connections.acquire(limit.counter, limit.max_connections):
                self.stats.inc(self.i_limited)
                if held:
                    self.shared.global_connections.release(0)
                # (uvloop starts reading after connection_made: pause once it has)
                self.loop.call_soon(_pause, transport)
                if limit.delay:
                    # a client that retries at once gains nothing (the filter's "slow rejection")
                    self.loop.call_later(limit.delay, transport.abort)
                else:
                    transport.abort()
                return -1
            self.stats.gauge_add(self.i_active, 1)
            held |= FILTER
        return held

    def release(self, held: int) -> None:
        if held & GLOBAL:
            self.shared.global_connections.release(0)
        if held & FILTER:
            self.shared.connections.release(self.limit.counter)
            self.stats.gauge_add(self.i_active, -1)
