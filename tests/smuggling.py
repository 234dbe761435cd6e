"""Request-smuggling obfuscations of Transfer-Encoding, Content-Length and chunked framing, generated
here and placed into CL.TE and TE.CL request templates (used by tests/test_smuggling_mutations.py).

The idea comes from request-smuggling research: two parsers that disagree about where a message ends
let a second request hide in the body of the first. The obfuscations are the usual families: case,
whitespace (SP, HTAB, VT, FF) and NUL around or inside the field name and value, underscores, commas
and lists, quoted values, duplicated and combined fields, obs-fold and bare CR / bare LF line
terminators, unknown or extra codings; for chunk sizes: 0x / + / - prefixes, leading zeros, overflow,
bad delimiters; chunk-extension abuse; bare LF / bare CR terminators of size lines, data and the last
chunk; trailer-section abuse.

Templates. Each case is one client transmission for `POST /case/<case id>`; the smuggled request is
`GET /smuggled/<case id>`, hidden so that it stays inside the body under one reading of the framing
(the "one-message reading") and becomes a request of its own under the other:

- CL.TE: a Content-Length covering the whole body, and a Transfer-Encoding; the body is the last
  chunk `0 CRLF CRLF` followed by the smuggled request. Honouring Content-Length keeps one message;
  honouring Transfer-Encoding reveals the smuggled request.
- TE.CL: a Transfer-Encoding, and a Content-Length covering only the first chunk-size line; the
  smuggled request is the data of that chunk. Honouring Transfer-Encoding keeps one message;
  honouring Content-Length reveals it.
- TE (chunk mutations only): TE.CL without its Content-Length, so that the proxy's own chunked
  decoder decides; a parser that misreads the chunk framing (e.g. stops at the "x" of "0x..", or
  ends lines at a bare LF) meets the smuggled request, which is written to sit right after the
  point where such a misreading ends the message.

A header mutation rewrites one framing field (the other one stays clean); a chunk mutation rewrites
the chunked body (its headers stay clean). A "benign" header mutation turns the field into a
different field name (X-Transfer-Encoding, Content-Lengths, ...): it is not a framing header for
anyone, so the one-message reading is the other framing header's, and it is placed only into the
template where that reading is the one-message reading (a benign TE variant into CL.TE, a benign CL
variant into TE.CL). Every other mutation is placed into both templates.

Every generated body is checked against a small strict reference implementation of RFC 9112 7.1 in
this module (`ref_decode_chunked`), and every header mutation against an RFC 9112 5 field-line
grammar (`ref_field_names`), by test_smuggling_mutations.test_generator_is_consistent.
"""
from __future__ import annotations

import dataclasses
import re
from typing import Callable

HOST = b"smuggle.test"
DATA_LEN = 0xFA           # length of the chunk data in TE.CL / TE: hex "fa" has letters (case variants)

# ---- reference grammar (RFC 9110 5.6.2, 5.6.4; RFC 9112 5, 7.1) -------------------------------------

_TOKEN = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_QS = rb'"(?:[\t \x21\x23-\x5b\x5d-\x7e\x80-\xff]|\\[\t \x21-\x7e\x80-\xff])*"'
_BWS = rb"[ \t]*"
_EXT = (rb"(?:" + _BWS + rb";" + _BWS + _TOKEN + rb"(?:" + _BWS + rb"=" + _BWS
        + rb"(?:" + _TOKEN + rb"|" + _QS + rb"))?)*")
_SIZE_LINE = re.compile(rb"([0-9A-Fa-f]+)" + _EXT + rb"\r\n")
_FIELD_VALUE = rb"(?:[\x21-\x7e\x80-\xff](?:[ \t\x21-\x7e\x80-\xff]*[\x21-\x7e\x80-\xff])?)?"
_FIELD_LINE = re.compile(rb"(" + _TOKEN + rb"):[ \t]*(" + _FIELD_VALUE + rb")[ \t]*\r\n")


