"""A deterministic simulator of whole nodes: membership, placement, writes, reads, fan-out.

Each node is the real `Membership` and the real `RoomEngine`, talking through the real
peer codec over a simulated network (delay, loss, duplication, reordering, partitions),
with a simulated disk (tests/sim/memory_store.py) whose commits take simulated time. Clients
are simulated too: writers send with client message ids and retry refused sends; members
sit in rooms on nodes, take live deliveries, and when their node restarts rejoin from the
last id they saw, as the client library does. One seed decides everything.
"""

import itertools
from collections import Counter
from dataclasses import dataclass, field

from mesh.client.room_cursor import RESUME_MARGIN_MS
from mesh.node.peer_bundles import PeerBundler, unbundled
from mesh.node.peer_codec import decode_peer_frame, encode_peer_frame
from mesh.node.room_driver import RoomDriver, members_changed
from peers.membership import Effect as MembershipEffect
from peers.membership import Membership, MembershipConfig, SendTo, StateChanged
from peers.records import MemberRecord
from peers.wire import Heartbeat, Leave
from router.config import RouterConfig
from router.effects import Acked, Outcome, Page, Ready, Refused, Rooms
from router.engine import RoomEngine
from router.error_codes import ErrorCode
from router.events import (
    Event,
    PeerMessage,
    ReadPage,
    RecordReadMarker,
    ResumeRoom,
    RoomsOf,
    SendMessage,
    Subscribe,
    Tick,
)
from router.message_ids import ORIGIN, earlier_by
from router.records import EventKind, ReadMarker, RoomMessage
from router.room_state import STATE_KINDS, RoomState
from router.room_view import RoomView
from router.wire import SessionEvent
from router.writes import SendRequest
from tests.sim.memory_store import MemoryStore
from tests.sim.simulated_disk import SimulatedDisk
from tests.sim.world import SimulatedWorld

TICK_INTERVAL_S = 0.05
DELAY_MIN_S = 0.001
DELAY_MAX_S = 0.020
MEMBERSHIP = MembershipConfig(heartbeat_interval_s=0.2, suspect_after_s=1.0, dead_after_s=2.0)
RETRY_AFTER_S = 1.0  # a refused send is retried by its writer this much later
PAGE = 100
WALL_OFFSET_MS = 1_000_000


class InvariantViolation(AssertionError):
    """A simulated run broke a promise; the message tells the seed and the story."""


@dataclass
class Member:
    """A user with a session in a room on a node (it follows the node's restarts)."""

    user: str
    room: str
    node: str
    seen: set[str] = field(default_factory=set)
    keys: set[tuple[str, str]] = field(default_factory=set)
    cursor: str = ""
    # While a rejoin replays the backlog, live messages wait (as in a real session).
    catching_up: bool = False
    held: list[tuple[str, tuple[str, str]]] = field(default_factory=list)
    disconnected: bool = False  # between a failed replay and the next join

    def live(self, message_id: str, key: tuple[str, str]) -> None:
        if self.disconnected:
            return
        if self.catching_up:
            self.held.append((message_id, key))
        else:
            self.receive(message_id, key)

    def caught_up(self) -> None:
        self.catching_up = False
        held, self.held = self.held, []
        for message_id, key in held:
            self.receive(message_id, key)

    def abandon(self) -> None:
        """The replay failed: the session ends, and the client rejoins from its cursor."""
        self.catching_up = False
        self.disconnected = True
        self.held.clear()

    def receive(self, message_id: str, key: tuple[str, str]) -> None:
        if message_id in self.seen or key in self.keys:
            return  # the client library drops repeats by id, and by send (twins)
        self.seen.add(message_id)
        self.keys.add(key)
        self.cursor = max(self.cursor, message_id)


@dataclass
class SimNode:
    node_id: str
    address: str
    seeds: tuple[str, ...]
    store: MemoryStore = field(default_factory=MemoryStore)
    incarnation: int = 0
    membership: Membership | None = None
    engine: RoomEngine | None = None
    driver: RoomDriver | None = None  # the node's own shell, over the simulated disk
    disk: SimulatedDisk | None = None
    paused: bool = False
    held: list[tuple[str, str, object]] = field(default_factory=list)
    remembered: tuple[str, ...] = ()
    # (room, id) -> live deliveries to its sessions since the room's last join on the node
    deliveries: Counter[tuple[str, str]] = field(default_factory=Counter)
    events_delivered: int = 0  # presence and typing
    # Per room, the newest id handed to its sessions, and the deliveries that came after
    # a newer one (since the node's start).
    newest_delivered: dict[str, str] = field(default_factory=dict)
    out_of_order: list[tuple[str, str]] = field(default_factory=list)
    # The same per (room, coordinating node): a message after a newer one from the same
    # coordinator. Two coordinators that overlapped (one was taken for dead) may
    # interleave; one coordinator's messages never may.
    newest_by_coordinator: dict[tuple[str, str], str] = field(default_factory=dict)
    out_of_order_within_coordinator: list[tuple[str, str]] = field(default_factory=list)

    @property
    def up(self) -> bool:
        return self.engine is not None


