# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""HTTP/1.1 head parser, chunked decoder and head serializer for the proxy's hot path.

Strict by design (RFC 9110, RFC 9112): a proxy that accepts a message its upstream would frame
differently can be desynchronized (request smuggling), so every ambiguity is refused. The parser is
stateless: it is called with the whole buffered head each time bytes arrive, returns None while the
head is incomplete and raises HttpError as soon as the bytes seen so far are known to be invalid.

All per-byte and per-header work is C over the caller's buffer; Python objects are created only for
the fields of the result (method objects are shared, the forwarded header block is one memcpy'd
bytes object).

Choices where the RFCs allow several behaviours (each also noted at the code that implements it):
- any repeated Content-Length is refused, even with identical values (RFC 9110 8.6 allows either);
- Transfer-Encoding whose final coding is not chunked: 400 (RFC 9112 6.3); chunked as the final
  coding after other codings: 501 (RFC 9112 6.1), since the proxy does not decode them;
- methods must be registered ones (IANA HTTP Method Registry plus a few common extensions); other
  tokens get 501 (RFC 9110 9.1), PRI gets 400 (HTTP/2 preface, RFC 9113 3.4);
- only HTTP/1.0 and HTTP/1.1 are accepted; a well-formed other version gets 505, a malformed one 400;
- request-target: origin-form, absolute-form (http/https, no userinfo), authority-form for CONNECT
  only, asterisk-form for OPTIONS only (RFC 9112 3.2);
- `upgrade` is set only when the client also lists "upgrade" in Connection on HTTP/1.1
  (RFC 9110 7.8); the Upgrade header is dropped from `headers` in any case (hop-by-hop).
