"""How fast hints are stored and handed back, and how long a returning node takes to hold
its rooms again.

    python -m perf.handoff --messages 5000 --rooms 4

Starts a local mesh of three nodes (N=3, W=2), kills -9 the last one, sends the messages
through the others as fast as acknowledgements come (every one leaves a hint for the dead
node), restarts it, and records:
- stored: acknowledged sends (each also a hint kept) per second while the node is down;
- drained: from the restart until no node holds a hint for it, and hints per second;
- converged: from the restart until the returned node's own copy of every room holds every
  acknowledged message (read through it with R=1, which is its own copy).
"""

import argparse
import asyncio
import contextlib
import json
import sys
import time

from mesh.client.chat_client import ChatClient, ClientSettings
from mesh.client.connection import parse_servers
from mesh.client.status import fetch_status
from perf.targets import LocalMesh

PIPELINE = 256
POLL_S = 0.05
TIMEOUT_S = 300.0


async def _send_all(endpoints: list[str], rooms: int, messages: int) -> tuple[list[str], float]:
    settings = ClientSettings(client_name="meshchat-perf", request_timeout_s=30.0)
    client = ChatClient(parse_servers(",".join(endpoints)), token="perf", settings=settings)
    ids: list[str] = []
    async with client:
        started = time.monotonic()
        for start in range(0, messages, PIPELINE):
            batch = [
                client.send(f"room-{n % rooms}", f"message {n}")
                for n in range(start, min(messages, start + PIPELINE))
            ]
            ids += [sent.id for sent in await asyncio.gather(*batch)]
        return ids, time.monotonic() - started


async def _hints_for(endpoints: list[str], owner: str) -> int:
    total = 0
    for endpoint in endpoints:
        reply = await fetch_status(parse_servers(endpoint), "perf", 2.0)
        total += sum(m.hints for m in reply.members if m.id == owner)
    return total


async def _held_by(endpoint: str, rooms: int) -> set[str]:
    settings = ClientSettings(client_name="meshchat-perf", request_timeout_s=10.0)
    client = ChatClient(parse_servers(endpoint), token="perf-reader", settings=settings)
    held: set[str] = set()
    async with client:
        for room in range(rooms):
            before = None
            while True:
                page = await client.history(f"room-{room}", before=before, limit=200)
                held |= {message.id for message in page.messages}
                if page.cursor is None:
                    break
                before = page.cursor
    return held


async def measure(mesh: LocalMesh, messages: int, rooms: int) -> dict[str, float]:
    endpoints = mesh.endpoints
    victim = mesh.kill_node()
    live = endpoints[:-1]
    # Wait until the survivors see it dead: writes then go to hints.
    deadline = time.monotonic() + TIMEOUT_S
    while True:
        reply = await fetch_status(parse_servers(live[0]), "perf", 2.0)
        if any(m.id == victim and m.state == "dead" for m in reply.members):
            break
        if time.monotonic() > deadline:
            raise TimeoutError(f"{victim} never seen dead")
        await asyncio.sleep(POLL_S)
    ids, send_s = await _send_all(live, rooms, messages)
    # Status refreshes its hint counts once a second: wait for every hint to show.
    held = await _hints_for(live, victim)
    while held < len(ids) and time.monotonic() < deadline:
        await asyncio.sleep(POLL_S)
        held = await _hints_for(live, victim)
    mesh.restart_node()
    restarted = time.monotonic()
    drained_s = converged_s = None
    while time.monotonic() - restarted < TIMEOUT_S:
        if drained_s is None and await _hints_for(live, victim) == 0:
            drained_s = time.monotonic() - restarted
        if converged_s is None:
            # Until the node serves again, reading through it fails: keep polling.
            with contextlib.suppress(OSError, TimeoutError, ConnectionError):
                if await _held_by(endpoints[-1], rooms) >= set(ids):
                    converged_s = time.monotonic() - restarted
        if drained_s is not None and converged_s is not None:
            break
        await asyncio.sleep(POLL_S)
    if drained_s is None or converged_s is None:
        raise TimeoutError("hints did not drain or the node did not converge")
    return {
        "messages": messages,
        "hints_held": held,
        "stored_per_s": round(messages / send_s),
        "drained_s": round(drained_s, 2),
        "replayed_per_s": round(held / drained_s) if drained_s else float("inf"),
        "converged_s": round(converged_s, 2),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--rooms", type=int, default=4)
    args = parser.parse_args(argv)
    mesh = LocalMesh(3)
    mesh.start()
    try:
        result = asyncio.run(measure(mesh, args.messages, args.rooms))
    finally:
        mesh.stop()
    sys.stdout.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
