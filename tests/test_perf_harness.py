"""The performance harness, run briefly: figures produced, consistent, files written.
Timings are never asserted here; docs/benchmarks.md has the measurements."""

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from perf.harness import RunOptions, run
from perf.workload import (
    TargetName,
    Workload,
    decode_payload,
    encode_payload,
    reaction_key,
    reaction_payload,
)
from tests.processes import meshchat_command

pytestmark = pytest.mark.processes


def short(target: TargetName = "meshchat") -> Workload:
    return Workload(
        target=target, clients=4, rooms=2, rate=100, duration_s=2.0, warmup_s=0.5, body_size=64
    )


def check_consistent(summary: dict[str, Any], out: Path, workload: Workload) -> None:
    totals = summary["totals"]
    members_per_room = workload.clients // workload.rooms
    assert totals["acknowledged"] == int(workload.rate * (workload.duration_s + workload.warmup_s))
    assert totals["expected_deliveries"] == totals["acknowledged"] * members_per_room
    assert totals["delivered"] == totals["expected_deliveries"]
    assert totals["lost"] == 0 and totals["duplicated"] == 0
    assert summary["delivery_latency_ms"]["p50"] is not None
    assert summary["timeline"]
    assert (out / "results.json").stat().st_size > 0
    assert (out / "plot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_short_run_against_one_node_is_consistent(tmp_path: Path) -> None:
    workload = short()
    summary = run(workload, RunOptions(nodes=1, workers=1, out_dir=tmp_path, live=False))
    check_consistent(summary, tmp_path, workload)
    assert summary["machine"]["cores"] >= 1
    assert summary["workload"]["rate"] == 100


def test_a_run_where_a_tenth_of_the_writes_are_edits_and_reactions_times_them_too(
    tmp_path: Path,
) -> None:
    workload = short("meshchat-relations")
    summary = run(workload, RunOptions(nodes=1, workers=1, out_dir=tmp_path, live=False))
    # Each edit and reaction carries its payload (body, key): delivered once, as a
    # relation event, and timed against the schedule.
    check_consistent(summary, tmp_path, workload)
    assert "10% of writes edits of or reactions to" in summary["target"]["description"]


def test_a_reaction_carries_its_send_s_sequence_and_the_schedule_gives_its_due_time() -> None:
    workload = short()
    body = encode_payload(3, 41, workload.due_ns(1_000, 3, 41), 64)
    assert reaction_payload("perf3", reaction_key(body)) == "3:41:-1:"
    assert decode_payload(reaction_payload("perf3", reaction_key(body))) == (3, 41, -1)
    assert workload.due_ns(1_000, 3, 41) == decode_payload(body)[2]
    with pytest.raises(ValueError):
        reaction_payload("ann", "s1")


def test_a_node_killed_and_restarted_during_a_run_loses_nothing(tmp_path: Path) -> None:
    workload = Workload(clients=4, rooms=2, rate=100, duration_s=4.0, warmup_s=0.5, body_size=64)
    options = RunOptions(
        nodes=1, workers=1, out_dir=tmp_path, live=False, kill_node_at_s=1.0, restart_at_s=2.0
    )
    summary = run(workload, options)
    check_consistent(summary, tmp_path, workload)
    assert [fault["event"] for fault in summary["faults"]] == ["kill n1", "restart n1"]


@pytest.mark.parametrize("target", ["redis", "nats"])
def test_the_same_workload_runs_against_redis_and_nats(tmp_path: Path, target: TargetName) -> None:
    binary = "redis-server" if target == "redis" else "nats-server"
    if shutil.which(binary) is None and shutil.which(binary, path="/usr/sbin") is None:
        pytest.skip(f"{binary} is not installed (apt-get install {binary})")
    workload = short(target)
    summary = run(workload, RunOptions(workers=1, out_dir=tmp_path, live=False))
    check_consistent(summary, tmp_path, workload)


def test_a_short_run_against_three_nodes_with_a_kill_loses_nothing(tmp_path: Path) -> None:
    """N=3, W=2 across three processes: members on every node, the last node killed
    and restarted mid-run; every acknowledged send reaches every member once."""
    workload = Workload(clients=6, rooms=2, rate=60, duration_s=4.0, warmup_s=0.5, body_size=64)
    options = RunOptions(
        nodes=3, workers=1, out_dir=tmp_path, live=False, kill_node_at_s=1.0, restart_at_s=2.5
    )
    summary = run(workload, options)
    check_consistent(summary, tmp_path, workload)
    assert [fault["event"] for fault in summary["faults"]] == ["kill n3", "restart n3"]


# Three short runs, each starting a node and spawning a load process.
COMPARE_TIMEOUT_S = 120.0


def test_compare_runs_plaintext_curve_and_tls_variants_with_a_sweep(tmp_path: Path) -> None:
    """`perf compare --sweep --fanout` across the peer-link and client-port security
    variants, from the command line: every variant runs both workloads, loses nothing and
    is compared with the first."""
    targets = ["meshchat-plain", "meshchat", "meshchat-tls"]
    command = [
        *meshchat_command(),
        "perf",
        "compare",
        "--nodes",
        "1",
        "--targets",
        ",".join(targets),
        "--clients",
        "4",
        "--rooms",
        "2",
        "--rate",
        "40",
        "--duration",
        "2",
        "--warmup",
        "0.5",
        "--workers",
        "1",
        "--sweep",
        "--max-steps",
        "1",
        "--p99-bound-ms",
        "10000",
        "--fanout",
        "--fanout-messages",
        "300",
        "--out",
        str(tmp_path),
    ]
    finished = subprocess.run(
        command, check=False, capture_output=True, text=True, timeout=COMPARE_TIMEOUT_S
    )
    assert finished.returncode == 0, finished.stderr[-2000:]
    document = json.loads((tmp_path / "compare.json").read_text())
    rows = document["rows"]
    assert [row["name"] for row in rows] == targets
    assert [row["target"] for row in rows] == [
        "meshchat x1 plaintext peers",
        "meshchat x1 CURVE",
        "meshchat x1 CURVE + TLS clients",
    ]
    assert document["baseline"] == "meshchat-plain"
    for row in rows:
        assert row["lost"] == 0 and row["duplicated"] == 0, row
        assert row["errors"] == {}, row
        assert row["delivery_latency_ms"]["p99"] is not None
        assert row["delivery_p99_vs_baseline"] is not None
        sweep = json.loads(Path(row["sweep"]).read_text())
        assert [step["rate"] for step in sweep["steps"]] == [40]
        assert "highest_sustainable_rate" in row
        assert row["target"] in finished.stdout
    assert rows[0]["delivery_p99_vs_baseline"] == 1.0
    fanout = document["fanout"]
    assert fanout["workload"]["messages"] == 300 and fanout["workload"]["members"] == 5
    assert [row["name"] for row in fanout["rows"]] == targets
    for row in fanout["rows"]:
        assert row["missing"] == row["duplicates"] == row["out_of_order"] == 0, row
        assert row["deliveries_per_s"] > 0 and row["deliveries_vs_baseline"] is not None
    assert fanout["rows"][0]["deliveries_vs_baseline"] == 1.0
    assert "meshchat perf fanout" in finished.stdout
    assert (tmp_path / "compare-sweep.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_payloads_carry_sender_sequence_and_due_time() -> None:
    text = encode_payload(7, 42, 123456789, 64)
    assert len(text) == 64
    assert decode_payload(text) == (7, 42, 123456789)
    with pytest.raises(ValueError):
        decode_payload("not ours")


def test_nonsense_workloads_are_refused() -> None:
    with pytest.raises(ValueError):
        Workload(clients=2, rooms=3)
    with pytest.raises(ValueError):
        Workload(body_size=10)


def test_idle_reports_a_node_s_memory_per_idle_connection(tmp_path: Path) -> None:
    """`perf idle` opens idle connections to a node of its own and reads the node's RSS
    before and after; the figure is measured, not judged here."""
    command = [*meshchat_command(), "perf", "idle", "--connections", "50", "--join"]
    finished = subprocess.run(
        [*command, "--out", str(tmp_path)],
        check=False,
        capture_output=True,
        text=True,
        timeout=COMPARE_TIMEOUT_S,
    )
    assert finished.returncode == 0, finished.stderr[-2000:]
    result = json.loads((tmp_path / "idle.json").read_text())
    assert result["connections"] == 50 and result["joined_a_room"] is True
    assert result["rss_after_kib"] > 0 and result["rss_before_kib"] > 0
    assert isinstance(result["bytes_per_connection"], int)
    assert "50 idle connections, each in a room" in finished.stdout


def test_rebuild_times_a_room_s_read_model_and_checks_it_against_a_shuffled_one(
    tmp_path: Path,
) -> None:
    command = [*meshchat_command(), "perf", "rebuild", "--events", "3000", "--out", str(tmp_path)]
    finished = subprocess.run(
        command, check=False, capture_output=True, text=True, timeout=COMPARE_TIMEOUT_S
    )
    assert finished.returncode == 0, finished.stderr[-2000:]
    result = json.loads((tmp_path / "rebuild.json").read_text())
    assert result["events"] == 3000 and result["relations_not_held"] == 0
    assert result["rebuild_s"] > 0 and result["events_per_s"] > 0
    assert "3,000 events: rebuilt in" in finished.stdout and "identical" in finished.stdout
