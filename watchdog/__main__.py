"""Composition root: read settings, wire the MQTT watcher, database probe and notifier, run."""

from __future__ import annotations

import argparse
import functools
import logging
import os
import sys
import threading
import time
from datetime import UTC, datetime

import paho.mqtt.client as mqtt
import requests
from paho.mqtt.enums import CallbackAPIVersion
from pydantic import SecretStr

from iotcommon.backoff import Backoff
from iotcommon.errors import BrokerTlsError, ConfigError
from iotcommon.signals import on_stop_signal
from iotcommon.transport import apply_endpoint, check_broker_tls
from watchdog.alerting import DiscordNotifier, Dispatcher, LogNotifier, Notifier, redact
from watchdog.checks import PartitionFacts, WorkerRules
from watchdog.config import Settings
from watchdog.database import PrimaryProbe, ReaderProbe, probe_database, probe_partitions, probe_reader
from watchdog.metrics import WatchdogCollector, serve_metrics
from watchdog.replication import ReplicationRules
from watchdog.runner import Limits, Watchdog, check_health, status_table
from watchdog.state import AlertBook
from watchdog.watcher import BrokerWatcher

logger = logging.getLogger("watchdog")

RECONNECT_MAX_S = 10  # reconnect soon after the broker is back, so RECOVERED is prompt
ALERT_DRAIN_S = 5.0  # at SIGTERM, how long queued alerts may take to go out


class RedactingFilter(logging.Filter):
    """Keeps the webhook URL out of every log line, third-party ones (urllib3 at DEBUG) included."""

    def __init__(self, url: SecretStr) -> None:
        super().__init__()
        self._url = url

    def filter(self, record: logging.LogRecord) -> bool:
        """Replace the record's message by its redacted text."""
        message = record.getMessage()
        cleaned = redact(message, self._url)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        if record.exc_info and not record.exc_text:
            # Formatters reuse exc_text, so the traceback is printed redacted too.
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info), self._url)
        return True


def main(argv: list[str] | None = None) -> int:
    """Run continuously (default), `--once`, or the `health` check; return the exit code."""
    parser = argparse.ArgumentParser(prog="python -m watchdog", description=__doc__)
    parser.add_argument("command", nargs="?", default="run", choices=["run", "health"])
    parser.add_argument("--once", action="store_true", help="check once, print a table, exit 1 if anything is down")
    args = parser.parse_args(argv)
    try:
        settings = Settings.from_env(os.environ)
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    if args.command == "health":
        return run_health(settings)
    configure_logging(settings)
    try:
        check_broker_tls(settings.mqtt())
    except BrokerTlsError as exc:
        logger.error("cannot start: %s", exc)
        return 1
    return run_once(settings) if args.once else run_forever(settings)


def configure_logging(settings: Settings) -> None:
    """Log to stderr at WATCHDOG_LOG_LEVEL, with the webhook URL redacted everywhere."""
    logging.basicConfig(
        level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    if settings.discord_webhook_url is not None:
        for handler in logging.getLogger().handlers:
            handler.addFilter(RedactingFilter(settings.discord_webhook_url))


def run_health(settings: Settings) -> int:
    """Exit 0 when the watchdog completed a cycle recently, else 1."""
    healthy, message = check_health(settings.health_path, now=datetime.now(UTC), max_age_s=settings.health_max_age_s)
    print(message)
    return 0 if healthy else 1


def build_client(settings: Settings) -> mqtt.Client:
    """A clean-session MQTT v5 client: the watchdog wants the present, not queued history."""
    endpoint = settings.mqtt()
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=settings.client_id, protocol=mqtt.MQTTv5)
    apply_endpoint(client, endpoint)
    client.reconnect_delay_set(min_delay=1, max_delay=RECONNECT_MAX_S)
    keepalive = max(5, min(60, round(settings.interval_s * 3)))
    client.connect_async(endpoint.host, endpoint.port, keepalive=keepalive, clean_start=True)
    return client


def build_notifier(settings: Settings) -> Notifier:
    """Discord when a webhook is configured, else the log (with a warning)."""
    if settings.discord_webhook_url is None:
        if settings.discord_webhook_url_file:
            logger.warning("DISCORD_WEBHOOK_URL_FILE %s is empty: alerts go to this log only",
                           settings.discord_webhook_url_file)
        else:
            logger.warning("no DISCORD_WEBHOOK_URL or DISCORD_WEBHOOK_URL_FILE: alerts go to this log only")
        return LogNotifier()
    session = requests.Session()
    session.headers["User-Agent"] = "iot-sensors-bridge-watchdog/0.1"
    return DiscordNotifier(
        session, settings.discord_webhook_url,
        timeout_s=settings.discord_timeout_s,
        sleep=time.sleep,
        backoff=Backoff(initial_s=1.0, max_s=30.0),
        mention_roles=settings.mention_role_ids,
    )


