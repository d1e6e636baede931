"""An even publishing schedule computed from a clock, so delays do not accumulate into drift."""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    """Monotonic time and sleeping (a fake in the unit tests)."""

    def monotonic(self) -> float: ...

    def sleep(self, seconds: float) -> None: ...


class SystemClock:
    """The real clock."""

    def monotonic(self) -> float:
        """Seconds from an arbitrary start; never goes back."""
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        """Block for `seconds`."""
        time.sleep(seconds)


class Pacer:
    """Message i is due at start + i * interval; interval 0 means as fast as possible.

    Each due time comes from the start, not from the previous send, so a slow
    publish is caught up on instead of shifting every later message.
    """

    def __init__(self, clock: Clock, *, interval_s: float) -> None:
        self._clock = clock
        self._interval_s = interval_s
        self._start: float | None = None

    @classmethod
    def for_run(cls, clock: Clock, *, messages: int, duration_s: float | None) -> Pacer:
        """Spread `messages` evenly over `duration_s` (None: no pacing, `--rate max`)."""
        interval = 0.0 if duration_s is None or messages <= 0 else duration_s / messages
        return cls(clock, interval_s=interval)

    @property
    def interval_s(self) -> float:
        """Seconds between two due times."""
        return self._interval_s

    def due_at(self, index: int) -> float:
        """When message `index` is due (clock seconds)."""
        if self._start is None:
            self._start = self._clock.monotonic()
        return self._start + index * self._interval_s

    def wait_for(self, index: int) -> None:
        """Sleep until message `index` is due (no sleep if it is already late)."""
        delay = self.due_at(index) - self._clock.monotonic()
        if delay > 0:
            self._clock.sleep(delay)
