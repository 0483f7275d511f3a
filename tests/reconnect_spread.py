"""How spread out the clients of a stopped node arrive at the next one.

Many clients are connected to n1 of a two-node mesh; n1 gets SIGTERM; each client's time
from the stop until it is connected to n2 is recorded. With `reconnect_spread_s` (the
client library's default 0.5 s) they arrive over that window instead of all at once.

    .venv/bin/python -m tests.reconnect_spread --clients 1000 --spread 0.5
"""

import argparse
import asyncio
import json
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from mesh.client.chat_client import ChatClient
from mesh.client.connection import parse_servers
from tests.chaos import start_mesh
from tests.chat_helpers import TEST_SETTINGS
from tests.processes import Cluster, NodeProcess, run_cli

CONNECT_AT_ONCE = 50  # clients connecting together before the stop (a node's accept queue)


async def _arrivals(  # noqa: PLR0917 - the run's whole description
    nodes: list[NodeProcess],
    clients: int,
    spread_s: float,
    keepalive_s: float,
    drain_s: float,
    backoff_max_s: float,
) -> list[float]:
    first, second = nodes
    servers = parse_servers(f"{first.client_address},{second.client_address}")
    settings = replace(
        TEST_SETTINGS,
        reconnect_spread_s=spread_s,
        keepalive_interval_s=keepalive_s,
        keepalive_timeout_s=2 * keepalive_s,
        backoff_max_s=backoff_max_s,
    )
    fleet = [ChatClient(servers, token=f"u{i}", settings=settings) for i in range(clients)]
    for start in range(0, clients, CONNECT_AT_ONCE):
        await asyncio.gather(*(c.connect() for c in fleet[start : start + CONNECT_AT_ONCE]))
    assert all(client.address == first.client_address for client in fleet)
    stopped_at = time.monotonic()
    if drain_s:  # handed over by `meshchat drain` first, as before a restart
        drain = ["drain", "--server", f"127.0.0.1:{first.http_port}", "--over", str(drain_s)]
        drained = asyncio.create_task(asyncio.to_thread(run_cli, *drain, timeout_s=120.0))
    else:
        first.signal(15)  # SIGTERM: n1 leaves and closes its sessions
    arrived: dict[int, float] = {}
    deadline = stopped_at + 60.0
    while len(arrived) < clients and time.monotonic() < deadline:
        for index, client in enumerate(fleet):
            if index not in arrived and client.connected and client.address != first.client_address:
                arrived[index] = time.monotonic() - stopped_at
        await asyncio.sleep(0.005)
    await asyncio.gather(*(client.close() for client in fleet))
    if drain_s:
        assert (await drained).returncode == 0
    return sorted(arrived.values())


def measure(
    root: Path,
    *,
    clients: int,
    spread_s: float,
    keepalive_s: float = 0.5,
    drain_s: float = 0.0,
    backoff_max_s: float = TEST_SETTINGS.backoff_max_s,
) -> dict[str, float]:
    """`keepalive_s`: how often each client pings; with thousands of clients in this one
    process, the tests' 0.5 s would be more pings than its loop can send."""
    cluster = Cluster(root)
    try:
        nodes = start_mesh(cluster, 2, http=bool(drain_s))
        arrivals = asyncio.run(
            _arrivals(nodes, clients, spread_s, keepalive_s, drain_s, backoff_max_s)
        )
    finally:
        cluster.close()

    def at(share: float) -> float:
        return round(arrivals[min(len(arrivals) - 1, int(share * len(arrivals)))], 3)

    return {
        "clients": clients,
        "reconnected": len(arrivals),
        "spread_s": spread_s,
        "first_s": at(0.0),
        "p50_s": at(0.5),
        "p95_s": at(0.95),
        "last_s": at(1.0),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="reconnect times of a stopped node's clients")
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--spread", type=float, default=0.5, help="reconnect_spread_s")
    parser.add_argument("--keepalive", type=float, default=0.5, help="seconds between pings")
    parser.add_argument("--drain", type=float, default=0.0, help="drain n1 over S, not stop it")
    parser.add_argument(
        "--backoff-max",
        type=float,
        default=TEST_SETTINGS.backoff_max_s,
        help="the clients' longest wait between attempts (the library's default: 5)",
    )
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="meshchat-reconnect-") as root:
        figures = measure(
            Path(root),
            clients=args.clients,
            spread_s=args.spread,
            keepalive_s=args.keepalive,
            drain_s=args.drain,
            backoff_max_s=args.backoff_max,
        )
    sys.stdout.write(json.dumps(figures) + "\n")
    return 0 if figures["reconnected"] == args.clients else 1


if __name__ == "__main__":
    sys.exit(main())
