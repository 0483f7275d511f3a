"""The room engine's parts on their own: merging replica pages, push streams, interest,
the bookkeeping of a write, the settings."""

import itertools
from random import Random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from router.channel import InboundStream, OutboundStream
from router.config import RouterConfig
from router.effects import Acked, DeleteHint, LoadHints, SendPeer
from router.handoff import HintedHandoff
from router.interest import InterestTable
from router.message_ids import ORIGIN, at_time, earlier_by, is_message_id
from router.reads import ReplicaPage, merge_pages
from router.records import MembershipChange, RoomMessage
from router.user_rooms import rooms_joined
from router.wire import Posted, Replicate
from router.writes import LocalOrigin, Write


def message(number: int, sender: str = "ann") -> RoomMessage:
    return RoomMessage(
        id=f"{number:012x}0000.n1",
        room="lobby",
        sender=sender,
        client_msg_id=f"c{number}",
        time_ms=number,
        body=f"m{number}",
    )


def page_from(held: list[int], *, after: int, limit: int) -> ReplicaPage:
    """What a replica holding `held` answers to "after `after`, `limit` messages"."""
    chosen = sorted(n for n in held if n > after)
    return ReplicaPage([message(n) for n in chosen[:limit]], len(chosen) > limit)


replica_sets = st.lists(st.sets(st.integers(1, 60)), min_size=1, max_size=3)


@given(replica_sets, st.integers(0, 60), st.integers(1, 20))
def test_a_merged_page_is_the_first_page_of_the_union(
    held: list[set[int]], after: int, limit: int
) -> None:
    pages = {f"r{i}": page_from(sorted(h), after=after, limit=limit) for i, h in enumerate(held)}
    merged = merge_pages(pages, forward=True, limit=limit)
    union = sorted({n for h in held for n in h if n > after})
    # Each replica answered only `limit` of its own, so the merge is a prefix of the union
    # whose every message is real and in order, never longer than the limit.
    ids = [m.id for m in merged.messages]
    assert ids == sorted(ids) and len(ids) <= limit
    assert ids == [message(n).id for n in union[: len(ids)]]
    if union:
        assert merged.messages, "something was there to read"


@given(replica_sets, st.integers(1, 20))
def test_read_repair_sends_a_replica_only_what_it_lacks(held: list[set[int]], limit: int) -> None:
    pages = {f"r{i}": page_from(sorted(h), after=0, limit=limit) for i, h in enumerate(held)}
    merged = merge_pages(pages, forward=True, limit=limit)
    for replica, missing in merged.repairs.items():
        index = int(replica[1:])
        assert all(m.time_ms not in held[index] for m in missing)
        assert all(m in merged.messages for m in missing)


def test_a_replica_that_answered_short_is_repaired_only_inside_its_range() -> None:
    full = page_from(list(range(1, 11)), after=0, limit=5)  # 1..5, more
    sparse = page_from([2, 9, 10], after=0, limit=2)  # 2, 9, more: covers up to 9
    merged = merge_pages({"a": full, "b": sparse}, forward=True, limit=5)
    assert [m.time_ms for m in merged.messages] == [1, 2, 3, 4, 5]
    assert [m.time_ms for m in merged.repairs["b"]] == [1, 3, 4, 5]
    assert "a" not in merged.repairs


def test_a_backward_page_keeps_the_newest() -> None:
    pages = {"a": ReplicaPage([message(n) for n in (3, 4, 5)], more=True)}
    merged = merge_pages(pages, forward=False, limit=2)
    assert [m.time_ms for m in merged.messages] == [4, 5] and merged.more


@given(st.lists(st.integers(0, 29), max_size=80))
def test_a_stream_hands_on_every_event_once_in_order_whatever_the_network_does(
    deliveries: list[int],
) -> None:
    """Pushes lost, repeated and reordered (the order is the list of indexes that
    arrive); retransmissions of what is unacknowledged fill the gaps."""
    outbound = OutboundStream(epoch=7)
    pushes = [outbound.push(Posted(message(n + 1)), now=0.0) for n in range(30)]
    inbound: InboundStream | None = None
    received: list[int] = []

    def arrive(index: int) -> None:
        nonlocal inbound
        push = pushes[index]
        if inbound is None:
            inbound = InboundStream.starting_at(push)
        for event in inbound.receive(push):
            assert isinstance(event, Posted)
            received.append(event.message.time_ms)
        outbound.acknowledge(inbound.epoch, inbound.through, 0.0)

    for index in deliveries:
        arrive(index)
    now = 1.0
    while outbound.unacked:  # retransmission until everything is acknowledged
        for push in outbound.due(now, retry_after_s=0.5, limit=256):
            arrive(push.seq - 1)
        now += 1.0
    assert received == list(range(1, 31))


