"""Read markers and unread counts across a real 3-node mesh: a marker set through one node
is the one every node reads, a second device hears it move, a first join starts with
nothing unread, and counts leave out the user's own and deleted messages."""

import asyncio

import pytest

from mesh.client.connection import NodeError
from mesh.wire.errors import ErrorCode
from mesh.wire.protocol import ReadMarkerEvent
from tests.chat_helpers import client_for, next_event, next_messages
from tests.processes import NodeProcess, run_async, run_cli

pytestmark = pytest.mark.processes


def test_a_marker_set_through_one_node_is_read_through_every_other(
    mesh: dict[str, NodeProcess],
) -> None:
    async def scenario() -> None:
        ann = client_for(mesh["n1"], user="ann")
        bob = client_for(mesh["n2"], user="bob")
        async with ann, bob:
            await ann.send("lobby", "before bob came")
            await bob.join("lobby")
            first = bob.unread_of("lobby")
            assert first is not None and (first.count, first.capped) == (0, False)

            sent = [await ann.send("lobby", f"news {n}") for n in range(4)]
            await bob.send("lobby", "my own words do not count")
            doomed = await ann.send("lobby", "taken back")
            await ann.delete("lobby", doomed.id)
            (counted,) = await bob.unread("lobby")
            assert (counted.count, counted.capped) == (4, False)

            after = await bob.mark_read("lobby", sent[1].id)
            assert (after.read_up_to, after.count) == (sent[1].id, 2)
            behind = await bob.mark_read("lobby", sent[0].id)  # never moves back
            assert (behind.read_up_to, behind.count) == (sent[1].id, 2)
            with pytest.raises(NodeError) as unknown:
                await bob.mark_read("lobby", "0000000000010000.n9")
            assert unknown.value.code == ErrorCode.NOT_FOUND

        for node in ("n1", "n2", "n3"):
            async with client_for(mesh[node], user="bob") as again:
                (seen,) = await again.unread("lobby")
                assert (seen.read_up_to, seen.count) == (sent[1].id, 2), node
                await again.join("lobby")
                joined = again.unread_of("lobby")
                assert joined is not None and joined.count == 2, node
                everything = await again.unread()
                assert [(room.room, room.count) for room in everything] == [("lobby", 2)]

    run_async(scenario())


def test_other_devices_hear_the_marker_move_and_the_newest_message_is_the_default(
    mesh: dict[str, NodeProcess],
) -> None:
    async def scenario() -> None:
        ann = client_for(mesh["n1"], user="ann")
        phone = client_for(mesh["n2"], user="bob")
        tablet = client_for(mesh["n2"], user="bob")  # on the phone's node
        laptop = client_for(mesh["n3"], user="bob")  # on another node
        async with ann, phone, tablet, laptop:
            for device in (phone, tablet, laptop):
                await device.join("lobby")
            for n in range(3):
                await ann.send("lobby", f"hello {n}")
            await next_messages(laptop, 3)
            newest = await phone.mark_read("lobby")
            assert newest.count == 0 and newest.read_up_to is not None
            for device in (tablet, laptop):
                moved = await next_event(device, ReadMarkerEvent)
                assert isinstance(moved, ReadMarkerEvent)
                assert (moved.read_up_to, moved.unread) == (newest.read_up_to, 0)
                assert device.unread_of("lobby") == newest

    run_async(scenario())


def test_the_command_line_lists_and_marks_unread_counts(
    mesh: dict[str, NodeProcess],
) -> None:
    async def scenario() -> str:
        async with (
            client_for(mesh["n1"], user="ann") as ann,
            client_for(mesh["n3"], user="bob") as bob,
        ):
            await bob.join("lobby")
            await asyncio.gather(*(ann.send("lobby", f"line {n}") for n in range(3)))
            return (await ann.send("lobby", "the last")).id

    last = run_async(scenario())
    server = ["--server", mesh["n2"].client_address, "--user", "bob"]
    listed = run_cli("unread", *server)
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.split() == ["lobby", "4"]
    marked = run_cli("mark-read", "lobby", *server)
    assert marked.returncode == 0, marked.stderr
    assert run_cli("unread", "lobby", "--json", *server).stdout.strip() == (
        f'{{"room":"lobby","read_up_to":"{last}","count":0,"capped":false}}'
    )


def test_only_a_user_s_very_first_join_of_a_room_marks_it_read(
    mesh: dict[str, NodeProcess],
) -> None:
    async def scenario() -> None:
        async with client_for(mesh["n1"], user="ann") as ann:
            async with client_for(mesh["n2"], user="bob") as phone:
                await phone.join("empty")  # nothing to mark read: no marker yet
                first = phone.unread_of("empty")
                assert first is not None and (first.read_up_to, first.count) == (None, 0)
            for n in range(5):
                await ann.send("empty", f"while bob was away {n}")
            # Another device, another node: bob joined before, so nothing is marked read.
            async with client_for(mesh["n3"], user="bob") as laptop:
                await laptop.join("empty")
                later = laptop.unread_of("empty")
                assert later is not None and later.count == 5
                (counted,) = await laptop.unread("empty")
                assert counted.count == 5

    run_async(scenario())
