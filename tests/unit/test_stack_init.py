"""deploy/compose/stack_init.py: the compose stack's secrets and broker accounts, in a temporary folder."""

from __future__ import annotations

import json
import stat
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from devstack.servers import load_dynsec

ALL_SECRETS = {
    "postgres_password", "bridge_db_password", "watchdog_db_password", "reader_db_password",
    "mqtt_bridge_password", "mqtt_watchdog_password", "mqtt_simulator_password", "mqtt_admin_password",
    "mqtt_health_password", "grafana_admin_password", "discord_webhook_url",
}
OUR_ACCOUNTS = {"bridge", "watchdog", "simulator", "admin", "health"}
STRONG = "-Long-Enough-For-The-Broker-42"  # makes a test password pass dynsec's rule


@pytest.fixture(scope="module")
def dynsec() -> ModuleType:
    return load_dynsec()


class Stack:
    """The two volumes in a temporary folder, and what the last apply reported and chowned."""

    def __init__(self, module: ModuleType, root: Path) -> None:
        self.module = module
        self.secrets = root / "secrets"
        self.dynsec = root / "dynsec"
        self.owners: dict[Path, int] = {}
        self.lines: list[str] = []
        self._tokens = (f"token-{n}{STRONG}" for n in range(1_000_000))

    def apply(self, **environ: str) -> list[str]:
        return self.apply_hashing_at(None, environ)

    def apply_hashing_at(self, iterations: int | None, environ: dict[str, str]) -> list[str]:
        self.lines = []
        self.module.apply(
            environ, secrets_folder=self.secrets, dynsec_folder=self.dynsec, iterations=iterations,
            chown=self.owners.__setitem__, token=lambda: next(self._tokens),
            report=self.lines.append,
        )
        return self.lines

    def secret(self, name: str) -> str:
        return (self.secrets / name).read_text(encoding="utf-8")

    def document(self) -> dict[str, Any]:
        return json.loads((self.dynsec / "dynamic-security.json").read_text())  # type: ignore[no-any-return]

    def account(self, username: str) -> dict[str, Any]:
        (found,) = [c for c in self.document()["clients"] if c["username"] == username]
        return found  # type: ignore[no-any-return]

    def files(self) -> dict[str, str]:
        return {p.name: p.read_text() for p in sorted([*self.secrets.glob("*"), *self.dynsec.rglob("*")])
                if p.is_file()}


@pytest.fixture
def stack(stack_init: ModuleType, tmp_path: Path) -> Iterator[Stack]:
    yield Stack(stack_init, tmp_path)


def test_a_first_up_without_env_generates_every_password(stack: Stack, dynsec: ModuleType) -> None:
    lines = stack.apply()

    assert {p.name for p in stack.secrets.iterdir()} == ALL_SECRETS | {"postgres.pgpass", "grafana_reader_db_password"}
    generated = {name: stack.secret(name) for name in ALL_SECRETS - {"discord_webhook_url"}}
    assert all(value.startswith("token-") for value in generated.values())
    assert len(set(generated.values())) == len(generated)
    assert stack.secret("discord_webhook_url") == ""  # the watchdog reads "no webhook"
    assert "init: bridge_db_password: generated" in lines
    assert {c["username"] for c in stack.document()["clients"]} == OUR_ACCOUNTS
    for account in OUR_ACCOUNTS:
        assert dynsec.password_matches(stack.account(account), stack.secret(f"mqtt_{account}_password"))
    assert lines[-1].startswith("init: broker accounts bridge, watchdog, simulator, admin, health: updated")


def test_the_real_generator_makes_url_safe_tokens(stack_init: ModuleType, tmp_path: Path) -> None:
    stack_init.apply({}, secrets_folder=tmp_path / "s", dynsec_folder=tmp_path / "d",
                     chown=lambda path, uid: None, report=lambda line: None)

    value = (tmp_path / "s" / "bridge_db_password").read_text()
    assert len(value) == 32 and value.replace("-", "").replace("_", "").isalnum()


def test_a_later_up_keeps_every_password_and_the_broker_file(stack: Stack) -> None:
    stack.apply()
    before = stack.files()

    lines = stack.apply(POSTGRES_PASSWORD="", MQTT_DEVICES="")  # compose passes unset variables as empty

    assert stack.files() == before
    assert lines == [f"init: {len(ALL_SECRETS)} secrets kept in {stack.secrets}",
                     "init: broker accounts bridge, watchdog, simulator, admin, health: unchanged"]


def test_a_value_in_env_overrides_the_stored_one(stack: Stack, dynsec: ModuleType) -> None:
    stack.apply()
    watchdog_before = stack.account("watchdog")

    lines = stack.apply(BRIDGE_DB_PASSWORD="db-p@ss/w%41:rd", MQTT_BRIDGE_PASSWORD=f"mq-p@ss/w%41:rd{STRONG}")

    assert stack.secret("bridge_db_password") == "db-p@ss/w%41:rd"
    assert "init: mqtt_bridge_password: set from .env" in lines
    assert dynsec.password_matches(stack.account("bridge"), f"mq-p@ss/w%41:rd{STRONG}")
    assert stack.account("watchdog") == watchdog_before
    assert "updated" in lines[-1]
    assert "set from .env" not in "".join(stack.apply(BRIDGE_DB_PASSWORD="db-p@ss/w%41:rd"))


