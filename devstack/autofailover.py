"""pg_auto_failover: a monitor and two PostgreSQL nodes that fail over by themselves, on free ports on 127.0.0.1.

Debian's packages (pg-auto-failover-cli for pg_autoctl, postgresql-15-auto-
failover for the monitor's extension), run the way their documentation does:
`pg_autoctl create monitor`, then `pg_autoctl create postgres` for each node,
each kept running by `pg_autoctl run` (a process tree of its own, as the
`postgres` user when we are root). The second node becomes a synchronous hot
standby of the first; when the primary's node dies (kill_node: every process
of the tree, like a host), the monitor notices and promotes the standby. No
test drives the promotion.

The monitor's timeouts are tuned so that a failover fits in CI (MONITOR_GUCS);
with pg_auto_failover's defaults the same failover took 51 s on this machine
(about 13 s to notice, then the 30 s primary_demote_timeout), against about
5 s here. Each instance's state (pg_autoctl's configuration and state files
too, through XDG_*) lives under one folder, deleted by cleanup().
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal as signals
import subprocess
import tempfile
from collections.abc import Mapping
from pathlib import Path

import psycopg

from devstack.postgres import POSTGRES_HINT, apply_schema
from devstack.processes import LOCALHOST, chown, find_binary, free_port, read_tail, service_account, spawn, wait_until
from devstack.replication import children_of, remove_shared_memory
from devstack.urls import postgres_url, server_url

AUTOCTL_HINT = (
    "install Debian's pg_auto_failover packages "
    "(apt-get install -y pg-auto-failover-cli postgresql-15-auto-failover)"
)
NODES = ("node1", "node2")
# pgautofailover.* on the monitor; the defaults in the comments.
MONITOR_GUCS = {
    "pgautofailover.health_check_period": "1s",  # 5s: how often the monitor probes each node
    "pgautofailover.health_check_timeout": "1s",  # 5s: connect timeout of a probe
    "pgautofailover.health_check_max_retries": "1",  # 2
    "pgautofailover.health_check_retry_delay": "500ms",  # 2s
    "pgautofailover.node_considered_unhealthy_timeout": "2s",  # 20s: silent that long, a node is unhealthy
    "pgautofailover.primary_demote_timeout": "2s",  # 30s: how long a lost primary gets to demote itself
}
# Three small servers on a shared machine: pg_autoctl sizes shared_buffers from the host's memory.
SERVER_SETTINGS = {"shared_buffers": "32MB", "fsync": "off", "dynamic_shared_memory_type": "mmap"}
CREATE_TIMEOUT_S = 90.0
FAILOVER_TIMEOUT_S = 60.0
# The monitor's view of the nodes: their state as they report it and as assigned.
_STATES = "SELECT nodename, nodeport, reportedstate::text, goalstate::text FROM pgautofailover.node ORDER BY nodeid"
WRITABLE = ("single", "primary", "wait_primary")


class AutoFailoverFormation:
    """A pg_auto_failover monitor and two nodes under `root` (a temporary folder by default)."""

    def __init__(self, root: Path | None = None, *, monitor_gucs: Mapping[str, str] = MONITOR_GUCS) -> None:
        self._autoctl = find_binary("pg_autoctl", AUTOCTL_HINT)
        # Its own folder (not a symlink to it) is where pg_autoctl looks for initdb, pg_controldata ...
        self._pg_ctl = find_binary("pg_ctl", POSTGRES_HINT).resolve()
        self._account = service_account("postgres")
        self._root = root or Path(tempfile.mkdtemp(prefix="bridge-test-pgaf-"))
        self._root.mkdir(parents=True, exist_ok=True)
        chown(self._account, self._root)
        self._monitor_gucs = dict(monitor_gucs)
        self.ports = {name: free_port() for name in ("monitor", *NODES)}
        self._processes: dict[str, subprocess.Popen[bytes]] = {}

    def start(self) -> None:
        """Create and run the monitor, then each node; return once one is primary and the other its standby."""
        self._initdb("monitor")
        self._autoctl_run("create", "monitor", "--pgdata", self._pgdata("monitor"),
                          "--pgport", str(self.ports["monitor"]), "--hostname", LOCALHOST, "--auth", "trust",
                          "--no-ssl", "--pgctl", str(self._pg_ctl), what="monitor")
        self._autoctl_run("config", "set", "--pgdata", self._pgdata("monitor"), "postgresql.listen_addresses",
                          LOCALHOST, what="monitor")
        self._tune(self._root / "monitor", {**SERVER_SETTINGS, **self._monitor_gucs})
        self._run("monitor")
        wait_until(lambda: self._answers(self.ports["monitor"], "pg_auto_failover"), CREATE_TIMEOUT_S,
                   interval=0.2, message="the pg_auto_failover monitor")
        for name in NODES:
            self._create_node(name)
        wait_until(lambda: self.states() == {NODES[0]: ("primary", "primary"), NODES[1]: ("secondary", "secondary")},
                   CREATE_TIMEOUT_S, interval=0.2, message=f"{NODES[0]} primary and {NODES[1]} its standby")
        apply_schema(self.admin_url(NODES[0]))

    def _create_node(self, name: str) -> None:
        if name == NODES[0]:
            self._initdb(name)  # the standby is a base backup of it
        self._autoctl_run(
            "create", "postgres", "--pgdata", self._pgdata(name), "--pgport", str(self.ports[name]),
            "--pghost", LOCALHOST, "--listen", LOCALHOST, "--hostname", LOCALHOST, "--name", name,
            "--auth", "trust", "--no-ssl", "--pgctl", str(self._pg_ctl), "--monitor", self.monitor_url, what=name,
        )
        self._tune(self._root / name, SERVER_SETTINGS)
        self._run(name)
        wait_until(lambda: self.states().get(name, ("", ""))[0] in ("single", "secondary"), CREATE_TIMEOUT_S,
                   interval=0.2, message=f"{name} registered and running")

    @property
    def monitor_url(self) -> str:
        """The monitor's URI, as the nodes use it."""
        return server_url("postgres", [f"{LOCALHOST}:{self.ports['monitor']}"], user="autoctl_node",
                          path="pg_auto_failover", query={"sslmode": "disable"})

    def url(self, user: str = "postgres", password: str | None = None, dbname: str = "postgres") -> str:
        """A multi-host URL naming both nodes, for the node that accepts writes (what `pg_autoctl show uri` gives)."""
        return postgres_url(*(self.ports[name] for name in NODES), user=user, password=password, dbname=dbname,
                            read_write=True)

    def admin_url(self, name: str) -> str:
        """The superuser's URL of one node (pg_autoctl's clusters trust local TCP logins)."""
        return postgres_url(self.ports[name])

    def states(self) -> dict[str, tuple[str, str]]:
        """Each node's (reported, assigned) state according to the monitor; empty if it does not answer."""
        try:
            with psycopg.connect(self.monitor_url, connect_timeout=2, autocommit=True) as conn:
                return {str(name): (str(reported), str(goal)) for name, _, reported, goal in conn.execute(_STATES)}
        except psycopg.Error:
            return {}

    def wait_for_failover(self, away_from: str, timeout: float = FAILOVER_TIMEOUT_S) -> str:
        """Wait until another node than `away_from` reports a primary's state and takes writes; return its name."""

        def promoted() -> str | None:
            for name, (reported, _) in self.states().items():
                if name != away_from and reported in WRITABLE and self._writable(self.ports[name]):
                    return name
            return None

        return wait_until(promoted, timeout, interval=0.1, message=f"a failover away from {away_from}")

    def kill_node(self, name: str) -> None:
        """The node's host dies: its pg_autoctl, its PostgreSQL and every backend SIGKILLed at once."""
        process = self._processes[name]
        kill_tree(process.pid)
        process.wait()
        remove_shared_memory(self._root / name)

    def log_tail(self, name: str, lines: int = 40) -> str:
        """The last lines of one instance's pg_autoctl output."""
        return read_tail(self._root / f"{name}.log", lines=lines)

    def cleanup(self) -> None:
        """Stop every pg_autoctl (SIGQUIT: it stops its PostgreSQL at once, a throwaway), then delete the folder."""
        try:
            for name in (*reversed(NODES), "monitor"):
                process = self._processes.get(name)
                if process is None or process.poll() is not None:
                    continue
                process.send_signal(signals.SIGQUIT)
                try:
                    process.wait(30)
                except subprocess.TimeoutExpired:
                    kill_tree(process.pid)
                    process.wait()
        finally:
            shutil.rmtree(self._root, ignore_errors=True)

    def _pgdata(self, name: str) -> str:
        return str(self._root / name)

    def _env(self) -> dict[str, str]:
        """pg_autoctl keeps its configuration and state under XDG_*: here, not in the postgres user's home."""
        env = {key: value for key, value in os.environ.items() if key in ("PATH", "LANG", "LC_ALL", "TZ")}
        home = str(self._root)
        return {**env, "HOME": home, "XDG_CONFIG_HOME": f"{home}/config", "XDG_DATA_HOME": f"{home}/share",
                "XDG_RUNTIME_DIR": f"{home}/run", "PG_CONFIG": str(self._pg_ctl.parent / "pg_config")}

    def _autoctl_run(self, *args: str, what: str) -> None:
        """Run one pg_autoctl command to completion; RuntimeError with its output if it fails."""
        log = self._root / f"{what}.log"
        process = spawn([str(self._autoctl), *args], log_path=log, account=self._account, env=self._env(),
                        cwd=self._root)
        if process.wait(CREATE_TIMEOUT_S) != 0:
            raise RuntimeError(f"pg_autoctl {' '.join(args[:2])} failed for {what}:\n{read_tail(log)}")

    def _run(self, name: str) -> None:
        """`pg_autoctl run` for one instance, in a session of its own."""
        self._processes[name] = spawn([str(self._autoctl), "run", "--pgdata", self._pgdata(name)],
                                      log_path=self._root / f"{name}.log", account=self._account, env=self._env(),
                                      cwd=self._root)

    def _initdb(self, name: str) -> None:
        """initdb as pg_autoctl would run it, but --no-sync: a throwaway (pg_autoctl then adopts the cluster)."""
        initdb = self._pg_ctl.parent / "initdb"
        log = self._root / f"{name}.log"
        process = spawn([str(initdb), "-D", self._pgdata(name), "--auth=trust", "-U", "postgres", "-E", "UTF8",
                         "--locale=C", "--no-sync"], log_path=log, account=self._account, env=self._env(),
                        cwd=self._root)
        if process.wait(CREATE_TIMEOUT_S) != 0:
            raise RuntimeError(f"initdb failed for {name}:\n{read_tail(log)}")

    def _tune(self, pgdata: Path, settings: Mapping[str, str]) -> None:
        """Settings after pg_autoctl's own (postgresql.auto.conf is read last), for the next start."""
        with (pgdata / "postgresql.auto.conf").open("a", encoding="utf-8") as conf:
            conf.writelines(f"{name} = '{value}'\n" for name, value in settings.items())

    def _answers(self, port: int, dbname: str) -> bool:
        try:
            with psycopg.connect(postgres_url(port, dbname=dbname), connect_timeout=2):
                return True
        except psycopg.Error:
            return False

    def _writable(self, port: int) -> bool:
        try:
            with psycopg.connect(postgres_url(port, read_write=True), connect_timeout=2):
                return True
        except psycopg.Error:
            return False


def kill_tree(pid: int) -> None:
    """SIGKILL a process and all its descendants; each is stopped first so that none forks or restarts another."""
    stopped: list[int] = []
    pending = [pid]
    while pending:
        current = pending.pop()
        with contextlib.suppress(ProcessLookupError):
            os.kill(current, signals.SIGSTOP)
            stopped.append(current)
            pending.extend(children_of(current))
    for current in stopped:
        with contextlib.suppress(ProcessLookupError):
            os.kill(current, signals.SIGKILL)
