"""Send rates: one token bucket per user, shared by all of a node's front doors.

A user's sends are limited across all their sessions on a node and across TCP and HTTP:
opening more sessions, or posting over HTTP besides, buys no more rate. The node makes one
UserSendLimits and hands it to the gateway and the HTTP API. Sans-IO: time is passed in.

The registry is bounded. A bucket idle long enough to have refilled is the same as a new
one, so it is forgotten; past `USER_BUCKETS_MAX` busy users the least recently seen is
forgotten first, which at worst grants that user one more burst (counted).
"""

import collections
from dataclasses import dataclass
from typing import Final

from mesh.wire.pacing import TokenBucket, retry_after_s

# Users tracked at once: a node's session limit (ClientLimits.sessions_max), so every user
# with a session open can be busy at the same time without being forgotten.
USER_BUCKETS_MAX: Final = 10_000


@dataclass(slots=True)
class SendLimitStatistics:
    refused: int = 0
    forgotten_idle: int = 0
    forgotten_busy: int = 0  # forgotten at the bound before they had refilled


class UserSendLimits:
    """One token bucket per user: `rate_per_s` on average, bursts up to `burst`."""

    def __init__(self, rate_per_s: float, burst: float, users_max: int = USER_BUCKETS_MAX) -> None:
        assert rate_per_s > 0 and burst >= 1 and users_max >= 1
        self.rate_per_s = rate_per_s
        self.burst = burst
        self.users_max = users_max
        # A bucket left alone this long is full again: forgetting it changes nothing.
        self.refill_s = burst / rate_per_s
        self.stats = SendLimitStatistics()
        self._buckets: collections.OrderedDict[str, TokenBucket] = collections.OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def take(self, user: str, now: float) -> float:
        """0.0 when `user` may send now; otherwise the seconds to wait (>= RETRY_AFTER_S_MIN)."""
        self._forget_idle(now)
        bucket = self._buckets.get(user)
        if bucket is None:
            bucket = self._buckets[user] = TokenBucket(self.rate_per_s, self.burst)
            if len(self._buckets) > self.users_max:
                self._buckets.popitem(last=False)
                self.stats.forgotten_busy += 1
        self._buckets.move_to_end(user)
        wait_s = bucket.take(now)
        assert len(self._buckets) <= self.users_max
        if wait_s <= 0:
            return 0.0
        self.stats.refused += 1
        return retry_after_s(wait_s)

    def _forget_idle(self, now: float) -> None:
        # Least recently used first, so the idle ones are all at the front.
        while self._buckets:
            user, bucket = next(iter(self._buckets.items()))
            assert bucket.updated_at is not None
            if now - bucket.updated_at < self.refill_s:
                return
            del self._buckets[user]
            self.stats.forgotten_idle += 1
