"""deploy/compose/stack_init.py: the compose stack's secrets and broker accounts, in a temporary folder.

With secret_values.py (which value each secret gets, upgrades from the release whose
.env held `change-me`) and secret_files.py (the store, each service's own volume).
"""

from __future__ import annotations

import json
import stat
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from mosquitto import dynsec

ALL_SECRETS = {
    "postgres_password", "bridge_db_password", "watchdog_db_password", "reader_db_password",
    "mqtt_bridge_password", "mqtt_watchdog_password", "mqtt_simulator_password", "mqtt_admin_password",
    "mqtt_health_password", "grafana_admin_password", "discord_webhook_url", "mqtt_site_bridge_password",
}
OUR_ACCOUNTS = {"bridge", "watchdog", "simulator", "admin", "health", "site-bridge"}
ACCOUNTS_LINE = "bridge, watchdog, simulator, admin, health, site-bridge"  # as init reports them
STRONG = "-Long-Enough-For-The-Broker-42"  # makes a test password pass dynsec's rule
OLD_ITERATIONS = 7  # stands for the old release's 210,000 (each hash would cost 0.13 s)
PLAN = ".broker-sync.json"
# The old release's .env.example, as shipped (git show a0b08da^:.env.example); its MQTT
# passwords were refused as they are, so an operator had set real ones (OLD_MQTT), random ones as its
# comment said (a guessable one is refused now: test_an_upgrade_with_a_guessable_broker_password_stops).
OLD_ENV_EXAMPLE = """\
POSTGRES_PASSWORD=change-me
BRIDGE_DB_PASSWORD=change-me
WATCHDOG_DB_PASSWORD=change-me
READER_DB_PASSWORD=change-me
MQTT_BRIDGE_PASSWORD=change-me
MQTT_WATCHDOG_PASSWORD=change-me
MQTT_SIMULATOR_PASSWORD=change-me
MQTT_ADMIN_PASSWORD=
MQTT_DEVICES=
DISCORD_WEBHOOK_URL=
GRAFANA_ADMIN_PASSWORD=change-me
MQTT_PORT=1883
POSTGRES_PORT=5432
"""
OLD_MQTT = {"MQTT_BRIDGE_PASSWORD": f"old-bridge-pw{STRONG}", "MQTT_WATCHDOG_PASSWORD": f"old-watchdog-pw{STRONG}",
            "MQTT_SIMULATOR_PASSWORD": f"old-simulator-pw{STRONG}"}


def old_env(**overrides: str) -> dict[str, str]:
    lines = (line.partition("=") for line in OLD_ENV_EXAMPLE.splitlines())
    return {**{key: value for key, _, value in lines}, **overrides}


class Stack:
    """The two volumes in a temporary folder, and what the last apply reported and chowned."""

    def __init__(self, module: ModuleType, root: Path) -> None:
        self.module = module
        self.secrets = root / "secrets"
        self.shares = root / "shares"
        self.dynsec = root / "dynsec"
        self.database = root / "postgres-data"
        self.owners: dict[Path, int] = {}
        self.lines: list[str] = []
        self._tokens = (f"token-{n}{STRONG}" for n in range(1_000_000))

    def apply(self, **environ: str) -> list[str]:
        return self.apply_hashing_at(None, environ)

    def apply_hashing_at(self, iterations: int | None, environ: dict[str, str]) -> list[str]:
        self.lines = []
        self.module.apply(
            environ, secrets_folder=self.secrets, shares_folder=self.shares, dynsec_folder=self.dynsec,
            database_folder=self.database, iterations=iterations, chown=self.owners.__setitem__,
            token=lambda: next(self._tokens), report=self.lines.append,
        )
        return self.lines

    def secret(self, name: str) -> str:
        return (self.secrets / name).read_text(encoding="utf-8")

    def share(self, service: str) -> dict[str, str]:
        return {p.name: p.read_text(encoding="utf-8") for p in (self.shares / service).iterdir()}

    def plan(self) -> dict[str, Any]:
        return json.loads((self.secrets / PLAN).read_text())  # type: ignore[no-any-return]

    def old_release_state(self) -> None:
        """What the release before the secrets volume left: a database, the broker's file from .env, no store."""
        self.database.mkdir()
        (self.database / "PG_VERSION").write_text("16\n")
        self.dynsec.mkdir()
        old = dynsec.build({**OLD_MQTT, "MQTT_ADMIN_PASSWORD": f"old-admin-pw{STRONG}"},
                                  iterations=OLD_ITERATIONS)
        (self.dynsec / "dynamic-security.json").write_text(json.dumps(old))

    def document(self) -> dict[str, Any]:
        return json.loads((self.dynsec / "dynamic-security.json").read_text())  # type: ignore[no-any-return]

    def account(self, username: str) -> dict[str, Any]:
        (found,) = [c for c in self.document()["clients"] if c["username"] == username]
        return found  # type: ignore[no-any-return]

    def files(self) -> dict[str, str]:
        return {str(p): p.read_text() for p in sorted([*self.secrets.glob("*"), *self.shares.rglob("*"),
                                                       *self.dynsec.rglob("*")]) if p.is_file()}


