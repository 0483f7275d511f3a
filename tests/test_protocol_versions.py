"""Clients of other minor versions of protocol 1 are served: older ones and newer ones."""

import socket
import struct
from typing import Any

import msgspec
import pytest

from mesh.wire import protocol
from mesh.wire.framing import encode_frame
from tests.processes import HOST, Cluster, wait_for

pytestmark = pytest.mark.processes


class RawSession:
    """Speaks the protocol by hand, as a client written elsewhere from docs/protocol.md would."""

    def __init__(self, port: int) -> None:
        self.connection = socket.create_connection((HOST, port), timeout=5)
        self.stream = self.connection.makefile("rb")

    def send(self, message: dict[str, Any]) -> None:
        self.connection.sendall(encode_frame(msgspec.msgpack.encode(message)))

    def receive(self) -> dict[str, Any]:
        (length,) = struct.unpack(">I", self.stream.read(4))
        reply = msgspec.msgpack.decode(self.stream.read(length))
        assert isinstance(reply, dict)
        return reply

    def reply_to(self, request_id: int) -> dict[str, Any]:
        while True:
            reply = self.receive()
            if reply.get("request_id") == request_id:
                return reply

    def close(self) -> None:
        self.connection.close()


@pytest.mark.parametrize(
    ("hello_extra", "send_extra"),
    [
        ({"minor": 0}, {}),  # an older minor version: no `head` in its vocabulary
        ({"minor": 9, "compression": "zstd"}, {"attachments": ["a.png"], "priority": 2}),
    ],
    ids=["older-minor", "newer-minor-with-unknown-fields"],
)
def test_other_minor_versions_are_served(
    cluster: Cluster, hello_extra: dict[str, Any], send_extra: dict[str, Any]
) -> None:
    node = cluster.add("n1").start()
    wait_for(node.accepts_clients, 10.0, node.log)
    session = RawSession(node.client_port)
    try:
        session.send({"type": "hello", "versions": [1], "token": "ann", **hello_extra})
        welcome = session.receive()
        assert welcome["type"] == "welcome"
        assert (welcome["version"], welcome["minor"]) == (1, protocol.PROTOCOL_MINOR)
        session.send({"type": "join", "request_id": 1, "room": "lobby"})
        assert session.reply_to(1)["type"] == "joined"
        session.send(
            {
                "type": "send",
                "request_id": 2,
                "room": "lobby",
                "client_msg_id": "c1",
                "body": "hello",
                **send_extra,
            }
        )
        sent = session.reply_to(2)
        assert sent["type"] == "sent", sent
        session.send({"type": "history", "request_id": 3, "room": "lobby"})
        page = session.reply_to(3)
        assert [m["body"] for m in page["messages"]] == ["hello"]
        assert page["messages"][0]["id"] == sent["id"]
    finally:
        session.close()
