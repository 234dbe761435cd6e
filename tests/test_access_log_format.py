"""proxy.access_log.format: Envoy's format strings and JSON formats over a LogRecord.

Expected renderings follow Envoy's configuration/observability/access_log/usage.rst (default
format, command operators, "-" for unset values, typed JSON) and its response flag letters.
"""
import json
import re
import socket

import orjson
import pytest

from proxy.access_log.format import (DEFAULT_FORMAT, RESPONSE_FLAGS, FormatError, compile_json,
                                     compile_text, escape, parse)
from proxy.access_log.record import LogRecord, headers_with

T0 = 1460751420.310        # 2016-04-15T20:17:00.310Z, the timestamp of Envoy's own example


def record(**over) -> LogRecord:
    req = {b"user-agent": b"nsq2http", b"x-request-id": b"cc21d9b0-cf5c-432b-8c7e-98aeb7988cd2",
           b"x-forwarded-for": b"10.0.35.28", b"host": b"locations"}
    resp = {b"x-envoy-upstream-service-time": b"100", b"content-type": b"text/plain"}
    fields = dict(start_time=T0, method=b"POST", path=b"/api/v1/locations",
                  authority=b"locations", scheme=b"http", protocol=b"HTTP/1.1",
                  request_headers=req.get, response_headers=resp.get, response_code=204,
                  response_code_details="via_upstream", bytes_received=154, bytes_sent=0,
                  duration_ms=226, request_duration_ms=3, response_duration_ms=200,
                  upstream_host="10.0.2.1:80", upstream_cluster="locations",
                  upstream_local=("10.0.0.5", 40000), downstream_remote=("10.0.35.28", 51234),
                  downstream_local=("10.0.0.5", 8080), route_name="route_0")
    fields.update(over)
    return LogRecord(**fields)


def text(fmt, rec=None, **kw) -> str:
    return compile_text(fmt, **kw)(rec if rec is not None else record()).decode()


def js(struct, rec=None, **kw):
    line = compile_json(struct, **kw)(rec if rec is not None else record())
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    return json.loads(line)


# --- the default format ------------------------------------------------------------------------

DEFAULT_LINE = re.compile(
    r'^\[(?P<start>[^\]]+)\] "(?P<method>\S+) (?P<path>\S+) (?P<protocol>\S+)" '
    r'(?P<code>\S+) (?P<flags>\S+) (?P<rx>\S+) (?P<tx>\S+) (?P<duration>\S+) (?P<svc>\S+) '
    r'"(?P<xff>[^"]*)" "(?P<ua>[^"]*)" "(?P<rid>[^"]*)" "(?P<authority>[^"]*)" '
    r'"(?P<upstream>[^"]*)"\n$')


def test_default_format_field_by_field():
    line = compile_text()(record()).decode()
    m = DEFAULT_LINE.match(line)
    assert m, line
    assert m.groupdict() == {
        "start": "2016-04-15T20:17:00.310Z", "method": "POST", "path": "/api/v1/locations",
        "protocol": "HTTP/1.1", "code": "204", "flags": "-", "rx": "154", "tx": "0",
        "duration": "226", "svc": "100", "xff": "10.0.35.28", "ua": "nsq2http",
        "rid": "cc21d9b0-cf5c-432b-8c7e-98aeb7988cd2", "authority": "locations",
        "upstream": "10.0.2.1:80"}


def test_default_format_is_envoys_example_line():
    # usage.rst's example, with cyvoy's HTTP/1.1 and the upstream host as ip:port
    assert compile_text()(record()) == (
        b'[2016-04-15T20:17:00.310Z] "POST /api/v1/locations HTTP/1.1" 204 - 154 0 226 100 '
        b'"10.0.35.28" "nsq2http" "cc21d9b0-cf5c-432b-8c7e-98aeb7988cd2" "locations" '
        b'"10.0.2.1:80"\n')


def test_default_format_of_a_local_reply_without_upstream():
    rec = record(response_code=503, response_flags=["UH"], upstream_host=None,
                 response_headers=None, bytes_sent=19, request_headers={}.get)
    m = DEFAULT_LINE.match(compile_text()(rec).decode())
    assert (m["code"], m["flags"], m["svc"], m["xff"], m["ua"], m["rid"], m["upstream"]) == (
        "503", "UH", "-", "-", "-", "-", "-")


