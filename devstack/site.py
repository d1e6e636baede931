"""A site broker for tests and scripts: mosquitto/site.conf, bridged to a central broker.

The site runs the project's site.conf with only these lines rewritten: its
listener, paths and accounts file (as for any test broker), the central
broker's address, the bridge's password and the site's name. Tests put a
TcpProxy between the two, so that they can cut the link without touching
either broker.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from devstack.processes import LOCALHOST, REPO_ROOT
from devstack.servers import (
    MQTT_TEST_ACCOUNTS,
    TEST_MQTT_PASSWORD,
    TEST_MQTT_USER,
    MosquittoServer,
    load_dynsec,
)

SITE_CONFIG = REPO_ROOT / "mosquitto" / "site.conf"
SITE_BRIDGE_USER = "site-bridge"
SITE_BRIDGE_TEST_PASSWORD = MQTT_TEST_ACCOUNTS["MQTT_SITE_BRIDGE_PASSWORD"]


def bridge_state_topic(name: str) -> str:
    """Where the site bridge `name` (its remote_clientid) reports its link, on both brokers."""
    pattern: str = load_dynsec().SITE_BRIDGE_STATE
    return pattern.replace("+", name)


def site_rewrites(*, central_port: int, password: str, name: str) -> list[tuple[str, str]]:
    """The bridge lines of site.conf that differ per deployment: where the central broker is, who we are."""
    return [
        (r"address\s+\S+", f"address {LOCALHOST}:{central_port}"),
        (r"remote_password\s+\S+", f"remote_password {password}"),
        (r"remote_clientid\s+\S+", f"remote_clientid {name}"),
    ]


def write_site_test_accounts(path: Path) -> None:
    """The site's accounts for tests: the simulator, device 7 and the all-powerful `test` account."""
    dynsec = load_dynsec()
    devices = dynsec.parse_devices(MQTT_TEST_ACCOUNTS["MQTT_DEVICES"])
    passwords = {"simulator": MQTT_TEST_ACCOUNTS["MQTT_SIMULATOR_PASSWORD"],
                 **{f"device-{n}": password for n, password in devices.items()}}
    document = dynsec.build_document(passwords)
    everything = [dynsec.acl(kind, topic) for topic in ("#", "$SYS/#")
                  for kind in ("publishClientSend", "publishClientReceive", "subscribePattern")]
    document["roles"].append({"rolename": TEST_MQTT_USER, "acls": everything})
    document["clients"].append(dynsec.client(TEST_MQTT_USER, TEST_MQTT_PASSWORD, TEST_MQTT_USER,
                                             iterations=dynsec.ITERATIONS, salt=os.urandom(dynsec.SALT_BYTES)))
    path.write_text(json.dumps(document), encoding="utf-8")


def site_accounts(passwords: Mapping[str, str]) -> Callable[[Path], None]:
    """An accounts writer for a site's own accounts (name -> password), hashed as in production."""

    def write(path: Path) -> None:
        path.write_text(json.dumps(load_dynsec().build_document(dict(passwords))), encoding="utf-8")
        path.chmod(0o600)

    return write


def site_broker(
    *, central_port: int, name: str = "site-1", password: str = SITE_BRIDGE_TEST_PASSWORD,
    root: Path | None = None, port: int | None = None,
    accounts: Callable[[Path], None] = write_site_test_accounts,
    ready_account: tuple[str, str] = (TEST_MQTT_USER, TEST_MQTT_PASSWORD),
    changes: Sequence[tuple[str, str]] = (),
) -> MosquittoServer:
    """A site broker (not started) bridging to the central broker on `central_port` as `name`.

    `changes` rewrite more lines of site.conf, for a benchmark comparing a setting with its shipped value.
    """
    return MosquittoServer(
        SITE_CONFIG, root=root, port=port, accounts=accounts, ready_account=ready_account,
        rewrites=[*site_rewrites(central_port=central_port, password=password, name=name), *changes],
    )
