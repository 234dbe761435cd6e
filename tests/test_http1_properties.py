"""proxy._fastpath.http1: properties that hold for any input, valid or not (the invariants that
fuzz/fuzz_http1.py checks under libFuzzer, here as Hypothesis properties in the normal suite).

- prefix consistency: the head parsers are stateless and called with the whole buffered head each
  time bytes arrive, so for every prefix of an input the result is None, the same HttpError as for
  the whole input, or (once the prefix holds the head) the same head; no other exception;
- head_len never beyond the input, and the same result for bytes, bytearray, memoryview and at an
  offset;
- ChunkedDecoder: two pieces at any split point (and byte by byte) give the same payload, done,
  trailers, total consumed and error as one piece; consumed never beyond what was fed;
- where both cyvoy and httptools (llhttp) accept a head, they agree on where it ends, on method and
  target, and on the framing: feeding the body the way cyvoy frames it, llhttp completes the message
  exactly there; cyvoy never keeps alive a connection llhttp would close. cyvoy is deliberately
  stricter, so nothing is compared where llhttp refuses; nor for a 1xx response other than 100-103
  with framing headers, after which llhttp reads a body (RFC 9112 6.3: a 1xx has no content).
"""
from __future__ import annotations

import httptools
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from proxy._fastpath.http1 import ChunkedDecoder, HttpError, parse_request, parse_response

SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow])
REQUEST_STATUSES = {400, 414, 431, 501, 505}

# ---- generators: heads that are often valid, with the framing-relevant fields in many spellings

TOKEN = st.text("!#$%&'*+-.^_`|~abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789",
                min_size=1, max_size=12).map(str.encode)
OWS = st.sampled_from([b"", b" ", b"  ", b"\t", b" \t"])
VALUE = st.binary(max_size=20).map(lambda b: bytes(c for c in b if c >= 0x20 and c != 0x7F))
DIGITS = st.sampled_from([b"0", b"1", b"5", b"00", b"007", b"10", b"4096", b"99999999999999999999",
                          b"-1", b"+5", b"1 2", b"1,1", b"0x10", b""])
TE_VALUES = st.sampled_from([b"chunked", b"Chunked", b"CHUNKED", b"gzip, chunked", b"chunked, gzip",
                             b"chunked, chunked", b"chunked, ", b", chunked", b"identity",
                             b"chunked;q=1", b"x", b"", b"\"chunked\""])
CONNECTION = st.sampled_from([b"close", b"keep-alive", b"Keep-Alive, X-Hop", b"upgrade", b"close, x",
                              b"Upgrade, close", b"te", b"", b"closex", b"keep-alive, close"])
FRAMING_NAMES = st.sampled_from([b"Content-Length", b"content-length", b"Transfer-Encoding",
                                 b"transfer-encoding", b"Content_Length", b"Connection",
                                 b"Upgrade", b"Host", b"Expect", b"TE"])


@st.composite
def field_lines(draw, max_fields=6):
    lines = []
    for _ in range(draw(st.integers(0, max_fields))):
        kind = draw(st.integers(0, 4))
        if kind == 0:
            line = draw(TOKEN) + b":" + draw(OWS) + draw(VALUE)
        elif kind == 1:
            line = b"Content-Length:" + draw(OWS) + draw(DIGITS) + draw(OWS)
        elif kind == 2:
            line = b"Transfer-Encoding:" + draw(OWS) + draw(TE_VALUES)
        elif kind == 3:
            line = b"Connection:" + draw(OWS) + draw(CONNECTION)
        else:
            line = draw(FRAMING_NAMES) + b":" + draw(OWS) + draw(st.sampled_from(
                [b"websocket", b"100-continue", b"example.com", b"trailers", b"5", b"chunked"]))
        lines.append(line + b"\r\n")
    return b"".join(lines)


@st.composite
def sane_fields(draw, response=False):
    """Ordinary fields plus at most one framing header and a Connection, mostly valid."""
    lines = [draw(TOKEN) + b":" + draw(OWS) + draw(VALUE) + b"\r\n"
             for _ in range(draw(st.integers(0, 3)))]
    framing = draw(st.sampled_from(["none", "cl", "chunked"]))
    if framing == "cl":
        n = draw(st.sampled_from([b"0", b"1", b"7", b"0010", b"1500", b"123456789012"]))
        lines.append(b"Content-Length:" + draw(OWS) + n + draw(OWS) + b"\r\n")
    elif framing == "chunked":
        lines.append(b"Transfer-Encoding:" + draw(OWS) + draw(st.sampled_from(
            [b"chunked", b"Chunked", b"chunked, ", b"gzip, chunked"] if not response
            else [b"chunked", b"CHUNKED"])) + b"\r\n")
    if draw(st.booleans()):
        lines.append(b"Connection: " + draw(CONNECTION) + b"\r\n")
    return b"".join(draw(st.permutations(lines)))


