"""Fake upstream servers for tests: real sockets on loopback, behaviour chosen by the request path.

Each server runs its own event loop in a thread of the test process and records what it got,
so a test can check exactly what the proxy forwarded.

Paths:
  /echo...            200, JSON body: method, path, headers (list of [name, value]), body length
  /status/N           status N, body "status N"
  /delay/S            wait S seconds, then 200
  /bytes/N            N bytes of body, Content-Length framed, streamed in 64 KiB writes
  /chunked/N          N bytes of body, chunked, in 64 KiB chunks
  /sink               reads the whole request body, answers its length and a checksum
  /close              closes the connection without answering
  /hang               never answers
  /trailers           a chunked "hello" followed by the trailer field x-checksum: abc123
  /eof/N              N bytes of body, no Content-Length, ends by closing (HTTP/1.0 style framing)
  /slowbody/N         N bytes body written in 1 KiB pieces with small pauses
Anything else: 200 "ok from <name>". A test may set `fail_status` (every path but /health answers
it, with `fail_headers`: a broken host) or `delay_s` (plain requests answered that late: a slow host).
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import socket
import threading
import time

import httptools


class _Conn(asyncio.Protocol):
    def __init__(self, server: "Upstream"):
        self.server = server
        self.parser = httptools.HttpRequestParser(self)
        self.transport = None
        self.headers = []
        self.url = b""
        self.body_len = 0
        self.sha = None
        self.queue = []

    def connection_made(self, transport):
        self.transport = transport
        self.server.connections += 1
        self.server.open_connections += 1

    def connection_lost(self, exc):
        self.server.open_connections -= 1

    def data_received(self, data):
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.transport.write(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
            self.transport.close()

    # httptools callbacks
    def on_message_begin(self):
        self.headers = []
        self.url = b""
        self.body_len = 0
        self.sha = hashlib.sha256()

    def on_url(self, url):
        self.url += url

    def on_header(self, name, value):
        self.headers.append((name.decode("latin-1"), value.decode("latin-1")))

    def on_body(self, body):
        self.body_len += len(body)
        self.sha.update(body)

    def on_message_complete(self):
        req = {
            "method": self.parser.get_method().decode(),
            "path": self.url.decode("latin-1"),
            "version": self.parser.get_http_version(),
            "headers": self.headers,
            "body_len": self.body_len,
            "sha256": self.sha.hexdigest(),
            "server": self.server.name,
        }
        self.server.requests.append(req)
        asyncio.get_running_loop().create_task(self.server.respond(self, req))

    def send(self, status, body=b"", headers=()):
        hs = "".join(f"{k}: {v}\r\n" for k, v in headers)
        self.transport.write(f"HTTP/1.1 {status} X\r\ncontent-length: {len(body)}\r\n{hs}\r\n".encode() + body)


class Upstream:
    """One fake upstream on 127.0.0.1:<port>, serving in a background thread."""

    def __init__(self, name: str = "up", port: int = 0, health_status: int = 200, host: str = "127.0.0.1",
                 ssl=None):
        self.name = name
        self.requests: list[dict] = []
        self.connections = 0
        self.open_connections = 0
        self.health_status = health_status
        self.fail_status = 0    # when set, plain requests get this status (a broken host)
        self.fail_headers = []  # (name, value) response headers sent with fail_status
        self.delay_s = 0.0      # when set, plain requests are answered this late (a slow host)
        self._sock = socket.socket()
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((host, port))
        self.host = host
        self.ssl = ssl          # an ssl.SSLContext: the upstream speaks HTTPS
        self._sock.listen(1024)
        self.port = self._sock.getsockname()[1]
        self.loop = asyncio.new_event_loop()
        self._server = None
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        self._started.wait(5)

    def _run(self):
        asyncio.set_event_loop(self.loop)

        async def start():
            self._server = await self.loop.create_server(lambda: _Conn(self), sock=self._sock, ssl=self.ssl)

        self.loop.run_until_complete(start())
        self._started.set()
        self.loop.run_forever()

    @property
    def address(self):
        return (self.host, self.port)

    async def respond(self, conn: _Conn, req: dict):
        path = req["path"]
        t = conn.transport
        if t.is_closing():
            return
        parts = path.split("?")[0].strip("/").split("/")
        kind = parts[0]
        arg = parts[1] if len(parts) > 1 else ""
        if self.fail_status and kind != "health":
            conn.send(self.fail_status, f"fail from {self.name}".encode(), self.fail_headers)
        elif kind == "echo":
            conn.send(200, json.dumps(req).encode(), [("content-type", "application/json")])
        elif kind == "status":
            conn.send(int(arg), f"status {arg}".encode())
        elif kind == "delay":
            await asyncio.sleep(float(arg))
            if not t.is_closing():
                conn.send(200, f"delayed {arg}".encode())
        elif kind == "bytes":
            n = int(arg)
            t.write(f"HTTP/1.1 200 OK\r\ncontent-length: {n}\r\n\r\n".encode())
            await self._stream(t, n)
        elif kind == "chunked":
            n = int(arg)
            t.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
            chunk = b"x" * 65536
            left = n
            while left > 0 and not t.is_closing():
                piece = chunk[:min(left, 65536)]
                t.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                left -= len(piece)
                await _drain(t)
            t.write(b"0\r\n\r\n")
        elif kind == "trailers":
            # a chunked response ending with a trailer field (RFC 9112 section 7.1.2)
            t.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ntrailer: x-checksum\r\n\r\n"
                    b"5\r\nhello\r\n0\r\nx-checksum: abc123\r\n\r\n")
        elif kind == "eof":
            n = int(arg)
            t.write(b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\n")
            await self._stream(t, n)
            t.close()
        elif kind == "sink":
            conn.send(200, json.dumps({"body_len": req["body_len"], "sha256": req["sha256"]}).encode())
        elif kind == "close":
            t.close()
        elif kind == "hang":
            await asyncio.sleep(3600)
        elif kind == "slowbody":
            n = int(arg)
            t.write(f"HTTP/1.1 200 OK\r\ncontent-length: {n}\r\n\r\n".encode())
            left = n
            while left > 0 and not t.is_closing():
                k = min(left, 1024)
                t.write(b"y" * k)
                left -= k
                await asyncio.sleep(0.01)
        elif kind == "health":
            conn.send(self.health_status, b"health")
        elif self.delay_s:
            await asyncio.sleep(self.delay_s)
            if not t.is_closing():
                conn.send(200, f"ok from {self.name}".encode())
        else:
            conn.send(200, f"ok from {self.name}".encode())

    @staticmethod
    async def _stream(t, n):
        chunk = b"x" * 65536
        left = n
        while left > 0 and not t.is_closing():
            k = min(left, 65536)
            t.write(chunk[:k])
            left -= k
            await _drain(t)

    def close(self):
        def stop():
            if self._server is not None:
                self._server.close()
            self.loop.stop()
        self.loop.call_soon_threadsafe(stop)
        self._thread.join(5)

    def wait_requests(self, n: int, timeout: float = 5.0) -> list[dict]:
        deadline = time.monotonic() + timeout
        while len(self.requests) < n and time.monotonic() < deadline:
            time.sleep(0.01)
        return self.requests


async def _drain(t):
    # crude write flow control for the fake upstream: wait while the kernel buffer is full
    while t.get_write_buffer_size() > 256 * 1024 and not t.is_closing():
        await asyncio.sleep(0.001)
