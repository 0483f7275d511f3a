"""Rooms as this node's clients see them: sends, joins, replays, presence and typing.

The mesh does the work (mesh/node/room_driver.py drives the room engine): a send goes to the
room's coordinator and is acknowledged once W replicas hold it; history comes from the
room's replicas. This module ties that to the node's sessions: who is in which room here,
and handing each pushed message or event to them.
"""

import asyncio
import logging
from collections.abc import Callable

import msgspec

from mesh.node.doors.room_access import RoomAccess
from mesh.node.doors.rooms import RoomHub
from mesh.node.doors.session import Session
from mesh.node.room_requests import RoomRequests
from mesh.node.storage import SendResult, StoredMessage
from mesh.wire import protocol
from mesh.wire.framing import encode_frame
from router.effects import Page
from router.event_rules import RELATION_KINDS, MessageState
from router.message_ids import MessageId, at_time
from router.records import MembershipChange, RoomMessage
from router.room_state import STATE_KINDS, RoomState
from router.room_view import view_of
from router.wire import PresenceChanged, ReadMarkerMoved, SessionEvent, TypingNotice
from router.writes import SendRequest

log = logging.getLogger(__name__)

# Messages read per query while replaying a backlog. Each is pushed in a frame of its
# own, so the page's bytes bound only the replicas' answers (router/page_bytes.py).
REPLAY_PAGE_SIZE = 500
# A history frame beside its messages: type, request_id, a room name of 64 bytes, a
# cursor of 82 and the msgpack headers take at most 210 bytes.
HISTORY_FRAME_ENVELOPE_BYTES = 256
# Messages read per page while looking for one by id, from the start of its millisecond.
FIND_PAGE_SIZE = 50


def shown_to_clients(message: StoredMessage) -> bool:
    """Messages are shown as messages; relations as what they made of their targets."""
    return message.kind == "message"


def knows_relations(minor: int) -> bool:
    return minor >= protocol.MINOR_ROOM_EVENTS


def to_wire(
    message: StoredMessage, state: MessageState | None = None, minor: int = protocol.PROTOCOL_MINOR
) -> protocol.Message | None:
    """A message as a client of `minor` reads it with its view (router/room_view.py);
    None for a deleted one, to a client too old to show a deletion."""
    view = view_of(state or MessageState(event=message), message)
    if not knows_relations(minor):
        if view.deleted is not None:
            return None
        return protocol.Message(
            id=view.id,
            room=message.room,
            sender=view.sender,
            time_ms=view.time_ms,
            body=view.body,
            client_msg_id=view.client_msg_id,
        )
    deleted = None
    if view.deleted is not None:
        deleted = protocol.Deletion(by=view.deleted.by, at_ms=view.deleted.at_ms)
    return protocol.Message(
        id=view.id,
        room=message.room,
        sender=view.sender,
        time_ms=view.time_ms,
        body=view.body,
        client_msg_id=view.client_msg_id,
        reply_to=view.reply_to,
        edited_at_ms=view.edited_at_ms,
        deleted=deleted,
        reactions=view.reactions,
    )


def relation_to_wire(event: StoredMessage) -> protocol.RelationEvent:
    assert event.kind in RELATION_KINDS and event.target is not None
    return protocol.RelationEvent(
        id=event.id,
        room=event.room,
        kind=event.kind,  # type: ignore[arg-type]
        target=event.target,
        sender=event.sender,
        time_ms=event.time_ms,
        body=event.body,
        key=event.reaction_key or "",
        client_msg_id=event.client_msg_id,
    )


def state_event_to_wire(event: StoredMessage) -> protocol.RoomStateEvent:
    assert event.kind in STATE_KINDS
    return protocol.RoomStateEvent(
        id=event.id,
        room=event.room,
        op=event.kind,  # type: ignore[arg-type]
        sender=event.sender,
        time_ms=event.time_ms,
        user=event.subject,
        value=event.body,
    )


def event_frame(
    event: StoredMessage, minor: int, state: MessageState | None = None
) -> bytes | None:
    """The frame that tells a client of `minor` of an event of the log, if any; a
    replayed message with its view (`state`), when relations made something of it."""
    if event.kind in STATE_KINDS:
        known = minor >= protocol.MINOR_ROOM_STATE
        return _frame(state_event_to_wire(event)) if known else None
    if event.kind != "message":
        return _frame(relation_to_wire(event)) if knows_relations(minor) else None
    message = to_wire(event, state, minor)
    return None if message is None else _frame(protocol.MessageEvent(message=message))


