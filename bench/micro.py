"""Micro-benchmarks of cyvoy's Cython fast path, against httptools and pure-Python equivalents.

ns per operation (timeit: best of --repeat runs after one warm-up run, GC off while timing):

  1. request head parse, the typical 10-header request of bench/micro_http1.py: cyvoy
     http1.parse_request; httptools.HttpRequestParser (llhttp) with the callbacks a proxy needs
     (reused, and new per request) and without callbacks; h11 (a pure-Python library) as a
     reference; a pure-Python parser written here doing what parse_request does;
  2. response head parse, the typical 10-header response: the same, without h11;
  3. chunked decode: a 16 KiB body in 1 KiB chunks (one feed, and fed in 1,460-byte segments)
     and a 256 KiB body in 16 KiB chunks: http1.ChunkedDecoder against a pure-Python incremental
     decoder of the same semantics;
  4. upstream request head: forward.upstream_request_head called as connection.pyx calls it at
     the edge (x-forwarded-for appended, x-forwarded-proto, x-request-id generated or kept, the
     route's x-envoy-expected-rq-timeout-ms line, framing) against a pure-Python builder;
  5. every load-balancing policy of lb.pyx (setup: bench/micro_lb.py) at 3 and 100 hosts: ns per
     pick in a C loop (LB.bench: what connection.pyx pays) and per call from Python.

Before timing, every pure-Python equivalent is checked against cyvoy's output, so that each
comparison is apples to apples: the same head fields (or None for an incomplete head, or
HttpError with the same status), the same decoded body, trailers, done and consumed, the same
upstream head bytes (the random request id masked). The inputs: valid and invalid heads and
bodies, every prefix of the sample heads, bodies split at every point, and --mutations random
byte-level mutations of all of them (complete and cut short, small header limits). The
pure-Python code is written to be fast Python (bytes methods and `re`, one regex pass over the
header block, memoryview slices joined once) and skips none of the validation cyvoy does.

    .venv/bin/python bench/micro.py [-n LOOPS] [--repeat R] [--only SECTIONS] [--json out.json]

-n: loops per timing run (default: calibrated so that one run takes about --target s, 0.05).
The default run takes about 20-30 s. A script, not a test: the figures depend on the machine.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import random
import re
import subprocess
import sys
import time
import timeit

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

import httptools  # noqa: E402

try:
    import h11  # noqa: E402  (pure-Python HTTP/1.1 library, a reference row when installed)
except ImportError:
    h11 = None

from proxy._fastpath import forward, http1  # noqa: E402
from proxy._fastpath.http1 import HttpError  # noqa: E402

import micro_lb  # noqa: E402  (bench/micro_lb.py: host-table and LB setup)

# ---------------------------------------------------------------------------------------------
# sample inputs

# the typical 10-header request and response of bench/micro_http1.py (the same bytes)
from micro_http1 import REQUEST, RESPONSE  # noqa: E402

RESPONSE_BODY = b"x" * 1234

# upstream head inputs: the sample without the client's X-Request-Id (so one is generated), and
# a POST with a body, a client X-Forwarded-For and X-Request-Id (kept), Content-Length framing
REQUEST_NO_ID = re.sub(rb"(?im)^x-request-id:[^\r]*\r\n", b"", REQUEST)
assert REQUEST_NO_ID != REQUEST
REQUEST_POST = (
    b"POST /api/v1/cart/items HTTP/1.1\r\n"
    b"Host: shop.example.com\r\n"
    b"User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0\r\n"
    b"Accept: application/json\r\n"
    b"Content-Type: application/json\r\n"
    b"Content-Length: 512\r\n"
    b"Cookie: session=4f9c2a1b7e3d4c5a9b8e7f6a5d4c3b2a; theme=dark\r\n"
    b"X-Forwarded-For: 203.0.113.7\r\n"
    b"X-Request-Id: 7b1e4c52-9d1a-4f6e-8a3b-2c5d6e7f8a9b\r\n"
    b"Origin: https://shop.example.com\r\n"
    b"Cache-Control: no-cache\r\n"
    b"\r\n"
)
# what connection.pyx passes for the bench's route (Envoy's default 15 s route timeout)
TIMEOUT_LINE = b"x-envoy-expected-rq-timeout-ms: 15000\r\n"
PEER = b"127.0.0.1"
SCHEME = b"http"

MAX_HEAD = 65536

# ---------------------------------------------------------------------------------------------
# pure-Python HTTP/1 head parser: the rules of proxy/_fastpath/http1.pyx (RFC 9110 / 9112, strict)

MAX_HEADERS = 100
MAX_REQUEST_LINE = 16384
MAX_CONN_TOKENS = 32

_TCHAR = rb"!#$%&'*+\-.^_`|~0-9A-Za-z"
_FIELD = rb"\t\x20-\x7e\x80-\xff"                       # HTAB, SP, VCHAR, obs-text
_QDTEXT = rb"\t \x21\x23-\x5b\x5d-\x7e\x80-\xff"
_TOKEN_RE = re.compile(rb"[%s]+" % _TCHAR)
_FIELD_LINE_RE = re.compile(rb"([%s]+):[ \t]*([%s]*)" % (_TCHAR, _FIELD))
_FIELD_BLOCK_RE = re.compile(rb"(?:[%s]+:[%s]*\r\n)*" % (_TCHAR, _FIELD))
_FIELD_LINE_PREFIX_RE = re.compile(rb"[%s]*|[%s]+:[%s]*\r?|\r" % (_TCHAR, _TCHAR, _FIELD))
_FIELD_VALUE_RE = re.compile(rb"[%s]*" % _FIELD)
# the start of a status line: a prefix of HTTP/1.x SP 3DIGIT [SP reason] CR
_STATUS_LINE_PREFIX_RE = re.compile(
    b"".join(b"(?:" + re.escape(bytes([c])) for c in b"HTTP/1.")
    + b"(?:[01](?: (?:[0-9](?:[0-9](?:[0-9](?:\\r| [%s]*\\r?)?)?)?)?)?)?" % _FIELD
    + b")?" * 7)
_TARGET_RE = re.compile(rb"[\x21-\x7e]+")
_REGNAME = rb"(?:[-._~!$&'()*+;=0-9A-Za-z]|%[0-9A-Fa-f]{2})+"
_HOST = rb"(?:\[[0-9A-Fa-f:.]+\]|" + _REGNAME + rb")"
_AUTHORITY_RE = re.compile(_HOST + rb"(?::[0-9]{0,5})?")
_AUTHORITY_PORT_RE = re.compile(_HOST + rb":[0-9]{1,5}")
_ABSOLUTE_RE = re.compile(rb"([-+.0-9A-Za-z]+)://([^/?#]*)(.*)", re.S)
_LLONG_MAX = (1 << 63) - 1

_METHODS = http1.METHODS          # the same registry as the Cython parser (a frozenset)

# header classes (as in http1.pyx)
(H_HOST, H_CONTENT_LENGTH, H_TRANSFER_ENCODING, H_CONNECTION, H_KEEP_ALIVE, H_PROXY_CONNECTION,
 H_TE, H_UPGRADE, H_EXPECT, H_XFF, H_XFP, H_XRID, H_SERVER) = range(1, 14)
_CLASSES = {
    b"host": H_HOST, b"content-length": H_CONTENT_LENGTH,
    b"transfer-encoding": H_TRANSFER_ENCODING, b"connection": H_CONNECTION,
    b"keep-alive": H_KEEP_ALIVE, b"proxy-connection": H_PROXY_CONNECTION, b"te": H_TE,
    b"upgrade": H_UPGRADE, b"expect": H_EXPECT, b"x-forwarded-for": H_XFF,
    b"x-forwarded-proto": H_XFP, b"x-request-id": H_XRID, b"server": H_SERVER,
}
_REQ_DROP = frozenset((b"host", b"content-length", b"transfer-encoding", b"connection",
                       b"keep-alive", b"proxy-connection", b"te", b"upgrade", b"expect",
                       b"x-forwarded-for", b"x-forwarded-proto", b"x-request-id"))
_RESP_DROP = frozenset((b"content-length", b"transfer-encoding", b"connection", b"keep-alive",
                        b"proxy-connection", b"te", b"upgrade", b"server"))
_RESP_DROP_101 = _RESP_DROP - {b"upgrade"}
_SQUASHED_FRAMING = (b"contentlength", b"transferencoding")


def _lookalike(lname):
    # "Content_Length", "Transfer--Encoding", "contentlength"...: look-alikes of the framing
    # headers that a server normalizing '-'/'_' would take as framing (the real names are in
    # _CLASSES and never get here)
    return (len(lname) >= 13 and lname[0] in b"ct"
            and lname.replace(b"-", b"").replace(b"_", b"") in _SQUASHED_FRAMING)


def _bad_field_line(line, status):
    # the reason for a field line the fast regex refused (error path only)
    if line[:1] in (b" ", b"\t"):
        raise HttpError(status, "obsolete line folding or leading whitespace")
    colon = line.find(b":")
    name = line if colon < 0 else line[:colon]
    m = _TOKEN_RE.match(name)
    k = m.end() if m else 0
    if k < len(name):
        c = name[k:k + 1]
        if c == b"\n":
            raise HttpError(status, "bare LF")
        if c == b"\r":
            raise HttpError(status, "bare CR")
        if c in (b" ", b"\t"):
            raise HttpError(status, "whitespace between header name and colon")
        raise HttpError(status, "invalid character in header name")
    if colon < 0:
        raise HttpError(status, "header line without colon")
    if colon == 0:
        raise HttpError(status, "empty header name")
    if b"\n" in line:
        raise HttpError(status, "bare LF")
    if b"\r" in line:
        raise HttpError(status, "bare CR")
    raise HttpError(status, "control character in header value")


def _bad_partial_line(rest, status):
    # an incomplete last line: reject what can already be seen to be invalid (as the Cython
    # parser does byte by byte), else wait for more
    if _FIELD_LINE_PREFIX_RE.fullmatch(rest) is None:
        _bad_field_line(rest, status)


def _too_many(next_line, status, syntax_status):
    # a 101st field line: the Cython parser sees a CR at a line start (end of head, or a bare
    # CR) before it counts the line
    if next_line[:1] == b"\r":
        raise HttpError(syntax_status, "bare CR")
    raise HttpError(status, "too many header fields")


def _incomplete_section(buf, hs, max_head_bytes, version, response, strip_envoy, drop, f):
    """A header section without its end (or beyond the size limit): the complete lines within
    the limit and the start of the next one are checked as the Cython parser checks them while
    the head arrives; then 431 (502) if more bytes than the limit are there, else wait."""
    status = 502 if response else 431
    view = buf[hs:hs + max_head_bytes]
    last = view.rfind(b"\r\n")
    lines = view[:last].split(b"\r\n") if last > 0 else []
    if len(lines) > MAX_HEADERS:
        _header_section(lines[:MAX_HEADERS], False, version, response, strip_envoy, drop, f, [], [])
        _too_many(lines[MAX_HEADERS], status, 502 if response else 400)
    _header_section(lines, False, version, response, strip_envoy, drop, f, [], [])
    rest = view[last + 2:] if last >= 0 else view
    if len(lines) == MAX_HEADERS and rest and rest != b"\r":
        _too_many(rest, status, 502 if response else 400)
    _bad_partial_line(rest, 502 if response else 400)
    if len(buf) - hs > max_head_bytes:
        raise HttpError(status, "header section too large")


def _split_list(value):
    # #token lists (Connection, Transfer-Encoding): elements OWS-trimmed, empty ones ignored
    out = []
    for el in value.split(b","):
        el = el.strip(b" \t")
        if el:
            if _TOKEN_RE.fullmatch(el) is None:
                return el, None
            out.append(el.lower())
    return None, out


class PyRequestHead:
    """What parse_request returns, as a plain Python object (_raw: the received bytes, kept
    as cyvoy keeps them for get())."""
    __slots__ = ("method", "target", "path", "host", "version", "content_length", "chunked",
                 "keep_alive", "expect_continue", "upgrade", "xff", "xfp", "request_id",
                 "headers", "head_len", "_raw")


class PyResponseHead:
    __slots__ = ("status", "version", "reason", "content_length", "chunked", "keep_alive",
                 "headers", "no_body", "head_len", "_raw")


class _Fields:
    """Per-message state of the header-section walk (class attributes are the defaults, so a
    message only pays for what its headers set)."""
    cl = -1
    te_chunked = te_last_chunked = te_other = False
    conn_close = conn_keep_alive = conn_upgrade = False
    expect_continue = False
    tokens = host = xfp = rid = xff = upgrade = None

    def __init__(self):
        self.count = [0] * 14


def _header_section(lines, validated, version, response, strip_envoy, drop, f, fwd, names):
    """Interprets complete field lines (and validates each one unless the caller validated the
    whole block already); appends the kept ones to fwd (as "Name: value") and their lower-case
    names to names."""
    status = 502 if response else 400
    classes_get = _CLASSES.get
    count = f.count
    for line in lines:
        if validated:
            name, _, value = line.partition(b":")
            value = value.strip(b" \t")
        else:
            m = _FIELD_LINE_RE.fullmatch(line)
            if m is None:
                _bad_field_line(line, status)
            name, value = m.groups()
            value = value.rstrip(b" \t")
        lname = name.lower()
        cls = classes_get(lname)
        if cls is None:
            if strip_envoy and lname[0] == 120 and lname.startswith(b"x-envoy-") and len(lname) > 8:
                continue
            if len(lname) >= 13 and lname[0] in b"ct" and _lookalike(lname):
                raise HttpError(status, "look-alike of a framing header (extra or missing '-', or '_')")
        else:
            count[cls] += 1
            if cls == H_CONTENT_LENGTH:
                if count[H_TRANSFER_ENCODING]:
                    raise HttpError(status, "content-length and transfer-encoding together")
                if count[H_CONTENT_LENGTH] > 1:
                    raise HttpError(status, "more than one content-length")
                if not value:
                    raise HttpError(status, "empty content-length")
                if not value.isdigit():          # bytes.isdigit: ASCII digits only
                    raise HttpError(status, "invalid content-length")
                f.cl = int(value)
                if f.cl > _LLONG_MAX:
                    raise HttpError(status, "content-length overflow")
            elif cls == H_TRANSFER_ENCODING:
                _py_transfer_encoding(value, version, response, status, f)
            elif cls == H_CONNECTION:
                _py_connection(value, status, strip_envoy, drop, f)
            elif not response:
                if cls == H_HOST:
                    if count[H_HOST] > 1:
                        raise HttpError(400, "more than one host header")
                    if value and _AUTHORITY_RE.fullmatch(value) is None:
                        raise HttpError(400, "invalid host header")
                    f.host = value
                elif cls == H_XFF:
                    if f.xff is None:
                        f.xff = [value]
                    else:
                        f.xff.append(value)
                elif cls == H_XFP:
                    if f.xfp is None:
                        f.xfp = value
                elif cls == H_XRID:
                    if f.rid is None:
                        f.rid = value
                elif cls == H_EXPECT:
                    if version == 11 and len(value) == 12 and value.lower() == b"100-continue":
                        f.expect_continue = True
                elif cls == H_UPGRADE:
                    if f.upgrade is None:
                        f.upgrade = [value]
                    else:
                        f.upgrade.append(value)
            if lname in drop:
                continue
        # kept: the line as received when it is already "Name: value", else rebuilt
        if value:
            nl = len(name)
            if len(line) == nl + 2 + len(value) and line[nl + 1] == 32:
                fwd.append(line)
            else:
                fwd.append(name + b": " + value)
        else:
            fwd.append(name + b":")
        names.append(lname)


def _py_transfer_encoding(value, version, response, status, f):
    if f.count[H_CONTENT_LENGTH]:
        raise HttpError(status, "content-length and transfer-encoding together")
    if version == 10:
        raise HttpError(status, "transfer-encoding in an HTTP/1.0 message")
    bad, codings = _split_list(value)
    if bad is not None:
        if b";" in bad:
            raise HttpError(status, "transfer-coding parameters are not supported")
        raise HttpError(status, "invalid transfer-encoding")
    if not codings:
        raise HttpError(status, "empty transfer-encoding")
    for c in codings:
        if c == b"chunked":
            if f.te_chunked:
                raise HttpError(status, "chunked applied more than once")
            f.te_chunked = f.te_last_chunked = True
        else:
            if f.te_chunked:
                raise HttpError(status, "chunked is not the final transfer-coding")
            if response:
                raise HttpError(status, "unsupported transfer-coding")
            f.te_other = True
            f.te_last_chunked = False


def _py_connection(value, status, strip_envoy, drop, f):
    bad, options = _split_list(value)
    if bad is not None:
        raise HttpError(status, "invalid connection option")
    for o in options:
        if o == b"close":
            f.conn_close = True
        elif o == b"keep-alive":
            f.conn_keep_alive = True
        elif o == b"upgrade":
            f.conn_upgrade = True
        elif not (o in drop or (strip_envoy and len(o) > 8 and o.startswith(b"x-envoy-"))):
            # a header the client declares hop-by-hop: not forwarded (RFC 9110 7.6.1)
            if f.tokens is None:
                f.tokens = [o]
            else:
                if len(f.tokens) >= MAX_CONN_TOKENS:
                    raise HttpError(status, "too many connection options")
                f.tokens.append(o)


def _forward_block(fwd, names, tokens):
    if tokens:
        fwd = [line for line, n in zip(fwd, names) if n not in tokens]
    if not fwd:
        return b""
    fwd.append(b"")
    return b"\r\n".join(fwd)


def _check_request_line(line, complete):
    """Raises for a request line (complete, or the start of one) that the fast path refused or
    that is still arriving, in the order in which the Cython parser meets the bytes; returns
    if an incomplete line is valid so far."""
    sp1 = line.find(b" ")
    method = line if sp1 < 0 else line[:sp1]
    m = _TOKEN_RE.match(method)
    if (m.end() if m else 0) != len(method):
        raise HttpError(400, "invalid method")
    if sp1 < 0:
        if complete:
            raise HttpError(400, "invalid method")
        return
    if sp1 == 0:
        raise HttpError(400, "invalid method")
    if method not in _METHODS:
        raise HttpError(501, "method not implemented")
    if method == b"PRI":
        raise HttpError(400, "PRI is the HTTP/2 connection preface")
    rest = line[sp1 + 1:]
    m = _TARGET_RE.match(rest)
    k = m.end() if m else 0
    if k == len(rest) and not complete:
        return
    if k == len(rest) or rest[k] != 32:
        raise HttpError(400, "invalid request-target")
    if k == 0:
        raise HttpError(400, "more than one SP after method")
    _target_form(method, rest[:k])
    v = rest[k + 1:]
    if complete:
        _version(v)
        raise AssertionError("request line accepted by the slow path: %r" % line)
    # a version still arriving: a prefix of "HTTP/" DIGIT "." DIGIT, then at most the CR
    if not b"HTTP/".startswith(v[:5]):
        raise HttpError(400, "malformed HTTP version")
    if len(v) > 5:
        if not 0x30 <= v[5] <= 0x39:
            raise HttpError(400, "malformed HTTP version")
        if v[5] != 0x31:
            raise HttpError(505, "HTTP version not supported")
    if len(v) > 6 and v[6] != 0x2E:
        raise HttpError(400, "malformed HTTP version")
    if len(v) > 7:
        if not 0x30 <= v[7] <= 0x39:
            raise HttpError(400, "malformed HTTP version")
        if v[7] > 0x31:
            raise HttpError(505, "HTTP version not supported")
    if len(v) > 8 and v[8:] != b"\r":
        raise HttpError(400, "malformed HTTP version")


def _version(v):
    # HTTP-version = "HTTP/" DIGIT "." DIGIT; returns 10 or 11
    if v == b"HTTP/1.1":
        return 11
    if v == b"HTTP/1.0":
        return 10
    if not v.startswith(b"HTTP/"):
        raise HttpError(400, "malformed HTTP version")
    if len(v) < 6 or not 0x30 <= v[5] <= 0x39:
        raise HttpError(400, "malformed HTTP version")
    if v[5] != 0x31:
        raise HttpError(505, "HTTP version not supported")
    if len(v) < 7 or v[6] != 0x2E:
        raise HttpError(400, "malformed HTTP version")
    if len(v) < 8 or not 0x30 <= v[7] <= 0x39:
        raise HttpError(400, "malformed HTTP version")
    if v[7] > 0x31:
        raise HttpError(505, "HTTP version not supported")
    raise HttpError(400, "malformed HTTP version")    # bytes after the version


def _target_form(method, target):
    """(path, authority or None) of a request-target (RFC 9112 3.2)."""
    if b"#" in target:
        raise HttpError(400, "fragment in request-target")
    if target[0] == 0x2F:
        if method == b"CONNECT":
            raise HttpError(400, "CONNECT requires an authority-form target")
        return target, None
    if target == b"*":
        if method != b"OPTIONS":
            raise HttpError(400, "asterisk-form target is only allowed for OPTIONS")
        return target, None
    if method == b"CONNECT":
        if _AUTHORITY_PORT_RE.fullmatch(target) is None:
            raise HttpError(400, "invalid authority-form target")
        return target, None
    m = _ABSOLUTE_RE.fullmatch(target)
    if m is None:
        raise HttpError(400, "invalid request-target")
    scheme, auth, path = m.groups()
    if scheme.lower() not in (b"http", b"https"):
        raise HttpError(400, "unsupported scheme in absolute-form target")
    if b"@" in auth:
        raise HttpError(400, "userinfo in request-target")
    if _AUTHORITY_RE.fullmatch(auth) is None:
        raise HttpError(400, "invalid authority in absolute-form target")
    if not path:
        path = b"/"
    elif path[0] != 0x2F:
        path = b"/" + path
    return path, auth


def _fields(buf, eol, max_head_bytes, version, response, strip_envoy, drop, too_many):
    """The header section after the start line ending at `eol`: (fields, forwarded lines, their
    names, end of the head), or None while incomplete. `too_many`: the statuses for more than
    MAX_HEADERS fields (_too_many)."""
    hs = eol + 2
    end = buf.find(b"\r\n\r\n", eol)
    f = _Fields()
    fwd = []
    names = []
    if end < 0 or end + 4 - hs > max_head_bytes:
        _incomplete_section(buf, hs, max_head_bytes, version, response, strip_envoy, drop, f)
        return None
    lines = buf[hs:end].split(b"\r\n") if end > eol else []
    # one regex pass validates every field line (token name, colon, field-value bytes, CRLF:
    # no bare CR or LF, no obs-fold, no whitespace before the colon); on failure the lines
    # are walked one by one to report the first error in order
    ok = _FIELD_BLOCK_RE.fullmatch(buf, hs, end + 2) is not None
    if len(lines) > MAX_HEADERS:
        _header_section(lines[:MAX_HEADERS], ok, version, response, strip_envoy, drop, f, fwd, names)
        _too_many(lines[MAX_HEADERS], *too_many)
    _header_section(lines, ok, version, response, strip_envoy, drop, f, fwd, names)
    return f, fwd, names, end + 4


def py_parse_request(buf, offset, max_head_bytes, strip_envoy):
    """Pure-Python parse_request: same contract (RequestHead-like object, None while
    incomplete, HttpError with the same status on invalid input)."""
    if type(buf) is not bytes:
        buf = bytes(buf)
    start = offset
    while buf.startswith(b"\r\n", start):          # RFC 9112 2.2: empty lines before the line
        start += 2
    eol = buf.find(b"\r\n", start)
    if eol < 0:
        if buf[start:start + 1] == b"\n":
            raise HttpError(400, "bare LF")
        if buf[start:start + 1] == b"\r":
            if len(buf) > start + 1:
                raise HttpError(400, "bare CR")
        else:
            _check_request_line(buf[start:offset + MAX_REQUEST_LINE + 2], False)
        if len(buf) - offset > MAX_REQUEST_LINE + 2:
            raise HttpError(414, "request line too long")
        return None
    if eol - offset > MAX_REQUEST_LINE:
        raise HttpError(414, "request line too long")
    line = buf[start:eol]
    parts = line.split(b" ")
    if len(parts) != 3:
        _check_request_line(line, True)
    method, target, version = parts
    if (method not in _METHODS or method == b"PRI" or not target
            or _TARGET_RE.fullmatch(target) is None):
        _check_request_line(line, True)
    path, authority = _target_form(method, target)
    version = _version(version)

    section = _fields(buf, eol, max_head_bytes, version, False, strip_envoy, _REQ_DROP, (431, 400))
    if section is None:
        return None
    f, fwd, names, head_end = section

    count = f.count
    if version == 11 and not count[H_HOST]:
        raise HttpError(400, "missing host header")
    if count[H_TRANSFER_ENCODING]:
        if not f.te_last_chunked:
            raise HttpError(400, "chunked is not the final transfer-coding")
        if f.te_other:
            raise HttpError(501, "unsupported transfer-coding")
    if method == b"CONNECT" and (f.te_chunked or f.cl > 0):
        raise HttpError(400, "CONNECT request with content")

    r = PyRequestHead()
    r.method = method
    r.target = target
    r.path = path
    r.host = authority if authority is not None else (f.host if f.host is not None else b"")
    r.version = version
    r.content_length = f.cl
    r.chunked = f.te_chunked
    r.keep_alive = (not f.conn_close) if version == 11 else (f.conn_keep_alive and not f.conn_close)
    r.expect_continue = f.expect_continue
    r.upgrade = (b", ".join(f.upgrade) if f.conn_upgrade and version == 11 and f.upgrade
                 else None)
    r.xff = None if f.xff is None else (f.xff[0] if len(f.xff) == 1 else b", ".join(f.xff))
    r.xfp = f.xfp
    r.request_id = f.rid
    r.headers = _forward_block(fwd, names, f.tokens)
    r.head_len = head_end - offset
    r._raw = buf
    return r


def py_parse_response(buf, offset, max_head_bytes):
    """Pure-Python parse_response (every error is HttpError(502, ...))."""
    if type(buf) is not bytes:
        buf = bytes(buf)
    eol = buf.find(b"\r\n", offset)
    if eol < 0:
        part = buf[offset:offset + MAX_REQUEST_LINE + 2]
        if _STATUS_LINE_PREFIX_RE.fullmatch(part) is None or (
                len(part) >= 12 and not 100 <= int(part[9:12]) <= 599):
            raise HttpError(502, "malformed status line")
        if len(buf) - offset > MAX_REQUEST_LINE + 2:
            raise HttpError(502, "status line too long")
        return None
    if eol - offset > MAX_REQUEST_LINE:
        raise HttpError(502, "status line too long")
    line = buf[offset:eol]
    v = line[:9]
    if v == b"HTTP/1.1 ":
        version = 11
    elif v == b"HTTP/1.0 ":
        version = 10
    else:
        raise HttpError(502, "malformed status line")
    code = line[9:12]
    if len(code) != 3 or not code.isdigit():
        raise HttpError(502, "malformed status code")
    status = int(code)
    if status < 100 or status > 599:
        raise HttpError(502, "status code out of range")
    if len(line) == 12:
        reason = b""
    elif line[12] == 32:
        reason = line[13:]
        if reason and _FIELD_VALUE_RE.fullmatch(reason) is None:
            raise HttpError(502, "invalid character in status line")
    else:
        raise HttpError(502, "malformed status line")

    section = _fields(buf, eol, max_head_bytes, version, True, False,
                      _RESP_DROP_101 if status == 101 else _RESP_DROP, (502, 502))
    if section is None:
        return None
    f, fwd, names, head_end = section

    r = PyResponseHead()
    r.status = status
    r.version = version
    r.reason = reason
    r.content_length = f.cl
    r.chunked = f.te_chunked
    r.no_body = no_body = status < 200 or status == 204 or status == 304
    keep = (not f.conn_close) if version == 11 else (f.conn_keep_alive and not f.conn_close)
    if not no_body and not f.te_chunked and f.cl < 0:
        keep = False                       # RFC 9112 6.3 rule 8: delimited by close
    r.keep_alive = keep
    r.headers = _forward_block(fwd, names, f.tokens)
    r.head_len = head_end - offset
    r._raw = buf
    return r


REQ_FIELDS = ("method", "target", "path", "host", "version", "content_length", "chunked",
              "keep_alive", "expect_continue", "upgrade", "xff", "xfp", "request_id", "headers",
              "head_len")
RESP_FIELDS = ("status", "version", "reason", "content_length", "chunked", "keep_alive",
               "headers", "no_body", "head_len")

# ---------------------------------------------------------------------------------------------
# pure-Python chunked decoder: the semantics of http1.ChunkedDecoder (RFC 9112 7.1)

_CHUNK_EXT = (rb"(?:[ \t]*;[ \t]*[%s]+(?:[ \t]*=[ \t]*(?:[%s]+|\"(?:[%s]|\\[%s])*\"))?)*"
              % (_TCHAR, _TCHAR, _QDTEXT, _FIELD))
_SIZE_LINE_RE = re.compile(rb"([0-9A-Fa-f]+)(%s)\r" % _CHUNK_EXT)
# the start of a size line (what a feed may end in): digits, whole extensions, then the start
# of one more or the CR
_CHUNK_EXT_START = (rb"[ \t]*(?:;[ \t]*(?:[%s]+(?:[ \t]*(?:=[ \t]*(?:[%s]+|\"(?:[%s]|\\[%s])*"
                    rb"(?:\\|\")?)?)?)?)?)?" % (_TCHAR, _TCHAR, _QDTEXT, _FIELD))
_SIZE_LINE_PREFIX_RE = re.compile(rb"(?:([0-9A-Fa-f]+)(?:%s(?:\r|%s)))?"
                                  % (_CHUNK_EXT, _CHUNK_EXT_START))
_TRAILER_LINE_RE = re.compile(rb"([%s]+):[%s]*\r" % (_TCHAR, _FIELD))
_SIZE_ONLY_RE = re.compile(rb"([0-9A-Fa-f]{1,16})\r\n")
_NEXT_CHUNK_RE = re.compile(rb"\r\n([0-9A-Fa-f]{1,16})\r\n")
_C_SIZE, _C_DATA, _C_DATA_CR, _C_DATA_LF, _C_TRAILERS, _C_DONE = range(6)


class PyChunkedDecoder:
    """Incremental: sizes, extensions, CRLFs and trailers may be split anywhere between feeds.
    Lines (size lines, trailer lines) are found with bytes.find and checked with one regex;
    payload is sliced out with memoryviews and joined once."""
    __slots__ = ("done", "consumed", "trailers", "_state", "_remaining", "_line", "_tr",
                 "_tr_len", "_max_ext", "_max_trailer")

    def __init__(self, max_chunk_ext=1024, max_trailer_bytes=16384):
        self._max_ext = max_chunk_ext
        self._max_trailer = max_trailer_bytes
        self.done = False
        self.consumed = 0
        self.trailers = b""
        self._state = _C_SIZE
        self._remaining = 0
        self._line = b""          # an incomplete size or trailer line carried to the next feed
        self._tr = None
        self._tr_len = 0

    def _partial_size_line(self):
        # reject what is already wrong in a size line cut by the end of a feed
        line = self._line
        m = _SIZE_LINE_PREFIX_RE.fullmatch(line)
        if m is None:
            raise HttpError(400, "invalid chunk size line")
        digits = m.group(1) or b""
        if len(digits) > 16:
            raise HttpError(400, "chunk size has more than 16 hex digits")
        if digits and int(digits, 16) >> 63:
            raise HttpError(400, "chunk size overflow")
        if len(line) - len(digits) - line.endswith(b"\r") > self._max_ext:
            raise HttpError(400, "chunk extension too long")

    def feed(self, buf, offset=0):
        state = self._state
        if state == _C_DONE:
            self.consumed = 0
            return b""
        n = len(buf)
        i = offset
        out = None
        mv = None
        find = buf.find
        rem = self._remaining
        next_chunk = _NEXT_CHUNK_RE.match
        size_line = _SIZE_ONLY_RE.match
        while i < n:
            if state == _C_DATA:
                j = i + rem
                if j > n:
                    j = n
                if mv is None:
                    mv = memoryview(buf)
                    out = [mv[i:j]]
                else:
                    out.append(mv[i:j])
                rem -= j - i
                i = j
                if not rem:
                    state = _C_DATA_CR
                    # fast path, the usual case: CRLF and a size line without extensions
                    m = next_chunk(buf, i)
                    if m is not None:
                        size = int(m.group(1), 16)
                        if size and not size >> 63:
                            rem = size
                            state = _C_DATA
                            i = m.end()
            elif state == _C_SIZE:
                if not self._line:
                    m = size_line(buf, i)       # fast path: digits and CRLF
                    if m is not None:
                        size = int(m.group(1), 16)
                        if size and not size >> 63:
                            rem = size
                            state = _C_DATA
                            i = m.end()
                            continue
                j = find(b"\n", i)
                if j < 0:
                    self._line += buf[i:n]
                    self._partial_size_line()
                    i = n
                    break
                if self._line:
                    line = self._line + buf[i:j]
                    self._line = b""
                else:
                    line = buf[i:j]
                i = j + 1
                m = _SIZE_LINE_RE.fullmatch(line)
                if m is None:
                    raise HttpError(400, "invalid chunk size line")
                digits, ext = m.groups()
                if len(digits) > 16:
                    raise HttpError(400, "chunk size has more than 16 hex digits")
                if len(ext) > self._max_ext:
                    raise HttpError(400, "chunk extension too long")
                size = int(digits, 16)
                if size >> 63:
                    raise HttpError(400, "chunk size overflow")
                if size:
                    rem = size
                    state = _C_DATA
                else:
                    state = _C_TRAILERS
            elif state == _C_DATA_CR:
                if buf[i] != 13:
                    raise HttpError(400, "missing CRLF after chunk data")
                if i + 1 < n:
                    if buf[i + 1] != 10:
                        raise HttpError(400, "missing CRLF after chunk data")
                    i += 2
                    state = _C_SIZE
                else:
                    i += 1
                    state = _C_DATA_LF
            elif state == _C_DATA_LF:
                if buf[i] != 10:
                    raise HttpError(400, "missing CRLF after chunk data")
                i += 1
                state = _C_SIZE
            else:   # _C_TRAILERS
                j = find(b"\n", i)
                if j < 0:
                    self._line += buf[i:n]
                    if _FIELD_LINE_PREFIX_RE.fullmatch(self._line) is None:
                        raise HttpError(400, "invalid trailer field")
                    if self._tr_len + len(self._line) > self._max_trailer + (
                            1 if self._line.endswith(b"\r") else 0):
                        raise HttpError(400, "trailers too large")
                    i = n
                    break
                if self._line:
                    line = self._line + buf[i:j]
                    self._line = b""
                else:
                    line = buf[i:j]
                i = j + 1
                if line == b"\r":
                    state = _C_DONE
                    break
                m = _TRAILER_LINE_RE.fullmatch(line)
                if m is None:
                    raise HttpError(400, "invalid trailer field")
                self._tr_len += len(line) + 1
                if self._tr_len > self._max_trailer:
                    raise HttpError(400, "trailers too large")
                if self._tr is None:
                    self._tr = [line, b"\n"]
                else:
                    self._tr += (line, b"\n")
        self._remaining = rem
        self._state = state
        if state == _C_DONE:
            if self._tr:
                for k in range(0, len(self._tr), 2):
                    lname = self._tr[k][:self._tr[k].index(b":")].lower()
                    if lname in (b"content-length", b"transfer-encoding") or _lookalike(lname):
                        # RFC 9110 6.5.1: framing fields cannot be sent as trailers
                        raise HttpError(400, "framing field in the trailer section")
                self.trailers = b"".join(self._tr)
            self.done = True
            self.consumed = i - offset
        else:
            self.consumed = n - offset
        if out is None:
            return b""
        return b"".join(out)


def chunked_body(size, chunk):
    body = bytes(random.Random(size).getrandbits(8) for _ in range(256)) * (size // 256)
    enc = b"".join(http1.encode_chunk(body[k:k + chunk]) for k in range(0, size, chunk))
    return body, enc + http1.last_chunk()


# ---------------------------------------------------------------------------------------------
# pure-Python upstream request head: forward.upstream_request_head's output

_getrandbits = random.getrandbits
_UUID_CLEAR = ~((0xF << 76) | (0x3 << 62))
_UUID_SET = (0x4 << 76) | (0x2 << 62)          # version 4, variant 10


def _py_request_id():
    # a random version-4 UUID (RFC 9562 5.4) from the Mersenne Twister: like the Cython
    # xoshiro256**, fast and good enough for request ids, not for secrets
    h = b"%032x" % ((_getrandbits(128) & _UUID_CLEAR) | _UUID_SET)
    return b"%s-%s-%s-%s-%s" % (h[:8], h[8:12], h[12:16], h[16:20], h[20:])


def _unsafe(b):
    return any(c <= 0x20 or c == 0x7F for c in b)


def py_upstream_request_head(head, path, host, headers, use_remote_address, peer, scheme,
                             generate_request_id, extra):
    if path is not head.path and (not path or _unsafe(path)):
        raise ValueError("rewritten path would break the request line")
    if host is not head.host and _unsafe(host):
        raise ValueError("rewritten host would break the Host line")
    parts = [head.method, b" ", path, b" HTTP/1.1\r\nHost: ", host, b"\r\n", headers]
    xff = head.xff
    if use_remote_address:
        if xff is not None:
            parts += (b"x-forwarded-for: ", xff, b",", peer, b"\r\n")
        else:
            parts += (b"x-forwarded-for: ", peer, b"\r\n")
    elif xff is not None:
        parts += (b"x-forwarded-for: ", xff, b"\r\n")
    parts += (b"x-forwarded-proto: ",
              scheme if (use_remote_address or head.xfp is None) else head.xfp, b"\r\n")
    rid = head.request_id
    if rid is not None:
        parts += (b"x-request-id: ", rid, b"\r\n")
    elif generate_request_id:
        parts += (b"x-request-id: ", _py_request_id(), b"\r\n")
    parts.append(extra)
    if head.chunked:
        parts.append(b"Transfer-Encoding: chunked\r\n")
    elif head.content_length >= 0:
        parts.append(b"Content-Length: %d\r\n" % head.content_length)
    parts.append(b"\r\n")
    return b"".join(parts)


_UUID4_RE = re.compile(rb"x-request-id: [0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-"
                       rb"[0-9a-f]{12}\r\n")

# ---------------------------------------------------------------------------------------------
# httptools protocols


class ProxyRequestProto:
    """What a proxy needs from llhttp: the URL, the header list, and at headers-complete the
    method and keep-alive; the per-message state is handed over and reset there."""
    __slots__ = ("parser", "url", "headers", "result")

    def __init__(self):
        self.parser = None
        self.url = None
        self.headers = []
        self.result = None

    def on_url(self, url):
        self.url = url

    def on_header(self, name, value):
        self.headers.append((name, value))

    def on_headers_complete(self):
        p = self.parser
        self.result = (p.get_method(), self.url, self.headers, p.should_keep_alive())
        self.headers = []


class ProxyResponseProto:
    __slots__ = ("parser", "status", "headers", "result")

    def __init__(self):
        self.parser = None
        self.status = None
        self.headers = []
        self.result = None

    def on_status(self, status):
        self.status = status

    def on_header(self, name, value):
        self.headers.append((name, value))

    def on_headers_complete(self):
        p = self.parser
        self.result = (p.get_status_code(), self.headers, p.should_keep_alive())
        self.headers = []


# ---------------------------------------------------------------------------------------------
# correctness: every pure-Python equivalent against cyvoy's output


def _outcome(fn, *args):
    try:
        return fn(*args)
    except HttpError as e:
        return ("error", e.status)


def _same_head(a, b, fields):
    return all(getattr(a, k) == getattr(b, k) for k in fields)


REQUEST_CASES = [
    REQUEST, REQUEST_NO_ID, REQUEST_POST,
    b"\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GET / HTTP/1.0\r\n\r\n",
    b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
    b"GET http://Example.com:8080?x=1 HTTP/1.1\r\nHost: other\r\n\r\n",
    b"GET https://example.com/p/q HTTP/1.1\r\nHost: example.com\r\n\r\n",
    b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n",
    b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n",
    b"POST /u HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nExpect: 100-Continue\r\n\r\n",
    b"POST /u HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
    b"GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade, X-Foo\r\n"
    b"X-Foo: 1\r\nX-Bar:2\r\nX-Baz:  \t\r\nX-Envoy-Original-Path: /x\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 1.1.1.1\r\nX-Forwarded-For: 2.2.2.2\r\n"
    b"X-Forwarded-Proto: https\r\nConnection: close\r\nKeep-Alive: 5\r\nTE: trailers\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: [::1]:8080\r\nEmpty:\r\n\r\n",
    # invalid
    b"GET / HTTP/1.1\r\nHost: a\r\n X-Fold: b\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\nX: b\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\rX: b\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost : a\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +1\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: a\r\nContent_Length: 5\r\n\r\n",
    b"GET / HTTP/1.1\r\nX: a\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a,b\r\n\r\n",
    b"FOO / HTTP/1.1\r\nHost: a\r\n\r\n",
    b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
    b"GET / HTTP/2.0\r\nHost: a\r\n\r\n",
    b"GET / HTTP/1.2\r\nHost: a\r\n\r\n",
    b"GET / http/1.1\r\nHost: a\r\n\r\n",
    b"GET  / HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GET /a#b HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GET * HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GET ftp://a/ HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GET http://u@a/ HTTP/1.1\r\nHost: a\r\n\r\n",
    b"CONNECT a HTTP/1.1\r\nHost: a\r\n\r\n",
    b"CONNECT a:443 HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nX: a\x00b\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nX\x7f: b\r\n\r\n",
    b"GET /\x80 HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GET / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nConnection: a b\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked;q=1\r\n\r\n",
    b"GET / HTTP/1.1 \r\nHost: a\r\n\r\n",
    b"GET / HTTP/1.1\r\n" + b"X: y\r\n" * 101 + b"Host: a\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nX: " + b"v" * 70000 + b"\r\n\r\n",
]

RESPONSE_CASES = [
    RESPONSE,
    b"HTTP/1.1 204 No Content\r\nServer: x\r\n\r\n",
    b"HTTP/1.1 304\r\nETag: x\r\n\r\n",
    b"HTTP/1.0 200 OK\r\nContent-Length: 3\r\nConnection: keep-alive\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close, X-A\r\nX-A: 1\r\n\r\n",
    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
    b"HTTP/1.1 500 Internal Server Error\r\nX:   y  \r\nContent-Length: 0\r\n\r\n",
    # invalid
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
    b"HTTP/1.1 99 OK\r\n\r\n",
    b"HTTP/1.1 2000 OK\r\n\r\n",
    b"HTTP/2 200\r\n\r\n",
    b"HTTP/1.1 200 OK\r\n Fold: x\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nX: a\nY: b\r\n\r\n",
    b"HTTP/1.1 200 O\x01K\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer_Encoding: chunked\r\n\r\n",
]


def _chunked_outcome(cls, pieces):
    d = cls()
    out = []
    try:
        for p in pieces:
            out.append(d.feed(p))
            if d.done:
                break
    except HttpError as e:
        return ("error", e.status)
    return b"".join(out), d.done, d.trailers, d.consumed


CHUNKED_CASES = [
    b"5\r\nhello\r\n0\r\n\r\n",
    b"5;a=b;c=\"d\\\"e\" ;f\r\nhello\r\n000\r\nX-T: 1\r\nY:2 \r\n\r\nEXTRA",
    b"A\r\n0123456789\r\n0\r\n\r\n",
    b"5 \r\nhello\r\n0\r\n\r\n",
    b"5;\r\nhello\r\n0\r\n\r\n",
    b"-5\r\nhello\r\n0\r\n\r\n",
    b"0x5\r\nhello\r\n0\r\n\r\n",
    b"5\nhello\r\n0\r\n\r\n",
    b"5\r\nhelloX\r\n0\r\n\r\n",
    b"10000000000000000\r\n",
    b"0\r\nContent-Length: 5\r\n\r\n",
    b"0\r\n Fold: x\r\n\r\n",
]


def _check_head(fa, fb, raw, args, fields):
    a = _outcome(fa, raw, 0, *args)
    b = _outcome(fb, raw, 0, *args)
    if a is None or b is None or isinstance(a, tuple) or isinstance(b, tuple):
        assert a == b, ("outcome differs", raw[:200], args, a, b)
    else:
        diff = [(k, getattr(a, k), getattr(b, k)) for k in fields if getattr(a, k) != getattr(b, k)]
        assert not diff, ("fields differ", raw[:200], args, diff)


def _check_chunked(pieces):
    a = _chunked_outcome(http1.ChunkedDecoder, pieces)
    b = _chunked_outcome(PyChunkedDecoder, pieces)
    assert a == b, ("chunked outcome differs", pieces, a, b)
    return a


_MUTATION_BYTES = b"\r\n :\t;,_-aZ0\x00\x7f\x80/@#*?=\"1H.T"


def _mutate(rng, raw):
    """1-3 random byte replacements, insertions or deletions; sometimes cut short."""
    raw = bytearray(raw)
    for _ in range(rng.randint(1, 3)):
        op, k = rng.random(), rng.randrange(len(raw) + 1)
        if op < 0.4 and raw:
            raw[k % len(raw)] = rng.choice(_MUTATION_BYTES)
        elif op < 0.7:
            raw[k:k] = bytes([rng.choice(_MUTATION_BYTES)])
        else:
            del raw[k:k + rng.randint(1, 3)]
    if rng.random() < 0.3:
        del raw[rng.randrange(len(raw) + 1):]
    return bytes(raw)


def check_equivalence(mutations=2000):
    """Asserts that each pure-Python equivalent gives cyvoy's result: the same head fields, or
    None (incomplete) for both, or HttpError with the same status; the same decoded body,
    trailers, done and consumed, or the same error; the same upstream head bytes. Returns the
    number of comparisons."""
    n = 0
    for strip in (True, False):
        for raw in REQUEST_CASES:
            _check_head(http1.parse_request, py_parse_request, raw, (MAX_HEAD, strip), REQ_FIELDS)
            n += 1
    for raw in RESPONSE_CASES:
        _check_head(http1.parse_response, py_parse_response, raw, (MAX_HEAD,), RESP_FIELDS)
        n += 1
    # every proper prefix of the sample heads is incomplete for both; an offset works alike
    for raw, fa, fb, args, fields in (
            (REQUEST, http1.parse_request, py_parse_request, (MAX_HEAD, True), REQ_FIELDS),
            (REQUEST_POST, http1.parse_request, py_parse_request, (MAX_HEAD, True), REQ_FIELDS),
            (RESPONSE, http1.parse_response, py_parse_response, (MAX_HEAD,), RESP_FIELDS)):
        for k in range(len(raw)):
            assert fa(raw[:k], 0, *args) is None and fb(raw[:k], 0, *args) is None, (raw, k)
            n += 1
        assert _same_head(fa(b"xx" + raw, 2, *args), fb(b"xx" + raw, 2, *args), fields)
    # chunked: whole, split at every point, and byte by byte
    for raw in CHUNKED_CASES:
        for pieces in ([raw], [raw[i:i + 1] for i in range(len(raw))],
                       *([raw[:k], raw[k:]] for k in range(1, len(raw)))):
            _check_chunked(pieces)
            n += 1
    for size, chunk in ((16384, 1024), (262144, 16384)):
        body, enc = chunked_body(size, chunk)
        for seg in (len(enc), 1460, 997):
            a = _check_chunked([enc[k:k + seg] for k in range(0, len(enc), seg)])
            assert a[0] == body and a[1], (size, seg)
            n += 1
    # random mutations of all the above (deterministic seed): valid and invalid inputs,
    # complete and cut short, small header limits; chunked cut into up to 5 pieces
    rng = random.Random(20261124)
    for _ in range(mutations):
        raw = _mutate(rng, rng.choice(REQUEST_CASES))
        limit = rng.choice((MAX_HEAD, MAX_HEAD, 40, 100, 300))
        _check_head(http1.parse_request, py_parse_request, raw, (limit, rng.random() < 0.5),
                    REQ_FIELDS)
        raw = _mutate(rng, rng.choice(RESPONSE_CASES))
        _check_head(http1.parse_response, py_parse_response, raw, (limit,), RESP_FIELDS)
        raw = rng.choice(CHUNKED_CASES)
        if rng.random() < 0.8:
            raw = _mutate(rng, raw)
        cuts = sorted(rng.sample(range(len(raw) + 1), min(len(raw) + 1, rng.randint(0, 4))))
        _check_chunked([raw[a:b] for a, b in zip([0] + cuts, cuts + [len(raw)])])
        n += 3
    # upstream head: identical bytes once the generated request id is masked
    for raw in (REQUEST, REQUEST_NO_ID, REQUEST_POST):
        hc = http1.parse_request(raw, 0, MAX_HEAD, True)
        hp = py_parse_request(raw, 0, MAX_HEAD, True)
        for use_remote in (True, False):
            for gen in (True, False):
                args = (use_remote, PEER, SCHEME, gen, TIMEOUT_LINE)
                a = forward.upstream_request_head(hc, hc.path, hc.host, hc.headers, *args)
                b = py_upstream_request_head(hp, hp.path, hp.host, hp.headers, *args)
                if hc.request_id is None and gen:
                    assert _UUID4_RE.search(a) and _UUID4_RE.search(b), (a, b)
                    a = _UUID4_RE.sub(b"x-request-id: *\r\n", a)
                    b = _UUID4_RE.sub(b"x-request-id: *\r\n", b)
                assert a == b, (a, b)
                n += 1
    return n


# ---------------------------------------------------------------------------------------------
# timing


class Timer:
    def __init__(self, loops, repeat, target):
        self.loops = loops
        self.repeat = repeat
        self.target = target

    def ns(self, stmt, env, ops=1, loops=None):
        """ns per operation of `stmt` (a statement string, run in `env`; `ops` operations per
        run of it): calibrated, one warm-up run, best of `repeat`."""
        t = timeit.Timer(stmt, globals=env)
        number = loops or self.loops
        if not number:
            number = 1
            while True:
                dt = t.timeit(number)
                if dt >= self.target / 5:
                    number = max(1, int(number * self.target / dt))
                    break
                number *= 4
        t.timeit(number)                                  # warm-up
        return min(t.repeat(self.repeat, number)) / (number * ops) * 1e9

    def c_loop(self, lb, hashed, picks=None):
        """ns per pick of LB.bench (n picks in a C loop; the hash varies per pick)."""
        n = picks or self.loops or 0
        if n:
            # at least as many picks as the Python loop has keys: with few, the same short key
            # sequence every run lets caches and branch predictors learn it (RING_HASH)
            n = max(n, LB_KEYS)
        else:
            n = 1000
            while True:
                dt = lb.bench(n, 0x9E3779B97F4A7C15, hashed, hashed) / 1e9
                if dt >= self.target / 5:
                    n = max(1, int(n * self.target / dt))
                    break
                n *= 4
        lb.bench(n, 0x9E3779B97F4A7C15, hashed, hashed)   # warm-up
        return min(lb.bench(n, 0x9E3779B97F4A7C15, hashed, hashed) for _ in range(self.repeat)) / n


def machine():
    info = {"python": sys.version.split()[0], "httptools": httptools.__version__,
            "h11": h11.__version__ if h11 is not None else "not installed",
            "nproc": os.cpu_count(), "platform": platform.platform()}
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=5).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                info["cpu"] = line.split(":", 1)[1].strip()
    except (OSError, subprocess.SubprocessError):
        pass
    try:
        info["nproc"] = int(subprocess.run(["nproc"], capture_output=True, text=True,
                                           timeout=5).stdout)
    except (OSError, subprocess.SubprocessError, ValueError):
        pass
    return info


SECTIONS = ("request", "response", "chunked", "upstream", "lb")
W = 58      # name column


def run(timer, only=None):
    """Times every case; prints each figure as it comes; returns the rows."""
    rows = []

    def section(title):
        print(title, flush=True)
        return title

    def add(sec, name, stmt, env, base=False, ref=False, **kw):
        ns = timer.ns(stmt, env, **kw)
        rows.append({"section": sec, "name": name, "ns": round(ns, 1), "baseline": base,
                     "reference": ref})
        print(f"  {name:<{W}} {ns:>9.0f} ns", flush=True)

    # 1. request head ------------------------------------------------------------------------
    if only is None or "request" in only:
        s = section(f"request head parse ({len(REQUEST)} B, 10 headers)")
        proto = ProxyRequestProto()
        parser = httptools.HttpRequestParser(proto)
        proto.parser = parser
        parser.feed_data(REQUEST)
        assert proto.result[0] == b"GET" and len(proto.result[2]) == 10, proto.result

        def new_parser(req=REQUEST, P=httptools.HttpRequestParser, Proto=ProxyRequestProto):
            p = Proto()
            p.parser = P(p)
            p.parser.feed_data(req)
            return p.result
        assert new_parser() == proto.result
        env = {"C": http1.parse_request, "Py": py_parse_request, "req": REQUEST,
               "parser": parser, "bare": httptools.HttpRequestParser(None),
               "new_parser": new_parser}
        add(s, "cyvoy http1.parse_request", "C(req, 0, 65536, True)", env, base=True)
        add(s, "httptools, reused parser, proxy callbacks (1)", "parser.feed_data(req)", env)
        add(s, "httptools, new parser per request, proxy callbacks (1)", "new_parser()", env)
        add(s, "httptools, reused parser, no callbacks (2)", "bare.feed_data(req)", env)
        if h11 is not None:
            def h11_request(req=REQUEST, Conn=h11.Connection, SERVER=h11.SERVER):
                c = Conn(SERVER)
                c.receive_data(req)
                return c.next_event()
            ev = h11_request()
            assert isinstance(ev, h11.Request) and len(ev.headers) == 10, ev
            env["h11_request"] = h11_request
            add(s, f"h11 {h11.__version__} (pure-Python library), new connection (3)",
                "h11_request()", env)
        add(s, "pure Python, this script's equivalent", "Py(req, 0, 65536, True)", env)

    # 2. response head -----------------------------------------------------------------------
    if only is None or "response" in only:
        s = section(f"response head parse ({len(RESPONSE)} B, 10 headers)")
        resp_body = RESPONSE + RESPONSE_BODY
        proto = ProxyResponseProto()
        rparser = httptools.HttpResponseParser(proto)
        proto.parser = rparser
        rparser.feed_data(resp_body)
        assert proto.result[0] == 200 and len(proto.result[1]) == 10, proto.result

        def new_rparser(resp=RESPONSE, P=httptools.HttpResponseParser, Proto=ProxyResponseProto):
            p = Proto()
            p.parser = P(p)
            p.parser.feed_data(resp)
            return p.result
        assert new_rparser() == proto.result
        env = {"C": http1.parse_response, "Py": py_parse_response, "resp": RESPONSE,
               "resp_body": resp_body, "rparser": rparser,
               "rbare": httptools.HttpResponseParser(None), "new_rparser": new_rparser}
        add(s, "cyvoy http1.parse_response", "C(resp, 0, 65536)", env, base=True)
        add(s, "httptools, reused parser, proxy callbacks (1)(4)", "rparser.feed_data(resp_body)",
            env)
        add(s, "httptools, new parser per response, proxy callbacks (1)", "new_rparser()", env)
        add(s, "httptools, reused parser, no callbacks (2)(4)", "rbare.feed_data(resp_body)", env)
        add(s, "pure Python, this script's equivalent", "Py(resp, 0, 65536)", env)

    # 3. chunked decode ----------------------------------------------------------------------
    if only is None or "chunked" in only:
        def feed_all(cls, pieces):
            d = cls()
            for p in pieces:
                d.feed(p)
            return d
        for size, chunk, seg in ((16384, 1024, None), (16384, 1024, 1460), (262144, 16384, None)):
            body, enc = chunked_body(size, chunk)
            pieces = [enc] if seg is None else [enc[k:k + seg] for k in range(0, len(enc), seg)]
            how = "one feed" if seg is None else f"fed in {len(pieces)} x {seg} B segments"
            s = section(f"chunked decode, {size // 1024} KiB body in {chunk // 1024} KiB chunks "
                        f"({len(enc)} B), {how}")
            assert feed_all(PyChunkedDecoder, pieces).done and feed_all(http1.ChunkedDecoder,
                                                                        pieces).done
            env = {"C": http1.ChunkedDecoder, "Py": PyChunkedDecoder, "pieces": pieces,
                   "enc": enc, "feed_all": feed_all}
            if seg is None:
                add(s, "cyvoy http1.ChunkedDecoder", "C().feed(enc)", env, base=True)
                add(s, "pure Python, this script's equivalent", "Py().feed(enc)", env)
            else:
                add(s, "cyvoy http1.ChunkedDecoder", "feed_all(C, pieces)", env, base=True)
                add(s, "pure Python, this script's equivalent", "feed_all(Py, pieces)", env)

    # 4. upstream request head ---------------------------------------------------------------
    if only is None or "upstream" in only:
        for label, raw in (("GET, 7 forwarded headers, x-request-id generated", REQUEST_NO_ID),
                           ("POST, 6 forwarded, Content-Length, client XFF and id kept",
                            REQUEST_POST)):
            hc = http1.parse_request(raw, 0, MAX_HEAD, True)
            hp = py_parse_request(raw, 0, MAX_HEAD, True)
            out = forward.upstream_request_head(hc, hc.path, hc.host, hc.headers, True, PEER,
                                                SCHEME, True, TIMEOUT_LINE)
            s = section(f"upstream request head ({label}; {len(out)} B)")
            env = {"C": forward.upstream_request_head, "Py": py_upstream_request_head,
                   "hc": hc, "hp": hp, "peer": PEER, "scheme": SCHEME, "extra": TIMEOUT_LINE,
                   "py_rid": _py_request_id, "c_rid": forward.request_id}
            add(s, "cyvoy forward.upstream_request_head",
                "C(hc, hc.path, hc.host, hc.headers, True, peer, scheme, True, extra)", env,
                base=True)
            add(s, "pure Python, this script's equivalent",
                "Py(hp, hp.path, hp.host, hp.headers, True, peer, scheme, True, extra)", env)
            if hc.request_id is None:
                add(s, "  of which the request id: pure Python (getrandbits)", "py_rid()", env,
                    ref=True)
                add(s, "  for comparison: forward.request_id() called from Python",
                    "c_rid()", env, ref=True)

    # 5. pickers -----------------------------------------------------------------------------
    if only is None or "lb" in only:
        s = section("load-balancer pick, ns per pick: C loop (what connection.pyx pays) | "
                    "call from Python")
        rng = random.Random(1)
        keys = [rng.getrandbits(64) for _ in range(LB_KEYS)]    # a different hash per pick
        loops = max(1, timer.loops // LB_KEYS) if timer.loops else None

        def noop(k, h):
            return 0
        call_ref = timer.ns("for k in keys: pick(k, h)", {"pick": noop, "keys": keys, "h": False},
                            ops=LB_KEYS, loops=loops)
        for name, cfg, weighted, hashed in micro_lb.CASES:
            for hosts in (3, 100):
                table_, lb = micro_lb.build(hosts, cfg, weighted)
                c = timer.c_loop(lb, hashed)
                py = timer.ns("for k in keys: pick(k, h)", {"pick": lb.pick, "keys": keys,
                                                            "h": hashed}, ops=LB_KEYS, loops=loops)
                rows.append({"section": s, "name": f"{name}, {hosts} hosts", "ns": round(c, 1),
                             "py_call_ns": round(py, 1)})
                print(f"  {name + ', ' + str(hosts) + ' hosts':<{W}} {c:>9.1f} | {py:>5.0f}",
                      flush=True)
        rows.append({"section": s, "name": "reference: Python call of a no-op f(k, h)",
                     "ns": None, "py_call_ns": round(call_ref, 1)})
    return rows


LB_KEYS = 65536

NOTES = """\
(1) the callbacks a proxy needs: on_url / on_status, on_header (collects the (name, value)
    pairs), on_headers_complete (reads the method or status and should_keep_alive); the
    headers are not lower-cased, classified or validated beyond llhttp, no forward block.
