"""Python's cyclic garbage collector, set for a node: most of what a node allocates per
message (frames, structs, futures) is freed by reference counting at once, so scanning
the young generation every 700 allocations is mostly wasted work on the hot path."""

import gc
from typing import Final

# Allocations (less deallocations) between young-generation collections; the older
# generations keep their default ratios.
YOUNG_THRESHOLD: Final = 10_000


def tune_collector() -> None:
    """After start-up: what exists now (modules, config, the node's parts) lives as long
    as the process, so it is left out of every later collection, and young collections
    come less often."""
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, middle, old)
