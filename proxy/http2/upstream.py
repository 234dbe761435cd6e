"""HTTP/2 to upstream hosts: a multiplexed connection pool (Envoy's HTTP/2 conn pool).

A cluster whose typed_extension_protocol_options ask for HTTP/2 gives each `Upstream` (the
HTTP/1.1 exchange state machine of proxy/_fastpath/connection.pyx) a `_StreamSlot` as its
transport: a place on a shared `H2Client` connection. The request the Upstream writes (HTTP/1.1
bytes) goes out as one stream; the stream's response comes back to the Upstream as HTTP/1.1 bytes,
chunked when the upstream gave no length, with its trailers (gRPC's grpc-status) in the last
chunk. An idle Upstream keeps its slot and starts a new stream for its next request.

A connection carries at most min(our max_concurrent_streams, the host's SETTINGS) streams; the
pool opens another one beyond that. Requests past the host's limit before its SETTINGS arrived
wait on the connection for a stream to end.
"""
from __future__ import annotations

import asyncio
import collections
import logging

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
from h2.errors import ErrorCodes

from proxy._fastpath.http1 import ChunkedDecoder, HttpError, encode_chunk, last_chunk
from proxy.http2 import CONNECTION_SPECIFIC, Http2Options, trailer_list

log = logging.getLogger("cyvoy.http2")

_HIGH = 64 * 1024        # request bytes queued on a stream before the client is paused
_MAX_RESPONSE_HEADERS = 60 * 1024

# _StreamSlot.state
_IDLE, _LENGTH, _CHUNKED, _SENT = range(4)


class H2Pool:
    """One worker's HTTP/2 connections to the hosts of one cluster."""

    def __init__(self, cluster, opts: Http2Options, ssl_ctx, sni):
        self.cluster = cluster
        self.opts = opts
        self.ssl = ssl_ctx
        self.sni = sni
        self.scheme = b"https" if ssl_ctx is not None else b"http"
        self.conns: dict[tuple, list[H2Client]] = {}
        self.opening: dict[tuple, asyncio.Future] = {}

    async def connect(self, factory, host):
        """(transport, protocol) for a new Upstream: a stream slot on a connection to `host`."""
        key = (host.address, host.port)
        while True:
            for c in self.conns.get(key, ()):
                if c.usable() and len(c.slots) < c.capacity():
                    return c.attach(factory())
            pending = self.opening.get(key)
            if pending is not None:
                await asyncio.shield(pending)      # share a connection being opened
                continue
            break
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        self.opening[key] = fut
        try:
            _, c = await loop.create_connection(lambda: H2Client(self, key), host.address,
                                                host.port, ssl=self.ssl,
                                                server_hostname=self.sni if self.ssl else None)
        finally:
            del self.opening[key]
            if not fut.done():
                fut.set_result(None)
        self.conns.setdefault(key, []).append(c)
        return c.attach(factory())

    def forget(self, c: "H2Client") -> None:
        conns = self.conns.get(c.key)
        if conns and c in conns:
            conns.remove(c)


