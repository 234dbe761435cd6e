"""Malformed upstream responses, live through cyvoy: the client connection is never corrupted, and
the upstream connection that sent them is never used again.

A scripted raw-socket upstream (ScriptedUpstream below) reads a request head and, for
`GET /case/<name>`, plays the case's script: bytes to write, pauses, and at the end either a close
(FIN), a reset (RST), or nothing ("hold": it keeps the connection open and watches whether the proxy
closes it, and whether the proxy sends anything more on it). `GET /ok` is answered 200
"fine conn=<n>" on any connection, n naming the upstream connection that served it.

One cyvoy (master + 1 worker) for the module. The cases, by what the proxy can still do:

- "pre-head": the response is refused before its head went downstream (bad status line,
  Content-Length with Transfer-Encoding, obs-fold, NUL, oversized head, ...): the client gets a
  complete 502 and nothing else; the proxy closes the upstream connection;
- "reset-before-head": the upstream closes in the middle of the head: 503, as Envoy answers an
  upstream reset before headers;
- "post-head": the failure comes after the head was forwarded (closes mid-body, resets, an invalid
  chunk size, data longer than its chunk, a bad trailer section): the client gets that head and
  part of the body, then its connection is closed, so that it sees an incomplete message (fewer
  bytes than Content-Length, or a chunked body without its last chunk; for an HTTP/1.0 client of a
  body with no Content-Length, where only a reset can tell truncation from the end, a reset);
- "either": the head and a bad first chunk in one write: one of the two above;
- "excess": a complete response followed by more bytes than it framed (more body than
  Content-Length, a second response after a 204/304 or after the last chunk): the client gets the
  framed response exactly, and the excess never reaches any client; the proxy closes the upstream
  connection (as soon as the excess arrives, or at once if it came with the response).

After every case: the client bytes never contain the marker of the excess ("POISON"), the upstream
connection of the case received nothing after the case's request, and a next request works and is
served by another upstream connection - on the same client connection when the proxy kept it
open (closing it instead, without sending anything more, is fine too), and on a new client
connection. The worker keeps its pid; the log has no internal error.
"""
from __future__ import annotations

import dataclasses
import socket
import struct
import threading
import time

import h11
import pytest

from tests.harness import Proxy, simple_config

TIMEOUT = 3.0
POISON = b"POISON"
HOST = b"resp.test"

# ---- the scripted upstream --------------------------------------------------------------------------


@dataclasses.dataclass
class UpConn:
    id: int
    paths: list = dataclasses.field(default_factory=list)
    script_done: threading.Event = dataclasses.field(default_factory=threading.Event)
    peer_closed: threading.Event = dataclasses.field(default_factory=threading.Event)
    closed_how: str = ""                 # how the proxy ended it: "fin" / "rst" / "" (not seen)
    after_script: bytearray = dataclasses.field(default_factory=bytearray)
    write_error: str = ""


