"""Where rooms live: the ring of nodes, who is alive, and whether this node has joined.

Every role asks it the same questions (a room's replicas, its coordinator); the engine
alone changes it, when the membership view does.
"""

from collections.abc import Mapping

from router.config import RouterConfig
from router.events import Health
from router.limits import JOINING_FOR_S_MAX
from router.ring import HashRing

# The shortest "still joining" a node tells its peers: they ask again after it.
JOINING_FOR_S_MIN = 0.001


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
        # Peers that said they are still joining, each until when (by this node's clock):
        # passed over as coordinator until then, on their own word, not on a guess.
        self._joining_until: dict[str, float] = {}

    def preference_list(self, room: str) -> list[str]:
        return self.ring.preference_list(room, self._replicas)

    def live_replicas(self, room: str) -> list[str]:
        return [node for node in self.preference_list(room) if node in self.alive]

    def coordinator(self, room: str) -> str | None:
        live = self.live_replicas(room)
        if not live or not self.joined:
            return None
        serving = [node for node in live if node not in self._joining_until]
        return (serving or live)[0]

    def joining_for_s(self, now: float) -> float:
        """How much longer this node's join settles, as it tells peers that ask too early."""
        first = self._first_peer_at
        left_s = self._settle_s if first is None else first + self._settle_s - now
        return max(JOINING_FOR_S_MIN, min(self._settle_s, JOINING_FOR_S_MAX, left_s))

    def pass_over(self, node: str, joining_for_s: float, now: float) -> bool:
        """`node` says it is joining for so long: pass it over as coordinator until then,
        for no longer than this node's own settle. True if placement changed."""
        if node == self.node_id or node not in self.alive:
            return False
        was = node in self._joining_until
        self._joining_until[node] = now + min(joining_for_s, self._settle_s)
        return not was

    def passed_over(self, node: str) -> bool:
        return node in self._joining_until

    def joined_peers_due(self, now: float) -> bool:
        return any(now >= until for until in self._joining_until.values())

    def peers_joined(self, now: float) -> None:
        """Peers whose join has had its time coordinate their rooms again."""
        for node in [n for n, until in self._joining_until.items() if now >= until]:
            del self._joining_until[node]

    def why_no_replica(self) -> str:
        if not self.joined:
            return "this node is still joining the mesh"
        return "no replica of the room is alive"

    def expect_peers(self, expected: bool) -> None:
        """Set once the shell knows whether the node has seeds or remembered peers."""
        self.joined = self.joined or not expected

    def update(self, members: Mapping[str, Health], now: float) -> tuple[set[str], set[str]]:
        """Take a new view: every node not departed, and its health. Returns the nodes
        no longer reachable, and those alive again (or for the first time)."""
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
        for node in set(self._joining_until) - alive:
            del self._joining_until[node]  # it coordinates nothing now anyway
        gone = self.reachable - reachable - {self.node_id}
        returned = alive - self.alive
        self.alive, self.reachable = alive, reachable | {self.node_id}
        assert self.alive <= self.reachable and self.node_id in self.ring.nodes
        return gone, returned

    def settle(self, now: float) -> bool:
        """True once, when the join completes: rooms can be placed from then on."""
        first = self._first_peer_at
        if self.joined or first is None or now - first < self._settle_s:
            return False
        self.joined = True
        return True
