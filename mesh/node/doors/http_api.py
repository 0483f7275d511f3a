"""The HTTP API v1: REST over the same rooms, tokens, limits and error codes as the TCP protocol.

Litestar, because it is built on msgspec (our schemas serve as its request and response
models, with no second validation layer) and derives a complete OpenAPI document from the
handlers; uvicorn serves it on the node's own event loop. docs/api.md describes the
conventions: versioned paths, `{"error": {code, message, docs}}`, cursor pagination, and
`Idempotency-Key` on creates.

This module builds the app (its route table, error answers and hooks) and serves it; the
routes live in http_messages.py, http_events.py and http_read_markers.py, and what they
share in http_common.py.
"""

import asyncio
import contextlib
import logging
import math
import re
import socket
import ssl
from typing import Any

import msgspec
import uvicorn
from litestar import Litestar, MediaType, Request, Response, get
from litestar.datastructures import State
from litestar.exceptions import HTTPException
from litestar.handlers import HTTPRouteHandler
from litestar.openapi import OpenAPIConfig
from litestar.openapi.spec import Components, SecurityScheme

from mesh.node.doors.error_docs import ERRORS_DOCS_PATH, docs_link, errors_page
from mesh.node.doors.http_common import (
    BAD_REQUEST,
    FORBIDDEN,
    UNAUTHORIZED,
    ApiError,
    ErrorDetail,
    ErrorOut,
    HttpBackend,
    RoomParameter,
    backend_of,
    check_room,
    user_for,
    user_of,
)
from mesh.node.doors.http_events import event_routes
from mesh.node.doors.http_messages import message_routes, with_links
from mesh.node.doors.http_node import node_routes
from mesh.node.doors.http_read_markers import read_marker_routes
from mesh.node.doors.http_room_state import room_state_routes
from mesh.node.metrics import CONTENT_TYPE
from mesh.node.room_requests import FINAL_CODES, RoomUnavailableError
from mesh.wire.errors import ErrorCode
from mesh.wire.protocol import MemberStatus
from mesh.wire.validation_words import in_words

API_VERSION = "1"

# Paths with several handlers, and every method they answer (for OPTIONS).
ALLOWED_METHODS = (
    (re.compile(r"^/v1/rooms/?$"), b"GET, OPTIONS, POST"),
    (re.compile(r"^/v1/rooms/[^/]+/bans/[^/]+/?$"), b"DELETE, OPTIONS, PUT"),
    (re.compile(r"^/v1/rooms/[^/]+/messages/?$"), b"GET, OPTIONS, POST"),
    (re.compile(r"^/v1/rooms/[^/]+/messages/[^/]+/?$"), b"DELETE, GET, OPTIONS, PATCH"),
    (re.compile(r"^/v1/rooms/[^/]+/messages/[^/]+/reactions/[^/]+/?$"), b"DELETE, OPTIONS, PUT"),
)

BODY_TOO_DEEP = "the body is nested too deeply"
# An answer's list of validation problems is cut to a few: they may quote what was sent.
PROBLEMS_SHOWN_MAX = 5
PROBLEM_TEXT_MAX = 200

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


def _error_response(
    docs_url: str,
    status: int,
    code: ErrorCode,
    message: str,
    *,
    headers: dict[str, str] | None = None,
    retry_after_s: float | None = None,
) -> Response[ErrorOut]:
    return Response(
        ErrorOut(ErrorDetail(code.value, message, docs_link(docs_url, code), retry_after_s)),
        status_code=status,
        headers=headers,
        media_type=MediaType.JSON,
    )


async def list_members(request: Request[Any, Any, Any], room: RoomParameter) -> MembersOut:
    backend = backend_of(request)
    user = user_for(backend, request, "read", room)
    check_room(room)
    return MembersOut(room, await backend.chat.who(room, user))


async def status(request: Request[Any, Any, Any]) -> StatusOut:
    backend = backend_of(request)
    user_of(backend, request)
    reply = backend.status()
    return StatusOut(reply.node, reply.members, reply.counters)


async def health(request: Request[Any, Any, Any]) -> HealthOut:
    return HealthOut("ok", backend_of(request).node_id)


async def openapi(request: Request[Any, Any, Any]) -> dict[str, Any]:
    return with_links(request.app.openapi_schema.to_schema())


async def error_codes_page() -> Response[str]:
    return Response(errors_page(), media_type=MediaType.HTML)


async def metrics(request: Request[Any, Any, Any]) -> Response[bytes]:
    return Response(backend_of(request).metrics.exposition(), media_type=CONTENT_TYPE)


def _room_routes() -> list[HTTPRouteHandler]:
    members = get(
        "/v1/rooms/{room:str}/members",
        summary="Who is online in a room",
        tags=["rooms"],
        responses={**BAD_REQUEST, **UNAUTHORIZED, **FORBIDDEN},
    )
    return [*read_marker_routes(), *room_state_routes(), members(list_members)]


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
    error_codes = get(
        ERRORS_DOCS_PATH,
        summary="Every error code: what it means and what to do (HTML)",
        tags=["operations"],
        security=[{}],
        media_type=MediaType.HTML,
    )
    exposition = get("/metrics", include_in_schema=False, media_type=CONTENT_TYPE)
    return [
        mesh_status(status),
        liveness(health),
        document(openapi),
        error_codes(error_codes_page),
        exposition(metrics),
    ]


def _answer_error(
    request: Request[Any, Any, Any],
    status_code: int,
    code: ErrorCode,
    message: str,
    *,
    headers: dict[str, str] | None = None,
    retry_after_s: float | None = None,
) -> Response[ErrorOut]:
    backend = backend_of(request)
    backend.errors_by_code[code.value] += 1  # counted like the TCP port's errors
    return _error_response(
        backend.errors_docs_url,
        status_code,
        code,
        message,
        headers=headers,
        retry_after_s=retry_after_s,
    )


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
        message = f"{message}: {_problems_in_words(extra)}"
    return _answer_error(request, status_code, code, message, headers=dict(error.headers or {}))


def _problems_in_words(extra: object) -> str:
    """Litestar's list of validation problems ({key, message, source}) as sentences."""
    if not isinstance(extra, list):
        return str(extra)[:PROBLEM_TEXT_MAX]
    sentences = []
    for problem in extra[:PROBLEMS_SHOWN_MAX]:
        if isinstance(problem, dict):
            key = problem.get("key")
            text = str(problem.get("message", ""))
            sentences.append(in_words(text, field=str(key) if key else None))
    return "; ".join(sentences)


def _handle_unavailable(
    request: Request[Any, Any, Any], error: RoomUnavailableError
) -> Response[ErrorOut]:
    if error.code == ErrorCode.INTERNAL:
        return _answer_error(request, 500, ErrorCode.INTERNAL, str(error))
    if error.code in FINAL_CODES:
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
        route_handlers=[
            *message_routes(),
            *event_routes(),
            *_room_routes(),
            *_operation_routes(),
            *node_routes(),
        ],
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
