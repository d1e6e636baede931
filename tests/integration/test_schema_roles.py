"""schema.sql's group roles and the compose stack's migration, against a real PostgreSQL.

The migration is run as the `migrate` service runs it: docker-compose.yml's psql
command, with the container's paths mapped to the repository and to a secrets
folder written by the compose init (deploy/compose/stack_init.py) as the migrate service's
own secrets volume.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import ModuleType
from urllib.parse import urlsplit

import psycopg
import pytest
import yaml
from psycopg import sql
from psycopg.errors import InsufficientPrivilege

from bridge.errors import SinkMisconfigured
from bridge.store.revisions import OnConflict
from bridge.store.sink import check_schema
from devstack.postgres import POSTGRES_HINT, PostgresServer
from devstack.processes import REPO_ROOT, find_binary
from devstack.urls import with_login

ROLES = ("bridge", "watchdog", "reader")
OWNER = "migrate_owner"  # stands for the image's `owner` superuser
# Quotes, $, backslash and the characters that break URLs and pgpass lines must all survive.
AWKWARD = "p@ss/w%41:rd'\"$x\\"
_COMPOSE_VARIABLE = re.compile(r"\$\{(\w+):-([^}]*)\}")  # ${NAME:-default}, the form docker-compose.yml uses


class Migration:
    """The `migrate` service's command, run with the local psql against the test server."""

    def __init__(self, admin_url: str, secrets: Path) -> None:
        service = yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())["services"]["migrate"]
        mounts = dict(reversed(volume.split(":")[:2]) for volume in service["volumes"])
        paths = {target: (REPO_ROOT / source if source.startswith("./") else secrets)
                 for target, source in mounts.items()}
        psql = shutil.which("psql") or str(find_binary("psql", POSTGRES_HINT))
        self.command = [psql, *(self._local(arg, paths) for arg in service["command"][1:])]
        parts = urlsplit(admin_url)
        self.env = {
            **{k: v for k, v in os.environ.items() if k in ("PATH", "LANG", "HOME")},
            **{k: self._local(str(v), paths) for k, v in service["environment"].items()},
            "PGHOST": parts.hostname or "", "PGPORT": str(parts.port), "PGUSER": OWNER,
            "PGDATABASE": parts.path.lstrip("/"),
        }

    @staticmethod
    def _local(arg: str, paths: dict[str, Path]) -> str:
        for target, source in paths.items():
            if arg == target or arg.startswith(f"{target}/") or arg.startswith(f"secrets={target}"):
                return arg.replace(target, str(source), 1)
        return arg

    def run(self, dotenv: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        """Run it as `docker compose up` would with `dotenv` as the .env file (default: none)."""
        command = [_COMPOSE_VARIABLE.sub(lambda m: (dotenv or {}).get(m[1]) or m[2], arg) for arg in self.command]
        return subprocess.run(command, env=self.env, capture_output=True, text=True, timeout=60, check=False)


@pytest.fixture
def migration(
    admin_database_url: str, postgres_server: PostgresServer | None, stack_init: ModuleType, tmp_path: Path
) -> Iterator[tuple[Migration, Path]]:
    """A secrets folder as init writes it (awkward passwords), an owner with its password, the migration."""
    if postgres_server is None:
        pytest.skip("checking passwords needs the harness's own PostgreSQL (scram-sha-256 for login roles)")
    values = {s.name: (f"{s.name}-{AWKWARD}", "given") for s in stack_init.SECRETS}
    stack_init.files.write_shares(tmp_path / "shares", values, chown=lambda path, uid: None)
    secrets = tmp_path / "shares" / "migrate"  # the migrate service's own secrets volume
    with psycopg.connect(admin_database_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} SUPERUSER LOGIN PASSWORD {}").format(
            sql.Identifier(OWNER), sql.Literal(values["postgres_password"][0])))
    try:
        yield Migration(admin_database_url, secrets), secrets
    finally:
        with psycopg.connect(admin_database_url, autocommit=True) as conn:
            for role in (*ROLES, OWNER):
                conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


def secret(secrets: Path, role: str) -> str:
    return (secrets / f"{role}_db_password").read_text(encoding="utf-8")


@pytest.fixture
def role_urls(migration: tuple[Migration, Path], admin_database_url: str) -> dict[str, str]:
    command, secrets = migration
    result = command.run()
    assert result.returncode == 0, result.stdout + result.stderr
    return {role: with_login(admin_database_url, role, secret(secrets, role)) for role in ROLES}


