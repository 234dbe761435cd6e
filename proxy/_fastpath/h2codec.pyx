# cython: language_level=3
"""HTTP/2 for the server side of a connection (RFC 9113), with HPACK (RFC 7541): the frame codec
and the connection and stream state that proxy/http2/downstream.py drives. It replaces the h2
package on the client-facing side, where its pure-Python state machine was half of the cost of a
proxied request; upstream connections still use h2.

`ServerConnection.receive_data(bytes)` returns events as tuples, (kind, stream_id, ...), and
raises `ProtocolError` (with an HTTP/2 error_code) for connection errors, having queued the
GOAWAY; stream errors queue an RST_STREAM and the connection goes on. Outgoing frames are queued
by the send methods and taken with `data_to_send()`.

HPACK: the decoder has the static and dynamic tables and Huffman decoding (the code table is the
hpack package's, RFC 7541 Appendix B); the encoder indexes names in the static table and sends
values as plain literals without indexing, after a dynamic table size update to 0 in its first
block, so it never needs a dynamic table of its own.
"""
from libc.stdint cimport uint8_t, uint32_t, uint64_t
from libc.string cimport memcpy
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE

from hpack.huffman_constants import REQUEST_CODES, REQUEST_CODES_LENGTH
from hpack.table import HeaderTable

ctypedef unsigned char uchar

# error codes (RFC 9113 7)
NO_ERROR = 0
PROTOCOL_ERROR = 1
INTERNAL_ERROR = 2
FLOW_CONTROL_ERROR = 3
SETTINGS_TIMEOUT = 4
STREAM_CLOSED = 5
FRAME_SIZE_ERROR = 6
REFUSED_STREAM = 7
CANCEL = 8
COMPRESSION_ERROR = 9
ENHANCE_YOUR_CALM = 11

# event kinds
EV_REQUEST = 1          # (kind, sid, headers, ended)
EV_DATA = 2             # (kind, sid, data, flow_controlled_length, ended)
EV_TRAILERS = 3         # (kind, sid, headers)       the stream's end follows as EV_END
EV_END = 4              # (kind, sid)                the client ended its side
EV_RESET = 5            # (kind, sid, error_code)    by the client
EV_WINDOW = 6           # (kind, sid)                more send window (sid 0: the connection's)
EV_SETTINGS = 7         # (kind,)                    the client's SETTINGS (acknowledged)
EV_PING = 8             # (kind,)
EV_PRIORITY = 9         # (kind,)
EV_GOAWAY = 10          # (kind, last_stream_id, error_code)
EV_STREAM_ERROR = 11    # (kind, sid, error_code)    we reset the stream (a malformed request)

cdef bytes PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
cdef Py_ssize_t MAX_FRAME = 16384           # our SETTINGS_MAX_FRAME_SIZE (the default)
cdef int MAX_CONTINUATIONS = 64             # a header block in more frames is a flood
cdef long long MAX_WINDOW = 2147483647

# frame types
cdef enum:
    T_DATA = 0
    T_HEADERS = 1
    T_PRIORITY = 2
    T_RST_STREAM = 3
    T_SETTINGS = 4
    T_PUSH_PROMISE = 5
    T_PING = 6
    T_GOAWAY = 7
    T_WINDOW_UPDATE = 8
    T_CONTINUATION = 9

# SETTINGS identifiers
cdef enum:
    S_HEADER_TABLE_SIZE = 1
    S_ENABLE_PUSH = 2
    S_MAX_CONCURRENT_STREAMS = 3
    S_INITIAL_WINDOW_SIZE = 4
    S_MAX_FRAME_SIZE = 5
    S_MAX_HEADER_LIST_SIZE = 6


class ProtocolError(Exception):
    """A connection error: the GOAWAY with `error_code` is already queued."""

    def __init__(self, error_code, message):
        super().__init__(message)
        self.error_code = error_code


class _StreamError(Exception):
    def __init__(self, error_code, message):
        super().__init__(message)
        self.error_code = error_code


# ---- HPACK -----------------------------------------------------------------------------------

