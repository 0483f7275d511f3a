"""Checks of the SQLite file under a node: whole and ours when it opens, still there while it runs.

At open, a file shorter than its own header says (truncated) or one that belongs to another
program is refused with a one-line reason. While the node runs, the files it writes (the
database and its WAL and shared-memory files) are compared by device and inode with the
ones at their paths: a deleted or replaced file means commits land where nobody will read
them again, so the node must stop acknowledging.
"""

import os
import sqlite3
from pathlib import Path
from typing import Final

SQLITE_MAGIC: Final = b"SQLite format 3\x00"
HEADER_BYTES: Final = 100  # the database header of a SQLite file (sqlite.org/fileformat.html)
# Written as PRAGMA application_id by every migration: "mcht".
APPLICATION_ID: Final = int.from_bytes(b"mcht", "big")
# Tables every meshchat schema since version 1 has.
OUR_TABLES: Final = frozenset({"messages", "room_members", "meta"})
# Files SQLite keeps beside the database in WAL mode, open for the life of a connection.
SIDE_FILE_SUFFIXES: Final = ("-wal", "-shm")

FileIdentity = tuple[int, int]  # (st_dev, st_ino)


def truncation(path: Path) -> str | None:
    """Why a SQLite file is shorter than its header says, else None (also for no file)."""
    try:
        with open(path, "rb") as file:
            header = file.read(HEADER_BYTES)
            size = os.fstat(file.fileno()).st_size
    except FileNotFoundError:
        return None
    if not header.startswith(SQLITE_MAGIC):
        return None  # empty (a new database), or not SQLite: SQLite itself says so
    if len(header) < HEADER_BYTES:
        return f"truncated: {size} bytes, shorter than a SQLite header"
    wal = path.with_name(path.name + "-wal")
    if wal.exists() and wal.stat().st_size > 0:
        return None  # pages may still live in the WAL only
    page_size = int.from_bytes(header[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    pages = int.from_bytes(header[28:32], "big")
    # The page count is valid only when written by the same change as the counter.
    if header[92:96] != header[24:28] or pages * page_size <= size:
        return None
    return f"truncated: {size} bytes, its header says {pages * page_size}"


def foreign(connection: sqlite3.Connection, version: int) -> str | None:
    """Why an open database is not a meshchat one, else None."""
    (application_id,) = connection.execute("PRAGMA application_id").fetchone()
    if application_id not in (0, APPLICATION_ID):
        return f"not a meshchat database (application id {application_id:#x})"
    rows = connection.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
    ).fetchall()
    tables = {name for (name,) in rows}
    if version == 0 and tables:
        return f"not a meshchat database: it has tables ({', '.join(sorted(tables)[:5])})"
    if version > 0 and (missing_tables := OUR_TABLES - tables):
        missing = ", ".join(sorted(missing_tables))
        return f"not a meshchat database: schema version {version} without tables {missing}"
    return None


def identify(path: Path) -> dict[Path, FileIdentity]:
    """The identity of the database at `path` and of its side files that exist now."""
    identities = {}
    for candidate in (path, *(path.with_name(path.name + s) for s in SIDE_FILE_SUFFIXES)):
        try:
            status = os.stat(candidate)
        except OSError:
            continue
        identities[candidate] = (status.st_dev, status.st_ino)
    return identities


def change(identities: dict[Path, FileIdentity]) -> str | None:
    """How the files identified earlier differ from those at their paths now, else None."""
    for path, identity in identities.items():
        try:
            status = os.stat(path)
        except FileNotFoundError:
            return f"{path} was deleted"
        except OSError as error:  # its directory replaced by a file, say
            return f"{path} is gone: {error.strerror}"
        if (status.st_dev, status.st_ino) != identity:
            return f"{path} was replaced by another file"
    return None
