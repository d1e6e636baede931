"""Latency and group commit: the bridge of another revision against this tree's, side by side in one run.

    python benchmarks/latency.py --before <rev>                 # seed load and drains, fsync off (the tests' setting)
    python benchmarks/latency.py --before <rev> --durable       # the same with fsync=on, synchronous_commit=on
    python benchmarks/latency.py --before <rev> --variant linger50:BRIDGE_LINGER_MS=50

Starts a throwaway PostgreSQL and Mosquitto, checks <rev> out into a temporary
folder (`git archive`), and runs every side on the same servers, the sides
alternating within each round:

1. seed load: 3 workers, `python -m simulator --messages 83*S --duration S --verify`
   (83 readings/s, the 5,000 a minute of the product brief); publish->commit p50 / p99 /
   max from the simulator's verification (to `ingested_at`, the transaction's start),
   commits per second from the workers' final heartbeats (`batches`), and the mean time
   one batch took to store and commit (the workers' `bridge_commit_seconds`), which the
   latency figures do not include;
2. drains: each side's group registers its session, the backlog (single readings) is
   published once, then each group is timed from process start until every reading is
   committed, with 1 and 2 workers.

The simulator and the harness are this tree's on every side: only the workers differ.
See docs/performance.md (Batching: group commit).
"""

from __future__ import annotations

import argparse
import io
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from statistics import median

import harness  # benchmarks/ is on sys.path: this script's own folder
import requests
from bench import SEED_RATE, Bench, backlog
from prometheus_client.parser import text_string_to_metric_families

from devstack.mosquitto import MosquittoServer
from devstack.mqtt_client import MqttTestClient
from devstack.postgres import PostgresServer, apply_schema
from devstack.processes import REPO_ROOT, find_binary, free_port
from devstack.workers import WorkerProcess, start_online

ONLINE_TIMEOUT_S = 60.0
SEED_WORKERS = 3
DURABLE = {"fsync": "on", "synchronous_commit": "on"}


@dataclass(frozen=True)
class Side:
    """The workers of one column: a source tree and settings of their own."""

    label: str
    source: Path
    overrides: dict[str, str] = field(default_factory=dict)


@dataclass
class Figures:
    """One side's figures over the rounds."""

    p50_ms: list[float] = field(default_factory=list)
    p99_ms: list[float] = field(default_factory=list)
    max_ms: list[float] = field(default_factory=list)
    commits_per_s: list[float] = field(default_factory=list)
    write_ms: list[float] = field(default_factory=list)  # mean time to store and commit one batch
    drains: dict[int, list[float]] = field(default_factory=dict)  # workers -> readings/s
    drain_batch: dict[int, list[float]] = field(default_factory=dict)  # workers -> mean messages per commit


def checkout(rev: str, into: Path) -> Path:
    """The tree of `rev` (a commit of this repository), unpacked into `into`."""
    into.mkdir(parents=True)
    git = str(find_binary("git", "install git"))
    archive = subprocess.run([git, "archive", rev], cwd=REPO_ROOT, check=True, capture_output=True).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    return into


def workers(
    bench: Bench, side: Side, size: int, name: str, *, metrics_ports: Sequence[int] = ()
) -> list[WorkerProcess]:
    """`size` workers of `side` in the share group `name`; with `metrics_ports` (one each), metrics on those."""
    ports = list(metrics_ports) or [0] * size  # 0: no metrics endpoint (the bridge's default)
    if len(ports) != size:
        raise ValueError(f"{len(ports)} metrics ports for {size} workers")
    return [harness.bridge_worker(f"{name}-{n}", name, mqtt_url=bench.mqtt, database_url=bench.bridge_url,
                                  tmp=bench.tmp, source=side.source, bridge_metrics_port=port, **side.overrides)
            for n, port in enumerate(ports)]


def seed_load(bench: Bench, side: Side, seconds: int, figures: Figures) -> None:
    """Publish->commit latency and commits/s of 3 fresh workers at 83 readings/s, and the time each write took."""
    ports = [free_port() for _ in range(SEED_WORKERS)]
    members = workers(bench, side, SEED_WORKERS, f"seed-{side.label}-{int(time.time())}", metrics_ports=ports)
    start_online(members, bench.mqtt, timeout_s=ONLINE_TIMEOUT_S)
    try:
        latency = bench.latency(seconds)
        write_s, writes = (sum(values) for values in zip(*(_commit_seconds(port) for port in ports), strict=True))
    finally:
        harness.stop_all(members)
        harness.end_sessions(members, bench.mqtt)
    batches = sum(member.heartbeat().batches for member in members)  # the final beat, after the drain
    figures.p50_ms.append(float(latency["p50_ms"] or 0))
    figures.p99_ms.append(float(latency["p99_ms"] or 0))
    figures.max_ms.append(float(latency["max_ms"] or 0))
    figures.commits_per_s.append(batches / seconds)
    figures.write_ms.append(1000 * write_s / writes if writes else 0.0)


def _commit_seconds(port: int) -> tuple[float, float]:
    """(seconds spent storing and committing, batches) from a worker's bridge_commit_seconds histogram."""
    text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    family = next(f for f in text_string_to_metric_families(text) if f.name == "bridge_commit_seconds")
    values = {sample.name: sample.value for sample in family.samples}
    return values["bridge_commit_seconds_sum"], values["bridge_commit_seconds_count"]


