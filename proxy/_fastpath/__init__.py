"""The per-request hot path in Cython: HTTP/1.1 head parsing and endpoint selection."""
