"""The room engine on its own: real engines, driven only through `handle(event, now)`.

A small mesh of RoomEngines exchanges peer messages through queues the test holds, and
their storage effects wait, per node, until the test completes them on an in-memory disk
(tests/sim/simulated_disk.py) or fails them. Hypothesis chooses the interleaving: client
sends, deliveries, drops and duplicates, storage completions and failures, ticks, and
replicas going down and coming back (whose writes go to stand-ins as hints).

The plain tests at the end hand an engine stale or illegal events and check that nothing
changes: no effects, the same statistics, and the same behaviour afterwards as a twin
mesh that never saw the event.
"""

import itertools
import random
import sys
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
from hypothesis import event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
)

from router.config import RouterConfig
from router.digest import digest_of
from router.effects import (
    Acked,
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
    Refusal,
    SendPeer,
    Store,
    StoreHint,
    StoreMembership,
)
from router.engine import RoomEngine
from router.events import (
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
    RoomsListed,
    SendMessage,
    StorageDone,
    StorageEffect,
    StorageFailed,
    StorageResult,
    Stored,
    Subscribe,
    Tick,
)
from router.records import MembershipChange, RoomMessage
from router.wire import (
    ForwardReply,
    InterestAck,
    MembershipAck,
    MembershipReply,
    PushAck,
    ReadReply,
    ReplicaAck,
    Replicate,
    RouterMessage,
    WhoReply,
)
from router.writes import SendRequest
from tests.sim.memory_store import MemoryStore
from tests.sim.simulated_disk import SimulatedDisk

NODE_IDS = ("n1", "n2", "n3", "n4")
# Four nodes for three replicas: each room has a spare node to stand in for a replica
# that is down, so writes go to stand-ins as hints and are handed back later.
CONFIG = RouterConfig(replicas=3, write_quorum=2)
# Each sender writes to one room (a client message id names one send of one room). On
# the four-node ring these two rooms have different coordinators and different spares.
ROOM_OF_SENDER = {"ann": "news", "bob": "dev"}
# Few ids per sender, so that hypothesis soon retries a send, through another node too.
CLIENT_MSG_IDS = ("m1", "m2", "m3")
WALL_OFFSET_MS = 1_700_000_000_000
# Down at once, at most: W nodes stay up, so writes can still be acknowledged.
DOWN_MAX = 2
# Ticks advance the clock by up to this much: past the write timeout, so that writes
# and forwards also end by their deadlines, not only by their answers.
TICK_STEP_MAX_MS = 2_500
# A restart takes time: the new incarnation's ids start past its old ones (a node also
# reads its newest id from disk; the engine's door does not carry that).
RESTART_S = 0.5
# Settling: time long enough for the join, hint replay (after the owner's join settle)
# and several anti-entropy rounds over every room and replica, in ticks this size.
SETTLE_S = 40.0
SETTLE_TICK_S = 0.25
# Deliveries and completions within one settle round before the mesh must be quiet:
# far more than a handful of writes and their replies produce.
DRAIN_STEPS_MAX = 20_000
# Hypothesis picks in-flight messages and storage effects by an index into the queue.
QUEUE_INDEX_MAX = 63
# Bounds that keep the module well under a minute on a small shared machine (about ten
# seconds on two cores): each example runs up to this many steps, then a settle of
# SETTLE_S simulated seconds; fewer examples rarely reach a hint handed back.
MACHINE_EXAMPLES = 150
MACHINE_STEPS = 50


STORAGE_EFFECTS = (
    Store,
    StoreHint,
    Load,
    LoadMessages,
    LoadHints,
    DeleteHint,
    ExpireHints,
    ListRooms,
    LoadDigest,
    LoadIds,
    StoreMembership,
    LoadMemberships,
)


def no_local_users(room: str) -> list[str]:
    return []


@dataclass(frozen=True, slots=True)
class Flight:
    """A peer message on its way."""

    sender: str
    receiver: str
    message: RouterMessage


