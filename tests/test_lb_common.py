"""Load balancers: what every policy shares (priority spill-over, degraded hosts, panic, health
flags taking effect on the next pick), the hash functions and the factory."""
import json
import os
from collections import Counter

import pytest

from proxy._fastpath import hosttable as ht
from proxy._fastpath import lb
from proxy._fastpath.hosttable import HostTable
from proxy.config.loader import build_bootstrap
from proxy.config.parse import parse_text

POLICIES = ["ROUND_ROBIN", "LEAST_REQUEST", "RANDOM", "RING_HASH", "MAGLEV"]


def make_table(spec):
    """spec: list of (weight, priority) per host; one cluster owning every slot."""
    t = HostTable(len(spec), 1)
    t.set_cluster(0, 0, len(spec))
    for i, (w, p) in enumerate(spec):
        t.set_host(i, 0, f"10.0.{i // 250}.{i % 250 + 1}", 8080, w, p)
    return t


def by_priority(t):
    out = {}
    for i in range(t.n_hosts):
        out.setdefault(t.priority(i), []).append(i)
    return [out.get(p, []) for p in range(max(out) + 1)]


def picks(b, n, hashed=False):
    return [b.pick(lb.hash_key(str(k).encode()), True) if hashed else b.pick() for k in range(n)]


# ---- hashes -----------------------------------------------------------------------------------

def test_xxh64_known_vectors():
    assert lb.xxh64(b"") == 0xEF46DB3751D8E999
    assert lb.xxh64(b"a") == 0xD24EC4F1A98C6E5B
    assert lb.xxh64(b"abc") == 0x44BC2CF5AD770999
    assert lb.xxh64(b"10.0.0.1:80_0") == 0x75041381E7371A08
    # >= 32 bytes: the four-lane stripe loop, then 8/4/1-byte tails
    assert lb.xxh64(b"0123456789abcdef0123456789abcdef") == 0x642A94958E71E6C5
    assert lb.xxh64(b"The quick brown fox jumps over the lazy dog") == 0x0B242D361FDA71BC
    assert lb.xxh64(bytes(range(100))) == 0x6AC1E58032166597
    # seed 1 (Maglev's skip hash)
    assert lb.xxh64(b"", 1) == 0xD5AFBA1336A3BE4B
    assert lb.xxh64(b"abc", 1) == 0xBEA9CA8199328908
    assert lb.xxh64(bytes(range(100)), 1) == 0x3D19A3A2098A7023
    assert lb.hash_key(b"abc") == lb.xxh64(b"abc")


def test_murmur2_matches_envoy_std_hash_seed_variant():
    # Values of libstdc++'s std::_Hash_bytes(key, len, 0xc70f6907), which Envoy's murmurHash2 is.
    assert lb.murmur2_64(b"") == 6142509188972423790
    assert lb.murmur2_64(b"a") == 4993892634952068459
    assert lb.murmur2_64(b"abc") == 3663726644998027833
    assert lb.murmur2_64(b"10.0.0.1:80_0") == 13659246566588789388
    assert lb.murmur2_64(b"hello world!") == 6594337730806245023
    assert lb.murmur2_64(b"0123456789abcdef0123456789") == 11043025283490211802
    assert lb.murmur2_64(b"[::1]:8080_17") == 3898055128844166522


# ---- priority load ----------------------------------------------------------------------------

@pytest.mark.parametrize("p0_healthy,p0_load", [(100, 100), (72, 100), (71, 99), (50, 70),
                                                (25, 35), (0, 0)])
def test_priority_spill_table_from_priority_rst(p0_healthy, p0_load):
    hl, dl, panic = lb.priority_loads([p0_healthy, 100], [0, 0], [100, 100])
    assert hl == [p0_load, 100 - p0_load] and dl == [0, 0] and panic == [False, False]


def test_priority_loads_scale_by_normalized_total_availability():
    # health 20% and 30% (factor 1.0 here): NTA 50 -> loads 40 / 60 (priority.rst), panic off
    hl, dl, panic = lb.priority_loads([20, 30], [0, 0], [100, 100], 100, 0)
    assert hl == [40, 60]
    # with the default 50% threshold both priorities panic -> total panic shares by host count
    hl, dl, panic = lb.priority_loads([20, 30], [0, 0], [100, 300], 100, 50)
    assert panic == [True, True] and hl == [25, 75]


