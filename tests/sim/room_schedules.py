"""Seeded runs of the whole-node simulator: a plan of sends and faults, then healing.

A plan is plain data, so a failing plan can be shrunk: faults are dropped one at a time
while the run still fails, leaving the shortest history that shows the problem.
"""

import random
from dataclasses import dataclass

from router.config import RouterConfig
from router.effects import (
    DeleteHint,
    ExpireHints,
    ListRooms,
    Load,
    LoadDigest,
    LoadHints,
    LoadIds,
    LoadMessages,
    Store,
    StoreHint,
)
from router.records import EventKind
from tests.sim.rooms_mesh import SimulatedRooms

SIZE = 5
ROOMS = 4
MEMBERS_PER_ROOM = 2
SENDS_PER_S = 15.0
FAULT_PHASE_S = 12.0
SETTLE_S = 8.0
# The share of writes that change a message already sent (edit, delete, react) or move
# a writer's read marker, when a run has room events.
ROOM_EVENTS_SHARE = 0.25
# Of the writes, this share change rooms' state (writer0 owns every room) or come from
# mallory, whom the owner bans and unbans: some are refused, some taken.
STATE_EVENTS_SHARE = 0.08
REACTION_KEYS = ("+1", "🎉")
# What a "disk" fault can make fail, by name (a plan stays plain, printable data).
STORAGE_EFFECTS: dict[str, type] = {
    kind.__name__: kind
    for kind in (
        Store,
        StoreHint,
        DeleteHint,
        ExpireHints,
        Load,
        LoadMessages,
        LoadHints,
        ListRooms,
        LoadDigest,
        LoadIds,
    )
}


@dataclass(frozen=True)
class Fault:
    at: float
    action: str  # crash, restart, pause, resume, partition, heal, loss
    nodes: tuple[str, ...] = ()
    loss: float = 0.0
    duplication: float = 0.0
    storage: str = ""  # for "disk": the kind of storage effect that fails
    count: int = 0  # for "disk": how many of them in a row; for "burst": sends at once
    factor: float = 1.0  # for "slow disk": how many times slower (1: back to normal)

    def __str__(self) -> str:
        detail = ",".join(self.nodes) or f"{self.loss:.2f}/{self.duplication:.2f}"
        failing = f" {self.count} {self.storage}" if self.storage else ""
        if self.action == "burst":
            return f"{self.at:6.2f}s burst of {self.count} sends"
        if self.action == "slow disk":
            return f"{self.at:6.2f}s slow disk {detail} x{self.factor:g}"
        return f"{self.at:6.2f}s {self.action} {detail}{failing}"


def random_plan(seed: int, menu: frozenset[str] = frozenset({"crash", "loss"})) -> list[Fault]:
    """Faults from the menu at random moments: "crash" (and restart), "wipe" (a crashed
    node restarts with an empty disk; once per run, so that no acknowledged message
    loses W disks), "pause" (and resume), "partition" (and heal), "loss" (and
    duplication), "disk" (the next storage effects of one kind fail on a node)."""
    rng = random.Random(seed * 7919 + 1)
    ids = [f"n{i}" for i in range(1, SIZE + 1)]
    plan: list[Fault] = []
    at = 0.0
    down: set[str] = set()
    paused: set[str] = set()
    wiped = False
    while True:
        at += rng.uniform(0.3, 2.0)
        if at >= FAULT_PHASE_S:
            return plan
        up = [i for i in ids if i not in down and i not in paused]
        choice = rng.random()
        if choice < 0.2 and len(up) > 3 and "crash" in menu:
            victim = rng.choice(up)
            down.add(victim)
            plan.append(Fault(at, "crash", (victim,)))
        elif choice < 0.35 and down:
            back = rng.choice(sorted(down))
            down.discard(back)
            empty = "wipe" in menu and not wiped and rng.random() < 0.3
            wiped = wiped or empty
            plan.append(Fault(at, "restart empty" if empty else "restart", (back,)))
        elif choice < 0.45 and len(up) > 3 and "pause" in menu:
            victim = rng.choice(up)
            paused.add(victim)
            plan.append(Fault(at, "pause", (victim,)))
        elif choice < 0.55 and paused:
            back = rng.choice(sorted(paused))
            paused.discard(back)
            plan.append(Fault(at, "resume", (back,)))
        elif choice < 0.7 and "partition" in menu:
            side = tuple(sorted(rng.sample(ids, rng.randint(1, 2))))
            plan.append(Fault(at, "partition", side))
        elif choice < 0.8 and "partition" in menu:
            plan.append(Fault(at, "heal"))
        elif choice < 0.85 and "disk" in menu and up:
            kind = rng.choice(sorted(STORAGE_EFFECTS))
            victim = rng.choice(up)
            plan.append(Fault(at, "disk", (victim,), storage=kind, count=rng.randint(1, 5)))
        elif "loss" in menu:
            loss = rng.choice([0.0, 0.05, 0.1, 0.2])
            plan.append(Fault(at, "loss", loss=loss, duplication=rng.choice([0.0, 0.05])))


