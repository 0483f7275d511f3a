"""Client message ids that begin with the time.

A node indexes every stored message by (sender, client_msg_id), which keeps sends
idempotent. Random ids land all over that index, so a commit of a few hundred messages
rewrites a few hundred of its pages; ids that begin with the time land at the end of
their sender's range, in a few pages (measured in docs/benchmarks.md). The 80 random
bits after the millisecond keep ids from two processes of one user apart.
"""

import secrets
import time

RANDOM_BYTES = 10


def new_client_msg_id(now_ms: int | None = None) -> str:
    """32 hex digits: the Unix time in ms (12), then random ones (20)."""
    at_ms = time.time_ns() // 1_000_000 if now_ms is None else now_ms
    return f"{at_ms:012x}{secrets.token_hex(RANDOM_BYTES)}"
