"""The live progress of a load run, on stderr: on a terminal one line rewritten in place
(elapsed, sends so far, the rate now); elsewhere a plain line every PLAIN_INTERVAL_S, so a
log shows the run is alive without a line per update. The report itself is never here.

Sans-clock: the caller passes the elapsed time with each update.
"""

import collections
from dataclasses import dataclass, field
from typing import IO

PLAIN_INTERVAL_S = 10.0
# "The rate now" is over this trailing window: short enough to show a stall within
# seconds, long enough to smooth the workers' once-a-second reports.
RATE_WINDOW_S = 3.0
ERASE_LINE = "\r\x1b[K"  # back to the line's start, erase it


@dataclass
class ProgressLine:
    stream: IO[str]
    label: str
    on_terminal: bool
    plain_interval_s: float = PLAIN_INTERVAL_S
    _samples: collections.deque[tuple[float, int]] = field(default_factory=collections.deque)
    _last_plain_s: float | None = None
    _shown: bool = False

    def update(self, elapsed_s: float, sent: int, acknowledged: int, errors: int) -> None:
        text = (
            f"{self.label}: {elapsed_s:.0f}s, {sent:,} sent, {acknowledged:,} acknowledged, "
            f"{self._rate_per_s(elapsed_s, acknowledged):,.0f}/s now, {errors:,} errors"
        )
        if self.on_terminal:
            self.stream.write(ERASE_LINE + text)
            self.stream.flush()
            self._shown = True
        elif self._last_plain_s is None or elapsed_s - self._last_plain_s >= self.plain_interval_s:
            self.stream.write(text + "\n")
            self._last_plain_s = elapsed_s

    def close(self) -> None:
        """Take the line away, so what is printed next starts on a clean line."""
        if self._shown:
            self.stream.write(ERASE_LINE)
            self.stream.flush()
            self._shown = False

    def _rate_per_s(self, elapsed_s: float, acknowledged: int) -> float:
        self._samples.append((elapsed_s, acknowledged))
        while elapsed_s - self._samples[0][0] > RATE_WINDOW_S:
            self._samples.popleft()
        first_s, first_count = self._samples[0]
        if elapsed_s <= first_s:
            return 0.0
        return (acknowledged - first_count) / (elapsed_s - first_s)
