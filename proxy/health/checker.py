"""Envoy's active health checking for one host and one `health_checks[]` entry.

Three layers, each testable alone:
  * `HealthState`: the state machine of Envoy's `ActiveHealthCheckSession` (thresholds, the
    first-check rule, pending/degraded), fed with `Result`s; no I/O, no time.
  * `Timing`: when the next check runs (interval, unhealthy/edge intervals, both jitters, the
    first round's spread).
  * `HostChecker`: the loop (first delay, probe under `timeout`, apply, sleep) on an injectable
    clock, with a probe: `HttpProbe`, `TcpProbe` or `GrpcProbe`.

Envoy sources followed (envoyproxy/envoy, read January 2026):
  source/extensions/health_checkers/common/health_checker_base_impl.cc   state machine, intervals
  source/extensions/health_checkers/http/health_checker_impl.cc          HTTP probe, statuses
  source/extensions/health_checkers/tcp/health_checker_impl.cc           TCP probe
  source/extensions/health_checkers/grpc/health_checker_impl.cc          gRPC probe
  source/common/upstream/health_checker_impl.cc (PayloadMatcher::match)  TCP receive matching

Choices where cyvoy differs from Envoy or Envoy is ambiguous are marked "cyvoy:" below.
"""
from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import random
import time
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Optional

import httptools

log = logging.getLogger("cyvoy.health")

USER_AGENT = "cyvoy/HC"     # Envoy sends "Envoy/HC"

# ---- check results ---------------------------------------------------------------------------
# Envoy's HealthCheckFailureType (data/core/v3/health_check_event.proto), plus the two successes.
SUCCESS = "success"
DEGRADED = "degraded"        # success, but the answer carried x-envoy-degraded
ACTIVE = "active"            # the host answered and the answer is a failure (bad status, NOT_SERVING)
NETWORK = "network"          # connect error, reset, close before an answer
TIMEOUT = "timeout"          # Envoy's NETWORK_TIMEOUT: no answer within `timeout`


@dataclass(slots=True, frozen=True)
class Result:
    kind: str
    reason: str = ""
    # ACTIVE failures with a status in `retriable_statuses` count toward unhealthy_threshold
    # instead of failing the host at once.
    retriable: bool = False

    @property
    def ok(self) -> bool:
        return self.kind == SUCCESS or self.kind == DEGRADED

    @property
    def network(self) -> bool:
        return self.kind == NETWORK or self.kind == TIMEOUT


# Envoy's HealthTransition
UNCHANGED = "unchanged"
CHANGED = "changed"
CHANGE_PENDING = "pending"


