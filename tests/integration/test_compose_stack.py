"""Where a Docker engine is reachable: build the image, start the compose stack with no .env, prove a run.

The CI machines have no Docker engine (only the client), so there this test
reports itself skipped with the reason; the compose file's structure is
checked without an engine by tests/unit/test_compose.py.
"""

from __future__ import annotations

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
    # No passwords: a fresh clone has no .env, and init generates them. Only free ports.
    env = tmp_path / "ports.env"
    env.write_text(f"MQTT_PORT={free_port()}\nPOSTGRES_PORT={free_port()}\n")
    compose = ["docker", "compose", "--project-name", f"iot-test-{tmp_path.name[-8:]}".lower(),
               "--env-file", str(env), "-f", str(REPO_ROOT / "docker-compose.yml")]
    subprocess.run([*compose, "up", "-d", "--build", "--wait"], cwd=REPO_ROOT, check=True, timeout=900)
    try:
        yield compose
    finally:
        subprocess.run([*compose, "down", "-v"], cwd=REPO_ROOT, check=False, timeout=300)


def show(stack: list[str], name: str) -> str:
    """A generated secret, read the way the README tells a person to."""
    return subprocess.run([*stack, "run", "--rm", "--no-deps", "init", "show", name], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=120, check=True).stdout.strip()


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


def test_a_second_up_keeps_the_passwords_and_the_stack_healthy(stack: list[str]) -> None:
    before = show(stack, "mqtt_bridge_password")

    subprocess.run([*stack, "up", "-d", "--wait"], cwd=REPO_ROOT, check=True, timeout=600)

    assert show(stack, "mqtt_bridge_password") == before
    inspect = subprocess.run(["docker", "inspect", *subprocess.run(
        [*stack, "ps", "-q"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60, check=True).stdout.split()],
        capture_output=True, text=True, timeout=60, check=True).stdout
    assert before not in inspect
