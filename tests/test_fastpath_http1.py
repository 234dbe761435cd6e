"""proxy._fastpath.http1: the HTTP/1.1 head parser and serializer, as a specification.

Each test states one behaviour. Section numbers refer to RFC 9112 (HTTP/1.1) unless RFC 9110 is
named. The chunked decoder is specified in test_fastpath_chunked.py, the hostile corpora in
test_fastpath_http1_corpus.py.
"""
from __future__ import annotations

import string

import httptools
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from proxy._fastpath.http1 import (
    HttpError,
    RequestHead,
    ResponseHead,
    build_request_head,
    build_response_head,
    parse_request,
    parse_response,
)

MAX = 65536


def req(raw: bytes, *, strip_envoy: bool = True, max_head: int = MAX, offset: int = 0):
    return parse_request(raw, offset, max_head, strip_envoy)


def resp(raw: bytes, *, max_head: int = MAX):
    return parse_response(raw, 0, max_head)


def refused(raw: bytes, status: int = 400, **kw) -> str:
    """Asserts that the request head is refused with `status`; returns the reason."""
    with pytest.raises(HttpError) as ei:
        req(raw, **kw)
    assert ei.value.status == status, ei.value.reason
    return ei.value.reason


def refused_response(raw: bytes, **kw) -> str:
    with pytest.raises(HttpError) as ei:
        resp(raw, **kw)
    assert ei.value.status == 502
    return ei.value.reason


def with_headers(*lines: bytes, start: bytes = b"GET / HTTP/1.1", host: bool = True) -> bytes:
    head = start + b"\r\n" + (b"Host: example.com\r\n" if host else b"")
    return head + b"".join(line + b"\r\n" for line in lines) + b"\r\n"


# ---- a plain request ------------------------------------------------------------------------

def test_simple_get_is_parsed_into_its_fields():
    raw = b"GET /index.html?q=1 HTTP/1.1\r\nHost: example.com\r\nAccept: */*\r\n\r\n"
    h = req(raw)
    assert isinstance(h, RequestHead)
    assert (h.method, h.target, h.path, h.host, h.version) == (
        b"GET", b"/index.html?q=1", b"/index.html?q=1", b"example.com", 11)
    assert (h.content_length, h.chunked, h.keep_alive, h.expect_continue) == (-1, False, True, False)
    assert (h.upgrade, h.xff, h.xfp, h.request_id) == (None, None, None, None)
    assert h.headers == b"Accept: */*\r\n"
    assert h.head_len == len(raw)


def test_fields_are_read_only():
    h = req(with_headers())
    with pytest.raises(AttributeError):
        h.path = b"/other"


def test_error_carries_status_and_reason():
    e = HttpError(400, "why")
    assert (e.status, e.reason, e.args) == (400, "why", (400, "why"))
    assert isinstance(e, Exception)


def test_head_len_stops_at_the_end_of_the_head():
    raw = with_headers(b"Content-Length: 5", start=b"POST / HTTP/1.1") + b"helloGET"
    h = req(raw)
    assert raw[h.head_len:] == b"helloGET"
    assert h.content_length == 5


def test_parsing_starts_at_offset():
    raw = b"garbage" + with_headers(b"A: 1")
    h = req(raw, offset=7)
    assert h.head_len == len(raw) - 7
    assert h.headers == b"A: 1\r\n"


def test_offset_outside_the_buffer_is_a_value_error():
    with pytest.raises(ValueError):
        req(b"GET / HTTP/1.1\r\n", offset=100)


def test_pipelined_requests_are_parsed_one_after_the_other():
    one = with_headers(b"A: 1", start=b"GET /1 HTTP/1.1")
    two = with_headers(b"A: 2", start=b"GET /2 HTTP/1.1")
    buf = one + two
    h1 = req(buf)
    h2 = req(buf, offset=h1.head_len)
    assert (h1.path, h2.path) == (b"/1", b"/2")
    assert h1.head_len + h2.head_len == len(buf)


@pytest.mark.parametrize("kind", [bytes, bytearray, memoryview])
def test_bytes_bytearray_and_memoryview_give_the_same_result(kind):
    raw = with_headers(b"X-A: 1", b"Cookie: c=1", start=b"POST /p HTTP/1.1") + b"body"
    h = req(kind(raw))
    assert (h.path, h.headers, h.head_len, h.get(b"cookie")) == (b"/p", b"X-A: 1\r\nCookie: c=1\r\n",
                                                                len(raw) - 4, b"c=1")


def test_get_still_works_after_the_bytearray_buffer_is_reused():
    buf = bytearray(with_headers(b"X-A: 1"))
    h = req(buf)
    buf[:] = b"x" * len(buf)
    assert h.get(b"x-a") == b"1"
    assert h.get(b"host") == b"example.com"


def test_leading_empty_lines_are_skipped_and_counted_in_head_len():
    # 2.2: a server SHOULD ignore at least one empty line received before the request-line
    raw = b"\r\n\r\n\r\n" + with_headers()
    h = req(raw)
    assert h.head_len == len(raw)
    assert h.method == b"GET"


def test_a_leading_bare_lf_is_refused():
    refused(b"\n" + with_headers())


# ---- the request line (3) -------------------------------------------------------------------

@pytest.mark.parametrize("method", [b"G(T", b"GE\x00T", b"GE\x7fT", b"G\xc3\xa9T", b"GET,"])
def test_a_method_that_is_not_a_token_is_400(method):
    refused(method + b" / HTTP/1.1\r\nHost: a\r\n\r\n")


def test_a_request_line_starting_with_whitespace_is_400():
    refused(b" GET / HTTP/1.1\r\nHost: a\r\n\r\n")


@pytest.mark.parametrize("method", [b"FOO", b"get", b"MKCOLA", b"ANNOUNCE"])
def test_an_unregistered_method_is_501(method):
    # RFC 9110 9.1: a method the server does not implement SHOULD get 501; methods are
    # case-sensitive, so "get" is not GET
    refused(method + b" / HTTP/1.1\r\nHost: a\r\n\r\n", 501)


@pytest.mark.parametrize("method", [b"GET", b"HEAD", b"POST", b"PUT", b"DELETE", b"PATCH", b"TRACE",
                                    b"PROPFIND", b"MKCOL", b"REPORT", b"QUERY", b"PURGE", b"M-SEARCH"])