@dataclass(frozen=True, slots=True)
class Request:
    """A client's send: where it entered, and which incarnation of that node took it."""

    node: str
    incarnation: int
    request: SendRequest


@dataclass(slots=True)
class Node:
    node_id: str
    store: MemoryStore = field(default_factory=MemoryStore)
    engine: RoomEngine | None = None
    incarnation: int = 0
    health: Health = "alive"  # as the others see it
    pending: list[StorageEffect] = field(default_factory=list)

    @property
    def up(self) -> bool:
        return self.engine is not None


def body_of(sender: str, client_msg_id: str) -> str:
    return f"{sender} says {client_msg_id}"


def keys_held(store: MemoryStore) -> set[tuple[str, str]]:
    """Every send this disk holds, as a copy of its room or as a hint for another node."""
    keys = {m.key for messages in store.rooms.values() for m in messages.values()}
    keys |= {m.key for held in store.hints.values() for m, _ in held.values()}
    return keys


class EngineMesh:
    """Real engines whose peer messages and storage effects wait in queues held here."""

    def __init__(self) -> None:
        self.now = 0.0
        self.nodes = {node_id: Node(node_id) for node_id in NODE_IDS}
        self._disks = {node_id: self._disk_of(node) for node_id, node in self.nodes.items()}
        self.flights: list[Flight] = []
        self._tickets = itertools.count(1)
        self.requests: dict[int, Request] = {}
        self.outcomes: dict[int, Outcome] = {}
        self.refusals: list[Refusal] = []
        self.log: list[tuple[str, Effect]] = []  # every effect, by the node that made it
        self.twins_met = 0  # stores that met the same send under another id
        for node_id in NODE_IDS:
            self.start(node_id)
        self.now += CONFIG.join_settle_s
        self.tick()

    def _disk_of(self, node: Node) -> SimulatedDisk:
        return SimulatedDisk(
            node.store,
            schedule=lambda at, action: action(),  # at once: the test decides when
            clock=lambda: self.now,
            wall_ms=lambda: int(self.now * 1000) + WALL_OFFSET_MS,
            rng=random.Random(0),
        )

    def engine(self, node_id: str) -> RoomEngine:
        engine = self.nodes[node_id].engine
        assert engine is not None, f"{node_id} is down"
        return engine

    def up(self) -> list[str]:
        return [node_id for node_id, node in self.nodes.items() if node.up]

    def down(self) -> list[str]:
        return [node_id for node_id, node in self.nodes.items() if not node.up]

    def view(self) -> MembersChanged:
        return MembersChanged({node.node_id: node.health for node in self.nodes.values()})

    # ---- the world ----

    def start(self, node_id: str) -> None:
        node = self.nodes[node_id]
        assert not node.up, f"{node_id} is up"
        node.incarnation += 1
        node.health = "alive"
        node.engine = RoomEngine(
            node_id,
            CONFIG,
            epoch=node.incarnation,
            wall_offset_ms=WALL_OFFSET_MS,
            local_users=no_local_users,
        )
        for observer in self.up():
            self.handle(observer, self.view())

    def crash(self, node_id: str, health: Health) -> None:
        """The node stops: what it had not yet on disk is lost, its disk survives."""
        node = self.nodes[node_id]
        node.engine = None
        node.health = health
        node.pending.clear()
        self.flights = [flight for flight in self.flights if flight.receiver != node_id]
        for observer in self.up():
            self.handle(observer, self.view())

    def tick(self, step_s: float = 0.0) -> None:
        self.now += step_s
        for node_id in self.up():
            self.handle(node_id, Tick())

    # ---- events and effects ----

    def send(self, node_id: str, sender: str, client_msg_id: str) -> int:
        ticket = next(self._tickets)
        request = SendRequest(
            ROOM_OF_SENDER[sender], sender, client_msg_id, body_of(sender, client_msg_id)
        )
        self.requests[ticket] = Request(node_id, self.nodes[node_id].incarnation, request)
        self.handle(node_id, SendMessage(ticket, request))
        return ticket

    def subscribe(self, node_id: str, room: str) -> None:
        self.handle(node_id, Subscribe(next(self._tickets), room))

    def handle(self, node_id: str, event: Event) -> None:
        for effect in self.engine(node_id).handle(event, self.now):
            self.log.append((node_id, effect))
            self._apply(node_id, effect)

    def _apply(self, node_id: str, effect: Effect) -> None:
        """Messages go on the wire, storage waits for the test; deliveries to sessions and
        warnings stay in the log only (no session here shows them)."""
        if isinstance(effect, SendPeer):
            if self.nodes[effect.node].up:
                self.flights.append(Flight(node_id, effect.node, effect.message))
        elif isinstance(effect, Complete):
            self._completed(node_id, effect.ticket, effect.outcome)
        elif isinstance(effect, Refusal):
            self.refusals.append(effect)
        elif isinstance(effect, STORAGE_EFFECTS):
            self.nodes[node_id].pending.append(effect)

    def _completed(self, node_id: str, ticket: int, outcome: Outcome) -> None:
        assert ticket not in self.outcomes, f"ticket {ticket} completed twice"
        asked = self.requests.get(ticket)
        if asked is not None:  # a send (the plain tests also subscribe)
            assert asked.node == node_id, f"ticket {ticket} of {asked.node} ended on {node_id}"
            if isinstance(outcome, Acked):
                message, request = outcome.message, asked.request
                assert message.key == (request.sender, request.client_msg_id), outcome
                assert (message.room, message.body) == (request.room, request.body), outcome
        self.outcomes[ticket] = outcome

    def deliver(self, index: int) -> None:
        flight = self.flights.pop(index)
        if self.nodes[flight.receiver].up:
            self.handle(flight.receiver, PeerMessage(flight.sender, flight.message))

    def complete(self, node_id: str, index: int, *, failed: bool = False) -> None:
        effect = self.nodes[node_id].pending.pop(index)
        result: StorageResult = StorageFailed("the disk refused it")
        if not failed:
            results: list[StorageResult] = []
            self._disks[node_id].perform(effect, results.append)
            (result,) = results
            if isinstance(result, Stored) and isinstance(effect, Store | StoreHint):
                self.twins_met += result.kept.id != effect.message.id
        self.handle(node_id, StorageDone(effect, result))

    def drain(self) -> None:
        """Deliver every message and complete every storage effect, until none is left."""
        for _ in range(DRAIN_STEPS_MAX):
            if self.flights:
                self.deliver(0)
                continue
            busy = next((node for node in self.nodes.values() if node.pending), None)
            if busy is None:
                return
            self.complete(busy.node_id, 0)
        raise AssertionError(f"still busy after {DRAIN_STEPS_MAX} steps: {self.flights[:5]}")

    def settle(self) -> None:
        """Heal everything, then let time pass with every message and write carried out."""
        for node_id in self.down():
            self.now += RESTART_S
            self.start(node_id)
        for _ in range(int(SETTLE_S / SETTLE_TICK_S)):
            self.drain()
            self.tick(SETTLE_TICK_S)
        self.drain()

    # ---- what the disks hold ----

    def acked(self) -> dict[tuple[str, str], list[str]]:
        """Each acknowledged send, with every id it was acknowledged under."""
        acked: dict[tuple[str, str], list[str]] = {}
        for outcome in self.outcomes.values():
            if isinstance(outcome, Acked):
                acked.setdefault(outcome.message.key, []).append(outcome.message.id)
        return acked

    def holders(self, key: tuple[str, str]) -> list[str]:
        return [node_id for node_id, node in self.nodes.items() if key in keys_held(node.store)]


