"""Reads of a node's SQLite room logs, on a reader thread of their own.

Storage (mesh/node/storage.py) writes; these read with their own connection, which WAL
lets run beside the writer's transactions: history pages within a byte budget, late
arrivals, what anti-entropy compares, read models and memberships.
"""

import asyncio
import concurrent.futures
import sqlite3
import threading
from pathlib import Path
from typing import Any, Final

import msgspec

from mesh.node import late_rows, view_rows
from mesh.node.event_columns import (
    EVENT_COLUMNS,
    EVENT_FIELDS,
    STATE_KINDS_SQL,
    event_columns_of,
)
from router.digest import BUCKET_DIGITS, Digest
from router.event_rules import MessageState, Relations, relations_of
from router.page_bytes import (
    LATE_PAGE_BYTES_MAX,
    READ_PAGE_BYTES_MAX,
    message_bytes,
    relations_bytes,
)
from router.records import MembershipChange, ReadMarker, RoomMessage

# Every replica stores the message exactly as the coordinator made it.
StoredMessage = RoomMessage
# How long a statement waits for a lock another connection holds.
BUSY_TIMEOUT_MS: Final = 5000
# Ids looked up in one query (SQLite allows 999 parameters by default).
IDS_PER_QUERY: Final = 500


class StorageError(Exception):
    """The disk or database failed; the write was not stored."""


class StoredPage(msgspec.Struct, frozen=True):
    messages: list[RoomMessage]  # oldest first
    more: bool  # more lie beyond, in the paging direction
    relations: list[Relations]  # what relations made of the page's messages, those touched


_EVENT_WIDTH: Final = len(EVENT_FIELDS)
# A page's rows: each event, then its read-model state when relations touched it.
_PAGE_COLUMNS: Final = f"{event_columns_of('m')}, v.state"
_PAGE_FROM: Final = (
    "FROM messages m LEFT JOIN message_views v ON v.room = m.room AND v.id = m.id WHERE m.room = ?"
)


def connect(path: Path) -> sqlite3.Connection:
    connection = sqlite3.connect(path, isolation_level=None, check_same_thread=True)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=FULL")
    connection.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    # What a delete erases is overwritten with zeros, not left in free space.
    connection.execute("PRAGMA secure_delete=ON")
    return connection


