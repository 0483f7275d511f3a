"""Rooms as this node's clients see them: sends, joins, replays, presence and typing.

The mesh does the work (mesh/node/room_driver.py drives the room engine): a send goes to the
room's coordinator and is acknowledged once W replicas hold it; history comes from the
room's replicas. This module ties that to the node's sessions: who is in which room here,
and handing each pushed message or event to them.
"""

import asyncio
import logging
from collections.abc import Callable

from mesh.node.doors.rooms import RoomHub
from mesh.node.doors.session import Session
from mesh.node.room_requests import RoomRequests
from mesh.node.storage import SendResult, StoredMessage
from mesh.wire import protocol
from mesh.wire.framing import encode_frame
from router.records import MembershipChange, RoomMessage
from router.wire import PresenceChanged, TypingNotice

log = logging.getLogger(__name__)

# Messages read per query while replaying a backlog. Each is pushed in a frame of its
# own, so the page's bytes bound only the replicas' answers (router/page_bytes.py).
REPLAY_PAGE_SIZE = 500
# A history frame beside its messages: type, request_id, a room name of 64 bytes, a
# cursor of 82 and the msgpack headers take at most 210 bytes.
HISTORY_FRAME_ENVELOPE_BYTES = 256


def shown_to_clients(message: StoredMessage) -> bool:
    """Messages are; relations (edits, deletes, reactions) are not yet: the client
    protocol has no form for them, so they stay in the log and its read models."""
    return message.kind == "message"


def to_wire(message: StoredMessage) -> protocol.Message:
    return protocol.Message(
        id=message.id,
        room=message.room,
        sender=message.sender,
        time_ms=message.time_ms,
        body=message.body,
        client_msg_id=message.client_msg_id,
    )


def _frame(event: protocol.NodeMessage) -> bytes:
    return encode_frame(protocol.encode(event))


class SessionDeliveries:
    """What the mesh pushes, handed to this node's sessions in the room (the room
    driver's LocalSessions)."""

    def __init__(self, hub: RoomHub) -> None:
        self.hub = hub
        self.messages_delivered = 0

    def deliver_message(self, message: RoomMessage) -> None:
        if not shown_to_clients(message):
            return
        frame = _frame(protocol.MessageEvent(message=to_wire(message)))
        sessions = self.hub.sessions(message.room)
        for session in sessions:
            session.deliver(message.room, frame, message.id)
        self.messages_delivered += len(sessions)
        if log.isEnabledFor(logging.DEBUG):
            log.debug(
                "message delivered to %d session(s)",
                len(sessions),
                extra={"trace_id": message.id, "room": message.room, "sender": message.sender},
            )

    def deliver_event(self, event: PresenceChanged | TypingNotice) -> None:
        if isinstance(event, PresenceChanged):
            frame = _frame(
                protocol.PresenceEvent(room=event.room, user=event.user, state=event.state)
            )
            for session in self.hub.sessions(event.room):
                session.push(frame)
            return
        frame = _frame(protocol.TypingEvent(room=event.room, user=event.user))
        for session in self.hub.sessions(event.room):
            if session.user != event.user:
                session.push_if_room(frame)


