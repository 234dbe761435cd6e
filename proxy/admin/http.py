"""A small HTTP/1.1 server for the admin interface: h11 for the protocol, an asyncio Protocol per
connection. Not the hot path: every request is read whole (bodies are capped), answered with a
Content-Length response, keep-alive and pipelining as h11 allows.

Limits: request head MAX_HEAD bytes, body MAX_BODY bytes (413), MAX_CONNECTIONS at once (the
next ones are closed at accept), a connection idle IDLE_TIMEOUT_S seconds is closed.
"""
from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Callable, Optional
from urllib.parse import parse_qsl, unquote

import h11

log = logging.getLogger("cyvoy.admin")

MAX_HEAD = 32 * 1024
MAX_BODY = 64 * 1024
MAX_DISCARD = 1024 * 1024
MAX_CONNECTIONS = 128
IDLE_TIMEOUT_S = 60.0

TEXT = "text/plain; charset=UTF-8"
JSON = "application/json"


@dataclass
class Request:
    method: str
    target: str
    path: str
    query: dict            # name -> value (the first one; "" for a bare `?usedonly`)
    query_list: list       # [(name, value)] in order
    headers: list          # [(name lower-case, value)] as str
    body: bytes = b""

    def header(self, name: str) -> Optional[str]:
        name = name.lower()
        for k, v in self.headers:
            if k == name:
                return v
        return None


@dataclass
class Response:
    status: int
    body: bytes = b""
    content_type: str = TEXT
    headers: list = field(default_factory=list)
    after: Optional[Callable[[], None]] = None     # run once the response is handed to the socket

    @staticmethod
    def text(body: str, status: int = 200) -> "Response":
        return Response(status, body.encode("utf-8"), TEXT)

    @staticmethod
    def json(body: bytes, status: int = 200) -> "Response":
        return Response(status, body, JSON)


def parse_target(target: str) -> tuple[str, dict, list]:
    path, _, qs = target.partition("?")
    path = unquote(path) or "/"
    pairs = parse_qsl(qs, keep_blank_values=True) if qs else []
    query: dict = {}
    for k, v in pairs:
        query.setdefault(k, v)
    return path, query, pairs


class Server:
    """Serves `handler(Request) -> Response` on a listening socket."""

    def __init__(self, handler: Callable[[Request], Response],
                 on_connection: Optional[Callable[[bool, float], None]] = None):
        self.handler = handler
        # on_connection(True, 0) when one opens, (False, lifetime ms) when it closes
        self.on_connection = on_connection
        self.conns: set[_Conn] = set()
        self.server: Optional[asyncio.AbstractServer] = None
        self.loop: Optional[asyncio.AbstractEventLoop] = None

    async def start(self, sock) -> None:
        self.loop = asyncio.get_running_loop()
        self.server = await self.loop.create_server(lambda: _Conn(self), sock=sock, backlog=128)

    async def close(self, grace_s: float = 1.0) -> None:
        """Stop accepting; idle connections close now, busy ones once their response is out."""
        if self.server is not None:
            self.server.close()
        for c in list(self.conns):
            c.close_when_idle()
        deadline = self.loop.time() + grace_s
        while self.conns and self.loop.time() < deadline:
            await asyncio.sleep(0.02)
        for c in list(self.conns):
            c.abort()


