"""The native client protocol's messages: one tagged union per direction, msgpack in frames.

docs/protocol.md is the specification; this module is its code. Structs that clients send
ignore unknown fields on purpose: a newer client's optional additions must not break an
older node. Every string and list a client sends has a length limit here; limits an
operator can configure (body size, rooms per session) are checked by the gateway.
"""

from typing import Annotated, Final, Literal

import msgspec

from mesh.wire.errors import ErrorCode, ProtocolError
from mesh.wire.names import (
    ROOM_NAME_LENGTH_MAX,
    ROOM_NAME_PATTERN,
    USER_NAME_LENGTH_MAX,
    USER_NAME_PATTERN,
)
from mesh.wire.validation_words import in_words
from router.message_ids import MESSAGE_ID_PATTERN

PROTOCOL_VERSION: Final = 1
# Minor versions add optional fields and new message kinds only; a client of any minor
# version of the same major is served.
PROTOCOL_MINOR: Final = 6
# The first minor version whose clients get edits, deletes and reactions (and replies).
MINOR_ROOM_EVENTS: Final = 4
# The first minor version with read markers and unread counts.
MINOR_READ_MARKERS: Final = 5
# The first minor version with room state: owners, policies, invitations and bans.
MINOR_ROOM_STATE: Final = 6
# The ceiling of every frame's payload, both directions; a node may configure lower.
CLIENT_FRAME_BYTES_MAX: Final = 1024 * 1024
HISTORY_LIMIT_MAX: Final = 200
HISTORY_LIMIT_DEFAULT: Final = 50
NESTING_TOO_DEEP: Final = "frame nested too deeply"

RequestId = Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)]
Room = Annotated[
    str, msgspec.Meta(min_length=1, max_length=ROOM_NAME_LENGTH_MAX, pattern=ROOM_NAME_PATTERN)
]
MessageIdText = Annotated[str, msgspec.Meta(max_length=82, pattern=MESSAGE_ID_PATTERN)]
ClientMsgId = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
Body = Annotated[str, msgspec.Meta(max_length=CLIENT_FRAME_BYTES_MAX)]
Token = Annotated[str, msgspec.Meta(max_length=4096)]
TargetId = Annotated[str, msgspec.Meta(min_length=1, max_length=82, pattern=MESSAGE_ID_PATTERN)]
# At most 16 characters, so at most 64 bytes of UTF-8 (the log's bound, records.py).
REACTION_KEY_LENGTH_MAX: Final = 16
# No spaces or control characters: a key is shown as it is, in a row of others.
REACTION_KEY_PATTERN: Final = r"^[^\x00-\x20\x7f-\x9f]+$(?!\n)"
ReactionKey = Annotated[
    str,
    msgspec.Meta(min_length=1, max_length=REACTION_KEY_LENGTH_MAX, pattern=REACTION_KEY_PATTERN),
]


UserName = Annotated[
    str, msgspec.Meta(min_length=1, max_length=USER_NAME_LENGTH_MAX, pattern=USER_NAME_PATTERN)
]
# What a room change does (router/room_state.py has the rules; docs/rooms.md tells them).
RoomOp = Literal["create", "set_policy", "set_role", "invite", "kick", "ban", "unban", "set_topic"]
RoomPolicy = Literal["open", "invite", "read_only"]
RoomRole = Literal["owner", "moderator", "member"]
TOPIC_LENGTH_MAX: Final = 512


class _Request(msgspec.Struct, frozen=True, kw_only=True):
    request_id: RequestId


# ---- client to node ----


class Hello(msgspec.Struct, frozen=True, kw_only=True, tag="hello"):
    """The first frame of every session."""

    versions: Annotated[list[int], msgspec.Meta(min_length=1, max_length=16)]
    minor: int = 0
    client: Annotated[str, msgspec.Meta(max_length=64)] = ""
    token: Token = ""


class Join(_Request, frozen=True, kw_only=True, tag="join"):
    room: Room
    since: MessageIdText | None = None


class LeaveRoom(_Request, frozen=True, kw_only=True, tag="leave"):
    room: Room


