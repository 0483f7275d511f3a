"""Every node of a 3- and a 5-node mesh restarted in turn under steady sends, each
waiting until the mesh is whole and hints are drained: no send fails, nothing is lost,
doubled or reordered, and every copy ends identical."""

import sys
from pathlib import Path

import pytest

from tests.rolling_restart import run_rolling_restart

pytestmark = pytest.mark.processes


@pytest.mark.parametrize("size", [3, 5])
def test_a_rolling_restart_under_load_fails_and_loses_nothing(tmp_path: Path, size: int) -> None:
    report = run_rolling_restart(tmp_path, size=size, senders=3, rate=10.0, steady_s=1.0)
    sys.stdout.write(f"rolling restart of {size}: {report.summary()}\n")
    assert len(report.faults) == size and report.acknowledged > 50
    assert report.failed == 0, report.summary()
    assert report.sound, report.summary()
