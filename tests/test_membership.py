"""The membership state machine, driven directly with messages and times."""

import copy

import pytest

from peers.limits import MEMBERS_MAX
from peers.membership import (
    Anomaly,
    Effect,
    Membership,
    MembershipConfig,
    MemberState,
    RememberedPeerForgotten,
    SeedUnanswered,
    SendTo,
    StateChanged,
)
from peers.records import MemberRecord
from peers.wire import Heartbeat, Leave

CONFIG = MembershipConfig(heartbeat_interval_s=1.0, suspect_after_s=3.0, dead_after_s=6.0)


def record(node_id: str, incarnation: int = 1, *, left: bool = False) -> MemberRecord:
    port = 7200 + int(node_id[1:])
    return MemberRecord(node_id, f"127.0.0.1:{port}", incarnation, left)


def node(node_id: str = "n1", seeds: tuple[str, ...] = (), now: float = 0.0) -> Membership:
    return Membership(own=record(node_id), seeds=seeds, config=CONFIG, now=now)


def heartbeat(sender: MemberRecord, *gossip: MemberRecord, suspects: bool = False) -> Heartbeat:
    return Heartbeat(sender=sender, sequence=1, gossip=list(gossip), suspects_you=suspects)


def sends(effects: list[Effect]) -> list[SendTo]:
    return [effect for effect in effects if isinstance(effect, SendTo)]


def changes(effects: list[Effect]) -> list[tuple[str, MemberState | None, MemberState]]:
    return [
        (effect.member_id, effect.before, effect.after)
        for effect in effects
        if isinstance(effect, StateChanged)
    ]


def states(membership: Membership, now: float) -> dict[str, tuple[str, int]]:
    return {view.id: (view.state.value, view.incarnation) for view in membership.members(now)}


def test_a_node_joins_through_one_seed_and_learns_the_mesh_by_gossip() -> None:
    joiner = node("n1", seeds=("127.0.0.1:7202",))
    first = sends(joiner.tick(0.0))
    assert [send.address for send in first] == ["127.0.0.1:7202"]

    effects = joiner.handle_message(heartbeat(record("n2"), record("n3"), record("n4")), 0.1)
    assert changes(effects) == [
        ("n2", None, MemberState.ALIVE),
        ("n3", None, MemberState.ALIVE),
        ("n4", None, MemberState.ALIVE),
    ]
    # The next round heartbeats every member, gossiping the whole table.
    round_two = sends(joiner.tick(1.0))
    assert sorted(send.address for send in round_two) == [
        "127.0.0.1:7202",
        "127.0.0.1:7203",
        "127.0.0.1:7204",
    ]
    assert {r.id for r in round_two[0].message.gossip} == {"n2", "n3", "n4"}  # type: ignore[union-attr]


def test_silence_takes_a_peer_alive_then_suspect_then_dead() -> None:
    membership = node()
    membership.handle_message(heartbeat(record("n2")), 0.0)
    assert changes(membership.tick(2.9)) == []
    assert changes(membership.tick(3.0)) == [("n2", MemberState.ALIVE, MemberState.SUSPECT)]
    assert changes(membership.tick(5.9)) == []
    assert changes(membership.tick(6.0)) == [("n2", MemberState.SUSPECT, MemberState.DEAD)]
    # Dead peers still get heartbeats, marked as suspected, so a paused peer is welcomed back.
    beats = sends(membership.tick(7.0))
    assert [(s.address, s.message.suspects_you) for s in beats] == [("127.0.0.1:7202", True)]  # type: ignore[union-attr]


def test_a_paused_peer_heard_again_is_alive_with_the_same_incarnation() -> None:
    membership = node()
    membership.handle_message(heartbeat(record("n2")), 0.0)
    membership.tick(10.0)
    assert states(membership, 10.0)["n2"] == ("dead", 1)
    effects = membership.handle_message(heartbeat(record("n2")), 10.5)
    assert changes(effects) == [("n2", MemberState.DEAD, MemberState.ALIVE)]
    assert states(membership, 10.5)["n2"] == ("alive", 1)


