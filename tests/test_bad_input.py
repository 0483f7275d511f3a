"""Garbage on either port is logged and counted; the node keeps serving everyone else."""

import errno
import os
import random
import socket
import struct

import msgspec
import pytest
import zmq

from mesh.wire.framing import encode_frame
from mesh.wire.protocol import CLIENT_FRAME_BYTES_MAX
from peers.records import MemberRecord
from tests.processes import HOST, Cluster, counters, wait_for

pytestmark = pytest.mark.processes


def send_raw(port: int, data: bytes, *, reset_ok: bool = False) -> bytes:
    """Send bytes to a port and return whatever comes back before the close (or the
    reset, where the other side may rightly drop the connection hard)."""
    with socket.create_connection((HOST, port), timeout=5.0) as connection:
        received = b""
        try:
            connection.sendall(data)
            connection.shutdown(socket.SHUT_WR)
            while chunk := connection.recv(65536):
                received += chunk
        except (ConnectionResetError, BrokenPipeError):
            if not reset_ok:
                raise
        except OSError as error:  # closed before our shutdown: also a hard rejection
            if not reset_ok or error.errno != errno.ENOTCONN:
                raise
        return received


def decode_reply(data: bytes) -> dict[str, object]:
    (length,) = struct.unpack(">I", data[:4])
    reply = msgspec.msgpack.decode(data[4 : 4 + length])
    assert isinstance(reply, dict)
    return reply


TRUNCATED_HELLO = encode_frame(
    msgspec.msgpack.encode({"type": "hello", "versions": [1], "token": "x"})
)[:-2]


@pytest.fixture
def two_nodes(cluster: Cluster) -> Cluster:
    first = cluster.add("n1").start()
    cluster.add("n2", seeds=[first.peer_address]).start()
    cluster.wait_sees("n1", "n2", "alive")
    return cluster


def test_garbage_on_the_peer_port_is_counted_and_harmless(two_nodes: Cluster) -> None:
    node = two_nodes.nodes["n1"]
    # Not ZeroMQ at all: the handshake fails, or libzmq takes the bytes for a ZMTP/1.0
    # peer and hands them over as frames, which our decoder rejects. Either is counted.
    # libzmq may answer garbage with a reset: that is a rejection too.
    send_raw(node.peer_port, os.urandom(4096), reset_ok=True)

    def garbage_counted() -> int:
        seen = counters(node)
        return seen["peer_handshake_failures"] + seen["peer_frames_rejected"]

    wait_for(lambda: garbage_counted() >= 1, 5.0, node.log)
    rejected_before = counters(node)["peer_frames_rejected"]

    # ZeroMQ from a trusted key, but frames that are not peer messages (or that claim
    # to come from another node).
    public, secret = two_nodes.member_key("n9")
    wait_for(lambda: "n9 added" in node.log(), 5.0, node.log)
    context = zmq.Context()
    intruder = context.socket(zmq.DEALER)
    intruder.curve_publickey, intruder.curve_secretkey = public, secret
    intruder.curve_serverkey = two_nodes.server_key("n1")
    intruder.connect(f"tcp://{node.peer_address}")
    record = MemberRecord("n9", "127.0.0.1:1", 1)
    bad_frames = [
        os.urandom(300),  # random bytes
        msgspec.msgpack.encode({"type": "heartbeat", "sender": record})[:-3],  # truncated
        msgspec.msgpack.encode({"type": "launch"}),  # a wrong message type
        msgspec.msgpack.encode({"type": "leave", "sender": ["n2", "127.0.0.1:1", 9, True]}),
    ]
    try:
        for frame in bad_frames:
            intruder.send(frame)
        intruder.send_multipart([b"two", b"frames"])
        wait_for(
            lambda: counters(node)["peer_frames_rejected"] >= rejected_before + 5, 5.0, node.log
        )
    finally:
        intruder.close(linger=0)
        context.term()
    # Still serving, and the impersonated leave changed nothing.
    view = two_nodes.states("n1")
    assert view is not None and view["n2"][0] == "alive"
    assert two_nodes.nodes["n1"].process.poll() is None  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (random.Random(7).randbytes(64), None),  # a huge length or an undecodable payload
        (encode_frame(b"\xc1\xc1\xc1"), "bad_request"),  # not msgpack
        (struct.pack(">I", CLIENT_FRAME_BYTES_MAX + 1) + b"x" * 100, "too_large"),
        (encode_frame(msgspec.msgpack.encode({"type": "status"})), "bad_request"),  # no hello
        (
            encode_frame(msgspec.msgpack.encode({"type": "hello", "versions": [99]})),
            "unsupported_version",
        ),
        (encode_frame(msgspec.msgpack.encode({"type": "hello", "versions": [1]})), "unauthorized"),
        (TRUNCATED_HELLO, None),  # the node hangs up without an answer
    ],
    ids=["random", "not-msgpack", "oversize", "no-hello", "bad-version", "no-token", "truncated"],
)
def test_garbage_on_the_client_port_gets_an_error_and_a_close(
    two_nodes: Cluster, data: bytes, code: str | None
) -> None:
    node = two_nodes.nodes["n1"]
    reply = send_raw(node.client_port, data)
    if code is not None:
        answer = decode_reply(reply)
        assert answer["type"] == "error" and answer["code"] == code, answer
    # Other sessions are served as before.
    assert node.status() is not None
    assert node.process.poll() is None  # type: ignore[union-attr]


def test_a_bad_request_keeps_the_session(two_nodes: Cluster) -> None:
    node = two_nodes.nodes["n1"]
    hello = encode_frame(msgspec.msgpack.encode({"type": "hello", "versions": [1], "token": "u"}))
    bad = encode_frame(msgspec.msgpack.encode({"type": "status", "request_id": "nine"}))
    unknown = encode_frame(msgspec.msgpack.encode({"type": "fly", "request_id": 4}))
    good = encode_frame(msgspec.msgpack.encode({"type": "status", "request_id": 5}))
    with socket.create_connection((HOST, node.client_port), timeout=5.0) as connection:
        connection.sendall(hello + bad + unknown + good)
        stream = connection.makefile("rb")
        replies = []
        for _ in range(4):
            (length,) = struct.unpack(">I", stream.read(4))
            replies.append(msgspec.msgpack.decode(stream.read(length)))
    assert [r["type"] for r in replies] == ["welcome", "error", "error", "status"]
    assert replies[1]["code"] == "bad_request"
    assert replies[2]["code"] == "bad_request" and replies[2]["request_id"] == 4
    assert replies[3]["request_id"] == 5
    assert counters(node)["client_errors_bad_request"] >= 2
