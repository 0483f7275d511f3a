"""Pacing sends: the token bucket a node limits each user with, and a client paces itself by.

Sans-IO: time is passed in. A wait told to a client is rounded up to the millisecond and
never 0 (`retry_after_s`), so a client that waits what it is told is not refused again.
"""

import math
from dataclasses import dataclass, field
from typing import Final

# The shortest wait told to a refused sender, and the grain waits are rounded up to: a
# wait rounded down to 0 would invite an immediate retry that is refused again.
RETRY_AFTER_S_MIN: Final = 0.001
# Float rounding of `elapsed * rate` may leave a bucket a hair short of a token at the
# moment it was told to be full; that sender must not be refused a second time.
TOKEN_ROUNDING: Final = 1e-9


@dataclass(slots=True)
class TokenBucket:
    rate_per_s: float
    burst: float
    tokens: float = field(init=False)
    updated_at: float | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        assert self.rate_per_s > 0 and self.burst >= 1
        self.tokens = self.burst

    def take(self, now: float) -> float:
        """0.0 when a token was taken; otherwise the seconds until one will be there."""
        if self.updated_at is not None:
            elapsed = max(0.0, now - self.updated_at)
            self.tokens = min(self.burst, self.tokens + elapsed * self.rate_per_s)
        self.updated_at = now
        if self.tokens >= 1.0 - TOKEN_ROUNDING:
            self.tokens = max(0.0, self.tokens - 1.0)
            return 0.0
        return (1.0 - self.tokens) / self.rate_per_s


def retry_after_s(wait_s: float) -> float:
    """A wait as told to a client: rounded up to the millisecond, never 0."""
    return max(RETRY_AFTER_S_MIN, math.ceil(wait_s * 1000) / 1000)