cdef list STATIC = [(n, v) for n, v in HeaderTable.STATIC_TABLE]      # index 1..61 -> [0..60]
cdef dict STATIC_FULL = {}
cdef dict STATIC_NAME = {}
for _i, (_n, _v) in enumerate(HeaderTable.STATIC_TABLE):
    STATIC_FULL.setdefault((_n, _v), _i + 1)
    STATIC_NAME.setdefault(_n, _i + 1)

# Huffman decoding tree: node k has children _child[2k] (bit 0) and _child[2k+1] (bit 1);
# a child >= 0 is a node, -1 - sym is a leaf with symbol sym, -1000 is no child.
cdef int _child[1024]
cdef int _nodes = 1


cdef void _build_huffman():
    global _nodes
    cdef int k, sym, length, bit, node, c
    cdef uint32_t code
    for k in range(1024):
        _child[k] = -1000
    for sym in range(257):
        code = REQUEST_CODES[sym]
        length = REQUEST_CODES_LENGTH[sym]
        node = 0
        for k in range(length - 1, -1, -1):
            bit = (code >> k) & 1
            c = 2 * node + bit
            if k == 0:
                _child[c] = -1 - sym
            else:
                if _child[c] == -1000:
                    _child[c] = _nodes
                    _nodes += 1
                node = _child[c]


_build_huffman()


cdef bytes _huffman_decode(const uchar* p, Py_ssize_t n):
    """RFC 7541 5.2: the padding is the most significant bits of EOS (all ones), fewer than 8;
    EOS itself inside the string is an error."""
    cdef bytearray out = bytearray()
    cdef int node = 0, c, bits_since = 0
    cdef bint ones = True
    cdef Py_ssize_t i
    cdef int k, bit
    for i in range(n):
        for k in range(7, -1, -1):
            bit = (p[i] >> k) & 1
            c = _child[2 * node + bit]
            bits_since += 1
            if not bit:
                ones = False
            if c == -1000:
                raise _HpackError("invalid Huffman code")
            if c < 0:
                if c == -257:
                    raise _HpackError("EOS in a Huffman-coded string")
                out.append(-1 - c)
                node = 0
                bits_since = 0
                ones = True
            else:
                node = c
    if bits_since > 7 or not ones:
        raise _HpackError("invalid Huffman padding")
    return bytes(out)


class _HpackError(Exception):
    pass


class _HeaderListTooLarge(Exception):
    pass


cdef inline Py_ssize_t _int(const uchar* p, Py_ssize_t n, Py_ssize_t* pos, int prefix) except -2:
    """An HPACK integer with an N-bit prefix at p[*pos]; advances *pos."""
    cdef Py_ssize_t i = pos[0]
    cdef int mask = (1 << prefix) - 1
    cdef uint64_t value = p[i] & mask
    cdef int shift = 0
    i += 1
    if value < <uint64_t>mask:
        pos[0] = i
        return <Py_ssize_t>value
    while True:
        if i >= n:
            raise _HpackError("truncated integer")
        value += <uint64_t>(p[i] & 0x7f) << shift
        shift += 7
        if value > 0xffffffff or shift > 35:
            raise _HpackError("integer too large")
        if not (p[i] & 0x80):
            i += 1
            break
        i += 1
    pos[0] = i
    return <Py_ssize_t>value


