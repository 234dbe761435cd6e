"""/stats text, filter, usedonly, json, histogram quantiles and intervals, /reset_counters,
computed stats from the host table, and /stats/prometheus parsed by prometheus_client."""
import math
import os
import struct

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from proxy._fastpath import hosttable as ht
from proxy._fastpath import stats as st
from proxy.stats import ServerInfo, StatRegistry, StatsReader, handle, quantiles
from proxy.stats.reader import SUPPORTED_QUANTILES
from proxy.stats.tags import extract_tags, prometheus_name


def make(clusters=("backend", ("checked", True, True)), **reader_kw):
    reg = StatRegistry.build(http_prefixes=["ingress_http", "admin"],
                             listeners=["0.0.0.0_10000", ("[__1]_443", True), "admin"],
                             clusters=clusters)
    store = reg.make_store(n_slots=8)
    reader_kw.setdefault("server", ServerInfo(concurrency=2, memory=lambda: (100, 200, 300)))
    return reg, store, StatsReader(reg, store, **reader_kw)


def body(reader, path, query=""):
    status, ctype, data = handle(reader, path, query)
    assert status == 200, data
    return data.decode()


def lines(text):
    return text.splitlines()


def test_text_is_sorted_counters_and_gauges_then_histograms():
    reg, store, reader = make()
    v = store.view(0)
    c = reg.cluster_indexes("backend")
    v.inc(c.upstream_rq_total, 3)
    v.gauge_add(c.upstream_cx_active, 2)
    out = lines(body(reader, "/stats"))
    hist_lines = [line for line in out if ": P0(" in line or "No recorded values" in line]
    plain = out[:len(out) - len(hist_lines)]
    assert plain == sorted(plain)
    assert hist_lines == out[len(plain):]
    assert [h.split(":")[0] for h in hist_lines] == sorted(n for n, _ in reg.histograms)
    assert "cluster.backend.upstream_rq_total: 3" in out
    assert "cluster.backend.upstream_cx_active: 2" in out
    assert "cluster.backend.upstream_rq_time: No recorded values" in out
    assert "server.concurrency: 2" in out and "server.live: 1" in out
    assert "server.memory_allocated: 100" in out
    # per-code counters appear only once used
    assert not any("upstream_rq_503" in line for line in out)
    v.inc(c.upstream_rq_code_base + 503 - 100)
    assert "cluster.backend.upstream_rq_503: 1" in lines(body(reader, "/stats"))


def test_filter_usedonly_and_type():
    reg, store, reader = make()
    v = store.view(1)
    h = reg.http_indexes("ingress_http")
    v.inc(h.downstream_rq_total, 5)
    v.inc(h.downstream_rq_2xx, 5)
    v.gauge_set(h.downstream_rq_active, 0)      # touched, even if 0
    used = lines(body(reader, "/stats", "usedonly&filter=^http\\.ingress_http\\."))
    assert used == ["http.ingress_http.downstream_rq_2xx: 5",
                    "http.ingress_http.downstream_rq_active: 0",
                    "http.ingress_http.downstream_rq_total: 5"]
    # search semantics: matches anywhere
    got = lines(body(reader, "/stats", "filter=rq_2xx"))
    assert all("rq_2xx" in line for line in got)
    assert "http.admin.downstream_rq_2xx: 0" in got and "cluster.backend.upstream_rq_2xx: 0" in got
    gauges = lines(body(reader, "/stats", "type=Gauges&filter=ingress_http"))
    assert "http.ingress_http.downstream_rq_active: 0" in gauges
    assert not any("downstream_rq_total" in line for line in gauges)
    only_h = lines(body(reader, "/stats", "type=Histograms"))
    assert len(only_h) == len(reg.histograms)
    status, _, msg = handle(reader, "/stats", "filter=(")
    assert status == 400 and b"regex" in msg.lower()
    assert handle(reader, "/stats", "type=Nope")[0] == 400
    assert handle(reader, "/stats", "histogram_buckets=weird")[0] == 400
    assert handle(reader, "/nothing")[0] == 404


