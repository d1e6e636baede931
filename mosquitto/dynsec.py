"""Generate Mosquitto's dynamic-security file from passwords in the environment.

Run before the broker's first start (scripts/local-stack does it; the compose
stack's `init` service uses update() instead, on every `up`). The broker then
owns the file and saves runtime changes (`mosquitto_ctrl dynsec ...`) into it,
so an existing file is left alone unless --force is given.

Why the dynamic security plugin and not `acl_file`: the plain ACL file never
checks SUBSCRIBE, so any device could join `$share/bridge/...` and silently
take its share of every reading.

Passwords are hashed with PBKDF2-HMAC-SHA512 at one iteration, on purpose.
Mosquitto checks a password on its only event loop, so each CONNECT naming a
known account, wrong password or right, costs the whole broker one hash: at
210,000 iterations (~0.13 s) 150 wrong passwords stalled ingestion for 19 s.
Stretching only protects a guessable password; ours are random (192 bits when
generated, MIN_PASSWORD_BITS at least when given), beyond guessing even at one
hash a guess (NIST SP 800-63B 5.1.2.2: no key derivation needed above 112
bits). docs/security.md has the reasoning and the figures; update() re-hashes
our accounts still hashed at another count.

Environment:
    MQTT_BRIDGE_PASSWORD, MQTT_WATCHDOG_PASSWORD, MQTT_SIMULATOR_PASSWORD  (required)
    MQTT_ADMIN_PASSWORD     optional: an `admin` account for mosquitto_ctrl
    MQTT_HEALTH_PASSWORD    optional: a `health` account that may only read $SYS/broker/uptime
    MQTT_SITE_BRIDGE_PASSWORD  optional: a `site-bridge` account for site brokers' bridges (mosquitto/site.conf)
    MQTT_DEVICES            optional: "7:password,8:password" -> accounts device-7, device-8
    BRIDGE_SHARE_GROUP      the bridge's share group (default: bridge)

Usage: python -m mosquitto.dynsec OUTPUT.json [--force] [--iterations N]   (with the project installed)
Exit 2 naming the variable when a password is missing, the placeholder, or too guessable.
"""

from __future__ import annotations

import argparse
import base64
import copy
import hashlib
import hmac
import json
import math
import os
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from iotcommon.contract import (
    PROBE_FILTER,
    READINGS_FILTER,
    SITE_BRIDGE_STATES,
    WORKER_TOPICS,
    reading_topic,
    shared_subscription,
)
from iotcommon.settings import PLACEHOLDER_PASSWORD

# PBKDF2 iterations of our accounts' hashes: one (see above). Mosquitto 2.0's
# plugin accepts any count from 1 and checks with the count stored per account.
ITERATIONS = 1
SALT_BYTES = 12  # the plugin refuses any other salt length (2.0.x)
# What a broker password must carry at least, by password_bits(): a hash that
# costs one HMAC must not be worth guessing. 128 bits = 22 random URL-safe characters.
MIN_PASSWORD_BITS = 128
GENERATE_HINT = "python3 -c 'import secrets; print(secrets.token_urlsafe(24))'"
# Sizes of the character classes password_bits() credits: a-z, A-Z, 0-9, anything else.
_CLASSES: tuple[tuple[int, str], ...] = (
    (26, "abcdefghijklmnopqrstuvwxyz"), (26, "ABCDEFGHIJKLMNOPQRSTUVWXYZ"), (10, "0123456789"),
)
_OTHER_CLASS = 33  # printable ASCII punctuation and space
HEALTH_TOPIC = "$SYS/broker/uptime"  # retained by the broker, so one read answers at once
# Account name -> the variable holding its password; each account has the role of its name.
REQUIRED_ACCOUNTS = {
    "bridge": "MQTT_BRIDGE_PASSWORD",
    "watchdog": "MQTT_WATCHDOG_PASSWORD",
    "simulator": "MQTT_SIMULATOR_PASSWORD",
}
OPTIONAL_ACCOUNTS = {
    "admin": "MQTT_ADMIN_PASSWORD",
    "health": "MQTT_HEALTH_PASSWORD",
    "site-bridge": "MQTT_SITE_BRIDGE_PASSWORD",
}


def acl(acltype: str, topic: str, *, allow: bool = True) -> dict[str, Any]:
    """One ACL entry of a role."""
    return {"acltype": acltype, "topic": topic, "priority": 0, "allow": allow}


def read_acls(*topics: str) -> list[dict[str, Any]]:
    """Subscribe and receive, granted together: one without the other is useless or a leak."""
    return [entry for topic in topics for entry in (acl("subscribePattern", topic), acl("publishClientReceive", topic))]


