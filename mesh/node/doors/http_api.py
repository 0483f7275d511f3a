"""The HTTP API v1: REST over the same rooms, tokens, limits and error codes as the TCP protocol.

Litestar, because it is built on msgspec (our schemas serve as its request and response
models, with no second validation layer) and derives a complete OpenAPI document from the
handlers; uvicorn serves it on the node's own event loop. docs/api.md describes the
conventions: versioned paths, `{"error": {code, message, docs}}`, cursor pagination, and
`Idempotency-Key` on creates.
"""

import asyncio
import collections
import contextlib
import datetime
import logging
import math
import re
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, Any
from urllib.parse import quote

import msgspec
import uvicorn
from litestar import Litestar, MediaType, Request, Response, get, post
from litestar.datastructures import State
from litestar.exceptions import HTTPException
from litestar.handlers import HTTPRouteHandler
from litestar.openapi import OpenAPIConfig, ResponseSpec
from litestar.openapi.spec import Components, Example, SecurityScheme
from litestar.params import Parameter

from mesh.node.config import ClientLimits
from mesh.node.doors.auth import Authenticator, AuthError
from mesh.node.doors.chat import ChatService, shown_to_clients
from mesh.node.doors.rate_limit import UserSendLimits
from mesh.node.doors.send_admission import SendAdmission
from mesh.node.metrics import CONTENT_TYPE, NodeMetrics
from mesh.node.room_requests import RoomUnavailableError
from mesh.node.storage import SendResult, StorageError, StorageOverloadedError, StoredMessage
from mesh.wire.errors import ErrorCode
from mesh.wire.message_keys import new_client_msg_id
from mesh.wire.names import ROOM_NAME_PATTERN, ROOM_NAME_RULE
from mesh.wire.protocol import HISTORY_LIMIT_DEFAULT, HISTORY_LIMIT_MAX, MemberStatus, StatusReply
from router.event_rules import MessageState
from router.message_ids import MESSAGE_ID_PATTERN
from router.page_bytes import cut_to_bytes
from router.room_view import view_of
from router.writes import SendRequest

API_VERSION = "1"
ROOM_PATTERN = re.compile(ROOM_NAME_PATTERN)
# Paths with several handlers, and every method they answer (for OPTIONS).
ALLOWED_METHODS = (
    (re.compile(r"^/v1/rooms/[^/]+/messages/?$"), b"GET, OPTIONS, POST"),
    (re.compile(r"^/v1/rooms/[^/]+/messages/[^/]+/?$"), b"DELETE, GET, OPTIONS, PATCH"),
    (re.compile(r"^/v1/rooms/[^/]+/messages/[^/]+/reactions/[^/]+/?$"), b"DELETE, OPTIONS, PUT"),
)
MESSAGE_ID = re.compile(MESSAGE_ID_PATTERN)
DOCS = "docs/api.md#errors"
BODY_TOO_DEEP = "the body is nested too deeply"
# A request body may spell each character of a message as a 6-byte JSON escape (\u0001);
# the JSON object around the body gets 4 KiB.
ESCAPED_CHAR_BYTES_MAX = 6
REQUEST_ENVELOPE_BYTES = 4096

log = logging.getLogger(__name__)

_STATUS_OF_CODE = {
    ErrorCode.BAD_REQUEST: 400,
    ErrorCode.UNAUTHORIZED: 401,
    ErrorCode.FORBIDDEN: 403,
    ErrorCode.NOT_FOUND: 404,
    ErrorCode.CONFLICT: 409,
    ErrorCode.TOO_LARGE: 413,
    ErrorCode.RATE_LIMITED: 429,
    ErrorCode.UNAVAILABLE: 503,
    ErrorCode.UNSUPPORTED_VERSION: 404,
    ErrorCode.INTERNAL: 500,
}
_CODE_OF_STATUS = {
    400: ErrorCode.BAD_REQUEST,
    401: ErrorCode.UNAUTHORIZED,
    403: ErrorCode.FORBIDDEN,
    404: ErrorCode.NOT_FOUND,
    405: ErrorCode.BAD_REQUEST,
    409: ErrorCode.CONFLICT,
    413: ErrorCode.TOO_LARGE,
    429: ErrorCode.RATE_LIMITED,
    503: ErrorCode.UNAVAILABLE,
}


