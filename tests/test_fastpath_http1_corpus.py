"""proxy._fastpath.http1 against the shared hostile-request corpora (../shared/corpus/http1).

Every case is fed the way the proxy reads a connection: parse a head, read its body by the framing
the head declares (ChunkedDecoder for chunked), and go on with the next message while the
connection stays alive. See the corpus README for the fields of each case.

- llhttp cases that llhttp rejects, and every "lenient" case (which llhttp only accepts with a
  leniency flag): the proxy must refuse them, at the head or at the latest while decoding the
  chunked body. Exception: the two keep-alive leniency cases, where the strict behaviour is to close
  the connection after the first message, so the bytes after it are never parsed.
- llhttp cases that llhttp accepts: the proxy accepts them too, except the ones listed in
  LLHTTP_OK_REFUSED, each with the status it gets and why.
- desync-guardian "Severe" cases: refused. "Compliant"/"Acceptable": accepted except the ones in
  DESYNC_OK_REFUSED. "Ambiguous": either refused, or forwarded with exactly one framing header.

llhttp is a parser, not a server, so most of its cases carry no Host header; RFC 9112 3.2 requires
one in HTTP/1.1 and the proxy refuses such requests (test_missing_host_on_http11_is_400). The runner
adds "Host: corpus.test" to a message refused only for that reason, so that each case is judged on
what it is about.
"""
from __future__ import annotations

import base64
import dataclasses
import json
from pathlib import Path

import pytest

from proxy._fastpath.http1 import ChunkedDecoder, HttpError, build_request_head, parse_request

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus" / "http1"
MISSING_HOST = "missing host header"


def _load(name: str) -> list[dict]:
    path = CORPUS / name
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


LLHTTP = _load("llhttp_requests.jsonl")
DESYNC = _load("desync_guardian.jsonl")
pytestmark = pytest.mark.skipif(not LLHTTP or not DESYNC,
                                reason=f"hostile-request corpus not found at {CORPUS}")


@dataclasses.dataclass
class Outcome:
    kind: str                      # "error", "body-error", "incomplete", "close", "upgrade", "end"
    heads: list
    error: HttpError | None = None
    hosts_added: int = 0

    @property
    def refused(self) -> bool:
        return self.kind in ("error", "body-error")

    def describe(self) -> str:
        tail = f" {self.error.status} {self.error.reason}" if self.error else ""
        return f"{self.kind} after {len(self.heads)} message(s){tail}"


def _add_host(data: bytes, off: int) -> bytes:
    i = off
    while data[i:i + 2] == b"\r\n":
        i += 2
    end = data.index(b"\r\n", i) + 2
    return data[:end] + b"Host: corpus.test\r\n" + data[end:]


def run(data: bytes) -> Outcome:
    """Reads `data` as one client connection; stops at the first error, at the end of the data,
    when a message is incomplete, when the connection would close, or at an upgrade/CONNECT."""
    heads, off, added = [], 0, 0
    while True:
        if off == len(data):
            return Outcome("end", heads, hosts_added=added)
        try:
            head = parse_request(data, off, 65536, True)
        except HttpError as e:
            if e.reason == MISSING_HOST:
                data = _add_host(data, off)
                added += 1
                continue
            return Outcome("error", heads, e, added)
        if head is None:
            return Outcome("incomplete", heads, hosts_added=added)
        heads.append(head)
        off += head.head_len
        if head.method == b"CONNECT" or head.upgrade is not None:
            return Outcome("upgrade", heads, hosts_added=added)
        if head.chunked:
            decoder = ChunkedDecoder()
            try:
                decoder.feed(data, off)
            except HttpError as e:
                return Outcome("body-error", heads, e, added)
            if not decoder.done:
                return Outcome("incomplete", heads, hosts_added=added)
            off += decoder.consumed
        elif head.content_length > 0:
            if len(data) - off < head.content_length:
                return Outcome("incomplete", heads, hosts_added=added)
            off += head.content_length
        if not head.keep_alive:
            return Outcome("close", heads, hosts_added=added)


def raw(case: dict) -> bytes:
    return b"".join(base64.b64decode(part) for part in case["raw_b64"])


def assert_forwardable(head) -> None:
    """What the proxy would send upstream is one well-formed HTTP/1.1 head with one framing."""
    framing = -2 if head.chunked else head.content_length
    out = build_request_head(head.method, head.path, head.host or b"corpus.test", head.headers, b"", framing)
    again = parse_request(out, 0, 65536, False)
    assert again is not None and again.head_len == len(out)
    names = [line.split(b":", 1)[0].lower() for line in out.split(b"\r\n")[1:] if line]
    assert names.count(b"content-length") + names.count(b"transfer-encoding") <= 1
    assert not set(names) & {b"connection", b"keep-alive", b"proxy-connection", b"te", b"upgrade"}


