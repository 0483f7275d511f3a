"""Read markers and unread counts: how far each user has read each room.

A user's marker of a room is a message id kept with the user's nodes on the ring
(router/user_rooms.py) and only moves forward, so every node reads the same one and a
second device sees what the first one read. The unread count is derived from the room's
log whenever it is asked for: the messages after the marker that others sent and that
are not deleted, counted exactly up to UNREAD_COUNTED_MAX. A user's first join of a room
marks what was there already as read, as chat products do.
"""

import asyncio
import logging
from collections.abc import Awaitable, Coroutine
from dataclasses import dataclass
from typing import Any, Final

import msgspec

from mesh.node.doors.chat import ChatService, push_read_marker
from mesh.node.doors.session import Session
from mesh.node.doors.token_scope import UNSCOPED, TokenScope
from mesh.node.room_requests import RoomUnavailableError
from mesh.node.storage import StoredMessage
from mesh.wire import protocol
from mesh.wire.errors import ErrorCode, ProtocolError
from router.effects import Page, Rooms
from router.message_ids import ORIGIN
from router.records import ReadMarker
from router.room_view import UNREAD_COUNTED_MAX
from router.wire import ReadMarkerMoved

# Messages read per page while counting, and pages read per count: a room where the user
# wrote most of what followed the marker is not walked to its end.
UNREAD_PAGE_SIZE: Final = 500
UNREAD_PAGES_MAX: Final = 8
# Rooms counted at once for a listing of all a user's rooms, and at most in one listing
# (the rest are listed without a count).
UNREAD_ROOMS_AT_ONCE: Final = 8
UNREAD_ROOMS_COUNTED_MAX: Final = 100
# A count a join or a listing waits for; past it the answer goes without.
COURTESY_COUNT_S: Final = 2.0

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Unread:
    room: str
    read_up_to: str | None  # the user's marker; None before the user's first join
    count: int
    capped: bool  # there may be more than `count` (shown as "1000+")
    # The newest message the count read: a client adds only messages after it to the
    # count as they arrive, so a replayed backlog is not counted twice.
    through: str | None = None

    @property
    def text(self) -> str:
        return f"{self.count}+" if self.capped else str(self.count)


def counts_as_unread(message: StoredMessage, page: Page, user: str) -> bool:
    state = page.relations.get(message.id)
    deleted = state is not None and state.tombstone is not None
    return message.kind == "message" and message.sender != user and not deleted