class H2Client(asyncio.Protocol):
    """One HTTP/2 connection to an upstream host, shared by the Upstreams in its slots."""

    def __init__(self, pool: H2Pool, key: tuple):
        self.pool = pool
        self.key = key
        self.transport = None
        self.slots: set[_StreamSlot] = set()
        self.streams: dict[int, _StreamSlot] = {}
        self.waiting: collections.deque = collections.deque()   # slots waiting for a stream
        self.closed = False
        self.goaway = False
        cfg = h2.config.H2Configuration(client_side=True, header_encoding=None,
                                        validate_outbound_headers=False,
                                        normalize_outbound_headers=False)
        self.h2 = h2.connection.H2Connection(config=cfg)

    def capacity(self) -> int:
        return min(self.pool.opts.max_concurrent_streams,
                   self.h2.remote_settings.max_concurrent_streams)

    def usable(self) -> bool:
        return not self.closed and not self.goaway

    def attach(self, up):
        slot = _StreamSlot(self, up)
        self.slots.add(slot)
        up.multiplexed = True
        up.connection_made(slot)
        return slot, up

    # ---- asyncio.Protocol ----------------------------------------------------------------------
    def connection_made(self, transport) -> None:
        self.transport = transport
        opts = self.pool.opts
        self.h2.local_settings = h2.settings.Settings(
            client=True, initial_values=_client_settings(opts))
        self.h2.initiate_connection()
        if opts.initial_connection_window_size > 65535:
            self.h2.increment_flow_control_window(opts.initial_connection_window_size - 65535)
        self.flush()
        self.pool.cluster.stats.connection_opened()

    def connection_lost(self, exc) -> None:
        self.closed = True
        self.pool.forget(self)
        self.pool.cluster.stats.connection_closed()
        for slot in list(self.slots):
            slot.lost()
        self.slots.clear()
        self.streams.clear()

    def pause_writing(self) -> None:
        for slot in list(self.streams.values()):
            slot.up.pause_writing()

    def resume_writing(self) -> None:
        for slot in list(self.streams.values()):
            slot.up.resume_writing()

    def data_received(self, data: bytes) -> None:
        try:
            events = self.h2.receive_data(data)
        except h2.exceptions.ProtocolError as e:
            log.debug("HTTP/2 upstream %s:%s protocol error: %s", *self.key, e)
            try:
                self.h2.close_connection(error_code=getattr(e, "error_code", None)
                                         or ErrorCodes.PROTOCOL_ERROR)
            except h2.exceptions.ProtocolError:
                pass
            self.flush()
            self.close()
            return
        for ev in events:
            t = type(ev)
            slot = self.streams.get(getattr(ev, "stream_id", 0) or 0)
            if t is h2.events.DataReceived:
                if slot is None:
                    self.h2.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                else:
                    slot.response_data(ev.data, ev.flow_controlled_length)
            elif t is h2.events.ResponseReceived:
                if slot is not None:
                    slot.response_head(ev.headers, ev.stream_ended is not None)
            elif t is h2.events.TrailersReceived:
                if slot is not None:
                    slot.response_trailers(ev.headers)
            elif t is h2.events.StreamEnded:
                if slot is not None:
                    slot.response_end()
            elif t is h2.events.StreamReset:
                if slot is not None:
                    slot.reset(ev.error_code)
            elif t is h2.events.WindowUpdated:
                targets = list(self.streams.values()) if ev.stream_id == 0 else [slot] if slot else []
                for s in targets:
                    s.send_pending()
            elif t is h2.events.RemoteSettingsChanged:
                for s in list(self.streams.values()):
                    s.send_pending()
                self.start_waiting()
            elif t is h2.events.ConnectionTerminated:
                self.on_goaway(ev.last_stream_id)
        self.flush()

    # ---- streams -------------------------------------------------------------------------------
    def can_open(self) -> bool:
        return self.h2.open_outbound_streams < self.h2.remote_settings.max_concurrent_streams

    def start_waiting(self) -> None:
        while self.waiting and self.can_open() and not self.closed:
            self.waiting.popleft().start()

    def stream_done(self, slot) -> None:
        self.streams.pop(slot.sid, None)
        self.start_waiting()
        if self.goaway and not self.streams:
            self.close()

    def on_goaway(self, last_stream_id) -> None:
        """The host will take no new stream: those it never saw fail as resets (retriable, as
        Envoy's refused streams), the others finish; idle slots go."""
        self.goaway = True
        self.pool.forget(self)
        for sid, slot in list(self.streams.items()):
            if last_stream_id is not None and sid > last_stream_id:
                slot.reset(ErrorCodes.REFUSED_STREAM)
        for slot in list(self.slots):
            if slot.sid is None:
                slot.lost()
        if not self.streams:
            self.close()

    def drop(self, slot) -> None:
        self.slots.discard(slot)
        if slot.sid is not None:
            self.streams.pop(slot.sid, None)
        try:
            self.waiting.remove(slot)
        except ValueError:
            pass
        if not self.slots and not self.closed:
            # no Upstream uses this connection any more (idle sweep or errors): close it
            self.close()

    def flush(self) -> None:
        data = self.h2.data_to_send()
        if data and not self.closed:
            self.transport.write(data)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.pool.forget(self)
            if self.transport is not None:
                self.transport.close()


