"""Hinted handoff: hand the copies held for a replica that was down back to it.

While a room's replica is down, its coordinator writes the copy to a stand-in (the next
live node on the ring) with a hint naming the owner; the stand-in keeps it on disk, apart
from its own rooms. This replays those hints once the owner is alive again, in batches
paced by the configured rate (the next as soon as the last is acknowledged and the rate
allows), each deleted once the owner has acknowledged storing it.
Replay is idempotent: the owner's storage keeps one copy per message. Hints past their
bounds (age, count, bytes per owner) are dropped, counted and left to anti-entropy.
"""

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from router.config import RouterConfig
from router.effects import DeleteHint, Effect, ExpireHints, LoadHints, SendPeer, Warn
from router.limits import EXPIRE_INTERVAL_S, REPLAY_INTERVAL_S, REPLAY_TIMEOUT_S
from router.records import RoomMessage
from router.wire import Replicate


@dataclass(slots=True)
class _InFlight:
    owner: str
    message_id: str
    sent_at: float


@dataclass(slots=True)
class HandoffStatistics:
    hints_replayed: int = 0
    hints_dropped: int = 0


@dataclass(slots=True)
class HintedHandoff:
    node_id: str
    config: RouterConfig
    numbers: Iterator[int]
    alive: Callable[[], set[str]]
    wall_ms: Callable[[float], int]
    stats: HandoffStatistics = field(default_factory=HandoffStatistics)
    _loading: dict[int, tuple[str, int]] = field(default_factory=dict)  # token -> owner, limit
    _expiring: set[int] = field(default_factory=set)
    _in_flight: dict[int, _InFlight] = field(default_factory=dict)  # write id -> hint
    _next_look: dict[str, float] = field(default_factory=dict)  # owner -> when
    _next_expiry: float = 0.0
    # Hints this node may replay to each owner now: refilled at the replay rate, up to
    # one batch (per owner: owners that return together do not share it).
    _allowance: dict[str, float] = field(default_factory=dict)
    _refilled_at: float | None = None
    # Where each owner's replay goes on: batches page through its hints by id, so
    # that hints just sent (and their deletes, not yet on disk) are not loaded again;
    # a pass that reached the end starts over after REPLAY_INTERVAL_S.
    _cursor: dict[str, str] = field(default_factory=dict)
    # When each owner was first seen alive again: a node that has just started turns
    # away room messages from peers it has not heard yet, so its replay waits for it
    # to settle (the time a starting node takes to learn the mesh).
    _alive_since: dict[str, float] = field(default_factory=dict)

    def owns_write(self, write_id: int) -> bool:
        return write_id in self._in_flight

    def tick(self, now: float) -> list[Effect]:
        effects: list[Effect] = []
        if now >= self._next_expiry:
            self._next_expiry = now + EXPIRE_INTERVAL_S
            token = next(self.numbers)
            self._expiring.add(token)
            window_ms = int(self.config.hint_window_s * 1000)
            effects.append(
                ExpireHints(
                    token,
                    self.wall_ms(now) - window_ms,
                    self.config.hints_per_owner_max,
                    self.config.hint_bytes_per_owner_max,
                )
            )
        elapsed_s = REPLAY_INTERVAL_S if self._refilled_at is None else now - self._refilled_at
        self._refilled_at = now
        refill = max(0.0, elapsed_s) * self.config.hint_replay_per_s
        alive = self.alive() - {self.node_id}
        self._alive_since = {owner: self._alive_since.get(owner, now) for owner in alive}
        settle_s = self.config.join_settle_s
        settled = {o for o, since in self._alive_since.items() if now - since >= settle_s}
        batch = self._batch()
        # A returning owner starts with a whole batch; a batch goes once the budget holds
        # a whole one again, so that the pace is the rate, not the round trip.
        self._allowance = {
            owner: min(batch, self._allowance.get(owner, batch) + refill) for owner in alive
        }
        for write_id in [
            w for w, f in self._in_flight.items() if now - f.sent_at > REPLAY_TIMEOUT_S
        ]:
            del self._in_flight[write_id]
        busy = {flight.owner for flight in self._in_flight.values()}
        busy |= {owner for owner, _ in self._loading.values()}
        for owner in sorted(settled - busy):
            if self._allowance[owner] < batch or now < self._next_look.get(owner, 0.0):
                continue
            limit = batch
            self._allowance[owner] -= limit
            token = next(self.numbers)
            self._loading[token] = (owner, limit)
            effects.append(LoadHints(token, owner, limit, self._cursor.get(owner, "")))
        return effects

    def _batch(self) -> int:
        return max(1, int(self.config.hint_replay_per_s * REPLAY_INTERVAL_S))

    def hints_loaded(self, token: int, messages: list[RoomMessage], now: float) -> list[Effect]:
        loading = self._loading.pop(token, None)
        if loading is None:
            return []
        owner, limit = loading
        if len(messages) < limit:
            # The end of this pass: look again later, from the start (hints not yet
            # acknowledged, or kept again since, come round again).
            self._cursor.pop(owner, None)
            self._next_look[owner] = now + REPLAY_INTERVAL_S
        else:
            self._cursor[owner] = messages[-1].id
        if owner not in self.alive():
            return []
        # What was not sent goes back to the owner's budget.
        left = self._allowance.get(owner, 0.0) + limit - len(messages)
        self._allowance[owner] = min(self._batch(), left)
        effects: list[Effect] = []
        for message in messages:
            write_id = next(self.numbers)
            self._in_flight[write_id] = _InFlight(owner, message.id, now)
            effects.append(SendPeer(owner, Replicate(write_id, message, handed_off=True)))
        return effects

    def hints_failed(self, token: int, now: float) -> list[Effect]:
        """A batch could not be read: the owner's replay tries again later, from where it
        was, with its budget given back."""
        loading = self._loading.pop(token, None)
        if loading is None:
            return []
        owner, limit = loading
        self._next_look[owner] = now + REPLAY_INTERVAL_S
        self._allowance[owner] = min(self._batch(), self._allowance.get(owner, 0.0) + limit)
        assert owner not in {o for o, _ in self._loading.values()}, "two loads for one owner"
        return []

    def acknowledged(self, sender: str, write_id: int, kept_id: str) -> list[Effect]:
        flight = self._in_flight.pop(write_id, None)
        if flight is None or flight.owner != sender or not kept_id:
            return []
        self.stats.hints_replayed += 1
        return [DeleteHint(flight.owner, flight.message_id)]

    def hints_expired(self, token: int, dropped: dict[str, int]) -> list[Effect]:
        self._expiring.discard(token)
        effects: list[Effect] = []
        for owner, count in sorted(dropped.items()):
            if count:
                self.stats.hints_dropped += count
                reason = f"dropped {count} hint(s) for {owner} past their bounds"
                effects.append(Warn(f"{reason}; anti-entropy repairs what they held"))
        return effects
