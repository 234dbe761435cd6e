"""RING_HASH and MAGLEV: consistent across processes, minimal disruption when a host leaves,
weights, random without a hash."""
import json
import os
from collections import Counter

import pytest

from proxy._fastpath import hosttable as ht
from proxy._fastpath import lb
from proxy._fastpath.hosttable import HostTable

KEYS = [lb.hash_key(f"user-{k}".encode()) for k in range(20000)]


def make_table(weights, v6=False):
    t = HostTable(len(weights), 1)
    t.set_cluster(0, 0, len(weights))
    for i, w in enumerate(weights):
        t.set_host(i, 0, f"2001:db8::{i + 1}" if v6 else f"10.0.0.{i + 1}", 8080, w, 0)
    return t


def make(t, policy, **lbcfg):
    cfg = {"lb_policy": policy}
    if lbcfg:
        cfg["lb_config"] = {("ring_hash_lb_config" if policy == "RING_HASH" else "maglev_lb_config"): lbcfg}
    return lb.make_lb(t, 0, cfg, [list(range(t.n_hosts))])


def mapping(b, keys=KEYS):
    return [b.pick(k, True) for k in keys]


@pytest.mark.parametrize("policy", ["RING_HASH", "MAGLEV"])
def test_same_key_same_host_in_two_processes(policy):
    t = make_table([1] * 10)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(r)
            with os.fdopen(w, "wb") as f:
                f.write(json.dumps(mapping(make(t, policy), KEYS[:3000])).encode())
        finally:
            os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        theirs = json.loads(f.read())
    os.waitpid(pid, 0)
    mine = mapping(make(t, policy), KEYS[:3000])
    assert mine == theirs
    assert len(set(mine)) == 10


def _moved(before, after):
    return sum(a != b for a, b in zip(before, after)) / len(before)


def test_maglev_removing_one_host_of_ten_remaps_at_most_15_percent():
    t = make_table([1] * 10)
    b = make(t, "MAGLEV")
    before = mapping(b)
    t.set_flags(7, ht.FAILED_ACTIVE_HC)
    after = mapping(b)
    assert 7 not in after
    assert _moved(before, after) <= 0.15
    # keys that were not on the removed host mostly stay where they were
    kept = [(x, y) for x, y in zip(before, after) if x != 7]
    assert sum(x != y for x, y in kept) / len(kept) < 0.06


def test_ring_hash_removing_one_host_of_ten_remaps_about_a_tenth():
    t = make_table([1] * 10)
    b = make(t, "RING_HASH")
    before = mapping(b)
    share = Counter(before)
    for gone in (3, 8):
        t.set_flags(gone, ht.FAILED_OUTLIER)
        after = mapping(b)
        assert gone not in after
        # only the removed host's keys move on a ring: its share, about 1/10 (1024-entry ring)
        assert all(x == y for x, y in zip(before, after) if x != gone)
        assert _moved(before, after) == share[gone] / len(KEYS)
        assert 0.05 < _moved(before, after) < 0.2
        t.set_flags(gone, 0, ht.FAILED_OUTLIER)
        assert mapping(b) == before


def test_ring_size_and_keys_follow_envoy():
    t = make_table([1, 1, 2])
    b = make(t, "RING_HASH")
    ring = b.ring()
    # min normalized weight 1/4: scale = ceil(0.25 * 1024) / 0.25 = 1024
    assert len(ring) == 1024
    assert Counter(s for _, s in ring) == {0: 256, 1: 256, 2: 512}
    assert [h for h, _ in ring] == sorted(h for h, _ in ring)
    assert (lb.xxh64(b"10.0.0.1:8080_0"), 0) in ring         # "<address:port>_<i>"
    assert (lb.xxh64(b"10.0.0.3:8080_511"), 2) in ring
    # a key goes to the first entry at or after its hash (wrapping)
    h0, s0 = ring[0]
    assert b.pick(h0, True) == s0 and b.pick(ring[-1][0] + 1, True) == s0
    assert b.pick(ring[5][0] - 1, True) == ring[5][1]


def test_ring_hash_murmur_and_ipv6_keys():
    t = make_table([1, 1], v6=True)
    b = make(t, "RING_HASH", minimum_ring_size=8, hash_function="MURMUR_HASH_2")
    ring = b.ring()
    assert len(ring) == 8
    assert (lb.murmur2_64(b"[2001:db8::1]:8080_0"), 0) in ring


def test_ring_hash_maximum_ring_size_caps_scale():
    t = make_table([1, 10000])
    # scale = ceil(1024 / 10001) * 10001 = 10001 > 4096
    b = make(t, "RING_HASH", minimum_ring_size=1024, maximum_ring_size=4096)
    ring = b.ring()
    assert len(ring) == 4096 and Counter(s for _, s in ring)[0] == 1


def test_maglev_entries_follow_weights():
    t = make_table([1, 2, 1])
    b = make(t, "MAGLEV")
    e = b.entries()
    assert sum(e.values()) == 65537
    assert abs(e[1] / 65537 - 0.5) < 0.01 and abs(e[0] - e[2]) < 700
    got = Counter(mapping(b))
    assert abs(got[1] / len(KEYS) - 0.5) < 0.02


def test_maglev_table_size_from_config():
    t = make_table([1] * 3)
    b = make(t, "MAGLEV", table_size=11)
    assert sum(b.entries().values()) == 11
    assert all(0 <= x < 3 for x in mapping(b, KEYS[:100]))


@pytest.mark.parametrize("policy", ["RING_HASH", "MAGLEV"])
def test_without_a_hash_picks_randomly(policy):
    t = make_table([1] * 4)
    b = make(t, policy)
    got = Counter(b.pick() for _ in range(8000))
    assert set(got) == {0, 1, 2, 3} and min(got.values()) > 1600


def test_hash_also_selects_the_priority():
    t = HostTable(4, 1)
    t.set_cluster(0, 0, 4)
    for i in range(4):
        t.set_host(i, 0, f"10.0.0.{i + 1}", 80, 1, 0 if i < 2 else 1)
    b = lb.make_lb(t, 0, {"lb_policy": "MAGLEV"}, [[0, 1], [2, 3]])
    t.set_flags(1, ht.FAILED_ACTIVE_HC)              # P0 50% healthy -> 70 / 30
    first = mapping(b, KEYS[:4000])
    assert first == mapping(b, KEYS[:4000])          # the same key lands on the same priority
    share_p1 = sum(x >= 2 for x in first) / 4000
    assert 0.26 < share_p1 < 0.34
