"""The peers a node has known, kept in its data dir so a restart can rejoin through any of them.

Configured seeds are enough for a first start; after that a node whose seeds are all
down still finds the mesh through the peers it remembers, as Cassandra does with its
saved peers table.
"""

import json
import logging
import os
from pathlib import Path

from peers.limits import MEMBERS_MAX

PEER_BOOK_FILE = "peers.json"

log = logging.getLogger(__name__)


def load_peer_addresses(data_dir: Path) -> list[str]:
    path = data_dir / PEER_BOOK_FILE
    if not path.exists():
        return []
    try:
        addresses = json.loads(path.read_text())["addresses"]
    except (ValueError, KeyError, TypeError) as error:
        # A damaged book costs only the shortcut back into the mesh; seeds still work.
        log.warning("ignoring damaged %s: %s", path, error)
        return []
    return [str(address) for address in addresses][:MEMBERS_MAX]


def save_peer_addresses(data_dir: Path, addresses: list[str]) -> None:
    """Remember these peers; an empty list keeps the book as it was: a start that met
    nobody (its peers down or cut off) must not make the next start believe it is alone."""
    if not addresses:
        return
    path = data_dir / PEER_BOOK_FILE
    temporary = path.with_suffix(".tmp")
    with open(temporary, "w") as file:
        json.dump({"addresses": sorted(addresses)[:MEMBERS_MAX]}, file)
        file.flush()
        os.fsync(file.fileno())
    os.replace(temporary, path)