cdef class HpackDecoder:
    cdef list table            # dynamic table, newest first
    cdef Py_ssize_t size
    cdef public Py_ssize_t max_size            # the current maximum (size updates)
    cdef public Py_ssize_t max_allowed_table_size   # our SETTINGS_HEADER_TABLE_SIZE
    cdef public Py_ssize_t max_header_list_size

    def __init__(self, Py_ssize_t max_header_list_size=65536):
        self.table = []
        self.size = 0
        self.max_size = 4096
        self.max_allowed_table_size = 4096
        self.max_header_list_size = max_header_list_size

    cdef _evict(self):
        while self.size > self.max_size and self.table:
            n, v = self.table.pop()
            self.size -= 32 + len(n) + len(v)

    cdef _add(self, bytes name, bytes value):
        cdef Py_ssize_t s = 32 + len(name) + len(value)
        if s > self.max_size:
            self.table = []
            self.size = 0
            return
        self.table.insert(0, (name, value))
        self.size += s
        self._evict()

    cdef tuple _get(self, Py_ssize_t index):
        if index <= 0:
            raise _HpackError("index 0")
        if index <= 61:
            return STATIC[index - 1]
        index -= 62
        if index >= len(self.table):
            raise _HpackError("index beyond the tables")
        return self.table[index]

    cdef bytes _string(self, const uchar* p, Py_ssize_t n, Py_ssize_t* pos):
        if pos[0] >= n:
            raise _HpackError("truncated string")
        cdef bint huff = p[pos[0]] & 0x80
        cdef Py_ssize_t length = _int(p, n, pos, 7)
        cdef Py_ssize_t start = pos[0]
        if length > n - start:
            raise _HpackError("truncated string")
        pos[0] = start + length
        if huff:
            return _huffman_decode(p + start, length)
        return PyBytes_FromStringAndSize(<char*>p + start, length)

    def decode(self, bytes block):
        """The header list of a block, as (name, value) bytes pairs."""
        cdef const uchar* p = <const uchar*>PyBytes_AS_STRING(block)
        cdef Py_ssize_t n = PyBytes_GET_SIZE(block)
        cdef Py_ssize_t pos = 0, index, total = 0, new_size
        cdef uchar b
        cdef list out = []
        cdef bint fields = False
        cdef bytes name, value
        while pos < n:
            b = p[pos]
            if b & 0x80:                                   # indexed
                index = _int(p, n, &pos, 7)
                name, value = self._get(index)
            elif b & 0x40:                                 # literal, incremental indexing
                index = _int(p, n, &pos, 6)
                name = self._get(index)[0] if index else self._string(p, n, &pos)
                value = self._string(p, n, &pos)
                self._add(name, value)
            elif b & 0x20:                                 # dynamic table size update
                if fields:
                    raise _HpackError("table size update after a header field")
                new_size = _int(p, n, &pos, 5)
                if new_size > self.max_allowed_table_size:
                    raise _HpackError("table size update over the maximum")
                self.max_size = new_size
                self._evict()
                continue
            else:                                          # literal without / never indexed
                index = _int(p, n, &pos, 4)
                name = self._get(index)[0] if index else self._string(p, n, &pos)
                value = self._string(p, n, &pos)
            fields = True
            total += 32 + len(name) + len(value)
            if total > self.max_header_list_size:
                raise _HeaderListTooLarge()
            out.append((name, value))
        return out


