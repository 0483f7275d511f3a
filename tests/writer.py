"""A writer process for the tests across hosts and across versions: senders that each send
one message at a time, with failover, until SIGTERM; then what each of them saw.

It uses only the client library's long-standing names (ChatClient, ClientSettings,
parse_servers, NodeError) and nothing else of this repository, so the same file runs
under an older meshchat's interpreter as an old client (`python -I`, so that the
interpreter finds its own installed meshchat, not this checkout's).

    python -I tests/writer.py --servers A:7100,B:7100 --name w --senders 3 --rate 10 --out F

F gets JSON: sent, acknowledged, failed, every acknowledged send as [sender, client msg
id, sequence, message id, wall time], and `read`: every (sender, client msg id) the
writer's own library read back from ROOMS through its first server at the end, and
`read_at`, the wall time that reading began.
"""

import argparse
import asyncio
import json
import signal
import time
from pathlib import Path
from typing import Any

from mesh.client.chat_client import ChatClient, ClientSettings
from mesh.client.connection import NodeError, parse_servers

ROOMS = ("chaos-a", "chaos-b", "chaos-c")  # as tests/chaos.py's checker reads them
SEND_TIMEOUT_S = 15.0
HISTORY_PAGE = 200
# Quick to notice a dead node, patient enough for a restart (tests/chat_helpers.py's).
SETTINGS = ClientSettings(
    client_name="meshchat-test-writer",
    request_timeout_s=20.0,
    keepalive_interval_s=0.5,
    keepalive_timeout_s=1.0,
    backoff_max_s=0.5,
)


async def _send_until(
    client: ChatClient, name: str, rate: float, stop: asyncio.Event, out: dict[str, Any]
) -> None:
    sequence = 0
    while not stop.is_set():
        sequence += 1
        client_msg_id = f"{name}-{sequence}"
        out["sent"] += 1
        try:
            sent = await asyncio.wait_for(
                client.send(ROOMS[sequence % len(ROOMS)], f"{sequence}", client_msg_id),
                SEND_TIMEOUT_S,
            )
        except (TimeoutError, NodeError):
            out["failed"] += 1
        else:
            out["acknowledged"] += 1
            out["acked"].append([name, client_msg_id, sequence, sent.id, time.time()])
        await asyncio.sleep(1.0 / rate)


async def _read_back(client: ChatClient) -> list[list[str]]:
    rows = []
    for room in ROOMS:
        before = None
        while True:
            page = await client.history(room, before=before, limit=HISTORY_PAGE)
            rows += [[m.sender, m.client_msg_id] for m in page.messages]
            if page.cursor is None:
                break
            before = page.cursor
    return rows


async def write(
    servers: list[tuple[str, int]], name: str, senders: int, rate: float, out_path: Path
) -> None:
    out: dict[str, Any] = {"sent": 0, "acknowledged": 0, "failed": 0, "acked": []}
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    clients = []
    for i in range(senders):  # each prefers another node, so writes go through several
        turn = i % len(servers)
        preferred = servers[turn:] + servers[:turn]
        clients.append(ChatClient(preferred, token=f"{name}-{i}", settings=SETTINGS))
    for client in clients:
        await client.connect()
    out_path.with_suffix(".ready").touch()
    await asyncio.gather(
        *(_send_until(client, f"{name}-{i}", rate, stop, out) for i, client in enumerate(clients))
    )
    out["read_at"] = time.time()  # what was acknowledged before this, anywhere, is read
    out["read"] = await _read_back(clients[0])
    for client in clients:
        await client.close()
    out_path.write_text(json.dumps(out))


def main() -> None:
    parser = argparse.ArgumentParser(description="senders with failover until SIGTERM")
    parser.add_argument("--servers", required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--senders", type=int, default=3)
    parser.add_argument("--rate", type=float, default=10.0, help="sends/s per sender")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    asyncio.run(write(parse_servers(args.servers), args.name, args.senders, args.rate, args.out))


if __name__ == "__main__":
    main()
