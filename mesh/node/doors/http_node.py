"""Operating a node over HTTP: GET /v1/node/backup, POST /v1/node/drain, GET /v1/ready.

A backup is a consistent copy of the node's database, made beside the running node
(mesh/node/backup.py) and removed once sent; a drain hands the node's client sessions to
other nodes before a restart (mesh/node/doors/drain.py). Only an operator may do either:
on a node that checks tokens, a token whose `ops` name `operate`
(mesh/node/doors/token_scope.py). Readiness is for load balancers and needs no token.
"""

import asyncio
import datetime
import os
from collections.abc import AsyncIterator
from typing import Annotated, Any, BinaryIO

import msgspec
from litestar import Request, Response, get, post
from litestar.handlers import HTTPRouteHandler
from litestar.openapi import ResponseSpec
from litestar.params import QueryParameter
from litestar.response import Stream

from mesh.node.backup import BackupError, snapshot
from mesh.node.doors.drain import DRAIN_OVER_MAX_S
from mesh.node.doors.http_common import (
    BAD_REQUEST,
    FORBIDDEN,
    UNAUTHORIZED,
    ApiError,
    HttpBackend,
    backend_of,
    error_spec,
    principal_of,
)
from mesh.wire.errors import ErrorCode

SQLITE_MEDIA_TYPE = "application/vnd.sqlite3"
CHUNK_BYTES = 1 << 20
# One copy made at a time: each is a full read of the database.
_one_at_a_time = asyncio.Lock()
# Copies being sent at once, each a database's size on the node's disk until it is sent.
BACKUPS_IN_FLIGHT_MAX = 2
_copies_sent = [0]


class DrainOut(msgspec.Struct, frozen=True):
    node: str
    handed_off: int  # sessions told to go to another node
    remaining: int  # still open when the drain returned
    took_s: float


class ReadyOut(msgspec.Struct, frozen=True):
    ready: bool
    node: str
    reason: str = ""


def _require_operator(request: Request[Any, Any, Any], doing: str) -> HttpBackend:
    backend = backend_of(request)
    principal = principal_of(backend, request)
    if backend.authenticator.checks_tokens and not principal.scope.may_operate():
        raise ApiError(ErrorCode.FORBIDDEN, f"{doing} takes a token whose ops name operate")
    return backend


async def drain_node(
    request: Request[Any, Any, Any],
    over_s: Annotated[float, QueryParameter(name="over", ge=0, le=DRAIN_OVER_MAX_S)] = 5.0,
) -> DrainOut:
    backend = _require_operator(request, "a drain")
    if backend.drain is None:
        raise ApiError(ErrorCode.UNAVAILABLE, "this node cannot drain")
    outcome = await backend.drain(over_s)
    return DrainOut(
        backend.node_id, outcome.handed_off, outcome.remaining, round(outcome.took_s, 3)
    )


async def ready(request: Request[Any, Any, Any]) -> Response[ReadyOut]:
    backend = backend_of(request)
    if (reason := backend.not_ready()) is not None:
        return Response(ReadyOut(False, backend.node_id, reason), status_code=503)
    return Response(ReadyOut(True, backend.node_id))


async def backup(request: Request[Any, Any, Any]) -> Stream:
    backend = _require_operator(request, "a backup")
    if backend.data_dir is None:
        raise ApiError(ErrorCode.UNAVAILABLE, "this node makes no backups")
    if _copies_sent[0] >= BACKUPS_IN_FLIGHT_MAX:
        raise ApiError(ErrorCode.UNAVAILABLE, "a backup is being sent already; retry later")
    try:
        async with _one_at_a_time:
            path = await asyncio.to_thread(snapshot, backend.data_dir)
    except BackupError as error:
        raise ApiError(ErrorCode.UNAVAILABLE, str(error)) from error
    # Opened, then unlinked at once: the copy's space is freed when the file is closed,
    # however the sending ends (sent, the client gone, the response never started).
    file = open(path, "rb")  # noqa: SIM115 - closed by _chunks_of, or with the object
    path.unlink()
    size = os.fstat(file.fileno()).st_size
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    name = f"meshchat-{backend.node_id}-{stamp}.sqlite3"
    return Stream(
        _chunks_of(file),
        media_type=SQLITE_MEDIA_TYPE,
        headers={
            "Content-Disposition": f'attachment; filename="{name}"',
            "Content-Length": str(size),
        },
    )


async def _chunks_of(file: BinaryIO) -> AsyncIterator[bytes]:
    """The copy, read off the loop's thread."""
    _copies_sent[0] += 1
    try:
        while chunk := await asyncio.to_thread(file.read, CHUNK_BYTES):
            yield chunk
    finally:
        _copies_sent[0] -= 1
        file.close()


def node_routes() -> list[HTTPRouteHandler]:
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
    draining = post(
        "/v1/node/drain",
        summary="Hand this node's client sessions to other nodes and take no new ones",
        tags=["operations"],
        status_code=200,
        responses={**BAD_REQUEST, **UNAUTHORIZED, **FORBIDDEN},
    )
    readiness = get(
        "/v1/ready",
        summary="Whether the node takes new client sessions, for load balancers",
        tags=["operations"],
        security=[{}],
        responses={
            503: ResponseSpec(ReadyOut, description="Joining or draining: not serving clients.")
        },
    )
    return [route(backup), draining(drain_node), readiness(ready)]
