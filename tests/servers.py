"""Throwaway PostgreSQL and Mosquitto servers, bridge worker processes and an MQTT test client.

A plain module (no pytest) used by the fixtures in tests/integration/conftest.py.
Every server listens on a free port on 127.0.0.1 and keeps its files in its own
temporary folder, so the tests never touch a server running on the machine.
"""

from __future__ import annotations

import itertools
import os
import pwd
import queue
import re
import shutil
import signal as signals
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Literal, Protocol, Self, TypeVar
from urllib.parse import quote, urlsplit

import paho.mqtt.client as mqtt
import psycopg
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

REPO_ROOT = Path(__file__).resolve().parent.parent
LOCALHOST = "127.0.0.1"
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 30.0
POSTGRES_HINT = (
    "install Debian's `postgresql` package (apt-get install -y postgresql) or set TEST_DATABASE_URL"
)
MOSQUITTO_HINT = (
    "install Debian's `mosquitto` package (apt-get install -y mosquitto) or set TEST_MQTT_URL"
)
BRIDGE_TEST_ROLE = "bridge_test"

T = TypeVar("T")
PostgresStopMode = Literal["smart", "fast", "immediate"]
# https://www.postgresql.org/docs/current/server-shutdown.html
_POSTGRES_STOP_SIGNALS = {
    "smart": signals.SIGTERM,
    "fast": signals.SIGINT,
    "immediate": signals.SIGQUIT,
}


class MakeEnv(Protocol):
    """Type of the `bridge_env` fixture: the environment for one bridge worker."""

    def __call__(self, client_id: str, /, **overrides: object) -> dict[str, str]: ...


class StartWorker(Protocol):
    """Type of the `start_worker` fixture: start a bridge worker and wait until it is ready."""

    def __call__(
        self, client_id: str, /, *, ready: bool = True, **env_overrides: object
    ) -> WorkerProcess: ...


def find_binary(name: str, hint: str) -> Path:
    """Return the path of executable `name` from PATH, PostgreSQL's bin folders or /usr/sbin."""
    on_path = shutil.which(name)
    if on_path:
        return Path(on_path)
    for folder in [*_postgres_bin_dirs(), Path("/usr/sbin")]:
        candidate = folder / name
        if os.access(candidate, os.X_OK):
            return candidate
    raise RuntimeError(f"{name} not found: {hint}")


def _postgres_bin_dirs() -> list[Path]:
    """Debian's /usr/lib/postgresql/<version>/bin folders, newest version first."""

    def version(folder: Path) -> tuple[int, ...]:
        return tuple(int(part) for part in re.findall(r"\d+", folder.parent.name))

    return sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=version, reverse=True)


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOCALHOST, 0))
        return int(sock.getsockname()[1])


def wait_until(
    predicate: Callable[[], T],
    timeout: float,
    interval: float = 0.05,
    message: str = "condition not met",
) -> T:
    """Poll `predicate` until it returns a truthy value, and return that value.

    Raises AssertionError naming `message` and the last value at the deadline.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"{message} within {timeout} s (last value: {value!r})")
        time.sleep(interval)


def apply_schema(admin_url: str) -> None:
    """Run the project's schema.sql and create the `bridge_test` login role in `iot_bridge`."""
    schema = (REPO_ROOT / "schema.sql").read_text(encoding="utf-8")
    with psycopg.connect(admin_url, autocommit=True) as conn:
        # Without parameters psycopg sends a simple query, which may hold
        # several statements (schema.sql also contains a DO $$ block).
        conn.execute(schema.encode())
        exists = conn.execute(
            "SELECT 1 FROM pg_roles WHERE rolname = %s", (BRIDGE_TEST_ROLE,)
        ).fetchone()
        if exists:
            conn.execute(f"GRANT iot_bridge TO {BRIDGE_TEST_ROLE}")
        else:
            conn.execute(
                f"CREATE ROLE {BRIDGE_TEST_ROLE} LOGIN PASSWORD '{BRIDGE_TEST_ROLE}'"
                " IN ROLE iot_bridge"
            )


