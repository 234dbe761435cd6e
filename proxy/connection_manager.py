"""Envoy's HTTP connection manager and router filter for one downstream HTTP/1.1 connection.

Data flow, top to bottom: bytes in -> `parse_request` (fast path) -> route -> pick a host ->
an upstream connection from the host's pool -> request head + streamed body -> response head and
streamed body back -> next pipelined request. One request is in flight per connection; pipelined
requests wait in `buf`, so responses leave in order.
"""
from __future__ import annotations

import asyncio
import logging

from proxy import local_reply
from proxy._fastpath.forward import upstream_request_head
from proxy._fastpath.http1 import (ChunkedDecoder, HttpError, build_response_head, encode_chunk, last_chunk,
                                   parse_request)
from proxy.router import DIRECT, FORWARD
from proxy.upstream import ConnectError, connect

log = logging.getLogger("cyvoy.http")

PIPELINE_LIMIT = 64 * 1024     # buffered pipelined bytes before we stop reading the client
PENDING_LIMIT = 64 * 1024      # body bytes buffered while the upstream connection opens

# why reading from the client is paused (a bit each, so one reason's end does not undo another)
P_UPSTREAM_FULL, P_PIPELINE, P_PENDING = 1, 2, 4

class Hcm:
    """What one listener's http_connection_manager needs per request, computed once."""
    __slots__ = ("cfg", "routes", "max_head", "server_line", "scheme", "use_remote_address",
                 "trusted_hops", "gen_request_id", "idle_timeout", "headers_timeout",
                 "stream_idle_timeout", "request_timeout", "stat_prefix", "conn_limit", "conn_count",
                 "svc_lines")

    def __init__(self, cfg, routes, tls: bool):
        self.cfg = cfg
        self.routes = routes
        self.stat_prefix = cfg.stat_prefix
        self.max_head = cfg.max_request_headers_kb * 1024
        self.server_line = b"server: " + cfg.server_name.encode("latin-1") + b"\r\n"
        # x-envoy-upstream-service-time + server, pre-rendered for the common 0..999 ms
        self.svc_lines = [b"x-envoy-upstream-service-time: %d\r\n" % ms + self.server_line for ms in range(1000)]
        self.scheme = b"https" if tls else b"http"
        self.use_remote_address = cfg.use_remote_address
        self.trusted_hops = cfg.xff_num_trusted_hops
        self.gen_request_id = cfg.generate_request_id
        self.idle_timeout = cfg.idle_timeout
        self.headers_timeout = cfg.request_headers_timeout
        self.stream_idle_timeout = cfg.stream_idle_timeout
        self.request_timeout = cfg.request_timeout
        self.conn_limit = 0      # runtime envoy.resource_limits.listener.<name>.connection_limit (per worker)
        self.conn_count = 0


