"""Peer and client codecs: every message round-trips; arbitrary bytes never escape as a crash."""

import asyncio
import itertools

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from mesh.wire import protocol
from mesh.wire.errors import ErrorCode, ProtocolError
from mesh.wire.framing import FrameReader, FrameTooLargeError, TruncatedFrameError, encode_frame
from peers.limits import GOSSIP_RECORDS_MAX, PEER_FRAME_BYTES_MAX
from peers.records import MemberRecord
from peers.wire import (
    Heartbeat,
    Leave,
    PeerDecodeError,
    decode_peer_message,
    encode_peer_message,
)
from router.message_ids import MessageId
from tests.strategies import member_records

heartbeats = st.builds(
    Heartbeat,
    sender=member_records(),
    sequence=st.integers(min_value=0, max_value=2**63 - 1),
    gossip=st.lists(member_records(), max_size=GOSSIP_RECORDS_MAX),
    suspects_you=st.booleans(),
)
leaves = st.builds(Leave, sender=member_records())


@given(st.one_of(heartbeats, leaves))
def test_peer_messages_round_trip(message: Heartbeat | Leave) -> None:
    assert decode_peer_message(encode_peer_message(message)) == message


@given(st.binary(max_size=512))
def test_arbitrary_bytes_decode_or_raise_peer_decode_error(frame: bytes) -> None:
    try:
        message = decode_peer_message(frame)
    except PeerDecodeError:
        return
    assert isinstance(message, Heartbeat | Leave)


def test_oversize_gossip_is_rejected() -> None:
    record = MemberRecord("n1", "127.0.0.1:1", 1)
    too_many = msgspec.msgpack.encode(
        {"type": "heartbeat", "sender": record, "sequence": 1, "gossip": [record] * 65}
    )
    with pytest.raises(PeerDecodeError, match="length"):
        decode_peer_message(too_many)


def test_oversize_frame_is_rejected_before_decoding() -> None:
    with pytest.raises(PeerDecodeError, match="exceeds"):
        decode_peer_message(b"\x00" * (PEER_FRAME_BYTES_MAX + 1))


def test_a_wrong_message_type_is_rejected() -> None:
    with pytest.raises(PeerDecodeError):
        decode_peer_message(msgspec.msgpack.encode({"type": "launch-missiles"}))


rooms = st.from_regex(r"\A[A-Za-z0-9_.#-]{1,64}\Z")
message_ids = st.builds(
    lambda t, c, n: str(MessageId(t, c, n)),
    st.integers(0, 2**48 - 1),
    st.integers(0, 2**16 - 1),
    st.from_regex(r"\A[a-z0-9]{1,8}\Z"),
)
request_ids = st.integers(0, 2**63 - 1)
texts = st.text(max_size=100)
hellos = st.builds(
    protocol.Hello,
    versions=st.lists(st.integers(0, 100), min_size=1, max_size=16),
    minor=st.integers(0, 100),
    client=st.text(max_size=64),
    token=st.text(max_size=200),
)
client_messages = st.one_of(
    hellos,
    st.builds(protocol.Join, request_id=request_ids, room=rooms, since=st.none() | message_ids),
    st.builds(protocol.LeaveRoom, request_id=request_ids, room=rooms),
    st.builds(
        protocol.Send,
        request_id=request_ids,
        room=rooms,
        client_msg_id=st.text(min_size=1, max_size=64),
        body=texts,
    ),
    st.builds(
        protocol.History,
        request_id=request_ids,
        room=rooms,
        before=st.none() | message_ids,
        after=st.none() | message_ids,
        limit=st.integers(1, protocol.HISTORY_LIMIT_MAX),
    ),
    st.builds(protocol.ListRooms, request_id=request_ids),
    st.builds(protocol.Who, request_id=request_ids, room=rooms),
    st.builds(protocol.Typing, request_id=request_ids, room=rooms),
    st.builds(protocol.Ping, request_id=request_ids),
    st.builds(protocol.StatusRequest, request_id=request_ids),
    st.builds(protocol.Where, request_id=request_ids, room=rooms),
)
wire_messages = st.builds(
    protocol.Message,
    id=message_ids,
    room=rooms,
    sender=texts,
    time_ms=st.integers(0, 2**48),
    body=texts,
    client_msg_id=texts,
)
node_messages = st.one_of(
    st.builds(
        protocol.Welcome,
        version=st.integers(0, 9),
        minor=st.integers(0, 9),
        node=texts,
        user=texts,
        limits=st.dictionaries(texts, st.floats(allow_nan=False)),
    ),
    st.builds(
        protocol.ErrorReply,
        code=st.sampled_from(ErrorCode),
        message=texts,
        request_id=st.none() | request_ids,
        retry_after_s=st.none() | st.floats(0, 100),
    ),
    st.builds(
        protocol.Joined,
        request_id=request_ids,
        room=rooms,
        members=st.lists(texts),
        head=st.none() | message_ids,
    ),
    st.builds(
        protocol.Sent,
        request_id=request_ids,
        id=message_ids,
        time_ms=st.integers(0, 2**63 - 1),
        duplicate=st.booleans(),
    ),
    st.builds(
        protocol.HistoryPage,
        request_id=request_ids,
        room=rooms,
        messages=st.lists(wire_messages, max_size=5),
        cursor=st.none() | message_ids,
    ),
    st.builds(protocol.RoomList, request_id=request_ids, rooms=st.lists(rooms)),
    st.builds(protocol.Members, request_id=request_ids, room=rooms, users=st.lists(texts)),
    st.builds(protocol.Ok, request_id=request_ids),
    st.builds(protocol.Pong, request_id=request_ids, time_ms=st.integers(0, 2**63 - 1)),
    st.builds(
        protocol.Placement,
        request_id=request_ids,
        room=rooms,
        replicas_wanted=st.integers(1, 9),
        replicas=st.lists(st.builds(protocol.Replica, id=texts, state=texts), max_size=5),
        coordinator=st.none() | texts,
    ),
    st.builds(protocol.MessageEvent, message=wire_messages),
    st.builds(
        protocol.PresenceEvent, room=rooms, user=texts, state=st.sampled_from(["joined", "left"])
    ),
    st.builds(protocol.TypingEvent, room=rooms, user=texts),
)