def test_histogram_quantiles_and_summary_line():
    assert all(math.isnan(q) for q in quantiles([0] * st.NBUCKETS))
    b = [0] * st.NBUCKETS
    b[2] = 100                                 # 100 samples in (1, 5]
    q = dict(zip(SUPPORTED_QUANTILES, quantiles(b)))
    assert q[0.0] == 1.0 and q[1.0] == 5.0
    assert q[0.5] == pytest.approx(3.0)
    assert q[0.9] == pytest.approx(4.6)
    b[19] = 100                                # and 100 beyond the last bound
    assert quantiles(b, (1.0,)) == [3600000.0]

    reg, store, reader = make()
    v = store.view(0)
    h = reg.http_indexes("ingress_http").downstream_rq_time
    for ms in [2.0] * 50 + [20.0] * 40 + [200.0] * 10:
        v.record_time(h, ms)
    line = next(x for x in lines(body(reader, "/stats", "filter=ingress_http.downstream_rq_time"))
                if x.startswith("http.ingress_http.downstream_rq_time:"))
    parts = line.split(": ", 1)[1].split(" ")
    assert [p.split("(")[0] for p in parts] == ["P0", "P25", "P50", "P75", "P90", "P95", "P99",
                                                "P99.5", "P99.9", "P100"]
    vals = {p.split("(")[0]: p[p.index("(") + 1:-1].split(",") for p in parts}
    assert all(i == "nan" for i, _ in vals.values())          # no closed interval yet
    cum = {k: float(c) for k, (_, c) in vals.items()}
    assert 1 <= cum["P25"] <= 5 and cum["P50"] == 5
    assert 10 <= cum["P75"] <= 25 and 100 <= cum["P99"] <= 250
    assert cum == dict(sorted(cum.items(), key=lambda kv: kv[1]))   # non-decreasing
    snap = reader.snapshot()
    hist = snap.histogram("http.ingress_http.downstream_rq_time")
    assert hist.count == 100 and hist.sum_ms == pytest.approx(50 * 2 + 40 * 20 + 10 * 200)


def test_histogram_interval_closes_on_flush():
    now = [1000.0]
    reg, store, reader = make(clock=lambda: now[0], flush_interval=5.0)
    v = store.view(0)
    h = reg.cluster_indexes("backend").upstream_rq_time
    reader.snapshot()                           # first flush: interval starts
    for _ in range(10):
        v.record_time(h, 0.7)
    now[0] += 1
    hist = reader.snapshot().histogram("cluster.backend.upstream_rq_time")
    assert hist.interval is None                # still in the first interval
    now[0] += 5
    hist = reader.snapshot().histogram("cluster.backend.upstream_rq_time")
    assert sum(hist.interval) == 10 and hist.interval[1] == 10
    assert 0.5 <= hist.interval_quantiles()[5] <= 1
    v.record_time(h, 30.0)
    now[0] += 5
    hist = reader.snapshot().histogram("cluster.backend.upstream_rq_time")
    assert sum(hist.interval) == 1 and hist.count == 11
    text = body(reader, "/stats", "filter=backend.upstream_rq_time$")
    assert "P100(50,50)" in text                # interval: the 30 ms sample; cumulative max bucket


def test_histogram_bucket_modes():
    reg, store, reader = make()
    v = store.view(0)
    h = reg.cluster_indexes("backend").upstream_rq_time
    for ms in (0.2, 0.7, 0.8, 7):
        v.record_time(h, ms)
    line = body(reader, "/stats", "filter=backend.upstream_rq_time$&histogram_buckets=cumulative")
    assert line.startswith("cluster.backend.upstream_rq_time: B0.5(0,1) B1(0,3) B5(0,3) B10(0,4)")
    assert "B3.6e+06(0,4)" in line
    line = body(reader, "/stats", "filter=backend.upstream_rq_time$&histogram_buckets=disjoint")
    assert line.startswith("cluster.backend.upstream_rq_time: B0.5(0,1) B1(0,2) B5(0,0) B10(0,1)")
    doc = orjson.loads(body(reader, "/stats",
                            "format=json&filter=backend.upstream_rq_time$&histogram_buckets=cumulative"))
    (hist,) = doc["stats"][-1]["histograms"]
    assert hist["name"] == "cluster.backend.upstream_rq_time"
    assert hist["buckets"][1] == {"upper_bound": 1, "interval": 0, "cumulative": 3}