def test_default_format_prefers_the_original_path():
    get = headers_with(record().request_headers, {b"x-envoy-original-path": b"/before/rewrite"})
    assert DEFAULT_LINE.match(compile_text()(record(request_headers=get)).decode())["path"] == \
        "/before/rewrite"


def test_none_means_the_default_format():
    assert compile_text(None)(record()) == compile_text(DEFAULT_FORMAT)(record())


# --- START_TIME --------------------------------------------------------------------------------

@pytest.mark.parametrize("fmt, out", [
    ("%START_TIME%", "2016-04-15T20:17:00.310Z"),
    ("%START_TIME(%Y/%m/%dT%H:%M:%S%z)%", "2016/04/15T20:17:00+0000"),
    ("%START_TIME(%s)%", "1460751420"),
    ("%START_TIME(%s.%3f)%", "1460751420.310"),
    ("%START_TIME(%s.%6f)%", "1460751420.310000"),
    ("%START_TIME(%s.%9f)%", "1460751420.310000000"),
    ("%START_TIME(%f)%", "310000000"),
    ("%START_TIME(%H:%M:%E3S)%", "20:17:00.310"),
    ("%START_TIME(%E*S)%", "00.31"),
    ("%START_TIME(%Ez %Z)%", "+00:00 UTC"),
    ("%START_TIME(%%s)%", "%s"),
    ("%START_TIME(%Y-%m-%d)% %START_TIME%", "2016-04-15 2016-04-15T20:17:00.310Z"),
])
def test_start_time(fmt, out):
    assert text(fmt) == out


def test_start_time_milliseconds_are_not_rounded_up_into_the_next_second():
    # milliseconds are truncated (Envoy's duration_cast), the float is rounded to microseconds
    assert text("%START_TIME%", record(start_time=T0 + 0.6895)) == "2016-04-15T20:17:00.999Z"
    assert text("%START_TIME%", record(start_time=T0 + 0.68999999)) == "2016-04-15T20:17:01.000Z"
    assert text("%START_TIME%", record(start_time=1460751420.0)) == "2016-04-15T20:17:00.000Z"
    assert text("%START_TIME%", record(start_time=1460751420.9994)) == "2016-04-15T20:17:00.999Z"


def test_start_time_changes_with_the_second():
    f = compile_text("%START_TIME(%H:%M:%S.%3f)%")
    assert [f(record(start_time=T0 + d)) for d in (0, 0.5, 1, 61, 0)] == [
        b"20:17:00.310", b"20:17:00.810", b"20:17:01.310", b"20:18:01.310", b"20:17:00.310"]


# --- headers -----------------------------------------------------------------------------------

@pytest.mark.parametrize("fmt, out", [
    ("%REQ(:METHOD)%", "POST"), ("%REQ(:PATH)%", "/api/v1/locations"),
    ("%REQ(:AUTHORITY)%", "locations"), ("%REQ(:SCHEME)%", "http"),
    ("%REQ(User-Agent)%", "nsq2http"), ("%REQ(user-agent)%", "nsq2http"),
    ("%REQUEST_HEADER(USER-AGENT)%", "nsq2http"),
    ("%REQ(X-MISSING)%", "-"),
    ("%REQ(X-MISSING?USER-AGENT)%", "nsq2http"),
    ("%REQ(USER-AGENT?X-REQUEST-ID)%", "nsq2http"),
    ("%REQ(X-MISSING?X-ALSO-MISSING)%", "-"),
    ("%REQ(USER-AGENT):3%", "nsq"),
    ("%REQ(USER-AGENT):100%", "nsq2http"),
    ("%REQ(X-MISSING?USER-AGENT):4%", "nsq2"),
    ("%REQ(:PATH):4%", "/api"),
    ("%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)%", "100"), ("%RESP(CONTENT-TYPE):4%", "text"),
    ("%RESPONSE_HEADER(content-type)%", "text/plain"), ("%RESP(:STATUS)%", "204"),
    ("%RESP(X-MISSING)%", "-"),
    ("%TRAILER(GRPC-STATUS)%", "-"), ("%RESPONSE_TRAILER(GRPC-STATUS)%", "-"),
])
def test_header_operators(fmt, out):
    assert text(fmt) == out


