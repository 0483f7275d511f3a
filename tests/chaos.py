"""A chaos run with a checker, in the spirit of Jepsen, on real node processes.

Clients send at a steady rate while a nemesis kills (-9), restarts, pauses (SIGSTOP) and
resumes random nodes; then everything heals, the mesh settles, and the checker reads every
room through every node and counts: acknowledged sends lost, messages stored twice, a
sender's messages out of order, nodes whose copies differ.

    .venv/bin/python -m tests.chaos --duration 300     # a long run; CI runs a short one
"""

import argparse
import asyncio
import itertools
import json
import random
import signal
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from mesh.client.chat_client import ChatClient
from mesh.client.connection import NodeError
from tests.chat_helpers import client_for
from tests.processes import Cluster, NodeProcess

ROOMS = ("chaos-a", "chaos-b", "chaos-c")
# How often the checker looks whether the copies have settled (within its timeout).
SETTLE_POLL_S = 0.5


@dataclass
class ChaosReport:
    sent: int = 0
    acknowledged: int = 0
    failed: int = 0
    faults: list[str] = field(default_factory=list)
    lost: int = 0
    duplicated: int = 0
    out_of_order: int = 0
    differing_nodes: int = 0
    stored: int = 0

    @property
    def sound(self) -> bool:
        return not (self.lost or self.duplicated or self.out_of_order or self.differing_nodes)


def start_mesh(cluster: Cluster, size: int, *, http: bool = False) -> list[NodeProcess]:
    first = cluster.add("n1", http=http).start()
    nodes = [first] + [
        cluster.add(f"n{i}", seeds=[first.peer_address], http=http).start()
        for i in range(2, size + 1)
    ]
    for observer in nodes:
        for member in nodes:
            if member is not observer:
                cluster.wait_sees(observer.node_id, member.node_id, "alive", timeout_s=15.0)
    return nodes


async def _sender(
    client: ChatClient,
    name: str,
    *,
    rate: float,
    stop: asyncio.Event,
    report: ChaosReport,
    acked: dict[tuple[str, str], tuple[int, str]],
) -> None:
    sequence = 0
    while not stop.is_set():
        sequence += 1
        client_msg_id = f"{name}-{sequence}"
        report.sent += 1
        try:
            async with asyncio.timeout(10.0):
                sent = await client.send(ROOMS[sequence % len(ROOMS)], f"{sequence}", client_msg_id)
        except (NodeError, TimeoutError):
            report.failed += 1
        else:
            report.acknowledged += 1
            acked[(name, client_msg_id)] = (sequence, sent.id)
        await asyncio.sleep(1.0 / rate)


async def _nemesis(
    nodes: list[NodeProcess], rng: random.Random, stop: asyncio.Event, report: ChaosReport
) -> None:
    """One fault at a time, so that W=2 copies stay possible and sends keep flowing."""
    while not stop.is_set():
        await asyncio.sleep(rng.uniform(0.5, 1.5))
        victim = rng.choice(nodes)
        if rng.random() < 0.5:
            report.faults.append(f"kill -9 {victim.node_id}")
            victim.signal(signal.SIGKILL)
            victim.process.wait(timeout=5)  # type: ignore[union-attr]
            await asyncio.sleep(rng.uniform(0.5, 2.5))
            victim.start()
        else:
            report.faults.append(f"pause {victim.node_id}")
            victim.signal(signal.SIGSTOP)
            await asyncio.sleep(rng.uniform(0.5, 2.5))
            victim.signal(signal.SIGCONT)


async def _room_through(node: NodeProcess, room: str) -> list[tuple[str, str, str]]:
    """(id, sender, client message id) of the room, read through one node (R=1: with a
    mesh of N nodes that is the node's own copy)."""
    async with client_for(node, user="checker") as reader:
        pages = []
        before = None
        while True:
            page = await reader.history(room, before=before, limit=200)
            pages.append(page.messages)
            if page.cursor is None:
                break
            before = page.cursor
    return [(m.id, m.sender, m.client_msg_id) for page in reversed(pages) for m in page]