def test_a_new_epoch_starts_at_the_senders_oldest_unacknowledged_push() -> None:
    old_stream = OutboundStream(epoch=1)
    inbound = InboundStream.starting_at(old_stream.push(Posted(message(1)), 0.0))
    assert inbound.next_seq == 1
    # The sender restarts (a new epoch) holding pushes 1 and 2 of its new stream.
    new_stream = OutboundStream(epoch=2)
    new_stream.push(Posted(message(5)), 0.0)
    second = new_stream.push(Posted(message(6)), 0.0)
    fresh = InboundStream.starting_at(second)
    assert (fresh.epoch, fresh.next_seq) == (2, 1)  # from the oldest it still holds
    assert fresh.receive(second) == []  # early: waits for push 1
    (retried,) = new_stream.due(1.0, retry_after_s=0.5, limit=1)
    events = fresh.receive(retried)
    assert [e.message.time_ms for e in events if isinstance(e, Posted)] == [5, 6]


def test_interest_registrations_are_numbered_renewed_and_lapse() -> None:
    table = InterestTable(lapse_s=7.0, first_number=1000)
    (first,) = table.register("n2", ["lobby"], now=0.0)
    (renewed,) = table.register("n2", ["lobby"], now=5.0)
    assert first == renewed == 1000
    assert table.nodes("lobby") == ["n2"]
    table.expire(now=11.0)
    assert table.nodes("lobby") == ["n2"]  # renewed at 5 s, good until 12 s
    table.expire(now=12.0)
    assert table.nodes("lobby") == []
    (again,) = table.register("n2", ["lobby"], now=13.0)
    assert again != first, "a registration made anew must look new"
    table.register("n3", ["lobby", "ops"], now=13.0)
    table.drop_node("n3")
    assert table.nodes("ops") == [] and table.nodes("lobby") == ["n2"]


def test_a_write_acknowledges_under_the_smallest_id_any_replica_kept() -> None:
    assigned = message(50)
    write = Write(1, assigned, ["n2", "n3"], wanted=2, deadline=2.0, origins=[], sent_at=0.0)
    write.record("n1", assigned.id)
    assert not write.quorum_reached
    write.record("n2", message(20).id)  # n2 held an older twin of the same send
    assert write.quorum_reached
    outcome = write.settle()
    assert isinstance(outcome, Acked)
    assert outcome.message.id == message(20).id and outcome.message.time_ms == 20
    assert outcome.duplicate and outcome.message.body == assigned.body
    assert write.waiting_on == ["n3"] and not write.finished
    assert write.attach(LocalOrigin(5)) and not write.attach(LocalOrigin(5))


def test_a_write_is_hopeless_once_too_many_disks_failed() -> None:
    write = Write(1, message(1), ["n2", "n3"], wanted=2, deadline=2.0, origins=[], sent_at=0.0)
    write.record("n1", None)
    assert not write.hopeless
    write.record("n2", None)
    assert write.hopeless


def test_settings_are_validated_and_resumes_overlap_every_write_quorum() -> None:
    assert RouterConfig().resume_quorum == 2
    assert RouterConfig(replicas=5, write_quorum=3).resume_quorum == 3
    assert RouterConfig(replicas=1, write_quorum=1).resume_quorum == 1
    for bad in (
        {"write_quorum": 4},
        {"read_quorum": 0},
        {"replicas": 0},
        {"write_timeout_s": 0},
        {"interest_refresh_s": 5.0},
    ):
        with pytest.raises(ValueError):
            RouterConfig(**bad)