class _Conn(asyncio.Protocol):
    def __init__(self, server: Server):
        self.server = server
        self.transport: Optional[asyncio.Transport] = None
        self.h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD)
        self.request: Optional[h11.Request] = None
        self.body = bytearray()
        self.too_big = False
        self.closing = False
        self.idle_handle = None
        self.opened = 0.0
        self.discarding: Optional[int] = None    # bytes dropped after a 413

    # ---- asyncio -----------------------------------------------------------------------------
    def connection_made(self, transport) -> None:
        self.transport = transport
        if len(self.server.conns) >= MAX_CONNECTIONS:
            log.warning("admin: %d connections open; refusing one more", len(self.server.conns))
            transport.abort()
            return
        self.server.conns.add(self)
        self.opened = self.server.loop.time()
        self._notify(True, 0.0)
        self._arm_idle()

    def connection_lost(self, exc) -> None:
        if self in self.server.conns:
            self.server.conns.discard(self)
            self._notify(False, (self.server.loop.time() - self.opened) * 1000.0)
        if self.idle_handle is not None:
            self.idle_handle.cancel()
            self.idle_handle = None
        self.transport = None

    def data_received(self, data: bytes) -> None:
        self._arm_idle()
        if self.discarding is not None:
            self.discarding += len(data)
            if self.discarding > MAX_DISCARD:
                self.abort()
            return
        try:
            self.h11.receive_data(data)
        except h11.RemoteProtocolError as e:   # pragma: no cover - h11 raises from next_event
            self._bad_request(e)
            return
        self._process()

    def eof_received(self):
        if self.discarding is not None:
            self._close()
            return False
        try:
            self.h11.receive_data(b"")
        except h11.RemoteProtocolError:
            pass
        self._process()
        return False    # close our side once done

    # a client that sends requests faster than it reads the answers is not read meanwhile
    def pause_writing(self) -> None:
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.transport is not None:
            self.transport.resume_reading()

    def _notify(self, opened: bool, ms: float) -> None:
        if self.server.on_connection is not None:
            try:
                self.server.on_connection(opened, ms)
            except Exception:
                log.exception("admin: connection hook failed")

    # ---- h11 ----------------------------------------------------------------------------------
    def _process(self) -> None:
        while self.transport is not None:
            try:
                event = self.h11.next_event()
            except h11.RemoteProtocolError as e:
                self._bad_request(e)
                return
            if event is h11.NEED_DATA or event is h11.PAUSED:
                return
            if isinstance(event, h11.Request):
                self.request = event
                self.body = bytearray()
                self.too_big = False
                if self.h11.client_is_waiting_for_100_continue:
                    self.transport.write(self.h11.send(h11.InformationalResponse(status_code=100, headers=[])))
            elif isinstance(event, h11.Data):
                if len(self.body) + len(event.data) > MAX_BODY:
                    # answer 413 now and stop reading: what else comes is dropped (up to
                    # MAX_DISCARD, then the connection is cut) until the client closes; closing
                    # at once could reset the connection before the client reads the answer
                    self.too_big = True
                    self.closing = True
                    self._respond()
                    self.discarding = 0
                    if self.transport is not None and self.transport.can_write_eof():
                        self.transport.write_eof()
                    return
                self.body += event.data
            elif isinstance(event, h11.EndOfMessage):
                self._respond()
                if self.transport is None:
                    return
                if self.h11.our_state is h11.MUST_CLOSE or self.closing:
                    self._close()
                    return
                try:
                    self.h11.start_next_cycle()
                except h11.LocalProtocolError:
                    self._close()
                    return
            elif isinstance(event, h11.ConnectionClosed):
                self._close()
                return

    def _respond(self) -> None:
        ev = self.request
        method = ev.method.decode("ascii", "replace")
        target = ev.target.decode("latin-1")
        if self.too_big:
            resp = Response.text(f"request body over {MAX_BODY} bytes\n", 413)
        else:
            path, query, pairs = parse_target(target)
            headers = [(k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in ev.headers]
            req = Request(method, target, path, query, pairs, headers, bytes(self.body))
            try:
                resp = self.server.handler(req)
            except Exception:
                log.exception("admin: %s %s failed", method, target)
                resp = Response.text("internal error in the admin handler (see the log)\n", 500)
        self._send(resp, head_only=(method == "HEAD"))
        if resp.after is not None:
            try:
                resp.after()
            except Exception:
                log.exception("admin: after-response action failed")

    def _send(self, resp: Response, head_only: bool = False) -> None:
        headers = [
            ("content-type", resp.content_type),
            ("content-length", str(len(resp.body))),
            # Envoy's admin defaults: no caching, no content sniffing
            ("cache-control", "no-cache, max-age=0"),
            ("x-content-type-options", "nosniff"),
            ("server", "cyvoy-admin"),
        ]
        headers.extend(resp.headers)
        if self.closing:
            headers.append(("connection", "close"))
        try:
            out = self.h11.send(h11.Response(status_code=resp.status, headers=headers))
            if not head_only and resp.body:
                out += self.h11.send(h11.Data(data=resp.body))
            out += self.h11.send(h11.EndOfMessage())
        except h11.LocalProtocolError as e:
            log.warning("admin: cannot send response: %s", e)
            self._close()
            return
        if self.transport is not None:
            self.transport.write(out)

    def _bad_request(self, err) -> None:
        if self.h11.our_state in (h11.IDLE, h11.SEND_RESPONSE):
            status = getattr(err, "error_status_hint", 400) or 400
            try:
                out = self.h11.send(h11.Response(status_code=status, headers=[
                    ("content-type", TEXT), ("connection", "close"),
                    ("content-length", str(len(b"bad request\n")))]))
                out += self.h11.send(h11.Data(data=b"bad request\n")) + self.h11.send(h11.EndOfMessage())
                if self.transport is not None:
                    self.transport.write(out)
            except h11.LocalProtocolError:
                pass
        self._close()

    # ---- closing ------------------------------------------------------------------------------
    def _arm_idle(self) -> None:
        if self.idle_handle is not None:
            self.idle_handle.cancel()
        loop = self.server.loop
        self.idle_handle = loop.call_later(IDLE_TIMEOUT_S, self._close) if loop else None

    def close_when_idle(self) -> None:
        """Close now if between requests (nothing of a next one received), else once the
        response to the request in progress is out (it says Connection: close)."""
        self.closing = True
        idle = (h11.IDLE, h11.DONE, h11.MUST_CLOSE, h11.CLOSED)
        if self.h11.their_state in idle and self.h11.our_state in idle \
                and not self.h11.trailing_data[0]:
            self._close()

    def _close(self) -> None:
        if self.transport is not None:
            self.transport.close()     # flushes what is buffered first

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()
