"""deploy/compose/broker_sync.py: the commands that bring a running broker to init's plan, with a fake broker.

tests/integration/test_broker_sync.py runs it against a real Mosquitto.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from devstack.scripts import load_script
from mosquitto import dynsec

PASSWORDS = {"bridge": "bridge-pw", "admin": "admin-pw", "device-7": "d7-pw"}


@pytest.fixture(scope="module")
def sync() -> ModuleType:
    return load_script("deploy/compose/broker_sync.py")


def plan(sync: ModuleType, *, share_group: str = "bridge", pending: tuple[str, ...] = (), old_admin: str = "") -> Any:
    return sync.Plan(accounts={user: f"mqtt_{user}_password" for user in PASSWORDS},
                     roles=dynsec.account_roles(PASSWORDS, share_group),
                     pending=list(pending), old_admin_password=old_admin)


def live_of(sync: ModuleType, the_plan: Any) -> Any:
    """A broker that holds the plan exactly, as it lists itself."""
    return sync.parse_live([
        {"command": "listRoles", "data": {"roles": the_plan.roles}},
        {"command": "listClients", "data": {"clients": [
            {"username": user, "roles": [{"rolename": user}], "groups": []} for user in the_plan.accounts]}},
    ])


def test_a_broker_that_holds_the_plan_gets_no_command(sync: ModuleType) -> None:
    the_plan = plan(sync)
    assert sync.commands(the_plan, live_of(sync, the_plan), PASSWORDS, set()) == []


def test_a_changed_share_group_swaps_the_one_acl(sync: ModuleType) -> None:
    live = live_of(sync, plan(sync, share_group="bridge"))

    sent = sync.commands(plan(sync, share_group="g2"), live, PASSWORDS, set())

    assert sent == [
        {"command": "removeRoleACL", "rolename": "bridge", "acltype": "subscribePattern",
         "topic": "$share/bridge/sensors/+/readings"},
        {"command": "addRoleACL", "rolename": "bridge", "acltype": "subscribePattern",
         "topic": "$share/g2/sensors/+/readings", "priority": 0, "allow": True},
    ]


def test_a_missing_account_and_role_are_created_and_a_stale_password_set(sync: ModuleType) -> None:
    the_plan = plan(sync)
    live = live_of(sync, the_plan)
    del live.roles["device-7"], live.clients["device-7"]
    live.clients["bridge"].clear()

    sent = sync.commands(the_plan, live, PASSWORDS, {"bridge"})

    assert [sync.describe(command) for command in sent] == [
        "createRole device-7", "addClientRole bridge", "setClientPassword bridge", "createClient device-7"]
    assert sent[2]["password"] == "bridge-pw" and sent[3]["password"] == "d7-pw"
    assert sent[3]["roles"] == [{"rolename": "device-7"}]
    assert "pw" not in " ".join(sync.describe(command) for command in sent), "no password in the log"


def test_what_concerns_admin_comes_last(sync: ModuleType) -> None:
    the_plan = plan(sync)
    live = live_of(sync, the_plan)
    live.roles["admin"] = set()

    sent = sync.commands(the_plan, live, PASSWORDS, {"admin", "bridge"})

    assert [command["command"] for command in sent[-4:]] == ["addRoleACL"] * 3 + ["setClientPassword"]
    assert sent[0] == {"command": "setClientPassword", "username": "bridge", "password": "bridge-pw"}


class FakeBroker:
    """The broker's state, its accounts' passwords, and what it was sent; `kick` drops the connection once."""

    def __init__(self, sync: ModuleType, live: Any, known: dict[str, str]) -> None:
        self.sync, self.live, self.known = sync, live, dict(known)
        self.batches: list[list[dict[str, Any]]] = []
        self.kick = False

    def accepts(self, user: str, password: str) -> bool:
        return self.known.get(user) == password

    def login(self, user: str, password: str) -> FakeBroker | None:
        return self if self.accepts(user, password) else None

    def request(self, batch: list[dict[str, Any]]) -> list[dict[str, Any]]:
        if batch[0]["command"] == "listRoles":
            return [{"command": "listRoles", "data": {"roles": [
                        {"rolename": name, "acls": [dict(zip(("acltype", "topic", "priority", "allow"), key,
                                                             strict=True)) for key in acls]}
                        for name, acls in self.live.roles.items()]}},
                    {"command": "listClients", "data": {"clients": [
                        {"username": user, "roles": [{"rolename": r} for r in roles]}
                        for user, roles in self.live.clients.items()]}}]
        self.batches.append(batch)
        for command in batch:
            if command["command"] == "setClientPassword":
                self.known[command["username"]] = command["password"]
        if self.kick:
            self.kick = False
            raise ConnectionError("kicked")
        return [{"command": command["command"]} for command in batch]

    def close(self) -> None:
        pass


def run(sync: ModuleType, the_plan: Any, broker: FakeBroker, lines: list[str]) -> int:
    result: int = sync.sync(the_plan, PASSWORDS, login=broker.login, accepts=broker.accepts, report=lines.append)
    return result


def test_only_pending_passwords_the_broker_refuses_are_set(sync: ModuleType) -> None:
    the_plan = plan(sync, pending=("bridge", "device-7"))
    broker = FakeBroker(sync, live_of(sync, the_plan), {**PASSWORDS, "bridge": "old-pw"})
    lines: list[str] = []

    assert run(sync, the_plan, broker, lines) == 1

    assert broker.batches == [[{"command": "setClientPassword", "username": "bridge", "password": "bridge-pw"}]]
    assert lines == ["broker-sync: setClientPassword bridge"]


def test_admins_old_password_logs_in_and_a_kick_is_checked_in_the_next_round(sync: ModuleType) -> None:
    the_plan = plan(sync, pending=("admin",), old_admin="old-admin")
    broker = FakeBroker(sync, live_of(sync, the_plan), {**PASSWORDS, "admin": "old-admin"})
    broker.kick = True  # the broker disconnects us when our own password changes

    assert run(sync, the_plan, broker, []) == 1

    assert broker.known["admin"] == "admin-pw"


def test_a_broker_refusing_admin_names_the_restart(sync: ModuleType) -> None:
    the_plan = plan(sync)
    broker = FakeBroker(sync, live_of(sync, the_plan), {**PASSWORDS, "admin": "unknown"})

    with pytest.raises(sync.SyncError, match=r"refused the `admin` account's password; .*docker compose restart "
                                             r"mosquitto"):
        run(sync, the_plan, broker, [])


def test_a_refused_command_names_it(sync: ModuleType) -> None:
    the_plan = plan(sync, pending=("bridge",))
    broker = FakeBroker(sync, live_of(sync, the_plan), {**PASSWORDS, "bridge": "old"})
    broker.request = lambda batch: (  # type: ignore[method-assign]
        FakeBroker.request(broker, batch) if batch[0]["command"] == "listRoles"
        else [{"command": "setClientPassword", "error": "Client not found"}])

    with pytest.raises(sync.SyncError, match="refused setClientPassword: Client not found"):
        run(sync, the_plan, broker, [])


class Link:
    def __init__(self, broker: FakeBroker) -> None:
        self.login: Callable[[str, str], FakeBroker | None] = broker.login
        self.accepts: Callable[[str, str], bool] = broker.accepts


def test_main_clears_the_pending_accounts_once_the_broker_holds_them(sync: ModuleType, tmp_path: Path) -> None:
    the_plan = plan(sync, pending=("bridge",), old_admin="old")
    sync.write_plan(tmp_path, the_plan)
    for user, password in PASSWORDS.items():
        (tmp_path / f"mqtt_{user}_password").write_text(password + "\n")
    broker = FakeBroker(sync, live_of(sync, the_plan), {**PASSWORDS, "bridge": "old"})
    lines: list[str] = []

    assert sync.main(tmp_path, link=Link(broker), report=lines.append) == 0

    saved = json.loads((tmp_path / sync.PLAN_FILE).read_text())
    assert saved["pending"] == [] and saved["old_admin_password"] == ""
    assert saved["accounts"] == the_plan.accounts
    assert lines[-1] == "broker-sync: the running broker holds accounts bridge, admin, device-7: 1 commands applied"


def test_main_without_a_plan_exits_2(sync: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    broker = FakeBroker(sync, live_of(sync, plan(sync)), PASSWORDS)

    assert sync.main(tmp_path, link=Link(broker)) == 2

    assert "the init service has not run" in capsys.readouterr().err
