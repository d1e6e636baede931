"""Processes for the benchmark: bridge workers and reference consumers, started and stopped alike."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Protocol
from urllib.parse import unquote, urlsplit

import psycopg

from devstack.mosquitto import MosquittoServer
from devstack.mqtt_client import MqttTestClient
from devstack.postgres import PostgresServer
from devstack.processes import REPO_ROOT, find_binary, read_tail, spawn, wait_until
from devstack.traffic import VARIABLES
from devstack.workers import Member, WorkerProcess, worker_env
from iotcommon.contract import shared_subscription

HERE = Path(__file__).resolve().parent


class GroupMember(Member, Protocol):
    """One process of a consumer group: a bridge worker or a reference consumer."""

    @property
    def pid(self) -> int: ...

    def terminate(self, timeout: float = ...) -> int: ...


class _Counted:
    """A reference consumer process: started, counted, stopped with SIGTERM (its session kept)."""

    client_id: str
    _log: Path
    _process: subprocess.Popen[bytes] | None

    @property
    def pid(self) -> int:
        """PID of the running process."""
        if self._process is None:
            raise RuntimeError(f"{self.client_id} not started")
        return self._process.pid

    def is_running(self) -> bool:
        """Whether it is alive."""
        return self._process is not None and self._process.poll() is None

    def terminate(self, timeout: float = 30.0) -> int:
        """SIGTERM (clean disconnect, session kept), SIGKILL after `timeout`."""
        if self._process is None:
            return 0
        if self._process.poll() is None:
            self._process.send_signal(signal.SIGTERM)
        try:
            return self._process.wait(timeout)
        except subprocess.TimeoutExpired:
            self._process.kill()
            return self._process.wait()

    def log_tail(self, lines: int = 40) -> str:
        """The last lines of what it logged."""
        return read_tail(self._log, lines=lines)


class ConsumerProcess(_Counted):
    """benchmarks/consumer.py in `count` or `naive` mode."""

    def __init__(self, mode: str, client_id: str, group: str, *, mqtt_url: str, database_url: str, tmp: Path) -> None:
        self.client_id = client_id
        self.count_file = tmp / f"{client_id}.count"
        self._args = [sys.executable, str(HERE / "consumer.py"), mode, client_id, group, mqtt_url,
                      str(self.count_file), database_url]
        self._log = tmp / f"{client_id}.log"
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start the process (the count file restarts at 0)."""
        self.count_file.write_text("0")
        self._process = spawn(self._args, log_path=self._log, cwd=REPO_ROOT)

    def count(self) -> int:
        """Messages it received so far."""
        try:
            return int(self.count_file.read_text() or 0)
        except (FileNotFoundError, ValueError):
            return 0


def bridge_worker(
    client_id: str, group: str, *, mqtt_url: str, database_url: str, tmp: Path, on_conflict: str = "keep",
    source: Path = REPO_ROOT, **overrides: object,
) -> WorkerProcess:
    """A `python -m bridge` worker of the tree `source` with the default settings but `overrides`, and WARNING logs."""
    env = worker_env(client_id, database_url=database_url, mqtt_url=mqtt_url, share_group=group, health_dir=tmp,
                     bridge_log_level="WARNING", bridge_on_conflict=on_conflict, **overrides)
    return WorkerProcess(client_id, env, log_dir=tmp, source=source)


class SubProcess(_Counted):
    """Mosquitto's own C client, mosquitto_sub, draining the share group: the broker's limit, not Python's.

    It prints one line per message (flushed each time), so the output file's
    size counts what it received; its QoS 1 PUBACKs are libmosquitto's.
    """

    def __init__(self, client_id: str, group: str, *, mqtt_url: str, tmp: Path) -> None:
        self.client_id = client_id
        parts = urlsplit(mqtt_url)
        self._args = [
            str(find_binary("mosquitto_sub", "install Debian's `mosquitto-clients` package")),
            "-h", parts.hostname or "127.0.0.1", "-p", str(parts.port or 1883),
            "-u", unquote(parts.username or ""), "-P", unquote(parts.password or ""),
            "-V", "mqttv5", "-i", client_id, "-c", "-x", "86400", "-q", "1",
            "-t", shared_subscription(group), "-F", ".",
        ]
        self._out = tmp / f"{client_id}.out"
        self._log = tmp / f"{client_id}.log"
        self._process: subprocess.Popen[bytes] | None = None

    def register(self) -> None:
        """Create the persistent session and its subscription, then leave (-E): the backlog queues for it."""
        subprocess.run([*self._args, "-E"], check=True, timeout=30, capture_output=True)

    def start(self) -> None:
        """Connect and drain; the count starts at 0."""
        with self._out.open("wb") as out, self._log.open("ab") as log:
            self._process = subprocess.Popen(self._args, stdout=out, stderr=log, start_new_session=True)

    def count(self) -> int:
        """Messages received so far: two bytes (".\n") each."""
        try:
            return self._out.stat().st_size // 2
        except FileNotFoundError:
            return 0


