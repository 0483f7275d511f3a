"""REST routes for rooms' state: create a room, show it, and change its policy, topic,
roles, invitations and bans (mesh/node/doors/room_admin.py; the rules in
router/room_state.py). Each change answers with the room's state after it."""

from typing import Annotated, Any

import msgspec
from litestar import Request, Response, delete, get, post, put
from litestar.handlers import HTTPRouteHandler
from litestar.params import Parameter

from mesh.node.doors.http_common import (
    BAD_REQUEST,
    FORBIDDEN,
    UNAUTHORIZED,
    ApiError,
    RoomParameter,
    backend_of,
    check_room,
    error_spec,
    take_send_token,
    user_for,
)
from mesh.node.doors.room_admin import RoomAdmin, change_request
from mesh.wire.errors import ErrorCode
from mesh.wire.names import (
    ROOM_NAME_LENGTH_MAX,
    ROOM_NAME_PATTERN,
    USER_NAME_LENGTH_MAX,
    USER_NAME_PATTERN,
    is_user_name,
)
from mesh.wire.protocol import TOPIC_LENGTH_MAX, RoomPolicy, RoomRole
from router.room_state import RoomState

UserParameter = Annotated[
    str,
    Parameter(
        min_length=1,
        max_length=USER_NAME_LENGTH_MAX,
        pattern=USER_NAME_PATTERN,
        description="a user name",
    ),
]
IdempotencyKey = Annotated[
    str | None,
    Parameter(
        header="Idempotency-Key",
        min_length=1,
        max_length=64,
        description="names the change: a retry with it changes the room once",
    ),
]
UserName = Annotated[
    str, msgspec.Meta(min_length=1, max_length=USER_NAME_LENGTH_MAX, pattern=USER_NAME_PATTERN)
]
RoomName = Annotated[
    str, msgspec.Meta(min_length=1, max_length=ROOM_NAME_LENGTH_MAX, pattern=ROOM_NAME_PATTERN)
]

CONFLICT = {
    409: error_spec(
        "The room exists already: it was created, or written in.",
        ErrorCode.CONFLICT,
        "room club exists already",
    )
}
RATE = {
    429: error_spec(
        "Too many changes; retry after Retry-After seconds.",
        ErrorCode.RATE_LIMITED,
        "more than 100 sends per second by one user on this node",
    )
}


class RoomOut(msgspec.Struct, frozen=True, omit_defaults=True):
    room: str
    created_by: str | None  # null for a room nobody created: open and unowned
    policy: RoomPolicy
    topic: str
    roles: dict[str, RoomRole]
    invited: list[str]
    banned: list[str]
    changed: str | None = None  # the id of the state event a change stored


class RoomIn(msgspec.Struct, frozen=True):
    room: RoomName
    policy: RoomPolicy = "open"
    topic: Annotated[str, msgspec.Meta(max_length=TOPIC_LENGTH_MAX)] = ""


class PolicyIn(msgspec.Struct, frozen=True):
    policy: RoomPolicy


class TopicIn(msgspec.Struct, frozen=True):
    topic: Annotated[str, msgspec.Meta(max_length=TOPIC_LENGTH_MAX)]


class RoleIn(msgspec.Struct, frozen=True):
    role: RoomRole


class UserIn(msgspec.Struct, frozen=True):
    user: UserName


def room_out(state: RoomState, changed: str | None = None) -> RoomOut:
    view = state.view()
    return RoomOut(
        view.room,
        view.created_by,
        view.policy,
        view.topic,
        view.roles,
        view.invited,
        view.banned,
        changed,
    )


async def _change(
    request: Request[Any, Any, Any],
    room: str,
    op: str,
    *,
    subject: str | None = None,
    value: str = "",
    key: str | None = None,
) -> RoomOut:
    backend = backend_of(request)
    user = user_for(backend, request, "moderate", room)
    check_room(room)
    if subject is not None and not is_user_name(subject):
        raise ApiError(ErrorCode.BAD_REQUEST, f"not a user name: {subject[:80]!r}")
    take_send_token(backend, user)  # a change is a write of the room's log
    change = change_request(user, room, op, subject=subject, value=value, client_msg_id=key)
    stored, state = await RoomAdmin(backend.chat).change(change)
    return room_out(state, stored.id)


