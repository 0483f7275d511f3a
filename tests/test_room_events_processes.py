"""Edits, deletes, reactions and replies across a real 3-node mesh: made through one node,
seen live and in history through the others, kept across a node's kill -9 and restart;
an older client still reads plain messages."""

import asyncio
import json
import signal
import time

import pytest

from mesh.client.chat_client import ChatClient
from mesh.client.connection import NodeError
from mesh.node.doors.relations import REACTIONS_PER_USER_MAX
from mesh.wire.errors import ErrorCode
from mesh.wire.protocol import Message, RelationEvent
from tests.chat_helpers import client_for, next_event, next_messages, wait_serving
from tests.processes import NodeProcess, run_async, run_cli
from tests.test_protocol_versions import RawSession
from tests.test_rooms_processes import whole_history

pytestmark = pytest.mark.processes

# How long a restarted node may take to get what it missed (its join settle, then the
# hints replayed), on a machine busy with other tests.
HANDOFF_WAIT_S = 30.0


async def held_by_every_node(mesh: dict[str, NodeProcess], room: str, message_id: str) -> None:
    """Until every node's own copy of the room holds the message (each node is a replica
    of every room in a 3-node mesh, and reads its own copy first)."""
    for node in mesh.values():
        async with client_for(node, user="prober") as prober:
            while message_id not in {m.id for m in await whole_history(prober, room)}:
                await asyncio.sleep(0.05)


async def views(client: ChatClient, room: str) -> dict[str, Message]:
    return {message.id: message for message in await whole_history(client, room)}


def test_edit_delete_react_and_reply_are_seen_live_and_in_history_through_every_node(
    mesh: dict[str, NodeProcess],
) -> None:
    async def scenario() -> None:
        ann = client_for(mesh["n1"], user="ann")
        bob = client_for(mesh["n2"], user="bob")
        async with ann, bob:
            await bob.join("lobby")
            typo = await ann.send("lobby", "helo")
            doomed = await ann.send("lobby", "a secret")
            answer = await bob.send("lobby", "hi ann", reply_to=typo.id)
            await next_messages(bob, 3)

            await ann.edit("lobby", typo.id, "hello")
            edit = await next_event(bob, RelationEvent)
            assert isinstance(edit, RelationEvent)
            assert (edit.kind, edit.target, edit.body) == ("edit", typo.id, "hello")
            await bob.react("lobby", typo.id, "👍")
            await ann.react("lobby", typo.id, "👍")
            await ann.react("lobby", typo.id, "🎉")
            await ann.react("lobby", typo.id, "🎉", remove=True)
            await ann.delete("lobby", doomed.id)

            with pytest.raises(NodeError) as refused:
                await bob.edit("lobby", typo.id, "not yours")
            assert refused.value.code == ErrorCode.FORBIDDEN
            with pytest.raises(NodeError) as gone:
                await bob.react("lobby", doomed.id, "👀")
            assert gone.value.code == ErrorCode.NOT_FOUND

        for node in ("n1", "n2", "n3"):
            async with client_for(mesh[node], user="cat") as cat:
                seen = await views(cat, "lobby")
            assert list(seen) == [typo.id, doomed.id, answer.id], node
            shown = seen[typo.id]
            assert (shown.body, shown.reactions) == ("hello", {"👍": ["ann", "bob"]}), node
            assert shown.edited_at_ms is not None
            assert seen[doomed.id].deleted is not None and seen[doomed.id].body == "", node
            assert seen[doomed.id].deleted.by == "ann"  # type: ignore[union-attr]
            assert seen[answer.id].reply_to == typo.id

    run_async(scenario())


def test_events_made_while_a_node_is_down_reach_it_and_its_clients_after_restart(
    mesh: dict[str, NodeProcess],
) -> None:
    victim = mesh["n3"]

    async def before_kill() -> str:
        async with client_for(mesh["n1"], user="ann") as ann:
            return (await ann.send("lobby", "first draft")).id

    first = run_async(before_kill())
    victim.signal(signal.SIGKILL)
    victim.process.wait(timeout=5)  # type: ignore[union-attr]

    async def while_down() -> None:
        async with client_for(mesh["n1"], user="ann") as ann:
            await ann.edit("lobby", first, "final text")
            await ann.react("lobby", first, "ok")

    run_async(while_down())
    victim.start()

    async def after_restart() -> None:
        await wait_serving(victim)
        # R=1 through n3 reads n3's own copy first: handoff brings what it missed.
        async with client_for(victim, user="cat") as cat:
            deadline = time.monotonic() + HANDOFF_WAIT_S
            while time.monotonic() < deadline:
                shown = (await views(cat, "lobby"))[first]
                if shown.body == "final text" and shown.reactions == {"ok": ["ann"]}:
                    return
                await asyncio.sleep(0.1)
            raise AssertionError(f"n3 still shows {shown} after {HANDOFF_WAIT_S}s")

    run_async(after_restart(), timeout_s=60.0)


