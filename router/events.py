"""What happens to a room engine: every input reaches it as one of these, by one door.

`RoomEngine.handle(event, now)` takes a request of this node's clients, a peer's message,
the end of a storage effect, a new membership view or a tick, and returns effects. A
storage effect ends in exactly one `StorageDone`, its result or its failure, so no token
the engine gave out is left waiting.
"""

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

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
)
from router.records import MembershipChange, RoomMessage
from router.wire import PresenceChanged, RouterMessage, TypingNotice
from router.writes import SendRequest

Health = Literal["alive", "suspect", "dead"]

# ---- requests of this node's clients (answered with Complete(ticket, outcome)) ----


@dataclass(frozen=True, slots=True)
class SendMessage:
    ticket: int
    request: SendRequest


@dataclass(frozen=True, slots=True)
class ReadPage:
    """A page of history from R replicas (`quorum` asks more or fewer), its messages
    within `bytes_max` (router/page_bytes.py) when given."""

    ticket: int
    room: str
    before: str | None
    after: str | None
    limit: int
    quorum: int | None = None
    bytes_max: int | None = None


@dataclass(frozen=True, slots=True)
class ResumeRoom:
    """A page of a session's replay that began at `since` and is now at `after`. The
    first page (after == since) brings the late arrivals the replicas recorded, the last
    (not `more`) those this node noted itself: both may sort before `since` unseen."""

    ticket: int
    room: str
    after: str
    limit: int
    since: str


@dataclass(frozen=True, slots=True)
class Subscribe:
    """This node has sessions in the room: Ready once its pushes will arrive."""

    ticket: int
    room: str


@dataclass(frozen=True, slots=True)
class Unsubscribe:
    room: str


@dataclass(frozen=True, slots=True)
class AnnounceEvent:
    """A presence or typing event of a local session, for the room's other nodes."""

    event: PresenceChanged | TypingNotice


@dataclass(frozen=True, slots=True)
class WhoIsIn:
    ticket: int
    room: str


@dataclass(frozen=True, slots=True)
class RecordMembership:
    ticket: int
    change: MembershipChange


@dataclass(frozen=True, slots=True)
class RoomsOf:
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
    | RoomsOf
)

# ---- what storage effects end with ----


@dataclass(frozen=True, slots=True)
class Stored:
    """A Store or StoreHint is on disk: `kept` is the copy held; `known` says the send
    was held already (under this id, or as a twin the kept copy replaced)."""

    kept: RoomMessage
    known: bool


@dataclass(frozen=True, slots=True)
class Loaded:
    """A Load or LoadMessages: the messages; `late` only for a Load with late_since_ms."""

    messages: list[RoomMessage]
    more: bool = False
    late: list[RoomMessage] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class HintsLoaded:
    messages: list[RoomMessage]


@dataclass(frozen=True, slots=True)
class HintsExpired:
    dropped: dict[str, int]  # owner -> hints dropped


@dataclass(frozen=True, slots=True)
class RoomsListed:
    rooms: list[str]


@dataclass(frozen=True, slots=True)
class DigestLoaded:
    digest: Digest


@dataclass(frozen=True, slots=True)
class IdsLoaded:
    ids: list[str]
    more: bool


@dataclass(frozen=True, slots=True)
class MembershipsLoaded:
    changes: list[MembershipChange]


@dataclass(frozen=True, slots=True)
class Done:
    """A StoreMembership or DeleteHint is on disk."""


@dataclass(frozen=True, slots=True)
class StorageFailed:
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
    | LoadMemberships
)


@dataclass(frozen=True, slots=True)
class StorageDone:
    """The end of `effect`: its result, or why it failed."""

    effect: StorageEffect
    result: StorageResult


# ---- the rest of the world ----


@dataclass(frozen=True, slots=True)
class PeerMessage:
    """A room message from `sender`, a member the transport authenticated."""

    sender: str
    message: RouterMessage


@dataclass(frozen=True, slots=True)
class MembersChanged:
    """The membership view: every node not departed, and its health."""

    members: Mapping[str, Health]


@dataclass(frozen=True, slots=True)
class Tick:
    """Time passed: retries, deadlines, rounds and replays that are due."""


Event = ClientRequest | StorageDone | PeerMessage | MembersChanged | Tick
