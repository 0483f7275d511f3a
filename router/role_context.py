"""What every role of the room engine shares: settings, placement, clock, numbers, counters."""

from collections.abc import Iterator
from dataclasses import dataclass

from router.config import RouterConfig
from router.node_clock import NodeClock
from router.placement import Placement
from router.stats import EngineStatistics


@dataclass(frozen=True, slots=True)
class RoleContext:
    config: RouterConfig
    placement: Placement
    clock: NodeClock
    # Request ids and storage tokens, unique within a start and above the last start's.
    numbers: Iterator[int]
    stats: EngineStatistics
