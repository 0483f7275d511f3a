"""The messages nodes send each other about rooms: writes, reads, interest and fan-out.

Every message is a tagged msgspec Struct with bounded fields. They travel on the peer
transport next to the membership messages; the node decodes both with one union.
"""

from typing import Annotated, Final, Literal

import msgspec

from router.digest import BUCKET_DIGITS
from router.event_rules import Relations
from router.limits import JOINING_FOR_S_MAX, RETRY_AFTER_S_MAX
from router.records import (
    EventKind,
    MembershipChange,
    MessageIdText,
    ReactionKey,
    ReadMarker,
    RoomMessage,
    RoomName,
    UserName,
)

# Messages per read reply: a history page is at most a few hundred.
READ_MESSAGES_MAX: Final = 1000
# Late arrivals in one read reply (the most recent ones).
LATE_MESSAGES_MAX: Final = 500
# Rooms named in one interest registration; more are sent in several.
INTEREST_ROOMS_MAX: Final = 512
# Users in one answer to `who`.
USERS_MAX: Final = 10_000
# Room memberships of one user in one answer.
MEMBERSHIPS_MAX: Final = 10_000

RequestId = Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)]
Count = Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)]


class Forward(msgspec.Struct, frozen=True, tag="forward", omit_defaults=True):
    """Gateway to coordinator: store this send in the room and tell me its fate."""

    forward_id: RequestId
    room: RoomName
    sender: UserName
    client_msg_id: Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
    body: Annotated[str, msgspec.Meta(max_length=64 * 1024)]
    kind: EventKind = "message"
    target: MessageIdText | None = None
    reaction_key: ReactionKey | None = None
    reply_to: MessageIdText | None = None
    subject: UserName | None = None


class ForwardReply(msgspec.Struct, frozen=True, tag="forward_reply"):
    """Coordinator to gateway: the stored message, or why W copies were not made."""

    forward_id: RequestId
    message: RoomMessage | None = None
    duplicate: bool = False
    error: Annotated[str, msgspec.Meta(max_length=64)] = ""
    reason: Annotated[str, msgspec.Meta(max_length=512)] = ""
    retry_after_s: Annotated[float, msgspec.Meta(ge=0.001, le=RETRY_AFTER_S_MAX)] | None = None
    # Refused because the coordinator is still joining, for about so long: pass it over
    # until then (older nodes leave it out, and are retried as before).
    joining_for_s: Annotated[float, msgspec.Meta(ge=0.001, le=JOINING_FOR_S_MAX)] | None = None


class Replicate(msgspec.Struct, frozen=True, tag="replicate"):
    """Store a copy. write_id 0 is a repair: no acknowledgement wanted. With `hint_for`,
    the receiver stands in for that replica (it is down): it keeps the copy as a hint and
    hands it to the owner when the owner is back."""

    write_id: RequestId
    message: RoomMessage
    hint_for: Annotated[str, msgspec.Meta(max_length=64)] = ""
    handed_off: bool = False  # a hint handed back to its owner: a late arrival there


class ReplicaAck(msgspec.Struct, frozen=True, tag="replica_ack"):
    """A copy is on disk; kept_id is the id it is stored under (an older id of the same
    sender and client message id wins), empty when storing failed."""

    write_id: RequestId
    kept_id: Annotated[str, msgspec.Meta(max_length=81)] = ""


class ReadRequest(msgspec.Struct, frozen=True, tag="read"):
    read_id: RequestId
    room: RoomName
    before: MessageIdText | None = None
    after: MessageIdText | None = None
    limit: Annotated[int, msgspec.Meta(ge=1, le=READ_MESSAGES_MAX)] = 50
    # A resume's read: also the late arrivals recorded since then (wall-clock ms).
    late_since_ms: Count | None = None
    # A reader's page: messages alone, with what relations made of them (`relations`).
    messages_only: bool = False
    # The room's state events alone (router/room_state.py).
    state_only: bool = False


