"""The alert state machine: DOWN after N failures in a row, reminders, RECOVERED with the duration."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from watchdog.checks import Result, Status


class AlertKind(StrEnum):
    """Why an alert is sent."""

    DOWN = "DOWN"
    REMINDER = "STILL DOWN"
    RECOVERED = "RECOVERED"


@dataclass(frozen=True, slots=True)
class Alert:
    """One message for the on-call engineers."""

    kind: AlertKind
    component: str
    detail: str
    at: datetime
    down_since: datetime
    status: Status = Status.DOWN

    @property
    def down_for_s(self) -> float:
        """How long the component has been (or was) failing, from its first failed check."""
        return (self.at - self.down_since).total_seconds()


@dataclass(slots=True)
class _Track:
    failures: int = 0
    first_failure_at: datetime | None = None
    alerted: bool = False
    last_alert_at: datetime | None = None


class AlertBook:
    """Per-component state; turns each cycle's Results into the few Alerts worth sending.

    Flapping (fail, pass, fail, ...) never reaches the threshold, so it stays
    quiet; an UNKNOWN result leaves the state as it was. A `confirmed` failure
    (a heartbeat missing for the whole timeout) is alerted at once: the timeout
    already tolerated several missed beats, and waiting the threshold on top
    would push a hung worker past the 30 s detection goal (15 + 2 x 10 s).
    """

    def __init__(self, *, threshold: int, remind_s: float) -> None:
        self._threshold = threshold
        self._remind_s = remind_s
        self._tracks: dict[str, _Track] = {}

    def observe(self, results: list[Result], now: datetime) -> list[Alert]:
        """Record one cycle's results; return the alerts to send, in result order."""
        alerts = [self._observe_one(result, now) for result in results]
        return [alert for alert in alerts if alert is not None]

    def down(self) -> list[str]:
        """Components currently alerted as down."""
        return sorted(name for name, track in self._tracks.items() if track.alerted)

    def _observe_one(self, result: Result, now: datetime) -> Alert | None:
        track = self._tracks.setdefault(result.component, _Track())
        if result.status is Status.UNKNOWN:
            return None
        if not result.status.failing:
            return self._passed(track, result, now)
        track.failures += 1
        if track.first_failure_at is None:
            track.first_failure_at = now
        if not track.alerted and (track.failures >= self._threshold or result.confirmed):
            return self._alert(track, AlertKind.DOWN, result, now)
        if track.alerted and self._remind_due(track, now):
            return self._alert(track, AlertKind.REMINDER, result, now)
        return None

    def _passed(self, track: _Track, result: Result, now: datetime) -> Alert | None:
        alert = None
        if track.alerted and track.first_failure_at is not None:
            since = track.first_failure_at
            alert = Alert(AlertKind.RECOVERED, result.component, result.detail, now, since, result.status)
        track.failures, track.first_failure_at, track.alerted, track.last_alert_at = 0, None, False, None
        return alert

    def _remind_due(self, track: _Track, now: datetime) -> bool:
        if self._remind_s <= 0 or track.last_alert_at is None:
            return False
        return (now - track.last_alert_at).total_seconds() >= self._remind_s

    def _alert(self, track: _Track, kind: AlertKind, result: Result, now: datetime) -> Alert:
        track.alerted, track.last_alert_at = True, now
        since = track.first_failure_at or now
        return Alert(kind, result.component, result.detail, now, since, result.status)


def format_duration(seconds: float) -> str:
    """A short human duration: `45 s`, `2 min 5 s`, `3 h 20 min`, `2 d 4 h`."""
    total = max(round(seconds), 0)
    days, rest = divmod(total, 86_400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days} d {hours} h" if hours else f"{days} d"
    if hours:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    if minutes:
        return f"{minutes} min {secs} s" if secs else f"{minutes} min"
    return f"{secs} s"
