from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.processes import Cluster


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    mesh = Cluster(tmp_path)
    try:
        yield mesh
    finally:
        mesh.close()
