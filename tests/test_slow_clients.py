"""Slow and greedy clients (issue 7, item 4): header tricklers get 408 at the header deadline
while a normal client is served, and a client that never reads its response is cut off after
the stream idle timeout with bounded worker memory. (The p99 delay a normal client sees beside
1,000 tricklers is a speed figure: bench/slow_clients.py measures it.)"""
from __future__ import annotations

import asyncio
import http.client
import socket
import time

from tests.harness import simple_config, wait_for
from tests.test_streaming_memory import LIMIT, SIZE, RssWatch

TRICKLERS = 1000


async def _trickle(port: int, deadline: float, out: list) -> None:
    try:
        r, w = await asyncio.open_connection("127.0.0.1", port)
    except OSError as e:
        out.append(("connect", repr(e)))
        return
    head = b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"y" * 200
    t0 = time.monotonic()
    try:
        for i in range(len(head)):
            w.write(head[i:i + 1])                  # one byte a second
            try:
                data = await asyncio.wait_for(r.read(4096), 1.0)
            except asyncio.TimeoutError:
                continue
            out.append(("answer", data[:12], time.monotonic() - t0))
            return
            if time.monotonic() > deadline:
                break
        out.append(("no answer", b"", time.monotonic() - t0))
    except ConnectionError as e:
        out.append(("reset", repr(e), time.monotonic() - t0))
    finally:
        w.close()


def test_header_tricklers_get_408_at_the_deadline_while_a_normal_client_is_served(upstreams, proxy):
    (a,) = upstreams(1)
    p = proxy(simple_config([a.port], hcm_fields={"request_headers_timeout": "2s"}), workers=1,
              log_level="info")
    results: list = []
    normal: list = []

    def normal_client():
        c = http.client.HTTPConnection("127.0.0.1", p.port, timeout=10)
        for _ in range(50):
            c.request("GET", "/")
            r = c.getresponse()
            r.read()
            normal.append(r.status)
            time.sleep(0.02)
        c.close()

    async def main():
        deadline = time.monotonic() + 8
        tasks = [asyncio.create_task(_trickle(p.port, deadline, results)) for _ in range(TRICKLERS)]
        await asyncio.sleep(0.5)
        await asyncio.to_thread(normal_client)
        await asyncio.gather(*tasks)

    asyncio.run(main())
    assert normal == [200] * 50
    answers = [r for r in results if r[0] == "answer"]
    assert len(answers) == TRICKLERS, sorted({r[0] for r in results})
    assert all(r[1].startswith(b"HTTP/1.1 408") for r in answers)
    # request_headers_timeout runs from the first byte and is not restarted per byte
    assert all(1.5 <= r[2] < 4.5 for r in answers), sorted(r[2] for r in answers)[::100]
    assert a.requests and all(req["path"] == "/" for req in a.requests)   # only the normal client's


def test_a_client_that_never_reads_is_cut_off_after_the_stream_idle_timeout(upstreams, proxy):
    (up,) = upstreams(1)
    p = proxy(simple_config([up.port], route={"cluster": "backend", "timeout": "0s"},
                            hcm_fields={"stream_idle_timeout": "1s"}), workers=1)
    (worker,) = p.workers()
    watch = RssWatch(worker)
    watch.start()
    s = socket.create_connection(("127.0.0.1", p.port), timeout=20)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    t0 = time.monotonic()
    s.sendall(b"GET /bytes/%d HTTP/1.1\r\nHost: x\r\n\r\n" % SIZE)
    # never read: the proxy stops reading the upstream (flow control), then the stream is idle
    assert wait_for(lambda: up.open_connections == 1, 5)      # the response is on its way
    assert wait_for(lambda: up.open_connections == 0, 10)     # ...and the exchange was dropped
    took = time.monotonic() - t0
    watch.stop.set()
    received = 0
    try:
        while True:
            b = s.recv(1 << 20)
            if not b:
                break
            received += len(b)
    except ConnectionResetError:
        pass
    s.close()
    assert 1.0 <= took < 6.0
    assert received < SIZE                      # cut off, not delivered
    assert watch.growth < LIMIT, f"worker RSS grew by {watch.growth / 2**20:.1f} MiB"
