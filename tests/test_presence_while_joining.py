"""Presence changes of a node that cannot place its rooms yet (it is still joining)
wait for a coordinator instead of vanishing; typing, news only now, does not wait."""

from router.config import RouterConfig
from router.effects import Effect, SendPeer
from router.engine import RoomEngine
from router.events import AnnounceEvent, MembersChanged, Tick
from router.limits import PRESENCE_HELD_MAX_MS
from router.ring import HashRing
from router.wire import Announce, PresenceChanged, RoomEvent, TypingNotice

CONFIG = RouterConfig()
NODES = ("n1", "n2", "n3")
RING = HashRing(list(NODES), vnodes=CONFIG.vnodes)
# A room that n1 does not coordinate, so that its events go out as Announce.
ROOM = next(
    room
    for room in (f"room{number}" for number in range(100))
    if RING.preference_list(room, CONFIG.replicas)[0] != "n1"
)
COORDINATOR = RING.preference_list(ROOM, CONFIG.replicas)[0]


def joining_engine() -> RoomEngine:
    """n1 has seeds and has just heard that its peers are alive: it has not joined."""
    engine = RoomEngine(
        "n1", CONFIG, epoch=1, wall_offset_ms=1_700_000_000_000, local_users=lambda room: []
    )
    engine.expect_peers(True)
    engine.handle(Tick(), 0.0)
    engine.handle(MembersChanged({node: "alive" for node in NODES if node != "n1"}), 0.0)
    return engine


def announced(effects: list[Effect]) -> list[tuple[str, RoomEvent]]:
    return [
        (effect.node, effect.message.event)
        for effect in effects
        if isinstance(effect, SendPeer) and isinstance(effect.message, Announce)
    ]


def test_presence_announced_while_joining_reaches_the_coordinator_once_joined() -> None:
    engine = joining_engine()
    joined = PresenceChanged(ROOM, "ann", "joined", "n1")
    typing = TypingNotice(ROOM, "ann", "n1")
    left = PresenceChanged(ROOM, "bob", "left", "n1")
    for event in (joined, typing, left):
        assert announced(engine.handle(AnnounceEvent(event), 0.5)) == []
    settled = engine.handle(Tick(), CONFIG.join_settle_s + 0.1)
    assert announced(settled) == [(COORDINATOR, joined), (COORDINATOR, left)]
    assert announced(engine.handle(Tick(), CONFIG.join_settle_s + 0.2)) == [], "sent once"


def test_presence_that_waited_too_long_for_a_coordinator_is_dropped() -> None:
    engine = joining_engine()
    joined = PresenceChanged(ROOM, "ann", "joined", "n1")
    assert announced(engine.handle(AnnounceEvent(joined), 0.0)) == []
    # The join completes only now: the change is stale news.
    late_s = max(CONFIG.join_settle_s, PRESENCE_HELD_MAX_MS / 1000) + 1.0
    engine.handle(MembersChanged({node: "alive" for node in NODES if node != "n1"}), late_s)
    assert announced(engine.handle(Tick(), late_s)) == []
