"""A node's identity on disk: its id and the incarnation of each start, kept in its data dir."""

import json
import os
from pathlib import Path

IDENTITY_FILE = "node.json"


class IdentityError(Exception):
    """The data dir belongs to another node, or its identity file is damaged."""


def next_incarnation(data_dir: Path, node_id: str, wall_clock_ms: int) -> int:
    """Record and return this start's incarnation: larger than every earlier start's.

    The wall clock makes it larger even when the data dir was wiped; the stored value
    makes it larger even when the clock stepped back.
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / IDENTITY_FILE
    previous = 0
    if path.exists():
        try:
            stored = json.loads(path.read_text())
            stored_id, previous = str(stored["id"]), int(stored["incarnation"])
        except (ValueError, KeyError, TypeError) as error:
            raise IdentityError(f"{path} is damaged: {error}") from error
        if stored_id != node_id:
            raise IdentityError(f"{data_dir} belongs to node {stored_id!r}, not {node_id!r}")
    incarnation = max(previous + 1, wall_clock_ms)
    temporary = path.with_suffix(".tmp")
    with open(temporary, "w") as file:
        json.dump({"id": node_id, "incarnation": incarnation}, file)
        file.flush()
        os.fsync(file.fileno())
    os.replace(temporary, path)
    return incarnation
