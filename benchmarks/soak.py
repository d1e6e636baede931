"""The long soak: the CI soak's overlapping faults at a steadier pace, for 15 minutes or more.

    python benchmarks/soak.py                  # 15 minutes, the figures in docs/reliability.md
    python benchmarks/soak.py --minutes 3      # a shorter look

Starts a throwaway PostgreSQL and Mosquitto (devstack/postgres.py, devstack/mosquitto.py) and three
bridge workers with their default settings, publishes the seed load (83
readings/s, 10 % duplicates, 2 % invalid) and, by default, every 30 s
SIGKILLs a random worker and restarts it 3 s later; every 5 minutes stops
PostgreSQL for 10 s over a worker's restart and restarts the broker. At the
end it checks the exact sets and prints: readings, faults injected, lateness
p50/p99/max by cause, and each worker's RSS minute by minute.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from devstack import traffic
from devstack.mosquitto import MosquittoServer
from devstack.postgres import BRIDGE_TEST_ROLE, PostgresServer, apply_schema
from devstack.processes import memory_kb
from devstack.soak import (
    FaultPlan,
    Lateness,
    Soak,
    SoakRun,
    first_publish_times,
    incarnations,
    lateness,
    rss_drift,
    stored_at,
)
from devstack.urls import login_url
from devstack.workers import WorkerProcess, start_online, worker_env
from simulator.report import percentile

RATE = 83
NAMES = ("soak-1", "soak-2", "soak-3")


class Stack:
    """Throwaway servers and the workers' environment."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.postgres, self.mosquitto = PostgresServer(), MosquittoServer()
        self.admin_url = self.mqtt_url = ""

    def start(self) -> None:
        self.postgres.start()
        self.mosquitto.start()
        self.admin_url, self.mqtt_url = self.postgres.url(), self.mosquitto.url
        apply_schema(self.admin_url)

    def start_worker(self, name: str) -> WorkerProcess:
        env = worker_env(name, database_url=login_url(self.postgres.url(), BRIDGE_TEST_ROLE),
                         mqtt_url=self.mqtt_url, share_group="soak", health_dir=self.tmp,
                         bridge_log_level="INFO")
        worker = WorkerProcess(name, env, log_dir=self.tmp)
        start_online([worker], self.mqtt_url, timeout_s=60)
        return worker

    def cleanup(self) -> None:
        self.mosquitto.cleanup()
        self.postgres.cleanup()


def plan_for(minutes: float) -> FaultPlan:
    """The long soak's pace: a kill every 30 s; database outage and broker restart every 5 minutes."""
    return FaultPlan(duration_s=minutes * 60, warmup_s=30, kill_every_s=30, restart_after_s=3, cycle_s=300,
                     database_kill=4, database_outage_s=10, database_after_kill_s=1, broker_restart_at_s=200)