def roles(share_group: str, device_ids: list[int]) -> list[dict[str, Any]]:
    """The roles of the system; see README, "Broker accounts"."""
    return [
        {"rolename": "bridge", "acls": [
            acl("subscribePattern", shared_subscription(share_group, READINGS_FILTER)),
            acl("publishClientReceive", READINGS_FILTER),
            acl("publishClientSend", WORKER_TOPICS),
        ]},
        {"rolename": "watchdog", "acls": [
            *read_acls(WORKER_TOPICS, "$SYS/#", PROBE_FILTER),
            acl("publishClientSend", PROBE_FILTER),
        ]},
        {"rolename": "simulator", "acls": [acl("publishClientSend", READINGS_FILTER)]},
        {"rolename": "admin", "acls": [
            *read_acls("$CONTROL/dynamic-security/#"),
            acl("publishClientSend", "$CONTROL/dynamic-security/#"),
        ]},
        # The compose stack's broker health check; nothing else.
        {"rolename": "health", "acls": read_acls(HEALTH_TOPIC)},
        # A site broker's bridge: forwards its devices' readings (the site checked
        # each device's own topic) and reports its link on SITE_BRIDGE_STATES, named
        # by its remote_clientid; reads nothing. The 2.0 plugin substitutes no %c in
        # ACLs, so the role grants every site's topic: sites sharing the account trust each other.
        {"rolename": "site-bridge", "acls": [
            acl("publishClientSend", READINGS_FILTER),
            acl("publishClientSend", SITE_BRIDGE_STATES),
        ]},
        *(device_role(n) for n in device_ids),
    ]


def device_role(sensor_id: int) -> dict[str, Any]:
    """The role of account device-<sensor_id>: it may publish its own sensor's readings, nothing else."""
    return {"rolename": f"device-{sensor_id}", "acls": [acl("publishClientSend", reading_topic(sensor_id))]}


def client(username: str, password: str, role: str, *, iterations: int, salt: bytes) -> dict[str, Any]:
    """A client entry with its PBKDF2-SHA512 hash, in the plugin's format."""
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations, 64)
    return {
        "username": username,
        "password": base64.b64encode(digest).decode(),
        "salt": base64.b64encode(salt).decode(),
        "iterations": iterations,
        "roles": [{"rolename": role}],
    }


def password_matches(entry: dict[str, Any], password: str) -> bool:
    """Whether a client entry's hash is that of `password` (so it need not change)."""
    try:
        salt = base64.b64decode(entry["salt"])
        stored = base64.b64decode(entry["password"])
        digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, int(entry["iterations"]), len(stored))
    except (KeyError, TypeError, ValueError):
        return False
    return hmac.compare_digest(digest, stored)


def parse_devices(text: str) -> dict[int, str | None]:
    """MQTT_DEVICES "7:pw,8" -> {7: "pw", 8: None} (None: no password given); ValueError names the bad entry."""
    devices: dict[int, str | None] = {}
    for entry in filter(None, (part.strip() for part in text.split(","))):
        sensor, sep, password = entry.partition(":")
        if not sensor.isdigit() or (sep and not password) or not 1 <= int(sensor) <= 2_147_483_647:
            raise ValueError(f"MQTT_DEVICES: expected <sensor_id> or <sensor_id>:<password>, got {sensor!r}:...")
        devices[int(sensor)] = password if sep else None
    return devices


def password_bits(password: str) -> float:
    """The most entropy a password can hold: length x log2(alphabet of the character classes it uses).

    Generous on purpose (it takes every character as random): it cannot tell
    a random value from a phrase, but it refuses anything short.
    """
    alphabet = sum(size for size, members in _CLASSES if any(c in members for c in password))
    if any(not any(c in members for _, members in _CLASSES) for c in password):
        alphabet += _OTHER_CLASS
    return len(password) * math.log2(alphabet) if alphabet else 0.0


def weak_password(password: str) -> str | None:
    """Why a broker password must not be hashed as ours are (cheaply), or None if it may."""
    bits = password_bits(password)
    if bits >= MIN_PASSWORD_BITS:
        return None
    return (
        f"too guessable for the broker's fast password hash: {len(password)} characters of these kinds hold at "
        f"most {bits:.0f} bits, {MIN_PASSWORD_BITS} needed (README, \"Broker accounts\"); use a random value, "
        f"e.g. from `{GENERATE_HINT}`"
    )


def check_password(variable: str, password: str) -> None:
    """ValueError naming the variable when the password is the examples' placeholder or too guessable."""
    if password == PLACEHOLDER_PASSWORD:
        raise ValueError(
            f"{variable}: {PLACEHOLDER_PASSWORD!r} is the examples' placeholder, which anyone who read them "
            "knows; set a real password"
        )
    problem = weak_password(password)
    if problem:
        raise ValueError(f"{variable}: {problem}")


def accounts(environ: Mapping[str, str]) -> dict[str, str]:
    """Account name -> password, from the environment; ValueError names a missing or placeholder variable."""
    missing = [var for var in REQUIRED_ACCOUNTS.values() if not environ.get(var)]
    if missing:
        raise ValueError(f"{', '.join(missing)} must be set (see .env.example)")
    variables = {**REQUIRED_ACCOUNTS, **{user: var for user, var in OPTIONAL_ACCOUNTS.items() if environ.get(var)}}
    result = {user: environ[var] for user, var in variables.items()}
    for n, password in sorted(parse_devices(environ.get("MQTT_DEVICES", "")).items()):
        if password is None:
            raise ValueError(f"MQTT_DEVICES: device {n} has no password (<sensor_id>:<password>)")
        result[f"device-{n}"] = password
    for user, password in result.items():
        check_password(variables.get(user, "MQTT_DEVICES"), password)
    return result


