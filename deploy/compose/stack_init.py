"""The Docker stack's one-shot `init` service: its secrets and the broker's accounts, on every `up`.

    stack_init.py [apply]              write the secrets, update the broker's accounts (the service's command)
    stack_init.py show [NAME ...]      list the secrets' names, or print the named ones

Each secret is a file in the `secrets` volume (/secrets), e.g. bridge_db_password.
At every `up`, for each one:
- a value set in .env (its variable, e.g. BRIDGE_DB_PASSWORD) is written: .env overrides;
- otherwise the stored value is kept, or generated (secrets.token_urlsafe) the first
  time, so a fresh clone needs no .env and an `up` never changes a password by itself.
The examples' placeholder `change-me` is refused with one line naming the variable, and so
is a broker password too guessable for the broker's fast hash (mosquitto/dynsec.py,
weak_password), whether .env gives it or the volume kept it from an earlier .env.
An empty variable counts as unset: compose passes every variable, empty when .env lacks it.

Each file is readable by root and the one uid that needs it (the image's user for the
services' passwords, Grafana's for its own), never by others. The services read them
through *_FILE variables, so no password is in `docker inspect` or on a command line.

Then the broker's dynamic-security file gets the current passwords (mosquitto/dynsec.py
update(), which keeps what the broker saved there and re-hashes our accounts still at
another iteration count) and the health check its client options file. A running
broker reads the file only at start: see README, "Docker stack".
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import secrets
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT_UID = 0
APP_UID = 10001  # the image's `iot` user (Dockerfile): bridge, watchdog, simulator
BROKER_UID = 1883  # eclipse-mosquitto's `mosquitto` user: it saves the dynamic-security file
GRAFANA_UID = 472  # grafana/grafana's user
TOKEN_BYTES = 24  # 32 URL-safe characters
DYNSEC_FILE = "dynamic-security.json"
HEALTH_FOLDER = "health"  # XDG_CONFIG_HOME of the broker's health check
PGPASS_FILE = "postgres.pgpass"  # libpq's password file for the `migrate` service
# The readings dashboard's data source logs in as `reader`: Grafana (its own uid)
# gets its own copy of that password, so reader_db_password stays the app's alone.
GRAFANA_READER_FILE = "grafana_reader_db_password"
DERIVED_FILES = (PGPASS_FILE, GRAFANA_READER_FILE)  # written from other secrets, never set or shown by name
_UNSAFE = re.compile(r"[\x00-\x1f\x7f]")

Chown = Callable[[Path, int], None]


class InitError(Exception):
    """A value the init refuses; the message names the variable and fits one line."""


@dataclass(frozen=True)
class Secret:
    """One file of the secrets volume: who may read it, which .env variable sets it, which broker account uses it."""

    name: str
    variable: str  # "" for a secret only ever generated
    owner: int
    generated: bool = True  # False: written from .env only, empty when unset (the webhook)
    account: str = ""  # the broker account whose password it holds, if any


SECRETS = (
    Secret("postgres_password", "POSTGRES_PASSWORD", ROOT_UID),
    Secret("bridge_db_password", "BRIDGE_DB_PASSWORD", APP_UID),
    Secret("watchdog_db_password", "WATCHDOG_DB_PASSWORD", APP_UID),
    Secret("reader_db_password", "READER_DB_PASSWORD", APP_UID),
    Secret("mqtt_bridge_password", "MQTT_BRIDGE_PASSWORD", APP_UID, account="bridge"),
    Secret("mqtt_watchdog_password", "MQTT_WATCHDOG_PASSWORD", APP_UID, account="watchdog"),
    Secret("mqtt_simulator_password", "MQTT_SIMULATOR_PASSWORD", APP_UID, account="simulator"),
    Secret("mqtt_admin_password", "MQTT_ADMIN_PASSWORD", ROOT_UID, account="admin"),
    Secret("mqtt_health_password", "", ROOT_UID, account="health"),
    Secret("grafana_admin_password", "GRAFANA_ADMIN_PASSWORD", GRAFANA_UID),
    Secret("discord_webhook_url", "DISCORD_WEBHOOK_URL", APP_UID, generated=False),
)


def device_secret(sensor_id: int) -> Secret:
    """The password file of broker account device-N; only people read it (through `show`)."""
    return Secret(f"mqtt_device_{sensor_id}_password", "", ROOT_UID, account=f"device-{sensor_id}")


def load_dynsec() -> ModuleType:
    """mosquitto/dynsec.py (a script, not a package), beside this folder in the repository and the image."""
    path = Path(__file__).resolve().parents[2] / "mosquitto" / "dynsec.py"
    spec = importlib.util.spec_from_file_location("dynsec", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def wanted(environ: Mapping[str, str], dynsec: ModuleType) -> tuple[list[Secret], dict[str, str]]:
    """This stack's secrets (devices from MQTT_DEVICES included) and the values .env gives; InitError."""
    try:
        devices = dynsec.parse_devices(environ.get("MQTT_DEVICES", ""))
    except ValueError as exc:
        raise InitError(str(exc)) from None
    given: dict[str, str] = {}
    for secret in SECRETS:
        if secret.variable and environ.get(secret.variable):
            check_given(secret.variable, environ[secret.variable], placeholder=dynsec.PLACEHOLDER_PASSWORD)
            given[secret.name] = environ[secret.variable]
    for sensor_id, password in devices.items():
        if password:
            check_given(f"MQTT_DEVICES (device {sensor_id})", password, placeholder=dynsec.PLACEHOLDER_PASSWORD)
            given[device_secret(sensor_id).name] = password
    return [*SECRETS, *(device_secret(n) for n in sorted(devices))], given


