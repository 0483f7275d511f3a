"""One owner per data dir, and a node that loses its database stops acknowledging.

A second node or `meshchat up` on a dir in use exits 2 at once and the owner's mesh does not
notice; kill -9 leaves no lock behind; a dir deleted under a running node loses no
acknowledged message; a damaged or foreign database is one line on stderr, never a traceback.
"""

import asyncio
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import time
from collections.abc import Callable
from dataclasses import replace
from functools import partial
from pathlib import Path

import pytest

from mesh.client.chat_client import ChatClient
from mesh.client.connection import NodeError
from mesh.local.launcher import plan_mesh
from mesh.node.data_lock import LOCK_FILE
from mesh.node.storage import DATABASE_FILE, SendResult, Storage, StorageLostError, StoredMessage
from router.message_ids import HybridClock
from tests.chat_helpers import client_for
from tests.processes import (
    FAST_TIMING,
    HOST,
    Cluster,
    NodeProcess,
    free_base_port,
    free_ports,
    meshchat_command,
    run_async,
    wait_for,
)
from tests.test_rooms_processes import whole_history

pytestmark = pytest.mark.processes

ROOMS = ("lobby", "ops")
EXIT_USAGE = 2
EXIT_DATA_DIR_LOST = 4
# A refused start imports the node and exits: seconds at most, even on a busy machine.
REFUSAL_TIMEOUT_S = 15.0


