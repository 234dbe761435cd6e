"""ROUND_ROBIN: one rotation shared by every process, exact weighted proportions per cycle,
smoothness, slow start."""
import json
import os
from collections import Counter

from proxy._fastpath import hosttable as ht
from proxy._fastpath import lb
from proxy._fastpath.hosttable import HostTable


def make_table(weights, priority=0):
    t = HostTable(len(weights), 1)
    t.set_cluster(0, 0, len(weights))
    for i, w in enumerate(weights):
        t.set_host(i, 0, f"10.0.{i // 250}.{i % 250 + 1}", 8080, w, priority)
    return t


def rr(t, **kw):
    return lb.make_lb(t, 0, {"lb_policy": "ROUND_ROBIN"}, [list(range(t.n_hosts))], **kw)


def _fork(fn):
    """Run fn() -> JSON-able in a child; returns (pid, read end)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(r)
            data = json.dumps(fn()).encode()
            with os.fdopen(w, "wb") as f:
                f.write(data)
        finally:
            os._exit(0)
    os.close(w)
    return pid, r


def _collect(pid, r):
    with os.fdopen(r, "rb") as f:
        data = f.read()
    os.waitpid(pid, 0)
    return json.loads(data)


def test_unweighted_rotation_is_global_across_two_processes():
    t = make_table([1] * 5)
    to_child_r, to_child_w = os.pipe()
    to_parent_r, to_parent_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            b = rr(t)
            for _ in range(10):
                os.read(to_child_r, 1)                       # wait for our turn
                os.write(to_parent_w, bytes([b.pick()]))
        finally:
            os._exit(0)
    b = rr(t)
    seq = []
    for _ in range(10):                                      # strictly alternate picks
        seq.append(b.pick())
        os.write(to_child_w, b"g")
        seq.append(os.read(to_parent_r, 1)[0])
    os.waitpid(pid, 0)
    assert seq == [0, 1, 2, 3, 4] * 4


def test_unweighted_concurrent_picks_split_exactly():
    t = make_table([1] * 3)
    pid, r = _fork(lambda: Counter(rr(t).pick() for _ in range(30000)))
    mine = Counter(rr(t).pick() for _ in range(30000))
    theirs = _collect(pid, r)
    assert [mine[i] + theirs[str(i)] for i in range(3)] == [20000] * 3


def test_weighted_rr_exact_proportions_over_full_cycles_across_two_processes():
    weights = [1, 2, 3, 4]                                   # cycle of 10
    t = make_table(weights)
    pid, r = _fork(lambda: Counter(rr(t).pick() for _ in range(25000)))
    mine = Counter(rr(t).pick() for _ in range(35000))
    theirs = _collect(pid, r)
    total = [mine[i] + theirs.get(str(i), 0) for i in range(4)]
    assert total == [6000, 12000, 18000, 24000]              # 6000 cycles, exact


def test_weighted_rr_is_smooth():
    t = make_table([5, 1, 1])
    b = rr(t)
    seq = [b.pick() for _ in range(7 * 100)]
    run = longest = 0
    for x in seq:
        run = run + 1 if x == 0 else 0
        longest = max(longest, run)
    assert longest < 5                                       # never 5 in a row, even across cycles
    assert Counter(seq) == {0: 500, 1: 100, 2: 100}
    assert b.source(0).sequence == [0, 0, 1, 0, 2, 0, 0]     # nginx smooth weighted RR


def test_large_weighted_cycle_built_by_heap_is_still_exact():
    weights = [1 + i % 20 for i in range(1000)]              # n * W > WRR_NAIVE_LIMIT
    assert len(weights) * sum(weights) > lb.WRR_NAIVE_LIMIT
    t = make_table(weights)
    b = rr(t)
    W = sum(weights)
    got = Counter(b.pick() for _ in range(W))
    assert [got[i] for i in range(1000)] == weights


def test_weights_reduced_by_gcd():
    b = rr(make_table([300, 100, 200]))
    b.pick()
    assert b.source(0).sequence == [0, 2, 0, 1, 2, 0]       # cycle of 6, not 600


def test_weighted_rr_rebuilt_when_a_host_fails():
    t = make_table([3, 1, 1])
    b = rr(t)
    assert Counter(b.pick() for _ in range(500)) == {0: 300, 1: 100, 2: 100}
    t.set_flags(0, ht.FAILED_ACTIVE_HC)
    got = Counter(b.pick() for _ in range(500))
    assert got[0] == 0 and abs(got[1] - got[2]) <= 1


def test_slow_start_ramps_weight():
    now = [1_000_000_000_000]
    t = make_table([1, 1])
    cfg = {"lb_policy": "ROUND_ROBIN",
           "lb_config": {"round_robin_lb_config": {"slow_start_config": {
               "slow_start_window": 10.0, "aggression": {"default_value": 1.0},
               "min_weight_percent": 10.0}}}}
    t.set_healthy_since_ns(1, now[0])                      # host 1 just became healthy
    b = lb.make_lb(t, 0, cfg, [[0, 1]], clock=lambda: now[0])

    def share():
        got = Counter(b.pick() for _ in range(1100))
        return got[1] / 1100

    assert abs(share() - 1 / 11) < 0.01                      # min_weight_percent 10%: 1 : 0.1
    now[0] += 5_000_000_000                                  # half the window: 1 : 0.5
    assert abs(share() - 1 / 3) < 0.01
    now[0] += 2_500_000_000                                  # 75%: 1 : 0.75
    assert abs(share() - 0.75 / 1.75) < 0.01
    now[0] += 3_000_000_000                                  # past the window: equal again
    assert abs(share() - 0.5) < 0.01


def test_slow_start_aggression_shapes_the_ramp():
    now = [5_000_000_000_000]
    t = make_table([1, 1])
    cfg = {"lb_policy": "ROUND_ROBIN",
           "lb_config": {"round_robin_lb_config": {"slow_start_config": {
               "slow_start_window": 10.0, "aggression": {"default_value": 2.0}}}}}
    t.set_healthy_since_ns(1, now[0] - 2_500_000_000)     # 25% of the window
    b = lb.make_lb(t, 0, cfg, [[0, 1]], clock=lambda: now[0])
    got = Counter(b.pick() for _ in range(3000))
    # (0.25)^(1/2) = 0.5 -> 1 : 0.5
    assert abs(got[1] / 3000 - 1 / 3) < 0.01
