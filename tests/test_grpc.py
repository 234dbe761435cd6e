"""gRPC through the proxy: a grpcio client, cyvoy (h2c from the client, HTTP/2 to the cluster),
a grpcio server. Every call kind, status and trailers, grpc-timeout, gRPC retries and Envoy's
gRPC local replies."""
from __future__ import annotations

import time

import grpc
import pytest
import yaml

from tests.grpc_upstreams import (GrpcUpstream, bidi, bidi_ping_pong, channel, client_stream, server_stream,
                                  unary)
from tests.harness import SHARED, free_port, simple_config
from tests.test_http2 import h2_cluster

OPTS = {"grpc.enable_retries": 0}     # the proxy's retries are under test, not grpcio's


@pytest.fixture
def grpc_up():
    with GrpcUpstream() as g:
        yield g


def grpc_proxy(proxy, port, route=None, **cluster_fields):
    return proxy(simple_config([port], route=route, cluster_fields={**h2_cluster(), **cluster_fields}), workers=1)


def test_unary_call_with_metadata_and_trailers(grpc_up, proxy):
    p = grpc_proxy(proxy, grpc_up.port)
    with channel(p.port, **OPTS) as ch:
        resp, call = unary(ch, b"hello", metadata=[("x-echo-a", "1")], timeout=5)
    assert resp == b"hello"
    assert ("x-echo-a", "1") in [(m.key, m.value) for m in call.initial_metadata()]
    assert ("x-trailer", "yes") in [(m.key, m.value) for m in call.trailing_metadata()]
    assert call.code() == grpc.StatusCode.OK


def test_server_streaming_call(grpc_up, proxy):
    p = grpc_proxy(proxy, grpc_up.port)
    with channel(p.port, **OPTS) as ch:
        assert server_stream(ch, 50, timeout=5) == [b"msg-%d" % i for i in range(50)]


def test_client_streaming_call(grpc_up, proxy):
    p = grpc_proxy(proxy, grpc_up.port)
    with channel(p.port, **OPTS) as ch:
        assert client_stream(ch, [b"a", b"b", b"c"], timeout=5) == b"a|b|c"


def test_bidirectional_call_interleaves_messages(grpc_up, proxy):
    # ping-pong: each message is sent only after the previous reply came back through the proxy
    p = grpc_proxy(proxy, grpc_up.port)
    with channel(p.port, **OPTS) as ch:
        assert bidi(ch, [b"x", b"y"], timeout=5) == [b"X", b"Y"]
        assert bidi_ping_pong(ch, [b"a", b"b", b"c"], timeout=5) == [b"A", b"B", b"C"]


def test_error_status_and_message_are_preserved(grpc_up, proxy):
    p = grpc_proxy(proxy, grpc_up.port)
    with channel(p.port, **OPTS) as ch:
        with pytest.raises(grpc.RpcError) as e:
            unary(ch, b"x", metadata=[("x-fail-code", "7"), ("x-fail-message", "not for you")], timeout=5)
    assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED and e.value.details() == "not for you"


def test_many_concurrent_calls_on_one_channel(grpc_up, proxy):
    p = grpc_proxy(proxy, grpc_up.port)
    with channel(p.port, **OPTS) as ch:
        futures = [ch.unary_unary("/cyvoy.test.Echo/Unary").future(b"m%d" % i, timeout=10) for i in range(100)]
        assert [f.result() for f in futures] == [b"m%d" % i for i in range(100)]


def test_no_upstream_gives_grpc_unavailable(proxy):
    # Envoy's local replies to gRPC requests are gRPC errors: 503 -> UNAVAILABLE (14)
    p = grpc_proxy(proxy, free_port())
    with channel(p.port, **OPTS) as ch:
        with pytest.raises(grpc.RpcError) as e:
            unary(ch, b"x", timeout=5)
    assert e.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "upstream connect error" in e.value.details()


def test_no_route_gives_grpc_unimplemented(grpc_up, proxy):
    cfg = simple_config([grpc_up.port], cluster_fields=h2_cluster())
    cfg["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]["route_config"][
        "virtual_hosts"][0]["routes"][0]["match"] = {"prefix": "/somewhere.Else/"}
    p = proxy(cfg, workers=1)
    with channel(p.port, **OPTS) as ch:
        with pytest.raises(grpc.RpcError) as e:
            unary(ch, b"x", timeout=5)
    assert e.value.code() == grpc.StatusCode.UNIMPLEMENTED     # 404 -> 12


