"""How many bytes a page of messages takes, and cutting a page to a byte budget.

Every reply that carries messages (a replica's answer to a read and the late arrivals it
brings, a client's history page) is bounded in bytes as well as in count: a page of a
thousand 64 KiB bodies would otherwise be a 64 MB frame, over every frame limit. A page
cut short by bytes says `more`, as one cut short by count does, and it keeps at least
one message, so that walking pages by their cursor always advances. A lone message
always fits: bodies are bounded well below every budget (ClientLimits for clients,
MESSAGE_BYTES_MAX here for peers).

Sizes are estimates that are never below the msgpack encoding of a message on either
wire: the UTF-8 length of its text fields plus a fixed overhead.
"""

from collections.abc import Callable, Mapping, Sequence
from typing import Final, TypeVar

import msgspec

from router.event_rules import Relations
from router.records import (
    BODY_CHARS_MAX,
    CLIENT_MSG_ID_MAX,
    MESSAGE_ID_MAX,
    REACTION_KEY_BYTES_MAX,
    ROOM_NAME_MAX,
    USER_NAME_MAX,
    RoomMessage,
)

# One message beside the UTF-8 of its text fields, on the peer wire (RoomMessage) and
# the client wire (protocol.Message): field names 42 bytes, the map header 1, string and
# integer headers at most 25 (a 64-bit time_ms takes 9): 68 bytes, rounded up.
MESSAGE_OVERHEAD_BYTES: Final = 96
# What a relation or a state event adds at most: kind, target, reaction_key, reply_to and
# subject, with their names.
RELATION_BYTES_MAX: Final = 2 * MESSAGE_ID_MAX + REACTION_KEY_BYTES_MAX + 4 * USER_NAME_MAX + 80
# A replica's answer to a read (router/wire.py ReadReply): its page and the late arrivals
# it brings each have a budget, together 3 MiB, leaving a quarter of the 4 MiB peer frame
# (peers/limits.py PEER_FRAME_BYTES_MAX) for the reply's other fields and framing.
READ_PAGE_BYTES_MAX: Final = 2 * 1024 * 1024
LATE_PAGE_BYTES_MAX: Final = 1024 * 1024
# The largest message a peer accepts: every character of every field 4 UTF-8 bytes.
MESSAGE_BYTES_MAX: Final = (
    4 * (BODY_CHARS_MAX + ROOM_NAME_MAX + USER_NAME_MAX + CLIENT_MSG_ID_MAX)
    + MESSAGE_ID_MAX
    + MESSAGE_OVERHEAD_BYTES
    + RELATION_BYTES_MAX
)
# A lone message always fits a replica's page and its late list.
assert MESSAGE_BYTES_MAX <= LATE_PAGE_BYTES_MAX <= READ_PAGE_BYTES_MAX

T = TypeVar("T")


def utf8_bytes(text: str) -> int:
    # ASCII text (ids, names, most bodies) is a byte a character, known without encoding.
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))


def message_bytes(message: RoomMessage) -> int:
    """At least what the message takes msgpack-encoded, on the peer or the client wire."""
    return (
        utf8_bytes(message.body)
        + utf8_bytes(message.id)
        + utf8_bytes(message.room)
        + utf8_bytes(message.sender)
        + utf8_bytes(message.client_msg_id)
        + MESSAGE_OVERHEAD_BYTES
        + (0 if message.kind == "message" and message.reply_to is None else RELATION_BYTES_MAX)
    )


_ENCODER: Final = msgspec.msgpack.Encoder()
# What a message's view adds on the client wire beyond the encoding of its Relations:
# the names of its fields there.
VIEW_FIELD_NAMES_BYTES: Final = 64


def relations_bytes(relations: Relations) -> int:
    """At least what a message's relations take, on the peer wire or as the view fields
    of a client's message (whose reactions list users without their marks)."""
    return len(_ENCODER.encode(relations)) + VIEW_FIELD_NAMES_BYTES


def cut_to_bytes(
    items: Sequence[T], bytes_max: int, size_of: Callable[[T], int], *, keep_oldest: bool
) -> tuple[list[T], bool]:
    """The longest run of `items` from the kept end (the start with `keep_oldest`, else
    the end) whose sizes sum to at most `bytes_max`, never fewer than one item; and
    whether anything was cut off."""
    assert bytes_max > 0
    total_bytes = 0
    kept = 0
    for item in items if keep_oldest else reversed(items):
        total_bytes += size_of(item)
        if total_bytes > bytes_max and kept > 0:
            break
        kept += 1
    if kept == len(items):
        return list(items), False
    assert 1 <= kept < len(items)
    return list(items[:kept] if keep_oldest else items[len(items) - kept :]), True


def cut_page(
    messages: Sequence[RoomMessage],
    bytes_max: int,
    *,
    keep_oldest: bool,
    relations: Mapping[str, Relations] | None = None,
) -> tuple[list[RoomMessage], bool]:
    """A page of messages (oldest first) cut to `bytes_max` by message_bytes, and
    relations_bytes of what `relations` (by id) holds for them: a forward page keeps its
    oldest messages, a backward one its newest."""
    if not relations:
        return cut_to_bytes(messages, bytes_max, message_bytes, keep_oldest=keep_oldest)

    def size_of(message: RoomMessage) -> int:
        made = relations.get(message.id)
        return message_bytes(message) + (0 if made is None else relations_bytes(made))

    return cut_to_bytes(messages, bytes_max, size_of, keep_oldest=keep_oldest)