def ref_decode_chunked(body: bytes) -> tuple[bytes, list, int]:
    """Strict RFC 9112 7.1 decoding of `body`: (payload, trailer field lines, bytes consumed).
    Raises ValueError on anything the grammar does not allow."""
    i, out = 0, bytearray()
    while True:
        m = _SIZE_LINE.match(body, i)
        if not m:
            raise ValueError(f"invalid chunk-size line at {i}: {body[i:i + 40]!r}")
        size = int(m.group(1), 16)
        i = m.end()
        if size == 0:
            break
        if i + size + 2 > len(body):
            raise ValueError("chunk data runs past the end")
        out += body[i:i + size]
        i += size
        if body[i:i + 2] != b"\r\n":
            raise ValueError(f"no CRLF after chunk data at {i}")
        i += 2
    trailers = []
    while True:
        if body[i:i + 2] == b"\r\n":
            return bytes(out), trailers, i + 2
        m = _FIELD_LINE.match(body, i)
        if not m:
            raise ValueError(f"invalid trailer field line at {i}: {body[i:i + 40]!r}")
        trailers.append((m.group(1).lower(), m.group(2)))
        i = m.end()


FRAMING = (b"transfer-encoding", b"content-length")


def framing_like(name: bytes) -> bool:
    """A framing field name, or its underscore variant: CGI-style servers map '_' to '-', so to
    them Transfer_Encoding is Transfer-Encoding although RFC 9110 calls it another field."""
    return name.lower().replace(b"_", b"-") in FRAMING


def ref_field_names(lines: bytes) -> list | None:
    """The lower-cased field names of a block of header lines if every line is a valid RFC 9112
    field line (no obs-fold, CRLF terminated), else None."""
    names, i = [], 0
    while i < len(lines):
        m = _FIELD_LINE.match(lines, i)
        if not m:
            return None
        names.append(m.group(1).lower())
        i = m.end()
    return names


# ---- mutations ------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Mutation:
    name: str                 # unique, names the obfuscation (used in test ids)
    family: str
    target: str               # "te" | "cl": a header mutation; "chunk": a chunked-body mutation
    make: Callable            # te: () -> header lines; cl: (n) -> header lines; chunk: (data) -> body
    benign: bool = False      # header mutations: the field became another field name (not framing)
    first: bool = False       # header mutations: placed before Host instead of last
    valid: bool | None = None  # chunk mutations: valid per RFC 9112 7.1, decoding to `data`


MUTATIONS: list[Mutation] = []


def _add(name, family, target, make, **kw):
    MUTATIONS.append(Mutation(name, family, target, make, **kw))


def _te_line(name: bytes = b"Transfer-Encoding", value: bytes = b"chunked") -> bytes:
    return name + b": " + value + b"\r\n"


# Transfer-Encoding: field name ---------------------------------------------------------------------
for _n, _name, _benign in [
    ("lowercase", b"transfer-encoding", False),
    ("uppercase", b"TRANSFER-ENCODING", False),
    ("capital-first-only", b"Transfer-encoding", False),
    ("inverted-case", b"tRANSFER-eNCODING", False),
    ("alternating-case", b"TrAnSfEr-EnCoDiNg", False),
    ("sp-before-colon", b"Transfer-Encoding ", False),
    ("two-sp-before-colon", b"Transfer-Encoding  ", False),
    ("tab-before-colon", b"Transfer-Encoding\t", False),
    ("vt-before-colon", b"Transfer-Encoding\x0b", False),
    ("ff-before-colon", b"Transfer-Encoding\x0c", False),
    ("nul-before-colon", b"Transfer-Encoding\x00", False),
    ("cr-before-colon", b"Transfer-Encoding\r", False),
    ("del-before-colon", b"Transfer-Encoding\x7f", False),
    ("leading-sp", b" Transfer-Encoding", False),
    ("leading-tab", b"\tTransfer-Encoding", False),
    ("leading-vt", b"\x0bTransfer-Encoding", False),
    ("leading-ff", b"\x0cTransfer-Encoding", False),
    ("leading-nul", b"\x00Transfer-Encoding", False),
    ("nul-inside", b"Transfer\x00-Encoding", False),
    ("sp-inside", b"Transfer -Encoding", False),
    ("underscore", b"Transfer_Encoding", False),
    ("underscore-lowercase", b"transfer_encoding", False),
    ("obs-text-e-acute", b"Transfer-\xc3\x89ncoding", False),
    ("obs-text-suffix", b"Transfer-Encoding\xff", False),
    ("quoted-name", b'"Transfer-Encoding"', False),
    ("x-prefix", b"X-Transfer-Encoding", True),
    ("plural", b"Transfer-Encodings", True),
    ("truncated", b"Transfer-Encodin", True),
    ("no-hyphen", b"TransferEncoding", True),
    ("dot-for-hyphen", b"Transfer.Encoding", True),
    ("double-hyphen", b"Transfer--Encoding", True),
    ("content-transfer-encoding", b"Content-Transfer-Encoding", True),
]:
    _add(f"te-name-{_n}", "te-name", "te", (lambda name=_name: _te_line(name)), benign=_benign)

