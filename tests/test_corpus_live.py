"""The shared hostile-request corpora (../shared/corpus/http1) replayed THROUGH THE RUNNING PROXY.

tests/test_fastpath_http1_corpus.py judges the parser alone; this module sends every case on a fresh
client connection to a real cyvoy (master + 1 worker, one for the whole module) whose only upstream
is a strict recording server (tests/recording_upstream.py: h11 in server role, records every request
and byte, flags every protocol error). The case preparation is the parser test's: the same decoding
of raw_b64, the same body appended to desync-guardian heads that name Content-Length or
Transfer-Encoding (`_with_body`), the same "Host: corpus.test" added to a message refused only for
lacking Host (`_add_host`, see that module's docstring), so each case is judged on its subject.

Per case: connect, send each part (one sendall each, a short pause between), half-close, read until
the proxy closes (at most TIMEOUT). Then:

- llhttp cases with expect "error" or a lenient type, and desync-guardian "Severe" cases: the last
  response is a 4xx, the proxy closes, and no upstream request comes from the offending message
  (the complete messages before it, `messages` in llhttp's terms, may be forwarded). The two
  keep-alive leniency cases are the parser test's exception: answered once, then closed.
  That includes a message refused for a bad chunk that arrived together with its head: the proxy
  decodes those body bytes before anything goes upstream, so not even the head is forwarded.
- desync-guardian "Ambiguous" cases: refused or forwarded; which one is printed in the summary.
- every case: no more upstream requests than client messages; everything forwarded parses with h11,
  has at most one framing header, no hop-by-hop header, no CR/LF/NUL in any header; no 5xx; the proxy
  closes before TIMEOUT; the worker keeps its pid and the log shows no internal error.
"""
from __future__ import annotations

import base64
import dataclasses
import os
import socket
import time
from unittest import mock

import pytest

from proxy._fastpath.http1 import ChunkedDecoder
from tests import test_fastpath_http1_corpus as corpus
from tests.harness import Proxy
from tests.recording_upstream import RecordingUpstream, proxy_before_recorder

TIMEOUT = 2.0          # per case: from the first byte sent to the proxy's close
PAUSE = 0.005          # between two parts sent, and before reading what came back
HOST_LINE = b"Host: corpus.test\r\n"
HOP_BY_HOP = {b"connection", b"keep-alive", b"proxy-connection", b"te", b"upgrade"}


def is_refusal(status: int) -> bool:
    """A client error: any 4xx, or 501 (method / transfer coding not implemented) or 505 (version)."""
    return 400 <= status < 500 or status in (501, 505)


pytestmark = corpus.pytestmark


# ---- case preparation (the parser test's, plus where its insertions fall in the parts) ----------

@dataclasses.dataclass
class Prepared:
    parts: list            # bytes to send, one sendall each
    outcome: object        # corpus.Outcome: the parser's reading of the same bytes
    hosts_added: int


def _split_insert(parts: list, pos: int, ins: bytes) -> list:
    start = 0
    for k, p in enumerate(parts):
        if pos <= start + len(p):
            q = pos - start
            return parts[:k] + [p[:q] + ins + p[q:]] + parts[k + 1:]
        start += len(p)
    raise AssertionError("insertion past the end of the data")


def _insert_pos(before: bytes, after: bytes, ins: bytes) -> int:
    i = after.find(ins)
    while i >= 0:
        if after[:i] == before[:i] and after[i + len(ins):] == before[i:]:
            return i
        i = after.find(ins, i + 1)
    raise AssertionError("could not locate the added Host line")


def prepare(case: dict, desync: bool) -> Prepared:
    parts = [base64.b64decode(p) for p in case["raw_b64"]]     # corpus.raw(), kept in parts
    data = b"".join(parts)
    assert data == corpus.raw(case)
    if desync:
        with_body = corpus._with_body(data)
        if len(with_body) > len(data):
            parts.append(with_body[len(data):])
        data = with_body
    inserted = []
    orig_add_host = corpus._add_host

    def recording_add_host(d: bytes, off: int) -> bytes:
        out = orig_add_host(d, off)
        inserted.append(_insert_pos(d, out, HOST_LINE))
        return out

    with mock.patch.object(corpus, "_add_host", recording_add_host):
        outcome = corpus.run(data)
    for pos in inserted:      # each position is in the coordinates of the data after the previous ones
        parts = _split_insert(parts, pos, HOST_LINE)
    return Prepared(parts, outcome, len(inserted))


# ---- the client side ----------------------------------------------------------------------------

@dataclasses.dataclass
class Exchange:
    received: bytes
    closed: bool           # the proxy closed (FIN or RST) before the deadline
    reset: bool
    send_error: str
    elapsed: float