class HealthState:
    """One host's active-HC state for one checker, as Envoy's ActiveHealthCheckSession keeps it.

    `failed` mirrors FAILED_ACTIVE_HC, `pending` PENDING_ACTIVE_HC, `degraded`
    DEGRADED_ACTIVE_HC. A new host starts failed and pending (Envoy initializes hosts of a cluster
    with health checks unhealthy: upstream_impl.cc; cyvoy also sets PENDING so /clusters can
    tell "never checked" from "failing").
    """

    __slots__ = ("unhealthy_threshold", "healthy_threshold", "failed", "pending", "degraded",
                 "first_check", "num_healthy", "num_unhealthy")

    def __init__(self, unhealthy_threshold: int, healthy_threshold: int, *,
                 failed: bool = True, pending: bool = True, degraded: bool = False):
        # cyvoy: a threshold of 0 (the proto allows it) behaves as 1; Envoy's `++n == 0` would
        # never be reached.
        self.unhealthy_threshold = max(1, int(unhealthy_threshold))
        self.healthy_threshold = max(1, int(healthy_threshold))
        self.failed = failed or pending
        self.pending = pending
        self.degraded = degraded
        self.first_check = True
        self.num_healthy = 0
        self.num_unhealthy = 0

    @property
    def usable(self) -> bool:
        return not self.failed and not self.pending

    def apply(self, r: Result) -> str:
        """Feed one check result; returns the transition (UNCHANGED / CHANGED / CHANGE_PENDING)."""
        return self._success(r.kind == DEGRADED) if r.ok else self._failure(r)

    def _success(self, degraded: bool) -> str:
        # handleSuccess()
        self.num_unhealthy = 0
        t = UNCHANGED
        if self.failed:
            # "If this is the first time we ever got a check result on this host, we immediately
            # move it to healthy."
            if self.first_check:
                self.failed = False
                t = CHANGED
            else:
                self.num_healthy += 1
                if self.num_healthy >= self.healthy_threshold:
                    self.failed = False
                    t = CHANGED
                else:
                    t = CHANGE_PENDING
        t = self._clear_pending(t)
        if degraded != self.degraded:
            self.degraded = degraded
            if t == UNCHANGED:
                t = CHANGED
        self.first_check = False
        return t

    def _failure(self, r: Result) -> str:
        # setUnhealthy(): non-network, non-retriable failures (an unexpected HTTP status,
        # NOT_SERVING) fail a healthy host at once; network errors, timeouts and retriable
        # statuses count toward unhealthy_threshold.
        self.num_healthy = 0
        t = UNCHANGED
        if not self.failed:
            immediate = not r.network and not r.retriable
            if not immediate:
                self.num_unhealthy += 1
            if immediate or self.num_unhealthy >= self.unhealthy_threshold:
                self.failed = True
                t = CHANGED
            else:
                t = CHANGE_PENDING
        t = self._clear_pending(t)
        self.first_check = False
        return t

    def _clear_pending(self, t: str) -> str:
        # clearPendingFlag(): the first result of any kind ends PENDING, and counts as a change.
        if self.pending:
            self.pending = False
            return CHANGED
        return t

    def label(self) -> str:
        if self.pending:
            return "pending"
        if self.failed:
            return "unhealthy"
        return "degraded" if self.degraded else "healthy"


class Timing:
    """When checks run: HealthCheckerImplBase::interval() / intervalWithJitter().

    cyvoy has no "cluster has had traffic" signal yet, so the no-traffic branch (Envoy:
    `no_traffic_interval`, 60 s by default, and `no_traffic_healthy_interval`, used while
    upstream_cx_total was never incremented) is not taken: cyvoy always uses the traffic branch,
    i.e. `interval` and friends, as Envoy does once a cluster has carried a connection.
    Jitter is drawn uniformly (Envoy: `random() % ms`); durations are float seconds.
    """

    MIN_INTERVAL = 0.001     # Envoy forces at least 1 ms "to prevent live lock"

    def __init__(self, hc: dict[str, Any], rng: random.Random,
                 initial_jitter_explicit: Optional[bool] = None):
        self.rng = rng
        self.interval = float(hc["interval"])
        self.unhealthy_interval = float(hc.get("unhealthy_interval") or self.interval)
        self.unhealthy_edge_interval = float(hc.get("unhealthy_edge_interval")
                                             or self.unhealthy_interval)
        self.healthy_edge_interval = float(hc.get("healthy_edge_interval") or self.interval)
        self.interval_jitter = float(hc.get("interval_jitter") or 0.0)
        self.interval_jitter_percent = int(hc.get("interval_jitter_percent") or 0)
        self.initial_jitter = float(hc.get("initial_jitter") or 0.0)
        # None: unknown whether the config wrote initial_jitter; a positive value counts as
        # written (the validated dict fills in 0 when absent).
        if initial_jitter_explicit is None:
            initial_jitter_explicit = self.initial_jitter > 0
        self.initial_jitter_explicit = initial_jitter_explicit

    def first_delay(self) -> float:
        """Delay before the first check.

        Envoy checks every host at once when initial_jitter is 0 (issue #4132: all hosts of all
        clusters probed in the same instant). cyvoy: without an explicit initial_jitter the first
        round is spread uniformly over [0, interval); an explicit one replaces that with Envoy's
        rule (0: at once; otherwise uniform in [0, initial_jitter), at least 1 ms).
        """
        if not self.initial_jitter_explicit:
            return self.rng.random() * self.interval
        if self.initial_jitter <= 0:
            return 0.0
        return max(self.MIN_INTERVAL, self.rng.random() * self.initial_jitter)

    def base(self, check_ok: bool, transition: str) -> float:
        """The un-jittered wait after a check whose result was `check_ok` (Envoy's HealthState
        argument is the result of the check just made, not the host's state).

        Edge intervals apply while a transition is pending (thresholds being counted), which is
        what Envoy's code does (comment in interval(): "check succeeds, host is still unhealthy
        and next check happens after healthy_edge_interval ... host is now healthy and next check
        happens after interval"). The proto's prose ("the first health check right after a host
        is marked unhealthy") says otherwise; cyvoy follows the code.
        """
        if not check_ok:
            return (self.unhealthy_edge_interval if transition == CHANGE_PENDING
                    else self.unhealthy_interval)
        return self.healthy_edge_interval if transition == CHANGE_PENDING else self.interval

    def jittered(self, base: float) -> float:
        d = base
        pct = self.interval_jitter_percent * base / 100.0
        if pct > 0:
            d += self.rng.random() * pct
        if self.interval_jitter > 0:
            d += self.rng.random() * self.interval_jitter
        return max(self.MIN_INTERVAL, d)

    def next_delay(self, check_ok: bool, transition: str) -> float:
        return self.jittered(self.base(check_ok, transition))


