#!/usr/bin/env python3
"""Failover benchmark: cyvoy vs nginx vs HAProxy while upstreams die, come back and stall.

Each proxy in turn gets three fresh upstreams (a, b, c: one single-process nginx each, so that one
can be SIGKILLed, SIGSTOPped and started again on its port) and one worker. wrk drives it at a
fixed connection count: a short steady-state run first, then a 20 s run during which the same
event script is played for every proxy:

    t=5s   SIGKILL upstream a          t=8s   SIGSTOP upstream b
    t=12s  start upstream a again      t=10s  SIGCONT upstream b

Reported per proxy: requests, non-2xx responses, socket errors, and p99 of the steady run and of
the event run (exact, from bench/wrk_report.lua). See bench/README.md ("Failover"). Stdlib only;
run as `make bench-failover` or `python bench/failover.py`.
"""
from __future__ import annotations

import argparse
import csv
import datetime as _dt
import http.client
import io
import json
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run as bench  # noqa: E402  (bench/run.py: process, port, /proc and wrk helpers)

REPO, RESULTS, LUA = bench.REPO, bench.RESULTS, bench.LUA
PROXIES = ("nginx", "haproxy", "cyvoy")
UPSTREAMS = ("a", "b", "c")
log = bench.log


# --------------------------------------------------------------------------- upstreams

