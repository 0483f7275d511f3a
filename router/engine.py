"""One node's part in serving rooms across the mesh, as a deterministic state machine.

The engine is every role a node plays for a room:
- gateway: hands a client's send to the room's coordinator (the first live node of its
  preference list), reads history from R replicas, asks the mesh who is in a room;
- coordinator: assigns the id, stores, replicates to the other live replicas, answers
  once W copies are on disk, then pushes the message to every interested node, in id order;
- replica: stores copies, answers reads, holds the interest registrations of other nodes;
- subscriber: registers interest for rooms with local sessions and hands pushed events on.

It takes events (client requests from the shell, peer messages, storage completions, the
membership view, ticks) with the time passed in, and returns effects. Its only clock is
the `now` it is given; ids use that time plus a fixed offset to the wall clock.
"""

import itertools
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from router.anti_entropy import AntiEntropy
from router.channel import InboundStream, OutboundStream
from router.config import RouterConfig
from router.effects import (
    Acked,
    Complete,
    DeleteHint,
    DeliverEvent,
    DeliverMessage,
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
    Ready,
    Refusal,
    Refused,
    SendPeer,
    Store,
    StoreHint,
    StoreMembership,
    Users,
    Warn,
)
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
from router.handoff import HintedHandoff
from router.id_bounds import Checked, check_times, message_time_ms
from router.interest import InterestTable
from router.memberships import Memberships, ring_key
from router.message_ids import HybridClock, MessageId, at_time, is_message_id
from router.page_bytes import LATE_PAGE_BYTES_MAX, READ_PAGE_BYTES_MAX, cut_page
from router.reads import ReplicaPage, merge_pages
from router.records import MembershipChange, RoomMessage
from router.ring import HashRing
from router.wire import (
    INTEREST_ROOMS_MAX,
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
    PresenceChanged,
    Push,
    PushAck,
    ReadReply,
    ReadRequest,
    ReplicaAck,
    Replicate,
    RoomEvent,
    RouterMessage,
    TypingNotice,
    Want,
    WhoReply,
    WhoRequest,
)
from router.writes import Forward as PendingForward
from router.writes import LocalOrigin, Origin, RemoteOrigin, SendRequest, Write

__all__ = ["EngineStatistics", "Health", "RoomEngine"]

# Retransmitted pushes per peer per tick: a returning peer is refilled at a bounded pace.
PUSH_RETRIES_PER_TICK = 256
# Messages read per page when a node catches a room up after it may have missed pushes.
CATCH_UP_PAGE = 500
# Numbers (request ids, registrations) one start may give out; with epochs that are
# millisecond incarnations this stays below 2**63 for millennia.
EPOCH_NUMBERS = 1_000_000
# A message arriving this long after its id's time is late: a resuming client, which
# starts a little (mesh/client.py RESUME_MARGIN_MS) before its last seen id, would skip it.
LATE_AFTER_MS = 2_000
# Late arrivals remembered per room for resuming sessions.
LATE_ARRIVALS_MAX = 1_000
# Pushes held per room while a catch-up runs; past it they are handed on regardless.
HELD_PUSHES_MAX = 10_000


@dataclass(slots=True)
class _Read:
    ticket: int
    room: str
    before: str | None
    after: str | None
    limit: int
    deadline: float
    waiting: set[str]
    needed: int  # answers without which the page could miss acknowledged messages
    bytes_max: int | None = None  # the merged page's budget (router/page_bytes.py)
    resume_since: str | None = None  # where the session's replay began, for a resume
    pages: dict[str, ReplicaPage] = field(default_factory=dict)


@dataclass(slots=True)
class _Who:
    ticket: int
    deadline: float
    waiting: set[str]
    users: set[str]


@dataclass(slots=True)
class _LocalRoom:
    """A room with sessions on this node."""

    subscribed_wall_ms: int
    ready: bool = False
    tickets: list[int] = field(default_factory=list)
    registration: int | None = None  # request id awaiting the coordinator's ack
    awaiting: str | None = None  # the coordinator asked
    deadline: float = 0.0
    recent: "OrderedDict[str, None]" = field(default_factory=OrderedDict)
    held: list[RoomMessage] | None = None  # pushes waiting for a catch-up (None: none runs)

    def synced(self, replica: str) -> int:
        """Since when pushes from another node, `replica`, are known whole (see
        RoomEngine._synced_ms for this node's own part)."""
        return self.synced_ms.get(replica, self.subscribed_wall_ms)

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


# What a storage token was issued for.
@dataclass(frozen=True, slots=True)
class _ForWrite:
    write_id: int


@dataclass(frozen=True, slots=True)
class _ForReplica:
    node: str
    write_id: int
    late: bool = False  # a hint handed back: announce it if it is new here


@dataclass(frozen=True, slots=True)
class _ForRepair:
    """A copy sent to mend a replica: nobody waits for its answer."""


@dataclass(frozen=True, slots=True)
class _ForOwnHint:
    """A hint this coordinator keeps for a replica nobody could stand in for."""


@dataclass(frozen=True, slots=True)
class _ForPeerRead:
    node: str
    read_id: int
    forward: bool  # the read pages forward (from `after`): a cut keeps the oldest


@dataclass(frozen=True, slots=True)
class _ForOwnRead:
    read_id: int


