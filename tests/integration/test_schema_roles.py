"""schema.sql's group roles and the container's role script, against a real PostgreSQL."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from urllib.parse import urlsplit

import psycopg
import pytest
from psycopg.errors import InsufficientPrivilege

from devstack.processes import REPO_ROOT

ROLES = ("bridge", "watchdog", "reader")


def login_url(admin_url: str, user: str, password: str) -> str:
    parts = urlsplit(admin_url)
    return f"postgresql://{user}:{password}@{parts.hostname}:{parts.port}{parts.path}"


@pytest.fixture
def role_script_roles(admin_database_url: str) -> Iterator[dict[str, str]]:
    """Run deploy/postgres/20-roles.sh as the container would; drop its roles afterwards."""
    parts = urlsplit(admin_database_url)
    passwords = {role: f"pw-{role}-'\"$x" for role in ROLES}  # quotes and $ must survive
    env = {
        **os.environ,
        "PGHOST": parts.hostname or "", "PGPORT": str(parts.port),
        "POSTGRES_USER": parts.username or "postgres", "POSTGRES_DB": parts.path.lstrip("/"),
        "BRIDGE_DB_PASSWORD": passwords["bridge"],
        "WATCHDOG_DB_PASSWORD": passwords["watchdog"],
        "READER_DB_PASSWORD": passwords["reader"],
    }
    result = subprocess.run(
        ["sh", str(REPO_ROOT / "deploy/postgres/20-roles.sh")], env=env, capture_output=True, text=True,
        timeout=60, check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    yield {role: login_url(admin_database_url, role, password) for role, password in passwords.items()}
    with psycopg.connect(admin_database_url, autocommit=True) as conn:
        for role in ROLES:
            conn.execute(f"DROP ROLE IF EXISTS {role}")


def test_schema_is_rerunnable(admin_database_url: str) -> None:
    schema = (REPO_ROOT / "schema.sql").read_bytes()
    with psycopg.connect(admin_database_url, autocommit=True) as conn:
        conn.execute(schema)
        conn.execute(schema)
        tables = conn.execute(
            "SELECT count(*) FROM pg_tables WHERE tablename IN ('readings', 'rejected_messages')"
        ).fetchone()
    assert tables == (2,)


def test_reader_reads_and_writes_nothing(role_script_roles: dict[str, str]) -> None:
    with psycopg.connect(role_script_roles["reader"], autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM readings").fetchone() == (0,)
        assert conn.execute("SELECT count(*) FROM rejected_messages").fetchone() == (0,)
        with pytest.raises(InsufficientPrivilege):
            conn.execute(
                "INSERT INTO readings (sensor_id, \"timestamp\", variable, value, unit) VALUES (1, now(), 't', 1, 'C')"
            )
        with pytest.raises(InsufficientPrivilege):
            conn.execute("DELETE FROM readings")


def test_watchdog_can_only_run_a_trivial_query(role_script_roles: dict[str, str]) -> None:
    with psycopg.connect(role_script_roles["watchdog"], autocommit=True) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
        with pytest.raises(InsufficientPrivilege):
            conn.execute("SELECT count(*) FROM readings")


def test_bridge_login_from_the_script_inserts(role_script_roles: dict[str, str]) -> None:
    with psycopg.connect(role_script_roles["bridge"]) as conn:
        conn.execute(
            "INSERT INTO readings (sensor_id, \"timestamp\", variable, value, unit) VALUES (1, now(), 't', 1, 'C')"
        )
        with pytest.raises(InsufficientPrivilege):
            conn.execute("DELETE FROM readings")
