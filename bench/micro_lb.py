"""Micro benchmark: ns per pick of each load-balancing policy at 3, 100 and 1000 hosts.

Two figures per case:
  c_loop   picks in a C loop inside Cython (LB.bench: n calls of the cpdef pick through its C
           entry point, what a Cython caller such as the connection manager pays);
  py_call  a Python `for` loop calling lb.pick(...) minus the same loop calling a no-op Python
           function with the same arguments (the pick's own cost seen from Python);
  py_total the same Python loop, per pick, overhead included.
Then ROUND_ROBIN and LEAST_REQUEST at 100 hosts with every CPU picking at once in forked
processes (the shared rr cursor / active counters bouncing between cores).
Weighted cases use weights 1..5; hash policies get a different hash per pick. Active counts and
EWMAs are spread so LEAST_REQUEST / least response time compare real values.

Usage: .venv/bin/python bench/micro_lb.py [--picks N] [--json]
"""
import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from proxy._fastpath import lb  # noqa: E402
from proxy._fastpath.hosttable import HostTable  # noqa: E402

LRT = {"lb_config": {"load_balancing_policy": {"policies": [
    {"typed_extension_config": {"name": "cyvoy.least_response_time", "typed_config": {}}}]}}}

CASES = [
    ("ROUND_ROBIN", {"lb_policy": "ROUND_ROBIN"}, False, False),
    ("ROUND_ROBIN weighted", {"lb_policy": "ROUND_ROBIN"}, True, False),
    ("RANDOM", {"lb_policy": "RANDOM"}, False, False),
    ("RANDOM weighted", {"lb_policy": "RANDOM"}, True, False),
    ("LEAST_REQUEST", {"lb_policy": "LEAST_REQUEST"}, False, False),
    ("LEAST_REQUEST weighted", {"lb_policy": "LEAST_REQUEST"}, True, False),
    ("cyvoy.least_response_time", LRT, False, False),
    ("RING_HASH", {"lb_policy": "RING_HASH"}, False, True),
    ("MAGLEV", {"lb_policy": "MAGLEV"}, False, True),
]


def build(n, cfg, weighted):
    t = HostTable(n, 1)
    t.set_cluster(0, 0, n)
    for i in range(n):
        t.set_host(i, 0, f"10.{i // 65536}.{i // 256 % 256}.{i % 256}", 8080,
                   1 + i % 5 if weighted else 1, 0)
        for _ in range(i % 7):
            t.inc_active(i)
        t.record(i, 200, False, 1_000_000 + (i * 7919) % 5_000_000, 1, 10e9)
    b = lb.make_lb(t, 0, cfg, [list(range(n))])
    b.pick(12345, True)            # build lazily-built structures outside the timing
    return t, b


def c_loop(b, picks, hashed):
    best = None
    for _ in range(3):
        ns = b.bench(picks, 0x9E3779B97F4A7C15, hashed, hashed)
        best = ns if best is None else min(best, ns)
    return best / picks


def py_call(b, picks, hashed):
    pick = b.pick
    keys = [(k * 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF for k in range(1024)]

    def timed(fn):
        t0 = time.perf_counter_ns()
        for k in range(picks):
            fn(keys[k & 1023], hashed)
        return time.perf_counter_ns() - t0

    def noop(a, b):
        return 0

    best = total = None
    for _ in range(3):
        tp = timed(pick)
        d = tp - timed(noop)
        best = d if best is None else min(best, d)
        total = tp if total is None else min(total, tp)
    return best / picks, total / picks


def contended(cfg, picks, procs):
    """ns per pick in this process while procs - 1 forked processes pick on the same table."""
    t, b = build(100, cfg, False)
    r, w = os.pipe()
    kids = []
    for _ in range(procs - 1):
        pid = os.fork()
        if pid == 0:
            try:
                os.read(r, 1)
                b.bench(picks)
            finally:
                os._exit(0)
        kids.append(pid)
    os.write(w, b"g" * (procs - 1))
    ns = b.bench(picks)
    for pid in kids:
        os.waitpid(pid, 0)
    return ns / picks


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--picks", type=int, default=200_000)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    rows = []
    for name, cfg, weighted, hashed in CASES:
        for n in (3, 100, 1000):
            _, b = build(n, cfg, weighted)
            pc, pt = py_call(b, args.picks // 4, hashed)
            rows.append({"policy": name, "hosts": n,
                         "c_loop_ns": round(c_loop(b, args.picks, hashed), 1),
                         "py_call_ns": round(pc, 1), "py_total_ns": round(pt, 1)})
    procs = max(2, os.cpu_count() or 2)
    cont = [{"policy": name, "hosts": 100, "processes": procs,
             "c_loop_ns": round(contended(cfg, args.picks * 5, procs), 1)}
            for name, cfg in (("ROUND_ROBIN", {"lb_policy": "ROUND_ROBIN"}),
                              ("LEAST_REQUEST", {"lb_policy": "LEAST_REQUEST"}))]
    if args.json:
        print(json.dumps({"single": rows, "contended": cont}, indent=1))
        return
    print(f"{'policy':28} {'hosts':>5} {'c_loop':>8} {'py_call':>8} {'py_total':>9}   (ns per pick)")
    for r in rows:
        print(f"{r['policy']:28} {r['hosts']:>5} {r['c_loop_ns']:>8} {r['py_call_ns']:>8} "
              f"{r['py_total_ns']:>9}")
    for r in cont:
        print(f"{r['policy']:28} {r['hosts']:>5} {r['c_loop_ns']:>8}   with {r['processes']} "
              "processes picking at once")


if __name__ == "__main__":
    main()