def test_points_in_time_are_valid_ids_that_sort_before_that_millisecond() -> None:
    point = at_time(0x1234)
    assert is_message_id(point)
    assert point < message(0x1234).id and point > message(0x1233).id
    assert at_time(-5) == ORIGIN
    assert earlier_by(message(5000).id, 3000) == at_time(2000)
    assert earlier_by("not an id", 10) == "not an id"


def test_twins_merge_to_the_smaller_id_and_the_other_replica_is_repaired() -> None:
    older, newer = message(3), message(8)
    twin = RoomMessage(
        id=newer.id,
        room=older.room,
        sender=older.sender,
        client_msg_id=older.client_msg_id,
        time_ms=newer.time_ms,
        body=older.body,
    )
    pages = {"a": ReplicaPage([older], False), "b": ReplicaPage([twin], False)}
    merged = merge_pages(pages, forward=True, limit=10)
    assert [m.id for m in merged.messages] == [older.id]
    assert merged.repairs == {"b": [older]}


def test_late_arrivals_merge_once_per_send_and_leave_out_what_the_page_shows() -> None:
    shown, late, other_late = message(9), message(2), message(4, sender="bob")
    twin = RoomMessage(
        id=message(3).id,
        room=late.room,
        sender=late.sender,
        client_msg_id=late.client_msg_id,
        time_ms=late.time_ms,
        body=late.body,
    )
    pages = {
        "a": ReplicaPage([shown], False, late=[late, other_late]),
        "b": ReplicaPage([shown], False, late=[twin, shown]),
        "c": ReplicaPage([], False),
    }
    merged = merge_pages(pages, forward=True, limit=10)
    assert [m.id for m in merged.messages] == [shown.id]
    # The twin shows under its smaller id; what the page holds is not repeated.
    assert [m.id for m in merged.late] == [late.id, other_late.id]


changes = st.builds(
    MembershipChange,
    user=st.just("ann"),
    room=st.sampled_from(["a", "b", "c"]),
    joined=st.booleans(),
    time_ms=st.integers(0, 5),
)


@given(st.lists(changes, max_size=12), st.randoms())
def test_a_users_rooms_are_the_latest_changes_whatever_order_they_merge_in(
    seen: list[MembershipChange], rng: Random
) -> None:
    shuffled = list(seen)
    rng.shuffle(shuffled)
    assert rooms_joined(shuffled) == rooms_joined(seen)
    for room in rooms_joined(seen):
        last = max(c.order for c in seen if c.room == room)
        assert last[1], "a room is listed only when its latest change is a join"


def test_hints_replay_after_the_owner_settled_at_the_configured_rate_and_lost_ones_again() -> None:
    config = RouterConfig(hint_replay_per_s=200.0)
    held = {m.id: m for m in (message(n) for n in range(1, 601))}
    handoff = HintedHandoff("n1", config, itertools.count(1), lambda: {"n1", "n3"}, int)
    in_flight: list[tuple[float, int]] = []  # (acknowledged at, write id)
    replayed_at: list[float] = []
    first_sent: float | None = None
    now = 0.0
    while held and now < 30.0:
        for effect in handoff.tick(now):
            if not isinstance(effect, LoadHints):
                continue
            page = sorted(i for i in held if i > effect.after)[: effect.limit]
            for sent in handoff.hints_loaded(effect.token, [held[i] for i in page], now):
                assert isinstance(sent, SendPeer) and isinstance(sent.message, Replicate)
                first_sent = now if first_sent is None else first_sent
                if first_sent == now:
                    continue  # the owner turns the first batch away: it must come again
                in_flight.append((now + 0.1, sent.message.write_id))
        for at, write_id in [f for f in in_flight if f[0] <= now]:
            in_flight.remove((at, write_id))
            for deleted in handoff.acknowledged("n3", write_id, "kept"):
                assert isinstance(deleted, DeleteHint)
                del held[deleted.message_id]
                replayed_at.append(now)
        now = round(now + 0.05, 2)
    assert not held, f"{len(held)} hints never delivered"
    assert first_sent is not None and first_sent >= config.join_settle_s
    for second in range(int(now) + 1):
        # The rate, plus the batch a returning owner starts with.
        in_second = [t for t in replayed_at if second <= t < second + 1]
        assert len(in_second) <= config.hint_replay_per_s * 1.5
