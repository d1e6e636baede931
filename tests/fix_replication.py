"""Fixtures: a PostgreSQL primary with a synchronous streaming standby (devstack/replication.py), a pytest plugin.

Always started from local binaries (Debian's `postgresql`), whatever backend
serves the other tests: a failover needs servers the test can kill. A
scenario that kills the primary takes `replicated_postgres`, a fresh pair;
one that leaves both servers up may share `shared_replicated_postgres`, one
per test module, with its tables emptied before each test. `autofailover` is
a pg_auto_failover formation (devstack/autofailover.py) that fails over by itself.
"""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest

from devstack.autofailover import AUTOCTL_HINT, AutoFailoverFormation
from devstack.postgres import BRIDGE_TEST_ROLE, POSTGRES_HINT, REPLAY_TEST_ROLE
from devstack.processes import find_binary
from devstack.replication import ReplicatedPostgres
from devstack.urls import login_url

# Every table of schema.sql (whatever it holds by now), emptied between the tests sharing a pair.
_TRUNCATE_ALL = """
DO $$ BEGIN
    EXECUTE (SELECT 'TRUNCATE ' || string_agg(format('%I', tablename), ', ') || ' RESTART IDENTITY'
             FROM pg_tables WHERE schemaname = 'public');
END $$
"""


def _started_pair() -> ReplicatedPostgres:
    try:
        find_binary("pg_basebackup", POSTGRES_HINT)
    except RuntimeError as exc:
        pytest.fail(f"No PostgreSQL binaries for the replication tests: {exc}")
    pair = ReplicatedPostgres()
    try:
        pair.start()
    except BaseException:
        pair.cleanup()
        raise
    return pair


@pytest.fixture
def replicated_postgres() -> Iterator[ReplicatedPostgres]:
    """A fresh primary and synchronous standby (schema.sql and the test roles applied), for a test that kills one."""
    pair = _started_pair()
    try:
        yield pair
    finally:
        pair.cleanup()


@pytest.fixture(scope="module")
def _module_replicated_postgres() -> Iterator[ReplicatedPostgres]:
    pair = _started_pair()
    try:
        yield pair
    finally:
        pair.cleanup()


@pytest.fixture
def shared_replicated_postgres(_module_replicated_postgres: ReplicatedPostgres) -> ReplicatedPostgres:
    """The module's pair, tables empty, the standby running and synchronous: a test must not kill the primary."""
    pair = _module_replicated_postgres
    assert pair.primary.is_running(), "an earlier test of this module killed the shared primary"
    pair.thaw_wal_sender()
    if not pair.standby.is_running():
        pair.standby.start()
    pair.set_synchronous(True)
    with psycopg.connect(pair.primary.url(), autocommit=True) as conn:
        conn.execute(_TRUNCATE_ALL)
    return pair


@pytest.fixture
def autofailover() -> Iterator[AutoFailoverFormation]:
    """A pg_auto_failover monitor with a primary and a synchronous standby (schema.sql applied), failing over alone."""
    try:
        find_binary("pg_autoctl", AUTOCTL_HINT)
    except RuntimeError as exc:
        pytest.fail(f"No pg_auto_failover for the orchestrated failover: {exc}")
    formation = AutoFailoverFormation()
    try:
        formation.start()
        yield formation
    finally:
        formation.cleanup()


def bridge_url_of(pair: ReplicatedPostgres | AutoFailoverFormation) -> str:
    """The pair's multi-host URL (target_session_attrs=read-write) for the bridge's test login role."""
    return login_url(pair.url(), BRIDGE_TEST_ROLE)


def replay_url_of(pair: ReplicatedPostgres) -> str:
    """The pair's multi-host URL for replay-rejected's test login role."""
    return login_url(pair.url(), REPLAY_TEST_ROLE)