def read_tail(path: Path, *, lines: int = 40) -> str:
    """Return the last `lines` lines of a log file, or a note if it does not exist."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return f"({path} does not exist)"
    return "\n".join(text.splitlines()[-lines:])


def _service_account(name: str) -> pwd.struct_passwd | None:
    """The OS account to run a server as: `name` when we are root, else None (ourselves)."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(name)
    except KeyError:
        raise RuntimeError(
            f"running as root, but there is no `{name}` OS user to run the server as; "
            f"install Debian's `{name}` package or run the tests as a normal user"
        ) from None


def _chown(account: pwd.struct_passwd | None, *paths: Path) -> None:
    """Give `paths` to `account`, so that a server that dropped root privileges can write them."""
    if account is not None:
        for path in paths:
            os.chown(path, account.pw_uid, account.pw_gid)


def _spawn(
    args: list[str],
    *,
    log_path: Path,
    account: pwd.struct_passwd | None = None,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> subprocess.Popen[bytes]:
    """Start `args` in its own session with stdout and stderr appended to `log_path`."""
    with log_path.open("ab") as log:
        # A new session keeps a Ctrl-C in the terminal away from the servers;
        # the fixtures stop them in order.
        return subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=cwd,
            start_new_session=True,
            user=account.pw_uid if account else None,
            group=account.pw_gid if account else None,
            extra_groups=[] if account else None,
        )


