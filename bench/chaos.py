#!/usr/bin/env python3
"""Chaos run: cyvoy's workers, health checker and upstreams killed, stopped, reloaded under load.

cyvoy (two workers, three upstreams) runs under steady wrk load while its processes and upstreams
are killed, stopped, reloaded and resized, one event per window:

    baseline                      nothing happens
    SIGKILL worker                the slot-0 worker is SIGKILLed (the master respawns it)
    SIGKILL upstream              upstream a is SIGKILLed, started again near the window's end
    SIGSTOP upstream 3 s          upstream b is SIGSTOPped, SIGCONTed 3 s later
    5 x SIGHUP                    five reloads of the master, 0.5 s apart
    SIGKILL health-check process  the master respawns it; workers route on the table meanwhile
    SIGTTIN then SIGTTOU          one worker more, then one less
    recovery                      nothing happens: must be clean

Each window is its own wrk run (`wrk -t1 -c32 --latency --timeout 2s -s bench/wrk_report.lua`)
with the event about 1 s in. Between windows the run waits (at most --settle-timeout s) until
everything is back: the expected worker count, one health-check and one admin process, no worker
still draining, every host healthy in /clusters. At the end it checks that the master never
changed, every process is back, /clusters shows every host healthy and the log has no traceback.
A small client on fresh connections (`Connection: close`, --churn-rate per second) runs all along,
so that new connections keep arriving in the listeners' accept queues. See bench/README.md
("Chaos"). Run as `make chaos` or `.venv/bin/python bench/chaos.py`; bounded to --budget s.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import http.client
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run as bench  # noqa: E402  (bench/run.py: processes, ports, /proc accounting)
import failover as fo  # noqa: E402  (bench/failover.py: Upstream, wrk command/parsing, cyvoy stats)

try:
    import psutil  # a cyvoy dependency: present in the venv `make chaos` uses
except ImportError:  # pragma: no cover
    print("bench/chaos.py needs psutil: run it with the project's venv (.venv/bin/python)", file=sys.stderr)
    sys.exit(2)

REPO, RESULTS = bench.REPO, bench.RESULTS
UPSTREAMS = fo.UPSTREAMS
log = bench.log
ms = fo.ms

# Window labels, in the order they run. The killed worker's window is the one where failures of
# the requests in flight on it are expected; every other window must be clean.
BASELINE, KILL_WORKER, KILL_UPSTREAM, STOP_UPSTREAM = ("baseline", "SIGKILL worker", "SIGKILL upstream",
                                                       "SIGSTOP upstream 3 s")
RELOAD, KILL_HEALTH, RESIZE, RECOVERY = ("5 x SIGHUP", "SIGKILL health-check process",
                                         "SIGTTIN then SIGTTOU", "recovery")


class ChaosError(RuntimeError):
    pass


# --------------------------------------------------------------------------- /proc helpers

def _hexport(addr: str) -> int:
    return int(addr.rsplit(":", 1)[1], 16)


def listen_queues(port: int) -> dict[int, int]:
    """{socket inode: connections waiting in its accept queue} for the LISTEN sockets on `port`
    (/proc/net/tcp: for a listening socket, rx_queue is the accept queue's current length)."""
    out = {}
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            p = line.split()
            if p[3] == "0A" and _hexport(p[1]) == port:
                out[int(p[9])] = int(p[4].split(":")[1], 16)
    return out


def socket_inodes(pid: int) -> set[int]:
    out = set()
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return out
    for fd in fds:
        try:
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if link.startswith("socket:["):
            out.add(int(link[8:-1]))
    return out


def client_conns(pid: int, port: int) -> int:
    """Established downstream connections a worker holds on the proxy port."""
    try:
        return sum(1 for c in psutil.Process(pid).net_connections(kind="tcp")
                   if c.status == psutil.CONN_ESTABLISHED and c.laddr and c.laddr.port == port)
    except psutil.Error:
        return -1


# --------------------------------------------------------------------------- new-connection client

class Churn(threading.Thread):
    """GET / on a fresh connection (`Connection: close`) `rate` times a second, all run long: new
    connections keep arriving in the listeners' accept queues (wrk's 32 keep-alive connections
    are opened once and only reconnect after an error or a `Connection: close`)."""

    def __init__(self, port: int, rate: float):
        super().__init__(daemon=True, name="churn")
        self.port, self.rate = port, rate
        # (monotonic start, monotonic end, "ok" | "non2xx" | error kind)
        self.results: list[tuple[float, float, str]] = []
        self._halt = threading.Event()

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=5)

    def one(self) -> str:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=2) as s:
                s.settimeout(2)
                s.sendall(b"GET / HTTP/1.1\r\nHost: chaos\r\nConnection: close\r\n\r\n")
                data = b""
                while True:
                    b = s.recv(4096)
                    if not b:
                        break
                    data += b
        except ConnectionRefusedError:
            return "refused"
        except ConnectionResetError:
            return "reset"
        except socket.timeout:
            return "timeout"
        except OSError as e:
            return type(e).__name__
        if not data:
            return "closed"
        status = data.split(b" ", 2)[1:2]
        return "ok" if status and status[0].startswith(b"2") else "non2xx"

    def run(self) -> None:
        period = 1.0 / self.rate
        nxt = time.monotonic()
        while not self._halt.is_set():
            t = time.monotonic()
            r = self.one()
            self.results.append((t, time.monotonic(), r))
            nxt += period
            now = time.monotonic()
            if nxt < now - 1.0:
                nxt = now
            self._halt.wait(max(0.0, nxt - now))

    def failures(self, t0: float, t1: float) -> list[dict]:
        """The failed requests started in [t0, t1): kind, start and end (seconds after t0)."""
        return [{"kind": r, "start_s": round(a - t0, 4), "end_s": round(b - t0, 4)}
                for a, b, r in list(self.results) if t0 <= a < t1 and r != "ok"]

    def between(self, t0: float, t1: float) -> dict:
        out: dict[str, int] = {}
        for t, _, r in list(self.results):
            if t0 <= t < t1:
                out[r] = out.get(r, 0) + 1
        return out


