"""A PostgreSQL primary with a synchronous streaming standby, and the faults a failover is made of.

The standby is a base backup of the primary (`pg_basebackup -R -X stream`),
so it is what an operator would build by hand: a hot standby streaming WAL
from the primary. The pair can lose its primary the way a host dies (SIGKILL
of every process of the instance), promote the standby (`pg_promote()`),
stop and start the standby, freeze the primary's WAL sender (SIGSTOP: commits
then wait for a standby that hears nothing) and switch between synchronous
and asynchronous replication (`synchronous_standby_names`).

Used by the fault scenarios (tests/fix_replication.py) and scripts/local-stack
(`up --standby`). When run as root, both servers run as Debian's `postgres`
user, as PostgresServer does.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal as signals
import subprocess
import tempfile
from pathlib import Path

import psycopg
from psycopg import sql

from devstack.postgres import POSTGRES_HINT, PostgresServer, apply_schema
from devstack.processes import START_TIMEOUT_S, chown, find_binary, read_tail, service_account, spawn, wait_until
from devstack.urls import postgres_url

# Every process of a killed instance dies with it; DSM segments in /dev/shm
# would outlive a SIGKILL, so these servers keep theirs in the data folder.
KILLABLE = {"dynamic_shared_memory_type": "mmap"}
# Any standby that connects is synchronous: the pair has one.
ANY_STANDBY = "*"
STANDBY_NAME = "standby"
PROMOTE_TIMEOUT_S = 30


class StandbyServer(PostgresServer):
    """A hot standby: initialised by pg_basebackup from `primary` instead of initdb, then streaming from it."""

    def __init__(
        self, primary: PostgresServer, root: Path | None = None, *, port: int | None = None, durable: bool = False,
    ) -> None:
        # cluster_name is the application_name the standby's WAL receiver reports.
        settings = {"cluster_name": STANDBY_NAME, **({} if durable else KILLABLE)}
        super().__init__(root, port=port, durable=durable, replication=True, settings=settings)
        self._primary = primary

    def _initialise(self) -> None:
        """pg_basebackup of the primary, with the standby's settings (-R) and the WAL it needs (-X stream)."""
        basebackup = find_binary("pg_basebackup", POSTGRES_HINT)
        self._socket_dir.mkdir(exist_ok=True)
        chown(self._account, self._root, self._socket_dir)
        source = f"host={self._primary.socket_dir} port={self._primary.port} user=postgres"
        log = self._root / "basebackup.log"
        args = [str(basebackup), "-D", str(self._data_dir), "-d", source, "-R", "-X", "stream", "-c", "fast",
                *([] if self._durable else ["--no-sync"])]
        process = spawn(args, log_path=log, account=self._account, cwd=self._root)
        if process.wait(START_TIMEOUT_S * 2) != 0:
            raise RuntimeError(f"pg_basebackup failed; output:\n{read_tail(log)}")


class ReplicatedPostgres:
    """A primary and a hot standby on free ports on 127.0.0.1, each in its own folder under `root`.

    start() leaves replication synchronous, schema.sql and the test login
    roles applied on the primary (and so on the standby).
    """

    def __init__(self, root: Path | None = None, *, durable: bool = False,
                 ports: tuple[int | None, int | None] = (None, None)) -> None:
        self._root = root or Path(tempfile.mkdtemp(prefix="bridge-test-pgha-"))
        self._root.mkdir(parents=True, exist_ok=True)
        chown(service_account("postgres"), self._root)  # the servers' folders are below it
        self.primary = PostgresServer(self._root / "primary", port=ports[0], durable=durable,
                                      replication=True, settings=KILLABLE)
        self.standby = StandbyServer(self.primary, self._root / "standby", port=ports[1], durable=durable)
        self._frozen: list[int] = []

    def start(self, *, schema: bool = True) -> None:
        """Start the primary, apply the schema, take the standby's base backup, start it; replication synchronous."""
        self.primary.start()
        if schema:
            apply_schema(self.primary.url())
        self.standby.start()
        self.set_synchronous(True)

    def url(
        self, user: str = "postgres", password: str | None = None, dbname: str = "postgres", *,
        ports: tuple[int, int] | None = None,
    ) -> str:
        """A multi-host URL naming both servers (or `ports` on 127.0.0.1, proxies say): libpq takes the writable one."""
        return postgres_url(*(ports or (self.primary.port, self.standby.port)), user=user, password=password,
                            dbname=dbname, read_write=True)

    def set_synchronous(self, on: bool, *, server: PostgresServer | None = None) -> None:
        """Make COMMIT wait for the standby (on) or not; with `on`, wait until the standby is synchronous."""
        server = server or self.primary
        set_synchronous(server, on)
        if on and self.standby.is_running() and server is self.primary:
            wait_until(lambda: self.sync_state() == "sync", START_TIMEOUT_S, message="the standby synchronous")

    def sync_state(self) -> str | None:
        """The standby's state as the primary sees it (pg_stat_replication.sync_state), None if not connected."""
        return sync_state(self.primary)

    def wait_replayed(self, timeout: float = 30) -> None:
        """Wait until the standby has replayed everything the primary has written so far."""
        with psycopg.connect(self.primary.socket_url(), autocommit=True) as conn:
            row = conn.execute("SELECT pg_current_wal_lsn()").fetchone()
        target = str(row[0]) if row else "0/0"

        def replayed() -> bool:
            with psycopg.connect(self.standby.socket_url(), autocommit=True) as conn:
                done = conn.execute("SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", (target,)).fetchone()
            return bool(done and done[0])

        wait_until(replayed, timeout, interval=0.05, message=f"the standby replayed up to {target}")

    def freeze_wal_sender(self) -> int:
        """SIGSTOP the primary's WAL sender: the standby hears nothing more, synchronous commits wait."""
        with psycopg.connect(self.primary.socket_url(), autocommit=True) as conn:
            row = conn.execute("SELECT pid FROM pg_stat_replication").fetchone()
        if row is None:
            raise RuntimeError("no WAL sender on the primary: is the standby connected?")
        pid = int(row[0])
        os.kill(pid, signals.SIGSTOP)
        self._frozen.append(pid)
        return pid

    def thaw_wal_sender(self) -> None:
        """SIGCONT what freeze_wal_sender stopped."""
        while self._frozen:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self._frozen.pop(), signals.SIGCONT)

    def kill_primary(self) -> None:
        """The primary's host dies: SIGKILL to every process of the instance (its process group)."""
        kill_instance(self.primary)
        self._frozen.clear()  # died with it

    def promote(self) -> None:
        """Promote the standby (pg_promote) and let it accept writes without a standby of its own."""
        with psycopg.connect(self.standby.socket_url(), autocommit=True) as conn:
            row = conn.execute("SELECT pg_promote(true, %s)", (PROMOTE_TIMEOUT_S,)).fetchone()
        if not row or not row[0]:
            raise RuntimeError(f"the standby was not promoted within {PROMOTE_TIMEOUT_S} s:\n{self.standby.log_tail()}")
        self.set_synchronous(False, server=self.standby)

    def cleanup(self) -> None:
        """Stop both servers (a frozen WAL sender would hold up a clean stop) and delete the folder."""
        self.thaw_wal_sender()
        try:
            for server in (self.standby, self.primary):
                with contextlib.suppress(RuntimeError):
                    server.stop("immediate")
        finally:
            shutil.rmtree(self._root, ignore_errors=True)


