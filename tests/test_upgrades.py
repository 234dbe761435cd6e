"""HTTP/1.1 upgrades (issue 8, item 5): with upgrade_configs [{upgrade_type: websocket}] a WebSocket
is tunnelled after the upstream's 101, both ways, until either side closes, under the stream idle
timeout; without it Envoy's 403. Envoy: docs/root/intro/arch_overview/http/upgrades.rst."""
from __future__ import annotations

import asyncio
import threading

import websockets
from websockets.asyncio.client import connect
from websockets.asyncio.server import serve

from tests.harness import raw_request, simple_config

WS = [{"upgrade_type": "websocket"}]


class EchoServer:
    """A websockets echo server on its own loop thread: echoes text, counts connections."""

    def __init__(self):
        self.loop = asyncio.new_event_loop()
        self.port = 0
        self.paths = []
        ready = threading.Event()

        async def handler(ws):
            self.paths.append(ws.request.path)
            async for msg in ws:
                await ws.send("echo " + msg)

        async def main():
            self.server = await serve(handler, "127.0.0.1", 0)
            self.port = self.server.sockets[0].getsockname()[1]
            ready.set()
            await self.server.wait_closed()

        self.thread = threading.Thread(target=lambda: self.loop.run_until_complete(main()), daemon=True)
        self.thread.start()
        ready.wait(5)

    def stop(self):
        self.loop.call_soon_threadsafe(self.server.close)


def test_websocket_is_tunnelled_both_ways_when_enabled(proxy):
    up = EchoServer()
    p = proxy(simple_config([up.port], hcm_fields={"upgrade_configs": WS}), workers=1)

    async def client():
        async with connect(f"ws://127.0.0.1:{p.port}/chat?room=1") as ws:
            got = []
            for i in range(20):
                await ws.send(f"m{i}")
                got.append(await ws.recv())
            big = "x" * 300_000            # bigger than any buffer: flow control both ways
            await ws.send(big)
            got.append(len(await ws.recv()))
            return got

    got = asyncio.run(asyncio.wait_for(client(), 10))
    assert got[:20] == [f"echo m{i}" for i in range(20)]
    assert got[20] == 300_005
    assert up.paths == ["/chat?room=1"]
    up.stop()


def test_upgrade_without_upgrade_configs_is_403(proxy):
    up = EchoServer()
    p = proxy(simple_config([up.port]), workers=1)

    async def client():
        async with connect(f"ws://127.0.0.1:{p.port}/"):
            pass

    try:
        asyncio.run(asyncio.wait_for(client(), 10))
    except websockets.exceptions.InvalidStatus as e:
        assert e.response.status_code == 403
    else:
        raise AssertionError("the upgrade went through")
    assert up.paths == []
    up.stop()


def test_a_route_can_disable_an_upgrade_the_connection_manager_enables(proxy):
    up = EchoServer()
    cfg = simple_config([up.port], route={"cluster": "backend",
                                          "upgrade_configs": [{"upgrade_type": "websocket", "enabled": False}]},
                        hcm_fields={"upgrade_configs": WS})
    p = proxy(cfg, workers=1)
    r = raw_request(p.port, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
                            b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
    assert r.startswith(b"HTTP/1.1 403")
    up.stop()


def test_an_idle_tunnel_is_closed_by_the_stream_idle_timeout(proxy):
    up = EchoServer()
    p = proxy(simple_config([up.port], hcm_fields={"upgrade_configs": WS, "stream_idle_timeout": "1s"}),
              workers=1)

    async def client():
        async with connect(f"ws://127.0.0.1:{p.port}/", ping_interval=None) as ws:
            await ws.send("hi")
            assert await ws.recv() == "echo hi"
            loop = asyncio.get_running_loop()
            t0 = loop.time()
            try:
                await asyncio.wait_for(ws.recv(), 5)
            except websockets.exceptions.ConnectionClosed:
                return loop.time() - t0
            return None

    waited = asyncio.run(client())
    assert waited is not None and 0.8 <= waited < 4.0
    up.stop()


def test_a_route_timeout_does_not_cut_an_open_websocket(proxy):
    up = EchoServer()
    p = proxy(simple_config([up.port], route={"cluster": "backend", "timeout": "0.5s"},
                            hcm_fields={"upgrade_configs": WS}), workers=1)

    async def client():
        async with connect(f"ws://127.0.0.1:{p.port}/", ping_interval=None) as ws:
            await asyncio.sleep(1.2)            # longer than the route timeout
            await ws.send("still here")
            return await ws.recv()

    assert asyncio.run(asyncio.wait_for(client(), 10)) == "echo still here"
    up.stop()


def test_h2c_upgrade_is_ignored_and_served_as_http1(upstreams, proxy):
    (a,) = upstreams(1)
    p = proxy(simple_config([a.port]), workers=1)
    r = raw_request(p.port, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\n"
                            b"Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\nConnection: close\r\n\r\n")
    assert r.startswith(b"HTTP/1.1 200")
    assert "upgrade" not in {k.lower() for k, _ in a.requests[0]["headers"]}
