"""Prometheus metrics of a worker, served on BRIDGE_METRICS_PORT.

Counters are read from Stats when Prometheus scrapes (a custom collector), so
the message path pays nothing for them; only the per-batch histograms and the
rejections by code are recorded as batches commit.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from bridge.model import Delivery
from bridge.stats import Stats
from bridge.store import WriteResult
from iotcommon.contract import RejectionCode


def _utc_now() -> datetime:
    return datetime.now(UTC)


class StatsCollector(Collector):
    """Exposes the worker's Stats counters and gauges at scrape time."""

    def __init__(self, stats: Stats, now: Callable[[], datetime] | None = None) -> None:
        self._stats = stats
        self._now = now or _utc_now

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        """Called by prometheus_client on each scrape."""
        stats = self._stats
        for name, value, text in (
            ("bridge_messages_received", stats.received, "MQTT messages received"),
            ("bridge_readings_stored", stats.stored, "readings inserted into PostgreSQL"),
            ("bridge_readings_duplicate", stats.duplicates, "readings already stored with the same value"),
            ("bridge_readings_conflict", stats.conflicts, "readings whose key was stored with another value"),
            ("bridge_rejected", stats.rejected, "messages or elements stored as rejected (invalid)"),
            ("bridge_readings_revised", stats.revised, "readings that replaced a lower revision (update mode)"),
            ("bridge_readings_stale", stats.stale, "readings of a lower revision than the stored one (update mode)"),
            ("bridge_batches", stats.batches, "committed batches"),
            ("bridge_database_errors", stats.db_errors, "failed attempts to store a batch"),
        ):
            yield CounterMetricFamily(name, text, value=value)
        yield GaugeMetricFamily("bridge_in_flight", "messages received and not yet acknowledged", stats.in_flight)
        yield GaugeMetricFamily("bridge_database_up", "1 when the last database attempt succeeded", int(stats.db_ok))
        yield GaugeMetricFamily("bridge_mqtt_connected", "1 while connected to the broker", int(stats.mqtt_connected))
        yield GaugeMetricFamily(
            "bridge_commit_wait_seconds", "how long the COMMIT in progress has waited so far (0: none)",
            stats.commit_wait_s(self._now()),
        )


class Metrics:
    """The per-batch metrics, recorded by the pipeline after each commit."""

    def __init__(
        self, stats: Stats, registry: CollectorRegistry | None = None, now: Callable[[], datetime] | None = None,
    ) -> None:
        self.registry = registry or CollectorRegistry()
        self.registry.register(StatsCollector(stats, now))
        self._batch_size = Histogram(
            "bridge_batch_size", "messages per committed batch", registry=self.registry,
            buckets=(1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000),
        )
        self._commit_seconds = Histogram(
            "bridge_commit_seconds", "time to store and commit one batch", registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )
        self._rejected = Counter(
            "bridge_rejected_by_code", "rejected messages (or array elements) by reason code", ["code"],
            registry=self.registry,
        )

    def observe_commit(self, batch: Sequence[Delivery], seconds: float) -> None:
        """Record one committed batch."""
        self._batch_size.observe(len(batch))
        self._commit_seconds.observe(seconds)
        for delivery in batch:
            for rejection in delivery.parsed.rejections:
                self._rejected.labels(rejection.code.value).inc()

    def observe_database_rejections(self, result: WriteResult) -> None:
        """Conflicts and stale revisions are rejected by the database step, not by validation."""
        for code, count in ((RejectionCode.CONFLICT, result.conflicts), (RejectionCode.STALE_REVISION, result.stale)):
            if count:
                self._rejected.labels(code.value).inc(count)

    def serve(self, port: int, addr: str = "0.0.0.0") -> None:  # noqa: S104 - scraped from other hosts
        """Start the HTTP endpoint in a daemon thread."""
        start_http_server(port, addr=addr, registry=self.registry)