@settings(max_examples=MACHINE_EXAMPLES, stateful_step_count=MACHINE_STEPS, deadline=None)
class WritePathMachine(RuleBasedStateMachine):
    """Coordinators, replicas and stand-ins under any interleaving hypothesis finds."""

    def __init__(self) -> None:
        super().__init__()
        self.mesh = EngineMesh()

    @rule(
        gateway=st.integers(0, len(NODE_IDS) - 1),
        sender=st.sampled_from(sorted(ROOM_OF_SENDER)),
        client_msg_id=st.sampled_from(CLIENT_MSG_IDS),
    )
    def send(self, gateway: int, sender: str, client_msg_id: str) -> None:
        up = self.mesh.up()
        self.mesh.send(up[gateway % len(up)], sender, client_msg_id)

    @precondition(lambda self: self.mesh.flights)
    @rule(index=st.integers(0, QUEUE_INDEX_MAX))
    def deliver(self, index: int) -> None:
        self.mesh.deliver(index % len(self.mesh.flights))

    @precondition(lambda self: self.mesh.flights)
    @rule(index=st.integers(0, QUEUE_INDEX_MAX))
    def drop(self, index: int) -> None:
        self.mesh.flights.pop(index % len(self.mesh.flights))

    @precondition(lambda self: self.mesh.flights)
    @rule(index=st.integers(0, QUEUE_INDEX_MAX))
    def duplicate(self, index: int) -> None:
        flights = self.mesh.flights
        flights.append(flights[index % len(flights)])

    @precondition(lambda self: any(node.pending for node in self.mesh.nodes.values()))
    @rule(
        node=st.integers(0, len(NODE_IDS) - 1),
        index=st.integers(0, QUEUE_INDEX_MAX),
        failed=st.booleans(),
    )
    def complete_storage(self, node: int, index: int, failed: bool) -> None:
        busy = [node for node in self.mesh.nodes.values() if node.pending]
        chosen = busy[node % len(busy)]
        self.mesh.complete(chosen.node_id, index % len(chosen.pending), failed=failed)

    @rule()
    def carry_out_everything(self) -> None:
        """A calm spell: every message delivered and every storage effect done, in order
        (single steps alone rarely take a write all the way)."""
        self.mesh.drain()

    @rule(step_ms=st.integers(1, TICK_STEP_MAX_MS))
    def tick(self, step_ms: int) -> None:
        self.mesh.tick(step_ms / 1000)

    @precondition(lambda self: len(self.mesh.down()) < DOWN_MAX)
    @rule(node=st.integers(0, len(NODE_IDS) - 1), health=st.sampled_from(["suspect", "dead"]))
    def take_down(self, node: int, health: Health) -> None:
        up = self.mesh.up()
        self.mesh.crash(up[node % len(up)], health)

    @precondition(lambda self: self.mesh.down())
    @rule(node=st.integers(0, len(NODE_IDS) - 1))
    def bring_back(self, node: int) -> None:
        down = self.mesh.down()
        self.mesh.now += RESTART_S
        self.mesh.start(down[node % len(down)])

    @invariant()
    def acknowledged_sends_are_on_w_disks(self) -> None:
        for key in self.mesh.acked():
            holders = self.mesh.holders(key)
            assert len(holders) >= CONFIG.write_quorum, f"{key} acknowledged, held by {holders}"

    @invariant()
    def no_disk_holds_a_send_twice(self) -> None:
        for node in self.mesh.nodes.values():
            for room, messages in node.store.rooms.items():
                keys = [message.key for message in messages.values()]
                assert len(keys) == len(set(keys)), f"{node.node_id} {room}: {sorted(keys)}"

    @invariant()
    def no_peer_message_is_refused(self) -> None:
        # Every engine reads the same clock: nothing a peer sends is ahead of it.
        assert not self.mesh.refusals, self.mesh.refusals

    def teardown(self) -> None:
        if sys.exc_info()[1] is not None:
            return  # a step failed (or hypothesis ended the run): that is the story to tell
        self.mesh.settle()
        check_settled(self.mesh)
        describe_run(self.mesh)


