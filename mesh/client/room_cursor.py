"""The client library's memory of a room: what reached the caller, and where a resume
after a reconnect starts, so that a resume brings no gap and no repeat."""

import collections
from dataclasses import dataclass, field

from mesh.wire import protocol
from router.message_ids import earlier_by

# Message ids remembered per room to drop duplicates from resumes and retries, and the
# most kept while all are within a resume's reach (a room of 15,000 messages a second).
SEEN_IDS_PER_ROOM_MAX = 10_000
SEEN_IDS_PER_ROOM_HARD_MAX = 100_000
# How far before the last seen id a resume starts (see RoomCursor.resume_point): the
# nodes' write timeout plus a retry.
RESUME_MARGIN_MS = 3_000
# How far back a resume also replays late arrivals (docs/protocol.md, "join" with
# `since`): their ids sort before the resume point, and the client drops the ones it has.
LATE_REPLAY_MS = 10 * 60 * 1000


# What a room's log brings a client, each under its own id.
LogEvent = protocol.Message | protocol.RelationEvent | protocol.RoomStateEvent


@dataclass(slots=True)
class RoomCursor:
    last_id: str | None = None
    seen: "collections.OrderedDict[str, None]" = field(default_factory=collections.OrderedDict)
    # (sender, client message id) of the messages seen: one send stored under two ids
    # (twins, until replicas converge on the smaller) reaches the caller once.
    sends: "collections.OrderedDict[tuple[str, str], None]" = field(
        default_factory=collections.OrderedDict
    )
    floor: str | None = None  # where the caller's view of the room begins

    def resume_point(self) -> str | None:
        """Where a rejoin after a reconnect starts: a little before the last message
        seen, since two coordinators of a room can briefly overlap and a message with a
        smaller id may land after a larger one was seen; repeats are dropped by id.
        Never before the point the caller first joined from."""
        if self.last_id is None or not self.seen:
            return self.last_id
        start = earlier_by(self.last_id, RESUME_MARGIN_MS)
        return start if self.floor is None else max(start, self.floor)

    def is_new(self, message: LogEvent) -> bool:
        if message.id in self.seen:
            return False
        client_msg_id = getattr(message, "client_msg_id", "")
        return not client_msg_id or (message.sender, client_msg_id) not in self.sends

    def record(self, message: LogEvent) -> None:
        """Only once the message reached the caller: a resume then starts after it."""
        self.seen[message.id] = None
        if client_msg_id := getattr(message, "client_msg_id", ""):
            self.sends[(message.sender, client_msg_id)] = None
        self.advance(message.id)
        if len(self.seen) > SEEN_IDS_PER_ROOM_MAX:
            self._forget_out_of_reach()

    def _forget_out_of_reach(self) -> None:
        """Past SEEN_IDS_PER_ROOM_MAX, forget the oldest ids, but none a resume could
        bring again below the hard bound: a resume replays from its margin before the
        last id, and late arrivals from up to LATE_REPLAY_MS before it, and a busy room
        holds more than the count within that, while a repeat must not pass."""
        assert self.last_id is not None
        reach = earlier_by(self.last_id, LATE_REPLAY_MS + RESUME_MARGIN_MS)
        seen = self.seen
        while len(seen) > SEEN_IDS_PER_ROOM_MAX:
            if len(seen) <= SEEN_IDS_PER_ROOM_HARD_MAX and next(iter(seen)) >= reach:
                break
            seen.popitem(last=False)
        while len(self.sends) > len(seen):
            self.sends.popitem(last=False)

    def advance(self, message_id: str | None) -> None:
        if message_id is not None and (self.last_id is None or message_id > self.last_id):
            self.last_id = message_id
