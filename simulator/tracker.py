"""Bookkeeping of published messages until the broker confirms them (PUBACK).

Pure and single-threaded: the publisher serialises calls with its own lock.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True)
class _Pending:
    index: int
    first_sent_at: float
    attempts: int = 1


@dataclass(slots=True)
class Tally:
    """Counters of one run (messages, not readings)."""

    published: int = 0  # distinct messages handed to the client at least once
    confirmed: int = 0  # distinct messages the broker acknowledged with success
    failed: int = 0  # distinct messages given up on (refused too often, or never confirmed)
    resent: int = 0  # sends after the first: our own retries plus paho's after a reconnect
    reconnects: int = 0
    puback_latencies_s: list[float] = field(default_factory=list)


class Tracker:
    """Maps paho message ids to planned messages and counts what the broker confirmed.

    A PUBACK can be processed by paho's network thread before `publish()` has
    returned its message id to us; such an early confirmation is kept until
    `sent()` claims it, so no message is counted twice or lost.
    """

    def __init__(self, *, max_attempts: int = 5) -> None:
        self._max_attempts = max_attempts
        self._pending: dict[int, _Pending] = {}
        self._early: dict[int, tuple[bool, float]] = {}
        self._done: set[int] = set()
        self._retry: list[tuple[int, float, int]] = []
        self.tally = Tally()

    @property
    def outstanding(self) -> int:
        """Messages sent and not yet confirmed or given up on."""
        return len(self._pending)

    @property
    def retrying(self) -> int:
        """Messages waiting to be published again."""
        return len(self._retry)

    def sent(
        self, mid: int, index: int, *, at_s: float, first_sent_at: float | None = None, attempts: int = 1
    ) -> None:
        """Record that message `index` went out with paho message id `mid`."""
        if first_sent_at is None:
            self.tally.published += 1
        else:
            self.tally.resent += 1
        entry = _Pending(index, at_s if first_sent_at is None else first_sent_at, attempts)
        early = self._early.pop(mid, None)
        self._pending[mid] = entry
        if early is not None:
            self.confirmed(mid, ok=early[0], at_s=early[1])

    def refused_locally(
        self, index: int, *, at_s: float, first_sent_at: float | None = None, attempts: int = 1
    ) -> None:
        """The client would not take the message (e.g. its queue is full): retry it later."""
        if first_sent_at is None:
            self.tally.published += 1
        self._give_up_or_retry(_Pending(index, at_s if first_sent_at is None else first_sent_at, attempts))

    def confirmed(self, mid: int, *, ok: bool, at_s: float) -> None:
        """The broker answered message `mid`: success, or a refusal (retried a few times)."""
        entry = self._pending.pop(mid, None)
        if entry is None:
            self._early[mid] = (ok, at_s)
            return
        if entry.index in self._done:
            return
        if ok:
            self._done.add(entry.index)
            self.tally.confirmed += 1
            self.tally.puback_latencies_s.append(at_s - entry.first_sent_at)
        else:
            self._give_up_or_retry(entry)

    def reconnected(self) -> None:
        """After a reconnect paho sends every unconfirmed message again (with DUP set)."""
        self.tally.reconnects += 1
        self.tally.resent += len(self._pending)

    def take_retries(self) -> list[tuple[int, float, int]]:
        """Messages to publish again: (index, first_sent_at, attempts so far)."""
        retries, self._retry = self._retry, []
        return retries

    def give_up_outstanding(self) -> int:
        """At the end: count every message still unconfirmed as failed; return how many."""
        lost = {entry.index for entry in self._pending.values()} | {index for index, _, _ in self._retry}
        lost -= self._done
        self.tally.failed += len(lost)
        self._pending.clear()
        self._retry.clear()
        return len(lost)

    def _give_up_or_retry(self, entry: _Pending) -> None:
        if entry.attempts >= self._max_attempts:
            self.tally.failed += 1
        else:
            self._retry.append((entry.index, entry.first_sent_at, entry.attempts))
