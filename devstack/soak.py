"""A soak: steady traffic through three workers while faults overlap, then how late each reading was.

Shared by the CI soak test (tests/faults/test_soak.py, about two minutes) and
the long soak (benchmarks/soak.py, 15 minutes and more). Faults follow a
plan: a random worker SIGKILLed and restarted a few seconds later at a fixed
pace, the database stopped once per cycle so that its outage overlaps a
worker's restart, and the broker restarted once per cycle. Every fault is
recorded as an Outage, so a reading's lateness can be judged against the
outages it actually sat through.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

import psycopg

from devstack.mosquitto import MosquittoServer
from devstack.mqtt_client import PacedPublisher
from devstack.postgres import PostgresServer
from devstack.processes import memory_kb, wait_until
from devstack.traffic import Traffic
from devstack.workers import WorkerProcess

LATENESS_MARGIN_S = 10.0  # what a reading may take beyond the longest outage it sat through
Key = tuple[int, datetime, str]


@dataclass(frozen=True, slots=True)
class FaultPlan:
    """When faults strike, in seconds from the start of the traffic; one cycle repeats."""

    duration_s: float = 100.0
    warmup_s: float = 10.0
    kill_every_s: float = 15.0
    restart_after_s: float = 3.0
    cycle_s: float = 100.0  # the database outage and the broker restart happen once per cycle
    database_kill: int = 3  # which kill of the cycle (1-based) the database outage overlaps
    database_outage_s: float = 10.0
    database_after_kill_s: float = 1.0  # stopped this long after that kill, so the restart falls inside
    broker_restart_at_s: float = 68.0  # within the cycle

    def events(self) -> list[tuple[float, str]]:
        """(second, action) in time order: kill, restart, database-stop, database-start, broker-restart."""
        events: list[tuple[float, str]] = []
        kills_per_cycle = round(self.cycle_s / self.kill_every_s)
        at, kill = self.kill_every_s, 0
        while at < self.duration_s:
            kill += 1
            events += [(at, "kill"), (at + self.restart_after_s, "restart")]
            if (kill - 1) % kills_per_cycle + 1 == self.database_kill:
                stop_at = at + self.database_after_kill_s
                events += [(stop_at, "database-stop"), (stop_at + self.database_outage_s, "database-start")]
            at += self.kill_every_s
        cycle = 0.0
        while cycle + self.broker_restart_at_s < self.duration_s:
            events.append((cycle + self.broker_restart_at_s, "broker-restart"))
            cycle += self.cycle_s
        return sorted(events)


@dataclass(slots=True)
class Outage:
    """One fault the soak caused: what, and from when to when (wall clock, time.time())."""

    kind: str  # "worker", "database" or "broker"
    what: str
    started_at: float
    ended_at: float | None = None

    @property
    def duration_s(self) -> float:
        """How long it lasted (until now if it has not ended)."""
        return (self.ended_at or time.time()) - self.started_at


@dataclass(frozen=True, slots=True)
class Lateness:
    """How late one reading was stored, and the longest outage it sat through."""

    key: Key
    late_s: float
    cause: str  # the kind of the longest overlapping outage, or "none"
    bound_s: float  # that outage's duration + LATENESS_MARGIN_S


@dataclass(frozen=True, slots=True)
class RssSample:
    """A worker process's resident set at one moment."""

    at: float
    worker: str
    pid: int
    rss_kb: int


class SoakStack(Protocol):
    """What the soak drives: the servers and a way to (re)start a worker that returns once it is online."""

    postgres: PostgresServer
    mosquitto: MosquittoServer
    admin_url: str
    mqtt_url: str

    def start_worker(self, name: str) -> WorkerProcess: ...


@dataclass
class SoakRun:
    """What a soak did and saw."""

    traffic: Traffic
    outages: list[Outage] = field(default_factory=list)
    samples: list[RssSample] = field(default_factory=list)
    published_at: list[float | None] = field(default_factory=list)
    workers: dict[str, WorkerProcess] = field(default_factory=dict)
    started_at: float = 0.0

    def count(self, kind: str) -> int:
        """How many outages of a kind were caused."""
        return sum(1 for outage in self.outages if outage.kind == kind)


