"""A strict recording upstream for tests: a threaded TCP server on loopback that parses everything it
receives with h11 (server role), records every request and every byte, and flags protocol errors.

Every complete request is answered 200 with a small Content-Length body ("ok\\n", none for HEAD).
An h11 error other than the peer closing in the middle of a message is recorded as a protocol
error: a proxy must never send its upstream anything h11 cannot parse.

What is recorded goes to one ordered event log, so a test that runs its cases one after another can
take, per case, the slice of events that happened during it (`mark()` / `since(mark)`), whichever
pooled connection the proxy used.
"""
from __future__ import annotations

import contextlib

import dataclasses
import socket
import threading
import time

import h11

BODY = b"ok\n"


@dataclasses.dataclass
class Request:
    conn: int
    method: bytes
    target: bytes
    http_version: bytes
    headers: list                 # [(name lowercased, value)], as h11 gives them
    raw_headers: list             # [(name as sent, value)]
    body: bytes = b""
    complete: bool = False        # h11 saw its end (EndOfMessage)


@dataclasses.dataclass
class Event:
    conn: int
    kind: str                     # "open", "data", "request", "end", "protocol-error", "aborted", "eof"
    data: bytes = b""
    request: Request | None = None
    detail: str = ""


class RecordingUpstream:
    def __init__(self, max_head: int = 256 * 1024):
        self.max_head = max_head
        self.lock = threading.Lock()
        self.events: list[Event] = []
        self.raw: dict[int, bytearray] = {}     # every byte received, per connection
        self.last_activity = time.monotonic()
        self._next_conn = 0
        self._sock = socket.socket()
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(128)
        self.port = self._sock.getsockname()[1]
        self._closing = False
        self._conns: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept_loop, daemon=True, name="recording-upstream")
        self._thread.start()

    # ---- recording -------------------------------------------------------------------------------
    def _log(self, ev: Event) -> None:
        with self.lock:
            self.events.append(ev)
            self.last_activity = time.monotonic()

    def mark(self) -> int:
        with self.lock:
            return len(self.events)

    def since(self, mark: int) -> list[Event]:
        with self.lock:
            return list(self.events[mark:])

    def quiesce(self, quiet: float = 0.05, limit: float = 1.0) -> None:
        """Wait until nothing has happened for `quiet` seconds (at most `limit`)."""
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            with self.lock:
                idle = time.monotonic() - self.last_activity
            if idle >= quiet:
                return
            time.sleep(quiet - idle)

    # ---- server ----------------------------------------------------------------------------------
    def _accept_loop(self) -> None:
        while not self._closing:
            try:
                sock, _ = self._sock.accept()
            except OSError:
                return
            with self.lock:
                cid = self._next_conn
                self._next_conn += 1
                self.raw[cid] = bytearray()
                self._conns.append(sock)
            threading.Thread(target=self._serve, args=(sock, cid), daemon=True,
                             name=f"recording-upstream-{cid}").start()

    def _serve(self, sock: socket.socket, cid: int) -> None:
        self._log(Event(cid, "open"))
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=self.max_head)
        req: Request | None = None
        eof = False
        try:
            while True:
                try:
                    event = conn.next_event()
                except h11.RemoteProtocolError as e:
                    if eof:
                        # the peer closed (or reset) in the middle of a message
                        self._log(Event(cid, "aborted", request=req, detail=str(e)))
                    else:
                        self._log(Event(cid, "protocol-error", request=req, detail=str(e)))
                        try:
                            sock.sendall(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n"
                                         b"connection: close\r\n\r\n")
                        except OSError:
                            pass
                    return
                if event is h11.NEED_DATA:
                    try:
                        data = sock.recv(65536)
                    except OSError:
                        data = b""
                    if not data:
                        eof = True
                    else:
                        with self.lock:
                            self.raw[cid] += data
                        self._log(Event(cid, "data", data))
                    conn.receive_data(data)
                    continue
                if isinstance(event, h11.Request):
                    req = Request(cid, event.method, event.target, event.http_version,
                                  [(n, v) for n, v in event.headers],
                                  [(n, v) for n, v in event.headers.raw_items()])
                    self._log(Event(cid, "request", request=req))
                elif isinstance(event, h11.Data):
                    req.body += bytes(event.data)
                elif isinstance(event, h11.EndOfMessage):
                    req.complete = True
                    self._log(Event(cid, "end", request=req))
                    self._respond(sock, conn, req)
                    req = None
                    if conn.our_state is h11.MUST_CLOSE:
                        return
                    conn.start_next_cycle()
                elif isinstance(event, h11.ConnectionClosed):
                    self._log(Event(cid, "eof"))
                    return
                elif event is h11.PAUSED:
                    self._log(Event(cid, "protocol-error", request=req,
                                    detail=f"h11 paused (upgrade/CONNECT forwarded?) in {conn.states}"))
                    return
        except OSError as e:
            self._log(Event(cid, "aborted", request=req, detail=repr(e)))
        finally:
            try:
                sock.close()
            except OSError:
                pass

    @staticmethod
    def _respond(sock: socket.socket, conn: h11.Connection, req: Request) -> None:
        head = req.method == b"HEAD"
        out = conn.send(h11.Response(status_code=200, headers=[("content-type", "text/plain"),
                                                               ("content-length", str(len(BODY)))]))
        if not head:
            out += conn.send(h11.Data(data=BODY))
        out += conn.send(h11.EndOfMessage())
        try:
            sock.sendall(out)
        except OSError:
            pass

    def close(self) -> None:
        self._closing = True
        try:
            self._sock.close()
        except OSError:
            pass
        with self.lock:
            conns = list(self._conns)
        for s in conns:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


@contextlib.contextmanager
def proxy_before_recorder(tmp):
    """The real proxy (one worker) in front of a RecordingUpstream, for the live corpus tests:
    yields (proxy, upstream, worker pids, offset of the proxy's log after start-up)."""
    from tests.harness import Proxy, simple_config
    upstream = RecordingUpstream()
    p = Proxy(simple_config([upstream.port]), tmp, workers=1)
    try:
        pids = {w.pid for w in p.workers()}
        assert len(pids) == 1, pids
        yield p, upstream, pids, len(p.log_path.read_bytes())
    finally:
        if p.proc.poll() is None:
            p.stop()
        upstream.close()

