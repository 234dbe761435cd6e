"""Envoy access log formats, compiled once into a function of one `LogRecord`.

Reference: Envoy's configuration/observability/access_log/usage.rst ("Format Rules", "Default
Format String", "Format Dictionaries", "Command Operators") and
envoy/config/core/v3/substitution_format_string.proto.

    compile_text(fmt)            -> f(record) -> bytes   one log line (its "\\n" is in the format)
    compile_json(struct, typed)  -> f(record) -> bytes   one JSON object and "\\n"

A format string is literal text and command operators: `%NAME%`, `%NAME(arg)%`, `%NAME(arg):Z%`
(Z: truncate the value to Z bytes) and `%%` for a literal percent sign. Anything else after a `%`
is refused when the config is loaded (FormatError, turned into a ConfigError with its path by
the config builder), as are unknown operators and Envoy operators cyvoy does not implement.

Values: an unset or empty value prints "-" ("" with omit_empty_values). In typed JSON a value
that is exactly one operator keeps its type (numbers for RESPONSE_CODE, BYTES_*, *DURATION, ports;
null when unset, or the key is left out with omit_empty_values); anything else is a string.
%RESPONSE_FLAGS% is "-" when no flag is set, in JSON too (Envoy's ResponseFlagUtils does so).
Envoy's newer aliases %REQUEST_HEADER(X)%, %RESPONSE_HEADER(X)%, %RESPONSE_TRAILER(X)% work too.

Log injection: the text format escapes every control byte (0x00-0x1f and 0x7f, which includes
CR, LF, TAB, NUL and ESC) of every value it prints as the four characters `\\xNN` (lower-case hex),
so a header, path or upstream reply can never end a log line early or drive a terminal. Envoy
itself writes header values raw (its codecs refuse CR/LF/NUL in headers; quotes are not escaped
either, envoyproxy/envoy#4191); cyvoy escapes because its parser's guarantees should not be the
only line of defence. Quotes, backslashes and bytes >= 0x80 are written as received, as Envoy
does, so a `\\xNN` already in a value is not told apart from an escape. JSON output needs no such
step: orjson escapes control characters inside JSON strings.

Speed: each format becomes one generated Python function (source built from fixed snippets and
generated names only; user text is never part of the source) that calls a getter per operator
and joins the pieces; literals are pre-encoded and adjacent ones merged; %START_TIME% formats the
date once per second and adds the sub-second digits.
"""
from __future__ import annotations

import os
import re
import socket
import time
from typing import Any, Callable, Optional

import orjson

DEFAULT_FORMAT = (
    '[%START_TIME%] "%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%" '
    '%RESPONSE_CODE% %RESPONSE_FLAGS% %BYTES_RECEIVED% %BYTES_SENT% %DURATION% '
    '%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% "%REQ(X-FORWARDED-FOR)%" "%REQ(USER-AGENT)%" '
    '"%REQ(X-REQUEST-ID)%" "%REQ(:AUTHORITY)%" "%UPSTREAM_HOST%"\n'
)

# Envoy's response flags, short and long names, in the order Envoy prints them
# (source/common/stream_info/utility.h, CORE_RESPONSE_FLAGS).
RESPONSE_FLAGS: tuple[tuple[str, str], ...] = (
    ("LH", "FailedLocalHealthCheck"), ("UH", "NoHealthyUpstream"),
    ("UT", "UpstreamRequestTimeout"), ("LR", "LocalReset"), ("UR", "UpstreamRemoteReset"),
    ("UF", "UpstreamConnectionFailure"), ("UC", "UpstreamConnectionTermination"),
    ("UO", "UpstreamOverflow"), ("NR", "NoRouteFound"), ("DI", "DelayInjected"),
    ("FI", "FaultInjected"), ("RL", "RateLimited"), ("UAEX", "UnauthorizedExternalService"),
    ("RLSE", "RateLimitServiceError"), ("DC", "DownstreamConnectionTermination"),
    ("URX", "UpstreamRetryLimitExceeded"), ("SI", "StreamIdleTimeout"),
    ("IH", "InvalidEnvoyRequestHeaders"), ("DPE", "DownstreamProtocolError"),
    ("UMSDR", "UpstreamMaxStreamDurationReached"), ("RFCF", "ResponseFromCacheFilter"),
    ("NFCF", "NoFilterConfigFound"), ("DT", "DurationTimeout"), ("UPE", "UpstreamProtocolError"),
    ("NC", "NoClusterFound"), ("OM", "OverloadManagerTerminated"), ("DF", "DnsResolutionFailed"),
    ("DO", "DropOverload"), ("DR", "DownstreamRemoteReset"),
)
_FLAG_RANK = {short: i for i, (short, _) in enumerate(RESPONSE_FLAGS)}
_FLAG_LONG = dict(RESPONSE_FLAGS)