@st.composite
def request_heads(draw):
    if draw(st.booleans()):
        # mostly valid: a registered method with a target form it allows, HTTP/1.x, a Host
        method, target = draw(st.sampled_from([
            (b"GET", b"/"), (b"GET", b"/a/b?c=d&e"), (b"POST", b"/upload"), (b"PUT", b"/x"),
            (b"HEAD", b"/"), (b"DELETE", b"/r/1"), (b"OPTIONS", b"*"), (b"PATCH", b"/p"),
            (b"GET", b"http://example.com/x"), (b"POST", b"https://h:8443"),
            (b"CONNECT", b"example.com:443")]))
        version = draw(st.sampled_from([b"HTTP/1.1", b"HTTP/1.1", b"HTTP/1.0"]))
        host = b"Host: example.com\r\n" if version == b"HTTP/1.1" or draw(st.booleans()) else b""
        return method + b" " + target + b" " + version + b"\r\n" + host + draw(sane_fields()) + b"\r\n"
    method = draw(st.sampled_from([b"GET", b"POST", b"PUT", b"HEAD", b"DELETE", b"OPTIONS",
                                   b"CONNECT", b"PATCH", b"FOO", b"get"]))
    target = draw(st.sampled_from([b"/", b"/a?b=c", b"*", b"http://example.com/x",
                                   b"https://h:8443", b"example.com:443", b"/%zz", b""]))
    version = draw(st.sampled_from([b"HTTP/1.1", b"HTTP/1.1", b"HTTP/1.0", b"HTTP/2.0", b"http/1.1"]))
    lead = draw(st.sampled_from([b"", b"", b"\r\n"]))
    host = draw(st.sampled_from([b"Host: example.com\r\n", b"Host: a:1\r\n", b"", b"Host:\r\n"]))
    return lead + method + b" " + target + b" " + version + b"\r\n" + host + draw(field_lines()) + b"\r\n"


@st.composite
def response_heads(draw):
    if draw(st.booleans()):
        version = draw(st.sampled_from([b"HTTP/1.1", b"HTTP/1.1", b"HTTP/1.0"]))
        status = draw(st.sampled_from([b"200", b"200", b"204", b"304", b"100", b"404", b"500"]))
        return version + b" " + status + b" OK\r\n" + draw(sane_fields(response=True)) + b"\r\n"
    version = draw(st.sampled_from([b"HTTP/1.1", b"HTTP/1.1", b"HTTP/1.0", b"HTTP/1.2"]))
    status = draw(st.sampled_from([b"200", b"204", b"304", b"100", b"101", b"150", b"404", b"500",
                                   b"099", b"600", b"2000"]))
    reason = draw(st.sampled_from([b" OK", b" ", b"", b" No Content", b" \xe9t\xe9"]))
    return version + b" " + status + reason + b"\r\n" + draw(field_lines()) + b"\r\n"


VALID_EXTS = [b"", b";a", b";a=b", b" ;a=\"q\\\"\"", b"; a = b", b";a=\"\xe9\""]
INVALID_EXTS = [b";", b" ", b";a=\"\x01\"", b"\t;=b"]
VALID_TRAILERS = [b"X-T: 1\r\n", b"E:\r\n", b"V: a\tb \r\n", b"W:x\r\n"]
INVALID_TRAILERS = [b"Bad Name: x\r\n", b" folded\r\n", b"N\r\n"]


@st.composite
def chunked_bodies(draw):
    clean = draw(st.booleans())   # half of the bodies only use valid extensions and trailers
    exts = VALID_EXTS if clean else VALID_EXTS + INVALID_EXTS
    trailers = VALID_TRAILERS if clean else VALID_TRAILERS + INVALID_TRAILERS
    out = b""
    for _ in range(draw(st.integers(0, 4))):
        data = draw(st.binary(min_size=1, max_size=40))
        size = draw(st.sampled_from(["%x", "%X", "0%x"])) % len(data)
        out += size.encode() + draw(st.sampled_from(exts)) + b"\r\n" + data + b"\r\n"
    out += b"0" + draw(st.sampled_from([b"", b";last"])) + b"\r\n"
    out += b"".join(draw(st.lists(st.sampled_from(trailers), max_size=2)))
    return out + b"\r\n" + draw(st.sampled_from([b"", b"GET / HTTP/1.1\r\n"]))


INTERESTING = [0, 9, 10, 13, 32, 34, 44, 48, 58, 59, 61, 92, 127, 128, 255, ord("A"), ord("a")]