class ReadReply(msgspec.Struct, frozen=True, tag="read_reply"):
    """A replica's page, bounded in bytes as well as in count (router/page_bytes.py), so
    that it stays within the peer frame; `more` says it was cut short either way."""

    read_id: RequestId
    messages: Annotated[list[RoomMessage], msgspec.Meta(max_length=READ_MESSAGES_MAX + 1)] = []
    more: bool = False
    ok: bool = True
    late: Annotated[list[RoomMessage], msgspec.Meta(max_length=LATE_MESSAGES_MAX)] = []
    relations: Annotated[list[Relations], msgspec.Meta(max_length=READ_MESSAGES_MAX + 1)] = []


class Interest(msgspec.Struct, frozen=True, tag="interest"):
    """The sender has sessions in these rooms (or no longer has, for `withdrawn`): push
    their new messages and events to it. A registration lapses unless renewed."""

    request_id: RequestId
    rooms: Annotated[list[RoomName], msgspec.Meta(max_length=INTEREST_ROOMS_MAX)] = []
    withdrawn: Annotated[list[RoomName], msgspec.Meta(max_length=INTEREST_ROOMS_MAX)] = []


class InterestAck(msgspec.Struct, frozen=True, tag="interest_ack"):
    """Names each registration (room, then its number at this replica, parallel lists).
    A number the sender has not seen from this replica means the registration was made
    anew (the replica restarted or let it lapse): pushes may have been missed, so the
    sender catches that room up from history. Every renewal repeats the numbers, so a
    lost ack cannot hide the change."""

    request_id: RequestId
    rooms: Annotated[list[RoomName], msgspec.Meta(max_length=INTEREST_ROOMS_MAX)] = []
    registrations: Annotated[list[Count], msgspec.Meta(max_length=INTEREST_ROOMS_MAX)] = []


class Posted(msgspec.Struct, frozen=True, tag="posted"):
    message: RoomMessage

    @property
    def room(self) -> str:
        return self.message.room


class PresenceChanged(msgspec.Struct, frozen=True, tag="presence"):
    room: RoomName
    user: UserName
    state: Literal["joined", "left"]
    origin: Annotated[str, msgspec.Meta(max_length=64)]  # the node whose session changed


class TypingNotice(msgspec.Struct, frozen=True, tag="typing"):
    room: RoomName
    user: UserName
    origin: Annotated[str, msgspec.Meta(max_length=64)]


class ReadMarkerMoved(msgspec.Struct, frozen=True, tag="read_marker_moved"):
    """A user's read marker of the room moved, with the unread count after it: news for
    that user's own sessions on every node (a second device), and only now, as typing is."""

    room: RoomName
    user: UserName
    up_to: MessageIdText
    unread: Count
    unread_capped: bool
    through: MessageIdText | None  # the newest message the count read
    origin: Annotated[str, msgspec.Meta(max_length=64)]


# What a node's sessions hear of a room besides its messages.
SessionEvent = PresenceChanged | TypingNotice | ReadMarkerMoved
RoomEvent = Posted | PresenceChanged | TypingNotice | ReadMarkerMoved


class Push(msgspec.Struct, frozen=True, tag="push"):
    """One event on a coordinator's ordered, acknowledged stream to an interested node.

    `epoch` names the stream (the sender's incarnation); `base` is the oldest sequence
    number the sender still holds unacknowledged, where a receiver new to the stream starts.
    """

    epoch: Count
    seq: Count
    base: Count
    event: RoomEvent


class PushAck(msgspec.Struct, frozen=True, tag="push_ack"):
    """Every push up to `through` arrived (cumulative)."""

    epoch: Count
    through: Count


class Announce(msgspec.Struct, frozen=True, tag="announce"):
    """To the room's coordinator: fan this out to the room. A presence or typing event
    from a gateway, or a message a replica has just been repaired with (it may never
    have reached some members: it was written where they could not hear)."""

    event: Posted | PresenceChanged | TypingNotice | ReadMarkerMoved


class WhoRequest(msgspec.Struct, frozen=True, tag="who"):
    request_id: RequestId
    room: RoomName


