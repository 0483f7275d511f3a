"""The rooms' state where their writes are coordinated: every write checked before its id.

A coordinator takes a write only from a user the room's state allows to make it
(router/room_state.py), as folded from this node's own copy of the room's state events.
A room's state is read from the disk the first time a write of it arrives here, the
writes waiting meanwhile; from then on every state event stored here (written, copied,
repaired or handed back) is folded in as it lands, so the state stays this replica's.
A copy can lag one the coordinator has not yet received; what that lets through is the
documented trade-off (a ban also hides what its user wrote after it, docs/rooms.md).
"""

from collections import OrderedDict
from dataclasses import dataclass, field

from router.effects import Load
from router.internal_events import Coordinate, Step
from router.limits import ROOM_STATES_HELD_MAX, STATE_PAGE, WRITES_AWAITING_STATE_MAX
from router.reads import ReplicaPage
from router.records import RoomMessage
from router.role_context import RoleContext
from router.room_state import STATE_KINDS, RoomState
from router.writes import SendRequest


@dataclass(slots=True)
class _Reading:
    token: int
    state: RoomState
    waiting: list[Coordinate] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Admission:
    """What becomes of a write: taken (nothing set), waiting for its room's state (with
    the steps that read it, if not already under way), or refused and why
    (`unavailable` says it may be retried)."""

    waiting: bool = False
    steps: tuple[Step, ...] = ()
    refused: str | None = None
    unavailable: bool = False


class RoomStates:
    def __init__(self, context: RoleContext) -> None:
        self._numbers = context.numbers
        self._held: OrderedDict[str, RoomState] = OrderedDict()  # least recently used first
        self._reading: dict[str, _Reading] = {}
        self._rooms_by_token: dict[int, str] = {}
        self._waiting = 0

    def admit(self, coordinate: Coordinate) -> Admission:
        room = coordinate.request.room
        state = self._held.get(room)
        if state is not None:
            self._held.move_to_end(room)
            return Admission(refused=refusal(state, coordinate.request))
        if self._waiting >= WRITES_AWAITING_STATE_MAX:
            reason = f"{self._waiting} writes wait for their rooms' state to be read"
            return Admission(refused=reason, unavailable=True)
        self._waiting += 1
        reading = self._reading.get(room)
        if reading is not None:
            reading.waiting.append(coordinate)
            return Admission(waiting=True)
        token = next(self._numbers)
        self._reading[room] = _Reading(token, RoomState(room), [coordinate])
        self._rooms_by_token[token] = room
        return Admission(waiting=True, steps=(_load(token, room, None),))

    def loaded(self, token: int, page: ReplicaPage | None) -> tuple[list[Step], list[Coordinate]]:
        """A page of a room's state events read here: the next page's read, or the
        writes that waited, released; and those to refuse, when the disk failed."""
        room = self._rooms_by_token.pop(token, None)
        reading = None if room is None else self._reading.get(room)
        if room is None or reading is None or reading.token != token:
            return [], []
        if page is None:
            del self._reading[room]
            self._waiting -= len(reading.waiting)
            return [], reading.waiting
        for event in page.messages:
            reading.state.apply(event)
        if page.more and page.messages:
            reading.token = next_token = next(self._numbers)
            self._rooms_by_token[next_token] = room
            return [_load(next_token, room, page.messages[-1].id)], []
        del self._reading[room]
        self._waiting -= len(reading.waiting)
        self._hold(room, reading.state)
        return list(reading.waiting), []

    def stored(self, event: RoomMessage) -> None:
        """An event is on this node's disk, in its room's log."""
        if event.kind not in STATE_KINDS:
            return
        state = self._held.get(event.room)
        if state is None and (reading := self._reading.get(event.room)) is not None:
            state = reading.state  # the read may have passed it: folding twice is once
        if state is not None:
            state.apply(event)

    def owns(self, token: int) -> bool:
        return token in self._rooms_by_token

    @property
    def held(self) -> int:
        return len(self._held)

    def _hold(self, room: str, state: RoomState) -> None:
        self._held[room] = state
        while len(self._held) > ROOM_STATES_HELD_MAX:
            self._held.popitem(last=False)


def refusal(state: RoomState, request: SendRequest) -> str | None:
    """Why the room's state refuses a write from its sender; None when it takes it."""
    if request.kind in STATE_KINDS:
        return state.event_refusal(request)
    return state.refusal(request.sender, "post")


def _load(token: int, room: str, after: str | None) -> Load:
    return Load(token, room, None, after, STATE_PAGE, state_only=True)
