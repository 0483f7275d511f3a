"""Read models in SQLite: each target's state (router/event_rules.py) beside its events.

Kept in the transaction that stores the event, so a committed event's effect on the view
is on disk with it. Only targets that relations touched have a row: a message nobody
edited, deleted or reacted to is its own view. A delete erases content here and now: the
target's body and every relation's body (in messages and in hints) are emptied, and no
state keeps a body that a delete took or that no view shows (a relation's own).
"""

import sqlite3
from typing import Final

import msgspec

from mesh.node.event_columns import EVENT_COLUMNS
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
# by the plain fast path, so that its waiting relations are folded in. None: not known
# (reading it failed), so every message is looked up.
Awaited = set[tuple[str, str]]

_ENCODER: Final = msgspec.msgpack.Encoder()
_DECODER: Final = msgspec.msgpack.Decoder(MessageState)


def awaited(connection: sqlite3.Connection) -> Awaited:
    rows = connection.execute("SELECT room, id FROM message_views WHERE waiting").fetchall()
    return {(room, message_id) for room, message_id in rows}


def apply(
    connection: sqlite3.Connection,
    event: RoomMessage,
    waiting: Awaited | None,
    replaced: str | None = None,
) -> bool:
    """Fold a newly stored event into the views it touches: its own id's, if relations
    waited for it, and its target's. A relation that replaced its twin (a retry stored
    under another id) refolds its target from what is stored, so the twin's mark goes
    too. True when content was erased."""
    own = (event.room, event.id)
    erased = False
    relations_wait = _waits(connection, *own) if waiting is None else own in waiting
    if relations_wait:
        erased = _keep(connection, event.room, event.id, arrive(load(connection, *own), event))
        if waiting is not None:
            waiting.discard(own)
    if event.kind in RELATION_KINDS and event.target is not None:
        if replaced is not None:
            folded = _refold(connection, event.room, event.target)
        else:
            folded = relate(load(connection, event.room, event.target), event)
        erased = _keep(connection, event.room, event.target, folded) or erased
        if folded.state.event is None and waiting is not None:
            waiting.add((event.room, event.target))
    return erased


def load(connection: sqlite3.Connection, room: str, message_id: str) -> MessageState:
    row = connection.execute(
        "SELECT state FROM message_views WHERE room = ? AND id = ?", (room, message_id)
    ).fetchone()
    if row is not None:
        return _DECODER.decode(row[0])
    stored = connection.execute(
        f"SELECT {EVENT_COLUMNS} FROM messages WHERE room = ? AND id = ?", (room, message_id)
    ).fetchone()
    return MessageState() if stored is None else MessageState(event=RoomMessage(*stored))


def decode(state: bytes) -> MessageState:
    return _DECODER.decode(state)


def _waits(connection: sqlite3.Connection, room: str, message_id: str) -> bool:
    row = connection.execute(
        "SELECT waiting FROM message_views WHERE room = ? AND id = ?", (room, message_id)
    ).fetchone()
    return bool(row and row[0])


def _refold(connection: sqlite3.Connection, room: str, target: str) -> Folded:
    """The target's state from its stored event and every stored relation naming it."""
    stored = connection.execute(
        f"SELECT {EVENT_COLUMNS} FROM messages WHERE room = ? AND id = ?", (room, target)
    ).fetchone()
    state = MessageState()
    if stored is not None:
        state = arrive(state, RoomMessage(*stored)).state
    relations = connection.execute(
        f"SELECT {EVENT_COLUMNS} FROM messages WHERE room = ? AND target = ? ORDER BY id",
        (room, target),
    ).fetchall()
    erase = False
    for row in relations:
        folded = relate(state, RoomMessage(*row))
        state, erase = folded.state, erase or folded.erase
    return Folded(state, changed=True, erase=erase)


def _keep(connection: sqlite3.Connection, room: str, message_id: str, folded: Folded) -> bool:
    state = folded.state
    if state.event is not None and state.event.kind != "message":
        # A relation's own row only says that relations naming it are void.
        state = MessageState(event=msgspec.structs.replace(state.event, body=""))
    connection.execute(
        "INSERT OR REPLACE INTO message_views VALUES (?, ?, ?, ?)",
        (room, message_id, state.event is None, _ENCODER.encode(state)),
    )
    if not folded.erase:
        return False
    for table in ("messages", "hints"):
        connection.execute(
            f"UPDATE {table} SET body = '' WHERE room = ? AND (id = ? OR target = ?)",
            (room, message_id, message_id),
        )
    return True