@st.composite
def mutated(draw, base):
    """`base` with a few byte edits: replace, insert, delete, duplicate a slice, truncate."""
    raw = bytearray(draw(base))
    for _ in range(draw(st.integers(0, 3))):
        op = draw(st.integers(0, 4))
        pos = draw(st.integers(0, len(raw)))
        if op == 0 and pos < len(raw):
            raw[pos] = draw(st.sampled_from(INTERESTING))
        elif op == 1:
            raw[pos:pos] = bytes([draw(st.sampled_from(INTERESTING))])
        elif op == 2:
            del raw[pos:pos + draw(st.integers(1, 4))]
        elif op == 3:
            end = draw(st.integers(pos, len(raw)))
            raw[end:end] = raw[pos:end]
        else:
            del raw[pos:]
    return bytes(raw)


def requests_any():
    return st.one_of(request_heads(), mutated(request_heads()))


def responses_any():
    return st.one_of(response_heads(), mutated(response_heads()))


def chunked_any():
    return st.one_of(chunked_bodies(), mutated(chunked_bodies()), st.binary(max_size=60))


# ---- the invariants

def _req_fields(r):
    return (r.method, r.target, r.path, r.host, r.version, r.content_length, r.chunked,
            r.keep_alive, r.expect_continue, r.upgrade, r.xff, r.xfp, r.request_id, r.headers,
            r.head_len)


def _resp_fields(r):
    return (r.status, r.version, r.reason, r.content_length, r.chunked, r.keep_alive, r.headers,
            r.no_body, r.head_len)


def outcome(response, buf, offset=0):
    """None, ("error", status, reason) or the tuple of the head's fields; any other exception
    propagates (and fails the test)."""
    try:
        if response:
            r = parse_response(buf, offset, 65536)
        else:
            r = parse_request(buf, offset, 65536, True)
    except HttpError as e:
        assert e.status == 502 if response else e.status in REQUEST_STATUSES, e
        return ("error", e.status, e.reason)
    if r is None:
        return None
    return _resp_fields(r) if response else _req_fields(r)


def check_head_invariants(raw, response):
    whole = outcome(response, raw)
    event("incomplete" if whole is None else "refused" if whole[0] == "error" else "parsed")
    head_len = None
    if whole is not None and whole[0] != "error":
        head_len = whole[-1]
        assert 0 < head_len <= len(raw)
        assert raw[head_len - 4:head_len] == b"\r\n\r\n"
    for k in range(len(raw) + 1):
        part = outcome(response, raw[:k])
        if whole is None:
            assert part is None, k
        elif whole[0] == "error":
            assert part is None or part == whole, (k, part, whole)
        else:
            assert part == (whole if k >= head_len else None), (k, part, whole)
    for buf, off in ((bytearray(raw), 0), (memoryview(raw), 0), (b"\r\nXY" + raw, 4)):
        assert outcome(response, buf, off) == whole, type(buf)
    return whole


@settings(max_examples=500, **SETTINGS)
@given(requests_any())
def test_request_parse_is_prefix_consistent_and_within_the_input(raw):
    check_head_invariants(raw, response=False)


@settings(max_examples=400, **SETTINGS)
@given(responses_any())
def test_response_parse_is_prefix_consistent_and_within_the_input(raw):
    check_head_invariants(raw, response=True)


def decode_whole(body):
    d = ChunkedDecoder()
    try:
        out = d.feed(body)
    except HttpError as e:
        assert e.status == 400
        event("refused")
        return ("error", e.reason)
    event("done" if d.done else "incomplete")
    assert 0 <= d.consumed <= len(body)
    assert d.done or d.consumed == len(body)
    return (out, d.done, d.consumed, d.trailers)


def decode_pieces(body, cuts, d=None):
    d = d or ChunkedDecoder()
    out, used, prev = [], 0, 0
    for k in list(cuts) + [len(body)]:
        piece = body[prev:k]
        prev = k
        was_done = d.done
        try:
            got = d.feed(piece)
        except HttpError as e:
            return ("error", e.reason)
        assert 0 <= d.consumed <= len(piece)
        if was_done:
            assert got == b"" and d.consumed == 0
            continue
        out.append(got)
        used += d.consumed
    return (b"".join(out), d.done, used, d.trailers)


@settings(max_examples=500, **SETTINGS)
@given(chunked_any())
def test_chunked_decoder_is_split_invariant(body):
    whole = decode_whole(body)
    d = ChunkedDecoder()
    for k in range(len(body) + 1):
        d.reset()
        assert decode_pieces(body, [k], d) == whole, k
    assert decode_pieces(body, range(1, len(body))) == whole
    if whole[0] != "error" and whole[1]:
        assert body[whole[2] - 2:whole[2]] == b"\r\n"


