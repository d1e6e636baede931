"""mosquitto/dynsec.py: the broker's accounts and roles, generated from the environment."""

from __future__ import annotations

import base64
import hashlib
import json
import math
import secrets
from pathlib import Path
from typing import Any, cast

import pytest

from iotcommon.contract import SITE_BRIDGE_STATES
from mosquitto import dynsec


def pw(name: str) -> str:
    """A password that passes dynsec's rule (mixed classes, 23+ characters)."""
    return f"{name}-password-Unit-Test-42"


ENV = {
    "MQTT_BRIDGE_PASSWORD": pw("b"),
    "MQTT_WATCHDOG_PASSWORD": pw("w"),
    "MQTT_SIMULATOR_PASSWORD": pw("s"),
    "MQTT_DEVICES": f"7:{pw('d7')}, 12:{pw('d12')}",
}


def acls(document: dict[str, Any], role: str) -> set[tuple[str, str]]:
    (found,) = [r for r in document["roles"] if r["rolename"] == role]
    return {(a["acltype"], a["topic"]) for a in found["acls"] if a["allow"]}


def test_password_hash_is_pbkdf2_sha512_at_one_iteration_so_a_connect_costs_the_broker_nothing() -> None:
    document = dynsec.build(ENV)
    bridge = next(c for c in document["clients"] if c["username"] == "bridge")
    salt = base64.b64decode(bridge["salt"])
    assert bridge["iterations"] == dynsec.ITERATIONS == 1  # Mosquitto 2.0 accepts 1 and up
    assert len(salt) == 12  # the only salt length Mosquitto 2.0 loads
    expected = hashlib.pbkdf2_hmac("sha512", pw("b").encode(), salt, 1, 64)
    assert base64.b64decode(bridge["password"]) == expected


# --- the password rule that makes one iteration safe ----------------------------------------------


@pytest.mark.parametrize(("password", "kinds"), [
    ("hunter2", 26 + 10),
    ("a" * 27, 26),  # the longest lowercase value still refused
    ("Tr0ub4dor&3", 26 + 26 + 10 + 33),  # every class
    ("bien-sûr", 26 + 33),  # anything but a-z, A-Z, 0-9 counts as punctuation
])
def test_password_bits_credits_length_times_the_classes_used(password: str, kinds: int) -> None:
    assert dynsec.password_bits(password) == pytest.approx(len(password) * math.log2(kinds))
    assert dynsec.password_bits("") == 0


@pytest.mark.parametrize("password", ["hunter2", "Tr0ub4dor&3", "a" * 27, "correcthorsebatterystaple"])
def test_a_guessable_password_is_refused_naming_the_variable_and_the_fix(password: str) -> None:
    with pytest.raises(ValueError, match=r"^MQTT_WATCHDOG_PASSWORD: too guessable .* 128 needed") as refused:
        dynsec.build({**ENV, "MQTT_WATCHDOG_PASSWORD": password})
    assert "secrets.token_urlsafe(24)" in str(refused.value)
    assert password not in str(refused.value), "the message never repeats the password"


@pytest.mark.parametrize(("variable", "value"), [
    ("MQTT_ADMIN_PASSWORD", "admin-pw"), ("MQTT_HEALTH_PASSWORD", "h"), ("MQTT_DEVICES", "7:d7-pw"),
])
def test_every_broker_password_is_held_to_the_rule(variable: str, value: str) -> None:
    with pytest.raises(ValueError, match=rf"^{variable}: too guessable"):
        dynsec.build({**ENV, variable: value})


# A fixed 22-character URL-safe value that uses all four classes: a random draw (token_urlsafe(16))
# holds letters only about once in a hundred, and 22 letters are 125 bits, which the rule refuses.
@pytest.mark.parametrize("password", ["a" * 28, "Xq3-v9_Lm2Rt8Kp1Zb7Nw4", "0123456789abcdef" * 2])
def test_a_long_random_looking_password_is_accepted(password: str) -> None:
    assert dynsec.weak_password(password) is None  # 28 a-z: 131 bits; 22 URL-safe: 131; 32 hex: 165