# Transfer-Encoding: field value --------------------------------------------------------------------
for _n, _value in [
    ("uppercase", b"CHUNKED"),
    ("capitalized", b"Chunked"),
    ("mixed-case", b"cHuNkEd"),
    ("leading-sp", b"  chunked"),
    ("trailing-sp", b"chunked  "),
    ("leading-tab", b"\tchunked"),
    ("trailing-tab", b"chunked\t"),
    ("leading-vt", b"\x0bchunked"),
    ("trailing-vt", b"chunked\x0b"),
    ("leading-ff", b"\x0cchunked"),
    ("trailing-ff", b"chunked\x0c"),
    ("leading-nul", b"\x00chunked"),
    ("trailing-nul", b"chunked\x00"),
    ("nul-inside", b"chun\x00ked"),
    ("trailing-cr", b"chunked\r"),
    ("sp-inside", b"chun ked"),
    ("double-quoted", b'"chunked"'),
    ("single-quoted", b"'chunked'"),
    ("trailing-comma", b"chunked,"),
    ("leading-comma", b",chunked"),
    ("comma-sp-around", b" , chunked , "),
    ("chunked-twice", b"chunked, chunked"),
    ("chunked-twice-no-sp", b"chunked,chunked"),
    ("chunked-then-identity", b"chunked, identity"),
    ("identity-then-chunked", b"identity, chunked"),
    ("gzip-then-chunked", b"gzip, chunked"),
    ("unknown-then-chunked", b"x, chunked"),
    ("chunked-then-unknown", b"chunked, x"),
    ("sp-separated-list", b"chunked chunked"),
    ("semicolon-param", b"chunked;q=1"),
    ("semicolon-empty-param", b"chunked;"),
    ("identity", b"identity"),
    ("unknown-coding", b"xchunked"),
    ("prefix-of-chunked", b"chunk"),
    ("chunked-suffix", b"chunkedx"),
    ("chunked-digit-suffix", b"chunked1"),
    ("empty", b""),
    ("colon-prefix", b":chunked"),
    ("nbsp-suffix", b"chunked\xc2\xa0"),
    ("nbsp-prefix", b"\xc2\xa0chunked"),
    ("kelvin-sign-k", b"chun\xe2\x84\xaaed"),
    ("obs-text-suffix", b"chunked\x85"),
    ("equals-value", b"chunked=1"),
]:
    _add(f"te-value-{_n}", "te-value", "te", (lambda value=_value: _te_line(value=value)))

# Transfer-Encoding: whole lines (line terminators, obs-fold, colons, neighbours) -------------------
for _n, _lines in [
    ("no-ows", b"Transfer-Encoding:chunked\r\n"),
    ("double-colon", b"Transfer-Encoding:: chunked\r\n"),
    ("obs-fold-sp", b"Transfer-Encoding:\r\n chunked\r\n"),
    ("obs-fold-tab", b"Transfer-Encoding:\r\n\tchunked\r\n"),
    ("obs-fold-after-identity", b"Transfer-Encoding: identity\r\n chunked\r\n"),
    ("folded-into-previous-field", b"X-Pad: a\r\n Transfer-Encoding: chunked\r\n"),
    ("bare-lf-ends-line", b"Transfer-Encoding: chunked\nX-Pad: a\r\n"),
    ("bare-lf-before-line", b"X-Pad: a\nTransfer-Encoding: chunked\r\n"),
    ("bare-lf-around-line", b"X-Pad: a\nTransfer-Encoding: chunked\nX-Pad2: b\r\n"),
    ("bare-cr-before-line", b"X-Pad: a\rTransfer-Encoding: chunked\r\n"),
    ("lf-cr", b"Transfer-Encoding: chunked\n\r"),
    ("value-hidden-after-lf", b"X-Pad: a\n\rTransfer-Encoding: chunked\r\n"),
]:
    _add(f"te-line-{_n}", "te-line", "te", (lambda lines=_lines: lines))

