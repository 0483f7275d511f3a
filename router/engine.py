"""One node's part in serving rooms across the mesh, as a deterministic state machine.

Everything reaches the engine through one door, `handle(event, now)` (router/events.py),
and leaves as effects (router/effects.py). The engine routes; the roles hold the logic,
each in its own module, none calling another:
- forwarding.py: a client's send, handed to the room's coordinator;
- room_states.py: each write checked against its room's state, where it is coordinated;
- coordinator.py: the write, replicated and answered at W copies, published in id order;
- replica.py: copies stored and acknowledged, other nodes' reads answered;
- quorum_reads.py: pages read from R replicas, merged, replicas repaired;
- fan_out.py: events pushed to every interested node;
- subscriptions.py: this node's rooms: registrations, pushes, catch-ups;
- who.py, handoff.py, anti_entropy.py, user_rooms.py: presence, hints, repair, users' rooms.
A role returns effects and internal events (router/internal_events.py); the engine hands
each internal event to the role it is for, and remembers which role issued each storage
token, so the end of a storage effect goes back to it. Its only clock is the `now` given.
"""

import enum
import itertools
from collections.abc import Callable, Mapping, Sequence

import msgspec

from router.anti_entropy import AntiEntropy
from router.config import RouterConfig
from router.coordinator import Coordinator
from router.effects import (
    Complete,
    DeleteHint,
    Effect,
    ExpireHints,
    ListRooms,
    Load,
    LoadDigest,
    LoadHints,
    LoadIds,
    LoadMemberships,
    LoadMessages,
    Outcome,
    Page,
    Refusal,
    Refused,
    Store,
    StoreHint,
    StoreMembership,
    StoreReadMarker,
)
from router.error_codes import ErrorCode
from router.events import (
    AnnounceEvent,
    DigestLoaded,
    Done,
    Event,
    Health,
    HintsExpired,
    HintsLoaded,
    IdsLoaded,
    Loaded,
    MembersChanged,
    MembershipsLoaded,
    PeerMessage,
    ReadPage,
    RecordMembership,
    RecordReadMarker,
    ResumeRoom,
    RoomsListed,
    RoomsOf,
    SendMessage,
    StorageDone,
    StorageEffect,
    StorageFailed,
    StorageResult,
    Stored,
    Subscribe,
    Tick,
    Unsubscribe,
    WhoIsIn,
)
from router.fan_out import FanOut
from router.forwarding import Forwarding
from router.handoff import HintedHandoff
from router.id_bounds import Checked, check_times
from router.internal_events import (
    AnnounceLate,
    CatchUpRead,
    ClientRead,
    Coordinate,
    DeliverHere,
    InternalEvent,
    Publish,
    ReadDone,
    ReadWanted,
    RegisterHere,
    Repair,
    StateAcknowledged,
    Step,
    WithdrawHere,
)
from router.limits import EPOCH_NUMBERS
from router.message_ids import MessageId, is_message_id
from router.node_clock import NodeClock
from router.placement import Placement
from router.quorum_reads import QuorumReads
from router.reads import ReplicaPage
from router.replica import Replica
from router.role_context import RoleContext
from router.room_states import RoomStates
from router.stats import EngineStatistics
from router.subscriptions import Subscriptions
from router.user_rooms import UserRooms, ring_key
from router.who import WhoIsThere
from router.wire import (
    LATE_MESSAGES_MAX,
    Announce,
    DigestDiff,
    DigestOffer,
    Forward,
    ForwardReply,
    IdPage,
    Interest,
    InterestAck,
    MembershipAck,
    MembershipQuery,
    MembershipReply,
    MembershipUpdate,
    Posted,
    Push,
    PushAck,
    ReadMarkerUpdate,
    ReadReply,
    ReadRequest,
    ReplicaAck,
    Replicate,
    RouterMessage,
    Want,
    WhoReply,
    WhoRequest,
)
from router.writes import RemoteOrigin, SendRequest

__all__ = ["EngineStatistics", "Health", "RoomEngine"]

