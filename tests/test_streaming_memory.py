"""Bodies are streamed both ways with flow control: worker memory stays bounded (issue 2, item 5)."""
from __future__ import annotations

import hashlib
import json
import socket
import threading
import time

import psutil

from tests.harness import simple_config

SIZE = 200 * 1024 * 1024
LIMIT = 64 * 1024 * 1024


class RssWatch(threading.Thread):
    def __init__(self, proc: psutil.Process):
        super().__init__(daemon=True)
        self.proc = proc
        self.base = proc.memory_info().rss
        self.peak = self.base
        self.stop = threading.Event()

    def run(self):
        while not self.stop.is_set():
            try:
                self.peak = max(self.peak, self.proc.memory_info().rss)
            except psutil.NoSuchProcess:
                return
            time.sleep(0.02)

    @property
    def growth(self):
        return self.peak - self.base


def test_200mib_download_through_a_slow_client_keeps_worker_memory_bounded(upstreams, proxy):
    (up,) = upstreams(1)
    p = proxy(simple_config([up.port], route={"cluster": "backend", "timeout": "0s"}), workers=1)
    (worker,) = p.workers()
    watch = RssWatch(worker)
    watch.start()
    s = socket.create_connection(("127.0.0.1", p.port), timeout=20)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    s.sendall(b"GET /bytes/%d HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" % SIZE)
    got = len(s.recv(65536))
    time.sleep(1.5)   # a stalled reader: without flow control the worker would buffer it all
    stalled_growth = watch.growth
    total = got
    while True:
        b = s.recv(1 << 20)
        if not b:
            break
        total += len(b)
    s.close()
    watch.stop.set()
    assert total >= SIZE   # head + body
    print(f"download: stalled growth {stalled_growth/2**20:.1f} MiB, peak growth {watch.growth/2**20:.1f} MiB")
    assert stalled_growth < LIMIT
    assert watch.growth < LIMIT, f"worker RSS grew by {watch.growth / 2**20:.1f} MiB"


def test_200mib_upload_to_a_slow_upstream_keeps_worker_memory_bounded(proxy):
    # a raw upstream that reads slowly at first, then drains and answers with the byte count
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    result = {}

    def serve():
        c, _ = srv.accept()
        c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        head = b""
        while b"\r\n\r\n" not in head:
            head += c.recv(65536)
        head, _, rest = head.partition(b"\r\n\r\n")
        n = len(rest)
        time.sleep(1.5)   # stalled upstream
        h = hashlib.sha256(rest)
        while n < SIZE:
            b = c.recv(1 << 20)
            if not b:
                break
            n += len(b)
            h.update(b)
        result["n"] = n
        body = json.dumps({"n": n}).encode()
        c.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body))
        c.close()

    threading.Thread(target=serve, daemon=True).start()
    p = proxy(simple_config([srv.getsockname()[1]], route={"cluster": "backend", "timeout": "0s"}), workers=1)
    (worker,) = p.workers()
    watch = RssWatch(worker)
    watch.start()
    s = socket.create_connection(("127.0.0.1", p.port), timeout=30)
    s.sendall(b"POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % SIZE)
    chunk = b"z" * (1 << 20)
    for _ in range(SIZE // len(chunk)):
        s.sendall(chunk)
    data = b""
    while True:
        b = s.recv(65536)
        if not b:
            break
        data += b
    s.close()
    watch.stop.set()
    srv.close()
    assert data.startswith(b"HTTP/1.1 200")
    assert result["n"] == SIZE
    assert watch.growth < LIMIT, f"worker RSS grew by {watch.growth / 2**20:.1f} MiB"


def test_200mib_chunked_download_arrives_whole(upstreams, proxy):
    (up,) = upstreams(1)
    p = proxy(simple_config([up.port], route={"cluster": "backend", "timeout": "0s"}), workers=1)
    s = socket.create_connection(("127.0.0.1", p.port), timeout=20)
    s.sendall(b"GET /chunked/%d HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" % SIZE)
    total = 0
    while True:
        b = s.recv(1 << 20)
        if not b:
            break
        total += len(b)
    s.close()
    # body plus the chunk framing cyvoy re-encodes with
    assert total > SIZE