class _StreamSlot:
    """The transport of one Upstream: HTTP/1.1 request bytes in, one HTTP/2 stream per request."""
    __slots__ = ("c", "up", "sid", "state", "buf", "left", "dec", "headers", "end_on_head", "out",
                 "out_end", "closed", "read_paused", "owed", "chunked_out", "is_head", "paused_up",
                 "resp_done")

    def __init__(self, c: H2Client, up):
        self.c = c
        self.up = up
        self.sid = None
        self.state = _IDLE
        self.buf = b""
        self.left = 0
        self.dec = None
        self.headers = None
        self.end_on_head = False
        self.out = bytearray()
        self.out_end = None
        self.closed = False
        self.read_paused = False
        self.owed = 0
        self.chunked_out = False
        self.is_head = False
        self.paused_up = False
        self.resp_done = False

    # ---- the transport interface the Upstream uses ---------------------------------------------
    def get_extra_info(self, name, default=None):
        if name == "socket":
            return None
        return self.c.transport.get_extra_info(name, default) if self.c.transport else default

    def is_closing(self) -> bool:
        return self.closed

    def pause_reading(self) -> None:
        self.read_paused = True

    def resume_reading(self) -> None:
        if self.read_paused:
            self.read_paused = False
            if self.owed and self.sid is not None:
                try:
                    self.c.h2.acknowledge_received_data(self.owed, self.sid)
                except h2.exceptions.ProtocolError:
                    pass
                self.c.flush()
            self.owed = 0

    def close(self) -> None:
        self.abort()

    def abort(self) -> None:
        if self.closed:
            return
        self.closed = True
        c = self.c
        if self.sid is not None and not c.closed:
            try:
                c.h2.reset_stream(self.sid, ErrorCodes.CANCEL)
            except h2.exceptions.ProtocolError:
                pass
            c.flush()
        c.drop(self)
        self.sid = None
        self.up.worker.loop.call_soon(self.up.connection_lost, None)

    def lost(self) -> None:
        """The connection (or the host's GOAWAY) took this slot away."""
        if not self.closed:
            self.closed = True
            self.c.drop(self)
            self.up.connection_lost(None)

    def write(self, data: bytes) -> None:
        if self.closed:
            return
        state = self.state
        if state == _IDLE:
            data = self._head(data)
            if not data:
                return
            state = self.state
        if state == _LENGTH:
            left = self.left
            if len(data) >= left:
                self._data(data[:left] if len(data) > left else data)
                self.state = _SENT
                self._finish(None)
            else:
                self.left = left - len(data)
                self._data(data)
        elif state == _CHUNKED:
            try:
                payload = self.dec.feed(data)
            except HttpError:
                self.abort()
                return
            if payload:
                self._data(payload)
            if self.dec.done:
                self.state = _SENT
                self._finish(trailer_list(self.dec.trailers) or None)

    def _head(self, data: bytes) -> bytes:
        """The request head the Upstream wrote (forward.pyx's, well-formed) to HTTP/2 headers;
        the stream starts when the connection has room. Returns the body bytes that came with it."""
        buf = self.buf + data if self.buf else data
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            self.buf = buf
            return b""
        self.buf = b""
        lines = buf[:end].split(b"\r\n")
        method, _, rest = lines[0].partition(b" ")
        path = rest.rpartition(b" ")[0]
        authority = b""
        headers = []
        length = 0
        chunked = False
        grpc = False
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            value = value.strip()
            if name == b"host":
                authority = value
                continue
            if name == b"transfer-encoding":
                chunked = True
                continue
            if name in CONNECTION_SPECIFIC or name == b"te":
                continue
            if name == b"content-length":
                length = int(value)
            elif name == b"content-type" and value.startswith(b"application/grpc"):
                grpc = True
            headers.append((name, value))
        if grpc:
            headers.append((b"te", b"trailers"))    # gRPC servers require it (PROTOCOL-HTTP2.md)
        self.headers = [(b":method", method), (b":scheme", self.c.pool.scheme),
                        (b":authority", authority), (b":path", path)] + headers
        self.is_head = method == b"HEAD"
        self.resp_done = False
        if chunked:
            self.state = _CHUNKED
            self.dec = ChunkedDecoder()
            self.end_on_head = False
        elif length > 0:
            self.state = _LENGTH
            self.left = length
            self.end_on_head = False
        else:
            self.state = _SENT
            self.end_on_head = True
        self.out_end = None
        c = self.c
        if c.can_open():
            self.start()
        else:
            c.waiting.append(self)
        return buf[end + 4:]

    def start(self) -> None:
        c = self.c
        self.sid = c.h2.get_next_available_stream_id()
        c.streams[self.sid] = self
        c.h2.send_headers(self.sid, self.headers, end_stream=self.end_on_head)
        self.headers = None
        self.send_pending()

    def _data(self, data: bytes) -> None:
        if data:
            self.out += data
            if self.sid is not None:
                self.send_pending()

    def _finish(self, trailers) -> None:
        self.out_end = trailers if trailers else True
        if self.sid is not None:
            self.send_pending()

    def send_pending(self) -> None:
        c = self.c
        sid = self.sid
        if sid is None or self.closed:
            return
        out = self.out
        conn = c.h2
        try:
            if out:
                window = conn.local_flow_control_window(sid)
                frame = conn.max_outbound_frame_size
                sent = 0
                while sent < len(out) and window > 0:
                    n = min(window, frame, len(out) - sent)
                    conn.send_data(sid, bytes(out[sent:sent + n]))
                    sent += n
                    window -= n
                if sent:
                    del out[:sent]
                if len(out) > _HIGH and not self.paused_up:
                    self.paused_up = True
                    self.up.pause_writing()
                elif not out and self.paused_up:
                    self.paused_up = False
                    self.up.resume_writing()
            if not out and self.out_end is not None:
                if self.out_end is True:
                    conn.end_stream(sid)
                else:
                    conn.send_headers(sid, self.out_end, end_stream=True)
                self.out_end = None
        except h2.exceptions.StreamClosedError:
            # the host ended the stream (answered early, or reset it): the rest is not wanted
            self.out = bytearray()
            self.out_end = None
        c.flush()

    # ---- the response (from H2Client) ----------------------------------------------------------
    def response_head(self, headers, ended: bool) -> None:
        status = b"502"
        lines = []
        length = None
        for name, value in headers:
            if name == b":status":
                status = value
            elif name[:1] == b":" or name in CONNECTION_SPECIFIC:
                continue
            else:
                if name == b"content-length":
                    length = value
                lines.append(b"%s: %s\r\n" % (name, value))
        code = int(status)
        if ended or self.is_head or code in (204, 304):
            if length is None and code not in (204, 304):
                lines.append(b"content-length: 0\r\n")
            self.chunked_out = False
            self.resp_done = True
        elif length is not None:
            self.chunked_out = False
        else:
            self.chunked_out = True
            lines.append(b"transfer-encoding: chunked\r\n")
        self.up.data_received(b"HTTP/1.1 %s -\r\n%s\r\n" % (status, b"".join(lines)))

    def response_data(self, data: bytes, flow_len: int) -> None:
        if self.read_paused:
            self.owed += flow_len
        elif flow_len:
            self.c.h2.acknowledge_received_data(flow_len, self.sid)
        if data and not self.resp_done:
            self.up.data_received(encode_chunk(data) if self.chunked_out else data)

    def response_trailers(self, headers) -> None:
        lines = [b"%s: %s\r\n" % (n, v) for n, v in headers if n[:1] != b":"]
        if self.chunked_out and not self.resp_done:
            self.resp_done = True
            self.up.data_received(last_chunk(b"".join(lines)))

    def response_end(self) -> None:
        c = self.c
        if self.state != _SENT or self.out or self.out_end is not None:
            # answered before the whole request went: the rest is not wanted (RFC 9113 8.1)
            try:
                c.h2.reset_stream(self.sid, ErrorCodes.NO_ERROR)
            except h2.exceptions.ProtocolError:
                pass
            self.out = bytearray()
            self.out_end = None
        if self.chunked_out and not self.resp_done:
            self.up.data_received(b"0\r\n\r\n")
        self.resp_done = True
        c.stream_done(self)
        self.sid = None
        self.state = _IDLE
        self.owed = 0

    def reset(self, code) -> None:
        """The host reset the stream (or never took it): the Upstream sees its connection end."""
        self.lost()


def _client_settings(opts: Http2Options) -> dict:
    """Our SETTINGS to an upstream host (h2 setting codes): no server push."""
    from h2.settings import SettingCodes
    return {SettingCodes.HEADER_TABLE_SIZE: opts.hpack_table_size,
            SettingCodes.INITIAL_WINDOW_SIZE: opts.initial_stream_window_size,
            SettingCodes.MAX_HEADER_LIST_SIZE: _MAX_RESPONSE_HEADERS,
            SettingCodes.ENABLE_PUSH: 0}
