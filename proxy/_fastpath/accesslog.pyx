# cython: language_level=3, boundscheck=False, wraparound=False
"""Envoy's default access log format, formatted in C.

Envoy's default format (configuration/observability/access_log/usage.rst, "Default format
string"; proxy.access_log.format.DEFAULT_FORMAT):

    [%START_TIME%] "%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%"
    %RESPONSE_CODE% %RESPONSE_FLAGS% %BYTES_RECEIVED% %BYTES_SENT% %DURATION%
    %RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% "%REQ(X-FORWARDED-FOR)%" "%REQ(USER-AGENT)%"
    "%REQ(X-REQUEST-ID)%" "%REQ(:AUTHORITY)%" "%UPSTREAM_HOST%"

Most access logs use it, and the compiled Python formatter (proxy.access_log.format) costs a few
µs per line. `default_line` gives the same bytes from the values the connection manager already
holds, without a LogRecord: same escaping (control bytes as \\xNN), "-" for an absent or empty
value, flags in Envoy's order. tests/test_access_log_live.py checks it against the general
formatter, line for line.
"""
import time

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE

from proxy._fastpath.bytewriter cimport put_bytes, put_dec, put_lit

from proxy.access_log.format import _FLAG_RANK, _str_bytes, escape

cdef long long _second = -1
cdef bytes _prefix = b""        # "[YYYY-MM-DDTHH:MM:SS" of _second
cdef dict _strs = {}            # str value -> its escaped UTF-8 (hosts and flags: a small set)


cdef inline bint _clean(bytes v) noexcept:
    cdef const unsigned char* p = <const unsigned char*>PyBytes_AS_STRING(v)
    cdef Py_ssize_t i, n = PyBytes_GET_SIZE(v)
    for i in range(n):
        if p[i] < 0x20 or p[i] == 0x7f:
            return False
    return True


cdef inline bytes _b(object v):
    # a BYTES operator: "-" when unset or empty, control bytes escaped
    if v is None or PyBytes_GET_SIZE(<bytes>v) == 0:
        return b"-"
    if _clean(<bytes>v):
        return <bytes>v
    return escape(v)


cdef bytes _s(str v):
    # a STR operator's value (format._str_bytes, with a C-level cache in front)
    out = _strs.get(v)
    if out is None:
        if len(_strs) >= 4096:
            _strs.clear()
        out = _strs[v] = _str_bytes(v)
    return <bytes>out


cdef inline char* _int(char* q, long long v) noexcept nogil:
    # as b"%d" % v
    if v < 0:
        q[0] = b'-'
        return put_dec(q + 1, <unsigned long long>(-(v + 1)) + 1)
    return put_dec(q, <unsigned long long>v)


def default_line(double start_wall, method, path, bytes protocol, long long code, str flags,
                 long long rx, long long tx, long long duration_ms, service_ms, xff, user_agent,
                 request_id, authority, str upstream_host):
    """One line of Envoy's default format. method/path/xff/user_agent/request_id/authority:
    bytes or None; path: x-envoy-original-path if the request had one, else :path; flags: the
    response flags joined by "," in the order they were set ("" for none); service_ms: the
    x-envoy-upstream-service-time value (an int), or None without an upstream response."""
    global _second, _prefix
    cdef long long us = <long long>(start_wall * 1e6 + 0.5)
    cdef long long second = us // 1000000
    cdef int ms = <int>((us % 1000000) // 1000)
    if second != _second:
        # %START_TIME% in Envoy's default form, 2016-04-15T20:17:00.310Z (format.StartTime)
        _prefix = b"[" + time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)).encode()
        _second = second
    cdef bytes f
    if not flags:
        f = b"-"
    elif "," not in flags:
        f = _s(flags)
    else:
        f = _s(",".join(sorted(flags.split(","), key=lambda x: _FLAG_RANK.get(x, 999))))
    cdef bytes m = _b(method), pa = _b(path), pr = _b(protocol), x = _b(xff), ua = _b(user_agent)
    cdef bytes rid = _b(request_id), au = _b(authority)
    cdef bytes h = _s(upstream_host) if upstream_host else b"-"
    cdef bint has_svc = service_ms is not None
    cdef long long svc = service_ms if has_svc else 0
    # fixed parts: "[" prefix ".mmmZ] \"" 8, 2 spaces, "\" " 2, 6 spaces, 10 quotes/spaces
    # between the last five fields, "\"\n" 2; integers at most 20 digits + sign each
    cdef Py_ssize_t total = (PyBytes_GET_SIZE(_prefix) + 8 + PyBytes_GET_SIZE(m) + 1
                             + PyBytes_GET_SIZE(pa) + 1 + PyBytes_GET_SIZE(pr) + 2
                             + PyBytes_GET_SIZE(f) + 5 * 22 + 6 + PyBytes_GET_SIZE(x) + 3
                             + PyBytes_GET_SIZE(ua) + 3 + PyBytes_GET_SIZE(rid) + 3
                             + PyBytes_GET_SIZE(au) + 3 + PyBytes_GET_SIZE(h) + 2)
    cdef bytes out = PyBytes_FromStringAndSize(NULL, total)
    cdef char* start = PyBytes_AS_STRING(out)
    cdef char* q = put_bytes(start, _prefix)
    q[0] = b'.'
    q[1] = <char>(48 + ms // 100)
    q[2] = <char>(48 + ms // 10 % 10)
    q[3] = <char>(48 + ms % 10)
    q = put_bytes(put_lit(q + 4, b'Z] "', 4), m)
    q = put_bytes(put_lit(q, b" ", 1), pa)
    q = put_bytes(put_lit(q, b" ", 1), pr)
    q = _int(put_lit(q, b'" ', 2), code)
    q = put_bytes(put_lit(q, b" ", 1), f)
    q = _int(put_lit(q, b" ", 1), rx)
    q = _int(put_lit(q, b" ", 1), tx)
    q = _int(put_lit(q, b" ", 1), duration_ms)
    q = put_lit(q, b" ", 1)
    q = _int(q, svc) if has_svc else put_lit(q, b"-", 1)
    q = put_lit(q, b' "', 2)
    cdef bytes v
    for v in (x, ua, rid, au):
        q = put_lit(put_bytes(q, v), b'" "', 3)
    q = put_lit(put_bytes(q, h), b'"\n', 2)
    return out[:q - start]
