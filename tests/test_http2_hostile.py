"""Hostile HTTP/2 input from clients (RFC 9113 section 10.5), frame by frame, against the real proxy:
each attack ends in a GOAWAY (or an RST_STREAM where the fault is one stream's), the worker's
memory stays bounded, and the same worker serves a normal request on a fresh connection after it.

One proxy (one worker, h2c by prior knowledge on a codec_type AUTO listener,
http2_protocol_options {max_concurrent_streams: 2}) and one recording upstream serve the whole
module, so the last test checks that the worker that took all of it is still the one serving.
Frames are written with hyperframe and read back with it (9-byte header, then the body); header
blocks are HPACK-encoded with hpack (by hand for the bomb)."""
from __future__ import annotations

import json
import socket
import subprocess
import time

import h2.config
import h2.connection
import h2.events
import hpack
import pytest
from h2.errors import ErrorCodes
from hpack.hpack import encode_integer
from hyperframe.frame import (ContinuationFrame, DataFrame, Frame, GoAwayFrame, HeadersFrame,
                              PingFrame, RstStreamFrame, SettingsFrame)

from tests.harness import Proxy, simple_config
from tests.test_streaming_memory import RssWatch
from tests.upstreams import Upstream

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
MAX_STREAMS = 2
RSS_LIMIT = 50 * 2**20


# ---- the proxy and its upstream, shared by the module ---------------------------------------------

@pytest.fixture(scope="module")
def up():
    u = Upstream(name="h2up")
    yield u
    u.close()


@pytest.fixture(scope="module")
def p(up, tmp_path_factory):
    cfg = simple_config([up.port], hcm_fields={
        "http2_protocol_options": {"max_concurrent_streams": MAX_STREAMS}})
    proxy = Proxy(cfg, tmp_path_factory.mktemp("h2hostile"), workers=1)
    (w,) = proxy.workers()
    proxy.first_worker = w.pid
    yield proxy
    if proxy.proc.poll() is None:
        proxy.kill_all()


@pytest.fixture(autouse=True)
def _fresh_upstream_record(up):
    up.requests.clear()


# ---- a raw HTTP/2 client ----------------------------------------------------------------------------

class Raw:
    """A client socket that writes frames as given and reads the server's frames with hyperframe."""

    def __init__(self, port: int, timeout: float = 3.0, rcvbuf: int | None = None, preface: bool = True):
        self.sock = socket.socket()
        if rcvbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)   # before connect: the window
        self.sock.settimeout(timeout)
        self.sock.connect(("127.0.0.1", port))
        self.buf = b""
        self.frames: list[Frame] = []
        self.end: str | None = None          # "eof" or "reset" once the server is gone
        self.enc = hpack.Encoder()
        self.dec = hpack.Decoder()
        self.dec.max_header_list_size = 1 << 20
        self.statuses: dict[int, bytes] = {}
        self.ack_settings = True
        if preface:
            self.send(PREFACE, SettingsFrame(0))

    def close(self) -> None:
        self.sock.close()

    def send(self, *parts) -> None:
        self.sock.sendall(b"".join(x if isinstance(x, (bytes, bytearray)) else x.serialize() for x in parts))

    def try_send(self, *parts) -> bool:
        """False when the server has closed or reset the connection."""
        try:
            self.send(*parts)
            return True
        except (ConnectionResetError, BrokenPipeError):
            return False

    def headers(self, sid: int, fields: list, end_stream: bool = True, end_headers: bool = True) -> HeadersFrame:
        flags = (["END_STREAM"] if end_stream else []) + (["END_HEADERS"] if end_headers else [])
        return HeadersFrame(sid, self.enc.encode(fields), flags=flags)

    def handshake(self) -> None:
        """Reads the server's SETTINGS and acknowledges it, like a well-behaved client."""
        self.read(lambda f: isinstance(f, SettingsFrame) and "ACK" not in f.flags)

    def _next(self, deadline: float) -> Frame | None:
        while True:
            if len(self.buf) >= 9:
                f, length = Frame.parse_frame_header(memoryview(self.buf[:9]))
                if len(self.buf) >= 9 + length:
                    f.parse_body(memoryview(self.buf[9:9 + length]))
                    self.buf = self.buf[9 + length:]
                    return f
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            self.sock.settimeout(left)
            try:
                b = self.sock.recv(65536)
            except socket.timeout:
                return None
            except ConnectionResetError:
                self.end = "reset"
                return None
            if not b:
                self.end = "eof"
                return None
            self.buf += b

    def read(self, until=None, timeout: float = 2.0) -> list[Frame]:
        """Frames until `until(frame)` is true, the connection ends, or `timeout` passes."""
        deadline = time.monotonic() + timeout
        got = []
        while self.end is None:
            f = self._next(deadline)
            if f is None:
                break
            got.append(f)
            self.frames.append(f)
            if isinstance(f, SettingsFrame) and "ACK" not in f.flags and self.ack_settings:
                self.try_send(SettingsFrame(0, flags=["ACK"]))
            if isinstance(f, HeadersFrame):
                fields = dict(self.dec.decode(f.data, raw=True))
                if b":status" in fields:
                    self.statuses[f.stream_id] = fields[b":status"]
            if until is not None and until(f):
                break
        return got

    def read_to_end(self, timeout: float = 3.0) -> None:
        self.read(None, timeout)
        assert self.end is not None, f"the server kept the connection open for {timeout}s"

    def goaways(self) -> list[GoAwayFrame]:
        return [f for f in self.frames if isinstance(f, GoAwayFrame)]

    def resets(self) -> dict[int, int]:
        return {f.stream_id: f.error_code for f in self.frames if isinstance(f, RstStreamFrame)}

    def ended(self, sid: int) -> bool:
        return any(f.stream_id == sid and "END_STREAM" in f.flags
                   for f in self.frames if isinstance(f, (DataFrame, HeadersFrame)))


