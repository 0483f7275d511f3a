"""A deterministic simulator of many nodes' membership in one process.

One seed decides everything: network delays, losses, duplicates, and (in the random
schedules) which faults strike when. The clock is simulated, so a minute of mesh time
runs in well under a second, and a failing seed replays the same story exactly.

Nodes are the real `Membership` state machines; messages go through the real wire codec.
What the simulator adds is the world around them: a network that delays, reorders,
drops and duplicates, partitions that split it, and crashes, pauses, restarts and
clean departures of nodes.
"""

from dataclasses import dataclass, field

from peers.membership import Effect, Membership, MembershipConfig, MemberState, SendTo
from peers.records import MemberRecord
from peers.wire import decode_peer_message, encode_peer_message
from tests.sim.world import SimulatedWorld

TICK_INTERVAL_S = 0.1
DELAY_MIN_S = 0.001
DELAY_MAX_S = 0.030

CONFIG = MembershipConfig(heartbeat_interval_s=0.5, suspect_after_s=2.0, dead_after_s=5.0)


class InvariantViolation(AssertionError):
    """A simulated run broke a promise; the message tells the seed and the story."""


@dataclass
class SimNode:
    node_id: str
    address: str
    seeds: tuple[str, ...]
    incarnation: int = 0
    membership: Membership | None = None  # None: crashed or never started
    paused: bool = False
    left: bool = False
    held: list[tuple[str, bytes]] = field(default_factory=list)  # frames queued while paused
    remembered: tuple[str, ...] = ()  # peer addresses kept in the data dir across restarts

    @property
    def up(self) -> bool:
        return self.membership is not None and not self.left


