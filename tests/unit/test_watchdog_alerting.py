"""Discord alerts against a fake HTTP session: formatting, 429, 5xx, 401/404, secrets kept out of logs."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import requests
from pydantic import SecretStr

from iotcommon.backoff import Backoff
from watchdog.alerting import DiscordNotifier, Dispatcher, LogNotifier, format_message, redact, retry_after_s
from watchdog.checks import Status
from watchdog.state import Alert, AlertKind

TOKEN = "Zq9-s3cr3t-t0ken-for-tests_abcdef"
URL = SecretStr(f"https://discord.example/api/webhooks/42/{TOKEN}")
AT = datetime(2026, 11, 29, 8, 5, tzinfo=UTC)
DOWN = Alert(AlertKind.DOWN, "broker", "connection refused", AT, AT - timedelta(seconds=20))
RECOVERED = Alert(AlertKind.RECOVERED, "bridge-2", "heartbeat 1.0 s ago", AT, AT - timedelta(minutes=7, seconds=3))


@dataclass
class FakeResponse:
    status_code: int
    body: Any = None
    headers: Mapping[str, str] = field(default_factory=dict)

    @property
    def text(self) -> str:
        return str(self.body)

    def json(self) -> Any:
        if self.body is None:
            raise ValueError("no JSON")
        return self.body


class FakeSession:
    """Answers posts from a script (a response or an exception each); records what was posted."""

    def __init__(self, *answers: FakeResponse | Exception) -> None:
        self.answers = list(answers)
        self.posts: list[tuple[str, Any, float]] = []

    def post(self, url: str, *, json: Any, timeout: float) -> FakeResponse:
        self.posts.append((url, json, timeout))
        answer = self.answers.pop(0) if self.answers else FakeResponse(204)
        if isinstance(answer, Exception):
            raise answer
        return answer


def notifier(session: FakeSession, sleeps: list[float], **kwargs: Any) -> DiscordNotifier:
    return DiscordNotifier(
        session, URL, timeout_s=7, sleep=sleeps.append,
        backoff=Backoff(initial_s=1, max_s=8, jitter=0), **kwargs,
    )


# --- formatting -----------------------------------------------------------------------------------


def test_down_message_has_content_embed_and_pings_nobody() -> None:
    body = format_message(DOWN)

    assert body["content"] == "🔴 DOWN: `broker` — connection refused"
    assert body["allowed_mentions"] == {"parse": [], "roles": []}
    embed = body["embeds"][0]
    assert embed["title"] == "DOWN: broker"
    assert embed["color"] == 0xE74C3C
    assert embed["timestamp"] == AT.isoformat()


def test_recovered_message_says_how_long_it_was_down_and_never_pings() -> None:
    body = format_message(RECOVERED, mention_roles=("111",))

    assert body["content"] == "🟢 RECOVERED: `bridge-2` after 7 min 3 s down — heartbeat 1.0 s ago"
    assert body["allowed_mentions"] == {"parse": [], "roles": []}
    assert body["embeds"][0]["color"] == 0x2ECC71


def test_configured_roles_are_pinged_on_down_and_reminders_only() -> None:
    reminder = Alert(AlertKind.REMINDER, "database", "SELECT 1 timed out", AT, AT - timedelta(hours=1))

    down, again = format_message(DOWN, mention_roles=("111", "222")), format_message(reminder, mention_roles=("111",))

    assert down["content"].startswith("<@&111> <@&222> 🔴 DOWN: `broker`")
    assert down["allowed_mentions"] == {"parse": [], "roles": ["111", "222"]}
    assert again["content"] == "<@&111> 🟠 STILL DOWN: `database` for 1 h — SELECT 1 timed out"


def test_degraded_is_said_and_long_details_are_cut_to_discords_limit() -> None:
    alert = Alert(AlertKind.DOWN, "bridge-1", "x" * 5000, AT, AT, Status.DEGRADED)

    body = format_message(alert)

    assert body["content"].startswith("🔴 DOWN (degraded): `bridge-1`")
    assert len(body["content"]) == 2000
    assert len(body["embeds"][0]["description"]) <= 4096


# --- Discord's answers ----------------------------------------------------------------------------


def test_success_posts_once_with_the_timeout() -> None:
    session, sleeps = FakeSession(FakeResponse(204)), list[float]()

    assert notifier(session, sleeps).send(DOWN) is True
    assert [(url, timeout) for url, _, timeout in session.posts] == [(URL.get_secret_value(), 7)]
    assert sleeps == []


def test_429_waits_retry_after_from_the_body_then_the_header() -> None:
    session = FakeSession(
        FakeResponse(429, {"retry_after": 2.5, "global": False}, {"Retry-After": "9"}),
        FakeResponse(429, None, {"Retry-After": "4"}),
        FakeResponse(204),
    )
    sleeps: list[float] = []

    assert notifier(session, sleeps).send(DOWN) is True
    assert sleeps == [2.5, 4.0]
    assert len(session.posts) == 3
    assert session.posts[0][1] == session.posts[2][1], "the same alert is posted again"


def test_429_asking_for_too_long_a_wait_gives_up_and_logs_the_alert(caplog: pytest.LogCaptureFixture) -> None:
    session, sleeps = FakeSession(FakeResponse(429, {"retry_after": 3600})), list[float]()

    with caplog.at_level(logging.INFO):
        assert notifier(session, sleeps, max_wait_s=60).send(DOWN) is False

    assert sleeps == []
    assert "could not post the DOWN alert for broker" in caplog.text
    assert "ALERT 🔴 DOWN: `broker`" in caplog.text, "the alert still reaches the log"


def test_5xx_and_connection_errors_retry_with_backoff_then_give_up(caplog: pytest.LogCaptureFixture) -> None:
    session = FakeSession(
        FakeResponse(500), FakeResponse(502), requests.ConnectionError(f"cannot reach {URL.get_secret_value()}"),
        FakeResponse(503), FakeResponse(500),
    )
    sleeps: list[float] = []

    with caplog.at_level(logging.INFO):
        assert notifier(session, sleeps, max_attempts=5).send(DOWN) is False

    assert sleeps == [1, 2, 4, 8]
    assert len(session.posts) == 5
    assert "HTTP 500 from Discord; retrying in 1.0 s (attempt 1 of 5)" in caplog.text
    assert TOKEN not in caplog.text


def test_a_5xx_then_success_resets_the_backoff() -> None:
    session = FakeSession(FakeResponse(500), FakeResponse(204), FakeResponse(500), FakeResponse(204))
    sleeps: list[float] = []
    sender = notifier(session, sleeps)

    assert sender.send(DOWN) and sender.send(RECOVERED)
    assert sleeps == [1, 1]


@pytest.mark.parametrize(("status", "why"), [(401, "the token is wrong"), (404, "the webhook was deleted")])
def test_401_and_404_stop_posting_for_good_and_alerts_go_to_the_log(
    status: int, why: str, caplog: pytest.LogCaptureFixture
) -> None:
    session, sleeps = FakeSession(FakeResponse(status, {"message": "Unknown Webhook", "code": 10015})), list[float]()
    sender = notifier(session, sleeps)

    with caplog.at_level(logging.INFO):
        assert sender.send(DOWN) is False
        assert sender.send(RECOVERED) is False

    assert len(session.posts) == 1, "no retry and no further posts"
    assert sleeps == []
    assert sender.disabled == f"HTTP {status}: {why}"
    assert f"Discord webhook answered HTTP {status}" in caplog.text
    assert "ALERT 🟢 RECOVERED: `bridge-2`" in caplog.text
    assert TOKEN not in caplog.text


def test_400_is_not_retried_and_the_error_is_redacted(caplog: pytest.LogCaptureFixture) -> None:
    session = FakeSession(FakeResponse(400, {"message": f"bad body for {URL.get_secret_value()}"}))

    with caplog.at_level(logging.INFO):
        assert notifier(session, []).send(DOWN) is False

    assert len(session.posts) == 1
    assert "HTTP 400" in caplog.text
    assert TOKEN not in caplog.text


def test_retry_after_parsing() -> None:
    assert retry_after_s(FakeResponse(429, {"retry_after": 0.25})) == 0.25
    assert retry_after_s(FakeResponse(429, "not json", {"Retry-After": "3"})) == 3.0
    assert retry_after_s(FakeResponse(429, None, {"Retry-After": "soon"})) == 1.0
    assert retry_after_s(FakeResponse(429, {"retry_after": -1})) == 0.0


# --- the secret never reaches a log ---------------------------------------------------------------


def test_redact_hides_url_path_and_token() -> None:
    secret = URL.get_secret_value()
    text = f"POST {secret} failed; path /api/webhooks/42/{TOKEN}; token {TOKEN}"

    cleaned = redact(text, URL)

    assert TOKEN not in cleaned
    assert cleaned.count("<webhook>") == 3


def test_log_notifier_and_dispatcher_deliver_in_order(caplog: pytest.LogCaptureFixture) -> None:
    dispatcher = Dispatcher(LogNotifier())
    dispatcher.start()

    with caplog.at_level(logging.INFO, logger="watchdog.alerting"):
        dispatcher.submit(DOWN)
        dispatcher.submit(RECOVERED)
        dispatcher.stop(5)

    lines = [record.getMessage() for record in caplog.records]
    assert lines == ["ALERT 🔴 DOWN: `broker` — connection refused",
                     "ALERT 🟢 RECOVERED: `bridge-2` after 7 min 3 s down — heartbeat 1.0 s ago"]
    assert [record.levelname for record in caplog.records] == ["WARNING", "INFO"]
    assert dispatcher.sent == 2
