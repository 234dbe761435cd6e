"""proxy.health.process: the health-check process, forked as the master does, against real
upstreams, writing a real shared-memory HostTable that this (parent) process reads.

Intervals are 0.1 s; each test asserts the flag appears within the bound Envoy's timing gives
(interval * unhealthy_threshold + one interval, plus scheduling slack) and clears after
healthy_threshold passes.
"""
from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from proxy.config.loader import build_bootstrap
from proxy.health import process

HostTable = pytest.importorskip("proxy._fastpath.hosttable").HostTable

FAILED_ACTIVE_HC = 0x01
FAILED_OUTLIER = 0x02
PENDING_ACTIVE_HC = 0x04
DNS_REMOVED = 0x20
UNUSABLE = 0x01 | 0x02 | 0x04 | 0x10 | 0x20
INTERVAL = 0.1
SLACK = 0.6          # scheduling slack for loaded CI machines


def endpoint(port: int, address: str = "127.0.0.1") -> dict:
    return {"endpoint": {"address": {"socket_address": {"address": address,
                                                        "port_value": port}}}}


def cluster(name: str, ports: list[int], hc: dict, **extra) -> dict:
    c = {"name": name, "connect_timeout": "1s", "health_checks": [hc] if hc else [],
         "load_assignment": {"cluster_name": name,
                             "endpoints": [{"lb_endpoints": [endpoint(p) for p in ports]}]}}
    c.update(extra)
    return c


def health_check(unhealthy: int = 3, healthy: int = 2, **kind) -> dict:
    return {"timeout": "0.3s", "interval": f"{INTERVAL}s", "unhealthy_threshold": unhealthy,
            "healthy_threshold": healthy, **kind}


def make_table(bootstrap, dns_slots: int = 4) -> HostTable:
    """Lay the clusters out as the master does: bootstrap order, one slot per static endpoint, a
    block of empty slots per DNS cluster; hosts of clusters with health checks start PENDING."""
    blocks = []
    first = 0
    for c in bootstrap.clusters.values():
        n = dns_slots if c.type != "STATIC" else len(c.endpoints)
        blocks.append((c, first, n))
        first += n
    table = HostTable(first, len(blocks))
    for index, (c, first, n) in enumerate(blocks):
        table.set_cluster(index, first, n)
        if c.type == "STATIC":
            for k, ep in enumerate(c.endpoints):
                table.set_host(first + k, index, ep.address, ep.port, ep.weight, ep.priority)
                if c.health_checks:
                    table.set_flags(first + k, PENDING_ACTIVE_HC, 0)
    return table