@pytest.fixture
def stack(stack_init: ModuleType, tmp_path: Path) -> Iterator[Stack]:
    yield Stack(stack_init, tmp_path)


def test_a_first_up_without_env_generates_every_password(stack: Stack) -> None:
    lines = stack.apply()

    assert {p.name for p in stack.secrets.iterdir()} == ALL_SECRETS | {PLAN}
    generated = {name: stack.secret(name) for name in ALL_SECRETS - {"discord_webhook_url"}}
    assert all(value.startswith("token-") for value in generated.values())
    assert len(set(generated.values())) == len(generated)
    assert stack.secret("discord_webhook_url") == ""  # the watchdog reads "no webhook"
    assert "init: bridge_db_password: generated" in lines
    assert {c["username"] for c in stack.document()["clients"]} == OUR_ACCOUNTS
    for account in OUR_ACCOUNTS:
        secret = f"mqtt_{account.replace('-', '_')}_password"
        assert dynsec.password_matches(stack.account(account), stack.secret(secret))
    assert lines[-1].startswith(f"init: broker accounts {ACCOUNTS_LINE}: updated")


def test_the_real_generator_makes_url_safe_tokens(stack_init: ModuleType, tmp_path: Path) -> None:
    stack_init.apply({}, secrets_folder=tmp_path / "s", shares_folder=tmp_path / "sh", dynsec_folder=tmp_path / "d",
                     database_folder=tmp_path / "db", chown=lambda path, uid: None,
                     report=lambda line: None)

    value = (tmp_path / "s" / "bridge_db_password").read_text()
    assert len(value) == 32 and value.replace("-", "").replace("_", "").isalnum()


def test_a_later_up_keeps_every_password_and_the_broker_file(stack: Stack) -> None:
    stack.apply()
    before = stack.files()

    lines = stack.apply(POSTGRES_PASSWORD="", MQTT_DEVICES="")  # compose passes unset variables as empty

    assert stack.files() == before
    assert lines == [f"init: {len(ALL_SECRETS)} secrets kept in {stack.secrets}",
                     f"init: broker accounts {ACCOUNTS_LINE}: unchanged"]


def test_a_value_in_env_overrides_the_stored_one(stack: Stack) -> None:
    stack.apply()
    watchdog_before = stack.account("watchdog")

    lines = stack.apply(BRIDGE_DB_PASSWORD="db-p@ss/w%41:rd", MQTT_BRIDGE_PASSWORD=f"mq-p@ss/w%41:rd{STRONG}")

    assert stack.secret("bridge_db_password") == "db-p@ss/w%41:rd"
    assert "init: mqtt_bridge_password: set from .env" in lines
    assert dynsec.password_matches(stack.account("bridge"), f"mq-p@ss/w%41:rd{STRONG}")
    assert stack.account("watchdog") == watchdog_before
    assert "updated" in lines[-1]
    assert "set from .env" not in "".join(stack.apply(BRIDGE_DB_PASSWORD="db-p@ss/w%41:rd"))


