"""A real grpcio server for the gRPC proxy tests, without protobuf code generation.

Messages are raw bytes: the server's handlers have no (de)serializers and the client helpers call
`channel.unary_unary(path)` etc. without any, so what a test sends is exactly what goes on the wire
inside the gRPC length-prefixed message.

The service is "cyvoy.test.Echo":

    Unary          returns the request unchanged
    ServerStream   request is ASCII digits N; answers b"msg-0", b"msg-1", ..., b"msg-<N-1>"
    ClientStream   answers all request messages joined with b"|"
    Bidi           answers each request message, as soon as it arrives, upper-cased

Every method also, when it succeeds:
    - sends the request's metadata whose key starts with "x-echo-" back as initial metadata;
    - sets the trailing metadata ("x-trailer", "yes").

Failure controls, request metadata understood by every method (checked in this order, before any
response metadata is sent, so a failure is a trailers-only response):
    x-sleep-ms: N                  sleep N ms first (cut short if the call is cancelled)
    x-fail-first: K, x-call-key: S the first K calls carrying key S fail UNAVAILABLE, later ones go
                                   through (a counter per server and key; without x-call-key the
                                   key is the method name); for testing retries
    x-fail-code: C                 abort with status code C (an int, e.g. 14 for UNAVAILABLE), with
    x-fail-message: M              details M (default "x-fail-code")

Each call is recorded in `GrpcUpstream.calls` (a `Call`: method name, the invocation metadata and
the deadline the server saw), before any failure control applies.

Note: grpcio's server consumes the HTTP/2 pseudo-headers and the reserved headers (te,
content-type, grpc-timeout, grpc-encoding...) itself, so they never appear in `Call.metadata`; the
deadline that grpc-timeout carried is visible as `Call.time_remaining` instead. user-agent does
appear.

    with GrpcUpstream() as up, channel(up.port) as ch:
        body, call = unary(ch, b"hi", metadata=[("x-echo-a", "1")], timeout=2)
        assert body == b"hi" and ("x-trailer", "yes") in call.trailing_metadata()
"""
from __future__ import annotations

import queue
import threading
import time
from concurrent import futures
from typing import NamedTuple

import grpc

SERVICE = "cyvoy.test.Echo"
UNARY = f"/{SERVICE}/Unary"
SERVER_STREAM = f"/{SERVICE}/ServerStream"
CLIENT_STREAM = f"/{SERVICE}/ClientStream"
BIDI = f"/{SERVICE}/Bidi"

TRAILER = ("x-trailer", "yes")
_NO_DEADLINE = 1e9     # grpcio reports ~9.2e18 s remaining when the call has no deadline


class Call(NamedTuple):
    """What the server saw of one call."""
    method: str                      # "Unary", "ServerStream", "ClientStream" or "Bidi"
    metadata: tuple                  # ((key, value), ...) in order; values of "-bin" keys are bytes
    time_remaining: float | None     # seconds left of the deadline when the call arrived; None if none

    def get(self, key: str, default=None):
        """The last value of metadata `key`, or `default`."""
        found = default
        for k, v in self.metadata:
            if k == key:
                found = v
        return found


class GrpcUpstream:
    """A grpcio server on 127.0.0.1 (ephemeral port) serving cyvoy.test.Echo.

    A context manager: entering starts the server (then `port` is set), leaving stops it with grace 0
    (calls still running are cancelled).
    """

    def __init__(self, max_workers: int = 16):
        self.max_workers = max_workers
        self.port: int | None = None
        self.lock = threading.Lock()
        self.calls: list[Call] = []              # append-only, under self.lock
        self._failed_first: dict[str, int] = {}  # x-call-key -> failures served so far
        self._server: grpc.Server | None = None

    # ---- lifecycle ------------------------------------------------------------------------------
    def start(self) -> "GrpcUpstream":
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=self.max_workers,
                                                        thread_name_prefix="grpc-upstream"))
        handlers = {
            "Unary": grpc.unary_unary_rpc_method_handler(self._unary),
            "ServerStream": grpc.unary_stream_rpc_method_handler(self._server_stream),
            "ClientStream": grpc.stream_unary_rpc_method_handler(self._client_stream),
            "Bidi": grpc.stream_stream_rpc_method_handler(self._bidi),
        }
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
        self.port = server.add_insecure_port("127.0.0.1:0")
        if not self.port:
            raise RuntimeError("grpc server could not bind 127.0.0.1:0")
        server.start()
        self._server = server
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop(grace=0).wait(timeout=5)
            self._server = None

    def __enter__(self) -> "GrpcUpstream":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def calls_to(self, method: str) -> list[Call]:
        """The recorded calls to `method` ("Unary", ...), in arrival order."""
        with self.lock:
            return [c for c in self.calls if c.method == method]

    # ---- common to every method ------------------------------------------------------------------
    def _begin(self, method: str, context: grpc.ServicerContext) -> None:
        """Record the call, apply the failure controls, then send the echo/trailing metadata."""
        md = tuple((m.key, m.value) for m in context.invocation_metadata())
        remaining = context.time_remaining()
        call = Call(method, md, None if remaining is None or remaining > _NO_DEADLINE else remaining)
        with self.lock:
            self.calls.append(call)

        sleep_ms = call.get("x-sleep-ms")
        if sleep_ms is not None:
            end = time.monotonic() + int(sleep_ms) / 1000
            while context.is_active() and (left := end - time.monotonic()) > 0:
                time.sleep(min(left, 0.01))

        fail_first = call.get("x-fail-first")
        if fail_first is not None:
            key = call.get("x-call-key", method)
            with self.lock:
                done = self._failed_first.get(key, 0)
                fail = done < int(fail_first)
                if fail:
                    self._failed_first[key] = done + 1
            if fail:
                context.abort(grpc.StatusCode.UNAVAILABLE, f"x-fail-first {done + 1}/{fail_first}")

        fail_code = call.get("x-fail-code")
        if fail_code is not None:
            code = _status_code(int(fail_code))
            if code is not grpc.StatusCode.OK:
                context.abort(code, call.get("x-fail-message", "x-fail-code"))

        echo = tuple((k, v) for k, v in md if k.startswith("x-echo-"))
        if echo:
            context.send_initial_metadata(echo)
        context.set_trailing_metadata((TRAILER,))

    # ---- the four methods -----------------------------------------------------------------------
    def _unary(self, request: bytes, context):
        self._begin("Unary", context)
        return request

    def _server_stream(self, request: bytes, context):
        self._begin("ServerStream", context)
        if not request.isdigit():
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "ServerStream wants ASCII digits")
        for i in range(int(request)):
            yield b"msg-%d" % i

    def _client_stream(self, request_iterator, context):
        self._begin("ClientStream", context)
        return b"|".join(request_iterator)

    def _bidi(self, request_iterator, context):
        self._begin("Bidi", context)
        for message in request_iterator:
            yield message.upper()