class HealthChild:
    """process.run(bootstrap, table) in a forked child, as the master runs it."""

    def __init__(self, bootstrap, table):
        self.table = table
        self.pid = os.fork()
        if self.pid == 0:
            code = 1
            try:
                code = process.run(bootstrap, table)
            except BaseException:
                import traceback
                traceback.print_exc()
            finally:
                os._exit(code)

    def stop(self, timeout: float = 5.0) -> int:
        os.kill(self.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                return os.waitstatus_to_exitcode(status)
            time.sleep(0.01)
        os.kill(self.pid, signal.SIGKILL)
        os.waitpid(self.pid, 0)
        raise AssertionError("the health process did not exit on SIGTERM")


@pytest.fixture
def health():
    children = []

    def start(bootstrap, table):
        child = HealthChild(bootstrap, table)
        children.append(child)
        return child

    yield start
    for child in children:
        try:
            os.kill(child.pid, signal.SIGKILL)
            os.waitpid(child.pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass


def wait_for(predicate, timeout: float, what: str) -> float:
    """Seconds until predicate() held; fails after timeout."""
    t0 = time.monotonic()
    while True:
        if predicate():
            return time.monotonic() - t0
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"timed out after {timeout:.2f}s waiting for {what}")
        time.sleep(0.005)


def usable(table, i) -> bool:
    return table.flags(i) & UNUSABLE == 0


def failed(table, i) -> bool:
    return bool(table.flags(i) & FAILED_ACTIVE_HC)


# --- HTTP ------------------------------------------------------------------------------------

def test_http_health_checks_mark_and_clear_hosts(upstreams, health):
    up0, up1 = upstreams(2)
    dead = socket.socket()
    dead.bind(("127.0.0.1", 0))
    dead_port = dead.getsockname()[1]
    dead.close()
    boot = build_bootstrap({"static_resources": {"clusters": [cluster(
        "web", [up0.port, up1.port, dead_port],
        health_check(unhealthy=3, healthy=2, http_health_check={"path": "/health"}))]}})
    table = make_table(boot)
    assert all(table.flags(i) & PENDING_ACTIVE_HC for i in range(3))
    child = health(boot, table)

    # a new host is healthy after its first pass; the first round is spread over one interval
    wait_for(lambda: usable(table, 0) and usable(table, 1), INTERVAL + SLACK, "first passes")
    assert table.healthy_since_ns(0) > 0 and table.healthy_since_ns(1) > 0
    # a host whose first check fails leaves PENDING and stays failed
    wait_for(lambda: table.flags(2) & (FAILED_ACTIVE_HC | PENDING_ACTIVE_HC) == FAILED_ACTIVE_HC,
             INTERVAL + SLACK, "dead host failed, not pending")

    # an unexpected status fails the host at once (no threshold)
    up1.health_status = 503
    took = wait_for(lambda: failed(table, 1), INTERVAL * 3 + INTERVAL + SLACK, "503 -> failed")
    assert took < 2 * INTERVAL + SLACK
    assert usable(table, 0)

    # back to 200: healthy again after healthy_threshold (2) consecutive passes
    up1.health_status = 200
    since = table.healthy_since_ns(1)
    took = wait_for(lambda: usable(table, 1), 2 * INTERVAL + INTERVAL + SLACK, "200 -> healthy")
    assert took >= INTERVAL * 0.8          # two passes, one interval apart
    assert table.healthy_since_ns(1) > since

    # what the host saw: HTTP/1.1 GET /health, Host = cluster name, cyvoy's user agent, over a
    # kept connection
    reqs = up0.requests
    assert len(reqs) >= 3 and all(r["path"] == "/health" and r["method"] == "GET" for r in reqs)
    headers = {k.lower(): v for k, v in reqs[0]["headers"]}
    assert headers["host"] == "web" and headers["user-agent"] == "cyvoy/HC"
    assert up0.connections == 1

    assert abs(time.monotonic_ns() - table.heartbeat_ns()) < 2e9
    assert child.stop() == 0


def test_endpoint_health_check_port_is_probed_instead_of_the_traffic_port(upstreams, health):
    (up,) = upstreams(1)
    dead = socket.socket()
    dead.bind(("127.0.0.1", 0))
    dead_port = dead.getsockname()[1]
    dead.close()
    c = cluster("alt", [dead_port], health_check(http_health_check={"path": "/health"}))
    c["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"][
        "health_check_config"] = {"port_value": up.port}
    boot = build_bootstrap({"static_resources": {"clusters": [c]}})
    table = make_table(boot)
    child = health(boot, table)
    wait_for(lambda: usable(table, 0), INTERVAL + SLACK, "healthy through the HC port")
    assert table.host_address(0) == ("127.0.0.1", dead_port)
    assert up.requests and up.requests[0]["path"] == "/health"
    assert child.stop() == 0


# --- TCP -------------------------------------------------------------------------------------

class PingServer:
    """Answers "ping" with "pong" on a fixed port; stop() closes the listener and every
    connection (connection refused from then on), start() listens again on the same port."""

    def __init__(self):
        self.port = 0
        self.conns: list[socket.socket] = []
        self.sock = None
        self.start()

    def start(self):
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", self.port))
        s.listen(16)
        self.port = s.getsockname()[1]
        self.sock = s
        threading.Thread(target=self._accept, args=(s,), daemon=True).start()

    def _accept(self, s):
        while True:
            try:
                conn, _ = s.accept()
            except OSError:
                return
            self.conns.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn):
        while True:
            try:
                data = conn.recv(4096)
                if not data:
                    return
                if b"ping" in data:
                    conn.sendall(b"pong")
            except OSError:
                return

    def stop(self):
        try:
            # shutdown() wakes the thread blocked in accept(); close() alone would leave the
            # socket listening until accept() returns
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        for c in self.conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            c.close()
        self.conns.clear()


