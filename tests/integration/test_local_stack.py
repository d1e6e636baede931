"""scripts/local-stack: the first command of a newcomer, and the dockerless stack's whole life.

The newcomer test clones the committed HEAD into an empty folder (no .venv,
no .local), runs `scripts/local-stack up` there as the first command, follows
the instructions it prints, and takes the stack down again.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from devstack.processes import REPO_ROOT, wait_until
from mosquitto import dynsec

pytestmark = pytest.mark.slow

# What a newcomer's shell has: no virtual environment, no coverage, no test settings.
_NEWCOMER_ENV = ("HOME", "LANG", "LC_ALL", "TERM", "TMPDIR")


def run(
    command: list[str], *, cwd: Path, env: dict[str, str], timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False)


def read_env(path: Path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in path.read_text().splitlines() if line)


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def processes_under(folder: Path) -> list[str]:
    """Command lines of live processes started from, or naming, `folder`."""
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            cwd = os.readlink(proc / "cwd")
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z" and (str(folder) in cmdline or cwd.startswith(str(folder))):
            found.append(cmdline)
    return found


def pasted(output: str, starts_with: str) -> str:
    """The `$ ...` line of up's "what now" that starts with `starts_with`, as a person would paste it."""
    lines = [line.strip()[2:] for line in output.splitlines() if line.strip().startswith(f"$ {starts_with}")]
    assert len(lines) == 1, f"one '$ {starts_with}' line expected in:\n{output}"
    return lines[0]


