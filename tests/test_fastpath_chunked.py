"""proxy._fastpath.http1: the chunked transfer coding (RFC 9112 7.1), as a specification.

ChunkedDecoder decodes a chunked body fed in arbitrary pieces; encode_chunk / last_chunk write one.
"""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy._fastpath.http1 import ChunkedDecoder, HttpError, encode_chunk, last_chunk


def decode(body: bytes, **kw) -> tuple[bytes, ChunkedDecoder]:
    d = ChunkedDecoder(**kw)
    out = d.feed(body)
    return out, d


def refused(body: bytes, **kw) -> str:
    with pytest.raises(HttpError) as ei:
        decode(body, **kw)
    assert ei.value.status == 400
    return ei.value.reason


def refused_in_pieces(body: bytes, **kw) -> None:
    """Also refused when fed one byte at a time."""
    d = ChunkedDecoder(**kw)
    with pytest.raises(HttpError):
        for k in range(len(body)):
            d.feed(body[k:k + 1])


# ---- decoding -------------------------------------------------------------------------------

def test_a_body_decodes_to_its_payload():
    body = b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
    out, d = decode(body)
    assert out == b"hello world"
    assert (d.done, d.consumed, d.trailers) == (True, len(body), b"")


def test_bytes_after_the_body_are_not_consumed():
    body = b"3\r\nabc\r\n0\r\n\r\n"
    out, d = decode(body + b"GET / HTTP/1.1\r\n")
    assert out == b"abc"
    assert d.consumed == len(body)


def test_feed_starts_at_offset():
    d = ChunkedDecoder()
    assert d.feed(b"HEAD3\r\nabc\r\n0\r\n\r\n", 4) == b"abc"
    assert d.consumed == 13


def test_feed_accepts_bytearray_and_memoryview():
    body = b"3\r\nabc\r\n0\r\n\r\n"
    assert ChunkedDecoder().feed(bytearray(body)) == b"abc"
    assert ChunkedDecoder().feed(memoryview(body)) == b"abc"


def test_an_incomplete_body_is_not_done_and_consumes_everything_fed():
    d = ChunkedDecoder()
    assert d.feed(b"5\r\nhel") == b"hel"
    assert (d.done, d.consumed) == (False, 6)
    assert d.feed(b"lo\r\n0\r\n") == b"lo"
    assert not d.done
    assert d.feed(b"\r\nrest") == b""
    assert (d.done, d.consumed) == (True, 2)


def test_feeding_after_done_returns_nothing():
    d = ChunkedDecoder()
    d.feed(b"0\r\n\r\n")
    assert d.feed(b"more") == b""
    assert d.consumed == 0


def test_reset_makes_the_decoder_reusable():
    d = ChunkedDecoder()
    d.feed(b"1\r\na\r\n0\r\nX: 1\r\n\r\n")
    d.reset()
    assert (d.done, d.consumed, d.trailers) == (False, 0, b"")
    assert d.feed(b"1\r\nb\r\n0\r\n\r\n") == b"b"
    assert d.done


@pytest.mark.parametrize("size", [b"a", b"A", b"00a", b"000000000000000A"])
def test_sizes_are_hex_in_either_case_with_leading_zeros(size):
    out, d = decode(size + b"\r\n0123456789\r\n0\r\n\r\n")
    assert out == b"0123456789" and d.done


def test_a_last_chunk_with_leading_zeros_ends_the_body():
    out, d = decode(b"5\r\nhello\r\n000\r\n\r\n")
    assert out == b"hello" and d.done


def test_a_size_of_2_63_minus_1_is_accepted():
    d = ChunkedDecoder()
    assert d.feed(b"7fffffffffffffff\r\nabc") == b"abc"
    assert not d.done


@pytest.mark.parametrize("ext", [b";a", b";a=b", b";a=\"b c\"", b" ;a", b"\t; a = b", b";a;b=c;d",
                                 b";a=\"q\\\"uo\\\\te\"", b";x=\"\x80\xff\"", b";a=b ;c"])
def test_valid_chunk_extensions_are_ignored(ext):
    # chunk-ext = *( BWS ";" BWS chunk-ext-name [ BWS "=" BWS chunk-ext-val ] )
    out, d = decode(b"3" + ext + b"\r\nabc\r\n0" + ext + b"\r\n\r\n")
    assert out == b"abc" and d.done


def test_trailers_are_kept_raw_without_the_final_crlf():
    out, d = decode(b"1\r\na\r\n0\r\nX-Checksum: abc\r\nX-Other:\tv \r\n\r\n")
    assert out == b"a"
    assert d.trailers == b"X-Checksum: abc\r\nX-Other:\tv \r\n"