def req(path: str, method: str = "GET") -> list:
    return [(b":method", method.encode()), (b":scheme", b"http"), (b":authority", b"h2.test"),
            (b":path", path.encode())]


def is_goaway(f) -> bool:
    return isinstance(f, GoAwayFrame)


def h2_get(port: int, path: str = "/echo/fresh", timeout: float = 3.0) -> tuple[int, bytes]:
    """A well-formed request on a fresh h2c connection with the h2 package: (status, body)."""
    c = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding=None))
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        c.initiate_connection()
        c.send_headers(1, req(path), end_stream=True)
        s.sendall(c.data_to_send())
        status, body = 0, b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            data = s.recv(65536)
            if not data:
                break
            for ev in c.receive_data(data):
                if isinstance(ev, h2.events.ResponseReceived):
                    status = int(dict(ev.headers)[b":status"])
                elif isinstance(ev, h2.events.DataReceived):
                    body += ev.data
                    c.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                elif isinstance(ev, h2.events.StreamEnded):
                    return status, body
            s.sendall(c.data_to_send())
    raise AssertionError(f"no complete response to {path} in {timeout}s (status {status})")


def assert_alive(p: Proxy) -> None:
    """The worker that took the attack serves a normal request on a fresh connection."""
    assert [w.pid for w in p.workers()] == [p.first_worker], "the worker was replaced"
    status, body = h2_get(p.port)
    assert status == 200 and json.loads(body)["path"] == "/echo/fresh"


def worker_watch(p: Proxy) -> RssWatch:
    (w,) = p.workers()
    watch = RssWatch(w)
    watch.start()
    return watch


# ---- 1. the preface ---------------------------------------------------------------------------------

