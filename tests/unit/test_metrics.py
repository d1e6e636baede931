"""bridge.metrics: counters read from Stats at scrape time, per-batch histograms, rejections by code."""

from __future__ import annotations

from datetime import UTC, datetime

from fakes import delivery
from prometheus_client import generate_latest

from bridge.metrics import Metrics
from bridge.stats import Stats
from bridge.store.staging import WriteResult
from iotcommon.contract import RejectionCode

AT = datetime(2026, 1, 1, tzinfo=UTC)


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
    assert "bridge_readings_revised_total 0.0" in text
    stats.stored, stats.revised, stats.stale = 9, 4, 2
    assert "bridge_readings_revised_total 4.0" in scrape(metrics)
    assert "bridge_readings_stale_total 2.0" in scrape(metrics)
    assert "bridge_readings_stored_total 9.0" in scrape(metrics)


def test_a_waiting_commit_shows_how_long_it_has_waited() -> None:
    stats = Stats()
    metrics = Metrics(stats, now=lambda: AT)
    assert "bridge_commit_wait_seconds 0.0" in scrape(metrics)

    stats.commit_started(datetime(2025, 12, 31, 23, 59, 48, tzinfo=UTC))

    assert "bridge_commit_wait_seconds 12.0" in scrape(metrics)


def test_commits_feed_histograms_and_reasons() -> None:
    metrics = Metrics(Stats())
    not_finite, too_long = RejectionCode.NOT_FINITE, RejectionCode.OUT_OF_RANGE
    batch = [delivery(1, rows=0, rejections=[not_finite]), delivery(2, rejections=[not_finite, too_long]), delivery(3)]
    metrics.observe_commit(batch, 0.02)
    metrics.observe_database_rejections(WriteResult(conflicts=2, stale=3))
    metrics.observe_database_rejections(WriteResult())
    text = scrape(metrics)
    assert "bridge_batch_size_count 1.0" in text
    assert "bridge_batch_size_sum 3.0" in text
    assert 'bridge_commit_seconds_bucket{le="0.025"} 1.0' in text
    assert 'bridge_rejected_by_code_total{code="not_finite"} 2.0' in text
    assert 'bridge_rejected_by_code_total{code="out_of_range"} 1.0' in text
    assert 'bridge_rejected_by_code_total{code="conflict"} 2.0' in text
    assert 'bridge_rejected_by_code_total{code="stale_revision"} 3.0' in text


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
