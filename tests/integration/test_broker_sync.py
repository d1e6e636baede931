"""The compose stack's broker-sync against a real Mosquitto: an `up`'s account changes reach the running broker.

The broker starts on the accounts file a first `init` wrote, as the compose broker
does; a later `init` changes the file only (the running broker does not read it
again), and `stack_init.py sync-broker` must bring the running broker there.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from devstack.mosquitto import MosquittoServer
from devstack.mqtt_client import MqttTestClient, MqttTestError

pytestmark = pytest.mark.slow
# Broker passwords long enough for dynsec's rule (docs/security.md).
ROTATED = "rotated-p@ss/w%41:rd-Long-Enough-42"
NEW_ADMIN = "new-admin-pw-Long-Enough-For-Brokers"


class Init:
    """The init service's volumes in a temporary folder."""

    def __init__(self, module: ModuleType, root: Path) -> None:
        self.module = module
        self.secrets, self.shares, self.dynsec = root / "secrets", root / "shares", root / "dynsec"
        self.database = root / "postgres-data"

    def apply(self, **environ: str) -> None:
        self.module.apply(environ, secrets_folder=self.secrets, shares_folder=self.shares, dynsec_folder=self.dynsec,
                          database_folder=self.database, iterations=10, chown=lambda path, uid: None,
                          report=lambda line: None)

    def secret(self, name: str) -> str:
        return (self.secrets / name).read_text(encoding="utf-8")


@pytest.fixture
def stack(stack_init: ModuleType, tmp_path: Path) -> Iterator[tuple[Init, MosquittoServer]]:
    init = Init(stack_init, tmp_path)
    init.apply(MQTT_DEVICES="7")

    def accounts(path: Path) -> None:  # what the compose broker finds in its volume at its first start
        shutil.copyfile(init.dynsec / "dynamic-security.json", path)

    broker = MosquittoServer(
        accounts=accounts,
        ready_account=("admin", init.secret("mqtt_admin_password")),
    )
    try:
        broker.start()
        yield init, broker
    finally:
        broker.cleanup()


def sync_broker(stack_init: ModuleType, init: Init, broker: MosquittoServer) -> int:
    """The broker-sync service's command, pointed at the test broker."""
    code: int = stack_init.main(["sync-broker", "--secrets", str(init.secrets), "--broker",
                                 f"{broker.host}:{broker.port}"])
    return code


def connects(broker: MosquittoServer, user: str, password: str) -> bool:
    try:
        MqttTestClient.from_url(broker.url_as(user, password)).connect(timeout=5).close()
    except MqttTestError:
        return False
    return True


def test_an_ups_new_device_password_and_share_group_reach_the_running_broker(
    stack: tuple[Init, MosquittoServer], stack_init: ModuleType, capsys: pytest.CaptureFixture[str]
) -> None:
    init, broker = stack
    assert sync_broker(stack_init, init, broker) == 0
    assert "nothing to change" in capsys.readouterr().out  # it loaded the file: every password tried, none sent
    old_bridge = init.secret("mqtt_bridge_password")

    init.apply(MQTT_DEVICES="7,9", MQTT_BRIDGE_PASSWORD=ROTATED, BRIDGE_SHARE_GROUP="g2",
               MQTT_ADMIN_PASSWORD=NEW_ADMIN)
    assert not connects(broker, "device-9", init.secret("mqtt_device_9_password")), "not before broker-sync"

    assert sync_broker(stack_init, init, broker) == 0

    out = capsys.readouterr().out
    assert "broker-sync: createClient device-9" in out and "setClientPassword bridge" in out
    assert connects(broker, "device-9", init.secret("mqtt_device_9_password"))
    assert connects(broker, "admin", NEW_ADMIN)
    assert not connects(broker, "bridge", old_bridge)
    with MqttTestClient.from_url(broker.url_as("bridge", ROTATED)).connect(timeout=5) as bridge:
        bridge.subscribe("$share/g2/sensors/+/readings")  # the workers recreated with BRIDGE_SHARE_GROUP=g2
        with pytest.raises(MqttTestError, match="refused"):
            bridge.subscribe("$share/bridge/sensors/+/readings")

    assert sync_broker(stack_init, init, broker) == 0
    assert "nothing to change" in capsys.readouterr().out


def test_a_broker_that_refuses_admin_fails_the_sync_naming_the_restart(
    stack: tuple[Init, MosquittoServer], stack_init: ModuleType, capsys: pytest.CaptureFixture[str]
) -> None:
    init, broker = stack
    admin = init.secrets / "mqtt_admin_password"
    admin.chmod(0o600)
    admin.write_text("not-the-brokers")  # as if the password changed twice with no sync, the old one lost

    assert sync_broker(stack_init, init, broker) == 1

    assert "refused the `admin` account's password; restart the broker" in capsys.readouterr().err
