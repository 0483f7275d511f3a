"""Whole nodes (membership, placement, writes, reads, fan-out) under a seeded network.

Every run ends by healing everything, letting the mesh settle and sweeping each room from
all its replicas, then checks: no acknowledged message missing from a replica, nothing
stored twice, replicas identical, every member received every acknowledged message, no
message handed to a node's sessions twice. A failure prints its seed and the shortest
list of faults that still shows it; the same seed replays it exactly.
CI runs 200 seeds; run more with MESHCHAT_SIM_SEEDS=5000 (see the README).
"""

import os
from collections import Counter

import pytest

from router.config import RouterConfig
from tests.sim.room_schedules import (
    Fault,
    random_plan,
    run,
    shortest_failing_plan,
)
from tests.sim.rooms_mesh import SimulatedRooms

SEEDS = int(os.environ.get("MESHCHAT_SIM_SEEDS", "200"))
# The whole fault menu: crashes and restarts (once per run with an empty disk), pauses,
# partitions and heals, loss and duplication (delay and reordering are always on).
MENU = frozenset({"crash", "wipe", "pause", "partition", "loss"})


def assert_sound(seed: int, plan: list[Fault], *, room_events: bool = True) -> SimulatedRooms:
    sim = run(seed, plan, room_events=room_events)
    problems = sim.problems()
    if problems:
        shortest = shortest_failing_plan(seed, plan, room_events=room_events)
        story = "\n".join(str(fault) for fault in shortest)
        replay = run(seed, shortest, room_events=room_events)
        raise AssertionError(
            f"seed {seed}: {problems[:5]}\n"
            f"shortest failing fault list ({len(shortest)} of {len(plan)}):\n{story}\n"
            + replay.report("replayed with those faults")
        )
    return sim


@pytest.mark.parametrize("seed", range(SEEDS))
def test_random_faults_keep_every_promise(seed: int) -> None:
    sim = assert_sound(seed, random_plan(seed, MENU))
    assert sim.acked, "the run acknowledged nothing: it tested nothing"


# Seeds a nightly-size run once failed on (members missing messages written across a
# partition, around restarts): kept in CI whatever the seed count.
ONCE_FAILED = [410, 674, 1253, 1431, 1803, 2355, 2623, 2737, 2764, 3333, 3632, 4361, 4613, 4692]


@pytest.mark.parametrize("seed", ONCE_FAILED)
def test_seeds_that_once_failed_keep_every_promise(seed: int) -> None:
    # Their workload as it was then, plain sends: the same stories replay.
    assert_sound(seed, random_plan(seed, MENU), room_events=False)


def test_edits_deletes_reactions_and_read_markers_hold_under_every_fault() -> None:
    # Besides the usual checks: every replica's read model is identical and equal to a
    # rebuild from its log, no disk keeps a deleted message's content, and every node
    # reads each user's marker as the greatest acknowledged (or a later one set).
    sim = assert_sound(3, random_plan(3, MENU))
    kinds = Counter(request.kind for request in sim.requests_acked)
    assert min(kinds[kind] for kind in ("edit", "delete", "reaction")) > 0, kinds
    assert sim.markers_acked and sim.looked_up


def test_room_state_holds_under_every_fault() -> None:
    # Besides the usual checks: no coordinator took a post that the room's state on its
    # own disk refused (mallory, banned and unbanned by the owner, posts all along), and
    # every replica folds one state from its state events.
    sim = assert_sound(3, random_plan(3, MENU))
    kinds = Counter(request.kind for request in sim.requests_acked)
    assert min(kinds[kind] for kind in ("create", "ban", "unban", "set_role")) > 0, kinds
    assert sim.forbidden > 0
    assert any(request.sender == "mallory" for request in sim.requests_acked)


def test_without_faults_every_send_is_acknowledged_at_once() -> None:
    sim = assert_sound(1, [])
    assert sim.refusals == 0
    assert len(sim.acked) > 100


def test_the_coordinator_crashing_under_load_loses_nothing() -> None:
    # n1 coordinates a share of the rooms; it dies mid-run and comes back much later.
    plan = [Fault(2.0, "crash", ("n1",)), Fault(9.0, "restart", ("n1",))]
    sim = assert_sound(2, plan)
    # Gateways retry forwards towards the next live replica: sends keep being acknowledged.
    assert len(sim.acked) > 100


def test_two_of_five_down_at_once_still_converges() -> None:
    plan = [
        Fault(1.0, "crash", ("n2",)),
        Fault(1.5, "crash", ("n3",)),
        Fault(6.0, "restart", ("n2",)),
        Fault(8.0, "restart", ("n3",)),
    ]
    assert_sound(3, plan)


