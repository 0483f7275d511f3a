"""Room logs and room membership in SQLite, in the node's data dir.

Writes go through one writer thread that drains a bounded queue and commits whatever has
gathered in one transaction (WAL, synchronous=FULL): a commit is an fsync, and a batch of
sends shares it, so throughput is not one fsync per message while every acknowledged send
is on disk. Reads (mesh/node/storage_reads.py) use their own connection on their own
thread; WAL lets them run while the writer commits. The schema has a version (PRAGMA
user_version) and ordered migrations. A commit counts only if the database is still the
file at its path: one deleted or replaced under the node fails the batch and every later
write (mesh/node/database_file.py).
"""

import asyncio
import concurrent.futures
import contextlib
import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import msgspec

from mesh.node import database_file, hint_rows, late_rows, view_rows
from mesh.node.drain_rate import DrainRate
from mesh.node.event_columns import EVENT_COLUMNS, STATE_KINDS_SQL
from mesh.node.storage_reads import (
    BUSY_TIMEOUT_MS,
    IDS_PER_QUERY,
    StorageError,
    StorageReads,
    StoredMessage,
    connect,
)
from router.digest import id_hash

# The read half, and names every user of storage shares, live in storage_reads.
__all__ = ["IDS_PER_QUERY", "StorageError", "StoredMessage"]

log = logging.getLogger(__name__)

DATABASE_FILE: Final = "meshchat.sqlite3"

# Each entry moves the schema from version i to i+1; never edit one that has shipped.
MIGRATIONS: Final[tuple[str, ...]] = (
    """
    CREATE TABLE messages (
        room TEXT NOT NULL,
        id TEXT NOT NULL,
        sender TEXT NOT NULL,
        client_msg_id TEXT NOT NULL,
        time_ms INTEGER NOT NULL,
        body TEXT NOT NULL,
        PRIMARY KEY (room, id)
    ) WITHOUT ROWID;
    CREATE UNIQUE INDEX messages_by_client_msg_id ON messages (sender, client_msg_id);
    CREATE TABLE room_members (
        user TEXT NOT NULL,
        room TEXT NOT NULL,
        joined_at_ms INTEGER NOT NULL,
        PRIMARY KEY (user, room)
    ) WITHOUT ROWID;
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    """,
    # Anti-entropy digests sum a hash of each id per bucket (router/digest.py).
    """
    ALTER TABLE messages ADD COLUMN id_hash INTEGER NOT NULL DEFAULT 0;
    UPDATE messages SET id_hash = meshchat_id_hash(id);
    """,
    hint_rows.SCHEMA,
    late_rows.SCHEMA,
    # Room memberships keep leaves too, so that the latest change wins wherever it is
    # merged (router/user_rooms.py).
    """
    ALTER TABLE room_members RENAME COLUMN joined_at_ms TO changed_at_ms;
    ALTER TABLE room_members ADD COLUMN joined INTEGER NOT NULL DEFAULT 1;
    """,
    # Rooms are event logs: relations name a target, and targets keep their read model
    # (router/event_rules.py) beside them; hints carry every kind of event.
    """
    ALTER TABLE messages ADD COLUMN kind TEXT NOT NULL DEFAULT 'message';
    ALTER TABLE messages ADD COLUMN target TEXT;
    ALTER TABLE messages ADD COLUMN reaction_key TEXT;
    ALTER TABLE messages ADD COLUMN reply_to TEXT;
    CREATE INDEX messages_by_target ON messages (room, target) WHERE target IS NOT NULL;
    ALTER TABLE hints ADD COLUMN kind TEXT NOT NULL DEFAULT 'message';
    ALTER TABLE hints ADD COLUMN target TEXT;
    ALTER TABLE hints ADD COLUMN reaction_key TEXT;
    ALTER TABLE hints ADD COLUMN reply_to TEXT;
    """
    + view_rows.SCHEMA,
    # Each user's read marker of a room (router/user_rooms.py): the greatest one wins.
    """
    CREATE TABLE read_markers (
        user TEXT NOT NULL,
        room TEXT NOT NULL,
        up_to TEXT NOT NULL,
        PRIMARY KEY (user, room)
    ) WITHOUT ROWID;
    """,
    # Room state events (router/room_state.py) name the user they are about, and a
    # room's are read on their own, past all its messages.
    f"""
    ALTER TABLE messages ADD COLUMN subject TEXT;
    ALTER TABLE hints ADD COLUMN subject TEXT;
    CREATE INDEX messages_of_state ON messages (room, id) WHERE {STATE_KINDS_SQL};
    """,
)
SCHEMA_VERSION: Final = len(MIGRATIONS)

