"""What membership believes, driven directly: only trusted ids, only possible incarnations,
and no node evicted or replaced on somebody else's word."""

import copy

from peers.membership import Anomaly, Membership, MemberState, StateChanged
from peers.records import MemberRecord
from peers.wire import Leave
from router.config import RouterConfig
from router.effects import Refusal, Store
from router.engine import RoomEngine
from router.events import PeerMessage
from router.records import MembershipChange, RoomMessage
from router.wire import IdPage, MembershipUpdate, Replicate
from tests.test_membership import CONFIG, changes, heartbeat, record, states

TRUSTED = frozenset({"n1", "n2", "n3"})
# Wall-clock ms at monotonic 0: incarnations near it are plausible.
WALL_MS = 1_800_000_000_000


def member(now: float = 0.0) -> Membership:
    return Membership(
        own=record("n1", WALL_MS),
        seeds=(),
        config=CONFIG,
        now=now,
        wall_offset_ms=WALL_MS,
        trusted=TRUSTED,
    )


def test_records_of_untrusted_ids_are_ignored_and_said_once() -> None:
    membership = member()
    before = copy.deepcopy(states(membership, 0.0))
    effects = membership.handle_message(heartbeat(record("n9", WALL_MS)), 0.1)
    assert states(membership, 0.1) == before  # nothing learned, not even the sender
    assert not changes(effects)
    membership.handle_message(heartbeat(record("n2", WALL_MS), record("n8", WALL_MS)), 0.2)
    again = membership.handle_message(heartbeat(record("n2", WALL_MS), record("n8", WALL_MS)), 0.3)
    assert set(states(membership, 0.3)) == {"n1", "n2"}
    assert not [e for e in again if isinstance(e, Anomaly)]  # logged the first time only
    assert membership.stats.untrusted_records == 3


def test_an_incarnation_beyond_the_clock_skew_is_refused() -> None:
    membership = member()
    far = WALL_MS + int(CONFIG.clock_skew_max_s * 1000) + 1
    effects = membership.handle_message(heartbeat(record("n2", far)), 0.0)
    assert "n2" not in states(membership, 0.0)
    assert any(isinstance(e, Anomaly) and "ahead of this node's clock" in e.reason for e in effects)
    membership.handle_message(heartbeat(record("n2", WALL_MS), record("n3", 2**63 - 1)), 0.1)
    assert set(states(membership, 0.1)) == {"n1", "n2"}
    assert membership.stats.future_incarnations == 2


def test_gossip_that_a_heard_node_left_is_ignored_until_it_falls_silent() -> None:
    membership = member()
    membership.handle_message(heartbeat(record("n2", WALL_MS)), 0.0)
    membership.handle_message(heartbeat(record("n3", WALL_MS)), 0.0)
    lie = record("n2", WALL_MS, left=True)
    membership.handle_message(heartbeat(record("n3", WALL_MS), lie), 1.0)
    assert states(membership, 1.0)["n2"] == ("alive", WALL_MS)
    assert membership.stats.hearsay_ignored == 1
    # n2 falls silent (it really left, and its own Leave was lost): now gossip is believed.
    membership.tick(CONFIG.suspect_after_s + 0.5)
    membership.handle_message(heartbeat(record("n3", WALL_MS), lie), CONFIG.suspect_after_s + 1)
    assert states(membership, CONFIG.suspect_after_s + 1)["n2"][0] == "left"


def test_a_leave_counts_only_from_the_node_that_leaves() -> None:
    membership = member()
    membership.handle_message(heartbeat(record("n2", WALL_MS)), 0.0)
    membership.handle_message(
        heartbeat(record("n3", WALL_MS), record("n2", WALL_MS, left=True)), 0.1
    )
    assert states(membership, 0.1)["n2"][0] == "alive"
    membership.handle_message(Leave(sender=record("n2", WALL_MS, left=True)), 0.2)
    assert states(membership, 0.2)["n2"][0] == "left"


def test_hearsay_about_a_node_heard_alive_is_not_believed() -> None:
    membership = member()
    membership.handle_message(heartbeat(record("n2", WALL_MS)), 0.0)
    elsewhere = MemberRecord("n2", "10.6.6.6:1", WALL_MS + 30_000)  # a newer start, elsewhere
    same_start = MemberRecord("n2", "10.6.6.6:1", WALL_MS)  # the same start, elsewhere
    membership.handle_message(heartbeat(record("n3", WALL_MS), elsewhere, same_start), 0.5)
    assert states(membership, 0.5)["n2"] == ("alive", WALL_MS)
    assert membership.members(0.5)[1].address == record("n2").address
    assert membership.stats.hearsay_ignored == 2


