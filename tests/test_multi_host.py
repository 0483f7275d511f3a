"""Five nodes on five hosts (network namespaces on real links) while the links between
them are cut and joined and a node is killed, under writes from two client hosts:
nothing acknowledged is lost, doubled or reordered, and every copy ends identical."""

import sys
from pathlib import Path

import pytest

from tests import netns
from tests.multi_host import plan, run_multi_host

pytestmark = pytest.mark.processes


def test_links_cut_between_hosts_lose_nothing(tmp_path: Path) -> None:
    if (reason := netns.unavailable()) is not None:
        pytest.skip(reason)
    report = run_multi_host(tmp_path, plan(hold_s=2.0, senders=2, rate=10.0, latency_s=0.005))
    sys.stdout.write(f"multi-host: {report.summary()}\n")
    assert len(report.faults) == 3 and report.acknowledged > 100, report.summary()
    assert report.sound, report.summary()
