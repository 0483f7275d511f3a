"""The command line as an operator uses it: node, up and status."""

import json
import signal
import socket
import subprocess
from pathlib import Path

import pytest

from mesh.cli.exit_codes import EXIT_UNREACHABLE
from tests.processes import (
    HOST,
    Cluster,
    free_base_port,
    free_ports,
    meshchat_command,
    run_cli,
    wait_for,
)

pytestmark = pytest.mark.processes


@pytest.mark.parametrize("taken", ["peer", "client"])
def test_a_port_in_use_is_one_line_and_exit_code_2(tmp_path: Path, taken: str) -> None:
    peer_port, client_port = free_ports(2)
    blocker = socket.socket()
    blocker.bind((HOST, peer_port if taken == "peer" else client_port))
    blocker.listen()
    try:
        result = run_cli(
            "node",
            "--id",
            "n1",
            "--peer-port",
            str(peer_port),
            "--client-port",
            str(client_port),
            "--data",
            str(tmp_path / "n1"),
        )
    finally:
        blocker.close()
    port = peer_port if taken == "peer" else client_port
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines() == [
        f"meshchat node: port {port} on {HOST} is already in use"
    ], result.stderr


def test_an_unreachable_seed_is_retried_while_the_node_serves_alone(cluster: Cluster) -> None:
    (nowhere,) = free_ports(1)
    node = cluster.add("n1", seeds=[f"n0@{HOST}:{nowhere}"]).start()
    wait_for(node.status, 5.0, node.log)
    wait_for(lambda: "has not answered 3 attempt(s)" in node.log(), 10.0, node.log)
    reply = node.status()
    assert reply is not None and [m.id for m in reply.members] == ["n1"]


def test_status_prints_the_membership_as_json_and_as_a_table(cluster: Cluster) -> None:
    first = cluster.add("n1").start()
    cluster.add("n2", seeds=[first.peer_address]).start()
    cluster.wait_sees("n1", "n2", "alive")
    result = run_cli("status", "--server", first.client_address, "--json")
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["node"] == "n1"
    assert [member["id"] for member in document["members"]] == ["n1", "n2"]
    for member in document["members"]:
        assert set(member) == {
            "id",
            "address",
            "state",
            "incarnation",
            "last_heard_s",
            "dropped",
            "hints",
            "oldest_hint_s",
        }
        assert (member["hints"], member["oldest_hint_s"]) == (0, None)
        assert member["state"] == "alive"
    table = run_cli("status", "--server", f"{HOST}:1,{first.client_address}")  # fails over
    assert table.returncode == 0, table.stderr
    assert table.stdout.splitlines()[0] == "node n1 sees 2 member(s)"
    assert "n2" in table.stdout


def test_status_of_a_node_that_is_not_there_fails_clearly() -> None:
    (nowhere,) = free_ports(1)
    result = run_cli("status", "--server", f"{HOST}:{nowhere}", "--timeout", "1")
    assert result.returncode == EXIT_UNREACHABLE
    assert result.stderr.startswith("meshchat status: no node could be reached")
    assert f"{HOST}:{nowhere}: connection refused" in result.stderr


def test_up_starts_a_mesh_stops_it_on_sigterm_and_reuses_its_data(tmp_path: Path) -> None:
    base_port = free_base_port(3)
    data = tmp_path / "mesh"
    incarnations = []
    last_status = ["no answer yet"]
    for _ in range(2):
        up = subprocess.Popen(
            [
                *meshchat_command(),
                "up",
                "--nodes",
                "3",
                "--base-port",
                str(base_port),
                "--data",
                str(data),
                "--heartbeat-interval",
                "0.1",
                "--suspect-after",
                "0.5",
                "--dead-after",
                "1",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        try:
            assert up.stdout is not None
            lines = [up.stdout.readline() for _ in range(3)]
            assert [line.split()[0] for line in lines] == ["n1", "n2", "n3"]
            assert f"client {HOST}:{base_port + 1}" in lines[1]

            def all_alive() -> dict[str, object] | None:
                result = run_cli("status", "--server", f"{HOST}:{base_port + 2}", "--json")
                last_status[0] = f"exit {result.returncode}: {result.stdout}{result.stderr}"
                if result.returncode != 0:
                    return None
                document: dict[str, object] = json.loads(result.stdout)
                members = document["members"]
                assert isinstance(members, list)
                states = [m["state"] for m in members]
                return document if states == ["alive"] * 3 else None

            document = wait_for(all_alive, 30.0, lambda: f"mesh never converged; {last_status[0]}")
            incarnations.append({m["id"]: m["incarnation"] for m in document["members"]})  # type: ignore[attr-defined]
            up.send_signal(signal.SIGTERM)
            assert up.wait(timeout=10.0) == 0
        finally:
            if up.poll() is None:
                up.kill()
                up.wait()
    # Every node stopped with `up`, and the second run used the same data dirs.
    stopped = run_cli("status", "--server", f"{HOST}:{base_port}", "--timeout", "1")
    assert stopped.returncode == EXIT_UNREACHABLE
    assert all(incarnations[1][i] > incarnations[0][i] for i in ("n1", "n2", "n3"))
    # Node data dirs, and the key pairs and trusted directory `up` made once and reused.
    assert sorted(p.name for p in data.iterdir()) == ["keys", "n1", "n2", "n3", "trusted"]