class SimulatedRooms(SimulatedWorld):
    def __init__(
        self, seed: int, size: int = 5, rooms: int = 4, config: RouterConfig | None = None
    ) -> None:
        super().__init__(seed, delay_min_s=DELAY_MIN_S, delay_max_s=DELAY_MAX_S)
        self.config = config or RouterConfig(
            read_quorum=self.rng.choice([1, 2, 3]), write_timeout_s=1.5, retry_interval_s=0.3
        )
        self.nodes: dict[str, SimNode] = {}
        self._by_address: dict[str, str] = {}
        self._tickets = itertools.count(1)
        self.rooms = [f"room{i}" for i in range(rooms)]
        self.members: list[Member] = []
        # What clients know: acknowledged sends (key -> id), sends still to be retried.
        self.acked: dict[tuple[str, str], str] = {}
        self.messages_acked: dict[str, list[tuple[str, str]]] = {}  # room -> (sender, id)
        self.requests_acked: list[SendRequest] = []
        self._sending: dict[int, tuple[str, SendRequest]] = {}  # ticket -> (node, request)
        self._joining: dict[int, Member] = {}
        self._replaying: dict[int, tuple[Member, str]] = {}  # ticket -> (member, since)
        self._sweeps: dict[int, str] = {}
        # Read markers: those acknowledged ((user, room) -> the greatest), those being
        # set (ticket -> marker), and what lookups through each node answered.
        self.markers_acked: dict[tuple[str, str], str] = {}
        self.markers_set: dict[tuple[str, str], set[str]] = {}  # acknowledged or not
        self._marking: dict[int, ReadMarker] = {}
        self._lookups: dict[int, tuple[str, str]] = {}  # ticket -> (node, user)
        self.looked_up: dict[tuple[str, str], dict[str, str]] = {}  # (node, user) -> markers
        self.refusals = 0
        self.forbidden = 0  # writes the room's state refused (not retried)
        self.posted_without_right: list[str] = []
        ids = [f"n{i}" for i in range(1, size + 1)]
        for index, node_id in enumerate(ids):
            address = f"10.0.0.{index + 1}:7200"
            # Every node has a seed (n1's is n2), as `meshchat up` gives them: a node
            # without one that lost its disk could only start a mesh of its own.
            seeds = ("10.0.0.2:7200",) if index == 0 else ("10.0.0.1:7200",)
            self.nodes[node_id] = SimNode(node_id, address, seeds)
            self._by_address[address] = node_id

    # ---- the world ----

    def start(self, node_id: str) -> None:
        node = self.nodes[node_id]
        assert not node.up, f"{node_id} is running"
        node.incarnation += 1
        node.paused = False
        node.held.clear()
        node.deliveries = Counter()
        node.newest_delivered.clear()
        node.out_of_order.clear()
        node.newest_by_coordinator.clear()
        node.out_of_order_within_coordinator.clear()
        node.membership = Membership(
            own=MemberRecord(node_id, node.address, node.incarnation),
            seeds=tuple(dict.fromkeys(node.seeds + node.remembered)),
            remembered=frozenset(node.remembered) - frozenset(node.seeds),
            config=MEMBERSHIP,
            now=self.now,
        )
        engine = RoomEngine(
            node_id,
            self.config,
            epoch=node.incarnation,
            wall_offset_ms=WALL_OFFSET_MS,
            local_users=lambda room: sorted(
                {m.user for m in self.members if m.node == node_id and m.room == room}
            ),
            alone=not (node.seeds or node.remembered),
        )
        engine.observe(node.store.highest_id)
        node.engine = engine
        node.disk = SimulatedDisk(
            node.store,
            schedule=lambda at, action: self._schedule(at, "disk", node, payload=action),
            clock=lambda: self.now,
            wall_ms=lambda: int(self.now * 1000) + WALL_OFFSET_MS,
            rng=self.rng,
        )
        shell = _NodeShell(self, node)
        # The node's own bundler: a flush is an event of its start, like a disk completion.
        bundler = PeerBundler(
            lambda target, frame: self._transmit(node_id, target, frame),
            lambda flush: self._schedule(self.now, "flush", node, payload=flush),
        )
        node.disk.on_store = lambda message: self._stored_here(node, message)
        node.driver = RoomDriver(
            engine,
            disk=node.disk,
            wire=bundler,
            sessions=shell,
            completions=shell,
            clock=lambda: self.now,
        )
        self.note(f"start {node_id} incarnation {node.incarnation}")
        self._schedule(self.now + self.rng.uniform(0, TICK_INTERVAL_S), "tick", node)
        for member in self.members:
            if member.node == node_id:
                self._join(member)

    def wipe(self, node_id: str) -> None:
        """The node's disk is lost (a crashed node only: it restarts empty)."""
        node = self.nodes[node_id]
        assert not node.up, f"{node_id} is running"
        node.store = MemoryStore()
        node.remembered = ()  # the peer book was in the data dir too
        self.note(f"wipe {node_id}")

    def crash(self, node_id: str) -> None:
        node = self.nodes[node_id]
        if node.membership is not None:
            # As the node's peer book: a start that met nobody keeps the old book.
            node.remembered = tuple(node.membership.peer_addresses(self.now)) or node.remembered
        node.membership = None
        node.engine = node.driver = node.disk = None
        node.paused = False
        node.held.clear()
        self.note(f"crash {node_id}")

    def pause(self, node_id: str) -> None:
        self.nodes[node_id].paused = True
        self.note(f"pause {node_id}")

    def resume(self, node_id: str) -> None:
        node = self.nodes[node_id]
        node.paused = False
        self.note(f"resume {node_id}")
        held, node.held = node.held, []
        for kind, sender, payload in held:  # what queued up while stopped happens at once
            self._happen(node, kind, sender, payload)

    # ---- clients ----

    def add_member(self, user: str, room: str, node_id: str) -> Member:
        member = Member(user, room, node_id)
        self.members.append(member)
        if self.nodes[node_id].up:
            self._join(member)
        return member

    def send(self, user: str, room: str, client_msg_id: str, node_id: str | None = None) -> None:
        """A writer sends through a live node (a random one unless named)."""
        request = SendRequest(room, user, client_msg_id, f"{user} says {client_msg_id}")
        self.submit(request, node_id)

    def relate(
        self,
        user: str,
        room: str,
        client_msg_id: str,
        kind: EventKind,
        *,
        target: str,
        key: str | None = None,
    ) -> None:
        """An edit, delete, reaction or unreaction of message `target`."""
        body = f"{user} edits {client_msg_id}" if kind == "edit" else ""
        self.submit(SendRequest(room, user, client_msg_id, body, kind, target, key))

    def change_room(
        self, user: str, room: str, client_msg_id: str, kind: EventKind, **fields: str
    ) -> None:
        """A state event of the room (router/room_state.py): `subject` and the `value`."""
        value, subject = fields.get("value", ""), fields.get("subject")
        self.submit(SendRequest(room, user, client_msg_id, value, kind, subject=subject))

    def submit(self, request: SendRequest, node_id: str | None = None) -> None:
        live = self.live_nodes()
        if not live:
            return
        node = self.nodes[node_id] if node_id else self.rng.choice(live)
        ticket = next(self._tickets)
        self._sending[ticket] = (node.node_id, request)
        self._feed(node, SendMessage(ticket, request))

    def mark_read(self, user: str, room: str, up_to: str) -> None:
        """A user's read marker, set through a live node."""
        live = self.live_nodes()
        if live:
            ticket = next(self._tickets)
            self._marking[ticket] = marker = ReadMarker(user, room, up_to)
            self.markers_set.setdefault((user, room), set()).add(up_to)
            self._feed(self.rng.choice(live), RecordReadMarker(ticket, marker))

    def look_up_markers(self, user: str) -> None:
        """Ask every live node for the user's read markers (see `looked_up`)."""
        for node in self.live_nodes():
            ticket = next(self._tickets)
            self._lookups[ticket] = (node.node_id, user)
            self._feed(node, RoomsOf(ticket, user))

    def _join(self, member: Member) -> None:
        node = self.nodes[member.node]
        for delivered in [key for key in node.deliveries if key[0] == member.room]:
            del node.deliveries[delivered]
        member.held.clear()
        member.disconnected = False
        member.catching_up = True
        ticket = next(self._tickets)
        self._joining[ticket] = member
        self._feed(node, Subscribe(ticket, member.room))

    def _replay(self, member: Member, after: str, *, since: str) -> None:
        node = self.nodes[member.node]
        ticket = next(self._tickets)
        self._replaying[ticket] = (member, since)
        self._feed(node, ResumeRoom(ticket, member.room, after, PAGE, since))

    def sweep(self, node_id: str) -> None:
        """Read every room whole from all its replicas: read repair evens them out."""
        for room in self.rooms:
            self._sweep_page(self.nodes[node_id], room, ORIGIN)

    def _sweep_page(self, node: SimNode, room: str, after: str) -> None:
        ticket = next(self._tickets)
        self._sweeps[ticket] = room
        quorum = self.config.replicas
        self._feed(node, ReadPage(ticket, room, None, after, 1000, quorum=quorum))

    def _completed(self, node: SimNode, ticket: int, outcome: Outcome) -> None:
        if ticket in self._sending:
            _, request = self._sending.pop(ticket)
            key = (request.sender, request.client_msg_id)
            if isinstance(outcome, Acked):
                if key in self.acked and self.acked[key] != outcome.message.id:
                    # Both ids were acknowledged: legal only if the later is the older twin.
                    self.note(f"{key} acknowledged as {self.acked[key]} and {outcome.message.id}")
                first = key not in self.acked
                if first:
                    self.requests_acked.append(request)
                self.acked[key] = min(self.acked.get(key, outcome.message.id), outcome.message.id)
                if first and request.kind == "message":
                    sent = self.messages_acked.setdefault(request.room, [])
                    sent.append((request.sender, self.acked[key]))
            elif isinstance(outcome, Refused) and outcome.code == ErrorCode.FORBIDDEN:
                self.forbidden += 1  # final: the room's state says no
            else:
                self.refusals += 1
                self._schedule(self.now + RETRY_AFTER_S, "retry", node, payload=request)
        elif ticket in self._joining:
            member = self._joining.pop(ticket)
            if isinstance(outcome, Ready):
                # As the client library does: a little before the last seen id.
                start = earlier_by(member.cursor, RESUME_MARGIN_MS) or ORIGIN
                self._replay(member, start, since=start)
            elif member.node == node.node_id and node.up:
                member.abandon()
                self._schedule(self.now + RETRY_AFTER_S, "rejoin", node, payload=member)
        elif ticket in self._replaying:
            member, since = self._replaying.pop(ticket)
            if isinstance(outcome, Page):
                for message in [*outcome.messages, *outcome.late]:
                    member.receive(message.id, message.key)
                if outcome.more and outcome.messages:
                    self._replay(member, outcome.messages[-1].id, since=since)
                else:
                    member.caught_up()
            elif isinstance(outcome, Refused) and node.up:
                member.abandon()
                self._schedule(self.now + RETRY_AFTER_S, "rejoin", node, payload=member)
        elif ticket in self._marking:
            marker = self._marking.pop(ticket)
            if isinstance(outcome, Ready):
                held = self.markers_acked.get((marker.user, marker.room), "")
                self.markers_acked[(marker.user, marker.room)] = max(held, marker.up_to)
        elif ticket in self._lookups:
            asked = self._lookups.pop(ticket)
            if isinstance(outcome, Rooms) and outcome.complete:
                self.looked_up[asked] = outcome.read_up_to
        elif ticket in self._sweeps:
            room = self._sweeps.pop(ticket)
            if not isinstance(outcome, Page):
                self.note(f"sweep of {room} refused: {outcome}")
            elif outcome.more and outcome.messages:
                self._sweep_page(node, room, outcome.messages[-1].id)

    # ---- running ----

    def run_until(self, deadline: float) -> None:
        while (event := self.next_event(deadline)) is not None:
            node = self.nodes[event.target]
            if not node.up or node.incarnation != event.incarnation:
                if event.kind == "retry":
                    self._retry(event.payload)
                continue  # an event of a crashed start
            if event.kind == "tick":
                self._schedule(self.now + TICK_INTERVAL_S, "tick", node)
            if node.paused and event.kind != "retry":
                if event.kind != "tick":
                    node.held.append((event.kind, "", event.payload))
                continue
            self._happen(node, event.kind, "", event.payload)

    def _happen(self, node: SimNode, kind: str, sender: str, payload: object) -> None:
        driver, membership = node.driver, node.membership
        if driver is None or membership is None:
            return
        if kind == "tick":
            self._membership_effects(node, membership.tick(self.now))
            driver.handle(Tick())
        elif kind == "deliver":
            assert isinstance(payload, tuple)
            origin, frame = payload
            self.witness(frame)
            message = decode_peer_frame(frame)
            if isinstance(message, Heartbeat | Leave):
                self._membership_effects(node, membership.handle_message(message, self.now))
            else:
                for each in unbundled(message):
                    driver.handle(PeerMessage(origin, each))
        elif kind in ("disk", "flush"):
            assert callable(payload)
            payload()  # a commit or read of the simulated disk completes, or a bundle goes
        elif kind == "retry":
            self._retry(payload)
        elif kind == "rejoin":
            assert isinstance(payload, Member)
            self._join(payload)

    def _retry(self, payload: object) -> None:
        assert isinstance(payload, SendRequest)
        self.submit(payload)

    def _feed(self, node: SimNode, event: Event) -> None:
        if node.driver is not None:
            node.driver.handle(event)

    def _membership_effects(self, node: SimNode, effects: list[MembershipEffect]) -> None:
        assert node.membership is not None and node.driver is not None
        changed = False
        for effect in effects:
            if isinstance(effect, SendTo):
                target = self._by_address.get(effect.address)
                if target is not None:
                    self._transmit(node.node_id, target, encode_peer_frame(effect.message))
            elif isinstance(effect, StateChanged):
                changed = True
        if changed:
            node.driver.handle(members_changed(node.membership.members(self.now)))

    def _stored_here(self, node: SimNode, message: RoomMessage) -> None:
        """A node stores a copy: when it is a write this node just coordinated, the room's
        state on this node's disk (all the engine had been told) must let its sender post."""
        fresh = message.time_ms >= int(self.now * 1000) + WALL_OFFSET_MS - 500
        held = node.store.rooms.get(message.room, {})
        own = message.id.endswith(f".{node.node_id}")
        if not (fresh and own) or message.kind in STATE_KINDS or message.id in held:
            return
        state = RoomState.fold(message.room, (e for e in held.values() if e.kind in STATE_KINDS))
        if (reason := state.refusal(message.sender, "post")) is not None:
            self.posted_without_right.append(f"{node.node_id} took {message.id}: {reason}")

    def _delivered(self, node: SimNode, message: RoomMessage) -> None:
        node.deliveries[(message.room, message.id)] += 1
        newest = node.newest_delivered.get(message.room, "")
        if message.id < newest:
            node.out_of_order.append((message.room, message.id))
        node.newest_delivered[message.room] = max(newest, message.id)
        by_coordinator = (message.room, message.id.rpartition(".")[2])
        newest = node.newest_by_coordinator.get(by_coordinator, "")
        if message.id < newest:
            node.out_of_order_within_coordinator.append((message.room, message.id))
        node.newest_by_coordinator[by_coordinator] = max(newest, message.id)
        for member in self.members:
            if member.node == node.node_id and member.room == message.room:
                member.live(message.id, message.key)

    def _transmit(self, sender: str, target: str, frame: bytes) -> None:
        node = self.nodes.get(target)
        if node is not None:
            # A frame in flight to a node that restarts meanwhile is lost with its start.
            self.transmit(sender, target, frame, node.incarnation)

    def _schedule(self, at: float, kind: str, node: SimNode, payload: object = None) -> None:
        """An event of the node's current start (dropped if it crashes first)."""
        self.schedule(at, kind, node.node_id, node.incarnation, payload)

    # ---- what must hold ----

    def live_nodes(self) -> list[SimNode]:
        return [node for node in self.nodes.values() if node.up and not node.paused]

    def problems(self) -> list[str]:
        """Once everything healed and a sweep ran: the promises of the rooms issue."""
        found: list[str] = []
        reference = next(iter(self.live_nodes())).engine
        assert reference is not None
        for node in self.nodes.values():
            repeats = [i for i, count in node.deliveries.items() if count > 1]
            if repeats:
                found.append(
                    f"{node.node_id} delivered {repeats[:3]} to its sessions more than once"
                )
            for owner, hints in node.store.hints.items():
                if hints and self.nodes[owner].up:
                    found.append(f"{node.node_id} still holds {len(hints)} hint(s) for {owner}")
            keys = Counter(m.key for room in node.store.rooms.values() for m in room.values())
            twice = [key for key, count in keys.items() if count > 1]
            if twice:
                found.append(f"{node.node_id} stores {twice[:3]} twice")
        for room in self.rooms:
            replicas = reference.preference_list(room)
            views = {r: self.nodes[r].store.ids(room) for r in replicas}
            first = views[replicas[0]]
            for replica, ids in views.items():
                if ids != first:
                    only_here = sorted(set(ids) - set(first))[:3]
                    only_there = sorted(set(first) - set(ids))[:3]
                    found.append(
                        f"{room}: {replica} differs from {replicas[0]}: +{only_here} -{only_there}"
                    )
                held = {m.key for m in self.nodes[replica].store.rooms.get(room, {}).values()}
                lost = [
                    key for key in self.acked if key[1].startswith(room + "/") and key not in held
                ]
                if lost:
                    found.append(f"{room}: acknowledged {lost[:3]} missing on replica {replica}")
        found += self._read_model_problems(reference)
        found += self._room_state_problems(reference)
        found += self._marker_problems()
        for member in self.members:
            wanted = {key for key in self.acked if key[1].startswith(member.room + "/")}
            missed = wanted - member.keys
            if missed:
                found.append(
                    f"{member.user} on {member.node} in {member.room} missed {sorted(missed)[:3]}"
                )
        return found

    def _read_model_problems(self, reference: RoomEngine) -> list[str]:
        """Every replica of a room holds the same read model, the one a rebuild from its
        log gives, and no disk keeps anything of a deleted message."""
        found: list[str] = []
        for room in self.rooms:
            snapshots: dict[str, bytes] = {}
            for replica in reference.preference_list(room):
                store = self.nodes[replica].store
                kept = store.views.get(room) or RoomView(room)
                events = sorted(store.rooms.get(room, {}).values(), key=lambda event: event.id)
                snapshots[replica] = kept.snapshot()
                if RoomView.rebuild(room, events).snapshot() != snapshots[replica]:
                    found.append(f"{room}: {replica}'s read model is not its log's")
            if len(set(snapshots.values())) > 1:
                found.append(f"{room}: the replicas' read models differ: {sorted(snapshots)}")
        for node in self.nodes.values():
            for room, view in node.store.views.items():
                deleted = {i for i in view.ids() if view.state(i).tombstone is not None}
                held = list(node.store.rooms.get(room, {}).values()) + [
                    hint for hints in node.store.hints.values() for hint, _ in hints.values()
                ]
                left = [
                    event.id
                    for event in held
                    if event.body and event.room == room and deleted & {event.id, event.target}
                ]
                if left:
                    found.append(f"{node.node_id}: deleted content left in {room}: {left[:3]}")
        return found

    def _room_state_problems(self, reference: RoomEngine) -> list[str]:
        """No coordinator took a write its state refused, and every replica of a room
        folds one state from its state events."""
        found = [f"posted without the right: {line}" for line in self.posted_without_right[:3]]
        for room in self.rooms:
            views = []
            for replica in reference.preference_list(room):
                held = self.nodes[replica].store.rooms.get(room, {}).values()
                state = RoomState.fold(room, (e for e in held if e.kind in STATE_KINDS))
                views.append(state.view())
            if any(view != views[0] for view in views):
                found.append(f"{room}: the replicas' room states differ")
        return found

    def _marker_problems(self) -> list[str]:
        """Every node that heard from all the user's nodes reads, of each room, a marker
        the user set (a refused one may have been kept), no older than the greatest one
        acknowledged."""
        found: list[str] = []
        for (node_id, user), markers in sorted(self.looked_up.items()):
            for (marked_user, room), up_to in self.markers_acked.items():
                read = markers.get(room)
                if marked_user != user:
                    continue
                if read is None or read < up_to or read not in self.markers_set[(user, room)]:
                    found.append(
                        f"{node_id} reads {user}'s marker of {room} as {read}, acknowledged {up_to}"
                    )
        return found

    def fail(self, reason: str) -> None:
        raise InvariantViolation(self.report(reason))

    def report(self, reason: str) -> str:
        lines = [f"seed {self.seed}: {reason}", "history:", *self.trace]
        return "\n".join(lines)


@dataclass
class _NodeShell:
    """One simulated node's wire, sessions and completions, for its driver."""

    world: SimulatedRooms
    node: SimNode

    def deliver_message(self, message: RoomMessage) -> None:
        self.world._delivered(self.node, message)

    def deliver_event(self, event: SessionEvent) -> None:
        self.node.events_delivered += 1

    def complete(self, ticket: int, outcome: Outcome) -> None:
        self.world._completed(self.node, ticket, outcome)