# Transfer-Encoding: duplicated and combined fields ------------------------------------------------
for _n, _lines in [
    ("chunked-chunked", _te_line() + _te_line()),
    ("identity-chunked", _te_line(value=b"identity") + _te_line()),
    ("chunked-identity", _te_line() + _te_line(value=b"identity")),
    ("empty-chunked", _te_line(value=b"") + _te_line()),
    ("chunked-empty", _te_line() + _te_line(value=b"")),
    ("unknown-chunked", _te_line(value=b"x") + _te_line()),
    ("chunked-unknown", _te_line() + _te_line(value=b"x")),
    ("case-variant-names", _te_line(b"transfer-encoding") + _te_line(b"TRANSFER-ENCODING", b"identity")),
    ("second-sp-before-colon", _te_line() + _te_line(b"Transfer-Encoding ", b"identity")),
    ("identity-then-underscore-chunked", _te_line(value=b"identity") + _te_line(b"Transfer_Encoding")),
    ("chunked-then-underscore-identity", _te_line() + _te_line(b"Transfer_Encoding", b"identity")),
    ("benign-lookalike-identity", _te_line() + _te_line(b"X-Transfer-Encoding", b"identity")),
]:
    _add(f"te-dup-{_n}", "te-dup", "te", (lambda lines=_lines: lines))

# Transfer-Encoding: position ----------------------------------------------------------------------
_add("te-pos-before-host", "te-position", "te", lambda: _te_line(), first=True)
_add("te-pos-before-host-uppercase", "te-position", "te", lambda: _te_line(b"TRANSFER-ENCODING"), first=True)


def _cl_line(n_text: bytes, name: bytes = b"Content-Length") -> bytes:
    return name + b": " + n_text + b"\r\n"


def _dec(n: int) -> bytes:
    return b"%d" % n


# Content-Length: field value (the value is built from the template's length n) -----------------------
for _n, _fmt in [
    ("leading-zero", lambda n: b"0" + _dec(n)),
    ("many-leading-zeros", lambda n: b"0000000000" + _dec(n)),
    ("plus-sign", lambda n: b"+" + _dec(n)),
    ("minus-sign", lambda n: b"-" + _dec(n)),
    ("leading-sp", lambda n: b"  " + _dec(n)),
    ("trailing-sp", lambda n: _dec(n) + b"  "),
    ("leading-tab", lambda n: b"\t" + _dec(n)),
    ("trailing-tab", lambda n: _dec(n) + b"\t"),
    ("leading-vt", lambda n: b"\x0b" + _dec(n)),
    ("trailing-vt", lambda n: _dec(n) + b"\x0b"),
    ("leading-ff", lambda n: b"\x0c" + _dec(n)),
    ("trailing-ff", lambda n: _dec(n) + b"\x0c"),
    ("leading-nul", lambda n: b"\x00" + _dec(n)),
    ("trailing-nul", lambda n: _dec(n) + b"\x00"),
    ("trailing-cr", lambda n: _dec(n) + b"\r"),
    ("list-same", lambda n: _dec(n) + b"," + _dec(n)),
    ("list-same-sp", lambda n: _dec(n) + b", " + _dec(n)),
    ("list-different", lambda n: _dec(n) + b", 0"),
    ("trailing-comma", lambda n: _dec(n) + b","),
    ("leading-comma", lambda n: b"," + _dec(n)),
    ("sp-separated", lambda n: _dec(n) + b" " + _dec(n)),
    ("sp-inside-number", lambda n: _dec(n)[:1] + b" " + _dec(n)[1:]),
    ("underscore-inside-number", lambda n: _dec(n)[:1] + b"_" + _dec(n)[1:]),
    ("double-quoted", lambda n: b'"' + _dec(n) + b'"'),
    ("single-quoted", lambda n: b"'" + _dec(n) + b"'"),
    ("decimal-point", lambda n: _dec(n) + b".0"),
    ("exponent", lambda n: _dec(n) + b"e0"),
    ("hex-0x", lambda n: b"0x%x" % n),
    ("semicolon-param", lambda n: _dec(n) + b";q=1"),
    ("empty", lambda n: b""),
    ("letters-suffix", lambda n: _dec(n) + b"abc"),
    ("overflow-wraps-to-n-64bit", lambda n: _dec(2 ** 64 + n)),
    ("overflow-20-digits", lambda n: b"99999999999999999999"),
    ("nbsp-suffix", lambda n: _dec(n) + b"\xc2\xa0"),
    ("fullwidth-digits", lambda n: _dec(n).decode().translate({c: c + 0xFEE0 for c in range(0x30, 0x3A)}).encode()),
]:
    _add(f"cl-value-{_n}", "cl-value", "cl", (lambda n, fmt=_fmt: _cl_line(fmt(n))))