def _frame(event: protocol.NodeMessage) -> bytes:
    return encode_frame(protocol.encode(event))


def push_read_marker(hub: RoomHub, moved: ReadMarkerMoved, but: Session | None = None) -> None:
    """The user's sessions in the room here hear where their marker is now."""
    frame = _frame(
        protocol.ReadMarkerEvent(
            room=moved.room,
            read_up_to=moved.up_to,
            unread=moved.unread,
            unread_capped=moved.unread_capped,
            unread_through=moved.through,
        )
    )
    for session in hub.sessions(moved.room):
        known = session.minor >= protocol.MINOR_READ_MARKERS
        if session is not but and session.user == moved.user and known:
            session.push_if_room(frame)


class SessionDeliveries:
    """What the mesh pushes, handed to this node's sessions in the room (the room
    driver's LocalSessions)."""

    def __init__(self, hub: RoomHub) -> None:
        self.hub = hub
        self.messages_delivered = 0
        # Set by ChatService: a state event's effect on the room's sessions here, and
        # whether a message is hidden (its sender was banned at its time).
        self.on_state_event: Callable[[RoomMessage], None] | None = None
        self.hides: Callable[[RoomMessage], bool] = lambda _: False

    def deliver_message(self, message: RoomMessage) -> None:
        if message.kind in STATE_KINDS and self.on_state_event is not None:
            self.on_state_event(message)
            return
        if self.hides(message):
            return
        frames: dict[bool, bytes | None] = {}
        sessions = self.hub.sessions(message.room)
        for session in sessions:
            knows = knows_relations(session.minor)
            if knows not in frames:
                frames[knows] = event_frame(message, session.minor)
            frame = frames[knows]
            if frame is not None:
                session.deliver(message.room, frame, message.id)
        self.messages_delivered += len(sessions)
        if log.isEnabledFor(logging.DEBUG):
            log.debug(
                "message delivered to %d session(s)",
                len(sessions),
                extra={"trace_id": message.id, "room": message.room, "sender": message.sender},
            )

    def deliver_event(self, event: SessionEvent) -> None:
        if isinstance(event, ReadMarkerMoved):
            push_read_marker(self.hub, event)
            return
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


# Pages of nothing but hidden messages read past before a page answers empty.
HIDDEN_PAGES_SKIPPED_MAX = 16


