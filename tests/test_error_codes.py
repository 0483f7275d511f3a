"""Every error code of the client protocol, each from a real node, and the node keeps serving."""

import asyncio
import resource
import socket
import struct
from collections.abc import Callable

import msgspec
import pytest

from mesh.client.connection import NodeConnection, NodeError
from mesh.wire.errors import ErrorCode
from mesh.wire.framing import encode_frame
from mesh.wire.protocol import (
    History,
    Join,
    LeaveRoom,
    Send,
    Sent,
    Typing,
)
from tests.chat_helpers import client_for, next_messages
from tests.processes import HOST, Cluster, NodeProcess, run_async, wait_for

pytestmark = pytest.mark.processes

SMALL_LIMITS = [
    "--body-bytes-max",
    "100",
    "--rooms-per-session-max",
    "2",
    "--sends-per-s",
    "5",
    "--send-burst",
    "5",
]


def send_request(room: str, client_msg_id: str, body: str) -> Callable[[int], Send]:
    return lambda i: Send(request_id=i, room=room, client_msg_id=client_msg_id, body=body)


def join_request(room: str) -> Callable[[int], Join]:
    return lambda i: Join(request_id=i, room=room)


def started(node: NodeProcess) -> NodeProcess:
    node.start()
    wait_for(node.accepts_clients, 10.0, node.log)
    return node


async def expect_error(connection: NodeConnection, request: object, code: ErrorCode) -> None:
    with pytest.raises(NodeError) as raised:
        await connection.request(request)  # type: ignore[arg-type]
    assert raised.value.code is code, raised.value


def test_request_errors_answer_with_their_code_and_keep_the_session(cluster: Cluster) -> None:
    node = started(cluster.add("n1", options=SMALL_LIMITS))

    async def scenario() -> None:
        connection = await NodeConnection.open(HOST, node.client_port, token="ann")
        try:
            await expect_error(
                connection,
                lambda i: History(
                    request_id=i, room="a", before="0" * 16 + ".n1", after="0" * 16 + ".n1"
                ),
                ErrorCode.BAD_REQUEST,
            )
            await expect_error(
                connection, lambda i: Typing(request_id=i, room="a"), ErrorCode.FORBIDDEN
            )
            await expect_error(
                connection, lambda i: LeaveRoom(request_id=i, room="a"), ErrorCode.NOT_FOUND
            )
            await expect_error(
                connection,
                lambda i: Send(request_id=i, room="a", client_msg_id="big", body="x" * 101),
                ErrorCode.TOO_LARGE,
            )
            for room in ("a", "b"):
                await connection.request(join_request(room))
            await expect_error(
                connection, lambda i: Join(request_id=i, room="c"), ErrorCode.FORBIDDEN
            )
            limited = None
            for n in range(20):
                try:
                    await connection.request(send_request("a", f"m{n}", "x"))
                except NodeError as error:
                    limited = error
                    break
            assert limited is not None and limited.code is ErrorCode.RATE_LIMITED
            assert limited.retry_after_s is not None and limited.retry_after_s > 0
            # The session survived every one of them.
            await asyncio.sleep(limited.retry_after_s)
            reply = await connection.request(
                lambda i: Send(request_id=i, room="a", client_msg_id="after", body="ok")
            )
            assert isinstance(reply, Sent)
        finally:
            await connection.close()

    run_async(scenario())
    counters = node.status().counters  # type: ignore[union-attr]
    for code in ("bad_request", "forbidden", "not_found", "too_large", "rate_limited"):
        assert counters[f"client_errors_{code}"] >= 1, counters


def test_handshake_errors_close_the_session(cluster: Cluster) -> None:
    node = started(cluster.add("n1"))

    def handshake(hello: dict[str, object]) -> dict[str, object]:
        with socket.create_connection((HOST, node.client_port), timeout=5) as connection:
            connection.sendall(encode_frame(msgspec.msgpack.encode(hello)))
            stream = connection.makefile("rb")
            (length,) = struct.unpack(">I", stream.read(4))
            reply = msgspec.msgpack.decode(stream.read(length))
            assert stream.read(1) == b""  # closed by the node
            return reply  # type: ignore[no-any-return]

    assert handshake({"type": "hello", "versions": [7]})["code"] == "unsupported_version"
    assert handshake({"type": "hello", "versions": [1], "token": ""})["code"] == "unauthorized"


def test_a_node_at_its_session_limit_answers_unavailable(cluster: Cluster) -> None:
    node = started(cluster.add("n1", options=["--sessions-max", "1"]))

    async def scenario() -> None:
        first = await NodeConnection.open(HOST, node.client_port, token="ann")
        try:
            with pytest.raises(NodeError) as refused:
                await NodeConnection.open(HOST, node.client_port, token="bob")
            assert refused.value.code is ErrorCode.UNAVAILABLE
        finally:
            await first.close()

        # Once the first session is gone, the slot is free again.
        async def second_fits() -> bool:
            try:
                await (await NodeConnection.open(HOST, node.client_port, token="bob")).close()
            except NodeError:
                return False
            return True

        for _ in range(50):
            if await second_fits():
                return
            await asyncio.sleep(0.05)
        raise AssertionError("the session slot was never freed")

    run_async(scenario())


def _limit_file_size() -> None:
    # Enough for the log, the identity and the empty database; not for much more.
    resource.setrlimit(resource.RLIMIT_FSIZE, (256 * 1024, 256 * 1024))


def test_a_failing_disk_answers_internal_and_the_node_keeps_serving(cluster: Cluster) -> None:
    node = started(cluster.add("n1", options=["--sends-per-s", "100000"], preexec=_limit_file_size))

    async def scenario() -> ErrorCode | None:
        connection = await NodeConnection.open(HOST, node.client_port, token="ann")
        try:
            for n in range(200):
                try:
                    await connection.request(send_request("a", f"m{n}", "x" * 8000))
                except NodeError as error:
                    return error.code
            return None
        finally:
            await connection.close()

    assert run_async(scenario()) is ErrorCode.INTERNAL
    reply = node.status()
    assert reply is not None and reply.counters["storage_failures"] >= 1
    assert node.process.poll() is None  # type: ignore[union-attr]


def test_a_slow_consumer_is_cut_off_while_others_keep_receiving(cluster: Cluster) -> None:
    options = ["--session-queue-max", "32", "--sends-per-s", "100000", "--send-burst", "100000"]
    node = started(cluster.add("n1", options=options))
    body = "y" * 8000
    count = 600
    # A client that joins and then never reads a byte.
    slow = socket.create_connection((HOST, node.client_port))
    slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    hello = {"type": "hello", "versions": [1], "token": "slow"}
    join = {"type": "join", "request_id": 1, "room": "busy"}
    slow.sendall(encode_frame(msgspec.msgpack.encode(hello)))
    slow.sendall(encode_frame(msgspec.msgpack.encode(join)))

    async def scenario() -> None:
        async with (
            client_for(node, user="reader") as reader,
            client_for(node, user="writer") as writer,
        ):
            await reader.join("busy")
            receiving = asyncio.create_task(next_messages(reader, count, timeout_s=30))
            await asyncio.gather(*(writer.send("busy", body) for _ in range(count)))
            assert len(await receiving) == count

    try:
        run_async(scenario())
        wait_for(lambda: _counter(node, "client_sessions_cut_off") >= 1, 10.0, node.log)
    finally:
        slow.close()


def _counter(node: NodeProcess, name: str) -> int:
    reply = node.status()
    assert reply is not None, node.log()
    return reply.counters[name]
