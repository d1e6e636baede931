"""The benchmark: the bridge against the ceiling of the machine and a naive baseline, in one run.

    python benchmarks/bench.py                      # full size, a few minutes
    python benchmarks/bench.py --messages 500 ...   # smoke size (the test suite runs this)

Starts a throwaway PostgreSQL and Mosquitto (devstack/postgres.py, devstack/mosquitto.py), then measures:
backlog drains (bare paho consumers = ceiling, bridge, naive INSERT+commit per
message) on the same QoS 1 backlog, live throughput with the simulator
publishing, publish->commit latency at the seed load, and worker memory.
Prints one table with the ratios; see docs/performance.md.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import harness  # benchmarks/ is on sys.path: this script's own folder

from devstack.mosquitto import MosquittoServer
from devstack.mqtt_client import MqttTestClient
from devstack.postgres import BRIDGE_TEST_ROLE, BRIDGE_UPDATE_TEST_ROLE, PostgresServer, apply_schema
from devstack.processes import REPO_ROOT, memory_kb, wait_until
from devstack.urls import login_url
from devstack.workers import start_online
from simulator.readings import Kind, MessageFactory

SEED_RATE = 83  # readings/s: 5000 per minute
ONLINE_TIMEOUT_S = 60.0  # for a whole group to publish `online`; start_online's default is for one test worker


@dataclass
class Result:
    """One line of the table."""

    scenario: str
    per_message: int
    messages: int
    readings: int
    seconds: float
    ceiling: float | None = None  # readings/s of bare paho consumers as many as the workers, same backlog
    reference: float | None = None  # readings/s of as many mosquitto_sub, same backlog
    note: str = ""

    @property
    def rate(self) -> float:
        """Readings per second."""
        return self.readings / self.seconds if self.seconds else 0.0


def backlog(messages: int, array: int, run_id: str) -> list[tuple[str, bytes]]:
    """`messages` unique messages of `array` readings each (the simulator's payloads)."""
    factory = MessageFactory([Kind.UNIQUE] * messages, sensors=50, array=array, run_id=run_id, seed=7)
    at = datetime(2026, 1, 1, tzinfo=UTC)
    return [(m.topic, m.payload) for m in (factory.build(i, lambda: at) for i in range(messages))]


class Bench:
    """The servers and the phases of one benchmark run."""

    def __init__(self, pg: PostgresServer, mq: MosquittoServer, tmp: Path) -> None:
        self.admin = pg.url()
        self.bridge_url = login_url(self.admin, BRIDGE_TEST_ROLE)
        self.bridge_update_url = login_url(self.admin, BRIDGE_UPDATE_TEST_ROLE)
        self.mqtt = mq.url
        self.tmp = tmp
        self.hwm_kb: dict[str, int] = {}

    def group(self, kind: str, size: int, name: str) -> list[harness.GroupMember]:
        """`size` processes of one kind in the shared-subscription group `name`."""
        if kind == "sub":
            return [harness.SubProcess(f"{name}-{n}", name, mqtt_url=self.mqtt, tmp=self.tmp) for n in range(size)]
        if kind == "bridge":
            return [harness.bridge_worker(f"{name}-{n}", name, mqtt_url=self.mqtt, database_url=self.bridge_url,
                                          tmp=self.tmp) for n in range(size)]
        if kind == "bridge-update":  # BRIDGE_ON_CONFLICT=update, as its own role
            return [harness.bridge_worker(f"{name}-{n}", name, mqtt_url=self.mqtt, database_url=self.bridge_update_url,
                                          tmp=self.tmp, on_conflict="update") for n in range(size)]
        return [harness.ConsumerProcess(kind, f"{name}-{n}", name, mqtt_url=self.mqtt, database_url=self.admin,
                                        tmp=self.tmp) for n in range(size)]

    def drains(self, specs: list[tuple[str, int, int]], messages: list[tuple[str, bytes]], array: int) -> list[Result]:
        """Register every group's session, publish the backlog once, then time each group's drain.

        specs: (kind, processes, messages to wait for); kind is count (bare paho), sub (mosquitto_sub),
        bridge, bridge-update (BRIDGE_ON_CONFLICT=update) or naive.
        """
        groups = [(kind, size, wait_for, self.group(kind, size, f"{kind}{size}x{array}-{int(time.time())}"))
                  for kind, size, wait_for in specs]
        try:
            return self._drain_each(groups, messages, array)
        finally:
            for *_, members in groups:
                harness.stop_all(members)
                harness.end_sessions(members, self.mqtt)

    def _drain_each(
        self, groups: list[tuple[str, int, int, list[harness.GroupMember]]], messages: list[tuple[str, bytes]],
        array: int,
    ) -> list[Result]:
        for *_, members in groups:
            subs = [m for m in members if isinstance(m, harness.SubProcess)]
            for sub in subs:
                sub.register()
            if not subs:
                start_online(members, self.mqtt, timeout_s=ONLINE_TIMEOUT_S)
                harness.stop_all(members)
        with MqttTestClient.from_url(self.mqtt) as publisher:
            publisher.publish_many(messages, timeout=900)
        results = []
        for kind, size, wait_for, members in groups:
            harness.truncate(self.admin)
            done = self._done(kind, members, wait_for if kind in ("count", "sub") else wait_for * array)
            seconds = harness.timed(members, done, timeout_s=900)
            self._record_memory(kind, size, members)
            harness.stop_all(members)
            label = {"count": "ceiling: bare paho", "sub": "ceiling: mosquitto_sub", "bridge": "bridge",
                     "bridge-update": "bridge (update mode)", "naive": "naive INSERT+commit"}[kind]
            noun = "worker" if kind.startswith("bridge") else "consumer"
            results.append(Result(f"{label}, {size} {noun}{'s' if size > 1 else ''}", array, wait_for,
                                  wait_for * array, seconds))
        return results

    def corrections(self, messages: list[tuple[str, bytes]], size: int) -> Result:
        """Update mode, every message replacing a stored reading: `messages` stored, then each again at revision 1."""
        members = self.group("bridge-update", size, f"corrections{size}-{int(time.time())}")
        try:
            # Registers the sessions, which then queue the backlog.
            start_online(members, self.mqtt, timeout_s=ONLINE_TIMEOUT_S)
            harness.stop_all(members)
            harness.truncate(self.admin)
            harness.store(self.admin, messages)
            fixes = [(topic, harness.corrected(payload)) for topic, payload in messages]
            with MqttTestClient.from_url(self.mqtt) as publisher:
                publisher.publish_many(fixes, timeout=900)
            seconds = harness.timed(members, lambda: harness.revisions(self.admin) >= len(messages), timeout_s=900)
            self.hwm_kb[f"corrections, {size} worker{'s' if size > 1 else ''}"] = max(
                memory_kb(m.pid, "VmHWM") for m in members)
        finally:
            harness.stop_all(members)
            harness.end_sessions(members, self.mqtt)
        return Result(f"bridge (update mode: corrections), {size} worker{'s' if size > 1 else ''}", 1, len(messages),
                      len(messages), seconds, note="every message replaces a stored reading")

    def _done(self, kind: str, members: list[harness.GroupMember], target: int) -> Callable[[], bool]:
        """When the drain is over: the consumers counted `target` messages, or `target` readings are stored."""
        counters = [m for m in members if isinstance(m, harness.ConsumerProcess | harness.SubProcess)]
        if kind in ("count", "sub"):
            return lambda: sum(m.count() for m in counters) >= target
        return lambda: harness.stored(self.admin) >= target

    def _record_memory(self, kind: str, size: int, members: list[harness.GroupMember]) -> None:
        if kind.startswith("bridge"):
            mode = " (update mode)" if kind == "bridge-update" else ""
            label = f"drain{mode}, {size} worker{'s' if size > 1 else ''}"
            self.hwm_kb[label] = max(memory_kb(m.pid, "VmHWM") for m in members)

    def live(self, messages: int, workers: list[harness.GroupMember]) -> Result:
        """Readings/s stored while the simulator publishes as fast as it can."""
        before = harness.stored(self.admin)
        summary = self.tmp / "live.json"
        started = time.monotonic()
        self.simulate(["--messages", str(messages), "--rate", "max", "--json", str(summary)])
        wait_until(lambda: harness.stored(self.admin) >= before + messages, 600, interval=0.02)
        seconds = time.monotonic() - started
        published = json.loads(summary.read_text())["publish"]["rate_msgs_per_s"]
        return Result(f"live: simulator + bridge, {len(workers)} workers", 1, messages, messages, seconds,
                      note=f"publisher reached {published:,.0f} msgs/s")

    def latency(self, seconds: int) -> dict[str, float | None]:
        """publish->commit latency percentiles at the seed load, from `simulator --verify`."""
        summary = self.tmp / "latency.json"
        self.simulate(["--messages", str(SEED_RATE * seconds), "--duration", str(seconds), "--verify",
                       "--verify-timeout", "60", "--json", str(summary)])
        verified = json.loads(summary.read_text())["verify"]
        if not verified["ok"]:
            raise RuntimeError(f"latency run did not verify: {verified}")
        latency: dict[str, float | None] = verified["commit_latency"]
        return latency

    def simulate(self, args: list[str]) -> None:
        """Run the simulator to completion (exit 0 required)."""
        env = {"MQTT_URL": self.mqtt, "DATABASE_URL": self.admin, "PATH": "/usr/bin:/bin"}
        command = [sys.executable, "-m", "simulator", "--progress", "none", *args]
        subprocess.run(command, cwd=REPO_ROOT, env=env, check=True, timeout=900, stdout=subprocess.DEVNULL)


class MemorySampler:
    """Samples (rows in readings, VmRSS kB) of one worker every 0.5 s, in a thread."""

    def __init__(self, pid: int, admin_url: str) -> None:
        self.samples: list[tuple[int, int]] = []
        self._pid, self._admin = pid, admin_url
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> MemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            self.samples.append((harness.stored(self._admin), memory_kb(self._pid)))


def print_table(results: list[Result], naive_rate: float) -> None:
    """The results with their ratios to bare paho, to mosquitto_sub and to the naive baseline."""
    print(f"| {'scenario':<40} | rdg/msg | {'messages':>8} | {'readings':>8} | {'seconds':>7} | "
          f"{'readings/s':>10} | ÷ paho | ÷ mosquitto_sub | ÷ naive | note |")
    print(f"| {'-' * 40} | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
    for r in results:
        paho = f"{r.rate / r.ceiling:.2f}" if r.ceiling else ""
        sub = f"{r.rate / r.reference:.2f}" if r.reference else ""
        naive = f"{r.rate / naive_rate:.1f}×" if naive_rate and not r.scenario.startswith("ceiling") else ""
        print(f"| {r.scenario:<40} | {r.per_message:>7} | {r.messages:>8,} | {r.readings:>8,} | "
              f"{r.seconds:>7.2f} | {r.rate:>10,.0f} | {paho:>6} | {sub:>15} | {naive:>7} | {r.note} |")


def print_ranges(rounds: list[list[Result]]) -> None:
    """Over several rounds: each bridge drain's rate and ratios, lowest to highest (each ratio from one round)."""
    print(f"\nOver {len(rounds)} rounds (each ratio from one round):")
    for scenario, per_message in dict.fromkeys((r.scenario, r.per_message) for r in rounds[0]
                                               if r.scenario.startswith("bridge")):
        rows = [r for one in rounds for r in one if r.scenario == scenario and r.per_message == per_message]
        rates = [r.rate for r in rows]
        paho = [r.rate / r.ceiling for r in rows if r.ceiling]
        sub = [r.rate / r.reference for r in rows if r.reference]
        print(f"- {scenario}, {per_message} reading(s)/message: {min(rates):,.0f}-{max(rates):,.0f} readings/s, "
              f"÷ paho {_span(paho)}, ÷ mosquitto_sub {_span(sub)}")


def _span(values: list[float]) -> str:
    return f"{min(values):.2f}-{max(values):.2f}" if values else "n/a"


def parse_args() -> argparse.Namespace:
    """Sizes of each phase (defaults: the figures in docs/performance.md)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=120_000, help="single-reading backlog")
    parser.add_argument("--array", type=int, default=20, help="readings per message in the array backlog")
    parser.add_argument("--array-messages", type=int, default=10_000)
    parser.add_argument("--naive-messages", type=int, default=5_000, help="the naive consumer's share")
    parser.add_argument("--live-messages", type=int, default=50_000)
    parser.add_argument("--latency-seconds", type=int, default=30, help="seconds at 83 readings/s")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--rounds", type=int, default=1, help="repeat the drains; prints each figure's range")
    parser.add_argument("--prefill-rows", type=int, default=0,
                        help="then drain into readings holding this many older rows (e.g. 20000000), against empty")
    parser.add_argument("--on-conflict", nargs="+", choices=["keep", "update"], default=["keep"],
                        help="BRIDGE_ON_CONFLICT of the bridge's drains: `keep update` adds update-mode lines "
                             "(the same backlog of new keys, through the update path and its role)")
    return parser.parse_args()


def drain_round(bench: Bench, args: argparse.Namespace, round_: int) -> list[Result]:
    """Every drain once: bare paho, mosquitto_sub, the bridge (and the naive baseline), singles and arrays."""
    results: list[Result] = []
    for array, messages in ((1, args.messages), (args.array, args.array_messages)):
        bridges = [{"keep": "bridge", "update": "bridge-update"}[mode] for mode in args.on_conflict]
        specs = [(kind, n, messages) for kind in ("count", "sub", *bridges) for n in args.workers]
        if array == 1:
            specs.append(("naive", 1, min(args.naive_messages, messages)))
        rows = bench.drains(specs, backlog(messages, array, f"b{array}r{round_}"), array)
        if array == 1 and "update" in args.on_conflict:
            rows += [bench.corrections(backlog(messages, 1, f"c{round_}"), n) for n in args.workers]
        for r in rows:
            if r.scenario.startswith("bridge"):
                _compare_with_ceilings(r, rows)
        results += rows
    return results


def _compare_with_ceilings(result: Result, rows: list[Result]) -> None:
    """Set the rates of the ceilings with as many processes, from the same round and message shape."""
    group = _group(result.scenario.split(", ")[1].split()[0])
    result.ceiling = next((c.rate for c in rows if c.scenario == f"ceiling: bare paho, {group}"), None)
    result.reference = next((c.rate for c in rows if c.scenario == f"ceiling: mosquitto_sub, {group}"), None)


def _group(size: str) -> str:
    return f"{size} consumer{'s' if size != '1' else ''}"


def growth(bench: Bench, args: argparse.Namespace) -> list[str]:
    """The same drain (singles, the most workers) into an empty readings and into one of --prefill-rows rows."""
    workers = max(args.workers)
    spec = [("bridge", workers, args.messages)]
    empty = bench.drains(spec, backlog(args.messages, 1, "ge"), 1)[0]
    rows, seconds = harness.prefill(bench.admin, args.prefill_rows)
    table_bytes, index_bytes = harness.relation_sizes(bench.admin)
    full = bench.drains(spec, backlog(args.messages, 1, "gf"), 1)[0]
    return [
        f"table growth: drain of {args.messages:,} into an empty readings {empty.rate:,.0f} readings/s, into one of "
        f"{rows:,} rows {full.rate:,.0f} readings/s ({full.rate / empty.rate:.2f} of empty); filled in {seconds:.0f} s",
        f"table size {table_bytes / 2**30:.2f} GiB ({table_bytes / rows:.0f} bytes/row), primary key index "
        f"{index_bytes / 2**30:.2f} GiB ({index_bytes / rows:.0f} bytes/row)",
    ]


def run(bench: Bench, args: argparse.Namespace) -> tuple[list[Result], float, list[str]]:
    """Every phase in order; returns the table rows (last round), the naive rate and the notes."""
    rounds = [drain_round(bench, args, n) for n in range(args.rounds)]
    results = rounds[-1]
    if args.rounds > 1:
        print_ranges(rounds)
    naive_rate = next(r.rate for r in results if r.scenario.startswith("naive"))
    workers = bench.group("bridge", max(args.workers), f"live-{int(time.time())}")
    start_online(workers, bench.mqtt, timeout_s=ONLINE_TIMEOUT_S)
    try:
        with MemorySampler(workers[0].pid, bench.admin) as sampler:
            # Seed load first: right after a full-speed burst, autovacuum of the
            # grown table competes for the 2 cores and the figure measures that.
            latency = bench.latency(args.latency_seconds)
            results.append(bench.live(args.live_messages, workers))
        hwm = max(memory_kb(w.pid, "VmHWM") for w in workers)
    finally:
        harness.stop_all(workers)
    notes = [
        f"publish->commit latency at {SEED_RATE} readings/s ({len(workers)} workers, {args.latency_seconds} s): "
        f"p50 {latency['p50_ms']:.1f} ms, p95 {latency['p95_ms']:.1f} ms, "
        f"p99 {latency['p99_ms']:.1f} ms, max {latency['max_ms']:.1f} ms",
        f"worker peak RSS (VmHWM): live+latency {hwm / 1024:.1f} MB; "
        + ", ".join(f"{k} {v / 1024:.1f} MB" for k, v in bench.hwm_kb.items()),
    ]
    if args.prefill_rows:
        notes += growth(bench, args)
    if sampler.samples:
        first, last = sampler.samples[0], sampler.samples[-1]
        peak = max(kb for _, kb in sampler.samples)
        notes.append(f"worker RSS while readings grew {first[0]:,} -> {last[0]:,} rows: "
                     f"{first[1] / 1024:.1f} -> {last[1] / 1024:.1f} MB (max {peak / 1024:.1f} MB, "
                     f"{len(sampler.samples)} samples)")
    return results, naive_rate, notes


def main() -> int:
    """Start the servers, run every phase, print the table."""
    args = parse_args()
    pg, mq = PostgresServer(), MosquittoServer()
    with harness.throwaway_servers(pg, mq, prefix="bench-") as tmp:
        apply_schema(pg.url())
        started = time.monotonic()
        results, naive_rate, notes = run(Bench(pg, mq, tmp), args)
        print_table(results, naive_rate)
        harness.print_notes(notes, started_at=started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
