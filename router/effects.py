"""What the room engine asks its shell to do, and what it reports back for a request.

The engine never touches a socket or a disk: it returns these, and the shell (the node,
or the simulator) carries them out and reports completions back by token.
"""

import msgspec

from router.error_codes import ErrorCode
from router.event_rules import MessageState
from router.records import MembershipChange, ReadMarker, RoomMessage
from router.wire import RouterMessage, SessionEvent


class SendPeer(msgspec.Struct, frozen=True):
    node: str
    message: RouterMessage


class Store(msgspec.Struct, frozen=True):
    """Write a copy durably; report with RoomEngine.stored(token, kept). With
    `late_at_ms`, the copy arrived long after its id's time: if it is new here, record it
    as a late arrival at that wall-clock time, for resumes to find (Load.late_since_ms)."""

    token: int
    message: RoomMessage
    late_at_ms: int | None = None


class Load(msgspec.Struct, frozen=True):
    """Read a page of this node's copy of a room; report with RoomEngine.loaded(token, ...)."""

    token: int
    room: str
    before: str | None
    after: str | None
    limit: int
    # Also the late arrivals recorded since then (wall-clock ms) with ids up to `after`;
    # report them with loaded(..., late=...).
    late_since_ms: int | None = None
    messages_only: bool = False  # no relations: what they made of each message instead
    state_only: bool = False  # the room's state events alone (router/room_state.py)


class StoreHint(msgspec.Struct, frozen=True):
    """Keep a copy for `owner`, durably, until it is handed over; report with
    stored(token, message or None, duplicate)."""

    token: int
    owner: str
    message: RoomMessage


class LoadHints(msgspec.Struct, frozen=True):
    """Hints held for `owner` with ids after `after`, in id order, at most `limit`;
    report with hints_loaded(token, messages)."""

    token: int
    owner: str
    limit: int
    after: str = ""


class DeleteHint(msgspec.Struct, frozen=True):
    """The owner has the message on disk: forget the hint."""

    owner: str
    message_id: str


class ExpireHints(msgspec.Struct, frozen=True):
    """Drop hints past the bounds (age, then count and bytes per owner, oldest first);
    report with hints_expired(token, {owner: dropped})."""

    token: int
    older_than_ms: int
    count_max: int
    bytes_max: int


class ListRooms(msgspec.Struct, frozen=True):
    """Name every room this node holds messages of; report with rooms_listed(token, ...)."""

    token: int


class LoadDigest(msgspec.Struct, frozen=True):
    """Summarise this node's copy of a room (router/digest.py); report with
    digest_loaded(token, digest)."""

    token: int
    room: str


class LoadIds(msgspec.Struct, frozen=True):
    """Ids of a room strictly between after and before, oldest first, at most `limit`;
    report with ids_loaded(token, ids, more)."""

    token: int
    room: str
    after: str
    before: str
    limit: int


class LoadMessages(msgspec.Struct, frozen=True):
    """These messages of a room (those held); report with loaded(token, messages, False)."""

    token: int
    room: str
    ids: list[str]


class StoreMembership(msgspec.Struct, frozen=True):
    """Keep a change of a user's rooms (the latest per room wins); report with
    RoomEngine.membership_stored(token, ok)."""

    token: int
    change: MembershipChange


class StoreReadMarker(msgspec.Struct, frozen=True):
    """Keep a user's read marker of a room (the greatest per room wins); report with Done."""

    token: int
    marker: ReadMarker


class LoadMemberships(msgspec.Struct, frozen=True):
    """The latest change of each of the user's rooms held here, and the user's read
    markers; report with MembershipsLoaded."""

    token: int
    user: str


class DeliverMessage(msgspec.Struct, frozen=True):
    """A new message for this node's sessions in its room (each id once)."""

    message: RoomMessage


class DeliverEvent(msgspec.Struct, frozen=True):
    """A presence or typing event for this node's sessions in its room."""

    event: SessionEvent


class Warn(msgspec.Struct, frozen=True):
    """Something an operator should see in the log."""

    text: str


class Refusal(msgspec.Struct, frozen=True):
    """A peer's message was refused as it stood (its values out of bounds): counted, and
    logged once per peer by the shell, so a flood of them cannot flood the log."""

    sender: str
    reason: str


# ---- outcomes of requests made by the shell (completed with `Complete`) ----


class Acked(msgspec.Struct, frozen=True):
    message: RoomMessage
    duplicate: bool


class Refused(msgspec.Struct, frozen=True):
    code: ErrorCode  # unavailable (a retry is safe) or internal
    reason: str
    retry_after_s: float | None = None  # when a retry may succeed, if known


class Page(msgspec.Struct, frozen=True):
    messages: list[RoomMessage]
    more: bool
    # Asked for by resumes: messages that reached a replica late, with ids at or before
    # the page's start (a client resuming from there never saw them).
    late: list[RoomMessage] = msgspec.field(default_factory=list)
    # What relations made of the page's messages (those they touched), merged over the
    # replicas that answered.
    relations: dict[str, MessageState] = msgspec.field(default_factory=dict)


class Users(msgspec.Struct, frozen=True):
    users: list[str]


class Rooms(msgspec.Struct, frozen=True):
    rooms: list[str]
    read_up_to: dict[str, str] = {}  # room -> the user's read marker, in any room
    # Enough of the user's nodes answered to overlap every W copies of what was recorded.
    complete: bool = False
    known: list[str] = []  # every room the user ever joined (left ones too)


class Ready(msgspec.Struct, frozen=True):
    """Interest in a room is registered with its coordinator: live pushes will arrive."""


Outcome = Acked | Refused | Page | Users | Rooms | Ready


class Complete(msgspec.Struct, frozen=True):
    ticket: int
    outcome: Outcome


Effect = (
    SendPeer
    | Store
    | StoreHint
    | LoadHints
    | DeleteHint
    | ExpireHints
    | Load
    | ListRooms
    | LoadDigest
    | LoadIds
    | LoadMessages
    | StoreMembership
    | StoreReadMarker
    | LoadMemberships
    | DeliverMessage
    | DeliverEvent
    | Warn
    | Refusal
    | Complete
)