def run(
    seed: int,
    plan: list[Fault],
    *,
    sweep: bool = True,
    config: RouterConfig | None = None,
    room_events: bool = True,
) -> SimulatedRooms:
    """Start, seat members, send while the plan's faults strike, heal everything, settle,
    sweep the rooms (unless told not to: then only anti-entropy evens replicas out); the
    returned simulation is ready for `problems()`. With `room_events`, a share of the
    writes edit, delete and react to messages sent before, or mark rooms read."""
    events_rng = random.Random(seed * 31 + 7)
    state_rng = random.Random(seed * 47 + 3)
    sim = SimulatedRooms(seed, size=SIZE, rooms=ROOMS, config=config)
    ids = list(sim.nodes)
    for node_id in ids:
        sim.start(node_id)
        sim.run_until(sim.now + sim.rng.uniform(0, 0.2))
    sim.run_until(sim.now + 3.0)
    for room in sim.rooms:
        for index in range(MEMBERS_PER_ROOM):
            sim.add_member(f"{room}-member{index}", room, sim.rng.choice(ids))
    sim.run_until(sim.now + 1.0)
    if room_events:
        for room in sim.rooms:
            sim.change_room("writer0", room, f"{room}/create", "create", value="open")
        sim.run_until(sim.now + 1.0)
    begin = sim.now
    pending = sorted(plan, key=lambda fault: fault.at)
    counter = 0
    while sim.now < begin + FAULT_PHASE_S:
        sim.run_until(sim.now + sim.rng.expovariate(SENDS_PER_S))
        while pending and pending[0].at <= sim.now - begin:
            _strike(sim, pending.pop(0))
        room = sim.rng.choice(sim.rooms)
        counter += 1
        writer = f"writer{counter % 3}"
        if room_events and state_rng.random() < STATE_EVENTS_SHARE:
            _state_event(sim, state_rng, room, f"{room}/{counter}")
        elif room_events and events_rng.random() < ROOM_EVENTS_SHARE:
            _room_event(sim, events_rng, writer, room, f"{room}/{counter}")
        else:
            sim.send(writer, room, f"{room}/{counter}")
    for fault in pending:
        _strike(sim, fault)
    for node in sim.nodes.values():
        if node.paused:
            sim.resume(node.node_id)
        if not node.up:
            sim.start(node.node_id)
    sim.heal()
    sim.set_loss(0.0)
    sim.run_until(sim.now + SETTLE_S)
    if sweep:
        sim.sweep(sim.live_nodes()[0].node_id)
    sim.run_until(sim.now + 2.0)
    for user in sorted({user for user, _ in sim.markers_acked}):
        sim.look_up_markers(user)
    sim.run_until(sim.now + 2.0)
    return sim


