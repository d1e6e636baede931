"""Processes for the benchmark: bridge workers and reference consumers, started and stopped alike."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

import psycopg

from devstack.processes import REPO_ROOT, read_tail, spawn, wait_until
from devstack.workers import Member, WorkerProcess, start_online, worker_env

HERE = Path(__file__).resolve().parent


class GroupMember(Member, Protocol):
    """One process of a consumer group: a bridge worker or a reference consumer."""

    @property
    def pid(self) -> int: ...

    def terminate(self, timeout: float = ...) -> int: ...


class ConsumerProcess:
    """benchmarks/consumer.py in `count` or `naive` mode."""

    def __init__(self, mode: str, client_id: str, group: str, *, mqtt_url: str, database_url: str, tmp: Path) -> None:
        self.client_id = client_id
        self.count_file = tmp / f"{client_id}.count"
        self._args = [sys.executable, str(HERE / "consumer.py"), mode, client_id, group, mqtt_url,
                      str(self.count_file), database_url]
        self._log = tmp / f"{client_id}.log"
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        """PID of the running process."""
        if self._process is None:
            raise RuntimeError(f"{self.client_id} not started")
        return self._process.pid

    def start(self) -> None:
        """Start the process (the count file restarts at 0)."""
        self.count_file.write_text("0")
        self._process = spawn(self._args, log_path=self._log, cwd=REPO_ROOT)

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
        """The last lines of its output."""
        return read_tail(self._log, lines=lines)

    def count(self) -> int:
        """Messages it received so far."""
        try:
            return int(self.count_file.read_text() or 0)
        except (FileNotFoundError, ValueError):
            return 0


def bridge_worker(
    client_id: str, group: str, *, mqtt_url: str, database_url: str, tmp: Path, on_conflict: str = "keep"
) -> WorkerProcess:
    """A `python -m bridge` worker with the default settings (BRIDGE_ON_CONFLICT aside) and WARNING logs."""
    env = worker_env(client_id, database_url=database_url, mqtt_url=mqtt_url, share_group=group, health_dir=tmp,
                     bridge_log_level="WARNING", bridge_on_conflict=on_conflict)
    return WorkerProcess(client_id, env, log_dir=tmp)


def start_all(members: Sequence[GroupMember], mqtt_url: str, timeout_s: float = 60.0) -> None:
    """Start every member and wait for its retained `online` (sent after its SUBACK)."""
    start_online(members, mqtt_url, timeout_s=timeout_s)


def stop_all(members: Sequence[GroupMember]) -> None:
    """SIGTERM every member and wait for it."""
    for member in members:
        member.terminate(30.0)


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


def truncate(admin_url: str) -> None:
    """Empty the tables."""
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute("TRUNCATE readings, reading_revisions, rejected_messages, rejected_replays")


def memory_kb(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of a process in kB, from /proc/<pid>/status."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, rest = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            values[name] = int(rest.split()[0])
    return values.get("VmRSS", 0), values.get("VmHWM", 0)
