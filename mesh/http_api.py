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
import math
import re
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import quote

import msgspec
import uvicorn
from litestar import Litestar, MediaType, Request, Response, get, post
from litestar.exceptions import HTTPException
from litestar.openapi import OpenAPIConfig, ResponseSpec
from litestar.openapi.spec import Components, Example, SecurityScheme
from litestar.params import Parameter

from mesh.auth import Authenticator, AuthError
from mesh.chat import ChatService
from mesh.config import ClientLimits
from mesh.errors import ErrorCode
from mesh.metrics import CONTENT_TYPE, NodeMetrics
from mesh.protocol import HISTORY_LIMIT_DEFAULT, HISTORY_LIMIT_MAX, MemberStatus, StatusReply
from mesh.rate_limit import TokenBucket
from mesh.room_router import RoomUnavailableError
from mesh.storage import StorageError, StoredMessage
from router.message_ids import MESSAGE_ID_PATTERN

API_VERSION = "1"
ROOM_PATTERN = re.compile(r"^[A-Za-z0-9_.#-]{1,64}$")
MESSAGES_PATH = re.compile(r"^/v1/rooms/[^/]+/messages/?$")
MESSAGE_ID = re.compile(MESSAGE_ID_PATTERN)
# Users whose send rates are tracked at once; the least recent is forgotten first.
RATE_BUCKETS_MAX = 10_000
DOCS = "docs/api.md#errors"

_STATUS_OF_CODE = {
    ErrorCode.BAD_REQUEST: 400,
    ErrorCode.UNAUTHORIZED: 401,
    ErrorCode.FORBIDDEN: 403,
    ErrorCode.NOT_FOUND: 404,
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
    413: ErrorCode.TOO_LARGE,
    429: ErrorCode.RATE_LIMITED,
    503: ErrorCode.UNAVAILABLE,
}


# ---- schemas ----


class MessageOut(msgspec.Struct, frozen=True):
    id: str
    room: str
    sender: str
    time: str  # ISO 8601, UTC, milliseconds
    body: str


class MessagePage(msgspec.Struct, frozen=True):
    messages: list[MessageOut]
    prev: str | None  # the path of the page of older messages; null at the room's start
    next: str | None  # the path of the page of newer messages; null at the newest


class NewMessage(msgspec.Struct, frozen=True):
    body: str


class RoomsOut(msgspec.Struct, frozen=True):
    rooms: list[str]


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


class ErrorDetail(msgspec.Struct, frozen=True):
    code: str
    message: str
    docs: str


class ErrorOut(msgspec.Struct, frozen=True):
    error: ErrorDetail


