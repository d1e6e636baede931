"""The Docker stack's one-shot `init` service: its secrets and the broker's accounts, on every `up`.

    stack_init.py [apply]              write the secrets, update the broker's accounts (the service's command)
    stack_init.py show [NAME ...]      list the secrets' names, or print the named ones
    stack_init.py sync-broker          bring the running broker's accounts to the file (the broker-sync service)

Each secret is a file in the `secrets` volume (/secrets, root's alone), e.g. bridge_db_password.
At every `up`, for each one:
- a value set in .env (its variable, e.g. BRIDGE_DB_PASSWORD) is written: .env overrides;
- otherwise the stored value is kept, or generated (secrets.token_urlsafe) the first
  time, so a fresh clone needs no .env and an `up` never changes a password by itself.
An empty variable counts as unset: compose passes every variable, empty when .env lacks it.
So does the old examples' placeholder `change-me` (an upgrade from the release whose
.env.example shipped it): it is reported and ignored, never used, except for the
owner password of a database created with it, the only one that database accepts.
A broker password too guessable for the broker's cheap hash (mosquitto/dynsec.py,
weak_password) is refused with one line naming the variable, whether .env gives it or
the store kept it from an earlier .env.

Each service gets copies of its own secrets, and of no other, in its own volume
(SHARES, /shares/<service> here, /run/secrets in the service), readable by root and
the uid that service runs as. The services read them through *_FILE variables, so no
password is in `docker inspect` or on a command line.

Then the broker's dynamic-security file gets the current passwords (mosquitto/dynsec.py
update(), which keeps what the broker saved there and re-hashes our accounts still hashed
at another iteration count, docs/security.md), the health check its client
options file, and broker-sync its plan (deploy/compose/broker_sync.py), with which it
brings the running broker up to date: a broker reads the file only when it starts.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import secrets
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

from iotcommon.settings import PLACEHOLDER_PASSWORD
from mosquitto import dynsec


def load_module(relative: str) -> ModuleType:
    """One of this folder's scripts (not a package), by its path from the repository's (and the image's) root."""
    path = Path(__file__).resolve().parents[2] / relative
    spec = importlib.util.spec_from_file_location(path.stem, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


# This folder's other parts of the init (scripts too: the image runs them from /app/deploy/compose).
values = load_module("deploy/compose/secret_values.py")  # which value each secret gets
files = load_module("deploy/compose/secret_files.py")  # where they are written, who reads each
broker_sync = load_module("deploy/compose/broker_sync.py")  # the running broker's accounts
InitError = values.InitError
SECRETS = values.SECRETS
ROOT_UID = files.ROOT_UID
BROKER_UID = 1883  # eclipse-mosquitto's `mosquitto` user: it saves the dynamic-security file
TOKEN_BYTES = 24  # 32 URL-safe characters
DYNSEC_FILE = "dynamic-security.json"
HEALTH_FOLDER = "health"  # XDG_CONFIG_HOME of the broker's health check
PG_VERSION = "PG_VERSION"  # in a data folder the postgres image has initialised

Chown = Callable[[Path, int], None]


def health_client_options(password: str) -> str:
    """mosquitto_sub's options file ($XDG_CONFIG_HOME/mosquitto_sub, one option per line): off the command line."""
    return f"-u health\n-P {password}\n"


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
        files.write_file(path, json.dumps(document, indent=2), owner=BROKER_UID, mode=0o600, chown=chown)
    else:
        chown(path, BROKER_UID)
    health = folder / HEALTH_FOLDER
    health.mkdir(mode=0o700, exist_ok=True)
    files.write_file(health / "mosquitto_sub", health_client_options(health_password), owner=ROOT_UID, mode=0o600,
                     chown=chown)
    return changed


def check_broker_passwords(want: Any, resolved: Mapping[str, tuple[str, str]], *, folder: Path) -> None:
    """InitError naming the variable, or the stored file, of a broker password too guessable for its cheap hash."""
    for secret in want.chosen:
        problem = dynsec.weak_password(resolved[secret.name][0]) if secret.account else None
        if problem is None:
            continue
        variable = secret.variable or f"MQTT_DEVICES (device {secret.account.removeprefix('device-')})"
        if secret.name in want.given:
            raise InitError(f"{variable}: {problem}; or remove it from .env to have one generated")
        raise InitError(
            f"{folder / secret.name}, kept from an earlier .env: {problem}; set it as {variable} in .env, or "
            "delete the file to have one generated (then give the new one to the account's clients)"
        )


def apply(
    environ: Mapping[str, str],
    *,
    secrets_folder: Path,
    shares_folder: Path,
    dynsec_folder: Path,
    database_folder: Path,
    iterations: int | None = None,
    chown: Chown,
    token: Callable[[], str] = lambda: secrets.token_urlsafe(TOKEN_BYTES),
    report: Callable[[str], None] = print,
) -> None:
    """Resolve and write every secret and each service's copies, then the broker's accounts; InitError first."""
    want = values.wanted(environ)
    existing = read_broker_document(dynsec_folder)
    stored = files.read_stored(secrets_folder)
    resolved = values.resolve(want, stored, token=token, database_exists=(database_folder / PG_VERSION).exists(),
                            placeholder=PLACEHOLDER_PASSWORD)
    check_broker_passwords(want, resolved, folder=secrets_folder)
    passwords = {secret.account: resolved[secret.name][0] for secret in want.chosen if secret.account}
    share_group = environ.get("BRIDGE_SHARE_GROUP") or "bridge"
    document = dynsec.update(existing, passwords, share_group=share_group,
                             iterations=iterations or dynsec.ITERATIONS)
    plan = broker_sync.next_plan(
        broker_sync.read_plan(secrets_folder), existing, document,
        accounts={secret.account: secret.name for secret in want.chosen if secret.account},
        roles=dynsec.account_roles(passwords, share_group),
        stored_admin_password=stored.get("mqtt_admin_password", ""),
    )

    files.write_secrets(secrets_folder, [secret.name for secret in want.chosen], resolved, chown=chown)
    files.write_shares(shares_folder, resolved, chown=chown)
    broker_sync.write_plan(secrets_folder, plan, chown=chown)
    for name, (_, source) in resolved.items():
        if source != "kept":
            report(f"init: {name}: {source}")
    for line in values.placeholder_notes(want, resolved, PLACEHOLDER_PASSWORD):
        report(line)
    report(f"init: {sum(source == 'kept' for _, source in resolved.values())} secrets kept in {secrets_folder}")
    changed = write_broker_files(dynsec_folder, existing, document, passwords["health"], chown=chown)
    state = "updated (broker-sync applies them to a running broker)" if changed else "unchanged"
    report(f"init: broker accounts {', '.join(passwords)}: {state}")


def show(folder: Path, names: list[str], *, out: Callable[[str], None] = print) -> int:
    """Print the named secrets, one per line, or list the names; exit 1 naming an unknown one."""
    stored = files.read_stored(folder)
    if not names:
        for name in sorted(stored):
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
    """Entry point of `init` and `broker-sync`; exit 2 with one line naming the variable on a refused value."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", nargs="?", default="apply", choices=["apply", "show", "sync-broker"])
    parser.add_argument("names", nargs="*", help="with show: the secrets to print")
    parser.add_argument("--secrets", type=Path, default=Path("/secrets"), help="the secrets volume (the store)")
    parser.add_argument("--shares", type=Path, default=Path("/shares"), help="the services' own secrets volumes")
    parser.add_argument("--dynsec", type=Path, default=Path("/mosquitto/dynsec"), help="the broker's accounts volume")
    parser.add_argument("--database", type=Path, default=Path("/state/postgres-data"),
                        help="PostgreSQL's data volume (read only: whether a database exists)")
    parser.add_argument("--iterations", type=int, default=None,
                        help="PBKDF2 iterations of our accounts' hashes (default: mosquitto/dynsec.py's, 1)")
    parser.add_argument("--broker", default="mosquitto:1883", help="with sync-broker: the broker's host:port")
    args = parser.parse_args(argv)
    if args.command == "show":
        return show(args.secrets, args.names)
    if args.names:
        parser.error(f"unrecognized arguments: {' '.join(args.names)}")
    if args.command == "sync-broker":
        host, _, port = args.broker.rpartition(":")
        link = load_module("deploy/compose/broker_link.py")  # paho: only this command reaches the broker
        return int(broker_sync.main(args.secrets, link=link.PahoLink(host, int(port))))
    try:
        apply(os.environ, secrets_folder=args.secrets, shares_folder=args.shares, dynsec_folder=args.dynsec,
              database_folder=args.database, iterations=args.iterations, chown=os_chown)
    except values.InitError as exc:
        print(f"init: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
