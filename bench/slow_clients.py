"""How much 1,000 header tricklers (one byte a second each) delay a normal client (issue 7, item 4).

Starts cyvoy (one worker, cyvoy's default request_headers_timeout of 10 s) in front of a small
upstream, measures a normal keep-alive client's latency alone, then again while 1,000 connections
trickle their request heads, and prints both p99s and the difference (target: at most 50 ms).
    .venv/bin/python bench/slow_clients.py
"""
from __future__ import annotations

import asyncio
import http.client
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.harness import Proxy, simple_config  # noqa: E402
from tests.upstreams import Upstream  # noqa: E402

TRICKLERS = 1000
REQUESTS = 2000


def p99(xs):
    return statistics.quantiles(xs, n=100)[98]


def normal_client(port: int) -> list[float]:
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    lat = []
    for _ in range(REQUESTS):
        t0 = time.perf_counter()
        c.request("GET", "/")
        r = c.getresponse()
        r.read()
        lat.append(time.perf_counter() - t0)
        if r.status != 200:
            raise SystemExit(f"normal client got {r.status}")
    c.close()
    return lat


async def trickler(port: int, stop: asyncio.Event) -> None:
    try:
        r, w = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return
    head = b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"y" * 100
    for i in range(len(head)):
        if stop.is_set():
            break
        w.write(head[i:i + 1])
        await asyncio.sleep(1.0)
    w.close()


async def with_tricklers(port: int) -> list[float]:
    stop = asyncio.Event()
    tasks = [asyncio.create_task(trickler(port, stop)) for _ in range(TRICKLERS)]
    await asyncio.sleep(1.5)          # all connected and trickling
    lat = await asyncio.to_thread(normal_client, port)
    stop.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    return lat


def main() -> int:
    up = Upstream("up0")
    with tempfile.TemporaryDirectory() as tmp:
        p = Proxy(simple_config([up.port]), Path(tmp), workers=1, log_level="info")
        try:
            normal_client(p.port)                    # warm-up
            alone = normal_client(p.port)
            crowded = asyncio.run(with_tricklers(p.port))
        finally:
            p.stop()
    a, c = p99(alone) * 1000, p99(crowded) * 1000
    print(f"normal client, {REQUESTS} keep-alive GETs through 1 worker")
    print(f"  alone:                        p50 {statistics.median(alone)*1000:6.2f} ms   p99 {a:6.2f} ms")
    print(f"  beside {TRICKLERS} header tricklers: p50 {statistics.median(crowded)*1000:6.2f} ms   p99 {c:6.2f} ms")
    print(f"  p99 delay added: {c - a:+.2f} ms (target: at most +50 ms)")
    return 0 if c - a <= 50 else 1


if __name__ == "__main__":
    sys.exit(main())