def drains(bench: Bench, sides: list[Side], sizes: list[int], messages: int, *, round_: int,
           figures: dict[str, Figures]) -> None:
    """Every side's drain of the same backlog, with each number of workers; sides alternate."""
    stamp = int(time.time())
    groups = [(side, size, workers(bench, side, size, f"drain-{side.label}-{size}-r{round_}-{stamp}"))
              for size in sizes for side in (sides if round_ % 2 == 0 else list(reversed(sides)))]
    try:
        for *_, members in groups:
            start_online(members, bench.mqtt, timeout_s=ONLINE_TIMEOUT_S)
            harness.stop_all(members)
        with MqttTestClient.from_url(bench.mqtt) as publisher:
            publisher.publish_many(backlog(messages, 1, f"l{round_}"), timeout=900)
        for side, size, members in groups:
            harness.truncate(bench.admin)
            seconds = harness.timed(members, lambda: harness.stored(bench.admin) >= messages, timeout_s=900)
            harness.stop_all(members)
            figures[side.label].drains.setdefault(size, []).append(messages / seconds)
            batches = sum(member.heartbeat().batches for member in members)
            figures[side.label].drain_batch.setdefault(size, []).append(messages / batches if batches else 0.0)
    finally:
        for *_, members in groups:
            harness.stop_all(members)
            harness.end_sessions(members, bench.mqtt)


def span(values: list[float], unit: str = "") -> str:
    """A figure over the rounds: lowest-highest (or the one value)."""
    if not values:
        return "n/a"
    low, high = min(values), max(values)
    return f"{low:,.1f}{unit}" if len(values) == 1 else f"{low:,.1f}-{high:,.1f}{unit}"


def print_table(sides: list[Side], figures: dict[str, Figures], sizes: list[int]) -> None:
    """One row per figure, one column per side, then each side's medians over the first side's."""
    header = " | ".join(side.label for side in sides)
    ratios = " | ".join(f"{side.label} ÷ {sides[0].label}" for side in sides[1:])
    print(f"| figure | {header} | {ratios} |")
    print("| --- |" + " ---: |" * (len(sides) * 2 - 1))

    def line(name: str, unit: str, pick: Callable[[Figures], list[float]]) -> None:
        values = [pick(figures[side.label]) for side in sides]
        first = median(values[0]) if values[0] else 0.0
        cells = " | ".join(span(v, unit) for v in values)
        ratio = " | ".join(f"{median(v) / first:.2f}" if first and v else "n/a" for v in values[1:])
        print(f"| {name} | {cells} | {ratio} |")

    seed = f"at {SEED_RATE} readings/s, {SEED_WORKERS} workers"
    line(f"publish->commit p50 {seed}", " ms", lambda f: f.p50_ms)
    line(f"publish->commit p99 {seed}", " ms", lambda f: f.p99_ms)
    line(f"publish->commit max {seed}", " ms", lambda f: f.max_ms)
    line(f"commits/s {seed}", "", lambda f: f.commits_per_s)
    line(f"store + COMMIT of one batch, mean, {seed}", " ms", lambda f: f.write_ms)
    for size in sizes:
        workers = f"{size} worker{'s' if size > 1 else ''}"
        line(f"drain, {workers} (readings/s)", "", partial(_drain_rates, size=size))
        line(f"drain, {workers}: messages per commit, mean", "", partial(_drain_batches, size=size))


def _drain_rates(figures: Figures, *, size: int) -> list[float]:
    return figures.drains.get(size, [])


def _drain_batches(figures: Figures, *, size: int) -> list[float]:
    return figures.drain_batch.get(size, [])


def parse_args() -> argparse.Namespace:
    """The revision to compare with, the variants, the sizes."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", required=True, help="the revision to compare with (e.g. a commit id, HEAD~3)")
    parser.add_argument("--variant", action="append", default=[], metavar="LABEL:VAR=VALUE[,VAR=VALUE]",
                        help="this tree's workers again with other settings, as one more column")
    parser.add_argument("--durable", action="store_true",
                        help="PostgreSQL with fsync=on and synchronous_commit=on (a real disk's commit cost)")
    parser.add_argument("--seed-seconds", type=int, default=30, help="seconds at 83 readings/s")
    parser.add_argument("--messages", type=int, default=120_000, help="the drains' backlog of single readings")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="workers in the drains")
    parser.add_argument("--rounds", type=int, default=1)
    return parser.parse_args()


def variant(spec: str) -> Side:
    """`label:VAR=VALUE,...` -> this tree's workers with those settings."""
    label, _, assignments = spec.partition(":")
    overrides = dict(a.split("=", 1) for a in assignments.split(",") if a)
    return Side(label, REPO_ROOT, {key.lower(): value for key, value in overrides.items()})


def main() -> int:
    """Start the servers, run every side's phases round by round, print the table."""
    args = parse_args()
    pg, mq = PostgresServer(settings=DURABLE if args.durable else None), MosquittoServer()
    with harness.throwaway_servers(pg, mq, prefix="bench-latency-") as tmp:
        sides = [Side("before", checkout(args.before, tmp / "before")), Side("after", REPO_ROOT),
                 *(variant(spec) for spec in args.variant)]
        apply_schema(pg.url())
        bench = Bench(pg, mq, tmp)
        figures = {side.label: Figures() for side in sides}
        started = time.monotonic()
        for round_ in range(args.rounds):
            for side in sides if round_ % 2 == 0 else list(reversed(sides)):
                seed_load(bench, side, args.seed_seconds, figures[side.label])
            drains(bench, sides, args.workers, args.messages, round_=round_, figures=figures)
        settings = "fsync=on, synchronous_commit=on" if args.durable else "fsync=off, synchronous_commit=on"
        print(f"before = {args.before}; PostgreSQL {settings}; {args.rounds} round(s)\n")
        print_table(sides, figures, args.workers)
        print(f"\n- benchmark took {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
