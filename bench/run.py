#!/usr/bin/env python3
"""Side-by-side benchmark: cyvoy vs nginx vs HAProxy as reverse proxies (HTTP/1.1, h2c, h2, TLS).

One upstream nginx (one worker, two loopback ports; a fixed 13-byte body at /, 64 KiB at /64k,
1 MiB at /1m). Each proxy balances round robin over both upstream ports. Scenarios (small GET at
64 and 1,000 connections, 20 request headers, 4 KiB POST, 64 KiB and 1 MiB responses, a new
connection per request) run for each variant: 1 and 2 workers/threads per proxy, without and with
an access log. Then, once, at 1 worker: the protocol scenarios h2c (h2load, cleartext HTTP/2 with
prior knowledge), h2-tls (h2load, HTTP/2 over TLS by ALPN) and https1 (wrk, HTTP/1.1 over TLS),
against proxies started from the peers/*-proto templates. Within a scenario wrk (or h2load) drives
each target in alternating rounds (A B C D A B C D ...) after a short warm-up each; per round we
record the load generator's figures (exact percentiles via bench/wrk_report.lua, or from h2load's
per-request log), the CPU time of the proxy's whole process tree from /proc and its peak RSS.
See bench/README.md. Stdlib only (matplotlib for the chart, if installed); run as `make bench`,
`make bench-quick` or `python bench/run.py --help`.
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
import threading
import time

BENCH = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(BENCH)
PEERS = os.path.join(BENCH, "peers")
LUA = os.path.join(BENCH, "wrk_report.lua")
RESULTS = os.path.join(BENCH, "results")
CLK_TCK = os.sysconf("SC_CLK_TCK")
# Debian package of each tool run.py runs; h2load, curl and openssl only for the protocol scenarios.
PACKAGES = {"nginx": "nginx-light", "haproxy": "haproxy", "wrk": "wrk", "h2load": "nghttp2-client",
            "curl": "curl", "openssl": "openssl"}
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


def ensure_tools(names=("nginx", "haproxy", "wrk")) -> dict[str, str]:
    missing = [n for n in names if which(n) is None]
    if missing:
        install_cmd = "apt-get install -y " + " ".join(PACKAGES[n] for n in missing)
        if os.geteuid() != 0:
            log(f"bench: missing {', '.join(missing)}; install them with:")
            print(install_cmd, flush=True)
            sys.exit(2)
        log(f"bench: missing {', '.join(missing)}; running: {install_cmd}")
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        if subprocess.call(install_cmd.split(), env=env) != 0:
            log("bench: install failed; running apt-get update and retrying")
            subprocess.call(["apt-get", "update"], env=env)
            if subprocess.call(install_cmd.split(), env=env) != 0:
                log(f"bench: could not install the tools; run: {install_cmd}")
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
    for name, flag in (("h2load", "--version"), ("openssl", "version")):
        if name in tools:
            out[name] = first_line([tools[name], flag])
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


def target_url(t: "Target", sc: "Scenario") -> str:
    """The URL the load generator uses for a scenario on a target: its HTTP/1.1 port, its h2c
    port, or its TLS port (HTTP/2 or HTTP/1.1 chosen by ALPN)."""
    if sc.proto == "http1":
        return f"http://127.0.0.1:{t.port}{sc.path}"
    if sc.proto == "h2c":
        return f"http://127.0.0.1:{t.ports['h2c']}{sc.path}"
    return f"https://127.0.0.1:{t.ports['tls']}{sc.path}"


def tls_probe(port: int, alpn: list[str] | None) -> dict:
    """One TLS handshake with OpenSSL's client defaults (as wrk and h2load use): what the target
    negotiates (version, cipher, ALPN)."""
    import ssl
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if alpn:
        ctx.set_alpn_protocols(alpn)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with ctx.wrap_socket(raw, server_hostname="localhost") as s:
            return {"tls_version": s.version(), "cipher": s.cipher()[0],
                    "alpn": s.selected_alpn_protocol()}


def check_scenario(t: "Target", sc: "Scenario", tools: dict[str, str]) -> dict:
    """One request of the scenario through the target: 200 and a body of the expected size; for
    the protocol scenarios (with curl) also the HTTP version the target spoke. Returns what was
    negotiated ({} for plain HTTP/1.1)."""
    if sc.proto != "http1":
        return check_proto(t, sc, tools)
    port = t.port
    try:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        if sc.name == "post4k":
            c.request("POST", sc.path, body=b"x" * 4096, headers={"Content-Type": "application/octet-stream"})
        else:
            c.request("GET", sc.path)
        r = c.getresponse()
        body = r.read()
        c.close()
    except (OSError, http.client.HTTPException) as e:
        raise RuntimeError(f"{sc.name}: request to {sc.path} failed: {e!r}") from e
    if r.status != 200 or len(body) != sc.body_bytes:
        raise RuntimeError(f"{sc.name}: {sc.path} returned {r.status} with {len(body)} bytes, "
                           f"expected 200 with {sc.body_bytes}")
    return {}


def check_proto(t: "Target", sc: "Scenario", tools: dict[str, str]) -> dict:
    url = target_url(t, sc)
    flag, want = {"h2c": ("--http2-prior-knowledge", "2"), "h2": ("--http2", "2"),
                  "https1": ("--http1.1", "1.1")}[sc.proto]
    cmd = [tools["curl"], "-sS", "-k", flag, "--max-time", "5", "-o", os.devnull,
           "-w", "%{http_code} %{http_version} %{size_download}", url]
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
    except subprocess.TimeoutExpired as e:
        raise RuntimeError(f"{sc.name}: curl {url} did not finish") from e
    got = r.stdout.split()
    if r.returncode != 0 or len(got) != 3:
        raise RuntimeError(f"{sc.name}: curl {flag} {url} failed (rc={r.returncode}): {r.stderr.strip()[-300:]}")
    status, version, size = got
    if status != "200" or version != want or int(size) != sc.body_bytes:
        raise RuntimeError(f"{sc.name}: curl {flag} {url} got {status} over HTTP/{version} with {size} "
                           f"bytes, expected 200 over HTTP/{want} with {sc.body_bytes}")
    info = {"http_version": version}
    if sc.proto != "h2c":
        # wrk offers no ALPN (HTTP/1.1); h2load offers h2 first
        info.update(tls_probe(t.ports["tls"], ["h2", "http/1.1"] if sc.proto == "h2" else None))
    return info


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


# --------------------------------------------------------------------------- scenarios

# Lua prepended to bench/wrk_report.lua for a scenario (wrk takes a single -s script).
HEADERS_LUA = """-- 20 extra request headers, 20 x 76 bytes = 1,520 bytes (~1.5 KiB) on the wire
for i = 1, 20 do
  wrk.headers[string.format("X-Bench-Header-%02d", i)] = string.rep("v", 55)