def test_the_store_is_roots_and_each_service_gets_only_its_own_secrets(stack: Stack, stack_init: ModuleType) -> None:
    stack.apply(DISCORD_WEBHOOK_URL="https://discord.com/api/webhooks/1/tok")

    assert stat.S_IMODE(stack.secrets.stat().st_mode) == 0o700
    for name in ALL_SECRETS:
        assert stat.S_IMODE((stack.secrets / name).stat().st_mode) == 0o400, name
    owner = {str(path.relative_to(stack.secrets.parent)): uid for path, uid in stack.owners.items()}
    assert {uid for path, uid in owner.items() if path.startswith("secrets")} == {0}
    readable = {share: set(stack.share(share)) for share in
                ("bridge", "watchdog", "simulator", "postgres", "migrate", "grafana")}
    assert readable == {
        "bridge": {"bridge_db_password", "mqtt_bridge_password"},
        "watchdog": {"watchdog_db_password", "mqtt_watchdog_password", "discord_webhook_url"},
        "simulator": {"reader_db_password", "mqtt_simulator_password"},
        "postgres": {"postgres_password"},
        "migrate": {"postgres.pgpass", "bridge_db_password", "watchdog_db_password", "reader_db_password"},
        "grafana": {"grafana_admin_password", "reader_db_password"},
    }
    assert stack.share("watchdog")["discord_webhook_url"] == "https://discord.com/api/webhooks/1/tok"
    for share, names in readable.items():
        for name in names:
            path = stack.shares / share / name
            assert stat.S_IMODE(path.stat().st_mode) == 0o400, path
            expected = {"postgres": 0, "migrate": 0, "grafana": 472}.get(share, stack_init.files.APP_UID)
            assert owner[f"shares/{share}/{name}"] == expected, path
    assert owner["dynsec/dynamic-security.json"] == owner["dynsec"] == 1883
    assert owner["dynsec/health/mosquitto_sub"] == 0
    assert stat.S_IMODE((stack.dynsec / "dynamic-security.json").stat().st_mode) == 0o600
    assert not any(p.name.endswith(".tmp") for p in [*stack.secrets.iterdir(), *stack.shares.rglob("*")])


def test_a_share_follows_its_secret_and_loses_a_file_it_may_no_longer_read(stack: Stack) -> None:
    stack.apply(READER_DB_PASSWORD="reader-pw")
    assert stack.share("grafana")["reader_db_password"] == stack.share("simulator")["reader_db_password"] == "reader-pw"
    (stack.shares / "bridge" / "discord_webhook_url").write_text("left by an older layout")

    stack.apply(READER_DB_PASSWORD="rotated-pw")

    assert stack.share("grafana")["reader_db_password"] == "rotated-pw"
    assert set(stack.share("bridge")) == {"bridge_db_password", "mqtt_bridge_password"}


def test_the_previous_layouts_copies_leave_the_store(stack: Stack) -> None:
    stack.secrets.mkdir()
    for name in ("postgres.pgpass", "grafana_reader_db_password"):
        (stack.secrets / name).write_text("old copy")

    stack.apply()

    assert not (stack.secrets / "postgres.pgpass").exists()
    assert not (stack.secrets / "grafana_reader_db_password").exists()


def test_the_health_check_gets_its_options_file_and_migrate_a_pgpass(stack: Stack) -> None:
    stack.apply(POSTGRES_PASSWORD="own:er\\pw")

    options = (stack.dynsec / "health" / "mosquitto_sub").read_text()
    assert options == f"-u health\n-P {stack.secret('mqtt_health_password')}\n"
    assert stack.share("migrate")["postgres.pgpass"] == "*:*:*:*:own\\:er\\\\pw\n"


@pytest.mark.parametrize(("variable", "value", "problem"), [
    ("GRAFANA_ADMIN_PASSWORD", " padded", "must not start or end with spaces"),
    ("READER_DB_PASSWORD", "two\nlines", "control characters"),
    # Grafana expands $NAME in the readings data source's password and in its own settings.
    ("READER_DB_PASSWORD", "pa$word", "must not hold '\\$': Grafana"),
    ("GRAFANA_ADMIN_PASSWORD", "pa${HOME}", "must not hold '\\$': Grafana"),
    ("MQTT_DEVICES", "seven", "expected <sensor_id>"),
])
def test_a_refused_value_names_the_variable_and_nothing_is_written(
    stack: Stack, variable: str, value: str, problem: str
) -> None:
    with pytest.raises(stack.module.InitError, match=problem) as caught:
        stack.apply(**{variable: value})

    assert str(caught.value).startswith(variable)
    assert "\n" not in str(caught.value)
    assert not stack.secrets.exists() and not stack.dynsec.exists() and not stack.shares.exists()


