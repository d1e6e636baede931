"""A site broker for tests and scripts: mosquitto/site.conf, bridged to a central broker.

The site runs the project's site.conf with only these lines rewritten: its
listener, paths and accounts file (as for any test broker), the central
broker's address, the bridge's password and the site's name. Tests put a
TcpProxy between the two, so that they can cut the link without touching
either broker.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from devstack.mosquitto import MQTT_TEST_ACCOUNTS, TEST_MQTT_PASSWORD, TEST_MQTT_USER, MosquittoServer, add_test_account
from devstack.processes import LOCALHOST, REPO_ROOT
from mosquitto import dynsec

SITE_CONFIG = REPO_ROOT / "mosquitto" / "site.conf"
SITE_BRIDGE_USER = "site-bridge"
SITE_BRIDGE_TEST_PASSWORD = MQTT_TEST_ACCOUNTS["MQTT_SITE_BRIDGE_PASSWORD"]


def site_rewrites(*, central_port: int, password: str, name: str) -> list[tuple[str, str]]:
    """The bridge lines of site.conf that differ per deployment: where the central broker is, who we are."""
    return [
        (r"address\s+\S+", f"address {LOCALHOST}:{central_port}"),
        (r"remote_password\s+\S+", f"remote_password {password}"),
        (r"remote_clientid\s+\S+", f"remote_clientid {name}"),
    ]


def write_site_test_accounts(path: Path) -> None:
    """The site's accounts for tests: the simulator, device 7 and the all-powerful `test` account."""
    passwords = {user: password for user, password in dynsec.accounts(MQTT_TEST_ACCOUNTS).items()
                 if user == "simulator" or user.startswith("device-")}
    document = dynsec.build_document(passwords)
    add_test_account(document, ("#", "$SYS/#"))
    path.write_text(json.dumps(document), encoding="utf-8")


def site_accounts(passwords: Mapping[str, str]) -> Callable[[Path], None]:
    """An accounts writer for a site's own accounts (name -> password), hashed as in production."""

    def write(path: Path) -> None:
        path.write_text(json.dumps(dynsec.build_document(dict(passwords))), encoding="utf-8")
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
