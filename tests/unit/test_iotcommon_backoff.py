"""iotcommon.backoff: capped exponential delays with jitter, reset after a success."""

from __future__ import annotations

import pytest

from iotcommon.backoff import Backoff


def test_backoff_doubles_until_the_cap() -> None:
    backoff = Backoff(initial_s=0.1, max_s=1.0, jitter=0.2, rand=lambda: 0.0)

    delays = [backoff.next_delay() for _ in range(7)]

    assert delays == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.0, 1.0, 1.0])
    assert backoff.attempts == 7


def test_backoff_factor_is_configurable() -> None:
    backoff = Backoff(initial_s=1.0, max_s=100.0, factor=3.0, jitter=0.0)

    assert [backoff.next_delay() for _ in range(4)] == pytest.approx([1.0, 3.0, 9.0, 27.0])


@pytest.mark.parametrize(("rand", "expected"), [(0.0, 0.4), (0.5, 0.36), (0.999999, 0.32)])
def test_backoff_jitter_shortens_by_at_most_the_jitter_fraction(rand: float, expected: float) -> None:
    backoff = Backoff(initial_s=0.1, max_s=5.0, jitter=0.2, rand=lambda: rand)
    backoff.next_delay()
    backoff.next_delay()

    assert backoff.next_delay() == pytest.approx(expected, rel=1e-5)


def test_backoff_with_real_randomness_stays_within_bounds() -> None:
    backoff = Backoff(initial_s=0.5, max_s=2.0, jitter=0.25)

    for nominal in [0.5, 1.0, 2.0, 2.0, 2.0]:
        assert 0.75 * nominal <= backoff.next_delay() <= nominal


def test_backoff_reset_starts_over() -> None:
    backoff = Backoff(initial_s=0.1, max_s=5.0, jitter=0.0)
    for _ in range(5):
        backoff.next_delay()

    backoff.reset()

    assert backoff.attempts == 0
    assert backoff.next_delay() == pytest.approx(0.1)
    assert backoff.next_delay() == pytest.approx(0.2)
