"""A rolling upgrade from the previous protocol version under load, old and new clients
on every node, checked.

The previous version is a pinned commit of this repository's history (OLD_COMMIT, the
last with protocol 1.5), installed into a virtual environment of its own. Three nodes
start on it; a writer process on the old client library and one on today's send through
every node with failover; then each node in turn is stopped and started on today's code
over the same data dir, the next waiting until the mesh is whole. The chaos checker reads
every room through every node; the old writer reads every room back with its own library.

    .venv/bin/python -m tests.mixed_versions        # prints the figures as JSON
"""

import argparse
import fcntl
import json
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.chaos import ChaosReport, _check, settled_copies
from tests.processes import Cluster, NodeProcess, wait_for
from tests.rolling_restart import WHOLE_AGAIN_S, _whole
from tests.writer_process import WriterPlan, WriterProcess

REPOSITORY = Path(__file__).resolve().parent.parent
# The last commit before protocol 1.6 (room state): its nodes and clients speak 1.5.
OLD_COMMIT = "afa2321439f929ff27ddec6bc3f4bcaf63e9a033"
OLD_INSTALL_TIMEOUT_S = 900.0
OLD_FETCH_TIMEOUT_S = 120.0


@dataclass
class UpgradeReport(ChaosReport):
    by_writer: dict[str, dict[str, int]] = field(default_factory=dict)  # sent, acked, failed
    old_acked_after_upgrade: int = 0  # the old client's sends once every node was new
    old_read_missing: int = 0  # acknowledged sends the old client did not read back
    whole_again_s: dict[str, float] = field(default_factory=dict)

    def summary(self) -> dict[str, object]:
        counts = {k: v for k, v in self.__dict__.items() if k != "faults"}
        counts["whole_again_s"] = {k: round(v, 1) for k, v in self.whole_again_s.items()}
        return {**counts, "sound": self.sound}


def old_meshchat(cache: Path) -> Path | str:
    """The old version's `meshchat`, installed once under `cache`; or, when this checkout
    has not the commit, why not. An install that fails raises: that is a failure."""
    if not _have_old_commit() and not _fetch_old_commit():
        return (
            f"commit {OLD_COMMIT[:12]} is not in this checkout's history (a shallow clone?), "
            "and fetching it from the origin remote failed"
        )
    home = cache / f"meshchat-{OLD_COMMIT[:12]}"
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / f"meshchat-{OLD_COMMIT[:12]}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one install at a time, whoever else runs this
        return _install(home)


def _have_old_commit() -> bool:
    known = subprocess.run(
        ["git", "-C", str(REPOSITORY), "cat-file", "-e", f"{OLD_COMMIT}^{{commit}}"],
        capture_output=True,
        check=False,
    )
    return known.returncode == 0