def check_given(variable: str, value: str, *, placeholder: str) -> None:
    """InitError naming the variable when a value from .env cannot be used as it is."""
    if value == placeholder:  # dynsec's PLACEHOLDER_PASSWORD, which the old .env.example published
        raise InitError(
            f"{variable}: {placeholder!r} is the old examples' placeholder, which anyone can read in them; "
            "set a real password, or remove the line to have one generated"
        )
    if _UNSAFE.search(value) or value != value.strip():
        # The services strip the files they read, so such a value would not be the one they use.
        raise InitError(f"{variable}: must not start or end with spaces or hold control characters")


def check_broker_passwords(
    chosen: list[Secret], values: Mapping[str, tuple[str, str]], given: Mapping[str, str], *,
    dynsec: ModuleType, folder: Path,
) -> None:
    """InitError naming the variable, or the stored file, of a broker password too guessable for its fast hash."""
    for secret in chosen:
        problem = dynsec.weak_password(values[secret.name][0]) if secret.account else None
        if problem is None:
            continue
        variable = secret.variable or f"MQTT_DEVICES (device {secret.account.removeprefix('device-')})"
        if secret.name in given:
            raise InitError(f"{variable}: {problem}; or remove it from .env to have one generated")
        raise InitError(
            f"{folder / secret.name}, kept from an earlier .env: {problem}; set it as {variable} in .env, or "
            "delete the file to have one generated (then give the new one to the account's clients)"
        )


def resolve(
    chosen: list[Secret], given: Mapping[str, str], stored: Mapping[str, str], *, token: Callable[[], str]
) -> dict[str, tuple[str, str]]:
    """Each secret's value and where it came from: .env, kept from the volume, or generated (or empty)."""
    result: dict[str, tuple[str, str]] = {}
    for secret in chosen:
        if secret.name in given:
            source = "kept" if stored.get(secret.name) == given[secret.name] else "set from .env"
            result[secret.name] = (given[secret.name], source)
        elif not secret.generated:
            empty = "kept" if stored.get(secret.name) == "" else "empty"
            result[secret.name] = ("", "emptied" if stored.get(secret.name) else empty)
        elif stored.get(secret.name):
            result[secret.name] = (stored[secret.name], "kept")
        else:
            result[secret.name] = (token(), "generated")
    return result


def read_stored(folder: Path) -> dict[str, str]:
    """The secrets already in the volume, by file name."""
    if not folder.is_dir():
        return {}
    return {path.name: path.read_text(encoding="utf-8").strip() for path in folder.iterdir() if path.is_file()}


def write_file(path: Path, content: str, *, owner: int, mode: int, chown: Chown) -> bool:
    """Replace `path` atomically unless it holds `content` already; set owner and mode either way. True if written."""
    changed = not path.is_file() or path.read_text(encoding="utf-8") != content
    if changed:
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.unlink(missing_ok=True)
        # Created with its final mode, so the secret is never readable by others, even briefly.
        with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode), "w", encoding="utf-8") as handle:
            handle.write(content)
        chown(tmp, owner)
        tmp.replace(path)
    path.chmod(mode)
    chown(path, owner)
    return changed


def pgpass(password: str) -> str:
    """A libpq password file line that matches any server, database and user."""
    return "*:*:*:*:" + password.replace("\\", "\\\\").replace(":", "\\:") + "\n"


def health_client_options(password: str) -> str:
    """mosquitto_sub's options file ($XDG_CONFIG_HOME/mosquitto_sub, one option per line): off the command line."""
    return f"-u health\n-P {password}\n"


def write_secrets(folder: Path, chosen: list[Secret], values: Mapping[str, tuple[str, str]], *, chown: Chown) -> None:
    """Write each secret (readable by root and its owner only) and the derived files (pgpass, Grafana's copy)."""
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o755)  # the files' own modes guard them; each service needs to open its own
    for secret in chosen:
        write_file(folder / secret.name, values[secret.name][0], owner=secret.owner, mode=0o400, chown=chown)
    write_file(folder / PGPASS_FILE, pgpass(values["postgres_password"][0]), owner=ROOT_UID, mode=0o400, chown=chown)
    write_file(folder / GRAFANA_READER_FILE, values["reader_db_password"][0], owner=GRAFANA_UID, mode=0o400,
               chown=chown)