def without_hidden(page: Page, state: RoomState) -> Page:
    """A page without the messages their senders wrote while banned."""
    if not state.bans:
        return page
    shown = [message for message in page.messages if not state.hides(message)]
    if len(shown) == len(page.messages):
        return page
    return msgspec.structs.replace(page, messages=shown)


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
        self.access = RoomAccess(rooms)
        self._rechecks: set[asyncio.Task[None]] = set()

    def wall_clock_ms(self) -> int:
        return self._wall_clock_ms()

    def deliver_through(self, deliveries: SessionDeliveries) -> None:
        """Have the node's deliveries take room state into account, as this does."""
        deliveries.on_state_event = self.state_event_arrived
        deliveries.hides = self.access.hides

    # ---- writes ----

    def send(
        self, user: str, room: str, client_msg_id: str, body: str
    ) -> "asyncio.Future[SendResult]":
        """Resolves once W replicas hold the message; never blocks the caller."""
        return self.rooms.send(room, user, client_msg_id, body)

    def write(self, request: SendRequest) -> "asyncio.Future[SendResult]":
        """As `send`, for a message with a reply or a relation (router/event_rules.py)."""
        return self.rooms.write(request)

    # ---- reads ----

    async def history(
        self,
        room: str,
        reader: str,
        *,
        before: str | None = None,
        after: str | None = None,
        limit: int = 50,
        bytes_max: int | None = None,
    ) -> Page:
        """A page of messages and what relations made of them, and whether more lie
        beyond it; with `bytes_max`, their router/page_bytes.py message_bytes and
        relations_bytes sum to at most that (always one message). A reader the room's
        state refuses gets RoomUnavailableError (forbidden); what banned users wrote
        while banned is left out."""
        state = await self.access.check(reader, room, "read")
        for _ in range(HIDDEN_PAGES_SKIPPED_MAX):
            page = await self.rooms.page(
                room,
                before=before,
                after=after,
                limit=limit,
                bytes_max=bytes_max,
                messages_only=True,
            )
            shown = without_hidden(page, state)
            if shown.messages or not page.more or not page.messages:
                return shown
            # Every message of the page was hidden: an empty page would end the reader's
            # paging (its cursor is a message shown), so read on past them.
            if after is not None:
                after = page.messages[-1].id
            else:
                before = page.messages[0].id
        return shown

    async def find(self, room: str, message_id: str, reader: str) -> MessageState | None:
        """A message's state as the room's replicas hold it now, read from enough of them
        to see every acknowledged event (a check before a write: owner, deleted, the
        reaction cap); None if none holds it, or if its sender wrote it while banned. A
        reader the room's state refuses gets RoomUnavailableError (forbidden)."""
        state = await self.access.check(reader, room, "read")
        cursor = at_time(MessageId.parse(message_id).time_ms)
        while True:
            page = await self.rooms.page(
                room, after=cursor, limit=FIND_PAGE_SIZE, messages_only=True, overlapping=True
            )
            for message in page.messages:
                if message.id == message_id:
                    if state.hides(message):
                        return None
                    return page.relations.get(message_id) or MessageState(event=message)
            if not page.more or not page.messages or page.messages[-1].id >= message_id:
                return None
            cursor = page.messages[-1].id

    async def who(self, room: str, asker: str) -> list[str]:
        await self.access.check(asker, room, "read")
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
        this node had begun, so nothing after the head can be missed by a resume. A user
        the room's state refuses gets RoomUnavailableError (forbidden) and joins nothing.
        """
        await self.access.check(session.user, room, "read")
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
        return await self.who(room, session.user), newest[-1].id if newest else None

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
                    if self.access.hides(message):
                        cursor = message.id
                        continue
                    frame = event_frame(message, session.minor, page.relations.get(message.id))
                    if frame is not None:
                        await session.push_waiting(frame)
                    cursor = message.id
                replayed += len(page.messages)
                if not page.more:
                    break
            for message_id in sorted(late):
                frame = event_frame(late[message_id], session.minor)
                if frame is not None:
                    await session.push_waiting(frame)
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

    async def typing(self, session: Session, room: str) -> None:
        await self.access.check(session.user, room, "post")
        frame = _frame(protocol.TypingEvent(room=room, user=session.user))
        for other in self.hub.sessions(room):
            if other.user != session.user:
                other.push_if_room(frame)
        self.rooms.announce(TypingNotice(room=room, user=session.user, origin=self.node_id))

    # ---- room state ----

    def state_event_arrived(self, event: RoomMessage) -> None:
        """A state event of a room with sessions here: they hear of it, and those whose
        user may no longer read the room leave its live side at once."""
        state = self.access.observe(event)
        frame = event_frame(event, protocol.PROTOCOL_MINOR)
        assert frame is not None
        for session in self.hub.sessions(event.room):
            if session.minor >= protocol.MINOR_ROOM_STATE:
                session.deliver(event.room, frame, event.id)
        if state is not None:
            self.remove_refused(event.room, state)
            return
        # Not held here (dropped as least recently used): read it, then remove.
        task = asyncio.ensure_future(self._recheck(event.room))
        self._rechecks.add(task)
        task.add_done_callback(self._recheck_done)

    def remove_refused(self, room: str, state: RoomState) -> None:
        for session in self.hub.sessions(room):
            if state.refusal(session.user, "read") is not None:
                self.unsubscribe(session, room)

    async def _recheck(self, room: str) -> None:
        self.remove_refused(room, await self.access.state(room, fresh=True))

    def _recheck_done(self, task: "asyncio.Task[None]") -> None:
        self._rechecks.discard(task)
        if not task.cancelled() and (error := task.exception()) is not None:
            log.warning("could not read the state of a room to recheck its sessions: %s", error)

    def _presence(self, room: str, session: Session, state: str) -> None:
        event = protocol.PresenceEvent(room=room, user=session.user, state=state)  # type: ignore[arg-type]
        frame = _frame(event)
        for other in self.hub.sessions(room):
            if other is not session:
                other.push(frame)
        self.rooms.announce(
            PresenceChanged(room=room, user=session.user, state=state, origin=self.node_id)  # type: ignore[arg-type]
        )
