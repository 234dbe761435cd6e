# cython: language_level=3, boundscheck=False, wraparound=False
"""The per-request state machines: Envoy's HTTP connection manager + router for one downstream
HTTP/1.1 connection, and one pooled upstream connection.

Data flow, top to bottom: bytes in -> `parse_request` -> route -> pick a host -> an upstream
connection from the host's pool -> request head + streamed body -> response head and streamed
body back -> next pipelined request. One request is in flight per connection; pipelined requests
wait in `buf`, so responses leave in order.

These are Cython classes because they run for every request: their fields are C struct members
and the calls between them C calls. Everything decided once per config (routes, header plans,
timeouts) is prepared in Python by proxy/connection_manager.py and proxy/router.py.
"""
import asyncio
import logging

from proxy import local_reply
from proxy._fastpath.forward import upstream_request_head
from proxy.access_log.record import LogRecord, headers_with
from proxy._fastpath.accesslog import default_line
from proxy.filters import Reply as FilterReply
from proxy.shadow import shadow_head
from proxy.config.routes import RETRY_ON_SUPPORTED
from proxy.router import RetryPlan, remove_lines as _remove_lines
from proxy._fastpath.http1 import (HttpError, build_response_head, encode_chunk, last_chunk,
                                   parse_request, parse_response)

from proxy._fastpath.http1 cimport ChunkedDecoder, RequestHead, ResponseHead
from proxy._fastpath.hosttable cimport (HostTable, cyv_addi64, cyv_ht_host, cyv_ldi64, cyv_monotonic_ns, ht_cb_acquire,
                                        ht_cb_release, ht_host)
from proxy._fastpath.stats cimport SlotStats, record_time
from proxy._fastpath.routes cimport RouteEntry, RouteMatcher, Target
from proxy._fastpath.cluster cimport ClusterBase, HostBase

log = logging.getLogger("cyvoy.http")


cdef double _last_now = 0.0


cdef inline double _now() noexcept nogil:
    # The clock of every per-request time: CLOCK_MONOTONIC in seconds, the epoch of the loop's
    # time() (libuv's uv_now) that the worker's ticker compares deadlines with. A vDSO call, where
    # loop.time() is a Python method call and a float object.
    global _last_now
    _last_now = <double>cyv_monotonic_ns() * 1e-9
    return _last_now


cdef inline double _recent() noexcept nogil:
    # The time _now() last read. Every entry point from the event loop (data_received,
    # connection_lost, timers) reads the clock once; what runs inside it uses that reading: one
    # clock read per event instead of one per use (on a VM a read is a noticeable share).
    return _last_now

cdef Py_ssize_t PIPELINE_LIMIT = 64 * 1024   # buffered pipelined bytes before we stop reading the client
cdef Py_ssize_t PENDING_LIMIT = 64 * 1024    # body bytes buffered while the upstream connection opens
cdef Py_ssize_t MAX_RESPONSE_HEAD = 60 * 1024   # Envoy's default max_response_headers_kb

# why reading from the client is paused (a bit each, so one reason's end does not undo another)
cdef enum:
    P_UPSTREAM_FULL = 1
    P_PIPELINE = 2
    P_PENDING = 4
    P_FAULT = 8         # a fault filter delay holds the request

# deadline kinds, checked by the worker's ticker
K_HEADERS, K_ROUTE, K_STREAM_IDLE, K_REQUEST = 1, 2, 3, 4
cdef enum:
    C_HEADERS = 1
    C_ROUTE = 2
    C_STREAM_IDLE = 3
    C_REQUEST = 4
    C_PER_TRY = 5
    C_PER_TRY_IDLE = 6

# route entry kinds (proxy.router)
cdef enum:
    R_DIRECT = 0
    R_REDIRECT = 1
    R_FORWARD = 2

# upstream states
cdef enum:
    IDLE = 0
    HEAD = 1
    BODY = 2
    TUNNEL = 3          # after a 101: raw bytes both ways (HTTP/1.1 upgrade, e.g. WebSocket)

cdef bytes CONTINUE_100 = b"HTTP/1.1 100 Continue\r\n\r\n"

# what failed, for the retry decision (Envoy's retry_on conditions)
cdef enum:
    F_CONNECT = 1       # connect failure or timeout: nothing reached the upstream
    F_RESET = 2         # the upstream connection ended before response headers
    F_PER_TRY = 3       # per_try_timeout
    F_STATUS = 4        # a response status
# RFC 9110 section 9.2.2: methods a retry may repeat once bytes reached an upstream
IDEMPOTENT = frozenset((b"GET", b"HEAD", b"OPTIONS", b"TRACE", b"PUT", b"DELETE"))
import socket as _socket
import ssl as _ssl
import struct as _struct
_LINGER_0 = _struct.pack("ii", 1, 0)
_UPGRADE_HOP = frozenset((b"connection", b"upgrade", b"server"))
cdef str RESET_BEFORE_HEADERS = "upstream connect error or disconnect/reset before headers. reset reason: "


cdef class HcmBase:
    """The per-request fields of an http_connection_manager (set by connection_manager.Hcm)."""


cdef class HcmStats:
    """The stat indexes one listener's connections write, looked up once per worker."""

    def __init__(self, SlotStats s, http, listener):
        self.s = s
        self.cx_total, self.cx_active = http.downstream_cx_total, http.downstream_cx_active
        self.cx_destroy, self.cx_protocol_error = http.downstream_cx_destroy, http.downstream_cx_protocol_error
        self.rq_total, self.rq_active = http.downstream_rq_total, http.downstream_rq_active
        self.rq_1xx, self.rq_time = http.downstream_rq_1xx, http.downstream_rq_time
        self.rq_timeout, self.rq_header_timeout = http.downstream_rq_timeout, http.downstream_rq_header_timeout
        self.no_route, self.rq_direct_response, self.rq_redirect = http.no_route, http.rq_direct_response, http.rq_redirect
        self.no_cluster = http.no_cluster
        self.l_cx_total, self.l_cx_active = listener.downstream_cx_total, listener.downstream_cx_active
        self.l_cx_destroy, self.l_cx_overflow = listener.downstream_cx_destroy, listener.downstream_cx_overflow