def test_grpc_route_match_skips_non_grpc_requests(grpc_up, proxy, upstreams):
    from tests.h2peers import H2Client
    plain, = upstreams(1)
    cfg = simple_config([grpc_up.port], cluster_fields=h2_cluster())
    cfg["static_resources"]["clusters"].append({**cfg["static_resources"]["clusters"][0], "name": "plain"})
    cfg["static_resources"]["clusters"][1] = {k: v for k, v in cfg["static_resources"]["clusters"][1].items()
                                              if k != "typed_extension_protocol_options"}
    cfg["static_resources"]["clusters"][1]["load_assignment"] = {
        "cluster_name": "plain", "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {"socket_address": {
            "address": "127.0.0.1", "port_value": plain.port}}}}]}]}
    routes = cfg["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"][
        "route_config"]["virtual_hosts"][0]["routes"]
    routes[:] = [{"match": {"prefix": "/", "grpc": {}}, "route": {"cluster": "backend"}},
                 {"match": {"prefix": "/"}, "route": {"cluster": "plain"}}]
    p = proxy(cfg, workers=1)
    with channel(p.port, **OPTS) as ch:
        assert unary(ch, b"g", timeout=5)[0] == b"g"
    assert bytes(H2Client(p.port).get("/").body) == b"ok from up0"


def test_grpc_timeout_is_the_route_timeout_capped_by_grpc_timeout_header_max(grpc_up, proxy):
    route = {"cluster": "backend", "timeout": "30s", "max_stream_duration": {"grpc_timeout_header_max": "0.3s"}}
    p = grpc_proxy(proxy, grpc_up.port, route=route)
    with channel(p.port, **OPTS) as ch:
        t0 = time.monotonic()
        with pytest.raises(grpc.RpcError) as e:
            unary(ch, b"x", metadata=[("x-sleep-ms", "3000")], timeout=10)   # grpc-timeout 10 s, capped
        took = time.monotonic() - t0
    assert e.value.code() == grpc.StatusCode.UNAVAILABLE and "upstream request timeout" in e.value.details()
    assert took < 2.5


def test_grpc_timeout_reaches_the_upstream_as_its_deadline(grpc_up, proxy):
    route = {"cluster": "backend", "max_stream_duration": {"grpc_timeout_header_max": "0s"}}
    p = grpc_proxy(proxy, grpc_up.port, route=route)
    with channel(p.port, **OPTS) as ch:
        unary(ch, b"x", timeout=4)
    left = grpc_up.calls[-1].time_remaining
    assert left is not None and 2 < left <= 4.2


def test_without_max_stream_duration_grpc_timeout_does_not_change_the_route_timeout(grpc_up, proxy):
    route = {"cluster": "backend", "timeout": "0.3s"}
    p = grpc_proxy(proxy, grpc_up.port, route=route)
    with channel(p.port, **OPTS) as ch:
        with pytest.raises(grpc.RpcError) as e:
            unary(ch, b"x", metadata=[("x-sleep-ms", "1500")], timeout=10)
    assert e.value.code() == grpc.StatusCode.UNAVAILABLE and "upstream request timeout" in e.value.details()


def test_retry_on_unavailable_retries_a_refused_call(grpc_up, proxy):
    route = {"cluster": "backend", "retry_policy": {"retry_on": "unavailable", "num_retries": 2}}
    p = grpc_proxy(proxy, grpc_up.port, route=route)
    with channel(p.port, **OPTS) as ch:
        resp, call = unary(ch, b"again", metadata=[("x-fail-first", "2"), ("x-call-key", "k1")], timeout=5)
    assert resp == b"again" and len(grpc_up.calls) == 3


def test_without_the_grpc_token_a_refused_call_is_not_retried(grpc_up, proxy):
    route = {"cluster": "backend", "retry_policy": {"retry_on": "5xx,internal", "num_retries": 2}}
    p = grpc_proxy(proxy, grpc_up.port, route=route)
    with channel(p.port, **OPTS) as ch:
        with pytest.raises(grpc.RpcError) as e:
            unary(ch, b"x", metadata=[("x-fail-first", "1"), ("x-call-key", "k2")], timeout=5)
    assert e.value.code() == grpc.StatusCode.UNAVAILABLE and len(grpc_up.calls) == 1


@pytest.mark.parametrize("token, code", [("cancelled", "1"), ("deadline-exceeded", "4"),
                                         ("resource-exhausted", "8"), ("internal", "13")])
def test_each_grpc_retry_token_retries_its_status(grpc_up, proxy, token, code):
    route = {"cluster": "backend", "retry_policy": {"retry_on": token, "num_retries": 1}}
    p = grpc_proxy(proxy, grpc_up.port, route=route)
    with channel(p.port, **OPTS) as ch:
        with pytest.raises(grpc.RpcError):
            unary(ch, b"x", metadata=[("x-fail-code", code)], timeout=5)
    assert len(grpc_up.calls) == 2     # tried, and retried once


