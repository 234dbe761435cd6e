"""Upstream connections, the Python face.

`Upstream` (one HTTP/1.1 connection to a host, reused through the host's pool: response head
parsed in one fast-path call, body framed by Content-Length, chunked or close) runs for every
request and so lives in Cython: proxy/_fastpath/connection.pyx. Pools are per host
(`proxy.cluster.Host.idle`); connections are opened by the downstream that needs one.
"""
from proxy._fastpath.connection import Upstream  # noqa: F401