"""

cimport cython
from cpython.bytes cimport (PyBytes_FromStringAndSize, PyBytes_AS_STRING, PyBytes_GET_SIZE,
                            PyBytes_CheckExact)
from cpython.bytearray cimport PyByteArray_CheckExact, PyByteArray_AS_STRING, PyByteArray_GET_SIZE
from cpython.buffer cimport PyObject_GetBuffer, PyBuffer_Release, PyBUF_SIMPLE
from cpython.object cimport PyObject
from cpython.tuple cimport PyTuple_GET_SIZE
from libc.string cimport memcpy, memchr
from libc.limits cimport LLONG_MAX

from proxy._fastpath.bytewriter cimport put_dec

cdef extern from "Python.h":
    # Raw-pointer variants: the chunked decoder over-allocates its output once and shrinks it.
    PyObject* _bytes_new_raw "PyBytes_FromStringAndSize"(const char* v, Py_ssize_t n)
    char* _bytes_data_raw "PyBytes_AS_STRING"(PyObject* o) noexcept
    int _PyBytes_Resize(PyObject** o, Py_ssize_t n)
    void Py_XDECREF(PyObject* o)

cdef extern from *:
    """
    #include <stdint.h>
    #include <string.h>
    /* True if one of the 8 bytes at p is a CTL (< 0x20) or DEL (0x7F); obs-text (>= 0x80) is not.
       Classic SWAR "has byte less than n" test; exact for the any-byte question. */
    static inline int cyv_has_ctl8(const unsigned char *p) {
        uint64_t x, y;
        memcpy(&x, p, 8);
        y = x ^ 0x7F7F7F7F7F7F7F7FULL;
        return ((((x - 0x2020202020202020ULL) & ~x) | ((y - 0x0101010101010101ULL) & ~y))
                & 0x8080808080808080ULL) != 0;
    }
    """
    bint cyv_has_ctl8(const unsigned char* p) noexcept nogil

ctypedef unsigned char uchar


# ---------------------------------------------------------------------------------------------
# errors

class HttpError(Exception):
    """Invalid HTTP/1 input. `status` is the status to answer with (400, 414, 431, 501, 505 for
    requests; 502 for every response error), `reason` a short text for logs."""

    def __init__(self, status, reason):
        Exception.__init__(self, status, reason)
        self.status = status
        self.reason = reason

    def __str__(self):
        return f"{self.status} {self.reason}"


cdef object _HttpError = HttpError


cdef int _raise(int status, const char* reason) except -1:
    raise _HttpError(status, reason.decode("ascii"))


# ---------------------------------------------------------------------------------------------
# character tables (filled once at import)

cdef enum:
    CR = 13
    LF = 10
    SP = 32
    HT = 9
    COLON = 58

cdef enum:
    C_TCHAR = 1      # token characters (RFC 9110 5.6.2)
    C_VCHAR = 2      # 0x21..0x7E: what a request-target may contain
    C_REGNAME = 4    # reg-name/IPv4 characters except '%' (RFC 3986 3.2.2), ',' deliberately excluded
    C_FIELD = 8      # field-value / reason-phrase bytes: HTAB, SP, VCHAR, obs-text (RFC 9110 5.5)
    C_QDTEXT = 16    # qdtext (RFC 9110 5.6.4)
    C_SCHEME = 32    # ALPHA / DIGIT / "+" / "-" / "." (RFC 3986 3.1)
    C_IPLIT = 64     # inside [ ]: HEXDIG ":" "." (IPv6 / IPv4-mapped)

cdef uchar CLS[256]
cdef uchar HEXV[256]      # hex digit value, 255 if not a hex digit
cdef uchar LOWER[256]


cdef void _init_tables():
    cdef int c
    for c in range(256):
        CLS[c] = 0
        HEXV[c] = 255
        LOWER[c] = c + 32 if 0x41 <= c <= 0x5A else c
        if 0x21 <= c <= 0x7E:
            CLS[c] |= C_VCHAR | C_FIELD
        if c >= 0x80 or c == SP or c == HT:
            CLS[c] |= C_FIELD
        if c == HT or c == SP or c == 0x21 or 0x23 <= c <= 0x5B or 0x5D <= c <= 0x7E or c >= 0x80:
            CLS[c] |= C_QDTEXT
    for c in b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ":
        CLS[c] |= C_TCHAR
    for c in b"-._~!$&'()*+;=0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ":
        CLS[c] |= C_REGNAME
    for c in b"+-.0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ":
        CLS[c] |= C_SCHEME
    for c in b":.0123456789abcdefABCDEF":
        CLS[c] |= C_IPLIT
    for c in range(10):
        HEXV[0x30 + c] = c
    for c in range(6):
        HEXV[0x61 + c] = 10 + c
        HEXV[0x41 + c] = 10 + c


_init_tables()


cdef inline bint _ci_eq(const uchar* s, const char* lit, Py_ssize_t n) noexcept nogil:
    # `lit` is lower-case letters, digits and '-' only; `s` holds tchar only (validated), and for
    # tchar `c | 0x20` maps onto a letter only from the same letter in either case.
    cdef Py_ssize_t k
    for k in range(n):
        if (s[k] | 0x20) != <uchar>lit[k]:
            return False
    return True


cdef inline bint _lower_eq(const uchar* a, const uchar* b, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t k
    for k in range(n):
        if LOWER[a[k]] != LOWER[b[k]]:
            return False
    return True


# ---------------------------------------------------------------------------------------------
# methods: registered methods only (IANA HTTP Method Registry + common extensions), in order of
# frequency so that the linear lookup usually stops at the first entries.

_METHOD_LIST = (
    b"GET", b"POST", b"PUT", b"HEAD", b"DELETE", b"OPTIONS", b"PATCH", b"CONNECT", b"TRACE",
    b"ACL", b"BASELINE-CONTROL", b"BIND", b"CHECKIN", b"CHECKOUT", b"COPY", b"LABEL", b"LINK",
    b"LOCK", b"MERGE", b"MKACTIVITY", b"MKCALENDAR", b"MKCOL", b"MKREDIRECTREF", b"MKWORKSPACE",
    b"MOVE", b"ORDERPATCH", b"PRI", b"PROPFIND", b"PROPPATCH", b"QUERY", b"REBIND", b"REPORT",
    b"SEARCH", b"UNBIND", b"UNCHECKOUT", b"UNLINK", b"UNLOCK", b"UPDATE", b"UPDATEREDIRECTREF",
    b"VERSION-CONTROL",
    # not in the IANA registry but widely deployed (llhttp accepts them too)
    b"PURGE", b"M-SEARCH", b"NOTIFY", b"SUBSCRIBE", b"UNSUBSCRIBE", b"SOURCE",
)
METHODS = frozenset(_METHOD_LIST)

cdef enum:
    M_GET = 0
    M_POST = 1
    M_PUT = 2
    M_HEAD = 3
    M_DELETE = 4
    M_OPTIONS = 5
    M_PATCH = 6
    M_CONNECT = 7
    MAX_METHODS = 64

cdef tuple _METHOD_OBJS = _METHOD_LIST
cdef const char* _MNAME[MAX_METHODS]
cdef Py_ssize_t _MLEN[MAX_METHODS]
cdef int _NMETHODS = PyTuple_GET_SIZE(_METHOD_OBJS)
cdef int M_PRI = _METHOD_LIST.index(b"PRI")


cdef void _init_methods():
    cdef int k
    cdef bytes m
    for k in range(_NMETHODS):
        m = _METHOD_OBJS[k]
        _MNAME[k] = PyBytes_AS_STRING(m)
        _MLEN[k] = PyBytes_GET_SIZE(m)


_init_methods()


cdef inline int _method_index(const uchar* s, Py_ssize_t n) noexcept nogil:
    cdef int k
    cdef Py_ssize_t j
    cdef const char* m
    for k in range(_NMETHODS):
        if _MLEN[k] != n:
            continue
        m = _MNAME[k]
        j = 0
        while j < n and s[j] == <uchar>m[j]:
            j += 1
        if j == n:
            return k
    return -1


# ---------------------------------------------------------------------------------------------
# parse state (one C struct on the stack per call; no allocation)

cdef enum:
    MAX_HEADERS = 100
    MAX_REQUEST_LINE = 16384
    MAX_CONN_TOKENS = 32
    N_CLASSES = 16

# header classes
cdef enum:
    H_OTHER = 0
    H_HOST = 1
    H_CONTENT_LENGTH = 2
    H_TRANSFER_ENCODING = 3
    H_CONNECTION = 4
    H_KEEP_ALIVE = 5
    H_PROXY_CONNECTION = 6
    H_TE = 7
    H_UPGRADE = 8
    H_EXPECT = 9
    H_XFF = 10
    H_XFP = 11
    H_XRID = 12
    H_ENVOY = 13
    H_SERVER = 14
    H_FRAMING_LOOKALIKE = 15

# headers never forwarded from a request (hop-by-hop, framing, or re-generated by the proxy)
cdef unsigned int REQ_DROP = ((1 << H_HOST) | (1 << H_CONTENT_LENGTH) | (1 << H_TRANSFER_ENCODING)
                              | (1 << H_CONNECTION) | (1 << H_KEEP_ALIVE) | (1 << H_PROXY_CONNECTION)
                              | (1 << H_TE) | (1 << H_UPGRADE) | (1 << H_EXPECT) | (1 << H_XFF)
                              | (1 << H_XFP) | (1 << H_XRID))
cdef unsigned int RESP_DROP = ((1 << H_CONTENT_LENGTH) | (1 << H_TRANSFER_ENCODING)
                               | (1 << H_CONNECTION) | (1 << H_KEEP_ALIVE)
                               | (1 << H_PROXY_CONNECTION) | (1 << H_TE) | (1 << H_UPGRADE)
                               | (1 << H_SERVER))

# request-target forms (RFC 9112 3.2)
cdef enum:
    T_ORIGIN = 0
    T_ABSOLUTE = 1
    T_AUTHORITY = 2
    T_ASTERISK = 3

ctypedef struct Hdr:
    Py_ssize_t start        # line start == name start
    Py_ssize_t name_len
    Py_ssize_t vstart       # value, OWS-trimmed
    Py_ssize_t vend
    Py_ssize_t end          # after the LF
    int cls
    int keep

ctypedef struct Tok:
    Py_ssize_t start
    Py_ssize_t len

ctypedef struct St:
    int err
    const char* reason
    bint response
    unsigned int drop
    int version
    # request line
    Py_ssize_t method_start
    Py_ssize_t method_len
    int method_idx
    Py_ssize_t target_start
    Py_ssize_t target_len
    int form
    Py_ssize_t auth_start
    Py_ssize_t auth_len
    Py_ssize_t apath_start
    Py_ssize_t apath_len
    # status line
    int status
    Py_ssize_t reason_start
    Py_ssize_t reason_len
    # header section
    Py_ssize_t hdr_start
    Py_ssize_t head_end
    int nhdrs
    int count[N_CLASSES]
    int first[N_CLASSES]
    long long content_length
    bint te_chunked
    bint te_last_chunked
    bint te_other
    bint conn_close
    bint conn_keep_alive
    bint conn_upgrade
    bint expect_continue
    int ntok
    Tok tok[MAX_CONN_TOKENS]
    Hdr hdrs[MAX_HEADERS]


cdef inline void _st_init(St* st, bint response, unsigned int drop) noexcept nogil:
    cdef int k
    st.err = 0
    st.reason = NULL
    st.response = response
    st.drop = drop
    st.version = 0
    st.method_idx = -1
    st.form = T_ORIGIN
    st.nhdrs = 0
    for k in range(N_CLASSES):
        st.count[k] = 0
        st.first[k] = -1
    st.content_length = -1
    st.te_chunked = False
    st.te_last_chunked = False
    st.te_other = False
    st.conn_close = False
    st.conn_keep_alive = False
    st.conn_upgrade = False
    st.expect_continue = False
    st.ntok = 0


cdef inline int _fail(St* st, int status, const char* reason) noexcept nogil:
    st.err = status
    st.reason = reason
    return -1


cdef inline int _out_of_data(St* st, Py_ssize_t lim, Py_ssize_t n, int status,
                             const char* reason) noexcept nogil:
    # Scanning stopped at `lim`: a size limit if more bytes were available, else wait for more.
    if lim < n:
        return _fail(st, status, reason)
    return 0


# ---------------------------------------------------------------------------------------------
# authority / host validation

cdef bint _valid_authority(const uchar* s, Py_ssize_t n, bint need_port) noexcept nogil:
    # uri-host [ ":" port ] (RFC 9110 4.2.1, 7.2; RFC 3986 3.2.2-3.2.3). No userinfo: RFC 9110
    # 4.2.4 says to treat it as an error. ',' is excluded from reg-name so that a Host value can
    # never look like a list of hosts to some other hop.
    cdef Py_ssize_t i = 0, ndig
    if n == 0:
        return False
    if s[0] == 0x5B:   # '[' IP-literal
        i = 1
        while i < n and (CLS[s[i]] & C_IPLIT):
            i += 1
        if i >= n or s[i] != 0x5D or i == 1:
            return False
        i += 1
    else:
        while i < n:
            if CLS[s[i]] & C_REGNAME:
                i += 1
            elif s[i] == 0x25:   # pct-encoded
                if i + 2 >= n or HEXV[s[i + 1]] == 255 or HEXV[s[i + 2]] == 255:
                    return False
                i += 3
            else:
                break
        if i == 0:
            return False
    if i == n:
        return not need_port
    if s[i] != COLON:
        return False
    i += 1
    ndig = 0
    while i < n and 0x30 <= s[i] <= 0x39:
        i += 1
        ndig += 1
    if i != n or ndig > 5 or (need_port and ndig == 0):
        return False
    return True


cdef int _target_form(const uchar* p, St* st) noexcept nogil:
    # RFC 9112 3.2: the four forms of request-target, each only where it is allowed.
    cdef const uchar* t = p + st.target_start
    cdef Py_ssize_t n = st.target_len, j, a, b
    for j in range(n):
        if t[j] == 0x23:
            # '#': a request-target has no fragment (RFC 9112 3.2); Envoy refuses one
            # (runtime http_reject_path_with_fragment, on by default) rather than guess where
            # the path ends ("http://a.b#@evil/x")
            return _fail(st, 400, "fragment in request-target")
    if t[0] == 0x2F:   # '/': origin-form
        if st.method_idx == M_CONNECT:
            return _fail(st, 400, "CONNECT requires an authority-form target")
        st.form = T_ORIGIN
        return 1
    if n == 1 and t[0] == 0x2A:   # '*'
        if st.method_idx != M_OPTIONS:
            return _fail(st, 400, "asterisk-form target is only allowed for OPTIONS")
        st.form = T_ASTERISK
        return 1
    if st.method_idx == M_CONNECT:
        # RFC 9112 3.2.3: authority-form = uri-host ":" port
        if not _valid_authority(t, n, True):
            return _fail(st, 400, "invalid authority-form target")
        st.form = T_AUTHORITY
        return 1
    # absolute-form (RFC 9112 3.2.2): scheme "://" authority path-abempty [ "?" query ]
    j = 0
    while j < n and (CLS[t[j]] & C_SCHEME):
        j += 1
    if j == 0 or j + 3 > n or t[j] != COLON or t[j + 1] != 0x2F or t[j + 2] != 0x2F:
        return _fail(st, 400, "invalid request-target")
    if not ((j == 4 and _ci_eq(t, "http", 4)) or (j == 5 and _ci_eq(t, "https", 5))):
        return _fail(st, 400, "unsupported scheme in absolute-form target")
    a = j + 3
    b = a
    while b < n and t[b] != 0x2F and t[b] != 0x3F and t[b] != 0x23:
        if t[b] == 0x40:   # '@'
            return _fail(st, 400, "userinfo in request-target")
        b += 1
    # RFC 9110 4.2.1: an http(s) URI with an empty host is invalid
    if not _valid_authority(t + a, b - a, False):
        return _fail(st, 400, "invalid authority in absolute-form target")
    st.form = T_ABSOLUTE
    st.auth_start = st.target_start + a
    st.auth_len = b - a
    st.apath_start = st.target_start + b
    st.apath_len = n - b
    return 1


# ---------------------------------------------------------------------------------------------
# start lines

cdef int _request_line(const uchar* p, Py_ssize_t n, St* st) noexcept nogil:
    # The request line, together with any leading empty lines, may be at most MAX_REQUEST_LINE
    # bytes before its CRLF (414 beyond).
    cdef Py_ssize_t lim = n if n < MAX_REQUEST_LINE + 2 else MAX_REQUEST_LINE + 2
    cdef Py_ssize_t i = 0, s
    cdef uchar c
    # RFC 9112 2.2: a server SHOULD ignore at least one empty line before the request-line.
    while True:
        if i >= lim:
            return _out_of_data(st, lim, n, 414, "request line too long")
        c = p[i]
        if c == CR:
            if i + 1 >= lim:
                return _out_of_data(st, lim, n, 414, "request line too long")
            if p[i + 1] != LF:
                return _fail(st, 400, "bare CR")
            i += 2
        elif c == LF:
            return _fail(st, 400, "bare LF")
        else:
            break
    # method = token (RFC 9110 9.1), followed by exactly one SP (RFC 9112 3)
    s = i
    while i < lim and (CLS[p[i]] & C_TCHAR):
        i += 1
    if i >= lim:
        return _out_of_data(st, lim, n, 414, "request line too long")
    if p[i] != SP or i == s:
        return _fail(st, 400, "invalid method")
    st.method_start = s
    st.method_len = i - s
    st.method_idx = _method_index(p + s, i - s)
    if st.method_idx < 0:
        # RFC 9110 9.1: an unrecognized method SHOULD get 501
        return _fail(st, 501, "method not implemented")
    if st.method_idx == M_PRI:
        return _fail(st, 400, "PRI is the HTTP/2 connection preface")
    i += 1
    # request-target: visible ASCII only (RFC 9112 3.2; RFC 3986 has no SP, CTL or non-ASCII)
    s = i
    while i < lim and (CLS[p[i]] & C_VCHAR):
        i += 1
    if i >= lim:
        return _out_of_data(st, lim, n, 414, "request line too long")
    c = p[i]
    if c != SP:
        if c == CR:
            if i == s:
                return _fail(st, 400, "empty request-target")
            # HTTP/0.9-style request line without a version (RFC 9112 2.3, 3)
            return _fail(st, 400, "missing HTTP version")
        if c == LF:
            return _fail(st, 400, "bare LF")
        if c >= 0x80:
            return _fail(st, 400, "non-ASCII byte in request-target")
        return _fail(st, 400, "control character in request-target")
    if i == s:
        return _fail(st, 400, "more than one SP after method")
    st.target_start = s
    st.target_len = i - s
    if _target_form(p, st) < 0:
        return -1
    i += 1
    # HTTP-version = "HTTP/" DIGIT "." DIGIT, case-sensitive (RFC 9112 2.3)
    return _http_version(p, i, n, lim, st, False)


cdef int _http_version(const uchar* p, Py_ssize_t i, Py_ssize_t n, Py_ssize_t lim, St* st,
                       bint status_line) noexcept nogil:
    # Parses "HTTP/1.0" or "HTTP/1.1" at p[i]; for a request line also the CRLF after it.
    # Returns the index after the version (status line) or after the CRLF (request line),
    # 0 when more bytes are needed, -1 on error. Prefix-aware: bad bytes fail at once.
    cdef const char* name = "HTTP/"
    cdef int k
    cdef uchar c
    for k in range(5):
        if i >= lim:
            return _out_of_data(st, lim, n, 414, "request line too long")
        if p[i] != <uchar>name[k]:
            if p[i] == SP and not status_line:
                return _fail(st, 400, "more than one SP before HTTP version")
            return _fail(st, 400, "malformed HTTP version")
        i += 1
    if i >= lim:
        return _out_of_data(st, lim, n, 414, "request line too long")
    c = p[i]
    if c < 0x30 or c > 0x39:
        return _fail(st, 400, "malformed HTTP version")
    if c != 0x31:
        return _fail(st, 505, "HTTP version not supported")
    i += 1
    if i >= lim:
        return _out_of_data(st, lim, n, 414, "request line too long")
    if p[i] != 0x2E:
        return _fail(st, 400, "malformed HTTP version")
    i += 1
    if i >= lim:
        return _out_of_data(st, lim, n, 414, "request line too long")
    c = p[i]
    if c < 0x30 or c > 0x39:
        return _fail(st, 400, "malformed HTTP version")
    if c > 0x31:
        # RFC 9110 6.2 would let a server treat 1.2+ as 1.1; a proxy must not guess framing rules.
        return _fail(st, 505, "HTTP version not supported")
    st.version = 10 + (c - 0x30)
    i += 1
    if status_line:
        return i
    if i >= lim:
        return _out_of_data(st, lim, n, 414, "request line too long")
    c = p[i]
    if c != CR:
        if c == LF:
            return _fail(st, 400, "bare LF")
        if c == SP or c == HT:
            return _fail(st, 400, "whitespace after HTTP version")
        return _fail(st, 400, "malformed HTTP version")
    if i > MAX_REQUEST_LINE:
        return _fail(st, 414, "request line too long")
    if i + 1 >= lim:
        return _out_of_data(st, lim, n, 414, "request line too long")
    if p[i + 1] != LF:
        return _fail(st, 400, "bare CR")
    return i + 2


cdef int _status_line(const uchar* p, Py_ssize_t n, St* st) noexcept nogil:
    # status-line = HTTP-version SP status-code SP [ reason-phrase ] CRLF (RFC 9112 4).
    # A missing SP after the code (no reason at all) is tolerated: it cannot change framing.
    cdef Py_ssize_t lim = n if n < MAX_REQUEST_LINE + 2 else MAX_REQUEST_LINE + 2
    cdef Py_ssize_t i, s
    cdef int k, code = 0
    cdef uchar c
    cdef int r = _http_version(p, 0, n, lim, st, True)
    if r <= 0:
        return r
    i = r
    if i >= lim:
        return _out_of_data(st, lim, n, 502, "status line too long")
    if p[i] != SP:
        return _fail(st, 502, "malformed status line")
    i += 1
    for k in range(3):
        if i >= lim:
            return _out_of_data(st, lim, n, 502, "status line too long")
        c = p[i]
        if c < 0x30 or c > 0x39:
            return _fail(st, 502, "malformed status code")
        code = code * 10 + (c - 0x30)
        i += 1
    # RFC 9110 15: values outside 100..599 are invalid
    if code < 100 or code > 599:
        return _fail(st, 502, "status code out of range")
    st.status = code
    if i >= lim:
        return _out_of_data(st, lim, n, 502, "status line too long")
    c = p[i]
    s = i
    if c == SP:
        i += 1
        s = i
        while i < lim and (CLS[p[i]] & C_FIELD):
            i += 1
        if i >= lim:
            return _out_of_data(st, lim, n, 502, "status line too long")
        c = p[i]
    if c != CR:
        if c == LF:
            return _fail(st, 502, "bare LF")
        return _fail(st, 502, "invalid character in status line")
    st.reason_start = s
    st.reason_len = i - s
    if i > MAX_REQUEST_LINE:
        return _fail(st, 502, "status line too long")
    if i + 1 >= lim:
        return _out_of_data(st, lim, n, 502, "status line too long")
    if p[i + 1] != LF:
        return _fail(st, 502, "bare CR")
    return i + 2


# ---------------------------------------------------------------------------------------------
# header fields

cdef bint _underscore_variant(const uchar* s, const char* lit, Py_ssize_t n) noexcept nogil:
    # "Content_Length" / "Transfer_Encoding": valid tokens, but servers that map '_' to '-'
    # (CGI-style environments) would take them as framing headers the proxy did not see.
    cdef Py_ssize_t k
    for k in range(n):
        if (s[k] | 0x20) != <uchar>lit[k] and not (lit[k] == b'-' and s[k] == b'_'):
            return False
    return True


cdef inline int _classify(const uchar* s, Py_ssize_t n) noexcept nogil:
    # length first, then the first letter, then the full case-insensitive compare
    cdef uchar c0 = s[0] | 0x20
    if n == 4:
        if c0 == b'h' and _ci_eq(s, "host", 4):
            return H_HOST
    elif n == 2:
        if c0 == b't' and _ci_eq(s, "te", 2):
            return H_TE
    elif n == 6:
        if c0 == b'e' and _ci_eq(s, "expect", 6):
            return H_EXPECT
        if c0 == b's' and _ci_eq(s, "server", 6):
            return H_SERVER
    elif n == 7:
        if c0 == b'u' and _ci_eq(s, "upgrade", 7):
            return H_UPGRADE
    elif n == 10:
        if c0 == b'c' and _ci_eq(s, "connection", 10):
            return H_CONNECTION
        if c0 == b'k' and _ci_eq(s, "keep-alive", 10):
            return H_KEEP_ALIVE
    elif n == 12:
        if c0 == b'x' and _ci_eq(s, "x-request-id", 12):
            return H_XRID
    elif n == 14:
        if c0 == b'c':
            if _ci_eq(s, "content-length", 14):
                return H_CONTENT_LENGTH
            if _underscore_variant(s, "content-length", 14):
                return H_FRAMING_LOOKALIKE
    elif n == 15:
        if c0 == b'x' and _ci_eq(s, "x-forwarded-for", 15):
            return H_XFF
    elif n == 16:
        if c0 == b'p' and _ci_eq(s, "proxy-connection", 16):
            return H_PROXY_CONNECTION
    elif n == 17:
        if c0 == b't':
            if _ci_eq(s, "transfer-encoding", 17):
                return H_TRANSFER_ENCODING
            if _underscore_variant(s, "transfer-encoding", 17):
                return H_FRAMING_LOOKALIKE
        if c0 == b'x' and _ci_eq(s, "x-forwarded-proto", 17):
            return H_XFP
    if n > 8 and c0 == b'x' and _ci_eq(s, "x-envoy-", 8):
        return H_ENVOY
    if n >= 13 and (c0 == b't' or c0 == b'c') and (_squashed_eq(s, n, "transferencoding", 16)
                                                  or _squashed_eq(s, n, "contentlength", 13)):
        # "Transfer---Encoding", "TransferEncoding", "content__length"...: look-alikes that a
        # server normalizing '-'/'_' would take as framing (desync-guardian Ambiguous 39, 40)
        return H_FRAMING_LOOKALIKE
    return H_OTHER


cdef bint _squashed_eq(const uchar* s, Py_ssize_t n, const char* lit, Py_ssize_t m) noexcept nogil:
    # case-insensitive compare of the name without its '-' and '_' characters
    cdef Py_ssize_t i, k = 0
    for i in range(n):
        if s[i] == b'-' or s[i] == b'_':
            continue
        if k >= m or (s[i] | 0x20) != <uchar>lit[k]:
            return False
        k += 1
    return k == m


cdef int _content_length(const uchar* p, Hdr* h, St* st) noexcept nogil:
    # Content-Length = 1*DIGIT (RFC 9110 8.6): no sign, no inner spaces, no list. A repeated
    # Content-Length is refused even when the values are identical (8.6 allows either; one
    # rule is simpler to reason about and the corpus treats "1000,1000" as severe).
    cdef Py_ssize_t i
    cdef long long v = 0
    cdef int d
    if st.count[H_TRANSFER_ENCODING]:
        return _fail(st, 400, "content-length and transfer-encoding together")
    if st.count[H_CONTENT_LENGTH] > 1:
        return _fail(st, 400, "more than one content-length")
    if h.vstart == h.vend:
        return _fail(st, 400, "empty content-length")
    for i in range(h.vstart, h.vend):
        d = <int>p[i] - 0x30
        if d < 0 or d > 9:
            return _fail(st, 400, "invalid content-length")
        if v > (LLONG_MAX - d) // 10:
            return _fail(st, 400, "content-length overflow")
        v = v * 10 + d
    st.content_length = v
    return 1


cdef int _transfer_encoding(const uchar* p, Hdr* h, St* st) noexcept nogil:
    # Transfer-Encoding = #transfer-coding (RFC 9112 6.1), codings case-insensitive.
    cdef Py_ssize_t i = h.vstart, j, a, b, k
    cdef int ncod = 0
    if st.count[H_CONTENT_LENGTH]:
        # RFC 9112 6.1/6.3: both present is a smuggling vector; refuse rather than pick one
        return _fail(st, 400, "content-length and transfer-encoding together")
    if st.version == 10:
        # RFC 9112 6.1: a 1.0 message with Transfer-Encoding has faulty framing
        return _fail(st, 400, "transfer-encoding in an HTTP/1.0 message")
    while i <= h.vend:
        j = i
        while j < h.vend and p[j] != 0x2C:
            j += 1
        a = i
        b = j
        while a < b and (p[a] == SP or p[a] == HT):
            a += 1
        while b > a and (p[b - 1] == SP or p[b - 1] == HT):
            b -= 1
        if a < b:   # RFC 9110 5.6.1: empty list elements are ignored
            for k in range(a, b):
                if not (CLS[p[k]] & C_TCHAR):
                    if p[k] == 0x3B:
                        # no coding the proxy supports takes parameters; ignoring them is how
                        # two parsers come to disagree
                        return _fail(st, 400, "transfer-coding parameters are not supported")
                    return _fail(st, 400, "invalid transfer-encoding")
            ncod += 1
            if b - a == 7 and _ci_eq(p + a, "chunked", 7):
                if st.te_chunked:
                    # RFC 9112 6.1: chunked MUST NOT be applied more than once
                    return _fail(st, 400, "chunked applied more than once")
                st.te_chunked = True
                st.te_last_chunked = True
            else:
                if st.te_chunked:
                    # RFC 9112 6.3: chunked must be the final coding (of a request)
                    return _fail(st, 400, "chunked is not the final transfer-coding")
                if st.response:
                    # the proxy neither decodes nor forwards other codings
                    return _fail(st, 502, "unsupported transfer-coding")
                st.te_other = True
                st.te_last_chunked = False
        i = j + 1
    if ncod == 0:
        return _fail(st, 400, "empty transfer-encoding")
    return 1


cdef int _connection(const uchar* p, Hdr* h, St* st) noexcept nogil:
    # Connection = #connection-option, connection-option = token (RFC 9110 7.6.1).
    cdef Py_ssize_t i = h.vstart, j, a, b, k, ln
    cdef int cls
    while i <= h.vend:
        j = i
        while j < h.vend and p[j] != 0x2C:
            j += 1
        a = i
        b = j
        while a < b and (p[a] == SP or p[a] == HT):
            a += 1
        while b > a and (p[b - 1] == SP or p[b - 1] == HT):
            b -= 1
        if a < b:
            for k in range(a, b):
                if not (CLS[p[k]] & C_TCHAR):
                    return _fail(st, 400, "invalid connection option")
            ln = b - a
            if ln == 5 and _ci_eq(p + a, "close", 5):
                st.conn_close = True
            elif ln == 10 and _ci_eq(p + a, "keep-alive", 10):
                st.conn_keep_alive = True
            elif ln == 7 and _ci_eq(p + a, "upgrade", 7):
                st.conn_upgrade = True
            else:
                cls = _classify(p + a, ln)
                if not ((st.drop >> cls) & 1):
                    # a header the client declares hop-by-hop: not forwarded (RFC 9110 7.6.1)
                    if st.ntok >= MAX_CONN_TOKENS:
                        return _fail(st, 400, "too many connection options")
                    st.tok[st.ntok].start = a
                    st.tok[st.ntok].len = ln
                    st.ntok += 1
        i = j + 1
    return 1


cdef int _header_semantics(const uchar* p, Hdr* h, St* st) noexcept nogil:
    cdef int cls = h.cls
    if cls == H_CONTENT_LENGTH:
        return _content_length(p, h, st)
    if cls == H_TRANSFER_ENCODING:
        return _transfer_encoding(p, h, st)
    if cls == H_CONNECTION:
        return _connection(p, h, st)
    if cls == H_FRAMING_LOOKALIKE:
        return _fail(st, 400, "look-alike of a framing header (extra or missing '-', or '_')")
    if st.response:
        return 1
    if cls == H_HOST:
        # RFC 9112 3.2: more than one Host, or an invalid Host value, gets 400
        if st.count[H_HOST] > 1:
            return _fail(st, 400, "more than one host header")
        if h.vend > h.vstart and not _valid_authority(p + h.vstart, h.vend - h.vstart, False):
            return _fail(st, 400, "invalid host header")
    elif cls == H_EXPECT:
        # RFC 9110 10.1.1: 100-continue is ignored in HTTP/1.0 requests
        if (st.version == 11 and h.vend - h.vstart == 12
                and _ci_eq(p + h.vstart, "100-continue", 12)):
            st.expect_continue = True
    return 1


cdef int _header_section(const uchar* p, Py_ssize_t i, Py_ssize_t n, Py_ssize_t max_bytes,
                         St* st) noexcept nogil:
    # field-line = field-name ":" OWS field-value OWS CRLF (RFC 9112 5). Each complete line is
    # validated and interpreted at once so that errors surface before the head is complete.
    cdef Py_ssize_t lim = n
    cdef int lim_status = 502 if st.response else 431
    cdef Py_ssize_t line, name_end, vs, ve
    cdef uchar c
    cdef Hdr* h
    cdef int cls
    if max_bytes < n - i:
        lim = i + (max_bytes if max_bytes > 0 else 0)
    while True:
        if i >= lim:
            return _out_of_data(st, lim, n, lim_status, "header section too large")
        c = p[i]
        if c == CR:
            if i + 1 >= lim:
                return _out_of_data(st, lim, n, lim_status, "header section too large")
            if p[i + 1] != LF:
                return _fail(st, 400, "bare CR")
            st.head_end = i + 2
            return 1
        if st.nhdrs >= MAX_HEADERS:
            return _fail(st, lim_status, "too many header fields")
        line = i
        while i < lim and (CLS[p[i]] & C_TCHAR):
            i += 1
        if i >= lim:
            return _out_of_data(st, lim, n, lim_status, "header section too large")
        c = p[i]
        if c != COLON:
            if i == line:
                if c == SP or c == HT:
                    # RFC 9112 5.2 (obs-fold) and 2.2 (whitespace before the first field)
                    return _fail(st, 400, "obsolete line folding or leading whitespace")
                if c == LF:
                    return _fail(st, 400, "bare LF")
            elif c == SP or c == HT:
                # RFC 9112 5.1: no whitespace between field name and colon; MUST reject (400)
                return _fail(st, 400, "whitespace between header name and colon")
            elif c == CR or c == LF:
                return _fail(st, 400, "header line without colon")
            return _fail(st, 400, "invalid character in header name")
        if i == line:
            return _fail(st, 400, "empty header name")
        name_end = i
        i += 1
        while i < lim and (p[i] == SP or p[i] == HT):
            i += 1
        vs = i
        # field-value: VCHAR / obs-text / SP / HTAB; 8 bytes at a time while no CTL is in sight
        while True:
            while i + 8 <= lim and not cyv_has_ctl8(p + i):
                i += 8
            if i >= lim:
                return _out_of_data(st, lim, n, lim_status, "header section too large")
            c = p[i]
            if (c >= 0x20 and c != 0x7F) or c == HT:
                i += 1
                continue
            break
        if c != CR:
            # RFC 9110 5.5: CR, LF and NUL are invalid in values; other CTLs are not field-vchar
            if c == LF:
                return _fail(st, 400, "bare LF")
            return _fail(st, 400, "control character in header value")
        if i + 1 >= lim:
            return _out_of_data(st, lim, n, lim_status, "header section too large")
        if p[i + 1] != LF:
            # RFC 9112 2.2: a bare CR is invalid
            return _fail(st, 400, "bare CR")
        ve = i
        while ve > vs and (p[ve - 1] == SP or p[ve - 1] == HT):
            ve -= 1
        i += 2
        h = &st.hdrs[st.nhdrs]
        h.start = line
        h.name_len = name_end - line
        h.vstart = vs
        h.vend = ve
        h.end = i
        cls = _classify(p + line, name_end - line)
        h.cls = cls
        st.count[cls] += 1
        if st.first[cls] < 0:
            st.first[cls] = st.nhdrs
        st.nhdrs += 1
        if cls != H_OTHER and _header_semantics(p, h, st) < 0:
            return -1


cdef int _parse_request_c(const uchar* p, Py_ssize_t n, Py_ssize_t max_hdr, St* st) noexcept nogil:
    cdef int r = _request_line(p, n, st)
    if r <= 0:
        return r
    st.hdr_start = r
    r = _header_section(p, st.hdr_start, n, max_hdr, st)
    if r <= 0:
        return r
    if st.version == 11 and st.count[H_HOST] == 0:
        # RFC 9112 3.2: a server MUST respond 400 to an HTTP/1.1 request without Host
        return _fail(st, 400, "missing host header")
    if st.count[H_TRANSFER_ENCODING]:
        if not st.te_last_chunked:
            # RFC 9112 6.3: a request whose final coding is not chunked MUST get 400
            return _fail(st, 400, "chunked is not the final transfer-coding")
        if st.te_other:
            # RFC 9112 6.1: a coding the proxy does not implement SHOULD get 501
            return _fail(st, 501, "unsupported transfer-coding")
    if st.method_idx == M_CONNECT and (st.te_chunked or st.content_length > 0):
        # RFC 9110 9.3.6: CONNECT has no content; bytes after the head belong to the tunnel
        return _fail(st, 400, "CONNECT request with content")
    return 1


cdef int _parse_response_c(const uchar* p, Py_ssize_t n, Py_ssize_t max_hdr, St* st) noexcept nogil:
    cdef int r = _status_line(p, n, st)
    if r <= 0:
        return r
    st.hdr_start = r
    return _header_section(p, st.hdr_start, n, max_hdr, st)


# ---------------------------------------------------------------------------------------------
# building the result objects

cdef bytes _EMPTY = b""
cdef bytes _SLASH = b"/"


cdef inline bytes _slice(const uchar* p, Py_ssize_t a, Py_ssize_t b):
    if b <= a:
        return _EMPTY
    return PyBytes_FromStringAndSize(<char*>p + a, b - a)


cdef bint _named_by_connection(const uchar* p, Hdr* h, St* st) noexcept nogil:
    cdef int k
    for k in range(st.ntok):
        if st.tok[k].len == h.name_len and _lower_eq(p + st.tok[k].start, p + h.start, h.name_len):
            return True
    return False


cdef bytes _forward_block(const uchar* p, St* st, unsigned int drop):
    # One bytes object: the kept lines as "Name: value\r\n", original name case and order.
    cdef Py_ssize_t total = 0, vlen, ln
    cdef int k
    cdef Hdr* h
    cdef bytes out
    cdef char* q
    for k in range(st.nhdrs):
        h = &st.hdrs[k]
        if (drop >> h.cls) & 1 or (st.ntok and _named_by_connection(p, h, st)):
            h.keep = 0
            continue
        h.keep = 1
        vlen = h.vend - h.vstart
        total += h.name_len + 3 + (vlen + 1 if vlen else 0)
    if total == 0:
        return _EMPTY
    out = PyBytes_FromStringAndSize(NULL, total)
    q = PyBytes_AS_STRING(out)
    for k in range(st.nhdrs):
        h = &st.hdrs[k]
        if not h.keep:
            continue
        vlen = h.vend - h.vstart
        ln = h.end - h.start
        if vlen and h.vstart == h.start + h.name_len + 2 and p[h.vstart - 1] == SP and h.end == h.vend + 2:
            memcpy(q, p + h.start, ln)    # already canonical: copy the line as received
            q += ln
            continue
        memcpy(q, p + h.start, h.name_len + 1)   # name and colon
        q += h.name_len + 1
        if vlen:
            q[0] = b' '
            memcpy(q + 1, p + h.vstart, vlen)
            q += vlen + 1
        q[0] = b'\r'
        q[1] = b'\n'
        q += 2
    return out


cdef object _values(const uchar* p, St* st, int cls, bint join):
    # The value of the first header of a class, or all of them joined with ", ", or None.
    cdef int k, cnt = st.count[cls]
    cdef Hdr* h
    cdef Py_ssize_t total = 0, vlen
    cdef bytes out
    cdef char* q
    if cnt == 0:
        return None
    h = &st.hdrs[st.first[cls]]
    if cnt == 1 or not join:
        return _slice(p, h.vstart, h.vend)
    for k in range(st.first[cls], st.nhdrs):
        h = &st.hdrs[k]
        if h.cls == cls:
            total += h.vend - h.vstart + 2
    total -= 2
    out = PyBytes_FromStringAndSize(NULL, total)
    q = PyBytes_AS_STRING(out)
    for k in range(st.first[cls], st.nhdrs):
        h = &st.hdrs[k]
        if h.cls != cls:
            continue
        if q != PyBytes_AS_STRING(out):
            q[0] = b','
            q[1] = b' '
            q += 2
        vlen = h.vend - h.vstart
        memcpy(q, p + h.vstart, vlen)
        q += vlen
    return out


cdef object _lookup(bytes raw, Py_ssize_t start, Py_ssize_t end, bytes name, bint all_):
    # Scans the (already validated) header section: lines "name:OWS value OWS\r\n".
    cdef const uchar* p = <const uchar*>PyBytes_AS_STRING(raw)
    cdef const uchar* nm = <const uchar*>PyBytes_AS_STRING(name)
    cdef Py_ssize_t nlen = PyBytes_GET_SIZE(name)
    cdef Py_ssize_t i = start, lf, colon, vs, ve, k
    cdef list found = None
    cdef bytes v
    while i < end:
        lf = <const uchar*>memchr(p + i, LF, end - i) - p
        colon = <const uchar*>memchr(p + i, COLON, lf - i) - p
        if colon - i == nlen:
            k = 0
            while k < nlen and LOWER[p[i + k]] == nm[k]:
                k += 1
            if k == nlen:
                vs = colon + 1
                ve = lf - 1
                while vs < ve and (p[vs] == SP or p[vs] == HT):
                    vs += 1
                while ve > vs and (p[ve - 1] == SP or p[ve - 1] == HT):
                    ve -= 1
                v = _slice(p, vs, ve)
                if not all_:
                    return v
                if found is None:
                    found = []
                found.append(v)
        i = lf + 1
    if all_:
        return found if found is not None else []
    return None


@cython.freelist(32)
@cython.final
cdef class RequestHead:
    """A parsed request head. Fields (all read-only):

    method, target (as sent), path (origin-form path+query; for absolute-form the part after the
    authority, b"/" if empty; b"*" for asterisk-form; the target for CONNECT), host (Host value, or
    the authority of an absolute-form target, which wins per RFC 9112 3.2.2; b"" if absent on
    HTTP/1.0), version (10/11), content_length (-1 if none), chunked, keep_alive, expect_continue,
    upgrade (Upgrade value when the client asked to upgrade on HTTP/1.1, else None), xff (all
    X-Forwarded-For lines joined with ", "), xfp, request_id (first value or None), headers (the
    block to forward) and head_len (bytes consumed from the offset given to parse_request).
    """

    def get(self, bytes name_lower not None):
        """First value of a header of the received head (any header, forwarded or not), by
        lower-case name; None if absent."""
        return _lookup(self._raw, self._raw_start, self._raw_end, name_lower, False)

    cdef object header(self, bytes name_lower):
        # get() for the fast path's own callers: a C call (name_lower: not None)
        return _lookup(self._raw, self._raw_start, self._raw_end, name_lower, False)

    def get_all(self, bytes name_lower not None):
        """All values of a header of the received head, in order (a list, possibly empty)."""
        return _lookup(self._raw, self._raw_start, self._raw_end, name_lower, True)

    def __repr__(self):
        return (f"<RequestHead {self.method!r} {self.target!r} HTTP/{self.version // 10}."
                f"{self.version % 10} host={self.host!r} cl={self.content_length} "
                f"chunked={self.chunked} keep_alive={self.keep_alive}>")


@cython.freelist(32)
@cython.final
cdef class ResponseHead:
    """A parsed response head: status, version (10/11), reason, content_length (-1 if none),
    chunked, keep_alive (false on "Connection: close", on HTTP/1.0 without keep-alive, and when
    the body is delimited by the connection closing), headers (the block to forward), no_body
    (1xx, 204, 304) and head_len."""

    def get(self, bytes name_lower not None):
        return _lookup(self._raw, self._raw_start, self._raw_end, name_lower, False)

    def get_all(self, bytes name_lower not None):
        return _lookup(self._raw, self._raw_start, self._raw_end, name_lower, True)

    def __repr__(self):
        return (f"<ResponseHead {self.status} HTTP/{self.version // 10}.{self.version % 10} "
                f"cl={self.content_length} chunked={self.chunked} keep_alive={self.keep_alive}>")


cdef RequestHead _make_request(object buf, const uchar* p, Py_ssize_t offset, St* st):
    cdef RequestHead r = RequestHead.__new__(RequestHead)
    cdef bytes target
    cdef Py_ssize_t plen
    cdef char* q
    r.method = <bytes>_METHOD_OBJS[st.method_idx]
    target = _slice(p, st.target_start, st.target_start + st.target_len)
    r.target = target
    if st.form == T_ABSOLUTE:
        plen = st.apath_len
        if plen == 0:
            r.path = _SLASH
        elif p[st.apath_start] == 0x2F:
            r.path = _slice(p, st.apath_start, st.apath_start + plen)
        else:   # "http://h?q" -> "/?q"
            r.path = PyBytes_FromStringAndSize(NULL, plen + 1)
            q = PyBytes_AS_STRING(r.path)
            q[0] = b'/'
            memcpy(q + 1, p + st.apath_start, plen)
        r.host = _slice(p, st.auth_start, st.auth_start + st.auth_len)
    else:
        r.path = target
        r.host = _values(p, st, H_HOST, False) if st.count[H_HOST] else _EMPTY
    r.version = st.version
    r.content_length = st.content_length
    r.chunked = st.te_chunked
    if st.version == 11:
        r.keep_alive = not st.conn_close
    else:
        r.keep_alive = st.conn_keep_alive and not st.conn_close
    r.expect_continue = st.expect_continue
    if st.conn_upgrade and st.version == 11 and st.count[H_UPGRADE]:
        r.upgrade = _values(p, st, H_UPGRADE, True)
    else:
        r.upgrade = None
    r.xff = _values(p, st, H_XFF, True)
    r.xfp = _values(p, st, H_XFP, False)
    r.request_id = _values(p, st, H_XRID, False)
    r.headers = _forward_block(p, st, st.drop)
    r.head_len = st.head_end
    # get() reads the received header section later: share an immutable bytes buffer, copy
    # anything else (the caller consumes and reuses a bytearray)
    if PyBytes_CheckExact(buf):
        r._raw = <bytes>buf
        r._raw_start = offset + st.hdr_start
        r._raw_end = offset + st.head_end - 2
    else:
        r._raw = _slice(p, st.hdr_start, st.head_end - 2)
        r._raw_start = 0
        r._raw_end = st.head_end - 2 - st.hdr_start
    return r


cdef ResponseHead _make_response(object buf, const uchar* p, Py_ssize_t offset, St* st):
    cdef ResponseHead r = ResponseHead.__new__(ResponseHead)
    cdef unsigned int drop = st.drop
    r.status = st.status
    r.version = st.version
    if st.reason_len == 2 and p[st.reason_start] == b'O' and p[st.reason_start + 1] == b'K':
        r.reason = _OK
    else:
        r.reason = _slice(p, st.reason_start, st.reason_start + st.reason_len)
    r.content_length = st.content_length
    r.chunked = st.te_chunked
    r.no_body = st.status < 200 or st.status == 204 or st.status == 304
    if st.version == 11:
        r.keep_alive = not st.conn_close
    else:
        r.keep_alive = st.conn_keep_alive and not st.conn_close
    if not r.no_body and not r.chunked and r.content_length < 0:
        # RFC 9112 6.3 rule 8: the body runs until the connection closes
        r.keep_alive = False
    if st.status == 101:
        drop &= ~((<unsigned int>1) << H_UPGRADE)   # the client needs to see what it is switched to
    r.headers = _forward_block(p, st, drop)
    r.head_len = st.head_end
    # get() reads the received header section later: share an immutable bytes buffer, copy
    # anything else (the caller consumes and reuses a bytearray)
    if PyBytes_CheckExact(buf):
        r._raw = <bytes>buf
        r._raw_start = offset + st.hdr_start
        r._raw_end = offset + st.head_end - 2
    else:
        r._raw = _slice(p, st.hdr_start, st.head_end - 2)
        r._raw_start = 0
        r._raw_end = st.head_end - 2 - st.hdr_start
    return r


cdef bytes _OK = b"OK"


# ---------------------------------------------------------------------------------------------
# public parse functions

cdef inline const uchar* _acquire(object buf, Py_buffer* view, Py_ssize_t* size,
                                  bint* release) except NULL:
    if PyBytes_CheckExact(buf):
        size[0] = PyBytes_GET_SIZE(buf)
        release[0] = False
        return <const uchar*>PyBytes_AS_STRING(buf)
    if PyByteArray_CheckExact(buf):
        size[0] = PyByteArray_GET_SIZE(buf)
        release[0] = False
        return <const uchar*>PyByteArray_AS_STRING(buf)
    PyObject_GetBuffer(buf, view, PyBUF_SIMPLE)
    size[0] = view.len
    release[0] = True
    return <const uchar*>view.buf


def parse_request(buf, Py_ssize_t offset, Py_ssize_t max_head_bytes, bint strip_envoy):
    """Parses the request head at buf[offset:] (bytes, bytearray or any contiguous buffer).

    Returns a RequestHead, or None if the head is incomplete (and nothing seen so far is invalid
    and no limit is exceeded). Raises HttpError as soon as the bytes seen are known invalid.
    Limits: request line (with any leading empty lines) > 16384 bytes -> 414; header section
    (after the request line, incl. the final CRLF) > max_head_bytes -> 431; > 100 fields -> 431.
    """
    cdef Py_buffer view
    cdef Py_ssize_t size
    cdef bint release
    cdef const uchar* data = _acquire(buf, &view, &size, &release)
    cdef St st
    cdef int r
    try:
        if offset < 0 or offset > size:
            raise ValueError("offset out of range")
        _st_init(&st, False, REQ_DROP | (((<unsigned int>1) << H_ENVOY) if strip_envoy else 0))
        r = _parse_request_c(data + offset, size - offset, max_head_bytes, &st)
        if r > 0:
            return _make_request(buf, data + offset, offset, &st)
        if r < 0:
            _raise(st.err, st.reason)
        return None
    finally:
        if release:
            PyBuffer_Release(&view)


def parse_response(buf, Py_ssize_t offset, Py_ssize_t max_head_bytes):
    """Parses a response head at buf[offset:]; same contract as parse_request. Every error is
    HttpError(502, reason): the proxy answers 502 for an invalid upstream response."""
    cdef Py_buffer view
    cdef Py_ssize_t size
    cdef bint release
    cdef const uchar* data = _acquire(buf, &view, &size, &release)
    cdef St st
    cdef int r
    try:
        if offset < 0 or offset > size:
            raise ValueError("offset out of range")
        _st_init(&st, True, RESP_DROP)
        r = _parse_response_c(data + offset, size - offset, max_head_bytes, &st)
        if r > 0:
            return _make_response(buf, data + offset, offset, &st)
        if r < 0:
            _raise(502, st.reason)
        return None
    finally:
        if release:
            PyBuffer_Release(&view)


# ---------------------------------------------------------------------------------------------
# chunked transfer coding (RFC 9112 7.1)

cdef enum:
    S_SIZE = 0          # chunk-size digits
    S_SIZE_BWS = 1      # BWS after the size: only ';' may follow
    S_EXT_SEMI = 2      # after ';': BWS, then chunk-ext-name
    S_EXT_NAME = 3
    S_EXT_NAME_BWS = 4  # BWS after a name: '=' or ';'
    S_EXT_EQ = 5        # after '=': BWS, then token or quoted-string
    S_EXT_TOKEN = 6
    S_EXT_QS = 7
    S_EXT_QP = 8        # after a backslash in a quoted-string
    S_EXT_VAL_END = 9   # after the closing quote
    S_EXT_VAL_BWS = 10  # BWS after a value: only ';'
    S_SIZE_LF = 11
    S_DATA = 12
    S_DATA_CR = 13
    S_DATA_LF = 14
    S_TR_START = 15     # start of a trailer line (or the final CRLF)
    S_TR_NAME = 16
    S_TR_VALUE = 17
    S_TR_LF = 18
    S_FINAL_LF = 19
    S_DONE = 20


cdef bint _framing_in_trailers(bytes t):
    # `t`: trailer field lines already validated by the decoder (token ":" value CRLF)
    cdef const uchar* p = <const uchar*>PyBytes_AS_STRING(t)
    cdef Py_ssize_t n = PyBytes_GET_SIZE(t), i = 0, j
    cdef int cls
    while i < n:
        j = i
        while j < n and p[j] != COLON:
            j += 1
        if j > i:
            cls = _classify(p + i, j - i)
            if cls == H_CONTENT_LENGTH or cls == H_TRANSFER_ENCODING or cls == H_FRAMING_LOOKALIKE:
                return True
        while j < n and p[j] != LF:
            j += 1
        i = j + 1
    return False


@cython.final
cdef class ChunkedDecoder:
    """Incremental decoder of a chunked body.

    feed(buf, offset=0) decodes from buf[offset:] and returns the payload bytes of this call.
    State is kept across calls, so sizes, extensions, CRLFs and trailers may be split anywhere.
    After the last chunk, the trailers and the final CRLF, `done` is true and `consumed` is the
    number of bytes of buf[offset:] that belonged to the body (while not done, `consumed` is the
    whole length fed). `trailers` holds the raw trailer lines (b"" if none). Invalid framing raises
    HttpError(400, ...).
    """

    def __init__(self, Py_ssize_t max_chunk_ext=1024, Py_ssize_t max_trailer_bytes=16384):
        self._max_ext = max_chunk_ext
        self._max_trailer = max_trailer_bytes
        self.reset()

    def reset(self):
        """Back to the initial state, for reuse on the next message."""
        self.done = False
        self.consumed = 0
        self.trailers = _EMPTY
        self._state = S_SIZE
        self._ndigits = 0
        self._size = 0
        self._remaining = 0
        self._ext_len = 0
        self._trailer_len = 0
        self._tbuf = None

    def feed(self, buf, Py_ssize_t offset=0):
        cdef Py_buffer view
        cdef Py_ssize_t size
        cdef bint release
        cdef const uchar* data = _acquire(buf, &view, &size, &release)
        try:
            if offset < 0 or offset > size:
                raise ValueError("offset out of range")
            return self._feed(data + offset, size - offset)
        finally:
            if release:
                PyBuffer_Release(&view)

    cdef object _feed(self, const uchar* p, Py_ssize_t n):
        cdef Py_ssize_t i = 0, take, w = 0, tr_from = -1, tr_end
        cdef int state = self._state
        cdef const char* err = NULL
        cdef PyObject* out = NULL
        cdef char* q = NULL
        cdef uchar c, hv
        cdef object result
        if state == S_DONE:
            self.consumed = 0
            return _EMPTY
        if state >= S_TR_START:
            tr_from = 0
        while i < n:
            if state == S_DATA:
                take = n - i
                if take > self._remaining:
                    take = <Py_ssize_t>self._remaining
                if out == NULL:
                    out = _bytes_new_raw(NULL, n - i)   # bound on the payload of this call
                    if out == NULL:
                        raise MemoryError()
                    q = _bytes_data_raw(out)
                memcpy(q + w, p + i, take)
                w += take
                i += take
                self._remaining -= take
                if self._remaining == 0:
                    state = S_DATA_CR
                continue
            c = p[i]
            if state == S_SIZE:
                hv = HEXV[c]
                if hv != 255:
                    # RFC 9112 7.1: chunk-size = 1*HEXDIG (leading zeros allowed); bounded so
                    # that it fits a signed 64-bit length
                    if self._ndigits >= 16:
                        err = "chunk size has more than 16 hex digits"
                        break
                    self._size = (self._size << 4) | hv
                    self._ndigits += 1
                    if self._size >> 63:
                        err = "chunk size overflow"
                        break
                elif self._ndigits == 0:
                    err = "invalid chunk size"
                    break
                elif c == CR:
                    state = S_SIZE_LF
                elif c == 0x3B:
                    state = S_EXT_SEMI
                    self._ext_len += 1
                elif c == SP or c == HT:
                    state = S_SIZE_BWS
                    self._ext_len += 1
                else:
                    err = "invalid character after chunk size"
                    break
            elif state <= S_EXT_VAL_BWS:
                # chunk-ext = *( BWS ";" BWS chunk-ext-name [ BWS "=" BWS chunk-ext-val ] )
                if state == S_SIZE_BWS or state == S_EXT_VAL_BWS:
                    if c == 0x3B:
                        state = S_EXT_SEMI
                    elif c != SP and c != HT:
                        err = "invalid chunk extension"
                        break
                elif state == S_EXT_SEMI:
                    if CLS[c] & C_TCHAR:
                        state = S_EXT_NAME
                    elif c != SP and c != HT:
                        err = "invalid chunk extension"
                        break
                elif state == S_EXT_NAME:
                    if CLS[c] & C_TCHAR:
                        pass
                    elif c == 0x3D:
                        state = S_EXT_EQ
                    elif c == 0x3B:
                        state = S_EXT_SEMI
                    elif c == SP or c == HT:
                        state = S_EXT_NAME_BWS
                    elif c == CR:
                        state = S_SIZE_LF
                    else:
                        err = "invalid chunk extension"
                        break
                elif state == S_EXT_NAME_BWS:
                    if c == 0x3D:
                        state = S_EXT_EQ
                    elif c == 0x3B:
                        state = S_EXT_SEMI
                    elif c != SP and c != HT:
                        err = "invalid chunk extension"
                        break
                elif state == S_EXT_EQ:
                    if CLS[c] & C_TCHAR:
                        state = S_EXT_TOKEN
                    elif c == 0x22:
                        state = S_EXT_QS
                    elif c != SP and c != HT:
                        err = "invalid chunk extension"
                        break
                elif state == S_EXT_TOKEN:
                    if CLS[c] & C_TCHAR:
                        pass
                    elif c == 0x3B:
                        state = S_EXT_SEMI
                    elif c == SP or c == HT:
                        state = S_EXT_VAL_BWS
                    elif c == CR:
                        state = S_SIZE_LF
                    else:
                        err = "invalid chunk extension"
                        break
                elif state == S_EXT_QS:
                    if c == 0x22:
                        state = S_EXT_VAL_END
                    elif c == 0x5C:
                        state = S_EXT_QP
                    elif not (CLS[c] & C_QDTEXT):
                        err = "invalid character in quoted chunk extension"
                        break
                elif state == S_EXT_QP:
                    # quoted-pair = "\" ( HTAB / SP / VCHAR / obs-text )
                    if CLS[c] & C_FIELD:
                        state = S_EXT_QS
                    else:
                        err = "invalid quoted-pair in chunk extension"
                        break
                else:   # S_EXT_VAL_END
                    if c == 0x3B:
                        state = S_EXT_SEMI
                    elif c == SP or c == HT:
                        state = S_EXT_VAL_BWS
                    elif c == CR:
                        state = S_SIZE_LF
                    else:
                        err = "invalid chunk extension"
                        break
                if state != S_SIZE_LF:
                    # the extension's length: everything between the size and the CRLF
                    self._ext_len += 1
                    if self._ext_len > self._max_ext:
                        err = "chunk extension too long"
                        break
            elif state == S_SIZE_LF:
                if c != LF:
                    err = "bare CR in chunk size line"
                    break
                if self._size == 0:
                    state = S_TR_START
                    tr_from = i + 1
                else:
                    self._remaining = <long long>self._size
                    state = S_DATA
                self._size = 0
                self._ndigits = 0
                self._ext_len = 0
            elif state == S_DATA_CR:
                if c != CR:
                    err = "missing CRLF after chunk data"
                    break
                state = S_DATA_LF
            elif state == S_DATA_LF:
                if c != LF:
                    err = "missing CRLF after chunk data"
                    break
                state = S_SIZE
            elif state == S_TR_START:
                if c == CR:
                    state = S_FINAL_LF
                elif CLS[c] & C_TCHAR:
                    state = S_TR_NAME
                    self._trailer_len += 1
                elif c == SP or c == HT:
                    err = "obsolete line folding in trailers"
                    break
                else:
                    err = "invalid trailer field"
                    break
            elif state == S_FINAL_LF:
                if c != LF:
                    err = "bare CR after trailers"
                    break
                state = S_DONE
                i += 1
                break
            else:
                # trailer field lines have the syntax of header field lines (RFC 9112 7.1.2)
                self._trailer_len += 1
                if state == S_TR_NAME:
                    if c == COLON:
                        state = S_TR_VALUE
                    elif not (CLS[c] & C_TCHAR):
                        err = "invalid trailer field name"
                        break
                elif state == S_TR_VALUE:
                    if c == CR:
                        state = S_TR_LF
                    elif not (CLS[c] & C_FIELD):
                        err = "invalid character in trailer field"
                        break
                else:   # S_TR_LF
                    if c != LF:
                        err = "bare CR in trailers"
                        break
                    state = S_TR_START
                if self._trailer_len > self._max_trailer:
                    err = "trailers too large"
                    break
            i += 1

        self._state = state
        if err != NULL:
            Py_XDECREF(out)
            _raise(400, err)
        if tr_from >= 0 and i > tr_from:
            if state == S_DONE and self._tbuf is None:
                tr_end = i - 2   # without the final CRLF
                self.trailers = _slice(p, tr_from, tr_end) if tr_end > tr_from else _EMPTY
            else:
                if self._tbuf is None:
                    self._tbuf = bytearray()
                self._tbuf += p[tr_from:i]
                if state == S_DONE:
                    self.trailers = bytes(self._tbuf[:len(self._tbuf) - 2])
                    self._tbuf = None
        if state == S_DONE and PyBytes_GET_SIZE(self.trailers) and _framing_in_trailers(self.trailers):
            # RFC 9110 6.5.1: framing fields cannot be sent as trailers. Forwarded, a recipient that
            # merges trailers into the header section (6.5.2 forbids it, some do) would see a second
            # framing header; refused like a framing look-alike in the header section.
            Py_XDECREF(out)
            self.trailers = _EMPTY
            _raise(400, "framing field in the trailer section")
        if state == S_DONE:
            self.done = True
            self.consumed = i
        else:
            self.consumed = n
        if out == NULL:
            return _EMPTY
        if w == 0:
            Py_XDECREF(out)
            return _EMPTY
        if _PyBytes_Resize(&out, w) < 0:
            raise MemoryError()
        result = <object>out
        Py_XDECREF(out)
        return result


# ---------------------------------------------------------------------------------------------
# serializers

cdef inline Py_ssize_t _buf_len(object b):
    return 0 if b is None else PyBytes_GET_SIZE(b)


cdef inline char* _put(char* q, object b):
    cdef Py_ssize_t n
    if b is None:
        return q
    n = PyBytes_GET_SIZE(b)
    memcpy(q, PyBytes_AS_STRING(b), n)
    return q + n


cdef inline Py_ssize_t _fmt_dec(unsigned long long v, char* out) noexcept nogil:
    # decimal digits of v into out; returns the length
    return put_dec(out, v) - out


cdef inline Py_ssize_t _framing(long long framing, bint response, char* out) except -1:
    # The framing header line for the encoding used by the build_* functions.
    cdef Py_ssize_t n
    if framing >= 0 or (framing == -1 and response):
        # a response without any framing header would be delimited by close (RFC 9112 6.3
        # rule 8), so "no body" on a response is spelled Content-Length: 0
        memcpy(out, b"Content-Length: ", 16)
        n = 16 + _fmt_dec(<unsigned long long>(framing if framing >= 0 else 0), out + 16)
        out[n] = b'\r'
        out[n + 1] = b'\n'
        return n + 2
    if framing == -1 or framing == -3:
        return 0
    if framing == -2:
        memcpy(out, b"Transfer-Encoding: chunked\r\n", 28)
        return 28
    raise ValueError("invalid framing")


cdef bint _unsafe_in_line(bytes b):
    # CTLs, SP, DEL: what could split or extend the start line or the Host line
    cdef const uchar* s = <const uchar*>PyBytes_AS_STRING(b)
    cdef Py_ssize_t k
    for k in range(PyBytes_GET_SIZE(b)):
        if s[k] <= 0x20 or s[k] == 0x7F:
            return True
    return False


def build_request_head(bytes method not None, bytes path not None, bytes host not None,
                       bytes headers, bytes extra, long long framing):
    """b"METHOD path HTTP/1.1\\r\\nHost: host\\r\\n" + headers + extra + framing line + b"\\r\\n".

    framing: >= 0 -> Content-Length: N; -1 -> no framing header (no body); -2 -> chunked.
    `headers` and `extra` must be complete "Name: value\\r\\n" lines (None counts as b"").
    """
    cdef char fr[48]
    cdef Py_ssize_t frn, total
    cdef bytes out
    cdef char* q
    if framing == -3:
        raise ValueError("invalid framing")
    if _unsafe_in_line(method) or _unsafe_in_line(path) or PyBytes_GET_SIZE(path) == 0:
        raise ValueError("method or path would break the request line")
    if _unsafe_in_line(host):
        raise ValueError("host would break the Host line")
    frn = _framing(framing, False, fr)
    total = (PyBytes_GET_SIZE(method) + 1 + PyBytes_GET_SIZE(path) + 11 + 6
             + PyBytes_GET_SIZE(host) + 2 + _buf_len(headers) + _buf_len(extra) + frn + 2)
    out = PyBytes_FromStringAndSize(NULL, total)
    q = PyBytes_AS_STRING(out)
    q = _put(q, method)
    q[0] = b' '
    q = _put(q + 1, path)
    memcpy(q, b" HTTP/1.1\r\nHost: ", 17)
    q = _put(q + 17, host)
    q[0] = b'\r'
    q[1] = b'\n'
    q = _put(q + 2, headers)
    q = _put(q, extra)
    memcpy(q, fr, frn)
    q += frn
    q[0] = b'\r'
    q[1] = b'\n'
    return out


_REASONS = {
    100: b"Continue", 101: b"Switching Protocols", 102: b"Processing", 103: b"Early Hints",
    200: b"OK", 201: b"Created", 202: b"Accepted", 203: b"Non-Authoritative Information",
    204: b"No Content", 205: b"Reset Content", 206: b"Partial Content", 207: b"Multi-Status",
    208: b"Already Reported", 226: b"IM Used",
    300: b"Multiple Choices", 301: b"Moved Permanently", 302: b"Found", 303: b"See Other",
    304: b"Not Modified", 305: b"Use Proxy", 307: b"Temporary Redirect",
    308: b"Permanent Redirect",
    400: b"Bad Request", 401: b"Unauthorized", 402: b"Payment Required", 403: b"Forbidden",
    404: b"Not Found", 405: b"Method Not Allowed", 406: b"Not Acceptable",
    407: b"Proxy Authentication Required", 408: b"Request Timeout", 409: b"Conflict",
    410: b"Gone", 411: b"Length Required", 412: b"Precondition Failed",
    413: b"Payload Too Large", 414: b"URI Too Long", 415: b"Unsupported Media Type",
    416: b"Range Not Satisfiable", 417: b"Expectation Failed", 418: b"I'm a teapot",
    421: b"Misdirected Request", 422: b"Unprocessable Entity", 423: b"Locked",
    424: b"Failed Dependency", 425: b"Too Early", 426: b"Upgrade Required",
    428: b"Precondition Required", 429: b"Too Many Requests",
    431: b"Request Header Fields Too Large", 451: b"Unavailable For Legal Reasons",
    500: b"Internal Server Error", 501: b"Not Implemented", 502: b"Bad Gateway",
    503: b"Service Unavailable", 504: b"Gateway Timeout", 505: b"HTTP Version Not Supported",
    506: b"Variant Also Negotiates", 507: b"Insufficient Storage", 508: b"Loop Detected",
    510: b"Not Extended", 511: b"Network Authentication Required",
}

# "HTTP/1.1 <code> <reason>\r\n" for every code 100..999, built once
cdef tuple _STATUS_LINES = tuple(
    b"HTTP/1.1 %d %s\r\n" % (code, _REASONS.get(code, b"Unknown")) for code in range(100, 1000))


def build_response_head(int status, bytes headers, bytes extra, long long framing, bint keep_alive,
                        bytes body=None):
    """b"HTTP/1.1 <status line>\\r\\n" + headers + extra + framing + (b"" if keep_alive else
    b"Connection: close\\r\\n") + b"\\r\\n".

    framing: >= 0 -> Content-Length: N; -1 -> no body, written as Content-Length: 0 (a response
    without framing headers would be delimited by close); -2 -> chunked; -3 -> no framing header
    at all (1xx, 204, 304, or a body delimited by closing the connection).
    body: bytes to follow the head in the same object (a small response written in one call
    without a second copy), or None.
    """
    cdef char fr[48]
    cdef Py_ssize_t frn, total
    cdef bytes line, out
    cdef char* q
    if status < 100 or status > 999:
        raise ValueError("status out of range")
    line = <bytes>_STATUS_LINES[status - 100]
    frn = _framing(framing, True, fr)
    total = (PyBytes_GET_SIZE(line) + _buf_len(headers) + _buf_len(extra) + frn
             + (0 if keep_alive else 19) + 2 + _buf_len(body))
    out = PyBytes_FromStringAndSize(NULL, total)
    q = PyBytes_AS_STRING(out)
    q = _put(q, line)
    q = _put(q, headers)
    q = _put(q, extra)
    memcpy(q, fr, frn)
    q += frn
    if not keep_alive:
        memcpy(q, b"Connection: close\r\n", 19)
        q += 19
    q[0] = b'\r'
    q[1] = b'\n'
    if body is not None:
        _put(q + 2, body)
    return out


cdef const char* _HEXDIGITS = "0123456789abcdef"


def encode_chunk(payload):
    """b"<hex len>\\r\\n" + payload + b"\\r\\n"; b"" for an empty payload, so that an empty
    write can never become the last-chunk by accident."""
    cdef Py_buffer view
    cdef Py_ssize_t size, hexn = 0, k
    cdef bint release
    cdef const uchar* data = _acquire(payload, &view, &size, &release)
    cdef unsigned long long v
    cdef bytes out
    cdef char* q
    try:
        if size == 0:
            return _EMPTY
        v = <unsigned long long>size
        while v:
            hexn += 1
            v >>= 4
        out = PyBytes_FromStringAndSize(NULL, hexn + 2 + size + 2)
        q = PyBytes_AS_STRING(out)
        v = <unsigned long long>size
        for k in range(hexn - 1, -1, -1):
            q[k] = _HEXDIGITS[v & 15]
            v >>= 4
        q[hexn] = b'\r'
        q[hexn + 1] = b'\n'
        memcpy(q + hexn + 2, data, size)
        q[hexn + 2 + size] = b'\r'
        q[hexn + 3 + size] = b'\n'
        return out
    finally:
        if release:
            PyBuffer_Release(&view)


def last_chunk(bytes trailers=b""):
    """b"0\\r\\n" + trailers + b"\\r\\n" (trailers: complete field lines, or b"")."""
    if trailers is None or PyBytes_GET_SIZE(trailers) == 0:
        return b"0\r\n\r\n"
    return b"0\r\n" + trailers + b"\r\n"