def test_json_shape():
    reg, store, reader = make()
    v = store.view(2)
    c = reg.cluster_indexes("backend")
    v.inc(c.upstream_rq_total, 4)
    v.record_time(c.upstream_rq_time, 3.0)
    doc = orjson.loads(body(reader, "/stats", "format=json&usedonly&filter=cluster\\.backend\\."))
    *plain, hists = doc["stats"]
    assert plain == [{"name": "cluster.backend.upstream_rq_total", "value": 4}]
    h = hists["histograms"]
    assert h["supported_quantiles"] == [0, 25, 50, 75, 90, 95, 99, 99.5, 99.9, 100]
    (cq,) = h["computed_quantiles"]
    assert cq["name"] == "cluster.backend.upstream_rq_time"
    assert len(cq["values"]) == 10
    assert all(x["interval"] is None for x in cq["values"])
    assert cq["values"][0]["cumulative"] == 1 and cq["values"][-1]["cumulative"] == 5
    all_doc = orjson.loads(body(reader, "/stats", "format=json"))
    names = [s["name"] for s in all_doc["stats"][:-1]]
    assert names == sorted(names)
    assert handle(reader, "/stats", "format=json")[1] == "application/json"


def test_reset_counters_uses_a_reader_baseline():
    table = ht.HostTable(2, 2)
    table.set_cluster(0, 0, 1)
    table.set_cluster(1, 1, 1)
    table.set_host(0, 0, "10.0.0.1", 80, 1, 0)
    table.set_host(1, 1, "10.0.0.2", 80, 1, 0)
    reg, store, reader = make(host_table=table)
    v = store.view(0)
    c = reg.cluster_indexes("backend")
    v.inc(c.upstream_rq_total, 9)
    v.inc(c.upstream_rq_code_base + 100, 9)
    v.gauge_add(c.upstream_rq_active, 3)
    v.record_time(c.upstream_rq_time, 1.5)
    # lb_healthy_panic lives in the host table (the load balancers count it): cluster 0's record
    struct.pack_into("<Q", table.buffer, ht.HEADER_SIZE + ht.layout()["cluster.lb_healthy_panic"], 4)
    assert reader.snapshot().value("cluster.backend.lb_healthy_panic") == 4
    assert handle(reader, "/reset_counters", method="GET")[0] == 400
    assert handle(reader, "/reset_counters", method="POST")[:3] == (200, "text/plain; charset=UTF-8", b"OK\n")
    snap = reader.snapshot().as_dict()
    assert snap["cluster.backend.upstream_rq_total"] == 0
    assert snap["cluster.backend.upstream_rq_200"] == 0          # still listed: it was created
    assert snap["cluster.backend.upstream_rq_active"] == 3       # gauges untouched
    assert snap["cluster.backend.lb_healthy_panic"] == 0
    assert reader.snapshot().histogram("cluster.backend.upstream_rq_time").count == 1
    v.inc(c.upstream_rq_total)
    assert reader.snapshot().value("cluster.backend.upstream_rq_total") == 1
    # another reader over the same store did not reset
    other = StatsReader(reg, store)
    assert other.snapshot().value("cluster.backend.upstream_rq_total") == 10
    # usedonly still lists a counter reset to 0 (it was written), as Envoy
    assert "cluster.backend.upstream_rq_total: 1" in body(reader, "/stats", "usedonly")


def test_computed_cluster_stats_from_the_host_table():
    table = ht.HostTable(6, 2)
    table.set_cluster(0, 0, 3)
    table.set_cluster(1, 3, 3)
    for i in range(3):
        table.set_host(i, 0, f"10.0.0.{i + 1}", 80, 1 + i, 0)
    for i in range(3, 5):
        table.set_host(i, 1, f"10.0.1.{i}", 80, 1, 0)
    table.set_flags(1, ht.FAILED_ACTIVE_HC, 0)
    table.set_flags(2, ht.DEGRADED_ACTIVE_HC, 0)
    table.set_flags(3, ht.PENDING_ACTIVE_HC | ht.FAILED_ACTIVE_HC, 0)
    reg, store, reader = make(host_table=lambda: table)
    snap = reader.snapshot().as_dict()
    assert snap["cluster.backend.membership_total"] == 3
    assert snap["cluster.backend.membership_healthy"] == 1
    assert snap["cluster.backend.membership_degraded"] == 1
    assert snap["cluster.backend.max_host_weight"] == 3
    assert snap["cluster.checked.membership_total"] == 2          # slot 5 unused
    assert snap["cluster.checked.membership_healthy"] == 1
    assert snap["cluster.checked.health_check.healthy"] == 1
    assert "cluster.backend.health_check.healthy" not in snap
    assert snap["cluster_manager.active_clusters"] == 2
    # total_connections: the listeners' active connections, admin excluded
    v = store.view(0)
    v.gauge_add(reg.listener_indexes("0.0.0.0_10000").downstream_cx_active, 4)
    v.gauge_add(reg.listener_indexes("[__1]_443").downstream_cx_active, 1)
    v.gauge_add(reg.listener_indexes("admin").downstream_cx_active, 1)
    assert reader.snapshot().value("server.total_connections") == 5


