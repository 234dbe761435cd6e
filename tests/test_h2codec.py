"""proxy/_fastpath/h2codec.pyx, the server side of HTTP/2 (RFC 9113) and HPACK (RFC 7541), spoken
to by the h2 package's client: what one encodes the other decodes, and hostile or malformed
input ends in ProtocolError (a connection error) or a stream error, never anything else."""
from __future__ import annotations

import h2.config
import h2.connection
import h2.events
import hpack
import pytest
from hypothesis import given, settings, strategies as st
from hyperframe.frame import (ContinuationFrame, DataFrame, GoAwayFrame, HeadersFrame, RstStreamFrame,
                              SettingsFrame, WindowUpdateFrame)

from proxy._fastpath import h2codec
from proxy._fastpath.h2codec import (
    EV_DATA, EV_END, EV_REQUEST, EV_RESET, EV_STREAM_ERROR, EV_TRAILERS, EV_WINDOW, HpackDecoder,
    HpackEncoder, ProtocolError, ServerConnection)

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
REQ = [(b":method", b"GET"), (b":scheme", b"http"), (b":authority", b"a.example"), (b":path", b"/")]


def pair(**server_kw):
    """An h2 client and our server connection, handshaken."""
    client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding=None))
    client.initiate_connection()
    server = ServerConnection(**server_kw)
    server.initiate_connection()
    events = server.receive_data(client.data_to_send())
    client.receive_data(server.data_to_send())
    server.receive_data(client.data_to_send())    # the client's SETTINGS ACK
    return client, server, events


def exchange(client, server):
    return server.receive_data(client.data_to_send())


def frames(data: bytes):
    out = []
    while data:
        f, length = hyperframe_parse(data[:9])
        f.parse_body(memoryview(data[9:9 + length]))
        out.append(f)
        data = data[9 + length:]
    return out


def hyperframe_parse(head):
    from hyperframe.frame import Frame
    return Frame.parse_frame_header(head)


# ---- HPACK ------------------------------------------------------------------------------------

header_lists = st.lists(st.tuples(
    st.sampled_from([b":path", b"content-type", b"x-a", b"cookie", b"user-agent", b"x-very-long-name-" * 3]),
    st.binary(min_size=0, max_size=60).map(lambda b: bytes(c for c in b if 0x20 <= c < 0x7f))),
    min_size=1, max_size=12)


@settings(max_examples=300, deadline=None)
@given(st.lists(header_lists, min_size=1, max_size=8), st.booleans())
def test_hpack_decoder_reads_what_the_hpack_package_encodes(blocks, huffman):
    enc, dec = hpack.Encoder(), HpackDecoder()
    for headers in blocks:
        assert dec.decode(enc.encode(headers, huffman=huffman)) == headers


@settings(max_examples=300, deadline=None)
@given(st.lists(header_lists, min_size=1, max_size=8))
def test_hpack_package_reads_what_our_encoder_writes(blocks):
    enc, dec = HpackEncoder(), hpack.Decoder()
    for headers in blocks:
        assert [tuple(h) for h in dec.decode(enc.encode(headers), raw=True)] == headers


def test_dynamic_table_entries_are_evicted_by_size():
    enc, dec = hpack.Encoder(), HpackDecoder()
    for i in range(500):      # far more than 4096 bytes of indexed entries
        headers = [(b"x-n%d" % i, b"v" * 50)]
        assert dec.decode(enc.encode(headers)) == headers


@pytest.mark.parametrize("block, why", [
    (b"\x80", "index 0"),
    (b"\xff\xff\xff\xff\xff\xff\x01", "integer overflow"),
    (b"\xbf\x7f", "index beyond the tables"),
    (b"\x40\x85\xff\xff\xff\xff\xff\x00", "Huffman EOS"),
    (b"\x40\x81\x00\x00", "Huffman padding not ones"),
    (b"\x3f\xe2\x1f", "table size update above the maximum"),
    (b"\x82\x20", "table size update after a field"),
    (b"\x40\x0a\x61", "truncated string"),
])
def test_malformed_hpack_is_a_compression_error(block, why):
    with pytest.raises(h2codec._HpackError):
        HpackDecoder().decode(block)


def test_header_list_over_the_limit_is_refused():
    big = hpack.Encoder().encode([(b"x-a", b"v" * 100)] * 20)
    with pytest.raises(h2codec._HeaderListTooLarge):
        HpackDecoder(max_header_list_size=1000).decode(big)