def kill_instance(server: PostgresServer) -> None:
    """SIGKILL a PostgreSQL instance we started, postmaster and every child, like a host that dies.

    Each backend is a session of its own (PostgreSQL calls setsid()), so the
    postmaster's process group is not enough: it is stopped first, so that it
    forks no more, then its children and itself are killed.
    """
    if not server.is_running():
        return
    postmaster = server.pid
    with contextlib.suppress(ProcessLookupError):
        os.kill(postmaster, signals.SIGSTOP)
        for pid in (*children_of(postmaster), postmaster):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signals.SIGKILL)
    server.stop("immediate")  # reaps it
    remove_shared_memory(server.data_dir)


def children_of(pid: int) -> list[int]:
    """The PIDs whose parent is `pid` (from /proc)."""
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                children.append(int(stat.parent.name))
    return children


def remove_shared_memory(data_dir: Path) -> None:
    """Remove the System V segment a killed postmaster left (its id is on line 7 of postmaster.pid)."""
    try:
        lines = (data_dir / "postmaster.pid").read_text().splitlines()
        shmid = lines[6].split()[1]
    except (OSError, IndexError):
        return
    subprocess.run(["ipcrm", "-m", shmid], capture_output=True, check=False)


def set_synchronous(server: PostgresServer, on: bool) -> None:
    """ALTER SYSTEM synchronous_standby_names ('*': any standby, or '') and reload; wait until new sessions see it."""
    names = ANY_STANDBY if on else ""
    with psycopg.connect(server.socket_url(), autocommit=True) as conn:
        conn.execute(sql.SQL("ALTER SYSTEM SET synchronous_standby_names = {}").format(sql.Literal(names)))
        conn.execute("SELECT pg_reload_conf()")
    wait_until(lambda: _setting(server, "synchronous_standby_names") == names, 10,
               message=f"synchronous_standby_names = {names!r} on port {server.port}")


def sync_state(primary: PostgresServer) -> str | None:
    """How the primary sees its streaming standby: 'sync', 'async' ...; None if none is streaming."""
    with psycopg.connect(primary.socket_url(), autocommit=True) as conn:
        row = conn.execute("SELECT sync_state FROM pg_stat_replication WHERE state = 'streaming'").fetchone()
    return str(row[0]) if row else None


def allow_replication(server: PostgresServer) -> None:
    """Let the superuser open replication connections through the socket (a cluster made without it), and reload."""
    hba = server.data_dir / "pg_hba.conf"
    line = "local replication postgres trust"
    if line not in hba.read_text(encoding="utf-8").splitlines():
        with hba.open("a", encoding="utf-8") as conf:
            conf.write(f"{line}\n")
        with psycopg.connect(server.socket_url(), autocommit=True) as conn:
            conn.execute("SELECT pg_reload_conf()")


def _setting(server: PostgresServer, name: str) -> str:
    with psycopg.connect(server.socket_url(), autocommit=True) as conn:
        row = conn.execute("SELECT current_setting(%s)", (name,)).fetchone()
    return str(row[0]) if row else ""