# Content-Length: field name ------------------------------------------------------------------------
for _n, _name, _benign in [
    ("lowercase", b"content-length", False),
    ("uppercase", b"CONTENT-LENGTH", False),
    ("capital-first-only", b"Content-length", False),
    ("sp-before-colon", b"Content-Length ", False),
    ("tab-before-colon", b"Content-Length\t", False),
    ("vt-before-colon", b"Content-Length\x0b", False),
    ("nul-before-colon", b"Content-Length\x00", False),
    ("leading-sp", b" Content-Length", False),
    ("leading-nul", b"\x00Content-Length", False),
    ("nul-inside", b"Content\x00-Length", False),
    ("sp-inside", b"Content Length", False),
    ("underscore", b"Content_Length", False),
    ("obs-text-suffix", b"Content-Length\xff", False),
    ("x-prefix", b"X-Content-Length", True),
    ("plural", b"Content-Lengths", True),
    ("truncated", b"Content-Lengt", True),
    ("no-hyphen", b"ContentLength", True),
    ("dot-for-hyphen", b"Content.Length", True),
]:
    _add(f"cl-name-{_n}", "cl-name", "cl", (lambda n, name=_name: _cl_line(_dec(n), name)), benign=_benign)

# Content-Length: whole lines, duplicates -----------------------------------------------------------
for _n, _fmt in [
    ("line-no-ows", lambda n: b"Content-Length:" + _dec(n) + b"\r\n"),
    ("line-obs-fold", lambda n: b"Content-Length:\r\n " + _dec(n) + b"\r\n"),
    ("line-bare-lf-ends", lambda n: b"Content-Length: " + _dec(n) + b"\nX-Pad: a\r\n"),
    ("line-bare-lf-before", lambda n: b"X-Pad: a\nContent-Length: " + _dec(n) + b"\r\n"),
    ("line-folded-into-previous-field", lambda n: b"X-Pad: a\r\n Content-Length: " + _dec(n) + b"\r\n"),
    ("dup-same", lambda n: _cl_line(_dec(n)) * 2),
    ("dup-same-case-variant", lambda n: _cl_line(_dec(n)) + _cl_line(_dec(n), b"content-length")),
    ("dup-n-then-0", lambda n: _cl_line(_dec(n)) + _cl_line(b"0")),
    ("dup-0-then-n", lambda n: _cl_line(b"0") + _cl_line(_dec(n))),
    ("dup-n-then-n-plus-1", lambda n: _cl_line(_dec(n)) + _cl_line(_dec(n + 1))),
    ("dup-underscore-0", lambda n: _cl_line(_dec(n)) + _cl_line(b"0", b"Content_Length")),
]:
    _family = "cl-line" if _n.startswith("line") else "cl-dup"
    _add(f"cl-{_n}", _family, "cl", (lambda n, fmt=_fmt: fmt(n)))

_add("cl-pos-before-host", "cl-position", "cl", lambda n: _cl_line(_dec(n)), first=True)