def _status_code(value: int) -> grpc.StatusCode:
    for code in grpc.StatusCode:
        if code.value[0] == value:
            return code
    raise ValueError(f"x-fail-code {value} is no gRPC status code")


# ---- client side ----------------------------------------------------------------------------------
def channel(port: int, **options) -> grpc.Channel:
    """An insecure channel to 127.0.0.1:port (a context manager that closes it).

    `options` are gRPC channel arguments, e.g. `channel(port, **{"grpc.enable_retries": 0})`.
    """
    return grpc.insecure_channel(f"127.0.0.1:{port}", options=list(options.items()))


def unary(ch: grpc.Channel, payload: bytes, metadata=(), timeout=None):
    """Call Unary; returns (response bytes, call). The call gives initial_metadata(),
    trailing_metadata(), code() and details(). Raises grpc.RpcError on failure."""
    return ch.unary_unary(UNARY).with_call(payload, metadata=metadata, timeout=timeout)


def server_stream(ch: grpc.Channel, n: int, metadata=(), timeout=None) -> list[bytes]:
    """Call ServerStream for n messages; returns them all."""
    return list(ch.unary_stream(SERVER_STREAM)(b"%d" % n, metadata=metadata, timeout=timeout))


def client_stream(ch: grpc.Channel, messages, metadata=(), timeout=None) -> bytes:
    """Call ClientStream with `messages`; returns the joined answer."""
    return ch.stream_unary(CLIENT_STREAM)(iter(list(messages)), metadata=metadata, timeout=timeout)


def bidi(ch: grpc.Channel, messages, metadata=(), timeout=None) -> list[bytes]:
    """Call Bidi sending all `messages` up front; returns all the answers."""
    return list(ch.stream_stream(BIDI)(iter(list(messages)), metadata=metadata, timeout=timeout))


def bidi_ping_pong(ch: grpc.Channel, messages, metadata=(), timeout=5.0) -> list[bytes]:
    """Call Bidi sending each message only after the answer to the previous one has arrived, so the
    call can only complete if both directions really stream (a proxy that buffered either one would
    run into the deadline: DEADLINE_EXCEEDED). Returns the answers; raises AssertionError if the
    stream ends early or answers more than it was asked.

    `timeout` bounds the whole call and must not be None (the request iterator waits on a queue).
    """
    if timeout is None:
        raise ValueError("bidi_ping_pong needs a finite timeout")
    messages = list(messages)
    outbox: queue.Queue = queue.Queue()
    done = object()

    def requests():
        while (m := outbox.get()) is not done:
            yield m

    if messages:
        outbox.put(messages[0])
    else:
        outbox.put(done)
    call = ch.stream_stream(BIDI)(requests(), metadata=metadata, timeout=timeout)
    replies = []
    try:
        for i in range(len(messages)):
            reply = next(call, None)
            if reply is None:
                raise AssertionError(f"Bidi ended after {i} of {len(messages)} replies")
            replies.append(reply)
            outbox.put(messages[i + 1] if i + 1 < len(messages) else done)
        extra = list(call)
        if extra:
            raise AssertionError(f"Bidi answered more than asked: {extra!r}")
    finally:
        outbox.put(done)           # never leave grpc's request thread waiting on the queue
        call.cancel()              # no-op once the call has finished
    return replies
