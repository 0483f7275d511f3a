"""A client's sends in flight, kept within the window its node announced.

The node reads no more of a session's frames while `send_window_max` of its sends wait for
their commit, and then its pings and history requests wait behind them too. A client that
holds the rest back itself keeps its other requests moving.
"""

import asyncio


class SendWindow:
    """Callers take turns (ChatClient.send holds its send-order lock while it waits)."""

    def __init__(self) -> None:
        self.in_flight = 0
        self._freed = asyncio.Event()

    async def acquire(self, window_max: int | None) -> None:
        """Wait until fewer than `window_max` sends are in flight (None or 0: no window)."""
        while window_max and self.in_flight >= window_max:
            self._freed.clear()
            await self._freed.wait()
        self.in_flight += 1

    def release(self) -> None:
        self.in_flight -= 1
        self._freed.set()
