"""Progress reporting for long jobs: rate and ETA through logging, throttled."""

from __future__ import annotations

import logging
import time


class Progress:
    """Logs ``done/total`` (or ``done`` when the total is unknown), rate and ETA.

    At most every ``interval_s`` seconds, and once more when the total is reached.
    """

    def __init__(
        self, label: str, total: int | None, done: int = 0, interval_s: float = 5.0, logger=None
    ):
        self.label, self.total, self.done = label, total, done
        self._start_done, self._t0 = done, time.monotonic()
        self._last = 0.0
        self.interval_s = interval_s
        self.log = logger or logging.getLogger(__name__)

    def update(self, n: int) -> None:
        self.done += n
        now = time.monotonic()
        if now - self._last >= self.interval_s or (
            self.total is not None and self.done >= self.total
        ):
            self._last = now
            self.log.info("%s", self.line())

    @property
    def rate(self) -> float:
        elapsed = time.monotonic() - self._t0
        return (self.done - self._start_done) / elapsed if elapsed > 0 else 0.0

    def line(self) -> str:
        rate = self.rate
        if self.total is None:
            return f"{self.label}: {self.done} ({rate:.1f}/s)"
        eta = (self.total - self.done) / rate if rate > 0 else float("inf")
        eta_s = f"{eta:.0f}s" if eta != float("inf") else "?"
        return f"{self.label}: {self.done}/{self.total} ({rate:.1f}/s, ETA {eta_s})"