def test_trailers_split_across_feeds_are_kept():
    body = b"1\r\na\r\n0\r\nX-A: 1\r\nX-B: 2\r\n\r\n"
    d = ChunkedDecoder()
    for k in range(len(body)):
        d.feed(body[k:k + 1])
    assert d.done and d.trailers == b"X-A: 1\r\nX-B: 2\r\n"


def test_a_body_split_at_every_point_decodes_the_same():
    body = b"5;e=\"x;y\"\r\nhello\r\n06\r\n world\r\n0\r\nT: v\r\n\r\nNEXT"
    for cut in range(len(body) + 1):
        d = ChunkedDecoder()
        out = d.feed(body[:cut])
        consumed_before = d.consumed if not d.done else None
        if not d.done:
            out += d.feed(body[cut:])
            total = consumed_before + d.consumed
        else:
            total = d.consumed
        assert (out, d.done, total, d.trailers) == (b"hello world", True, len(body) - 4, b"T: v\r\n"), cut


# ---- refusals -------------------------------------------------------------------------------

@pytest.mark.parametrize("body", [
    b"0x5\r\nhello\r\n0\r\n\r\n",
    b"+5\r\nhello\r\n0\r\n\r\n",
    b"-5\r\nhello\r\n0\r\n\r\n",
    b" 5\r\nhello\r\n0\r\n\r\n",
    b"g\r\nhello\r\n0\r\n\r\n",
    b"\r\nhello\r\n0\r\n\r\n",
    b";x\r\nhello\r\n0\r\n\r\n",
    b"5 5\r\nhello\r\n0\r\n\r\n",
    b"5x\r\nhello\r\n0\r\n\r\n",
])
def test_a_size_that_is_not_hex_digits_is_400(body):
    refused(body)
    refused_in_pieces(body)


def test_a_size_with_more_than_16_hex_digits_is_400():
    refused(b"00000000000000001\r\na\r\n0\r\n\r\n")


@pytest.mark.parametrize("size", [b"8000000000000000", b"ffffffffffffffff"])
def test_a_size_of_2_63_or_more_is_400(size):
    refused(size + b"\r\n")


@pytest.mark.parametrize("body", [b"5\nhello\r\n0\r\n\r\n", b"5\r\nhello\n0\r\n\r\n", b"5\r\nhello\r\n0\n\r\n",
                                  b"5\r\nhello\r\n0\r\n\n", b"5\r\nhello\r\n0\r\nX: 1\n\r\n"])
def test_a_bare_lf_is_400(body):
    refused(body)
    refused_in_pieces(body)


@pytest.mark.parametrize("body", [b"5\rhello\r\n0\r\n\r\n", b"5\r\nhello\rX0\r\n\r\n", b"0\r\n\rX"])
def test_a_bare_cr_is_400(body):
    refused(body)


@pytest.mark.parametrize("body", [b"5\r\nhelloX\r\n0\r\n\r\n", b"5\r\nhello0\r\n\r\n",
                                  b"3\r\nfoo\r\n\r\n"])
def test_data_not_followed_by_crlf_or_a_missing_last_chunk_is_400(body):
    refused(body)


@pytest.mark.parametrize("ext", [b";", b"; ", b";=x", b";a=", b";a=\"x", b";a=\"x\"y", b";a b",
                                 b" ", b"\t", b";a ", b";a=b ", b";a=\"x\" ", b";a=\"\x01\"", b";a=\"\\\x01\"",
                                 b";a@b", b";a=b@c", b"; a=b=c", b";a,b"])
def test_a_malformed_chunk_extension_is_400(ext):
    # only BWS may surround ";" and "="; trailing whitespace before CRLF is not allowed
    refused(b"3" + ext + b"\r\nabc\r\n0\r\n\r\n")


def test_a_chunk_extension_longer_than_the_limit_is_400():
    ext = b";a=" + b"b" * 100
    assert decode(b"3" + ext + b"\r\nabc\r\n0\r\n\r\n", max_chunk_ext=len(ext))[1].done
    refused(b"3" + ext + b"\r\nabc\r\n0\r\n\r\n", max_chunk_ext=len(ext) - 1)


def test_an_endless_chunk_extension_is_400_before_its_end():
    d = ChunkedDecoder(max_chunk_ext=1024)
    with pytest.raises(HttpError):
        for _ in range(100):
            d.feed(b";a=" + b"b" * 30)


