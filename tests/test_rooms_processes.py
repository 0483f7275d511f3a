"""Rooms across a real 3-node mesh: live chat between nodes, one history through every node,
and a node killed with kill -9 while clients keep sending."""

import asyncio
import shutil
import signal
import time
from collections import Counter

import pytest

from mesh.client.chat_client import ChatClient
from mesh.client.connection import NodeError
from mesh.wire.protocol import Message, PresenceEvent, Sent, TypingEvent
from tests.chat_helpers import client_for, next_event, next_messages
from tests.processes import Cluster, NodeProcess, counters, run_async, wait_for
from tests.test_placement_processes import where

pytestmark = pytest.mark.processes

NODES = ("n1", "n2", "n3")
# A user's rooms agree through every node once each change has spread (a few retries).
ROOMS_AGREE_TIMEOUT_S = 10.0


async def whole_history(client: ChatClient, room: str) -> list[Message]:
    """Every message of the room, walking pages backwards from the newest."""
    pages: list[list[Message]] = []
    before: str | None = None
    while True:
        page = await client.history(room, before=before, limit=50)
        pages.append(page.messages)
        if page.cursor is None:
            break
        before = page.cursor
    return [message for page in reversed(pages) for message in page]


def test_clients_on_different_nodes_chat_live_with_presence_typing_and_who(
    mesh: dict[str, NodeProcess],
) -> None:
    async def scenario() -> None:
        ann = client_for(mesh["n1"], user="ann")
        bob = client_for(mesh["n2"], user="bob")
        cat = client_for(mesh["n3"], user="cat")
        async with ann, bob, cat:
            await ann.join("lobby")
            await bob.join("lobby")
            joined = await next_event(ann, PresenceEvent)
            assert isinstance(joined, PresenceEvent) and (joined.user, joined.state) == (
                "bob",
                "joined",
            )
            assert await cat.join("lobby") == ["ann", "bob", "cat"]
            for client in (ann, bob, cat):
                assert await client.who("lobby") == ["ann", "bob", "cat"]

            sent = await ann.send("lobby", "hello from n1")
            for client in (bob, cat):
                (message,) = await next_messages(client, 1)
                assert (message.id, message.sender, message.body) == (
                    sent.id,
                    "ann",
                    "hello from n1",
                )
            await cat.send("lobby", "hello from n3")
            for client in (ann, bob):
                messages = await next_messages(client, 1 if client is bob else 2)
                assert messages[-1].body == "hello from n3"

            await bob.typing("lobby")
            typing = await next_event(cat, TypingEvent)
            assert isinstance(typing, TypingEvent) and typing.user == "bob"

            await bob.leave("lobby")
            left = await next_event(cat, PresenceEvent)
            assert isinstance(left, PresenceEvent) and (left.user, left.state) == ("bob", "left")
            assert await ann.who("lobby") == ["ann", "cat"]

    run_async(scenario())


def test_history_is_the_same_through_every_node(mesh: dict[str, NodeProcess]) -> None:
    rooms = ("general", "ops", "random")

    async def scenario() -> None:
        clients = [client_for(mesh[node], user=f"user-{node}") for node in NODES]
        for client in clients:
            await client.connect()
        try:
            sends = [
                client.send(room, f"{index} from {position}")
                for index in range(30)
                for position, client in enumerate(clients)
                for room in rooms
            ]
            acknowledged = await asyncio.gather(*sends)
            assert len({sent.id for sent in acknowledged}) == len(sends)
            for room in rooms:
                views = [await whole_history(client, room) for client in clients]
                ids = [[message.id for message in view] for view in views]
                assert ids[0] == ids[1] == ids[2]
                assert len(ids[0]) == 90 == len(set(ids[0]))
                assert ids[0] == sorted(ids[0])
        finally:
            for client in clients:
                await client.close()

    run_async(scenario())


