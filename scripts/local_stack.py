"""The whole stack from local binaries, without Docker: scripts/local-stack up|down|status.

`up` starts Mosquitto (the project's config, authentication on), a throwaway
PostgreSQL (schema.sql and the roles applied), three bridge workers and the
watchdog, each detached, on free ports on 127.0.0.1; it returns once all are
healthy and writes stack.env. `down` stops, by PID, what `up` started. State
lives in .local/ (or LOCAL_STACK_DIR): data, logs, PID files, secrets.
"""

from __future__ import annotations

import argparse
import glob
import importlib.util
import json
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from urllib.parse import quote

import psycopg

ROOT = Path(__file__).resolve().parent.parent
WORKERS = ("local-bridge-1", "local-bridge-2", "local-bridge-3")
DEVICE_SENSOR_ID = 1
READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 20.0
# Stop order: consumers first, servers last, so nothing is left waiting on a dead server.
STOP_ORDER = ("watchdog", *WORKERS, "mosquitto", "postgres")


@dataclass(frozen=True)
class Stack:
    """Where the stack keeps its state, and its ports and passwords."""

    home: Path
    ports: dict[str, int]
    passwords: dict[str, str]

    def pid_file(self, name: str) -> Path:
        """The PID file of a component."""
        return self.home / "pids" / f"{name}.pid"

    def log(self, name: str) -> Path:
        """The log file of a component."""
        return self.home / "logs" / f"{name}.log"

    def mqtt_url(self, user: str) -> str:
        """The broker URL for one of the accounts."""
        password = quote(self.passwords["mqtt_" + user.replace("-", "_")], safe="")  # URL-safe today; stays so
        return f"mqtt://{user}:{password}@127.0.0.1:{self.ports['mqtt']}"

    def db_url(self, user: str, dbname: str = "sensors") -> str:
        """The database URL for a login role; the superuser `postgres` comes in through the socket."""
        if user == "postgres":
            return f"postgresql://postgres@/{dbname}?host={self.home / 'postgres'}&port={self.ports['postgres']}"
        password = quote(self.passwords["db_" + user], safe="")
        return f"postgresql://{user}:{password}@127.0.0.1:{self.ports['postgres']}/{dbname}"


def load_stack(home: Path) -> Stack:
    """Read the stack's ports and passwords, choosing them on the first call."""
    state = home / "state.json"
    if state.exists():
        data = json.loads(state.read_text())
        return Stack(home, data["ports"], data["passwords"])
    for folder in ("pids", "logs"):
        (home / folder).mkdir(parents=True, exist_ok=True)
    names = ("mqtt_bridge", "mqtt_watchdog", "mqtt_simulator", f"mqtt_device_{DEVICE_SENSOR_ID}",
             "db_bridge", "db_watchdog", "db_reader")
    stack = Stack(home, {"mqtt": free_port(), "postgres": free_port()},
                  {name: secrets.token_urlsafe(18) for name in names})
    state.write_text(json.dumps({"ports": stack.ports, "passwords": stack.passwords}))
    state.chmod(0o600)
    return stack


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def binary(name: str, package: str) -> str:
    """A server binary from PATH, /usr/sbin or PostgreSQL's versioned folders."""
    candidates = [shutil.which(name), f"/usr/sbin/{name}",
                  *sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)]
    for candidate in candidates:
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise SystemExit(f"local-stack: {name} not found; install Debian's `{package}` package")


def account(name: str) -> pwd.struct_passwd | None:
    """The OS user a server must run as when we are root (PostgreSQL refuses root)."""
    return pwd.getpwnam(name) if os.geteuid() == 0 else None


def chown_tree(user: pwd.struct_passwd | None, path: Path) -> None:
    """Hand a folder to the server's OS user."""
    if user is not None:
        for folder, _, files in os.walk(path):
            for entry in [folder, *(os.path.join(folder, f) for f in files)]:
                os.chown(entry, user.pw_uid, user.pw_gid)


def start(stack: Stack, name: str, args: list[str], *, env: dict[str, str] | None = None,
          user: pwd.struct_passwd | None = None) -> None:
    """Start a detached process (own session), logging to its file, and record its PID."""
    with stack.log(name).open("ab") as log:
        process = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, env=env,
            start_new_session=True, user=user.pw_uid if user else None, group=user.pw_gid if user else None,
            extra_groups=[] if user else None,
        )
    stack.pid_file(name).write_text(str(process.pid))


def running_pid(stack: Stack, name: str) -> int | None:
    """The PID of a component if it is alive."""
    try:
        pid = int(stack.pid_file(name).read_text())
        os.kill(pid, 0)
    except (FileNotFoundError, ValueError, ProcessLookupError):
        return None
    return pid


