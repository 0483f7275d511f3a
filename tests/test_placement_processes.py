"""`meshchat where` on real nodes: every node places a room alike, and it follows liveness."""

import json
import signal
import subprocess
from typing import Any

import pytest

from tests.processes import Cluster, meshchat_command

pytestmark = pytest.mark.processes


def where(cluster: Cluster, observer: str, room: str) -> dict[str, Any]:
    result = subprocess.run(
        [
            *meshchat_command(),
            "where",
            "--server",
            cluster.nodes[observer].client_address,
            room,
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=20,
        check=True,
    )
    document: dict[str, Any] = json.loads(result.stdout)
    return document


def test_every_node_places_a_room_alike_and_names_the_first_alive_coordinator(
    cluster: Cluster,
) -> None:
    first = cluster.add("n1").start()
    for node_id in ("n2", "n3", "n4"):
        cluster.add(node_id, seeds=[first.peer_address]).start()
    for observer in ("n1", "n2", "n3", "n4"):
        for member in ("n1", "n2", "n3", "n4"):
            if member != observer:
                cluster.wait_sees(observer, member, "alive", timeout_s=10.0)
    for room in ("lobby", "ops", "general"):
        answers = [where(cluster, observer, room) for observer in ("n1", "n2", "n3", "n4")]
        assert all(answer == answers[0] for answer in answers), answers
        replicas = answers[0]["replicas"]
        assert isinstance(replicas, list) and len(replicas) == 3
        assert len({replica["id"] for replica in replicas}) == 3
        assert answers[0]["coordinator"] == replicas[0]["id"]

    placement = where(cluster, "n1", "lobby")
    replicas = placement["replicas"]
    assert isinstance(replicas, list)
    first_replica = replicas[0]["id"]
    observer = next(n for n in ("n1", "n2", "n3", "n4") if n != first_replica)
    cluster.nodes[first_replica].signal(signal.SIGKILL)
    cluster.wait_sees(observer, first_replica, "dead", timeout_s=10.0)
    after = where(cluster, observer, "lobby")
    # The list is the same (a dead node keeps its place); the coordinator moves on.
    assert [r["id"] for r in after["replicas"]] == [r["id"] for r in replicas]
    assert after["replicas"][0]["state"] == "dead"
    assert after["coordinator"] == replicas[1]["id"]
