"""StatRegistry: Envoy's stat names for a config, deterministic indexes, hot-path index objects;
carry-over on reload."""
import dataclasses
import os

import pytest

from proxy._fastpath import stats as st
from proxy.config.loader import load_text
from proxy.stats import StatRegistry, carry_over, listener_stat_prefix
from proxy.stats.registry import (CLUSTER_COUNTERS, HTTP_COUNTERS, OUTLIER_KINDS,
                                  SERVER_COMPUTED_GAUGES)

CONFIG = """
admin:
  address: {socket_address: {address: 127.0.0.1, port_value: 9901}}
static_resources:
  listeners:
  - name: front
    address: {socket_address: {address: 0.0.0.0, port_value: 10000}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: ingress_http
          route_config:
            virtual_hosts:
            - {name: all, domains: ["*"], routes: [{match: {prefix: "/"}, route: {cluster: backend}}]}
          http_filters:
          - name: envoy.filters.http.router
            typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}
  - name: v6
    address: {socket_address: {address: "::1", port_value: 10001}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: ingress_http
          route_config:
            virtual_hosts:
            - {name: all, domains: ["*"], routes: [{match: {prefix: "/"}, route: {cluster: checked}}]}
          http_filters:
          - name: envoy.filters.http.router
            typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}
  clusters:
  - name: backend
    connect_timeout: 1s
    load_assignment:
      cluster_name: backend
      endpoints:
      - lb_endpoints:
        - endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: 8001}}}
        - endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: 8002}}}
  - name: checked
    connect_timeout: 1s
    health_checks:
    - {timeout: 1s, interval: 1s, unhealthy_threshold: 2, healthy_threshold: 2, http_health_check: {path: /health}}
    outlier_detection: {consecutive_5xx: 3}
    load_assignment:
      cluster_name: checked
      endpoints:
      - lb_endpoints:
        - endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: 8003}}}
"""


@pytest.fixture(scope="module")
def bootstrap():
    return load_text(CONFIG)


@pytest.fixture(scope="module")
def registry(bootstrap):
    return StatRegistry.for_bootstrap(bootstrap)


def test_listener_stat_prefix_is_envoys():
    assert listener_stat_prefix("0.0.0.0", 10000) == "0.0.0.0_10000"
    assert listener_stat_prefix("::1", 10001) == "[__1]_10001"
    assert listener_stat_prefix("::", 80) == "[__]_80"
    assert listener_stat_prefix("2001:db8:0::1", 80) == "[2001_db8__1]_80"


def test_entities_in_config_order(registry):
    assert registry.http_prefixes == ["ingress_http", "admin"]   # shared prefix counted once
    assert registry.listener_prefixes == ["0.0.0.0_10000", "[__1]_10001", "admin"]
    assert registry.clusters == ["backend", "checked"]