def test_trailers_when_the_record_has_them():
    rec = record(response_trailers={b"grpc-status": b"0"}.get)
    assert text("%TRAILER(grpc-status)% %TRAILER(grpc-message)%", rec) == "0 -"


def test_headers_without_accessors_are_dashes():
    rec = record(request_headers=None, response_headers=None)
    assert text("%REQ(USER-AGENT)% %RESP(CONTENT-TYPE)% %REQ(:METHOD)%", rec) == "- - POST"


def test_empty_header_value_is_a_dash():
    rec = record(request_headers={b"user-agent": b""}.get)
    assert text("%REQ(USER-AGENT)%", rec) == "-"


def test_the_accessor_is_asked_the_lower_case_name_as_bytes():
    asked = []
    rec = record(request_headers=lambda name: asked.append(name))
    text("%REQ(X-Custom-Header)%", rec)
    assert asked == [b"x-custom-header"]


def test_headers_with_overrides_first():
    get = headers_with({b"a": b"1", b"b": b"2"}.get, {b"b": b"override"})
    assert (get(b"a"), get(b"b"), get(b"c")) == (b"1", b"override", None)
    assert headers_with(None, {b"x": b"1"})(b"x") == b"1"


# --- the other operators -----------------------------------------------------------------------

@pytest.mark.parametrize("fmt, out", [
    ("%PROTOCOL%", "HTTP/1.1"),
    ("%RESPONSE_CODE%", "204"),
    ("%RESPONSE_CODE_DETAILS%", "via_upstream"),
    ("%BYTES_RECEIVED%", "154"), ("%BYTES_SENT%", "0"),
    ("%DURATION%", "226"), ("%REQUEST_DURATION%", "3"), ("%RESPONSE_DURATION%", "200"),
    ("%RESPONSE_TX_DURATION%", "26"),
    ("%UPSTREAM_HOST%", "10.0.2.1:80"), ("%UPSTREAM_CLUSTER%", "locations"),
    ("%UPSTREAM_REMOTE_ADDRESS%", "10.0.2.1:80"),
    ("%UPSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%", "10.0.2.1"), ("%UPSTREAM_REMOTE_PORT%", "80"),
    ("%UPSTREAM_LOCAL_ADDRESS%", "10.0.0.5:40000"),
    ("%UPSTREAM_LOCAL_ADDRESS_WITHOUT_PORT%", "10.0.0.5"), ("%UPSTREAM_LOCAL_PORT%", "40000"),
    ("%DOWNSTREAM_REMOTE_ADDRESS%", "10.0.35.28:51234"),
    ("%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%", "10.0.35.28"),
    ("%DOWNSTREAM_REMOTE_PORT%", "51234"),
    ("%DOWNSTREAM_LOCAL_ADDRESS%", "10.0.0.5:8080"),
    ("%DOWNSTREAM_LOCAL_ADDRESS_WITHOUT_PORT%", "10.0.0.5"), ("%DOWNSTREAM_LOCAL_PORT%", "8080"),
    ("%ROUTE_NAME%", "route_0"),
    ("100%%", "100%"), ("%%%PROTOCOL%%%", "%HTTP/1.1%"), ("no operators", "no operators"),
])
def test_operator(fmt, out):
    assert text(fmt) == out


def test_unset_values_are_dashes():
    rec = record(protocol=None, response_code_details=None, request_duration_ms=None,
                 response_duration_ms=None, upstream_host=None, upstream_cluster=None,
                 upstream_local=None, downstream_remote=None, downstream_local=None,
                 route_name=None)
    fmt = ("%PROTOCOL% %RESPONSE_CODE_DETAILS% %REQUEST_DURATION% %RESPONSE_DURATION% "
           "%RESPONSE_TX_DURATION% %UPSTREAM_HOST% %UPSTREAM_CLUSTER% %UPSTREAM_LOCAL_ADDRESS% "
           "%UPSTREAM_REMOTE_PORT% %DOWNSTREAM_REMOTE_ADDRESS% %DOWNSTREAM_REMOTE_PORT% "
           "%DOWNSTREAM_LOCAL_ADDRESS_WITHOUT_PORT% %ROUTE_NAME%")
    assert text(fmt, rec) == " ".join(["-"] * 13)


def test_response_code_zero_means_no_response_and_is_printed():
    assert text("%RESPONSE_CODE% %RESP(:STATUS)%", record(response_code=0)) == "0 -"