@dataclass(slots=True)
class EngineStatistics:
    writes_coordinated: int = 0
    writes_acknowledged: int = 0
    writes_failed: int = 0
    forwards_sent: int = 0
    copies_stored: int = 0
    reads_served: int = 0
    read_repairs: int = 0
    pushes_sent: int = 0
    push_retransmits: int = 0
    events_delivered: int = 0
    catch_ups: int = 0
    interest_dropped: int = 0
    late_posts: int = 0
    future_ids_refused: int = 0


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
        self.stats = EngineStatistics()
        self._epoch = epoch
        self._wall_offset_ms = wall_offset_ms
        self._local_users = local_users
        self._clock = HybridClock(node_id)
        self._ring = HashRing([node_id], vnodes=config.vnodes)
        self._alive: set[str] = {node_id}
        self._reachable: set[str] = {node_id}  # alive or suspect
        # Write, forward and read ids go to peers and come back in answers: numbering them
        # from the epoch keeps an answer meant for an earlier start from matching a
        # request of this one.
        self._numbers = itertools.count(epoch * EPOCH_NUMBERS + 1)
        self._internal = itertools.count(-1, -1)  # tickets of the engine's own reads
        self._forwards: dict[int, PendingForward] = {}
        self._writes: dict[int, Write] = {}
        self._write_by_key: dict[tuple[str, str], int] = {}
        self._room_order: dict[str, deque[int]] = {}
        self._tokens: dict[
            int, _ForWrite | _ForReplica | _ForRepair | _ForOwnHint | _ForPeerRead | _ForOwnRead
        ] = {}
        self._reads: dict[int, _Read] = {}
        self._catch_ups: dict[int, tuple[str, str]] = {}  # internal ticket -> (room, after)
        self._whos: dict[int, _Who] = {}
        self._local: dict[str, _LocalRoom] = {}
        # Registration numbers of one start stay below the next start's (epochs grow).
        self._interest = InterestTable(
            config.interest_lapse_s, first_number=epoch * EPOCH_NUMBERS + 1
        )
        self._outbound: dict[str, OutboundStream] = {}
        self._inbound: dict[str, InboundStream] = {}
        self._streams_opened = 0
        self._next_refresh = 0.0
        self._joined = alone
        self._first_peer_at: float | None = None
        self._last_members: dict[str, Health] = {}
        self.anti_entropy = AntiEntropy(
            node_id,
            config.anti_entropy_interval_s,
            self._numbers,
            self.live_replicas,
            lambda room: node_id in self.preference_list(room),
            config.anti_entropy_messages_per_s,
        )
        self.handoff = HintedHandoff(
            node_id, config, self._numbers, lambda: set(self._alive), self._wall_ms
        )
        self.memberships = Memberships(
            node_id,
            config,
            self._numbers,
            lambda user: self.live_replicas(ring_key(user)) if self._joined else [],
        )
        self._last_tick: float | None = None
        self._latest_now: float | None = None  # the latest time any event brought
        # Late messages to announce once their room has a coordinator (bounded: past it
        # anti-entropy and resumes' reads still bring them, only without a push).
        self._unannounced: deque[RoomMessage] = deque(maxlen=LATE_ARRIVALS_MAX)

    # ---- the view of the mesh ----

    def observe(self, message_id: str) -> None:
        """Move the id clock past an id seen from a peer (checked on arrival)."""
        if is_message_id(message_id):
            self._clock.observe(MessageId.parse(message_id))

    def observe_stored(self, message_id: str, now: float) -> bool:
        """Move the id clock past the newest id on disk at start, unless that id lies
        beyond the allowed skew (stored before ids were checked): then False, unseen."""
        if is_message_id(message_id) and self._too_far_ahead(
            MessageId.parse(message_id).time_ms, now
        ):
            self.stats.future_ids_refused += 1
            return False
        self.observe(message_id)
        return True

    def _too_far_ahead(self, time_ms: int, now: float) -> bool:
        return time_ms > self._wall_ms(now) + self.config.clock_skew_max_ms

    def _set_members(self, members: Mapping[str, Health], now: float) -> list[Effect]:
        """The membership view: every node not departed, and its health. Only alive
        nodes coordinate and take writes; a suspect one keeps its registrations and the
        pushes owed to it (it may be only slow), a dead one loses them."""
        before = {room: self.coordinator(room) for room in self._local}
        placed = {room: set(self.preference_list(room)) for room in self._local}
        for node in self._ring.nodes - set(members) - {self.node_id}:
            self._ring.remove(node)
        for node in members:
            self._ring.add(node)
        alive = {node for node, health in members.items() if health == "alive"} | {self.node_id}
        reachable = {node for node, health in members.items() if health != "dead"}
        self._last_members = dict(members)
        if len(alive) > 1 and self._first_peer_at is None:
            # Joined once the first peer's gossip has had time to fill in the rest of
            # the mesh: placing rooms on a partial ring would write them to the wrong
            # nodes. The tick completes the join.
            self._first_peer_at = now
        gone = self._reachable - reachable - {self.node_id}
        returned = alive - self._alive
        self._alive, self._reachable = alive, reachable | {self.node_id}
        effects: list[Effect] = []
        for node in gone:
            self._interest.drop_node(node)
            self._outbound.pop(node, None)
            self._inbound.pop(node, None)
        for room, local in self._local.items():
            coordinator = self.coordinator(room)
            replicas = set(self.live_replicas(room))
            if coordinator != before[room] or replicas & returned:
                effects += self._register(room, local, now, renewal=local.ready)
            if local.ready:
                effects += self._catch_up_owed(room, local, before[room], gone & placed[room], now)
        return effects

    def _catch_up_owed(
        self, room: str, local: _LocalRoom, old: str | None, gone: set[str], now: float
    ) -> list[Effect]:
        """After the membership view changed: pushes owed to this node may be lost with
        a coordinator that changed (its successor may never have had them) or with a
        replica that pushed here and is now dead or departed. Catch up from the earliest
        moment they were known whole."""
        owed = [node for node in gone if node in local.synced_ms]
        changed = self.coordinator(room) != old
        if changed and old is not None:
            owed.append(old)
        if not owed:
            return self._catch_up(room, now) if changed else []
        now_ms = self._wall_ms(now)
        since_ms = min(self._synced_ms(room, local, now_ms, node) for node in owed)
        return self._catch_up(room, now, since_ms=since_ms)

    def preference_list(self, room: str) -> list[str]:
        return self._ring.preference_list(room, self.config.replicas)

    def live_replicas(self, room: str) -> list[str]:
        return [node for node in self.preference_list(room) if node in self._alive]

    def coordinator(self, room: str) -> str | None:
        live = self.live_replicas(room)
        return live[0] if live and self._joined else None

    @property
    def joined(self) -> bool:
        return self._joined

    def expect_peers(self, expected: bool) -> None:
        """Set once the shell knows whether the node has seeds or remembered peers."""
        self._joined = self._joined or not expected

    def _why_no_replica(self) -> str:
        if not self._joined:
            return "this node is still joining the mesh"
        return "no replica of the room is alive"

    def set_wall_offset_ms(self, wall_offset_ms: int) -> None:
        """The shell's wall clock was stepped: ids and skew bounds follow it (the id clock
        itself never goes back, see message_ids.py)."""
        self._wall_offset_ms = wall_offset_ms

    def _wall_ms(self, now: float) -> int:
        return int(now * 1000) + self._wall_offset_ms

    # ---- requests from this node's clients ----

    def _send(self, ticket: int, request: SendRequest, now: float) -> list[Effect]:
        coordinator = self.coordinator(request.room)
        if coordinator is None:
            return [Complete(ticket, Refused("unavailable", self._why_no_replica()))]
        if coordinator == self.node_id:
            return self._coordinate(LocalOrigin(ticket), request, now)
        forward_id = next(self._numbers)
        deadline = now + self.config.write_timeout_s + 2 * self.config.retry_interval_s
        self._forwards[forward_id] = PendingForward(ticket, request, deadline, coordinator, now)
        self.stats.forwards_sent += 1
        return [SendPeer(coordinator, _forward_message(forward_id, request))]

    def _read(
        self,
        ticket: int,
        room: str,
        *,
        before: str | None,
        after: str | None,
        limit: int,
        now: float,
        quorum: int | None = None,
        late_since_ms: int | None = None,
        bytes_max: int | None = None,
        resume_since: str | None = None,
    ) -> list[Effect]:
        """A page of the room from R replicas (this node first when it is one), merged,
        its messages within `bytes_max` (router/page_bytes.py message_bytes) when given.
        `quorum` asks more (or fewer) replicas than R: a sweep that repairs a whole room
        reads from all of them. With `late_since_ms` (a resume's first page) the page
        also brings the messages replicas recorded as late arrivals since then, with ids
        up to `after`; every live replica is asked, since any one may be the one that
        received a message late, and `quorum` of them must answer."""
        live = self.live_replicas(room)
        if self.node_id in live:
            live.remove(self.node_id)
            live.insert(0, self.node_id)
        wanted = min(quorum or self.config.read_quorum, len(self.preference_list(room)))
        asked = live if late_since_ms is not None else live[:wanted]
        targets = asked if self._joined else []
        if not targets or len(targets) < wanted:
            reason = self._why_no_replica()
            if targets:
                reason = f"{len(targets)} of the {wanted} replicas this read needs are alive"
            return self._complete(ticket, Refused("unavailable", reason), now)
        read_id = next(self._numbers)
        deadline = now + self.config.read_timeout_s
        self._reads[read_id] = _Read(
            ticket,
            room,
            before,
            after,
            limit,
            deadline,
            set(targets),
            needed=wanted,
            bytes_max=bytes_max,
            resume_since=resume_since,
        )
        effects: list[Effect] = []
        for target in targets:
            if target == self.node_id:
                token = next(self._numbers)
                self._tokens[token] = _ForOwnRead(read_id)
                effects.append(Load(token, room, before, after, limit, late_since_ms))
            else:
                request = ReadRequest(read_id, room, before, after, limit, late_since_ms)
                effects.append(SendPeer(target, request))
        return effects

    def _resume(
        self, ticket: int, room: str, after: str, limit: int, now: float, *, since: str
    ) -> list[Effect]:
        """A page of a session's replay from `after`, read from enough replicas to overlap
        every write quorum. The first page (at `since`) also brings the late arrivals
        replicas recorded since a margin before its time, with ids up to it: written
        where this node could not hear, they sort before the resume point although the
        client never saw them. The last page adds those this node noted itself."""
        late_since_ms = None
        if after == since and is_message_id(after):
            late_since_ms = max(0, MessageId.parse(after).time_ms - self.config.catch_up_margin_ms)
        quorum = self.config.resume_quorum
        return self._read(
            ticket,
            room,
            before=None,
            after=after,
            limit=limit,
            now=now,
            quorum=quorum,
            late_since_ms=late_since_ms,
            resume_since=since,
        )

    def _subscribe(self, ticket: int, room: str, now: float) -> list[Effect]:
        """This node has (or now gets) sessions in the room: register for its pushes.
        Completes with Ready once the coordinator has the registration."""
        local = self._local.get(room)
        if local is None:
            local = self._local[room] = _LocalRoom(subscribed_wall_ms=self._wall_ms(now))
        # A message handed on before this session came may reach the room again (its
        # send retried after a failure and now acknowledged): the newcomer needs it, and
        # its replay may not have it yet. Earlier sessions may see it twice; clients
        # drop repeats by id.
        local.recent.clear()
        if local.ready:
            return [Complete(ticket, Ready())]
        local.tickets.append(ticket)
        if local.registration is not None or local.awaiting is not None:
            return []
        return self._register(room, local, now, renewal=False)

    def _unsubscribe(self, room: str, now: float) -> list[Effect]:
        """No session on this node is in the room any more."""
        local = self._local.pop(room, None)
        if local is None:
            return []
        effects: list[Effect] = [
            Complete(ticket, Refused("unavailable", "left the room")) for ticket in local.tickets
        ]
        for node in self.live_replicas(room):
            if node == self.node_id:
                self._interest.withdraw(node, [room])
            else:
                effects.append(SendPeer(node, Interest(0, withdrawn=[room])))
        return effects

    def _announce_event(self, event: PresenceChanged | TypingNotice, now: float) -> list[Effect]:
        """A presence or typing event of a local session: to the room's other nodes (this
        node's own sessions are the shell's to tell)."""
        coordinator = self.coordinator(event.room)
        if coordinator is None:
            return []
        if coordinator == self.node_id:
            return self._fan_out(event, event.room, now)
        return [SendPeer(coordinator, Announce(event))]

    def _who(self, ticket: int, room: str, now: float) -> list[Effect]:
        """Everyone with a session in the room, on any live node."""
        users = set(self._local_users(room))
        others = self._alive - {self.node_id}
        if not others:
            return [Complete(ticket, Users(sorted(users)))]
        request_id = next(self._numbers)
        self._whos[request_id] = _Who(ticket, now + self.config.read_timeout_s, set(others), users)
        return [SendPeer(node, WhoRequest(request_id, room)) for node in sorted(others)]

    def _record_membership(self, ticket: int, change: MembershipChange, now: float) -> list[Effect]:
        """A user joined or left a room through this node: keep it here and with the
        user's nodes (router/memberships.py). Completes with Ready once on this disk."""
        return self.memberships.record(ticket, change, now)

    def _rooms_of(self, ticket: int, user: str, now: float) -> list[Effect]:
        """The rooms the user is in, whichever nodes they joined through: Rooms."""
        return self.memberships.lookup(ticket, user, now)

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
                return self._set_members(members, now)
            case SendMessage(ticket, request):
                return self._send(ticket, request, now)
            case ReadPage(ticket, room, before, after, limit, quorum, bytes_max):
                return self._read(
                    ticket,
                    room,
                    before=before,
                    after=after,
                    limit=limit,
                    now=now,
                    quorum=quorum,
                    bytes_max=bytes_max,
                )
            case ResumeRoom(ticket, room, after, limit, since):
                return self._resume(ticket, room, after, limit, now, since=since)
            case Subscribe(ticket, room):
                return self._subscribe(ticket, room, now)
            case Unsubscribe(room):
                return self._unsubscribe(room, now)
            case AnnounceEvent(announced):
                return self._announce_event(announced, now)
            case WhoIsIn(ticket, room):
                return self._who(ticket, room, now)
            case RecordMembership(ticket, change):
                # Kept here and with the user's nodes; Ready once on this disk.
                return self.memberships.record(ticket, change, now)
            case RoomsOf(ticket, user):
                return self.memberships.lookup(ticket, user, now)
        raise AssertionError(f"not an engine event: {event!r}")

    def _storage_done(
        self, effect: StorageEffect, result: StorageResult, now: float
    ) -> list[Effect]:
        """Hand the end of a storage effect to whoever asked for it; a failure ends the
        request as a failure, so nothing waits on a token for good."""
        failed = isinstance(result, StorageFailed)
        match effect, result:
            case (Store(token) | StoreHint(token), Stored(kept, known)):
                return self._stored(token, kept, known, now)
            case (Store(token) | StoreHint(token), StorageFailed()):
                return self._stored(token, None, False, now)
            case (Load(token) | LoadMessages(token), Loaded(messages, more, late)):
                return self._loaded(token, messages, more, now, late)
            case (Load(token) | LoadMessages(token), StorageFailed()):
                return self._loaded(token, None, False, now)
            case (LoadHints(token), HintsLoaded(messages)):
                return self.handoff.hints_loaded(token, messages, now)
            case (LoadHints(token), StorageFailed()):
                return self.handoff.hints_failed(token, now)
            case (ExpireHints(token), HintsExpired(dropped)):
                return self.handoff.hints_expired(token, dropped)
            case (ExpireHints(token), StorageFailed()):
                return self.handoff.hints_expired(token, {})
            case (DeleteHint(), Done() | StorageFailed()):
                # A hint left behind is replayed again; the owner keeps one copy.
                return []
            case (ListRooms(token), RoomsListed(rooms)):
                return self.anti_entropy.rooms_listed(token, rooms)
            case (LoadDigest(token), DigestLoaded(digest)):
                return self.anti_entropy.digest_loaded(token, digest)
            case (LoadIds(token), IdsLoaded(ids, more)):
                return self.anti_entropy.ids_loaded(token, ids, more)
            case (ListRooms(token) | LoadDigest(token) | LoadIds(token), StorageFailed()):
                return self.anti_entropy.abandon(token)
            case (StoreMembership(token), Done() | StorageFailed()):
                return self.memberships.stored(token, not failed)
            case (LoadMemberships(token), MembershipsLoaded(changes)):
                return self.memberships.loaded(token, changes)
            case (LoadMemberships(token), StorageFailed()):
                return self.memberships.loaded(token, None)
        raise AssertionError(f"{type(result).__name__} cannot end {type(effect).__name__}")

    def _stored(
        self, token: int, kept: RoomMessage | None, duplicate: bool, now: float
    ) -> list[Effect]:
        """A Store finished: `kept` is the copy on disk (None if the write failed)."""
        purpose = self._tokens.pop(token, None)
        if kept is not None:
            self.observe(kept.id)
        match purpose:
            case _ForWrite(write_id):
                write = self._writes.get(write_id)
                if write is None:
                    return []
                write.record(self.node_id, None if kept is None else kept.id)
                write.duplicate = write.duplicate or duplicate
                return self._progress(write, now)
            case _ForReplica(node, write_id, late):
                if kept is not None:
                    self.stats.copies_stored += 1
                ack: list[Effect] = [
                    SendPeer(node, ReplicaAck(write_id, "" if kept is None else kept.id))
                ]
                if late and kept is not None and not duplicate:
                    return ack + self._announce_late(kept, now)
                return ack
            case _ForRepair() if kept is not None and not duplicate:
                return self._announce_late(kept, now)
            case _:
                return []

    def _announce_late(self, message: RoomMessage, now: float) -> list[Effect]:
        """A recent message reached this replica only by repair: it was written while this
        node was cut off, so members who were too may have missed it. Have the room's
        coordinator push it (nodes hand each id to their sessions once), and hand it to
        this node's sessions at once: the push may come only after a resume that would
        have needed it."""
        horizon_ms = self._wall_ms(now) - self.config.late_post_window_ms
        if message.time_ms < horizon_ms:
            return []
        self.stats.late_posts += 1
        effects: list[Effect] = []
        if self.coordinator(message.room) != self.node_id:
            effects += self._deliver_here(Posted(message))
        return effects + self._announce(message, now)

    def _announce(self, message: RoomMessage, now: float) -> list[Effect]:
        """To the room's coordinator for a push; with none yet (this node is still
        joining, or the room's replicas are down) the announcement waits for one."""
        coordinator = self.coordinator(message.room)
        if coordinator is None:
            self._unannounced.append(message)
            return []
        if coordinator == self.node_id:
            return self._fan_out(Posted(message), message.room, now)
        return [SendPeer(coordinator, Announce(Posted(message)))]

    def _announce_waiting(self, now: float) -> list[Effect]:
        waiting, self._unannounced = self._unannounced, deque(maxlen=LATE_ARRIVALS_MAX)
        horizon_ms = self._wall_ms(now) - self.config.late_post_window_ms
        effects: list[Effect] = []
        for message in waiting:
            if message.time_ms >= horizon_ms:
                effects += self._announce(message, now)
        return effects

    def _loaded(
        self,
        token: int,
        messages: list[RoomMessage] | None,
        more: bool,
        now: float,
        late: list[RoomMessage] | None = None,
    ) -> list[Effect]:
        """A Load or LoadMessages finished (None: the read failed); `late`: the late
        arrivals a Load with late_since_ms asked for."""
        late = (late or [])[-LATE_MESSAGES_MAX:]
        if self.anti_entropy.owns(token):
            return self.anti_entropy.messages_loaded(token, messages or [])
        purpose = self._tokens.pop(token, None)
        match purpose:
            case _ForPeerRead(node, read_id, forward):
                self.stats.reads_served += 1
                if messages is None:
                    return [SendPeer(node, ReadReply(read_id, ok=False))]
                return [SendPeer(node, _read_reply(read_id, messages, more, late, forward))]
            case _ForOwnRead(read_id):
                page = None if messages is None else ReplicaPage(messages, more, late)
                return self._read_answered(read_id, self.node_id, page, now)
            case _:
                return []

    # ---- peer messages ----

    def _peer_message(self, sender: str, message: RouterMessage, now: float) -> list[Effect]:
        self._latest_now = now
        checked = check_times(message, self._wall_ms(now) + self.config.clock_skew_max_ms)
        if checked.message is None or checked.dropped:
            return self._refuse_future(sender, message, checked, now)
        match message:
            case Forward(forward_id, room, user, client_msg_id, body):
                request = SendRequest(room, user, client_msg_id, body)
                return self._coordinate(RemoteOrigin(sender, forward_id), request, now)
            case ForwardReply(forward_id, stored, duplicate, error, reason):
                forward = self._forwards.pop(forward_id, None)
                if forward is None:
                    return []
                outcome: Outcome
                if stored is not None:
                    self.observe(stored.id)
                    outcome = Acked(stored, duplicate)
                else:
                    outcome = Refused(error or "unavailable", reason)
                return self._complete(forward.ticket, outcome, now)
            case Replicate(write_id, copy, hint_for, handed_off):
                self.observe(copy.id)
                token = next(self._numbers)
                self._tokens[token] = (
                    _ForReplica(sender, write_id, handed_off) if write_id else _ForRepair()
                )
                if hint_for and hint_for != self.node_id:
                    self.handoff.stats.hints_stored += 1
                    return [StoreHint(token, hint_for, copy)]
                return [Store(token, copy, self._late_at(copy, now))]
            case ReplicaAck(write_id, kept_id) if self.handoff.owns_write(write_id):
                return self.handoff.acknowledged(sender, write_id, kept_id)
            case ReplicaAck(write_id, kept_id):
                write = self._writes.get(write_id)
                if write is None or sender not in write.targets:
                    return []
                write.record(sender, kept_id or None)
                return self._progress(write, now)
            case ReadRequest(read_id, room, before, after, limit, late_since_ms):
                token = next(self._numbers)
                self._tokens[token] = _ForPeerRead(sender, read_id, forward=after is not None)
                return [Load(token, room, before, after, limit, late_since_ms)]
            case ReadReply(read_id, messages, more, ok, late):
                page = ReplicaPage(messages, more, late) if ok else None
                return self._read_answered(read_id, sender, page, now)
            case Interest(request_id, rooms, withdrawn):
                numbers = self._interest.register(sender, rooms, now)
                self._interest.withdraw(sender, withdrawn)
                if not rooms:
                    return []
                return [SendPeer(sender, InterestAck(request_id, rooms, numbers))]
            case InterestAck(request_id, rooms, numbers):
                registrations = dict(zip(rooms, numbers, strict=False))
                return self._interest_acknowledged(sender, request_id, registrations, now)
            case Push():
                return self._pushed(sender, message, now)
            case PushAck(epoch, through):
                stream = self._outbound.get(sender)
                if stream is not None:
                    stream.acknowledge(epoch, through)
                return []
            case Announce(event):
                return self._fan_out(event, event.room, now)
            case DigestOffer() | DigestDiff() | IdPage() | Want():
                return self.anti_entropy.handle(sender, message)
            case MembershipUpdate() | MembershipAck() | MembershipQuery() | MembershipReply():
                return self.memberships.handle(sender, message)
            case WhoRequest(request_id, room):
                users = self._local_users(room)
                return [SendPeer(sender, WhoReply(request_id, users))]
            case WhoReply(request_id, users):
                who = self._whos.get(request_id)
                if who is None:
                    return []
                who.users.update(users)
                who.waiting.discard(sender)
                if who.waiting:
                    return []
                del self._whos[request_id]
                return [Complete(who.ticket, Users(sorted(who.users)))]
        return []

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

    # ---- time ----

    def _tick(self, now: float) -> list[Effect]:
        effects: list[Effect] = []
        settled = self._first_peer_at is not None and (
            now - self._first_peer_at >= self.config.join_settle_s
        )
        if not self._joined and settled:
            self._joined = True
            # Rooms can be placed now: register interest and catch up as for any change.
            effects += self._set_members(self._last_members, now)
        ran_until = self._last_tick if self._last_tick is not None else now
        stalled_s = now - ran_until
        self._last_tick = self._latest_now = now
        if stalled_s >= self.config.stall_after_s and self._local:
            effects.append(Warn(f"this node stood still for {stalled_s:.1f}s; catching up"))
            ran_until_ms = self._wall_ms(ran_until)
            for room, local in self._local.items():
                if local.ready:
                    since_ms = self._synced_ms(room, local, ran_until_ms)
                    effects += self._catch_up(room, now, since_ms=since_ms)
        effects += self._tick_forwards(now)
        effects += self._tick_writes(now)
        for read_id in [key for key, read in self._reads.items() if now >= read.deadline]:
            effects += self._finish_read(read_id, now)
        for request_id in [key for key, who in self._whos.items() if now >= who.deadline]:
            who = self._whos.pop(request_id)
            effects.append(Complete(who.ticket, Users(sorted(who.users))))
        effects += self._tick_interest(now)
        effects += self._tick_streams(now)
        effects += self.memberships.tick(now)
        if self._joined:
            if self._unannounced:
                effects += self._announce_waiting(now)
            effects += self.anti_entropy.tick(now)
            effects += self.handoff.tick(now)
        return effects

    def _tick_forwards(self, now: float) -> list[Effect]:
        effects: list[Effect] = []
        retry_s = self.config.retry_interval_s
        for forward_id, forward in list(self._forwards.items()):
            if now >= forward.deadline:
                del self._forwards[forward_id]
                reason = f"the room's coordinator {forward.target} did not answer in time"
                effects.append(Complete(forward.ticket, Refused("unavailable", reason)))
                continue
            if now - forward.sent_at < retry_s:
                continue
            coordinator = self.coordinator(forward.request.room)
            if coordinator == self.node_id:
                # The coordinator failed and this node is next: carry the write out here.
                del self._forwards[forward_id]
                effects += self._coordinate(LocalOrigin(forward.ticket), forward.request, now)
                continue
            if coordinator is not None:
                forward.target, forward.sent_at = coordinator, now
                effects.append(SendPeer(coordinator, _forward_message(forward_id, forward.request)))
        return effects

    def _tick_writes(self, now: float) -> list[Effect]:
        effects: list[Effect] = []
        for write in list(self._writes.values()):
            if now >= write.deadline:
                if write.outcome is None:
                    missing = write.wanted - len(write.kept)
                    effects += self._settle(
                        write,
                        write.give_up(f"{missing} more replica(s) needed did not store it in time"),
                        now,
                    )
                self._forget(write)
            elif now - write.sent_at >= self.config.retry_interval_s:
                write.sent_at = now
                for node in write.waiting_on:
                    hint_for = write.hints.get(node, "")
                    effects.append(
                        SendPeer(node, Replicate(write.write_id, write.message, hint_for))
                    )
        return effects

    def _tick_interest(self, now: float) -> list[Effect]:
        effects: list[Effect] = []
        self._interest.expire(now)
        for room, local in list(self._local.items()):
            if local.awaiting is not None and now >= local.deadline:
                effects += self._register(room, local, now, renewal=local.ready)
                if not local.ready:
                    tickets, local.tickets = local.tickets, []
                    reason = f"the room's coordinator {local.awaiting} did not answer"
                    effects += [Complete(t, Refused("unavailable", reason)) for t in tickets]
        for room, local in self._local.items():
            if local.catch_up_after is not None and now >= local.catch_up_retry_at:
                after, local.catch_up_after = local.catch_up_after, None
                effects += self._catch_up(room, now, after=after)
        if now < self._next_refresh:
            return effects
        self._next_refresh = now + self.config.interest_refresh_s
        by_node: dict[str, list[str]] = {}
        for room, local in self._local.items():
            if not local.ready:
                continue
            for node in self.live_replicas(room):
                if node == self.node_id:
                    self._interest.register(node, [room], now)
                else:
                    by_node.setdefault(node, []).append(room)
        for node, rooms in sorted(by_node.items()):
            for start in range(0, len(rooms), INTEREST_ROOMS_MAX):
                chunk = rooms[start : start + INTEREST_ROOMS_MAX]
                effects.append(SendPeer(node, Interest(0, rooms=chunk)))
        return effects

    def _tick_streams(self, now: float) -> list[Effect]:
        effects: list[Effect] = []
        for node, inbound in self._inbound.items():
            if inbound.ack_due:
                inbound.ack_due = False
                effects.append(SendPeer(node, PushAck(inbound.epoch, inbound.through)))
        for node, outbound in self._outbound.items():
            again = outbound.due(now, self.config.push_retry_s, PUSH_RETRIES_PER_TICK)
            self.stats.push_retransmits += len(again)
            effects += [SendPeer(node, push) for push in again]
        return effects

    # ---- coordinating writes ----

    def _coordinate(self, origin: Origin, request: SendRequest, now: float) -> list[Effect]:
        room = request.room
        if not self._joined:
            return self._answer(origin, Refused("unavailable", self._why_no_replica()), now)
        write_id = self._write_by_key.get((request.sender, request.client_msg_id))
        if write_id is not None:
            write = self._writes[write_id]
            if write.attach(origin) and write.outcome is not None:
                return self._answer(origin, write.outcome, now)
            return []
        replicas = self.preference_list(room)
        targets = [node for node in replicas if node in self._alive and node != self.node_id]
        # Each replica that is down gets a stand-in: the next live node on the ring past the
        # room's replicas, holding the copy as a hint (it counts towards W: a sloppy
        # quorum). With no node left to stand in, the coordinator keeps the hint itself
        # (that copy shares its disk, so it does not count).
        down = [node for node in replicas if node not in self._alive]
        stand_ins: dict[str, str] = {}
        if down:
            ring = self._ring.preference_list(room, len(self._ring.nodes))
            spare = [node for node in ring if node not in replicas and node in self._alive]
            stand_ins = dict(zip(spare, down, strict=False))
        kept_here = down[len(stand_ins) :]
        wanted = min(self.config.write_quorum, len(replicas))
        if len(targets) + len(stand_ins) + 1 < wanted:
            reason = (
                f"{len(targets) + len(stand_ins) + 1} of the {wanted} copies needed can be made"
            )
            return self._answer(origin, Refused("unavailable", reason), now)
        targets += list(stand_ins)
        message_id = self._clock.next_id(self._wall_ms(now))
        message = RoomMessage(
            id=str(message_id),
            room=room,
            sender=request.sender,
            client_msg_id=request.client_msg_id,
            time_ms=message_id.time_ms,
            body=request.body,
        )
        write_id = next(self._numbers)
        write = Write(
            write_id,
            message,
            targets,
            wanted,
            deadline=now + self.config.write_timeout_s,
            origins=[origin],
            sent_at=now,
            hints=stand_ins,
        )
        self._writes[write_id] = write
        self._write_by_key[message.key] = write_id
        self._room_order.setdefault(room, deque()).append(write_id)
        self.stats.writes_coordinated += 1
        token = next(self._numbers)
        self._tokens[token] = _ForWrite(write_id)
        effects: list[Effect] = [Store(token, message)]
        effects += [
            SendPeer(node, Replicate(write_id, message, stand_ins.get(node, "")))
            for node in targets
        ]
        for owner in kept_here:
            hint_token = next(self._numbers)
            self._tokens[hint_token] = _ForOwnHint()
            self.handoff.stats.hints_stored += 1
            effects.append(StoreHint(hint_token, owner, message))
        return effects

    def _progress(self, write: Write, now: float) -> list[Effect]:
        effects: list[Effect] = []
        if write.outcome is None:
            if write.quorum_reached:
                outcome = write.settle()
                effects += self._settle(write, outcome, now)
                # Replicas that stored an older id's twin get the winner (smallest id).
                for node, kept_id in write.kept.items():
                    if kept_id != outcome.message.id and node not in write.hints:
                        effects += self._repair(node, [outcome.message], now)
            elif write.hopeless:
                # Disks failed (not the network): an internal error, not a wait.
                failed = write.give_up("replicas failed to store it on disk", "internal")
                effects += self._settle(write, failed, now)
        if write.finished and write.drained:
            self._forget(write)
        return effects

    def _settle(self, write: Write, outcome: Outcome, now: float) -> list[Effect]:
        if isinstance(outcome, Acked):
            self.stats.writes_acknowledged += 1
        else:
            self.stats.writes_failed += 1
        effects: list[Effect] = []
        for origin in write.origins:
            effects += self._answer(origin, outcome, now)
        return effects + self._fan_out_in_order(write.message.room, now)

    def _answer(self, origin: Origin, outcome: Outcome, now: float) -> list[Effect]:
        if isinstance(origin, LocalOrigin):
            return self._complete(origin.ticket, outcome, now)
        if isinstance(outcome, Acked):
            reply = ForwardReply(origin.forward_id, outcome.message, outcome.duplicate)
        elif isinstance(outcome, Refused):
            reply = ForwardReply(origin.forward_id, error=outcome.code, reason=outcome.reason[:512])
        else:
            return []
        return [SendPeer(origin.node, reply)]

    def _forget(self, write: Write) -> None:
        self._writes.pop(write.write_id, None)
        if self._write_by_key.get(write.message.key) == write.write_id:
            del self._write_by_key[write.message.key]

    def _fan_out_in_order(self, room: str, now: float) -> list[Effect]:
        """Push the room's settled writes in the order their ids were assigned: the
        acknowledged ones, and failed ones this node stored, since history shows them and
        a retry would acknowledge them under that same, by then older, id. Were they
        not pushed, members would pass them by and never resume from before them."""
        order = self._room_order.get(room)
        effects: list[Effect] = []
        while order:
            write = self._writes.get(order[0])
            if write is not None and write.outcome is None:
                break
            order.popleft()
            if write is None:
                continue
            write.drained = True
            visible = write.visible_copy(self.node_id)
            if visible is not None:
                effects += self._fan_out(Posted(visible), room, now)
        if order is not None and not order:
            del self._room_order[room]
        return effects

    # ---- fan-out ----

    def _fan_out(self, event: RoomEvent, room: str, now: float) -> list[Effect]:
        origin = "" if isinstance(event, Posted) else event.origin
        effects: list[Effect] = []
        for node in self._interest.nodes(room):
            if node in (self.node_id, origin):
                continue
            if node not in self._reachable:
                # Registered, yet dead (or unknown) in this node's view: its pushes are not
                # sent. Dropping the registration gives its renewal a new number, which
                # tells it to catch up on what it missed (found by the simulator: a
                # restarted coordinator took a registration before it knew the node).
                self._interest.drop_node(node)
                self.stats.interest_dropped += 1
                continue
            stream = self._outbound.get(node)
            if stream is None:
                self._streams_opened += 1
                stream = OutboundStream(epoch=self._epoch * 1024 + self._streams_opened % 1024)
                self._outbound[node] = stream
            if len(stream.unacked) >= self.config.push_unacked_max:
                # The node stopped acknowledging: stop pushing; it catches up when it
                # registers again and learns it was dropped.
                del self._outbound[node]
                self._interest.drop_node(node)
                self.stats.interest_dropped += 1
                effects.append(Warn(f"{node} left {len(stream.unacked)} pushes unacknowledged"))
                continue
            effects.append(SendPeer(node, stream.push(event, now)))
            self.stats.pushes_sent += 1
        if origin != self.node_id:
            effects += self._deliver_here(event)
        return effects

    def _pushed(self, sender: str, push: Push, now: float) -> list[Effect]:
        inbound = self._inbound.get(sender)
        effects: list[Effect] = []
        if inbound is None or push.epoch > inbound.epoch:
            if inbound is not None:
                # The sender began a new stream: it restarted or gave us up for dead, and
                # what it pushed in between never came. Catch its rooms up first (newer
                # pushes wait meanwhile).
                for room, local in self._local.items():
                    if local.ready and sender in self.live_replicas(room):
                        effects += self._catch_up(room, now, since_ms=local.synced(sender))
            inbound = self._inbound[sender] = InboundStream.starting_at(push)
        elif push.epoch < inbound.epoch:
            return []  # a straggler from the sender's previous stream
        for event in inbound.receive(push):
            effects += self._deliver_here(event)
        return effects

    def _deliver_here(self, event: RoomEvent, *, caught_up: bool = False) -> list[Effect]:
        local = self._local.get(event.room)
        if isinstance(event, Posted):
            latest_now = self._latest_now
            if latest_now is not None and self._too_far_ahead(
                message_time_ms(event.message), latest_now
            ):
                self.stats.future_ids_refused += 1  # acknowledged with its stream, not shown
                return []
            self.observe(event.message.id)
            if local is None:
                return []
            if local.held is not None and not caught_up:
                # A catch-up is filling a gap: newer pushes wait, so that sessions (and
                # the resume points of their clients) never pass an undelivered message.
                local.held.append(event.message)
                if len(local.held) <= HELD_PUSHES_MAX:
                    return []
                warning = Warn(f"{event.room}: catch-up too slow, pushes passed it")
                return [warning, *self._release(local)]
            self._note_if_late(local, event.message)
            if not self._first_time(local, event.message.id):
                return []
            self.stats.events_delivered += 1
            return [DeliverMessage(event.message)]
        if local is None:
            return []
        return [DeliverEvent(event)]

    def _late_at(self, message: RoomMessage, now: float) -> int | None:
        """When a copy arriving now is late (see LATE_AFTER_MS): the time to record."""
        now_ms = self._wall_ms(now)
        return now_ms if message.time_ms < now_ms - LATE_AFTER_MS else None

    def _note_if_late(self, local: _LocalRoom, message: RoomMessage) -> None:
        """Remember a message that reached this node well after its id's time: a client
        resuming from a point past its id would not ask for it."""
        if self._latest_now is None:
            return
        now_ms = self._wall_ms(self._latest_now)
        if message.time_ms < now_ms - LATE_AFTER_MS:
            local.late.append((now_ms, message))

    def _late_arrivals(self, room: str) -> list[RoomMessage]:
        """Messages that reached this node late (see _note_if_late) within the last
        late_post_window_ms, oldest id first: a resume adds them to what it replays."""
        local = self._local.get(room)
        if local is None or self._latest_now is None:
            return []
        horizon_ms = self._wall_ms(self._latest_now) - self.config.late_post_window_ms
        recent = {m.id: m for at_ms, m in local.late if at_ms >= horizon_ms}
        return [recent[key] for key in sorted(recent)]

    def _release(self, local: _LocalRoom) -> list[Effect]:
        """The gap is filled: hand on the pushes that waited, in id order."""
        held, local.held = local.held or [], None
        effects: list[Effect] = []
        for message in sorted(held, key=lambda message: message.id):
            effects += self._deliver_here(Posted(message))
        return effects

    def _first_time(self, local: _LocalRoom, message_id: str) -> bool:
        if message_id in local.recent:
            return False
        local.recent[message_id] = None
        if len(local.recent) > self.config.recent_ids_per_room:
            local.recent.popitem(last=False)
        return True

    # ---- interest ----

    def _register(self, room: str, local: _LocalRoom, now: float, *, renewal: bool) -> list[Effect]:
        """Register with every live replica; the coordinator's ack makes the room ready."""
        live = self.live_replicas(room)
        if not live:
            local.registration = local.awaiting = None
            return []
        request_id = next(self._numbers)
        effects: list[Effect] = []
        for node in live:
            if node == self.node_id:
                self._interest.register(node, [room], now)
            else:
                effects.append(SendPeer(node, Interest(request_id, rooms=[room])))
        if live[0] == self.node_id:
            local.registration = local.awaiting = None
            return effects + self._ready(room, local, now)
        local.registration, local.awaiting = request_id, live[0]
        local.deadline = now + self.config.read_timeout_s
        return effects

    def _interest_acknowledged(
        self, sender: str, request_id: int, registrations: dict[str, int], now: float
    ) -> list[Effect]:
        effects: list[Effect] = []
        readied = set()
        for room, local in self._local.items():
            if local.registration == request_id and local.awaiting == sender:
                local.registration = local.awaiting = None
                if not local.ready:
                    readied.add(room)
                    effects += self._ready(room, local, now)
        for room, number in registrations.items():
            known = self._local.get(room)
            if known is None:
                continue
            before = known.registered_at.get(sender)
            known.registered_at[sender] = number
            if before == number or room in readied:
                # Registered all along: everything it coordinated until now was pushed.
                known.synced_ms[sender] = self._wall_ms(now)
            elif known.ready:
                # A replica holds a new registration of us: it lost the old one (it
                # restarted, or saw us dead), and whatever it coordinated meanwhile in
                # some node's view was never pushed here.
                effects += self._catch_up(room, now, since_ms=known.synced(sender))
                known.synced_ms[sender] = self._wall_ms(now)
        return effects

    def _ready(self, room: str, local: _LocalRoom, now: float) -> list[Effect]:
        local.ready = True
        tickets, local.tickets = local.tickets, []
        effects: list[Effect] = []
        for ticket in tickets:
            effects += self._complete(ticket, Ready(), now)
        return effects

    def _catch_up(
        self, room: str, now: float, *, since_ms: int | None = None, after: str | None = None
    ) -> list[Effect]:
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
                reference_ms = self._synced_ms(room, local, self._wall_ms(now))
            late_since_ms = max(0, reference_ms - self.config.catch_up_margin_ms)
            after = at_time(late_since_ms)
        self.stats.catch_ups += 1
        ticket = next(self._internal)
        self._catch_ups[ticket] = (room, after)
        local.catch_ups_running += 1
        if local.held is None:
            local.held = []
        return self._read(
            ticket,
            room,
            before=None,
            after=after,
            limit=CATCH_UP_PAGE,
            now=now,
            quorum=self.config.resume_quorum,
            late_since_ms=late_since_ms,
        )

    def _synced_ms(
        self, room: str, local: _LocalRoom, own_ms: int, replica: str | None = None
    ) -> int:
        """Since when (wall ms) pushes from `replica`, or from every reachable replica of
        the room if None, are known whole. What this node coordinates it hands to its own
        sessions directly, so its own part is whole up to `own_ms`, when it last ran. What
        a dead or departed replica owed was caught up when it went (_catch_up_owed), and
        its return registers anew: its mark would only pull every catch-up back to then."""
        if replica is not None:
            replicas = [replica]
        else:
            replicas = [node for node in self.preference_list(room) if node in self._reachable]
        return min(
            (own_ms if node == self.node_id else local.synced(node) for node in replicas),
            default=own_ms,
        )

    # ---- reads ----

    def _read_answered(
        self, read_id: int, replica: str, page: ReplicaPage | None, now: float
    ) -> list[Effect]:
        read = self._reads.get(read_id)
        if read is None or replica not in read.waiting:
            return []
        read.waiting.discard(replica)
        if page is not None:
            read.pages[replica] = page
        if read.waiting:
            return []
        return self._finish_read(read_id, now)

    def _finish_read(self, read_id: int, now: float) -> list[Effect]:
        read = self._reads.pop(read_id)
        if len(read.pages) < read.needed:
            reason = f"{len(read.pages)} of the {read.needed} replicas asked answered the read"
            return self._complete(read.ticket, Refused("unavailable", reason), now)
        merged = merge_pages(
            read.pages, forward=read.after is not None, limit=read.limit, bytes_max=read.bytes_max
        )
        effects: list[Effect] = []
        for replica, missing in merged.repairs.items():
            self.stats.read_repairs += len(missing)
            effects += self._repair(replica, missing, now)
        late = merged.late
        if read.resume_since is not None and not merged.more:
            since = read.resume_since
            late = late + [m for m in self._late_arrivals(read.room) if m.id <= since]
        page = Page(merged.messages, merged.more, late)
        return effects + self._complete(read.ticket, page, now)

    def _repair(self, node: str, messages: Iterable[RoomMessage], now: float) -> list[Effect]:
        effects: list[Effect] = []
        for message in messages:
            if node == self.node_id:
                token = next(self._numbers)
                self._tokens[token] = _ForRepair()
                effects.append(Store(token, message, self._late_at(message, now)))
            else:
                effects.append(SendPeer(node, Replicate(0, message)))
        return effects

    # ---- completions ----

    def _complete(self, ticket: int, outcome: Outcome, now: float) -> list[Effect]:
        if ticket >= 0:
            return [Complete(ticket, outcome)]
        caught = self._catch_ups.pop(ticket, None)
        if caught is None:
            return []
        room, after = caught
        local = self._local.get(room)
        if local is None:
            return []
        local.catch_ups_running -= 1
        if not isinstance(outcome, Page):
            # Keep the earliest start: the gap is still there until a read succeeds.
            pending = local.catch_up_after
            local.catch_up_after = after if pending is None else min(pending, after)
            local.catch_up_retry_at = now + self.config.retry_interval_s
            return []
        effects: list[Effect] = []
        for message in [*outcome.late, *outcome.messages]:
            effects += self._deliver_here(Posted(message), caught_up=True)
        if outcome.more and outcome.messages:
            effects += self._catch_up(room, now, after=outcome.messages[-1].id)
        elif local.catch_ups_running == 0 and local.catch_up_after is None:
            effects += self._release(local)
        return effects

    # ---- what the shell shows ----

    def statistics(self) -> dict[str, int]:
        """The engine's counters and gauges, by the names the node publishes them under."""
        stats, handoff = self.stats, self.handoff.stats
        anti_entropy, memberships = self.anti_entropy.stats, self.memberships.stats
        return {
            "writes_coordinated": stats.writes_coordinated,
            "writes_acknowledged": stats.writes_acknowledged,
            "writes_failed": stats.writes_failed,
            "writes_in_flight": len(self._writes),
            "forwards_sent": stats.forwards_sent,
            "reads_served": stats.reads_served,
            "read_repairs": stats.read_repairs,
            "pushes_sent": stats.pushes_sent,
            "push_retransmits": stats.push_retransmits,
            "pushes_unacknowledged": self.pushes_unacknowledged(),
            "room_catch_ups": stats.catch_ups,
            "interest_registrations": self._interest.registrations,
            "interest_dropped": stats.interest_dropped,
            "late_posts": stats.late_posts,
            "peer_ids_refused": stats.future_ids_refused,
            "hints_stored": handoff.hints_stored,
            "hints_replayed": handoff.hints_replayed,
            "hints_dropped": handoff.hints_dropped,
            "anti_entropy_rounds": anti_entropy.rounds,
            "anti_entropy_buckets_compared": anti_entropy.buckets_compared,
            "anti_entropy_messages_sent": anti_entropy.messages_sent,
            "anti_entropy_messages_deferred": anti_entropy.messages_deferred,
            "memberships_spread": memberships.changes_spread,
            "memberships_spread_abandoned": memberships.spreads_abandoned,
        }

    @property
    def writes_in_flight(self) -> int:
        return len(self._writes)

    @property
    def forwards_in_flight(self) -> int:
        return len(self._forwards)

    @property
    def interest_registrations(self) -> int:
        return self._interest.registrations

    def pushes_unacknowledged(self) -> int:
        return sum(len(stream.unacked) for stream in self._outbound.values())


def _read_reply(
    read_id: int, messages: list[RoomMessage], more: bool, late: list[RoomMessage], forward: bool
) -> ReadReply:
    """A replica's answer, within the peer frame: its page and its late arrivals (the
    newest ids) cut by bytes; a page cut short says `more`, so the reader goes on from it."""
    page, cut = cut_page(messages, READ_PAGE_BYTES_MAX, keep_oldest=forward)
    late, _ = cut_page(late, LATE_PAGE_BYTES_MAX, keep_oldest=False)
    return ReadReply(read_id, page, more or cut, late=late)


def _forward_message(forward_id: int, request: SendRequest) -> Forward:
    return Forward(forward_id, request.room, request.sender, request.client_msg_id, request.body)