def test_tcp_health_check_network_failures_count_to_the_threshold(health):
    srv = PingServer()
    try:
        boot = build_bootstrap({"static_resources": {"clusters": [cluster(
            "tcp", [srv.port], health_check(unhealthy=3, healthy=2, tcp_health_check={
                "send": {"text": "70696e67"}, "receive": [{"text": "706f6e67"}]}))]}})
        table = make_table(boot)
        child = health(boot, table)
        wait_for(lambda: usable(table, 0), INTERVAL + SLACK, "first pass")

        srv.stop()                        # connection refused from now on
        took = wait_for(lambda: failed(table, 0), INTERVAL * 3 + INTERVAL + SLACK,
                        "unhealthy after 3 network failures")
        assert took >= 2 * INTERVAL * 0.75     # three failures, an interval apart

        srv.start()
        took = wait_for(lambda: usable(table, 0), INTERVAL * 2 + INTERVAL + SLACK,
                        "healthy after 2 passes")
        assert took >= INTERVAL * 0.8
        assert child.stop() == 0
    finally:
        srv.stop()


# --- gRPC ------------------------------------------------------------------------------------

GRPC_SERVER = textwrap.dedent("""
    import sys
    from concurrent import futures
    import grpc
    from grpc_health.v1 import health, health_pb2, health_pb2_grpc
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    servicer.set("svc", health_pb2.HealthCheckResponse.SERVING)
    print(port, flush=True)
    for line in sys.stdin:
        servicer.set("svc", getattr(health_pb2.HealthCheckResponse, line.strip()))
        print("ok", flush=True)
    server.stop(0)
""")


def test_grpc_health_check_follows_the_serving_status(health):
    pytest.importorskip("grpc_health.v1.health")
    # The server runs in its own interpreter: grpcio must not be initialized in a process that
    # forks (this one forks the health process, which is a grpcio client).
    srv = subprocess.Popen([sys.executable, "-c", GRPC_SERVER], stdin=subprocess.PIPE,
                           stdout=subprocess.PIPE, text=True)
    try:
        port = int(srv.stdout.readline())

        def set_status(name):
            srv.stdin.write(name + "\n")
            srv.stdin.flush()
            assert srv.stdout.readline().strip() == "ok"

        boot = build_bootstrap({"static_resources": {"clusters": [cluster(
            "grpc", [port], health_check(unhealthy=3, healthy=2, grpc_health_check={
                "service_name": "svc"}))]}})
        table = make_table(boot)
        child = health(boot, table)
        wait_for(lambda: usable(table, 0), INTERVAL + 2 * SLACK, "SERVING -> healthy")

        set_status("NOT_SERVING")         # an answer that is not SERVING fails at once
        took = wait_for(lambda: failed(table, 0), INTERVAL * 3 + INTERVAL + SLACK,
                        "NOT_SERVING -> failed")
        assert took < 2 * INTERVAL + SLACK

        set_status("SERVING")
        took = wait_for(lambda: usable(table, 0), INTERVAL * 2 + INTERVAL + SLACK,
                        "SERVING -> healthy after 2 passes")
        assert took >= INTERVAL * 0.8
        assert child.stop() == 0
    finally:
        srv.stdin.close()
        try:
            srv.wait(5)
        except subprocess.TimeoutExpired:
            srv.kill()
            srv.wait()
        srv.stdout.close()


# --- DNS -------------------------------------------------------------------------------------

def test_dns_cluster_slots_are_filled_and_health_checked(upstreams, health):
    (up,) = upstreams(1)
    boot = build_bootstrap({"static_resources": {"clusters": [cluster(
        "named", [], health_check(http_health_check={"path": "/health"}),
        type="STRICT_DNS", dns_lookup_family="V4_ONLY", dns_refresh_rate="0.2s",
        load_assignment={"cluster_name": "named", "endpoints": [{"lb_endpoints": [
            endpoint(up.port, "localhost")]}]})]}})
    table = make_table(boot, dns_slots=3)
    assert all(table.host_address(i) is None for i in range(3))
    child = health(boot, table)
    wait_for(lambda: table.host_address(0) == ("127.0.0.1", up.port), 3.0, "slot filled")
    wait_for(lambda: usable(table, 0), INTERVAL + SLACK, "new DNS host healthy")
    assert table.host_address(1) is None and table.host_address(2) is None
    assert child.stop() == 0


