"""Creating rooms and changing their state, as both doors take the request.

A change is a state event of the room's log (router/room_state.py), written like a send:
acknowledged once W replicas hold it, and checked again by the room's coordinator. The
checks here answer at once what the coordinator would refuse, with the reason. A kick or
a ban also takes the room out of the user's list of rooms, so that the user's clients
do not rejoin it on their own.
"""

import uuid

from mesh.node.doors.chat import ChatService
from mesh.node.room_requests import RoomUnavailableError
from mesh.wire import protocol
from mesh.wire.errors import ErrorCode
from router.records import MembershipChange, RoomMessage
from router.room_state import RoomState
from router.writes import SendRequest, request_problem


def new_client_msg_id() -> str:
    return f"room-{uuid.uuid4().hex}"


def change_request(
    user: str,
    room: str,
    op: str,
    *,
    subject: str | None = None,
    value: str = "",
    client_msg_id: str | None = None,
) -> SendRequest:
    """The state event a change asks for, or RoomUnavailableError (bad_request)."""
    if op == "create" and not value:
        value = "open"
    request = SendRequest(
        room,
        user,
        client_msg_id or new_client_msg_id(),
        value,
        op,  # type: ignore[arg-type]
        subject=subject,
    )
    if (problem := request_problem(request)) is not None:
        raise RoomUnavailableError(ErrorCode.BAD_REQUEST, problem)
    return request


class RoomAdmin:
    def __init__(self, chat: ChatService) -> None:
        self.chat = chat

    async def change(self, request: SendRequest) -> tuple[RoomMessage, RoomState]:
        """Store the state event once the room's state allows it; the event as stored,
        and the room's state after it."""
        access = self.chat.access
        if request.kind == "create":
            await self._check_new(request.room)
        state = await access.state(request.room)
        if state.event_refusal(request) is not None:
            state = await access.state(request.room, fresh=True)
        if (reason := state.event_refusal(request)) is not None:
            code = ErrorCode.CONFLICT if request.kind == "create" else ErrorCode.FORBIDDEN
            raise RoomUnavailableError(code, reason)
        result = await self.chat.write(request)
        stored = result.message
        after = access.observe(stored) or await access.state(request.room, fresh=True)
        if stored.kind in {"kick", "ban"} and stored.subject is not None:
            change = MembershipChange(
                stored.subject, stored.room, joined=False, time_ms=self.chat.wall_clock_ms()
            )
            await self.chat.rooms.record_membership(change)
        self.chat.remove_refused(stored.room, after)
        return stored, after

    async def show(self, user: str, room: str) -> RoomState:
        """The room's state, read from its replicas, if `user` may read the room."""
        await self.chat.access.check(user, room, "read")
        return await self.chat.access.state(room, fresh=True)

    async def _check_new(self, room: str) -> None:
        """A room is created only before anything is written in it: an open room in use
        is not anyone's to claim."""
        page = await self.chat.rooms.page(room, limit=1, overlapping=True)
        if page.messages:
            raise RoomUnavailableError(ErrorCode.CONFLICT, f"room {room} exists already")


def room_info(state: RoomState, request_id: int, changed: str | None = None) -> protocol.RoomInfo:
    view = state.view()
    return protocol.RoomInfo(
        request_id=request_id,
        room=view.room,
        created_by=view.created_by,
        policy=view.policy,
        topic=view.topic,
        roles=view.roles,
        invited=view.invited,
        banned=view.banned,
        changed=changed,
    )


async def answer_room(
    admin: RoomAdmin, user: str, request: protocol.ChangeRoom | protocol.ShowRoom
) -> protocol.RoomInfo:
    """The TCP protocol's room_change and room_show, answered with room."""
    if isinstance(request, protocol.ShowRoom):
        return room_info(await admin.show(user, request.room), request.request_id)
    change = change_request(
        user,
        request.room,
        request.op,
        subject=request.user,
        value=request.value,
        client_msg_id=request.client_msg_id,
    )
    stored, state = await admin.change(change)
    return room_info(state, request.request_id, stored.id)
