"""Simulator runs (`python -m simulator`) for the integration tests and the newcomer test."""

from __future__ import annotations

import subprocess
import sys

from devstack.processes import REPO_ROOT, program_environ


def simulator_env(mqtt_url: str, database_url: str) -> dict[str, str]:
    """A minimal environment pointing the simulator at a broker and (for --verify) a database."""
    return program_environ({"MQTT_URL": mqtt_url, "DATABASE_URL": database_url})


def simulate(args: list[str], env: dict[str, str], *, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    """Run the simulator to completion with plain progress lines; the caller checks the exit code."""
    command = [sys.executable, "-m", "simulator", "--progress", "lines", *args]
    return subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=timeout, check=False)