def test_a_dollar_reaches_every_other_secret_unchanged(stack: Stack) -> None:
    stack.apply(BRIDGE_DB_PASSWORD="pa$word", MQTT_BRIDGE_PASSWORD=f"pa$${{x}}{STRONG}")

    assert stack.share("bridge") == {"bridge_db_password": "pa$word", "mqtt_bridge_password": f"pa$${{x}}{STRONG}"}


@pytest.mark.parametrize(("variable", "value"), [
    ("MQTT_BRIDGE_PASSWORD", "hunter2"), ("MQTT_ADMIN_PASSWORD", "a" * 27), ("MQTT_DEVICES", "8:d8-p@ss"),
])
def test_a_guessable_broker_password_from_env_is_refused_and_nothing_is_written(
    stack: Stack, variable: str, value: str
) -> None:
    with pytest.raises(stack.module.InitError) as caught:
        stack.apply(**{variable: value})

    message = str(caught.value)
    assert message.startswith(f"{variable}{' (device 8)' if variable == 'MQTT_DEVICES' else ''}: too guessable")
    assert "token_urlsafe" in message and "remove it from .env to have one generated" in message
    assert "\n" not in message and value.rsplit(":", maxsplit=1)[-1] not in message
    assert not stack.secrets.exists() and not stack.shares.exists() and not stack.dynsec.exists()


def test_a_guessable_broker_password_kept_from_an_earlier_env_is_refused_naming_its_file(stack: Stack) -> None:
    stack.apply(BRIDGE_DB_PASSWORD="db-pw")  # not a broker account: no rule for it
    (stack.secrets / "mqtt_watchdog_password").chmod(0o600)
    (stack.secrets / "mqtt_watchdog_password").write_text("w-pw")  # what an older init stored from .env
    before = stack.files()

    with pytest.raises(stack.module.InitError) as caught:
        stack.apply()

    message = str(caught.value)
    assert message.startswith(f"{stack.secrets / 'mqtt_watchdog_password'}, kept from an earlier .env: too guessable")
    assert "set it as MQTT_WATCHDOG_PASSWORD in .env, or delete the file" in message
    assert stack.files() == before


def test_accounts_hashed_at_another_count_are_rehashed_at_the_next_up(stack: Stack) -> None:
    """The migration: a broker file from before (210,000 iterations; OLD_ITERATIONS here) gets one-iteration hashes."""
    stack.apply_hashing_at(OLD_ITERATIONS, {})
    assert {c["iterations"] for c in stack.document()["clients"]} == {OLD_ITERATIONS}

    lines = stack.apply()

    for account in OUR_ACCOUNTS:
        entry = stack.account(account)
        assert entry["iterations"] == dynsec.ITERATIONS == 1, account
        assert dynsec.password_matches(entry, stack.secret(f"mqtt_{account.replace('-', '_')}_password")), account
    assert lines[-1].startswith(f"init: broker accounts {ACCOUNTS_LINE}: updated")
    assert stack.apply()[-1].endswith(": unchanged")