# Chunked body: each builds a body whose strict (RFC) reading is `data` when valid. --------------------
def _chunk_body(size_line: bytes, data: bytes, after_data: bytes = b"\r\n",
                last: bytes = b"0\r\n\r\n") -> bytes:
    return size_line + data + after_data + last


def _size_variant(fmt: Callable[[int], bytes], valid: bool) -> tuple:
    return (lambda data: _chunk_body(fmt(len(data)) + b"\r\n", data)), valid


_CHUNK = [
    # chunk-size
    ("size-uppercase-hex", *_size_variant(lambda s: b"%X" % s, True)),
    ("size-leading-zeros", *_size_variant(lambda s: b"000%x" % s, True)),
    ("size-16-digits", *_size_variant(lambda s: b"%016x" % s, True)),
    ("size-17-digits", *_size_variant(lambda s: b"%017x" % s, True)),
    ("size-0x-prefix", *_size_variant(lambda s: b"0x%x" % s, False)),
    ("size-0X-prefix", *_size_variant(lambda s: b"0X%x" % s, False)),
    ("size-plus-sign", *_size_variant(lambda s: b"+%x" % s, False)),
    ("size-minus-sign", *_size_variant(lambda s: b"-%x" % s, False)),
    ("size-leading-sp", *_size_variant(lambda s: b" %x" % s, False)),
    ("size-leading-tab", *_size_variant(lambda s: b"\t%x" % s, False)),
    ("size-trailing-sp", *_size_variant(lambda s: b"%x " % s, False)),
    ("size-trailing-tab", *_size_variant(lambda s: b"%x\t" % s, False)),
    ("size-trailing-vt", *_size_variant(lambda s: b"%x\x0b" % s, False)),
    ("size-trailing-ff", *_size_variant(lambda s: b"%x\x0c" % s, False)),
    ("size-trailing-nul", *_size_variant(lambda s: b"%x\x00" % s, False)),
    ("size-leading-nul", *_size_variant(lambda s: b"\x00%x" % s, False)),
    ("size-underscore", *_size_variant(lambda s: (b"%x" % s)[:1] + b"_" + (b"%x" % s)[1:], False)),
    ("size-non-hex-suffix", *_size_variant(lambda s: b"%xg" % s, False)),
    ("size-overflow-wraps-64bit", *_size_variant(lambda s: b"1%016x" % s, False)),
    ("size-overflow-all-f", *_size_variant(lambda s: b"f" * 16 + b"%x" % s, False)),
    ("size-empty", *_size_variant(lambda s: b"", False)),
    ("size-one-too-small", (lambda d: _chunk_body(b"%x\r\n" % (len(d) - 1), d)), False),
    ("size-two-too-large", (lambda d: _chunk_body(b"%x\r\n" % (len(d) + 2), d)), False),
    # chunk-size line terminator
    ("size-line-bare-lf", (lambda d: _chunk_body(b"%x\n" % len(d), d)), False),
    ("size-line-bare-cr", (lambda d: _chunk_body(b"%x\r" % len(d), d)), False),
    ("size-line-cr-cr-lf", (lambda d: _chunk_body(b"%x\r\r\n" % len(d), d)), False),
    ("size-line-lf-cr", (lambda d: _chunk_body(b"%x\n\r" % len(d), d)), False),
    # chunk extensions
    ("ext-token", (lambda d: _chunk_body(b"%x;a=b\r\n" % len(d), d)), True),
    ("ext-name-only", (lambda d: _chunk_body(b"%x;a\r\n" % len(d), d)), True),
    ("ext-several", (lambda d: _chunk_body(b"%x;a;b=c;d\r\n" % len(d), d)), True),
    ("ext-bws-everywhere", (lambda d: _chunk_body(b"%x \t; a = b \t\r\n" % len(d), d)), False),
    ("ext-bws-before-semicolon", (lambda d: _chunk_body(b"%x ;a=b\r\n" % len(d), d)), True),
    ("ext-quoted", (lambda d: _chunk_body(b'%x;a="b c"\r\n' % len(d), d)), True),
    ("ext-quoted-pair", (lambda d: _chunk_body(b'%x;a="b\\"c"\r\n' % len(d), d)), True),
    ("ext-quoted-obs-text", (lambda d: _chunk_body(b'%x;a="\xff"\r\n' % len(d), d)), True),
    ("ext-empty", (lambda d: _chunk_body(b"%x;\r\n" % len(d), d)), False),
    ("ext-empty-name", (lambda d: _chunk_body(b"%x;=b\r\n" % len(d), d)), False),
    ("ext-empty-value", (lambda d: _chunk_body(b"%x;a=\r\n" % len(d), d)), False),
    ("ext-unterminated-quote", (lambda d: _chunk_body(b'%x;a="b\r\n' % len(d), d)), False),
    ("ext-nul", (lambda d: _chunk_body(b"%x;a=\x00\r\n" % len(d), d)), False),
    ("ext-vt", (lambda d: _chunk_body(b"%x;a\x0b\r\n" % len(d), d)), False),
    ("ext-bare-lf-inside", (lambda d: _chunk_body(b"%x;a\nb\r\n" % len(d), d)), False),
    ("ext-bare-cr-inside", (lambda d: _chunk_body(b"%x;a\rb\r\n" % len(d), d)), False),
    ("ext-bare-lf-in-quoted", (lambda d: _chunk_body(b'%x;a="\n"\r\n' % len(d), d)), False),
    ("ext-token-obs-text", (lambda d: _chunk_body(b"%x;a=\xff\r\n" % len(d), d)), False),
    ("ext-comma", (lambda d: _chunk_body(b"%x,a\r\n" % len(d), d)), False),
    ("ext-very-long", (lambda d: _chunk_body(b"%x;a=" % len(d) + b"b" * 2000 + b"\r\n", d)), True),
    # after the chunk data
    ("data-bare-lf", (lambda d: _chunk_body(b"%x\r\n" % len(d), d, b"\n")), False),
    ("data-bare-cr", (lambda d: _chunk_body(b"%x\r\n" % len(d), d, b"\r")), False),
    ("data-no-crlf", (lambda d: _chunk_body(b"%x\r\n" % len(d), d, b"")), False),
    ("data-sp-crlf", (lambda d: _chunk_body(b"%x\r\n" % len(d), d, b" \r\n")), False),
    ("data-cr-cr-lf", (lambda d: _chunk_body(b"%x\r\n" % len(d), d, b"\r\r\n")), False),
    # the last chunk and the trailer section
    ("last-zeros", (lambda d: _chunk_body(b"%x\r\n" % len(d), d, last=b"000\r\n\r\n")), True),
    ("last-ext", (lambda d: _chunk_body(b"%x\r\n" % len(d), d, last=b"0;a=b\r\n\r\n")), True),
    ("last-0x0", (lambda d: _chunk_body(b"%x\r\n" % len(d), d, last=b"0x0\r\n\r\n")), False),
    ("last-minus-zero", (lambda d: _chunk_body(b"%x\r\n" % len(d), d, last=b"-0\r\n\r\n")), False),
    ("last-trailing-sp", (lambda d: _chunk_body(b"%x\r\n" % len(d), d, last=b"0 \r\n\r\n")), False),
    ("last-bare-lf-lf", (lambda d: _chunk_body(b"%x\r\n" % len(d), d, last=b"0\n\n")), False),
    ("last-crlf-bare-lf", (lambda d: _chunk_body(b"%x\r\n" % len(d), d, last=b"0\r\n\n")), False),
    ("last-bare-lf-crlf", (lambda d: _chunk_body(b"%x\r\n" % len(d), d, last=b"0\n\r\n")), False),
    ("trailer-field", (lambda d: _chunk_body(b"%x\r\n" % len(d), d, last=b"0\r\nX-T: v\r\n\r\n")), True),
    ("trailer-transfer-encoding", (lambda d: _chunk_body(b"%x\r\n" % len(d), d,
                                                         last=b"0\r\nTransfer-Encoding: chunked\r\n\r\n")), True),
    ("trailer-content-length", (lambda d: _chunk_body(b"%x\r\n" % len(d), d,
                                                      last=b"0\r\nContent-Length: 5\r\n\r\n")), True),
    ("trailer-obs-fold", (lambda d: _chunk_body(b"%x\r\n" % len(d), d, last=b"0\r\nX-T: a\r\n b\r\n\r\n")), False),
    ("trailer-bare-lf", (lambda d: _chunk_body(b"%x\r\n" % len(d), d, last=b"0\r\nX-T: a\n\r\n")), False),
    ("trailer-no-colon", (lambda d: _chunk_body(b"%x\r\n" % len(d), d, last=b"0\r\nX-T\r\n\r\n")), False),
    ("trailer-sp-before-colon", (lambda d: _chunk_body(b"%x\r\n" % len(d), d, last=b"0\r\nX-T : a\r\n\r\n")), False),
    ("trailer-nul", (lambda d: _chunk_body(b"%x\r\n" % len(d), d, last=b"0\r\nX-T: a\x00\r\n\r\n")), False),
    # the data split over several chunks
    ("split-three-chunks", (lambda d: b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in (d[:10], d[10:20], d[20:]))
                            + b"0\r\n\r\n"), True),
]
for _n, _make, _valid in _CHUNK:
    _add(f"chunk-{_n}", "chunk-" + _n.split("-")[0], "chunk", _make, valid=_valid)


