"""Late arrivals in SQLite: copies that reached this replica long after their id's time.

A message written where this node could not hear (across a partition, or while it was
down) arrives later by handoff, repair or anti-entropy, with an id older than messages
clients have already seen; a client resuming from its last id would never ask for it.
Replicas note such arrivals here, and a resume's first page asks for those since a
little before its resume point (router/engine.py `resume`). Rows are few (only late
copies, a copy that replaced its twin included) and go once older than the late
window.
"""

import sqlite3

from mesh.node.event_columns import event_columns_of

SCHEMA = """
CREATE TABLE late_arrivals (
    room TEXT NOT NULL,
    id TEXT NOT NULL,
    arrived_ms INTEGER NOT NULL,
    PRIMARY KEY (room, id)
) WITHOUT ROWID;
CREATE INDEX late_arrivals_by_time ON late_arrivals (arrived_ms);
"""

# How long a late arrival is kept (as the router's late_post_window_ms).
WINDOW_MS = 10 * 60 * 1000


def record(connection: sqlite3.Connection, room: str, message_id: str, arrived_ms: int) -> None:
    connection.execute(
        "INSERT OR IGNORE INTO late_arrivals VALUES (?, ?, ?)", (room, message_id, arrived_ms)
    )
    # Every room's expired records go with any new one (the index finds just those).
    connection.execute("DELETE FROM late_arrivals WHERE arrived_ms < ?", (arrived_ms - WINDOW_MS,))


# The messages recorded late since `since_ms` with ids up to `up_to`, the most recent
# arrivals first (the caller keeps a bounded number), as rows of messages' columns.
SELECT = f"""
SELECT {event_columns_of("m")}
FROM late_arrivals AS l JOIN messages AS m ON m.room = l.room AND m.id = l.id
WHERE l.room = ? AND l.arrived_ms >= ? AND l.id <= ?
ORDER BY l.arrived_ms DESC LIMIT ?
"""
