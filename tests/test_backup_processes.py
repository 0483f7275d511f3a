"""`meshchat backup` of a node while it takes writes, and `meshchat restore` of that copy
into an emptied data dir: a node started on it serves the copy's history, rejoins, and
its peers bring it what was written after the copy. Only an operator's token may take a
copy, or drain the node."""

import sqlite3
import time
from pathlib import Path

import pytest

from mesh.cli.exit_codes import EXIT_UNAUTHORIZED
from mesh.node.doors.auth import issue_token
from mesh.node.doors.token_scope import TokenScope
from mesh.node.storage import DATABASE_FILE
from tests.chat_helpers import client_for, wait_serving
from tests.processes import Cluster, NodeProcess, run_async, run_cli, wait_for

pytestmark = pytest.mark.processes

ROOM = "backed-up"
SECRET = b"backup-secret-" + b"s" * 32


async def _send(node: NodeProcess, first: int, count: int, token: str = "ann") -> None:
    async with client_for(node, user="ann", token=token) as ann:
        for i in range(first, first + count):
            await ann.send(ROOM, f"message {i}", f"m{i}")


async def _bodies(node: NodeProcess, token: str = "ann") -> list[str]:
    async with client_for(node, user="ann", token=token) as reader:
        page = await reader.history(ROOM, limit=200)
    return [message.body for message in page.messages]


def _bodies_in_file(path: Path) -> list[str]:
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as database:
        rows = database.execute("SELECT body FROM messages WHERE room = ? ORDER BY id", (ROOM,))
        return [body for (body,) in rows]


def _lose_database(node: NodeProcess) -> None:
    """The disk with the database is lost; the node's identity file and keys are not."""
    for path in node.data_dir.glob(DATABASE_FILE + "*"):
        path.unlink()


def test_a_backup_restored_into_an_empty_dir_serves_and_catches_up(
    cluster: Cluster, tmp_path: Path
) -> None:
    n1 = cluster.add("n1", http=True).start()
    n2 = cluster.add("n2", seeds=[n1.peer_address]).start()
    n3 = cluster.add("n3", seeds=[n1.peer_address]).start()
    run_async(wait_serving(n1, n2, n3))
    run_async(_send(n1, 0, 30))
    copy = tmp_path / "n1.sqlite3"

    backed_up = run_cli("backup", "--server", f"127.0.0.1:{n1.http_port}", "--out", str(copy))
    assert backed_up.returncode == 0, backed_up.stderr
    assert "30 messages in 1 rooms" in backed_up.stdout, backed_up.stdout
    assert _bodies_in_file(copy) == [f"message {i}" for i in range(30)]
    assert not list((n1.data_dir / "backups").glob("*.sqlite3")), "the node's copy was kept"

    run_async(_send(n2, 30, 20))  # after the copy: only anti-entropy can bring these to n1
    n1.stop()
    _lose_database(n1)
    restored = run_cli("restore", str(copy), "--data", str(n1.data_dir))
    assert restored.returncode == 0, restored.stderr
    again = run_cli("restore", str(copy), "--data", str(n1.data_dir))
    assert again.returncode == 2 and "already holds a database" in again.stderr

    n1.start()
    everything = [f"message {i}" for i in range(50)]
    wait_for(
        lambda: run_async(_bodies(n1)) == everything,
        60.0,
        lambda: f"n1 serves {run_async(_bodies(n1))}",
        interval_s=0.5,
    )


def test_only_a_token_that_names_operate_takes_a_copy(cluster: Cluster, tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_bytes(SECRET)
    options = ["--secret-file", str(secret), "--replicas", "1", "--write-quorum", "1"]
    node = cluster.add("n1", options=options, http=True).start()
    node.status_token = issue_token(SECRET, "tester", 600, time.time())
    user = issue_token(SECRET, "ann", 600, time.time())
    operator = issue_token(
        SECRET, "ops", 600, time.time(), scope=TokenScope(ops=frozenset({"operate"}))
    )
    wait_for(node.status, 20.0, node.log)
    run_async(_send(node, 0, 3, token=user))
    server = f"127.0.0.1:{node.http_port}"
    copy = tmp_path / "copy.sqlite3"

    refused = run_cli("backup", "--server", server, "--token", user, "--out", str(copy))
    assert refused.returncode == 1 and "forbidden" in refused.stderr, refused.stderr
    assert not copy.exists()
    nobody = run_cli("backup", "--server", server, "--token", "ann", "--out", str(copy))
    assert nobody.returncode == EXIT_UNAUTHORIZED and "unauthorized" in nobody.stderr, nobody.stderr

    not_drained = run_cli("drain", "--server", server, "--token", user, "--over", "0")
    assert not_drained.returncode == 1 and "forbidden" in not_drained.stderr, not_drained.stderr

    taken = run_cli("backup", "--server", server, "--token", operator, "--out", str(copy))
    assert taken.returncode == 0, taken.stderr
    assert _bodies_in_file(copy) == [f"message {i}" for i in range(3)]

    # A node of its own (N=1): nothing but the copy can give it its history back.
    run_async(_send(node, 3, 2, token=user))
    node.stop()
    _lose_database(node)
    assert run_cli("restore", str(copy), "--data", str(node.data_dir)).returncode == 0
    node.start()
    wait_for(node.status, 20.0, node.log)
    assert run_async(_bodies(node, token=user)) == [f"message {i}" for i in range(3)]