def _drain(s: socket.socket, got: bytearray) -> bool:
    """Reads what is already there without waiting; True if the proxy closed."""
    s.setblocking(False)
    try:
        while True:
            b = s.recv(65536)
            if not b:
                return True
            got += b
    except (BlockingIOError, InterruptedError):
        return False
    except ConnectionResetError:
        return True
    finally:
        s.setblocking(True)


def exchange(port: int, parts: list) -> Exchange:
    t0 = time.monotonic()
    got = bytearray()
    closed = reset = False
    send_error = ""
    s = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
    try:
        for part in parts:
            try:
                s.sendall(part)
            except OSError as e:
                send_error = repr(e)
                break
            time.sleep(PAUSE)
            if _drain(s, got):
                closed = True
                break
        if not closed:
            try:
                s.shutdown(socket.SHUT_WR)
            except OSError:
                pass
            while (left := t0 + TIMEOUT - time.monotonic()) > 0:
                s.settimeout(left)
                try:
                    b = s.recv(65536)
                except socket.timeout:
                    break
                except ConnectionResetError:
                    closed = reset = True
                    break
                if not b:
                    closed = True
                    break
                got += b
    finally:
        s.close()
    return Exchange(bytes(got), closed, reset, send_error, time.monotonic() - t0)


@dataclasses.dataclass
class Response:
    status: int
    headers: list
    interim: bool = False


def parse_responses(data: bytes, methods: list) -> tuple[list, str]:
    """Splits what the proxy sent into responses; returns them and a description of any garbage."""
    out, i, n = [], 0, 0
    while i < len(data):
        end = data.find(b"\r\n\r\n", i)
        if end < 0:
            return out, f"incomplete response head {data[i:i + 80]!r}"
        lines = data[i:end].split(b"\r\n")
        try:
            version, code = lines[0].split(b" ", 2)[:2]
            status = int(code)
            assert version in (b"HTTP/1.1", b"HTTP/1.0") and 100 <= status <= 599
            headers = [(k.strip().lower(), v.strip()) for k, v in (line.split(b":", 1) for line in lines[1:])]
        except (ValueError, AssertionError):
            return out, f"malformed response head {data[i:end][:200]!r}"
        i = end + 4
        if 100 <= status < 200:
            out.append(Response(status, headers, interim=True))
            continue
        method = methods[n] if n < len(methods) else b"GET"
        n += 1
        out.append(Response(status, headers))
        h = dict(headers)
        if method == b"HEAD" or status in (204, 304):
            continue
        if b"content-length" in h:
            i += int(h[b"content-length"])
        elif h.get(b"transfer-encoding", b"").lower() == b"chunked":
            dec = ChunkedDecoder()
            dec.feed(data, i)
            if not dec.done:
                return out, "incomplete chunked response body"
            i += dec.consumed
        else:
            i = len(data)
    if i > len(data):
        return out, "response body shorter than its Content-Length"
    return out, ""


# ---- module fixtures ----------------------------------------------------------------------------

@dataclasses.dataclass
class Live:
    proxy: Proxy
    upstream: RecordingUpstream
    worker_pids: set
    log_offset: int = 0
    results: dict = dataclasses.field(default_factory=dict)     # case id -> (group, summary)
    windows: dict = dataclasses.field(default_factory=dict)     # case id -> (first event, end event, conns)
    client_close: dict = dataclasses.field(default_factory=dict)  # forwarded Ambiguous case id -> note


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    with proxy_before_recorder(tmp_path_factory.mktemp("corpus_live")) as (p, upstream, pids, offset):
        yield Live(p, upstream, pids, log_offset=offset)


# ---- the checks ---------------------------------------------------------------------------------

def _forwarded_request_problems(req) -> list:
    problems = []
    names = [n.lower() for n, _ in req.raw_headers]
    framing = names.count(b"content-length") + names.count(b"transfer-encoding")
    if framing > 1:
        problems.append(f"{framing} framing headers")
    hop = sorted(set(names) & HOP_BY_HOP)
    if hop:
        problems.append(f"hop-by-hop headers forwarded: {hop}")
    for n, v in req.raw_headers:
        if n.lower() == b"transfer-encoding" and v.strip().lower() != b"chunked":
            problems.append(f"transfer-encoding other than the chunked framing: {v!r}")
        if any(c in n + v for c in b"\r\n\x00"):
            problems.append(f"CR/LF/NUL in header {n!r}: {v!r}")
    if any(c in req.method + req.target for c in b"\r\n\x00 "):
        problems.append(f"bad request line {req.method!r} {req.target!r}")
    if req.http_version != b"1.1":
        problems.append(f"forwarded as HTTP/{req.http_version.decode()}")
    return problems


