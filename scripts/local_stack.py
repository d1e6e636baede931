"""The whole stack from local binaries, without Docker: scripts/local-stack up|down|status.

`up` starts Mosquitto (the project's config, authentication on), PostgreSQL
(schema.sql and the login roles applied), three bridge workers and the
watchdog, each detached, on free ports on 127.0.0.1 (`up --site` adds a site
broker, mosquitto/site.conf, bridged to the first); it says what it starts
as it goes, returns once every part is healthy and prints what to do next.
`up --standby` also gives PostgreSQL a synchronous streaming standby (kept
from then on) and hands every program both servers' addresses
(docs/high-availability.md).
`down` stops, by PID, what `up` started; `status` shows each part's health.
State lives in .local/ (or LOCAL_STACK_DIR): data, logs, PID files, and the
generated passwords, kept across `down` and `up`. scripts/local-stack runs
scripts/bootstrap first, so this file may assume .venv and the servers.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import pwd
import secrets
import signal
import socket
import stat
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import psycopg

from bridge.config import Settings as BridgeSettings
from bridge.health import check_health as bridge_health
from bridge.partition import PartitionSettings
from bridge.partition import connect as connect_owner
from bridge.partition import run_setup as partition_readings
from devstack.mosquitto import MosquittoServer
from devstack.mqtt_client import MqttTestClient, MqttTestError
from devstack.postgres import PostgresServer, apply_schema_file, ensure_login_role, partman_bgw_settings
from devstack.processes import REPO_ROOT, free_port, read_tail, service_account, wait_until
from devstack.replication import StandbyServer, allow_replication, set_synchronous, sync_state
from devstack.site import site_broker
from devstack.urls import mqtt_url, postgres_url
from devstack.watchdog_process import WatchdogProcess
from devstack.workers import WorkerProcess, worker_env
from iotcommon.contract import reading_topic, site_bridge_state_topic
from mosquitto import dynsec
from watchdog.config import Settings as WatchdogSettings
from watchdog.runner import check_health as watchdog_health

WORKERS = ("local-bridge-1", "local-bridge-2", "local-bridge-3")
DEVICE_SENSOR_ID = 1
READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 20.0
# The workers and the watchdog run with their default intervals, so their health limits are the defaults'.
BRIDGE_HEALTH_MAX_AGE_S = BridgeSettings().health_max_age_s
WATCHDOG_HEALTH_MAX_AGE_S = WatchdogSettings().health_max_age_s
# Stop order: consumers first, servers last, so nothing is left waiting on a dead server.
# The site broker of `up --site` goes first: it forwards into the central broker.
SITE = "site-mosquitto"
SITE_NAME = "local-site-1"  # its bridge's remote_clientid, which the watchdog watches
STOP_ORDER = ("watchdog", SITE, *WORKERS, "mosquitto", "postgres")
STANDBY = "postgres-standby"
PASSWORDS = ("mqtt_bridge", "mqtt_watchdog", "mqtt_simulator", f"mqtt_device_{DEVICE_SENSOR_ID}",
             "mqtt_site_bridge", "db_bridge", "db_watchdog", "db_reader")
LOOK_AT_READINGS = """psql "$DATABASE_URL" -c 'SELECT * FROM readings ORDER BY ingested_at DESC LIMIT 5'"""
LOGIN_ROLES = (("bridge", "iot_bridge"), ("watchdog", "iot_watchdog"), ("reader", "iot_reader"))


class StackError(Exception):
    """A step failed; the message says what, where its log is, and its last lines."""


@dataclass(frozen=True)
class Stack:
    """Where the stack keeps its state, and its ports and passwords."""

    home: Path
    ports: dict[str, int]
    passwords: dict[str, str]

    @property
    def partitioned(self) -> bool:
        """Whether `up --partitioned` ran here once: readings stays partitioned, the background worker runs."""
        return (self.home / "partitioned").exists()

    @property
    def site(self) -> bool:
        """Whether `up --site` ran here once: the site broker is part of the stack from then on."""
        return (self.home / "site").exists()

    @property
    def standby(self) -> bool:
        """Whether PostgreSQL has a standby (`up --standby` once; kept in state.json)."""
        return "postgres_standby" in self.ports

    @property
    def parts(self) -> tuple[str, ...]:
        """Every part, in stop order: the site broker before the central one, the standby before its primary."""
        names = tuple(name for name in STOP_ORDER if name != SITE or self.site)
        return (*names[:-1], STANDBY, names[-1]) if self.standby else names

    def pid_file(self, name: str) -> Path:
        """The PID file of a part."""
        return self.home / "pids" / f"{name}.pid"

    def log(self, name: str) -> Path:
        """The log file of a part."""
        if name in ("postgres", STANDBY):
            return self.home / name / "postgres.log"
        if name in ("mosquitto", SITE):
            return self.home / name / "mosquitto.log"
        if name == "watchdog":
            return self.home / "logs" / "local-watchdog.log"
        return self.home / "logs" / f"worker-{name}.log"

    def health_file(self, name: str) -> Path:
        """Where a worker or the watchdog records its health."""
        return self.home / "health" / f"health-{name}"

    def mqtt_url(self, user: str, *, port: str = "mqtt") -> str:
        """The broker URL for one of the accounts (generated passwords are URL-safe; quoted anyway)."""
        return mqtt_url(self.ports[port], user, self.passwords["mqtt_" + user.replace("-", "_")])

    def db_url(self, user: str) -> str:
        """The database URL of a login role, over TCP with its password; with a standby, both servers'."""
        ports = [self.ports["postgres"], *([self.ports["postgres_standby"]] if self.standby else [])]
        return postgres_url(*ports, user=user, password=self.passwords["db_" + user], dbname="sensors",
                            read_write=self.standby)