class ApiError(Exception):
    def __init__(
        self, code: ErrorCode, message: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.headers = headers or {}


def _error_response(
    status: int, code: ErrorCode, message: str, headers: dict[str, str] | None = None
) -> Response[ErrorOut]:
    return Response(
        ErrorOut(ErrorDetail(code.value, message, DOCS)),
        status_code=status,
        headers=headers,
        media_type=MediaType.JSON,
    )


def _error_spec(description: str, code: ErrorCode, message: str) -> ResponseSpec:
    example = ErrorOut(ErrorDetail(code.value, message, DOCS))
    return ResponseSpec(
        ErrorOut,
        description=description,
        examples=[Example(summary=code.value, value=msgspec.to_builtins(example))],
    )


UNAUTHORIZED = {
    401: _error_spec(
        "No token, or a bad or expired one.", ErrorCode.UNAUTHORIZED, "a token is required"
    )
}
BAD_REQUEST = {
    400: _error_spec("The request is not valid.", ErrorCode.BAD_REQUEST, "not a room name: '!'")
}
NOT_FOUND = {404: _error_spec("No such room.", ErrorCode.NOT_FOUND, "no messages in room 'x'")}
STORAGE = {
    503: _error_spec(
        "The write could not be made durable now; retry after Retry-After.",
        ErrorCode.UNAVAILABLE,
        "20000 writes are waiting",
    ),
    500: _error_spec(
        "The node failed to store the message.",
        ErrorCode.INTERNAL,
        "storage failed: disk I/O error",
    ),
}


def _message_out(message: StoredMessage) -> MessageOut:
    moment = datetime.datetime.fromtimestamp(message.time_ms / 1000, tz=datetime.UTC)
    stamp = moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return MessageOut(message.id, message.room, message.sender, stamp, message.body)


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


@dataclass
class HttpBackend:
    node_id: str
    chat: ChatService
    authenticator: Authenticator
    limits: ClientLimits
    status: Callable[[], StatusReply]
    metrics: NodeMetrics


def build_app(backend: HttpBackend) -> Litestar:
    buckets: collections.OrderedDict[str, TokenBucket] = collections.OrderedDict()
    history = backend.chat.history

    def user_of(request: Request[Any, Any, Any]) -> str:
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
        if not ROOM_PATTERN.match(room):
            raise ApiError(
                ErrorCode.BAD_REQUEST,
                f"not a room name: {room[:80]!r} (1-64 of A-Z a-z 0-9 _ . # -)",
            )

    def check_cursor(name: str, value: str | None) -> None:
        if value is not None and not MESSAGE_ID.match(value):
            raise ApiError(ErrorCode.BAD_REQUEST, f"{name} is not a message id: {value[:80]!r}")

    def take_send_token(user: str) -> None:
        bucket = buckets.get(user)
        if bucket is None:
            bucket = buckets[user] = TokenBucket(
                backend.limits.sends_per_s, backend.limits.send_burst
            )
            while len(buckets) > RATE_BUCKETS_MAX:
                buckets.popitem(last=False)
        buckets.move_to_end(user)
        wait_s = bucket.take(time.monotonic())
        if wait_s > 0:
            raise ApiError(
                ErrorCode.RATE_LIMITED,
                f"more than {backend.limits.sends_per_s:g} sends per second",
                {"Retry-After": str(max(1, math.ceil(wait_s)))},
            )

    def page_path(room: str, limit: int, **cursor: str) -> str:
        query = "&".join(f"{name}={value}" for name, value in cursor.items())
        return f"/v1/rooms/{quote(room, safe='')}/messages?{query}&limit={limit}"

    @get(
        "/v1/rooms/{room:str}/messages",
        summary="A page of a room's messages, oldest first",
        description=(
            "Without a cursor: the newest page. `before` pages back in time, `after` forward."
            " A page is never short while more messages exist. Follow `prev` to the start."
        ),
        tags=["messages"],
        responses={**BAD_REQUEST, **UNAUTHORIZED, **NOT_FOUND},
    )
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
        user_of(request)
        check_room(room)
        check_cursor("before", before)
        check_cursor("after", after)
        page, more = await history(room, before=before, after=after, limit=limit)
        if not page and before is None and after is None:
            raise ApiError(ErrorCode.NOT_FOUND, f"no messages in room {room!r}")
        if after is not None:
            older = page[0].id if page else after
            has_older = bool((await history(room, before=older, limit=1))[0])
            prev = page_path(room, limit, before=older) if has_older else None
            next_ = None
            if more:
                bound = {} if before is None else {"before": before}
                next_ = page_path(room, limit, after=page[-1].id, **bound)
        else:
            prev = page_path(room, limit, before=page[0].id) if more and page else None
            next_ = None
            if before is not None:
                newer = page[-1].id if page else before
                if (await history(room, after=newer, limit=1))[0]:
                    next_ = page_path(room, limit, after=newer)
        return MessagePage([_message_out(m) for m in page], prev, next_)

    @post(
        "/v1/rooms/{room:str}/messages",
        summary="Post a message",
        description=(
            "Stored on disk before the answer. With an `Idempotency-Key` (the TCP protocol's"
            " client message id), a retry by the same user returns the first message (200)"
            " instead of storing a second one."
        ),
        tags=["messages"],
        status_code=201,
        responses={
            200: ResponseSpec(
                MessageOut,
                description="A retry: the message stored the first time.",
                examples=[Example(value=msgspec.to_builtins(MESSAGE_EXAMPLE))],
            ),
            **BAD_REQUEST,
            **UNAUTHORIZED,
            413: _error_spec(
                "The body is over the limit.",
                ErrorCode.TOO_LARGE,
                "body of 20000 bytes exceeds the limit of 16384",
            ),
            429: _error_spec(
                "Too many sends; retry after Retry-After seconds.",
                ErrorCode.RATE_LIMITED,
                "more than 100 sends per second",
            ),
            **STORAGE,
        },
    )
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
        user = user_of(request)
        check_room(room)
        size = len(data.body.encode())
        if size > backend.limits.body_bytes_max:
            raise ApiError(
                ErrorCode.TOO_LARGE,
                f"body of {size} bytes exceeds the limit of {backend.limits.body_bytes_max}",
            )
        take_send_token(user)
        started = time.perf_counter()
        try:
            result = await backend.chat.send(
                user, room, idempotency_key or uuid.uuid4().hex, data.body
            )
        except StorageError as error:
            raise ApiError(ErrorCode.INTERNAL, f"storage failed: {error}") from error
        backend.metrics.observe_ack(time.perf_counter() - started)
        return Response(_message_out(result.message), status_code=200 if result.duplicate else 201)

    @get("/v1/rooms", summary="The caller's rooms", tags=["rooms"], responses={**UNAUTHORIZED})
    async def list_rooms(request: Request[Any, Any, Any]) -> RoomsOut:
        return RoomsOut(await backend.chat.router.rooms_of(user_of(request)))

    @get(
        "/v1/rooms/{room:str}/members",
        summary="Who is online in a room",
        tags=["rooms"],
        responses={**BAD_REQUEST, **UNAUTHORIZED},
    )
    async def list_members(request: Request[Any, Any, Any], room: RoomParameter) -> MembersOut:
        user_of(request)
        check_room(room)
        return MembersOut(room, await backend.chat.who(room))

    @get(
        "/v1/status",
        summary="The mesh as this node sees it",
        tags=["operations"],
        responses={**UNAUTHORIZED},
    )
    async def status(request: Request[Any, Any, Any]) -> StatusOut:
        user_of(request)
        reply = backend.status()
        return StatusOut(reply.node, reply.members, reply.counters)

    @get("/v1/health", summary="Liveness, for load balancers", tags=["operations"], security=[{}])
    async def health() -> HealthOut:
        return HealthOut("ok", backend.node_id)

    @get(
        "/v1/openapi.json",
        summary="This document",
        tags=["operations"],
        security=[{}],
        media_type=MediaType.JSON,
    )
    async def openapi(request: Request[Any, Any, Any]) -> dict[str, Any]:
        return with_links(request.app.openapi_schema.to_schema())

    @get("/metrics", include_in_schema=False, media_type=CONTENT_TYPE)
    async def metrics() -> Response[bytes]:
        return Response(backend.metrics.exposition(), media_type=CONTENT_TYPE)

    def handle_api_error(request: Request[Any, Any, Any], error: ApiError) -> Response[ErrorOut]:
        del request
        return _error_response(
            _STATUS_OF_CODE[error.code], error.code, error.message, error.headers
        )

    def handle_http_error(
        request: Request[Any, Any, Any], error: HTTPException
    ) -> Response[ErrorOut]:
        status_code = error.status_code
        code = _CODE_OF_STATUS.get(status_code, ErrorCode.INTERNAL)
        message = str(error.detail)
        if status_code == 404:
            version = re.match(r"^/v(\d+)(/|$)", request.url.path)
            if version is not None and version.group(1) != API_VERSION:
                code = ErrorCode.UNSUPPORTED_VERSION
                message = f"API version {version.group(1)} does not exist; this node serves v1"
        extra = getattr(error, "extra", None)
        if extra:
            message = f"{message}: {extra}"
        return _error_response(status_code, code, message, dict(error.headers or {}))

    def handle_unavailable(
        request: Request[Any, Any, Any], error: RoomUnavailableError
    ) -> Response[ErrorOut]:
        del request
        if error.code == ErrorCode.INTERNAL:
            return _error_response(500, ErrorCode.INTERNAL, str(error))
        return _error_response(503, ErrorCode.UNAVAILABLE, str(error), {"Retry-After": "1"})

    def handle_crash(request: Request[Any, Any, Any], error: Exception) -> Response[ErrorOut]:
        request.logger.exception("HTTP %s %s failed", request.method, request.url.path)
        return _error_response(500, ErrorCode.INTERNAL, f"internal error: {type(error).__name__}")

    async def correct_allow_header(message: Any, scope: Any) -> None:
        # Litestar answers OPTIONS with the methods of the first handler registered for a
        # path; the messages path has GET and POST.
        if (
            message["type"] == "http.response.start"
            and scope.get("method") == "OPTIONS"
            and MESSAGES_PATH.match(scope.get("path", ""))
        ):
            headers = [(k, v) for k, v in message["headers"] if k.lower() != b"allow"]
            message["headers"] = [*headers, (b"allow", b"GET, OPTIONS, POST")]

    return Litestar(
        before_send=[correct_allow_header],
        route_handlers=[
            list_messages,
            post_message,
            list_rooms,
            list_members,
            status,
            health,
            openapi,
            metrics,
        ],
        exception_handlers={
            ApiError: handle_api_error,
            RoomUnavailableError: handle_unavailable,
            HTTPException: handle_http_error,
            Exception: handle_crash,
        },
        request_max_body_size=backend.limits.body_bytes_max * 6 + 4096,
        openapi_config=OpenAPIConfig(
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
        ),
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


async def serve_http(app: Litestar, listener: socket.socket, stop: asyncio.Event) -> None:
    server = EmbeddedServer(
        uvicorn.Config(
            app, log_config=None, access_log=False, lifespan="off", timeout_graceful_shutdown=2
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
