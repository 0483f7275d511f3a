"""Pages of big messages through real nodes: every history frame and HTTP page within the
announced frame limit, walking the pages returns every message once, in order, and a
3-node mesh replays and pages big messages through its peers' read replies."""

import asyncio
import time
from pathlib import Path

import httpx
import pytest

from mesh.node.doors.auth import issue_token
from mesh.wire import protocol
from mesh.wire.framing import encode_frame, read_frame
from mesh.wire.protocol import History, HistoryPage, Join, Joined, MessageEvent
from router.message_ids import ORIGIN
from tests.chat_helpers import client_for, next_messages, wait_serving
from tests.processes import HOST, Cluster, NodeProcess, run_async, wait_for

pytestmark = pytest.mark.processes

SECRET = b"s" * 40
BODY_BYTES_MAX = 9000
FAST_SENDS = ["--sends-per-s", "100000", "--send-burst", "100000"]
# Frames as the node wrote them, whatever the client library would accept.
RAW_FRAME_BYTES_MAX = 64 * 1024 * 1024


def token(user: str) -> str:
    return issue_token(SECRET, user, 3600, time.time())


def body(number: int, size: int) -> str:
    return f"{number:05d}".ljust(size, "x")


async def send_all(node: NodeProcess, count: int, size: int, user_token: str) -> list[str]:
    """The ids of `count` messages sent at once, in the room's order (by id)."""
    async with client_for(node, user="ann", token=user_token) as ann:
        sent = await asyncio.gather(*(ann.send("lobby", body(n, size)) for n in range(count)))
    return sorted(reply.id for reply in sent)