# ---- schemas ----


class DeletionOut(msgspec.Struct, frozen=True):
    by: str
    at: str  # ISO 8601, UTC, milliseconds


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


class MessagePage(msgspec.Struct, frozen=True):
    messages: list[MessageOut]
    prev: str | None  # the path of the page of older messages; null at the room's start
    next: str | None  # the path of the page of newer messages; null at the newest


class NewMessage(msgspec.Struct, frozen=True):
    body: str
    # The id of the message this one answers.
    reply_to: Annotated[str, msgspec.Meta(pattern=MESSAGE_ID_PATTERN)] | None = None


class MembersOut(msgspec.Struct, frozen=True):
    room: str
    members: list[str]


class HealthOut(msgspec.Struct, frozen=True):
    status: str
    node: str


class StatusOut(msgspec.Struct, frozen=True):
    node: str
    members: list[MemberStatus]
    counters: dict[str, int]


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


def _error_response(
    status: int,
    code: ErrorCode,
    message: str,
    headers: dict[str, str] | None = None,
    retry_after_s: float | None = None,
) -> Response[ErrorOut]:
    return Response(
        ErrorOut(ErrorDetail(code.value, message, DOCS, retry_after_s)),
        status_code=status,
        headers=headers,
        media_type=MediaType.JSON,
    )


def error_spec(description: str, code: ErrorCode, message: str) -> ResponseSpec:
    example = ErrorOut(ErrorDetail(code.value, message, DOCS))
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


# A page's JSON beside its messages: keys and brackets (35 bytes) and the two page paths,
# each with a room name of at most 192 bytes escaped, cursors of 82 and the limit: at
# most 750 bytes.
PAGE_ENVELOPE_BYTES = 768
_json_encoder = msgspec.json.Encoder()


def _fit_json(
    page: list[StoredMessage],
    bytes_max: int,
    *,
    forward: bool,
    relations: dict[str, MessageState] | None = None,
) -> tuple[list[StoredMessage], list[MessageOut], bool]:
    """The page, and its messages as JSON, within `bytes_max` (at least one message),
    keeping the oldest paging forward and the newest otherwise; and whether it was cut.
    Escaping can make JSON longer than the UTF-8 the page was cut by (a control
    character takes 6 bytes)."""
    made = relations or {}
    shown = [message_out(message, made.get(message.id)) for message in page]
    fitted, cut = cut_to_bytes(shown, bytes_max, _json_bytes, keep_oldest=forward)
    kept = page[: len(fitted)] if forward else page[len(page) - len(fitted) :]
    return kept, fitted, cut


def _json_bytes(message: MessageOut) -> int:
    return len(_json_encoder.encode(message)) + 1  # and the comma after it


RoomParameter = Annotated[
    str,
    Parameter(
        pattern=ROOM_PATTERN.pattern,
        min_length=1,
        max_length=64,
        description="a room name: 1-64 of A-Z a-z 0-9 _ . # -",
    ),
]


def with_links(schema: dict[str, Any]) -> dict[str, Any]:
    """OpenAPI links: a posted message leads to the pages around it and to the room's members."""
    posted = schema["paths"]["/v1/rooms/{room}/messages"]["post"]["responses"]
    room = {"room": "$request.path.room"}
    links = {
        "MessagesBeforeIt": {
            "operationId": "V1RoomsMessagesListMessages",
            "parameters": {**room, "before": "$response.body#/id"},
        },
        "MessagesAfterIt": {
            "operationId": "V1RoomsMessagesListMessages",
            "parameters": {**room, "after": "$response.body#/id"},
        },
        "RoomMembers": {"operationId": "V1RoomsMembersListMembers", "parameters": room},
    }
    for status in ("200", "201"):
        if status in posted:
            posted[status]["links"] = links
    return schema


