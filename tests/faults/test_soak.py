"""The soak: faults that overlap, at the seed load, for about two minutes (benchmarks/soak.py runs it longer).

Three workers take 83 readings/s (10 % exact duplicates, 2 % invalid). Every
15 s a random worker is SIGKILLed and restarted 3 s later; once, PostgreSQL
is stopped for 10 s so that the outage overlaps a worker's restart; once, the
broker is restarted (publishers held back until the workers subscribed again,
as Mosquitto 2.0.11 requires). Judged at the end: the exact sets, every
worker alive, memory flat after warm-up, and no reading later than the
longest outage it sat through plus 10 s, the bound computed from the faults
this test caused.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from fix_measure import Measure

from devstack import traffic
from devstack.mosquitto import MosquittoServer
from devstack.postgres import PostgresServer
from devstack.soak import LATENESS_MARGIN_S, FaultPlan, Soak, SoakRun, lateness, rss_drift, stored_at
from devstack.workers import StartWorker, WorkerProcess
from simulator.report import percentile

pytestmark = pytest.mark.slow

RATE = 83  # readings/s: the seed load, 5000 a minute
RSS_TOLERANCE = 0.10


@dataclass
class FixtureStack:
    """The soak's stack made of the integration fixtures."""

    postgres: PostgresServer
    mosquitto: MosquittoServer
    admin_url: str
    mqtt_url: str
    start: StartWorker

    def start_worker(self, name: str) -> WorkerProcess:
        return self.start(name)  # returns once the worker is subscribed (online)


def _restart_inside_database_outage(run: SoakRun) -> bool:
    database = next(o for o in run.outages if o.kind == "database")
    assert database.ended_at is not None
    return any(
        o.kind == "worker" and o.ended_at is not None and database.started_at < o.ended_at < database.ended_at
        for o in run.outages
    )


def test_soak_overlapping_faults_lose_nothing_and_no_reading_waits_longer_than_its_outage(
    start: StartWorker, mqtt_url: str, admin_database_url: str, restartable_postgres: PostgresServer,
    restartable_mosquitto: MosquittoServer, measure: Measure,
) -> None:
    plan = FaultPlan()
    sent = traffic.build(round(plan.duration_s * RATE), duplicate_share=0.1, invalid_share=0.02, seed=14)
    stack = FixtureStack(restartable_postgres, restartable_mosquitto, admin_database_url, mqtt_url, start)
    soak = Soak(stack, plan, sent, names=("s1", "s2", "s3"), rate_per_s=RATE, log=print)

    # Workers were SIGKILLed and the broker restarted, so a rejected message may
    # be recorded twice (at-least-once dead letters, docs/reliability.md).
    run = soak.run(drain=lambda: traffic.assert_stored_exactly(admin_database_url, sent, timeout=90, redelivered=True))

    assert all(worker.is_running() for worker in run.workers.values()), "every worker alive at the end"
    assert (run.count("worker"), run.count("database"), run.count("broker")) == (6, 1, 1), run.outages
    assert _restart_inside_database_outage(run), "a worker restarted while the database was down"
    late = lateness(run, stored_at(admin_database_url))
    assert len(late) == len(sent.expected)
    too_late = [entry for entry in late if entry.late_s > entry.bound_s]
    assert not too_late, f"{len(too_late)} readings later than their outage + {LATENESS_MARGIN_S} s: {too_late[:5]}"
    drifts = rss_drift(run.samples, warmup_s=plan.warmup_s, min_life_s=plan.warmup_s + 10)
    assert len(drifts) >= 2, "at least two worker processes lived long enough to judge their memory"
    for worker, pid, warm_kb, end_kb in drifts:
        assert abs(end_kb - warm_kb) <= RSS_TOLERANCE * end_kb, f"{worker} (pid {pid}): {warm_kb} -> {end_kb} kB"

    worst = max(late, key=lambda entry: entry.late_s)
    by_cause = {cause: sorted(e.late_s for e in late if e.cause == cause) for cause in {e.cause for e in late}}
    measure("traffic", f"{len(sent.messages)} messages at {RATE}/s, {len(sent.expected)} unique readings, "
                       f"{len(sent.rejected)} invalid")
    measure("faults", f"{run.count('worker')} worker SIGKILLs, 1 database outage of "
                      f"{plan.database_outage_s:.0f} s over a restart, 1 broker restart")
    for cause, values in sorted(by_cause.items()):
        measure(f"lateness, {cause}", f"{len(values)} readings, p50 {percentile(values, 50):.2f} s, "
                                      f"p99 {percentile(values, 99):.2f} s, max {values[-1]:.2f} s")
    measure("worst reading", f"{worst.late_s:.1f} s late, bound {worst.bound_s:.1f} s ({worst.cause})")
    measure("RSS after warm-up -> end", ", ".join(f"{w} {a / 1024:.1f}->{b / 1024:.1f} MB" for w, _, a, b in drifts))
