"""Keep a node's memory from creeping up after bursts of large frames (glibc's malloc).

glibc raises its mmap threshold each time a large block is freed, so later frames of a
few MiB come from the heap instead, and the holes they leave keep the process's RSS high;
every thread that allocates may also get an arena of its own. A fixed threshold returns
large frames to the system when they are freed, and few arenas keep the rest compact.
Elsewhere (musl, macOS) nothing is changed.
"""

import ctypes
import ctypes.util
import logging
from typing import Final

log = logging.getLogger(__name__)

# mallopt parameters, from glibc's malloc.h.
_M_MMAP_THRESHOLD: Final = -3
_M_ARENA_MAX: Final = -8
# Blocks from this size up are mapped and unmapped on their own: glibc's initial value,
# kept fixed. Peer frames (up to 4 MiB) and client frames of a few KiB fall on either side.
MMAP_THRESHOLD_BYTES: Final = 128 * 1024
# The event loop, SQLite's writer thread, the reader pool and libzmq's I/O thread: two
# arenas serve them without contention that shows, and bound the fragmentation.
ARENAS_MAX: Final = 2


def bound_allocator_growth() -> bool:
    """Fix the malloc settings above; False where the C library is not glibc."""
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    fixed: bool = mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES) == 1
    fixed = mallopt(_M_ARENA_MAX, ARENAS_MAX) == 1 and fixed
    if not fixed:
        log.debug("malloc settings left as they were (mallopt refused them)")
    return fixed