def test_registered_methods_are_accepted(method):
    assert req(method + b" / HTTP/1.1\r\nHost: a\r\n\r\n").method == method


def test_pri_is_refused_as_an_http2_preface():
    refused(b"PRI * HTTP/1.1\r\nHost: a\r\n\r\nSM\r\n\r\n")


@pytest.mark.parametrize("byte", [b"\x00", b"\x01", b"\t", b"\x7f", b"\x80", b"\xff", b"\x0b"])
def test_a_target_with_ctl_or_non_ascii_is_400(byte):
    refused(b"GET /a" + byte + b"b HTTP/1.1\r\nHost: a\r\n\r\n")


def test_a_space_inside_the_target_is_400():
    refused(b"GET /a b HTTP/1.1\r\nHost: a\r\n\r\n")


def test_an_empty_target_is_400():
    refused(b"GET  HTTP/1.1\r\nHost: a\r\n\r\n")


def test_more_than_one_sp_between_parts_is_400():
    refused(b"GET  / HTTP/1.1\r\nHost: a\r\n\r\n")
    refused(b"GET /  HTTP/1.1\r\nHost: a\r\n\r\n")


def test_whitespace_after_the_version_is_400():
    refused(b"GET / HTTP/1.1 \r\nHost: a\r\n\r\n")


def test_visible_ascii_punctuation_in_the_target_is_accepted():
    target = b"/a\"b|c{d}^`\\[]~!$&'()*+,;=:@%zz?x=1"
    assert req(b"GET " + target + b" HTTP/1.1\r\nHost: a\r\n\r\n").path == target


@pytest.mark.parametrize("target", [b"/a#frag", b"/a?x=1#f", b"http://a.b#@evil/x", b"http://example.#om:8080/a"])
def test_a_fragment_in_the_target_is_400(target):
    # RFC 9112 3.2 has no fragment in a request-target; Envoy's http_reject_path_with_fragment
    refused(b"GET " + target + b" HTTP/1.1\r\nHost: a\r\n\r\n")


@pytest.mark.parametrize("version", [b"HTTP/2.0", b"HTTP/1.2", b"HTTP/0.9", b"HTTP/3.0", b"HTTP/1.9"])
def test_an_unsupported_version_is_505(version):
    refused(b"GET / " + version + b"\r\nHost: a\r\n\r\n", 505)


@pytest.mark.parametrize("version", [b"http/1.1", b"HTTP/1", b"HTTP/11", b"HTTP/1.x", b"ICE/1.0",
                                     b"RTSP/1.0", b"HTTP/1.1x", b"HTTP/a.1"])
def test_a_malformed_version_is_400(version):
    refused(b"GET / " + version + b"\r\nHost: a\r\n\r\n")


def test_a_request_line_without_version_is_400():
    # HTTP/0.9 ("GET /") is not supported (2.3)
    refused(b"GET /\r\nHost: a\r\n\r\n")


def test_http10_is_accepted():
    h = req(b"GET / HTTP/1.0\r\n\r\n")
    assert (h.version, h.host, h.keep_alive) == (10, b"", False)


# ---- request-target forms (3.2) -------------------------------------------------------------

@pytest.mark.parametrize("target,path,host", [
    (b"http://h.example/p?q=1", b"/p?q=1", b"h.example"),
    (b"HTTPS://h.example:8443", b"/", b"h.example:8443"),
    (b"http://h.example?q", b"/?q", b"h.example"),
    (b"http://[::1]:80/x", b"/x", b"[::1]:80"),
])
def test_absolute_form_gives_path_and_its_authority_wins_over_host(target, path, host):
    # 3.2.2: the authority of an absolute-form target replaces the Host header
    h = req(b"GET " + target + b" HTTP/1.1\r\nHost: other.example\r\n\r\n")
    assert (h.target, h.path, h.host) == (target, path, host)


@pytest.mark.parametrize("target", [b"http://user:pw@h/p", b"http:///p", b"ftp://h/p", b"h/p",
                                    b"http:/h/p", b"http://h,i/p", b"http://h:99999999/p"])
def test_invalid_absolute_form_is_400(target):
    # RFC 9110 4.2.1 (empty host), 4.2.4 (userinfo is an error)
    refused(b"GET " + target + b" HTTP/1.1\r\nHost: h\r\n\r\n")