cdef bytes _enc_int(Py_ssize_t value, int prefix, uchar first):
    cdef int mask = (1 << prefix) - 1
    if value < mask:
        return bytes((first | value,))
    cdef bytearray out = bytearray((first | mask,))
    value -= mask
    while value >= 128:
        out.append((value & 0x7f) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


cdef class HpackEncoder:
    cdef bint first

    def __init__(self):
        self.first = True

    def encode(self, headers):
        cdef list out = []
        cdef object idx
        if self.first:
            out.append(b"\x20")      # dynamic table size 0: we never index, so never evict
            self.first = False
        for name, value in headers:
            idx = STATIC_FULL.get((name, value))
            if idx is not None:
                out.append(_enc_int(idx, 7, 0x80))
                continue
            idx = STATIC_NAME.get(name)
            if idx is not None:
                out.append(_enc_int(idx, 4, 0))
            else:
                out.append(b"\x00")
                out.append(_enc_int(len(name), 7, 0))
                out.append(name)
            out.append(_enc_int(len(value), 7, 0))
            out.append(value)
        return b"".join(out)


# ---- frames ----------------------------------------------------------------------------------

cdef inline bytes _frame_head(Py_ssize_t length, int ftype, int flags, uint32_t sid):
    cdef char h[9]
    h[0] = (length >> 16) & 0xff
    h[1] = (length >> 8) & 0xff
    h[2] = length & 0xff
    h[3] = ftype
    h[4] = flags
    h[5] = (sid >> 24) & 0x7f
    h[6] = (sid >> 16) & 0xff
    h[7] = (sid >> 8) & 0xff
    h[8] = sid & 0xff
    return PyBytes_FromStringAndSize(h, 9)


cdef inline uint32_t _u32(const uchar* p):
    return (<uint32_t>p[0] << 24) | (<uint32_t>p[1] << 16) | (<uint32_t>p[2] << 8) | p[3]


cdef bytes _u32b(uint32_t v):
    return bytes(((v >> 24) & 0xff, (v >> 16) & 0xff, (v >> 8) & 0xff, v & 0xff))


cdef class Stream:
    """What the codec keeps of one stream."""
    cdef public bint remote_ended
    cdef public bint local_ended
    cdef public bint headers_seen
    cdef public long long send_window
    cdef public long long recv_window
    cdef public long long unacked
    cdef public long long content_length     # -1: none given
    cdef public long long received


cdef class ServerConnection:
    cdef list out
    cdef bytes buf
    cdef bint preface_done
    cdef bint settings_seen
    cdef dict streams
    cdef public uint32_t highest_inbound_stream_id
    cdef public long long open_streams
    # our settings: announced, and in force once acknowledged
    cdef long long local_initial_window
    cdef long long pending_initial_window
    cdef long long local_max_streams
    cdef long long pending_max_streams
    cdef int unacked_settings
    # the client's settings
    cdef public long long remote_initial_window
    cdef public Py_ssize_t max_outbound_frame_size
    cdef public long long remote_max_concurrent_streams
    # connection flow control
    cdef public long long conn_send_window
    cdef long long conn_recv_window
    cdef long long conn_recv_initial
    cdef long long conn_unacked
    # header block being assembled (HEADERS + CONTINUATION)
    cdef uint32_t block_sid
    cdef int block_flags
    cdef list block
    cdef int block_frames
    cdef public HpackDecoder decoder
    cdef public HpackEncoder encoder

    def __init__(self, long long initial_window=65535, long long max_streams=2147483647,
                 Py_ssize_t max_header_list_size=65536, Py_ssize_t header_table_size=4096):
        self.out = []
        self.buf = b""
        self.preface_done = False
        self.settings_seen = False
        self.streams = {}
        self.highest_inbound_stream_id = 0
        self.open_streams = 0
        self.local_initial_window = 65535          # until the client acknowledges ours
        self.pending_initial_window = initial_window
        self.local_max_streams = 2147483647
        self.pending_max_streams = max_streams
        self.unacked_settings = 0
        self.remote_initial_window = 65535
        self.max_outbound_frame_size = 16384
        self.remote_max_concurrent_streams = 2147483647
        self.conn_send_window = 65535
        self.conn_recv_window = 65535
        self.conn_recv_initial = 65535
        self.conn_unacked = 0
        self.block = None
        self.decoder = HpackDecoder(max_header_list_size)
        self.decoder.max_allowed_table_size = header_table_size
        self.encoder = HpackEncoder()

    # ---- sending -----------------------------------------------------------------------------
    def initiate_connection(self, long long connection_window=65535):
        """Our SETTINGS, and the connection window beyond the default 65535."""
        body = (b"\x00\x03" + _u32b(<uint32_t>self.pending_max_streams)
                + b"\x00\x04" + _u32b(<uint32_t>self.pending_initial_window)
                + b"\x00\x06" + _u32b(<uint32_t>self.decoder.max_header_list_size)
                + b"\x00\x01" + _u32b(<uint32_t>self.decoder.max_allowed_table_size))
        self.out.append(_frame_head(len(body), T_SETTINGS, 0, 0) + body)
        self.unacked_settings += 1
        if connection_window > 65535:
            self.out.append(_frame_head(4, T_WINDOW_UPDATE, 0, 0) + _u32b(<uint32_t>(connection_window - 65535)))
            self.conn_recv_window = connection_window
            self.conn_recv_initial = connection_window

    def data_to_send(self):
        if not self.out:
            return b""
        data = b"".join(self.out)
        self.out = []
        return data

    def send_headers(self, uint32_t sid, headers, bint end_stream=False):
        cdef Stream st = self.streams.get(sid)
        if st is None or st.local_ended:
            raise _closed(sid)
        block = self.encoder.encode(headers)
        cdef Py_ssize_t n = len(block), limit = self.max_outbound_frame_size, off
        cdef int flags = 0x1 if end_stream else 0
        if n <= limit:
            self.out.append(_frame_head(n, T_HEADERS, flags | 0x4, sid) + block)
        else:
            self.out.append(_frame_head(limit, T_HEADERS, flags, sid) + block[:limit])
            off = limit
            while off < n:
                chunk = block[off:off + limit]
                off += limit
                self.out.append(_frame_head(len(chunk), T_CONTINUATION, 0x4 if off >= n else 0, sid) + chunk)
        if end_stream:
            self._local_end(sid, st)

    def send_data(self, uint32_t sid, bytes data, bint end_stream=False):
        """DATA within the windows (the caller checks local_flow_control_window)."""
        cdef Stream st = self.streams.get(sid)
        if st is None or st.local_ended:
            raise _closed(sid)
        cdef Py_ssize_t n = len(data)
        if n > st.send_window or n > self.conn_send_window or n > self.max_outbound_frame_size:
            raise ValueError("DATA beyond the flow-control window or frame size")
        st.send_window -= n
        self.conn_send_window -= n
        self.out.append(_frame_head(n, T_DATA, 0x1 if end_stream else 0, sid))
        if n:
            self.out.append(data)
        if end_stream:
            self._local_end(sid, st)

    def end_stream(self, uint32_t sid):
        self.send_data(sid, b"", True)

    def local_flow_control_window(self, uint32_t sid):
        cdef Stream st = self.streams.get(sid)
        if st is None:
            raise _closed(sid)
        return min(st.send_window, self.conn_send_window)

    def reset_stream(self, uint32_t sid, int error_code=0):
        self.out.append(_frame_head(4, T_RST_STREAM, 0, sid) + _u32b(error_code))
        cdef Stream st = self.streams.pop(sid, None)
        if st is not None and not (st.remote_ended and st.local_ended):
            self.open_streams -= 1

    def goaway(self, uint32_t last_stream_id, int error_code=0):
        self.out.append(_frame_head(8, T_GOAWAY, 0, 0) + _u32b(last_stream_id) + _u32b(error_code))

    def acknowledge_received_data(self, long long n, uint32_t sid):
        """`n` bytes of the stream's DATA were consumed: give the window back (WINDOW_UPDATE once
        half of a window is owed, as nghttp2 does)."""
        if n <= 0:
            return
        self.conn_unacked += n
        if self.conn_unacked >= self.conn_recv_initial // 2:
            self.out.append(_frame_head(4, T_WINDOW_UPDATE, 0, 0) + _u32b(<uint32_t>self.conn_unacked))
            self.conn_recv_window += self.conn_unacked
            self.conn_unacked = 0
        cdef Stream st = self.streams.get(sid)
        if st is None or st.remote_ended:
            return
        st.unacked += n
        if st.unacked >= self.local_initial_window // 2:
            self.out.append(_frame_head(4, T_WINDOW_UPDATE, 0, sid) + _u32b(<uint32_t>st.unacked))
            st.recv_window += st.unacked
            st.unacked = 0

    cdef _local_end(self, uint32_t sid, Stream st):
        st.local_ended = True
        if st.remote_ended:
            del self.streams[sid]
            self.open_streams -= 1

    cdef _remote_end(self, uint32_t sid, Stream st):
        st.remote_ended = True
        if st.content_length >= 0 and st.received != st.content_length:
            raise _StreamError(PROTOCOL_ERROR, "content-length does not match the DATA")
        if st.local_ended:
            del self.streams[sid]
            self.open_streams -= 1

    # ---- receiving ---------------------------------------------------------------------------
    def receive_data(self, bytes data):
        cdef list events = []
        try:
            self._receive(data, events)
        except ProtocolError as e:
            self.goaway(self.highest_inbound_stream_id, e.error_code)
            self.buf = b""
            raise
        return events

    cdef _receive(self, bytes data, list events):
        cdef bytes buf = self.buf + data if self.buf else data
        cdef Py_ssize_t n = len(buf), pos = 0, length
        cdef const uchar* p = <const uchar*>PyBytes_AS_STRING(buf)
        cdef int ftype, flags
        cdef uint32_t sid
        if not self.preface_done:
            if n < 24:
                if PREFACE[:n] != buf:
                    raise ProtocolError(PROTOCOL_ERROR, "invalid connection preface")
                self.buf = buf
                return
            if buf[:24] != PREFACE:
                raise ProtocolError(PROTOCOL_ERROR, "invalid connection preface")
            self.preface_done = True
            pos = 24
        while n - pos >= 9:
            length = (<Py_ssize_t>p[pos] << 16) | (<Py_ssize_t>p[pos + 1] << 8) | p[pos + 2]
            ftype = p[pos + 3]
            flags = p[pos + 4]
            sid = _u32(p + pos + 5) & 0x7fffffff
            if length > MAX_FRAME:
                raise ProtocolError(FRAME_SIZE_ERROR, "frame larger than SETTINGS_MAX_FRAME_SIZE")
            if n - pos - 9 < length:
                break
            if not self.settings_seen and (ftype != T_SETTINGS or flags & 0x1):
                raise ProtocolError(PROTOCOL_ERROR, "the first frame must be SETTINGS")
            try:
                self._frame(ftype, flags, sid, buf, pos + 9, length, events)
            except _StreamError as e:
                self.reset_stream(sid, e.error_code)
                events.append((EV_STREAM_ERROR, sid, e.error_code))
            pos += 9 + length
        self.buf = buf[pos:] if pos < n else b""

    cdef _frame(self, int ftype, int flags, uint32_t sid, bytes buf, Py_ssize_t at, Py_ssize_t length,
                list events):
        cdef const uchar* p = <const uchar*>PyBytes_AS_STRING(buf) + at
        if self.block is not None and ftype != T_CONTINUATION:
            raise ProtocolError(PROTOCOL_ERROR, "a header block interrupted by another frame")
        if ftype == T_DATA:
            self._data(flags, sid, buf, at, length, events)
        elif ftype == T_HEADERS:
            self._headers(flags, sid, buf, at, length, events)
        elif ftype == T_CONTINUATION:
            if self.block is None or sid != self.block_sid:
                raise ProtocolError(PROTOCOL_ERROR, "CONTINUATION without a header block")
            self.block_frames += 1
            if self.block_frames > MAX_CONTINUATIONS:
                raise ProtocolError(PROTOCOL_ERROR, "too many CONTINUATION frames")
            self.block.append(buf[at:at + length])
            if flags & 0x4:
                self._end_block(events)
        elif ftype == T_SETTINGS:
            self._settings(flags, sid, p, length, events)
        elif ftype == T_WINDOW_UPDATE:
            self._window_update(sid, p, length, events)
        elif ftype == T_RST_STREAM:
            if length != 4:
                raise ProtocolError(FRAME_SIZE_ERROR, "RST_STREAM of the wrong size")
            if sid == 0 or sid > self.highest_inbound_stream_id:
                raise ProtocolError(PROTOCOL_ERROR, "RST_STREAM on stream 0 or an idle stream")
            st = self.streams.pop(sid, None)
            if st is not None:
                if not ((<Stream>st).remote_ended and (<Stream>st).local_ended):
                    self.open_streams -= 1
                events.append((EV_RESET, sid, _u32(p)))
        elif ftype == T_PING:
            if length != 8:
                raise ProtocolError(FRAME_SIZE_ERROR, "PING of the wrong size")
            if sid != 0:
                raise ProtocolError(PROTOCOL_ERROR, "PING on a stream")
            if not flags & 0x1:
                self.out.append(_frame_head(8, T_PING, 0x1, 0) + buf[at:at + 8])
                events.append((EV_PING,))
        elif ftype == T_PRIORITY:
            if sid == 0:
                raise ProtocolError(PROTOCOL_ERROR, "PRIORITY on stream 0")
            if length != 5:
                raise _StreamError(FRAME_SIZE_ERROR, "PRIORITY of the wrong size")
            events.append((EV_PRIORITY,))
        elif ftype == T_GOAWAY:
            if sid != 0 or length < 8:
                raise ProtocolError(PROTOCOL_ERROR, "malformed GOAWAY")
            events.append((EV_GOAWAY, _u32(p) & 0x7fffffff, _u32(p + 4)))
        elif ftype == T_PUSH_PROMISE:
            raise ProtocolError(PROTOCOL_ERROR, "PUSH_PROMISE from a client")
        # other (extension) frame types are ignored (RFC 9113 5.5)

    cdef _settings(self, int flags, uint32_t sid, const uchar* p, Py_ssize_t length, list events):
        cdef Py_ssize_t k
        cdef int ident
        cdef uint32_t value
        cdef long long delta
        cdef Stream st
        if sid != 0:
            raise ProtocolError(PROTOCOL_ERROR, "SETTINGS on a stream")
        if flags & 0x1:
            if length != 0:
                raise ProtocolError(FRAME_SIZE_ERROR, "SETTINGS ACK with a payload")
            if self.unacked_settings > 0:
                self.unacked_settings -= 1
                # ours are in force now (RFC 9113 6.5.3): the stream limit, the window size
                self.local_max_streams = self.pending_max_streams
                delta = self.pending_initial_window - self.local_initial_window
                if delta:
                    self.local_initial_window = self.pending_initial_window
                    for st in self.streams.values():
                        st.recv_window += delta
            return
        if length % 6:
            raise ProtocolError(FRAME_SIZE_ERROR, "SETTINGS of the wrong size")
        self.settings_seen = True
        for k in range(0, length, 6):
            ident = (p[k] << 8) | p[k + 1]
            value = _u32(p + k + 2)
            if ident == S_ENABLE_PUSH and value > 1:
                raise ProtocolError(PROTOCOL_ERROR, "ENABLE_PUSH not 0 or 1")
            elif ident == S_INITIAL_WINDOW_SIZE:
                if value > MAX_WINDOW:
                    raise ProtocolError(FLOW_CONTROL_ERROR, "INITIAL_WINDOW_SIZE too large")
                delta = <long long>value - self.remote_initial_window
                self.remote_initial_window = value
                for st in self.streams.values():
                    st.send_window += delta
                    if st.send_window > MAX_WINDOW:
                        raise ProtocolError(FLOW_CONTROL_ERROR, "stream window overflow")
            elif ident == S_MAX_FRAME_SIZE:
                if value < 16384 or value > 16777215:
                    raise ProtocolError(PROTOCOL_ERROR, "MAX_FRAME_SIZE out of range")
                self.max_outbound_frame_size = value
            elif ident == S_MAX_CONCURRENT_STREAMS:
                self.remote_max_concurrent_streams = value
        self.out.append(_frame_head(0, T_SETTINGS, 0x1, 0))
        events.append((EV_SETTINGS,))

    cdef _window_update(self, uint32_t sid, const uchar* p, Py_ssize_t length, list events):
        if length != 4:
            raise ProtocolError(FRAME_SIZE_ERROR, "WINDOW_UPDATE of the wrong size")
        cdef long long inc = _u32(p) & 0x7fffffff
        cdef Stream st
        if sid == 0:
            if inc == 0:
                raise ProtocolError(PROTOCOL_ERROR, "WINDOW_UPDATE of 0")
            self.conn_send_window += inc
            if self.conn_send_window > MAX_WINDOW:
                raise ProtocolError(FLOW_CONTROL_ERROR, "connection window overflow")
            events.append((EV_WINDOW, 0))
            return
        if sid > self.highest_inbound_stream_id:
            raise ProtocolError(PROTOCOL_ERROR, "WINDOW_UPDATE on an idle stream")
        st = self.streams.get(sid)
        if st is None:
            return          # a closed stream: ignored
        if inc == 0:
            raise _StreamError(PROTOCOL_ERROR, "WINDOW_UPDATE of 0")
        st.send_window += inc
        if st.send_window > MAX_WINDOW:
            raise _StreamError(FLOW_CONTROL_ERROR, "stream window overflow")
        events.append((EV_WINDOW, sid))

    cdef _data(self, int flags, uint32_t sid, bytes buf, Py_ssize_t at, Py_ssize_t length, list events):
        cdef const uchar* p = <const uchar*>PyBytes_AS_STRING(buf) + at
        cdef Py_ssize_t pad = 0, start = at, size = length
        if sid == 0:
            raise ProtocolError(PROTOCOL_ERROR, "DATA on stream 0")
        # the connection window counts the whole frame, padding included
        self.conn_recv_window -= length
        if self.conn_recv_window < 0:
            raise ProtocolError(FLOW_CONTROL_ERROR, "DATA beyond the connection window")
        if flags & 0x8:
            if length < 1 or p[0] >= length:
                raise ProtocolError(PROTOCOL_ERROR, "bad DATA padding")
            pad = p[0]
            start = at + 1
            size = length - 1 - pad
        cdef Stream st = self.streams.get(sid)
        if st is None:
            if sid > self.highest_inbound_stream_id:
                raise ProtocolError(PROTOCOL_ERROR, "DATA on an idle stream")
            # a stream we (or the client) reset: ignored (RFC 9113 5.4.2), its window given back
            self.acknowledge_received_data(length, 0)
            return
        if st.remote_ended:
            raise _StreamError(STREAM_CLOSED, "DATA after END_STREAM")
        st.recv_window -= length
        if st.recv_window < 0:
            raise _StreamError(FLOW_CONTROL_ERROR, "DATA beyond the stream window")
        st.received += size
        if st.content_length >= 0 and st.received > st.content_length:
            raise _StreamError(PROTOCOL_ERROR, "more DATA than content-length")
        cdef bint ended = flags & 0x1
        events.append((EV_DATA, sid, buf[start:start + size], length, ended))
        if ended:
            self._remote_end(sid, st)
            events.append((EV_END, sid))

    cdef _headers(self, int flags, uint32_t sid, bytes buf, Py_ssize_t at, Py_ssize_t length, list events):
        cdef const uchar* p = <const uchar*>PyBytes_AS_STRING(buf) + at
        cdef Py_ssize_t start = at, end = at + length, pad = 0
        if sid == 0 or not (sid & 1):
            raise ProtocolError(PROTOCOL_ERROR, "HEADERS on stream 0 or an even stream")
        if flags & 0x8:
            if length < 1:
                raise ProtocolError(FRAME_SIZE_ERROR, "bad HEADERS padding")
            pad = p[0]
            start += 1
        if flags & 0x20:
            start += 5
        end -= pad
        if end < start:
            raise ProtocolError(PROTOCOL_ERROR, "bad HEADERS padding")
        self.block_sid = sid
        self.block_flags = flags
        self.block = [buf[start:end]]
        self.block_frames = 0
        if flags & 0x4:
            self._end_block(events)

    cdef _end_block(self, list events):
        cdef uint32_t sid = self.block_sid
        cdef int flags = self.block_flags
        block = b"".join(self.block)
        self.block = None
        try:
            headers = self.decoder.decode(block)     # always: the dynamic table must stay in sync
        except _HeaderListTooLarge:
            raise ProtocolError(ENHANCE_YOUR_CALM, "header list over SETTINGS_MAX_HEADER_LIST_SIZE")
        except _HpackError as e:
            raise ProtocolError(COMPRESSION_ERROR, str(e))
        cdef bint ended = flags & 0x1
        cdef Stream st = self.streams.get(sid)
        if st is not None:
            # trailers: they end the stream
            if st.remote_ended:
                raise ProtocolError(STREAM_CLOSED, "HEADERS on a half-closed stream")
            if not ended:
                raise _StreamError(PROTOCOL_ERROR, "trailers without END_STREAM")
            events.append((EV_TRAILERS, sid, headers))
            self._remote_end(sid, st)
            events.append((EV_END, sid))
            return
        if sid <= self.highest_inbound_stream_id:
            # a stream that was reset (by either side) may still get its trailers in flight:
            # decoded above for the table, then ignored (RFC 9113 5.4.2)
            return
        if self.open_streams >= self.local_max_streams:
            raise ProtocolError(PROTOCOL_ERROR, "more streams than SETTINGS_MAX_CONCURRENT_STREAMS")
        self.highest_inbound_stream_id = sid
        st = Stream()
        st.send_window = self.remote_initial_window
        st.recv_window = self.local_initial_window      # ours once acknowledged (_settings)
        st.content_length = -1
        for name, value in headers:
            if name == b"content-length":
                if not value.isdigit() or (st.content_length >= 0 and int(value) != st.content_length):
                    self.streams[sid] = st
                    self.open_streams += 1
                    raise _StreamError(PROTOCOL_ERROR, "bad content-length")
                st.content_length = int(value)
        self.streams[sid] = st
        self.open_streams += 1
        events.append((EV_REQUEST, sid, headers, ended))
        if ended:
            if st.content_length > 0:
                raise _StreamError(PROTOCOL_ERROR, "content-length without DATA")
            st.remote_ended = True
            events.append((EV_END, sid))


def _closed(sid):
    return _StreamClosed(f"stream {sid} is closed")


class _StreamClosed(Exception):
    pass


StreamClosedError = _StreamClosed
