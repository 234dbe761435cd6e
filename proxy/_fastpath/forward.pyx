# cython: language_level=3, boundscheck=False, wraparound=False
"""The upstream request head in one call: forwarded headers, the proxy's own headers, framing.

Envoy's connection manager adds x-forwarded-for (with use_remote_address), x-forwarded-proto and
x-request-id (generate_request_id) before the router serializes the request; doing all of it in
one allocation here keeps the per-request Python work to a single call.
"""
import os

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from libc.stdint cimport uint64_t
from libc.string cimport memcpy

from proxy._fastpath.bytewriter cimport put_bytes, put_lit
from proxy._fastpath.http1 cimport RequestHead

# xoshiro256** state: fast, good enough for request ids (not for secrets); seeded from the OS
# in every worker after fork, so workers never share a sequence.
cdef uint64_t _s[4]


cdef inline uint64_t _rotl(uint64_t x, int k) noexcept nogil:
    return (x << k) | (x >> (64 - k))


cdef inline uint64_t _next() noexcept nogil:
    cdef uint64_t result = _rotl(_s[1] * 5, 7) * 9
    cdef uint64_t t = _s[1] << 17
    _s[2] ^= _s[0]
    _s[3] ^= _s[1]
    _s[1] ^= _s[2]
    _s[0] ^= _s[3]
    _s[2] ^= t
    _s[3] = _rotl(_s[3], 45)
    return result


def seed_request_ids():
    """Re-seed from os.urandom: call once in every process after fork."""
    cdef bytes b = os.urandom(32)
    cdef const unsigned char* p = <const unsigned char*>PyBytes_AS_STRING(b)
    cdef int i
    memcpy(<void*>_s, p, 32)
    if _s[0] == 0 and _s[1] == 0 and _s[2] == 0 and _s[3] == 0:
        _s[0] = 1


seed_request_ids()

cdef const char* _HEX = b"0123456789abcdef"


cdef inline char* _uuid4(char* q) noexcept nogil:
    """36 characters of a random version-4 UUID (RFC 9562 section 5.4)."""
    cdef uint64_t hi = _next()
    cdef uint64_t lo = _next()
    cdef unsigned char raw[16]
    cdef int i, j = 0
    hi = (hi & 0xFFFFFFFFFFFF0FFFULL) | 0x0000000000004000ULL   # version 4
    lo = (lo & 0x3FFFFFFFFFFFFFFFULL) | 0x8000000000000000ULL   # variant 10
    for i in range(8):
        raw[i] = <unsigned char>(hi >> (56 - 8 * i))
        raw[8 + i] = <unsigned char>(lo >> (56 - 8 * i))
    for i in range(16):
        if i == 4 or i == 6 or i == 8 or i == 10:
            q[j] = b'-'
            j += 1
        q[j] = _HEX[raw[i] >> 4]
        q[j + 1] = _HEX[raw[i] & 15]
        j += 2
    return q + 36


def request_id():
    """A random version-4 UUID as bytes (Envoy's x-request-id format)."""
    cdef bytes out = PyBytes_FromStringAndSize(NULL, 36)
    _uuid4(PyBytes_AS_STRING(out))
    return out


cdef inline Py_ssize_t _len(bytes b) noexcept:
    return 0 if b is None else PyBytes_GET_SIZE(b)


cdef bint _unsafe(bytes b) noexcept:
    # CTLs, SP, DEL: what could split or extend the start line or the Host line
    cdef const unsigned char* s = <const unsigned char*>PyBytes_AS_STRING(b)
    cdef Py_ssize_t k
    for k in range(PyBytes_GET_SIZE(b)):
        if s[k] <= 0x20 or s[k] == 0x7F:
            return True
    return False


cdef int _ulen(unsigned long long v) noexcept nogil:
    cdef int n = 1
    while v >= 10:
        v //= 10
        n += 1
    return n


