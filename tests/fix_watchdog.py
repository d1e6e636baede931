"""Fixtures: a watchdog process with fast settings and a local stand-in for the Discord webhook (a pytest plugin)."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

from devstack.discord_stub import DiscordStub, Post
from devstack.postgres import WATCHDOG_TEST_ROLE
from devstack.replication import ReplicatedPostgres
from devstack.urls import login_url
from devstack.watchdog_process import WatchdogProcess

# Fast settings: the bridge_env fixture makes workers beat every second.
FAST = {
    "WATCHDOG_INTERVAL_S": "1",
    "WATCHDOG_FAILURE_THRESHOLD": "2",
    "WATCHDOG_HEARTBEAT_TIMEOUT_S": "4",
    "WATCHDOG_BROKER_TIMEOUT_S": "2",
    "WATCHDOG_DATABASE_TIMEOUT_S": "2",
    "WATCHDOG_MIN_WORKERS": "0",
    "WATCHDOG_LOG_LEVEL": "INFO",
}
# Replication watched, with limits a test can reach: see replication_env().
FAST_REPLICATION = {
    "WATCHDOG_STANDBYS": "1",
    "WATCHDOG_REPLAY_LAG_S": "2",
    "WATCHDOG_FAILOVER_CLEAR_S": "4",
}
StartWatchdog = Callable[..., WatchdogProcess]


@pytest.fixture
def discord() -> Iterator[DiscordStub]:
    """A local HTTP server standing in for the Discord webhook."""
    with DiscordStub() as stub:
        yield stub


@pytest.fixture
def start_watchdog(
    mqtt_url: str, bridge_database_url: str, discord: DiscordStub, tmp_path: Path
) -> Iterator[StartWatchdog]:
    """start(**env) -> a running watchdog with FAST settings, pointed at the test servers and the stub."""
    started: list[WatchdogProcess] = []
    urls = [mqtt_url, bridge_database_url]

    def start(*, run: bool = True, **overrides: str) -> WatchdogProcess:
        urls.extend(value for key, value in overrides.items() if key.endswith("_URL"))
        name = f"wd-{uuid.uuid4().hex[:8]}"
        env = {
            "MQTT_URL": mqtt_url, "DATABASE_URL": bridge_database_url, "DISCORD_WEBHOOK_URL": discord.url,
            "WATCHDOG_CLIENT_ID": name, "WATCHDOG_HEALTH_FILE": str(tmp_path / f"{name}.health"),
            **FAST, **overrides,
        }
        watchdog = WatchdogProcess(env, folder=tmp_path)
        if run:
            watchdog.start()
            started.append(watchdog)
        return watchdog

    yield start
    for watchdog in started:
        if watchdog.is_running():
            watchdog.terminate()
        print(f"--- watchdog log tail ---\n{watchdog.log_tail(60)}")  # pytest shows it only on failure
    passwords = [urlsplit(url).password for url in urls]
    secrets = [discord.token, *passwords, *(unquote(password) for password in passwords if password)]
    for watchdog in started:
        log = watchdog.log_text()
        assert not [secret for secret in secrets if secret and secret in log], "a secret leaked into the log"


def replication_env(pair: ReplicatedPostgres) -> dict[str, str]:
    """start_watchdog(**replication_env(pair)): the watchdog of a primary and its standby, as an operator sets it.

    DATABASE_URL names both servers (target_session_attrs=read-write), so the
    watchdog follows a promotion; DATABASE_READ_URL is the standby; the role is
    iot_watchdog's (pg_read_all_stats, from schema.sql); one standby expected.
    """
    return {
        "DATABASE_URL": login_url(pair.url(), WATCHDOG_TEST_ROLE),
        "DATABASE_READ_URL": login_url(pair.standby.url(), WATCHDOG_TEST_ROLE),
        **FAST_REPLICATION,
    }


def alerts_about(discord: DiscordStub, component: str) -> list[Post]:
    """Accepted posts naming `component` (in backticks, as the watchdog writes it)."""
    return [post for post in discord.accepted() if f"`{component}`" in post.content]


def kinds(posts: list[Post]) -> list[str]:
    """DOWN / RECOVERED / STILL DOWN of each post."""
    return [next(k for k in ("STILL DOWN", "RECOVERED", "DOWN") if k in post.content) for post in posts]
