"""Where a Docker engine is reachable: build the image, start the compose stack, prove a run.

The CI machines have no Docker engine (only the client), so there this test
reports itself skipped with the reason; the compose file's structure is
checked without an engine by tests/unit/test_compose.py.
"""

from __future__ import annotations

import secrets
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from devstack.processes import REPO_ROOT, free_port

pytestmark = pytest.mark.slow


def engine_reachable() -> bool:
    docker = shutil.which("docker")
    if docker is None:
        return False
    compose = subprocess.run([docker, "compose", "version"], capture_output=True, timeout=30, check=False)
    info = subprocess.run([docker, "info"], capture_output=True, timeout=30, check=False)
    return compose.returncode == 0 and info.returncode == 0


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[list[str]]:
    if not engine_reachable():
        pytest.skip("no Docker engine with the compose plugin is reachable here")
    env = tmp_path / "test.env"
    example = (REPO_ROOT / ".env.example").read_text()
    lines = [
        f"{line.split('=', 1)[0]}={secrets.token_urlsafe(12)}" if line.endswith("=change-me") else line
        for line in example.splitlines()
    ]
    lines += [f"MQTT_PORT={free_port()}", f"POSTGRES_PORT={free_port()}"]
    env.write_text("\n".join(lines) + "\n")
    compose = ["docker", "compose", "--project-name", f"iot-test-{tmp_path.name[-8:]}".lower(),
               "--env-file", str(env), "-f", str(REPO_ROOT / "docker-compose.yml")]
    subprocess.run([*compose, "up", "-d", "--build", "--wait"], cwd=REPO_ROOT, check=True, timeout=900)
    try:
        yield compose
    finally:
        subprocess.run([*compose, "down", "-v"], cwd=REPO_ROOT, check=False, timeout=300)


def test_compose_stack_stores_every_simulated_reading(stack: list[str]) -> None:
    run = subprocess.run(
        [*stack, "--profile", "tools", "run", "--rm", "simulator",
         "--messages", "300", "--duration", "3", "--verify", "--progress", "none"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=300, check=False,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "missing 0" in run.stdout
    ps = subprocess.run([*stack, "ps", "--format", "{{.Service}} {{.Health}}"], cwd=REPO_ROOT,
                        capture_output=True, text=True, timeout=60, check=True).stdout
    for service in ("mosquitto", "postgres", "bridge-1", "bridge-2", "bridge-3", "watchdog"):
        assert f"{service} healthy" in ps, ps