def test_many_processes_one_view():
    """Workers and a health process in forked children, each in its own slot; the parent (the
    admin) reads the sums; a dead worker's counts survive its retirement."""
    reg, store, reader = make()
    h = reg.http_indexes("ingress_http")
    c = reg.cluster_indexes("checked")
    slots = [store.alloc_slot() for _ in range(3)]

    def worker(slot):
        v = store.view(slot)
        for _ in range(100):
            v.inc(h.downstream_rq_total)
            v.inc(h.downstream_rq_2xx)
            v.record_time(h.downstream_rq_time, 1.0 + slot)
        v.gauge_add(h.downstream_cx_active, 2)

    def health(slot):
        v = store.view(slot)
        v.inc(c.health_check_attempt, 7)
        v.gauge_set(c.outlier_detection_ejections_active, 1)

    pids = []
    for slot, fn in zip(slots, (worker, worker, health)):
        pid = os.fork()
        if pid == 0:
            try:
                fn(slot)
            finally:
                os._exit(0)
        pids.append(pid)
    for pid in pids:
        os.waitpid(pid, 0)
    snap = reader.snapshot()
    assert snap.value("http.ingress_http.downstream_rq_total") == 200
    assert snap.value("http.ingress_http.downstream_cx_active") == 4
    assert snap.value("cluster.checked.health_check.attempt") == 7
    assert snap.value("cluster.checked.outlier_detection.ejections_active") == 1
    assert snap.histogram("http.ingress_http.downstream_rq_time").count == 200
    store.retire(slots[0])
    snap = reader.snapshot()
    assert snap.value("http.ingress_http.downstream_rq_total") == 200
    assert snap.value("http.ingress_http.downstream_cx_active") == 2
    assert snap.histogram("http.ingress_http.downstream_rq_time").count == 200


# ---- Prometheus --------------------------------------------------------------------------------

def test_tag_extraction_like_envoys_defaults():
    assert extract_tags("cluster.backend.upstream_rq_total") == (
        "cluster.upstream_rq_total", (("envoy.cluster_name", "backend"),))
    assert extract_tags("cluster.backend.upstream_rq_2xx") == (
        "cluster.upstream_rq_xx", (("envoy.response_code_class", "2"),
                                   ("envoy.cluster_name", "backend")))
    assert extract_tags("cluster.backend.upstream_rq_503") == (
        "cluster.upstream_rq", (("envoy.response_code", "503"), ("envoy.cluster_name", "backend")))
    assert extract_tags("http.ingress_http.downstream_rq_4xx") == (
        "http.downstream_rq_xx", (("envoy.response_code_class", "4"),
                                  ("envoy.http_conn_manager_prefix", "ingress_http")))
    assert extract_tags("listener.0.0.0.0_10000.downstream_cx_total") == (
        "listener.downstream_cx_total", (("envoy.listener_address", "0.0.0.0_10000"),))
    assert extract_tags("listener.[__1]_443.ssl.handshake") == (
        "listener.ssl.handshake", (("envoy.listener_address", "[__1]_443"),))
    assert extract_tags("listener.admin.downstream_cx_total") == (
        "listener.admin.downstream_cx_total", ())
    assert extract_tags("cluster.a.b.upstream_rq_total") == (        # Envoy: name stops at a dot
        "cluster.b.upstream_rq_total", (("envoy.cluster_name", "a"),))
    assert extract_tags("server.live") == ("server.live", ())
    assert prometheus_name("cluster.checked.health_check.attempt") == (
        "envoy_cluster_health_check_attempt", 'envoy_cluster_name="checked"')
    assert prometheus_name('cluster.we"ird\\.upstream_rq_total')[1] == \
        'envoy_cluster_name="we\\"ird\\\\"'


def _families(text):
    return {f.name: f for f in text_string_to_metric_families(text)}


