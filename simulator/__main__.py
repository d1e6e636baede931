"""Composition root of the simulator: parse arguments and the connection settings, wire, run, report.

    python -m simulator [--messages 5000] [--duration 60] [--sensors 50] [--devices N] [--verify] ...

Exit codes: 0 all confirmed (and verified), 1 something failed or is missing,
2 a usage or connection error (broker or database unreachable).
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import os
import sys
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from iotcommon.errors import ConfigError
from iotcommon.settings import MqttEndpoint
from iotcommon.transport import apply_endpoint, handshake_failure
from simulator.config import Settings
from simulator.fleet_run import FleetError, FleetPlan, run_fleet
from simulator.pacing import Pacer, SystemClock
from simulator.publisher import Publisher, RunResult
from simulator.readings import Expected, Key, Kind, MessageFactory, new_run_id, plan_kinds
from simulator.replica import primary_flush_lsn
from simulator.report import Latency, ProgressLine, PublishSummary, VerifySummary, format_summary, summary_json
from simulator.verify import PostgresRunStore, RunIdentity, VerifyError, verify

logger = logging.getLogger("simulator")

CONNECT_TIMEOUT_S = 10.0
RECONNECT_MAX_S = 5  # a load test should resume quickly once the broker is back
MAX_DEVICES = 100_000


class UsageError(Exception):
    """A bad argument or environment variable; the message names it."""


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line; see README, "Simulator"."""
    parser = argparse.ArgumentParser(prog="python -m simulator", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=5000, help="messages to publish (default 5000)")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds to spread them over (default 60)")
    parser.add_argument("--rate", default=None, help="'max' (no pacing) or messages/s (overrides --duration)")
    parser.add_argument("--sensors", type=int, default=50, help="distinct sensor ids, from --first-sensor")
    parser.add_argument("--first-sensor", type=int, default=1)
    parser.add_argument("--duplicates", type=float, default=0.0, help="fraction of exact re-sends (0..1)")
    parser.add_argument("--invalid", type=float, default=0.0, help="fraction of invalid messages (0..1)")
    parser.add_argument("--array", type=int, default=1, help="readings per message (1..1000)")
    parser.add_argument("--seed", type=int, default=1, help="makes the mix and the values reproducible")
    parser.add_argument("--run-id", default=None, help="tag of this run's variables (default: random)")
    # paho scans every unconfirmed message on each PUBACK, so a large window
    # costs more than it buys: 1000 halves the publish rate measured at 100.
    parser.add_argument("--window", type=int, default=100, help="most unconfirmed messages at a time (100)")
    parser.add_argument("--devices", type=int, default=None,
                        help="spread the readings over N device connections, each its own client id and its "
                             "sensors' topics (default: one connection)")
    parser.add_argument("--confirm-timeout", type=float, default=60.0, help="seconds to wait for the last PUBACKs")
    parser.add_argument("--verify", action="store_true",
                        help="check PostgreSQL afterwards (DATABASE_READ_URL, else DATABASE_URL)")
    parser.add_argument("--verify-timeout", type=float, default=60.0)
    parser.add_argument("--json", metavar="PATH", help="also write the summary as JSON ('-' for stdout)")
    parser.add_argument("--progress", choices=["auto", "bar", "lines", "none"], default="auto")
    parser.add_argument("--log-level", default="WARNING", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    return parser.parse_args(argv)


def check_args(args: argparse.Namespace) -> float | None:
    """Validate ranges; return the pacing duration in seconds (None for --rate max)."""
    if args.messages < 1:
        raise UsageError("--messages must be at least 1")
    if not 1 <= args.sensors <= 1_000_000 or args.first_sensor < 1:
        raise UsageError("--sensors must be 1..1000000 and --first-sensor at least 1")
    if not 1 <= args.array <= 1000:
        raise UsageError("--array must be 1..1000 (the contract's array limit)")
    for name in ("duplicates", "invalid"):
        if not 0.0 <= getattr(args, name) < 1.0:
            raise UsageError(f"--{name} must be a fraction in [0, 1)")
    if args.run_id is not None and not (args.run_id.isascii() and args.run_id.isalnum() and len(args.run_id) <= 16):
        raise UsageError("--run-id must be 1-16 letters or digits")
    if not 1 <= args.window <= 65_535:
        raise UsageError("--window must be 1..65535")
    check_devices(args)
    if args.rate is None:
        if args.duration <= 0:
            raise UsageError("--duration must be positive")
        return float(args.duration)
    if args.rate == "max":
        return None
    try:
        rate = float(args.rate)
    except ValueError:
        raise UsageError("--rate must be 'max' or a number of messages per second") from None
    if rate <= 0:
        raise UsageError("--rate must be positive")
    return float(args.messages / rate)


def check_devices(args: argparse.Namespace) -> None:
    """--devices: each device publishes its own sensors' readings, so there are at most --sensors."""
    if args.devices is not None and not 1 <= args.devices <= min(args.sensors, MAX_DEVICES):
        raise UsageError(f"--devices must be 1..{MAX_DEVICES} and at most --sensors ({args.sensors}): "
                         "each device publishes the readings of its own sensors")


def build_client(endpoint: MqttEndpoint, client_id: str, window: int) -> mqtt.Client:
    """A paho MQTT v5 client that keeps unconfirmed messages and resends them after a reconnect."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    apply_endpoint(client, endpoint)
    client.max_inflight_messages_set(window)
    client.max_queued_messages_set(0)  # the publisher's window bounds it
    client.reconnect_delay_set(min_delay=1, max_delay=RECONNECT_MAX_S)
    return client


def connect(client: mqtt.Client, publisher: Publisher, endpoint: MqttEndpoint) -> None:
    """Connect synchronously (so an unreachable broker fails fast), then start the network thread."""
    where = f"{endpoint.host}:{endpoint.port}"
    try:
        client.connect(endpoint.host, endpoint.port, keepalive=30)
    except OSError as exc:
        failure = handshake_failure(endpoint, exc)  # a certificate or listener problem, not an unreachable broker
        raise UsageError(str(failure or f"cannot reach the broker at {where} (MQTT_URL): {exc}")) from None
    client.loop_start()
    if not publisher.connected.wait(CONNECT_TIMEOUT_S) or publisher.refused:
        client.loop_stop()
        why = publisher.refused or f"no CONNACK within {CONNECT_TIMEOUT_S:.0f} s"
        raise UsageError(f"the broker at {where} (MQTT_URL) did not accept the connection: {why}")


def summarise(args: argparse.Namespace, run_id: str, kinds: list[Kind], result: RunResult) -> PublishSummary:
    """Counters and rates of the publishing side."""
    tally = result.tally
    unique = kinds.count(Kind.UNIQUE)
    carried = (unique + kinds.count(Kind.DUPLICATE)) * args.array
    elapsed = max(result.elapsed_s, 1e-9)
    share = tally.confirmed / max(len(kinds), 1)
    return PublishSummary(
        run_id=run_id, messages=len(kinds), readings=unique * args.array,
        duplicates=kinds.count(Kind.DUPLICATE), invalid=kinds.count(Kind.INVALID),
        published=tally.published, confirmed=tally.confirmed, failed=tally.failed, resent=tally.resent,
        reconnects=tally.reconnects, elapsed_s=round(result.elapsed_s, 3),
        rate_msgs_per_s=round(tally.confirmed / elapsed, 1), rate_readings_per_s=round(carried * share / elapsed, 1),
        puback_latency=Latency.of(tally.puback_latencies_s),
    )


def run_verify(
    settings: Settings, identity: RunIdentity, result: RunResult, *, rejected_expected: int, timeout_s: float,
) -> VerifySummary:
    """Compare the database (DATABASE_READ_URL, else DATABASE_URL) with what was sent."""
    expected: dict[Key, Expected] = {}
    published_at: dict[Key, datetime] = {}
    for message in result.messages:
        for key, want in message.readings:
            expected[key] = want
            published_at[key] = result.published_at[message.index]
    variable = "DATABASE_READ_URL" if settings.has_reader else "DATABASE_URL"
    store = PostgresRunStore(settings.read_conninfo(), identity, variable=variable)
    # With a reader of its own, DATABASE_URL is the primary: asked only for its WAL position.
    primary = settings.conninfo() if settings.has_reader else None
    try:
        return verify(
            store, expected, published_at, rejected_expected=rejected_expected, timeout_s=timeout_s,
            clock=SystemClock(), extra_rejected_allowed=result.tally.resent > 0,
            primary_lsn=lambda: primary_flush_lsn(primary) if primary else None,
        )
    finally:
        store.close()


def run(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    """Publish, optionally verify, print the summary; return the exit code."""
    duration = check_args(args)
    try:
        settings = Settings.from_env(environ)
    except ConfigError as exc:
        raise UsageError(str(exc)) from None
    endpoint = settings.mqtt()
    run_id = args.run_id or new_run_id()
    try:
        kinds = plan_kinds(args.messages, duplicates=args.duplicates, invalid=args.invalid, seed=args.seed)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    factory = MessageFactory(kinds, sensors=args.sensors, array=args.array, run_id=run_id, seed=args.seed,
                             first_sensor=args.first_sensor)
    clock, wall = SystemClock(), functools.partial(datetime.now, UTC)
    pacer = Pacer.for_run(clock, messages=args.messages, duration_s=duration)
    started_at = wall() - timedelta(seconds=1)
    if args.devices is None:
        result = publish_with_one_client(args, endpoint, factory, pacer, run_id)
    else:
        result = publish_with_fleet(args, endpoint, factory, pacer, run_id)
    publish = summarise(args, run_id, kinds, result)
    checked = None
    if args.verify:
        identity = RunIdentity(variable_suffix=factory.marker, since=started_at)
        checked = run_verify(settings, identity, result, rejected_expected=publish.invalid,
                             timeout_s=args.verify_timeout)
    print(format_summary(publish, checked))
    write_json(args.json, summary_json(publish, checked))
    return 0 if publish.failed == 0 and publish.confirmed == publish.messages and (checked is None or checked.ok) else 1


def publish_with_one_client(
    args: argparse.Namespace, endpoint: MqttEndpoint, factory: MessageFactory, pacer: Pacer, run_id: str,
) -> RunResult:
    """Every message over one paho connection (the default)."""
    clock, wall = SystemClock(), functools.partial(datetime.now, UTC)
    client = build_client(endpoint, f"simulator-{run_id}-{uuid.uuid4().hex[:6]}", args.window)
    publisher = Publisher(
        client, factory, pacer=pacer, clock=clock, wall=wall, window=args.window,
        confirm_timeout_s=args.confirm_timeout, progress=make_progress(args.progress),
    )
    connect(client, publisher, endpoint)
    try:
        return publisher.run()
    finally:
        client.disconnect()
        client.loop_stop()


def publish_with_fleet(
    args: argparse.Namespace, endpoint: MqttEndpoint, factory: MessageFactory, pacer: Pacer, run_id: str,
) -> RunResult:
    """The messages spread over --devices connections (simulator/fleet_run.py)."""
    plan = FleetPlan(devices=args.devices, client_id_prefix=f"simulator-{run_id}", window=args.window,
                     connect_timeout_s=CONNECT_TIMEOUT_S, confirm_timeout_s=args.confirm_timeout,
                     first_sensor=args.first_sensor)
    try:
        return run_fleet(plan, endpoint, factory, pacer, progress=make_progress(args.progress))
    except FleetError as exc:
        raise UsageError(str(exc)) from None


def make_progress(mode: str) -> ProgressLine | None:
    """The progress display on stderr: a bar on a terminal, plain lines otherwise."""
    if mode == "none":
        return None
    tty = sys.stderr.isatty() if mode == "auto" else mode == "bar"
    return ProgressLine(sys.stderr, tty=tty)


def write_json(path: str | None, summary: dict[str, object]) -> None:
    """Write the summary to PATH, or stdout for '-'."""
    if path is None:
        return
    text = json.dumps(summary, indent=2)
    if path == "-":
        print(text)
    else:
        Path(path).write_text(text + "\n", encoding="utf-8")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `python -m simulator` and `iot-simulator`."""
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)
    try:
        return run(args, os.environ)
    except (UsageError, VerifyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
