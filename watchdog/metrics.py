"""Prometheus metrics of the watchdog (WATCHDOG_METRICS_PORT): the state of every check."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from watchdog.checks import Result, Status

_UP = {Status.OK: 1.0, Status.DEGRADED: 0.5, Status.DOWN: 0.0}


class WatchdogCollector(Collector):
    """Reads the latest cycle's results when Prometheus scrapes."""

    def __init__(self, results: Callable[[], list[Result]], counts: Callable[[], tuple[int, int]],
                 down: Callable[[], list[str]]) -> None:
        self._results = results
        self._counts = counts
        self._down = down

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        """Called by prometheus_client on each scrape."""
        up = GaugeMetricFamily(
            "watchdog_component_up", "1 up, 0.5 degraded, 0 down, per component (unknown: absent)",
            labels=["component"],
        )
        alerted = GaugeMetricFamily("watchdog_component_alerted", "1 while a DOWN alert stands", labels=["component"])
        down = set(self._down())
        for result in self._results():
            if result.status in _UP:
                up.add_metric([result.component], _UP[result.status])
            alerted.add_metric([result.component], float(result.component in down))
        cycles, alerts = self._counts()
        yield up
        yield alerted
        yield CounterMetricFamily("watchdog_cycles", "check cycles run", value=cycles)
        yield CounterMetricFamily("watchdog_alerts", "alerts raised (DOWN, reminders, RECOVERED)", value=alerts)


def serve_metrics(collector: WatchdogCollector, port: int, addr: str = "0.0.0.0") -> CollectorRegistry:  # noqa: S104
    """Serve the collector on port (scraped from other hosts); return its registry."""
    registry = CollectorRegistry()
    registry.register(collector)
    start_http_server(port, addr=addr, registry=registry)
    return registry
