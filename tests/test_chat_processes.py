"""One real node process, its clients and its command line: the chat protocol end to end."""

import asyncio
import json
import signal
import subprocess
import time
from pathlib import Path

import pytest

from mesh.client.chat_client import ConnectionChanged
from mesh.client.connection import NodeError
from mesh.node.doors.auth import issue_token
from mesh.wire.errors import ErrorCode
from mesh.wire.protocol import PresenceEvent, TypingEvent
from tests.chat_helpers import client_for, next_event, next_messages
from tests.processes import Cluster, NodeProcess, meshchat_command, run_async, wait_for

pytestmark = pytest.mark.processes

FAST_SENDS = ["--sends-per-s", "100000", "--send-burst", "100000"]


def started(node: NodeProcess) -> NodeProcess:
    node.start()
    wait_for(node.accepts_clients, 10.0, node.log)
    return node


@pytest.fixture
def node(cluster: Cluster) -> NodeProcess:
    return started(cluster.add("n1", options=FAST_SENDS))


def test_the_handshake_names_the_node_the_user_and_the_limits(node: NodeProcess) -> None:
    async def scenario() -> None:
        async with client_for(node, user="ann") as ann:
            assert (ann.node, ann.user) == ("n1", "ann")
            assert ann.limits["body_bytes_max"] == 16 * 1024

    run_async(scenario())


