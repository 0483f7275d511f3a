"""A node's catch-up after it stood still, or after its room's coordinator or replicas
changed: it re-reads only from where it is known whole (less the catch-up margin), so a
room busier than the ids a node remembers is not handed to its sessions a second time,
and nothing acknowledged within the margin is missed."""

import itertools
from collections import Counter
from dataclasses import dataclass, field

import msgspec

from mesh.node.node import ROOM_TICK_INTERVAL_S
from router.config import RouterConfig
from router.effects import Complete, DeliverMessage, Effect, Load, Ready, SendPeer, Store
from router.engine import Health, RoomEngine
from router.events import (
    Loaded,
    MembersChanged,
    PeerMessage,
    SendMessage,
    StorageDone,
    Stored,
    Subscribe,
    Tick,
    Unsubscribe,
)
from router.interest import InterestTable
from router.message_ids import at_time
from router.records import RoomMessage
from router.wire import (
    LATE_MESSAGES_MAX,
    Interest,
    InterestAck,
    Posted,
    Push,
    ReadReply,
    ReadRequest,
    ReplicaAck,
    Replicate,
    RouterMessage,
)
from router.writes import SendRequest
from tests.sim.memory_store import MemoryStore

NODE = "n1"
# Wall-clock ms at the engine's time 0: ids then look like today's.
WALL_OFFSET_MS = 1_800_000_000_000
# Many more than one catch-up margin holds, so that a re-read of everything sent would
# show (with a small bound on remembered ids, as repeats).
MESSAGES = 4_600
REMEMBERED_IDS = 4_096
# Far fewer messages per catch-up margin than the node remembers.
SEND_INTERVAL_S = 0.01
# Ticks come this often while the node runs normally, as on a real node.
TICK_INTERVAL_S = ROOM_TICK_INTERVAL_S


@dataclass
class Mesh:
    """Node n1's room engine with its disk, and its peers played as replicas that hold
    one shared disk: they store every copy, register interest and answer reads at once.
    What else the engine asks for (client replies, hints, anti-entropy) is dropped."""

    engine: RoomEngine
    store: MemoryStore = field(default_factory=MemoryStore)
    peer_store: MemoryStore = field(default_factory=MemoryStore)
    peers_up: dict[str, InterestTable] = field(default_factory=dict)
    delivered: list[str] = field(default_factory=list)
    reads_from: list[str] = field(default_factory=list)  # each forward read's `after`
    ready: list[int] = field(default_factory=list)
    last_tick: float = 0.0
    # Read requests to peers waiting for the test to answer them (None: answered at once).
    held_reads: list[tuple[str, ReadRequest]] | None = None

    def carry(self, effects: list[Effect], now: float) -> None:
        pending = list(effects)
        while pending:
            effect = pending.pop(0)
            match effect:
                case Store(_, message, late_at_ms):
                    kept, duplicate = self.store.store(message, late_at_ms)
                    pending += self.engine.handle(StorageDone(effect, Stored(kept, duplicate)), now)
                case Load():
                    self.note_read(effect.after)
                    messages, more, late = read(self.store, effect)
                    pending += self.engine.handle(
                        StorageDone(effect, Loaded(messages, more, late)), now
                    )
                case DeliverMessage(message):
                    self.delivered.append(message.id)
                case Complete(ticket, Ready()):
                    self.ready.append(ticket)
                case SendPeer(node, message) if node in self.peers_up:
                    pending += self.answer(node, message, now)
                case _:
                    continue  # timers, warnings, pushes to peers that are down: no reply

    def answer(self, peer: str, message: object, now: float) -> list[Effect]:
        match message:
            case Replicate(write_id, copy):
                self.peer_store.store(copy)
                if write_id:
                    return self.peer_message(peer, ReplicaAck(write_id, copy.id), now)
            case Interest(request_id, rooms, withdrawn):
                table = self.peers_up[peer]
                table.withdraw(NODE, withdrawn)
                if rooms:
                    numbers = table.register(NODE, rooms, now)
                    return self.peer_message(peer, InterestAck(request_id, rooms, numbers), now)
            case ReadRequest() if self.held_reads is not None:
                self.held_reads.append((peer, message))
            case ReadRequest(read_id, room, before, after, limit, late_since_ms):
                self.note_read(after)
                load = Load(0, room, before, after, limit, late_since_ms)
                messages, more, late = read(self.peer_store, load)
                reply = ReadReply(read_id, messages, more, late=late)
                return self.peer_message(peer, reply, now)
        return []

    def peer_message(self, peer: str, message: RouterMessage, now: float) -> list[Effect]:
        return self.engine.handle(PeerMessage(peer, message), now)

    def note_read(self, after: str | None) -> None:
        if after is not None:
            self.reads_from.append(after)

    def tick(self, now: float) -> None:
        self.last_tick = now
        self.carry(self.engine.handle(Tick(), now), now)

    def run_until(self, now: float) -> None:
        """Time passes with the node running: ticks at their usual pace."""
        while self.last_tick + TICK_INTERVAL_S <= now:
            self.tick(self.last_tick + TICK_INTERVAL_S)

    def fill(
        self,
        room: str,
        start_s: float,
        first: int = 0,
        count: int = MESSAGES,
        interval_s: float = SEND_INTERVAL_S,
    ) -> float:
        """`count` sends, one every `interval_s`; the time of the last."""
        now = start_s
        for number in range(first, first + count):
            now = start_s + (number - first) * interval_s
            self.run_until(now)
            request = SendRequest(room, "ann", f"c{number}", f"m{number}")
            self.carry(self.engine.handle(SendMessage(number, request), now), now)
        return now

    def subscribe(self, room: str, now: float) -> None:
        self.carry(self.engine.handle(Subscribe(0, room), now), now)
        assert self.ready == [0], "the room is ready at once"

    def set_members(self, members: dict[str, Health], now: float) -> None:
        for peer, health in members.items():
            if peer == NODE:
                continue
            if health == "alive":
                self.peers_up.setdefault(peer, InterestTable(self.engine.config.interest_lapse_s))
            else:
                self.peers_up.pop(peer, None)
        self.carry(self.engine.handle(MembersChanged(members), now), now)

    def stand_still(self, seconds: float) -> None:
        self.tick(self.last_tick + seconds)

    def floor(self, since_s: float) -> str:
        """The earliest start a catch-up may take when this node is known whole since
        `since_s`: the catch-up margin before it."""
        since_ms = int(since_s * 1000) + WALL_OFFSET_MS
        return at_time(since_ms - self.engine.config.catch_up_margin_ms)

    def assert_each_once(self, room: str) -> None:
        repeats = {i: n for i, n in Counter(self.delivered).items() if n > 1}
        assert not repeats, f"{len(repeats)} ids delivered more than once, e.g. {min(repeats)}"
        everything = set(self.store.rooms[room]) | set(self.peer_store.rooms.get(room, {}))
        assert set(self.delivered) == everything, "every message delivered"