def test_loss_and_duplication_alone_cost_nothing_but_retransmissions() -> None:
    plan = [Fault(0.5, "loss", loss=0.3, duplication=0.1)]
    assert_sound(4, plan)


def test_both_sides_of_a_partition_write_and_merge_after_the_heal() -> None:
    plan = [
        Fault(1.0, "partition", ("n1", "n2")),
        Fault(7.0, "heal"),
    ]
    sim = assert_sound(9, plan)
    assert len(sim.acked) > 100


def test_a_node_restarted_empty_mid_run_loses_no_acknowledged_message() -> None:
    plan = [Fault(2.0, "crash", ("n3",)), Fault(5.0, "restart empty", ("n3",))]
    assert_sound(10, plan)


def test_a_paused_node_catches_its_members_up_when_it_resumes() -> None:
    plan = [Fault(1.0, "pause", ("n4",)), Fault(7.0, "resume", ("n4",))]
    assert_sound(5, plan)


def test_one_seed_replays_the_same_story() -> None:
    plan = random_plan(11, MENU)
    assert run(11, plan).fingerprint() == run(11, plan).fingerprint()
    assert run(11, plan).fingerprint() != run(12, plan).fingerprint()


def test_a_failure_is_reported_with_its_seed_and_shortest_fault_list() -> None:
    """The checker itself: a run whose acknowledged sends are tampered with must fail,
    and the report must name the seed and list faults."""
    plan = [Fault(1.0, "crash", ("n2",)), Fault(3.0, "loss", loss=0.1)]
    sim = run(6, plan)
    sim.acked[("nobody", "room0/never-sent")] = "0000000000000001.n1"
    problems = sim.problems()
    assert any("missing on replica" in problem for problem in problems)
    assert any("missed" in problem for problem in problems)
    report = sim.report("tampered")
    assert report.startswith("seed 6: tampered") and "crash n2" in report


@pytest.mark.parametrize("seed", range(0, SEEDS, 4))
def test_anti_entropy_alone_makes_replicas_identical(seed: int) -> None:
    """No read sweep at the end: only the background comparison evens replicas out."""
    plan = random_plan(seed, MENU)
    sim = run(seed, plan, sweep=False)
    assert not sim.problems(), sim.report(f"{sim.problems()[:5]}")


def test_a_node_restarted_with_an_empty_disk_is_refilled_by_anti_entropy() -> None:
    sim = run(8, [], sweep=False)
    victim = "n2"
    before = {room: sim.nodes[victim].store.ids(room) for room in sim.rooms}
    assert sum(len(ids) for ids in before.values()) > 50, "n2 should hold rooms to lose"
    sim.crash(victim)
    sim.wipe(victim)
    sim.start(victim)
    started = sim.now
    sim.run_until(sim.now + 0.5)
    assert sim.problems(), "an empty replica must show as one"
    while sim.problems():
        assert sim.now - started < 60.0, sim.report(f"not refilled: {sim.problems()[:3]}")
        sim.run_until(sim.now + 0.5)
    assert sim.now - started < 30.0
    assert {room: sim.nodes[victim].store.ids(room) for room in sim.rooms} == before


def test_anti_entropy_sends_within_its_budget_and_finishes_in_later_rounds() -> None:
    rate = 20.0
    config = RouterConfig(read_quorum=2, anti_entropy_messages_per_s=rate)
    sim = run(8, [], sweep=False, config=config)
    victim = "n2"
    before = {room: sim.nodes[victim].store.ids(room) for room in sim.rooms}
    held = sum(len(ids) for ids in before.values())
    assert held > 3 * rate, "n2 should hold more than a few seconds' budget"
    sim.crash(victim)
    sim.wipe(victim)
    sim.start(victim)
    started = sim.now
    peers = [node for node in sim.nodes.values() if node.node_id != victim]

    def sent() -> list[int]:
        return [node.engine.anti_entropy.stats.messages_sent for node in peers if node.engine]

    while sim.problems():
        assert sim.now - started < 120.0, sim.report(f"not refilled: {sim.problems()[:3]}")
        counts = sent()
        sim.run_until(sim.now + 1.0)
        # A second's refill plus what had built up (a second's worth at most).
        assert all(b - a <= 2 * rate for a, b in zip(counts, sent(), strict=True))
    assert {room: sim.nodes[victim].store.ids(room) for room in sim.rooms} == before
    deferred = sum(
        node.engine.anti_entropy.stats.messages_deferred for node in peers if node.engine
    )
    assert deferred > 0, "the budget never cut an exchange short: it tested nothing"