MESSAGE_EXAMPLE = MessageOut(
    "01a213ba8e9d0003.n1", "lobby", "ann", "2026-11-25T17:22:03.037Z", "hello, bob"
)
# What a post may answer besides 201.
POSTED = {
    200: ResponseSpec(
        MessageOut,
        description="A retry: the message stored the first time.",
        examples=[Example(value=msgspec.to_builtins(MESSAGE_EXAMPLE))],
    ),
    **BAD_REQUEST,
    **UNAUTHORIZED,
    409: error_spec(
        "The Idempotency-Key names another event of this user (an edit, say).",
        ErrorCode.CONFLICT,
        "client_msg_id k1 already names another event",
    ),
    413: error_spec(
        "The body is over the limit.",
        ErrorCode.TOO_LARGE,
        "body of 20000 bytes exceeds the limit of 16384",
    ),
    429: error_spec(
        "Too many sends; retry after Retry-After seconds.",
        ErrorCode.RATE_LIMITED,
        "more than 100 sends per second by one user on this node",
    ),
    **STORAGE,
}


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


# ---- what every handler checks ----


def backend_of(request: Request[Any, Any, Any]) -> HttpBackend:
    """The node behind this app: build_app keeps it in the app's state."""
    backend = request.app.state.backend
    assert isinstance(backend, HttpBackend)
    return backend


def user_of(backend: HttpBackend, request: Request[Any, Any, Any]) -> str:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ApiError(
            ErrorCode.UNAUTHORIZED,
            "send Authorization: Bearer TOKEN",
            {"WWW-Authenticate": "Bearer"},
        )
    try:
        return backend.authenticator.user_of(token.strip(), time.time())
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


# ---- the links between pages ----


def _page_path(room: str, limit: int, **cursor: str) -> str:
    query = "&".join(f"{name}={value}" for name, value in cursor.items())
    return f"/v1/rooms/{quote(room, safe='')}/messages?{query}&limit={limit}"


async def _links_paging_forward(
    chat: ChatService,
    room: str,
    limit: int,
    page: list[StoredMessage],
    *,
    more: bool,
    before: str | None,
    after: str,
) -> tuple[str | None, str | None]:
    """`prev` and `next` of a page read forward from `after` (up to `before`, if given)."""
    older = page[0].id if page else after
    has_older = bool((await chat.history(room, before=older, limit=1)).messages)
    prev = _page_path(room, limit, before=older) if has_older else None
    next_ = None
    if more:
        bound = {} if before is None else {"before": before}
        next_ = _page_path(room, limit, after=page[-1].id, **bound)
    return prev, next_


async def _links_paging_back(
    chat: ChatService,
    room: str,
    limit: int,
    page: list[StoredMessage],
    *,
    more: bool,
    before: str | None,
) -> tuple[str | None, str | None]:
    """`prev` and `next` of the newest page, or of a page read back from `before`."""
    prev = _page_path(room, limit, before=page[0].id) if more and page else None
    next_ = None
    if before is not None:
        newer = page[-1].id if page else before
        if (await chat.history(room, after=newer, limit=1)).messages:
            next_ = _page_path(room, limit, after=newer)
    return prev, next_


# ---- handlers ----
# A handler's function name is part of its OpenAPI operationId (with_links names two):
# renaming one changes the published document.