@pytest.fixture
def folder() -> Iterator[Path]:
    """An empty folder the servers' own OS users can enter (PostgreSQL runs as `postgres` under root)."""
    path = Path(tempfile.mkdtemp(prefix="local-stack-test-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def clone(folder: Path) -> Path:
    """The repository's committed HEAD, cloned as a newcomer would: no .venv, no .local."""
    target = folder / "iot-sensors-bridge"
    subprocess.run(["git", "clone", "--quiet", str(REPO_ROOT), str(target)], check=True, timeout=120)
    return target


def newcomer_env() -> dict[str, str]:
    """PATH without any virtual environment's bin folder; nothing else of the test run."""
    venv_bins = {str(Path(sys.prefix) / "bin"), os.environ.get("VIRTUAL_ENV", "") + "/bin"}
    path = os.pathsep.join(p for p in os.environ["PATH"].split(os.pathsep) if p not in venv_bins)
    return {**{k: v for k, v in os.environ.items() if k in _NEWCOMER_ENV}, "PATH": path}


def test_newcomer_first_command_brings_the_stack_up_and_its_instructions_work(clone: Path) -> None:
    env = newcomer_env()
    stack_dir = clone / ".local"
    try:
        up = run(["scripts/local-stack", "up"], cwd=clone, env=env, timeout=600)
        assert up.returncode == 0, up.stdout + up.stderr
        assert "Traceback" not in up.stdout + up.stderr
        for part in ("PostgreSQL", "Mosquitto", "bridge worker local-bridge-1", "the watchdog"):
            assert re.search(rf"starting {part}.* \.\.\. ok", up.stdout), up.stdout
        stack_env = read_env(stack_dir / "stack.env")
        assert all(secret not in up.stdout + up.stderr for key, secret in stack_env.items() if "URL" in key), \
            "passwords stay in .local/stack.env, never on the screen"

        shell = f"{pasted(up.stdout, 'set -a')}\n{pasted(up.stdout, 'mosquitto_pub')}\n"
        published = run(["bash", "-c", shell], cwd=clone, env=env)
        assert published.returncode == 0, published.stdout + published.stderr
        look = ["bash", "-c", f"{pasted(up.stdout, 'set -a')}\n{pasted(up.stdout, 'psql')}"]
        looked = wait_until(lambda: (r := run(look, cwd=clone, env=env)).returncode == 0 and "temperature" in r.stdout,
                            30, interval=0.5, message="the published reading shown by the psql line")
        simulator = run([str(clone / ".venv/bin/python"), "-m", "simulator", "--messages", "500", "--duration", "5",
                         "--verify", "--progress", "none", "--json", "-"], cwd=clone, env={**env, **stack_env})
        assert simulator.returncode == 0, simulator.stdout + simulator.stderr
        summary = json.loads(simulator.stdout[simulator.stdout.index("{"):])
        status = run(["scripts/local-stack", "status"], cwd=clone, env=env)
    finally:
        down = run(["scripts/local-stack", "down"], cwd=clone, env=env)

    assert summary["verify"]["missing"] == 0 and summary["verify"]["found"] == 500
    assert looked
    assert status.returncode == 0 and status.stdout.count("healthy ") == 6, status.stdout
    assert down.returncode == 0, down.stdout + down.stderr
    ports = json.loads((stack_dir / "state.json").read_text())["ports"]
    assert not [port for port in ports.values() if port_open(port)], "every port is free after down"
    assert processes_under(clone) == [], "no process is left after down"


def _hash_accounts_as_before(stack_dir: Path) -> Path:
    """Make the stack's broker accounts file what an `up` before the change wrote: 210,000 PBKDF2 iterations."""
    path = stack_dir / "mosquitto" / "dynamic-security.json"
    passwords = json.loads((stack_dir / "state.json").read_text())["passwords"]
    ours = {name.removeprefix("mqtt_").replace("_", "-"): value for name, value in passwords.items()
            if name.startswith("mqtt_")}
    older = dynsec.update(json.loads(path.read_text()), ours, iterations=210_000)
    assert {c["iterations"] for c in older["clients"]} == {210_000}
    path.write_text(json.dumps(older))
    return path


def test_second_up_changes_nothing_and_up_after_down_keeps_data_and_passwords(folder: Path) -> None:
    """With a standby (`up --standby`, remembered by every later `up`): the newcomer's test covers the plain stack."""
    env = {**os.environ, "LOCAL_STACK_DIR": str(folder / "stack")}
    stack_dir = folder / "stack"
    try:
        first = run(["scripts/local-stack", "up", "--standby"], cwd=REPO_ROOT, env=env)
        assert first.returncode == 0, first.stdout + first.stderr
        assert re.search(r"starting its synchronous standby on .* \.\.\. ok", first.stdout), first.stdout
        status = run(["scripts/local-stack", "status"], cwd=REPO_ROOT, env=env)
        assert status.returncode == 0 and re.search(r"postgres-standby +healthy .*\(sync\)", status.stdout), \
            status.stdout
        pids = {p.name: p.read_text() for p in (stack_dir / "pids").iterdir()}
        again = run(["scripts/local-stack", "up"], cwd=REPO_ROOT, env=env)
        assert again.returncode == 0 and "already up; nothing changed" in again.stdout, again.stdout + again.stderr
        assert {p.name: p.read_text() for p in (stack_dir / "pids").iterdir()} == pids
        before = read_env(stack_dir / "stack.env")
        with psycopg.connect(before["ADMIN_DATABASE_URL"], autocommit=True) as conn:
            conn.execute("CREATE TABLE IF NOT EXISTS kept_across_restarts (n int)")

        assert run(["scripts/local-stack", "down"], cwd=REPO_ROOT, env=env).returncode == 0
        stopped = run(["scripts/local-stack", "status"], cwd=REPO_ROOT, env=env)
        assert stopped.returncode == 1 and stopped.stdout.count("stopped") == 7, stopped.stdout
        accounts = _hash_accounts_as_before(stack_dir)
        back = run(["scripts/local-stack", "up"], cwd=REPO_ROOT, env=env)
        assert back.returncode == 0, back.stdout + back.stderr
        assert "starting its synchronous standby" in back.stdout, "the standby comes back without --standby"
        assert {c["iterations"] for c in json.loads(accounts.read_text())["clients"]} == {1}, \
            "the broker's accounts re-hashed by the next up, and every part came up with them"
        assert read_env(stack_dir / "stack.env") == before, "same ports and passwords"
        assert ",127.0.0.1:" in before["BRIDGE_DATABASE_URL"] and "target_session_attrs=read-write" in \
            before["BRIDGE_DATABASE_URL"], "the workers are given both servers"
        with psycopg.connect(before["DATABASE_URL"]) as conn:  # the reader role, with the same password
            assert conn.execute("SELECT count(*) FROM readings").fetchone() is not None
        with psycopg.connect(before["ADMIN_DATABASE_URL"]) as conn:
            assert conn.execute("SELECT to_regclass('kept_across_restarts')").fetchone() == ("kept_across_restarts",)
    finally:
        down = run(["scripts/local-stack", "down"], cwd=REPO_ROOT, env=env)
    assert down.returncode == 0 and "stopping postgres ... ok" in down.stdout, down.stdout + down.stderr
    assert not list((stack_dir / "pids").glob("*.pid"))


def test_up_with_a_site_broker_carries_a_fleets_readings_through_it(folder: Path) -> None:
    env = {**os.environ, "LOCAL_STACK_DIR": str(folder / "stack")}
    try:
        up = run(["scripts/local-stack", "up", "--site"], cwd=REPO_ROOT, env=env)
        assert up.returncode == 0, up.stdout + up.stderr
        settings = read_env(folder / "stack" / "stack.env")
        fleet = pasted(up.stdout, 'MQTT_URL="$MQTT_SITE_URL"')  # as pasted after `. stack.env`
        published = run(["sh", "-c", fleet], cwd=REPO_ROOT, env={**env, **settings})
        assert published.returncode == 0 and "verdict: OK" in published.stdout, published.stdout + published.stderr
        status = run(["scripts/local-stack", "status"], cwd=REPO_ROOT, env=env)
        assert status.returncode == 0 and "bridged to the central broker" in status.stdout, status.stdout
        watchdog_log = (folder / "stack" / "logs" / "local-watchdog.log").read_text()
        assert "site bridges: local-site-1" in watchdog_log
    finally:
        down = run(["scripts/local-stack", "down"], cwd=REPO_ROOT, env=env)
    assert down.returncode == 0 and "stopping site-mosquitto ... ok" in down.stdout, down.stdout + down.stderr


def _can_hide_folders() -> bool:
    return os.geteuid() == 0 and shutil.which("unshare") is not None and run(
        ["unshare", "--mount", "true"], cwd=Path("/"), env=dict(os.environ)).returncode == 0


@pytest.mark.skipif(not _can_hide_folders(), reason="hiding the installed servers needs root and unshare --mount")
def test_up_without_the_servers_and_without_root_names_the_command_to_run(clone: Path, folder: Path) -> None:
    # A machine without Debian's mosquitto and postgresql, and a user who is not
    # root: their folders are hidden in a private mount namespace, and the
    # script runs as `nobody` with a PATH that has no server on it.
    empty = folder / "empty"
    empty.mkdir()
    hide = " && ".join(f"mount --bind {empty} {path}" for path in ("/usr/sbin", "/usr/lib/postgresql")
                       if Path(path).exists())
    script = (f"{hide} && exec setpriv --reuid=65534 --regid=65534 --clear-groups "
              f"env -i PATH=/usr/bin:/bin HOME=/tmp {clone}/scripts/local-stack up")
    result = run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script], cwd=clone, env={})

    assert result.returncode != 0
    problems = [line for line in result.stderr.splitlines() if "apt-get install" in line]
    assert problems == ["missing Debian packages: mosquitto postgresql; "
                        "install them with: sudo apt-get install -y mosquitto postgresql"], result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    assert not (clone / ".local").exists() and not (clone / ".venv").exists(), "nothing was started or created"