def test_generated_passwords_pass_the_rule_whatever_characters_they_drew() -> None:
    # compose's init generates token_urlsafe(24), 32 characters: they pass even if all drew one class.
    assert dynsec.weak_password("x" * len(secrets.token_urlsafe(24))) is None
    # scripts/local-stack's token_urlsafe(18), 24 characters, pass with two classes; they are never
    # checked (nobody sets them), and hold 144 bits whatever they drew.
    assert dynsec.weak_password("xY" * (len(secrets.token_urlsafe(18)) // 2)) is None


def test_every_account_has_its_own_salt() -> None:
    salts = [c["salt"] for c in dynsec.build(ENV)["clients"]]
    assert len(salts) == len(set(salts)) == 5


def test_roles_grant_only_what_each_component_needs() -> None:
    document = dynsec.build({**ENV, "BRIDGE_SHARE_GROUP": "g1"})
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


def test_everything_not_granted_is_refused() -> None:
    default = dynsec.build(ENV)["defaultACLAccess"]
    assert default == {"publishClientSend": False, "publishClientReceive": False, "subscribe": False,
                       "unsubscribe": True}


def test_admin_account_only_when_its_password_is_set() -> None:
    users = {c["username"] for c in dynsec.build(ENV)["clients"]}
    assert "admin" not in users
    with_admin = dynsec.build({**ENV, "MQTT_ADMIN_PASSWORD": pw("a")})
    assert "admin" in {c["username"] for c in with_admin["clients"]}


def test_missing_password_is_named() -> None:
    with pytest.raises(ValueError, match="MQTT_WATCHDOG_PASSWORD"):
        dynsec.build({k: v for k, v in ENV.items() if k != "MQTT_WATCHDOG_PASSWORD"})


@pytest.mark.parametrize("devices", ["x:pw", "7:", "0:pw", "99999999999:pw", "-1", "7 8"])
def test_bad_device_entries_are_refused(devices: str) -> None:
    with pytest.raises(ValueError, match="MQTT_DEVICES"):
        dynsec.parse_devices(devices)


def test_a_device_without_a_password_is_parsed_but_cannot_be_built() -> None:
    # The compose stack's init generates the missing passwords; alone, dynsec.py cannot.
    assert dynsec.parse_devices(" 7, 8:p:w ,") == {7: None, 8: "p:w"}
    with pytest.raises(ValueError, match="MQTT_DEVICES: device 7 has no password"):
        dynsec.build({**ENV, "MQTT_DEVICES": "7"})


@pytest.mark.parametrize("variable", ["MQTT_BRIDGE_PASSWORD", "MQTT_ADMIN_PASSWORD", "MQTT_HEALTH_PASSWORD"])
def test_the_placeholder_password_is_refused_naming_the_variable(variable: str) -> None:
    with pytest.raises(ValueError, match=f"^{variable}: 'change-me' is the examples' placeholder"):
        dynsec.build({**ENV, variable: "change-me"})


def test_a_placeholder_device_password_is_refused() -> None:
    with pytest.raises(ValueError, match=r"^MQTT_DEVICES: 'change-me'"):
        dynsec.build({**ENV, "MQTT_DEVICES": "7:change-me"})


def test_the_health_account_may_only_read_the_uptime() -> None:
    assert "health" not in {c["username"] for c in dynsec.build(ENV)["clients"]}
    document = dynsec.build({**ENV, "MQTT_HEALTH_PASSWORD": pw("h")})
    assert "health" in {c["username"] for c in document["clients"]}
    assert acls(document, "health") == {
        ("subscribePattern", "$SYS/broker/uptime"), ("publishClientReceive", "$SYS/broker/uptime"),
    }


# --- update(): the compose stack's init, on every `up` -----------------------------------------

PASSWORDS = {"bridge": "b-pw", "watchdog": "w-pw", "simulator": "s-pw", "device-7": "d7"}


def client_entry(document: dict[str, Any], username: str) -> dict[str, Any]:
    (found,) = [c for c in document["clients"] if c["username"] == username]
    return cast(dict[str, Any], found)


def saved_by_the_broker() -> dict[str, Any]:
    """A document as the broker saves it after mosquitto_ctrl changes: extra client, role, group, default."""
    document = dynsec.build_document(PASSWORDS)
    # mosquitto_ctrl hashes at 101 iterations: an account of the operator's, which update() cannot re-hash.
    document["clients"].append({**dynsec.client("ops", "o-pw", "ops", iterations=101, salt=b"s" * 12),
                                "textname": "added at run time"})
    document["roles"].append({"rolename": "ops", "acls": [dynsec.acl("subscribePattern", "ops/#")]})
    document["groups"].append({"groupname": "team", "roles": [], "clients": [{"username": "ops"}]})
    document["defaultACLAccess"]["unsubscribe"] = False
    client_entry(document, "bridge")["roles"].append({"rolename": "ops"})
    return document


def test_update_keeps_everything_the_broker_saved() -> None:
    saved = saved_by_the_broker()

    updated = dynsec.update(saved, PASSWORDS)

    assert updated == saved  # nothing changed, so nothing is rewritten (not even a salt)
    assert updated is not saved


def test_update_rehashes_a_changed_password_and_keeps_the_account_otherwise() -> None:
    saved = saved_by_the_broker()

    updated = dynsec.update(saved, {**PASSWORDS, "bridge": "new-pw"})

    bridge = client_entry(updated, "bridge")
    assert dynsec.password_matches(bridge, "new-pw") and not dynsec.password_matches(bridge, "b-pw")
    assert bridge["roles"] == [{"rolename": "bridge"}, {"rolename": "ops"}]
    assert client_entry(updated, "watchdog") == client_entry(saved, "watchdog")
    assert client_entry(saved, "bridge")["salt"] != bridge["salt"]  # the input is not modified
    assert dynsec.password_matches(client_entry(saved, "bridge"), "b-pw")


def test_update_hashes_only_new_or_changed_passwords() -> None:
    saved = saved_by_the_broker()
    salts: list[bytes] = []

    def salt() -> bytes:
        salts.append(bytes([len(salts)]) * 12)
        return salts[-1]

    unchanged = dynsec.update(saved, PASSWORDS, salt=salt)
    assert salts == [] and unchanged == saved  # an unchanged password leaves the file unchanged
    updated = dynsec.update(saved, {**PASSWORDS, "bridge": "new-pw", "device-9": "d9"}, salt=salt)
    assert len(salts) == 2
    assert client_entry(updated, "watchdog") == client_entry(saved, "watchdog")


def test_update_adds_new_devices_and_deletes_nothing() -> None:
    saved = saved_by_the_broker()
    passwords = {**{k: v for k, v in PASSWORDS.items() if k != "device-7"}, "device-9": "d9", "health": "h"}

    updated = dynsec.update(saved, passwords)

    assert dynsec.password_matches(client_entry(updated, "device-9"), "d9")
    assert acls(updated, "device-9") == {("publishClientSend", "sensors/9/readings")}
    assert acls(updated, "health") == acls(dynsec.build_document({"health": "h"}), "health")
    assert client_entry(updated, "device-7") == client_entry(saved, "device-7")
    assert {c["username"] for c in updated["clients"]} == {c["username"] for c in saved["clients"]} | {
        "device-9", "health"}


def test_update_rehashes_our_accounts_saved_at_another_count_without_checking_the_old_hash(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The migration: a file written before (210,000 iterations) gets cheap hashes at the next up/init.

    The old hashes (7 iterations here, to keep the test fast) are replaced
    without being checked: checking one costs the 0.13 s the change removes.
    """
    saved = saved_by_the_broker()
    old = dynsec.update(saved, PASSWORDS, iterations=7)
    assert {c["username"]: c["iterations"] for c in old["clients"]} == {
        "bridge": 7, "watchdog": 7, "simulator": 7, "device-7": 7, "ops": 101}
    checked: list[str] = []
    monkeypatch.setattr(dynsec, "password_matches", lambda entry, password: checked.append(entry["username"]))

    updated = dynsec.update(old, PASSWORDS)

    assert checked == []
    monkeypatch.undo()
    for user, password in PASSWORDS.items():
        entry = client_entry(updated, user)
        assert entry["iterations"] == 1 and dynsec.password_matches(entry, password), user
        assert entry["roles"] == client_entry(old, user)["roles"]
    assert client_entry(updated, "ops") == client_entry(saved, "ops"), "an account we have no password for is kept"
    assert dynsec.update(updated, PASSWORDS) == updated, "once migrated, the next up changes nothing"


def test_update_rewrites_our_roles_acls_for_a_new_share_group() -> None:
    updated = dynsec.update(saved_by_the_broker(), PASSWORDS, share_group="g2")

    assert ("subscribePattern", "$share/g2/sensors/+/readings") in acls(updated, "bridge")
    assert ("subscribePattern", "$share/bridge/sensors/+/readings") not in acls(updated, "bridge")
    assert acls(updated, "ops") == {("subscribePattern", "ops/#")}


def test_update_of_an_empty_document_builds_one() -> None:
    updated = dynsec.update({}, PASSWORDS)

    assert updated["defaultACLAccess"]["subscribe"] is False
    assert {c["username"] for c in updated["clients"]} == set(PASSWORDS)


def test_a_hash_made_by_another_tool_is_checked_with_its_own_iterations() -> None:
    entry = dynsec.client("bridge", "b-pw", "bridge", iterations=101, salt=b"x" * 12)  # mosquitto_ctrl's count

    assert dynsec.password_matches(entry, "b-pw")
    assert not dynsec.password_matches(entry, "b-pw ")
    assert not dynsec.password_matches({"username": "bridge"}, "b-pw")


def test_main_writes_once_and_keeps_an_existing_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
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
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for key in ENV:
        monkeypatch.delenv(key, raising=False)
    assert dynsec.main([str(tmp_path / "x.json")]) == 2
    assert "MQTT_BRIDGE_PASSWORD" in capsys.readouterr().err
    assert not (tmp_path / "x.json").exists()


def test_site_bridge_account_forwards_readings_and_reports_its_link_only() -> None:
    assert "site-bridge" not in {c["username"] for c in dynsec.build(ENV, iterations=10)["clients"]}
    document = dynsec.build({**ENV, "MQTT_SITE_BRIDGE_PASSWORD": "Site-Bridge-7fQ2xL9mW4kR8tZ3vN6p"}, iterations=10)

    assert "site-bridge" in {c["username"] for c in document["clients"]}
    assert acls(document, "site-bridge") == {
        ("publishClientSend", "sensors/+/readings"),
        ("publishClientSend", "$SYS/broker/connection/+/state"),
    }
    assert ("publishClientSend", SITE_BRIDGE_STATES) in acls(document, "site-bridge"), "what the watchdog reads"