def read(store: MemoryStore, load: Load) -> tuple[list[RoomMessage], bool, list[RoomMessage]]:
    """A page, as a node's disk answers a Load (mesh/node/sqlite_disk.py)."""
    messages, more = store.history(load.room, load.before, load.after, load.limit)
    late: list[RoomMessage] = []
    if load.late_since_ms is not None and load.after is not None:
        late = store.late_arrivals(load.room, load.late_since_ms, load.after, LATE_MESSAGES_MAX)
    return messages, more, late


def mesh_of(config: RouterConfig, nodes: list[str]) -> Mesh:
    engine = RoomEngine(
        NODE,
        config,
        epoch=1,
        wall_offset_ms=WALL_OFFSET_MS,
        local_users=lambda room: [],
        alone=True,
    )
    mesh = Mesh(engine)
    mesh.set_members({node: "alive" for node in nodes}, 0.0)
    mesh.tick(0.0)
    return mesh


def room_placed(mesh: Mesh, first: list[str]) -> str:
    """A room whose preference list starts with `first`."""
    for number in range(1_000):
        room = f"room-{number}"
        if mesh.engine.preference_list(room)[: len(first)] == first:
            return room
    raise AssertionError(f"no room placed on {first} first")


def unseen_message(room: str, time_s: float) -> RoomMessage:
    """One another coordinator acknowledged and never pushed here."""
    time_ms = int(time_s * 1000) + WALL_OFFSET_MS
    return RoomMessage(
        id=f"{time_ms:012x}0000.n9",
        room=room,
        sender="bob",
        client_msg_id="b1",
        time_ms=time_ms,
        body="from another coordinator",
    )