def test_files_are_readable_only_by_root_and_their_reader(stack: Stack, stack_init: ModuleType) -> None:
    stack.apply()

    for name in [*ALL_SECRETS, "postgres.pgpass", "grafana_reader_db_password"]:
        assert stat.S_IMODE((stack.secrets / name).stat().st_mode) == 0o400, name
    owner = {path.name: uid for path, uid in stack.owners.items()}
    assert owner["bridge_db_password"] == owner["mqtt_simulator_password"] == stack_init.APP_UID == 10001
    assert owner["postgres_password"] == owner["mqtt_admin_password"] == owner["postgres.pgpass"] == 0
    assert owner["grafana_admin_password"] == owner["grafana_reader_db_password"] == 472
    assert owner["reader_db_password"] == stack_init.APP_UID, "Grafana's copy widens no other secret"
    assert owner["dynamic-security.json"] == owner["dynsec"] == 1883
    assert owner["mosquitto_sub"] == 0
    assert stat.S_IMODE((stack.dynsec / "dynamic-security.json").stat().st_mode) == 0o600
    assert not any(p.name.endswith(".tmp") for p in stack.secrets.iterdir())


def test_grafana_gets_its_own_copy_of_the_reader_password_which_follows_it(stack: Stack) -> None:
    stack.apply(READER_DB_PASSWORD="reader-pw")
    assert stack.secret("grafana_reader_db_password") == stack.secret("reader_db_password") == "reader-pw"

    stack.apply(READER_DB_PASSWORD="rotated-pw")

    assert stack.secret("grafana_reader_db_password") == "rotated-pw"


def test_the_health_check_gets_its_options_file_and_migrate_a_pgpass(stack: Stack) -> None:
    stack.apply(POSTGRES_PASSWORD="own:er\\pw")

    options = (stack.dynsec / "health" / "mosquitto_sub").read_text()
    assert options == f"-u health\n-P {stack.secret('mqtt_health_password')}\n"
    assert stack.secret("postgres.pgpass") == "*:*:*:*:own\\:er\\\\pw\n"


@pytest.mark.parametrize(("variable", "value", "problem"), [
    ("POSTGRES_PASSWORD", "change-me", "'change-me' is the old examples' placeholder"),
    ("MQTT_WATCHDOG_PASSWORD", "change-me", "'change-me' is the old examples' placeholder"),
    ("GRAFANA_ADMIN_PASSWORD", " padded", "must not start or end with spaces"),
    ("READER_DB_PASSWORD", "two\nlines", "control characters"),
    ("MQTT_DEVICES", "7:change-me", "'change-me'"),
    ("MQTT_DEVICES", "seven", "expected <sensor_id>"),
])
def test_a_refused_value_names_the_variable_and_nothing_is_written(
    stack: Stack, variable: str, value: str, problem: str
) -> None:
    with pytest.raises(stack.module.InitError, match=problem) as caught:
        stack.apply(**{variable: value})

    assert str(caught.value).startswith(variable)
    assert "\n" not in str(caught.value)
    assert not stack.secrets.exists() and not stack.dynsec.exists()


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
    assert not stack.secrets.exists() and not stack.dynsec.exists()


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


def test_accounts_hashed_at_another_count_are_rehashed_at_the_next_up(stack: Stack, dynsec: ModuleType) -> None:
    """The migration: a broker file from before (210,000 iterations; 7 here, for speed) gets one-iteration hashes."""
    stack.apply_hashing_at(7, {})
    assert {c["iterations"] for c in stack.document()["clients"]} == {7}

    lines = stack.apply()

    for account in OUR_ACCOUNTS:
        entry = stack.account(account)
        assert entry["iterations"] == dynsec.ITERATIONS == 1, account
        assert dynsec.password_matches(entry, stack.secret(f"mqtt_{account}_password")), account
    assert lines[-1].startswith("init: broker accounts bridge, watchdog, simulator, admin, health: updated")
    assert stack.apply()[-1].endswith(": unchanged")


def test_main_exits_2_with_one_line(
    stack_init: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("BRIDGE_DB_PASSWORD", "change-me")

    assert stack_init.main(["--secrets", str(tmp_path / "s"), "--dynsec", str(tmp_path / "d")]) == 2

    err = capsys.readouterr().err
    assert err.startswith("init: BRIDGE_DB_PASSWORD: 'change-me'") and err.count("\n") == 1


def test_devices_get_generated_or_given_passwords_and_are_never_deleted(stack: Stack, dynsec: ModuleType) -> None:
    stack.apply(MQTT_DEVICES=f"7, 8:d8-p@ss{STRONG}")

    assert stack.secret("mqtt_device_7_password").startswith("token-")
    assert stack.secret("mqtt_device_8_password") == f"d8-p@ss{STRONG}"
    assert dynsec.password_matches(stack.account("device-7"), stack.secret("mqtt_device_7_password"))
    assert dynsec.password_matches(stack.account("device-8"), f"d8-p@ss{STRONG}")

    stack.apply(MQTT_DEVICES="7,9")

    assert {c["username"] for c in stack.document()["clients"]} == OUR_ACCOUNTS | {"device-7", "device-8", "device-9"}
    assert dynsec.password_matches(stack.account("device-9"), stack.secret("mqtt_device_9_password"))


def test_what_the_broker_saved_is_kept(stack: Stack, dynsec: ModuleType) -> None:
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
