"""Generated request-smuggling obfuscations (tests/smuggling.py) sent THROUGH THE RUNNING PROXY.

One cyvoy (master + 1 worker) for the whole module, in front of the strict recording upstream
(tests/recording_upstream.py: h11 in server role, records every request and byte). Every case is one
transmission on a fresh client connection, sent and read the way tests/test_corpus_live.py does it
(one sendall, half-close, read until the proxy closes, at most TIMEOUT), then judged:

- refused: exactly one answer, a 4xx; the proxy closes; not one byte reached the upstream
  (the head and body arrive together, and the proxy decodes a chunked body before it forwards
  anything, so even a body error must leave the upstream untouched);
- normalized: exactly one answer, 200 (the recording upstream's); exactly one upstream request, the
  case's own `POST /case/<id>`, complete; it carries exactly one framing header (Content-Length, or
  Transfer-Encoding: chunked), no hop-by-hop header, no framing field in a forwarded trailer
  section; its body is the one-message reading of the case (see tests/smuggling.py), so the
  smuggled `GET /smuggled/<id>` is at most body bytes, never a request.

And for every case: refused or normalized, nothing else; no 5xx; no h11 protocol error upstream;
the proxy closes within TIMEOUT; the worker keeps its pid; the log shows no internal error.
test_zz_summary re-checks the whole upstream log (no /smuggled/ target ever, no request for a case
that was refused, no case forwarded twice) and prints refused / normalized counts per template and
family.
"""
from __future__ import annotations

import collections
import dataclasses
import os

import h11
import pytest

from proxy._fastpath.http1 import ChunkedDecoder, HttpError
from tests import smuggling
from tests import test_corpus_live as corpus_live
from tests.harness import Proxy
from tests.recording_upstream import RecordingUpstream, proxy_before_recorder

TIMEOUT = corpus_live.TIMEOUT
CASES = smuggling.cases()


@dataclasses.dataclass
class Live:
    proxy: Proxy
    upstream: RecordingUpstream
    worker_pids: set
    log_offset: int = 0
    outcomes: dict = dataclasses.field(default_factory=dict)     # case id -> "refused" / "normalized"
    details: dict = dataclasses.field(default_factory=dict)      # case id -> short description


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    with proxy_before_recorder(tmp_path_factory.mktemp("smuggling_live")) as (p, upstream, pids, offset):
        yield Live(p, upstream, pids, log_offset=offset)


# ---- the generator itself ---------------------------------------------------------------------------

def test_generator_is_consistent():
    """The mutations are distinct, numerous, and what tests/smuggling.py says they are: chunk bodies
    decode (strict reference decoder) to the chunk data exactly when marked valid; a header mutation
    is "benign" exactly when its lines are valid field lines none of which is a framing field (or an
    underscore lookalike); every case is a real trap: the other framing reading reveals the
    smuggled request."""
    names = [m.name for m in smuggling.MUTATIONS]
    assert len(names) == len(set(names))
    assert len(names) >= 150
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids))
    bodies = set()
    for m in smuggling.MUTATIONS:
        if m.target == "chunk":
            data = smuggling.smuggled_request("x", smuggling.DATA_LEN)[1]
            body = m.make(data)
            assert body not in bodies, m.name
            bodies.add(body)
            try:
                payload, _trailers, used = smuggling.ref_decode_chunked(body)
                valid = payload == data and used == len(body)
            except ValueError:
                valid = False
            assert valid == m.valid, m.name
        else:
            lines = m.make() if m.target == "te" else m.make(44)
            assert (lines, m.first) not in bodies, m.name
            bodies.add((lines, m.first))
            found = smuggling.ref_field_names(lines)
            benign = found is not None and not any(smuggling.framing_like(n) for n in found)
            assert benign == m.benign, (m.name, found)
    for c in CASES:
        body = c.data[c.head_len:]
        if c.template == "CL.TE" and c.mutation.target != "chunk":
            assert body == c.expected_body
            # a chunked reading ends after "0 CRLF CRLF": the smuggled request comes next
            assert body[5:].startswith(b"GET " + c.smuggled_path + b" ")
        elif c.mutation.target != "chunk":
            # a Content-Length reading ends after the first chunk-size line
            first = body[:body.index(b"\n") + 1]
            assert body[len(first):].startswith(b"\r\nGET " + c.smuggled_path + b" ")
            assert smuggling.ref_decode_chunked(body)[0] == c.expected_body
        else:
            assert c.expected_body.startswith(b"\r\nGET " + c.smuggled_path + b" ")
            if c.mutation.valid:
                assert smuggling.ref_decode_chunked(body)[0] == c.expected_body


@pytest.mark.parametrize("trailer", [b"Content-Length: 5", b"transfer-encoding: chunked", b"CONTENT-LENGTH:0",
                                     b"Transfer_Encoding: chunked", b"X-A: 1\r\nContent-Length: 5"])
