"""Hinted handoff on three real nodes (N=3, W=2): writes keep flowing while a replica is
down, the copies it missed wait as hints on disk, and they reach it when it returns,
even when the node holding them crashed meanwhile."""

import signal
from collections.abc import Iterator

import pytest

from mesh.client import ChatClient
from tests.chat_helpers import client_for
from tests.processes import Cluster, NodeProcess, run_async, wait_for
from tests.test_placement_processes import where
from tests.test_rooms_processes import whole_history

pytestmark = pytest.mark.processes

NODES = ("n1", "n2", "n3")
ROOM = "lobby"


@pytest.fixture
def mesh(cluster: Cluster) -> Iterator[dict[str, NodeProcess]]:
    first = cluster.add("n1").start()
    for node_id in NODES[1:]:
        cluster.add(node_id, seeds=[first.peer_address]).start()
    for observer in NODES:
        for member in NODES:
            if member != observer:
                cluster.wait_sees(observer, member, "alive", timeout_s=10.0)
    yield cluster.nodes


def hints_held(node: NodeProcess, owner: str) -> int | None:
    reply = node.status()
    if reply is None:
        return None
    return next((m.hints for m in reply.members if m.id == owner), 0)


def kill(node: NodeProcess) -> None:
    node.signal(signal.SIGKILL)
    node.process.wait(timeout=5)  # type: ignore[union-attr]


def send_many(nodes: list[NodeProcess], count: int, tag: str) -> list[str]:
    async def scenario() -> list[str]:
        client: ChatClient = client_for(*nodes, user="ann")
        async with client:
            return [(await client.send(ROOM, f"{tag} {n}")).id for n in range(count)]

    return run_async(scenario())


def read_all(node: NodeProcess) -> set[str]:
    async def scenario() -> set[str]:
        async with client_for(node, user="reader") as reader:
            return {message.id for message in await whole_history(reader, ROOM)}

    return run_async(scenario())


def test_a_down_replica_gets_its_writes_from_hints_then_serves_them_alone(
    mesh: dict[str, NodeProcess], cluster: Cluster
) -> None:
    coordinator = where(cluster, "n1", ROOM)["coordinator"]
    owner = next(node for node in NODES if node != coordinator)
    holder = mesh[coordinator]
    kill(mesh[owner])
    cluster.wait_sees(coordinator, owner, "dead", timeout_s=10.0)

    live = [mesh[node] for node in NODES if node != owner]
    acknowledged = send_many(live, 80, "while down")  # every send acknowledged (W=2)
    # Three nodes are all replicas: nobody can stand in, so the coordinator keeps the hints.
    wait_for(lambda: hints_held(holder, owner) == 80, 10.0, holder.log)

    # The holder crashes and restarts: its hints were on disk.
    kill(holder)
    holder.start()
    wait_for(lambda: hints_held(holder, owner) == 80, 20.0, holder.log)

    mesh[owner].start()
    wait_for(lambda: hints_held(holder, owner) == 0, 30.0, holder.log)

    # The owner alone now holds every acknowledged message.
    for node in NODES:
        if node != owner:
            kill(mesh[node])
    wait_for(lambda: read_all(mesh[owner]) >= set(acknowledged), 20.0, mesh[owner].log)