class ScriptedUpstream:
    def __init__(self, scripts: dict):
        self.scripts = scripts           # path -> list of steps
        self.lock = threading.Lock()
        self.conns: list[UpConn] = []
        self._sock = socket.socket()
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(64)
        self.port = self._sock.getsockname()[1]
        self._closing = False
        threading.Thread(target=self._accept, daemon=True, name="scripted-upstream").start()

    def _accept(self):
        while not self._closing:
            try:
                s, _ = self._sock.accept()
            except OSError:
                return
            with self.lock:
                c = UpConn(len(self.conns))
                self.conns.append(c)
            threading.Thread(target=self._serve, args=(s, c), daemon=True).start()

    def conn_for(self, path: bytes, timeout: float = TIMEOUT) -> UpConn | None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                for c in self.conns:
                    if path in c.paths:
                        return c
            time.sleep(0.005)
        return None

    def _serve(self, s: socket.socket, c: UpConn):
        buf = b""
        try:
            while True:
                while b"\r\n\r\n" not in buf:
                    try:
                        b = s.recv(65536)
                    except OSError:
                        b = b""
                    if not b:
                        c.closed_how = "fin"
                        c.peer_closed.set()
                        return
                    buf += b
                head, buf = buf.split(b"\r\n\r\n", 1)
                path = head.split(b"\r\n", 1)[0].split(b" ")[1]
                with self.lock:
                    c.paths.append(path)
                steps = self.scripts.get(path)
                if steps is None:
                    body = b"fine conn=%d" % c.id
                    s.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
                    continue
                self._play(s, c, steps, buf)
                return
        finally:
            s.close()

    def _play(self, s: socket.socket, c: UpConn, steps: list, pending: bytes):
        c.after_script += pending
        end = "hold"
        for step in steps:
            if isinstance(step, bytes):
                try:
                    s.sendall(step)
                except OSError as e:
                    c.write_error = repr(e)
                    break
            elif isinstance(step, float):
                time.sleep(step)
            else:
                end = step
        if end == "rst":
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        if end in ("close", "rst"):
            c.script_done.set()
            return
        c.script_done.set()
        # hold: see whether the proxy sends more on this connection, and when it closes it
        s.settimeout(TIMEOUT)
        while True:
            try:
                b = s.recv(65536)
            except socket.timeout:
                return
            except ConnectionResetError:
                c.closed_how = "rst"
                c.peer_closed.set()
                return
            except OSError:
                return
            if not b:
                c.closed_how = "fin"
                c.peer_closed.set()
                return
            c.after_script += b

    def close(self):
        self._closing = True
        self._sock.close()


# ---- the cases --------------------------------------------------------------------------------------

@dataclasses.dataclass
class RCase:
    name: str
    kind: str                       # "pre-head", "reset-before-head", "post-head", "either", "excess"
    steps: list                     # bytes to write, float pauses, then "hold" (default) / "close" / "rst"
    body: bytes = b""               # post-head / either / excess: the response body as the upstream meant it
    http10: bool = False            # the client speaks HTTP/1.0
    xfail: str = ""                 # a known proxy bug this case exposes (strict xfail)

    @property
    def path(self) -> bytes:
        return b"/case/" + self.name.encode()

    @property
    def holds(self) -> bool:
        return not any(s in ("close", "rst") for s in self.steps)


OK = b"HTTP/1.1 200 OK\r\n"
CHUNKED = OK + b"Transfer-Encoding: chunked\r\n\r\n"
PAUSE = 0.05
SECOND = b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\n" + POISON     # a response nobody asked for


def _pre(name, *steps):
    return RCase(name, "pre-head", list(steps))