def test_main_exits_2_with_one_line(
    stack_init: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("READER_DB_PASSWORD", "pa$word")

    assert stack_init.main(["--secrets", str(tmp_path / "s"), "--dynsec", str(tmp_path / "d"),
                            "--shares", str(tmp_path / "sh"), "--database", str(tmp_path / "db")]) == 2

    err = capsys.readouterr().err
    assert err.startswith("init: READER_DB_PASSWORD: must not hold '$'") and err.count("\n") == 1


def test_devices_get_generated_or_given_passwords_and_are_never_deleted(stack: Stack) -> None:
    stack.apply(MQTT_DEVICES=f"7, 8:d8-p@ss{STRONG}")

    assert stack.secret("mqtt_device_7_password").startswith("token-")
    assert stack.secret("mqtt_device_8_password") == f"d8-p@ss{STRONG}"
    assert dynsec.password_matches(stack.account("device-7"), stack.secret("mqtt_device_7_password"))
    assert dynsec.password_matches(stack.account("device-8"), f"d8-p@ss{STRONG}")

    stack.apply(MQTT_DEVICES="7,9")

    assert {c["username"] for c in stack.document()["clients"]} == OUR_ACCOUNTS | {"device-7", "device-8", "device-9"}
    assert dynsec.password_matches(stack.account("device-9"), stack.secret("mqtt_device_9_password"))


def test_what_the_broker_saved_is_kept(stack: Stack) -> None:
    stack.apply()
    document = stack.document()
    document["clients"].append(dynsec.client("ops", "o", "admin", iterations=101, salt=b"s" * 12))
    (stack.dynsec / "dynamic-security.json").write_text(json.dumps(document))

    stack.apply(MQTT_BRIDGE_PASSWORD=f"rotated{STRONG}")

    assert "ops" in {c["username"] for c in stack.document()["clients"]}
    assert dynsec.password_matches(stack.account("bridge"), f"rotated{STRONG}")


def test_a_broken_broker_file_is_refused_not_replaced(stack: Stack) -> None:
    stack.dynsec.mkdir()
    (stack.dynsec / "dynamic-security.json").write_text("{not json")

    with pytest.raises(stack.module.InitError, match="is not valid JSON"):
        stack.apply()

    assert (stack.dynsec / "dynamic-security.json").read_text() == "{not json"
    assert not stack.secrets.exists()


def test_the_webhook_follows_env(stack: Stack) -> None:
    stack.apply(DISCORD_WEBHOOK_URL="https://discord.com/api/webhooks/1/tok")
    assert stack.secret("discord_webhook_url") == "https://discord.com/api/webhooks/1/tok"

    assert "init: discord_webhook_url: emptied" in stack.apply()
    assert stack.secret("discord_webhook_url") == ""


def test_show_lists_names_and_prints_values(stack: Stack, capsys: pytest.CaptureFixture[str]) -> None:
    stack.apply(MQTT_DEVICES="7")
    out: list[str] = []

    assert stack.module.show(stack.secrets, [], out=out.append) == 0
    assert set(out) == ALL_SECRETS | {"mqtt_device_7_password"}
    out.clear()
    assert stack.module.show(stack.secrets, ["mqtt_device_7_password", "mqtt_simulator_password"], out=out.append) == 0
    assert out == [stack.secret("mqtt_device_7_password"), stack.secret("mqtt_simulator_password")]
    assert stack.module.show(stack.secrets, ["nope"], out=out.append) == 1
    assert "no secret named nope" in capsys.readouterr().err


# --- upgrading from the release whose .env.example shipped `change-me` -------------------------


def test_an_upgrade_with_the_old_env_keeps_the_owner_password_the_database_has(stack: Stack) -> None:
    stack.old_release_state()
    roles_before = stack.account("bridge")["roles"]

    lines = stack.apply(**old_env(**OLD_MQTT))

    # The database was created with the placeholder: only it logs in, so migrate gets it.
    assert stack.secret("postgres_password") == "change-me"
    assert stack.share("migrate")["postgres.pgpass"] == "*:*:*:*:change-me\n"
    assert any(line.startswith("init: WARNING: the database owner's password is 'change-me'") for line in lines)
    # The login roles' passwords are new (migrate sets them on every up); the broker's are .env's.
    assert stack.secret("bridge_db_password").startswith("token-")
    assert "init: BRIDGE_DB_PASSWORD=change-me in .env ignored (the old examples' placeholder): a new password " \
           "was generated; delete that line from .env" in lines
    assert stack.secret("mqtt_bridge_password") == OLD_MQTT["MQTT_BRIDGE_PASSWORD"]
    # The same password, re-hashed from the old release's iteration count to dynsec's one (docs/security.md).
    assert stack.account("bridge")["iterations"] == dynsec.ITERATIONS == 1
    assert dynsec.password_matches(stack.account("bridge"), OLD_MQTT["MQTT_BRIDGE_PASSWORD"])
    assert stack.account("bridge")["roles"] == roles_before
    assert dynsec.password_matches(stack.account("health"), stack.secret("mqtt_health_password"))

    before = stack.files()
    again = stack.apply(**old_env(**OLD_MQTT))  # the next up, .env untouched: nothing changes

    assert stack.files() == before
    assert "init: BRIDGE_DB_PASSWORD=change-me in .env ignored (the old examples' placeholder): the stored " \
           "password is kept; delete that line from .env" in again
    assert any(line.startswith("init: WARNING:") for line in again), "said at every up until it is changed"


def test_an_upgrade_with_a_guessable_broker_password_stops_naming_it(stack: Stack) -> None:
    """The old release hashed at 210,000 iterations; hashed cheaply now, a short password must go first."""
    stack.old_release_state()

    with pytest.raises(stack.module.InitError, match=r"^MQTT_SIMULATOR_PASSWORD: too guessable"):
        stack.apply(**old_env(**{**OLD_MQTT, "MQTT_SIMULATOR_PASSWORD": "old-simulator-pw"}))

    assert not stack.secrets.exists() and not stack.shares.exists()


def test_an_upgrade_never_generates_an_owner_password_the_database_does_not_know(stack: Stack) -> None:
    stack.old_release_state()

    with pytest.raises(stack.module.InitError, match=r"^POSTGRES_PASSWORD: the database volume exists") as caught:
        stack.apply(**old_env(POSTGRES_PASSWORD="", **OLD_MQTT))  # the line deleted, as the old message said

    assert "set POSTGRES_PASSWORD in .env to the password the database was created with" in str(caught.value)
    assert not stack.secrets.exists() and not stack.shares.exists()


def test_an_upgrade_with_a_real_owner_password_in_env_uses_it(stack: Stack) -> None:
    stack.old_release_state()

    lines = stack.apply(**old_env(POSTGRES_PASSWORD="0wner-pw", **OLD_MQTT))

    assert stack.secret("postgres_password") == "0wner-pw"
    assert not any("WARNING" in line for line in lines)


def test_the_old_env_on_a_fresh_clone_generates_what_it_holds_as_placeholders(stack: Stack) -> None:
    lines = stack.apply(**old_env(MQTT_DEVICES="7:change-me"))

    for name in ALL_SECRETS - {"discord_webhook_url"}:
        assert stack.secret(name).startswith("token-"), name
    assert stack.secret("mqtt_device_7_password").startswith("token-")
    assert sum("=change-me in .env ignored" in line for line in lines) == 9  # 8 variables and device 7
    assert not any("WARNING" in line for line in lines), "a new database takes a generated owner password"


def test_the_placeholder_after_a_first_up_keeps_what_is_stored(stack: Stack) -> None:
    stack.apply()
    before = stack.files()

    stack.apply(**old_env())

    assert stack.files() == before


# --- the plan broker-sync applies to the running broker -----------------------------------------


def test_the_first_plan_has_every_account_pending_and_the_roles_of_the_share_group(stack: Stack) -> None:
    stack.apply(BRIDGE_SHARE_GROUP="g2", MQTT_DEVICES="7")

    plan = stack.plan()
    assert set(plan["pending"]) == set(plan["accounts"]) == OUR_ACCOUNTS | {"device-7"}
    assert plan["accounts"]["device-7"] == "mqtt_device_7_password"
    (bridge,) = [role for role in plan["roles"] if role["rolename"] == "bridge"]
    assert {"acltype": "subscribePattern", "topic": "$share/g2/sensors/+/readings", "priority": 0,
            "allow": True} in bridge["acls"]
    assert stat.S_IMODE((stack.secrets / PLAN).stat().st_mode) == 0o600


def test_later_plans_add_changed_passwords_and_new_accounts_to_what_is_still_pending(stack: Stack) -> None:
    stack.apply()
    synced = {**stack.plan(), "pending": []}  # as broker-sync leaves it
    (stack.secrets / PLAN).write_text(json.dumps(synced))
    stack.apply()
    assert stack.plan()["pending"] == []

    stack.apply(MQTT_BRIDGE_PASSWORD=f"rotated{STRONG}")
    stack.apply(MQTT_BRIDGE_PASSWORD=f"rotated{STRONG}", MQTT_DEVICES="9")

    assert stack.plan()["pending"] == ["bridge", "device-9"]


def test_the_plan_keeps_the_admin_password_the_running_broker_still_knows(stack: Stack) -> None:
    stack.apply()
    first = stack.secret("mqtt_admin_password")
    (stack.secrets / PLAN).write_text(json.dumps({**stack.plan(), "pending": []}))

    stack.apply(MQTT_ADMIN_PASSWORD=f"second{STRONG}")
    stack.apply(MQTT_ADMIN_PASSWORD=f"third{STRONG}")

    assert stack.plan()["old_admin_password"] == first
    assert "admin" in stack.plan()["pending"]
