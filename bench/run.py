#!/usr/bin/env python3
"""Side-by-side benchmark: cyvoy vs nginx vs HAProxy as HTTP/1.1 reverse proxies.

One upstream nginx (one worker, two loopback ports, fixed 13-byte body). Each proxy runs with one
worker/thread and balances round robin over both upstream ports. wrk drives each target in
alternating rounds (A B C D A B C D ...) after a short warm-up each; per round we record wrk's
figures (exact percentiles via bench/wrk_report.lua) and the CPU time of the proxy's whole process
tree from /proc. See bench/README.md. Stdlib only; run as `make bench` or `python bench/run.py`.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import http.client
import json
import os
import platform
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

BENCH = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(BENCH)
PEERS = os.path.join(BENCH, "peers")
LUA = os.path.join(BENCH, "wrk_report.lua")
RESULTS = os.path.join(BENCH, "results")
CLK_TCK = os.sysconf("SC_CLK_TCK")
INSTALL_CMD = "apt-get install -y nginx-light haproxy wrk"
BODY = b"hello, world\n"
SBIN = ("/usr/local/sbin", "/usr/sbin", "/sbin")


class StartError(Exception):
    pass


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- tools

def which(name: str) -> str | None:
    # nginx and haproxy live in /usr/sbin, which is not on a normal user's PATH.
    path = os.environ.get("PATH", "") + os.pathsep + os.pathsep.join(SBIN)
    return shutil.which(name, path=path)


def ensure_tools() -> dict[str, str]:
    names = ("nginx", "haproxy", "wrk")
    missing = [n for n in names if which(n) is None]
    if missing:
        if os.geteuid() != 0:
            log(f"bench: missing {', '.join(missing)}; install them with:")
            print(INSTALL_CMD, flush=True)
            sys.exit(2)
        log(f"bench: missing {', '.join(missing)}; running: {INSTALL_CMD}")
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        if subprocess.call(INSTALL_CMD.split(), env=env) != 0:
            log("bench: install failed; running apt-get update and retrying")
            subprocess.call(["apt-get", "update"], env=env)
            if subprocess.call(INSTALL_CMD.split(), env=env) != 0:
                log(f"bench: could not install the tools; run: {INSTALL_CMD}")
                sys.exit(2)
        missing = [n for n in names if which(n) is None]
        if missing:
            log(f"bench: still missing {', '.join(missing)} after install")
            sys.exit(2)
    return {n: which(n) for n in names}  # type: ignore[misc]


def tool_versions(tools: dict[str, str]) -> dict[str, str]:
    def first_line(cmd):
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=5)
            return ((r.stdout or "") + (r.stderr or "")).strip().splitlines()[0]
        except Exception as e:  # noqa: BLE001
            return f"? ({e})"
    out = {
        "nginx": first_line([tools["nginx"], "-v"]),
        "haproxy": first_line([tools["haproxy"], "-v"]),
        "wrk": first_line([tools["wrk"], "--version"]),
    }
    try:
        out["cyvoy_commit"] = subprocess.run(
            ["git", "-C", REPO, "rev-parse", "--short", "HEAD"],
            capture_output=True, text=True, timeout=5).stdout.strip()
    except Exception:  # noqa: BLE001
        pass
    return out


# --------------------------------------------------------------------------- /proc accounting

def _read_stat(pid: str):
    """(ppid, utime+stime+cutime+cstime in ticks, starttime) of one process, or None if gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    # comm (field 2) may contain spaces and parentheses: split after the last ')'.
    rest = data[data.rindex(b")") + 2:].split()
    # rest[0] is field 3 (state); field N is rest[N - 3].
    ppid = int(rest[1])
    ticks = int(rest[11]) + int(rest[12]) + int(rest[13]) + int(rest[14])  # fields 14-17
    return ppid, ticks, int(rest[19])  # field 22: starttime (tells a reused pid apart)


