"""The world both simulators share: a seeded clock and event queue, and a network that
delays, reorders, drops, duplicates and partitions what nodes send each other.

A simulator (tests/sim/membership_mesh.py, tests/sim/rooms_mesh.py) adds its nodes and
what they do with the events it takes from here. One seed decides every draw, in the
order the events happen, so a run replays exactly.
"""

import hashlib
import heapq
import itertools
import random
from dataclasses import dataclass, field


@dataclass(order=True)
class Event:
    at: float
    order: int
    kind: str = field(compare=False)
    target: str = field(compare=False)
    incarnation: int = field(compare=False, default=0)
    payload: object = field(compare=False, default=None)


class SimulatedWorld:
    def __init__(self, seed: int, *, delay_min_s: float, delay_max_s: float) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        self.now = 0.0
        self.loss = 0.0
        self.duplication = 0.0
        self.trace: list[str] = []
        self._delays = (delay_min_s, delay_max_s)
        # (at, order, event): tuples compare in C, which the busiest scenarios feel.
        self._queue: list[tuple[float, int, Event]] = []
        self._order = itertools.count()
        self._groups: dict[str, int] | None = None  # node id -> side of a partition
        self._digest = hashlib.sha256()

    # ---- faults of the network ----

    def partition(self, *sides: set[str]) -> None:
        self._groups = {node_id: index for index, side in enumerate(sides) for node_id in side}
        self.note("partition " + " | ".join(",".join(sorted(side)) for side in sides))

    def heal(self) -> None:
        self._groups = None
        self.note("heal")

    def set_loss(self, loss: float, duplication: float = 0.0) -> None:
        self.loss, self.duplication = loss, duplication
        self.note(f"loss {loss:.2f} duplication {duplication:.2f}")

    # ---- events ----

    def transmit(self, sender: str, target: str, frame: bytes, incarnation: int = 0) -> None:
        """Send a frame over the network: unless cut off or lost, it arrives (perhaps
        twice) as a "deliver" event with payload (sender, frame) after a random delay."""
        if self.cut(sender, target) or self.rng.random() < self.loss:
            return
        copies = 2 if self.rng.random() < self.duplication else 1
        for _ in range(copies):
            delay = self.rng.uniform(*self._delays)
            self.schedule(self.now + delay, "deliver", target, incarnation, (sender, frame))

    def cut(self, sender: str, target: str) -> bool:
        groups = self._groups
        return groups is not None and groups.get(sender, -1) != groups.get(target, -2)

    def schedule(
        self, at: float, kind: str, target: str, incarnation: int = 0, payload: object = None
    ) -> None:
        order = next(self._order)
        event = Event(at, order, kind, target, incarnation, payload)
        heapq.heappush(self._queue, (at, order, event))

    def next_event(self, deadline: float) -> Event | None:
        """The next event due by `deadline`, with the clock moved to it; None when none is
        (the clock then stands at `deadline`)."""
        if self._queue and self._queue[0][0] <= deadline:
            event = heapq.heappop(self._queue)[2]
            self.now = event.at
            return event
        self.now = deadline
        return None

    # ---- the story ----

    def note(self, line: str) -> None:
        self.trace.append(f"{self.now:8.3f} {line}")
        self._digest.update(line.encode())

    def witness(self, frame: bytes) -> None:
        """Count a delivered frame into the fingerprint."""
        self._digest.update(frame)

    def fingerprint(self) -> str:
        """A digest of everything that happened: equal for two runs of one seed."""
        return self._digest.hexdigest()