class Clock:
    """Real time; tests pass an object with the same three methods."""

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    async def wait_for(self, aw: Awaitable, timeout: float):
        return await asyncio.wait_for(aw, timeout)


def new_counters() -> dict[str, int]:
    """Envoy's cluster.<name>.health_check.* counters that cyvoy keeps."""
    return {"attempt": 0, "success": 0, "failure": 0, "network_failure": 0}


class HostChecker:
    """Runs one probe against one host forever: first delay, then check / apply / sleep.

    `on_result(checker, result, transition)` is called after every check (the process writes
    the host table from it). `counters` may be shared by every checker of a cluster.
    """

    def __init__(self, hc: dict[str, Any], probe: "Probe", *,
                 clock: Optional[Clock] = None, rng: Optional[random.Random] = None,
                 state: Optional[HealthState] = None,
                 initial_jitter_explicit: Optional[bool] = None,
                 on_result: Optional[Callable[["HostChecker", Result, str], None]] = None,
                 counters: Optional[dict[str, int]] = None, label: str = ""):
        self.hc = hc
        self.probe = probe
        self.clock = clock or Clock()
        self.rng = rng or random.Random()
        self.timeout = float(hc["timeout"])
        self.state = state or HealthState(hc["unhealthy_threshold"], hc["healthy_threshold"])
        self.timing = Timing(hc, self.rng, initial_jitter_explicit)
        self.on_result = on_result
        self.counters = counters if counters is not None else new_counters()
        self.label = label
        self.last_result: Optional[Result] = None

    async def check_once(self) -> Result:
        """One probe under the timeout (Envoy's attempt counter counts here)."""
        self.counters["attempt"] += 1
        try:
            return await self.clock.wait_for(self.probe.check(), self.timeout)
        except (asyncio.TimeoutError, TimeoutError):
            self.probe.abort()
            return Result(TIMEOUT, f"no answer within {self.timeout:g}s")
        except asyncio.CancelledError:
            raise
        except Exception as e:     # a probe bug must not kill the loop: count it as network
            log.debug("health probe %s raised", self.label, exc_info=True)
            self.probe.abort()
            return Result(NETWORK, f"{type(e).__name__}: {e}")

    def handle(self, r: Result) -> float:
        """Apply a result: state, counters, callback. Returns the wait before the next check."""
        t = self.state.apply(r)
        self.last_result = r
        if r.ok:
            self.counters["success"] += 1
        else:
            self.counters["failure"] += 1
            if r.network:
                self.counters["network_failure"] += 1
        if self.on_result is not None:
            self.on_result(self, r, t)
        return self.timing.next_delay(r.ok, t)

    async def run(self) -> None:
        try:
            await self.clock.sleep(self.timing.first_delay())
            while True:
                r = await self.check_once()
                await self.clock.sleep(self.handle(r))
        finally:
            self.probe.abort()


