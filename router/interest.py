"""Which nodes want a room's pushes: soft state held by each of the room's replicas.

A node registers with every live replica of each room it has sessions in and renews the
registration; one not renewed in time lapses, and a dead node's are dropped at once, so
no coordinator keeps pushing to a node that left.
"""

from collections.abc import Iterable


class InterestTable:
    def __init__(self, lapse_s: float) -> None:
        self.lapse_s = lapse_s
        self._rooms: dict[str, dict[str, float]] = {}  # room -> node -> expires at

    def register(self, node: str, rooms: Iterable[str], now: float) -> list[str]:
        """Record or renew; returns the rooms the node was not registered for."""
        fresh = []
        expires = now + self.lapse_s
        for room in rooms:
            nodes = self._rooms.setdefault(room, {})
            if node not in nodes:
                fresh.append(room)
            nodes[node] = expires
        return fresh

    def withdraw(self, node: str, rooms: Iterable[str]) -> None:
        for room in rooms:
            nodes = self._rooms.get(room)
            if nodes is not None:
                nodes.pop(node, None)
                if not nodes:
                    del self._rooms[room]

    def drop_node(self, node: str) -> None:
        for room in [room for room, nodes in self._rooms.items() if node in nodes]:
            self.withdraw(node, [room])

    def expire(self, now: float) -> None:
        for room, nodes in list(self._rooms.items()):
            for node in [node for node, expires in nodes.items() if expires <= now]:
                del nodes[node]
            if not nodes:
                del self._rooms[room]

    def nodes(self, room: str) -> list[str]:
        return sorted(self._rooms.get(room, ()))

    @property
    def registrations(self) -> int:
        return sum(len(nodes) for nodes in self._rooms.values())
