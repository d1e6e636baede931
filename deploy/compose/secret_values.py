"""Which value each secret of the compose stack gets: from .env, kept from the store, or generated.

Part of the `init` service (stack_init.py). An empty variable counts as unset: compose
passes every variable, empty when .env lacks it. So does `change-me`, the placeholder
the examples of the release before the secrets volume shipped: an upgrade keeps its
.env, so the placeholder is reported and ignored, never used as a password; except the
owner password of a database created with it, the one password that database accepts.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from iotcommon.settings import PLACEHOLDER_PASSWORD
from mosquitto import dynsec

# Grafana expands $NAME and ${NAME} in what it reads for these (provisioning, settings).
GRAFANA_EXPANDS = ("READER_DB_PASSWORD", "GRAFANA_ADMIN_PASSWORD")
OWNER_SECRET = "postgres_password"  # noqa: S105 (a file name, not a password)
_UNSAFE = re.compile(r"[\x00-\x1f\x7f]")


class InitError(Exception):
    """A value the init refuses; the message names the variable and fits one line."""


@dataclass(frozen=True)
class Secret:
    """One file of the secrets volume: which .env variable sets it, which broker account uses it."""

    name: str
    variable: str  # "" for a secret only ever generated
    generated: bool = True  # False: written from .env only, empty when unset (the webhook)
    account: str = ""  # the broker account whose password it holds, if any


SECRETS = (
    Secret("postgres_password", "POSTGRES_PASSWORD"),
    Secret("bridge_db_password", "BRIDGE_DB_PASSWORD"),
    Secret("watchdog_db_password", "WATCHDOG_DB_PASSWORD"),
    Secret("reader_db_password", "READER_DB_PASSWORD"),
    Secret("mqtt_bridge_password", "MQTT_BRIDGE_PASSWORD", account="bridge"),
    Secret("mqtt_watchdog_password", "MQTT_WATCHDOG_PASSWORD", account="watchdog"),
    Secret("mqtt_simulator_password", "MQTT_SIMULATOR_PASSWORD", account="simulator"),
    Secret("mqtt_admin_password", "MQTT_ADMIN_PASSWORD", account="admin"),
    Secret("mqtt_health_password", "", account="health"),
    # The bridge of the compose profile `site` (mosquitto/site.conf) logs in with it.
    Secret("mqtt_site_bridge_password", "MQTT_SITE_BRIDGE_PASSWORD", account="site-bridge"),
    Secret("grafana_admin_password", "GRAFANA_ADMIN_PASSWORD"),
    Secret("discord_webhook_url", "DISCORD_WEBHOOK_URL", generated=False),
)


def device_secret(sensor_id: int) -> Secret:
    """The password file of broker account device-N; only people read it (through `show`)."""
    return Secret(f"mqtt_device_{sensor_id}_password", "", account=f"device-{sensor_id}")


@dataclass(frozen=True)
class Wanted:
    """This stack's secrets, the values .env gives, and the secrets whose .env value was the old placeholder."""

    chosen: list[Secret]
    given: dict[str, str]
    placeholders: dict[str, str]  # secret name -> the variable that held the placeholder


def wanted(environ: Mapping[str, str]) -> Wanted:
    """This stack's secrets (devices from MQTT_DEVICES included) and what .env says of them; InitError."""
    try:
        devices = dynsec.parse_devices(environ.get("MQTT_DEVICES", ""))
    except ValueError as exc:
        raise InitError(str(exc)) from None
    entries = [(secret, secret.variable, environ.get(secret.variable, "")) for secret in SECRETS if secret.variable]
    entries += [(device_secret(n), f"MQTT_DEVICES (device {n})", password or "") for n, password in devices.items()]
    given: dict[str, str] = {}
    placeholders: dict[str, str] = {}
    for secret, variable, value in entries:
        if value == PLACEHOLDER_PASSWORD:  # what the old .env.example shipped: never a password
            placeholders[secret.name] = variable
        elif value:
            check_given(variable, value)
            given[secret.name] = value
    return Wanted([*SECRETS, *(device_secret(n) for n in sorted(devices))], given, placeholders)


def check_given(variable: str, value: str) -> None:
    """InitError naming the variable when a value from .env cannot be used as it is."""
    if _UNSAFE.search(value) or value != value.strip():
        # The services strip the files they read, so such a value would not be the one they use.
        raise InitError(f"{variable}: must not start or end with spaces or hold control characters")
    if variable in GRAFANA_EXPANDS and "$" in value:
        raise InitError(f"{variable}: must not hold '$': Grafana reads this password and expands $NAME in it")


def resolve(
    want: Wanted, stored: Mapping[str, str], *, token: Callable[[], str], database_exists: bool, placeholder: str,
) -> dict[str, tuple[str, str]]:
    """Each secret's value and where it came from: .env, kept from the volume, or generated (or empty)."""
    result: dict[str, tuple[str, str]] = {}
    for secret in want.chosen:
        if secret.name in want.given:
            source = "kept" if stored.get(secret.name) == want.given[secret.name] else "set from .env"
            result[secret.name] = (want.given[secret.name], source)
        elif not secret.generated:
            empty = "kept" if stored.get(secret.name) == "" else "empty"
            result[secret.name] = ("", "emptied" if stored.get(secret.name) else empty)
        elif stored.get(secret.name):
            result[secret.name] = (stored[secret.name], "kept")
        elif secret.name == OWNER_SECRET and database_exists:
            result[secret.name] = (unknown_owner_password(want, placeholder), "kept: the database was created with it")
        else:
            result[secret.name] = (token(), "generated")
    return result


def unknown_owner_password(want: Wanted, placeholder: str) -> str:
    """The owner password of a database this volume has no record of: the old .env's placeholder, or InitError.

    The postgres image sets it once, when it creates the database; a generated one
    would be unknown to it, and `migrate` could not log in. The release before the
    secrets volume took it from .env, whose example shipped the placeholder.
    """
    if OWNER_SECRET in want.placeholders:
        return placeholder
    raise InitError(
        "POSTGRES_PASSWORD: the database volume exists, but no owner password is stored for it; set "
        "POSTGRES_PASSWORD in .env to the password the database was created with (README, \"Upgrading\")"
    )


def placeholder_notes(want: Wanted, values: Mapping[str, tuple[str, str]], placeholder: str) -> Iterable[str]:
    """One line per placeholder in .env: what was done instead, and what the operator does now."""
    for name, variable in want.placeholders.items():
        value, source = values[name]
        if value == placeholder:
            continue  # said below, at every up while it lasts
        done = "the stored password is kept" if source == "kept" else "a new password was generated"
        yield f"init: {variable}={placeholder} in .env ignored (the old examples' placeholder): {done}; " \
              "delete that line from .env"
    if values[OWNER_SECRET][0] == placeholder:
        yield (f"init: WARNING: the database owner's password is {placeholder!r}, the old examples' placeholder, "
               "the one this database was created with: change it (README, \"Upgrading\")")