def _fetch_old_commit() -> bool:
    """A shallow clone lacks the old commit: fetch that one commit from where it was cloned."""
    try:
        fetched = subprocess.run(
            [
                "git",
                "-C",
                str(REPOSITORY),
                "fetch",
                "--quiet",
                "--depth",
                "1",
                "origin",
                OLD_COMMIT,
            ],
            capture_output=True,
            timeout=OLD_FETCH_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return False
    return fetched.returncode == 0 and _have_old_commit()


def _install(home: Path) -> Path:
    program = home / "venv" / "bin" / "meshchat"
    if (home / ".installed").exists():
        return program
    subprocess.run(["rm", "-rf", str(home)], check=True)
    (home / "tree").mkdir(parents=True)
    archive = subprocess.Popen(
        ["git", "-C", str(REPOSITORY), "archive", OLD_COMMIT], stdout=subprocess.PIPE
    )
    subprocess.run(["tar", "-x", "-C", str(home / "tree")], stdin=archive.stdout, check=True)
    if archive.wait() != 0:
        raise RuntimeError(f"git archive {OLD_COMMIT[:12]} failed")
    subprocess.run([sys.executable, "-m", "venv", str(home / "venv")], check=True)
    installed = subprocess.run(
        [str(home / "venv" / "bin" / "pip"), "install", "-q", str(home / "tree")],
        capture_output=True,
        text=True,
        timeout=OLD_INSTALL_TIMEOUT_S,
        check=False,
    )
    if installed.returncode != 0:
        raise RuntimeError(f"installing {OLD_COMMIT[:12]} failed: {installed.stderr[-2000:]}")
    (home / ".installed").touch()
    return program


def _upgrade_each(nodes: list[NodeProcess], report: UpgradeReport, steady_s: float) -> None:
    for node in nodes:
        time.sleep(steady_s)  # sends flow through the mixed mesh before each step
        began = time.monotonic()
        node.stop(15.0)
        node.program = None  # today's meshchat, on the same data dir
        node.start()
        after = f"the mesh whole after upgrading {node.node_id}"
        wait_for(lambda: _whole(nodes), WHOLE_AGAIN_S, lambda: after)  # noqa: B023 - at once
        report.whole_again_s[node.node_id] = time.monotonic() - began
        report.faults.append(f"upgrade {node.node_id}")


def _collect(
    writers: list[WriterProcess], report: UpgradeReport, upgraded_at: float
) -> dict[tuple[str, str], tuple[int, str]]:
    """Stop the writers and count what they did; returns every acknowledged send."""
    acked: dict[tuple[str, str], tuple[int, str]] = {}
    acked_at: dict[str, float] = {}
    read_by_old: set[str] = set()
    old_read_at = 0.0
    for writer in writers:
        result = writer.stop()
        report.by_writer[writer.name] = {k: result[k] for k in ("sent", "acknowledged", "failed")}
        report.sent += result["sent"]
        report.acknowledged += result["acknowledged"]
        report.failed += result["failed"]
        for sender, cmid, sequence, message_id, at in result["acked"]:
            acked[(sender, cmid)] = (sequence, message_id)
            acked_at[f"{sender}/{cmid}"] = at
            if writer.name == "old" and at > upgraded_at:
                report.old_acked_after_upgrade += 1
        if writer.name == "old":
            read_by_old = {f"{sender}/{cmid}" for sender, cmid in result["read"]}
            old_read_at = result["read_at"]
    # The other writer may still be finishing its last sends while the old one reads.
    report.old_read_missing = sum(
        key not in read_by_old for key, at in acked_at.items() if at < old_read_at
    )
    return acked


def run_mixed_upgrade(
    root: Path, old: Path, *, senders: int, rate: float, steady_s: float
) -> UpgradeReport:
    report = UpgradeReport()
    cluster = Cluster(root)
    writers: list[WriterProcess] = []
    try:
        nodes = _start_old_mesh(cluster, old)
        old_python = old.with_name("python")
        for python, name in ((old_python, "old"), (Path(sys.executable), "new")):
            servers = ",".join(node.client_address for node in nodes)
            plan = WriterPlan(senders, rate)
            writers.append(WriterProcess.start(name, servers, plan, root, python=str(python)))
        _upgrade_each(nodes, report, steady_s)
        upgraded_at = time.time()
        time.sleep(steady_s)  # and through the new mesh
        acked = _collect(writers, report, upgraded_at)
        copies = settled_copies(nodes, timeout_s=WHOLE_AGAIN_S)
        _check(copies, acked, report)
    finally:
        for writer in writers:
            writer.kill()
        cluster.close()
    return report


def _start_old_mesh(cluster: Cluster, old: Path) -> list[NodeProcess]:
    first = cluster.add("n1")
    first.program = [str(old)]
    first.start()
    nodes = [first]
    for i in (2, 3):
        node = cluster.add(f"n{i}", seeds=[first.peer_address])
        node.program = [str(old)]
        nodes.append(node.start())
    wait_for(lambda: _whole(nodes), WHOLE_AGAIN_S, cluster.describe)
    return nodes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="a rolling upgrade from the previous version")
    parser.add_argument("--senders", type=int, default=3, help="senders per writer")
    parser.add_argument("--rate", type=float, default=10.0, help="sends/s per sender")
    parser.add_argument("--steady", type=float, default=3.0, help="seconds between upgrades")
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()))
    args = parser.parse_args(argv)
    old = old_meshchat(args.cache)
    if isinstance(old, str):
        sys.stderr.write(f"{old}\n")
        return 2
    with tempfile.TemporaryDirectory(prefix="meshchat-upgrade-") as root:
        report = run_mixed_upgrade(
            Path(root), old, senders=args.senders, rate=args.rate, steady_s=args.steady
        )
    sys.stdout.write(json.dumps(report.summary()) + "\n")
    return 0 if report.sound and not report.failed and not report.old_read_missing else 1


if __name__ == "__main__":
    sys.exit(main())
