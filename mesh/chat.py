"""Rooms on one node: assigning ids, storing, fanning out to sessions, presence and typing."""

import asyncio
import logging
from collections.abc import Callable

from mesh import protocol
from mesh.framing import encode_frame
from mesh.rooms import RoomHub
from mesh.session import Session
from mesh.storage import SendResult, Storage, StoredMessage
from router.message_ids import HybridClock, MessageId, is_message_id

log = logging.getLogger(__name__)

# Messages read from storage per query while replaying a backlog.
REPLAY_PAGE_SIZE = 500


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


class ChatService:
    def __init__(self, node_id: str, storage: Storage, wall_clock_ms: Callable[[], int]) -> None:
        self.node_id = node_id
        self.storage = storage
        self.hub = RoomHub()
        self._wall_clock_ms = wall_clock_ms
        self._clock = HybridClock(node_id)
        self.messages_stored = 0
        self.messages_delivered = 0

    def start(self) -> None:
        """Call once storage is open: ids continue after everything already stored."""
        if is_message_id(self.storage.highest_id):
            self._clock.observe(MessageId.parse(self.storage.highest_id))

    # ---- writes ----

    def send(
        self, user: str, room: str, client_msg_id: str, body: str
    ) -> "asyncio.Future[SendResult]":
        """Assign an id and queue the message; the future resolves once it is on disk.

        Ids are assigned here, in arrival order, and the writer commits in that order, so
        a sender's messages keep their order and live delivery follows id order.
        """
        message_id = self._clock.next_id(self._wall_clock_ms())
        message = StoredMessage(
            id=str(message_id),
            room=room,
            sender=user,
            client_msg_id=client_msg_id,
            time_ms=message_id.time_ms,
            body=body,
        )
        future = self.storage.append(message)
        future.add_done_callback(self._committed)
        return future

    def _committed(self, future: "asyncio.Future[SendResult]") -> None:
        if future.cancelled() or future.exception() is not None:
            return
        result = future.result()
        if result.duplicate:
            return
        self.messages_stored += 1
        message = result.message
        frame = _frame(protocol.MessageEvent(message=to_wire(message)))
        sessions = self.hub.sessions(message.room)
        for session in sessions:
            session.deliver(message.room, frame, message.id)
        self.messages_delivered += len(sessions)
        if log.isEnabledFor(logging.DEBUG):
            log.debug(
                "message stored and fanned out to %d session(s)",
                len(sessions),
                extra={"trace_id": message.id, "room": message.room, "sender": message.sender},
            )

    # ---- rooms ----

    async def join(
        self, session: Session, room: str, since: str | None
    ) -> tuple[list[str], str | None]:
        """Enter a room: live delivery, presence, persisted membership.

        Returns who is present and the room's head: the newest id stored once delivery to
        this session had begun, so nothing after the head can be missed by a resume.
        """
        session.rooms.add(room)
        if since is not None:
            session.begin_catch_up(room)
        if self.hub.subscribe(room, session):
            self._presence(room, session, "joined")
        await self.storage.set_membership(
            session.user, room, joined=True, time_ms=self._wall_clock_ms()
        )
        newest, _ = await self.storage.history(room, limit=1)
        return self.hub.users(room), newest[-1].id if newest else None

    async def replay(self, session: Session, room: str, since: str) -> int:
        """Push every stored message after `since`, then release the held live ones."""
        cursor = since
        replayed = 0
        try:
            while True:
                page, more = await self.storage.history(room, after=cursor, limit=REPLAY_PAGE_SIZE)
                for message in page:
                    await session.push_waiting(
                        _frame(protocol.MessageEvent(message=to_wire(message)))
                    )
                    cursor = message.id
                replayed += len(page)
                if not more:
                    break
        except BaseException:
            session.abandon_catch_up(room)
            raise
        session.end_catch_up(room, cursor)
        return replayed

    async def leave(self, session: Session, room: str) -> None:
        self.unsubscribe(session, room)
        await self.storage.set_membership(
            session.user, room, joined=False, time_ms=self._wall_clock_ms()
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

    def typing(self, session: Session, room: str) -> None:
        frame = _frame(protocol.TypingEvent(room=room, user=session.user))
        for other in self.hub.sessions(room):
            if other.user != session.user:
                other.push_if_room(frame)

    def _presence(self, room: str, session: Session, state: str) -> None:
        event = protocol.PresenceEvent(room=room, user=session.user, state=state)  # type: ignore[arg-type]
        frame = _frame(event)
        for other in self.hub.sessions(room):
            if other is not session:
                other.push(frame)