# Storage effects with a token, whose end goes back to the role that asked (a DeleteHint
# ends with no one waiting).
TOKEN_EFFECTS = (
    Store,
    StoreHint,
    Load,
    LoadMessages,
    LoadHints,
    ExpireHints,
    ListRooms,
    LoadDigest,
    LoadIds,
    StoreMembership,
    StoreReadMarker,
    LoadMemberships,
)


# router/internal_events.py InternalEvent, as a tuple for isinstance on the hot path.
INTERNAL_EVENTS = (
    Coordinate,
    Publish,
    AnnounceLate,
    DeliverHere,
    Repair,
    StateAcknowledged,
    ReadWanted,
    ReadDone,
    RegisterHere,
    WithdrawHere,
)


class _Role(enum.Enum):
    """Who issued a storage token (and so gets its StorageDone)."""

    COORDINATOR = "coordinator"
    REPLICA = "replica"
    READS = "reads"
    HANDOFF = "handoff"
    ANTI_ENTROPY = "anti-entropy"
    ROOM_STATES = "room states"
    USER_ROOMS = "user rooms"
    OTHER = "other"  # issues no storage effects


class RoomEngine:
    def __init__(
        self,
        node_id: str,
        config: RouterConfig,
        *,
        epoch: int,
        wall_offset_ms: int,
        local_users: Callable[[str], list[str]],
        alone: bool = False,
    ) -> None:
        """`epoch` must grow with every start of the node (its incarnation does);
        `wall_offset_ms` turns the `now` passed in into wall-clock milliseconds for ids;
        `local_users` answers who has sessions in a room on this node; `alone` says no
        peers are expected (no seeds, none remembered): a mesh of one, ready at once.

        A node that expects peers serves nothing until it has heard from one: until then
        it would see itself as the whole mesh and acknowledge writes with a single copy.
        """
        self.node_id = node_id
        self.config = config
        self.stats = stats = EngineStatistics()
        # Write, forward and read ids and storage tokens go out and come back in answers:
        # numbering them from the epoch keeps an answer meant for an earlier start from
        # matching a request of this one.
        first_number = epoch * EPOCH_NUMBERS + 1
        self._numbers = numbers = itertools.count(first_number)
        self._clock = clock = NodeClock(node_id, wall_offset_ms, config.clock_skew_max_ms)
        self._placement = placement = Placement(node_id, config, alone=alone)
        self.handoff = HintedHandoff(
            node_id, config, numbers, lambda: set(placement.alive), clock.wall_ms
        )
        self.anti_entropy = AntiEntropy(
            node_id,
            config.anti_entropy_interval_s,
            numbers,
            placement.live_replicas,
            lambda room: node_id in placement.preference_list(room),
            config.anti_entropy_messages_per_s,
        )
        self.user_rooms = UserRooms(
            node_id,
            config,
            numbers,
            lambda user: placement.live_replicas(ring_key(user)) if placement.joined else [],
            lambda user: placement.preference_list(ring_key(user)) if placement.joined else None,
        )
        context = RoleContext(config, placement, clock, numbers, stats)
        self._forwarding = Forwarding(context)
        self._room_states = RoomStates(context)
        self._coordinator = Coordinator(context)
        self._replica = Replica(context)
        self._reads = QuorumReads(context)
        self._who = WhoIsThere(context, local_users=local_users)
        self._fan_out = FanOut(context, epoch=epoch, first_registration=first_number)
        self._subscriptions = Subscriptions(context)
        self._tokens: dict[int, _Role] = {}  # storage token -> the role that asked
        self._last_tick: float | None = None

    # ---- the one door ----

    def handle(self, event: Event, now: float) -> list[Effect]:
        """Everything that happens to the engine, with the time it happened."""
        match event:
            case PeerMessage(sender, message):
                return self._peer_message(sender, message, now)
            case StorageDone(effect, result):
                return self._storage_done(effect, result, now)
            case Tick():
                return self._tick(now)
            case MembersChanged(members):
                return self._members_changed(members, now)
        return self._client_request(event, now)

    def _client_request(self, event: Event, now: float) -> list[Effect]:
        steps: Sequence[Step]
        match event:
            case SendMessage(ticket, request):
                steps = self._forwarding.send(ticket, request, now)
            case ReadPage(ticket, room, before, after, limit, quorum, bytes_max, messages_only):
                if event.overlapping and quorum is None:
                    quorum = self.config.resume_quorum
                reader = ClientRead(ticket, room)
                wanted = ReadWanted(
                    reader,
                    room,
                    before,
                    after,
                    limit,
                    quorum,
                    None,
                    bytes_max,
                    messages_only,
                    event.state_only,
                )
                steps = [wanted]
            case ResumeRoom(ticket, room, after, limit, since):
                page = ReadWanted(ClientRead(ticket, room, since), room, None, after, limit)
                steps = [self._reads.resume_page(page, since)]
            case Subscribe(ticket, room):
                steps = self._subscriptions.subscribe(ticket, room, now)
            case Unsubscribe(room):
                steps = self._subscriptions.unsubscribe(room)
            case AnnounceEvent(announced):
                # This node's own sessions are the shell's to tell.
                steps = self._fan_out.announce(announced, now)
            case WhoIsIn(ticket, room):
                steps = self._who.ask(ticket, room, now)
            case RecordMembership(ticket, change):
                # Kept here and with the user's nodes; Ready once on this disk.
                steps = self.user_rooms.record(ticket, change, now)
                return self._run(_Role.USER_ROOMS, steps, now)
            case RecordReadMarker(ticket, marker):
                steps = self.user_rooms.record(ticket, marker, now)
                return self._run(_Role.USER_ROOMS, steps, now)
            case RoomsOf(ticket, user):
                steps = self.user_rooms.lookup(ticket, user, now)
                return self._run(_Role.USER_ROOMS, steps, now)
            case _:
                raise AssertionError(f"not an engine event: {event!r}")
        return self._run(_Role.OTHER, steps, now)

    # ---- routing ----

    def _run(self, role: _Role, steps: Sequence[Step], now: float) -> list[Effect]:
        """The effects of `role`'s steps, its internal events carried out where they go,
        in order; each storage token is noted with the role that issued it."""
        effects: list[Effect] = []
        for step in steps:
            if isinstance(step, INTERNAL_EVENTS):
                effects += self._route(step, now)
                continue
            if isinstance(step, TOKEN_EFFECTS):
                assert step.token not in self._tokens, f"token {step.token} issued twice"
                self._tokens[step.token] = role
            effects.append(step)
        return effects

    def _route(self, step: InternalEvent, now: float) -> list[Effect]:
        """An internal event, handed to the role it is for."""
        match step:
            case Coordinate():
                return self._coordinate(step, now)
            case Publish(event):
                return self._run(_Role.OTHER, self._fan_out.publish(event, now), now)
            case AnnounceLate(message) if self._coordinator.coordinating(message):
                return []  # this node's own write of it publishes it, in its place
            case AnnounceLate(message):
                return self._run(_Role.OTHER, self._fan_out.announce(Posted(message), now), now)
            case DeliverHere(event, caught_up):
                delivered = self._subscriptions.deliver_here(event, caught_up=caught_up)
                return self._run(_Role.OTHER, delivered, now)
            case StateAcknowledged(message):
                self._room_states.stored(message)
            case Repair(node, messages):
                repaired = self._replica.repair(node, messages, now)
                return self._run(_Role.REPLICA, repaired, now)
            case ReadWanted():
                return self._run(_Role.READS, self._reads.read(step, now), now)
            case ReadDone(reader, outcome):
                return self._read_done(reader, outcome, now)
            case RegisterHere(room):
                self._fan_out.register_here(room, now)
            case WithdrawHere(room):
                self._fan_out.withdraw_here(room)
        return []

    def _coordinate(self, step: Coordinate, now: float) -> list[Effect]:
        """A write, once its room's state is known here and allows it."""
        admission = self._room_states.admit(step)
        if admission.waiting:
            return self._run(_Role.ROOM_STATES, admission.steps, now)
        if admission.refused is not None:
            code = ErrorCode.UNAVAILABLE if admission.unavailable else ErrorCode.FORBIDDEN
            refused = Refused(code, admission.refused)
            return self._run(_Role.OTHER, self._coordinator.refuse(step.origin, refused), now)
        behind = self._fan_out.furthest_behind(step.request.room, now)
        done = self._coordinator.coordinate(step.origin, step.request, now, behind)
        return self._run(_Role.COORDINATOR, done, now)

    def _states_loaded(self, token: int, result: StorageResult, now: float) -> list[Effect]:
        steps, failed = self._room_states.loaded(token, _loaded(result))
        effects = self._run(_Role.ROOM_STATES, steps, now)
        for coordinate in failed:
            refused = Refused(ErrorCode.INTERNAL, "the room's state could not be read from disk")
            effects += self._run(
                _Role.OTHER, self._coordinator.refuse(coordinate.origin, refused), now
            )
        return effects

    def _read_done(
        self, reader: ClientRead | CatchUpRead, outcome: Outcome, now: float
    ) -> list[Effect]:
        if isinstance(reader, CatchUpRead):
            caught = self._subscriptions.caught_up(reader, outcome, now)
            return self._run(_Role.OTHER, caught, now)
        if isinstance(outcome, Page) and reader.resume_since is not None and not outcome.more:
            # The replay's last page: what reached this node late, sorting before its start.
            since = reader.resume_since
            own = [m for m in self._subscriptions.late_arrivals(reader.room) if m.id <= since]
            outcome = msgspec.structs.replace(outcome, late=outcome.late + own)
        return [Complete(reader.ticket, outcome)]

    # ---- storage ----

    def _storage_done(
        self, effect: StorageEffect, result: StorageResult, now: float
    ) -> list[Effect]:
        """Hand the end of a storage effect to the role that asked for it; a failure ends
        its request as a failure, so nothing waits on a token for good."""
        if isinstance(effect, DeleteHint):
            # A hint left behind is replayed again; the owner keeps one copy.
            assert isinstance(result, Done | StorageFailed)
            return []
        role = self._tokens.pop(effect.token, None)
        if role is None:
            return []  # not issued by this start, or ended already: nothing to do
        if isinstance(result, Stored):
            assert result.kept.key == getattr(effect, "message", result.kept).key
            self._clock.observe(result.kept.id)
            if isinstance(effect, Store):
                self._room_states.stored(result.kept)
        match role:
            case _Role.COORDINATOR | _Role.REPLICA:
                steps = self._copy_done(role, effect, result, now)
            case _Role.READS:
                steps = self._reads.loaded(effect.token, _loaded(result))
            case _Role.HANDOFF:
                steps = self._hints_done(effect, result, now)
            case _Role.ANTI_ENTROPY:
                steps = self._anti_entropy_done(effect, result)
            case _Role.USER_ROOMS:
                steps = self._user_rooms_done(effect, result)
            case _Role.ROOM_STATES:
                return self._states_loaded(effect.token, result, now)
            case _:
                raise AssertionError(f"{role} issued no storage token")
        return self._run(role, steps, now)

    def _copy_done(
        self, role: _Role, effect: StorageEffect, result: StorageResult, now: float
    ) -> Sequence[Step]:
        token = effect.token  # type: ignore[union-attr]
        if isinstance(effect, Load):
            return self._replica.loaded(token, _loaded(result))
        assert isinstance(result, Stored | StorageFailed), f"{result!r} ends no copy"
        kept, known = (result.kept, result.known) if isinstance(result, Stored) else (None, False)
        if role is _Role.COORDINATOR:
            return self._coordinator.stored(token, kept, known)
        return self._replica.stored(token, kept, known, now)

    def _hints_done(
        self, effect: StorageEffect, result: StorageResult, now: float
    ) -> Sequence[Step]:
        handoff = self.handoff
        match effect, result:
            case (LoadHints(token), HintsLoaded(messages)):
                return handoff.hints_loaded(token, messages, now)
            case (LoadHints(token), StorageFailed()):
                return handoff.hints_failed(token, now)
            case (ExpireHints(token), HintsExpired(dropped)):
                return handoff.hints_expired(token, dropped)
            case (ExpireHints(token), StorageFailed()):
                return handoff.hints_expired(token, {})
        raise AssertionError(f"{type(result).__name__} cannot end {type(effect).__name__}")

    def _anti_entropy_done(self, effect: StorageEffect, result: StorageResult) -> Sequence[Step]:
        anti_entropy = self.anti_entropy
        match effect, result:
            case (ListRooms(token), RoomsListed(rooms)):
                return anti_entropy.rooms_listed(token, rooms)
            case (LoadDigest(token), DigestLoaded(digest)):
                return anti_entropy.digest_loaded(token, digest)
            case (LoadIds(token), IdsLoaded(ids, more)):
                return anti_entropy.ids_loaded(token, ids, more)
            case (LoadMessages(token), Loaded(messages)):
                return anti_entropy.messages_loaded(token, messages)
            case (_, StorageFailed()):
                return anti_entropy.abandon(effect.token)  # type: ignore[union-attr]
        raise AssertionError(f"{type(result).__name__} cannot end {type(effect).__name__}")

    def _user_rooms_done(self, effect: StorageEffect, result: StorageResult) -> Sequence[Step]:
        user_rooms = self.user_rooms
        match effect, result:
            case (StoreMembership(token) | StoreReadMarker(token), Done() | StorageFailed()):
                return user_rooms.stored(token, isinstance(result, Done))
            case (LoadMemberships(token), MembershipsLoaded(changes, markers)):
                return user_rooms.loaded(token, changes, markers)
            case (LoadMemberships(token), StorageFailed()):
                return user_rooms.loaded(token, None)
        raise AssertionError(f"{type(result).__name__} cannot end {type(effect).__name__}")

    # ---- peer messages ----

    def _peer_message(self, sender: str, message: RouterMessage, now: float) -> list[Effect]:
        self._clock.latest_now = now
        checked = check_times(message, self._clock.limit_ms(now))
        if checked.message is None or checked.dropped:
            return self._refuse_future(sender, message, checked, now)
        role, steps = self._peer_steps(sender, message, now)
        return self._run(role, steps, now)

    def _peer_steps(
        self, sender: str, message: RouterMessage, now: float
    ) -> tuple[_Role, Sequence[Step]]:
        match message:
            case Forward(forward_id, room, user, client_msg_id, body):
                request = SendRequest(
                    room,
                    user,
                    client_msg_id,
                    body,
                    message.kind,
                    message.target,
                    message.reaction_key,
                    message.reply_to,
                    message.subject,
                )
                return _Role.OTHER, [Coordinate(RemoteOrigin(sender, forward_id), request)]
            case ForwardReply(joining_for_s=float() as joining_for_s, message=None):
                if not self._forwarding.awaits(message.forward_id, sender):
                    return _Role.OTHER, []  # a repeat, or from a node no longer asked
                passed_over = self._pass_over(sender, joining_for_s, now)
                return _Role.OTHER, [*passed_over, *self._forwarding.replied(message, now)]
            case ForwardReply():
                return _Role.OTHER, self._forwarding.replied(message, now)
            case Replicate():
                return _Role.REPLICA, self._replica.replicate(sender, message, now)
            case ReplicaAck(write_id, kept_id) if self.handoff.owns_write(write_id):
                return _Role.HANDOFF, self.handoff.acknowledged(sender, write_id, kept_id)
            case ReplicaAck(write_id, kept_id):
                return _Role.OTHER, self._coordinator.replica_acknowledged(
                    sender, write_id, kept_id
                )
            case ReadRequest():
                return _Role.REPLICA, self._replica.read(sender, message)
            case ReadReply():
                return _Role.OTHER, self._reads.replied(sender, message)
            case Interest():
                return _Role.OTHER, self._fan_out.registered(sender, message, now)
            case InterestAck(request_id, rooms, numbers):
                registrations = dict(zip(rooms, numbers, strict=False))
                acked = self._subscriptions.acknowledged(sender, request_id, registrations, now)
                return _Role.OTHER, acked
            case Push():
                return _Role.OTHER, self._subscriptions.pushed(sender, message, now)
            case PushAck():
                return _Role.OTHER, self._fan_out.acknowledged(sender, message, now)
            case Announce(Posted(late_copy)) if self._coordinator.coordinating(late_copy):
                # A replica stored a copy late while the write is still under way here:
                # the write publishes it once settled, in its place among the room's.
                return _Role.OTHER, []
            case Announce(event):
                return _Role.OTHER, [Publish(event)]
            case DigestOffer() | DigestDiff() | IdPage() | Want():
                return _Role.ANTI_ENTROPY, self.anti_entropy.handle(sender, message)
            case (
                MembershipUpdate()
                | ReadMarkerUpdate()
                | MembershipAck()
                | MembershipQuery()
                | MembershipReply()
            ):
                return _Role.USER_ROOMS, self.user_rooms.handle(sender, message)
            case WhoRequest():
                return _Role.OTHER, self._who.answer(sender, message)
            case WhoReply():
                return _Role.OTHER, self._who.replied(sender, message)
        return _Role.OTHER, []

    def _refuse_future(
        self, sender: str, message: RouterMessage, checked: Checked, now: float
    ) -> list[Effect]:
        """Count and report what was too far ahead; handle what is left of the message."""
        self.stats.future_ids_refused += max(1, checked.dropped)
        refusal = Refusal(
            sender,
            f"a {type(message).__name__} carrying ids or times more than "
            f"{self.config.clock_skew_max_ms} ms ahead of this node's clock",
        )
        if checked.message is None:
            return [refusal]
        return [refusal, *self._peer_message(sender, checked.message, now)]

    # ---- the membership view and time ----

    def _members_changed(self, members: Mapping[str, Health], now: float) -> list[Effect]:
        """The membership view: every node not departed, and its health. Only alive
        nodes coordinate and take writes; a suspect one keeps its registrations and the
        pushes owed to it (it may be only slow), a dead one loses them."""
        before = self._subscriptions.placed()
        gone, returned = self._placement.update(members, now)
        self._fan_out.forget(gone)
        changed = self._subscriptions.members_changed(before, gone, returned, now)
        return self._run(_Role.OTHER, changed, now)

    def _pass_over(self, node: str, joining_for_s: float, now: float) -> list[Step]:
        """A peer refused a send as coordinator, still joining: route past it until then."""
        before = self._subscriptions.placed()
        if not self._placement.pass_over(node, joining_for_s, now):
            return []
        return self._subscriptions.members_changed(before, set(), set(), now)

    def _tick(self, now: float) -> list[Effect]:
        if self._last_tick is not None and now < self._last_tick:
            return []  # a stale tick: timers only move forward
        effects: list[Effect] = []
        if self._placement.settle(now):
            # Rooms can be placed now: register interest and catch up as for any change.
            effects += self._members_changed(dict(self._placement.members), now)
        if self._placement.joined_peers_due(now):
            # Peers that said they were joining have had the time: they coordinate again.
            before = self._subscriptions.placed()
            self._placement.peers_joined(now)
            changed = self._subscriptions.members_changed(before, set(), set(), now)
            effects += self._run(_Role.OTHER, changed, now)
        ran_until = self._last_tick if self._last_tick is not None else now
        self._last_tick = self._clock.latest_now = now
        steps: list[Step] = []
        if now - ran_until >= self.config.stall_after_s:
            steps += self._subscriptions.stood_still(ran_until, now)
        steps += self._forwarding.tick(now)
        steps += self._coordinator.tick(now)
        steps += self._reads.tick(now)
        steps += self._who.tick(now)
        self._fan_out.expire(now)
        steps += self._subscriptions.tick(now)
        steps += self._subscriptions.acknowledge_pushes()
        steps += self._fan_out.retransmit(now)
        effects += self._run(_Role.OTHER, steps, now)
        effects += self._run(_Role.USER_ROOMS, self.user_rooms.tick(now), now)
        if self._placement.joined:
            effects += self._run(_Role.OTHER, self._fan_out.announce_waiting(now), now)
            effects += self._run(_Role.ANTI_ENTROPY, self.anti_entropy.tick(now), now)
            effects += self._run(_Role.HANDOFF, self.handoff.tick(now), now)
        return effects

    # ---- what the shell asks and shows ----

    def observe(self, message_id: str) -> None:
        """Move the id clock past an id seen elsewhere (checked on arrival)."""
        self._clock.observe(message_id)

    def observe_stored(self, message_id: str, now: float) -> bool:
        """Move the id clock past the newest id on disk at start, unless that id lies
        beyond the allowed skew (stored before ids were checked): then False, unseen."""
        if is_message_id(message_id) and self._clock.too_far_ahead(
            MessageId.parse(message_id).time_ms, now
        ):
            self.stats.future_ids_refused += 1
            return False
        self._clock.observe(message_id)
        return True

    def expect_peers(self, expected: bool) -> None:
        """Set once the shell knows whether the node has seeds or remembered peers."""
        self._placement.expect_peers(expected)

    def set_wall_offset_ms(self, wall_offset_ms: int) -> None:
        """The shell's wall clock was stepped: ids and skew bounds follow it (the id clock
        itself never goes back, see message_ids.py)."""
        self._clock.wall_offset_ms = wall_offset_ms

    def preference_list(self, room: str) -> list[str]:
        return self._placement.preference_list(room)

    def live_replicas(self, room: str) -> list[str]:
        return self._placement.live_replicas(room)

    def coordinator(self, room: str) -> str | None:
        return self._placement.coordinator(room)

    @property
    def joined(self) -> bool:
        return self._placement.joined

    def statistics(self) -> dict[str, int]:
        """The engine's counters and gauges, by the names the node publishes them under."""
        stats, handoff = self.stats, self.handoff.stats
        anti_entropy, user_rooms = self.anti_entropy.stats, self.user_rooms.stats
        return {
            "writes_coordinated": stats.writes_coordinated,
            "writes_acknowledged": stats.writes_acknowledged,
            "writes_failed": stats.writes_failed,
            "writes_refused_busy": stats.writes_refused_busy,
            "writes_in_flight": self._coordinator.in_flight,
            "forwards_sent": stats.forwards_sent,
            "forwards_in_flight": self._forwarding.in_flight,
            "reads_served": stats.reads_served,
            "read_repairs": stats.read_repairs,
            "pushes_sent": stats.pushes_sent,
            "push_retransmits": stats.push_retransmits,
            "pushes_unacknowledged": self._fan_out.unacknowledged(),
            "room_catch_ups": stats.catch_ups,
            "pushes_left_to_catch_up": stats.pushes_left_to_catch_up,
            "delivered_ids_evicted": stats.delivered_ids_evicted,
            "interest_registrations": self._fan_out.interest.registrations,
            "interest_dropped": stats.interest_dropped,
            "late_posts": stats.late_posts,
            "peer_ids_refused": stats.future_ids_refused,
            "hints_stored": stats.hints_stored,
            "hints_replayed": handoff.hints_replayed,
            "hints_dropped": handoff.hints_dropped,
            "anti_entropy_rounds": anti_entropy.rounds,
            "anti_entropy_buckets_compared": anti_entropy.buckets_compared,
            "anti_entropy_messages_sent": anti_entropy.messages_sent,
            "anti_entropy_messages_deferred": anti_entropy.messages_deferred,
            "memberships_spread": user_rooms.changes_spread,
            "memberships_spread_abandoned": user_rooms.spreads_abandoned,
            "storage_tokens_waiting": len(self._tokens),
            "room_states_held": self._room_states.held,
        }


def _loaded(result: StorageResult) -> ReplicaPage | None:
    """A Load's result as a replica's page, None if it failed."""
    if isinstance(result, StorageFailed):
        return None
    assert isinstance(result, Loaded), f"{result!r} ends no load"
    late = result.late[-LATE_MESSAGES_MAX:]
    return ReplicaPage(result.messages, result.more, late, result.relations)