class RawSession:
    """The client protocol by hand, so that each frame's length is seen as written."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.frame_lengths: list[int] = []
        self.request_ids = iter(range(1, 10**6))

    @classmethod
    async def open(cls, node: NodeProcess, user_token: str) -> tuple["RawSession", int]:
        reader, writer = await asyncio.open_connection(HOST, node.client_port)
        session = cls(reader, writer)
        session.write(protocol.Hello(versions=[protocol.PROTOCOL_VERSION], token=user_token))
        welcome = await session.read()
        assert isinstance(welcome, protocol.Welcome), welcome
        return session, int(welcome.limits["frame_bytes_max"])

    def write(self, message: protocol.ClientMessage) -> None:
        self.writer.write(encode_frame(protocol.encode(message)))

    async def read(self) -> protocol.NodeMessage:
        payload = await read_frame(self.reader, RAW_FRAME_BYTES_MAX)
        assert payload is not None, "the node closed the session"
        self.frame_lengths.append(len(payload))
        return protocol.decode_node_message(payload)

    async def history(self, **query: str | int | None) -> HistoryPage:
        self.write(History(request_id=next(self.request_ids), room="lobby", **query))  # type: ignore[arg-type]
        reply = await self.read()
        assert isinstance(reply, HistoryPage), reply
        return reply

    async def walk(self, *, forward: bool, limit: int) -> list[list[str]]:
        """The ids of every page, walking the room by cursor from one end."""
        pages: list[list[str]] = []
        cursor: str | None = ORIGIN if forward else None
        while True:
            if forward:
                page = await self.history(after=cursor, limit=limit)
            else:
                page = await self.history(before=cursor, limit=limit)
            pages.append([message.id for message in page.messages])
            if page.cursor is None:
                return pages
            assert page.messages and page.cursor != cursor, "the cursor advances"
            cursor = page.cursor

    async def close(self) -> None:
        self.writer.close()
        await self.writer.wait_closed()


def walk_http(node: NodeProcess, first_path: str, follow: str) -> tuple[list[list[str]], int]:
    """The ids of every page following `follow` ("prev" or "next"), and the largest body."""
    headers = {"Authorization": f"Bearer {token('ann')}"}
    pages: list[list[str]] = []
    largest = 0
    path: str | None = first_path
    while path is not None:
        response = httpx.get(f"{node.http_url}{path}", headers=headers, timeout=10)
        assert response.status_code == 200, response.text
        largest = max(largest, len(response.content))
        document = response.json()
        pages.append([message["id"] for message in document["messages"]])
        path = document[follow]
        assert len(pages) < 100, "the walk does not end"
    return pages, largest


def test_a_history_of_big_messages_comes_in_pages_within_the_frame_limit(
    cluster: Cluster, tmp_path: Path
) -> None:
    secret = tmp_path / "secret"
    secret.write_bytes(SECRET)
    options = ["--secret-file", str(secret), "--body-bytes-max", str(BODY_BYTES_MAX), *FAST_SENDS]
    node = cluster.add("n1", http=True, options=options).start()
    wait_for(node.accepts_clients, 10.0, node.log)
    sent = run_async(send_all(node, 200, 8 * 1024, token("ann")), timeout_s=30)

    async def over_tcp() -> None:
        session, frame_bytes_max = await RawSession.open(node, token("bob"))
        try:
            assert frame_bytes_max == 1024 * 1024
            backward = await session.walk(forward=False, limit=200)
            forward = await session.walk(forward=True, limit=200)
            # 200 bodies of 8 KiB are 1.66 MB: more than one frame may carry.
            assert len(backward) > 1 and len(forward) > 1
            assert [i for page in reversed(backward) for i in page] == sent
            assert [i for page in forward for i in page] == sent
            # A join replaying the whole room sends a frame per message.
            session.write(Join(request_id=next(session.request_ids), room="lobby", since=ORIGIN))
            replayed: list[str] = []
            while len(replayed) < len(sent):
                event = await session.read()
                if isinstance(event, MessageEvent):
                    replayed.append(event.message.id)
                else:
                    assert isinstance(event, Joined), event
            assert replayed == sent
            assert max(session.frame_lengths) <= frame_bytes_max
        finally:
            await session.close()

    run_async(over_tcp(), timeout_s=30)

    backward, largest_back = walk_http(node, "/v1/rooms/lobby/messages?limit=200", "prev")
    forward, largest_forward = walk_http(
        node, f"/v1/rooms/lobby/messages?after={ORIGIN}&limit=200", "next"
    )
    assert len(backward) > 1 and len(forward) > 1
    assert [i for page in reversed(backward) for i in page] == sent
    assert [i for page in forward for i in page] == sent
    assert max(largest_back, largest_forward) <= 1024 * 1024


def test_three_nodes_replay_and_page_big_messages_through_peer_read_replies(
    cluster: Cluster,
) -> None:
    """A replay page of 500 bodies of 9000 bytes is 4.6 MB, over the 4 MiB peer frame: the
    replicas' answers are cut by bytes, and the pages still add up to the whole room."""
    options = ["--body-bytes-max", str(BODY_BYTES_MAX), "--read-quorum", "2", *FAST_SENDS]
    first = cluster.add("n1", options=options).start()
    for node_id in ("n2", "n3"):
        cluster.add(node_id, seeds=[first.peer_address], options=options).start()
    for observer in cluster.nodes:
        for member in cluster.nodes:
            if member != observer:
                cluster.wait_sees(observer, member, "alive", timeout_s=10.0)
    nodes = cluster.nodes
    run_async(wait_serving(*nodes.values()))
    sent = run_async(send_all(nodes["n1"], 600, BODY_BYTES_MAX, "ann"), timeout_s=30)

    async def scenario() -> None:
        # A resume from the room's start reads from two replicas (N - W + 1), one a peer.
        async with client_for(nodes["n2"], user="bob") as bob:
            await bob.join("lobby", since=ORIGIN)
            replayed = await next_messages(bob, len(sent), timeout_s=20.0)
            assert [message.id for message in replayed] == sent
        session, frame_bytes_max = await RawSession.open(nodes["n3"], "cat")
        try:
            pages = await session.walk(forward=False, limit=200)
            assert [i for page in reversed(pages) for i in page] == sent
            assert max(session.frame_lengths) <= frame_bytes_max
        finally:
            await session.close()

    run_async(scenario(), timeout_s=40)
    assert all("Traceback" not in node.log() for node in nodes.values())
