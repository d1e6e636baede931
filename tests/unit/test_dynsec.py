"""mosquitto/dynsec.py: the broker's accounts and roles, generated from the environment."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from types import ModuleType
from typing import Any, cast

import pytest

from devstack.servers import load_dynsec
from iotcommon.contract import SITE_BRIDGE_STATES

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


@pytest.mark.parametrize("devices", ["x:pw", "7:", "0:pw", "99999999999:pw", "-1", "7 8"])
def test_bad_device_entries_are_refused(dynsec: ModuleType, devices: str) -> None:
    with pytest.raises(ValueError, match="MQTT_DEVICES"):
        dynsec.parse_devices(devices)


def test_a_device_without_a_password_is_parsed_but_cannot_be_built(dynsec: ModuleType) -> None:
    # The compose stack's init generates the missing passwords; alone, dynsec.py cannot.
    assert dynsec.parse_devices(" 7, 8:p:w ,") == {7: None, 8: "p:w"}
    with pytest.raises(ValueError, match="MQTT_DEVICES: device 7 has no password"):
        dynsec.build({**ENV, "MQTT_DEVICES": "7"})


@pytest.mark.parametrize("variable", ["MQTT_BRIDGE_PASSWORD", "MQTT_ADMIN_PASSWORD", "MQTT_HEALTH_PASSWORD"])
def test_the_placeholder_password_is_refused_naming_the_variable(dynsec: ModuleType, variable: str) -> None:
    with pytest.raises(ValueError, match=f"^{variable}: 'change-me' is the examples' placeholder"):
        dynsec.build({**ENV, variable: "change-me"}, iterations=10)


def test_a_placeholder_device_password_is_refused(dynsec: ModuleType) -> None:
    with pytest.raises(ValueError, match=r"^MQTT_DEVICES: 'change-me'"):
        dynsec.build({**ENV, "MQTT_DEVICES": "7:change-me"}, iterations=10)


def test_the_health_account_may_only_read_the_uptime(dynsec: ModuleType) -> None:
    assert "health" not in {c["username"] for c in dynsec.build(ENV, iterations=10)["clients"]}
    document = dynsec.build({**ENV, "MQTT_HEALTH_PASSWORD": "h"}, iterations=10)
    assert "health" in {c["username"] for c in document["clients"]}
    assert acls(document, "health") == {
        ("subscribePattern", "$SYS/broker/uptime"), ("publishClientReceive", "$SYS/broker/uptime"),
    }


# --- update(): the compose stack's init, on every `up` -----------------------------------------

PASSWORDS = {"bridge": "b-pw", "watchdog": "w-pw", "simulator": "s-pw", "device-7": "d7"}


def client_entry(document: dict[str, Any], username: str) -> dict[str, Any]:
    (found,) = [c for c in document["clients"] if c["username"] == username]
    return cast(dict[str, Any], found)


def saved_by_the_broker(dynsec: ModuleType) -> dict[str, Any]:
    """A document as the broker saves it after mosquitto_ctrl changes: extra client, role, group, default."""
    document = dynsec.build_document(PASSWORDS, iterations=10)
    document["clients"].append({**dynsec.client("ops", "o-pw", "ops", iterations=10, salt=b"s" * 12),
                                "textname": "added at run time"})
    document["roles"].append({"rolename": "ops", "acls": [dynsec.acl("subscribePattern", "ops/#")]})
    document["groups"].append({"groupname": "team", "roles": [], "clients": [{"username": "ops"}]})
    document["defaultACLAccess"]["unsubscribe"] = False
    client_entry(document, "bridge")["roles"].append({"rolename": "ops"})
    return cast(dict[str, Any], document)


def test_update_keeps_everything_the_broker_saved(dynsec: ModuleType) -> None:
    saved = saved_by_the_broker(dynsec)

    updated = dynsec.update(saved, PASSWORDS, iterations=10)

    assert updated == saved  # nothing changed, so nothing is rewritten (not even a salt)
    assert updated is not saved


def test_update_rehashes_a_changed_password_and_keeps_the_account_otherwise(dynsec: ModuleType) -> None:
    saved = saved_by_the_broker(dynsec)

    updated = dynsec.update(saved, {**PASSWORDS, "bridge": "new-pw"}, iterations=10)

    bridge = client_entry(updated, "bridge")
    assert dynsec.password_matches(bridge, "new-pw") and not dynsec.password_matches(bridge, "b-pw")
    assert bridge["roles"] == [{"rolename": "bridge"}, {"rolename": "ops"}]
    assert client_entry(updated, "watchdog") == client_entry(saved, "watchdog")
    assert client_entry(saved, "bridge")["salt"] != bridge["salt"]  # the input is not modified
    assert dynsec.password_matches(client_entry(saved, "bridge"), "b-pw")


def test_update_hashes_only_new_or_changed_passwords(dynsec: ModuleType) -> None:
    saved = saved_by_the_broker(dynsec)
    salts: list[bytes] = []

    def salt() -> bytes:
        salts.append(bytes([len(salts)]) * 12)
        return salts[-1]

    unchanged = dynsec.update(saved, PASSWORDS, iterations=10, salt=salt)
    assert salts == [] and unchanged == saved  # a PBKDF2 hash at 210,000 iterations costs ~0.1 s
    updated = dynsec.update(saved, {**PASSWORDS, "bridge": "new-pw", "device-9": "d9"}, iterations=10, salt=salt)
    assert len(salts) == 2
    assert client_entry(updated, "watchdog") == client_entry(saved, "watchdog")


def test_update_adds_new_devices_and_deletes_nothing(dynsec: ModuleType) -> None:
    saved = saved_by_the_broker(dynsec)
    passwords = {**{k: v for k, v in PASSWORDS.items() if k != "device-7"}, "device-9": "d9", "health": "h"}

    updated = dynsec.update(saved, passwords, iterations=10)

    assert dynsec.password_matches(client_entry(updated, "device-9"), "d9")
    assert acls(updated, "device-9") == {("publishClientSend", "sensors/9/readings")}
    assert acls(updated, "health") == acls(dynsec.build_document({"health": "h"}, iterations=10), "health")
    assert client_entry(updated, "device-7") == client_entry(saved, "device-7")
    assert {c["username"] for c in updated["clients"]} == {c["username"] for c in saved["clients"]} | {
        "device-9", "health"}


def test_update_rewrites_our_roles_acls_for_a_new_share_group(dynsec: ModuleType) -> None:
    updated = dynsec.update(saved_by_the_broker(dynsec), PASSWORDS, share_group="g2", iterations=10)

    assert ("subscribePattern", "$share/g2/sensors/+/readings") in acls(updated, "bridge")
    assert ("subscribePattern", "$share/bridge/sensors/+/readings") not in acls(updated, "bridge")
    assert acls(updated, "ops") == {("subscribePattern", "ops/#")}


def test_update_of_an_empty_document_builds_one(dynsec: ModuleType) -> None:
    updated = dynsec.update({}, PASSWORDS, iterations=10)

    assert updated["defaultACLAccess"]["subscribe"] is False
    assert {c["username"] for c in updated["clients"]} == set(PASSWORDS)


def test_a_hash_made_by_another_tool_is_checked_with_its_own_iterations(dynsec: ModuleType) -> None:
    entry = dynsec.client("bridge", "b-pw", "bridge", iterations=101, salt=b"x" * 12)  # mosquitto_ctrl's count

    assert dynsec.password_matches(entry, "b-pw")
    assert not dynsec.password_matches(entry, "b-pw ")
    assert not dynsec.password_matches({"username": "bridge"}, "b-pw")


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


def test_site_bridge_account_forwards_readings_and_reports_its_link_only(dynsec: ModuleType) -> None:
    assert "site-bridge" not in {c["username"] for c in dynsec.build(ENV, iterations=10)["clients"]}
    document = dynsec.build({**ENV, "MQTT_SITE_BRIDGE_PASSWORD": "Site-Bridge-7fQ2xL9mW4kR8tZ3vN6p"}, iterations=10)

    assert "site-bridge" in {c["username"] for c in document["clients"]}
    assert acls(document, "site-bridge") == {
        ("publishClientSend", "sensors/+/readings"),
        ("publishClientSend", "$SYS/broker/connection/+/state"),
    }
    assert dynsec.SITE_BRIDGE_STATE == SITE_BRIDGE_STATES, "the topic the watchdog reads is the one granted"
