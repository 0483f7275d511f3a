"""Fault schedules for the membership simulator: fixed scenarios and seeded random ones."""

from tests.sim.membership_mesh import SimulatedMesh

FAULT_PHASE_S = 20.0


def start_mesh(mesh: SimulatedMesh, size: int) -> list[str]:
    """n1 first with no seeds; every other node joins through n1 alone."""
    ids = [f"n{i}" for i in range(1, size + 1)]
    mesh.add_node(ids[0])
    for node_id in ids[1:]:
        mesh.add_node(node_id, seeds=(mesh.address_of(ids[0]),))
    mesh.start(ids[0])
    for node_id in ids[1:]:
        mesh.run_until(mesh.now + mesh.rng.uniform(0, 0.2))
        mesh.start(node_id)
    return ids


def start_settled_mesh(mesh: SimulatedMesh, size: int) -> list[str]:
    """A mesh that has converged: faults start from a mesh every node has joined."""
    ids = start_mesh(mesh, size)
    mesh.wait_settled(timeout_s=5.0)
    return ids


def random_faults(mesh: SimulatedMesh, ids: list[str]) -> None:
    """A seeded schedule of crashes, restarts, pauses, departures, loss and partitions."""
    rng = mesh.rng
    end = mesh.now + FAULT_PHASE_S
    paused: set[str] = set()
    while mesh.now < end:
        mesh.run_until(mesh.now + rng.uniform(0.5, 3.0))
        live = [i for i in ids if mesh.nodes[i].up and i not in paused]
        down = [i for i in ids if not mesh.nodes[i].up]
        choice = rng.random()
        if choice < 0.2 and len(live) > 2:
            mesh.crash(rng.choice(live))
        elif choice < 0.35 and down:
            mesh.start(rng.choice(down))  # a restart, with a new incarnation
        elif choice < 0.5 and len(live) > 2:
            victim = rng.choice(live)
            mesh.pause(victim)
            paused.add(victim)
        elif choice < 0.6 and paused:
            victim = rng.choice(sorted(paused))
            mesh.resume(victim)
            paused.discard(victim)
        elif choice < 0.65 and len(live) > 2:
            mesh.leave(rng.choice(live))
        elif choice < 0.8:
            side = set(rng.sample(ids, rng.randint(1, len(ids) - 1)))
            mesh.partition(side, set(ids) - side)
        elif choice < 0.9:
            mesh.heal()
        else:
            mesh.set_loss(rng.choice([0.0, 0.1, 0.2, 0.3]), rng.choice([0.0, 0.05]))
    for victim in sorted(paused):
        mesh.resume(victim)
    mesh.heal()
    mesh.set_loss(0.0)
