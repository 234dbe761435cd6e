"""proxy.health.checker: Envoy's active health-check state machine and timing, driven by a fake
clock and scripted check results; then the HTTP and TCP probes against real sockets.

Configs go through the real config loader (build_bootstrap), so the defaults are the ones the
process sees.
"""
from __future__ import annotations

import asyncio
import random
import socket
import threading

import pytest

from proxy.config.loader import build_bootstrap
from proxy.health.checker import (ACTIVE, CHANGE_PENDING, CHANGED, DEGRADED, NETWORK, SUCCESS,
                                  TIMEOUT, UNCHANGED, HealthState, HostChecker, HttpProbe,
                                  Result, TcpProbe, Timing, payload_match)
from tests.upstreams import Upstream


def hc_config(**fields) -> dict:
    """One validated health_checks[] entry (HTTP unless the fields say otherwise)."""
    hc = {"timeout": "1s", "interval": "1s", "unhealthy_threshold": 3, "healthy_threshold": 2}
    if not any(k.endswith("_health_check") for k in fields):
        hc["http_health_check"] = {"path": "/health"}
    hc.update(fields)
    doc = {"static_resources": {"clusters": [{
        "name": "web", "connect_timeout": "1s", "health_checks": [hc],
        "load_assignment": {"cluster_name": "web", "endpoints": [{"lb_endpoints": [
            {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1",
                                                         "port_value": 1}}}}]}]}}]}}
    return build_bootstrap(doc).clusters["web"].health_checks[0]


OK = Result(SUCCESS, "ok")
BAD_STATUS = Result(ACTIVE, "HTTP status 503")
RETRIABLE = Result(ACTIVE, "HTTP status 503", retriable=True)
REFUSED = Result(NETWORK, "connection refused")
HANG = object()          # the scripted probe never answers: the fake clock's wait_for times out


class Done(BaseException):
    """End of the script (a BaseException, so the checker's error handling lets it through)."""


class FakeClock:
    """Time moves only when the checker sleeps or a check times out."""

    def __init__(self):
        self.now = 0.0
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)

    async def wait_for(self, aw, timeout):
        r = await aw
        if r is HANG:
            self.now += timeout
            raise TimeoutError
        return r


class ScriptedProbe:
    def __init__(self, results):
        self.results = list(results)
        self.aborts = 0

    async def check(self):
        if not self.results:
            raise Done
        return self.results.pop(0)

    def abort(self):
        self.aborts += 1

    async def aclose(self):
        pass


def drive(results, hc=None, state=None, seed=1, initial_jitter_explicit=True):
    """Run a checker over scripted results; returns (timeline, clock, checker). The timeline has
    one (time of the check, result kind, transition, label after) per check."""
    hc = hc or hc_config(initial_jitter="0s")
    clock = FakeClock()
    timeline = []
    checker = HostChecker(
        hc, ScriptedProbe(results), clock=clock, rng=random.Random(seed), state=state,
        initial_jitter_explicit=initial_jitter_explicit,
        on_result=lambda ch, r, t: timeline.append((round(clock.now, 6), r.kind, t,
                                                    ch.state.label())))
    with pytest.raises(Done):
        asyncio.run(checker.run())
    return timeline, clock, checker


def labels(timeline):
    return [t[3] for t in timeline]


# --- the state machine ---------------------------------------------------------------------------

def test_new_host_is_pending_until_its_first_check_and_healthy_after_one_pass():
    s = HealthState(unhealthy_threshold=3, healthy_threshold=5)
    assert s.pending and s.failed and not s.usable and s.label() == "pending"
    # Envoy: "If this is the first time we ever got a check result on this host, we immediately
    # move it to healthy" (health_checker_base_impl.cc handleSuccess), whatever healthy_threshold.
    assert s.apply(OK) == CHANGED
    assert s.usable and s.label() == "healthy"


def test_first_check_failing_ends_pending_and_then_needs_healthy_threshold_passes():
    s = HealthState(unhealthy_threshold=3, healthy_threshold=3)
    assert s.apply(REFUSED) == CHANGED          # PENDING cleared counts as a change
    assert s.label() == "unhealthy" and not s.pending
    assert s.apply(OK) == CHANGE_PENDING
    assert s.apply(OK) == CHANGE_PENDING
    assert s.label() == "unhealthy"
    assert s.apply(OK) == CHANGED
    assert s.label() == "healthy"


