"""A throwaway PostgreSQL on a free port on 127.0.0.1, the project's schema and the tests' login roles.

Used by the fixtures in tests/fix_servers.py, the benchmarks and
scripts/local-stack. The server keeps its files in its own folder, so the
tests never touch a server running on the machine.
"""

from __future__ import annotations

import signal as signals
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import psycopg
from psycopg import sql

from devstack.lifecycle import Launch, ServerProcess
from devstack.processes import (
    LOCALHOST,
    REPO_ROOT,
    START_TIMEOUT_S,
    chown,
    find_binary,
    read_tail,
    service_account,
    spawn,
)
from devstack.urls import login_password, postgres_socket_url, postgres_url

POSTGRES_HINT = (
    "install Debian's `postgresql` package (apt-get install -y postgresql) or set TEST_DATABASE_URL"
)
BRIDGE_TEST_ROLE = "bridge_test"
BRIDGE_UPDATE_TEST_ROLE = "bridge_update_test"  # BRIDGE_ON_CONFLICT=update
REPLAY_TEST_ROLE = "replay_test"
READER_TEST_ROLE = "reader_test"  # the dashboards' read-only role
WATCHDOG_TEST_ROLE = "watchdog_test"
# Each test login role and the group it is granted (schema.sql).
TEST_ROLES = {
    BRIDGE_TEST_ROLE: "iot_bridge",
    BRIDGE_UPDATE_TEST_ROLE: "iot_bridge_update",
    REPLAY_TEST_ROLE: "iot_replay",
    READER_TEST_ROLE: "iot_reader",
    WATCHDOG_TEST_ROLE: "iot_watchdog",
}
PostgresStopMode = Literal["smart", "fast", "immediate"]
# https://www.postgresql.org/docs/current/server-shutdown.html
_STOP_SIGNALS = {
    "smart": signals.SIGTERM,
    "fast": signals.SIGINT,
    "immediate": signals.SIGQUIT,
}


def apply_schema_file(admin_url: str) -> None:
    """Run the project's schema.sql (idempotent) as the database owner."""
    schema = (REPO_ROOT / "schema.sql").read_text(encoding="utf-8")
    with psycopg.connect(admin_url, autocommit=True) as conn:
        # Without parameters psycopg sends a simple query, which may hold
        # several statements (schema.sql also contains a DO $$ block).
        conn.execute(schema.encode())


def apply_schema(admin_url: str) -> None:
    """Run the project's schema.sql and create the test login roles (passwords: login_password)."""
    apply_schema_file(admin_url)
    with psycopg.connect(admin_url, autocommit=True) as conn:
        for role, group in TEST_ROLES.items():
            ensure_login_role(conn, role, login_password(role), group)


def ensure_login_role(conn: psycopg.Connection[Any], role: str, password: str, group: str) -> None:
    """Create login role `role` if missing, else give it LOGIN; set its password and grant it `group`.

    Idempotent, so it runs on every start against a database that may already hold the role.
    CREATE/ALTER ROLE take no bind parameters: the password goes in as a quoted literal.
    """
    names = {"role": sql.Identifier(role), "group": sql.Identifier(group), "password": sql.Literal(password)}
    if conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone():
        conn.execute(sql.SQL("ALTER ROLE {role} LOGIN PASSWORD {password}").format(**names))
    else:
        conn.execute(sql.SQL("CREATE ROLE {role} LOGIN PASSWORD {password}").format(**names))
    conn.execute(sql.SQL("GRANT {group} TO {role}").format(**names))


def partman_bgw_settings(dbname: str, *, role: str = "postgres", interval_s: int = 3600) -> dict[str, str]:
    """Server settings that run pg_partman's background worker: run_maintenance() on `dbname` every `interval_s`.

    The library loads only at server start (shared_preload_libraries); the
    worker does nothing until pg_partman is installed in `dbname`
    (python -m bridge partition setup does it). Debian: postgresql-<major>-partman.
    """
    return {
        "shared_preload_libraries": "pg_partman_bgw",
        "pg_partman_bgw.dbname": dbname,
        "pg_partman_bgw.role": role,
        "pg_partman_bgw.interval": str(interval_s),
    }


