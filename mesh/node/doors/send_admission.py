"""Sends in flight on a node, over all its doors: the bound that turns overload into waiting.

A send is admitted while the node has fewer than `in_flight_max` sends accepted and not yet
answered, TCP and HTTP together. Past it a send waits its turn, first come first served,
and its session reads nothing meanwhile: TCP's own flow control then slows the client. A
send that waited `wait_max_s` is refused (`unavailable`) with the time the sends ahead of it
need: each slot frees after a send's usual time in flight (Little's law), which holds from a
burst's first refusal on, where a rate measured over the last seconds would still count the
quiet before it. A sender that waits what it is told comes back when there is room. No send
is dropped: a refused one was never accepted.
"""

import asyncio
import collections
import contextlib
from dataclasses import dataclass
from typing import Final

from mesh.node.drain_rate import DRAIN_WAIT_MAX_S
from mesh.wire.pacing import retry_after_s

# Sends accepted and not yet answered, per node. A burst this size is stored in a few
# commits; beyond it, waiting at the door costs less than queueing inside the mesh.
SENDS_IN_FLIGHT_MAX: Final = 4096
# How long a send may wait for room before it is refused with a time to come back.
ADMISSION_WAIT_MAX_S: Final = 1.0
# A send's time in flight before any has finished: a commit and a replica's answer.
HELD_S_PRIOR: Final = 0.05
# The weight of the latest send in the running mean of time in flight.
HELD_S_WEIGHT: Final = 0.02


@dataclass(slots=True)
class AdmissionStatistics:
    admitted: int = 0
    waited: int = 0  # admitted or refused after waiting for room
    refused: int = 0


class SendAdmission:
    def __init__(
        self,
        in_flight_max: int = SENDS_IN_FLIGHT_MAX,
        wait_max_s: float = ADMISSION_WAIT_MAX_S,
    ) -> None:
        assert in_flight_max >= 1 and wait_max_s >= 0
        self.in_flight_max = in_flight_max
        self.wait_max_s = wait_max_s
        self.in_flight = 0
        self.stats = AdmissionStatistics()
        self.held_s = HELD_S_PRIOR  # a send's time in flight, a running mean
        # Each send that waits has a future here; a finished send hands its slot to the
        # first that is still waiting. Given-up waiters stay until they reach the front.
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self.waiting = 0

    async def admit(self) -> float:
        """0.0 when the send is admitted (then call `finished` once it is answered);
        otherwise it is refused, and this is the seconds to wait before sending again."""
        if self.in_flight < self.in_flight_max and not self.waiting:
            self.in_flight += 1
            self.stats.admitted += 1
            return 0.0
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        self.waiting += 1
        self.stats.waited += 1
        try:
            # Not wait_for: on Python 3.11 it can return a result and drop a cancel that
            # came at the same moment, and a cancelled session must not carry on.
            with contextlib.suppress(TimeoutError):  # waited long enough: refused below
                async with asyncio.timeout(self.wait_max_s):
                    await asyncio.shield(waiter)
        except asyncio.CancelledError:
            if not self._give_up(waiter):
                self._release()  # handed over just as this send was cancelled: pass it on
            raise
        if self._give_up(waiter):
            self.stats.refused += 1
            return self.wait_s()
        self.stats.admitted += 1
        return 0.0

    def finished(self, held_s: float) -> None:
        """A send admitted `held_s` ago was answered (stored, refused or failed)."""
        self.held_s += HELD_S_WEIGHT * (max(0.0, held_s) - self.held_s)
        self._release()

    def wait_s(self) -> float:
        """When a send refused now would find room: those waiting, and it, each take a
        slot as one frees, and `in_flight_max` free in a send's time in flight."""
        ahead = self.waiting + 1
        return retry_after_s(min(DRAIN_WAIT_MAX_S, ahead * self.held_s / self.in_flight_max))

    def _release(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                self.waiting -= 1
                waiter.set_result(None)  # the slot passes on: in_flight stays
                return
        self.in_flight -= 1

    def _give_up(self, waiter: "asyncio.Future[None]") -> bool:
        """Stop waiting; False when the slot was handed over first (then it is ours)."""
        if waiter.done():
            return False
        waiter.cancel()
        self.waiting -= 1
        return True
