"""Watchdog processes (`python -m watchdog`) for the integration tests and the detection benchmark."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from devstack.processes import wait_until
from devstack.programs import ProgramProcess


class WatchdogProcess(ProgramProcess):
    """One `python -m watchdog`, run from the repository root, logging to a file."""

    def __init__(self, env: Mapping[str, str], *, folder: Path) -> None:
        name = env.get("WATCHDOG_CLIENT_ID", "watchdog")
        super().__init__("watchdog", env, name=f"watchdog {name}", log_path=folder / f"{name}.log")
        self.health_path = Path(env["WATCHDOG_HEALTH_FILE"])

    def run(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """Run `python -m watchdog *args` to completion (e.g. --once, health)."""
        return super().run(*args, timeout=timeout)

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

    def terminate(self, timeout: float = 15) -> int:
        """SIGTERM and wait; SIGKILL if it does not exit in time (returns -9 then)."""
        return super().terminate(timeout)