# The later change of a (user, room) wins; at the same millisecond a join does.
_KEEP_LATEST_MEMBERSHIP: Final = """
INSERT INTO room_members (user, room, changed_at_ms, joined) VALUES (?, ?, ?, ?)
ON CONFLICT (user, room) DO UPDATE SET changed_at_ms = excluded.changed_at_ms,
    joined = excluded.joined
WHERE (excluded.changed_at_ms, excluded.joined) > (changed_at_ms, joined)
"""

# A read marker only moves forward.
_KEEP_GREATEST_MARKER: Final = """
INSERT INTO read_markers (user, room, up_to) VALUES (?, ?, ?)
ON CONFLICT (user, room) DO UPDATE SET up_to = excluded.up_to WHERE excluded.up_to > up_to
"""

_INSERT_INTO: Final = (
    "INSERT INTO messages (room, id, sender, client_msg_id, time_ms, body, id_hash, "
    "kind, target, reaction_key, reply_to, subject)"
)
_ROW: Final = "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
_INSERT: Final = f"{_INSERT_INTO} VALUES {_ROW}"
# Stores a copy new by id and by (sender, client_msg_id); does nothing if either is held.
_INSERT_IF_NEW: Final = _INSERT + " ON CONFLICT DO NOTHING"
# Copies stored by one INSERT: a run is cut into these sizes, so that few statements
# are prepared; 64 rows of 12 stay under the 999 parameters of SQLite's oldest limit.
ROWS_PER_INSERT: Final = (64, 16, 4, 1)
_INSERT_ROWS_IF_NEW: Final = {
    rows: f"{_INSERT_INTO} VALUES {', '.join([_ROW] * rows)} ON CONFLICT DO NOTHING"
    for rows in ROWS_PER_INSERT
}


def _insert_all_if_new(connection: sqlite3.Connection, rows: list[tuple[Any, ...]]) -> int:
    """Stores the rows new on both keys in a few statements; returns how many it stored."""
    stored = 0
    start = 0
    for size in ROWS_PER_INSERT:
        while len(rows) - start >= size:
            chunk = rows[start : start + size]
            parameters = [value for row in chunk for value in row]
            stored += connection.execute(_INSERT_ROWS_IF_NEW[size], parameters).rowcount
            start += size
    return stored


def _message_row(message: "StoredMessage") -> tuple[Any, ...]:
    return (
        message.room,
        message.id,
        message.sender,
        message.client_msg_id,
        message.time_ms,
        message.body,
        id_hash(message.id),
        message.kind,
        message.target,
        message.reaction_key,
        message.reply_to,
        message.subject,
    )


def _checkpoint_now(connection: sqlite3.Connection) -> None:
    """Older copies of erased pages wait in the WAL until a checkpoint: empty it now if no
    reader holds it (never waiting for one; else the next erase or checkpoint does)."""
    connection.execute("PRAGMA busy_timeout=0")
    try:
        with contextlib.suppress(sqlite3.Error):
            connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        connection.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")


def _highest_stored(highest: str, writes: list["_Write"], results: list[Any]) -> str:
    for write, result in zip(writes, results, strict=True):
        if isinstance(write, _Append) and isinstance(result, SendResult):
            highest = max(highest, write.message.id)
    return highest


# Writes gathered into one commit at most; bounds a transaction's size and latency.
BATCH_WRITES_MAX: Final = 1024
# Writes waiting for the writer; past it, sends are refused as `unavailable`.
WRITE_QUEUE_MAX: Final = 20_000