def test_trailers_larger_than_the_limit_are_400():
    trailer = b"X-A: " + b"v" * 95 + b"\r\n"
    assert decode(b"0\r\n" + trailer + b"\r\n", max_trailer_bytes=len(trailer))[1].done
    refused(b"0\r\n" + trailer + b"\r\n", max_trailer_bytes=len(trailer) - 1)


@pytest.mark.parametrize("line", [b" X: 1", b"\tX: 1", b"X : 1", b"X", b": v", b"X@: 1", b"X: a\x00b",
                                  b"X: a\x7fb", b"X: a\rb"])
def test_an_invalid_trailer_line_is_400(line):
    refused(b"0\r\n" + line + b"\r\n\r\n")


# ---- encoding -------------------------------------------------------------------------------

@pytest.mark.parametrize("payload,expected", [
    (b"a", b"1\r\na\r\n"),
    (b"x" * 15, b"f\r\n" + b"x" * 15 + b"\r\n"),
    (b"x" * 16, b"10\r\n" + b"x" * 16 + b"\r\n"),
    (b"x" * 4096, b"1000\r\n" + b"x" * 4096 + b"\r\n"),
])
def test_encode_chunk_writes_hex_size_payload_and_crlf(payload, expected):
    assert encode_chunk(payload) == expected


def test_encode_chunk_of_nothing_is_empty_not_a_last_chunk():
    assert encode_chunk(b"") == b""
    assert encode_chunk(bytearray()) == b""


def test_encode_chunk_accepts_bytearray_and_memoryview():
    assert encode_chunk(bytearray(b"ab")) == encode_chunk(memoryview(b"xaby")[1:3]) == b"2\r\nab\r\n"


def test_last_chunk_with_and_without_trailers():
    assert last_chunk() == b"0\r\n\r\n"
    assert last_chunk(b"X-A: 1\r\n") == b"0\r\nX-A: 1\r\n\r\n"


# ---- properties -----------------------------------------------------------------------------

TOKEN = "abcxyzABC0189!#$%&'*+-.^_`|~"
exts = st.lists(
    st.tuples(
        st.sampled_from([b"", b" ", b"\t "]),
        st.text(TOKEN, min_size=1, max_size=6).map(str.encode),
        st.one_of(
            st.none(),
            st.text(TOKEN, min_size=1, max_size=6).map(str.encode),
            st.text("ab ;=,\t", max_size=6).map(lambda s: b'"' + s.encode() + b'"'),
        ),
    ),
    max_size=3,
).map(lambda items: b"".join(bws + b";" + name + (b"" if val is None else b"=" + val)
                             for bws, name, val in items))


@st.composite
def chunked_bodies(draw):
    payload = draw(st.binary(max_size=3000))
    sizes = []
    rest = len(payload)
    while rest:
        n = draw(st.integers(1, rest))
        sizes.append(n)
        rest -= n
    out, pos = b"", 0
    for n in sizes:
        zeros = b"0" * draw(st.integers(0, 2))
        case = draw(st.sampled_from([str.lower, str.upper]))
        out += zeros + case("%x" % n).encode() + draw(exts) + b"\r\n" + payload[pos:pos + n] + b"\r\n"
        pos += n
    out += b"0" + draw(exts) + b"\r\n"
    trailers = draw(st.lists(st.sampled_from([b"X-A: 1\r\n", b"Checksum: \tabc \r\n", b"E:\r\n"]), max_size=2))
    out += b"".join(trailers) + b"\r\n"
    return payload, out, b"".join(trailers)


@settings(max_examples=200, deadline=None)
@given(chunked_bodies(), st.binary(max_size=20), st.data())
def test_random_chunked_bodies_fed_in_random_pieces_decode_to_their_payload(body, after, data):
    payload, encoded, trailers = body
    stream = encoded + after
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=8)))
    d = ChunkedDecoder()
    out, pos, used = b"", 0, 0
    for end in cuts + [len(stream)]:
        if d.done:
            break
        out += d.feed(stream[pos:end])
        used += d.consumed
        pos = end
    assert d.done
    assert out == payload
    assert used == len(encoded)
    assert d.trailers == trailers


@settings(max_examples=100, deadline=None)
@given(st.lists(st.binary(max_size=500), max_size=10))
def test_encoded_chunks_decode_to_their_concatenation(pieces):
    stream = b"".join(encode_chunk(p) for p in pieces) + last_chunk()
    out, d = decode(stream)
    assert d.done and out == b"".join(pieces) and d.consumed == len(stream)