async def list_messages(
    request: Request[Any, Any, Any],
    room: RoomParameter,
    limit: Annotated[
        int, Parameter(ge=1, le=HISTORY_LIMIT_MAX, description="page size")
    ] = HISTORY_LIMIT_DEFAULT,
    before: Annotated[
        str | None,
        Parameter(pattern=MESSAGE_ID_PATTERN, description="only messages older than this id"),
    ] = None,
    after: Annotated[
        str | None,
        Parameter(
            pattern=MESSAGE_ID_PATTERN,
            description="only messages newer than this id; with `before` too, the "
            "messages between the two, paging forward",
        ),
    ] = None,
) -> MessagePage:
    backend = backend_of(request)
    user_of(backend, request)
    check_room(room)
    check_cursor("before", before)
    check_cursor("after", after)
    chat = backend.chat
    bytes_max = max(1, backend.limits.frame_bytes_max - PAGE_ENVELOPE_BYTES)
    read = await chat.history(room, before=before, after=after, limit=limit, bytes_max=bytes_max)
    page, shown, cut = _fit_json(
        read.messages, bytes_max, forward=after is not None, relations=read.relations
    )
    more = read.more or cut
    if not page and before is None and after is None:
        raise ApiError(ErrorCode.NOT_FOUND, f"no messages in room {room!r}")
    if after is not None:
        prev, next_ = await _links_paging_forward(
            chat, room, limit, page, more=more, before=before, after=after
        )
    else:
        prev, next_ = await _links_paging_back(chat, room, limit, page, more=more, before=before)
    kept = [out for message, out in zip(page, shown, strict=True) if shown_to_clients(message)]
    return MessagePage(kept, prev, next_)


async def post_message(
    request: Request[Any, Any, Any],
    room: RoomParameter,
    data: NewMessage,
    idempotency_key: Annotated[
        str | None,
        Parameter(
            header="Idempotency-Key",
            min_length=1,
            max_length=64,
            description="the client message id; retries with it are safe",
        ),
    ] = None,
) -> Response[MessageOut]:
    backend = backend_of(request)
    user = user_of(backend, request)
    check_room(room)
    key = idempotency_key or new_client_msg_id()
    write = SendRequest(room, user, key, data.body, reply_to=data.reply_to)
    result = await store_event(backend, write)
    return Response(message_out(result.message), status_code=200 if result.duplicate else 201)


async def store_event(
    backend: HttpBackend, write: SendRequest, *, token_taken: bool = False
) -> SendResult:
    """Store a message or a relation as a send: within the user's rate and the node's
    admission, answered once W replicas hold it."""
    check_body(backend, write.body)
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


def check_body(backend: HttpBackend, body: str) -> None:
    size = len(body.encode())
    if size > backend.limits.body_bytes_max:
        raise ApiError(
            ErrorCode.TOO_LARGE,
            f"body of {size} bytes exceeds the limit of {backend.limits.body_bytes_max}",
        )


async def list_members(request: Request[Any, Any, Any], room: RoomParameter) -> MembersOut:
    backend = backend_of(request)
    user_of(backend, request)
    check_room(room)
    return MembersOut(room, await backend.chat.who(room))


async def status(request: Request[Any, Any, Any]) -> StatusOut:
    backend = backend_of(request)
    user_of(backend, request)
    reply = backend.status()
    return StatusOut(reply.node, reply.members, reply.counters)


async def health(request: Request[Any, Any, Any]) -> HealthOut:
    return HealthOut("ok", backend_of(request).node_id)


async def openapi(request: Request[Any, Any, Any]) -> dict[str, Any]:
    return with_links(request.app.openapi_schema.to_schema())


async def metrics(request: Request[Any, Any, Any]) -> Response[bytes]:
    return Response(backend_of(request).metrics.exposition(), media_type=CONTENT_TYPE)


# ---- the route table ----
# Made anew for each app: Litestar takes ownership of the handler objects it registers.


def _message_routes() -> list[HTTPRouteHandler]:
    listing = get(
        "/v1/rooms/{room:str}/messages",
        summary="A page of a room's messages, oldest first",
        description=(
            "Without a cursor: the newest page. `before` pages back in time, `after` forward."
            " A page holds `limit` messages, or fewer when more would take it over the node's"
            " frame_bytes_max; follow `prev` to the start."
        ),
        tags=["messages"],
        responses={**BAD_REQUEST, **UNAUTHORIZED, **NOT_FOUND},
    )
    posting = post(
        "/v1/rooms/{room:str}/messages",
        summary="Post a message",
        description=(
            "Stored on disk before the answer. With an `Idempotency-Key` (the TCP protocol's"
            " client message id), a retry by the same user returns the first message (200)"
            " instead of storing a second one."
        ),
        tags=["messages"],
        status_code=201,
        responses=POSTED,
    )
    # The edit, delete and reaction routes use this module's helpers: imported here, once
    # both modules are loaded, so neither needs the other at import time.
    from mesh.node.doors.http_events import event_routes  # noqa: PLC0415

    return [listing(list_messages), posting(post_message), *event_routes()]