class WhoReply(msgspec.Struct, frozen=True, tag="who_reply"):
    request_id: RequestId
    users: Annotated[list[UserName], msgspec.Meta(max_length=USERS_MAX)] = []


class MembershipUpdate(msgspec.Struct, frozen=True, tag="membership"):
    """Gateway to one of the user's nodes: keep this change of the user's rooms."""

    request_id: RequestId
    change: MembershipChange


class MembershipAck(msgspec.Struct, frozen=True, tag="membership_ack"):
    request_id: RequestId


class MembershipQuery(msgspec.Struct, frozen=True, tag="memberships"):
    request_id: RequestId
    user: UserName


class MembershipReply(msgspec.Struct, frozen=True, tag="memberships_reply"):
    request_id: RequestId
    changes: Annotated[list[MembershipChange], msgspec.Meta(max_length=MEMBERSHIPS_MAX)] = []
    markers: Annotated[list[ReadMarker], msgspec.Meta(max_length=MEMBERSHIPS_MAX)] = []


class ReadMarkerUpdate(msgspec.Struct, frozen=True, tag="read_marker"):
    """Gateway to one of the user's nodes: keep this read marker (acked by MembershipAck)."""

    request_id: RequestId
    marker: ReadMarker


# Buckets named in one digest offer; a room with more is offered a slice per round.
DIGEST_BUCKETS_MAX: Final = 4096
# Ids in one page of a bucket compared between two replicas.
ID_PAGE_MAX: Final = 2000

# A bucket is a fixed-width hex prefix of ids (router/digest.py): anything else is not.
BucketName = Annotated[
    str, msgspec.Meta(max_length=BUCKET_DIGITS, pattern=rf"^[0-9a-f]{{{BUCKET_DIGITS}}}$(?!\n)")
]


class BucketDigest(msgspec.Struct, frozen=True, array_like=True):
    bucket: BucketName
    count: Count
    total: Count


class DigestOffer(msgspec.Struct, frozen=True, tag="digest_offer"):
    """Anti-entropy: what the sender holds of a room, bucket by bucket."""

    exchange_id: RequestId
    room: RoomName
    buckets: Annotated[list[BucketDigest], msgspec.Meta(max_length=DIGEST_BUCKETS_MAX)] = []
    # The sender is no replica of the room (it holds copies written while its view of the
    # mesh was partial): it only gives, and takes nothing back.
    give_only: bool = False


class DigestDiff(msgspec.Struct, frozen=True, tag="digest_diff"):
    """The buckets of an offer that differ here: compare their ids."""

    exchange_id: RequestId
    room: RoomName
    buckets: Annotated[list[BucketName], msgspec.Meta(max_length=DIGEST_BUCKETS_MAX)] = []
    give_only: bool = False


class IdPage(msgspec.Struct, frozen=True, tag="id_page"):
    """The sender's ids of a bucket after `after` (up to ID_PAGE_MAX; `more` if cut)."""

    room: RoomName
    bucket: BucketName
    after: Annotated[str, msgspec.Meta(max_length=81)]
    ids: Annotated[list[MessageIdText], msgspec.Meta(max_length=ID_PAGE_MAX)] = []
    more: bool = False
    give_only: bool = False


class Want(msgspec.Struct, frozen=True, tag="want"):
    """Send me these messages of the room (the receiver holds them, the sender does not);
    `next_after` asks for the bucket's next page of ids too."""

    room: RoomName
    bucket: BucketName
    ids: Annotated[list[MessageIdText], msgspec.Meta(max_length=ID_PAGE_MAX)] = []
    next_after: Annotated[str, msgspec.Meta(max_length=81)] = ""


RouterMessage = (
    Forward
    | ForwardReply
    | Replicate
    | ReplicaAck
    | ReadRequest
    | ReadReply
    | Interest
    | InterestAck
    | Push
    | PushAck
    | Announce
    | WhoRequest
    | WhoReply
    | MembershipUpdate
    | MembershipAck
    | MembershipQuery
    | MembershipReply
    | ReadMarkerUpdate
    | DigestOffer
    | DigestDiff
    | IdPage
    | Want
)
