"""Bridge worker processes (`python -m bridge`) for the integration tests and benchmarks."""

from __future__ import annotations

import re
import signal as signals
import subprocess
import sys
import tempfile
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Protocol

from devstack.mqtt_client import MqttTestClient
from devstack.processes import REPO_ROOT, program_environ, read_tail, spawn, wait_until


class MakeEnv(Protocol):
    """Type of the `bridge_env` fixture: the environment for one bridge worker."""

    def __call__(self, client_id: str, /, **overrides: object) -> dict[str, str]: ...


class StartWorker(Protocol):
    """Type of the `start_worker` fixture: start a bridge worker and wait until it is ready."""

    def __call__(
        self, client_id: str, /, *, ready: bool = True, **env_overrides: object
    ) -> WorkerProcess: ...



class WorkerProcess:
    """One `python -m bridge` worker, run from the repository root, logging to a file."""

    def __init__(
        self, client_id: str, env: Mapping[str, str], *, log_dir: Path | None = None
    ) -> None:
        self._client_id = client_id
        self._env = program_environ(env)
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
        self._process = spawn(
            [sys.executable, "-m", "bridge"], log_path=self._log_path, env=self._env, cwd=REPO_ROOT
        )

    def run(self, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        """Run `python -m bridge *args` to completion in the worker's environment (e.g. health, health --live).

        The same environment as the worker's, as a probe in its container has.
        """
        return subprocess.run(
            [sys.executable, "-m", "bridge", *args], env=self._env, cwd=REPO_ROOT,
            capture_output=True, text=True, timeout=timeout, check=False,
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



# The worker's shutdown line (bridge/stats.py, Stats.summary); the corrections'
# counters came later, at its end, so the line of an older worker still parses.
SUMMARY = re.compile(
    r"stopped: received=(\d+) stored=(\d+) duplicates=(\d+) conflicts=(\d+) rejected=(\d+) in_flight=(\d+)"
    r"(?: revised=(\d+) stale=(\d+))?"
)
_SUMMARY_NAMES = ("received", "stored", "duplicates", "conflicts", "rejected", "in_flight", "revised", "stale")


def summary_of(worker: WorkerProcess) -> Counter[str]:
    """The counters of a worker's last shutdown summary line (its log spans restarts)."""
    matches = SUMMARY.findall(worker.log_text())
    assert matches, f"no summary line in the log of {worker.client_id}:\n{worker.log_tail()}"
    return Counter({name: int(value or 0) for name, value in zip(_SUMMARY_NAMES, matches[-1], strict=True)})


class Member(Protocol):
    """A process that joins the share group and publishes `online` on bridge/status/<client_id> once subscribed."""

    @property
    def client_id(self) -> str: ...

    def start(self) -> None: ...

    def is_running(self) -> bool: ...

    def log_tail(self, lines: int = ...) -> str: ...


def worker_env(
    client_id: str, *, database_url: str, mqtt_url: str, share_group: str, health_dir: Path, **overrides: object
) -> dict[str, str]:
    """One bridge worker's environment; override keys are upper-cased (bridge_batch_size= sets BRIDGE_BATCH_SIZE)."""
    env = {
        "DATABASE_URL": database_url,
        "MQTT_URL": mqtt_url,
        "BRIDGE_CLIENT_ID": client_id,
        "BRIDGE_SHARE_GROUP": share_group,
        "BRIDGE_HEALTH_FILE": str(health_dir / f"health-{client_id}"),
    }
    env.update({key.upper(): str(value) for key, value in overrides.items()})
    return env


class NotOnline(RuntimeError):
    """A worker exited, or stayed silent, before it published `online`."""


def start_online(members: Sequence[Member], mqtt_url: str, *, timeout_s: float = 30.0) -> None:
    """Start the members and wait for each one's retained `online` (published after its SUBACK).

    The retained status of an earlier process with the same id is cleared
    first, and the subscription made before the start, so an `online` cannot
    be missed or mistaken for an old one. Raises NotOnline with the log tail.
    """
    topics = {member.client_id: f"bridge/status/{member.client_id}" for member in members}
    with MqttTestClient.from_url(mqtt_url) as status:
        for topic in topics.values():
            status.publish(topic, b"", retain=True)
            status.subscribe(topic)
        for member in members:
            member.start()

        def online() -> bool:
            for member in members:
                if not member.is_running():
                    raise NotOnline(f"{member.client_id} exited before it was online; log tail:\n{member.log_tail()}")
            seen = {m.topic for m in status.received() if m.payload == b"online"}
            return all(topic in seen for topic in topics.values())

        try:
            wait_until(online, timeout_s, message="every worker online")
        except AssertionError as exc:
            tails = "\n".join(f"--- {m.client_id} ---\n{m.log_tail()}" for m in members)
            raise NotOnline(f"{exc}\n{tails}") from None
