"""The compose stack's `broker-sync`: bring the running broker's accounts and roles to what init wrote.

Mosquitto reads its dynamic-security file only when it starts, and an `up` that
changes no setting of the broker's container leaves it running. So init
(stack_init.py apply) also writes a plan into the secrets volume: our accounts
(with the store file holding each password), our roles with their ACLs, and the
accounts whose password the running broker may not know yet. broker-sync, once the
broker is healthy, applies it through the plugin's API ($CONTROL/dynamic-security/v1,
as the `admin` account), as `mosquitto_ctrl dynsec` would:

- a missing role or account is created, a role's ACLs made equal to the plan's
  (BRIDGE_SHARE_GROUP), an account given its role;
- a pending account's password is tried with a CONNECT; only if the broker refuses
  it is the password set (so the first `up`, whose broker loaded the new file, sends
  nothing).

Only differences are sent, since the broker disconnects the clients of a changed
role or password ("Administrative action"); they reconnect, their persistent
sessions keep what was queued. A password set this way is hashed by the broker
itself (Mosquitto 2.0: 101 PBKDF2 iterations, as mosquitto_ctrl's), which saves it
into the file. Nothing is deleted, as in init. Exit 0 when the broker matches the
plan, 1 when it could not be brought there (the message names the fix), 2 without a plan.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

PLAN_FILE = ".broker-sync.json"  # in the store; a dot file, so `init show` lists it not
CONTROL_TOPIC = "$CONTROL/dynamic-security/v1"
RESPONSE_TOPIC = f"{CONTROL_TOPIC}/response"
ADMIN = "admin"
TIMEOUT_S = 10.0
ROUNDS = 3  # a command that disconnects us (admin's own role or password) is checked in the next round
RESTART_HINT = "restart the broker so that it loads the accounts file init wrote: docker compose restart mosquitto"

AclKey = tuple[str, str, int, bool]  # acltype, topic, priority, allow
Command = dict[str, Any]


class SyncError(Exception):
    """The running broker could not be brought to the plan; the message names the fix."""


@dataclass(frozen=True)
class Plan:
    """What init wants the running broker to hold."""

    accounts: dict[str, str]  # username -> the store file holding its password; each has the role of its name
    roles: list[dict[str, Any]]  # our roles, as in the dynamic-security file
    pending: list[str] = field(default_factory=list)  # accounts whose password the broker may not know yet
    old_admin_password: str = ""  # admin's password before a change the broker may not know yet


def read_plan(folder: Path) -> Plan | None:
    """The plan init wrote last, or None (none yet, or unreadable)."""
    try:
        return Plan(**json.loads((folder / PLAN_FILE).read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError):
        return None


def write_plan(folder: Path, plan: Plan, *, chown: Callable[[Path, int], None] = lambda path, uid: None) -> None:
    """Replace the plan atomically, root's alone (it names the store's files, holds admin's old password)."""
    tmp = folder / f"{PLAN_FILE}.tmp"
    tmp.unlink(missing_ok=True)
    with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w", encoding="utf-8") as handle:
        json.dump(asdict(plan), handle, indent=2)
    chown(tmp, 0)
    tmp.replace(folder / PLAN_FILE)


def next_plan(
    previous: Plan | None, before: Mapping[str, Any], after: Mapping[str, Any], *,
    accounts: dict[str, str], roles: list[dict[str, Any]], stored_admin_password: str,
) -> Plan:
    """The plan after init turned the accounts file `before` into `after`.

    Pending: each account whose hash init wrote anew (a changed password, a new
    account), plus those still pending from an `up` whose broker-sync did not finish.
    Without a previous plan (the first `up`, or one after an older release) every
    account is pending: the CONNECT tries tell which ones the broker knows.
    admin's password before a change stays in the plan until a sync applied it (the
    oldest one: two changes without a sync between leave the broker the first).
    """
    hashes = {name: _hashes(document) for name, document in (("before", before), ("after", after))}
    changed = {user for user in accounts if hashes["after"].get(user) != hashes["before"].get(user)}
    pending = set(accounts) if previous is None else {*previous.pending, *changed} & set(accounts)
    old_admin = (previous.old_admin_password if previous else "") or (
        stored_admin_password if ADMIN in changed else "")
    return Plan(accounts=accounts, roles=roles, pending=sorted(pending), old_admin_password=old_admin)


def _hashes(document: Mapping[str, Any]) -> dict[str, tuple[Any, ...]]:
    return {c.get("username"): (c.get("password"), c.get("salt"), c.get("iterations"))
            for c in document.get("clients", [])}


@dataclass(frozen=True)
class Live:
    """The running broker's roles (with their ACLs) and accounts (with their roles)."""

    roles: dict[str, set[AclKey]]
    clients: dict[str, set[str]]


def acl_key(acl: Mapping[str, Any]) -> AclKey:
    """An ACL entry as the broker lists it, comparable with the plan's."""
    return str(acl["acltype"]), str(acl["topic"]), int(acl.get("priority", 0)), bool(acl.get("allow", True))