def load_stack(home: Path, *, standby: bool = False) -> Stack:
    """The stack's ports and passwords: chosen on the first `up`, then kept in state.json."""
    state = home / "state.json"
    data = json.loads(state.read_text()) if state.exists() else {"ports": {}, "passwords": {}}
    ports, passwords = data["ports"], data["passwords"]
    for name in PASSWORDS:
        # token_urlsafe: letters, digits, - and _ only, so URLs need no escaping.
        passwords.setdefault(name, secrets.token_urlsafe(18))
    for name in ("mqtt", "postgres", "site_mqtt", *(["postgres_standby"] if standby else [])):
        ports.setdefault(name, free_port())
    home.mkdir(parents=True, exist_ok=True)
    for folder in ("pids", "logs", "health"):
        (home / folder).mkdir(exist_ok=True)
    state.write_text(json.dumps({"ports": ports, "passwords": passwords}))
    state.chmod(0o600)
    return Stack(home, ports, passwords)


def port_taken(port: int) -> bool:
    """Whether something listens on 127.0.0.1:port."""
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


# --- processes by PID: a PID file holds the PID and the process's start time, so a
# --- recycled PID (after a reboot, say) is never taken for ours.

def _start_time(pid: int) -> str | None:
    """The process's start time (field 22 of proc(5)); None if it is gone or a zombie not yet reaped."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return None if fields[0] in ("Z", "X") else fields[19]


def record_pid(stack: Stack, name: str, pid: int) -> None:
    """Remember the process `up` started for a part."""
    stack.pid_file(name).write_text(f"{pid} {_start_time(pid)}\n")


def running_pid(stack: Stack, name: str) -> int | None:
    """The PID of a part if the very process `up` started is alive."""
    try:
        pid_text, started = stack.pid_file(name).read_text().split()
        pid = int(pid_text)
    except (FileNotFoundError, ValueError):
        return None
    return pid if _start_time(pid) == started else None


def stop(stack: Stack, name: str) -> bool:
    """SIGTERM (SIGINT for PostgreSQL: its fast shutdown), then SIGKILL after STOP_TIMEOUT_S; True if it ran."""
    pid = running_pid(stack, name)
    if pid is not None:
        os.kill(pid, signal.SIGINT if name.startswith("postgres") else signal.SIGTERM)
        try:
            wait_until(lambda: running_pid(stack, name) is None, STOP_TIMEOUT_S, interval=0.1)
        except AssertionError:  # wait_until's deadline: it ignored the signal
            os.kill(pid, signal.SIGKILL)
    stack.pid_file(name).unlink(missing_ok=True)
    return pid is not None


# --- telling the person what happens


@contextmanager
def step(what: str, *, log: Path | None = None) -> Iterator[None]:
    """Print `what ... ok` or `what ... failed` with the log's path and last lines."""
    print(f"local-stack: {what} ...", end=" ", flush=True)
    started = time.monotonic()
    try:
        yield
    except (StackError, RuntimeError, OSError, psycopg.Error, AssertionError) as exc:
        print("failed")
        where = f"\n  its log: {log}\n  last lines:\n" + _indent(read_tail(log, lines=15)) if log else ""
        raise StackError(f"{what} failed: {exc}{where}") from None
    print(f"ok ({time.monotonic() - started:.1f} s)")


