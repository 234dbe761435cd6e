"""The gRPC echo upstream of tests/grpc_upstreams.py, called directly (client -> grpcio server, no
proxy): the baseline of what a client sees, which the gRPC proxy tests expect through the proxy too.
"""
import time

import grpc
import pytest

from tests.grpc_upstreams import (GrpcUpstream, bidi, bidi_ping_pong, channel, client_stream,
                                  server_stream, unary)

T = 2.0     # every call has a deadline, so nothing can hang


@pytest.fixture
def up():
    with GrpcUpstream(max_workers=8) as u:
        yield u


@pytest.fixture
def ch(up):
    with channel(up.port) as c:
        yield c


def call_kind(kind, ch, metadata):
    """Make one call of `kind` with `metadata`, returning what the helper returns."""
    if kind == "unary":
        return unary(ch, b"x", metadata=metadata, timeout=T)[0]
    if kind == "server_stream":
        return server_stream(ch, 2, metadata=metadata, timeout=T)
    if kind == "client_stream":
        return client_stream(ch, [b"a", b"b"], metadata=metadata, timeout=T)
    return bidi(ch, [b"a", b"b"], metadata=metadata, timeout=T)


KINDS = ["unary", "server_stream", "client_stream", "bidi"]


# ---- the four call kinds ----------------------------------------------------------------------------
def test_unary_returns_the_request_bytes_unchanged(ch):
    payload = bytes(range(256)) * 4
    body, call = unary(ch, payload, timeout=T)
    assert body == payload
    assert call.code() is grpc.StatusCode.OK


def test_unary_echoes_x_echo_metadata_as_initial_metadata(ch):
    _, call = unary(ch, b"x", metadata=[("x-echo-a", "1"), ("x-other", "2"), ("x-echo-b", "3")],
                    timeout=T)
    assert call.initial_metadata() == (("x-echo-a", "1"), ("x-echo-b", "3"))


def test_unary_sends_trailing_metadata_x_trailer_yes(ch):
    _, call = unary(ch, b"x", timeout=T)
    assert ("x-trailer", "yes") in call.trailing_metadata()


def test_server_stream_sends_n_numbered_messages(ch):
    assert server_stream(ch, 3, timeout=T) == [b"msg-0", b"msg-1", b"msg-2"]


def test_server_stream_of_zero_sends_no_messages(ch):
    assert server_stream(ch, 0, timeout=T) == []


def test_client_stream_joins_the_messages_with_bars(ch):
    assert client_stream(ch, [b"a", b"bc", b"", b"d"], timeout=T) == b"a|bc||d"


def test_bidi_answers_each_message_upper_cased(ch):
    assert bidi(ch, [b"one", b"two", b"three"], timeout=T) == [b"ONE", b"TWO", b"THREE"]


def test_bidi_ping_pong_gets_each_reply_before_sending_the_next_message(ch):
    assert bidi_ping_pong(ch, [b"ping", b"pong", b"again"], timeout=T) == [b"PING", b"PONG", b"AGAIN"]


def test_unknown_method_is_unimplemented(ch):
    with pytest.raises(grpc.RpcError) as info:
        ch.unary_unary("/cyvoy.test.Echo/Nope")(b"x", timeout=T)
    assert info.value.code() is grpc.StatusCode.UNIMPLEMENTED


# ---- failure controls -------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
def test_x_fail_code_aborts_with_that_code_and_message(ch, kind):
    with pytest.raises(grpc.RpcError) as info:
        call_kind(kind, ch, [("x-fail-code", "7"), ("x-fail-message", "go away")])
    assert info.value.code() is grpc.StatusCode.PERMISSION_DENIED
    assert info.value.details() == "go away"


def test_a_failed_call_has_no_echoed_metadata_and_no_x_trailer(ch):
    with pytest.raises(grpc.RpcError) as info:
        unary(ch, b"x", metadata=[("x-fail-code", "13"), ("x-echo-a", "1")], timeout=T)
    assert info.value.code() is grpc.StatusCode.INTERNAL
    assert info.value.initial_metadata() == ()
    assert ("x-trailer", "yes") not in info.value.trailing_metadata()


def test_x_sleep_ms_delays_the_answer(ch):
    start = time.monotonic()
    body, _ = unary(ch, b"x", metadata=[("x-sleep-ms", "150")], timeout=T)
    assert body == b"x"
    assert time.monotonic() - start >= 0.15


def test_x_sleep_ms_past_the_deadline_gives_deadline_exceeded(ch):
    with pytest.raises(grpc.RpcError) as info:
        unary(ch, b"x", metadata=[("x-sleep-ms", "2000")], timeout=0.2)
    assert info.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED


def test_x_fail_first_fails_the_first_k_calls_unavailable_then_succeeds(ch):
    md = [("x-fail-first", "2"), ("x-call-key", "retry-me")]
    codes = []
    for _ in range(2):
        with pytest.raises(grpc.RpcError) as info:
            unary(ch, b"x", metadata=md, timeout=T)
        codes.append(info.value.code())
    assert codes == [grpc.StatusCode.UNAVAILABLE] * 2
    assert unary(ch, b"x", metadata=md, timeout=T)[0] == b"x"
    assert unary(ch, b"x", metadata=md, timeout=T)[0] == b"x"


def test_x_fail_first_counts_each_call_key_separately(ch):
    with pytest.raises(grpc.RpcError):
        unary(ch, b"x", metadata=[("x-fail-first", "1"), ("x-call-key", "a")], timeout=T)
    with pytest.raises(grpc.RpcError):
        unary(ch, b"x", metadata=[("x-fail-first", "1"), ("x-call-key", "b")], timeout=T)
    assert unary(ch, b"x", metadata=[("x-fail-first", "1"), ("x-call-key", "a")], timeout=T)[0] == b"x"


# ---- what the server records ------------------------------------------------------------------------
def test_server_records_the_method_and_metadata_of_each_call_even_failed_ones(up, ch):
    unary(ch, b"x", metadata=[("x-a", "1"), ("x-b-bin", b"\x00\xff")], timeout=T)
    with pytest.raises(grpc.RpcError):
        server_stream(ch, 1, metadata=[("x-fail-code", "14")], timeout=T)
    assert [c.method for c in up.calls] == ["Unary", "ServerStream"]
    first, second = up.calls
    assert first.get("x-a") == "1" and first.get("x-b-bin") == b"\x00\xff"
    assert second.get("x-fail-code") == "14"
    assert up.calls_to("ServerStream") == [second]


def test_server_sees_the_deadline_as_time_remaining_not_as_grpc_timeout_metadata(up, ch):
    unary(ch, b"x", timeout=T)
    unary(ch, b"x")                      # no deadline at all; answered at once
    with_deadline, without = up.calls
    assert 0 < with_deadline.time_remaining <= T + 0.1   # grpc-timeout is rounded up a little
    assert without.time_remaining is None
    assert with_deadline.get("grpc-timeout") is None and with_deadline.get("te") is None
