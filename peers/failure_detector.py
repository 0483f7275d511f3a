"""Judging a peer's liveness from how long it has been silent.

We use a pair of timeouts rather than phi accrual. Heartbeats leave at a fixed interval
over a LAN or loopback, so their arrival times carry little variance for phi to learn
from, while a fixed pair gives operators a window they can reason about ("dead within
dead_after_s of the last heartbeat") and tests a bound they can check. Suspect comes
first so a peer that is only slow (a GC pause, a lost packet or two) is reported before
anything acts on its death.
"""

import enum
from dataclasses import dataclass


class Liveness(enum.StrEnum):
    ALIVE = "alive"
    SUSPECT = "suspect"
    DEAD = "dead"


@dataclass(frozen=True, slots=True)
class DetectorConfig:
    suspect_after_s: float
    dead_after_s: float

    def __post_init__(self) -> None:
        if not 0 < self.suspect_after_s < self.dead_after_s:
            raise ValueError(
                f"need 0 < suspect_after_s ({self.suspect_after_s}) "
                f"< dead_after_s ({self.dead_after_s})"
            )


def judge(silence_s: float, config: DetectorConfig) -> Liveness:
    """The liveness of a peer last heard `silence_s` seconds ago."""
    if silence_s >= config.dead_after_s:
        return Liveness.DEAD
    if silence_s >= config.suspect_after_s:
        return Liveness.SUSPECT
    return Liveness.ALIVE