def _room_routes() -> list[HTTPRouteHandler]:
    members = get(
        "/v1/rooms/{room:str}/members",
        summary="Who is online in a room",
        tags=["rooms"],
        responses={**BAD_REQUEST, **UNAUTHORIZED},
    )
    from mesh.node.doors.http_read_markers import read_marker_routes  # noqa: PLC0415

    return [*read_marker_routes(), members(list_members)]


def _operation_routes() -> list[HTTPRouteHandler]:
    mesh_status = get(
        "/v1/status",
        summary="The mesh as this node sees it",
        tags=["operations"],
        responses={**UNAUTHORIZED},
    )
    liveness = get(
        "/v1/health", summary="Liveness, for load balancers", tags=["operations"], security=[{}]
    )
    document = get(
        "/v1/openapi.json",
        summary="This document",
        tags=["operations"],
        security=[{}],
        media_type=MediaType.JSON,
    )
    exposition = get("/metrics", include_in_schema=False, media_type=CONTENT_TYPE)
    return [mesh_status(status), liveness(health), document(openapi), exposition(metrics)]


# ---- errors: every answer is {"error": {code, message, docs}} ----


def _answer_error(
    request: Request[Any, Any, Any],
    status_code: int,
    code: ErrorCode,
    message: str,
    *,
    headers: dict[str, str] | None = None,
    retry_after_s: float | None = None,
) -> Response[ErrorOut]:
    backend_of(request).errors_by_code[code.value] += 1  # counted like the TCP port's errors
    return _error_response(status_code, code, message, headers, retry_after_s)


def _handle_api_error(request: Request[Any, Any, Any], error: ApiError) -> Response[ErrorOut]:
    return _answer_error(
        request,
        _STATUS_OF_CODE[error.code],
        error.code,
        error.message,
        headers=error.headers,
        retry_after_s=error.retry_after_s,
    )


def _handle_http_error(request: Request[Any, Any, Any], error: HTTPException) -> Response[ErrorOut]:
    status_code = error.status_code
    code = _CODE_OF_STATUS.get(status_code, ErrorCode.INTERNAL)
    message = str(error.detail)
    if status_code == 404:
        # The scope's path, not request.url: that parses the Host header, which may be junk.
        version = re.match(r"^/v(\d+)(/|$)", request.scope.get("path", ""))
        if version is not None and version.group(1) != API_VERSION:
            code = ErrorCode.UNSUPPORTED_VERSION
            message = f"API version {version.group(1)} does not exist; this node serves v1"
    extra = getattr(error, "extra", None)
    if extra:
        message = f"{message}: {extra}"
    return _answer_error(request, status_code, code, message, headers=dict(error.headers or {}))


def _handle_unavailable(
    request: Request[Any, Any, Any], error: RoomUnavailableError
) -> Response[ErrorOut]:
    if error.code == ErrorCode.INTERNAL:
        return _answer_error(request, 500, ErrorCode.INTERNAL, str(error))
    if error.code in {ErrorCode.BAD_REQUEST, ErrorCode.CONFLICT}:
        return _answer_error(request, _STATUS_OF_CODE[error.code], error.code, str(error))
    wait_s = 1 if error.retry_after_s is None else max(1, math.ceil(error.retry_after_s))
    return _answer_error(
        request,
        503,
        ErrorCode.UNAVAILABLE,
        str(error),
        headers={"Retry-After": str(wait_s)},
        retry_after_s=error.retry_after_s,
    )


