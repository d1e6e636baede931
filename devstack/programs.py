"""The life cycle of the project's own programs run as processes: `python -m bridge`, `python -m watchdog`.

Started in the background from the repository root with a minimal environment
(program_environ), their output appended to a log file, stopped by PID.
devstack/workers.py and devstack/watchdog_process.py add what each program
reports; the throwaway servers have theirs in devstack/lifecycle.py.
"""

from __future__ import annotations

import signal as signals
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

from devstack.processes import REPO_ROOT, program_environ, read_tail, spawn


class ProgramProcess:
    """One `python -m <package>` run in the background; `run()` runs it once to completion (a health command)."""

    def __init__(
        self, package: str, env: Mapping[str, str], *, name: str, log_path: Path, source: Path = REPO_ROOT
    ) -> None:
        self._package = package
        self._source = source  # the tree whose package runs (a benchmark's "before" side is another one)
        self._name = name
        self._env = program_environ(env)
        self._log_path = log_path
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        """PID of the process started last."""
        return self._started().pid

    @property
    def log_path(self) -> Path:
        """File holding the process's stdout and stderr (appended to across restarts)."""
        return self._log_path

    def start(self) -> None:
        """Start the program; waiting until it is ready is the caller's job."""
        if self.is_running():
            raise RuntimeError(f"{self._name} is already running (pid {self.pid})")
        self._process = spawn([sys.executable, "-m", self._package], log_path=self._log_path, env=self._env,
                              cwd=self._source)

    def run(self, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        """Run `python -m <package> *args` to completion in the same environment (e.g. health, --once)."""
        return subprocess.run(
            [sys.executable, "-m", self._package, *args], env=self._env, cwd=self._source,
            capture_output=True, text=True, timeout=timeout, check=False,
        )

    def is_running(self) -> bool:
        """Whether the process is alive."""
        return self._process is not None and self._process.poll() is None

    def signal(self, sig: int) -> None:
        """Send `sig` (for example SIGSTOP, SIGCONT or SIGTERM)."""
        self._started().send_signal(sig)

    def wait(self, timeout: float) -> int:
        """Wait for the process to exit and return its exit code (or raise TimeoutExpired)."""
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
        """SIGKILL the process and return its exit code."""
        process = self._started()
        if process.poll() is None:
            process.kill()
        return process.wait()

    def log_text(self) -> str:
        """Everything the process wrote to stdout and stderr so far."""
        return read_tail(self._log_path, lines=1_000_000)

    def log_tail(self, lines: int = 40) -> str:
        """The last lines of the process's output."""
        return read_tail(self._log_path, lines=lines)

    def _started(self) -> subprocess.Popen[bytes]:
        if self._process is None:
            raise RuntimeError(f"{self._name} has not been started")
        return self._process
