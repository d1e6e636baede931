"""mosquitto/dynsec.py: the broker's accounts and roles, generated from the environment."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from devstack.servers import load_dynsec

ENV = {
    "MQTT_BRIDGE_PASSWORD": "b-pw",
    "MQTT_WATCHDOG_PASSWORD": "w-pw",
    "MQTT_SIMULATOR_PASSWORD": "s-pw",
    "MQTT_DEVICES": "7:d7, 12:d12",
}


@pytest.fixture(scope="module")
def dynsec() -> ModuleType:
    return load_dynsec()


def acls(document: dict[str, Any], role: str) -> set[tuple[str, str]]:
    (found,) = [r for r in document["roles"] if r["rolename"] == role]
    return {(a["acltype"], a["topic"]) for a in found["acls"] if a["allow"]}


def test_password_hash_is_pbkdf2_sha512_with_a_strong_iteration_count(dynsec: ModuleType) -> None:
    document = dynsec.build(ENV)
    bridge = next(c for c in document["clients"] if c["username"] == "bridge")
    salt = base64.b64decode(bridge["salt"])
    assert bridge["iterations"] == 210_000 > 101
    assert len(salt) == 12
    expected = hashlib.pbkdf2_hmac("sha512", b"b-pw", salt, 210_000, 64)
    assert base64.b64decode(bridge["password"]) == expected


def test_every_account_has_its_own_salt(dynsec: ModuleType) -> None:
    salts = [c["salt"] for c in dynsec.build(ENV, iterations=10)["clients"]]
    assert len(salts) == len(set(salts)) == 5


def test_roles_grant_only_what_each_component_needs(dynsec: ModuleType) -> None:
    document = dynsec.build({**ENV, "BRIDGE_SHARE_GROUP": "g1"}, iterations=10)
    assert acls(document, "device-7") == {("publishClientSend", "sensors/7/readings")}
    assert acls(document, "device-12") == {("publishClientSend", "sensors/12/readings")}
    assert acls(document, "bridge") == {
        ("subscribePattern", "$share/g1/sensors/+/readings"),
        ("publishClientReceive", "sensors/+/readings"),
        ("publishClientSend", "bridge/#"),
    }
    assert acls(document, "simulator") == {("publishClientSend", "sensors/+/readings")}
    watchdog = acls(document, "watchdog")
    for topic in ("bridge/#", "$SYS/#", "watchdog/probe/#"):
        assert {("subscribePattern", topic), ("publishClientReceive", topic)} <= watchdog
    assert ("publishClientSend", "watchdog/probe/#") in watchdog
    assert not any(kind == "publishClientSend" and topic.startswith("sensors") for kind, topic in watchdog)


def test_everything_not_granted_is_refused(dynsec: ModuleType) -> None:
    default = dynsec.build(ENV, iterations=10)["defaultACLAccess"]
    assert default == {"publishClientSend": False, "publishClientReceive": False, "subscribe": False,
                       "unsubscribe": True}


def test_admin_account_only_when_its_password_is_set(dynsec: ModuleType) -> None:
    users = {c["username"] for c in dynsec.build(ENV, iterations=10)["clients"]}
    assert "admin" not in users
    with_admin = dynsec.build({**ENV, "MQTT_ADMIN_PASSWORD": "a"}, iterations=10)
    assert "admin" in {c["username"] for c in with_admin["clients"]}


def test_missing_password_is_named(dynsec: ModuleType) -> None:
    with pytest.raises(ValueError, match="MQTT_WATCHDOG_PASSWORD"):
        dynsec.build({k: v for k, v in ENV.items() if k != "MQTT_WATCHDOG_PASSWORD"})


@pytest.mark.parametrize("devices", ["7", "x:pw", "7:", "0:pw", "99999999999:pw"])
def test_bad_device_entries_are_refused(dynsec: ModuleType, devices: str) -> None:
    with pytest.raises(ValueError, match="MQTT_DEVICES"):
        dynsec.parse_devices(devices)


def test_main_writes_once_and_keeps_an_existing_file(
    dynsec: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key, value in ENV.items():
        monkeypatch.setenv(key, value)
    target = tmp_path / "dynsec" / "dynamic-security.json"
    assert dynsec.main([str(target), "--iterations", "10"]) == 0
    first = target.read_text()
    assert json.loads(first)["clients"]
    assert target.stat().st_mode & 0o777 == 0o600
    assert dynsec.main([str(target), "--iterations", "10"]) == 0
    assert target.read_text() == first
    assert dynsec.main([str(target), "--iterations", "10", "--force"]) == 0
    assert target.read_text() != first


def test_main_exits_2_naming_a_missing_password(
    dynsec: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for key in ENV:
        monkeypatch.delenv(key, raising=False)
    assert dynsec.main([str(tmp_path / "x.json")]) == 2
    assert "MQTT_BRIDGE_PASSWORD" in capsys.readouterr().err
    assert not (tmp_path / "x.json").exists()
