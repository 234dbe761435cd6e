"""Connection limits (issue 7, item 4): the envoy.filters.network.connection_limit network filter and
the overload manager's envoy.resource_monitors.global_downstream_max_connections, counted across
workers; refused connections never harm the open ones."""
from __future__ import annotations

import os
import signal
import socket
import time

from tests.harness import cluster, hcm, listener, simple_config, wait_for
from tests.test_admin_live import admin_port, call, stat, with_admin

CL_TYPE = "type.googleapis.com/envoy.extensions.filters.network.connection_limit.v3.ConnectionLimit"
DC_TYPE = ("type.googleapis.com/envoy.extensions.resource_monitors.downstream_connections.v3."
           "DownstreamConnectionsConfig")


def with_connection_limit(cfg, max_connections, delay=None, index=0):
    chain = cfg["static_resources"]["listeners"][index]["filter_chains"][0]
    tc = {"@type": CL_TYPE, "stat_prefix": "edge", "max_connections": max_connections}
    if delay:
        tc["delay"] = delay
    chain["filters"].insert(0, {"name": "envoy.filters.network.connection_limit", "typed_config": tc})
    return cfg


def with_global_limit(cfg, n):
    cfg["overload_manager"] = {"resource_monitors": [{
        "name": "envoy.resource_monitors.global_downstream_max_connections",
        "typed_config": {"@type": DC_TYPE, "max_active_downstream_connections": n}}]}
    return cfg


def open_conn(port) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    return s


def exchange(s: socket.socket) -> bytes:
    """One keep-alive GET on an open connection; b"" when the proxy closed it."""
    try:
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        data = b""
        while b"\r\n\r\n" not in data or not data.endswith(b"up0"):
            chunk = s.recv(65536)
            if not chunk:
                return data
            data += chunk
        return data
    except (ConnectionResetError, BrokenPipeError):
        return b""


def test_connection_limit_refuses_beyond_max_across_workers_and_spares_open_ones(upstreams, proxy):
    (a,) = upstreams(1)
    p = proxy(with_admin(with_connection_limit(simple_config([a.port]), 3)), workers=2)
    held = [open_conn(p.port) for _ in range(3)]
    assert all(exchange(s).startswith(b"HTTP/1.1 200") for s in held)
    extra = open_conn(p.port)
    assert exchange(extra) == b""                     # closed unanswered
    assert all(exchange(s).startswith(b"HTTP/1.1 200") for s in held)   # the open ones go on
    text = call(admin_port(p), "/stats")[1]
    assert stat(text, "connection_limit.edge.limited_connections") == 1
    assert stat(text, "connection_limit.edge.active_connections") == 3
    held.pop().close()
    assert wait_for(lambda: exchange(open_conn(p.port)).startswith(b"HTTP/1.1 200"), 5)


def test_connection_limit_delay_holds_the_refused_connection_before_closing_it(upstreams, proxy):
    (a,) = upstreams(1)
    p = proxy(with_connection_limit(simple_config([a.port]), 1, delay="0.5s"), workers=1)
    first = open_conn(p.port)
    assert exchange(first).startswith(b"HTTP/1.1 200")
    t0 = time.monotonic()
    s = open_conn(p.port)
    s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    try:
        assert s.recv(100) == b""
    except ConnectionResetError:
        pass
    assert time.monotonic() - t0 >= 0.45      # (the event loop clock is read once per iteration)
    assert exchange(first).startswith(b"HTTP/1.1 200")


def two_listeners(port, ignore_second=False):
    vh = [{"name": "all", "domains": ["*"], "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "backend"}}]}]
    second = listener("second", 0, hcm(vh))
    second["ignore_global_conn_limit"] = ignore_second
    return {"static_resources": {"listeners": [listener("first", 0, hcm(vh)), second],
                                 "clusters": [cluster("backend", [port])]}}


def test_global_downstream_max_connections_counts_every_listener_and_worker(upstreams, proxy):
    (a,) = upstreams(1)
    p = proxy(with_admin(with_global_limit(two_listeners(a.port), 2)), workers=2)
    first, second = p.listener_ports["first"], p.listener_ports["second"]
    held = [open_conn(first), open_conn(second)]
    assert all(exchange(s).startswith(b"HTTP/1.1 200") for s in held)
    assert exchange(open_conn(second)) == b""
    assert exchange(open_conn(first)) == b""
    assert all(exchange(s).startswith(b"HTTP/1.1 200") for s in held)
    text = call(admin_port(p), "/stats")[1]
    overflow = sum(int(line.rsplit(": ", 1)[1]) for line in text.splitlines()
                   if line.endswith(tuple(f": {i}" for i in range(10))) and "downstream_global_cx_overflow" in line)
    assert overflow == 2


def test_a_listener_with_ignore_global_conn_limit_is_not_counted(upstreams, proxy):
    (a,) = upstreams(1)
    p = proxy(with_global_limit(two_listeners(a.port, ignore_second=True), 1), workers=1)
    first, second = p.listener_ports["first"], p.listener_ports["second"]
    held = [open_conn(first)]
    assert exchange(held[0]).startswith(b"HTTP/1.1 200")
    more = [open_conn(second) for _ in range(3)]
    assert all(exchange(s).startswith(b"HTTP/1.1 200") for s in more)
    assert exchange(open_conn(first)) == b""


def test_a_killed_workers_connections_are_given_back(upstreams, proxy):
    (a,) = upstreams(1)
    p = proxy(with_connection_limit(simple_config([a.port]), 1), workers=1)
    s = open_conn(p.port)
    assert exchange(s).startswith(b"HTTP/1.1 200")
    (w,) = p.workers()
    os.kill(w.pid, signal.SIGKILL)
    assert wait_for(lambda: [x.pid for x in p.workers()] not in ([], [w.pid]), 10)   # respawned
    s.close()
    # without giving back the dead worker's count, the limit of 1 would stay used up forever
    assert wait_for(lambda: exchange(open_conn(p.port)).startswith(b"HTTP/1.1 200"), 10)
