#!/usr/bin/env python3
"""Atheris (libFuzzer) harness for proxy/_fastpath/http1: request and response head parsers and
the chunked decoder. See fuzz/README.md.

Input format: byte 0 chooses what is fuzzed and with which limits, the rest is the payload.
  bits 0-1  0 = request head (+ chunked body after it), 1 = response head (+ chunked body),
            2 = chunked body alone, 3 = request head
  bits 2-4  max_head_bytes, index into MAX_HEAD
  bit  5    strip_envoy (requests)
  bits 6-7  ChunkedDecoder(max_chunk_ext, max_trailer_bytes), index into CHUNK_LIMITS

Invariants (any violation raises Violation, which libFuzzer reports as a crash):
- the only exception is the module's HttpError, with a documented status;
- head parsers are stateless and prefix-consistent: for every prefix of the input the result is
  None, or the same HttpError as for the whole input, or (once the prefix holds the whole head) the
  same head; bytes, bytearray, memoryview and a non-zero offset all give the same result;
- head_len is within the input and ends the head with CRLF CRLF; a parsed head holds exactly one
  framing (never both chunked and content-length); the forwarded header block is well-formed and
  holds no hop-by-hop/framing header; get()/get_all() find every forwarded header;
- what the serializers write from a parsed head parses back to the same method, path, host, status,
  headers and framing;
- ChunkedDecoder: feeding the input in two pieces at any split point (and byte by byte for short
  inputs), through a reused (reset) decoder, or at an offset, gives the same payload, done,
  trailers, total consumed and error as one piece; consumed never exceeds what was fed;
- where both cyvoy and httptools (llhttp) accept a request head, they agree on where the head ends,
  the method, the target and the framing (checked by feeding the body the way cyvoy frames it and
  watching when llhttp completes the message), and cyvoy never keeps alive a connection llhttp
  would close; likewise for responses (status, framing; not for 1xx other than 100-103 with
  framing headers, where llhttp reads a body RFC 9112 6.3 excludes) and for chunked bodies
  (payload, trailers and where the body ends). Where llhttp refuses input that cyvoy accepts,
  nothing is compared (the count per llhttp error lands in the stats file).

Run through `make fuzz` (or `fuzz/run.sh`); to replay one input: `python fuzz/fuzz_http1.py FILE`.
`--seed` writes the seed corpus (from ../shared/corpus/http1 and a few built-in cases) to
fuzz/seeds/ and exits.
"""
from __future__ import annotations

import base64
import glob
import hashlib
import importlib.util
import json
import os
import shutil
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
BUILD = os.path.join(HERE, "build")
SEEDS = os.path.join(HERE, "seeds")
SHARED_CORPUS = os.path.join(os.path.dirname(ROOT), "shared", "corpus", "http1")

MODE_REQUEST, MODE_RESPONSE, MODE_CHUNKED, MODE_REQUEST_HEAD = 0, 1, 2, 3
MAX_HEAD = (65536, 65536, 65536, 65536, 4096, 256, 40, 0)
CHUNK_LIMITS = ((1024, 16384), (1024, 16384), (16, 64), (0, 0))

REQUEST_STATUSES = frozenset((400, 414, 431, 501, 505))
REQUEST_NOT_FORWARDED = frozenset((
    b"host", b"content-length", b"transfer-encoding", b"connection", b"keep-alive",
    b"proxy-connection", b"te", b"upgrade", b"expect", b"x-forwarded-for", b"x-forwarded-proto",
    b"x-request-id"))
RESPONSE_NOT_FORWARDED = frozenset((
    b"content-length", b"transfer-encoding", b"connection", b"keep-alive", b"proxy-connection",
    b"te", b"upgrade", b"server"))