def _indent(text: str) -> str:
    return "\n".join(f"    {line}" for line in text.splitlines())


def wait_until_healthy(stack: Stack, name: str, check: Callable[[], tuple[bool, str]]) -> None:
    """Poll a health check until it passes; StackError if the process exits or the deadline passes."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    while True:
        healthy, message = check()
        if healthy:
            return
        if running_pid(stack, name) is None:
            raise StackError(f"{name} exited ({message})")
        if time.monotonic() > deadline:
            raise StackError(f"not healthy after {READY_TIMEOUT_S:.0f} s: {message}")
        time.sleep(0.2)


# --- the parts


def check_reachable(home: Path) -> None:
    """As root, the servers run as `postgres` and `mosquitto`: they must be able to reach `home`."""
    if os.geteuid() != 0:
        return
    for user in ("postgres", "mosquitto"):
        account = service_account(user)
        assert account is not None
        for folder in (home, *home.parents):
            if not _traversable(folder, account):
                raise StackError(
                    f"the servers run as the `{user}` user, which cannot enter {folder}; "
                    "put the stack's state elsewhere, e.g. "
                    "LOCAL_STACK_DIR=/var/tmp/iot-local-stack scripts/local-stack up"
                )


def _traversable(folder: Path, account: pwd.struct_passwd) -> bool:
    if not folder.exists():
        return True  # created by us below a folder checked on its own
    mode = folder.stat()
    if mode.st_uid == account.pw_uid:
        return bool(mode.st_mode & stat.S_IXUSR)
    if mode.st_gid == account.pw_gid:
        return bool(mode.st_mode & stat.S_IXGRP)
    return bool(mode.st_mode & stat.S_IXOTH)


def postgres_server(stack: Stack) -> PostgresServer:
    """The stack's PostgreSQL: durable, passwords required over TCP; with pg_partman's worker when partitioned."""
    # Hourly, pg_partman's default: a day's partition is premade days ahead (PARTITION_PREMAKE).
    settings = partman_bgw_settings("sensors", interval_s=3600) if stack.partitioned else None
    return PostgresServer(stack.home / "postgres", port=stack.ports["postgres"], durable=True, settings=settings)


def start_postgres(stack: Stack) -> None:
    """Start PostgreSQL (initdb on first use); prepare_database() follows, once its standby (if any) is up."""
    server = postgres_server(stack)
    server.start()
    record_pid(stack, "postgres", server.pid)


def prepare_database(server: PostgresServer, stack: Stack) -> None:
    """schema.sql is idempotent: applied on every `up`, so a newer schema reaches an older database."""
    with psycopg.connect(server.socket_url(), autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = 'sensors'").fetchone():
            conn.execute("CREATE DATABASE sensors")
    apply_schema_file(server.socket_url("sensors"))
    with psycopg.connect(server.socket_url("sensors"), autocommit=True) as conn:
        for role, group in LOGIN_ROLES:
            ensure_login_role(conn, role, stack.passwords["db_" + role], group)
    if stack.partitioned:
        # README, "Partitioning": idempotent, so every `up` applies it (and one maintenance run,
        # which is also the retention of reading_revisions and rejected_messages here).
        settings = PartitionSettings.from_env({"DATABASE_URL": server.socket_url("sensors")})
        with connect_owner(settings) as conn:
            partition_readings(conn, settings)


def start_standby(stack: Stack) -> None:
    """Start the standby (a base backup of the primary on first use), then make replication synchronous."""
    primary = postgres_server(stack)
    allow_replication(primary)
    standby = StandbyServer(primary, stack.home / STANDBY, port=stack.ports["postgres_standby"], durable=True)
    standby.start()
    record_pid(stack, STANDBY, standby.pid)
    set_synchronous(primary, True)
    wait_until(lambda: sync_state(primary) == "sync", READY_TIMEOUT_S, interval=0.2, message="a synchronous standby")


def write_accounts(stack: Stack) -> Callable[[Path], None]:
    """The broker's accounts from the stack's passwords, before each start of the broker.

    The first `up` writes the file; later ones bring what the broker saved up
    to date (mosquitto/dynsec.py update()): our accounts get their passwords,
    hashed as dynsec hashes now (a file from before gets its 210,000-iteration
    hashes replaced), and accounts added with mosquitto_ctrl are kept.
    """

    # site-bridge even without `--site`, as in compose: the account is there when a site comes.
    users = ("bridge", "watchdog", "simulator", f"device-{DEVICE_SENSOR_ID}", "site-bridge")
    return write_document({user: stack.passwords[f"mqtt_{user.replace('-', '_')}"] for user in users})


def write_document(passwords: dict[str, str]) -> Callable[[Path], None]:
    """Writes, or brings up to date, a broker's accounts file with these accounts (name -> password)."""

    def write(path: Path) -> None:
        if not path.exists():
            document = dynsec.build_document(passwords)
        else:
            saved = json.loads(path.read_text())
            document = dynsec.update(saved, passwords)
            if document == saved:
                return
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.unlink(missing_ok=True)
        tmp.touch(mode=0o600)  # password hashes: never readable by others, even briefly
        tmp.write_text(json.dumps(document, indent=2))
        tmp.replace(path)

    return write


