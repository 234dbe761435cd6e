"""Envoy access logs for the HTTP connection manager (envoy.access_loggers.file / stdout /
stderr): `format` compiles Envoy format strings and JSON formats, `record` is what one finished
request looks like to them, `writer` buffers and writes the lines."""
from proxy.access_log.format import DEFAULT_FORMAT, FormatError, compile_json, compile_text
from proxy.access_log.record import LogRecord, headers_with
from proxy.access_log.writer import AccessLogs, close_all, flush_all, reopen_all

__all__ = ["AccessLogs", "DEFAULT_FORMAT", "FormatError", "LogRecord", "close_all",
           "compile_json", "compile_text", "flush_all", "headers_with", "reopen_all"]