def test_a_node_of_one_that_stood_still_rereads_only_the_margin() -> None:
    mesh = mesh_of(
        RouterConfig(replicas=1, write_quorum=1, delivered_ids_per_room_max=REMEMBERED_IDS), [NODE]
    )
    mesh.subscribe("lobby", 0.0)
    mesh.fill("lobby", 1.0)
    ran_until_s = mesh.last_tick
    mesh.reads_from.clear()
    mesh.stand_still(mesh.engine.config.stall_after_s + 0.5)
    assert mesh.reads_from, "the node caught up"
    assert min(mesh.reads_from) >= mesh.floor(ran_until_s), (
        f"the catch-up re-read from {min(mesh.reads_from)}, before the margin"
    )
    mesh.assert_each_once("lobby")


def test_a_catch_up_over_more_messages_than_any_fixed_window_repeats_none() -> None:
    """Ids delivered are kept as far back as a catch-up reads, not by count: a stall
    after a burst re-reads the whole burst (all within the margin) and hands on none
    of it again."""
    mesh = mesh_of(RouterConfig(replicas=1, write_quorum=1), [NODE])
    mesh.subscribe("lobby", 0.0)
    burst = 3 * REMEMBERED_IDS
    mesh.fill("lobby", 1.0, count=burst, interval_s=0.0005)
    mesh.reads_from.clear()
    mesh.stand_still(mesh.engine.config.stall_after_s + 0.5)
    assert mesh.reads_from and min(mesh.reads_from) < at_time(WALL_OFFSET_MS + 1000)
    mesh.assert_each_once("lobby")
    assert len(mesh.delivered) == burst


def test_what_lies_within_the_margin_unseen_is_still_caught_up() -> None:
    mesh = mesh_of(
        RouterConfig(replicas=1, write_quorum=1, delivered_ids_per_room_max=REMEMBERED_IDS), [NODE]
    )
    mesh.subscribe("lobby", 0.0)
    last_s = mesh.fill("lobby", 1.0)
    # On this disk yet never delivered: its id lies behind the newest delivered, within
    # the margin (a failed coordinator's ids can lie behind its successor's).
    unseen = unseen_message("lobby", last_s - mesh.engine.config.catch_up_margin_ms / 2000)
    mesh.store.store(unseen)
    mesh.stand_still(mesh.engine.config.stall_after_s + 0.5)
    assert unseen.id in mesh.delivered
    mesh.assert_each_once("lobby")


def test_stalls_again_and_again_deliver_each_message_once() -> None:
    mesh = mesh_of(
        RouterConfig(replicas=1, write_quorum=1, delivered_ids_per_room_max=REMEMBERED_IDS), [NODE]
    )
    mesh.subscribe("lobby", 0.0)
    for round_number in range(4):
        mesh.fill("lobby", mesh.last_tick + 0.01, first=round_number * MESSAGES)
        mesh.stand_still(mesh.engine.config.stall_after_s + 1.0)
    assert mesh.engine.stats.catch_ups >= 4
    mesh.assert_each_once("lobby")


def test_a_replica_that_died_is_caught_up_at_once_and_not_at_every_stall() -> None:
    config = RouterConfig(replicas=3, write_quorum=2, delivered_ids_per_room_max=REMEMBERED_IDS)
    mesh = mesh_of(config, [NODE, "n2", "n3"])
    room = room_placed(mesh, [NODE])
    mesh.subscribe(room, 0.0)
    last_s = mesh.fill(room, 1.0)
    # n3 coordinated a message for nodes that saw n1 down, and died before its push
    # came: it is on n2's and n3's disks only.
    unseen = unseen_message(room, last_s - 1.0)
    mesh.peer_store.store(unseen)
    mesh.reads_from.clear()
    mesh.set_members({NODE: "alive", "n2": "alive", "n3": "dead"}, mesh.last_tick)
    assert unseen.id in mesh.delivered, "the dead replica's pushes were caught up"
    # n3 was last known whole at its last renewal's acknowledgement.
    known_whole_s = mesh.last_tick - config.interest_refresh_s
    assert mesh.reads_from and min(mesh.reads_from) >= mesh.floor(known_whole_s)
    mesh.fill(room, mesh.last_tick + 0.01, first=MESSAGES)
    ran_until_s = mesh.last_tick
    mesh.reads_from.clear()
    mesh.stand_still(config.stall_after_s + 0.5)
    # The stall re-reads from where n1 and n2, the live replicas, were known whole; not
    # from n3's last renewal, a whole room's worth ago.
    assert mesh.reads_from and min(mesh.reads_from) >= mesh.floor(
        ran_until_s - config.interest_refresh_s
    )
    mesh.assert_each_once(room)