def test_invalid_preface_gets_goaway_protocol_error_and_close(p):
    """The request line of the preface switches the AUTO codec to HTTP/2; the rest of the preface
    is wrong, so: GOAWAY(PROTOCOL_ERROR, last stream 0), then the connection closes."""
    c = Raw(p.port, preface=False)
    c.send(b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n")
    c.read_to_end()
    (first, *_) = c.goaways()
    assert first.error_code == ErrorCodes.PROTOCOL_ERROR
    assert first.last_stream_id == 0
    c.close()
    assert_alive(p)


# ---- 2. frame size ------------------------------------------------------------------------------------

def test_frame_over_max_frame_size_gets_goaway_frame_size_error(p):
    """A DATA frame of 16385 bytes (SETTINGS_MAX_FRAME_SIZE is 16384) on an open stream:
    GOAWAY(FRAME_SIZE_ERROR), a connection error (RFC 9113 4.2), and nothing forwarded beyond the
    request head."""
    c = Raw(p.port)
    c.handshake()
    c.send(c.headers(1, req("/sink", "POST"), end_stream=False), DataFrame(1, b"x" * 16385))
    c.read_to_end()
    (first, *_) = c.goaways()
    assert first.error_code == ErrorCodes.FRAME_SIZE_ERROR
    c.close()
    assert_alive(p)


# ---- 3. concurrent streams -----------------------------------------------------------------------------

def test_stream_over_acknowledged_max_concurrent_streams_gets_goaway_protocol_error(p, up):
    """max_concurrent_streams 2, acknowledged by the client; two streams wait on /hang and a third
    HEADERS arrives. Observed: GOAWAY(PROTOCOL_ERROR, last stream 3) and the connection closes, so
    streams 1 and 3 end with it; stream 5 never reaches the upstream. RFC 9113 5.1.2 makes this a
    stream error (PROTOCOL_ERROR or REFUSED_STREAM) which 5.4.1 lets an endpoint treat as a
    connection error; nghttp2 (Envoy) does the same once its SETTINGS is acknowledged."""
    c = Raw(p.port)
    c.handshake()
    c.read(lambda f: isinstance(f, SettingsFrame) and "ACK" in f.flags)   # ours acknowledged too
    c.send(c.headers(1, req("/hang/1")), c.headers(3, req("/hang/3")))
    assert len(up.wait_requests(2, 3)) == 2
    c.send(c.headers(5, req("/hang/5")))
    c.read_to_end()
    (first, *_) = c.goaways()
    assert first.error_code == ErrorCodes.PROTOCOL_ERROR
    assert first.last_stream_id == 3
    assert 5 not in c.statuses and not c.resets()
    time.sleep(0.2)
    assert sorted(r["path"] for r in up.requests) == ["/hang/1", "/hang/3"]
    c.close()
    assert_alive(p)


def test_streams_over_the_limit_in_the_first_flight_are_refused_and_the_rest_served(p, up):
    """A client may send requests right after its preface, before the server's SETTINGS arrives;
    until then there is no stream limit for it to obey. The third stream of such a first flight
    should be refused (retryable), not the whole connection ended."""
    c = Raw(p.port, preface=False)
    c.send(PREFACE, SettingsFrame(0), c.headers(1, req("/delay/0.2")), c.headers(3, req("/delay/0.2")),
           c.headers(5, req("/delay/0.2")))
    c.read(lambda f: c.ended(1) and c.ended(3), timeout=3)
    assert not c.goaways(), [ErrorCodes(g.error_code) for g in c.goaways()]
    assert c.resets().get(5) == ErrorCodes.REFUSED_STREAM
    assert c.statuses.get(1) == b"200" and c.statuses.get(3) == b"200"
    c.close()


# ---- 4, 5. control frame floods from a client that does not read ----------------------------------

def _control_flood(p, frame: bytes, seconds: float = 12.0):
    """Writes `frame` in batches of 1000 without ever reading (a 4 KiB receive buffer, set before
    connecting) until the server cuts the connection; returns (client, frames sent, seconds, RSS growth)."""
    watch = worker_watch(p)
    c = Raw(p.port, rcvbuf=4096, timeout=3.0)
    batch = frame * 1000
    sent = 0
    t0 = time.monotonic()
    while time.monotonic() - t0 < seconds:
        try:
            c.send(batch)
        except (ConnectionResetError, BrokenPipeError):
            break
        except socket.timeout:       # the server stopped reading us: it is closing
            break
        sent += 1000
    took = time.monotonic() - t0
    c.read_to_end(timeout=5)         # what the server had queued, then its close
    watch.stop.set()
    return c, sent, took, watch.growth


def test_settings_flood_from_a_client_that_never_reads_is_cut_off_with_bounded_memory(p):
    """Empty SETTINGS frames, each owed an acknowledgement the client never reads: once the
    socket buffers are full, max_outbound_control_frames (1000) queued acknowledgements end the
    connection. Observed: after ~0.9 million frames (~3 s), the client reads the acknowledgements
    the kernel already held, then EOF; the GOAWAY(ENHANCE_YOUR_CALM) the proxy writes sits behind
    them in its own buffer and goes with the abort, so any GOAWAY seen must say ENHANCE_YOUR_CALM.
    The worker's RSS grows by a few MiB, far under 50."""
    c, sent, took, growth = _control_flood(p, SettingsFrame(0).serialize())
    assert took < 12, f"still open after {sent} SETTINGS frames"
    assert all(g.error_code == ErrorCodes.ENHANCE_YOUR_CALM for g in c.goaways())
    assert growth < RSS_LIMIT, f"worker RSS grew {growth / 2**20:.1f} MiB"
    print(f"SETTINGS flood: {sent} frames, cut after {took:.2f}s ({c.end}, GOAWAY "
          f"{[ErrorCodes(g.error_code).name for g in c.goaways()]}), RSS +{growth / 2**20:.1f} MiB")
    c.close()
    assert_alive(p)


def test_ping_flood_from_a_client_that_never_reads_is_cut_off_with_bounded_memory(p):
    """PING frames, each owed a PING ACK the client never reads: same limit, same outcome."""
    c, sent, took, growth = _control_flood(p, PingFrame(0, opaque_data=b"hostile!").serialize())
    assert took < 12, f"still open after {sent} PING frames"
    assert all(g.error_code == ErrorCodes.ENHANCE_YOUR_CALM for g in c.goaways())
    assert growth < RSS_LIMIT, f"worker RSS grew {growth / 2**20:.1f} MiB"
    print(f"PING flood: {sent} frames, cut after {took:.2f}s ({c.end}, GOAWAY "
          f"{[ErrorCodes(g.error_code).name for g in c.goaways()]}), RSS +{growth / 2**20:.1f} MiB")
    c.close()
    assert_alive(p)


# ---- 6. HPACK bomb -------------------------------------------------------------------------------------

def test_hpack_bomb_gets_goaway_enhance_your_calm_and_never_reaches_the_upstream(p, up):
    """One 4000-byte header added to the dynamic table (literal with incremental indexing), then
    referenced 4000 times by its index (one byte each): a 6.5 KB HEADERS frame that decodes to a
    16 MB header list. The decoder stops as the list passes 64 KiB (hpack's
    OversizedHeaderListError, h2's DenialOfServiceError): GOAWAY(ENHANCE_YOUR_CALM), memory
    bounded, no request upstream."""
    watch = worker_watch(p)
    c = Raw(p.port)
    c.handshake()
    value = b"a" * 4000
    block = bytearray(c.enc.encode(req("/echo/bomb")))
    block += b"\x40" + bytes(encode_integer(5, 7)) + b"x-big" + bytes(encode_integer(len(value), 7)) + value
    block += bytes([0x80 | 62]) * 4000            # indexed field: dynamic table entry 62, the newest
    assert len(block) < 16384
    c.send(HeadersFrame(1, bytes(block), flags=["END_HEADERS", "END_STREAM"]))
    c.read_to_end()
    watch.stop.set()
    (first, *_) = c.goaways()
    assert first.error_code == ErrorCodes.ENHANCE_YOUR_CALM
    assert 1 not in c.statuses
    assert watch.growth < RSS_LIMIT
    time.sleep(0.2)
    assert up.requests == []
    c.close()
    assert_alive(p)


# ---- 7. CONTINUATION flood -----------------------------------------------------------------------------

def test_continuation_flood_gets_goaway_with_bounded_memory(p, up):
    """HEADERS without END_HEADERS, then CONTINUATION frames (1 KiB of header each) that never end
    the block: h2 stops at 64 CONTINUATION frames: GOAWAY(PROTOCOL_ERROR), long before the 10,000 the
    client tries to send; memory bounded, no request upstream."""
    watch = worker_watch(p)
    c = Raw(p.port)
    c.handshake()
    c.send(c.headers(1, req("/echo/cont"), end_headers=False))
    piece = hpack.Encoder().encode([(b"x-c", b"y" * 1024)], huffman=False)
    sent = 0
    while sent < 10000 and c.try_send(*[ContinuationFrame(1, piece)] * 10):
        sent += 10
    c.read_to_end()
    watch.stop.set()
    (first, *_) = c.goaways()
    assert first.error_code == ErrorCodes.PROTOCOL_ERROR
    assert sent < 10000
    assert watch.growth < RSS_LIMIT
    time.sleep(0.2)
    assert up.requests == []
    c.close()
    assert_alive(p)


# ---- 8. empty DATA frames --------------------------------------------------------------------------------

def test_empty_data_frames_flood_gets_goaway_enhance_your_calm(p):
    """An open POST stream, then 1000 DATA frames with no payload and no END_STREAM: more than
    max_consecutive_inbound_frames_with_empty_payload (1) in a row gets GOAWAY(ENHANCE_YOUR_CALM)."""
    c = Raw(p.port)
    c.handshake()
    c.try_send(c.headers(1, req("/sink", "POST"), end_stream=False), *[DataFrame(1, b"")] * 1000)
    c.read_to_end()
    (first, *_) = c.goaways()
    assert first.error_code == ErrorCodes.ENHANCE_YOUR_CALM
    assert first.last_stream_id == 1
    c.close()
    assert_alive(p)


def test_empty_data_flood_is_handled_once_per_connection(p):
    c = Raw(p.port)
    c.handshake()
    before = p.log().count("too many consecutive DATA frames")
    c.try_send(c.headers(1, req("/sink", "POST"), end_stream=False), *[DataFrame(1, b"")] * 1000)
    c.read_to_end()
    c.close()
    time.sleep(0.2)
    assert p.log().count("too many consecutive DATA frames") - before == 1


# ---- 9. malformed requests -------------------------------------------------------------------------------

def test_malformed_pseudo_header_resets_only_its_own_stream(p, up):
    """Stream 1's :path has a space in it ("GET /echo?a=b c HTTP/1.1" in HTTP/1.1 terms): it is
    malformed (RFC 9113 8.3.1), so RST_STREAM(PROTOCOL_ERROR) on stream 1 only; stream 3, well
    formed, on the same connection gets its 200 and is the only request the upstream sees."""
    c = Raw(p.port)
    c.handshake()
    c.send(c.headers(1, req("/echo?a=b c")), c.headers(3, req("/echo/ok")))
    c.read(lambda f: c.ended(3))
    assert c.resets() == {1: ErrorCodes.PROTOCOL_ERROR}
    assert c.statuses == {3: b"200"}
    assert not c.goaways() and c.end is None
    time.sleep(0.2)
    assert [r["path"] for r in up.requests] == ["/echo/ok"]
    c.close()


SMUGGLING = {
    "uppercase-name": [(b"X-Smuggle", b"a")],
    "connection-specific": [(b"connection", b"keep-alive")],
    "crlf-in-value": [(b"x", b"a\r\nhost: evil")],
}


@pytest.mark.parametrize("fields", SMUGGLING.values(), ids=SMUGGLING.keys())
def test_malformed_header_field_resets_only_its_own_stream_and_never_reaches_the_upstream(p, up, fields):
    """An uppercase field name, a connection-specific field, or "x: a\\r\\nhost: evil" (a second
    header line if passed on as HTTP/1.1) on stream 1: RST_STREAM(PROTOCOL_ERROR) for stream 1 only
    (RFC 9113 8.1.1, 8.2); stream 3 on the same connection gets its 200, and it is all the upstream
    sees: no stream 1, no injected field."""
    c = Raw(p.port)
    c.handshake()
    c.send(c.headers(1, req("/echo/bad") + fields), c.headers(3, req("/echo/ok")))
    c.read(lambda f: c.ended(3) or is_goaway(f))
    assert not c.goaways(), [ErrorCodes(g.error_code) for g in c.goaways()]
    assert c.resets() == {1: ErrorCodes.PROTOCOL_ERROR}
    assert c.statuses == {3: b"200"}
    time.sleep(0.2)
    assert [r["path"] for r in up.requests] == ["/echo/ok"]
    seen = json.dumps(up.requests).lower()
    assert "evil" not in seen and "x-smuggle" not in seen and "keep-alive" not in seen
    c.close()


# ---- 10. and after all that ---------------------------------------------------------------------------------

def test_a_fresh_h2c_request_succeeds_after_all_the_hostile_input(p, up):
    """The worker that took every attack above is still the one serving, it logged no internal
    error, and curl (nghttp2) with prior knowledge gets a 200."""
    assert [w.pid for w in p.workers()] == [p.first_worker]
    out = subprocess.run(["curl", "-sS", "--http2-prior-knowledge", "--max-time", "5",
                          "-o", "/dev/null", "-w", "%{http_version} %{http_code}",
                          f"http://127.0.0.1:{p.port}/echo/curl"],
                         capture_output=True, text=True, timeout=10)
    assert out.stdout == "2 200", (out.stdout, out.stderr)
    assert h2_get(p.port)[0] == 200
    assert [r["path"] for r in up.requests] == ["/echo/curl", "/echo/fresh"]
    log = p.log()
    assert "internal error on an HTTP/2 connection" not in log and "Traceback" not in log