def _handle_too_deep(request: Request[Any, Any, Any], error: RecursionError) -> Response[ErrorOut]:
    # msgspec recurses once per nesting level of a JSON body, before any handler runs.
    del error
    return _answer_error(request, 400, ErrorCode.BAD_REQUEST, BODY_TOO_DEEP)


def _handle_crash(request: Request[Any, Any, Any], error: Exception) -> Response[ErrorOut]:
    # The app has no logging_config (the node configures logging), so not request.logger.
    log.exception("HTTP %s %s failed", request.method, request.scope.get("path", "?"))
    return _answer_error(
        request, 500, ErrorCode.INTERNAL, f"internal error: {type(error).__name__}"
    )


# ---- hooks around every request ----


def _check_host(request: Request[Any, Any, Any]) -> None:
    # Litestar parses the Host header into request.url when it reports a bad parameter;
    # a junk one (a port that is no number) must be a bad request, not a crash there.
    try:
        _ = request.url
    except ValueError as error:
        raise ApiError(ErrorCode.BAD_REQUEST, "the Host header is not HOST[:PORT]") from error


async def _correct_allow_header(message: Any, scope: Any) -> None:
    # Litestar answers OPTIONS with the methods of the first handler registered for a
    # path; these paths have two.
    if message["type"] != "http.response.start" or scope.get("method") != "OPTIONS":
        return
    path = scope.get("path", "")
    for pattern, methods in ALLOWED_METHODS:
        if pattern.match(path):
            headers = [(k, v) for k, v in message["headers"] if k.lower() != b"allow"]
            message["headers"] = [*headers, (b"allow", methods)]
            return


def _openapi_config() -> OpenAPIConfig:
    return OpenAPIConfig(
        title="meshchat HTTP API",
        version="1.0.0",
        description="Rooms, messages and node status over HTTP. See docs/api.md.",
        path="/v1/schema",
        render_plugins=[],
        enabled_endpoints={"openapi.json"},
        components=Components(
            security_schemes={
                "bearer": SecurityScheme(
                    type="http",
                    scheme="bearer",
                    description="the same tokens as the TCP protocol",
                ),
            }
        ),
        security=[{"bearer": []}],
    )


def build_app(backend: HttpBackend) -> Litestar:
    """The API of one node: its routes, error answers and hooks, serving `backend`."""
    return Litestar(
        before_request=_check_host,
        before_send=[_correct_allow_header],
        route_handlers=[*_message_routes(), *_room_routes(), *_operation_routes()],
        exception_handlers={
            ApiError: _handle_api_error,
            RoomUnavailableError: _handle_unavailable,
            HTTPException: _handle_http_error,
            RecursionError: _handle_too_deep,
            Exception: _handle_crash,
        },
        request_max_body_size=(
            backend.limits.body_bytes_max * ESCAPED_CHAR_BYTES_MAX + REQUEST_ENVELOPE_BYTES
        ),
        openapi_config=_openapi_config(),
        state=State({"backend": backend}),
        logging_config=None,
    )


class EmbeddedServer(uvicorn.Server):
    """uvicorn on the node's loop; the node owns the process's signals, not uvicorn."""

    def capture_signals(self) -> Any:
        return contextlib.nullcontext()


def bind_http_socket(host: str, port: int) -> socket.socket:
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((host, port))
    listener.listen(1024)
    listener.setblocking(False)
    return listener


async def serve_http(
    app: Litestar, listener: socket.socket, stop: asyncio.Event, tls: ssl.SSLContext | None = None
) -> None:
    """Serve until `stop` is set; with `tls`, on HTTPS with the node's own context."""
    server = EmbeddedServer(
        uvicorn.Config(
            app,
            log_config=None,
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=2,
            ssl_context_factory=None if tls is None else lambda config, default: tls,
        )
    )

    async def stop_when_asked() -> None:
        await stop.wait()
        server.should_exit = True

    watcher = asyncio.create_task(stop_when_asked())
    try:
        await server.serve(sockets=[listener])
    finally:
        watcher.cancel()
