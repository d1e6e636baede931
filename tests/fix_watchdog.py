"""Fixtures: a watchdog process with fast settings and a local stand-in for the Discord webhook (a pytest plugin)."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from devstack.discord_stub import DiscordStub, Post
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

    def start(*, run: bool = True, **overrides: str) -> WatchdogProcess:
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
    secrets = [discord.token, *(urlsplit(url).password for url in (mqtt_url, bridge_database_url))]
    for watchdog in started:
        log = watchdog.log_text()
        assert not [secret for secret in secrets if secret and secret in log], "a secret leaked into the log"


def alerts_about(discord: DiscordStub, component: str) -> list[Post]:
    """Accepted posts naming `component` (in backticks, as the watchdog writes it)."""
    return [post for post in discord.accepted() if f"`{component}`" in post.content]


def kinds(posts: list[Post]) -> list[str]:
    """DOWN / RECOVERED / STILL DOWN of each post."""
    return [next(k for k in ("STILL DOWN", "RECOVERED", "DOWN") if k in post.content) for post in posts]
