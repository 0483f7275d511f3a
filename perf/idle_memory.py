"""`meshchat perf idle`: what an idle client connection costs a node in memory.

One local node; a warm-up batch of connections first (so the allocator's arenas and the
node's caches are already grown), then many more, each welcomed (and with `--join`, in a
room) and then quiet. The node's resident set grows by the cost of those connections:
(RSS after - RSS before) / connections, read from /proc after the node has settled.
"""

import asyncio
import contextlib
import json
import time
from pathlib import Path
from typing import Any

from rich.console import Console

from mesh.client.connection import NodeConnection
from mesh.wire.protocol import Join, Joined
from perf.targets import LOOPBACK, LocalMesh

WARMUP_CONNECTIONS = 200
ROOMS = 100  # joined round robin with --join
SETTLE_S = 2.0  # after the last connection, before RSS is read
OPEN_AT_ONCE = 100  # connections opened concurrently


def resident_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for process {pid}")


async def _open(port: int, first: int, count: int, join: bool) -> list[NodeConnection]:
    connections: list[NodeConnection] = []

    async def one(number: int) -> None:
        connection = await NodeConnection.open(LOOPBACK, port, token=f"idle{number}")
        connections.append(connection)
        if join:
            room = f"idle-{number % ROOMS}"
            reply = await connection.request(lambda i: Join(request_id=i, room=room))
            assert isinstance(reply, Joined), reply

    for start in range(first, first + count, OPEN_AT_ONCE):
        batch = range(start, min(first + count, start + OPEN_AT_ONCE))
        await asyncio.gather(*(one(number) for number in batch))
    return connections


async def _measure(mesh: LocalMesh, pid: int, connections: int, join: bool) -> dict[str, Any]:
    port = mesh.nodes[0].client_port
    opened = await _open(port, 0, WARMUP_CONNECTIONS, join)
    try:
        await asyncio.sleep(SETTLE_S)
        before_kib = resident_kib(pid)
        opened += await _open(port, WARMUP_CONNECTIONS, connections, join)
        await asyncio.sleep(SETTLE_S)
        after_kib = resident_kib(pid)
    finally:
        for connection in opened:
            with contextlib.suppress(OSError):
                await connection.close()
    return {
        "connections": connections,
        "joined_a_room": join,
        "rss_before_kib": before_kib,
        "rss_after_kib": after_kib,
        "bytes_per_connection": round((after_kib - before_kib) * 1024 / connections),
    }


def run_idle(connections: int, *, join: bool, out_dir: Path, console: Console) -> dict[str, Any]:
    mesh = LocalMesh(1)
    mesh.start()
    try:
        (pid,) = mesh.pids()
        console.print(f"opening {WARMUP_CONNECTIONS} + {connections} idle connections")
        started = time.monotonic()
        result = asyncio.run(_measure(mesh, pid, connections, join))
        result["seconds"] = round(time.monotonic() - started, 1)
    finally:
        mesh.stop()
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "idle.json").write_text(json.dumps(result, indent=2))
    return result


def idle_line(result: dict[str, Any]) -> str:
    joined = ", each in a room" if result["joined_a_room"] else ""
    return (
        f"{result['connections']:,} idle connections{joined}: node RSS "
        f"{result['rss_before_kib'] / 1024:.1f} -> {result['rss_after_kib'] / 1024:.1f} MiB, "
        f"{result['bytes_per_connection'] / 1024:.1f} KiB per connection"
    )