def describe_run(mesh: EngineMesh) -> None:
    """What the run exercised, for `pytest --hypothesis-show-statistics`."""
    effects = [effect for _, effect in mesh.log]
    acked = mesh.acked()
    event(f"sends acknowledged: {min(len(acked), 3)}+")
    event(f"hints stored: {any(isinstance(e, StoreHint) for e in effects)}")
    event(f"hints handed back: {any(isinstance(e, DeleteHint) for e in effects)}")
    event(f"a send acknowledged under two ids: {any(len(set(i)) > 1 for i in acked.values())}")
    event(f"twins met on a disk: {bool(mesh.twins_met)}")
    refused = [o for o in mesh.outcomes.values() if not isinstance(o, Acked)]
    event(f"sends refused: {bool(refused)}")


def check_settled(mesh: EngineMesh) -> None:
    """After healing: every request answered, the replicas of each room the same, every
    acknowledged send in them, every hint handed back, no write left open."""
    for ticket, asked in mesh.requests.items():
        if mesh.nodes[asked.node].incarnation == asked.incarnation:
            assert ticket in mesh.outcomes, f"{asked} never answered"
    for node_id in NODE_IDS:
        assert mesh.nodes[node_id].store.hint_summary() == {}, f"{node_id} keeps hints"
        assert mesh.engine(node_id).statistics()["writes_in_flight"] == 0, node_id
    acked = mesh.acked()
    for room in sorted(set(ROOM_OF_SENDER.values())):
        replicas = mesh.engine(NODE_IDS[0]).preference_list(room)
        for node_id in NODE_IDS:
            assert mesh.engine(node_id).preference_list(room) == replicas, node_id
        copies = {node_id: mesh.nodes[node_id].store.rooms.get(room, {}) for node_id in NODE_IDS}
        held = {node_id: sorted(copies[node_id]) for node_id in replicas}
        assert len({tuple(ids) for ids in held.values()}) == 1, f"{room} diverged: {held}"
        for node_id in set(NODE_IDS) - set(replicas):
            assert not copies[node_id], f"{node_id} holds {room} but is no replica of it"
        kept = {message.key: message for message in copies[replicas[0]].values()}
        for message in kept.values():
            assert message.body == body_of(*message.key), message
        for key, ids in acked.items():
            if ROOM_OF_SENDER[key[0]] == room:
                assert key in kept, f"acknowledged {key} ({ids}) is not in {room}"
                # The smallest id of a send wins on every replica, so it never grows.
                assert kept[key].id <= min(ids), (kept[key], ids)


