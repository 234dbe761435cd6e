"""HTTP/2 from clients: h2 over TLS (ALPN "h2") and cleartext h2c with prior knowledge.

`H2Downstream` owns one client connection and its h2 state. Each stream gets a `Downstream`
(the HTTP connection manager of proxy/_fastpath/connection.pyx) whose transport is a `_Stream`:
the stream's request is handed to it as HTTP/1.1 bytes, and the HTTP/1.1 response it writes is
turned into HEADERS, DATA and trailers on the stream. Request bodies are acknowledged to the
client (WINDOW_UPDATE) only while the stream's Downstream is not paused, so a slow upstream
slows its own stream and not the others; a response stream whose window is used up pauses its
upstream (Downstream.pause_writing).

Hostile peers (RFC 9113 10.5): the h2 package refuses malformed frames, oversized frames,
CONTINUATION floods (64 frames) and header lists over our SETTINGS_MAX_HEADER_LIST_SIZE (HPACK
bombs); on top of it, Envoy's flood limits from Http2ProtocolOptions: queued control frames
(SETTINGS and PING acknowledgements the peer does not read), consecutive empty DATA frames and
PRIORITY frames per stream. A protocol error ends the connection with GOAWAY; a malformed request
only resets its own stream.
"""
from __future__ import annotations

import asyncio
import logging
import re

from proxy._fastpath import h2codec as codec
from proxy._fastpath.h2codec import (
    EV_DATA, EV_END, EV_GOAWAY, EV_PING, EV_PRIORITY, EV_REQUEST, EV_RESET, EV_SETTINGS,
    EV_STREAM_ERROR, EV_TRAILERS, EV_WINDOW, ENHANCE_YOUR_CALM, INTERNAL_ERROR, NO_ERROR,
    PROTOCOL_ERROR, REFUSED_STREAM, StreamClosedError)
from proxy._fastpath.connection import Downstream
from proxy._fastpath.http1 import ChunkedDecoder, HttpError, encode_chunk, last_chunk
from proxy.http2 import CONNECTION_SPECIFIC, Http2Options, PREFACE_LINE, trailer_list

log = logging.getLogger("cyvoy.http2")

_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9a-z]+\Z")      # a lowercase field name
_BAD_VALUE = re.compile(rb"[\x00\r\n]")                     # RFC 9113 8.2.1
_PATH = re.compile(rb"[\x21-\x7e]+\Z")
_STREAM_HIGH = 64 * 1024      # response bytes queued on one stream before its upstream is paused
_WRITE_LIMIT = 8 * 1024 * 1024  # bytes queued to a client that does not read: the connection goes

# _Stream.state
_HEAD, _LENGTH, _CHUNKED, _DONE = range(4)


class Http2Server:
    """What a listener needs to speak HTTP/2: its options and when to switch to it."""

    def __init__(self, codec_type: str, opts: Http2Options, tls_h2: bool, max_head: int):
        self.opts = opts
        self.prior_knowledge = codec_type == "HTTP2"     # every connection is HTTP/2
        self.preface = codec_type == "AUTO"              # HTTP/2 when the client sends the preface
        self.tls_h2 = tls_h2                             # ALPN may choose "h2"
        self.max_head = max_head

    def at_accept(self, ds) -> bool:
        """Called by Downstream.connection_made: True if the connection was handed to HTTP/2."""
        if self.tls_h2:
            ssl_object = ds.transport.get_extra_info("ssl_object")
            if ssl_object is not None and ssl_object.selected_alpn_protocol() == "h2":
                H2Downstream.take_over(ds, self, b"")
                return True
        if self.prior_knowledge:
            H2Downstream.take_over(ds, self, b"")
            return True
        return False

    def on_bad_head(self, ds, buf: bytes) -> bool:
        """Called when a request head fails to parse: the HTTP/2 preface switches protocols."""
        if self.preface and buf.startswith(PREFACE_LINE):
            H2Downstream.take_over(ds, self, buf)
            return True
        return False