class Send(_Request, frozen=True, kw_only=True, tag="send"):
    room: Room
    client_msg_id: ClientMsgId
    body: Body
    reply_to: TargetId | None = None  # the message this one answers (since 1.4)


class Edit(_Request, frozen=True, kw_only=True, tag="edit"):
    """A new body for one of the user's own messages (since 1.4); answered with sent."""

    room: Room
    client_msg_id: ClientMsgId
    id: TargetId
    body: Body


class Delete(_Request, frozen=True, kw_only=True, tag="delete"):
    """Take back one of the user's own messages: its body and reactions are erased
    (since 1.4); answered with sent."""

    room: Room
    client_msg_id: ClientMsgId
    id: TargetId


class React(_Request, frozen=True, kw_only=True, tag="react"):
    """Add (or with `remove`, take back) the user's reaction `key` to a message (since
    1.4); answered with sent."""

    room: Room
    client_msg_id: ClientMsgId
    id: TargetId
    key: ReactionKey
    remove: bool = False


class MarkRead(_Request, frozen=True, kw_only=True, tag="mark_read"):
    """Move the user's read marker of a room forward to message `up_to`, or to the room's
    newest message (since 1.5); answered with unread, for that room."""

    room: Room
    up_to: MessageIdText | None = None


class GetUnread(_Request, frozen=True, kw_only=True, tag="unread"):
    """The user's unread counts: of one room, or of every room the user is in (since
    1.5); answered with unread."""

    room: Room | None = None


class History(_Request, frozen=True, kw_only=True, tag="history"):
    room: Room
    before: MessageIdText | None = None
    after: MessageIdText | None = None
    limit: Annotated[int, msgspec.Meta(ge=1, le=HISTORY_LIMIT_MAX)] = HISTORY_LIMIT_DEFAULT


class ListRooms(_Request, frozen=True, kw_only=True, tag="rooms"):
    """The user's rooms."""


class Who(_Request, frozen=True, kw_only=True, tag="who"):
    room: Room


class Typing(_Request, frozen=True, kw_only=True, tag="typing"):
    room: Room


class Ping(_Request, frozen=True, kw_only=True, tag="ping"):
    """Is the node there? Answered with pong."""


class Where(_Request, frozen=True, kw_only=True, tag="where"):
    """Which nodes hold a room, and which of them are alive (since 1.2)."""

    room: Room


class ChangeRoom(_Request, frozen=True, kw_only=True, tag="room_change"):
    """Create a room or change its state (since 1.6): `user` is whom an invite, kick,
    ban, unban or set_role is about; `value` is the policy (create, set_policy), the
    role (set_role) or the topic (set_topic). Answered with room."""

    room: Room
    op: RoomOp
    user: UserName | None = None
    value: Annotated[str, msgspec.Meta(max_length=TOPIC_LENGTH_MAX)] = ""
    client_msg_id: ClientMsgId | None = None  # a retry with the same id changes it once


class ShowRoom(_Request, frozen=True, kw_only=True, tag="room_show"):
    """A room's state: policy, topic, roles, invitations and bans (since 1.6)."""

    room: Room


class StatusRequest(_Request, frozen=True, kw_only=True, tag="status"):
    """The mesh as this node sees it."""


ClientMessage = (
    Hello
    | Join
    | LeaveRoom
    | Send
    | Edit
    | Delete
    | React
    | MarkRead
    | GetUnread
    | History
    | ListRooms
    | Who
    | Typing
    | Ping
    | StatusRequest
    | Where
    | ChangeRoom
    | ShowRoom
)


# ---- node to client: replies ----


class Welcome(msgspec.Struct, frozen=True, kw_only=True, tag="welcome"):
    version: int
    minor: int
    node: str
    user: str
    limits: dict[str, float] = {}


class ErrorReply(msgspec.Struct, frozen=True, kw_only=True, tag="error", omit_defaults=True):
    code: ErrorCode
    message: str
    request_id: RequestId | None = None
    retry_after_s: float | None = None