CASES = [
    # status line
    _pre("status-code-letters", b"HTTP/1.1 2OO OK\r\nContent-Length: 2\r\n\r\nok"),
    _pre("status-code-missing", b"HTTP/1.1 OK\r\nContent-Length: 2\r\n\r\nok"),
    _pre("status-code-two-digits", b"HTTP/1.1 20 OK\r\nContent-Length: 2\r\n\r\nok"),
    _pre("status-code-four-digits", b"HTTP/1.1 2000 OK\r\nContent-Length: 2\r\n\r\nok"),
    _pre("status-code-600", b"HTTP/1.1 600 Weird\r\nContent-Length: 2\r\n\r\nok"),
    _pre("status-code-099", b"HTTP/1.1 099 Weird\r\nContent-Length: 2\r\n\r\nok"),
    _pre("status-line-garbage", b"garbage\r\n\r\n"),
    _pre("status-line-http-0.9-body", b"<html>hello</html>\n"),
    _pre("status-line-leading-sp", b" HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"),
    _pre("status-line-two-sp", b"HTTP/1.1  200 OK\r\nContent-Length: 2\r\n\r\nok"),
    _pre("status-line-lowercase-http", b"http/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"),
    _pre("status-line-version-2", b"HTTP/2 200 OK\r\nContent-Length: 2\r\n\r\nok"),
    _pre("status-line-version-1.2", b"HTTP/1.2 200 OK\r\nContent-Length: 2\r\n\r\nok"),
    _pre("status-line-bare-lf", b"HTTP/1.1 200 OK\nContent-Length: 2\r\n\r\nok"),
    _pre("status-line-bare-cr", b"HTTP/1.1 200 OK\rContent-Length: 2\r\n\r\nok"),
    _pre("status-line-nul-in-reason", b"HTTP/1.1 200 O\x00K\r\nContent-Length: 2\r\n\r\nok"),
    # framing headers
    _pre("cl-and-te", OK + b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"),
    _pre("te-and-cl", OK + b"Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n5\r\nhello\r\n0\r\n\r\n"),
    _pre("two-content-lengths", OK + b"Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello!"),
    _pre("content-length-list", OK + b"Content-Length: 5, 5\r\n\r\nhello"),
    _pre("content-length-plus", OK + b"Content-Length: +5\r\n\r\nhello"),
    _pre("content-length-negative", OK + b"Content-Length: -1\r\n\r\nhello"),
    _pre("content-length-hex", OK + b"Content-Length: 0x5\r\n\r\nhello"),
    _pre("content-length-overflow", OK + b"Content-Length: 99999999999999999999\r\n\r\nhello"),
    _pre("te-not-chunked", OK + b"Transfer-Encoding: gzip\r\n\r\nhello"),
    _pre("te-chunked-twice", OK + b"Transfer-Encoding: chunked, chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"),
    _pre("te-underscore-with-cl", OK + b"Content-Length: 5\r\nTransfer_Encoding: chunked\r\n\r\nhello"),
    _pre("te-vt-value", OK + b"Transfer-Encoding: \x0bchunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"),
    # header lines
    _pre("obs-fold", OK + b"X-A: b\r\n c\r\nContent-Length: 2\r\n\r\nok"),
    _pre("obs-fold-first-line", OK + b" X-A: b\r\nContent-Length: 2\r\n\r\nok"),
    _pre("nul-in-header-value", OK + b"X-A: b\x00c\r\nContent-Length: 2\r\n\r\nok"),
    _pre("nul-in-header-name", OK + b"X-\x00A: b\r\nContent-Length: 2\r\n\r\nok"),
    _pre("space-before-colon", OK + b"Content-Length : 2\r\n\r\nok"),
    _pre("bare-cr-in-header", OK + b"X-A: b\rc\r\nContent-Length: 2\r\n\r\nok"),
    _pre("bare-lf-header-line", OK + b"X-A: b\nContent-Length: 2\r\n\r\nok"),
    _pre("header-without-colon", OK + b"X-A\r\nContent-Length: 2\r\n\r\nok"),
    _pre("oversized-head", OK + b"X-Big: " + b"a" * (70 * 1024) + b"\r\nContent-Length: 2\r\n\r\nok"),
    _pre("too-many-headers", OK + b"".join(b"X-H%d: v\r\n" % k for k in range(150))
         + b"Content-Length: 2\r\n\r\nok"),
    # interim responses, and a bad head that arrives in pieces
    _pre("101-without-upgrade", b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: x\r\n\r\n"),
    _pre("100-then-bad-status", b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 2x0 OK\r\n\r\n"),
    _pre("bad-header-after-pause", OK, PAUSE, b"X-A: b\x00\r\nContent-Length: 2\r\n\r\nok"),
    RCase("close-mid-head", "reset-before-head", [OK + b"Content-Le", PAUSE, "close"]),
    # a bad first chunk that arrives together with the head
    RCase("invalid-chunk-size-with-head", "either", [CHUNKED + b"zz\r\nhello\r\n0\r\n\r\n"]),
    RCase("chunk-size-overflow-with-head", "either", [CHUNKED + b"1" + b"0" * 16 + b"\r\nhello\r\n0\r\n\r\n"]),
    RCase("chunk-0x-size-with-head", "either", [CHUNKED + b"0x5\r\nhello\r\n0\r\n\r\n"]),
    # after the head went downstream
    RCase("cl-close-mid-body", "post-head", [OK + b"Content-Length: 100\r\n\r\n" + b"x" * 10, PAUSE, "close"],
          body=b"x" * 100),
    RCase("cl-reset-mid-body", "post-head", [OK + b"Content-Length: 100\r\n\r\n" + b"x" * 10, PAUSE, "rst"],
          body=b"x" * 100),
    RCase("cl-close-right-after-head", "post-head", [OK + b"Content-Length: 100\r\n\r\n", PAUSE, "close"],
          body=b"x" * 100),
    RCase("chunked-close-between-chunks", "post-head", [CHUNKED + b"5\r\nhello\r\n", PAUSE, "close"],
          body=b"hello world"),
    RCase("chunked-close-mid-chunk", "post-head", [CHUNKED + b"b\r\nhello", PAUSE, "close"], body=b"hello world"),
    RCase("chunked-reset-mid-chunk", "post-head", [CHUNKED + b"b\r\nhello", PAUSE, "rst"], body=b"hello world"),
    RCase("chunked-invalid-size-mid-body", "post-head", [CHUNKED + b"5\r\nhello\r\n", PAUSE, b"zz\r\nworld\r\n"],
          body=b"hello"),
    RCase("chunked-0x-size-mid-body", "post-head", [CHUNKED + b"5\r\nhello\r\n", PAUSE, b"0x6\r\n world\r\n"],
          body=b"hello world"),
    RCase("chunked-size-overflow-mid-body", "post-head",
          [CHUNKED + b"5\r\nhello\r\n", PAUSE, b"f" * 17 + b"\r\n world\r\n"], body=b"hello world"),
    RCase("chunked-data-longer-than-size", "post-head",
          [CHUNKED + b"5\r\nhello\r\n", PAUSE, b"3\r\n world\r\n0\r\n\r\n"], body=b"hello wor"),
    RCase("chunked-bare-lf-size-line", "post-head", [CHUNKED + b"5\r\nhello\r\n", PAUSE, b"6\n world\r\n"],
          body=b"hello world"),
    RCase("chunked-nul-in-extension", "post-head", [CHUNKED + b"5\r\nhello\r\n", PAUSE, b"6;a\x00\r\n world\r\n"],
          body=b"hello world"),
    RCase("chunked-trailer-obs-fold", "post-head",
          [CHUNKED + b"5\r\nhello\r\n", PAUSE, b"0\r\nX-T: a\r\n b\r\n\r\n"], body=b"hello"),
    RCase("chunked-trailer-nul", "post-head", [CHUNKED + b"5\r\nhello\r\n", PAUSE, b"0\r\nX-T: a\x00\r\n\r\n"],
          body=b"hello"),
    RCase("chunked-trailer-content-length", "post-head",
          [CHUNKED + b"5\r\nhello\r\n", PAUSE, b"0\r\nContent-Length: 6\r\n\r\n" + POISON], body=b"hello"),
    RCase("chunked-last-chunk-bare-lf", "post-head", [CHUNKED + b"5\r\nhello\r\n", PAUSE, b"0\n\n"], body=b"hello"),
    # the same for an HTTP/1.0 client, whose response has no Content-Length when the upstream's has none
    RCase("http10-chunked-invalid-size-mid-body", "post-head",
          [CHUNKED + b"5\r\nhello\r\n", PAUSE, b"zz\r\nworld\r\n"], body=b"hello", http10=True),
    RCase("http10-chunked-close-mid-body", "post-head", [CHUNKED + b"5\r\nhello\r\n", PAUSE, "close"],
          body=b"hello world", http10=True),
    RCase("http10-cl-close-mid-body", "post-head",
          [OK + b"Content-Length: 100\r\n\r\n" + b"x" * 10, PAUSE, "close"], body=b"x" * 100, http10=True),
    # more than the response framed
    RCase("more-than-content-length-same-write", "excess", [OK + b"Content-Length: 5\r\n\r\nhello" + SECOND],
          body=b"hello"),
    RCase("more-than-content-length-later", "excess", [OK + b"Content-Length: 5\r\n\r\nhello", PAUSE, SECOND],
          body=b"hello"),
    RCase("more-than-content-length-with-last-body-bytes", "excess",
          [OK + b"Content-Length: 10\r\n\r\nhello", PAUSE, b"world" + SECOND], body=b"helloworld"),
    RCase("bytes-after-last-chunk", "excess", [CHUNKED + b"5\r\nhello\r\n0\r\n\r\n" + SECOND], body=b"hello"),
    RCase("bytes-after-last-chunk-later", "excess", [CHUNKED + b"5\r\nhello\r\n", PAUSE, b"0\r\n\r\n" + SECOND],
          body=b"hello"),
    RCase("body-after-204", "excess", [b"HTTP/1.1 204 No Content\r\n\r\n" + SECOND], body=b""),
    RCase("body-after-304-with-content-length", "excess",
          [b"HTTP/1.1 304 Not Modified\r\nContent-Length: 6\r\n\r\n" + POISON], body=b""),
]


# ---- module fixture ---------------------------------------------------------------------------------

@dataclasses.dataclass
class Live:
    proxy: Proxy
    upstream: ScriptedUpstream
    worker_pids: set
    log_offset: int = 0
    summary: dict = dataclasses.field(default_factory=dict)    # kind -> {outcome and how it ended: count}


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    upstream = ScriptedUpstream({c.path: c.steps for c in CASES})
    tmp = tmp_path_factory.mktemp("malformed_responses")
    p = Proxy(simple_config([upstream.port]), tmp, workers=1)
    try:
        pids = {w.pid for w in p.workers()}
        assert len(pids) == 1, pids
        yield Live(p, upstream, pids, log_offset=len(p.log_path.read_bytes()))
    finally:
        if p.proc.poll() is None:
            p.stop()
        upstream.close()


# ---- the client side --------------------------------------------------------------------------------

@dataclasses.dataclass
class Answer:
    raw: bytes = b""                # every byte the proxy sent on this connection
    status: int = 0                 # 0: no response head
    headers: list = dataclasses.field(default_factory=list)
    body: bytes = b""
    complete: bool = False          # h11 saw the end of the response
    error: str = ""                 # h11's complaint (e.g. the peer closed mid-body)
    ended: str = ""                 # "fin", "rst", or "" (still open at the end of reading)


class Client:
    """An h11 client on its own connection to the proxy."""

    def __init__(self, port: int):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
        self.h11 = h11.Connection(h11.CLIENT)
        self.raw = bytearray()

    def get(self, path: bytes) -> Answer:
        try:
            self.sock.sendall(self.h11.send(h11.Request(method="GET", target=path, headers=[("Host", HOST)]))
                              + self.h11.send(h11.EndOfMessage()))
        except OSError as e:
            return Answer(raw=bytes(self.raw), ended="rst", error=f"send: {e!r}")
        return self.read()

    def read(self) -> Answer:
        a = Answer()
        deadline = time.monotonic() + TIMEOUT
        while True:
            try:
                ev = self.h11.next_event()
            except h11.RemoteProtocolError as e:
                a.error = str(e)
                break
            if ev is h11.NEED_DATA:
                left = deadline - time.monotonic()
                if left <= 0:
                    a.error = "timeout"
                    break
                self.sock.settimeout(left)
                try:
                    b = self.sock.recv(65536)
                except socket.timeout:
                    a.error = "timeout"
                    break
                except ConnectionResetError:
                    a.ended = "rst"
                    b = b""
                if not b and not a.ended:
                    a.ended = "fin"
                self.raw += b
                self.h11.receive_data(b)
                continue
            if isinstance(ev, h11.Response):
                a.status, a.headers = ev.status_code, [(n.lower(), v) for n, v in ev.headers.raw_items()]
            elif isinstance(ev, h11.InformationalResponse):
                continue
            elif isinstance(ev, h11.Data):
                a.body += bytes(ev.data)
            elif isinstance(ev, h11.EndOfMessage):
                a.complete = True
                break
            elif isinstance(ev, h11.ConnectionClosed):
                break
        a.raw = bytes(self.raw)
        return a

    def reusable(self) -> bool:
        if self.h11.our_state is h11.DONE and self.h11.their_state is h11.DONE:
            self.h11.start_next_cycle()
            return True
        return False

    def close(self):
        self.sock.close()


def http10_exchange(port: int, path: bytes) -> Answer:
    """HTTP/1.0 (h11 speaks 1.1 only): send, read until the proxy closes; parse the head by hand."""
    a = Answer()
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as s:
        s.sendall(b"GET " + path + b" HTTP/1.0\r\nHost: " + HOST + b"\r\n\r\n")
        got = bytearray()
        deadline = time.monotonic() + TIMEOUT
        while (left := deadline - time.monotonic()) > 0:
            s.settimeout(left)
            try:
                b = s.recv(65536)
            except socket.timeout:
                break
            except ConnectionResetError:
                a.ended = "rst"
                break
            if not b:
                a.ended = "fin"
                break
            got += b
    a.raw = bytes(got)
    head, sep, body = a.raw.partition(b"\r\n\r\n")
    if sep:
        lines = head.split(b"\r\n")
        a.status = int(lines[0].split(b" ")[1])
        a.headers = [(k.strip().lower(), v.strip()) for k, v in (ln.split(b":", 1) for ln in lines[1:])]
        a.body = body
        cl = dict(a.headers).get(b"content-length")
        a.complete = cl is not None and len(body) == int(cl)
    return a


# ---- the checks -------------------------------------------------------------------------------------

def _check_answer(case: RCase, a: Answer) -> tuple[str, list]:
    """Which outcome the client saw ("502", "503", "truncated", "complete") and the problems with it."""
    problems = []
    if POISON in a.raw:
        problems.append("bytes of the excess reached the client")
    if a.status == 0:
        return "nothing", [f"no response head (ended: {a.ended or 'no'}, {a.error})"]
    if a.complete and a.status in (502, 503):
        return str(a.status), problems
    if a.complete:
        if a.body != case.body:
            problems.append(f"complete response with body {a.body[:80]!r}, the upstream framed {case.body[:80]!r}")
        return "complete", problems
    # an incomplete response: the head the upstream sent, part of its body, then the end
    if not a.ended:
        problems.append(f"incomplete response and the connection still open after {TIMEOUT}s")
    if not case.body.startswith(a.body):
        problems.append(f"the client got body bytes {a.body[:80]!r} that are not the upstream's {case.body[:80]!r}")
    if case.http10 and b"content-length" not in dict(a.headers) and a.ended != "rst":
        problems.append("a body without Content-Length cut short by a FIN: the client cannot tell it from "
                        "the whole body (only a reset can)")
    return "truncated", problems


def _run(live: Live, case: RCase) -> list:
    port = live.proxy.port
    problems = []
    client = None
    if case.http10:
        a = http10_exchange(port, case.path)
    else:
        client = Client(port)
        a = client.get(case.path)
    outcome, more = _check_answer(case, a)
    problems += more
    key = outcome + (f" ({a.ended})" if outcome == "truncated" else "")
    counts = live.summary.setdefault(case.kind, {})
    counts[key] = counts.get(key, 0) + 1
    wanted = {"pre-head": {"502"}, "reset-before-head": {"503"}, "post-head": {"truncated"},
              "either": {"502", "truncated"}, "excess": {"complete"}}[case.kind]
    if outcome not in wanted:
        problems.append(f"outcome {outcome} (status {a.status}, complete={a.complete}, ended={a.ended or 'no'}, "
                        f"{a.error}); expected {' or '.join(sorted(wanted))}")
    if outcome == "502" and case.kind in ("pre-head", "either"):
        # the 502 must be the proxy's own reply, not a forwarded head of the upstream's
        if not any(n == b"content-length" for n, _ in a.headers):
            problems.append("502 without Content-Length")

    up = live.upstream.conn_for(case.path)
    if up is None:
        problems.append("the request never reached the upstream")
    else:
        up.script_done.wait(TIMEOUT)
        if case.holds and not up.peer_closed.wait(TIMEOUT):
            problems.append("the proxy kept the upstream connection open after the malformed response")
        if case.kind == "excess" and case.holds:
            # the excess may arrive after the response went out: let it, before anything is reused
            time.sleep(0.1)

    # the next request: on the same client connection if the proxy kept it, and on a new one
    follow = []
    if client is not None and outcome in ("502", "503", "complete"):
        if client.reusable():
            follow.append(("same client connection", client.get(b"/ok")))
            counts["next request on the same client connection"] = counts.get(
                "next request on the same client connection", 0) + 1
        elif a.ended == "" and not any(n == b"connection" and v.lower() == b"close" for n, v in a.headers):
            problems.append("the client connection is neither reusable nor closed")
    nc = Client(port)
    follow.append(("new client connection", nc.get(b"/ok")))
    nc.close()
    for where, f in follow:
        if where == "same client connection" and f.status == 0 and f.ended and len(f.raw) == len(a.raw):
            continue    # the proxy closed the client connection after that response, without a byte: fine
        if POISON in f.raw:
            problems.append(f"{where}: bytes of the excess reached the client")
        if not (f.complete and f.status == 200 and f.body.startswith(b"fine conn=")):
            problems.append(f"{where}: next request got {f.status} {f.body[:80]!r} ({f.error})")
        elif up is not None and f.body == b"fine conn=%d" % up.id:
            problems.append(f"{where}: the next request went over the upstream connection of the malformed response")
    if up is not None:
        if up.after_script:
            problems.append(f"the proxy sent more on the upstream connection after the case: {bytes(up.after_script)[:200]!r}")
    if client is not None:
        client.close()

    with open(live.proxy.log_path, "rb") as fh:
        fh.seek(live.log_offset)
        new_log = fh.read().decode("latin-1")
    live.log_offset += len(new_log)
    if "internal error" in new_log or "Traceback" in new_log or "died" in new_log:
        problems.append("proxy log: " + new_log[-1500:])
    if {w.pid for w in live.proxy.workers()} != live.worker_pids:
        problems.append("the worker changed")
    if problems:
        problems.append(f"client got: {a.raw[:500]!r}")
    return problems


@pytest.mark.parametrize("case", [pytest.param(c, id=c.name, marks=[pytest.mark.xfail(strict=True, reason=c.xfail)]
                                                 if c.xfail else []) for c in CASES])
def test_malformed_response(live, case):
    problems = _run(live, case)
    assert not problems, "\n  ".join(problems)


def test_zz_summary_and_worker_survived(live, capsys):
    log = live.proxy.log()
    assert "internal error" not in log and "Traceback" not in log, log[-3000:]
    assert {w.pid for w in live.proxy.workers()} == live.worker_pids
    assert live.proxy.proc.poll() is None
    lines = [f"  {name}: {', '.join(f'{k} {v}' for k, v in sorted(counts.items()))}"
             for name, counts in sorted(live.summary.items())]
    with capsys.disabled():
        print("\n[malformed upstream responses, live through cyvoy] client outcome per kind\n" + "\n".join(lines))
