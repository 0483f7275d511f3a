"""Five nodes on five hosts joined by real links, cut and healed under load, checked.

The hosts are network namespaces (tests/netns.py): n1 and n2 on switch a, n3, n4 and n5
on switch b, a client host on each switch and an operator's host on b. Writers on both
client hosts send through several nodes with failover while the operator:

- cuts the trunk between the switches: a minority {n1, n2} and a majority {n3, n4, n5},
  each side still taking writes from its own clients, then joins it again;
- cuts n4's own link, so that it hears nobody and nobody hears it, then joins it;
- kills n2 (-9) and starts it again.

After each heal the operator times how long until every node sees every other alive
with no hints held; after the last, until every copy of every room is identical. The
chaos checker (tests/chaos.py) then counts what was lost, doubled or reordered.

    sudo .venv/bin/python -m tests.multi_host          # prints the figures as JSON

It runs in three kinds of process: this one makes the network and runs the operator
(`drive`) on its host, which starts the nodes and a writer process (tests/writer.py) per
client host.
"""

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.chaos import ChaosReport, _check, settled_copies
from tests.netns import Network
from tests.processes import OWN_HOST_PORTS, Cluster, NodeProcess, wait_for
from tests.rolling_restart import WHOLE_AGAIN_S, _whole
from tests.writer_process import WriterPlan, WriterProcess

NODES_ON = {"n1": "a", "n2": "a", "n3": "b", "n4": "b", "n5": "b"}
WRITER_HOSTS = {"clients-a": "a", "clients-b": "b"}
OPERATOR_HOST = "operator"
DRIVE_TIMEOUT_S = 300.0


@dataclass
class MultiHostReport(ChaosReport):
    whole_after_s: dict[str, float] = field(default_factory=dict)  # heal -> mesh whole again
    converged_s: float = 0.0  # the last heal -> every copy identical, no hints

    def summary(self) -> dict[str, object]:
        counts = {k: v for k, v in self.__dict__.items() if k not in ("faults", "whole_after_s")}
        return {
            **counts,
            "faults": self.faults,
            "whole_after_s": {k: round(v, 2) for k, v in self.whole_after_s.items()},
            "converged_s": round(self.converged_s, 2),
            "sound": self.sound,
        }


def make_network(network: Network) -> None:
    network.create()
    for host, switch in {**NODES_ON, **WRITER_HOSTS, OPERATOR_HOST: "b"}.items():
        network.add_host(host, switch)


def run_multi_host(root: Path, plan: argparse.Namespace) -> MultiHostReport:
    """Make the network, run the operator on its host, remove the network."""
    network = Network(f"mc{os.getpid()}")
    try:
        make_network(network)  # inside: what a failure halfway made is removed too
        drive = [sys.executable, "-m", "tests.multi_host", *_plan_options(plan)]
        drive += ["drive", "--root", str(root), "--network", network.to_json()]
        done = subprocess.run(
            [*network.launcher(OPERATOR_HOST), *drive],
            capture_output=True,
            text=True,
            timeout=DRIVE_TIMEOUT_S,
            cwd=Path(__file__).parent.parent,
            check=False,
        )
    finally:
        network.close()
    if done.returncode != 0:
        raise AssertionError(f"the operator failed ({done.returncode}):\n{done.stderr[-4000:]}")
    summary = json.loads(done.stdout.splitlines()[-1])
    report = MultiHostReport()
    for key, value in summary.items():
        if key != "sound":
            setattr(report, key, value)
    return report


def plan(*, hold_s: float, senders: int, rate: float, latency_s: float) -> argparse.Namespace:
    return argparse.Namespace(hold=hold_s, senders=senders, rate=rate, latency=latency_s)


def _plan_options(plan: argparse.Namespace) -> list[str]:
    return [f"--{key}={getattr(plan, key)}" for key in ("hold", "senders", "rate", "latency")]


# -- the writers: one process per client host ---------------------------------------

Acked = dict[tuple[str, str], tuple[int, str]]  # (sender, client msg id) -> (sequence, id)


def _start_writer(
    network: Network, host: str, nodes: list[NodeProcess], root: Path, plan: WriterPlan
) -> WriterProcess:
    # Its own side's nodes first: where a client of that site would connect.
    near = [n for n in nodes if NODES_ON[n.node_id] == network.switches[host]]
    servers = ",".join(n.client_address for n in near + [n for n in nodes if n not in near])
    launcher = network.launcher(host)
    return WriterProcess.start(host, servers, plan, root, python=sys.executable, launcher=launcher)


def _stop_writer(writer: WriterProcess, report: ChaosReport, acked: Acked) -> None:
    result = writer.stop()
    report.sent += result["sent"]
    report.acknowledged += result["acknowledged"]
    report.failed += result["failed"]
    for sender, cmid, sequence, message_id, _ in result["acked"]:
        acked[(sender, cmid)] = (sequence, message_id)


# -- the operator -------------------------------------------------------------------