def test_ipv6_addresses_are_bracketed_with_a_port():
    rec = record(downstream_remote=("::1", 5555), upstream_host="[2001:db8::1]:8080")
    assert text("%DOWNSTREAM_REMOTE_ADDRESS% %DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT% "
                "%UPSTREAM_REMOTE_ADDRESS_WITHOUT_PORT% %UPSTREAM_REMOTE_PORT%", rec) == \
        "[::1]:5555 ::1 2001:db8::1 8080"


def test_hostname():
    assert text("%HOSTNAME%") == socket.gethostname()


def test_environment_is_read_at_load_time(monkeypatch):
    monkeypatch.setenv("CYVOY_TEST_ZONE", "eu-west-1a")
    f = compile_text("%ENVIRONMENT(CYVOY_TEST_ZONE)% %ENVIRONMENT(CYVOY_TEST_ZONE):2% "
                     "%ENVIRONMENT(CYVOY_TEST_UNSET)%")
    monkeypatch.setenv("CYVOY_TEST_ZONE", "changed")
    assert f(record()) == b"eu-west-1a eu -"


def test_omit_empty_values_prints_nothing_for_unset_values():
    rec = record(upstream_host=None)
    assert text('"%UPSTREAM_HOST%" %REQ(X-MISSING)%|%RESPONSE_CODE%', rec,
                omit_empty_values=True) == '"" |204'


# --- response flags ----------------------------------------------------------------------------

@pytest.mark.parametrize("flag", [short for short, _ in RESPONSE_FLAGS])
def test_each_response_flag_prints_its_letters(flag):
    assert text("%RESPONSE_FLAGS%", record(response_flags=[flag])) == flag


def test_response_flags_none_is_a_dash_and_several_follow_envoys_order():
    assert text("%RESPONSE_FLAGS%", record(response_flags=[])) == "-"
    assert text("%RESPONSE_FLAGS%", record(response_flags=["UF", "UH"])) == "UH,UF"
    assert text("%RESPONSE_FLAGS%", record(response_flags=["DPE", "DC", "UT"])) == "UT,DC,DPE"


def test_response_flags_cover_the_letters_cyvoy_sets():
    letters = {short for short, _ in RESPONSE_FLAGS}
    assert {"UH", "UF", "UO", "NR", "URX", "UT", "UC", "DC", "LR", "RL", "FI", "DI", "UPE",
            "DPE", "SI", "UMSDR", "UR", "LH", "IH", "NC", "DT", "OM", "DF", "DO", "DR"} <= letters


def test_response_flags_long():
    assert text("%RESPONSE_FLAGS_LONG%", record(response_flags=["UF", "UH"])) == \
        "NoHealthyUpstream,UpstreamConnectionFailure"
    assert text("%RESPONSE_FLAGS_LONG%", record()) == "-"


# --- escaping (log injection) ------------------------------------------------------------------

@pytest.mark.parametrize("value, shown", [
    (b"evil\r\n[2016-04-15T20:17:00.310Z] GET /admin 200",
     "evil\\x0d\\x0a[2016-04-15T20:17:00.310Z] GET /admin 200"),
    (b"nul\x00byte", "nul\\x00byte"),
    (b"\x1b[31mred\x1b[0m", "\\x1b[31mred\\x1b[0m"),
    (b"tab\there", "tab\\x09here"),
    (b"del\x7f", "del\\x7f"),
    (b"lone\rcr", "lone\\x0dcr"),
])
def test_control_bytes_in_header_values_are_escaped(value, shown):
    rec = record(request_headers={b"user-agent": value}.get)
    line = compile_text()(rec)
    assert line.count(b"\n") == 1 and line.endswith(b"\n")
    assert b"\r" not in line and b"\x00" not in line and b"\x1b" not in line
    assert DEFAULT_LINE.match(line.decode())["ua"] == shown