TestWritePathAndHints = WritePathMachine.TestCase


# ---- stale and illegal events change nothing ----

# A token, write, forward or request id no engine gave out (theirs start at epoch * 10**6).
UNKNOWN_ID = 987_654_321
# What follows a stale event in both twins: long enough for retries, deadlines, hint and
# anti-entropy rounds to show any difference the event left behind.
FOLLOW_UP_S = 12.0
FOLLOW_UP_TICK_S = 0.5
# A tick from before the last one (a shell's clock is monotonic: this is a broken one).
OLDER_TICK_S = 1.0


@dataclass(frozen=True, slots=True)
class Stale:
    """An event for one node's engine, at a time (the mesh's own, unless older)."""

    node: str
    event: Event
    at_s: float | None = None


StaleOf = Callable[[EngineMesh], Stale]


def stray_message(mesh: EngineMesh) -> RoomMessage:
    held = mesh.nodes["n1"].store.rooms.get(ROOM_OF_SENDER["ann"], {})
    return next(iter(held.values()))


def prepared_mesh() -> EngineMesh:
    """A joined mesh that has acknowledged one send, with a node subscribed to the room
    and a second send still in flight (its replications and stores not yet carried out)."""
    mesh = EngineMesh()
    mesh.subscribe("n3", ROOM_OF_SENDER["ann"])
    mesh.send("n2", "ann", "m1")
    mesh.drain()
    mesh.tick(FOLLOW_UP_TICK_S)
    mesh.drain()
    mesh.send("n3", "ann", "m2")
    while mesh.flights and not isinstance(mesh.flights[0].message, Replicate):
        mesh.deliver(0)
    return mesh


def follow_up(mesh: EngineMesh) -> None:
    mesh.send("n4", "ann", "m3")
    for _ in range(int(FOLLOW_UP_S / FOLLOW_UP_TICK_S)):
        mesh.drain()
        mesh.tick(FOLLOW_UP_TICK_S)
    mesh.drain()


