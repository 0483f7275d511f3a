"""This node's side of the rooms its sessions are in: registrations, pushes, catch-ups.

A room with sessions here registers interest with every live replica; the coordinator's
acknowledgement makes it ready. Pushes arrive on ordered streams and are handed to the
sessions once per id. Whenever pushes may have been lost (a coordinator changed, a
replica died or restarted, this node stood still), the room is caught up by reading it
from a little before the last moment pushes were known whole; newer pushes wait meanwhile.
"""

from collections import deque
from dataclasses import dataclass, field

from router.channel import InboundStream
from router.delivered_ids import DeliveredIds
from router.effects import (
    Complete,
    DeliverEvent,
    DeliverMessage,
    Outcome,
    Page,
    Ready,
    Refused,
    SendPeer,
    Warn,
)
from router.error_codes import ErrorCode
from router.id_bounds import message_time_ms
from router.internal_events import CatchUpRead, ReadWanted, RegisterHere, Step, WithdrawHere
from router.limits import CATCH_UP_PAGE, LATE_AFTER_MS, LATE_ARRIVALS_MAX
from router.message_ids import at_time
from router.records import RoomMessage
from router.role_context import RoleContext
from router.wire import INTEREST_ROOMS_MAX, Interest, Posted, Push, PushAck, RoomEvent


@dataclass(slots=True)
class _LocalRoom:
    """A room with sessions on this node."""

    subscribed_wall_ms: int
    delivered: DeliveredIds  # given to the sessions here, as far back as a catch-up reads
    number: int  # this subscription of the room here: catch-up reads carry it
    ready: bool = False
    tickets: list[int] = field(default_factory=list)
    registration: int | None = None  # request id awaiting the coordinator's ack
    awaiting: str | None = None  # the coordinator asked
    deadline: float = 0.0
    held: list[RoomMessage] | None = None  # pushes waiting for a catch-up (None: none runs)
    # The newest push let go because too many waited: the catch-up reads at least that far.
    dropped_through: str = ""
    catch_up_failing: bool = False  # its last read failed (too few replicas answered)
    catch_ups_running: int = 0
    # Messages that arrived well after their id's time, with when (wall ms).
    late: "deque[tuple[int, RoomMessage]]" = field(
        default_factory=lambda: deque(maxlen=LATE_ARRIVALS_MAX)
    )
    # Each replica's registration of this node, as last acknowledged, and when (wall
    # clock ms) an acknowledgement last showed it unbroken.
    registered_at: dict[str, int] = field(default_factory=dict)
    synced_ms: dict[str, int] = field(default_factory=dict)
    # A catch-up that failed (too few replicas answered), to try again from where it was.
    catch_up_after: str | None = None
    catch_up_retry_at: float = 0.0

    def synced(self, replica: str) -> int:
        """Since when pushes from another node, `replica`, are known whole (see
        Subscriptions._synced_ms for this node's own part)."""
        return self.synced_ms.get(replica, self.subscribed_wall_ms)


# What the view of the rooms looked like before the membership changed.
RoomsPlaced = dict[str, tuple[str | None, set[str]]]  # room -> (coordinator, replicas)


