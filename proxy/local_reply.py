"""Responses cyvoy writes itself (Envoy's "local replies"): errors, direct_response, redirects.

Envoy's shape: the status, `content-length`, `content-type: text/plain` when there is a body,
`date`, `server`, and the body text Envoy uses (e.g. "no healthy upstream").
"""
from __future__ import annotations

import time
from email.utils import formatdate

from proxy._fastpath.http1 import build_response_head

_date_line = b""
_date_at = 0


def date_line() -> bytes:
    global _date_line, _date_at
    now = int(time.time())
    if now != _date_at:
        _date_at = now
        _date_line = b"date: " + formatdate(now, usegmt=True).encode() + b"\r\n"
    return _date_line


def render(status: int, body: bytes, server_line: bytes, extra: bytes = b"", headers: bytes = b"",
           close: bool = False, head_only: bool = False) -> bytes:
    lines = headers + extra + date_line() + server_line
    if body:
        lines += b"content-type: text/plain\r\n"
    if status < 200 or status in (204, 304):
        return build_response_head(status, lines, b"", -3, not close)
    return build_response_head(status, lines, b"", len(body), not close, None if head_only else body)


# Envoy's Grpc::Utility::httpToGrpcStatus (grpc's doc/http-grpc-status-mapping.md)
_GRPC_STATUS = {400: 13, 401: 16, 403: 7, 404: 12, 429: 14, 502: 14, 503: 14, 504: 14}
_GRPC_UNKNOWN = 2


def render_grpc(status: int, body: bytes, server_line: bytes, extra: bytes = b"",
                headers: bytes = b"", close: bool = False) -> bytes:
    """A local reply to a gRPC request: 200 with grpc-status and grpc-message, no body (a
    trailers-only response once on HTTP/2). grpc-message is percent-encoded as gRPC says."""
    code = 0 if status == 200 else _GRPC_STATUS.get(status, _GRPC_UNKNOWN)
    message = "".join(c if 0x20 <= ord(c) <= 0x7e and c != "%" else "%%%02X" % ord(c)
                      for c in body.decode("latin-1"))
    lines = (headers + extra + date_line() + server_line + b"content-type: application/grpc\r\n"
             + b"grpc-status: %d\r\n" % code + b"grpc-message: " + message.encode("ascii") + b"\r\n")
    return build_response_head(200, lines, b"", 0, not close)


def redirect_location(r, scheme: bytes, host: bytes, path: bytes, entry) -> bytes:
    """Envoy's RedirectAction: each part replaced only when the config says so."""
    if r.scheme_redirect:
        scheme = r.scheme_redirect.encode()
    if r.host_redirect:
        host = r.host_redirect.encode() + (b":" + str(r.port_redirect).encode() if r.port_redirect else b"")
    elif r.port_redirect:
        host = host.rsplit(b":", 1)[0] if host.count(b":") == 1 else host
        host += b":" + str(r.port_redirect).encode()
    q = path.find(b"?")
    query = path[q:] if q >= 0 else b""
    bare = path[:q] if q >= 0 else path
    if r.path_redirect:
        new = r.path_redirect.encode()
        # a path_redirect with its own query replaces the query (Envoy's docs)
        if b"?" in new:
            query = b""
        bare = new
    elif r.prefix_rewrite is not None and entry.match_prefix_len >= 0:
        bare = r.prefix_rewrite.encode() + bare[entry.match_prefix_len:]
    if r.strip_query:
        query = b""
    return scheme + b"://" + host + bare + query
