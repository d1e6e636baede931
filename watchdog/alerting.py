"""Alerts to a Discord webhook (the only module that makes HTTP calls), or to the log.

Discord's rules, from https://discord.com/developers/docs/topics/rate-limits and
.../resources/webhook#execute-webhook: a 429 carries `retry_after` (seconds) in
its JSON body and a Retry-After header; 401/404 mean the webhook is gone or the
token is wrong, so retrying is pointless; `allowed_mentions` decides who is pinged
whatever the text says.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Mapping
from typing import Any, Protocol
from urllib.parse import urlsplit

import requests
from pydantic import SecretStr

from iotcommon.backoff import Backoff
from watchdog.state import Alert, AlertKind, format_duration

logger = logging.getLogger(__name__)

CONTENT_LIMIT = 2000  # Discord refuses longer `content`
_COLOURS = {AlertKind.DOWN: 0xE74C3C, AlertKind.REMINDER: 0xE67E22, AlertKind.RECOVERED: 0x2ECC71}
_ICONS = {AlertKind.DOWN: "🔴", AlertKind.REMINDER: "🟠", AlertKind.RECOVERED: "🟢"}
_GONE = {401: "the token is wrong", 403: "the webhook may not post here", 404: "the webhook was deleted"}


class HttpResponse(Protocol):
    """The part of requests.Response the notifier reads."""

    status_code: int

    @property
    def headers(self) -> Mapping[str, str]: ...

    @property
    def text(self) -> str: ...

    def json(self) -> Any: ...


class HttpSession(Protocol):
    """The part of requests.Session the notifier uses."""

    def post(self, url: str, *, json: Any, timeout: float) -> HttpResponse: ...


class Notifier(Protocol):
    """Delivers one alert; returns whether it reached its destination."""

    def send(self, alert: Alert) -> bool: ...


def alert_text(alert: Alert) -> str:
    """The plain line: icon, DOWN / STILL DOWN / RECOVERED, the component, duration and detail."""
    name = f"`{alert.component}`"
    if alert.kind is AlertKind.DOWN:
        what = "DOWN (degraded)" if alert.status == "degraded" else "DOWN"
        return f"{_ICONS[alert.kind]} {what}: {name} — {alert.detail}"
    duration = format_duration(alert.down_for_s)
    if alert.kind is AlertKind.REMINDER:
        return f"{_ICONS[alert.kind]} STILL DOWN: {name} for {duration} — {alert.detail}"
    return f"{_ICONS[alert.kind]} RECOVERED: {name} after {duration} down — {alert.detail}"


def format_message(alert: Alert, *, mention_roles: tuple[str, ...] = ()) -> dict[str, Any]:
    """The webhook body: a plain `content` line, an embed with colour, and who may be pinged."""
    pings = mention_roles if alert.kind is not AlertKind.RECOVERED else ()
    prefix = "".join(f"<@&{role}> " for role in pings)
    content = prefix + alert_text(alert)
    if len(content) > CONTENT_LIMIT:
        content = content[: CONTENT_LIMIT - 1] + "…"
    embed = {
        "title": f"{alert.kind.value}: {alert.component}"[:256],
        "description": alert.detail[:4000],
        "color": _COLOURS[alert.kind],
        "timestamp": alert.at.isoformat(),
        "fields": [{"name": "failing since", "value": alert.down_since.isoformat(), "inline": True}],
    }
    # An empty `parse` list stops @everyone, @here and user/role text from pinging anybody.
    return {"content": content, "embeds": [embed], "allowed_mentions": {"parse": [], "roles": list(pings)}}


def redact(text: str, url: SecretStr) -> str:
    """`text` with the webhook URL, its path and its token replaced by `<webhook>`."""
    secret = url.get_secret_value()
    path = urlsplit(secret).path
    token = path.rstrip("/").rpartition("/")[2]
    for piece in (secret, path, token):
        if len(piece) >= 8:  # never blank out short, common strings such as "/"
            text = text.replace(piece, "<webhook>")
    return text


class LogNotifier:
    """Alerts as log lines: the default without a webhook, and the fallback when Discord fails."""

    def send(self, alert: Alert) -> bool:
        """Log the alert (WARNING for down, INFO for recovered)."""
        level = logging.INFO if alert.kind is AlertKind.RECOVERED else logging.WARNING
        logger.log(level, "ALERT %s", alert_text(alert))
        return True


class DiscordNotifier:
    """Posts alerts to a webhook: waits out 429s, retries 5xx with backoff, stops on 401/403/404."""

    def __init__(
        self,
        session: HttpSession,
        url: SecretStr,
        *,
        timeout_s: float,
        sleep: Callable[[float], object],
        backoff: Backoff,
        mention_roles: tuple[str, ...] = (),
        max_attempts: int = 5,
        max_wait_s: float = 60.0,
    ) -> None:
        self._session = session
        self._url = url
        self._timeout_s = timeout_s
        self._sleep = sleep
        self._backoff = backoff
        self._mention_roles = mention_roles
        self._max_attempts = max_attempts
        self._max_wait_s = max_wait_s
        self._fallback = LogNotifier()
        self.disabled: str | None = None  # why posting stopped for good

    def send(self, alert: Alert) -> bool:
        """Post the alert; on failure log it instead, so it is never silently lost."""
        if self.disabled is None and self._post(format_message(alert, mention_roles=self._mention_roles), alert):
            return True
        self._fallback.send(alert)
        return False

    def _post(self, body: dict[str, Any], alert: Alert) -> bool:
        problem = "no attempt made"
        for attempt in range(1, self._max_attempts + 1):
            delay, problem = self._attempt(body)
            if delay is None:
                if problem and self.disabled is None:
                    logger.error("Discord refused the %s alert for %s: %s", alert.kind.value, alert.component, problem)
                return not problem
            if attempt == self._max_attempts or delay > self._max_wait_s:
                break
            logger.warning("Discord webhook: %s; retrying in %.1f s (attempt %d of %d)",
                           problem, delay, attempt, self._max_attempts)
            self._sleep(delay)
        logger.error("could not post the %s alert for %s to the Discord webhook: %s",
                     alert.kind.value, alert.component, problem)
        return False

    def _attempt(self, body: dict[str, Any]) -> tuple[float | None, str]:
        """(delay before retrying or None for no retry, problem or "" for success)."""
        try:
            response = self._session.post(self._url.get_secret_value(), json=body, timeout=self._timeout_s)
        except requests.RequestException as exc:
            return self._backoff.next_delay(), redact(f"{type(exc).__name__}: {exc}", self._url)
        status = response.status_code
        if 200 <= status < 300:
            self._backoff.reset()
            return None, ""
        if status == 429:
            return retry_after_s(response), "rate limited (HTTP 429)"
        if status >= 500:
            return self._backoff.next_delay(), f"HTTP {status} from Discord"
        if status in _GONE:
            self.disabled = f"HTTP {status}: {_GONE[status]}"
            logger.error("Discord webhook answered %s; no more posts until the watchdog is restarted "
                         "with a working DISCORD_WEBHOOK_URL; alerts go to this log", self.disabled)
            return None, self.disabled
        # 400 and the like: our message is at fault, so the same post would fail again.
        return None, redact(f"HTTP {status}: {response.text[:300]}", self._url)


def retry_after_s(response: HttpResponse) -> float:
    """Seconds to wait after a 429: JSON `retry_after`, else the Retry-After header, else 1 s."""
    try:
        body = response.json()
        if isinstance(body, dict) and isinstance(body.get("retry_after"), int | float):
            return max(float(body["retry_after"]), 0.0)
    except ValueError:
        pass
    try:
        return max(float(response.headers.get("Retry-After", "1")), 0.0)
    except ValueError:
        return 1.0


class Dispatcher:
    """Sends alerts from a thread of its own, so a slow or rate-limited Discord never delays the checks."""

    def __init__(self, notifier: Notifier, *, capacity: int = 1000) -> None:
        self._notifier = notifier
        self._queue: queue.Queue[Alert | None] = queue.Queue(maxsize=capacity)
        self._thread = threading.Thread(target=self._run, name="alerts", daemon=True)
        self.sent = 0
        self.failed = 0

    def start(self) -> None:
        """Start the sending thread."""
        self._thread.start()

    def submit(self, alert: Alert) -> None:
        """Queue an alert; if the queue is full, log it instead of blocking the checks."""
        try:
            self._queue.put_nowait(alert)
        except queue.Full:
            self.failed += 1
            logger.error("alert queue full; not sent: %s", alert_text(alert))

    def stop(self, timeout_s: float) -> None:
        """Send what is queued, for at most timeout_s, then stop the thread."""
        try:
            self._queue.put(None, timeout=timeout_s)
        except queue.Full:
            return
        self._thread.join(timeout_s)

    def _run(self) -> None:
        while (alert := self._queue.get()) is not None:
            try:
                if self._notifier.send(alert):
                    self.sent += 1
                else:
                    self.failed += 1
            except Exception:
                self.failed += 1
                logger.exception("bug while sending the alert for %s", alert.component)
