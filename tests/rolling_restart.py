"""A rolling restart under load, as an operator's script does it, with the chaos checker.

Clients send at a steady rate through every node (the client library fails over) while
each node in turn is stopped with SIGTERM and started again; the next waits until every
node sees every other alive and no node holds hints for another, which is the procedure
docs/deploy.md gives. Then the checker reads every room through every node: nothing lost,
nothing doubled, each sender's messages in order, every copy identical. Acknowledgement
latency is reported per phase (steady, and while each node restarts).

    .venv/bin/python -m tests.rolling_restart --nodes 5     # prints the figures as JSON
"""

import argparse
import asyncio
import json
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from mesh.client.chat_client import ChatClient
from mesh.client.connection import NodeError
from tests.chaos import ROOMS, ChaosReport, _check, settled_copies, start_mesh
from tests.chat_helpers import client_for
from tests.processes import Cluster, NodeProcess, run_cli

# How long the whole mesh may take to be whole again after one node restarts.
WHOLE_AGAIN_S = 60.0
SEND_TIMEOUT_S = 15.0


@dataclass
class RollingReport(ChaosReport):
    # phase -> acknowledgement latencies in ms; a phase is "steady" or "restart nX".
    latencies_ms: dict[str, list[float]] = field(default_factory=dict)
    whole_again_s: dict[str, float] = field(default_factory=dict)
    settled_s: float = 0.0  # from the last restart's end until every copy was identical

    def summary(self) -> dict[str, object]:
        return {
            "sent": self.sent,
            "acknowledged": self.acknowledged,
            "failed": self.failed,
            "lost": self.lost,
            "duplicated": self.duplicated,
            "out_of_order": self.out_of_order,
            "differing_nodes": self.differing_nodes,
            "p99_ms_by_phase": {
                phase: round(_percentile(values, 0.99), 1)
                for phase, values in self.latencies_ms.items()
            },
            "whole_again_s": {node: round(s, 1) for node, s in self.whole_again_s.items()},
            "settled_s": round(self.settled_s, 1),
        }


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))] if ordered else 0.0


@dataclass
class _Load:
    """What the senders share: the report, the phase now, what was acknowledged."""

    report: RollingReport
    rate: float
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    phase: str = "steady"
    acked: dict[tuple[str, str], tuple[int, str]] = field(default_factory=dict)

    async def send_from(self, client: ChatClient, name: str) -> None:
        report, sequence = self.report, 0
        while not self.stop.is_set():
            sequence += 1
            client_msg_id = f"{name}-{sequence}"
            report.sent += 1
            started, during = time.perf_counter(), self.phase
            room = ROOMS[sequence % len(ROOMS)]
            try:
                async with asyncio.timeout(SEND_TIMEOUT_S):
                    sent = await client.send(room, f"{sequence}", client_msg_id)
            except (NodeError, TimeoutError):
                report.failed += 1
            else:
                report.acknowledged += 1
                self.acked[(name, client_msg_id)] = (sequence, sent.id)
                latency_ms = (time.perf_counter() - started) * 1000
                report.latencies_ms.setdefault(during, []).append(latency_ms)
            await asyncio.sleep(1.0 / self.rate)


def _whole(nodes: list[NodeProcess]) -> bool:
    """Every node sees every other alive, and none holds hints for another."""
    for node in nodes:
        status = node.status()
        if status is None or len(status.members) < len(nodes):
            return False
        if any(m.state != "alive" or m.hints for m in status.members):
            return False
    return True


def _drain(node: NodeProcess, over_s: float) -> None:
    """`meshchat drain`, as an operator's script runs it before each stop."""
    drained = run_cli("drain", "--server", f"127.0.0.1:{node.http_port}", "--over", str(over_s))
    assert drained.returncode == 0, drained.stderr


async def _restart_each(
    nodes: list[NodeProcess], load: _Load, steady_s: float, drain_s: float | None
) -> None:
    await asyncio.sleep(steady_s)
    for node in nodes:
        load.phase = f"restart {node.node_id}"
        began = time.monotonic()
        if drain_s is not None:
            await asyncio.to_thread(_drain, node, drain_s)
        await asyncio.to_thread(node.stop, 15.0)
        await asyncio.to_thread(node.start)
        while not await asyncio.to_thread(_whole, nodes):
            if time.monotonic() - began > WHOLE_AGAIN_S:
                raise AssertionError(f"the mesh was not whole {WHOLE_AGAIN_S}s after {node}")
            await asyncio.sleep(0.2)
        load.report.whole_again_s[node.node_id] = time.monotonic() - began
        load.report.faults.append(f"restart {node.node_id}")
        load.phase = "steady"
        await asyncio.sleep(steady_s)


def run_rolling_restart(
    root: Path,
    *,
    size: int,
    senders: int,
    rate: float,
    steady_s: float = 2.0,
    drain_s: float | None = None,
) -> RollingReport:
    """`drain_s`: drain each node over so many seconds before it is stopped."""
    report = RollingReport()
    cluster = Cluster(root)
    try:
        nodes = start_mesh(cluster, size, http=drain_s is not None)
        acked: dict[tuple[str, str], tuple[int, str]] = {}

        async def run() -> None:
            load = _Load(report, rate, acked=acked)
            clients = [client_for(*nodes, user=f"s{i}") for i in range(senders)]
            for client in clients:
                await client.connect()
            sending = [
                asyncio.create_task(load.send_from(client, f"s{i}"))
                for i, client in enumerate(clients)
            ]
            try:
                await _restart_each(nodes, load, steady_s, drain_s)
            finally:
                load.stop.set()
                await asyncio.gather(*sending)
                for client in clients:
                    await client.close()

        asyncio.run(run())
        began = time.monotonic()
        copies = settled_copies(nodes, timeout_s=WHOLE_AGAIN_S)
        report.settled_s = time.monotonic() - began
        _check(copies, acked, report)
    finally:
        cluster.close()
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="a rolling restart under load, checked")
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--senders", type=int, default=4)
    parser.add_argument("--rate", type=float, default=20.0, help="sends/s per sender")
    parser.add_argument("--steady", type=float, default=3.0, help="seconds between restarts")
    parser.add_argument("--drain", type=float, metavar="S", help="drain each node first, over S")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="meshchat-rolling-") as root:
        report = run_rolling_restart(
            Path(root),
            size=args.nodes,
            senders=args.senders,
            rate=args.rate,
            steady_s=args.steady,
            drain_s=args.drain,
        )
    sys.stdout.write(json.dumps({**report.summary(), "sound": report.sound}) + "\n")
    return 0 if report.sound and not report.failed else 1


if __name__ == "__main__":
    sys.exit(main())
