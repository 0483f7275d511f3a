"""Which nodes want a room's pushes: soft state held by each of the room's replicas.

A node registers with every live replica of each room it has sessions in and renews the
registration; one not renewed in time lapses, and a dead node's are dropped at once, so
no coordinator keeps pushing to a node that left.
"""

import itertools
from collections.abc import Iterable


class InterestTable:
    def __init__(self, lapse_s: float, first_number: int = 1) -> None:
        """`first_number` must exceed every number an earlier start of the node gave out,
        so that a registration made after a restart never looks like the old one."""
        self.lapse_s = lapse_s
        # room -> node -> (expires at, registration number)
        self._rooms: dict[str, dict[str, tuple[float, int]]] = {}
        self._numbers = itertools.count(first_number)

    def register(self, node: str, rooms: Iterable[str], now: float) -> list[int]:
        """Record or renew; returns each room's registration number, new when the
        registration is."""
        numbers = []
        expires = now + self.lapse_s
        for room in rooms:
            nodes = self._rooms.setdefault(room, {})
            held = nodes.get(node)
            number = next(self._numbers) if held is None else held[1]
            nodes[node] = (expires, number)
            numbers.append(number)
        return numbers

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
            for node in [node for node, (expires, _) in nodes.items() if expires <= now]:
                del nodes[node]
            if not nodes:
                del self._rooms[room]

    def nodes(self, room: str) -> list[str]:
        return sorted(self._rooms.get(room, ()))

    @property
    def registrations(self) -> int:
        return sum(len(nodes) for nodes in self._rooms.values())