class FormatError(ValueError):
    """A format the config loader refuses. `where` locates it inside a JSON format
    ("status", "outer.inner"); "" for a format string."""

    def __init__(self, reason: str, where: str = ""):
        self.reason = reason
        self.where = where
        super().__init__(f"{where}: {reason}" if where else reason)


# --- escaping ----------------------------------------------------------------------------------

_CTRL = re.compile(rb"[\x00-\x1f\x7f]")
_CTRL_BYTES = bytes(list(range(0x20)) + [0x7f])    # checked with bytes.translate: fast
_HEX = {bytes([c]): b"\\x%02x" % c for c in list(range(0x20)) + [0x7f]}


def _hex(m: re.Match) -> bytes:
    return _HEX[m.group()]


def escape(value: bytes) -> bytes:
    """`value` with every control byte written as \\xNN (the same object when there is none)."""
    return _CTRL.sub(_hex, value)


_STR_CACHE: dict[str, bytes] = {}


def _str_bytes(value: str) -> bytes:
    """A str value (cluster, route, upstream host...) as escaped UTF-8. These come from a small
    set (config names, host addresses), so the encodings are cached."""
    out = _STR_CACHE.get(value)
    if out is None:
        if len(_STR_CACHE) >= 4096:
            _STR_CACHE.clear()
        out = _STR_CACHE[value] = _CTRL.sub(_hex, value.encode("utf-8", "backslashreplace"))
    return out


def _to_str(value: bytes) -> str:
    return value.decode("utf-8", "backslashreplace")


# --- operators ---------------------------------------------------------------------------------

# How an operator's value is rendered.
INT = "int"         # int or None
BYTES = "bytes"     # bytes from the wire (headers, path...) or None
STR = "str"         # str or None


class Op:
    """One command operator, as a Python expression over the record `r`.

    `expr` gives its value (None: unset) rendered per `kind`; the names it uses are written
    `$name` and bound from `env` (a "$" name assigned with := is a local temporary). `text_expr`,
    if set, gives the text form directly as bytes (safe as is). `const` is a value known at load
    time (HOSTNAME, ENVIRONMENT); such an operator has no expression."""
    __slots__ = ("name", "kind", "expr", "env", "text_expr", "const")

    def __init__(self, name: str, kind: str, expr: Optional[str] = None,
                 env: Optional[dict] = None, text_expr: Optional[str] = None, const: Any = None):
        self.name = name
        self.kind = kind
        self.expr = expr
        self.env = env or {}
        self.text_expr = text_expr
        self.const = const

    def getter(self) -> Callable[[Any], Any]:
        """The value as a function of the record (for tests and tools)."""
        ns: dict = {}
        return eval("lambda r: " + _bind(self, "o_", ns), ns)


def _bind(op: Op, prefix: str, ns: dict, text: bool = False) -> str:
    for k, v in op.env.items():
        ns[prefix + k] = v
    expr = op.text_expr if text and op.text_expr else op.expr
    return expr.replace("$", prefix)