cdef class ClusterStats:
    """The stat indexes one cluster's requests and connections write, looked up once per worker."""

    def __init__(self, SlotStats s, c):
        self.s = s
        self.rq_total, self.rq_active, self.rq_1xx = c.upstream_rq_total, c.upstream_rq_active, c.upstream_rq_1xx
        self.rq_code_base, self.rq_time, self.rq_timeout = c.upstream_rq_code_base, c.upstream_rq_time, c.upstream_rq_timeout
        self.cx_total, self.cx_active, self.cx_destroy = c.upstream_cx_total, c.upstream_cx_active, c.upstream_cx_destroy
        self.cx_connect_fail, self.cx_connect_timeout = c.upstream_cx_connect_fail, c.upstream_cx_connect_timeout
        self.rq_retry, self.rq_retry_success = c.upstream_rq_retry, c.upstream_rq_retry_success
        self.rq_retry_limit_exceeded, self.retry_abandoned = c.upstream_rq_retry_limit_exceeded, c.retry_or_shadow_abandoned
        self.rq_pending_overflow, self.rq_retry_overflow = c.upstream_rq_pending_overflow, c.upstream_rq_retry_overflow
        self.cx_overflow, self.rq_pending_total = c.upstream_cx_overflow, c.upstream_rq_pending_total
        self.rq_pending_active = c.upstream_rq_pending_active
        self.rq_per_try_timeout = c.upstream_rq_per_try_timeout
        self.rec = NULL
        self.max_requests, self.max_retries = 1024, 3      # Envoy's defaults
        self.max_connections, self.max_pending = 1024, 1024
        self.max_host_connections = 1 << 62                # no per_host_thresholds: no limit
        self.min_retry_concurrency, self.budget_percent = 3, -1.0

    def connection_opened(self):
        self.s.inc(self.cx_total)
        self.s.gauge_add(self.cx_active, 1)

    def connection_closed(self):
        self.s.gauge_add(self.cx_active, -1)
        self.s.inc(self.cx_destroy)

    def count_shadow(self, int status):
        """A mirrored request ended (proxy.shadow): status 0 when no response came."""
        self.s.inc(self.rq_total)
        if 100 <= status <= 599:
            self.s.inc(self.rq_code_base + status - 100)
            self.s.inc(self.rq_1xx + status // 100 - 1)

    def count_shadow_abandoned(self):
        self.s.inc(self.retry_abandoned)

    cdef long long retry_limit(self):
        """Retries the cluster may have in flight: max_retries, or with a retry_budget a share of
        the requests in flight, at least min_retry_concurrency."""
        if self.budget_percent < 0:
            return self.max_retries
        return max(self.min_retry_concurrency,
                   <long long>(self.budget_percent / 100.0 * cyv_ldi64(&self.rec.cb_requests)))

    def set_breakers(self, HostTable table, long cluster_index, thresholds, per_host=None):
        """Envoy's circuit breakers for this cluster: the DEFAULT-priority thresholds (Envoy's
        defaults when the cluster has none), counted in the shared host table so the limits hold
        for the whole proxy, not per worker."""
        self.rec = table._cluster(cluster_index)
        if per_host is not None:
            self.max_host_connections = per_host["max_connections"]
        if thresholds is not None:
            self.max_requests = thresholds["max_requests"]
            self.max_retries = thresholds["max_retries"]
            self.max_connections = thresholds["max_connections"]
            self.max_pending = thresholds["max_pending_requests"]
            budget = thresholds.get("retry_budget")
            if budget is not None:
                self.budget_percent = budget["budget_percent"]
                self.min_retry_concurrency = budget["min_retry_concurrency"]


cdef class Downstream:
    """One client connection (uvloop calls the asyncio Protocol methods by name)."""

    def __init__(self, worker, hcm):
        self.w = worker
        self.active = worker.active
        self.hcm = hcm
        self.transport = None
        self.peer = b""
        self.buf = b""
        self.closed = False
        self.paused = 0
        self.keep_alive = True
        self.draining = False
        self.stream = False
        self.bridge = None
        self.bridge_head = None
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
        self.chunked_out = False
        self.ambiguous = False
        self.retried = False
        self.table = None
        self.slot = -1
        self.recorded = True
        self.logging = hcm.access_logs is not None
        self.status = 0
        self._reset_log_state()
        self.st = hcm.stats
        self.chain = hcm.filters            # per connection, not per request
        self.internal = hcm.internal is not None
        self.cst = None
        self.counted_rq = False
        self.retry = None
        self.body_copy = None
        self.tried = None
        self.route_deadline = 0.0
        self.cb_request = False
        self.cb_retry = False
        self.filter_extra = b""
        self.mirrors = None
        self.cb_pending = False
        self.wait_token = 0
        self.attempt_req = self.attempt_resp = False
        self.held = 0
        self.upgrading = False
        self.tunnel = False
        self.try_idle = 0.0
        self.try_end = 0.0

    # ---- asyncio.Protocol ---------------------------------------------------------------------
    def connection_made(self, transport):
        self.transport = transport
        peer = transport.get_extra_info("peername")
        self.peer_addr = peer
        self.peer = peer[0].encode() if peer else b""
        w = self.w
        self.last_io = w.now
        if self.stream:
            return      # one HTTP/2 stream: its connection is counted by its H2Downstream
        hcm = self.hcm
        hcm.conn_count += 1
        w.conns.add(self)
        cdef HcmStats st = self.st
        st.s.inc(st.cx_total)
        st.s.gauge_add(st.cx_active, 1)
        st.s.inc(st.l_cx_total)
        st.s.gauge_add(st.l_cx_active, 1)
        if hcm.conn_limit and hcm.conn_count > hcm.conn_limit:
            st.s.inc(st.l_cx_overflow)
            self.closed = True
            transport.abort()
            return
        guard = hcm.guard
        if guard is not None:
            # connection_limit filter, overload manager's global limit (proxy/filters/connection_limit.py)
            held = guard.admit(transport)
            if held < 0:
                self.closed = True
                return
            self.held = held
        if w.draining:
            self.draining = True
        if hcm.h2 is not None and hcm.h2.at_accept(self):
            return      # HTTP/2 (prior knowledge, or "h2" chosen by ALPN): proxy/http2/

    def connection_lost(self, exc):
        _now()
        if self.tunnel:
            self._end_tunnel()
        self.closed = True
        if self.stream:
            self._drop_exchange()
            return
        self.hcm.conn_count -= 1
        if self.held:
            self.hcm.guard.release(self.held)
            self.held = 0
        cdef HcmStats st = self.st
        st.s.gauge_add(st.cx_active, -1)
        st.s.inc(st.cx_destroy)
        st.s.gauge_add(st.l_cx_active, -1)
        st.s.inc(st.l_cx_destroy)
        self.w.conns.discard(self)
        self._drop_exchange()

    cdef _drop_exchange(self):
        self.active.discard(self)
        if self.counted_rq:
            self.counted_rq = False
            self.st.s.gauge_add(self.st.rq_active, -1)
        up = self.up
        if up is not None:
            # The client went away mid-exchange: the upstream connection is in an unknown state.
            self.up = None
            up.close()
        self._release_host()
        self.in_req = False

    def data_received(self, bytes data):
        if self.closed:
            return      # refused at accept (connection limits), or already being closed
        self.last_io = _now()
        if self.tunnel:
            self.up.transport.write(data)
            return
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
        _now()
        # A client may half-close after sending its request; the response still goes out.
        if not self.in_req:
            return False
        if self.tunnel:
            self._end_tunnel()
            return False
        self.keep_alive = False
        if not self.req_done and not self.resp_started:
            # ...but a request body cut short by the close can never complete (request bodies are
            # never close-delimited): refuse it and abort it upstream instead of waiting for bytes
            # that cannot come (until stream_idle_timeout, holding an upstream connection).
            self._fail(400, "request body truncated by the client's close", "DPE", True)
        return True

    # flow control: the client reads slower than the upstream sends
    def pause_writing(self):
        if self.up is not None:
            self.up.pause_upstream_reading()

    def resume_writing(self):
        if self.up is not None:
            self.up.resume_upstream_reading()

    # ---- request head -------------------------------------------------------------------------
    cdef _read_head(self, bytes buf):
        cdef HcmBase hcm = self.hcm
        cdef RequestHead head
        try:
            head = parse_request(buf, 0, hcm.max_head, True)
        except HttpError as e:
            if hcm.h2 is not None and hcm.h2.on_bad_head(self, buf):
                return      # the HTTP/2 preface (h2c with prior knowledge)
            self.buf = b""
            self.in_req = True      # nothing more is read from this connection
            self.keep_alive = False
            self.w.count("downstream_rq_rx_reset" if e.status == 400 else f"local_reply_{e.status}")
            self.st.s.inc(self.st.cx_protocol_error)
            log.debug("bad request from %s: %s", self.peer, e.reason)
            self._local(e.status, e.reason.encode("latin-1", "replace") if e.status != 400 else b"Bad Request",
                        True)
            return
        if head is None:
            self.buf = buf
            if self.deadline_kind == 0 and buf.strip(b"\r\n"):
                # request_headers_timeout runs from the first byte and does not restart per byte
                if hcm.headers_timeout:
                    self._set_deadline(hcm.headers_timeout, C_HEADERS)
                elif hcm.request_timeout:
                    self._set_deadline(hcm.request_timeout, C_REQUEST)
            return
        cdef Py_ssize_t n = head.head_len
        self.buf = buf[n:] if len(buf) > n else b""
        self._begin(head)

    cdef _begin(self, RequestHead head):
        cdef HcmBase hcm = self.hcm
        self.in_req = True
        self.seq += 1
        self.head = head
        self.req_start = _recent()
        self.resp_started = False
        self.retried = False
        self.ambiguous = False
        self.version = head.version
        self.status = 0
        self.cst = None
        self.upstream_head = None       # (the access log reads the x-request-id cyvoy generated)
        self.retry = None
        self.body_copy = None
        self.mirrors = None
        self.bridge = None
        cdef HcmStats st = self.st
        st.s.inc(st.rq_total)
        st.s.gauge_add(st.rq_active, 1)
        self.counted_rq = True
        if self.logging:
            self._reset_log_state()
        cdef bint is_head = head.method == b"HEAD"
        self.is_head = is_head
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

        cdef RouteEntry entry = hcm.routes.route(head.host, head.path, head)
        self.entry = entry
        cdef Target target = None
        if entry is not None and entry.kind == R_FORWARD:
            # the weighted cluster is chosen with the route, before the filters (as Envoy's
            # route entry is), so that the fault filter's upstream_cluster sees it
            if entry.single:
                target = <Target>entry.targets[0]
            elif entry.cluster_header is None:
                target = entry.pick_target()
            else:
                target = entry.header_target(head)   # None: cluster_not_found_response_code
        self.target = target
        self.filter_extra = b""
        chain = self.chain
        if chain is not None:
            verdict = chain.run(self, head, entry, target.cluster.name if target is not None else None)
            if verdict is not None:
                self._filter_verdict(verdict)
                return
        self._route()

    def _upgrade(self, entry, bytes upgrade):
        """An HTTP/1.1 upgrade request: the header lines that carry it upstream when the
        connection manager's (or the route's) upgrade_configs enable its type; b"" to forward it
        as a plain request (h2c, which a server may ignore: RFC 9110 7.8); None when refused
        with Envoy's 403 (an upgrade type not enabled)."""
        kind = upgrade.split(b",", 1)[0].strip().lower()
        if kind == b"h2c":
            return b""
        if not entry.upgrades.get(kind.decode("latin-1"), False):
            self._local_for_request(403, b"", "")    # Envoy: upgrade_failed
            return None
        self.upgrading = True
        self.retry = None           # a tunnel is never replayed or mirrored
        self.mirrors = None
        return b"connection: upgrade\r\nupgrade: " + upgrade + b"\r\n"

    def on_upgraded(self, ResponseHead rh, Upstream up, bytes rest):
        """The upstream answered 101: pass it on, then carry raw bytes both ways until either
        side closes. The route timeout no longer applies; stream_idle_timeout does."""
        self.tunnel = True
        self.resp_started = True
        self.status = 101
        self._record(101, False)
        cdef ClusterStats cst = self.cst
        if cst is not None:
            cst.s.inc(cst.rq_1xx)
            cst.s.inc(cst.rq_code_base + 1)
        value = rh.get(b"upgrade") or self.head.upgrade
        # the 101's own Connection/Upgrade (hop-by-hop) are replaced by the proxy's
        headers = _remove_lines(rh.headers, _UPGRADE_HOP)
        self.transport.write(build_response_head(
            101, headers, b"connection: upgrade\r\nupgrade: " + value + b"\r\n" + self.hcm.server_line,
            -3, True))
        if rest:
            self.transport.write(rest)
        if self.buf:                # client bytes that came before the 101
            up.transport.write(self.buf)
            self.buf = b""
            self._resume(P_PIPELINE)
        self.route_deadline = 0.0
        self.try_end = self.try_idle = 0.0
        if self.hcm.stream_idle_timeout:
            self._set_deadline(self.hcm.stream_idle_timeout, C_STREAM_IDLE)
        else:
            self.deadline_kind = 0

    def _end_tunnel(self):
        if not self.tunnel:
            return
        self.tunnel = False
        up = self.up
        self.up = None
        if up is not None:
            up.close()
        self.keep_alive = False
        if self.in_req:
            self._finish()          # access log, stats, and the client connection closes

    def _filter_verdict(self, verdict):
        """A filter answered (proxy.filters): a local reply, or a delay before going on."""
        if type(verdict) is FilterReply:
            self._local_for_request(verdict.status, verdict.body, verdict.flag, verdict.headers)
            return
        self._set_flag(verdict.flag)
        self._pause(P_FAULT)    # nothing more is read from the client while the request waits
        if self.deadline_kind == C_HEADERS:
            self.deadline_kind = 0
        self.w.loop.call_later(verdict.seconds, self._after_delay, self.seq, verdict)

    def _after_delay(self, long long seq, verdict):
        _now()
        if self.seq != seq or not self.in_req or self.closed:
            verdict.cancel()
            return
        self._resume(P_FAULT)
        after = verdict.then()
        if after is None:
            target = self.target
            after = self.chain.run(self, self.head, self.entry,
                                         target.cluster.name if target is not None else None,
                                         verdict.next)
        if after is not None:
            self._filter_verdict(after)
            return
        self._route()

    cdef _route(self):
        """The router: local answers, else pick a host and send the request upstream."""
        cdef HcmBase hcm = self.hcm
        cdef RequestHead head = self.head
        cdef HcmStats st = self.st
        cdef RouteEntry entry = self.entry
        if entry is None or head.method == b"CONNECT":
            st.s.inc(st.no_route)
            self._local_for_request(404, b"", "NR")
            return
        if entry.kind != R_FORWARD:
            self._local_route(entry, head)
            return
        cdef Target target = self.target
        if target is None:
            st.s.inc(st.no_cluster)
            self._local_for_request(entry.not_found_code, b"", "NC")
            return
        cdef bytes upgrade_lines = b""
        self.upgrading = False
        if head.upgrade is not None:
            upgrade_lines = self._upgrade(entry, head.upgrade)
            if upgrade_lines is None:
                return
        cdef ClusterBase cluster = target.cluster
        hash_fn = entry.hash_fn
        key = hash_fn(head, self.peer) if hash_fn is not None else None
        self.hash_key = key
        cdef HostBase host = cluster.pick_host(key)
        if host is None:
            self._local_for_request(503, b"no healthy upstream", "UH")
            return
        if not self._use_host(host, cluster):
            self._overflow()
            return
        self.route_deadline = 0.0
        self.try_idle = 0.0
        self.try_end = 0.0
        self.sent_upstream = False
        self.retry = entry.retry
        self.route_timeout = entry.timeout
        cdef bytes timeout_line = entry.timeout_line
        if entry.grpc_timeout_max >= 0:
            timeout_line = self._grpc_timeout(head, entry, timeout_line)
        if self.internal:
            # internal_address_config: internal clients may steer retries and timeouts
            timeout_line = self._envoy_request_headers(head, timeout_line)
        self.attempt = 1
        if self.retry is not None and self.retry.request_fn is not None and not self.retry.request_fn(head):
            self.retry = None   # retriable_request_headers: this request is not one to retry
        if self.retry is not None:
            self.retries_left = self.retry.num_retries
            self.retry_after = -1.0
            self.body_copy = []
            self.body_copy_size = 0
            self.tried = {host.slot}
        self.mirrors = None
        extras = entry.extras       # None on most routes: one lookup for the rarely used options
        self.attempt_req = self.attempt_resp = False
        if extras is not None:
            self.attempt_req, self.attempt_resp = extras.attempt_in_request, extras.attempt_in_response
            if extras.mirrors:
                self.mirrors = [(c, m.host_suffix) for m in extras.mirrors for c in (m.pick(head),)
                                if c is not None]
            if self.mirrors and self.body_copy is None:
                self.body_copy = []     # a body is mirrored only while it is held
                self.body_copy_size = 0

        # ---- upstream request head: one fast-path call
        cdef bytes path = head.path
        if entry.prefix_rewrite is not None:
            path = _rewrite(path, entry)
        cdef bytes host_hdr
        if entry.host_rewrite is not None:
            host_hdr = entry.host_rewrite
        elif entry.auto_host_rewrite and host.host_header is not None:
            host_hdr = host.host_header
        else:
            host_hdr = head.host
        cdef bytes headers = head.headers
        cdef bytes extra = timeout_line
        if self.filter_extra:
            extra = self.filter_extra + extra
        if upgrade_lines:
            extra = upgrade_lines + extra
        if target.req is not None:
            headers, more = target.req.apply(headers, head.get)
            extra = more + extra
        if hcm.user_agent is not None:
            extra = self._user_agent(head, hcm.user_agent) + extra
        self.upstream_head = upstream_request_head(head, path, host_hdr, headers, hcm.use_remote_address,
                                                   self.peer, hcm.scheme, hcm.gen_request_id, extra)
        cdef bint is_head = self.is_head
        if head.expect_continue and not self.req_done:
            # Envoy answers Expect: 100-continue itself and does not forward it.
            self.transport.write(CONTINUE_100)
        self.pending = None
        self.up = None
        cdef bint done_with_head = self.req_done
        cdef long long seq
        if not done_with_head:
            if hcm.request_timeout:
                self._set_deadline(hcm.request_timeout, C_REQUEST)
            if is_head or head.method == b"GET":
                # A body on GET/HEAD is ambiguous (desync-guardian): forward it, but reuse
                # neither connection afterwards.
                self.keep_alive = False
                self.ambiguous = True
            if self.buf:
                # Decode the body bytes that came with the head before anything goes upstream,
                # so a request refused for its body never reaches the upstream at all.
                seq = self.seq
                data = self.buf
                self.buf = b""
                self._request_body(data)
                if self.seq != seq or not self.in_req:
                    return
        if not self._dispatch(host):
            return
        if done_with_head:
            self._arm_route_timeout()
            if self.mirrors:
                self._mirror()

    cdef bint _use_host(self, HostBase host, ClusterBase cluster):
        """Take the host for this attempt; False when the cluster's max_requests is reached."""
        cdef ClusterStats cst = cluster.stats
        if cst.rec != NULL:
            if not ht_cb_acquire(&cst.rec.cb_requests, cst.max_requests):
                cst.s.inc(cst.rq_pending_overflow)
                return False
            self.cb_request = True
        # the host counts this request as active (all workers see it) until the attempt ends
        self.table = cluster.table
        self.slot = host.slot
        if self.logging:
            self.host = host
        self.recorded = False
        self.ewma_decay_ns = cluster.ewma_decay_ns
        self.table.inc_active(self.slot)
        self.cst = cst
        cst.s.inc(cst.rq_total)
        cst.s.gauge_add(cst.rq_active, 1)
        return True

    cdef bint _dispatch(self, HostBase host):
        """Send the request on an idle pooled connection to `host` if there is one, else open one;
        past max_connections, wait for one (Envoy's pending request). False when the request
        ended here (max_pending_requests overflow: 503)."""
        cdef ClusterBase cluster = self.target.cluster
        # HTTP/2 to the host: always, or for HTTP/2 clients (use_downstream_protocol_config)
        cdef bint mux = cluster.h2 is not None and (cluster.h2_always or self.stream)
        cdef list idle = host.idle_h2 if mux else host.idle
        cdef Upstream up
        while idle:
            up = idle.pop()
            if not up.closed:
                self._send_upstream(up)
                return True
        # no idle connection: the request is pending until a connection is attached to it
        cdef ClusterStats cst = self.cst
        if cst.rec != NULL:
            if not ht_cb_acquire(&cst.rec.cb_pending, cst.max_pending):
                cst.s.inc(cst.rq_pending_overflow)
                self._overflow()
                return False
            self.cb_pending = True
            cst.s.inc(cst.rq_pending_total)
            cst.s.gauge_add(cst.rq_pending_active, 1)
        if mux:
            # streams share connections: max_requests bounds them, not max_connections
            self.w.loop.create_task(self._connect(host, self.seq, True))
        elif _take_connection(cst, host, self.table):
            self.w.loop.create_task(self._connect(host, self.seq))
        else:
            self.wait_token += 1
            host.waiting.append((self, self.wait_token))
        return True

    cdef _release_pending(self):
        if self.cb_pending:
            self.cb_pending = False
            ht_cb_release(&self.cst.rec.cb_pending)
            self.cst.s.gauge_add(self.cst.rq_pending_active, -1)

    def _waiting_for(self, long long token):
        """Still the pending request that queued with `token` (and not served since)."""
        return (self.wait_token == token and self.cb_pending and self.in_req and not self.closed
                and self.up is None)

    cdef _send_upstream(self, Upstream up):
        self._release_pending()
        self.up = up
        self.sent_upstream = True
        cdef bytes head = self.upstream_head
        if self.attempt_req:    # include_request_attempt_count
            head = head[:len(head) - 2] + b"x-envoy-attempt-count: %d\r\n\r\n" % self.attempt
        if self.pending:
            # the body that came before the connection: in the same write as the head (one
            # syscall for a small POST instead of two)
            self.pending.insert(0, head)
            head = b"".join(self.pending)
            self.pending = None
            self.pending_size = 0
            up.send(self, head, self.is_head)
            self._resume(P_PENDING)
        else:
            up.send(self, head, self.is_head)

    async def _connect(self, host, long long seq, bint mux=False):
        cluster = self.target.cluster
        loop = self.w.loop
        w = self.w
        table = cluster.table
        try:
            if mux:
                _, up = await asyncio.wait_for(
                    cluster.h2.connect(lambda: Upstream(host, w, cluster.stats), host),
                    cluster.connect_timeout)
            else:
                _, up = await asyncio.wait_for(
                    loop.create_connection(lambda: Upstream(host, w, cluster.stats, table), host.address,
                                           host.port, ssl=cluster.ssl, server_hostname=cluster.sni),
                    cluster.connect_timeout)
        except asyncio.TimeoutError:
            reason = "connection timeout"
            _count_connect_fail(cluster.stats, True)
            if not mux:
                _release_connection(cluster.stats, host, table)
        except OSError as e:
            _count_connect_fail(cluster.stats, False)
            if not mux:
                _release_connection(cluster.stats, host, table)
            # Envoy's wording: "remote connection failure, transport failure reason: delayed connect error: 111"
            if isinstance(e, _ssl.SSLError):
                reason = f"remote connection failure, transport failure reason: TLS error: {e.reason or e}"
            else:
                reason = f"remote connection failure, transport failure reason: delayed connect error: {e.errno}"
        else:
            _now()
            if up.closed:
                # reset between its handshake and now (a dying upstream): nothing was sent on it,
                # so this is a connect failure (its circuit-breaker unit went back on close)
                _count_connect_fail(cluster.stats, False)
                reason = "remote connection failure, transport failure reason: reset before use"
            elif self.seq != seq or not self.in_req or self.closed or self.up is not None:
                _park(up)   # the request is gone; the fresh connection is still good
                return
            else:
                self._send_upstream(up)
                return
        _now()
        if self.seq == seq and self.in_req and not self.closed:
            w.count("upstream_cx_connect_fail")
            self._record(503, True)
            if self._retry_wanted(F_CONNECT, 503, None) == 1 and self._schedule_retry():
                return
            self._fail(503, RESET_BEFORE_HEADERS + reason, "UF")

    # ---- request body ---------------------------------------------------------------------------
    cdef _request_body(self, bytes data):
        cdef long long left = self.body_left
        cdef Py_ssize_t n, c
        if left > 0:
            n = len(data)
            if self.logging:
                self.rx_body += n if n <= left else left
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
            self._fail(400, "invalid chunked body: " + e.reason, "DPE", True)
            return
        if payload:
            if self.logging:
                self.rx_body += len(payload)
            self._to_upstream(encode_chunk(payload))
        if self.dec.done:
            self._to_upstream(last_chunk(self.dec.trailers))
            c = self.dec.consumed
            if c < len(data):
                self.buf = data[c:]
            self._request_complete()

    cdef _to_upstream(self, bytes data):
        if self.body_copy is not None:
            # keep the body for a retry, up to the cluster's buffer limit (Envoy's
            # per_connection_buffer_limit_bytes); a larger body streams on and is not retried
            self.body_copy_size += len(data)
            if self.body_copy_size > self.target.cluster.buffer_limit:
                self.body_copy = None
                if self.cst is not None:
                    self.cst.s.inc(self.cst.retry_abandoned)
                log.debug("request body over the buffer limit: this request will not be retried")
            else:
                self.body_copy.append(data)
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

    cdef _request_complete(self):
        self.req_done = True
        if self.logging:
            self.req_end = _recent()
        if self.mirrors:
            self._mirror()
        if self.buf and len(self.buf) > PIPELINE_LIMIT:
            self._pause(P_PIPELINE)
        self._arm_route_timeout()

    cdef _mirror(self):
        """Send the request's shadows (request_mirror_policies), now that all of it is in."""
        mirrors = self.mirrors
        self.mirrors = None
        if self.body_copy is None:      # over the buffer limit: counted when it was dropped
            return
        body = list(self.body_copy) if self.body_copy else None
        timeout = self.route_timeout
        for cluster, suffix in mirrors:
            self.w.shadows.send(cluster, shadow_head(self.upstream_head, suffix), body, timeout)

    cdef _arm_route_timeout(self):
        # Envoy's route timeout starts when the downstream request is complete; it covers
        # every try of a retried request.
        cdef double t = self.route_timeout
        if t:
            self.route_deadline = _recent() + t
            self.deadline = self.route_deadline
            self.deadline_kind = C_ROUTE
            self.active.add(self)
            if self.retry is not None:
                self._arm_try_deadline()
        elif self.hcm.stream_idle_timeout:
            self._set_deadline(self.hcm.stream_idle_timeout, C_STREAM_IDLE)
        else:
            self.deadline_kind = 0

    # ---- response (called by Upstream) ----------------------------------------------------------
    cdef on_response_head(self, ResponseHead rh, Upstream up, bytes body):
        cdef int wanted
        if self.retry is not None:
            wanted = self._retry_wanted(F_STATUS, rh.status, rh)
            if wanted == 1 and self._retry_possible():
                if self.retry.reset_headers:
                    self.retry_after = _reset_interval(self.retry, rh)
                # drop this answer (and its connection) before a byte of it went downstream
                self._record(rh.status, False)
                self.up = None
                up.close()
                if self._schedule_retry():
                    return
                self._fail(rh.status, "upstream answered " + str(rh.status), "UO")
                return
            if self.attempt > 1 and self.cst is not None:
                self.cst.s.inc(self.cst.rq_retry_success)
        self.resp_started = True
        cdef double elapsed_ms = (_recent() - self.req_start) * 1000.0
        cdef long svc = <long>elapsed_ms
        self._record(rh.status, False)
        self.status = rh.status
        cdef ClusterStats cst = self.cst
        cdef int code = rh.status
        if cst is not None and 100 <= code <= 599:
            cst.s.inc(cst.rq_1xx + code // 100 - 1)
            cst.s.inc(cst.rq_code_base + code - 100)
            record_time(cst.s, cst.rq_time, elapsed_ms)
        if self.logging:
            self.resp = rh
            self.svc_ms = svc
            self.resp_first = _recent()
            self.tx_body += len(body)
        cdef HcmBase hcm = self.hcm
        cdef bytes extra
        if 0 <= svc < 1000:
            extra = <bytes>hcm.svc_lines[svc]
        else:
            extra = b"x-envoy-upstream-service-time: %d\r\n" % svc + hcm.server_line
        if self.attempt_resp:   # include_attempt_count_in_response
            extra += b"x-envoy-attempt-count: %d\r\n" % self.attempt
        cdef bytes headers = rh.headers
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
        cdef bint keep = self.keep_alive and not self.draining
        cdef long long framing
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
        if self.bridge is not None:
            # grpc_http1_bridge: held until the trailers decide the status (proxy/filters/)
            self.chunked_out = False
            self.bridge_head = (rh.status, headers, extra, keep)
            if body:
                self.bridge.append(body)
            return
        # one write (one syscall, one copy) for a small response whose body came with its head
        self.transport.write(build_response_head(rh.status, headers, extra, framing, keep,
                                                 body if body else None))

    cdef on_response_body(self, bytes data):
        self.last_io = _recent()
        if self.logging:
            self.tx_body += len(data)
        if self.bridge is not None:
            self.bridge.append(data)
            if len(self.bridge) % 64 == 0 and sum(map(len, self.bridge)) > self.target.cluster.buffer_limit:
                # Envoy's buffering filters answer an over-limit response with a 500; the head
                # is not out yet, but the upstream is mid-body: the exchange ends here
                self.bridge = None
                self.resp_started = False
                self._fail(500, "grpc_http1_bridge: response over the buffer limit", "")
            return
        if self.chunked_out:
            self.transport.write(encode_chunk(data))
        else:
            self.transport.write(data)

    cdef on_response_end(self, bytes trailers, Upstream up):
        if self.bridge is not None:
            self._bridge_end(trailers)
        elif self.chunked_out:
            self.transport.write(last_chunk(trailers))
        if up.reusable and up.keep_alive and self.req_done and not up.closed and not self.ambiguous:
            _park(up)
        else:
            up.close()
        self.up = None
        self._finish()

    cdef on_upstream_reset(self, Upstream up, str reason):
        if not self.resp_started and not up.got_bytes and up.uses > 1 and not self.retried \
                and self.head.content_length <= 0 and not self.head.chunked:
            # A pooled connection the upstream closed as we reused it: nothing was received and
            # the request had no body, so sending it again on a fresh connection is safe.
            self.retried = True
            self.up = None
            self._dispatch(up.host)
            return
        self.up = None
        self._record(503, True)
        if self._retry_wanted(F_RESET, 503, None) == 1 and self._schedule_retry():
            return
        self._fail(503, RESET_BEFORE_HEADERS + reason, "UC")

    cdef on_upstream_error(self, int status, str reason, str flag):
        self.up = None
        self._record(status, False)
        self._fail(status, reason, flag)

    # ---- end of an exchange ---------------------------------------------------------------------
    cdef _record(self, int status, bint local_failure):
        """The outcome of this request for its host: outlier counters and latency EWMA."""
        if self.recorded or self.slot < 0:
            return
        self.recorded = True
        cdef double t = _recent()
        cdef long long now = <long long>(t * 1e9)
        cdef long long latency = -1
        if not local_failure:
            latency = <long long>((t - self.req_start) * 1e9)
        self.table.record(self.slot, status, local_failure, latency, now, self.ewma_decay_ns)

    cdef _release_host(self):
        self._release_pending()
        if self.cb_request:
            self.cb_request = False
            ht_cb_release(&self.cst.rec.cb_requests)
        if self.cb_retry:
            self.cb_retry = False
            ht_cb_release(&self.cst.rec.cb_retries)
        if self.slot >= 0:
            self.table.dec_active(self.slot)
            self.slot = -1
            if self.cst is not None:
                self.cst.s.gauge_add(self.cst.rq_active, -1)

    # ---- retries (the route's retry_policy) ----------------------------------------------------
    cdef int _retry_wanted(self, int kind, int status, ResponseHead rh):
        """0: not a retriable failure; 1: retry it; 2: retriable but no retry left (URX)."""
        r = self.retry
        if r is None or self.closed or self.resp_started:
            return 0
        on = r.retry_on
        cdef bint match
        cdef bint refused = False
        if kind == F_CONNECT:
            match = ("connect-failure" in on or "5xx" in on or "gateway-error" in on
                     or "reset-before-request" in on or "reset" in on)
        elif kind == F_RESET:
            match = "reset" in on or "5xx" in on or "gateway-error" in on
        elif kind == F_PER_TRY:
            match = "5xx" in on or "gateway-error" in on   # Envoy retries per-try timeouts only for these
        else:
            match = (("5xx" in on and status >= 500)
                     or ("gateway-error" in on and (status == 502 or status == 503 or status == 504))
                     or ("retriable-4xx" in on and status == 409)
                     or ("retriable-status-codes" in on and status in r.retriable_status_codes)
                     or ("envoy-ratelimited" in on and rh.get(b"x-envoy-ratelimited") is not None)
                     or ("retriable-headers" in on and r.headers_fn is not None and r.headers_fn(rh)))
            if not match and r.grpc_codes is not None:
                # a gRPC server's trailers-only answer: it refused the call, a retry is safe
                grpc = rh.get(b"grpc-status")
                match = refused = grpc is not None and grpc.isdigit() and int(grpc) in r.grpc_codes
        if not match:
            return 0
        if kind != F_CONNECT and not refused and self.sent_upstream and self.head.method not in IDEMPOTENT:
            return 0    # RFC 9110 9.2.2: never repeat a non-idempotent request the upstream may have seen
        if self.body_copy is None:
            return 0    # the body was larger than the buffer limit: nothing to replay
        if self.retries_left <= 0:
            self._set_flag("URX")
            if self.cst is not None:
                self.cst.s.inc(self.cst.rq_retry_limit_exceeded)
            return 2
        return 1

    cdef bint _schedule_retry(self):
        """Retry after Envoy's fully jittered exponential back-off: retry k waits
        U[0, min(base_interval * 2^(k-1), max_interval)) (backoff_strategy.cc, current code).
        False when the cluster's retry circuit breaker (max_retries or retry_budget) is full."""
        r = self.retry
        cdef ClusterStats cst = self.cst
        cdef long long limit
        if cst is not None and cst.rec != NULL:
            limit = cst.retry_limit()
            if not ht_cb_acquire(&cst.rec.cb_retries, limit):
                cst.s.inc(cst.rq_retry_overflow)
                return False
        self._release_host()
        if cst is not None and cst.rec != NULL:
            self.cb_retry = True      # released when the retried attempt ends
        self.retries_left -= 1
        self.attempt += 1
        if self.cst is not None:
            self.cst.s.inc(self.cst.rq_retry)
        self.try_idle = 0.0
        self.try_end = 0.0
        if self.route_deadline and (self.deadline_kind == C_PER_TRY or self.deadline_kind == C_PER_TRY_IDLE):
            self.deadline = self.route_deadline
            self.deadline_kind = C_ROUTE
        if self.retry_after >= 0:
            # rate_limited_retry_back_off: the upstream said when; Envoy waits U[t, 1.5 t)
            delay = self.retry_after * (1.0 + 0.5 * _random())
            self.retry_after = -1.0
        else:
            delay = backoff_delay(self.attempt - 1, r.base_interval, r.max_interval, _random())
        self.w.loop.call_later(delay, self._do_retry, self.seq)
        return True

    def _envoy_request_headers(self, RequestHead head, bytes timeout_line):
        """x-envoy-retry-on, x-envoy-max-retries, x-envoy-upstream-rq-timeout-ms and
        x-envoy-upstream-rq-per-try-timeout-ms from an internal client (router_filter.rst);
        returns the x-envoy-expected-rq-timeout-ms line to send."""
        get = head.get
        retry_on = get(b"x-envoy-retry-on")
        max_retries = get(b"x-envoy-max-retries")
        timeout = get(b"x-envoy-upstream-rq-timeout-ms")
        per_try = get(b"x-envoy-upstream-rq-per-try-timeout-ms")
        if retry_on is None and max_retries is None and timeout is None and per_try is None:
            return timeout_line
        if not self._internal(head):
            return timeout_line
        plan = self.retry
        copied = False
        if retry_on is not None:
            tokens = {t.strip() for t in retry_on.decode("latin-1").split(",")} & RETRY_ON_SUPPORTED
            if tokens:      # OR-ed with the route's policy; alone, Envoy's defaults (1 retry)
                plan = plan.copy() if plan is not None else RetryPlan(None)
                copied = True
                plan.retry_on = plan.retry_on | tokens
        if max_retries is not None and max_retries.strip().isdigit() and plan is not None and plan.retry_on:
            if not copied:
                plan = plan.copy()
                copied = True
            plan.num_retries = int(max_retries)
        if timeout is not None and timeout.strip().isdigit():
            self.route_timeout = int(timeout) / 1000.0
            timeout_line = (b"x-envoy-expected-rq-timeout-ms: %d\r\n" % int(timeout)
                            if self.route_timeout else b"")
        if per_try is not None and per_try.strip().isdigit():
            t = int(per_try) / 1000.0
            if t and (not self.route_timeout or t < self.route_timeout):   # else ignored, as Envoy
                if plan is None:
                    plan = RetryPlan(None)
                    plan.retry_on = frozenset()
                elif not copied:
                    plan = plan.copy()
                plan.per_try_timeout = t
        self.retry = plan
        return timeout_line

    def _user_agent(self, RequestHead head, bytes cluster):
        """add_user_agent (Envoy's connection_manager_utility.cc): the service cluster (node.cluster)
        as x-envoy-downstream-service-cluster, and as user-agent when the request has none."""
        lines = b"x-envoy-downstream-service-cluster: " + cluster + b"\r\n"
        if not head.get(b"user-agent"):
            lines += b"user-agent: " + cluster + b"\r\n"
        return lines

    def _bridge_end(self, bytes trailers):
        """grpc_http1_bridge: the held response, with grpc-status and grpc-message moved from
        the trailers into the headers; a non-zero grpc-status makes it a 503."""
        status, headers, extra, keep = self.bridge_head
        body = b"".join(self.bridge)
        self.bridge = None
        self.bridge_head = None
        grpc_status = None
        for line in trailers.split(b"\r\n"):
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"grpc-status" or name == b"grpc-message":
                extra += name + b": " + value.strip() + b"\r\n"
                if name == b"grpc-status":
                    grpc_status = value.strip()
        if grpc_status is None:
            for line in headers.split(b"\r\n"):     # a trailers-only response
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"grpc-status":
                    grpc_status = value.strip()
        if grpc_status is not None and grpc_status != b"0":
            status = 503
            self.status = 503
        self.transport.write(build_response_head(status, headers, extra, len(body), keep, body))

    def _grpc_timeout(self, RequestHead head, entry, bytes timeout_line):
        """max_stream_duration.grpc_timeout_header_max: the client's grpc-timeout is the route
        timeout, at most the max (0: no cap), less grpc_timeout_header_offset (Envoy's router
        applies it the same way, router.cc FilterUtility::finalTimeout)."""
        raw = head.get(b"grpc-timeout")
        t = _grpc_timeout_s(raw) if raw is not None else -1.0
        if t < 0:
            return timeout_line
        if entry.grpc_timeout_max > 0 and (t == 0 or t > entry.grpc_timeout_max):
            t = entry.grpc_timeout_max
        if entry.grpc_timeout_offset and t > entry.grpc_timeout_offset:
            t -= entry.grpc_timeout_offset
        self.route_timeout = t
        return b"x-envoy-expected-rq-timeout-ms: %d\r\n" % int(t * 1000) if t else b""

    def _internal(self, RequestHead head):
        """Envoy's internal request: after x-forwarded-for handling there is exactly one address
        and it is in internal_address_config (use_remote_address: the peer, with no incoming
        XFF; else the single XFF entry)."""
        hcm = self.hcm
        if hcm.use_remote_address:
            if head.xff is not None:
                return False
            addr = self.peer
        else:
            if head.xff is None or b"," in head.xff:
                return False
            addr = head.xff.strip()
        try:
            ip = _ip_address(addr.decode("latin-1"))
        except ValueError:
            return False
        return any(ip in net for net in hcm.internal)

    def _retry_possible(self):
        """Whether the retry circuit breaker has room (checked before a response is dropped)."""
        cdef ClusterStats cst = self.cst
        cdef long long limit
        if cst is None or cst.rec == NULL:
            return True
        limit = cst.retry_limit()
        if cyv_ldi64(&cst.rec.cb_retries) >= limit:
            cst.s.inc(cst.rq_retry_overflow)
            return False
        return True

    def _overflow(self):
        """A circuit breaker is full: Envoy's 503 with x-envoy-overloaded, flag UO."""
        self._set_flag("UO")
        self.w.count("upstream_rq_pending_overflow")
        self._local(503, b"upstream connect error or disconnect/reset before headers. reset reason: overflow",
                    not self.keep_alive or not self.req_done, b"x-envoy-overloaded: true\r\n")

    def _do_retry(self, long long seq):
        _now()
        if self.seq != seq or self.closed or not self.in_req:
            return
        r = self.retry
        cdef ClusterBase cluster = self.target.cluster
        key = self.hash_key
        cdef HostBase host = None
        for _ in range(r.host_selection_retry_max_attempts + 1):
            host = cluster.pick_host(key)
            if host is None or not r.previous_hosts or host.slot not in self.tried:
                break
        if host is None:
            self._fail(503, "no healthy upstream", "UH")
            return
        self.tried.add(host.slot)
        if not self._use_host(host, cluster):
            self._overflow()
            return
        if self.body_copy:
            self.pending = list(self.body_copy)
            self.pending_size = self.body_copy_size
        if self._dispatch(host):
            self._arm_try_deadline()

    cdef _arm_try_deadline(self):
        """per_try_timeout and per_try_idle_timeout of the try that starts now."""
        r = self.retry
        self.try_idle = 0.0
        if r is None or not self.req_done or not (r.per_try_timeout or r.per_try_idle_timeout):
            return
        cdef double now = _now()
        self.try_end = now + r.per_try_timeout if r.per_try_timeout else 0.0
        self.try_idle = r.per_try_idle_timeout
        self.try_io = now
        self._next_try_deadline()

    cdef _next_try_deadline(self):
        """The ticker's one deadline: the earliest of the route's end, this try's end and this
        try's idle end (per_try_idle_timeout, restarted by every byte from the upstream)."""
        cdef double at = self.route_deadline
        cdef int kind = C_ROUTE
        if self.try_end and (at == 0.0 or self.try_end < at):
            at, kind = self.try_end, C_PER_TRY
        if self.try_idle and (at == 0.0 or self.try_io + self.try_idle < at):
            at, kind = self.try_io + self.try_idle, C_PER_TRY_IDLE
        if at:
            self.deadline = at
            self.deadline_kind = kind
            self.active.add(self)

    cdef _reset_log_state(self):
        self.flags = ""
        self.rx_body = 0
        self.tx_body = 0
        self.req_end = 0.0
        self.resp_first = 0.0
        self.host = None
        self.resp = None
        self.svc_ms = -1

    cdef _set_flag(self, str flag):
        self.flags = flag if not self.flags else self.flags + "," + flag

    cdef _finish(self):
        self._release_host()
        cdef HcmStats st = self.st
        cdef int code = self.status
        if self.counted_rq:
            self.counted_rq = False
            st.s.gauge_add(st.rq_active, -1)
            if 100 <= code <= 599:
                st.s.inc(st.rq_1xx + code // 100 - 1)
            record_time(st.s, st.rq_time, (_recent() - self.req_start) * 1000.0)
        if self.logging:
            self._access_log()
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
        self.last_io = _recent()
        if self.paused & P_PIPELINE:
            self._resume(P_PIPELINE)
        if self.buf:
            data = self.buf
            self.buf = b""
            self._read_head(data)

    def _fail(self, int status, str reason, str flag, bint bad_request=False):
        """A local reply if nothing was sent yet, else a reset: never a half-written response."""
        up = self.up
        if up is not None:
            self.up = None
            up.close()
        if self.closed:
            return
        self.w.count(f"local_reply_{status}")
        if flag:
            self._set_flag(flag)
        log.debug("%s %s -> %d %s (%s)", self.head.method if self.head is not None else b"",
                  self.head.path if self.head is not None else b"", status, reason, flag)
        if self.in_req and self.resp_started:
            self.closed = True
            _reset(self.transport)
            return
        if not self.req_done or bad_request:
            self.keep_alive = False   # the rest of the request body would be read as a new request
        self._local(status, reason.encode("latin-1", "replace"), not self.keep_alive)

    def _local(self, int status, bytes body, bint close, bytes extra=b"", bytes headers=b""):
        if close:
            self.keep_alive = False
        self.resp_started = True
        self.status = status
        if self.logging:
            self.resp = None
            self.tx_body += 0 if self.is_head else len(body)
        head = self.head
        if head is not None and (head.get(b"content-type") or b"").startswith(b"application/grpc"):
            # a gRPC client gets a gRPC error (Envoy's local replies to gRPC requests)
            self.transport.write(local_reply.render_grpc(status, body, self.hcm.server_line, extra, headers,
                                                         not self.keep_alive))
        else:
            self.transport.write(local_reply.render(status, body, self.hcm.server_line, extra, headers,
                                                    not self.keep_alive, self.is_head))
        self._finish()

    def _local_for_request(self, int status, bytes body, str flag="", bytes extra=b""):
        self.w.count(f"local_reply_{status}")
        if flag:
            self._set_flag(flag)
        if not self.req_done:
            self.keep_alive = False   # we will not read the body it is sending
        self._resume(P_FAULT)
        self._local(status, body, not self.keep_alive, extra)

    def _local_route(self, entry, RequestHead head):
        target = entry.targets[0]
        headers, extra = (b"", b"")
        if target.resp is not None:
            headers, extra = target.resp.apply(b"", lambda name: None)
        if not self.req_done:
            self.keep_alive = False
        if entry.kind == R_DIRECT:
            self.st.s.inc(self.st.rq_direct_response)
            self._local(entry.status, entry.body, not self.keep_alive, extra, headers)
        else:  # REDIRECT
            self.st.s.inc(self.st.rq_redirect)
            loc = local_reply.redirect_location(entry.redirect, self.hcm.scheme, head.host, head.path, entry)
            self._local(entry.redirect.response_code, b"", not self.keep_alive,
                        extra + b"location: " + loc + b"\r\n", headers)

    def _access_log(self):
        """Envoy's access log entry for the exchange that just ended (only when configured):
        each access log gets the line in Envoy's default format, formatted in C, or its own
        format of the LogRecord; each is built only if some access log needs it."""
        self.log_now = _now()
        if self.local_addr is None and self.transport is not None:
            self.local_addr = self.transport.get_extra_info("sockname")   # once per connection
        logs = self.hcm.access_logs
        if not logs.all_default:
            logs.log_request(self._default_log_line, self._log_record)
            return
        try:
            line = self._default_line()
            for append in logs.appends:
                append(line)
        except Exception:
            logs.error()

    cdef bytes _protocol(self):
        return b"HTTP/2" if self.stream else b"HTTP/1.1" if self.version == 11 else b"HTTP/1.0"

    cdef object _generated_request_id(self):
        """The x-request-id cyvoy generated for the request in flight (None: none generated,
        the client sent one or the request did not go upstream)."""
        if self.head.request_id is None and self.upstream_head is not None:
            at = self.upstream_head.find(b"\r\nx-request-id: ")
            if at >= 0:
                return self.upstream_head[at + 16:at + 52]
        return None

    def _default_log_line(self):
        return self._default_line()

    cdef bytes _default_line(self):
        """The request in Envoy's default format (proxy/_fastpath/accesslog.pyx), from the same
        values _log_record puts in a LogRecord."""
        cdef double now = self.log_now
        cdef RequestHead head = self.head
        cdef double start = self.req_start if head is not None else now
        method = path = xff = ua = rid = authority = None
        if head is not None:
            method, authority = head.method, head.host
            path = head.header(b"x-envoy-original-path") or head.path
            xff = head.header(b"x-forwarded-for")
            ua = head.header(b"user-agent")
            rid = self._generated_request_id()
            if rid is None:
                rid = head.header(b"x-request-id")
        return default_line(self.w.wall_offset + start, method, path, self._protocol(), self.status,
                            self.flags, self.rx_body, self.tx_body, _ms(now - start),
                            self.svc_ms if self.resp is not None else None, xff, ua, rid, authority,
                            self.host.label if self.host is not None else None)

    def _log_record(self):
        """The request as a LogRecord (proxy/access_log/record.py), for the other formats."""
        cdef double now = self.log_now
        head = self.head
        start = self.req_start if head is not None else now
        # positional: LogRecord's field order (proxy/access_log/record.py), cheaper than keywords
        rec = LogRecord(
            self.w.wall_offset + start, b"", b"", b"", self.hcm.scheme, self._protocol(),
            None, None, None, self.status, None,
            self.flags.split(",") if self.flags else [],
            self.rx_body, self.tx_body, _ms(now - start),
            _ms(self.req_end - start) if self.req_end else None,
            _ms(self.resp_first - start) if self.resp_first else None,
            None, None, None, self.peer_addr, self.local_addr, None)
        if head is not None:
            rec.method, rec.path, rec.authority = head.method, head.path, head.host
            rid = self._generated_request_id()
            rec.request_headers = headers_with(head.get, {b"x-request-id": rid}) if rid is not None else head.get
            if self.entry is not None:
                rec.route_name = self.entry.name or None
        if self.resp is not None:
            rec.response_headers = headers_with(
                self.resp.get, {b"x-envoy-upstream-service-time": str(self.svc_ms).encode()})
            rec.response_code_details = "via_upstream"
        if self.host is not None:
            rec.upstream_host = self.host.label
            rec.upstream_cluster = self.target.cluster.name
        return rec

    # ---- timeouts (checked by the worker's ticker) ----------------------------------------------
    cdef _set_deadline(self, double seconds, int kind):
        self.deadline = _now() + seconds
        self.deadline_kind = kind
        self.active.add(self)

    def on_deadline(self):
        _now()
        cdef int kind = self.deadline_kind
        self.deadline_kind = 0
        self.active.discard(self)
        if self.closed:
            return
        if kind == C_HEADERS:
            self.in_req = True
            self.keep_alive = False
            self.w.count("downstream_rq_header_timeout")
            self.st.s.inc(self.st.rq_header_timeout)
            self._local(408, b"request header timeout", True)
        elif kind == C_ROUTE:
            self.w.count("upstream_rq_timeout")
            if self.cst is not None:
                self.cst.s.inc(self.cst.rq_timeout)
            if not self.resp_started:
                self._record(504, True)
            self._fail(504, "upstream request timeout", "UT")
        elif kind == C_PER_TRY_IDLE and _now() - self.try_io < self.try_idle:
            self._next_try_deadline()   # the upstream sent something since: not idle yet
        elif kind == C_PER_TRY or kind == C_PER_TRY_IDLE:
            if self.cst is not None:
                self.cst.s.inc(self.cst.rq_per_try_timeout)
            self._record(504, True)
            up = self.up
            if up is not None:
                self.up = None
                up.close()
            if self._retry_wanted(F_PER_TRY, 504, None) == 1 and self._schedule_retry():
                return
            if self.cst is not None:
                self.cst.s.inc(self.cst.rq_timeout)
            self._fail(504, "upstream request timeout", "UT")
        elif kind == C_REQUEST:
            self.w.count("downstream_rq_timeout")
            self.st.s.inc(self.st.rq_timeout)
            self._fail(408, "request timeout", "")
        elif kind == C_STREAM_IDLE:
            quiet = _now() - self.last_io
            if quiet < self.hcm.stream_idle_timeout:   # there was traffic: wait from the last byte
                self._set_deadline(self.hcm.stream_idle_timeout - quiet, C_STREAM_IDLE)
                return
            self._fail(408 if not self.resp_started else 504, "stream timeout", "SI")

    cdef _pause(self, int bit):
        if not self.paused and not self.closed:
            self.transport.pause_reading()
        self.paused |= bit

    cdef _resume(self, int bit):
        if self.paused & bit:
            self.paused &= ~bit
            if not self.paused and not self.closed:
                self.transport.resume_reading()

    def pause_reading_for_upstream(self, bint on):
        if on:
            self._pause(P_UPSTREAM_FULL)
        else:
            self._resume(P_UPSTREAM_FULL)

    def close_if_idle(self):
        if not self.in_req and not self.buf and not self.closed:
            self.closed = True
            self.transport.close()
            return True
        return False


import random as _random_module
_random = _random_module.random

import ipaddress as _ipaddress
import time as _time
_ip_address = _ipaddress.ip_address


cpdef double backoff_delay(int k, double base, double top, double u):
    """The wait before retry k (1, 2, ...) for a uniform draw u in [0, 1): Envoy's fully jittered
    exponential back-off, U[0, min(base * 2^(k-1), max)) (source/common/common/backoff_strategy.cc,
    JitteredExponentialBackOffStrategy, current code)."""
    return u * min(base * (2.0 ** (k - 1)), top)


def _reset_interval(r, ResponseHead rh):
    """rate_limited_retry_back_off: the first reset header that parses to an interval within
    max_interval (Retry-After in SECONDS, X-RateLimit-Reset as a UNIX_TIMESTAMP); -1 if none."""
    for name, fmt in r.reset_headers:
        v = rh.get(name)
        if v is None or not v.strip().isdigit():
            continue
        t = float(int(v))
        if fmt == "UNIX_TIMESTAMP":
            t -= _time.time()
            if t < 0:
                continue
        if t <= r.reset_max_interval:
            return t
    return -1.0


_GRPC_UNITS = {b"H": 3600.0, b"M": 60.0, b"S": 1.0, b"m": 1e-3, b"u": 1e-6, b"n": 1e-9}


def _grpc_timeout_s(bytes raw):
    """gRPC's Timeout (PROTOCOL-HTTP2.md: 1 to 8 digits and a unit) in seconds; -1 if invalid."""
    raw = raw.strip()
    unit = _GRPC_UNITS.get(raw[-1:])
    digits = raw[:-1]
    if unit is None or not 1 <= len(digits) <= 8 or not digits.isdigit():
        return -1.0
    return int(digits) * unit


cdef long long _ms(double seconds):
    """Whole milliseconds, floored as Envoy's, after rounding to the microsecond: a 300 ms
    timeout measured as 0.29999999999995 s of loop time is 300, not 299."""
    return (<long long>(seconds * 1e6 + 0.5)) // 1000


cdef _reset(transport):
    """Close with a TCP reset, not a FIN: a client whose response is cut short must not take
    what it got for a whole response (an HTTP/1.0 body delimited by the close would look
    complete). SO_LINGER with a zero timeout makes the close send RST."""
    sock = transport.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(_socket.SOL_SOCKET, _socket.SO_LINGER, _LINGER_0)
        except OSError:
            pass
    transport.abort()


cdef bint _take_connection(ClusterStats cst, HostBase host, HostTable table):
    """Room for one more connection to `host` under the cluster's max_connections and the host's
    per_host_thresholds max_connections (counted across all workers). Like Envoy's pool
    (conn_pool_base.cc tryCreateNewConnection), a pool with no connection at all opens one
    anyway, so that its pending requests can progress: the limits may be exceeded by at most one
    connection per host per worker."""
    cdef cyv_ht_host *h = ht_host(table, host.slot)
    cdef bint ok = True
    if cst.rec != NULL:
        if not ht_cb_acquire(&cst.rec.cb_connections, cst.max_connections):
            ok = False
        elif not ht_cb_acquire(&h.cb_connections, cst.max_host_connections):
            ht_cb_release(&cst.rec.cb_connections)
            ok = False
        if not ok:
            cst.s.inc(cst.cx_overflow)
            if host.n_conns > 0:
                return False
            cyv_addi64(&cst.rec.cb_connections, 1)
            cyv_addi64(&h.cb_connections, 1)
    host.n_conns += 1
    return True


cdef _release_connection(ClusterStats cst, HostBase host, HostTable table):
    host.n_conns -= 1
    if cst.rec != NULL:
        ht_cb_release(&cst.rec.cb_connections)
        ht_cb_release(&ht_host(table, host.slot).cb_connections)
    if host.waiting:
        wake_waiters(host)


cdef _park(Upstream up):
    """An idle connection: to the first request waiting for one to its host, else to the pool."""
    cdef HostBase host = up.host
    waiting = host.waiting
    cdef Downstream ds
    while waiting:
        ds, token = waiting.popleft()
        if ds._waiting_for(token):
            ds._send_upstream(up)
            return
    up.idle_since = _recent()
    if up.multiplexed:
        host.idle_h2.append(up)
    else:
        host.idle.append(up)


def wake_waiters(host):
    """Pending requests queued on `host` get a connection slot freed since (by this worker, or by
    another: the worker's ticker calls this too)."""
    waiting = host.waiting
    cdef Downstream ds
    while waiting:
        ds, token = waiting[0]
        if not ds._waiting_for(token):
            waiting.popleft()
            continue
        if not _take_connection(ds.cst, host, ds.table):
            return
        waiting.popleft()
        ds.w.loop.create_task(ds._connect(host, ds.seq))


cdef _count_connect_fail(ClusterStats cst, bint timeout):
    cst.s.inc(cst.cx_connect_fail)
    if timeout:
        cst.s.inc(cst.cx_connect_timeout)


cdef bytes _rewrite(bytes path, entry):
    cdef bytes rewrite = entry.prefix_rewrite
    cdef Py_ssize_t n = entry.match_prefix_len
    if n >= 0:
        return rewrite + path[n:]
    # path / regex matches: the whole path is replaced, the query string kept
    q = path.find(b"?")
    return rewrite + (path[q:] if q >= 0 else b"")


cdef class Upstream:
    """One HTTP/1.1 connection to an upstream host, reused through the host's pool.

    It parses the response head in one fast-path call, frames the body (Content-Length, chunked,
    or until close), and hands bytes to the downstream it serves. A connection whose response
    was not framed cleanly, or that closed, is never put back in the pool.
    """

    def __init__(self, host, worker, ClusterStats cst, HostTable table=None):
        self.host = host
        self.worker = worker
        self.cst = cst
        self.table = table      # set: this connection holds a circuit-breaker unit, given back on close
        self.transport = None
        self.ds = None
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
        self.multiplexed = False

    # ---- asyncio.Protocol --------------------------------------------------------------------
    def connection_made(self, transport):
        self.transport = transport
        if not self.multiplexed:    # an HTTP/2 connection counts itself, not its streams
            self.cst.s.inc(self.cst.cx_total)
            self.cst.s.gauge_add(self.cst.cx_active, 1)

    cdef send(self, Downstream ds, bytes head, bint no_body):
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

    def data_received(self, bytes data):
        cdef Downstream ds = self.ds
        cdef double now = _now()
        if self.state == TUNNEL and ds is not None:
            ds.last_io = now
            ds.transport.write(data)
            return
        if ds is None:
            # Bytes on an idle connection: the upstream is confused; never reuse it.
            self.close()
            return
        try:
            self._received(data, ds)
        except Exception:
            # never let a bug take the worker's loop down: this exchange fails, the rest go on
            log.exception("internal error on an upstream connection")
            self.close()
            ds.on_upstream_error(502, "internal error", "UPE")

    cdef _received(self, bytes data, Downstream ds):
        self.got_bytes = True
        if ds.try_idle:
            ds.try_io = _recent()
        if self.state == BODY:
            self._body(data, ds)
            return
        cdef bytes buf = self.buf + data if self.buf else data
        cdef ResponseHead rh
        cdef int status
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
                    if ds.upgrading:
                        self.state = TUNNEL
                        self.reusable = False
                        ds.on_upgraded(rh, self, buf[rh.head_len:])
                        return
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
        cdef Py_ssize_t hl = rh.head_len
        cdef bytes rest = buf[hl:] if len(buf) > hl else b""
        cdef long long left = self.left
        cdef Py_ssize_t n
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

    cdef _body(self, bytes data, Downstream ds):
        cdef long long left = self.left
        cdef Py_ssize_t n
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

    cdef _done(self, bytes trailers):
        cdef Downstream ds = self.ds
        self.ds = None
        self.state = IDLE
        self.dec = None
        if ds is not None:
            ds.on_response_end(trailers, self)

    def connection_lost(self, exc):
        _now()
        self.closed = True
        self.reusable = False
        if not self.multiplexed:
            self.cst.s.gauge_add(self.cst.cx_active, -1)
            self.cst.s.inc(self.cst.cx_destroy)
        if self.state == TUNNEL:
            self.state = IDLE
            if self.ds is not None:
                ds_t = self.ds
                self.ds = None
                ds_t._end_tunnel()
        if self.table is not None:
            table = self.table
            self.table = None
            _release_connection(self.cst, self.host, table)
        cdef Downstream ds = self.ds
        if ds is None:
            return
        if self.state == BODY and self.left == -1:
            self._done(b"")   # close-delimited body ends at close
            return
        self.ds = None
        self.state = IDLE
        ds.on_upstream_reset(self, "connection termination")

    # ---- flow control --------------------------------------------------------------------------
    def pause_writing(self):
        # the upstream reads the request body slower than the client sends it
        if self.ds is not None:
            self.ds.pause_reading_for_upstream(True)

    def resume_writing(self):
        if self.ds is not None:
            self.ds.pause_reading_for_upstream(False)

    cdef pause_upstream_reading(self):
        # the client reads the response slower than the upstream sends it
        if not self.read_paused and not self.closed:
            self.read_paused = True
            self.transport.pause_reading()

    cdef resume_upstream_reading(self):
        if self.read_paused and not self.closed:
            self.read_paused = False
            self.transport.resume_reading()

    def close(self):
        self.reusable = False
        self.ds = None
        if not self.closed:
            self.closed = True
            if self.transport is not None:
                self.transport.abort()