def test_everything_a_client_or_upstream_controls_is_escaped():
    bad = b"a\r\nb"
    rec = record(method=bad, path=bad, authority=bad, scheme=bad, protocol=bad,
                 request_headers={b"x": bad}.get, response_headers={b"x": bad}.get,
                 response_trailers={b"x": bad}.get, response_code_details="d\ne",
                 upstream_cluster="c\rl", route_name="r\x00", upstream_host="h\n")
    fmt = ("%REQ(:METHOD)% %REQ(:PATH)% %REQ(:AUTHORITY)% %REQ(:SCHEME)% %PROTOCOL% %REQ(X)% "
           "%RESP(X)% %TRAILER(X)% %RESPONSE_CODE_DETAILS% %UPSTREAM_CLUSTER% %ROUTE_NAME% "
           "%UPSTREAM_HOST%\n")
    line = compile_text(fmt)(rec)
    assert line.count(b"\n") == 1 and b"\r" not in line and b"\x00" not in line
    assert line == (b"a\\x0d\\x0ab " * 8 + b"d\\x0ae c\\x0dl r\\x00 h\\x0a\n")


def test_truncation_happens_before_escaping():
    rec = record(request_headers={b"user-agent": b"ab\ncd"}.get)
    assert text("%REQ(USER-AGENT):3%", rec) == "ab\\x0a"


def test_quotes_and_non_ascii_bytes_are_kept_as_envoy_does():
    rec = record(request_headers={b"user-agent": 'say "hi" \u00e9'.encode()}.get)
    assert compile_text("%REQ(USER-AGENT)%")(rec) == 'say "hi" \u00e9'.encode()


def test_escape_returns_clean_values_unchanged():
    v = b"clean value"
    assert escape(v) is v
    assert escape(b"\x01") == b"\\x01"


def test_control_bytes_in_the_format_itself_are_kept():
    # the format's own text is the operator's choice: a tab-separated format stays tab-separated
    assert text("%RESPONSE_CODE%\t%BYTES_SENT%\n") == "204\t0\n"


# --- refused formats ---------------------------------------------------------------------------

@pytest.mark.parametrize("fmt, words", [
    ("%NOPE%", "unknown command operator %NOPE%"),
    ("%DYNAMIC_METADATA(a:b)%", "not supported by cyvoy (command operator %DYNAMIC_METADATA%"),
    ("%UPSTREAM_TRANSPORT_FAILURE_REASON%", "not supported by cyvoy"),
    ("50%", "invalid command operator at position 2"),
    ("%REQ(USER-AGENT)", "invalid command operator at position 0"),
    ("%req(user-agent)%", "invalid command operator"),
    ("%REQ%", "needs a header name"),
    ("%REQ()%", "needs a header name"),
    ("%REQ(A?B?C)%", "at most one alternative header"),
    ("%REQ(BAD NAME)%", "invalid header name"),
    ("%PROTOCOL(x)%", "does not take a parameter"),
    ("%DURATION:5%", "does not take a length"),
    ("%START_TIME:5%", "does not take a length"),
    ("%ENVIRONMENT%", "needs a variable name"),
])
def test_refused_formats(fmt, words):
    with pytest.raises(FormatError) as info:
        compile_text(fmt)
    assert words in info.value.reason


def test_parse_splits_literals_and_operators():
    parts = parse("a %PROTOCOL% b%%c")
    assert parts[0] == "a " and parts[1].name == "PROTOCOL" and parts[2] == " b%c"


def test_operator_getter():
    [op] = parse("%REQ(X-MISSING?USER-AGENT):3%")
    assert op.getter()(record()) == b"nsq"


# --- JSON --------------------------------------------------------------------------------------

def test_json_values_are_typed():
    out = js({"start": "%START_TIME%", "method": "%REQ(:METHOD)%", "code": "%RESPONSE_CODE%",
              "flags": "%RESPONSE_FLAGS%", "rx": "%BYTES_RECEIVED%", "tx": "%BYTES_SENT%",
              "duration": "%DURATION%", "request_duration": "%REQUEST_DURATION%",
              "response_duration": "%RESPONSE_DURATION%", "port": "%DOWNSTREAM_REMOTE_PORT%",
              "upstream": "%UPSTREAM_HOST%", "protocol": "%PROTOCOL%"})
    assert out == {"start": "2016-04-15T20:17:00.310Z", "method": "POST", "code": 204,
                   "flags": "-", "rx": 154, "tx": 0, "duration": 226, "request_duration": 3,
                   "response_duration": 200, "port": 51234, "upstream": "10.0.2.1:80",
                   "protocol": "HTTP/1.1"}