def in_flight_write(mesh: EngineMesh) -> tuple[str, int]:
    """A write the mesh is carrying out: its coordinator and its id."""
    flight = next(f for f in mesh.flights if isinstance(f.message, Replicate))
    assert isinstance(flight.message, Replicate)
    return flight.sender, flight.message.write_id


def replica_ack_from_no_target(mesh: EngineMesh) -> Stale:
    coordinator, write_id = in_flight_write(mesh)
    replicas = mesh.engine(coordinator).preference_list(ROOM_OF_SENDER["ann"])
    outsider = next(node for node in NODE_IDS if node not in replicas)
    return Stale(coordinator, PeerMessage(outsider, ReplicaAck(write_id, stray_message(mesh).id)))


def storage_done_twice(mesh: EngineMesh) -> Stale:
    """The end of a real store, reported a second time."""
    node = next(n for n in mesh.nodes.values() if any(isinstance(e, Store) for e in n.pending))
    effect = next(e for e in node.pending if isinstance(e, Store))
    mesh.complete(node.node_id, node.pending.index(effect))
    return Stale(node.node_id, StorageDone(effect, Stored(effect.message, known=False)))


def unknown_storage(
    effect: Callable[[RoomMessage], StorageEffect], result: Callable[[RoomMessage], StorageResult]
) -> StaleOf:
    def stale(mesh: EngineMesh) -> Stale:
        message = stray_message(mesh)
        return Stale("n1", StorageDone(effect(message), result(message)))

    return stale


def from_peer(message: Callable[[RoomMessage], RouterMessage]) -> StaleOf:
    def stale(mesh: EngineMesh) -> Stale:
        return Stale("n1", PeerMessage("n2", message(stray_message(mesh))))

    return stale


def older_tick(node_id: str) -> StaleOf:
    def stale(mesh: EngineMesh) -> Stale:
        mesh.tick()  # what is due now (acks of pushes) goes: the older tick owes nothing
        return Stale(node_id, Tick(), mesh.now - OLDER_TICK_S)

    return stale


def _membership(message: RoomMessage) -> MembershipChange:
    return MembershipChange(message.sender, message.room, True, message.time_ms)


STALE_EVENTS: dict[str, StaleOf] = {
    "store of an unknown token": unknown_storage(
        lambda m: Store(UNKNOWN_ID, m), lambda m: Stored(m, known=False)
    ),
    "failed store of an unknown token": unknown_storage(
        lambda m: Store(UNKNOWN_ID, m), lambda m: StorageFailed("gone")
    ),
    "hint stored for an unknown token": unknown_storage(
        lambda m: StoreHint(UNKNOWN_ID, "n4", m), lambda m: Stored(m, known=False)
    ),
    "load of an unknown token": unknown_storage(
        lambda m: Load(UNKNOWN_ID, m.room, None, None, 10), lambda m: Loaded([m])
    ),
    "messages loaded for an unknown token": unknown_storage(
        lambda m: LoadMessages(UNKNOWN_ID, m.room, [m.id]), lambda m: Loaded([m])
    ),
    "hints loaded for an unknown token": unknown_storage(
        lambda m: LoadHints(UNKNOWN_ID, "n2", 10), lambda m: HintsLoaded([m])
    ),
    "hints expired for an unknown token": unknown_storage(
        lambda m: ExpireHints(UNKNOWN_ID, 0, 10, 10), lambda m: HintsExpired({})
    ),
    "hints dropped for an unknown token": unknown_storage(
        lambda m: ExpireHints(UNKNOWN_ID, 0, 10, 10), lambda m: HintsExpired({"n4": 2})
    ),
    "rooms listed for an unknown token": unknown_storage(
        lambda m: ListRooms(UNKNOWN_ID), lambda m: RoomsListed(["elsewhere"])
    ),
    "digest loaded for an unknown token": unknown_storage(
        lambda m: LoadDigest(UNKNOWN_ID, m.room), lambda m: DigestLoaded(digest_of([m.id]))
    ),
    "ids loaded for an unknown token": unknown_storage(
        lambda m: LoadIds(UNKNOWN_ID, m.room, "", "~", 10), lambda m: IdsLoaded([m.id], False)
    ),
    "membership stored for an unknown token": unknown_storage(
        lambda m: StoreMembership(UNKNOWN_ID, _membership(m)), lambda m: Done()
    ),
    "memberships loaded for an unknown token": unknown_storage(
        lambda m: LoadMemberships(UNKNOWN_ID, m.sender), lambda m: MembershipsLoaded([])
    ),
    "a store reported twice": storage_done_twice,
    "replica ack of an unknown write": from_peer(lambda m: ReplicaAck(UNKNOWN_ID, m.id)),
    "replica ack from a node the write did not ask": replica_ack_from_no_target,
    "forward reply to an unknown forward": from_peer(lambda m: ForwardReply(UNKNOWN_ID, m)),
    "read reply to an unknown read": from_peer(lambda m: ReadReply(UNKNOWN_ID, [m])),
    "interest ack of an unknown request": from_peer(
        lambda m: InterestAck(UNKNOWN_ID, [m.room], [1])
    ),
    "push ack from a node nothing was pushed to": from_peer(lambda m: PushAck(1, 5)),
    "who reply to an unknown request": from_peer(lambda m: WhoReply(UNKNOWN_ID, ["eve"])),
    "membership ack of an unknown update": from_peer(lambda m: MembershipAck(UNKNOWN_ID)),
    "memberships reply to an unknown query": from_peer(
        lambda m: MembershipReply(UNKNOWN_ID, [_membership(m)])
    ),
    "a tick older than the last, at a coordinator": older_tick("n1"),
    "a tick older than the last, at a subscribed node": older_tick("n3"),
}


