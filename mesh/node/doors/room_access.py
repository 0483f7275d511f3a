"""Who may read a room, as this node's doors check it before a join, a page or a `who`.

A room's state (router/room_state.py) is read from its replicas' state events and held
here a few seconds; the state events pushed to this node fold into it as they arrive, so
a kick or a ban takes sessions out of a room at once. A user the held state refuses is
refused only after a fresh read, so an invitation made through another node a moment ago
is not missed. Writes are checked again where they are coordinated (router/room_states.py):
this is the check of reads, and the courtesy of an early answer for writes.
"""

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from mesh.node.room_requests import RoomRequests, RoomUnavailableError
from mesh.wire.errors import ErrorCode
from router.records import RoomMessage
from router.room_state import ROOM_STATE_EVENTS_MAX, STATE_KINDS, Action, RoomState

# How long a room's state read from its replicas is used before it is read again: the
# longest a change made elsewhere, of a room with no sessions here, takes to count here.
STATE_FRESH_S: Final = 5.0
# Rooms whose state this node's doors hold, the least recently used dropped past it.
ROOM_STATES_HELD_MAX: Final = 10_000
# State events read per page from the replicas.
STATE_READ_PAGE: Final = 500
STATE_READ_PAGES_MAX: Final = ROOM_STATE_EVENTS_MAX // STATE_READ_PAGE + 1


def refused(reason: str) -> RoomUnavailableError:
    return RoomUnavailableError(ErrorCode.FORBIDDEN, reason)


@dataclass(slots=True)
class _Held:
    state: RoomState
    read_at: float


class RoomAccess:
    def __init__(self, rooms: RoomRequests, clock: Callable[[], float] = time.monotonic) -> None:
        self._rooms = rooms
        self._clock = clock
        self._held: OrderedDict[str, _Held] = OrderedDict()
        self._reading: dict[str, asyncio.Task[RoomState]] = {}

    async def state(self, room: str, *, fresh: bool = False) -> RoomState:
        """The room's state: held, or read from its replicas when stale or `fresh`."""
        held = self._held.get(room)
        if held is not None and not fresh and self._clock() - held.read_at < STATE_FRESH_S:
            self._held.move_to_end(room)
            return held.state
        if fresh:
            # Its own read: one under way may have begun before what the caller awaits.
            return await self._read(room)
        reading = self._reading.get(room)
        if reading is None:
            # One read per room at a time for those who accept a held state.
            reading = asyncio.ensure_future(self._read(room))
            self._reading[room] = reading
            reading.add_done_callback(lambda _: self._reading.pop(room, None))
        return await asyncio.shield(reading)

    async def check(self, user: str, room: str, action: Action) -> RoomState:
        """The room's state if it lets `user` read (or post in) the room; else
        RoomUnavailableError with the code forbidden."""
        state = await self.state(room)
        if state.refusal(user, action) is None:
            return state
        # Costs a read, as a page of history does.
        state = await self.state(room, fresh=True)
        if (reason := state.refusal(user, action)) is not None:
            raise refused(reason)
        return state

    def hides(self, message: RoomMessage) -> bool:
        """A message its sender wrote while banned, by the state held here."""
        held = self._held.get(message.room)
        return held is not None and held.state.hides(message)

    def observe(self, event: RoomMessage) -> RoomState | None:
        """A state event pushed to or written through this node: the room's state with
        it folded in, if held here."""
        if event.kind not in STATE_KINDS:
            return None
        held = self._held.get(event.room)
        if held is None:
            return None
        held.state.apply(event)
        return held.state

    async def _read(self, room: str) -> RoomState:
        read_at = self._clock()
        state = RoomState(room)
        after: str | None = None
        for _ in range(STATE_READ_PAGES_MAX):
            page = await self._rooms.page(room, after=after, limit=STATE_READ_PAGE, state_only=True)
            for event in page.messages:
                state.apply(event)
            if not page.more or not page.messages:
                break
            after = page.messages[-1].id
        held = self._held.get(room)
        if held is not None:
            # State events pushed while the read was under way, or a later read's: the
            # state is a fold of a set of events, and folding one twice is once.
            for event in held.state.events():
                state.apply(event)
            read_at = max(read_at, held.read_at)
        self._held[room] = _Held(state, read_at)
        self._held.move_to_end(room)
        while len(self._held) > ROOM_STATES_HELD_MAX:
            self._held.popitem(last=False)
        return state