def _room_event(
    sim: SimulatedRooms, rng: random.Random, writer: str, room: str, client_msg_id: str
) -> None:
    """An edit or delete of one of the writer's messages, a reaction (or its removal)
    to anyone's, or the writer's read marker moved to a message of the room."""
    sent = sim.messages_acked.get(room, [])
    if not sent:
        sim.send(writer, room, client_msg_id)
        return
    own = [message_id for sender, message_id in sent if sender == writer]
    choice = rng.random()
    if choice < 0.35 and own:
        sim.relate(writer, room, client_msg_id, "edit", target=rng.choice(own))
    elif choice < 0.5 and own:
        sim.relate(writer, room, client_msg_id, "delete", target=rng.choice(own))
    elif choice < 0.9:
        kind: EventKind = "unreaction" if choice > 0.8 else "reaction"
        _, target = rng.choice(sent)
        key = rng.choice(REACTION_KEYS)
        sim.relate(writer, room, client_msg_id, kind, target=target, key=key)
    else:
        _, up_to = rng.choice(sent)
        sim.mark_read(writer, room, up_to)


def _state_event(sim: SimulatedRooms, rng: random.Random, room: str, client_msg_id: str) -> None:
    """The owner bans or unbans mallory, gives writer1 a role or sets the topic; or
    mallory, banned or not, posts."""
    choice = rng.random()
    if choice < 0.4:
        sim.send("mallory", room, client_msg_id)
    elif choice < 0.6:
        sim.change_room("writer0", room, client_msg_id, "ban", subject="mallory")
    elif choice < 0.8:
        sim.change_room("writer0", room, client_msg_id, "unban", subject="mallory")
    elif choice < 0.9:
        role = rng.choice(["moderator", "member"])
        sim.change_room("writer0", room, client_msg_id, "set_role", subject="writer1", value=role)
    else:
        sim.change_room("writer0", room, client_msg_id, "set_topic", value=f"topic {client_msg_id}")


def _strike(sim: SimulatedRooms, fault: Fault) -> None:
    nodes = fault.nodes
    match fault.action:
        case "crash" if sim.nodes[nodes[0]].up:
            sim.crash(nodes[0])
        case "restart" if not sim.nodes[nodes[0]].up:
            sim.start(nodes[0])
        case "restart empty" if not sim.nodes[nodes[0]].up:
            sim.wipe(nodes[0])
            sim.start(nodes[0])
        case "pause" if sim.nodes[nodes[0]].up:
            sim.pause(nodes[0])
        case "resume" if sim.nodes[nodes[0]].paused:
            sim.resume(nodes[0])
        case "partition":
            sim.partition(set(nodes), set(sim.nodes) - set(nodes))
        case "heal":
            sim.heal()
        case "loss":
            sim.set_loss(fault.loss, fault.duplication)
        case "disk" if (disk := sim.nodes[nodes[0]].disk) is not None:
            disk.fail_next(STORAGE_EFFECTS[fault.storage], fault.count)
        case "slow disk" if (disk := sim.nodes[nodes[0]].disk) is not None:
            disk.slowdown = fault.factor
        case "burst":
            # Far more at once than the mesh takes in the time: sends pile up in every
            # queue on the way (forwards, writes in flight, disks, pushes).
            for number in range(fault.count):
                room = sim.rng.choice(sim.rooms)
                sim.send(f"burster{number % 5}", room, f"{room}/burst{fault.at:g}-{number}")


def check(seed: int, plan: list[Fault], *, room_events: bool = True) -> list[str]:
    return run(seed, plan, room_events=room_events).problems()


def shortest_failing_plan(seed: int, plan: list[Fault], *, room_events: bool = True) -> list[Fault]:
    """Drop faults one at a time while the run still fails."""
    shortest = list(plan)
    index = 0
    while index < len(shortest):
        candidate = shortest[:index] + shortest[index + 1 :]
        if check(seed, candidate, room_events=room_events):
            shortest = candidate
        else:
            index += 1
    return shortest