def test_priority_spill_over_in_an_lb_follows_the_table():
    # P0 and P1 with 100 hosts each; failing P0 hosts moves load exactly per priority.rst
    t = make_table([(1, 0)] * 100 + [(1, 1)] * 100)
    b = lb.make_lb(t, 0, {"lb_policy": "ROUND_ROBIN"}, by_priority(t))
    assert b.priority_state()["healthy_load"] == [100, 0]
    for healthy, load in [(72, 100), (71, 99), (50, 70), (25, 35), (0, 0)]:
        for i in range(100):
            t.set_flags(i, ht.FAILED_ACTIVE_HC if i >= healthy else 0,
                        0 if i >= healthy else ht.FAILED_ACTIVE_HC)
        assert b.priority_state()["healthy_load"] == [load, 100 - load]
    # and the picks follow it: 50 healthy in P0 -> 70% of the picks
    for i in range(100):
        t.set_flags(i, ht.FAILED_ACTIVE_HC if i >= 50 else 0, 0 if i >= 50 else ht.FAILED_ACTIVE_HC)
    got = Counter(t.priority(x) for x in picks(b, 20000))
    assert 0.67 < got[0] / 20000 < 0.73
    assert all(x < 50 or x >= 100 for x in picks(b, 2000))


def test_degraded_hosts_take_the_load_healthy_hosts_cannot():
    t = make_table([(1, 0)] * 10)
    for i in range(5, 10):
        t.set_flags(i, ht.DEGRADED_ACTIVE_HC)
    b = lb.make_lb(t, 0, {"lb_policy": "RANDOM"}, by_priority(t))
    # 5 healthy of 10 -> 70% healthy load; 5 degraded -> the remaining 30%
    st = b.priority_state()
    assert st["healthy_load"] == [70] and st["degraded_load"] == [30] and st["panic"] == [False]
    got = Counter(x >= 5 for x in picks(b, 20000))
    assert 0.27 < got[True] / 20000 < 0.33
    # all degraded: they take everything
    for i in range(5):
        t.set_flags(i, ht.DEGRADED_ACTIVE_HC)
    assert b.priority_state()["degraded_load"] == [100]
    assert len(set(picks(b, 500))) == 10


@pytest.mark.parametrize("policy", POLICIES)
def test_panic_sends_traffic_to_all_hosts_and_counts(policy):
    t = make_table([(1, 0)] * 10)
    b = lb.make_lb(t, 0, {"lb_policy": policy}, by_priority(t))
    for i in range(6):
        t.set_flags(i, ht.FAILED_ACTIVE_HC)          # 40% healthy < 50% threshold
    before = t.lb_healthy_panic(0)
    got = set(picks(b, 2000, hashed=policy in ("RING_HASH", "MAGLEV")))
    assert b.priority_state()["panic"] == [True]
    assert got & set(range(6)), "panic routes to unhealthy hosts too"
    assert t.lb_healthy_panic(0) - before == 2000
    # back above the threshold: no more panic picks
    t.set_flags(0, 0, ht.FAILED_ACTIVE_HC)
    t.set_flags(1, 0, ht.FAILED_ACTIVE_HC)           # 60% healthy
    n = t.lb_healthy_panic(0)
    assert set(picks(b, 500, hashed=policy in ("RING_HASH", "MAGLEV"))) <= {0, 1, 6, 7, 8, 9}
    assert t.lb_healthy_panic(0) == n


def test_panic_threshold_zero_disables_panic():
    t = make_table([(1, 0)] * 10)
    cfg = {"lb_policy": "ROUND_ROBIN", "common_lb_config": {"healthy_panic_threshold": 0.0}}
    b = lb.make_lb(t, 0, cfg, by_priority(t))
    assert b.panic_threshold == 0
    for i in range(8):
        t.set_flags(i, ht.FAILED_ACTIVE_HC)
    assert set(picks(b, 1000)) == {8, 9}
    assert t.lb_healthy_panic(0) == 0
    for i in (8, 9):
        t.set_flags(i, ht.FAILED_OUTLIER)
    assert set(picks(b, 10)) == {-1}                   # nothing routable: no healthy upstream


