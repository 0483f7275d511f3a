"""A chat message as every replica stores it and every node passes it on."""

from typing import Annotated, Final, Literal

import msgspec

from router.message_ids import MESSAGE_ID_PATTERN

# Bounds a peer accepts for one message's fields; the client protocol's own limits are
# smaller, so anything a gateway let in passes between nodes.
ROOM_NAME_MAX: Final = 128
USER_NAME_MAX: Final = 128
CLIENT_MSG_ID_MAX: Final = 128
BODY_CHARS_MAX: Final = 64 * 1024
MESSAGE_ID_MAX: Final = 17 + 64
REACTION_KEY_BYTES_MAX: Final = 64
# SQLite keeps integers in 64 bits: a peer's time past this would fail a whole commit.
TIME_MS_MAX: Final = 2**63 - 1

RoomName = Annotated[str, msgspec.Meta(min_length=1, max_length=ROOM_NAME_MAX)]
UserName = Annotated[str, msgspec.Meta(min_length=1, max_length=USER_NAME_MAX)]
ClientMsgId = Annotated[str, msgspec.Meta(min_length=1, max_length=CLIENT_MSG_ID_MAX)]
Body = Annotated[str, msgspec.Meta(max_length=BODY_CHARS_MAX)]
# Every id a peer sends is a real one: text that is not would sort after every id and
# could never be a client's cursor.
MessageIdText = Annotated[
    str, msgspec.Meta(min_length=1, max_length=MESSAGE_ID_MAX, pattern=MESSAGE_ID_PATTERN)
]


# What an event of a room log is: a message, a relation of one (router/event_rules.py has
# the rules that combine them), or a state event (router/room_state.py).
EventKind = Literal[
    "message",
    "edit",
    "delete",
    "reaction",
    "unreaction",
    "create",
    "set_policy",
    "set_role",
    "invite",
    "kick",
    "ban",
    "unban",
    "set_topic",
]
ReactionKey = Annotated[str, msgspec.Meta(min_length=1, max_length=REACTION_KEY_BYTES_MAX)]


class RoomMessage(msgspec.Struct, frozen=True, omit_defaults=True):
    """One event of a room log, a message unless `kind` says otherwise. (sender,
    client_msg_id) names it for the client: a retry with the same pair is the same event,
    whichever coordinator assigned its id. A relation names its `target` message; `body`
    is a message's or an edit's text, `reaction_key` a reaction's; `reply_to` is the message a
    message answers. A state event names the user it is about as `subject`, and carries
    its value (a policy, a role, a topic) as `body`."""

    id: MessageIdText
    room: RoomName
    sender: UserName
    client_msg_id: ClientMsgId
    time_ms: Annotated[int, msgspec.Meta(ge=0, le=TIME_MS_MAX)]
    body: Body
    kind: EventKind = "message"
    target: MessageIdText | None = None
    reaction_key: ReactionKey | None = None
    reply_to: MessageIdText | None = None
    subject: UserName | None = None

    @property
    def order(self) -> tuple[int, str]:
        return (self.time_ms, self.id)

    @property
    def key(self) -> tuple[str, str]:
        return (self.sender, self.client_msg_id)


class MembershipChange(msgspec.Struct, frozen=True):
    """A user joined (or left) a room at `time_ms` (the gateway's wall clock). The latest
    change of a (user, room) wins; at the same millisecond a join wins."""

    user: UserName
    room: RoomName
    joined: bool
    time_ms: Annotated[int, msgspec.Meta(ge=0)]

    @property
    def order(self) -> tuple[int, bool]:
        return (self.time_ms, self.joined)


class ReadMarker(msgspec.Struct, frozen=True):
    """How far a user has read a room: every message up to `up_to` (a message id). A
    max-register: a marker only moves forward, so the greatest one held anywhere wins."""

    user: UserName
    room: RoomName
    up_to: MessageIdText
