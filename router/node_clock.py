"""The engine's sense of time: ids from a hybrid clock, wall time from the `now` passed in.

Ids use the shell's time plus a fixed offset to the wall clock; values from peers are
weighed against that wall clock plus the allowed skew.
"""

from router.message_ids import HybridClock, MessageId, is_message_id


class NodeClock:
    def __init__(self, node_id: str, wall_offset_ms: int, skew_max_ms: int) -> None:
        self._ids = HybridClock(node_id)
        self.wall_offset_ms = wall_offset_ms
        self.skew_max_ms = skew_max_ms
        self.latest_now: float | None = None  # the latest time any event brought

    def wall_ms(self, now: float) -> int:
        return int(now * 1000) + self.wall_offset_ms

    def limit_ms(self, now: float) -> int:
        """The latest time a peer's value may carry: the wall clock plus the skew."""
        return self.wall_ms(now) + self.skew_max_ms

    def too_far_ahead(self, time_ms: int, now: float) -> bool:
        return time_ms > self.limit_ms(now)

    def next_id(self, now: float) -> MessageId:
        return self._ids.next_id(self.wall_ms(now))

    def observe(self, message_id: str) -> None:
        """Move the id clock past an id seen elsewhere (checked on arrival)."""
        if is_message_id(message_id):
            self._ids.observe(MessageId.parse(message_id))
