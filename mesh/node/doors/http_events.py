"""REST routes that change a message already posted: edit, delete, react.

Each is a relation in the room's log (docs/events.md), stored as a send is and answered
once W replicas hold it. All are idempotent in effect: a repeated edit leaves the same
body, a repeated delete or reaction changes nothing more; an `Idempotency-Key` also makes
a retry the same event.
"""

from typing import Annotated, Any

import msgspec
from litestar import Request, delete, get, patch, put
from litestar.handlers import HTTPRouteHandler
from litestar.params import Parameter

from mesh.node.doors.http_common import (
    BAD_REQUEST,
    FORBIDDEN,
    UNAUTHORIZED,
    ApiError,
    MessageOut,
    MessageText,
    RoomParameter,
    backend_of,
    check_body,
    check_room,
    error_spec,
    message_out,
    store_event,
    take_send_token,
    user_for,
)
from mesh.node.doors.relations import RelationRefusedError, checked_target
from mesh.wire.errors import ErrorCode
from mesh.wire.message_keys import new_client_msg_id
from mesh.wire.protocol import REACTION_KEY_LENGTH_MAX, REACTION_KEY_PATTERN
from router.event_rules import relate
from router.message_ids import MESSAGE_ID_PATTERN
from router.records import EventKind
from router.writes import SendRequest

MessageIdParameter = Annotated[
    str, Parameter(pattern=MESSAGE_ID_PATTERN, description="the message's id")
]
ReactionKeyParameter = Annotated[
    str,
    Parameter(
        min_length=1,
        max_length=REACTION_KEY_LENGTH_MAX,
        pattern=REACTION_KEY_PATTERN,
        description="the reaction: an emoji, +1, ... (at most 16 characters)",
    ),
]
IdempotencyKey = Annotated[
    str | None,
    Parameter(
        header="Idempotency-Key",
        min_length=1,
        max_length=64,
        description="the client message id; retries with it are the same event",
    ),
]

REFUSED = {
    403: error_spec(
        "Only the message's sender may edit or delete it; or the room's state or the"
        " caller's token does not let the caller post.",
        ErrorCode.FORBIDDEN,
        "only ann, who sent it, may edit it",
    ),
    404: error_spec(
        "No such message, or it was deleted.",
        ErrorCode.NOT_FOUND,
        "no message 0193a1b2c3d40000.n1 in lobby",
    ),
    409: error_spec(
        "The Idempotency-Key names another event of this user.",
        ErrorCode.CONFLICT,
        "client_msg_id k1 already names another event",
    ),
}


class MessageEdit(msgspec.Struct, frozen=True):
    body: MessageText


async def _relate(
    request: Request[Any, Any, Any],
    room: str,
    message_id: str,
    kind: EventKind,
    *,
    body: str = "",
    key: str | None = None,
    idempotency_key: str | None = None,
) -> MessageOut:
    """Store the relation and answer with the target's view after it."""
    backend = backend_of(request)
    user = user_for(backend, request, "post", room)
    check_room(room)
    client_msg_id = idempotency_key or new_client_msg_id()
    write = SendRequest(room, user, client_msg_id, body, kind, message_id, reaction_key=key)
    check_body(backend, body, kind)
    take_send_token(backend, user)  # before the read: a refused edit counts too
    try:
        target = await checked_target(backend.chat, write)
    except RelationRefusedError as error:
        raise ApiError(error.code, error.message) from error
    stored = await store_event(backend, write, token_taken=True)
    assert target.event is not None
    return message_out(target.event, relate(target, stored.message).state)


async def get_message(
    request: Request[Any, Any, Any], room: RoomParameter, message_id: MessageIdParameter
) -> MessageOut:
    backend = backend_of(request)
    user = user_for(backend, request, "read", room)
    check_room(room)
    target = await backend.chat.find(room, message_id, user)
    if target is None or target.event is None or target.event.kind != "message":
        raise ApiError(ErrorCode.NOT_FOUND, f"no message {message_id} in {room}")
    if target.tombstone is not None:
        raise ApiError(
            ErrorCode.NOT_FOUND, f"message {message_id} was deleted by {target.tombstone.by}"
        )
    return message_out(target.event, target)


async def edit_message(
    request: Request[Any, Any, Any],
    room: RoomParameter,
    message_id: MessageIdParameter,
    data: MessageEdit,
    idempotency_key: IdempotencyKey = None,
) -> MessageOut:
    return await _relate(
        request, room, message_id, "edit", body=data.body, idempotency_key=idempotency_key
    )


async def delete_message(
    request: Request[Any, Any, Any],
    room: RoomParameter,
    message_id: MessageIdParameter,
    idempotency_key: IdempotencyKey = None,
) -> None:
    await _relate(request, room, message_id, "delete", idempotency_key=idempotency_key)


async def add_reaction(
    request: Request[Any, Any, Any],
    room: RoomParameter,
    message_id: MessageIdParameter,
    key: ReactionKeyParameter,
    idempotency_key: IdempotencyKey = None,
) -> MessageOut:
    return await _relate(
        request, room, message_id, "reaction", key=key, idempotency_key=idempotency_key
    )


async def remove_reaction(
    request: Request[Any, Any, Any],
    room: RoomParameter,
    message_id: MessageIdParameter,
    key: ReactionKeyParameter,
    idempotency_key: IdempotencyKey = None,
) -> MessageOut:
    return await _relate(
        request, room, message_id, "unreaction", key=key, idempotency_key=idempotency_key
    )


def event_routes() -> list[HTTPRouteHandler]:
    message = "/v1/rooms/{room:str}/messages/{message_id:str}"
    reaction = f"{message}/reactions/{{key:str}}"
    responses = {**BAD_REQUEST, **UNAUTHORIZED, **REFUSED}
    reading = get(
        message,
        summary="One message as readers see it now",
        description="`404` when no replica holds it, or it was deleted.",
        tags=["messages"],
        responses={**BAD_REQUEST, **UNAUTHORIZED, **FORBIDDEN, 404: REFUSED[404]},
    )
    editing = patch(
        message,
        summary="Edit one of your messages",
        description="Its body becomes this one; readers see it with `edited_at`.",
        tags=["messages"],
        responses=responses,
    )
    deleting = delete(
        message,
        summary="Delete one of your messages",
        description=(
            "Its body and reactions are erased from every replica's disk; readers see a"
            " tombstone (`deleted`). Deleting it again changes nothing."
        ),
        tags=["messages"],
        status_code=204,
        responses=responses,
    )
    reacting = put(
        reaction,
        summary="React to a message",
        description="One reaction per user and key: putting it again changes nothing.",
        tags=["reactions"],
        responses=responses,
    )
    unreacting = delete(
        reaction,
        summary="Take back your reaction",
        description="Removing a reaction that is not there changes nothing.",
        tags=["reactions"],
        status_code=200,
        responses=responses,
    )
    return [
        reading(get_message),
        editing(edit_message),
        deleting(delete_message),
        reacting(add_reaction),
        unreacting(remove_reaction),
    ]
