"""Micro-benchmark of proxy._fastpath.http1: ns per parse of a typical 10-header request head,
against httptools (llhttp) on the same bytes. A script, not a test: timings depend on the machine.

    .venv/bin/python bench/micro_http1.py [-n ITERATIONS]
"""
from __future__ import annotations

import argparse
import time

import httptools

from proxy._fastpath import http1

REQUEST = (
    b"GET /api/v1/items?page=2&sort=name HTTP/1.1\r\n"
    b"Host: shop.example.com\r\n"
    b"User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0\r\n"
    b"Accept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8\r\n"
    b"Accept-Language: en-US,en;q=0.5\r\n"
    b"Accept-Encoding: gzip, deflate, br\r\n"
    b"Referer: https://shop.example.com/api/v1/items?page=1\r\n"
    b"Cookie: session=4f9c2a1b7e3d4c5a9b8e7f6a5d4c3b2a; theme=dark\r\n"
    b"Connection: keep-alive\r\n"
    b"X-Request-Id: 7b1e4c52-9d1a-4f6e-8a3b-2c5d6e7f8a9b\r\n"
    b"Cache-Control: no-cache\r\n"
    b"\r\n"
)
RESPONSE = (
    b"HTTP/1.1 200 OK\r\n"
    b"Server: nginx\r\n"
    b"Date: Mon, 01 Jan 2024 00:00:00 GMT\r\n"
    b"Content-Type: application/json\r\n"
    b"Content-Length: 1234\r\n"
    b"Connection: keep-alive\r\n"
    b"Cache-Control: private, max-age=0\r\n"
    b"Vary: Accept-Encoding\r\n"
    b"ETag: \"33a64df551425fcc55e4d42a148795d9f25f89d4\"\r\n"
    b"X-Frame-Options: DENY\r\n"
    b"Strict-Transport-Security: max-age=63072000\r\n"
    b"\r\n"
)


def bench(fn, n: int) -> float:
    """Best of 5 runs, ns per call."""
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter_ns()
        for _ in range(n):
            fn()
        best = min(best, (time.perf_counter_ns() - t0) / n)
    return best


class _Proto:
    __slots__ = ("url", "headers", "done")

    def __init__(self):
        self.url = None
        self.headers = []
        self.done = False

    def on_url(self, url):
        self.url = url

    def on_header(self, name, value):
        self.headers.append((name, value))

    def on_headers_complete(self):
        self.done = True


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=200_000)
    n = ap.parse_args().n

    parse_request, parse_response = http1.parse_request, http1.parse_response
    req, req_ba, resp = REQUEST, bytearray(REQUEST), RESPONSE
    assert parse_request(req, 0, 65536, True) is not None
    half = req[: len(req) // 2]

    def httptools_request():
        p = _Proto()
        httptools.HttpRequestParser(p).feed_data(req)

    def httptools_request_no_callbacks():
        httptools.HttpRequestParser(None).feed_data(req)

    decoder_input = b"".join(http1.encode_chunk(b"x" * 1000) for _ in range(16)) + b"0\r\n\r\n"

    def chunked16k():
        http1.ChunkedDecoder().feed(decoder_input)

    rows = [
        ("parse_request (bytes, 10 headers, %d B)" % len(req), lambda: parse_request(req, 0, 65536, True)),
        ("parse_request (bytearray: head copied for get())", lambda: parse_request(req_ba, 0, 65536, True)),
        ("parse_request, incomplete head (None)", lambda: parse_request(half, 0, 65536, True)),
        ("parse_response (10 headers, %d B)" % len(resp), lambda: parse_response(resp, 0, 65536)),
        ("httptools: new parser + feed, on_url/on_header callbacks", httptools_request),
        ("httptools: new parser + feed, no callbacks", httptools_request_no_callbacks),
        ("build_request_head", lambda: http1.build_request_head(
            b"GET", b"/api/v1/items?page=2", b"shop.example.com", b"Accept: */*\r\nUser-Agent: x\r\n",
            b"X-Forwarded-Proto: http\r\n", -1)),
        ("build_response_head", lambda: http1.build_response_head(
            200, b"Content-Type: text/plain\r\n", b"", 1234, True)),
        ("ChunkedDecoder: 16 x 1000 B chunks", chunked16k),
        ("encode_chunk 1000 B", lambda: http1.encode_chunk(b"x" * 1000)),
    ]
    width = max(len(name) for name, _ in rows)
    for name, fn in rows:
        print(f"{name:<{width}}  {bench(fn, n):8.0f} ns")


if __name__ == "__main__":
    main()