def test_a_new_member_is_answered_at_once_with_our_gossip() -> None:
    membership = node("n1")
    membership.handle_message(heartbeat(record("n3")), 0.0)
    effects = membership.handle_message(heartbeat(record("n2")), 0.1)
    (welcome,) = sends(effects)
    assert welcome.address == "127.0.0.1:7202"
    assert {r.id for r in welcome.message.gossip} == {"n2", "n3"}  # type: ignore[union-attr]
    # Known members are not answered out of turn.
    assert sends(membership.handle_message(heartbeat(record("n2")), 0.2)) == []


def test_a_suspected_node_refutes_at_once() -> None:
    membership = node("n1")
    membership.handle_message(heartbeat(record("n2")), 0.0)
    effects = membership.handle_message(heartbeat(record("n2"), suspects=True), 0.2)
    refutation = sends(effects)
    assert [send.address for send in refutation] == ["127.0.0.1:7202"]
    assert membership.stats.refutations_sent == 1


def test_a_restarted_node_replaces_its_old_self_and_appears_once() -> None:
    membership = node()
    membership.handle_message(heartbeat(record("n2", 1)), 0.0)
    membership.tick(7.0)
    effects = membership.handle_message(heartbeat(record("n2", 2)), 7.5)
    (change,) = [effect for effect in effects if isinstance(effect, StateChanged)]
    assert change.new_incarnation and change.before is MemberState.DEAD
    assert states(membership, 7.5) == {"n1": ("alive", 1), "n2": ("alive", 2)}


def test_a_message_from_an_old_incarnation_changes_nothing() -> None:
    membership = node()
    membership.handle_message(heartbeat(record("n2", 5)), 0.0)
    before = copy.deepcopy(membership.members(1.0))
    effects = membership.handle_message(heartbeat(record("n2", 4), record("n3")), 1.0)
    assert effects == []
    assert membership.members(1.0) == before
    assert membership.stats.stale_messages == 1


def test_gossip_of_an_old_incarnation_is_ignored() -> None:
    membership = node()
    membership.handle_message(heartbeat(record("n2", 5)), 0.0)
    membership.handle_message(heartbeat(record("n3"), record("n2", 4, left=True)), 0.5)
    assert states(membership, 0.5)["n2"] == ("alive", 5)


def test_gossip_about_ourselves_is_ignored() -> None:
    membership = node("n1")
    membership.handle_message(heartbeat(record("n2"), record("n1", 99, left=True)), 0.0)
    assert states(membership, 0.0)["n1"] == ("alive", 1)


def test_leave_marks_the_peer_left_at_once_and_stops_heartbeats_to_it() -> None:
    membership = node()
    membership.handle_message(heartbeat(record("n2")), 0.0)
    effects = membership.handle_message(Leave(sender=record("n2", left=True)), 0.1)
    assert changes(effects) == [("n2", MemberState.ALIVE, MemberState.LEFT)]
    assert sends(membership.tick(1.0)) == []
    # A left peer is not judged by silence any more.
    assert changes(membership.tick(100.0)) == []
    # Its next start is a new member again.
    membership.handle_message(heartbeat(record("n2", 2)), 101.0)
    assert states(membership, 101.0)["n2"] == ("alive", 2)


def test_leaving_announces_to_every_peer_and_then_stays_silent() -> None:
    membership = node()
    membership.handle_message(heartbeat(record("n2"), record("n3")), 0.0)
    effects = membership.leave(0.5)
    assert sorted(send.address for send in sends(effects)) == ["127.0.0.1:7202", "127.0.0.1:7203"]
    assert all(
        isinstance(send.message, Leave) and send.message.sender.left for send in sends(effects)
    )
    assert membership.tick(5.0) == []


def test_an_unanswered_seed_is_retried_with_doubling_delays() -> None:
    membership = node(seeds=("127.0.0.1:7209",))
    sent_at = []
    reported = []
    now = 0.0
    while now < 40.0:
        effects = membership.tick(now)
        if sends(effects):
            sent_at.append(now)
        reported += [effect for effect in effects if isinstance(effect, SeedUnanswered)]
        now = round(now + 0.5, 1)
    # 1, 2, 4 seconds, then capped at the dead window (6 s).
    assert sent_at[:6] == [0.0, 1.0, 3.0, 7.0, 13.0, 19.0]
    assert reported[0].attempts == 1 and reported[0].retry_in_s == 2.0
    # Once the seed answers, it is a member like any other and probing stops.
    membership.handle_message(heartbeat(record("n9")), 40.0)
    assert [s.address for s in sends(membership.tick(41.0))] == ["127.0.0.1:7209"]


