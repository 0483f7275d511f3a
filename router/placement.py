"""Where rooms live: the ring of nodes, who is alive, and whether this node has joined.

Every role asks it the same questions (a room's replicas, its coordinator); the engine
alone changes it, when the membership view does.
"""

from collections.abc import Mapping
from types import MappingProxyType

from router.config import RouterConfig
from router.events import Health
from router.ring import HashRing

# How much longer than its own join settle a started peer is passed over: it starts
# settling when it first hears a peer, a heartbeat or so after that peer first hears it.
PEER_SETTLE_MARGIN_S = 0.5
# A view that says nothing of incarnations (a replay of the last one): no starts in it.
NO_INCARNATIONS: Mapping[str, int] = MappingProxyType({})


class Placement:
    def __init__(self, node_id: str, config: RouterConfig, *, alone: bool) -> None:
        """`alone`: no peers are expected (no seeds, none remembered), so the node has
        joined at once, a mesh of one."""
        self.node_id = node_id
        self._replicas = config.replicas
        self._settle_s = config.join_settle_s
        self.ring = HashRing([node_id], vnodes=config.vnodes)
        self.alive: set[str] = {node_id}
        self.reachable: set[str] = {node_id}  # alive or suspect
        self.joined = alone
        self._first_peer_at: float | None = None
        self.members: dict[str, Health] = {}  # the latest view, for the join to replay
        # A peer that has just started (a new incarnation, or a node new to the mesh)
        # serves rooms only after its own join settle: until then, by this node's clock,
        # it is passed over as coordinator. A peer back from a pause or a partition kept
        # its incarnation and its rooms, and coordinates again at once.
        self._alive_incarnation: dict[str, int] = {}
        self._settling_until: dict[str, float] = {}

    def preference_list(self, room: str) -> list[str]:
        return self.ring.preference_list(room, self._replicas)

    def live_replicas(self, room: str) -> list[str]:
        return [node for node in self.preference_list(room) if node in self.alive]

    def coordinator(self, room: str) -> str | None:
        live = self.live_replicas(room)
        if not live or not self.joined:
            return None
        settled = [node for node in live if node not in self._settling_until]
        return (settled or live)[0]

    def settle_due(self, now: float) -> bool:
        """Would settle() or peers_settled() change placement now?"""
        first = self._first_peer_at
        joins = not self.joined and first is not None and now - first >= self._settle_s
        return joins or any(now >= until for until in self._settling_until.values())

    def peers_settled(self, now: float) -> bool:
        """True when a started peer's settle has ended: it coordinates its rooms again."""
        ended = [node for node, until in self._settling_until.items() if now >= until]
        for node in ended:
            del self._settling_until[node]
        return bool(ended)

    def why_no_replica(self) -> str:
        if not self.joined:
            return "this node is still joining the mesh"
        return "no replica of the room is alive"

    def expect_peers(self, expected: bool) -> None:
        """Set once the shell knows whether the node has seeds or remembered peers."""
        self.joined = self.joined or not expected

    def update(
        self,
        members: Mapping[str, Health],
        now: float,
        incarnations: Mapping[str, int] = NO_INCARNATIONS,
    ) -> tuple[set[str], set[str]]:
        """Take a new view: every node not departed, its health and (where given) its
        incarnation. Returns the nodes no longer reachable, and those alive again (or for
        the first time)."""
        self._note_starts(members, now, incarnations)
        for node in self.ring.nodes - set(members) - {self.node_id}:
            self.ring.remove(node)
        for node in members:
            self.ring.add(node)
        alive = {node for node, health in members.items() if health == "alive"} | {self.node_id}
        reachable = {node for node, health in members.items() if health != "dead"}
        self.members = dict(members)
        if len(alive) > 1 and self._first_peer_at is None:
            # Joined once the first peer's gossip has had time to fill in the rest of
            # the mesh: placing rooms on a partial ring would write them to the wrong
            # nodes. settle() completes the join.
            self._first_peer_at = now
        gone = self.reachable - reachable - {self.node_id}
        returned = alive - self.alive
        self.alive, self.reachable = alive, reachable | {self.node_id}
        assert self.alive <= self.reachable and self.node_id in self.ring.nodes
        return gone, returned

    def _note_starts(
        self, members: Mapping[str, Health], now: float, incarnations: Mapping[str, int]
    ) -> None:
        for node, incarnation in incarnations.items():
            if node == self.node_id or members.get(node) != "alive":
                continue
            before = self._alive_incarnation.get(node)
            if before is not None and incarnation <= before:
                continue
            self._alive_incarnation[node] = incarnation
            if self.joined:  # while this node joins, every peer is new to it
                # With a margin: the peer starts its own settle when it first hears back.
                self._settling_until[node] = now + self._settle_s + PEER_SETTLE_MARGIN_S
        for node in set(self._settling_until) - set(members):
            del self._settling_until[node]  # departed
        for node in set(self._alive_incarnation) - set(members):
            del self._alive_incarnation[node]

    def settle(self, now: float) -> bool:
        """True once, when the join completes: rooms can be placed from then on."""
        first = self._first_peer_at
        if self.joined or first is None or now - first < self._settle_s:
            return False
        self.joined = True
        return True
