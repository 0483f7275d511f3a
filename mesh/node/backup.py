"""A consistent copy of a node's database while it serves, and putting one back.

The copy is SQLite's online backup in one step: one read transaction, so it is the
database as of one commit, taken beside the writer (WAL lets both run). A copy is checked
before it is handed out or restored: it must pass SQLite's integrity check and carry a
schema this code knows, so that a damaged or foreign file is refused with its reason
instead of being served from.
"""

import contextlib
import os
import shutil
import sqlite3
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from mesh.node.storage import DATABASE_FILE, MIGRATIONS

# Where the node keeps each copy while it is sent; removed once sent.
BACKUP_DIR: Final = "backups"
# A copy older than this is one whose sending never ended (the node stopped): removed.
STALE_BACKUP_S: Final = 3600.0


class BackupError(Exception):
    """A copy could not be made, or a file is not a copy this code can restore."""


@dataclass(frozen=True, slots=True)
class BackupSummary:
    schema_version: int
    messages: int
    rooms: int
    size_bytes: int


def snapshot(data_dir: Path) -> Path:
    """Copy the node's database into DATA/backups; returns the copy's path."""
    database = data_dir / DATABASE_FILE
    folder = data_dir / BACKUP_DIR
    folder.mkdir(mode=0o700, exist_ok=True)
    for stale in folder.glob("*.sqlite3"):  # left by a node stopped while making one
        with contextlib.suppress(FileNotFoundError):
            if time.time() - stale.stat().st_mtime > STALE_BACKUP_S:
                stale.unlink()
    handle, name = tempfile.mkstemp(prefix="backup-", suffix=".sqlite3", dir=folder)
    os.close(handle)
    out = Path(name)
    try:
        source = sqlite3.connect(f"file:{database}?mode=ro", uri=True)
        try:
            target = sqlite3.connect(out)
            try:
                source.backup(target)  # all pages in one step: one moment's database
                target.execute("PRAGMA journal_mode=DELETE")  # one file, readable anywhere
            finally:
                target.close()
        finally:
            source.close()
    except sqlite3.Error as error:
        out.unlink(missing_ok=True)
        raise BackupError(f"could not copy {database}: {error}") from error
    try:
        summarize(out)
    except BackupError:
        out.unlink(missing_ok=True)
        raise
    return out


def summarize(path: Path) -> BackupSummary:
    """What a copy holds, once it passes the checks; BackupError saying why not."""
    try:
        connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    except sqlite3.Error as error:
        raise BackupError(f"{path} does not open as SQLite: {error}") from error
    try:
        (verdict,) = connection.execute("PRAGMA integrity_check(1)").fetchone()
        if verdict != "ok":
            raise BackupError(f"{path} is damaged: {verdict}")
        (version,) = connection.execute("PRAGMA user_version").fetchone()
        if not 1 <= version <= len(MIGRATIONS):
            raise BackupError(
                f"{path} has schema version {version}; this meshchat reads 1-{len(MIGRATIONS)}"
            )
        (messages,) = connection.execute("SELECT count(*) FROM messages").fetchone()
        (rooms,) = connection.execute("SELECT count(DISTINCT room) FROM messages").fetchone()
    except sqlite3.Error as error:
        raise BackupError(f"{path} is not a meshchat database: {error}") from error
    finally:
        connection.close()
    return BackupSummary(version, messages, rooms, path.stat().st_size)


def restore(backup: Path, data_dir: Path) -> BackupSummary:
    """Put a checked copy in place as `data_dir`'s database; the dir must hold none."""
    summary = summarize(backup)
    database = data_dir / DATABASE_FILE
    left = [p for p in (database, *_sidecars(database)) if p.exists()]
    if left:
        raise BackupError(
            f"{data_dir} already holds a database ({left[0].name}); restore into an empty "
            "data dir, or move the old one away first"
        )
    data_dir.mkdir(parents=True, exist_ok=True)
    partial = database.with_suffix(".restoring")
    shutil.copyfile(backup, partial)
    with open(partial, "rb") as file:
        os.fsync(file.fileno())
    os.replace(partial, database)
    directory = os.open(data_dir, os.O_RDONLY)
    try:
        os.fsync(directory)  # the rename itself is durable before we say it is done
    finally:
        os.close(directory)
    return summary


def _sidecars(database: Path) -> list[Path]:
    return [database.with_name(database.name + suffix) for suffix in ("-wal", "-shm")]
