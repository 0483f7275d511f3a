"""Message ids: k-sortable, unique across nodes, monotonic across a node's restarts.

An id is a hybrid logical clock reading plus the node that made it:

    0193a1b2c3d4 0000 . n1
    ^ time, ms    ^ counter ^ node id
    (12 hex)      (4 hex)

as one string, "0193a1b2c3d40000.n1". Fixed-width hex makes string order equal time
order, so a room is ordered by sorting ids, on every replica and in every client. The
clock follows the wall clock but never goes back: when the wall clock stalls or steps
back, the counter advances; when the counter is spent within a millisecond, the logical
time runs one millisecond ahead. Observing a larger id (from storage at start, or from a
peer) moves the clock past it, so ids are monotonic across restarts and causally ordered.
"""

import re
from dataclasses import dataclass
from typing import Final

TIME_HEX_DIGITS: Final = 12
COUNTER_HEX_DIGITS: Final = 4
COUNTER_MAX: Final = 16**COUNTER_HEX_DIGITS - 1
TIME_MS_MAX: Final = 16**TIME_HEX_DIGITS - 1

# The node part uses the node id charset (peers/records.py), spelled out so every regex
# engine (Python, JSON Schema validators) reads it the same way. Python's `$` also matches
# before a final newline (msgspec checks with `re.search`): `(?!\n)` makes it the very end.
MESSAGE_ID_PATTERN: Final = r"^[0-9a-f]{16}\.[A-Za-z0-9_.-]{1,64}$(?!\n)"
# Sorts before every id a clock can make: "everything after ORIGIN" is the whole room.
ORIGIN: Final = "0000000000000000.0"
_MESSAGE_ID = re.compile(MESSAGE_ID_PATTERN)


@dataclass(frozen=True, slots=True, order=True)
class MessageId:
    time_ms: int
    counter: int
    node: str

    def __str__(self) -> str:
        return f"{self.time_ms:012x}{self.counter:04x}.{self.node}"

    @classmethod
    def parse(cls, text: str) -> "MessageId":
        if not _MESSAGE_ID.match(text):
            raise ValueError(f"not a message id: {text!r}")
        return cls(int(text[:12], 16), int(text[12:16], 16), text[17:])


def earlier_by(message_id: str, margin_ms: int) -> str:
    """A valid id `margin_ms` before another (at the start of that millisecond): reading
    after it covers everything the id's clock reading could have been overtaken by."""
    if not is_message_id(message_id):
        return message_id
    return at_time(MessageId.parse(message_id).time_ms - margin_ms)


def at_time(time_ms: int) -> str:
    """A valid id that sorts before every real id made at or after `time_ms`."""
    return max(ORIGIN, f"{max(0, time_ms):012x}0000.0")


def is_message_id(text: str) -> bool:
    return _MESSAGE_ID.match(text) is not None


@dataclass(slots=True)
class HybridClock:
    """Issues MessageIds for one node; sans-IO: the caller passes the wall clock."""

    node: str
    time_ms: int = 0
    counter: int = 0

    def next_id(self, wall_clock_ms: int) -> MessageId:
        if wall_clock_ms > self.time_ms:
            self.time_ms, self.counter = wall_clock_ms, 0
        elif self.counter < COUNTER_MAX:
            self.counter += 1
        else:
            self.time_ms, self.counter = self.time_ms + 1, 0
        assert self.time_ms <= TIME_MS_MAX
        return MessageId(self.time_ms, self.counter, self.node)

    def observe(self, seen: MessageId) -> None:
        """Move past an id made elsewhere or earlier, so every later id sorts after it."""
        self.time_ms, self.counter = max((self.time_ms, self.counter), (seen.time_ms, seen.counter))
