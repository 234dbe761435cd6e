"""HTTP/2 peers for the tests, built on the h2 package: a blocking client that multiplexes
streams on one connection, and a small HTTP/2 upstream server (cleartext, prior knowledge)."""
from __future__ import annotations

import asyncio
import json
import socket
import ssl
import threading
import time

import h2.config
import h2.connection
import h2.events
import h2.settings


class Response:
    def __init__(self):
        self.headers: list = []
        self.body = bytearray()
        self.trailers: list = []
        self.ended = False
        self.reset: int | None = None

    @property
    def status(self) -> int:
        return int(dict(self.headers)[b":status"])

    def header(self, name: bytes):
        return dict(self.headers).get(name)


class H2Client:
    """One HTTP/2 connection (h2c with prior knowledge, or TLS with ALPN h2)."""

    def __init__(self, port: int, tls: bool = False, timeout: float = 10.0, window: int | None = None):
        sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        if tls:
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            ctx.set_alpn_protocols(["h2"])
            sock = ctx.wrap_socket(sock, server_hostname="localhost")
            assert sock.selected_alpn_protocol() == "h2"
        self.sock = sock
        self.port = port
        self.timeout = timeout
        self.conn = h2.connection.H2Connection(
            config=h2.config.H2Configuration(client_side=True, header_encoding=None))
        if window is not None:
            self.conn.local_settings = h2.settings.Settings(
                client=True, initial_values={h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: window})
        self.conn.initiate_connection()
        self.auto_ack = True
        self.responses: dict[int, Response] = {}
        self.goaway = None
        self.closed = False
        self._send()

    def _send(self):
        data = self.conn.data_to_send()
        if data:
            self.sock.sendall(data)

    def request(self, method="GET", path="/", headers=(), body: bytes | None = None,
                end: bool = True, authority: str | None = None) -> int:
        sid = self.conn.get_next_available_stream_id()
        hs = [(b":method", method.encode()), (b":scheme", b"http"),
              (b":authority", (authority or f"127.0.0.1:{self.port}").encode()), (b":path", path.encode())]
        hs += [(k.encode() if isinstance(k, str) else k, v.encode() if isinstance(v, str) else v)
               for k, v in headers]
        self.responses[sid] = Response()
        self.conn.send_headers(sid, hs, end_stream=end and not body)
        if body:
            self.send_body(sid, body, end=end)
        self._send()
        return sid

    def send_body(self, sid: int, body: bytes, end: bool = True):
        """DATA as the windows allow, reading (and acknowledging) meanwhile."""
        sent = 0
        while sent < len(body):
            window = min(self.conn.local_flow_control_window(sid), self.conn.max_outbound_frame_size)
            if window <= 0:
                self.pump(0.05)
                continue
            chunk = body[sent:sent + window]
            self.conn.send_data(sid, chunk)
            sent += len(chunk)
            self._send()
        if end:
            self.conn.end_stream(sid)
            self._send()

    def end(self, sid: int, trailers=None):
        if trailers:
            self.conn.send_headers(sid, trailers, end_stream=True)
        else:
            self.conn.end_stream(sid)
        self._send()

    def reset(self, sid: int):
        self.conn.reset_stream(sid)
        self._send()

    def pump(self, timeout: float) -> bool:
        """Read for up to `timeout` s; False once the connection is closed."""
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(65536)
        except (socket.timeout, TimeoutError, ssl.SSLWantReadError):
            return True
        except ConnectionError:
            self.closed = True
            return False
        if not data:
            self.closed = True
            return False
        for ev in self.conn.receive_data(data):
            r = self.responses.get(getattr(ev, "stream_id", 0))
            if isinstance(ev, h2.events.ResponseReceived):
                r.headers = ev.headers
            elif isinstance(ev, h2.events.DataReceived):
                r.body += ev.data
                if self.auto_ack:
                    self.conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
            elif isinstance(ev, h2.events.TrailersReceived):
                r.trailers = ev.headers
            elif isinstance(ev, h2.events.StreamEnded):
                r.ended = True
            elif isinstance(ev, h2.events.StreamReset):
                if r is not None:
                    r.reset = ev.error_code
            elif isinstance(ev, h2.events.ConnectionTerminated):
                self.goaway = ev
        self._send()
        return True

    def wait(self, *sids, timeout: float | None = None) -> list[Response]:
        deadline = time.monotonic() + (timeout or self.timeout)
        while time.monotonic() < deadline:
            if all(self.responses[s].ended or self.responses[s].reset is not None for s in sids):
                break
            if not self.pump(0.05):
                break
        return [self.responses[s] for s in sids]

    def get(self, path="/", **kw) -> Response:
        return self.wait(self.request("GET", path, **kw))[0]

    def close(self):
        try:
            self.conn.close_connection()
            self._send()
        except Exception:
            pass
        self.sock.close()


class H2Upstream:
    """An HTTP/2 server in a thread: /echo answers with the request's header list and body
    size as JSON; /trailers sends a body then trailers; anything else gets 200 "h2 ok"."""

    def __init__(self):
        self.requests: list[dict] = []
        self.connections = 0
        self.loop = asyncio.new_event_loop()
        ready = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(ready,), daemon=True)
        self.thread.start()
        ready.wait(5)

    def _run(self, ready):
        asyncio.set_event_loop(self.loop)

        async def start():
            self.server = await self.loop.create_server(lambda: _H2ServerConn(self), "127.0.0.1", 0)
            self.port = self.server.sockets[0].getsockname()[1]
            ready.set()
        self.loop.run_until_complete(start())
        self.loop.run_forever()

    def close(self):
        def stop():
            self.server.close()
            self.loop.stop()
        self.loop.call_soon_threadsafe(stop)
        self.thread.join(5)


class _H2ServerConn(asyncio.Protocol):
    def __init__(self, server: H2Upstream):
        self.server = server
        self.conn = h2.connection.H2Connection(
            config=h2.config.H2Configuration(client_side=False, header_encoding=None))
        self.reqs: dict[int, dict] = {}

    def connection_made(self, transport):
        self.server.connections += 1
        self.t = transport
        self.conn.initiate_connection()
        self.t.write(self.conn.data_to_send())

    def data_received(self, data):
        for ev in self.conn.receive_data(data):
            if isinstance(ev, h2.events.RequestReceived):
                self.reqs[ev.stream_id] = {"headers": [[k.decode(), v.decode()] for k, v in ev.headers],
                                           "body": b""}
            elif isinstance(ev, h2.events.DataReceived):
                self.reqs[ev.stream_id]["body"] += ev.data
                self.conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
            elif isinstance(ev, h2.events.StreamEnded):
                self._respond(ev.stream_id)
        self.t.write(self.conn.data_to_send())

    def _respond(self, sid):
        req = self.reqs.pop(sid)
        self.server.requests.append(req)
        path = dict(req["headers"])[":path"]
        if path.startswith("/echo"):
            body = json.dumps({"headers": req["headers"], "body_len": len(req["body"])}).encode()
            self.conn.send_headers(sid, [(b":status", b"200"), (b"content-type", b"application/json")])
            self.conn.send_data(sid, body, end_stream=True)
        elif path.startswith("/trailers"):
            self.conn.send_headers(sid, [(b":status", b"200")])
            self.conn.send_data(sid, b"hello")
            self.conn.send_headers(sid, [(b"x-checksum", b"abc123")], end_stream=True)
        else:
            self.conn.send_headers(sid, [(b":status", b"200"), (b"content-length", b"5")])
            self.conn.send_data(sid, b"h2 ok", end_stream=True)
