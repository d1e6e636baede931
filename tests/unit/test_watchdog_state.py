"""The alert state machine with a fake clock: threshold, flapping, reminders, recovery, durations."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from fakes import FakeClock

from watchdog.checks import Result, Status
from watchdog.state import AlertBook, AlertKind, format_duration

T0 = datetime(2026, 11, 29, 8, 0, tzinfo=UTC)
DOWN = Result("broker", Status.DOWN, "connection refused")
OK = Result("broker", Status.OK, "probe round trip 3 ms")
UNKNOWN = Result("broker", Status.UNKNOWN, "cannot tell")


def feed(book: AlertBook, clock: FakeClock, results: list[Result], every_s: float = 10) -> list[tuple[str, str]]:
    """Observe one result per cycle; return (kind, component) of every alert."""
    alerts = []
    for result in results:
        alerts += book.observe([result], clock.advance(every_s))
    return [(alert.kind.value, alert.component) for alert in alerts]


def test_down_only_after_threshold_consecutive_failures() -> None:
    book, clock = AlertBook(threshold=2, remind_s=1800), FakeClock(start_at=T0)

    assert feed(book, clock, [DOWN]) == []
    assert feed(book, clock, [DOWN]) == [("DOWN", "broker")]
    assert feed(book, clock, [DOWN, DOWN, DOWN]) == [], "one alert, not one per cycle"
    assert book.down() == ["broker"]


def test_threshold_of_one_alerts_at_once() -> None:
    book, clock = AlertBook(threshold=1, remind_s=0), FakeClock(start_at=T0)

    assert feed(book, clock, [DOWN]) == [("DOWN", "broker")]


def test_a_confirmed_failure_skips_the_threshold() -> None:
    book, clock = AlertBook(threshold=3, remind_s=1800), FakeClock(start_at=T0)
    silent = Result("bridge-1", Status.DOWN, "no heartbeat for 16 s (limit 15 s)", confirmed=True)

    assert feed(book, clock, [silent]) == [("DOWN", "bridge-1")]
    assert feed(book, clock, [silent]) == []


def test_flapping_below_the_threshold_never_alerts() -> None:
    book, clock = AlertBook(threshold=2, remind_s=1800), FakeClock(start_at=T0)

    assert feed(book, clock, [DOWN, OK] * 20) == []
    assert book.down() == []


def test_unknown_keeps_the_state() -> None:
    book, clock = AlertBook(threshold=2, remind_s=1800), FakeClock(start_at=T0)

    assert feed(book, clock, [DOWN, UNKNOWN, UNKNOWN]) == []
    assert feed(book, clock, [DOWN]) == [("DOWN", "broker")], "UNKNOWN neither resets nor counts"
    assert feed(book, clock, [UNKNOWN]) == []
    assert book.down() == ["broker"], "UNKNOWN does not recover"


def test_recovered_once_with_the_duration_since_the_first_failure() -> None:
    book, clock = AlertBook(threshold=2, remind_s=1800), FakeClock(start_at=T0)
    feed(book, clock, [DOWN, DOWN, DOWN])  # first failure at T0+10 s

    alerts = book.observe([OK], clock.advance(95))  # T0 + 125 s

    assert [a.kind for a in alerts] == [AlertKind.RECOVERED]
    assert alerts[0].down_for_s == 115
    assert alerts[0].down_since == T0 + timedelta(seconds=10)
    assert feed(book, clock, [OK, OK]) == []
    assert book.down() == []


def test_passing_before_the_threshold_sends_nothing() -> None:
    book, clock = AlertBook(threshold=3, remind_s=1800), FakeClock(start_at=T0)

    assert feed(book, clock, [DOWN, DOWN, OK, DOWN, DOWN, OK]) == []


def test_reminder_every_remind_s_while_down() -> None:
    book, clock = AlertBook(threshold=2, remind_s=1800), FakeClock(start_at=T0)
    feed(book, clock, [DOWN, DOWN])  # DOWN at T0+20 s

    kinds = feed(book, clock, [DOWN] * 360)  # one hour more, every 10 s

    assert kinds == [("STILL DOWN", "broker"), ("STILL DOWN", "broker")]
    assert feed(book, clock, [OK]) == [("RECOVERED", "broker")]


def test_reminders_can_be_turned_off() -> None:
    book, clock = AlertBook(threshold=2, remind_s=0), FakeClock(start_at=T0)

    assert feed(book, clock, [DOWN] * 1000) == [("DOWN", "broker")]


def test_degraded_counts_as_failing_and_components_are_independent() -> None:
    book, clock = AlertBook(threshold=2, remind_s=1800), FakeClock(start_at=T0)
    degraded = Result("bridge-1", Status.DEGRADED, "reports the database unreachable")

    first = book.observe([DOWN, degraded], clock.advance(10))
    second = book.observe([OK, degraded], clock.advance(10))

    assert first == []
    assert [(a.kind, a.component, a.status) for a in second] == [(AlertKind.DOWN, "bridge-1", Status.DEGRADED)]


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0 s"), (45.4, "45 s"), (60, "1 min"), (125, "2 min 5 s"), (3600, "1 h"), (12_000, "3 h 20 min"),
     (86_400 * 2 + 3600 * 4, "2 d 4 h"), (86_400, "1 d"), (-3, "0 s")],
)
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


def test_a_site_link_gives_one_alert_per_transition_with_recovery() -> None:
    """A link down for several cycles: one DOWN, one RECOVERED, whatever the cycles in between."""
    book, clock = AlertBook(threshold=2, remind_s=0), FakeClock(start_at=T0)
    down = Result("site-bridge:site-1", Status.DOWN, "link to the central broker down for 20 s (bridge state 0)")
    up = Result("site-bridge:site-1", Status.OK, "connected to the central broker")

    alerts = feed(book, clock, [up, down, down, down, down, down, up, up, down, up])

    assert alerts == [("DOWN", "site-bridge:site-1"), ("RECOVERED", "site-bridge:site-1")]