TCHAR = frozenset(b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")


# ---------------------------------------------------------------------------------------------
# which module: the instrumented build (needs the ASan runtime preloaded) or the normal one

def _instrumented_so():
    found = glob.glob(os.path.join(BUILD, "proxy", "_fastpath", "http1.cpython-*.so"))
    return found[0] if found else None


def _asan_runtime():
    spec = importlib.util.find_spec("atheris")
    if spec is None or not spec.submodule_search_locations:
        return None
    site = os.path.dirname(list(spec.submodule_search_locations)[0])
    path = os.path.join(site, "asan_with_fuzzer.so")
    return path if os.path.exists(path) else None


def _reexec_with_asan():
    """The instrumented extension needs ASan loaded first: re-run this script with LD_PRELOAD."""
    if os.environ.get("CYVOY_FUZZ_PLAIN") == "1" or _instrumented_so() is None:
        return
    if "asan_with_fuzzer" in os.environ.get("LD_PRELOAD", ""):
        return
    runtime = _asan_runtime()
    if runtime is None:
        sys.exit("fuzz_http1: atheris is not installed (pip install atheris)")
    env = dict(os.environ)
    env["LD_PRELOAD"] = runtime + (":" + env["LD_PRELOAD"] if env.get("LD_PRELOAD") else "")
    # CPython itself leaks at exit; pymalloc would hide overflows of small bytes objects from ASan
    env["ASAN_OPTIONS"] = "detect_leaks=0:" + env.get("ASAN_OPTIONS", "")
    env["PYTHONMALLOC"] = "malloc"
    os.execve(sys.executable, [sys.executable, os.path.abspath(__file__)] + sys.argv[1:], env)


def _load_http1():
    if os.environ.get("CYVOY_FUZZ_PLAIN") != "1" and _instrumented_so() is not None:
        sys.path.insert(0, BUILD)
    else:
        sys.path.insert(0, ROOT)
        print("fuzz_http1: using the normal (uninstrumented) build of proxy._fastpath.http1",
              file=sys.stderr)
    from proxy._fastpath import http1
    return http1


# ---------------------------------------------------------------------------------------------
# seeds

def _builtin_seeds():
    req = [
        b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n",
        b"GET http://example.com:8080/a?b HTTP/1.1\r\nHost: x\r\nConnection: close, x-a\r\nx-a: 1\r\n\r\n",
        b"POST /upload HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\nhello",
        b"POST /c HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5;ext=\"q\\\"v\"\r\nhello\r\n0\r\nTrailer-A: x\r\n\r\n",
        b"\r\nOPTIONS * HTTP/1.0\r\nConnection: keep-alive\r\nX-Forwarded-For: 1.2.3.4\r\n\r\n",
        b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n",
        b"GET /ws HTTP/1.1\r\nHost: [::1]:80\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
        b"x-envoy-upstream: a\r\nX-Request-Id: r\r\nX-Forwarded-Proto: https\r\n\r\n",
    ]
    resp = [
        b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nServer: s\r\n\r\nabc",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 204 No Content\r\n\r\n",
        b"HTTP/1.1 304 Not Modified\r\nETag: x\r\n\r\n",
        b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n",
        b"HTTP/1.1 100 Continue\r\n\r\n",
        b"HTTP/1.1 500\r\nConnection: close\r\n\r\nbody until close",
    ]
    chunked = [
        b"0\r\n\r\n",
        b"1\r\na\r\n10\r\n0123456789abcdef\r\n0\r\n\r\n",
        b"3 ; a = b ; c=\"d\\\"e\" ;f\r\nabc\r\n0\r\nX-T: 1\r\nY-T: two words\r\n\r\n",
        b"0000000000000004\r\nwxyz\r\n0;last\r\n\r\n",
        b"5\r\nhello\r\n0\r\n\r\nGET / HTTP/1.1\r\n",
    ]
    out = [bytes([MODE_REQUEST]) + r for r in req]
    out += [bytes([MODE_REQUEST_HEAD | (1 << 5)]) + r for r in req[:2]]
    out += [bytes([MODE_RESPONSE]) + r for r in resp]
    out += [bytes([MODE_CHUNKED]) + c for c in chunked]
    out += [bytes([MODE_CHUNKED | (2 << 6)]) + c for c in chunked[1:3]]
    out += [bytes([MODE_REQUEST | (5 << 2)]) + req[1], bytes([MODE_RESPONSE | (6 << 2)]) + resp[0]]
    return out


def _corpus_seeds():
    out = []
    for path in sorted(glob.glob(os.path.join(SHARED_CORPUS, "*.jsonl"))):
        with open(path) as f:
            for line in f:
                if not line.strip():
                    continue
                case = json.loads(line)
                raw = b"".join(base64.b64decode(x) for x in case.get("raw_b64", ()))
                if not raw:
                    continue
                out.append(bytes([MODE_REQUEST]) + raw)
                # the body after a head, as a chunked-decoder seed
                end = raw.find(b"\r\n\r\n")
                if end >= 0 and b"chunked" in raw[:end].lower() and end + 4 < len(raw):
                    out.append(bytes([MODE_CHUNKED]) + raw[end + 4:])
    return out


def write_seeds(directory=SEEDS):
    if os.path.isdir(directory):
        shutil.rmtree(directory)
    os.makedirs(directory)
    corpus = _corpus_seeds()
    seeds = _builtin_seeds() + corpus
    for s in seeds:
        name = hashlib.sha1(s).hexdigest()
        with open(os.path.join(directory, name), "wb") as f:
            f.write(s)
    src = SHARED_CORPUS if corpus else f"no corpus at {SHARED_CORPUS}, built-in cases only"
    print(f"fuzz_http1: wrote {len(set(seeds))} seeds to {os.path.relpath(directory, ROOT)} ({src})")


# ---------------------------------------------------------------------------------------------
# the checks

class Violation(AssertionError):
    pass


def check(cond, what, **ctx):
    if not cond:
        detail = "".join(f"\n  {k} = {v!r}" for k, v in ctx.items())
        raise Violation(what + detail)


STATS = {}


def count(key):
    STATS[key] = STATS.get(key, 0) + 1


def _req_fields(r):
    return (r.method, r.target, r.path, r.host, r.version, r.content_length, r.chunked,
            r.keep_alive, r.expect_continue, r.upgrade, r.xff, r.xfp, r.request_id, r.headers,
            r.head_len)


def _resp_fields(r):
    return (r.status, r.version, r.reason, r.content_length, r.chunked, r.keep_alive, r.headers,
            r.no_body, r.head_len)


class GuardedBuffer:
    """Memory whose last byte is followed by an inaccessible page. Bytes and bytearray objects
    carry a NUL terminator after their data, so ASan cannot see a read one byte past the end of
    one; here any read past the end is a SIGSEGV. view(data) copies data to the end of the
    accessible region and returns a memoryview of exactly len(data) bytes (valid until the next
    call; the parsers copy whatever they keep from a non-bytes buffer)."""

    SIZE = 1 << 17

    def __init__(self):
        import ctypes
        import mmap
        page = mmap.PAGESIZE
        self.m = mmap.mmap(-1, self.SIZE + page)
        base = ctypes.addressof(ctypes.c_char.from_buffer(self.m))
        libc = ctypes.CDLL(None, use_errno=True)
        libc.mprotect.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
        if libc.mprotect(base + self.SIZE, page, 0) != 0:   # PROT_NONE
            raise OSError(ctypes.get_errno(), "mprotect")
        self.mv = memoryview(self.m)

    def view(self, data):
        n = len(data)
        if n > self.SIZE:
            return bytes(data)
        self.m[self.SIZE - n:self.SIZE] = data
        return self.mv[self.SIZE - n:self.SIZE]


GUARD = None


def guarded(data):
    global GUARD
    if GUARD is None:
        GUARD = GuardedBuffer()
    return GUARD.view(data)


def split_points(data, extra=()):
    """Every split point for short inputs; otherwise the edges, around every line end (up to 32)
    and every n/16 bytes, plus `extra`."""
    n = len(data)
    if n <= 64:
        return range(n + 1)
    pts = {0, 1, 2, n - 2, n - 1, n}
    pts.update(k for k in extra if 0 <= k <= n)
    i = data.find(b"\n")
    lines = 0
    while i >= 0 and lines < 32:
        pts.update((i - 1, i, i + 1))
        lines += 1
        i = data.find(b"\n", i + 1)
    pts.update(range(0, n, max(1, n // 16)))
    return sorted(pts)


class HeadChecker:
    def __init__(self, http1):
        self.http1 = http1
        self.HttpError = http1.HttpError

    def outcome(self, response, buf, offset, max_head, strip):
        try:
            if response:
                r = self.http1.parse_response(buf, offset, max_head)
            else:
                r = self.http1.parse_request(buf, offset, max_head, strip)
        except self.HttpError as e:
            return ("error", e.status, e.reason), None
        if r is None:
            return None, None
        return (_resp_fields(r) if response else _req_fields(r)), r

    def run(self, data, response, max_head, strip):
        """Checks one head; returns the parsed head object (or None)."""
        full, head = self.outcome(response, data, 0, max_head, strip)
        n = len(data)
        hl = -1
        if full is not None and full[0] == "error":
            count("resp-error" if response else "req-error")
            status, reason = full[1], full[2]
            check(status == 502 if response else status in REQUEST_STATUSES,
                  "HttpError with an undocumented status", status=status, reason=reason)
            check(isinstance(reason, str) and reason, "HttpError without a reason", status=status)
        elif full is not None:
            count("resp-ok" if response else "req-ok")
            hl = head.head_len
            check(0 < hl <= n, "head_len beyond the input", head_len=hl, input_len=n)
            check(data[hl - 4:hl] == b"\r\n\r\n", "head does not end with CRLF CRLF",
                  tail=data[max(0, hl - 8):hl])
            check(not (head.chunked and head.content_length >= 0),
                  "both chunked and content-length", head=full)
            self.check_block(head, response, strip)
        else:
            count("resp-incomplete" if response else "req-incomplete")

        # prefix consistency (what a connection sees as the head arrives in pieces)
        for k in split_points(data, (hl - 1, hl, hl + 1)):
            got, _ = self.outcome(response, guarded(data[:k]), 0, max_head, strip)
            if full is None:
                ok = got is None
            elif full[0] == "error":
                ok = got is None or got == full
            else:
                ok = got == (full if k >= hl else None)
            check(ok, "a prefix of the input parses differently from the whole input",
                  prefix_len=k, prefix_result=got, whole_result=full)

        # buffer type and offset
        for buf, off in ((bytearray(data), 0), (memoryview(data), 0), (b"\r\nXY" + data, 4),
                         (bytearray(b"\r\n\r") + data, 3), (None, 0)):
            if buf is None:
                buf = guarded(data)
            got, other = self.outcome(response, buf, off, max_head, strip)
            check(got == full, "result depends on buffer type or offset",
                  buffer_type=type(buf).__name__, offset=off, got=got, expected=full)
            if other is not None:
                # get() over a copied (bytearray) or shared (bytes) header section
                for name in (b"host", b"content-length", b"transfer-encoding", b"x-a"):
                    check(other.get(name) == head.get(name)
                          and other.get_all(name) == head.get_all(name),
                          "get() depends on buffer type or offset", name=name)
        if head is None:
            return None
        if response:
            self.response_round_trip(head)
        else:
            self.request_round_trip(head, strip)
        return head

    def check_block(self, head, response, strip):
        block = head.headers
        if not block:
            return
        check(block.endswith(b"\r\n"), "forwarded header block not CRLF-terminated", block=block)
        for line in block[:-2].split(b"\r\n"):
            check(b"\r" not in line and b"\n" not in line, "bare CR/LF in forwarded header block",
                  line=line)
            name, colon, value = line.partition(b":")
            check(colon and name and all(c in TCHAR for c in name),
                  "malformed line in forwarded header block", line=line)
            check(value == b"" or (value[:1] == b" " and value[1:2] not in (b" ", b"\t", b"")
                                   and value[-1:] not in (b" ", b"\t")),
                  "forwarded header value not in canonical form", line=line)
            lname = name.lower()
            if response:
                check(lname not in RESPONSE_NOT_FORWARDED or (lname == b"upgrade"
                                                               and head.status == 101),
                      "hop-by-hop/framing header forwarded from a response", line=line)
            else:
                check(lname not in REQUEST_NOT_FORWARDED,
                      "hop-by-hop/framing header forwarded from a request", line=line)
                check(not (strip and lname.startswith(b"x-envoy-")),
                      "x-envoy- header forwarded with strip_envoy", line=line)
            values = head.get_all(lname)
            check(value[1:] in values and head.get(lname) == values[0],
                  "get()/get_all() disagree with the forwarded block", line=line, get_all=values)

    def request_round_trip(self, head, strip):
        h = self.http1
        framing = -2 if head.chunked else (head.content_length if head.content_length >= 0 else -1)
        out = h.build_request_head(head.method, head.path, head.host, head.headers, None, framing)
        if out.count(b"\r\n") - 2 > 100:
            return   # the Host line the proxy adds took it over the field-count limit
        try:
            r2 = h.parse_request(out, 0, 1 << 20, strip)
        except self.HttpError as e:
            raise Violation(f"serialized request does not parse: {e}\n  serialized = {out!r}")
        check(r2 is not None and r2.head_len == len(out), "serialized request incomplete",
              serialized=out)
        check((r2.method, r2.path, r2.host, r2.headers, r2.chunked, r2.content_length)
              == (head.method, head.path, head.host, head.headers, head.chunked,
                  head.content_length),
              "serialized request parses to something else", serialized=out,
              reparsed=_req_fields(r2), original=_req_fields(head))

    def response_round_trip(self, head):
        h = self.http1
        if head.chunked:
            framing = -2
        elif head.content_length >= 0:
            framing = head.content_length
        else:
            framing = -3
        out = h.build_response_head(head.status, head.headers, None, framing, head.keep_alive)
        if out.count(b"\r\n") - 2 > 100:
            return
        try:
            r2 = h.parse_response(out, 0, 1 << 20)
        except self.HttpError as e:
            raise Violation(f"serialized response does not parse: {e}\n  serialized = {out!r}")
        check(r2 is not None and r2.head_len == len(out), "serialized response incomplete",
              serialized=out)
        check((r2.status, r2.headers, r2.chunked, r2.content_length, r2.no_body, r2.keep_alive)
              == (head.status, head.headers, head.chunked, head.content_length, head.no_body,
                  head.keep_alive),
              "serialized response parses to something else", serialized=out,
              reparsed=_resp_fields(r2), original=_resp_fields(head))


class ChunkChecker:
    def __init__(self, http1):
        self.http1 = http1
        self.HttpError = http1.HttpError

    def one_shot(self, dec, buf, offset=0):
        try:
            out = dec.feed(buf, offset)
        except self.HttpError as e:
            check(e.status == 400, "chunked decoder error with a status other than 400",
                  status=e.status)
            return ("error", e.reason)
        fed = len(buf) - offset
        check(0 <= dec.consumed <= fed, "consumed beyond the input", consumed=dec.consumed,
              fed=fed)
        check(dec.done or dec.consumed == fed, "not done but consumed != bytes fed",
              consumed=dec.consumed, fed=fed)
        return (out, dec.done, dec.consumed, dec.trailers)

    def pieces(self, dec, data, cuts):
        """Feeds data cut at `cuts`; returns the result in the form of one_shot."""
        payload = []
        total = 0
        done = False
        prev = 0
        for k in list(cuts) + [len(data)]:
            piece = data[prev:k]
            prev = k
            try:
                out = dec.feed(guarded(piece))
            except self.HttpError as e:
                return ("error", e.reason)
            check(0 <= dec.consumed <= len(piece), "consumed beyond the piece fed",
                  consumed=dec.consumed, piece_len=len(piece))
            if done:
                check(out == b"" and dec.consumed == 0 and dec.done,
                      "decoder reads past the end of the body", piece=piece)
                continue
            payload.append(out)
            total += dec.consumed
            done = dec.done
        return (b"".join(payload), dec.done, total, dec.trailers)

    def run(self, data, max_ext, max_trailer):
        dec_cls = self.http1.ChunkedDecoder
        full = self.one_shot(dec_cls(max_ext, max_trailer), data)
        count("chunk-error" if full[0] == "error" else ("chunk-done" if full[1] else "chunk-open"))
        if full[0] != "error" and full[1]:
            c = full[2]
            check(data[c - 2:c] == b"\r\n", "body does not end with CRLF", consumed=c)
            trailers = full[3]
            check(trailers == b"" or (trailers.endswith(b"\r\n") and trailers in data),
                  "trailers are not the received trailer lines", trailers=trailers)
        dec = dec_cls(max_ext, max_trailer)
        for k in split_points(data):
            dec.reset()
            got = self.pieces(dec, data, (k,))
            check(got == full, "two-piece feed differs from one-piece feed", split=k, got=got,
                  expected=full)
        if len(data) <= 256:
            dec.reset()
            got = self.pieces(dec, data, range(1, len(data)))
            check(got == full, "byte-by-byte feed differs from one-piece feed", got=got,
                  expected=full)
        # a reused decoder (reset after whatever state the last feed left) and other buffers
        for buf, off in ((data, 0), (bytearray(data), 0), (memoryview(data), 0),
                         (b"0\r\n" + data, 3)):
            dec.reset()
            got = self.one_shot(dec, buf, off)
            check(got == full, "result depends on decoder reuse, buffer type or offset",
                  buffer_type=type(buf).__name__, offset=off, got=got, expected=full)
        return full


# ---------------------------------------------------------------------------------------------
# agreement with httptools (llhttp)

class _Rec:
    def __init__(self):
        self.parser = None
        self.keep_alive = None
        self.url = b""
        self.heads = 0
        self.complete = 0
        self.body = []
        self.fields = []

    def on_url(self, url):
        self.url += url

    def on_header(self, name, value):
        self.fields.append((bytes(name), bytes(value)))

    def on_headers_complete(self):
        self.heads += 1
        # llhttp clears its flags when the message completes: ask while the head is current
        self.keep_alive = self.parser.should_keep_alive()

    def on_body(self, body):
        self.body.append(bytes(body))

    def on_message_complete(self):
        self.complete += 1


BODY_PROBE = 4096
LLHTTP_BODY_1XX = frozenset(range(104, 200))


class Llhttp:
    def __init__(self):
        import httptools
        self.httptools = httptools

    def _feed(self, parser, data):
        """Returns None, "upgrade" or ("refused", reason)."""
        ht = self.httptools
        try:
            parser.feed_data(data)
        except ht.HttpParserUpgrade:
            return "upgrade"
        except ht.HttpParserError as e:
            msg = str(e)
            if "CONNECT/Upgrade" in msg:
                return "upgrade"
            return ("refused", msg)
        return None

    def _refused(self, kind, res):
        reason = res[1].split(":")[0][:60]
        count(f"llhttp-refuses-{kind}: {reason}")

    def _framing(self, kind, parser, rec, chunked, content_length, no_body):
        """After the head: does llhttp end the message where cyvoy's framing says it ends?"""
        if no_body or (not chunked and content_length == 0):
            check(rec.complete == 1, f"{kind}: llhttp expects a body, cyvoy says none")
            return
        check(rec.complete == 0, f"{kind}: llhttp ends the message at the head, cyvoy expects a body",
              chunked=chunked, content_length=content_length)
        if chunked:
            res = self._feed(parser, b"0\r\n\r\n")
            if res is not None:
                return
            check(rec.complete == 1, f"{kind}: llhttp does not end a chunked body at 0 CRLF CRLF")
            return
        if content_length < 0:
            # delimited by the connection closing (responses only)
            res = self._feed(parser, b"x" * BODY_PROBE)
            if res is None:
                check(rec.complete == 0, f"{kind}: llhttp ends a close-delimited body early")
            return
        n = min(content_length, BODY_PROBE)
        res = self._feed(parser, b"x" * (n - 1))
        if res is not None:
            return
        check(rec.complete == 0, f"{kind}: llhttp ends the body before content-length",
              content_length=content_length)
        res = self._feed(parser, b"x")
        if res is not None:
            return
        if content_length <= BODY_PROBE:
            check(rec.complete == 1 and len(b"".join(rec.body)) == content_length,
                  f"{kind}: llhttp does not end the body at content-length",
                  content_length=content_length)
        else:
            check(rec.complete == 0, f"{kind}: llhttp ends the body before content-length",
                  content_length=content_length)

    def request(self, head_bytes, r):
        rec = _Rec()
        p = rec.parser = self.httptools.HttpRequestParser(rec)
        res = self._feed(p, head_bytes)
        if isinstance(res, tuple):
            self._refused("request", res)
            return
        check(rec.heads == 1, "llhttp does not end the request head where cyvoy does",
              head=head_bytes)
        check(p.get_method() == r.method and rec.url == r.target,
              "llhttp and cyvoy disagree on method/target", llhttp=(p.get_method(), rec.url),
              cyvoy=(r.method, r.target))
        if res == "upgrade":
            count("llhttp-request-upgrade")
            return
        count("llhttp-request-agree")
        # cyvoy may close where llhttp would not (HTTP/1.0 with "keep-alive, close": close wins
        # in cyvoy, RFC 9112 9.3; llhttp looks only at keep-alive on 1.0), never the other way
        check(rec.keep_alive or not r.keep_alive, "cyvoy keeps alive a connection llhttp closes",
              llhttp=rec.keep_alive, cyvoy=r.keep_alive)
        if rec.keep_alive != r.keep_alive:
            count("llhttp-keeps-alive-cyvoy-closes (allowed)")
        # a request without Content-Length or Transfer-Encoding has no body (RFC 9112 6.3)
        self._framing("request", p, rec, r.chunked, r.content_length,
                      not r.chunked and r.content_length < 0)

    def response(self, head_bytes, r):
        rec = _Rec()
        p = rec.parser = self.httptools.HttpResponseParser(rec)
        res = self._feed(p, head_bytes)
        if isinstance(res, tuple):
            self._refused("response", res)
            return
        check(rec.heads == 1, "llhttp does not end the response head where cyvoy does",
              head=head_bytes)
        check(p.get_status_code() == r.status, "llhttp and cyvoy disagree on the status",
              llhttp=p.get_status_code(), cyvoy=r.status)
        if res == "upgrade":
            count("llhttp-response-upgrade")
            return
        if r.status in LLHTTP_BODY_1XX and (r.chunked or r.content_length >= 0):
            # RFC 9112 6.3: a 1xx response never has content; llhttp knows that only for 100-103
            # and reads a body by Content-Length / chunked after any other 1xx
            count("llhttp-reads-body-after-1xx (not compared)")
            return
        count("llhttp-response-agree")
        self._framing("response", p, rec, r.chunked, r.content_length, r.no_body)

    CHUNKED_HEAD = b"POST / HTTP/1.1\r\nHost: f\r\nTransfer-Encoding: chunked\r\n\r\n"

    def chunked(self, data, full):
        if full[0] == "error":
            return
        payload, done, consumed, trailers = full
        rec = _Rec()
        p = rec.parser = self.httptools.HttpRequestParser(rec)
        self._feed(p, self.CHUNKED_HEAD)
        res = self._feed(p, data[:consumed - 1] if done else data)
        if isinstance(res, tuple):
            self._refused("chunked", res)
            return
        check(rec.complete == 0, "llhttp ends the chunked body before cyvoy does", consumed=consumed)
        if not done:
            return
        res = self._feed(p, data[consumed - 1:consumed])
        if isinstance(res, tuple):
            self._refused("chunked", res)
            return
        count("llhttp-chunked-agree")
        check(rec.complete == 1, "llhttp does not end the chunked body where cyvoy does",
              consumed=consumed)
        check(b"".join(rec.body) == payload, "llhttp and cyvoy decode different payloads",
              llhttp=b"".join(rec.body), cyvoy=payload)
        ours = []
        for line in trailers.split(b"\r\n")[:-1]:
            name, _, value = line.partition(b":")
            ours.append((name, value.strip(b" \t")))
        # the first two are the Host and Transfer-Encoding of CHUNKED_HEAD
        theirs = [(n, v.strip(b" \t")) for n, v in rec.fields[2:]]
        check(ours == theirs, "llhttp and cyvoy see different trailers", llhttp=theirs,
              cyvoy=ours)


# ---------------------------------------------------------------------------------------------
# entry point

class Harness:
    def __init__(self, http1):
        self.heads = HeadChecker(http1)
        self.chunks = ChunkChecker(http1)
        self.llhttp = Llhttp()

    def one_input(self, data):
        if not data:
            return
        cfg = data[0]
        payload = data[1:]
        mode = cfg & 3
        max_head = MAX_HEAD[(cfg >> 2) & 7]
        strip = bool(cfg & 0x20)
        max_ext, max_trailer = CHUNK_LIMITS[cfg >> 6]
        if mode == MODE_CHUNKED:
            full = self.chunks.run(payload, max_ext, max_trailer)
            self.llhttp.chunked(payload, full)
            return
        response = mode == MODE_RESPONSE
        head = self.heads.run(payload, response, max_head, strip)
        if head is None:
            return
        head_bytes = payload[:head.head_len]
        if response:
            self.llhttp.response(head_bytes, head)
        else:
            self.llhttp.request(head_bytes, head)
        if mode != MODE_REQUEST_HEAD and head.chunked and head.head_len < len(payload):
            body = payload[head.head_len:]
            full = self.chunks.run(body, max_ext, max_trailer)
            if not response:
                self.llhttp.chunked(body, full)


class StatsWriter:
    def __init__(self, path, every=2.0):
        self.path = path
        self.every = every
        self.last = time.monotonic()
        self.execs = 0

    def tick(self):
        self.execs += 1
        now = time.monotonic()
        if self.path and now - self.last >= self.every:
            self.last = now
            self.write()

    def write(self):
        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
            json.dump({"execs": self.execs, "counts": dict(sorted(STATS.items()))}, f, indent=1)
        os.replace(tmp, self.path)


def summarize(log_path, stats_path, rc):
    """What `make fuzz` prints at the end: libFuzzer's totals, the harness counters, findings."""
    import re
    with open(log_path, errors="replace") as f:
        log = f.read()
    status = [ln for ln in log.splitlines() if re.match(r"#\d+\s", ln)]
    final = dict(re.findall(r"^stat::(\w+):\s*(\d+)", log, re.M))
    done = re.search(r"^Done (\d+) runs in (\d+) second", log, re.M)
    print("fuzz: ---- summary ----")
    if status:
        print("fuzz: last status: " + status[-1])
    if done:
        print(f"fuzz: {done.group(1)} runs in {done.group(2)} s")
    if final:
        print("fuzz: " + ", ".join(f"{k}={v}" for k, v in final.items()))
    try:
        with open(stats_path) as f:
            stats = json.load(f)
        print(f"fuzz: harness counters (at the last 2 s snapshot, {stats['execs']} inputs):")
        for k, v in stats["counts"].items():
            print(f"fuzz:   {k}: {v}")
    except (OSError, ValueError):
        pass
    artifacts = re.findall(r"Test unit written to (\S+)", log)
    if rc == 0 and not artifacts:
        print("fuzz: no crash, sanitizer report or invariant violation")
        return
    lines = log.splitlines()
    start = next((i for i, ln in enumerate(lines)
                  if "Uncaught Python exception" in ln or ln.startswith("==")
                  and "ERROR" in ln), max(0, len(lines) - 60))
    print("fuzz: FAILED (exit status %s); report:" % rc)
    print("\n".join(lines[start:start + 80]))
    for a in artifacts:
        print(f"fuzz: input saved to {a}; replay: {sys.executable} fuzz/fuzz_http1.py {a}")


def main():
    if "--seed" in sys.argv[1:]:
        write_seeds()
        return
    if sys.argv[1:2] == ["--summary"]:
        summarize(sys.argv[2], sys.argv[3], int(sys.argv[4]))
        return
    _reexec_with_asan()
    http1 = _load_http1()
    import atheris

    harness = Harness(http1)
    stats = StatsWriter(os.environ.get("CYVOY_FUZZ_STATS"))
    # Python-level coverage of the harness too, so that inputs reaching the comparisons are kept
    for obj in (HeadChecker, ChunkChecker, Llhttp, Harness):
        for name, fn in list(vars(obj).items()):
            if callable(fn) and not name.startswith("__"):
                setattr(obj, name, atheris.instrument_func(fn))

    def test_one_input(data):
        harness.one_input(data)
        stats.tick()

    atheris.Setup(_argv_for_libfuzzer(), test_one_input)
    atheris.Fuzz()


def _argv_for_libfuzzer():
    """libFuzzer re-runs argv[0] for some modes (-minimize_crash, -merge, -fork): point it at a
    wrapper that runs this script with this interpreter (the environment is inherited)."""
    if not os.path.isdir(BUILD):
        return sys.argv
    wrapper = os.path.join(BUILD, "fuzz_http1")
    text = f'#!/bin/sh\nexec "{sys.executable}" "{os.path.abspath(__file__)}" "$@"\n'
    try:
        with open(wrapper) as f:
            current = f.read()
    except OSError:
        current = None
    if current != text:
        with open(wrapper + ".tmp", "w") as f:
            f.write(text)
        os.chmod(wrapper + ".tmp", 0o755)
        os.replace(wrapper + ".tmp", wrapper)
    return [wrapper] + sys.argv[1:]


if __name__ == "__main__":
    main()