def test_envoy_names(registry):
    names = set(registry.names())
    for s in ("downstream_cx_total", "downstream_cx_active", "downstream_rq_total",
              "downstream_rq_active", "downstream_rq_1xx", "downstream_rq_5xx",
              "downstream_rq_rx_reset", "downstream_rq_timeout", "downstream_cx_destroy",
              "downstream_cx_destroy_remote_active_rq", "no_route", "rq_direct_response",
              "rq_redirect", "downstream_rq_time"):
        assert f"http.ingress_http.{s}" in names
        assert f"http.admin.{s}" in names
    for p in ("0.0.0.0_10000", "[__1]_10001", "admin"):
        for s in ("downstream_cx_total", "downstream_cx_active", "downstream_cx_overflow"):
            assert f"listener.{p}.{s}" in names
    assert "listener.0.0.0.0_10000.ssl.handshake" not in names        # plaintext listener
    for c in ("backend", "checked"):
        for s in ("upstream_cx_total", "upstream_cx_active", "upstream_cx_connect_fail",
                  "upstream_cx_connect_timeout", "upstream_cx_destroy", "upstream_rq_total",
                  "upstream_rq_active", "upstream_rq_pending_active", "upstream_rq_1xx",
                  "upstream_rq_2xx", "upstream_rq_3xx", "upstream_rq_4xx", "upstream_rq_5xx",
                  "upstream_rq_timeout", "upstream_rq_retry", "upstream_rq_retry_success",
                  "upstream_rq_retry_overflow", "upstream_rq_pending_overflow",
                  "upstream_cx_overflow", "lb_healthy_panic", "membership_healthy",
                  "membership_total", "membership_degraded", "upstream_rq_time"):
            assert f"cluster.{c}.{s}" in names
    # health checking / outlier detection stats only where configured (as Envoy)
    for s in ("attempt", "success", "failure", "network_failure", "healthy"):
        assert f"cluster.checked.health_check.{s}" in names
        assert f"cluster.backend.health_check.{s}" not in names
    for s in ["ejections_active", "ejections_total", "ejections_enforced_total",
              "ejections_overflow"] + [f"ejections_enforced_{k}" for k in OUTLIER_KINDS] \
            + [f"ejections_detected_{k}" for k in OUTLIER_KINDS]:
        assert f"cluster.checked.outlier_detection.{s}" in names
    assert not any(n.startswith("cluster.backend.outlier_detection.") for n in names)
    for s in SERVER_COMPUTED_GAUGES:
        assert s in names
    for s in ("server.live", "server.uptime", "server.concurrency", "server.memory_allocated",
              "server.total_connections"):
        assert registry.kind(s) == "gauge"


def test_kinds(registry):
    assert registry.kind("http.ingress_http.downstream_rq_total") == "counter"
    assert registry.kind("http.ingress_http.downstream_rq_active") == "gauge"
    assert registry.kind("cluster.backend.upstream_cx_active") == "gauge"
    assert registry.kind("cluster.checked.outlier_detection.ejections_active") == "gauge"
    assert registry.kind("cluster.backend.upstream_rq_time") == "histogram"
    assert registry.kind("cluster.backend.membership_total") == "gauge"          # computed
    assert registry.kind("cluster.backend.lb_healthy_panic") == "counter"        # computed
    assert registry.kind("cluster.backend.upstream_rq_503") == "counter"         # per code
    assert registry.kind("cluster.backend.upstream_rq_600") is None
    assert registry.kind("nope") is None


def test_same_config_same_indexes_in_every_process(bootstrap, registry):
    again = StatRegistry.for_bootstrap(load_text(CONFIG))
    assert again.signature == registry.signature
    assert again.cluster_indexes("checked").as_dict() == registry.cluster_indexes("checked").as_dict()
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            sig = repr(StatRegistry.for_bootstrap(bootstrap).signature).encode()
            os.write(w, str(hash(sig)).encode())
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    got = os.read(r, 100)
    os.close(r)
    os.close(w)
    assert got == str(hash(repr(registry.signature).encode())).encode()


def test_layout_regions(registry):
    n_codes = 500
    assert registry.n_resettable == len(registry.counter_names)
    assert registry.n_resettable == len(registry.counter_index) + n_codes * len(registry.clusters)
    assert registry.hist_start == registry.n_resettable
    assert registry.n_counters == registry.hist_start + st.HIST_WIDTH * len(registry.histograms)
    assert [b for _, b in registry.histograms] == list(range(registry.hist_start, registry.n_counters,
                                                            st.HIST_WIDTH))
    store = registry.make_store(n_slots=4)
    assert (store.n_counters, store.n_gauges, store.n_slots) == (registry.n_counters,
                                                                 registry.n_gauges, 4)