class Upstream:
    """One single-process nginx on a fixed port; can be killed, paused, resumed and restarted."""

    def __init__(self, name: str, port: int, nginx: str, rundir: str):
        self.name, self.port, self.nginx, self.rundir = name, port, nginx, rundir
        self.conf = bench.render("failover-upstream.conf", os.path.join(rundir, f"upstream-{name}.conf"),
                                 {"RUNDIR": rundir, "NAME": name, "PORT": port})
        self.proc: bench.Managed | None = None
        self.generation = 0
        self.paused = False
        self.old: list[bench.Managed] = []

    def start(self, timeout: float = 10.0) -> float:
        """Start (or start again) and wait until the port accepts; returns the seconds it took."""
        self.generation += 1
        t0 = time.monotonic()
        self.proc = bench.Managed(f"upstream-{self.name}-{self.generation}",
                                  [self.nginx, "-p", self.rundir, "-e",
                                   os.path.join(self.rundir, f"upstream-{self.name}.error.log"),
                                   "-c", self.conf], self.rundir)
        bench.wait_ready(self.proc, self.port, timeout)
        return time.monotonic() - t0

    def kill(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.proc.wait()
        self.old.append(self.proc)
        self.proc = None

    def pause(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        if self.proc is not None and self.paused:
            os.kill(self.proc.pid, signal.SIGCONT)
        self.paused = False

    def stop(self) -> None:
        # A stopped process would sit out SIGTERM's grace period: continue it first.
        if self.paused and self.proc is not None and self.proc.alive():
            try:
                os.kill(self.proc.pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
        self.paused = False
        if self.proc is not None:
            self.proc.stop()
        for m in self.old:
            m._log.close()  # killed and reaped already; its pid may be reused, so it is not signalled
        self.old.clear()


# --------------------------------------------------------------------------- wrk

def wrk_cmd(tools, args, duration: int, port: int) -> list[str]:
    return [tools["wrk"], f"-t{args.threads}", f"-c{args.connections}", f"-d{duration}s",
            "--latency", "--timeout", "2s", "-s", LUA, f"http://127.0.0.1:{port}/"]


def parse_wrk(out: str, rc: int, tag: str) -> dict:
    line = next((ln for ln in out.splitlines() if ln.startswith("BENCH_RESULT ")), None)
    if rc != 0 or line is None:
        raise RuntimeError(f"wrk failed ({tag}, rc={rc}): {out[-500:]}")
    w = json.loads(line[len("BENCH_RESULT "):])
    secs = w["duration_us"] / 1e6
    errs = {k: w[k] for k in ("connect", "read", "write", "timeout")}
    return {
        "requests": w["requests"], "seconds": secs, "rps": w["requests"] / secs if secs else 0.0,
        "non2xx": w["status"],  # wrk: responses with status > 399
        "socket_errors": errs, "socket_errors_total": sum(errs.values()),
        "p50_us": w["p50"], "p90_us": w["p90"], "p99_us": w["p99"], "p999_us": w["p999"],
        "lat_mean_us": w["lat_mean"], "lat_max_us": w["lat_max"],
    }


def wrk_fixed(tools, args, duration: int, port: int, rundir: str, tag: str) -> dict:
    cmd = wrk_cmd(tools, args, duration, port)
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 20)
    except subprocess.TimeoutExpired as e:
        raise RuntimeError(f"wrk did not finish within {duration + 20}s ({tag})") from e
    with open(os.path.join(rundir, f"wrk-{tag}.out"), "w") as f:
        f.write(r.stdout + r.stderr)
    return parse_wrk(r.stdout, r.returncode, tag)


# --------------------------------------------------------------------------- event script

def event_script(args) -> list[tuple[float, str, str]]:
    ev = []
    if not args.no_kill:
        ev += [(args.kill_at, "kill", "a"), (args.restart_at, "restart", "a")]
    if not args.no_pause:
        ev += [(args.pause_at, "pause", "b"), (args.pause_at + args.pause_for, "resume", "b")]
    return sorted(ev)


def event_run(tools, args, port: int, ups: dict[str, Upstream], rundir: str, tag: str):
    """wrk for args.duration seconds while the event script plays; returns (wrk figures, events
    with the actual times they happened, relative to wrk's start)."""
    out_path = os.path.join(rundir, f"wrk-{tag}.out")
    done = []
    with open(out_path, "w+") as out:
        t0 = time.monotonic()
        wrk = subprocess.Popen(wrk_cmd(tools, args, args.duration, port), stdin=subprocess.DEVNULL,
                               stdout=out, stderr=subprocess.STDOUT)
        try:
            for at, what, name in event_script(args):
                delay = t0 + at - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                if wrk.poll() is not None:
                    raise RuntimeError(f"wrk ended early ({tag}, rc={wrk.returncode})")
                u = ups[name]
                t = time.monotonic() - t0
                extra = {}
                if what == "kill":
                    u.kill()
                elif what == "restart":
                    extra["ready_after_s"] = round(u.start(), 3)
                elif what == "pause":
                    u.pause()
                elif what == "resume":
                    u.resume()
                done.append({"event": what, "upstream": name, "planned_s": at, "at_s": round(t, 3),
                             "wall": _dt.datetime.now().astimezone().isoformat(timespec="milliseconds"), **extra})
            try:
                wrk.wait(timeout=max(0.0, t0 + args.duration + 20 - time.monotonic()))
            except subprocess.TimeoutExpired as e:
                raise RuntimeError(f"wrk did not finish within {args.duration + 20}s ({tag})") from e
        finally:
            if wrk.poll() is None:
                wrk.kill()
                wrk.wait()
        out.seek(0)
        text = out.read()
    return parse_wrk(text, wrk.returncode, tag), done


# --------------------------------------------------------------------------- each proxy's own view

def cyvoy_stats(admin_port: int) -> dict[str, int]:
    c = http.client.HTTPConnection("127.0.0.1", admin_port, timeout=5)
    try:
        c.request("GET", "/stats?usedonly")
        body = c.getresponse().read().decode()
    finally:
        c.close()
    out = {}
    for line in body.splitlines():
        name, _, val = line.partition(": ")
        if (name.startswith("cluster.upstream.") or name.startswith("http.failover.")) and val.strip().isdigit():
            out[name] = int(val)
    return out


def haproxy_stats(sock_path: str) -> dict[str, dict[str, str]]:
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(5)
    try:
        s.connect(sock_path)
        s.sendall(b"show stat\n")
        chunks = []
        while True:
            b = s.recv(65536)
            if not b:
                break
            chunks.append(b)
    finally:
        s.close()
    text = b"".join(chunks).decode().lstrip("# ")
    keep = ("stot", "econ", "eresp", "wretr", "wredis", "hrsp_2xx", "hrsp_5xx", "chkfail", "chkdown",
            "status", "cli_abrt", "srv_abrt")
    out = {}
    for row in csv.DictReader(io.StringIO(text)):
        if row.get("pxname") == "upstream":
            out[row["svname"]] = {k: row.get(k, "") for k in keep}
    return out


NGINX_PATTERNS = {
    "connect_failed": r"connect\(\) failed",
    "timed_out": r"upstream timed out",
    "closed_prematurely": r"upstream prematurely closed",
    "recv_failed": r"recv\(\) failed",
    "no_live_upstreams": r"no live upstreams",
    "disabled": r"upstream server temporarily disabled",
}


def nginx_stats(error_log: str) -> dict[str, int]:
    try:
        with open(error_log, errors="replace") as f:
            text = f.read()
    except OSError:
        return {}
    return {k: len(re.findall(p, text)) for k, p in NGINX_PATTERNS.items()}


def own_view_line(key: str, st: dict) -> str:
    if not st:
        return "n/a"
    if key == "cyvoy":
        g = lambda n: st.get(f"cluster.upstream.{n}", 0)  # noqa: E731
        return (f"retries {g('upstream_rq_retry')} (ok {g('upstream_rq_retry_success')}, limit "
                f"{g('upstream_rq_retry_limit_exceeded')}, overflow {g('upstream_rq_retry_overflow')}), "
                f"per-try timeouts {g('upstream_rq_per_try_timeout')}, connect fails "
                f"{g('upstream_cx_connect_fail')}, resets {g('upstream_rq_rx_reset')}, ejections "
                f"{g('outlier_detection.ejections_enforced_total')}, hc failures {g('health_check.failure')}, "
                f"downstream 5xx {st.get('http.failover.downstream_rq_5xx', 0)}")
    if key == "haproxy":
        be = st.get("BACKEND", {})
        downs = ", ".join(f"{n} {v.get('chkdown', '?')}" for n, v in st.items() if n in UPSTREAMS)
        return (f"retries {be.get('wretr', '?')}, redispatches {be.get('wredis', '?')}, connect errors "
                f"{be.get('econ', '?')}, response errors {be.get('eresp', '?')}, 5xx sent "
                f"{be.get('hrsp_5xx', '?')}, server down transitions: {downs}")
    return ("error log: " + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in st.items()))


# --------------------------------------------------------------------------- one proxy

def add_access_log(conf_path: str, log_path: str) -> None:
    """Diagnosis only (--cyvoy-access-log): a JSON access log on cyvoy's HTTP connection manager."""
    with open(conf_path) as f:
        text = f.read()
    fields = {"start": "%START_TIME%", "code": "%RESPONSE_CODE%", "flags": "%RESPONSE_FLAGS%",
              "host": "%UPSTREAM_HOST%", "ms": "%DURATION%",
              "details": "%RESPONSE_CODE_DETAILS%"}
    block = ("          access_log:\n"
             "          - name: envoy.access_loggers.file\n"
             "            typed_config:\n"
             '              "@type": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog\n'
             f"              path: {log_path}\n"
             f"              log_format: {{ json_format: {json.dumps(fields)} }}\n")
    anchor = "          stat_prefix: failover\n"
    if anchor not in text:
        raise RuntimeError("cannot place the access log in the cyvoy config")
    with open(conf_path, "w") as f:
        f.write(text.replace(anchor, anchor + block, 1))


def envoy_defaults(conf_path: str) -> None:
    """Diagnosis only (--cyvoy-envoy-defaults): drop the non-default block (panic threshold 0,
    max_retries 1024) and eject at most one host (34%), as with Envoy's defaults for a 3-host
    cluster (healthy_panic_threshold 50%, max_retries 3, and cyvoy's always-one ejection)."""
    with open(conf_path) as f:
        text = f.read()
    new = re.sub(r"\n *# BEGIN non-default.*?# END non-default\n", "\n", text, flags=re.S)
    new = new.replace("max_ejection_percent: 67", "max_ejection_percent: 34")
    if new == text:
        raise RuntimeError("no non-default block in the cyvoy config")
    with open(conf_path, "w") as f:
        f.write(new)


def run_proxy(key: str, tools, args, py: str, rundir_root: str, started: list) -> dict:
    rundir = os.path.join(rundir_root, key)
    os.makedirs(rundir)
    pa, pb, pc, pport, admin = bench.free_ports(5)
    vals = {"RUNDIR": rundir, "UPSTREAM_PORT_A": pa, "UPSTREAM_PORT_B": pb, "UPSTREAM_PORT_C": pc,
            "PROXY_PORT": pport, "ADMIN_PORT": admin}
    ups = {n: Upstream(n, p, tools["nginx"], rundir) for n, p in zip(UPSTREAMS, (pa, pb, pc))}
    started.extend(ups.values())
    for u in ups.values():
        u.start()
        bench.smoke(u.port)

    if key == "nginx":
        conf = bench.render("failover-nginx.conf", os.path.join(rundir, "nginx.conf"), vals)
        cmd, cwd = [tools["nginx"], "-p", rundir, "-e", os.path.join(rundir, "nginx-proxy.error.log"),
                    "-c", conf], None
    elif key == "haproxy":
        conf = bench.render("failover-haproxy.cfg", os.path.join(rundir, "haproxy.cfg"), vals)
        cmd, cwd = [tools["haproxy"], "-db", "-f", conf], None
    else:
        conf = bench.render("failover-cyvoy.yaml", os.path.join(rundir, "cyvoy.yaml"), vals)
        if args.cyvoy_envoy_defaults:
            envoy_defaults(conf)
        if args.cyvoy_access_log:
            add_access_log(conf, os.path.join(rundir, "cyvoy-access.log"))
        cmd, cwd = [py, "-m", "proxy", "-c", conf, "--workers", "1", "--log-level", args.cyvoy_log_level], REPO
    m = bench.Managed(key, cmd, rundir, cwd=cwd)
    started.append(m)
    bench.wait_ready(m, pport, 20 if key == "cyvoy" else 10)
    # With active health checks a host takes traffic after its first passing check (cyvoy spreads
    # the first round over one interval), so the first GETs may get 503: wait for a 200.
    deadline = time.monotonic() + 5
    while True:
        try:
            bench.smoke(pport)
            break
        except bench.StartError:
            if time.monotonic() > deadline or not m.alive():
                raise
            time.sleep(0.1)
    t = bench.Target(key, key, pport, m)

    if key == "haproxy":
        stats = lambda: haproxy_stats(os.path.join(rundir, "haproxy.sock"))  # noqa: E731
    elif key == "cyvoy":
        stats = lambda: cyvoy_stats(admin)  # noqa: E731
    else:
        stats = lambda: nginx_stats(os.path.join(rundir, "nginx-proxy.error.log"))  # noqa: E731

    log(f"failover: {key}: warm-up {args.warmup}s, steady {args.steady}s, event run {args.duration}s")
    if args.warmup:
        wrk_fixed(tools, args, args.warmup, pport, rundir, "warmup")
    time.sleep(0.5)
    steady = wrk_fixed(tools, args, args.steady, pport, rundir, "steady")
    if not t.proc.alive():
        raise RuntimeError(f"{key} exited during the steady run\n{t.proc.log_tail()}")
    time.sleep(0.5)
    try:
        before = stats()
    except Exception as e:  # noqa: BLE001
        before = {"error": repr(e)}
    snap0 = bench.proc_snapshot()
    event, events = event_run(tools, args, pport, ups, rundir, "event")
    snap1 = bench.proc_snapshot()
    ours = {os.getpid()}
    for snap in (snap0, snap1):
        ours |= bench.tree_pids(snap, t.proc.pid)
        for u in ups.values():
            for up in ([u.proc] if u.proc else []) + u.old:
                ours |= bench.tree_pids(snap, up.pid)
    other = bench.other_cpu(snap0, snap1, ours)
    try:
        after = stats()
    except Exception as e:  # noqa: BLE001
        after = {"error": repr(e)}
    if not t.proc.alive():
        raise RuntimeError(f"{key} exited during the event run\n{t.proc.log_tail()}")
    view = delta(key, before, after)
    return {
        "proxy": key, "command": cmd, "ports": vals, "steady": steady, "event": event, "events": events,
        "proxy_view": view, "other_processes_cpu_s": other,
        "upstream_logs": {n: u.proc.log_tail(5) if u.proc else "" for n, u in ups.items()},
    }


def delta(key: str, before: dict, after: dict) -> dict:
    """The proxy's counters for the event run alone (nginx: its error log is only written to when
    something fails, i.e. during the event run)."""
    if key == "nginx" or "error" in before or "error" in after:
        return after
    if key == "cyvoy":
        return {k: v - before.get(k, 0) for k, v in after.items()}
    out = {}
    for sv, row in after.items():
        b = before.get(sv, {})
        out[sv] = {k: (str(int(v) - int(b.get(k) or 0)) if v.isdigit() else v) for k, v in row.items()}
    return out


def stop_all(items: list) -> None:
    for it in reversed(items):
        try:
            it.stop()
        except Exception as e:  # noqa: BLE001
            log(f"failover: stopping {getattr(it, 'name', it)}: {e!r}")
    items.clear()


# --------------------------------------------------------------------------- report

def ms(us: float) -> str:
    return f"{us / 1000:.2f}ms"


def print_report(results: dict, skipped: dict, args, meta) -> None:
    out = ["", f"cyvoy failover bench — {meta['hostname']}, {meta['cpus']} CPUs, wrk -t{args.threads} "
           f"-c{args.connections}; steady run {args.steady}s, event run {args.duration}s",
           "event script: " + (", ".join(f"t={at:g}s {what} {name}" for at, what, name in event_script(args))
                               or "none"), ""]
    hdr = (f"{'proxy':<8} {'steady rps':>10} {'steady p99':>10} | {'requests':>9} {'non2xx':>7} "
           f"{'sock err':>8} {'p50':>8} {'p99':>9} {'p99.9':>9} {'max':>9} {'p99/steady':>10}")
    out += ["event run (20 s) columns after '|'" if args.duration == 20 else
            f"event run ({args.duration} s) columns after '|'", hdr, "-" * len(hdr)]
    for key in PROXIES:
        if key in results:
            r = results[key]
            s, e = r["steady"], r["event"]
            ratio = e["p99_us"] / s["p99_us"] if s["p99_us"] else float("inf")
            out.append(f"{key:<8} {s['rps']:>10.0f} {ms(s['p99_us']):>10} | {e['requests']:>9} "
                       f"{e['non2xx']:>7} {e['socket_errors_total']:>8} {ms(e['p50_us']):>8} "
                       f"{ms(e['p99_us']):>9} {ms(e['p999_us']):>9} {ms(e['lat_max_us']):>9} {ratio:>9.2f}x")
        elif key in skipped:
            out.append(f"{key:<8} skipped: {skipped[key].splitlines()[0]}")
    out.append("")
    out.append("socket errors by kind (connect/read/write/timeout), steady errors:")
    for key in PROXIES:
        if key in results:
            se = results[key]["event"]["socket_errors"]
            st = results[key]["steady"]
            out.append(f"  {key:<8} {se['connect']}/{se['read']}/{se['write']}/{se['timeout']}   "
                       f"steady run: non2xx {st['non2xx']}, sock {st['socket_errors_total']}")
    out.append("each proxy's own view of the event run:")
    for key in PROXIES:
        if key in results:
            out.append(f"  {key:<8} {own_view_line(key, results[key]['proxy_view'])}")
    out.append("events as played (seconds after wrk started):")
    for key in PROXIES:
        if key in results:
            out.append(f"  {key:<8} " + ", ".join(
                f"{e['event']} {e['upstream']} {e['at_s']:.2f}"
                + (f" (up in {e['ready_after_s']:.2f})" if "ready_after_s" in e else "")
                for e in results[key]["events"]))
    load = {k: 100 * results[k]["other_processes_cpu_s"] / max(results[k]["event"]["seconds"], 1e-9)
            for k in PROXIES if k in results}
    out.append("sanity: CPU used by other processes on the machine during the event run: "
               + ", ".join(f"{k} {v:.0f}%" for k, v in load.items()) + " of one CPU")
    noisy = [k for k, v in load.items() if v > 10]
    if noisy:
        out.append(f"WARNING: other load on the machine during the event run of {', '.join(noisy)}: "
                   "those figures are skewed; rerun on a quiet machine")
    if "cyvoy" in results:
        e, s = results["cyvoy"]["event"], results["cyvoy"]["steady"]
        ratio = e["p99_us"] / s["p99_us"] if s["p99_us"] else float("inf")
        checks = [("non-2xx == 0", e["non2xx"] == 0), ("socket errors == 0", e["socket_errors_total"] == 0),
                  ("event p99 <= 2x steady p99", ratio <= 2.0)]
        out.append("")
        out.append("cyvoy target: " + "; ".join(f"{name}: {'met' if ok else 'MISSED'}" for name, ok in checks))
    print("\n".join(out), flush=True)


# --------------------------------------------------------------------------- main

def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", help="comma-separated subset of: nginx,haproxy,cyvoy")
    ap.add_argument("--duration", type=int, default=20, help="seconds of the event run (default 20)")
    ap.add_argument("--steady", type=int, default=5, help="seconds of the steady-state run before it (default 5)")
    ap.add_argument("--warmup", type=int, default=2, help="warm-up seconds per proxy (default 2)")
    ap.add_argument("--connections", type=int, default=32, help="wrk -c (default 32)")
    ap.add_argument("--threads", type=int, default=1, help="wrk -t (default 1)")
    ap.add_argument("--kill-at", type=float, default=5.0, help="SIGKILL upstream a at this second (default 5)")
    ap.add_argument("--restart-at", type=float, default=12.0, help="start upstream a again (default 12)")
    ap.add_argument("--pause-at", type=float, default=8.0, help="SIGSTOP upstream b at this second (default 8)")
    ap.add_argument("--pause-for", type=float, default=2.0, help="SIGCONT it this much later (default 2)")
    ap.add_argument("--no-kill", action="store_true", help="diagnosis: leave upstream a alone")
    ap.add_argument("--no-pause", action="store_true", help="diagnosis: leave upstream b alone")
    ap.add_argument("--cyvoy-access-log", action="store_true",
                    help="diagnosis: give cyvoy a JSON access log (kept in the temp dir; implies --keep)")
    ap.add_argument("--cyvoy-envoy-defaults", action="store_true",
                    help="diagnosis: run cyvoy with Envoy's defaults for panic threshold (50%%) and "
                         "max_retries (3), and at most one of three hosts ejected")
    ap.add_argument("--cyvoy-log-level", default="warning",
                    help="diagnosis: cyvoy's --log-level (default warning; info logs health and outlier events)")
    ap.add_argument("--python", default=None,
                    help="interpreter for cyvoy (default: REPO/.venv/bin/python, else this one)")
    ap.add_argument("--keep", action="store_true", help="keep the run's temp dir (configs, logs, wrk output)")
    ap.add_argument("--no-json", action="store_true", help="do not write bench/results/failover-*.json")
    ap.add_argument("--json", help="write the results JSON here instead of bench/results/")
    a = ap.parse_args(argv)
    if a.duration < 1 or a.steady < 1 or a.warmup < 0 or a.connections < 1 or a.threads < 1:
        ap.error("--duration, --steady, --connections, --threads must be >= 1, --warmup >= 0")
    if not a.no_kill and not (0 < a.kill_at < a.restart_at < a.duration):
        ap.error("need 0 < --kill-at < --restart-at < --duration")
    if not a.no_pause and not (0 < a.pause_at and a.pause_for > 0 and a.pause_at + a.pause_for < a.duration):
        ap.error("need 0 < --pause-at, --pause-for > 0 and --pause-at + --pause-for < --duration")
    if a.cyvoy_access_log:
        a.keep = True
    return a


def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    tools = bench.ensure_tools()
    wanted = list(PROXIES)
    if args.only:
        sel = [x.strip() for x in args.only.split(",") if x.strip()]
        bad = [x for x in sel if x not in PROXIES]
        if bad:
            log(f"failover: unknown proxy {bad}; choose from {list(PROXIES)}")
            return 2
        wanted = [x for x in PROXIES if x in sel]
    py = args.python or (os.path.join(REPO, ".venv", "bin", "python")
                         if os.path.exists(os.path.join(REPO, ".venv", "bin", "python")) else sys.executable)

    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, bench._sigterm)
    signal.signal(signal.SIGHUP, bench._sigterm)
    started: list = []
    rundir = tempfile.mkdtemp(prefix="cyvoy-failover-")
    t_start = time.monotonic()
    meta = {
        "date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "hostname": socket.gethostname(),
        "cpus": os.cpu_count() or 1,
        "kernel": platform.release(),
        "python_for_cyvoy": py,
        "versions": bench.tool_versions(tools),
        "loadavg_before": open("/proc/loadavg").read().split()[:3],
    }
    results: dict[str, dict] = {}
    skipped: dict[str, str] = {}
    per = args.warmup + args.steady + args.duration + 4
    log(f"failover: {', '.join(wanted)}; about {len(wanted) * per}s; temp dir {rundir}")
    try:
        for key in wanted:
            try:
                results[key] = run_proxy(key, tools, args, py, rundir, started)
                e = results[key]["event"]
                log(f"failover: {key}: {e['requests']} requests, non2xx {e['non2xx']}, socket errors "
                    f"{e['socket_errors_total']}, p99 {ms(e['p99_us'])} (steady {ms(results[key]['steady']['p99_us'])})")
            except (bench.StartError, RuntimeError) as e:
                if key != "cyvoy":
                    raise RuntimeError(f"{key}: {e}") from e
                # cyvoy is under development: its failure must not lose nginx's and HAProxy's figures.
                skipped[key] = f"cyvoy failed: {e}"
                log(f"failover: {skipped[key]}\nfailover: continuing without cyvoy")
            finally:
                stop_all(started)
            time.sleep(0.5)
        if not results:
            raise RuntimeError("no proxy was measured")
        meta["elapsed_s"] = round(time.monotonic() - t_start, 1)
        meta["loadavg_after"] = open("/proc/loadavg").read().split()[:3]
        print_report(results, skipped, args, meta)
        if not args.no_json:
            path = args.json or os.path.join(
                RESULTS, f"failover-{_dt.datetime.now().strftime('%Y-%m-%d_%H%M%S')}-{meta['hostname']}.json")
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
            with open(path, "w") as f:
                json.dump({"meta": meta, "args": vars(args),
                           "event_script": [{"at_s": at, "event": w, "upstream": n} for at, w, n in event_script(args)],
                           "skipped": skipped, "results": results}, f, indent=2)
            print(f"\nresults: {os.path.relpath(path, REPO) if path.startswith(REPO) else path} "
                  f"({meta['elapsed_s']}s)", flush=True)
        return 0
    except KeyboardInterrupt:
        log("failover: interrupted; stopping everything")
        return 130
    except (RuntimeError, bench.StartError) as e:
        log(f"failover: error: {e}")
        return 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not skip the cleanup
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        stop_all(started)
        if args.keep:
            log(f"failover: kept {rundir}")
        else:
            shutil.rmtree(rundir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
