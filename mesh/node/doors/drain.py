"""Draining a node before it stops: no new client sessions, and the ones it has handed
to the other nodes a few at a time, so that a restart brings no reconnect storm.

Each session is ended with `unavailable` and the reason; the client library reconnects to
another of its servers (and, like any client, is refused here from now on). Spreading the
ends over `over_s` spreads the arrivals at the other nodes. The node goes on serving its
peers: only its client door closes. It stays draining until it restarts.
"""

import asyncio
import math
import time
from dataclasses import dataclass

from mesh.node.doors.gateway import DRAINING, Gateway

# Sessions are ended in steps this far apart; each step ends its share of them.
DRAIN_STEP_S = 0.05
# Once every session is told, how long they may take to be gone before drain returns.
DRAIN_SETTLE_S = 5.0
DRAIN_OVER_MAX_S = 600.0


@dataclass(frozen=True, slots=True)
class DrainOutcome:
    handed_off: int  # sessions told to go to another node
    remaining: int  # still open when drain returned (clients that read nothing)
    took_s: float


async def drain(gateway: Gateway, over_s: float) -> DrainOutcome:
    began = time.monotonic()
    gateway.draining = True
    sessions = sorted(gateway.sessions, key=lambda session: session.session_id)
    # As many steps as fit the window, but no more than there are sessions to end.
    steps = max(1, min(len(sessions), math.ceil(over_s / DRAIN_STEP_S)))
    per_step = max(1, math.ceil(len(sessions) / steps))
    for first in range(0, len(sessions), per_step):
        for session in sessions[first : first + per_step]:
            session.cut_off(DRAINING)
        if first + per_step < len(sessions):
            await asyncio.sleep(over_s / steps)
    deadline = time.monotonic() + DRAIN_SETTLE_S
    while gateway.sessions and time.monotonic() < deadline:
        for late in list(gateway.sessions):  # past its handshake as the drain began
            late.cut_off(DRAINING)
        await asyncio.sleep(DRAIN_STEP_S)
    return DrainOutcome(len(sessions), len(gateway.sessions), time.monotonic() - began)
