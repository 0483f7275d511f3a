"""The latest unread count the node told the client for each room: on joining (and
rejoining after a reconnect), after a mark, or when another of the user's sessions moved
the marker."""

from mesh.wire.protocol import Joined, ReadMarkerEvent, UnreadCount


class UnreadBook:
    def __init__(self) -> None:
        self._counts: dict[str, UnreadCount] = {}

    def get(self, room: str) -> UnreadCount | None:
        return self._counts.get(room)

    def note(self, unread: UnreadCount) -> None:
        """Keep a count, unless it is of an older marker than the one held (a marker
        never moves back: that word came late)."""
        held = self._counts.get(unread.room)
        held_up_to = None if held is None else held.read_up_to
        if held_up_to is not None and (unread.read_up_to or "") < held_up_to:
            return
        self._counts[unread.room] = unread

    def note_event(self, event: ReadMarkerEvent) -> None:
        self.note(
            UnreadCount(
                room=event.room,
                read_up_to=event.read_up_to,
                count=event.unread,
                capped=event.unread_capped,
                through=event.unread_through,
            )
        )

    def note_joined(self, joined: Joined) -> ReadMarkerEvent | None:
        """The count a join told, kept; as an event for the caller's display (None when
        the join told none, or the user has no marker there yet)."""
        if joined.unread is None:
            return None
        if joined.read_up_to is None:
            self.note(UnreadCount(room=joined.room, read_up_to=None, count=joined.unread))
            return None
        event = ReadMarkerEvent(
            room=joined.room,
            read_up_to=joined.read_up_to,
            unread=joined.unread,
            unread_capped=joined.unread_capped,
            unread_through=joined.unread_through,
        )
        self.note_event(event)
        return event
