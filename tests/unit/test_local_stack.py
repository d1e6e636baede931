"""scripts/local_stack.py, without servers: the broker's accounts file it writes before each start of the broker.

The whole `up`/`down` cycle with real servers is tests/integration/test_local_stack.py.
"""

from __future__ import annotations

import json
import stat
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from devstack.scripts import load_script
from mosquitto import dynsec


@pytest.fixture(scope="module")
def local_stack() -> ModuleType:
    return load_script("scripts/local_stack.py")


def clients(path: Path) -> dict[str, dict[str, Any]]:
    return {c["username"]: c for c in json.loads(path.read_text())["clients"]}


def test_up_writes_the_accounts_then_rehashes_an_older_file_and_keeps_what_the_broker_saved(
    local_stack: ModuleType, tmp_path: Path
) -> None:
    passwords = {name: f"{name}-generated-Token-0123" for name in local_stack.PASSWORDS}
    ours = {user: passwords[f"mqtt_{user.replace('-', '_')}"] for user in ("bridge", "watchdog", "simulator",
                                                                       "device-1", "site-bridge")}
    write = local_stack.write_accounts(local_stack.Stack(tmp_path, {"mqtt": 1883, "postgres": 5432}, passwords))
    path = tmp_path / "dynamic-security.json"

    write(path)  # the first `up`
    assert {user: c["iterations"] for user, c in clients(path).items()} == dict.fromkeys(ours, 1)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600

    # A file from before the change (210,000 iterations; 7 here, for speed), with an account added by mosquitto_ctrl.
    older = dynsec.update(json.loads(path.read_text()), ours, iterations=7)
    ops = dynsec.client("ops", "o-pw", "ops", iterations=101, salt=b"s" * 12)
    older["clients"].append(ops)
    path.write_text(json.dumps(older))
    assert {c["iterations"] for user, c in clients(path).items() if user in ours} == {7}

    write(path)  # the next `up` that starts the broker

    now = clients(path)
    for user, password in ours.items():
        assert now[user]["iterations"] == 1 and dynsec.password_matches(now[user], password), user
    assert now["ops"] == ops, "an account added at run time is kept as it is"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    text = path.read_text()
    write(path)
    assert path.read_text() == text, "an up-to-date file is left as it is"


def test_the_site_option_adds_the_site_broker_stopped_before_the_central_one(
    local_stack: ModuleType, tmp_path: Path
) -> None:
    passwords = {name: f"{name}-generated-Token-0123" for name in local_stack.PASSWORDS}
    stack = local_stack.Stack(tmp_path, {"mqtt": 1883, "postgres": 5432, "site_mqtt": 1884}, passwords)
    path = tmp_path / "dynamic-security.json"

    local_stack.write_accounts(stack)(path)
    assert "site-bridge" in clients(path), "the central broker knows the site's bridge before a site comes"
    assert "site-mosquitto" not in stack.parts
    (tmp_path / "site").touch()  # what `up --site` leaves

    parts = stack.parts
    assert parts.index("watchdog") < parts.index("site-mosquitto") < parts.index("mosquitto")
    assert stack.mqtt_url("simulator", port="site_mqtt").endswith("@127.0.0.1:1884")
