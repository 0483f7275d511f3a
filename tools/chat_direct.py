"""The room two users talk in alone (`/msg`): one name for the pair, whoever starts.

Both user names, sorted, make the name: `dm#ann#bob`. `#` cannot appear in a name shown
this way, so two pairs never share a room. A pair whose names hold a character a room
name may not (`[A-Za-z0-9_.-]` only, no `#`), or that would pass the room-name length
limit, gets `dm##` and a hash of both names instead: `dm##5f1c…` (32 hex digits, 128 bits).
"""

import hashlib
import re

from mesh.wire.names import ROOM_NAME_LENGTH_MAX, is_room_name

DIRECT_PREFIX = "dm#"
DIRECT_HASH_HEX_DIGITS = 32
_PLAIN_NAME = re.compile(r"[A-Za-z0-9_.-]+")


def direct_room_name(user: str, other: str) -> str:
    first, second = sorted((user, other))
    readable = f"{DIRECT_PREFIX}{first}#{second}"
    plain = all(_PLAIN_NAME.fullmatch(name) for name in (first, second))
    if plain and len(readable) <= ROOM_NAME_LENGTH_MAX:
        name = readable
    else:
        # NUL is in no user name: the pair ("a", "b c") hashes apart from ("a b", "c").
        digest = hashlib.sha256(f"{first}\0{second}".encode()).hexdigest()
        name = f"{DIRECT_PREFIX}#{digest[:DIRECT_HASH_HEX_DIGITS]}"
    assert is_room_name(name), name
    return name


def is_direct_room(room: str) -> bool:
    return room.startswith(DIRECT_PREFIX)
