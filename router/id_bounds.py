"""The times a peer's room message carries, checked against this node's own clock.

Message ids are hybrid-clock readings, and every id a node sees moves its clock past it:
one id from far in the future would drag the clock there, and every later id would
sort after every honest one (or, near the end of the 48-bit range, no id could be made
at all). So a message carrying an id, or a time, further ahead of the receiver's wall
clock than the allowed skew is refused whole, before anything in it is believed.
"""

from collections.abc import Iterator

from router.message_ids import is_message_id
from router.records import RoomMessage
from router.wire import (
    Announce,
    ForwardReply,
    IdPage,
    MembershipReply,
    MembershipUpdate,
    Posted,
    Push,
    ReadReply,
    ReplicaAck,
    Replicate,
    RouterMessage,
    Want,
)


def _message_times(message: RoomMessage) -> Iterator[int]:
    yield message.time_ms
    if is_message_id(message.id):
        yield int(message.id[:12], 16)


def _id_time(text: str) -> Iterator[int]:
    if is_message_id(text):
        yield int(text[:12], 16)


def carried_times_ms(message: RouterMessage) -> Iterator[int]:
    """Every wall-clock time (ms) a peer message asks this node to believe."""
    match message:
        case ForwardReply(message=RoomMessage() as stored):
            yield from _message_times(stored)
        case Replicate(message=copy):
            yield from _message_times(copy)
        case ReplicaAck(kept_id=kept_id):
            yield from _id_time(kept_id)
        case ReadReply(messages=messages, late=late):
            for item in (*messages, *late):
                yield from _message_times(item)
        case Push(event=Posted(message=posted)) | Announce(event=Posted(message=posted)):
            yield from _message_times(posted)
        case IdPage(ids=ids) | Want(ids=ids):
            for text in ids:
                yield from _id_time(text)
        case MembershipUpdate(change=change):
            yield change.time_ms
        case MembershipReply(changes=changes):
            for change in changes:
                yield change.time_ms
        case _:
            return


def latest_time_ms(message: RouterMessage) -> int:
    """The latest time the message carries (0 when it carries none)."""
    return max(carried_times_ms(message), default=0)