class Deletion(msgspec.Struct, frozen=True, kw_only=True):
    by: str
    at_ms: int


class Message(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """A message as readers see it now (its view since 1.4: clients of older minor
    versions get edited bodies and no deleted messages, and none of these fields)."""

    id: str
    room: str
    sender: str
    time_ms: int
    body: str
    client_msg_id: str = ""
    reply_to: str | None = None
    edited_at_ms: int | None = None
    deleted: Deletion | None = None  # its body and reactions are gone
    reactions: dict[str, list[str]] = {}  # key -> the users who reacted so, sorted


class Joined(_Request, frozen=True, kw_only=True, tag="joined"):
    room: str
    members: list[str]
    # The newest message id in the room when the join took effect (null in an empty room):
    # a client resumes from here if it has seen nothing newer.
    head: str | None = None
    # Since 1.5: the user's read marker and unread count (null when the count could not
    # be read; `unread_capped`: there are more, shown as "1000+").
    read_up_to: str | None = None
    unread: int | None = None
    unread_capped: bool = False
    unread_through: str | None = None  # the newest message the count read


class Sent(_Request, frozen=True, kw_only=True, tag="sent"):
    id: str
    time_ms: int
    duplicate: bool = False


class HistoryPage(_Request, frozen=True, kw_only=True, tag="history"):
    room: str
    messages: list[Message]
    cursor: str | None  # pass as `before` (or `after`, paging forward) for the next page


class UnreadCount(msgspec.Struct, frozen=True, kw_only=True):
    room: str
    read_up_to: str | None  # null until the user has read the room
    count: int  # messages after the marker that others sent, at most 1000
    capped: bool = False  # there are more than `count`
    # The newest message the count read: count only later ones as they arrive.
    through: str | None = None


class UnreadCounts(_Request, frozen=True, kw_only=True, tag="unread"):
    rooms: list[UnreadCount]


class RoomList(_Request, frozen=True, kw_only=True, tag="rooms"):
    rooms: list[str]


class Members(_Request, frozen=True, kw_only=True, tag="members"):
    room: str
    users: list[str]


class Ok(_Request, frozen=True, kw_only=True, tag="ok"):
    """The request was carried out; there is nothing more to say."""


class Pong(_Request, frozen=True, kw_only=True, tag="pong"):
    time_ms: int


class RoomInfo(_Request, frozen=True, kw_only=True, tag="room"):
    """A room's state as the node read it from the room's replicas (since 1.6); after a
    room_change, `changed` is the id of the state event it stored."""

    room: str
    created_by: str | None = None  # null for a room nobody created: open, unowned
    policy: RoomPolicy = "open"
    topic: str = ""
    roles: dict[str, RoomRole] = {}
    invited: list[str] = []
    banned: list[str] = []
    changed: str | None = None


class MemberStatus(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    address: str
    state: str
    incarnation: int
    last_heard_s: float | None
    dropped: int
    hints: int = 0  # copies this node holds for it while it was down (since 1.3)
    oldest_hint_s: float | None = None  # age of the oldest of them


class StatusReply(_Request, frozen=True, kw_only=True, tag="status"):
    node: str
    members: list[MemberStatus]
    counters: dict[str, int] = {}


class Replica(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    state: str  # alive, suspect, dead or left, as the answering node sees it


class Placement(_Request, frozen=True, kw_only=True, tag="placement"):
    """The answer to `where` (since 1.2): the room's preference list, in order."""

    room: str
    replicas_wanted: int  # N, the replication factor
    replicas: list[Replica]
    coordinator: str | None  # the first alive replica; null if none is alive


# ---- node to client: events (no request id) ----


class MessageEvent(msgspec.Struct, frozen=True, kw_only=True, tag="message"):
    message: Message


class RelationEvent(msgspec.Struct, frozen=True, kw_only=True, tag="relation", omit_defaults=True):
    """An edit, delete, reaction or unreaction of message `target` (since 1.4). `id` is
    the event's own place in the room's log: a resume from it has seen this event. The
    rules that combine them are in docs/events.md; history pages carry their result."""

    id: str
    room: str
    kind: Literal["edit", "delete", "reaction", "unreaction"]
    target: str
    sender: str
    time_ms: int
    body: str = ""  # an edit's new body
    key: str = ""  # a reaction's key
    client_msg_id: str = ""


class ReadMarkerEvent(msgspec.Struct, frozen=True, kw_only=True, tag="read_marker"):
    """The user's read marker of a room moved, on another of the user's sessions (since
    1.5): only the user's own sessions are told."""

    room: str
    read_up_to: str
    unread: int
    unread_capped: bool = False
    unread_through: str | None = None  # the newest message the count read


class RoomStateEvent(msgspec.Struct, frozen=True, kw_only=True, tag="room_state"):
    """A room's state changed (since 1.6): `op` by `sender`, about `user`, to `value`
    (as in room_change). A session whose user may no longer read the room is taken out
    of it after this event, and hears nothing more of it."""

    id: str
    room: str
    op: RoomOp
    sender: str
    time_ms: int
    user: str | None = None
    value: str = ""


class PresenceEvent(msgspec.Struct, frozen=True, kw_only=True, tag="presence"):
    room: str
    user: str
    state: Literal["joined", "left"]


class TypingEvent(msgspec.Struct, frozen=True, kw_only=True, tag="typing"):
    room: str
    user: str


Reply = (
    Welcome
    | ErrorReply
    | Joined
    | Sent
    | HistoryPage
    | UnreadCounts
    | RoomList
    | Members
    | Ok
    | Pong
    | StatusReply
    | Placement
    | RoomInfo
)
Event = (
    MessageEvent | RelationEvent | ReadMarkerEvent | RoomStateEvent | PresenceEvent | TypingEvent
)
NodeMessage = Reply | Event


# ---- codecs ----

_encoder = msgspec.msgpack.Encoder()
_client_decoder: msgspec.msgpack.Decoder[ClientMessage] = msgspec.msgpack.Decoder(ClientMessage)
_node_decoder: msgspec.msgpack.Decoder[NodeMessage] = msgspec.msgpack.Decoder(NodeMessage)


class _RequestIdOnly(msgspec.Struct):
    request_id: RequestId | None = None


# Decoding into this struct skips every other field without building it: a 1 MiB frame of
# nested empty arrays costs milliseconds here, not a second and 60 MiB as a loose decode.
_request_id_decoder = msgspec.msgpack.Decoder(_RequestIdOnly)


def encode(message: ClientMessage | NodeMessage) -> bytes:
    return _encoder.encode(message)


def decode_client_message(payload: bytes) -> ClientMessage:
    """Decode what a client sent, or raise ProtocolError with the code to answer.

    Bytes that are not msgpack at all close the session; well-formed msgpack that is not
    a valid request is a bad request that the session survives.
    """
    try:
        return _client_decoder.decode(payload)
    except msgspec.ValidationError as error:
        raise ProtocolError(ErrorCode.BAD_REQUEST, in_words(str(error))) from error
    except msgspec.DecodeError as error:
        message = f"undecodable frame: {error}"
        raise ProtocolError(ErrorCode.BAD_REQUEST, message, close=True) from error
    except RecursionError as error:
        # msgspec recurses once per level, also while skipping an unknown field.
        raise ProtocolError(ErrorCode.BAD_REQUEST, NESTING_TOO_DEEP) from error


def request_id_of(payload: bytes) -> int | None:
    """The request id of a request that failed validation, so the error can carry it back."""
    try:
        return _request_id_decoder.decode(payload).request_id
    except (msgspec.DecodeError, RecursionError):  # ValidationError is a DecodeError
        return None


class NodeReplyError(ConnectionError):
    """A frame from the node that is no valid reply or event: the connection is unusable."""


def decode_node_message(payload: bytes) -> NodeMessage:
    """Decode what a node sent, or raise NodeReplyError; never anything else."""
    try:
        return _node_decoder.decode(payload)
    except (msgspec.DecodeError, RecursionError) as error:
        raise NodeReplyError(f"the node sent an invalid frame: {error}") from error