def _start_nodes(
    cluster: Cluster, network: Network, latency_s: float, proxies: list[subprocess.Popen[bytes]]
) -> list[NodeProcess]:
    """Each node on its host; with latency, behind a delaying proxy on its host's address."""
    nodes: list[NodeProcess] = []
    for name in NODES_ON:
        seeds = [n.peer_address for n in nodes if n.node_id in ("n1", "n3")]
        address, launcher = network.hosts[name], network.launcher(name)
        options = []
        if latency_s > 0:
            options = ["--bind", "127.0.0.1"]
            proxies.append(_start_proxy(launcher, address, latency_s, cluster.root / name))
        node = cluster.add(name, seeds=seeds, options=options, host=(address, launcher))
        nodes.append(node.start())
    _wait_whole(nodes, "start", MultiHostReport())
    return nodes


def _start_proxy(
    launcher: list[str], address: str, latency_s: float, log_stem: Path
) -> subprocess.Popen[bytes]:
    routes = [f"{address}:{port}=127.0.0.1:{port}" for port in OWN_HOST_PORTS[:2]]
    command = [sys.executable, "-m", "tests.delay_proxy", "--delay", str(latency_s), *routes]
    log = open(log_stem.with_suffix(".proxy.log"), "ab")  # noqa: SIM115 - the child's
    process = subprocess.Popen([*launcher, *command], stdout=log, stderr=subprocess.STDOUT)
    log.close()
    return process


def _wait_whole(nodes: list[NodeProcess], after: str, report: MultiHostReport) -> None:
    began = time.monotonic()
    wait_for(lambda: _whole(nodes), WHOLE_AGAIN_S, lambda: f"the mesh whole after {after}")
    report.whole_after_s[after] = time.monotonic() - began


def _faults(
    cluster: Cluster,
    network: Network,
    nodes: list[NodeProcess],
    hold_s: float,
    report: MultiHostReport,
) -> None:
    """Each fault is held `hold_s` past the moment the mesh noticed it."""
    report.faults.append("trunk cut: {n1, n2} | {n3, n4, n5}")
    network.cut_trunk()
    cluster.wait_sees("n3", "n1", "dead", timeout_s=WHOLE_AGAIN_S)
    time.sleep(hold_s)  # a partition lasts a while: writes go on at both sides
    network.join_trunk()
    _wait_whole(nodes, "trunk joined", report)

    report.faults.append("n4's link cut")
    network.cut_host("n4")
    cluster.wait_sees("n3", "n4", "dead", timeout_s=WHOLE_AGAIN_S)
    time.sleep(hold_s)
    network.join_host("n4")
    _wait_whole(nodes, "n4's link joined", report)

    report.faults.append("kill -9 n2")
    n2 = cluster.nodes["n2"]
    n2.signal(signal.SIGKILL)
    n2.stop()
    cluster.wait_sees("n3", "n2", "dead", timeout_s=WHOLE_AGAIN_S)
    time.sleep(hold_s)
    n2.start()
    _wait_whole(nodes, "n2 restarted", report)


def drive(root: Path, network: Network, plan: argparse.Namespace) -> MultiHostReport:
    """The operator's part: nodes and writers started, faults made, copies checked."""
    hold_s, senders, rate = plan.hold, plan.senders, plan.rate
    report, acked = MultiHostReport(), Acked()
    cluster = Cluster(root)
    writers: list[WriterProcess] = []
    proxies: list[subprocess.Popen[bytes]] = []
    try:
        nodes = _start_nodes(cluster, network, plan.latency, proxies)
        for host in WRITER_HOSTS:
            writers.append(_start_writer(network, host, nodes, root, WriterPlan(senders, rate)))
        time.sleep(hold_s)  # steady sends before the first fault
        _faults(cluster, network, nodes, hold_s, report)
        time.sleep(hold_s)
        for writer in writers:
            _stop_writer(writer, report, acked)
        began = time.monotonic()
        copies = settled_copies(nodes, timeout_s=WHOLE_AGAIN_S)
        report.converged_s = time.monotonic() - began
        _check(copies, acked, report)
    finally:
        for writer in writers:
            writer.kill()
        cluster.close()
        for proxy in proxies:
            proxy.kill()
            proxy.wait()
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="five nodes on five hosts, links cut")
    parser.add_argument("--hold", type=float, default=5.0, help="seconds each fault lasts")
    parser.add_argument("--senders", type=int, default=3, help="senders per client host")
    parser.add_argument("--rate", type=float, default=10.0, help="sends/s per sender")
    parser.add_argument(
        "--latency", type=float, default=0.01, help="seconds each way between hosts (0: none)"
    )
    commands = parser.add_subparsers(dest="command")
    operator = commands.add_parser("drive", help="(on the operator's host)")
    operator.add_argument("--root", type=Path, required=True)
    operator.add_argument("--network", required=True, help="the network as JSON")
    args = parser.parse_args(argv)
    if args.command == "drive":
        network = Network.from_json(args.network)
        report = drive(args.root, network, args)
    else:
        with tempfile.TemporaryDirectory(prefix="meshchat-hosts-") as root:
            report = run_multi_host(Path(root), args)
    sys.stdout.write(json.dumps(report.summary()) + "\n")
    return 0 if report.sound else 1


if __name__ == "__main__":
    sys.exit(main())
