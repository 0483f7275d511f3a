"""The ring places rooms evenly, the same way everywhere, and moves few rooms when nodes change."""

import collections
import statistics

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from router.ring import HashRing, stable_hash

ROOMS = [f"room-{n}" for n in range(100_000)]


def owners(ring: HashRing) -> dict[str, str | None]:
    return {room: ring.owner(room) for room in ROOMS}


@pytest.mark.parametrize("size", [3, 10, 25, 31, 38, 50])
def test_the_busiest_node_owns_at_most_a_quarter_more_than_the_mean(size: int) -> None:
    ring = HashRing(f"node-{n}" for n in range(size))
    load = collections.Counter(owners(ring).values())
    assert len(load) == size
    assert max(load.values()) <= 1.25 * statistics.mean(load.values())


@pytest.mark.parametrize("size", [3, 12, 49])
def test_a_joining_node_takes_about_its_share_and_only_for_itself(size: int) -> None:
    ring = HashRing(f"node-{n}" for n in range(size))
    before = owners(ring)
    ring.add("newcomer")
    after = owners(ring)
    moved = [room for room in ROOMS if before[room] != after[room]]
    assert all(after[room] == "newcomer" for room in moved)
    share = len(moved) / len(ROOMS)
    assert 0.6 / (size + 1) <= share <= 1.4 / (size + 1)


@pytest.mark.parametrize("size", [3, 12, 49])
def test_a_leaving_node_gives_up_only_its_own_rooms(size: int) -> None:
    ring = HashRing(f"node-{n}" for n in range(size))
    before = owners(ring)
    ring.remove("node-1")
    after = owners(ring)
    for room in ROOMS:
        if before[room] != "node-1":
            assert after[room] == before[room]
        else:
            assert after[room] != "node-1"


@settings(max_examples=50, deadline=None)
@given(
    nodes=st.sets(st.from_regex(r"\An[0-9]{1,3}\Z"), min_size=1, max_size=12),
    room=st.text(min_size=1, max_size=20),
    count=st.integers(1, 5),
)
def test_preference_lists_are_distinct_nodes_and_the_same_whatever_the_join_order(
    nodes: set[str], room: str, count: int
) -> None:
    forward = HashRing(sorted(nodes), vnodes=16)
    backward = HashRing(sorted(nodes, reverse=True), vnodes=16)
    chosen = forward.preference_list(room, count)
    assert chosen == backward.preference_list(room, count)
    assert len(chosen) == len(set(chosen)) == min(count, len(nodes))
    # A longer list starts with the shorter one: replicas are a prefix of the stand-ins.
    assert forward.preference_list(room, count + 2)[: len(chosen)] == chosen


def test_the_hash_is_stable_across_processes() -> None:
    # Fixed values: a change here would move every room of every existing mesh.
    assert stable_hash("lobby") == 0xA1E1048535AF1236
    assert HashRing(["n1", "n2", "n3"]).preference_list("lobby", 3) == HashRing(
        ["n3", "n1", "n2"]
    ).preference_list("lobby", 3)


def test_an_empty_ring_places_nothing() -> None:
    assert HashRing().preference_list("lobby", 3) == []
    assert HashRing().owner("lobby") is None


def test_remembered_preference_lists_follow_every_change_of_the_ring() -> None:
    ring = HashRing(["n1", "n2", "n3"], vnodes=16)
    rooms = [f"room-{number}" for number in range(200)]
    before = {room: ring.preference_list(room, 2) for room in rooms}
    before["room-0"].append("tampered")  # a caller's list is its own
    assert ring.preference_list("room-0", 2) != before["room-0"]
    ring.add("n4")
    fresh = HashRing(["n1", "n2", "n3", "n4"], vnodes=16)
    assert all(ring.preference_list(r, 2) == fresh.preference_list(r, 2) for r in rooms)
    assert any("n4" in ring.preference_list(r, 2) for r in rooms), "n4 took some rooms"
    ring.remove("n4")
    assert all(ring.preference_list(r, 2) == before[r] for r in rooms[1:])