class SimulatedMesh(SimulatedWorld):
    def __init__(self, seed: int, config: MembershipConfig = CONFIG) -> None:
        super().__init__(seed, delay_min_s=DELAY_MIN_S, delay_max_s=DELAY_MAX_S)
        self.config = config
        self.nodes: dict[str, SimNode] = {}
        self._by_address: dict[str, str] = {}
        self.delivered = 0

    # ---- the world ----

    def add_node(self, node_id: str, seeds: tuple[str, ...] = ()) -> SimNode:
        address = f"10.0.0.{len(self.nodes) + 1}:7200"
        node = SimNode(node_id, address, seeds)
        self.nodes[node_id] = node
        self._by_address[address] = node_id
        return node

    def address_of(self, node_id: str) -> str:
        return self.nodes[node_id].address

    def start(self, node_id: str) -> None:
        node = self.nodes[node_id]
        assert node.membership is None or node.left, f"{node_id} is running"
        node.incarnation += 1
        node.left = False
        node.paused = False
        node.held.clear()
        node.membership = Membership(
            own=MemberRecord(node_id, node.address, node.incarnation),
            seeds=tuple(dict.fromkeys(node.seeds + node.remembered)),
            remembered=frozenset(node.remembered) - frozenset(node.seeds),
            config=self.config,
            now=self.now,
        )
        self.note(f"start {node_id} incarnation {node.incarnation}")
        at = self.now + self.rng.uniform(0, TICK_INTERVAL_S)
        self.schedule(at, "tick", node_id, node.incarnation)

    def crash(self, node_id: str) -> None:
        node = self.nodes[node_id]
        if node.membership is not None:
            node.remembered = tuple(node.membership.peer_addresses(self.now))
        node.membership = None
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
        for sender, frame in held:  # what the kernel buffered arrives at once, stale
            self._deliver(node, sender, frame)

    def leave(self, node_id: str) -> None:
        node = self.nodes[node_id]
        assert node.membership is not None
        self.note(f"leave {node_id}")
        self._send_all(node_id, node.membership.leave(self.now))
        node.remembered = tuple(node.membership.peer_addresses(self.now))
        node.left = True

    # ---- running ----

    def run_until(self, deadline: float, check_every_step: bool = True) -> None:
        while (event := self.next_event(deadline)) is not None:
            node = self.nodes[event.target]
            if event.kind == "tick":
                if node.membership is None or node.incarnation != event.incarnation:
                    continue  # a tick of a crashed start
                self.schedule(self.now + TICK_INTERVAL_S, "tick", node.node_id, node.incarnation)
                if node.paused or node.left:
                    continue
                self._send_all(node.node_id, node.membership.tick(self.now))
            else:
                assert isinstance(event.payload, tuple)
                sender, frame = event.payload
                self._deliver(node, sender, frame)
            if check_every_step:
                self.check_safety(node)

    def _deliver(self, node: SimNode, sender: str, frame: bytes) -> None:
        if node.membership is None or node.left:
            return
        if node.paused:
            node.held.append((sender, frame))
            return
        self.delivered += 1
        self.witness(frame)
        message = decode_peer_message(frame)
        self._send_all(node.node_id, node.membership.handle_message(message, self.now))

    def _send_all(self, sender: str, effects: list[Effect]) -> None:
        for effect in effects:
            if not isinstance(effect, SendTo):
                continue
            target = self._by_address.get(effect.address)
            if target is not None:
                self.transmit(sender, target, encode_peer_message(effect.message))

    # ---- what must hold ----

    def views(self) -> dict[str, dict[str, tuple[MemberState, int]]]:
        return {
            node.node_id: {
                view.id: (view.state, view.incarnation)
                for view in node.membership.members(self.now)
            }
            for node in self.nodes.values()
            if node.up and node.membership is not None and not node.paused
        }

    def check_safety(self, node: SimNode) -> None:
        """What must hold after every step, whatever the faults, for the node that acted."""
        if not node.up or node.membership is None:
            return
        for record in node.membership.records():
            truth = self.nodes.get(record.id)
            if truth is None:
                self.fail(f"{node.node_id} lists {record.id}, which never existed")
            elif record.incarnation > truth.incarnation:
                self.fail(
                    f"{node.node_id} invented incarnation {record.incarnation} of {record.id}"
                )
        own = node.membership.own
        if own.incarnation != node.incarnation or own.left:
            self.fail(f"{node.node_id} holds a wrong record of itself: {own}")

    def settled_problems(self) -> list[str]:
        """Once faults have healed: every live node sees every live node alive, at its
        current incarnation; all live nodes hold the same records; the others are dead or
        left in every view (a Leave lost to a partition is detected as a death instead)."""
        problems = []
        views = self.views()
        tables = {
            observer: {i: inc for i, (_, inc) in view.items()} for observer, view in views.items()
        }
        reference = next(iter(tables.values()), {})
        for observer, view in views.items():
            if tables[observer] != reference:
                problems.append(
                    f"{observer} holds other records than its peers: {tables[observer]}"
                )
            for node in self.nodes.values():
                if node.incarnation == 0:
                    continue  # never started
                seen = view.get(node.node_id)
                if node.up and not node.paused:
                    expected = (MemberState.ALIVE, node.incarnation)
                    if seen != expected:
                        problems.append(f"{observer} sees {node.node_id} as {seen}, not {expected}")
                elif seen is not None and seen[0] not in (MemberState.DEAD, MemberState.LEFT):
                    gone = "left" if node.left else "crashed"
                    problems.append(f"{observer} sees {gone} {node.node_id} as {seen}")
        return problems

    def fail(self, reason: str) -> None:
        raise InvariantViolation(self.report(reason))

    def report(self, reason: str) -> str:
        lines = [f"seed {self.seed}: {reason}", "schedule:", *self.trace[-40:], "views:"]
        for observer, view in sorted(self.views().items()):
            row = ", ".join(f"{i}={s.value}/{inc}" for i, (s, inc) in sorted(view.items()))
            lines.append(f"  {observer}: {row}")
        lines.append(f"replay: SimulatedMesh(seed={self.seed}) with the same schedule")
        return "\n".join(lines)

    def wait_settled(self, timeout_s: float, step_s: float = 0.1) -> float:
        """Run until every view agrees with the truth; the simulated time that took."""
        started = self.now
        while self.now - started <= timeout_s:
            if not self.settled_problems():
                return self.now - started
            self.run_until(self.now + step_s)
        self.fail(
            f"not settled {timeout_s}s after faults healed: "
            + "; ".join(self.settled_problems()[:10])
        )
        raise AssertionError("unreachable")
