"""Faults under corrections (BRIDGE_ON_CONFLICT=update): a worker killed mid-run and restarted.

What a killed worker had committed but not acknowledged comes back from the
broker: each such version must be a duplicate (never a second revision record)
and must not bring an older version back.
"""

from __future__ import annotations

import time

from fix_measure import Measure

from devstack import corrections
from devstack.mqtt_client import BackgroundPublisher
from devstack.processes import wait_until
from devstack.workers import StartWorker, WorkerProcess


def test_worker_killed_mid_run_and_restarted_leaves_the_highest_revisions(
    start: StartWorker, mqtt_url: str, bridge_update_database_url: str, admin_database_url: str, measure: Measure,
) -> None:
    def start_updating(name: str) -> WorkerProcess:
        return start(name, database_url=bridge_update_database_url, bridge_on_conflict="update", bridge_batch_size=50)

    workers = {name: start_updating(name) for name in ("r1", "r2", "r3")}
    sent = corrections.build(keys=600, revisions=5, duplicate_share=0.05)
    publisher = BackgroundPublisher(mqtt_url, sent.messages, chunk=100)

    wait_until(lambda: sum(map(len, corrections.outcome(admin_database_url).replaced.values())) >= 200, 60,
               message="200 versions replaced")
    workers["r2"].kill()
    publisher.join()
    workers["r2"] = start_updating("r2")
    restarted_at = time.monotonic()
    seen = corrections.wait_until_resolved(admin_database_url, sent, timeout=120)

    corrections.assert_resolved(seen, sent, redelivered=True)
    assert all(worker.is_running() for worker in workers.values())
    replaced = sum(map(len, seen.replaced.values()))
    stale = sum(map(len, seen.stale.values()))
    measure("messages / keys / versions", f"{len(sent.messages)} / {len(sent.versions)} / {len(sent.sends)}")
    measure("replaced / stale dead letters", f"{replaced} / {stale} (every version current, replaced or stale)")
    measure("restart → all resolved", f"{time.monotonic() - restarted_at:.1f} s")