def test_decoder_refuses_framing_fields_in_trailers(trailer):
    """The parser fix these cases called for (TE-chunk-trailer-content-length/-transfer-encoding were
    forwarded with their trailer): a framing field in a trailer section is refused, whole or split
    at any byte, and the same section without it is accepted."""
    body = b"5\r\nhello\r\n0\r\n" + trailer + b"\r\n\r\n"
    for cut in range(len(body) + 1):
        d = ChunkedDecoder()
        with pytest.raises(HttpError) as e:
            d.feed(body[:cut])
            d.feed(body[cut:])
        assert e.value.status == 400 and "trailer" in e.value.reason, cut
        assert not d.done
    framing_line = trailer.split(b"\r\n")[-1]
    ok = trailer.replace(framing_line, b"X-Ok:" + framing_line.split(b":", 1)[1])
    d = ChunkedDecoder()
    assert d.feed(b"5\r\nhello\r\n0\r\n" + ok + b"\r\n\r\n") == b"hello"
    assert d.done and d.trailers == ok + b"\r\n"


# ---- through the proxy ------------------------------------------------------------------------------

def _upstream_messages(live: Live, events: list) -> list:
    """Re-parses the bytes the upstream got during a case (per connection, h11 server role) and
    returns the trailer fields of each complete request."""
    per_conn: dict = collections.OrderedDict()
    for e in events:
        if e.kind == "data":
            per_conn.setdefault(e.conn, bytearray()).extend(e.data)
    trailers = []
    for data in per_conn.values():
        conn = h11.Connection(h11.SERVER)
        conn.receive_data(bytes(data))
        while True:
            try:
                ev = conn.next_event()
            except h11.RemoteProtocolError:
                break       # reported by the recording upstream itself
            if ev is h11.NEED_DATA or ev is h11.PAUSED or isinstance(ev, h11.ConnectionClosed):
                break
            if isinstance(ev, h11.EndOfMessage):
                trailers.append([(n.lower(), v) for n, v in ev.headers.raw_items()])
                try:
                    conn.start_next_cycle()
                except h11.LocalProtocolError:
                    break
    return trailers


def _judge(live: Live, case: smuggling.Case) -> tuple[str, list, str]:
    mark = live.upstream.mark()
    ex = corpus_live.exchange(live.proxy.port, [case.data])
    live.upstream.quiesce(0.03 if ex.closed else 0.1)
    events = live.upstream.since(mark)

    with open(live.proxy.log_path, "rb") as f:
        f.seek(live.log_offset)
        new_log = f.read().decode("latin-1")
    live.log_offset += len(new_log)

    responses, garbage = corpus_live.parse_responses(ex.received, [b"POST"])
    finals = [r.status for r in responses if not r.interim]
    requests = [e.request for e in events if e.kind == "request"]
    complete = [e.request for e in events if e.kind == "end"]
    data_bytes = sum(len(e.data) for e in events if e.kind == "data")

    problems = []
    if not ex.closed:
        problems.append(f"no close from the proxy within {TIMEOUT}s")
    if garbage:
        problems.append(f"proxy answer: {garbage}")
    if any(s >= 500 for s in finals):
        problems.append(f"5xx answered: {finals}")
    for e in events:
        if e.kind == "protocol-error":
            problems.append(f"upstream h11 protocol error: {e.detail} "
                            f"(raw: {bytes(live.upstream.raw[e.conn])[-600:]!r})")
    if any(r.target == case.smuggled_path for r in requests):
        problems.append("the smuggled request reached the upstream as a request of its own")
    if {w.pid for w in live.proxy.workers()} != live.worker_pids:
        problems.append(f"worker pids changed: {live.worker_pids} -> {[w.pid for w in live.proxy.workers()]}")
    if "internal error" in new_log or "Traceback" in new_log or "died" in new_log:
        problems.append("proxy log: " + new_log[-1500:])

    if len(finals) == 1 and 400 <= finals[0] < 500:
        outcome = "refused"
        if data_bytes or requests:
            problems.append(f"refused, but the upstream got {data_bytes} byte(s), "
                            f"{[(r.method, r.target) for r in requests]}")
    elif finals == [200]:
        outcome = "normalized"
        if len(requests) != 1 or len(complete) != 1:
            problems.append(f"{len(requests)} upstream request(s), {len(complete)} complete; expected 1")
        for r in requests:
            if r.target != case.path:
                problems.append(f"upstream request {r.method!r} {r.target!r} is not the case's own")
            names = [n.lower() for n, _ in r.raw_headers]
            framing = [n for n in names if n in (b"content-length", b"transfer-encoding")]
            if len(framing) != 1:
                problems.append(f"{len(framing)} framing header(s) forwarded: {framing}")
            problems += [f"forwarded: {p}" for p in corpus_live._forwarded_request_problems(r)]
        for r in complete:
            if r.body != case.expected_body:
                problems.append(f"upstream body {r.body[:120]!r}... ({len(r.body)} bytes) is not the "
                                f"one-message reading ({len(case.expected_body)} bytes)")
        for fields in _upstream_messages(live, events):
            # RFC 9110 6.5.1: framing fields have no place in trailers; a recipient that merges
            # trailers into the header section would see a second framing header
            if any(smuggling.framing_like(n) for n, _ in fields):
                problems.append(f"forwarded trailer section carries a framing field: {fields}")
    else:
        outcome = "neither"
        problems.append(f"neither refused (one 4xx) nor normalized (one 200): answers {finals}")

    desc = (f"answers {finals}, upstream {len(requests)} request(s) / {data_bytes} bytes, "
            f"{'closed' if ex.closed else 'NOT closed'} after {ex.elapsed:.3f}s")
    if problems:
        problems.append(f"sent: {case.data[:700]!r}")
        problems.append(f"got: {ex.received[:400]!r}")
        problems.append(desc)
    return outcome, problems, desc


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_mutation_through_proxy(live, case):
    outcome, problems, desc = _judge(live, case)
    live.outcomes[case.id] = outcome
    live.details[case.id] = desc
    assert not problems, "\n  ".join(problems)


