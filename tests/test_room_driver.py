"""The one shell around the room engine: the simulator runs the node's own driver, and
every storage effect ends in exactly one result, failures included.

The simulated disk injects faults; they reach the engine through the production driver's
failure path. The SQLite disk turns every failure, expected or not, into StorageFailed.
"""

import asyncio
import os
from pathlib import Path

import pytest

from mesh.node import node as node_module
from mesh.node.room_driver import RoomDriver
from mesh.node.sqlite_disk import SqliteDisk
from mesh.node.storage import Storage
from router.effects import LoadHints, LoadIds, Store
from router.events import StorageFailed, StorageResult, Stored
from router.records import RoomMessage
from tests.sim.room_schedules import Fault, random_plan
from tests.sim.rooms_mesh import SimulatedRooms
from tests.sim.simulated_disk import SimulatedDisk
from tests.test_rooms_simulation import MENU, SEEDS, assert_sound

REPLAY_BOUND_S = 30.0  # hint replay after a failed load: well inside this


def test_the_simulator_runs_the_drivers_the_node_runs() -> None:
    sim = SimulatedRooms(seed=1, size=3)
    for node_id in sim.nodes:
        sim.start(node_id)
    assert node_module.RoomDriver is RoomDriver  # type: ignore[attr-defined]
    for node in sim.nodes.values():
        assert type(node.driver) is RoomDriver
        assert isinstance(node.disk, SimulatedDisk)


def _mesh_with_hints_for(owner: str, seed: int) -> SimulatedRooms:
    """Five nodes that took sends while `owner` was down: stand-ins hold its hints."""
    sim = SimulatedRooms(seed)
    for node_id in sim.nodes:
        sim.start(node_id)
    sim.run_until(3.0)
    sim.crash(owner)
    sim.run_until(sim.now + 3.0)  # long enough to be seen dead
    for number in range(60):
        room = sim.rooms[number % len(sim.rooms)]
        sim.send("ann", room, f"{room}/{number}")
        sim.run_until(sim.now + 0.02)
    sim.run_until(sim.now + 2.0)
    return sim


def _hints_for(sim: SimulatedRooms, owner: str) -> int:
    return sum(len(node.store.hints.get(owner, {})) for node in sim.nodes.values())


def test_failed_hint_loads_delay_the_replay_and_never_stall_it() -> None:
    """The first batches of n2's hints that stand-ins read fail on every one of them;
    the replay must go on once the disk answers again."""
    sim = _mesh_with_hints_for("n2", seed=3)
    held = _hints_for(sim, "n2")
    assert held > 0, "no hints were held for n2: the test tests nothing"
    for node in sim.nodes.values():
        if node.disk is not None:
            node.disk.fail_next(LoadHints, 4)
    sim.start("n2")
    started = sim.now
    while _hints_for(sim, "n2"):
        assert sim.now - started < REPLAY_BOUND_S, sim.report(f"{held} hints stuck")
        sim.run_until(sim.now + 0.5)
    injected = [n.disk.faults_injected for n in sim.nodes.values() if n.disk]
    failures = [n.driver.stats.storage_failures for n in sim.nodes.values() if n.driver]
    assert sum(injected) > 0 and failures == injected
    sim.run_until(sim.now + 5.0)
    assert not sim.problems()


def test_a_failed_copy_is_never_acknowledged_and_the_send_retried_lands() -> None:
    # Every node's next copies fail for a while: those writes are refused, the writers
    # retry, and in the end every acknowledged send is on W replicas.
    plan = [Fault(1.0 + i / 5, "disk", (f"n{i}",), storage="Store", count=3) for i in range(1, 6)]
    sim = assert_sound(4, plan)
    assert sum(n.disk.faults_injected for n in sim.nodes.values() if n.disk) > 0
    assert sim.refusals > 0, "no send failed: the faults hit nothing"


@pytest.mark.parametrize("seed", range(0, SEEDS, 8))
def test_random_disk_faults_keep_every_promise(seed: int) -> None:
    assert_sound(seed, random_plan(seed, MENU | {"disk"}))


# ---- the SQLite disk ----


def _message(number: int) -> RoomMessage:
    return RoomMessage(
        id=f"{number:012x}0000.n1",
        room="lobby",
        sender="ann",
        time_ms=number,
        body=f"m{number}",
        client_msg_id=f"c{number}",
    )


async def _ended(disk: SqliteDisk, effect: Store | LoadIds) -> list[StorageResult]:
    results: list[StorageResult] = []
    ended = asyncio.Event()

    def done(result: StorageResult) -> None:
        results.append(result)
        ended.set()

    disk.perform(effect, done)
    async with asyncio.timeout(5.0):
        await ended.wait()
    await asyncio.sleep(0)  # a second call, if any, would come by now
    return results


def test_the_sqlite_disk_ends_every_effect_once_failures_included(tmp_path: Path) -> None:
    async def scenario() -> None:
        storage = Storage(tmp_path)
        await storage.open()
        disk = SqliteDisk(storage, lambda: 0)
        (stored,) = await _ended(disk, Store(1, _message(1)))
        assert stored == Stored(_message(1), known=False)
        (again,) = await _ended(disk, Store(2, _message(1)))
        assert again == Stored(_message(1), known=True)
        # The database deleted under the node: writes are refused before they queue.
        os.unlink(storage.path)
        assert storage.check_files() is not None
        (lost,) = await _ended(disk, Store(3, _message(2)))
        assert isinstance(lost, StorageFailed)
        await storage.close()
        # A read once storage is closed breaks unexpectedly: still one failure.
        (broken,) = await _ended(disk, LoadIds(4, "lobby", "", "~", 10))
        assert isinstance(broken, StorageFailed) and "internal" in broken.reason
        await disk.close()

    asyncio.run(scenario())