class StorageOverloadedError(StorageError):
    """The write queue is full; nothing was queued."""

    def __init__(self, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s  # when the queue will have drained, if known


class StorageLostError(StorageOverloadedError):
    """The database file was deleted or replaced under the node: nothing is stored here any
    more. Answered like overload (`unavailable`), so clients retry through another node."""


class IdConflictError(StorageError):
    """A copy's id is held by another message: refused, and only this write fails."""


@dataclass(frozen=True, slots=True)
class SendResult:
    message: StoredMessage
    duplicate: bool  # the same sender and client_msg_id were stored before: this is that one
    replaced: str | None = None  # the id of a twin this copy replaced (it had a larger id)


@dataclass(frozen=True, slots=True)
class _Append:
    message: StoredMessage
    late_at_ms: int | None = None


@dataclass(frozen=True, slots=True)
class _Membership:
    user: str
    room: str
    joined: bool
    time_ms: int


@dataclass(frozen=True, slots=True)
class _ReadMarker:
    user: str
    room: str
    up_to: str


@dataclass(frozen=True, slots=True)
class _AddHint:
    owner: str
    message: StoredMessage
    now_ms: int


@dataclass(frozen=True, slots=True)
class _DeleteHint:
    owner: str
    message_id: str


@dataclass(frozen=True, slots=True)
class _ExpireHints:
    older_than_ms: int
    count_max: int
    bytes_max: int


_Write = _Append | _Membership | _ReadMarker | _AddHint | _DeleteHint | _ExpireHints


@dataclass(slots=True)
class StorageStatistics:
    commits: int = 0
    writes: int = 0
    duplicates: int = 0
    id_conflicts: int = 0
    failures: int = 0
    last_batch_size: int = 0
    commit_seconds_total: float = 0.0


def migrate(connection: sqlite3.Connection) -> int:
    """Bring the schema to SCHEMA_VERSION; returns the version found before. Another
    program's database is refused, never migrated."""
    connection.create_function("meshchat_id_hash", 1, id_hash, deterministic=True)
    (found,) = connection.execute("PRAGMA user_version").fetchone()
    if found > SCHEMA_VERSION:
        raise StorageError(
            f"database schema version {found} is newer than this meshchat ({SCHEMA_VERSION})"
        )
    if (foreign := database_file.foreign(connection, found)) is not None:
        raise StorageError(foreign)
    for version in range(found, SCHEMA_VERSION):
        # One script, one transaction: a migration and its version number land together.
        script = (
            f"BEGIN IMMEDIATE;{MIGRATIONS[version]};PRAGMA user_version = {version + 1};"
            f"PRAGMA application_id = {database_file.APPLICATION_ID};COMMIT;"
        )
        try:
            connection.executescript(script)
        except sqlite3.Error:
            if connection.in_transaction:
                connection.execute("ROLLBACK")
            raise
    return int(found)


CommitObserver = Callable[[float, int], None]  # (seconds, writes in the batch)


class Storage(StorageReads):
    def __init__(self, data_dir: Path, on_commit: CommitObserver | None = None) -> None:
        self.path = data_dir / DATABASE_FILE
        self.stats = StorageStatistics()
        # Called on the writer thread after each commit: keep it quick and thread-safe.
        self._on_commit = on_commit
        self._writes: queue.Queue[tuple[_Write, asyncio.Future[Any]] | None] = queue.Queue(
            WRITE_QUEUE_MAX
        )
        self._writer: threading.Thread | None = None
        self._reader = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="storage-reader"
        )
        self._reader_local = threading.local()
        self._loop: asyncio.AbstractEventLoop | None = None
        self.highest_id = ""
        # Rooms with messages, read once at open and kept up by the writer, so listing
        # them never scans the messages table.
        self._room_names: set[str] = set()
        # Why the database is no longer the file this node writes (deleted or replaced),
        # once it is not: from then on no write is stored or acknowledged.
        self.lost: str | None = None
        self._lost_lock = threading.Lock()
        self._lost_event: asyncio.Event | None = None
        self._files: dict[Path, database_file.FileIdentity] = {}  # what the writer writes
        self._awaited: view_rows.Awaited | None = set()  # the writer's own
        self._erased = False  # a delete in this batch erased content
        # Writes committed per second, for the wait told to a send the full queue refuses;
        # the writer thread adds to it and the loop reads it.
        self._committed = DrainRate()
        self._committed_lock = threading.Lock()

    async def open(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._lost_event = asyncio.Event()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if (truncated := database_file.truncation(self.path)) is not None:
            raise StorageError(f"{self.path}: {truncated}")
        connection: sqlite3.Connection | None = None
        try:
            connection = connect(self.path)
            migrate(connection)
            row = connection.execute("SELECT value FROM meta WHERE key = 'highest_id'").fetchone()
            self.highest_id = row[0] if row else ""
            rooms = connection.execute("SELECT DISTINCT room FROM messages").fetchall()
            self._room_names = {room for (room,) in rooms}
        except (sqlite3.Error, StorageError) as error:
            raise StorageError(f"{self.path}: {error}") from error
        finally:
            if connection is not None:
                connection.close()
        ready: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._writer = threading.Thread(
            target=self._write_loop, args=(ready,), name="storage-writer", daemon=True
        )
        self._writer.start()
        try:
            await asyncio.wrap_future(ready)
        except sqlite3.Error as error:
            self._writer = None  # it has ended
            raise StorageError(f"{self.path}: {error}") from error

    def check_files(self) -> str | None:
        """Why the database is no longer the file this node writes, else None; the first
        such answer stops every later write. Cheap (a few stat calls), from any thread."""
        with self._lost_lock:
            if self.lost is not None or (change := database_file.change(self._files)) is None:
                return self.lost
            self.lost = change
        log.error("storage: %s; no write is acknowledged from now on", change)
        assert self._loop is not None and self._lost_event is not None
        self._loop.call_soon_threadsafe(self._lost_event.set)
        return change

    async def wait_lost(self) -> str:
        """Wait until a write finds the database gone; returns why."""
        assert self._lost_event is not None, "storage is not open"
        await self._lost_event.wait()
        assert self.lost is not None
        return self.lost

    async def close(self) -> None:
        if self._writer is not None:
            self._writes.put(None)
            await asyncio.to_thread(self._writer.join)
            self._writer = None
        await asyncio.get_running_loop().run_in_executor(self._reader, self._close_reader)
        self._reader.shutdown(wait=True)

    def _close_reader(self) -> None:
        connection = getattr(self._reader_local, "connection", None)
        if connection is not None:
            connection.close()

    # ---- writes ----

    def append(
        self, message: StoredMessage, late_at_ms: int | None = None
    ) -> "asyncio.Future[SendResult]":
        """Queue a message; the future resolves once it is committed (or was already).
        With `late_at_ms` a copy new here is also recorded as a late arrival."""
        return self._submit(_Append(message, late_at_ms))

    def add_hint(
        self, owner: str, message: StoredMessage, now_ms: int
    ) -> "asyncio.Future[SendResult]":
        """Keep a copy for a replica that is down; resolves once it is on disk."""
        return self._submit(_AddHint(owner, message, now_ms))

    def delete_hint(self, owner: str, message_id: str) -> "asyncio.Future[None]":
        return self._submit(_DeleteHint(owner, message_id))

    def expire_hints(
        self, older_than_ms: int, count_max: int, bytes_max: int
    ) -> "asyncio.Future[dict[str, int]]":
        return self._submit(_ExpireHints(older_than_ms, count_max, bytes_max))

    async def hints_for(self, owner: str, limit: int, after: str = "") -> list[StoredMessage]:
        """Hints for `owner` with ids after `after`, in id order."""
        rows = await self._read(
            f"SELECT {hint_rows.COLUMNS} FROM hints WHERE owner = ? AND id > ? ORDER BY id LIMIT ?",
            (owner, after, limit),
        )
        return [StoredMessage(*row) for row in rows]

    async def hint_summary(self) -> dict[str, tuple[int, int]]:
        """owner -> (hints held, when the oldest was stored, wall-clock ms)."""
        rows = await self._read(
            "SELECT owner, count(*), min(stored_at_ms) FROM hints GROUP BY owner", ()
        )
        return {owner: (count, oldest) for owner, count, oldest in rows}

    def set_membership(
        self, user: str, room: str, *, joined: bool, time_ms: int
    ) -> "asyncio.Future[None]":
        return self._submit(_Membership(user, room, joined, time_ms))

    def set_read_marker(self, user: str, room: str, up_to: str) -> "asyncio.Future[None]":
        return self._submit(_ReadMarker(user, room, up_to))

    def _submit(self, write: _Write) -> "asyncio.Future[Any]":
        assert self._loop is not None and self._writer is not None, "storage is not open"
        if self.lost is not None:
            raise StorageLostError(self.lost)
        future: asyncio.Future[Any] = self._loop.create_future()
        try:
            self._writes.put_nowait((write, future))
        except queue.Full:
            with self._committed_lock:
                wait_s = self._committed.wait_s(time.monotonic(), WRITE_QUEUE_MAX)
            raise StorageOverloadedError(
                f"{WRITE_QUEUE_MAX} writes are waiting for the disk", wait_s
            ) from None
        return future

    def _write_loop(self, ready: "concurrent.futures.Future[None]") -> None:
        try:
            connection = connect(self.path)
        except sqlite3.Error as error:
            ready.set_exception(error)
            return
        # The files this connection writes to: a commit is durable only while they are
        # the ones at their paths.
        self._files = database_file.identify(self.path)
        try:
            self._awaited = view_rows.awaited(connection)
        except sqlite3.Error as error:
            connection.close()
            ready.set_exception(error)
            return
        ready.set_result(None)
        try:
            while True:
                first = self._writes.get()
                if first is None:
                    return
                batch = [first]
                while len(batch) < BATCH_WRITES_MAX:
                    try:
                        item = self._writes.get_nowait()
                    except queue.Empty:
                        break
                    if item is None:
                        self._writes.put(None)  # stop after this batch
                        break
                    batch.append(item)
                self._commit(connection, batch)
        finally:
            connection.close()

    def _commit(
        self, connection: sqlite3.Connection, batch: list[tuple[_Write, "asyncio.Future[Any]"]]
    ) -> None:
        if self.lost is not None:
            self._resolve(batch, [StorageLostError(self.lost)] * len(batch))
            return
        started = time.perf_counter()
        writes = [write for write, _ in batch]
        self._erased = False
        try:
            if self._awaited is None:
                self._awaited = view_rows.awaited(connection)
            connection.execute("BEGIN IMMEDIATE")
            results = self._apply(connection, writes)
            highest = _highest_stored(self.highest_id, writes, results)
            connection.execute("INSERT OR REPLACE INTO meta VALUES ('highest_id', ?)", (highest,))
            connection.execute("COMMIT")
        # A stored state that does not decode fails its batch, not the writer thread.
        except (sqlite3.Error, msgspec.MsgspecError) as error:
            if connection.in_transaction:
                connection.execute("ROLLBACK")
            # The batch's folds went with it; what still waits is what is on disk, and
            # until that can be read every message is looked up.
            self._awaited = None
            with contextlib.suppress(sqlite3.Error):
                self._awaited = view_rows.awaited(connection)
            self.stats.failures += 1
            log.error("storage: commit of %d writes failed: %s", len(batch), error)
            failure = StorageError(str(error))
            self._resolve(batch, [failure] * len(batch))
            return
        if self._erased:
            _checkpoint_now(connection)
        # Checked after the commit: a file deleted before it took the batch with it.
        if (lost := self.check_files()) is not None:
            self.stats.failures += 1
            self._resolve(batch, [StorageLostError(lost)] * len(batch))
            return
        self.highest_id = highest
        self._room_names.update(
            write.message.room for write, _ in batch if isinstance(write, _Append)
        )
        elapsed_s = time.perf_counter() - started
        stats = self.stats
        stats.commits += 1
        stats.writes += len(batch)
        stats.last_batch_size = len(batch)
        stats.commit_seconds_total += elapsed_s
        with self._committed_lock:
            self._committed.finished(time.monotonic(), len(batch))
        if self._on_commit is not None:
            self._on_commit(elapsed_s, len(batch))
        self._resolve(batch, results)

    def _apply(self, connection: sqlite3.Connection, writes: list[_Write]) -> list[Any]:
        """Each write's result, in order: a SendResult, None, an IdConflictError (that
        write alone fails) or what expiring hints removed."""
        results: list[Any] = []
        plain: list[StoredMessage] = []  # appends in a row that are not late arrivals
        for write in writes:
            if isinstance(write, _Append) and self._plain(write):
                plain.append(write.message)
                continue
            if plain:
                results += self._append_plain(connection, plain)
                plain = []
            results.append(self._apply_one(connection, write))
        if plain:
            results += self._append_plain(connection, plain)
        return results

    def _plain(self, write: _Append) -> bool:
        """A message on time that no relation waits for: its view is itself."""
        message = write.message
        return (
            write.late_at_ms is None
            and message.kind == "message"
            and self._awaited is not None
            and (message.room, message.id) not in self._awaited
        )

    def _append_plain(
        self, connection: sqlite3.Connection, messages: list[StoredMessage]
    ) -> list[SendResult | IdConflictError]:
        """The usual run of new copies goes in a few multi-row INSERTs: each statement the
        writer runs gives up the GIL and waits for it back behind a busy event loop, so
        the count of statements, not of rows, is what costs. Only a run with a copy
        already held is undone and stored copy by copy."""
        if len(messages) > 1:
            connection.execute("SAVEPOINT plain_appends")
            rows = [_message_row(message) for message in messages]
            stored = _insert_all_if_new(connection, rows)
            if stored == len(messages):
                connection.execute("RELEASE plain_appends")
                return [SendResult(message, duplicate=False) for message in messages]
            connection.execute("ROLLBACK TO plain_appends")
            connection.execute("RELEASE plain_appends")
        return [self._append_or_conflict(connection, message) for message in messages]

    def _append_or_conflict(
        self, connection: sqlite3.Connection, message: StoredMessage
    ) -> SendResult | IdConflictError:
        try:
            return self._append_in(connection, message)
        except IdConflictError as conflict:
            return conflict  # this write fails; the batch goes on

    def _apply_one(self, connection: sqlite3.Connection, write: _Write) -> Any:
        match write:
            case _Append(message, late_at_ms):
                result = self._append_or_conflict(connection, message)
                # A copy that replaced its twin counts too: a client may have had
                # neither (clients drop repeats by sender and client message id).
                new_here = isinstance(result, SendResult) and not result.duplicate
                if late_at_ms is not None and new_here:
                    late_rows.record(connection, message.room, message.id, late_at_ms)
                if new_here:
                    assert isinstance(result, SendResult)
                    replaced = result.replaced
                    if view_rows.apply(connection, message, self._awaited, replaced):
                        self._erased = True
                return result
            case _Membership(user, room, joined, time_ms):
                connection.execute(_KEEP_LATEST_MEMBERSHIP, (user, room, time_ms, joined))
                return None
            case _ReadMarker(user, room, up_to):
                connection.execute(_KEEP_GREATEST_MARKER, (user, room, up_to))
                return None
            case _AddHint(owner, message, now_ms):
                added = hint_rows.add(connection, owner, message, now_ms)
                return SendResult(message, duplicate=not added)
            case _DeleteHint(owner, message_id):
                hint_rows.delete(connection, owner, message_id)
                return None
            case _ExpireHints(older_than_ms, count_max, bytes_max):
                return hint_rows.expire(connection, older_than_ms, count_max, bytes_max)

    def _append_in(self, connection: sqlite3.Connection, message: StoredMessage) -> SendResult:
        """Store a copy once. A twin (same sender and client_msg_id, other id: a retry that
        reached another coordinator) is resolved the same way on every replica: the
        smaller id stays, so replicas converge on one message. A copy whose id is taken
        by another message (only a broken or hostile peer reuses an id) leaves the held one
        in place and fails alone, never the batch it was written in.

        The usual copy is new on both counts: one INSERT that yields to either unique key
        stores it; only a copy that meets one of them is looked at further."""
        values = _message_row(message)
        if connection.execute(_INSERT_IF_NEW, values).rowcount == 1:
            return SendResult(message, duplicate=False)
        taken = connection.execute(
            f"SELECT {EVENT_COLUMNS} FROM messages WHERE room = ? AND id = ?",
            (message.room, message.id),
        ).fetchone()
        if taken is not None:
            held = StoredMessage(*taken)
            if (held.sender, held.client_msg_id) != (message.sender, message.client_msg_id):
                self.stats.id_conflicts += 1
                raise IdConflictError(f"{message.room}: id {message.id} holds another message")
            self.stats.duplicates += 1
            return SendResult(held, duplicate=True)
        row = connection.execute(
            f"SELECT {EVENT_COLUMNS} FROM messages WHERE sender = ? AND client_msg_id = ?",
            (message.sender, message.client_msg_id),
        ).fetchone()
        replaced = None
        if row is not None:
            held = StoredMessage(*row)
            if held.id <= message.id:
                self.stats.duplicates += 1
                return SendResult(held, duplicate=True)
            connection.execute(
                "DELETE FROM messages WHERE room = ? AND id = ?", (held.room, held.id)
            )
            replaced = held.id
        connection.execute(_INSERT, values)
        return SendResult(message, duplicate=False, replaced=replaced)

    def _resolve(
        self, batch: list[tuple[_Write, "asyncio.Future[Any]"]], results: list[Any]
    ) -> None:
        assert self._loop is not None
        futures = [future for _, future in batch]
        self._loop.call_soon_threadsafe(_settle, futures, results)


def _settle(futures: list["asyncio.Future[Any]"], results: list[Any]) -> None:
    for future, result in zip(futures, results, strict=True):
        if future.done():
            continue  # the waiter went away (its session closed)
        if isinstance(result, BaseException):
            future.set_exception(result)
        else:
            future.set_result(result)