def upstream_request_head(RequestHead head not None, bytes path not None, bytes host not None,
                          bytes headers not None, bint use_remote_address, bytes peer not None,
                          bytes scheme not None, bint generate_request_id, bytes extra not None):
    """The request head cyvoy sends upstream for `head`.

    Lines, in order: request line; Host; the forwarded client headers; x-forwarded-for (appended
    with the peer when use_remote_address, else passed through if present); x-forwarded-proto
    (overwritten at the edge, else kept if present); x-request-id (kept, or generated);
    `extra` (route header additions, x-envoy-expected-rq-timeout-ms); the framing header.
    """
    cdef bytes xff = head.xff
    cdef bytes xfp = scheme if (use_remote_address or head.xfp is None) else head.xfp
    cdef bytes rid = head.request_id
    cdef bint gen = rid is None and generate_request_id
    cdef long long cl = head.content_length
    cdef Py_ssize_t total
    cdef bytes out
    cdef char* q
    cdef unsigned long long v
    cdef int digits = 0, i

    # the parser vetted the client's path and Host; a rewritten one comes from config: vet it too
    if path is not head.path and (_unsafe(path) or PyBytes_GET_SIZE(path) == 0):
        raise ValueError("rewritten path would break the request line")
    if host is not head.host and _unsafe(host):
        raise ValueError("rewritten host would break the Host line")
    total = (PyBytes_GET_SIZE(head.method) + 1 + PyBytes_GET_SIZE(path) + 17
             + PyBytes_GET_SIZE(host) + 2 + PyBytes_GET_SIZE(headers) + PyBytes_GET_SIZE(extra) + 2)
    if use_remote_address:
        total += 17 + (_len(xff) + 1 if xff is not None else 0) + PyBytes_GET_SIZE(peer) + 2
    elif xff is not None:
        total += 17 + PyBytes_GET_SIZE(xff) + 2
    total += 19 + PyBytes_GET_SIZE(xfp) + 2
    if rid is not None:
        total += 14 + PyBytes_GET_SIZE(rid) + 2
    elif gen:
        total += 14 + 36 + 2
    if head.chunked:
        total += 28
    elif cl >= 0:
        digits = _ulen(<unsigned long long>cl)
        total += 16 + digits + 2

    out = PyBytes_FromStringAndSize(NULL, total)
    q = PyBytes_AS_STRING(out)
    q = put_bytes(q, head.method)
    q[0] = b' '
    q = put_bytes(q + 1, path)
    q = put_lit(q, b" HTTP/1.1\r\nHost: ", 17)
    q = put_bytes(q, host)
    q = put_lit(q, b"\r\n", 2)
    q = put_bytes(q, headers)
    if use_remote_address:
        q = put_lit(q, b"x-forwarded-for: ", 17)
        if xff is not None:
            q = put_bytes(q, xff)
            q[0] = b','
            q += 1
        q = put_bytes(q, peer)
        q = put_lit(q, b"\r\n", 2)
    elif xff is not None:
        q = put_lit(q, b"x-forwarded-for: ", 17)
        q = put_bytes(q, xff)
        q = put_lit(q, b"\r\n", 2)
    q = put_lit(q, b"x-forwarded-proto: ", 19)
    q = put_bytes(q, xfp)
    q = put_lit(q, b"\r\n", 2)
    if rid is not None:
        q = put_lit(q, b"x-request-id: ", 14)
        q = put_bytes(q, rid)
        q = put_lit(q, b"\r\n", 2)
    elif gen:
        q = put_lit(q, b"x-request-id: ", 14)
        q = _uuid4(q)
        q = put_lit(q, b"\r\n", 2)
    q = put_bytes(q, extra)
    if head.chunked:
        q = put_lit(q, b"Transfer-Encoding: chunked\r\n", 28)
    elif cl >= 0:
        q = put_lit(q, b"Content-Length: ", 16)
        v = <unsigned long long>cl
        for i in range(digits - 1, -1, -1):
            q[i] = <char>(48 + v % 10)
            v //= 10
        q += digits
        q = put_lit(q, b"\r\n", 2)
    q = put_lit(q, b"\r\n", 2)
    return out
