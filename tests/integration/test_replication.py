"""The replicated pair of devstack/replication.py behaves as the failover scenarios assume."""

from __future__ import annotations

import threading

import psycopg
import pytest

from devstack.processes import wait_until
from devstack.replication import ReplicatedPostgres, children_of

INSERT = "INSERT INTO readings (sensor_id, \"timestamp\", variable, value, unit) VALUES (%s, now(), 't', 1, 'C')"


def _count(url: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT count(*) FROM readings").fetchone()
    return int(row[0]) if row else 0


def test_commits_wait_for_the_synchronous_standby_and_reach_it(
    shared_replicated_postgres: ReplicatedPostgres,
) -> None:
    pair = shared_replicated_postgres
    assert pair.sync_state() == "sync"
    pair.freeze_wal_sender()
    done = threading.Event()

    def commit() -> None:
        with psycopg.connect(pair.primary.url(), autocommit=True) as conn:
            conn.execute(INSERT, (1,))
        done.set()

    writer = threading.Thread(target=commit, daemon=True)
    writer.start()
    assert not done.wait(1.0), "a COMMIT returned while the standby heard nothing"
    pair.thaw_wal_sender()
    assert done.wait(10), "the COMMIT returned once the standby confirmed it"
    pair.wait_replayed()

    assert _count(pair.standby.url()) == 1
    with pytest.raises(psycopg.errors.ReadOnlySqlTransaction), psycopg.connect(pair.standby.url()) as conn:
        conn.execute(INSERT, (2,))


def test_asynchronous_commits_return_without_the_standby(shared_replicated_postgres: ReplicatedPostgres) -> None:
    pair = shared_replicated_postgres
    pair.set_synchronous(False)
    pair.freeze_wal_sender()
    with psycopg.connect(pair.primary.url(), autocommit=True) as conn:
        conn.execute(INSERT, (3,))  # would hang if still synchronous

    assert pair.sync_state() == "async"
    assert _count(pair.standby.url()) == 0


def test_the_multi_host_url_follows_the_promotion(replicated_postgres: ReplicatedPostgres) -> None:
    pair = replicated_postgres
    with psycopg.connect(pair.url()) as conn:
        assert conn.info.port == pair.primary.port
    postmaster = pair.primary.pid
    backends = children_of(postmaster)

    pair.kill_primary()
    pair.promote()

    assert backends and not any(_alive(pid) for pid in (postmaster, *backends)), "every process of the instance died"
    with psycopg.connect(pair.url()) as conn:
        assert conn.info.port == pair.standby.port
        conn.execute(INSERT, (4,))
    wait_until(lambda: _count(pair.standby.url()) == 1, 5, message="the write on the promoted standby")


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