# ---- llhttp ---------------------------------------------------------------------------------

STRICT_TYPES = ("request", "request-finish")

# Strict behaviour for llhttp's keep-alive leniency: the first message is answered and the
# connection closed; what follows it is never read as a request.
LLHTTP_CLOSE_INSTEAD_OF_ERROR = {
    "Resetting flags when keep-alive is off (1.0, lenient)",
    "CRLF between requests, explicit `close` (lenient)",
}

# Cases llhttp accepts that this proxy refuses, with the status and the rule.
FRAGMENT = "RFC 9112 3.2: no fragment in a request-target (Envoy's http_reject_path_with_fragment)"
LLHTTP_OK_REFUSED = {
    "CONNECT with body": (400, "RFC 9110 9.3.6: CONNECT has no content; bytes after the head are tunnel data"),
    "M-SEARCH request": (400, "RFC 9112 3.2.4: asterisk-form only for OPTIONS (SSDP is not HTTP)"),
    "SOURCE request with ICE": (400, "ICE/1.0 is not an HTTP version (RFC 9112 2.3)"),
    "OPTIONS request with RTSP": (400, "RTSP/1.0 is not an HTTP version (RFC 9112 2.3)"),
    "ANNOUNCE request with RTSP": (501, "ANNOUNCE is an RTSP method, not a registered HTTP method"),
    "No HTTP version": (400, "HTTP/0.9 request line without version is not supported"),
    # (these two carry a fragment in their target, refused before the transfer coding is read)
    "POST with `chunked` as last transfer-encoding": (400, FRAGMENT),
    "POST with `chunked` as last transfer-encoding (multiple headers)": (400, FRAGMENT),
    "Fragment in URI": (400, FRAGMENT),
    "`host:port` and basic auth": (400, "RFC 9110 4.2.4: userinfo in the target is an error"),
}


def _llhttp_must_refuse(case: dict) -> bool:
    return case["expect"] == "error" or case["type"] not in STRICT_TYPES


def _ids(cases, key):
    return [f"{i}-{c[key][:60]}" for i, c in enumerate(cases)]


REFUSE_CASES = [c for c in LLHTTP if _llhttp_must_refuse(c)]
ACCEPT_CASES = [c for c in LLHTTP if not _llhttp_must_refuse(c)]


@pytest.mark.parametrize("case", REFUSE_CASES, ids=_ids(REFUSE_CASES, "title"))
def test_llhttp_errors_and_lenient_cases_are_refused(case):
    outcome = run(raw(case))
    if case["title"] in LLHTTP_CLOSE_INSTEAD_OF_ERROR:
        assert outcome.kind == "close" and len(outcome.heads) == 1, outcome.describe()
        return
    assert outcome.refused, f"accepted: {case['title']!r}: {outcome.describe()}"
    if case["type"] in STRICT_TYPES:
        # no more complete messages than llhttp found before the offending one (a head whose
        # chunked body then fails to decode is not complete)
        complete = len(outcome.heads) - (1 if outcome.kind == "body-error" else 0)
        assert complete <= case["messages"]
    assert outcome.error.status in (400, 501, 505)


@pytest.mark.parametrize("case", ACCEPT_CASES, ids=_ids(ACCEPT_CASES, "title"))
def test_llhttp_accepted_cases_are_accepted_or_refused_for_a_stated_rule(case):
    outcome = run(raw(case))
    if case["title"] in LLHTTP_OK_REFUSED:
        status, _why = LLHTTP_OK_REFUSED[case["title"]]
        assert outcome.refused and outcome.error.status == status, outcome.describe()
        return
    assert not outcome.refused, outcome.describe()
    assert len(outcome.heads) >= case["messages"] or outcome.kind == "incomplete"
    if case["expect"] == "ok-then-close":
        assert outcome.kind == "close" and not outcome.heads[-1].keep_alive
    if case["expect"] == "upgrade":
        assert outcome.kind == "upgrade"
    for head in outcome.heads:
        assert_forwardable(head)


# ---- desync guardian ------------------------------------------------------------------------

