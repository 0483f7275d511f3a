"""What happens to a room engine: every input reaches it as one of these, by one door.

`RoomEngine.handle(event, now)` takes a request of this node's clients, a peer's message,
the end of a storage effect, a new membership view or a tick, and returns effects. A
storage effect ends in exactly one `StorageDone`, its result or its failure, so no token
the engine gave out is left waiting.
"""

from collections.abc import Mapping
from typing import Literal

import msgspec

from router.digest import Digest
from router.effects import (
    DeleteHint,
    ExpireHints,
    ListRooms,
    Load,
    LoadDigest,
    LoadHints,
    LoadIds,
    LoadMemberships,
    LoadMessages,
    Store,
    StoreHint,
    StoreMembership,
    StoreReadMarker,
)
from router.event_rules import Relations
from router.records import MembershipChange, ReadMarker, RoomMessage
from router.wire import RouterMessage, SessionEvent
from router.writes import SendRequest

Health = Literal["alive", "suspect", "dead"]

# ---- requests of this node's clients (answered with Complete(ticket, outcome)) ----


class SendMessage(msgspec.Struct, frozen=True):
    ticket: int
    request: SendRequest


class ReadPage(msgspec.Struct, frozen=True):
    """A page of history from R replicas (`quorum` asks more or fewer), its messages
    within `bytes_max` (router/page_bytes.py) when given."""

    ticket: int
    room: str
    before: str | None
    after: str | None
    limit: int
    quorum: int | None = None
    bytes_max: int | None = None
    messages_only: bool = False  # a page for readers: no relations, their effect instead
    # Read from enough replicas to overlap every write quorum (N - W + 1), unless
    # `quorum` says otherwise: a check before a write must see every acknowledged one.
    overlapping: bool = False
    state_only: bool = False  # the room's state events alone (router/room_state.py)


class ResumeRoom(msgspec.Struct, frozen=True):
    """A page of a session's replay that began at `since` and is now at `after`. The
    first page (after == since) brings the late arrivals the replicas recorded, the last
    (not `more`) those this node noted itself: both may sort before `since` unseen."""

    ticket: int
    room: str
    after: str
    limit: int
    since: str


class Subscribe(msgspec.Struct, frozen=True):
    """This node has sessions in the room: Ready once its pushes will arrive."""

    ticket: int
    room: str


class Unsubscribe(msgspec.Struct, frozen=True):
    room: str


class AnnounceEvent(msgspec.Struct, frozen=True):
    """A presence or typing event of a local session, for the room's other nodes."""

    event: SessionEvent


class WhoIsIn(msgspec.Struct, frozen=True):
    ticket: int
    room: str


class RecordMembership(msgspec.Struct, frozen=True):
    ticket: int
    change: MembershipChange


class RecordReadMarker(msgspec.Struct, frozen=True):
    ticket: int
    marker: ReadMarker


class RoomsOf(msgspec.Struct, frozen=True):
    ticket: int
    user: str


ClientRequest = (
    SendMessage
    | ReadPage
    | ResumeRoom
    | Subscribe
    | Unsubscribe
    | AnnounceEvent
    | WhoIsIn
    | RecordMembership
    | RecordReadMarker
    | RoomsOf
)

# ---- what storage effects end with ----


class Stored(msgspec.Struct, frozen=True):
    """A Store or StoreHint is on disk: `kept` is the copy held; `known` says the send
    was held already (under this id, or as a twin the kept copy replaced)."""

    kept: RoomMessage
    known: bool


class Loaded(msgspec.Struct, frozen=True):
    """A Load or LoadMessages: the messages; `late` only for a Load with late_since_ms."""

    messages: list[RoomMessage]
    more: bool = False
    late: list[RoomMessage] = msgspec.field(default_factory=list)
    relations: list[Relations] = msgspec.field(default_factory=list)  # a Load's only


class HintsLoaded(msgspec.Struct, frozen=True):
    messages: list[RoomMessage]


class HintsExpired(msgspec.Struct, frozen=True):
    dropped: dict[str, int]  # owner -> hints dropped


class RoomsListed(msgspec.Struct, frozen=True):
    rooms: list[str]


class DigestLoaded(msgspec.Struct, frozen=True):
    digest: Digest


class IdsLoaded(msgspec.Struct, frozen=True):
    ids: list[str]
    more: bool


class MembershipsLoaded(msgspec.Struct, frozen=True):
    changes: list[MembershipChange]
    markers: list[ReadMarker] = []


class Done(msgspec.Struct, frozen=True):
    """A StoreMembership, StoreReadMarker or DeleteHint is on disk."""


class StorageFailed(msgspec.Struct, frozen=True):
    reason: str


StorageResult = (
    Stored
    | Loaded
    | HintsLoaded
    | HintsExpired
    | RoomsListed
    | DigestLoaded
    | IdsLoaded
    | MembershipsLoaded
    | Done
    | StorageFailed
)

StorageEffect = (
    Store
    | StoreHint
    | Load
    | LoadMessages
    | LoadHints
    | DeleteHint
    | ExpireHints
    | ListRooms
    | LoadDigest
    | LoadIds
    | StoreMembership
    | StoreReadMarker
    | LoadMemberships
)


class StorageDone(msgspec.Struct, frozen=True):
    """The end of `effect`: its result, or why it failed."""

    effect: StorageEffect
    result: StorageResult


# ---- the rest of the world ----


class PeerMessage(msgspec.Struct, frozen=True):
    """A room message from `sender`, a member the transport authenticated."""

    sender: str
    message: RouterMessage


class MembersChanged(msgspec.Struct, frozen=True):
    """The membership view: every node not departed, and its health."""

    members: Mapping[str, Health]


class Tick(msgspec.Struct, frozen=True):
    """Time passed: retries, deadlines, rounds and replays that are due."""


Event = ClientRequest | StorageDone | PeerMessage | MembersChanged | Tick