def test_dns_rewrites_keep_slots_of_addresses_that_stay_and_the_last_good_set():
    boot = build_bootstrap({"static_resources": {"clusters": [cluster(
        "named", [], health_check(http_health_check={"path": "/health"}),
        type="STRICT_DNS", dns_refresh_rate="60s",
        load_assignment={"cluster_name": "named", "endpoints": [{"lb_endpoints": [
            endpoint(8080, "svc.example")]}]})]}})
    table = make_table(boot, dns_slots=2)
    hp = process.HealthProcess(boot, table)
    (c,) = hp.clusters
    ep = boot.clusters["named"].endpoints[0]

    async def scenario():
        assert hp._apply_dns(c, [("10.0.0.1", 8080, ep), ("10.0.0.2", 8080, ep)])
        assert [table.host_address(i) for i in range(2)] == [("10.0.0.1", 8080),
                                                             ("10.0.0.2", 8080)]
        assert table.flags(0) & (FAILED_ACTIVE_HC | PENDING_ACTIVE_HC) == \
            FAILED_ACTIVE_HC | PENDING_ACTIVE_HC
        table.set_flags(1, 0, 0xff)           # pretend 10.0.0.2 passed
        gen = table.membership_generation(0)
        # 10.0.0.1 leaves, 10.0.0.3 comes: .2 keeps slot 1 and its state, .3 takes slot 0
        assert hp._apply_dns(c, [("10.0.0.2", 8080, ep), ("10.0.0.3", 8080, ep)])
        assert table.host_address(1) == ("10.0.0.2", 8080) and usable(table, 1)
        assert table.host_address(0) == ("10.0.0.3", 8080)
        assert table.flags(0) & PENDING_ACTIVE_HC
        assert table.membership_generation(0) > gen
        # more addresses than slots: the extra one is dropped
        hp._apply_dns(c, [("10.0.0.2", 8080, ep), ("10.0.0.3", 8080, ep),
                          ("10.0.0.4", 8080, ep)])
        assert {table.host_address(i) for i in range(2)} == {("10.0.0.2", 8080),
                                                            ("10.0.0.3", 8080)}
        # a failed resolution changes nothing
        loop = asyncio.get_running_loop()

        async def fail(*a, **kw):
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        loop.getaddrinfo = fail
        assert await hp._resolve(c) is None
        assert table.host_address(1) == ("10.0.0.2", 8080)
        # gone entirely: slots cleared, flags say DNS_REMOVED
        assert hp._apply_dns(c, [])
        assert table.host_address(0) is None and table.host_address(1) is None
        assert table.flags(0) & DNS_REMOVED
        await hp.stop()

    asyncio.run(scenario())


# --- outlier detection hook -------------------------------------------------------------------

def test_outlier_detector_runs_in_the_health_process(upstreams, health):
    pytest.importorskip("proxy.health.outlier")
    up0, up1 = upstreams(2)
    boot = build_bootstrap({"static_resources": {"clusters": [cluster(
        "od", [up0.port, up1.port], None,
        outlier_detection={"interval": "0.1s", "consecutive_5xx": 3,
                           "max_ejection_percent": 100, "base_ejection_time": "30s"})]}})
    table = make_table(boot)
    child = health(boot, table)
    time.sleep(0.05)
    now = time.monotonic_ns()
    for _ in range(3):
        table.record(1, 503, False, 1_000_000, now, 1e9)
    wait_for(lambda: table.flags(1) & FAILED_OUTLIER, 1.0 + SLACK, "host 1 ejected")
    assert not table.flags(0) & FAILED_OUTLIER
    assert child.stop() == 0


def test_counters_per_cluster():
    boot = build_bootstrap({"static_resources": {"clusters": [
        cluster("a", [1], health_check(http_health_check={"path": "/h"})),
        cluster("b", [2], None)]}})
    hp = process.HealthProcess(boot, make_table(boot))
    assert hp.counters == {"a": {"attempt": 0, "success": 0, "failure": 0,
                                 "network_failure": 0}}


def test_initial_jitter_written_or_not_is_read_from_the_document():
    hc = health_check(http_health_check={"path": "/h"})
    boot = build_bootstrap({"static_resources": {"clusters": [
        cluster("a", [1], hc), cluster("b", [2], dict(hc, initial_jitter="0s"))]}})
    assert process._explicit_initial_jitter(boot, "a", 1) == [False]
    assert process._explicit_initial_jitter(boot, "b", 1) == [True]
