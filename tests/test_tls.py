"""TLS (issue 8, item 1, in part). Upstream: a cluster's transport_socket envoy.transport_sockets.tls
(UpstreamTlsContext) for its connections and its health checks; with validation_context.trusted_ca
the server's chain must verify, as in Envoy; Envoy's own tls/envoy-http-https.yaml example runs.
Downstream: client certificates (mTLS) with validation_context.trusted_ca and
require_client_certificate."""
from __future__ import annotations

import ssl
import subprocess

import pytest
import yaml

from tests.harness import SHARED, raw_request, simple_config, wait_for
from tests.test_envoy_examples import _to_loopback
from tests.upstreams import Upstream

TLS_TYPE = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"


def _pair(d, name, cn, ca=None):
    key, crt = d / f"{name}.key", d / f"{name}.pem"
    if ca is None:
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                        "-subj", f"/CN={cn}", "-keyout", str(key), "-out", str(crt)], check=True,
                       capture_output=True)
    else:
        csr = d / f"{name}.csr"
        subprocess.run(["openssl", "req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={cn}",
                        "-keyout", str(key), "-out", str(csr)], check=True, capture_output=True)
        subprocess.run(["openssl", "x509", "-req", "-in", str(csr), "-CA", str(ca[0]), "-CAkey", str(ca[1]),
                        "-CAcreateserial", "-days", "2", "-out", str(crt)], check=True, capture_output=True)
    return crt, key


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    d = tmp_path_factory.mktemp("pki")
    ca = _pair(d, "ca", "cyvoy test CA")
    server = _pair(d, "server", "backend.internal", ca)
    other_ca = _pair(d, "other-ca", "someone else")
    return {"ca": ca, "server": server, "other_ca": other_ca}


@pytest.fixture
def tls_upstream(pki):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(*pki["server"])
    up = Upstream("tls0", ssl=ctx)
    yield up


def tls_cluster(up_port, ca_file=None, sni="", health=False):
    tls = {"@type": TLS_TYPE, "sni": sni}
    if ca_file is not None:
        tls["common_tls_context"] = {"validation_context": {"trusted_ca": {"filename": str(ca_file)}}}
    fields = {"transport_socket": {"name": "envoy.transport_sockets.tls", "typed_config": tls}}
    if health:
        fields["health_checks"] = [{"timeout": "1s", "interval": "0.2s", "unhealthy_threshold": 1,
                                    "healthy_threshold": 1, "http_health_check": {"path": "/health"}}]
        fields["common_lb_config"] = {"healthy_panic_threshold": {"value": 0}}   # no panic routing
    return simple_config([up_port], cluster_fields=fields)


def test_requests_reach_an_https_upstream(tls_upstream, proxy):
    p = proxy(tls_cluster(tls_upstream.port), workers=1)
    r = raw_request(p.port, b"GET /x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
    assert r.startswith(b"HTTP/1.1 200") and r.endswith(b"ok from tls0")


def test_a_server_certificate_signed_by_trusted_ca_is_accepted(tls_upstream, proxy, pki):
    p = proxy(tls_cluster(tls_upstream.port, ca_file=pki["ca"][0], sni="backend.internal"), workers=1)
    r = raw_request(p.port, b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
    assert r.startswith(b"HTTP/1.1 200")


def test_a_server_certificate_from_another_ca_is_refused(tls_upstream, proxy, pki):
    p = proxy(tls_cluster(tls_upstream.port, ca_file=pki["other_ca"][0]), workers=1)
    r = raw_request(p.port, b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
    assert r.startswith(b"HTTP/1.1 503")
    assert b"TLS error" in r
    assert tls_upstream.requests == []


def test_health_checks_use_the_clusters_tls(tls_upstream, proxy, pki):
    p = proxy(tls_cluster(tls_upstream.port, ca_file=pki["ca"][0], health=True), workers=1)
    # the host is used only once a check passed: a plaintext check would never pass here
    assert wait_for(lambda: raw_request(p.port, b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
                    .startswith(b"HTTP/1.1 200"), 5)
    tls_upstream.health_status = 503
    assert wait_for(lambda: raw_request(p.port, b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
                    .startswith(b"HTTP/1.1 503"), 5)


def test_envoys_tls_origination_example_runs(proxy, pki):
    # tls/envoy-http-https.yaml: plaintext in, TLS 1.3 only to the upstream
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(*pki["server"])
    up = Upstream("https", ssl=ctx)
    doc = yaml.safe_load((SHARED / "envoy-examples/tls/envoy-http-https.yaml").read_text())
    doc.setdefault("admin", {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}}})
    p = proxy(_to_loopback(doc, {"service-https": up.port}), workers=1)
    r = raw_request(list(p.listener_ports.values())[0], b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
    assert r.startswith(b"HTTP/1.1 200") and r.endswith(b"ok from https")


# ---- client certificates on a listener (mTLS) -------------------------------------------------------

DOWNSTREAM_TLS = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext"


def mtls_config(port, pki, require=True):
    cfg = simple_config([port])
    cfg["static_resources"]["listeners"][0]["filter_chains"][0]["transport_socket"] = {
        "name": "envoy.transport_sockets.tls", "typed_config": {
            "@type": DOWNSTREAM_TLS, "require_client_certificate": require,
            "common_tls_context": {
                "tls_certificates": [{"certificate_chain": {"filename": str(pki["server"][0])},
                                      "private_key": {"filename": str(pki["server"][1])}}],
                "validation_context": {"trusted_ca": {"filename": str(pki["ca"][0])}}}}}
    return cfg


def https_get(port, client_cert=None) -> int:
    import http.client
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if client_cert is not None:
        ctx.load_cert_chain(*client_cert)
    c = http.client.HTTPSConnection("127.0.0.1", port, timeout=5, context=ctx)
    c.request("GET", "/")
    r = c.getresponse()
    r.read()
    c.close()
    return r.status


@pytest.fixture(scope="module")
def client_certs(pki, tmp_path_factory):
    d = tmp_path_factory.mktemp("clients")
    return {"good": _pair(d, "client", "client-1", pki["ca"]),
            "stranger": _pair(d, "stranger", "client-2", pki["other_ca"])}


def test_require_client_certificate_admits_a_client_with_a_trusted_certificate(upstreams, proxy, pki, client_certs):
    (a,) = upstreams(1)
    p = proxy(mtls_config(a.port, pki), workers=1)
    assert https_get(p.port, client_certs["good"]) == 200


def test_require_client_certificate_refuses_clients_without_one_or_with_an_untrusted_one(
        upstreams, proxy, pki, client_certs):
    (a,) = upstreams(1)
    p = proxy(mtls_config(a.port, pki), workers=1)
    for cert in (None, client_certs["stranger"]):
        with pytest.raises((ssl.SSLError, ConnectionError)):
            https_get(p.port, cert)
    assert a.requests == []


def test_without_require_a_client_certificate_is_optional_but_verified_when_sent(upstreams, proxy, pki, client_certs):
    (a,) = upstreams(1)
    p = proxy(mtls_config(a.port, pki, require=False), workers=1)
    assert https_get(p.port) == 200
    assert https_get(p.port, client_certs["good"]) == 200
    with pytest.raises((ssl.SSLError, ConnectionError)):
        https_get(p.port, client_certs["stranger"])