def test_json_unset_values_are_null_but_response_flags_stay_a_dash():
    rec = record(upstream_host=None, request_duration_ms=None, response_flags=[])
    assert js({"u": "%UPSTREAM_HOST%", "d": "%REQUEST_DURATION%", "h": "%REQ(X-MISSING)%",
               "f": "%RESPONSE_FLAGS%"}, rec) == {"u": None, "d": None, "h": None, "f": "-"}


def test_json_mixed_values_are_strings():
    rec = record(upstream_host=None)
    assert js({"a": "%REQ(:METHOD)% %REQ(:PATH)%", "b": "%DURATION%ms",
               "c": "up=%UPSTREAM_HOST%", "d": "plain"}, rec) == {
        "a": "POST /api/v1/locations", "b": "226ms", "c": "up=-", "d": "plain"}


def test_json_nested_objects_lists_and_literals():
    out = js({"request": {"method": "%REQ(:METHOD)%", "headers": {"ua": "%REQ(USER-AGENT)%"}},
              "list": ["%RESPONSE_CODE%", "x"], "version": 2, "debug": False, "none": None,
              "ratio": 0.5})
    assert out == {"request": {"method": "POST", "headers": {"ua": "nsq2http"}},
                   "list": [204, "x"], "version": 2, "debug": False, "none": None, "ratio": 0.5}


def test_json_keys_keep_the_config_order():
    line = compile_json({"z": "%PROTOCOL%", "a": "%RESPONSE_CODE%", "m": "x"})(record())
    assert line == b'{"z":"HTTP/1.1","a":204,"m":"x"}\n'


def test_json_untyped_legacy_format_gives_strings_and_dashes():
    rec = record(request_duration_ms=None)
    assert js({"code": "%RESPONSE_CODE%", "d": "%REQUEST_DURATION%", "ua": "%REQ(USER-AGENT)%"},
              rec, typed=False) == {"code": "204", "d": "-", "ua": "nsq2http"}


def test_json_omit_empty_values_drops_unset_keys_at_every_level():
    rec = record(upstream_host=None, request_duration_ms=None)
    out = js({"code": "%RESPONSE_CODE%", "up": "%UPSTREAM_HOST%",
              "nested": {"d": "%REQUEST_DURATION%", "m": "%REQ(:METHOD)%"},
              "list": ["%UPSTREAM_HOST%", "%DURATION%"], "mixed": "u=%UPSTREAM_HOST%"},
             rec, omit_empty_values=True)
    assert out == {"code": 204, "nested": {"m": "POST"}, "list": [226], "mixed": "u="}


def test_json_escapes_control_characters_itself():
    evil = "a\r\nb\x00c\x1b"
    rec = record(request_headers={b"user-agent": evil.encode()}.get)
    line = compile_json({"ua": "%REQ(USER-AGENT)%", "m": "x %REQ(USER-AGENT)%"})(rec)
    assert line.count(b"\n") == 1 and b"\r" not in line and b"\x00" not in line
    assert json.loads(line) == {"ua": evil, "m": "x " + evil}


def test_json_non_utf8_bytes_are_shown_escaped():
    rec = record(request_headers={b"user-agent": b"caf\xe9"}.get)
    assert js({"ua": "%REQ(USER-AGENT)%"}, rec) == {"ua": "caf\\xe9"}


def test_json_constants():
    assert js({"h": "%HOSTNAME%", "e": "%ENVIRONMENT(CYVOY_TEST_UNSET_VAR)%"}) == {
        "h": socket.gethostname(), "e": None}


@pytest.mark.parametrize("struct, where, words", [
    ({"a": "%NOPE%"}, "a", "unknown command operator"),
    ({"a": {"b": ["%PROTOCOL%", "%BAD(%"]}}, "a.b[1]", "invalid command operator"),
    ({}, "", "at least one key"),
    ("%PROTOCOL%", "", "mapping"),
])
def test_json_refusals_say_where(struct, where, words):
    with pytest.raises(FormatError) as info:
        compile_json(struct)
    assert info.value.where == where and words in info.value.reason


def test_json_is_orjson_compatible_bytes():
    line = compile_json({"a": "%RESPONSE_CODE%"})(record())
    assert orjson.loads(line) == {"a": 204}


# --- speed (a sanity bound, far above the few microseconds expected) ---------------------------