def start_mosquitto(stack: Stack) -> None:
    """Start Mosquitto with the project's config rendered for this folder and port."""
    server = MosquittoServer(root=stack.home / "mosquitto", port=stack.ports["mqtt"], accounts=write_accounts(stack),
                             ready_account=("watchdog", stack.passwords["mqtt_watchdog"]))
    server.start()
    record_pid(stack, "mosquitto", server.pid)


def start_site(stack: Stack) -> None:
    """The site broker (mosquitto/site.conf): the same device and simulator accounts, bridged as `site-bridge`."""
    passwords = {user: stack.passwords[f"mqtt_{user.replace('-', '_')}"]
                 for user in ("simulator", f"device-{DEVICE_SENSOR_ID}")}
    server = site_broker(central_port=stack.ports["mqtt"], name=SITE_NAME, password=stack.passwords["mqtt_site_bridge"],
                         root=stack.home / SITE, port=stack.ports["site_mqtt"], accounts=write_document(passwords),
                         ready_account=("simulator", stack.passwords["mqtt_simulator"]))
    server.start()
    record_pid(stack, SITE, server.pid)


def worker(stack: Stack, client_id: str) -> WorkerProcess:
    """One bridge worker, logging to .local/logs."""
    env = worker_env(client_id, database_url=stack.db_url("bridge"), mqtt_url=stack.mqtt_url("bridge"),
                     share_group="bridge", health_dir=stack.home / "health")
    return WorkerProcess(client_id, env, log_dir=stack.home / "logs")


def watchdog(stack: Stack) -> WatchdogProcess:
    """The watchdog: alerts go to its log, or to Discord when DISCORD_WEBHOOK_URL is set for `up`."""
    env = {"DATABASE_URL": stack.db_url("watchdog"), "MQTT_URL": stack.mqtt_url("watchdog"),
           "WATCHDOG_BRIDGE_WORKERS": ",".join(WORKERS), "WATCHDOG_CLIENT_ID": "local-watchdog",
           "WATCHDOG_HEALTH_FILE": str(stack.health_file("watchdog")),
           "WATCHDOG_SITE_BRIDGES": SITE_NAME if stack.site else ""}
    if os.environ.get("DISCORD_WEBHOOK_URL"):
        env["DISCORD_WEBHOOK_URL"] = os.environ["DISCORD_WEBHOOK_URL"]
    return WatchdogProcess(env, folder=stack.home / "logs")