(2) llhttp's own scan, nothing handed to Python: a lower bound, not a usable parser.
(3) h11: the request event with its headers lower-cased and validated; not checked here
    against cyvoy (different API), shown as a well-known pure-Python reference.
(4) the 1234-byte body is fed too: the reused parser must see it to take the next response."""


def table(rows):
    """The summary: ns per operation and, per section, how many times the cyvoy figure is faster
    than each alternative."""
    lines = []
    for s in dict.fromkeys(r["section"] for r in rows):
        rs = [r for r in rows if r["section"] == s]
        lines.append(s)
        if "py_call_ns" in rs[0]:
            for r in rs:
                c = "" if r["ns"] is None else f"{r['ns']:.1f}"
                lines.append(f"  {r['name']:<{W}} {c:>9} | {r['py_call_ns']:>5.0f}")
            continue
        base = next(r for r in rs if r["baseline"])
        for r in rs:
            ratio = ""
            if not r["baseline"] and not r["reference"]:
                r["cyvoy_speedup"] = round(r["ns"] / base["ns"], 2)
                ratio = f"cyvoy {r['ns'] / base['ns']:.1f}x faster"
            lines.append(f"  {r['name']:<{W}} {r['ns']:>9.0f} ns  {ratio}")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=0,
                    help="loops per timing run (default: calibrated to about --target s)")
    ap.add_argument("--repeat", type=int, default=5, help="timing runs per figure, best kept")
    ap.add_argument("--target", type=float, default=0.05,
                    help="seconds per timing run when calibrating (default 0.05)")
    ap.add_argument("--mutations", type=int, default=20000,
                    help="random mutated inputs in the equivalence check (default 20000)")
    ap.add_argument("--only", help="comma-separated sections: " + ",".join(SECTIONS))
    ap.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    args = ap.parse_args()
    only = None
    if args.only:
        only = set(args.only.split(","))
        if not only <= set(SECTIONS):
            ap.error("--only takes " + ",".join(SECTIONS))

    t0 = time.perf_counter()
    n = check_equivalence(args.mutations)
    print(f"equivalence: {n} comparisons of the pure-Python code with cyvoy's output passed "
          f"({time.perf_counter() - t0:.1f} s)")
    info = machine()
    print(f"machine: {info.get('cpu', '?')}, nproc {info['nproc']}; Python {info['python']}, "
          f"httptools {info['httptools']}, h11 {info['h11']}")
    print(f"timing: best of {args.repeat} runs of "
          f"{args.n if args.n else f'~{args.target} s (calibrated)'} after a warm-up run\n")
    gc.collect()
    rows = run(Timer(args.n, args.repeat, args.target), only)
    print(f"\nsummary (ns per operation, best of {args.repeat}):")
    print(table(rows))
    if only is None or {"request", "response"} & only:
        print(NOTES)
    elapsed = time.perf_counter() - t0
    print(f"\ntotal {elapsed:.0f} s")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"machine": info, "repeat": args.repeat,
                       "loops": args.n or "calibrated", "target_s": args.target,
                       "elapsed_s": round(elapsed, 1), "rows": rows}, fh, indent=1)
            fh.write("\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
