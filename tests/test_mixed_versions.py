"""A rolling upgrade of a 3-node mesh from the previous protocol version (1.5, a pinned
commit installed into its own venv) to today's, under sends from an old and a new client
through every node: no send fails, nothing is lost, doubled or reordered, the copies end
identical, and the old client goes on sending and reads everything back once every node
is new."""

import sys
import tempfile
from pathlib import Path

import pytest

from tests.mixed_versions import old_meshchat, run_mixed_upgrade

pytestmark = pytest.mark.processes


@pytest.mark.timeout(900)  # the first run installs the old version (half a minute here)
def test_a_rolling_upgrade_from_the_previous_version_keeps_old_clients_working(
    tmp_path: Path,
) -> None:
    old = old_meshchat(Path(tempfile.gettempdir()))
    if isinstance(old, str):
        pytest.skip(old)
    report = run_mixed_upgrade(tmp_path, old, senders=2, rate=10.0, steady_s=1.5)
    sys.stdout.write(f"mixed versions: {report.summary()}\n")
    assert len(report.faults) == 3 and report.acknowledged > 100, report.summary()
    assert report.failed == 0, report.summary()
    assert report.sound, report.summary()
    assert report.old_acked_after_upgrade > 0 and report.old_read_missing == 0, report.summary()
