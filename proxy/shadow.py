"""Request mirroring (route request_mirror_policies): fire-and-forget copies of requests.

Envoy's behaviour (route_components.proto RequestMirrorPolicy, router docs): the shadow goes to
another cluster with its Host/Authority suffixed "-shadow" (before any port, unless
disable_shadow_host_suffix_append), its response is discarded, and it never delays or fails the
primary request. cyvoy sends the shadow once the whole request is in (a body is mirrored only
while it fits the cluster's buffer limit; a larger one is not mirrored and counts as
retry_or_shadow_abandoned), on a connection of its own that it closes after the response
(`connection: close`; cyvoy closes it itself once the response is complete), bounded by the
route timeout. At most MAX_INFLIGHT shadows per worker are
in flight; beyond that a shadow is dropped and counted the same way, so a slow mirror cannot
pile up memory.
"""
from __future__ import annotations

import asyncio
import logging

from proxy._fastpath.http1 import ChunkedDecoder, HttpError, parse_response

log = logging.getLogger("cyvoy.shadow")

MAX_INFLIGHT = 1024
MAX_HEAD = 60 * 1024


def shadow_host(host: bytes) -> bytes:
    """Envoy's shadowAppendedHost: "a.com" -> "a.com-shadow", "a.com:8080" -> "a.com-shadow:8080"."""
    if host.startswith(b"["):               # [v6]:port
        end = host.find(b"]")
        cut = end + 1 if end >= 0 and host[end + 1:end + 2] == b":" else -1
    else:
        cut = host.rfind(b":")
    if cut < 0:
        return host + b"-shadow"
    return host[:cut] + b"-shadow" + host[cut:]


def shadow_head(upstream_head: bytes, suffix: bool) -> bytes:
    """The primary's upstream head with the Host line suffixed and `connection: close` added."""
    start = upstream_head.index(b"\r\nHost: ") + 8
    end = upstream_head.index(b"\r\n", start)
    host = upstream_head[start:end]
    return (upstream_head[:start] + (shadow_host(host) if suffix else host)
            + b"\r\nconnection: close" + upstream_head[end:])


class _Sink(asyncio.Protocol):
    """Reads and discards the shadow's response until it is complete (Content-Length, chunked,
    or close), then resolves `done` with its status (0: no valid response)."""

    def __init__(self, done: asyncio.Future):
        self.done = done
        self.buf = b""
        self.status = 0
        self.left = -1          # body bytes still due; -1: until close
        self.dec = None
        self.transport = None

    def connection_made(self, transport):
        self.transport = transport

    def _end(self, status: int) -> None:
        if not self.done.done():
            self.done.set_result(status)

    def data_received(self, data):
        if self.done.done():
            return
        try:
            if not self.status:
                self.buf += data
                head = parse_response(self.buf, 0, MAX_HEAD)
                if head is None:
                    return
                if head.status < 200:        # 1xx: the final response follows
                    self.buf = self.buf[head.head_len:]
                    return
                self.status = head.status
                data = self.buf[head.head_len:]
                self.buf = b""
                if head.no_body or head.content_length == 0:
                    self._end(self.status)
                    return
                if head.chunked:
                    self.dec = ChunkedDecoder()
                elif head.content_length > 0:
                    self.left = head.content_length
            if self.dec is not None:
                self.dec.feed(data)
                if self.dec.done:
                    self._end(self.status)
            elif self.left >= 0:
                self.left -= len(data)
                if self.left <= 0:
                    self._end(self.status)
        except HttpError:
            self._end(0)

    def connection_lost(self, exc):
        self._end(self.status if self.left < 0 and self.dec is None else 0)


class ShadowWriter:
    """One per worker."""

    def __init__(self, worker):
        self.w = worker
        self.inflight = 0

    def send(self, cluster, head: bytes, body: list | None, timeout: float) -> None:
        host = cluster.pick(0, False)
        if host is None:
            return
        if self.inflight >= MAX_INFLIGHT:
            cluster.stats.count_shadow_abandoned()
            return
        self.inflight += 1
        self.w.loop.create_task(self._run(cluster, host, head, body, timeout or 15.0))

    async def _run(self, cluster, host, head, body, timeout):
        loop = self.w.loop
        transport = None
        status = 0
        try:
            done = loop.create_future()
            transport, _ = await asyncio.wait_for(
                loop.create_connection(lambda: _Sink(done), host.address, host.port),
                cluster.connect_timeout)
            transport.write(head)
            if body:
                transport.writelines(body)
            status = await asyncio.wait_for(done, timeout)
        except (OSError, asyncio.TimeoutError) as e:
            log.debug("shadow to %s failed: %r", host.label, e)
        except Exception:
            log.exception("shadow request")
        finally:
            self.inflight -= 1
            if transport is not None:
                transport.close()
        cluster.stats.count_shadow(status)