def test_index_objects(registry):
    h = registry.http_indexes("ingress_http")
    assert h.downstream_rq_total == registry.counter("http.ingress_http.downstream_rq_total")
    assert h.downstream_rq_active == registry.gauge("http.ingress_http.downstream_rq_active")
    assert h.downstream_rq_time == registry.histogram("http.ingress_http.downstream_rq_time")
    assert [h.downstream_rq_1xx + k for k in range(5)] == [
        h.downstream_rq_1xx, h.downstream_rq_2xx, h.downstream_rq_3xx, h.downstream_rq_4xx,
        h.downstream_rq_5xx]
    assert h.prefix_name == "http.ingress_http"
    with pytest.raises(AttributeError):
        h.downstream_rq_total = 3
    c = registry.cluster_indexes("backend")
    assert [c.upstream_rq_1xx + k for k in range(5)] == [
        c.upstream_rq_1xx, c.upstream_rq_2xx, c.upstream_rq_3xx, c.upstream_rq_4xx,
        c.upstream_rq_5xx]
    assert c.upstream_rq_code_base + 503 - 100 == registry.counter("cluster.backend.upstream_rq_503")
    assert c.health_check_attempt == -1 and c.outlier_detection_ejections_active == -1
    k = registry.cluster_indexes("checked")
    assert k.health_check_attempt == registry.counter("cluster.checked.health_check.attempt")
    assert k.outlier_detection_ejections_active == registry.gauge(
        "cluster.checked.outlier_detection.ejections_active")
    assert set(c.as_dict()) == set(k.as_dict())
    lst = registry.listener_indexes("0.0.0.0_10000")
    assert lst.ssl_handshake == -1
    assert lst.downstream_cx_active == registry.gauge("listener.0.0.0.0_10000.downstream_cx_active")
    assert registry.listener_indexes_for(registry_listener("::1", 10001)).downstream_cx_total == \
        registry.counter("listener.[__1]_10001.downstream_cx_total")
    with pytest.raises(KeyError):
        registry.cluster_indexes("missing")
    # every stored counter name appears once per index
    counters = [n for n in registry.counter_names[:len(registry.counter_index)]]
    assert len(set(counters)) == len(counters)
    assert sum(1 for n in counters if n.startswith("cluster.backend.")) == len(CLUSTER_COUNTERS)
    assert sum(1 for n in counters if n.startswith("http.admin.")) == len(HTTP_COUNTERS)


def registry_listener(address, port):
    return type("L", (), {"address": address, "port": port})()


def test_tls_listener_gets_ssl_stats(bootstrap):
    b = dataclasses.replace(bootstrap, listeners=[
        dataclasses.replace(bootstrap.listeners[0], tls=object()), bootstrap.listeners[1]])
    r = StatRegistry.for_bootstrap(b)
    assert r.listener_indexes("0.0.0.0_10000").ssl_handshake == r.counter(
        "listener.0.0.0.0_10000.ssl.handshake")
    assert r.listener_indexes("[__1]_10001").ssl_handshake == -1


def test_no_admin_no_admin_stats(bootstrap):
    r = StatRegistry.for_bootstrap(dataclasses.replace(bootstrap, admin=None))
    assert r.http_prefixes == ["ingress_http"] and "admin" not in r.listener_prefixes


def test_carry_over_on_reload(bootstrap, registry):
    old = registry.make_store(4)
    v = old.view(old.alloc_slot())
    c = registry.cluster_indexes("backend")
    v.inc(c.upstream_rq_total, 7)
    v.inc(c.upstream_rq_code_base + 200 - 100, 7)
    v.inc(registry.cluster_indexes("checked").upstream_rq_total, 2)
    v.record_time(c.upstream_rq_time, 3.0)
    v.gauge_add(c.upstream_cx_active, 1)
    # the new config drops "checked"
    nb = dataclasses.replace(bootstrap, clusters={"backend": bootstrap.clusters["backend"]})
    new_reg = StatRegistry.for_bootstrap(nb)
    assert new_reg.signature != registry.signature
    new = new_reg.make_store(4)
    carry_over(registry, old, new_reg, new)
    nc = new_reg.cluster_indexes("backend")
    assert new.counter_total(nc.upstream_rq_total) == 7
    assert new.counter_total(nc.upstream_rq_code_base + 100) == 7
    assert new.counter_total(nc.upstream_rq_time + st.HIST_COUNT) == 1
    assert new.gauge_total(nc.upstream_cx_active) == 0 and new.gauge_used(nc.upstream_cx_active)
