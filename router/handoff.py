"""Hinted handoff: hand the copies held for a replica that was down back to it.

While a room's replica is down, its coordinator writes the copy to a stand-in (the next
live node on the ring) with a hint naming the owner; the stand-in keeps it on disk, apart
from its own rooms. This replays those hints once the owner is alive again: a batch per
interval (the configured rate), each deleted once the owner has acknowledged storing it.
Replay is idempotent: the owner's storage keeps one copy per message. Hints past their
bounds (age, count, bytes per owner) are dropped, counted and left to anti-entropy.
"""

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from router.config import RouterConfig
from router.effects import DeleteHint, Effect, ExpireHints, LoadHints, SendPeer, Warn
from router.records import RoomMessage
from router.wire import Replicate

# How often hints are looked for and replayed, and how often the bounds are applied.
REPLAY_INTERVAL_S = 0.5
EXPIRE_INTERVAL_S = 10.0
# A replayed hint not acknowledged by then is sent again in a later batch.
REPLAY_TIMEOUT_S = 5.0


@dataclass(slots=True)
class _InFlight:
    owner: str
    message_id: str
    sent_at: float


@dataclass(slots=True)
class HandoffStatistics:
    hints_stored: int = 0
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
    _loading: dict[int, str] = field(default_factory=dict)  # token -> owner
    _expiring: set[int] = field(default_factory=set)
    _in_flight: dict[int, _InFlight] = field(default_factory=dict)  # write id -> hint
    _next_replay: float = 0.0
    _next_expiry: float = 0.0

    def owns_token(self, token: int) -> bool:
        return token in self._loading or token in self._expiring

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
        if now < self._next_replay:
            return effects
        self._next_replay = now + REPLAY_INTERVAL_S
        for write_id in [
            w for w, f in self._in_flight.items() if now - f.sent_at > REPLAY_TIMEOUT_S
        ]:
            del self._in_flight[write_id]
        busy = {flight.owner for flight in self._in_flight.values()} | set(self._loading.values())
        batch = max(1, int(self.config.hint_replay_per_s * REPLAY_INTERVAL_S))
        for owner in sorted(self.alive() - {self.node_id} - busy):
            token = next(self.numbers)
            self._loading[token] = owner
            effects.append(LoadHints(token, owner, batch))
        return effects

    def hints_loaded(self, token: int, messages: list[RoomMessage], now: float) -> list[Effect]:
        owner = self._loading.pop(token, None)
        if owner is None or owner not in self.alive():
            return []
        effects: list[Effect] = []
        for message in messages:
            write_id = next(self.numbers)
            self._in_flight[write_id] = _InFlight(owner, message.id, now)
            effects.append(SendPeer(owner, Replicate(write_id, message, handed_off=True)))
        return effects

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
