"""Per-request user-space cost of cyvoy's Python glue, without sockets.

Drives one Downstream/Upstream pair through N keep-alive exchanges with transports that
swallow writes, so the figure is the connection manager's own work per request (parse, route,
pick, header building, response head): what `make bench` cannot separate from the kernel.
    .venv/bin/python bench/micro_request.py [--access-log]
--access-log adds an Envoy file access log in the default format (to a temporary file).
"""
import os
import sys
import tempfile
import time

import uvloop

from proxy.config import load_file
from proxy.connection_manager import Downstream, Hcm
from proxy.router import RouteTable
from proxy.cluster import Cluster
from proxy._fastpath.connection import Upstream
from pathlib import Path

REQ = (b"GET /index.html HTTP/1.1\r\nHost: bench.local\r\nUser-Agent: wrk\r\nAccept: */*\r\n\r\n")
RESP = b"HTTP/1.1 200 OK\r\nServer: nginx\r\nDate: Tue, 24 Nov 2026 19:00:00 GMT\r\nContent-Type: text/plain\r\nContent-Length: 13\r\nConnection: keep-alive\r\n\r\nhello, world\n"


class NullTransport:
    def __init__(self):
        self.n = 0

    def write(self, data):
        self.n += 1

    def get_extra_info(self, name):
        return ("127.0.0.1", 5555)

    def pause_reading(self):
        pass

    def resume_reading(self):
        pass

    def close(self):
        pass

    def abort(self):
        pass


class FakeWorker:
    def __init__(self, loop):
        self.loop = loop
        self.loop_time = loop.time
        self.now = loop.time()
        self.conns = set()
        self.active = set()
        self.draining = False
        self.wall_offset = time.time() - loop.time()

    def count(self, name):
        pass


def host_cluster_stats(clusters):
    return next(iter(clusters.values())).stats


def main(n=200_000, access_log=None):
    from proxy.config import load_text
    text = (Path(__file__).parent / "peers" / "cyvoy.yaml").read_text()
    if access_log:
        text = text.replace("          stat_prefix: bench\n", (
            "          stat_prefix: bench\n"
            "          access_log:\n"
            "          - name: envoy.access_loggers.file\n"
            "            typed_config:\n"
            '              "@type": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog\n'
            f"              path: {access_log}\n"), 1)
    text = text.replace("{{PROXY_PORT}}", "1").replace("{{UPSTREAM_PORT_1}}", "2").replace("{{UPSTREAM_PORT_2}}", "3")
    cfg = load_text(text)
    loop = uvloop.new_event_loop()
    w = FakeWorker(loop)
    from proxy import cluster_manager
    table, layout = cluster_manager.build_table(cfg)
    from proxy._fastpath.connection import ClusterStats, HcmStats
    from proxy.stats import StatRegistry
    registry = StatRegistry.for_bootstrap(cfg)
    slot_stats = registry.make_store(4).view(0)
    clusters = {name: Cluster(c, table, layout.clusters[name]) for name, c in cfg.clusters.items()}
    for name, c in clusters.items():
        c.stats = ClusterStats(slot_stats, registry.cluster_indexes(name))
    lc = cfg.listeners[0]
    hcm = Hcm(lc.hcm, RouteTable(lc.hcm.route_config, clusters), False)
    hcm.stats = HcmStats(slot_stats, registry.http_indexes(lc.hcm.stat_prefix), registry.listener_indexes_for(lc))
    ds = Downstream(w, hcm)
    ds.connection_made(NullTransport())
    for host in next(iter(clusters.values())).hosts:
        up = Upstream(host, w, host_cluster_stats(clusters))
        up.connection_made(NullTransport())
        host.idle.append(up)
    t0 = time.perf_counter()
    for _ in range(n):
        ds.data_received(REQ)
        ds.up.data_received(RESP)
    dt = time.perf_counter() - t0
    what = " with the default access log" if access_log else ""
    print(f"{dt / n * 1e6:.2f} us per request of Python glue (parse, route, pick, headers, response){what}")
    if hcm.access_logs is not None:
        hcm.access_logs.close()


if __name__ == "__main__":
    if "--access-log" in sys.argv[1:]:
        with tempfile.TemporaryDirectory() as d:
            main(access_log=os.path.join(d, "access.log"))
    else:
        main()