def stop_all(members: Sequence[GroupMember]) -> None:
    """SIGTERM every member and wait for it."""
    for member in members:
        member.terminate(30.0)


def end_sessions(members: Sequence[GroupMember], mqtt_url: str) -> None:
    """Discard the members' broker sessions (a clean start with no expiry, then a disconnect).

    A finished group's session would go on queueing a copy of everything
    published later, and keep what it did not drain (the naive consumer takes
    a share of the backlog only): every autosave of the broker then writes all
    of it, which stalls the broker for a moment and shows in later phases'
    latency.
    """
    for member in members:
        with MqttTestClient.from_url(mqtt_url, client_id=member.client_id):
            pass


def timed(members: Sequence[GroupMember], done: Callable[[], bool], timeout_s: float) -> float:
    """Start the members and return the seconds until `done()` (polled every 20 ms)."""
    started = time.monotonic()
    for member in members:
        member.start()
    wait_until(done, timeout_s, interval=0.02, message="backlog drained")
    return time.monotonic() - started


def stored(admin_url: str) -> int:
    """Rows in readings."""
    with psycopg.connect(admin_url) as conn:
        row = conn.execute("SELECT count(*) FROM readings").fetchone()
    return int(row[0]) if row else 0


def revisions(admin_url: str) -> int:
    """Rows in reading_revisions: the versions a correction replaced."""
    with psycopg.connect(admin_url) as conn:
        row = conn.execute("SELECT count(*) FROM reading_revisions").fetchone()
    return int(row[0]) if row else 0


def store(admin_url: str, messages: Sequence[tuple[str, bytes]]) -> None:
    """Store the single readings of `messages` directly (COPY), as a worker would have."""
    columns = ("sensor_id", "timestamp", "variable", "value", "unit")
    with (
        psycopg.connect(admin_url) as conn,
        conn.cursor() as cur,
        cur.copy('COPY readings (sensor_id, "timestamp", variable, value, unit) FROM STDIN') as copy,
    ):
        for _, payload in messages:
            reading = json.loads(payload)
            copy.write_row([reading[column] for column in columns])


def corrected(payload: bytes) -> bytes:
    """The same reading with another value and revision 1: in update mode it replaces the stored one."""
    reading = json.loads(payload)
    reading["value"] += 1
    reading["revision"] = 1
    return json.dumps(reading).encode()


def truncate(admin_url: str) -> None:
    """Empty the tables."""
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute("TRUNCATE readings, reading_revisions, rejected_messages, rejected_replays")


def prefill(admin_url: str, rows: int) -> tuple[int, float]:
    """Fill readings with `rows` older readings (2,000 sensors x 4 variables, one a minute from 2024); (rows, seconds).

    Like a table after months of service; the drains that follow insert newer
    readings, which land at the end of each sensor's range of the primary key.
    """
    minutes = max(rows // (2000 * len(VARIABLES)), 1)
    started = time.monotonic()
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(
            'INSERT INTO readings (sensor_id, "timestamp", variable, value, unit) '
            "SELECT s, timestamptz '2024-01-01 00:00:00+00' + t * interval '1 minute', v.name, "
            "round((random() * 100)::numeric, 2), v.unit "
            "FROM generate_series(1, 2000) s, generate_series(0, %s) t, "
            "unnest(%s::text[], %s::text[]) v(name, unit) ORDER BY s, t, v.name",
            (minutes - 1, [n for n, _ in VARIABLES], [u for _, u in VARIABLES]),
        )
        conn.execute("VACUUM ANALYZE readings")
        conn.execute("CHECKPOINT")
    return 2000 * len(VARIABLES) * minutes, time.monotonic() - started


def relation_sizes(admin_url: str) -> tuple[int, int]:
    """(bytes of readings' heap, bytes of its indexes)."""
    with psycopg.connect(admin_url) as conn:
        row = conn.execute("SELECT pg_relation_size('readings'), pg_indexes_size('readings')").fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


@contextmanager
def throwaway_servers(pg: PostgresServer, mq: MosquittoServer, *, prefix: str) -> Iterator[Path]:
    """Start both servers and make a temporary folder; stop and remove them at the end, whatever happened.

    SIGTERM (e.g. from `timeout`) unwinds like Ctrl-C, so the servers are cleaned up then too.
    """
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(143))
    tmp = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        pg.start()
        mq.start()
        yield tmp
    finally:
        mq.cleanup()
        pg.cleanup()
        shutil.rmtree(tmp, ignore_errors=True)


def print_notes(notes: Sequence[str], *, started_at: float) -> None:
    """The figures that are not in a table, a line each, then how long the benchmark took (from `started_at`)."""
    print()
    for note in notes:
        print(f"- {note}")
    print(f"- benchmark took {time.monotonic() - started_at:.0f} s")
