"""Hints in SQLite: copies this node holds for a replica that was down, until handed over.

They live in their own table, apart from the rooms this node replicates, and are written
in the same batched transactions as messages (mesh/node/storage.py), so a stand-in that
acknowledged a hint has it on disk and still holds it after a restart.
"""

import sqlite3

from mesh.node.event_columns import EVENT_COLUMNS
from router.records import RoomMessage

SCHEMA = """
CREATE TABLE hints (
    owner TEXT NOT NULL,
    id TEXT NOT NULL,
    room TEXT NOT NULL,
    sender TEXT NOT NULL,
    client_msg_id TEXT NOT NULL,
    time_ms INTEGER NOT NULL,
    body TEXT NOT NULL,
    stored_at_ms INTEGER NOT NULL,
    size INTEGER NOT NULL,
    PRIMARY KEY (owner, id)
) WITHOUT ROWID;
CREATE INDEX hints_by_age ON hints (owner, stored_at_ms);
"""

COLUMNS = EVENT_COLUMNS


def add(connection: sqlite3.Connection, owner: str, message: RoomMessage, now_ms: int) -> bool:
    """Keep a hint; False when it was held already (a retried replication)."""
    size = len(message.body.encode()) + len(message.id) + len(message.room)
    cursor = connection.execute(
        "INSERT OR IGNORE INTO hints (owner, id, room, sender, client_msg_id, time_ms, body, "
        "stored_at_ms, size, kind, target, reaction_key, reply_to, subject) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            owner,
            message.id,
            message.room,
            message.sender,
            message.client_msg_id,
            message.time_ms,
            message.body,
            now_ms,
            size,
            message.kind,
            message.target,
            message.reaction_key,
            message.reply_to,
            message.subject,
        ),
    )
    return cursor.rowcount == 1


def delete(connection: sqlite3.Connection, owner: str, message_id: str) -> None:
    connection.execute("DELETE FROM hints WHERE owner = ? AND id = ?", (owner, message_id))


def expire(
    connection: sqlite3.Connection, older_than_ms: int, count_max: int, bytes_max: int
) -> dict[str, int]:
    """Drop hints past the window, then the oldest beyond the count and byte bounds of
    each owner; returns how many were dropped per owner."""
    dropped: dict[str, int] = {}
    for (owner,) in connection.execute("SELECT DISTINCT owner FROM hints").fetchall():
        gone = connection.execute(
            "DELETE FROM hints WHERE owner = ? AND stored_at_ms < ?", (owner, older_than_ms)
        ).rowcount
        rows = connection.execute(
            "SELECT id, size FROM hints WHERE owner = ? ORDER BY stored_at_ms DESC, id DESC",
            (owner,),
        ).fetchall()
        kept_bytes = 0
        doomed = []
        for index, (message_id, size) in enumerate(rows):
            kept_bytes += size
            if index >= count_max or kept_bytes > bytes_max:
                doomed.append((owner, message_id))
        connection.executemany("DELETE FROM hints WHERE owner = ? AND id = ?", doomed)
        dropped[owner] = gone + len(doomed)
    return dropped