def churn_fail(c: dict) -> int:
    return sum(v for k, v in c.items() if k != "ok")


# --------------------------------------------------------------------------- the run

class Chaos:
    def __init__(self, args, tools, py: str, rundir: str, started: list):
        self.args, self.tools, self.py, self.rundir, self.started = args, tools, py, rundir, started
        self.t_start = time.monotonic()
        pa, pb, pc, self.port, self.admin = bench.free_ports(5)
        self.vals = {"UPSTREAM_PORT_A": pa, "UPSTREAM_PORT_B": pb, "UPSTREAM_PORT_C": pc,
                     "PROXY_PORT": self.port, "ADMIN_PORT": self.admin}
        self.ups = {n: fo.Upstream(n, p, tools["nginx"], rundir) for n, p in zip(UPSTREAMS, (pa, pb, pc))}
        self.cyvoy: bench.Managed | None = None
        self.master_pid = 0
        self.health_pid = 0
        self.admin_pid = 0
        self.seen_workers: set[int] = set()   # every pid ever listed as a worker
        self.seen_helpers: set[int] = set()   # every health-check/admin pid identified so far
        self.churn: Churn | None = None
        self.n_windows = 0
        self.kill_t = 0.0   # monotonic time of the worker's SIGKILL

    # ---- budget ---------------------------------------------------------------------------------
    def left(self) -> float:
        return self.args.budget - (time.monotonic() - self.t_start)

    # ---- start ------------------------------------------------------------------------------------
    def start(self) -> None:
        for u in self.ups.values():
            self.started.append(u)
            u.start()
            bench.smoke(u.port)
        conf = bench.render("chaos-cyvoy.yaml", os.path.join(self.rundir, "cyvoy.yaml"), self.vals)
        if self.args.access_log:
            fo.add_access_log(conf, os.path.join(self.rundir, "cyvoy-access.log"))
        self.cmd = [self.py, "-m", "proxy", "-c", conf, "--workers", "2", "--log-level", "info"]
        self.cyvoy = bench.Managed("cyvoy", self.cmd, self.rundir, cwd=REPO)
        self.started.append(self.cyvoy)
        self.master_pid = self.cyvoy.pid
        bench.wait_ready(self.cyvoy, self.port, 20)
        deadline = time.monotonic() + 10   # health checks must pass before the first 200
        while True:
            try:
                bench.smoke(self.port)
                break
            except bench.StartError:
                if time.monotonic() > deadline or not self.cyvoy.alive():
                    raise
                time.sleep(0.1)
        ok, secs, state = self.settle(2)
        if not ok:
            raise ChaosError(f"cyvoy did not settle after start: {state}")

    # ---- admin ------------------------------------------------------------------------------------
    def admin_get(self, path: str, within: float = 3.0) -> str:
        """GET on the admin port; retried for `within` s (the admin process restarts on SIGHUP)."""
        deadline = time.monotonic() + within
        while True:
            c = http.client.HTTPConnection("127.0.0.1", self.admin, timeout=2)
            try:
                c.request("GET", path)
                r = c.getresponse()
                body = r.read().decode()
                if r.status == 200:
                    return body
                err: Exception = ChaosError(f"admin {path}: HTTP {r.status}")
            except (OSError, http.client.HTTPException) as e:
                err = e
            finally:
                c.close()
            if time.monotonic() > deadline:
                raise ChaosError(f"admin {path}: {err!r}")
            time.sleep(0.05)

    def server_info(self) -> dict:
        return json.loads(self.admin_get("/server_info"))["cyvoy"]

    def host_health(self) -> dict[str, str]:
        """{127.0.0.1:PORT: health_flags} from /clusters (Envoy's text format)."""
        out = {}
        for line in self.admin_get("/clusters").splitlines():
            parts = line.split("::")
            if len(parts) == 4 and parts[0] == "upstream" and parts[2] == "health_flags":
                out[parts[1]] = parts[3]
        return out

    def stats(self) -> dict[str, int]:
        try:
            return fo.cyvoy_stats(self.admin)
        except Exception as e:  # noqa: BLE001
            return {"error": repr(e)}

    # ---- processes -----------------------------------------------------------------------------
    def children(self) -> set[int]:
        try:
            return {p.pid for p in psutil.Process(self.master_pid).children()
                    if p.status() != psutil.STATUS_ZOMBIE}
        except psutil.Error:
            return set()

    def state(self) -> dict:
        """The master's children sorted out: workers (as the admin lists them, by slot), the admin
        process, and the rest (the health-check process, and workers still draining)."""
        info = self.server_info()
        workers = [w["pid"] for w in info["workers"]]
        self.seen_workers.update(workers)
        kids = self.children()
        rest = kids - set(workers) - {info["admin_pid"]}
        return {"master_pid": info["master_pid"], "workers": workers, "admin_pid": info["admin_pid"],
                "rest": sorted(rest), "children": sorted(kids)}

    def settle(self, expect_workers: int) -> tuple[bool, float, dict]:
        """Wait until everything is back: `expect_workers` workers, all alive; one more child
        besides them and the admin process (the health-check process: no worker left draining);
        every host healthy. Returns (settled, seconds waited, last state seen)."""
        t0 = time.monotonic()
        deadline = t0 + min(self.args.settle_timeout, max(1.0, self.left() - 15))
        st: dict = {}
        while True:
            try:
                if not self.cyvoy.alive():
                    raise ChaosError(f"the cyvoy master exited (code {self.cyvoy.proc.returncode})")
                st = self.state()
                st["hosts"] = self.host_health()
                ok = (st["master_pid"] == self.master_pid and len(st["workers"]) == expect_workers
                      and set(st["workers"]) <= set(st["children"]) and st["admin_pid"] in st["children"]
                      and len(st["rest"]) == 1 and st["rest"][0] not in self.seen_workers
                      and len(st["hosts"]) == len(self.ups)
                      and all(v == "healthy" for v in st["hosts"].values()))
            except ChaosError as e:
                if "master exited" in str(e):
                    raise
                ok, st = False, {"error": str(e)}
            if ok:
                self.health_pid, self.admin_pid = st["rest"][0], st["admin_pid"]
                self.seen_helpers |= {self.health_pid, self.admin_pid}
                return True, time.monotonic() - t0, st
            if time.monotonic() > deadline:
                return False, time.monotonic() - t0, st
            time.sleep(0.05)

    # ---- events ---------------------------------------------------------------------------------
    def ev_kill_worker(self) -> dict:
        st = self.state()
        victim = st["workers"][0]   # the admin lists workers by slot: this is slot 0's
        conns = client_conns(victim, self.port)
        queues = listen_queues(self.port)
        inode = next(iter(socket_inodes(victim) & set(queues)), None)
        os.kill(victim, signal.SIGKILL)
        t_kill = time.monotonic()
        self.kill_t = t_kill
        # Follow the slot's listening socket (kept open by the master) until a successor is there
        # and the connections that queued up meanwhile have been accepted.
        peak, peak_ms, successor, forked_ms, drained_ms, same_socket = 0, None, None, None, None, None
        known = set(st["children"])
        while time.monotonic() - t_kill < 2.0:
            q = listen_queues(self.port).get(inode, -1) if inode is not None else -1
            now_ms = round(1000 * (time.monotonic() - t_kill))
            if q > peak:
                peak, peak_ms = q, now_ms
            if successor is None:
                new = self.children() - known
                if new:
                    successor, forked_ms = min(new), now_ms
                    same_socket = inode in socket_inodes(successor)
            elif peak > 0 and q == 0:
                drained_ms = now_ms
                break
            time.sleep(0.005)
        return {"pid": victim, "client_connections": conns, "listen_inode": inode,
                "accept_queue_peak": peak, "peak_at_ms": peak_ms, "successor_pid": successor,
                "successor_forked_ms": forked_ms,
                "successor_has_same_socket": same_socket, "queue_drained_ms": drained_ms}

    def ev_kill_upstream(self) -> dict:
        self.ups["a"].kill()
        return {"upstream": "a", "port": self.ups["a"].port}

    def ev_restart_upstream(self) -> dict:
        return {"upstream": "a", "ready_after_s": round(self.ups["a"].start(), 3)}

    def ev_pause(self) -> dict:
        self.ups["b"].pause()
        return {"upstream": "b"}

    def ev_resume(self) -> dict:
        self.ups["b"].resume()
        return {"upstream": "b"}

    def ev_sighup(self) -> dict:
        os.kill(self.master_pid, signal.SIGHUP)
        return {}

    def ev_kill_health(self) -> dict:
        victim = self.health_pid   # identified by the last settle(): no worker was draining then
        if not victim or victim not in self.children():
            raise ChaosError(f"health-check process {victim} not found among the master's children")
        known = self.children()
        os.kill(victim, signal.SIGKILL)
        t_kill = time.monotonic()
        successor, after_ms = None, None
        while time.monotonic() - t_kill < 3.0:
            new = self.children() - known - self.seen_workers
            if new:
                successor, after_ms = min(new), round(1000 * (time.monotonic() - t_kill))
                break
            time.sleep(0.01)
        return {"pid": victim, "successor_pid": successor, "successor_forked_ms": after_ms}

    def ev_ttin(self) -> dict:
        os.kill(self.master_pid, signal.SIGTTIN)
        return {}

    def ev_ttou(self) -> dict:
        st = self.state()
        out: dict = {"workers_before": st["workers"]}
        if len(st["workers"]) == 3:
            last = st["workers"][2]   # slot 2, the one SIGTTOU removes
            queues = listen_queues(self.port)
            inode = next(iter(socket_inodes(last) & set(queues)), None)
            out.update({"removed_pid": last, "removed_client_connections": client_conns(last, self.port),
                        "removed_accept_queue": queues.get(inode, -1) if inode is not None else -1})
        os.kill(self.master_pid, signal.SIGTTOU)
        return out

    # ---- one window -------------------------------------------------------------------------------
    def window(self, name: str, duration: int, script: list[tuple[float, str, object]]) -> dict:
        if self.left() < duration + 20:
            raise ChaosError(f"time budget ({self.args.budget}s) exhausted before window '{name}'")
        before = self.stats()
        snap0 = bench.proc_snapshot()
        self.n_windows += 1
        slug = "".join(ch if ch.isalnum() else "-" for ch in name.lower())
        out_path = os.path.join(self.rundir, f"wrk-{self.n_windows}-{slug}.out")
        events = []
        with open(out_path, "w+") as out:
            t0 = time.monotonic()
            wall0 = _dt.datetime.now().astimezone().isoformat(timespec="milliseconds")
            wrk = subprocess.Popen(fo.wrk_cmd(self.tools, self.args, duration, self.port),
                                   stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
            try:
                for at, what, fn in script:
                    delay = t0 + at - time.monotonic()
                    if delay > 0:
                        time.sleep(delay)
                    if wrk.poll() is not None:
                        raise ChaosError(f"wrk ended early in '{name}' (rc={wrk.returncode})")
                    t = time.monotonic() - t0
                    wall = _dt.datetime.now().astimezone().isoformat(timespec="milliseconds")
                    detail = fn()
                    if fn == self.ev_kill_worker:
                        detail["killed_at_s"] = round(self.kill_t - t0, 4)
                    events.append({"event": what, "at_s": round(t, 3), "wall": wall, **detail})
                try:
                    wrk.wait(timeout=max(0.0, t0 + duration + 20 - time.monotonic()))
                except subprocess.TimeoutExpired as e:
                    raise ChaosError(f"wrk did not finish in '{name}'") from e
            finally:
                if wrk.poll() is None:
                    wrk.kill()
                    wrk.wait()
            t1 = time.monotonic()
            out.seek(0)
            text = out.read()
        res = fo.parse_wrk(text, wrk.returncode, name)
        snap1 = bench.proc_snapshot()
        ours = bench.tree_pids(snap0, os.getpid()) | bench.tree_pids(snap1, os.getpid())
        other = bench.other_cpu(snap0, snap1, ours)
        master_alive = self.cyvoy.alive()
        expect = 2
        settled, secs, st = self.settle(expect) if master_alive else (False, 0.0, {"error": "master exited"})
        after = self.stats()
        view = ({k: v - before.get(k, 0) for k, v in after.items()}
                if "error" not in before and "error" not in after else {})
        churn = self.churn.between(t0, t1) if self.churn else {}
        churn_failures = self.churn.failures(t0, t1) if self.churn else []
        res.update({"window": name, "duration_s": duration, "wall_start": wall0, "events": events,
                    "cyvoy_view": view, "fresh_connections": churn,
                    "fresh_failures": churn_failures, "settled": settled,
                    "settle_s": round(secs, 2), "state_after": st, "master_alive": master_alive,
                    "other_processes_cpu_s": other, "t0": t0 - self.t_start, "t1": t1 - self.t_start})
        log(f"chaos: {name:<29} {res['requests']:>7} requests, non2xx {res['non2xx']}, socket errors "
            f"{res['socket_errors_total']}, p99 {ms(res['p99_us'])}, fresh conns {churn}, "
            + (f"back after {secs:.2f}s" if settled else f"NOT back after {secs:.1f}s: {st}"))
        if not master_alive:
            raise ChaosError(f"the cyvoy master died during '{name}'\n{self.cyvoy.log_tail()}")
        return res

    def plan(self) -> list[tuple[str, int, list]]:
        w = self.args.window
        hups = [(1.0 + 0.5 * i, f"SIGHUP #{i + 1}", self.ev_sighup) for i in range(5)]
        return [
            (BASELINE, self.args.baseline, []),
            (KILL_WORKER, w, [(1.0, "SIGKILL worker (slot 0)", self.ev_kill_worker)]),
            (KILL_UPSTREAM, w, [(1.0, "SIGKILL upstream a", self.ev_kill_upstream),
                                (w - 1.0, "start upstream a", self.ev_restart_upstream)]),
            (STOP_UPSTREAM, w + 1, [(1.0, "SIGSTOP upstream b", self.ev_pause),
                                    (4.0, "SIGCONT upstream b", self.ev_resume)]),
            (RELOAD, w, hups),
            (KILL_HEALTH, w, [(1.0, "SIGKILL health-check process", self.ev_kill_health)]),
            (RESIZE, w, [(1.0, "SIGTTIN", self.ev_ttin), (3.5, "SIGTTOU", self.ev_ttou)]),
            (RECOVERY, self.args.recovery, []),
        ]

    # ---- the end state --------------------------------------------------------------------------
    def final_checks(self) -> list[tuple[str, bool, str]]:
        checks = []
        alive = self.cyvoy.alive()
        try:
            ok, secs, st = self.settle(2) if alive else (False, 0.0, {})
        except ChaosError as e:
            ok, secs, st = False, 0.0, {"error": str(e)}
        master_ok = alive and psutil.pid_exists(self.master_pid) and st.get("master_pid") == self.master_pid
        checks.append(("master pid unchanged and alive", master_ok,
                       f"pid {self.master_pid}, admin reports {st.get('master_pid')}, alive {alive}"))
        workers = st.get("workers", [])
        checks.append(("worker count back to 2",
                       len(workers) == 2 and set(workers) <= set(st.get("children", [])),
                       f"workers {workers}"))
        rest = st.get("rest", [])
        checks.append(("health-check process alive", len(rest) == 1 and psutil.pid_exists(rest[0]),
                       f"pid {rest[0] if len(rest) == 1 else rest}"))
        admin = st.get("admin_pid")
        checks.append(("admin process alive and answering", bool(admin) and admin in st.get("children", []),
                       f"pid {admin}"))
        hosts = st.get("hosts", {})
        checks.append(("/clusters: every host healthy",
                       len(hosts) == len(self.ups) and all(v == "healthy" for v in hosts.values()),
                       ", ".join(f"{k} {v}" for k, v in sorted(hosts.items())) or "no answer"))
        tbs = tracebacks(self.cyvoy.log_path)
        checks.append(("no traceback in the log", not tbs,
                       f"{len(tbs)} traceback(s) in {self.cyvoy.log_path}"
                       + "".join(f"\n            {t}" for t in tbs)))
        self.final_state = st
        return checks


# --------------------------------------------------------------------------- report

def tracebacks(path: str) -> list[str]:
    """One line per traceback in cyvoy's log: when, which process, where it was raised, what."""
    try:
        with open(path, errors="replace") as f:
            lines = f.read().splitlines()
    except OSError:
        return []
    out = []
    for i, line in enumerate(lines):
        if not line.startswith("Traceback"):
            continue
        head = next((ln for ln in reversed(lines[:i]) if ln.startswith("[")), "")
        j = i + 1
        frames = []
        while j < len(lines) and (lines[j].startswith(" ") or not lines[j].strip()):
            if lines[j].lstrip().startswith("File "):
                frames.append(lines[j].strip())
            j += 1
        what = lines[j] if j < len(lines) else "?"
        stamp = head[1:24] if head else "?"
        pid = head.split("][")[1] if head.count("][") >= 1 else "?"
        first = frames[0] if frames else "?"
        out.append(f"{stamp} pid {pid}: {what[:160]} (first frame: {first})")
    return out


def master_log_lines(path: str) -> list[str]:
    """The master's own lines (worker/health/admin deaths, reloads, resizes), the health-check
    process's host transitions and outlier ejections, and every line at ERROR or above."""
    out = []
    try:
        with open(path, errors="replace") as f:
            for line in f:
                if ("[cyvoy.master]" in line or "[ERROR]" in line or "[CRITICAL]" in line
                        or "[cyvoy.health]" in line):
                    if "open-file limit" not in line:
                        out.append(line.rstrip())
    except OSError:
        pass
    return out


def verdicts(windows: list[dict], checks, connections: int) -> list[tuple[str, bool, str]]:
    out = []
    by = {w["window"]: w for w in windows}
    kw = by.get(KILL_WORKER)
    if kw:
        ev = next((e for e in kw["events"] if "client_connections" in e), {})
        held = ev.get("client_connections", -1)
        killed_at = ev.get("killed_at_s")
        est = connections // 2
        se = kw["socket_errors"]
        # A fresh-connection request that was under way when the worker died may have been on it
        # (in flight, like wrk's); one started after the kill that fails was lost elsewhere.
        ff = kw.get("fresh_failures", [])
        during = [f for f in ff if killed_at is not None and f["start_s"] <= killed_at <= f["end_s"]]
        fails = kw["non2xx"] + kw["socket_errors_total"] + len(during)
        out.append((f"{KILL_WORKER}: failures only on the killed worker's connections",
                    kw["non2xx"] == 0 and se["connect"] == 0 and se["timeout"] == 0
                    and 0 <= fails <= max(held, 0) + len(during),
                    f"{fails} failed (non2xx {kw['non2xx']}, wrk socket errors {kw['socket_errors_total']}: "
                    f"connect {se['connect']}, read {se['read']}, write {se['write']}, timeout {se['timeout']}; "
                    f"fresh-connection requests under way at the kill {len(during)}); in flight on it at the "
                    f"kill: at most its {held} client connections (measured just before; estimate "
                    f"{connections}/2 = {est}) + {len(during)} under way; no connect error = no queued "
                    "connection lost"))
    for w in windows:
        if w["window"] == KILL_WORKER:
            continue
        out.append((f"{w['window']}: 0 non-2xx, 0 socket errors",
                    w["non2xx"] == 0 and w["socket_errors_total"] == 0,
                    f"non2xx {w['non2xx']}, socket errors {w['socket_errors_total']}"))
    fresh = {}
    for w in windows:
        n = churn_fail(w["fresh_connections"])
        if w["window"] == KILL_WORKER:   # those under way at the kill are counted above
            ev = next((e for e in w["events"] if "killed_at_s" in e), {})
            k = ev.get("killed_at_s")
            n -= sum(1 for f in w.get("fresh_failures", [])
                     if k is not None and f["start_s"] <= k <= f["end_s"])
        fresh[w["window"]] = n
    bad = {k: v for k, v in fresh.items() if v}
    out.append(("fresh-connection client: no failure (but under way at the worker's kill)", not bad,
                "failures: " + (", ".join(f"{k} {v}" for k, v in bad.items()) if bad else "none")))
    unsettled = [w["window"] for w in windows if not w["settled"]]
    out.append(("every process back and every host healthy after each window", not unsettled,
                "not back after: " + ", ".join(unsettled) if unsettled else "all back"))
    out.extend(checks)
    return out


def top_others(before: dict, after: dict, n: int = 3) -> list[str]:
    """The other processes (not this run's) that used the most CPU between two snapshots."""
    ours = bench.tree_pids(before, os.getpid()) | bench.tree_pids(after, os.getpid())
    used = []
    for pid, st in after.items():
        if pid in ours:
            continue
        b = before.get(pid)
        ticks = st[1] - (b[1] if b is not None and b[2] == st[2] else 0)
        if ticks > 0:
            used.append((ticks, pid))
    out = []
    for ticks, pid in sorted(used, reverse=True)[:n]:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            cmd = "?"
        out.append(f"{ticks / bench.CLK_TCK:.1f}s pid {pid} {cmd[:90]}")
    return out


def print_report(windows: list[dict], checks, meta, args) -> bool:
    out = ["", f"cyvoy chaos run — {meta['hostname']}, {meta['cpus']} CPUs, kernel {meta['kernel']}; cyvoy "
           f"--workers 2, 3 upstreams; wrk -t{args.threads} -c{args.connections} --timeout 2s per window, "
           f"event ~1 s in; fresh-connection client {args.churn_rate:g}/s",
           f"net.ipv4.tcp_migrate_req = {meta['tcp_migrate_req']} (1 would move connections queued on a "
           "closed listener to a sibling socket; only SIGTTOU closes one)", ""]
    hdr = (f"{'event':<29} {'s':>3} {'requests':>9} {'non-2xx':>7} {'sock err':>8} {'c/r/w/t':>11} "
           f"{'p50':>8} {'p99':>9} {'max':>9} {'fresh ok/fail':>13} {'back after':>10}")
    out += [hdr, "-" * len(hdr)]
    for w in windows:
        se = w["socket_errors"]
        fc = w["fresh_connections"]
        out.append(f"{w['window']:<29} {w['duration_s']:>3} {w['requests']:>9} {w['non2xx']:>7} "
                   f"{w['socket_errors_total']:>8} {se['connect']:>3}/{se['read']}/{se['write']}/{se['timeout']:<3} "
                   f"{ms(w['p50_us']):>8} {ms(w['p99_us']):>9} {ms(w['lat_max_us']):>9} "
                   f"{fc.get('ok', 0):>8}/{churn_fail(fc):<4} "
                   + (f"{w['settle_s']:>9.2f}s" if w["settled"] else "  NOT BACK"))
    out.append("")
    out.append("socket errors: wrk's connect/read/write/timeout (timeout = no answer within 2 s); "
               "fresh = the Connection: close client's requests")
    out.append("events as played (seconds after the window's wrk started):")
    for w in windows:
        for e in w["events"]:
            extra = {k: v for k, v in e.items() if k not in ("event", "at_s", "wall")}
            out.append(f"  {w['window']:<29} {e['at_s']:5.2f}s {e['event']}"
                       + (f"  {json.dumps(extra)}" if extra else ""))
    out.append("cyvoy's own view per window (/stats deltas):")
    for w in windows:
        out.append(f"  {w['window']:<29} {fo.own_view_line('cyvoy', w['cyvoy_view'])}")
    for w in windows:
        for f in w.get("fresh_failures", []):
            out.append(f"fresh-connection failure in '{w['window']}': {f['kind']}, request from "
                       f"{f['start_s']:.4f} s to {f['end_s']:.4f} s after the window's start")
    load = {w["window"]: 100 * w["other_processes_cpu_s"] / max(w["seconds"], 1e-9) for w in windows}
    noisy = {k: v for k, v in load.items() if v > 10}
    out.append("sanity: CPU used by other processes on the machine: max "
               f"{max(load.values()):.0f}% of one CPU")
    if noisy:
        out.append("WARNING: other load on the machine during: "
                   + ", ".join(f"{k} ({v:.0f}%)" for k, v in noisy.items())
                   + "; p99 figures are skewed")
        if meta.get("top_other_processes"):
            out.append("  busiest other processes over the run (CPU s, incl. reaped children): "
                       + "; ".join(meta["top_other_processes"]))
    out.append("")
    out.append("cyvoy log (the master's lines, health/outlier transitions, every ERROR):")
    out += [f"  {ln}" for ln in meta["master_log"]]
    out.append("")
    out.append("target:")
    v = verdicts(windows, checks, args.connections)
    for name, ok, detail in v:
        out.append(f"  {'met   ' if ok else 'MISSED'}  {name}: {detail}")
    print("\n".join(out), flush=True)
    return all(ok for _, ok, _ in v)


# --------------------------------------------------------------------------- main

def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--window", type=int, default=6, help="seconds of each event window (default 6; "
                    "the SIGSTOP window is one longer)")
    ap.add_argument("--baseline", type=int, default=5, help="seconds of the baseline window (default 5)")
    ap.add_argument("--recovery", type=int, default=5, help="seconds of the recovery window (default 5)")
    ap.add_argument("--connections", type=int, default=32, help="wrk -c (default 32)")
    ap.add_argument("--threads", type=int, default=1, help="wrk -t (default 1)")
    ap.add_argument("--churn-rate", type=float, default=50,
                    help="requests/s of the fresh-connection client (default 50; 0: off)")
    ap.add_argument("--settle-timeout", type=float, default=10,
                    help="how long to wait after a window for every process and host to be back (default 10)")
    ap.add_argument("--budget", type=float, default=180, help="the whole run's time limit in s (default 180)")
    ap.add_argument("--access-log", action="store_true",
                    help="diagnosis: a JSON access log for cyvoy in the temp dir (implies --keep)")
    ap.add_argument("--python", default=None, help="interpreter for cyvoy (default: REPO/.venv/bin/python)")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (configs, logs, wrk output)")
    ap.add_argument("--no-json", action="store_true", help="do not write bench/results/chaos-*.json")
    ap.add_argument("--json", help="write the results JSON here instead of bench/results/")
    a = ap.parse_args(argv)
    if a.window < 6 or a.baseline < 1 or a.recovery < 1 or a.connections < 2 or a.threads < 1:
        ap.error("--window must be >= 6 (events at 1-5 s), --baseline/--recovery/--threads >= 1, "
                 "--connections >= 2")
    if a.access_log:
        a.keep = True
    return a


def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    tools = bench.ensure_tools()
    py = args.python or (os.path.join(REPO, ".venv", "bin", "python")
                         if os.path.exists(os.path.join(REPO, ".venv", "bin", "python")) else sys.executable)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, bench._sigterm)
    signal.signal(signal.SIGHUP, bench._sigterm)
    started: list = []
    rundir = tempfile.mkdtemp(prefix="cyvoy-chaos-")
    try:
        with open("/proc/sys/net/ipv4/tcp_migrate_req") as f:
            migrate = f.read().strip()
    except OSError:
        migrate = "unavailable (kernel < 5.14)"
    meta = {
        "date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "hostname": socket.gethostname(), "cpus": os.cpu_count() or 1, "kernel": platform.release(),
        "python_for_cyvoy": py, "versions": bench.tool_versions(tools), "tcp_migrate_req": migrate,
        "loadavg_before": open("/proc/loadavg").read().split()[:3],
    }
    chaos = None
    windows: list[dict] = []
    rc = 1
    log(f"chaos: about 50 s (at most {args.budget:.0f} s); temp dir {rundir}")
    try:
        snap_start = bench.proc_snapshot()
        chaos = Chaos(args, tools, py, rundir, started)
        chaos.start()
        meta.update({"command": chaos.cmd, "ports": chaos.vals, "master_pid": chaos.master_pid})
        if args.churn_rate > 0:
            chaos.churn = Churn(chaos.port, args.churn_rate)
            chaos.churn.start()
        fo.wrk_fixed(tools, args, 1, chaos.port, rundir, "warmup")
        for name, duration, script in chaos.plan():
            windows.append(chaos.window(name, duration, script))
        checks = chaos.final_checks()
        if chaos.churn:
            chaos.churn.stop()
            between = chaos.churn.between(0, float("inf"))
            meta["fresh_connections_total"] = between
        meta["elapsed_s"] = round(time.monotonic() - chaos.t_start, 1)
        meta["master_log"] = master_log_lines(chaos.cyvoy.log_path)
        meta["loadavg_after"] = open("/proc/loadavg").read().split()[:3]
        meta["top_other_processes"] = top_others(snap_start, bench.proc_snapshot())
        met = print_report(windows, checks, meta, args)
        if not args.no_json:
            path = args.json or os.path.join(
                RESULTS, f"chaos-{_dt.datetime.now().strftime('%Y-%m-%d_%H%M%S')}-{meta['hostname']}.json")
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
            with open(path, "w") as f:
                json.dump({"meta": meta, "args": vars(args), "windows": windows,
                           "final_checks": [{"check": n, "ok": ok, "detail": d} for n, ok, d in checks],
                           "final_state": getattr(chaos, "final_state", {})}, f, indent=2, default=str)
            print(f"\nresults: {os.path.relpath(path, REPO) if path.startswith(REPO) else path} "
                  f"({meta['elapsed_s']}s)", flush=True)
        rc = 0 if met else 1
        return rc
    except KeyboardInterrupt:
        log("chaos: interrupted; stopping everything")
        rc = 130
        return rc
    except (ChaosError, RuntimeError, bench.StartError) as e:
        log(f"chaos: error: {e}")
        if chaos is not None and chaos.cyvoy is not None:
            log(f"chaos: cyvoy log tail:\n{chaos.cyvoy.log_tail(30)}")
            if windows:   # what was measured before the error still counts
                meta["master_log"] = master_log_lines(chaos.cyvoy.log_path)
                print_report(windows, [("the run completed", False, str(e).splitlines()[0])], meta, args)
        return 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not skip the cleanup
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if chaos is not None and chaos.churn is not None:
            chaos.churn.stop()
        fo.stop_all(started)
        if args.keep or rc not in (0, 130):
            log(f"chaos: kept {rundir}")
        else:
            shutil.rmtree(rundir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
