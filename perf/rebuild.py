"""`meshchat perf rebuild`: how long a room's read model takes to rebuild from its log.

A room log of N events, as chat makes them: mostly messages from a few dozen users,
with edits and deletes of their own messages and reactions and unreactions to anyone's,
aimed at recent messages. The read model (router/room_view.py) is rebuilt from the log
in id order, as a node does at start, and kept event by event in a shuffled order, as a
replica receives them; both must end identical.
"""

import json
import random
import time
from pathlib import Path
from typing import Any

from router.event_rules import RoomEvent
from router.records import EventKind
from router.room_view import RoomView

USERS = 40
RECENT = 200  # relations aim at one of the latest messages
KIND_WEIGHTS: dict[EventKind, int] = {
    "message": 80,
    "edit": 6,
    "delete": 2,
    "reaction": 10,
    "unreaction": 2,
}
KEYS = ("👍", "❤️", "😂", "🎉", "👀")


def room_log(events: int, seed: int) -> list[RoomEvent]:
    rng = random.Random(seed)
    kinds = list(KIND_WEIGHTS)
    weights = list(KIND_WEIGHTS.values())
    log: list[RoomEvent] = []
    messages: list[RoomEvent] = []
    for n in range(events):
        time_ms = 1_700_000_000_000 + n
        kind = rng.choices(kinds, weights)[0] if messages else "message"
        target = rng.choice(messages[-RECENT:]) if kind != "message" else None
        own = kind in ("edit", "delete")
        sender = target.sender if own and target else f"u{rng.randrange(USERS)}"
        event = RoomEvent(
            id=f"{time_ms:012x}0000.n1",
            room="perf",
            sender=sender,
            client_msg_id=f"c{n}",
            time_ms=time_ms,
            kind=kind,
            body=f"body {n}" if kind in ("message", "edit") else "",
            target=target.id if target else None,
            reaction_key=rng.choice(KEYS) if kind in ("reaction", "unreaction") else None,
        )
        log.append(event)
        if kind == "message":
            messages.append(event)
    return log


def run_rebuild(events: int, seed: int, out_dir: Path) -> dict[str, Any]:
    log = room_log(events, seed)
    started = time.perf_counter()
    rebuilt = RoomView.rebuild("perf", log)
    rebuild_s = time.perf_counter() - started
    shuffled = random.Random(seed).sample(log, k=len(log))
    started = time.perf_counter()
    kept = RoomView.rebuild("perf", shuffled)
    shuffled_s = time.perf_counter() - started
    if kept.snapshot() != rebuilt.snapshot():
        raise RuntimeError("the view kept in a shuffled order differs from the rebuild")
    result = {
        "events": events,
        "seed": seed,
        "rebuild_s": round(rebuild_s, 4),
        "events_per_s": round(events / rebuild_s),
        "shuffled_s": round(shuffled_s, 4),
        "relations_not_held": kept.relations_not_held,
        "unread_of_a_new_user": str(rebuilt.unread("newcomer", "")),
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "rebuild.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def rebuild_line(result: dict[str, Any]) -> str:
    return (
        f"{result['events']:,} events: rebuilt in {result['rebuild_s'] * 1000:,.0f} ms "
        f"({result['events_per_s']:,} events/s); kept in a shuffled order in "
        f"{result['shuffled_s'] * 1000:,.0f} ms, identical"
    )
