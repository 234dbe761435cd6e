"""Master and workers: respawn, graceful stop, reload, worker count (issue: core data plane, item 4)."""
from __future__ import annotations

import http.client
import os
import signal
import subprocess
import sys
import threading
import time

import psutil

from tests.harness import ROOT, simple_config, wait_for


def get(port, path="/", timeout=10):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    c.request("GET", path)
    r = c.getresponse()
    body = r.read()
    c.close()
    return r.status, body



class Client(threading.Thread):
    """Sends requests until stopped, on fresh and kept-alive connections, and counts failures."""

    def __init__(self, port, keep_alive: bool):
        super().__init__(daemon=True)
        self.port = port
        self.keep_alive = keep_alive
        self.ok = 0
        self.failures: list[str] = []
        self.stop = threading.Event()

    def run(self):
        conn = None
        while not self.stop.is_set():
            try:
                if conn is None:
                    conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
                conn.request("GET", "/", headers={} if self.keep_alive else {"Connection": "close"})
                r = conn.getresponse()
                r.read()
                if r.status != 200:
                    self.failures.append(f"status {r.status}")
                else:
                    self.ok += 1
                if not self.keep_alive or r.getheader("connection", "").lower() == "close":
                    conn.close()
                    conn = None
            except Exception as e:   # noqa: BLE001 - every failure is what we count
                self.failures.append(repr(e))
                if conn is not None:
                    conn.close()
                conn = None
        if conn is not None:
            conn.close()


def test_pid_file_names_the_master(upstreams, proxy):
    (up,) = upstreams(1)
    p = proxy(simple_config([up.port]), workers=1)
    assert int(p.pid_file.read_text()) == p.proc.pid


def test_workers_option_sets_the_number_of_worker_processes(upstreams, proxy):
    (up,) = upstreams(1)
    p = proxy(simple_config([up.port]), workers=3)
    assert len(p.workers()) == 3


def test_killed_worker_is_respawned_and_service_continues(upstreams, proxy):
    (up,) = upstreams(1)
    p = proxy(simple_config([up.port]), workers=2)
    before = {w.pid for w in p.workers()}
    victim = sorted(before)[0]
    os.kill(victim, signal.SIGKILL)
    assert wait_for(lambda: len({w.pid for w in p.workers()} - before) == 1 and len(p.workers()) == 2)
    assert "died: killed by SIGKILL" in p.log()
    for _ in range(10):
        assert get(p.port)[0] == 200


def test_connections_queued_while_a_worker_is_dead_are_served_after_respawn(upstreams, proxy):
    # The master keeps the slot's listening socket: a connection that lands in a dead worker's
    # accept queue waits for the respawned worker instead of being reset.
    (up,) = upstreams(1)
    p = proxy(simple_config([up.port]), workers=1)
    (w,) = p.workers()
    os.kill(w.pid, signal.SIGSTOP)   # the worker cannot accept: connections queue
    results = []
    threads = [threading.Thread(target=lambda: results.append(get(p.port)[0])) for _ in range(5)]
    for t in threads:
        t.start()
    time.sleep(0.3)
    os.kill(w.pid, signal.SIGKILL)
    os.kill(w.pid, signal.SIGCONT)
    for t in threads:
        t.join(15)
    assert results == [200] * 5


def test_sigterm_lets_in_flight_request_finish_then_exits_zero(upstreams, proxy):
    (up,) = upstreams(1)
    p = proxy(simple_config([up.port]), workers=1, drain_time_s=10)
    result = {}
    t = threading.Thread(target=lambda: result.update(r=get(p.port, "/delay/1.5")))
    t.start()
    assert wait_for(lambda: len(up.requests) == 1)
    p.signal(signal.SIGTERM)
    t.join(10)
    assert result["r"] == (200, b"delayed 1.5")
    assert p.proc.wait(10) == 0


def test_sigterm_stops_accepting_new_connections(upstreams, proxy):
    (up,) = upstreams(1)
    p = proxy(simple_config([up.port]), workers=1, drain_time_s=10)
    t = threading.Thread(target=lambda: get(p.port, "/delay/1"))
    t.start()
    assert wait_for(lambda: len(up.requests) == 1)
    p.signal(signal.SIGTERM)
    p.wait_log("graceful stop")
    time.sleep(0.2)
    import socket
    try:
        s = socket.create_connection(("127.0.0.1", p.port), timeout=1)
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        data = s.recv(100)
        s.close()
        accepted = bool(data)
    except OSError:
        accepted = False
    t.join(10)
    assert not accepted