# ---- probes ----------------------------------------------------------------------------------

class Probe:
    """`await check()` -> Result (the caller enforces the timeout and calls abort() on it);
    `abort()` drops any connection; `await aclose()` releases everything."""

    async def check(self) -> Result:      # pragma: no cover - interface
        raise NotImplementedError

    def abort(self) -> None:
        pass

    async def aclose(self) -> None:
        self.abort()


class _Closed(Exception):
    """The peer closed the connection; `got_bytes` tells whether any answer byte came first."""

    def __init__(self, got_bytes: bool):
        super().__init__("connection closed by the host" if got_bytes
                         else "connection closed before an answer")
        self.got_bytes = got_bytes


def _describe(e: BaseException) -> str:
    if isinstance(e, _Closed):
        return str(e)
    if isinstance(e, OSError) and e.errno:
        return os.strerror(e.errno).lower()
    if isinstance(e, OSError) and e.strerror:
        return e.strerror
    return f"{type(e).__name__}: {e}" if str(e) else type(e).__name__


class _StreamProbe(Probe):
    """A probe over one TCP connection kept between checks when allowed."""

    def __init__(self, address: str, port: int, reuse_connection: bool = True):
        self.address = address
        self.port = port
        self.reuse_connection = reuse_connection
        self.reader: Optional[asyncio.StreamReader] = None
        self.writer: Optional[asyncio.StreamWriter] = None
        # the cluster's transport socket (UpstreamTlsContext): (SSL context, SNI), set by make_probe
        self.ssl = None
        self.sni = None

    async def _connect(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(
            self.address, self.port, ssl=self.ssl, server_hostname=self.sni if self.ssl else None)

    def abort(self) -> None:
        w, self.reader, self.writer = self.writer, None, None
        if w is not None:
            t = w.transport
            if t is not None and not t.is_closing():
                t.abort()

    def _close_gracefully(self) -> None:
        w, self.reader, self.writer = self.writer, None, None
        if w is not None:
            w.close()

    async def check(self) -> Result:
        # cyvoy: a kept connection that the host closed while idle (EOF or reset before any byte
        # of the answer) is retried once on a fresh connection inside the same timeout; Envoy
        # counts it as a network failure (its TODO in grpc/health_checker_impl.cc onResetStream
        # says it should retry).
        for _ in range(2):
            fresh = self.writer is None
            try:
                if fresh:
                    await self._connect()
                return await self._exchange()
            except (_Closed, OSError, EOFError, asyncio.IncompleteReadError) as e:
                self.abort()
                stale = not fresh and (
                    (isinstance(e, _Closed) and not e.got_bytes)
                    or isinstance(e, (ConnectionResetError, BrokenPipeError)))
                if stale:
                    continue
                return Result(NETWORK, _describe(e))
        return Result(NETWORK, "connection closed before an answer")   # pragma: no cover

    async def _exchange(self) -> Result:   # pragma: no cover - interface
        raise NotImplementedError


class HttpProbe(_StreamProbe):
    """HTTP/1.1 health check (codec_client_type HTTP1).

    Request: `<method> <path> HTTP/1.1`, Host (`host`, the cluster name by default),
    `User-Agent: cyvoy/HC`, then request_headers_to_remove / request_headers_to_add (Envoy's
    HeaderParser removes first, then adds). The connection is kept for the next check unless
    reuse_connection is false or the answer says it closes (HTTP/1.0 without keep-alive,
    `Connection: close`, read-until-close framing).

    Verdict (HttpActiveHealthCheckSession::healthCheckResult): a status in expected_statuses
    passes (degraded with `x-envoy-degraded`); any other status is an ACTIVE failure, retriable
    when in retriable_statuses. cyvoy: `x-envoy-immediate-health-check-fail` on a failing answer
    makes it non-retriable, i.e. the host fails at once (Envoy sets
    EXCLUDED_VIA_IMMEDIATE_HC_FAIL, which cyvoy's table does not have).
    """

    def __init__(self, address: str, port: int, http: dict[str, Any],
                 reuse_connection: bool = True):
        super().__init__(address, port, reuse_connection)
        if http.get("codec_client_type", "HTTP1") != "HTTP1":
            raise ValueError(f"health check codec {http['codec_client_type']} is not supported "
                             "(HTTP1 only)")
        self.method = (http.get("method") or "GET").upper()
        if self.method == "METHOD_UNSPECIFIED":
            self.method = "GET"
        self.expected = [(int(r["start"]), int(r["end"]))
                         for r in (http.get("expected_statuses") or [{"start": 200, "end": 201}])]
        self.retriable = [(int(r["start"]), int(r["end"]))
                          for r in (http.get("retriable_statuses") or [])]
        self.request = self._build_request(http)

    def _build_request(self, http: dict[str, Any]) -> bytes:
        headers: list[list[str]] = [["host", http["host"]], ["user-agent", USER_AGENT]]
        for name in http.get("request_headers_to_remove") or ():
            name = name.lower()
            if name != "host":          # Host is not modifiable (HeaderUtility::isModifiableHeader)
                headers = [h for h in headers if h[0] != name]
        for opt in http.get("request_headers_to_add") or ():
            key, value, action = _header_option(opt)
            present = any(h[0] == key for h in headers)
            if action == "ADD_IF_ABSENT":
                if not present:
                    headers.append([key, value])
            elif action == "OVERWRITE_IF_EXISTS_OR_ADD":
                headers = [h for h in headers if h[0] != key] + [[key, value]]
            elif action == "OVERWRITE_IF_EXISTS":
                if present:
                    headers = [h for h in headers if h[0] != key] + [[key, value]]
            else:   # APPEND_IF_EXISTS_OR_ADD: one more header line
                headers.append([key, value])
        if self.method in ("POST", "PUT", "PATCH"):
            headers.append(["content-length", "0"])
        head = f"{self.method} {http['path']} HTTP/1.1\r\n"
        head += "".join(f"{k}: {v}\r\n" for k, v in headers)
        return (head + "\r\n").encode("latin-1")

    async def _exchange(self) -> Result:
        assert self.reader is not None and self.writer is not None
        self.writer.write(self.request)
        resp = _Response(head_only=self.method == "HEAD")
        parser = resp._parser = httptools.HttpResponseParser(resp)
        got = False
        while not resp.complete:
            data = await self.reader.read(65536)
            if not data:
                if resp.headers_done and not resp.complete:
                    # read-until-close framing: the close ends the message
                    resp.complete = True
                    resp.keep_alive = False
                    break
                raise _Closed(got)
            got = True
            try:
                parser.feed_data(data)
            except httptools.HttpParserUpgrade:
                resp.complete, resp.keep_alive = True, False
            except httptools.HttpParserError as e:
                self.abort()
                return Result(NETWORK, f"malformed HTTP response: {e}")
        status = resp.status
        if not self.reuse_connection or not resp.keep_alive or resp.head_only:
            self._close_gracefully()
        if any(a <= status < b for a, b in self.expected):
            if "x-envoy-degraded" in resp.names:
                return Result(DEGRADED, f"HTTP status {status} (degraded)")
            return Result(SUCCESS, f"HTTP status {status}")
        immediate = "x-envoy-immediate-health-check-fail" in resp.names
        retriable = not immediate and any(a <= status < b for a, b in self.retriable)
        reason = f"HTTP status {status}"
        if immediate:
            reason += " with x-envoy-immediate-health-check-fail"
        return Result(ACTIVE, reason, retriable=retriable)


class _Response:
    """httptools callbacks: status, header names, completion."""

    def __init__(self, head_only: bool = False):
        self.head_only = head_only
        self.names: set[str] = set()
        self.status = 0
        self.headers_done = False
        self.complete = False
        self.keep_alive: Optional[bool] = None
        self._parser = None

    def on_header(self, name: bytes, value: bytes) -> None:
        self.names.add(name.decode("latin-1").lower())

    def on_headers_complete(self) -> None:
        self.headers_done = True
        self.status = self._parser.get_status_code()
        if self.head_only:
            # no body follows an answer to HEAD whatever Content-Length says; the connection is
            # not reused after HEAD (the parser cannot be told to skip the body)
            self.complete = True
            self.keep_alive = False

    def on_message_complete(self) -> None:
        self.complete = True
        if self.keep_alive is None:
            self.keep_alive = self._parser.should_keep_alive()

    def on_status(self, status: bytes) -> None:
        pass

    def on_message_begin(self) -> None:
        pass


def _header_option(opt: Any) -> tuple[str, str, str]:
    """(key, value, append_action) from a model.HeaderValueOption or a plain dict."""
    if isinstance(opt, dict):
        if "header" in opt:
            h = opt["header"]
            return h["key"].lower(), h.get("value", ""), opt.get("append_action") or \
                "APPEND_IF_EXISTS_OR_ADD"
        return opt["key"].lower(), opt.get("value", ""), opt.get("append_action") or \
            "APPEND_IF_EXISTS_OR_ADD"
    return opt.key.lower(), opt.value, opt.append_action


def payload_match(expected: list[bytes], data: bytes) -> bool:
    """Envoy's PayloadMatcher::match: every expected block appears, in order, each one searched
    after the end of the previous (blocks need not be adjacent)."""
    start = 0
    for block in expected:
        i = data.find(block, start)
        if i < 0:
            return False
        start = i + len(block)
    return True


class TcpProbe(_StreamProbe):
    """L4 health check (TcpHealthCheckerImpl).

    Without `receive`: connect-only; a connection that opens passes (then closed; `send` is
    written first if configured). With `receive`: write `send`, read until the received bytes
    match (payload_match) -> pass, or the host closes -> NETWORK failure, or the timeout. The
    connection is kept between checks when reuse_connection is true. cyvoy: a kept connection
    closed by the host between checks is not a failure by itself (Envoy's onEvent counts an
    unexpected close at any time); it is reopened at the next check.
    """

    MAX_BUFFER = 1 << 20

    def __init__(self, address: str, port: int, tcp: dict[str, Any],
                 reuse_connection: bool = True):
        super().__init__(address, port, reuse_connection)
        self.send = tcp.get("send") or b""
        self.receive = [b for b in (tcp.get("receive") or []) if b]

    async def _exchange(self) -> Result:
        assert self.reader is not None and self.writer is not None
        if self.send:
            self.writer.write(self.send)
        if not self.receive:
            self._close_gracefully()
            return Result(SUCCESS, "connected")
        buf = bytearray()
        while True:
            data = await self.reader.read(65536)
            if not data:
                raise _Closed(bool(buf))
            buf += data
            if payload_match(self.receive, bytes(buf)):
                if not self.reuse_connection:
                    self._close_gracefully()
                return Result(SUCCESS, "expected payload received")
            if len(buf) > self.MAX_BUFFER:
                self.abort()
                return Result(ACTIVE, f"expected payload not in the first {len(buf)} bytes")


def _grpc_target(address: str, port: int) -> str:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return f"dns:///{address}:{port}"
    return f"ipv6:[{ip}]:{port}" if ip.version == 6 else f"ipv4:{ip}:{port}"


class GrpcProbe(Probe):
    """grpc.health.v1.Health/Check with grpcio's asyncio API.

    Only SERVING passes. A non-OK gRPC status or any other serving status is an ACTIVE failure
    (Envoy: onRpcComplete -> handleFailure(ACTIVE), so the host fails at once); UNAVAILABLE
    (connection refused/reset: grpcio reports transport errors that way) is NETWORK and
    DEADLINE_EXCEEDED is TIMEOUT, both counting toward unhealthy_threshold. `authority` sets
    :authority (the cluster name by default), `initial_metadata` is sent with the call.
    After a network failure the channel is dropped so the next check reconnects at once rather
    than waiting out grpcio's reconnect back-off.
    """

    def __init__(self, address: str, port: int, grpc_cfg: dict[str, Any],
                 reuse_connection: bool = True, timeout: Optional[float] = None):
        import grpc                                        # noqa: F401 (lazy: only when used)
        from grpc_health.v1 import health_pb2, health_pb2_grpc
        self._grpc = grpc
        self._pb2 = health_pb2
        self._stub_cls = health_pb2_grpc.HealthStub
        self.target = _grpc_target(address, port)
        self.service = grpc_cfg.get("service_name") or ""
        self.authority = grpc_cfg.get("authority") or ""
        self.metadata = tuple((k, v) for k, v, _ in
                              (_header_option(o) for o in grpc_cfg.get("initial_metadata") or ()))
        self.reuse_connection = reuse_connection
        self.timeout = timeout
        self.channel = None
        self.stub = None

    def _open(self) -> None:
        options = [("grpc.primary_user_agent", USER_AGENT),
                   ("grpc.enable_http_proxy", 0),
                   ("grpc.enable_retries", 0),
                   ("grpc.initial_reconnect_backoff_ms", 100),
                   ("grpc.min_reconnect_backoff_ms", 100),
                   ("grpc.max_reconnect_backoff_ms", 1000)]
        if self.authority:
            options.append(("grpc.default_authority", self.authority))
        self.channel = self._grpc.aio.insecure_channel(self.target, options=options)
        self.stub = self._stub_cls(self.channel)

    async def check(self) -> Result:
        grpc = self._grpc
        if self.channel is None:
            self._open()
        try:
            resp = await self.stub.Check(self._pb2.HealthCheckRequest(service=self.service),
                                         timeout=self.timeout, metadata=self.metadata or None)
        except grpc.aio.AioRpcError as e:
            code = e.code()
            if code == grpc.StatusCode.UNAVAILABLE:
                self.abort()
                return Result(NETWORK, f"gRPC UNAVAILABLE: {e.details()}")
            if code == grpc.StatusCode.DEADLINE_EXCEEDED:
                self.abort()
                return Result(TIMEOUT, "gRPC deadline exceeded")
            return Result(ACTIVE, f"gRPC status {code.name}: {e.details()}")
        finally:
            if not self.reuse_connection:
                self.abort()
        status = resp.status
        name = self._pb2.HealthCheckResponse.ServingStatus.Name(status)
        if status == self._pb2.HealthCheckResponse.SERVING:
            return Result(SUCCESS, "SERVING")
        return Result(ACTIVE, f"gRPC health {name}")

    def abort(self) -> None:
        ch, self.channel, self.stub = self.channel, None, None
        if ch is not None:
            try:
                asyncio.get_running_loop().create_task(ch.close())
            except RuntimeError:
                pass

    async def aclose(self) -> None:
        ch, self.channel, self.stub = self.channel, None, None
        if ch is not None:
            await ch.close()


def make_probe(hc: dict[str, Any], address: str, port: int, tls=None) -> Probe:
    """The probe for one health_checks[] entry against one host (address/port already resolved
    from the endpoint's health_check_config). `tls`: (SSL context, SNI) of the cluster's
    transport socket, which Envoy's HTTP and TCP health checks use too."""
    reuse = hc.get("reuse_connection", True)
    probe: Probe
    if hc.get("http_health_check") is not None:
        probe = HttpProbe(address, port, hc["http_health_check"], reuse)
    elif hc.get("tcp_health_check") is not None:
        probe = TcpProbe(address, port, hc["tcp_health_check"], reuse)
    else:
        probe = None
    if probe is not None:
        if tls is not None:
            probe.ssl, probe.sni = tls
        return probe
    if tls is not None:
        raise ValueError("gRPC health checks over upstream TLS are not supported yet")
    if hc.get("grpc_health_check") is not None:
        return GrpcProbe(address, port, hc["grpc_health_check"], reuse, timeout=hc["timeout"])
    raise ValueError("health check without a supported health_checker "
                     "(http_health_check, tcp_health_check, grpc_health_check)")