# ---- templates ------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Case:
    id: str
    template: str             # "CL.TE", "TE.CL", "TE"
    mutation: Mutation
    data: bytes               # the whole client transmission
    head_len: int             # data[:head_len] is the head, data[head_len:] the body
    path: bytes
    smuggled_path: bytes
    expected_body: bytes      # the body under the one-message reading


def smuggled_request(cid: str, pad_to: int = 0) -> tuple[bytes, bytes]:
    path = b"/smuggled/" + cid.encode()
    req = b"GET " + path + b" HTTP/1.1\r\nHost: " + HOST + b"\r\n"
    if pad_to:
        # the CRLF first: a reader that ended the body early (e.g. at the "0" of "0x..") reads it as
        # the end of the trailer section, and the request right after it
        fixed = 2 + len(req) + len(b"X-Pad: \r\n\r\n")
        assert fixed < pad_to, cid
        req = b"\r\n" + req + b"X-Pad: " + b"p" * (pad_to - fixed) + b"\r\n\r\n"
    else:
        req += b"\r\n"
    return path, req


def _head(path: bytes, framing_lines: bytes, first: bytes = b"") -> bytes:
    return (b"POST " + path + b" HTTP/1.1\r\n" + first + b"Host: " + HOST + b"\r\n"
            + framing_lines + b"\r\n")