# ---- agreement with httptools

class Recorder:
    def __init__(self, parser_cls):
        self.parser = parser_cls(self)
        self.url = b""
        self.heads = 0
        self.complete = 0
        self.body = b""
        self.keep_alive = None

    def on_url(self, url):
        self.url += url

    def on_headers_complete(self):
        self.heads += 1
        self.keep_alive = self.parser.should_keep_alive()   # llhttp resets it on completion

    def on_body(self, body):
        self.body += body

    def on_message_complete(self):
        self.complete += 1

    def feed(self, data):
        """True if llhttp took the bytes; False if it refused them or switched protocols."""
        try:
            self.parser.feed_data(data)
        except (httptools.HttpParserUpgrade, httptools.HttpParserError):
            return False
        return True


def framing_agrees(rec, chunked, content_length, no_body):
    """Feeds llhttp the body the way cyvoy frames it; llhttp must complete the message exactly at
    its end (None if llhttp stopped taking bytes: nothing to compare)."""
    if no_body or (not chunked and content_length == 0):
        return rec.complete == 1
    if rec.complete:
        return False
    if chunked:
        return rec.feed(b"0\r\n\r\n") is False or rec.complete == 1
    if content_length < 0:   # close-delimited response
        return rec.feed(b"x" * 100) is False or rec.complete == 0
    n = min(content_length, 1000)
    if n > 1 and not rec.feed(b"x" * (n - 1)):
        return True
    if rec.complete:
        return False
    if not rec.feed(b"x"):
        return True
    return rec.complete == (1 if content_length <= 1000 else 0)


@settings(max_examples=500, **SETTINGS)
@given(requests_any())
def test_requests_agree_with_httptools_when_both_accept(raw):
    try:
        h = parse_request(raw, 0, 65536, False)
    except HttpError:
        return
    if h is None:
        return
    rec = Recorder(httptools.HttpRequestParser)
    accepted = rec.feed(raw[:h.head_len])
    if rec.heads == 0 and not accepted:
        event("llhttp refuses")
        return   # llhttp refuses what cyvoy accepts: cyvoy's call, nothing to compare
    event("both accept")
    assert rec.heads == 1, "llhttp does not end the head where cyvoy does"
    assert (rec.parser.get_method(), rec.url) == (h.method, h.target)
    if not accepted:
        return   # CONNECT / Upgrade: llhttp hands the connection over
    # cyvoy may close where llhttp would not (HTTP/1.0 with "keep-alive, close": close wins in
    # cyvoy, RFC 9112 9.3), never the other way round
    assert rec.keep_alive or not h.keep_alive
    assert framing_agrees(rec, h.chunked, h.content_length, not h.chunked and h.content_length < 0)


@settings(max_examples=400, **SETTINGS)
@given(responses_any())
def test_responses_agree_with_httptools_when_both_accept(raw):
    try:
        h = parse_response(raw, 0, 65536)
    except HttpError:
        return
    if h is None:
        return
    rec = Recorder(httptools.HttpResponseParser)
    accepted = rec.feed(raw[:h.head_len])
    if rec.heads == 0 and not accepted:
        event("llhttp refuses")
        return
    event("both accept")
    assert rec.heads == 1, "llhttp does not end the head where cyvoy does"
    assert rec.parser.get_status_code() == h.status
    if not accepted:
        return
    if 104 <= h.status <= 199 and (h.chunked or h.content_length >= 0):
        return   # RFC 9112 6.3: no content after any 1xx; llhttp knows that only for 100-103
    assert framing_agrees(rec, h.chunked, h.content_length, h.no_body)


CHUNKED_HEAD = b"POST / HTTP/1.1\r\nHost: f\r\nTransfer-Encoding: chunked\r\n\r\n"


@settings(max_examples=500, **SETTINGS)
@given(chunked_any())
def test_chunked_bodies_agree_with_httptools_when_both_accept(body):
    whole = decode_whole(body)
    if whole[0] == "error":
        return
    payload, done, consumed, _ = whole
    rec = Recorder(httptools.HttpRequestParser)
    assert rec.feed(CHUNKED_HEAD)
    if not rec.feed(body[:consumed - 1] if done else body):
        event("llhttp refuses")
        return
    event("both accept")
    assert rec.complete == 0, "llhttp ends the body before cyvoy does"
    if done:
        if not rec.feed(body[consumed - 1:consumed]):
            return
        assert rec.complete == 1, "llhttp does not end the body where cyvoy does"
        assert rec.body == payload
