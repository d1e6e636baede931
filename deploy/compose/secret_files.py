"""Where the compose stack's secrets are written, and who can read each: the store and each service's own volume.

Part of the `init` service (stack_init.py). The store (the `secrets` volume) holds
every secret, root's alone: init, broker-sync and `init show` read it. Each service
mounts its own volume, secrets-<service>, at /run/secrets, holding copies of its own
secrets and of no other's (SHARES), readable by root and the uid the service runs as.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

ROOT_UID = 0
APP_UID = 10001  # the image's `iot` user (Dockerfile): bridge, watchdog, simulator
GRAFANA_UID = 472  # grafana/grafana's user
PGPASS_FILE = "postgres.pgpass"  # libpq's password file for the `migrate` service
# Files the previous layout kept in the store beside the secrets; removed from it.
OLD_DERIVED_FILES = ("postgres.pgpass", "grafana_reader_db_password")

Chown = Callable[[Path, int], None]


@dataclass(frozen=True)
class Share:
    """A service's own secrets volume (secrets-<service>, at /run/secrets there): its files and the uid reading them."""

    service: str
    owner: int
    files: tuple[str, ...]


# What each service may read; docker-compose.yml mounts secrets-<service> in that service
# alone (the three bridge workers share theirs). tests/unit/test_compose.py checks both.
SHARES = (
    Share("bridge", APP_UID, ("bridge_db_password", "mqtt_bridge_password")),
    Share("watchdog", APP_UID, ("watchdog_db_password", "mqtt_watchdog_password", "discord_webhook_url")),
    Share("simulator", APP_UID, ("reader_db_password", "mqtt_simulator_password")),
    Share("postgres", ROOT_UID, ("postgres_password",)),  # the image's entrypoint reads it as root
    # psql sets the login roles' passwords; the owner's comes as a libpq password file.
    Share("migrate", ROOT_UID, (PGPASS_FILE, "bridge_db_password", "watchdog_db_password", "reader_db_password")),
    Share("grafana", GRAFANA_UID, ("grafana_admin_password", "reader_db_password")),  # the readings data source
    Share("site", ROOT_UID, ("mqtt_site_bridge_password",)),  # site-start.sh writes it into the config as root
)


def read_stored(folder: Path) -> dict[str, str]:
    """The secrets already in the volume, by file name."""
    if not folder.is_dir():
        return {}
    return {path.name: path.read_text(encoding="utf-8").strip() for path in folder.iterdir()
            if path.is_file() and not path.name.startswith(".") and path.name not in OLD_DERIVED_FILES}


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


def write_secrets(folder: Path, names: list[str], values: Mapping[str, tuple[str, str]], *, chown: Chown) -> None:
    """Write each secret into the store, root's alone (init, broker-sync and `show` read it)."""
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o700)
    chown(folder, ROOT_UID)
    for name in names:
        write_file(folder / name, values[name][0], owner=ROOT_UID, mode=0o400, chown=chown)
    for name in OLD_DERIVED_FILES:
        (folder / name).unlink(missing_ok=True)


def share_contents(share: Share, values: Mapping[str, tuple[str, str]]) -> dict[str, str]:
    """The files of a service's volume: its secrets, and the owner's pgpass line for `migrate`."""
    return {name: pgpass(values["postgres_password"][0]) if name == PGPASS_FILE else values[name][0]
            for name in share.files}


def write_shares(root: Path, values: Mapping[str, tuple[str, str]], *, chown: Chown) -> None:
    """Copy each service's secrets into its own volume (root/<service>), readable by root and its uid only."""
    for share in SHARES:
        folder = root / share.service
        folder.mkdir(parents=True, exist_ok=True)
        folder.chmod(0o755)  # the files' own modes guard them
        contents = share_contents(share, values)
        for name, content in contents.items():
            write_file(folder / name, content, owner=share.owner, mode=0o400, chown=chown)
        for path in folder.iterdir():  # one this service may no longer read (SHARES changed)
            if path.is_file() and path.name not in contents:
                path.unlink()
