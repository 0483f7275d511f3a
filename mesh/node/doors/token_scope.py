"""What a token lets its holder do: the optional `rooms` and `ops` claims.

A token without them may do whatever its user may (the room's state still decides,
router/room_state.py). `rooms` is a list of name patterns (`*` any run of characters, `?`
one), `ops` a list of `read` (join, history, resume, who, unread counts, read markers,
show a room), `post` (send, edit, delete, react, typing) and `moderate` (create a room,
change its state). `operate` (back up the node) is never implied: only a token whose
`ops` name it may, on a node that checks tokens. A scope narrows a user's rights and
never widens them: a room outside the patterns, or an operation not listed, is refused
with `forbidden`.
"""

import re
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any, Final, Literal, get_args

from mesh.wire.names import ROOM_NAME_LENGTH_MAX

Operation = Literal["read", "post", "moderate", "operate"]
OPERATIONS: Final[frozenset[str]] = frozenset(get_args(Operation))
# Bounds of what a token may carry, as every other decoder has: a scope is checked on each
# request, so its cost stays small.
ROOM_PATTERNS_MAX: Final = 64
# A room name's characters and the two wildcards; `[` is not a room character, so a
# pattern never holds fnmatch's character classes.
_ROOM_PATTERN: Final = re.compile(rf"[A-Za-z0-9_.#*?-]{{1,{ROOM_NAME_LENGTH_MAX}}}")


class ScopeError(ValueError):
    """A `rooms` or `ops` claim that is not a valid scope."""


@dataclass(frozen=True, slots=True)
class TokenScope:
    rooms: tuple[str, ...] | None = None  # None: every room
    ops: frozenset[str] | None = None  # None: every operation

    @classmethod
    def from_claims(cls, claims: dict[str, Any]) -> "TokenScope":
        """The scope a token's claims give, or ScopeError saying what is wrong."""
        for name in ("rooms", "ops"):
            if name in claims and claims[name] is None:
                raise ScopeError(f"{name} must be a list, not null")  # not "unscoped"
        return cls(_room_patterns(claims.get("rooms")), _operations(claims.get("ops")))

    @property
    def unscoped(self) -> bool:
        return self.rooms is None and self.ops is None

    def refusal(self, room: str | None, operation: Operation) -> str | None:
        """Why this token may not `operation` in `room` (in the rooms it covers, without
        one); None when it may."""
        if self.ops is not None and operation not in self.ops:
            return f"this token may not {operation} (it may {_listed(self.ops)})"
        if room is not None and not self.covers(room):
            return f"this token is not for room {room}"
        return None

    def may_operate(self) -> bool:
        """Operating the node takes a token that says so: no unscoped token may."""
        return self.ops is not None and "operate" in self.ops

    def covers(self, room: str) -> bool:
        return self.rooms is None or any(fnmatchcase(room, pattern) for pattern in self.rooms)

    def claims(self) -> dict[str, list[str]]:
        """The claims that give this scope, for a token issuer."""
        found: dict[str, list[str]] = {}
        if self.rooms is not None:
            found["rooms"] = list(self.rooms)
        if self.ops is not None:
            found["ops"] = sorted(self.ops)
        return found


UNSCOPED: Final = TokenScope()


def _room_patterns(value: object) -> tuple[str, ...] | None:
    if value is None:
        return None
    if not isinstance(value, list) or len(value) > ROOM_PATTERNS_MAX:
        raise ScopeError(f"rooms must be a list of at most {ROOM_PATTERNS_MAX} room patterns")
    for pattern in value:
        if not isinstance(pattern, str) or not _ROOM_PATTERN.fullmatch(pattern):
            raise ScopeError(
                f"a room pattern is 1-{ROOM_NAME_LENGTH_MAX} of A-Z a-z 0-9 _ . # - * ?"
            )
    return tuple(value)


def _operations(value: object) -> frozenset[str] | None:
    if value is None:
        return None
    if not isinstance(value, list) or len(value) > len(OPERATIONS):
        raise ScopeError(f"ops must be a list of {_listed(OPERATIONS)}")
    # An operation this node does not know is refused rather than ignored: ignoring it
    # would read the issuer's intent one way or the other.
    if not all(isinstance(op, str) and op in OPERATIONS for op in value):
        raise ScopeError(f"ops must be a list of {_listed(OPERATIONS)}")
    return frozenset(value)


def _listed(ops: frozenset[str]) -> str:
    return ", ".join(sorted(ops)) or "nothing"
