"""`meshchat drain` on a node that clients send through: it takes no new sessions, its
clients go to the other node spread over the drain's window, no send fails and nothing
is lost or doubled; its readiness turns 503 while its liveness stays 200."""

import asyncio
import dataclasses
import sys
import time

import httpx
import pytest

from mesh.client.chat_client import ChatClient
from mesh.client.connection import parse_servers
from tests.chaos import ChaosReport, _sender
from tests.chat_helpers import TEST_SETTINGS, client_for, wait_serving
from tests.processes import Cluster, run_async, run_cli

pytestmark = pytest.mark.processes

CLIENTS = 20
OVER_S = 1.0


async def _moved_at(client: ChatClient, to: str, began: float, timeout_s: float) -> float:
    """Seconds from `began` until the client is connected to node `to`."""
    async with asyncio.timeout(timeout_s):
        while client.node != to:
            await asyncio.sleep(0.005)
    return time.monotonic() - began


async def _acknowledged_past(report: ChaosReport, count: int, timeout_s: float = 20.0) -> None:
    async with asyncio.timeout(timeout_s):
        while report.acknowledged < count:
            await asyncio.sleep(0.01)


def test_a_drained_node_hands_its_clients_over_spread_and_loses_nothing(
    cluster: Cluster,
) -> None:
    n1 = cluster.add("n1", http=True).start()
    n2 = cluster.add("n2", seeds=[n1.peer_address]).start()
    run_async(wait_serving(n1, n2))
    assert httpx.get(f"{n1.http_url}/v1/ready").status_code == 200
    report, acked = ChaosReport(), dict[tuple[str, str], tuple[int, str]]()

    async def scenario() -> list[float]:
        # No wait of their own before reconnecting: the spread measured is the drain's.
        settings = dataclasses.replace(TEST_SETTINGS, reconnect_spread_s=0.0)
        servers = parse_servers(f"{n1.client_address},{n2.client_address}")
        clients = [ChatClient(servers, token=f"u{i}", settings=settings) for i in range(CLIENTS)]
        for client in clients:
            await client.connect()
        assert {client.node for client in clients} == {"n1"}
        stop = asyncio.Event()
        sending = [
            asyncio.create_task(
                _sender(c, f"u{i}", rate=10.0, stop=stop, report=report, acked=acked)
            )
            for i, c in enumerate(clients)
        ]
        await _acknowledged_past(report, CLIENTS)  # sends flow through n1 before the drain
        began = time.monotonic()
        moves = [asyncio.create_task(_moved_at(c, "n2", began, 20.0)) for c in clients]
        drained = await asyncio.to_thread(
            run_cli, "drain", "--server", f"127.0.0.1:{n1.http_port}", "--over", str(OVER_S)
        )
        assert drained.returncode == 0, drained.stderr
        assert f"n1: {CLIENTS} sessions handed to other nodes" in drained.stdout, drained.stdout
        arrivals = await asyncio.gather(*moves)
        await _acknowledged_past(report, report.acknowledged + CLIENTS)  # and through n2
        stop.set()
        await asyncio.gather(*sending)
        for client in clients:
            await client.close()
        return arrivals

    arrivals = run_async(scenario(), timeout_s=90.0)
    sys.stdout.write(f"drain: arrivals at n2 {sorted(round(a, 3) for a in arrivals)}\n")
    # Spread over the window by the node (the clients add no random wait of their own).
    assert max(arrivals) - min(arrivals) >= OVER_S / 2, arrivals
    assert report.failed == 0 and report.acknowledged > CLIENTS * 5, report

    ready = httpx.get(f"{n1.http_url}/v1/ready")
    assert ready.status_code == 503 and "draining" in ready.json()["reason"]
    assert httpx.get(f"{n1.http_url}/v1/health").status_code == 200
    refused = run_cli("status", "--server", n1.client_address)
    assert refused.returncode != 0 and "draining" in refused.stderr, refused.stderr

    async def stored() -> list[tuple[str, str]]:
        async with client_for(n2, user="checker") as reader:
            rows = []
            for room in ("chaos-a", "chaos-b", "chaos-c"):
                before = None
                while True:
                    page = await reader.history(room, before=before, limit=200)
                    rows += [(m.sender, m.client_msg_id) for m in page.messages]
                    if page.cursor is None:
                        break
                    before = page.cursor
            return rows

    rows = run_async(stored())
    assert len(rows) == len(set(rows)), "a message stored twice"
    assert set(acked) <= set(rows), "an acknowledged send lost"
