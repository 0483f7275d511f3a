"""What every REST handler shares: the node behind the app, the caller, the checks,
the error answer, a message as JSON, and storing an event as a send."""

import asyncio
import collections
import datetime
import math
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import msgspec
from litestar import Request
from litestar.openapi import ResponseSpec
from litestar.openapi.spec import Example
from litestar.params import Parameter

from mesh.node.config import ClientLimits
from mesh.node.doors.auth import Authenticator, AuthError, Principal
from mesh.node.doors.chat import ChatService
from mesh.node.doors.drain import DrainOutcome
from mesh.node.doors.error_docs import ERRORS_DOCS_PATH, docs_link
from mesh.node.doors.rate_limit import UserSendLimits
from mesh.node.doors.send_admission import SendAdmission
from mesh.node.doors.token_scope import Operation
from mesh.node.metrics import NodeMetrics
from mesh.node.storage import SendResult, StorageError, StorageOverloadedError, StoredMessage
from mesh.wire.bodies import TEXT_PATTERN, body_problem
from mesh.wire.errors import ErrorCode
from mesh.wire.names import ROOM_NAME_PATTERN, ROOM_NAME_RULE
from mesh.wire.protocol import StatusReply
from router.event_rules import MessageState
from router.message_ids import MESSAGE_ID_PATTERN
from router.room_view import view_of
from router.writes import SendRequest

ROOM_PATTERN = re.compile(ROOM_NAME_PATTERN)

MESSAGE_ID = re.compile(MESSAGE_ID_PATTERN)


class DeletionOut(msgspec.Struct, frozen=True):
    by: str
    at: str  # ISO 8601, UTC, milliseconds


# What a person writes (a message, an edit): not empty, not only spaces.
MessageText = Annotated[
    str, msgspec.Meta(pattern=TEXT_PATTERN, description="text, not only spaces")
]


class MessageOut(msgspec.Struct, frozen=True, omit_defaults=True):
    """A message as readers see it now: its latest edit's body, or its tombstone."""

    id: str
    room: str
    sender: str
    time: str  # ISO 8601, UTC, milliseconds
    body: str
    reply_to: str | None = None
    edited_at: str | None = None
    deleted: DeletionOut | None = None
    reactions: dict[str, list[str]] = {}  # key -> the users who reacted so, sorted


class ErrorDetail(msgspec.Struct, frozen=True, omit_defaults=True):
    code: str
    message: str
    docs: str
    retry_after_s: float | None = None  # with rate_limited, as in the TCP protocol


class ErrorOut(msgspec.Struct, frozen=True):
    error: ErrorDetail


