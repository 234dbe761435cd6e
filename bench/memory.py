"""Memory figures (issue 6, item 6): RSS of an idle worker, and what 10,000 idle keep-alive client
connections add to one worker. Targets: under 40 MiB and under 60 MiB.
    .venv/bin/python bench/memory.py [--connections N]
"""
from __future__ import annotations

import argparse
import asyncio
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.harness import Proxy, simple_config  # noqa: E402
from tests.upstreams import Upstream  # noqa: E402

MiB = 1024 * 1024


def rss(proc) -> int:
    return proc.memory_info().rss


async def open_idle(port: int, n: int) -> list:
    """n keep-alive connections, each after one request: idle clients the worker must hold."""
    conns = []
    sem = asyncio.Semaphore(200)

    async def one():
        async with sem:
            r, w = await asyncio.open_connection("127.0.0.1", port)
            w.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            head = await r.readuntil(b"\r\n\r\n")
            length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
            await r.readexactly(length)
            conns.append(w)

    await asyncio.gather(*(one() for _ in range(n)))
    return conns


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--connections", type=int, default=10_000)
    args = ap.parse_args(argv)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, args.connections + 1000)), hard))
    up = Upstream("up0")
    with tempfile.TemporaryDirectory() as tmp:
        p = Proxy(simple_config([up.port]), Path(tmp), workers=1, log_level="info")
        try:
            (worker,) = p.workers()
            time.sleep(1.0)
            idle = rss(worker)

            async def run():
                conns = await open_idle(p.port, args.connections)
                await asyncio.sleep(1.0)
                held = rss(worker)
                for w in conns:
                    w.close()
                return held, len(conns)

            held, n = asyncio.run(run())
        finally:
            p.stop()
    grown = held - idle
    print(f"idle worker RSS: {idle / MiB:.1f} MiB (target: under 40 MiB)")
    print(f"{n} idle keep-alive connections on one worker add {grown / MiB:.1f} MiB "
          f"({grown / max(1, n):.0f} bytes each; target: under 60 MiB)")
    return 0 if idle < 40 * MiB and grown < 60 * MiB else 1


if __name__ == "__main__":
    sys.exit(main())