def proc_snapshot() -> dict[int, tuple[int, int, int]]:
    snap = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            st = _read_stat(name)
            if st is not None:
                snap[int(name)] = st
    return snap


def tree_pids(snap, root: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for pid, st in snap.items():
        children.setdefault(st[0], []).append(pid)
    out, todo = set(), [root]
    while todo:
        pid = todo.pop()
        if pid in snap and pid not in out:
            out.add(pid)
            todo.extend(children.get(pid, ()))
    return out


def tree_cpu(snap, root: int) -> tuple[float, int]:
    """CPU seconds (user+sys) of `root` and every live descendant, plus the number of processes.

    Each process contributes utime+stime (fields 14, 15) and cutime+cstime (16, 17): the latter
    hold descendants that already exited and were reaped, so a worker that dies between two
    samples is still counted, and a live process is never counted twice.
    """
    pids = tree_pids(snap, root)
    return sum(snap[p][1] for p in pids) / CLK_TCK, len(pids)


def other_cpu(before, after, exclude: set[int]) -> float:
    """CPU seconds used between two snapshots by every process outside `exclude` (the benchmark's
    own). Sums of utime+stime+cutime+cstime over all other processes are compared, so a process
    that exits moves its time into its parent's cutime/cstime and is counted exactly once."""
    def total(snap):
        return sum(st[1] for pid, st in snap.items() if pid not in exclude)
    return (total(after) - total(before)) / CLK_TCK


def descendants(root: int) -> list[int]:
    return sorted(tree_pids(proc_snapshot(), root) - {root})


def upstream_accepts(port: int) -> int:
    """Connections accepted so far by the upstream nginx (its stub_status), counting this one."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        c.request("GET", "/__bench_status")
        body = c.getresponse().read().decode()
    finally:
        c.close()
    # "Active connections: N \nserver accepts handled requests\n A H R \n..."
    return int(body.splitlines()[2].split()[0])


def system_cpu() -> dict[str, float]:
    """Machine-wide CPU seconds from /proc/stat: busy (not idle/iowait), irq+softirq, total."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    user, nice, system, idle, iowait, irq, softirq = v[:7]
    steal = v[7] if len(v) > 7 else 0
    total = sum(v[:8])
    return {"busy": (total - idle - iowait) / CLK_TCK,
            "irq": (irq + softirq) / CLK_TCK,
            "steal": steal / CLK_TCK,
            "total": total / CLK_TCK}


# --------------------------------------------------------------------------- processes

def free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def render(template: str, dest: str, values: dict[str, object]) -> str:
    with open(os.path.join(PEERS, template)) as f:
        text = f.read()
    for k, v in values.items():
        text = text.replace("{{" + k + "}}", str(v))
    left = re.findall(r"\{\{[A-Z0-9_]+\}\}", text)
    if left:
        raise RuntimeError(f"unfilled placeholder(s) {left} in {template}")
    with open(dest, "w") as f:
        f.write(text)
    return dest


class Managed:
    """A process we started, in its own session/process group, logs in the run dir."""

    def __init__(self, name: str, cmd: list[str], rundir: str, cwd: str | None = None):
        self.name = name
        self.cmd = cmd
        self.log_path = os.path.join(rundir, f"{name}.log")
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=self._log,
                                     stderr=subprocess.STDOUT, cwd=cwd, start_new_session=True)
        self.pid = self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_tail(self, n: int = 15) -> str:
        try:
            with open(self.log_path, "rb") as f:
                lines = f.read().decode(errors="replace").strip().splitlines()
            return "\n".join(lines[-n:])
        except OSError:
            return ""

    def stop(self) -> None:
        """SIGTERM, then SIGKILL, to the process group and to every descendant (even one that
        left the group); returns once all of them are gone."""
        stray = descendants(self.pid) if self.alive() else []
        for sig, grace in ((signal.SIGTERM, 3.0), (signal.SIGKILL, 2.0)):
            try:
                os.killpg(self.pid, sig)
            except (ProcessLookupError, PermissionError):
                pass
            for p in stray:
                try:
                    os.kill(p, sig)
                except (ProcessLookupError, PermissionError):
                    pass
            deadline = time.monotonic() + grace
            while time.monotonic() < deadline:
                if self._gone(stray):
                    self._log.close()
                    return
                time.sleep(0.05)
        self._log.close()

    def _gone(self, stray: list[int]) -> bool:
        if self.proc.poll() is None:
            return False
        try:
            os.killpg(self.pid, 0)
            return False
        except ProcessLookupError:
            pass
        except PermissionError:
            return False
        for p in stray:
            s = _read_stat(str(p))
            if s is not None:
                try:
                    with open(f"/proc/{p}/stat", "rb") as f:
                        state = f.read().rsplit(b")", 1)[1].split()[0]
                except OSError:
                    continue
                if state != b"Z":
                    return False
        return True


