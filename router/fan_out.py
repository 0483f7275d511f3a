"""Fan-out: push a room's events to every node that registered interest in it.

The coordinator publishes settled writes (in id order), presence and typing; each goes
on an ordered, acknowledged stream per interested node (router/channel.py). A node that
is unreachable, or stops acknowledging, loses its registration: when it registers again
the new number tells it to catch up.
"""

from collections import deque

from router.channel import OutboundStream
from router.effects import SendPeer, Warn
from router.interest import InterestTable
from router.internal_events import DeliverHere, Step
from router.limits import (
    LATE_ARRIVALS_MAX,
    PRESENCE_HELD_MAX_MS,
    PUSH_RETRIES_PER_TICK,
    PUSHES_BEHIND_FOR_WRITES_MAX,
    STREAMS_PER_EPOCH,
)
from router.role_context import RoleContext
from router.wire import (
    Announce,
    Interest,
    InterestAck,
    Posted,
    PresenceChanged,
    PushAck,
    ReadMarkerMoved,
    RoomEvent,
    TypingNotice,
)


class FanOut:
    def __init__(
        self,
        context: RoleContext,
        *,
        epoch: int,
        first_registration: int,
    ) -> None:
        self._config = context.config
        self._placement = context.placement
        self._clock = context.clock
        self._stats = context.stats
        self._epoch = epoch
        # Registration numbers of one start stay below the next start's (epochs grow).
        self.interest = InterestTable(
            context.config.interest_lapse_s, first_number=first_registration
        )
        self._outbound: dict[str, OutboundStream] = {}
        self._streams_opened = 0
        # Late messages and presence changes waiting for a coordinator, with when
        # (wall ms) they began to wait.
        self._unannounced: deque[tuple[int, Posted | PresenceChanged]] = deque(
            maxlen=LATE_ARRIVALS_MAX
        )

    def publish(self, event: RoomEvent, now: float) -> list[Step]:
        """To every interested node but this one and the event's origin, and to this
        node's own sessions unless they are where it came from."""
        node_id = self._placement.node_id
        origin = "" if isinstance(event, Posted) else event.origin
        steps: list[Step] = []
        for node in self.interest.nodes(event.room):
            if node in (node_id, origin):
                continue
            if node not in self._placement.reachable:
                # Registered, yet dead (or unknown) in this node's view: its pushes are not
                # sent. Dropping the registration gives its renewal a new number, which
                # tells it to catch up on what it missed.
                self._drop(node)
                continue
            stream = self._stream_to(node)
            if len(stream.unacked) >= self._config.push_unacked_max:
                # The node stopped acknowledging: stop pushing; it catches up when it
                # registers again and learns it was dropped.
                del self._outbound[node]
                self._drop(node)
                steps.append(Warn(f"{node} left {len(stream.unacked)} pushes unacknowledged"))
                continue
            steps.append(SendPeer(node, stream.push(event, now)))
            self._stats.pushes_sent += 1
        if origin != node_id:
            steps.append(DeliverHere(event))
        return steps

    def _stream_to(self, node: str) -> OutboundStream:
        stream = self._outbound.get(node)
        if stream is None:
            self._streams_opened += 1
            epoch = self._epoch * STREAMS_PER_EPOCH + self._streams_opened % STREAMS_PER_EPOCH
            stream = self._outbound[node] = OutboundStream(epoch=epoch)
        return stream

    def _drop(self, node: str) -> None:
        self.interest.drop_node(node)
        self._stats.interest_dropped += 1

    def announce(self, event: RoomEvent, now: float) -> list[Step]:
        """A local session's presence or typing, or a late message: to the room's
        coordinator for a push. A late message or a presence change with no coordinator
        yet (this node is still joining, or the room's replicas are down) waits for one;
        typing is news only now."""
        coordinator = self._placement.coordinator(event.room)
        if coordinator is None:
            if not isinstance(event, TypingNotice | ReadMarkerMoved):
                self._unannounced.append((self._clock.wall_ms(now), event))
            return []
        if coordinator == self._placement.node_id:
            return self.publish(event, now)
        return [SendPeer(coordinator, Announce(event))]

    def announce_waiting(self, now: float) -> list[Step]:
        if not self._unannounced:
            return []
        waiting, self._unannounced = self._unannounced, deque(maxlen=LATE_ARRIVALS_MAX)
        now_ms = self._clock.wall_ms(now)
        late_horizon_ms = now_ms - self._config.late_post_window_ms
        steps: list[Step] = []
        for held_ms, event in waiting:
            if isinstance(event, Posted):
                fresh = event.message.time_ms >= late_horizon_ms
            else:
                fresh = held_ms >= now_ms - PRESENCE_HELD_MAX_MS
            if fresh:
                steps += self.announce(event, now)
        return steps

    def registered(self, sender: str, interest: Interest, now: float) -> list[Step]:
        numbers = self.interest.register(sender, interest.rooms, now)
        self.interest.withdraw(sender, interest.withdrawn)
        if not interest.rooms:
            return []
        return [SendPeer(sender, InterestAck(interest.request_id, interest.rooms, numbers))]

    def register_here(self, room: str, now: float) -> None:
        self.interest.register(self._placement.node_id, [room], now)

    def withdraw_here(self, room: str) -> None:
        self.interest.withdraw(self._placement.node_id, [room])

    def acknowledged(self, sender: str, ack: PushAck, now: float) -> list[Step]:
        stream = self._outbound.get(sender)
        if stream is not None:
            stream.acknowledge(ack.epoch, ack.through, now)
        return []

    def forget(self, nodes: set[str]) -> None:
        """Nodes no longer reachable: their registrations and streams go."""
        for node in nodes:
            self.interest.drop_node(node)
            self._outbound.pop(node, None)

    def expire(self, now: float) -> None:
        self.interest.expire(now)

    def retransmit(self, now: float) -> list[Step]:
        steps: list[Step] = []
        for node, outbound in self._outbound.items():
            again = outbound.due(now, self._config.push_retry_s, PUSH_RETRIES_PER_TICK)
            self._stats.push_retransmits += len(again)
            steps += [SendPeer(node, push) for push in again]
        return steps

    def furthest_behind(self, room: str, now: float) -> tuple[str, int]:
        """The node interested in `room` with the most pushes unacknowledged (any room's,
        as a node has one stream), and how many; ("", 0) when none is behind.

        A node that far behind which took nothing for an interest's lapse is given up,
        as at push_unacked_max (which the writes it holds back would never reach): the
        room's writes go on, and it catches up when it registers again."""
        worst = ("", 0)
        stalled: list[str] = []
        for node in self.interest.nodes(room):
            stream = self._outbound.get(node)
            if stream is None or len(stream.unacked) <= worst[1]:
                continue
            if (
                len(stream.unacked) >= PUSHES_BEHIND_FOR_WRITES_MAX
                and now - stream.progressed_at > self._config.interest_lapse_s
            ):
                stalled.append(node)
                continue
            worst = (node, len(stream.unacked))
        for node in stalled:
            del self._outbound[node]
            self._drop(node)
        return worst

    def unacknowledged(self) -> int:
        return sum(len(stream.unacked) for stream in self._outbound.values())
