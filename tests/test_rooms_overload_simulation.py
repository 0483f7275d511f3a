"""Whole nodes asked for far more than they can do: bursts of thousands of sends at once
while a replica's disk is many times slower than usual, and no other fault. Every
promise of the rooms still holds (tests/test_rooms_simulation.py checks them), and more,
since nothing else goes wrong: every node hands each room's messages to its sessions in
id order. CI runs 20 seeds; run more with MESHCHAT_SIM_OVERLOAD_SEEDS=1000.
"""

import os
import random

import pytest

from router.config import RouterConfig
from tests.sim.room_schedules import SIZE, Fault, run

SEEDS = int(os.environ.get("MESHCHAT_SIM_OVERLOAD_SEEDS", "20"))
BURST_SENDS = 1_500
SLOWDOWN = 40.0


def overload_plan(seed: int) -> list[Fault]:
    """Two bursts, the first while one node's disk is slow, the second on top of it."""
    rng = random.Random(seed)
    slow = f"n{rng.randint(1, SIZE)}"
    first = rng.uniform(1.0, 3.0)
    return [
        Fault(first - 0.5, "slow disk", (slow,), factor=SLOWDOWN),
        Fault(first, "burst", count=BURST_SENDS),
        Fault(first + rng.uniform(0.2, 2.0), "burst", count=BURST_SENDS),
        Fault(first + 5.0, "slow disk", (slow,), factor=1.0),
    ]


@pytest.mark.parametrize("seed", range(SEEDS))
def test_bursts_beyond_capacity_deliver_every_message_once_and_in_order(seed: int) -> None:
    plan = overload_plan(seed)
    sim = run(seed, plan)
    problems = sim.problems()
    assert not problems, f"seed {seed}: {problems[:5]}\n" + sim.report("overloaded")
    bursts = sum(1 for key in sim.acked if "/burst" in key[1])
    assert bursts >= BURST_SENDS, "the bursts were acknowledged (retried when refused)"
    for node in sim.nodes.values():
        assert not node.out_of_order, (
            f"seed {seed}: {node.node_id} delivered {len(node.out_of_order)} out of order, "
            f"e.g. {node.out_of_order[:3]}"
        )


def pause_plan(seed: int) -> list[Fault]:
    rng = random.Random(seed)
    paused = f"n{rng.randint(1, SIZE)}"
    at = rng.uniform(1.0, 3.0)
    return [
        Fault(at, "burst", count=BURST_SENDS),
        Fault(at + 0.05, "pause", (paused,)),
        Fault(at + 0.05 + rng.uniform(0.3, 0.8), "resume", (paused,)),
        Fault(at + 1.0, "burst", count=BURST_SENDS),
    ]


def test_the_pause_scenario_makes_nodes_catch_rooms_up() -> None:
    """What the scenario is for (most seeds; a short pause with no push lost needs none,
    as seed 403 showed): seed 0 catches up."""
    sim = run(0, pause_plan(0), config=RouterConfig(held_pushes_max=20))
    assert sum(node.engine.stats.catch_ups for node in sim.nodes.values() if node.engine)


@pytest.mark.parametrize("seed", range(SEEDS))
def test_a_node_pausing_in_a_burst_catches_up_once_and_in_order(seed: int) -> None:
    """A node stands still for a moment in the middle of a burst: it catches its rooms
    up while pushes pour in, far more than it holds back (held_pushes_max is small
    here), so most are left to the catch-up to read; still once, and in order.

    In order per coordinator: a pause long enough to be taken for dead hands the
    paused node's rooms to the next replica, and the writes the paused node had in
    flight settle after its successor's newer ones (the overlap docs/rooms.md names),
    so the two may interleave (seeds 240, 563, 686 and 948 of 1,000 showed it)."""
    sim = run(seed, pause_plan(seed), config=RouterConfig(held_pushes_max=20))
    problems = sim.problems()
    assert not problems, f"seed {seed}: {problems[:5]}\n" + sim.report("overloaded")
    for node in sim.nodes.values():
        disordered = node.out_of_order_within_coordinator
        assert not disordered, (
            f"seed {seed}: {node.node_id} delivered {len(disordered)} out of their "
            f"coordinator's order, e.g. {disordered[:3]}"
        )