def wait_for(what: str, check: object, stack: Stack, log_name: str) -> None:
    """Poll `check` until true; exit with the log's tail when the deadline passes."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    while not check():  # type: ignore[operator]
        if time.monotonic() > deadline:
            tail = "\n".join(stack.log(log_name).read_text(errors="replace").splitlines()[-20:])
            raise SystemExit(f"local-stack: {what} not ready after {READY_TIMEOUT_S:.0f} s; {log_name} log:\n{tail}")
        time.sleep(0.2)


def start_postgres(stack: Stack) -> None:
    """initdb on first use, start the server, apply schema.sql and the login roles."""
    data, user = stack.home / "postgres", account("postgres")
    if not (data / "PG_VERSION").exists():
        data.mkdir(parents=True, exist_ok=True)
        chown_tree(user, data)
        initdb = [binary("initdb", "postgresql"), "-D", str(data), "--auth-local=trust",
                  "--auth-host=scram-sha-256", "-U", "postgres", "-E", "UTF8", "--locale=C", "--no-sync"]
        result = subprocess.run(initdb, capture_output=True, text=True, user=user.pw_uid if user else None, check=False)
        if result.returncode != 0:
            # Typically: run as root, and the `postgres` user cannot reach the folder.
            raise SystemExit(f"local-stack: initdb failed in {data}:\n{result.stderr.strip()}")
    start(stack, "postgres", [binary("postgres", "postgresql"), "-D", str(data), "-p", str(stack.ports["postgres"]),
                              "-k", str(data), "-c", "listen_addresses=127.0.0.1"], user=user)
    admin = stack.db_url("postgres", "postgres")
    wait_for("PostgreSQL", lambda: _connects(admin), stack, "postgres")
    with psycopg.connect(admin, autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = 'sensors'").fetchone():
            conn.execute("CREATE DATABASE sensors")
    with psycopg.connect(stack.db_url("postgres"), autocommit=True) as conn:
        conn.execute((ROOT / "schema.sql").read_bytes())
        for role, group in (("bridge", "iot_bridge"), ("watchdog", "iot_watchdog"), ("reader", "iot_reader")):
            if not conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone():
                conn.execute(psycopg.sql.SQL("CREATE ROLE {} LOGIN PASSWORD {} IN ROLE {}").format(
                    psycopg.sql.Identifier(role), psycopg.sql.Literal(stack.passwords["db_" + role]),
                    psycopg.sql.Identifier(group)))


def _connects(url: str) -> bool:
    try:
        psycopg.connect(url, connect_timeout=2).close()
    except psycopg.OperationalError:
        return False
    return True


def load_dynsec() -> ModuleType:
    """mosquitto/dynsec.py, the account generator (a script, not a package)."""
    spec = importlib.util.spec_from_file_location("dynsec", ROOT / "mosquitto" / "dynsec.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def start_mosquitto(stack: Stack) -> None:
    """Generate the accounts on first use, render the project's config for this machine, start."""
    folder, user = stack.home / "mosquitto", account("mosquitto")
    (folder / "data").mkdir(parents=True, exist_ok=True)
    dynsec_file = folder / "dynamic-security.json"
    if not dynsec_file.exists():
        env = {f"MQTT_{u.upper()}_PASSWORD": stack.passwords[f"mqtt_{u}"] for u in ("bridge", "watchdog", "simulator")}
        env["MQTT_DEVICES"] = f"{DEVICE_SENSOR_ID}:{stack.passwords[f'mqtt_device_{DEVICE_SENSOR_ID}']}"
        dynsec_file.write_text(json.dumps(load_dynsec().build(env)))
    found = sorted(glob.glob("/usr/lib/*/mosquitto_dynamic_security.so"))
    plugin = found[0] if found else "/usr/lib/mosquitto_dynamic_security.so"
    config = (ROOT / "mosquitto" / "mosquitto.conf").read_text()
    for pattern, line in ((r"listener\s+\d+", f"listener {stack.ports['mqtt']} 127.0.0.1"),
                          (r"persistence_location\s+\S+", f"persistence_location {folder / 'data'}/"),
                          (r"log_dest\s+stdout", f"log_dest file {folder / 'mosquitto.log'}"),
                          (r"plugin\s+\S+", f"plugin {plugin}"),
                          (r"plugin_opt_config_file\s+\S+", f"plugin_opt_config_file {dynsec_file}")):
        config = re.sub(rf"^{pattern}[ \t]*$", line, config, count=1, flags=re.MULTILINE)
    (folder / "mosquitto.conf").write_text(config)
    (folder / "mosquitto.log").touch()
    chown_tree(user, folder)
    start(stack, "mosquitto", [binary("mosquitto", "mosquitto"), "-c", str(folder / "mosquitto.conf")])
    wait_for("Mosquitto", lambda: _port_open(stack.ports["mqtt"]), stack, "mosquitto")