def test_schema_is_rerunnable(admin_database_url: str) -> None:
    schema = (REPO_ROOT / "schema.sql").read_bytes()
    with psycopg.connect(admin_database_url, autocommit=True) as conn:
        conn.execute(schema)
        conn.execute(schema)
        tables = conn.execute(
            "SELECT count(*) FROM pg_tables WHERE tablename IN ('readings', 'rejected_messages')"
        ).fetchone()
    assert tables == (2,)


def test_the_migration_reruns_and_applies_changed_passwords(
    migration: tuple[Migration, Path], admin_database_url: str
) -> None:
    command, secrets = migration
    assert command.run().returncode == 0
    (secrets / "bridge_db_password").chmod(0o600)
    (secrets / "bridge_db_password").write_text(f"rotated-{AWKWARD}", encoding="utf-8")

    again = command.run()

    assert again.returncode == 0, again.stdout + again.stderr
    with psycopg.connect(with_login(admin_database_url, "bridge", f"rotated-{AWKWARD}")) as conn:
        assert conn.execute("SELECT current_user").fetchone() == ("bridge",)
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(with_login(admin_database_url, "watchdog", "not-its-password")).close()
    assert AWKWARD not in again.stdout + again.stderr


def test_the_migration_stops_at_a_missing_secret(migration: tuple[Migration, Path]) -> None:
    command, secrets = migration
    (secrets / "reader_db_password").unlink()

    result = command.run()

    assert result.returncode != 0
    assert "reader_db_password" in result.stderr  # cat's own complaint
    assert "missing or empty" in result.stderr


def test_the_owner_password_comes_from_the_pgpass_file(migration: tuple[Migration, Path]) -> None:
    command, secrets = migration
    (secrets / "postgres.pgpass").chmod(0o600)
    (secrets / "postgres.pgpass").write_text("*:*:*:*:wrong\n", encoding="utf-8")

    result = command.run()

    assert result.returncode != 0
    assert "password authentication failed" in result.stderr


def test_reader_reads_and_writes_nothing(role_urls: dict[str, str]) -> None:
    with psycopg.connect(role_urls["reader"], autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM readings").fetchone() == (0,)
        assert conn.execute("SELECT count(*) FROM rejected_messages").fetchone() == (0,)
        with pytest.raises(InsufficientPrivilege):
            conn.execute(
                "INSERT INTO readings (sensor_id, \"timestamp\", variable, value, unit) VALUES (1, now(), 't', 1, 'C')"
            )
        with pytest.raises(InsufficientPrivilege):
            conn.execute("DELETE FROM readings")


def test_watchdog_reads_the_replication_statistics_and_no_table(role_urls: dict[str, str]) -> None:
    with psycopg.connect(role_urls["watchdog"], autocommit=True) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
        # pg_read_all_stats: pg_stat_replication's columns, for WATCHDOG_STANDBYS.
        assert conn.execute("SELECT pg_has_role('pg_read_all_stats', 'USAGE')").fetchone() == (True,)
        with pytest.raises(InsufficientPrivilege):
            conn.execute("SELECT count(*) FROM readings")
        with pytest.raises(InsufficientPrivilege):
            conn.execute("SELECT count(*) FROM bridge_progress")


def test_bridge_login_from_the_migration_inserts(role_urls: dict[str, str]) -> None:
    with psycopg.connect(role_urls["bridge"]) as conn:
        conn.execute(
            "INSERT INTO readings (sensor_id, \"timestamp\", variable, value, unit) VALUES (1, now(), 't', 1, 'C')"
        )
        with pytest.raises(InsufficientPrivilege):
            conn.execute("DELETE FROM readings")


def test_update_mode_in_env_grants_the_workers_login_what_it_needs_and_keep_takes_it_back(
    migration: tuple[Migration, Path], admin_database_url: str
) -> None:
    command, secrets = migration
    bridge_url = with_login(admin_database_url, "bridge", secret(secrets, "bridge"))

    updated = command.run({"BRIDGE_ON_CONFLICT": "update"})

    assert updated.returncode == 0, updated.stdout + updated.stderr
    with psycopg.connect(bridge_url) as conn:
        check_schema(conn, on_conflict=OnConflict.UPDATE)  # what a worker checks at start
    kept = command.run()  # BRIDGE_ON_CONFLICT removed from .env: keep
    assert kept.returncode == 0, kept.stdout + kept.stderr
    with psycopg.connect(bridge_url) as conn:
        check_schema(conn, on_conflict=OnConflict.KEEP)
        with pytest.raises(SinkMisconfigured, match="grant it iot_bridge_update"):
            check_schema(conn, on_conflict=OnConflict.UPDATE)
