"""What one finished request looks like to the access log: `LogRecord`.

The connection code fills one record at the end of each request (a plain slots object, no
behaviour) and hands it to `AccessLogs.log`; the compiled formatters (`proxy.access_log.format`)
read only these fields. Each field names the command operators that read it (Envoy's
configuration/observability/access_log/usage.rst, "Command Operators").

Conventions: durations are whole milliseconds (Envoy truncates to ms); None means "not set" and
prints "-" (or null in typed JSON); header accessors take a lower-case header name as bytes and
return the first value as bytes or None, like `RequestHead.get`.
"""
from __future__ import annotations

from typing import Callable, Optional

HeaderGetter = Callable[[bytes], Optional[bytes]]


class LogRecord:
    """One request, as the access log operators see it."""

    __slots__ = (
        "start_time",             # %START_TIME%: epoch seconds (float) of the first request byte
        "method",                 # %REQ(:METHOD)%: bytes, b"GET"
        "path",                   # %REQ(:PATH)%: bytes, path and query as received
        "authority",              # %REQ(:AUTHORITY)%: bytes, the Host / absolute-form authority
        "scheme",                 # %REQ(:SCHEME)%: bytes, b"http" / b"https"
        "protocol",               # %PROTOCOL%: bytes, b"HTTP/1.1" / b"HTTP/1.0"; None if unknown
        "request_headers",        # %REQ(X)%: HeaderGetter or None (then every REQ(X) is "-")
        "response_headers",       # %RESP(X)%: HeaderGetter or None (no response head)
        "response_trailers",      # %TRAILER(X)%: HeaderGetter or None (no trailers kept)
        "response_code",          # %RESPONSE_CODE%: int; 0 = no response was sent (Envoy's meaning)
        "response_code_details",  # %RESPONSE_CODE_DETAILS%: str or None, e.g. "via_upstream"
        "response_flags",         # %RESPONSE_FLAGS%: list of Envoy short flags (["UF"]); [] = none
        "bytes_received",         # %BYTES_RECEIVED%: int, request body bytes received
        "bytes_sent",             # %BYTES_SENT%: int, response body bytes sent
        "duration_ms",            # %DURATION%: int, start to the last response byte sent
        "request_duration_ms",    # %REQUEST_DURATION%: int or None (request not complete)
        "response_duration_ms",   # %RESPONSE_DURATION%: int or None (no upstream response byte)
        "upstream_host",          # %UPSTREAM_HOST%: str "ip:port" ("[v6]:port") or None
        "upstream_cluster",       # %UPSTREAM_CLUSTER%: str or None
        "upstream_local",         # %UPSTREAM_LOCAL_ADDRESS%: (ip str, port int) or None
        "downstream_remote",      # %DOWNSTREAM_REMOTE_ADDRESS%: (ip str, port int) or None
        "downstream_local",       # %DOWNSTREAM_LOCAL_ADDRESS%: (ip str, port int) or None
        "route_name",             # %ROUTE_NAME%: str or None (a route without a name: "" or None)
    )

    def __init__(self, start_time: float = 0.0, method: bytes = b"", path: bytes = b"",
                 authority: bytes = b"", scheme: bytes = b"http",
                 protocol: Optional[bytes] = b"HTTP/1.1",
                 request_headers: Optional[HeaderGetter] = None,
                 response_headers: Optional[HeaderGetter] = None,
                 response_trailers: Optional[HeaderGetter] = None,
                 response_code: int = 0, response_code_details: Optional[str] = None,
                 response_flags: Optional[list] = None, bytes_received: int = 0,
                 bytes_sent: int = 0, duration_ms: int = 0,
                 request_duration_ms: Optional[int] = None,
                 response_duration_ms: Optional[int] = None,
                 upstream_host: Optional[str] = None, upstream_cluster: Optional[str] = None,
                 upstream_local: Optional[tuple] = None,
                 downstream_remote: Optional[tuple] = None,
                 downstream_local: Optional[tuple] = None,
                 route_name: Optional[str] = None):
        self.start_time = start_time
        self.method = method
        self.path = path
        self.authority = authority
        self.scheme = scheme
        self.protocol = protocol
        self.request_headers = request_headers
        self.response_headers = response_headers
        self.response_trailers = response_trailers
        self.response_code = response_code
        self.response_code_details = response_code_details
        self.response_flags = response_flags if response_flags is not None else []
        self.bytes_received = bytes_received
        self.bytes_sent = bytes_sent
        self.duration_ms = duration_ms
        self.request_duration_ms = request_duration_ms
        self.response_duration_ms = response_duration_ms
        self.upstream_host = upstream_host
        self.upstream_cluster = upstream_cluster
        self.upstream_local = upstream_local
        self.downstream_remote = downstream_remote
        self.downstream_local = downstream_local
        self.route_name = route_name

    def __repr__(self) -> str:
        return (f"<LogRecord {self.method!r} {self.path!r} -> {self.response_code} "
                f"{','.join(self.response_flags) or '-'} {self.duration_ms}ms>")


def headers_with(get: Optional[HeaderGetter], overrides: dict) -> HeaderGetter:
    """A header accessor that answers from `overrides` ({lower-case bytes name: bytes value})
    first, then from `get`: for headers the proxy added or changed, which Envoy's access log sees
    (a generated x-request-id, x-envoy-upstream-service-time, x-envoy-original-path...)."""
    if get is None:
        return overrides.get

    def lookup(name: bytes) -> Optional[bytes]:
        value = overrides.get(name)
        return value if value is not None else get(name)
    return lookup
