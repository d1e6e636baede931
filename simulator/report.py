"""The run summary: percentiles, the human-readable text, the JSON, and the progress line."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import IO, Any


def percentile(values: Sequence[float], p: float) -> float | None:
    """The p-th percentile by the nearest-rank method (None for no values).

    Nearest rank returns a value that was actually observed, so "p99 = 40 ms"
    means at least 99 % of the samples took 40 ms or less.
    """
    if not 0 < p <= 100:
        raise ValueError(f"percentile must be in (0, 100], got {p}")
    if not values:
        return None
    ordered = sorted(values)
    rank = math.ceil(p / 100 * len(ordered))
    return ordered[max(rank, 1) - 1]


@dataclass(frozen=True)
class Latency:
    """p50/p95/p99 and the maximum in milliseconds (None when nothing was measured).

    The maximum is reported beside the percentiles because a soak or a fault
    test is judged by its worst reading: a reading stuck for a minute behind
    a worker that never came back hides below p99 when it is one in a thousand.
    """

    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    max_ms: float | None

    @classmethod
    def of(cls, seconds: Sequence[float]) -> Latency:
        """Percentiles and maximum of durations given in seconds."""
        values = [s * 1000 for s in seconds]
        return cls(percentile(values, 50), percentile(values, 95), percentile(values, 99), max(values, default=None))

    def text(self) -> str:
        """e.g. 'p50 3.1 ms, p95 7.9 ms, p99 12.0 ms, max 30.2 ms'."""
        return ", ".join(f"{name} {_ms(value)}" for name, value in
                         (("p50", self.p50_ms), ("p95", self.p95_ms), ("p99", self.p99_ms), ("max", self.max_ms)))


@dataclass(frozen=True)
class PublishSummary:
    """What the publishing side achieved."""

    run_id: str
    messages: int
    readings: int
    duplicates: int
    invalid: int
    published: int
    confirmed: int
    failed: int
    resent: int
    reconnects: int
    elapsed_s: float
    rate_msgs_per_s: float
    rate_readings_per_s: float
    puback_latency: Latency


@dataclass(frozen=True)
class ReplicaWait:
    """--verify read a standby: how long it waited for the standby to replay the primary's WAL, and whether it did."""

    server: str  # host:port of the standby
    target_lsn: str  # the WAL position waited for (0/3000148)
    target_source: str  # "primary": its flushed WAL; "standby": what the standby had received
    waited_s: float
    caught_up: bool
    behind_bytes: int  # still missing when verify stopped waiting

    def text(self) -> str:
        """The summary line about the replica."""
        whose = "the primary's WAL" if self.target_source == "primary" else "the WAL it had received"
        if self.caught_up:
            return (f"replica: read from the standby {self.server} (DATABASE_READ_URL); waited "
                    f"{self.waited_s:.2f} s for it to replay {whose} up to {self.target_lsn}")
        return (f"replica: read from the standby {self.server} (DATABASE_READ_URL); it was still "
                f"{self.behind_bytes} bytes short of {whose} at {self.target_lsn} after {self.waited_s:.2f} s: "
                "missing readings may be replication lag, not loss")


@dataclass(frozen=True)
class VerifySummary:
    """What the database holds of the run."""

    expected: int
    found: int
    missing: int
    unexpected: int
    mismatched: int
    rejected_expected: int
    rejected_found: int
    waited_s: float
    commit_latency: Latency
    ok: bool
    replica: ReplicaWait | None = None  # None: read from the primary


def format_summary(publish: PublishSummary, verify: VerifySummary | None) -> str:
    """The summary printed at the end of a run."""
    p = publish
    lines = [
        f"run {p.run_id}: {p.messages} messages ({p.readings} unique readings, {p.duplicates} duplicates, "
        f"{p.invalid} invalid)",
        f"published {p.published}, confirmed {p.confirmed}, failed {p.failed}, resent {p.resent}, "
        f"reconnects {p.reconnects}",
        f"achieved {p.rate_msgs_per_s:,.1f} messages/s ({p.rate_readings_per_s:,.1f} readings/s) "
        f"over {p.elapsed_s:.2f} s",
        f"publish->PUBACK latency: {p.puback_latency.text()}",
    ]
    if verify is not None:
        v = verify
        lines += [
            f"verify: expected {v.expected}, found {v.found}, missing {v.missing}, unexpected {v.unexpected}, "
            f"mismatched {v.mismatched} (after {v.waited_s:.1f} s)",
            f"rejected: {v.rejected_found} stored, {v.rejected_expected} expected",
            f"publish->commit latency: {v.commit_latency.text()}",
            *([v.replica.text()] if v.replica is not None else []),
            f"verdict: {'OK' if v.ok else 'FAILED'}",
        ]
    return "\n".join(lines)


def summary_json(publish: PublishSummary, verify: VerifySummary | None) -> dict[str, Any]:
    """The same summary as a JSON-ready dict."""
    return {"publish": asdict(publish), "verify": asdict(verify) if verify is not None else None}


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f} ms"


class ProgressLine:
    """A progress bar redrawn in place on a terminal; a plain line every few seconds otherwise."""

    def __init__(
        self, stream: IO[str], *, tty: bool, monotonic: Callable[[], float] = time.monotonic,
        every_s: float | None = None,
    ) -> None:
        self._stream = stream
        self._tty = tty
        self._monotonic = monotonic
        self._every_s = every_s if every_s is not None else (0.2 if tty else 5.0)
        self._started = monotonic()
        self._last = -math.inf

    def __call__(self, published: int, total: int, confirmed: int) -> None:
        now = self._monotonic()
        final = published >= total
        if not final and now - self._last < self._every_s:
            return
        self._last = now
        elapsed = max(now - self._started, 1e-9)
        rate = published / elapsed
        if self._tty:
            width = 30
            filled = width * published // max(total, 1)
            bar = "#" * filled + "-" * (width - filled)
            self._stream.write(
                f"\r[{bar}] {published}/{total} sent, {confirmed} confirmed, {rate:,.0f}/s"
                + ("\n" if final else "")
            )
        else:
            self._stream.write(f"progress: {published}/{total} sent, {confirmed} confirmed, {rate:,.0f}/s\n")
        self._stream.flush()
