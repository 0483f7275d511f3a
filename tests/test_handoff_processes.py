"""Hinted handoff on three real nodes (N=3, W=2): writes keep flowing while a replica is
down, the copies it missed wait as hints on disk, and they reach it when it returns,
even when the node holding them crashed meanwhile."""

import signal

import pytest

from mesh.client.chat_client import ChatClient
from tests.chat_helpers import client_for
from tests.processes import Cluster, NodeProcess, run_async, wait_for
from tests.test_placement_processes import where
from tests.test_rooms_processes import whole_history

pytestmark = pytest.mark.processes

NODES = ("n1", "n2", "n3")
ROOMS = ("lobby", "ops", "random")


def hints_held(nodes: list[NodeProcess], owner: str) -> int | None:
    """Hints the running nodes hold for `owner`, all told (None while one cannot say)."""
    total = 0
    for node in nodes:
        reply = node.status()
        if reply is None:
            return None
        total += next((m.hints for m in reply.members if m.id == owner), 0)
    return total


def kill(node: NodeProcess) -> None:
    node.signal(signal.SIGKILL)
    node.process.wait(timeout=5)  # type: ignore[union-attr]


def send_many(nodes: list[NodeProcess], count: int) -> list[str]:
    async def scenario() -> list[str]:
        client: ChatClient = client_for(*nodes, user="ann")
        async with client:
            return [(await client.send(ROOMS[n % len(ROOMS)], f"{n}")).id for n in range(count)]

    return run_async(scenario())


def read_all(node: NodeProcess) -> set[str]:
    async def scenario() -> set[str]:
        async with client_for(node, user="reader") as reader:
            held: set[str] = set()
            for room in ROOMS:
                held |= {message.id for message in await whole_history(reader, room)}
            return held

    return run_async(scenario())


def test_a_down_replica_gets_its_writes_from_hints_then_serves_them_alone(
    mesh: dict[str, NodeProcess], cluster: Cluster
) -> None:
    owner = "n3"
    live = [mesh["n1"], mesh["n2"]]
    kill(mesh[owner])
    for observer in ("n1", "n2"):
        cluster.wait_sees(observer, owner, "dead", timeout_s=10.0)

    acknowledged = send_many(live, 90)  # every send acknowledged (W=2 with two nodes)
    # Three nodes are all replicas: nobody can stand in, so each room's coordinator
    # keeps the hints for n3 itself.
    wait_for(lambda: hints_held(live, owner) == 90, 10.0, cluster.describe)

    # A holder crashes and restarts: its hints were on disk.
    holder = mesh[where(cluster, "n1", ROOMS[0])["coordinator"]]
    kill(holder)
    holder.start()
    wait_for(lambda: hints_held(live, owner) == 90, 20.0, cluster.describe)

    mesh[owner].start()
    wait_for(lambda: hints_held(live, owner) == 0, 30.0, cluster.describe)

    # The owner alone now holds every acknowledged message of every room.
    for node in live:
        kill(node)
    wait_for(lambda: read_all(mesh[owner]) >= set(acknowledged), 20.0, mesh[owner].log)