def test_prometheus_parses_with_the_right_names_labels_and_types():
    reg, store, reader = make()
    v = store.view(0)
    c = reg.cluster_indexes("backend")
    h = reg.http_indexes("ingress_http")
    v.inc(c.upstream_rq_total, 12)
    v.inc(c.upstream_rq_2xx, 10)
    v.inc(c.upstream_rq_5xx, 2)
    v.inc(c.upstream_rq_code_base + 200 - 100, 10)
    v.inc(c.upstream_rq_code_base + 503 - 100, 2)
    v.inc(h.downstream_rq_total, 12)
    v.inc(h.downstream_rq_2xx, 12)
    v.gauge_add(h.downstream_cx_active, 3)
    v.inc(reg.listener_indexes("0.0.0.0_10000").downstream_cx_total, 5)
    for ms in (0.3, 2, 2, 40):
        v.record_time(c.upstream_rq_time, ms)
    status, ctype, data = handle(reader, "/stats/prometheus")
    assert status == 200 and ctype.startswith("text/plain")
    text = data.decode()
    assert handle(reader, "/stats", "format=prometheus")[2] == data
    fams = _families(text)

    def sample(fam, name=None, **labels):
        for s in fams[fam].samples:
            if (name is None or s.name == name) and all(s.labels.get(k) == v for k, v in labels.items()):
                return s
        raise AssertionError(f"no {fam} {labels}")

    # prometheus_client strips _total from counter family names
    assert fams["envoy_cluster_upstream_rq"].type == "counter"
    assert sample("envoy_cluster_upstream_rq", "envoy_cluster_upstream_rq_total",
                  envoy_cluster_name="backend").value == 12
    assert sample("envoy_cluster_upstream_rq_xx", envoy_cluster_name="backend",
                  envoy_response_code_class="2").value == 10
    assert sample("envoy_cluster_upstream_rq_xx", envoy_cluster_name="backend",
                  envoy_response_code_class="5").value == 2
    assert 'envoy_cluster_upstream_rq{envoy_response_code="503",envoy_cluster_name="backend"} 2' in text
    assert 'envoy_cluster_upstream_rq_total{envoy_cluster_name="backend"} 12' in text
    assert 'envoy_http_downstream_rq_total{envoy_http_conn_manager_prefix="ingress_http"} 12' in text
    assert sample("envoy_http_downstream_rq_xx", envoy_http_conn_manager_prefix="ingress_http",
                  envoy_response_code_class="2").value == 12
    assert fams["envoy_http_downstream_cx_active"].type == "gauge"
    assert sample("envoy_http_downstream_cx_active",
                  envoy_http_conn_manager_prefix="ingress_http").value == 3
    assert sample("envoy_listener_downstream_cx", envoy_listener_address="0.0.0.0_10000").value == 5
    assert 'envoy_listener_admin_downstream_cx_total{} 0' in text
    assert fams["envoy_server_live"].type == "gauge"
    assert sample("envoy_server_live").value == 1
    assert sample("envoy_cluster_health_check_attempt", envoy_cluster_name="checked").value == 0
    hist = fams["envoy_cluster_upstream_rq_time"]
    assert hist.type == "histogram"
    buckets = {s.labels["le"]: s.value for s in hist.samples
               if s.name.endswith("_bucket") and s.labels["envoy_cluster_name"] == "backend"}
    assert buckets["0.5"] == 1 and buckets["1"] == 1 and buckets["5"] == 3
    assert buckets["50"] == 4 and buckets["+Inf"] == 4 and buckets["3600000"] == 4
    assert sample("envoy_cluster_upstream_rq_time", "envoy_cluster_upstream_rq_time_count",
                  envoy_cluster_name="backend").value == 4
    assert sample("envoy_cluster_upstream_rq_time", "envoy_cluster_upstream_rq_time_sum",
                  envoy_cluster_name="backend").value == pytest.approx(44.3)
    # one TYPE line per family, families contiguous
    types = [line.split()[2] for line in text.splitlines() if line.startswith("# TYPE")]
    assert len(types) == len(set(types))


def test_prometheus_usedonly_and_filter():
    reg, store, reader = make()
    v = store.view(0)
    v.inc(reg.cluster_indexes("backend").upstream_cx_total)
    text = body(reader, "/stats/prometheus", "usedonly&filter=^cluster\\.")
    fams = _families(text)
    assert set(fams) == {"envoy_cluster_upstream_cx"}
    assert text.count("\n") == 2