def pin_tree(root: int, cpu: int) -> None:
    """Set the CPU affinity of every thread of `root` and its descendants."""
    for pid in [root] + descendants(root):
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for tid in tids:
            try:
                os.sched_setaffinity(int(tid), {cpu})
            except OSError:
                pass


def wait_ready(m: Managed, port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if not m.alive():
            tail = m.log_tail()
            last = tail.splitlines()[-1].strip() if tail else "no output"
            raise StartError(f"exited with code {m.proc.returncode}: {last}\n{tail}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise StartError(f"port {port} not accepting connections after {timeout:.0f}s\n{m.log_tail()}")
        time.sleep(0.05)


def smoke(port: int) -> None:
    """One GET through the target; it must answer 200 with the upstream's body."""
    for attempt in range(2):
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            c.request("GET", "/")
            r = c.getresponse()
            body = r.read()
            c.close()
            if r.status != 200 or body != BODY:
                raise StartError(f"smoke GET / returned {r.status} {body[:80]!r}, expected 200 {BODY!r}")
            return
        except (OSError, http.client.HTTPException) as e:
            if attempt:
                raise StartError(f"smoke GET / failed: {e!r}") from e
            time.sleep(0.3)


# --------------------------------------------------------------------------- wrk

def run_wrk(tools, url, duration, args, rundir, tag) -> tuple[dict, float, str]:
    cmd = [tools["wrk"], f"-t{args.threads}", f"-c{args.connections}", f"-d{duration}s",
           "--latency", "--timeout", "2s", "-s", LUA, url]
    if args.taskset:
        cmd = ["taskset", "-c", "1"] + cmd
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 20)
    except subprocess.TimeoutExpired as e:
        raise RuntimeError(f"wrk did not finish within {duration + 20}s ({tag})") from e
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    wrk_cpu = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
    with open(os.path.join(rundir, f"wrk-{tag}.out"), "w") as f:
        f.write(r.stdout + r.stderr)
    line = next((ln for ln in r.stdout.splitlines() if ln.startswith("BENCH_RESULT ")), None)
    if r.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({tag}, rc={r.returncode}): {(r.stderr or r.stdout)[-500:]}")
    return json.loads(line[len("BENCH_RESULT "):]), wrk_cpu, r.stdout


# --------------------------------------------------------------------------- targets

class Target:
    def __init__(self, key: str, label: str, port: int, proc: Managed):
        self.key, self.label, self.port, self.proc = key, label, port, proc
        self.rounds: list[dict] = []


def start_target(key, label, cmd, port, rundir, timeout, cwd=None) -> Target:
    m = Managed(key, cmd, rundir, cwd=cwd)
    try:
        wait_ready(m, port, timeout)
        smoke(port)
    except BaseException:
        m.stop()
        raise
    return Target(key, label, port, m)


def place_upstream(args, t: Target, upstream: Managed) -> None:
    """With --taskset the proxy under test has CPU 0 to itself; wrk and the upstream share CPU 1.
    When the upstream itself is the target it moves to CPU 0, in the proxy's place."""
    if args.taskset:
        pin_tree(upstream.pid, 0 if t.proc is upstream else 1)


def one_round(tools, args, t: Target, upstream: Managed, upstream_port: int, duration: int,
              rundir: str, tag: str) -> dict:
    is_upstream = t.proc is upstream
    place_upstream(args, t, upstream)
    acc0 = upstream_accepts(upstream_port)
    sys0, snap0 = system_cpu(), proc_snapshot()
    w, wrk_cpu, _ = run_wrk(tools, f"http://127.0.0.1:{t.port}/", duration, args, rundir, tag)
    sys1, snap1 = system_cpu(), proc_snapshot()
    acc1 = upstream_accepts(upstream_port)
    p0, p1 = tree_cpu(snap0, t.proc.pid), tree_cpu(snap1, t.proc.pid)
    u0, u1 = tree_cpu(snap0, upstream.pid), tree_cpu(snap1, upstream.pid)
    # wrk was our child and is reaped: its time is in our own cutime, so we exclude ourselves.
    ours = {os.getpid()}
    for snap in (snap0, snap1):
        ours |= tree_pids(snap, t.proc.pid) | tree_pids(snap, upstream.pid)
    other = other_cpu(snap0, snap1, ours)
    if not t.proc.alive():
        raise RuntimeError(f"{t.label} died during round {tag}\n{t.proc.log_tail()}")
    req = max(w["requests"], 1)
    secs = w["duration_us"] / 1e6
    proxy_cpu = p1[0] - p0[0]
    up_cpu = u1[0] - u0[0]
    busy = sys1["busy"] - sys0["busy"]
    irq = sys1["irq"] - sys0["irq"]
    tracked = proxy_cpu + wrk_cpu + (0.0 if is_upstream else up_cpu)
    return {
        "tag": tag,
        "requests": w["requests"],
        "seconds": secs,
        "rps": w["requests"] / secs if secs else 0.0,
        "p50_us": w["p50"], "p90_us": w["p90"], "p99_us": w["p99"], "p999_us": w["p999"],
        "lat_mean_us": w["lat_mean"], "lat_max_us": w["lat_max"],
        "non2xx": w["status"],  # wrk counts responses with status > 399 here
        "socket_errors": {k: w[k] for k in ("connect", "read", "write", "timeout")},
        "socket_errors_total": sum(w[k] for k in ("connect", "read", "write", "timeout")),
        "bytes": w["bytes"],
        "proxy_cpu_s": proxy_cpu,
        "proxy_procs": p1[1],
        "cpu_us_per_req": proxy_cpu * 1e6 / req,
        "upstream_cpu_s": up_cpu,
        "upstream_cpu_us_per_req": up_cpu * 1e6 / req,
        "wrk_cpu_s": wrk_cpu,
        # Connections the upstream accepted during the round (less our own status request):
        # the proxy's new upstream connections; wrk's -c when the upstream is the target.
        # High = the proxy does not reuse upstream connections.
        "upstream_conns_opened": acc1 - acc0 - 1,
        "system_busy_s": busy,
        "system_irq_softirq_s": irq,
        # CPU of every other process on the machine (e.g. a test suite running meanwhile).
        "other_processes_cpu_s": other,
        # Busy CPU not in any process's times: ~0 on kernels that charge irq/softirq (loopback
        # networking) to the running task, ~irq+softirq on CONFIG_IRQ_TIME_ACCOUNTING kernels.
        "unattributed_cpu_s": busy - tracked - other,
    }


# --------------------------------------------------------------------------- report

def fmt_ms(us: float) -> str:
    return f"{us / 1000:.2f}ms"


def summarize(t: Target) -> dict:
    r = t.rounds
    med = lambda k: statistics.median(x[k] for x in r)  # noqa: E731
    return {
        "rps": med("rps"), "rps_min": min(x["rps"] for x in r), "rps_max": max(x["rps"] for x in r),
        "p50_us": med("p50_us"), "p99_us": med("p99_us"),
        "p99_min_us": min(x["p99_us"] for x in r), "p99_max_us": max(x["p99_us"] for x in r),
        "cpu_us_per_req": med("cpu_us_per_req"),
        "cpu_min": min(x["cpu_us_per_req"] for x in r), "cpu_max": max(x["cpu_us_per_req"] for x in r),
        "upstream_cpu_us_per_req": med("upstream_cpu_us_per_req"),
        "non2xx": sum(x["non2xx"] for x in r),
        "socket_errors": sum(x["socket_errors_total"] for x in r),
        "other_load_pct": statistics.median(100 * x["other_processes_cpu_s"] / x["seconds"] for x in r),
        "other_load_max_pct": max(100 * x["other_processes_cpu_s"] / x["seconds"] for x in r),
        "rounds": len(r),
    }


def spread(lo: float, hi: float, mid: float) -> str:
    return f"±{50 * (hi - lo) / mid:.0f}%" if mid else "-"


def print_report(targets: list[Target], summaries: dict, skipped: dict, args, meta) -> None:
    out = []
    out.append("")
    out.append(f"cyvoy bench — {meta['hostname']}, {meta['cpus']} CPUs, wrk -t{args.threads} "
               f"-c{args.connections}, {args.rounds} rounds x {args.duration}s, "
               f"taskset={'proxy:0 wrk+upstream:1' if args.taskset else 'off'}")
    out.append("median over rounds; spread = half the min..max range, relative to the median")
    out.append("")
    hdr = (f"{'proxy':<18} {'rps':>9} {'spread':>7} {'p50':>9} {'p99':>9} {'spread':>7} "
           f"{'cpu_us/req':>10} {'spread':>7} {'errors (non2xx/sock)':>21}")
    out.append(hdr)
    out.append("-" * len(hdr))
    for t in targets:
        s = summaries[t.key]
        out.append(f"{t.label:<18} {s['rps']:>9.0f} {spread(s['rps_min'], s['rps_max'], s['rps']):>7} "
                   f"{fmt_ms(s['p50_us']):>9} {fmt_ms(s['p99_us']):>9} "
                   f"{spread(s['p99_min_us'], s['p99_max_us'], s['p99_us']):>7} "
                   f"{s['cpu_us_per_req']:>10.1f} {spread(s['cpu_min'], s['cpu_max'], s['cpu_us_per_req']):>7} "
                   f"{str(s['non2xx']) + '/' + str(s['socket_errors']):>21}")
    for key, why in skipped.items():
        out.append(f"{key:<18} skipped: {why.splitlines()[0]}")
    out.append("")
    out.append("per round (rps | p99 | cpu_us/req):")
    for t in targets:
        cells = "   ".join(f"{x['rps']:.0f} | {fmt_ms(x['p99_us'])} | {x['cpu_us_per_req']:.1f}"
                           for x in t.rounds)
        out.append(f"  {t.label:<16} {cells}")
    out.append("")
    ups = ", ".join(f"{t.label}: {summaries[t.key]['upstream_cpu_us_per_req']:.1f}"
                    for t in targets if t.key != "upstream")
    if ups:
        out.append(f"sanity: upstream nginx cpu_us/req while proxied — {ups}")
    conns = ", ".join(f"{t.label}: {statistics.median(x['upstream_conns_opened'] for x in t.rounds):.0f}"
                      for t in targets)
    out.append(f"sanity: connections opened to the upstream per round — {conns}")
    if "upstream" in summaries:
        out.append(f"sanity: upstream nginx cpu_us/req when hit directly — "
                   f"{summaries['upstream']['cpu_us_per_req']:.1f}")
    worst = max((summaries[t.key]["other_load_max_pct"] for t in targets), default=0.0)
    out.append(f"sanity: CPU used by other processes on the machine during a round: at most {worst:.0f}% of one CPU")
    if worst > 10:
        noisy = [x["tag"] for t in targets for x in t.rounds
                 if 100 * x["other_processes_cpu_s"] / x["seconds"] > 10]
        out.append(f"WARNING: other load on the machine during {', '.join(noisy)} — those figures are "
                   "skewed; rerun on a quiet machine")
    out.append("")
    if "cyvoy" in summaries:
        c = summaries["cyvoy"]
        for peer in ("nginx", "haproxy"):
            if peer in summaries:
                p = summaries[peer]
                out.append(f"cyvoy/{peer:<8} cpu_us/req x{c['cpu_us_per_req'] / p['cpu_us_per_req']:.2f}   "
                           f"rps x{c['rps'] / p['rps']:.2f}   p99 x{c['p99_us'] / p['p99_us']:.2f}")
    else:
        out.append(f"cyvoy ratios: n/a ({skipped.get('cyvoy', 'cyvoy not measured').splitlines()[0]})")
    if "cyvoy" in summaries and "cyvoy-hc" in summaries:
        c, hc = summaries["cyvoy"], summaries["cyvoy-hc"]
        out.append(f"cyvoy+hc/cyvoy cpu_us/req x{hc['cpu_us_per_req'] / c['cpu_us_per_req']:.2f}   "
                   f"rps x{hc['rps'] / c['rps']:.2f}   (active health checks on: should be x1.00 within noise)")
    if "nginx" in summaries and "haproxy" in summaries:
        n, h = summaries["nginx"], summaries["haproxy"]
        out.append(f"(reference) haproxy/nginx cpu_us/req x{h['cpu_us_per_req'] / n['cpu_us_per_req']:.2f}   "
                   f"rps x{h['rps'] / n['rps']:.2f}   p99 x{h['p99_us'] / n['p99_us']:.2f}")
    print("\n".join(out), flush=True)


# --------------------------------------------------------------------------- main

def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="2 rounds of 5 s (default: 3 rounds of 10 s)")
    ap.add_argument("--rounds", type=int, help="rounds per proxy")
    ap.add_argument("--duration", type=int, help="seconds per wrk round")
    ap.add_argument("--warmup", type=int, default=2, help="warm-up seconds per proxy (default 2)")
    ap.add_argument("--connections", type=int, default=64, help="wrk -c (default 64)")
    ap.add_argument("--threads", type=int, default=1, help="wrk -t (default 1)")
    ap.add_argument("--taskset", action="store_true", help="pin each proxy to CPU 0, wrk and the upstream to CPU 1 (upstream to 0 when it is the target)")
    ap.add_argument("--only", help="comma-separated subset of: upstream,nginx,haproxy,cyvoy")
    ap.add_argument("--python", default=None,
                    help="interpreter for cyvoy (default: REPO/.venv/bin/python, else this one)")
    ap.add_argument("--keep", action="store_true", help="keep the run's temp dir (configs, logs, wrk output)")
    ap.add_argument("--no-json", action="store_true", help="do not write bench/results/*.json")
    ap.add_argument("--json", help="write the results JSON here instead of bench/results/")
    a = ap.parse_args(argv)
    if a.rounds is None:
        a.rounds = 2 if a.quick else 3
    if a.duration is None:
        a.duration = 5 if a.quick else 10
    if a.rounds < 1 or a.duration < 1 or a.warmup < 0:
        ap.error("--rounds and --duration must be >= 1, --warmup >= 0")
    return a


