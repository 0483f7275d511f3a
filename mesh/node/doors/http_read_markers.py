"""REST routes for what a user has read: the rooms with their unread counts, and the
read marker of a room (mesh/node/doors/read_markers.py has the rules)."""

from typing import Annotated, Any

import msgspec
from litestar import Request, get, put
from litestar.handlers import HTTPRouteHandler

from mesh.node.doors.http_common import (
    BAD_REQUEST,
    FORBIDDEN,
    UNAUTHORIZED,
    ApiError,
    RoomParameter,
    backend_of,
    check_room,
    error_spec,
    scoped_principal,
    take_send_token,
    user_for,
)
from mesh.node.doors.read_markers import ReadMarkers, Unread
from mesh.wire.errors import ErrorCode, ProtocolError
from router.message_ids import MESSAGE_ID_PATTERN

# Counting reads rooms' logs: it is paced as sends are.
COUNTING_RATE = {
    429: error_spec(
        "Too many requests; retry after Retry-After seconds.",
        ErrorCode.RATE_LIMITED,
        "more than 100 sends per second by one user on this node",
    )
}


class UnreadOut(msgspec.Struct, frozen=True):
    # The last message the user has read; null until the user first joined the room.
    read_up_to: str | None
    count: int  # messages after it that others sent, not deleted; at most 1000
    capped: bool  # there are more than `count` ("1000+")


class RoomsOut(msgspec.Struct, frozen=True):
    rooms: list[str]
    # room -> its unread count; null for a room whose replicas could not be read now.
    unread: dict[str, UnreadOut | None]


class ReadMarkerIn(msgspec.Struct, frozen=True):
    # The last message read; null or absent: the room's newest message.
    up_to: Annotated[str, msgspec.Meta(pattern=MESSAGE_ID_PATTERN)] | None = None


class ReadMarkerOut(msgspec.Struct, frozen=True):
    room: str
    read_up_to: str | None
    count: int
    capped: bool


def _out(unread: Unread) -> UnreadOut:
    return UnreadOut(unread.read_up_to, unread.count, unread.capped)


async def list_rooms(request: Request[Any, Any, Any]) -> RoomsOut:
    backend = backend_of(request)
    caller = scoped_principal(backend, request, "read")
    take_send_token(backend, caller.user)  # counting reads the rooms' logs
    markers = ReadMarkers(backend.chat)
    rooms, counts = await markers.listing(caller.user, caller.scope)
    return RoomsOut(rooms, {room: None if got is None else _out(got) for room, got in counts})


async def set_read_marker(
    request: Request[Any, Any, Any], room: RoomParameter, data: ReadMarkerIn
) -> ReadMarkerOut:
    backend = backend_of(request)
    user = user_for(backend, request, "read", room)
    check_room(room)
    take_send_token(backend, user)  # counting reads the room's log
    markers = ReadMarkers(backend.chat)
    try:
        unread, moved = await markers.mark(user, room, data.up_to)
    except ProtocolError as error:
        raise ApiError(error.code, error.message) from error
    if moved:
        markers.tell_sessions(user, unread)
    return ReadMarkerOut(room, unread.read_up_to, unread.count, unread.capped)


def read_marker_routes() -> list[HTTPRouteHandler]:
    rooms = get(
        "/v1/rooms",
        summary="The caller's rooms, with unread counts",
        tags=["rooms"],
        responses={**UNAUTHORIZED, **FORBIDDEN, **COUNTING_RATE},
    )
    marker = put(
        "/v1/rooms/{room:str}/read-marker",
        summary="Mark a room read up to a message",
        description=(
            "Up to `up_to`, a message of the room, or without it the room's newest. A marker"
            " never moves back: marking an older message changes nothing. Every node and"
            " every session of the user sees the new count."
        ),
        tags=["rooms"],
        responses={
            **BAD_REQUEST,
            **UNAUTHORIZED,
            **FORBIDDEN,
            **COUNTING_RATE,
            404: error_spec(
                "No such message in the room.",
                ErrorCode.NOT_FOUND,
                "no message 0193a1b2c3d40000.n1 in room lobby",
            ),
        },
    )
    return [rooms(list_rooms), marker(set_read_marker)]