def _copies(nodes: list[NodeProcess]) -> dict[str, dict[str, list[tuple[str, str, str]]]]:
    return {
        node.node_id: {room: asyncio.run(_room_through(node, room)) for room in ROOMS}
        for node in nodes
    }


Copies = dict[str, dict[str, list[tuple[str, str, str]]]]  # node -> room -> its messages


def settled_copies(nodes: list[NodeProcess], timeout_s: float) -> Copies:
    """Every node's copy of every room once they are identical, every node sees every
    other alive and no hints are held; past the timeout, the copies as they are."""

    def settled() -> Copies | None:
        for node in nodes:
            status = node.status()
            if status is None or any(m.hints for m in status.members):
                return None
            if not all(m.state == "alive" for m in status.members):
                return None
        try:
            copies = _copies(nodes)
        except (OSError, NodeError, TimeoutError):
            return None
        first = next(iter(copies.values()))
        return copies if all(copy == first for copy in copies.values()) else None

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if (copies := settled()) is not None:
            return copies
        time.sleep(SETTLE_POLL_S)
    return _copies(nodes)


def run_chaos(
    root: Path, *, duration_s: float, senders: int, rate: float, seed: int
) -> ChaosReport:
    report = ChaosReport()
    acked: dict[tuple[str, str], tuple[int, str]] = {}
    cluster = Cluster(root)
    try:
        nodes = start_mesh(cluster, 3)

        async def load() -> None:
            stop = asyncio.Event()
            clients = [client_for(*nodes, user=f"s{i}") for i in range(senders)]
            for client in clients:
                await client.connect()
            tasks = [
                asyncio.create_task(
                    _sender(c, f"s{i}", rate=rate, stop=stop, report=report, acked=acked)
                )
                for i, c in enumerate(clients)
            ]
            tasks.append(asyncio.create_task(_nemesis(nodes, random.Random(seed), stop, report)))
            await asyncio.sleep(duration_s)
            stop.set()
            await asyncio.gather(*tasks)
            for client in clients:
                await client.close()

        asyncio.run(load())
        for node in nodes:  # heal: everything running and resumed
            if node.process is None or node.process.poll() is not None:
                node.start()
            node.signal(signal.SIGCONT)

        copies = settled_copies(nodes, timeout_s=90.0)
        _check(copies, acked, report)
    finally:
        cluster.close()
    return report


def _check(
    copies: dict[str, dict[str, list[tuple[str, str, str]]]],
    acked: dict[tuple[str, str], tuple[int, str]],
    report: ChaosReport,
) -> None:
    reference = next(iter(copies.values()))
    report.differing_nodes = sum(copy != reference for copy in copies.values())
    for copy in copies.values():
        stored = [row for room in copy.values() for row in room]
        keys = Counter((sender, cmid) for _, sender, cmid in stored)
        report.duplicated = max(report.duplicated, sum(n - 1 for n in keys.values() if n > 1))
        report.lost = max(report.lost, sum(1 for key in acked if key not in keys))
        report.stored = max(report.stored, len(keys))
    # A sender sends one message at a time: its acknowledged ones keep their order by id.
    by_sender: dict[str, list[tuple[int, str]]] = {}
    for (sender, _), (sequence, message_id) in acked.items():
        by_sender.setdefault(sender, []).append((sequence, message_id))
    for rows in by_sender.values():
        rows.sort()
        report.out_of_order += sum(a[1] > b[1] for a, b in itertools.pairwise(rows))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="a chaos run with a checker")
    parser.add_argument("--duration", type=float, default=300.0, help="seconds of faults")
    parser.add_argument("--senders", type=int, default=4)
    parser.add_argument("--rate", type=float, default=20.0, help="sends/s per sender")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="meshchat-chaos-") as root:
        report = run_chaos(
            Path(root),
            duration_s=args.duration,
            senders=args.senders,
            rate=args.rate,
            seed=args.seed,
        )
    summary = {k: v for k, v in report.__dict__.items() if k != "faults"}
    summary["faults"] = len(report.faults)
    summary["sound"] = report.sound
    sys.stdout.write(json.dumps(summary) + "\n")
    return 0 if report.sound else 1


if __name__ == "__main__":
    sys.exit(main())