def build_watchdog(settings: Settings, client: mqtt.Client, dispatcher: Dispatcher) -> Watchdog:
    """Wire the watcher, the database probes and the alert book."""
    now = functools.partial(datetime.now, UTC)
    endpoint = settings.mqtt()
    watcher = BrokerWatcher(client, client_id=settings.client_id, broker=f"{endpoint.host}:{endpoint.port}", now=now)
    conninfo, read_conninfo, name = settings.conninfo(), settings.read_conninfo(), settings.client_id
    limits = build_limits(settings)

    def probe_primary(timeout_s: float) -> PrimaryProbe:
        return probe_database(conninfo, timeout_s=timeout_s, application_name=name,
                              replication=limits.replication is not None)

    def probe_read(timeout_s: float) -> ReaderProbe:
        return probe_reader(read_conninfo, timeout_s=timeout_s, application_name=name)

    def probe_parts(timeout_s: float) -> PartitionFacts | str:
        return probe_partitions(conninfo, timeout_s=timeout_s, application_name=name)

    return Watchdog(
        watcher,
        probe_primary,
        probe_reader=probe_read if settings.has_reader else None,
        probe_partitions=probe_parts,
        book=AlertBook(threshold=settings.failure_threshold, remind_s=settings.remind_s),
        submit=dispatcher.submit,
        limits=limits,
        health_path=settings.health_path,
        now=now,
    )


def build_limits(settings: Settings) -> Limits:
    """What a check cycle needs of the settings; replication is watched when WATCHDOG_STANDBYS > 0."""
    replication = None
    if settings.standbys > 0:
        replication = ReplicationRules(standbys=settings.standbys, replay_lag_s=settings.replay_lag_s,
                                       failover_clear_s=settings.failover_clear_s)
    return Limits(
        broker_timeout_s=settings.broker_timeout_s,
        database_timeout_s=settings.database_timeout_s,
        expected_workers=settings.expected_workers,
        min_workers=settings.min_workers,
        rules=WorkerRules(heartbeat_timeout_s=settings.heartbeat_timeout_s, stall_s=settings.stall_s),
        data_loss_clear_s=settings.data_loss_clear_s,
        site_bridges=settings.expected_site_bridges,
        min_partitions_ahead=settings.min_partitions_ahead,
        replication=replication,
    )


def run_once(settings: Settings) -> int:
    """Check everything once, print the table; exit 1 when anything is down or degraded."""
    client = build_client(settings)
    watchdog = build_watchdog(settings, client, Dispatcher(LogNotifier()))
    client.loop_start()
    try:
        results = watchdog.check(patient=False)
    finally:
        client.disconnect()
        client.loop_stop()
    print(status_table(results))
    return 1 if any(result.status.failing for result in results) else 0


def run_forever(settings: Settings) -> int:
    """Check every WATCHDOG_INTERVAL_S until SIGTERM/SIGINT; log a summary line and exit 0."""
    stop = threading.Event()

    def begin_stopping(name: str) -> None:
        logger.info("received %s: stopping", name)
        stop.set()  # Event.set() takes the lock stop.wait() holds: off the signal handler (iotcommon.signals)

    on_stop_signal(begin_stopping)
    dispatcher = Dispatcher(build_notifier(settings))
    client = build_client(settings)
    watchdog = build_watchdog(settings, client, dispatcher)
    dispatcher.start()
    if settings.metrics_port:
        collector = WatchdogCollector(lambda: watchdog.last_results, lambda: (watchdog.cycles, watchdog.alerts),
                                      watchdog.down)
        serve_metrics(collector, settings.metrics_port)
    client.loop_start()
    workers = ", ".join(settings.expected_workers) or "none listed"
    sites = ", ".join(settings.expected_site_bridges) or "none listed"
    logger.info("watchdog %s started: every %.1f s, alert after %d failures; workers: %s (at least %d alive); "
                "site bridges: %s", settings.client_id, settings.interval_s, settings.failure_threshold, workers,
                settings.min_workers, sites)
    try:
        watchdog.run(stop, settings.interval_s)
    finally:
        dispatcher.stop(ALERT_DRAIN_S)
        client.disconnect()
        client.loop_stop()
    logger.info("watchdog %s stopped: cycles=%d alerts=%d sent=%d failed=%d down=%s", settings.client_id,
                watchdog.cycles, watchdog.alerts, dispatcher.sent, dispatcher.failed, ",".join(watchdog.down()) or "-")
    return 0


if __name__ == "__main__":
    sys.exit(main())