# ---- frames and streams ----------------------------------------------------------------------

def test_a_request_and_its_response():
    client, server, _ = pair()
    sid = client.get_next_available_stream_id()
    client.send_headers(sid, REQ, end_stream=True)
    events = exchange(client, server)
    assert events == [(EV_REQUEST, sid, REQ, True), (EV_END, sid)]
    server.send_headers(sid, [(b":status", b"200"), (b"content-length", b"2")])
    server.send_data(sid, b"ok", end_stream=True)
    got = client.receive_data(server.data_to_send())
    kinds = [type(e) for e in got]
    assert h2.events.ResponseReceived in kinds and h2.events.StreamEnded in kinds
    assert b"".join(e.data for e in got if isinstance(e, h2.events.DataReceived)) == b"ok"


def test_request_body_and_trailers():
    client, server, _ = pair()
    sid = client.get_next_available_stream_id()
    client.send_headers(sid, [(b":method", b"POST")] + REQ[1:])
    client.send_data(sid, b"x" * 1000)
    client.send_headers(sid, [(b"x-sum", b"1")], end_stream=True)
    events = exchange(client, server)
    assert events[0][:2] == (EV_REQUEST, sid) and events[0][3] is False
    assert events[1][:3] == (EV_DATA, sid, b"x" * 1000)
    assert events[2] == (EV_TRAILERS, sid, [(b"x-sum", b"1")]) and events[3] == (EV_END, sid)


def test_large_response_headers_are_split_into_continuation_frames():
    client, server, _ = pair()
    sid = client.get_next_available_stream_id()
    client.send_headers(sid, REQ, end_stream=True)
    exchange(client, server)
    headers = [(b":status", b"200")] + [(b"x-h%d" % i, b"v" * 1000) for i in range(40)]
    server.send_headers(sid, headers, end_stream=True)
    got = client.receive_data(server.data_to_send())
    resp = next(e for e in got if isinstance(e, h2.events.ResponseReceived))
    assert list(resp.headers) == headers


def test_flow_control_windows_follow_window_updates_and_settings():
    client, server, _ = pair()
    sid = client.get_next_available_stream_id()
    client.send_headers(sid, REQ, end_stream=True)
    exchange(client, server)
    server.send_headers(sid, [(b":status", b"200")])
    assert server.local_flow_control_window(sid) == 65535
    server.send_data(sid, b"x" * 16384)
    assert server.local_flow_control_window(sid) == 65535 - 16384
    with pytest.raises(ValueError):
        server.send_data(sid, b"x" * 16385)       # over the frame size
    client.receive_data(server.data_to_send())
    client.increment_flow_control_window(1000, stream_id=sid)
    client.increment_flow_control_window(100000)
    events = exchange(client, server)
    assert (EV_WINDOW, sid) in events and (EV_WINDOW, 0) in events
    assert server.local_flow_control_window(sid) == 65535 - 16384 + 1000
    client.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 100000})
    exchange(client, server)
    assert server.local_flow_control_window(sid) == 100000 - 16384 + 1000


def test_received_data_is_given_back_with_window_updates():
    client, server, _ = pair()
    sid = client.get_next_available_stream_id()
    client.send_headers(sid, REQ)
    for _ in range(4):
        client.send_data(sid, b"x" * 15000)
    exchange(client, server)
    server.acknowledge_received_data(60000, sid)
    got = client.receive_data(server.data_to_send())
    assert {e.stream_id for e in got if isinstance(e, h2.events.WindowUpdated)} == {0, sid}


def test_content_length_mismatch_resets_the_stream_only():
    client, server, _ = pair()
    sid = client.get_next_available_stream_id()
    client.send_headers(sid, REQ + [(b"content-length", b"3")])
    client.config.validate_outbound_headers = False
    events = server.receive_data(client.data_to_send() + DataFrame(sid, b"toolong", flags=["END_STREAM"]).serialize())
    assert (EV_STREAM_ERROR, sid, h2codec.PROTOCOL_ERROR) in events
    rst = [f for f in frames(server.data_to_send()) if isinstance(f, RstStreamFrame)]
    assert rst and rst[0].error_code == h2codec.PROTOCOL_ERROR


