"""Percentiles, the summary text and JSON, and the progress line."""

from __future__ import annotations

import io
import json

import pytest

from simulator.report import (
    Latency,
    ProgressLine,
    PublishSummary,
    VerifySummary,
    format_summary,
    percentile,
    summary_json,
)


def test_percentile_uses_the_nearest_rank() -> None:
    values = list(range(1, 101))  # 1..100
    assert percentile(values, 50) == 50
    assert percentile(values, 95) == 95
    assert percentile(values, 99) == 99
    assert percentile(values, 100) == 100
    assert percentile([7.0], 99) == 7.0
    assert percentile([3, 1, 2], 50) == 2  # unsorted input
    assert percentile([10, 20, 30, 40], 99) == 40  # rank ceil(3.96) = 4
    assert percentile([], 50) is None


@pytest.mark.parametrize("p", [0, -1, 101])
def test_percentile_outside_0_100_is_refused(p: float) -> None:
    with pytest.raises(ValueError, match="percentile"):
        percentile([1.0], p)


def test_latency_is_reported_in_milliseconds() -> None:
    latency = Latency.of([0.001 * n for n in range(1, 101)])
    assert latency.p50_ms == pytest.approx(50) and latency.p99_ms == pytest.approx(99)
    assert latency.text() == "p50 50.0 ms, p95 95.0 ms, p99 99.0 ms, max 100.0 ms"
    assert Latency.of([]).text() == "p50 n/a, p95 n/a, p99 n/a, max n/a"


def test_the_worst_reading_is_reported_even_when_it_hides_below_p99() -> None:
    latency = Latency.of([0.010] * 999 + [79.6])  # one reading stuck behind a worker that never came back

    assert latency.p99_ms == pytest.approx(10)
    assert latency.max_ms == pytest.approx(79_600)


def summaries() -> tuple[PublishSummary, VerifySummary]:
    publish = PublishSummary(
        run_id="rabc", messages=5000, readings=4250, duplicates=500, invalid=250, published=5000,
        confirmed=5000, failed=0, resent=3, reconnects=1, elapsed_s=60.01, rate_msgs_per_s=83.3,
        rate_readings_per_s=79.1, puback_latency=Latency(1.0, 2.5, 4.0, 9.5),
    )
    verify = VerifySummary(
        expected=4250, found=4249, missing=1, unexpected=0, mismatched=0, rejected_expected=250,
        rejected_found=250, waited_s=30.0, commit_latency=Latency(20.0, 40.0, 60.5, 812.0), ok=False,
    )
    return publish, verify


def test_summary_text_names_every_figure() -> None:
    publish, verify = summaries()
    text = format_summary(publish, verify)
    assert "published 5000, confirmed 5000, failed 0, resent 3, reconnects 1" in text
    assert "achieved 83.3 messages/s (79.1 readings/s) over 60.01 s" in text
    assert "publish->PUBACK latency: p50 1.0 ms, p95 2.5 ms, p99 4.0 ms, max 9.5 ms" in text
    assert "verify: expected 4250, found 4249, missing 1, unexpected 0" in text
    assert "rejected: 250 stored, 250 expected" in text
    assert "publish->commit latency: p50 20.0 ms, p95 40.0 ms, p99 60.5 ms, max 812.0 ms" in text
    assert text.endswith("verdict: FAILED")
    assert "verify" not in format_summary(publish, None)


def test_summary_json_has_the_same_numbers() -> None:
    publish, verify = summaries()
    data = json.loads(json.dumps(summary_json(publish, verify)))
    assert data["publish"]["confirmed"] == 5000
    assert data["publish"]["puback_latency"] == {"p50_ms": 1.0, "p95_ms": 2.5, "p99_ms": 4.0, "max_ms": 9.5}
    assert data["verify"]["missing"] == 1 and data["verify"]["ok"] is False
    assert summary_json(publish, None)["verify"] is None


def test_progress_draws_a_bar_in_place_on_a_terminal() -> None:
    stream, now = io.StringIO(), [0.0]
    progress = ProgressLine(stream, tty=True, monotonic=lambda: now[0])
    now[0] = 1.0
    progress(50, 100, 40)
    progress(51, 100, 41)  # within 0.2 s of the last draw: skipped
    now[0] = 2.0
    progress(100, 100, 100)
    draws = stream.getvalue().split("\r")[1:]
    assert len(draws) == 2
    assert draws[0] == f"[{'#' * 15}{'-' * 15}] 50/100 sent, 40 confirmed, 50/s"
    assert draws[1].endswith("100/100 sent, 100 confirmed, 50/s\n")


def test_progress_writes_plain_lines_when_not_a_terminal() -> None:
    stream, now = io.StringIO(), [0.0]
    progress = ProgressLine(stream, tty=False, monotonic=lambda: now[0], every_s=5.0)
    for second in range(1, 11):
        now[0] = float(second)
        progress(second * 10, 100, second * 10)
    lines = stream.getvalue().splitlines()
    assert "\r" not in stream.getvalue()
    assert lines == ["progress: 10/100 sent, 10 confirmed, 10/s", "progress: 60/100 sent, 60 confirmed, 10/s",
                     "progress: 100/100 sent, 100 confirmed, 10/s"]
