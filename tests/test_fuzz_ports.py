"""The mutation fuzzer against a real node: 20,000 frames on each of its ports while a
legitimate client sends and reads (tests/fuzz_ports.py; the long run is documented in README)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from mesh.client import runtime
from tests.fuzz_ports import FuzzSettings, fuzz

pytestmark = pytest.mark.processes

CI_FRAMES_PER_PORT = 20_000


@pytest.mark.timeout(240)
def test_twenty_thousand_frames_per_port_leave_the_node_whole(tmp_path: Path) -> None:
    summary = runtime.run(fuzz(FuzzSettings(frames_per_port=CI_FRAMES_PER_PORT, seed=14), tmp_path))
    shown = json.dumps(summary, indent=2)
    assert summary["failures"] == [], shown
    assert summary["peer_links"] == "curve", shown
    for port in ("client", "http", "peer"):
        assert summary["ports"][port]["frames"] >= CI_FRAMES_PER_PORT, shown
    legit = summary["legit"]
    assert legit["acked"] > 0 and legit["delivered"] == legit["in_history"] == legit["acked"], shown
    assert summary["log"]["tracebacks"] == 0, shown
    counters = summary["counters"]
    assert counters["peer_frames_rejected"] > 0 and counters["client_errors_bad_request"] > 0


def test_the_documented_command_prints_a_summary_and_its_verdict(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "tests.fuzz_ports", "--frames", "300", "--seed", "3"]
    done = subprocess.run(
        [*command, "--root", str(tmp_path)],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).parents[1],
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    summary = json.loads(done.stdout)
    assert summary["ports"]["client"]["frames"] >= 300 and summary["seed"] == 3
