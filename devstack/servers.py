"""Throwaway PostgreSQL and Mosquitto servers on free ports on 127.0.0.1.

A plain module (no pytest) used by the fixtures in tests/fix_servers.py,
and by the benchmarks. Each server keeps its files in its own temporary folder,
so the tests never touch a server running on the machine.
"""

from __future__ import annotations

import glob
import importlib.util
import json
import os
import pwd
import re
import shutil
import signal as signals
import socket
import subprocess
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Literal
from urllib.parse import quote, urlsplit, urlunsplit

import psycopg
from psycopg import sql

from devstack.mqtt_client import MqttTestClient, MqttTestError
from devstack.processes import (
    LOCALHOST,
    REPO_ROOT,
    START_TIMEOUT_S,
    chown,
    find_binary,
    free_port,
    read_tail,
    service_account,
    spawn,
    stop_process,
    wait_for_start,
)

POSTGRES_HINT = (
    "install Debian's `postgresql` package (apt-get install -y postgresql) or set TEST_DATABASE_URL"
)
MOSQUITTO_HINT = (
    "install Debian's `mosquitto` package (apt-get install -y mosquitto) or set TEST_MQTT_URL"
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

# The broker runs with the project's dynamic-security setup, hashed as in
# production (mosquitto/dynsec.py); these are the test passwords of its
# accounts, plus `test`, a test account allowed everything, which fixtures use
# unless a test needs a role. Each is long enough for dynsec's password rule;
# @ / % : in them prove that URLs are encoded.


def _mqtt_test_password(account: str) -> str:
    return f"{account}-p@ss/w%41:rd-test"


MQTT_TEST_ACCOUNTS = {
    "MQTT_BRIDGE_PASSWORD": _mqtt_test_password("bridge"),
    "MQTT_WATCHDOG_PASSWORD": _mqtt_test_password("watchdog"),
    "MQTT_SIMULATOR_PASSWORD": _mqtt_test_password("simulator"),
    "MQTT_ADMIN_PASSWORD": _mqtt_test_password("admin"),
    "MQTT_HEALTH_PASSWORD": _mqtt_test_password("health"),
    "MQTT_DEVICES": f"7:{_mqtt_test_password('device-7')}",
    "MQTT_SITE_BRIDGE_PASSWORD": _mqtt_test_password("site-bridge"),
}
TEST_MQTT_USER = "test"
# Every worker of the tests logs in with it through a URL.
TEST_MQTT_PASSWORD = "test-p@ss/w%41:rd"
_DYNSEC_PLUGINS = ("/usr/lib/*/mosquitto_dynamic_security.so", "/usr/lib/mosquitto_dynamic_security.so")
PostgresStopMode = Literal["smart", "fast", "immediate"]
# https://www.postgresql.org/docs/current/server-shutdown.html
_POSTGRES_STOP_SIGNALS = {
    "smart": signals.SIGTERM,
    "fast": signals.SIGINT,
    "immediate": signals.SIGQUIT,
}



def login_password(role: str) -> str:
    """The password of a test login role: distinct from its name, so a test can tell a leak from a mention.

    It holds @ / % : on purpose: each breaks a URL it is pasted into raw (`quote(pw, safe="")` it).
    """
    return f"{role}-p@ss/w%41:rd"


def with_login(url: str, user: str, password: str | None = None, *, dbname: str | None = None) -> str:
    """`url` logging in as `user` with `password` (none if None), both percent-encoded; on `dbname` if given.

    The host, port and query stay as `url` has them, so it serves the URL of
    any backend (an external TEST_DATABASE_URL too) and MQTT URLs alike.
    """
    parts = urlsplit(url)
    credentials = quote(user, safe="")
    if password is not None:
        credentials += ":" + quote(password, safe="")
    host_port = parts.netloc.rpartition("@")[2]
    path = parts.path if dbname is None else "/" + quote(dbname, safe="")
    return urlunsplit(parts._replace(netloc=f"{credentials}@{host_port}", path=path))


def login_url(url: str, role: str) -> str:
    """`url` logging in as a test login role (TEST_ROLES) with its password instead of the URL's own credentials."""
    return with_login(url, role, login_password(role))


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


class PostgresServer:
    """A PostgreSQL cluster in its own folder, on a free port on 127.0.0.1.

    By default a throwaway: a temporary folder, fsync off, the superuser
    trusted over TCP (the fixtures' admin URL) and every other role asked for
    its password (scram-sha-256), so a test proves that a password reached
    the server intact. scripts/local-stack passes a `root` that outlives it and
    `durable=True`: fsync on, and the superuser too must come in through the
    Unix socket in `root`/sock. `settings` are passed as `-c name=value`;
    `replication` lets the superuser open replication connections (a standby's).
    """

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
        self._root = root or Path(tempfile.mkdtemp(prefix="bridge-test-pg-"))
        self._root.mkdir(parents=True, exist_ok=True)
        self._data_dir = self._root / "data"
        self._socket_dir = self._root / "sock"
        self._log_path = self._root / "postgres.log"
        self._port = port or free_port()
        self._durable = durable
        self._settings = dict(settings or {})  # extra -c name=value, e.g. partman_bgw_settings()
        self._replication = replication
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def host(self) -> str:
        """Address the server listens on."""
        return LOCALHOST

    @property
    def data_dir(self) -> Path:
        """The cluster's data directory (PGDATA)."""
        return self._data_dir

    @property
    def socket_dir(self) -> Path:
        """The folder of the server's Unix socket."""
        return self._socket_dir

    @property
    def port(self) -> int:
        """TCP port the server listens on (the same across restarts)."""
        return self._port

    @property
    def pid(self) -> int:
        """PID of the postmaster started last."""
        if self._process is None:
            raise RuntimeError("PostgreSQL has not been started")
        return self._process.pid

    @property
    def log_path(self) -> Path:
        """The server's log file."""
        return self._log_path

    def socket_url(self, dbname: str = "postgres") -> str:
        """The superuser's URL through the Unix socket, which trusts local logins whatever `host_auth` is."""
        return f"postgresql://postgres@/{quote(dbname, safe='')}?host={quote(str(self._socket_dir))}&port={self.port}"

    def url(
        self, user: str = "postgres", password: str | None = None, dbname: str = "postgres"
    ) -> str:
        """Return a postgresql:// URL for this server."""
        credentials = quote(user, safe="")
        if password is not None:
            credentials += ":" + quote(password, safe="")
        return f"postgresql://{credentials}@{self.host}:{self.port}/{quote(dbname, safe='')}"

    def is_running(self) -> bool:
        """Whether the postmaster we started is still alive."""
        return self._process is not None and self._process.poll() is None

    def start(self) -> None:
        """Initialise the cluster on first use, start it and wait until it accepts connections."""
        if self.is_running():
            return
        if not (self._data_dir / "PG_VERSION").exists():
            self._initialise()
        # Durability against OS crashes is useless for a throwaway; commits
        # still reach the WAL (synchronous_commit=on), so a killed server
        # keeps every committed row.
        fast = [] if self._durable else ["-c", "fsync=off", "-c", "full_page_writes=off"]
        self._process = spawn(
            [
                str(self._postgres), "-D", str(self._data_dir), "-p", str(self.port),
                "-k", str(self._socket_dir), "-c", f"listen_addresses={LOCALHOST}",
                *fast, "-c", "synchronous_commit=on",
                *(arg for name, value in self._settings.items() for arg in ("-c", f"{name}={value}")),
            ],
            log_path=self._log_path,
            account=self._account,
            cwd=self._root,
        )
        wait_for_start(
            self._process, self._accepts_connections, what="postgres", log_tail=self.log_tail
        )

    def stop(self, mode: PostgresStopMode = "fast") -> None:
        """Stop the postmaster: "fast" rolls back sessions cleanly, "immediate" is like a crash."""
        if self._process is not None:
            stop_process(self._process, _POSTGRES_STOP_SIGNALS[mode], what="postgres")

    def restart(self) -> None:
        """Stop (fast) if running, then start on the same port with the same data."""
        self.stop()
        self.start()

    def cleanup(self) -> None:
        """Stop the server and delete its folder."""
        try:
            self.stop()
        finally:
            shutil.rmtree(self._root, ignore_errors=True)

    def log_tail(self, lines: int = 40) -> str:
        """Last lines of the server log."""
        return read_tail(self._log_path, lines=lines)

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

    def _accepts_connections(self) -> bool:
        """Whether a superuser connection succeeds right now."""
        try:
            with psycopg.connect(self.socket_url(), connect_timeout=2):
                return True
        except psycopg.OperationalError:
            return False


def dynsec_plugin() -> str:
    """Path of Mosquitto's dynamic security plugin (Debian puts it under the multiarch folder)."""
    for pattern in _DYNSEC_PLUGINS:
        found = sorted(glob.glob(pattern))
        if found:
            return found[0]
    raise RuntimeError(f"mosquitto_dynamic_security.so not found: {MOSQUITTO_HINT}")


def load_script(path: str) -> ModuleType:
    """One of the project's scripts (not a package) as a module, e.g. "mosquitto/dynsec.py"."""
    spec = importlib.util.spec_from_file_location(Path(path).stem, REPO_ROOT / path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def load_dynsec() -> ModuleType:
    """mosquitto/dynsec.py, the project's account generator."""
    return load_script("mosquitto/dynsec.py")


def write_test_accounts(path: Path) -> None:
    """The project's accounts with test passwords, plus the all-powerful `test` account."""
    dynsec = load_dynsec()
    document = dynsec.build(MQTT_TEST_ACCOUNTS)
    everything = [
        dynsec.acl(kind, topic)
        for topic in ("#", "$SYS/#", "$share/#")
        for kind in ("publishClientSend", "publishClientReceive", "subscribePattern")
    ]
    document["roles"].append({"rolename": TEST_MQTT_USER, "acls": everything})
    document["clients"].append(
        dynsec.client(TEST_MQTT_USER, TEST_MQTT_PASSWORD, TEST_MQTT_USER,
                      iterations=dynsec.ITERATIONS, salt=os.urandom(dynsec.SALT_BYTES))
    )
    path.write_text(json.dumps(document), encoding="utf-8")


def render_mosquitto_config(
    template: str, *, port: int, data_dir: Path, log_path: Path, dynsec_path: Path,
    rewrites: Sequence[tuple[str, str]] = (),
) -> str:
    """Rewrite the project's mosquitto.conf for a test broker; every other line stays as is.

    `rewrites` are more (pattern, line) pairs of the same kind (a site broker's
    bridge address and password). Raises RuntimeError if a line to rewrite is
    missing, so the fixtures never run a broker with a configuration the
    project does not use.
    """
    replacements = [*rewrites,
        (r"listener\s+1883", f"listener {port} {LOCALHOST}"),
        (r"persistence_location\s+\S+", f"persistence_location {data_dir}/"),
        (r"log_dest\s+stdout", f"log_dest file {log_path}"),
        (r"plugin\s+\S+", f"plugin {dynsec_plugin()}"),
        (r"plugin_opt_config_file\s+\S+", f"plugin_opt_config_file {dynsec_path}"),
    ]
    return _rewrite_lines(template, replacements)


def enable_tls_listener(config: str, *, port: int, files: TlsFiles) -> str:
    """Uncomment the TLS listener example of mosquitto.conf, on `port` and with `files`.

    Raises RuntimeError if the example is missing, so the tests exercise the
    block that the README tells users to uncomment, not one of their own.
    """
    return _rewrite_lines(config, [
        (r"#listener\s+8883", f"listener {port} {LOCALHOST}"),
        (r"#protocol\s+mqtt", "protocol mqtt"),
        (r"#certfile\s+\S+", f"certfile {files.certfile}"),
        (r"#keyfile\s+\S+", f"keyfile {files.keyfile}"),
        (r"#cafile\s+\S+", f"cafile {files.cafile}"),
        (r"#tls_version\s+tlsv1\.2", "tls_version tlsv1.2"),
    ])


def _rewrite_lines(template: str, replacements: list[tuple[str, str]]) -> str:
    """Replace the one whole line matching each pattern; RuntimeError unless there is exactly one."""
    for pattern, line in replacements:
        template, count = re.subn(rf"^{pattern}[ \t]*$", line, template, flags=re.MULTILINE)
        if count != 1:
            raise RuntimeError(
                f"mosquitto config template: expected one line matching {pattern!r}, found {count}"
            )
    return template


@dataclass(frozen=True)
class TlsFiles:
    """PEM files of a TLS listener: the broker's certificate and key, and the CA that signed it."""

    cafile: Path
    certfile: Path
    keyfile: Path


class MosquittoServer:
    """A Mosquitto using the project's mosquitto.conf, on a free port on 127.0.0.1.

    By default a throwaway with the test accounts (write_test_accounts). With
    `tls`, it also has the config's TLS listener (mqtts://) on a second free
    port. `accounts` writes the accounts file, or brings the one already
    there up to date, before the broker starts (the broker owns it
    afterwards). scripts/local-stack passes a `root` that outlives it, its own
    `accounts` writer and the account that proves it is ready.
    A site broker (devstack/site.py) passes mosquitto/site.conf and the
    `rewrites` of its bridge lines; a fleet benchmark raises `open_files`.
    """

    def __init__(
        self,
        config_template: Path = REPO_ROOT / "mosquitto" / "mosquitto.conf",
        *,
        tls: TlsFiles | None = None,
        root: Path | None = None,
        port: int | None = None,
        accounts: Callable[[Path], None] = write_test_accounts,
        ready_account: tuple[str, str] = (TEST_MQTT_USER, TEST_MQTT_PASSWORD),
        rewrites: Sequence[tuple[str, str]] = (),
        open_files: int | None = None,
    ) -> None:
        self._binary = find_binary("mosquitto", MOSQUITTO_HINT)
        # Started as root, mosquitto drops privileges to the `mosquitto` user
        # before it writes its log and persistence files.
        account = service_account("mosquitto")
        template = config_template.read_text(encoding="utf-8")
        self._ready_account = ready_account
        self._root = root or Path(tempfile.mkdtemp(prefix="bridge-test-mqtt-"))
        self._root.mkdir(parents=True, exist_ok=True)
        self._data_dir = self._root / "data"
        self._log_path = self._root / "mosquitto.log"
        self._output_path = self._root / "mosquitto.out"
        self._config_path = self._root / "mosquitto.conf"
        self._dynsec_path = self._root / "dynamic-security.json"
        self._port = port or free_port()
        self._tls_port: int | None = None
        self._open_files = open_files
        self._process: subprocess.Popen[bytes] | None = None
        try:
            config = render_mosquitto_config(
                template, port=self._port, data_dir=self._data_dir, log_path=self._log_path,
                dynsec_path=self._dynsec_path, rewrites=rewrites,
            )
            if tls is not None:
                self._tls_port = free_port()
                config = enable_tls_listener(config, port=self._tls_port, files=self._copy_tls_files(tls, account))
        except RuntimeError:
            if root is None:
                shutil.rmtree(self._root)
            raise
        self._config_path.write_text(config, encoding="utf-8")
        accounts(self._dynsec_path)
        self._data_dir.mkdir(exist_ok=True)
        self._log_path.touch()
        chown(account, self._root, self._data_dir, self._log_path, self._dynsec_path)

    def _copy_tls_files(self, files: TlsFiles, account: pwd.struct_passwd | None) -> TlsFiles:
        """Copies in our folder, owned by the user the broker drops to (the key is private to it)."""
        folder = self._root / "tls"
        folder.mkdir()
        chown(account, folder)

        def copy(source: Path, name: str) -> Path:
            target = folder / name
            shutil.copyfile(source, target)
            target.chmod(0o600)
            chown(account, target)
            return target

        return TlsFiles(
            cafile=copy(files.cafile, "ca.crt"),
            certfile=copy(files.certfile, "server.crt"),
            keyfile=copy(files.keyfile, "server.key"),
        )

    @property
    def host(self) -> str:
        """Address the broker listens on."""
        return LOCALHOST

    @property
    def port(self) -> int:
        """TCP port the broker listens on (the same across restarts)."""
        return self._port

    @property
    def url(self) -> str:
        """mqtt:// URL of the broker, as the all-powerful test account."""
        return self.url_as(TEST_MQTT_USER, TEST_MQTT_PASSWORD)

    def url_as(self, username: str, password: str, *, tls: bool = False) -> str:
        """mqtt:// (or the TLS listener's mqtts://) URL of the broker for an account, its password percent-encoded."""
        scheme, port = ("mqtts", self.tls_port) if tls else ("mqtt", self.port)
        return f"{scheme}://{quote(username, safe='')}:{quote(password, safe='')}@{self.host}:{port}"

    @property
    def log_path(self) -> Path:
        """The broker's log file (what it wrote before its logging started goes to mosquitto.out)."""
        return self._log_path

    @property
    def persistence_file(self) -> Path:
        """The broker's saved state (sessions, subscriptions, queued messages), written at each autosave."""
        return self._data_dir / "mosquitto.db"

    @property
    def tls_port(self) -> int:
        """TCP port of the TLS listener; RuntimeError if the broker was built without `tls`."""
        if self._tls_port is None:
            raise RuntimeError("this Mosquitto has no TLS listener: pass tls=TlsFiles(...)")
        return self._tls_port

    @property
    def tls_url(self) -> str:
        """mqtts:// URL of the TLS listener, as the all-powerful test account."""
        return self.url_as(TEST_MQTT_USER, TEST_MQTT_PASSWORD, tls=True)

    @property
    def pid(self) -> int:
        """PID of the broker started last."""
        if self._process is None:
            raise RuntimeError("Mosquitto has not been started")
        return self._process.pid

    def is_running(self) -> bool:
        """Whether the broker we started is still alive."""
        return self._process is not None and self._process.poll() is None

    def start(self) -> None:
        """Start the broker and wait until an MQTT CONNECT succeeds."""
        if self.is_running():
            return
        self._process = spawn(
            [str(self._binary), "-c", str(self._config_path)], log_path=self._output_path,
            open_files=self._open_files,
        )
        wait_for_start(
            self._process, self._accepts_clients, what="mosquitto", log_tail=self.log_text
        )

    def stop(self, sig: int = signals.SIGTERM) -> None:
        """Stop the broker: SIGTERM saves the persistence file first, SIGKILL does not."""
        if self._process is not None:
            stop_process(self._process, sig, what="mosquitto")

    def restart(self) -> None:
        """Stop (SIGTERM) if running, then start with the same port and persistence folder."""
        self.stop()
        self.start()

    def cleanup(self) -> None:
        """Stop the broker and delete its folder."""
        try:
            self.stop()
        finally:
            shutil.rmtree(self._root, ignore_errors=True)

    def log_text(self) -> str:
        """The broker's log file followed by anything it wrote to stdout or stderr."""
        return read_tail(self._log_path, lines=10_000) + "\n" + read_tail(self._output_path)

    def _accepts_clients(self) -> bool:
        """Whether a TCP connect and an MQTT CONNECT/CONNACK round trip succeed right now."""
        try:
            socket.create_connection((self.host, self.port), timeout=1).close()
            MqttTestClient.from_url(self.url_as(*self._ready_account)).connect(timeout=2).close()
        except (OSError, MqttTestError):
            return False
        return True