class PostgresServer(ServerProcess):
    """A PostgreSQL cluster in its own folder, on a free port on 127.0.0.1.

    By default a throwaway: a temporary folder, fsync off, the superuser
    trusted over TCP (the fixtures' admin URL) and every other role asked for
    its password (scram-sha-256), so a test proves that a password reached
    the server intact. scripts/local-stack passes a `root` that outlives it and
    `durable=True`: fsync on, and the superuser too must come in through the
    Unix socket in `root`/sock. `settings` are passed as `-c name=value`;
    `replication` lets the superuser open replication connections (a standby's).
    """

    name = "postgres"

    def __init__(
        self, root: Path | None = None, *, port: int | None = None, durable: bool = False,
        settings: Mapping[str, str] | None = None, replication: bool = False,
    ) -> None:
        initdb = find_binary("initdb", POSTGRES_HINT)
        self._initdb = initdb
        # Use the server that belongs to this initdb, not one of another version.
        sibling = initdb.resolve().parent / "postgres"
        self._postgres = sibling if sibling.exists() else find_binary("postgres", POSTGRES_HINT)
        self._account = service_account("postgres")
        super().__init__(root, port=port, temp_prefix="bridge-test-pg-")
        self._data_dir = self._root / "data"
        self._socket_dir = self._root / "sock"
        self._log_path = self._root / "postgres.log"
        self._durable = durable
        self._settings = dict(settings or {})  # extra -c name=value, e.g. partman_bgw_settings()
        self._replication = replication

    @property
    def data_dir(self) -> Path:
        """The cluster's data directory (PGDATA)."""
        return self._data_dir

    @property
    def socket_dir(self) -> Path:
        """The folder of the server's Unix socket."""
        return self._socket_dir

    @property
    def log_path(self) -> Path:
        """The server's log file."""
        return self._log_path

    def socket_url(self, dbname: str = "postgres") -> str:
        """The superuser's URL through the Unix socket, which trusts local logins whatever `host_auth` is."""
        return postgres_socket_url(self._socket_dir, self.port, dbname)

    def url(self, user: str = "postgres", password: str | None = None, dbname: str = "postgres") -> str:
        """Return a postgresql:// URL for this server."""
        return postgres_url(self.port, user=user, password=password, dbname=dbname)

    def stop(self, mode: PostgresStopMode = "fast") -> None:
        """Stop the postmaster: "fast" rolls back sessions cleanly, "immediate" is like a crash."""
        self._stop_with(_STOP_SIGNALS[mode])

    def log_tail(self, lines: int = 40) -> str:
        """Last lines of the server log."""
        return read_tail(self._log_path, lines=lines)

    def _prepare(self) -> None:
        """Initialise the cluster on first use."""
        if not (self._data_dir / "PG_VERSION").exists():
            self._initialise()

    def _launch(self) -> Launch:
        # Durability against OS crashes is useless for a throwaway; commits
        # still reach the WAL (synchronous_commit=on), so a killed server
        # keeps every committed row.
        fast = [] if self._durable else ["-c", "fsync=off", "-c", "full_page_writes=off"]
        args = [
            str(self._postgres), "-D", str(self._data_dir), "-p", str(self.port),
            "-k", str(self._socket_dir), "-c", f"listen_addresses={LOCALHOST}",
            *fast, "-c", "synchronous_commit=on",
            *(arg for name, value in self._settings.items() for arg in ("-c", f"{name}={value}")),
        ]
        return Launch(args, self._log_path, account=self._account, cwd=self._root)

    def _initialise(self) -> None:
        """Run initdb into the temporary folder (as the `postgres` OS user when we are root)."""
        self._socket_dir.mkdir(exist_ok=True)
        chown(self._account, self._root, self._socket_dir)
        args = [
            str(self._initdb), "-D", str(self._data_dir), "--auth-local=trust", "--auth-host=scram-sha-256",
            "-U", "postgres", "-E", "UTF8", "--locale=C", *([] if self._durable else ["--no-sync"]),
        ]
        init_log = self._root / "initdb.log"
        process = spawn(args, log_path=init_log, account=self._account, cwd=self._root)
        if process.wait(START_TIMEOUT_S * 2) != 0:
            raise RuntimeError(f"initdb failed; output:\n{read_tail(init_log)}")
        superuser = "" if self._durable else f"host all postgres {LOCALHOST}/32 trust\n"
        replication = "local replication postgres trust\n" if self._replication else ""
        (self._data_dir / "pg_hba.conf").write_text(
            f"local all all trust\n{replication}{superuser}host all all {LOCALHOST}/32 scram-sha-256\n",
            encoding="utf-8",
        )

    def _is_ready(self) -> bool:
        """Whether a superuser connection succeeds right now."""
        try:
            with psycopg.connect(self.socket_url(), connect_timeout=2):
                return True
        except psycopg.OperationalError:
            return False
