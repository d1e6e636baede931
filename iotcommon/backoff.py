"""Capped exponential backoff with jitter, the one retry policy of the bridge."""

from __future__ import annotations

import random
from collections.abc import Callable


class Backoff:
    """Delays of initial_s, 2x, 4x ... capped at max_s, each shortened by up to `jitter`.

    Jitter keeps several workers from hammering a database that just came back
    in lock-step (the same idea as psycopg_pool's AttemptWithBackoff).
    """

    def __init__(
        self,
        *,
        initial_s: float = 0.1,
        max_s: float = 5.0,
        factor: float = 2.0,
        jitter: float = 0.2,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self._initial_s = initial_s
        self._max_s = max_s
        self._factor = factor
        self._jitter = jitter
        self._rand = rand
        self._next_s = initial_s
        self.attempts = 0

    def next_delay(self) -> float:
        """The delay before the next attempt; grows until max_s."""
        delay = self._next_s * (1.0 - self._jitter * self._rand())
        self._next_s = min(self._next_s * self._factor, self._max_s)
        self.attempts += 1
        return delay

    def reset(self) -> None:
        """Start again from initial_s after a success."""
        self._next_s = self._initial_s
        self.attempts = 0
