"""What a reconnect does with a room the node will not let us back into, and why the client
is not connected: the news a chat tool shows while the connection task retries.

A refusal about the room itself (its name, its state, our right to be in it) gets the same
answer on every connection, so the room is dropped and told about (RejoinRefused), never
retried in a reconnect loop. Any other refusal may pass: connect again, after a pause.
"""

import logging
import time
from dataclasses import dataclass, field

from mesh.client.connection import NodeError
from mesh.wire.errors import ErrorCode
from mesh.wire.protocol import ErrorReply

log = logging.getLogger(__name__)

# Refusals that asking again, on this node or another, cannot change.
FINAL_REJOIN_CODES = frozenset(
    {ErrorCode.BAD_REQUEST, ErrorCode.FORBIDDEN, ErrorCode.NOT_FOUND, ErrorCode.TOO_LARGE}
)


@dataclass(frozen=True, slots=True)
class RejoinRefused:
    """Not from the wire: a room left out after a reconnect, because the node refused it."""

    room: str
    code: ErrorCode
    reason: str


def refused_rejoin(room: str, reply: ErrorReply) -> RejoinRefused:
    """The news of a final refusal; raises NodeError for one that may pass (reconnect)."""
    if reply.code not in FINAL_REJOIN_CODES:
        raise NodeError(reply.code, f"could not rejoin {room}: {reply.message}")
    log.warning("not rejoining %s: %s: %s", room, reply.code, reply.message)
    return RejoinRefused(room, reply.code, reply.message)


@dataclass(slots=True)
class ConnectAttempts:
    """Why the latest attempts to reach a node failed, per server, and when the next
    starts: read by a chat tool's status line while it is not connected."""

    unreachable: dict[str, str] = field(default_factory=dict)  # address -> reason in words
    refused: dict[str, str] = field(default_factory=dict)  # address -> "code: the node's words"
    lost: str = ""  # why the last connection ended
    retry_at_monotonic_s: float | None = None

    def start_round(self) -> dict[str, str]:
        """A new round of attempts: returns the (fresh) reasons of unreachable servers."""
        self.unreachable, self.refused = {}, {}
        return self.unreachable

    def retry_in(self, wait_s: float, lost: str | None = None) -> None:
        """The next attempt is `wait_s` from now; `lost`: why the connection ended."""
        if lost is not None:
            self.lost = lost
        self.retry_at_monotonic_s = time.monotonic() + wait_s

    def connected(self) -> None:
        self.unreachable, self.refused, self.lost, self.retry_at_monotonic_s = {}, {}, "", None

    def reason(self) -> str:
        """One line: each server's reason, refusals first (they say more)."""
        reasons = {**self.refused, **self.unreachable}
        if not reasons:
            return self.lost
        if len(reasons) == 1 or len(set(reasons.values())) == 1:
            return next(iter(reasons.values()))
        return "; ".join(f"{address}: {reason}" for address, reason in reasons.items())

    def retry_in_s(self, now_monotonic_s: float) -> float | None:
        if self.retry_at_monotonic_s is None:
            return None
        return max(0.0, self.retry_at_monotonic_s - now_monotonic_s)
