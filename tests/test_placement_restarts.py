"""Placement passes over a peer that has just started (it serves rooms only after its own
join settle) and not one back from a pause or a partition (it kept its rooms); once the
peer has settled, the engine registers this node's rooms with it again."""

from router.config import RouterConfig
from router.effects import Effect, SendPeer
from router.engine import RoomEngine
from router.events import Health, MembersChanged, Subscribe, Tick
from router.placement import PEER_SETTLE_MARGIN_S, Placement
from router.ring import HashRing
from router.wire import Interest

NODES = ("n1", "n2", "n3")
SETTLE_S = RouterConfig().join_settle_s
PASSED_OVER_S = SETTLE_S + PEER_SETTLE_MARGIN_S


def _joined_placement() -> tuple[Placement, str, str]:
    """n1's placement, joined with n2 and n3 alive; a room n2 coordinates, and its
    next live replica."""
    placement = Placement("n1", RouterConfig(), alone=False)
    alive = {"n2": "alive", "n3": "alive"}
    placement.update(alive, 0.0, {"n2": 1, "n3": 1})  # type: ignore[arg-type]
    assert placement.settle(SETTLE_S)
    room = next(f"room-{i}" for i in range(1000) if placement.coordinator(f"room-{i}") == "n2")
    return placement, room, placement.live_replicas(room)[1]


def test_a_restarted_peer_coordinates_again_only_after_its_join_settle() -> None:
    placement, room, next_replica = _joined_placement()
    now = 10.0
    placement.update({"n2": "dead", "n3": "alive"}, now, {"n2": 1, "n3": 1})
    placement.update({"n2": "alive", "n3": "alive"}, now + 1, {"n2": 2, "n3": 1})
    assert placement.coordinator(room) == next_replica
    assert not placement.peers_settled(now + 1 + PASSED_OVER_S / 2)
    assert placement.coordinator(room) == next_replica
    assert placement.settle_due(now + 1 + PASSED_OVER_S)
    assert placement.peers_settled(now + 1 + PASSED_OVER_S)  # the engine re-registers
    assert placement.coordinator(room) == "n2"
    assert not placement.peers_settled(now + 10)  # once


def test_a_peer_back_from_a_pause_coordinates_again_at_once() -> None:
    placement, room, _ = _joined_placement()
    placement.update({"n2": "dead", "n3": "alive"}, 10.0, {"n2": 1, "n3": 1})
    placement.update({"n2": "alive", "n3": "alive"}, 12.0, {"n2": 1, "n3": 1})
    assert placement.coordinator(room) == "n2"
    assert not placement.peers_settled(20.0)


def test_when_every_live_replica_is_settling_the_first_still_coordinates() -> None:
    placement = Placement("n1", RouterConfig(replicas=2), alone=False)
    placement.update({"n2": "alive", "n3": "alive"}, 0.0, {"n2": 1, "n3": 1})
    assert placement.settle(SETTLE_S)
    room = next(
        f"room-{i}"
        for i in range(1000)
        if set(placement.preference_list(f"room-{i}")) == {"n2", "n3"}
    )
    placement.update({"n2": "alive", "n3": "alive"}, 10.0, {"n2": 2, "n3": 2})
    assert placement.coordinator(room) == placement.live_replicas(room)[0]


def _interests(effects: list[Effect], node: str) -> list[str]:
    return [
        room
        for effect in effects
        if isinstance(effect, SendPeer)
        and effect.node == node
        and isinstance(effect.message, Interest)
        for room in effect.message.rooms
    ]


def test_the_engine_registers_again_with_a_restarted_coordinator_once_it_settles() -> None:
    config = RouterConfig()
    engine = RoomEngine("n1", config, epoch=1, wall_offset_ms=1_700_000_000_000, local_users=list)
    engine.expect_peers(True)
    alive: dict[str, Health] = {"n2": "alive", "n3": "alive"}
    engine.handle(MembersChanged(alive, {"n2": 1, "n3": 1}), 0.0)
    engine.handle(Tick(), SETTLE_S + 0.1)
    ring = HashRing(list(NODES), vnodes=config.vnodes)
    room = next(f"room-{i}" for i in range(1000) if ring.preference_list(f"room-{i}", 3)[0] == "n2")
    engine.handle(Subscribe(1, room), 2.0)
    engine.handle(MembersChanged({"n2": "dead", "n3": "alive"}, {"n2": 1, "n3": 1}), 3.0)
    engine.handle(MembersChanged(alive, {"n2": 2, "n3": 1}), 4.0)
    assert engine.coordinator(room) != "n2"  # passed over while it joins
    settled = engine.handle(Tick(), 4.0 + PASSED_OVER_S + 0.05)
    assert engine.coordinator(room) == "n2"
    assert room in _interests(settled, "n2"), "no registration with the returned coordinator"
