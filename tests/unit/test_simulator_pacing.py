"""The pacer: an even schedule from a fake clock, catching up after a slow publish instead of drifting."""

from __future__ import annotations

import itertools

import pytest
from fakes import FakeClock

from simulator.pacing import Pacer


def send_times(pacer: Pacer, clock: FakeClock, count: int, *, cost_s: float = 0.0) -> list[float]:
    times = []
    for index in range(count):
        pacer.wait_for(index)
        times.append(clock.t)
        clock.advance(cost_s)  # what publishing one message costs
    return times


def test_default_load_is_one_message_every_12_ms() -> None:
    clock = FakeClock(start_s=1000.0, max_sleeps=None)
    pacer = Pacer.for_run(clock, messages=5000, duration_s=60)
    times = send_times(pacer, clock, 5000, cost_s=0.001)
    assert pacer.interval_s == pytest.approx(0.012)
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert min(gaps) == pytest.approx(0.012) and max(gaps) == pytest.approx(0.012)
    assert times[-1] - times[0] == pytest.approx(4999 * 0.012)


def test_a_slow_publish_is_caught_up_without_shifting_later_messages() -> None:
    clock = FakeClock(start_s=1000.0, max_sleeps=None)
    pacer = Pacer(clock, interval_s=0.1)
    times = []
    for index in range(10):
        pacer.wait_for(index)
        times.append(clock.t)
        if index == 3:
            clock.advance(0.35)  # a stall until start + 0.65: messages 4, 5 and 6 are late
    start = times[0]
    assert times[4:7] == pytest.approx([start + 0.65] * 3)  # sent at once, no sleep
    assert times[7:] == pytest.approx([start + 0.7, start + 0.8, start + 0.9])  # back on the original grid


def test_rate_max_never_sleeps() -> None:
    clock = FakeClock(start_s=1000.0, max_sleeps=None)
    pacer = Pacer.for_run(clock, messages=1000, duration_s=None)
    send_times(pacer, clock, 1000)
    assert pacer.interval_s == 0.0
    assert clock.sleeps == []