def test_network_failures_count_toward_unhealthy_threshold_and_a_pass_resets_the_count():
    tl, _, ch = drive([OK, REFUSED, REFUSED, OK, REFUSED, REFUSED, REFUSED, OK],
                      hc_config(initial_jitter="0s", unhealthy_threshold=3, healthy_threshold=2))
    assert labels(tl) == ["healthy", "healthy", "healthy", "healthy", "healthy", "healthy",
                          "unhealthy", "unhealthy"]
    assert [t[2] for t in tl][:4] == [CHANGED, CHANGE_PENDING, CHANGE_PENDING, UNCHANGED]
    # (the ninth attempt is the one that found the script empty)
    assert ch.counters == {"attempt": 9, "success": 3, "failure": 5, "network_failure": 5}


def test_unexpected_status_fails_a_healthy_host_at_once_and_retriable_statuses_count():
    tl, _, _ = drive([OK, BAD_STATUS], hc_config(initial_jitter="0s", unhealthy_threshold=5))
    assert labels(tl) == ["healthy", "unhealthy"]
    tl, _, ch = drive([OK, RETRIABLE, RETRIABLE, RETRIABLE],
                      hc_config(initial_jitter="0s", unhealthy_threshold=3))
    assert labels(tl) == ["healthy", "healthy", "healthy", "unhealthy"]
    assert ch.counters["network_failure"] == 0 and ch.counters["failure"] == 3


def test_timeouts_are_network_failures_counted_toward_the_threshold():
    tl, clock, ch = drive([OK, HANG, HANG],
                          hc_config(initial_jitter="0s", timeout="0.5s", interval="1s",
                                    unhealthy_threshold=2))
    assert [t[1] for t in tl] == [SUCCESS, TIMEOUT, TIMEOUT]
    assert labels(tl) == ["healthy", "healthy", "unhealthy"]
    # each timed-out check took `timeout` before the interval started
    assert [t[0] for t in tl] == [0.0, 1.5, 3.0]
    assert ch.probe.aborts >= 2 and ch.counters["network_failure"] == 2


def test_healthy_threshold_consecutive_passes_bring_a_host_back():
    tl, _, _ = drive([OK, BAD_STATUS, OK, REFUSED, OK, OK, OK],
                     hc_config(initial_jitter="0s", healthy_threshold=3))
    assert labels(tl) == ["healthy", "unhealthy", "unhealthy", "unhealthy", "unhealthy",
                          "unhealthy", "healthy"]


def test_degraded_answers_keep_the_host_usable_but_degraded():
    s = HealthState(3, 2, failed=False, pending=False)
    assert s.apply(Result(DEGRADED)) == CHANGED and s.usable and s.label() == "degraded"
    assert s.apply(Result(DEGRADED)) == UNCHANGED
    assert s.apply(OK) == CHANGED and s.label() == "healthy"


def test_a_host_carried_over_healthy_stays_healthy():
    s = HealthState(2, 2, failed=False, pending=False)
    assert s.usable
    assert s.apply(REFUSED) == CHANGE_PENDING and s.usable
    assert s.apply(REFUSED) == CHANGED and not s.usable


# --- timing ---------------------------------------------------------------------------------------

def test_intervals_and_edge_intervals_follow_envoys_code():
    hc = hc_config(initial_jitter="0s", interval="1s", unhealthy_interval="5s",
                   unhealthy_edge_interval="0.5s", healthy_edge_interval="0.25s",
                   unhealthy_threshold=2, healthy_threshold=3)
    tl, clock, _ = drive([OK, OK, REFUSED, REFUSED, REFUSED, OK, OK, OK, OK], hc)
    assert labels(tl) == ["healthy", "healthy", "healthy", "unhealthy", "unhealthy", "unhealthy",
                          "unhealthy", "healthy", "healthy"]
    assert clock.sleeps == [
        0.0,    # explicit initial_jitter 0: first check at once
        1.0,    # pass, host became healthy (changed): interval
        1.0,    # pass, healthy: interval
        0.5,    # failure counted, transition pending: unhealthy_edge_interval
        5.0,    # failure, host now unhealthy: unhealthy_interval
        5.0,    # failure, still unhealthy: unhealthy_interval
        0.25,   # pass counted (1/3), pending: healthy_edge_interval
        0.25,   # pass 2/3, pending
        1.0,    # pass 3/3, healthy again: interval
        1.0,    # pass
    ]