# Compliant/Acceptable cases this proxy refuses, with the rule.
DESYNC_OK_REFUSED = {
    "No TE/CL headers, some others are non-compliant": "RFC 9112 5.1: whitespace before colon -> 400",
    "TE and some others are non-compliant": "RFC 9112 5.1: whitespace before colon -> 400",
    "CL and some others are non-compliant": "RFC 9112 5.1: whitespace before colon -> 400",
    "A non-essential header with a non-printable character (x01)": "field name must be a token",
    "Some-Header\\x01": "field name must be a token",
    "\\x01Some-Header": "field name must be a token",
    "Some-Header: \\x01value": "RFC 9110 5.5: CTL in a field value",
    "Some-Header: value\\x01": "RFC 9110 5.5: CTL in a field value",
    "Non-RFC, but OK HTTP/0.9": "only HTTP/1.0 and HTTP/1.1 (505)",
    "Empty version, which means HTTP/0.9": "HTTP/0.9 request line",
    "Unknown but OK HTTP/1.2": "only HTTP/1.0 and HTTP/1.1 (505)",
    "Extra spaces in version": "RFC 9112 3: exactly one SP between parts",
    "[space] in URI": "RFC 9112 3: exactly one SP between parts",
    "Correct TE OK": "gzip transfer coding not implemented (501)",
    "Transfer-Encoding: identity and chunked OK": "transfer codings other than chunked (501)",
    "Multiple transfer encoding headers in a single request OK": "transfer codings other than chunked (501)",
    "TE with custom parameters OK": "transfer-coding parameters refused",
    "Different Transfer-Encoding headers": "transfer codings other than chunked (501)",
    "Different Transfer-Encoding headers combined": "transfer codings other than chunked (501)",
    "Transfer-Encoding with a param: chunked;custom_param": "transfer-coding parameters refused",
    "International in URI": "raw non-ASCII in the request-target",
    "Empty URI": "empty request-target",
    "Compliant URL": "fragment in request-target (Envoy's http_reject_path_with_fragment)",
}


def _with_body(case_raw: bytes) -> bytes:
    """The corpus carries heads only: add the body its framing announces."""
    head = case_raw.lower()
    if b"\r\ntransfer-encoding:" in head and b"chunked" in head:
        return case_raw + b"5\r\nhello\r\n0\r\n\r\n"
    if b"\r\ncontent-length:" in head:
        try:
            n = int(head.split(b"\r\ncontent-length:")[1].split(b"\r\n")[0].strip())
        except ValueError:
            return case_raw
        return case_raw + b"x" * n if n <= 2**23 else case_raw
    return case_raw


SEVERE = [c for c in DESYNC if c["tier"] == "Severe"]
FINE = [c for c in DESYNC if c["tier"] in ("Compliant", "Acceptable")]
AMBIGUOUS = [c for c in DESYNC if c["tier"] == "Ambiguous"]


@pytest.mark.parametrize("case", SEVERE, ids=_ids(SEVERE, "name"))
def test_desync_severe_cases_are_refused_with_400(case):
    outcome = run(_with_body(raw(case)))
    assert outcome.refused, f"accepted: {case['name']!r}: {outcome.describe()}"
    assert outcome.heads == []
    assert outcome.error.status == 400


@pytest.mark.parametrize("case", FINE, ids=_ids(FINE, "name"))
def test_desync_compliant_cases_are_accepted_or_refused_for_a_stated_rule(case):
    outcome = run(_with_body(raw(case)))
    if case["name"] in DESYNC_OK_REFUSED:
        assert outcome.refused and outcome.error.status in (400, 501, 505), outcome.describe()
        return
    assert not outcome.refused, outcome.describe()
    assert outcome.kind in ("end", "close"), outcome.describe()
    for head in outcome.heads:
        assert_forwardable(head)


@pytest.mark.parametrize("case", AMBIGUOUS, ids=_ids(AMBIGUOUS, "name"))
def test_desync_ambiguous_cases_are_refused_or_forwarded_with_one_framing(case):
    outcome = run(_with_body(raw(case)))
    if outcome.refused:
        assert outcome.error.status in (400, 501, 505)
        return
    for head in outcome.heads:
        assert_forwardable(head)


def test_corpus_report(capsys):
    """Never fails: prints, for discussion, every case whose outcome is not a plain refusal
    where the corpus expects one, and every judgment call listed above."""
    lines = []
    for case in REFUSE_CASES:
        outcome = run(raw(case))
        if case["title"] in LLHTTP_CLOSE_INSTEAD_OF_ERROR:
            lines.append(f"llhttp lenient keep-alive, closed instead: {case['title']!r}: {outcome.describe()}")
        elif not outcome.refused:
            lines.append(f"llhttp must-refuse, NOT refused: {case['title']!r}: {outcome.describe()}")
    for case in SEVERE:
        outcome = run(_with_body(raw(case)))
        if not outcome.refused:
            lines.append(f"desync Severe, NOT refused: {case['name']!r}: {outcome.describe()}")
    for case in AMBIGUOUS:
        outcome = run(_with_body(raw(case)))
        if not outcome.refused:
            lines.append(f"desync Ambiguous, forwarded: {case['name']!r}: {outcome.describe()}")
    for title, (status, why) in LLHTTP_OK_REFUSED.items():
        lines.append(f"llhttp ok, refused {status}: {title!r}: {why}")
    for name, why in DESYNC_OK_REFUSED.items():
        lines.append(f"desync Compliant/Acceptable, refused: {name!r}: {why}")
    with capsys.disabled():
        print("\n[http1 corpus report]\n  " + "\n  ".join(lines))