def test_drain_time_bounds_a_graceful_stop(upstreams, proxy):
    (up,) = upstreams(1)
    p = proxy(simple_config([up.port]), workers=1, drain_time_s=1)
    def hang():
        try:
            get(p.port, "/hang", timeout=10)
        except OSError:
            pass   # the proxy gives up on it when the drain time is over: that is the point
    threading.Thread(target=hang, daemon=True).start()
    assert wait_for(lambda: len(up.requests) == 1)
    t0 = time.monotonic()
    p.signal(signal.SIGTERM)
    assert p.proc.wait(10) == 0
    assert time.monotonic() - t0 < 5


def test_reload_under_load_fails_no_request(upstreams, proxy):
    a, b = upstreams(2)
    p = proxy(simple_config([a.port]), workers=2)
    clients = [Client(p.port, keep_alive=True), Client(p.port, keep_alive=True),
               Client(p.port, keep_alive=False), Client(p.port, keep_alive=False)]
    for c in clients:
        c.start()
    time.sleep(0.5)
    p.reload(simple_config([b.port], port=p.port))
    time.sleep(0.5)
    p.reload(simple_config([a.port, b.port], port=p.port))
    time.sleep(0.5)
    p.reload()
    time.sleep(0.5)
    for c in clients:
        c.stop.set()
    for c in clients:
        c.join(10)
    failures = [(c.keep_alive, f) for c in clients for f in c.failures]
    assert failures == []
    assert sum(c.ok for c in clients) > 100
    # the last generation serves both hosts
    bodies = {get(p.port)[1] for _ in range(4)}
    assert bodies == {b"ok from up0", b"ok from up1"}


def test_reload_with_invalid_config_keeps_serving_and_logs_the_path(upstreams, proxy):
    (up,) = upstreams(1)
    p = proxy(simple_config([up.port]), workers=1)
    bad = simple_config([up.port], port=p.port)
    bad["static_resources"]["clusters"][0]["lb_polcy"] = "ROUND_ROBIN"
    p.write_config(bad)
    p.signal(signal.SIGHUP)
    p.wait_log("reload refused")
    assert "static_resources.clusters[0].lb_polcy" in p.log()
    assert get(p.port) == (200, b"ok from up0")


def test_sigttin_adds_and_sigttou_removes_a_worker(upstreams, proxy):
    (up,) = upstreams(1)
    p = proxy(simple_config([up.port]), workers=2)
    p.signal(signal.SIGTTIN)
    assert wait_for(lambda: len(p.workers()) == 3)
    p.signal(signal.SIGTTOU)
    assert wait_for(lambda: len(p.workers()) == 2)
    p.signal(signal.SIGTTOU)   # one at a time: the kernel merges a signal that is already pending
    assert wait_for(lambda: len(p.workers()) == 1)
    assert get(p.port)[0] == 200


def test_invalid_config_at_start_exits_1_naming_the_field(tmp_path):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("static_resources:\n  clusters:\n  - name: a\n    lb_polcy: ROUND_ROBIN\n")
    r = subprocess.run([sys.executable, "-m", "proxy", "-c", str(cfg)], capture_output=True, text=True,
                       cwd=str(ROOT), timeout=30)
    assert r.returncode == 1
    assert "static_resources.clusters[0].lb_polcy: unknown field; did you mean 'lb_policy'?" in r.stderr


def test_validate_mode_exits_0_for_a_good_config(tmp_path):
    import yaml
    cfg = tmp_path / "good.yaml"
    cfg.write_text(yaml.safe_dump(simple_config([9])))
    r = subprocess.run([sys.executable, "-m", "proxy", "--mode", "validate", "-c", str(cfg)],
                       capture_output=True, text=True, cwd=str(ROOT), timeout=30)
    assert r.returncode == 0, r.stderr


def test_worker_crash_loop_backs_off(upstreams, proxy):
    # A worker that dies right after start is respawned with growing delays, not in a tight loop.
    (up,) = upstreams(1)
    p = proxy(simple_config([up.port]), workers=1)
    kills = 0
    t0 = time.monotonic()
    while time.monotonic() - t0 < 2.5:
        for w in p.workers():
            try:
                w.kill()
                kills += 1
            except psutil.NoSuchProcess:
                pass
        time.sleep(0.02)
    assert p.proc.poll() is None
    assert kills < 15
    assert wait_for(lambda: len(p.workers()) == 1, timeout=15)