def replay(live: Live, case_id: str, case: dict, desync: bool) -> dict:
    prep = prepare(case, desync)
    mark = live.upstream.mark()
    ex = exchange(live.proxy.port, prep.parts)
    live.upstream.quiesce(0.03 if ex.closed else 0.1)
    events = live.upstream.since(mark)
    end_mark = mark + len(events)

    with open(live.proxy.log_path, "rb") as f:
        f.seek(live.log_offset)
        new_log = f.read().decode("latin-1")
    live.log_offset += len(new_log)

    methods = [h.method for h in prep.outcome.heads]
    responses, garbage = parse_responses(ex.received, methods)
    finals = [r for r in responses if not r.interim]
    requests = [e.request for e in events if e.kind == "request"]
    complete = [e.request for e in events if e.kind == "end"]
    conns = {e.conn for e in events if e.kind in ("request", "end")}
    live.windows[case_id] = (mark, end_mark, conns)
    errors = [e for e in events if e.kind == "protocol-error"]
    aborted = [e for e in events if e.kind == "aborted"]
    workers = {w.pid for w in live.proxy.workers()}

    # what every case must satisfy
    problems = []
    if not ex.closed:
        problems.append(f"no close from the proxy within {TIMEOUT}s (got {ex.received[:200]!r})")
    if garbage:
        problems.append(f"proxy answer: {garbage}")
    if any(r.status >= 500 and not is_refusal(r.status) for r in finals):
        problems.append(f"5xx answered: {[r.status for r in finals]}")
    for e in errors:
        problems.append(f"upstream h11 protocol error: {e.detail} (raw: {bytes(live.upstream.raw[e.conn])[-600:]!r})")
    client_messages = len(prep.outcome.heads)
    if not desync:
        client_messages = max(client_messages, case["messages"])
    if len(requests) > client_messages:
        problems.append(f"{len(requests)} upstream requests for {client_messages} client message(s)")
    for r in requests:
        for p in _forwarded_request_problems(r):
            problems.append(f"forwarded {r.method!r} {r.target!r}: {p}")
    if workers != live.worker_pids:
        problems.append(f"worker pids changed: {live.worker_pids} -> {workers}")
    if "internal error" in new_log or "Traceback" in new_log or "died" in new_log:
        problems.append("proxy log: " + new_log[-1500:])
    return dict(prep=prep, ex=ex, finals=finals, requests=requests, complete=complete, aborted=aborted,
                problems=problems)


def _describe(r: dict) -> str:
    statuses = [x.status for x in r["finals"]]
    return (f"answers {statuses}, upstream {len(r['requests'])} request(s) ({len(r['complete'])} complete"
            f"{', %d aborted' % len(r['aborted']) if r['aborted'] else ''}), "
            f"{'closed' if r['ex'].closed else 'NOT closed'}{' by reset' if r['ex'].reset else ''} "
            f"after {r['ex'].elapsed:.3f}s; parser: {r['prep'].outcome.describe()}"
            f"{', Host added' if r['prep'].hosts_added else ''}")


def _fail_report(case: dict, r: dict, problems: list) -> str:
    return ("\n  ".join(problems) + f"\n  sent: {r['prep'].parts!r}\n  got: {r['ex'].received[:600]!r}"
            f"\n  {_describe(r)}")


def check_refused(r: dict, prior: int) -> tuple[list, list]:
    """The offending message is answered 4xx, the connection closes, and nothing of it goes upstream;
    `prior` complete messages before it may have been forwarded and answered. Returns the problems,
    and apart from them the heads of the offending message that reached the upstream."""
    problems = []
    finals = r["finals"]
    if not finals or not is_refusal(finals[-1].status):
        problems.append(f"not refused with a 4xx/501/505: answers {[x.status for x in finals]}")
    if len(finals) > prior + 1:
        problems.append(f"{len(finals)} answers for {prior} message(s) before the offending one")
    if len(r["complete"]) > prior:
        problems.append(f"{len(r['complete'])} complete upstream request(s), only {prior} allowed")
    return problems, r["requests"][prior:]


def judge_refused(r: dict, prior: int, problems: list) -> None:
    """Adds the refusal problems: not refused, too many answers, or any upstream request (even a
    head aborted mid-body) coming from the offending message."""
    more, leaked = check_refused(r, prior)
    problems += more
    if leaked:
        problems.append(f"{len(leaked)} upstream request head(s) of the offending message forwarded: "
                        f"{[(q.method, q.target) for q in leaked]}")