class StorageReads:
    """The read half of Storage, which sets these up."""

    path: Path
    _reader: concurrent.futures.ThreadPoolExecutor
    _reader_local: threading.local
    _room_names: set[str]

    async def history(
        self,
        room: str,
        *,
        before: str | None = None,
        after: str | None = None,
        limit: int = 50,
        bytes_max: int = READ_PAGE_BYTES_MAX,
    ) -> tuple[list[StoredMessage], bool]:
        """A page of the log oldest first, and whether more lie beyond it (see `page`)."""
        page = await self.page(room, before=before, after=after, limit=limit, bytes_max=bytes_max)
        return page.messages, page.more

    async def page(
        self,
        room: str,
        *,
        before: str | None = None,
        after: str | None = None,
        limit: int = 50,
        bytes_max: int = READ_PAGE_BYTES_MAX,
        messages_only: bool = False,
        state_only: bool = False,
    ) -> StoredPage:
        """A page oldest first, with what relations made of its messages.

        With `after` (and optionally `before` as an upper bound) the page runs forward from
        `after`; with `before` alone it ends just before `before`; with neither it is the
        newest page. At most `limit` events (messages alone with `messages_only`) whose
        router/page_bytes.py message_bytes and relations_bytes sum to at most
        `bytes_max`, and always one when there is one.
        """
        if state_only:
            return await self._state_page(room, after, limit, bytes_max)
        kinds = " AND m.kind = 'message'" if messages_only else ""
        select = f"SELECT {_PAGE_COLUMNS} {_PAGE_FROM}{kinds}"
        if after is not None:
            upper = "" if before is None else " AND m.id < ?"
            sql = f"{select} AND m.id > ?{upper} ORDER BY m.id LIMIT ?"
            bounds = (after,) if before is None else (after, before)
            return await self._stored_page(sql, (room, *bounds, limit + 1), limit, bytes_max)
        if before is not None:
            sql = f"{select} AND m.id < ? ORDER BY m.id DESC LIMIT ?"
            parameters: tuple[Any, ...] = (room, before, limit + 1)
        else:
            sql = f"{select} ORDER BY m.id DESC LIMIT ?"
            parameters = (room, limit + 1)
        newest_first = await self._stored_page(sql, parameters, limit, bytes_max)
        return StoredPage(
            newest_first.messages[::-1], newest_first.more, newest_first.relations[::-1]
        )

    async def _state_page(
        self, room: str, after: str | None, limit: int, bytes_max: int
    ) -> StoredPage:
        """The room's state events after `after`, oldest first (router/room_state.py)."""
        sql = (
            f"SELECT {EVENT_COLUMNS} FROM messages WHERE room = ? AND {STATE_KINDS_SQL} "
            "AND id > ? ORDER BY id LIMIT ?"
        )
        return await self._stored_page(sql, (room, after or "", limit + 1), limit, bytes_max)

    async def late_arrivals(
        self,
        room: str,
        *,
        since_ms: int,
        up_to: str,
        limit: int,
        bytes_max: int = LATE_PAGE_BYTES_MAX,
    ) -> list[StoredMessage]:
        """Messages recorded as late arrivals since `since_ms` with ids up to `up_to`: the
        most recent arrivals, at most `limit` and within `bytes_max` (as `history`), oldest
        id first."""
        parameters = (room, since_ms, up_to, limit)
        latest = await self._stored_page(late_rows.SELECT, parameters, limit, bytes_max)
        return sorted(latest.messages, key=lambda message: message.id)

    # ---- anti-entropy reads ----

    async def room_names(self) -> list[str]:
        return sorted(self._room_names.copy())

    async def digest(self, room: str) -> Digest:
        rows = await self._read(
            f"SELECT substr(id, 1, {BUCKET_DIGITS}), count(*), sum(id_hash) FROM messages "
            "WHERE room = ? GROUP BY 1",
            (room,),
        )
        return {bucket: (count, total) for bucket, count, total in rows}

    async def ids_between(
        self, room: str, after: str, before: str, limit: int
    ) -> tuple[list[str], bool]:
        rows = await self._read(
            "SELECT id FROM messages WHERE room = ? AND id > ? AND id < ? ORDER BY id LIMIT ?",
            (room, after, before, limit + 1),
        )
        return [row[0] for row in rows[:limit]], len(rows) > limit

    async def messages(self, room: str, ids: list[str]) -> list[StoredMessage]:
        found: list[StoredMessage] = []
        for start in range(0, len(ids), IDS_PER_QUERY):
            chunk = ids[start : start + IDS_PER_QUERY]
            marks = ", ".join("?" * len(chunk))
            rows = await self._read(
                f"SELECT {EVENT_COLUMNS} FROM messages "
                f"WHERE room = ? AND id IN ({marks}) ORDER BY id",
                (room, *chunk),
            )
            found += [StoredMessage(*row) for row in rows]
        return found

    async def views(self, room: str, ids: list[str]) -> dict[str, MessageState]:
        """The read-model state of each of `ids` that relations touched; the others are
        their own view."""
        found: dict[str, MessageState] = {}
        for start in range(0, len(ids), IDS_PER_QUERY):
            chunk = ids[start : start + IDS_PER_QUERY]
            marks = ", ".join("?" * len(chunk))
            rows = await self._read(
                f"SELECT id, state FROM message_views WHERE room = ? AND id IN ({marks})",
                (room, *chunk),
            )
            found.update((message_id, view_rows.decode(state)) for message_id, state in rows)
        return found

    async def rooms_of(self, user: str) -> list[str]:
        rows = await self._read(
            "SELECT room FROM room_members WHERE user = ? AND joined ORDER BY room", (user,)
        )
        return [row[0] for row in rows]

    async def memberships_of(self, user: str) -> list[MembershipChange]:
        """The latest change of each room the user joined or left through this node or
        one that spread it here, leaves included."""
        rows = await self._read(
            "SELECT user, room, joined, changed_at_ms FROM room_members WHERE user = ? "
            "ORDER BY room",
            (user,),
        )
        return [MembershipChange(user, room, bool(joined), at) for user, room, joined, at in rows]

    async def read_markers_of(self, user: str) -> list[ReadMarker]:
        """The user's read marker of each room it was set in, here or spread here."""
        rows = await self._read(
            "SELECT user, room, up_to FROM read_markers WHERE user = ? ORDER BY room", (user,)
        )
        return [ReadMarker(*row) for row in rows]

    async def _read(self, sql: str, parameters: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._reader, self._read_in_thread, sql, parameters)
        except sqlite3.Error as error:
            raise StorageError(str(error)) from error

    def _read_in_thread(self, sql: str, parameters: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        return self._reader_connection().execute(sql, parameters).fetchall()

    async def _stored_page(
        self, sql: str, parameters: tuple[Any, ...], limit: int, bytes_max: int
    ) -> StoredPage:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(
                self._reader, self._stored_page_in_thread, sql, parameters, limit, bytes_max
            )
        except sqlite3.Error as error:
            raise StorageError(str(error)) from error

    def _stored_page_in_thread(
        self, sql: str, parameters: tuple[Any, ...], limit: int, bytes_max: int
    ) -> StoredPage:
        """The rows of a query (each a message's columns, then its read-model state in a
        query of _PAGE_COLUMNS) in its order: at most `limit` messages within
        `bytes_max` (at least one), and whether rows were left over."""
        # Rows are stepped one at a time, so a page of large bodies reads no further
        # than the row that does not fit.
        cursor = self._reader_connection().execute(sql, parameters)
        try:
            page: list[StoredMessage] = []
            relations: list[Relations] = []
            total_bytes = 0
            for row in cursor:
                message = StoredMessage(*row[:_EVENT_WIDTH])
                state = row[_EVENT_WIDTH] if len(row) > _EVENT_WIDTH else None
                made = None if state is None else relations_of(message.id, view_rows.decode(state))
                total_bytes += message_bytes(message)
                if made is not None:
                    total_bytes += relations_bytes(made)
                if len(page) == limit or (total_bytes > bytes_max and page):
                    return StoredPage(page, True, relations)
                page.append(message)
                if made is not None:
                    relations.append(made)
            return StoredPage(page, False, relations)
        finally:
            cursor.close()

    def _reader_connection(self) -> sqlite3.Connection:
        connection: sqlite3.Connection | None = getattr(self._reader_local, "connection", None)
        if connection is None:
            connection = connect(self.path)
            self._reader_local.connection = connection
        return connection