def test_signed_tokens_are_required_when_the_mesh_has_a_secret(
    cluster: Cluster, tmp_path: Path
) -> None:
    secret_file = tmp_path / "secret"
    secret_file.write_text("s" * 40)
    node = started(cluster.add("n1", options=["--secret-file", str(secret_file)]))
    issued = subprocess.run(
        [
            *meshchat_command(),
            "token",
            "--secret-file",
            str(secret_file),
            "--user",
            "ann",
            "--ttl",
            "1h",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    forged = issue_token(b"f" * 40, "ann", 3600, time.time())
    expired = issue_token(b"s" * 40, "ann", 60, time.time() - 120)

    async def scenario() -> None:
        async with client_for(node, user="whoever", token=issued) as ann:
            assert ann.user == "ann"
        for token in (forged, expired, "ann"):
            with pytest.raises(NodeError) as refused:
                await client_for(node, user="x", token=token).connect(timeout_s=5)
            assert refused.value.code is ErrorCode.UNAUTHORIZED

    run_async(scenario())


def test_history_pages_through_every_message_once_in_order(node: NodeProcess) -> None:
    async def scenario() -> list[str]:
        async with client_for(node, user="ann") as ann:
            sent = [await ann.send("lobby", f"message {n}") for n in range(130)]
            seen: list[str] = []
            before = None
            pages = 0
            while True:
                page = await ann.history("lobby", before=before, limit=50)
                seen[:0] = [m.id for m in page.messages]
                pages += 1
                if page.cursor is None:
                    break
                before = page.cursor
            assert pages == 3
            assert seen == [s.id for s in sent]
            forward = await ann.history("lobby", after=sent[99].id, limit=50)
            assert [m.id for m in forward.messages] == [s.id for s in sent[100:]]
            assert forward.cursor is None
            return [s.id for s in sent]

    ids = run_async(scenario())
    printed = subprocess.run(
        [
            *meshchat_command(),
            "history",
            "--server",
            node.client_address,
            "--user",
            "bob",
            "lobby",
            "--limit",
            "130",
            "--json",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    assert [json.loads(line)["id"] for line in printed] == ids
    assert json.loads(printed[0]) == {
        "id": ids[0],
        "room": "lobby",
        "sender": "ann",
        "time": json.loads(printed[0])["time"],
        "body": "message 0",
        "reply_to": None,
        "edited_at": None,
        "deleted": None,
        "reactions": {},
    }


def test_two_clients_see_each_other_live_with_presence_and_typing(node: NodeProcess) -> None:
    async def scenario() -> None:
        async with client_for(node, user="ann") as ann, client_for(node, user="bob") as bob:
            await ann.join("lobby")
            await bob.join("lobby")
            presence = await next_event(ann, PresenceEvent)
            assert isinstance(presence, PresenceEvent)
            assert (presence.user, presence.state) == ("bob", "joined")
            assert sorted(await ann.who("lobby")) == ["ann", "bob"]
            await bob.typing("lobby")
            typing = await next_event(ann, TypingEvent)
            assert isinstance(typing, TypingEvent) and typing.user == "bob"
            await ann.send("lobby", "hi bob")
            await bob.send("lobby", "hi ann")
            for reader in (ann, bob):
                got = await next_messages(reader, 2)
                assert [(m.sender, m.body) for m in got] == [("ann", "hi bob"), ("bob", "hi ann")]
            assert await bob.rooms() == ["lobby"]
            await bob.leave("lobby")
            left = await next_event(ann, PresenceEvent)
            assert isinstance(left, PresenceEvent) and left.state == "left"

    run_async(scenario())


def test_a_resumed_client_gets_what_it_missed_then_live_without_gap_or_duplicate(
    node: NodeProcess,
) -> None:
    async def scenario() -> None:
        async with client_for(node, user="bob") as bob:
            async with client_for(node, user="ann") as ann:
                await ann.join("lobby")
                for n in range(5):
                    await bob.send("lobby", f"before {n}")
                seen = await next_messages(ann, 5)
                last = seen[-1].id
            for n in range(20):
                await bob.send("lobby", f"missed {n}")
            async with client_for(node, user="ann") as ann_again:
                await ann_again.join("lobby", since=last)
                await bob.send("lobby", "live")
                got = await next_messages(ann_again, 21)
                assert [m.body for m in got] == [f"missed {n}" for n in range(20)] + ["live"]

    run_async(scenario())


def test_a_node_restarted_under_its_clients_loses_and_doubles_nothing(node: NodeProcess) -> None:
    async def scenario() -> None:
        async with client_for(node, user="ann") as ann, client_for(node, user="bob") as bob:
            await bob.join("lobby")
            received = asyncio.create_task(next_messages(bob, 300, timeout_s=45))

            async def send_all() -> list[str]:
                ids = []
                for n in range(300):
                    ids.append((await ann.send("lobby", f"m{n}", client_msg_id=f"ann-{n}")).id)
                    await asyncio.sleep(0.002)
                return ids

            sending = asyncio.create_task(send_all())
            await asyncio.sleep(0.3)
            node.signal(signal.SIGKILL)
            node.process.wait(timeout=5)  # type: ignore[union-attr]
            await asyncio.sleep(0.3)
            node.start()
            acked = await sending
            got = await received
            assert [m.body for m in got] == [f"m{n}" for n in range(300)]
            assert [m.id for m in got] == acked
            assert ann.reconnects >= 1 and bob.reconnects >= 1
            page = await bob.history("lobby", limit=200)
            older = await bob.history("lobby", before=page.cursor, limit=200)
            stored = [m.client_msg_id for m in older.messages + page.messages]
            assert stored == [f"ann-{n}" for n in range(300)]

    run_async(scenario(), timeout_s=90)


def test_a_retried_send_is_stored_once(node: NodeProcess) -> None:
    async def scenario() -> None:
        async with client_for(node, user="ann") as first, client_for(node, user="ann") as second:
            original = await first.send("lobby", "once", client_msg_id="retry-me")
            retried = await second.send("lobby", "once", client_msg_id="retry-me")
            assert retried.id == original.id and retried.duplicate and not original.duplicate
            page = await first.history("lobby")
            assert [m.body for m in page.messages] == ["once"]

    run_async(scenario())


def test_send_tail_and_history_from_the_command_line(node: NodeProcess) -> None:
    tail = subprocess.Popen(
        [
            *meshchat_command(),
            "tail",
            "--server",
            node.client_address,
            "--user",
            "bob",
            "lobby",
            "--json",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(lambda: "bob" in str(_who(node)), 10.0, lambda: "tail never joined")
        result = subprocess.run(
            [
                *meshchat_command(),
                "send",
                "--server",
                node.client_address,
                "--user",
                "ann",
                "lobby",
                "-",
            ],
            input="one\ntwo\n\nthree\n",
            capture_output=True,
            text=True,
            check=True,
        )
        ids = result.stdout.split()
        assert len(ids) == 3 and ids == sorted(ids)
        assert tail.stdout is not None
        lines = [json.loads(tail.stdout.readline()) for _ in range(3)]
        assert [line["body"] for line in lines] == ["one", "two", "three"]
        assert [line["id"] for line in lines] == ids
    finally:
        tail.send_signal(signal.SIGINT)
        try:
            tail.wait(timeout=5)
        except subprocess.TimeoutExpired:
            tail.kill()
            tail.wait()


def _who(node: NodeProcess) -> list[str]:
    async def ask() -> list[str]:
        async with client_for(node, user="probe") as probe:
            return await probe.who("lobby")

    return run_async(ask(), timeout_s=10)


def test_connection_changes_are_reported_as_events(node: NodeProcess) -> None:
    async def scenario() -> None:
        async with client_for(node, user="ann") as ann:
            first = await next_event(ann, ConnectionChanged)
            assert isinstance(first, ConnectionChanged) and first.state == "connected"
            node.signal(signal.SIGKILL)
            lost = await next_event(ann, ConnectionChanged)
            assert isinstance(lost, ConnectionChanged) and lost.state == "disconnected"

    run_async(scenario())


def test_the_client_fails_over_to_the_next_node_in_its_list(cluster: Cluster) -> None:
    # Two nodes, and sends acknowledged by one copy: with the default W=2, a two-node
    # mesh with one node down rightly refuses sends.
    options = [*FAST_SENDS, "--write-quorum", "1"]
    first = started(cluster.add("n1", options=options))
    second = started(cluster.add("n2", seeds=[first.peer_address], options=options))
    cluster.wait_sees("n2", "n1", "alive")

    async def scenario() -> None:
        async with client_for(first, second, user="ann") as ann:
            assert ann.node == "n1"
            connected = await next_event(ann, ConnectionChanged)
            assert isinstance(connected, ConnectionChanged) and connected.node == "n1"
            first.signal(signal.SIGKILL)
            lost = await next_event(ann, ConnectionChanged)
            assert isinstance(lost, ConnectionChanged) and lost.state == "disconnected"
            moved = await next_event(ann, ConnectionChanged, timeout_s=10.0)
            assert isinstance(moved, ConnectionChanged)
            assert (moved.state, moved.node) == ("connected", "n2")
            sent = await ann.send("lobby", "through the second node")
            assert sent.id.endswith(".n2")

    run_async(scenario())
