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
import json
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.chaos import ChaosReport, _check, settled_copies
from tests.processes import NODE_START_S, Cluster, NodeProcess, wait_for
from tests.rolling_restart import WHOLE_AGAIN_S, _whole

REPOSITORY = Path(__file__).resolve().parent.parent
# The last commit before protocol 1.6 (room state): its nodes and clients speak 1.5.
OLD_COMMIT = "afa2321439f929ff27ddec6bc3f4bcaf63e9a033"
OLD_INSTALL_TIMEOUT_S = 900.0
WRITER = Path(__file__).with_name("writer.py")
WRITER_STOP_S = 30.0


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
    """The old version's `meshchat`, installed once under `cache`; or why it cannot be."""
    known = subprocess.run(
        ["git", "-C", str(REPOSITORY), "cat-file", "-e", f"{OLD_COMMIT}^{{commit}}"],
        capture_output=True,
        check=False,
    )
    if known.returncode != 0:
        return f"commit {OLD_COMMIT[:12]} is not in this checkout's history (a shallow clone?)"
    home = cache / f"meshchat-{OLD_COMMIT[:12]}"
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
        return f"git archive {OLD_COMMIT[:12]} failed"
    subprocess.run([sys.executable, "-m", "venv", str(home / "venv")], check=True)
    installed = subprocess.run(
        [str(home / "venv" / "bin" / "pip"), "install", "-q", str(home / "tree")],
        capture_output=True,
        text=True,
        timeout=OLD_INSTALL_TIMEOUT_S,
        check=False,
    )
    if installed.returncode != 0:
        return f"installing {OLD_COMMIT[:12]} failed: {installed.stderr[-500:]}"
    (home / ".installed").touch()
    return program


@dataclass
class _Writer:
    name: str
    out: Path
    process: subprocess.Popen[bytes]


def _start_writer(  # noqa: PLR0917 - one writer's whole description
    python: Path, name: str, nodes: list[NodeProcess], root: Path, senders: int, rate: float
) -> _Writer:
    out = root / f"{name}.json"
    servers = ",".join(node.client_address for node in nodes)
    command = [str(python), "-I", str(WRITER), "--servers", servers, "--name", name]
    command += ["--senders", str(senders), "--rate", str(rate), "--out", str(out)]
    log = open(root / f"{name}.log", "ab")  # noqa: SIM115 - the child owns it until it exits
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=root)
    log.close()
    wait_for(lambda: out.with_suffix(".ready").exists(), NODE_START_S, lambda: f"{name} ready")
    return _Writer(name, out, process)


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
    writers: list[_Writer], report: UpgradeReport, upgraded_at: float
) -> dict[tuple[str, str], tuple[int, str]]:
    """Stop the writers and count what they did; returns every acknowledged send."""
    acked: dict[tuple[str, str], tuple[int, str]] = {}
    acked_at: dict[str, float] = {}
    read_by_old: set[str] = set()
    old_read_at = 0.0
    for writer in writers:
        writer.process.send_signal(signal.SIGTERM)
        writer.process.wait(timeout=WRITER_STOP_S)
        result = json.loads(writer.out.read_text())
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
    writers: list[_Writer] = []
    try:
        nodes = _start_old_mesh(cluster, old)
        old_python = old.with_name("python")
        for python, name in ((old_python, "old"), (Path(sys.executable), "new")):
            writers.append(_start_writer(python, name, nodes, root, senders, rate))
        _upgrade_each(nodes, report, steady_s)
        upgraded_at = time.time()
        time.sleep(steady_s)  # and through the new mesh
        acked = _collect(writers, report, upgraded_at)
        copies = settled_copies(nodes, timeout_s=WHOLE_AGAIN_S)
        _check(copies, acked, report)
    finally:
        for writer in writers:
            if writer.process.poll() is None:
                writer.process.kill()
                writer.process.wait()
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
