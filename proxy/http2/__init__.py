"""HTTP/2 on both sides of the proxy, with the h2 package as the frame codec.

cyvoy's connection manager (proxy/_fastpath/connection.pyx) speaks HTTP/1.1. HTTP/2 is translated
at the codec boundary, as Envoy's codecs translate every protocol into one stream interface:

- downstream (downstream.py): each HTTP/2 stream of a client gets its own `Downstream` state
  machine, fed the stream's request as HTTP/1.1 bytes; what it writes back is read as an
  HTTP/1.1 response and sent as HEADERS, DATA and trailers on the stream;
- upstream (upstream.py): a cluster configured for HTTP/2 gives its `Upstream` objects a stream
  slot on a shared, multiplexed connection instead of a socket of their own.

So routing, retries, filters, circuit breakers, stats and access logs are the same code for both
protocols. RFC 9113 section 8.2 rules apply at both borders (lowercase names, no
connection-specific fields, `:authority` and Host, cookies).
"""
from __future__ import annotations

from dataclasses import dataclass

# Envoy's defaults for Http2ProtocolOptions (source/common/http/utility.h, OptionsLimits)
DEFAULT_MAX_CONCURRENT_STREAMS = 2**31 - 1
DEFAULT_WINDOW = 256 * 1024 * 1024
DEFAULT_HPACK_TABLE_SIZE = 4096
DEFAULT_MAX_OUTBOUND_FRAMES = 10000
DEFAULT_MAX_OUTBOUND_CONTROL_FRAMES = 1000
DEFAULT_MAX_EMPTY_FRAMES = 1
DEFAULT_MAX_PRIORITY_PER_STREAM = 100

PREFACE_LINE = b"PRI * HTTP/2.0\r\n"

# connection-specific fields, never carried in HTTP/2 (RFC 9113 8.2.2)
CONNECTION_SPECIFIC = frozenset((b"connection", b"keep-alive", b"proxy-connection",
                                 b"transfer-encoding", b"upgrade"))


@dataclass
class Http2Options:
    """config/core/v3/protocol.proto Http2ProtocolOptions, the fields cyvoy honours."""
    hpack_table_size: int = DEFAULT_HPACK_TABLE_SIZE
    max_concurrent_streams: int = DEFAULT_MAX_CONCURRENT_STREAMS
    initial_stream_window_size: int = DEFAULT_WINDOW
    initial_connection_window_size: int = DEFAULT_WINDOW
    max_outbound_frames: int = DEFAULT_MAX_OUTBOUND_FRAMES
    max_outbound_control_frames: int = DEFAULT_MAX_OUTBOUND_CONTROL_FRAMES
    max_consecutive_inbound_frames_with_empty_payload: int = DEFAULT_MAX_EMPTY_FRAMES
    max_inbound_priority_frames_per_stream: int = DEFAULT_MAX_PRIORITY_PER_STREAM

    @classmethod
    def from_config(cls, raw: dict | None) -> "Http2Options":
        if not raw:
            return cls()
        return cls(**{k: v for k, v in raw.items() if k in cls.__dataclass_fields__ and v is not None})


def trailer_list(raw: bytes) -> list:
    """Trailer field lines (as the chunked decoder keeps them) as an HTTP/2 header list, without
    the fields HTTP/2 does not carry (RFC 9113 8.2.2)."""
    out = []
    for line in raw.split(b"\r\n"):
        if not line:
            continue
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name in CONNECTION_SPECIFIC or name == b"te":
            continue
        out.append((name, value.strip()))
    return out
