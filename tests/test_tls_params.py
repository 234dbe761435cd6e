"""Downstream TLS parameters (issue 8, item 1, in part): tls_params versions and cipher suites,
with Envoy's server defaults (TLS 1.2 to 1.3) when left out."""
from __future__ import annotations

import http.client
import ssl
import subprocess

import pytest

from tests.harness import simple_config
from proxy.config import ConfigError, load_dict

TLS_TYPE = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext"


@pytest.fixture(scope="module")
def cert(tmp_path_factory):
    d = tmp_path_factory.mktemp("tls")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", "/CN=localhost", "-keyout", str(d / "key.pem"), "-out", str(d / "cert.pem")],
                   check=True, capture_output=True)
    return d / "cert.pem", d / "key.pem"


def tls_config(port, cert, params=None):
    cfg = simple_config([port])
    common = {"tls_certificates": [{"certificate_chain": {"filename": str(cert[0])},
                                    "private_key": {"filename": str(cert[1])}}]}
    if params is not None:
        common["tls_params"] = params
    cfg["static_resources"]["listeners"][0]["filter_chains"][0]["transport_socket"] = {
        "name": "envoy.transport_sockets.tls", "typed_config": {"@type": TLS_TYPE, "common_tls_context": common}}
    return cfg


def get(port, version: ssl.TLSVersion | None = None) -> int:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if version is not None:
        ctx.minimum_version = ctx.maximum_version = version
    c = http.client.HTTPSConnection("127.0.0.1", port, timeout=5, context=ctx)
    c.request("GET", "/")
    r = c.getresponse()
    r.read()
    c.close()
    return r.status


def test_default_versions_are_tls12_to_tls13(upstreams, proxy, cert):
    (a,) = upstreams(1)
    p = proxy(tls_config(a.port, cert), workers=1)
    assert get(p.port, ssl.TLSVersion.TLSv1_2) == 200
    assert get(p.port, ssl.TLSVersion.TLSv1_3) == 200


def test_minimum_tls13_refuses_a_tls12_client(upstreams, proxy, cert):
    (a,) = upstreams(1)
    p = proxy(tls_config(a.port, cert, {"tls_minimum_protocol_version": "TLSv1_3"}), workers=1)
    assert get(p.port, ssl.TLSVersion.TLSv1_3) == 200
    with pytest.raises(ssl.SSLError):
        get(p.port, ssl.TLSVersion.TLSv1_2)


def test_cipher_suites_limit_tls12_handshakes(upstreams, proxy, cert):
    (a,) = upstreams(1)
    p = proxy(tls_config(a.port, cert, {"tls_maximum_protocol_version": "TLSv1_2",
                                        "cipher_suites": ["ECDHE-RSA-AES128-GCM-SHA256"]}), workers=1)
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    with ctx.wrap_socket(__import__("socket").create_connection(("127.0.0.1", p.port), timeout=5)) as s:
        assert s.cipher()[0] == "ECDHE-RSA-AES128-GCM-SHA256"


def test_unknown_cipher_suite_is_refused_with_its_path(cert):
    with pytest.raises(ConfigError) as e:
        load_dict(tls_config(1, cert, {"cipher_suites": ["ECDHE-RSA-AES128-GCM-SHA256", "NOPE-CIPHER"]}))
    assert e.value.path.endswith("common_tls_context.tls_params.cipher_suites[1]")


def test_minimum_above_maximum_is_refused(cert):
    with pytest.raises(ConfigError) as e:
        load_dict(tls_config(1, cert, {"tls_minimum_protocol_version": "TLSv1_3",
                                       "tls_maximum_protocol_version": "TLSv1_2"}))
    assert "above the maximum" in e.value.reason
