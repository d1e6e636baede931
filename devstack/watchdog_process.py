"""Watchdog processes (`python -m watchdog`) for the integration tests and the detection benchmark."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from devstack.processes import REPO_ROOT, program_environ, read_tail, spawn, wait_until


class WatchdogProcess:
    """One `python -m watchdog`, run from the repository root, logging to a file."""

    def __init__(self, env: Mapping[str, str], *, folder: Path) -> None:
        self._env = program_environ(env)
        self._log_path = folder / f"{env.get('WATCHDOG_CLIENT_ID', 'watchdog')}.log"
        self.health_path = Path(env["WATCHDOG_HEALTH_FILE"])
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        """PID of the watchdog started last."""
        if self._process is None:
            raise RuntimeError("the watchdog has not been started")
        return self._process.pid

    def start(self) -> None:
        """Start the watchdog in the background."""
        self._process = spawn([sys.executable, "-m", "watchdog"], log_path=self._log_path, env=self._env, cwd=REPO_ROOT)

    def run(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """Run `python -m watchdog *args` to completion (e.g. --once, health)."""
        return subprocess.run(
            [sys.executable, "-m", "watchdog", *args], env=self._env, cwd=REPO_ROOT,
            capture_output=True, text=True, timeout=timeout, check=False,
        )

    def health(self) -> dict[str, Any]:
        """The last health snapshot ({} before the first cycle)."""
        try:
            data: dict[str, Any] = json.loads(self.health_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return data

    def wait_for_cycles(self, count: int, timeout: float) -> dict[str, Any]:
        """Wait until `count` cycles are done in total; return that snapshot."""
        return wait_until(
            lambda: (h := self.health()).get("cycles", 0) >= count and h, timeout, interval=0.1,
            message=f"{count} watchdog cycles (log tail: {self.log_tail()})",
        )

    def wait_until_all_ok(self, timeout: float = 30) -> dict[str, Any]:
        """Wait for a cycle in which every component is ok."""

        def all_ok() -> dict[str, Any] | None:
            health = self.health()
            components = health.get("components")
            return health if components and set(components.values()) == {"ok"} else None

        return wait_until(all_ok, timeout, interval=0.1, message="a cycle with every component ok")

    def is_running(self) -> bool:
        """Whether the watchdog process is alive."""
        return self._process is not None and self._process.poll() is None

    def terminate(self, timeout: float = 15) -> int:
        """SIGTERM and wait; SIGKILL if it does not exit in time (returns -9 then)."""
        if self._process is None:
            raise RuntimeError("watchdog not started")
        if self._process.poll() is None:
            self._process.terminate()
        try:
            return self._process.wait(timeout)
        except subprocess.TimeoutExpired:
            self._process.kill()
            return self._process.wait()

    def log_text(self) -> str:
        """Everything the watchdog wrote so far."""
        return read_tail(self._log_path, lines=1_000_000)

    def log_tail(self, lines: int = 30) -> str:
        """The last lines of the watchdog's output."""
        return read_tail(self._log_path, lines=lines)
