"""Filter chains chosen by the client's TLS server name (filter_chain_match.server_names), each
with its own certificate and connection manager; and TLS session resumption across workers."""
from __future__ import annotations

import http.client
import socket
import ssl
import time

import pytest

from tests.harness import cluster, hcm
from tests.test_admin_live import admin_port
from tests.test_tls import DOWNSTREAM_TLS, _pair


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    d = tmp_path_factory.mktemp("sni")
    ca = _pair(d, "ca", "cyvoy SNI test CA")
    return {"ca": ca, **{name: _pair(d, name.replace("*", "star"), name, ca)
                         for name in ("a.example.com", "*.b.example.com", "fallback", "default")}}


def chain(certs, cert: str, cluster_name: str, server_names=None, prefix="ingress", **tls_fields):
    vh = [{"name": "all", "domains": ["*"], "routes": [{"match": {"prefix": "/"},
                                                         "route": {"cluster": cluster_name}}]}]
    c = {"filters": [{"name": "envoy.filters.network.http_connection_manager",
                      "typed_config": hcm(vh, stat_prefix=prefix)}],
         "transport_socket": {"name": "envoy.transport_sockets.tls", "typed_config": {
             "@type": DOWNSTREAM_TLS, **tls_fields, "common_tls_context": {"tls_certificates": [{
                 "certificate_chain": {"filename": str(certs[cert][0])},
                 "private_key": {"filename": str(certs[cert][1])}}]}}}}
    if server_names is not None:
        c["filter_chain_match"] = {"server_names": server_names}
    return c


def config(ups, chains, default=None) -> dict:
    lst = {"name": "tls", "address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}},
           "listener_filters": [{"name": "envoy.filters.listener.tls_inspector", "typed_config": {
               "@type": "type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector"}}],
           "filter_chains": chains}
    if default is not None:
        lst["default_filter_chain"] = default
    return {"static_resources": {"listeners": [lst],
                                 "clusters": [cluster(f"c{i}", [u.port]) for i, u in enumerate(ups)]}}


def client(certs, max_version=None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(certs["ca"][0]))
    ctx.check_hostname = False
    if max_version is not None:
        ctx.maximum_version = max_version
    return ctx


def get(port, server_name, certs, session=None, ctx=None):
    """(certificate CN, response body, ssl session, reused) of a GET with that SNI."""
    ctx = ctx or client(certs)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with ctx.wrap_socket(raw, server_hostname=server_name, session=session) as s:
            cn = dict(x[0] for x in s.getpeercert()["subject"])["commonName"]
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            data = b""
            while True:
                b = s.recv(65536)
                if not b:
                    break
                data += b
            return cn, data.split(b"\r\n\r\n", 1)[1], s.session, s.session_reused


def test_each_server_name_gets_its_chains_certificate_and_routes(upstreams, proxy, certs):
    ups = upstreams(3)
    p = proxy(config(ups, [chain(certs, "a.example.com", "c0", ["a.example.com"]),
                           chain(certs, "*.b.example.com", "c1", ["*.b.example.com"]),
                           chain(certs, "fallback", "c2")]), workers=1)
    assert get(p.port, "a.example.com", certs)[:2] == ("a.example.com", b"ok from up0")
    assert get(p.port, "x.b.example.com", certs)[:2] == ("*.b.example.com", b"ok from up1")


def test_wildcards_match_by_the_longest_suffix(upstreams, proxy, certs):
    # Envoy: www.example.com is matched against www.example.com, then *.example.com, then *.com
    ups = upstreams(2)
    p = proxy(config(ups, [chain(certs, "a.example.com", "c0", ["*.example.com"]),
                           chain(certs, "*.b.example.com", "c1", ["*.b.example.com"])]), workers=1)
    assert get(p.port, "deep.x.b.example.com", certs)[1] == b"ok from up1"
    assert get(p.port, "other.example.com", certs)[1] == b"ok from up0"


def test_a_name_no_chain_lists_goes_to_the_chain_without_server_names(upstreams, proxy, certs):
    ups = upstreams(2)
    p = proxy(config(ups, [chain(certs, "a.example.com", "c0", ["a.example.com"]),
                           chain(certs, "fallback", "c1")]), workers=1)
    assert get(p.port, "unknown.org", certs)[:2] == ("fallback", b"ok from up1")