def _sigterm(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    tools = ensure_tools()
    cpus = os.cpu_count() or 1
    if args.taskset and cpus < 2:
        log("bench: --taskset needs at least 2 CPUs")
        return 2
    if args.taskset and which("taskset") is None:
        log("bench: --taskset needs taskset (util-linux)")
        return 2
    # cyvoy-hc: cyvoy with active health checks on (every 1 s per host): the full run shows that
    # the health table costs the hot path nothing measurable; the quick run keeps to the headline.
    wanted = ["upstream", "nginx", "haproxy", "cyvoy"] + ([] if args.quick else ["cyvoy-hc"])
    if args.only:
        sel = [x.strip() for x in args.only.split(",") if x.strip()]
        bad = [x for x in sel if x not in ("upstream", "nginx", "haproxy", "cyvoy", "cyvoy-hc")]
        if bad:
            log(f"bench: unknown target(s) {bad}; choose from {wanted}")
            return 2
        wanted = [x for x in ("upstream", "nginx", "haproxy", "cyvoy", "cyvoy-hc") if x in sel]
    py = args.python or (os.path.join(REPO, ".venv", "bin", "python")
                         if os.path.exists(os.path.join(REPO, ".venv", "bin", "python")) else sys.executable)

    # Ctrl-C, kill and hang-up all end in the finally below (even if SIGINT was ignored by a parent shell).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _sigterm)
    signal.signal(signal.SIGHUP, _sigterm)
    started: list[Managed] = []
    rundir = tempfile.mkdtemp(prefix="cyvoy-bench-")
    t_start = time.monotonic()
    meta = {
        "date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "hostname": socket.gethostname(),
        "cpus": cpus,
        "kernel": platform.release(),
        "python_for_cyvoy": py,
        "versions": tool_versions(tools),
        "loadavg_before": open("/proc/loadavg").read().split()[:3],
    }
    pin = ["taskset", "-c", "0"] if args.taskset else []
    targets: list[Target] = []
    skipped: dict[str, str] = {}
    try:
        up1, up2, p_nginx, p_haproxy, p_cyvoy, p_cyvoy_hc = free_ports(6)
        vals = {"RUNDIR": rundir, "UPSTREAM_PORT_1": up1, "UPSTREAM_PORT_2": up2}

        # Upstream: unpinned by default; with --taskset, place_upstream() moves it per round.
        conf = render("upstream-nginx.conf", os.path.join(rundir, "upstream-nginx.conf"), vals)
        up = start_target("upstream", "upstream (direct)",
                          [tools["nginx"], "-p", rundir, "-e", os.path.join(rundir, "upstream-nginx.error.log"),
                           "-c", conf], up1, rundir, 10)
        started.append(up.proc)
        smoke(up2)
        if "upstream" in wanted:
            targets.append(up)

        specs = []
        if "nginx" in wanted:
            conf = render("nginx-proxy.conf", os.path.join(rundir, "nginx-proxy.conf"), dict(vals, PROXY_PORT=p_nginx))
            specs.append(("nginx", "nginx", pin + [tools["nginx"], "-p", rundir, "-e",
                                                  os.path.join(rundir, "nginx-proxy.error.log"), "-c", conf],
                          p_nginx, None))
        if "haproxy" in wanted:
            conf = render("haproxy.cfg", os.path.join(rundir, "haproxy.cfg"), dict(vals, PROXY_PORT=p_haproxy))
            specs.append(("haproxy", "haproxy", pin + [tools["haproxy"], "-db", "-f", conf], p_haproxy, None))
        if "cyvoy" in wanted:
            conf = render("cyvoy.yaml", os.path.join(rundir, "cyvoy.yaml"), dict(vals, PROXY_PORT=p_cyvoy))
            specs.append(("cyvoy", "cyvoy", pin + [py, "-m", "proxy", "-c", conf, "--workers", "1",
                                                   "--log-level", "warning"], p_cyvoy, REPO))
        if "cyvoy-hc" in wanted:
            conf = render("cyvoy-hc.yaml", os.path.join(rundir, "cyvoy-hc.yaml"), dict(vals, PROXY_PORT=p_cyvoy_hc))
            specs.append(("cyvoy-hc", "cyvoy +health checks", pin + [py, "-m", "proxy", "-c", conf, "--workers",
                                                                    "1", "--log-level", "warning"], p_cyvoy_hc, REPO))
        for key, label, cmd, port, cwd in specs:
            try:
                t = start_target(key, label, cmd, port, rundir, 20 if key.startswith("cyvoy") else 10, cwd=cwd)
            except StartError as e:
                if not key.startswith("cyvoy"):
                    raise RuntimeError(f"{key} failed to start: {e}") from e
                skipped[key] = f"{key} failed to start: {e}"
                log(f"bench: {skipped[key]}")
                log("bench: continuing without cyvoy")
                continue
            started.append(t.proc)
            targets.append(t)
        if not targets:
            raise RuntimeError("nothing to benchmark")

        est = len(targets) * (args.warmup + args.rounds * (args.duration + 1))
        log(f"bench: targets {', '.join(t.label for t in targets)}; about {est}s of load; temp dir {rundir}")
        partial: dict[str, list] = {}

        def drop_cyvoy(t: Target, tag: str, e: Exception) -> None:
            # cyvoy is under development: losing it mid-run must not lose nginx's and HAProxy's figures.
            skipped[t.key] = f"{t.key} failed during {tag}: {e}"
            log(f"bench: {skipped[t.key]}\n{t.proc.log_tail()}\nbench: continuing without {t.key}")
            partial[t.key] = t.rounds
            targets.remove(t)
            t.proc.stop()

        if args.warmup:
            for t in list(targets):
                log(f"bench: warm-up {t.label} ({args.warmup}s)")
                place_upstream(args, t, up.proc)
                try:
                    run_wrk(tools, f"http://127.0.0.1:{t.port}/", args.warmup, args, rundir, f"{t.key}-warmup")
                    if not t.proc.alive():
                        raise RuntimeError(f"{t.label} exited during warm-up")
                except RuntimeError as e:
                    if not t.key.startswith("cyvoy"):
                        raise
                    drop_cyvoy(t, "warm-up", e)
                time.sleep(0.5)
        for i in range(1, args.rounds + 1):
            for t in list(targets):
                tag = f"{t.key}-r{i}"
                try:
                    r = one_round(tools, args, t, up.proc, up1, args.duration, rundir, tag)
                except RuntimeError as e:
                    if not t.key.startswith("cyvoy"):
                        raise
                    drop_cyvoy(t, tag, e)
                    continue
                t.rounds.append(r)
                log(f"bench: round {i}/{args.rounds} {t.label:<18} {r['rps']:>8.0f} rps  "
                    f"p99 {fmt_ms(r['p99_us'])}  cpu {r['cpu_us_per_req']:.1f} us/req  "
                    f"errors {r['non2xx']}/{r['socket_errors_total']}")
                time.sleep(0.5)
        if not targets:
            raise RuntimeError("every target failed")

        summaries = {t.key: summarize(t) for t in targets}
        meta["elapsed_s"] = round(time.monotonic() - t_start, 1)
        meta["loadavg_after"] = open("/proc/loadavg").read().split()[:3]
        print_report(targets, summaries, skipped, args, meta)
        if not args.no_json:
            path = args.json or os.path.join(
                RESULTS, f"{_dt.datetime.now().strftime('%Y-%m-%d_%H%M%S')}-{meta['hostname']}.json")
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
            doc = {
                "meta": meta,
                "args": vars(args),
                "commands": {t.key: t.proc.cmd for t in targets},
                "skipped": skipped,
                "summary": summaries,
                "rounds": {t.key: t.rounds for t in targets},
                "partial_rounds": partial,
            }
            with open(path, "w") as f:
                json.dump(doc, f, indent=2)
            print(f"\nresults: {os.path.relpath(path, REPO) if path.startswith(REPO) else path} "
                  f"({meta['elapsed_s']}s)", flush=True)
        return 0
    except KeyboardInterrupt:
        log("bench: interrupted; stopping everything")
        return 130
    except (RuntimeError, StartError) as e:
        log(f"bench: error: {e}")
        return 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not skip the cleanup
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        for m in reversed(started):
            m.stop()
        if args.keep:
            log(f"bench: kept {rundir}")
        else:
            shutil.rmtree(rundir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