WINDOW_CONFIG = MembershipConfig(
    heartbeat_interval_s=1.0, suspect_after_s=3.0, dead_after_s=6.0, remembered_peer_window_s=60.0
)


def test_a_remembered_peer_silent_for_the_window_is_forgotten_and_a_seed_never() -> None:
    seed, remembered = "127.0.0.1:7209", "127.0.0.1:7208"
    membership = Membership(
        own=record("n1"),
        seeds=(seed, remembered),
        config=WINDOW_CONFIG,
        now=0.0,
        remembered=frozenset({remembered}),
    )
    # Not heard yet, it keeps its place in the book until its window ends.
    assert membership.peer_addresses(0.0) == [remembered]
    effects: list[Effect] = []
    now = 0.0
    while now < 200.0:
        effects += membership.tick(now)
        now = round(now + 0.5, 1)
    probed = {send.address for send in sends(effects)}
    assert probed == {seed, remembered}
    unanswered = [e for e in effects if isinstance(e, SeedUnanswered)]
    # The configured seed warns once it keeps failing; the remembered peer never does.
    assert any(e.worth_a_warning for e in unanswered if e.address == seed)
    assert not any(e.worth_a_warning for e in unanswered if e.address == remembered)
    forgotten = [e for e in effects if isinstance(e, RememberedPeerForgotten)]
    assert [(e.address, e.silent_s) for e in forgotten] == [(remembered, 60.0)]
    assert membership.peer_addresses(200.0) == []  # no longer kept in the book
    later = sends(membership.tick(300.0)) + sends(membership.tick(400.0))
    assert {send.address for send in later} == {seed}


def test_a_remembered_peer_that_answers_is_kept() -> None:
    remembered = record("n8")
    membership = Membership(
        own=record("n1"),
        seeds=(remembered.address,),
        config=WINDOW_CONFIG,
        now=0.0,
        remembered=frozenset({remembered.address}),
    )
    membership.tick(0.0)
    membership.handle_message(heartbeat(remembered), 1.0)
    effects: list[Effect] = []
    for second in range(2, 200):
        effects += membership.tick(float(second))
        if second < 150:  # it stays in touch, then goes quiet for good
            membership.handle_message(heartbeat(remembered), float(second))
    assert not [e for e in effects if isinstance(e, RememberedPeerForgotten)]
    assert membership.peer_addresses(199.0) == [remembered.address]


def test_the_book_leaves_out_a_member_silent_for_the_window_even_if_gossip_names_it() -> None:
    membership = Membership(own=record("n1"), seeds=(), config=WINDOW_CONFIG, now=0.0)
    # n2 is alive and gossips n3, which no one has heard for a long time.
    for second in range(0, 100):
        membership.handle_message(heartbeat(record("n2"), record("n3")), float(second))
        membership.tick(float(second))
    assert states(membership, 99.0)["n3"][0] == "dead"
    assert membership.peer_addresses(99.0) == [record("n2").address]
    assert [r.id for r in membership.records_to_remember(30.0)] == ["n2", "n3"]


def test_a_full_table_rejects_new_members_and_says_so() -> None:
    membership = node()
    for index in range(2, MEMBERS_MAX + 5):
        membership.handle_message(heartbeat(MemberRecord(f"m{index}", f"10.0.0.1:{index}", 1)), 0.0)
    assert len(membership.members(0.0)) == MEMBERS_MAX
    assert membership.stats.members_rejected > 0


def test_another_process_claiming_our_id_is_reported() -> None:
    membership = node("n1")
    effects = membership.handle_message(heartbeat(MemberRecord("n1", "10.9.9.9:1", 3)), 0.0)
    assert [type(effect) for effect in effects] == [Anomaly]


@pytest.mark.parametrize(
    ("interval", "suspect", "dead"), [(0, 1, 2), (1, 1, 2), (1, 3, 3), (1, 4, 3)]
)
def test_nonsense_timing_is_refused(interval: float, suspect: float, dead: float) -> None:
    with pytest.raises(ValueError):
        MembershipConfig(heartbeat_interval_s=interval, suspect_after_s=suspect, dead_after_s=dead)
