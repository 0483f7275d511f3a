"""Real node processes on loopback, started through the CLI: join, crash, restart, pause, leave."""

import signal
import time

import pytest

from tests.processes import DEAD_AFTER_S, Cluster, wait_for

pytestmark = pytest.mark.processes


def start_three(cluster: Cluster) -> None:
    """n1 alone; n2 and n3 join through n1 only."""
    first = cluster.add("n1").start()
    cluster.add("n2", seeds=[first.peer_address]).start()
    cluster.add("n3", seeds=[first.peer_address]).start()
    wait_all_see(cluster, {"n1": "alive", "n2": "alive", "n3": "alive"}, timeout_s=5.0)


def wait_all_see(
    cluster: Cluster, expected: dict[str, str], timeout_s: float, observers: list[str] | None = None
) -> dict[str, dict[str, tuple[str, int]]]:
    observers = observers or [i for i in expected if expected[i] == "alive"]

    def seen() -> dict[str, dict[str, tuple[str, int]]] | None:
        views = {}
        for observer in observers:
            view = cluster.states(observer)
            if view is None or {i: view.get(i, ("?", 0))[0] for i in expected} != expected:
                return None
            views[observer] = view
        return views

    return wait_for(seen, timeout_s, cluster.describe)


def test_three_nodes_are_all_alive_within_five_seconds(cluster: Cluster) -> None:
    started = time.monotonic()
    start_three(cluster)
    assert time.monotonic() - started < 5.0


def test_a_killed_node_is_dead_within_the_window_then_returns_as_a_new_incarnation(
    cluster: Cluster,
) -> None:
    start_three(cluster)
    before = cluster.states("n1")
    assert before is not None
    cluster.nodes["n3"].signal(signal.SIGKILL)
    killed_at = time.monotonic()
    wait_all_see(cluster, {"n1": "alive", "n2": "alive", "n3": "dead"}, timeout_s=5.0)
    # Dead after `dead_after` of silence, give or take a heartbeat and our polling.
    assert time.monotonic() - killed_at < DEAD_AFTER_S + 1.5

    cluster.nodes["n3"].start()
    views = wait_all_see(cluster, {"n1": "alive", "n2": "alive", "n3": "alive"}, timeout_s=5.0)
    for observer in ("n1", "n2"):
        reply = cluster.nodes[observer].status()
        assert reply is not None
        assert [member.id for member in reply.members].count("n3") == 1
        assert views[observer]["n3"][1] > before["n3"][1]


def test_a_paused_node_is_dead_then_alive_again(cluster: Cluster) -> None:
    start_three(cluster)
    incarnation = cluster.states("n1")["n2"][1]  # type: ignore[index]
    cluster.nodes["n2"].signal(signal.SIGSTOP)
    try:
        wait_all_see(cluster, {"n1": "alive", "n2": "dead", "n3": "alive"}, timeout_s=5.0)
    finally:
        cluster.nodes["n2"].signal(signal.SIGCONT)
    views = wait_all_see(cluster, {"n1": "alive", "n2": "alive", "n3": "alive"}, timeout_s=5.0)
    assert views["n1"]["n2"][1] == incarnation


def test_a_terminated_node_is_left_within_a_second(cluster: Cluster) -> None:
    start_three(cluster)
    cluster.nodes["n1"].signal(signal.SIGTERM)
    stopped_at = time.monotonic()
    wait_all_see(cluster, {"n1": "left", "n2": "alive", "n3": "alive"}, timeout_s=1.0)
    assert time.monotonic() - stopped_at < 1.0
    assert cluster.nodes["n1"].process.wait(timeout=5.0) == 0  # type: ignore[union-attr]


def test_a_restart_with_its_seed_down_rejoins_through_remembered_peers(cluster: Cluster) -> None:
    start_three(cluster)
    cluster.nodes["n1"].signal(signal.SIGKILL)
    # n3 leaves cleanly, so nobody heartbeats it any more: coming back is up to n3 alone,
    # and its only configured seed, n1, stays down.
    cluster.nodes["n3"].signal(signal.SIGTERM)
    assert cluster.nodes["n3"].process.wait(timeout=5.0) == 0  # type: ignore[union-attr]
    wait_all_see(cluster, {"n3": "left", "n2": "alive"}, timeout_s=5.0, observers=["n2"])
    cluster.nodes["n3"].start()
    wait_all_see(
        cluster,
        {"n1": "dead", "n2": "alive", "n3": "alive"},
        timeout_s=5.0,
        observers=["n2", "n3"],
    )