def build_document(
    passwords: Mapping[str, str],
    *,
    share_group: str = "bridge",
    iterations: int = ITERATIONS,
    salt: Callable[[], bytes] = lambda: os.urandom(SALT_BYTES),
) -> dict[str, Any]:
    """The whole dynamic-security document for accounts (name -> password); each gets the role of its name."""
    return {
        "defaultACLAccess": default_acl_access(),
        "clients": [
            client(user, password, user, iterations=iterations, salt=salt()) for user, password in passwords.items()
        ],
        "groups": [],
        "roles": account_roles(passwords, share_group),
    }


def default_acl_access() -> dict[str, bool]:
    """Everything not granted by a role is refused, unsubscribing aside."""
    return {"publishClientSend": False, "publishClientReceive": False, "subscribe": False, "unsubscribe": True}


def account_roles(passwords: Mapping[str, str], share_group: str) -> list[dict[str, Any]]:
    """The roles of the given accounts (each account's role has its name)."""
    devices = sorted(int(user.removeprefix("device-")) for user in passwords if user.startswith("device-"))
    return [role for role in roles(share_group, devices) if role["rolename"] in passwords]


def build(
    environ: Mapping[str, str],
    *,
    iterations: int = ITERATIONS,
    salt: Callable[[], bytes] = lambda: os.urandom(SALT_BYTES),
) -> dict[str, Any]:
    """The whole dynamic-security document; ValueError names a missing variable."""
    return build_document(
        accounts(environ), share_group=environ.get("BRIDGE_SHARE_GROUP") or "bridge", iterations=iterations, salt=salt,
    )


def update(
    existing: dict[str, Any],
    passwords: Mapping[str, str],
    *,
    share_group: str = "bridge",
    iterations: int = ITERATIONS,
    salt: Callable[[], bytes] = lambda: os.urandom(SALT_BYTES),
) -> dict[str, Any]:
    """The broker's saved document with our accounts and their roles brought up to date.

    Everything else the broker saved (clients, groups and roles added with
    mosquitto_ctrl, the default ACL access) is kept. Our accounts get the
    password given here (a hash that already matches is left as it is, so an
    unchanged password leaves the file unchanged) and keep their role; our
    roles' ACLs are replaced by the generated ones (BRIDGE_SHARE_GROUP may have
    changed). Nothing is deleted: an account no longer given stays.
    """
    document = copy.deepcopy(existing)
    document.setdefault("defaultACLAccess", default_acl_access())
    for key in ("clients", "groups", "roles"):
        document.setdefault(key, [])
    update_clients(document["clients"], passwords, iterations=iterations, salt=salt)
    saved_roles = {role.get("rolename"): role for role in document["roles"]}
    for new in account_roles(passwords, share_group):
        if new["rolename"] in saved_roles:
            saved_roles[new["rolename"]]["acls"] = new["acls"]
        else:
            document["roles"].append(new)
    return document


def update_clients(
    clients: list[dict[str, Any]], passwords: Mapping[str, str], *, iterations: int, salt: Callable[[], bytes]
) -> None:
    """Add our missing accounts to the saved `clients`, rehash changed passwords, give each account its role.

    A saved hash of another iteration count (210,000 before, or mosquitto_ctrl's
    101) is replaced without being checked first: checking costs as much as the
    old hash did. A hash that is already ours and matches is left as it is.
    """
    saved = {entry.get("username"): entry for entry in clients}
    for user, password in passwords.items():
        entry = saved.get(user)
        if entry is None:
            clients.append(client(user, password, user, iterations=iterations, salt=salt()))
            continue
        if entry.get("iterations") != iterations or not password_matches(entry, password):
            new = client(user, password, user, iterations=iterations, salt=salt())
            entry.update({key: new[key] for key in ("password", "salt", "iterations")})
        entry.setdefault("roles", [])
        if not any(role.get("rolename") == user for role in entry["roles"]):
            entry["roles"].append({"rolename": user})


def main(argv: list[str] | None = None) -> int:
    """Write the file unless it exists; exit 2 with a clear message on a configuration error."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("output", type=Path)
    parser.add_argument("--force", action="store_true", help="overwrite an existing file")
    parser.add_argument("--iterations", type=int, default=ITERATIONS)
    args = parser.parse_args(argv)
    if args.output.exists() and not args.force:
        print(f"{args.output} exists; leaving it (the broker may have changed it). Use --force to replace it.")
        return 0
    try:
        document = build(os.environ, iterations=args.iterations)
    except ValueError as exc:
        print(f"dynsec: {exc}", file=sys.stderr)
        return 2
    args.output.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.output.with_suffix(".tmp")
    tmp.write_text(json.dumps(document, indent=2))
    tmp.chmod(0o600)
    tmp.replace(args.output)
    print(f"wrote {args.output}: accounts {', '.join(c['username'] for c in document['clients'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