def first_difference(left: list[tuple[str, Effect]], right: list[tuple[str, Effect]]) -> str:
    for index, (one, other) in enumerate(zip(left, right, strict=False)):
        if one != other:
            return f"effect {index}: {one} != {other}"
    return f"{len(left)} effects against {len(right)}"


@pytest.mark.parametrize("name", sorted(STALE_EVENTS))
def test_a_stale_or_illegal_event_changes_nothing(name: str) -> None:
    touched, twin = prepared_mesh(), prepared_mesh()
    stale, _ = STALE_EVENTS[name](touched), STALE_EVENTS[name](twin)
    engine = touched.engine(stale.node)
    before = engine.statistics()
    at_s = touched.now if stale.at_s is None else stale.at_s
    assert engine.handle(stale.event, at_s) == []
    assert engine.statistics() == before
    follow_up(touched)
    follow_up(twin)
    assert touched.log == twin.log, first_difference(touched.log, twin.log)


def test_an_acknowledged_state_event_counts_before_the_coordinators_own_copy_is_on_disk() -> None:
    # W=2 copies may be made by two other replicas while the coordinator's own disk is
    # slow: the room's owner, told "created", invites at once and must not be refused.
    mesh = EngineMesh()
    coordinator = mesh.engine("n1").coordinator("club")
    assert coordinator is not None
    gateway = next(node for node in NODE_IDS if node != coordinator)  # forwarded, as usual
    created = _submit(mesh, gateway, SendRequest("club", "ann", "c1", "invite", "create"))
    held = _drain_holding(mesh, coordinator, "c1")
    assert isinstance(mesh.outcomes.get(created), Acked), mesh.outcomes.get(created)
    assert held, "the coordinator's own copy was on disk first: nothing was tested"
    invite = SendRequest("club", "ann", "i1", "", "invite", subject="bob")
    invited = _submit(mesh, gateway, invite)
    _drain_holding(mesh, coordinator, "c1")
    assert isinstance(mesh.outcomes.get(invited), Acked), mesh.outcomes.get(invited)


def _submit(mesh: EngineMesh, node_id: str, request: SendRequest) -> int:
    ticket = next(mesh._tickets)
    mesh.requests[ticket] = Request(node_id, mesh.nodes[node_id].incarnation, request)
    mesh.handle(node_id, SendMessage(ticket, request))
    return ticket