def test_asterisk_form_is_accepted_for_options():
    h = req(b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n")
    assert (h.target, h.path) == (b"*", b"*")


def test_asterisk_form_is_400_for_other_methods():
    # 3.2.4: asterisk-form is only used for a server-wide OPTIONS request
    refused(b"GET * HTTP/1.1\r\nHost: a\r\n\r\n")


def test_connect_takes_an_authority_form_target_as_path():
    h = req(b"CONNECT db.example:5432 HTTP/1.1\r\nHost: db.example:5432\r\n\r\n")
    assert (h.path, h.target, h.host) == (b"db.example:5432", b"db.example:5432", b"db.example:5432")


@pytest.mark.parametrize("target", [b"/", b"db.example", b"db.example:", b"http://db.example:1/"])
def test_connect_without_host_and_port_is_400(target):
    # 3.2.3: authority-form = uri-host ":" port
    refused(b"CONNECT " + target + b" HTTP/1.1\r\nHost: a\r\n\r\n")


def test_authority_form_for_other_methods_is_400():
    refused(b"GET db.example:5432 HTTP/1.1\r\nHost: a\r\n\r\n")


def test_connect_with_content_is_400():
    # RFC 9110 9.3.6: CONNECT has no content; what follows the head is tunnel data
    refused(b"CONNECT h:443 HTTP/1.1\r\nHost: h:443\r\nContent-Length: 5\r\n\r\n")
    assert req(b"CONNECT h:443 HTTP/1.1\r\nHost: h:443\r\nContent-Length: 0\r\n\r\n") is not None


# ---- Host (3.2) -----------------------------------------------------------------------------

def test_missing_host_on_http11_is_400():
    assert "host" in refused(b"GET / HTTP/1.1\r\nAccept: */*\r\n\r\n")


def test_more_than_one_host_is_400():
    refused(with_headers(b"Host: example.com"))
    refused(with_headers(b"host: other.example"))


def test_an_empty_host_is_accepted():
    # RFC 9110 7.2: a client sends an empty Host when the target URI has no authority
    assert req(b"GET / HTTP/1.1\r\nHost: \r\n\r\n").host == b""


@pytest.mark.parametrize("value", [b"a b", b"a/b", b"a@b", b"a,b", b"[::1", b"h:port", b"h:123456",
                                   b"%zz", b"a\"b"])
def test_an_invalid_host_value_is_400(value):
    refused(b"GET / HTTP/1.1\r\nHost: " + value + b"\r\n\r\n")


@pytest.mark.parametrize("value", [b"example.com", b"example.com:8080", b"[::1]:8080", b"10.0.0.1",
                                   b"xn--bcher-kva.example", b"under_score.example", b"%41.example"])
def test_valid_host_values_are_accepted(value):
    assert req(b"GET / HTTP/1.1\r\nHost: " + value + b"\r\n\r\n").host == value


def test_host_value_is_trimmed_of_ows():
    assert req(b"GET / HTTP/1.1\r\nHost: \t example.com \t\r\n\r\n").host == b"example.com"


# ---- header field syntax (5) ----------------------------------------------------------------

def test_obs_fold_is_400():
    # 5.2: a server MUST reject obs-fold (or replace it; a proxy must not guess)
    refused(with_headers(b"X-A: one", b" two"))
    refused(with_headers(b"X-A: one", b"\ttwo"))


def test_whitespace_before_the_first_header_is_400():
    # 2.2: whitespace between the start-line and the first field MUST be rejected or consumed
    refused(b"GET / HTTP/1.1\r\n Host: a\r\n\r\n")


@pytest.mark.parametrize("line", [b"X-A : 1", b"X-A\t: 1", b"Content-Length : 5"])
def test_whitespace_between_name_and_colon_is_400(line):
    # 5.1: a server MUST reject such a message with 400
    refused(with_headers(line))


def test_an_empty_header_name_is_400():
    refused(with_headers(b": value"))


@pytest.mark.parametrize("name", [b"X@A", b"X(A)", b"X\x00A", b"X\x01A", b"\xc3\xa9", b"X\"A", b"[X]",
                                  b"X/A", b"X=A", b"X{A}"])
def test_a_non_token_header_name_is_400(name):
    refused(with_headers(name + b": v"))


def test_a_header_line_without_colon_is_400():
    refused(with_headers(b"NoColonHere"))


@pytest.mark.parametrize("ctl", [b"\x00", b"\x01", b"\x08", b"\x0b", b"\x0c", b"\x1b", b"\x1f", b"\x7f"])
def test_a_ctl_in_a_header_value_is_400(ctl):
    # RFC 9110 5.5: field values are VCHAR / obs-text / SP / HTAB
    refused(with_headers(b"X-A: a" + ctl + b"b"))
    refused(with_headers(b"X-A: " + ctl))


def test_htab_sp_and_obs_text_in_a_value_are_accepted():
    h = req(with_headers(b"X-A: a\tb c \x80\xff\xc3\xa9 d"))
    assert h.get(b"x-a") == b"a\tb c \x80\xff\xc3\xa9 d"


def test_a_long_value_with_a_ctl_at_any_position_is_400():
    # the value scanner skips 8 bytes at a time: a CTL must be caught at every alignment
    for pos in range(0, 40):
        value = bytearray(b"v" * 40)
        value[pos] = 0x01
        refused(with_headers(b"X-A: " + bytes(value)))


@pytest.mark.parametrize("raw", [
    b"GET / HTTP/1.1\rHost: a\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\rX: b\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\r\n\rX",
    b"GET / HTTP/1.1\r\nHo\rst: a\r\n\r\n",
    b"\rGET / HTTP/1.1\r\nHost: a\r\n\r\n",
])
def test_a_bare_cr_anywhere_is_400(raw):
    # 2.2: a bare CR is invalid
    refused(raw)


@pytest.mark.parametrize("raw", [
    b"GET / HTTP/1.1\nHost: a\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\nX: b\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\n\n",
    b"GET / HTTP/1.1\r\nX-A: a\nb\r\nHost: a\r\n\r\n",
])
def test_a_bare_lf_line_terminator_is_400(raw):
    # 2.2 allows a recipient to accept bare LF; a proxy must not (its upstream may not)
    refused(raw)


def test_header_names_are_case_insensitive():
    h = req(b"GET / HTTP/1.1\r\nhOsT: a\r\nCONTENT-LENGTH: 3\r\n\r\n")
    assert (h.host, h.content_length) == (b"a", 3)


@pytest.mark.parametrize("name", [b"Content_Length: 5", b"transfer_encoding: chunked"])
def test_underscore_variants_of_framing_headers_are_400(name):
    # servers that map "_" to "-" would see a framing header the proxy did not
    refused(with_headers(name))


# ---- Content-Length (6.2, RFC 9110 8.6) -----------------------------------------------------

def test_content_length_is_parsed():
    assert req(with_headers(b"Content-Length: 42", start=b"POST / HTTP/1.1")).content_length == 42


def test_content_length_with_leading_zeros_and_ows_is_accepted():
    h = req(with_headers(b"Content-Length: \t 0042 \t", start=b"POST / HTTP/1.1"))
    assert h.content_length == 42


def test_content_length_up_to_2_63_minus_1_is_accepted():
    assert req(with_headers(b"Content-Length: 9223372036854775807")).content_length == 2**63 - 1


@pytest.mark.parametrize("value", [b"9223372036854775808", b"18446744073709551616",
                                   b"1000000000000000000000"])
def test_content_length_overflow_is_400(value):
    refused(with_headers(b"Content-Length: " + value))


@pytest.mark.parametrize("value", [b"+5", b"-5", b"5 5", b"0x5", b"5.0", b"1e3", b"", b"five", b"5;",
                                   b"\xc2\xb9"])
def test_content_length_that_is_not_only_digits_is_400(value):
    refused(with_headers(b"Content-Length: " + value))


@pytest.mark.parametrize("lines", [
    (b"Content-Length: 5", b"Content-Length: 5"),
    (b"Content-Length: 5, 5",),
    (b"Content-Length: 5,5",),
    (b"Content-Length: 5", b"Content-Length: 6"),
    (b"Content-Length: 5, 6",),
])
def test_repeated_content_length_is_400_even_with_identical_values(lines):
    # RFC 9110 8.6 allows accepting identical repeats as one; refusing them all is simpler and
    # never desynchronizes an upstream that would do otherwise
    refused(with_headers(*lines))


@pytest.mark.parametrize("lines", [
    (b"Content-Length: 5", b"Transfer-Encoding: chunked"),
    (b"Transfer-Encoding: chunked", b"Content-Length: 5"),
    (b"Transfer-Encoding: chunked", b"Content-Length: 0"),
])
def test_content_length_together_with_transfer_encoding_is_400(lines):
    # 6.1, 6.3: the classic smuggling vector; refusing beats choosing one
    assert "together" in refused(with_headers(*lines, start=b"POST / HTTP/1.1"))


# ---- Transfer-Encoding (6.1, 6.3) -----------------------------------------------------------

def test_chunked_transfer_encoding_sets_chunked():
    h = req(with_headers(b"Transfer-Encoding: chunked", start=b"POST / HTTP/1.1"))
    assert (h.chunked, h.content_length) == (True, -1)


@pytest.mark.parametrize("value", [b"Chunked", b"CHUNKED", b" chunked ", b"chunked,", b", chunked"])
def test_chunked_is_case_insensitive_and_empty_list_elements_are_ignored(value):
    assert req(with_headers(b"Transfer-Encoding: " + value)).chunked


@pytest.mark.parametrize("value", [b"gzip", b"identity", b"chunked, gzip", b"pigeons", b"chunkedchunked",
                                   b"xchunked", b"chunk"])
def test_a_final_coding_that_is_not_chunked_is_400(value):
    # 6.3: a request whose final transfer coding is not chunked MUST get 400
    refused(with_headers(b"Transfer-Encoding: " + value))


def test_chunked_followed_by_another_transfer_encoding_line_is_400():
    refused(with_headers(b"Transfer-Encoding: chunked", b"Transfer-Encoding: gzip"))


@pytest.mark.parametrize("lines", [
    (b"Transfer-Encoding: chunked, chunked",),
    (b"Transfer-Encoding: chunked", b"Transfer-Encoding: chunked"),
])
def test_chunked_more_than_once_is_400(lines):
    # 6.1: a sender MUST NOT apply chunked more than once
    refused(with_headers(*lines))


@pytest.mark.parametrize("lines", [
    (b"Transfer-Encoding: gzip, chunked",),
    (b"Transfer-Encoding: gzip", b"Transfer-Encoding: chunked"),
    (b"Transfer-Encoding: deflate, identity, chunked",),
])
def test_other_codings_before_chunked_are_501(lines):
    # 6.1: a coding the server does not understand SHOULD get 501
    refused(with_headers(*lines), 501)


@pytest.mark.parametrize("value", [b"chunked;q=1", b"chunked;custom", b"gzip;level=1, chunked"])
def test_transfer_coding_parameters_are_400(value):
    refused(with_headers(b"Transfer-Encoding: " + value))


@pytest.mark.parametrize("value", [b"", b",", b" , , "])
def test_an_empty_transfer_encoding_is_400(value):
    refused(with_headers(b"Transfer-Encoding: " + value))


@pytest.mark.parametrize("value", [b"chunked\xc2\xa0", b"\"chunked\"", b"chunked/1"])
def test_an_invalid_transfer_encoding_value_is_400(value):
    refused(with_headers(b"Transfer-Encoding: " + value))


def test_transfer_encoding_on_http10_is_400():
    # 6.1: an HTTP/1.0 message with Transfer-Encoding has faulty framing
    refused(b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n")


# ---- what is forwarded (RFC 9110 7.6.1) -----------------------------------------------------

def test_headers_excludes_hop_by_hop_and_proxy_managed_fields():
    raw = with_headers(
        b"Accept: */*",
        b"Content-Length: 3",
        b"Connection: keep-alive",
        b"Keep-Alive: timeout=5",
        b"Proxy-Connection: keep-alive",
        b"TE: trailers",
        b"Upgrade: websocket",
        b"Expect: 100-continue",
        b"X-Forwarded-For: 1.2.3.4",
        b"X-Forwarded-Proto: https",
        b"X-Request-Id: abc",
        b"User-Agent: t",
        start=b"POST / HTTP/1.1")
    assert req(raw).headers == b"Accept: */*\r\nUser-Agent: t\r\n"


def test_headers_excludes_transfer_encoding():
    assert req(with_headers(b"Transfer-Encoding: chunked", b"A: 1")).headers == b"A: 1\r\n"


def test_headers_excludes_every_field_named_in_connection():
    raw = with_headers(b"X-Private: 1", b"Connection: close, X-Private,x-other", b"X-Other: 2",
                       b"X-Kept: 3", b"x-private: 4")
    assert req(raw).headers == b"X-Kept: 3\r\n"


def test_connection_options_may_span_several_lines():
    raw = with_headers(b"Connection: X-A", b"Connection: X-B", b"X-A: 1", b"X-B: 2", b"X-C: 3")
    assert req(raw).headers == b"X-C: 3\r\n"


def test_an_invalid_connection_option_is_400():
    refused(with_headers(b"Connection: close, a b"))
    refused(with_headers(b"Connection: \"close\""))


def test_x_envoy_headers_are_stripped_only_when_asked():
    raw = with_headers(b"x-envoy-retry-on: 5xx", b"X-Envoy-Upstream-Rq-Timeout-Ms: 1", b"X-Envoyish: k")
    assert req(raw, strip_envoy=True).headers == b"X-Envoyish: k\r\n"
    assert req(raw, strip_envoy=False).headers == (
        b"x-envoy-retry-on: 5xx\r\nX-Envoy-Upstream-Rq-Timeout-Ms: 1\r\nX-Envoyish: k\r\n")


def test_headers_keep_original_case_and_order_and_values_are_trimmed():
    raw = with_headers(b"X-B:   two  ", b"x-a:one", b"X-C:\tthree\t", b"X-B: again")
    assert req(raw).headers == b"X-B: two\r\nx-a: one\r\nX-C: three\r\nX-B: again\r\n"


def test_an_empty_value_is_forwarded_as_name_colon():
    assert req(with_headers(b"X-Empty:   ")).headers == b"X-Empty:\r\n"


def test_headers_is_empty_bytes_when_nothing_is_forwarded():
    assert req(with_headers(b"Connection: keep-alive")).headers == b""


# ---- extracted values -----------------------------------------------------------------------

def test_xff_lines_are_joined_with_comma_space():
    raw = with_headers(b"X-Forwarded-For: 1.1.1.1, 2.2.2.2", b"A: b", b"x-forwarded-for:  3.3.3.3 ")
    assert req(raw).xff == b"1.1.1.1, 2.2.2.2, 3.3.3.3"


def test_xfp_and_request_id_are_the_first_value():
    raw = with_headers(b"X-Forwarded-Proto: https", b"X-Request-Id: r1", b"X-Forwarded-Proto: http",
                       b"x-request-id: r2")
    h = req(raw)
    assert (h.xfp, h.request_id) == (b"https", b"r1")


@pytest.mark.parametrize("version,lines,expected", [
    (b"1.1", (), True),
    (b"1.1", (b"Connection: close",), False),
    (b"1.1", (b"Connection: CLOSE",), False),
    (b"1.1", (b"Connection: keep-alive, close",), False),
    (b"1.1", (b"Connection: Upgrade, Close",), False),
    (b"1.1", (b"Connection: te", b"connection: close"),  False),
    (b"1.1", (b"Connection: keep-alive",), True),
    (b"1.1", (b"Connection: closed",), True),
    (b"1.0", (), False),
    (b"1.0", (b"Connection: keep-alive",), True),
    (b"1.0", (b"Connection: Keep-Alive",), True),
    (b"1.0", (b"Connection: keep-alive, close",), False),
    (b"1.0", (b"Keep-Alive: timeout=5",), False),
])
def test_keep_alive_follows_version_and_connection_tokens(version, lines, expected):
    # 9.3: 1.1 persists unless "close"; 1.0 only with "keep-alive"
    raw = with_headers(*lines, start=b"GET / HTTP/" + version)
    assert req(raw).keep_alive is expected


@pytest.mark.parametrize("value,expected", [
    (b"100-continue", True), (b"100-Continue", True), (b"100-CONTINUE", True), (b"  100-continue ", True),
    (b"101-continue", False), (b"100-continue-x", False), (b"something-else", False)])
def test_expect_continue_is_the_100_continue_expectation_in_any_case(value, expected):
    raw = with_headers(b"Expect: " + value, b"Content-Length: 1", start=b"POST / HTTP/1.1")
    assert req(raw).expect_continue is expected


def test_expect_continue_is_ignored_on_http10():
    # RFC 9110 10.1.1: a 100-continue expectation in an HTTP/1.0 request MUST be ignored
    raw = b"POST / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n"
    assert req(raw).expect_continue is False


def test_upgrade_is_set_when_connection_lists_upgrade():
    h = req(with_headers(b"Connection: Upgrade", b"Upgrade: websocket"))
    assert h.upgrade == b"websocket"
    assert h.headers == b""


def test_upgrade_is_none_without_the_upgrade_connection_option():
    # RFC 9110 7.8: a sender of Upgrade MUST also send the "upgrade" connection option
    h = req(with_headers(b"Connection: keep-alive", b"Upgrade: websocket"))
    assert h.upgrade is None
    assert h.get(b"upgrade") == b"websocket"


def test_upgrade_is_ignored_on_http10():
    # RFC 9110 7.8: a server MUST ignore Upgrade in an HTTP/1.0 request
    raw = b"GET / HTTP/1.0\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n"
    assert req(raw).upgrade is None


def test_get_returns_the_first_value_of_any_received_header():
    raw = with_headers(b"X-A: 1", b"Connection: x-a", b"x-a: 2", b"Cookie: a=b; c=d",
                       b"Transfer-Encoding: chunked", b"X-Envoy-Thing:  e  ")
    h = req(raw)
    assert h.get(b"x-a") == b"1"
    assert h.get(b"connection") == b"x-a"
    assert h.get(b"transfer-encoding") == b"chunked"
    assert h.get(b"x-envoy-thing") == b"e"
    assert h.get(b"host") == b"example.com"
    assert h.get(b"cookie") == b"a=b; c=d"
    assert h.get(b"absent") is None


def test_get_all_returns_every_value_in_order():
    h = req(with_headers(b"X-A: 1", b"B: x", b"x-a: 2", b"X-A:"))
    assert h.get_all(b"x-a") == [b"1", b"2", b""]
    assert h.get_all(b"absent") == []


def test_get_matches_names_with_underscores_and_symbols():
    h = req(with_headers(b"My_Header: 1", b"X^A|B: 2"))
    assert (h.get(b"my_header"), h.get(b"x^a|b")) == (b"1", b"2")


# ---- limits ---------------------------------------------------------------------------------

def test_a_request_line_of_16384_bytes_is_accepted():
    line = b"GET /" + b"a" * (16384 - len(b"GET / HTTP/1.1")) + b" HTTP/1.1"
    assert len(line) == 16384
    assert req(line + b"\r\nHost: a\r\n\r\n") is not None


def test_a_request_line_longer_than_16384_bytes_is_414():
    line = b"GET /" + b"a" * (16385 - len(b"GET / HTTP/1.1")) + b" HTTP/1.1"
    assert len(line) == 16385
    refused(line + b"\r\nHost: a\r\n\r\n", 414)


def test_a_long_request_line_is_414_before_it_is_complete():
    refused(b"GET /" + b"a" * 20000, 414)


def test_an_endless_run_of_empty_lines_is_414():
    refused(b"\r\n" * 9000, 414)


def test_a_header_section_of_max_head_bytes_is_accepted():
    raw = with_headers(b"X-Pad: " + b"p" * 100)
    section = len(raw) - len(b"GET / HTTP/1.1\r\n")
    assert req(raw, max_head=section) is not None


def test_a_header_section_larger_than_max_head_bytes_is_431():
    raw = with_headers(b"X-Pad: " + b"p" * 100)
    section = len(raw) - len(b"GET / HTTP/1.1\r\n")
    refused(raw, 431, max_head=section - 1)


def test_a_large_header_section_is_431_before_it_is_complete():
    refused(b"GET / HTTP/1.1\r\nHost: a\r\nX-Pad: " + b"p" * 5000, 431, max_head=4096)


def test_100_header_fields_are_accepted():
    lines = [b"X-%d: v" % k for k in range(99)]
    assert req(with_headers(*lines)) is not None


def test_more_than_100_header_fields_is_431():
    lines = [b"X-%d: v" % k for k in range(100)]
    refused(with_headers(*lines), 431)


# ---- incomplete input -----------------------------------------------------------------------

def test_an_incomplete_head_returns_none():
    assert req(b"") is None
    assert req(b"GET / HTTP/1.1\r\nHost: a\r\n") is None
    assert req(b"GET / HTTP/1.1\r\nHost: a\r\n\r") is None
    assert req(b"\r\n") is None
    assert req(b"\r") is None


@pytest.mark.parametrize("raw,status", [
    (b"GET / HTTP/2", 505),
    (b"GET / HTTQ", 400),
    (b"GET /\x00", 400),
    (b"FOO ", 501),
    (b"GET / HTTP/1.1\r\n X", 400),
    (b"GET / HTTP/1.1\r\nX-A: 1\x00", 400),
    (b"GET / HTTP/1.1\r\nX-A : 1", 400),
    (b"GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n", 400),
    (b"GET / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n", 400),
    (b"GET / HTTP/1.1\r\nX-A: 1\nX", 400),
])
def test_errors_are_raised_before_the_head_is_complete(raw, status):
    refused(raw, status)


def test_every_prefix_of_a_fixed_request_is_incomplete():
    raw = (b"\r\nPOST http://h.example/p?q HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n"
           b"Connection: keep-alive, X-A\r\nX-A: 1\r\nX-Forwarded-For: 1.1.1.1\r\n\r\nhello")
    whole = req(raw)
    for k in range(whole.head_len):
        assert req(raw[:k]) is None, k


# ---- responses (4, 6) -----------------------------------------------------------------------

def test_a_simple_response_is_parsed():
    raw = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello"
    r = resp(raw)
    assert isinstance(r, ResponseHead)
    assert (r.status, r.version, r.reason, r.content_length, r.chunked, r.keep_alive, r.no_body) == (
        200, 11, b"OK", 5, False, True, False)
    assert r.headers == b"Content-Type: text/plain\r\n"
    assert raw[r.head_len:] == b"hello"


@pytest.mark.parametrize("line,reason", [
    (b"HTTP/1.1 404 Not Found", b"Not Found"),
    (b"HTTP/1.1 200 \tweird\x80\xff reason ", b"\tweird\x80\xff reason "),
    (b"HTTP/1.1 200 ", b""),
    (b"HTTP/1.1 200", b""),
])
def test_the_reason_phrase_may_hold_htab_sp_vchar_and_obs_text_or_be_empty(line, reason):
    assert resp(line + b"\r\nContent-Length: 0\r\n\r\n").reason == reason


@pytest.mark.parametrize("line", [b"HTTP/1.1 20 OK", b"HTTP/1.1 2000 OK", b"HTTP/1.1 099 X",
                                  b"HTTP/1.1 600 X", b"HTTP/2 200 OK", b"HTTP/1.2 200 OK",
                                  b"http/1.1 200 OK", b"HTTP/1.1  200 OK", b"HTTP/1.1 200 O\x00K",
                                  b"HTTP/1.1 200 O\rK", b"ICY 200 OK", b"HTTP/1.1 abc OK"])
def test_a_malformed_status_line_is_502(line):
    refused_response(line + b"\r\nContent-Length: 0\r\n\r\n")


def test_leading_empty_lines_before_a_response_are_502():
    refused_response(b"\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")


@pytest.mark.parametrize("lines", [
    (b"Content-Length: 5", b"Transfer-Encoding: chunked"),
    (b"Content-Length: 5", b"Content-Length: 5"),
    (b"Content-Length: -1",),
    (b"Transfer-Encoding: gzip",),
    (b"Transfer-Encoding: gzip, chunked",),
    (b"Transfer-Encoding: chunked, chunked",),
    (b"X-A: 1", b" folded"),
    (b"X-A : 1",),
    (b"X-A: \x01",),
    (b"Content_Length: 3",),
])
def test_invalid_response_headers_are_502(lines):
    refused_response(b"HTTP/1.1 200 OK\r\n" + b"".join(x + b"\r\n" for x in lines) + b"\r\n")


def test_transfer_encoding_on_an_http10_response_is_502():
    refused_response(b"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")


def test_response_headers_exclude_hop_by_hop_framing_and_server():
    raw = (b"HTTP/1.1 200 OK\r\nServer: upstream\r\nConnection: keep-alive, X-Hop\r\nX-Hop: 1\r\n"
           b"Keep-Alive: timeout=5\r\nProxy-Connection: x\r\nTE: trailers\r\nUpgrade: h2c\r\n"
           b"Transfer-Encoding: chunked\r\nTrailer: X-Checksum\r\nX-Forwarded-For: kept\r\nVary: *\r\n\r\n")
    r = resp(raw)
    assert r.headers == b"Trailer: X-Checksum\r\nX-Forwarded-For: kept\r\nVary: *\r\n"
    assert r.chunked
    assert r.get(b"server") == b"upstream"


def test_a_101_response_keeps_its_upgrade_header():
    r = resp(b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
    assert r.headers == b"Upgrade: websocket\r\n"
    assert r.no_body


@pytest.mark.parametrize("status,no_body", [(100, True), (101, True), (103, True), (200, False),
                                            (204, True), (205, False), (304, True), (404, False)])
def test_1xx_204_and_304_have_no_body(status, no_body):
    # 6.3 rule 1
    r = resp(b"HTTP/1.1 %d X\r\nContent-Length: 10\r\n\r\n" % status)
    assert r.no_body is no_body
    assert r.content_length == 10


@pytest.mark.parametrize("raw,keep_alive", [
    (b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", True),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n", False),
    (b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", False),
    (b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\nConnection: keep-alive\r\n\r\n", True),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", True),
    (b"HTTP/1.1 200 OK\r\n\r\n", False),
    (b"HTTP/1.1 204 No Content\r\n\r\n", True),
    (b"HTTP/1.1 304 Not Modified\r\n\r\n", True),
])
def test_response_keep_alive_is_false_on_close_http10_or_a_close_delimited_body(raw, keep_alive):
    # 6.3 rule 8: without framing the body runs until the connection closes
    assert resp(raw).keep_alive is keep_alive


def test_an_incomplete_response_returns_none_at_every_split_point():
    raw = b"HTTP/1.1 200 OK\r\nServer: s\r\nContent-Length: 2\r\nX-A: b\r\n\r\n"
    assert resp(raw).head_len == len(raw)
    for k in range(len(raw)):
        assert resp(raw[:k]) is None, k


def test_response_limits_are_502():
    refused_response(b"HTTP/1.1 200 OK\r\nX-Pad: " + b"p" * 5000, max_head=4096)
    refused_response(b"HTTP/1.1 200 " + b"r" * 20000)
    refused_response(b"HTTP/1.1 200 OK\r\n" + b"".join(b"X-%d: v\r\n" % k for k in range(101)) + b"\r\n")


def test_response_get_and_get_all():
    r = resp(b"HTTP/1.1 200 OK\r\nSet-Cookie: a=1\r\nset-cookie: b=2\r\nContent-Length: 0\r\n\r\n")
    assert r.get(b"set-cookie") == b"a=1"
    assert r.get_all(b"set-cookie") == [b"a=1", b"b=2"]


# ---- serializers ----------------------------------------------------------------------------

@pytest.mark.parametrize("framing,line", [
    (0, b"Content-Length: 0\r\n"),
    (12345, b"Content-Length: 12345\r\n"),
    (2**63 - 1, b"Content-Length: 9223372036854775807\r\n"),
    (-1, b""),
    (-2, b"Transfer-Encoding: chunked\r\n"),
])
def test_build_request_head_layout(framing, line):
    out = build_request_head(b"POST", b"/p?q", b"h.example", b"A: 1\r\n", b"X-Request-Id: r\r\n", framing)
    assert out == (b"POST /p?q HTTP/1.1\r\nHost: h.example\r\nA: 1\r\nX-Request-Id: r\r\n" + line + b"\r\n")


def test_build_request_head_accepts_none_and_empty_blocks():
    assert build_request_head(b"GET", b"/", b"h", b"", None, -1) == b"GET / HTTP/1.1\r\nHost: h\r\n\r\n"


@pytest.mark.parametrize("framing", [-3, -4, -100])
def test_build_request_head_rejects_unknown_framing(framing):
    with pytest.raises(ValueError):
        build_request_head(b"GET", b"/", b"h", b"", b"", framing)


@pytest.mark.parametrize("method,path,host", [
    (b"GET", b"/a\r\nX: y", b"h"), (b"GET", b"/a b", b"h"), (b"GET", b"", b"h"),
    (b"GET", b"/", b"h\r\nX: y"), (b"G T", b"/", b"h")])
def test_build_request_head_refuses_values_that_would_split_lines(method, path, host):
    with pytest.raises(ValueError):
        build_request_head(method, path, host, b"", b"", -1)


@pytest.mark.parametrize("status,framing,keep_alive,expected", [
    (200, 5, True, b"HTTP/1.1 200 OK\r\nA: 1\r\nContent-Length: 5\r\n\r\n"),
    (200, -1, True, b"HTTP/1.1 200 OK\r\nA: 1\r\nContent-Length: 0\r\n\r\n"),
    (200, -2, False, b"HTTP/1.1 200 OK\r\nA: 1\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"),
    (204, -3, True, b"HTTP/1.1 204 No Content\r\nA: 1\r\n\r\n"),
    (404, 0, False, b"HTTP/1.1 404 Not Found\r\nA: 1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"),
    (599, -3, True, b"HTTP/1.1 599 Unknown\r\nA: 1\r\n\r\n"),
])
def test_build_response_head_layout(status, framing, keep_alive, expected):
    # -1 on a response is "no body" spelled Content-Length: 0, because a response without any
    # framing header is delimited by close (6.3 rule 8); -3 writes no framing header at all
    assert build_response_head(status, b"A: 1\r\n", b"", framing, keep_alive) == expected


def test_build_response_head_appends_extra_after_headers():
    out = build_response_head(503, b"A: 1\r\n", b"Server: cyvoy\r\n", 0, True)
    assert out == b"HTTP/1.1 503 Service Unavailable\r\nA: 1\r\nServer: cyvoy\r\nContent-Length: 0\r\n\r\n"


@pytest.mark.parametrize("status", [99, 1000, -1])
def test_build_response_head_rejects_statuses_out_of_range(status):
    with pytest.raises(ValueError):
        build_response_head(status, b"", b"", 0, True)


def test_every_status_line_parses_back():
    for status in range(100, 600):
        r = resp(build_response_head(status, b"", b"", -3, True))
        assert r.status == status


def test_a_forwarded_request_parses_back_to_the_same_fields():
    raw = with_headers(b"Accept: */*", b"Connection: keep-alive, X-A", b"X-A: 1", b"Cookie: c",
                       b"Content-Length: 7", start=b"POST http://up.example/p?q=1 HTTP/1.1")
    h = req(raw)
    out = build_request_head(h.method, h.path, h.host, h.headers, b"", h.content_length)
    again = req(out)
    assert (again.method, again.path, again.host, again.headers, again.content_length) == (
        b"POST", b"/p?q=1", b"up.example", b"Accept: */*\r\nCookie: c\r\n", 7)


# ---- properties -----------------------------------------------------------------------------

TCHAR = "!#$%&'*+-.^_`|~" + string.ascii_letters + string.digits
SPECIAL = {"host", "content-length", "transfer-encoding", "connection", "keep-alive", "proxy-connection",
           "te", "upgrade", "expect", "x-forwarded-for", "x-forwarded-proto", "x-request-id", "server",
           "content_length", "transfer_encoding"}
PATH_CHARS = string.ascii_letters + string.digits + "-._~!$&'()*+,;=:@/%?"

names = st.text(TCHAR, min_size=1, max_size=16).filter(
    lambda n: n.lower() not in SPECIAL and not n.lower().startswith("x-envoy-"))
values = st.text("".join(chr(c) for c in range(0x21, 0x7F)) + " \t", max_size=30).map(str.encode)
methods = st.sampled_from(["GET", "POST", "PUT", "HEAD", "DELETE", "OPTIONS", "PATCH", "TRACE"])
paths = st.text(PATH_CHARS, max_size=40).map(lambda p: ("/" + p).encode())
hosts = st.sampled_from([b"example.com", b"a.b.c:8080", b"[::1]:80", b"10.1.2.3", b""])


@st.composite
def requests(draw):
    method = draw(methods).encode()
    path = draw(paths)
    version = draw(st.sampled_from([b"1.0", b"1.1"]))
    host = draw(hosts) if version == b"1.0" else draw(hosts.filter(bool))
    fields = draw(st.lists(st.tuples(names.map(str.encode), values), max_size=12))
    framing = draw(st.sampled_from(["none", "cl", "chunked"] if version == b"1.1" else ["none", "cl"]))
    conn = draw(st.sampled_from([None, b"close", b"keep-alive", b"Keep-Alive, X-Hop"]))
    xff = draw(st.lists(st.sampled_from([b"1.1.1.1", b"2.2.2.2, 3.3.3.3"]), max_size=2))
    extra = [(b"Host", host)]
    cl = None
    if framing == "cl":
        cl = draw(st.integers(0, 10**12))
        extra.append((b"Content-Length", b"%d" % cl))
    elif framing == "chunked":
        extra.append((b"Transfer-Encoding", b"chunked"))
    if conn is not None:
        extra.append((b"Connection", conn))
    extra += [(b"X-Forwarded-For", v) for v in xff]
    # the special fields go at random positions among the ordinary ones
    order = draw(st.permutations(list(range(len(fields) + len(extra)))))
    all_fields = fields + extra
    lines = [all_fields[i] for i in order]
    head = b"%s %s HTTP/%s\r\n" % (method, path, version)
    head += b"".join(n + b": " + v + b"\r\n" for n, v in lines) + b"\r\n"
    return dict(raw=head, method=method, path=path, version=version, host=host, fields=fields,
                lines=lines, cl=cl, framing=framing, conn=conn, xff=xff)


def _expected_block(r) -> bytes:
    hop = {b"x-hop"} if r["conn"] == b"Keep-Alive, X-Hop" else set()
    out = b""
    for n, v in r["lines"]:
        if n.lower() in {s.encode() for s in SPECIAL} or n.lower() in hop:
            continue
        v = v.strip(b" \t")
        out += n + b":" + (b" " + v if v else b"") + b"\r\n"
    return out


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(requests())
def test_generated_requests_round_trip(r):
    h = req(r["raw"])
    assert h.method == r["method"]
    assert h.path == h.target == r["path"]
    assert h.host == r["host"]
    assert h.version == (11 if r["version"] == b"1.1" else 10)
    assert h.content_length == (r["cl"] if r["cl"] is not None else -1)
    assert h.chunked == (r["framing"] == "chunked")
    assert h.headers == _expected_block(r)
    xff = [v for n, v in r["lines"] if n == b"X-Forwarded-For"]
    assert h.xff == (b", ".join(xff) if xff else None)
    assert h.head_len == len(r["raw"])
    for n, _ in r["fields"]:
        same = [fv.strip(b" \t") for fn, fv in r["lines"] if fn.lower() == n.lower()]
        assert h.get(n.lower()) == same[0]
        assert h.get_all(n.lower()) == same


@settings(max_examples=60, deadline=None)
@given(requests())
def test_every_prefix_of_a_generated_request_is_incomplete(r):
    raw = r["raw"]
    whole = req(raw + b"NEXT")
    assert whole.head_len == len(raw)
    for k in range(len(raw)):
        assert req(raw[:k]) is None, k


@settings(max_examples=300, deadline=None)
@given(requests(), st.data())
def test_a_corrupted_request_is_never_accepted_in_part(r, data):
    # For any bytes: a prefix that raises means the whole raises (a valid head never has an
    # invalid prefix), and a prefix that parses parses identically in the whole.
    raw = bytearray(r["raw"])
    for _ in range(data.draw(st.integers(1, 3))):
        pos = data.draw(st.integers(0, len(raw) - 1))
        raw[pos] = data.draw(st.sampled_from([0, 9, 10, 13, 32, 44, 58, 127, 128, 255, ord("A")]))
    raw = bytes(raw)
    try:
        whole = req(raw)
        whole_err = None
    except HttpError as e:
        whole, whole_err = None, e
    for k in range(0, len(raw) + 1, 3):
        try:
            part = req(raw[:k])
        except HttpError:
            assert whole_err is not None, k
            continue
        if part is not None:
            assert whole is not None and part.head_len == whole.head_len
            assert (part.method, part.path, part.headers) == (whole.method, whole.path, whole.headers)


class _Collector:
    def __init__(self):
        self.url = None
        self.headers = []
        self.parser = None
        self.keep_alive = None

    def on_headers_complete(self):
        # llhttp resets its flags once the message is complete: ask while it is current
        self.keep_alive = self.parser.should_keep_alive()

    def on_url(self, url):
        self.url = url

    def on_header(self, name, value):
        self.headers.append((name.lower(), value))


@settings(max_examples=300, deadline=None)
@given(requests())
def test_valid_requests_agree_with_httptools(r):
    raw = r["raw"]
    c = _Collector()
    p = c.parser = httptools.HttpRequestParser(c)
    p.feed_data(raw)
    h = req(raw)
    assert h.method == p.get_method()
    assert h.target == c.url
    assert h.version == {"1.1": 11, "1.0": 10}[p.get_http_version()]
    assert h.keep_alive == c.keep_alive
    seen = set()
    for name, value in c.headers:
        if name not in seen:
            assert h.get(name) == value.rstrip(b" \t")
            seen.add(name)
        assert value.rstrip(b" \t") in h.get_all(name)


@pytest.mark.parametrize("name", [b"Transfer---Encoding", b"Transfer___Encoding", b"TransferEncoding",
                                  b"Content--Length", b"content_length_"])
def test_framing_header_look_alikes_are_400(name):
    # a server that folds '-' and '_' would see a framing header the proxy did not
    refused(b"POST / HTTP/1.1\r\nHost: a\r\n" + name + b": chunked\r\n\r\n")
