"""bridge.metrics: counters read from Stats at scrape time, per-batch histograms, reason labels."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from prometheus_client import generate_latest

from bridge.inbox import Delivery
from bridge.metrics import Metrics, reason_label
from bridge.model import Parsed, Rejection
from bridge.stats import Stats

AT = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    "reason, label",
    [
        ("value: Input should be a finite number (got NaN)", "value"),
        ("element 3: timestamp: is required", "timestamp"),
        ("payload is not valid JSON: expected value", "payload"),
        ("topic: 'x' does not match sensors/<sensor_id>/readings", "topic"),
        ("conflict: a reading for sensor 1 ...", "conflict"),
        ("database refused the message: ...", "database"),
        ("internal error while validating (KeyError: 'x')", "internal"),
        ("element 2: must be a JSON object (got 5)", "element"),
        ("Something unforeseen", "other"),
    ],
)
def test_reason_labels_are_the_field_named(reason: str, label: str) -> None:
    assert reason_label(reason) == label


def delivery(rejections: tuple[str, ...] = ()) -> Delivery:
    parsed = Parsed(rejections=tuple(Rejection(b"x", reason) for reason in rejections))
    return Delivery(1, 1, 1, "sensors/1/readings", b"x", AT, parsed)


def scrape(metrics: Metrics) -> str:
    return generate_latest(metrics.registry).decode()


def test_counters_come_from_stats_at_scrape_time() -> None:
    stats = Stats()
    metrics = Metrics(stats)
    stats.received, stats.stored, stats.in_flight, stats.db_ok = 10, 7, 3, False
    text = scrape(metrics)
    assert "bridge_messages_received_total 10.0" in text
    assert "bridge_readings_stored_total 7.0" in text
    assert "bridge_in_flight 3.0" in text
    assert "bridge_database_up 0.0" in text
    stats.stored = 9
    assert "bridge_readings_stored_total 9.0" in scrape(metrics)


def test_commits_feed_histograms_and_reasons() -> None:
    metrics = Metrics(Stats())
    batch = [delivery(("value: bad",)), delivery(("value: bad", "element 1: unit: x")), delivery()]
    metrics.observe_commit(batch, 0.02)
    metrics.observe_conflicts(2)
    metrics.observe_conflicts(0)
    text = scrape(metrics)
    assert "bridge_batch_size_count 1.0" in text
    assert "bridge_batch_size_sum 3.0" in text
    assert 'bridge_commit_seconds_bucket{le="0.025"} 1.0' in text
    assert 'bridge_rejected_by_reason_total{reason="value"} 2.0' in text
    assert 'bridge_rejected_by_reason_total{reason="unit"} 1.0' in text
    assert 'bridge_rejected_by_reason_total{reason="conflict"} 2.0' in text


def test_watchdog_collector_reports_each_check() -> None:
    from prometheus_client import CollectorRegistry

    from watchdog.checks import Result, Status
    from watchdog.metrics import WatchdogCollector

    results = [Result("broker", Status.OK, "ok"), Result("database", Status.DOWN, "refused"),
               Result("bridge-1", Status.UNKNOWN, "broker down")]
    registry = CollectorRegistry()
    registry.register(WatchdogCollector(lambda: results, lambda: (12, 3), lambda: ["database"]))
    text = generate_latest(registry).decode()
    assert 'watchdog_component_up{component="broker"} 1.0' in text
    assert 'watchdog_component_up{component="database"} 0.0' in text
    assert 'component="bridge-1"} ' not in text.split("watchdog_component_alerted")[0]
    assert 'watchdog_component_alerted{component="database"} 1.0' in text
    assert "watchdog_cycles_total 12.0" in text
    assert "watchdog_alerts_total 3.0" in text