def test_kill_9_of_the_coordinator_while_clients_send(
    mesh: dict[str, NodeProcess], cluster: Cluster
) -> None:
    """Every send is acknowledged or fails with an error; the acknowledged ones are all
    there afterwards, once each; readers on the killed node fail over and miss nothing."""
    room = "busy"
    victim = where(cluster, "n1", room)["coordinator"]
    assert victim in NODES
    survivors = [node for node in NODES if node != victim]
    per_sender = 120

    async def scenario() -> None:
        # Each client lists its own node first, then the others to fail over to.
        def client(node: str, user: str) -> ChatClient:
            others = [mesh[n] for n in NODES if n != node]
            return client_for(mesh[node], *others, user=user)

        readers = {node: client(node, f"reader-{node}") for node in NODES}
        senders = {node: client(node, f"sender-{node}") for node in NODES}
        for each in (*readers.values(), *senders.values()):
            await each.connect()
        for reader in readers.values():
            await reader.join(room)
        acked: dict[tuple[str, str], Sent] = {}
        failed: list[tuple[str, str, NodeError]] = []

        async def send_all(node: str) -> None:
            sender = senders[node]
            for index in range(per_sender):
                client_msg_id = f"{node}-{index}"
                try:
                    sent = await sender.send(room, f"message {index}", client_msg_id)
                except NodeError as error:
                    failed.append((node, client_msg_id, error))
                else:
                    acked[(f"sender-{node}", client_msg_id)] = sent
                await asyncio.sleep(0.01)

        async def kill_soon() -> None:
            # Kill once sending is well under way (bounded by the scenario's timeout).
            while len(acked) < 60:
                await asyncio.sleep(0.01)
            mesh[victim].signal(signal.SIGKILL)

        started = time.monotonic()
        await asyncio.gather(*(send_all(node) for node in NODES), kill_soon())
        assert time.monotonic() - started < 60
        # A failed send is safe to retry, through any node, with the same client message id.
        for node, client_msg_id, error in failed:
            assert error.code == "unavailable", error
            sent = await senders[survivors[0]].send(room, "retry", client_msg_id)
            acked[(f"sender-{node}", client_msg_id)] = sent

        total = per_sender * len(NODES)
        for node in survivors:
            history = await whole_history(readers[node], room)
            keys = Counter((message.sender, message.client_msg_id) for message in history)
            assert not [key for key, count in keys.items() if count > 1], "stored twice"
            assert len(history) == len({message.id for message in history})
            missing = set(acked) - set(keys)
            assert not missing, f"{len(missing)} acknowledged sends missing"
            assert len(history) == total
        # Readers, including the one whose node died, got every message once.
        for node, reader in readers.items():
            delivered = await next_messages(reader, total, timeout_s=30.0)
            ids = [message.id for message in delivered]
            assert len(ids) == len(set(ids)), f"reader on {node} got repeats"
            received = {(message.sender, message.client_msg_id) for message in delivered}
            assert set(acked) <= received, f"reader on {node} missed messages"
        for each in (*readers.values(), *senders.values()):
            await each.close()

    run_async(scenario(), timeout_s=120.0)


def test_a_node_wiped_and_rejoined_empty_is_refilled_by_anti_entropy(
    mesh: dict[str, NodeProcess],
) -> None:
    rooms = ("alpha", "beta")

    async def send_some() -> list[str]:
        async with client_for(mesh["n1"], user="ann") as ann:
            return [(await ann.send(room, f"{n}")).id for n in range(60) for room in rooms]

    acknowledged = run_async(send_some())
    victim = mesh["n3"]
    victim.signal(signal.SIGKILL)
    victim.process.wait(timeout=5)  # type: ignore[union-attr]
    shutil.rmtree(victim.data_dir)
    victim.start()

    async def held_by_victim() -> set[str]:
        # R=1 and every node a replica of every room (N=3, three nodes): a page read
        # through n3 is n3's own copy.
        async with client_for(victim, user="reader") as reader:
            ids: set[str] = set()
            for room in rooms:
                ids |= {m.id for m in await whole_history(reader, room)}
            return ids

    def refilled() -> bool:
        try:
            return run_async(held_by_victim(), timeout_s=10.0) == set(acknowledged)
        except (NodeError, TimeoutError, AssertionError):
            return False

    wait_for(refilled, 30.0, victim.log)


def test_a_users_rooms_are_the_same_through_every_node_and_outlive_the_node_joined_through(
    mesh: dict[str, NodeProcess],
) -> None:
    async def rooms_become(client: ChatClient, expected: list[str]) -> None:
        # A lookup asks the user's other nodes within the read timeout; a node too busy
        # to answer in time is left out of that one answer, so the view is polled.
        deadline = time.monotonic() + ROOMS_AGREE_TIMEOUT_S
        while (rooms := await client.rooms()) != expected:
            assert time.monotonic() < deadline, f"rooms {rooms}, not {expected}"
            await asyncio.sleep(0.1)

    async def agree() -> None:
        via = {node_id: client_for(mesh[node_id], user="ann") for node_id in NODES}
        async with via["n1"], via["n2"], via["n3"]:
            await via["n1"].join("alpha")
            await via["n2"].join("beta")
            for client in via.values():
                await rooms_become(client, ["alpha", "beta"])
            # The leave, through a third node, is later than the join: it wins everywhere.
            await via["n3"].join("alpha")
            await via["n3"].leave("alpha")
            for client in via.values():
                await rooms_become(client, ["beta"])

    async def outlive() -> None:
        for node_id in ("n1", "n3"):
            async with client_for(mesh[node_id], user="ann") as ann:
                await rooms_become(ann, ["beta"])

    run_async(agree())
    # "beta" was joined through n2, which spreads the change to the user's other nodes
    # after it is on its own disk: once both have acknowledged it, n2 may die.
    wait_for(lambda: counters(mesh["n2"])["memberships_spread"] >= 2, 10.0, mesh["n2"].log)
    mesh["n2"].signal(signal.SIGKILL)
    run_async(outlive())