def _drain_holding(mesh: EngineMesh, node_id: str, client_msg_id: str) -> bool:
    """Drain everything but `node_id`'s store of that send; whether one was held."""
    for _ in range(DRAIN_STEPS_MAX):
        if mesh.flights:
            mesh.deliver(0)
            continue
        for node in mesh.nodes.values():
            ready = [
                index
                for index, effect in enumerate(node.pending)
                if not (
                    node.node_id == node_id
                    and isinstance(effect, Store)
                    and effect.message.client_msg_id == client_msg_id
                )
            ]
            if ready:
                mesh.complete(node.node_id, ready[0])
                break
        else:
            return any(
                isinstance(effect, Store) and effect.message.client_msg_id == client_msg_id
                for effect in mesh.nodes[node_id].pending
            )
    raise AssertionError("still busy")


def test_a_coordinator_still_joining_is_passed_over_on_its_word_until_its_join_has_settled() -> (
    None
):
    # A restarted replica is alive in its peers' views before its join settles; it tells
    # them how long it still needs, and they send its rooms' writes to the next replica
    # at once (no client retry), then route to it again once that time is over.
    mesh, room = EngineMesh(), "lobby"
    restarted = _restart_coordinator_of(mesh, room)
    gateway = next(node for node in NODE_IDS if node != restarted)
    assert mesh.engine(gateway).coordinator(room) == restarted
    sent = _submit(mesh, gateway, SendRequest(room, "ann", "j1", "while it joins"))
    mesh.drain()  # no time passes: no retry timer could have carried it
    assert isinstance(mesh.outcomes.get(sent), Acked), mesh.outcomes.get(sent)
    assert mesh.engine(gateway).coordinator(room) != restarted
    mesh.tick(CONFIG.join_settle_s)
    mesh.drain()
    assert mesh.engine(gateway).coordinator(room) == restarted
    again = _submit(mesh, gateway, SendRequest(room, "ann", "j2", "once it has joined"))
    mesh.drain()
    assert isinstance(mesh.outcomes.get(again), Acked), mesh.outcomes.get(again)


def test_a_repeated_still_joining_reply_does_not_fail_the_send_sent_on_to_the_next() -> None:
    # The network doubles the joining node's refusal: the second copy comes after the
    # send went on to the next replica, and must not end the send while that one stores it.
    mesh, room = EngineMesh(), "lobby"
    restarted = _restart_coordinator_of(mesh, room)
    # A gateway holding no copy of the room forwards even to the next replica.
    replicas = mesh.engine("n1")._placement.preference_list(room)
    gateway = next(node for node in NODE_IDS if node not in replicas)
    sent = _submit(mesh, gateway, SendRequest(room, "ann", "d1", "refused twice"))
    for _ in range(DRAIN_STEPS_MAX):
        replies = [
            f for f in mesh.flights if f.sender == restarted and isinstance(f.message, ForwardReply)
        ]
        if replies:
            break
        if mesh.flights:
            mesh.deliver(0)
        else:
            busy = next(node for node in mesh.nodes.values() if node.pending)
            mesh.complete(busy.node_id, 0)
    (refusal,) = replies
    assert refusal.message.joining_for_s is not None, refusal  # type: ignore[union-attr]
    mesh.flights.append(Flight(refusal.sender, refusal.receiver, refusal.message))
    mesh.drain()
    assert isinstance(mesh.outcomes.get(sent), Acked), mesh.outcomes.get(sent)
    mesh.tick(CONFIG.join_settle_s)
    mesh.drain()
    assert mesh.engine(gateway).coordinator(room) == restarted


def _restart_coordinator_of(mesh: EngineMesh, room: str) -> str:
    """Crash the room's coordinator and start it again: alive to its peers, still joining."""
    restarted = mesh.engine("n1").coordinator(room)
    assert restarted is not None
    mesh.crash(restarted, "dead")
    mesh.tick(1.0)
    mesh.start(restarted)
    return restarted