class H2Downstream(asyncio.Protocol):
    """One HTTP/2 client connection. Seen by the worker like a Downstream (w.conns): in_req,
    last_io, hcm, draining, close_if_idle()."""

    @classmethod
    def take_over(cls, ds, server: Http2Server, data: bytes) -> "H2Downstream":
        h = cls(ds, server)
        w = ds.w
        w.conns.discard(ds)
        w.active.discard(ds)
        ds.deadline_kind = 0
        w.conns.add(h)
        ds.transport.set_protocol(h)
        h._start()
        if data:
            h.data_received(data)
        return h

    def __init__(self, ds, server: Http2Server):
        self.conn_ds = ds            # the connection's own Downstream: connection stats, limits
        self.w = ds.w
        self.hcm = ds.hcm
        self.server = server
        self.transport = ds.transport
        self.last_io = self.w.now
        self.streams: dict[int, _Stream] = {}
        self.closed = False
        self._draining = False
        self.goaway_last = -1        # after our GOAWAY, streams above this are refused
        self.write_paused = False
        self.peer_goaway = False
        self.empty_frames = 0
        self.priority_frames = 0
        self.control_queued = 0
        self.flush_scheduled = False
        self.opts = opts = server.opts
        # the frame codec and HPACK in Cython (proxy/_fastpath/h2codec.pyx); request headers
        # are validated by _request_head, so that a malformed request resets its stream only
        self.codec = codec.ServerConnection(opts.initial_stream_window_size, opts.max_concurrent_streams,
                                         server.max_head, opts.hpack_table_size)

    # ---- the worker's view (like Downstream) ---------------------------------------------------
    @property
    def in_req(self) -> bool:
        return bool(self.streams)

    @property
    def draining(self) -> bool:
        return self._draining

    @draining.setter
    def draining(self, on: bool) -> None:
        if on and not self._draining:
            self._draining = True
            self._goaway(NO_ERROR)
            if not self.streams:
                self._close()

    def close_if_idle(self) -> bool:
        if self.streams or self.closed:
            return False
        self._goaway(NO_ERROR)
        self._close()
        return True

    # ---- connection ----------------------------------------------------------------------------
    def _start(self) -> None:
        # our SETTINGS (the stream limit binds once the client acknowledged it; until then a
        # client may open more, RFC 9113 6.5.3, and _request refuses them) and the window
        self.codec.initiate_connection(self.opts.initial_connection_window_size)
        self._flush()

    def connection_made(self, transport) -> None:   # not called: we take over a live transport
        self.transport = transport

    def connection_lost(self, exc) -> None:
        self.closed = True
        self.w.conns.discard(self)
        for st in list(self.streams.values()):
            st.lost()
        self.streams.clear()
        self.conn_ds.connection_lost(exc)

    def pause_writing(self) -> None:
        self.write_paused = True
        for st in self.streams.values():
            st.pause_upstream(2)

    def resume_writing(self) -> None:
        self.write_paused = False
        for st in list(self.streams.values()):
            st.resume_upstream(2)

    def eof_received(self):
        return False

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        self.last_io = self.w.now
        try:
            events = self.codec.receive_data(data)
        except codec.ProtocolError as e:
            self._protocol_error(e)
            return
        try:
            for ev in events:
                if self.closed:
                    return      # a flood or an error ended the connection: the rest is moot
                self._event(ev)
        except Exception:
            log.exception("internal error on an HTTP/2 connection")
            self._goaway(INTERNAL_ERROR)
            self._close()
            return
        self._flush()
        if self.control_queued > self.opts.max_outbound_control_frames:
            self._flood("too many control frames queued (SETTINGS and PING acknowledgements)")

    def _event(self, ev) -> None:
        kind = ev[0]
        if kind == EV_DATA:
            _, sid, data, flow_len, ended = ev
            if not data and not ended:
                self.empty_frames += 1
                if self.empty_frames > self.opts.max_consecutive_inbound_frames_with_empty_payload:
                    self._flood("too many consecutive DATA frames with an empty payload")
                    return
            else:
                self.empty_frames = 0
            st = self.streams.get(sid)
            if st is None:
                self.codec.acknowledge_received_data(flow_len, sid)
                return
            st.request_data(data, flow_len)
        elif kind == EV_REQUEST:
            self._request(ev[1], ev[2], ev[3])
        elif kind == EV_END:
            st = self.streams.get(ev[1])
            if st is not None:
                st.request_end(b"")
        elif kind == EV_TRAILERS:
            st = self.streams.get(ev[1])
            if st is not None:
                st.request_trailers(ev[2])
        elif kind == EV_RESET or kind == EV_STREAM_ERROR:
            # reset by the client, or by the codec (a malformed request): the exchange ends
            st = self.streams.pop(ev[1], None)
            if st is not None:
                st.reset_by_peer()
                self._stream_gone()
            if kind == EV_STREAM_ERROR:
                self.w.count("http2.rx_messaging_error")
        elif kind == EV_WINDOW:
            if ev[1] == 0:
                for st in list(self.streams.values()):
                    st.send_pending()
            else:
                st = self.streams.get(ev[1])
                if st is not None:
                    st.send_pending()
        elif kind == EV_SETTINGS:
            self._count_control()
            for st in list(self.streams.values()):
                st.send_pending()
        elif kind == EV_PING:
            self._count_control()
        elif kind == EV_PRIORITY:
            self.priority_frames += 1
            if self.priority_frames > self.opts.max_inbound_priority_frames_per_stream * (
                    1 + self.codec.highest_inbound_stream_id // 2):
                self._flood("too many PRIORITY frames")
        elif kind == EV_GOAWAY:
            self.peer_goaway = True
            if not self.streams:
                self._close()

    def _count_control(self) -> None:
        # acknowledgements we queue; the count restarts whenever the client has read them all
        if self.transport.get_write_buffer_size() == 0:
            self.control_queued = 0
        self.control_queued += 1

    def _flood(self, what: str) -> None:
        log.debug("HTTP/2 client %s: %s", self.conn_ds.peer, what)
        self.w.count("http2.outbound_control_flood" if "control" in what else "http2.inbound_flood")
        self._goaway(ENHANCE_YOUR_CALM)
        self._close(abort=True)

    def _protocol_error(self, e: Exception) -> None:
        log.debug("HTTP/2 protocol error from %s: %s", self.conn_ds.peer, e)
        self.w.count("http2.rx_protocol_error")
        self._flush()       # the codec queued the GOAWAY with the error's code
        self._close()

    def _goaway(self, code) -> None:
        """GOAWAY with the last stream we accept; the streams in flight still finish."""
        if self.closed:
            return
        last = self.codec.highest_inbound_stream_id or 0
        if self.goaway_last < 0 or last < self.goaway_last:
            self.goaway_last = last
        self.codec.goaway(self.goaway_last, code)
        self._flush()

    def _close(self, abort: bool = False) -> None:
        if self.closed:
            return
        if not abort:
            self._flush()
        self.closed = True
        if abort:
            self.transport.abort()
        else:
            self.transport.close()

    def _flush_soon(self) -> None:
        """One write per event-loop turn for what the streams queued (a response's HEADERS and
        DATA frames, and other streams' too, go out in one syscall)."""
        if not self.flush_scheduled:
            self.flush_scheduled = True
            self.w.loop.call_soon(self._flush_now)

    def _flush_now(self) -> None:
        self.flush_scheduled = False
        self._flush()

    def _flush(self) -> None:
        data = self.codec.data_to_send()
        if data and not self.closed:
            self.transport.write(data)
            if self.transport.get_write_buffer_size() > _WRITE_LIMIT:
                log.debug("HTTP/2 client %s does not read: closing", self.conn_ds.peer)
                self._close(abort=True)

    def _stream_gone(self) -> None:
        if not self.streams and (self._draining or self.peer_goaway):
            self._flush()
            self._close()

    # ---- requests ------------------------------------------------------------------------------
    def _request(self, sid: int, headers: list, ended: bool) -> None:
        if self.goaway_last >= 0 and sid > self.goaway_last:
            self.codec.reset_stream(sid, REFUSED_STREAM)
            return
        if len(self.streams) >= self.opts.max_concurrent_streams:
            # over a limit the client may not have acknowledged yet (h2 enforces it once it has,
            # as a connection error): refused, so the client may retry it (RFC 9113 5.1.2)
            self.codec.reset_stream(sid, REFUSED_STREAM)
            return
        head, is_head, chunked = _request_head(headers, ended)
        if head is None:
            # malformed (RFC 9113 8.1.1): a stream error; the other streams go on
            self.w.count("http2.rx_messaging_error")
            self.codec.reset_stream(sid, PROTOCOL_ERROR)
            return
        st = _Stream(self, sid, is_head, chunked)
        self.streams[sid] = st
        ds = Downstream(self.w, self.hcm)
        ds.stream = True
        st.ds = ds
        ds.connection_made(st)
        ds.data_received(head)
        if self.write_paused:
            st.pause_upstream(2)


def _request_head(headers, ended: bool):
    """The HTTP/1.1 head of an HTTP/2 request: (head, is HEAD, body chunked), or (None, ...) when
    the request is malformed. RFC 9113 8.3.1: :authority wins over Host; cookies are joined."""
    method = path = authority = scheme = None
    host = None
    lines = []
    cookies = []
    has_length = False
    pseudo = set()
    for name, value in headers:
        if name[:1] == b":":
            # RFC 9113 8.3: each once, all before the regular fields
            if lines or cookies or host is not None or name in pseudo:
                return None, False, False
            pseudo.add(name)
            if name == b":method":
                method = value
            elif name == b":path":
                path = value
            elif name == b":authority":
                authority = value
            elif name == b":scheme":
                scheme = value
            else:
                return None, False, False     # :protocol (extended CONNECT) and unknown ones
            continue
        if not _TOKEN.match(name) or _BAD_VALUE.search(value):
            return None, False, False
        if name in CONNECTION_SPECIFIC or (name == b"te" and value != b"trailers"):
            return None, False, False
        if name == b"cookie":
            cookies.append(value)
        elif name == b"host":
            host = value
        else:
            if name == b"content-length":
                has_length = True
            lines.append(b"%s: %s\r\n" % (name, value))
    if method is None or scheme is None or path is None or not _TOKEN.match(method.lower()):
        return None, False, False
    if not _PATH.match(path) or (authority is not None and not _PATH.match(authority)):
        return None, False, False
    authority = authority if authority is not None else host
    out = [method, b" ", path, b" HTTP/1.1\r\n"]
    if authority is not None:
        out.append(b"host: %s\r\n" % authority)
    out.extend(lines)
    if cookies:
        out.append(b"cookie: %s\r\n" % b"; ".join(cookies))
    chunked = not ended and not has_length
    if chunked:
        out.append(b"transfer-encoding: chunked\r\n")
    # one request per Downstream: it closes its "connection" (this stream) after the response
    out.append(b"connection: close\r\n\r\n")
    return b"".join(out), method == b"HEAD", chunked


class _Stream:
    """The transport of one stream's Downstream: HTTP/1.1 response bytes in, frames out."""
    __slots__ = ("h", "sid", "ds", "is_head", "chunked_in", "req_ended", "state", "buf", "left",
                 "dec", "out", "out_end", "fin", "sent_end", "released", "read_paused", "owed",
                 "up_paused")

    def __init__(self, h: H2Downstream, sid: int, is_head: bool, chunked: bool):
        self.h = h
        self.sid = sid
        self.ds = None
        self.is_head = is_head
        self.chunked_in = chunked
        self.req_ended = False
        self.state = _HEAD
        self.buf = b""
        self.left = -1
        self.dec = None
        self.out = bytearray()       # DATA waiting for flow-control window
        self.out_end = None          # trailers (list) or True once the response is complete
        self.fin = False             # the Downstream wrote its whole response
        self.sent_end = False        # END_STREAM went out (or the stream was reset)
        self.released = False
        self.read_paused = False
        self.owed = 0                # request bytes received but not yet acknowledged
        self.up_paused = 0           # bits: 1 window used up, 2 connection write buffer full

    # ---- request side (from H2Downstream) ------------------------------------------------------
    def request_data(self, data: bytes, flow_len: int) -> None:
        if self.read_paused:
            self.owed += flow_len
        elif flow_len:
            self.h.codec.acknowledge_received_data(flow_len, self.sid)
        ds = self.ds
        if ds is None or ds.closed or not data:
            return
        ds.data_received(encode_chunk(data) if self.chunked_in else data)

    def request_trailers(self, headers) -> None:
        lines = []
        for name, value in headers:
            if name[:1] == b":" or not _TOKEN.match(name) or _BAD_VALUE.search(value):
                self.h.codec.reset_stream(self.sid, PROTOCOL_ERROR)
                self.reset_by_peer()
                self.h.streams.pop(self.sid, None)
                return
            lines.append(b"%s: %s\r\n" % (name, value))
        self.request_end(b"".join(lines))

    def request_end(self, trailers: bytes) -> None:
        if self.req_ended:
            return
        self.req_ended = True
        ds = self.ds
        if self.chunked_in and ds is not None and not ds.closed:
            ds.data_received(last_chunk(trailers))

    def reset_by_peer(self) -> None:
        self.sent_end = True
        self.out = bytearray()
        self.lost()

    def lost(self) -> None:
        ds = self.ds
        if ds is not None and not self.released:
            self.released = True
            ds.connection_lost(None)

    # ---- the transport interface the Downstream uses -------------------------------------------
    def get_extra_info(self, name, default=None):
        if name == "socket":
            return None      # not ours to linger or shut: the connection carries other streams
        return self.h.transport.get_extra_info(name, default)

    def is_closing(self) -> bool:
        return self.sent_end or self.h.closed

    def pause_reading(self) -> None:
        self.read_paused = True

    def resume_reading(self) -> None:
        if self.read_paused:
            self.read_paused = False
            if self.owed and not self.sent_end and not self.h.closed:
                try:
                    self.h.codec.acknowledge_received_data(self.owed, self.sid)
                except StreamClosedError:
                    pass
                self.owed = 0
                self.h._flush_soon()

    def close(self) -> None:
        if not self.fin and self.state == _LENGTH and self.left < 0:
            self._finish(None)          # a body delimited by the close ends here
        elif not self.fin:
            self.abort()
            return
        self._release()

    def abort(self) -> None:
        if not self.sent_end and not self.h.closed:
            self.sent_end = True
            self.out = bytearray()
            try:
                self.h.codec.reset_stream(self.sid, INTERNAL_ERROR)
            except (StreamClosedError, ValueError):
                pass
            self.h._flush_soon()
        self.h.streams.pop(self.sid, None)
        self._release()
        self.h._stream_gone()

    def _release(self) -> None:
        if not self.released:
            self.released = True
            # after the Downstream has returned from the write that ended its exchange
            self.h.w.loop.call_soon(self.ds.connection_lost, None)

    def write(self, data: bytes) -> None:
        if self.sent_end or self.fin:
            return
        state = self.state
        if state == _HEAD:
            data = self._head(data)
            if not data:
                return
            state = self.state
        if state == _LENGTH:
            left = self.left
            if left < 0:
                self._data(data)
            elif len(data) >= left:
                self.out += data[:left] if len(data) > left else data
                self._finish(None)      # the last DATA frame carries END_STREAM
            else:
                self.left = left - len(data)
                self._data(data)
        elif state == _CHUNKED:
            try:
                payload = self.dec.feed(data)
            except HttpError:
                self.abort()
                return
            if self.dec.done:
                if payload:
                    self.out += payload
                self._finish(trailer_list(self.dec.trailers))
            elif payload:
                self._data(payload)

    def _head(self, data: bytes) -> bytes:
        """Reads the response head the Downstream wrote (our own, well-formed serialization);
        sends HEADERS; returns the body bytes that came with it."""
        buf = self.buf + data if self.buf else data
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            self.buf = buf
            return b""
        self.buf = b""
        lines = buf[:end].split(b"\r\n")
        rest = buf[end + 4:]
        status = int(lines[0][9:12])
        if status < 200:
            # interim responses (100 Continue) are ours to drop: HTTP/2 clients do not wait
            return self._head(rest) if rest else b""
        headers = [(b":status", lines[0][9:12])]
        length = -1
        chunked = False
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            name = name.lower()
            if name == b"transfer-encoding":
                chunked = True
                continue
            if name in CONNECTION_SPECIFIC:
                continue
            value = value.strip()
            if name == b"content-length":
                length = int(value)
            headers.append((name, value))
        h = self.h
        if self.is_head or status == 204 or status == 304 or length == 0:
            h.codec.send_headers(self.sid, headers, end_stream=True)
            self.sent_end = self.fin = True
            self.state = _DONE
            h._flush_soon()
            self._done()
            return b""
        h.codec.send_headers(self.sid, headers)
        h._flush_soon()
        if chunked:
            self.state = _CHUNKED
            self.dec = ChunkedDecoder()
        else:
            self.state = _LENGTH
            self.left = length
        return rest

    def _data(self, data: bytes) -> None:
        if data:
            self.out += data
            self.send_pending()

    def _finish(self, trailers) -> None:
        self.fin = True
        self.state = _DONE
        self.out_end = trailers if trailers else True
        self.send_pending()

    def send_pending(self) -> None:
        """DATA as far as the flow-control windows allow; END_STREAM (or trailers) after it."""
        if self.sent_end:
            return
        h = self.h
        conn = h.codec
        out = self.out
        if out:
            window = conn.local_flow_control_window(self.sid)
            frame = conn.max_outbound_frame_size
            sent = 0
            total = len(out)
            last_end = self.out_end is True
            while sent < total and window > 0:
                n = min(window, frame, total - sent)
                sent += n
                window -= n
                if sent == total and last_end:
                    # the response's last bytes: END_STREAM on this frame, not a frame of its own
                    conn.send_data(self.sid, bytes(out[sent - n:sent]), end_stream=True)
                    self.out = bytearray()
                    self.sent_end = True
                    h._flush_soon()
                    self._done()
                    return
                conn.send_data(self.sid, bytes(out[sent - n:sent]))
            if sent:
                del out[:sent]
            if len(out) > _STREAM_HIGH:
                self.pause_upstream(1)
            elif self.up_paused & 1:
                self.resume_upstream(1)
        if not out and self.out_end is not None:
            if self.out_end is True:
                conn.end_stream(self.sid)
            else:
                conn.send_headers(self.sid, self.out_end, end_stream=True)
            self.sent_end = True
            h._flush_soon()
            self._done()
            return
        h._flush_soon()

    def _done(self) -> None:
        """The response went out whole: the stream is over for us."""
        h = self.h
        h.streams.pop(self.sid, None)
        if not self.req_ended:
            # RFC 9113 8.1: a server may answer before the request ends; the rest is not wanted
            try:
                h.codec.reset_stream(self.sid, NO_ERROR)
            except (StreamClosedError, ValueError):
                pass
            h._flush_soon()
        h._stream_gone()

    def pause_upstream(self, bit: int) -> None:
        if not self.up_paused and self.ds is not None:
            self.ds.pause_writing()
        self.up_paused |= bit

    def resume_upstream(self, bit: int) -> None:
        if self.up_paused & bit:
            self.up_paused &= ~bit
            if not self.up_paused and self.ds is not None:
                self.ds.resume_writing()
