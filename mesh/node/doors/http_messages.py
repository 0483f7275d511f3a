"""REST routes of a room's messages: pages of them, with links between pages, and
posting one (idempotent with `Idempotency-Key`)."""

from typing import Annotated, Any
from urllib.parse import quote

import msgspec
from litestar import Request, Response, get, post
from litestar.handlers import HTTPRouteHandler
from litestar.openapi import ResponseSpec
from litestar.openapi.spec import Example
from litestar.params import Parameter

from mesh.node.doors.chat import ChatService, shown_to_clients
from mesh.node.doors.http_common import (
    BAD_REQUEST,
    FORBIDDEN,
    NOT_FOUND,
    STORAGE,
    UNAUTHORIZED,
    ApiError,
    MessageOut,
    MessageText,
    RoomParameter,
    backend_of,
    check_cursor,
    check_room,
    error_spec,
    message_out,
    store_event,
    user_for,
)
from mesh.node.storage import StoredMessage
from mesh.wire.errors import ErrorCode
from mesh.wire.message_keys import new_client_msg_id
from mesh.wire.protocol import HISTORY_LIMIT_DEFAULT, HISTORY_LIMIT_MAX
from router.event_rules import MessageState
from router.message_ids import MESSAGE_ID_PATTERN
from router.page_bytes import cut_to_bytes
from router.writes import SendRequest


class MessagePage(msgspec.Struct, frozen=True):
    messages: list[MessageOut]
    prev: str | None  # the path of the page of older messages; null at the room's start
    next: str | None  # the path of the page of newer messages; null at the newest


class NewMessage(msgspec.Struct, frozen=True):
    body: MessageText
    # The id of the message this one answers.
    reply_to: Annotated[str, msgspec.Meta(pattern=MESSAGE_ID_PATTERN)] | None = None


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
    **FORBIDDEN,
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


def _page_path(room: str, limit: int, **cursor: str) -> str:
    query = "&".join(f"{name}={value}" for name, value in cursor.items())
    return f"/v1/rooms/{quote(room, safe='')}/messages?{query}&limit={limit}"


async def _links_paging_forward(
    chat: ChatService,
    room: str,
    reader: str,
    limit: int,
    page: list[StoredMessage],
    *,
    more: bool,
    before: str | None,
    after: str,
) -> tuple[str | None, str | None]:
    """`prev` and `next` of a page read forward from `after` (up to `before`, if given)."""
    older = page[0].id if page else after
    has_older = bool((await chat.history(room, reader, before=older, limit=1)).messages)
    prev = _page_path(room, limit, before=older) if has_older else None
    next_ = None
    if more:
        bound = {} if before is None else {"before": before}
        next_ = _page_path(room, limit, after=page[-1].id, **bound)
    return prev, next_


async def _links_paging_back(
    chat: ChatService,
    room: str,
    reader: str,
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
        if (await chat.history(room, reader, after=newer, limit=1)).messages:
            next_ = _page_path(room, limit, after=newer)
    return prev, next_


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
    user = user_for(backend, request, "read", room)
    check_room(room)
    check_cursor("before", before)
    check_cursor("after", after)
    chat = backend.chat
    bytes_max = max(1, backend.limits.frame_bytes_max - PAGE_ENVELOPE_BYTES)
    read = await chat.history(
        room, user, before=before, after=after, limit=limit, bytes_max=bytes_max
    )
    page, shown, cut = _fit_json(
        read.messages, bytes_max, forward=after is not None, relations=read.relations
    )
    more = read.more or cut
    if not page and before is None and after is None:
        raise ApiError(ErrorCode.NOT_FOUND, f"no messages in room {room!r}")
    if after is not None:
        prev, next_ = await _links_paging_forward(
            chat, room, user, limit, page, more=more, before=before, after=after
        )
    else:
        prev, next_ = await _links_paging_back(
            chat, room, user, limit, page, more=more, before=before
        )
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
    user = user_for(backend, request, "post", room)
    check_room(room)
    key = idempotency_key or new_client_msg_id()
    write = SendRequest(room, user, key, data.body, reply_to=data.reply_to)
    result = await store_event(backend, write)
    return Response(message_out(result.message), status_code=200 if result.duplicate else 201)


def message_routes() -> list[HTTPRouteHandler]:
    listing = get(
        "/v1/rooms/{room:str}/messages",
        summary="A page of a room's messages, oldest first",
        description=(
            "Without a cursor: the newest page. `before` pages back in time, `after` forward."
            " A page holds `limit` messages, or fewer when more would take it over the node's"
            " frame_bytes_max; follow `prev` to the start."
        ),
        tags=["messages"],
        responses={**BAD_REQUEST, **UNAUTHORIZED, **FORBIDDEN, **NOT_FOUND},
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
    return [listing(list_messages), posting(post_message)]
