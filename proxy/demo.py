"""The embedded default config and its demo upstreams (`cyvoy --demo`, what `make run` starts).

The default config is what a newcomer reads first, so it is plain Envoy v3 YAML.
"""
from __future__ import annotations

import asyncio
import subprocess
import sys
from importlib import resources

DEMO_PORTS = (10001, 10002)


def default_config_text() -> str:
    return resources.files("proxy").joinpath("default.yaml").read_text()


class _Upstreams:
    def __init__(self, procs):
        self.procs = procs

    def stop(self):
        for p in self.procs:
            p.terminate()
        for p in self.procs:
            try:
                p.wait(timeout=2)
            except Exception:
                p.kill()


def start_upstreams() -> _Upstreams:
    procs = [subprocess.Popen([sys.executable, "-m", "proxy.demo", str(port), f"demo upstream {i + 1}"])
             for i, port in enumerate(DEMO_PORTS)]
    return _Upstreams(procs)


class _Hello(asyncio.Protocol):
    """Answers every request with one line naming the upstream (enough to see round robin)."""

    def __init__(self, body: bytes):
        self.response = (b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: %d\r\n\r\n%s"
                         % (len(body), body))
        self.buf = b""

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.buf += data
        while b"\r\n\r\n" in self.buf:
            _, self.buf = self.buf.split(b"\r\n\r\n", 1)
            self.transport.write(self.response)


def _serve(port: int, name: str) -> None:
    async def main():
        loop = asyncio.get_running_loop()
        body = f"hello from {name} (127.0.0.1:{port})\n".encode()
        server = await loop.create_server(lambda: _Hello(body), "127.0.0.1", port)
        async with server:
            await server.serve_forever()
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    _serve(int(sys.argv[1]), sys.argv[2])
