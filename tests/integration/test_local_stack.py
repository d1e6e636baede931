"""scripts/local-stack: the dockerless stack comes up healthy, carries readings, and goes away."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from devstack.processes import REPO_ROOT

pytestmark = pytest.mark.slow


def local_stack(command: str, home: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "LOCAL_STACK_DIR": str(home), "PYTHON": sys.executable}
    return subprocess.run(
        [str(REPO_ROOT / "scripts" / "local-stack"), command], env=env, cwd=REPO_ROOT,
        capture_output=True, text=True, timeout=180, check=False,
    )


def read_env(path: Path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in path.read_text().splitlines() if line)


def port_open(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


@pytest.fixture
def home() -> Iterator[Path]:
    """The stack's state folder; under /tmp and traversable, since PostgreSQL runs as `postgres` under root."""
    folder = Path(tempfile.mkdtemp(prefix="local-stack-test-"))
    folder.chmod(0o755)
    yield folder / "stack"
    shutil.rmtree(folder, ignore_errors=True)


def test_up_simulate_verify_down(home: Path) -> None:
    try:
        up = local_stack("up", home)
        assert up.returncode == 0, up.stdout + up.stderr
        env = read_env(home / "stack.env")
        names = {"MQTT_URL", "MQTT_DEVICE_URL", "MQTT_DEVICE_SENSOR_ID", "DATABASE_URL", "BRIDGE_DATABASE_URL"}
        assert names <= set(env)
        assert local_stack("status", home).returncode == 0

        simulator = subprocess.run(
            [sys.executable, "-m", "simulator", "--messages", "300", "--duration", "3", "--duplicates", "0.1",
             "--invalid", "0.05", "--verify", "--verify-timeout", "60", "--progress", "none", "--json", "-"],
            env={**os.environ, **env}, cwd=REPO_ROOT, capture_output=True, text=True, timeout=120, check=False,
        )
        assert simulator.returncode == 0, simulator.stdout + simulator.stderr
        summary = json.loads(simulator.stdout[simulator.stdout.index("{"):])
        assert summary["verify"]["missing"] == 0
    finally:
        down = local_stack("down", home)
    assert down.returncode == 0, down.stdout + down.stderr
    ports = json.loads((home / "state.json").read_text())["ports"]
    assert not any(port_open(port) for port in ports.values()), "every port is free after down"
    assert local_stack("status", home).returncode == 1
    assert not list((home / "pids").glob("*.pid"))
