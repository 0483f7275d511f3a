"""How fast a backlog drains: work finished per second, smoothed, and the wait it implies.

A node tells a sender it refuses when to come back; the honest answer is the time the work
ahead of it needs at the rate work has been finishing. Sans-IO: time is passed in.
"""

import math
from dataclasses import dataclass, field
from typing import Final

from mesh.wire.pacing import retry_after_s

# How far back the rate looks: work finished this long ago counts half.
DRAIN_HALF_LIFE_S: Final = 1.0
# The longest wait told: past it a sender is better served by another node.
DRAIN_WAIT_MAX_S: Final = 10.0
# The wait told when nothing has finished lately, so no rate is known: short, as a
# stuck backlog refuses the retry again and a moving one has room by then.
DRAIN_WAIT_UNKNOWN_S: Final = 1.0


@dataclass(slots=True)
class DrainRate:
    """Work finished per second, decaying exponentially with `half_life_s`."""

    half_life_s: float = DRAIN_HALF_LIFE_S
    _weight: float = field(default=0.0, init=False)  # sum of exp(-age / tau) over finished work
    _updated_at: float | None = field(default=None, init=False)
    _tau_s: float = field(default=1.0, init=False)  # the decay's time constant

    def __post_init__(self) -> None:
        assert self.half_life_s > 0
        self._tau_s = self.half_life_s / math.log(2)

    def finished(self, now: float, count: int = 1) -> None:
        self._decay(now)
        self._weight += count

    def per_s(self, now: float) -> float:
        """At a steady rate r the weight settles at r * tau: so this is r."""
        self._decay(now)
        return self._weight / self._tau_s

    def wait_s(self, now: float, ahead: int, wait_max_s: float = DRAIN_WAIT_MAX_S) -> float:
        """The seconds until `ahead` more are finished at the current rate, as told to a
        client (never 0); DRAIN_WAIT_UNKNOWN_S when nothing has finished lately."""
        rate = self.per_s(now)
        if rate < 1 / self._tau_s:  # less than one finished within the last time constant
            return retry_after_s(DRAIN_WAIT_UNKNOWN_S)
        return retry_after_s(min(wait_max_s, ahead / rate))

    def _decay(self, now: float) -> None:
        if self._updated_at is None or now > self._updated_at:  # a clock never runs back here
            if self._updated_at is not None:
                self._weight *= math.exp((self._updated_at - now) / self._tau_s)
            self._updated_at = now