@pytest.mark.parametrize("frame, code", [
    (DataFrame(7, b"x"), h2codec.PROTOCOL_ERROR),                       # DATA on an idle stream
    (HeadersFrame(2, b"\x82", flags=["END_HEADERS"]), h2codec.PROTOCOL_ERROR),  # an even stream
    (ContinuationFrame(1, b"\x82"), h2codec.PROTOCOL_ERROR),             # no header block open
    (WindowUpdateFrame(0, 0), h2codec.PROTOCOL_ERROR),                   # increment 0
    (WindowUpdateFrame(0, 2**31 - 1), h2codec.FLOW_CONTROL_ERROR),       # window overflow
    (RstStreamFrame(9), h2codec.PROTOCOL_ERROR),                         # RST on an idle stream
    (SettingsFrame(0, settings={5: 100}), h2codec.PROTOCOL_ERROR),       # MAX_FRAME_SIZE too small
    (SettingsFrame(0, settings={4: 2**31}), h2codec.FLOW_CONTROL_ERROR), # window too large
    (HeadersFrame(1, b"\x80", flags=["END_HEADERS"]), h2codec.COMPRESSION_ERROR),  # HPACK index 0
])
def test_connection_errors_queue_goaway(frame, code):
    client, server, _ = pair()
    with pytest.raises(ProtocolError) as e:
        server.receive_data(frame.serialize())
    assert e.value.error_code == code
    goaway = [f for f in frames(server.data_to_send()) if isinstance(f, GoAwayFrame)]
    assert goaway and goaway[0].error_code == code


def test_oversized_frame_is_a_frame_size_error():
    client, server, _ = pair()
    head = (16385).to_bytes(3, "big") + b"\x00\x00\x00\x00\x00\x01"
    with pytest.raises(ProtocolError) as e:
        server.receive_data(head + b"x" * 16385)
    assert e.value.error_code == h2codec.FRAME_SIZE_ERROR


def test_bad_preface_and_a_first_frame_other_than_settings():
    with pytest.raises(ProtocolError):
        ServerConnection().receive_data(b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n")
    with pytest.raises(ProtocolError):
        ServerConnection().receive_data(PREFACE + WindowUpdateFrame(0, 1).serialize())


def test_frames_split_at_every_byte_give_the_same_events():
    client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding=None))
    client.initiate_connection()
    client.send_headers(1, REQ + [(b"x-a", b"b" * 300)])
    client.send_data(1, b"body" * 100, end_stream=True)
    data = client.data_to_send()
    whole = ServerConnection().receive_data(data)
    server = ServerConnection()
    split = []
    for i in range(len(data)):
        split += server.receive_data(data[i:i + 1])
    assert split == whole and [e[0] for e in whole][-3:] == [EV_REQUEST, EV_DATA, EV_END]


def test_streams_beyond_the_acknowledged_limit_are_a_connection_error():
    client, server, _ = pair(max_streams=1)
    client.send_headers(1, REQ)
    exchange(client, server)
    # the h2 client would refuse to exceed our limit itself: the third stream is sent raw
    with pytest.raises(ProtocolError) as e:
        server.receive_data(HeadersFrame(3, hpack.Encoder().encode(REQ), flags=["END_HEADERS"]).serialize())
    assert e.value.error_code == h2codec.PROTOCOL_ERROR


def test_client_reset_is_an_event():
    client, server, _ = pair()
    client.send_headers(1, REQ)
    exchange(client, server)
    client.reset_stream(1, 8)
    assert exchange(client, server) == [(EV_RESET, 1, 8)]


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_after_the_handshake_raise_only_protocol_errors(junk):
    client, server, _ = pair()
    try:
        server.receive_data(junk)
    except ProtocolError:
        pass


def test_trailers_after_a_reset_are_ignored_and_keep_the_hpack_table_in_sync():
    client, server, _ = pair()
    client.send_headers(1, REQ)
    exchange(client, server)
    server.reset_stream(1, h2codec.NO_ERROR)       # answered early; the client had not finished
    client.receive_data(server.data_to_send())
    enc = hpack.Encoder()
    late = HeadersFrame(1, enc.encode([(b"x-late", b"1")]), flags=["END_HEADERS", "END_STREAM"])
    assert server.receive_data(late.serialize()) == []
    nxt = HeadersFrame(3, enc.encode([(b"x-late", b"1")] + REQ), flags=["END_HEADERS", "END_STREAM"])
    events = server.receive_data(nxt.serialize())
    assert events[0][:3] == (EV_REQUEST, 3, [(b"x-late", b"1")] + REQ)
