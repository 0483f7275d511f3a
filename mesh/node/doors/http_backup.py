"""GET /v1/node/backup: a consistent copy of this node's database, made while it serves.

Only an operator may take one: on a node that checks tokens, a token whose `ops` name
`operate` (mesh/node/doors/token_scope.py). The copy is made beside the running node
(mesh/node/backup.py) and removed once it has been sent.
"""

import asyncio
import datetime
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from litestar import Request, get
from litestar.handlers import HTTPRouteHandler
from litestar.response import Stream

from mesh.node.backup import BackupError, snapshot
from mesh.node.doors.http_common import (
    FORBIDDEN,
    UNAUTHORIZED,
    ApiError,
    backend_of,
    error_spec,
    principal_of,
)
from mesh.wire.errors import ErrorCode

SQLITE_MEDIA_TYPE = "application/vnd.sqlite3"
CHUNK_BYTES = 1 << 20
# One copy made at a time: each is a full read of the database.
_one_at_a_time = asyncio.Lock()


async def backup(request: Request[Any, Any, Any]) -> Stream:
    backend = backend_of(request)
    principal = principal_of(backend, request)
    if backend.authenticator.checks_tokens and not principal.scope.may_operate():
        raise ApiError(ErrorCode.FORBIDDEN, "a backup takes a token whose ops name operate")
    if backend.data_dir is None:
        raise ApiError(ErrorCode.UNAVAILABLE, "this node makes no backups")
    try:
        async with _one_at_a_time:
            path = await asyncio.to_thread(snapshot, backend.data_dir)
    except BackupError as error:
        raise ApiError(ErrorCode.UNAVAILABLE, str(error)) from error
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    name = f"meshchat-{backend.node_id}-{stamp}.sqlite3"
    return Stream(
        _chunks_of(path),
        media_type=SQLITE_MEDIA_TYPE,
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )


async def _chunks_of(path: Path) -> AsyncIterator[bytes]:
    """The copy, read off the loop's thread; removed once sent (or the client is gone)."""
    try:
        with open(path, "rb") as file:
            while chunk := await asyncio.to_thread(file.read, CHUNK_BYTES):
                yield chunk
    finally:
        path.unlink(missing_ok=True)


def backup_routes() -> list[HTTPRouteHandler]:
    route = get(
        "/v1/node/backup",
        summary="A consistent copy of this node's database (SQLite), for `meshchat backup`",
        tags=["operations"],
        media_type=SQLITE_MEDIA_TYPE,
        responses={
            **UNAUTHORIZED,
            **FORBIDDEN,
            503: error_spec(
                "The copy could not be made.", ErrorCode.UNAVAILABLE, "could not copy ..."
            ),
        },
    )
    return [route(backup)]