def read_broker_document(folder: Path) -> dict[str, Any]:
    """The dynamic-security document the broker saved ({} before its first start); InitError if unreadable."""
    path = folder / DYNSEC_FILE
    if not path.exists():
        return {}
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise InitError(f"{path} is not valid JSON ({exc}); fix it, or delete it to start from our accounts") from None
    if not isinstance(document, dict):
        raise InitError(f"{path} holds no JSON object; fix it, or delete it to start from our accounts")
    return document


def write_broker_files(folder: Path, existing: dict[str, Any], document: dict[str, Any], health_password: str,
                       *, chown: Chown) -> bool:
    """Write the updated dynamic-security file (if it changed) and the health check's options; True if changed."""
    folder.mkdir(parents=True, exist_ok=True)
    chown(folder, BROKER_UID)  # the broker saves the file by writing a new one beside it
    path = folder / DYNSEC_FILE
    changed = document != existing or not path.exists()
    if changed:
        write_file(path, json.dumps(document, indent=2), owner=BROKER_UID, mode=0o600, chown=chown)
    else:
        chown(path, BROKER_UID)
    health = folder / HEALTH_FOLDER
    health.mkdir(mode=0o700, exist_ok=True)
    write_file(health / "mosquitto_sub", health_client_options(health_password), owner=ROOT_UID, mode=0o600,
               chown=chown)
    return changed


def apply(
    environ: Mapping[str, str],
    *,
    secrets_folder: Path,
    dynsec_folder: Path,
    iterations: int | None = None,
    chown: Chown,
    token: Callable[[], str] = lambda: secrets.token_urlsafe(TOKEN_BYTES),
    report: Callable[[str], None] = print,
) -> None:
    """Resolve and write every secret, then update the broker's accounts; InitError before writing anything."""
    dynsec = load_dynsec()
    chosen, given = wanted(environ, dynsec)
    existing = read_broker_document(dynsec_folder)
    values = resolve(chosen, given, read_stored(secrets_folder), token=token)
    check_broker_passwords(chosen, values, given, dynsec=dynsec, folder=secrets_folder)
    passwords = {secret.account: values[secret.name][0] for secret in chosen if secret.account}
    share_group = environ.get("BRIDGE_SHARE_GROUP") or "bridge"
    document = dynsec.update(existing, passwords, share_group=share_group, iterations=iterations or dynsec.ITERATIONS)

    write_secrets(secrets_folder, chosen, values, chown=chown)
    for name, (_, source) in values.items():
        if source != "kept":
            report(f"init: {name}: {source}")
    report(f"init: {sum(source == 'kept' for _, source in values.values())} secrets kept in {secrets_folder}")
    changed = write_broker_files(dynsec_folder, existing, document, passwords["health"], chown=chown)
    state = "updated (a running broker loads them when restarted)" if changed else "unchanged"
    report(f"init: broker accounts {', '.join(passwords)}: {state}")


def show(folder: Path, names: list[str], *, out: Callable[[str], None] = print) -> int:
    """Print the named secrets, one per line, or list the names; exit 1 naming an unknown one."""
    stored = read_stored(folder)
    if not names:
        for name in sorted(stored):
            if name not in DERIVED_FILES and not name.startswith("."):
                out(name)
        return 0
    unknown = [name for name in names if name not in stored]
    if unknown:
        print(f"show: no secret named {', '.join(unknown)} in {folder}; `show` alone lists them", file=sys.stderr)
        return 1
    for name in names:
        out(stored[name])
    return 0


def os_chown(path: Path, uid: int) -> None:
    """chown to uid:uid when running as root (the service); as anyone else (tests, a dry run) skip it."""
    if os.geteuid() == 0:
        os.chown(path, uid, uid)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `init` service; exit 2 with one line naming the variable on a refused value."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", nargs="?", default="apply", choices=["apply", "show"])
    parser.add_argument("names", nargs="*", help="with show: the secrets to print")
    parser.add_argument("--secrets", type=Path, default=Path("/secrets"), help="the secrets volume")
    parser.add_argument("--dynsec", type=Path, default=Path("/mosquitto/dynsec"), help="the broker's accounts volume")
    parser.add_argument("--iterations", type=int, default=None,
                        help="PBKDF2 iterations of our accounts' hashes (default: mosquitto/dynsec.py's, 1)")
    args = parser.parse_args(argv)
    if args.command == "show":
        return show(args.secrets, args.names)
    if args.names:
        parser.error(f"unrecognized arguments: {' '.join(args.names)}")
    try:
        apply(os.environ, secrets_folder=args.secrets, dynsec_folder=args.dynsec, iterations=args.iterations,
              chown=os_chown)
    except InitError as exc:
        print(f"init: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