class Subscriptions:
    def __init__(
        self,
        context: RoleContext,
    ) -> None:
        self._config = context.config
        self._placement = context.placement
        self._clock = context.clock
        self._numbers = context.numbers
        self._stats = context.stats
        self._local: dict[str, _LocalRoom] = {}
        self._inbound: dict[str, InboundStream] = {}
        self._next_refresh = 0.0

    # ---- sessions come and go ----

    def subscribe(self, ticket: int, room: str, now: float) -> list[Step]:
        """This node has (or now gets) sessions in the room: register for its pushes.
        Completes with Ready once the coordinator has the registration."""
        local = self._local.get(room)
        if local is None:
            local = self._local[room] = _LocalRoom(
                subscribed_wall_ms=self._clock.wall_ms(now),
                delivered=DeliveredIds(self._config.delivered_ids_per_room_max, self._stats),
                number=next(self._numbers),
            )
        # A message handed on before this session came may reach the room again (its
        # send retried after a failure and now acknowledged): the newcomer needs it, and
        # its replay may not have it yet. Earlier sessions may see it twice; clients
        # drop repeats by id.
        local.delivered.clear()
        if local.ready:
            return [Complete(ticket, Ready())]
        local.tickets.append(ticket)
        if local.registration is not None or local.awaiting is not None:
            return []
        return self._register(room, local, now)

    def unsubscribe(self, room: str) -> list[Step]:
        """No session on this node is in the room any more."""
        local = self._local.pop(room, None)
        if local is None:
            return []
        refused = Refused(ErrorCode.UNAVAILABLE, "left the room")
        steps: list[Step] = [Complete(ticket, refused) for ticket in local.tickets]
        for node in self._placement.live_replicas(room):
            if node == self._placement.node_id:
                steps.append(WithdrawHere(room))
            else:
                steps.append(SendPeer(node, Interest(0, withdrawn=[room])))
        return steps

    # ---- registrations ----

    def _register(self, room: str, local: _LocalRoom, now: float) -> list[Step]:
        """Register with every live replica; the coordinator's ack makes the room ready."""
        live = self._placement.live_replicas(room)
        if not live:
            local.registration = local.awaiting = None
            return []
        request_id = next(self._numbers)
        steps: list[Step] = []
        for node in live:
            if node == self._placement.node_id:
                steps.append(RegisterHere(room))
            else:
                steps.append(SendPeer(node, Interest(request_id, rooms=[room])))
        # The coordinator's ack: a replica still joining (passed over) is not it.
        coordinator = self._placement.coordinator(room) or live[0]
        if coordinator == self._placement.node_id:
            local.registration = local.awaiting = None
            return steps + self._ready(local)
        local.registration, local.awaiting = request_id, coordinator
        local.deadline = now + self._config.read_timeout_s
        return steps

    def acknowledged(
        self, sender: str, request_id: int, registrations: dict[str, int], now: float
    ) -> list[Step]:
        steps: list[Step] = []
        readied = set()
        for room, local in self._local.items():
            if local.registration == request_id and local.awaiting == sender:
                local.registration = local.awaiting = None
                if not local.ready:
                    readied.add(room)
                    steps += self._ready(local)
        now_ms = self._clock.wall_ms(now)
        for room, number in registrations.items():
            known = self._local.get(room)
            if known is None:
                continue
            before = known.registered_at.get(sender)
            known.registered_at[sender] = number
            if before == number or room in readied:
                # Registered all along: everything it coordinated until now was pushed.
                known.synced_ms[sender] = now_ms
            elif known.ready:
                # A replica holds a new registration of us: it lost the old one (it
                # restarted, or saw us dead), and whatever it coordinated meanwhile in
                # some node's view was never pushed here.
                steps += self._catch_up(room, now, since_ms=known.synced(sender))
                known.synced_ms[sender] = now_ms
        return steps

    def _ready(self, local: _LocalRoom) -> list[Step]:
        local.ready = True
        tickets, local.tickets = local.tickets, []
        return [Complete(ticket, Ready()) for ticket in tickets]

    # ---- the membership view changed ----

    def placed(self) -> RoomsPlaced:
        """Where this node's rooms are now, for members_changed() to compare with."""
        placement = self._placement
        return {
            room: (placement.coordinator(room), set(placement.preference_list(room)))
            for room in self._local
        }

    def members_changed(
        self, before: RoomsPlaced, gone: set[str], returned: set[str], now: float
    ) -> list[Step]:
        """Re-register where the coordinator changed or a replica returned; catch up on
        what the departed may have owed. A suspect replica keeps its stream (it may be
        only slow); a dead one loses it."""
        for node in gone:
            self._inbound.pop(node, None)
        steps: list[Step] = []
        placement = self._placement
        ring_nodes = placement.ring.nodes
        for room, local in self._local.items():
            old_coordinator, old_replicas = before[room]
            replicas = set(placement.live_replicas(room))
            if placement.coordinator(room) != old_coordinator or replicas & returned:
                steps += self._register(room, local, now)
            if local.ready:
                owed_by = gone & old_replicas
                steps += self._catch_up_owed(room, local, old_coordinator, owed_by, now)
            for node in [n for n in local.synced_ms if n not in ring_nodes]:
                # Departed (not only dead): its mark would hold every id here for good.
                del local.synced_ms[node]
        return steps

    def _catch_up_owed(
        self, room: str, local: _LocalRoom, old: str | None, gone: set[str], now: float
    ) -> list[Step]:
        """After the membership view changed: pushes owed to this node may be lost with
        a coordinator that changed (its successor may never have had them) or with a
        replica that pushed here and is now dead or departed. Catch up from the earliest
        moment they were known whole."""
        owed = [node for node in gone if node in local.synced_ms]
        changed = self._placement.coordinator(room) != old
        if changed and old is not None:
            owed.append(old)
        if not owed:
            return self._catch_up(room, now) if changed else []
        now_ms = self._clock.wall_ms(now)
        since_ms = min(self._synced_ms(room, local, now_ms, node) for node in owed)
        return self._catch_up(room, now, since_ms=since_ms)

    # ---- pushes ----

    def pushed(self, sender: str, push: Push, now: float) -> list[Step]:
        inbound = self._inbound.get(sender)
        steps: list[Step] = []
        if inbound is None or push.epoch > inbound.epoch:
            if inbound is not None:
                # The sender began a new stream: it restarted or gave us up for dead, and
                # what it pushed in between never came. Catch its rooms up first (newer
                # pushes wait meanwhile).
                for room, local in self._local.items():
                    if local.ready and sender in self._placement.live_replicas(room):
                        steps += self._catch_up(room, now, since_ms=local.synced(sender))
            inbound = self._inbound[sender] = InboundStream.starting_at(push)
        elif push.epoch < inbound.epoch:
            return []  # a straggler from the sender's previous stream
        for event in inbound.receive(push):
            steps += self.deliver_here(event)
        return steps

    def deliver_here(self, event: RoomEvent, *, caught_up: bool = False) -> list[Step]:
        local = self._local.get(event.room)
        if not isinstance(event, Posted):
            return [] if local is None else [DeliverEvent(event)]
        clock = self._clock
        if clock.latest_now is not None and clock.too_far_ahead(
            message_time_ms(event.message), clock.latest_now
        ):
            self._stats.future_ids_refused += 1  # acknowledged with its stream, not shown
            return []
        clock.observe(event.message.id)
        if local is None:
            return []
        if local.held is not None and not caught_up:
            # A catch-up is filling a gap: newer pushes wait, so that sessions (and
            # the resume points of their clients) never pass an undelivered message.
            if len(local.held) < self._config.held_pushes_max:
                local.held.append(event.message)
                return []
            if local.catch_up_failing:
                # The gap cannot be read now (too few replicas answer): live traffic
                # goes on, out of order with what the retry brings.
                warning = Warn(f"{event.room}: catch-up failing, pushes passed it")
                return [warning, *self._release(local), *self.deliver_here(event)]
            if self._is_late(event.message):
                # Out of its place whatever is done (it reached the coordinator late),
                # and the catch-up may be past its id already: handed on now.
                return self._hand_on(local, event.message)
            # Too many wait while the read runs: let this one go; it is stored, and the
            # catch-up reads on at least as far as it, so it still comes, in its place.
            first = not local.dropped_through
            local.dropped_through = max(local.dropped_through, event.message.id)
            self._stats.pushes_left_to_catch_up += 1
            return [Warn(f"{event.room}: catch-up slow, newer pushes left to it")] if first else []
        return self._hand_on(local, event.message)

    def _hand_on(self, local: _LocalRoom, message: RoomMessage) -> list[Step]:
        self._note_if_late(local, message)
        if not self._first_time(local, message.id):
            return []
        self._stats.events_delivered += 1
        return [DeliverMessage(message)]

    def _release(self, local: _LocalRoom) -> list[Step]:
        """The gap is filled: hand on the pushes that waited, in id order."""
        held, local.held = local.held or [], None
        local.dropped_through = ""
        steps: list[Step] = []
        for message in sorted(held, key=lambda message: message.id):
            steps += self.deliver_here(Posted(message))
        return steps

    def _first_time(self, local: _LocalRoom, message_id: str) -> bool:
        return local.delivered.first_time(message_id)

    # ---- late arrivals ----

    def _is_late(self, message: RoomMessage) -> bool:
        """It reached this node well after its id's time."""
        latest_now = self._clock.latest_now
        return latest_now is not None and (
            message.time_ms < self._clock.wall_ms(latest_now) - LATE_AFTER_MS
        )

    def _note_if_late(self, local: _LocalRoom, message: RoomMessage) -> None:
        """Remember a late message: a client resuming from a point past its id would not
        ask for it."""
        if self._is_late(message):
            assert self._clock.latest_now is not None
            local.late.append((self._clock.wall_ms(self._clock.latest_now), message))

    def late_arrivals(self, room: str) -> list[RoomMessage]:
        """Messages that reached this node late within the last late_post_window_ms,
        oldest id first: a resume adds them to what it replays."""
        local = self._local.get(room)
        latest_now = self._clock.latest_now
        if local is None or latest_now is None:
            return []
        horizon_ms = self._clock.wall_ms(latest_now) - self._config.late_post_window_ms
        recent = {m.id: m for at_ms, m in local.late if at_ms >= horizon_ms}
        return [recent[key] for key in sorted(recent)]

    # ---- catching up ----

    def _catch_up(
        self, room: str, now: float, *, since_ms: int | None = None, after: str | None = None
    ) -> list[Step]:
        """Re-read the room from a little before `since_ms`, the last moment pushes were
        known to be flowing (by default the earliest over the room's replicas), so that
        whatever was lost since reaches the sessions; newer pushes wait meanwhile."""
        local = self._local.get(room)
        if local is None:
            return []
        late_since_ms = None
        if after is None:
            reference_ms = since_ms
            if reference_ms is None:
                reference_ms = self._synced_ms(room, local, self._clock.wall_ms(now))
            late_since_ms = max(0, reference_ms - self._config.catch_up_margin_ms)
            after = at_time(late_since_ms)
        self._stats.catch_ups += 1
        local.catch_ups_running += 1
        if local.held is None:
            local.held = []
        reader = CatchUpRead(room, after, local.number)
        quorum = self._config.resume_quorum
        return [ReadWanted(reader, room, None, after, CATCH_UP_PAGE, quorum, late_since_ms)]

    def caught_up(self, read: CatchUpRead, outcome: Outcome, now: float) -> list[Step]:
        """A page of a catch-up came back (or the read failed: it is retried)."""
        local = self._local.get(read.room)
        if local is None or local.number != read.subscription:
            return []  # the room was left (and maybe joined again) while this read ran
        local.catch_ups_running -= 1
        assert local.catch_ups_running >= 0, f"{read.room}: a catch-up ended twice"
        if not isinstance(outcome, Page):
            local.catch_up_failing = True
            self._retry_catch_up(local, read.after, now)
            return []
        local.catch_up_failing = False
        steps: list[Step] = []
        for message in [*outcome.late, *outcome.messages]:
            steps += self.deliver_here(Posted(message), caught_up=True)
        last_id = outcome.messages[-1].id if outcome.messages else read.after
        if outcome.more and outcome.messages:
            steps += self._catch_up(read.room, now, after=last_id)
        elif last_id < local.dropped_through:
            # Pushes let go lie beyond what was read (stored since): read on, at once if
            # this page brought something, else after a pause (not a tight loop).
            if outcome.messages:
                steps += self._catch_up(read.room, now, after=last_id)
            else:
                self._retry_catch_up(local, last_id, now)
        elif local.catch_ups_running == 0 and local.catch_up_after is None:
            steps += self._release(local)
        return steps

    def _retry_catch_up(self, local: _LocalRoom, after: str, now: float) -> None:
        """Read on from `after` at the next tick past the retry interval; the earliest
        start is kept: the gap is there until a read succeeds."""
        pending = local.catch_up_after
        local.catch_up_after = after if pending is None else min(pending, after)
        local.catch_up_retry_at = now + self._config.retry_interval_s

    def _synced_ms(
        self, room: str, local: _LocalRoom, own_ms: int, replica: str | None = None
    ) -> int:
        """Since when (wall ms) pushes from `replica`, or from every reachable replica of
        the room if None, are known whole. What this node coordinates it hands to its own
        sessions directly, so its own part is whole up to `own_ms`, when it last ran. What
        a dead or departed replica owed was caught up when it went (_catch_up_owed), and
        its return registers anew: its mark would only pull every catch-up back to then."""
        placement = self._placement
        if replica is not None:
            replicas = [replica]
        else:
            replicas = [n for n in placement.preference_list(room) if n in placement.reachable]
        return min(
            (own_ms if node == placement.node_id else local.synced(node) for node in replicas),
            default=own_ms,
        )

    def _reach_ms(self, room: str, local: _LocalRoom, now_ms: int) -> int:
        """How far back (wall ms) the ids given are kept: to the earliest moment a catch-up
        may read from, less the margin. Every catch-up starts from some replica's mark, a
        replica of the room that has none yet counting from the subscription, so a room
        with such a replica (one down since) keeps up to the count bound."""
        replicas = self._placement.preference_list(room)
        others = [node for node in replicas if node != self._placement.node_id]
        marks = [*local.synced_ms.values(), *(local.synced(node) for node in others), now_ms]
        return min(marks) - self._config.catch_up_margin_ms

    # ---- time ----

    def stood_still(self, ran_until: float, now: float) -> list[Step]:
        """The node did not run from `ran_until` to `now`: every push in between may be
        lost, so ready rooms catch up from then."""
        if not self._local:
            return []
        stalled_s = now - ran_until
        steps: list[Step] = [Warn(f"this node stood still for {stalled_s:.1f}s; catching up")]
        ran_until_ms = self._clock.wall_ms(ran_until)
        for room, local in self._local.items():
            if local.ready:
                since_ms = self._synced_ms(room, local, ran_until_ms)
                steps += self._catch_up(room, now, since_ms=since_ms)
        return steps

    def tick(self, now: float) -> list[Step]:
        """Registrations not acknowledged in time are sent again (and their waiting
        sessions refused), failed catch-ups retried, and every registration renewed
        before it lapses."""
        steps: list[Step] = []
        for room, local in list(self._local.items()):
            if local.awaiting is not None and now >= local.deadline:
                steps += self._register(room, local, now)
                if not local.ready:
                    tickets, local.tickets = local.tickets, []
                    reason = f"the room's coordinator {local.awaiting} did not answer"
                    steps += [Complete(t, Refused(ErrorCode.UNAVAILABLE, reason)) for t in tickets]
        now_ms = self._clock.wall_ms(now)
        for room, local in self._local.items():
            if local.catch_up_after is not None and now >= local.catch_up_retry_at:
                after, local.catch_up_after = local.catch_up_after, None
                steps += self._catch_up(room, now, after=after)
            if local.held is None and local.catch_up_after is None:
                # No catch-up runs, waits or is to be retried: none reads from before.
                local.delivered.forget_before(self._reach_ms(room, local, now_ms))
        if now >= self._next_refresh:
            self._next_refresh = now + self._config.interest_refresh_s
            steps += self._renew()
        return steps

    def _renew(self) -> list[Step]:
        placement = self._placement
        by_node: dict[str, list[str]] = {}
        steps: list[Step] = []
        for room, local in self._local.items():
            if not local.ready:
                continue
            for node in placement.live_replicas(room):
                if node == placement.node_id:
                    steps.append(RegisterHere(room))
                else:
                    by_node.setdefault(node, []).append(room)
        for node, rooms in sorted(by_node.items()):
            for start in range(0, len(rooms), INTEREST_ROOMS_MAX):
                chunk = rooms[start : start + INTEREST_ROOMS_MAX]
                steps.append(SendPeer(node, Interest(0, rooms=chunk)))
        return steps

    def acknowledge_pushes(self) -> list[Step]:
        """Cumulative acknowledgements of the streams that brought something new."""
        steps: list[Step] = []
        for node, inbound in self._inbound.items():
            if inbound.ack_due:
                inbound.ack_due = False
                steps.append(SendPeer(node, PushAck(inbound.epoch, inbound.through)))
        return steps