class Soak:
    """Runs the plan against a stack: traffic, faults, RSS samples; then judges lateness."""

    def __init__(
        self, stack: SoakStack, plan: FaultPlan, traffic: Traffic, *,
        names: Sequence[str], rate_per_s: float = 83.0, seed: int = 14,
        log: Callable[[str], None] = lambda line: None,
    ) -> None:
        self._stack = stack
        self._plan = plan
        self._names = list(names)
        self._rate = rate_per_s
        self._random = random.Random(seed)
        self._log = log
        self._run = SoakRun(traffic)
        self._killed: list[tuple[str, Outage]] = []
        self._sampling = threading.Event()

    def run(self, drain: Callable[[], None]) -> SoakRun:
        """Start the workers, publish while the faults strike, then `drain` (wait until all is stored).

        RSS is sampled every second until the drain is over, so the last
        sample of each surviving worker is its value at the end.
        """
        run = self._run
        for name in self._names:
            run.workers[name] = self._stack.start_worker(name)
        sampler = threading.Thread(target=self._sample, name="rss-sampler", daemon=True)
        sampler.start()
        publisher = PacedPublisher(self._stack.mqtt_url, run.traffic.messages, rate_per_s=self._rate)
        run.started_at = time.time()
        try:
            for at, action in self._plan.events():
                threading.Event().wait(max(0.0, run.started_at + at - time.time()))  # the plan's rhythm
                self._log(f"{time.time() - run.started_at:6.1f} s  {action}")
                self._act(action, publisher)
            publisher.join(timeout=self._plan.duration_s * 3 + 120)
            run.published_at = publisher.published_at
            drain()
        finally:
            self._sampling.set()
            sampler.join(5)
        return run

    def workers(self) -> list[WorkerProcess]:
        """The worker processes started last, live or not (for cleaning up)."""
        return list(self._run.workers.values())

    def _act(self, action: str, publisher: PacedPublisher) -> None:
        run, stack = self._run, self._stack
        if action == "kill":
            name = self._random.choice(self._names)
            run.workers[name].kill()
            outage = Outage("worker", f"{name} SIGKILLed", time.time())
            run.outages.append(outage)
            self._killed.append((name, outage))
        elif action == "restart":
            name, outage = self._killed.pop(0)
            run.workers[name] = stack.start_worker(name)
            outage.ended_at = time.time()
        elif action == "database-stop":
            stack.postgres.stop("immediate")
            run.outages.append(Outage("database", "PostgreSQL stopped (immediate)", time.time()))
        elif action == "database-start":
            stack.postgres.start()
            _last(run.outages, "database").ended_at = time.time()
        elif action == "broker-restart":
            self._restart_broker(publisher)

    def _restart_broker(self, publisher: PacedPublisher) -> None:
        """SIGTERM and start the broker; publishers wait until the workers have subscribed again.

        Mosquitto before 2.0.12 restores a durable $share subscription only
        when its client subscribes again: what is published before that finds
        no subscriber and is dropped (docs/reliability.md, known limits).
        """
        run = self._run
        live = [worker for worker in run.workers.values() if worker.is_running()]
        before = {worker.client_id: _subscriptions(worker) for worker in live}
        publisher.hold()
        outage = Outage("broker", "Mosquitto restarted (SIGTERM, start)", time.time())
        run.outages.append(outage)
        self._stack.mosquitto.restart()
        wait_until(lambda: all(_subscriptions(w) > before[w.client_id] for w in live), 60,
                   message="every live worker subscribed again after the broker restart")
        outage.ended_at = time.time()
        publisher.release()

    def _sample(self) -> None:
        while not self._sampling.wait(1.0):
            for name, worker in list(self._run.workers.items()):
                try:
                    sample = RssSample(time.time(), name, worker.pid, memory_kb(worker.pid))
                except (OSError, AssertionError):  # exited between the check and the read
                    continue
                if worker.is_running():
                    self._run.samples.append(sample)


def _last(outages: list[Outage], kind: str) -> Outage:
    return next(outage for outage in reversed(outages) if outage.kind == kind)


def _subscriptions(worker: WorkerProcess) -> int:
    return worker.log_text().count("subscribed to")


def first_publish_times(run: SoakRun) -> dict[Key, float]:
    """When the first copy of each valid reading was published."""
    first: dict[Key, float] = {}
    for (_, payload), at in zip(run.traffic.messages, run.published_at, strict=True):
        key = _key_of(payload)
        if key is not None and at is not None and (key not in first or at < first[key]):
            first[key] = at
    return first


def _key_of(payload: bytes) -> Key | None:
    try:
        data = json.loads(payload)
        return int(data["sensor_id"]), datetime.fromisoformat(data["timestamp"]), str(data["variable"])
    except (ValueError, KeyError, TypeError):
        return None  # one of the invalid messages


def stored_at(admin_url: str) -> dict[Key, float]:
    """ingested_at (the commit's transaction time) of every stored reading, as epoch seconds."""
    with psycopg.connect(admin_url) as conn:
        rows = conn.execute(
            'SELECT sensor_id, "timestamp", variable, extract(epoch FROM ingested_at)::float8 FROM readings'
        ).fetchall()
    return {(int(s), t, str(v)): float(at) for s, t, v, at in rows}


def lateness(run: SoakRun, stored: dict[Key, float]) -> list[Lateness]:
    """Each stored reading's publish->commit time and the bound the outages it sat through allow."""
    result: list[Lateness] = []
    for key, published in first_publish_times(run).items():
        committed = stored.get(key)
        if committed is None:
            continue  # missing readings are the exact-set check's business
        overlapping = [o for o in run.outages if o.started_at <= committed and (o.ended_at or committed) >= published]
        longest = max(overlapping, key=lambda o: o.duration_s, default=None)
        cause = longest.kind if longest else "none"
        bound = (longest.duration_s if longest else 0.0) + LATENESS_MARGIN_S
        result.append(Lateness(key, committed - published, cause, bound))
    return result


def incarnations(samples: list[RssSample]) -> Iterator[tuple[str, int, list[RssSample]]]:
    """(worker, pid, its samples in time order) for each worker process the soak ran."""
    by_pid: dict[int, list[RssSample]] = {}
    for sample in samples:
        by_pid.setdefault(sample.pid, []).append(sample)
    for pid, found in by_pid.items():
        yield found[0].worker, pid, sorted(found, key=lambda s: s.at)


def rss_drift(samples: list[RssSample], *, warmup_s: float, min_life_s: float) -> list[tuple[str, int, int, int]]:
    """(worker, pid, RSS after warm-up in kB, RSS at its end in kB) for each process that lived long enough."""
    drifts = []
    for worker, pid, found in incarnations(samples):
        if found[-1].at - found[0].at < min_life_s:
            continue
        warm = next(s for s in found if s.at - found[0].at >= warmup_s)
        drifts.append((worker, pid, warm.rss_kb, found[-1].rss_kb))
    return drifts