def _stop_process(process: subprocess.Popen[bytes], sig: int, *, what: str) -> int:
    """Send `sig` and wait for the exit; SIGKILL and raise if it does not exit in time."""
    if process.poll() is None:
        process.send_signal(sig)
    try:
        return process.wait(STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        raise RuntimeError(
            f"{what} (pid {process.pid}) ignored signal {sig} for {STOP_TIMEOUT_S} s; killed it"
        ) from None


def _wait_for_start(
    process: subprocess.Popen[bytes],
    is_ready: Callable[[], bool],
    *,
    what: str,
    log_tail: Callable[[], str],
) -> None:
    """Poll `is_ready`; raise with the log tail if the process exits or the deadline passes."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while not is_ready():
        if process.poll() is not None:
            raise RuntimeError(
                f"{what} exited with code {process.returncode} while starting;"
                f" log tail:\n{log_tail()}"
            )
        if time.monotonic() >= deadline:
            _stop_process(process, signals.SIGKILL, what=what)
            raise RuntimeError(
                f"{what} did not accept connections within {START_TIMEOUT_S} s;"
                f" log tail:\n{log_tail()}"
            )
        time.sleep(0.05)


class PostgresServer:
    """A throwaway PostgreSQL cluster in a temporary folder, on a free port on 127.0.0.1."""

    def __init__(self) -> None:
        initdb = find_binary("initdb", POSTGRES_HINT)
        self._initdb = initdb
        # Use the server that belongs to this initdb, not one of another version.
        sibling = initdb.resolve().parent / "postgres"
        self._postgres = sibling if sibling.exists() else find_binary("postgres", POSTGRES_HINT)
        self._account = _service_account("postgres")
        self._root = Path(tempfile.mkdtemp(prefix="bridge-test-pg-"))
        self._data_dir = self._root / "data"
        self._socket_dir = self._root / "sock"
        self._log_path = self._root / "postgres.log"
        self._port = free_port()
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def host(self) -> str:
        """Address the server listens on."""
        return LOCALHOST

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
        if not self._data_dir.exists():
            self._initialise()
        self._process = _spawn(
            [
                str(self._postgres), "-D", str(self._data_dir), "-p", str(self.port),
                "-k", str(self._socket_dir), "-c", f"listen_addresses={LOCALHOST}",
                # Durability against OS crashes is useless here; commits still
                # reach the WAL (synchronous_commit=on), so a killed server
                # keeps every committed row.
                "-c", "fsync=off", "-c", "full_page_writes=off", "-c", "synchronous_commit=on",
            ],
            log_path=self._log_path,
            account=self._account,
            cwd=self._root,
        )
        _wait_for_start(
            self._process, self._accepts_connections, what="postgres", log_tail=self.log_tail
        )

    def stop(self, mode: PostgresStopMode = "fast") -> None:
        """Stop the postmaster: "fast" rolls back sessions cleanly, "immediate" is like a crash."""
        if self._process is not None:
            _stop_process(self._process, _POSTGRES_STOP_SIGNALS[mode], what="postgres")

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
        self._socket_dir.mkdir()
        _chown(self._account, self._root, self._socket_dir)
        args = [
            str(self._initdb), "-D", str(self._data_dir), "-A", "trust", "-U", "postgres",
            "--no-sync", "-E", "UTF8", "--locale=C",
        ]
        init_log = self._root / "initdb.log"
        process = _spawn(args, log_path=init_log, account=self._account, cwd=self._root)
        if process.wait(START_TIMEOUT_S * 2) != 0:
            raise RuntimeError(f"initdb failed; output:\n{read_tail(init_log)}")

    def _accepts_connections(self) -> bool:
        """Whether a superuser connection succeeds right now."""
        try:
            with psycopg.connect(self.url(), connect_timeout=2):
                return True
        except psycopg.OperationalError:
            return False


def render_mosquitto_config(template: str, *, port: int, data_dir: Path, log_path: Path) -> str:
    """Rewrite the project's mosquitto.conf for a test broker; every other line stays as is.

    Raises RuntimeError if a line to rewrite is missing, so the fixtures never
    run a broker with a configuration the project does not use.
    """
    replacements = [
        (r"listener\s+1883", f"listener {port} {LOCALHOST}"),
        (r"persistence_location\s+\S+", f"persistence_location {data_dir}/"),
        (r"log_dest\s+stdout", f"log_dest file {log_path}"),
    ]
    for pattern, line in replacements:
        template, count = re.subn(rf"^{pattern}[ \t]*$", line, template, flags=re.MULTILINE)
        if count != 1:
            raise RuntimeError(
                f"mosquitto/mosquitto.conf: expected one line matching {pattern!r}, found {count}"
            )
    return template


class MosquittoServer:
    """A throwaway Mosquitto using the project's mosquitto.conf, on a free port on 127.0.0.1."""

    def __init__(self, config_template: Path = REPO_ROOT / "mosquitto" / "mosquitto.conf") -> None:
        self._binary = find_binary("mosquitto", MOSQUITTO_HINT)
        # Started as root, mosquitto drops privileges to the `mosquitto` user
        # before it writes its log and persistence files.
        account = _service_account("mosquitto")
        template = config_template.read_text(encoding="utf-8")
        self._root = Path(tempfile.mkdtemp(prefix="bridge-test-mqtt-"))
        self._data_dir = self._root / "data"
        self._log_path = self._root / "mosquitto.log"
        self._output_path = self._root / "mosquitto.out"
        self._config_path = self._root / "mosquitto.conf"
        self._port = free_port()
        self._process: subprocess.Popen[bytes] | None = None
        try:
            config = render_mosquitto_config(
                template, port=self._port, data_dir=self._data_dir, log_path=self._log_path
            )
        except RuntimeError:
            shutil.rmtree(self._root)
            raise
        self._config_path.write_text(config, encoding="utf-8")
        self._data_dir.mkdir()
        self._log_path.touch()
        _chown(account, self._root, self._data_dir, self._log_path)

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
        """mqtt:// URL of the broker."""
        return f"mqtt://{self.host}:{self.port}"

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
        self._process = _spawn(
            [str(self._binary), "-c", str(self._config_path)], log_path=self._output_path
        )
        _wait_for_start(
            self._process, self._accepts_clients, what="mosquitto", log_tail=self.log_text
        )

    def stop(self, sig: int = signals.SIGTERM) -> None:
        """Stop the broker: SIGTERM saves the persistence file first, SIGKILL does not."""
        if self._process is not None:
            _stop_process(self._process, sig, what="mosquitto")

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
            MqttTestClient(self.host, self.port).connect(timeout=2).close()
        except (OSError, MqttTestError):
            return False
        return True


class MqttTestError(Exception):
    """An MQTT operation of the test client failed or timed out."""


class MqttTestClient:
    """A small blocking MQTT v5 client for tests: publish with PUBACKs, subscribe, collect."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        client_id: str | None = None,
        clean_start: bool = True,
        session_expiry_s: int = 0,
    ) -> None:
        self._address = (host, port)
        self._clean_start = clean_start
        self._session_expiry_s = session_expiry_s
        self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id or f"test-{uuid.uuid4().hex[:12]}",
            protocol=mqtt.MQTTv5,
        )
        # No limit on paho's queue (0), so publish_many never gets "queue full";
        # in flight at most the broker's Receive Maximum (max_inflight_messages
        # in mosquitto.conf), which an MQTT v5 client must not exceed.
        self._client.max_inflight_messages_set(1000)
        self._client.max_queued_messages_set(0)
        self._client.on_connect = self._on_connect
        self._client.on_subscribe = self._on_subscribe
        self._client.on_message = self._on_message
        self._connack: queue.Queue[ReasonCode] = queue.Queue()
        self._subacks: dict[int, list[ReasonCode]] = {}
        self._messages: list[mqtt.MQTTMessage] = []
        self._lock = threading.Condition()

    @classmethod
    def from_url(
        cls, url: str, *, client_id: str | None = None, clean_start: bool = True,
        session_expiry_s: int = 0,
    ) -> MqttTestClient:
        """Build a client for an mqtt://host:port URL."""
        parts = urlsplit(url)
        if parts.scheme != "mqtt" or not parts.hostname:
            raise ValueError(f"expected mqtt://host:port, got {url!r}")
        return cls(
            parts.hostname, parts.port or 1883, client_id=client_id, clean_start=clean_start,
            session_expiry_s=session_expiry_s,
        )

    def __enter__(self) -> Self:
        return self.connect()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def connect(self, timeout: float = 10.0) -> Self:
        """Connect and wait for a successful CONNACK; return self."""
        # Properties.__init__ has no annotations in paho 2.2.
        properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        properties.SessionExpiryInterval = self._session_expiry_s
        self._client.connect(
            *self._address, keepalive=30, clean_start=self._clean_start, properties=properties
        )
        self._client.loop_start()
        try:
            reason = self._connack.get(timeout=timeout)
        except queue.Empty:
            self.close()
            raise MqttTestError(f"no CONNACK from {self._address} within {timeout} s") from None
        if reason.is_failure:
            self.close()
            raise MqttTestError(f"broker {self._address} refused the connection: {reason}")
        return self

    def close(self) -> None:
        """Disconnect cleanly and stop the network thread."""
        self._client.disconnect()
        self._client.loop_stop()

    def publish(
        self, topic: str, payload: bytes | str, *, qos: int = 1, retain: bool = False,
        timeout: float = 10.0,
    ) -> None:
        """Publish one message and wait until the broker acknowledged it (for QoS > 0)."""
        self.publish_many([(topic, payload)], qos=qos, retain=retain, timeout=timeout)

    def publish_many(
        self, messages: Iterable[tuple[str, bytes | str]], *, qos: int = 1,
        retain: bool = False, timeout: float = 60.0,
    ) -> int:
        """Publish all messages and wait for every PUBACK; return how many were published."""
        deadline = time.monotonic() + timeout
        count = 0
        pending = iter(messages)
        # Windows of 500: paho scans all its unacknowledged messages on every
        # PUBACK, so a short list keeps 10,000 messages at about 2 s.
        while window := list(itertools.islice(pending, 500)):
            infos = [self._client.publish(t, p, qos=qos, retain=retain) for t, p in window]
            for info in infos:
                info.wait_for_publish(max(deadline - time.monotonic(), 0.0))
                if not info.is_published():
                    raise MqttTestError(f"PUBACK missing after {timeout} s (mid {info.mid})")
            count += len(infos)
        return count

    def subscribe(self, topic: str, *, qos: int = 1, timeout: float = 10.0) -> None:
        """Subscribe and wait for a successful SUBACK."""
        result, mid = self._client.subscribe(topic, qos=qos)
        if mid is None or result != mqtt.MQTT_ERR_SUCCESS:
            reason = mqtt.error_string(result)
            raise MqttTestError(f"could not send SUBSCRIBE for {topic!r}: {reason}")
        with self._lock:
            if not self._lock.wait_for(lambda: mid in self._subacks, timeout):
                raise MqttTestError(f"no SUBACK for {topic!r} within {timeout} s")
            reasons = self._subacks.pop(mid)
        if any(reason.is_failure for reason in reasons):
            raise MqttTestError(f"subscription to {topic!r} refused: {reasons}")

    def received(self, topic: str | None = None) -> list[mqtt.MQTTMessage]:
        """Messages received so far, oldest first, optionally only those on `topic`."""
        with self._lock:
            return [m for m in self._messages if topic is None or m.topic == topic]

    def wait_for_messages(
        self, count: int, *, topic: str | None = None, timeout: float = 10.0
    ) -> list[mqtt.MQTTMessage]:
        """Wait until at least `count` messages (on `topic`) arrived, and return them all."""
        with self._lock:
            self._lock.wait_for(lambda: len(self.received(topic)) >= count, timeout)
        messages = self.received(topic)
        if len(messages) < count:
            raise MqttTestError(f"got {len(messages)} of {count} messages within {timeout} s")
        return messages

    def _on_connect(
        self, client: mqtt.Client, userdata: object, flags: mqtt.ConnectFlags,
        reason: ReasonCode, properties: Properties | None,
    ) -> None:
        self._connack.put(reason)

    def _on_subscribe(
        self, client: mqtt.Client, userdata: object, mid: int,
        reasons: list[ReasonCode], properties: Properties | None,
    ) -> None:
        with self._lock:
            self._subacks[mid] = reasons
            self._lock.notify_all()

    def _on_message(self, client: mqtt.Client, userdata: object, message: mqtt.MQTTMessage) -> None:
        with self._lock:
            self._messages.append(message)
            self._lock.notify_all()


# Variables a worker inherits from the test run; everything else (for example
# a DATABASE_URL in the developer's shell) is left out so only the test's
# settings apply. COV_CORE_/COVERAGE_ let pytest-cov measure the workers.
_INHERITED_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR", "VIRTUAL_ENV")
_INHERITED_PREFIXES = ("PYTHON", "COV_CORE_", "COVERAGE_")


def _worker_environ(overrides: Mapping[str, str]) -> dict[str, str]:
    """A minimal copy of os.environ with `overrides` applied."""
    env = {
        key: value
        for key, value in os.environ.items()
        if key in _INHERITED_ENV or key.startswith(_INHERITED_PREFIXES)
    }
    env["PYTHONUNBUFFERED"] = "1"
    env.update(overrides)
    return env


class WorkerProcess:
    """One `python -m bridge` worker, run from the repository root, logging to a file."""

    def __init__(
        self, client_id: str, env: Mapping[str, str], *, log_dir: Path | None = None
    ) -> None:
        self._client_id = client_id
        self._env = _worker_environ(env)
        folder = log_dir or Path(tempfile.mkdtemp(prefix="bridge-test-worker-"))
        self._log_path = folder / f"worker-{client_id}.log"
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def client_id(self) -> str:
        """The worker's MQTT client id (BRIDGE_CLIENT_ID)."""
        return self._client_id

    @property
    def pid(self) -> int:
        """PID of the worker started last."""
        return self._started().pid

    @property
    def log_path(self) -> Path:
        """File holding the worker's stdout and stderr (appended to across restarts)."""
        return self._log_path

    def start(self) -> None:
        """Start the worker; waiting until it is ready is the caller's job."""
        if self.is_running():
            raise RuntimeError(f"worker {self._client_id} is already running (pid {self.pid})")
        self._process = _spawn(
            [sys.executable, "-m", "bridge"], log_path=self._log_path, env=self._env, cwd=REPO_ROOT
        )

    def is_running(self) -> bool:
        """Whether the worker process is alive."""
        return self._process is not None and self._process.poll() is None

    def signal(self, sig: int) -> None:
        """Send `sig` (for example SIGSTOP, SIGCONT or SIGTERM) to the worker."""
        self._started().send_signal(sig)

    def wait(self, timeout: float) -> int:
        """Wait for the worker to exit and return its exit code (or raise TimeoutExpired)."""
        return self._started().wait(timeout)

    def terminate(self, timeout: float = 10.0) -> int:
        """SIGTERM, wait up to `timeout` s, then SIGKILL; return the exit code (-9 if killed)."""
        process = self._started()
        if process.poll() is None:
            process.send_signal(signals.SIGTERM)
        try:
            return process.wait(timeout)
        except subprocess.TimeoutExpired:
            return self.kill()

    def kill(self) -> int:
        """SIGKILL the worker and return its exit code."""
        process = self._started()
        if process.poll() is None:
            process.kill()
        return process.wait()

    def log_text(self) -> str:
        """Everything the worker wrote to stdout and stderr so far."""
        return read_tail(self._log_path, lines=1_000_000)

    def log_tail(self, lines: int = 40) -> str:
        """The last lines of the worker's output."""
        return read_tail(self._log_path, lines=lines)

    def _started(self) -> subprocess.Popen[bytes]:
        if self._process is None:
            raise RuntimeError(f"worker {self._client_id} has not been started")
        return self._process
