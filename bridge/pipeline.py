"""The writer: batch deliveries, store each batch, then acknowledge it in arrival order.

Batching is group commit: the writer takes everything waiting as soon as it is
free, so a reading arriving while the writer is idle is committed at once, and
under load the readings that arrive during one commit make the next batch (up to
BRIDGE_BATCH_SIZE) by themselves. BRIDGE_LINGER_MS (off by default) makes a
batch wait for more before it is written, for fewer and larger commits.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Protocol

from bridge.errors import SinkRefused, SinkUnavailable
from bridge.inbox import Inbox
from bridge.model import Delivery, Parsed, Rejection
from bridge.stats import Stats
from bridge.store import Sink, WriteResult
from iotcommon.backoff import Backoff

logger = logging.getLogger(__name__)

# The longest the writer sleeps without looking at the stop event, idle or
# lingering (the signal handler also wakes it; this is the backstop).
MAX_WAIT_S = 0.5


class Acker(Protocol):
    """Acknowledges stored deliveries to the broker (the MQTT consumer)."""

    def ack(self, batch: Sequence[Delivery]) -> int: ...


class CommitObserver(Protocol):
    """Records per-batch metrics (bridge.metrics.Metrics)."""

    def observe_commit(self, batch: Sequence[Delivery], seconds: float) -> None: ...

    def observe_database_rejections(self, result: WriteResult) -> None: ...


class Pipeline:
    """Moves deliveries from the inbox to the sink, acking only what committed."""

    def __init__(
        self,
        inbox: Inbox,
        sink: Sink,
        acker: Acker,
        *,
        stats: Stats,
        batch_size: int,
        linger_s: float = 0.0,
        backoff: Backoff,
        now: Callable[[], datetime],
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        observer: CommitObserver | None = None,
    ) -> None:
        self._inbox = inbox
        self._sink = sink
        self._acker = acker
        self._stats = stats
        self._batch_size = batch_size
        self._linger_s = linger_s
        self._backoff = backoff
        self._now = now
        self._monotonic = monotonic
        self._sleep = sleep
        self._observer = observer
        self._probe_at = 0.0  # when to look for the database again while idle and it is down
        # Whether the database is available: decided here alone, from the start-up
        # check and every attempt since; Stats only reports it (the heartbeat's db_ok).
        self._db_ok = True
        stats.db_ok = True

    def check_database(self) -> None:
        """The start-up check: raise what the sink's check raises, reporting an unavailable database first.

        After SinkUnavailable, run() looks for the database on the backoff
        schedule; what no waiting fixes (SinkMisconfigured) is the caller's to stop on.
        """
        try:
            self._sink.check()
        except SinkUnavailable:
            self._set_db_ok(False)
            raise

    def _set_db_ok(self, ok: bool) -> None:
        self._db_ok = ok
        self._stats.db_ok = ok

    def run(self, stop: threading.Event, *, drain_deadline: Callable[[], float | None]) -> None:
        """Batch and store until `stop` is set and the inbox is drained (or the deadline passes)."""
        batch: list[Delivery] = []
        write_at = 0.0  # with a linger: when the batch is written, full or not
        while True:
            if not batch and not self._db_ok and not stop.is_set():
                self._probe()
            wait_s = min(self._wait_s(write_at if batch else None), MAX_WAIT_S)
            taken = self._inbox.take(self._batch_size - len(batch), 0.0 if stop.is_set() else wait_s)
            if taken and not batch:
                write_at = self._monotonic() + self._linger_s
            batch.extend(taken)
            self._stats.in_flight = len(batch) + len(self._inbox)
            due = len(batch) >= self._batch_size or (batch and self._monotonic() >= write_at)
            if batch and (due or stop.is_set()):
                if not self.flush(batch, deadline=drain_deadline):
                    return
                batch = []
            elif stop.is_set() and not taken:
                return

    def _wait_s(self, write_at: float | None) -> float:
        """How long to wait for deliveries: until the linger ends when holding some, else until the next probe."""
        if write_at is not None:
            return max(0.0, write_at - self._monotonic())
        if not self._db_ok:
            return max(0.0, self._probe_at - self._monotonic())
        return MAX_WAIT_S

    def _probe(self) -> None:
        """While idle with the database down (it was down at start), look for it on the backoff schedule.

        A pending batch is retried by flush(); without one, nobody else would
        notice that the database is back and the heartbeat would go on saying
        it is down.
        """
        if self._monotonic() < self._probe_at:
            return
        try:
            self._sink.check()
        except SinkUnavailable as exc:
            self._stats.db_errors += 1
            delay = self._backoff.next_delay()
            self._probe_at = self._monotonic() + delay
            log = logger.warning if self._backoff.attempts % 10 == 1 else logger.debug
            log("database unavailable (%s); looking again in %.2f s", exc, delay)
            return
        self._database_back()

    def flush(self, batch: list[Delivery], *, deadline: Callable[[], float | None] = lambda: None) -> bool:
        """Store one batch, retrying while the database is unavailable; ack it once committed.

        Returns False when it gave up because the shutdown deadline passed: the
        batch is then left unacknowledged, so the broker keeps it.
        """
        # Deliveries of an earlier connection stay in the batch across retries:
        # the broker may not have them any more (bridge/mqtt/consumer.py, _on_connect).
        while True:
            started = self._monotonic()
            try:
                result = self._write(batch)
            except SinkUnavailable as exc:
                if not self._wait_to_retry(batch, exc, deadline):
                    return False
                continue
            self._committed(batch, result, self._monotonic() - started)
            return True

    def _write(self, batch: list[Delivery]) -> WriteResult:
        try:
            return self._sink.write(batch)
        except SinkRefused as exc:
            logger.warning("database refused a batch of %d messages (%s); storing them one by one", len(batch), exc)
            return self._write_one_by_one(batch)

    def _write_one_by_one(self, batch: list[Delivery]) -> WriteResult:
        """Isolate the message the database refuses, and store it as a rejection.

        If the database becomes unavailable half-way, the messages already
        committed are acknowledged and removed from `batch` (in place), so the
        retry covers only the rest and nothing is stored twice.
        """
        total = WriteResult()
        for position in range(len(batch)):
            try:
                total.add(self._write_alone(batch, position))
            except SinkUnavailable:
                if position:
                    self._committed(batch[:position], total)
                    del batch[:position]
                raise
        return total

    def _write_alone(self, batch: list[Delivery], position: int) -> WriteResult:
        try:
            return self._sink.write([batch[position]])
        except SinkRefused as exc:
            refused = _as_refused(batch[position], exc)
            try:
                result = self._sink.write([refused])
            except SinkRefused as again:
                raise SinkUnavailable(f"cannot even store the rejection: {again}") from again
            batch[position] = refused
            return result

    def _wait_to_retry(
        self, batch: list[Delivery], exc: SinkUnavailable, deadline: Callable[[], float | None]
    ) -> bool:
        """Record the failure and sleep the backoff; False if that would pass the shutdown deadline."""
        self._set_db_ok(False)
        self._stats.db_errors += 1
        self._stats.in_flight = len(batch) + len(self._inbox)  # keeps growing up to Receive Maximum
        delay = self._backoff.next_delay()
        limit = deadline()
        if limit is not None and self._monotonic() + delay > limit:
            logger.error(
                "giving up on %d messages at shutdown: database unavailable (%s); "
                "they stay unacknowledged in the broker session and will be redelivered",
                len(batch), exc,
            )
            return False
        log = logger.warning if self._backoff.attempts <= 1 or self._backoff.attempts % 10 == 0 else logger.debug
        log("database unavailable (%s); retrying %d messages in %.2f s", exc, len(batch), delay)
        self._sleep(delay)
        return True

    def _committed(self, batch: Sequence[Delivery], result: WriteResult, seconds: float = 0.0) -> None:
        if self._observer is not None:
            self._observer.observe_commit(batch, seconds)
            self._observer.observe_database_rejections(result)
        self._database_back()
        acked = self._acker.ack(batch)
        stats = self._stats
        stats.in_flight = len(self._inbox)  # the batch is acknowledged now
        stats.batches += 1
        result.add_to(stats)
        stats.last_commit_at = self._now()
        logger.debug("committed batch of %d messages (%s acked=%d)", len(batch), result, acked)

    def _database_back(self) -> None:
        """After a probe or a commit succeeded: the database is available (said if it was not); backoff afresh."""
        if not self._db_ok:
            logger.info("database available again after %d attempts", self._backoff.attempts)
        self._set_db_ok(True)
        self._backoff.reset()


def _as_refused(delivery: Delivery, error: SinkRefused) -> Delivery:
    """The same delivery with every reading turned into a rejection naming the database error (and its code)."""
    reason = f"database refused the message: {error}"
    rejections = (Rejection(delivery.payload, error.code, reason), *delivery.parsed.rejections)
    parsed = Parsed(rejections=rejections)
    return Delivery(
        delivery.mid, delivery.qos, delivery.generation, delivery.topic,
        delivery.payload, delivery.received_at, parsed,
    )