@given(client_messages)
def test_client_messages_round_trip(message: protocol.ClientMessage) -> None:
    assert protocol.decode_client_message(protocol.encode(message)) == message


@given(node_messages)
def test_node_messages_round_trip(message: protocol.NodeMessage) -> None:
    assert protocol.decode_node_message(protocol.encode(message)) == message


@given(st.binary(max_size=512))
def test_arbitrary_client_bytes_raise_protocol_error_only(payload: bytes) -> None:
    try:
        message = protocol.decode_client_message(payload)
    except ProtocolError as error:
        assert error.code is ErrorCode.BAD_REQUEST
        return
    assert isinstance(
        message,
        protocol.Hello
        | protocol.Join
        | protocol.LeaveRoom
        | protocol.Send
        | protocol.History
        | protocol.ListRooms
        | protocol.Who
        | protocol.Typing
        | protocol.Ping
        | protocol.StatusRequest
        | protocol.Where,
    )


def test_a_newer_client_with_unknown_fields_still_decodes() -> None:
    payload = msgspec.msgpack.encode(
        {"type": "hello", "versions": [1], "token": "ann", "compression": "zstd"}
    )
    hello = protocol.decode_client_message(payload)
    assert isinstance(hello, protocol.Hello)
    assert hello.token == "ann"


def test_an_invalid_request_keeps_the_session_and_its_request_id() -> None:
    payload = msgspec.msgpack.encode({"type": "status", "request_id": "seven"})
    with pytest.raises(ProtocolError) as raised:
        protocol.decode_client_message(payload)
    assert not raised.value.close
    assert protocol.request_id_of(msgspec.msgpack.encode({"type": "x", "request_id": 7})) == 7


def _stream_of(chunks: list[bytes]) -> asyncio.StreamReader:
    reader = asyncio.StreamReader()
    for chunk in chunks:
        reader.feed_data(chunk)
    reader.feed_eof()
    return reader


async def _all_frames(frames: FrameReader) -> list[bytes]:
    payloads = []
    while (payload := await frames.next()) is not None:
        payloads.append(payload)
    return payloads


@given(
    payloads=st.lists(st.binary(max_size=300), max_size=40),
    cuts=st.lists(st.integers(min_value=0, max_value=20_000), max_size=30),
)
def test_a_frame_reader_gives_every_payload_once_in_order_however_the_bytes_arrive(
    payloads: list[bytes], cuts: list[int]
) -> None:
    stream = b"".join(encode_frame(payload) for payload in payloads)
    points = sorted({0, len(stream), *(cut % (len(stream) + 1) for cut in cuts)})
    chunks = [stream[a:b] for a, b in itertools.pairwise(points)]

    async def read() -> list[bytes]:
        return await _all_frames(FrameReader(_stream_of(chunks), frame_bytes_max=300))

    assert asyncio.run(read()) == payloads


def test_a_frame_reader_refuses_a_frame_over_its_limit_and_a_stream_cut_inside_a_frame() -> None:
    async def read(data: bytes) -> list[bytes]:
        return await _all_frames(FrameReader(_stream_of([data]), frame_bytes_max=8))

    with pytest.raises(FrameTooLargeError):
        asyncio.run(read(encode_frame(b"ok") + encode_frame(b"x" * 9)))
    with pytest.raises(TruncatedFrameError):
        asyncio.run(read(encode_frame(b"whole") + encode_frame(b"cut")[:-1]))
    with pytest.raises(TruncatedFrameError):
        asyncio.run(read(encode_frame(b"whole") + b"\x00\x00"))
