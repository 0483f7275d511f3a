"""The times a peer's room message carries, checked against this node's own clock.

Message ids are hybrid-clock readings, and every id a node sees moves its clock past it:
one id from far in the future would drag the clock there, and every later id would
sort after every honest one (or, near the end of the 48-bit range, no id could be made
at all). So what a peer sends is checked before anything in it is believed: a message
about one write carrying a time further ahead of the receiver's wall clock than the
allowed skew is refused whole; a list (a page, a set of ids) loses only its bad items,
so that one bad row on a replica's disk cannot stall every read that would show it.
Pushes are checked where they are delivered, so that their stream still moves on.
"""

import msgspec

from router.message_ids import is_message_id
from router.records import RoomMessage
from router.wire import (
    Announce,
    ForwardReply,
    IdPage,
    MembershipReply,
    MembershipUpdate,
    Posted,
    ReadMarkerMoved,
    ReadMarkerUpdate,
    ReadReply,
    ReplicaAck,
    Replicate,
    RouterMessage,
    Want,
)


class Checked(msgspec.Struct, frozen=True):
    """A message as far as it may be believed: None when refused whole, and how many
    of its items (messages, ids, changes) were left out for being too far ahead."""

    message: RouterMessage | None
    dropped: int = 0


def id_time_ms(text: str) -> int:
    """The time of a message id (0 for text that is not one: patterns refuse those)."""
    return int(text[:12], 16) if is_message_id(text) else 0


def message_time_ms(message: RoomMessage) -> int:
    return max(message.time_ms, id_time_ms(message.id))


def check_times(message: RouterMessage, limit_ms: int) -> Checked:
    """`message` with nothing in it later than `limit_ms` (wall-clock ms)."""
    match message:
        case ForwardReply(message=RoomMessage() as stored) if message_time_ms(stored) > limit_ms:
            return Checked(None)
        case Replicate(message=copy) if message_time_ms(copy) > limit_ms:
            return Checked(None)
        case ReplicaAck(kept_id=kept_id) if id_time_ms(kept_id) > limit_ms:
            return Checked(None)
        case Announce(event=Posted(message=posted)) if message_time_ms(posted) > limit_ms:
            return Checked(None)
        case MembershipUpdate(change=change) if change.time_ms > limit_ms:
            return Checked(None)
        case Announce(event=ReadMarkerMoved(up_to=up_to)) if id_time_ms(up_to) > limit_ms:
            return Checked(None)
        case ReadMarkerUpdate(marker=marker) if id_time_ms(marker.up_to) > limit_ms:
            return Checked(None)  # a marker from the future would mark what is not written
        case ReadReply(messages=messages, late=late):
            kept = [item for item in messages if message_time_ms(item) <= limit_ms]
            kept_late = [item for item in late if message_time_ms(item) <= limit_ms]
            dropped = len(messages) + len(late) - len(kept) - len(kept_late)
            if dropped:
                return Checked(
                    msgspec.structs.replace(message, messages=kept, late=kept_late), dropped
                )
        case IdPage(ids=ids) | Want(ids=ids):
            kept_ids = [text for text in ids if id_time_ms(text) <= limit_ms]
            if len(kept_ids) < len(ids):
                page = msgspec.structs.replace(message, ids=kept_ids)
                return Checked(page, len(ids) - len(kept_ids))
        case MembershipReply(changes=changes, markers=markers):
            kept_changes = [change for change in changes if change.time_ms <= limit_ms]
            kept_markers = [marker for marker in markers if id_time_ms(marker.up_to) <= limit_ms]
            dropped = len(changes) + len(markers) - len(kept_changes) - len(kept_markers)
            if dropped:
                reply = msgspec.structs.replace(message, changes=kept_changes, markers=kept_markers)
                return Checked(reply, dropped)
        case _:
            return Checked(message)  # carries no time, or none past the limit
    return Checked(message)
