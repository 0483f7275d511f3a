from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.chat_helpers import wait_serving
from tests.processes import Cluster, NodeProcess, run_async


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    mesh = Cluster(tmp_path)
    try:
        yield mesh
    finally:
        mesh.close()


@pytest.fixture
def mesh(cluster: Cluster) -> Iterator[dict[str, NodeProcess]]:
    """Three nodes (the default N=3, W=2), each seeing the others alive and serving."""
    first = cluster.add("n1").start()
    for node_id in ("n2", "n3"):
        cluster.add(node_id, seeds=[first.peer_address]).start()
    for observer in cluster.nodes:
        for member in cluster.nodes:
            if member != observer:
                cluster.wait_sees(observer, member, "alive", timeout_s=10.0)
    run_async(wait_serving(*cluster.nodes.values()))  # each past its join settle
    yield cluster.nodes