def test_zz_summary(live, capsys):
    """Runs last: the whole upstream log agrees with the per-case verdicts, the worker is the one the
    module started; prints refused / normalized counts (SMUGGLING_VERBOSE=1: every case)."""
    log = live.proxy.log()
    assert "died" not in log and "internal error" not in log and "Traceback" not in log, log[-3000:]
    assert {w.pid for w in live.proxy.workers()} == live.worker_pids
    assert live.proxy.proc.poll() is None

    by_path = {c.path: c for c in CASES}
    smuggled = {c.smuggled_path for c in CASES}
    seen = collections.Counter()
    problems = []
    for e in live.upstream.since(0):
        if e.kind == "protocol-error":
            problems.append(f"protocol error: {e.detail}")
        if e.kind != "request":
            continue
        t = e.request.target
        if t in smuggled:
            problems.append(f"smuggled request upstream: {t!r}")
        elif t in by_path:
            seen[t] += 1
            cid = by_path[t].id
            if live.outcomes.get(cid) != "normalized":
                problems.append(f"upstream request for case {cid} judged {live.outcomes.get(cid)}")
        else:
            problems.append(f"unexpected upstream request {t!r}")
    problems += [f"{by_path[t].id} forwarded {n} times" for t, n in seen.items() if n > 1]
    assert not problems, "\n".join(problems)

    ran = {c.id: c for c in CASES if c.id in live.outcomes}
    table = collections.Counter((ran[cid].template, o) for cid, o in live.outcomes.items())
    fam = collections.Counter((ran[cid].mutation.family, o) for cid, o in live.outcomes.items())
    total = collections.Counter(live.outcomes.values())
    lines = [f"{len(smuggling.MUTATIONS)} mutations, {len(ran)} cases run: "
             f"{total['refused']} refused, {total['normalized']} normalized, {total['neither']} neither"]
    for t in ("CL.TE", "TE.CL", "TE"):
        lines.append(f"  {t:6}: {table[(t, 'refused')]} refused, {table[(t, 'normalized')]} normalized"
                     + (f", {table[(t, 'neither')]} NEITHER" if table[(t, 'neither')] else ""))
    lines.append("  per family (refused/normalized): " + ", ".join(
        f"{f} {fam[(f, 'refused')]}/{fam[(f, 'normalized')]}"
        for f in sorted({m.family for m in smuggling.MUTATIONS})))
    normalized = sorted(cid for cid, o in live.outcomes.items() if o == "normalized")
    lines.append("  normalized: " + ", ".join(normalized))
    valid_refused = sorted(cid for cid, o in live.outcomes.items()
                           if o == "refused" and ran[cid].template == "TE" and ran[cid].mutation.valid)
    lines.append("  valid chunked bodies (RFC 9112 7.1) refused anyway: " + (", ".join(valid_refused) or "none"))
    invalid_normalized = [cid for cid in normalized
                          if ran[cid].mutation.target == "chunk" and not ran[cid].mutation.valid]
    lines.append("  invalid chunked bodies normalized: " + (", ".join(invalid_normalized) or "none"))
    if os.environ.get("SMUGGLING_VERBOSE"):
        lines += [f"    {cid}: {live.outcomes[cid]}: {live.details[cid]}" for cid in sorted(live.outcomes)]
    with capsys.disabled():
        print("\n[request-smuggling mutations, live through cyvoy]\n" + "\n".join(lines))