_HEADER_NAME = re.compile(r"^:?[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
_REQ_PSEUDO = {":method": "r.method", ":path": "r.path", ":authority": "r.authority",
               ":scheme": "r.scheme"}
_RESP_PSEUDO = {":status": "($_code(r))"}


def _status(r) -> Optional[bytes]:
    return b"%d" % r.response_code if r.response_code else None


def _header_op(op: str, accessor: str, pseudo: dict, arg: Optional[str],
               max_len: Optional[int]) -> Op:
    if not arg:
        raise FormatError(f"%{op}(...)% needs a header name, e.g. %{op}(USER-AGENT)%")
    names = arg.split("?")
    if len(names) > 2:
        raise FormatError(f"%{op}({arg})%: at most one alternative header (X?Y) is allowed")
    env: dict = {"_code": _status}
    exprs = []
    for i, name in enumerate(names):
        if not _HEADER_NAME.match(name):
            raise FormatError(f"%{op}({arg})%: invalid header name {name!r}")
        lname = name.lower()
        if lname in pseudo:
            exprs.append(pseudo[lname])
        else:
            # the accessor takes the lower-case name as bytes, like RequestHead.get
            env[f"k{i}"] = lname.encode("latin-1")
            exprs.append(f"($h(${f'k{i}'}) if ($h := r.{accessor}) is not None else None)")
    expr = exprs[0] if len(exprs) == 1 else f"({exprs[0]} or {exprs[1]})"
    if max_len is not None:
        expr = f"($t[:{int(max_len)}] if ($t := {expr}) else $t)"
    return Op(op, BYTES, expr, env)


def _address(a) -> Optional[str]:
    if not a:
        return None
    ip, port = a[0], a[1]
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


def _addr_op(name: str, field: str, part: str) -> Op:
    """DOWNSTREAM_/UPSTREAM_ address operators over an (ip, port) record field."""
    if part == "addr":
        return Op(name, STR, f"$f(r.{field})", {"f": _address})
    if part == "ip":
        return Op(name, STR, f"($a[0] if ($a := r.{field}) else None)")
    return Op(name, INT, f"($a[1] if ($a := r.{field}) else None)")


def _host_ip(host: Optional[str]) -> Optional[str]:
    if not host:
        return None
    ip = host.rpartition(":")[0]
    return ip.strip("[]") if ip else host


def _host_port(host: Optional[str]) -> Optional[int]:
    if not host:
        return None
    port = host.rpartition(":")[2]
    return int(port) if port.isdigit() else None


def _flags(r) -> str:
    f = r.response_flags
    if not f:
        return "-"             # Envoy's ResponseFlagUtils::toShortString gives "-" for none
    if len(f) == 1:
        return f[0]
    return ",".join(sorted(f, key=lambda x: _FLAG_RANK.get(x, 999)))


def _flags_long(r) -> str:
    f = r.response_flags
    if not f:
        return "-"
    return ",".join(_FLAG_LONG.get(x, x) for x in sorted(f, key=lambda x: _FLAG_RANK.get(x, 999)))


def _response_tx(r) -> Optional[int]:
    d = r.response_duration_ms
    return None if d is None else max(r.duration_ms - d, 0)


_MS_Z = tuple(b".%03dZ" % ms for ms in range(1000))


class StartTime:
    """%START_TIME% / %START_TIME(fmt)%: UTC, as Envoy's date formatter. The default is ISO 8601
    with milliseconds ("2016-04-15T20:17:00.310Z"); a custom format is strftime's with Envoy's
    additions %s (epoch seconds), %f / %1f..%9f (fraction of a second, 9 digits by default) and
    absl's %E#S / %E*S (seconds with # / all fractional digits) and %Ez (+00:00); %Z is "UTC".
    Everything but the sub-second digits is formatted once per second. Times have microsecond
    precision (the record's float); finer digits are zeros."""
    __slots__ = ("pieces", "default", "second", "cached", "prefix")

    _SPEC = re.compile(r"%(?:([1-9]?)f|s|E([0-9*])S|Ez|%|.)", re.S)

    def __init__(self, fmt: Optional[str]):
        self.default = not fmt
        if not fmt:
            fmt = "%Y-%m-%dT%H:%M:%E3SZ"
        # pieces: str (a strftime pattern, formatted once per second), ("frac", digits),
        # ("secfrac", digits, or None for %E*S) or ("epoch",)
        pieces: list = []
        text: list[str] = []
        i = 0
        while i < len(fmt):
            j = fmt.find("%", i)
            if j < 0:
                text.append(fmt[i:])
                break
            text.append(fmt[i:j])
            m = self._SPEC.match(fmt, j)
            if m is None:               # a lone % at the very end
                text.append("%%")
                break
            spec = m.group(0)
            if m.group(1) is not None:              # %f, %1f..%9f
                pieces += ["".join(text), ("frac", int(m.group(1) or 9))]
                text = []
            elif spec == "%s":
                pieces += ["".join(text), ("epoch",)]
                text = []
            elif m.group(2) is not None:            # %E#S, %E*S
                text.append("%S")
                d = m.group(2)
                pieces += ["".join(text), ("secfrac", None if d == "*" else int(d))]
                text = []
            elif spec == "%Ez":
                text.append("+00:00")
            elif spec == "%Z":
                text.append("UTC")
            else:
                text.append(spec)
            i = m.end()
        pieces.append("".join(text))
        self.pieces = tuple(p for p in pieces if p != "")
        self.second = None
        self.cached: tuple = ()
        self.prefix = b""

    def _refresh(self, second: int) -> None:
        tm = time.gmtime(second)
        self.cached = tuple(time.strftime(p, tm) if p.__class__ is str else p
                            for p in self.pieces)
        self.second = second
        if self.default:
            self.prefix = self.cached[0].encode()

    def text(self, r) -> bytes:
        us = int(r.start_time * 1e6 + 0.5)      # microseconds, rounded
        second = us // 1_000_000
        if second != self.second:
            self._refresh(second)
        if self.default:
            return self.prefix + _MS_Z[(us % 1_000_000) // 1000]
        return self._render(second, us % 1_000_000).encode("utf-8", "backslashreplace")

    def __call__(self, r) -> str:
        us = int(r.start_time * 1e6 + 0.5)
        second = us // 1_000_000
        if second != self.second:
            self._refresh(second)
        return self._render(second, us % 1_000_000)

    def _render(self, second: int, us: int) -> str:
        out = []
        for p in self.cached:
            if p.__class__ is str:
                out.append(p)
            elif p[0] == "frac":
                out.append(f"{us * 1000:09d}"[:p[1]])
            elif p[0] == "epoch":
                out.append(str(second))
            else:   # secfrac
                digits = p[1]
                if digits is None:
                    frac = f"{us:06d}".rstrip("0")
                    if frac:
                        out.append("." + frac)
                elif digits:
                    out.append("." + f"{us * 1000:09d}"[:digits])
        return "".join(out)


# Envoy operators cyvoy knows but does not implement: refused by name, not as unknown.
NOT_SUPPORTED = frozenset({
    "REQUEST_HEADERS_BYTES", "RESPONSE_HEADERS_BYTES", "RESPONSE_TRAILERS_BYTES",
    "UPSTREAM_PROTOCOL", "CONNECTION_TERMINATION_DETAILS", "UPSTREAM_REQUEST_ATTEMPT_COUNT",
    "UPSTREAM_WIRE_BYTES_SENT", "UPSTREAM_WIRE_BYTES_RECEIVED", "UPSTREAM_HEADER_BYTES_SENT",
    "UPSTREAM_HEADER_BYTES_RECEIVED", "DOWNSTREAM_WIRE_BYTES_SENT",
    "DOWNSTREAM_WIRE_BYTES_RECEIVED", "DOWNSTREAM_HEADER_BYTES_SENT",
    "DOWNSTREAM_HEADER_BYTES_RECEIVED", "REQUEST_TX_DURATION", "VIRTUAL_CLUSTER_NAME",
    "UPSTREAM_TRANSPORT_FAILURE_REASON", "DOWNSTREAM_TRANSPORT_FAILURE_REASON",
    "DOWNSTREAM_DIRECT_REMOTE_ADDRESS", "DOWNSTREAM_DIRECT_REMOTE_ADDRESS_WITHOUT_PORT",
    "DOWNSTREAM_DIRECT_REMOTE_PORT", "CONNECTION_ID", "UPSTREAM_CONNECTION_ID", "STREAM_ID",
    "GRPC_STATUS", "GRPC_STATUS_NUMBER", "DYNAMIC_METADATA", "CLUSTER_METADATA",
    "UPSTREAM_METADATA", "METADATA", "FILTER_STATE", "UPSTREAM_FILTER_STATE", "CEL",
    "REQUESTED_SERVER_NAME", "DOWNSTREAM_LOCAL_URI_SAN", "DOWNSTREAM_PEER_URI_SAN",
    "DOWNSTREAM_LOCAL_DNS_SAN", "DOWNSTREAM_PEER_DNS_SAN", "DOWNSTREAM_LOCAL_IP_SAN",
    "DOWNSTREAM_PEER_IP_SAN", "DOWNSTREAM_LOCAL_SUBJECT", "DOWNSTREAM_PEER_SUBJECT",
    "DOWNSTREAM_PEER_ISSUER", "DOWNSTREAM_TLS_SESSION_ID", "DOWNSTREAM_TLS_CIPHER",
    "DOWNSTREAM_TLS_VERSION", "DOWNSTREAM_PEER_FINGERPRINT_256", "DOWNSTREAM_PEER_FINGERPRINT_1",
    "DOWNSTREAM_PEER_SERIAL", "DOWNSTREAM_PEER_CERT", "DOWNSTREAM_PEER_CERT_V_START",
    "DOWNSTREAM_PEER_CERT_V_END", "UPSTREAM_PEER_SUBJECT", "UPSTREAM_PEER_ISSUER",
    "UPSTREAM_TLS_SESSION_ID", "UPSTREAM_TLS_CIPHER", "UPSTREAM_TLS_VERSION", "UPSTREAM_PEER_CERT",
    "UPSTREAM_PEER_CERT_V_START", "UPSTREAM_PEER_CERT_V_END", "UPSTREAM_PEER_URI_SAN",
    "UPSTREAM_PEER_DNS_SAN", "UPSTREAM_PEER_IP_SAN", "UPSTREAM_LOCAL_URI_SAN",
    "UPSTREAM_LOCAL_DNS_SAN", "UPSTREAM_LOCAL_IP_SAN", "LOCAL_REPLY_BODY", "FILTER_CHAIN_NAME",
    "UNIQUE_ID", "ACCESS_LOG_TYPE", "TRACE_ID", "REQ_WITHOUT_QUERY", "PATH", "CUSTOM_FLAGS",
    "EMIT_TIME", "START_TIME_LOCAL", "EMIT_TIME_LOCAL", "UPSTREAM_CLUSTER_RAW",
    "DOWNSTREAM_HANDSHAKE_DURATION", "UPSTREAM_CONNECTION_POOL_READY_DURATION",
    "COMMON_DURATION", "QUERY_PARAM", "DOWNSTREAM_DETECTED_CLOSE_TYPE",
    "UPSTREAM_DETECTED_CLOSE_TYPE", "UPSTREAM_LOCAL_CLOSE_REASON",
})

# Operators that take a parameter in parentheses (every other one takes none):
# header operators, by name: (record accessor, pseudo-headers read from record fields)
_HEADER_OPS = {
    "REQ": ("request_headers", _REQ_PSEUDO), "REQUEST_HEADER": ("request_headers", _REQ_PSEUDO),
    "RESP": ("response_headers", _RESP_PSEUDO),
    "RESPONSE_HEADER": ("response_headers", _RESP_PSEUDO),
    "TRAILER": ("response_trailers", {}), "RESPONSE_TRAILER": ("response_trailers", {}),
}


def _attr(name: str, kind: str, field: str) -> Callable[[], Op]:
    return lambda: Op(name, kind, f"r.{field}")


def _call(name: str, kind: str, fn: Callable) -> Callable[[], Op]:
    return lambda: Op(name, kind, "$f(r)", {"f": fn})


_SIMPLE: dict[str, Callable[[], Op]] = {
    "PROTOCOL": _attr("PROTOCOL", BYTES, "protocol"),
    "RESPONSE_CODE": _attr("RESPONSE_CODE", INT, "response_code"),
    "RESPONSE_CODE_DETAILS": _attr("RESPONSE_CODE_DETAILS", STR, "response_code_details"),
    "RESPONSE_FLAGS": _call("RESPONSE_FLAGS", STR, _flags),
    "RESPONSE_FLAGS_LONG": _call("RESPONSE_FLAGS_LONG", STR, _flags_long),
    "BYTES_RECEIVED": _attr("BYTES_RECEIVED", INT, "bytes_received"),
    "BYTES_SENT": _attr("BYTES_SENT", INT, "bytes_sent"),
    "DURATION": _attr("DURATION", INT, "duration_ms"),
    "REQUEST_DURATION": _attr("REQUEST_DURATION", INT, "request_duration_ms"),
    "RESPONSE_DURATION": _attr("RESPONSE_DURATION", INT, "response_duration_ms"),
    "RESPONSE_TX_DURATION": _call("RESPONSE_TX_DURATION", INT, _response_tx),
    "UPSTREAM_HOST": _attr("UPSTREAM_HOST", STR, "upstream_host"),
    "UPSTREAM_CLUSTER": _attr("UPSTREAM_CLUSTER", STR, "upstream_cluster"),
    "UPSTREAM_REMOTE_ADDRESS": _attr("UPSTREAM_REMOTE_ADDRESS", STR, "upstream_host"),
    "UPSTREAM_REMOTE_ADDRESS_WITHOUT_PORT": lambda: Op(
        "UPSTREAM_REMOTE_ADDRESS_WITHOUT_PORT", STR, "$f(r.upstream_host)", {"f": _host_ip}),
    "UPSTREAM_REMOTE_PORT": lambda: Op(
        "UPSTREAM_REMOTE_PORT", INT, "$f(r.upstream_host)", {"f": _host_port}),
    "UPSTREAM_LOCAL_ADDRESS": lambda: _addr_op("UPSTREAM_LOCAL_ADDRESS", "upstream_local", "addr"),
    "UPSTREAM_LOCAL_ADDRESS_WITHOUT_PORT":
        lambda: _addr_op("UPSTREAM_LOCAL_ADDRESS_WITHOUT_PORT", "upstream_local", "ip"),
    "UPSTREAM_LOCAL_PORT": lambda: _addr_op("UPSTREAM_LOCAL_PORT", "upstream_local", "port"),
    "DOWNSTREAM_REMOTE_ADDRESS":
        lambda: _addr_op("DOWNSTREAM_REMOTE_ADDRESS", "downstream_remote", "addr"),
    "DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT":
        lambda: _addr_op("DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT", "downstream_remote", "ip"),
    "DOWNSTREAM_REMOTE_PORT":
        lambda: _addr_op("DOWNSTREAM_REMOTE_PORT", "downstream_remote", "port"),
    "DOWNSTREAM_LOCAL_ADDRESS":
        lambda: _addr_op("DOWNSTREAM_LOCAL_ADDRESS", "downstream_local", "addr"),
    "DOWNSTREAM_LOCAL_ADDRESS_WITHOUT_PORT":
        lambda: _addr_op("DOWNSTREAM_LOCAL_ADDRESS_WITHOUT_PORT", "downstream_local", "ip"),
    "DOWNSTREAM_LOCAL_PORT": lambda: _addr_op("DOWNSTREAM_LOCAL_PORT", "downstream_local", "port"),
    "ROUTE_NAME": _attr("ROUTE_NAME", STR, "route_name"),
    "HOSTNAME": lambda: Op("HOSTNAME", STR, const=socket.gethostname() or None),
}

SUPPORTED = frozenset(_SIMPLE) | frozenset(_HEADER_OPS) | {"START_TIME", "ENVIRONMENT"}


def _operator(name: str, arg: Optional[str], max_len: Optional[int]) -> Op:
    if name in _HEADER_OPS:
        accessor, pseudo = _HEADER_OPS[name]
        return _header_op(name, accessor, pseudo, arg, max_len)
    if name == "ENVIRONMENT":
        if not arg:
            raise FormatError("%ENVIRONMENT(...)% needs a variable name")
        value = os.environ.get(arg)     # read once, when the config is loaded
        if value is not None and max_len is not None:
            value = value[:max_len]
        return Op(name, STR, const=value or None)
    if name in SUPPORTED and max_len is not None:
        raise FormatError(f"%{name}% does not take a length (:{max_len})")
    if name == "START_TIME":
        st = StartTime(arg)
        return Op(name, STR, "$st(r)", {"st": st, "stb": st.text}, text_expr="$stb(r)")
    if name in _SIMPLE:
        if arg is not None:
            raise FormatError(f"%{name}% does not take a parameter ({arg!r})")
        return _SIMPLE[name]()
    if name in NOT_SUPPORTED:
        raise FormatError(f"not supported by cyvoy (command operator %{name}% is not "
                          "supported yet)")
    raise FormatError(f"unknown command operator %{name}%")


# --- parsing -----------------------------------------------------------------------------------

_COMMAND = re.compile(r"([A-Z][A-Z0-9_]*)(?:\(([^)]*)\))?(?::([0-9]+))?%")


def parse(fmt: str) -> list:
    """The parts of a format string: str literals and Op operators, in order."""
    parts: list = []
    text: list[str] = []
    i, n = 0, len(fmt)
    while i < n:
        j = fmt.find("%", i)
        if j < 0:
            text.append(fmt[i:])
            break
        text.append(fmt[i:j])
        if fmt.startswith("%", j + 1):
            text.append("%")
            i = j + 2
            continue
        m = _COMMAND.match(fmt, j + 1)
        if m is None:
            snippet = fmt[j:j + 24]
            raise FormatError(f"invalid command operator at position {j} ({snippet!r}): expected "
                              "%NAME%, %NAME(...)%, %NAME(...):LENGTH% or %% for a '%'")
        literal = "".join(text)
        if literal:
            parts.append(literal)
        text = []
        length = m.group(3)
        parts.append(_operator(m.group(1), m.group(2), int(length) if length else None))
        i = m.end()
    literal = "".join(text)
    if literal:
        parts.append(literal)
    return parts


def _exec(src: str, ns: dict, what: str) -> Callable[[Any], bytes]:
    exec(compile(src, what, "exec"), ns)
    return ns["fmt"]


# --- text --------------------------------------------------------------------------------------

def compile_text(fmt: Optional[str] = None, omit_empty_values: bool = False
                 ) -> Callable[[Any], bytes]:
    """f(record) -> the log line as bytes. `fmt` None: Envoy's default format."""
    parts = parse(DEFAULT_FORMAT if fmt is None else fmt)
    dash = b"" if omit_empty_values else b"-"
    # literals as bytes; load-time constants become literals; adjacent literals merge
    merged: list = []
    for p in parts:
        if isinstance(p, str):
            p = p.encode("utf-8")
        elif p.expr is None:
            p = _str_bytes(p.const) if p.const else dash
        if isinstance(p, bytes):
            if not p:
                continue
            if merged and isinstance(merged[-1], bytes):
                merged[-1] += p
                continue
        merged.append(p)
    ns: dict = {"_join": b"".join, "_esc": _CTRL.sub, "_hex": _hex, "_senc": _str_bytes,
                "_C": _CTRL_BYTES, "_len": len, "D": dash}
    exprs = []
    for i, p in enumerate(merged):
        if isinstance(p, bytes):
            ns[f"L{i}"] = p
            exprs.append(f"L{i}")
            continue
        pre = f"o{i}_"
        e = _bind(p, pre, ns, text=True)
        v = pre + "v"
        if p.text_expr:
            exprs.append(f"({v} if ({v} := {e}) else D)")
        elif p.kind == INT:
            exprs.append(f"(D if ({v} := {e}) is None else b'%d' % {v})")
        elif p.kind == BYTES:
            # clean values (nearly all) cost one translate; others are escaped
            exprs.append(f"(({v} if _len({v}.translate(None, _C)) == _len({v}) "
                         f"else _esc(_hex, {v})) if ({v} := {e}) else D)")
        else:
            exprs.append(f"(_senc({v}) if ({v} := {e}) else D)")
    if not exprs:
        return lambda r: b""
    if len(exprs) == 1:
        src = f"def fmt(r):\n    return {exprs[0]}\n"
    else:
        src = "def fmt(r):\n    return _join((" + ", ".join(exprs) + "))\n"
    return _exec(src, ns, "<access log format>")


# --- JSON --------------------------------------------------------------------------------------

class _Missing:
    """A value left out of the JSON object (omit_empty_values)."""
    __slots__ = ()


_MISSING = _Missing()


class _Json:
    """Builds the source of a function returning the JSON value of a format struct."""

    def __init__(self, typed: bool, omit: bool):
        self.typed = typed
        self.omit = omit
        self.ns: dict = {"_cat": "".join, "_s": _to_str, "_M": _MISSING, "str": str}
        self.n = 0

    def name(self, value: Any) -> str:
        self.n += 1
        key = f"c{self.n}"
        self.ns[key] = value
        return key

    def value(self, raw: Any, where: str) -> str:
        if isinstance(raw, dict):
            items = []
            for k, v in raw.items():
                if not isinstance(k, str):
                    raise FormatError("keys must be strings", where)
                items.append(f"{self.name(k)}: {self.value(v, f'{where}.{k}' if where else k)}")
            return "{" + ", ".join(items) + "}"
        if isinstance(raw, list):
            return "[" + ", ".join(self.value(v, f"{where}[{i}]")
                                   for i, v in enumerate(raw)) + "]"
        if isinstance(raw, str):
            try:
                return self.string(parse(raw))
            except FormatError as e:
                raise FormatError(e.reason, where) from None
        if raw is None or isinstance(raw, (bool, int, float)):
            return self.name(raw)           # literals pass through
        raise FormatError(f"unsupported value of type {type(raw).__name__}", where)

    def op(self, p: Op) -> tuple[str, str]:
        self.n += 1
        pre = f"o{self.n}_"
        return _bind(p, pre, self.ns), pre + "v"

    def string(self, parts: list) -> str:
        none = "_M" if self.omit else "None"
        if self.typed and len(parts) == 1 and isinstance(parts[0], Op):
            p = parts[0]
            if p.expr is None:
                return self.name(p.const) if p.const else none
            e, v = self.op(p)
            if p.kind == INT:
                return e if not self.omit else f"(_M if ({v} := {e}) is None else {v})"
            if p.kind == BYTES:
                return f"(_s({v}) if ({v} := {e}) else {none})"
            return f"({v} if ({v} := {e}) else {none})"
        # a string: literals and operators as text, with "-" for unset ones
        dash = self.name("" if self.omit else "-")
        pieces = []
        for p in parts:
            if isinstance(p, str):
                pieces.append(self.name(p))
            elif p.expr is None:
                pieces.append(self.name(p.const) if p.const else dash)
            else:
                e, v = self.op(p)
                if p.kind == INT:
                    pieces.append(f"({dash} if ({v} := {e}) is None else str({v}))")
                elif p.kind == BYTES:
                    pieces.append(f"(_s({v}) if ({v} := {e}) else {dash})")
                else:
                    pieces.append(f"({v} if ({v} := {e}) else {dash})")
        if not pieces:
            return self.name("")
        if len(pieces) == 1:
            return pieces[0]
        return "_cat((" + ", ".join(pieces) + "))"


def _prune(value: Any) -> Any:
    if value.__class__ is dict:
        return {k: _prune(v) for k, v in value.items() if v is not _MISSING}
    if value.__class__ is list:
        return [_prune(v) for v in value if v is not _MISSING]
    return value


def compile_json(struct: Any, typed: bool = True, omit_empty_values: bool = False
                 ) -> Callable[[Any], bytes]:
    """f(record) -> one JSON object and "\\n" (keys in the order of the config). `typed` False:
    Envoy's deprecated untyped FileAccessLog.json_format, every value a string."""
    if not isinstance(struct, dict):
        raise FormatError("a JSON format must be a mapping of keys to format strings")
    if not struct:
        raise FormatError("a JSON format needs at least one key")
    builder = _Json(typed, omit_empty_values)
    body = builder.value(struct, "")
    ns = builder.ns
    ns["_dumps"] = orjson.dumps
    ns["_prune"] = _prune
    if omit_empty_values:
        body = f"_prune({body})"
    return _exec(f"def fmt(r):\n    return _dumps({body}) + b'\\n'\n", ns,
                 "<access log json format>")


def is_default_format(cfg) -> bool:
    """Whether a model.AccessLogConfig logs in Envoy's default format, exactly as
    compile_text(None) renders it (no format given, "-" for empty values)."""
    return cfg.json_format is None and cfg.text_format is None and not cfg.omit_empty_values


def formatter_for(cfg) -> Callable[[Any], bytes]:
    """The formatter of a model.AccessLogConfig: its JSON format, its text format, or Envoy's
    default format."""
    if cfg.json_format is not None:
        return compile_json(cfg.json_format, cfg.typed_json, cfg.omit_empty_values)
    return compile_text(cfg.text_format, cfg.omit_empty_values)