async def create_room(
    request: Request[Any, Any, Any], data: RoomIn, idempotency_key: IdempotencyKey = None
) -> Response[RoomOut]:
    created = await _change(request, data.room, "create", value=data.policy, key=idempotency_key)
    if data.topic:
        created = await _change(request, data.room, "set_topic", value=data.topic)
    return Response(created, status_code=201)


async def show_room(request: Request[Any, Any, Any], room: RoomParameter) -> RoomOut:
    backend = backend_of(request)
    user = user_for(backend, request, "read", room)
    check_room(room)
    return room_out(await RoomAdmin(backend.chat).show(user, room))


async def set_policy(
    request: Request[Any, Any, Any], room: RoomParameter, data: PolicyIn
) -> RoomOut:
    return await _change(request, room, "set_policy", value=data.policy)


async def set_topic(request: Request[Any, Any, Any], room: RoomParameter, data: TopicIn) -> RoomOut:
    return await _change(request, room, "set_topic", value=data.topic)


async def set_role(
    request: Request[Any, Any, Any], room: RoomParameter, user: UserParameter, data: RoleIn
) -> RoomOut:
    return await _change(request, room, "set_role", subject=user, value=data.role)


async def invite(request: Request[Any, Any, Any], room: RoomParameter, data: UserIn) -> RoomOut:
    return await _change(request, room, "invite", subject=data.user)


async def kick(request: Request[Any, Any, Any], room: RoomParameter, data: UserIn) -> RoomOut:
    return await _change(request, room, "kick", subject=data.user)


async def ban(request: Request[Any, Any, Any], room: RoomParameter, user: UserParameter) -> RoomOut:
    return await _change(request, room, "ban", subject=user)


async def unban(
    request: Request[Any, Any, Any], room: RoomParameter, user: UserParameter
) -> RoomOut:
    return await _change(request, room, "unban", subject=user)


def room_state_routes() -> list[HTTPRouteHandler]:
    changing = {**BAD_REQUEST, **UNAUTHORIZED, **FORBIDDEN, **RATE}
    tags = ["room state"]
    base = "/v1/rooms/{room:str}"
    routes = [
        post(
            "/v1/rooms",
            summary="Create a room; the caller owns it",
            description="Only a room nobody has written in can be created.",
            tags=tags,
            responses={**changing, **CONFLICT},
        )(create_room),
        get(
            base,
            summary="A room's policy, topic, roles, invitations and bans",
            tags=tags,
            responses={**BAD_REQUEST, **UNAUTHORIZED, **FORBIDDEN},
        )(show_room),
        put(f"{base}/policy", summary="Set who may join and post", tags=tags, responses=changing)(
            set_policy
        ),
        put(f"{base}/topic", summary="Set the topic", tags=tags, responses=changing)(set_topic),
        put(
            f"{base}/roles/{{user:str}}",
            summary="Give a user a role",
            tags=tags,
            responses=changing,
        )(set_role),
        post(
            f"{base}/invites",
            summary="Invite a user",
            tags=tags,
            responses=changing,
            status_code=200,
        )(invite),
        post(
            f"{base}/kicks",
            summary="Take a user out of the room",
            description="In an invite-only room the user needs a new invitation to come back.",
            tags=tags,
            responses=changing,
            status_code=200,
        )(kick),
        put(
            f"{base}/bans/{{user:str}}",
            summary="Ban a user",
            description="What the user writes while banned is hidden from every reader.",
            tags=tags,
            responses=changing,
        )(ban),
        delete(
            f"{base}/bans/{{user:str}}",
            summary="Lift a user's ban",
            tags=tags,
            responses=changing,
            status_code=200,
        )(unban),
    ]
    return routes