def _ids(cases, key, prefix):
    return [f"{prefix}-{i}-{c[key][:60]}" for i, c in enumerate(cases)]


LLHTTP_IDS = _ids(corpus.LLHTTP, "title", "llhttp")
DESYNC_IDS = _ids(corpus.DESYNC, "name", "desync")


@pytest.mark.parametrize("case", corpus.LLHTTP, ids=LLHTTP_IDS)
def test_llhttp_case_through_proxy(live, case, request):
    case_id = request.node.callspec.id
    r = replay(live, case_id, case, desync=False)
    problems = list(r["problems"])
    outcome = r["prep"].outcome
    if case["title"] in corpus.LLHTTP_CLOSE_INSTEAD_OF_ERROR:
        group = "llhttp must-refuse (keep-alive leniency): answered once, then closed"
        if len(r["complete"]) > 1 or len(r["finals"]) > 1 or not r["ex"].closed:
            problems.append("not answered once then closed")
    elif corpus._llhttp_must_refuse(case):
        group = "llhttp must-refuse"
        if case["type"] in corpus.STRICT_TYPES:
            prior = case["messages"]
        else:
            # lenient: the complete messages before the one the strict parser refuses
            prior = len(outcome.heads) - (1 if outcome.kind == "body-error" else 0)
        judge_refused(r, prior, problems)
    else:
        group = "llhttp ok"
    live.results[case_id] = (group, _describe(r))
    assert not problems, _fail_report(case, r, problems)


@pytest.mark.parametrize("case", corpus.DESYNC, ids=DESYNC_IDS)
def test_desync_case_through_proxy(live, case, request):
    case_id = request.node.callspec.id
    r = replay(live, case_id, case, desync=True)
    problems = list(r["problems"])
    tier = case["tier"]
    if tier == "Severe":
        group = "desync Severe"
        judge_refused(r, 0, problems)
    elif tier == "Ambiguous":
        refused = bool(r["finals"]) and is_refusal(r["finals"][-1].status) and not r["requests"]
        forwarded = len(r["complete"]) == 1 and [x.status for x in r["finals"]] == [200]
        if refused:
            group = "desync Ambiguous: refused"
        elif forwarded:
            group = "desync Ambiguous: forwarded"
            says_close = (b"connection", b"close") in [(k, v.lower()) for k, v in r["finals"][0].headers]
            live.client_close[case_id] = "answered with Connection: close" if says_close else "kept alive"
        else:
            group = "desync Ambiguous: NEITHER"
            problems.append("neither refused with a 4xx/501/505 nor forwarded and answered 200")
    else:
        group = f"desync {tier}"
    live.results[case_id] = (group, _describe(r))
    assert not problems, _fail_report(case, r, problems)


def test_zz_summary_and_worker_alive(live, capsys):
    """Runs last: the worker is the one the module started, the log has no death or internal error;
    prints what happened per group, and for each forwarded Ambiguous case whether the client
    connection was closed and whether its upstream connection was used again later
    (CORPUS_LIVE_VERBOSE=1: every case)."""
    log = live.proxy.log()
    assert "died" not in log and "internal error" not in log and "Traceback" not in log, log[-3000:]
    assert {w.pid for w in live.proxy.workers()} == live.worker_pids
    assert live.proxy.proc.poll() is None

    events = live.upstream.since(0)
    ambiguous_reuse: list = []
    groups: dict = {}
    for case_id, (group, desc) in live.results.items():
        groups.setdefault(group, []).append((case_id, desc))
    lines = []
    for group in sorted(groups):
        lines.append(f"{group}: {len(groups[group])}")
        if (group.startswith("desync Ambiguous") or "keep-alive" in group or "KNOWN ISSUE" in group
                or os.environ.get("CORPUS_LIVE_VERBOSE")):
            for case_id, desc in groups[group]:
                extra = ""
                if group == "desync Ambiguous: forwarded":
                    _mark, end, conns = live.windows[case_id]
                    reused = any(e.kind == "request" and e.conn in conns for e in events[end:])
                    # issue 7's gate: a forwarded Ambiguous message leaves neither connection reused
                    if reused or live.client_close.get(case_id) != "answered with Connection: close":
                        ambiguous_reuse.append(case_id)
                    extra = (f" [client connection {live.client_close.get(case_id, '?')}; upstream connection "
                             f"{'REUSED' if reused else 'not reused'} afterwards]")
                lines.append(f"    {case_id}: {desc}{extra}")
    with capsys.disabled():
        print("\n[http1 corpus, live through cyvoy]\n  " + "\n  ".join(lines))
    assert not ambiguous_reuse, f"forwarded Ambiguous cases with a connection reused: {ambiguous_reuse}"
