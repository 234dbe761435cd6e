"""LEAST_REQUEST (P2C / full scan / weighted EDF), RANDOM and cyvoy.least_response_time over the
shared `active` gauge and latency EWMA."""
import os
from collections import Counter

from proxy._fastpath import lb
from proxy._fastpath.hosttable import HostTable

LRT = {"lb_config": {"load_balancing_policy": {"policies": [
    {"typed_extension_config": {"name": "cyvoy.least_response_time", "typed_config": {}}}]}}}


def make_table(weights):
    t = HostTable(len(weights), 1)
    t.set_cluster(0, 0, len(weights))
    for i, w in enumerate(weights):
        t.set_host(i, 0, f"10.0.0.{i + 1}", 8080, w, 0)
    return t


def make(t, cfg, **kw):
    return lb.make_lb(t, 0, cfg, [list(range(t.n_hosts))], **kw)


def set_active(t, i, n):
    while t.active(i) < n:
        t.inc_active(i)
    while t.active(i) > n:
        t.dec_active(i)


def test_least_request_avoids_a_host_with_high_active():
    t = make_table([1] * 10)
    set_active(t, 3, 50)
    b = make(t, {"lb_policy": "LEAST_REQUEST"})
    got = Counter(b.pick() for _ in range(20000))
    # P2C: host 3 only wins when both draws are host 3 (1%)
    assert got[3] / 20000 < 0.02
    assert all(abs(got[i] / 20000 - 0.99 / 9) < 0.02 for i in range(10) if i != 3)


def test_least_request_sees_active_from_another_process():
    t = make_table([1] * 3)
    b = make(t, {"lb_policy": "LEAST_REQUEST"})
    pid = os.fork()
    if pid == 0:
        try:
            for _ in range(7):
                t.inc_active(0)        # another worker's requests in flight
                t.inc_active(2)
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    assert {b.pick() for _ in range(200)} == {1}


def test_few_hosts_are_scanned_fully():
    # 3 hosts < 2 * choice_count: a full scan always finds the least loaded host
    t = make_table([1] * 3)
    for i, a in enumerate([5, 0, 5]):
        set_active(t, i, a)
    b = make(t, {"lb_policy": "LEAST_REQUEST"})
    assert {b.pick() for _ in range(2000)} == {1}
    # ties are broken uniformly
    set_active(t, 2, 0)
    got = Counter(b.pick() for _ in range(4000))
    assert got[0] == 0 and abs(got[1] - got[2]) < 400
    # with 4 hosts (= 2 * choice_count) it is P2C again: sometimes misses the idle host
    t4 = make_table([1] * 4)
    for i, a in enumerate([5, 0, 5, 5]):
        set_active(t4, i, a)
    got = Counter(make(t4, {"lb_policy": "LEAST_REQUEST"}).pick() for _ in range(4000))
    assert 0.35 < got[1] / 4000 < 0.53               # 1 - (3/4)^2 = 44%


def test_choice_count_from_config_widens_the_scan():
    t = make_table([1] * 8)
    for i in range(8):
        set_active(t, i, 0 if i == 6 else 3)
    cfg = {"lb_policy": "LEAST_REQUEST", "lb_config": {"least_request_lb_config": {"choice_count": 5}}}
    # 8 < 2 * 5: full scan
    assert {make(t, cfg).pick() for _ in range(500)} == {6}


def test_weighted_least_request_follows_weights_when_idle_and_load_when_busy():
    t = make_table([1, 3])
    b = make(t, {"lb_policy": "LEAST_REQUEST"})
    got = Counter(b.pick() for _ in range(4000))
    assert abs(got[1] / 4000 - 0.75) < 0.01          # EDF on weight / (active + 1)
    set_active(t, 1, 5)                               # 3 / 6 < 1 / 1
    got = Counter(b.pick() for _ in range(4000))
    assert abs(got[1] / 4000 - 1 / 3) < 0.01
    # active_request_bias 0: weights only
    b0 = make(t, {"lb_policy": "LEAST_REQUEST", "lb_config": {"least_request_lb_config": {
        "active_request_bias": {"default_value": 0.0}}}})
    got = Counter(b0.pick() for _ in range(4000))
    assert abs(got[1] / 4000 - 0.75) < 0.01


def test_least_request_slow_start_applies():
    now = [10**12]
    t = make_table([1, 1])
    t.set_healthy_since_ns(1, now[0] - 5 * 10**9)
    cfg = {"lb_policy": "LEAST_REQUEST", "lb_config": {"least_request_lb_config": {
        "slow_start_config": {"slow_start_window": 10.0}}}}
    b = make(t, cfg, clock=lambda: now[0])
    got = Counter(b.pick() for _ in range(3000))
    assert abs(got[1] / 3000 - 1 / 3) < 0.02          # weight 1 x 0.5 against 1


def test_random_is_uniform_or_weighted():
    t = make_table([1] * 4)
    got = Counter(make(t, {"lb_policy": "RANDOM"}).pick() for _ in range(40000))
    assert all(abs(got[i] / 40000 - 0.25) < 0.015 for i in range(4))
    t = make_table([1, 2, 7])
    got = Counter(make(t, {"lb_policy": "RANDOM"}).pick() for _ in range(40000))
    assert [round(got[i] / 40000, 1) for i in range(3)] == [0.1, 0.2, 0.7]


def _record_latency(t, i, ms, now):
    t.record(i, 200, False, int(ms * 1e6), now, 10e9)


def test_lrt_sends_under_10_percent_to_a_host_20ms_slower():
    t = make_table([1] * 5)
    for i in range(5):
        _record_latency(t, i, 25.0 if i == 4 else 5.0, 10**12)
    b = make(t, LRT)
    assert b.decay_ns == 10e9
    got = Counter(b.pick() for _ in range(20000))
    assert got[4] / 20000 < 0.10                      # P2C: 1/25 expected
    # few hosts: full scan never picks it
    t3 = make_table([1] * 3)
    for i in range(3):
        _record_latency(t3, i, 25.0 if i == 2 else 5.0, 10**12)
    assert 2 not in {make(t3, LRT).pick() for _ in range(2000)}


def test_lrt_counts_in_flight_requests_and_probes_new_hosts():
    t = make_table([1] * 3)
    for i in range(3):
        _record_latency(t, i, 5.0, 10**12)
    set_active(t, 0, 10)
    b = make(t, LRT)
    assert 0 not in {b.pick() for _ in range(500)}    # 5 ms x 11 in flight
    t.set_host(2, 0, "10.0.0.99", 8080, 1, 0)        # a new host: no EWMA yet, scores 0
    assert {b.pick() for _ in range(200)} == {2}


def test_lrt_options_from_typed_config():
    t = make_table([1] * 3)
    cfg = {"lb_config": {"load_balancing_policy": {"policies": [{"typed_extension_config": {
        "name": "cyvoy.least_response_time",
        "typed_config": {"@type": "type.googleapis.com/xds.type.v3.TypedStruct",
                         "value": {"decay_time": "0.5s", "choice_count": 3}}}}]}}}
    b = make(t, cfg)
    assert b.decay_ns == 0.5e9
    assert make(t, {"lb_policy": "ROUND_ROBIN"}).decay_ns == 10e9   # what record() uses elsewhere