def test_grpc_bridge_server_example_proxies_grpc(grpc_up, proxy):
    """Envoy's grpc-bridge/server/envoy-proxy.yaml, its addresses moved to loopback: gRPC matched
    by match.grpc, HTTP/2 to the service."""
    path = SHARED / "envoy-examples" / "grpc-bridge" / "server" / "envoy-proxy.yaml"
    if not path.exists():
        pytest.skip(f"{path} not present")
    doc = yaml.safe_load(path.read_text())
    lst = doc["static_resources"]["listeners"][0]["address"]["socket_address"]
    lst["address"], lst["port_value"] = "127.0.0.1", 0
    c = doc["static_resources"]["clusters"][0]
    ep = c["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"]
    ep["address"], ep["port_value"] = "localhost", grpc_up.port      # STRICT_DNS, as in the example
    p = proxy(doc, workers=1)
    with channel(p.port, **OPTS) as ch:
        assert unary(ch, b"bridge", timeout=5)[0] == b"bridge"
        assert server_stream(ch, 3, timeout=5) == [b"msg-0", b"msg-1", b"msg-2"]


# ---- grpc_http1_bridge and Envoy's grpc-bridge example -----------------------------------------

def _grpc_frame(payload: bytes) -> bytes:
    return b"\x00" + len(payload).to_bytes(4, "big") + payload


def _bridge_call(port: int, payload: bytes, headers: bytes = b"") -> bytes:
    from tests.harness import raw_request
    body = _grpc_frame(payload)
    return raw_request(port, b"POST /cyvoy.test.Echo/Unary HTTP/1.1\r\nHost: grpc\r\ncontent-type: application/grpc\r\n"
                             b"content-length: %d\r\nconnection: close\r\n%s\r\n%s" % (len(body), headers, body))


def _example(name: str, port: int) -> dict:
    path = SHARED / "envoy-examples" / "grpc-bridge" / name / "envoy-proxy.yaml"
    if not path.exists():
        pytest.skip(f"{path} not present")
    doc = yaml.safe_load(path.read_text())
    lst = doc["static_resources"]["listeners"][0]["address"]["socket_address"]
    lst["address"], lst["port_value"] = "127.0.0.1", 0
    ep = doc["static_resources"]["clusters"][0]["load_assignment"]["endpoints"][0]["lb_endpoints"][0][
        "endpoint"]["address"]["socket_address"]
    ep["address"], ep["port_value"] = "localhost", port     # the example's DNS names, on loopback
    return doc


def test_grpc_bridge_examples_carry_an_http11_client_to_a_grpc_server(grpc_up, proxy):
    """Envoy's grpc-bridge: an HTTP/1.1 client -> client/envoy-proxy.yaml (grpc_http1_bridge,
    HTTP/1.1 upstream) -> server/envoy-proxy.yaml (match.grpc, HTTP/2 upstream) -> gRPC server."""
    server = proxy(_example("server", grpc_up.port), workers=1)
    client = proxy(_example("client", server.port), workers=1)
    out = _bridge_call(client.port, b"bridged")
    head, _, body = out.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and b"grpc-status: 0" in head.lower()
    assert body == _grpc_frame(b"bridged")


def test_grpc_http1_bridge_turns_a_grpc_error_into_503_with_its_status_in_headers(grpc_up, proxy):
    server = proxy(_example("server", grpc_up.port), workers=1)
    client = proxy(_example("client", server.port), workers=1)
    out = _bridge_call(client.port, b"x", b"x-fail-code: 5\r\nx-fail-message: gone\r\n")
    head = out.partition(b"\r\n\r\n")[0].lower()
    assert head.startswith(b"http/1.1 503") and b"grpc-status: 5" in head and b"grpc-message: gone" in head


def test_add_user_agent_adds_the_service_cluster(upstreams, proxy):
    import json
    from tests.harness import raw_request
    up, = upstreams(1)
    cfg = simple_config([up.port], hcm_fields={"add_user_agent": True})
    cfg["node"] = {"id": "n1", "cluster": "frontend"}
    p = proxy(cfg, workers=1)
    out = raw_request(p.port, b"GET /echo HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
    headers = {k.lower(): v for k, v in json.loads(out.partition(b"\r\n\r\n")[2])["headers"]}
    assert headers["x-envoy-downstream-service-cluster"] == "frontend" and headers["user-agent"] == "frontend"
    out = raw_request(p.port, b"GET /echo HTTP/1.1\r\nHost: a\r\nUser-Agent: mine\r\nConnection: close\r\n\r\n")
    headers = {k.lower(): v for k, v in json.loads(out.partition(b"\r\n\r\n")[2])["headers"]}
    assert headers["user-agent"] == "mine"     # only set when the client sent none