class ReadMarkers:
    def __init__(self, chat: ChatService) -> None:
        self.chat = chat
        self._background: set[asyncio.Task[None]] = set()  # first joins' markers

    async def markers_of(self, user: str) -> dict[str, str]:
        """room -> the user's marker, gathered from the user's nodes."""
        return (await self.chat.rooms.user_rooms(user)).read_up_to

    async def count(self, user: str, room: str, read_up_to: str | None) -> Unread:
        """The unread count of a room after `read_up_to` (the whole room without one)."""
        cursor = read_up_to or ORIGIN
        count = 0
        for _ in range(UNREAD_PAGES_MAX):
            page = await self.chat.history(room, user, after=cursor, limit=UNREAD_PAGE_SIZE)
            for message in page.messages:
                count += counts_as_unread(message, page, user)
                if count > UNREAD_COUNTED_MAX:
                    return Unread(room, read_up_to, UNREAD_COUNTED_MAX, capped=True, through=cursor)
                cursor = message.id
            if not page.more or not page.messages:
                through = None if cursor == ORIGIN else cursor
                return Unread(room, read_up_to, count, capped=False, through=through)
        return Unread(room, read_up_to, count, capped=True, through=cursor)

    async def unread(
        self, user: str, room: str | None = None, scope: TokenScope = UNSCOPED
    ) -> list[Unread]:
        """The unread count of one room, or those of every room the user is in (and
        `scope` covers) that could be read now."""
        if room is not None:
            held = (await self.markers_of(user)).get(room)
            return [await self.count(user, room, held)]
        _, counts = await self.listing(user, scope)
        return [unread for _, unread in counts if unread is not None]

    async def listing(
        self, user: str, scope: TokenScope = UNSCOPED
    ) -> tuple[list[str], list[tuple[str, Unread | None]]]:
        """The user's rooms that `scope` covers, each with its count (None where it
        could not be read)."""
        found = await self.chat.rooms.user_rooms(user)
        if not scope.unscoped:
            found = msgspec.structs.replace(
                found, rooms=[name for name in found.rooms if scope.covers(name)]
            )
        at_once = asyncio.Semaphore(UNREAD_ROOMS_AT_ONCE)

        async def one(name: str) -> tuple[str, Unread | None]:
            async with at_once:
                return name, await unread_or_none(
                    self.count(user, name, found.read_up_to.get(name))
                )

        counted = [one(name) for name in found.rooms[:UNREAD_ROOMS_COUNTED_MAX]]
        rest = [(name, None) for name in found.rooms[UNREAD_ROOMS_COUNTED_MAX:]]
        return found.rooms, [*await asyncio.gather(*counted), *rest]

    async def mark(self, user: str, room: str, up_to: str | None) -> tuple[Unread, bool]:
        """Move the user's marker to `up_to` (a message of the room), or to the room's
        newest message; a marker never moves back. Returns the count after it, and
        whether the marker moved."""
        await self.chat.access.check(user, room, "read")
        if up_to is None:
            newest, _ = await self.chat.rooms.read(room, limit=1)
            up_to = newest[-1].id if newest else None
        elif await self.chat.find(room, up_to, user) is None:
            raise ProtocolError(ErrorCode.NOT_FOUND, f"no message {up_to} in room {room}")
        held = (await self.markers_of(user)).get(room)
        moved = up_to is not None and (held is None or up_to > held)
        if moved:
            assert up_to is not None
            await self.chat.rooms.record_read_marker(ReadMarker(user, room, up_to))
            held = up_to
        return await self.count(user, room, held), moved

    def tell_sessions(self, user: str, unread: Unread, *, but: Session | None = None) -> None:
        """The user's other sessions, on this node and every other, hear where the
        marker is now."""
        if unread.read_up_to is None:
            return
        moved = ReadMarkerMoved(
            room=unread.room,
            user=user,
            up_to=unread.read_up_to,
            unread=unread.count,
            unread_capped=unread.capped,
            through=unread.through,
            origin=self.chat.node_id,
        )
        push_read_marker(self.chat.hub, moved, but)
        self.chat.rooms.announce(moved)

    async def before_join(self, user: str) -> Rooms:
        """What the user's nodes hold of the user before a join is recorded: whether
        this is the user's first join of a room, and its marker."""
        return await self.chat.rooms.user_rooms(user)

    async def joined(
        self, user: str, room: str, head: str | None, before: Rooms, *, count: bool = True
    ) -> Unread | None:
        """The count a join reports (None without `count`). A user's first join of a
        room (never joined before, as enough of the user's nodes told) marks what the
        room held as read, so a newcomer does not start with its whole past unread; the
        marker is kept in the background, the join does not wait for its copies."""
        held = before.read_up_to.get(room)
        first = before.complete and room not in before.known and held is None
        if first and head is not None:
            self._in_background(self.chat.rooms.record_read_marker(ReadMarker(user, room, head)))
            return Unread(room, head, 0, capped=False, through=head) if count else None
        if not count:
            return None
        return await unread_or_none(self.count(user, room, held))

    def _in_background(self, setting: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(setting)
        self._background.add(task)
        task.add_done_callback(self._settled)

    def _settled(self, task: "asyncio.Task[None]") -> None:
        self._background.discard(task)
        if not task.cancelled() and (error := task.exception()) is not None:
            log.info("a first join's read marker was not kept: %s", error)


async def unread_or_none(counting: Awaitable[Unread]) -> Unread | None:
    """A count where one is only a courtesy (a join, a listing): None when the room is
    unavailable or the count takes longer than COURTESY_COUNT_S."""
    try:
        async with asyncio.timeout(COURTESY_COUNT_S):
            return await counting
    except (RoomUnavailableError, TimeoutError):
        return None


def to_wire(unread: Unread) -> protocol.UnreadCount:
    return protocol.UnreadCount(
        room=unread.room,
        read_up_to=unread.read_up_to,
        count=unread.count,
        capped=unread.capped,
        through=unread.through,
    )


async def answer(
    markers: ReadMarkers, session: Session, request: protocol.MarkRead | protocol.GetUnread
) -> protocol.UnreadCounts:
    """A client's mark_read or unread request, answered; a marker that moved is told to
    the user's other sessions here."""
    if isinstance(request, protocol.GetUnread):
        counts = await markers.unread(session.user, request.room, session.scope)
        return protocol.UnreadCounts(
            request_id=request.request_id, rooms=[to_wire(unread) for unread in counts]
        )
    unread, moved = await markers.mark(session.user, request.room, request.up_to)
    if moved:
        markers.tell_sessions(session.user, unread, but=session)
    return protocol.UnreadCounts(request_id=request.request_id, rooms=[to_wire(unread)])
