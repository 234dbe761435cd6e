"""One HTTP/1.1 connection to an upstream host, reused through the host's pool.

It parses the response head in one fast-path call, frames the body (Content-Length, chunked,
or until close), and hands bytes to the downstream stream it serves. A connection whose response
was not framed cleanly, or that closed, is never put back in the pool.
"""
from __future__ import annotations

import asyncio

from proxy._fastpath.http1 import ChunkedDecoder, HttpError, parse_response

# states
IDLE, HEAD, BODY = 0, 1, 2
MAX_RESPONSE_HEAD = 60 * 1024   # Envoy's default max_response_headers_kb is 60


class Upstream(asyncio.Protocol):
    __slots__ = ("host", "worker", "transport", "ds", "buf", "state", "left", "dec", "keep_alive",
                 "closed", "reusable", "idle_since", "got_bytes", "read_paused", "no_body", "uses")

    def __init__(self, host, worker):
        self.host = host
        self.worker = worker
        self.transport = None
        self.ds = None          # the downstream stream this connection serves, None when idle
        self.buf = b""
        self.state = IDLE
        self.left = -1
        self.dec = None
        self.keep_alive = True
        self.closed = False
        self.reusable = True
        self.idle_since = 0.0
        self.got_bytes = False
        self.read_paused = False
        self.no_body = False
        self.uses = 0

    # ---- asyncio.Protocol --------------------------------------------------------------------
    def connection_made(self, transport):
        self.transport = transport

    def send(self, ds, head: bytes, no_body: bool) -> None:
        """Start one exchange: write the request head; the body follows through `transport`."""
        self.ds = ds
        self.state = HEAD
        self.got_bytes = False
        self.no_body = no_body
        self.uses += 1
        if self.read_paused:
            self.read_paused = False
            self.transport.resume_reading()
        self.transport.write(head)

    def data_received(self, data):
        ds = self.ds
        if ds is None:
            # Bytes on an idle connection: the upstream is confused; never reuse it.
            self.close()
            return
        self.got_bytes = True
        if self.state == BODY:
            self._body(data, ds)
            return
        buf = self.buf + data if self.buf else data
        while True:
            try:
                rh = parse_response(buf, 0, MAX_RESPONSE_HEAD)
            except HttpError as e:
                self.buf = b""
                self.close()
                ds.on_upstream_error(502, "upstream sent an invalid response: " + e.reason, "UPE")
                return
            if rh is None:
                self.buf = buf
                return
            status = rh.status
            if 100 <= status < 200:
                # 1xx interim responses are absorbed (cyvoy answers Expect: 100-continue itself,
                # as Envoy does by default); 101 needs an upgrade we did not ask for.
                if status == 101:
                    self.buf = b""
                    self.close()
                    ds.on_upstream_error(502, "upstream sent 101 without an upgrade", "UPE")
                    return
                buf = buf[rh.head_len:]
                if not buf:
                    self.buf = b""
                    return
                continue
            break
        self.buf = b""
        self.state = BODY
        self.keep_alive = rh.keep_alive
        if self.no_body or rh.no_body:
            self.left = 0
        elif rh.chunked:
            self.left = -2
            self.dec = ChunkedDecoder()
        else:
            self.left = rh.content_length   # -1: until the upstream closes
            if self.left < 0:
                self.keep_alive = False
        rest = buf[rh.head_len:] if len(buf) > rh.head_len else b""
        left = self.left
        if left > 0 and rest:
            # Content-Length body that came with the head: written together with it
            n = len(rest)
            if n >= left:
                if n > left:
                    self.reusable = False   # more than Content-Length: drop it, and the connection
                    rest = rest[:left]
                self.left = left = 0
            else:
                self.left = left - n
            ds.on_response_head(rh, self, rest)
            rest = b""
        else:
            ds.on_response_head(rh, self, b"")
        if self.ds is not ds:      # the downstream went away while we wrote the head
            return
        if left == 0:
            if rest:
                self.reusable = False   # bytes after a complete response: not safe to reuse
            self._done(b"")
        elif rest:
            self._body(rest, ds)

    def _body(self, data, ds):
        left = self.left
        if left > 0:
            n = len(data)
            if n < left:
                self.left = left - n
                ds.on_response_body(data)
                return
            if n > left:
                self.reusable = False   # more than Content-Length: drop it, and the connection
                data = data[:left]
            self.left = 0
            ds.on_response_body(data)
            self._done(b"")
        elif left == -2:
            try:
                payload = self.dec.feed(data)
            except HttpError as e:
                self.close()
                ds.on_upstream_error(502, "upstream sent invalid chunked framing: " + e.reason, "UPE")
                return
            if payload:
                ds.on_response_body(payload)
            if self.dec.done:
                if self.dec.consumed < len(data):
                    self.reusable = False
                self._done(self.dec.trailers)
        else:   # close-delimited
            ds.on_response_body(data)

    def _done(self, trailers: bytes) -> None:
        ds = self.ds
        self.ds = None
        self.state = IDLE
        self.dec = None
        if ds is not None:
            ds.on_response_end(trailers, self)

    def connection_lost(self, exc):
        self.closed = True
        self.reusable = False
        ds = self.ds
        if ds is None:
            return
        if self.state == BODY and self.left == -1:
            self._done(b"")   # close-delimited body ends at close
            return
        self.ds = None
        self.state = IDLE
        ds.on_upstream_reset(self, "connection termination")

    # ---- flow control: the downstream client reads slower than we receive ---------------------
    def pause_writing(self):
        ds = self.ds
        if ds is not None:
            ds.pause_reading_for_upstream(True)

    def resume_writing(self):
        ds = self.ds
        if ds is not None:
            ds.pause_reading_for_upstream(False)

    def pause_reading(self):
        if not self.read_paused and not self.closed:
            self.read_paused = True
            self.transport.pause_reading()

    def resume_reading(self):
        if self.read_paused and not self.closed:
            self.read_paused = False
            self.transport.resume_reading()

    def close(self) -> None:
        self.reusable = False
        self.ds = None
        if not self.closed:
            self.closed = True
            if self.transport is not None:
                self.transport.abort()


class ConnectError(Exception):
    def __init__(self, reason: str, flag: str):
        super().__init__(reason)
        self.reason = reason
        self.flag = flag


async def connect(loop, host, worker, timeout: float) -> Upstream:
    """Open a connection to `host` within the cluster's connect_timeout."""
    try:
        _, up = await asyncio.wait_for(
            loop.create_connection(lambda: Upstream(host, worker), host.address, host.port), timeout)
    except asyncio.TimeoutError:
        raise ConnectError("connection timeout", "UF") from None
    except OSError as e:
        # Envoy's wording: "remote connection failure, transport failure reason: delayed connect error: 111"
        raise ConnectError("remote connection failure, transport failure reason: delayed connect error: "
                           f"{e.errno}", "UF") from None
    return up