def _port_open(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


def app_env(stack: Stack, extra: dict[str, str]) -> dict[str, str]:
    """A minimal environment for the bridge and watchdog processes."""
    keep = ("PATH", "HOME", "LANG", "LC_ALL", "TZ", "VIRTUAL_ENV", "PYTHONPATH")
    return {**{k: v for k, v in os.environ.items() if k in keep}, "PYTHONUNBUFFERED": "1", **extra}


def worker_env(stack: Stack, client_id: str) -> dict[str, str]:
    """The environment of one bridge worker."""
    return app_env(stack, {"DATABASE_URL": stack.db_url("bridge"), "MQTT_URL": stack.mqtt_url("bridge"),
                           "BRIDGE_CLIENT_ID": client_id,
                           "BRIDGE_HEALTH_FILE": str(stack.home / f"{client_id}.health")})


def watchdog_env(stack: Stack) -> dict[str, str]:
    """The environment of the watchdog (alerts go to its log unless DISCORD_WEBHOOK_URL is set)."""
    extra = {"DATABASE_URL": stack.db_url("watchdog"), "MQTT_URL": stack.mqtt_url("watchdog"),
             "WATCHDOG_BRIDGE_WORKERS": ",".join(WORKERS), "WATCHDOG_CLIENT_ID": "local-watchdog",
             "WATCHDOG_HEALTH_FILE": str(stack.home / "watchdog.health")}
    if os.environ.get("DISCORD_WEBHOOK_URL"):
        extra["DISCORD_WEBHOOK_URL"] = os.environ["DISCORD_WEBHOOK_URL"]
    return app_env(stack, extra)


def healthy(module: str, env: dict[str, str]) -> bool:
    """Whether `python -m <module> health` exits 0 with this environment."""
    result = subprocess.run([sys.executable, "-m", module, "health"], env=env, cwd=ROOT,
                            capture_output=True, timeout=30, check=False)
    return result.returncode == 0


def write_stack_env(stack: Stack) -> Path:
    """What a tester needs to talk to the stack (source it, or pass it to the simulator)."""
    device = f"device-{DEVICE_SENSOR_ID}"
    lines = {
        "MQTT_URL": stack.mqtt_url("simulator"),
        "MQTT_DEVICE_URL": stack.mqtt_url(device),
        "MQTT_DEVICE_SENSOR_ID": str(DEVICE_SENSOR_ID),
        "DATABASE_URL": stack.db_url("reader"),
        "BRIDGE_DATABASE_URL": stack.db_url("bridge"),
        "ADMIN_DATABASE_URL": stack.db_url("postgres"),
    }
    path = stack.home / "stack.env"
    path.write_text("".join(f"{key}={value}\n" for key, value in lines.items()))
    path.chmod(0o600)
    return path


def up(stack: Stack) -> int:
    """Start whatever is not running, then wait until everything is healthy."""
    if running_pid(stack, "postgres") is None:
        start_postgres(stack)
    if running_pid(stack, "mosquitto") is None:
        start_mosquitto(stack)
    for client_id in WORKERS:
        if running_pid(stack, client_id) is None:
            start(stack, client_id, [sys.executable, "-m", "bridge"], env=worker_env(stack, client_id))
    if running_pid(stack, "watchdog") is None:
        start(stack, "watchdog", [sys.executable, "-m", "watchdog"], env=watchdog_env(stack))
    for client_id in WORKERS:
        wait_for(f"bridge worker {client_id}", lambda c=client_id: healthy("bridge", worker_env(stack, c)),
                 stack, client_id)
    wait_for("watchdog", lambda: healthy("watchdog", watchdog_env(stack)), stack, "watchdog")
    path = write_stack_env(stack)
    print(f"local stack up: broker 127.0.0.1:{stack.ports['mqtt']}, PostgreSQL 127.0.0.1:{stack.ports['postgres']}")
    print(f"  settings for the simulator and psql: {path}")
    print(f"  try: set -a; . {path}; set +a; python -m simulator --messages 500 --duration 5 --verify")
    return 0


def down(stack: Stack) -> int:
    """Stop everything `up` started, by PID, consumers first."""
    for name in STOP_ORDER:
        pid = running_pid(stack, name)
        if pid is not None:
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + STOP_TIMEOUT_S
            while running_pid(stack, name) is not None and time.monotonic() < deadline:
                time.sleep(0.1)
            if running_pid(stack, name) is not None:
                os.kill(pid, signal.SIGKILL)
        stack.pid_file(name).unlink(missing_ok=True)
    print("local stack down")
    return 0


def status(stack: Stack) -> int:
    """Print each component's state; exit 0 only when all are running."""
    alive = {name: running_pid(stack, name) for name in reversed(STOP_ORDER)}
    for name, pid in alive.items():
        print(f"{name:16} {'running, pid ' + str(pid) if pid else 'stopped'}")
    return 0 if all(alive.values()) else 1


def main(argv: list[str] | None = None) -> int:
    """Dispatch up, down or status."""
    parser = argparse.ArgumentParser(prog="scripts/local-stack", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["up", "down", "status"])
    args = parser.parse_args(argv)
    home = Path(os.environ.get("LOCAL_STACK_DIR") or ROOT / ".local").resolve()
    stack = load_stack(home)
    return {"up": up, "down": down, "status": status}[args.command](stack)


if __name__ == "__main__":
    sys.exit(main())
