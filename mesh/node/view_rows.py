"""Read models in SQLite: each target's state (router/event_rules.py) beside its events.

Kept in the transaction that stores the event, so a committed event's effect on the view
is on disk with it. Only targets that relations touched have a row: a message nobody
edited, deleted or reacted to is its own view. A delete erases content here and now: the
target's body and every relation's body (in messages and in hints) are emptied, and the
state keeps no body either.
"""

import sqlite3
from typing import Final

import msgspec

from router.event_rules import RELATION_KINDS, Folded, MessageState, arrive, relate
from router.records import RoomMessage

SCHEMA: Final = """
CREATE TABLE message_views (
    room TEXT NOT NULL,
    id TEXT NOT NULL,
    waiting INTEGER NOT NULL,
    state BLOB NOT NULL,
    PRIMARY KEY (room, id)
) WITHOUT ROWID;
CREATE INDEX message_views_waiting ON message_views (room, id) WHERE waiting;
"""
# Targets relations have named that have not arrived: a message among them is not stored
# by the plain fast path, so that its waiting relations are folded in.
Awaited = set[tuple[str, str]]

_ENCODER: Final = msgspec.msgpack.Encoder()
_DECODER: Final = msgspec.msgpack.Decoder(MessageState)
_EVENT_COLUMNS: Final = (
    "id, room, sender, client_msg_id, time_ms, body, kind, target, reaction_key, reply_to"
)


def awaited(connection: sqlite3.Connection) -> Awaited:
    rows = connection.execute("SELECT room, id FROM message_views WHERE waiting").fetchall()
    return {(room, message_id) for room, message_id in rows}


def apply(connection: sqlite3.Connection, event: RoomMessage, waiting: Awaited) -> None:
    """Fold a newly stored event into the views it touches: its own id's, if relations
    waited for it, and its target's."""
    own = (event.room, event.id)
    if own in waiting:
        _keep(connection, event.room, event.id, arrive(load(connection, *own), event))
        waiting.discard(own)
    if event.kind in RELATION_KINDS and event.target is not None:
        folded = relate(load(connection, event.room, event.target), event)
        _keep(connection, event.room, event.target, folded)
        if folded.state.event is None:
            waiting.add((event.room, event.target))


def load(connection: sqlite3.Connection, room: str, message_id: str) -> MessageState:
    row = connection.execute(
        "SELECT state FROM message_views WHERE room = ? AND id = ?", (room, message_id)
    ).fetchone()
    if row is not None:
        return _DECODER.decode(row[0])
    stored = connection.execute(
        f"SELECT {_EVENT_COLUMNS} FROM messages WHERE room = ? AND id = ?", (room, message_id)
    ).fetchone()
    return MessageState() if stored is None else MessageState(event=RoomMessage(*stored))


def decode(state: bytes) -> MessageState:
    return _DECODER.decode(state)


def _keep(connection: sqlite3.Connection, room: str, message_id: str, folded: Folded) -> None:
    state = folded.state
    connection.execute(
        "INSERT OR REPLACE INTO message_views VALUES (?, ?, ?, ?)",
        (room, message_id, state.event is None, _ENCODER.encode(state)),
    )
    if folded.erase:
        for table in ("messages", "hints"):
            connection.execute(
                f"UPDATE {table} SET body = '' WHERE room = ? AND (id = ? OR target = ?)",
                (room, message_id, message_id),
            )