def test_an_older_client_gets_edited_bodies_and_no_deleted_messages(
    mesh: dict[str, NodeProcess],
) -> None:
    async def scenario() -> tuple[str, str]:
        async with client_for(mesh["n1"], user="ann") as ann:
            kept = await ann.send("lobby", "draft")
            gone = await ann.send("lobby", "oops")
            await ann.edit("lobby", kept.id, "final")
            await ann.delete("lobby", gone.id)
            return kept.id, gone.id

    kept, _gone = run_async(scenario())
    old = RawSession(mesh["n2"].client_port)
    try:
        old.send({"type": "hello", "versions": [1], "minor": 3, "token": "old"})
        assert old.receive()["type"] == "welcome"
        old.send({"type": "history", "request_id": 1, "room": "lobby"})
        page = old.reply_to(1)
        assert [(m["id"], m["body"]) for m in page["messages"]] == [(kept, "final")]
        assert all(
            set(m) <= {"id", "room", "sender", "time_ms", "body", "client_msg_id"}
            for m in page["messages"]
        )
        old.send(
            {
                "type": "edit",
                "request_id": 2,
                "room": "lobby",
                "client_msg_id": "x",
                "id": kept,
                "body": "y",
            }
        )
        assert old.reply_to(2)["code"] == "bad_request"
        # A client message id reused in another room is `conflict` since 1.4, a code a
        # 1.3 client has no name for: it hears bad_request.
        send = {"type": "send", "client_msg_id": "reused", "body": "hi"}
        old.send({**send, "request_id": 3, "room": "lobby"})
        first = old.reply_to(3)
        assert first["type"] == "sent"
        # Where the node can tell: the other room's coordinator holds the first one.
        run_async(held_by_every_node(mesh, "lobby", first["id"]))
        old.send({**send, "request_id": 4, "room": "random"})
        assert old.reply_to(4)["code"] == "bad_request"
    finally:
        old.close()


def test_the_command_line_edits_deletes_and_reacts_and_history_json_shows_the_view(
    mesh: dict[str, NodeProcess],
) -> None:
    def meshchat(*arguments: str, user: str = "ann", node: str = "n1") -> str:
        done = run_cli(
            *arguments[:1], "--server", mesh[node].client_address, "--user", user, *arguments[1:]
        )
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    kept = meshchat("send", "lobby", "draft")
    gone = meshchat("send", "lobby", "oops")
    meshchat("edit", "lobby", kept, "final")
    meshchat("react", "lobby", kept, "+1", user="bob", node="n2")
    meshchat("react", "lobby", kept, "ok", user="bob")
    meshchat("react", "lobby", kept, "ok", "--remove", user="bob")
    meshchat("delete", "lobby", gone)
    refused = run_cli(
        "edit", "--server", mesh["n3"].client_address, "--user", "bob", "lobby", kept, "x"
    )
    assert (refused.returncode, refused.stderr.strip()) == (
        1,
        "meshchat edit: forbidden: only ann, who sent it, may edit it",
    )

    printed = [
        json.loads(line) for line in meshchat("history", "lobby", "--json", node="n3").splitlines()
    ]
    assert [(m["id"], m["body"], m["reactions"]) for m in printed] == [
        (kept, "final", {"+1": ["bob"]}),
        (gone, "", {}),
    ]
    assert printed[0]["edited_at"] is not None and printed[0]["deleted"] is None
    assert printed[1]["deleted"]["by"] == "ann"
    plain = meshchat("history", "lobby", node="n2").splitlines()
    assert plain[0].endswith("ann: final (edited) [+1 1]") and plain[1].endswith(
        "ann: (deleted by ann)"
    )


def test_a_resume_replays_views_and_relations_and_mistakes_are_refused(
    mesh: dict[str, NodeProcess],
) -> None:
    async def scenario() -> None:
        async with client_for(mesh["n1"], user="ann") as ann:
            before = await ann.send("lobby", "before")
            draft = await ann.send("lobby", "draft")
            await ann.edit("lobby", draft.id, "final")
            for n in range(REACTIONS_PER_USER_MAX):
                await ann.react("lobby", draft.id, f"k{n}")
            with pytest.raises(NodeError) as too_many:
                await ann.react("lobby", draft.id, "one-more")
            assert too_many.value.code == ErrorCode.BAD_REQUEST
            await ann.react("lobby", draft.id, "k0")  # one standing already: fine
            with pytest.raises(NodeError) as reused:
                await ann.edit("lobby", draft.id, "x", client_msg_id=draft_key(ann, draft.id))
            assert reused.value.code == ErrorCode.CONFLICT

        async with client_for(mesh["n2"], user="bob") as bob:
            await bob.join("lobby", since=before.id)
            replayed = await next_messages(bob, 1)
            assert (replayed[0].body, replayed[0].edited_at_ms is not None) == ("final", True)
            assert len(replayed[0].reactions) == REACTIONS_PER_USER_MAX
            edit = await next_event(bob, RelationEvent)
            assert isinstance(edit, RelationEvent) and edit.kind == "edit"

    def draft_key(_: ChatClient, __: str) -> str:
        return "reused-key"

    async def first_use() -> None:
        async with client_for(mesh["n1"], user="ann") as ann:
            await ann.send("lobby", "a message", client_msg_id="reused-key")

    run_async(first_use())
    run_async(scenario())
