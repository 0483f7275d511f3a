"""Edits, deletes and reactions as a door receives them: the event each one asks for,
and why a room's current view of the target refuses it.

The rules in router/event_rules.py decide what every replica folds; these checks only
tell the client at once what the rules would ignore (someone else's message, a deleted
one), so a refused edit is an error and not an event that changes nothing.
"""

from typing import Final, Protocol

from mesh.wire import protocol
from mesh.wire.errors import ErrorCode
from router.event_rules import MessageState
from router.records import EventKind
from router.writes import SendRequest

# Reactions one user may have standing on one message. The rules keep the marks of the
# 1,024 smallest (key, user) pairs of a message (router/event_rules.py): this keeps one
# user from crowding out everyone else's through a door.
REACTIONS_PER_USER_MAX: Final = 20


def relation_request(
    user: str, request: protocol.Edit | protocol.Delete | protocol.React
) -> SendRequest:
    room, client_msg_id, target = request.room, request.client_msg_id, request.id
    match request:
        case protocol.Edit(body=body):
            return SendRequest(room, user, client_msg_id, body, "edit", target)
        case protocol.Delete():
            return SendRequest(room, user, client_msg_id, "", "delete", target)
        case protocol.React(key=key, remove=remove):
            kind: EventKind = "unreaction" if remove else "reaction"
            return SendRequest(room, user, client_msg_id, "", kind, target, reaction_key=key)


def relation_refused(target: MessageState, write: SendRequest) -> tuple[ErrorCode, str] | None:
    """The code and reason to refuse `write` with, given its target's state; None when
    the rules would take it."""
    event = target.event
    assert event is not None
    if event.kind != "message":
        return ErrorCode.NOT_FOUND, f"{event.id} is not a message"
    if target.tombstone is not None:
        if write.kind == "delete" and write.sender == event.sender:
            return None  # deleting twice is deleting once
        return ErrorCode.NOT_FOUND, f"message {event.id} was deleted"
    if write.kind in {"edit", "delete"} and write.sender != event.sender:
        return ErrorCode.FORBIDDEN, f"only {event.sender}, who sent it, may {write.kind} it"
    if write.kind == "reaction" and write.reaction_key is not None:
        keys = {
            key
            for key, marks in target.reactions.items()
            if (mark := marks.get(write.sender)) is not None and mark.stands
        }
        if write.reaction_key not in keys and len(keys) >= REACTIONS_PER_USER_MAX:
            reason = f"at most {REACTIONS_PER_USER_MAX} reactions per user on one message"
            return ErrorCode.BAD_REQUEST, reason
    return None


class RelationRefusedError(Exception):
    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class TargetFinder(Protocol):
    async def find(self, room: str, message_id: str, reader: str) -> MessageState | None: ...


async def checked_target(chat: TargetFinder, write: SendRequest) -> MessageState:
    """The target's state as the room's replicas hold it now, if `write` may relate to
    it; else RelationRefusedError with the code to answer."""
    assert write.target is not None
    target = await chat.find(write.room, write.target, write.sender)
    if target is None or target.event is None:
        raise RelationRefusedError(
            ErrorCode.NOT_FOUND, f"no message {write.target} in {write.room}"
        )
    if problem := relation_refused(target, write):
        raise RelationRefusedError(*problem)
    return target
