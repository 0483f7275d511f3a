"""The simulator's disk for the production room driver (mesh/node/room_driver.py).

Effects are carried out on a MemoryStore once their simulated commit or read time has
passed; a crash before then loses them, as on a real node. Faults are injected on demand:
the next effects of the kinds named fail, and reach the engine as StorageFailed through
the driver's own failure path.
"""

import random
from collections.abc import Callable
from dataclasses import dataclass, field

from mesh.node.storage import IdConflictError
from router.effects import (
    DeleteHint,
    ExpireHints,
    ListRooms,
    Load,
    LoadDigest,
    LoadHints,
    LoadIds,
    LoadMemberships,
    LoadMessages,
    Store,
    StoreHint,
    StoreMembership,
    StoreReadMarker,
)
from router.events import (
    DigestLoaded,
    Done,
    HintsExpired,
    HintsLoaded,
    IdsLoaded,
    Loaded,
    MembershipsLoaded,
    RoomsListed,
    StorageEffect,
    StorageFailed,
    StorageResult,
    Stored,
)
from router.records import RoomMessage
from router.wire import LATE_MESSAGES_MAX
from tests.sim.memory_store import MemoryStore

COMMIT_MIN_S = 0.0005
COMMIT_MAX_S = 0.005
READ_S = COMMIT_MIN_S
WRITES = (Store, StoreHint, DeleteHint, StoreMembership, StoreReadMarker)

# (when, what to do then): the simulator runs it at that time, unless the node crashed.
Schedule = Callable[[float, Callable[[], None]], None]


@dataclass
class SimulatedDisk:
    store: MemoryStore
    schedule: Schedule
    clock: Callable[[], float]
    wall_ms: Callable[[], int]
    rng: random.Random
    # Effect kinds whose next carrying out fails, with how many more times.
    faults: dict[type, int] = field(default_factory=dict)
    faults_injected: int = 0
    slowdown: float = 1.0  # a disk this many times slower than usual (an overloaded one)
    # Effects are carried out in the order they were asked for, one after another, as a
    # real disk's queue does: a slow disk builds a backlog rather than overtaking itself.
    _free_at: float = field(default=0.0, init=False)
    # Told of every copy the engine asks to store, as it asks (the simulator's checks).
    on_store: Callable[[RoomMessage], None] | None = None

    def perform(self, effect: StorageEffect, done: Callable[[StorageResult], None]) -> None:
        if self.on_store is not None and isinstance(effect, Store):
            self.on_store(effect.message)
        is_write = isinstance(effect, WRITES)
        delay_s = self.rng.uniform(COMMIT_MIN_S, COMMIT_MAX_S) if is_write else READ_S
        if self.slowdown == 1.0:
            at = self.clock() + delay_s
        else:
            at = self._free_at = max(self.clock(), self._free_at) + delay_s * self.slowdown
        self.schedule(at, lambda: done(self._carry_out(effect)))

    def fail_next(self, kind: type, count: int = 1) -> None:
        self.faults[kind] = self.faults.get(kind, 0) + count

    def _carry_out(self, effect: StorageEffect) -> StorageResult:
        left = self.faults.get(type(effect), 0)
        if left:
            self.faults[type(effect)] = left - 1
            self.faults_injected += 1
            return StorageFailed(f"injected fault in {type(effect).__name__}")
        return self._result(effect)

    def _result(self, effect: StorageEffect) -> StorageResult:
        store = self.store
        match effect:
            case Store(_, message, late_at_ms):
                try:
                    kept, known = store.store(message, late_at_ms)
                except IdConflictError as error:  # a broken peer reused an id
                    return StorageFailed(str(error))
                return Stored(kept, known)
            case StoreHint(_, owner, message):
                return Stored(message, store.store_hint(owner, message, self.wall_ms()))
            case DeleteHint(owner, message_id):
                store.delete_hint(owner, message_id)
                return Done()
            case ExpireHints(_, older_than_ms, count_max, bytes_max):
                return HintsExpired(store.expire_hints(older_than_ms, count_max, bytes_max))
            case Load(_, room, before, after, limit, late_since_ms, messages_only, state_only):
                messages, more = store.history(
                    room, before, after, limit, messages_only=messages_only, state_only=state_only
                )
                late = []
                if late_since_ms is not None and after is not None:
                    late = store.late_arrivals(room, late_since_ms, after, LATE_MESSAGES_MAX)
                relations = store.relations_for(room, messages) if messages_only else []
                return Loaded(messages, more, late, relations)
            case LoadMessages(_, room, ids):
                return Loaded(store.messages(room, ids))
            case LoadHints(_, owner, limit, after):
                return HintsLoaded(store.hints_for(owner, limit, after))
            case ListRooms():
                return RoomsListed(store.room_names())
            case LoadDigest(_, room):
                return DigestLoaded(store.digest(room))
            case LoadIds(_, room, after, before, limit):
                return IdsLoaded(*store.ids_between(room, after, before, limit))
            case StoreMembership() | StoreReadMarker() | LoadMemberships():
                return self._membership(effect)
        raise AssertionError(f"not a storage effect: {effect!r}")

    def _membership(
        self, effect: StoreMembership | StoreReadMarker | LoadMemberships
    ) -> StorageResult:
        store = self.store
        match effect:
            case StoreMembership(_, change):
                store.set_membership(
                    change.user, change.room, joined=change.joined, time_ms=change.time_ms
                )
                return Done()
            case StoreReadMarker(_, marker):
                store.set_read_marker(marker.user, marker.room, marker.up_to)
                return Done()
        return MembershipsLoaded(
            store.memberships_of(effect.user), store.read_markers_of(effect.user)
        )
