"""Composition root: read settings, wire the real client, pool and threads, run one worker."""

from __future__ import annotations

import argparse
import functools
import logging
import os
import sys
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from bridge.config import Settings, former_names
from bridge.errors import BridgeError, SinkMisconfigured, SinkUnavailable
from bridge.health import check_alive, check_health
from bridge.heartbeat import Heartbeat
from bridge.inbox import Inbox
from bridge.metrics import Metrics
from bridge.mqtt import MqttConsumer, PlainClient, make_client
from bridge.partition import main as run_partition
from bridge.pipeline import Pipeline
from bridge.replay import build_parser as build_replay_parser
from bridge.replay import run_replay
from bridge.stats import Stats
from bridge.store import Database, PostgresSink
from bridge.validation import parse_message
from iotcommon.backoff import Backoff
from iotcommon.contract import WorkerStatus, status_topic
from iotcommon.errors import BrokerTlsError, ConfigError
from iotcommon.signals import on_stop_signal
from iotcommon.transport import apply_endpoint, check_broker_tls

logger = logging.getLogger("bridge")

RECONNECT_MAX_S = 30  # paho's default of 120 s leaves a worker idle long after the broker is back


class StartupError(BridgeError):
    """The worker cannot start: the database or broker is unusable as configured."""


def main(argv: list[str] | None = None) -> int:
    """Run a worker (default), the `health` check, `replay-rejected` or `partition`; return the exit code."""
    parser = argparse.ArgumentParser(prog="python -m bridge", description=__doc__)
    parser.add_argument("command", nargs="?", default="run",
                        choices=["run", "health", "replay-rejected", "partition"])
    parser.add_argument("options", nargs=argparse.REMAINDER,
                        help="replay-rejected or partition options (see their --help)")
    args = parser.parse_args(argv)
    if args.options and args.command == "run":
        parser.error(f"unrecognized arguments: {' '.join(args.options)}")
    if args.command == "partition":  # the owner's command, with its own settings (bridge/partition/settings.py)
        return run_partition(args.options)
    replay_options = build_replay_parser().parse_args(args.options) if args.command == "replay-rejected" else None
    health_options = build_health_parser().parse_args(args.options) if args.command == "health" else None
    try:
        settings = Settings.from_env(os.environ)
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    if health_options is not None:
        return run_health(settings, live=health_options.live)
    logging.basicConfig(
        level=settings.log_level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    for name in former_names(os.environ):
        logger.warning("%s is read under its former name; rename it", name)
    if replay_options is not None:
        return run_replay(settings, replay_options)
    try:
        return run_worker(settings)
    except (StartupError, BrokerTlsError, SinkMisconfigured) as exc:
        logger.error("cannot start: %s", exc)
        return 1


def build_health_parser() -> argparse.ArgumentParser:
    """The options of `python -m bridge health`."""
    parser = argparse.ArgumentParser(prog="python -m bridge health", description="Exit 0 if the worker is healthy.")
    parser.add_argument("--live", action="store_true",
                        help="only check that the worker is alive (a liveness probe), not its broker connection")
    return parser


def run_health(settings: Settings, *, live: bool = False) -> int:
    """Exit 0 when the worker's health file is fresh (and, unless `live`, it is connected), else 1."""
    check = check_alive if live else check_health
    healthy, message = check(settings.health_path, now=datetime.now(UTC), max_age_s=settings.health_max_age_s)
    print(message)
    return 0 if healthy else 1


@dataclass(frozen=True)
class Worker:
    """The wired parts of one worker."""

    stats: Stats
    inbox: Inbox
    sink: PostgresSink
    client: PlainClient  # or its FastClient
    consumer: MqttConsumer
    pipeline: Pipeline
    heartbeat: Heartbeat


def build_worker(settings: Settings) -> Worker:
    """Wire the client, sink, consumer, pipeline and heartbeat; nothing connects yet."""
    # The inbox enforces Receive Maximum itself: some brokers overshoot it (bridge/inbox.py).
    stats, inbox = Stats(), Inbox(limit=settings.max_in_flight)
    now = functools.partial(datetime.now, UTC)
    database = Database(
        settings.conninfo(),
        application_name=settings.client_id,
        statement_timeout_ms=settings.statement_timeout_ms,
    )
    sink = PostgresSink(database, client_id=settings.client_id, on_conflict=settings.on_conflict,
                        watcher=stats, now=now)
    client = build_client(settings)
    limits = settings.limits
    consumer = MqttConsumer(
        client, inbox,
        client_id=settings.client_id,
        subscription=settings.subscription,
        parse=lambda topic, payload, at: parse_message(topic, payload, now=at, limits=limits),
        stats=stats,
        now=now,
    )
    metrics = Metrics(stats)
    if settings.metrics_port:
        metrics.serve(settings.metrics_port)
        logger.info("metrics on :%d/metrics", settings.metrics_port)
    pipeline = Pipeline(
        inbox, sink, consumer,
        observer=metrics,
        stats=stats,
        batch_size=settings.batch_size,
        linger_s=settings.linger_ms / 1000,
        backoff=Backoff(max_s=settings.db_retry_max_s),
        now=now,
    )
    heartbeat = Heartbeat(
        lambda topic, payload: client.publish(topic, payload, qos=0, retain=True),
        stats,
        client_id=settings.client_id,
        interval_s=settings.heartbeat_s,
        health_path=settings.health_path,
        now=now,
        commit_wait_warn_s=settings.commit_wait_warn_s,
    )
    return Worker(stats, inbox, sink, client, consumer, pipeline, heartbeat)


def run_worker(settings: Settings) -> int:
    """Consume until SIGTERM/SIGINT, drain within the grace period, and log a summary."""
    worker = build_worker(settings)
    stop, heartbeat_stop = threading.Event(), threading.Event()
    stopping_since: list[float] = []
    # Before anything that waits: a SIGTERM during start-up must stop the worker
    # (as PID 1 in a container, Python has no default handler for it).
    install_signal_handlers(stop, worker, stopping_since)
    grace_s = max(settings.shutdown_grace_s - 1.0, 0.1)  # keep a second to say goodbye
    check_broker_tls(settings.mqtt())
    check_database(worker)
    try:
        worker.client.loop_start()
        threading.Thread(target=worker.heartbeat.run, args=(heartbeat_stop,), name="heartbeat", daemon=True).start()
        wait_until_subscribed(worker.consumer, settings, stop)
        worker.heartbeat.beat()  # says "connected" now, not an interval later (the health check waits for it)
        logger.info("bridge %s ready: %s -> PostgreSQL", settings.client_id, settings.subscription)
        worker.pipeline.run(stop, drain_deadline=lambda: stopping_since[0] + grace_s if stopping_since else None)
    finally:
        heartbeat_stop.set()
        worker.heartbeat.beat()
        say_goodbye(worker.client, worker.consumer)
        worker.sink.close()
    logger.info("bridge %s stopped: %s", settings.client_id, worker.stats.summary())
    return 0


def check_database(worker: Worker) -> None:
    """Stop at once on what no waiting fixes; an unreachable database is an outage, waited out.

    While it lasts the worker still connects to the broker, holds what it
    receives unacknowledged (at most BRIDGE_MAX_IN_FLIGHT) and reports
    db_ok=false in its heartbeat; the pipeline looks for the database on its
    backoff schedule and resumes by itself.
    """
    try:
        worker.pipeline.check_database()  # the pipeline decides on availability; Stats reports it
    except SinkUnavailable as exc:
        logger.warning("database unavailable at start (%s); starting anyway, messages wait until it is back", exc)


def build_client(settings: Settings) -> PlainClient:
    """A paho client for MQTT v5 with a persistent session and manual acks."""
    endpoint = settings.mqtt()
    client = make_client(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id=settings.client_id,
        protocol=mqtt.MQTTv5,
        manual_ack=True,
    )
    apply_endpoint(client, endpoint)
    # The Last Will says "crashed", not "offline": a watchdog can tell a crash
    # (or a frozen worker, or a lost link) from a clean stop.
    client.will_set(status_topic(settings.client_id), WorkerStatus.CRASHED.value, qos=1, retain=True)
    client.reconnect_delay_set(min_delay=1, max_delay=RECONNECT_MAX_S)
    properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    properties.SessionExpiryInterval = settings.session_expiry_s
    # Receive Maximum caps unacknowledged messages the broker sends us, which
    # bounds the worker's memory while the database is slow or down.
    properties.ReceiveMaximum = settings.max_in_flight
    client.connect_async(
        endpoint.host, endpoint.port, keepalive=settings.keepalive_s, clean_start=False, properties=properties
    )
    return client


def wait_until_subscribed(consumer: MqttConsumer, settings: Settings, stop: threading.Event) -> None:
    """Wait for the first SUBACK; fail on a refusal (bad credentials), warn if the broker is slow."""
    deadline = time.monotonic() + settings.startup_timeout_s
    while not consumer.ready.is_set() and not stop.is_set():
        if consumer.refused:
            raise StartupError(f"the broker (MQTT_URL) refused {settings.client_id}: {consumer.refused}")
        if time.monotonic() > deadline:
            endpoint = settings.mqtt()
            logger.warning(
                "no subscription yet after %.0f s; is the broker at %s:%d up? Still trying",
                settings.startup_timeout_s, endpoint.host, endpoint.port,
            )
            return
        consumer.ready.wait(0.1)


def install_signal_handlers(stop: threading.Event, worker: Worker, stopping_since: list[float]) -> None:
    """On SIGTERM/SIGINT stop taking messages, then let the pipeline drain."""
    once = threading.Lock()

    def begin_stopping(name: str) -> None:
        with once:
            if stop.is_set():
                return
            logger.info("received %s: draining, then stopping", name)
            worker.consumer.stop_accepting()
            stopping_since.append(time.monotonic())
            stop.set()
        worker.inbox.wake()  # the writer's lock: safe here, off the signal handler (iotcommon.signals)

    on_stop_signal(begin_stopping)


def say_goodbye(client: mqtt.Client, consumer: MqttConsumer) -> None:
    """Publish the retained offline status, then disconnect; the broker keeps our session."""
    if client.is_connected():
        info = consumer.publish_status(WorkerStatus.OFFLINE)
        try:
            info.wait_for_publish(timeout=2.0)
        except (RuntimeError, ValueError):
            logger.warning("could not publish offline status")
    client.disconnect()
    client.loop_stop()


if __name__ == "__main__":
    sys.exit(main())