def test_a_start_only_gossip_claims_gives_way_to_the_node_itself() -> None:
    membership = member()
    claimed = record("n2", WALL_MS + 30_000)  # within the skew: not refused outright
    membership.handle_message(heartbeat(record("n3", WALL_MS), claimed), 0.0)
    assert states(membership, 0.0)["n2"] == ("alive", WALL_MS + 30_000)
    # Within a dead window the older start's heartbeats are stragglers of a real restart.
    membership.handle_message(heartbeat(record("n2", WALL_MS)), 1.0)
    assert states(membership, 1.0)["n2"][1] == WALL_MS + 30_000
    # The claimed start never spoke for a whole dead window, while the real one did.
    later = CONFIG.dead_after_s + 0.1
    effects = membership.handle_message(heartbeat(record("n2", WALL_MS)), later)
    assert states(membership, later)["n2"] == ("alive", WALL_MS)
    assert any(isinstance(e, StateChanged) and e.new_incarnation for e in effects)


def test_a_departure_gossip_claimed_is_undone_by_the_nodes_own_heartbeat() -> None:
    membership = member()
    membership.handle_message(heartbeat(record("n2", WALL_MS)), 0.0)
    membership.tick(CONFIG.suspect_after_s + 0.5)  # a hiccup: n2 is suspect
    lie = record("n2", WALL_MS, left=True)
    membership.handle_message(heartbeat(record("n3", WALL_MS), lie), CONFIG.suspect_after_s + 1)
    assert states(membership, CONFIG.suspect_after_s + 1)["n2"][0] == "left"
    back = CONFIG.suspect_after_s + 1.5
    membership.handle_message(heartbeat(record("n2", WALL_MS)), back)
    assert states(membership, back)["n2"] == ("alive", WALL_MS)
    # Its own Leave is final.
    membership.handle_message(Leave(sender=record("n2", WALL_MS, left=True)), back + 0.1)
    membership.handle_message(heartbeat(record("n2", WALL_MS)), back + 0.2)
    assert states(membership, back + 0.2)["n2"][0] == "left"


def test_a_node_no_longer_trusted_is_dropped_at_once() -> None:
    membership = member()
    membership.handle_message(heartbeat(record("n2", WALL_MS)), 0.0)
    membership.handle_message(heartbeat(record("n3", WALL_MS)), 0.0)
    effects = membership.set_trusted(frozenset({"n1", "n2"}), 1.0)
    assert changes(effects) == [("n3", MemberState.ALIVE, MemberState.LEFT)]
    assert set(states(membership, 1.0)) == {"n1", "n2"}
    membership.handle_message(heartbeat(record("n3", WALL_MS)), 1.1)
    assert "n3" not in states(membership, 1.1)


def engine(now_wall_ms: int) -> RoomEngine:
    return RoomEngine(
        "n1",
        RouterConfig(),
        epoch=1,
        wall_offset_ms=now_wall_ms,
        local_users=lambda room: [],
        alone=True,
    )


def copy_at(time_ms: int, node: str = "n2") -> RoomMessage:
    return RoomMessage(f"{time_ms:012x}0000.{node}", "lobby", "ann", "c1", time_ms, "hi")


def test_a_peer_message_carrying_a_far_future_time_changes_nothing() -> None:
    rooms = engine(WALL_MS)
    skew_ms = RouterConfig().clock_skew_max_ms
    far = copy_at(WALL_MS + skew_ms + 1)
    for message in (
        Replicate(1, far),  # a write to acknowledge
        Replicate(0, far),  # a repair
        IdPage("lobby", "b", "", [far.id]),
        MembershipUpdate(1, MembershipChange("ann", "lobby", True, WALL_MS + skew_ms + 1)),
    ):
        effects = rooms.handle(PeerMessage("n2", message), 0.0)
        assert isinstance(effects[0], Refusal)
        assert not [e for e in effects if isinstance(e, Store)]
    assert rooms.stats.future_ids_refused == 4
    # A copy within the skew is stored, and the next own id still follows the wall clock.
    near = copy_at(WALL_MS + skew_ms - 1)
    effects = rooms.handle(PeerMessage("n2", Replicate(2, near)), 0.0)
    assert any(isinstance(e, Store) for e in effects)


def test_a_far_future_id_on_disk_is_not_followed_at_start() -> None:
    rooms = engine(WALL_MS)
    skew_ms = RouterConfig().clock_skew_max_ms
    assert not rooms.observe_stored(copy_at(WALL_MS + skew_ms + 1).id, 0.0)
    assert rooms.observe_stored(copy_at(WALL_MS - 1).id, 0.0)
    assert rooms.stats.future_ids_refused == 1