def test_fail_traffic_on_panic_returns_no_host():
    t = make_table([(1, 0)] * 4)
    cfg = {"lb_policy": "RANDOM",
           "common_lb_config": {"zone_aware_lb_config": {"fail_traffic_on_panic": True}}}
    b = lb.make_lb(t, 0, cfg, by_priority(t))
    for i in range(3):
        t.set_flags(i, ht.FAILED_ACTIVE_HC)
    assert set(picks(b, 50)) == {-1}


@pytest.mark.parametrize("policy", POLICIES + ["cyvoy.least_response_time"])
@pytest.mark.parametrize("flag", [ht.FAILED_ACTIVE_HC, ht.FAILED_OUTLIER, ht.DRAINING,
                                  ht.PENDING_ACTIVE_HC, ht.DNS_REMOVED])
def test_unusable_flag_excludes_host_on_the_next_pick(policy, flag):
    t = make_table([(1, 0)] * 5 if policy != "RANDOM" else [(1, 0), (2, 0), (1, 0), (3, 0), (1, 0)])
    if policy.startswith("cyvoy."):
        cfg = {"lb_config": {"load_balancing_policy": {"policies": [
            {"typed_extension_config": {"name": policy, "typed_config": {}}}]}}}
    else:
        cfg = {"lb_policy": policy}
    b = lb.make_lb(t, 0, cfg, by_priority(t))
    hashed = policy in ("RING_HASH", "MAGLEV")
    assert 2 in picks(b, 3000, hashed)
    t.set_flags(2, flag)                                # what the health process does
    assert 2 not in picks(b, 3000, hashed)
    t.set_flags(2, 0, flag)
    assert 2 in picks(b, 3000, hashed)


def test_flag_set_by_another_process_is_seen_by_the_next_pick():
    t = make_table([(1, 0)] * 4)
    b = lb.make_lb(t, 0, {"lb_policy": "ROUND_ROBIN"}, by_priority(t))
    assert set(picks(b, 8)) == {0, 1, 2, 3}
    pid = os.fork()
    if pid == 0:
        try:
            t.set_flags(1, ht.FAILED_OUTLIER)
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    assert set(picks(b, 8)) == {0, 2, 3}


def test_health_generation_is_the_only_per_pick_check():
    t = make_table([(1, 0)] * 3)
    b = lb.make_lb(t, 0, {"lb_policy": "ROUND_ROBIN"}, by_priority(t))
    n = b.refreshes
    picks(b, 1000)
    assert b.refreshes == n                             # no recompute without a change
    t.set_flags(0, ht.FAILED_OUTLIER)
    picks(b, 1000)
    assert b.refreshes == n + 1


def test_slots_derived_from_the_table_follow_membership():
    t = HostTable(6, 1)
    t.set_cluster(0, 0, 6)
    for i in range(3):
        t.set_host(i, 0, f"10.1.0.{i + 1}", 80, 1, 0)
    b = lb.make_lb(t, 0, {"lb_policy": "ROUND_ROBIN"}, None)
    assert set(picks(b, 30)) == {0, 1, 2}
    t.set_host(4, 0, "10.1.0.9", 80, 1, 0)            # DNS adds a host
    t.clear_host(0)                                     # and drops one
    assert set(picks(b, 30)) == {1, 2, 4}


def test_no_hosts_gives_minus_one():
    t = HostTable(2, 1)
    for policy in POLICIES:
        b = lb.make_lb(t, 0, {"lb_policy": policy}, [[]])
        assert b.pick() == -1 and b.pick(123, True) == -1
        b = lb.make_lb(t, 0, {"lb_policy": policy}, [])
        assert b.pick() == -1


# ---- factory ----------------------------------------------------------------------------------

