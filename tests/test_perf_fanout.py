"""The fan-out workload, run briefly: every delivery counted, and missing, repeated and
out-of-order ones told apart. Timings are never asserted here."""

import json
import subprocess
from pathlib import Path

import pytest

from perf.fanout import PUBLISHER, FanoutWorkload, Received, run_fanout
from perf.harness import RunOptions
from perf.workload import encode_payload
from tests.processes import meshchat_command


def payload(sequence: int) -> str:
    return encode_payload(PUBLISHER, sequence, 0, 64)


def test_repeats_and_late_comers_are_counted_apart() -> None:
    got = Received()
    for sequence in (0, 2, 2, 1, 3, "foreign"):
        got.take(payload(sequence) if isinstance(sequence, int) else "not:a:payload")
    assert got.total == 5 and got.counts == {0: 1, 2: 2, 1: 1, 3: 1}
    assert got.out_of_order == 1, "1 came after 2; the repeat of 2 is a duplicate only"


def test_rooms_get_the_sequences_round_robin() -> None:
    workload = FanoutWorkload(rooms=3, members=2, messages=7)
    assert [workload.room_of(s) for s in range(4)] == [
        "fanout-0",
        "fanout-1",
        "fanout-2",
        "fanout-0",
    ]
    assert len(workload.subscribers) == 6 and len({c for c, _ in workload.subscribers}) == 6
    assert PUBLISHER not in {client for client, _ in workload.subscribers}
    with pytest.raises(ValueError, match="at least 1"):
        FanoutWorkload(window=0)


@pytest.mark.processes
def test_a_short_fanout_against_three_nodes_delivers_each_message_once_in_order(
    tmp_path: Path,
) -> None:
    workload = FanoutWorkload(rooms=2, members=3, messages=600, window=50)
    summary = run_fanout(workload, RunOptions(nodes=3, workers=1, out_dir=tmp_path, live=False))
    assert summary["expected_deliveries"] == 600 * 3
    assert (summary["deliveries"], summary["missing"]) == (1800, 0)
    assert (summary["duplicates"], summary["out_of_order"]) == (0, 0)
    assert summary["send_errors"] == {}
    assert summary["sends_per_s"] > 0 and summary["deliveries_per_s"] > 0


@pytest.mark.processes
def test_the_fanout_command_writes_its_figures(tmp_path: Path) -> None:
    command = [
        *meshchat_command(),
        "perf",
        "fanout",
        "--rooms",
        "2",
        "--members",
        "2",
        "--messages",
        "200",
        "--window",
        "20",
        "--workers",
        "1",
        "--out",
        str(tmp_path),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "deliveries/s" in done.stdout and "duplicates 0" in done.stdout
    (result,) = json.loads((tmp_path / "fanout.json").read_text())
    assert result["deliveries"] == 400 and result["out_of_order"] == 0
