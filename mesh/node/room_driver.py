"""The one shell around the room engine, for the node and the simulator alike.

It turns what happens into engine events (router/events.py) and carries out the effects
the engine returns against three small interfaces: a disk, a wire to the other nodes,
and this node's sessions; requests end at a fourth, the completions. The node plugs in
SQLite, ZeroMQ and its client sessions; the simulator an in-memory disk, a simulated
network and simulated clients. Every storage effect ends in exactly one StorageDone.
"""

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

from peers.membership import MemberState, MemberView
from router.effects import (
    Complete,
    DeliverEvent,
    DeliverMessage,
    Effect,
    Outcome,
    Refusal,
    SendPeer,
    Store,
    StoreHint,
    Warn,
)
from router.engine import RoomEngine
from router.events import (
    Event,
    Health,
    MembersChanged,
    StorageDone,
    StorageEffect,
    StorageFailed,
    StorageResult,
    Stored,
)
from router.records import RoomMessage
from router.wire import RouterMessage, SessionEvent

log = logging.getLogger(__name__)

# Peers whose first refused message is logged; members are bounded, so this is plenty.
REFUSALS_LOGGED_MAX = 256

# A member's state as the room engine weighs it; departed members are left out.
HEALTH: dict[MemberState, Health] = {
    MemberState.ALIVE: "alive",
    MemberState.SUSPECT: "suspect",
    MemberState.DEAD: "dead",
}


def members_changed(views: Iterable[MemberView]) -> MembersChanged:
    """The membership view as the room engine takes it: every member not departed."""
    return MembersChanged({view.id: HEALTH[view.state] for view in views if view.state in HEALTH})


class Disk(Protocol):
    def perform(self, effect: StorageEffect, done: Callable[[StorageResult], None]) -> None:
        """Carry out `effect`, then call `done` once: with its result, or StorageFailed."""
        ...


class Wire(Protocol):
    def send_to(self, node: str, message: RouterMessage) -> None: ...


class LocalSessions(Protocol):
    """Where the engine's deliveries go: this node's sessions."""

    def deliver_message(self, message: RoomMessage) -> None: ...

    def deliver_event(self, event: SessionEvent) -> None: ...


class Completions(Protocol):
    """Where the outcome of a request goes, by the ticket it was asked with."""

    def complete(self, ticket: int, outcome: Outcome) -> None: ...


@dataclass(slots=True)
class DriverStatistics:
    copies_stored: int = 0  # new copies on this disk (not a send held already)
    storage_failures: int = 0
    refusals: int = 0


class RoomDriver:
    def __init__(
        self,
        engine: RoomEngine,
        *,
        disk: Disk,
        wire: Wire,
        sessions: LocalSessions,
        completions: Completions,
        clock: Callable[[], float],
    ) -> None:
        """`clock` is the time the engine is given (monotonic seconds)."""
        self.engine = engine
        self.stats = DriverStatistics()
        self._disk = disk
        self._wire = wire
        self._sessions = sessions
        self._completions = completions
        self._clock = clock
        self._refusals_logged: set[str] = set()

    def handle(self, event: Event) -> None:
        self.apply(self.engine.handle(event, self._clock()))

    def apply(self, effects: list[Effect]) -> None:
        for effect in effects:
            match effect:
                case SendPeer(node, message):
                    self._wire.send_to(node, message)
                case DeliverMessage(message):
                    self._sessions.deliver_message(message)
                case DeliverEvent(event):
                    self._sessions.deliver_event(event)
                case Complete(ticket, outcome):
                    self._completions.complete(ticket, outcome)
                case Warn(text):
                    log.warning("rooms: %s", text)
                case Refusal(sender, reason):
                    self._refused(sender, reason)
                case _:
                    self._perform(effect)

    def _perform(self, effect: StorageEffect) -> None:
        ended = False

        def done(result: StorageResult) -> None:
            nonlocal ended
            assert not ended, f"{type(effect).__name__} ended twice"
            ended = True
            self._storage_done(effect, result)

        self._disk.perform(effect, done)

    def _storage_done(self, effect: StorageEffect, result: StorageResult) -> None:
        if isinstance(result, StorageFailed):
            self.stats.storage_failures += 1
            log.warning("rooms: %s failed: %s", describe(effect), result.reason)
        elif isinstance(effect, Store | StoreHint) and isinstance(result, Stored):
            if not result.known:
                self.stats.copies_stored += 1
            if log.isEnabledFor(logging.DEBUG):
                log.debug("copy stored", extra=trace(result.kept))
        self.handle(StorageDone(effect, result))

    def _refused(self, sender: str, reason: str) -> None:
        """The first refusal per peer is logged; the rest are only counted."""
        self.stats.refusals += 1
        if sender in self._refusals_logged or len(self._refusals_logged) >= REFUSALS_LOGGED_MAX:
            return
        self._refusals_logged.add(sender)
        log.warning("rooms: refused from %s: %s (further ones are only counted)", sender, reason)


def describe(effect: StorageEffect) -> str:
    """The effect as an operator reads it in a log line."""
    room = getattr(effect, "room", None)
    message = getattr(effect, "message", None)
    if message is not None:
        return f"{type(effect).__name__} of {message.id}"
    return f"{type(effect).__name__} of {room}" if room else type(effect).__name__


def trace(message: RoomMessage) -> dict[str, str]:
    return {"trace_id": message.id, "room": message.room, "sender": message.sender}
