"""Generate Mosquitto's dynamic-security file from passwords in the environment.

Run once before the broker's first start (the compose file's `mosquitto-init`
service and scripts/local-stack do it); the broker then owns the file and
saves runtime changes (`mosquitto_ctrl dynsec ...`) into it, so an existing
file is left alone unless --force is given.

Why the dynamic security plugin and not `acl_file`: the plain ACL file never
checks SUBSCRIBE, so any device could join `$share/bridge/...` and silently
take its share of every reading.

Passwords are hashed with PBKDF2-HMAC-SHA512 at 210,000 iterations (OWASP's
figure for this hash); `mosquitto_ctrl` uses 101.

Environment:
    MQTT_BRIDGE_PASSWORD, MQTT_WATCHDOG_PASSWORD, MQTT_SIMULATOR_PASSWORD  (required)
    MQTT_ADMIN_PASSWORD     optional: an `admin` account for mosquitto_ctrl
    MQTT_DEVICES            optional: "7:password,8:password" -> accounts device-7, device-8
    BRIDGE_SHARE_GROUP      the bridge's share group (default: bridge)

Usage: python mosquitto/dynsec.py OUTPUT.json [--force] [--iterations N]
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

ITERATIONS = 210_000
SALT_BYTES = 12
READINGS = "sensors/+/readings"


def acl(acltype: str, topic: str, *, allow: bool = True) -> dict[str, Any]:
    """One ACL entry of a role."""
    return {"acltype": acltype, "topic": topic, "priority": 0, "allow": allow}


def read_acls(*topics: str) -> list[dict[str, Any]]:
    """Subscribe and receive, granted together: one without the other is useless or a leak."""
    return [entry for topic in topics for entry in (acl("subscribePattern", topic), acl("publishClientReceive", topic))]


def roles(share_group: str, device_ids: list[int]) -> list[dict[str, Any]]:
    """The roles of the system; see README, "Broker accounts"."""
    result = [
        {"rolename": "bridge", "acls": [
            acl("subscribePattern", f"$share/{share_group}/{READINGS}"),
            acl("publishClientReceive", READINGS),
            acl("publishClientSend", "bridge/#"),
        ]},
        {"rolename": "watchdog", "acls": [
            *read_acls("bridge/#", "$SYS/#", "watchdog/probe/#"),
            acl("publishClientSend", "watchdog/probe/#"),
        ]},
        {"rolename": "simulator", "acls": [acl("publishClientSend", READINGS)]},
        {"rolename": "admin", "acls": [
            *read_acls("$CONTROL/dynamic-security/#"),
            acl("publishClientSend", "$CONTROL/dynamic-security/#"),
        ]},
    ]
    result += [
        {"rolename": f"device-{n}", "acls": [acl("publishClientSend", f"sensors/{n}/readings")]}
        for n in device_ids
    ]
    return result


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


def parse_devices(text: str) -> dict[int, str]:
    """MQTT_DEVICES "7:pw,8:pw" -> {7: "pw", 8: "pw"}; ValueError names the bad entry."""
    devices: dict[int, str] = {}
    for entry in filter(None, (part.strip() for part in text.split(","))):
        sensor, sep, password = entry.partition(":")
        if not sep or not sensor.isdigit() or not password or not 1 <= int(sensor) <= 2_147_483_647:
            raise ValueError(f"MQTT_DEVICES: expected <sensor_id>:<password>, got {sensor!r}:...")
        devices[int(sensor)] = password
    return devices


def build(
    environ: Mapping[str, str],
    *,
    iterations: int = ITERATIONS,
    salt: Callable[[], bytes] = lambda: os.urandom(SALT_BYTES),
) -> dict[str, Any]:
    """The whole dynamic-security document; ValueError names a missing variable."""
    accounts = {
        "bridge": "MQTT_BRIDGE_PASSWORD",
        "watchdog": "MQTT_WATCHDOG_PASSWORD",
        "simulator": "MQTT_SIMULATOR_PASSWORD",
    }
    missing = [var for var in accounts.values() if not environ.get(var)]
    if missing:
        raise ValueError(f"{', '.join(missing)} must be set (see .env.example)")
    if environ.get("MQTT_ADMIN_PASSWORD"):
        accounts["admin"] = "MQTT_ADMIN_PASSWORD"
    clients = [client(user, environ[var], user, iterations=iterations, salt=salt()) for user, var in accounts.items()]
    devices = parse_devices(environ.get("MQTT_DEVICES", ""))
    clients += [
        client(f"device-{n}", password, f"device-{n}", iterations=iterations, salt=salt())
        for n, password in sorted(devices.items())
    ]
    return {
        # Everything not granted by a role is refused, unsubscribing aside.
        "defaultACLAccess": {
            "publishClientSend": False, "publishClientReceive": False, "subscribe": False, "unsubscribe": True,
        },
        "clients": clients,
        "groups": [],
        "roles": roles(environ.get("BRIDGE_SHARE_GROUP") or "bridge", sorted(devices)),
    }


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