def test_without_a_matching_chain_the_handshake_is_refused(upstreams, proxy, certs):
    ups = upstreams(2)
    p = proxy(config(ups, [chain(certs, "a.example.com", "c0", ["a.example.com"]),
                           chain(certs, "*.b.example.com", "c1", ["*.b.example.com"])]), workers=1)
    with pytest.raises((ssl.SSLError, ConnectionError)):
        get(p.port, "unknown.org", certs)
    assert get(p.port, "a.example.com", certs)[1] == b"ok from up0"     # the listener still serves


def test_default_filter_chain_takes_what_no_chain_matches(upstreams, proxy, certs):
    ups = upstreams(2)
    p = proxy(config(ups, [chain(certs, "a.example.com", "c0", ["a.example.com"])],
                     default=chain(certs, "default", "c1")), workers=1)
    assert get(p.port, "unknown.org", certs)[:2] == ("default", b"ok from up1")


def test_each_chain_counts_under_its_own_stat_prefix(upstreams, proxy, certs):
    ups = upstreams(2)
    cfg = config(ups, [chain(certs, "a.example.com", "c0", ["a.example.com"], prefix="site_a"),
                       chain(certs, "fallback", "c1", prefix="site_other")])
    cfg["admin"] = {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}}}
    p = proxy(cfg, workers=1)
    get(p.port, "a.example.com", certs)
    get(p.port, "a.example.com", certs)
    get(p.port, "zzz", certs)
    c = http.client.HTTPConnection("127.0.0.1", admin_port(p), timeout=5)
    deadline = time.monotonic() + 5
    while True:     # the admin process sums the workers' stats slots
        c.request("GET", "/stats?filter=downstream_rq_total")
        stats = c.getresponse().read().decode()
        if "http.site_other.downstream_rq_total: 1" in stats or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert "http.site_a.downstream_rq_total: 2" in stats and "http.site_other.downstream_rq_total: 1" in stats


def test_sessions_resume_whichever_worker_accepts(upstreams, proxy, certs):
    # the workers share the listener's session ticket keys (made by the master before forking)
    up, = upstreams(1)
    p = proxy(config([up], [chain(certs, "a.example.com", "c0")]), workers=2)
    ctx = client(certs)
    _, _, session, reused = get(p.port, "a.example.com", certs, ctx=ctx)
    assert not reused
    results = [get(p.port, "a.example.com", certs, session=session, ctx=ctx)[3] for _ in range(12)]
    assert all(results), results
    pids = {w.pid for w in p.workers()}
    assert len(pids) == 2


def test_disable_stateless_session_resumption_issues_no_tickets(upstreams, proxy, certs):
    up, = upstreams(1)
    p = proxy(config([up], [chain(certs, "a.example.com", "c0", disable_stateless_session_resumption=True)]),
              workers=1)
    # Envoy sets SSL_OP_NO_TICKET; seen from a TLS 1.2 client: no ticket, a session ID only
    _, _, session, _ = get(p.port, "a.example.com", certs, ctx=client(certs, ssl.TLSVersion.TLSv1_2))
    assert not session.has_ticket


def test_a_reload_whose_certificate_and_key_do_not_match_is_refused_and_tls_keeps_serving(
        upstreams, proxy, certs):
    import signal
    up, = upstreams(1)
    p = proxy(config([up], [chain(certs, "a.example.com", "c0")]), workers=1)
    bad = config([up], [chain(certs, "a.example.com", "c0")])
    lst = bad["static_resources"]["listeners"][0]
    lst["address"]["socket_address"]["port_value"] = p.port
    tls = lst["filter_chains"][0]["transport_socket"]["typed_config"]["common_tls_context"]
    tls["tls_certificates"][0]["private_key"]["filename"] = str(certs["fallback"][1])   # another key
    p.write_config(bad)
    p.signal(signal.SIGHUP)
    p.wait_log("reload refused")
    assert "cannot load a listener's certificates" in p.log()
    assert get(p.port, "a.example.com", certs)[:2] == ("a.example.com", b"ok from up0")
