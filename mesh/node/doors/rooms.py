"""The rooms' live side on this node: which sessions are in which room, and who is present."""

from mesh.node.doors.session import Session


class RoomHub:
    def __init__(self) -> None:
        self._sessions: dict[str, set[Session]] = {}

    def subscribe(self, room: str, session: Session) -> bool:
        """Add a session; True when its user was not present in the room before."""
        sessions = self._sessions.setdefault(room, set())
        newly_present = all(other.user != session.user for other in sessions)
        sessions.add(session)
        return newly_present

    def unsubscribe(self, room: str, session: Session) -> bool:
        """Remove a session; True when its user is no longer present in the room."""
        sessions = self._sessions.get(room)
        if sessions is None or session not in sessions:
            return False
        sessions.discard(session)
        if not sessions:
            del self._sessions[room]
        return all(other.user != session.user for other in sessions)

    def sessions(self, room: str) -> tuple[Session, ...]:
        return tuple(self._sessions.get(room, ()))

    def users(self, room: str) -> list[str]:
        return sorted({session.user for session in self._sessions.get(room, ())})

    @property
    def room_count(self) -> int:
        return len(self._sessions)