def parse_live(responses: list[dict[str, Any]]) -> Live:
    """The answers to listRoles and listClients (both verbose)."""
    by_command = {response["command"]: response.get("data") or {} for response in responses}
    roles = {role["rolename"]: {acl_key(acl) for acl in role.get("acls", [])}
             for role in by_command["listRoles"].get("roles", [])}
    clients = {client["username"]: {role["rolename"] for role in client.get("roles", [])}
               for client in by_command["listClients"].get("clients", [])}
    return Live(roles, clients)


def commands(plan: Plan, live: Live, passwords: Mapping[str, str], stale: set[str]) -> list[Command]:
    """The dynamic-security commands that make `live` hold the plan; `stale`: accounts whose password it refused.

    Whatever concerns `admin`, the account we are logged in as, comes last: the
    broker disconnects us when it changes.
    """
    result: list[Command] = []
    for role in plan.roles:
        name, wanted = role["rolename"], {acl_key(acl) for acl in role["acls"]}
        if name not in live.roles:
            result.append({"command": "createRole", "rolename": name, "acls": role["acls"]})
            continue
        for acltype, topic, _, _ in sorted(live.roles[name] - wanted):
            result.append({"command": "removeRoleACL", "rolename": name, "acltype": acltype, "topic": topic})
        for acltype, topic, priority, allow in sorted(wanted - live.roles[name]):
            result.append({"command": "addRoleACL", "rolename": name, "acltype": acltype, "topic": topic,
                           "priority": priority, "allow": allow})
    for user in plan.accounts:
        if user not in live.clients:
            result.append({"command": "createClient", "username": user, "password": passwords[user],
                           "roles": [{"rolename": user}]})
            continue
        if user not in live.clients[user]:
            result.append({"command": "addClientRole", "username": user, "rolename": user})
        if user in stale:
            result.append({"command": "setClientPassword", "username": user, "password": passwords[user]})
    return sorted(result, key=lambda command: ADMIN in (command.get("rolename"), command.get("username")))


def describe(command: Command) -> str:
    """A command as one line for the log, without its password."""
    subject = command.get("username") or command.get("rolename")
    detail = f" {command['acltype']} {command['topic']}" if "acltype" in command else ""
    return f"{command['command']} {subject}{detail}"


class Control(Protocol):
    """A connection to the broker as `admin`: one batch at a time; ConnectionError if it closes first."""

    def request(self, batch: list[Command]) -> list[dict[str, Any]]: ...

    def close(self) -> None: ...


def sync(
    plan: Plan, passwords: Mapping[str, str], *,
    login: Callable[[str, str], Control | None],
    accepts: Callable[[str, str], bool],
    report: Callable[[str], None],
) -> int:
    """Apply the plan to the running broker; return the number of commands sent. SyncError names the fix."""
    stale = {user for user in plan.pending if not accepts(user, passwords[user])}
    sent = 0
    for _ in range(ROUNDS):
        control = _login_as_admin(plan, passwords, login)
        try:
            live = parse_live(control.request([{"command": "listRoles", "verbose": True},
                                               {"command": "listClients", "verbose": True}]))
            batch = commands(plan, live, passwords, stale)
            if not batch:
                return sent
            for command in batch:
                report(f"broker-sync: {describe(command)}")
            sent += len(batch)
            _check(control.request(batch))
        except ConnectionError:
            pass  # the broker closed our connection (our own account changed): the next round lists again
        finally:
            control.close()
        stale = {user for user in stale if not accepts(user, passwords[user])}
    raise SyncError(f"the broker still differs from the plan after {ROUNDS} rounds; {RESTART_HINT}")


def _login_as_admin(plan: Plan, passwords: Mapping[str, str], login: Callable[[str, str], Control | None]) -> Control:
    """Log in with admin's current password, else the one the broker may still hold; SyncError if refused."""
    for password in filter(None, (passwords[ADMIN], plan.old_admin_password)):
        control = login(ADMIN, password)
        if control is not None:
            return control
    raise SyncError(f"the broker refused the `admin` account's password; {RESTART_HINT}")


def _check(responses: list[dict[str, Any]]) -> None:
    """SyncError naming the first command the broker refused."""
    for response in responses:
        if response.get("error"):
            raise SyncError(f"the broker refused {response['command']}: {response['error']}; {RESTART_HINT}")


class Link(Protocol):
    """How broker-sync reaches the broker (broker_link.PahoLink; a fake in unit tests)."""

    def login(self, username: str, password: str) -> Control | None: ...

    def accepts(self, username: str, password: str) -> bool: ...


def main(store: Path, *, link: Link, report: Callable[[str], None] = print) -> int:
    """The broker-sync service: exit 0 (the broker matches), 1 (it could not be brought there), 2 (no plan)."""
    plan = read_plan(store)
    if plan is None:
        print(f"broker-sync: no plan in {store / PLAN_FILE}: the init service has not run", file=sys.stderr)
        return 2
    passwords = {user: (store / name).read_text(encoding="utf-8").strip() for user, name in plan.accounts.items()}
    try:
        sent = sync(plan, passwords, login=link.login, accepts=link.accepts, report=report)
    except (SyncError, OSError) as exc:
        print(f"broker-sync: {exc}", file=sys.stderr)
        return 1
    write_plan(store, Plan(accounts=plan.accounts, roles=plan.roles))
    state = f"{sent} commands applied" if sent else "nothing to change"
    report(f"broker-sync: the running broker holds accounts {', '.join(plan.accounts)}: {state}")
    return 0