def report(run: SoakRun, late: list[Lateness], plan: FaultPlan, *, exact: bool) -> dict[str, object]:
    """The figures, printed and returned for --json."""
    by_cause: dict[str, list[float]] = {}
    for entry in late:
        by_cause.setdefault(entry.cause, []).append(entry.late_s)
    over = [entry for entry in late if entry.late_s > entry.bound_s]
    print(f"traffic: {len(run.traffic.messages)} messages at {RATE}/s over {plan.duration_s / 60:.0f} min, "
          f"{len(run.traffic.expected)} unique readings, {run.traffic.invalid} invalid, "
          f"{run.traffic.duplicates} duplicates")
    print(f"faults: {run.count('worker')} worker SIGKILLs (restart after {plan.restart_after_s:.0f} s), "
          f"{run.count('database')} database outages of {plan.database_outage_s:.0f} s over a restart, "
          f"{run.count('broker')} broker restarts")
    print(f"exact sets: {'yes' if exact else 'NO'}; readings over their bound (outage + 10 s): {len(over)}")
    print("lateness (publish -> commit) by the longest outage a reading sat through:")
    figures: dict[str, dict[str, float]] = {}
    for cause, values in sorted(by_cause.items()):
        values.sort()
        figures[cause] = {"readings": len(values), "p50_s": percentile(values, 50) or 0.0,
                          "p99_s": percentile(values, 99) or 0.0, "max_s": values[-1]}
        print(f"  {cause:9} {len(values):7} readings  p50 {figures[cause]['p50_s']:6.2f} s  "
              f"p99 {figures[cause]['p99_s']:6.2f} s  max {values[-1]:6.2f} s")
    calm = sorted((e for e in late if e.cause == "none"), key=lambda e: e.late_s)[-5:]
    first = first_publish_times(run)
    print("the latest readings that sat through no outage (published at, late by, the last fault before):")
    for entry in reversed(calm):
        published = first[entry.key]
        before = max((o for o in run.outages if o.started_at <= published), key=lambda o: o.started_at, default=None)
        last = f"{before.what}, ended {published - (before.ended_at or published):.1f} s before" if before else "none"
        print(f"  {published - run.started_at:7.1f} s  {entry.late_s:5.2f} s  {last}")
    print("worker RSS (MB) by minute since the start, per process (pid):")
    rss: dict[str, list[tuple[float, float]]] = {}
    for worker, pid, samples in incarnations(run.samples):
        marks: list[tuple[float, float]] = []
        for sample in samples:
            minute = (sample.at - run.started_at) // 60
            if not marks or minute > marks[-1][0]:
                marks.append((minute, sample.rss_kb / 1024))
        rss[f"{worker} ({pid})"] = marks
        print(f"  {worker} pid {pid}: " + " ".join(f"[{m:.0f}] {mb:.1f}" for m, mb in marks))
    drifts = rss_drift(run.samples, warmup_s=plan.warmup_s, min_life_s=plan.warmup_s + 30)
    worst = max((abs(b - a) / b for _, _, a, b in drifts), default=0.0)
    print(f"largest RSS change after warm-up, over {len(drifts)} processes that lived long enough: {worst:.1%}")
    return {"exact": exact, "over_bound": len(over), "lateness": figures, "rss_mb_by_minute": rss,
            "rss_worst_change": worst, "faults": {k: run.count(k) for k in ("worker", "database", "broker")}}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=15.0)
    parser.add_argument("--seed", type=int, default=14)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    plan = plan_for(args.minutes)
    sent = traffic.build(round(plan.duration_s * RATE), duplicate_share=0.1, invalid_share=0.02, seed=args.seed)
    with tempfile.TemporaryDirectory(prefix="soak-") as tmp:
        stack = Stack(Path(tmp))
        stack.start()
        soak = Soak(stack, plan, sent, names=NAMES, rate_per_s=RATE, seed=args.seed,
                    log=lambda line: print(line, flush=True))
        exact = True

        def drain() -> None:
            nonlocal exact
            try:
                traffic.assert_stored_exactly(stack.admin_url, sent, timeout=300, redelivered=True)
            except AssertionError as exc:
                exact = False
                print(f"exact-set check failed: {str(exc)[:500]}", file=sys.stderr)

        try:
            run = soak.run(drain)
            late = lateness(run, stored_at(stack.admin_url))
            alive = all(worker.is_running() for worker in run.workers.values())
            print(f"every worker alive at the end: {'yes' if alive else 'NO'}; "
                  f"RSS now: {', '.join(f'{n} {memory_kb(w.pid) / 1024:.1f} MB' for n, w in run.workers.items())}")
            figures = report(run, late, plan, exact=exact)
        finally:
            for worker in soak.workers():
                if worker.is_running():
                    worker.terminate()
            stack.cleanup()
    if args.json:
        args.json.write_text(json.dumps({**figures, "alive": alive, "at": time.strftime("%Y-%m-%d %H:%M")}, indent=2))
    return 0 if exact and alive and not figures["over_bound"] else 1


if __name__ == "__main__":
    sys.exit(main())