end
"""
POST_LUA = """-- 4 KiB request body (wrk adds Content-Length)
wrk.method = "POST"
wrk.body = string.rep("x", 4096)
wrk.headers["Content-Type"] = "application/octet-stream"
"""
CLOSE_LUA = """-- one new connection per request: the server closes after each response, wrk reconnects
wrk.headers["Connection"] = "close"
"""


class Scenario:
    """proto: how the client speaks to the proxy. "http1": cleartext HTTP/1.1 (wrk); "h2c":
    cleartext HTTP/2 with prior knowledge (h2load); "h2": HTTP/2 over TLS, ALPN h2 (h2load);
    "https1": HTTP/1.1 over TLS (wrk). Every proxy speaks HTTP/1.1 to the upstream."""

    def __init__(self, name: str, title: str, connections: int, path: str, lua: str = "",
                 body_bytes: int = len(BODY), proto: str = "http1"):
        self.name, self.title, self.connections, self.path, self.lua = name, title, connections, path, lua
        self.body_bytes = body_bytes
        self.proto = proto
        self.tool = "h2load" if proto in ("h2c", "h2") else "wrk"


SCENARIOS = {s.name: s for s in (
    Scenario("get64", "small GET (13-byte body), 64 connections", 64, "/"),
    Scenario("get1k", "small GET, 1,000 connections", 1000, "/"),
    Scenario("headers", "GET with 20 extra request headers (~1.5 KiB)", 64, "/", HEADERS_LUA),
    Scenario("post4k", "4 KiB POST", 64, "/", POST_LUA),
    Scenario("resp64k", "64 KiB response", 64, "/64k", body_bytes=64 * 1024),
    Scenario("resp1m", "1 MiB response", 64, "/1m", body_bytes=1024 * 1024),
    Scenario("close", "small GET, new connection per request (Connection: close)", 64, "/", CLOSE_LUA),
    # Protocol scenarios: run once, with 1 worker and no access log, against proxies started from
    # the *-proto templates (an h2c port and a TLS port with ALPN h2,http/1.1 besides HTTP/1.1).
    Scenario("h2c", "small GET over cleartext HTTP/2 (prior knowledge), 16 connections", 16, "/", proto="h2c"),
    Scenario("h2-tls", "small GET over HTTP/2 on TLS (ALPN h2), 16 connections", 16, "/", proto="h2"),
    Scenario("https1", "small GET over HTTP/1.1 on TLS, 64 connections", 64, "/", proto="https1"),
)}
PROTO_SCENARIOS = [s for s, sc in SCENARIOS.items() if sc.proto != "http1"]


def variant_name(workers: int, access_log: bool) -> str:
    return f"w{workers}" + ("+log" if access_log else "")


def case_name(sc: str, workers: int, access_log: bool) -> str:
    return f"{sc}/{variant_name(workers, access_log)}"


def write_lua(rundir: str, sc: Scenario) -> str:
    with open(LUA) as f:
        report = f.read()
    path = os.path.join(rundir, f"wrk-{sc.name}.lua")
    with open(path, "w") as f:
        f.write(sc.lua + report)
    return path


# --------------------------------------------------------------------------- wrk

def run_tool(name, cmd, args, duration, rundir, tag):
    """Run a load generator (on CPU 1 with --taskset): (its completed process, the CPU seconds it
    used); its output is kept in the run directory."""
    if args.taskset:
        cmd = ["taskset", "-c", "1"] + cmd
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 20)
    except subprocess.TimeoutExpired as e:
        raise RuntimeError(f"{name} did not finish within {duration + 20}s ({tag})") from e
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    with open(os.path.join(rundir, f"{name}-{tag.replace('/', '_')}.out"), "w") as f:
        f.write(r.stdout + r.stderr)
    return r, (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)


def run_wrk(tools, url, duration, conns, script, args, rundir, tag) -> tuple[dict, float, str]:
    cmd = [tools["wrk"], f"-t{args.threads}", f"-c{conns}", f"-d{duration}s",
           "--latency", "--timeout", "2s", "-s", script, url]
    r, wrk_cpu = run_tool("wrk", cmd, args, duration, rundir, tag)
    line = next((ln for ln in r.stdout.splitlines() if ln.startswith("BENCH_RESULT ")), None)
    if r.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({tag}, rc={r.returncode}): {(r.stderr or r.stdout)[-500:]}")
    return json.loads(line[len("BENCH_RESULT "):]), wrk_cpu, r.stdout


# --------------------------------------------------------------------------- h2load

_H2_UNITS = {"us": 1.0, "ms": 1e3, "s": 1e6}


def _h2_time_us(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s)", text)
    if not m:
        raise ValueError(text)
    return float(m.group(1)) * _H2_UNITS[m.group(2)]


def percentile(sorted_vals: list[float], p: float) -> float:
    """Nearest-rank percentile of an ascending list (as wrk's histogram reports them)."""
    if not sorted_vals:
        return 0.0
    k = max(1, min(len(sorted_vals), int(-(-p * len(sorted_vals) // 100))))
    return sorted_vals[k - 1]


def parse_h2load(out: str, log_path: str) -> tuple[dict, dict]:
    """h2load's summary and its --log-file (one line per request: start µs since the epoch,
    status, µs until the end of the response) as wrk_report.lua's BENCH_RESULT fields, plus what
    h2load says it negotiated."""
    def grab(pattern: str) -> re.Match:
        m = re.search(pattern, out, re.M)
        if m is None:
            raise RuntimeError(f"h2load output has no line matching {pattern!r}")
        return m
    fin = grab(r"^finished in ([\d.]+(?:us|ms|s)), ([\d.]+) req/s")
    req = grab(r"^requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, "
               r"(\d+) errored, (\d+) timeout")
    codes = grab(r"^status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx")
    traffic = grab(r"^traffic: .*?\((\d+)\) total")
    tfr = grab(r"^time for request:\s+(\S+)\s+(\S+)\s+(\S+)\s+(\S+)")
    lat = []
    with open(log_path) as f:
        for line in f:
            parts = line.split("\t")
            if len(parts) >= 3:
                lat.append(float(parts[2]))
    lat.sort()
    total, started, done, ok, failed, errored, timeout = (int(x) for x in req.groups())
    w = {"requests": done, "duration_us": int(_h2_time_us(fin.group(1))), "bytes": int(traffic.group(1)),
         # h2load's "errored" are requests that got no response (reset stream or lost connection)
         "connect": 0, "read": max(errored - timeout, 0), "write": 0, "timeout": timeout,
         "status": int(codes.group(3)) + int(codes.group(4)),
         "lat_min": lat[0] if lat else 0, "lat_mean": sum(lat) / len(lat) if lat else 0.0,
         "lat_max": lat[-1] if lat else 0,
         "p50": percentile(lat, 50), "p90": percentile(lat, 90), "p99": percentile(lat, 99),
         "p999": percentile(lat, 99.9)}
    info = {"h2load_requests": {"total": total, "started": started, "done": done, "succeeded": ok,
                                "failed": failed, "errored": errored, "timeout": timeout},
            "h2load_time_for_request_us": dict(zip(("min", "max", "mean", "sd"),
                                                   (_h2_time_us(x) for x in tfr.groups()))),
            "h2load_rps": float(fin.group(2)), "log_lines": len(lat)}
    for key, pattern in (("application_protocol", r"^Application protocol: (\S+)"),
                         ("tls_version", r"^TLS Protocol: (\S+)"), ("cipher", r"^Cipher: (\S+)")):
        m = re.search(pattern, out, re.M)
        if m:
            info[key] = m.group(1)
    return w, info


def run_h2load(tools, url, duration, conns, streams, args, rundir, tag, want_proto) -> tuple[dict, float, dict]:
    """h2load -c<conns> -m<streams> for <duration> s; per-request latencies from --log-file."""
    log_path = os.path.join(rundir, f"h2load-{tag.replace('/', '_')}.tsv")
    cmd = [tools["h2load"], "-t1", f"-c{conns}", f"-m{streams}", "-D", str(duration),
           f"--log-file={log_path}", url]
    r, tool_cpu = run_tool("h2load", cmd, args, duration, rundir, tag)
    if r.returncode != 0:
        raise RuntimeError(f"h2load failed ({tag}, rc={r.returncode}): {(r.stderr or r.stdout)[-500:]}")
    try:
        w, info = parse_h2load(r.stdout, log_path)
    finally:
        if not args.keep:
            try:
                os.unlink(log_path)  # ~30 bytes a request
            except OSError:
                pass
    if info.get("application_protocol") != want_proto:
        raise RuntimeError(f"h2load spoke {info.get('application_protocol')!r}, not {want_proto!r} ({tag})")
    if w["requests"] == 0:
        raise RuntimeError(f"h2load completed no request ({tag}): {r.stdout[-500:]}")
    return w, tool_cpu, info


def run_load(tools, sc: "Scenario", url, duration, conns, script, args, rundir, tag) -> tuple[dict, float, dict]:
    """The scenario's load generator: (BENCH_RESULT-style figures, its CPU seconds, extra info)."""
    if sc.tool == "h2load":
        return run_h2load(tools, url, duration, conns, args.h2_streams, args, rundir, tag,
                          "h2c" if sc.proto == "h2c" else "h2")
    w, cpu, _ = run_wrk(tools, url, duration, conns, script, args, rundir, tag)
    return w, cpu, {}


def load_desc(sc: "Scenario", conns: int, args) -> str:
    if sc.tool == "h2load":
        scheme = "http (h2c)" if sc.proto == "h2c" else "https (h2)"
        return f"h2load -t1 -c{conns} -m{args.h2_streams} {scheme} {sc.path}"
    return f"wrk -t{args.threads} -c{conns} {'https ' if sc.proto == 'https1' else ''}{sc.path}"


# --------------------------------------------------------------------------- peak RSS

PAGE = os.sysconf("SC_PAGE_SIZE")


def tree_rss(root: int) -> int:
    """Resident bytes of `root` and all its descendants (sum of each process's RSS: pages shared
    between a master and its forked workers are counted once per process)."""
    total = 0
    for pid in tree_pids(proc_snapshot(), root):
        try:
            with open(f"/proc/{pid}/statm", "rb") as f:
                total += int(f.read().split()[1]) * PAGE
        except (OSError, IndexError, ValueError):
            pass
    return total


class RssSampler(threading.Thread):
    """Samples tree_rss(root) every `interval` seconds while a wrk round runs; keeps the peak."""

    def __init__(self, root: int, interval: float = 0.25):
        super().__init__(daemon=True)
        self.root, self.interval = root, interval
        self.peak = tree_rss(root)
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.wait(self.interval):
            self.peak = max(self.peak, tree_rss(self.root))

    def finish(self) -> int:
        self._halt.set()
        self.join()
        self.peak = max(self.peak, tree_rss(self.root))
        return self.peak


# --------------------------------------------------------------------------- targets

class Target:
    def __init__(self, key: str, label: str, port: int, proc: Managed):
        self.key, self.label, self.port, self.proc = key, label, port, proc
        self.ports = {"http1": port}  # protocol scenarios add "h2c" and "tls"
        self.rounds: list[dict] = []


def start_target(key, label, cmd, port, rundir, timeout, cwd=None, name=None) -> Target:
    m = Managed(name or key, cmd, rundir, cwd=cwd)
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


def one_round(tools, args, t: Target, upstream: Managed, upstream_port: int, sc: Scenario,
              conns: int, script: str, duration: int, rundir: str, tag: str) -> dict:
    is_upstream = t.proc is upstream
    place_upstream(args, t, upstream)
    acc0 = upstream_accepts(upstream_port)
    rss = RssSampler(t.proc.pid)
    sys0, snap0 = system_cpu(), proc_snapshot()
    rss.start()
    try:
        w, wrk_cpu, info = run_load(tools, sc, target_url(t, sc), duration, conns, script, args, rundir, tag)
    finally:
        peak_rss = rss.finish()
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
        # wrk's byte count: response heads and bodies as received.
        "mb_per_s": w["bytes"] / secs / 1e6 if secs else 0.0,
        "p50_us": w["p50"], "p90_us": w["p90"], "p99_us": w["p99"], "p999_us": w["p999"],
        "lat_mean_us": w["lat_mean"], "lat_max_us": w["lat_max"],
        "non2xx": w["status"],  # wrk counts responses with status > 399 here
        "socket_errors": {k: w[k] for k in ("connect", "read", "write", "timeout")},
        "socket_errors_total": sum(w[k] for k in ("connect", "read", "write", "timeout")),
        "bytes": w["bytes"],
        "proxy_cpu_s": proxy_cpu,
        "proxy_procs": p1[1],
        "cpu_us_per_req": proxy_cpu * 1e6 / req,
        "peak_rss_bytes": peak_rss,
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
        # h2load: its own counters and latency summary, the protocol and TLS it negotiated
        **({"load_info": info} if info else {}),
    }


# --------------------------------------------------------------------------- report

def fmt_ms(us: float) -> str:
    return f"{us / 1000:.2f}ms"


def summarize(t_rounds: list[dict]) -> dict:
    r = t_rounds
    med = lambda k: statistics.median(x[k] for x in r)  # noqa: E731
    return {
        "rps": med("rps"), "rps_min": min(x["rps"] for x in r), "rps_max": max(x["rps"] for x in r),
        "mb_per_s": med("mb_per_s"),
        "p50_us": med("p50_us"), "p90_us": med("p90_us"), "p99_us": med("p99_us"),
        "p99_min_us": min(x["p99_us"] for x in r), "p99_max_us": max(x["p99_us"] for x in r),
        "max_us": max(x["lat_max_us"] for x in r),
        "cpu_us_per_req": med("cpu_us_per_req"),
        "cpu_min": min(x["cpu_us_per_req"] for x in r), "cpu_max": max(x["cpu_us_per_req"] for x in r),
        "peak_rss_bytes": max(x["peak_rss_bytes"] for x in r),
        "upstream_cpu_us_per_req": med("upstream_cpu_us_per_req"),
        "upstream_conns_opened": med("upstream_conns_opened"),
        "non2xx": sum(x["non2xx"] for x in r),
        "socket_errors": sum(x["socket_errors_total"] for x in r),
        "socket_errors_by_kind": {k: sum(x["socket_errors"][k] for x in r)
                                  for k in ("connect", "read", "write", "timeout")},
        "other_load_pct": statistics.median(100 * x["other_processes_cpu_s"] / x["seconds"] for x in r),
        "other_load_max_pct": max(100 * x["other_processes_cpu_s"] / x["seconds"] for x in r),
        "rounds": len(r),
    }


def spread(lo: float, hi: float, mid: float) -> str:
    return f"±{50 * (hi - lo) / mid:.0f}%" if mid else "-"


def _ratio(a: float, b: float) -> str:
    return f"x{a / b:.2f}" if b else "n/a"


def ratio_lines(summ: dict, skipped: dict) -> list[str]:
    out = []
    if "cyvoy" in summ:
        c = summ["cyvoy"]
        for peer in ("nginx", "haproxy"):
            if peer in summ:
                p = summ[peer]
                out.append(f"cyvoy/{peer:<8} cpu_us/req {_ratio(c['cpu_us_per_req'], p['cpu_us_per_req'])}   "
                           f"rps {_ratio(c['rps'], p['rps'])}   p99 {_ratio(c['p99_us'], p['p99_us'])}   "
                           f"peak RSS {_ratio(c['peak_rss_bytes'], p['peak_rss_bytes'])}")
    else:
        out.append(f"cyvoy ratios: n/a ({skipped.get('cyvoy', 'cyvoy not measured').splitlines()[0]})")
    if "cyvoy" in summ and "cyvoy-hc" in summ:
        c, hc = summ["cyvoy"], summ["cyvoy-hc"]
        out.append(f"cyvoy+hc/cyvoy cpu_us/req {_ratio(hc['cpu_us_per_req'], c['cpu_us_per_req'])}   "
                   f"rps {_ratio(hc['rps'], c['rps'])}   (active health checks on: should be x1.00 within noise)")
    if "nginx" in summ and "haproxy" in summ:
        n, h = summ["nginx"], summ["haproxy"]
        out.append(f"(reference) haproxy/nginx cpu_us/req {_ratio(h['cpu_us_per_req'], n['cpu_us_per_req'])}   "
                   f"rps {_ratio(h['rps'], n['rps'])}   p99 {_ratio(h['p99_us'], n['p99_us'])}")
    return out


def case_report(case: dict, labels: dict, skipped: dict, args) -> str:
    sc = SCENARIOS[case["scenario"]]
    summ, rounds = case["summary"], case["rounds"]
    out = [""]
    out.append(f"=== {case['name']}: {sc.title}; {case['workers']} worker(s)/thread(s) per proxy; "
               f"access log {'on' if case['access_log'] else 'off'}; {load_desc(sc, case['connections'], args)}, "
               f"{args.rounds} rounds x {args.duration}s")
    hdr = (f"{'target':<20} {'rps':>8} {'spread':>6} {'MB/s':>8} {'p50':>8} {'p90':>8} {'p99':>8} "
           f"{'max':>9} {'cpu_us/req':>10} {'spread':>6} {'peakRSS':>8} {'non2xx/sock':>12}")
    out.append(hdr)
    out.append("-" * len(hdr))
    for key in summ:
        s = summ[key]
        label = labels.get(key, key) + ("*" if case.get("upstream_from") and key == "upstream" else "")
        out.append(f"{label:<20} {s['rps']:>8.0f} {spread(s['rps_min'], s['rps_max'], s['rps']):>6} "
                   f"{s['mb_per_s']:>8.1f} {fmt_ms(s['p50_us']):>8} {fmt_ms(s['p90_us']):>8} "
                   f"{fmt_ms(s['p99_us']):>8} {fmt_ms(s['max_us']):>9} {s['cpu_us_per_req']:>10.1f} "
                   f"{spread(s['cpu_min'], s['cpu_max'], s['cpu_us_per_req']):>6} "
                   f"{s['peak_rss_bytes'] / 2**20:>6.1f}Mi {str(s['non2xx']) + '/' + str(s['socket_errors']):>12}")
    for key, why in case.get("skipped", {}).items():
        out.append(f"{key:<20} skipped: {why.splitlines()[0]}")
    if case.get("upstream_from"):
        out.append(f"* upstream measured directly in {case['upstream_from']} (it does not depend on the proxies' settings)")
    if case.get("negotiated"):
        out.append("negotiated (curl, then one OpenSSL-default handshake): " + "; ".join(
            f"{k}: HTTP/{v.get('http_version')}" + (f" {v['tls_version']} {v['cipher']} ALPN {v['alpn']}"
                                                     if "tls_version" in v else "")
            for k, v in case["negotiated"].items()))
    if sc.tool == "h2load":
        seen = {k: {(x["load_info"].get("application_protocol"), x["load_info"].get("tls_version"),
                     x["load_info"].get("cipher")) for x in v if "load_info" in x} for k, v in rounds.items()}
        out.append("h2load: " + "; ".join(f"{k}: " + ", ".join(" ".join(p for p in t if p) for t in sorted(v))
                                          for k, v in seen.items())
                   + "; latency from h2load's --log-file (no coordinated-omission correction, unlike wrk)")
    out.append("per round (rps | p99 | cpu_us/req): " + "; ".join(
        f"{k}: " + ", ".join(f"{x['rps']:.0f}|{fmt_ms(x['p99_us'])}|{x['cpu_us_per_req']:.1f}" for x in v)
        for k, v in rounds.items()))
    ups = ", ".join(f"{k}: {summ[k]['upstream_cpu_us_per_req']:.1f}" for k in summ if k != "upstream")
    conns = ", ".join(f"{k}: {summ[k]['upstream_conns_opened']:.0f}" for k in summ)
    out.append(f"sanity: upstream cpu_us/req while proxied — {ups}; upstream conns opened per round — {conns}")
    worst = max((summ[k]["other_load_max_pct"] for k in summ), default=0.0)
    if worst > 10:
        noisy = [x["tag"] for v in rounds.values() for x in v if 100 * x["other_processes_cpu_s"] / x["seconds"] > 10]
        out.append(f"WARNING: other load on the machine (up to {worst:.0f}% of a CPU) during "
                   f"{', '.join(noisy)} — those figures are skewed; rerun on a quiet machine")
    out.extend(ratio_lines(summ, skipped))
    return "\n".join(out)


def overview(cases: list[dict]) -> str:
    hdr = (f"{'scenario':<16} {'cyvoy rps':>9} {'MB/s':>7} {'cpu_us':>7} {'RSS Mi':>6} | "
           f"{'cy/nginx cpu':>12} {'rps':>5} {'p99':>5} | {'cy/haproxy cpu':>14} {'rps':>5} {'p99':>5} | {'errors cy/ng/ha':>15}")
    out = ["", "=== overview: cyvoy per scenario and its ratios (cpu and p99: below 1 is better; rps: above 1)",
           hdr, "-" * len(hdr)]

    def r(c, p, k):
        return f"{c[k] / p[k]:.2f}" if p and p[k] else "-"
    for case in cases:
        s = case["summary"]
        c, n, h = s.get("cyvoy"), s.get("nginx"), s.get("haproxy")
        err = "/".join(f"{x['non2xx'] + x['socket_errors']}" if x else "-" for x in (c, n, h))
        if c is None:
            out.append(f"{case['name']:<16} {'cyvoy not measured':>33} | {'':>24} | {'':>26} | {err:>15}")
            continue
        out.append(f"{case['name']:<16} {c['rps']:>9.0f} {c['mb_per_s']:>7.1f} {c['cpu_us_per_req']:>7.1f} "
                   f"{c['peak_rss_bytes'] / 2**20:>6.1f} | {r(c, n, 'cpu_us_per_req'):>12} {r(c, n, 'rps'):>5} "
                   f"{r(c, n, 'p99_us'):>5} | {r(c, h, 'cpu_us_per_req'):>14} {r(c, h, 'rps'):>5} "
                   f"{r(c, h, 'p99_us'):>5} | {err:>15}")
    return "\n".join(out)


def write_chart(cases: list[dict], path: str, meta: dict) -> str | None:
    """One panel per scenario: rps (left axis) and CPU µs/request (right axis) side by side for
    upstream (direct), nginx, HAProxy and cyvoy. Returns None, or why no chart was drawn."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib not installed (.venv/bin/pip install matplotlib)"
    keys = ["upstream", "nginx", "haproxy", "cyvoy"]
    variants = list(dict.fromkeys(c["variant"] for c in cases))
    scens = list(dict.fromkeys(c["scenario"] for c in cases))
    nrows, ncols = len(scens), len(variants)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 2.9 * nrows), squeeze=False)
    by = {(c["scenario"], c["variant"]): c for c in cases}
    for i, scn in enumerate(scens):
        for j, var in enumerate(variants):
            ax = axes[i][j]
            case = by.get((scn, var))
            if case is None:
                ax.axis("off")
                continue
            s = case["summary"]
            xs = range(len(keys))
            rps = [s[k]["rps"] / 1000 if k in s else 0 for k in keys]
            cpu = [s[k]["cpu_us_per_req"] if k in s and k != "upstream" else 0 for k in keys]
            if "upstream" in s:  # the upstream's own CPU when hit directly
                cpu[0] = s["upstream"]["cpu_us_per_req"]
            ax.bar([x - 0.2 for x in xs], rps, 0.4, color="tab:blue", label="k rps")
            ax.set_ylabel("k requests/s", color="tab:blue", fontsize=8)
            ax2 = ax.twinx()
            ax2.bar([x + 0.2 for x in xs], cpu, 0.4, color="tab:orange", label="CPU µs/req")
            ax2.set_ylabel("CPU µs/req", color="tab:orange", fontsize=8)
            ax.set_xticks(list(xs))
            ax.set_xticklabels(["upstream", "nginx", "haproxy", "cyvoy"], fontsize=8)
            for k, x in zip(keys, xs):
                if k not in s:
                    ax.text(x, 0, "n/a", ha="center", va="bottom", fontsize=7)
            ax.tick_params(labelsize=7)
            ax2.tick_params(labelsize=7)
            ax.set_title(f"{case['name']}" + (f" (upstream from {case['upstream_from']})"
                                               if case.get("upstream_from") else ""), fontsize=9)
    fig.suptitle(f"cyvoy bench {meta['date']} {meta['hostname']} ({meta['cpus']} CPUs, kernel {meta['kernel']})\n"
                 "blue = requests/s (left), orange = proxy CPU µs per request (right)", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.98))
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return None


# --------------------------------------------------------------------------- main

def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true",
                    help="only get64 with 1 worker and no access log, 2 rounds of 5 s (~1 min)")
    ap.add_argument("--scenarios", help=f"comma-separated subset of: {','.join(SCENARIOS)} (default: all; "
                                        f"--quick: get64). {','.join(PROTO_SCENARIOS)} always run with 1 "
                                        "worker and no access log, whatever --workers and --access-log say")
    ap.add_argument("--workers", help="comma-separated worker/thread counts per proxy (default 1,2; --quick: 1)")
    ap.add_argument("--access-log", default=None, choices=("off", "on", "both"),
                    help="run without access logs (off), with (on), or both (default both; --quick: off)")
    ap.add_argument("--rounds", type=int, help="rounds per target and scenario (default 2)")
    ap.add_argument("--duration", type=int, help="seconds per wrk round (default 3; --quick: 5)")
    ap.add_argument("--warmup", type=int, help="warm-up seconds per target and scenario (default 1; --quick: 2)")
    ap.add_argument("--connections", type=int, default=None,
                    help="wrk/h2load -c for every scenario (default: 64, get1k: 1000, h2c and h2-tls: 16)")
    ap.add_argument("--threads", type=int, default=1, help="wrk -t (default 1)")
    ap.add_argument("--h2-streams", type=int, default=10,
                    help="h2load -m: concurrent streams per connection in h2c and h2-tls (default 10)")
    ap.add_argument("--taskset", action="store_true", help="pin each proxy to CPU 0, wrk and the upstream to CPU 1 (upstream to 0 when it is the target)")
    ap.add_argument("--only", help="comma-separated subset of: upstream,nginx,haproxy,cyvoy,cyvoy-hc "
                                   "(cyvoy-hc: full run, get64/w1 only)")
    ap.add_argument("--python", default=None,
                    help="interpreter for cyvoy (default: REPO/.venv/bin/python, else this one)")
    ap.add_argument("--keep", action="store_true", help="keep the run's temp dir (configs, logs, wrk output)")
    ap.add_argument("--no-json", action="store_true", help="do not write bench/results/*.json (nor the chart)")
    ap.add_argument("--json", help="write the results JSON here instead of bench/results/ (chart: same name, .png)")
    ap.add_argument("--no-chart", action="store_true", help="do not draw the PNG chart")
    a = ap.parse_args(argv)
    a.rounds_given = a.rounds is not None
    if a.rounds is None:
        a.rounds = 2
    if a.duration is None:
        a.duration = 5 if a.quick else 3
    if a.warmup is None:
        a.warmup = 2 if a.quick else 1
    a.scenario_list = [x.strip() for x in (a.scenarios or ("get64" if a.quick else ",".join(SCENARIOS))).split(",")
                       if x.strip()]
    if all(x in PROTO_SCENARIOS for x in a.scenario_list):
        a.rounds_given = True       # the protocol scenarios alone: the usual rounds
    bad = [x for x in a.scenario_list if x not in SCENARIOS]
    if bad:
        ap.error(f"unknown scenario(s) {bad}; choose from {','.join(SCENARIOS)}")
    try:
        a.worker_list = [int(x) for x in (a.workers or ("1" if a.quick else "1,2")).split(",") if x.strip()]
    except ValueError:
        ap.error("--workers takes comma-separated integers")
    if not a.worker_list or min(a.worker_list) < 1:
        ap.error("--workers must be >= 1")
    al = a.access_log or ("off" if a.quick else "both")
    a.log_list = {"off": [False], "on": [True], "both": [False, True]}[al]
    if a.rounds < 1 or a.duration < 1 or a.warmup < 0:
        ap.error("--rounds and --duration must be >= 1, --warmup >= 0")
    if a.h2_streams < 1:
        ap.error("--h2-streams must be >= 1")
    return a


def _sigterm(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def haproxy_can_log_stdout(version_line: str) -> bool:
    """`log stdout` exists since HAProxy 1.9."""
    m = re.search(r"version (\d+)\.(\d+)", version_line)
    return bool(m) and (int(m.group(1)), int(m.group(2))) >= (1, 9)


def add_cyvoy_access_log(conf_path: str, log_path: str) -> None:
    """An Envoy file access log in the default format on cyvoy's HTTP connection manager."""
    with open(conf_path) as f:
        text = f.read()
    block = ("          access_log:\n"
             "          - name: envoy.access_loggers.file\n"
             "            typed_config:\n"
             '              "@type": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog\n'
             f"              path: {log_path}\n")
    anchor = "          stat_prefix: bench\n"
    if anchor not in text:
        raise RuntimeError("cannot place the access log in the cyvoy config")
    with open(conf_path, "w") as f:
        f.write(text.replace(anchor, anchor + block, 1))


def file_lines(path: str) -> tuple[int, int]:
    """(bytes, lines) of a file, (0, 0) if missing."""
    try:
        n = 0
        with open(path, "rb") as f:
            while True:
                b = f.read(1 << 20)
                if not b:
                    break
                n += b.count(b"\n")
        return os.path.getsize(path), n
    except OSError:
        return 0, 0


def _have_cryptography() -> bool:
    try:
        import cryptography  # noqa: F401
        return True
    except ImportError:
        return False


def make_cert(rundir: str, tools: dict[str, str]) -> dict[str, str]:
    """A self-signed EC P-256 certificate for CN=localhost / IP 127.0.0.1 in the run dir, with the
    openssl CLI, else the cryptography package. Returns the template values: TLS_CERT, TLS_KEY and
    TLS_PEM (certificate and key in one file, for HAProxy's `crt`)."""
    cert, key, pem = (os.path.join(rundir, n) for n in ("tls-cert.pem", "tls-key.pem", "tls-haproxy.pem"))
    if tools.get("openssl"):
        r = subprocess.run([tools["openssl"], "req", "-x509", "-newkey", "ec", "-pkeyopt",
                            "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2", "-subj", "/CN=localhost",
                            "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
                            "-keyout", key, "-out", cert], capture_output=True, text=True, timeout=30)
        if r.returncode != 0:
            raise RuntimeError(f"openssl could not make the bench certificate: {r.stderr.strip()[-300:]}")
    else:
        import ipaddress
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID
        k = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
        now = _dt.datetime.now(_dt.timezone.utc)
        c = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(k.public_key())
             .serial_number(x509.random_serial_number())
             .not_valid_before(now - _dt.timedelta(minutes=5)).not_valid_after(now + _dt.timedelta(days=2))
             .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                         x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                            critical=False)
             .sign(k, hashes.SHA256()))
        with open(cert, "wb") as f:
            f.write(c.public_bytes(serialization.Encoding.PEM))
        with open(key, "wb") as f:
            f.write(k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption()))
    with open(pem, "wb") as out:
        for part in (cert, key):
            with open(part, "rb") as f:
                out.write(f.read())
    for path in (key, pem):
        os.chmod(path, 0o600)  # read by each proxy's first process, as the user running the bench
    return {"TLS_CERT": cert, "TLS_KEY": key, "TLS_PEM": pem}


def nginx_h2_listen(version_line: str, port: int, tls: bool) -> str:
    """nginx's HTTP/2 listen: `http2 on;` from 1.25.1, the `http2` listen parameter before it."""
    m = re.search(r"nginx/(\d+)\.(\d+)\.(\d+)", version_line)
    listen = f"listen 127.0.0.1:{port}{' ssl' if tls else ''}"
    if m and tuple(int(x) for x in m.groups()) >= (1, 25, 1):
        return f"{listen} backlog=4096;\n        http2 on;"
    return f"{listen} http2 backlog=4096;"


def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    needs = ["nginx", "haproxy", "wrk"]
    if any(SCENARIOS[s].tool == "h2load" for s in args.scenario_list):
        needs.append("h2load")
    if any(s in PROTO_SCENARIOS for s in args.scenario_list):
        needs.append("curl")
        if which("openssl") is None and not _have_cryptography():
            needs.append("openssl")
    tools = ensure_tools(needs)
    if which("openssl"):
        tools["openssl"] = which("openssl")  # type: ignore[assignment]
    cpus = os.cpu_count() or 1
    if args.taskset and cpus < 2:
        log("bench: --taskset needs at least 2 CPUs")
        return 2
    if args.taskset and which("taskset") is None:
        log("bench: --taskset needs taskset (util-linux)")
        return 2
    # cyvoy-hc: cyvoy with active health checks on (every 1 s per host): the full run shows that
    # the health table costs the hot path nothing measurable (get64/w1 only); the quick run keeps
    # to the headline.
    all_keys = ("upstream", "nginx", "haproxy", "cyvoy", "cyvoy-hc")
    wanted = ["upstream", "nginx", "haproxy", "cyvoy"] + ([] if args.quick else ["cyvoy-hc"])
    if args.only:
        sel = [x.strip() for x in args.only.split(",") if x.strip()]
        bad = [x for x in sel if x not in all_keys]
        if bad:
            log(f"bench: unknown target(s) {bad}; choose from {list(all_keys)}"
                + (" (scenarios are chosen with --scenarios)" if any(b in SCENARIOS for b in bad) else ""))
            return 2
        wanted = [x for x in all_keys if x in sel]
    py = args.python or (os.path.join(REPO, ".venv", "bin", "python")
                         if os.path.exists(os.path.join(REPO, ".venv", "bin", "python")) else sys.executable)

    # Ctrl-C, kill and hang-up all end in the finally below (even if SIGINT was ignored by a parent shell).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _sigterm)
    signal.signal(signal.SIGHUP, _sigterm)
    started: list[Managed] = []
    rundir = tempfile.mkdtemp(prefix="cyvoy-bench-")
    t_start = time.monotonic()
    versions = tool_versions(tools)
    meta = {
        "date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "hostname": socket.gethostname(),
        "cpus": cpus,
        "kernel": platform.release(),
        "python_for_cyvoy": py,
        "versions": versions,
        "loadavg_before": open("/proc/loadavg").read().split()[:3],
    }
    pin = ["taskset", "-c", "0"] if args.taskset else []
    labels = {"upstream": "upstream (direct)", "nginx": "nginx", "haproxy": "haproxy", "cyvoy": "cyvoy",
              "cyvoy-hc": "cyvoy +health checks"}
    variants = [(w, lg) for lg in args.log_list for w in args.worker_list]
    ha_log = haproxy_can_log_stdout(versions.get("haproxy", ""))
    notes: list[str] = []
    if True in args.log_list and "haproxy" in wanted and not ha_log:
        notes.append(f"HAProxy skipped in the +log variants: {versions.get('haproxy')} has no `log stdout`")
    cases: list[dict] = []
    commands: dict[str, dict] = {}
    skipped_all: dict[str, str] = {}
    access_logs: dict[str, dict] = {}
    try:
        up1, up2 = free_ports(2)
        vals = {"RUNDIR": rundir, "UPSTREAM_PORT_1": up1, "UPSTREAM_PORT_2": up2}
        # Fixed bodies for /64k and /1m. Run as root, nginx's workers are `nobody`: they must be
        # able to traverse the (0700) temp dir and read these two files.
        os.chmod(rundir, 0o711)
        for name, size in (("body-64k", 64 * 1024), ("body-1m", 1024 * 1024)):
            with open(os.path.join(rundir, name), "wb") as f:
                f.write((b"0123456789abcdef" * (size // 16 + 1))[:size])
            os.chmod(os.path.join(rundir, name), 0o644)
        scripts = {s: write_lua(rundir, SCENARIOS[s]) for s in args.scenario_list}
        if any(s in PROTO_SCENARIOS for s in args.scenario_list):
            vals.update(make_cert(rundir, tools))
            meta["tls_certificate"] = "self-signed, EC P-256, CN=localhost (made for this run)"

        # Upstream: unpinned by default; with --taskset, place_upstream() moves it per round.
        conf = render("upstream-nginx.conf", os.path.join(rundir, "upstream-nginx.conf"), vals)
        up = start_target("upstream", labels["upstream"],
                          [tools["nginx"], "-p", rundir, "-e", os.path.join(rundir, "upstream-nginx.error.log"),
                           "-c", conf], up1, rundir, 10)
        started.append(up.proc)
        smoke(up2)
        commands["upstream"] = {"cmd": up.proc.cmd}

        def keys_for(workers, lg, scn):
            if scn in PROTO_SCENARIOS:  # no direct upstream row (it speaks neither TLS nor h2), no -hc
                return [k for k in ("nginx", "haproxy", "cyvoy") if k in wanted]
            ks = [k for k in ("nginx", "haproxy", "cyvoy") if k in wanted]
            if lg and not ha_log and "haproxy" in ks:
                ks.remove("haproxy")
            if "cyvoy-hc" in wanted and (workers, lg, scn) == (1, False, "get64"):
                ks.append("cyvoy-hc")
            return ks

        def conns_of(scn):
            return args.connections or SCENARIOS[scn].connections

        # Phases: each variant runs the HTTP/1.1 scenarios with proxies from the plain templates;
        # then, once, the protocol scenarios with 1 worker, no access log, from the *-proto templates.
        phases = [(w, lg, [s for s in args.scenario_list if s not in PROTO_SCENARIOS], False)
                  for w, lg in variants]
        proto_list = [s for s in args.scenario_list if s in PROTO_SCENARIOS]
        if proto_list:
            phases.append((1, False, proto_list, True))
        phases = [p for p in phases if p[2]]

        n_runs, upstream_done = 0, set()
        for workers, lg, scns, proto in phases:
            for scn in scns:
                n_runs += len(keys_for(workers, lg, scn))
                if "upstream" in wanted and not proto and scn not in upstream_done:
                    n_runs += 1
                    upstream_done.add(scn)
        per_run = args.warmup + 0.3 + args.rounds * (args.duration + 0.6)
        est = n_runs * per_run + len(phases) * 6
        log(f"bench: {len(args.scenario_list)} scenario(s) in {len(phases)} phase(s) "
            f"({', '.join(variant_name(w, lg) + (' protocols' if proto else '') for w, lg, _, proto in phases)}), "
            f"{n_runs} target runs of {args.warmup}s warm-up + {args.rounds} x {args.duration}s; "
            f"estimated {est / 60:.1f} min; temp dir {rundir}")
        for n in notes:
            log(f"bench: {n}")

        upstream_case: dict[str, str] = {}
        for workers, lg, scns, proto in phases:
            vname = variant_name(workers, lg)
            suffix = vname.replace("+", "-") + ("-proto" if proto else "")
            proxies: dict[str, Target] = {}
            skipped: dict[str, str] = {}
            specs = []
            need = set()
            for scn in scns:
                need |= set(keys_for(workers, lg, scn))
            ports = dict(zip(("nginx", "haproxy", "cyvoy", "cyvoy-hc"), free_ports(4)))
            # protocol phase: each proxy's h2c and TLS ports (cyvoy's h2c is its AUTO listener)
            extra = {}
            if proto:
                more = free_ports(5)
                extra = {"nginx": {"h2c": more[0], "tls": more[1]}, "haproxy": {"h2c": more[2], "tls": more[3]},
                         "cyvoy": {"h2c": ports["cyvoy"], "tls": more[4]}}
            logs = {}
            if "nginx" in need:
                logs["nginx"] = os.path.join(rundir, f"nginx-access-{suffix}.log")
                if proto:
                    conf = render("nginx-proxy-proto.conf", os.path.join(rundir, f"nginx-proxy-{suffix}.conf"),
                                  dict(vals, PROXY_PORT=ports["nginx"], WORKERS=workers,
                                       H2C_LISTEN=nginx_h2_listen(versions.get("nginx", ""), extra["nginx"]["h2c"], False),
                                       TLS_LISTEN=nginx_h2_listen(versions.get("nginx", ""), extra["nginx"]["tls"], True)))
                else:
                    al = (f"access_log {logs['nginx']} combined buffer=64k flush=1s;" if lg else "access_log off;")
                    conf = render("nginx-proxy.conf", os.path.join(rundir, f"nginx-proxy-{suffix}.conf"),
                                  dict(vals, PROXY_PORT=ports["nginx"], WORKERS=workers, ACCESS_LOG=al))
                specs.append(("nginx", pin + [tools["nginx"], "-p", rundir, "-e",
                                              os.path.join(rundir, f"nginx-proxy-{suffix}.error.log"), "-c", conf],
                              None))
            if "haproxy" in need:
                logs["haproxy"] = os.path.join(rundir, f"haproxy-{suffix}.log")  # its stdout (Managed)
                if proto:
                    conf = render("haproxy-proto.cfg", os.path.join(rundir, f"haproxy-{suffix}.cfg"),
                                  dict(vals, PROXY_PORT=ports["haproxy"], WORKERS=workers,
                                       H2C_PORT=extra["haproxy"]["h2c"], TLS_PORT=extra["haproxy"]["tls"]))
                else:
                    conf = render("haproxy.cfg", os.path.join(rundir, f"haproxy-{suffix}.cfg"),
                                  dict(vals, PROXY_PORT=ports["haproxy"], WORKERS=workers,
                                       LOG_GLOBAL="    log stdout format raw local0\n" if lg else "",
                                       LOG_DEFAULTS="    log global\n    option httplog\n" if lg else ""))
                specs.append(("haproxy", pin + [tools["haproxy"], "-db", "-f", conf], None))
            for key, tmpl in (("cyvoy", "cyvoy-proto.yaml" if proto else "cyvoy.yaml"), ("cyvoy-hc", "cyvoy-hc.yaml")):
                if key in need:
                    conf = render(tmpl, os.path.join(rundir, f"{key}-{suffix}.yaml"),
                                  dict(vals, PROXY_PORT=ports[key], **({"TLS_PORT": extra["cyvoy"]["tls"]} if proto else {})))
                    if lg:
                        logs[key] = os.path.join(rundir, f"{key}-access-{suffix}.log")
                        add_cyvoy_access_log(conf, logs[key])
                    specs.append((key, pin + [py, "-m", "proxy", "-c", conf, "--workers", str(workers),
                                              "--log-level", "warning"], REPO))
            for key, cmd, cwd in specs:
                try:
                    t = start_target(key, labels[key], cmd, ports[key], rundir,
                                     20 if key.startswith("cyvoy") else 10, cwd=cwd, name=f"{key}-{suffix}")
                    if key in extra:
                        t.ports.update(extra[key])
                        try:
                            for p in extra[key].values():
                                wait_ready(t.proc, p, 10)
                        except StartError:
                            t.proc.stop()
                            raise
                except StartError as e:
                    if not key.startswith("cyvoy"):
                        raise RuntimeError(f"{key} ({vname}) failed to start: {e}") from e
                    skipped[key] = f"{key} failed to start: {e}"
                    log(f"bench: {skipped[key]}\nbench: continuing without {key} in {vname}")
                    continue
                started.append(t.proc)
                proxies[key] = t
                commands[f"{key}/{vname}" + ("/proto" if proto else "")] = {"cmd": t.proc.cmd}

            for scn in scns:
                sc = SCENARIOS[scn]
                name = case_name(scn, workers, lg)
                tl: list[Target] = []
                if "upstream" in wanted and not proto and scn not in upstream_case:
                    tl.append(up)
                tl += [proxies[k] for k in keys_for(workers, lg, scn) if k in proxies]
                rounds: dict[str, list] = {t.key: [] for t in tl}
                case_skipped = {k: v for k, v in skipped.items() if k in keys_for(workers, lg, scn)}
                conns = conns_of(scn)
                negotiated: dict[str, dict] = {}

                def drop_cyvoy(t: Target, tag: str, e: Exception) -> None:
                    # cyvoy is under development: losing it must not lose nginx's and HAProxy's figures.
                    case_skipped[t.key] = skipped[t.key] = f"{t.key} failed during {tag}: {e}"
                    log(f"bench: {skipped[t.key]}\n{t.proc.log_tail()}\nbench: continuing without {t.key} in {vname}")
                    tl.remove(t)
                    proxies.pop(t.key, None)
                    t.proc.stop()

                for t in list(tl):
                    try:
                        info = check_scenario(t, sc, tools)
                        if info:
                            negotiated[t.key] = info
                    except RuntimeError as e:
                        if not t.key.startswith("cyvoy"):
                            raise RuntimeError(f"{t.label} ({vname}): {e}") from e
                        drop_cyvoy(t, f"{name} check", e)
                if args.warmup:
                    for t in list(tl):
                        place_upstream(args, t, up.proc)
                        try:
                            run_load(tools, sc, target_url(t, sc), args.warmup, conns, scripts[scn], args,
                                     rundir, f"{name}-{t.key}-warmup")
                            if not t.proc.alive():
                                raise RuntimeError(f"{t.label} exited during warm-up")
                        except RuntimeError as e:
                            if not t.key.startswith("cyvoy"):
                                raise
                            drop_cyvoy(t, f"{name} warm-up", e)
                        time.sleep(0.05)
                # the protocol phase runs one round per target in a full run (the suite stays
                # under 15 minutes with the failover bench); --rounds given explicitly applies
                n_rounds = 1 if proto and not args.rounds_given else args.rounds
                for i in range(1, n_rounds + 1):
                    for t in list(tl):
                        tag = f"{name}-{t.key}-r{i}"
                        try:
                            r = one_round(tools, args, t, up.proc, up1, sc, conns, scripts[scn],
                                          args.duration, rundir, tag)
                        except RuntimeError as e:
                            if not t.key.startswith("cyvoy"):
                                raise
                            drop_cyvoy(t, tag, e)
                            continue
                        rounds[t.key].append(r)
                        log(f"bench: {name:<14} round {i}/{n_rounds} {t.label:<18} {r['rps']:>8.0f} rps  "
                            f"p99 {fmt_ms(r['p99_us'])}  cpu {r['cpu_us_per_req']:.1f} us/req  "
                            f"rss {r['peak_rss_bytes'] / 2**20:.1f}Mi  errors {r['non2xx']}/{r['socket_errors_total']}")
                        time.sleep(0.05)
                rounds = {k: v for k, v in rounds.items() if v}
                summ = {k: summarize(v) for k, v in rounds.items()}
                case = {"name": name, "scenario": scn, "variant": vname, "workers": workers, "access_log": lg,
                        "connections": conns, "path": sc.path, "title": sc.title,
                        "summary": summ, "rounds": rounds, "skipped": case_skipped}
                if proto:
                    case["negotiated"] = negotiated
                    case["load"] = load_desc(sc, conns, args)
                if "upstream" in summ:
                    upstream_case[scn] = name
                elif scn in upstream_case:
                    # The ceiling does not depend on the proxies' settings: shown again from its case.
                    first = next(c for c in cases if c["name"] == upstream_case[scn])
                    case["summary"] = {"upstream": first["summary"]["upstream"], **summ}
                    case["upstream_from"] = upstream_case[scn]
                cases.append(case)
                print(case_report(case, labels, skipped, args), flush=True)
            for t in proxies.values():
                t.proc.stop()
                started.remove(t.proc)
            if lg:
                for key, path in logs.items():
                    size, lines = file_lines(path)
                    access_logs[f"{key}/{vname}"] = {"path": os.path.basename(path), "bytes": size, "lines": lines}
                    try:
                        os.unlink(path)  # can be hundreds of MB; the size and line count are kept
                    except OSError:
                        pass
                print("access logs written in " + vname + ": " + ", ".join(
                    f"{k.split('/')[0]} {v['lines']} lines, {v['bytes'] / 2**20:.1f} MiB"
                    for k, v in access_logs.items() if k.endswith("/" + vname)), flush=True)
            skipped_all.update({f"{k}/{vname}" + ("/proto" if proto else ""): v for k, v in skipped.items()})
        if not any(c["summary"] for c in cases):
            raise RuntimeError("every target failed")

        meta["elapsed_s"] = round(time.monotonic() - t_start, 1)
        meta["loadavg_after"] = open("/proc/loadavg").read().split()[:3]
        out = [overview(cases)] if len(cases) > 1 else []
        head = cases[0]
        hs = head["summary"]
        out.append("")
        out.append(f"cyvoy bench — {meta['hostname']}, {meta['cpus']} CPUs, kernel {meta['kernel']}, "
                   f"{args.rounds} rounds x {args.duration}s per target and scenario, "
                   f"taskset={'proxy:0 wrk+upstream:1' if args.taskset else 'off'}; "
                   f"{versions.get('nginx')}; {versions.get('haproxy')}; {versions.get('wrk')}")
        for n in notes:
            out.append(n)
        out.append(f"headline ({head['name']}: {head['title']}, {head['workers']} worker(s), access log "
                   f"{'on' if head['access_log'] else 'off'}):")
        if "cyvoy" in hs and "nginx" in hs:
            out.append(f"  cyvoy/nginx  CPU per request x{hs['cyvoy']['cpu_us_per_req'] / hs['nginx']['cpu_us_per_req']:.2f}"
                       f"   requests/s x{hs['cyvoy']['rps'] / hs['nginx']['rps']:.2f}")
        if "cyvoy" in hs and "haproxy" in hs:
            out.append(f"  cyvoy/haproxy CPU per request x{hs['cyvoy']['cpu_us_per_req'] / hs['haproxy']['cpu_us_per_req']:.2f}"
                       f"   requests/s x{hs['cyvoy']['rps'] / hs['haproxy']['rps']:.2f}")
        if "cyvoy" not in hs:
            out.append(f"  cyvoy ratios: n/a ({head['skipped'].get('cyvoy', 'cyvoy not measured').splitlines()[0]})")
        print("\n".join(out), flush=True)
        if not args.no_json:
            path = args.json or os.path.join(
                RESULTS, f"{_dt.datetime.now().strftime('%Y-%m-%d_%H%M%S')}-{meta['hostname']}.json")
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
            doc = {
                "meta": meta,
                "args": vars(args),
                "scenarios": {s: {"title": SCENARIOS[s].title, "path": SCENARIOS[s].path,
                                  "connections": conns_of(s), "lua": SCENARIOS[s].lua,
                                  "proto": SCENARIOS[s].proto, "tool": SCENARIOS[s].tool,
                                  **({"streams_per_connection": args.h2_streams}
                                     if SCENARIOS[s].tool == "h2load" else {})}
                              for s in args.scenario_list},
                "notes": notes,
                "commands": commands,
                "skipped": skipped_all,
                "access_logs": access_logs,
                "cases": cases,
            }
            with open(path, "w") as f:
                json.dump(doc, f, indent=2)
            rel = lambda p: os.path.relpath(p, REPO) if p.startswith(REPO) else p  # noqa: E731
            print(f"\nresults: {rel(path)} ({meta['elapsed_s']}s)", flush=True)
            if not args.no_chart:
                png = os.path.splitext(path)[0] + ".png"
                why = write_chart(cases, png, meta)
                print(f"chart: {rel(png)}" if why is None else f"chart: not drawn: {why}", flush=True)
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