class ApiError(Exception):
    def __init__(
        self,
        code: ErrorCode,
        message: str,
        headers: dict[str, str] | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.headers = headers or {}
        self.retry_after_s = retry_after_s


def error_spec(description: str, code: ErrorCode, message: str) -> ResponseSpec:
    example = ErrorOut(ErrorDetail(code.value, message, docs_link(ERRORS_DOCS_PATH, code)))
    return ResponseSpec(
        ErrorOut,
        description=description,
        examples=[Example(summary=code.value, value=msgspec.to_builtins(example))],
    )


UNAUTHORIZED = {
    401: error_spec(
        "No token, or a bad or expired one.", ErrorCode.UNAUTHORIZED, "a token is required"
    )
}

BAD_REQUEST = {
    400: error_spec("The request is not valid.", ErrorCode.BAD_REQUEST, "not a room name: '!'")
}

FORBIDDEN = {
    403: error_spec(
        "The room's state, or the caller's token (its `rooms` and `ops` claims), does not"
        " let the caller do this.",
        ErrorCode.FORBIDDEN,
        "this token may not post (it may read)",
    )
}

NOT_FOUND = {404: error_spec("No such room.", ErrorCode.NOT_FOUND, "no messages in room 'x'")}

STORAGE = {
    503: error_spec(
        "The write could not be made durable now; retry after Retry-After.",
        ErrorCode.UNAVAILABLE,
        "20000 writes are waiting",
    ),
    500: error_spec(
        "The node failed to store the message.",
        ErrorCode.INTERNAL,
        "storage failed: disk I/O error",
    ),
}


def _stamp(time_ms: int) -> str:
    moment = datetime.datetime.fromtimestamp(time_ms / 1000, tz=datetime.UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def message_out(message: StoredMessage, state: MessageState | None = None) -> MessageOut:
    view = view_of(state or MessageState(event=message), message)
    deleted = None
    if view.deleted is not None:
        deleted = DeletionOut(view.deleted.by, _stamp(view.deleted.at_ms))
    return MessageOut(
        message.id,
        message.room,
        message.sender,
        _stamp(message.time_ms),
        view.body,
        reply_to=view.reply_to,
        edited_at=None if view.edited_at_ms is None else _stamp(view.edited_at_ms),
        deleted=deleted,
        reactions=view.reactions,
    )


RoomParameter = Annotated[
    str,
    Parameter(
        pattern=ROOM_PATTERN.pattern,
        min_length=1,
        max_length=64,
        description="a room name: 1-64 of A-Z a-z 0-9 _ . # -",
    ),
]


@dataclass
class HttpBackend:
    node_id: str
    chat: ChatService
    authenticator: Authenticator
    limits: ClientLimits
    status: Callable[[], StatusReply]
    metrics: NodeMetrics
    send_limits: UserSendLimits  # the node's one registry, shared with the TCP gateway
    admission: SendAdmission  # the node's sends in flight, shared with the TCP gateway
    errors_by_code: collections.Counter[str] = field(default_factory=collections.Counter)
    data_dir: Path | None = None  # where backups are copied to; None: none are made
    drain: Callable[[float], Awaitable[DrainOutcome]] | None = None  # over so many seconds
    # Why the node takes no client sessions now (joining, draining); None: it does.
    not_ready: Callable[[], str | None] = lambda: None
    errors_docs_url: str = ERRORS_DOCS_PATH  # error bodies link to their code's section here


def backend_of(request: Request[Any, Any, Any]) -> HttpBackend:
    """The node behind this app: build_app keeps it in the app's state."""
    backend = request.app.state.backend
    assert isinstance(backend, HttpBackend)
    return backend


def user_of(backend: HttpBackend, request: Request[Any, Any, Any]) -> str:
    """The caller, for a request that is about no room and needs no operation."""
    return principal_of(backend, request).user


def user_for(
    backend: HttpBackend,
    request: Request[Any, Any, Any],
    operation: Operation,
    room: str | None = None,
) -> str:
    """The caller, if their token lets them `operation` in `room`; else 403 forbidden."""
    return scoped_principal(backend, request, operation, room).user


def scoped_principal(
    backend: HttpBackend,
    request: Request[Any, Any, Any],
    operation: Operation,
    room: str | None = None,
) -> Principal:
    principal = principal_of(backend, request)
    if room is not None:
        check_room(room)  # a name that is none is a bad request, whatever the token
    if (reason := principal.scope.refusal(room, operation)) is not None:
        raise ApiError(ErrorCode.FORBIDDEN, reason)
    return principal


def principal_of(backend: HttpBackend, request: Request[Any, Any, Any]) -> Principal:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ApiError(
            ErrorCode.UNAUTHORIZED,
            "send Authorization: Bearer TOKEN",
            {"WWW-Authenticate": "Bearer"},
        )
    try:
        return backend.authenticator.principal_of(token.strip(), time.time())
    except AuthError as error:
        raise ApiError(
            ErrorCode.UNAUTHORIZED,
            str(error),
            {"WWW-Authenticate": 'Bearer error="invalid_token"'},
        ) from error


def check_room(room: str) -> None:
    if not ROOM_PATTERN.fullmatch(room):
        raise ApiError(ErrorCode.BAD_REQUEST, f"not a room name: {room[:80]!r} ({ROOM_NAME_RULE})")


def check_cursor(name: str, value: str | None) -> None:
    if value is not None and not MESSAGE_ID.fullmatch(value):
        raise ApiError(ErrorCode.BAD_REQUEST, f"{name} is not a message id: {value[:80]!r}")


def take_send_token(backend: HttpBackend, user: str) -> None:
    wait_s = backend.send_limits.take(user, time.monotonic())
    if wait_s > 0:
        raise ApiError(
            ErrorCode.RATE_LIMITED,
            f"more than {backend.limits.sends_per_s:g} sends per second by one user on this node",
            # Retry-After counts whole seconds; the body says it to the millisecond.
            {"Retry-After": str(max(1, math.ceil(wait_s)))},
            retry_after_s=wait_s,
        )


async def _admit_send(admission: SendAdmission) -> None:
    wait_s = await admission.admit()
    if wait_s > 0:
        raise _unavailable(
            f"the node has {admission.in_flight} sends in flight and {admission.waiting} "
            f"waiting (at most {admission.in_flight_max}); retry in {wait_s:g}s",
            wait_s,
        )


def _unavailable(message: str, retry_after_s: float | None) -> ApiError:
    if retry_after_s is None:
        return ApiError(ErrorCode.UNAVAILABLE, message)
    headers = {"Retry-After": str(max(1, math.ceil(retry_after_s)))}
    return ApiError(ErrorCode.UNAVAILABLE, message, headers, retry_after_s=retry_after_s)


async def store_event(
    backend: HttpBackend, write: SendRequest, *, token_taken: bool = False
) -> SendResult:
    """Store a message or a relation as a send: within the user's rate and the node's
    admission, answered once W replicas hold it."""
    check_body(backend, write.body, write.kind)
    if not token_taken:
        take_send_token(backend, write.sender)
    await _admit_send(backend.admission)
    started = time.perf_counter()
    try:
        sending = backend.chat.write(write)
    except BaseException:
        backend.admission.finished(time.perf_counter() - started)
        raise

    def answered(done: "asyncio.Future[SendResult]") -> None:
        # Freed when the mesh answers, not when this request ends: a client that hangs
        # up leaves its send in flight. Its outcome is then no one's to read.
        backend.admission.finished(time.perf_counter() - started)
        if not done.cancelled():
            done.exception()

    sending.add_done_callback(answered)
    try:
        result = await asyncio.shield(sending)
    except StorageOverloadedError as error:  # also a lost data dir: the node is going
        raise _unavailable(str(error), error.retry_after_s) from error
    except StorageError as error:
        raise ApiError(ErrorCode.INTERNAL, f"storage failed: {error}") from error
    backend.metrics.observe_ack(time.perf_counter() - started)
    return result


def check_body(backend: HttpBackend, body: str, kind: str = "message") -> None:
    problem = body_problem(body, backend.limits.body_bytes_max, kind)
    if problem is not None:
        raise ApiError(*problem)