def test_a_coordinator_taking_a_room_back_from_this_node_rereads_only_the_margin() -> None:
    # Registrations outlive n2's absence, so its return needs no catch-up of its own.
    config = RouterConfig(
        replicas=3,
        write_quorum=2,
        interest_lapse_s=600.0,
        delivered_ids_per_room_max=REMEMBERED_IDS,
    )
    mesh = mesh_of(config, [NODE, "n2", "n3"])
    room = room_placed(mesh, ["n2", NODE])
    mesh.subscribe(room, 0.0)
    mesh.set_members({NODE: "alive", "n2": "suspect", "n3": "alive"}, 0.5)
    assert mesh.engine.coordinator(room) == NODE
    mesh.fill(room, 1.0)
    mesh.reads_from.clear()
    mesh.set_members({NODE: "alive", "n2": "alive", "n3": "alive"}, mesh.last_tick)
    assert mesh.engine.coordinator(room) == "n2"
    # What n1 coordinated it delivered itself: it is whole up to now.
    assert mesh.reads_from and min(mesh.reads_from) >= mesh.floor(mesh.last_tick)
    mesh.assert_each_once(room)


def test_pushes_piling_up_behind_a_slow_catch_up_come_once_and_in_order() -> None:
    """The catch-up's read waits while the coordinator pushes far more than the node
    holds back: the surplus is left to the catch-up, which reads on past it; every
    message reaches the sessions once, in id order."""
    config = RouterConfig(replicas=3, write_quorum=2, held_pushes_max=5)
    mesh = mesh_of(config, [NODE, "n2", "n3"])
    room = room_placed(mesh, ["n2", NODE])
    mesh.subscribe(room, 0.0)
    sequence = itertools.count()

    def pushed_by_n2(number: int, now: float) -> None:
        message = unseen_message(room, now)
        message = msgspec.structs.replace(
            message, id=f"{message.id[:12]}{number:04x}.n2", client_msg_id=f"b{number}"
        )
        mesh.peer_store.store(message)
        push = Push(epoch=1, seq=next(sequence), base=0, event=Posted(message))
        mesh.carry(mesh.peer_message("n2", push, now), now)

    for number in range(10):
        pushed_by_n2(number, 1.0 + number * 0.01)
    assert len(mesh.delivered) == 10
    mesh.held_reads = []
    mesh.stand_still(config.stall_after_s + 0.5)  # a catch-up starts; its read waits
    assert mesh.held_reads, "the catch-up asked a replica"
    for number in range(10, 40):
        pushed_by_n2(number, mesh.last_tick + 0.001 * number)
    assert len(mesh.delivered) == 10, "newer pushes wait for the catch-up"
    assert mesh.engine.stats.pushes_left_to_catch_up == 40 - 10 - config.held_pushes_max
    held, mesh.held_reads = mesh.held_reads, None  # from now on, replicas answer at once
    for peer, read in held:
        mesh.carry(mesh.answer(peer, read, mesh.last_tick), mesh.last_tick)
    mesh.tick(mesh.last_tick + config.retry_interval_s)
    assert mesh.delivered == sorted(mesh.delivered), "in id order"
    assert len(mesh.delivered) == len(set(mesh.delivered)) == 40


def test_a_catch_up_read_that_outlives_its_subscription_is_dropped() -> None:
    """The room is left and joined again while a catch-up's read is out: its answer,
    when it comes, belongs to the old subscription and changes nothing."""
    config = RouterConfig(replicas=3, write_quorum=2)
    mesh = mesh_of(config, [NODE, "n2", "n3"])
    room = room_placed(mesh, ["n2", NODE])
    mesh.subscribe(room, 0.0)
    mesh.held_reads = []
    mesh.stand_still(config.stall_after_s + 0.5)
    assert mesh.held_reads, "a catch-up asked the replicas"
    held, mesh.held_reads = mesh.held_reads, None
    mesh.carry(mesh.engine.handle(Unsubscribe(room), mesh.last_tick), mesh.last_tick)
    mesh.ready.clear()
    mesh.subscribe(room, mesh.last_tick)
    before = mesh.engine.statistics()
    for peer, read in held:
        mesh.carry(mesh.answer(peer, read, mesh.last_tick), mesh.last_tick)
    mesh.tick(mesh.last_tick + config.retry_interval_s)
    assert mesh.engine.statistics()["room_catch_ups"] == before["room_catch_ups"]
