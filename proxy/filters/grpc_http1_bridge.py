"""envoy.filters.http.grpc_http1_bridge (grpc_http1_bridge_filter.rst): an HTTP/1.1 client that
cannot read trailers calls a gRPC service. For such a request (HTTP/1.x, content-type
application/grpc) the response is held whole: its grpc-status and grpc-message trailers become
response headers, and a non-zero grpc-status turns the HTTP status into 503. Only unary calls fit,
as Envoy's docs say; the holding itself is done by the connection (Downstream.bridge)."""
from __future__ import annotations


class GrpcHttp1Bridge:
    __slots__ = ()

    def decode_headers(self, ds, head, entry, cluster_name):
        if not ds.stream and (head.get(b"content-type") or b"").startswith(b"application/grpc"):
            ds.bridge = []      # the response's body, held until its trailers
        return None