def _build(template: str, m: Mutation) -> Case:
    cid = f"{template}-{m.name}"
    path = b"/case/" + cid.encode()
    if template == "CL.TE":
        spath, smuggled = smuggled_request(cid)
        body = b"0\r\n\r\n" + smuggled
        expected = body
        n = len(body)
        te = m.make() if m.target == "te" else _te_line()
        cl = m.make(n) if m.target == "cl" else _cl_line(_dec(n))
        mutated, clean = (te, cl) if m.target == "te" else (cl, te)
    else:
        spath, data = smuggled_request(cid, pad_to=DATA_LEN)
        if m.target == "chunk":
            body = m.make(data)
        else:
            body = _chunk_body(b"%x\r\n" % len(data), data)
        expected = data
        first_line = body[:body.index(b"\n") + 1]
        n = len(first_line)
        te = m.make() if m.target == "te" else _te_line()
        if template == "TE":
            cl = b""
        else:
            cl = m.make(n) if m.target == "cl" else _cl_line(_dec(n))
        mutated, clean = (cl, te) if m.target == "cl" else (te, cl)
        if m.target == "chunk":
            mutated, clean = b"", cl + te
    if m.first:
        head = _head(path, clean, first=mutated)
    else:
        head = _head(path, clean + mutated)
    return Case(cid, template, m, head + body, len(head), path, spath, expected)


def cases() -> list[Case]:
    out = []
    for m in MUTATIONS:
        if m.target == "chunk":
            templates = ("TE.CL", "TE")
        elif m.benign:
            # a different field: the one-message reading is the other framing header's
            templates = ("CL.TE",) if m.target == "te" else ("TE.CL",)
        else:
            templates = ("CL.TE", "TE.CL")
        out.extend(_build(t, m) for t in templates)
    return out