class ChatService:
    def __init__(
        self,
        node_id: str,
        rooms: RoomRequests,
        hub: RoomHub,
        wall_clock_ms: Callable[[], int],
    ) -> None:
        self.node_id = node_id
        self.rooms = rooms
        self.hub = hub
        self._wall_clock_ms = wall_clock_ms

    # ---- writes ----

    def send(
        self, user: str, room: str, client_msg_id: str, body: str
    ) -> "asyncio.Future[SendResult]":
        """Resolves once W replicas hold the message; never blocks the caller."""
        return self.rooms.send(room, user, client_msg_id, body)

    # ---- reads ----

    async def history(
        self,
        room: str,
        *,
        before: str | None = None,
        after: str | None = None,
        limit: int = 50,
        bytes_max: int | None = None,
    ) -> tuple[list[RoomMessage], bool]:
        """A page, and whether more lie beyond it; with `bytes_max`, its messages'
        router/page_bytes.py message_bytes sum to at most that (always one message)."""
        return await self.rooms.read(
            room, before=before, after=after, limit=limit, bytes_max=bytes_max
        )

    async def who(self, room: str) -> list[str]:
        return sorted(set(await self.rooms.who(room)) | set(self.hub.users(room)))

    async def rooms_of(self, user: str) -> list[str]:
        """The user's rooms, whichever nodes they joined through."""
        return await self.rooms.rooms_of(user)

    # ---- rooms ----

    async def join(
        self, session: Session, room: str, since: str | None
    ) -> tuple[list[str], str | None]:
        """Enter a room: live delivery, presence, persisted membership.

        Returns who is present and the room's head: the newest id stored once pushes to
        this node had begun, so nothing after the head can be missed by a resume.
        """
        session.rooms.add(room)
        if since is not None:
            session.begin_catch_up(room)
        newly_present = self.hub.subscribe(room, session)
        await self.rooms.subscribe(room)
        if newly_present:
            self._presence(room, session, "joined")
        await self.rooms.record_membership(
            MembershipChange(session.user, room, joined=True, time_ms=self._wall_clock_ms())
        )
        newest, _ = await self.rooms.read(room, limit=1)
        return await self.who(room), newest[-1].id if newest else None

    async def replay(self, session: Session, room: str, since: str) -> int:
        """Push every stored message after `since`, then release the held live ones."""
        cursor = since
        replayed = 0
        # Messages that reached the room late (written where this node or the replicas
        # could not hear) may sort before `since` although the client never saw them:
        # the replicas' records of late arrivals and this node's own memory of late
        # pushes bring them. The client drops the ones it has by id.
        late: dict[str, RoomMessage] = {}
        try:
            while True:
                page = await self.rooms.resume(room, cursor, REPLAY_PAGE_SIZE, since=since)
                late.update((message.id, message) for message in page.late)
                for message in page.messages:
                    if shown_to_clients(message):
                        await session.push_waiting(
                            _frame(protocol.MessageEvent(message=to_wire(message)))
                        )
                    cursor = message.id
                replayed += len(page.messages)
                if not page.more:
                    break
            for message_id in sorted(late):
                if not shown_to_clients(late[message_id]):
                    continue
                await session.push_waiting(
                    _frame(protocol.MessageEvent(message=to_wire(late[message_id])))
                )
                replayed += 1
        except BaseException:
            session.abandon_catch_up(room)
            raise
        session.end_catch_up(room, cursor)
        return replayed

    async def leave(self, session: Session, room: str) -> None:
        self.unsubscribe(session, room)
        await self.rooms.record_membership(
            MembershipChange(session.user, room, joined=False, time_ms=self._wall_clock_ms())
        )

    def disconnect(self, session: Session) -> None:
        """A session ended: it leaves every room's live side, not the rooms themselves."""
        for room in list(session.rooms):
            self.unsubscribe(session, room)

    def unsubscribe(self, session: Session, room: str) -> None:
        """The session stops receiving the room live; the user's membership is kept."""
        session.rooms.discard(room)
        session.abandon_catch_up(room)
        if self.hub.unsubscribe(room, session):
            self._presence(room, session, "left")
        if not self.hub.sessions(room):
            self.rooms.unsubscribe(room)

    def typing(self, session: Session, room: str) -> None:
        frame = _frame(protocol.TypingEvent(room=room, user=session.user))
        for other in self.hub.sessions(room):
            if other.user != session.user:
                other.push_if_room(frame)
        self.rooms.announce(TypingNotice(room=room, user=session.user, origin=self.node_id))

    def _presence(self, room: str, session: Session, state: str) -> None:
        event = protocol.PresenceEvent(room=room, user=session.user, state=state)  # type: ignore[arg-type]
        frame = _frame(event)
        for other in self.hub.sessions(room):
            if other is not session:
                other.push(frame)
        self.rooms.announce(
            PresenceChanged(room=room, user=session.user, state=state, origin=self.node_id)  # type: ignore[arg-type]
        )
