"""A short chaos run in CI (the README documents a long one): clients send while a nemesis
kills, pauses and restarts nodes; after healing, the checker finds nothing lost,
doubled or reordered, and every node's copy of every room identical."""

import sys
from pathlib import Path

import pytest

from tests.chaos import run_chaos

pytestmark = pytest.mark.processes


def test_a_short_chaos_run_loses_nothing(tmp_path: Path) -> None:
    report = run_chaos(tmp_path, duration_s=10.0, senders=3, rate=10.0, seed=7)
    sys.stdout.write(  # the counts, for whoever runs pytest -s
        f"chaos: sent {report.sent}, acknowledged {report.acknowledged}, failed "
        f"{report.failed}, faults {len(report.faults)}, stored {report.stored}, lost "
        f"{report.lost}, duplicated {report.duplicated}, out of order {report.out_of_order}, "
        f"differing nodes {report.differing_nodes}\n"
    )
    assert len(report.faults) >= 3 and report.acknowledged > 100
    assert report.sound, report