class Downstream(asyncio.Protocol):
    __slots__ = (
        "w", "hcm", "transport", "peer", "buf", "closed", "paused", "keep_alive", "draining",
        # the request in flight
        "in_req", "seq", "head", "entry", "target", "up", "body_left", "dec", "req_done",
        "pending", "pending_size", "resp_started", "resp_mode", "t_sent", "version", "is_head",
        "deadline", "deadline_kind", "last_io", "req_start", "retried", "upstream_head",
        "chunked_out", "ambiguous")

    def __init__(self, worker, hcm: Hcm):
        self.w = worker
        self.hcm = hcm
        self.transport = None
        self.peer = b""
        self.buf = b""
        self.closed = False
        self.paused = 0
        self.keep_alive = True
        self.draining = False
        self.in_req = False
        self.seq = 0
        self.up = None
        self.deadline = 0.0
        self.deadline_kind = 0
        self.head = None
        self.dec = None
        self.pending = None
        self.is_head = False
        self.resp_started = False
        self.req_done = True

    # ---- connection ---------------------------------------------------------------------------
    def connection_made(self, transport):
        self.transport = transport
        peer = transport.get_extra_info("peername")
        self.peer = peer[0].encode() if peer else b""
        self.last_io = self.w.now
        hcm = self.hcm
        hcm.conn_count += 1
        self.w.conns.add(self)
        if hcm.conn_limit and hcm.conn_count > hcm.conn_limit:
            self.w.count("downstream_cx_overflow")
            self.closed = True
            transport.abort()
            return
        if self.w.draining:
            self.draining = True

    def connection_lost(self, exc):
        self.closed = True
        self.hcm.conn_count -= 1
        self.w.conns.discard(self)
        self.w.active.discard(self)
        up = self.up
        if up is not None:
            # The client went away mid-exchange: the upstream connection is in an unknown state.
            self.up = None
            up.close()
        self.in_req = False

    def data_received(self, data):
        self.last_io = self.w.now
        try:
            if not self.in_req:
                self._read_head(self.buf + data if self.buf else data)
            elif not self.req_done:
                self._request_body(data)
            else:
                # pipelined: keep it until the response in flight is complete
                self.buf += data
                if len(self.buf) > PIPELINE_LIMIT:
                    self._pause(P_PIPELINE)
        except Exception:
            log.exception("internal error on a downstream connection")
            self._fail(500, "internal error", "")

    def eof_received(self):
        # A client may half-close after sending its request; the response still goes out.
        if not self.in_req:
            return False
        self.keep_alive = False
        if not self.req_done and not self.resp_started:
            # ...but a request body cut short by the close can never complete (request bodies are
            # never close-delimited): refuse it and abort it upstream instead of waiting for bytes
            # that cannot come (until stream_idle_timeout, holding an upstream connection).
            self._fail(400, "request body truncated by the client's close", "DPE", bad_request=True)
        return True

    # ---- request head -------------------------------------------------------------------------
    def _read_head(self, buf):
        hcm = self.hcm
        try:
            head = parse_request(buf, 0, hcm.max_head, True)
        except HttpError as e:
            self.buf = b""
            self.in_req = True      # nothing more is read from this connection
            self.keep_alive = False
            self.w.count("downstream_rq_rx_reset" if e.status == 400 else f"local_reply_{e.status}")
            log.debug("bad request from %s: %s", self.peer, e.reason)
            self._local(e.status, e.reason.encode("latin-1", "replace") if e.status != 400 else b"Bad Request", close=True)
            return
        if head is None:
            self.buf = buf
            if self.deadline_kind == 0 and buf.strip(b"\r\n"):
                # request_headers_timeout runs from the first byte and does not restart per byte
                if hcm.headers_timeout:
                    self._set_deadline(hcm.headers_timeout, K_HEADERS)
                elif hcm.request_timeout:
                    self._set_deadline(hcm.request_timeout, K_REQUEST)
            return
        n = head.head_len
        self.buf = buf[n:] if len(buf) > n else b""
        self._begin(head)

    def _begin(self, head):
        hcm = self.hcm
        self.in_req = True
        self.seq += 1
        self.head = head
        self.req_start = self.w.loop_time()
        self.resp_started = False
        self.retried = False
        self.ambiguous = False
        self.version = head.version
        self.is_head = is_head = head.method == b"HEAD"
        if not head.keep_alive or self.draining:
            self.keep_alive = False
        if head.chunked:
            self.body_left = -2
            self.dec = ChunkedDecoder()
            self.req_done = False
        elif head.content_length > 0:
            self.body_left = head.content_length
            self.req_done = False
        else:
            self.body_left = 0
            self.req_done = True

        entry = hcm.routes.match(head.host, head.path, head)
        self.entry = entry
        if entry is None or head.method == b"CONNECT":
            self._local_for_request(404, b"", "NR")
            return
        if entry.kind != FORWARD:
            self._local_route(entry, head)
            return
        target = entry.targets[0] if entry.single else entry.pick_target()
        self.target = target
        host = target.cluster.picker.pick()
        if host is None:
            self._local_for_request(503, b"no healthy upstream", "UH")
            return

        # ---- upstream request head: one fast-path call
        path = head.path if entry.prefix_rewrite is None else self._rewrite(head.path, entry)
        if entry.host_rewrite is not None:
            host_hdr = entry.host_rewrite
        elif entry.auto_host_rewrite and host.host_header is not None:
            host_hdr = host.host_header
        else:
            host_hdr = head.host
        headers = head.headers
        extra = entry.timeout_line
        if target.req is not None:
            headers, more = target.req.apply(headers, head.get)
            extra = more + extra
        self.upstream_head = upstream_request_head(head, path, host_hdr, headers, hcm.use_remote_address,
                                                   self.peer, hcm.scheme, hcm.gen_request_id, extra)
        if head.expect_continue and not self.req_done:
            # Envoy answers Expect: 100-continue itself and does not forward it.
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        self.pending = None
        self.up = None
        done_with_head = self.req_done
        if not done_with_head:
            if hcm.request_timeout:
                self._set_deadline(hcm.request_timeout, K_REQUEST)
            if is_head or head.method == b"GET":
                # A body on GET/HEAD is ambiguous (desync-guardian): forward it, but reuse
                # neither connection afterwards.
                self.keep_alive = False
                self.ambiguous = True
            if self.buf:
                # Decode the body bytes that came with the head before anything goes upstream,
                # so a request refused for its body never reaches the upstream at all.
                seq = self.seq
                data, self.buf = self.buf, b""
                self._request_body(data)
                if self.seq != seq or not self.in_req:
                    return
        # an idle pooled connection if there is one, else a new one
        idle = host.idle
        while idle:
            up = idle.pop()
            if not up.closed:
                self.up = up
                up.send(self, self.upstream_head, is_head)
                if self.pending:
                    self._flush_pending(up)
                break
        else:
            self.w.loop.create_task(self._connect(host, self.seq))
        if done_with_head:
            self._arm_route_timeout()

    @staticmethod
    def _rewrite(path: bytes, entry) -> bytes:
        if entry.match_prefix_len >= 0:
            return entry.prefix_rewrite + path[entry.match_prefix_len:]
        # path / regex matches: the whole path is replaced, the query string kept
        q = path.find(b"?")
        return entry.prefix_rewrite + (path[q:] if q >= 0 else b"")

    # ---- upstream connection --------------------------------------------------------------------
    async def _connect(self, host, seq):
        cluster = self.target.cluster
        try:
            up = await connect(self.w.loop, host, self.w, cluster.connect_timeout)
        except ConnectError as e:
            if self.seq == seq and self.in_req and not self.closed:
                self.w.count("upstream_cx_connect_fail")
                self._fail(503, "upstream connect error or disconnect/reset before headers. reset reason: "
                           + e.reason, e.flag)
            return
        if self.seq != seq or not self.in_req or self.closed:
            host.idle.append(up)   # the request is gone; the fresh connection is still good
            up.idle_since = self.w.now
            return
        self.up = up
        up.send(self, self.upstream_head, self.is_head)
        if self.pending:
            self._flush_pending(up)

    def _flush_pending(self, up):
        up.transport.write(b"".join(self.pending))
        self.pending = None
        self.pending_size = 0
        self._resume(P_PENDING)

    # ---- request body ---------------------------------------------------------------------------
    def _request_body(self, data):
        left = self.body_left
        if left > 0:
            n = len(data)
            if n <= left:
                self.body_left = left - n
                self._to_upstream(data)
                if self.body_left == 0:
                    self._request_complete()
                return
            self._to_upstream(data[:left])
            self.body_left = 0
            self.buf = data[left:]
            self._request_complete()
            return
        try:
            payload = self.dec.feed(data)
        except HttpError as e:
            self.keep_alive = False
            self._fail(400, "invalid chunked body: " + e.reason, "DPE", bad_request=True)
            return
        if payload:
            self._to_upstream(encode_chunk(payload))
        if self.dec.done:
            self._to_upstream(last_chunk(self.dec.trailers))
            c = self.dec.consumed
            if c < len(data):
                self.buf = data[c:]
            self._request_complete()

    def _to_upstream(self, data):
        up = self.up
        if up is not None and not up.closed:
            up.transport.write(data)
            return
        if self.pending is None:
            self.pending = []
            self.pending_size = 0
        self.pending.append(data)
        self.pending_size += len(data)
        if self.pending_size > PENDING_LIMIT:
            self._pause(P_PENDING)

    def _request_complete(self):
        self.req_done = True
        if self.buf and len(self.buf) > PIPELINE_LIMIT:
            self._pause(P_PIPELINE)
        self._arm_route_timeout()

    def _arm_route_timeout(self):
        # Envoy's route timeout starts when the downstream request is complete.
        t = self.entry.timeout
        if t:
            self.deadline = self.w.loop_time() + t
            self.deadline_kind = K_ROUTE
            self.w.active.add(self)
        elif self.hcm.stream_idle_timeout:
            self._set_deadline(self.hcm.stream_idle_timeout, K_STREAM_IDLE)
        else:
            self.deadline_kind = 0

    # ---- response (called by Upstream) ----------------------------------------------------------
    def on_response_head(self, rh, up, body):
        self.resp_started = True
        svc = int((self.w.loop_time() - self.req_start) * 1000)
        svc_lines = self.hcm.svc_lines
        extra = svc_lines[svc] if svc < 1000 else (
            b"x-envoy-upstream-service-time: %d\r\n" % svc + self.hcm.server_line)
        headers = rh.headers
        resp = self.target.resp
        if resp is not None:
            headers, more = resp.apply(headers, rh.get)
            extra += more
        if not self.req_done:
            # The upstream answered before the whole request arrived: after this response the
            # connection's framing cannot be trusted for another request.
            self.keep_alive = False
        # The client connection stays open when the client wants it and we can frame the body;
        # whether the upstream connection is reused is the upstream's business (Upstream.keep_alive).
        keep = self.keep_alive and not self.draining
        if rh.no_body or self.is_head:
            framing = rh.content_length if rh.content_length >= 0 and rh.status != 204 else -3
            self.chunked_out = False
        elif rh.content_length >= 0 and not rh.chunked:
            framing = rh.content_length
            self.chunked_out = False
        elif self.version == 11:
            framing = -2    # chunked re-encoded (or close-delimited turned chunked)
            self.chunked_out = True
        else:
            framing = -3    # HTTP/1.0 client: the body runs to the close
            keep = False
            self.chunked_out = False
        self.keep_alive = keep
        head = build_response_head(rh.status, headers, extra, framing, keep)
        # one write (one syscall) for a small response whose body came with its head
        self.transport.write(head + body if body else head)

    def on_response_body(self, data):
        self.last_io = self.w.now
        if self.chunked_out:
            self.transport.write(encode_chunk(data))
        else:
            self.transport.write(data)

    def on_response_end(self, trailers, up):
        if self.chunked_out:
            self.transport.write(last_chunk(trailers))
        if up.reusable and up.keep_alive and self.req_done and not up.closed and not self.ambiguous:
            up.idle_since = self.w.now
            up.host.idle.append(up)
        else:
            up.close()
        self.up = None
        self._finish()

    def on_upstream_reset(self, up, reason):
        if not self.resp_started and not up.got_bytes and up.uses > 1 and not self.retried \
                and self.head.content_length <= 0 and not self.head.chunked:
            # A pooled connection the upstream closed as we reused it: nothing was received and
            # the request had no body, so sending it again on a fresh connection is safe.
            self.retried = True
            self.up = None
            self.w.loop.create_task(self._connect(up.host, self.seq))
            return
        self.up = None
        self._fail(503, "upstream connect error or disconnect/reset before headers. reset reason: " + reason, "UC")

    def on_upstream_error(self, status, reason, flag):
        self.up = None
        self._fail(status, reason, flag)

    def pause_reading_for_upstream(self, on: bool):
        if on:
            self._pause(P_UPSTREAM_FULL)
        else:
            self._resume(P_UPSTREAM_FULL)

    # flow control: the client reads slower than the upstream sends
    def pause_writing(self):
        up = self.up
        if up is not None:
            up.pause_reading()

    def resume_writing(self):
        up = self.up
        if up is not None:
            up.resume_reading()

    # ---- end of an exchange ---------------------------------------------------------------------
    def _finish(self):
        self.in_req = False
        self.head = None
        self.entry = None
        self.dec = None
        self.pending = None
        self.is_head = False
        self.deadline_kind = 0    # the ticker drops it from w.active
        if not self.keep_alive:
            # (a draining connection whose response promised keep-alive stays open: the
            # worker's sweep closes it once idle, so a request already on its way is not lost)
            self.closed = True
            self.transport.close()
            return
        self.last_io = self.w.now
        if self.paused & P_PIPELINE:
            self._resume(P_PIPELINE)
        if self.buf:
            data, self.buf = self.buf, b""
            self._read_head(data)

    def _fail(self, status: int, reason: str, flag: str, bad_request: bool = False):
        """A local reply if nothing was sent yet, else a reset: never a half-written response."""
        up = self.up
        if up is not None:
            self.up = None
            up.close()
        if self.closed:
            return
        self.w.count(f"local_reply_{status}")
        log.debug("%s %s -> %d %s (%s)", self.head.method if self.head else b"", self.head.path if self.head else b"",
                  status, reason, flag)
        if self.in_req and self.resp_started:
            self.closed = True
            self.transport.abort()
            return
        if not self.req_done or bad_request:
            self.keep_alive = False   # the rest of the request body would be read as a new request
        self._local(status, reason.encode("latin-1", "replace"), close=not self.keep_alive)

    def _local(self, status: int, body: bytes, close: bool, extra: bytes = b"", headers: bytes = b""):
        if close:
            self.keep_alive = False
        self.resp_started = True
        self.transport.write(local_reply.render(status, body, self.hcm.server_line, extra, headers,
                                                not self.keep_alive, self.is_head))
        self._finish()

    def _local_for_request(self, status, body, flag):
        self.w.count(f"local_reply_{status}")
        if not self.req_done:
            self.keep_alive = False   # we will not read the body it is sending
        self._local(status, body, close=not self.keep_alive)

    def _local_route(self, entry, head):
        target = entry.targets[0]
        headers, extra = (b"", b"")
        if target.resp is not None:
            headers, extra = target.resp.apply(b"", lambda name: None)
        if entry.kind == DIRECT:
            if not self.req_done:
                self.keep_alive = False
            self._local(entry.status, entry.body, close=not self.keep_alive, extra=extra, headers=headers)
        else:  # REDIRECT
            loc = local_reply.redirect_location(entry.redirect, self.hcm.scheme, head.host, head.path, entry)
            if not self.req_done:
                self.keep_alive = False
            self._local(entry.redirect.response_code, b"", close=not self.keep_alive,
                        extra=extra + b"location: " + loc + b"\r\n", headers=headers)

    # ---- timeouts (checked by the worker's ticker) ----------------------------------------------
    def _set_deadline(self, seconds: float, kind: int):
        self.deadline = self.w.loop_time() + seconds
        self.deadline_kind = kind
        self.w.active.add(self)

    def on_deadline(self):
        kind = self.deadline_kind
        self.deadline_kind = 0
        self.w.active.discard(self)
        if self.closed:
            return
        if kind == K_HEADERS:
            self.in_req = True
            self.keep_alive = False
            self.w.count("downstream_rq_header_timeout")
            self._local(408, b"request header timeout", close=True)
        elif kind == K_ROUTE:
            self.w.count("upstream_rq_timeout")
            self._fail(504, "upstream request timeout", "UT")
        elif kind == K_REQUEST:
            self.w.count("downstream_rq_timeout")
            self._fail(408, "request timeout", "")
        elif kind == K_STREAM_IDLE:
            quiet = self.w.loop_time() - self.last_io
            if quiet < self.hcm.stream_idle_timeout:   # there was traffic: wait from the last byte
                self._set_deadline(self.hcm.stream_idle_timeout - quiet, K_STREAM_IDLE)
                return
            self._fail(408 if not self.resp_started else 504, "stream timeout", "SI")

    def _pause(self, bit: int):
        if not self.paused and not self.closed:
            self.transport.pause_reading()
        self.paused |= bit

    def _resume(self, bit: int):
        if self.paused & bit:
            self.paused &= ~bit
            if not self.paused and not self.closed:
                self.transport.resume_reading()

    def close_if_idle(self) -> bool:
        if not self.in_req and not self.buf and not self.closed:
            self.closed = True
            self.transport.close()
            return True
        return False


K_HEADERS, K_ROUTE, K_STREAM_IDLE, K_REQUEST = 1, 2, 3, 4