def run_meshchat(arguments: list[str]) -> tuple[subprocess.CompletedProcess[str], float]:
    """Run one meshchat command to its end; the result and how long it took."""
    started = time.monotonic()
    result = subprocess.run(
        [*meshchat_command(), *arguments],
        capture_output=True,
        text=True,
        timeout=REFUSAL_TIMEOUT_S,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    return result, time.monotonic() - started


def node_arguments(node_id: str, data_dir: Path) -> list[str]:
    peer_port, client_port = free_ports(2)
    arguments = ["node", "--id", node_id, "--host", HOST, "--data", str(data_dir)]
    arguments += ["--peer-port", str(peer_port), "--client-port", str(client_port)]
    return arguments + FAST_TIMING


def lock_pid(data_dir: Path) -> int:
    return int((data_dir / LOCK_FILE).read_text())


def incarnation_on_disk(data_dir: Path) -> int:
    return int(json.loads((data_dir / "node.json").read_text())["incarnation"])


def send_and_read(*nodes: NodeProcess, body: str) -> None:
    """A send through the first node is acknowledged and readable through every one."""

    async def scenario() -> None:
        async with client_for(nodes[0], user="ann") as sender:
            sent = await sender.send("lobby", body)
        for node in nodes:
            async with client_for(node, user="reader") as reader:
                assert sent.id in {m.id for m in await whole_history(reader, "lobby")}

    run_async(scenario())


def assert_refused(result: subprocess.CompletedProcess[str], command: str, message: str) -> None:
    """Exit 2 with one line, before anything else: not even a log line of the start."""
    assert result.returncode == EXIT_USAGE, result
    assert result.stderr.splitlines() == [f"meshchat {command}: {message}"], result
    assert "Traceback" not in result.stdout + result.stderr


def test_a_second_node_on_a_data_dir_exits_2_and_the_first_keeps_serving(
    cluster: Cluster,
) -> None:
    first = cluster.add("n1").start()
    owner = cluster.add("n2", seeds=[first.peer_address]).start()
    cluster.wait_sees("n1", "n2", "alive", timeout_s=10.0)
    cluster.wait_sees("n2", "n1", "alive", timeout_s=10.0)
    seen_before = cluster.states("n1")
    on_disk_before = incarnation_on_disk(owner.data_dir)
    assert owner.process is not None and seen_before is not None

    # The same id, key and dir, other ports, seeded at the mesh: without the lock it would
    # join as a newer n2.
    peer_port, client_port = free_ports(2)
    intruder = replace(owner, peer_port=peer_port, client_port=client_port, process=None)
    result, took_s = run_meshchat(intruder.command()[len(meshchat_command()) :])

    assert_refused(
        result, "node", f"data dir {owner.data_dir} is in use by pid {owner.process.pid}"
    )
    assert took_s < REFUSAL_TIMEOUT_S
    assert incarnation_on_disk(owner.data_dir) == on_disk_before
    assert lock_pid(owner.data_dir) == owner.process.pid
    # Same members and incarnations, all alive (a newer n2 would stay for good; a moment
    # of suspicion on a busy machine would not).
    wait_for(lambda: cluster.states("n1") == seen_before, 20.0, cluster.describe)
    send_and_read(owner, first, body="after the second process")


def test_a_second_up_on_a_data_root_exits_2_at_once_and_the_first_mesh_is_untouched(
    tmp_path: Path,
) -> None:
    root = tmp_path / "mesh"
    base = free_base_port(3)
    log_path = tmp_path / "up.log"
    command = ["up", "--nodes", "3", "--base-port", str(base), "--data", str(root)]
    with open(log_path, "ab") as log:
        first_up = subprocess.Popen(
            [*meshchat_command(), *command, *FAST_TIMING],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    nodes = {
        planned.node_id: NodeProcess(
            planned.node_id,
            planned.peer_port,
            planned.client_port,
            planned.data_dir,
            tmp_path / f"{planned.node_id}.unused.log",
        )
        for planned in plan_mesh(3, base, root, HOST)
    }

    def views() -> dict[str, dict[str, tuple[str, int]]] | None:
        seen = {}
        for node_id, node in nodes.items():
            reply = node.status()
            if reply is None:
                return None
            seen[node_id] = {m.id: (m.state, m.incarnation) for m in reply.members}
            if [state for state, _ in seen[node_id].values()] != ["alive"] * 3:
                return None
        return seen

    try:
        before = wait_for(views, 20.0, lambda: log_path.read_text(errors="replace")[-2000:])
        owners = {node_id: lock_pid(node.data_dir) for node_id, node in nodes.items()}

        result, _ = run_meshchat(
            ["up", "--nodes", "3", "--base-port", str(free_base_port(3)), "--data", str(root)]
        )

        assert_refused(result, "up", f"data dir {root / 'n1'} is in use by pid {owners['n1']}")
        assert first_up.poll() is None
        assert {node_id: lock_pid(node.data_dir) for node_id, node in nodes.items()} == owners
        # The same members at the same incarnations, all alive (a busy machine may make
        # one look suspect for a moment: that is timing, not the second `up`).
        assert wait_for(views, 20.0, lambda: str(views())) == before
        send_and_read(nodes["n2"], nodes["n1"], nodes["n3"], body="after the second up")
    finally:
        first_up.send_signal(signal.SIGTERM)
        try:
            first_up.wait(timeout=15.0)
        except subprocess.TimeoutExpired:
            first_up.kill()
            first_up.wait()
        for node in nodes.values():  # `up` stops its nodes; a node it lost is ours to stop
            pid = lock_pid(node.data_dir)
            if _running(pid):
                os.kill(pid, signal.SIGKILL)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_a_node_killed_with_kill_9_restarts_on_its_data_dir(cluster: Cluster) -> None:
    node = cluster.add("n1").start()
    wait_for(node.status, 10.0, cluster.describe)
    assert node.process is not None
    node.signal(signal.SIGKILL)
    node.process.wait(timeout=5.0)

    node.start()
    wait_for(node.status, 10.0, cluster.describe)
    assert node.process.poll() is None
    assert lock_pid(node.data_dir) == node.process.pid
    assert "in use" not in node.log()


def test_a_deleted_data_dir_loses_no_acknowledged_message(
    mesh: dict[str, NodeProcess], cluster: Cluster
) -> None:
    victim = mesh["n3"]
    others = [mesh["n1"], mesh["n2"]]
    refused: list[str] = []  # sends the client gave up on (none expected: W=2 nodes remain)

    async def sends(client: ChatClient, first: int, count: int) -> list[str]:
        acknowledged = []
        for n in range(first, first + count):
            try:
                acknowledged.append((await client.send(ROOMS[n % len(ROOMS)], f"m{n}")).id)
            except (ConnectionError, TimeoutError, NodeError) as error:
                refused.append(f"send {n}: {error!r}")
        return acknowledged

    async def scenario() -> tuple[list[str], list[str]]:
        # Connected to the victim first: it coordinates and stores until its dir goes.
        async with client_for(victim, *others, user="ann") as client:
            before = await sends(client, 0, 20)
            shutil.rmtree(victim.data_dir)
            after = await sends(client, 20, 20)
        return before, after

    before, after = run_async(scenario(), timeout_s=120.0)
    # Refused sends were answered `unavailable` and retried through another node.
    assert (len(before), len(after)) == (20, 20), refused
    process = victim.process
    assert process is not None
    wait_for(lambda: process.poll() is not None, 10.0, cluster.describe)
    assert process.returncode == EXIT_DATA_DIR_LOST
    assert f"data dir {victim.data_dir} lost: " in victim.log()
    assert "was deleted" in victim.log()
    assert "Traceback" not in victim.log()

    acknowledged = set(before + after)
    for node in others:  # with the victim down: the acknowledged copies are theirs
        wait_for(partial(holds_all, node, acknowledged), 30.0, cluster.describe)
    victim.start()  # on an empty dir, refilled by anti-entropy
    wait_for(partial(holds_all, victim, acknowledged), 60.0, cluster.describe)


def holds_all(node: NodeProcess, acknowledged: set[str]) -> bool:
    return acknowledged <= read_all(node)


def read_all(node: NodeProcess) -> set[str]:
    async def scenario() -> set[str]:
        async with client_for(node, user="reader") as reader:
            held: set[str] = set()
            for room in ROOMS:
                held |= {message.id for message in await whole_history(reader, room)}
            return held

    try:
        return run_async(scenario(), timeout_s=20.0)
    except (ConnectionError, TimeoutError, NodeError):
        return set()


def filled_database(data_dir: Path, messages: int) -> Path:
    """A meshchat database holding `messages` messages, written by the real storage."""

    async def fill() -> None:
        storage = Storage(data_dir)
        await storage.open()
        clock = HybridClock("n1")
        try:
            for n in range(messages):
                message_id = clock.next_id(1_000_000 + n)
                await storage.append(
                    StoredMessage(str(message_id), "lobby", "ann", f"c{n}", n, "x" * 400)
                )
        finally:
            await storage.close()

    asyncio.run(fill())
    return data_dir / DATABASE_FILE


def truncated(path: Path) -> None:
    size = path.stat().st_size
    os.truncate(path, size // 2)


def garbage(path: Path) -> None:
    path.write_bytes(os.urandom(path.stat().st_size))


def foreign_program(path: Path) -> None:
    path.unlink()
    with sqlite3.connect(path) as connection:
        connection.execute("CREATE TABLE bookmarks (url TEXT PRIMARY KEY, title TEXT)")
        connection.execute("INSERT INTO bookmarks VALUES ('https://example.org', 'x')")
    connection.close()


def foreign_schema(path: Path) -> None:
    path.unlink()
    with sqlite3.connect(path) as connection:
        connection.execute("CREATE TABLE messages (x)")
        connection.execute("PRAGMA user_version = 2")
    connection.close()


def other_application(path: Path) -> None:
    with sqlite3.connect(path) as connection:
        connection.execute("PRAGMA application_id = 1234")
    connection.close()


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (truncated, "truncated"),
        (garbage, "file is not a database"),
        (foreign_program, "not a meshchat database: it has tables (bookmarks)"),
        (foreign_schema, "not a meshchat database: schema version 2 without tables"),
        (other_application, "not a meshchat database (application id 0x4d2)"),
    ],
)
def test_a_damaged_or_foreign_database_is_one_line_and_exit_2(
    tmp_path: Path, damage: Callable[[Path], None], reason: str
) -> None:
    data_dir = tmp_path / "n1"
    path = filled_database(data_dir, messages=300)
    damage(path)

    result, _ = run_meshchat(node_arguments("n1", data_dir))

    assert result.returncode == EXIT_USAGE, result
    assert "Traceback" not in result.stdout + result.stderr
    # Log lines of the start may come first; the error is the one line after them.
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("meshchat ")]
    assert result.stderr.splitlines()[-1] == line
    assert line.startswith(f"meshchat node: {path}: {reason}"), line


def test_a_commit_into_a_deleted_or_replaced_file_is_refused_and_so_is_every_later_write(
    tmp_path: Path,
) -> None:
    async def scenario(replace: bool) -> None:
        data_dir = tmp_path / ("replaced" if replace else "deleted")
        storage = Storage(data_dir)
        await storage.open()
        clock = HybridClock("n1")

        def write(n: int) -> "asyncio.Future[SendResult]":
            message_id = clock.next_id(1_000_000 + n)
            return storage.append(StoredMessage(str(message_id), "lobby", "ann", f"c{n}", n, "x"))

        try:
            await write(0)
            assert storage.check_files() is None
            if replace:
                other = data_dir / "other"
                shutil.copy(storage.path, other)
                os.replace(other, storage.path)
            else:
                storage.path.unlink()
            with pytest.raises(StorageLostError, match="replaced" if replace else "deleted"):
                await write(1)
            assert storage.lost is not None
            assert await asyncio.wait_for(storage.wait_lost(), 1.0) == storage.lost
            with pytest.raises(StorageLostError):
                write(2)  # refused at once: nothing is queued
        finally:
            await storage.close()

    asyncio.run(scenario(replace=False))
    asyncio.run(scenario(replace=True))
