"""Membership under a seeded simulated network: fixed scenarios and many random schedules.

A failure prints its seed and the schedule that led to it; the same seed replays it.
Run more seeds with MESHCHAT_SIM_SEEDS=5000 (see the README).
"""

import os

import pytest

from peers.membership import MemberState
from tests.sim.membership_mesh import CONFIG, SimulatedMesh
from tests.sim.schedules import random_faults, start_mesh, start_settled_mesh

SEEDS = int(os.environ.get("MESHCHAT_SIM_SEEDS", "100"))
# Everything settles within the dead window plus a few heartbeat rounds of gossip, plus
# the suspect window: gossip of a node's new start is believed only once its old start
# falls silent (a paused observer may just have heard the old one's last heartbeat).
SETTLE_BOUND_S = CONFIG.dead_after_s + CONFIG.suspect_after_s + 4 * CONFIG.heartbeat_interval_s


def test_nodes_join_through_one_seed_and_converge() -> None:
    mesh = SimulatedMesh(seed=1)
    start_mesh(mesh, 12)
    assert mesh.wait_settled(timeout_s=5.0) < 5.0


def test_a_crashed_node_is_declared_dead_within_the_window() -> None:
    mesh = SimulatedMesh(seed=2)
    ids = start_mesh(mesh, 8)
    mesh.wait_settled(timeout_s=5.0)
    mesh.crash("n5")
    mesh.run_until(mesh.now + CONFIG.dead_after_s + CONFIG.heartbeat_interval_s + 0.2)
    for observer in ids:
        if observer != "n5":
            assert mesh.views()[observer]["n5"][0] is MemberState.DEAD


def test_a_restarted_node_comes_back_with_a_new_incarnation_and_once() -> None:
    mesh = SimulatedMesh(seed=3)
    start_mesh(mesh, 6)
    mesh.wait_settled(timeout_s=5.0)
    mesh.crash("n1")  # the seed itself, so it must be found by those who remember it
    mesh.run_until(mesh.now + 7.0)
    mesh.start("n1")
    mesh.wait_settled(timeout_s=3.0)
    for view in mesh.views().values():
        assert view["n1"] == (MemberState.ALIVE, 2)


def test_a_paused_node_is_dead_then_alive_again_with_the_same_incarnation() -> None:
    mesh = SimulatedMesh(seed=4)
    start_mesh(mesh, 5)
    mesh.wait_settled(timeout_s=5.0)
    mesh.pause("n3")
    mesh.run_until(mesh.now + CONFIG.dead_after_s + 1.0)
    assert mesh.views()["n1"]["n3"][0] is MemberState.DEAD
    mesh.resume("n3")
    mesh.wait_settled(timeout_s=2.0)
    assert mesh.views()["n1"]["n3"] == (MemberState.ALIVE, 1)


def test_twenty_percent_loss_never_kills_a_live_node() -> None:
    mesh = SimulatedMesh(seed=5)
    ids = start_mesh(mesh, 10)
    mesh.wait_settled(timeout_s=5.0)
    mesh.set_loss(0.2)
    for _ in range(60):
        mesh.run_until(mesh.now + 1.0)
        for observer, view in mesh.views().items():
            dead = [i for i in ids if view[i][0] is MemberState.DEAD]
            assert not dead, mesh.report(f"{observer} declared {dead} dead under 20% loss")
    mesh.set_loss(0.0)
    mesh.wait_settled(timeout_s=2.0)


def test_a_partition_splits_the_views_and_the_heal_joins_them() -> None:
    mesh = SimulatedMesh(seed=6)
    ids = start_mesh(mesh, 9)
    mesh.wait_settled(timeout_s=5.0)
    left_side, right_side = set(ids[:4]), set(ids[4:])
    mesh.partition(left_side, right_side)
    mesh.run_until(mesh.now + CONFIG.dead_after_s + 1.0)
    views = mesh.views()
    assert all(views["n1"][i][0] is MemberState.DEAD for i in right_side)
    assert all(views["n9"][i][0] is MemberState.DEAD for i in left_side)
    mesh.heal()
    assert mesh.wait_settled(timeout_s=SETTLE_BOUND_S) < 2.0


def test_a_node_that_leaves_is_left_everywhere_at_once() -> None:
    mesh = SimulatedMesh(seed=7)
    start_mesh(mesh, 6)
    mesh.wait_settled(timeout_s=5.0)
    mesh.leave("n4")
    mesh.run_until(mesh.now + 0.1)
    for observer, view in mesh.views().items():
        assert view["n4"][0] is MemberState.LEFT, observer


def test_one_seed_is_one_story() -> None:
    fingerprints = set()
    for _ in range(2):
        mesh = SimulatedMesh(seed=42)
        ids = start_settled_mesh(mesh, 8)
        random_faults(mesh, ids)
        mesh.wait_settled(timeout_s=SETTLE_BOUND_S)
        fingerprints.add(mesh.fingerprint())
    assert len(fingerprints) == 1


@pytest.mark.parametrize("seed", range(SEEDS))
def test_random_fault_schedules_settle(seed: int) -> None:
    mesh = SimulatedMesh(seed=seed)
    ids = start_settled_mesh(mesh, mesh.rng.randint(5, 20))
    random_faults(mesh, ids)
    mesh.wait_settled(timeout_s=SETTLE_BOUND_S)
