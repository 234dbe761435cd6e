"""Envoy's own example configs (../shared/envoy-examples) load unchanged and run end to end."""
from __future__ import annotations

import copy
import http.client
import ssl
import subprocess
import sys

import pytest
import yaml

from tests.harness import ROOT, SHARED

FRONT = SHARED / "envoy-examples" / "front-proxy"

pytestmark = pytest.mark.skipif(not FRONT.exists(), reason=f"{FRONT} not present")


@pytest.mark.parametrize("name", ["envoy.yaml", "service-envoy.yaml"])
def test_front_proxy_example_validates_unchanged(name):
    r = subprocess.run([sys.executable, "-m", "proxy", "--mode", "validate", "-c", str(FRONT / name)],
                       capture_output=True, text=True, cwd=str(ROOT), timeout=30)
    assert r.returncode == 0, r.stdout + r.stderr


def _to_loopback(doc: dict, upstream_for: dict) -> dict:
    """The example names docker-compose containers; map its addresses to loopback ports."""
    doc = copy.deepcopy(doc)
    for lst in doc["static_resources"]["listeners"]:
        sa = lst["address"]["socket_address"]
        sa["address"], sa["port_value"] = "127.0.0.1", 0
    for c in doc["static_resources"]["clusters"]:
        for le in c["load_assignment"]["endpoints"][0]["lb_endpoints"]:
            sa = le["endpoint"]["address"]["socket_address"]
            sa["address"], sa["port_value"] = "127.0.0.1", upstream_for[c["name"]]
    doc["admin"]["address"]["socket_address"]["address"] = "127.0.0.1"
    doc["admin"]["address"]["socket_address"]["port_value"] = 0
    return doc


def test_front_proxy_example_routes_both_services_over_http_and_tls(upstreams, proxy):
    s1, s2 = upstreams(2)
    doc = yaml.safe_load((FRONT / "envoy.yaml").read_text())
    p = proxy(_to_loopback(doc, {"service1-envoy": s1.port, "service2-envoy": s2.port}), workers=2)
    http_port, tls_port = list(p.listener_ports.values())

    c = http.client.HTTPConnection("127.0.0.1", http_port, timeout=10)
    for path, want in (("/service/1", b"ok from up0"), ("/service/2", b"ok from up1")):
        c.request("GET", path)
        r = c.getresponse()
        assert (r.status, r.read()) == (200, want)
    c.close()

    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE   # the example's self-signed certificate
    c = http.client.HTTPSConnection("127.0.0.1", tls_port, timeout=10, context=ctx)
    c.request("GET", "/service/2")
    r = c.getresponse()
    assert (r.status, r.read()) == (200, b"ok from up1")
    assert dict(s2.requests[-1]["headers"])["x-forwarded-proto"] == "https"
    c.close()
