"""A failover no test drives: pg_auto_failover's monitor notices the dead primary and promotes the standby.

The formation (devstack/autofailover.py) is what pg_auto_failover's
documentation builds: a monitor and two nodes, the standby synchronous while it
is healthy. The workers are given the multi-host URL and nothing else.
"""

from __future__ import annotations

import time

import psycopg
from fix_measure import Measure
from fix_replication import bridge_url_of

from devstack import traffic
from devstack.autofailover import MONITOR_GUCS, NODES, AutoFailoverFormation
from devstack.mqtt_client import PacedPublisher
from devstack.processes import wait_until
from devstack.workers import StartWorker

STORING_AGAIN_TIMEOUT_S = 60.0


def _readings(url: str) -> int:
    return traffic.counts(url)[0]


def test_orchestrated_failover_loses_nothing_and_the_workers_follow_it_alone(
    start: StartWorker, mqtt_url: str, autofailover: AutoFailoverFormation, measure: Measure,
) -> None:
    formation = autofailover
    primary, standby = NODES
    with psycopg.connect(formation.admin_url(primary)) as conn:
        names = conn.execute("SELECT current_setting('synchronous_standby_names')").fetchone()
    workers = [start(name, database_url=bridge_url_of(formation), bridge_db_retry_max_s=1) for name in ("o1", "o2")]
    sent = traffic.build(3000, duplicate_share=0.1, invalid_share=0.02)
    publisher = PacedPublisher(mqtt_url, sent.messages, rate_per_s=400)
    wait_until(lambda: _readings(formation.admin_url(primary)) >= 400, 30, message="400 readings stored")

    formation.kill_node(primary)
    killed_at = time.monotonic()
    at_kill = _readings(formation.admin_url(standby))  # a hot standby answers reads
    promoted = formation.wait_for_failover(away_from=primary)
    promoted_at = time.monotonic()
    wait_until(lambda: _readings(formation.admin_url(standby)) > at_kill, STORING_AGAIN_TIMEOUT_S, interval=0.05,
               message="the workers storing again on the promoted node")
    storing_again_at = time.monotonic()
    publisher.join()

    traffic.assert_stored_exactly(formation.admin_url(standby), sent, timeout=30)
    assert names and names[0].startswith("ANY 1 ("), f"the standby was synchronous: {names}"
    assert promoted == standby
    assert all(worker.is_running() for worker in workers)
    tuned = ", ".join(f"{name.removeprefix('pgautofailover.')}={value}" for name, value in MONITOR_GUCS.items())
    measure("orchestrator", f"pg_auto_failover 2.0, monitor + 2 nodes, synchronous_standby_names={names[0]!r}")
    measure("monitor settings", tuned)
    measure("kill → promoted (the monitor's decision)", f"{promoted_at - killed_at:.1f} s")
    measure("kill → storing again", f"{storing_again_at - killed_at:.1f} s")