# --- health, as `status` shows it


def health(stack: Stack, name: str) -> tuple[bool, str]:
    """(healthy, what it says) for one part."""
    now = datetime.now(UTC)
    if name == "postgres":
        return _database_health(stack)
    if name == STANDBY:
        return _standby_health(stack)
    if name == "mosquitto":
        return _broker_health(stack)
    if name == SITE:
        return _site_health(stack)
    if name == "watchdog":
        return watchdog_health(str(stack.health_file("watchdog")), now=now, max_age_s=WATCHDOG_HEALTH_MAX_AGE_S)
    return bridge_health(str(stack.health_file(name)), now=now, max_age_s=BRIDGE_HEALTH_MAX_AGE_S)


def _database_health(stack: Stack) -> tuple[bool, str]:
    try:
        with psycopg.connect(stack.db_url("watchdog"), connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        return False, f"no connection: {' '.join(str(exc).split())}"
    return True, f"accepting connections on 127.0.0.1:{stack.ports['postgres']}"


def _standby_health(stack: Stack) -> tuple[bool, str]:
    try:
        state = sync_state(postgres_server(stack))
    except psycopg.Error as exc:
        return False, f"the primary does not answer: {' '.join(str(exc).split())}"
    if state is None:
        return False, "not streaming from the primary (COMMITs wait while replication is synchronous)"
    return True, f"streaming from the primary on 127.0.0.1:{stack.ports['postgres_standby']} ({state})"


def _broker_health(stack: Stack) -> tuple[bool, str]:
    try:
        MqttTestClient.from_url(stack.mqtt_url("watchdog")).connect(timeout=3).close()
    except (OSError, MqttTestError) as exc:
        return False, f"no MQTT connection: {exc}"
    return True, f"accepting MQTT clients on 127.0.0.1:{stack.ports['mqtt']} (passwords required)"


def _site_health(stack: Stack) -> tuple[bool, str]:
    """The site accepts devices, and its bridge's link state on the central broker is up."""
    try:
        MqttTestClient.from_url(stack.mqtt_url("simulator", port="site_mqtt")).connect(timeout=3).close()
        with MqttTestClient.from_url(stack.mqtt_url("watchdog")) as central:
            central.subscribe(site_bridge_state_topic(SITE_NAME))
            state = central.wait_for_messages(1, timeout=3)[-1].payload
    except (OSError, MqttTestError) as exc:
        return False, f"not ready: {exc}"
    if state != b"1":
        return False, f"its bridge {SITE_NAME} is not connected to the central broker (state {state!r})"
    return True, f"accepting devices on 127.0.0.1:{stack.ports['site_mqtt']}, bridged to the central broker"


# --- the commands


def up(stack: Stack) -> int:
    """Start whatever is not running, wait until everything is healthy, say what to do next."""
    if all(running_pid(stack, name) for name in stack.parts):
        print("local-stack: the stack is already up; nothing changed (scripts/local-stack status shows its health)")
        return 0
    check_reachable(stack.home)
    servers = (("postgres", "postgres"), ("mosquitto", "mqtt"), *([(STANDBY, "postgres_standby")] * stack.standby),
               *([(SITE, "site_mqtt")] * stack.site))
    for name, port_name in servers:
        if running_pid(stack, name) is None and port_taken(stack.ports[port_name]):
            raise StackError(
                f"port {stack.ports[port_name]} (saved for {name} in {stack.home / 'state.json'}) is taken by "
                f"another program; stop it, or remove the \"{port_name}\" port from state.json to choose a new one"
            )
    started_postgres = running_pid(stack, "postgres") is None
    if started_postgres:
        with step(f"starting PostgreSQL on 127.0.0.1:{stack.ports['postgres']}", log=stack.log("postgres")):
            start_postgres(stack)
    # Before anything is written: a synchronous primary's COMMITs wait for its standby.
    if stack.standby and running_pid(stack, STANDBY) is None:
        with step(f"starting its synchronous standby on 127.0.0.1:{stack.ports['postgres_standby']}",
                  log=stack.log(STANDBY)):
            start_standby(stack)
    if started_postgres:
        with step("applying schema.sql and the login roles", log=stack.log("postgres")):
            prepare_database(postgres_server(stack), stack)
    if running_pid(stack, "mosquitto") is None:
        with step(f"starting Mosquitto on 127.0.0.1:{stack.ports['mqtt']}", log=stack.log("mosquitto")):
            start_mosquitto(stack)
    for client_id in WORKERS:
        if running_pid(stack, client_id) is None:
            with step(f"starting bridge worker {client_id}", log=stack.log(client_id)):
                stack.health_file(client_id).unlink(missing_ok=True)  # an earlier run's is no news of this one
                process = worker(stack, client_id)
                process.start()
                record_pid(stack, client_id, process.pid)
                wait_until_healthy(stack, client_id, functools.partial(health, stack, client_id))
    if stack.site and running_pid(stack, SITE) is None:
        with step(f"starting the site broker on 127.0.0.1:{stack.ports['site_mqtt']}", log=stack.log(SITE)):
            start_site(stack)
            wait_until_healthy(stack, SITE, lambda: health(stack, SITE))
    if running_pid(stack, "watchdog") is None:
        with step("starting the watchdog", log=stack.log("watchdog")):
            stack.health_file("watchdog").unlink(missing_ok=True)
            watcher = watchdog(stack)
            watcher.start()
            record_pid(stack, "watchdog", watcher.pid)
            wait_until_healthy(stack, "watchdog", lambda: health(stack, "watchdog"))
    print_next_steps(stack, write_stack_env(stack))
    return 0


def write_stack_env(stack: Stack) -> Path:
    """What a tester needs to talk to the stack: source it, or pass it to the simulator."""
    lines = {
        "MQTT_URL": stack.mqtt_url("simulator"),
        "MQTT_DEVICE_URL": stack.mqtt_url(f"device-{DEVICE_SENSOR_ID}"),
        "MQTT_DEVICE_SENSOR_ID": str(DEVICE_SENSOR_ID),
        "DATABASE_URL": stack.db_url("reader"),
        "BRIDGE_DATABASE_URL": stack.db_url("bridge"),
        "ADMIN_DATABASE_URL": postgres_server(stack).socket_url("sensors"),
        **({"MQTT_SITE_URL": stack.mqtt_url("simulator", port="site_mqtt")} if stack.site else {}),
    }
    path = stack.home / "stack.env"
    path.write_text("".join(f"{key}={value}\n" for key, value in lines.items()))
    path.chmod(0o600)
    return path


def print_next_steps(stack: Stack, env_file: Path) -> None:
    """The short "what now" after `up`; each `$` line can be pasted as it is (passwords stay in the file)."""
    env = _shown(env_file)
    postgres = f"PostgreSQL on 127.0.0.1:{stack.ports['postgres']}"
    if stack.standby:
        postgres += f" (a synchronous standby on 127.0.0.1:{stack.ports['postgres_standby']})"
    # In the shell's single quotes: close them around "$(date ...)" so the timestamp is now.
    now = "'\"$(date -u +%Y-%m-%dT%H:%M:%SZ)\"'"
    reading = f'{{"sensor_id": {DEVICE_SENSOR_ID}, "timestamp": "{now}", "variable": "temperature", ' \
              '"value": 21.5, "unit": "C"}'
    print(f"""
The stack is up: Mosquitto on 127.0.0.1:{stack.ports['mqtt']}, {postgres},
three bridge workers and the watchdog. Its settings and passwords are in {env}. What now:

  Load the settings into your shell (the passwords are never printed):
  $ set -a; . {env}; set +a
  Publish one reading as device {DEVICE_SENSOR_ID}, the way a sensor would:
  $ mosquitto_pub -L "$MQTT_DEVICE_URL/{reading_topic(DEVICE_SENSOR_ID)}" -q 1 -m '{reading}'
  Look at the stored readings:
  $ {LOOK_AT_READINGS}
  Send 500 readings in 5 s and check that every one arrived:
  $ .venv/bin/python -m simulator --messages 500 --duration 5 --verify
{_site_steps(stack)}  Alerts: the watchdog writes them to {_shown(stack.log('watchdog'))}
  (set DISCORD_WEBHOOK_URL before `up` to post them to a Discord channel).
  Each part's health:
  $ scripts/local-stack status
  Stop everything (data and passwords are kept for the next `up`):
  $ scripts/local-stack down
""")


def _site_steps(stack: Stack) -> str:
    """With `up --site`: how to publish through the site broker, as a site's devices would."""
    if not stack.site:
        return ""
    return f"""  The site broker on 127.0.0.1:{stack.ports['site_mqtt']} bridges to the central one: 50 devices, each
  its own connection, publish through it (MQTT_SITE_URL) and every reading is checked:
  $ MQTT_URL="$MQTT_SITE_URL" .venv/bin/python -m simulator --devices 50 --messages 500 --duration 5 --verify
"""


def _shown(path: Path) -> str:
    """A path relative to the checkout when it is inside it (what the person typed commands from)."""
    try:
        return str(path.relative_to(REPO_ROOT))
    except ValueError:
        return str(path)


def down(stack: Stack) -> int:
    """Stop everything `up` started, by PID, consumers first."""
    running = [name for name in stack.parts if running_pid(stack, name) is not None]
    for name in running:
        with step(f"stopping {name}", log=stack.log(name)):
            stop(stack, name)
    if not running:
        print("local-stack: nothing was running")
    for name in stack.parts:
        stack.pid_file(name).unlink(missing_ok=True)
    return 0


def status(stack: Stack) -> int:
    """Each part's process and health; exit 0 only when every part runs and is healthy."""
    all_well = True
    for name in reversed(stack.parts):
        pid = running_pid(stack, name)
        if pid is None:
            all_well = False
            print(f"{name:16} stopped")
            continue
        healthy, message = health(stack, name)
        all_well &= healthy
        print(f"{name:16} {'healthy  ' if healthy else 'UNHEALTHY'} pid {pid}: {message}")
    return 0 if all_well else 1


def main(argv: list[str] | None = None) -> int:
    """Dispatch up, down or status; a failure is one message, never a traceback."""
    parser = argparse.ArgumentParser(prog="scripts/local-stack", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["up", "down", "status"])
    parser.add_argument("--site", action="store_true",
                        help="up: also a site broker bridged to the central one (kept from then on)")
    parser.add_argument("--partitioned", action="store_true",
                        help="up: readings partitioned by pg_partman, with its background worker (kept from then on)")
    parser.add_argument("--standby", action="store_true",
                        help="up: give PostgreSQL a synchronous standby (kept for every later up)")
    args = parser.parse_args(argv)
    if args.standby and args.command != "up":
        parser.error("--standby goes with up")
    if args.site and args.command != "up":
        parser.error("--site goes with up")
    home = Path(os.environ.get("LOCAL_STACK_DIR") or REPO_ROOT / ".local").resolve()
    try:
        stack = load_stack(home, standby=args.standby)
        if args.partitioned and args.command == "up":
            if running_pid(stack, "postgres") is not None and not stack.partitioned:
                raise StackError("PostgreSQL runs without pg_partman's worker: scripts/local-stack down, then up "
                                 "--partitioned")
            (home / "partitioned").touch()
        if args.site and args.command == "up" and not stack.site:
            if running_pid(stack, "watchdog") is not None:
                raise StackError("the watchdog runs without watching a site: scripts/local-stack down, then up --site")
            (home / "site").touch()
        return {"up": up, "down": down, "status": status}[args.command](stack)
    except StackError as exc:
        print(f"local-stack: {exc}", file=sys.stderr)
        if args.command == "up":
            print("local-stack: what did start keeps running; scripts/local-stack down stops it", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