def test_unset_intervals_default_to_interval():
    t = Timing(hc_config(interval="2s"), random.Random(0))
    assert (t.base(True, UNCHANGED), t.base(True, CHANGE_PENDING), t.base(False, UNCHANGED),
            t.base(False, CHANGE_PENDING)) == (2.0, 2.0, 2.0, 2.0)
    t = Timing(hc_config(interval="2s", unhealthy_interval="3s"), random.Random(0))
    assert (t.base(False, UNCHANGED), t.base(False, CHANGE_PENDING)) == (3.0, 3.0)


def test_first_round_is_spread_over_the_interval_unless_initial_jitter_is_written():
    hc = hc_config(interval="2s")
    firsts = [Timing(hc, random.Random(seed), initial_jitter_explicit=False).first_delay()
              for seed in range(300)]
    assert all(0.0 <= d < 2.0 for d in firsts)
    assert min(firsts) < 0.1 and max(firsts) > 1.9
    # the four quarters of the interval all get hosts
    assert {int(d // 0.5) for d in firsts} == {0, 1, 2, 3}
    # written initial_jitter: Envoy's rule
    zero = Timing(hc_config(interval="2s", initial_jitter="0s"), random.Random(1),
                  initial_jitter_explicit=True)
    assert zero.first_delay() == 0.0
    half = [Timing(hc_config(interval="2s", initial_jitter="0.5s"), random.Random(s))
            .first_delay() for s in range(100)]
    assert all(0.001 <= d < 0.5 for d in half) and max(half) > 0.4


def test_the_checker_loop_starts_within_the_interval_by_default():
    tl, clock, _ = drive([OK], hc_config(interval="3s"), seed=7, initial_jitter_explicit=None)
    assert 0.0 <= clock.sleeps[0] < 3.0


def test_interval_jitter_and_jitter_percent_add_up():
    t = Timing(hc_config(interval="1s", interval_jitter="0.2s", interval_jitter_percent=50),
               random.Random(3))
    delays = [t.next_delay(True, UNCHANGED) for _ in range(500)]
    assert all(1.0 <= d < 1.7 for d in delays)
    assert max(delays) > 1.6 and min(delays) < 1.05


# --- probes against real sockets ---------------------------------------------------------------

def http_cfg(**fields) -> dict:
    return hc_config(http_health_check={"path": "/health", **fields})["http_health_check"]


async def _checks(probe, n):
    out = []
    for _ in range(n):
        out.append(await asyncio.wait_for(probe.check(), 2))
    await probe.aclose()
    return out


def test_http_probe_request_reuses_its_connection_and_reads_the_status():
    up = Upstream(name="u0")
    try:
        probe = HttpProbe("127.0.0.1", up.port, http_cfg(
            request_headers_to_add=[{"header": {"key": "x-check", "value": "1"}},
                                    {"header": {"key": "user-agent", "value": "mine"},
                                     "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}],
            request_headers_to_remove=["x-nothing"]))
        results = asyncio.run(_checks(probe, 3))
        assert [r.kind for r in results] == [SUCCESS] * 3
        assert up.connections == 1              # one kept connection for the three checks
        req = up.requests[0]
        assert req["method"] == "GET" and req["path"] == "/health" and req["version"] == "1.1"
        headers = [(k.lower(), v) for k, v in req["headers"]]
        assert ("host", "web") in headers       # the cluster name by default
        assert ("x-check", "1") in headers
        assert ("user-agent", "mine") in headers and ("user-agent", "cyvoy/HC") not in headers

        up.health_status = 503
        probe = HttpProbe("127.0.0.1", up.port, http_cfg())
        (r,) = asyncio.run(_checks(probe, 1))
        assert r.kind == ACTIVE and not r.retriable and "503" in r.reason
        probe = HttpProbe("127.0.0.1", up.port, http_cfg(
            expected_statuses=[{"start": 200, "end": 300}],
            retriable_statuses=[{"start": 503, "end": 504}]))
        (r,) = asyncio.run(_checks(probe, 1))
        assert r.kind == ACTIVE and r.retriable
        up.health_status = 202
        (r,) = asyncio.run(_checks(HttpProbe("127.0.0.1", up.port, http_cfg(
            expected_statuses=[{"start": 200, "end": 300}])), 1))
        assert r.kind == SUCCESS
    finally:
        up.close()


def test_http_probe_user_agent_and_fresh_connections_without_reuse():
    up = Upstream(name="u1")
    try:
        before = up.connections
        probe = HttpProbe("127.0.0.1", up.port, http_cfg(), reuse_connection=False)
        results = asyncio.run(_checks(probe, 3))
        assert [r.kind for r in results] == [SUCCESS] * 3
        assert up.connections - before == 3
        assert ("user-agent", "cyvoy/HC") in [(k.lower(), v) for k, v in up.requests[0]["headers"]]
    finally:
        up.close()


class RawServer:
    """A loopback server answering every connection with `handler(data) -> bytes | None`
    (None: close), in a thread."""

    def __init__(self, handler, close_after_answer: bool = False):
        self.handler = handler
        self.close_after_answer = close_after_answer
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self._stop = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self._stop:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn):
        with conn:
            while True:
                try:
                    data = conn.recv(65536)
                except OSError:
                    return
                if not data:
                    return
                out = self.handler(data)
                if out is None:
                    return
                conn.sendall(out)
                if self.close_after_answer:
                    return

    def close(self):
        self._stop = True
        self.sock.close()


def test_http_probe_immediate_fail_header_and_connection_close():
    answers = iter([
        b"HTTP/1.1 503 X\r\ncontent-length: 0\r\nx-envoy-immediate-health-check-fail: true\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\nok",
        b"HTTP/1.1 200 OK\r\nx-envoy-degraded: 1\r\ncontent-length: 0\r\n\r\n",
    ])
    srv = RawServer(lambda data: next(answers))
    try:
        probe = HttpProbe("127.0.0.1", srv.port, http_cfg(
            retriable_statuses=[{"start": 503, "end": 504}]))
        r1, r2, r3 = asyncio.run(_checks(probe, 3))
        # the header makes a retriable status fail the host at once
        assert r1.kind == ACTIVE and not r1.retriable
        assert r2.kind == SUCCESS
        assert r3.kind == DEGRADED
        assert srv.connections == 2             # "connection: close" forced a new one
    finally:
        srv.close()


def test_http_probe_retries_a_kept_connection_the_host_closed_while_idle():
    # the host answers as if it kept the connection, then closes it: the next check must not
    # count that as a failure, it reconnects
    srv = RawServer(lambda data: b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n",
                    close_after_answer=True)
    try:
        async def checks(probe):
            out = []
            for _ in range(3):
                out.append(await asyncio.wait_for(probe.check(), 2))
                await asyncio.sleep(0.05)      # let the close arrive while idle
            await probe.aclose()
            return out
        results = asyncio.run(checks(HttpProbe("127.0.0.1", srv.port, http_cfg())))
        assert [r.kind for r in results] == [SUCCESS] * 3
        assert srv.connections == 3
    finally:
        srv.close()


def test_http_probe_network_failures():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()                                    # nothing listens there
    (r,) = asyncio.run(_checks(HttpProbe("127.0.0.1", port, http_cfg()), 1))
    assert r.kind == NETWORK and "refused" in r.reason
    srv = RawServer(lambda data: None)           # closes without answering
    try:
        (r,) = asyncio.run(_checks(HttpProbe("127.0.0.1", srv.port, http_cfg()), 1))
        assert r.kind == NETWORK
    finally:
        srv.close()


def test_payload_match_is_envoys_ordered_fuzzy_match():
    assert payload_match([b"ab", b"cd"], b"xxabyycdzz")
    assert payload_match([b"ab", b"cd"], b"abcd")
    assert not payload_match([b"cd", b"ab"], b"abcd")
    assert not payload_match([b"ab", b"ab"], b"ab")
    assert payload_match([], b"")


def test_tcp_probe_send_receive_and_connect_only():
    srv = RawServer(lambda data: b"xx-po" + b"ng-yy" if b"ping" in data else b"nope")
    try:
        tcp = hc_config(tcp_health_check={"send": {"text": "70696e67"},
                                          "receive": [{"text": "706f"}, {"text": "6e67"}]})
        probe = TcpProbe("127.0.0.1", srv.port, tcp["tcp_health_check"])
        results = asyncio.run(_checks(probe, 2))
        assert [r.kind for r in results] == [SUCCESS, SUCCESS]
        assert srv.connections == 1
        connect_only = hc_config(tcp_health_check={})["tcp_health_check"]
        (r,) = asyncio.run(_checks(TcpProbe("127.0.0.1", srv.port, connect_only), 1))
        assert r.kind == SUCCESS
    finally:
        srv.close()