def test_formatting_is_fast_enough():
    import time
    f, j, rec = compile_text(), compile_json({"c": "%RESPONSE_CODE%", "p": "%REQ(:PATH)%",
                                              "t": "%START_TIME%"}), record()
    t = time.perf_counter()
    for _ in range(2000):
        f(rec)
        j(rec)
    per_record = (time.perf_counter() - t) / 2000
    assert per_record < 100e-6


# --- the default format in C (proxy/_fastpath/accesslog.pyx) ----------------------------------

from hypothesis import given, settings, strategies as st  # noqa: E402

from proxy._fastpath.accesslog import default_line  # noqa: E402

_header_value = st.one_of(st.none(), st.binary(max_size=40))
_flag_sets = st.lists(st.sampled_from([f for f, _ in RESPONSE_FLAGS]), unique=True, max_size=4)


def _both(start, method, path, orig_path, protocol, code, flags, rx, tx, dur, svc, xff, ua, rid,
          authority, upstream):
    """The general formatter's line over a LogRecord, and default_line's over the same values."""
    req = {k: v for k, v in ((b"x-envoy-original-path", orig_path), (b"x-forwarded-for", xff),
                             (b"user-agent", ua), (b"x-request-id", rid)) if v is not None}
    head = method is not None       # None: no request head (a 400 before parsing)
    rec = LogRecord(start_time=start, method=method or b"", path=(path or b"") if head else b"",
                    authority=(authority or b"") if head else b"",
                    protocol=protocol, request_headers=req.get if method is not None else None,
                    response_headers=(lambda n: str(svc).encode() if n == b"x-envoy-upstream-service-time"
                                      else None) if svc is not None else None,
                    response_code=code, response_flags=list(flags), bytes_received=rx, bytes_sent=tx,
                    duration_ms=dur, upstream_host=upstream)
    general = compile_text(None)(rec)
    fast = default_line(start, method, (orig_path or path) if method is not None else None, protocol,
                        code, ",".join(flags), rx, tx, dur, svc,
                        *((xff, ua, rid, authority) if method is not None else (None,) * 4), upstream)
    return general, fast


def test_default_line_matches_the_general_formatter_on_envoys_example():
    general, fast = _both(T0, b"POST", b"/api/v1/locations", None, b"HTTP/2", 204, [], 154, 0, 226,
                          100, b"10.0.35.28", b"nsq2http", b"cc21d9b0-cf5c-432b-8c7e-98aeb7988cd2",
                          b"locations", "tcp://10.0.2.1:80")
    assert fast == general
    assert fast == (b'[2016-04-15T20:17:00.310Z] "POST /api/v1/locations HTTP/2" 204 - 154 0 226 100 '
                    b'"10.0.35.28" "nsq2http" "cc21d9b0-cf5c-432b-8c7e-98aeb7988cd2" "locations" '
                    b'"tcp://10.0.2.1:80"\n')


def test_default_line_escapes_control_bytes_and_orders_flags_as_the_general_formatter():
    general, fast = _both(T0, b"GET", b"/", None, b"HTTP/1.1", 503, ["URX", "UF", "UH"], 0, 0, 5,
                          None, b"a\tb", b"x\x7fy", b"", b"h\x01", None)
    assert fast == general
    assert b"a\\x09b" in fast and b'"x\\x7fy"' in fast and b" UH,UF,URX " in fast


@settings(max_examples=300, deadline=None)
@given(start=st.floats(min_value=0, max_value=4e9, allow_nan=False), method=st.one_of(st.none(), st.binary(max_size=8)),
       path=st.binary(max_size=30), orig=_header_value, protocol=st.sampled_from([b"HTTP/1.1", b"HTTP/1.0", b"HTTP/2"]),
       code=st.integers(0, 599), flags=_flag_sets, rx=st.integers(0, 2**40), tx=st.integers(0, 2**40),
       dur=st.integers(0, 2**40), svc=st.one_of(st.none(), st.integers(-1, 10**6)), xff=_header_value,
       ua=_header_value, rid=_header_value, authority=_header_value,
       upstream=st.one_of(st.none(), st.just(""), st.just("127.0.0.1:80"), st.just("[::1]:8080")))
def test_default_line_equals_the_general_formatter(start, method, path, orig, protocol, code, flags, rx,
                                                   tx, dur, svc, xff, ua, rid, authority, upstream):
    general, fast = _both(start, method, path, orig, protocol, code, flags, rx, tx, dur, svc, xff, ua,
                          rid, authority, upstream)
    assert fast == general
