"""What only reads, on a real primary with a synchronous streaming standby: the watchdog's replication checks, --verify.

The pair is devstack/replication.py's (pg_basebackup -R -X stream); the
watchdog gets the environment an operator would give it (fix_watchdog.replication_env).
Replication and failover judgements step by step: tests/unit/test_watchdog_replication.py.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import psycopg
from fix_measure import Measure
from fix_replication import bridge_url_of
from fix_watchdog import StartWatchdog, alerts_about, kinds, replication_env

from devstack.discord_stub import DiscordStub
from devstack.postgres import READER_TEST_ROLE
from devstack.processes import wait_until
from devstack.replication import ReplicatedPostgres
from devstack.simulator_process import simulate, simulator_env
from devstack.urls import login_url
from devstack.workers import StartWorker

INSERT = "INSERT INTO readings (sensor_id, \"timestamp\", variable, value, unit) VALUES (1, now(), 'wd', 1, 'C')"


def write_on(pair: ReplicatedPostgres) -> bool:
    """One committed row on the primary: WAL for the standby to receive (and, unless paused, replay)."""
    with psycopg.connect(pair.primary.socket_url(), autocommit=True) as conn:
        conn.execute(INSERT)
    return True


@contextmanager
def replay_paused(pair: ReplicatedPostgres) -> Iterator[None]:
    """The standby receives WAL (synchronous commits still return) but applies none of it until the block ends."""
    with psycopg.connect(pair.standby.socket_url(), autocommit=True) as conn:
        conn.execute("SELECT pg_wal_replay_pause()")
        try:
            yield
        finally:
            conn.execute("SELECT pg_wal_replay_resume()")


def only_alerts(discord: DiscordStub, *components: str) -> None:
    named = {post.content for component in components for post in alerts_about(discord, component)}
    others = [post.content for post in discord.accepted() if post.content not in named]
    assert not others, f"alerts about other components: {others}"


def test_standby_stopped_while_synchronous_is_one_down_then_one_recovered(
    shared_replicated_postgres: ReplicatedPostgres, start_watchdog: StartWatchdog, discord: DiscordStub,
    measure: Measure,
) -> None:
    pair = shared_replicated_postgres
    watchdog = start_watchdog(**replication_env(pair))
    watchdog.wait_until_all_ok()

    pair.standby.stop("fast")
    stopped_at = time.monotonic()
    wait_until(lambda: alerts_about(discord, "replication"), 30, message="a DOWN alert for replication")
    measure("standby stopped → replication DOWN (1 s interval, threshold 2)",
            f"{alerts_about(discord, 'replication')[0].at - stopped_at:.1f} s")
    wait_until(lambda: alerts_about(discord, "database-reader"), 30, message="a DOWN alert for the reader")
    pair.standby.start()
    wait_until(lambda: len(alerts_about(discord, "replication")) == 2, 30, message="replication RECOVERED")
    wait_until(lambda: len(alerts_about(discord, "database-reader")) == 2, 30, message="the reader RECOVERED")

    down = alerts_about(discord, "replication")[0].content
    assert kinds(alerts_about(discord, "replication")) == ["DOWN", "RECOVERED"]
    assert "writes wait until one is back" in down and "synchronous_standby_names = '*'" in down
    assert kinds(alerts_about(discord, "database-reader")) == ["DOWN", "RECOVERED"]
    assert "DATABASE_READ_URL" in alerts_about(discord, "database-reader")[0].content
    only_alerts(discord, "replication", "database-reader")


def test_asynchronous_replication_is_one_degraded_alert_until_synchronous_again(
    shared_replicated_postgres: ReplicatedPostgres, start_watchdog: StartWatchdog, discord: DiscordStub,
) -> None:
    pair = shared_replicated_postgres
    watchdog = start_watchdog(**replication_env(pair))
    watchdog.wait_until_all_ok()

    pair.set_synchronous(False)
    wait_until(lambda: alerts_about(discord, "replication"), 30, message="an alert for asynchronous replication")
    pair.set_synchronous(True)
    wait_until(lambda: len(alerts_about(discord, "replication")) == 2, 30, message="replication RECOVERED")

    degraded = alerts_about(discord, "replication")[0].content
    assert kinds(alerts_about(discord, "replication")) == ["DOWN", "RECOVERED"]
    assert "DOWN (degraded)" in degraded and "replication is asynchronous" in degraded
    only_alerts(discord, "replication")


def test_a_standby_that_stops_replaying_is_lagging_until_it_catches_up(
    shared_replicated_postgres: ReplicatedPostgres, start_watchdog: StartWatchdog, discord: DiscordStub,
    measure: Measure,
) -> None:
    pair = shared_replicated_postgres
    watchdog = start_watchdog(**replication_env(pair))
    watchdog.wait_until_all_ok()

    with replay_paused(pair):
        paused_at = time.monotonic()
        # The primary writes on; the standby receives it all (COMMITs return) but replays none.
        wait_until(lambda: write_on(pair) and alerts_about(discord, "replication-lag"), 30, interval=0.3,
                   message="an alert for the replay lag")
        measure("replay paused → replication-lag alert (limit 2 s, 1 s interval, threshold 2)",
                f"{alerts_about(discord, 'replication-lag')[0].at - paused_at:.1f} s")
    wait_until(lambda: write_on(pair) and len(alerts_about(discord, "replication-lag")) == 2, 30, interval=0.3,
               message="replication-lag RECOVERED")

    lagging = alerts_about(discord, "replication-lag")[0].content
    assert kinds(alerts_about(discord, "replication-lag")) == ["DOWN", "RECOVERED"]
    assert "has not replayed WAL the primary wrote" in lagging and "(limit 2 s)" in lagging
    only_alerts(discord, "replication-lag")


def test_a_failover_is_one_alert_then_recovered(
    replicated_postgres: ReplicatedPostgres, start_watchdog: StartWatchdog, discord: DiscordStub, measure: Measure,
) -> None:
    pair = replicated_postgres
    watchdog = start_watchdog(**replication_env(pair))
    watchdog.wait_until_all_ok()
    old, new = (f"{server.host}:{server.port}" for server in (pair.primary, pair.standby))

    pair.kill_primary()
    pair.promote()
    promoted_at = time.monotonic()
    wait_until(lambda: len(alerts_about(discord, "failover")) == 2, 30, message="failover DOWN, then RECOVERED")
    failover = alerts_about(discord, "failover")
    measure("promotion → failover alert (1 s interval)", f"{failover[0].at - promoted_at:.1f} s")

    assert kinds(failover) == ["DOWN", "RECOVERED"]
    assert f"the primary changed: now {new} (timeline 2), was {old} (timeline 1)" in failover[0].content
    # The promoted standby has no standby of its own: that is `replication`'s alert, not a second failover.
    wait_until(lambda: alerts_about(discord, "replication"), 30, message="an alert: no standby left")
    assert "0 of 1 standbys streaming" in alerts_about(discord, "replication")[0].content


def test_verify_on_the_standby_waits_for_its_replay_and_says_so(
    shared_replicated_postgres: ReplicatedPostgres, start: StartWorker, mqtt_url: str, tmp_path: Path,
) -> None:
    pair = shared_replicated_postgres
    start("rv", database_url=bridge_url_of(pair))
    env = {
        **simulator_env(mqtt_url, login_url(pair.primary.url(), READER_TEST_ROLE)),
        "DATABASE_READ_URL": login_url(pair.standby.url(), READER_TEST_ROLE),
    }
    out = tmp_path / "summary.json"
    args = ["--messages", "300", "--rate", "max", "--invalid", "0.1", "--verify", "--verify-timeout", "30",
            "--json", str(out)]

    with ThreadPoolExecutor(1) as pool:
        with replay_paused(pair):
            run = pool.submit(simulate, args, env)
            wait_until(lambda: _count(pair.primary.socket_url()) == 270, 30, message="every reading on the primary")
            assert not run.done(), "verify is waiting for the standby, which has replayed none of them"
        result = run.result(timeout=60)

    assert result.returncode == 0, result.stdout + result.stderr
    verify = json.loads(out.read_text())["verify"]
    assert (verify["found"], verify["missing"], verify["rejected_found"], verify["ok"]) == (270, 0, 30, True)
    replica = verify["replica"]
    assert replica["server"] == f"{pair.standby.host}:{pair.standby.port}"
    assert (replica["target_source"], replica["caught_up"], replica["behind_bytes"]) == ("primary", True, 0)
    assert f"replica: read from the standby {replica['server']} (DATABASE_READ_URL); waited" in result.stdout


def _count(url: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT count(*) FROM readings").fetchone()
    return int(row[0]) if row else 0