YAML = """
static_resources:
  listeners: []
  clusters:
  - name: lr
    connect_timeout: 1s
    lb_policy: LEAST_REQUEST
    least_request_lb_config:
      choice_count: 3
      active_request_bias: {default_value: 0.5, runtime_key: k}
      slow_start_config: {slow_start_window: 30s, min_weight_percent: {value: 20}}
    common_lb_config: {healthy_panic_threshold: {value: 25}}
  - name: rr
    connect_timeout: 1s
    round_robin_lb_config:
      slow_start_config: {slow_start_window: 5s, aggression: {default_value: 2.0, runtime_key: a}}
  - name: ring
    connect_timeout: 1s
    lb_policy: RING_HASH
    ring_hash_lb_config: {minimum_ring_size: 64, hash_function: MURMUR_HASH_2}
  - name: mag
    connect_timeout: 1s
    lb_policy: MAGLEV
    maglev_lb_config: {table_size: 251}
  - name: rand
    connect_timeout: 1s
    lb_policy: RANDOM
  - name: lrt
    connect_timeout: 1s
    load_balancing_policy:
      policies:
      - typed_extension_config:
          name: envoy.load_balancing_policies.unknown_one
          typed_config: {"@type": type.googleapis.com/some.Unknown}
      - typed_extension_config:
          name: cyvoy.least_response_time
          typed_config:
            "@type": type.googleapis.com/xds.type.v3.TypedStruct
            type_url: cyvoy.least_response_time
            value: {decay_time: 2.5s, choice_count: 3}
"""


def test_make_lb_reads_the_loaders_config():
    clusters = build_bootstrap(parse_text(YAML, "yaml")).clusters
    t = make_table([(1, 0)] * 4)
    policy, opts = lb.lb_options(clusters["lr"])
    assert policy == "LEAST_REQUEST" and opts["choice_count"] == 3
    assert opts["active_request_bias"] == 0.5 and opts["panic_threshold"] == 25
    assert opts["slow_start_window"] == 30.0 and opts["slow_start_min_weight_percent"] == 20.0
    assert type(lb.make_lb(t, 0, clusters["lr"], by_priority(t))).__name__ == "LeastRequestLB"
    policy, opts = lb.lb_options(clusters["rr"])
    assert policy == "ROUND_ROBIN" and opts["slow_start_aggression"] == 2.0
    assert opts["slow_start_min_weight_percent"] == 10.0 and opts["panic_threshold"] == 50
    policy, opts = lb.lb_options(clusters["ring"])
    assert opts["minimum_ring_size"] == 64 and opts["hash_function"] == "MURMUR_HASH_2"
    assert opts["maximum_ring_size"] == 8388608
    ring = lb.make_lb(t, 0, clusters["ring"], by_priority(t))
    assert type(ring).__name__ == "RingHashLB" and len(ring.ring()) == 64
    mag = lb.make_lb(t, 0, clusters["mag"], by_priority(t))
    assert sum(mag.entries().values()) == 251
    assert type(lb.make_lb(t, 0, clusters["rand"], by_priority(t))).__name__ == "RandomLB"
    lrt = lb.make_lb(t, 0, clusters["lrt"], by_priority(t))
    assert type(lrt).__name__ == "LeastResponseTimeLB" and lrt.decay_ns == 2.5e9
    assert lrt.policy == "cyvoy.least_response_time"


def test_make_lb_defaults_and_refusals():
    t = make_table([(1, 0)] * 2)
    b = lb.make_lb(t, 0, {}, by_priority(t))
    assert type(b).__name__ == "RoundRobinLB" and b.panic_threshold == 50
    assert b.overprovisioning_factor == 140
    with pytest.raises(ValueError):
        lb.make_lb(t, 0, {"lb_policy": "CLUSTER_PROVIDED"}, by_priority(t))
    with pytest.raises(ValueError):
        lb.make_lb(t, 0, {"lb_config": {"load_balancing_policy": {"policies": [
            {"typed_extension_config": {"name": "x.y", "typed_config": {}}}]}}}, by_priority(t))


def test_random_generator_differs_after_fork():
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.write(w, json.dumps([lb.random_u64() for _ in range(4)]).encode())
        finally:
            os._exit(0)
    mine = [lb.random_u64() for _ in range(4)]
    os.waitpid(pid, 0)
    theirs = json.loads(os.read(r, 65536))
    assert mine != theirs
    lb.reseed(42)
    a = [lb.random_u64() for _ in range(3)]
    lb.reseed(42)
    assert a == [lb.random_u64() for _ in range(3)]
    lb.reseed()
